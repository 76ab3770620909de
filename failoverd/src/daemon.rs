//! failoverd's daemon loop: `run(settings, client, incoming, shutdown)`.
//!
//! One loop owns the cluster-facing state: the membership it follows, the
//! leader's takeover runs (one at a time, abandoned when a newer generation
//! overtakes them), the IPREALLOCATE waiters and the moveip queue. Requests
//! that wait for the node executor (GET_PUBLIC_IPS, RELEASE_IPS, TAKE_IPS,
//! the CLI's changes) run in their own tasks, so the loop always answers —
//! the leader asks its own failoverd for its report like any other node's.
//!
//! Safety duties of this module:
//! * **The lease.** clusterd tells this node's daemons when its lease ends
//!   (`LEASE` events about four times per lease, and `Membership::lease`),
//!   as `CLOCK_MONOTONIC` instants. failoverd keeps the latest (ordered by
//!   the news' own timestamp, so an old poll answer never undoes newer
//!   news), hands it to the executor's lease gate, and when it passes
//!   without renewal — clusterd said the lease ended, or clusterd is dead
//!   or hung — every public address is removed at once
//!   ([`Executor::drop_all`] with [`DropMode::RemoveFirst`]). The leader
//!   gives a node's addresses away only a margin after that instant. Once
//!   the lease is valid again the node asks the leader for a run to get
//!   addresses back.
//! * TAKE is refused unless it comes from the leader this node follows, for
//!   a generation not older than this node's, while the lease is valid; the
//!   same check runs again under the executor's operation lock right before
//!   the kernel is touched, and the executor's lease gate undoes an add that
//!   raced with the end of the lease.
//! * On shutdown (SIGTERM, SHUTDOWN control) the addresses are dropped:
//!   once this daemon is gone nothing would drop them when the lease lapses.
//!   A crash (SIGKILL) leaves them; the restarted daemon adopts them — but
//!   only once clusterd confirms a valid lease (then the leader cannot have
//!   given them away: it needs this node's report or its lease to lapse).
//!   If the first membership says the lease is not valid, or clusterd says
//!   nothing within one lease of the start, the leftovers are adopted and
//!   dropped at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use transport::client::{Client, ClientError, Incoming};
use transport::msg::cluster::{
    monotonic_ns, Lease, LeaseUpdate, Membership, Pnn, GET_MEMBERSHIP, LEASE, MEMBERSHIP,
};
use transport::msg::conntrack::TrackedConnection;
use transport::msg::failover::{
    AddIp, ConnectionPair, DelIp, Gratarp, HookFailureInfo, IfaceInfo, IpStatus, KillTcp, MoveIp,
    PublicIp, PublicIps, ReleaseIps, ReloadSummary, SetIfaceLink, StepResult, TakeIps, ADD_IP,
    DEL_IP, GET_IP_STATUS, GET_PUBLIC_IPS, GRATARP, IPREALLOCATE, IPREALLOCATED, KILLTCP, MOVE_IP,
    RELEASE_IPS, RELOAD_IPS, SET_IFACE_LINK, TAKE_IPS, TICKLE,
};
use transport::proto::service::{CLUSTERD, FAILOVERD};
use transport::proto::{Address, ErrorCode, Message};

use crate::alloc::{Algorithm, Tunables};
use crate::leader::{self, RunError, RunReport, RunSettings};
use crate::node::{DropMode, Executor, ExecutorConfig, NodeError, NodeEvent};
use crate::public_addresses::{self, PublicAddress, PublicAddressesError};
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
        }
    }
}

/// State shared between the loop and the request tasks (a std mutex, never
/// held across an await).
#[derive(Debug, Default)]
struct Shared {
    publics: BTreeMap<IpAddr, PublicAddress>,
    /// Who this node believes hosts each address (told by runs).
    owners: BTreeMap<IpAddr, Pnn>,
    membership: Option<Membership>,
    lease: LeaseTrack,
}

/// What failoverd knows of this node's lease.
#[derive(Debug, Default)]
struct LeaseTrack {
    /// `at_ns` of the newest lease news applied.
    lease_at: u64,
    /// `at_ns` of the newest membership applied.
    memb_at: u64,
    /// When the lease ends (`None`: not valid).
    until: Option<Instant>,
    /// When the current unbroken lease began (`CLOCK_MONOTONIC` ns).
    since_ns: u64,
}

impl LeaseTrack {
    fn valid_now(&self) -> bool {
        self.until.is_some_and(|u| Instant::now() < u)
    }
}

/// The tokio instant of a lease's end (`None` when not valid).
fn lease_end(lease: &Lease) -> Option<Instant> {
    if lease.expires_ns == 0 {
        return None;
    }
    let now_ns = monotonic_ns();
    let now = Instant::now();
    if lease.expires_ns > now_ns {
        Some(now + lease.remaining(now_ns))
    } else {
        Some(now)
    }
}

/// News from clusterd, in the order the loop receives them.
#[derive(Debug)]
enum News {
    Membership(Membership),
    Lease(Lease),
}

/// How often clusterd is asked for the membership besides its events (only
/// a safety net: the events carry everything).
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Time limit of that request.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// Something a request task asks the loop to do.
#[derive(Debug)]
enum Trigger {
    /// Ask the leader for a takeover run (this node's list or interfaces
    /// changed).
    Run,
}

