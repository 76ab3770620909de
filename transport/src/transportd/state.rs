//! The routing table and the routing decision, shared by every connection
//! task under one `std::sync::Mutex` (never held across an `.await`).
//!
//! [`RoutingState::route`] reads and rewrites the header in place and copies the
//! frame into the destination's [`Outbox`]: no payload decoding, no
//! allocation. Control requests to service 0 (registration, subscriptions,
//! the common controls) and error replies are the only paths that allocate.
//!
//! Rules: the one decision in [`crate::routing`], shared with the
//! in-process router; besides, from a local client `src` becomes (own pnn,
//! the client's service id), from a peer `src_pnn` becomes that peer's pnn
//! (no spoofing), and a client's Requests to the daemons are budgeted.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::controls::{self, ControlContext, LogLevelHook};
use crate::proto::control::{
    self as ctl, PeerInfo, PeerList, RegisterReply, RegisterRequest, ServiceInfo, ServiceList,
    Statistics, SubscribeRequest,
};
use crate::proto::service::{self, EPHEMERAL_BASE, TRANSPORT};
use crate::proto::{
    decode_payload, encode_payload, Address, ErrorCode, FrameRef, Header, HeaderRepr, Kind,
    Message, RemoteError, BROADCAST_SERVICE, HEADER_LEN, LOCAL,
};
use crate::routing::{decide, Decision, Local, Source, Tables};

use super::buffers::{Outbox, PushError};
use super::peercred::Privilege;

/// A hasher for small integer keys (service ids, pnns, opcodes): the key
/// itself, mixed once. Keys are chosen by local clients and peers, which are
/// trusted (authenticated), so no HashDoS protection is needed.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n);
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Where a frame entered this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A registered local client with this service id.
    Local(u16),
    /// The authenticated link to this peer.
    Peer(u32),
    /// transportd itself (replies to controls, errors).
    Internal,
}

/// Whether a Request from `src_service` to `dst_service` counts against the
/// sender's budget: a client's (ephemeral id) Requests to a daemon.
fn budgeted(kind: Kind, dst_service: u16, src_service: u16) -> bool {
    kind == Kind::Request
        && (1..EPHEMERAL_BASE).contains(&dst_service)
        && src_service >= EPHEMERAL_BASE
}

impl Tables for RoutingState {
    fn has_service(&self, id: u16) -> bool {
        self.services.contains_key(&id)
    }

    fn peer_connected(&self, pnn: u32) -> bool {
        RoutingState::peer_connected(self, pnn)
    }
}

/// Where [`RoutingState::route_fast`] sends a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// A registered local service.
    Service(u16),
    /// The link to this peer.
    Peer(u32),
}

/// Consecutive frames of one read buffer for the same destination, queued
/// together by [`RoutingState::push_run`] (per-frame locking and copying was the
/// largest cost of routing small frames).
///
/// Readers route frames in place at offsets of their buffer and consume
/// them only after [`Run::finish`].
#[derive(Debug, Default)]
pub struct Run {
    dest: Option<Dest>,
    start: usize,
    end: usize,
    frames: u64,
}

impl Run {
    /// The frame at `data[at..at + len]` goes to `dest`: extends the run,
    /// or pushes it and starts another.
    pub fn add(&mut self, st: &mut RoutingState, data: &[u8], dest: Dest, at: usize, len: usize) {
        if self.dest == Some(dest) && self.end == at {
            self.end += len;
            self.frames += 1;
            return;
        }
        self.finish(st, data);
        *self = Run {
            dest: Some(dest),
            start: at,
            end: at + len,
            frames: 1,
        };
    }

    /// Pushes the pending run (before a frame that takes the slow path,
    /// and at the end of a batch).
    pub fn finish(&mut self, st: &mut RoutingState, data: &[u8]) {
        if let Some(dest) = self.dest.take() {
            st.push_run(dest, self.frames, &data[self.start..self.end]);
        }
    }
}

/// Requests the group's members may send at once (every connection of one
/// uid together), before [`MEMBER_RATE`] applies: a member cannot queue
/// more than this in front of a daemon's heartbeats (the frames of one
/// daemon's socket are read in order).
pub const MEMBER_BURST: f64 = 512.0;
/// Requests per second the group's members of one uid may send after the
/// burst; over it they are refused by transportd (`requests_throttled`).
pub const MEMBER_RATE: f64 = 2000.0;

/// Requests one client that is not a daemon (a service registered under
/// another name than the daemons', local or on another node) may send at
/// once to this node's daemons, before [`CLIENT_RATE`] applies.
pub const CLIENT_BURST: f64 = 512.0;
/// Requests per second such a client may send to this node's daemons after
/// the burst; over it they are refused (`requests_throttled`).
pub const CLIENT_RATE: f64 = 2000.0;

/// A token bucket (one per member uid, one per client).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token if one is left after refilling at `rate` up to
    /// `burst` (a new bucket starts full).
    fn take(slot: Option<&mut Bucket>, now: Instant, burst: f64, rate: f64) -> (bool, Bucket) {
        let mut b = slot.map_or(
            Bucket {
                tokens: burst,
                at: now,
            },
            |b| *b,
        );
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            (true, b)
        } else {
            (false, b)
        }
    }

    /// Would it be full by now (the same as no bucket)?
    fn full(&self, now: Instant, burst: f64, rate: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= burst
    }
}

/// Counters reported by STATISTICS.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Frames received from local clients.
    pub local_in: u64,
    /// Frames received from peers.
    pub peer_in: u64,
    /// Frames queued to local clients.
    pub delivered: u64,
    /// Frames queued to peers.
    pub forwarded: u64,
    /// Frames for a service that is not registered.
    pub unknown_service: u64,
    /// Frames for a node that is not connected.
    pub unreachable: u64,
    /// Frames dropped because a destination's queue was full or closing.
    pub queue_drops: u64,
    /// Frames from a peer not addressed to this node.
    pub misrouted: u64,
    /// Control requests answered by transportd.
    pub controls: u64,
    /// Local connections accepted.
    pub clients_accepted: u64,
    /// Local connections refused by the credential check.
    pub clients_refused: u64,
    /// Local connections refused because transportd's connection limits
    /// were reached (in total, or of the connecting uid).
    pub clients_over_limit: u64,
    /// Registrations of a well-known service name by a client that is not
    /// root nor transportd's user (refused).
    pub registrations_refused: u64,
    /// Frames from a client (group member) that only daemons may send
    /// (refused; see [`super::access`]).
    pub frames_refused: u64,
    /// Requests of the group's members refused because their uid sent
    /// them faster than [`MEMBER_RATE`] (after a burst of
    /// [`MEMBER_BURST`]).
    pub requests_throttled: u64,
    /// Local connections closed for a bad frame.
    pub bad_frames: u64,
    /// Peer links established.
    pub links_up: u64,
    /// Peer handshakes that failed (wrong key, unknown node, bad address),
    /// on either side; includes the next two.
    pub handshake_failures: u64,
    /// Accepted handshakes whose hello the responder refused: a key holder
    /// naming a PNN that is not its address's (or this node's, or not in
    /// the nodes file), or an older link version.
    pub handshakes_refused: u64,
    /// Accepted handshakes with a valid first message but no valid key
    /// confirmation: replays of a sniffed first message (or an initiator
    /// that went away mid-handshake). They never replace a link.
    pub handshakes_unconfirmed: u64,
    /// Peer links closed on a decryption/authentication failure.
    pub decrypt_failures: u64,
}

