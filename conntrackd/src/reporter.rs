//! The local side of replication: stamps this node's observed changes (from
//! sock_diag dumps, conntrack events, explicit registration) with versions and
//! turns them into size-bounded messages. Pure: the shell applies the
//! messages to its own [`crate::table::Table`] and sends them to every other
//! node.
//!
//! Invariants it keeps for the table's merge rules: per address, versions of
//! one incarnation are `1, 2, 3, ...` with no holes, and the first operation
//! on an address in an incarnation is a full sync (an empty one if the first
//! thing seen is a single change).

use std::net::IpAddr;

use foldhash::HashMap;

use crate::msg::{DeltaBatcher, Msg, OpKind, SyncChunk};
use crate::table::{Conn, Pnn, Version};

/// Versions and batches this node's own reports.
#[derive(Debug)]
pub struct Reporter {
    pnn: Pnn,
    incarnation: u32,
    /// The last sequence number used per address in this incarnation.
    last: HashMap<IpAddr, u64>,
    batch: DeltaBatcher,
    chunk: usize,
}

impl Reporter {
    /// The reporter of node `pnn`. `incarnation` must be larger than that of
    /// any earlier run of this node's conntrackd: e.g. `max(seconds since the
    /// epoch, last + 1)` with the last one kept in the run directory, since a
    /// supervisor may restart the daemon within the same second.
    pub fn new(pnn: Pnn, incarnation: u32) -> Self {
        Reporter {
            pnn,
            incarnation,
            last: HashMap::default(),
            batch: DeltaBatcher::new(pnn),
            chunk: usize::MAX,
        }
    }

    /// Caps the connections per sync chunk below the 64 KiB limit (tests use
    /// small chunks to exercise reassembly).
    #[must_use]
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk;
        self
    }

    /// This node.
    pub fn pnn(&self) -> Pnn {
        self.pnn
    }

    fn next(&mut self, address: IpAddr) -> Version {
        let seq = self.last.entry(address).or_insert(0);
        *seq = seq.saturating_add(1);
        Version::new(self.incarnation, *seq)
    }

    /// Records one change on `address`; returns its version and the messages
    /// that are ready (a full batch, or first an empty sync if `address` was
    /// never synced in this incarnation). The change itself waits in the
    /// batch: call [`Reporter::flush`] to send a partial batch.
    pub fn change(&mut self, address: IpAddr, kind: OpKind, conn: Conn) -> (Version, Vec<Msg>) {
        let address = address.to_canonical();
        let mut out = Vec::new();
        if !self.last.contains_key(&address) {
            out = self.sync(address, &[]);
        }
        let v = self.next(address);
        out.extend(self.batch.push(address, v, kind, conn).map(Msg::Deltas));
        (v, out)
    }

    /// The batch of changes not sent yet, if any.
    pub fn flush(&mut self) -> Option<Msg> {
        self.batch.finish().map(Msg::Deltas)
    }

    /// The number of changes not sent yet.
    pub fn pending(&self) -> usize {
        self.batch.pending()
    }

    /// A full sync of this node's connections on `address` (e.g. from a
    /// sock_diag dump): the pending batch first, then the chunks.
    pub fn sync(&mut self, address: IpAddr, conns: &[Conn]) -> Vec<Msg> {
        let address = address.to_canonical();
        let mut out: Vec<Msg> = self.flush().into_iter().collect();
        let v = self.next(address);
        out.extend(SyncChunk::split(self.pnn, address, v, conns, self.chunk).map(Msg::Sync));
        out
    }

    /// Whether this reporter has reported on `address` in this incarnation.
    pub fn knows(&self, address: IpAddr) -> bool {
        self.last.contains_key(&address.to_canonical())
    }

    /// The addresses this reporter has reported on in this incarnation.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.last.keys().copied()
    }
}
