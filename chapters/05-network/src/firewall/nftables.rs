//! The rules in nftables: one table, `ip crabbox`, that holds them all. See nft(8).
//!
//! ```text
//! table ip crabbox
//!   chain prerouting  (nat, dstnat)  packets from outside to one of the host's addresses → published
//!   chain output      (nat, dstnat)  packets from the host itself to one of its addresses → published
//!   chain published                  one DNAT rule per published port, comment "crabbox:<id>"
//!   chain postrouting (nat, srcnat)  masquerade the subnet going out, and 127.0.0.1 going in
//!   chain guard       (filter, raw)  drop what comes from a container addressed to 127.0.0.0/8
//! ```

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{rule_comment, run_tool};
use crate::bridge::BRIDGE;
use crate::ports::PublishedPort;
use crate::subnet::Subnet;

// ANCHOR: set_up_nat
pub fn set_up_nat(subnet: &Subnet) -> Result<()> {
    // One script is one transaction: the chains are flushed and refilled atomically, so the
    // containers already running never lose their NAT for a moment. (Starts do not race
    // here: they hold the address store's lock.) Priority -100 is what
    // nft(8) calls `dstnat` and 100 `srcnat`; the names are not accepted on every hook by
    // every nft version, the numbers are. The guard runs at -300 (`raw`), before connection
    // tracking undoes NAT for replies, so it sees only what a container itself addressed:
    // with route_localnet on the bridge, a container could otherwise send packets to the
    // services the host keeps on 127.0.0.1 (Kubernetes' CVE-2020-8558).
    let script = format!(
        r#"add table ip crabbox
add chain ip crabbox published
add chain ip crabbox prerouting {{ type nat hook prerouting priority -100; policy accept; }}
add chain ip crabbox output {{ type nat hook output priority -100; policy accept; }}
add chain ip crabbox postrouting {{ type nat hook postrouting priority 100; policy accept; }}
add chain ip crabbox guard {{ type filter hook prerouting priority -300; policy accept; }}
flush chain ip crabbox prerouting
flush chain ip crabbox output
flush chain ip crabbox postrouting
flush chain ip crabbox guard
add rule ip crabbox prerouting fib daddr type local jump published
add rule ip crabbox output fib daddr type local jump published
add rule ip crabbox postrouting ip saddr {subnet} oifname != "{BRIDGE}" masquerade comment "crabbox: containers go out as the host"
add rule ip crabbox postrouting ip saddr 127.0.0.0/8 oifname "{BRIDGE}" masquerade comment "crabbox: published ports on 127.0.0.1"
add rule ip crabbox guard iifname "{BRIDGE}" ip daddr 127.0.0.0/8 drop comment "crabbox: no container reaches the host's loopback"
"#
    );
    run_tool("nft", &["-f", "-"], Some(&script))?;
    Ok(())
}
// ANCHOR_END: set_up_nat

// ANCHOR: publish
pub fn publish(id: &str, address: Ipv4Addr, ports: &[PublishedPort]) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let comment = rule_comment(id);
    let mut script = String::new();
    for port in ports {
        // EXERCISE 5.5: add a rule to the `published` chain that sends the host's port to the container's
        // See nft(8), "NAT STATEMENTS": `dnat to ADDRESS:PORT`.
        let (protocol, host, container) = (port.protocol.name(), port.host, port.container);
        script.push_str(&format!(
            "add rule ip crabbox published {protocol} dport {host} \
             dnat to {address}:{container} comment \"{comment}\"\n"
        ));
        // END EXERCISE
    }
    run_tool("nft", &["-f", "-"], Some(&script))?;
    Ok(())
}
// ANCHOR_END: publish

pub fn unpublish(id: &str) -> Result<()> {
    let Some(listing) = list_published()? else { return Ok(()) };
    let handles = rule_handles(&listing, &rule_comment(id))?;
    if handles.is_empty() {
        return Ok(());
    }
    let script: String = handles
        .iter()
        .map(|handle| format!("delete rule ip crabbox published handle {handle}\n"))
        .collect();
    run_tool("nft", &["-f", "-"], Some(&script))?;
    Ok(())
}

pub fn remove_all() -> Result<()> {
    if list_published()?.is_some() {
        run_tool("nft", &["delete", "table", "ip", "crabbox"], None)?;
    }
    Ok(())
}

/// The `published` chain as JSON (`nft -j`), or None when crabbox's table does not exist.
fn list_published() -> Result<Option<String>> {
    match run_tool("nft", &["-j", "list", "chain", "ip", "crabbox", "published"], None) {
        // nft says ENOENT's "No such file or directory" for a table or chain that is not there.
        Err(err) if err.to_string().contains("No such file or directory") => Ok(None),
        listing => listing.map(Some),
    }
}

/// The handles of the rules in an `nft -j` listing whose comment is `comment`.
fn rule_handles(listing: &str, comment: &str) -> Result<Vec<u64>> {
    let json: Value = serde_json::from_str(listing).context("read nft's JSON listing")?;
    let objects = json["nftables"].as_array().context("nft's listing has no `nftables` list")?;
    let rules = objects.iter().filter_map(|object| object.get("rule"));
    let ours = rules.filter(|rule| rule["comment"].as_str() == Some(comment));
    Ok(ours.filter_map(|rule| rule["handle"].as_u64()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_containers_own_rules_are_found() {
        let listing = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"chain": {"family": "ip", "table": "crabbox", "name": "published", "handle": 1}},
            {"rule": {"chain": "published", "handle": 7, "comment": "crabbox:aaa", "expr": []}},
            {"rule": {"chain": "published", "handle": 8, "comment": "crabbox:bbb", "expr": []}},
            {"rule": {"chain": "published", "handle": 9, "comment": "crabbox:aaa", "expr": []}}]}"#;
        assert_eq!(rule_handles(listing, "crabbox:aaa").unwrap(), [7, 9]);
        assert!(rule_handles(listing, "crabbox:ccc").unwrap().is_empty());
    }
}
