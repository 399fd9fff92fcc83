//! The options of `ch02 run`: chapter 1's, plus the hostname and `--init`.

use std::path::PathBuf;

use ch01_chroot::cli::EnvOptions;
use clap::Args;

/// `ch02 run [OPTIONS] ROOTFS -- COMMAND`: the groups of chapter 1 and this one's.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory that becomes `/` for the command
    pub rootfs: PathBuf,

    #[command(flatten)]
    pub env: EnvOptions,

    #[command(flatten)]
    pub process: ProcessOptions,

    /// Command to run inside the rootfs, with its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The container's first process: its hostname, and whether an init runs it.
#[derive(Debug, Clone, Args)]
pub struct ProcessOptions {
    /// Hostname inside the container [default: the container's generated id]
    #[arg(long)]
    pub hostname: Option<String>,

    /// Run a minimal init as PID 1 that forwards signals to COMMAND and reaps zombies
    #[arg(long)]
    pub init: bool,
}
