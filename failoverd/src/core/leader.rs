//! The leader side of failoverd's core: when takeover runs happen.
//!
//! [`LeaderCore`] decides, with no I/O and no clock, when this node's
//! failoverd starts a takeover run or a `moveip`, abandons one, retries,
//! answers the IPREALLOCATE requests waiting for a run, and which connected
//! nodes are left out of allocation because they keep failing runs. The
//! shell carries the run itself out ([`crate::leader::takeover_run`], or a
//! simulator's model of it) and reports how it went.
//!
//! Rules:
//! * The leader side is active only while clusterd names this node leader
//!   and its lease is valid. A run is wanted when it becomes active, when
//!   the generation, the leader, a node's flags or the reassignable nodes
//!   change, and when a node asks (IPREALLOCATE). Runs are serialised; one
//!   overtaken by a newer generation is abandoned and redone (safe at any
//!   point: takes are only sent after the releases they depend on were
//!   acknowledged).
//! * **A failed run is retried** after a backoff (`backoff_min`, doubling up
//!   to `backoff_max`), forever, or at once when a node asks for a run
//!   (IPREALLOCATE: a node that could not take part is ready now). **A run that leaves an address some node
//!   may host unhosted** — held back or pinned because a node that may
//!   still hold it cannot say so — is followed by another every `period`
//!   until none is (hole 2: nothing else may trigger one).
//! * **A node that fails runs** (hole 3): a connected node that has not
//!   answered GET_PUBLIC_IPS in `exclude_after` runs in a row is left out
//!   (as CTDB bans a node that fails takeover runs): the next runs go ahead
//!   without its report. It may still hold addresses — it is connected and
//!   its lease may be valid — so the planner treats it like a disconnected
//!   node whose lease has not lapsed: every address it may hold stays with
//!   it and is neither released nor taken anywhere, and it gets nothing new.
//!   Only the allocation of everything else proceeds. Every run still asks
//!   it; once it answers it is back.
//! * Requests waiting for a run are answered by the first successful run
//!   that started after they arrived. When leadership moves, they are
//!   handed back to the shell to be routed again ([`LeaderAction::Reroute`]),
//!   never bounced between nodes (see [`crate::core::node::Route`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use transport::msg::cluster::{Membership, NodeFlags, Pnn};
use transport::msg::failover::MoveIp;

/// Settings of the leader core.
#[derive(Debug, Clone, Copy)]
pub struct LeaderConfig {
    /// This node.
    pub pnn: Pnn,
    /// First retry delay after a failed run.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Delay between runs while an address some node may host is not
    /// hosted.
    pub period: Duration,
    /// Consecutive runs a connected node may fail to report in before it is
    /// left out of allocation.
    pub exclude_after: u32,
}

impl LeaderConfig {
    /// Defaults for `pnn`: retry after 50 ms doubling to 1 s, a periodic
    /// run every second while incomplete, leave a node out after 3 failed
    /// runs.
    #[must_use]
    pub fn new(pnn: Pnn) -> LeaderConfig {
        LeaderConfig {
            pnn,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            period: Duration::from_secs(1),
            exclude_after: 3,
        }
    }
}

/// A job the shell must start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOrder {
    /// Its number (report it back with the outcome).
    pub seq: u64,
    /// The membership it runs for.
    pub membership: Membership,
    /// The leader's memory of who held what.
    pub last_owner: BTreeMap<IpAddr, Pnn>,
    /// Connected nodes left out of allocation (their report may be
    /// missing).
    pub unresponsive: BTreeSet<Pnn>,
    /// Nodes LCP2 may move addresses to although they hold some.
    pub force_rebalance: Vec<Pnn>,
}

/// What the shell must do for the leader side. `W` is the shell's handle
/// of a waiting request (a message to answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderAction<W> {
    /// Start a takeover run.
    StartRun(RunOrder),
    /// Start a `moveip`.
    StartMove(RunOrder, MoveIp),
    /// Abandon the job in progress (its outcome will not be reported).
    Abort,
    /// Answer an IPREALLOCATE with the generation of the run that served it.
    Answer(W, u64),
    /// Answer a MOVE_IP (`Err`: why it failed).
    MoveDone(W, Result<(), String>),
    /// Leadership moved: route this request again (forward it if it came
    /// from this node, else refuse it).
    Reroute(W),
    /// Too many requests wait for a run: refuse this one (the oldest).
    Busy(W),
}

