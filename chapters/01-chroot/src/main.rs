//! `ch01 run ROOTFS -- COMMAND`: run COMMAND with ROOTFS as its root directory.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use ch01_chroot::chroot::enter_rootfs;
use ch01_chroot::cli::RunArgs;
use ch01_chroot::env::{caller_terminal, container_env};
use ch01_chroot::exec::exec_command;
use ch01_chroot::process::{
    die_with_runtime, exit_code_for, fork_child, require_root, wait_for_exit, EXIT_RUNTIME_FAILURE,
};
use ch01_chroot::rootfs::check_rootfs;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ch01", version, about = "Chapter 1: run a command chrooted into a rootfs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND with ROOTFS as its root directory
    Run(RunArgs),
}

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    exit_code_for("ch01", run(&args))
}

// ANCHOR: sequence
fn run(args: &RunArgs) -> Result<u8> {
    require_root("ch01")?;
    let rootfs = check_rootfs(&args.rootfs)?;
    // No UTS namespace yet: the container's hostname is the host's.
    let hostname = nix::unistd::gethostname().context("read the hostname")?;
    let env = container_env(
        &args.env.env_request(),
        &hostname.to_string_lossy(),
        caller_terminal().as_deref(),
    )?;
    let child = fork_child(|| child_setup(&rootfs, &args.command, &env))?;
    wait_for_exit(child)
}

/// Runs in the child: enter the rootfs, then become the command.
fn child_setup(rootfs: &Path, command: &[String], env: &[String]) -> u8 {
    if let Err(err) = die_with_runtime().and_then(|()| enter_rootfs(rootfs)) {
        eprintln!("ch01: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    let failure = exec_command(command, env);
    eprintln!("ch01: {failure}");
    failure.exit_code()
}
// ANCHOR_END: sequence

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
