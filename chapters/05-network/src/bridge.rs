//! The bridge `crabbox0`: a virtual switch on the host that every container's veth plugs
//! into. It holds the subnet's first address, so it is also the containers' gateway. It is
//! made on first use and stays for the next container; `ch05 network-rm` removes it.

use std::fs;

use anyhow::{bail, Context, Result};

use ch02_namespaces::hostname::random_bytes;

use crate::netlink::Netlink;
use crate::subnet::Subnet;

pub const BRIDGE: &str = "crabbox0";

// ANCHOR: ensure_bridge
/// Makes sure the bridge exists, has the gateway address of `subnet` and is up; returns its
/// link index.
pub fn ensure_bridge(netlink: &mut Netlink, subnet: &Subnet) -> Result<u32> {
    let index = match netlink.link_index(BRIDGE)? {
        Some(index) => index,
        None => {
            let mac = bridge_mac()?;
            netlink
                .create_bridge(BRIDGE, mac)
                .with_context(|| format!("create bridge {BRIDGE}"))?;
            netlink.link_index(BRIDGE)?.with_context(|| format!("find the new bridge {BRIDGE}"))?
        }
    };
    let gateway = (subnet.gateway(), subnet.prefix());
    let addresses = netlink.ipv4_addresses(index)?;
    if addresses.is_empty() {
        netlink
            .add_address(index, gateway.0, gateway.1)
            .with_context(|| format!("give {BRIDGE} the address {}/{}", gateway.0, gateway.1))?;
    } else if !addresses.contains(&gateway) {
        let (address, prefix) = addresses[0];
        bail!(
            "bridge {BRIDGE} has address {address}/{prefix}, which is not the gateway of \
             --subnet {subnet}; use the subnet it has, or remove it with `ch05 network-rm` \
             once no container uses it"
        );
    }
    netlink.set_up(index).with_context(|| format!("bring {BRIDGE} up"))?;
    enable_routing()?;
    Ok(index)
}
// ANCHOR_END: ensure_bridge

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
