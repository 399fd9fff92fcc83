//! The options of `ch03 run`: chapter 2's, plus `--read-only` and volumes.

use clap::Args;

use crate::volumes::{parse_volume, Volume};

#[derive(Debug, Args)]
#[group(skip)]
pub struct RunArgs {
    #[command(flatten)]
    pub base: ch02_namespaces::cli::RunArgs,

    /// Mount the rootfs read-only (/dev, /proc, /sys and volumes keep their own modes)
    #[arg(long)]
    pub read_only: bool,

    /// Bind-mount a host path into the container, read-only with `:ro`
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<Volume>,
}
