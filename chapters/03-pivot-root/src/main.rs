//! `ch03 run [--hostname NAME] [--init] [--read-only] [-v HOST:CONTAINER[:ro]]… ROOTFS --
//! COMMAND`: chapter 2's namespaces plus a mount namespace; pivot_root replaces chroot.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use ch01_chroot::env::{caller_terminal, container_env};
use ch01_chroot::process::{die_with_runtime, exit_code_for, require_root, EXIT_RUNTIME_FAILURE};
use ch01_chroot::rootfs::check_rootfs;
use ch02_namespaces::hostname::{hostname_or_id, new_container_id, set_hostname};
use ch02_namespaces::namespaces::{spawn_in_namespaces, NAMESPACES};
use ch02_namespaces::signals::{block_signals, forward_signals_until_exit, SignalMask};
use ch02_namespaces::start::start_command;
use ch03_pivot_root::cli::RunArgs;
use ch03_pivot_root::filesystems::{mount_dev, mount_proc, mount_sys};
use ch03_pivot_root::mounts::{bind_mount_rootfs, make_mounts_private};
use ch03_pivot_root::pivot_root::pivot_root_into;
use ch03_pivot_root::volumes::{bind_volumes, JoinedPaths, Volume};
use clap::{Parser, Subcommand};
use nix::sched::CloneFlags;

#[derive(Debug, Parser)]
#[command(name = "ch03", version, about = "Chapter 3: a mount namespace and pivot_root")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND with ROOTFS as the root of its own mount namespace
    Run(RunArgs),
}

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    exit_code_for("ch03", run(&args))
}

/// What `run` checked and chose before creating anything.
struct Container {
    rootfs: PathBuf,
    hostname: String,
    env: Vec<String>,
}

// ANCHOR: sequence
fn run(args: &RunArgs) -> Result<u8> {
    require_root("ch03")?;
    let rootfs = check_rootfs(&args.rootfs)?;
    let id = new_container_id()?;
    let hostname = hostname_or_id(args.process.hostname.as_deref(), &id)?;
    let env = container_env(&args.env.env_request(), &hostname, caller_terminal().as_deref())?;
    if args.process.hostname.is_none() {
        eprintln!("ch03: container {id}");
    }
    let container = Container { rootfs, hostname, env };
    let mask = block_signals()?;
    let namespaces = NAMESPACES | CloneFlags::CLONE_NEWNS;
    let child = spawn_in_namespaces(namespaces, || child_setup(&container, args, &mask))?;
    forward_signals_until_exit(child)
}

/// Runs in the child, PID 1 of the new PID namespace, in its own mount namespace.
fn child_setup(container: &Container, args: &RunArgs, mask: &SignalMask) -> u8 {
    if let Err(err) = set_up_container(container, args) {
        eprintln!("ch03: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    let report = |why: &dyn std::fmt::Display| eprintln!("ch03: {why}");
    start_command(&args.command, &container.env, args.process.init, mask, &report)
}

fn set_up_container(container: &Container, args: &RunArgs) -> Result<()> {
    let rootfs = container.rootfs.as_path();
    die_with_runtime()?;
    set_hostname(&container.hostname)?;
    make_mounts_private()?;
    bind_mount_rootfs(rootfs)?;
    let volumes: Vec<&Volume> = args.mounts.volumes.iter().collect();
    bind_volumes(rootfs, &volumes, args.mounts.read_only, &JoinedPaths(rootfs))?;
    pivot_root_into(rootfs)?;
    mount_proc()?;
    mount_sys()?;
    mount_dev()?;
    Ok(())
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