struct ServiceEntry {
    name: String,
    conn: u64,
    outbox: Arc<Outbox>,
    subscriptions: Vec<u32>,
}

struct PeerSlot {
    addr: SocketAddr,
    link: Option<(u64, Arc<Outbox>)>,
    since: Instant,
    /// Frames and bytes from and to this peer, for STATISTICS.
    traffic: Traffic,
}

/// Frames and bytes in and out, for the per-peer and per-service
/// STATISTICS counters (`peerN_frames_in`, `service_NAME_bytes_out`, ...).
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
}

impl Traffic {
    fn count_in(&mut self, len: usize) {
        self.frames_in += 1;
        self.bytes_in += u64::try_from(len).unwrap_or(u64::MAX);
    }

    fn count_out(&mut self, len: usize) {
        self.frames_out += 1;
        self.bytes_out += u64::try_from(len).unwrap_or(u64::MAX);
    }

    fn push(&self, prefix: &str, out: &mut Vec<(String, u64)>) {
        out.push((format!("{prefix}_frames_in"), self.frames_in));
        out.push((format!("{prefix}_bytes_in"), self.bytes_in));
        out.push((format!("{prefix}_frames_out"), self.frames_out));
        out.push((format!("{prefix}_bytes_out"), self.bytes_out));
    }
}

/// The per-service traffic slot of a service id: the well-known services
/// (transport, clusterd, failoverd, conntrackd, masterd) by id, every
/// other (ephemeral: the CLI, file servers) in the last one.
const SERVICE_SLOTS: usize = 6;

fn service_slot(id: u16) -> usize {
    usize::from(id).min(SERVICE_SLOTS - 1)
}

fn service_slot_name(slot: usize) -> &'static str {
    u16::try_from(slot)
        .ok()
        .filter(|_| slot < SERVICE_SLOTS - 1)
        .and_then(crate::proto::service::well_known_name)
        .unwrap_or("clients")
}

/// The routing table of one transportd.
pub struct RoutingState {
    pnn: u32,
    services: IdMap<u16, ServiceEntry>,
    subscribers: IdMap<u32, Vec<u16>>,
    next_ephemeral: u16,
    peers: IdMap<u32, PeerSlot>,
    clients: u32,
    /// Counters for STATISTICS.
    pub counters: Counters,
    /// Frames and bytes from each local service (in) and delivered to it
    /// (out), by [`service_slot`].
    service_traffic: [Traffic; SERVICE_SLOTS],
    log_level: Option<LogLevelHook>,
    shutdown: bool,
    started: Instant,
    /// Outboxes to flush at the end of the current batch (capacity reused).
    to_flush: Vec<Arc<Outbox>>,
    /// The request budget of each member uid.
    buckets: HashMap<u32, Bucket>,
    /// The request budget of each client (pnn, service) for this node's
    /// daemons.
    client_buckets: HashMap<(u32, u16), Bucket>,
    /// The counters at the last `STATISTICS_RESET` (empty: never).
    stats_base: Vec<(String, u64)>,
    /// The node list in force and the peer port, for `SET_NODES` (none:
    /// refused).
    nodes: Option<(NodesWatch, u16)>,
}

/// The node list of a transportd: the peer links follow it, and a
/// `SET_NODES` control replaces it.
pub type NodesWatch = Arc<tokio::sync::watch::Sender<crate::nodes::Nodes>>;

impl RoutingState {
    /// An empty table for node `pnn` with these peers.
    pub fn new(
        pnn: u32,
        peers: impl IntoIterator<Item = (u32, SocketAddr)>,
        log_level: Option<LogLevelHook>,
        now: Instant,
    ) -> Self {
        RoutingState {
            pnn,
            services: IdMap::default(),
            subscribers: IdMap::default(),
            next_ephemeral: EPHEMERAL_BASE,
            peers: peers
                .into_iter()
                .filter(|(p, _)| *p != pnn)
                .map(|(p, addr)| {
                    (
                        p,
                        PeerSlot {
                            addr,
                            link: None,
                            since: now,
                            traffic: Traffic::default(),
                        },
                    )
                })
                .collect(),
            clients: 0,
            counters: Counters::default(),
            service_traffic: [Traffic::default(); SERVICE_SLOTS],
            log_level,
            shutdown: false,
            started: now,
            to_flush: Vec::with_capacity(64),
            buckets: HashMap::new(),
            client_buckets: HashMap::new(),
            stats_base: Vec::new(),
            nodes: None,
        }
    }

    /// Lets `SET_NODES` replace the node list `nodes` (peers on `port`).
    pub fn follow_nodes(&mut self, nodes: NodesWatch, port: u16) {
        self.nodes = Some((nodes, port));
    }

    /// `SET_NODES`: checks the new list against the one in force, then
    /// adds and removes peer slots (a removed peer's link is closed) and
    /// publishes the list, whose watchers dial the new peers.
    fn set_nodes(&mut self, list: ctl::NodeList) -> Result<(), RemoteError> {
        let refused = |m: String| RemoteError::new(ErrorCode::Refused, m);
        let Some((watch, port)) = self.nodes.clone() else {
            return Err(refused(
                "this transport has no nodes file to reload".to_string(),
            ));
        };
        let new = crate::nodes::Nodes::from_addrs(list.addrs);
        let current = watch.borrow().clone();
        if let Err(errors) = current.check_reload(&new) {
            let words: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(refused(words.join("; ")));
        }
        if !new.is_live(self.pnn) {
            return Err(refused(format!(
                "node {} is this node: it cannot be deleted",
                self.pnn
            )));
        }
        let now = Instant::now();
        let live: Vec<(u32, std::net::IpAddr)> =
            new.iter().filter(|(p, _)| *p != self.pnn).collect();
        let gone: Vec<u32> = self
            .peers
            .keys()
            .copied()
            .filter(|p| !live.iter().any(|(q, _)| q == p))
            .collect();
        for p in gone {
            if let Some(slot) = self.peers.remove(&p) {
                if let Some((_, outbox)) = slot.link {
                    outbox.close();
                }
            }
        }
        for (p, addr) in live {
            self.peers.entry(p).or_insert_with(|| PeerSlot {
                addr: SocketAddr::new(addr, port),
                link: None,
                since: now,
                traffic: Traffic::default(),
            });
        }
        watch.send_replace(new);
        Ok(())
    }

    /// May the group member `uid` send one more request now? Takes a
    /// token of its bucket ([`MEMBER_BURST`], refilled at
    /// [`MEMBER_RATE`]); false (counted) when it is empty.
    pub fn member_may_request(&mut self, uid: u32, now: Instant) -> bool {
        if self.buckets.len() > 4096 {
            self.buckets
                .retain(|_, b| !b.full(now, MEMBER_BURST, MEMBER_RATE));
        }
        let (ok, b) = Bucket::take(self.buckets.get_mut(&uid), now, MEMBER_BURST, MEMBER_RATE);
        self.buckets.insert(uid, b);
        if !ok {
            self.counters.requests_throttled += 1;
        }
        ok
    }

