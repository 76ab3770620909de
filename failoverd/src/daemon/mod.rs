//! failoverd's daemon: the async shell around its core.
//!
//! `run(settings, client, incoming, shutdown)` connects the pure core
//! ([`crate::core`]: every decision) to the world: clusterd's news, the
//! transport, the node executor ([`crate::node`]) and tokio time. The shell
//! decides nothing itself; each duty has its file:
//!
//! * this file: the loop — news from clusterd into [`NodeCore`], timers,
//!   and carrying out the core's actions;
//! * [`lease`]: the lease watch, a task of its own that removes every
//!   public address when the lease end passes — nothing the loop does (a
//!   hook, a queue, a lock, a request) can delay it (hole 1);
//! * [`requests`]: the requests this node serves (GET_PUBLIC_IPS,
//!   RELEASE_IPS, TAKE_IPS, the CLI's changes), each in its own task, so
//!   the loop always answers; at most [`REQUESTS_IN_FLIGHT`] of clients
//!   ([`REQUESTS_PER_CLIENT`] of one, [`REQUESTS_BYTES`] of payload) and [`DAEMON_REQUESTS_IN_FLIGHT`] of
//!   the failoverds at once, more refused at once and counted
//!   (`requests_refused` in STATISTICS);
//! * [`runs`]: the leader's takeover runs and moves as tasks, and routing
//!   of IPREALLOCATE / MOVE_IP;
//! * [`adopt`]: adoption of the addresses a crashed predecessor left, and
//!   the record that makes it safe.
//!
//! On shutdown (SIGTERM, SHUTDOWN control) the addresses are dropped: once
//! this daemon is gone nothing would drop them when the lease lapses. A
//! crash (SIGKILL) leaves them; the restarted daemon adopts those the record
//! vouches for (see [`adopt`]).

mod adopt;
mod lease;
mod requests;
mod runs;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use transport::tdaemon::Reloaded;

use transport::client::{Client, ClientError, Incoming};
use transport::msg::cluster::{LeaseUpdate, Membership, Pnn, GET_MEMBERSHIP, LEASE, MEMBERSHIP};
use transport::msg::failover::{
    Ipreallocated, MoveIp, RunTimes, IPREALLOCATE, IPREALLOCATED, MOVE_IP,
};
use transport::proto::service::{CLUSTERD, FAILOVERD};
use transport::proto::{Address, ErrorCode, Message};

