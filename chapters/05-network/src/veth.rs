//! The container's cable: a veth pair. One end, `cbx<id>`, stays on the host, plugged into
//! the bridge; the other is the container's `eth0`. See veth(4).

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use nix::errno::Errno;

use crate::netlink::Netlink;
use crate::netns::in_netns;
use crate::subnet::Subnet;

/// The host end's name: `cbx` and the 12-character container id, 15 characters, the most a
/// link name may have (IFNAMSIZ is 16 with the terminating zero).
pub fn veth_name(id: &str) -> String {
    format!("cbx{id}")
}

// ANCHOR: container_mac
/// eth0's MAC address, made from its IPv4 address after a locally administered, unicast
/// prefix (02:cb), as Docker long did with 02:42. Addresses are handed out again as
/// containers come and go, and the host's ARP cache trusts an address's MAC for 15 to 45 s
/// (arp(7): base_reachable_time) and probes the old MAC a few seconds more; a new MAC for an
/// old address would get nothing from the host all that time. The same address now always
/// comes with the same MAC.
pub fn container_mac(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0xcb, a, b, c, d]
}
// ANCHOR_END: container_mac

// ANCHOR: connect_container
/// Connects the network namespace `netns` to the bridge with a veth pair, and sets up the
/// container's side: `lo`, `eth0` with `address`, and the default route via the gateway.
pub fn connect_container(
    netlink: &mut Netlink,
    id: &str,
    netns: &OwnedFd,
    bridge: u32,
    address: Ipv4Addr,
    subnet: &Subnet,
) -> Result<()> {
    let host_end = veth_name(id);
    netlink
        .create_veth(&host_end, "eth0", container_mac(address), netns.as_fd())
        .with_context(|| format!("create veth pair {host_end} and eth0"))?;
    let index = netlink.link_index(&host_end)?.context("find the new veth")?;
    netlink.set_controller(index, bridge).with_context(|| format!("plug {host_end} in"))?;
    netlink.set_up(index).with_context(|| format!("bring {host_end} up"))?;
    in_netns(netns, || configure_inside(address, subnet))
}
// ANCHOR_END: connect_container

// ANCHOR: configure_inside
/// Runs inside the container's network namespace: what `ip` would do there.
fn configure_inside(address: Ipv4Addr, subnet: &Subnet) -> Result<()> {
    let mut netlink = Netlink::open().context("open netlink in the container")?;
    bring_up_loopback(&mut netlink)?;
    let eth0 = netlink.link_index("eth0")?.context("find eth0 in the container")?;
    // EXERCISE 5.4: give eth0 `address` in the subnet, bring it up, and route everything else through the gateway
    // The route needs eth0 up and its address in place: the kernel finds the gateway
    // through the subnet's route, which the address brings.
    netlink
        .add_address(eth0, address, subnet.prefix())
        .with_context(|| format!("give eth0 the address {address}"))?;
    netlink.set_up(eth0).context("bring eth0 up")?;
    netlink.add_default_route(subnet.gateway()).context("add the default route")?;
    // END EXERCISE
    Ok(())
}
// ANCHOR_END: configure_inside

/// A new network namespace has a loopback interface, but it is down (`ip link` in one shows
/// `lo` without UP).
pub fn bring_up_loopback(netlink: &mut Netlink) -> Result<()> {
    let lo = netlink.link_index("lo")?.context("find lo")?;
    netlink.set_up(lo).context("bring lo up")
}

/// Gives a new namespace a working `lo` and nothing else (`--net none`).
pub fn loopback_only(netns: &OwnedFd) -> Result<()> {
    in_netns(netns, || bring_up_loopback(&mut Netlink::open()?))
}

// ANCHOR: disconnect_container
/// Unplugs the host end from the bridge, if it is still there: `ip link set DEV nomaster`.
/// The pair itself goes with the container's network namespace: the kernel deletes both
/// ends when the namespace is freed, a moment after the container's last process, in a
/// worker thread of its own. Deleting it here would cost more than the rest of a start:
/// before it returns, a link's deletion waits until every CPU has run the callbacks queued
/// for an RCU grace period (rcu_barrier() in the kernel's netdev_run_todo). Unplugged, the
/// old eth0 no longer answers for its address on the bridge, so the address can be handed
/// out again at once.
pub fn disconnect_container(netlink: &mut Netlink, id: &str) -> Result<()> {
    let host_end = veth_name(id);
    let Some(index) = netlink.link_index(&host_end)? else { return Ok(()) };
    match netlink.set_controller(index, 0) {
        // Gone in between: the container's namespace went, and the pair with it.
        Err(err) if err.raw_os_error() == Some(Errno::ENODEV as i32) => Ok(()),
        unplugged => unplugged.with_context(|| format!("unplug {host_end}")),
    }
}
// ANCHOR_END: disconnect_container

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_carries_the_address() {
        let mac = container_mac(Ipv4Addr::new(10, 88, 0, 7));
        assert_eq!(mac, [0x02, 0xcb, 10, 88, 0, 7]);
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered, unicast");
    }
}