    /// May the client `src` (not a daemon) send one more request to this
    /// node's daemons now? As [`RoutingState::member_may_request`], per client,
    /// with [`CLIENT_BURST`] and [`CLIENT_RATE`].
    pub fn client_may_request(&mut self, src: (u32, u16), now: Instant) -> bool {
        if self.client_buckets.len() > 4096 {
            self.client_buckets
                .retain(|_, b| !b.full(now, CLIENT_BURST, CLIENT_RATE));
        }
        let (ok, b) = Bucket::take(
            self.client_buckets.get_mut(&src),
            now,
            CLIENT_BURST,
            CLIENT_RATE,
        );
        self.client_buckets.insert(src, b);
        if !ok {
            self.counters.requests_throttled += 1;
        }
        ok
    }

    /// Writes (or hands to their writer tasks) the frames routed since the
    /// last call. Readers call it after each batch of frames.
    pub fn flush(&mut self) {
        for o in self.to_flush.drain(..) {
            o.flush();
        }
    }

    /// This node's pnn.
    pub fn pnn(&self) -> u32 {
        self.pnn
    }

    /// Has a SHUTDOWN control been received? (Cleared by the caller's read.)
    pub fn take_shutdown(&mut self) -> bool {
        std::mem::take(&mut self.shutdown)
    }

    /// A local connection was accepted (counts clients for PING replies).
    pub fn client_connected(&mut self) {
        self.clients += 1;
        self.counters.clients_accepted += 1;
    }

    /// A local connection ended; drops its registration if it had one.
    pub fn client_disconnected(&mut self, conn: u64, service: Option<u16>) {
        self.clients = self.clients.saturating_sub(1);
        if let Some(id) = service {
            if self.services.get(&id).is_some_and(|e| e.conn == conn) {
                if let Some(entry) = self.services.remove(&id) {
                    for op in entry.subscriptions {
                        self.unsubscribe_one(id, op);
                    }
                }
            }
        }
    }

    /// Registers a local connection under `name`; a well-known name only
    /// for a [`Privilege::Daemon`] (root or transportd's user).
    ///
    /// # Errors
    /// `Refused` for a well-known name asked by a client or already
    /// registered, or when no ephemeral id is left; `BadRequest` for an
    /// empty or reserved name.
    pub fn register(
        &mut self,
        name: &str,
        conn: u64,
        outbox: Arc<Outbox>,
        privilege: Privilege,
    ) -> Result<u16, RemoteError> {
        service::check_name(name)?;
        let id = match service::well_known_id(name) {
            Some(_) if privilege != Privilege::Daemon => {
                self.counters.registrations_refused += 1;
                return Err(RemoteError::new(
                    ErrorCode::Refused,
                    format!(
                        "service name {name} is reserved for the daemons: only root or \
                         transportd's own user may register it"
                    ),
                ));
            }
            Some(id) => {
                if self.services.contains_key(&id) {
                    return Err(RemoteError::new(
                        ErrorCode::Refused,
                        format!("service {name} is already registered on node {}", self.pnn),
                    ));
                }
                id
            }
            None => self.ephemeral_id().ok_or_else(|| {
                RemoteError::new(ErrorCode::Refused, "no ephemeral service id left")
            })?,
        };
        self.services.insert(
            id,
            ServiceEntry {
                name: name.to_owned(),
                conn,
                outbox,
                subscriptions: Vec::new(),
            },
        );
        Ok(id)
    }

