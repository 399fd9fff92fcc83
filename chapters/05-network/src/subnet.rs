//! The bridge's IPv4 subnet, like 10.88.0.0/16: the gateway (the bridge itself) takes the
//! first address, containers take the others.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The bridge's address: the first address after the network's own.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The addresses containers may have, lowest first: everything between the gateway and
    /// the broadcast address.
    pub fn container_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | (u32::MAX >> self.prefix);
        (first..broadcast).map(Ipv4Addr::from)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }
}

impl Default for Subnet {
    /// 10.88.0.0/16, the subnet podman uses for its default network too.
    fn default() -> Subnet {
        Subnet { network: Ipv4Addr::new(10, 88, 0, 0), prefix: 16 }
    }
}

impl FromStr for Subnet {
    type Err = String;

    /// Parses `A.B.C.D/PREFIX`, a network address with all host bits zero.
    fn from_str(text: &str) -> Result<Subnet, String> {
        let usage = || format!("`{text}` is not a subnet like 10.88.0.0/16");
        let (network, prefix) = text.split_once('/').ok_or_else(usage)?;
        let network: Ipv4Addr = network.parse().map_err(|_| usage())?;
        let prefix: u8 = prefix.parse().map_err(|_| usage())?;
        if !(8..=29).contains(&prefix) {
            return Err(format!("the prefix of `{text}` must be from /8 to /29"));
        }
        let subnet = Subnet { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 {
            let network = Ipv4Addr::from(u32::from(network) & subnet.mask());
            return Err(format!("`{text}` has host bits set; did you mean {network}/{prefix}?"));
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_first_and_containers_stop_before_broadcast() {
        let subnet: Subnet = "192.168.7.0/29".parse().unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(192, 168, 7, 1));
        let addresses: Vec<Ipv4Addr> = subnet.container_addresses().collect();
        assert_eq!(addresses.first(), Some(&Ipv4Addr::new(192, 168, 7, 2)));
        assert_eq!(addresses.last(), Some(&Ipv4Addr::new(192, 168, 7, 6)));
    }

    #[test]
    fn bad_subnets_say_what_is_wrong() {
        assert!("10.88.0.0".parse::<Subnet>().unwrap_err().contains("like 10.88.0.0/16"));
        assert!("10.88.0.0/31".parse::<Subnet>().unwrap_err().contains("/8 to /29"));
        assert!("10.88.1.0/16".parse::<Subnet>().unwrap_err().contains("10.88.0.0/16?"));
        assert_eq!("10.88.0.0/16".parse::<Subnet>().unwrap(), Subnet::default());
    }
}
