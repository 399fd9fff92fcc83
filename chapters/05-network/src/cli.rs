//! The options of `ch05 run`: chapter 4's, plus the network.

use std::path::PathBuf;

use ch01_chroot::cli::EnvOptions;
use ch02_namespaces::cli::ProcessOptions;
use ch03_pivot_root::cli::MountOptions;
use ch04_cgroups::cli::LimitOptions;
use clap::Args;

use crate::firewall::FirewallTool;
use crate::network::{NetMode, Network};
use crate::ports::PublishedPort;
use crate::subnet::Subnet;

/// `ch05 run [OPTIONS] ROOTFS -- COMMAND`: the groups of chapters 1 to 4, and this one's.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory that becomes `/` for the command
    pub rootfs: PathBuf,

    #[command(flatten)]
    pub env: EnvOptions,

    #[command(flatten)]
    pub process: ProcessOptions,

    #[command(flatten)]
    pub mounts: MountOptions,

    #[command(flatten)]
    pub limits: LimitOptions,

    #[command(flatten)]
    pub network: NetworkOptions,

    /// Command to run inside the rootfs, with its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The container's network: its mode, published ports, the bridge's subnet, the NAT tool.
#[derive(Debug, Clone, Args)]
pub struct NetworkOptions {
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

impl NetworkOptions {
    /// Checks the network these options ask for, before anything is created.
    pub fn network(&self) -> anyhow::Result<Network> {
        Network::new(&self.net, &self.publish, self.subnet, self.firewall)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    /// Chapter 6's form: every group, beside `IMAGE [COMMAND…]` instead of `ROOTFS -- COMMAND`.
    #[derive(Debug, Parser)]
    struct ImageRun {
        #[command(flatten)]
        env: EnvOptions,
        #[command(flatten)]
        process: ProcessOptions,
        #[command(flatten)]
        mounts: MountOptions,
        #[command(flatten)]
        limits: LimitOptions,
        #[command(flatten)]
        network: NetworkOptions,
        image: String,
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    }

    #[test]
    fn the_groups_flatten_beside_other_positionals() {
        ImageRun::command().debug_assert();
        let args = ["run", "-e", "A=1", "--hostname", "box", "-v", "/:/host", "--memory", "64m"];
        let args = args.into_iter().chain(["--net", "none", "busybox", "sh", "-c", "echo hi"]);
        let run = ImageRun::try_parse_from(args).unwrap();
        assert_eq!(run.image, "busybox");
        assert_eq!(run.command, ["sh", "-c", "echo hi"]);
        assert_eq!(run.env.env, ["A=1"]);
        assert_eq!(run.process.hostname.as_deref(), Some("box"));
        assert_eq!(run.mounts.volumes.len(), 1);
        assert_eq!(run.limits.limits().memory, Some(64 << 20));
        assert_eq!(run.network.net, NetMode::None);
    }
}
