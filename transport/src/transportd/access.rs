//! What a *client* (a member of the configured group, not root and not
//! transportd's own user, see [`super::peercred::Privilege`]) may send
//! through the local socket.
//!
//! The daemons' internal messages move addresses and decide leases: a
//! TAKE_IPS with a huge generation, a LEASE that never ends, a forged
//! MEMBERSHIP or heartbeat. Only daemons may send them. A client may send:
//!
//! * a **Request** whose (destination service, opcode) is in
//!   [`CLIENT_REQUESTS`]: exactly what the `ipfailover` command sends
//!   (reads, and the admin commands that CTDB's `ctdb` tool offers), plus
//!   the read-only common controls PING, VERSION and STATISTICS to any
//!   service;
//! * a **Reply** or an **Error**: the client library answers common
//!   controls sent to it. An answer cannot forge anything: transportd
//!   stamps the client's own source on it, and a client library accepts an
//!   answer only from the service it asked.
//!
//! Never an **Event** (MEMBERSHIP, LEASE, HOSTED, IPREALLOCATED, heartbeats,
//! conntrackd's replication are all events), never a request outside the
//! list (TAKE_IPS, RELEASE_IPS, SUBSCRIBE, LOG_LEVEL, SHUTDOWN, ...).
//!
//! Pure: decides on header fields only, so transportd still never decodes
//! a payload.

use crate::msg::{cluster, conntrack, failover, master};
use crate::proto::control as ctl;
use crate::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, MASTERD, TRANSPORT};
use crate::proto::Kind;

/// A destination service in [`CLIENT_REQUESTS`]: one service, or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// Any service (the common controls, which every service answers).
    Any,
    /// This service id.
    Service(u16),
}

/// The requests a client may send: destination, opcode, name (for logs and
/// docs/SECURITY.md, which lists the same table).
pub const CLIENT_REQUESTS: &[(To, u32, &str)] = &[
    // Common controls that only read.
    (To::Any, ctl::PING, "PING"),
    (To::Any, ctl::VERSION, "VERSION"),
    (To::Any, ctl::STATISTICS, "STATISTICS"),
    // `statisticsreset`: counters only, as any ctdb user may.
    (To::Any, ctl::STATISTICS_RESET, "STATISTICS_RESET"),
    // transportd: `ping`, `-n all`, `status`.
    (To::Service(TRANSPORT), ctl::LIST_SERVICES, "LIST_SERVICES"),
    (To::Service(TRANSPORT), ctl::LIST_PEERS, "LIST_PEERS"),
    // clusterd: `status`, `nodestatus`, `pnn`, `leader`; `disable`,
    // `enable`, `stop`, `continue`, `ban`, `unban`.
    (
        To::Service(CLUSTERD),
        cluster::GET_MEMBERSHIP,
        "GET_MEMBERSHIP",
    ),
    (To::Service(CLUSTERD), cluster::ADMIN, "ADMIN"),
    (To::Service(CLUSTERD), cluster::GET_SETTINGS, "GET_SETTINGS"),
    // `reloadnodes` reads every node's file (applying it is root's).
    (
        To::Service(CLUSTERD),
        cluster::GET_NODES_FILE,
        "GET_NODES_FILE",
    ),
    // failoverd: `ip`, `ipinfo`, `ifaces`, `status`; `moveip`,
    // `ipreallocate`, `addip`, `delip`, `reloadips`, `setifacelink`,
    // `gratarp`, `tickle`, `killtcp`; `listvars`, `getvar`, `setvar`;
    // `event status`, `scriptstatus`, `event script list|enable|disable`
    // (not `event run`: it hands arguments to the hooks, root only).
    (
        To::Service(FAILOVERD),
        failover::GET_PUBLIC_IPS,
        "GET_PUBLIC_IPS",
    ),
    (
        To::Service(FAILOVERD),
        failover::GET_IP_STATUS,
        "GET_IP_STATUS",
    ),
    (
        To::Service(FAILOVERD),
        failover::IPREALLOCATE,
        "IPREALLOCATE",
    ),
    (To::Service(FAILOVERD), failover::MOVE_IP, "MOVE_IP"),
    (To::Service(FAILOVERD), failover::ADD_IP, "ADD_IP"),
    (To::Service(FAILOVERD), failover::DEL_IP, "DEL_IP"),
    (To::Service(FAILOVERD), failover::RELOAD_IPS, "RELOAD_IPS"),
    (
        To::Service(FAILOVERD),
        failover::SET_IFACE_LINK,
        "SET_IFACE_LINK",
    ),
    (To::Service(FAILOVERD), failover::GRATARP, "GRATARP"),
    (To::Service(FAILOVERD), failover::TICKLE, "TICKLE"),
    (To::Service(FAILOVERD), failover::KILLTCP, "KILLTCP"),
    (
        To::Service(FAILOVERD),
        failover::GET_TUNABLES,
        "GET_TUNABLES",
    ),
    (To::Service(FAILOVERD), failover::SET_TUNABLE, "SET_TUNABLE"),
    // conntrackd: `gettickles` (and its reads); `addtickle`, `deltickle`
    // (a file server registering its clients does the same).
    (
        To::Service(CONNTRACKD),
        conntrack::GET_CONNECTIONS,
        "GET_CONNECTIONS",
    ),
    (
        To::Service(CONNTRACKD),
        conntrack::GET_CONNECTIONS_PAGE,
        "GET_CONNECTIONS_PAGE",
    ),
    (To::Service(CONNTRACKD), conntrack::GET_COUNTS, "GET_COUNTS"),
    (
        To::Service(CONNTRACKD),
        conntrack::ADD_CONNECTIONS,
        "ADD_CONNECTIONS",
    ),
    (
        To::Service(CONNTRACKD),
        conntrack::REMOVE_CONNECTIONS,
        "REMOVE_CONNECTIONS",
    ),
    // masterd: `daemons`.
    (To::Service(MASTERD), master::GET_STATUS, "GET_STATUS"),
];

