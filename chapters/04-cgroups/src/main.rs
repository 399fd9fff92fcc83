//! `ch04 run [--memory SIZE] [--cpus N] [--pids-limit N] … ROOTFS -- COMMAND`: chapter 3's
//! container, in a cgroup of its own with limits, and in a cgroup namespace.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use ch01_chroot::process::{exit_code_for, require_root, EXIT_RUNTIME_FAILURE};
use ch01_chroot::rootfs::check_rootfs;
use ch02_namespaces::hostname::{hostname_or_id, new_container_id, set_hostname};
use ch02_namespaces::namespaces::{spawn_in_namespaces, NAMESPACES};
use ch02_namespaces::signals::{block_signals, forward_signals_until_exit, SignalMask};
use ch02_namespaces::start::start_command;
use ch03_pivot_root::filesystems::{mount_dev, mount_proc, mount_sys};
use ch03_pivot_root::mounts::{bind_mount_rootfs, make_mounts_private, remount_read_only};
use ch03_pivot_root::pivot_root::pivot_root_into;
use ch03_pivot_root::volumes::bind_volume;
use ch04_cgroups::cgroups::{
    detect_setup, enter_cgroup_namespace, mount_cgroupfs, Cgroup, CgroupSetup,
};
use ch04_cgroups::cleanup::after_cleanup;
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
    Run(RunArgs),
}

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    exit_code_for("ch04", run(&args))
}

// ANCHOR: sequence
fn run(args: &RunArgs) -> Result<u8> {
    require_root("ch04")?;
    let rootfs = check_rootfs(&args.base.base.base.rootfs)?;
    let limits = args.limits();
    limits.check()?;
    let id = new_container_id()?;
    let hostname = hostname_or_id(args.base.base.hostname.as_deref(), &id)?;
    eprintln!("ch04: container {id}");
    let setup = detect_setup()?;
    // From here on the runtime owns a cgroup: a signal must reach the container (which
    // then ends, and is cleaned up after), not end the runtime before it cleans up.
    let mask = block_signals()?;
    let cgroup = Cgroup::create(setup, &id, &limits)?;
    let status = run_in_cgroup(&cgroup, setup, &rootfs, &hostname, args, &mask);
    after_cleanup(status, cgroup.remove(), "removing the container's cgroup")
}

fn run_in_cgroup(
    cgroup: &Cgroup,
    setup: CgroupSetup,
    rootfs: &Path,
    hostname: &str,
    args: &RunArgs,
    mask: &SignalMask,
) -> Result<u8> {
    let gate = Gate::new()?;
    let namespaces = NAMESPACES | CloneFlags::CLONE_NEWNS;
    let child = spawn_in_namespaces(namespaces, || {
        child_setup(rootfs, hostname, args, setup, &gate, mask)
    })?;
    // The child waits at the gate until it is in its cgroup, so the limits hold from the
    // command's first instruction. If this fails, the gate closes and the child exits.
    cgroup.add_pid(child)?;
    gate.open()?;
    let status = forward_signals_until_exit(child)?;
    // The container's status matters more than a report that could not be read.
    if let Err(err) = report_end("ch04", cgroup, args.memory, args.stats) {
        eprintln!("ch04: warning: {err:#}");
    }
    Ok(status)
}

/// Runs in the child, PID 1 of the new PID namespace.
fn child_setup(
    rootfs: &Path,
    hostname: &str,
    args: &RunArgs,
    setup: CgroupSetup,
    gate: &Gate,
    mask: &SignalMask,
) -> u8 {
    // The runtime reports why it stopped; nothing to add here.
    if gate.wait().is_err() {
        return EXIT_RUNTIME_FAILURE;
    }
    if let Err(err) = set_up_container(rootfs, hostname, args, setup) {
        eprintln!("ch04: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    let command = &args.base.base.base.command;
    start_command(command, args.base.base.init, mask, &|why| eprintln!("ch04: {why}"))
}

fn set_up_container(
    rootfs: &Path,
    hostname: &str,
    args: &RunArgs,
    setup: CgroupSetup,
) -> Result<()> {
    enter_cgroup_namespace()?;
    set_hostname(hostname)?;
    make_mounts_private()?;
    bind_mount_rootfs(rootfs)?;
    for volume in &args.base.volumes {
        bind_volume(rootfs, volume)?;
    }
    pivot_root_into(rootfs)?;
    mount_proc()?;
    mount_sys()?;
    mount_cgroupfs(setup)?;
    mount_dev()?;
    if args.base.read_only {
        remount_read_only(Path::new("/"))?;
    }
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
