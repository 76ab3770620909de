//! A stream of link and address events from the rtnetlink multicast groups
//! `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR` and `RTNLGRP_IPV6_IFADDR`, like
//! `ip monitor link address`.
//!
//! The kernel repeats `RTM_NEWLINK` for many reasons (statistics, MTU, ...);
//! [`Events`] reports a link only when its administrative state or carrier
//! changes (or the first time it is seen), so a consumer sees "eth0 lost
//! carrier" once. Decoding is total: messages that are not link or address
//! messages are skipped, never a panic.

use std::collections::HashMap;
use std::io;

use futures::channel::mpsc::UnboundedReceiver;
use futures::StreamExt;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::SocketAddr;
use rtnetlink::MulticastGroup;
use tokio::task::JoinHandle;

use crate::addr::{decode_address, IpPrefix};
use crate::link::LinkState;

/// Errors of the event stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The multicast socket could not be opened or joined.
    #[error("cannot subscribe to rtnetlink link/address events: {0}")]
    Subscribe(#[source] io::Error),
}

/// One interface or address change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A link appeared, or its admin state or carrier changed.
    Link(LinkState),
    /// A link was deleted.
    LinkRemoved {
        /// Its index.
        index: u32,
        /// Its name.
        name: String,
    },
    /// An address was added to interface `index`.
    AddressAdded {
        /// Interface index.
        index: u32,
        /// The address.
        prefix: IpPrefix,
    },
    /// An address was removed from interface `index`.
    AddressRemoved {
        /// Interface index.
        index: u32,
        /// The address.
        prefix: IpPrefix,
    },
}

/// Pure part of the stream: turns kernel messages into [`Event`]s, keeping
/// the last (admin, carrier) state per link to drop repeats.
#[derive(Debug, Default)]
pub struct EventDecoder {
    links: HashMap<u32, (bool, bool)>,
}

impl EventDecoder {
    /// Decodes one message; `None` for repeats and unrelated messages.
    pub fn decode(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<Event> {
        let NetlinkPayload::InnerMessage(inner) = msg.payload else {
            return None;
        };
        match inner {
            RouteNetlinkMessage::NewLink(m) => {
                let state = LinkState::from_message(&m);
                let key = (state.admin_up, state.carrier);
                if self.links.insert(state.index, key) == Some(key) {
                    return None;
                }
                Some(Event::Link(state))
            }
            RouteNetlinkMessage::DelLink(m) => {
                let state = LinkState::from_message(&m);
                self.links.remove(&state.index);
                Some(Event::LinkRemoved {
                    index: state.index,
                    name: state.name,
                })
            }
            RouteNetlinkMessage::NewAddress(m) => {
                decode_address(&m).map(|(index, prefix)| Event::AddressAdded { index, prefix })
            }
            RouteNetlinkMessage::DelAddress(m) => {
                decode_address(&m).map(|(index, prefix)| Event::AddressRemoved { index, prefix })
            }
            _ => None,
        }
    }
}

/// The event stream; dropping it closes the socket.
#[derive(Debug)]
pub struct Events {
    rx: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    decoder: EventDecoder,
    task: JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Events {
    /// Subscribes to link and address events in the caller's network
    /// namespace. Events that happen after this returns are reported.
    ///
    /// # Errors
    ///
    /// [`EventError::Subscribe`] when the socket cannot be opened or bound.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn subscribe() -> Result<Events, EventError> {
        let (conn, _handle, rx) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(EventError::Subscribe)?;
        let task = tokio::spawn(conn);
        Ok(Events {
            rx,
            decoder: EventDecoder::default(),
            task,
        })
    }

    /// The next event; `None` when the socket's task has ended.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            let (msg, _) = self.rx.next().await?;
            if let Some(ev) = self.decoder.decode(msg) {
                return Some(ev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

    fn link_msg(index: u32, flags: LinkFlags) -> NetlinkMessage<RouteNetlinkMessage> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName("eth0".into()));
        NetlinkMessage::from(RouteNetlinkMessage::NewLink(m))
    }

    #[test]
    fn repeats_are_dropped_and_changes_reported() {
        let mut d = EventDecoder::default();
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        let Some(Event::Link(s)) = d.decode(link_msg(2, up)) else {
            panic!("first sighting not reported")
        };
        assert!(s.is_usable());
        assert_eq!(s.name, "eth0");
        assert_eq!(d.decode(link_msg(2, up)), None);
        let Some(Event::Link(s)) = d.decode(link_msg(2, LinkFlags::Up)) else {
            panic!("carrier loss not reported")
        };
        assert!(s.admin_up && !s.carrier);
        assert!(matches!(d.decode(link_msg(3, up)), Some(Event::Link(_))));
    }
}