use crate::alloc::{Algorithm, Tunables};
use crate::core::{
    LeaderAction, LeaderConfig, LeaderCore, News, NodeAction, NodeConfig, NodeCore, Route,
};
use crate::node::{DropMode, Executor, ExecutorConfig, NodeError, NodeEvent};
use crate::public_addresses::{PublicAddress, PublicAddressesError};
use crate::record;

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The node executor could not start.
    #[error("node executor: {0}")]
    Executor(#[from] NodeError),
    /// A transport operation failed (subscribe).
    #[error("transport: {0}")]
    Transport(#[from] ClientError),
    /// public_addresses is invalid.
    #[error("{0}")]
    PublicAddresses(#[from] PublicAddressesError),
    /// The connection to transportd closed.
    #[error("the connection to transportd closed")]
    TransportClosed,
}

/// Everything `run` needs besides the transport.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The node executor's settings.
    pub executor: ExecutorConfig,
    /// The public_addresses file (for `reloadips`).
    pub public_addresses: PathBuf,
    /// Its contents at start.
    pub publics: Vec<PublicAddress>,
    /// `[failover] disabled`: host nothing, offer nothing.
    pub disabled: bool,
    /// Allocation tunables.
    pub tunables: Tunables,
    /// The lease length (clusterd's `dead_after`).
    pub lease: Duration,
    /// Time limit of the release step of a run.
    pub release_timeout: Duration,
    /// Time limit of the other requests of a run.
    pub request_timeout: Duration,
    /// The record of configured addresses (`<run_dir>/failoverd.hosted`),
    /// for adoption after a crash; `None` keeps none (nothing is adopted).
    pub record_file: Option<PathBuf>,
    /// Entries of the failover history kept (`[failover] history_size`).
    pub history_size: usize,
}

impl Settings {
    /// Settings from a loaded configuration and this node's public
    /// addresses (`path` is remembered for `reloadips`).
    pub fn from_config(
        loaded: &config::Loaded,
        path: PathBuf,
        publics: Vec<PublicAddress>,
    ) -> Settings {
        let c = &loaded.config;
        let t = &c.tunables;
        Settings {
            executor: ExecutorConfig::from_config(loaded),
            public_addresses: path,
            publics,
            disabled: c.failover.disabled,
            tunables: Tunables {
                no_ip_failback: *t.no_ip_failback.get_ref() != 0,
                no_ip_takeover: *t.no_ip_takeover.get_ref() != 0,
                algorithm: Algorithm::from_tunable(*t.ip_alloc_algorithm.get_ref()),
            },
            lease: Duration::from_millis(c.cluster.dead_after_ms()),
            release_timeout: Duration::from_millis(c.failover.release_timeout_ms),
            request_timeout: Duration::from_millis(c.failover.release_timeout_ms.max(1_000)),
            record_file: Some(loaded.resolve(&c.transport.run_dir).join(record::FILE_NAME)),
            history_size: usize::try_from(c.failover.history_size).unwrap_or(usize::MAX),
        }
    }
}

/// Applies what can change at run time of a reloaded configuration:
/// `public_addresses` (as `reloadips`, then a takeover run), the
/// `[tunables]` whose value in the file changed, `[failover]
/// history_size`; logs the others that differ from the settings failoverd
/// started with as needing a restart.
async fn apply_reload(ctx: Ctx, r: Reloaded<crate::entry::Loaded>) {
    use transport::tdaemon::{changed, needs_restart};
    let name = crate::entry::NAME;
    let (old, new) = (&r.old.settings, &r.new.settings);
    let start = &ctx.settings;
    let summary = requests::take_publics(&ctx, &new.publics).await;
    if !(summary.added.is_empty() && summary.removed.is_empty() && summary.changed.is_empty()) {
        tracing::info!(daemon = name, ?summary, "reload: public_addresses changed");
        let _ = ctx.triggers.send(Trigger::Run);
    }
    let (o, n) = (old.tunables, new.tunables);
    if o != n {
        let mut s = ctx.lock();
        if o.no_ip_failback != n.no_ip_failback {
            s.tunables.no_ip_failback = n.no_ip_failback;
            changed(
                name,
                "[tunables] no_ip_failback",
                &o.no_ip_failback,
                &n.no_ip_failback,
            );
        }
        if o.no_ip_takeover != n.no_ip_takeover {
            s.tunables.no_ip_takeover = n.no_ip_takeover;
            changed(
                name,
                "[tunables] no_ip_takeover",
                &o.no_ip_takeover,
                &n.no_ip_takeover,
            );
        }
        if o.algorithm != n.algorithm {
            s.tunables.algorithm = n.algorithm;
            changed(
                name,
                "[tunables] ip_alloc_algorithm",
                &o.algorithm,
                &n.algorithm,
            );
        }
    }
    if old.history_size != new.history_size {
        crate::history::HISTORY.set_capacity(new.history_size);
        changed(
            name,
            "[failover] history_size",
            &old.history_size,
            &new.history_size,
        );
    }
    if start.disabled != new.disabled {
        needs_restart(
            name,
            "[failover] disabled (ipfailover disable/enable acts at once)",
        );
    }
    if start.release_timeout != new.release_timeout {
        needs_restart(name, "[failover] release_timeout_ms");
    }
    if start.lease != new.lease {
        needs_restart(name, "[cluster] dead_after_ms");
    }
    if start.executor != new.executor {
        needs_restart(
            name,
            "[failover] (garp, tickle, hooks, nft_table, kernel_lease)",
        );
    }
    if start.record_file != new.record_file {
        needs_restart(name, "[transport] run_dir");
    }
}

/// State shared between the loop and the request tasks (a std mutex, never
/// held across an await).
#[derive(Debug)]
struct Shared {
    publics: BTreeMap<IpAddr, PublicAddress>,
    /// Who this node believes hosts each address (told by runs).
    owners: BTreeMap<IpAddr, Pnn>,
    /// The node side of the core: lease, run checks, leftovers.
    node: NodeCore,
    /// The allocation tunables the runs this node leads use: the file's,
    /// then whatever `setvar` set (until failoverd restarts, as CTDB).
    tunables: Tunables,
    /// The last membership change seen and the end of its takeover run
    /// (`ipfailover uptime`).
    run_times: RunTimes,
}

/// Milliseconds since the Unix epoch, now.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How often clusterd is asked for the membership besides its events (only
/// a safety net: the events carry everything).
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Time limit of that request.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// Requests of local clients and other services (the `ipfailover`
/// command, a file server) served at once; more are refused at once
/// (`requests_refused`), never queued (#14 item 2).
pub const REQUESTS_IN_FLIGHT: usize = 256;
/// Of those, requests of one client (source address) at once. A group
/// member has at most 32 connections (transportd's limit per uid), so one
/// user cannot take every place.
pub const REQUESTS_PER_CLIENT: usize = 4;
/// Payload bytes the clients' requests in flight may hold together (a
/// TICKLE or KILLTCP list can be 4 MiB).
pub const REQUESTS_BYTES: usize = 16 * 1024 * 1024;
/// Requests of the failoverds (the leader's run steps and its
/// GET_PUBLIC_IPS) served at once: a limit of their own, so that clients
/// cannot take the runs' places.
pub const DAEMON_REQUESTS_IN_FLIGHT: usize = 64;

/// The limits of requests in flight and failoverd's own counters, which
/// the STATISTICS control reports after the transport client's.
#[derive(Debug)]
struct Limits {
    clients: transport::limit::InFlight,
    daemons: transport::limit::InFlight,
    /// Requests refused over [`REQUESTS_IN_FLIGHT`] /
    /// [`REQUESTS_PER_CLIENT`] / [`DAEMON_REQUESTS_IN_FLIGHT`].
    refused: transport::limit::Refusals,
    /// IPREALLOCATE and MOVE_IP refused by the leader because
    /// [`crate::core::leader::MAX_WAITING`] wait for a run.
    leader_busy: transport::limit::Refusals,
    /// IPREALLOCATED events not from a failoverd (ignored).
    ipreallocated_ignored: transport::limit::Refusals,
}

impl Limits {
    fn new() -> Limits {
        Limits {
            clients: transport::limit::InFlight::new(REQUESTS_IN_FLIGHT, REQUESTS_PER_CLIENT)
                .with_bytes(REQUESTS_BYTES),
            daemons: transport::limit::InFlight::new(
                DAEMON_REQUESTS_IN_FLIGHT,
                DAEMON_REQUESTS_IN_FLIGHT,
            ),
            refused: transport::limit::Refusals::new(),
            leader_busy: transport::limit::Refusals::new(),
            ipreallocated_ignored: transport::limit::Refusals::new(),
        }
    }

    fn statistics(&self) -> Vec<(String, u64)> {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        vec![
            ("requests_in_flight".to_owned(), n(self.clients.in_flight())),
            (
                "daemon_requests_in_flight".to_owned(),
                n(self.daemons.in_flight()),
            ),
            ("requests_refused".to_owned(), self.refused.get()),
            ("leader_busy".to_owned(), self.leader_busy.get()),
            (
                "ipreallocated_ignored".to_owned(),
                self.ipreallocated_ignored.get(),
            ),
        ]
    }

    /// A place for a request of `msg`'s source: a failoverd's among the
    /// daemons', anyone else's among the clients'. Over the limit the
    /// refusal is counted and logged (rate-limited) and the reason
    /// returned.
    fn admit(&self, msg: &Message) -> Result<transport::limit::Permit, String> {
        let src = msg.header.src;
        let limit = if src.service == FAILOVERD {
            &self.daemons
        } else {
            &self.clients
        };
        limit.try_acquire(src, msg.payload.len()).map_err(|busy| {
            if self.refused.note() {
                tracing::warn!(
                    from = %src,
                    opcode = msg.header.opcode,
                    refused = self.refused.get(),
                    reason = %busy,
                    "request refused: failoverd is busy"
                );
            }
            format!("failoverd is busy: {busy}; try again")
        })
    }
}

/// Something a request task asks the loop to do.
#[derive(Debug)]
enum Trigger {
    /// Ask the leader for a takeover run (this node's list or interfaces
    /// changed).
    Run,
    /// The leader answered the re-request of this lease flap.
    RunSeen(u64),
    /// Public addresses of this node found configured in the kernel
    /// although it does not host them ([`rogue_check`]).
    Rogue(Vec<IpAddr>),
    /// The lease watch dropped this node's addresses at the lease end
    /// (no renewal had reached it): its share must be taken again.
    Lapsed,
}

/// How often the kernel is compared with what this node hosts, to remove
/// public addresses configured here that no plan put here (by hand, or
/// left by a crash): every second, as CTDB's recovery daemon checks.
const ROGUE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One comparison of the kernel with what this node hosts: the public
/// addresses of this node's list that are configured here but not hosted
/// go to the loop as [`Trigger::Rogue`].
async fn rogue_check(ctx: Ctx) {
    // `[failover] disabled`: this node manages no address, so it does not
    // judge the ones it finds either (something else may own them).
    if ctx.settings.disabled {
        return;
    }
    let publics: Vec<PublicAddress> = ctx.lock().publics.values().cloned().collect();
    if publics.is_empty() {
        return;
    }
    match ctx.exec.check(&publics).await {
        Ok(d) if !d.unexpected.is_empty() => {
            let _ = ctx.triggers.send(Trigger::Rogue(d.unexpected));
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "rogue address check failed"),
    }
}

#[derive(Clone)]
struct Ctx {
    client: Client,
    exec: Executor,
    shared: Arc<Mutex<Shared>>,
    pnn: Pnn,
    settings: Arc<Settings>,
    triggers: mpsc::UnboundedSender<Trigger>,
    /// The lease end the lease watch enforces.
    lease_tx: Arc<watch::Sender<Option<Instant>>>,
    /// Wakes the `ipreallocated` hook runner: events that come while a run
    /// is pending make one run, not one each (a flood of IPREALLOCATED
    /// cannot queue hook runs without bound).
    ipreallocated: Arc<tokio::sync::Notify>,
    /// Wakes the record writer ([`adopt::record_writer`]): the record's
    /// fsync never runs in the loop.
    record_wake: Arc<tokio::sync::Notify>,
    /// Requests in flight and refusals.
    limits: Arc<Limits>,
}

impl Ctx {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding this lock leaves plain data; keep going.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn leader(&self) -> Option<Pnn> {
        self.lock().node.leader()
    }

    /// The lease is valid now.
    fn lease_valid(&self) -> bool {
        self.lock().node.lease_valid(lease::now())
    }
}

/// Runs failoverd until `shutdown` resolves, a SHUTDOWN control arrives or
/// the transport closes. Drops every public address before returning.
/// The intake of clusterd's lease news runs on `lease_rt` (the lease
/// path's runtime, where the client's reader runs too), the kernel lease's
/// keeper on `keeper_rt` (see `entry`).
///
/// # Errors
///
/// [`DaemonError::Executor`] when the executor cannot start,
/// [`DaemonError::Transport`] when subscribing fails,
/// [`DaemonError::TransportClosed`] when transportd went away.
pub async fn run(
    settings: Settings,
    client: Client,
    incoming: Incoming,
    shutdown: impl Future<Output = ()>,
    lease_rt: &tokio::runtime::Handle,
    keeper_rt: &tokio::runtime::Handle,
) -> Result<(), DaemonError> {
    let (_, no_reloads) = mpsc::unbounded_channel();
    run_with_reloads(
        settings, client, incoming, shutdown, lease_rt, keeper_rt, no_reloads,
    )
    .await
}

/// [`run`], applying each reloaded configuration of `reloads` (see
/// [`crate::entry`]).
///
/// # Errors
///
/// As [`run`].
pub async fn run_with_reloads(
    settings: Settings,
    client: Client,
    mut incoming: Incoming,
    shutdown: impl Future<Output = ()>,
    lease_rt: &tokio::runtime::Handle,
    keeper_rt: &tokio::runtime::Handle,
    mut reloads: mpsc::UnboundedReceiver<Reloaded<crate::entry::Loaded>>,
) -> Result<(), DaemonError> {
    let pnn = client.pnn();
    let (exec, mut node_events) = Executor::start_on(
        settings.executor.clone(),
        Some(client.clone()),
        Some(keeper_rt),
    )
    .await?;
    tracing::info!(pnn, addresses = settings.publics.len(), "failoverd started");
    crate::history::HISTORY.set_capacity(settings.history_size);
    let known: Vec<IpAddr> = settings.publics.iter().map(|p| p.addr).collect();
    exec.guard(&known).await?;
    let lease_len = settings.lease.max(Duration::from_millis(1));
    let node = NodeCore::new(NodeConfig {
        disabled: settings.disabled,
        ..NodeConfig::new(pnn, lease_len)
    });
    let shared = Shared {
        publics: settings
            .publics
            .iter()
            .map(|p| (p.addr, p.clone()))
            .collect(),
        owners: BTreeMap::new(),
        node,
        tunables: settings.tunables,
        run_times: RunTimes::default(),
    };
    // No lease until clusterd says so.
    exec.set_lease(None);
    let (lease_tx, lease_rx) = watch::channel(None);
    let (trigger_tx, mut triggers) = mpsc::unbounded_channel();
    let watch_task = tokio::spawn(lease::watch(exec.clone(), lease_rx, trigger_tx.clone()));
    let ipreallocated = Arc::new(tokio::sync::Notify::new());
    let realloc_task = {
        let (exec, wake) = (exec.clone(), Arc::clone(&ipreallocated));
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                let _ = exec.ipreallocated().await;
            }
        })
    };
    let record_wake = Arc::new(tokio::sync::Notify::new());
    let record_task = settings.record_file.clone().map(|path| {
        tokio::spawn(adopt::record_writer(
            exec.clone(),
            path,
            Arc::clone(&record_wake),
        ))
    });
    let ctx = Ctx {
        client: client.clone(),
        exec: exec.clone(),
        shared: Arc::new(Mutex::new(shared)),
        pnn,
        settings: Arc::new(settings),
        triggers: trigger_tx,
        lease_tx: Arc::new(lease_tx),
        ipreallocated,
        record_wake,
        limits: Arc::new(Limits::new()),
    };
    {
        // The request limits' counters, then the operation counters
        // (failoverd/src/counters.rs: takes, releases, announcements, ...).
        let limits = Arc::clone(&ctx.limits);
        client.set_statistics_hook(move || {
            let mut all = limits.statistics();
            all.extend(crate::counters::snapshot());
            all
        });
    }
    // clusterd's LEASE events skip the loop (see `lease_intake`): the
    // reader's tap hands them to a task that applies them at once.
    let (lease_news_tx, lease_news_rx) = mpsc::unbounded_channel::<LeaseUpdate>();
    let (tapped_tx, mut tapped) = mpsc::unbounded_channel::<NodeAction>();
    client.set_frame_tap(lease_tap(pnn, lease_news_tx));
    // On the lease path's runtime (see `entry`), beside the client's
    // reader: nothing on the daemon's runtime delays it.
    let intake_task = lease_rt.spawn(lease_intake(ctx.clone(), lease_news_rx, tapped_tx));
    client.subscribe(MEMBERSHIP).await?;
    client.subscribe(LEASE).await?;
    client.subscribe(IPREALLOCATED).await?;

    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rogue = tokio::time::interval(ROGUE_CHECK_EVERY);
    rogue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (memb_tx, mut memb_rx) = mpsc::unbounded_channel::<News>();
    // Addresses left in the kernel by a crashed predecessor are adopted when
    // clusterd first speaks; without a word from it within a lease (and a
    // little), they are removed.
    let adopt_by = Instant::now() + lease_len + Duration::from_millis(100);
    let mut adopted = false;
    let mut leader: LeaderCore<Message> = LeaderCore::new(LeaderConfig::new(pnn));
    let mut runs = runs::Runs::default();
    let shutdown_control = client.shutdown_requested();
    let closed = client.closed();
    tokio::pin!(shutdown, shutdown_control, closed);

    let result = loop {
        let deadline = {
            let s = ctx.lock();
            [s.node.next_deadline(), leader.next_deadline()]
                .into_iter()
                .flatten()
                .min()
        };
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(lease::instant(at)).await,
                None => std::future::pending().await,
            }
        };
        let job_done = runs.done();
        let mut node_out = Vec::new();
        let mut leader_out = Vec::new();
        tokio::select! {
            // News first: a renewal already queued must not lose to the
            // timers (the lease watch does not wait for the loop anyway).
            biased;
            () = &mut shutdown => break Ok(()),
            () = &mut shutdown_control => break Ok(()),
            () = &mut closed => break Err(DaemonError::TransportClosed),
            Some(news) = memb_rx.recv() => {
                if let News::Membership(m) = &news {
                    let mut s = ctx.lock();
                    let t = &mut s.run_times;
                    if t.changed_unix_ms.is_none() || t.generation != m.generation {
                        t.generation = m.generation;
                        t.changed_unix_ms = Some(unix_ms());
                        t.run_done_unix_ms = None;
                    }
                    drop(s);
                    observe_membership(&ctx, m);
                    tracing::debug!(
                        generation = m.generation,
                        leader = ?m.leader,
                        at_ns = m.lease.at_ns,
                        "membership news"
                    );
                }
                let first = !adopted && matches!(news, News::Membership(_));
                ctx.lock().node.news(lease::now(), news, &mut node_out);
                if first {
                    adopted = true;
                    // The gate and the lease watch know the lease before
                    // adoption: it may wait for hooks, the watch does not.
                    let until = {
                        let s = ctx.lock();
                        s.node
                            .lease_until()
                            .filter(|_| s.node.lease_valid(lease::now()))
                            .map(lease::instant)
                    };
                    ctx.exec.set_lease(until);
                    ctx.lease_tx.send_replace(until);
                    let since = {
                        let s = ctx.lock();
                        (s.node.lease_valid(lease::now()) && s.node.lease_since_ns() > 0)
                            .then(|| s.node.lease_since_ns())
                    };
                    adopt::adopt(&ctx, since).await;
                }
            }
            msg = incoming.recv() => match msg {
                None => break Err(DaemonError::TransportClosed),
                Some(msg) => on_message(&ctx, &mut leader, msg, &memb_tx, &mut leader_out).await,
            },
            Some(a) = tapped.recv() => node_out.push(a),
            Some(r) = reloads.recv() => {
                tokio::spawn(apply_reload(ctx.clone(), r));
            }
            Some(ev) = node_events.recv() => {
                on_node_event(&ctx, &mut leader, ev, &mut node_out, &mut leader_out);
            }
            Some(t) = triggers.recv() => match t {
                Trigger::Run => request_run(&ctx, &mut leader, &mut node_out, &mut leader_out),
                Trigger::RunSeen(epoch) => ctx.lock().node.run_seen(epoch),
                Trigger::Rogue(list) => on_rogue(&ctx, list, &mut node_out),
                Trigger::Lapsed => {
                    // The lease may be valid again already (news queued
                    // behind a freeze renew it before the core noticed the
                    // end), so the core need not have seen a lapse: ask for
                    // the run that takes this node's share back either way
                    // (the leader side runs it itself).
                    tracing::info!("addresses dropped at the lease end: asking for a takeover run");
                    request_run(&ctx, &mut leader, &mut node_out, &mut leader_out);
                }
            },
            () = timer => {
                let now = lease::now();
                ctx.lock().node.tick(now, &mut node_out);
                leader.tick(now, &mut leader_out);
            }
            () = tokio::time::sleep_until(adopt_by), if !adopted => {
                adopted = true;
                tracing::warn!("no word from clusterd since the start: removing leftover public addresses");
                adopt::adopt(&ctx, None).await;
            }
            // After adoption: before it, a predecessor's addresses are
            // not hosted yet and adoption decides about them.
            _ = rogue.tick(), if adopted => {
                tokio::spawn(rogue_check(ctx.clone()));
            }
            _ = poll.tick() => {
                let client = ctx.client.clone();
                let tx = memb_tx.clone();
                tokio::spawn(async move {
                    let r: Result<Membership, _> = client
                        .request(Address::local(CLUSTERD), GET_MEMBERSHIP, &(), POLL_TIMEOUT)
                        .await;
                    if let Ok(m) = r {
                        let _ = tx.send(News::Membership(m));
                    }
                });
            }
            (seq, done) = job_done => {
                runs.finished(&ctx, &mut leader, seq, done, &mut leader_out).await;
            }
        }
        // Carry out what the core decided (the node's actions may feed the
        // leader side, whose actions are carried out after).
        for a in node_out {
            on_node_action(&ctx, &mut leader, a, &mut leader_out).await;
        }
        while !leader_out.is_empty() {
            let actions = std::mem::take(&mut leader_out);
            for a in actions {
                runs.carry_out(&ctx, &mut leader, a, &mut leader_out).await;
            }
        }
    };
    runs.abort();
    client.clear_frame_tap();
    intake_task.abort();
    watch_task.abort();
    realloc_task.abort();
    if let Some(t) = record_task {
        t.abort();
    }
    drop_all(&ctx, false).await;
    exec.shutdown();
    tracing::info!(pnn, "failoverd stopped");
    result
}

