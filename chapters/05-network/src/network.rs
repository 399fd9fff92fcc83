//! The container's network, from `--net` to the last rule removed: the chapter's building
//! blocks in the order they are used.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use ch03_pivot_root::volumes::Volume;
use ch04_cgroups::cleanup::after_cleanup;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::bridge::{check_subnet_on_host, ensure_bridge, undo_bridge, BridgeMade};
use crate::container_files::{
    container_file_volumes, remove_container_files, write_container_files,
};
use crate::firewall::{Firewall, FirewallTool};
use crate::leases::{Leases, LEASES_FILE};
use crate::netlink::Netlink;
use crate::netns::{join_netns, open_netns};
use crate::ports::{check_ports_distinct, check_ports_free_on_host, PublishedPort};
use crate::subnet::Subnet;
use crate::veth::{connect_container, disconnect_container, loopback_only};

/// What `--net` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    Bridge,
    None,
    Host,
    Join(PathBuf),
}

impl FromStr for NetMode {
    type Err = String;

    fn from_str(text: &str) -> Result<NetMode, String> {
        match text {
            "bridge" => Ok(NetMode::Bridge),
            "none" => Ok(NetMode::None),
            "host" => Ok(NetMode::Host),
            _ => match text.strip_prefix("ns:") {
                Some(path) if !path.is_empty() => Ok(NetMode::Join(PathBuf::from(path))),
                _ => Err(format!("`{text}` is not bridge, none, host or ns:PATH")),
            },
        }
    }
}

/// The network a container asked for, checked before anything is created.
#[derive(Debug)]
pub enum Network {
    Bridge(BridgeNetwork),
    None,
    Host,
    Join(OwnedFd),
}

/// What a container on the bridge asked for.
#[derive(Debug)]
pub struct BridgeNetwork {
    pub subnet: Subnet,
    pub ports: Vec<PublishedPort>,
    pub firewall: Firewall,
}

impl Network {
    /// Checks the network a container asks for (`--net`, `-p`, `--subnet`, `--firewall`)
    /// and opens what it joins, before anything is created.
    pub fn new(
        mode: &NetMode,
        ports: &[PublishedPort],
        subnet: Subnet,
        tool: FirewallTool,
    ) -> Result<Network> {
        if !ports.is_empty() && *mode != NetMode::Bridge {
            bail!("-p publishes ports through the bridge; it needs --net bridge");
        }
        Ok(match mode {
            NetMode::Bridge => {
                check_ports_distinct(ports)?;
                let mut netlink = Netlink::open().context("open a netlink socket")?;
                check_subnet_on_host(&mut netlink, &subnet)?;
                Network::Bridge(BridgeNetwork {
                    subnet,
                    ports: ports.to_vec(),
                    firewall: Firewall::choose(tool)?,
                })
            }
            NetMode::None => Network::None,
            NetMode::Host => Network::Host,
            NetMode::Join(path) => Network::Join(open_netns(path)?),
        })
    }

    /// A network namespace of its own for bridge and none; host and ns:PATH use one that
    /// exists.
    pub fn namespace(&self) -> CloneFlags {
        match self {
            Network::Bridge(_) | Network::None => CloneFlags::CLONE_NEWNET,
            Network::Host | Network::Join(_) => CloneFlags::empty(),
        }
    }

    /// The files the network puts in the container: /etc/hosts and /etc/resolv.conf on
    /// the bridge.
    pub fn volumes(&self, id: &str) -> Vec<Volume> {
        match self {
            Network::Bridge(_) => container_file_volumes(id),
            _ => Vec::new(),
        }
    }

    /// In the child, before anything else: joins the namespace `--net ns:PATH` names.
    pub fn enter(&self) -> Result<()> {
        match self {
            Network::Join(netns) => join_netns(netns.as_fd()),
            _ => Ok(()),
        }
    }

    // ANCHOR: attach
    /// In the runtime, while the child waits at the gate: connects the child's network
    /// namespace. Whatever fails half-way is undone before the error is returned: the
    /// container's part, and what this start made of the network all containers share.
    pub fn attach(&self, id: &str, hostname: &str, child: Pid) -> Result<Attachment> {
        let mut attachment = Attachment::new(id);
        let netns = || open_netns(Path::new(&format!("/proc/{child}/ns/net")));
        let mut made = SharedMade::default();
        let attached = match self {
            Network::Bridge(bridge) => {
                attachment.published = !bridge.ports.is_empty();
                attachment.on_bridge = true;
                let netns = netns()?;
                attach_to_bridge(bridge, &mut attachment, &mut made, hostname, child, &netns)
            }
            Network::None => loopback_only(&netns()?),
            Network::Host | Network::Join(_) => Ok(()),
        };
        match (attached, self) {
            (Ok(()), _) => Ok(attachment),
            (Err(err), Network::Bridge(bridge)) => {
                // Both steps run: a failed detach must not keep the shared network half-made.
                let detached = attachment.detach();
                let undone = after_cleanup(detached, made.undo(bridge), "undoing the bridge");
                after_cleanup(Err(err), undone, "undoing the half-made network")
            }
            (Err(err), _) => Err(err),
        }
    }
    // ANCHOR_END: attach
}

