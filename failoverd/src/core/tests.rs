//! Unit tests of failoverd's core: each rule, and each hole it closes, with
//! a test that tries to break it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use transport::msg::cluster::{Lease, Membership, NodeFlags, NodeInfo, Pnn};
use transport::msg::failover::{MoveIp, PublicIp, PublicIps};

use super::leader::{LeaderAction, LeaderConfig, LeaderCore, RunOutcome};
use super::node::{News, NodeAction, NodeConfig, NodeCore, Refusal, Route};
use crate::alloc::Tunables;
use crate::leader::plan::{plan, PlanError, PlanInput};

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("test times fit")
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
}

fn lease(at: Duration, until: Option<Duration>) -> Lease {
    Lease {
        at_ns: ns(at),
        expires_ns: until.map_or(0, ns),
        since_ns: until.map_or(0, |_| 1),
    }
}

fn membership(this: Pnn, leader: Option<Pnn>, generation: u64, flags: &[u32]) -> Membership {
    Membership {
        generation,
        leader,
        nodes: flags
            .iter()
            .enumerate()
            .map(|(i, &f)| NodeInfo {
                pnn: Pnn::try_from(i).expect("few nodes"),
                address: None,
                flags: NodeFlags::from_bits(f),
            })
            .collect(),
        this_node: this,
        lease_ok: true,
        reassignable: Vec::new(),
        lease: Lease::default(),
    }
}

fn node(pnn: Pnn) -> NodeCore {
    NodeCore::new(NodeConfig::new(pnn, ms(500)))
}

/// A node following `leader` at `generation`, lease valid until `until`.
fn following(pnn: Pnn, leader: Pnn, generation: u64, until: Duration) -> NodeCore {
    let mut n = node(pnn);
    let mut m = membership(pnn, Some(leader), generation, &[0, 0, 0]);
    m.lease = lease(MS, Some(until));
    let mut out = Vec::new();
    n.news(MS, News::Membership(m), &mut out);
    assert!(n.lease_valid(MS));
    assert!(
        out.contains(&NodeAction::RequestRun { leader, epoch: 0 }),
        "a started node asks for a run: {out:?}"
    );
    n.run_seen(0);
    n
}

#[test]
fn lease_end_without_renewal_drops_everything() {
    let mut n = following(1, 0, 10, ms(500));
    assert_eq!(n.next_deadline(), Some(ms(500)));
    let mut out = Vec::new();
    n.tick(ms(499), &mut out);
    assert!(out.is_empty(), "{out:?}");
    n.tick(ms(500), &mut out);
    assert!(out.contains(&NodeAction::DropAll), "{out:?}");
    assert!(out.contains(&NodeAction::SetLease(None)), "{out:?}");
    assert!(!n.lease_valid(ms(500)));
    assert_eq!(
        n.check_take(ms(500), 0, 10, 0),
        Err(Refusal::NoLease(1)),
        "no take without a lease"
    );
}

/// What the daemon relies on to carry out a `Membership` action late (the
/// lease intake queues its actions for the loop): the action carries the
/// membership of its moment, which a newer membership can overtake before
/// the loop gets to it; the core's `membership()` is then the newer one,
/// with the lease as the core knows it now. The daemon carries out that,
/// never the action's copy (a new leader otherwise abandoned its first runs
/// for an older membership without a leader).
#[test]
fn a_lease_news_membership_action_can_be_overtaken_and_the_core_has_the_newer() {
    let mut n = node(0);
    let mut out = Vec::new();
    // Start: a membership without a leader and without a lease.
    let mut early = membership(0, None, 512, &[0, 0, 0]);
    early.lease = lease(ms(10), None);
    n.news(ms(10), News::Membership(early), &mut out);
    out.clear();
    // The lease intake: the lease becomes valid; the core hands on its
    // membership of that moment (no leader yet).
    n.news(ms(20), News::Lease(lease(ms(20), Some(ms(50)))), &mut out);
    let queued = out
        .iter()
        .find_map(|a| match a {
            NodeAction::Membership(m) => Some(m.clone()),
            _ => None,
        })
        .expect("the lease change is handed on with a membership");
    assert_eq!(queued.leader, None);
    assert!(queued.lease_ok);
    out.clear();
    // The loop applies a newer membership (this node leads) first.
    let mut led = membership(0, Some(0), 768, &[0, 0, 0]);
    led.lease = lease(ms(21), Some(ms(51)));
    n.news(ms(21), News::Membership(led), &mut out);
    let now = n.membership().expect("a membership");
    assert_eq!(
        (now.generation, now.leader, now.lease_ok),
        (768, Some(0), true)
    );
    // Carried out late, the queued copy would say "no leader": the core's
    // own is what the daemon uses.
    assert_ne!(queued.leader, now.leader);
    // And when the lease then ends, the core's membership says so.
    n.tick(ms(60), &mut out);
    assert!(!n.membership().expect("a membership").lease_ok);
}

