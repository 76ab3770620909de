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
//!
//! An address may have more connections than one message holds (a 4 MiB
//! payload is about 250,000 IPv4 connections): [`GET_CONNECTIONS_PAGE`]
//! serves them a page at a time, and [`get_connections`] is the client side
//! that every consumer (failoverd's tickles, the CLI's `gettickles`) calls to
//! get the whole list.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError};
use crate::proto::Address;

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
/// Request [`GetConnectionsPage`] → [`ConnectionsPage`]: one page of the
/// connections of a public address, in ascending order, after a cursor.
/// Use [`get_connections`] rather than this directly.
pub const GET_CONNECTIONS_PAGE: u32 = 0x0003_0005;
/// Request `Vec<Pnn>` → `()`: the live nodes of a reloaded nodes file
/// (clusterd sends it on `reloadnodes`); replication from or about other
/// nodes is refused from then on. Only this node's clusterd may send it.
pub const SET_NODES: u32 = 0x0003_0006;
/// Request `Vec<IpAddr>` → `()`: this node's failoverd is about to release
/// these addresses and reset their local sockets. conntrackd stops
/// following them at once (as if `HOSTED` no longer listed them), before
/// the resets: their closes are failoverd's own, whose resets may not
/// reach the clients (the public link is down), so their connections stay
/// in every node's table for the next owner's tickles. Only this node's
/// failoverd may send it.
pub const RELEASING: u32 = 0x0003_0007;
/// Most connections in one [`ConnectionsPage`]: 40 bytes each at worst
/// (two IPv6 socket addresses), so a page stays far below the 4 MiB payload
/// limit.
pub const PAGE_CONNECTIONS: usize = 65_536;
/// Most pages [`get_connections`] asks for (a bound on its loop: 268 million
/// connections).
pub const MAX_PAGES: usize = 4096;
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

/// The payload of [`GET_CONNECTIONS_PAGE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GetConnectionsPage {
    /// The public address and port filter, as in [`GET_CONNECTIONS`].
    pub query: GetConnections,
    /// The cursor: only connections ordered after this one (`None`: from
    /// the first). The order is [`TrackedConnection`]'s `Ord`.
    pub after: Option<TrackedConnection>,
}

/// The answer to [`GET_CONNECTIONS_PAGE`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionsPage {
    /// At most [`PAGE_CONNECTIONS`] connections, ascending, all after the
    /// cursor.
    pub conns: Vec<TrackedConnection>,
    /// Whether more connections follow the last one of this page.
    pub more: bool,
}

/// Why [`get_connections`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GetConnectionsError {
    /// A page request failed (timeout, closed transport, refused).
    #[error("connections of {address}: {source}")]
    Request {
        /// The public address asked for.
        address: IpAddr,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// conntrackd said more follow but its page did not move past the
    /// cursor (a broken server): stop rather than loop.
    #[error("connections of {address}: conntrackd's page {page} did not advance the cursor")]
    Stalled {
        /// The public address asked for.
        address: IpAddr,
        /// The page (from 0).
        page: usize,
    },
    /// More than [`MAX_PAGES`] pages.
    #[error("connections of {address}: more than {MAX_PAGES} pages")]
    TooMany {
        /// The public address asked for.
        address: IpAddr,
    },
    /// The whole list did not arrive within the time limit.
    #[error("connections of {address}: not all pages within {limit:?}")]
    Timeout {
        /// The public address asked for.
        address: IpAddr,
        /// The limit.
        limit: Duration,
    },
}

