//! clusterd as a daemon over the real transport: the [`shell`] driven by a
//! [`transport::client::Client`] registered as the well-known `clusterd`.
//!
//! * Peer messages ([`ClusterMsg`]: heartbeats, leader membership, admin
//!   forwarding) travel as [`PEER`] events to `(pnn, CLUSTERD)`, addressed
//!   directly by PNN through transportd. A message that does not come from
//!   a `clusterd` service, or whose `from` does not match the frame's source
//!   PNN (which transportd sets from the authenticated link), is dropped,
//!   counted (`peer_messages_refused` in `STATISTICS`) and logged (the
//!   first 8, then one in 1000).
//! * [`MEMBERSHIP`] events go to `(LOCAL, BROADCAST_SERVICE)` on every change
//!   and again every [`REPUBLISH`] (so late subscribers catch up).
//! * [`LEASE`] events go to `(LOCAL, BROADCAST_SERVICE)` when this node's
//!   lease starts, ends, or has been extended by a quarter lease: failoverd
//!   drops its public IPs when the last lease end it heard of passes, so a
//!   dead or hung clusterd cannot leave them configured.
//! * [`GET_MEMBERSHIP`] requests are answered with the published membership;
//!   [`ADMIN`] requests run (or are forwarded by) the shell and are answered
//!   with an [`AdminOutcome`] or an error naming the cause. Both reach the
//!   shell on a channel of their own, which it reads after the peers'
//!   messages and its timers; at most [`ADMIN_IN_FLIGHT`] admin requests
//!   ([`ADMIN_PER_CLIENT`] of one client) are served at once, more are
//!   refused at once and counted (`admin_refused` in STATISTICS): a flood
//!   of requests never takes a heartbeat's place (#14 item 2).
//!
//! Heartbeat path, allocation-free in steady state: the shell's outputs are
//! carried out synchronously by [`TransportLink`], which encodes with
//! postcard into a reused buffer and copies the bytes into the client's
//! write queue ([`Client::try_event_bytes`], a reused buffer too; a full
//! queue drops the frame, as a lost packet: heartbeats repair it). Received
//! peer messages are taken by a frame tap on the client's reader
//! ([`Client::set_frame_tap`]): decoded from the borrowed read buffer and
//! handed to the shell with a non-blocking send (dropped if the shell is
//! 1024 inputs behind). Only membership changes and admin messages allocate.
//! Measured by `clusterd/tests/no_alloc_transport.rs` against real
//! transportds.
//!
//! [`shell`]: crate::shell

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use transport::client::{Client, ClientError, Incoming};
use transport::msg::cluster::{
    AdminCommand, AdminOutcome, ClusterSettings, ADMIN, GET_MEMBERSHIP, GET_NODES_FILE,
    GET_SETTINGS, LEASE, MEMBERSHIP, RELOAD_NODES,
};
use transport::proto::control::NodeList;
use transport::proto::service::{BROADCAST_SERVICE, CLUSTERD, LOCAL};
use transport::proto::{Address, ErrorCode, Kind, Message};
use transport::tdaemon::Reloaded;

use crate::entry::Loaded;
use crate::health::{self, HealthCheck};
use crate::lock::{LockError, LockSpec};
use crate::membership::{Config, Timing};
use crate::msg::{ClusterMsg, Lease, LeaseUpdate, Membership};
use crate::nodes::{NodesError, NodesFile, Pnn};
use crate::shell::{self, AdminError, Input, Link, ADMIN_TIMEOUT};

/// Opcode of clusterd-to-clusterd messages (payload: [`ClusterMsg`]).
pub const PEER: u32 = 0x0001_0100;

/// The membership is re-sent this often even without a change.
pub const REPUBLISH: Duration = Duration::from_secs(1);

/// Room for one encoded peer message without reallocating (a heartbeat is
/// about 30 bytes; a membership update of 256 nodes about 2.5 kB).
const ENCODE_BUF: usize = 4096;

/// Peer messages (and health results) that may wait for the shell.
const INPUTS: usize = 1024;

/// ADMIN requests served at once (each waits up to twice
/// [`ADMIN_TIMEOUT`] for its target); more are refused at once
/// (`admin_refused`). They reach the shell on a channel of their own,
/// after the peers' messages: a flood cannot delay a heartbeat (#14).
pub const ADMIN_IN_FLIGHT: usize = 256;
/// ADMIN requests of one client (source address) served at once. A group
/// member has at most 32 connections (transportd's limit per uid), so one
/// user cannot take every place.
pub const ADMIN_PER_CLIENT: usize = 4;

/// Payload bytes the admin requests in flight may hold.
pub const ADMIN_BYTES: usize = 1024 * 1024;

/// Room of the local requests' channel: every admin request in flight and
/// the one membership query the receiver waits for.
const REQUESTS: usize = ADMIN_IN_FLIGHT + 2;

/// clusterd's own counters, reported by the STATISTICS control after the
/// transport client's.
#[derive(Debug, Default)]
struct Stats {
    /// ADMIN requests refused because [`ADMIN_IN_FLIGHT`] or
    /// [`ADMIN_PER_CLIENT`] were reached.
    admin_refused: transport::limit::Refusals,
}

