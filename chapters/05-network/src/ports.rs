//! Published ports: `-p HOST:CONTAINER[/tcp|/udp]` makes the container's port answer on
//! the host's port, on every address of the host.

use std::fmt;
use std::net::{TcpListener, UdpSocket};
use std::str::FromStr;

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The number the IP header carries for it (protocols(5)).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedPort {
    pub host: u16,
    pub container: u16,
    pub protocol: Protocol,
}

impl PublishedPort {
    /// Whether two publications would claim the same port of the host.
    pub fn clashes_with(&self, other: &PublishedPort) -> bool {
        self.host == other.host && self.protocol == other.protocol
    }
}

impl FromStr for PublishedPort {
    type Err = String;

    fn from_str(text: &str) -> Result<PublishedPort, String> {
        let usage = || format!("`{text}` is not HOST:CONTAINER[/tcp|/udp], like 8080:80");
        let (ports, protocol) = match text.split_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return Err(usage()),
            None => (text, Protocol::Tcp),
        };
        let (host, container) = ports.split_once(':').ok_or_else(usage)?;
        let port = |text: &str| match text.parse::<u16>() {
            Ok(0) | Err(_) => Err(usage()),
            Ok(port) => Ok(port),
        };
        Ok(PublishedPort { host: port(host)?, container: port(container)?, protocol })
    }
}

impl fmt::Display for PublishedPort {
    /// The form the lease store and the messages use: `18080:80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.container, self.protocol.name())
    }
}

/// Fails when one host port is asked for twice: only one rule could win.
pub fn check_ports_distinct(ports: &[PublishedPort]) -> Result<()> {
    for (i, port) in ports.iter().enumerate() {
        if ports[..i].iter().any(|earlier| earlier.clashes_with(port)) {
            bail!(
                "host port {}/{} is published twice; give each -p its own",
                port.host,
                port.protocol.name()
            );
        }
    }
    Ok(())
}

/// A DNAT rule would quietly take a port from a host program that listens on it; binding
/// the port for a moment tells whether one does.
pub fn check_ports_free_on_host(ports: &[PublishedPort]) -> Result<()> {
    for port in ports {
        let bound = match port.protocol {
            Protocol::Tcp => TcpListener::bind(("0.0.0.0", port.host)).map(drop),
            Protocol::Udp => UdpSocket::bind(("0.0.0.0", port.host)).map(drop),
        };
        if let Err(err) = bound {
            bail!(
                "port {}/{} cannot be published: {err}; a program on the host uses it, \
                 choose another host port",
                port.host,
                port.protocol.name()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_with_and_without_protocol() {
        let tcp = PublishedPort { host: 8080, container: 80, protocol: Protocol::Tcp };
        assert_eq!("8080:80".parse(), Ok(tcp));
        assert_eq!("8080:80/tcp".parse(), Ok(tcp));
        let udp: PublishedPort = "5353:53/udp".parse().unwrap();
        assert_eq!(udp.protocol, Protocol::Udp);
        assert_eq!(udp.to_string().parse(), Ok(udp));
        assert!(!udp.clashes_with(&tcp));
        let twice = check_ports_distinct(&[tcp, udp, "8080:81".parse().unwrap()]).unwrap_err();
        assert!(twice.to_string().contains("8080/tcp is published twice"), "{twice}");
    }

    #[test]
    fn bad_ports_say_what_a_port_looks_like() {
        for bad in ["8080", "8080:0", "70000:80", "8080:80/sctp", "a:b"] {
            assert!(bad.parse::<PublishedPort>().unwrap_err().contains("like 8080:80"), "{bad}");
        }
    }
}