#[test]
fn old_news_never_undoes_newer_news() {
    let mut n = following(1, 0, 10, ms(500));
    let mut out = Vec::new();
    // Newer: the lease ended.
    n.news(ms(100), News::Lease(lease(ms(100), None)), &mut out);
    assert!(out.contains(&NodeAction::DropAll));
    out.clear();
    // An older poll answer saying it is valid: ignored.
    let mut old = membership(1, Some(0), 10, &[0, 0, 0]);
    old.lease = lease(ms(50), Some(ms(600)));
    n.news(ms(101), News::Membership(old), &mut out);
    assert!(!n.lease_valid(ms(101)));
    assert!(!out
        .iter()
        .any(|a| matches!(a, NodeAction::SetLease(Some(_)))));
}

#[test]
fn renewal_moves_the_deadline_and_the_kernel_lease() {
    let mut n = following(1, 0, 10, ms(500));
    let mut out = Vec::new();
    n.news(
        ms(200),
        News::Lease(lease(ms(200), Some(ms(700)))),
        &mut out,
    );
    assert_eq!(out, vec![NodeAction::SetLease(Some(ms(700)))]);
    out.clear();
    n.tick(ms(600), &mut out);
    assert!(out.is_empty());
}

/// Hole 2: after a flap the node asks again and again until a run answers.
#[test]
fn rerequest_after_a_flap_repeats_until_a_run_is_seen() {
    let mut n = following(1, 0, 10, ms(500));
    let mut out = Vec::new();
    n.tick(ms(500), &mut out);
    assert!(n.wants_run());
    out.clear();
    n.news(
        ms(600),
        News::Lease(lease(ms(600), Some(ms(60_000)))),
        &mut out,
    );
    let asked: Vec<u64> = out
        .iter()
        .filter_map(|a| match a {
            NodeAction::RequestRun { leader: 0, epoch } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "{out:?}");
    let epoch = asked[0];
    // The request is lost: asked again one period later, and again.
    for k in 1..=3u64 {
        out.clear();
        let at = ms(600) + n.config().rerequest_every * u32::try_from(k).expect("small");
        n.tick(at, &mut out);
        assert!(
            out.contains(&NodeAction::RequestRun { leader: 0, epoch }),
            "round {k}: {out:?}"
        );
    }
    // An answer from an earlier flap does not count.
    n.run_seen(epoch.wrapping_sub(1));
    assert!(n.wants_run());
    n.run_seen(epoch);
    assert!(!n.wants_run());
    assert_eq!(n.next_deadline(), n.lease_until());
}

/// Found by the simulator (seed 289260): a change of the address list
/// while this node knows no leader (its clusterd just restarted) must
/// still reach a leader: the node keeps asking until a run that started
/// after the change answers.
#[test]
fn a_run_wanted_with_no_leader_known_is_asked_for_once_one_is() {
    let mut n = following(1, 0, 10, ms(60_000));
    let mut out = Vec::new();
    // clusterd restarted: a membership with no leader, lease still valid.
    let mut m = membership(1, None, 3, &[0, 0, 0]);
    m.lease = lease(ms(20), Some(ms(60_000)));
    n.news(ms(20), News::Membership(m), &mut out);
    out.clear();
    n.run_wanted(ms(30), &mut out);
    assert!(
        !out.iter()
            .any(|a| matches!(a, NodeAction::RequestRun { .. })),
        "nobody to ask yet: {out:?}"
    );
    assert!(n.wants_run());
    // The leader is known again: it is asked at once (not at the next
    // re-request), and again at the re-request while no run answers.
    let mut m = membership(1, Some(2), 4, &[0, 0, 0]);
    m.lease = lease(ms(40), Some(ms(60_000)));
    n.news(ms(40), News::Membership(m), &mut out);
    assert!(
        out.iter()
            .any(|a| matches!(a, NodeAction::RequestRun { leader: 2, .. })),
        "asked the new leader at once: {out:?}"
    );
    out.clear();
    let at = ms(40) + n.config().rerequest_every;
    n.tick(at, &mut out);
    let epoch = out
        .iter()
        .find_map(|a| match a {
            NodeAction::RequestRun { leader: 2, epoch } => Some(*epoch),
            _ => None,
        })
        .unwrap_or_else(|| panic!("asked the new leader: {out:?}"));
    // An answer to a request from before the change does not count.
    n.run_seen(epoch.wrapping_sub(1));
    assert!(n.wants_run());
    n.run_seen(epoch);
    assert!(!n.wants_run());
}

/// Found by the simulator (fast seed 2165231, session 9's 1,000,000-
/// schedule run): node 0 led, its clusterd crashed and its failoverd froze
/// past its lease; at the thaw its lease news made the lease valid while
/// the membership it still had named itself leader, so the run it wanted
/// was left to its own leader side — and forgotten. The membership of the
/// real leader (node 1) came a moment later; nobody asked node 1 for a
/// run, and an address only node 0 may host stayed unhosted. The run must
/// stay wanted and be asked of the leader the node learns of.
#[test]
fn a_run_left_to_this_node_as_a_stale_leader_is_asked_of_the_real_one() {
    // Node 0 leads.
    let mut n = node(0);
    let mut m = membership(0, Some(0), 10, &[0, 0, 0]);
    m.lease = lease(MS, Some(ms(500)));
    let mut out = Vec::new();
    n.news(MS, News::Membership(m), &mut out);
    out.clear();
    // The lease ends while the process is frozen: everything dropped.
    n.tick(ms(600), &mut out);
    assert!(n.wants_run());
    out.clear();
    // The thaw: a lease event first (the membership kept says "leader 0").
    n.news(
        ms(610),
        News::Lease(lease(ms(610), Some(ms(60_000)))),
        &mut out,
    );
    assert!(
        !out.iter()
            .any(|a| matches!(a, NodeAction::RequestRun { .. })),
        "this node's leader side is responsible for now: {out:?}"
    );
    assert!(n.wants_run(), "the run is still wanted");
    // Then the real leader's membership.
    let mut m = membership(0, Some(1), 20, &[0, 0, 0]);
    m.lease = lease(ms(611), Some(ms(60_000)));
    n.news(ms(611), News::Membership(m), &mut out);
    assert!(
        out.iter()
            .any(|a| matches!(a, NodeAction::RequestRun { leader: 1, .. })),
        "asked the real leader: {out:?}"
    );
}

/// Hole 5: a TAKE of an old run after a RELEASE of a newer one — even a
/// RELEASE refused because this node's membership lags — is refused.
#[test]
fn stale_take_after_newer_release_is_refused() {
    let mut n = following(1, 0, 10, ms(500));
    // Node 2 leads now (generation 12); this node still follows 0.
    assert!(matches!(
        n.check_release(ms(10), 2, 12, 0),
        Err(Refusal::NotLeader { .. })
    ));
    assert_eq!(
        n.check_take(ms(10), 0, 10, 0),
        Err(Refusal::Stale { got: 10, seen: 12 })
    );
    // The same with an accepted release.
    let mut n = following(1, 0, 10, ms(500));
    assert_eq!(n.check_release(ms(10), 0, 11, 0), Ok(()));
    assert_eq!(
        n.check_take(ms(10), 0, 10, 0),
        Err(Refusal::Stale { got: 10, seen: 11 })
    );
    assert_eq!(n.check_take(ms(10), 0, 11, 0), Ok(()));
    assert_eq!(n.max_generation(), 11);
}

/// Found by the simulator (seed 266168): within one leader and
/// generation, a TAKE of an older run that comes after a step of a newer
/// run (it waited in a frozen process's queue) is refused; the newer run's
/// own steps, and the next leader's or generation's, are not.
#[test]
fn a_take_of_an_older_run_after_a_newer_runs_release_is_refused() {
    let mut n = following(1, 0, 10, ms(500));
    assert_eq!(n.check_take(ms(10), 0, 10, 100), Ok(()));
    assert_eq!(n.check_release(ms(10), 0, 10, 300), Ok(()));
    assert_eq!(
        n.check_take(ms(10), 0, 10, 100),
        Err(Refusal::StaleRun {
            got: 100,
            seen: 300
        })
    );
    // The newer run's own take, and a later run's.
    assert_eq!(n.check_take(ms(10), 0, 10, 300), Ok(()));
    assert_eq!(n.check_take(ms(10), 0, 10, 400), Ok(()));
    assert_eq!(
        n.check_release(ms(10), 0, 10, 300),
        Err(Refusal::StaleRun {
            got: 300,
            seen: 400
        })
    );
    // A newer generation starts its own count (its leader's clock).
    assert_eq!(n.check_release(ms(10), 0, 11, 5), Ok(()));
}

#[test]
fn take_only_from_the_followed_leader_and_not_when_disabled() {
    let mut n = following(1, 0, 10, ms(500));
    assert!(matches!(
        n.check_take(ms(10), 2, 10, 0),
        Err(Refusal::NotLeader { .. })
    ));
    let mut d = NodeCore::new(NodeConfig {
        disabled: true,
        ..NodeConfig::new(1, ms(500))
    });
    assert_eq!(d.check_take(ms(10), 0, 10, 0), Err(Refusal::NoMembership));
}

/// Hole 4: a request another node forwarded is never forwarded again.
#[test]
fn forwarded_requests_are_never_forwarded_again() {
    let n = following(1, 0, 10, ms(500));
    assert_eq!(n.route(1, false), Route::Forward(0));
    assert_eq!(n.route(2, false), Route::Refuse);
    assert_eq!(n.route(2, true), Route::Serve);
    let alone = node(1);
    assert_eq!(alone.route(1, false), Route::Refuse);
}

/// Hole 6: a failed removal stays tracked and is retried until it works.
#[test]
fn leftovers_are_retried_until_removed() {
    let mut n = following(1, 0, 10, ms(5000));
    n.removed(ms(10), ip(7), false);
    assert_eq!(n.leftovers(), &BTreeSet::from([ip(7)]));
    let retry = n.config().leftover_retry;
    let mut out = Vec::new();
    n.tick(ms(10) + retry, &mut out);
    assert_eq!(out, vec![NodeAction::RemoveLeftovers(vec![ip(7)])]);
    out.clear();
    n.tick(ms(10) + retry * 2, &mut out);
    assert_eq!(out, vec![NodeAction::RemoveLeftovers(vec![ip(7)])]);
    n.removed(ms(10) + retry * 2, ip(7), true);
    assert!(n.leftovers().is_empty());
    // A leftover taken again is hosted: no retry may remove it.
    n.removed(ms(20), ip(8), false);
    n.hosts(ip(8));
    assert!(n.leftovers().is_empty());
    out.clear();
    n.tick(ms(10) + retry * 4, &mut out);
    assert!(out.is_empty());
}

type Actions = Vec<LeaderAction<u32>>;

fn leading(generation: u64, flags: &[u32]) -> (LeaderCore<u32>, Actions) {
    let mut l = LeaderCore::new(LeaderConfig::new(0));
    let mut out = Vec::new();
    l.membership(MS, &membership(0, Some(0), generation, flags), &mut out);
    (l, out)
}

fn started(out: &Actions) -> Option<u64> {
    out.iter().find_map(|a| match a {
        LeaderAction::StartRun(o) | LeaderAction::StartMove(o, _) => Some(o.seq),
        _ => None,
    })
}

fn ok(answered: &[Pnn], complete: bool) -> RunOutcome {
    RunOutcome {
        answered: answered.iter().copied().collect(),
        ok: true,
        complete,
        generation: 5,
        last_owner: Some(BTreeMap::new()),
        ..RunOutcome::default()
    }
}

#[test]
fn a_new_leader_runs_once_and_runs_are_serialised() {
    let (mut l, out) = leading(5, &[0, 0, 0]);
    let seq = started(&out).expect("a run");
    let mut out = Vec::new();
    l.request_run(ms(2), &mut out);
    assert_eq!(started(&out), None, "one run at a time");
    l.run_finished(ms(3), seq, ok(&[0, 1, 2], true), &mut out);
    assert_eq!(started(&out), Some(seq + 1), "the wanted run follows");
}

#[test]
fn a_failed_run_is_retried_with_backoff_forever() {
    let (mut l, out) = leading(5, &[0, 0, 0]);
    let mut seq = started(&out).expect("a run");
    let mut now = ms(1);
    let mut last_gap = Duration::ZERO;
    for _ in 0..10 {
        let mut out = Vec::new();
        l.run_finished(now, seq, RunOutcome::default(), &mut out);
        assert_eq!(started(&out), None, "not at once");
        let at = l.next_deadline().expect("a retry is scheduled");
        assert!(at - now >= last_gap && at - now <= ms(1000));
        last_gap = at - now;
        now = at;
        l.tick(now, &mut out);
        seq = started(&out).expect("retried");
    }
    assert_eq!(last_gap, ms(1000));
}

/// Hole 2 (leader side): a run that leaves something unhosted is followed
/// by periodic runs until one is complete.
#[test]
fn incomplete_runs_repeat_until_complete() {
    let (mut l, out) = leading(5, &[0, 0, 0]);
    let seq = started(&out).expect("a run");
    let mut out = Vec::new();
    l.run_finished(ms(2), seq, ok(&[0, 1, 2], false), &mut out);
    let at = l.next_deadline().expect("periodic run");
    assert_eq!(at, ms(2) + LeaderConfig::new(0).period);
    l.tick(at, &mut out);
    let seq = started(&out).expect("periodic run started");
    out.clear();
    l.run_finished(at, seq, ok(&[0, 1, 2], true), &mut out);
    assert_eq!(l.next_deadline(), None, "complete: no more runs");
}

/// Hole 3: a connected node that never answers is left out after three runs;
/// answering brings it back.
#[test]
fn a_node_failing_runs_is_left_out_and_comes_back() {
    let (mut l, out) = leading(5, &[0, 0, 0]);
    let mut seq = started(&out).expect("a run");
    let mut now = ms(1);
    for round in 1..=3 {
        let mut out = Vec::new();
        let fail = RunOutcome {
            answered: BTreeSet::from([0, 1]),
            missing: BTreeSet::from([2]),
            ..RunOutcome::default()
        };
        l.run_finished(now, seq, fail, &mut out);
        assert_eq!(l.unresponsive().contains(&2), round >= 3, "round {round}");
        now = l.next_deadline().expect("retry");
        l.tick(now, &mut out);
        let order = out
            .iter()
            .find_map(|a| match a {
                LeaderAction::StartRun(o) => Some(o.clone()),
                _ => None,
            })
            .expect("retried");
        assert_eq!(order.unresponsive.contains(&2), round >= 3);
        seq = order.seq;
    }
    let mut out = Vec::new();
    l.run_finished(now, seq, ok(&[0, 1, 2], true), &mut out);
    assert!(l.unresponsive().is_empty());
}

#[test]
fn overtaken_job_is_aborted_and_waiters_reroute_when_leadership_moves() {
    let (mut l, out) = leading(5, &[0, 0, 0]);
    let seq = started(&out).expect("a run");
    let mut out = Vec::new();
    l.ipreallocate(ms(2), 77, &mut out);
    l.move_ip(
        ms(2),
        MoveIp {
            addr: ip(1),
            pnn: 1,
        },
        78,
        &mut out,
    );
    assert!(out.is_empty());
    // A newer generation overtakes the run: aborted and restarted.
    l.membership(ms(3), &membership(0, Some(0), 6, &[0, 1, 0]), &mut out);
    assert!(out.contains(&LeaderAction::Abort));
    let next = started(&out).expect("restarted");
    assert!(next > seq);
    out.clear();
    // Leadership moves: the job is aborted, requests go back to the shell.
    l.membership(ms(4), &membership(0, Some(1), 7, &[0, 0, 0]), &mut out);
    assert!(out.contains(&LeaderAction::Abort));
    assert!(out.contains(&LeaderAction::Reroute(77)));
    assert!(!l.active());
    assert_eq!(l.queued(), 0);
}

#[test]
fn waiters_are_answered_only_by_a_run_that_started_after_them() {
    let (mut l, out) = leading(5, &[0, 0, 0]);
    let first = started(&out).expect("a run");
    let mut out = Vec::new();
    l.ipreallocate(ms(2), 9, &mut out);
    l.run_finished(ms(3), first, ok(&[0, 1, 2], true), &mut out);
    assert!(!out.iter().any(|a| matches!(a, LeaderAction::Answer(9, _))));
    let second = started(&out).expect("the waiter's run");
    out.clear();
    l.run_finished(ms(4), second, ok(&[0, 1, 2], true), &mut out);
    assert!(out.contains(&LeaderAction::Answer(9, 5)));
}

fn report(pnn: Pnn, known: &[u8], hosts: &[u8]) -> PublicIps {
    PublicIps {
        pnn,
        can_host: true,
        ips: known
            .iter()
            .map(|&k| PublicIp {
                addr: ip(k),
                prefix: 24,
                configured: vec!["eth0".into()],
                available: vec!["eth0".into()],
                active: hosts.contains(&k).then(|| "eth0".into()),
                owner: hosts.contains(&k).then_some(pnn),
            })
            .collect(),
        ifaces: Vec::new(),
    }
}

/// Hole 3 in the planner: with node 2 left out, the dead node 3's address
/// moves, node 2's own stays with it, and node 2 gets nothing new.
#[test]
fn left_out_node_keeps_its_addresses_and_others_move() {
    let mut m = membership(0, Some(0), 5, &[0, 0, 0, 1]);
    m.reassignable = vec![3];
    let reports = BTreeMap::from([
        (0, report(0, &[1, 2, 3], &[1])),
        (1, report(1, &[1, 2, 3], &[])),
    ]);
    let last = BTreeMap::from([(ip(1), 0), (ip(2), 2), (ip(3), 3)]);
    let none = BTreeSet::new();
    let input = PlanInput {
        membership: &m,
        reports: &reports,
        last_owner: &last,
        tunables: Tunables::default(),
        force_rebalance: &[],
        unresponsive: &none,
    };
    assert_eq!(plan(input), Err(PlanError::MissingReport(2)));
    let out = BTreeSet::from([2]);
    let p = plan(PlanInput {
        unresponsive: &out,
        ..input
    })
    .expect("plans without node 2");
    assert_eq!(p.pinned.get(&ip(2)), Some(&2), "{p:?}");
    assert!(p.owner(ip(3)).is_some_and(|o| o == 0 || o == 1), "{p:?}");
    assert!(!p.takes.contains_key(&2));
    assert!(!p.releases.contains_key(&2));
    for list in p.takes.values() {
        assert!(!list.contains(&ip(2)));
    }
}

#[test]
fn waiting_requests_are_bounded_while_runs_fail() {
    let (mut l, out) = leading(5, &[0, 0, 0]);
    let seq = started(&out).expect("a run");
    let mut out = Vec::new();
    // The run never ends (a node hangs): requests keep coming.
    let extra = 10u32;
    let total = u32::try_from(super::leader::MAX_WAITING).expect("small") + extra;
    for k in 0..total {
        l.ipreallocate(ms(2), k, &mut out);
    }
    assert_eq!(l.queued(), super::leader::MAX_WAITING);
    let busy: Vec<u32> = out
        .iter()
        .filter_map(|a| match a {
            LeaderAction::Busy(w) => Some(*w),
            _ => None,
        })
        .collect();
    assert_eq!(
        busy,
        (0..extra).collect::<Vec<_>>(),
        "the oldest are refused"
    );
    let _ = seq;
}

/// Found by the simulator: every clusterd restarted (generations start
/// low again); a node that had seen high generations must not refuse the
/// new cluster's runs for ever.
#[test]
fn a_restarted_cluster_starts_the_generation_count_again() {
    let mut n = following(1, 0, 5000, ms(5000));
    assert_eq!(n.check_release(ms(11), 0, 5000, 0), Ok(()));
    let mut out = Vec::new();
    let mut m = membership(1, Some(0), 300, &[0, 0, 0]);
    m.lease = lease(ms(10), Some(ms(5000)));
    n.news(ms(10), News::Membership(m), &mut out);
    assert_eq!(n.check_take(ms(11), 0, 300, 0), Ok(()));
}

/// Found by the long simulation run: failoverd frozen across its lease
/// end, then thawed with a renewal queued. The renewal must not keep (and
/// re-lease in the kernel) addresses held through the gap: drop first.
#[test]
fn a_renewal_after_the_end_passed_still_drops_first() {
    let mut n = following(1, 0, 10, ms(500));
    let mut out = Vec::new();
    // No tick ran at 500 ms (frozen); at 800 ms a renewal is read.
    n.news(
        ms(800),
        News::Lease(lease(ms(790), Some(ms(1300)))),
        &mut out,
    );
    let drop = out.iter().position(|a| *a == NodeAction::DropAll);
    let renew = out
        .iter()
        .position(|a| *a == NodeAction::SetLease(Some(ms(1300))));
    assert!(drop.is_some() && renew.is_some(), "{out:?}");
    assert!(drop < renew, "drop before the new lease: {out:?}");
    assert!(n.lease_valid(ms(800)));
}

/// A node with neither a leader nor a lease (in clusterd's startup hold)
/// acknowledges releases (it may hold nothing; refusing failed every run
/// while it merely knew the addresses), but never takes; a node that
/// follows a leader, or holds a lease while following nobody, still
/// refuses another node's release (a stale leader must not remove what it
/// may host).
#[test]
fn only_a_node_without_leader_and_lease_accepts_any_release() {
    // No news at all yet.
    let mut n = node(1);
    assert_eq!(n.check_release(ms(10), 0, 5, 0), Ok(()));
    assert_eq!(n.check_take(ms(10), 0, 5, 0), Err(Refusal::NoMembership));
    // Membership without a leader and without a lease.
    let mut out = Vec::new();
    let mut m = membership(1, None, 3, &[0, 0, 0]);
    m.lease = lease(MS, None);
    n.news(MS, News::Membership(m), &mut out);
    assert_eq!(n.check_release(ms(10), 2, 5, 0), Ok(()));
    assert!(matches!(
        n.check_take(ms(10), 2, 5, 0),
        Err(Refusal::NotLeader { leader: None, .. })
    ));
    // Following nobody but holding a lease (majority leases keep it while
    // no leader is active): it may host addresses, so it refuses.
    let mut m = membership(1, None, 3, &[0, 0, 0]);
    m.lease = lease(ms(20), Some(ms(500)));
    n.news(ms(20), News::Membership(m), &mut out);
    assert!(matches!(
        n.check_release(ms(30), 2, 6, 0),
        Err(Refusal::NotLeader { leader: None, .. })
    ));
    // Following a leader: another node's release is refused, with or
    // without a lease.
    let mut f = following(1, 0, 10, ms(500));
    assert!(matches!(
        f.check_release(ms(10), 2, 12, 0),
        Err(Refusal::NotLeader { .. })
    ));
    assert!(matches!(
        f.check_release(ms(600), 2, 13, 0),
        Err(Refusal::NotLeader { .. })
    ));
    // The generation it carried still counts as evidence of a newer run.
    let mut n = node(1);
    let mut m = membership(1, None, 3, &[0, 0, 0]);
    m.lease = lease(MS, None);
    n.news(MS, News::Membership(m), &mut out);
    assert_eq!(n.check_release(ms(10), 0, 40, 0), Ok(()));
    assert_eq!(n.max_generation(), 40);
}

/// A node whose lease came while it followed nobody asks the leader for a
/// run as soon as it learns who leads, not at the next re-request.
#[test]
fn a_wanted_run_is_asked_for_as_soon_as_the_leader_is_known() {
    let mut n = node(1);
    let mut out = Vec::new();
    let mut m = membership(1, None, 3, &[0, 0, 0]);
    m.lease = lease(MS, Some(ms(500)));
    n.news(MS, News::Membership(m), &mut out);
    assert!(n.lease_valid(ms(2)));
    assert!(
        !out.iter()
            .any(|a| matches!(a, NodeAction::RequestRun { .. })),
        "nobody to ask: {out:?}"
    );
    let mut out = Vec::new();
    let mut m = membership(1, Some(0), 4, &[0, 0, 0]);
    m.lease = lease(ms(5), Some(ms(500)));
    n.news(ms(5), News::Membership(m.clone()), &mut out);
    assert!(
        out.contains(&NodeAction::RequestRun {
            leader: 0,
            epoch: 0
        }),
        "asked at once: {out:?}"
    );
    // Only once per leader change: the same membership again asks nothing
    // (the re-request timer does that).
    let mut out = Vec::new();
    m.lease = lease(ms(6), Some(ms(500)));
    n.news(ms(6), News::Membership(m), &mut out);
    assert!(!out
        .iter()
        .any(|a| matches!(a, NodeAction::RequestRun { .. })));
}

/// A failed run's backoff ends when a node asks for a run: the node that
/// could not take part is ready.
#[test]
fn a_node_asking_for_a_run_cuts_the_backoff_short() {
    let (mut l, out) = leading(5, &[0, 0, 0]);
    let mut seq = started(&out).expect("a run");
    let mut now = ms(1);
    // Fail a few runs: the backoff grows.
    for _ in 0..4 {
        let mut out = Vec::new();
        l.run_finished(now, seq, RunOutcome::default(), &mut out);
        now = l.next_deadline().expect("a retry");
        l.tick(now, &mut out);
        seq = started(&out).expect("retried");
    }
    let mut out = Vec::new();
    l.run_finished(now, seq, RunOutcome::default(), &mut out);
    let retry = l.next_deadline().expect("a retry");
    assert!(retry - now >= ms(400), "backoff grew to {:?}", retry - now);
    assert_eq!(started(&out), None);
    // A node asks: the run starts now.
    l.ipreallocate(now + MS, 7, &mut out);
    let seq = started(&out).expect("a run at once");
    // It answers the request.
    let mut out = Vec::new();
    l.run_finished(now + ms(2), seq, ok(&[0, 1, 2], true), &mut out);
    assert!(out.contains(&LeaderAction::Answer(7, 5)), "{out:?}");
}

/// A node without a lease offers nothing (its report lists no available
/// interface): the plan gives it nothing and releases nothing elsewhere
/// for it, so the healthy nodes keep their addresses until it can take.
#[test]
fn a_node_that_offers_nothing_gets_nothing_and_moves_nothing() {
    let m = membership(0, Some(0), 5, &[0, 0, 0]);
    let mut starting = report(2, &[1, 2, 3, 4, 5, 6], &[]);
    starting.can_host = false;
    for i in &mut starting.ips {
        i.available.clear();
    }
    let reports = BTreeMap::from([
        (0, report(0, &[1, 2, 3, 4, 5, 6], &[1, 2, 3])),
        (1, report(1, &[1, 2, 3, 4, 5, 6], &[4, 5, 6])),
        (2, starting),
    ]);
    let p = plan(PlanInput {
        membership: &m,
        reports: &reports,
        last_owner: &BTreeMap::new(),
        tunables: Tunables::default(),
        force_rebalance: &[],
        unresponsive: &BTreeSet::new(),
    })
    .expect("a plan");
    assert_eq!(p.moved, 0, "{p:?}");
    assert!(!p.takes.contains_key(&2), "{p:?}");
    // Nothing a healthy node hosts is released there.
    let own = |n: Pnn, hosts: &[u8]| {
        p.releases
            .get(&n)
            .is_none_or(|r| r.iter().all(|(a, _)| !hosts.iter().any(|&k| ip(k) == *a)))
    };
    assert!(own(0, &[1, 2, 3]) && own(1, &[4, 5, 6]), "{p:?}");
    // The same node offering: it gets a share, released elsewhere first.
    let reports = BTreeMap::from([
        (0, report(0, &[1, 2, 3, 4, 5, 6], &[1, 2, 3])),
        (1, report(1, &[1, 2, 3, 4, 5, 6], &[4, 5, 6])),
        (2, report(2, &[1, 2, 3, 4, 5, 6], &[])),
    ]);
    let p = plan(PlanInput {
        membership: &m,
        reports: &reports,
        last_owner: &BTreeMap::new(),
        tunables: Tunables::default(),
        force_rebalance: &[],
        unresponsive: &BTreeSet::new(),
    })
    .expect("a plan");
    assert!(p.takes.get(&2).is_some_and(|t| !t.is_empty()), "{p:?}");
}

/// The leader side must see a lapse even when the core got over it before
/// the shell carried the lapse's membership out (chaos, seed 103), and must
/// never see a stale copy over a newer membership otherwise.
#[test]
fn the_leader_side_is_fed_a_lapse_the_core_got_over_and_nothing_stale() {
    use super::node::leader_feed;
    let mut lapse = membership(0, Some(0), 5, &[0, 0, 0]);
    lapse.lease_ok = false;
    let now = membership(0, Some(0), 5, &[0, 0, 0]);
    assert_eq!(
        leader_feed(lapse.clone(), Some(&now)),
        vec![lapse.clone(), now.clone()]
    );
    // Fed through a real leader core: it leaves and comes back active,
    // with a run to do (the one that takes the node's share back).
    let mut leader: LeaderCore<u32> = LeaderCore::new(LeaderConfig::new(0));
    let mut out = Vec::new();
    leader.membership(ms(0), &now, &mut out);
    assert!(leader.active());
    leader.tick(ms(1), &mut out);
    out.clear();
    for m in leader_feed(lapse.clone(), Some(&now)) {
        leader.membership(ms(2), &m, &mut out);
    }
    assert!(leader.active());
    leader.tick(ms(3), &mut out);
    assert!(
        out.iter().any(|a| matches!(a, LeaderAction::StartRun(_))),
        "no run after the lapse: {out:?}"
    );
    // A stale copy with a lease (an older membership without a leader) is
    // not fed over the newer one.
    let stale = membership(0, None, 4, &[0, 0, 0]);
    assert_eq!(leader_feed(stale, Some(&now)), vec![now.clone()]);
    // Still lapsed: the current state alone.
    let mut still = now.clone();
    still.lease_ok = false;
    assert_eq!(leader_feed(lapse.clone(), Some(&still)), vec![still]);
    assert_eq!(leader_feed(lapse.clone(), None), vec![lapse]);
}