/// Errors of the clusterd daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `ipfailover.toml` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The nodes file is unusable, or this node is not in it.
    #[error(transparent)]
    Nodes(#[from] NodesError),
    /// The `cluster_lock` setting is invalid.
    #[error("{}:{line}:{column}: cluster_lock: {source}", file.display())]
    Lock {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the setting.
        line: usize,
        /// 1-based column of the setting.
        column: usize,
        /// The cause.
        #[source]
        source: LockError,
    },
    /// `health_command` is set but empty.
    #[error("{}:{line}:{column}: health_command is empty", file.display())]
    EmptyHealth {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the setting.
        line: usize,
        /// 1-based column of the setting.
        column: usize,
    },
    /// The heartbeat timing is inconsistent.
    #[error("{}:{line}:{column}: heartbeat timing: {reason}", file.display())]
    Timing {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the setting.
        line: usize,
        /// 1-based column of the setting.
        column: usize,
        /// The violated relation.
        reason: &'static str,
    },
    /// The host's addresses cannot be listed (to find this node's PNN).
    #[error("cannot list this host's addresses: {0}")]
    LocalAddresses(#[source] nix::Error),
    /// transportd serves a different PNN than the one clusterd found.
    #[error("transportd serves node {transport}, but clusterd is node {clusterd} of {file}")]
    PnnMismatch {
        /// The nodes file.
        file: PathBuf,
        /// transportd's PNN.
        transport: Pnn,
        /// clusterd's PNN.
        clusterd: Pnn,
    },
    /// Talking to transportd failed.
    #[error("transport: {0}")]
    Transport(#[from] ClientError),
    /// transportd closed the connection.
    #[error("transportd closed the connection")]
    TransportClosed,
    /// transportd could not be reached at start.
    #[error(transparent)]
    Connect(#[from] transport::tdaemon::Error),
}

/// Everything clusterd needs, read from a configuration directory.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The state machine's configuration (lock flag set when a lock is).
    pub member: Config,
    /// The nodes file.
    pub nodes: NodesFile,
    /// This node.
    pub pnn: Pnn,
    /// The cluster lock, if configured.
    pub lock: Option<LockSpec>,
    /// The health monitor, if configured.
    pub health: Option<HealthCheck>,
    /// transportd's socket.
    pub socket: PathBuf,
    /// The node lists kept across restarts ([`crate::state`]); `None`
    /// keeps nothing (in-process benchmarks).
    pub state_file: Option<PathBuf>,
    /// The initial log filter.
    pub log_level: String,
}

/// The heartbeat timing for an interval and dead-after time: the lease is
/// `dead_after`; the margin is the larger of one interval and a fifth of
/// `dead_after`; a contended lock is retried after
/// `max(dead_after, 5 intervals)`. Defaults (100/500 ms) and the fast profile
/// (10/30 ms) give [`Timing::default_profile`] and [`Timing::fast`].
#[must_use]
pub fn timing(interval: Duration, dead_after: Duration) -> Timing {
    Timing {
        interval,
        dead_after,
        lease: dead_after,
        margin: interval.max(dead_after / 5),
        lock_retry: dead_after.max(interval * 5),
    }
}

impl Settings {
    /// Reads `DIR/ipfailover.toml` and `DIR/nodes`; finds this node's PNN
    /// (the `pnn` setting, else by matching `local` addresses; `None` lists
    /// the host's addresses).
    ///
    /// # Errors
    ///
    /// Any invalid setting or nodes-file problem, naming file and line.
    pub fn load(dir: &Path, local: Option<&[IpAddr]>) -> Result<Self, DaemonError> {
        let (settings, warnings) = Self::load_with_warnings(dir, local)?;
        transport::tdaemon::log_warnings(&warnings);
        Ok(settings)
    }

    /// [`Settings::load`], returning the loader's warnings instead of
    /// logging them (the daemon binary logs them once logging is set up).
    ///
    /// # Errors
    ///
    /// As [`Settings::load`].
    pub fn load_with_warnings(
        dir: &Path,
        local: Option<&[IpAddr]>,
    ) -> Result<(Self, Vec<String>), DaemonError> {
        let loaded = config::load(dir)?;
        let file = dir.join(config::FILE_NAME);
        let c = &loaded.config.cluster;
        let timing = timing(
            Duration::from_millis(c.heartbeat_interval_ms()),
            Duration::from_millis(c.dead_after_ms()),
        );
        timing.check().map_err(|reason| {
            let key = if c.dead_after_ms.is_some() {
                "dead_after_ms"
            } else {
                "heartbeat_interval_ms"
            };
            let (line, column) = loaded.key_position(key);
            DaemonError::Timing {
                file: file.clone(),
                line,
                column,
                reason,
            }
        })?;
        let lock = match c.cluster_lock.as_deref() {
            None => None,
            Some(v) => Some(LockSpec::parse(v).map_err(|source| {
                let (line, column) = loaded.key_position("cluster_lock");
                DaemonError::Lock {
                    file: file.clone(),
                    line,
                    column,
                    source,
                }
            })?),
        };
        let health = match c.health_command.as_deref() {
            None => None,
            Some(line) => Some(
                HealthCheck::from_command(
                    line,
                    Duration::from_millis(c.health_interval_ms),
                    Duration::from_millis(c.health_timeout_ms),
                )
                .ok_or_else(|| {
                    let (line, column) = loaded.key_position("health_command");
                    DaemonError::EmptyHealth {
                        file: file.clone(),
                        line,
                        column,
                    }
                })?,
            ),
        };
        let nodes = NodesFile::load(&dir.join("nodes"))?;
        loaded.check_pnn(&nodes)?;
        let pnn = match (c.pnn, local) {
            (Some(p), _) => nodes.own_pnn(Some(p), &[])?,
            (None, Some(local)) => nodes.own_pnn(None, local)?,
            (None, None) => nodes.own_pnn(None, &local_addresses()?)?,
        };
        let settings = Self {
            member: Config {
                timing,
                lock: lock.is_some(),
                can_lead: c.leader_capability,
            },
            nodes,
            pnn,
            lock,
            health,
            socket: loaded
                .resolve(&loaded.config.transport.run_dir)
                .join("transport.sock"),
            state_file: Some(
                match &c.state_dir {
                    Some(d) => loaded.resolve(d),
                    None if loaded.config.transport.run_dir
                        == config::TransportConfig::default().run_dir =>
                    {
                        PathBuf::from("/var/lib/ipfailover")
                    }
                    None => loaded
                        .resolve(&loaded.config.transport.run_dir)
                        .join("state"),
                }
                .join(crate::state::FILE_NAME),
            ),
            log_level: loaded.config.logging.level.clone(),
        };
        Ok((settings, loaded.warnings))
    }
}

/// The host's IP addresses (every interface).
///
/// # Errors
///
/// [`DaemonError::LocalAddresses`] when they cannot be listed.
pub fn local_addresses() -> Result<Vec<IpAddr>, DaemonError> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(DaemonError::LocalAddresses)? {
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}

/// Connects to transportd at `socket` as `clusterd`, retrying for up to
/// `patience` while it starts.
///
/// # Errors
///
/// The last connection error once `patience` has passed.
pub async fn connect(socket: &Path, patience: Duration) -> Result<(Client, Incoming), DaemonError> {
    Ok(Client::connect_unix_patiently(socket, "clusterd", patience).await?)
}

/// What the link hands to the sender task.
enum Out {
    Publish(Membership),
    Lease(LeaseUpdate),
}

/// [`Link`] over the transport client: encodes into a reused buffer and
/// copies the bytes into the client's write queue; membership goes to the
/// sender task.
pub struct TransportLink {
    client: Client,
    tx: mpsc::UnboundedSender<Out>,
    buf: Vec<u8>,
}

impl Link for TransportLink {
    fn send(&mut self, to: Pnn, msg: &ClusterMsg) {
        let dst = Address::new(to, CLUSTERD);
        let res = match postcard::to_slice(msg, &mut self.buf) {
            Ok(bytes) => self.client.try_event_bytes(dst, PEER, bytes),
            // Larger than the buffer (a membership of many nodes): rare.
            Err(_) => match postcard::to_allocvec(msg) {
                Ok(v) => self.client.try_event_bytes(dst, PEER, &v),
                Err(e) => {
                    tracing::error!(error = %e, to, "cannot encode a peer message");
                    return;
                }
            },
        };
        if let Err(e) = res {
            // Lost like a dropped packet; heartbeats repair it.
            tracing::debug!(error = %e, to, "peer message not sent");
        }
    }

    fn publish(&mut self, membership: &Membership) {
        tracing::info!(
            generation = membership.generation,
            leader = ?membership.leader,
            lease_ok = membership.lease_ok,
            nodes = %NodesSummary(membership),
            "membership"
        );
        let _ = self.tx.send(Out::Publish(membership.clone()));
    }

    fn lease(&mut self, pnn: Pnn, lease: &Lease) {
        let _ = self.tx.send(Out::Lease(LeaseUpdate {
            this_node: pnn,
            lease: *lease,
        }));
    }
}

/// `0:OK 1:DISCONNECTED|INACTIVE ...` for the log.
struct NodesSummary<'a>(&'a Membership);

impl std::fmt::Display for NodesSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, n) in self.0.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}:{}", n.pnn, n.flags)?;
        }
        Ok(())
    }
}

