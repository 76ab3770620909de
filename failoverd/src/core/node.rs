//! The node side of failoverd's core: what this node may hold, and when.
//!
//! [`NodeCore`] owns every safety decision a node makes on its own, with no
//! I/O and no clock: the shell gives it `now` (the host's `CLOCK_MONOTONIC`,
//! the clock clusterd's lease instants are on) and its inputs, and carries
//! out the [`NodeAction`]s it returns.
//!
//! * **The lease.** News from clusterd (`LEASE` events and memberships) is
//!   applied in the order of its own timestamp, so an old poll answer never
//!   undoes newer news. While the lease is valid the shell keeps the
//!   executor's gate and the kernel's lease elements at its end
//!   ([`NodeAction::SetLease`]); when it ends — clusterd said so, or the
//!   told end passed without renewal ([`NodeCore::tick`]) — every public
//!   address goes at once ([`NodeAction::DropAll`]).
//! * **Re-request after a flap** (hole 2). A node that lost its lease dropped
//!   its addresses, and the leader may not have noticed (the node never
//!   looked disconnected to it). Once the lease is valid again the node asks
//!   the leader for a run ([`NodeAction::RequestRun`]) every
//!   `rerequest_every` until the leader answers one of those requests (a run
//!   that started after the request completed: [`NodeCore::run_seen`]).
//!   A newly started failoverd does the same: its leader cannot see the
//!   restart.
//! * **Run requests** (hole 5). TAKE and RELEASE are accepted only from the
//!   leader this node follows, for a generation not older than its current
//!   membership's nor than the highest generation seen in any TAKE or
//!   RELEASE — refused ones included, since they prove a newer run exists
//!   (a generation this node made up while it was cut off proves nothing:
//!   the leader it joins may have a lower one; and the count starts again
//!   when the leader changes or the generation goes back — a restarted
//!   clusterd or cluster starts low) — and a
//!   TAKE only while the lease is valid. So a TAKE of an old run that
//!   arrives after a RELEASE of a newer one (another path, a lagging
//!   membership) is refused.
//! * **Forwarding** (hole 4). IPREALLOCATE and MOVE_IP are forwarded to the
//!   leader only when they come from this node (the CLI, this failoverd);
//!   one that another node forwarded is never forwarded again, so two nodes
//!   that each think the other leads cannot bounce it.
//! * **Leftovers** (hole 6). An address whose removal failed, or that
//!   `delip`/`reloadips` forgot before its release succeeded, stays in
//!   [`NodeCore::leftovers`]: it is reported to the leader as configured
//!   here (so it is never given to another node without a release here
//!   first) and its removal is retried every `leftover_retry` until it
//!   succeeds.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use transport::msg::cluster::{Lease, Membership, Pnn};

/// News from clusterd, in the order the shell receives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum News {
    /// A published or polled membership (carries the lease too).
    Membership(Membership),
    /// A `LEASE` event.
    Lease(Lease),
}

/// What the shell must do for the node side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAction {
    /// Addresses may be held until this instant (`None`: not at all): the
    /// executor's lease gate and the kernel's lease elements follow it.
    SetLease(Option<Duration>),
    /// Remove every public address now without waiting for anything
    /// (lease lost; the executor's `DropMode::LeaseLost`).
    DropAll,
    /// Ask `leader` for a takeover run (IPREALLOCATE); report its answer
    /// with [`NodeCore::run_seen`] and this `epoch`.
    RequestRun {
        /// The leader to ask.
        leader: Pnn,
        /// The lease flap this request is for.
        epoch: u64,
    },
    /// Try again to remove these addresses from the kernel; report each
    /// result with [`NodeCore::removed`].
    RemoveLeftovers(Vec<IpAddr>),
    /// The membership the leader side follows changed (lease validity as
    /// this core knows it).
    Membership(Membership),
}

