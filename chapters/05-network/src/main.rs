//! `ch05 run [--net bridge|none|host|ns:PATH] [-p HOST:CONTAINER] … ROOTFS -- COMMAND`:
//! chapter 4's container, with a network of its own. `ch05 network-rm` removes the bridge
//! and crabbox's NAT rules once no container uses them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
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
use ch04_cgroups::gate::Gate;
use ch04_cgroups::report::report_end;
use ch05_network::bridge::{remove_bridge, BRIDGE};
use ch05_network::cli::RunArgs;
use ch05_network::firewall::Firewall;
use ch05_network::leases::{Leases, LEASES_FILE};
use ch05_network::netlink::Netlink;
use ch05_network::network::{reclaim_stale, Network};
use clap::{Parser, Subcommand};
use nix::sched::CloneFlags;

#[derive(Debug, Parser)]
#[command(name = "ch05", version, about = "Chapter 5: a container with a network")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run COMMAND in its own namespaces, cgroup and network, with ROOTFS as its root
    Run(Box<RunArgs>),
    /// Remove the bridge crabbox0 and crabbox's NAT rules, once no container uses them
    NetworkRm,
    /// Remove what containers whose runtime was killed left behind: cgroups, veths, NAT
    /// rules, addresses and files
    Cleanup,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => exit_code_for("ch05", run(&args)),
        Command::NetworkRm => exit_code_for("ch05", remove_network().map(|()| 0)),
        Command::Cleanup => exit_code_for("ch05", cleanup().map(|()| 0)),
    }
}

/// Everything `run` checked before creating anything, and the container's names.
struct Container<'a> {
    args: &'a RunArgs,
    rootfs: PathBuf,
    id: String,
    hostname: String,
    env: Vec<String>,
    setup: CgroupSetup,
    network: Network,
}

// ANCHOR: sequence
fn run(args: &RunArgs) -> Result<u8> {
    require_root("ch05")?;
    let rootfs = check_rootfs(&args.rootfs)?;
    let limits = args.limits.limits();
    for warning in limits.check()? {
        eprintln!("ch05: warning: {warning}");
    }
    let network = args.network.network()?;
    let id = new_container_id()?;
    let hostname = hostname_or_id(args.process.hostname.as_deref(), &id)?;
    let env = container_env(&args.env.env_request(), &hostname, caller_terminal().as_deref())?;
    eprintln!("ch05: container {id}");
    let setup = detect_setup()?;
    if let Err(err) = reclaim_stale_cgroups(setup) {
        eprintln!("ch05: warning: {err:#}");
    }
    let container = Container { args, rootfs, id, hostname, env, setup, network };
    let _lock = RuntimeLock::take(&container.id)?;
    let mask = block_signals()?;
    let cgroup = Cgroup::create(setup, &container.id, &limits)?;
    let status = run_in_cgroup(&container, &cgroup, &mask);
    after_cleanup(status, cgroup.remove(), "removing the container's cgroup")
}

fn run_in_cgroup(container: &Container, cgroup: &Cgroup, mask: &SignalMask) -> Result<u8> {
    let gate = Gate::new()?;
    let namespaces = NAMESPACES | CloneFlags::CLONE_NEWNS | container.network.namespace();
    let child = spawn_in_namespaces(namespaces, || child_setup(container, &gate, mask))?;
    cgroup.add_pid(child)?;
    // The child waits at the gate while the runtime connects its network namespace.
    let mut attachment = container.network.attach(&container.id, &container.hostname, child)?;
    if let Some(address) = attachment.address {
        eprintln!("ch05: address {address} on {BRIDGE}");
    }
    gate.open()?;
    let status = forward_signals_until_exit(child);
    let status = after_cleanup(status, attachment.detach(), "detaching the network");
    let limits = &container.args.limits;
    if let Err(err) = report_end("ch05", cgroup, limits.memory, limits.stats) {
        eprintln!("ch05: warning: {err:#}");
    }
    status
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
        eprintln!("ch05: {err:#}");
        return EXIT_RUNTIME_FAILURE;
    }
    let args = container.args;
    let report = |why: &dyn std::fmt::Display| eprintln!("ch05: {why}");
    start_command(&args.command, &container.env, args.process.init, mask, &report)
}

fn set_up_container(container: &Container) -> Result<()> {
    let mounts = &container.args.mounts;
    let rootfs = container.rootfs.as_path();
    container.network.enter()?;
    enter_cgroup_namespace()?;
    set_hostname(&container.hostname)?;
    make_mounts_private()?;
    bind_mount_rootfs(rootfs)?;
    let network_files = container.network.volumes(&container.id);
    let volumes: Vec<&Volume> = mounts.volumes.iter().chain(&network_files).collect();
    bind_volumes(rootfs, &volumes, mounts.read_only, &JoinedPaths(rootfs))?;
    pivot_root_into(rootfs)?;
    mount_proc()?;
    mount_sys()?;
    mount_cgroupfs(container.setup)?;
    mount_dev()?;
    Ok(())
}
// ANCHOR_END: sequence

// ANCHOR: remove_network
/// Removes the bridge, both kinds of NAT rules and the address store, once no container is
/// on the bridge.
fn remove_network() -> Result<()> {
    require_root("ch05")?;
    let mut leases = Leases::lock(Path::new(LEASES_FILE))?;
    reclaim_stale(&mut leases, None)?;
    if let Some(lease) = leases.leases().first() {
        bail!("container {} still uses {BRIDGE} ({}); stop it first", lease.id, lease.address);
    }
    for firewall in Firewall::ALL {
        if firewall.is_installed() {
            firewall.remove_all()?;
        }
    }
    remove_bridge(&mut Netlink::open()?)?;
    eprintln!("ch05: removed {BRIDGE} and crabbox's NAT rules");
    Ok(())
}
// ANCHOR_END: remove_network

// ANCHOR: cleanup
/// Removes what every container whose runtime has ended left behind: its network (veth,
/// NAT rules, lease, files) and its cgroups.
fn cleanup() -> Result<()> {
    require_root("ch05")?;
    reclaim_stale(&mut Leases::lock(Path::new(LEASES_FILE))?, None)?;
    let reclaimed = reclaim_stale_cgroups(detect_setup()?)?;
    eprintln!("ch05: removed the cgroups of {} stale containers", reclaimed.len());
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
