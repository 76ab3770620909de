//! The async shell of conntrackd: carries inputs into the pure
//! [`Engine`] and its [`Out`] messages onto the transport.
//!
//! Inputs:
//!
//! * failoverd's `HOSTED` events (this node's public addresses) — they set
//!   the addresses this node reports on, the nftables tracked set and the
//!   conntrack event filter, and are announced to the other nodes'
//!   conntrackd ([`HOSTS`]) so that every node knows who hosts what;
//! * sock_diag dumps of the hosted addresses, at start, on each change of
//!   the hosted set and every `scan_interval`;
//! * conntrack NEW/DESTROY events of the hosted addresses (the `ct` rules of
//!   this daemon's own nftables table turn tracking on);
//! * local requests ([`GET_CONNECTIONS`], [`ADD_CONNECTIONS`],
//!   [`REMOVE_CONNECTIONS`], [`GET_COUNTS`]);
//! * replication messages of the other nodes ([`REPLICATION`]).
//!
//! After every burst of input the engine is polled, so that a change leaves
//! in the same batch as the changes that arrived with it.
//!
//! Peers: a node is *live* while its announcements arrive (one per
//! `announce_interval`, dead after three missed). The first live peer of
//! this run is asked for a snapshot of its whole table; a peer that comes
//! back (restart, healed partition) is asked for a full sync of its own
//! views, and it does the same with us.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use netlink::conntrack::{ConntrackEvent, ConntrackEvents};
use netlink::nft::{NftSet, NftTable};
use netlink::sockdiag::SockDiag;
use serde::{Deserialize, Serialize};
use transport::client::{Client, ClientError, Incoming};
use transport::msg::conntrack::{
    page_after, AddressCount, ConnectionsPage, GetConnections, GetConnectionsPage,
    TrackedConnection, ADD_CONNECTIONS, GET_CONNECTIONS, GET_CONNECTIONS_PAGE, GET_COUNTS,
    PAGE_CONNECTIONS, REMOVE_CONNECTIONS, REPLICATION,
};
use transport::proto::service::{CONNTRACKD, FAILOVERD};
use transport::proto::{
    decode_payload, encode_payload, Address, ErrorCode, Kind, Message, ALL_NODES,
};

use crate::engine::{self, Engine, Out};
use crate::msg::{self, Msg, Request, Response};
use crate::table::{Conn, Pnn};

/// failoverd's `HOSTED` event and its payload, which conntrackd follows.
pub use transport::msg::failover::{Hosted, HOSTED};
use transport::msg::failover::{IpStatus, GET_IP_STATUS};

/// Event between conntrackd instances: the sender's hosted addresses,
/// broadcast on change and every announce interval (also its liveness).
pub const HOSTS: u32 = REPLICATION + 1;

/// The payload of [`HOSTS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    /// The sender's incarnation (grows with every start).
    pub incarnation: u32,
    /// The addresses the sender hosts.
    pub hosted: Vec<IpAddr>,
}

/// Most messages handled in one burst before the engine is polled.
const BURST: usize = 4096;
/// How long the sorted list of one [`GET_CONNECTIONS_PAGE`] listing is kept
/// for its next pages (a later page after that is cut from a new list by
/// the same cursor).
const PAGE_LIST_TTL: Duration = Duration::from_secs(10);

/// The daemon's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Timings of the replication engine.
    pub engine: engine::Config,
    /// Interval of the sock_diag dump of the hosted addresses.
    pub scan_interval: Duration,
    /// The nftables table (family inet) whose `ct` rules turn connection
    /// tracking on for the hosted addresses; `None`: no kernel events.
    pub nft_table: Option<String>,
    /// Interval of the [`HOSTS`] announcement; a peer silent for three is
    /// dead.
    pub announce_interval: Duration,
    /// This run's incarnation (see [`next_incarnation`]).
    pub incarnation: u32,
    /// Addresses hosted from the start (before failoverd says anything;
    /// tests and benchmarks).
    pub initial_hosted: Vec<IpAddr>,
    /// The PNNs of the nodes file: replication from or about any other node
    /// is refused. `None`: not checked.
    pub nodes: Option<Vec<Pnn>>,
    /// The most connections the table stores from peers and registrations
    /// (`[conntrack] max_connections`, see
    /// [`Engine::with_max_connections`]).
    pub max_connections: usize,
}