/// Tells the failover history ([`crate::history`]) about a membership
/// (observation only); for a node newly seen disconnected, asks clusterd
/// when it last heard it (`peerN_heartbeat_silence_ms` in its STATISTICS),
/// in a task of its own.
fn observe_membership(ctx: &Ctx, m: &Membership) {
    use crate::history::{now_ns, HISTORY};
    let newly = HISTORY.membership(m, now_ns());
    if newly.is_empty() {
        return;
    }
    let client = ctx.client.clone();
    tokio::spawn(async move {
        let r: Result<transport::proto::control::Statistics, _> = client
            .request(
                Address::local(CLUSTERD),
                transport::proto::control::STATISTICS,
                &(),
                POLL_TIMEOUT,
            )
            .await;
        let now = now_ns();
        match r {
            Ok(stats) => {
                for pnn in newly {
                    if let Some(ms) = stats.get(&format!("peer{pnn}_heartbeat_silence_ms")) {
                        HISTORY.heard(pnn, now.saturating_sub(ms.saturating_mul(1_000_000)));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "no heartbeat times from clusterd for the history")
            }
        }
    });
}

/// Public addresses configured here that this node does not host (an
/// `ip addr add` by hand, a copy a crash left): CTDB's recovery daemon
/// removes such copies, and so does this node — as leftovers (hole 6):
/// reported to the leader as configured here until the removal is seen
/// in a dump, retried until it works. An address taken meanwhile is left
/// alone (the removal re-checks under the executor's operation lock).
fn on_rogue(ctx: &Ctx, list: Vec<IpAddr>, out: &mut Vec<NodeAction>) {
    let hosted: Vec<IpAddr> = ctx.exec.hosted().iter().map(|h| h.public.addr).collect();
    let now = lease::now();
    let mut s = ctx.lock();
    let rogue: Vec<IpAddr> = list
        .into_iter()
        .filter(|a| !hosted.contains(a) && !s.node.leftovers().contains(a))
        .collect();
    if rogue.is_empty() {
        return;
    }
    tracing::warn!(addresses = ?rogue, "public addresses configured here that this node does not host (added by hand or left behind): removing them");
    for a in &rogue {
        s.node.leftover(now, *a);
    }
    out.push(NodeAction::RemoveLeftovers(rogue));
}

/// Carries out one action of the node core.
async fn on_node_action(
    ctx: &Ctx,
    leader: &mut LeaderCore<Message>,
    action: NodeAction,
    leader_out: &mut Vec<LeaderAction<Message>>,
) {
    match action {
        NodeAction::SetLease(_) => apply_lease(ctx, &ctx.lock()),
        NodeAction::DropAll => {
            ctx.exec.set_lease(None);
            ctx.lease_tx.send_replace(None);
            if !ctx.exec.hosted().is_empty() {
                tracing::error!("the lease is not valid: dropping every public address");
            }
            drop_all(ctx, true).await;
        }
        NodeAction::RequestRun { leader: to, epoch } => {
            tracing::info!(leader = to, "asking the leader for a takeover run");
            runs::ask_for_run(ctx, to, Some(epoch));
        }
        NodeAction::RemoveLeftovers(list) => {
            let ctx = ctx.clone();
            tokio::spawn(async move { requests::remove_leftovers(&ctx, &list).await });
        }
        NodeAction::Membership(copy) => {
            // The core's membership as it is now, not the action's copy
            // (the lease intake runs beside this loop): but a lapse the core
            // has got over meanwhile still goes first (`leader_feed`).
            let current = ctx.lock().node.membership().cloned();
            for m in crate::core::leader_feed(copy, current.as_ref()) {
                if m.lease_ok && !leader.active() && m.leader == Some(ctx.pnn) {
                    tracing::info!(generation = m.generation, "this node leads: takeover runs");
                }
                let was = leader.active();
                leader.membership(lease::now(), &m, leader_out);
                if was && !leader.active() {
                    tracing::info!(leader = ?m.leader, lease_ok = m.lease_ok, "this node no longer leads");
                }
            }
        }
    }
}

/// Gives the executor's gate and the lease watch the core's lease end as
/// it is now (`s` is the locked shared state: the loop and the lease
/// intake both apply the core's decisions, and holding the core's lock
/// while carrying them out keeps them in the core's order — an end the
/// loop computed cannot overwrite a later one the intake applied meanwhile).
fn apply_lease(ctx: &Ctx, s: &Shared) {
    let now = lease::now();
    let until = s.node.lease_until().filter(|_| s.node.lease_valid(now));
    tracing::debug!(
        ends_in_ms = until.map(|u| u.saturating_sub(now).as_secs_f64() * 1e3),
        "lease applied"
    );
    let until = until.map(lease::instant);
    ctx.exec.set_lease(until);
    ctx.lease_tx.send_replace(until);
}

/// Takes the LEASE events of this node's clusterd off the transport
/// client's reader (before they would queue behind the loop's other
/// messages) and hands them to [`lease_intake`] without blocking. Anything
/// else, or a LEASE from elsewhere, goes the usual way (the loop logs and
/// ignores a forged one).
fn lease_tap(pnn: Pnn, news: mpsc::UnboundedSender<LeaseUpdate>) -> transport::client::FrameTap {
    use transport::proto::Kind;
    Box::new(move |frame| {
        if frame.header.kind != Kind::Event
            || frame.header.opcode != LEASE
            || frame.header.src.pnn != pnn
            || frame.header.src.service != CLUSTERD
        {
            return false;
        }
        match frame.decode_payload::<LeaseUpdate>() {
            Ok(u) if u.this_node == pnn => news.send(u).is_ok(),
            _ => false,
        }
    })
}

/// Applies clusterd's lease news to the node core as it arrives, not when
/// the loop gets to it: the loop may wait for a while (a hook at adoption,
/// a slow request, the scheduler), and a renewal that waits behind it lets
/// the lease watch run out on the previous end and drop every address —
/// the node flapped although clusterd's lease never lapsed (seen right
/// after a take of 256 addresses). The renewal is carried out here
/// (gate and watch, under the core's lock); a lease loss closes the gate
/// and tells the watch to drop at once (so a busy loop cannot delay the
/// drop either); every other action of the core goes to the loop.
///
/// Safety is unchanged: this only carries out the core's own decisions
/// sooner. The end given to the gate and the watch is always the core's,
/// which is clusterd's told end; the watch still removes every address
/// when it passes, and the kernel's lease elements expire by themselves.
async fn lease_intake(
    ctx: Ctx,
    mut news: mpsc::UnboundedReceiver<LeaseUpdate>,
    to_loop: mpsc::UnboundedSender<NodeAction>,
) {
    let mut out = Vec::new();
    while let Some(u) = news.recv().await {
        let now = transport::msg::cluster::monotonic_ns();
        tracing::debug!(
            computed_ms_ago = now.saturating_sub(u.lease.at_ns) as f64 / 1e6,
            ends_in_ms = u.lease.expires_ns.saturating_sub(now) as f64 / 1e6,
            "lease news received"
        );
        let s = &mut *ctx.lock();
        s.node.news(lease::now(), News::Lease(u.lease), &mut out);
        for a in out.drain(..) {
            match a {
                NodeAction::SetLease(_) => apply_lease(&ctx, s),
                NodeAction::DropAll => {
                    ctx.exec.set_lease(None);
                    ctx.lease_tx.send_replace(Some(Instant::now()));
                    let _ = to_loop.send(NodeAction::DropAll);
                }
                other => {
                    let _ = to_loop.send(other);
                }
            }
        }
    }
}

/// Drops every public address. On a lost lease (`lost`, the core's
/// `DropAll`) with [`DropMode::LeaseLost`]: the clients of the addresses
/// the kernel lease guards are reset before their removal, any other
/// address is removed first (all of them with `kernel_lease = false`,
/// where removal is the only bound), and the resets end inside the
/// leader's margin after the end of the lease that was lost — remembered
/// by the executor's gate, so a late drop (a busy loop, a renewal that
/// came after the end) removes first. On shutdown the same unless the
/// lease is still valid: then resets first (an orderly stop), within the
/// same margin after its end.
async fn drop_all(ctx: &Ctx, lost: bool) {
    let mode = if !lost && ctx.lease_valid() {
        DropMode::ResetFirst
    } else {
        DropMode::LeaseLost
    };
    let before: Vec<IpAddr> = ctx.exec.hosted().iter().map(|h| h.public.addr).collect();
    let (start_ns, at_ms, started) = (
        crate::history::now_ns(),
        unix_ms(),
        std::time::Instant::now(),
    );
    match ctx.exec.drop_all(mode).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(count = n, "dropped every public address");
            if lost {
                record_drop(&before, start_ns, at_ms, started.elapsed(), ctx.pnn);
            }
        }
        Err(e) => {
            // Which ones are still there is not known: each is a leftover
            // until a removal says it is gone (hole 6).
            tracing::error!(error = %e, "dropping public addresses failed: removing them again later");
            let now = lease::now();
            let mut s = ctx.lock();
            for a in before {
                s.node.leftover(now, a);
            }
        }
    }
}