/// Requests waiting for a run or a move at most; the oldest is refused
/// beyond (a node asks again, so waiting requests must not pile up while
/// runs fail).
pub const MAX_WAITING: usize = 256;

/// How a run went, as the shell reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunOutcome {
    /// Nodes that answered GET_PUBLIC_IPS.
    pub answered: BTreeSet<Pnn>,
    /// Connected nodes that did not.
    pub missing: BTreeSet<Pnn>,
    /// The new memory of who holds what, when the run got as far as
    /// executing a plan.
    pub last_owner: Option<BTreeMap<IpAddr, Pnn>>,
    /// Every step succeeded.
    pub ok: bool,
    /// Every address some node may host is hosted (nothing was held back or
    /// pinned, every take succeeded).
    pub complete: bool,
    /// The generation planned for.
    pub generation: u64,
}

#[derive(Debug, Clone)]
enum JobKind<W> {
    Run,
    Move(MoveIp, W),
}

#[derive(Debug, Clone)]
struct Job<W> {
    seq: u64,
    generation: u64,
    kind: JobKind<W>,
}

/// The leader side of failoverd's core (see the module docs).
#[derive(Debug, Clone)]
pub struct LeaderCore<W> {
    cfg: LeaderConfig,
    active: bool,
    membership: Option<Membership>,
    last_owner: BTreeMap<IpAddr, Pnn>,
    need_run: bool,
    next_seq: u64,
    job: Option<Job<W>>,
    retry_at: Option<Duration>,
    backoff: Duration,
    periodic_at: Option<Duration>,
    waiters: Vec<(u64, W)>,
    moves: VecDeque<(MoveIp, W)>,
    force_rebalance: Vec<Pnn>,
    /// Consecutive runs each connected node did not report in.
    failures: BTreeMap<Pnn, u32>,
    unresponsive: BTreeSet<Pnn>,
}

/// What in a membership calls for a new takeover run when it changes.
#[derive(Debug, PartialEq, Eq)]
struct RunKey<'a> {
    generation: u64,
    leader: Option<Pnn>,
    /// Each node's flags, in node order.
    flags: Vec<u32>,
    reassignable: &'a [Pnn],
}

impl<'a> RunKey<'a> {
    fn of(m: &'a Membership) -> Self {
        RunKey {
            generation: m.generation,
            leader: m.leader,
            flags: m.nodes.iter().map(|n| n.flags.bits()).collect(),
            reassignable: &m.reassignable,
        }
    }
}

impl<W> LeaderCore<W> {
    /// An inactive leader side.
    #[must_use]
    pub fn new(cfg: LeaderConfig) -> LeaderCore<W> {
        LeaderCore {
            cfg,
            active: false,
            membership: None,
            last_owner: BTreeMap::new(),
            need_run: false,
            next_seq: 0,
            job: None,
            retry_at: None,
            backoff: cfg.backoff_min,
            periodic_at: None,
            waiters: Vec::new(),
            moves: VecDeque::new(),
            force_rebalance: Vec::new(),
            failures: BTreeMap::new(),
            unresponsive: BTreeSet::new(),
        }
    }

    /// This node leads (runs takeover runs).
    #[must_use]
    pub fn active(&self) -> bool {
        self.active
    }

    /// A job is in progress.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// The nodes left out of allocation.
    #[must_use]
    pub fn unresponsive(&self) -> &BTreeSet<Pnn> {
        &self.unresponsive
    }

    /// The memory of who holds what.
    #[must_use]
    pub fn last_owner(&self) -> &BTreeMap<IpAddr, Pnn> {
        &self.last_owner
    }