#[derive(Clone)]
struct Ctx {
    client: Client,
    exec: Executor,
    shared: Arc<Mutex<Shared>>,
    pnn: Pnn,
    settings: Arc<Settings>,
    triggers: mpsc::UnboundedSender<Trigger>,
}

impl Ctx {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding this lock leaves plain data; keep going.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn leader(&self) -> Option<Pnn> {
        self.lock().membership.as_ref().and_then(|m| m.leader)
    }
}

enum JobKind {
    Run,
    Move(Box<Message>),
}

enum JobOutput {
    Run(Result<RunReport, RunError>),
    Move(Result<BTreeMap<IpAddr, Pnn>, RunError>),
}

struct Job {
    seq: u64,
    generation: u64,
    kind: JobKind,
    handle: JoinHandle<JobOutput>,
}

/// The leader's bookkeeping.
#[derive(Default)]
struct LeaderState {
    active: bool,
    last_owner: BTreeMap<IpAddr, Pnn>,
    need_run: bool,
    next_seq: u64,
    job: Option<Job>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// IPREALLOCATE requests: answered when a run with seq >= the stored
    /// one completes.
    waiters: Vec<(u64, Message)>,
    moves: VecDeque<(MoveIp, Message)>,
    force_rebalance: Vec<Pnn>,
    /// This node dropped its addresses (lease lost): once the lease is back
    /// it asks for a run, or nothing would give them back.
    lost_lease: bool,
}

