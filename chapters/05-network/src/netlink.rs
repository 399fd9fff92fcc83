//! A small synchronous rtnetlink client: the same messages `ip link`, `ip addr` and
//! `ip route` send to the kernel, built with netlink-packet-route (as podman's netavark
//! does) and sent over a netlink-sys socket. See netlink(7) and rtnetlink(7).
//!
//! Every request asks for an acknowledgement (NLM_F_ACK), so each call returns only once
//! the kernel has done it, or with the kernel's errno (EEXIST, ENODEV …) as an io::Error.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

/// A route netlink socket. It acts on the network namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    sequence: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace. A socket stays in the
    /// namespace it was created in, whatever namespace the thread moves to later.
    pub fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { socket, sequence: 0 })
    }

    /// The index of the link called `name`, if there is one.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(message), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })),
            Err(err) if err.raw_os_error() == Some(Errno::ENODEV as i32) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates a bridge with the MAC address `mac`: `ip link add NAME address MAC type
    /// bridge`. Fails with EEXIST if it exists.
    pub fn create_bridge(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::Address(mac.to_vec()));
        message.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(RouteNetlinkMessage::NewLink(message), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    // ANCHOR: create_veth
    /// Creates a veth pair: `name` here, and its peer `peer_name` with the MAC address
    /// `peer_mac` directly in the network namespace `peer_netns`. That is
    /// `ip link add NAME type veth peer name PEER address MAC netns NS`.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_mac: [u8; 6],
        peer_netns: BorrowedFd,
    ) -> io::Result<()> {
        // EXERCISE 5.3: ask the kernel (RTM_NEWLINK) for a veth pair whose peer is created in `peer_netns`
        // The peer is a whole link message of its own, nested in the veth's link info
        // (IFLA_INFO_DATA, VETH_INFO_PEER). Creating it in the namespace with its final
        // name is the same as `ip link set PEER netns NS name eth0` after, in one step:
        // the host never sees an `eth0` of the container's.
        let mut peer = LinkMessage::default();
        peer.attributes.push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes.push(LinkAttribute::Address(peer_mac.to_vec()));
        peer.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(message), NLM_F_CREATE | NLM_F_EXCL)?;
        // END EXERCISE
        Ok(())
    }
    // ANCHOR_END: create_veth

    /// Plugs link `index` into the bridge `bridge`: `ip link set DEV master BRIDGE`; bridge 0
    /// unplugs it (`nomaster`).
    pub fn set_controller(&mut self, index: u32, bridge: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::Controller(bridge));
        self.request(RouteNetlinkMessage::SetLink(message), 0)?;
        Ok(())
    }

    /// Brings link `index` up: `ip link set DEV up`.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(message), 0)?;
        Ok(())
    }

    /// Deletes link `index`; deleting one end of a veth pair deletes both.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(message), 0)?;
        Ok(())
    }

    /// Gives link `index` an IPv4 address: `ip addr add ADDRESS/PREFIX dev DEV`.
    pub fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.index = index;
        // For IPv4, IFA_LOCAL is the interface's own address; IFA_ADDRESS is the same
        // except on point-to-point links, where it is the peer's (linux/if_addr.h).
        message.attributes.push(AddressAttribute::Local(address.into()));
        message.attributes.push(AddressAttribute::Address(address.into()));
        self.request(RouteNetlinkMessage::NewAddress(message), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// The IPv4 addresses of link `index`, with their prefix lengths.
    pub fn ipv4_addresses(&mut self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetAddress(message), NLM_F_DUMP)?;
        let mut addresses = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(address) = reply else { continue };
            if address.header.index != index {
                continue;
            }
            for attribute in &address.attributes {
                if let AddressAttribute::Local(std::net::IpAddr::V4(ip)) = attribute {
                    addresses.push((*ip, address.header.prefix_len));
                }
            }
        }
        Ok(addresses)
    }

    /// Adds the default route through `gateway`: `ip route add default via GATEWAY`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> io::Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Universe;
        message.header.kind = RouteType::Unicast;
        message.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        self.request(RouteNetlinkMessage::NewRoute(message), NLM_F_CREATE | NLM_F_EXCL)?;
        Ok(())
    }

    /// Lists the host's routes in the main table: each route's destination, prefix length
    /// and output interface (`ip route`).
    pub fn ipv4_routes(&mut self) -> io::Result<Vec<(Ipv4Addr, u8, Option<u32>)>> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetRoute(message), NLM_F_DUMP)?;
        let mut routes = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(route) = reply else { continue };
            if route.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let mut destination = Ipv4Addr::UNSPECIFIED;
            let mut interface = None;
            for attribute in &route.attributes {
                match attribute {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = *ip,
                    RouteAttribute::Oif(index) => interface = Some(*index),
                    _ => {}
                }
            }
            routes.push((destination, route.header.destination_prefix_length, interface));
        }
        Ok(routes)
    }

    /// Removes an IPv4 address from link `index`: `ip addr del ADDRESS/PREFIX dev DEV`.
    pub fn delete_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.index = index;
        message.attributes.push(AddressAttribute::Local(address.into()));
        self.request(RouteNetlinkMessage::DelAddress(message), 0)?;
        Ok(())
    }

    /// Sends one request and collects the kernel's replies.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        exchange(&mut self.socket, self.sequence, vec![packet])
    }
}

/// Sends `messages` in one datagram, each with the sequence number `sequence`, and collects
/// the kernel's replies to them until it acknowledges one, ends a dump (NLMSG_DONE), or
/// reports an error. A batch of nf_tables changes is several messages, answered as one.
pub(crate) fn exchange<M>(
    socket: &mut Socket,
    sequence: u32,
    messages: Vec<NetlinkMessage<M>>,
) -> io::Result<Vec<M>>
where
    M: NetlinkSerializable + NetlinkDeserializable,
{
    let mut buffer = Vec::new();
    for mut message in messages {
        message.header.sequence_number = sequence;
        message.finalize();
        let start = buffer.len();
        buffer.resize(start + message.buffer_len(), 0);
        message.serialize(&mut buffer[start..]);
    }
    socket.send(&buffer, 0)?;

    let mut replies = Vec::new();
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        let mut rest = datagram.as_slice();
        while !rest.is_empty() {
            let reply = NetlinkMessage::<M>::deserialize(rest)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            // Messages in one datagram are each padded to 4 bytes (NLMSG_ALIGN).
            let length = (reply.header.length as usize).div_ceil(4) * 4;
            rest = rest.get(length..).unwrap_or_default();
            if reply.header.sequence_number != sequence {
                continue;
            }
            match reply.payload {
                NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                NetlinkPayload::Error(error) if error.code.is_some() => return Err(error.to_io()),
                // An error message without an error code is the acknowledgement.
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(replies),
                _ => {}
            }
        }
    }
}