/// May a client send a frame of `kind` with `opcode` to service
/// `dst_service` (on any node)?
///
/// # Errors
/// Why not, for the log and the `Refused` answer.
pub fn client_may_send(kind: Kind, dst_service: u16, opcode: u32) -> Result<(), String> {
    match kind {
        Kind::Reply | Kind::Error => Ok(()),
        Kind::Event => Err(format!(
            "events (opcode {opcode:#010x}) are sent only by the daemons"
        )),
        Kind::Unknown(k) => Err(format!("frame kind {k} is not known")),
        Kind::Request => {
            let allowed = CLIENT_REQUESTS.iter().any(|(to, op, _)| {
                *op == opcode && (*to == To::Any || *to == To::Service(dst_service))
            });
            if allowed {
                Ok(())
            } else {
                Err(format!(
                    "request opcode {opcode:#010x} to service {dst_service:#06x} is not one \
                     the ipfailover command sends; only root and the daemons' user may send it"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::service::BROADCAST_SERVICE;

    #[test]
    fn the_cli_requests_are_allowed() {
        for (to, op, name) in CLIENT_REQUESTS {
            let svc = match to {
                To::Any => 0x8001,
                To::Service(s) => *s,
            };
            assert!(client_may_send(Kind::Request, svc, *op).is_ok(), "{name}");
        }
        assert!(client_may_send(Kind::Request, FAILOVERD, ctl::PING).is_ok());
        assert!(client_may_send(Kind::Reply, 0x8001, ctl::PING).is_ok());
        assert!(client_may_send(Kind::Error, 0x8001, ctl::PING).is_ok());
    }

    /// Every message that moves addresses, grants leases or controls a
    /// daemon is refused to a client.
    #[test]
    fn internal_messages_are_refused() {
        let refused = [
            (Kind::Request, FAILOVERD, failover::TAKE_IPS),
            (Kind::Request, FAILOVERD, failover::RELEASE_IPS),
            (Kind::Event, BROADCAST_SERVICE, cluster::LEASE),
            (Kind::Event, FAILOVERD, cluster::LEASE),
            (Kind::Event, BROADCAST_SERVICE, cluster::MEMBERSHIP),
            (Kind::Event, BROADCAST_SERVICE, failover::HOSTED),
            (Kind::Event, BROADCAST_SERVICE, failover::IPREALLOCATED),
            // clusterd's heartbeats and conntrackd's replication.
            (Kind::Event, CLUSTERD, 0x0001_0100),
            (Kind::Event, CONNTRACKD, conntrack::REPLICATION),
            (Kind::Event, BROADCAST_SERVICE, conntrack::REPLICATION + 1),
            (Kind::Request, TRANSPORT, ctl::SUBSCRIBE),
            (Kind::Request, TRANSPORT, ctl::SHUTDOWN),
            (Kind::Request, FAILOVERD, ctl::SHUTDOWN),
            (Kind::Request, TRANSPORT, ctl::LOG_LEVEL),
            (Kind::Request, TRANSPORT, ctl::REGISTER),
            // A CLI opcode to the wrong service.
            (Kind::Request, FAILOVERD, cluster::ADMIN),
            (Kind::Request, 0x8001, failover::MOVE_IP),
        ];
        for (kind, svc, op) in refused {
            assert!(
                client_may_send(kind, svc, op).is_err(),
                "{kind:?} {op:#x} to {svc:#x} was allowed"
            );
        }
    }
}
