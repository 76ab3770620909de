//! The leader's side of failoverd: takeover runs.
//!
//! [`plan`] is the pure planner (membership + every node's report → release
//! and take steps, with the safety rules); [`takeover_run`] carries a plan
//! out over the transport: GET_PUBLIC_IPS from every connected node, RELEASE
//! on every node concerned, wait for all acknowledgements (bounded by
//! `release_timeout`), only then TAKE — and only the addresses whose every
//! release was acknowledged — then broadcast IPREALLOCATED.
//!
//! A run is a plain future: the daemon spawns it, and abandons it (drops the
//! task) when a newer membership generation overtakes it. Abandoning at any
//! point is safe: each step is idempotent on the nodes, and a take is only
//! ever sent after the releases it depends on were acknowledged.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use transport::client::{Client, ClientError};
use transport::msg::cluster::{Membership, NodeFlags, Pnn};
use transport::msg::failover::{
    Ipreallocated, MoveIp, PublicIps, ReleaseIps, StepResult, TakeIps, GET_PUBLIC_IPS,
    IPREALLOCATED, RELEASE_IPS, TAKE_IPS,
};
use transport::proto::service::{ALL_NODES, BROADCAST_SERVICE, FAILOVERD};
use transport::proto::Address;

use crate::alloc::Tunables;
use crate::core::{run, RunOrder, RunOutcome};
use plan::{Plan, PlanError, PlanInput};

/// Why a takeover run failed (the daemon retries it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A connected node did not answer GET_PUBLIC_IPS.
    #[error("node {pnn}: no public-IP report: {source}")]
    Report {
        /// The node.
        pnn: Pnn,
        /// The cause.
        #[source]
        source: ClientError,
    },
    /// No plan could be made.
    #[error("planning: {0}")]
    Plan(#[from] PlanError),
    /// Some releases were not acknowledged: their addresses were not taken.
    #[error("releases failed: {0}")]
    Release(String),
    /// Some takes failed.
    #[error("takes failed: {0}")]
    Take(String),
    /// moveip: the target cannot host the address.
    #[error("node {pnn} cannot host {addr}")]
    CannotMove {
        /// The address.
        addr: IpAddr,
        /// The target.
        pnn: Pnn,
    },
}

/// Settings of takeover runs.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    /// Allocation tunables.
    pub tunables: Tunables,
    /// Time limit of GET_PUBLIC_IPS and TAKE requests.
    pub request_timeout: Duration,
    /// Time limit of the release step.
    pub release_timeout: Duration,
}

/// How long each step of a run took (logged at info level as
/// `takeover run timing`, which `bench -- failover` reads to break a
/// failover down into phases).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTiming {
    /// GET_PUBLIC_IPS from every connected node.
    pub gather: Duration,
    /// Computing the plan.
    pub plan: Duration,
    /// RELEASE_IPS sent until every acknowledgement came.
    pub release: Duration,
    /// TAKE_IPS sent until every acknowledgement came.
    pub take: Duration,
}

impl RunTiming {
    /// Logs the timing of a run (one info line).
    fn log(&self, generation: u64, moved: usize) {
        tracing::info!(
            generation,
            moved,
            gather_us = self.gather.as_micros(),
            plan_us = self.plan.as_micros(),
            release_us = self.release.as_micros(),
            take_us = self.take.as_micros(),
            "takeover run timing"
        );
    }
}

/// The nodes a run talks to: connected and not deleted.
pub fn connected_nodes(m: &Membership) -> Vec<Pnn> {
    crate::core::run::connected_nodes(m)
}

/// Asks every connected node for its public IPs; returns the answers and
/// the connected nodes that did not answer.
///
/// # Errors
///
/// [`RunError::Report`] when the request could not be sent at all.
pub async fn gather_reports(
    client: &Client,
    m: &Membership,
    timeout: Duration,
) -> Result<(BTreeMap<Pnn, PublicIps>, BTreeMap<Pnn, ClientError>), RunError> {
    let nodes = connected_nodes(m);
    let dsts: Vec<Address> = nodes.iter().map(|&p| Address::new(p, FAILOVERD)).collect();
    let answers = client
        .request_each::<(), PublicIps>(&dsts, GET_PUBLIC_IPS, &(), timeout)
        .await
        .map_err(|source| RunError::Report {
            pnn: m.this_node,
            source,
        })?;
    let mut reports = BTreeMap::new();
    let mut missing = BTreeMap::new();
    for (dst, answer) in answers {
        match answer {
            Ok(report) => {
                reports.insert(dst.pnn, report);
            }
            Err(e) => {
                tracing::warn!(pnn = dst.pnn, error = %e, "no public-IP report");
                missing.insert(dst.pnn, e);
            }
        }
    }
    Ok((reports, missing))
}