/// Runs failoverd until `shutdown` resolves, a SHUTDOWN control arrives or
/// the transport closes. Drops every public address before returning.
///
/// # Errors
///
/// [`DaemonError::Executor`] when the executor cannot start,
/// [`DaemonError::Transport`] when subscribing fails,
/// [`DaemonError::TransportClosed`] when transportd went away.
pub async fn run(
    settings: Settings,
    client: Client,
    mut incoming: Incoming,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let pnn = client.pnn();
    let (exec, mut node_events) =
        Executor::start(settings.executor.clone(), Some(client.clone())).await?;
    tracing::info!(pnn, addresses = settings.publics.len(), "failoverd started");
    let known: Vec<IpAddr> = settings.publics.iter().map(|p| p.addr).collect();
    exec.guard(&known).await?;
    let shared = Shared {
        publics: settings
            .publics
            .iter()
            .map(|p| (p.addr, p.clone()))
            .collect(),
        owners: BTreeMap::new(),
        membership: None,
        lease: LeaseTrack::default(),
    };
    // No lease until clusterd says so.
    exec.set_lease(None);
    let (trigger_tx, mut triggers) = mpsc::unbounded_channel();
    let ctx = Ctx {
        client: client.clone(),
        exec: exec.clone(),
        shared: Arc::new(Mutex::new(shared)),
        pnn,
        settings: Arc::new(settings),
        triggers: trigger_tx,
    };
    client.subscribe(MEMBERSHIP).await?;
    client.subscribe(LEASE).await?;
    client.subscribe(IPREALLOCATED).await?;

    let lease = ctx.settings.lease.max(Duration::from_millis(1));
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (memb_tx, mut memb_rx) = mpsc::unbounded_channel::<News>();
    // Addresses left in the kernel by a crashed predecessor are adopted when
    // clusterd first speaks; without a word from it within a lease (and a
    // little), they are removed.
    let adopt_by = Instant::now() + lease + Duration::from_millis(100);
    let mut adopted = false;
    let mut leader = LeaderState {
        backoff: Duration::from_millis(50),
        ..LeaderState::default()
    };
    let shutdown_control = client.shutdown_requested();
    let closed = client.closed();
    tokio::pin!(shutdown, shutdown_control, closed);

    let result = loop {
        let job_done = async {
            match leader.job.as_mut() {
                Some(job) => Some((&mut job.handle).await),
                None => std::future::pending().await,
            }
        };
        let retry = async {
            match leader.retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let lease_until = ctx.lock().lease.until;
        let lease_end = async {
            match lease_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // News first: a renewal already queued must not lose to the
            // lease timer.
            biased;
            () = &mut shutdown => break Ok(()),
            () = &mut shutdown_control => break Ok(()),
            () = &mut closed => break Err(DaemonError::TransportClosed),
            msg = incoming.recv() => match msg {
                None => break Err(DaemonError::TransportClosed),
                Some(msg) => on_message(&ctx, &mut leader, msg, &memb_tx).await,
            },
            Some(ev) = node_events.recv() => on_node_event(&ctx, &mut leader, ev),
            Some(t) = triggers.recv() => match t {
                Trigger::Run => request_run(&ctx, &mut leader),
            },
            Some(news) = memb_rx.recv() => {
                if let Some(m) = apply_news(&ctx, news) {
                    if !adopted {
                        adopted = true;
                        let since = {
                            let s = ctx.lock();
                            (m.lease_ok && s.lease.since_ns > 0).then_some(s.lease.since_ns)
                        };
                        adopt(&ctx, since).await;
                    }
                    on_membership(&ctx, &mut leader, m).await;
                }
            }
            () = lease_end => {
                // The last lease end clusterd told of has passed without a
                // renewal: clusterd said it ended, or it is dead or hung.
                let stored = {
                    let mut s = ctx.lock();
                    s.lease.until = None;
                    s.membership.as_mut().map(|m| {
                        m.lease_ok = false;
                        m.clone()
                    })
                };
                ctx.exec.set_lease(None);
                if !ctx.exec.hosted().is_empty() {
                    tracing::error!("the lease ended without renewal from clusterd: dropping every public address");
                }
                match stored {
                    Some(m) => on_membership(&ctx, &mut leader, m).await,
                    None => drop_all(&ctx).await,
                }
            }
            () = tokio::time::sleep_until(adopt_by), if !adopted => {
                adopted = true;
                tracing::warn!("no word from clusterd since the start: removing leftover public addresses");
                adopt(&ctx, None).await;
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
            done = job_done => {
                if let Some(done) = done {
                    on_job_done(&ctx, &mut leader, done).await;
                }
            }
            () = retry => {
                leader.retry_at = None;
            }
        }
        maybe_start_job(&ctx, &mut leader);
    };
    if let Some(job) = leader.job.take() {
        job.handle.abort();
    }
    drop_all(&ctx).await;
    exec.shutdown();
    tracing::info!(pnn, "failoverd stopped");
    result
}

/// Adopts the public addresses already in the kernel (restart without a
/// blip) that the record says this node configured during its current
/// unbroken lease (`lease_since_ns`; `None`: no valid lease); removes every
/// other public address it finds, and any recorded one that is no longer in
/// public_addresses. See [`record`].
async fn adopt(ctx: &Ctx, lease_since_ns: Option<u64>) {
    let recorded = ctx.settings.record_file.as_deref().and_then(record::load);
    let ok = if ctx.settings.disabled {
        BTreeMap::new()
    } else {
        record::adoptable(recorded.as_ref(), &record::boot_id(), lease_since_ns)
    };
    let publics: Vec<PublicAddress> = ctx.lock().publics.values().cloned().collect();
    let keep: Vec<(PublicAddress, u64)> = publics
        .iter()
        .filter_map(|p| ok.get(&p.addr).map(|at| (p.clone(), *at)))
        .collect();
    let adopted = match ctx.exec.adopt(&keep).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "adoption of configured addresses failed");
            Vec::new()
        }
    };
    if !adopted.is_empty() {
        tracing::info!(
            ?adopted,
            "public addresses configured before a restart: adopted"
        );
        let mut s = ctx.lock();
        for a in &adopted {
            s.owners.insert(*a, ctx.pnn);
        }
    }
    // Everything else that may be in the kernel is not ours to keep: public
    // addresses configured but not adopted, and recorded addresses that are
    // no longer listed (an `addip` before the crash, a reloadips since).
    let unlisted = recorded
        .iter()
        .flat_map(|r| r.entries.keys())
        .filter(|a| !publics.iter().any(|p| p.addr == **a))
        .copied();
    let mut remove: Vec<IpAddr> = match ctx.exec.check(&publics).await {
        Ok(d) => d.unexpected,
        Err(_) => publics
            .iter()
            .map(|p| p.addr)
            .filter(|a| !adopted.contains(a))
            .collect(),
    };
    remove.extend(unlisted);
    if !remove.is_empty() {
        tracing::warn!(
            addresses = ?remove,
            lease_since_ns,
            "public addresses this node may not keep (configured before its lease last broke, unknown to the record, or no longer listed): removing any left in the kernel"
        );
        for (addr, r) in ctx.exec.release_many(&remove).await {
            if let Err(e) = r {
                tracing::error!(%addr, error = %e, "cannot remove a leftover address");
            }
        }
    }
    if lease_since_ns.is_none() {
        drop_all(ctx).await;
    }
    write_record(ctx);
}

/// Rewrites the record of configured addresses from the executor's hosted
/// set (on every change).
fn write_record(ctx: &Ctx) {
    let Some(path) = ctx.settings.record_file.as_deref() else {
        return;
    };
    let r = record::Record {
        boot_id: record::boot_id(),
        entries: ctx
            .exec
            .hosted()
            .into_iter()
            .map(|h| (h.public.addr, h.since_ns))
            .collect(),
    };
    if let Err(e) = record::store(path, &r) {
        tracing::warn!(file = %path.display(), error = %e, "cannot write the record of configured addresses");
    }
}

/// Applies news from clusterd to the lease tracker and the executor's lease
/// gate, in the order of the news' own timestamps. Returns the membership
/// the loop must act on: the new one, or the stored one when only the
/// lease's validity changed; `None` when nothing changed for it (or the
/// news was older than what is known).
fn apply_news(ctx: &Ctx, news: News) -> Option<Membership> {
    let (lease, membership) = match news {
        News::Membership(m) => (m.lease, Some(m)),
        News::Lease(l) => (l, None),
    };
    let mut s = ctx.lock();
    let was_valid = s.lease.valid_now();
    if lease.at_ns >= s.lease.lease_at {
        s.lease.lease_at = lease.at_ns;
        s.lease.until = lease_end(&lease);
        s.lease.since_ns = lease.since_ns;
    }
    let valid = s.lease.valid_now();
    ctx.exec.set_lease(if valid { s.lease.until } else { None });
    match membership {
        Some(mut m) if m.lease.at_ns >= s.lease.memb_at => {
            s.lease.memb_at = m.lease.at_ns;
            m.lease_ok = valid;
            Some(m)
        }
        Some(_) => {
            tracing::debug!("membership older than the one applied: ignored");
            None
        }
        None if valid != was_valid => s.membership.clone().map(|mut m| {
            m.lease_ok = valid;
            m
        }),
        None => None,
    }
}

