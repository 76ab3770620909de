//! The tracked-connection table: for each public address, the TCP connections
//! (client address:port <-> public address:port) that each node reported, and
//! the merge rules that make replication idempotent and order-independent.
//!
//! Pure: no I/O, no clock. Time comes in as `now`, a monotonic [`Duration`]
//! since an arbitrary origin chosen by the caller.
//!
//! # Representation
//!
//! The table maps each public address to one *view* per reporting node (pnn).
//! A view is a hash set of compact fixed-size keys: the public address and the
//! reporter are implied by where the set lives, so a key holds only the client
//! address and the two ports. An address's family decides the key type: an
//! IPv4 address keeps 8-byte keys (client IPv4, client port, public port), an
//! IPv6 address 20-byte keys. A client given as an IPv4-mapped IPv6 address
//! (a dual-stack socket) is stored as IPv4. With a load factor between 7/16 and
//! 7/8 and one control byte per bucket, that is 10-21 bytes per IPv4 connection
//! and 24-48 per IPv6 connection, index included (`bench conntrack` measures it).
//! Add and remove are one hash operation (plus one lookup per *other* reporter
//! of the same address, to keep the distinct count exact); the connections of
//! one address are read without touching any other address. A set that
//! falls below 1/8 of its capacity shrinks, so memory follows the load down.
//!
//! # Replication model and its guarantees
//!
//! Every change a reporter makes to one address gets a [`Version`]:
//! `(incarnation, seq)`, compared lexicographically. `seq` counts the
//! reporter's operations on that address, starting at 1, with no holes; the
//! incarnation must grow each time the reporter's conntrackd starts, and the
//! first operation of an incarnation on each address must be a full sync (so
//! that receivers do not wait for the missing earlier sequence numbers).
//!
//! An operation is a *delta* (add or remove one connection) or a *full sync*
//! (the complete set of that reporter's connections on that address, possibly
//! sent as several chunks). The state of a view is defined as
//! last-writer-wins per connection: a connection is present iff the received
//! operation with the highest version that mentions it says so, where a full
//! sync mentions every connection (present iff listed) and a sync counts as
//! received once all its chunks are. Because that definition depends only on
//! the *set* of received operations:
//!
//! * applying a message twice changes nothing (idempotent);
//! * any order of the same messages gives the same table (order-independent),
//!   provided that at most [`MAX_PARTIAL_SYNCS`] syncs of one view are
//!   incomplete at the same time (older incomplete ones are forgotten);
//! * a stale full sync never overwrites a newer delta, and a stale delta never
//!   undoes a newer sync or delta.
//!
//! The cost of this is paid only out of order: a view keeps `k`, the version
//! up to which every operation is accounted for, and only for operations
//! above `k` (a gap) it remembers their versions and, per touched connection,
//! the version and kind of the newest operation. In-order deltas take a fast
//! path that stores nothing but the key.
//!
//! Expiry is outside that guarantee by design: an address that nobody hosts is
//! dropped after the grace period, and the views of reporters other than the
//! current host are dropped once the host has held the address that long.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use foldhash::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use crate::msg::{DeltaBatcher, Msg, OpKind, SyncChunk};

/// A node number (CTDB's PNN).
pub use config::nodes::Pnn;

/// At most this many incomplete full syncs are buffered per view; when one
/// more starts, the one with the lowest version is forgotten.
pub const MAX_PARTIAL_SYNCS: usize = 8;

/// Sets with room for more than this many keys shrink when they are less
/// than 1/8 full.
const SHRINK_ABOVE: usize = 1024;

/// A full sync may be split in at most this many chunks.
pub const MAX_SYNC_CHUNKS: u32 = 1 << 20;

/// The version of one operation by one reporter on one public address.
///
/// Ordered by incarnation, then sequence number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// Grows with each start of the reporter's conntrackd (e.g. seconds since
    /// the epoch at start, or a persisted counter).
    pub incarnation: u32,
    /// Counts the reporter's operations on the address within the
    /// incarnation, from 1, without holes.
    pub seq: u64,
}

impl Version {
    /// A version.
    pub const fn new(incarnation: u32, seq: u64) -> Self {
        Version { incarnation, seq }
    }

    /// The version of the next operation in the same incarnation.
    #[must_use]
    pub const fn next(self) -> Self {
        Version {
            incarnation: self.incarnation,
            seq: self.seq.saturating_add(1),
        }
    }
}