/// What the leader side must be given when the shell carries out
/// [`NodeAction::Membership`]`(copy)` while the node core's membership is
/// `current` by then (the lease intake runs beside the loop, so the core
/// may have moved on). Normally `current` alone: a stale copy must not
/// undo a newer membership (a new leader abandoned its first runs for a
/// copy without a leader). But a lapse (`copy` without a lease) that the
/// core has already got over must still reach the leader side first:
/// the node dropped every address in it, and only the leader side's
/// becoming active again starts the run that takes this node's share back
/// — a leader whose failoverd was frozen past its lease end kept its
/// addresses dropped until an unrelated membership change (chaos, fast
/// profile, seed 103).
#[must_use]
pub fn leader_feed(copy: Membership, current: Option<&Membership>) -> Vec<Membership> {
    match current {
        None => vec![copy],
        Some(now) if !copy.lease_ok && now.lease_ok => vec![copy, now.clone()],
        Some(now) => vec![now.clone()],
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No membership from clusterd yet.
    #[error("no membership yet")]
    NoMembership,
    /// The sender is not the leader this node follows.
    #[error("node {from} is not the leader (node {this} follows {leader:?})")]
    NotLeader {
        /// The sender.
        from: Pnn,
        /// This node.
        this: Pnn,
        /// The leader it follows.
        leader: Option<Pnn>,
    },
    /// A newer generation was seen.
    #[error("stale run: generation {got} < {seen}")]
    Stale {
        /// The request's generation.
        got: u64,
        /// The highest generation seen.
        seen: u64,
    },
    /// A step of a newer run of the same leader and generation was seen.
    #[error("stale run: started at {got} ns, a run started at {seen} ns was seen")]
    StaleRun {
        /// The request's run stamp.
        got: u64,
        /// The newest run stamp seen.
        seen: u64,
    },
    /// The lease is not valid.
    #[error("node {0}: lease not valid")]
    NoLease(Pnn),
    /// Failover is disabled on this node.
    #[error("failover is disabled on node {0}")]
    Disabled(Pnn),
}

/// Where a leader-only request (IPREALLOCATE, MOVE_IP) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node leads: serve it.
    Serve,
    /// Forward it to this leader (it came from this node).
    Forward(Pnn),
    /// Refuse it: no leader, or it was already forwarded once.
    Refuse,
}

/// Settings of the node core.
#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    /// This node.
    pub pnn: Pnn,
    /// `[failover] disabled`: host nothing.
    pub disabled: bool,
    /// How often a node whose lease came back asks for a run until one is
    /// seen.
    pub rerequest_every: Duration,
    /// How often removing a leftover is tried again.
    pub leftover_retry: Duration,
}

impl NodeConfig {
    /// Defaults for `pnn` and a lease of `lease`: re-request every two
    /// leases (at least 200 ms: only a lost request or answer needs it),
    /// retry leftovers every second.
    #[must_use]
    pub fn new(pnn: Pnn, lease: Duration) -> NodeConfig {
        NodeConfig {
            pnn,
            disabled: false,
            rerequest_every: (lease * 2).max(Duration::from_millis(200)),
            leftover_retry: Duration::from_secs(1),
        }
    }
}

/// The node side of failoverd's core (see the module docs).
#[derive(Debug, Clone)]
pub struct NodeCore {
    cfg: NodeConfig,
    /// `at_ns` of the newest lease news applied.
    lease_at: u64,
    /// `at_ns` of the newest membership applied.
    memb_at: u64,
    /// The told lease end (`None`: not valid).
    until: Option<Duration>,
    /// Validity as last acted on (DropAll sent when it went false).
    valid: bool,
    /// When the current unbroken lease began (ns; 0: not valid).
    since_ns: u64,
    membership: Option<Membership>,
    /// The highest generation seen in a TAKE or RELEASE since the leader
    /// last changed or the generation went back (the current membership's
    /// counts too, but not older memberships: a generation this node made
    /// up while cut off says nothing about runs).
    max_generation: u64,
    /// The newest run seen in a TAKE or RELEASE that passed the checks:
    /// (leader, generation, run stamp).
    newest_run: Option<(Pnn, u64, u64)>,
    /// The lease flapped and no run was seen since it came back.
    want_run: bool,
    /// Counts lease losses; a run answer counts for the epoch it was asked
    /// in.
    epoch: u64,
    rerequest_at: Option<Duration>,
    leftovers: BTreeSet<IpAddr>,
    leftover_at: Option<Duration>,
}