/// Sends peer messages and membership events; re-sends the membership every
/// [`REPUBLISH`]. Ends when the link is dropped or the connection closes.
async fn sender(client: Client, mut rx: mpsc::UnboundedReceiver<Out>) {
    let broadcast = Address::new(LOCAL, BROADCAST_SERVICE);
    let mut last: Option<Vec<u8>> = None;
    // A lease update (sent every quarter lease in steady state) is encoded
    // here: no allocation per update.
    let mut lease_buf = [0u8; 64];
    let mut tick = tokio::time::interval(REPUBLISH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let res = tokio::select! {
            out = rx.recv() => match out {
                None => return,
                Some(Out::Lease(l)) => match postcard::to_slice(&l, &mut lease_buf) {
                    Ok(bytes) if tracing::enabled!(tracing::Level::DEBUG) => {
                        let now = transport::msg::cluster::monotonic_ns();
                        tracing::debug!(
                            computed_ms_ago = now.saturating_sub(l.lease.at_ns) as f64 / 1e6,
                            ends_in_ms = l.lease.expires_ns.saturating_sub(now) as f64 / 1e6,
                            "lease update sent"
                        );
                        client.event_bytes(broadcast, LEASE, bytes).await
                    }
                    Ok(bytes) => client.event_bytes(broadcast, LEASE, bytes).await,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode the lease");
                        Ok(())
                    }
                },
                Some(Out::Publish(m)) => match postcard::to_allocvec(&m) {
                    Ok(bytes) => {
                        tick.reset();
                        let res = client.event_bytes(broadcast, MEMBERSHIP, &bytes).await;
                        last = Some(bytes);
                        res
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode the membership");
                        Ok(())
                    }
                },
            },
            _ = tick.tick() => match &last {
                Some(bytes) => client.event_bytes(broadcast, MEMBERSHIP, bytes).await,
                None => Ok(()),
            },
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "clusterd cannot send");
            return;
        }
    }
}

