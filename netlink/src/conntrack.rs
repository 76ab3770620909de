//! Conntrack events through ctnetlink: a stream of new and destroyed TCP
//! connections, filtered to a set of local addresses (the public IPs).
//!
//! Owns: one `NETLINK_NETFILTER` socket bound to the multicast groups
//! `NFNLGRP_CONNTRACK_NEW`, `NFNLGRP_CONNTRACK_UPDATE` and
//! `NFNLGRP_CONNTRACK_DESTROY` of the network namespace of the thread that
//! subscribes. Of the updates only the TCP state changes into a closing
//! state (FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE) are reported,
//! as [`ConntrackEvent::Closing`], once per connection: the kernel destroys
//! a closed entry only after TIME_WAIT (two minutes), so DESTROY alone would
//! leave a closed connection listed that long. The kernel only tracks
//! connections when some rule uses conntrack: install the
//! [`crate::nft::NftTable`] (its `ct state` rules do that) with the
//! addresses in its tracked set.
//!
//! Message layout (the pure part, [`parse_event`], decoded with
//! `netlink-packet-netfilter`'s ctnetlink types):
//!
//! ```text
//! nlmsghdr   type = NFNL_SUBSYS_CTNETLINK (1) << 8 | IPCTNL_MSG_CT_NEW (0) / _DELETE (2)
//!            flags: NLM_F_CREATE (0x400) on a new entry; an update is a
//!            CT_NEW without it
//! nfgenmsg   family u8, version u8, res_id u16 (big endian)
//! attributes (u16 len, u16 type, value, padded to 4):
//!   CTA_TUPLE_ORIG (1, nested)
//!     CTA_TUPLE_IP (1, nested): CTA_IP_V4_SRC 1 / V4_DST 2 (4 bytes), V6_SRC 3 / V6_DST 4 (16)
//!     CTA_TUPLE_PROTO (2, nested): CTA_PROTO_NUM 1 (u8), SRC_PORT 2, DST_PORT 3 (u16 big endian)
//!   CTA_PROTOINFO (4, nested, optional: present when the TCP state changed)
//!     CTA_PROTOINFO_TCP (1, nested): CTA_PROTOINFO_TCP_STATE 1 (u8, enum tcp_conntrack)
//! ```
//!
//! No-panic contract: every read is bounds-checked; a malformed message
//! gives [`CtParseError`] and is skipped (logged) by the stream, which goes
//! on. A receive-buffer overrun (ENOBUFS: events were lost) is reported as
//! [`ConntrackEvent::Lost`] so the caller can resynchronise with a
//! [`crate::sockdiag`] dump.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};

use futures::Stream;
use netlink_packet_core::ParseableParametrized;
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Tuple,
};
use netlink_sys::protocols::NETLINK_NETFILTER;

use crate::sockdiag::{canonical, messages, Connection, NlSocket, WireError};

/// `NFNLGRP_CONNTRACK_NEW`.
const GROUP_NEW: u32 = 1;
/// `NFNLGRP_CONNTRACK_UPDATE`.
const GROUP_UPDATE: u32 = 2;
/// `NFNLGRP_CONNTRACK_DESTROY`.
const GROUP_DESTROY: u32 = 3;
/// `NLM_F_CREATE`: set on the event of a new entry.
pub const NLM_F_CREATE: u16 = 0x400;
/// Offset of the flags in `struct nlmsghdr`.
const NLMSG_FLAGS: std::ops::Range<usize> = 6..8;
/// Most connections remembered as closing (so that each is reported once);
/// beyond it the oldest are forgotten (a second report is harmless).
const MAX_CLOSING: usize = 1 << 16;
/// `NFNL_SUBSYS_CTNETLINK`.
const SUBSYS_CTNETLINK: u8 = 1;
/// `IPCTNL_MSG_CT_NEW`.
const CT_NEW: u8 = 0;
/// `IPCTNL_MSG_CT_DELETE`.
const CT_DELETE: u8 = 2;
/// `struct nfgenmsg`.
const NFGENMSG_LEN: usize = 4;
/// `IPPROTO_TCP`.
const PROTO_TCP: u8 = 6;
/// Kernel receive buffer asked for (forced above `rmem_max` when allowed):
/// with update events a connection costs about three messages (~1 KB), so
/// 16 MiB holds a stall of a second or more at 10,000 new connections/s.
const RECV_BUFFER: usize = 16 * 1024 * 1024;

