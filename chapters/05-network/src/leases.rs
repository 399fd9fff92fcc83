//! The address store (IPAM): one line per container on the bridge, in a file under
//! /run/crabbox. Every start and every exit reads and rewrites it while holding an
//! exclusive flock(2) on a lock file beside it, so parallel starts never get the same
//! address or the same host port.
//!
//! ```text
//! # address container runtime pid netns published
//! 10.88.0.2 3f2a9c1b7d4e 41230 41233 net:[4026532301] 18080:80/tcp
//! 10.88.0.3 a81c5e0f9b62 41290 41297 net:[4026532377]
//! ```

use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::ports::PublishedPort;
use crate::subnet::Subnet;

pub const LEASES_FILE: &str = "/run/crabbox/network/crabbox0.leases";

/// One container's address and published ports, with who holds them: the runtime that
/// started the container, the container's first process, and that process's network
/// namespace as /proc/PID/ns/net names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub id: String,
    pub runtime: Pid,
    pub pid: Pid,
    pub netns: String,
    pub ports: Vec<PublishedPort>,
}

impl Lease {
    /// In use while the container runs, or while its runtime lives to clean up after it.
    /// A process that has exited, even one not yet reaped (a zombie), has no namespaces
    /// left; a new process that got the pid again is in another namespace.
    fn in_use(&self) -> bool {
        let container_runs = network_namespace_of(self.pid).is_some_and(|ns| ns == self.netns);
        // kill(2) with no signal only checks that the process exists.
        container_runs || kill(self.runtime, None) != Err(Errno::ESRCH)
    }
}

/// The network namespace of `pid`, like `net:[4026532301]`.
fn network_namespace_of(pid: Pid) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// The store, locked for as long as this value lives.
#[derive(Debug)]
pub struct Leases {
    path: PathBuf,
    _lock: Flock<File>,
    leases: Vec<Lease>,
}

impl Leases {
    /// Waits for the exclusive lock on the store at `path`, then reads it.
    pub fn lock(path: &Path) -> Result<Leases> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let lock_path = path.with_extension("lock");
        let lock_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("lock {}", lock_path.display()))?;
        let text = match fs::read_to_string(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            read => read.with_context(|| format!("read {}", path.display()))?,
        };
        let leases = parse_leases(&text).with_context(|| format!("read {}", path.display()))?;
        Ok(Leases { path: path.to_path_buf(), _lock: lock, leases })
    }

    pub fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// Forgets the leases in `subnet` (or all) of containers that have gone without
    /// releasing them (their runtime was killed) and returns them, so what else they left
    /// can go too.
    pub fn take_stale(&mut self, subnet: Option<&Subnet>) -> Vec<Lease> {
        let ours = |lease: &Lease| subnet.is_none_or(|subnet| subnet.contains(lease.address));
        let (gone, alive) = self.leases.drain(..).partition(|lease| ours(lease) && !lease.in_use());
        self.leases = alive;
        gone
    }

    /// Fails when another container already publishes one of `ports` on the host.
    pub fn check_ports(&self, ports: &[PublishedPort]) -> Result<()> {
        for port in ports {
            let taken =
                self.leases.iter().find(|lease| lease.ports.iter().any(|p| p.clashes_with(port)));
            if let Some(lease) = taken {
                bail!(
                    "port {}/{} is already published by container {}; choose another host port",
                    port.host,
                    port.protocol.name(),
                    lease.id
                );
            }
        }
        Ok(())
    }

    // ANCHOR: allocate
    /// Gives container `id`, whose first process is `pid`, the lowest free address of
    /// `subnet`, and records it.
    pub fn allocate(
        &mut self,
        subnet: &Subnet,
        id: &str,
        pid: Pid,
        ports: &[PublishedPort],
    ) -> Result<Ipv4Addr> {
        let Some(address) = self.lowest_free_address(subnet) else {
            bail!("every address of {subnet} is in use; stop a container or use a larger --subnet");
        };
        let netns = network_namespace_of(pid).context("the container has gone")?;
        let runtime = Pid::this();
        let id = id.to_string();
        self.leases.push(Lease { address, id, runtime, pid, netns, ports: ports.to_vec() });
        self.save()?;
        Ok(address)
    }

    fn lowest_free_address(&self, subnet: &Subnet) -> Option<Ipv4Addr> {
        // EXERCISE 5.2: find the lowest address of `subnet` that no lease holds
        let taken = |address: &Ipv4Addr| self.leases.iter().any(|lease| lease.address == *address);
        subnet.container_addresses().find(|address| !taken(address))
        // END EXERCISE
    }
    // ANCHOR_END: allocate

    /// Removes container `id`'s lease, if it has one.
    pub fn release(&mut self, id: &str) -> Result<()> {
        let before = self.leases.len();
        self.leases.retain(|lease| lease.id != id);
        if self.leases.len() != before {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the leases back: to a new file, renamed over the old one, so a runtime
    /// killed half-way through leaves the old store whole (rename(2) is atomic).
    pub fn save(&mut self) -> Result<()> {
        let mut text = String::from("# address container runtime pid netns published\n");
        for Lease { address, id, runtime, pid, netns, ports } in &self.leases {
            text.push_str(&format!("{address} {id} {runtime} {pid} {netns}"));
            for port in ports {
                text.push_str(&format!(" {port}"));
            }
            text.push('\n');
        }
        let new = self.path.with_extension("new");
        fs::write(&new, text).with_context(|| format!("write {}", new.display()))?;
        fs::rename(&new, &self.path).with_context(|| format!("replace {}", self.path.display()))
    }
}

fn parse_leases(text: &str) -> Result<Vec<Lease>> {
    let lines = text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty());
    lines.map(parse_lease).collect()
}