/// Handles messages from transportd until the connection closes.
async fn receiver(
    client: Client,
    mut incoming: Incoming,
    inputs: mpsc::Sender<Input>,
    admins: transport::limit::InFlight,
    stats: Arc<Stats>,
    fixed: ClusterSettings,
    nodes_path: PathBuf,
) {
    // One reload at a time (a second one waits for the first).
    let reloading = Arc::new(tokio::sync::Mutex::new(()));
    while let Some(msg) = incoming.recv().await {
        match (msg.header.kind, msg.header.opcode) {
            (Kind::Request, GET_NODES_FILE) => {
                let res = match NodesFile::load(&nodes_path) {
                    Ok(file) => {
                        client
                            .reply(
                                &msg,
                                &NodeList {
                                    addrs: file.addrs(),
                                },
                            )
                            .await
                    }
                    Err(e) => {
                        client
                            .reply_error(&msg, ErrorCode::BadRequest, e.to_string())
                            .await
                    }
                };
                if res.is_err() {
                    return;
                }
            }
            (Kind::Request, RELOAD_NODES) => {
                let (client, inputs, path) = (client.clone(), inputs.clone(), nodes_path.clone());
                let lock = Arc::clone(&reloading);
                tokio::spawn(async move {
                    let _one = lock.lock().await;
                    reload_nodes(client, msg, path, inputs).await;
                });
            }
            (Kind::Request, GET_SETTINGS) => {
                let (tx, rx) = oneshot::channel();
                if inputs.send(Input::CanLead(tx)).await.is_err() {
                    return;
                }
                let res = match rx.await {
                    Ok(can_lead) => {
                        let now = ClusterSettings {
                            can_lead,
                            ..fixed.clone()
                        };
                        client.reply(&msg, &now).await
                    }
                    Err(_) => {
                        client
                            .reply_error(&msg, ErrorCode::ShuttingDown, "clusterd is stopping")
                            .await
                    }
                };
                if res.is_err() {
                    return;
                }
            }
            (Kind::Request, GET_MEMBERSHIP) => {
                let (tx, rx) = oneshot::channel();
                if inputs.send(Input::Get(tx)).await.is_err() {
                    return;
                }
                let res = match rx.await {
                    Ok(m) => client.reply(&msg, &m).await,
                    Err(_) => {
                        client
                            .reply_error(&msg, ErrorCode::ShuttingDown, "clusterd is stopping")
                            .await
                    }
                };
                if res.is_err() {
                    return;
                }
            }
            (Kind::Request, ADMIN) => {
                let cmd: AdminCommand = match msg.decode_payload() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = client
                            .reply_error(&msg, ErrorCode::BadRequest, format!("admin: {e}"))
                            .await;
                        continue;
                    }
                };
                // The answer may take up to ADMIN_TIMEOUT (a remote target):
                // do not hold up heartbeats meanwhile. At most
                // ADMIN_IN_FLIGHT at once; over it refused, not queued.
                match admins.try_acquire(msg.header.src, msg.payload.len()) {
                    Ok(permit) => {
                        let (client, inputs) = (client.clone(), inputs.clone());
                        tokio::spawn(async move {
                            admin(client, msg, cmd, inputs).await;
                            drop(permit);
                        });
                    }
                    Err(busy) => {
                        if stats.admin_refused.note() {
                            tracing::warn!(
                                from = %msg.header.src,
                                refused = stats.admin_refused.get(),
                                reason = %busy,
                                "admin request refused: clusterd is busy"
                            );
                        }
                        let _ = client
                            .reply_error(
                                &msg,
                                ErrorCode::Refused,
                                format!("clusterd is busy: {busy}; try again"),
                            )
                            .await;
                    }
                }
            }
            (Kind::Request, op) => {
                let _ = client
                    .reply_error(
                        &msg,
                        ErrorCode::UnknownOpcode,
                        format!("clusterd has no request {op:#010x}"),
                    )
                    .await;
            }
            _ => {}
        }
    }
}