/// One TCP connection to a public address: the client's address and port,
/// and the port on the public address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Conn {
    /// The client side.
    pub client: SocketAddr,
    /// The port on the public address (the server side).
    pub public_port: u16,
}

impl Conn {
    /// A connection from `client` to port `public_port` of the public address.
    pub const fn new(client: SocketAddr, public_port: u16) -> Self {
        Conn {
            client,
            public_port,
        }
    }
}

/// Errors of the table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    /// The client's address family differs from the public address's.
    #[error("connection {client} -> port {public_port} does not match the family of public address {address}")]
    FamilyMismatch {
        /// The public address.
        address: IpAddr,
        /// The client side of the connection.
        client: SocketAddr,
        /// The public port.
        public_port: u16,
    },
    /// A sync chunk's index or total is out of range.
    #[error("sync chunk {index}/{total} from pnn {reporter} for {address} is out of range")]
    BadChunk {
        /// The reporter.
        reporter: Pnn,
        /// The public address.
        address: IpAddr,
        /// The chunk's index.
        index: u32,
        /// The announced number of chunks.
        total: u32,
    },
    /// Two chunks of the same sync announce different totals.
    #[error(
        "sync {version:?} from pnn {reporter} for {address} announced {first} chunks, then {then}"
    )]
    ChunkTotalChanged {
        /// The reporter.
        reporter: Pnn,
        /// The public address.
        address: IpAddr,
        /// The sync's version.
        version: Version,
        /// The total of the first chunk seen.
        first: u32,
        /// The total of this chunk.
        then: u32,
    },
}

/// What applying one operation or chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The operation was new and is now accounted for.
    Applied,
    /// The operation was already received, or is older than what the view
    /// already accounts for; nothing changed.
    Stale,
    /// A chunk of a sync that is not complete yet was buffered.
    Buffered,
}

/// Counts of what one message did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// New operations (or completed syncs).
    pub applied: usize,
    /// Duplicate or superseded operations.
    pub stale: usize,
    /// Sync chunks buffered until their sync is complete.
    pub buffered: usize,
}

impl Applied {
    fn count(&mut self, o: Outcome) {
        match o {
            Outcome::Applied => self.applied += 1,
            Outcome::Stale => self.stale += 1,
            Outcome::Buffered => self.buffered += 1,
        }
    }
}

/// What [`Table::expire`] dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Whole addresses dropped (nobody hosts them).
    pub addresses: usize,
    /// Views of non-hosting reporters dropped.
    pub views: usize,
}

/// The version state of one view, for diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewInfo {
    /// Every operation up to this version is accounted for.
    pub complete_to: Version,
    /// Operations received above `complete_to` (there is a gap below them).
    pub pending: usize,
    /// Connections in the view.
    pub len: usize,
}

// ---------------------------------------------------------------------------
// Compact keys.

/// A connection key of an IPv4 public address: 8 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct K4 {
    ip: [u8; 4],
    client_port: u16,
    public_port: u16,
}

/// A connection key of an IPv6 public address: 20 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct K6 {
    ip: [u8; 16],
    client_port: u16,
    public_port: u16,
}

impl Hash for K4 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let ip = u64::from(u32::from_ne_bytes(self.ip));
        state.write_u64(ip << 32 | u64::from(self.client_port) << 16 | u64::from(self.public_port));
    }
}

impl Hash for K6 {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.ip));
        state.write_u32(u32::from(self.client_port) << 16 | u32::from(self.public_port));
    }
}

/// A key type: converts from and to a [`Conn`].
trait Key: Copy + Eq + Hash {
    /// `None` if the client's family is not this key's.
    fn from_conn(c: &Conn) -> Option<Self>;
    fn to_conn(self) -> Conn;
}

impl Key for K4 {
    fn from_conn(c: &Conn) -> Option<Self> {
        match c.client.ip().to_canonical() {
            IpAddr::V4(ip) => Some(K4 {
                ip: ip.octets(),
                client_port: c.client.port(),
                public_port: c.public_port,
            }),
            IpAddr::V6(_) => None,
        }
    }

    fn to_conn(self) -> Conn {
        Conn::new(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(self.ip)), self.client_port),
            self.public_port,
        )
    }
}

