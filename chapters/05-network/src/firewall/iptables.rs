//! The rules with iptables, for hosts without nft: two chains of crabbox's own in the nat
//! table, reached by one jump each from the host's built-in chains. See iptables(8) and
//! iptables-extensions(8).

use std::net::Ipv4Addr;

use anyhow::Result;

use super::{rule_comment, run_tool};
use crate::bridge::BRIDGE;
use crate::ports::PublishedPort;
use crate::subnet::Subnet;

const PUBLISHED: &str = "CRABBOX-PUBLISHED";
const POSTROUTING: &str = "CRABBOX-POSTROUTING";
/// In the raw table: see the guard in nftables.rs.
const GUARD: &str = "CRABBOX-GUARD";

/// crabbox's chains, by table.
const CHAINS: &[(&str, &str)] = &[("nat", PUBLISHED), ("nat", POSTROUTING), ("raw", GUARD)];

/// The jumps from the host's chains into crabbox's: table, chain, rule.
const JUMPS: &[(&str, &str, &[&str])] = &[
    ("nat", "PREROUTING", &["-m", "addrtype", "--dst-type", "LOCAL", "-j", PUBLISHED]),
    ("nat", "OUTPUT", &["-m", "addrtype", "--dst-type", "LOCAL", "-j", PUBLISHED]),
    ("nat", "POSTROUTING", &["-j", POSTROUTING]),
    ("raw", "PREROUTING", &["-j", GUARD]),
];

pub fn set_up_nat(subnet: &Subnet) -> Result<bool> {
    let created = !chain_exists("nat", PUBLISHED);
    for (table, chain) in CHAINS {
        if !chain_exists(table, chain) {
            iptables(table, &["-N", chain])?;
        }
    }
    for (table, chain, rule) in JUMPS {
        // -C checks whether the rule is there already.
        if iptables(table, &[&["-C", chain], *rule].concat()).is_err() {
            iptables(table, &[&["-A", chain], *rule].concat())?;
        }
    }
    // Unlike nft's one transaction, flushing and refilling takes several calls: for a
    // moment, running containers' outgoing connections are not masqueraded.
    let subnet = subnet.to_string();
    nat(&["-F", POSTROUTING])?;
    nat(&["-A", POSTROUTING, "-s", &subnet, "!", "-o", BRIDGE, "-j", "MASQUERADE"])?;
    nat(&["-A", POSTROUTING, "-s", "127.0.0.0/8", "-o", BRIDGE, "-j", "MASQUERADE"])?;
    iptables("raw", &["-F", GUARD])?;
    iptables("raw", &["-A", GUARD, "-i", BRIDGE, "-d", "127.0.0.0/8", "-j", "DROP"])?;
    Ok(created)
}

pub fn publish(id: &str, address: Ipv4Addr, ports: &[PublishedPort]) -> Result<()> {
    let comment = rule_comment(id);
    for port in ports {
        let (host, destination) = (port.host.to_string(), format!("{address}:{}", port.container));
        nat(&[
            "-A",
            PUBLISHED,
            "-p",
            port.protocol.name(),
            "--dport",
            &host,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "DNAT",
            "--to-destination",
            &destination,
        ])?;
    }
    Ok(())
}

pub fn unpublish(id: &str) -> Result<bool> {
    // No chain, no rules.
    let Ok(rules) = nat(&["-S", PUBLISHED]) else { return Ok(false) };
    let comment = rule_comment(id);
    let mut found = false;
    // `-S` prints each rule as the `-A …` that adds it, quoting the comment; the same words
    // unquoted after `-D` delete it.
    for rule in rules.lines() {
        let words: Vec<&str> = rule.split_whitespace().map(|word| word.trim_matches('"')).collect();
        if words.first() == Some(&"-A") && words.contains(&comment.as_str()) {
            nat(&[&["-D"], &words[1..]].concat())?;
            found = true;
        }
    }
    Ok(found)
}

pub fn remove_all() -> Result<()> {
    for (table, chain, rule) in JUMPS {
        while iptables(table, &[&["-D", chain], *rule].concat()).is_ok() {}
    }
    for (table, chain) in CHAINS {
        if chain_exists(table, chain) {
            iptables(table, &["-F", chain])?;
            iptables(table, &["-X", chain])?;
        }
    }
    Ok(())
}

fn chain_exists(table: &str, chain: &str) -> bool {
    iptables(table, &["-S", chain]).is_ok()
}

fn nat(args: &[&str]) -> Result<String> {
    iptables("nat", args)
}

/// Runs iptables on `table`; -w waits for the lock other iptables calls hold.
fn iptables(table: &str, args: &[&str]) -> Result<String> {
    run_tool("iptables", &[&["-w", "-t", table], args].concat(), None)
}
