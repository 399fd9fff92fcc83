//! The options of `ch03 run`: chapter 2's, plus `--read-only` and volumes.

use std::path::PathBuf;

use ch01_chroot::cli::EnvOptions;
use ch02_namespaces::cli::ProcessOptions;
use clap::Args;

use crate::volumes::{parse_volume, Volume};

/// `ch03 run [OPTIONS] ROOTFS -- COMMAND`: the groups of chapters 1 and 2, and this one's.
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

    /// Command to run inside the rootfs, with its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// What is mounted in the container besides its rootfs, and whether the rootfs is writable.
#[derive(Debug, Clone, Args)]
pub struct MountOptions {
    /// Mount the rootfs read-only (/dev, /proc, /sys and volumes keep their own modes)
    #[arg(long)]
    pub read_only: bool,

    /// Bind-mount a host path into the container, read-only with `:ro`
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<Volume>,
}
