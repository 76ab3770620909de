//! conntrackd's messages: replication between nodes ([`Msg`]) and requests
//! from local clients (failoverd, the CLI, file servers: [`Request`],
//! [`Response`]), as serde types encoded with postcard.
//!
//! Every message fits in [`MAX_MSG_BYTES`] (64 KiB): [`DeltaBatcher`] closes a
//! batch at [`MAX_OPS_PER_DELTAS`] operations and [`SyncChunk::split`] cuts a
//! full sync into chunks of at most [`SyncChunk::max_conns`] connections; both
//! limits come from the worst-case encoded size of one entry (the
//! `worst_case_*` tests check them). [`decode`] refuses longer input before
//! parsing and input with trailing bytes.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::table::{Conn, Pnn, Version};

/// The largest encoded message.
pub const MAX_MSG_BYTES: usize = 64 * 1024;

/// A [`Deltas`] message holds at most this many operations: an operation with
/// its own address group encodes to at most 59 bytes (version 15, kind 1,
/// connection 23, address 17, group length 3), so 1024 of them and the
/// header stay under [`MAX_MSG_BYTES`].
pub const MAX_OPS_PER_DELTAS: usize = 1024;

/// Room kept for a sync chunk's header (tag 1, reporter 5, address 17,
/// version 15, index 5, total 5, list length 3 = 51 bytes).
const SYNC_HEADER_BYTES: usize = 64;

/// Add or remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// The connection exists.
    Add,
    /// The connection is gone.
    Remove,
}

/// One change by a reporter on one public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Its version: the reporter's next for this address.
    pub version: Version,
    /// Add or remove.
    pub kind: OpKind,
    /// The connection.
    pub conn: Conn,
}

/// The operations of one batch on one public address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrOps {
    /// The public address.
    pub address: IpAddr,
    /// Its operations.
    pub ops: Vec<Op>,
}

/// A batch of changes by one reporter (at most [`MAX_OPS_PER_DELTAS`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deltas {
    /// The node that saw the changes.
    pub reporter: Pnn,
    /// The changes, grouped by address.
    pub groups: Vec<AddrOps>,
}

/// One chunk of a full sync: together, the chunks `0..total` of one
/// `(reporter, address, version)` list all the reporter's connections on the
/// address; it replaces every operation on that view with a lower version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncChunk {
    /// The node whose view this is.
    pub reporter: Pnn,
    /// The public address.
    pub address: IpAddr,
    /// The sync's version.
    pub version: Version,
    /// This chunk's number, `0..total`.
    pub index: u32,
    /// The number of chunks of this sync (at least 1; an empty view is one
    /// empty chunk).
    pub total: u32,
    /// Connections of this chunk.
    pub conns: Vec<Conn>,
}

/// A replication message between the conntrackd of two nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Real-time changes.
    Deltas(Deltas),
    /// A chunk of a full sync (periodic, on request, or relayed to a joiner).
    Sync(SyncChunk),
    /// Asks the receiver to send full syncs of its own views of `address`
    /// (all addresses if `None`): sent when a view has a gap.
    SyncRequest {
        /// Who asks.
        from: Pnn,
        /// Which address, or all.
        address: Option<IpAddr>,
    },
    /// A joining or restarted node asks for the receiver's whole table
    /// ([`crate::table::Table::snapshot`]).
    SnapshotRequest {
        /// Who asks.
        from: Pnn,
    },
    /// The versions of the reporter's own views, sent every sync interval
    /// (at most [`MAX_VERSIONS`] per message): a node that is behind on one
    /// (a lost last message, a healed partition) asks for a sync.
    Versions {
        /// The node whose views these are.
        reporter: Pnn,
        /// Per hosted address, the version its view is complete to.
        versions: Vec<(IpAddr, Version)>,
    },
}

/// A [`Msg::Versions`] holds at most this many entries (an entry encodes to
/// at most 32 bytes: address 17, version 15).
pub const MAX_VERSIONS: usize = 2000;

