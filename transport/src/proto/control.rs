//! Control opcodes and their payloads.
//!
//! * `0x0000_0000..=0x0000_00FF`: common controls, answered for *every*
//!   service (by the client library for daemons, by the router/transportd for
//!   service 0): [`PING`], [`VERSION`], [`STATISTICS`], [`LOG_LEVEL`],
//!   [`SHUTDOWN`], [`STATISTICS_RESET`].
//! * `0x0000_0100..=0x0000_01FF`: transport-only controls, sent to service 0:
//!   [`REGISTER`], [`SUBSCRIBE`], [`UNSUBSCRIBE`], [`LIST_SERVICES`],
//!   [`LIST_PEERS`].
//! * `0x0001_xxxx` clusterd, `0x0002_xxxx` failoverd, `0x0003_xxxx`
//!   conntrackd, `0x0004_xxxx` masterd: daemon messages.
//!
//! Each request/reply pair is listed on its opcode. `()` encodes as zero
//! bytes.

use serde::{Deserialize, Serialize};

/// Echo: request [`PingRequest`], reply [`PingReply`].
pub const PING: u32 = 0x0000_0001;
/// Versions: request `()`, reply [`VersionInfo`].
pub const VERSION: u32 = 0x0000_0002;
/// Counters: request `()`, reply [`Statistics`].
pub const STATISTICS: u32 = 0x0000_0003;
/// Get or set the log level: request [`LogLevelRequest`], reply [`LogLevelReply`].
pub const LOG_LEVEL: u32 = 0x0000_0004;
/// Ask the service to shut down: request `()`, reply `()` (sent before the
/// service stops).
pub const SHUTDOWN: u32 = 0x0000_0005;
/// Start the counters of [`STATISTICS`] again from 0 (`ctdb
/// statisticsreset`): request `()`, reply `()`. Levels ([`is_level`]) are
/// not counts and keep their value. A service that predates it answers
/// `UnknownOpcode`.
pub const STATISTICS_RESET: u32 = 0x0000_0006;

/// Register this connection under a name: request [`RegisterRequest`], reply
/// [`RegisterReply`]. Must be the first frame of a connection.
pub const REGISTER: u32 = 0x0000_0100;
/// Receive broadcast events with an opcode: request [`SubscribeRequest`], reply `()`.
pub const SUBSCRIBE: u32 = 0x0000_0101;
/// Stop receiving them: request [`SubscribeRequest`], reply `()`.
pub const UNSUBSCRIBE: u32 = 0x0000_0102;
/// Local services: request `()`, reply [`ServiceList`].
pub const LIST_SERVICES: u32 = 0x0000_0103;
/// Peer nodes: request `()`, reply [`PeerList`].
pub const LIST_PEERS: u32 = 0x0000_0104;
/// Link keepalive between two transportds: an Event with no payload from
/// `(pnn, 0)` to `(peer, 0)`, sent on an otherwise idle peer link; consumed
/// by the receiving transportd, never routed (an older transportd drops it
/// too: events to service 0 are ignored).
pub const KEEPALIVE: u32 = 0x0000_0105;
/// Replace the peer list (`reloadnodes`): request [`NodeList`], reply
/// `()`. Only this node's clusterd may send it. Refused, with nothing
/// changed, when a node would vanish or change address (see
/// `config::nodes::NodesFile::check_reload`) or this node would be deleted;
/// new nodes get links, deleted ones lose theirs.
pub const SET_NODES: u32 = 0x0000_0106;

/// Is `opcode` a common control (answered for every service)?
pub const fn is_common(opcode: u32) -> bool {
    opcode <= 0x0000_00FF
}

/// Is `opcode` a transport-only control (service 0)?
pub const fn is_transport(opcode: u32) -> bool {
    opcode >= 0x0000_0100 && opcode <= 0x0000_01FF
}

/// The first opcode of a daemon's range (`0x0001_0000` for clusterd...).
pub const fn daemon_base(service: u16) -> u32 {
    (service as u32) << 16
}

/// [`PING`] request: opaque bytes echoed back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingRequest {
    /// Echoed in the reply.
    pub data: Vec<u8>,
}

/// [`PING`] reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// The request's data.
    pub data: Vec<u8>,
    /// Local clients connected to the answering transport (0 from a daemon).
    pub clients: u32,
}

/// [`VERSION`] reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The answering service's name.
    pub name: String,
    /// Crate version (`CARGO_PKG_VERSION`).
    pub crate_version: String,
    /// Protocol version ([`super::VERSION`]).
    pub protocol_version: u8,
}

/// [`STATISTICS`] reply: named counters, in a stable order per service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statistics {
    /// `(name, value)` pairs.
    pub counters: Vec<(String, u64)>,
}