impl Key for K6 {
    fn from_conn(c: &Conn) -> Option<Self> {
        match c.client.ip() {
            IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none() => Some(K6 {
                ip: ip.octets(),
                client_port: c.client.port(),
                public_port: c.public_port,
            }),
            _ => None,
        }
    }

    fn to_conn(self) -> Conn {
        Conn::new(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(self.ip)), self.client_port),
            self.public_port,
        )
    }
}

// ---------------------------------------------------------------------------
// Views.

/// A full sync whose chunks have not all arrived.
///
/// Its chunks are kept as received so that a snapshot can relay them to a
/// joining node, which then completes the sync with the chunks still to come.
struct Partial<K> {
    total: u32,
    chunks: BTreeMap<u32, Vec<K>>,
}

/// One reporter's connections on one address.
struct View<K> {
    reporter: Pnn,
    set: HashSet<K>,
    /// Every operation up to `k` is accounted for.
    k: Version,
    /// Versions of received operations above `k`.
    above: BTreeSet<Version>,
    /// For connections touched by an operation above `k`: the newest such
    /// operation's version and whether it added. Invariant: every version
    /// here is in `above`; `above` empty implies `touched` empty.
    touched: HashMap<K, (Version, bool)>,
    /// Incomplete syncs above `k`.
    partials: BTreeMap<Version, Partial<K>>,
}

impl<K: Key> View<K> {
    fn new(reporter: Pnn) -> Self {
        View {
            reporter,
            set: HashSet::default(),
            k: Version::default(),
            above: BTreeSet::new(),
            touched: HashMap::default(),
            partials: BTreeMap::new(),
        }
    }

    fn is_stale(&self, v: Version) -> bool {
        v <= self.k || self.above.contains(&v)
    }

    /// Moves `k` up over contiguous received versions and forgets what is
    /// now accounted for.
    fn advance(&mut self) {
        let before = self.k;
        while let Some(&first) = self.above.first() {
            if first <= self.k {
                self.above.pop_first();
            } else if first == self.k.next() {
                self.k = first;
                self.above.pop_first();
            } else {
                break;
            }
        }
        if self.k != before {
            let k = self.k;
            if !self.touched.is_empty() {
                self.touched.retain(|_, (tv, _)| *tv > k);
            }
            if !self.partials.is_empty() {
                self.partials.retain(|v, _| *v > k);
            }
        }
    }

    fn info(&self) -> ViewInfo {
        ViewInfo {
            complete_to: self.k,
            pending: self.above.len(),
            len: self.set.len(),
        }
    }
}

/// All views of one address, with the number of distinct connections.
struct Views<K> {
    views: Vec<View<K>>,
    distinct: usize,
}

impl<K: Key> Views<K> {
    fn new() -> Self {
        Views {
            views: Vec::new(),
            distinct: 0,
        }
    }

    fn index(&mut self, reporter: Pnn) -> usize {
        match self.views.iter().position(|v| v.reporter == reporter) {
            Some(i) => i,
            None => {
                self.views.push(View::new(reporter));
                self.views.len() - 1
            }
        }
    }

    fn in_others(&self, i: usize, key: &K) -> bool {
        self.views
            .iter()
            .enumerate()
            .any(|(j, v)| j != i && v.set.contains(key))
    }

    fn set_member(&mut self, i: usize, key: K, add: bool) {
        let changed = if add {
            self.views[i].set.insert(key)
        } else {
            self.views[i].set.remove(&key)
        };
        if changed && (self.views.len() == 1 || !self.in_others(i, &key)) {
            if add {
                self.distinct += 1;
            } else {
                self.distinct -= 1;
            }
        }
        if changed && !add {
            // Give memory back after mass removal; amortised O(1), since the
            // set must lose 7/8 of its entries again before the next shrink.
            let set = &mut self.views[i].set;
            if set.capacity() > SHRINK_ABOVE && set.len() < set.capacity() / 8 {
                set.shrink_to_fit();
            }
        }
    }

    fn delta(&mut self, reporter: Pnn, v: Version, add: bool, key: K) -> Outcome {
        let i = self.index(reporter);
        let view = &mut self.views[i];
        if view.is_stale(v) {
            return Outcome::Stale;
        }
        if view.above.is_empty() && v == view.k.next() {
            // In order: nothing to remember but the key.
            view.k = v;
            if !view.partials.is_empty() {
                view.partials.remove(&v);
            }
            self.set_member(i, key, add);
            return Outcome::Applied;
        }
        view.above.insert(v);
        let superseded = matches!(view.touched.get(&key), Some((tv, _)) if *tv > v);
        if !superseded {
            view.touched.insert(key, (v, add));
            self.set_member(i, key, add);
        }
        self.views[i].advance();
        Outcome::Applied
    }