/// A request from a local client (failoverd, `ipfailover gettickles`,
/// `addtickle`/`deltickle`, a file server registering its clients).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The connections of `address`, only those to `port` if given.
    Connections {
        /// The public address.
        address: IpAddr,
        /// Only this public port.
        port: Option<u16>,
    },
    /// The number of connections of every known address.
    Counts,
    /// Registers a connection (like CTDB's TCP_CLIENT / `addtickle`).
    Add {
        /// The public address.
        address: IpAddr,
        /// The connection.
        conn: Conn,
    },
    /// Unregisters a connection (`deltickle`).
    Remove {
        /// The public address.
        address: IpAddr,
        /// The connection.
        conn: Conn,
    },
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The connections asked for (may need several responses if more than
    /// fit; `more` says another follows).
    Connections {
        /// Connections.
        conns: Vec<Conn>,
        /// Whether another response follows.
        more: bool,
    },
    /// Counts per address.
    Counts(Vec<(IpAddr, u64)>),
    /// Add or remove done.
    Done,
    /// The request failed.
    Error(String),
}

/// Errors of encoding and decoding.
#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    /// The encoded message would exceed [`MAX_MSG_BYTES`].
    #[error("message of {len} bytes exceeds the limit of {MAX_MSG_BYTES}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The bytes are not a valid message.
    #[error("cannot decode message: {0}")]
    Decode(#[source] postcard::Error),
    /// Encoding failed.
    #[error("cannot encode message: {0}")]
    Encode(#[source] postcard::Error),
    /// A valid message followed by extra bytes.
    #[error("{extra} bytes after the message")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// Encodes `msg` with postcard.
///
/// # Errors
///
/// [`MsgError::TooLong`] if it exceeds [`MAX_MSG_BYTES`] (the batchers never
/// make such a message), [`MsgError::Encode`] if serde fails.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, MsgError> {
    let bytes = postcard::to_allocvec(msg).map_err(MsgError::Encode)?;
    if bytes.len() > MAX_MSG_BYTES {
        return Err(MsgError::TooLong { len: bytes.len() });
    }
    Ok(bytes)
}

/// Decodes one whole message.
///
/// # Errors
///
/// [`MsgError::TooLong`] before parsing if `bytes` exceeds
/// [`MAX_MSG_BYTES`]; [`MsgError::Decode`] for invalid bytes;
/// [`MsgError::TrailingBytes`] if bytes remain.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, MsgError> {
    if bytes.len() > MAX_MSG_BYTES {
        return Err(MsgError::TooLong { len: bytes.len() });
    }
    let (msg, rest) = postcard::take_from_bytes(bytes).map_err(MsgError::Decode)?;
    if !rest.is_empty() {
        return Err(MsgError::TrailingBytes { extra: rest.len() });
    }
    Ok(msg)
}

impl Deltas {
    /// An empty batch.
    pub fn new(reporter: Pnn) -> Self {
        Deltas {
            reporter,
            groups: Vec::new(),
        }
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.ops.len()).sum()
    }

    /// Whether there is no operation.
    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.ops.is_empty())
    }
}

/// Builds [`Deltas`] batches that never exceed [`MAX_OPS_PER_DELTAS`].
#[derive(Debug)]
pub struct DeltaBatcher {
    current: Deltas,
    ops: usize,
}

impl DeltaBatcher {
    /// A batcher for `reporter`'s operations.
    pub fn new(reporter: Pnn) -> Self {
        DeltaBatcher {
            current: Deltas::new(reporter),
            ops: 0,
        }
    }

    /// Adds an operation; returns the previous batch if it was full.
    pub fn push(
        &mut self,
        address: IpAddr,
        version: Version,
        kind: OpKind,
        conn: Conn,
    ) -> Option<Deltas> {
        let full = if self.ops >= MAX_OPS_PER_DELTAS {
            self.finish()
        } else {
            None
        };
        let op = Op {
            version,
            kind,
            conn,
        };
        match self.current.groups.last_mut() {
            Some(g) if g.address == address => g.ops.push(op),
            _ => self.current.groups.push(AddrOps {
                address,
                ops: vec![op],
            }),
        }
        self.ops += 1;
        full
    }