/// A conntrack event for a TCP connection to or from a watched address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConntrackEvent {
    /// A new connection (the kernel confirmed its first packet).
    New(Connection),
    /// The connection's conntrack entry was destroyed (closed and timed
    /// out, or flushed).
    Destroy(Connection),
    /// The connection entered a closing TCP state (a FIN or RST was seen:
    /// FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT or CLOSE). Reported once
    /// per connection, before its [`ConntrackEvent::Destroy`].
    Closing(Connection),
    /// The kernel dropped events (receive buffer overrun): resynchronise.
    Lost,
}

/// The kind of a ctnetlink event message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtKind {
    /// `IPCTNL_MSG_CT_NEW` with `NLM_F_CREATE`: a new entry.
    New,
    /// `IPCTNL_MSG_CT_NEW` without `NLM_F_CREATE`: a change of an entry.
    Update,
    /// `IPCTNL_MSG_CT_DELETE`.
    Destroy,
}

/// The TCP state of a conntrack entry (`enum tcp_conntrack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// `TCP_CONNTRACK_NONE`.
    None,
    /// `TCP_CONNTRACK_SYN_SENT`.
    SynSent,
    /// `TCP_CONNTRACK_SYN_RECV`.
    SynRecv,
    /// `TCP_CONNTRACK_ESTABLISHED`.
    Established,
    /// `TCP_CONNTRACK_FIN_WAIT`.
    FinWait,
    /// `TCP_CONNTRACK_CLOSE_WAIT`.
    CloseWait,
    /// `TCP_CONNTRACK_LAST_ACK`.
    LastAck,
    /// `TCP_CONNTRACK_TIME_WAIT`.
    TimeWait,
    /// `TCP_CONNTRACK_CLOSE` (also after a RST).
    Close,
    /// `TCP_CONNTRACK_SYN_SENT2` (simultaneous open).
    SynSent2,
    /// A value this code does not know.
    Unknown(u8),
}

impl From<u8> for TcpState {
    fn from(v: u8) -> Self {
        match v {
            0 => TcpState::None,
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            9 => TcpState::SynSent2,
            other => TcpState::Unknown(other),
        }
    }
}

impl TcpState {
    /// Whether one side has sent a FIN or a RST: the connection is going
    /// away and no longer worth a tickle.
    pub fn is_closing(self) -> bool {
        matches!(
            self,
            TcpState::FinWait
                | TcpState::CloseWait
                | TcpState::LastAck
                | TcpState::TimeWait
                | TcpState::Close
        )
    }
}

/// One decoded ctnetlink event message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtMessage {
    /// New, update or destroy.
    pub kind: CtKind,
    /// The original-direction tuple.
    pub tuple: CtTuple,
    /// The TCP state, when the message carries it (`CTA_PROTOINFO`).
    pub tcp_state: Option<TcpState>,
}

/// The original-direction tuple of a conntrack entry (initiator -> responder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtTuple {
    /// IP protocol number (6 for TCP).
    pub proto: u8,
    /// The initiator.
    pub src: SocketAddr,
    /// The responder.
    pub dst: SocketAddr,
}

/// A ctnetlink message that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CtParseError {
    /// Too short or a bad length.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A required attribute is missing.
    #[error("ctnetlink message without {0}")]
    Missing(&'static str),
    /// An attribute `netlink-packet-netfilter` cannot decode (a wrong
    /// size, a malformed nest), with the crate's description.
    #[error("malformed ctnetlink message: {0}")]
    Decode(String),
}