    fn sync_chunk(
        &mut self,
        reporter: Pnn,
        s: Version,
        index: u32,
        total: u32,
        keys: Vec<K>,
    ) -> Result<Outcome, (u32, u32)> {
        let i = self.index(reporter);
        let view = &mut self.views[i];
        if view.is_stale(s) {
            return Ok(Outcome::Stale);
        }
        let p = view.partials.entry(s).or_insert_with(|| Partial {
            total,
            chunks: BTreeMap::new(),
        });
        if p.total != total {
            return Err((p.total, total));
        }
        if p.chunks.contains_key(&index) {
            return Ok(Outcome::Stale);
        }
        p.chunks.insert(index, keys);
        if usize::try_from(total).is_ok_and(|t| p.chunks.len() == t) {
            let chunks = view
                .partials
                .remove(&s)
                .map(|p| p.chunks)
                .expect("the partial sync was just looked up");
            let mut set: HashSet<K> = HashSet::default();
            set.reserve(chunks.values().map(Vec::len).sum());
            for keys in chunks.into_values() {
                set.extend(keys);
            }
            self.complete_sync(i, s, set);
            return Ok(Outcome::Applied);
        }
        if view.partials.len() > MAX_PARTIAL_SYNCS {
            view.partials.pop_first();
        }
        Ok(Outcome::Buffered)
    }

    /// Applies the complete sync `s` (above `k`, not received before).
    fn complete_sync(&mut self, i: usize, s: Version, mut new: HashSet<K>) {
        let view = &mut self.views[i];
        for (key, (tv, add)) in &view.touched {
            if *tv > s {
                if *add {
                    new.insert(*key);
                } else {
                    new.remove(key);
                }
            }
        }
        let old = std::mem::take(&mut view.set);
        if self.views.len() == 1 {
            self.distinct = new.len();
        } else {
            for key in &old {
                if !new.contains(key) && !self.in_others(i, key) {
                    self.distinct -= 1;
                }
            }
            for key in &new {
                if !old.contains(key) && !self.in_others(i, key) {
                    self.distinct += 1;
                }
            }
        }
        drop(old);
        let view = &mut self.views[i];
        view.set = new;
        view.k = s;
        view.above.retain(|v| *v > s);
        view.touched.retain(|_, (tv, _)| *tv > s);
        view.partials.retain(|v, _| *v > s);
        view.advance();
    }

    fn drop_views_except(&mut self, keep: Pnn) -> usize {
        let before = self.views.len();
        self.views.retain(|v| v.reporter == keep);
        let dropped = before - self.views.len();
        if dropped > 0 {
            self.distinct = self.views.first().map_or(0, |v| v.set.len());
        }
        dropped
    }

    fn stored(&self) -> usize {
        self.views
            .iter()
            .map(|v| {
                let partial: usize = v
                    .partials
                    .values()
                    .flat_map(|p| p.chunks.values())
                    .map(Vec::len)
                    .sum();
                v.set.len() + v.touched.len() + partial
            })
            .sum()
    }

    fn connections(&self) -> Vec<Conn> {
        if let [only] = self.views.as_slice() {
            return only.set.iter().map(|k| k.to_conn()).collect();
        }
        let mut seen: HashSet<K> = HashSet::default();
        for v in &self.views {
            seen.extend(v.set.iter().copied());
        }
        seen.into_iter().map(Key::to_conn).collect()
    }

    /// The keys to add to and remove from `reporter`'s view to make it `new`.
    fn diff(&self, reporter: Pnn, new: Vec<K>) -> (Vec<Conn>, Vec<Conn>) {
        let new: HashSet<K> = new.into_iter().collect();
        match self.views.iter().find(|v| v.reporter == reporter) {
            None => (new.into_iter().map(Key::to_conn).collect(), Vec::new()),
            Some(v) => (
                new.iter()
                    .filter(|k| !v.set.contains(*k))
                    .map(|k| k.to_conn())
                    .collect(),
                v.set
                    .iter()
                    .filter(|k| !new.contains(*k))
                    .map(|k| k.to_conn())
                    .collect(),
            ),
        }
    }