impl Settings {
    /// Settings from the `[conntrack]` section of ipfailover.toml.
    pub fn from_config(c: &config::Config, incarnation: u32) -> Settings {
        Settings {
            engine: engine::Config {
                sync_interval: Duration::from_millis(c.conntrack.sync_interval_ms.max(1)),
                grace: Duration::from_millis(c.conntrack.grace_period_ms),
            },
            scan_interval: Duration::from_millis(c.conntrack.scan_interval_ms.max(100)),
            nft_table: c
                .conntrack
                .kernel_events
                .then(|| format!("{}_ct", c.failover.nft_table)),
            announce_interval: Duration::from_secs(1),
            incarnation,
            initial_hosted: Vec::new(),
            nodes: None,
            max_connections: usize::try_from(c.conntrack.max_connections).unwrap_or(usize::MAX),
        }
    }
}

/// conntrackd's own counters, reported by the STATISTICS control after the
/// transport client's.
#[derive(Debug, Default)]
struct Stats {
    /// Keys the table stores ([`crate::table::Table::stored`]), as of the
    /// last burst.
    stored: std::sync::atomic::AtomicU64,
    /// ADD_CONNECTIONS requests refused: the table is full.
    registrations_refused: transport::limit::Refusals,
    /// Replication messages refused: the table is full.
    replication_refused: transport::limit::Refusals,
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The connection to transportd failed.
    #[error("conntrackd: {0}")]
    Transport(#[from] ClientError),
    /// The connection to transportd closed.
    #[error("conntrackd: the connection to transportd closed")]
    Closed,
    /// The nftables table could not be installed.
    #[error("conntrackd: cannot install nftables table {table}: {source}")]
    Nft {
        /// The table.
        table: String,
        /// Why.
        #[source]
        source: netlink::nft::NftError,
    },
    /// The incarnation file could not be read or written.
    #[error("conntrackd: incarnation file {path}: {source}")]
    Incarnation {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The incarnation of a new run: `max(seconds since the epoch, last + 1)`,
/// with the last one kept in `path` (written back before returning).
///
/// # Errors
///
/// [`DaemonError::Incarnation`] when the file cannot be written (an
/// unreadable or garbled file counts as absent).
pub fn next_incarnation(path: &std::path::Path) -> Result<u32, DaemonError> {
    let last: u32 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secs = u32::try_from(secs).unwrap_or(u32::MAX);
    let next = secs.max(last.saturating_add(1));
    std::fs::write(path, format!("{next}\n")).map_err(|source| DaemonError::Incarnation {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(next)
}

struct Peer {
    incarnation: u32,
    hosted: Vec<IpAddr>,
    last_seen: Instant,
}

/// The sorted connections of the last paged listing.
struct PageList {
    query: GetConnections,
    conns: Vec<Conn>,
    made: Instant,
}

struct Shell {
    page_list: Option<PageList>,
    client: Client,
    pnn: Pnn,
    opts: Settings,
    engine: Engine,
    start: Instant,
    hosted: BTreeSet<IpAddr>,
    peers: HashMap<Pnn, Peer>,
    hosts_sent: Vec<(IpAddr, Option<Pnn>)>,
    snapshot_asked: bool,
    last_announce: Option<Instant>,
    sockdiag: Option<SockDiag>,
    nft: Option<NftTable>,
    events: Option<ConntrackEvents>,
    scan_due: bool,
    /// Messages made by synchronous handlers, sent with the next poll.
    pending: Vec<Out>,
    /// Connections registered with [`ADD_CONNECTIONS`], per hosted
    /// address: a dump does not remove them (they may be sockets of
    /// another host or namespace, or fake ones for `addtickle`); only
    /// [`REMOVE_CONNECTIONS`], a conntrack DESTROY or the address leaving
    /// this node does.
    registered: HashMap<IpAddr, std::collections::HashSet<Conn>>,
    /// Counters for STATISTICS.
    stats: std::sync::Arc<Stats>,
    /// Replication lag per peer (observation only).
    lag: std::sync::Arc<crate::lag::ReplicationLag>,
}

/// Runs conntrackd over `client` until `shutdown` resolves, a `SHUTDOWN`
/// control arrives or the transport closes. Subscribes to failoverd's
/// `HOSTED` events; installs (and on the way out removes) its nftables
/// table.
///
/// # Errors
///
/// [`DaemonError::Transport`] when subscribing fails, [`DaemonError::Nft`]
/// when the table cannot be installed, [`DaemonError::Closed`] when the
/// transport goes away.
pub async fn run(
    opts: Settings,
    client: Client,
    mut incoming: Incoming,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    client.subscribe(HOSTED).await?;
    client.subscribe(HOSTS).await?;
    let start = Instant::now();
    let pnn = client.pnn();
    let nft = match &opts.nft_table {
        Some(name) => {
            let t = NftTable::new(name).map_err(|source| DaemonError::Nft {
                table: name.clone(),
                source,
            })?;
            t.install()
                .tracked(&opts.initial_hosted)
                .execute()
                .await
                .map_err(|source| DaemonError::Nft {
                    table: name.clone(),
                    source,
                })?;
            Some(t)
        }
        None => None,
    };
    let events = if nft.is_some() {
        match ConntrackEvents::subscribe(&opts.initial_hosted) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(error = %e, "no conntrack events; sock_diag dumps only");
                None
            }
        }
    } else {
        None
    };
    let sockdiag = match SockDiag::new() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no sock_diag; registration only");
            None
        }
    };
    let mut engine = Engine::new(pnn, opts.incarnation, opts.engine, Duration::ZERO);
    if let Some(nodes) = &opts.nodes {
        engine = engine.with_nodes(nodes.iter().copied());
    }
    engine = engine.with_max_connections(opts.max_connections);
    let stats = std::sync::Arc::new(Stats::default());
    let lag = std::sync::Arc::new(crate::lag::ReplicationLag::default());
    {
        let stats = std::sync::Arc::clone(&stats);
        let lag = std::sync::Arc::clone(&lag);
        let limit = u64::try_from(opts.max_connections).unwrap_or(u64::MAX);
        client.set_statistics_hook(move || {
            use std::sync::atomic::Ordering::Relaxed;
            vec![
                ("connections_stored".to_owned(), stats.stored.load(Relaxed)),
                ("max_connections".to_owned(), limit),
                (
                    "registrations_refused".to_owned(),
                    stats.registrations_refused.get(),
                ),
                (
                    "replication_refused".to_owned(),
                    stats.replication_refused.get(),
                ),
            ]
            .into_iter()
            .chain(lag.snapshot(transport::msg::cluster::monotonic_ns()))
            .collect()
        });
    }
    let mut shell = Shell {
        page_list: None,
        client: client.clone(),
        pnn,
        hosted: opts
            .initial_hosted
            .iter()
            .map(|a| a.to_canonical())
            .collect(),
        opts,
        engine,
        start,
        peers: HashMap::new(),
        hosts_sent: Vec::new(),
        snapshot_asked: false,
        last_announce: None,
        sockdiag,
        nft,
        events,
        scan_due: true,
        pending: Vec::new(),
        registered: HashMap::new(),
        stats,
        lag,
    };
    tracing::info!(
        pnn,
        incarnation = shell.opts.incarnation,
        "conntrackd running"
    );
    // A (re)started conntrackd asks failoverd what this node hosts now
    // instead of waiting for its next HOSTED (every 3 s): connections
    // opened meanwhile were not tracked, so a node that died then left
    // them untickled (chaos finding 13: 2.5 s before a connection reached
    // the peers after a restart, 4 ms otherwise). HOSTED events queued
    // since are handled after, so the newer word wins. No failoverd yet
    // (it starts after us): its first HOSTED says it.
    let asked: Result<IpStatus, _> = client
        .request(
            Address::local(FAILOVERD),
            GET_IP_STATUS,
            &(),
            Duration::from_secs(1),
        )
        .await;
    match asked {
        Ok(s) => shell.set_hosted(&s.hosted).await,
        Err(e) => tracing::debug!(error = %e, "failoverd did not say what this node hosts yet"),
    }
    let result = shell.main_loop(&mut incoming, shutdown).await;
    if let Some(t) = &shell.nft {
        if let Err(e) = t.remove().execute().await {
            tracing::warn!(error = %e, table = t.name(), "cannot remove the nftables table");
        }
    }
    result
}

fn tracked(address: IpAddr, c: Conn) -> TrackedConnection {
    TrackedConnection {
        client: c.client,
        server: SocketAddr::new(address, c.public_port),
    }
}

fn canonical(c: Conn) -> Conn {
    Conn::new(
        SocketAddr::new(c.client.ip().to_canonical(), c.client.port()),
        c.public_port,
    )
}

async fn next_event(
    events: &mut Option<ConntrackEvents>,
) -> Result<ConntrackEvent, netlink::conntrack::ConntrackError> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

impl Shell {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn main_loop(
        &mut self,
        incoming: &mut Incoming,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        tokio::pin!(shutdown);
        let stop = self.client.shutdown_requested();
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scan = tokio::time::interval(self.opts.scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.update_hosts().await;
        loop {
            // Unbiased: a flood of peer messages (a snapshot being applied)
            // must not starve the kernel's events, nor the reverse.
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = &mut stop => return Ok(()),
                m = incoming.recv() => {
                    let Some(m) = m else { return Err(DaemonError::Closed) };
                    self.on_message(m).await;
                    for _ in 0..BURST {
                        match incoming.try_recv() {
                            Some(m) => self.on_message(m).await,
                            None => break,
                        }
                    }
                }
                ev = next_event(&mut self.events) => {
                    self.on_conntrack(ev);
                    for _ in 0..BURST {
                        let Some(events) = self.events.as_mut() else { break };
                        match futures::FutureExt::now_or_never(events.next()) {
                            Some(ev) => self.on_conntrack(ev),
                            None => break,
                        }
                    }
                }
                _ = scan.tick() => self.scan_due = true,
                _ = tick.tick() => self.timers().await,
            }
            if self.scan_due {
                self.scan_due = false;
                self.scan().await;
            }
            self.poll().await;
            let stored = u64::try_from(self.engine.table().stored()).unwrap_or(u64::MAX);
            self.stats
                .stored
                .store(stored, std::sync::atomic::Ordering::Relaxed);
        }
    }

