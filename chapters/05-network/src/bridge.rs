//! The bridge `crabbox0`: a virtual switch on the host that every container's veth plugs
//! into. It holds the subnet's first address, so it is also the containers' gateway. It is
//! made on first use and stays for the next container; `ch05 network-rm` removes it.

use std::fs;

use anyhow::{bail, Context, Result};

use ch02_namespaces::hostname::random_bytes;

use crate::netlink::Netlink;
use crate::subnet::Subnet;

pub const BRIDGE: &str = "crabbox0";

/// What a start made of the bridge, so that it can be undone when a later step fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BridgeMade {
    #[default]
    Nothing,
    /// The bridge was there; this start gave it its address.
    Address,
    Bridge,
}

// ANCHOR: check_subnet_on_host
/// Fails, before anything is made, when `subnet` cannot work on this host: when crabbox0
/// has another subnet, or another interface's route covers some of its addresses (the
/// containers could not reach those hosts, nor they the containers).
pub fn check_subnet_on_host(netlink: &mut Netlink, subnet: &Subnet) -> Result<()> {
    let bridge = netlink.link_index(BRIDGE)?;
    if let Some(index) = bridge {
        bridge_has_gateway(netlink, index, subnet)?;
    }
    let routes = netlink.ipv4_routes().context("list the host's routes")?;
    for (destination, prefix, interface) in routes {
        let route = Subnet::new(destination, prefix);
        // The default route (prefix 0) overlaps everything, and crabbox0's are its own.
        if prefix > 0 && (interface.is_none() || interface != bridge) && route.overlaps(subnet) {
            bail!(
                "--subnet {subnet} overlaps {route}, which the host routes elsewhere (see \
                 `ip route`); choose a private subnet that no route of the host uses"
            );
        }
    }
    Ok(())
}
// ANCHOR_END: check_subnet_on_host

// ANCHOR: ensure_bridge
/// Makes sure the bridge exists, has the gateway address of `subnet` and is up; returns its
/// link index. `made` records what it made, as soon as it has made it.
pub fn ensure_bridge(netlink: &mut Netlink, subnet: &Subnet, made: &mut BridgeMade) -> Result<u32> {
    let index = match netlink.link_index(BRIDGE)? {
        Some(index) => index,
        None => {
            let mac = bridge_mac()?;
            netlink
                .create_bridge(BRIDGE, mac)
                .with_context(|| format!("create bridge {BRIDGE}"))?;
            *made = BridgeMade::Bridge;
            netlink.link_index(BRIDGE)?.with_context(|| format!("find the new bridge {BRIDGE}"))?
        }
    };
    if !bridge_has_gateway(netlink, index, subnet)? {
        let gateway = subnet.gateway();
        netlink
            .add_address(index, gateway, subnet.prefix())
            .with_context(|| format!("give {BRIDGE} the address {gateway}/{}", subnet.prefix()))?;
        if *made == BridgeMade::Nothing {
            *made = BridgeMade::Address;
        }
    }
    netlink.set_up(index).with_context(|| format!("bring {BRIDGE} up"))?;
    enable_routing()?;
    Ok(index)
}
// ANCHOR_END: ensure_bridge

/// Whether bridge `index` has the gateway's address; fails when it has another one.
fn bridge_has_gateway(netlink: &mut Netlink, index: u32, subnet: &Subnet) -> Result<bool> {
    let addresses = netlink.ipv4_addresses(index)?;
    match addresses.first() {
        None => Ok(false),
        Some(_) if addresses.contains(&(subnet.gateway(), subnet.prefix())) => Ok(true),
        Some((address, prefix)) => bail!(
            "bridge {BRIDGE} has address {address}/{prefix}, which is not the gateway of \
             --subnet {subnet}; use the subnet it has, or remove it with `ch05 network-rm` \
             once no container uses it"
        ),
    }
}

/// Undoes what [`ensure_bridge`] made.
pub fn undo_bridge(netlink: &mut Netlink, made: BridgeMade, subnet: &Subnet) -> Result<()> {
    let Some(index) = netlink.link_index(BRIDGE)? else { return Ok(()) };
    match made {
        BridgeMade::Nothing => Ok(()),
        BridgeMade::Address => netlink
            .delete_address(index, subnet.gateway(), subnet.prefix())
            .with_context(|| format!("remove {BRIDGE}'s address again")),
        BridgeMade::Bridge => remove_bridge(netlink),
    }
}

/// A random MAC address of the locally administered, unicast kind (bit 1 of the first byte
/// set, bit 0 clear). A bridge without one of its own takes the lowest MAC of its ports,
/// and changes it when that port goes: every container would lose its gateway until its
/// ARP entry expired.
fn bridge_mac() -> Result<[u8; 6]> {
    let mut mac: [u8; 6] = random_bytes()?;
    mac[0] = (mac[0] | 0b10) & !0b1;
    Ok(mac)
}

/// Lets the host route for its containers. See the kernel's
/// Documentation/networking/ip-sysctl.rst.
fn enable_routing() -> Result<()> {
    // Forward packets between interfaces: containers reach beyond the host through it.
    // Changing it resets the interfaces' other settings, so it is written only when off.
    let forward = "/proc/sys/net/ipv4/ip_forward";
    if fs::read_to_string(forward).with_context(|| format!("read {forward}"))?.trim() != "1" {
        write_sysctl(forward, "1")?;
    }
    // A connection to a published port on 127.0.0.1 is sent, after DNAT, out of the bridge
    // with source 127.0.0.1; without route_localnet the kernel drops such a packet as a
    // martian ("do not consider loopback addresses as martian source or destination").
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet"), "1")
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("write {value} to {path}"))
}

/// Deletes the bridge, if it exists.
pub fn remove_bridge(netlink: &mut Netlink) -> Result<()> {
    if let Some(index) = netlink.link_index(BRIDGE)? {
        netlink.delete_link(index).with_context(|| format!("delete bridge {BRIDGE}"))?;
    }
    Ok(())
}