    /// Messages that bring a joining node to this address's state.
    fn snapshot(&self, address: IpAddr, chunk: usize, out: &mut Vec<Msg>) {
        for v in &self.views {
            let k = v.k;
            if k > Version::default() {
                let conns: Vec<Conn> = v.set.iter().map(|key| key.to_conn()).collect();
                out.extend(SyncChunk::split(v.reporter, address, k, &conns, chunk).map(Msg::Sync));
            }
            for (version, p) in &v.partials {
                for (index, keys) in &p.chunks {
                    out.push(Msg::Sync(SyncChunk {
                        reporter: v.reporter,
                        address,
                        version: *version,
                        index: *index,
                        total: p.total,
                        conns: keys.iter().map(|k| k.to_conn()).collect(),
                    }));
                }
            }
            if !v.touched.is_empty() {
                let mut ops: Vec<(Version, bool, Conn)> = v
                    .touched
                    .iter()
                    .map(|(key, (tv, add))| (*tv, *add, key.to_conn()))
                    .collect();
                ops.sort_unstable();
                let mut batch = DeltaBatcher::new(v.reporter);
                for (tv, add, c) in ops {
                    let kind = if add { OpKind::Add } else { OpKind::Remove };
                    if let Some(full) = batch.push(address, tv, kind, c) {
                        out.push(Msg::Deltas(full));
                    }
                }
                if let Some(last) = batch.finish() {
                    out.push(Msg::Deltas(last));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The table.

enum Family {
    V4(Views<K4>),
    V6(Views<K6>),
}

struct Address {
    family: Family,
    host: Option<Pnn>,
    /// When `host` last changed (or the address was first seen).
    host_since: Duration,
}

macro_rules! with_views {
    ($fam:expr, $v:ident => $body:expr) => {
        match $fam {
            Family::V4($v) => $body,
            Family::V6($v) => $body,
        }
    };
}

/// The tracked-connection table of one node: every public address's
/// connections, per reporting node. See the module docs for the merge rules.
pub struct Table {
    addrs: HashMap<IpAddr, Address>,
    grace: Duration,
}

impl Table {
    /// An empty table. Connections of an address that nobody hosts are
    /// dropped `grace` after it lost its host.
    pub fn new(grace: Duration) -> Self {
        Table {
            addrs: HashMap::default(),
            grace,
        }
    }

    fn address(&mut self, address: IpAddr, now: Duration) -> &mut Address {
        let address = address.to_canonical();
        self.addrs.entry(address).or_insert_with(|| Address {
            family: match address {
                IpAddr::V4(_) => Family::V4(Views::new()),
                IpAddr::V6(_) => Family::V6(Views::new()),
            },
            host: None,
            host_since: now,
        })
    }

    fn get(&self, address: IpAddr) -> Option<&Address> {
        self.addrs.get(&address.to_canonical())
    }

    /// Applies one add or remove by `reporter` on `address`.
    ///
    /// # Errors
    ///
    /// [`TableError::FamilyMismatch`] if the client's family is not the
    /// address's.
    pub fn apply_delta(
        &mut self,
        reporter: Pnn,
        address: IpAddr,
        version: Version,
        kind: OpKind,
        conn: Conn,
        now: Duration,
    ) -> Result<Outcome, TableError> {
        let add = kind == OpKind::Add;
        let mismatch = || TableError::FamilyMismatch {
            address,
            client: conn.client,
            public_port: conn.public_port,
        };
        match &mut self.address(address, now).family {
            Family::V4(vs) => {
                let key = K4::from_conn(&conn).ok_or_else(mismatch)?;
                Ok(vs.delta(reporter, version, add, key))
            }
            Family::V6(vs) => {
                let key = K6::from_conn(&conn).ok_or_else(mismatch)?;
                Ok(vs.delta(reporter, version, add, key))
            }
        }
    }

    /// Applies one chunk of a full sync. The sync takes effect when its last
    /// chunk arrives.
    ///
    /// # Errors
    ///
    /// [`TableError::BadChunk`], [`TableError::ChunkTotalChanged`] for an
    /// inconsistent chunk, [`TableError::FamilyMismatch`] for a connection of
    /// the wrong family (the whole chunk is then ignored).
    pub fn apply_sync(&mut self, chunk: &SyncChunk, now: Duration) -> Result<Outcome, TableError> {
        let SyncChunk {
            reporter,
            address,
            version,
            index,
            total,
            ref conns,
        } = *chunk;
        if total == 0 || index >= total || total > MAX_SYNC_CHUNKS {
            return Err(TableError::BadChunk {
                reporter,
                address,
                index,
                total,
            });
        }
        let changed = |(first, then)| TableError::ChunkTotalChanged {
            reporter,
            address,
            version,
            first,
            then,
        };
        match &mut self.address(address, now).family {
            Family::V4(vs) => {
                let keys = keys_of::<K4>(address, conns)?;
                vs.sync_chunk(reporter, version, index, total, keys)
                    .map_err(changed)
            }
            Family::V6(vs) => {
                let keys = keys_of::<K6>(address, conns)?;
                vs.sync_chunk(reporter, version, index, total, keys)
                    .map_err(changed)
            }
        }
    }

    /// Applies one replication message. [`Msg::SyncRequest`],
    /// [`Msg::SnapshotRequest`] and [`Msg::Versions`] change nothing here
    /// (the engine answers them).
    ///
    /// # Errors
    ///
    /// The first error of [`Table::apply_delta`] or [`Table::apply_sync`];
    /// the operations of a [`crate::msg::Deltas`] message before it are applied, the
    /// ones after it are still applied too (each operation stands alone).
    pub fn apply(&mut self, msg: &Msg, now: Duration) -> Result<Applied, TableError> {
        let mut out = Applied::default();
        match msg {
            Msg::Deltas(d) => {
                let mut first_err = None;
                for g in &d.groups {
                    for op in &g.ops {
                        match self
                            .apply_delta(d.reporter, g.address, op.version, op.kind, op.conn, now)
                        {
                            Ok(o) => out.count(o),
                            Err(e) => {
                                first_err.get_or_insert(e);
                            }
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e);
                }
            }
            Msg::Sync(chunk) => out.count(self.apply_sync(chunk, now)?),
            Msg::SyncRequest { .. } | Msg::SnapshotRequest { .. } | Msg::Versions { .. } => {}
        }
        Ok(out)
    }

    /// Records who hosts `address` now (`None`: nobody), as failoverd says.
    pub fn set_host(&mut self, address: IpAddr, host: Option<Pnn>, now: Duration) {
        let a = self.address(address, now);
        if a.host != host {
            a.host = host;
            a.host_since = now;
        }
    }

    /// Drops the addresses that nobody has hosted for the grace period, and
    /// the views of reporters other than the host of an address that the
    /// host has held for the grace period.
    pub fn expire(&mut self, now: Duration) -> Expired {
        let mut out = Expired::default();
        let grace = self.grace;
        self.addrs.retain(|_, a| {
            if now.saturating_sub(a.host_since) < grace {
                return true;
            }
            match a.host {
                None => {
                    out.addresses += 1;
                    false
                }
                Some(h) => {
                    out.views += with_views!(&mut a.family, vs => vs.drop_views_except(h));
                    true
                }
            }
        });
        out
    }

    /// The distinct connections of `address`, over all reporters, in no
    /// particular order.
    pub fn connections(&self, address: IpAddr) -> Vec<Conn> {
        self.get(address)
            .map(|a| with_views!(&a.family, vs => vs.connections()))
            .unwrap_or_default()
    }

    /// The connections of `address` as reported by `reporter`.
    pub fn view_connections(&self, address: IpAddr, reporter: Pnn) -> Vec<Conn> {
        self.get(address)
            .map(|a| {
                with_views!(&a.family, vs => vs
                    .views
                    .iter()
                    .filter(|v| v.reporter == reporter)
                    .flat_map(|v| v.set.iter().map(|k| k.to_conn()))
                    .collect())
            })
            .unwrap_or_default()
    }

    /// Whether `reporter`'s view of `address` holds `conn` (O(1)).
    pub fn contains(&self, address: IpAddr, reporter: Pnn, conn: Conn) -> bool {
        let Some(a) = self.get(address) else {
            return false;
        };
        match &a.family {
            Family::V4(vs) => K4::from_conn(&conn).is_some_and(|k| {
                vs.views
                    .iter()
                    .any(|v| v.reporter == reporter && v.set.contains(&k))
            }),
            Family::V6(vs) => K6::from_conn(&conn).is_some_and(|k| {
                vs.views
                    .iter()
                    .any(|v| v.reporter == reporter && v.set.contains(&k))
            }),
        }
    }

    /// What turns `reporter`'s view of `address` into exactly `conns`: the
    /// connections to add and those to remove (compared as compact keys, so
    /// a dump of a million connections costs tens of megabytes, not hundreds).
    ///
    /// # Errors
    ///
    /// [`TableError::FamilyMismatch`] for a connection of the wrong family.
    pub fn diff(
        &self,
        address: IpAddr,
        reporter: Pnn,
        conns: &[Conn],
    ) -> Result<(Vec<Conn>, Vec<Conn>), TableError> {
        let address = address.to_canonical();
        let empty;
        let family = match self.get(address) {
            Some(a) => &a.family,
            None => {
                empty = match address {
                    IpAddr::V4(_) => Family::V4(Views::new()),
                    IpAddr::V6(_) => Family::V6(Views::new()),
                };
                &empty
            }
        };
        Ok(match family {
            Family::V4(vs) => vs.diff(reporter, keys_of::<K4>(address, conns)?),
            Family::V6(vs) => vs.diff(reporter, keys_of::<K6>(address, conns)?),
        })
    }

    /// The version state of `reporter`'s view of `address`.
    pub fn view_info(&self, address: IpAddr, reporter: Pnn) -> Option<ViewInfo> {
        let a = self.get(address)?;
        with_views!(&a.family, vs => vs.views.iter().find(|v| v.reporter == reporter).map(View::info))
    }

    /// The reporters that have a view of `address`.
    pub fn reporters(&self, address: IpAddr) -> Vec<Pnn> {
        self.get(address)
            .map(|a| with_views!(&a.family, vs => vs.views.iter().map(|v| v.reporter).collect()))
            .unwrap_or_default()
    }

    /// The number of distinct connections of `address` (O(1)).
    pub fn count(&self, address: IpAddr) -> usize {
        self.get(address)
            .map_or(0, |a| with_views!(&a.family, vs => vs.distinct))
    }

    /// Every known address with its number of distinct connections.
    pub fn counts(&self) -> Vec<(IpAddr, usize)> {
        self.addrs
            .iter()
            .map(|(ip, a)| (*ip, with_views!(&a.family, vs => vs.distinct)))
            .collect()
    }

    /// The number of distinct connections over all addresses.
    pub fn len(&self) -> usize {
        self.addrs
            .values()
            .map(|a| with_views!(&a.family, vs => vs.distinct))
            .sum()
    }

    /// The keys the table stores: every view's connections (a connection
    /// reported by two nodes counts twice), the connections remembered
    /// above a gap and those of incomplete syncs. What
    /// [`crate::engine::Engine::with_max_connections`] bounds; O(views).
    pub fn stored(&self) -> usize {
        self.addrs
            .values()
            .map(|a| with_views!(&a.family, vs => vs.stored()))
            .sum()
    }

    /// Whether the table holds no connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `(reporter, address)` views that miss an operation below one they
    /// received: the shell should ask that reporter for a full sync.
    pub fn gaps(&self) -> Vec<(Pnn, IpAddr)> {
        let mut out = Vec::new();
        for (ip, a) in &self.addrs {
            with_views!(&a.family, vs => {
                for v in &vs.views {
                    if !v.above.is_empty() {
                        out.push((v.reporter, *ip));
                    }
                }
            });
        }
        out
    }

    /// The messages that bring a joining node's table to this one's (every
    /// complete view as a full sync at its version, the operations received
    /// above a gap as deltas, and the chunks of incomplete syncs), with at most `chunk` connections per
    /// sync chunk (see [`SyncChunk::max_conns`]).
    pub fn snapshot(&self, chunk: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        for (ip, a) in &self.addrs {
            with_views!(&a.family, vs => vs.snapshot(*ip, chunk, &mut out));
        }
        out
    }
}

fn keys_of<K: Key>(address: IpAddr, conns: &[Conn]) -> Result<Vec<K>, TableError> {
    conns
        .iter()
        .map(|c| {
            K::from_conn(c).ok_or(TableError::FamilyMismatch {
                address,
                client: c.client,
                public_port: c.public_port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