    async fn poll(&mut self) {
        let now = self.now();
        let mut outs = std::mem::take(&mut self.pending);
        outs.extend(self.engine.poll(now));
        self.send(outs).await;
    }

    async fn send(&self, outs: Vec<Out>) {
        for o in outs {
            let (dst, m) = match o {
                Out::Broadcast(m) => (Address::new(ALL_NODES, CONNTRACKD), m),
                Out::To(pnn, m) => (Address::new(pnn, CONNTRACKD), m),
            };
            match msg::encode(&m) {
                Ok(bytes) => {
                    if let Err(e) = self.client.event_raw(dst, REPLICATION, bytes).await {
                        tracing::warn!(error = %e, %dst, "cannot send a replication message");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode a replication message"),
            }
        }
    }

    fn on_conntrack(&mut self, ev: Result<ConntrackEvent, netlink::conntrack::ConntrackError>) {
        let now = self.now();
        let (kind, c) = match ev {
            Ok(ConntrackEvent::New(c)) => (msg::OpKind::Add, c),
            // A FIN or RST: the connection is going away, no tickle is
            // owed to it (the DESTROY comes only after TIME_WAIT).
            Ok(ConntrackEvent::Destroy(c) | ConntrackEvent::Closing(c)) => (msg::OpKind::Remove, c),
            Ok(ConntrackEvent::Lost) => {
                tracing::info!("conntrack events lost; dumping again");
                self.scan_due = true;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "conntrack events failed; sock_diag dumps only");
                self.events = None;
                return;
            }
        };
        let conn = Conn::new(c.remote, c.local.port());
        if kind == msg::OpKind::Remove {
            if let Some(r) = self.registered.get_mut(&c.local.ip().to_canonical()) {
                r.remove(&conn);
            }
        }
        match self.engine.on_event(c.local.ip(), kind, conn, now) {
            // Sent with the poll after the burst (full batches only).
            Ok(outs) => self.pending.extend(outs),
            Err(e) => tracing::debug!(error = %e, connection = %c, "conntrack event ignored"),
        }
    }

    async fn scan(&mut self) {
        if self.hosted.is_empty() {
            return;
        }
        let Some(diag) = self.sockdiag.as_mut() else {
            return;
        };
        let locals: Vec<IpAddr> = self.hosted.iter().copied().collect();
        let found = match diag.established(&locals).execute().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "sock_diag dump failed");
                return;
            }
        };
        let mut by_addr: HashMap<IpAddr, Vec<Conn>> =
            locals.iter().map(|a| (*a, Vec::new())).collect();
        for c in found {
            if let Some(v) = by_addr.get_mut(&c.local.ip().to_canonical()) {
                v.push(Conn::new(c.remote, c.local.port()));
            }
        }
        let now = self.now();
        let mut outs = Vec::new();
        let none = std::collections::HashSet::new();
        for (address, conns) in by_addr {
            // Registered connections are kept (no dump shows them).
            let registered = self.registered.get(&address).unwrap_or(&none);
            match self.engine.on_dump_with(address, &conns, registered, now) {
                Ok(o) => outs.extend(o),
                Err(e) => tracing::warn!(error = %e, %address, "dump refused"),
            }
        }
        self.send(outs).await;
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        let dead_after = self.opts.announce_interval * 3;
        let before = self.peers.len();
        self.peers.retain(|pnn, p| {
            let live = now.duration_since(p.last_seen) < dead_after;
            if !live {
                tracing::info!(peer = pnn, "peer conntrackd silent: considered gone");
            }
            live
        });
        if self.peers.len() != before {
            self.update_hosts().await;
        }
        if self
            .last_announce
            .is_none_or(|t| now.duration_since(t) >= self.opts.announce_interval)
        {
            self.announce().await;
        }
    }

    async fn announce(&mut self) {
        self.last_announce = Some(Instant::now());
        let a = Announce {
            incarnation: self.opts.incarnation,
            hosted: self.hosted.iter().copied().collect(),
        };
        let dst = Address::new(ALL_NODES, transport::proto::BROADCAST_SERVICE);
        if let Err(e) = self.client.event(dst, HOSTS, &a).await {
            tracing::warn!(error = %e, "cannot announce the hosted addresses");
        }
    }

    /// Recomputes who hosts what and tells the engine if it changed.
    async fn update_hosts(&mut self) {
        let mut map: std::collections::BTreeMap<IpAddr, Option<Pnn>> = Default::default();
        let mut peers: Vec<(&Pnn, &Peer)> = self.peers.iter().collect();
        peers.sort_by_key(|(_, p)| p.last_seen);
        for (pnn, p) in peers {
            for a in &p.hosted {
                map.insert(a.to_canonical(), Some(*pnn));
            }
        }
        for a in &self.hosted {
            map.insert(*a, Some(self.pnn));
        }
        let hosts: Vec<(IpAddr, Option<Pnn>)> = map.into_iter().collect();
        if hosts != self.hosts_sent {
            let now = self.now();
            self.engine.set_hosts(&hosts, now);
            self.hosts_sent = hosts;
        }
    }

    async fn set_hosted(&mut self, addresses: &[IpAddr]) {
        let new: BTreeSet<IpAddr> = addresses.iter().map(|a| a.to_canonical()).collect();
        if new == self.hosted {
            return;
        }
        let added: Vec<IpAddr> = new.difference(&self.hosted).copied().collect();
        let removed: Vec<IpAddr> = self.hosted.difference(&new).copied().collect();
        tracing::info!(?added, ?removed, "hosted addresses changed");
        self.hosted = new;
        self.registered.retain(|a, _| self.hosted.contains(a));
        let list: Vec<IpAddr> = self.hosted.iter().copied().collect();
        if let Some(t) = &self.nft {
            let r = t
                .update()
                .add(NftSet::Tracked, &added)
                .remove(NftSet::Tracked, &removed)
                .execute()
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, table = t.name(), "cannot update the tracked set");
            }
        }
        if let Some(ev) = self.events.as_mut() {
            ev.watch(&list);
        }
        self.update_hosts().await;
        self.announce().await;
        self.scan_due = true;
    }

    async fn on_message(&mut self, m: Message) {
        let h = m.header;
        match (h.kind, h.opcode) {
            // Only this node's own failoverd says what this node hosts;
            // another node, or another local client, cannot rewrite it.
            (Kind::Event, HOSTED) if h.src.pnn != self.pnn || h.src.service != FAILOVERD => {
                tracing::warn!(from = %h.src, "HOSTED not from this node's failoverd: ignored");
            }
            (Kind::Event, HOSTED) => match decode_payload::<Hosted>(&m.payload) {
                Ok(hosted) => self.set_hosted(&hosted.addresses).await,
                Err(e) => tracing::warn!(error = %e, from = %h.src, "bad HOSTED event"),
            },
            // Replication and announcements come only from the other
            // nodes' conntrackd: another service of a node (a root tool
            // registered under any name) cannot add connections to the
            // table nor say what a node hosts (#14).
            (Kind::Event, HOSTS | REPLICATION) if h.src.service != CONNTRACKD => {
                static IGNORED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = IGNORED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n % 1000 == 0 {
                    tracing::warn!(from = %h.src, opcode = h.opcode, ignored = n + 1, "replication not from a conntrackd: ignored");
                }
            }
            (Kind::Event, HOSTS) if h.src.pnn != self.pnn => {
                match decode_payload::<Announce>(&m.payload) {
                    Ok(a) => self.on_announce(h.src.pnn, a).await,
                    Err(e) => tracing::warn!(error = %e, from = %h.src, "bad HOSTS event"),
                }
            }
            (Kind::Event, REPLICATION) if h.src.pnn != self.pnn => {
                match msg::decode::<Msg>(&m.payload) {
                    Ok(msg) => {
                        let now = self.now();
                        self.lag.message(
                            h.src.pnn,
                            &msg,
                            self.engine.table(),
                            transport::msg::cluster::monotonic_ns(),
                        );
                        match self.engine.on_peer(h.src.pnn, &msg, now) {
                            Ok(outs) => self.send(outs).await,
                            Err(e @ engine::EngineError::Full { .. }) => {
                                let refused = &self.stats.replication_refused;
                                if refused.note() {
                                    tracing::warn!(error = %e, from = %h.src, refused = refused.get(), "replication refused");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, from = %h.src, "replication refused");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, from = %h.src, "bad replication message"),
                }
            }
            (Kind::Event, _) => {}
            (Kind::Request, op) => {
                let r = self.on_request(op, &m).await;
                let sent = match r {
                    Ok(bytes) => self.client.reply_raw(&m, Ok(bytes)).await,
                    Err((code, text)) => self.client.reply_error(&m, code, text).await,
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "cannot answer a request");
                }
            }
            _ => {}
        }
    }

    async fn on_announce(&mut self, from: Pnn, a: Announce) {
        if self.opts.nodes.as_ref().is_some_and(|n| !n.contains(&from)) {
            tracing::warn!(
                peer = from,
                "HOSTS from a node not in the nodes file: ignored"
            );
            return;
        }
        let now = Instant::now();
        let hosted: Vec<IpAddr> = a.hosted.iter().map(|x| x.to_canonical()).collect();
        let (new_contact, changed) = match self.peers.get_mut(&from) {
            Some(p) => {
                let restarted = p.incarnation != a.incarnation;
                let changed = p.hosted != hosted;
                p.incarnation = a.incarnation;
                p.hosted = hosted;
                p.last_seen = now;
                (restarted, changed)
            }
            None => {
                self.peers.insert(
                    from,
                    Peer {
                        incarnation: a.incarnation,
                        hosted,
                        last_seen: now,
                    },
                );
                (true, true)
            }
        };
        if new_contact {
            let m = if self.snapshot_asked {
                Msg::SyncRequest {
                    from: self.pnn,
                    address: None,
                }
            } else {
                self.snapshot_asked = true;
                Msg::SnapshotRequest { from: self.pnn }
            };
            tracing::info!(peer = from, "new peer conntrackd: asking for its table");
            self.send(vec![Out::To(from, m)]).await;
            // Let it learn our hosted set at once.
            self.announce().await;
        }
        if changed {
            self.update_hosts().await;
        }
    }

    /// The connections of `q.address` (to `q.port` only if given), sorted
    /// in [`TrackedConnection`]'s order; with those of a takeover's first
    /// dump that the node's own view lost ([`Engine::ghosts`]), so that a
    /// take's tickles reach their clients.
    fn sorted_connections(&self, q: GetConnections) -> Vec<Conn> {
        let address = q.address.to_canonical();
        let mut conns = self.engine.table().connections(address);
        conns.extend_from_slice(self.engine.ghosts(address, self.now()));
        if let Some(p) = q.port {
            conns.retain(|c| c.public_port == p);
        }
        conns.sort_unstable();
        conns.dedup();
        conns
    }

    /// One page of a listing: the first page takes a sorted snapshot that
    /// the following pages (same query, within [`PAGE_LIST_TTL`]) are cut
    /// from, so a listing of a million connections sorts once.
    fn page(&mut self, q: GetConnectionsPage) -> ConnectionsPage {
        let query = GetConnections {
            address: q.query.address.to_canonical(),
            port: q.query.port,
        };
        let fresh = self
            .page_list
            .as_ref()
            .is_some_and(|l| l.query == query && l.made.elapsed() < PAGE_LIST_TTL);
        if q.after.is_none() || !fresh {
            self.page_list = Some(PageList {
                query,
                conns: self.sorted_connections(query),
                made: Instant::now(),
            });
        }
        let Some(list) = &self.page_list else {
            return ConnectionsPage {
                conns: Vec::new(),
                more: false,
            };
        };
        // Within one address, `Conn`'s order (client, port) is
        // `TrackedConnection`'s (client, (address, port)).
        let after = q.after.map(|t| Conn::new(t.client, t.server.port()));
        let (page, more) = page_after(&list.conns, after, PAGE_CONNECTIONS);
        let conns = page.iter().map(|c| tracked(query.address, *c)).collect();
        if !more {
            self.page_list = None;
        }
        ConnectionsPage { conns, more }
    }

    async fn on_request(&mut self, op: u32, m: &Message) -> Result<Vec<u8>, (ErrorCode, String)> {
        let bad = |e: transport::proto::PayloadError| (ErrorCode::BadRequest, e.to_string());
        let enc = |r: Result<Vec<u8>, transport::proto::PayloadError>| {
            r.map_err(|e| (ErrorCode::Internal, e.to_string()))
        };
        match op {
            GET_CONNECTIONS => {
                let q: GetConnections = decode_payload(&m.payload).map_err(bad)?;
                let address = q.address.to_canonical();
                let list: Vec<TrackedConnection> = self
                    .sorted_connections(q)
                    .into_iter()
                    .map(|c| tracked(address, c))
                    .collect();
                encode_payload(&list).map_err(|e| {
                    (
                        ErrorCode::Internal,
                        format!(
                            "{} connections of {address} do not fit one message ({e}): \
                             ask with GET_CONNECTIONS_PAGE",
                            list.len()
                        ),
                    )
                })
            }
            GET_CONNECTIONS_PAGE => {
                let q: GetConnectionsPage = decode_payload(&m.payload).map_err(bad)?;
                enc(encode_payload(&self.page(q)))
            }
            transport::msg::conntrack::SET_NODES => {
                let nodes: Vec<Pnn> = decode_payload(&m.payload).map_err(bad)?;
                let src = m.header.src;
                if src.pnn != self.pnn || src.service != transport::proto::service::CLUSTERD {
                    return Err((
                        ErrorCode::Refused,
                        format!("only this node's clusterd may set the nodes, not {src}"),
                    ));
                }
                tracing::info!(nodes = ?nodes, "node list reloaded");
                self.engine.set_nodes(nodes.iter().copied());
                self.opts.nodes = Some(nodes);
                enc(encode_payload(&()))
            }
            transport::msg::conntrack::RELEASING => {
                let addresses: Vec<IpAddr> = decode_payload(&m.payload).map_err(bad)?;
                let src = m.header.src;
                if src.pnn != self.pnn || src.service != FAILOVERD {
                    return Err((
                        ErrorCode::Refused,
                        format!("only this node's failoverd may release addresses, not {src}"),
                    ));
                }
                let gone: BTreeSet<IpAddr> = addresses.iter().map(|a| a.to_canonical()).collect();
                let kept: Vec<IpAddr> = self.hosted.difference(&gone).copied().collect();
                self.set_hosted(&kept).await;
                enc(encode_payload(&()))
            }
            GET_COUNTS => {
                let mut counts: Vec<AddressCount> = self
                    .engine
                    .table()
                    .counts()
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(address, n)| AddressCount {
                        address,
                        connections: u64::try_from(n).unwrap_or(u64::MAX),
                    })
                    .collect();
                // A take asks for the list of the addresses with a count:
                // those with ghosts must have one.
                for address in self.engine.ghost_addresses(self.now()) {
                    let n = self
                        .sorted_connections(GetConnections {
                            address,
                            port: None,
                        })
                        .len();
                    counts.retain(|c| c.address != address);
                    counts.push(AddressCount {
                        address,
                        connections: u64::try_from(n).unwrap_or(u64::MAX),
                    });
                }
                counts.sort_unstable_by_key(|c| c.address);
                enc(encode_payload(&counts))
            }
            ADD_CONNECTIONS | REMOVE_CONNECTIONS => {
                let list: Vec<TrackedConnection> = decode_payload(&m.payload).map_err(bad)?;
                if op == ADD_CONNECTIONS {
                    if let Err(e) = self.engine.room_for(list.len()) {
                        let refused = &self.stats.registrations_refused;
                        if refused.note() {
                            tracing::warn!(error = %e, from = %m.header.src, refused = refused.get(), "registration refused");
                        }
                        return Err((ErrorCode::Refused, e.to_string()));
                    }
                }
                let now = self.now();
                let mut errors = Vec::new();
                let mut outs = Vec::new();
                for t in list {
                    let address = t.server.ip().to_canonical();
                    let conn = Conn::new(t.client, t.server.port());
                    let req = if op == ADD_CONNECTIONS {
                        Request::Add { address, conn }
                    } else {
                        Request::Remove { address, conn }
                    };
                    let (resps, o) = self.engine.on_request(&req, now);
                    outs.extend(o);
                    let mut ok = true;
                    for r in resps {
                        if let Response::Error(e) = r {
                            errors.push(e);
                            ok = false;
                        }
                    }
                    if ok {
                        let conn = canonical(conn);
                        if op == ADD_CONNECTIONS {
                            self.registered.entry(address).or_default().insert(conn);
                        } else if let Some(r) = self.registered.get_mut(&address) {
                            r.remove(&conn);
                        }
                    }
                }
                self.send(outs).await;
                if errors.is_empty() {
                    enc(encode_payload(&()))
                } else {
                    errors.dedup();
                    Err((ErrorCode::BadRequest, errors.join("; ")))
                }
            }
            _ => Err((
                ErrorCode::UnknownOpcode,
                format!("conntrackd has no request {op:#010x}"),
            )),
        }
    }
}
