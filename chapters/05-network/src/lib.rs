//! Chapter 5: the network. A network namespace gives the container interfaces, addresses,
//! routes and firewall rules of its own, and nothing else: a new one holds only a loopback
//! interface, down. A veth pair is the cable from it to the host, where the bridge
//! `crabbox0` joins every container's cable like a switch; NAT rules on the host take the
//! containers' traffic out, and published ports in.

pub mod bridge;
pub mod cli;
pub mod container_files;
pub mod firewall;
pub mod leases;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod ports;
pub mod subnet;
pub mod veth;