/// Records a drop at the lease end in the failover history.
fn record_drop(addrs: &[IpAddr], start_ns: u64, at_ms: u64, took: Duration, pnn: Pnn) {
    use transport::msg::failover::{HistoryKind, HistoryMove};
    let mut e = crate::history::entry(HistoryKind::Drop, at_ms);
    e.reason = "lease loss".to_string();
    e.moves = addrs
        .iter()
        .map(|a| HistoryMove {
            addr: *a,
            from: Some(pnn),
            to: None,
            reason: "lease loss".to_string(),
        })
        .collect();
    e.release_us = Some(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    e.total_us = e.release_us.unwrap_or(0);
    crate::history::HISTORY.push(e, start_ns);
}

/// A run is wanted: the leader schedules one; a follower's core asks the
/// leader until a run answers (see [`NodeCore::run_wanted`]).
fn request_run(
    ctx: &Ctx,
    leader: &mut LeaderCore<Message>,
    node_out: &mut Vec<NodeAction>,
    out: &mut Vec<LeaderAction<Message>>,
) {
    if leader.active() {
        leader.request_run(lease::now(), out);
        return;
    }
    ctx.lock().node.run_wanted(lease::now(), node_out);
}

fn on_node_event(
    ctx: &Ctx,
    leader: &mut LeaderCore<Message>,
    ev: NodeEvent,
    node_out: &mut Vec<NodeAction>,
    out: &mut Vec<LeaderAction<Message>>,
) {
    match ev {
        NodeEvent::InterfacesChanged | NodeEvent::CannotHost { .. } => {
            tracing::info!(event = ?ev, "interfaces changed: asking for a takeover run");
            request_run(ctx, leader, node_out, out);
        }
        NodeEvent::HookFailed(f) => tracing::warn!(failure = ?f, "event hook failed"),
        NodeEvent::Leftover { addr } => {
            // Reported to the leader as configured here and removed again
            // until it works, like any other leftover (hole 6).
            tracing::warn!(%addr, "a copy no plan accounts for is configured: tracked as a leftover");
            ctx.lock().node.leftover(lease::now(), addr);
        }
        NodeEvent::HostedChanged(_) => {
            adopt::write_record(ctx);
            tracing::debug!(event = ?ev, "node event");
        }
        other => tracing::debug!(event = ?other, "node event"),
    }
}

async fn reply<T: serde::Serialize + ?Sized>(ctx: &Ctx, req: &Message, value: &T) {
    if let Err(e) = ctx.client.reply(req, value).await {
        tracing::debug!(error = %e, "reply failed");
    }
}

async fn reply_error(ctx: &Ctx, req: &Message, code: ErrorCode, message: impl Into<String>) {
    if let Err(e) = ctx.client.reply_error(req, code, message).await {
        tracing::debug!(error = %e, "error reply failed");
    }
}

/// Routes a leader-only request (IPREALLOCATE, MOVE_IP): served here when
/// this node leads, forwarded to the leader when it came from this node,
/// refused when another node forwarded it (never bounced: hole 4).
async fn route(
    ctx: &Ctx,
    leader: &mut LeaderCore<Message>,
    msg: Message,
    out: &mut Vec<LeaderAction<Message>>,
) {
    let route = ctx.lock().node.route(msg.header.src.pnn, leader.active());
    match route {
        Route::Serve if msg.header.opcode == MOVE_IP => match msg.decode_payload::<MoveIp>() {
            Ok(mv) => leader.move_ip(lease::now(), mv, msg, out),
            Err(e) => reply_error(ctx, &msg, ErrorCode::BadRequest, e.to_string()).await,
        },
        Route::Serve => leader.ipreallocate(lease::now(), msg, out),
        Route::Forward(to) => match ctx.limits.admit(&msg) {
            Ok(permit) => runs::forward(ctx, msg, to, permit),
            Err(why) => reply_error(ctx, &msg, ErrorCode::Refused, why).await,
        },
        Route::Refuse => {
            let why = match ctx.leader() {
                None => "no leader".to_string(),
                Some(l) => format!("node {} does not lead (it follows {l})", ctx.pnn),
            };
            reply_error(ctx, &msg, ErrorCode::Refused, why).await;
        }
    }
}

async fn on_message(
    ctx: &Ctx,
    leader: &mut LeaderCore<Message>,
    msg: Message,
    memb_tx: &mpsc::UnboundedSender<News>,
    out: &mut Vec<LeaderAction<Message>>,
) {
    use transport::proto::Kind;
    let op = msg.header.opcode;
    if msg.header.kind == Kind::Event {
        match op {
            // Membership decides whether this node may hold addresses: only
            // this node's own clusterd is believed.
            MEMBERSHIP
                if msg.header.src.pnn != ctx.client.pnn() || msg.header.src.service != CLUSTERD =>
            {
                tracing::warn!(from = %msg.header.src, "MEMBERSHIP not from this node's clusterd: ignored");
            }
            MEMBERSHIP => match msg.decode_payload::<Membership>() {
                Ok(m) if m.this_node != ctx.client.pnn() => {
                    tracing::warn!(
                        this_node = m.this_node,
                        "MEMBERSHIP for another node: ignored"
                    );
                }
                Ok(m) => {
                    let _ = memb_tx.send(News::Membership(m));
                }
                Err(e) => tracing::warn!(error = %e, "bad MEMBERSHIP event"),
            },
            LEASE
                if msg.header.src.pnn != ctx.client.pnn() || msg.header.src.service != CLUSTERD =>
            {
                tracing::warn!(from = %msg.header.src, "LEASE not from this node's clusterd: ignored");
            }
            LEASE => match msg.decode_payload::<LeaseUpdate>() {
                Ok(u) if u.this_node != ctx.client.pnn() => {
                    tracing::warn!(this_node = u.this_node, "LEASE for another node: ignored");
                }
                Ok(u) => {
                    let now = transport::msg::cluster::monotonic_ns();
                    tracing::debug!(
                        computed_ms_ago = now.saturating_sub(u.lease.at_ns) as f64 / 1e6,
                        ends_in_ms = u.lease.expires_ns.saturating_sub(now) as f64 / 1e6,
                        "lease news received"
                    );
                    let _ = memb_tx.send(News::Lease(u.lease));
                }
                Err(e) => tracing::warn!(error = %e, "bad LEASE event"),
            },
            // Broadcast by the leader's failoverd after each run; from
            // anything else it is ignored (#14: any local service could
            // make every node run its hooks).
            IPREALLOCATED if msg.header.src.service != FAILOVERD => {
                // Counted; the first 8 and then one per thousand logged: a
                // flood must not flood the log.
                let ignored = &ctx.limits.ipreallocated_ignored;
                if ignored.note() {
                    tracing::warn!(from = %msg.header.src, ignored = ignored.get(), "IPREALLOCATED not from a failoverd: ignored");
                }
            }
            IPREALLOCATED => {
                if let Ok(r) = msg.decode_payload::<Ipreallocated>() {
                    let mut s = ctx.lock();
                    let t = &mut s.run_times;
                    if r.generation >= t.generation && t.run_done_unix_ms.is_none() {
                        t.run_done_unix_ms = Some(unix_ms());
                    }
                }
                ctx.ipreallocated.notify_one();
            }
            _ => tracing::debug!(opcode = op, "unexpected event"),
        }
        return;
    }
    if msg.header.kind != Kind::Request {
        return;
    }
    match op {
        IPREALLOCATE | MOVE_IP => route(ctx, leader, msg, out).await,
        // Each in a task of its own, at most REQUESTS_IN_FLIGHT of the
        // clients' (and DAEMON_REQUESTS_IN_FLIGHT of the failoverds'): over
        // it refused at once, never queued.
        _ => match ctx.limits.admit(&msg) {
            Ok(permit) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    requests::serve(&ctx, msg).await;
                    drop(permit);
                });
            }
            Err(why) => reply_error(ctx, &msg, ErrorCode::Refused, why).await,
        },
    }
}
