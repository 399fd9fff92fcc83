//! The rules in nftables: one table, `ip crabbox`, that holds them all. See nft(8).
//!
//! ```text
//! table ip crabbox                   comment "crabbox 2: NAT for 10.88.0.0/16"
//!   map ports                        (protocol . host port) : (address . container port)
//!   chain from_outside (nat, dstnat) packets from outside to one of the host's addresses → @ports
//!   chain from_host (nat, dstnat)    packets from the host itself to one of its addresses → @ports
//!   chain source_nat (nat, srcnat)   masquerade the subnet going out, and 127.0.0.1 going in
//!   chain loopback_guard (raw)       drop what comes from a container addressed to 127.0.0.0/8
//! ```
//!
//! The table is made once, by `nft -f`, and then only looked at: a start checks its comment
//! with one netlink request. A published port is one element of the map `ports`, added and
//! deleted over netlink, so starts and exits run no `nft` process.

use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use anyhow::{bail, Context, Result};

use super::nfnetlink::{Element, Nftables};
use super::{rule_comment, run_tool};
use crate::bridge::BRIDGE;
use crate::ports::PublishedPort;
use crate::subnet::Subnet;

const TABLE: &str = "crabbox";
const PORTS: &str = "ports";

/// The table's comment names the layout and the subnet its rules are for: a table with
/// another comment (an older crabbox's, or another subnet's) is replaced. Raise the
/// number whenever the script below changes.
fn table_comment(subnet: &Subnet) -> String {
    format!("crabbox 2: NAT for {subnet}")
}

// ANCHOR: set_up_nat
/// Makes sure crabbox's table is in place, and returns whether this call created it.
pub fn set_up_nat(subnet: &Subnet) -> Result<bool> {
    let comment = table_comment(subnet);
    let mut nftables = socket()?;
    let found = nftables.table_comment(TABLE).context("look for nft table ip crabbox")?;
    if found.as_deref() == Some(comment.as_str()) {
        return Ok(false);
    }
    // One script is one transaction: the old table goes and the new one comes at once.
    // (`add table` first, so that `delete table` has one to delete.) Priority -100 is what
    // nft(8) calls `dstnat` and 100 `srcnat`; the names are not accepted on every hook by
    // every nft version, the numbers are. The guard runs at -300 (`raw`), before connection
    // tracking undoes NAT for replies, so it sees only what a container itself addressed:
    // with route_localnet on the bridge, a container could otherwise send packets to the
    // services the host keeps on 127.0.0.1 (Kubernetes' CVE-2020-8558). Each field of a
    // concatenation (`meta l4proto . th dport`) fills a 4-byte register of its own.
    let script = format!(
        r#"add table ip crabbox
delete table ip crabbox
table ip crabbox {{
  comment "{comment}"
  map ports {{
    type inet_proto . inet_service : ipv4_addr . inet_service
  }}
  chain from_outside {{
    type nat hook prerouting priority -100; policy accept;
    fib daddr type local dnat ip to meta l4proto . th dport map @ports
  }}
  chain from_host {{
    type nat hook output priority -100; policy accept;
    fib daddr type local dnat ip to meta l4proto . th dport map @ports
  }}
  chain source_nat {{
    type nat hook postrouting priority 100; policy accept;
    ip saddr {subnet} oifname != "{BRIDGE}" masquerade comment "crabbox: containers go out as the host"
    ip saddr 127.0.0.0/8 oifname "{BRIDGE}" masquerade comment "crabbox: published ports on 127.0.0.1"
  }}
  chain loopback_guard {{
    type filter hook prerouting priority -300; policy accept;
    iifname "{BRIDGE}" ip daddr 127.0.0.0/8 drop comment "crabbox: no container reaches the host's loopback"
  }}
}}
"#
    );
    run_tool("nft", &["-f", "-"], Some(&script))?;
    // Linux keeps a table's comment from 5.10 on; before, every start would replace the
    // table, and the published ports of the containers running with it.
    if nftables.table_comment(TABLE)?.as_deref() != Some(comment.as_str()) {
        drop(nftables);
        if found.is_none() {
            remove_all()?;
        }
        bail!(
            "this kernel keeps no comment on an nft table (Linux 5.10 and later do); \
             use --firewall iptables"
        );
    }
    Ok(found.is_none())
}
// ANCHOR_END: set_up_nat

