//! The whole of one node's conntrackd as a pure state machine: what it learns
//! (dumps, events, registrations), what peers send, and what it must send
//! back, with time as an explicit `now`. The async shell only carries inputs
//! in and [`Out`] messages out (like smoltcp's `Interface::poll`).
//!
//! Rules it implements:
//!
//! * This node reports only on the addresses it hosts (as failoverd says,
//!   [`Engine::set_hosts`]); its own connections are its view in the table,
//!   so nothing is stored twice.
//! * Every change is applied locally and broadcast, batched: the shell calls
//!   [`Engine::poll`] soon after input (e.g. every few milliseconds) to flush.
//! * A sock_diag dump is compared with this node's view; only the
//!   differences are sent (a missed event is repaired, nothing else moves).
//! * Every `sync_interval`, each hosted address whose view changed since its
//!   last sync is sent as a full sync (CTDB's TickleUpdateInterval); a peer
//!   that sees a gap in this node's versions asks for a sync
//!   ([`Msg::SyncRequest`], at most once per `sync_interval` per view).
//! * Every `sync_interval`, each node also broadcasts the versions of its own
//!   views ([`Msg::Versions`], a few bytes per address); a node that is
//!   behind on one asks for a sync. This repairs what no gap reveals: a lost
//!   last message, a lost periodic sync, a partition that healed.
//! * A joining node asks one peer for a snapshot ([`Msg::SnapshotRequest`]).
//!   A peer is served a snapshot (or a full sync of every hosted address) at
//!   most once per [`SNAPSHOT_EVERY`]: a confused or hostile peer cannot make
//!   this node send its whole table in a loop.
//! * With the nodes file given ([`Engine::with_nodes`]), messages from a node
//!   that is not in it, or about a reporter that is not in it, are refused:
//!   no view is ever created for a made-up reporter.
//! * When the address moves away, this node's view stays until the table's
//!   grace period expires, so the new host can tickle those clients.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use foldhash::{HashMap, HashSet};

use crate::msg::{Msg, OpKind, Request, Response, MAX_MSG_BYTES, MAX_VERSIONS};
use crate::reporter::Reporter;
use crate::table::{Conn, Pnn, Table, TableError, Version};

/// Least time between two snapshots (or two whole-table sync requests)
/// served to one peer. A restarting node asks once per start.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Timings of one node's conntrackd.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Full sync of changed views, and the least time between two sync
    /// requests for one view (CTDB's TickleUpdateInterval is 20 s).
    pub sync_interval: Duration,
    /// How long the connections of an address that nobody hosts (or a former
    /// host's view) are kept.
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync_interval: Duration::from_secs(20),
            grace: Duration::from_secs(60),
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// To the conntrackd of every other node.
    Broadcast(Msg),
    /// To the conntrackd of one node.
    To(Pnn, Msg),
}

/// Errors of a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// Registration for an address this node does not host (CTDB refuses it
    /// too).
    #[error("public address {address} is not hosted by node {pnn}")]
    NotHosted {
        /// The address.
        address: IpAddr,
        /// This node.
        pnn: Pnn,
    },
    /// The table refused the connection.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The table holds its limit of connections ([`Engine::with_max_connections`]).
    #[error("the connection table is full: {stored} connections stored, the limit is {limit} (max_connections)")]
    Full {
        /// Connections stored.
        stored: usize,
        /// The limit.
        limit: usize,
    },
    /// A message from, or about, a node that is not in the nodes file.
    #[error("message from pnn {from} names pnn {pnn}, which is not in the nodes file")]
    UnknownNode {
        /// The sender.
        from: Pnn,
        /// The node it names (the sender itself or a reporter).
        pnn: Pnn,
    },
}