/// One full takeover run for `order` (see the module docs). Connected nodes
/// that do not answer fail the run unless the leader core left them out
/// (`order.unresponsive`).
///
/// Never fails: how it went is the [`RunOutcome`] for
/// [`crate::core::LeaderCore::run_finished`]; the first error, if any, is
/// returned beside it for the log.
pub async fn takeover_run(
    client: &Client,
    order: &RunOrder,
    settings: RunSettings,
) -> (RunOutcome, Option<RunError>) {
    use crate::counters::{add, COUNTERS};
    let started = Instant::now();
    let mut seen = Observed::start();
    let r = run_once(client, order, settings, &mut seen).await;
    add(&COUNTERS.runs_led, 1);
    add(&COUNTERS.runs_failed, usize::from(r.1.is_some()));
    COUNTERS.run_time.observe(started.elapsed());
    seen.record(order, r.1.as_ref(), false);
    r
}

/// What a run or move did, for the failover history ([`crate::history`]):
/// filled in as it goes, recorded at the end. Observation only.
#[derive(Debug)]
struct Observed {
    started: Instant,
    start_ns: u64,
    at_unix_ms: u64,
    timing: RunTiming,
    reports: BTreeMap<Pnn, PublicIps>,
    releases: BTreeMap<Pnn, Vec<(IpAddr, Option<Pnn>)>>,
    takes: BTreeMap<Pnn, Vec<IpAddr>>,
    run: u64,
    planned: bool,
}

impl Observed {
    fn start() -> Observed {
        Observed {
            started: Instant::now(),
            start_ns: crate::history::now_ns(),
            at_unix_ms: crate::history::unix_ms(),
            timing: RunTiming::default(),
            reports: BTreeMap::new(),
            releases: BTreeMap::new(),
            takes: BTreeMap::new(),
            run: 0,
            planned: false,
        }
    }

    fn record(&self, order: &RunOrder, error: Option<&RunError>, admin_move: bool) {
        use crate::history::{self, HISTORY};
        use transport::msg::failover::HistoryKind;
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut e = history::entry(HistoryKind::Run, self.at_unix_ms);
        e.generation = order.membership.generation;
        e.run = self.run;
        e.leader = Some(order.membership.this_node);
        e.moves = history::moves(&history::RunFacts {
            membership: &order.membership,
            last_owner: &order.last_owner,
            reports: &self.reports,
            releases: &self.releases,
            takes: &self.takes,
            admin_move,
        });
        e.reason = history::main_reason(&e.moves);
        if self.planned {
            e.plan_us = Some(us(self.timing.gather + self.timing.plan));
            e.release_us = Some(us(self.timing.release));
            e.take_us = Some(us(self.timing.take));
        }
        e.total_us = us(self.started.elapsed());
        e.ok = error.is_none();
        e.error = error.map(ToString::to_string);
        HISTORY.run(e, self.start_ns);
    }
}

/// [`takeover_run`] without the counting.
async fn run_once(
    client: &Client,
    order: &RunOrder,
    settings: RunSettings,
    seen: &mut Observed,
) -> (RunOutcome, Option<RunError>) {
    let m = &order.membership;
    let started = Instant::now();
    let mut outcome = RunOutcome {
        generation: m.generation,
        ..RunOutcome::default()
    };
    let (reports, mut missing) = match gather_reports(client, m, settings.request_timeout).await {
        Ok(r) => r,
        Err(e) => return (outcome, Some(e)),
    };
    let (answered, missing_set) = run::sort_reports(m, reports.keys().copied());
    outcome.answered = answered;
    outcome.missing = missing_set.clone();
    if let Some(&pnn) = missing_set.iter().find(|p| !order.unresponsive.contains(p)) {
        let source = missing.remove(&pnn).unwrap_or_else(|| ClientError::Closed {
            service: "failoverd".into(),
        });
        return (outcome, Some(RunError::Report { pnn, source }));
    }
    let gathered = Instant::now();
    let plan = match plan::plan(PlanInput {
        membership: m,
        reports: &reports,
        last_owner: &order.last_owner,
        tunables: settings.tunables,
        force_rebalance: &order.force_rebalance,
        unresponsive: &order.unresponsive,
    }) {
        Ok(p) => p,
        Err(e) => return (outcome, Some(e.into())),
    };
    let mut timing = RunTiming {
        gather: gathered - started,
        plan: gathered.elapsed(),
        ..RunTiming::default()
    };
    tracing::debug!(
        generation = plan.generation,
        moved = plan.moved,
        pinned = plan.pinned.len(),
        held = plan.held.len(),
        "takeover run planned"
    );
    let mut memory = order.last_owner.clone();
    let result = execute(client, &plan, &mut memory, settings, &mut timing, seen).await;
    timing.log(plan.generation, plan.moved);
    seen.timing = timing;
    seen.reports = reports;
    broadcast_ipreallocated(client, plan.generation).await;
    outcome.last_owner = Some(memory);
    outcome.ok = result.is_ok();
    outcome.complete = outcome.ok && run::complete(&plan, !missing_set.is_empty());
    if outcome.ok {
        tracing::info!(
            generation = plan.generation,
            moved = plan.moved,
            "takeover run completed successfully"
        );
    }
    (outcome, result.err())
}