// ANCHOR: attach_to_bridge
fn attach_to_bridge(
    bridge: &BridgeNetwork,
    attachment: &mut Attachment,
    made: &mut SharedMade,
    hostname: &str,
    child: Pid,
    netns: &OwnedFd,
) -> Result<()> {
    let BridgeNetwork { subnet, ports, firewall } = bridge;
    let id = attachment.id.clone();
    let mut netlink = Netlink::open().context("open a netlink socket")?;
    let (address, bridge) = {
        // One container at a time from here to the lease: the address, the host ports, the
        // bridge and the shared rules are read and changed under the store's lock.
        let mut leases = Leases::lock(Path::new(LEASES_FILE))?;
        reclaim_stale(&mut leases, Some(subnet))?;
        leases.check_ports(ports)?;
        check_ports_free_on_host(ports)?;
        let bridge = ensure_bridge(&mut netlink, subnet, &mut made.bridge)?;
        made.nat = firewall.set_up_nat(subnet)?;
        (leases.allocate(subnet, &id, child, ports)?, bridge)
    };
    attachment.address = Some(address);
    // The address and ports are the container's now: the rest needs no lock.
    connect_container(&mut netlink, &id, netns, bridge, address, subnet)?;
    firewall.publish(&id, address, ports)?;
    write_container_files(&id, hostname, address)?;
    Ok(())
}
// ANCHOR_END: attach_to_bridge

// ANCHOR: shared_made
/// What a start made of the network that every container shares: the bridge or its
/// address, and crabbox's NAT rules.
#[derive(Debug, Default)]
struct SharedMade {
    bridge: BridgeMade,
    nat: bool,
}

impl SharedMade {
    /// Undoes it after a failed start, unless a container has come to use it meanwhile
    /// (the store's lock was let go before the veth was made).
    fn undo(&self, network: &BridgeNetwork) -> Result<()> {
        if self.bridge == BridgeMade::Nothing && !self.nat {
            return Ok(());
        }
        let leases = Leases::lock(Path::new(LEASES_FILE))?;
        if leases.leases().iter().any(|lease| network.subnet.contains(lease.address)) {
            return Ok(());
        }
        let nat = if self.nat { network.firewall.remove_all() } else { Ok(()) };
        let mut netlink = Netlink::open()?;
        [nat, undo_bridge(&mut netlink, self.bridge, &network.subnet)].into_iter().collect()
    }
}
// ANCHOR_END: shared_made

/// Drops the leases in `subnet` (or all) of containers whose runtime was killed before it
/// could clean up, and removes what else they left: rules, veth, files. A start reclaims
/// only its own subnet's: the store is shared by runtimes in every network namespace of the
/// host, and the rules of another subnet's bridge may be in a namespace of their own,
/// which this runtime's netlink sockets do not reach.
pub fn reclaim_stale(leases: &mut Leases, subnet: Option<&Subnet>) -> Result<()> {
    let stale = leases.take_stale(subnet);
    if stale.is_empty() {
        return Ok(());
    }
    for lease in stale {
        forget(&lease.id, !lease.ports.is_empty())?;
    }
    leases.save()
}

/// Removes a container's rules, if it `published` ports, and its files, and unplugs its
/// veth, if its namespace is still alive. Runs every step, and returns the first error.
fn forget(id: &str, published: bool) -> Result<()> {
    let mut results = Vec::new();
    if published {
        results.push(unpublish(id));
    }
    results.push(
        Netlink::open().map_err(Into::into).and_then(|mut n| disconnect_container(&mut n, id)),
    );
    results.push(remove_container_files(id));
    results.into_iter().collect()
}

/// Removes a container's rules from the firewall that has them: the one it used may not be
/// the one asked for now. nft comes first, and costs one netlink request; iptables, a
/// process per call, is asked only when nft has none.
fn unpublish(id: &str) -> Result<()> {
    for firewall in Firewall::ALL {
        if firewall.is_installed() && firewall.unpublish(id)? {
            break;
        }
    }
    Ok(())
}

/// What a container has on the host's side of the network: undone by [`Attachment::detach`].
#[derive(Debug)]
pub struct Attachment {
    id: String,
    on_bridge: bool,
    published: bool,
    pub address: Option<Ipv4Addr>,
}

impl Attachment {
    fn new(id: &str) -> Attachment {
        Attachment { id: id.to_string(), on_bridge: false, published: false, address: None }
    }

    // ANCHOR: detach
    /// Removes the container's rules, its files, its veth from the bridge and, last, its
    /// lease. Each step finds by the container's id what is there, so detaching what was
    /// only half attached, or twice, is fine.
    pub fn detach(&mut self) -> Result<()> {
        if !self.on_bridge {
            return Ok(());
        }
        forget(&self.id, self.published)?;
        Leases::lock(Path::new(LEASES_FILE))?.release(&self.id)?;
        self.on_bridge = false;
        Ok(())
    }
    // ANCHOR_END: detach
}

/// Detaches even when the runtime panics (an exercise's `todo!()`, or a bug): unwinding
/// runs this. The runtime calls [`Attachment::detach`] itself first, to report errors.
impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_need_the_bridge() {
        let ports = ["8080:80".parse::<PublishedPort>().unwrap()];
        for mode in [NetMode::None, NetMode::Host] {
            let err = Network::new(&mode, &ports, Subnet::default(), FirewallTool::Auto);
            assert!(err.unwrap_err().to_string().contains("needs --net bridge"));
        }
    }

    #[test]
    fn none_gets_a_namespace_of_its_own_and_host_keeps_the_hosts() {
        let none = Network::new(&NetMode::None, &[], Subnet::default(), FirewallTool::Auto);
        assert_eq!(none.unwrap().namespace(), CloneFlags::CLONE_NEWNET);
        let host = Network::new(&NetMode::Host, &[], Subnet::default(), FirewallTool::Auto);
        assert_eq!(host.unwrap().namespace(), CloneFlags::empty());
    }
}
