//! The in-process router: the routing rules of transportd, with channels
//! instead of sockets, so a whole node — or a whole cluster of linked
//! routers — runs inside one process (masterd's single-process model, fast
//! tests with real daemons).
//!
//! Routing rules: transportd's, from the one decision in [`crate::routing`];
//! from a local client, `src` is overwritten with `(own pnn, client's id)`.
//!
//! Routing reads the header only; payloads are only decoded for frames to
//! service 0 (the router's own controls). Delivery to clients never blocks
//! (unbounded channels); routing holds one router's lock at a time, never
//! two, so linked routers cannot deadlock.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::{run_stream, Client, ClientError, Incoming, Link, OUTGOING_CAPACITY};
use crate::controls::{self, ControlContext, LogLevelHook};
use crate::proto::control::{
    self, PeerInfo, PeerList, RegisterReply, RegisterRequest, ServiceInfo, ServiceList, Statistics,
    SubscribeRequest, LIST_PEERS, LIST_SERVICES, REGISTER, SUBSCRIBE, UNSUBSCRIBE,
};
use crate::proto::service::{check_name, well_known_id, EPHEMERAL_BASE, TRANSPORT};
use crate::proto::{
    decode_payload, encode_payload, Address, ErrorCode, Kind, Message, RemoteError,
    BROADCAST_SERVICE, LOCAL,
};
use crate::routing::{decide, Decision, Local, Source, Tables};

struct ServiceEntry {
    name: String,
    conn: u64,
    tx: mpsc::UnboundedSender<Message>,
    subscriptions: BTreeSet<u32>,
}

struct PeerEntry {
    router: Weak<RouterInner>,
    connected: bool,
    since: Instant,
}

#[derive(Default)]
struct Counters {
    routed: AtomicU64,
    delivered: AtomicU64,
    forwarded: AtomicU64,
    from_peers: AtomicU64,
    dropped: AtomicU64,
    errors_sent: AtomicU64,
    controls_answered: AtomicU64,
}

#[derive(Default)]
struct State {
    services: BTreeMap<u16, ServiceEntry>,
    next_ephemeral: u16,
    next_conn: u64,
    peers: BTreeMap<u32, PeerEntry>,
    log_hook: Option<LogLevelHook>,
    /// The counters at the last `STATISTICS_RESET` (empty: never).
    stats_base: Vec<(String, u64)>,
}

impl Tables for State {
    fn has_service(&self, id: u16) -> bool {
        self.services.contains_key(&id)
    }

    fn peer_connected(&self, pnn: u32) -> bool {
        self.peers
            .get(&pnn)
            .is_some_and(|p| p.connected && p.router.strong_count() > 0)
    }
}

struct RouterInner {
    pnn: u32,
    state: Mutex<State>,
    counters: Counters,
    shutdown: watch::Sender<bool>,
}

/// An in-process router for one node. Clone freely (a handle).
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("pnn", &self.inner.pnn)
            .finish()
    }
}