/// Releases, waits, takes; updates `memory` with what was acknowledged.
async fn execute(
    client: &Client,
    plan: &Plan,
    memory: &mut BTreeMap<IpAddr, Pnn>,
    settings: RunSettings,
    timing: &mut RunTiming,
    seen: &mut Observed,
) -> Result<(), RunError> {
    let started = Instant::now();
    let run = run_stamp();
    seen.run = run;
    seen.planned = true;
    seen.releases.clone_from(&plan.releases);
    let failed_release = release_step(client, plan.generation, run, &plan.releases, settings).await;
    timing.release = started.elapsed();
    // Forget holders of released addresses; the takes set the new ones.
    run::forget_released(memory, plan, &failed_release);
    let takes = run::takes_after_release(plan, &failed_release);
    seen.takes.clone_from(&takes);
    let started = Instant::now();
    let take_failures = take_step(client, plan.generation, run, &takes, settings, memory).await;
    timing.take = started.elapsed();
    if !failed_release.is_empty() {
        let list: Vec<String> = failed_release.iter().map(ToString::to_string).collect();
        return Err(RunError::Release(list.join(", ")));
    }
    if !take_failures.is_empty() {
        return Err(RunError::Take(take_failures.join("; ")));
    }
    Ok(())
}

/// A run's stamp ([`ReleaseIps::run`]): this host's `CLOCK_MONOTONIC` in
/// ns, strictly above every earlier stamp of this process (a restarted
/// failoverd's clock goes on from where the host's is).
fn run_stamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = transport::msg::cluster::monotonic_ns();
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or(0);
    now.max(prev.saturating_add(1))
}

/// Sends every node its releases in parallel and waits for all (bounded by
/// `release_timeout`). Returns the addresses whose release was not
/// acknowledged on some node (they must not be taken).
async fn release_step(
    client: &Client,
    generation: u64,
    run: u64,
    releases: &BTreeMap<Pnn, Vec<(IpAddr, Option<Pnn>)>>,
    settings: RunSettings,
) -> BTreeSet<IpAddr> {
    let calls = releases.iter().map(|(&pnn, ips)| async move {
        let req = ReleaseIps {
            generation,
            run,
            ips: ips.clone(),
        };
        let r: Result<StepResult, ClientError> = client
            .request(
                Address::new(pnn, FAILOVERD),
                RELEASE_IPS,
                &req,
                settings.release_timeout,
            )
            .await;
        (pnn, ips, r)
    });
    let mut failed = BTreeSet::new();
    for (pnn, ips, r) in futures::future::join_all(calls).await {
        match r {
            Ok(step) => {
                for (addr, why) in step.failed {
                    tracing::warn!(pnn, %addr, why, "release failed");
                    failed.insert(addr);
                }
            }
            Err(e) => {
                tracing::warn!(pnn, error = %e, "release request failed");
                failed.extend(ips.iter().map(|(a, _)| *a));
            }
        }
    }
    failed
}