    /// The pending batch, if it has any operation.
    pub fn finish(&mut self) -> Option<Deltas> {
        if self.ops == 0 {
            return None;
        }
        self.ops = 0;
        let reporter = self.current.reporter;
        Some(std::mem::replace(&mut self.current, Deltas::new(reporter)))
    }

    /// The number of pending operations.
    pub fn pending(&self) -> usize {
        self.ops
    }
}

impl SyncChunk {
    /// The most connections of one chunk for `address`'s family: a
    /// connection encodes to at most 11 bytes for IPv4 (tag 1, address 4,
    /// ports 3 + 3) and 23 for IPv6 (tag 1, address 16, ports 3 + 3).
    pub const fn max_conns(address: IpAddr) -> usize {
        let per = match address {
            IpAddr::V4(_) => 11,
            IpAddr::V6(_) => 23,
        };
        (MAX_MSG_BYTES - SYNC_HEADER_BYTES) / per
    }

    /// Cuts a full sync of `conns` into chunks of at most `chunk`
    /// connections (capped at [`SyncChunk::max_conns`]); an empty `conns`
    /// gives one empty chunk.
    pub fn split<'a>(
        reporter: Pnn,
        address: IpAddr,
        version: Version,
        conns: &'a [Conn],
        chunk: usize,
    ) -> impl Iterator<Item = SyncChunk> + 'a {
        let size = chunk.clamp(1, Self::max_conns(address));
        let count = conns.len().div_ceil(size).max(1);
        // A table cannot hold 2^32 chunks of >= 1 connection in 64-bit
        // memory that matters here; saturate rather than wrap.
        let total = u32::try_from(count).unwrap_or(u32::MAX);
        (0..count).map(move |i| SyncChunk {
            reporter,
            address,
            version,
            index: u32::try_from(i).unwrap_or(u32::MAX),
            total,
            conns: conns[(i * size).min(conns.len())..((i + 1) * size).min(conns.len())].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use super::*;

    fn worst_v6_conn() -> Conn {
        Conn::new(
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(
                    0x2001, 0xdb8, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
                )),
                u16::MAX,
            ),
            u16::MAX,
        )
    }

    const WORST_VERSION: Version = Version::new(u32::MAX, u64::MAX);

    #[test]
    fn worst_case_deltas_fit() {
        let mut b = DeltaBatcher::new(Pnn::MAX);
        let mut out = Vec::new();
        for i in 0..(3 * MAX_OPS_PER_DELTAS) {
            // Alternate addresses so that every operation opens a group.
            let address = if i % 2 == 0 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 1, 1, 1, 1))
            } else {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 2, 2, 2, 2, 2))
            };
            out.extend(b.push(address, WORST_VERSION, OpKind::Remove, worst_v6_conn()));
        }
        out.extend(b.finish());
        assert_eq!(out.len(), 3);
        for d in out {
            assert_eq!(d.len(), MAX_OPS_PER_DELTAS);
            let bytes = encode(&Msg::Deltas(d.clone())).unwrap();
            assert!(bytes.len() <= MAX_MSG_BYTES, "{}", bytes.len());
            assert_eq!(decode::<Msg>(&bytes).unwrap(), Msg::Deltas(d));
        }
    }

    #[test]
    fn worst_case_sync_chunks_fit() {
        let a6 = IpAddr::V6(Ipv6Addr::new(
            0x2001, 0xdb8, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
        ));
        let a4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 255));
        let c4 = Conn::new(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 255)), u16::MAX),
            u16::MAX,
        );
        for (address, conn) in [(a6, worst_v6_conn()), (a4, c4)] {
            let conns = vec![conn; SyncChunk::max_conns(address) * 2 + 1];
            let chunks: Vec<_> =
                SyncChunk::split(Pnn::MAX, address, WORST_VERSION, &conns, usize::MAX).collect();
            assert_eq!(chunks.len(), 3);
            assert_eq!(
                chunks.iter().map(|c| c.conns.len()).sum::<usize>(),
                conns.len()
            );
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!(c.index as usize, i);
                assert_eq!(c.total, 3);
                let bytes = encode(&Msg::Sync(c.clone())).unwrap();
                assert!(bytes.len() <= MAX_MSG_BYTES, "{}", bytes.len());
            }
        }
    }

    #[test]
    fn worst_case_versions_fit() {
        let a6 = IpAddr::V6(Ipv6Addr::new(
            0x2001, 0xdb8, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
        ));
        let m = Msg::Versions {
            reporter: Pnn::MAX,
            versions: vec![(a6, WORST_VERSION); MAX_VERSIONS],
        };
        assert!(encode(&m).unwrap().len() <= MAX_MSG_BYTES);
    }

    #[test]
    fn empty_sync_is_one_chunk() {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let chunks: Vec<_> = SyncChunk::split(1, a, Version::new(1, 1), &[], 10).collect();
        assert_eq!(chunks.len(), 1);
        assert_eq!((chunks[0].index, chunks[0].total), (0, 1));
        assert!(chunks[0].conns.is_empty());
    }

    #[test]
    fn decode_refuses_long_truncated_and_trailing_input() {
        assert!(matches!(
            decode::<Msg>(&vec![0; MAX_MSG_BYTES + 1]),
            Err(MsgError::TooLong { .. })
        ));
        let m = Msg::SnapshotRequest { from: 3 };
        let mut bytes = encode(&m).unwrap();
        assert_eq!(decode::<Msg>(&bytes).unwrap(), m);
        bytes.push(0);
        assert!(matches!(
            decode::<Msg>(&bytes),
            Err(MsgError::TrailingBytes { extra: 1 })
        ));
        let d = encode(&Msg::Sync(SyncChunk {
            reporter: 1,
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            version: Version::new(1, 1),
            index: 0,
            total: 1,
            conns: vec![worst_v6_conn()],
        }))
        .unwrap();
        assert!(matches!(
            decode::<Msg>(&d[..d.len() - 1]),
            Err(MsgError::Decode(_))
        ));
    }

    #[test]
    fn golden_sync_chunk_bytes() {
        let m = Msg::Sync(SyncChunk {
            reporter: 2,
            address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            version: Version::new(5, 300),
            index: 0,
            total: 1,
            conns: vec![Conn::new(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40000),
                445,
            )],
        });
        let bytes = encode(&m).unwrap();
        #[rustfmt::skip]
        let want = [
            1,                      // Msg::Sync
            2,                      // reporter
            0, 192, 0, 2, 1,        // address: V4, octets
            5,                      // incarnation
            0xac, 0x02,             // seq 300, varint
            0,                      // index
            1,                      // total
            1,                      // one connection
            0, 198, 51, 100, 7,     // client: V4, octets
            0xc0, 0xb8, 0x02,       // client port 40000, varint
            0xbd, 0x03,             // public port 445, varint
        ];
        assert_eq!(bytes, want);
        assert_eq!(decode::<Msg>(&want).unwrap(), m);
    }
}

