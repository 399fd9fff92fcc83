//! A small nf_tables client over netlink: what `nft` itself sends to the kernel, for the
//! three things a container start and exit need: a table's comment (one GET), and a map's
//! elements, listed, added and deleted. Built with netlink-packet-netfilter, the sibling of
//! netlink-packet-route. See netlink(7) and the kernel's include/uapi/linux/netfilter/
//! nf_tables.h.
//!
//! nf_tables takes changes only inside a *batch*, NFNL_MSG_BATCH_BEGIN … NFNL_MSG_BATCH_END,
//! which the kernel applies as one transaction: all of it, or nothing.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::errno::Errno;

use crate::netlink::exchange;

/// NFNL_SUBSYS_NFTABLES, in linux/netfilter/nfnetlink.h: a batch names the subsystem it is for.
const NFTABLES: u16 = 10;

/// One element of a map: its key, its value, and its comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub comment: String,
}

/// A netfilter netlink socket, for the IPv4 family's tables.
#[derive(Debug)]
pub struct Nftables {
    socket: Socket,
    sequence: u32,
}

impl Nftables {
    pub fn open() -> io::Result<Nftables> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Nftables { socket, sequence: 0 })
    }

    /// The comment of table `ip TABLE` (`nft list table ip TABLE` shows it first), `Some("")`
    /// for a table without one, and None when there is no such table.
    pub fn table_comment(&mut self, table: &str) -> io::Result<Option<String>> {
        let get = TableMessage { attributes: vec![TableAttribute::Name(table.into())] };
        let replies = match self.request(NfTablesMessage::GetTable(get), 0) {
            Err(err) if err.raw_os_error() == Some(Errno::ENOENT as i32) => return Ok(None),
            replies => replies?,
        };
        let attributes = replies.into_iter().flat_map(|reply| match reply {
            NfTablesMessage::NewTable(table) => table.attributes,
            _ => Vec::new(),
        });
        let mut comment = String::new();
        for attribute in attributes {
            if let TableAttribute::UserData(data) = attribute {
                comment = comment_in(&data).unwrap_or_default();
            }
        }
        Ok(Some(comment))
    }

    /// The elements of map `set` in table `ip TABLE`: `nft list map ip TABLE SET`. None when
    /// there is no such table or map.
    pub fn elements(&mut self, table: &str, set: &str) -> io::Result<Option<Vec<Element>>> {
        let get = SetElementMessage {
            attributes: vec![SetElementList::Table(table.into()), SetElementList::Set(set.into())],
        };
        let replies = match self.request(NfTablesMessage::GetSetElement(get), NLM_F_DUMP) {
            Err(err) if err.raw_os_error() == Some(Errno::ENOENT as i32) => return Ok(None),
            replies => replies?,
        };
        let lists = replies.into_iter().flat_map(|reply| match reply {
            NfTablesMessage::NewSetElement(message) => message.attributes,
            _ => Vec::new(),
        });
        let listed = lists.flat_map(|list| match list {
            SetElementList::Elements(listed) => listed,
            _ => Vec::new(),
        });
        let elements = listed.filter_map(|listed| match listed {
            ListAttribute::Element(attributes) => Some(element_from(attributes)),
            _ => None,
        });
        Ok(Some(elements.collect()))
    }

    /// Adds `elements` to map `set` of table `ip TABLE`, in one transaction; fails with
    /// EEXIST, and adds none, if one of their keys is there already.
    pub fn add_elements(&mut self, table: &str, set: &str, elements: &[Element]) -> io::Result<()> {
        let attributes = elements.iter().map(element_attributes).collect();
        let add = set_elements(table, set, attributes);
        self.batch(NfTablesMessage::NewSetElement(add), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Deletes the elements with these keys from map `set` of table `ip TABLE`, in one
    /// transaction.
    pub fn delete_elements(&mut self, table: &str, set: &str, keys: &[Vec<u8>]) -> io::Result<()> {
        let key = |key: &Vec<u8>| vec![SetElementAttribute::Key(DataAttribute::Value(key.clone()))];
        let delete = set_elements(table, set, keys.iter().map(key).collect());
        self.batch(NfTablesMessage::DeleteSetElement(delete), 0)
    }

    /// Sends one change inside a batch, and waits for the kernel to have committed it.
    fn batch(&mut self, change: NfTablesMessage, flags: u16) -> io::Result<()> {
        let control = |message| {
            let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFTABLES);
            packet(NetfilterMessage::new(header, message), NLM_F_REQUEST)
        };
        let change = packet(ipv4(change), NLM_F_REQUEST | NLM_F_ACK | flags);
        let messages =
            vec![control(ControlMessage::BatchBegin), change, control(ControlMessage::BatchEnd)];
        self.sequence += 1;
        exchange(&mut self.socket, self.sequence, messages)?;
        Ok(())
    }

    fn request(
        &mut self,
        message: NfTablesMessage,
        flags: u16,
    ) -> io::Result<Vec<NfTablesMessage>> {
        self.sequence += 1;
        let request = packet(ipv4(message), NLM_F_REQUEST | NLM_F_ACK | flags);
        let replies = exchange(&mut self.socket, self.sequence, vec![request])?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply.inner {
                NetfilterMessageInner::NfTables(message) => Some(message),
                _ => None,
            })
            .collect())
    }
}