    fn ephemeral_id(&mut self) -> Option<u16> {
        let span = BROADCAST_SERVICE - EPHEMERAL_BASE;
        for _ in 0..span {
            let id = self.next_ephemeral;
            self.next_ephemeral = if id + 1 == BROADCAST_SERVICE {
                EPHEMERAL_BASE
            } else {
                id + 1
            };
            if !self.services.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    fn unsubscribe_one(&mut self, id: u16, opcode: u32) {
        if let Some(list) = self.subscribers.get_mut(&opcode) {
            list.retain(|s| *s != id);
            if list.is_empty() {
                self.subscribers.remove(&opcode);
            }
        }
    }

    /// A peer link is up: frames for `pnn` go to `outbox` (replacing, and
    /// closing, an older link).
    pub fn peer_up(&mut self, pnn: u32, link: u64, outbox: Arc<Outbox>, now: Instant) {
        if let Some(slot) = self.peers.get_mut(&pnn) {
            if let Some((_, old)) = slot.link.replace((link, outbox)) {
                old.close();
            }
            slot.since = now;
            self.counters.links_up += 1;
        } else {
            outbox.close();
        }
    }

    /// A peer link ended (ignored if a newer link replaced it).
    pub fn peer_down(&mut self, pnn: u32, link: u64, now: Instant) {
        if let Some(slot) = self.peers.get_mut(&pnn) {
            if slot.link.as_ref().is_some_and(|(id, _)| *id == link) {
                slot.link = None;
                slot.since = now;
            }
        }
    }

    /// Is a link to `pnn` up?
    pub fn peer_connected(&self, pnn: u32) -> bool {
        self.peers.get(&pnn).is_some_and(|s| s.link.is_some())
    }

    /// The counters as a STATISTICS reply, counted from the last
    /// `STATISTICS_RESET`.
    pub fn statistics(&self) -> Statistics {
        self.raw_statistics().since(&self.stats_base)
    }

    /// The counters since transportd started.
    fn raw_statistics(&self) -> Statistics {
        let c = &self.counters;
        let connected = self.peers.values().filter(|p| p.link.is_some()).count();
        let counters = [
            ("local_in", c.local_in),
            ("peer_in", c.peer_in),
            ("delivered", c.delivered),
            ("forwarded", c.forwarded),
            ("unknown_service", c.unknown_service),
            ("unreachable", c.unreachable),
            ("queue_drops", c.queue_drops),
            ("misrouted", c.misrouted),
            ("controls", c.controls),
            ("clients", u64::from(self.clients)),
            ("clients_accepted", c.clients_accepted),
            ("clients_refused", c.clients_refused),
            ("clients_over_limit", c.clients_over_limit),
            ("registrations_refused", c.registrations_refused),
            ("frames_refused", c.frames_refused),
            ("requests_throttled", c.requests_throttled),
            ("bad_frames", c.bad_frames),
            ("links_up", c.links_up),
            (
                "peers_connected",
                u64::try_from(connected).unwrap_or(u64::MAX),
            ),
            ("handshake_failures", c.handshake_failures),
            ("handshakes_refused", c.handshakes_refused),
            ("handshakes_unconfirmed", c.handshakes_unconfirmed),
            ("decrypt_failures", c.decrypt_failures),
            ("allocations", alloccount::allocations()),
            (
                "uptime_ms",
                u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            ),
        ];
        let mut counters: Vec<(String, u64)> = counters
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        let mut peers: Vec<(&u32, &PeerSlot)> = self.peers.iter().collect();
        peers.sort_unstable_by_key(|(p, _)| **p);
        for (pnn, slot) in peers {
            slot.traffic.push(&format!("peer{pnn}"), &mut counters);
        }
        for (i, t) in self.service_traffic.iter().enumerate() {
            t.push(&format!("service_{}", service_slot_name(i)), &mut counters);
        }
        Statistics { counters }
    }

    /// Counts a frame of `len` bytes in from `origin` and stamps its
    /// source as the authenticated one (a local client's service id, a
    /// peer link's PNN).
    fn stamp_origin(&mut self, origin: Origin, len: usize, header: &mut Header<&mut [u8]>) {
        match origin {
            Origin::Local(id) => {
                self.counters.local_in += 1;
                self.service_traffic[service_slot(id)].count_in(len);
                header.set_src_pnn(self.pnn);
                header.set_src_service(id);
            }
            Origin::Peer(pnn) => {
                self.counters.peer_in += 1;
                if let Some(slot) = self.peers.get_mut(&pnn) {
                    slot.traffic.count_in(len);
                }
                header.set_src_pnn(pnn);
            }
            Origin::Internal => {}
        }
    }

    /// Routes one complete, header-checked frame (`frame` is exactly the
    /// frame's bytes); rewrites the header in place.
    pub fn route(&mut self, origin: Origin, frame: &mut [u8]) {
        let len = frame.len();
        let Ok(mut header) = Header::new_checked(&mut *frame) else {
            return; // callers pass whole checked frames
        };
        self.stamp_origin(origin, len, &mut header);
        let source = match origin {
            Origin::Peer(_) => Source::Peer,
            Origin::Local(_) | Origin::Internal => Source::Local,
        };
        let dst = Address::new(header.dst_pnn(), header.dst_service());
        let kind = header.kind();
        let decision = decide(self.pnn, source, kind, dst, &*self);
        if dst.pnn == LOCAL {
            header.set_dst_pnn(self.pnn);
        }
        match decision {
            Decision::Local(local) => {
                // A client's requests to the daemons are budgeted (#14 item
                // 2): the frames of a daemon's socket are read in order, and
                // thousands queued there delay its heartbeats and leases.
                let src = (header.src_pnn(), header.src_service());
                if budgeted(kind, dst.service, src.1)
                    && origin != Origin::Internal
                    && !self.client_may_request(src, Instant::now())
                {
                    self.error_to_sender(
                        frame,
                        ErrorCode::Refused,
                        format!(
                            "transportd: client {}:{:#06x} sends requests to the daemons faster \
                             than {CLIENT_RATE} per second (after a burst of {CLIENT_BURST}): \
                             refused; try again",
                            src.0, src.1
                        ),
                    );
                    return;
                }
                self.deliver_local(frame, local, true);
            }
            Decision::Everywhere { forward, local } => {
                if forward {
                    self.forward_all(frame);
                }
                self.deliver_local(frame, local, false);
            }
            Decision::Peer(pnn) | Decision::Unreachable(pnn) => self.forward(pnn, frame),
            Decision::Misrouted => self.counters.misrouted += 1,
            Decision::Drop => {} // checked frames have a known kind
        }
    }

    /// The common case of [`RoutingState::route`], without queueing: a frame for
    /// one registered local service (not transportd, not a broadcast, not
    /// a budgeted request) or, from a local client, for one connected
    /// peer. Rewrites and counts it as `route` would and returns where it
    /// goes; the caller queues consecutive frames for the same destination
    /// together ([`Run`]). `None` (nothing changed): call `route` instead,
    /// after pushing the pending run (frames keep their order).
    pub fn route_fast(&mut self, origin: Origin, frame: &mut [u8]) -> Option<Dest> {
        let len = frame.len();
        let mut header = Header::new_checked(&mut *frame).ok()?;
        let src_service = match origin {
            Origin::Local(id) => id,
            Origin::Peer(_) => header.src_service(),
            Origin::Internal => return None,
        };
        let source = match origin {
            Origin::Local(_) => Source::Local,
            Origin::Peer(_) | Origin::Internal => Source::Peer,
        };
        let dst = Address::new(header.dst_pnn(), header.dst_service());
        let dest = match decide(self.pnn, source, header.kind(), dst, &*self) {
            Decision::Local(Local::Service(id)) if !budgeted(header.kind(), id, src_service) => {
                Dest::Service(id)
            }
            Decision::Peer(pnn) => Dest::Peer(pnn),
            _ => return None,
        };
        self.stamp_origin(origin, len, &mut header);
        if dst.pnn == LOCAL {
            header.set_dst_pnn(self.pnn);
        }
        Some(dest)
    }

    /// Queues `frames` whole frames (`bytes`, routed by
    /// [`RoutingState::route_fast`] to `dest`) in one push: one lock and one copy
    /// (or none: a large run into an idle queue is written at once), and
    /// counts them once.
    pub fn push_run(&mut self, dest: Dest, frames: u64, bytes: &[u8]) {
        let (outbox, traffic) = match dest {
            Dest::Service(id) => (
                self.services.get(&id).map(|e| &e.outbox),
                Some(&mut self.service_traffic[service_slot(id)]),
            ),
            Dest::Peer(pnn) => match self.peers.get_mut(&pnn) {
                Some(slot) => (slot.link.as_ref().map(|(_, o)| o), Some(&mut slot.traffic)),
                None => (None, None),
            },
        };
        if outbox.is_none_or(|o| push_or_close(o, bytes, &mut self.to_flush).is_err()) {
            self.counters.queue_drops += frames;
            return;
        }
        if let Some(t) = traffic {
            t.frames_out += frames;
            t.bytes_out += u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        }
        match dest {
            Dest::Service(_) => self.counters.delivered += frames,
            Dest::Peer(_) => self.counters.forwarded += frames,
        }
    }

    fn forward(&mut self, pnn: u32, frame: &[u8]) {
        let pushed = self
            .peers
            .get(&pnn)
            .and_then(|s| s.link.as_ref())
            .map(|(_, o)| push_or_close(o, frame, &mut self.to_flush));
        match pushed {
            Some(Ok(())) => {
                self.counters.forwarded += 1;
                if let Some(slot) = self.peers.get_mut(&pnn) {
                    slot.traffic.count_out(frame.len());
                }
            }
            Some(Err(())) => self.counters.queue_drops += 1,
            None => {
                self.counters.unreachable += 1;
                self.error_to_sender(
                    frame,
                    ErrorCode::NodeUnreachable,
                    format!("node {pnn} is not connected to node {}", self.pnn),
                );
            }
        }
    }

    fn forward_all(&mut self, frame: &[u8]) {
        let mut sent = 0;
        let mut drops = 0;
        for slot in self.peers.values_mut() {
            if let Some((_, o)) = &slot.link {
                match o.push(&[frame]) {
                    Ok(()) => {
                        sent += 1;
                        slot.traffic.count_out(frame.len());
                    }
                    Err(e) => {
                        drops += 1;
                        if e == PushError::Full {
                            o.close();
                        }
                    }
                }
            }
        }
        self.counters.forwarded += sent;
        self.counters.queue_drops += drops;
    }

    /// Delivers on this node as decided; `answer` sends an error to a
    /// Request that finds no service (not done for ALL_NODES frames, whose
    /// other replies must not race with an error).
    fn deliver_local(&mut self, frame: &mut [u8], local: Local, answer: bool) {
        let Ok(header) = Header::new_checked(&*frame) else {
            return;
        };
        let kind = header.kind();
        let opcode = header.opcode();
        match local {
            Local::Control => {
                if kind == Kind::Request {
                    self.control(frame);
                }
            }
            Local::BadBroadcast { answer } => {
                if answer {
                    self.error_to_sender(
                        frame,
                        ErrorCode::BadRequest,
                        "only events may be broadcast".to_owned(),
                    );
                }
            }
            Local::Subscribers => {
                let Some(subs) = self.subscribers.get(&opcode) else {
                    return;
                };
                let mut delivered = 0;
                let mut drops = 0;
                for id in subs {
                    if let Some(entry) = self.services.get(id) {
                        match push_or_close(&entry.outbox, frame, &mut self.to_flush) {
                            Ok(()) => {
                                delivered += 1;
                                self.service_traffic[service_slot(*id)].count_out(frame.len());
                            }
                            Err(()) => drops += 1,
                        }
                    }
                }
                self.counters.delivered += delivered;
                self.counters.queue_drops += drops;
            }
            Local::Service(service) | Local::UnknownService { service, .. } => {
                let pushed = self
                    .services
                    .get(&service)
                    .map(|e| push_or_close(&e.outbox, frame, &mut self.to_flush));
                match pushed {
                    Some(Ok(())) => {
                        self.counters.delivered += 1;
                        self.service_traffic[service_slot(service)].count_out(frame.len());
                    }
                    Some(Err(())) => self.counters.queue_drops += 1,
                    None => {
                        self.counters.unknown_service += 1;
                        if answer {
                            self.error_to_sender(
                                frame,
                                ErrorCode::UnknownService,
                                format!("no service {service:#06x} on node {}", self.pnn),
                            );
                        }
                    }
                }
            }
        }
    }

    /// Refuses a frame of local client `id` that only daemons may send:
    /// counts it and answers a Request with a `Refused` error (`reason`).
    pub fn refuse_local(&mut self, id: u16, frame: &mut [u8], reason: &str) {
        self.counters.local_in += 1;
        self.counters.frames_refused += 1;
        let Ok(mut header) = Header::new_checked(&mut *frame) else {
            return;
        };
        header.set_src_pnn(self.pnn);
        header.set_src_service(id);
        self.error_to_sender(frame, ErrorCode::Refused, format!("transportd: {reason}"));
    }

    /// Sends an Error frame back to the sender of `frame` if it is a Request.
    fn error_to_sender(&mut self, frame: &[u8], code: ErrorCode, msg: String) {
        let Ok(header) = Header::new_checked(frame) else {
            return;
        };
        if header.kind() != Kind::Request {
            return;
        }
        let Ok(repr) = HeaderRepr::parse(&header) else {
            return;
        };
        let err = RemoteError::new(code, msg);
        self.send_internal(&controls::error_message(&repr, &err));
    }

    fn send_internal(&mut self, msg: &Message) {
        if let Ok(mut bytes) = msg.to_bytes() {
            self.route(Origin::Internal, &mut bytes);
        }
    }

    /// Answers a Request to service 0.
    fn control(&mut self, frame: &[u8]) {
        let Ok((req, _)) = FrameRef::decode_prefix(frame) else {
            return;
        };
        self.counters.controls += 1;
        let opcode = req.header.opcode;
        let result = if ctl::is_common(opcode) {
            let stats = self.statistics();
            let stats_fn = move || stats.clone();
            let reset_asked = std::cell::Cell::new(false);
            let reset = || reset_asked.set(true);
            let ctx = ControlContext {
                name: "transport",
                clients: self.clients,
                statistics: &stats_fn,
                log_level: self.log_level.as_ref(),
                reset_statistics: Some(&reset),
            };
            let answer = controls::answer_common(opcode, req.payload, &ctx);
            if answer.shutdown {
                self.shutdown = true;
            }
            if reset_asked.get() {
                self.stats_base = self.raw_statistics().counters;
            }
            answer.result
        } else {
            self.transport_control(&req)
        };
        self.send_internal(&controls::answer_message(&req.header, result));
    }

    fn transport_control(&mut self, req: &FrameRef<'_>) -> Result<Vec<u8>, RemoteError> {
        let src = req.header.src;
        let local_service = (src.pnn == self.pnn)
            .then_some(src.service)
            .filter(|id| self.services.contains_key(id));
        let bad =
            |e: crate::proto::PayloadError| RemoteError::new(ErrorCode::BadRequest, e.to_string());
        let enc = |r: Result<Vec<u8>, crate::proto::PayloadError>| {
            r.map_err(|e| RemoteError::new(ErrorCode::Internal, e.to_string()))
        };
        match req.header.opcode {
            ctl::SUBSCRIBE | ctl::UNSUBSCRIBE => {
                let sub: SubscribeRequest = decode_payload(req.payload).map_err(bad)?;
                let Some(id) = local_service else {
                    return Err(RemoteError::new(
                        ErrorCode::Refused,
                        format!("{src} is not a local service of node {}", self.pnn),
                    ));
                };
                if req.header.opcode == ctl::SUBSCRIBE {
                    let entry = self.services.get_mut(&id);
                    if let Some(entry) = entry {
                        if !entry.subscriptions.contains(&sub.opcode) {
                            entry.subscriptions.push(sub.opcode);
                            self.subscribers.entry(sub.opcode).or_default().push(id);
                        }
                    }
                } else {
                    if let Some(entry) = self.services.get_mut(&id) {
                        entry.subscriptions.retain(|o| *o != sub.opcode);
                    }
                    self.unsubscribe_one(id, sub.opcode);
                }
                enc(encode_payload(&()))
            }
            ctl::LIST_SERVICES => {
                decode_payload::<()>(req.payload).map_err(bad)?;
                let mut services: Vec<ServiceInfo> = self
                    .services
                    .iter()
                    .map(|(id, e)| ServiceInfo {
                        id: *id,
                        name: e.name.clone(),
                        subscriptions: e.subscriptions.clone(),
                    })
                    .collect();
                services.sort_by_key(|s| s.id);
                enc(encode_payload(&ServiceList {
                    pnn: self.pnn,
                    services,
                }))
            }
            ctl::LIST_PEERS => {
                decode_payload::<()>(req.payload).map_err(bad)?;
                let mut peers: Vec<PeerInfo> = self
                    .peers
                    .iter()
                    .map(|(pnn, s)| PeerInfo {
                        pnn: *pnn,
                        address: s.addr.to_string(),
                        connected: s.link.is_some(),
                        since_ms: u64::try_from(s.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                    })
                    .collect();
                peers.sort_by_key(|p| p.pnn);
                enc(encode_payload(&PeerList {
                    pnn: self.pnn,
                    peers,
                }))
            }
            ctl::REGISTER => Err(RemoteError::new(
                ErrorCode::Refused,
                "REGISTER must be the first frame of a connection, and only once",
            )),
            ctl::SET_NODES => {
                let list: ctl::NodeList = decode_payload(req.payload).map_err(bad)?;
                if local_service != Some(service::CLUSTERD) {
                    return Err(RemoteError::new(
                        ErrorCode::Refused,
                        format!("only this node's clusterd may set the nodes, not {src}"),
                    ));
                }
                self.set_nodes(list)?;
                tracing::info!(
                    pnn = self.pnn,
                    peers = self.peers.len(),
                    "node list reloaded"
                );
                enc(encode_payload(&()))
            }
            other => Err(RemoteError::new(
                ErrorCode::UnknownOpcode,
                format!("transport does not handle opcode {other:#010x}"),
            )),
        }
    }
}

/// Queues `frame` (scheduling a flush at the end of the batch if the queue
/// was idle); a full queue closes that connection (its reader does not keep
/// up, and must not hold everyone else up).
fn push_or_close(
    outbox: &Arc<Outbox>,
    frame: &[u8],
    to_flush: &mut Vec<Arc<Outbox>>,
) -> Result<(), ()> {
    match outbox.push_deferred(frame) {
        Ok(idle) => {
            if idle {
                to_flush.push(Arc::clone(outbox));
            }
            Ok(())
        }
        Err(e) => {
            if e == PushError::Full {
                outbox.close();
            }
            Err(())
        }
    }
}

/// Handles the first frame of a local connection, which must be a REGISTER
/// request to service 0. Queues the reply on `outbox` and returns the
/// service id, or `Err(reason)` to close the connection.
///
/// # Errors
/// A reason to log when the frame is not a valid registration.
pub fn register_first(
    state: &mut RoutingState,
    frame: &[u8],
    conn: u64,
    outbox: &Arc<Outbox>,
    privilege: Privilege,
) -> Result<u16, String> {
    let (req, _) = FrameRef::decode_prefix(frame).map_err(|e| e.to_string())?;
    let h = req.header;
    if h.kind != Kind::Request || h.dst.service != TRANSPORT || h.opcode != ctl::REGISTER {
        return Err(format!(
            "first frame is {:?} opcode {:#010x} to {}, not a REGISTER request",
            h.kind, h.opcode, h.dst
        ));
    }
    let result = decode_payload::<RegisterRequest>(req.payload)
        .map_err(|e| RemoteError::new(ErrorCode::BadRequest, e.to_string()))
        .and_then(|r| state.register(&r.name, conn, Arc::clone(outbox), privilege));
    let pnn = state.pnn();
    let mut answer_header = h.answer(Kind::Reply);
    answer_header.src = crate::proto::Address::new(pnn, TRANSPORT);
    let (reply, outcome) = match result {
        Ok(id) => {
            answer_header.dst = crate::proto::Address::new(pnn, id);
            let payload =
                encode_payload(&RegisterReply { pnn, service: id }).map_err(|e| e.to_string())?;
            (Message::new(answer_header, payload), Ok(id))
        }
        Err(err) => {
            answer_header.kind = Kind::Error;
            let reason = err.to_string();
            (
                Message::new(answer_header, encode_payload(&err).unwrap_or_default()),
                Err(reason),
            )
        }
    };
    let bytes = reply.to_bytes().map_err(|e| e.to_string())?;
    debug_assert!(bytes.len() >= HEADER_LEN);
    outbox.push(&[&bytes]).map_err(|e| format!("{e:?}"))?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{encode_frame, ALL_NODES};

    fn frame(kind: Kind, dst: Address, opcode: u32, payload: &[u8]) -> Vec<u8> {
        let h = HeaderRepr {
            kind,
            src: Address::new(77, 77),
            dst,
            request_id: 9,
            opcode,
        };
        let mut out = Vec::new();
        encode_frame(&h, payload, &mut out).unwrap();
        out
    }

    fn drain(o: &Outbox) -> Vec<Message> {
        let mut buf = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut msgs = Vec::new();
        o.close();
        while rt.block_on(o.take(&mut buf)) {
            let mut at = 0;
            while at < buf.len() {
                let (f, n) = FrameRef::decode_prefix(&buf[at..]).unwrap();
                msgs.push(f.to_message());
                at += n;
            }
            buf.clear();
        }
        msgs
    }

    /// Routes a buffer of frames as the readers do: runs through
    /// `route_fast`, the rest through `route` after the pending run.
    fn route_batch(st: &mut RoutingState, origin: Origin, data: &mut [u8]) {
        let mut run = Run::default();
        let mut at = 0;
        while at < data.len() {
            let (_, len) = FrameRef::decode_prefix(&data[at..]).unwrap();
            match st.route_fast(origin, &mut data[at..at + len]) {
                Some(dest) => run.add(st, data, dest, at, len),
                None => {
                    run.finish(st, data);
                    st.route(origin, &mut data[at..at + len]);
                }
            }
            at += len;
        }
        run.finish(st, data);
        st.flush();
    }

    #[test]
    fn runs_keep_the_order_of_frames_and_count_like_route() {
        let (mut st, a, b) = state_with_two_clients();
        let peer = Arc::new(Outbox::new(1 << 20, 0));
        st.peer_up(2, 7, peer.clone(), Instant::now());
        // From clusterd (1): events to cli (fast), a broadcast in the
        // middle (slow path, also to cli: subscribed), a frame to the
        // peer, an unknown service (slow: error back), more events.
        st.subscribers.insert(0x33, vec![0x8000]);
        let mut data = Vec::new();
        for (i, dst) in [
            Address::local(0x8000),
            Address::local(0x8000),
            Address::new(1, BROADCAST_SERVICE),
            Address::new(1, 0x8000),
            Address::new(2, 5),
            Address::local(0x8000),
            Address::local(0x4444),
            Address::local(0x8000),
        ]
        .into_iter()
        .enumerate()
        {
            let op = if dst.service == BROADCAST_SERVICE {
                0x33
            } else {
                0x100 + u32::try_from(i).unwrap()
            };
            let kind = if dst.service == 0x4444 {
                Kind::Request
            } else {
                Kind::Event
            };
            data.extend(frame(kind, dst, op, &[u8::try_from(i).unwrap(); 5]));
        }
        route_batch(&mut st, Origin::Local(1), &mut data);
        let got: Vec<u32> = drain(&b).iter().map(|m| m.header.opcode).collect();
        assert_eq!(
            got,
            [0x100, 0x101, 0x33, 0x103, 0x105, 0x107],
            "cli's frames in order"
        );
        let to_peer = drain(&peer);
        assert_eq!(to_peer.len(), 1);
        assert_eq!(to_peer[0].header.src, Address::new(1, 1), "source stamped");
        assert_eq!(to_peer[0].header.dst, Address::new(2, 5));
        let back = drain(&a);
        assert_eq!(back.len(), 1, "the unknown service's error");
        assert_eq!(back[0].header.kind, Kind::Error);
        let c = &st.counters;
        // Delivered: cli's 6 and the error to clusterd.
        assert_eq!(
            (c.local_in, c.delivered, c.forwarded, c.unknown_service),
            (8, 7, 1, 1)
        );
        assert_eq!(st.service_traffic[service_slot(0x8000)].frames_out, 6);
        assert_eq!(st.peers[&2].traffic.frames_out, 1);
        // A closed destination: the run is counted as dropped.
        let mut more = frame(Kind::Event, Address::local(0x8000), 0x200, b"x");
        more.extend(frame(Kind::Event, Address::local(0x8000), 0x201, b"y"));
        route_batch(&mut st, Origin::Local(1), &mut more);
        assert_eq!(st.counters.queue_drops, 2);
        assert_eq!(st.counters.delivered, 7);
    }

    fn state_with_two_clients() -> (RoutingState, Arc<Outbox>, Arc<Outbox>) {
        let mut st = RoutingState::new(
            1,
            [
                (0, "192.0.2.1:4379".parse().unwrap()),
                (2, "192.0.2.3:4379".parse().unwrap()),
            ],
            None,
            Instant::now(),
        );
        let a = Arc::new(Outbox::new(1 << 20, 0));
        let b = Arc::new(Outbox::new(1 << 20, 0));
        assert_eq!(
            st.register("clusterd", 1, a.clone(), Privilege::Daemon)
                .unwrap(),
            1
        );
        assert_eq!(
            st.register("cli", 2, b.clone(), Privilege::Client).unwrap(),
            0x8000
        );
        (st, a, b)
    }

    #[test]
    fn local_request_is_delivered_with_rewritten_source() {
        let (mut st, a, b) = state_with_two_clients();
        let mut f = frame(Kind::Request, Address::local(1), 0x10001, b"xy");
        st.route(Origin::Local(0x8000), &mut f);
        let got = drain(&a);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].header.src, Address::new(1, 0x8000));
        assert_eq!(got[0].header.dst, Address::new(1, 1));
        assert_eq!(got[0].payload, b"xy");
        assert!(drain(&b).is_empty());
    }

    #[test]
    fn unknown_service_and_unreachable_node_answer_requests_only() {
        let (mut st, _a, b) = state_with_two_clients();
        let mut f = frame(Kind::Request, Address::new(1, 3), 0x30001, b"");
        st.route(Origin::Local(0x8000), &mut f);
        let mut f = frame(Kind::Request, Address::new(2, 1), 0x10001, b"");
        st.route(Origin::Local(0x8000), &mut f);
        let mut f = frame(Kind::Event, Address::new(1, 3), 0x30001, b"");
        st.route(Origin::Local(0x8000), &mut f);
        let got = drain(&b);
        assert_eq!(got.len(), 2);
        let e0: RemoteError = got[0].decode_payload().unwrap();
        let e1: RemoteError = got[1].decode_payload().unwrap();
        assert_eq!(e0.code, ErrorCode::UnknownService);
        assert_eq!(e1.code, ErrorCode::NodeUnreachable);
        assert_eq!(got[0].header.kind, Kind::Error);
        assert_eq!(got[0].header.request_id, 9);
        assert_eq!(st.counters.unknown_service, 2);
    }

    #[test]
    fn broadcast_reaches_subscribers_and_peers_but_peer_frames_stay_local() {
        let (mut st, a, b) = state_with_two_clients();
        let sub = encode_payload(&SubscribeRequest { opcode: 0x10005 }).unwrap();
        let mut f = frame(
            Kind::Request,
            Address::local(TRANSPORT),
            ctl::SUBSCRIBE,
            &sub,
        );
        st.route(Origin::Local(1), &mut f);
        let peer = Arc::new(Outbox::new(1 << 20, 0));
        st.peer_up(2, 1, peer.clone(), Instant::now());
        let mut f = frame(
            Kind::Event,
            Address::new(ALL_NODES, BROADCAST_SERVICE),
            0x10005,
            b"e",
        );
        st.route(Origin::Local(0x8000), &mut f);
        let mut f = frame(
            Kind::Event,
            Address::new(ALL_NODES, BROADCAST_SERVICE),
            0x10005,
            b"p",
        );
        st.route(Origin::Peer(2), &mut f);
        let mut f = frame(Kind::Event, Address::new(0, 1), 0x10005, b"x");
        st.route(Origin::Peer(2), &mut f);
        let got_a = drain(&a);
        // Reply to SUBSCRIBE, then the two broadcasts.
        assert_eq!(got_a.len(), 3);
        assert_eq!(got_a[0].header.kind, Kind::Reply);
        assert_eq!(got_a[1].payload, b"e");
        assert_eq!(got_a[2].payload, b"p");
        assert_eq!(got_a[2].header.src.pnn, 2);
        let got_peer = drain(&peer);
        assert_eq!(got_peer.len(), 1, "a peer frame was forwarded again");
        assert_eq!(got_peer[0].payload, b"e");
        assert!(drain(&b).is_empty());
        assert_eq!(st.counters.misrouted, 1);
    }

    /// Frames and bytes are counted per peer (in from it, out to it) and
    /// per local service (in from it, delivered to it) in STATISTICS.
    #[test]
    fn traffic_is_counted_per_peer_and_per_service() {
        let (mut st, _a, _b) = state_with_two_clients();
        let peer = Arc::new(Outbox::new(1 << 20, 0));
        st.peer_up(2, 1, peer.clone(), Instant::now());
        // clusterd (service 1) to node 2: out to peer 2, in from clusterd.
        let mut f = frame(Kind::Event, Address::new(2, 1), 0x10005, b"hb");
        let out_len = f.len() as u64;
        st.route(Origin::Local(1), &mut f);
        // Node 2 to the local clusterd, twice: in from peer 2, out to clusterd.
        for _ in 0..2 {
            let mut f = frame(Kind::Event, Address::new(1, 1), 0x10005, b"ack");
            st.route(Origin::Peer(2), &mut f);
        }
        let in_len = frame(Kind::Event, Address::new(1, 1), 0x10005, b"ack").len() as u64;
        let s = st.statistics();
        assert_eq!(s.get("peer2_frames_out"), Some(1));
        assert_eq!(s.get("peer2_bytes_out"), Some(out_len));
        assert_eq!(s.get("peer2_frames_in"), Some(2));
        assert_eq!(s.get("peer2_bytes_in"), Some(2 * in_len));
        assert_eq!(s.get("peer0_frames_in"), Some(0));
        assert_eq!(s.get("service_clusterd_frames_in"), Some(1));
        assert_eq!(s.get("service_clusterd_frames_out"), Some(2));
        assert_eq!(s.get("service_clusterd_bytes_out"), Some(2 * in_len));
        assert_eq!(s.get("service_clients_frames_in"), Some(0));
        assert_eq!(service_slot_name(0), "transport");
        assert_eq!(service_slot_name(4), "masterd");
        assert_eq!(service_slot(0x8001), 5);
    }

    /// A peer that comes back with a new link while its old one still looks
    /// open (the old transportd's task or process has not been noticed
    /// gone) is taken at once: the new link carries the frames, the old one
    /// is closed, and the old link ending late does not take the new one
    /// down.
    #[test]
    fn a_new_link_from_a_peer_replaces_its_old_one() {
        let (mut st, _a, _b) = state_with_two_clients();
        let old = Arc::new(Outbox::new(1 << 20, 0));
        let new = Arc::new(Outbox::new(1 << 20, 0));
        st.peer_up(2, 10, old.clone(), Instant::now());
        st.peer_up(2, 11, new.clone(), Instant::now());
        assert!(old.is_closed(), "the old link is not closed");
        assert!(!new.is_closed());
        st.peer_down(2, 10, Instant::now());
        assert!(
            st.peer_connected(2),
            "the old link's end took the new one down"
        );
        let mut f = frame(Kind::Event, Address::new(2, 1), 0x10005, b"n");
        st.route(Origin::Local(0x8000), &mut f);
        let got = drain(&new);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, b"n");
        assert!(drain(&old).is_empty());
        st.peer_down(2, 11, Instant::now());
        assert!(!st.peer_connected(2));
    }