/// One node's conntrackd, pure.
pub struct Engine {
    pnn: Pnn,
    incarnation: u32,
    config: Config,
    table: Table,
    reporter: Reporter,
    hosted: HashSet<IpAddr>,
    /// Hosted addresses changed since their last full sync.
    dirty: BTreeSet<IpAddr>,
    /// Addresses taken over since their last dump: the next dump is sent as
    /// a full sync (this node's old view may have expired elsewhere).
    fresh: HashSet<IpAddr>,
    /// Per address, the connections this node's own view held when the
    /// address was taken over (or first reported in this incarnation) that
    /// its first dump no longer showed, and when: see [`Engine::ghosts`].
    ghosts: HashMap<IpAddr, (Duration, Vec<Conn>)>,
    last_sync: Duration,
    /// When a sync was last asked of a view with a gap.
    asked: HashMap<(Pnn, IpAddr), Duration>,
    /// When each peer was last served a snapshot or a whole-table sync.
    served: HashMap<Pnn, Duration>,
    /// The nodes of the nodes file (`None`: anyone, for tests).
    nodes: Option<HashSet<Pnn>>,
    /// The most connections stored from peers and registrations.
    max_connections: usize,
}

/// How long [`Engine::ghosts`] lists a connection after the take: longer
/// than failoverd's tickle rounds (`tickle_count` announcements,
/// `garp_interval` apart: 3 × 1 s by default).
pub const GHOST_KEEP: Duration = Duration::from_secs(10);

/// Default of [`Engine::with_max_connections`] (`[conntrack]
/// max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_000_000;

