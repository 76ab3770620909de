//! The routing rules, once: a pure decision from a frame's header and the
//! node's tables to what to do with it. The in-process router
//! ([`crate::router`]) and transportd (`transportd::state`) both
//! route by [`decide`]; they differ only in how they carry out a decision
//! (channels or outboxes) and in what they count.
//!
//! The rules:
//! * `dst.pnn` = own pnn or `LOCAL`: deliver on this node ([`Local`]);
//! * `dst.pnn` = `ALL_NODES`: deliver on this node without error answers
//!   (they would race the answers of the nodes that have the service) and,
//!   if the frame did not come from a peer, forward it to every connected
//!   peer (a peer's frame is never forwarded again);
//! * another pnn: forward to that peer if connected, else
//!   [`Decision::Unreachable`] (a Request gets `NodeUnreachable`); a peer's
//!   frame for a third node is [`Decision::Misrouted`] (dropped, never
//!   re-forwarded);
//! * on this node: service 0 is the router's own controls, `BROADCAST_SERVICE`
//!   is every subscriber of the opcode (Events only; anything else gets
//!   `BadRequest` where errors are answered), a registered service gets the
//!   frame, an unknown one gets `UnknownService` where errors are answered;
//! * a frame of unknown kind is dropped.
//!
//! Errors go to Requests only; every other frame that cannot be delivered
//! is dropped (and counted by the caller).

use crate::proto::service::TRANSPORT;
use crate::proto::{Address, Kind, ALL_NODES, BROADCAST_SERVICE, LOCAL};

/// Where a frame came from, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A local client, or the router itself.
    Local,
    /// A peer node.
    Peer,
}

/// What the node knows when it routes: its registered services and its
/// connected peers.
pub trait Tables {
    /// Whether a local service with this id is registered.
    fn has_service(&self, id: u16) -> bool;
    /// Whether the link to node `pnn` is up.
    fn peer_connected(&self, pnn: u32) -> bool;
}

/// Delivery on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Service 0: the router's own controls (Requests; anything else is
    /// dropped).
    Control,
    /// `BROADCAST_SERVICE`, an Event: every subscriber of its opcode.
    Subscribers,
    /// `BROADCAST_SERVICE`, not an Event: `BadRequest` to a Request if
    /// `answer`, else dropped.
    BadBroadcast { answer: bool },
    /// A registered local service.
    Service(u16),
    /// No such service: `UnknownService` to a Request if `answer`, else
    /// dropped.
    UnknownService { service: u16, answer: bool },
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver on this node only.
    Local(Local),
    /// `ALL_NODES`: deliver on this node (errors never answered) and, if
    /// `forward`, send to every connected peer.
    Everywhere { forward: bool, local: Local },
    /// Send to this connected peer.
    Peer(u32),
    /// This peer is not connected: `NodeUnreachable` to a Request.
    Unreachable(u32),
    /// A peer's frame for a third node: dropped.
    Misrouted,
    /// A frame of unknown kind: dropped.
    Drop,
}

/// Decides where a frame with `kind` and destination `dst`, from `source`,
/// goes on node `own_pnn` with `tables`. Reads nothing else: the payload
/// and the source address do not matter.
pub fn decide(
    own_pnn: u32,
    source: Source,
    kind: Kind,
    dst: Address,
    tables: &impl Tables,
) -> Decision {
    if let Kind::Unknown(_) = kind {
        return Decision::Drop;
    }
    if dst.pnn == own_pnn || dst.pnn == LOCAL {
        Decision::Local(local(kind, dst.service, true, tables))
    } else if dst.pnn == ALL_NODES {
        Decision::Everywhere {
            forward: source != Source::Peer,
            local: local(kind, dst.service, false, tables),
        }
    } else if source == Source::Peer {
        Decision::Misrouted
    } else if tables.peer_connected(dst.pnn) {
        Decision::Peer(dst.pnn)
    } else {
        Decision::Unreachable(dst.pnn)
    }
}

fn local(kind: Kind, service: u16, answer: bool, tables: &impl Tables) -> Local {
    if service == TRANSPORT {
        Local::Control
    } else if service == BROADCAST_SERVICE {
        if kind == Kind::Event {
            Local::Subscribers
        } else {
            Local::BadBroadcast { answer }
        }
    } else if tables.has_service(service) {
        Local::Service(service)
    } else {
        Local::UnknownService { service, answer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node 1, service 7 registered, peer 2 connected, peer 3 not.
    struct T;
    impl Tables for T {
        fn has_service(&self, id: u16) -> bool {
            id == 7
        }
        fn peer_connected(&self, pnn: u32) -> bool {
            pnn == 2
        }
    }

    fn d(source: Source, kind: Kind, pnn: u32, service: u16) -> Decision {
        decide(1, source, kind, Address::new(pnn, service), &T)
    }

    #[test]
    fn the_table_of_cases() {
        use Decision as D;
        use Kind::{Event, Reply, Request};
        use Source::{Local as L, Peer as P};
        let b = BROADCAST_SERVICE;
        let unknown = |answer| Local::UnknownService { service: 9, answer };
        let cases: &[(Source, Kind, u32, u16, Decision)] = &[
            // This node, by number or LOCAL, from anywhere.
            (L, Request, 1, 7, D::Local(Local::Service(7))),
            (P, Reply, LOCAL, 7, D::Local(Local::Service(7))),
            (L, Request, LOCAL, 9, D::Local(unknown(true))),
            (P, Event, 1, 9, D::Local(unknown(true))),
            (L, Request, 1, TRANSPORT, D::Local(Local::Control)),
            (P, Event, 1, b, D::Local(Local::Subscribers)),
            (
                L,
                Request,
                1,
                b,
                D::Local(Local::BadBroadcast { answer: true }),
            ),
            // Everywhere: forwarded unless from a peer; never answered.
            (
                L,
                Event,
                ALL_NODES,
                b,
                D::Everywhere {
                    forward: true,
                    local: Local::Subscribers,
                },
            ),
            (
                P,
                Event,
                ALL_NODES,
                b,
                D::Everywhere {
                    forward: false,
                    local: Local::Subscribers,
                },
            ),
            (
                L,
                Request,
                ALL_NODES,
                9,
                D::Everywhere {
                    forward: true,
                    local: unknown(false),
                },
            ),
            (
                L,
                Request,
                ALL_NODES,
                b,
                D::Everywhere {
                    forward: true,
                    local: Local::BadBroadcast { answer: false },
                },
            ),
            (
                P,
                Request,
                ALL_NODES,
                7,
                D::Everywhere {
                    forward: false,
                    local: Local::Service(7),
                },
            ),
            // Another node.
            (L, Request, 2, 9, D::Peer(2)),
            (L, Event, 3, 7, D::Unreachable(3)),
            (P, Request, 2, 7, D::Misrouted),
            (P, Event, 3, 7, D::Misrouted),
            // Unknown kinds go nowhere.
            (L, Kind::Unknown(9), 1, 7, D::Drop),
            (P, Kind::Unknown(9), ALL_NODES, b, D::Drop),
        ];
        for &(source, kind, pnn, service, want) in cases {
            assert_eq!(
                d(source, kind, pnn, service),
                want,
                "{source:?} {kind:?} to {pnn}:{service}"
            );
        }
    }
}