#[cfg(test)]
mod fuzz {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::table::Table;

    proptest! {
        /// Decoding arbitrary bytes never panics, and whatever decodes can be
        /// applied to a table without panicking.
        #[test]
        fn decode_and_apply_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut t = Table::new(Duration::from_secs(1));
            if let Ok(m) = decode::<Msg>(&bytes) {
                let _ = t.apply(&m, Duration::ZERO);
                prop_assert_eq!(t.len(), t.counts().iter().map(|(_, n)| n).sum::<usize>());
            }
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }

        /// Mutating one byte of a valid message never panics either.
        #[test]
        fn decode_mutated_messages(at in any::<usize>(), to in any::<u8>(), n in 1usize..40) {
            let address = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
            let conns: Vec<Conn> = (0..n)
                .map(|i| Conn::new(std::net::SocketAddr::new(address, u16::try_from(i).unwrap()), 2049))
                .collect();
            let chunk = SyncChunk::split(1, address, Version::new(1, 1), &conns, 16).next().unwrap();
            let mut bytes = encode(&Msg::Sync(chunk)).unwrap();
            let i = at % bytes.len();
            bytes[i] = to;
            let mut t = Table::new(Duration::from_secs(1));
            if let Ok(m) = decode::<Msg>(&bytes) {
                let _ = t.apply(&m, Duration::ZERO);
            }
        }
    }
}