impl Engine {
    /// The conntrackd of node `pnn`; `incarnation` must grow with every start
    /// (see [`Reporter::new`]).
    pub fn new(pnn: Pnn, incarnation: u32, config: Config, now: Duration) -> Self {
        Engine {
            pnn,
            incarnation,
            config,
            table: Table::new(config.grace),
            reporter: Reporter::new(pnn, incarnation),
            hosted: HashSet::default(),
            dirty: BTreeSet::new(),
            fresh: HashSet::default(),
            ghosts: HashMap::default(),
            last_sync: now,
            asked: HashMap::default(),
            served: HashMap::default(),
            nodes: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Stores at most about `n` connections ([`Table::stored`]) learned
    /// from peers and registrations: a replication message that adds
    /// while the table holds `n` is refused ([`EngineError::Full`]), a
    /// sync chunk is refused when it would take the table over `n` plus
    /// the view it replaces, and a registration (see
    /// [`Engine::room_for`]) when it does not fit. This node's own
    /// connections (dumps, conntrack events) are the kernel's and are
    /// not refused. So the table stays below `2 n` keys, whatever a
    /// peer or a client sends.
    #[must_use]
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Whether `more` registered connections fit under the limit.
    ///
    /// # Errors
    ///
    /// [`EngineError::Full`] when they do not.
    pub fn room_for(&self, more: usize) -> Result<(), EngineError> {
        let stored = self.table.stored();
        if stored.saturating_add(more) > self.max_connections {
            return Err(EngineError::Full {
                stored,
                limit: self.max_connections,
            });
        }
        Ok(())
    }

    /// Accepts messages only from and about the nodes `pnns` (the live
    /// lines of the nodes file).
    #[must_use]
    pub fn with_nodes(mut self, pnns: impl IntoIterator<Item = Pnn>) -> Self {
        self.nodes = Some(pnns.into_iter().collect());
        self
    }

    /// Replaces the nodes of [`Engine::with_nodes`] (`reloadnodes`).
    pub fn set_nodes(&mut self, pnns: impl IntoIterator<Item = Pnn>) {
        self.nodes = Some(pnns.into_iter().collect());
    }

    fn check_node(&self, from: Pnn, pnn: Pnn) -> Result<(), EngineError> {
        match &self.nodes {
            Some(n) if !n.contains(&pnn) => Err(EngineError::UnknownNode { from, pnn }),
            _ => Ok(()),
        }
    }

    /// Whether `peer` may be served a whole table now (and notes it).
    fn may_serve(&mut self, peer: Pnn, now: Duration) -> bool {
        let due = self
            .served
            .get(&peer)
            .is_none_or(|t| now.saturating_sub(*t) >= SNAPSHOT_EVERY);
        if due {
            self.served.insert(peer, now);
        } else {
            tracing::info!(
                peer,
                "whole-table request again within {SNAPSHOT_EVERY:?}: ignored"
            );
        }
        due
    }

    /// Uses at most `chunk` connections per sync chunk (tests).
    #[must_use]
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.reporter = Reporter::new(self.pnn, self.incarnation).with_chunk(chunk);
        self
    }

    /// The table (for requests the shell answers itself, and tests).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Whether this node hosts `address`.
    pub fn hosts(&self, address: IpAddr) -> bool {
        self.hosted.contains(&address.to_canonical())
    }

    /// Applies this node's own messages to its table (operations already
    /// applied one by one are stale there) and broadcasts them.
    fn local(&mut self, msgs: Vec<Msg>, now: Duration, out: &mut Vec<Out>) {
        for m in msgs {
            // Our own messages are well-formed by construction; a family
            // mismatch was refused before they were made.
            if let Err(e) = self.table.apply(&m, now) {
                tracing::warn!(error = %e, "own message refused by the table");
            }
            out.push(Out::Broadcast(m));
        }
    }

    /// The hosts of every public address, as failoverd publishes them (an
    /// address missing from the list is hosted by nobody). Returns nothing to
    /// send now: the shell dumps the newly hosted
    /// addresses ([`Engine::on_dump`]).
    pub fn set_hosts(&mut self, hosts: &[(IpAddr, Option<Pnn>)], now: Duration) {
        let before = std::mem::take(&mut self.hosted);
        for (address, host) in hosts {
            let address = address.to_canonical();
            self.table.set_host(address, *host, now);
            if *host == Some(self.pnn) {
                self.hosted.insert(address);
                if !before.contains(&address) {
                    self.fresh.insert(address);
                }
            }
        }
        // Addresses missing from the list are hosted by nobody.
        let listed: HashSet<IpAddr> = hosts.iter().map(|(a, _)| a.to_canonical()).collect();
        for (address, _) in self.table.counts() {
            if !listed.contains(&address) {
                self.table.set_host(address, None, now);
            }
        }
        self.dirty.retain(|a| self.hosted.contains(a));
        self.fresh.retain(|a| self.hosted.contains(a));
    }

    fn change(
        &mut self,
        address: IpAddr,
        kind: OpKind,
        conn: Conn,
        now: Duration,
        out: &mut Vec<Out>,
    ) {
        let (v, msgs) = self.reporter.change(address, kind, conn);
        self.dirty.insert(address);
        self.local(msgs, now, out);
        // Into the local table at once, so that the next event or dump is
        // compared with it; the batch carries it to the peers later.
        if let Err(e) = self
            .table
            .apply_delta(self.pnn, address, v, kind, conn, now)
        {
            tracing::warn!(error = %e, "own change refused by the table");
        }
    }

    /// A sock_diag dump of the established connections on `address`: sends
    /// what differs from this node's view. Ignored if `address` is not
    /// hosted here.
    ///
    /// # Errors
    ///
    /// [`EngineError::Table`] if a connection's family is not the address's
    /// (nothing is sent then).
    pub fn on_dump(
        &mut self,
        address: IpAddr,
        conns: &[Conn],
        now: Duration,
    ) -> Result<Vec<Out>, EngineError> {
        self.on_dump_with(address, conns, &std::collections::HashSet::new(), now)
    }

    /// [`Engine::on_dump`] for a node that also holds `registered`
    /// connections on `address` (explicit registrations, which no dump
    /// shows): they are never removed by the dump, and a full report
    /// includes them. The cost follows the dump and the view, not a merge
    /// of the two lists (a million registrations made every dump a sort and
    /// a diff of a million).
    ///
    /// # Errors
    ///
    /// As [`Engine::on_dump`].
    pub fn on_dump_with<S: std::hash::BuildHasher>(
        &mut self,
        address: IpAddr,
        conns: &[Conn],
        registered: &std::collections::HashSet<Conn, S>,
        now: Duration,
    ) -> Result<Vec<Out>, EngineError> {
        let address = address.to_canonical();
        let mut out = Vec::new();
        if !self.hosts(address) {
            return Ok(out);
        }
        let (add, mut remove) = self.table.diff(address, self.pnn, conns)?;
        if self.fresh.remove(&address) || !self.reporter.knows(address) {
            // First report since the takeover or in this incarnation: a full
            // sync, so that a view left by an earlier run (relayed back by a
            // peer) is replaced and peers that expired ours start afresh.
            let mut all: Vec<Conn> = conns.iter().map(|c| canonical(*c)).collect();
            all.extend(registered.iter().copied());
            all.sort_unstable();
            all.dedup();
            self.note_ghosts(address, &all, now);
            let msgs = self.reporter.sync(address, &all);
            self.local(msgs, now, &mut out);
            return Ok(out);
        }
        remove.retain(|c| !registered.contains(c));
        for c in remove {
            self.change(address, OpKind::Remove, c, now, &mut out);
        }
        for c in add {
            self.change(address, OpKind::Add, c, now, &mut out);
        }
        Ok(out)
    }

    /// Keeps, for [`GHOST_KEEP`], the connections of this node's own view
    /// of `address` that the sync replacing it with `all` takes out.
    fn note_ghosts(&mut self, address: IpAddr, all: &[Conn], now: Duration) {
        let gone: Vec<Conn> = self
            .table
            .view_connections(address, self.pnn)
            .into_iter()
            .filter(|c| all.binary_search(c).is_err())
            .collect();
        if gone.is_empty() {
            self.ghosts.remove(&address);
        } else {
            self.ghosts.insert(address, (now, gone));
        }
    }

    /// The connections of `address` that this node's own view held when
    /// the node took the address over and that its first dump after the
    /// take did not show, for [`GHOST_KEEP`] after that dump.
    ///
    /// Their sockets ended while the address was not watched here: a drop
    /// at a lease's end removes the addresses before it resets their
    /// sockets, and those resets cannot leave. Their clients were not told;
    /// if the same node takes the address back, the take's tickles must
    /// reach them — but the dump has taken them out of the table (and of
    /// every node's copy) by the time the take asks for the list. A tickle
    /// to a client whose connection is really gone costs one segment: the
    /// client answers it with a reset.
    pub fn ghosts(&self, address: IpAddr, now: Duration) -> &[Conn] {
        match self.ghosts.get(&address.to_canonical()) {
            Some((at, list)) if now.saturating_sub(*at) < GHOST_KEEP => list,
            _ => &[],
        }
    }

    /// The addresses with [`Engine::ghosts`] at `now`.
    pub fn ghost_addresses(&self, now: Duration) -> Vec<IpAddr> {
        self.ghosts
            .iter()
            .filter(|(_, (at, _))| now.saturating_sub(*at) < GHOST_KEEP)
            .map(|(a, _)| *a)
            .collect()
    }

    /// A conntrack event (new or destroyed connection) on `address`.
    /// Ignored if `address` is not hosted here or nothing changes.
    ///
    /// # Errors
    ///
    /// [`EngineError::Table`] for a connection of the wrong family.
    pub fn on_event(
        &mut self,
        address: IpAddr,
        kind: OpKind,
        conn: Conn,
        now: Duration,
    ) -> Result<Vec<Out>, EngineError> {
        let address = address.to_canonical();
        let mut out = Vec::new();
        if !self.hosts(address) {
            return Ok(out);
        }
        check_family(address, &[conn])?;
        let conn = canonical(conn);
        let present = self.table.contains(address, self.pnn, conn);
        if present != (kind == OpKind::Add) {
            self.change(address, kind, conn, now, &mut out);
        }
        Ok(out)
    }

    /// A request from a local client; returns the responses (several if a
    /// list exceeds one message) and what to send to peers.
    pub fn on_request(&mut self, req: &Request, now: Duration) -> (Vec<Response>, Vec<Out>) {
        let mut out = Vec::new();
        let resp = match req {
            Request::Connections { address, port } => {
                let mut conns = self.table.connections(*address);
                if let Some(p) = port {
                    conns.retain(|c| c.public_port == *p);
                }
                conns.sort_unstable();
                // Same worst case per connection as a sync chunk.
                let per = crate::msg::SyncChunk::max_conns(*address);
                let mut chunks: Vec<Response> = conns
                    .chunks(per.max(1))
                    .map(|c| Response::Connections {
                        conns: c.to_vec(),
                        more: true,
                    })
                    .collect();
                match chunks.last_mut() {
                    Some(Response::Connections { more, .. }) => *more = false,
                    _ => chunks.push(Response::Connections {
                        conns: Vec::new(),
                        more: false,
                    }),
                }
                return (chunks, out);
            }
            Request::Counts => {
                let mut counts: Vec<(IpAddr, u64)> = self
                    .table
                    .counts()
                    .into_iter()
                    .map(|(a, n)| (a, u64::try_from(n).unwrap_or(u64::MAX)))
                    .collect();
                counts.sort_unstable();
                // 26 bytes at most per entry.
                counts.truncate(MAX_MSG_BYTES / 26 - 1);
                Response::Counts(counts)
            }
            Request::Add { address, conn } | Request::Remove { address, conn } => {
                let kind = if matches!(req, Request::Add { .. }) {
                    OpKind::Add
                } else {
                    OpKind::Remove
                };
                let address = address.to_canonical();
                if !self.hosts(address) {
                    let e = EngineError::NotHosted {
                        address,
                        pnn: self.pnn,
                    };
                    return (vec![Response::Error(e.to_string())], out);
                }
                match self.on_event(address, kind, *conn, now) {
                    Ok(o) => {
                        out = o;
                        Response::Done
                    }
                    Err(e) => Response::Error(e.to_string()),
                }
            }
        };
        (vec![resp], out)
    }

    /// A message from the conntrackd of node `from`.
    ///
    /// # Errors
    ///
    /// [`EngineError::Table`] for an invalid message (the valid parts of a
    /// delta batch are still applied).
    pub fn on_peer(
        &mut self,
        from: Pnn,
        msg: &Msg,
        now: Duration,
    ) -> Result<Vec<Out>, EngineError> {
        let mut out = Vec::new();
        self.check_node(from, from)?;
        match msg {
            Msg::Deltas(d) => {
                self.check_node(from, d.reporter)?;
                let adds = d
                    .groups
                    .iter()
                    .any(|g| g.ops.iter().any(|op| op.kind == OpKind::Add));
                if adds {
                    self.room_for(1)?;
                }
                self.table.apply(msg, now)?;
            }
            Msg::Sync(chunk) => {
                self.check_node(from, chunk.reporter)?;
                let replaced = self
                    .table
                    .view_info(chunk.address, chunk.reporter)
                    .map_or(0, |i| i.len);
                self.room_for(chunk.conns.len().saturating_sub(replaced))?;
                self.table.apply(msg, now)?;
            }
            Msg::SyncRequest { address, .. } => {
                let targets: Vec<IpAddr> = match address {
                    Some(a) if self.hosts(*a) => vec![a.to_canonical()],
                    Some(_) => Vec::new(),
                    None if self.may_serve(from, now) => self.hosted.iter().copied().collect(),
                    None => Vec::new(),
                };
                for a in targets {
                    self.full_sync(a, now, &mut out);
                }
            }
            Msg::Versions { reporter, versions } => {
                self.check_node(from, *reporter)?;
                for (address, v) in versions {
                    let address = address.to_canonical();
                    let behind = self
                        .table
                        .view_info(address, *reporter)
                        .map_or(*v > Version::default(), |i| i.complete_to < *v);
                    if behind && *reporter != self.pnn {
                        self.ask_sync(*reporter, address, now, &mut out);
                    }
                }
            }
            Msg::SnapshotRequest { .. } if self.may_serve(from, now) => {
                out.extend(
                    self.table
                        .snapshot(usize::MAX)
                        .into_iter()
                        .map(|m| Out::To(from, m)),
                );
            }
            Msg::SnapshotRequest { .. } => {}
        }
        Ok(out)
    }

    /// Asks `reporter` for a sync of `address`, at most once per sync
    /// interval.
    fn ask_sync(&mut self, reporter: Pnn, address: IpAddr, now: Duration, out: &mut Vec<Out>) {
        let due = self
            .asked
            .get(&(reporter, address))
            .is_none_or(|t| now.saturating_sub(*t) >= self.config.sync_interval);
        if due {
            self.asked.insert((reporter, address), now);
            out.push(Out::To(
                reporter,
                Msg::SyncRequest {
                    from: self.pnn,
                    address: Some(address),
                },
            ));
        }
    }

    fn full_sync(&mut self, address: IpAddr, now: Duration, out: &mut Vec<Out>) {
        let list: Vec<Conn> = self.table.view_connections(address, self.pnn);
        let msgs = self.reporter.sync(address, &list);
        self.dirty.remove(&address);
        self.local(msgs, now, out);
    }

    /// What a joining or restarted node sends first: a snapshot request to
    /// one peer (the shell picks a live one).
    pub fn join(&self, peer: Pnn) -> Out {
        Out::To(peer, Msg::SnapshotRequest { from: self.pnn })
    }

    /// Timers: flushes the pending batch, sends the periodic syncs, asks for
    /// syncs of views with gaps, and expires old connections.
    pub fn poll(&mut self, now: Duration) -> Vec<Out> {
        let mut out = Vec::new();
        if let Some(m) = self.reporter.flush() {
            self.local(vec![m], now, &mut out);
        }
        if now.saturating_sub(self.last_sync) >= self.config.sync_interval {
            self.last_sync = now;
            let dirty: Vec<IpAddr> = std::mem::take(&mut self.dirty).into_iter().collect();
            for a in dirty {
                self.full_sync(a, now, &mut out);
            }
            let mut hosted: Vec<IpAddr> = self.hosted.iter().copied().collect();
            hosted.sort_unstable();
            let versions: Vec<(IpAddr, Version)> = hosted
                .into_iter()
                .filter_map(|a| {
                    self.table
                        .view_info(a, self.pnn)
                        .map(|i| (a, i.complete_to))
                })
                .collect();
            for chunk in versions.chunks(MAX_VERSIONS) {
                out.push(Out::Broadcast(Msg::Versions {
                    reporter: self.pnn,
                    versions: chunk.to_vec(),
                }));
            }
        }
        for (reporter, address) in self.table.gaps() {
            if reporter != self.pnn {
                self.ask_sync(reporter, address, now, &mut out);
            }
        }
        let interval = self.config.sync_interval;
        self.asked.retain(|_, t| now.saturating_sub(*t) < interval);
        self.ghosts
            .retain(|_, (at, _)| now.saturating_sub(*at) < GHOST_KEEP);
        let expired = self.table.expire(now);
        if expired.addresses + expired.views > 0 {
            tracing::debug!(
                addresses = expired.addresses,
                views = expired.views,
                "expired connections"
            );
        }
        out
    }
}

fn canonical(c: Conn) -> Conn {
    Conn::new(
        std::net::SocketAddr::new(c.client.ip().to_canonical(), c.client.port()),
        c.public_port,
    )
}

fn check_family(address: IpAddr, conns: &[Conn]) -> Result<(), TableError> {
    for c in conns {
        if c.client.ip().to_canonical().is_ipv4() != address.is_ipv4() {
            return Err(TableError::FamilyMismatch {
                address,
                client: c.client,
                public_port: c.public_port,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
