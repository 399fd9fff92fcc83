//! The address store (IPAM): one line per container on the bridge, in a file under
//! /run/crabbox. Every start and every exit reads and rewrites it under an exclusive
//! flock(2), so parallel starts never get the same address or the same host port.
//!
//! ```text
//! # address container pid netns published
//! 10.88.0.2 3f2a9c1b7d4e 41233 net:[4026532301] 18080:80/tcp
//! 10.88.0.3 a81c5e0f9b62 41297 net:[4026532377]
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Pid;

use crate::ports::PublishedPort;
use crate::subnet::Subnet;

pub const LEASES_FILE: &str = "/run/crabbox/network/crabbox0.leases";

/// One container's address and published ports. `pid` is the container's first process
/// and `netns` its network namespace, as /proc/PID/ns/net names it: while that process is in
/// that namespace, the lease is in use.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub id: String,
    pub pid: Pid,
    pub netns: String,
    pub ports: Vec<PublishedPort>,
}

impl Lease {
    /// A process that has exited, even one not yet reaped (a zombie), has no namespaces
    /// left; a new process that got the pid again is in another namespace.
    fn in_use(&self) -> bool {
        network_namespace_of(self.pid).is_some_and(|netns| netns == self.netns)
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
    file: Flock<File>,
    leases: Vec<Lease>,
}

impl Leases {
    /// Opens the store at `path` (creating it) and waits for the exclusive lock.
    pub fn lock(path: &Path) -> Result<Leases> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("open the address store {}", path.display()))?;
        let mut file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("lock the address store {}", path.display()))?;
        let mut text = String::new();
        file.read_to_string(&mut text).with_context(|| format!("read {}", path.display()))?;
        let leases = parse_leases(&text).with_context(|| format!("read {}", path.display()))?;
        Ok(Leases { file, leases })
    }

    pub fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// Forgets the leases of containers that have gone without releasing them (their
    /// runtime was killed) and returns them, so their firewall rules can go too.
    pub fn take_stale(&mut self) -> Vec<Lease> {
        let (gone, alive) = self.leases.drain(..).partition(|lease| !lease.in_use());
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
    /// Gives container `id` the lowest free address of `subnet`, and records it.
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
        let lease = Lease { address, id: id.to_string(), pid, netns, ports: ports.to_vec() };
        self.leases.push(lease);
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

    /// Writes the leases back, replacing the file's contents.
    pub fn save(&mut self) -> Result<()> {
        let mut text = String::from("# address container pid netns published\n");
        for lease in &self.leases {
            let Lease { address, id, pid, netns, .. } = lease;
            text.push_str(&format!("{address} {id} {pid} {netns}"));
            for port in &lease.ports {
                text.push_str(&format!(" {port}"));
            }
            text.push('\n');
        }
        self.file.rewind().context("rewind the address store")?;
        self.file.set_len(0).context("truncate the address store")?;
        self.file.write_all(text.as_bytes()).context("write the address store")
    }
}

fn parse_leases(text: &str) -> Result<Vec<Lease>> {
    let lines = text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty());
    lines.map(parse_lease).collect()
}

fn parse_lease(line: &str) -> Result<Lease> {
    let bad = || anyhow::anyhow!("`{line}` is not `ADDRESS ID PID NETNS [PORT…]`");
    let mut fields = line.split_whitespace();
    let address = fields.next().and_then(|field| field.parse().ok()).ok_or_else(bad)?;
    let id = fields.next().ok_or_else(bad)?.to_string();
    let pid = fields.next().and_then(|field| field.parse().ok()).ok_or_else(bad)?;
    let netns = fields.next().ok_or_else(bad)?.to_string();
    let ports = fields.map(|field| field.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    Ok(Lease { address, id, pid: Pid::from_raw(pid), netns, ports })
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
        // As if the first container's pid now belonged to a process in another namespace.
        leases.leases[0].netns = "net:[1]".to_string();
        let stale = leases.take_stale();
        assert_eq!(stale.iter().map(|lease| lease.id.as_str()).collect::<Vec<_>>(), ["gone"]);
        assert_eq!(leases.leases().len(), 1);
    }
}
