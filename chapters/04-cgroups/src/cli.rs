//! The options of `ch04 run`: chapter 3's, plus the resource limits.

use std::path::PathBuf;

use ch01_chroot::cli::EnvOptions;
use ch02_namespaces::cli::ProcessOptions;
use ch03_pivot_root::cli::MountOptions;
use clap::Args;

use crate::limits::{parse_cpus, parse_size, CpuQuota, Limits};

/// `ch04 run [OPTIONS] ROOTFS -- COMMAND`: the groups of chapters 1 to 3, and this one's.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory that becomes `/` for the command
    pub rootfs: PathBuf,

    #[command(flatten)]
    pub env: EnvOptions,

    #[command(flatten)]
    pub process: ProcessOptions,

    #[command(flatten)]
    pub mounts: MountOptions,

    #[command(flatten)]
    pub limits: LimitOptions,

    /// Command to run inside the rootfs, with its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The container's resource limits, and whether to report its use of them at the end.
#[derive(Debug, Clone, Args)]
pub struct LimitOptions {
    /// Memory limit, like 64m (k, m, g)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,

    /// Memory plus swap limit, like 128m; needs --memory
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_swap: Option<u64>,

    /// CPU time limit in CPUs, like 0.5
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub cpus: Option<CpuQuota>,

    /// Relative CPU weight, 1 to 10000 (default 100)
    #[arg(long, value_name = "WEIGHT", value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub cpu_weight: Option<u64>,

    /// Maximum number of processes and threads
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pids_limit: Option<u64>,

    /// Print peak memory, CPU time and throttling when the container ends
    #[arg(long)]
    pub stats: bool,
}

impl LimitOptions {
    /// The limits the user asked for, as the plain value the cgroup building blocks take.
    pub fn limits(&self) -> Limits {
        Limits {
            memory: self.memory,
            memory_swap: self.memory_swap,
            cpu: self.cpus,
            cpu_weight: self.cpu_weight,
            pids: self.pids_limit,
        }
    }
}
