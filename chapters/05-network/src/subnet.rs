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

// ANCHOR: special_ranges
/// Ranges no bridge may have, and why (RFC 6890, the IANA special-purpose registry).
const SPECIAL: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "is \"this network\", which no interface may have"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "is the loopback range, which belongs to `lo` alone"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "is link-local: every link has it, none routes it"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "is multicast: addresses of groups, not of interfaces"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "is reserved, up to the broadcast address 255.255.255.255"),
];

/// The private ranges of RFC 1918: no host on the internet has these addresses.
const PRIVATE: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];
// ANCHOR_END: special_ranges

/// What an error about a subnet suggests instead.
const USE_PRIVATE: &str =
    "use a private range (10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16), like 10.88.0.0/16";

impl Subnet {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Subnet {
        let subnet = Subnet { network, prefix };
        Subnet { network: Ipv4Addr::from(u32::from(network) & subnet.mask()), prefix }
    }

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

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & self.mask() == u32::from(self.network)
    }

    /// Whether the two share an address: then one holds the other.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    /// Fails for a subnet that a bridge cannot have, or should not: a special range, or
    /// addresses that machines on the internet have.
    fn check_usable(&self) -> Result<(), String> {
        let special = |(network, prefix, why): &(Ipv4Addr, u8, &'static str)| {
            self.overlaps(&Subnet::new(*network, *prefix)).then_some(*why)
        };
        if let Some(why) = SPECIAL.iter().find_map(special) {
            return Err(format!("{self} {why}; {USE_PRIVATE}"));
        }
        let private = |(network, prefix): &(Ipv4Addr, u8)| {
            let range = Subnet::new(*network, *prefix);
            range.contains(self.network) && range.prefix <= self.prefix
        };
        if !PRIVATE.iter().any(private) {
            return Err(format!(
                "{self} holds public addresses: on this host they would mean the \
                 containers, not the machines on the internet that have them; {USE_PRIVATE}"
            ));
        }
        Ok(())
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

    /// Parses `A.B.C.D/PREFIX`, a network address with all host bits zero, in a range that
    /// a bridge can have.
    fn from_str(text: &str) -> Result<Subnet, String> {
        let usage = || format!("`{text}` is not a subnet like 10.88.0.0/16");
        let (network, prefix) = text.split_once('/').ok_or_else(usage)?;
        let network: Ipv4Addr = network.parse().map_err(|_| usage())?;
        let prefix: u8 = prefix.parse().map_err(|_| usage())?;
        // A /30 has four addresses: the network's, the gateway, one container, broadcast.
        if !(8..=30).contains(&prefix) {
            return Err(format!("the prefix of `{text}` must be from /8 to /30"));
        }
        let subnet = Subnet::new(network, prefix);
        if subnet.network != network {
            let network = subnet.network;
            return Err(format!("`{text}` has host bits set; did you mean {network}/{prefix}?"));
        }
        subnet.check_usable()?;
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
        let smallest: Subnet = "192.168.7.0/30".parse().unwrap();
        assert_eq!(smallest.container_addresses().count(), 1);
    }

    #[test]
    fn bad_subnets_say_what_is_wrong() {
        assert!("10.88.0.0".parse::<Subnet>().unwrap_err().contains("like 10.88.0.0/16"));
        assert!("10.88.0.0/31".parse::<Subnet>().unwrap_err().contains("/8 to /30"));
        assert!("10.88.1.0/16".parse::<Subnet>().unwrap_err().contains("10.88.0.0/16?"));
        assert_eq!("10.88.0.0/16".parse::<Subnet>().unwrap(), Subnet::default());
    }

    #[test]
    fn special_and_public_ranges_are_refused() {
        for (subnet, why) in [
            ("127.0.0.0/8", "loopback"),
            ("169.254.0.0/16", "link-local"),
            ("224.0.0.0/24", "multicast"),
            ("0.0.0.0/8", "this network"),
            ("255.255.255.0/24", "broadcast"),
            ("8.8.8.0/24", "public"),
            // Partly private is not private.
            ("172.0.0.0/8", "public"),
        ] {
            let refused = subnet.parse::<Subnet>().unwrap_err();
            assert!(refused.contains(why) && refused.contains("10.88.0.0/16"), "{refused}");
        }
        for private in ["10.0.0.0/8", "172.31.0.0/16", "192.168.200.0/30"] {
            assert!(private.parse::<Subnet>().is_ok(), "{private}");
        }
    }

    #[test]
    fn subnets_overlap_when_one_holds_the_other() {
        let subnet = Subnet::default();
        assert!(subnet.overlaps(&Subnet::new(Ipv4Addr::new(10, 88, 3, 0), 24)));
        assert!(subnet.overlaps(&Subnet::new(Ipv4Addr::new(10, 0, 0, 0), 8)));
        assert!(!subnet.overlaps(&Subnet::new(Ipv4Addr::new(10, 89, 0, 0), 16)));
        assert!(subnet.contains(subnet.gateway()));
    }
}
