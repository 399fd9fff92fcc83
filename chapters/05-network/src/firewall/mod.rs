//! The NAT rules: masquerade for traffic leaving the subnet, and DNAT for each published
//! port. They live in crabbox's own table (nftables) or chains (iptables), never among the
//! host's rules, and what is there for one container (an iptables rule, an element of an
//! nft map) carries the comment `crabbox:<id>`, so it can be traced to its container and
//! removed with it.

pub mod iptables;
pub mod nfnetlink;
pub mod nftables;

use std::env;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::ports::PublishedPort;
use crate::subnet::Subnet;

/// What `--firewall` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirewallTool {
    /// nft when it is installed, else iptables
    Auto,
    Nftables,
    Iptables,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firewall {
    Nftables,
    Iptables,
}

impl Firewall {
    pub const ALL: [Firewall; 2] = [Firewall::Nftables, Firewall::Iptables];

    /// Picks the tool, checking it is installed, before anything is created.
    pub fn choose(tool: FirewallTool) -> Result<Firewall> {
        let nft = is_installed("nft");
        let iptables = is_installed("iptables");
        match tool {
            FirewallTool::Nftables if nft => Ok(Firewall::Nftables),
            FirewallTool::Iptables if iptables => Ok(Firewall::Iptables),
            FirewallTool::Auto if nft => Ok(Firewall::Nftables),
            FirewallTool::Auto if iptables => Ok(Firewall::Iptables),
            FirewallTool::Nftables => bail!("nft is not installed; apt-get install nftables"),
            FirewallTool::Iptables => bail!("iptables is not installed; apt-get install iptables"),
            FirewallTool::Auto => bail!(
                "the bridge network needs nft or iptables for its NAT rules; \
                 apt-get install nftables, or use --net none"
            ),
        }
    }

    pub fn is_installed(self) -> bool {
        match self {
            Firewall::Nftables => is_installed("nft"),
            Firewall::Iptables => is_installed("iptables"),
        }
    }

    /// Creates crabbox's table or chains and the rules every container shares: masquerade
    /// for the subnet, and the jumps to the published ports. Safe to repeat; returns whether
    /// this call created them.
    pub fn set_up_nat(self, subnet: &Subnet) -> Result<bool> {
        match self {
            Firewall::Nftables => nftables::set_up_nat(subnet),
            Firewall::Iptables => iptables::set_up_nat(subnet),
        }
    }

    /// Sends each port of the host to the container's: a DNAT rule per port (iptables), or
    /// an element per port of the map that one DNAT rule reads (nftables).
    pub fn publish(self, id: &str, address: Ipv4Addr, ports: &[PublishedPort]) -> Result<()> {
        match self {
            Firewall::Nftables => nftables::publish(id, address, ports),
            Firewall::Iptables => iptables::publish(id, address, ports),
        }
    }

    /// Removes every rule of container `id`, and says whether there were any.
    pub fn unpublish(self, id: &str) -> Result<bool> {
        match self {
            Firewall::Nftables => nftables::unpublish(id),
            Firewall::Iptables => iptables::unpublish(id),
        }
    }

    /// Removes crabbox's table or chains with every rule in them.
    pub fn remove_all(self) -> Result<()> {
        match self {
            Firewall::Nftables => nftables::remove_all(),
            Firewall::Iptables => iptables::remove_all(),
        }
    }
}

/// The comment that ties a rule to its container.
pub fn rule_comment(id: &str) -> String {
    format!("crabbox:{id}")
}

/// Whether `program` is on the PATH, or in the sbin directories where these tools live.
/// (Looking is much cheaper than starting it: this runs at every start and exit.)
fn is_installed(program: &str) -> bool {
    let path = env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin"].map(PathBuf::from);
    env::split_paths(&path).chain(sbin).any(|dir| dir.join(program).is_file())
}

/// Runs a firewall tool, feeding it `input`, and returns what it printed. Its error message
/// becomes ours when it fails.
fn run_tool(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let command_line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {command_line}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).with_context(|| format!("write to {command_line}"))?;
    }
    let output = child.wait_with_output().with_context(|| format!("run {command_line}"))?;
    if !output.status.success() {
        let why = String::from_utf8_lossy(&output.stderr);
        match input {
            Some(input) => bail!("{command_line} failed: {}\ninput:\n{input}", why.trim()),
            None => bail!("{command_line} failed: {}", why.trim()),
        }
    }
    String::from_utf8(output.stdout).with_context(|| format!("read what {command_line} printed"))
}