    /// Requests waiting (IPREALLOCATE and MOVE_IP): bounded by what the
    /// shell lets in.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.waiters.len() + self.moves.len()
    }

    /// The next instant [`LeaderCore::tick`] has something to do.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Duration> {
        if !self.active {
            return None;
        }
        [self.retry_at, self.periodic_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// This node's membership changed (with `lease_ok` as the node core
    /// knows it).
    pub fn membership(&mut self, now: Duration, m: &Membership, out: &mut Vec<LeaderAction<W>>) {
        let old = self.membership.replace(m.clone());
        let leading = m.leader == Some(self.cfg.pnn) && m.lease_ok;
        if leading && !self.active {
            self.active = true;
            self.last_owner.clear();
            self.failures.clear();
            self.unresponsive.clear();
            self.need_run = true;
            self.retry_at = None;
            self.periodic_at = None;
            self.backoff = self.cfg.backoff_min;
        } else if !leading && self.active {
            self.active = false;
            self.last_owner.clear();
            self.need_run = false;
            self.retry_at = None;
            self.periodic_at = None;
            if let Some(job) = self.job.take() {
                out.push(LeaderAction::Abort);
                if let JobKind::Move(_, w) = job.kind {
                    out.push(LeaderAction::MoveDone(w, Err("leadership moved".into())));
                }
            }
            for (_, w) in std::mem::take(&mut self.waiters) {
                out.push(LeaderAction::Reroute(w));
            }
            for (_, w) in std::mem::take(&mut self.moves) {
                out.push(LeaderAction::Reroute(w));
            }
        } else if leading && old.as_ref().is_none_or(|o| RunKey::of(o) != RunKey::of(m)) {
            self.need_run = true;
            self.retry_at = None;
            // Nodes no longer connected are handled by their flags.
            let gone: Vec<Pnn> = self
                .unresponsive
                .iter()
                .copied()
                .filter(|&p| {
                    m.flags(p)
                        .is_none_or(|f| f.intersects(NodeFlags::DISCONNECTED | NodeFlags::DELETED))
                })
                .collect();
            for p in gone {
                self.unresponsive.remove(&p);
                self.failures.remove(&p);
            }
            if self
                .job
                .as_ref()
                .is_some_and(|j| j.generation != m.generation)
            {
                if let Some(job) = self.job.take() {
                    out.push(LeaderAction::Abort);
                    if let JobKind::Move(mv, w) = job.kind {
                        self.moves.push_front((mv, w));
                    }
                }
            }
        }
        self.start(now, out);
    }

    /// A run is wanted (this node's interfaces or list changed, or the
    /// shell asks).
    pub fn request_run(&mut self, now: Duration, out: &mut Vec<LeaderAction<W>>) {
        if self.active {
            self.need_run = true;
            self.start(now, out);
        }
    }

    /// An IPREALLOCATE to serve (the shell routed it here because this node
    /// leads): answered after the next successful run. It also cuts a
    /// failed run's backoff short: the usual cause of a failure is a node
    /// that could not take part yet (just started, no lease yet), and such
    /// a node asks for a run as soon as it can (a node asks at most every
    /// two leases, so this cannot make runs spin).
    pub fn ipreallocate(&mut self, now: Duration, w: W, out: &mut Vec<LeaderAction<W>>) {
        if !self.active {
            out.push(LeaderAction::Reroute(w));
            return;
        }
        self.retry_at = None;
        self.need_run = true;
        self.waiters.push((self.next_seq, w));
        if self.waiters.len() > MAX_WAITING {
            let (_, oldest) = self.waiters.remove(0);
            out.push(LeaderAction::Busy(oldest));
        }
        self.start(now, out);
    }

    /// A MOVE_IP to serve.
    pub fn move_ip(&mut self, now: Duration, mv: MoveIp, w: W, out: &mut Vec<LeaderAction<W>>) {
        if !self.active {
            out.push(LeaderAction::Reroute(w));
            return;
        }
        self.moves.push_back((mv, w));
        if self.moves.len() > MAX_WAITING {
            if let Some((_, oldest)) = self.moves.pop_front() {
                out.push(LeaderAction::Busy(oldest));
            }
        }
        self.start(now, out);
    }

    /// Ask LCP2 to move addresses to `pnn` although it holds some (a node
    /// that came back).
    pub fn force_rebalance(&mut self, pnn: Pnn) {
        if !self.force_rebalance.contains(&pnn) {
            self.force_rebalance.push(pnn);
        }
    }

    /// Timers: retries and periodic runs.
    pub fn tick(&mut self, now: Duration, out: &mut Vec<LeaderAction<W>>) {
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
        }
        if self.periodic_at.is_some_and(|at| now >= at) {
            self.periodic_at = None;
            self.need_run = true;
        }
        self.start(now, out);
    }

    /// The run `seq` finished.
    pub fn run_finished(
        &mut self,
        now: Duration,
        seq: u64,
        outcome: RunOutcome,
        out: &mut Vec<LeaderAction<W>>,
    ) {
        let Some(job) = self.job.take_if(|j| j.seq == seq) else {
            return;
        };
        if let Some(memory) = outcome.last_owner {
            self.last_owner = memory;
        }
        self.count_reports(&outcome.answered, &outcome.missing);
        match job.kind {
            JobKind::Run if outcome.ok => {
                self.backoff = self.cfg.backoff_min;
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
                    .into_iter()
                    .partition(|(min, _)| *min <= seq);
                self.waiters = waiting;
                for (_, w) in ready {
                    out.push(LeaderAction::Answer(w, outcome.generation));
                }
                if !outcome.complete {
                    self.periodic_at = Some(now + self.cfg.period);
                }
            }
            JobKind::Run => self.fail(now),
            JobKind::Move(_, w) => {
                if outcome.ok {
                    out.push(LeaderAction::MoveDone(w, Ok(())));
                } else {
                    out.push(LeaderAction::MoveDone(w, Err("the move failed".into())));
                    // The state may be half-way: a normal run settles it.
                    self.need_run = true;
                }
            }
        }
        self.start(now, out);
    }

    /// A `moveip` that could not even start (the target cannot host the
    /// address): answered with `why`.
    pub fn move_refused(
        &mut self,
        now: Duration,
        seq: u64,
        why: String,
        out: &mut Vec<LeaderAction<W>>,
    ) {
        if let Some(job) = self.job.take_if(|j| j.seq == seq) {
            if let JobKind::Move(_, w) = job.kind {
                out.push(LeaderAction::MoveDone(w, Err(why)));
            }
        }
        self.start(now, out);
    }

    fn fail(&mut self, now: Duration) {
        self.need_run = true;
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.cfg.backoff_max);
    }

    fn count_reports(&mut self, answered: &BTreeSet<Pnn>, missing: &BTreeSet<Pnn>) {
        for p in answered {
            self.failures.remove(p);
            self.unresponsive.remove(p);
        }
        for &p in missing {
            if p == self.cfg.pnn {
                continue;
            }
            let n = self.failures.entry(p).or_insert(0);
            *n = n.saturating_add(1);
            if *n >= self.cfg.exclude_after {
                self.unresponsive.insert(p);
            }
        }
    }

    fn start(&mut self, _now: Duration, out: &mut Vec<LeaderAction<W>>) {
        if !self.active || self.job.is_some() || self.retry_at.is_some() {
            return;
        }
        let Some(m) = self.membership.clone() else {
            return;
        };
        let seq = self.next_seq;
        let order = |force_rebalance| RunOrder {
            seq,
            membership: m.clone(),
            last_owner: self.last_owner.clone(),
            unresponsive: self.unresponsive.clone(),
            force_rebalance,
        };
        if let Some((mv, w)) = self.moves.pop_front() {
            let o = order(Vec::new());
            self.next_seq += 1;
            self.job = Some(Job {
                seq,
                generation: m.generation,
                kind: JobKind::Move(mv, w),
            });
            out.push(LeaderAction::StartMove(o, mv));
            return;
        }
        if !self.need_run {
            return;
        }
        let o = order(std::mem::take(&mut self.force_rebalance));
        self.need_run = false;
        self.periodic_at = None;
        self.next_seq += 1;
        self.job = Some(Job {
            seq,
            generation: m.generation,
            kind: JobKind::Run,
        });
        out.push(LeaderAction::StartRun(o));
    }
}