/// Errors of the event stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConntrackError {
    /// The socket could not be opened or bound to the groups (EPERM
    /// without `CAP_NET_ADMIN`).
    #[error("subscribing to conntrack events")]
    Subscribe(#[source] io::Error),
    /// Receiving failed (other than an overrun).
    #[error("receiving conntrack events")]
    Io(#[source] io::Error),
}

/// Decodes one netlink message (its type, its flags and the payload after
/// the netlink header) with `netlink-packet-netfilter`'s ctnetlink types.
/// `Ok(None)` for messages that are not conntrack events. Never panics
/// (the crate's parsers check every length; fuzzed in
/// `sockdiag::fuzz_tests` and below).
///
/// # Errors
///
/// [`CtParseError`] for a truncated message, an attribute the crate cannot
/// decode, or a missing tuple part.
pub fn parse_event(
    msg_type: u16,
    flags: u16,
    payload: &[u8],
) -> Result<Option<CtMessage>, CtParseError> {
    let [subsys, kind_byte] = msg_type.to_be_bytes();
    if subsys != SUBSYS_CTNETLINK {
        return Ok(None);
    }
    let kind = match kind_byte {
        CT_NEW if flags & NLM_F_CREATE != 0 => CtKind::New,
        CT_NEW => CtKind::Update,
        CT_DELETE => CtKind::Destroy,
        _ => return Ok(None),
    };
    let attrs = payload.get(NFGENMSG_LEN..).ok_or(WireError::Truncated {
        offset: 0,
        need: NFGENMSG_LEN,
        have: payload.len(),
    })?;
    let message = ConntrackMessage::parse_with_param(attrs, kind_byte)
        .map_err(|e| CtParseError::Decode(format!("{e:#}")))?;
    let (ConntrackMessage::New(attributes) | ConntrackMessage::Delete(attributes)) = message else {
        return Ok(None);
    };
    let mut orig = None;
    let mut tcp_state = None;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) if orig.is_none() => orig = Some(t),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for t in tcp {
                            if let ProtoInfoTCP::State(state) = t {
                                tcp_state = Some(TcpState::from(state));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let orig = orig.ok_or(CtParseError::Missing("CTA_TUPLE_ORIG"))?;
    let (mut src, mut dst, mut num) = (None, None, None);
    // Port-less protocols (ICMP) have no port attributes: port 0.
    let (mut sport, mut dport) = (0, 0);
    let (mut ip_seen, mut proto_seen) = (false, false);
    for part in orig {
        match part {
            Tuple::Ip(ips) => {
                ip_seen = true;
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(a),
                        IPTuple::DestinationAddress(a) => dst = Some(a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                proto_seen = true;
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(p) => num = Some(u8::from(p)),
                        ProtoTuple::SourcePort(p) => sport = p,
                        ProtoTuple::DestinationPort(p) => dport = p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !ip_seen {
        return Err(CtParseError::Missing("CTA_TUPLE_IP"));
    }
    if !proto_seen {
        return Err(CtParseError::Missing("CTA_TUPLE_PROTO"));
    }
    let num = num.ok_or(CtParseError::Missing("CTA_PROTO_NUM"))?;
    let src = src.ok_or(CtParseError::Missing("CTA_IP_SRC"))?;
    let dst = dst.ok_or(CtParseError::Missing("CTA_IP_DST"))?;
    Ok(Some(CtMessage {
        kind,
        tuple: CtTuple {
            proto: num,
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        },
        tcp_state,
    }))
}

/// The flags of a netlink message (`whole` starts with its header).
fn nlmsg_flags(whole: &[u8]) -> u16 {
    whole
        .get(NLMSG_FLAGS)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, u16::from_ne_bytes)
}

/// What one decoded message means for the subscriber: `closing` holds the
/// connections already reported as [`ConntrackEvent::Closing`] (so that
/// each is reported once; a DESTROY or a NEW of the same tuple forgets it).
fn to_event(
    msg: &CtMessage,
    watched: &HashSet<IpAddr>,
    closing: &mut Closing,
) -> Option<ConntrackEvent> {
    let conn = to_connection(&msg.tuple, watched)?;
    match msg.kind {
        CtKind::New => {
            closing.forget(&conn);
            // An entry may be created already closing (a RST after a
            // missed start): then it is no connection worth a tickle.
            match msg.tcp_state {
                Some(s) if s.is_closing() => None,
                _ => Some(ConntrackEvent::New(conn)),
            }
        }
        CtKind::Update => match msg.tcp_state {
            Some(s) if s.is_closing() && closing.insert(conn) => {
                Some(ConntrackEvent::Closing(conn))
            }
            _ => None,
        },
        CtKind::Destroy => {
            closing.forget(&conn);
            Some(ConntrackEvent::Destroy(conn))
        }
    }
}

/// The connections reported as closing, bounded (oldest forgotten first).
#[derive(Debug, Default)]
struct Closing {
    set: HashSet<Connection>,
    order: VecDeque<Connection>,
}

impl Closing {
    /// Remembers `conn`; false if it was already there.
    fn insert(&mut self, conn: Connection) -> bool {
        if !self.set.insert(conn) {
            return false;
        }
        self.order.push_back(conn);
        while self.order.len() > MAX_CLOSING {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn forget(&mut self, conn: &Connection) {
        // The order queue keeps it until it reaches the front, where
        // removing it from the set again is harmless.
        self.set.remove(conn);
    }
}

/// Turns a tuple into this host's view of the connection, if it concerns a
/// watched address (all TCP connections when `watched` is empty; the
/// responder is then taken as local).
pub fn to_connection(tuple: &CtTuple, watched: &HashSet<IpAddr>) -> Option<Connection> {
    if tuple.proto != PROTO_TCP {
        return None;
    }
    let src = SocketAddr::new(canonical(tuple.src.ip()), tuple.src.port());
    let dst = SocketAddr::new(canonical(tuple.dst.ip()), tuple.dst.port());
    if watched.is_empty() || watched.contains(&dst.ip()) {
        Some(Connection {
            local: dst,
            remote: src,
        })
    } else if watched.contains(&src.ip()) {
        Some(Connection {
            local: src,
            remote: dst,
        })
    } else {
        None
    }
}

/// A subscription to conntrack events of the current network namespace.
#[derive(Debug)]
pub struct ConntrackEvents {
    socket: NlSocket,
    watched: HashSet<IpAddr>,
    queue: VecDeque<ConntrackEvent>,
    closing: Closing,
}

impl ConntrackEvents {
    /// Subscribes, reporting TCP connections to or from `watched` (all TCP
    /// connections when it is empty).
    ///
    /// # Errors
    ///
    /// [`ConntrackError::Subscribe`] when the socket cannot be opened or
    /// joined to the groups.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled.
    pub fn subscribe(watched: &[IpAddr]) -> Result<ConntrackEvents, ConntrackError> {
        let socket = NlSocket::open(NETLINK_NETFILTER).map_err(ConntrackError::Subscribe)?;
        socket.join(GROUP_NEW).map_err(ConntrackError::Subscribe)?;
        socket
            .join(GROUP_UPDATE)
            .map_err(ConntrackError::Subscribe)?;
        socket
            .join(GROUP_DESTROY)
            .map_err(ConntrackError::Subscribe)?;
        // A smaller buffer only means earlier `Lost` events: not fatal.
        if let Err(e) = socket.set_recv_buffer(RECV_BUFFER) {
            tracing::debug!(error = %e, "could not enlarge the conntrack event buffer");
        }
        let mut events = ConntrackEvents {
            socket,
            watched: HashSet::new(),
            queue: VecDeque::new(),
            closing: Closing::default(),
        };
        events.watch(watched);
        Ok(events)
    }

    /// Replaces the set of watched addresses.
    pub fn watch(&mut self, watched: &[IpAddr]) {
        self.watched = watched.iter().copied().map(canonical).collect();
    }

    /// The next event for a watched address.
    ///
    /// # Errors
    ///
    /// [`ConntrackError::Io`] when the socket fails (an overrun is not an
    /// error but [`ConntrackEvent::Lost`]).
    pub async fn next(&mut self) -> Result<ConntrackEvent, ConntrackError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(event);
            }
            let dgram = match self.socket.recv().await {
                Ok(dgram) => dgram,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Ok(ConntrackEvent::Lost);
                }
                Err(e) => return Err(ConntrackError::Io(e)),
            };
            for msg in messages(dgram) {
                let msg = match msg {
                    Ok(msg) => msg,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a malformed conntrack datagram");
                        break;
                    }
                };
                match parse_event(msg.ty, nlmsg_flags(msg.whole), msg.payload) {
                    Ok(Some(m)) => {
                        if let Some(ev) = to_event(&m, &self.watched, &mut self.closing) {
                            self.queue.push_back(ev);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping a malformed conntrack event"),
                }
            }
        }
    }

    /// The subscription as a [`Stream`] (ends only after an I/O error).
    pub fn into_stream(self) -> impl Stream<Item = Result<ConntrackEvent, ConntrackError>> {
        futures::stream::unfold(Some(self), |state| async move {
            let mut events = state?;
            match events.next().await {
                Ok(event) => Some((Ok(event), Some(events))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ctnetlink's attribute numbers, to build messages as the kernel does.
    const CTA_TUPLE_ORIG: u16 = 1;
    const CTA_TUPLE_IP: u16 = 1;
    const CTA_TUPLE_PROTO: u16 = 2;
    const CTA_IP_V4_SRC: u16 = 1;
    const CTA_IP_V4_DST: u16 = 2;
    const CTA_PROTO_NUM: u16 = 1;
    const CTA_PROTO_SRC_PORT: u16 = 2;
    const CTA_PROTO_DST_PORT: u16 = 3;
    const CTA_PROTOINFO: u16 = 4;
    const CTA_PROTOINFO_TCP: u16 = 1;
    const CTA_PROTOINFO_TCP_STATE: u16 = 1;

    fn nla(ty: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    const NESTED: u16 = 0x8000;

    /// A ctnetlink NEW payload: 192.0.2.2:40000 -> 192.0.2.1:445, TCP.
    fn new_payload() -> Vec<u8> {
        let ip = [
            nla(CTA_IP_V4_SRC, &[192, 0, 2, 2]),
            nla(CTA_IP_V4_DST, &[192, 0, 2, 1]),
        ]
        .concat();
        let proto = [
            nla(CTA_PROTO_NUM, &[6]),
            nla(CTA_PROTO_SRC_PORT, &40000u16.to_be_bytes()),
            nla(CTA_PROTO_DST_PORT, &445u16.to_be_bytes()),
        ]
        .concat();
        let orig = [
            nla(CTA_TUPLE_IP | NESTED, &ip),
            nla(CTA_TUPLE_PROTO | NESTED, &proto),
        ]
        .concat();
        // nfgenmsg: AF_INET, version 0, res_id 0; then a status attribute
        // (CTA_STATUS 3) before the tuple, which must be skipped.
        let mut payload = vec![2, 0, 0, 0];
        payload.extend(nla(3, &8u32.to_be_bytes()));
        payload.extend(nla(CTA_TUPLE_ORIG | NESTED, &orig));
        payload
    }

    const TYPE_NEW: u16 = 0x0100;
    const TYPE_DELETE: u16 = 0x0102;

    #[test]
    fn parses_a_new_and_a_destroy_event() {
        let payload = new_payload();
        let m = parse_event(TYPE_NEW, NLM_F_CREATE, &payload)
            .unwrap()
            .unwrap();
        assert_eq!(m.kind, CtKind::New);
        assert_eq!(m.tuple.proto, 6);
        assert_eq!(m.tuple.src, "192.0.2.2:40000".parse().unwrap());
        assert_eq!(m.tuple.dst, "192.0.2.1:445".parse().unwrap());
        assert_eq!(m.tcp_state, None);
        let m = parse_event(TYPE_DELETE, 0, &payload).unwrap().unwrap();
        assert_eq!(m.kind, CtKind::Destroy);
        // CT_NEW without NLM_F_CREATE is an update.
        let m = parse_event(TYPE_NEW, 0, &payload).unwrap().unwrap();
        assert_eq!(m.kind, CtKind::Update);
    }

    /// An update event as the kernel sends it when a client's FIN moves
    /// the entry to FIN_WAIT, byte for byte (one attribute per line).
    const UPDATE_FIN_WAIT: [u8; 88] = [
        2, 0, 0, 0, // nfgenmsg: AF_INET, version 0, res_id 0
        52, 0, 1, 0x80, // CTA_TUPLE_ORIG, nested, 52 bytes
        20, 0, 1, 0x80, //   CTA_TUPLE_IP, nested, 20 bytes
        8, 0, 1, 0, 192, 0, 2, 2, //     CTA_IP_V4_SRC 192.0.2.2
        8, 0, 2, 0, 192, 0, 2, 1, //     CTA_IP_V4_DST 192.0.2.1
        28, 0, 2, 0x80, //   CTA_TUPLE_PROTO, nested, 28 bytes
        5, 0, 1, 0, 6, 0, 0, 0, //     CTA_PROTO_NUM 6 (TCP), padded
        6, 0, 2, 0, 0x9c, 0x40, 0, 0, //     CTA_PROTO_SRC_PORT 40000
        6, 0, 3, 0, 0x01, 0xbd, 0, 0, //     CTA_PROTO_DST_PORT 445
        8, 0, 7, 0, 0, 0, 0, 120, // CTA_TIMEOUT 120 s (skipped)
        24, 0, 4, 0x80, // CTA_PROTOINFO, nested, 24 bytes
        20, 0, 1, 0x80, //   CTA_PROTOINFO_TCP, nested, 20 bytes
        5, 0, 1, 0, 4, 0, 0, 0, //     CTA_PROTOINFO_TCP_STATE 4 (FIN_WAIT)
        6, 0, 4, 0, 0x0a, 0x0a, 0, 0, //     CTA_PROTOINFO_TCP_FLAGS_ORIGINAL
    ];

    #[test]
    fn parses_an_update_with_its_tcp_state() {
        // The golden bytes are little-endian netlink headers (x86, arm).
        if cfg!(target_endian = "big") {
            return;
        }
        let m = parse_event(TYPE_NEW, 0, &UPDATE_FIN_WAIT).unwrap().unwrap();
        assert_eq!(
            m,
            CtMessage {
                kind: CtKind::Update,
                tuple: CtTuple {
                    proto: 6,
                    src: "192.0.2.2:40000".parse().unwrap(),
                    dst: "192.0.2.1:445".parse().unwrap(),
                },
                tcp_state: Some(TcpState::FinWait),
            }
        );
        // The same bytes built attribute by attribute.
        let ip = [
            nla(CTA_IP_V4_SRC, &[192, 0, 2, 2]),
            nla(CTA_IP_V4_DST, &[192, 0, 2, 1]),
        ]
        .concat();
        let proto = [
            nla(CTA_PROTO_NUM, &[6]),
            nla(CTA_PROTO_SRC_PORT, &40000u16.to_be_bytes()),
            nla(CTA_PROTO_DST_PORT, &445u16.to_be_bytes()),
        ]
        .concat();
        let orig = [
            nla(CTA_TUPLE_IP | NESTED, &ip),
            nla(CTA_TUPLE_PROTO | NESTED, &proto),
        ]
        .concat();
        let tcp = [nla(CTA_PROTOINFO_TCP_STATE, &[4]), nla(4, &[0x0a, 0x0a])].concat();
        let info = nla(CTA_PROTOINFO_TCP | NESTED, &tcp);
        let mut built = vec![2, 0, 0, 0];
        built.extend(nla(CTA_TUPLE_ORIG | NESTED, &orig));
        built.extend(nla(7, &120u32.to_be_bytes()));
        built.extend(nla(CTA_PROTOINFO | NESTED, &info));
        assert_eq!(built, UPDATE_FIN_WAIT);
        // A state of the wrong size is typed.
        let mut bad = UPDATE_FIN_WAIT;
        bad[72] = 6; // CTA_PROTOINFO_TCP_STATE length 6: two value bytes
        let e = parse_event(TYPE_NEW, 0, &bad);
        assert!(
            matches!(&e, Err(CtParseError::Decode(m)) if m.contains("PROTOINFO")),
            "{e:?}"
        );
    }

    #[test]
    fn tcp_states_that_close() {
        let closing: Vec<u8> = (0..=12)
            .filter(|v| TcpState::from(*v).is_closing())
            .collect();
        assert_eq!(closing, [4, 5, 6, 7, 8]);
        assert_eq!(TcpState::from(200), TcpState::Unknown(200));
    }

    #[test]
    fn a_closing_connection_is_reported_once() {
        let public: IpAddr = "192.0.2.1".parse().unwrap();
        let watched = HashSet::from([public]);
        let mut closing = Closing::default();
        let tuple = CtTuple {
            proto: 6,
            src: "192.0.2.2:40000".parse().unwrap(),
            dst: "192.0.2.1:445".parse().unwrap(),
        };
        let conn = to_connection(&tuple, &watched).unwrap();
        let msg = |kind, state: Option<u8>| CtMessage {
            kind,
            tuple,
            tcp_state: state.map(TcpState::from),
        };
        let mut seen = Vec::new();
        for (kind, state) in [
            (CtKind::New, Some(1)),
            (CtKind::Update, Some(2)),
            (CtKind::Update, Some(3)),
            (CtKind::Update, None),
            (CtKind::Update, Some(4)),
            (CtKind::Update, Some(6)),
            (CtKind::Update, Some(7)),
            (CtKind::Destroy, Some(7)),
            // The tuple used again: reported again.
            (CtKind::New, Some(1)),
            (CtKind::Update, Some(8)),
            (CtKind::Update, Some(8)),
        ] {
            seen.extend(to_event(&msg(kind, state), &watched, &mut closing));
        }
        assert_eq!(
            seen,
            [
                ConntrackEvent::New(conn),
                ConntrackEvent::Closing(conn),
                ConntrackEvent::Destroy(conn),
                ConntrackEvent::New(conn),
                ConntrackEvent::Closing(conn),
            ]
        );
        // An entry born closing is not a new connection.
        let mut closing = Closing::default();
        assert_eq!(
            to_event(&msg(CtKind::New, Some(8)), &watched, &mut closing),
            None
        );
        // The memory is bounded.
        for port in 0..(MAX_CLOSING + 10) {
            let c = Connection {
                local: conn.local,
                remote: SocketAddr::new(conn.remote.ip(), u16::try_from(port % 65536).unwrap()),
            };
            let _ = closing.insert(c);
        }
        assert!(closing.set.len() <= MAX_CLOSING);
        assert!(closing.order.len() <= MAX_CLOSING);
    }

    #[test]
    fn other_messages_are_ignored() {
        let payload = new_payload();
        assert_eq!(parse_event(0x0101, 0, &payload).unwrap(), None); // CT_GET
        assert_eq!(parse_event(0x0a00, 0, &payload).unwrap(), None); // nftables
        assert_eq!(parse_event(2, 0, &payload).unwrap(), None); // NLMSG_ERROR
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let payload = new_payload();
        for cut in 0..payload.len() {
            let result = parse_event(TYPE_NEW, NLM_F_CREATE, &payload[..cut]);
            assert!(result.is_err(), "cut at {cut} gave {result:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random walk over many byte patterns.
        let mut x: u32 = 0x1234_5678;
        for len in 0..200usize {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x.to_le_bytes()[0]
                    })
                    .collect();
                let _ = parse_event(TYPE_NEW, 0, &bytes);
                let _ = parse_event(TYPE_DELETE, 0, &bytes);
            }
        }
        // A wrong address length is typed.
        let mut payload = vec![2, 0, 0, 0];
        let ip = nla(CTA_IP_V4_SRC, &[1, 2, 3]);
        let orig = [
            nla(CTA_TUPLE_IP | NESTED, &ip),
            nla(CTA_TUPLE_PROTO | NESTED, &nla(CTA_PROTO_NUM, &[6])),
        ]
        .concat();
        payload.extend(nla(CTA_TUPLE_ORIG | NESTED, &orig));
        let e = parse_event(TYPE_NEW, NLM_F_CREATE, &payload);
        assert!(
            matches!(&e, Err(CtParseError::Decode(m)) if m.contains("SourceAddress")),
            "{e:?}"
        );
    }

    #[test]
    fn connections_are_seen_from_the_watched_address() {
        let tuple = CtTuple {
            proto: 6,
            src: "192.0.2.2:40000".parse().unwrap(),
            dst: "192.0.2.1:445".parse().unwrap(),
        };
        let public: IpAddr = "192.0.2.1".parse().unwrap();
        let client: IpAddr = "192.0.2.2".parse().unwrap();
        let conn = to_connection(&tuple, &HashSet::from([public])).unwrap();
        assert_eq!(conn.local, tuple.dst);
        assert_eq!(conn.remote, tuple.src);
        let conn = to_connection(&tuple, &HashSet::from([client])).unwrap();
        assert_eq!(conn.local, tuple.src);
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(to_connection(&tuple, &HashSet::from([other])), None);
        assert!(to_connection(&tuple, &HashSet::new()).is_some());
        let udp = CtTuple { proto: 17, ..tuple };
        assert_eq!(to_connection(&udp, &HashSet::new()), None);
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(ty in proptest::prelude::any::<u16>(), flags in proptest::prelude::any::<u16>(),
                                           bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse_event(ty, flags, &bytes);
            for msg in messages(&bytes) {
                let Ok(msg) = msg else { break };
                let _ = parse_event(msg.ty, nlmsg_flags(msg.whole), msg.payload);
            }
        }

        #[test]
        fn a_mutated_real_message_never_panics(at in 0usize..100, value in proptest::prelude::any::<u8>()) {
            let mut payload = new_payload();
            let at = at % payload.len();
            payload[at] = value;
            let _ = parse_event(TYPE_NEW, 0, &payload);
            let mut update = UPDATE_FIN_WAIT;
            update[at % update.len()] = value;
            let _ = parse_event(TYPE_NEW, 0, &update);
        }
    }
}