    #[test]
    fn registration_rules() {
        let (mut st, _a, _b) = state_with_two_clients();
        let o = Arc::new(Outbox::new(1 << 20, 0));
        assert_eq!(
            st.register("clusterd", 3, o.clone(), Privilege::Daemon)
                .unwrap_err()
                .code,
            ErrorCode::Refused
        );
        assert_eq!(
            st.register("", 3, o.clone(), Privilege::Daemon)
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
        st.client_disconnected(1, Some(1));
        // A client (group member) may not take a well-known name, even a
        // free one.
        let err = st
            .register("clusterd", 3, o.clone(), Privilege::Client)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Refused);
        assert!(err.message.contains("reserved for the daemons"), "{err}");
        assert_eq!(st.counters.registrations_refused, 1);
        assert_eq!(st.register("clusterd", 3, o, Privilege::Daemon).unwrap(), 1);
        let o = Arc::new(Outbox::new(1 << 20, 0));
        let req = encode_payload(&RegisterRequest { name: "x".into() }).unwrap();
        let f = frame(
            Kind::Request,
            Address::local(TRANSPORT),
            ctl::REGISTER,
            &req,
        );
        let id = register_first(&mut st, &f, 9, &o, Privilege::Client).unwrap();
        assert_eq!(id, 0x8001);
        let got = drain(&o);
        let r: RegisterReply = got[0].decode_payload().unwrap();
        assert_eq!((r.pnn, r.service), (1, 0x8001));
        let o = Arc::new(Outbox::new(1 << 20, 0));
        let f = frame(Kind::Event, Address::local(1), 0x10001, b"");
        assert!(register_first(&mut st, &f, 10, &o, Privilege::Daemon).is_err());
        // A client's REGISTER of a well-known name gets a Refused answer.
        let o = Arc::new(Outbox::new(1 << 20, 0));
        let req = encode_payload(&RegisterRequest {
            name: "failoverd".into(),
        })
        .unwrap();
        let f = frame(
            Kind::Request,
            Address::local(TRANSPORT),
            ctl::REGISTER,
            &req,
        );
        let why = register_first(&mut st, &f, 11, &o, Privilege::Client).unwrap_err();
        assert!(why.contains("failoverd"), "{why}");
        let got = drain(&o);
        assert_eq!(got[0].header.kind, Kind::Error);
        let e: RemoteError = got[0].decode_payload().unwrap();
        assert_eq!(e.code, ErrorCode::Refused);
    }