/// Peer messages clusterd dropped, reported by `STATISTICS` (after the
/// client's own counters).
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Peer messages that claim another sender than the frame's source
    /// (a `from` that is not the source PNN transportd stamped from the
    /// authenticated link), or that do not come from a `clusterd`.
    pub refused: AtomicU64,
    /// Peer messages that do not decode.
    pub undecodable: AtomicU64,
    /// Peer messages handed to the state machine.
    pub received: AtomicU64,
    /// Peer messages dropped because the state machine was [`INPUTS`]
    /// behind (a heartbeat lost like a packet; none in the flood test).
    pub dropped: AtomicU64,
}

impl PeerCounters {
    /// The counters as `STATISTICS` names them.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        vec![
            (
                "peer_messages_refused".to_owned(),
                self.refused.load(Ordering::Relaxed),
            ),
            (
                "peer_messages_undecodable".to_owned(),
                self.undecodable.load(Ordering::Relaxed),
            ),
            (
                "peer_received".to_owned(),
                self.received.load(Ordering::Relaxed),
            ),
            (
                "peer_dropped".to_owned(),
                self.dropped.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// Should the `n`th (1-based) refusal of a kind be logged? The first 8,
/// then one in 1000: a peer that keeps sending them cannot flood the log.
fn log_nth(n: u64) -> bool {
    n <= 8 || n % 1000 == 0
}

/// The frame tap that takes peer messages off the client's reader: decodes
/// from the borrowed frame, checks the sender, hands the message to the
/// shell without waiting (dropped, like a lost packet, if the shell is
/// [`INPUTS`] inputs behind). No allocation for a heartbeat.
fn peer_tap(
    inputs: mpsc::Sender<Input>,
    counters: Arc<PeerCounters>,
    heartbeats: Arc<crate::heartbeats::HeartbeatStats>,
) -> transport::client::FrameTap {
    let mut legacy = LegacyLog::default();
    Box::new(move |frame| {
        if frame.header.kind != Kind::Event || frame.header.opcode != PEER {
            return false;
        }
        let src = frame.header.src;
        let cm: ClusterMsg = match frame.decode_payload() {
            Ok(m) => m,
            Err(e) => {
                let n = counters.undecodable.fetch_add(1, Ordering::Relaxed) + 1;
                if log_nth(n) {
                    tracing::warn!(from = %src, error = %e, count = n, "bad peer message");
                }
                return true;
            }
        };
        let claimed = claimed_sender(&cm);
        if src.service != CLUSTERD || claimed != src.pnn {
            let n = counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if log_nth(n) {
                tracing::warn!(
                    from = %src,
                    claimed,
                    count = n,
                    "peer message claims another sender (node {claimed}, from node {} service {}); dropped",
                    src.pnn,
                    src.service
                );
            }
            return true;
        }
        if matches!(cm, ClusterMsg::LegacyHeartbeat(_)) {
            legacy.refused(src.pnn, std::time::Instant::now());
            return true;
        }
        if let ClusterMsg::Heartbeat(h) = &cm {
            // Observation only (round trip, missed heartbeats).
            heartbeats.heartbeat(h.from, h.echo, transport::msg::cluster::monotonic_ns());
        }
        match inputs.try_send(Input::Msg(cm)) {
            Ok(()) => {
                counters.received.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(from = %src, error = %e, "clusterd busy: peer message dropped");
            }
        }
        true
    })
}

/// Log of refused format-1 heartbeats: one line per peer per
/// [`LEGACY_LOG_EVERY`], not one per heartbeat.
#[derive(Default)]
struct LegacyLog {
    last: Vec<(Pnn, std::time::Instant)>,
}

/// How often a peer with the old heartbeat format is named in the log.
const LEGACY_LOG_EVERY: Duration = Duration::from_secs(60);

impl LegacyLog {
    /// Notes a refused heartbeat of `pnn`; logs (and returns true) at most
    /// once per [`LEGACY_LOG_EVERY`] per peer.
    fn refused(&mut self, pnn: Pnn, now: std::time::Instant) -> bool {
        match self.last.iter_mut().find(|(p, _)| *p == pnn) {
            Some((_, at)) if now.duration_since(*at) < LEGACY_LOG_EVERY => return false,
            Some((_, at)) => *at = now,
            None => self.last.push((pnn, now)),
        }
        tracing::error!(
            peer = pnn,
            "node {pnn} runs an older clusterd (heartbeat wire format 1, leases granted by the leader alone): its heartbeats are refused and it counts as disconnected; upgrade every node to the same clusterd"
        );
        true
    }
}

/// The sender a peer message claims.
fn claimed_sender(m: &ClusterMsg) -> Pnn {
    match m {
        ClusterMsg::Heartbeat(h) => h.from,
        ClusterMsg::LegacyHeartbeat(h) => h.from,
        ClusterMsg::Membership(u) => u.from,
        ClusterMsg::Admin(a) => a.from,
        ClusterMsg::AdminReply(r) => r.from,
    }
}

/// What the reload task of [`run_with_reloads`] works with.
struct Reloading {
    client: Client,
    /// The shell's inputs (health results).
    inputs: mpsc::Sender<Input>,
    /// The shell's requests (node list checks).
    requests: mpsc::Sender<Input>,
    /// Becomes true when clusterd stops.
    stop: tokio::sync::watch::Receiver<bool>,
    /// The nodes file's list last taken (at start or by a reload).
    nodes_in_force: Vec<Option<IpAddr>>,
    /// The settings clusterd started with (what a restart would change).
    start: Settings,
}

/// A running health monitor.
struct Health {
    check: HealthCheck,
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Health {
    /// Starts `check`; it stops with clusterd or [`Health::stop`].
    fn start(check: HealthCheck, r: &Reloading) -> Health {
        let (stop, mut own) = tokio::sync::watch::channel(false);
        let mut all = r.stop.clone();
        let stopped = async move {
            tokio::select! {
                _ = all.wait_for(|s| *s) => {}
                _ = own.wait_for(|s| *s) => {}
            }
        };
        Health {
            task: tokio::spawn(health::monitor(check.clone(), r.inputs.clone(), stopped)),
            check,
            stop,
        }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Runs the health monitor (`health`, if any) and applies reloaded
/// configurations until clusterd stops.
async fn serve_reloads(
    mut r: Reloading,
    health: Option<HealthCheck>,
    mut reloads: mpsc::UnboundedReceiver<Reloaded<Loaded>>,
) {
    let mut health = health.map(|c| Health::start(c, &r));
    let mut stop = r.stop.clone();
    let mut open = true;
    loop {
        let reloaded = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            m = reloads.recv(), if open => match m {
                Some(m) => m,
                None => {
                    open = false;
                    continue;
                }
            },
        };
        apply_reload(&mut r, &mut health, reloaded).await;
    }
    if let Some(h) = health {
        h.stop().await;
    }
}

/// Applies what can change at run time of a reloaded configuration.
async fn apply_reload(r: &mut Reloading, health: &mut Option<Health>, reloaded: Reloaded<Loaded>) {
    use transport::tdaemon::{changed, needs_restart};
    let name = crate::entry::NAME;
    let new = &reloaded.new.settings;
    let addrs = new.nodes.addrs();
    if addrs != r.nodes_in_force {
        let expected = NodeList {
            addrs: addrs.clone(),
        };
        match take_nodes(&r.client, &expected, &new.nodes.file, &r.requests).await {
            Ok(()) => {
                changed(name, "nodes", &r.nodes_in_force, &addrs);
                r.nodes_in_force = addrs;
            }
            Err((_, why)) => tracing::error!(
                daemon = name,
                "reload: {} not taken, the node list in force stays: {why}",
                new.nodes.file.display()
            ),
        }
    }
    let running = health.as_ref().map(|h| h.check.clone());
    if running != new.health {
        changed(name, "[cluster] health_command", &running, &new.health);
        if let Some(h) = health.take() {
            h.stop().await;
        }
        match new.health.clone() {
            Some(check) => *health = Some(Health::start(check, r)),
            // No check any more: the node is healthy again.
            None => {
                let _ = r.inputs.send(Input::Health(true)).await;
            }
        }
    }
    let old = &r.start;
    if old.member.timing != new.member.timing {
        needs_restart(
            name,
            "[cluster] heartbeat_interval_ms / dead_after_ms / profile",
        );
    }
    if old.member.can_lead != new.member.can_lead {
        needs_restart(name, "[cluster] leader_capability");
    }
    if old.lock != new.lock {
        needs_restart(name, "[cluster] cluster_lock");
    }
    if old.pnn != new.pnn {
        needs_restart(name, "[cluster] pnn");
    }
    if old.socket != new.socket {
        needs_restart(name, "[transport] run_dir");
    }
    if old.state_file != new.state_file {
        needs_restart(name, "[cluster] state_dir");
    }
}

/// How long transportd and conntrackd may take to take a reloaded list.
const RELOAD_STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// `RELOAD_NODES`: re-reads the nodes file, which must still be the list
/// the command checked; asks the membership whether it may be taken
/// (nothing changes if not); gives it to transportd (peer links) and
/// conntrackd (whose replication it accepts), then to the membership.
/// transportd refusing stops the reload before the membership changes;
/// conntrackd absent is only logged (it reads the file when it starts).
async fn reload_nodes(client: Client, msg: Message, path: PathBuf, inputs: mpsc::Sender<Input>) {
    let result = match msg.decode_payload::<NodeList>() {
        Ok(expected) => take_nodes(&client, &expected, &path, &inputs).await,
        Err(e) => Err((ErrorCode::BadRequest, format!("reload nodes: {e}"))),
    };
    let res = match result {
        Ok(()) => client.reply(&msg, &()).await,
        Err((code, why)) => {
            tracing::warn!(reason = %why, "reloadnodes refused");
            client.reply_error(&msg, code, why).await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "cannot answer a reload request");
    }
}

/// The steps of [`reload_nodes`] after the request is decoded (shared
/// with a reload of the configuration): the file at `path` must still
/// list `expected`.
async fn take_nodes(
    client: &Client,
    expected: &NodeList,
    path: &Path,
    inputs: &mpsc::Sender<Input>,
) -> Result<(), (ErrorCode, String)> {
    let pnn = client.pnn();
    let file = NodesFile::load(path).map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
    if file.addrs() != expected.addrs {
        return Err((
            ErrorCode::Refused,
            format!("Nodes file on node {pnn} changed while reloading: run reloadnodes again"),
        ));
    }
    let ask = |input: Input| {
        let inputs = inputs.clone();
        async move {
            inputs
                .send(input)
                .await
                .map_err(|_| (ErrorCode::ShuttingDown, "clusterd is stopping".to_string()))
        }
    };
    let stopping = |_| (ErrorCode::ShuttingDown, "clusterd is stopping".to_string());
    let (tx, rx) = oneshot::channel();
    ask(Input::CheckNodes {
        nodes: file.clone(),
        reply: tx,
    })
    .await?;
    rx.await
        .map_err(stopping)?
        .map_err(|why| (ErrorCode::Refused, why))?;
    client
        .request::<_, ()>(
            Address::new(LOCAL, transport::proto::service::TRANSPORT),
            transport::proto::control::SET_NODES,
            expected,
            RELOAD_STEP_TIMEOUT,
        )
        .await
        .map_err(|e| (ErrorCode::Refused, format!("transportd: {e}")))?;
    let live: Vec<Pnn> = file.iter().map(|(p, _)| p).collect();
    if let Err(e) = client
        .request::<_, ()>(
            Address::new(LOCAL, transport::proto::service::CONNTRACKD),
            transport::msg::conntrack::SET_NODES,
            &live,
            RELOAD_STEP_TIMEOUT,
        )
        .await
    {
        tracing::warn!(error = %e, "conntrackd did not take the reloaded node list");
    }
    let (tx, rx) = oneshot::channel();
    ask(Input::ApplyNodes {
        nodes: file,
        reply: tx,
    })
    .await?;
    rx.await
        .map_err(stopping)?
        .map_err(|why| (ErrorCode::Internal, why))
}

async fn admin(client: Client, msg: Message, cmd: AdminCommand, inputs: mpsc::Sender<Input>) {
    let (tx, rx) = oneshot::channel();
    let input = Input::Admin {
        target: cmd.target,
        op: cmd.op,
        reply: tx,
    };
    if inputs.send(input).await.is_err() {
        return;
    }
    let res = match tokio::time::timeout(ADMIN_TIMEOUT * 2, rx).await {
        Ok(Ok(Ok(outcome))) => client.reply::<AdminOutcome>(&msg, &outcome).await,
        Ok(Ok(Err(e @ AdminError::NoSuchNode { .. }))) => {
            client
                .reply_error(&msg, ErrorCode::BadRequest, e.to_string())
                .await
        }
        Ok(Ok(Err(e @ AdminError::NoReply { .. }))) => {
            client
                .reply_error(&msg, ErrorCode::NodeUnreachable, e.to_string())
                .await
        }
        Ok(Err(_)) | Err(_) => {
            client
                .reply_error(&msg, ErrorCode::ShuttingDown, "clusterd is stopping")
                .await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "cannot answer an admin request");
    }
}

/// Runs clusterd over a registered client until `shutdown` resolves, a
/// `SHUTDOWN` control arrives, or transportd closes the connection; releases
/// the cluster lock on the way out.
///
/// # Errors
///
/// [`DaemonError::PnnMismatch`] if transportd serves another node,
/// [`DaemonError::TransportClosed`] if the connection closed without a
/// shutdown request, or a nodes-file error for a bad PNN.
pub async fn run(
    settings: Settings,
    client: Client,
    incoming: Incoming,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let (_, no_reloads) = mpsc::unbounded_channel();
    run_with_reloads(settings, client, incoming, shutdown, no_reloads).await
}

/// [`run`], applying each reloaded configuration of `reloads` (see
/// [`crate::entry`]): the nodes file through the `reloadnodes` path, the
/// health command settings; the others are logged as needing a restart.
///
/// # Errors
///
/// As [`run`].
pub async fn run_with_reloads(
    settings: Settings,
    client: Client,
    incoming: Incoming,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::UnboundedReceiver<Reloaded<Loaded>>,
) -> Result<(), DaemonError> {
    if client.pnn() != settings.pnn {
        return Err(DaemonError::PnnMismatch {
            file: settings.nodes.file.clone(),
            transport: client.pnn(),
            clusterd: settings.pnn,
        });
    }
    let (in_tx, in_rx) = mpsc::channel::<Input>(INPUTS);
    let (req_tx, req_rx) = mpsc::channel::<Input>(REQUESTS);
    let stats = Arc::new(Stats::default());
    let admins =
        transport::limit::InFlight::new(ADMIN_IN_FLIGHT, ADMIN_PER_CLIENT).with_bytes(ADMIN_BYTES);
    let counters = Arc::new(PeerCounters::default());
    let heartbeats = Arc::new(crate::heartbeats::HeartbeatStats::new(
        settings.member.timing.interval,
    ));
    client.set_frame_tap(peer_tap(
        in_tx.clone(),
        Arc::clone(&counters),
        Arc::clone(&heartbeats),
    ));
    {
        let (stats, admins) = (Arc::clone(&stats), admins.clone());
        client.set_statistics_hook(move || {
            let mut out = counters.snapshot();
            out.extend(heartbeats.snapshot(transport::msg::cluster::monotonic_ns()));
            out.push((
                "admin_in_flight".to_owned(),
                u64::try_from(admins.in_flight()).unwrap_or(u64::MAX),
            ));
            out.push(("admin_refused".to_owned(), stats.admin_refused.get()));
            out
        });
    }
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sender_task = tokio::spawn(sender(client.clone(), out_rx));
    let (closed_tx, closed_rx) = oneshot::channel::<()>();
    let reload_task = tokio::spawn(serve_reloads(
        Reloading {
            client: client.clone(),
            inputs: in_tx.clone(),
            requests: req_tx.clone(),
            stop: stop_rx.clone(),
            nodes_in_force: settings.nodes.addrs(),
            start: settings.clone(),
        },
        settings.health.clone(),
        reloads,
    ));
    let recv_client = client.clone();
    let nodes_path = settings.nodes.file.clone();
    let fixed = ClusterSettings {
        can_lead: settings.member.can_lead,
        cluster_lock: settings.lock.as_ref().map(LockSpec::setting),
    };
    let receiver_task = tokio::spawn(async move {
        receiver(
            recv_client,
            incoming,
            req_tx,
            admins,
            stats,
            fixed,
            nodes_path,
        )
        .await;
        let _ = closed_tx.send(());
    });
    drop(in_tx);
    let link = TransportLink {
        client: client.clone(),
        tx: out_tx,
        buf: vec![0; ENCODE_BUF],
    };
    let mut transport_closed = false;
    let requested = client.shutdown_requested();
    let stop = async {
        tokio::select! {
            () = shutdown => tracing::info!("stopping (signal)"),
            () = requested => tracing::info!("stopping (SHUTDOWN control)"),
            _ = closed_rx => {
                transport_closed = true;
                tracing::warn!("transportd closed the connection");
            }
        }
    };
    tracing::info!(
        pnn = settings.pnn,
        nodes = settings.nodes.len(),
        interval_ms = settings.member.timing.interval.as_millis(),
        dead_after_ms = settings.member.timing.dead_after.as_millis(),
        lock = settings.lock.is_some(),
        health = settings.health.is_some(),
        "clusterd running"
    );
    // The lock helper sees a `ctdb` command answering for this node
    // (CTDB's etcd helper asks `ctdb pnn`): a private symlink to the
    // ipfailover command, first on its PATH (config::ctdb_shim).
    let lock = settings.lock.clone().map(|mut spec| {
        let run_dir = settings
            .socket
            .parent()
            .unwrap_or(std::path::Path::new("/run/ipfailover"));
        match config::ctdb_shim::setup(run_dir) {
            Ok(env) => spec.env = env,
            Err(e) => tracing::warn!("cluster lock helper: {e}"),
        }
        spec
    });
    let res = shell::run_with_requests(
        settings.member,
        &settings.nodes,
        settings.pnn,
        lock,
        settings.state_file.as_deref(),
        in_rx,
        req_rx,
        link,
        stop,
    )
    .await;
    let _ = stop_tx.send(true);
    client.clear_frame_tap();
    receiver_task.abort();
    // Stops the health monitor too (which also stops by itself on
    // `stop_tx`); a reload caught in a transportd request is not waited
    // for beyond a second.
    let abort = reload_task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(1), reload_task)
        .await
        .is_err()
    {
        abort.abort();
    }
    // The link was dropped with the shell: the sender drains and ends.
    let _ = tokio::time::timeout(Duration::from_secs(1), sender_task).await;
    res?;
    if transport_closed && !client.is_shutdown_requested() {
        return Err(DaemonError::TransportClosed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{LegacyLog, LEGACY_LOG_EVERY};

    /// failoverd bounds what it does after a lost lease by the margin it
    /// reads from the configuration (`ClusterConfig::margin_ms`): it must
    /// be the margin this daemon's leader waits.
    #[test]
    fn the_configured_margin_is_the_timing_margin() {
        for text in [
            "",
            "[cluster]\nprofile = \"fast\"\n",
            "[cluster]\ndead_after_ms = 3000\n",
            "[cluster]\nheartbeat_interval_ms = 200\ndead_after_ms = 700\n",
        ] {
            let (c, _) = config::parse(text, std::path::Path::new("ipfailover.toml"))
                .expect("test configuration");
            let c = &c.cluster;
            let t = super::timing(
                Duration::from_millis(c.heartbeat_interval_ms()),
                Duration::from_millis(c.dead_after_ms()),
            );
            assert_eq!(t.margin, Duration::from_millis(c.margin_ms()), "{text:?}");
        }
    }

    #[test]
    fn a_legacy_peer_is_named_once_a_minute() {
        let mut log = LegacyLog::default();
        let t = Instant::now();
        assert!(log.refused(2, t));
        assert!(!log.refused(2, t + Duration::from_secs(1)));
        assert!(log.refused(1, t + Duration::from_secs(1)), "another peer");
        assert!(!log.refused(2, t + LEGACY_LOG_EVERY - Duration::from_millis(1)));
        assert!(log.refused(2, t + LEGACY_LOG_EVERY));
    }
}