async fn drop_all(ctx: &Ctx) {
    let mode = if ctx.lock().lease.valid_now() {
        DropMode::ResetFirst
    } else {
        DropMode::RemoveFirst
    };
    match ctx.exec.drop_all(mode).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(count = n, "dropped every public address"),
        Err(e) => tracing::error!(error = %e, "dropping public addresses failed"),
    }
}

/// Membership key that triggers runs: generation, leader, flags and
/// reassignable nodes.
fn run_key(m: &Membership) -> (u64, Option<Pnn>, Vec<u32>, Vec<Pnn>) {
    (
        m.generation,
        m.leader,
        m.nodes.iter().map(|n| n.flags.bits()).collect(),
        m.reassignable.clone(),
    )
}

fn is_leader(m: &Membership) -> bool {
    m.leader == Some(m.this_node) && m.lease_ok
}

async fn on_membership(ctx: &Ctx, leader: &mut LeaderState, m: Membership) {
    let old = {
        let mut s = ctx.lock();
        s.membership.replace(m.clone())
    };
    if !m.lease_ok && old.as_ref().is_none_or(|o| o.lease_ok) {
        tracing::warn!(
            generation = m.generation,
            "lease not valid: dropping public addresses"
        );
    }
    if !m.lease_ok {
        leader.lost_lease = true;
        drop_all(ctx).await;
    }
    let now_leader = is_leader(&m);
    if now_leader && !leader.active {
        tracing::info!(generation = m.generation, "this node leads: takeover runs");
        leader.active = true;
        leader.last_owner.clear();
        leader.need_run = true;
    } else if !now_leader && leader.active {
        tracing::info!(leader = ?m.leader, "this node no longer leads");
        leader.active = false;
        leader.last_owner.clear();
        leader.need_run = false;
        if let Some(job) = leader.job.take() {
            job.handle.abort();
            if let JobKind::Move(req) = job.kind {
                reply_error(ctx, &req, ErrorCode::Refused, "leadership moved").await;
            }
        }
        for (_, req) in std::mem::take(&mut leader.waiters) {
            forward(ctx, req, m.leader);
        }
        for (_, req) in std::mem::take(&mut leader.moves) {
            forward(ctx, req, m.leader);
        }
    } else if now_leader {
        let changed = old.as_ref().is_none_or(|o| run_key(o) != run_key(&m));
        if changed {
            if old
                .as_ref()
                .is_none_or(|o| o.reassignable != m.reassignable)
            {
                // bench -- failover reads this line (failover phases).
                tracing::info!(
                    generation = m.generation,
                    reassignable = ?m.reassignable,
                    "reassignable nodes changed"
                );
            }
            leader.need_run = true;
            leader.retry_at = None;
            let overtaken = leader
                .job
                .as_ref()
                .is_some_and(|j| j.generation != m.generation);
            if overtaken {
                if let Some(job) = leader.job.take() {
                    tracing::info!(
                        old = job.generation,
                        new = m.generation,
                        "takeover run overtaken by a newer generation: redone"
                    );
                    job.handle.abort();
                    match job.kind {
                        JobKind::Run => {}
                        JobKind::Move(req) => {
                            // Retry the move in the next slot.
                            if let Ok(mv) = req.decode_payload::<MoveIp>() {
                                leader.moves.push_front((mv, *req));
                            }
                        }
                    }
                }
            }
        }
    }
    if m.lease_ok && leader.lost_lease {
        leader.lost_lease = false;
        tracing::info!("lease valid again: asking for a takeover run");
        request_run(ctx, leader);
    }
}

fn maybe_start_job(ctx: &Ctx, leader: &mut LeaderState) {
    if !leader.active || leader.job.is_some() || leader.retry_at.is_some() {
        return;
    }
    let Some(m) = ctx.lock().membership.clone() else {
        return;
    };
    if !is_leader(&m) {
        return;
    }
    let settings = RunSettings {
        tunables: ctx.settings.tunables,
        request_timeout: ctx.settings.request_timeout,
        release_timeout: ctx.settings.release_timeout,
    };
    let client = ctx.client.clone();
    let last_owner = leader.last_owner.clone();
    let seq = leader.next_seq;
    let generation = m.generation;
    if let Some((mv, req)) = leader.moves.pop_front() {
        leader.next_seq += 1;
        let handle = tokio::spawn(async move {
            JobOutput::Move(leader::move_ip(&client, &m, &last_owner, mv, settings).await)
        });
        leader.job = Some(Job {
            seq,
            generation,
            kind: JobKind::Move(Box::new(req)),
            handle,
        });
        return;
    }
    if !leader.need_run {
        return;
    }
    leader.need_run = false;
    leader.next_seq += 1;
    let force = std::mem::take(&mut leader.force_rebalance);
    tracing::info!(generation, seq, "takeover run starting");
    let handle = tokio::spawn(async move {
        JobOutput::Run(leader::takeover_run(&client, &m, &last_owner, &force, settings).await)
    });
    leader.job = Some(Job {
        seq,
        generation,
        kind: JobKind::Run,
        handle,
    });
}