/// Where a frame entered the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A local client with this service id.
    Local(u16),
    /// A linked peer router (never re-forwarded).
    Peer,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Router {
    /// A router for node `pnn`, with no clients and no peers.
    pub fn new(pnn: u32) -> Router {
        let (shutdown, _) = watch::channel(false);
        Router {
            inner: Arc::new(RouterInner {
                pnn,
                state: Mutex::new(State {
                    next_ephemeral: EPHEMERAL_BASE,
                    ..State::default()
                }),
                counters: Counters::default(),
                shutdown,
            }),
        }
    }

    /// `n` routers with pnns `0..n`, every pair linked: a cluster in one process.
    pub fn cluster(n: u32) -> Vec<Router> {
        let routers: Vec<Router> = (0..n).map(Router::new).collect();
        for (i, a) in routers.iter().enumerate() {
            for b in routers.iter().skip(i + 1) {
                Router::link(a, b);
            }
        }
        routers
    }

    /// This router's node number.
    pub fn pnn(&self) -> u32 {
        self.inner.pnn
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic elsewhere in routing; the state is
        // still consistent (every update is a single insert/remove).
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Links two routers as connected peers (like a TCP link coming up).
    pub fn link(a: &Router, b: &Router) {
        let now = Instant::now();
        for (x, y) in [(a, b), (b, a)] {
            if x.pnn() == y.pnn() {
                continue;
            }
            x.state().peers.insert(
                y.pnn(),
                PeerEntry {
                    router: Arc::downgrade(&y.inner),
                    connected: true,
                    since: now,
                },
            );
        }
    }

    /// Cuts the link between two routers (a partition); both keep listing
    /// the other as a disconnected peer.
    pub fn unlink(a: &Router, b: &Router) {
        Router::cut(a, b);
        Router::cut(b, a);
    }

    /// Cuts only the direction `from` -> `to`: `from` no longer reaches `to`,
    /// but `to` still reaches `from` (an asymmetric partition).
    pub fn cut(from: &Router, to: &Router) {
        let now = Instant::now();
        if let Some(peer) = from.state().peers.get_mut(&to.pnn()) {
            if peer.connected {
                peer.connected = false;
                peer.since = now;
            }
        }
    }

    /// Connects an in-process client and registers `name` (see
    /// [`Client::connect`]).
    ///
    /// # Errors
    /// [`ClientError::Register`] if a live client already holds that
    /// well-known name.
    pub async fn connect(&self, name: &str) -> Result<(Client, Incoming), ClientError> {
        Client::connect(self.link_client(), name).await
    }

    /// A raw link to this router (the client side of a connection); the first
    /// frame must be a `REGISTER` request.
    pub fn link_client(&self) -> Link {
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(self.clone().serve(out_rx, in_tx));
        Link::from_channels(out_tx, in_rx)
    }

    /// Serves one client connection over a byte stream (a socket, a
    /// `tokio::io::duplex` pipe), with the same framing as transportd's Unix
    /// socket: so a process hosting a router can also accept real clients.
    /// Returns at once; the connection runs on its own tasks.
    pub fn serve_stream<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (to_router, router_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let (router_tx, from_router) = mpsc::unbounded_channel();
        tokio::spawn(self.clone().serve(router_rx, router_tx));
        // The stream side writes what the router sends this client, and
        // feeds what it reads into the router through a bounded bridge.
        let (read_tx, mut read_rx) = mpsc::unbounded_channel::<Message>();
        let (write_tx, write_rx) = mpsc::channel(OUTGOING_CAPACITY);
        tokio::spawn(async move {
            let bridge_in = async {
                while let Some(msg) = read_rx.recv().await {
                    if to_router.send(msg).await.is_err() {
                        break;
                    }
                }
            };
            let bridge_out = async {
                let mut from_router = from_router;
                while let Some(msg) = from_router.recv().await {
                    if write_tx.send(msg).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                () = run_stream(stream, read_tx, write_rx) => {}
                () = bridge_in => {}
                () = bridge_out => {}
            }
        });
    }

    /// One client connection: registration, then routing of its frames;
    /// the service is removed when the client closes.
    async fn serve(self, mut rx: mpsc::Receiver<Message>, tx: mpsc::UnboundedSender<Message>) {
        let conn = {
            let mut st = self.state();
            st.next_conn += 1;
            st.next_conn
        };
        let mut registered: Option<u16> = None;
        while let Some(msg) = rx.recv().await {
            match registered {
                Some(service) => self.route(msg, Origin::Local(service)),
                None => {
                    let (answer, id) = self.register(&msg, conn, &tx);
                    let _ = tx.send(answer);
                    registered = id;
                }
            }
        }
        if let Some(service) = registered {
            let mut st = self.state();
            if st.services.get(&service).is_some_and(|s| s.conn == conn) {
                st.services.remove(&service);
            }
        }
    }

    fn register(
        &self,
        msg: &Message,
        conn: u64,
        tx: &mpsc::UnboundedSender<Message>,
    ) -> (Message, Option<u16>) {
        let refuse = |code, text: String| {
            let mut m = controls::error_message(&msg.header, &RemoteError::new(code, text));
            m.header.src = Address::new(self.pnn(), TRANSPORT);
            (m, None)
        };
        if msg.header.kind != Kind::Request || msg.header.opcode != REGISTER {
            return refuse(
                ErrorCode::Refused,
                "the first frame must be a REGISTER request".into(),
            );
        }
        let req: RegisterRequest = match decode_payload(&msg.payload) {
            Ok(r) => r,
            Err(e) => return refuse(ErrorCode::BadRequest, e.to_string()),
        };
        if let Err(err) = check_name(&req.name) {
            return refuse(err.code, err.message);
        }
        let mut st = self.state();
        let id = match well_known_id(&req.name) {
            Some(id) => {
                if st.services.get(&id).is_some_and(|s| !s.tx.is_closed()) {
                    return refuse(
                        ErrorCode::Refused,
                        format!("service {:?} is already registered", req.name),
                    );
                }
                id
            }
            None => {
                let Some(id) = next_ephemeral(&mut st) else {
                    return refuse(ErrorCode::Refused, "no free service id".into());
                };
                id
            }
        };
        st.services.insert(
            id,
            ServiceEntry {
                name: req.name,
                conn,
                tx: tx.clone(),
                subscriptions: BTreeSet::new(),
            },
        );
        drop(st);
        let reply = RegisterReply {
            pnn: self.pnn(),
            service: id,
        };
        let mut m = controls::answer_message(&msg.header, encode_payload(&reply).map_err(internal));
        m.header.src = Address::new(self.pnn(), TRANSPORT);
        (m, Some(id))
    }

    /// Routes one frame by its header ([`routing::decide`]).
    fn route(&self, mut msg: Message, origin: Origin) {
        bump(&self.inner.counters.routed);
        let source = match origin {
            Origin::Local(_) => Source::Local,
            Origin::Peer => Source::Peer,
        };
        let decision = decide(
            self.pnn(),
            source,
            msg.header.kind,
            msg.header.dst,
            &*self.state(),
        );
        if decision == Decision::Drop {
            bump(&self.inner.counters.dropped);
            return;
        }
        if let Origin::Local(service) = origin {
            msg.header.src = Address::new(self.pnn(), service);
        } else {
            bump(&self.inner.counters.from_peers);
        }
        if msg.header.dst.pnn == LOCAL {
            msg.header.dst.pnn = self.pnn();
        }
        match decision {
            Decision::Local(local) => self.deliver_local(msg, local, true),
            Decision::Everywhere { forward, local } => {
                if forward {
                    for peer in self.connected_peers() {
                        bump(&self.inner.counters.forwarded);
                        peer.route(msg.clone(), Origin::Peer);
                    }
                }
                self.deliver_local(msg, local, false);
            }
            Decision::Peer(pnn) | Decision::Unreachable(pnn) => match self.peer(pnn) {
                Some(peer) => {
                    bump(&self.inner.counters.forwarded);
                    peer.route(msg, Origin::Peer);
                }
                None => self.fail(
                    &msg,
                    ErrorCode::NodeUnreachable,
                    format!("node {pnn} is not connected to node {}", self.pnn()),
                ),
            },
            // A peer sent us a frame for a third node: never re-forward.
            Decision::Misrouted | Decision::Drop => bump(&self.inner.counters.dropped),
        }
    }

    fn connected_peers(&self) -> Vec<Router> {
        self.state()
            .peers
            .values()
            .filter(|p| p.connected)
            .filter_map(|p| p.router.upgrade())
            .map(|inner| Router { inner })
            .collect()
    }

    fn peer(&self, pnn: u32) -> Option<Router> {
        let st = self.state();
        let p = st.peers.get(&pnn).filter(|p| p.connected)?;
        p.router.upgrade().map(|inner| Router { inner })
    }

    /// Sends a frame this router generated (an answer from service 0 or an
    /// error) toward its destination: locally or to the one peer (never an
    /// error about an error: what cannot be sent is dropped).
    fn send_generated(&self, mut msg: Message) {
        let decision = decide(
            self.pnn(),
            Source::Local,
            msg.header.kind,
            msg.header.dst,
            &*self.state(),
        );
        if msg.header.dst.pnn == LOCAL {
            msg.header.dst.pnn = self.pnn();
        }
        match decision {
            Decision::Local(local) => self.deliver_local(msg, local, true),
            Decision::Peer(pnn) => match self.peer(pnn) {
                Some(peer) => {
                    bump(&self.inner.counters.forwarded);
                    peer.route(msg, Origin::Peer);
                }
                None => bump(&self.inner.counters.dropped),
            },
            _ => bump(&self.inner.counters.dropped),
        }
    }

    /// Answers a Request with an Error (anything else is dropped).
    fn fail(&self, msg: &Message, code: ErrorCode, text: String) {
        if msg.header.kind != Kind::Request {
            bump(&self.inner.counters.dropped);
            return;
        }
        let mut answer = controls::error_message(&msg.header, &RemoteError::new(code, text));
        answer.header.src = Address::new(self.pnn(), msg.header.dst.service);
        bump(&self.inner.counters.errors_sent);
        self.send_generated(answer);
    }

    /// Delivers on this node as decided; `answer` answers a Request that
    /// finds no service with an error (also when the service went away
    /// since the decision).
    fn deliver_local(&self, msg: Message, local: Local, answer: bool) {
        let service = msg.header.dst.service;
        match local {
            Local::Control => self.handle_control(msg),
            Local::BadBroadcast { answer: true } => {
                let text = "only events may be broadcast to subscribers".to_owned();
                self.fail(&msg, ErrorCode::BadRequest, text);
            }
            Local::BadBroadcast { answer: false } | Local::UnknownService { answer: false, .. } => {
                bump(&self.inner.counters.dropped);
            }
            Local::Subscribers => {
                let st = self.state();
                for entry in st
                    .services
                    .values()
                    .filter(|s| s.subscriptions.contains(&msg.header.opcode))
                {
                    if entry.tx.send(msg.clone()).is_ok() {
                        bump(&self.inner.counters.delivered);
                    }
                }
            }
            Local::Service(_) | Local::UnknownService { answer: true, .. } => {
                let unsent = {
                    let st = self.state();
                    match st.services.get(&service) {
                        Some(entry) => entry.tx.send(msg).err().map(|e| e.0),
                        None => Some(msg),
                    }
                };
                match unsent {
                    None => bump(&self.inner.counters.delivered),
                    Some(_) if !answer => bump(&self.inner.counters.dropped),
                    Some(msg) => self.fail(
                        &msg,
                        ErrorCode::UnknownService,
                        format!("no service {service} on node {}", self.pnn()),
                    ),
                }
            }
        }
    }

    fn handle_control(&self, msg: Message) {
        if msg.header.kind != Kind::Request {
            bump(&self.inner.counters.dropped);
            return;
        }
        bump(&self.inner.counters.controls_answered);
        let opcode = msg.header.opcode;
        let from_local = msg.header.src.pnn == self.pnn();
        let result = if control::is_common(opcode) {
            let answer = self.answer_common(&msg);
            if answer.shutdown {
                self.inner.shutdown.send_replace(true);
            }
            answer.result
        } else {
            match opcode {
                SUBSCRIBE | UNSUBSCRIBE if from_local => self.subscription(&msg),
                SUBSCRIBE | UNSUBSCRIBE => Err(RemoteError::new(
                    ErrorCode::Refused,
                    "subscriptions are only for local services",
                )),
                LIST_SERVICES => encode_payload(&self.list_services()).map_err(internal),
                LIST_PEERS => encode_payload(&self.list_peers()).map_err(internal),
                REGISTER => Err(RemoteError::new(
                    ErrorCode::Refused,
                    "this connection is already registered",
                )),
                other => Err(RemoteError::new(
                    ErrorCode::UnknownOpcode,
                    format!("transport does not handle opcode {other:#010x}"),
                )),
            }
        };
        let mut answer = controls::answer_message(&msg.header, result);
        answer.header.src = Address::new(self.pnn(), TRANSPORT);
        self.send_generated(answer);
    }

    fn answer_common(&self, msg: &Message) -> controls::ControlAnswer {
        let (clients, hook) = {
            let st = self.state();
            (
                u32::try_from(st.services.len()).unwrap_or(u32::MAX),
                st.log_hook.clone(),
            )
        };
        let stats = || self.statistics();
        let reset = || {
            let raw = self.raw_statistics();
            self.state().stats_base = raw.counters;
        };
        let ctx = ControlContext {
            name: "transport",
            clients,
            statistics: &stats,
            log_level: hook.as_ref(),
            reset_statistics: Some(&reset),
        };
        controls::answer_common(msg.header.opcode, &msg.payload, &ctx)
    }

    fn subscription(&self, msg: &Message) -> Result<Vec<u8>, RemoteError> {
        let req: SubscribeRequest = decode_payload(&msg.payload)
            .map_err(|e| RemoteError::new(ErrorCode::BadRequest, e.to_string()))?;
        let mut st = self.state();
        let entry = st
            .services
            .get_mut(&msg.header.src.service)
            .ok_or_else(|| RemoteError::new(ErrorCode::UnknownService, "sender not registered"))?;
        if msg.header.opcode == SUBSCRIBE {
            entry.subscriptions.insert(req.opcode);
        } else {
            entry.subscriptions.remove(&req.opcode);
        }
        encode_payload(&()).map_err(internal)
    }

    /// The registered local services (as `LIST_SERVICES` reports them).
    pub fn list_services(&self) -> ServiceList {
        let st = self.state();
        ServiceList {
            pnn: self.pnn(),
            services: st
                .services
                .iter()
                .filter(|(_, s)| !s.tx.is_closed())
                .map(|(id, s)| ServiceInfo {
                    id: *id,
                    name: s.name.clone(),
                    subscriptions: s.subscriptions.iter().copied().collect(),
                })
                .collect(),
        }
    }

    /// The peers (as `LIST_PEERS` reports them).
    pub fn list_peers(&self) -> PeerList {
        let now = Instant::now();
        let st = self.state();
        PeerList {
            pnn: self.pnn(),
            peers: st
                .peers
                .iter()
                .map(|(pnn, p)| PeerInfo {
                    pnn: *pnn,
                    address: format!("in-process:{pnn}"),
                    connected: p.connected && p.router.strong_count() > 0,
                    since_ms: u64::try_from(now.saturating_duration_since(p.since).as_millis())
                        .unwrap_or(u64::MAX),
                })
                .collect(),
        }
    }

    /// The router's counters (as `STATISTICS` to service 0 reports them),
    /// counted from the last `STATISTICS_RESET`.
    pub fn statistics(&self) -> Statistics {
        let raw = self.raw_statistics();
        let st = self.state();
        raw.since(&st.stats_base)
    }

    fn raw_statistics(&self) -> Statistics {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Statistics {
            counters: vec![
                ("routed".into(), get(&c.routed)),
                ("delivered".into(), get(&c.delivered)),
                ("forwarded".into(), get(&c.forwarded)),
                ("from_peers".into(), get(&c.from_peers)),
                ("dropped".into(), get(&c.dropped)),
                ("errors_sent".into(), get(&c.errors_sent)),
                ("controls_answered".into(), get(&c.controls_answered)),
            ],
        }
    }

    /// Installs the hook answering `LOG_LEVEL` sent to service 0.
    pub fn set_log_level_hook<F>(&self, hook: F)
    where
        F: Fn(Option<&str>) -> Result<String, String> + Send + Sync + 'static,
    {
        self.state().log_hook = Some(Arc::new(hook));
    }

    /// Resolves when a `SHUTDOWN` control was sent to service 0.
    pub fn shutdown_requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|requested| *requested).await;
        }
    }
}

fn next_ephemeral(st: &mut State) -> Option<u16> {
    // At most 0x7FFF ids to try; the first free one at or after the cursor.
    let span = u32::from(BROADCAST_SERVICE - EPHEMERAL_BASE);
    for _ in 0..span {
        let id = st.next_ephemeral;
        st.next_ephemeral = if id >= BROADCAST_SERVICE - 1 {
            EPHEMERAL_BASE
        } else {
            id + 1
        };
        let taken = st.services.get(&id).is_some_and(|s| !s.tx.is_closed());
        if !taken {
            return Some(id);
        }
    }
    None
}

fn internal(err: crate::proto::PayloadError) -> RemoteError {
    RemoteError::new(ErrorCode::Internal, err.to_string())
}