// ANCHOR: publish
/// Adds one element per port to the map `ports`, in one transaction.
pub fn publish(id: &str, address: Ipv4Addr, ports: &[PublishedPort]) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let elements: Vec<Element> = ports.iter().map(|port| port_element(id, address, port)).collect();
    socket()?.add_elements(TABLE, PORTS, &elements).context("add the published ports to @ports")
}

/// The element of the map `ports` that sends the host's port to the container's:
/// `tcp . 18080 comment "crabbox:<id>" : 10.88.0.2 . 80` in nft's words.
pub fn port_element(id: &str, address: Ipv4Addr, port: &PublishedPort) -> Element {
    // EXERCISE 5.5: the key is the protocol and the host's port, the value the container's address and port
    // Numbers in network byte order (big-endian), each field padded to 4 bytes.
    let key = [register(&[port.protocol.number()]), register(&port.host.to_be_bytes())].concat();
    let value = [register(&address.octets()), register(&port.container.to_be_bytes())].concat();
    Element { key, value, comment: rule_comment(id) }
    // END EXERCISE
}
// ANCHOR_END: publish

/// One field of a concatenation: nf_tables loads each into a 32-bit register of its own, so
/// a 1-byte protocol or a 2-byte port is followed by zeros up to 4 bytes.
pub fn register(field: &[u8]) -> Vec<u8> {
    let mut padded = field.to_vec();
    padded.resize(field.len().div_ceil(4) * 4, 0);
    padded
}

/// Deletes container `id`'s elements from the map, and says whether it had any.
pub fn unpublish(id: &str) -> Result<bool> {
    let mut nftables = socket()?;
    let Some(elements) = nftables.elements(TABLE, PORTS).context("list @ports")? else {
        return Ok(false);
    };
    let comment = rule_comment(id);
    let keys: Vec<Vec<u8>> =
        elements.into_iter().filter(|element| element.comment == comment).map(|e| e.key).collect();
    if keys.is_empty() {
        return Ok(false);
    }
    nftables.delete_elements(TABLE, PORTS, &keys).context("delete from @ports")?;
    Ok(true)
}

pub fn remove_all() -> Result<()> {
    let found = socket()?.table_comment(TABLE)?;
    if found.is_some() {
        run_tool("nft", &["delete", "table", "ip", TABLE], None)?;
    }
    Ok(())
}

/// The runtime's one netfilter socket, opened on first use. One for the runtime's whole
/// life, because closing one is slow right after a change: nf_tables frees what a change
/// replaced only after an RCU grace period, in a worker, and a socket's close waits for
/// that worker when it has not run yet (nft_rcv_nl_event in net/netfilter/nf_tables_api.c),
/// some 10 ms. When the runtime exits, the worker has long run.
fn socket() -> Result<MutexGuard<'static, Nftables>> {
    static SOCKET: OnceLock<Mutex<Nftables>> = OnceLock::new();
    let socket = match SOCKET.get() {
        Some(socket) => socket,
        None => {
            let opened = Nftables::open().context("open a netfilter netlink socket")?;
            SOCKET.get_or_init(|| Mutex::new(opened))
        }
    };
    Ok(socket.lock().unwrap_or_else(PoisonError::into_inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_element_is_laid_out_as_nft_lays_it_out() {
        // What `nft --debug=netlink add element ip crabbox ports { tcp . 18080 : 10.88.0.2 . 80 }`
        // prints: key 00000006 0000a046, data 0200580a 00005000 (32-bit words, little-endian).
        let port: PublishedPort = "18080:80".parse().unwrap();
        let element = port_element("3f2a9c1b7d4e", Ipv4Addr::new(10, 88, 0, 2), &port);
        assert_eq!(element.key, [6, 0, 0, 0, 0x46, 0xa0, 0, 0]);
        assert_eq!(element.value, [10, 88, 0, 2, 0, 80, 0, 0]);
        assert_eq!(element.comment, "crabbox:3f2a9c1b7d4e");
    }
}