async fn on_job_done(
    ctx: &Ctx,
    leader: &mut LeaderState,
    done: Result<JobOutput, tokio::task::JoinError>,
) {
    let Some(job) = leader.job.take() else {
        return;
    };
    match (done, job.kind) {
        (Ok(JobOutput::Run(Ok(report))), _) => {
            tracing::info!(
                generation = report.plan.generation,
                moved = report.plan.moved,
                "takeover run completed successfully"
            );
            leader.last_owner = report.last_owner;
            leader.backoff = Duration::from_millis(50);
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut leader.waiters)
                .into_iter()
                .partition(|(min, _)| *min <= job.seq);
            leader.waiters = waiting;
            for (_, req) in ready {
                reply(ctx, &req, &report.plan.generation).await;
            }
        }
        (Ok(JobOutput::Run(Err(e))), _) => {
            tracing::warn!(error = %e, "takeover run unsuccessful: retrying");
            fail_and_retry(leader);
        }
        (Ok(JobOutput::Move(r)), JobKind::Move(req)) => match r {
            Ok(memory) => {
                leader.last_owner = memory;
                reply(ctx, &req, &()).await;
            }
            Err(e) => {
                reply_error(ctx, &req, ErrorCode::Refused, e.to_string()).await;
                // The state may be half-way: a normal run settles it.
                leader.need_run = true;
            }
        },
        (Ok(JobOutput::Move(_)), JobKind::Run) => {}
        (Err(e), kind) => {
            tracing::warn!(error = %e, "takeover run task ended abnormally");
            if let JobKind::Move(req) = kind {
                reply_error(ctx, &req, ErrorCode::Internal, e.to_string()).await;
            }
            fail_and_retry(leader);
        }
    }
}

fn fail_and_retry(leader: &mut LeaderState) {
    leader.need_run = true;
    leader.retry_at = Some(Instant::now() + leader.backoff);
    leader.backoff = (leader.backoff * 2).min(Duration::from_secs(1));
}

/// A run is wanted: the leader schedules one, a follower asks the leader.
fn request_run(ctx: &Ctx, leader: &mut LeaderState) {
    if leader.active {
        leader.need_run = true;
        return;
    }
    let Some(to) = ctx.leader() else {
        return;
    };
    let client = ctx.client.clone();
    let timeout = ctx.settings.release_timeout * 3;
    tokio::spawn(async move {
        let r: Result<u64, _> = client
            .request(Address::new(to, FAILOVERD), IPREALLOCATE, &(), timeout)
            .await;
        if let Err(e) = r {
            tracing::debug!(leader = to, error = %e, "asking the leader for a takeover run failed");
        }
    });
}

fn on_node_event(ctx: &Ctx, leader: &mut LeaderState, ev: NodeEvent) {
    match ev {
        NodeEvent::InterfacesChanged | NodeEvent::CannotHost { .. } => {
            tracing::info!(event = ?ev, "interfaces changed: asking for a takeover run");
            request_run(ctx, leader);
        }
        NodeEvent::HookFailed(f) => tracing::warn!(failure = ?f, "event hook failed"),
        NodeEvent::HostedChanged(_) => {
            write_record(ctx);
            tracing::debug!(event = ?ev, "node event");
        }
        other => tracing::debug!(event = ?other, "node event"),
    }
}

/// Forwards a leader-only request to the leader and relays its answer.
fn forward(ctx: &Ctx, req: Message, to: Option<Pnn>) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let Some(to) = to.filter(|&l| l != ctx.pnn) else {
            reply_error(&ctx, &req, ErrorCode::Refused, "no leader").await;
            return;
        };
        let timeout = ctx.settings.release_timeout * 3;
        let answer = ctx
            .client
            .request_raw(
                Address::new(to, FAILOVERD),
                req.header.opcode,
                req.payload.clone(),
                timeout,
            )
            .await;
        match answer {
            Ok(a) => {
                let _ = ctx.client.reply_raw(&req, Ok(a.payload)).await;
            }
            Err(ClientError::Remote { error, .. }) => {
                let _ = ctx.client.reply_raw(&req, Err(error)).await;
            }
            Err(e) => reply_error(&ctx, &req, ErrorCode::NodeUnreachable, e.to_string()).await,
        }
    });
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