    #[test]
    fn refused_client_frames_are_answered_and_counted_not_routed() {
        let (mut st, a, b) = state_with_two_clients();
        let mut f = frame(Kind::Request, Address::local(2), 0x0002_0005, b"take");
        st.refuse_local(0x8000, &mut f, "not for clients");
        let mut f = frame(Kind::Event, Address::local(1), 0x0001_0004, b"lease");
        st.refuse_local(0x8000, &mut f, "not for clients");
        assert!(drain(&a).is_empty(), "a refused frame reached clusterd");
        let got = drain(&b);
        assert_eq!(got.len(), 1, "only the request is answered");
        assert_eq!(got[0].header.kind, Kind::Error);
        let e: RemoteError = got[0].decode_payload().unwrap();
        assert_eq!(e.code, ErrorCode::Refused);
        assert!(e.message.contains("not for clients"), "{e}");
        assert_eq!(st.counters.frames_refused, 2);
    }

    #[test]
    fn set_nodes_from_clusterd_adds_and_removes_peers_and_refuses_bad_lists() {
        let (mut st, a, b) = state_with_two_clients();
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        let watch: NodesWatch = Arc::new(tokio::sync::watch::Sender::new(
            crate::nodes::Nodes::from_addrs(vec![
                ip("192.0.2.1"),
                ip("192.0.2.2"),
                ip("192.0.2.3"),
            ]),
        ));
        st.follow_nodes(Arc::clone(&watch), 4379);
        let set = |addrs: Vec<Option<std::net::IpAddr>>| {
            encode_payload(&ctl::NodeList { addrs }).unwrap()
        };
        let ask = |st: &mut RoutingState, from: u16, payload: &[u8]| {
            let mut f = frame(
                Kind::Request,
                Address::local(TRANSPORT),
                ctl::SET_NODES,
                payload,
            );
            st.route(Origin::Local(from), &mut f);
        };
        // From a client: refused.
        let grown = set(vec![
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            None,
            ip("192.0.2.4"),
        ]);
        ask(&mut st, 0x8000, &grown);
        let got = drain(&b);
        let e: RemoteError = got[0].decode_payload().unwrap();
        assert_eq!(e.code, ErrorCode::Refused);
        assert_eq!(watch.borrow().len(), 3);
        // From clusterd (its replies read at the end: draining closes
        // the outbox): node 2 deleted, node 3 added, then the peers.
        ask(&mut st, 1, &grown);
        assert_eq!(watch.borrow().len(), 4);
        assert!(!watch.borrow().is_live(2));
        let mut f = frame(
            Kind::Request,
            Address::local(TRANSPORT),
            ctl::LIST_PEERS,
            b"",
        );
        st.route(Origin::Local(1), &mut f);
        // A changed address, a shorter list, this node deleted: refused,
        // nothing changed.
        for bad in [
            set(vec![
                ip("192.0.2.1"),
                ip("192.0.2.9"),
                None,
                ip("192.0.2.4"),
            ]),
            set(vec![ip("192.0.2.1"), ip("192.0.2.2")]),
            set(vec![ip("192.0.2.1"), None, None, ip("192.0.2.4")]),
        ] {
            ask(&mut st, 1, &bad);
        }
        let got = drain(&a);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0].header.kind, Kind::Reply, "{got:?}");
        let peers: PeerList = got[1].decode_payload().unwrap();
        let listed: Vec<(u32, String)> = peers
            .peers
            .iter()
            .map(|p| (p.pnn, p.address.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                (0, "192.0.2.1:4379".to_string()),
                (3, "192.0.2.4:4379".to_string())
            ]
        );
        for refusal in &got[2..] {
            let e: RemoteError = refusal.decode_payload().unwrap();
            assert_eq!(e.code, ErrorCode::Refused, "{e}");
        }
        assert_eq!(watch.borrow().addr(3), "192.0.2.4".parse().ok());
        assert_eq!(watch.borrow().len(), 4);
    }

    #[test]
    fn common_controls_are_answered_for_service_zero() {
        let (mut st, _a, b) = state_with_two_clients();
        let ping = encode_payload(&ctl::PingRequest { data: vec![5] }).unwrap();
        let mut f = frame(Kind::Request, Address::local(TRANSPORT), ctl::PING, &ping);
        st.route(Origin::Local(0x8000), &mut f);
        let mut f = frame(
            Kind::Request,
            Address::local(TRANSPORT),
            ctl::STATISTICS,
            b"",
        );
        st.route(Origin::Local(0x8000), &mut f);
        let mut f = frame(
            Kind::Request,
            Address::local(TRANSPORT),
            ctl::LIST_PEERS,
            b"",
        );
        st.route(Origin::Local(0x8000), &mut f);
        let got = drain(&b);
        let p: ctl::PingReply = got[0].decode_payload().unwrap();
        assert_eq!(p.data, vec![5]);
        let s: Statistics = got[1].decode_payload().unwrap();
        assert_eq!(s.get("local_in"), Some(2));
        let peers: PeerList = got[2].decode_payload().unwrap();
        assert_eq!(peers.peers.len(), 2);
        assert!(!peers.peers[0].connected);
    }

    #[test]
    fn a_member_uid_gets_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut st = RoutingState::new(0, Vec::new(), None, t0);
        assert_eq!(MEMBER_BURST, 512.0);
        assert!((0..512).all(|_| st.member_may_request(64_000, t0)));
        assert!(!st.member_may_request(64_000, t0), "the burst is spent");
        assert!(st.member_may_request(64_001, t0), "another uid has its own");
        assert_eq!(st.counters.requests_throttled, 1);
        let later = t0 + std::time::Duration::from_millis(10);
        let refilled = (0..100)
            .filter(|_| st.member_may_request(64_000, later))
            .count();
        assert_eq!(MEMBER_RATE, 2000.0);
        assert_eq!(refilled, 20, "10 ms of the rate");
    }
}
