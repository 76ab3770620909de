//! The thin async shell around [`Member`]: tokio time, the cluster-lock
//! helper, admin requests with replies. It owns no policy: everything it
//! decides comes from [`Member`]'s outputs.
//!
//! The transport is abstracted as [`Link`] (send to a peer's clusterd,
//! publish to local subscribers), so the same shell runs over the real
//! transport, an in-process router, or channels in tests. Inputs come in on
//! one mpsc channel ([`Input`]). The shell's clock is tokio's `Instant`
//! (which is `CLOCK_MONOTONIC`), offset so that it reads the host's
//! `CLOCK_MONOTONIC` ([`monotonic_ns`]) at the moment [`run`] starts: the
//! lease times it publishes are points on the clock every process of the
//! node shares, and they never repeat when clusterd restarts (tests with
//! tokio's paused time still see one consistent clock).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::etcd_lock;
use crate::lock::{self, LockAnswer, LockSpec};
use crate::membership::{Config, LockEvent, Member, Output};
use crate::msg::{AdminOp, AdminOutcome, ClusterMsg, Lease, Membership};
use crate::nodes::{NodesError, NodesFile, Pnn};
use transport::msg::cluster::monotonic_ns;

/// This clusterd instance's incarnation: the kernel's boot id (a reboot
/// restarts `CLOCK_MONOTONIC`, so stamps of an earlier boot could look
/// recent) mixed with the start time on that clock (unique within a boot)
/// and the pid. FNV-1a; a missing boot id leaves the start time, which
/// still differs between instances of one boot.
#[must_use]
pub fn incarnation(start: Duration) -> u64 {
    let boot = std::fs::read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in boot
        .iter()
        .copied()
        .chain(transport::msg::cluster::duration_ns(start).to_le_bytes())
        .chain(std::process::id().to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Logs a change of the node lists counted (a node list change starting
/// or ending; nothing at start when there is none).
fn note_lists(pnn: Pnn, before: &[crate::msg::NodeSet], now: &[crate::msg::NodeSet]) {
    if now.len() > 1 {
        tracing::warn!(
            pnn,
            lists = now.len(),
            own_nodes = now[0].len(),
            "a node list change is in progress: every quorum is counted in {} node lists until \
             every node of them runs this node's list",
            now.len()
        );
    } else if before.len() > 1 {
        tracing::info!(
            pnn,
            nodes = now.first().map_or(0, crate::msg::NodeSet::len),
            "node list change complete: quorums are counted in this node's list alone"
        );
    }
}

/// How long an admin command waits for the target's reply.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one lock attempt may take before it counts as '2' (timeout).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the shell's outputs go.
pub trait Link: Send {
    /// Sends a message to node `to`'s clusterd (best effort: heartbeats
    /// repair any loss).
    fn send(&mut self, to: Pnn, msg: &ClusterMsg);
    /// Publishes membership to this node's subscribers.
    fn publish(&mut self, membership: &Membership);
    /// Tells this node's subscribers how long its lease runs (often: at
    /// most about four times per lease). A link that serves no daemon that
    /// holds public IPs (tests) may ignore it.
    fn lease(&mut self, pnn: Pnn, lease: &Lease) {
        let _ = (pnn, lease);
    }
}

/// An admin command's result as the requester sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The target is not a live node of the nodes file (CTDB: "Node 4 does
    /// not exist").
    #[error("Node {target} does not exist")]
    NoSuchNode {
        /// The target node.
        target: Pnn,
    },
    /// The target did not answer within [`ADMIN_TIMEOUT`].
    #[error("node {target} did not answer the admin command")]
    NoReply {
        /// The target node.
        target: Pnn,
    },
}

/// Input to a running shell.
#[derive(Debug)]
pub enum Input {
    /// A message from a peer's clusterd.
    Msg(ClusterMsg),
    /// An admin command (from the CLI) on `target`.
    Admin {
        /// The node to act on.
        target: Pnn,
        /// The command.
        op: AdminOp,
        /// Where the result goes.
        reply: oneshot::Sender<Result<AdminOutcome, AdminError>>,
    },
    /// The health monitor's latest result.
    Health(bool),
    /// A request for the current membership.
    Get(oneshot::Sender<Membership>),
    /// A request for this node's leader capability now.
    CanLead(oneshot::Sender<bool>),
    /// `reloadnodes`, first step: may this node take the nodes file
    /// `nodes` now ([`Member::check_reload`])?
    CheckNodes {
        /// The file read from disk.
        nodes: NodesFile,
        /// `Ok`, or why not in CTDB's words.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// `reloadnodes`, last step (transportd has the list): take it
    /// ([`Member::reload_nodes`]).
    ApplyNodes {
        /// The file read from disk.
        nodes: NodesFile,
        /// `Ok`, or why not.
        reply: oneshot::Sender<Result<(), String>>,
    },
}

struct LockTask {
    attempt: u64,
    release: Option<oneshot::Sender<()>>,
    /// The attempt's task: awaited (bounded) at shutdown, so that the lock
    /// is released before clusterd exits.
    handle: tokio::task::JoinHandle<()>,
}

/// At shutdown, how long the shell waits for the lock's release (a
/// helper's SIGTERM then SIGKILL after 1 s; an etcd lease's revocation).
const RELEASE_WAIT: Duration = Duration::from_secs(3);

struct Pending {
    id: u64,
    target: Pnn,
    deadline: Instant,
    reply: oneshot::Sender<Result<AdminOutcome, AdminError>>,
}

/// Runs node `pnn` of `nodes` until `shutdown` resolves or `inputs` closes;
/// then releases the cluster lock (if held) and returns.
///
/// # Errors
///
/// [`NodesError::BadPnn`] if `pnn` is not a live node of `nodes`.
pub async fn run<L: Link>(
    cfg: Config,
    nodes: &NodesFile,
    pnn: Pnn,
    lock_spec: Option<LockSpec>,
    inputs: mpsc::Receiver<Input>,
    link: L,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodesError> {
    // No second channel: everything comes in on `inputs`.
    let (_keep, requests) = mpsc::channel(1);
    run_with_requests(
        cfg, nodes, pnn, lock_spec, None, inputs, requests, link, shutdown,
    )
    .await
}

/// [`run`] with a second, lower-priority channel for the local clients'
/// requests (admin commands, membership queries): the peers' messages
/// (`inputs`: heartbeats, membership updates) and the timers are always
/// handled first, and a flood of requests cannot take their channel's
/// room (#14 item 2). `requests` closing does not stop the shell.
/// `state`: the file that keeps the node lists counted across restarts
/// ([`crate::state`]); read at the start, replaced whenever they change.
///
/// # Errors
///
/// As [`run`].
#[allow(clippy::too_many_arguments)]
pub async fn run_with_requests<L: Link>(
    cfg: Config,
    nodes: &NodesFile,
    pnn: Pnn,
    lock_spec: Option<LockSpec>,
    state: Option<&std::path::Path>,
    mut inputs: mpsc::Receiver<Input>,
    mut requests: mpsc::Receiver<Input>,
    mut link: L,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodesError> {
    let mut requests_open = true;
    let mut next_input: Option<Input> = None;
    let origin = Instant::now();
    let mono_origin = Duration::from_nanos(monotonic_ns());
    let clock = move || mono_origin + Instant::now().saturating_duration_since(origin);
    let instant_of = move |at: Duration| origin + at.saturating_sub(mono_origin);
    let cfg = Config {
        lock: lock_spec.is_some(),
        ..cfg
    };
    let remembered = match state.map(crate::state::load) {
        None => Vec::new(),
        Some(Ok(lists)) => lists,
        Some(Err(e)) => {
            // Not fatal: the lists are learned again from the peers'
            // heartbeats; only a change in progress while this node is
            // cut off from every node that knows it is then missed.
            tracing::error!("node list state ignored: {e}");
            Vec::new()
        }
    };
    let mut member = Member::new(cfg, nodes, pnn, clock())?
        .with_incarnation(incarnation(mono_origin))
        .with_remembered_lists(&remembered);
    let mut saved_lists: Vec<crate::msg::NodeSet> = Vec::new();
    // `reloadnodes` replaces it.
    let mut nodes = nodes.clone();
    let mut out: Vec<Output> = Vec::with_capacity(4 * nodes.len());
    let (lock_tx, mut lock_rx) = mpsc::channel::<(u64, LockEvent)>(8);
    let mut lock_task: Option<LockTask> = None;
    // Lock attempts in a row that did not take it (logging, backoff).
    let lock_failures = Arc::new(AtomicU64::new(0));
    let mut attempts = 0u64;
    let mut pending: Vec<Pending> = Vec::new();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    member.tick(clock(), &mut out);
    loop {
        // The node lists counted are on disk before any message that
        // counted with them leaves (rare: a node list change).
        if member.node_lists() != saved_lists.as_slice() {
            note_lists(pnn, &saved_lists, member.node_lists());
            saved_lists.clear();
            saved_lists.extend_from_slice(member.node_lists());
            if let Some(file) = state {
                if let Err(e) = crate::state::save(file, &saved_lists) {
                    tracing::error!(
                        "cannot keep the node lists in {}: {e} (a restart during a node \
                         list change would forget them)",
                        file.display()
                    );
                }
            }
        }
        // Carry out what the member decided.
        for o in out.drain(..) {
            match o {
                Output::Send { to, msg } => link.send(to, &msg),
                Output::Publish(m) => link.publish(&m),
                Output::LeaseUpdate(l) => link.lease(pnn, &l),
                Output::Lease(ok) => {
                    tracing::info!(
                        pnn,
                        lease = ok,
                        "lease {}",
                        if ok { "valid" } else { "lost" }
                    );
                }
                Output::TakeLock => {
                    if let Some(spec) = &lock_spec {
                        attempts += 1;
                        let (rel_tx, rel_rx) = oneshot::channel();
                        let handle = if let Some(e) = &spec.etcd {
                            tokio::spawn(etcd_lock_attempt(
                                e.clone(),
                                etcd_lock::Params::new(e, &cfg.timing, pnn),
                                attempts,
                                cfg.timing.lock_retry,
                                Arc::clone(&lock_failures),
                                lock_tx.clone(),
                                rel_rx,
                            ))
                        } else {
                            tokio::spawn(lock_attempt(
                                spec.clone(),
                                attempts,
                                cfg.timing.lock_retry,
                                Arc::clone(&lock_failures),
                                lock_tx.clone(),
                                rel_rx,
                            ))
                        };
                        if let Some(old) = lock_task.replace(LockTask {
                            attempt: attempts,
                            release: Some(rel_tx),
                            handle,
                        }) {
                            release(old);
                        }
                    }
                }
                Output::ReleaseLock => {
                    if let Some(t) = lock_task.take() {
                        release(t);
                    }
                }
                Output::AdminDone(r) => {
                    if let Some(i) = pending.iter().position(|p| p.id == r.id) {
                        let p = pending.swap_remove(i);
                        let _ = p.reply.send(Ok(r.outcome));
                    }
                }
            }
        }
        let deadline = instant_of(member.next_deadline(clock()));
        let admin_deadline = pending.iter().map(|p| p.deadline).min();
        // Biased: the timers and the peers' messages before the local
        // requests (a flood of them must not delay a heartbeat).
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(deadline) => member.tick(clock(), &mut out),
            () = sleep_opt(admin_deadline) => {
                let now = Instant::now();
                let mut i = 0;
                while i < pending.len() {
                    if now >= pending[i].deadline {
                        let p = pending.swap_remove(i);
                        let _ = p.reply.send(Err(AdminError::NoReply { target: p.target }));
                    } else {
                        i += 1;
                    }
                }
            }
            ev = lock_rx.recv() => {
                if let Some((attempt, ev)) = ev {
                    if lock_task.as_ref().is_some_and(|t| t.attempt == attempt) {
                        if matches!(ev, LockEvent::NotTaken | LockEvent::Lost) {
                            lock_task = None;
                        }
                        member.lock_event(clock(), ev, &mut out);
                    }
                }
            }
            input = inputs.recv() => {
                let Some(input) = input else { break };
                next_input = Some(input);
            }
            request = requests.recv(), if requests_open => match request {
                Some(input) => next_input = Some(input),
                None => requests_open = false,
            },
        }
        if let Some(input) = next_input.take() {
            let now = clock();
            match input {
                Input::Msg(msg) => member.receive(now, &msg, &mut out),
                Input::Health(ok) => member.set_healthy(now, ok, &mut out),
                Input::Get(reply) => {
                    let _ = reply.send(member.current(now));
                }
                Input::CanLead(reply) => {
                    let _ = reply.send(member.can_lead());
                }
                Input::CheckNodes { nodes: new, reply } => {
                    let _ = reply.send(member.check_reload(&new, now));
                }
                Input::ApplyNodes { nodes: new, reply } => {
                    let result = member.reload_nodes(now, &new, &mut out);
                    if result.is_ok() {
                        tracing::info!(pnn, nodes = new.len(), "nodes file reloaded");
                        nodes = new;
                    }
                    let _ = reply.send(result);
                }
                Input::Admin { target, op, reply } => {
                    let exists = usize::try_from(target)
                        .ok()
                        .and_then(|i| nodes.nodes.get(i))
                        .is_some_and(|n| !n.is_deleted());
                    if !exists {
                        let _ = reply.send(Err(AdminError::NoSuchNode { target }));
                        continue;
                    }
                    next_id += 1;
                    if let Some(o) = member.admin(now, next_id, target, op, &mut out) {
                        let _ = reply.send(Ok(o));
                    } else {
                        pending.push(Pending {
                            id: next_id,
                            target,
                            deadline: Instant::now() + ADMIN_TIMEOUT,
                            reply,
                        });
                    }
                }
            }
        }
    }
    if let Some(t) = lock_task.take() {
        // Wait (bounded) for the release: the helper killed, or the etcd
        // lease revoked, so that nothing outlives clusterd.
        let handle = release(t);
        let _ = tokio::time::timeout(RELEASE_WAIT, handle).await;
    }
    Ok(())
}

/// Tells the attempt to release the lock (or give up); returns its task.
fn release(mut t: LockTask) -> tokio::task::JoinHandle<()> {
    if let Some(tx) = t.release.take() {
        let _ = tx.send(());
    }
    t.handle
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Of the lock attempts in a row that did not take the lock (counted per
/// shell), the first few are logged with the helper's own words, then one
/// in [`LOCK_LOG_EVERY`] (a lock service that is down is retried for as
/// long as it is down).
const LOCK_LOG_FIRST: u64 = 3;
/// See [`LOCK_LOG_FIRST`].
const LOCK_LOG_EVERY: u64 = 100;

/// The longest pause between two attempts that did not take the lock.
/// After the k-th attempt in a row that failed, the next one starts
/// `lock_retry × 2^(k-1)` after it, at most this: a lock service that is
/// down is not hammered (a helper such as CTDB's etcd one is a Python
/// process), and CTDB's etcd helper, each of whose contended attempts
/// leaves a lock key that lives 9 s, gets the lock after its holder's
/// power loss once the pause is longer than that (docs/etcd.md). A strict
/// majority leads without the lock meanwhile; only a tie waits for it.
pub const LOCK_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The pause to add, after `failed` attempts in a row, to the member's own
/// `retry` (its `lock_retry`).
fn lock_backoff(failed: u64, retry: Duration) -> Duration {
    let shift = u32::try_from(failed.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    let spacing = retry.saturating_mul(1 << shift).min(LOCK_BACKOFF_MAX);
    spacing.saturating_sub(retry)
}

/// One lock attempt: run the helper, report, hold until released or lost.
async fn lock_attempt(
    spec: LockSpec,
    attempt: u64,
    retry: Duration,
    failures: Arc<AtomicU64>,
    events: mpsc::Sender<(u64, LockEvent)>,
    mut release: oneshot::Receiver<()>,
) {
    let taken = tokio::select! {
        r = lock::attempt(&spec, LOCK_TIMEOUT) => r,
        _ = &mut release => return, // cancelled: dropping the attempt kills the helper
    };
    let helper = spec.program.display();
    let mut held = match taken {
        Ok(lock::Attempt {
            answer: LockAnswer::Taken,
            held: Some(held),
            ..
        }) => held,
        Ok(a) => {
            let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= LOCK_LOG_FIRST || n % LOCK_LOG_EVERY == 0 {
                // Contended is the lock doing its job (a tie, another
                // holder); anything else is a lock that does not work.
                if a.answer == LockAnswer::Contended {
                    tracing::info!(%helper, failed_in_a_row = n, "cluster lock contended: {}", a.detail);
                } else {
                    tracing::warn!(
                        %helper,
                        answer = ?a.answer,
                        failed_in_a_row = n,
                        "cluster lock not taken: {} (a strict majority leads without it)",
                        a.detail
                    );
                }
            }
            // The attempt stays pending for the backoff (cancelled with it
            // if the member no longer wants the lock).
            tokio::select! {
                () = tokio::time::sleep(lock_backoff(n, retry)) => {}
                _ = &mut release => return,
            }
            let _ = events.send((attempt, LockEvent::NotTaken)).await;
            return;
        }
        Err(e) => {
            let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= LOCK_LOG_FIRST || n % LOCK_LOG_EVERY == 0 {
                tracing::warn!(error = %e, failed_in_a_row = n, "cluster lock helper failed");
            }
            tokio::select! {
                () = tokio::time::sleep(lock_backoff(n, retry)) => {}
                _ = &mut release => return,
            }
            let _ = events.send((attempt, LockEvent::NotTaken)).await;
            return;
        }
    };
    let failed = failures.swap(0, Ordering::Relaxed);
    tracing::info!(%helper, failed_before = failed, "cluster lock taken");
    let _ = events.send((attempt, LockEvent::Taken)).await;
    tokio::select! {
        detail = held.lost() => {
            tracing::warn!(%helper, "cluster lock lost: helper exited: {detail}");
            let _ = events.send((attempt, LockEvent::Lost)).await;
        }
        _ = &mut release => held.release().await,
    }
}

/// Logs a failed attempt (the first few in a row, then one in
/// [`LOCK_LOG_EVERY`]), waits its backoff, and reports
/// [`LockEvent::NotTaken`] unless the member cancelled it meanwhile.
async fn not_taken(
    log: impl FnOnce(u64),
    attempt: u64,
    retry: Duration,
    failures: &AtomicU64,
    events: &mpsc::Sender<(u64, LockEvent)>,
    release: &mut oneshot::Receiver<()>,
) {
    let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= LOCK_LOG_FIRST || n % LOCK_LOG_EVERY == 0 {
        log(n);
    }
    tokio::select! {
        () = tokio::time::sleep(lock_backoff(n, retry)) => {}
        _ = release => return,
    }
    let _ = events.send((attempt, LockEvent::NotTaken)).await;
}

/// One attempt of the native etcd lock ([`etcd_lock`]), on a thread of its
/// own: a contended attempt waits there for the key to be freed (no
/// backoff: the lock is taken as soon as the holder's lease ends), so
/// [`LockEvent::NotTaken`] means an error (etcd unreachable, refused).
async fn etcd_lock_attempt(
    spec: etcd_lock::EtcdSpec,
    params: etcd_lock::Params,
    attempt: u64,
    retry: Duration,
    failures: Arc<AtomicU64>,
    events: mpsc::Sender<(u64, LockEvent)>,
    mut release: oneshot::Receiver<()>,
) {
    let key = spec.key.clone();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let done = match etcd_lock::spawn(spec, params, ev_tx, stop_rx) {
        Ok(d) => d,
        Err(e) => {
            let log = |n| {
                tracing::warn!(%key, failed_in_a_row = n, "cluster lock: cannot start its thread: {e}");
            };
            not_taken(log, attempt, retry, &failures, &events, &mut release).await;
            return;
        }
    };
    let first = tokio::select! {
        ev = ev_rx.recv() => ev,
        _ = &mut release => {
            let _ = stop_tx.send(());
            let _ = done.await;
            return;
        }
    };
    match first {
        Some(etcd_lock::Event::Taken { ttl }) => {
            let failed = failures.swap(0, Ordering::Relaxed);
            tracing::info!(%key, lease_ttl_s = ttl, failed_before = failed, "cluster lock taken");
            let _ = events.send((attempt, LockEvent::Taken)).await;
        }
        other => {
            let why = match other {
                Some(etcd_lock::Event::NotTaken(w) | etcd_lock::Event::Lost(w)) => w,
                _ => "the lock thread ended".to_string(),
            };
            let log = |n| {
                tracing::warn!(
                    %key,
                    failed_in_a_row = n,
                    "cluster lock not taken: {why} (a strict majority leads without it)"
                );
            };
            not_taken(log, attempt, retry, &failures, &events, &mut release).await;
            return;
        }
    }
    tokio::select! {
        ev = ev_rx.recv() => {
            let why = match ev {
                Some(etcd_lock::Event::Lost(w) | etcd_lock::Event::NotTaken(w)) => w,
                Some(etcd_lock::Event::Taken { .. }) | None => "the lock thread ended".into(),
            };
            tracing::warn!(%key, "cluster lock lost: {why}");
            let _ = events.send((attempt, LockEvent::Lost)).await;
        }
        _ = &mut release => {
            let _ = stop_tx.send(());
            let _ = done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_lock_attempts_back_off_up_to_the_maximum() {
        let r = Duration::from_millis(500);
        let spacing: Vec<Duration> = (1..=8).map(|k| r + lock_backoff(k, r)).collect();
        let ms: Vec<u128> = spacing.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        assert_eq!(lock_backoff(u64::MAX, r), LOCK_BACKOFF_MAX - r);
        // A retry longer than the maximum is not shortened.
        assert_eq!(lock_backoff(5, Duration::from_secs(20)), Duration::ZERO);
    }
}