async fn on_message(
    ctx: &Ctx,
    leader: &mut LeaderState,
    msg: Message,
    memb_tx: &mpsc::UnboundedSender<News>,
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
                    let _ = memb_tx.send(News::Lease(u.lease));
                }
                Err(e) => tracing::warn!(error = %e, "bad LEASE event"),
            },
            IPREALLOCATED => {
                let exec = ctx.exec.clone();
                tokio::spawn(async move {
                    let _ = exec.ipreallocated().await;
                });
            }
            _ => tracing::debug!(opcode = op, "unexpected event"),
        }
        return;
    }
    if msg.header.kind != Kind::Request {
        return;
    }
    match op {
        IPREALLOCATE => {
            if leader.active {
                leader.need_run = true;
                leader.waiters.push((leader.next_seq, msg));
            } else {
                forward(ctx, msg, ctx.leader());
            }
        }
        MOVE_IP => {
            if leader.active {
                match msg.decode_payload::<MoveIp>() {
                    Ok(mv) => leader.moves.push_back((mv, msg)),
                    Err(e) => reply_error(ctx, &msg, ErrorCode::BadRequest, e.to_string()).await,
                }
            } else {
                forward(ctx, msg, ctx.leader());
            }
        }
        _ => {
            let ctx = ctx.clone();
            tokio::spawn(async move { serve(&ctx, msg).await });
        }
    }
}