fn parse_lease(line: &str) -> Result<Lease> {
    let bad = || anyhow::anyhow!("`{line}` is not `ADDRESS ID RUNTIME PID NETNS [PORT…]`");
    let mut fields = line.split_whitespace();
    let mut field = || fields.next().ok_or_else(bad);
    let address = field()?.parse().map_err(|_| bad())?;
    let id = field()?.to_string();
    let runtime = Pid::from_raw(field()?.parse().map_err(|_| bad())?);
    let pid = Pid::from_raw(field()?.parse().map_err(|_| bad())?);
    let netns = field()?.to_string();
    let ports = fields.map(|field| field.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    Ok(Lease { address, id, runtime, pid, netns, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("network/leases");
        (dir, path)
    }

    #[test]
    fn addresses_are_handed_out_lowest_first_and_reused_after_release() {
        let (_dir, path) = store();
        let subnet = Subnet::default();
        let me = Pid::this();
        let mut leases = Leases::lock(&path).unwrap();
        let first = leases.allocate(&subnet, "aaaa", me, &[]).unwrap();
        let second = leases.allocate(&subnet, "bbbb", me, &[]).unwrap();
        assert_eq!((first, second), (Ipv4Addr::new(10, 88, 0, 2), Ipv4Addr::new(10, 88, 0, 3)));
        leases.release("aaaa").unwrap();
        drop(leases);
        let mut leases = Leases::lock(&path).unwrap();
        assert_eq!(leases.leases().len(), 1);
        assert_eq!(leases.allocate(&subnet, "cccc", me, &[]).unwrap(), first);
    }

    #[test]
    fn a_full_subnet_and_a_taken_port_are_errors() {
        let (_dir, path) = store();
        let subnet: Subnet = "10.99.0.0/29".parse().unwrap();
        let port: PublishedPort = "18080:80".parse().unwrap();
        let mut leases = Leases::lock(&path).unwrap();
        for id in ["a", "b", "c", "d", "e"] {
            leases.allocate(&subnet, id, Pid::this(), &[port]).unwrap();
        }
        let full = leases.allocate(&subnet, "f", Pid::this(), &[]).unwrap_err();
        assert!(full.to_string().contains("larger --subnet"), "{full}");
        let taken = leases.check_ports(&[port]).unwrap_err();
        assert!(taken.to_string().contains("already published by container a"), "{taken}");
    }

    #[test]
    fn leases_of_containers_that_are_gone_are_stale() {
        let (_dir, path) = store();
        let mut leases = Leases::lock(&path).unwrap();
        leases.allocate(&Subnet::default(), "gone", Pid::this(), &[]).unwrap();
        leases.allocate(&Subnet::default(), "here", Pid::this(), &[]).unwrap();
        // As if the first container's pid now belonged to a process in another namespace,
        // and its runtime had gone.
        leases.leases[0].netns = "net:[1]".to_string();
        leases.leases[0].runtime = Pid::from_raw(i32::MAX);
        let stale = leases.take_stale(None);
        assert_eq!(stale.iter().map(|lease| lease.id.as_str()).collect::<Vec<_>>(), ["gone"]);
        assert_eq!(leases.leases().len(), 1);
    }
}
