//! `ch04 run [--memory SIZE] [--cpus N] [--pids-limit N] … ROOTFS -- COMMAND`: chapter 3's
//! container, in a cgroup of its own with limits, and in a cgroup namespace.

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
use ch03_pivot_root::filesystems::{mount_dev, mount_proc, mount_sys};
use ch03_pivot_root::mounts::{bind_mount_rootfs, make_mounts_private};
use ch03_pivot_root::pivot_root::pivot_root_into;
use ch03_pivot_root::volumes::{bind_volumes, JoinedPaths, Volume};
use ch04_cgroups::cgroups::{
    detect_setup, enter_cgroup_namespace, mount_cgroupfs, Cgroup, CgroupSetup,
};
use ch04_cgroups::cleanup::{after_cleanup, reclaim_stale_cgroups, RuntimeLock};
use ch04_cgroups::cli::RunArgs;
use ch04_cgroups::gate::Gate;
use ch04_cgroups::report::report_end;
use clap::{Parser, Subcommand};
use nix::sched::CloneFlags;

#[derive(Debug, Parser)]
#[command(name = "ch04", version, about = "Chapter 4: a container with cgroup limits")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND in its own namespaces and cgroup, with ROOTFS as its root
    Run(Box<RunArgs>),
    /// Remove what containers whose runtime was killed left behind: their cgroups
    Cleanup,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => exit_code_for("ch04", run(&args)),
        Command::Cleanup => exit_code_for("ch04", cleanup().map(|()| 0)),
    }
}

/// What `run` checked and chose before creating anything.
struct Container<'a> {
    args: &'a RunArgs,
    rootfs: PathBuf,
    hostname: String,
    env: Vec<String>,
    setup: CgroupSetup,
}

// ANCHOR: sequence
fn run(args: &RunArgs) -> Result<u8> {
    require_root("ch04")?;
    let rootfs = check_rootfs(&args.rootfs)?;
    let limits = args.limits.limits();
    for warning in limits.check()? {
        eprintln!("ch04: warning: {warning}");
    }
    let id = new_container_id()?;
    let hostname = hostname_or_id(args.process.hostname.as_deref(), &id)?;
    let env = container_env(&args.env.env_request(), &hostname, caller_terminal().as_deref())?;
    eprintln!("ch04: container {id}");
    let setup = detect_setup()?;
    if let Err(err) = reclaim_stale_cgroups(setup) {
        eprintln!("ch04: warning: {err:#}");
    }
    let container = Container { args, rootfs, hostname, env, setup };
    let _lock = RuntimeLock::take(&id)?;
    // From here on the runtime owns a cgroup: a signal must reach the container (which
    // then ends, and is cleaned up after), not end the runtime before it cleans up.
    let mask = block_signals()?;
    let cgroup = Cgroup::create(setup, &id, &limits)?;
    let status = run_in_cgroup(&container, &cgroup, &mask);
    after_cleanup(status, cgroup.remove(), "removing the container's cgroup")
}

fn run_in_cgroup(container: &Container, cgroup: &Cgroup, mask: &SignalMask) -> Result<u8> {
    let gate = Gate::new()?;
    let namespaces = NAMESPACES | CloneFlags::CLONE_NEWNS;
    let child = spawn_in_namespaces(namespaces, || child_setup(container, &gate, mask))?;
    // The child waits at the gate until it is in its cgroup, so the limits hold from the
    // command's first instruction. If this fails, the gate closes and the child exits.
    cgroup.add_pid(child)?;
    gate.open()?;
    let status = forward_signals_until_exit(child)?;
    // The container's status matters more than a report that could not be read.
    let limits = &container.args.limits;
    if let Err(err) = report_end("ch04", cgroup, limits.memory, limits.stats) {
        eprintln!("ch04: warning: {err:#}");
    }
    Ok(status)
}

/// Runs in the child, PID 1 of the new PID namespace.
fn child_setup(container: &Container, gate: &Gate, mask: &SignalMask) -> u8 {
    // A runtime that died before this line closed the gate; one that dies later kills us.
    let ready = die_with_runtime().and_then(|()| gate.wait());
    // The runtime reports why it stopped; nothing to add here.
    if ready.is_err() {
        return EXIT_RUNTIME_FAILURE;
    }
    if let Err(err) = set_up_container(container) {
        eprintln!("ch04: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    let args = container.args;
    let report = |why: &dyn std::fmt::Display| eprintln!("ch04: {why}");
    start_command(&args.command, &container.env, args.process.init, mask, &report)
}

fn set_up_container(container: &Container) -> Result<()> {
    let mounts = &container.args.mounts;
    let rootfs = container.rootfs.as_path();
    enter_cgroup_namespace()?;
    set_hostname(&container.hostname)?;
    make_mounts_private()?;
    bind_mount_rootfs(rootfs)?;
    let volumes: Vec<&Volume> = mounts.volumes.iter().collect();
    bind_volumes(rootfs, &volumes, mounts.read_only, &JoinedPaths(rootfs))?;
    pivot_root_into(rootfs)?;
    mount_proc()?;
    mount_sys()?;
    mount_cgroupfs(container.setup)?;
    mount_dev()?;
    Ok(())
}
// ANCHOR_END: sequence

// ANCHOR: cleanup
/// Removes the cgroups of every container whose runtime has ended without removing them.
fn cleanup() -> Result<()> {
    require_root("ch04")?;
    let reclaimed = reclaim_stale_cgroups(detect_setup()?)?;
    eprintln!("ch04: removed the cgroups of {} stale containers", reclaimed.len());
    Ok(())
}
// ANCHOR_END: cleanup

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