/// Sends every node its takes in parallel; records acknowledged ones in
/// `memory`. Returns a description of each failure.
async fn take_step(
    client: &Client,
    generation: u64,
    run: u64,
    takes: &BTreeMap<Pnn, Vec<IpAddr>>,
    settings: RunSettings,
    memory: &mut BTreeMap<IpAddr, Pnn>,
) -> Vec<String> {
    let calls = takes.iter().map(|(&pnn, ips)| async move {
        let req = TakeIps {
            generation,
            run,
            ips: ips.clone(),
        };
        let r: Result<StepResult, ClientError> = client
            .request(
                Address::new(pnn, FAILOVERD),
                TAKE_IPS,
                &req,
                settings.request_timeout,
            )
            .await;
        (pnn, ips, r)
    });
    let mut failures = Vec::new();
    for (pnn, ips, r) in futures::future::join_all(calls).await {
        match r {
            Ok(step) => {
                let bad: BTreeSet<IpAddr> = step.failed.iter().map(|(a, _)| *a).collect();
                for (addr, why) in &step.failed {
                    tracing::warn!(pnn, %addr, why, "take failed");
                    failures.push(format!("{addr} on node {pnn}: {why}"));
                }
                run::record_take(memory, pnn, ips, Some(&bad));
            }
            Err(e) => {
                tracing::warn!(pnn, error = %e, "take request failed");
                failures.push(format!("node {pnn}: {e}"));
                // Unknown outcome: the node may hold them now.
                run::record_take(memory, pnn, ips, None);
            }
        }
    }
    failures
}

async fn broadcast_ipreallocated(client: &Client, generation: u64) {
    let dst = Address::new(ALL_NODES, BROADCAST_SERVICE);
    if let Err(e) = client
        .event(dst, IPREALLOCATED, &Ipreallocated { generation })
        .await
    {
        tracing::warn!(error = %e, "cannot broadcast IPREALLOCATED");
    }
}

/// CTDB's `moveip`: release `mv.addr` on every connected node but the
/// target, wait for every acknowledgement, then take it on the target.
///
/// # Errors
///
/// [`RunError::CannotMove`] when the target does not have the address
/// available or the address is pinned to an unreachable node;
/// [`RunError::Report`], [`RunError::Release`], [`RunError::Take`].
pub async fn move_ip(
    client: &Client,
    order: &RunOrder,
    mv: MoveIp,
    settings: RunSettings,
) -> Result<BTreeMap<IpAddr, Pnn>, RunError> {
    let mut seen = Observed::start();
    let r = move_once(client, order, mv, settings, &mut seen).await;
    if let Err(e) = &r {
        if !matches!(e, RunError::CannotMove { .. }) {
            seen.record(order, Some(e), true);
        }
    } else {
        seen.record(order, None, true);
    }
    r
}

/// [`move_ip`] without the recording.
async fn move_once(
    client: &Client,
    order: &RunOrder,
    mv: MoveIp,
    settings: RunSettings,
    seen: &mut Observed,
) -> Result<BTreeMap<IpAddr, Pnn>, RunError> {
    let m = &order.membership;
    let last_owner = &order.last_owner;
    let (reports, mut missing) = gather_reports(client, m, settings.request_timeout).await?;
    if let Some(&pnn) = missing.keys().find(|p| !order.unresponsive.contains(p)) {
        let source = missing.remove(&pnn).unwrap_or_else(|| ClientError::Closed {
            service: "failoverd".into(),
        });
        return Err(RunError::Report { pnn, source });
    }
    let cannot = RunError::CannotMove {
        addr: mv.addr,
        pnn: mv.pnn,
    };
    let target_ok = reports.get(&mv.pnn).is_some_and(|r| {
        r.can_host
            && r.ips
                .iter()
                .any(|i| i.addr == mv.addr && !i.available.is_empty())
    }) && m.flags(mv.pnn).is_some_and(NodeFlags::is_ok);
    if !target_ok {
        return Err(cannot);
    }
    // The same safety rules as a run: never take an address a blocked node
    // may still hold.
    let p = plan::plan(PlanInput {
        membership: m,
        reports: &reports,
        last_owner,
        tunables: settings.tunables,
        force_rebalance: &[],
        unresponsive: &order.unresponsive,
    })?;
    if p.pinned.contains_key(&mv.addr) || p.held.contains(&mv.addr) {
        return Err(cannot);
    }
    let mut releases: BTreeMap<Pnn, Vec<(IpAddr, Option<Pnn>)>> = BTreeMap::new();
    for (&pnn, r) in &reports {
        if pnn != mv.pnn && r.ips.iter().any(|i| i.addr == mv.addr) {
            releases.insert(pnn, vec![(mv.addr, Some(mv.pnn))]);
        }
    }
    let moving = Plan {
        generation: m.generation,
        releases,
        takes: BTreeMap::from([(mv.pnn, vec![mv.addr])]),
        ..Plan::default()
    };
    let mut memory = last_owner.clone();
    let mut timing = RunTiming::default();
    let result = execute(client, &moving, &mut memory, settings, &mut timing, seen).await;
    seen.timing = timing;
    seen.reports = reports;
    broadcast_ipreallocated(client, m.generation).await;
    result.map(|()| memory)
}
