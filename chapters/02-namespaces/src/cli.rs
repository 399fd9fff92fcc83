//! The options of `ch02 run`: chapter 1's, plus the hostname and `--init`.

use clap::Args;

// The flattened struct of chapter 1 has the same name, and clap names an argument group
// after its struct: only one of them may have one.
#[derive(Debug, Args)]
#[group(skip)]
pub struct RunArgs {
    #[command(flatten)]
    pub base: ch01_chroot::cli::RunArgs,

    /// Hostname inside the container [default: the container's generated id]
    #[arg(long)]
    pub hostname: Option<String>,

    /// Run a minimal init as PID 1 that forwards signals to COMMAND and reaps zombies
    #[arg(long)]
    pub init: bool,
}