/// All connections of `query.address` (only to `query.port` if given) that
/// the conntrackd at `dst` tracks, sorted, fetched page by page
/// ([`GET_CONNECTIONS_PAGE`]) so that any number fits; `timeout` bounds the
/// whole exchange. Pages are cut by a cursor, so a connection present for the
/// whole exchange is returned exactly once even if the table changes between
/// pages (conntrackd also serves the pages of one listing from one snapshot
/// when it can).
///
/// Call it as
/// `get_connections(&client, Address::new(LOCAL, CONNTRACKD), GetConnections { address, port: None }, timeout)`.
///
/// # Errors
///
/// [`GetConnectionsError`]: a failed or timed-out page request, a server
/// that does not advance, more than [`MAX_PAGES`] pages.
pub async fn get_connections(
    client: &Client,
    dst: Address,
    query: GetConnections,
    timeout: Duration,
) -> Result<Vec<TrackedConnection>, GetConnectionsError> {
    let address = query.address;
    let fetch = async {
        let mut all: Vec<TrackedConnection> = Vec::new();
        let mut after = None;
        for page in 0..MAX_PAGES {
            let req = GetConnectionsPage { query, after };
            let got: ConnectionsPage = client
                .request(dst, GET_CONNECTIONS_PAGE, &req, timeout)
                .await
                .map_err(|source| GetConnectionsError::Request { address, source })?;
            let last = got.conns.last().copied();
            // Every connection of the page must follow the cursor, in order.
            let ordered = got.conns.windows(2).all(|w| w[0] < w[1])
                && match (after, got.conns.first()) {
                    (Some(a), Some(first)) => a < *first,
                    _ => true,
                };
            if !ordered || (got.more && last.is_none()) {
                return Err(GetConnectionsError::Stalled { address, page });
            }
            all.extend(got.conns);
            if !got.more {
                return Ok(all);
            }
            after = last;
        }
        Err(GetConnectionsError::TooMany { address })
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| GetConnectionsError::Timeout {
            address,
            limit: timeout,
        })?
}

/// The page of `sorted` (ascending, distinct) that follows `after`: at most
/// `max` connections and whether more follow. The server side of
/// [`GET_CONNECTIONS_PAGE`], pure.
pub fn page_after<T: Ord + Copy>(sorted: &[T], after: Option<T>, max: usize) -> (&[T], bool) {
    let start = match after {
        Some(a) => sorted.partition_point(|c| *c <= a),
        None => 0,
    };
    let rest = sorted.get(start..).unwrap_or(&[]);
    let n = rest.len().min(max.max(1));
    (&rest[..n], rest.len() > n)
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
            GET_CONNECTIONS_PAGE,
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

    #[test]
    fn pages_cover_a_sorted_list_exactly_once() {
        let list: Vec<u32> = (0..10).map(|x| x * 2).collect();
        assert_eq!(page_after(&list, None, 4), (&list[0..4], true));
        assert_eq!(page_after(&list, Some(6), 4), (&list[4..8], true));
        assert_eq!(page_after(&list, Some(7), 4), (&list[4..8], true));
        assert_eq!(page_after(&list, Some(14), 4), (&list[8..10], false));
        assert_eq!(page_after(&list, Some(18), 4), (&list[10..], false));
        assert_eq!(page_after(&list, Some(100), 4), (&list[10..], false));
        assert_eq!(page_after::<u32>(&[], None, 4), (&[][..], false));
        // Walking by the last element of each page yields the list.
        let mut got = Vec::new();
        let mut after = None;
        for _ in 0..20 {
            let (page, more) = page_after(&list, after, 3);
            got.extend_from_slice(page);
            after = page.last().copied();
            if !more {
                break;
            }
        }
        assert_eq!(got, list);
    }

    #[test]
    fn a_full_page_fits_one_payload() {
        let v6 = |port| {
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(
                    0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
                )),
                port,
            )
        };
        let page = ConnectionsPage {
            conns: vec![
                TrackedConnection {
                    client: v6(u16::MAX),
                    server: v6(u16::MAX),
                };
                PAGE_CONNECTIONS
            ],
            more: true,
        };
        let bytes = encode_payload(&page).unwrap();
        assert!(bytes.len() <= crate::proto::MAX_PAYLOAD, "{}", bytes.len());
    }
}