/// A message about the IPv4 family's tables (`ip`, in nft's words).
fn ipv4(message: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0), message)
}

fn packet(message: NetfilterMessage, flags: u16) -> NetlinkMessage<NetfilterMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    NetlinkMessage::new(header, NetlinkPayload::from(message))
}

fn set_elements(
    table: &str,
    set: &str,
    elements: Vec<Vec<SetElementAttribute>>,
) -> SetElementMessage {
    let elements = elements.into_iter().map(ListAttribute::Element).collect();
    SetElementMessage {
        attributes: vec![
            SetElementList::Table(table.into()),
            SetElementList::Set(set.into()),
            SetElementList::Elements(elements),
        ],
    }
}

fn element_attributes(element: &Element) -> Vec<SetElementAttribute> {
    vec![
        SetElementAttribute::Key(DataAttribute::Value(element.key.clone())),
        SetElementAttribute::Data(DataAttribute::Value(element.value.clone())),
        SetElementAttribute::UserData(comment_data(&element.comment)),
    ]
}

fn element_from(attributes: Vec<SetElementAttribute>) -> Element {
    let mut element = Element { key: Vec::new(), value: Vec::new(), comment: String::new() };
    for attribute in attributes {
        match attribute {
            SetElementAttribute::Key(DataAttribute::Value(key)) => element.key = key,
            SetElementAttribute::Data(DataAttribute::Value(value)) => element.value = value,
            SetElementAttribute::UserData(data) => {
                element.comment = comment_in(&data).unwrap_or_default()
            }
            _ => {}
        }
    }
    element
}

// ANCHOR: comment_data
/// A comment as nft stores it: the kernel keeps a table's, a rule's or an element's "user
/// data" without reading it, and nft (through libnftnl) writes there a list of
/// type-length-value entries, where type 0 is the comment, ending in a zero byte.
pub fn comment_data(comment: &str) -> Vec<u8> {
    const COMMENT: u8 = 0;
    let mut data = vec![COMMENT, comment.len() as u8 + 1];
    data.extend_from_slice(comment.as_bytes());
    data.push(0);
    data
}
// ANCHOR_END: comment_data

/// The comment in user data that nft wrote, if it holds one.
fn comment_in(mut data: &[u8]) -> Option<String> {
    while let [kind, length, rest @ ..] = data {
        let value = rest.get(..usize::from(*length))?;
        if *kind == 0 {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return String::from_utf8(text.to_vec()).ok();
        }
        data = &rest[value.len()..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_reads_back_as_written() {
        let data = comment_data("crabbox:3f2a9c1b7d4e");
        assert_eq!(&data[..2], &[0, 21]);
        assert_eq!(comment_in(&data).as_deref(), Some("crabbox:3f2a9c1b7d4e"));
        // Other entries before it are skipped.
        let with_other = [&[1, 2, 7, 7][..], &data].concat();
        assert_eq!(comment_in(&with_other).as_deref(), Some("crabbox:3f2a9c1b7d4e"));
        assert_eq!(comment_in(&[1, 9, 0]), None);
    }
}