impl NodeCore {
    /// A node core that knows no lease yet.
    #[must_use]
    pub fn new(cfg: NodeConfig) -> NodeCore {
        NodeCore {
            cfg,
            lease_at: 0,
            memb_at: 0,
            until: None,
            valid: false,
            since_ns: 0,
            membership: None,
            max_generation: 0,
            newest_run: None,
            // A (re)started failoverd asks for a run once its lease is
            // valid: the leader cannot see a failoverd restart (clusterd
            // stayed up), and the restart may have removed addresses.
            want_run: true,
            epoch: 0,
            rerequest_at: None,
            leftovers: BTreeSet::new(),
            leftover_at: None,
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The lease is valid at `now`.
    #[must_use]
    pub fn lease_valid(&self, now: Duration) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// The told end of the lease (`None`: not valid).
    #[must_use]
    pub fn lease_until(&self) -> Option<Duration> {
        self.until
    }

    /// When the current unbroken lease began (`CLOCK_MONOTONIC` ns, 0 when
    /// none is known): adoption after a restart keeps only addresses
    /// configured since.
    #[must_use]
    pub fn lease_since_ns(&self) -> u64 {
        self.since_ns
    }

    /// The membership last applied (with `lease_ok` as this core knows it).
    #[must_use]
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// The leader this node follows.
    #[must_use]
    pub fn leader(&self) -> Option<Pnn> {
        self.membership.as_ref().and_then(|m| m.leader)
    }

    /// The highest generation seen in a run request or the current
    /// membership.
    #[must_use]
    pub fn max_generation(&self) -> u64 {
        self.max_generation
            .max(self.membership.as_ref().map_or(0, |m| m.generation))
    }

    /// Addresses that may be in the kernel although no plan assigned them
    /// here (their removal has not succeeded yet).
    #[must_use]
    pub fn leftovers(&self) -> &BTreeSet<IpAddr> {
        &self.leftovers
    }

    /// The node still wants a run since its lease came back.
    #[must_use]
    pub fn wants_run(&self) -> bool {
        self.want_run
    }

    /// The next instant [`NodeCore::tick`] has something to do.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Duration> {
        let lease = self.until.filter(|_| self.valid);
        [lease, self.rerequest_at, self.leftover_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Applies news from clusterd.
    pub fn news(&mut self, now: Duration, news: News, out: &mut Vec<NodeAction>) {
        // A lease end that passed before this news is a lease loss, even if
        // the news renews the lease: this process may have been frozen
        // across the end, and its addresses may have been given away
        // meanwhile. Drop first, then take the new lease (found by the
        // simulator: a thawed failoverd renewed the kernel lease of an
        // address another node had taken).
        self.expire(now, out);
        let (lease, membership) = match news {
            News::Membership(m) => (m.lease, Some(m)),
            News::Lease(l) => (l, None),
        };
        let before = self.until;
        if lease.at_ns >= self.lease_at {
            self.lease_at = lease.at_ns;
            self.until = (lease.expires_ns > 0).then(|| Duration::from_nanos(lease.expires_ns));
            self.since_ns = lease.since_ns;
        }
        let valid = self.lease_valid(now);
        if let Some(m) = membership {
            if m.lease.at_ns >= self.memb_at || self.membership.is_none() {
                self.memb_at = m.lease.at_ns;
                // Generations are comparable only within one run of the
                // cluster under one leader: a new leader, or a generation
                // that went back (clusterd restarted here, or the whole
                // cluster did), starts the count again.
                if self
                    .membership
                    .as_ref()
                    .is_some_and(|o| o.leader != m.leader || m.generation < o.generation)
                {
                    self.max_generation = 0;
                }
                let learnt_leader = m.leader.is_some()
                    && self
                        .membership
                        .as_ref()
                        .is_none_or(|o| o.leader != m.leader);
                let mut m = m;
                m.lease_ok = valid;
                self.membership = Some(m.clone());
                out.push(NodeAction::Membership(m));
                // A run wanted while no leader was known (the lease came
                // first, e.g. in clusterd's startup hold): ask the new
                // leader now, not at the next re-request (up to a second
                // later).
                if learnt_leader && valid && self.valid && self.want_run {
                    self.request(now, out);
                }
            }
        } else if valid != self.valid {
            if let Some(m) = self.membership.as_mut() {
                m.lease_ok = valid;
                out.push(NodeAction::Membership(m.clone()));
            }
        }
        if valid && self.until != before {
            out.push(NodeAction::SetLease(self.until));
        }
        self.set_valid(now, valid, out);
    }

    /// The lease end passed without renewal: drop.
    fn expire(&mut self, now: Duration, out: &mut Vec<NodeAction>) {
        if self.valid && !self.lease_valid(now) {
            if let Some(m) = self.membership.as_mut() {
                m.lease_ok = false;
                out.push(NodeAction::Membership(m.clone()));
            }
            self.set_valid(now, false, out);
        }
    }

    /// Timers: the lease end, re-requests, leftover removal.
    pub fn tick(&mut self, now: Duration, out: &mut Vec<NodeAction>) {
        self.expire(now, out);
        if self.rerequest_at.is_some_and(|at| now >= at) {
            self.rerequest_at = None;
            self.request(now, out);
        }
        if self.leftover_at.is_some_and(|at| now >= at) {
            self.leftover_at = None;
            if !self.leftovers.is_empty() {
                out.push(NodeAction::RemoveLeftovers(
                    self.leftovers.iter().copied().collect(),
                ));
                self.leftover_at = Some(now + self.cfg.leftover_retry);
            }
        }
    }

    fn set_valid(&mut self, now: Duration, valid: bool, out: &mut Vec<NodeAction>) {
        if valid == self.valid {
            return;
        }
        self.valid = valid;
        if valid {
            if self.want_run {
                self.request(now, out);
            }
        } else {
            out.push(NodeAction::SetLease(None));
            out.push(NodeAction::DropAll);
            self.epoch += 1;
            self.want_run = true;
            self.rerequest_at = None;
        }
    }

    /// Sends a run request when one is wanted and the lease is valid, and
    /// schedules the next.
    fn request(&mut self, now: Duration, out: &mut Vec<NodeAction>) {
        if !self.want_run || !self.lease_valid(now) {
            return;
        }
        match self.leader() {
            // The leader side runs when it becomes active again. The run
            // stays wanted: the membership this says so of may be stale (a
            // thawed failoverd applies its lease news with the membership
            // it had before the freeze), and when the news of another
            // leader comes the run is asked of that one (found by the
            // simulator, fast seed 2165231: cleared here, the request was
            // never made and an address stayed unhosted).
            Some(l) if l == self.cfg.pnn => return,
            Some(l) => out.push(NodeAction::RequestRun {
                leader: l,
                epoch: self.epoch,
            }),
            None => {}
        }
        self.rerequest_at = Some(now + self.cfg.rerequest_every);
    }

    /// Something the leader must plan with changed here (the public
    /// address list, an interface): ask it for a run — and keep asking every
    /// `rerequest_every` until a run that started after the request answers
    /// one, or until a leader is known to ask (found by the simulator, seed
    /// 289260: a `reloadips` while this node knew no leader asked nobody,
    /// and its addresses stayed unhosted). The leader side of this node
    /// serves it itself (the shell's job).
    pub fn run_wanted(&mut self, now: Duration, out: &mut Vec<NodeAction>) {
        // A run that started before this change does not count.
        self.epoch += 1;
        self.want_run = true;
        self.rerequest_at = None;
        self.request(now, out);
    }

    /// The leader answered a run request of `epoch`: a run that started
    /// after the request completed, so it saw this node with its lease.
    pub fn run_seen(&mut self, epoch: u64) {
        if epoch == self.epoch {
            self.want_run = false;
            self.rerequest_at = None;
        }
    }

    /// May a TAKE from `from` for `generation` and `run` (the run's stamp)
    /// be carried out now? Checked on arrival and again right before the
    /// kernel is touched.
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn check_take(
        &mut self,
        now: Duration,
        from: Pnn,
        generation: u64,
        run: u64,
    ) -> Result<(), Refusal> {
        self.check_run(from, generation, run)?;
        if self.cfg.disabled {
            return Err(Refusal::Disabled(self.cfg.pnn));
        }
        if !(self.valid && self.lease_valid(now)) {
            return Err(Refusal::NoLease(self.cfg.pnn));
        }
        Ok(())
    }

    /// May a RELEASE from `from` for `generation` be carried out at `now`?
    ///
    /// As a TAKE (without the lease), except that a node that follows no
    /// leader and holds no lease accepts it: a release only removes
    /// addresses, and such a node may hold none (a (re)started node in
    /// clusterd's startup hold, which follows nobody for `lease + margin`).
    /// Refusing made every run of the leader fail while this node merely
    /// knew the addresses — a node that restarted blocked every move in
    /// the cluster for that long, and the addresses a run had already
    /// released elsewhere for it stayed unhosted. A node that follows
    /// another leader, or holds a lease, still refuses (a stale leader's
    /// release must not remove what it may host).
    ///
    /// # Errors
    ///
    /// The [`Refusal`].
    pub fn check_release(
        &mut self,
        now: Duration,
        from: Pnn,
        generation: u64,
        run: u64,
    ) -> Result<(), Refusal> {
        match self.check_run(from, generation, run) {
            Err(Refusal::NoMembership | Refusal::NotLeader { leader: None, .. })
                if !self.lease_valid(now) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn check_run(&mut self, from: Pnn, generation: u64, run: u64) -> Result<(), Refusal> {
        let m = self.membership.as_ref().ok_or(Refusal::NoMembership)?;
        let seen = self.max_generation.max(m.generation);
        // Evidence of a newer run even when refused below.
        self.max_generation = self.max_generation.max(generation);
        if m.leader != Some(from) {
            return Err(Refusal::NotLeader {
                from,
                this: self.cfg.pnn,
                leader: m.leader,
            });
        }
        if generation < seen {
            return Err(Refusal::Stale {
                got: generation,
                seen,
            });
        }
        // Runs of one leader in one generation are told apart by their
        // stamps: a step of an older run that comes after one of a newer
        // run (delayed in the network, or waiting behind it for the
        // operation lock) is stale — a TAKE of an address that the newer
        // run released here and gave to another node would put it on two
        // nodes (found by the simulator, seed 266168).
        match self.newest_run {
            Some((p, g, newest)) if p == from && g == generation => {
                if run < newest {
                    return Err(Refusal::StaleRun {
                        got: run,
                        seen: newest,
                    });
                }
                self.newest_run = Some((p, g, run));
            }
            _ => self.newest_run = Some((from, generation, run)),
        }
        Ok(())
    }

    /// Where a leader-only request goes: `from` is the node whose failoverd
    /// or CLI sent it, `leading` whether this node's leader side is active.
    #[must_use]
    pub fn route(&self, from: Pnn, leading: bool) -> Route {
        if leading {
            return Route::Serve;
        }
        if from != self.cfg.pnn {
            return Route::Refuse;
        }
        match self.leader() {
            Some(l) if l != self.cfg.pnn => Route::Forward(l),
            _ => Route::Refuse,
        }
    }

    /// `addr` may be in the kernel without being assigned here (its
    /// removal failed, or it was forgotten before its release succeeded):
    /// keep it as a leftover until [`NodeCore::removed`] says it is gone.
    pub fn leftover(&mut self, now: Duration, addr: IpAddr) {
        self.leftovers.insert(addr);
        if self.leftover_at.is_none() {
            self.leftover_at = Some(now + self.cfg.leftover_retry);
        }
    }

    /// `addr` is hosted here now (a take succeeded): it is no leftover, and
    /// must not be removed by a retry.
    pub fn hosts(&mut self, addr: IpAddr) {
        self.leftovers.remove(&addr);
        if self.leftovers.is_empty() {
            self.leftover_at = None;
        }
    }

    /// The result of removing `addr` (a release, a drop, a leftover
    /// removal): gone, or still there.
    pub fn removed(&mut self, now: Duration, addr: IpAddr, gone: bool) {
        if gone {
            self.leftovers.remove(&addr);
            if self.leftovers.is_empty() {
                self.leftover_at = None;
            }
        } else {
            self.leftover(now, addr);
        }
    }
}
