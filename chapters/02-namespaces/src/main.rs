//! `ch02 run [--hostname NAME] [--init] ROOTFS -- COMMAND`: chapter 1's chroot, in new PID,
//! UTS and IPC namespaces.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ch01_chroot::chroot::enter_rootfs;
use ch01_chroot::env::{caller_terminal, container_env};
use ch01_chroot::process::{die_with_runtime, exit_code_for, require_root, EXIT_RUNTIME_FAILURE};
use ch01_chroot::rootfs::check_rootfs;
use ch02_namespaces::cli::RunArgs;
use ch02_namespaces::hostname::{hostname_or_id, new_container_id, set_hostname};
use ch02_namespaces::namespaces::{spawn_in_namespaces, NAMESPACES};
use ch02_namespaces::signals::{block_signals, forward_signals_until_exit, SignalMask};
use ch02_namespaces::start::start_command;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ch02",
    version,
    about = "Chapter 2: a command in new PID, UTS and IPC namespaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND chrooted into ROOTFS, in new PID, UTS and IPC namespaces
    Run(RunArgs),
}

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    exit_code_for("ch02", run(&args))
}

/// What `run` checked and chose before creating anything.
struct Container {
    rootfs: PathBuf,
    hostname: String,
    env: Vec<String>,
}

// ANCHOR: sequence
fn run(args: &RunArgs) -> Result<u8> {
    require_root("ch02")?;
    let rootfs = check_rootfs(&args.rootfs)?;
    let id = new_container_id()?;
    let hostname = hostname_or_id(args.process.hostname.as_deref(), &id)?;
    if args.process.hostname.is_none() {
        eprintln!("ch02: container {id}");
    }
    let env = container_env(&args.env.env_request(), &hostname, caller_terminal().as_deref())?;
    let container = Container { rootfs, hostname, env };
    let mask = block_signals()?;
    let child = spawn_in_namespaces(NAMESPACES, || child_setup(&container, args, &mask))?;
    forward_signals_until_exit(child)
}

/// Runs in the child, PID 1 of the new PID namespace.
fn child_setup(container: &Container, args: &RunArgs, mask: &SignalMask) -> u8 {
    let setup = die_with_runtime()
        .and_then(|()| set_hostname(&container.hostname))
        .and_then(|()| enter_rootfs(&container.rootfs));
    if let Err(err) = setup {
        eprintln!("ch02: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    let report = |why: &dyn std::fmt::Display| eprintln!("ch02: {why}");
    start_command(&args.command, &container.env, args.process.init, mask, &report)
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
