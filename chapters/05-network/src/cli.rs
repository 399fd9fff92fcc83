//! The options of `ch05 run`: chapter 4's, plus the network.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

use crate::firewall::FirewallTool;
use crate::ports::PublishedPort;
use crate::subnet::Subnet;

#[derive(Debug, Args)]
#[group(skip)]
pub struct RunArgs {
    #[command(flatten)]
    pub base: ch04_cgroups::cli::RunArgs,

    /// Network: bridge (own namespace on crabbox0), none (only lo), host (the host's), or
    /// ns:PATH (join the network namespace at PATH, like /proc/PID/ns/net)
    #[arg(long, value_name = "MODE", default_value = "bridge")]
    pub net: NetMode,

    /// Publish a container port on every address of the host, like 8080:80 or 5353:53/udp
    #[arg(short = 'p', long = "publish", value_name = "HOST:CONTAINER[/PROTO]")]
    pub publish: Vec<PublishedPort>,

    /// The bridge's subnet; the bridge takes its first address
    #[arg(long, value_name = "CIDR", default_value_t = Subnet::default())]
    pub subnet: Subnet,

    /// The tool that writes the NAT rules; auto prefers nft
    #[arg(long, value_name = "TOOL", value_enum, default_value_t = FirewallTool::Auto)]
    pub firewall: FirewallTool,
}

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
