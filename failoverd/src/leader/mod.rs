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

/// What a completed run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The plan carried out.
    pub plan: Plan,
    /// The new memory of who holds what (for the next run).
    pub last_owner: BTreeMap<IpAddr, Pnn>,
    /// How long each step took.
    pub timing: RunTiming,
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
    m.nodes
        .iter()
        .filter(|n| {
            !n.flags
                .intersects(NodeFlags::DISCONNECTED | NodeFlags::DELETED)
        })
        .map(|n| n.pnn)
        .collect()
}

/// Asks every connected node for its public IPs.
///
/// # Errors
///
/// [`RunError::Report`] for the first node that did not answer.
pub async fn gather_reports(
    client: &Client,
    m: &Membership,
    timeout: Duration,
) -> Result<BTreeMap<Pnn, PublicIps>, RunError> {
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
    for (dst, answer) in answers {
        let report = answer.map_err(|source| RunError::Report {
            pnn: dst.pnn,
            source,
        })?;
        reports.insert(dst.pnn, report);
    }
    Ok(reports)
}

/// One full takeover run for membership `m` (see the module docs).
///
/// # Errors
///
/// [`RunError`]: the run must be retried. Takes that were acknowledged
/// before a failure stay done.
pub async fn takeover_run(
    client: &Client,
    m: &Membership,
    last_owner: &BTreeMap<IpAddr, Pnn>,
    force_rebalance: &[Pnn],
    settings: RunSettings,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let reports = gather_reports(client, m, settings.request_timeout).await?;
    let gathered = Instant::now();
    let plan = plan::plan(PlanInput {
        membership: m,
        reports: &reports,
        last_owner,
        tunables: settings.tunables,
        force_rebalance,
    })?;
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
    let mut memory = last_owner.clone();
    let result = execute(client, &plan, &mut memory, settings, &mut timing).await;
    timing.log(plan.generation, plan.moved);
    broadcast_ipreallocated(client, plan.generation).await;
    result?;
    Ok(RunReport {
        plan,
        last_owner: memory,
        timing,
    })
}

/// Releases, waits, takes; updates `memory` with what was acknowledged.
async fn execute(
    client: &Client,
    plan: &Plan,
    memory: &mut BTreeMap<IpAddr, Pnn>,
    settings: RunSettings,
    timing: &mut RunTiming,
) -> Result<(), RunError> {
    let started = Instant::now();
    let failed_release = release_step(client, plan.generation, &plan.releases, settings).await;
    timing.release = started.elapsed();
    // Forget holders of released addresses; the takes set the new ones.
    for list in plan.releases.values() {
        for (addr, _) in list {
            if !failed_release.contains(addr) {
                memory.remove(addr);
            }
        }
    }
    for (&addr, &p) in &plan.pinned {
        memory.insert(addr, p);
    }
    let takes: BTreeMap<Pnn, Vec<IpAddr>> = plan
        .takes
        .iter()
        .map(|(&n, v)| {
            (
                n,
                v.iter()
                    .copied()
                    .filter(|a| !failed_release.contains(a))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let started = Instant::now();
    let take_failures = take_step(client, plan.generation, &takes, settings, memory).await;
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

/// Sends every node its releases in parallel and waits for all (bounded by
/// `release_timeout`). Returns the addresses whose release was not
/// acknowledged on some node (they must not be taken).
async fn release_step(
    client: &Client,
    generation: u64,
    releases: &BTreeMap<Pnn, Vec<(IpAddr, Option<Pnn>)>>,
    settings: RunSettings,
) -> BTreeSet<IpAddr> {
    let calls = releases.iter().map(|(&pnn, ips)| async move {
        let req = ReleaseIps {
            generation,
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
    takes: &BTreeMap<Pnn, Vec<IpAddr>>,
    settings: RunSettings,
    memory: &mut BTreeMap<IpAddr, Pnn>,
) -> Vec<String> {
    let calls = takes.iter().map(|(&pnn, ips)| async move {
        let req = TakeIps {
            generation,
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
                for a in ips {
                    if !bad.contains(a) {
                        memory.insert(*a, pnn);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(pnn, error = %e, "take request failed");
                failures.push(format!("node {pnn}: {e}"));
                // Unknown outcome: the node may hold them now.
                for a in ips {
                    memory.insert(*a, pnn);
                }
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
    m: &Membership,
    last_owner: &BTreeMap<IpAddr, Pnn>,
    mv: MoveIp,
    settings: RunSettings,
) -> Result<BTreeMap<IpAddr, Pnn>, RunError> {
    let reports = gather_reports(client, m, settings.request_timeout).await?;
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
    let result = execute(client, &moving, &mut memory, settings, &mut timing).await;
    broadcast_ipreallocated(client, m.generation).await;
    result.map(|()| memory)
}