/// Requests served by this node itself, each in its own task.
async fn serve(ctx: &Ctx, msg: Message) {
    let result: Result<(), (ErrorCode, String)> = match msg.header.opcode {
        GET_PUBLIC_IPS => match report(ctx).await {
            Ok(r) => {
                reply(ctx, &msg, &r).await;
                Ok(())
            }
            Err(e) => Err((ErrorCode::Internal, e.to_string())),
        },
        RELEASE_IPS => match decode::<ReleaseIps>(&msg) {
            Ok(req) => match release(ctx, msg.header.src.pnn, req).await {
                Ok(r) => {
                    reply(ctx, &msg, &r).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        TAKE_IPS => match decode::<TakeIps>(&msg) {
            Ok(req) => match take(ctx, msg.header.src.pnn, req).await {
                Ok(r) => {
                    reply(ctx, &msg, &r).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        ADD_IP => match decode::<AddIp>(&msg) {
            Ok(req) => add_ip(ctx, req),
            Err(e) => Err(e),
        }
        .map(|()| {
            let _ = ctx.triggers.send(Trigger::Run);
        }),
        DEL_IP => match decode::<DelIp>(&msg) {
            Ok(req) => del_ip(ctx, req.addr).await,
            Err(e) => Err(e),
        }
        .map(|()| {
            let _ = ctx.triggers.send(Trigger::Run);
        }),
        RELOAD_IPS => match reload_ips(ctx).await {
            Ok(summary) => {
                let _ = ctx.triggers.send(Trigger::Run);
                reply(ctx, &msg, &summary).await;
                return;
            }
            Err(e) => Err(e),
        },
        SET_IFACE_LINK => match decode::<SetIfaceLink>(&msg) {
            Ok(req) => set_iface_link(ctx, req).await,
            Err(e) => Err(e),
        },
        GRATARP => match decode::<Gratarp>(&msg) {
            Ok(req) => ctx
                .exec
                .announce(req.addr)
                .await
                .map(|_| ())
                .map_err(|e| (ErrorCode::Refused, e.to_string())),
            Err(e) => Err(e),
        },
        TICKLE => match decode::<Vec<ConnectionPair>>(&msg) {
            Ok(pairs) => ctx
                .exec
                .tickle(&tracked(&pairs))
                .await
                .map(|_| ())
                .map_err(|e| (ErrorCode::Internal, e.to_string())),
            Err(e) => Err(e),
        },
        GET_IP_STATUS => {
            let status = ip_status(ctx).await;
            reply(ctx, &msg, &status).await;
            return;
        }
        KILLTCP => match decode::<KillTcp>(&msg) {
            Ok(req) => match ctx.exec.killtcp(&tracked(&req.connections)).await {
                Ok(n) => {
                    reply(ctx, &msg, &u32::try_from(n).unwrap_or(u32::MAX)).await;
                    return;
                }
                Err(e) => Err((ErrorCode::Refused, e.to_string())),
            },
            Err(e) => Err(e),
        },
        other => Err((
            ErrorCode::UnknownOpcode,
            format!("failoverd does not serve opcode {other:#010x}"),
        )),
    };
    match result {
        Ok(()) => {
            if !matches!(msg.header.opcode, GET_PUBLIC_IPS | RELEASE_IPS | TAKE_IPS) {
                reply(ctx, &msg, &()).await;
            }
        }
        Err((code, text)) => reply_error(ctx, &msg, code, text).await,
    }
}

fn decode<T: serde::de::DeserializeOwned>(msg: &Message) -> Result<T, (ErrorCode, String)> {
    transport::proto::decode_payload(&msg.payload)
        .map_err(|e| (ErrorCode::BadRequest, format!("bad payload: {e}")))
}

fn tracked(pairs: &[ConnectionPair]) -> Vec<TrackedConnection> {
    pairs
        .iter()
        .map(|p| TrackedConnection {
            client: p.client,
            server: p.server,
        })
        .collect()
}

/// This node's GET_PUBLIC_IPS answer.
async fn report(ctx: &Ctx) -> Result<PublicIps, NodeError> {
    let (publics, owners) = {
        let s = ctx.lock();
        (s.publics.clone(), s.owners.clone())
    };
    let mut names: Vec<String> = publics.values().flat_map(|p| p.ifaces.clone()).collect();
    names.sort();
    names.dedup();
    let infos = ctx.exec.interfaces(&names).await?;
    let up: HashMap<&str, bool> = infos.iter().map(|i| (i.name.as_str(), i.up)).collect();
    let hosted: BTreeMap<IpAddr, String> = ctx
        .exec
        .hosted()
        .into_iter()
        .map(|h| (h.public.addr, h.iface))
        .collect();
    let can_host = !ctx.settings.disabled;
    let mut ips: Vec<PublicIp> = publics
        .values()
        .map(|p| {
            let active = hosted.get(&p.addr).cloned();
            PublicIp {
                addr: p.addr,
                prefix: p.prefix,
                configured: p.ifaces.clone(),
                available: p
                    .ifaces
                    .iter()
                    .filter(|i| can_host && up.get(i.as_str()).copied().unwrap_or(false))
                    .cloned()
                    .collect(),
                owner: if active.is_some() {
                    Some(ctx.pnn)
                } else {
                    owners.get(&p.addr).copied().filter(|&o| o != ctx.pnn)
                },
                active,
            }
        })
        .collect();
    for (addr, iface) in &hosted {
        if !publics.contains_key(addr) {
            ips.push(PublicIp {
                addr: *addr,
                prefix: 0,
                configured: Vec::new(),
                available: Vec::new(),
                active: Some(iface.clone()),
                owner: Some(ctx.pnn),
            });
        }
    }
    ips.sort_by_key(|a| a.addr);
    Ok(PublicIps {
        pnn: ctx.pnn,
        can_host,
        ips,
        ifaces: infos
            .into_iter()
            .map(|i| IfaceInfo {
                name: i.name,
                link_up: i.up,
                references: u32::try_from(i.references).unwrap_or(u32::MAX),
            })
            .collect(),
    })
}

/// Checks that a run request comes from the leader this node follows and is
/// not older than this node's generation; with `need_lease`, that the lease
/// is valid.
fn check_run_request(
    ctx: &Ctx,
    from: Pnn,
    generation: u64,
    need_lease: bool,
) -> Result<(), (ErrorCode, String)> {
    let s = ctx.lock();
    let Some(m) = s.membership.as_ref() else {
        return Err((ErrorCode::Refused, "no membership yet".into()));
    };
    if m.leader != Some(from) {
        return Err((
            ErrorCode::Refused,
            format!(
                "node {from} is not the leader (node {} follows {:?})",
                ctx.pnn, m.leader
            ),
        ));
    }
    if generation < m.generation {
        return Err((
            ErrorCode::Refused,
            format!("stale run: generation {generation} < {}", m.generation),
        ));
    }
    if need_lease && !(m.lease_ok && s.lease.valid_now()) {
        return Err((
            ErrorCode::Refused,
            format!("node {}: lease not valid", ctx.pnn),
        ));
    }
    Ok(())
}

async fn release(ctx: &Ctx, from: Pnn, req: ReleaseIps) -> Result<StepResult, (ErrorCode, String)> {
    check_run_request(ctx, from, req.generation, false)?;
    {
        let mut s = ctx.lock();
        for (addr, owner) in &req.ips {
            match owner {
                Some(o) => s.owners.insert(*addr, *o),
                None => s.owners.remove(addr),
            };
        }
    }
    // Every requested address goes to the executor, not only those it lists
    // as hosted right now: it removes kernel leftovers too (an address added
    // at run time before a crash, or one whose take is still in flight when
    // this list would have been made), and a release must never be
    // acknowledged while the address is still configured here.
    let hosted: Vec<IpAddr> = req.ips.iter().map(|(a, _)| *a).collect();
    let mut failed = Vec::new();
    if !hosted.is_empty() {
        for (addr, r) in ctx.exec.release_many(&hosted).await {
            if let Err(e) = r {
                failed.push((addr, e.to_string()));
            }
        }
    }
    Ok(StepResult { failed })
}

async fn take(ctx: &Ctx, from: Pnn, req: TakeIps) -> Result<StepResult, (ErrorCode, String)> {
    check_run_request(ctx, from, req.generation, true)?;
    if ctx.settings.disabled {
        return Err((
            ErrorCode::Refused,
            format!("failover is disabled on node {}", ctx.pnn),
        ));
    }
    let mut failed = Vec::new();
    let publics: Vec<PublicAddress> = {
        let s = ctx.lock();
        req.ips
            .iter()
            .filter_map(|a| match s.publics.get(a) {
                Some(p) => Some(p.clone()),
                None => {
                    failed.push((*a, "not in this node's public addresses".to_string()));
                    None
                }
            })
            .collect()
    };
    let mut taken = Vec::new();
    // Checked again under the executor's operation lock: the take may have
    // waited there for an earlier operation while the run was overtaken.
    let still = || check_run_request(ctx, from, req.generation, true).map_err(|(_, why)| why);
    for (addr, r) in ctx.exec.take_many_if(&publics, &still).await {
        match r {
            Ok(_) => taken.push(addr),
            Err(e) => failed.push((addr, e.to_string())),
        }
    }
    let lease_ok = ctx.lock().lease.valid_now();
    if !lease_ok {
        // The lease lapsed while taking. The loop drops every address when
        // the lease end passes (removal first, at once); a release here
        // would wait for killtcp for nothing.
        return Err((
            ErrorCode::Refused,
            format!("node {}: lease lost while taking", ctx.pnn),
        ));
    }
    {
        let mut s = ctx.lock();
        for a in &taken {
            s.owners.insert(*a, ctx.pnn);
        }
    }
    Ok(StepResult { failed })
}

/// This node's public-IP health: the kernel against the hosted set and the
/// last run's assignments, and the latest hook failures.
async fn ip_status(ctx: &Ctx) -> IpStatus {
    let (publics, assigned, lease_ok) = {
        let s = ctx.lock();
        let assigned: Vec<IpAddr> = s
            .owners
            .iter()
            .filter(|(_, o)| **o == ctx.pnn)
            .map(|(a, _)| *a)
            .collect();
        (
            s.publics.values().cloned().collect::<Vec<_>>(),
            assigned,
            s.lease.valid_now(),
        )
    };
    let status = ctx.exec.status();
    let hosted: Vec<IpAddr> = status.hosted.iter().map(|h| h.public.addr).collect();
    let (mut missing, unexpected) = match ctx.exec.check(&publics).await {
        Ok(d) => (d.missing, d.unexpected),
        Err(e) => {
            tracing::warn!(error = %e, "cannot compare the kernel's addresses");
            (Vec::new(), Vec::new())
        }
    };
    // Given to this node by the last run but not hosted (a take failed).
    missing.extend(assigned.iter().filter(|a| !hosted.contains(a)));
    missing.sort();
    missing.dedup();
    IpStatus {
        pnn: ctx.pnn,
        lease_ok,
        hosted,
        missing,
        unexpected,
        hook_failures: status
            .hook_failures
            .iter()
            .map(|f| HookFailureInfo {
                hook: f.hook.display().to_string(),
                event: f.event.clone(),
                reason: f.reason.clone(),
            })
            .collect(),
    }
}

fn add_ip(ctx: &Ctx, req: AddIp) -> Result<(), (ErrorCode, String)> {
    let max = if req.addr.is_ipv4() { 32 } else { 128 };
    if req.prefix > max || req.ifaces.is_empty() {
        return Err((
            ErrorCode::BadRequest,
            format!("bad address {}/{} or no interface", req.addr, req.prefix),
        ));
    }
    let mut s = ctx.lock();
    if let Some(old) = s.publics.get(&req.addr) {
        if old.prefix == req.prefix && old.ifaces == req.ifaces {
            return Ok(());
        }
        return Err((
            ErrorCode::Refused,
            format!("Node {} already knows IP {} as {old}", ctx.pnn, req.addr),
        ));
    }
    tracing::info!(addr = %req.addr, prefix = req.prefix, ifaces = ?req.ifaces, "addip");
    s.publics.insert(
        req.addr,
        PublicAddress {
            addr: req.addr,
            prefix: req.prefix,
            ifaces: req.ifaces,
        },
    );
    Ok(())
}

async fn del_ip(ctx: &Ctx, addr: IpAddr) -> Result<(), (ErrorCode, String)> {
    if ctx.lock().publics.remove(&addr).is_none() {
        return Err((
            ErrorCode::Refused,
            format!("Node {} does not know about IP {addr}", ctx.pnn),
        ));
    }
    tracing::info!(%addr, "delip");
    ctx.exec
        .release(addr)
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))
}

async fn reload_ips(ctx: &Ctx) -> Result<ReloadSummary, (ErrorCode, String)> {
    let new = match public_addresses::load(&ctx.settings.public_addresses) {
        Ok(v) => v,
        Err(PublicAddressesError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Vec::new()
        }
        Err(e) => return Err((ErrorCode::BadRequest, e.to_string())),
    };
    let old: Vec<PublicAddress> = ctx.lock().publics.values().cloned().collect();
    let d = public_addresses::diff(&old, &new);
    {
        let mut s = ctx.lock();
        for p in &d.removed {
            s.publics.remove(&p.addr);
        }
        for p in &d.added {
            s.publics.insert(p.addr, p.clone());
        }
        for c in &d.changed {
            s.publics.insert(c.new.addr, c.new.clone());
        }
    }
    let removed: Vec<IpAddr> = d.removed.iter().map(|p| p.addr).collect();
    if !removed.is_empty() {
        for (addr, r) in ctx.exec.release_many(&removed).await {
            if let Err(e) = r {
                tracing::warn!(%addr, error = %e, "reloadips: release failed");
            }
        }
    }
    let summary = ReloadSummary {
        added: d.added.iter().map(|p| p.addr).collect(),
        removed,
        changed: d.changed.iter().map(|c| c.new.addr).collect(),
    };
    tracing::info!(?summary, "reloadips");
    Ok(summary)
}

async fn set_iface_link(ctx: &Ctx, req: SetIfaceLink) -> Result<(), (ErrorCode, String)> {
    let known = ctx
        .lock()
        .publics
        .values()
        .any(|p| p.ifaces.contains(&req.iface));
    if !known {
        return Err((
            ErrorCode::Refused,
            format!("Interface {} not configured on node {}", req.iface, ctx.pnn),
        ));
    }
    let state = if req.up { None } else { Some(false) };
    ctx.exec.set_link_override(&req.iface, state).await;
    let _ = ctx.triggers.send(Trigger::Run);
    Ok(())
}