/// Is the [`Statistics`] entry `name` a level (a value now: connected
/// clients, peers, stored connections, uptime) rather than a count since
/// the service started? [`STATISTICS_RESET`] leaves levels alone.
pub fn is_level(name: &str) -> bool {
    matches!(
        name,
        "clients" | "peers_connected" | "uptime_ms" | "connections_stored" | "max_connections"
    ) || name.ends_with("_in_flight")
}

impl Statistics {
    /// These statistics counted from `base` (an earlier snapshot of the
    /// same service, taken by [`STATISTICS_RESET`]): each count minus its
    /// value in `base` (0 if it went below, as after a restart), levels
    /// ([`is_level`]) and names absent from `base` unchanged.
    #[must_use]
    pub fn since(mut self, base: &[(String, u64)]) -> Statistics {
        if base.is_empty() {
            return self;
        }
        for (name, value) in &mut self.counters {
            if is_level(name) {
                continue;
            }
            if let Some((_, b)) = base.iter().find(|(n, _)| n == name) {
                *value = value.saturating_sub(*b);
            }
        }
        self
    }

    /// The value of counter `name`, if present.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// [`LOG_LEVEL`] request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelRequest {
    /// `None` reads the level; `Some(filter)` sets it (a tracing filter such
    /// as `"debug"` or `"transport=trace,info"`).
    pub set: Option<String>,
}

/// [`LOG_LEVEL`] reply: the level in force after the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelReply {
    /// The current filter.
    pub level: String,
}

/// A node list as the daemons exchange it ([`SET_NODES`], clusterd's
/// `GET_NODES_FILE` and `RELOAD_NODES`): the address of each PNN in order,
/// `None` for a deleted (`#`) entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeList {
    /// The addresses, by PNN.
    pub addrs: Vec<Option<std::net::IpAddr>>,
}

/// [`REGISTER`] request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Service name: well-known names get their fixed id, others an ephemeral one.
    pub name: String,
}

/// [`REGISTER`] reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReply {
    /// The node this connection belongs to.
    pub pnn: u32,
    /// The service id assigned.
    pub service: u16,
}

/// [`SUBSCRIBE`] / [`UNSUBSCRIBE`] request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeRequest {
    /// Event opcode to (un)subscribe.
    pub opcode: u32,
}

/// One local service in a [`ServiceList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service id.
    pub id: u16,
    /// Registered name.
    pub name: String,
    /// Subscribed event opcodes.
    pub subscriptions: Vec<u32>,
}

/// [`LIST_SERVICES`] reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceList {
    /// The answering node.
    pub pnn: u32,
    /// Registered services, by id.
    pub services: Vec<ServiceInfo>,
}

/// One peer in a [`PeerList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Peer node number.
    pub pnn: u32,
    /// Its address (`"192.0.2.1:4379"`, or a name for in-process peers).
    pub address: String,
    /// Is the link up?
    pub connected: bool,
    /// Milliseconds since the link last changed state (as seen by the answering node).
    pub since_ms: u64,
}

/// [`LIST_PEERS`] reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// The answering node.
    pub pnn: u32,
    /// Peers, by pnn (the node itself excluded).
    pub peers: Vec<PeerInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_ranges() {
        for op in [
            PING,
            VERSION,
            STATISTICS,
            LOG_LEVEL,
            SHUTDOWN,
            STATISTICS_RESET,
        ] {
            assert!(is_common(op) && !is_transport(op));
        }
        for op in [
            REGISTER,
            SUBSCRIBE,
            UNSUBSCRIBE,
            LIST_SERVICES,
            LIST_PEERS,
            SET_NODES,
        ] {
            assert!(is_transport(op) && !is_common(op));
        }
        assert!(!is_common(0x200) && !is_transport(0x200));
        assert_eq!(daemon_base(crate::proto::service::FAILOVERD), 0x0002_0000);
        assert!(!is_common(daemon_base(1)) && !is_transport(daemon_base(1)));
    }

    #[test]
    fn since_subtracts_counts_and_keeps_levels() {
        let now = Statistics {
            counters: vec![
                ("local_in".into(), 120),
                ("clients".into(), 4),
                ("uptime_ms".into(), 9000),
                ("admin_in_flight".into(), 2),
                ("new_counter".into(), 5),
                ("went_down".into(), 1),
            ],
        };
        let base = vec![
            ("local_in".to_string(), 100),
            ("clients".to_string(), 3),
            ("uptime_ms".to_string(), 5000),
            ("admin_in_flight".to_string(), 1),
            ("went_down".to_string(), 7),
        ];
        let got = now.since(&base);
        assert_eq!(got.get("local_in"), Some(20));
        assert_eq!(got.get("clients"), Some(4));
        assert_eq!(got.get("uptime_ms"), Some(9000));
        assert_eq!(got.get("admin_in_flight"), Some(2));
        assert_eq!(got.get("new_counter"), Some(5));
        assert_eq!(got.get("went_down"), Some(0));
    }
}
