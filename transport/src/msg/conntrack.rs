//! conntrackd's messages: tracked connections of public addresses.
//!
//! Requests served by conntrackd (service [`crate::proto::service::CONNTRACKD`])
//! to local clients: failoverd (before tickling the clients of an address it
//! takes over), the CLI (`gettickles`, `addtickle`, `deltickle`) and file
//! servers that register their clients themselves. Payloads are postcard
//! (see [`crate::proto::encode_payload`]).
//!
//! Replication between conntrackd instances uses the conntrackd crate's own
//! messages and the opcodes [`REPLICATION`] reserved here so that no other
//! daemon takes them.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Request [`GetConnections`] → `Vec<TrackedConnection>`: the connections of
/// a public address (only those to `port` if given), every reporter's.
pub const GET_CONNECTIONS: u32 = 0x0003_0001;
/// Request `Vec<TrackedConnection>` → `()`: registers connections on this
/// node (CTDB's `addtickle`, a file server reporting its clients).
pub const ADD_CONNECTIONS: u32 = 0x0003_0002;
/// Request `Vec<TrackedConnection>` → `()`: unregisters connections
/// registered or learned on this node (CTDB's `deltickle`).
pub const REMOVE_CONNECTIONS: u32 = 0x0003_0003;
/// Request `()` → `Vec<AddressCount>`: the number of tracked connections of
/// every address that has any.
pub const GET_COUNTS: u32 = 0x0003_0004;
/// Event between conntrackd instances (node to node): one replication
/// message of the conntrackd crate (deltas, sync chunks, versions, requests).
pub const REPLICATION: u32 = 0x0003_0100;

/// The payload of [`GET_CONNECTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GetConnections {
    /// The public address.
    pub address: IpAddr,
    /// Only connections to this public port.
    pub port: Option<u16>,
}

/// One TCP connection to a public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrackedConnection {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The public address and port it connected to.
    pub server: SocketAddr,
}

/// One line of the [`GET_COUNTS`] answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressCount {
    /// The public address.
    pub address: IpAddr,
    /// How many connections to it are tracked.
    pub connections: u64,
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::proto::{decode_payload, encode_payload};

    #[test]
    fn opcodes_are_in_conntrackd_range_and_distinct() {
        let all = [
            GET_CONNECTIONS,
            ADD_CONNECTIONS,
            REMOVE_CONNECTIONS,
            GET_COUNTS,
            REPLICATION,
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a >> 16, 0x0003);
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn payloads_round_trip() {
        let g = GetConnections {
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            port: Some(445),
        };
        let bytes = encode_payload(&g).unwrap();
        // V4 tag, octets, Some, port 445 as a varint.
        assert_eq!(bytes, [0, 192, 0, 2, 1, 1, 0xbd, 0x03]);
        assert_eq!(decode_payload::<GetConnections>(&bytes).unwrap(), g);
        let v = vec![TrackedConnection {
            client: SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
                40000,
            ),
            server: SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                2049,
            ),
        }];
        let bytes = encode_payload(&v).unwrap();
        assert_eq!(decode_payload::<Vec<TrackedConnection>>(&bytes).unwrap(), v);
    }
}
