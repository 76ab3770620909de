//! One simulated cluster: whole nodes on simulated time.
//!
//! Each node is clusterd's pure state machine ([`clusterd::Member`]) +
//! failoverd's core ([`failoverd::core`]: [`NodeCore`], [`LeaderCore`], the
//! planner and run steps) + a model of its kernel: the configured public
//! addresses and the kernel lease of KERNEL-LEASE.md (an address *serves*
//! only while it is configured, in the lease set, and the node's lease
//! element — set at the last renewal failoverd carried out — has not
//! expired on the node's clock). The shell around the cores here plays the
//! role of failoverd's async shell: it carries out their actions, runs the
//! leader's takeover runs as a state machine with the daemon's timeouts, and
//! queues the executor's operations (take, release, removal) one at a time,
//! each taking as long as its hooks.
//!
//! The network delivers clusterd's messages with delay, loss, duplication
//! and reordering; failoverd's requests travel over transportd's TCP
//! connections, so between two nodes they keep their order and are never
//! duplicated, but are lost while a link is down. Links fail one way or
//! both. Nodes' clocks drift within the profile's bound.
//!
//! Faults during the fault phase: partitions (one-way, full), loss,
//! crashes and restarts of clusterd, failoverd or the whole node (a
//! restarted failoverd removes every address it finds: it adopts nothing
//! here), frozen processes (longer than the margin), slow and hung hooks,
//! failing address removals, and admin actions (disable/enable, ban,
//! moveip, addip/delip, reloadips, ipreallocate). Then everything heals and
//! the cluster must converge.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use clusterd::msg::AdminOp;
use clusterd::{ClusterMsg, Config, Member, NodeFlags, NodesFile, Output, Pnn, Timing};
use failoverd::core::leader::{LeaderAction, LeaderConfig, LeaderCore, RunOrder, RunOutcome};
use failoverd::core::node::{leader_feed, News, NodeAction, NodeConfig, NodeCore, Route};
use failoverd::core::run;
use failoverd::leader::plan::{self, Plan, PlanInput};
use ipalloc::Tunables;
use transport::msg::failover::{MoveIp, PublicIp, PublicIps};

use super::rng::Rng;

const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);
/// How much later a request may arrive and still reach the executor's
/// operation lock before an earlier one (scheduling on a loaded host).
const OVERTAKE: Duration = Duration::from_millis(5);
/// Steps one schedule may take before it counts as a busy loop.
const STEP_CAP: u64 = 5_000_000;

/// Addresses to release, with their new owners.
type Releases = Vec<(IpAddr, Option<Pnn>)>;

/// A deliberately broken variant, to show the simulator finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The leader gives a disconnected node's addresses away at once,
    /// without waiting for its lease (plus margin) to lapse.
    SkipLeaseMargin,
    /// A node does not drop its addresses when its lease is lost.
    NoDropOnLeaseLoss,
    /// A node does not ask for a run after a lease flap or a restart.
    NoRerequest,
    /// A TAKE is checked against nothing but the sender being the leader.
    AcceptStaleTake,
    /// A failed removal is forgotten (no leftover tracking).
    ForgetLeftovers,
    /// A node that keeps failing runs is never left out.
    NoExclusion,
    /// The shell's loop carries out a deferred membership action with the
    /// core's current membership only, and the lease watch does not ask
    /// for a run after it dropped the addresses: failoverd before finding
    /// 12's fix (a lapse overtaken by a renewal was never seen by the
    /// leader side).
    NoLeaderFeed,
}

impl Bug {
    /// Every variant with its command-line name.
    pub const ALL: [(&'static str, Bug); 7] = [
        ("skip-lease-margin", Bug::SkipLeaseMargin),
        ("no-drop-on-lease-loss", Bug::NoDropOnLeaseLoss),
        ("no-rerequest", Bug::NoRerequest),
        ("accept-stale-take", Bug::AcceptStaleTake),
        ("forget-leftovers", Bug::ForgetLeftovers),
        ("no-exclusion", Bug::NoExclusion),
        ("no-leader-feed", Bug::NoLeaderFeed),
    ];

    /// The variant named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}

/// Timings and fault intensities of one profile.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// `default` or `fast`.
    pub name: &'static str,
    /// clusterd's timing.
    pub timing: Timing,
    /// Clock-rate drift bound of each node, parts per million (the
    /// documented ρ: 1 % default, 0.1 % fast).
    pub max_ppm: i64,
    /// Longest one-way network delay.
    pub max_delay: Duration,
    /// How long faults are injected.
    pub fault_phase: Duration,
    /// After the faults stop, every address must be served by exactly one
    /// eligible node within this.
    pub bound: Duration,
    /// failoverd's `release_timeout` (release step of a run).
    pub release_timeout: Duration,
    /// failoverd's other request timeout (reports, takes).
    pub request_timeout: Duration,
    /// A slow hook.
    pub hook_slow: Duration,
    /// A hung hook (killed at `hook_timeout`).
    pub hook_hung: Duration,
    /// failoverd's membership poll.
    pub poll_every: Duration,
}

impl Profile {
    /// The default profile (clusterd defaults, failoverd's default
    /// timeouts).
    #[must_use]
    pub fn default_profile() -> Profile {
        Profile {
            name: "default",
            timing: Timing::default_profile(),
            max_ppm: 10_000,
            max_delay: 10 * MS,
            fault_phase: Duration::from_secs(4),
            bound: Duration::from_secs(10),
            release_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            hook_slow: 300 * MS,
            hook_hung: Duration::from_secs(2),
            poll_every: 250 * MS,
        }
    }

    /// The fast profile.
    #[must_use]
    pub fn fast() -> Profile {
        Profile {
            name: "fast",
            timing: Timing::fast(),
            max_ppm: 1_000,
            max_delay: 2 * MS,
            fault_phase: Duration::from_millis(600),
            bound: Duration::from_secs(6),
            release_timeout: 200 * MS,
            request_timeout: 200 * MS,
            hook_slow: 50 * MS,
            hook_hung: 300 * MS,
            poll_every: 250 * MS,
        }
    }

    /// The profile named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Profile> {
        match name {
            "default" => Some(Profile::default_profile()),
            "fast" => Some(Profile::fast()),
            _ => None,
        }
    }
}

/// What broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An address served by two nodes at once.
    TwoServers {
        /// The address.
        addr: IpAddr,
        /// The nodes.
        nodes: Vec<usize>,
        /// Simulated time.
        at: Duration,
    },
    /// Not converged within the bound after the faults stopped.
    NoConvergence {
        /// What was still wrong.
        why: String,
    },
    /// An address configured on a node that its failoverd neither hosts
    /// nor tracks as a leftover: no plan would ever see it (hole 6).
    Untracked {
        /// The address.
        addr: IpAddr,
        /// The node.
        node: usize,
    },
    /// A queue grew past its bound.
    Unbounded {
        /// Which.
        what: String,
    },
}

/// The result of one schedule.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Events processed.
    pub steps: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// Time from the end of the faults until convergence.
    pub convergence: Option<Duration>,
}

// ---------------------------------------------------------------------
// Messages and events

#[derive(Debug, Clone)]
enum FoMsg {
    GetIps {
        id: u64,
    },
    Report {
        id: u64,
        report: PublicIps,
    },
    Release {
        id: u64,
        generation: u64,
        /// The run's stamp: the leader's local time (ns) when it started.
        run: u64,
        ips: Vec<(IpAddr, Option<Pnn>)>,
    },
    Take {
        id: u64,
        generation: u64,
        run: u64,
        ips: Vec<IpAddr>,
    },
    /// Answer to Release/Take: `None` refused, else the failed addresses.
    Step {
        id: u64,
        failed: Option<Vec<IpAddr>>,
    },
    /// IPREALLOCATE (`mv: None`) or MOVE_IP.
    Realloc {
        id: u64,
        mv: Option<MoveIp>,
    },
    ReallocReply {
        id: u64,
        ok: bool,
    },
}

#[derive(Debug, Clone)]
enum Net {
    Cluster(ClusterMsg),
    Fo(FoMsg),
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        msg: Net,
    },
    /// clusterd → failoverd on one node (incarnation of that failoverd).
    News {
        node: usize,
        inc: u64,
        news: News,
    },
    /// The executor operation at the head of the queue finished.
    OpDone {
        node: usize,
        inc: u64,
    },
    /// failoverd's loop gets to the oldest action the lease intake handed
    /// it (the daemon's `tapped` channel).
    Loop {
        node: usize,
        inc: u64,
    },
    /// failoverd's lease watch wakes at the end it was told (node-local).
    Watch {
        node: usize,
        inc: u64,
        at: Duration,
    },
    Fault(Fault),
}

/// A fault or admin action (scenario tests schedule them by hand).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Fault {
    Link {
        from: usize,
        to: usize,
        up: bool,
    },
    Partition(Vec<bool>),
    Loss(f64),
    Dup(f64),
    CrashClusterd(usize),
    StartClusterd(usize),
    CrashFailoverd(usize),
    StartFailoverd(usize),
    PowerOff(usize),
    PowerOn(usize),
    FreezeClusterd(usize, Duration),
    FreezeFailoverd(usize, Duration),
    /// failoverd hangs for good (stuck in the kernel, a hook it waits for):
    /// its clusterd goes on, so its node stays connected (hole 3).
    HangFailoverd(usize),
    SlowHooks(usize, bool),
    RemovalFails(usize, bool),
    Admin(usize, AdminOp),
    MoveIp {
        via: usize,
        addr: IpAddr,
        to: Pnn,
    },
    Ipreallocate(usize),
    AddIp(usize, IpAddr),
    DelIp(usize, IpAddr),
    /// `delip` of an address the node hosts now, if any.
    DelHosted(usize),
    /// Cut the current leader and one other node (`with` modulo the
    /// others) from the rest, both ways.
    PartitionLeader {
        with: usize,
    },
    ReloadIps(usize),
    /// End of the fault phase: heal everything.
    Quiet,
}

// ---------------------------------------------------------------------
// Nodes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiter {
    /// The CLI on this node.
    Cli,
    /// Another node's failoverd (request id there).
    Peer { from: usize, id: u64 },
}

/// What an outgoing IPREALLOCATE / MOVE_IP is for.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// A re-request after a flap (epoch).
    Rerequest(u64),
    /// Forwarded for the CLI.
    Forwarded,
}

#[derive(Debug, Clone)]
enum Op {
    Take {
        from: usize,
        id: u64,
        generation: u64,
        run: u64,
        ips: Vec<IpAddr>,
    },
    Release {
        from: usize,
        id: u64,
        ips: Vec<IpAddr>,
    },
    Remove(Vec<IpAddr>),
    /// A retry: only those still leftovers and not hosted when it runs.
    RemoveLeftovers(Vec<IpAddr>),
}

#[derive(Debug, Clone)]
enum Phase {
    Gather {
        id: u64,
        pending: BTreeSet<Pnn>,
        reports: BTreeMap<Pnn, PublicIps>,
    },
    Release {
        id: u64,
        run: u64,
        plan: Plan,
        pending: BTreeMap<Pnn, Vec<IpAddr>>,
        failed: BTreeSet<IpAddr>,
        memory: BTreeMap<IpAddr, Pnn>,
        outcome: RunOutcome,
    },
    Take {
        id: u64,
        pending: BTreeMap<Pnn, Vec<IpAddr>>,
        failures: bool,
        release_failed: bool,
        memory: BTreeMap<IpAddr, Pnn>,
        outcome: RunOutcome,
        plan_complete: bool,
    },
}

#[derive(Debug, Clone)]
struct Job {
    order: RunOrder,
    mv: Option<MoveIp>,
    phase: Phase,
    /// Local time limit of the phase.
    deadline: Duration,
}

/// One failoverd process.
#[derive(Debug, Clone)]
struct Fo {
    inc: u64,
    core: NodeCore,
    leader: LeaderCore<Waiter>,
    publics: BTreeSet<IpAddr>,
    owners: BTreeMap<IpAddr, Pnn>,
    hosted: BTreeSet<IpAddr>,
    ops: VecDeque<(Op, Duration)>,
    /// When the last operation was queued.
    last_enqueued: Option<Duration>,
    op_running: bool,
    job: Option<Job>,
    pending: BTreeMap<u64, Pending>,
    adopted: bool,
    poll_at: Duration,
    /// What the lease intake handed the loop, oldest first.
    deferred: VecDeque<Deferred>,
    /// The lease end the lease watch was last given (node-local).
    told: Option<Duration>,
}

/// Work the daemon's loop does after the fact, in order.
#[derive(Debug, Clone)]
enum Deferred {
    /// A node action the lease intake decided (not the gate's).
    Action(NodeAction),
    /// The lease watch dropped the addresses (`Trigger::Lapsed`).
    Lapsed,
}

#[derive(Debug, Clone, Default)]
struct Kernel {
    configured: BTreeSet<IpAddr>,
    /// The lease elements: address → node-local expiry.
    lease: BTreeMap<IpAddr, Duration>,
}

#[derive(Debug, Clone)]
struct Node {
    offset: Duration,
    ppm: i64,
    powered: bool,
    cd: Option<Member>,
    cd_frozen_until: Duration,
    fo: Option<Fo>,
    fo_frozen_until: Duration,
    /// The loop's timers of failoverd run again from here after a freeze
    /// (a little after the thaw: the intake and the lease watch race them).
    fo_ticks_from: Duration,
    kernel: Kernel,
    file: BTreeSet<IpAddr>,
    slow_hooks: bool,
    removal_fails: bool,
}

/// The simulated cluster.
pub struct World {
    profile: Profile,
    bug: Option<Bug>,
    rng: Rng,
    /// The shell's own timing (loop and watch delays): a stream of its
    /// own, so the fault schedules of the other draws stay as they were.
    shell_rng: Rng,
    file: NodesFile,
    cfg: Config,
    nodes: Vec<Node>,
    addrs: Vec<IpAddr>,
    now: Duration,
    queue: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    /// `link[a][b]`: a's messages reach b.
    link: Vec<Vec<bool>>,
    /// Last delivery time per pair, for failoverd's FIFO.
    fifo: Vec<Vec<Duration>>,
    loss: f64,
    dup: f64,
    next_id: u64,
    next_inc: u64,
    steps: u64,
    quiet_at: Duration,
    out: Vec<Output>,
    /// Print what happens to stderr (`SIM_TRACE=1`).
    trace: bool,
    /// Per node: when its processes are due (real time), cached.
    wake: Vec<Wake>,
    /// Nodes whose `wake` must be recomputed.
    dirty: Vec<bool>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Wake {
    cd: Option<Duration>,
    fo: Option<Duration>,
    /// A thaw or a lease element's expiry.
    other: Option<Duration>,
}

macro_rules! trace {
    ($w:expr, $($arg:tt)*) => {
        if $w.trace {
            eprintln!("{:>12.3?} {}", $w.now, format!($($arg)*));
        }
    };
}

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        203,
        0,
        113,
        u8::try_from(10 + i).unwrap_or(255),
    ))
}

fn pnn(i: usize) -> Pnn {
    Pnn::try_from(i).unwrap_or(Pnn::MAX)
}

fn idx(p: Pnn) -> usize {
    usize::try_from(p).unwrap_or(usize::MAX)
}

fn nanos(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

fn from_nanos(n: i128) -> Duration {
    Duration::from_nanos(u64::try_from(n.max(0)).unwrap_or(u64::MAX))
}

impl World {
    /// A cluster for one schedule drawn from `seed`.
    ///
    /// # Panics
    ///
    /// Never for the generated nodes file.
    #[must_use]
    pub fn new(profile: Profile, seed: u64, bug: Option<Bug>) -> World {
        World::build(profile, seed, bug, None)
    }

    fn build(
        profile: Profile,
        seed: u64,
        bug: Option<Bug>,
        fixed: Option<(usize, usize)>,
    ) -> World {
        let mut rng = Rng::new(seed);
        let n = fixed.map_or_else(|| 3 + rng.index(3), |(n, _)| n);
        let text: String = (1..=n).map(|i| format!("192.0.2.{i}\n")).collect();
        let file = NodesFile::parse(Path::new("sim/nodes"), &text).expect("generated nodes file");
        let cfg = Config {
            timing: profile.timing,
            lock: false,
            can_lead: true,
        };
        let count = fixed.map_or_else(|| 2 + rng.index(5), |(_, a)| a);
        let addrs: Vec<IpAddr> = (0..count).map(addr).collect();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let offset = Duration::from_secs(1000 * (i as u64 + 1));
            let ppm = rng.range_i64(-profile.max_ppm, profile.max_ppm);
            // Most nodes list every address; some miss one.
            let mut list: BTreeSet<IpAddr> = addrs.iter().copied().collect();
            if fixed.is_none() && rng.chance(0.3) {
                let a = addrs[rng.index(addrs.len())];
                list.remove(&a);
            }
            nodes.push(Node {
                offset,
                ppm,
                powered: true,
                cd: None,
                cd_frozen_until: Duration::ZERO,
                fo: None,
                fo_frozen_until: Duration::ZERO,
                fo_ticks_from: Duration::ZERO,
                kernel: Kernel::default(),
                file: list,
                slow_hooks: false,
                removal_fails: false,
            });
        }
        let mut w = World {
            profile,
            bug,
            rng,
            shell_rng: Rng::new(seed ^ 0x5e11_5e11_5e11_5e11),
            file,
            cfg,
            nodes,
            addrs,
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            link: vec![vec![true; n]; n],
            fifo: vec![vec![Duration::ZERO; n]; n],
            loss: 0.0,
            dup: 0.0,
            next_id: 1,
            next_inc: 1,
            steps: 0,
            quiet_at: profile.fault_phase,
            out: Vec::new(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            wake: Vec::new(),
            dirty: Vec::new(),
        };
        for i in 0..n {
            w.start_clusterd(i);
            w.start_failoverd(i);
        }
        if fixed.is_none() {
            w.schedule_faults();
        }
        w
    }

    // ----- clocks

    fn local_at(&self, i: usize, real: Duration) -> Duration {
        let node = &self.nodes[i];
        let ns = nanos(real);
        node.offset + from_nanos(ns + ns * i128::from(node.ppm) / 1_000_000)
    }

    fn local(&self, i: usize) -> Duration {
        self.local_at(i, self.now)
    }

    /// The first real time at which node i's clock reads `local` or more.
    fn real_of(&self, i: usize, local: Duration) -> Duration {
        let node = &self.nodes[i];
        let ns = nanos(local.saturating_sub(node.offset));
        let mut real = from_nanos(ns * 1_000_000 / (1_000_000 + i128::from(node.ppm)));
        while self.local_at(i, real) < local {
            real += Duration::from_nanos(1);
        }
        real
    }

    // ----- queue

    fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn delay(&mut self) -> Duration {
        self.rng
            .between(Duration::from_micros(50), self.profile.max_delay)
    }

    fn send_cluster(&mut self, from: usize, to: usize, msg: ClusterMsg) {
        if to >= self.nodes.len() || !self.link[from][to] || self.rng.chance(self.loss) {
            return;
        }
        let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now + self.delay();
            self.push(
                at,
                Ev::Deliver {
                    from,
                    to,
                    msg: Net::Cluster(msg.clone()),
                },
            );
        }
    }

    /// failoverd traffic: over TCP, in order per pair, never duplicated.
    fn send_fo(&mut self, from: usize, to: usize, msg: FoMsg) {
        if to >= self.nodes.len() {
            return;
        }
        if from != to && (!self.link[from][to] || self.rng.chance(self.loss)) {
            return;
        }
        let at = (self.now + self.delay()).max(self.fifo[from][to]);
        self.fifo[from][to] = at;
        self.push(
            at,
            Ev::Deliver {
                from,
                to,
                msg: Net::Fo(msg),
            },
        );
    }

    // ----- processes

    fn start_clusterd(&mut self, i: usize) {
        let now = self.local(i);
        let m = Member::new(self.cfg, &self.file, pnn(i), now).expect("live node");
        self.nodes[i].cd = Some(m);
    }

    fn start_failoverd(&mut self, i: usize) {
        let inc = self.next_inc;
        self.next_inc += 1;
        let lease = self.profile.timing.lease;
        let mut leader_cfg = LeaderConfig::new(pnn(i));
        if self.bug == Some(Bug::NoExclusion) {
            leader_cfg.exclude_after = u32::MAX;
        }
        let now = self.local(i);
        let node = &mut self.nodes[i];
        // The lease elements of the predecessor stay until they expire (a
        // restart keeps them, as the real executor does).
        node.fo = Some(Fo {
            inc,
            core: NodeCore::new(NodeConfig::new(pnn(i), lease)),
            leader: LeaderCore::new(leader_cfg),
            publics: node.file.clone(),
            owners: BTreeMap::new(),
            hosted: BTreeSet::new(),
            ops: VecDeque::new(),
            last_enqueued: None,
            op_running: false,
            job: None,
            pending: BTreeMap::new(),
            adopted: false,
            poll_at: now,
            deferred: VecDeque::new(),
            told: None,
        });
    }

    fn fo_runs(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.powered && n.fo.is_some() && self.now >= n.fo_frozen_until
    }

    fn cd_runs(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.powered && n.cd.is_some() && self.now >= n.cd_frozen_until
    }

    /// Carries out clusterd's outputs.
    fn cd_outputs(&mut self, i: usize) {
        let outs = std::mem::take(&mut self.out);
        for o in outs {
            match o {
                Output::Send { to, msg } => self.send_cluster(i, idx(to), msg),
                Output::Publish(m) => self.tell_fo(i, News::Membership(m)),
                Output::LeaseUpdate(l) => self.tell_fo(i, News::Lease(l)),
                _ => {}
            }
        }
    }

    fn tell_fo(&mut self, i: usize, news: News) {
        if let Some(fo) = &self.nodes[i].fo {
            let inc = fo.inc;
            let at = self.now + self.rng.between(Duration::ZERO, 200 * US);
            self.push(at, Ev::News { node: i, inc, news });
        }
    }

    fn cd_tick(&mut self, i: usize) {
        let now = self.local(i);
        if let Some(m) = self.nodes[i].cd.as_mut() {
            m.tick(now, &mut self.out);
        }
        self.cd_outputs(i);
    }

    // ----- failoverd: node side

    fn fo_news(&mut self, i: usize, news: News) {
        let now = self.local(i);
        let mut out = Vec::new();
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        let first = !fo.adopted && matches!(news, News::Membership(_));
        // clusterd's lease news take the daemon's lease intake, beside the
        // loop: the gate's actions at once, the rest handed to the loop.
        let intake = matches!(news, News::Lease(_));
        fo.core.news(now, news, &mut out);
        if intake {
            let (gate, rest): (Vec<NodeAction>, Vec<NodeAction>) = out
                .into_iter()
                .partition(|a| matches!(a, NodeAction::SetLease(_) | NodeAction::DropAll));
            self.node_actions(i, gate);
            for a in rest {
                self.defer(i, Deferred::Action(a));
            }
            return;
        }
        if first {
            fo.adopted = true;
            // Adopts nothing: every public address found goes.
            let found: Vec<IpAddr> = self.nodes[i].kernel.configured.iter().copied().collect();
            if !found.is_empty() {
                for a in &found {
                    if let Some(fo) = self.nodes[i].fo.as_mut() {
                        fo.core.leftover(now, *a);
                    }
                }
                self.enqueue(i, Op::Remove(found));
            }
        }
        self.node_actions(i, out);
    }

    fn node_actions(&mut self, i: usize, out: Vec<NodeAction>) {
        for a in out {
            match &a {
                NodeAction::Membership(m) => trace!(
                    self,
                    "node {i}: membership gen {} leader {:?} lease_ok {} flags {:?} reassignable {:?}",
                    m.generation,
                    m.leader,
                    m.lease_ok,
                    m.nodes.iter().map(|n| n.flags.bits()).collect::<Vec<_>>(),
                    m.reassignable
                ),
                other => trace!(self, "node {i}: {other:?}"),
            }
            match a {
                NodeAction::SetLease(None) if self.bug == Some(Bug::NoDropOnLeaseLoss) => {}
                NodeAction::SetLease(until) => {
                    self.tell_watch(i, until);
                    // The keeper renews the element of every hosted
                    // address, or revokes every element.
                    let node = &mut self.nodes[i];
                    match until {
                        None => node.kernel.lease.clear(),
                        Some(u) => {
                            if let Some(fo) = node.fo.as_ref() {
                                for a in &fo.hosted {
                                    node.kernel.lease.insert(*a, u);
                                }
                            }
                        }
                    }
                }
                NodeAction::DropAll => {
                    if self.bug == Some(Bug::NoDropOnLeaseLoss) {
                        continue;
                    }
                    self.tell_watch(i, None);
                    let node = &mut self.nodes[i];
                    node.kernel.lease.clear();
                    let hosted: Vec<IpAddr> = node
                        .fo
                        .as_ref()
                        .map(|f| f.hosted.iter().copied().collect())
                        .unwrap_or_default();
                    // A failed removal here is a leftover like any other.
                    self.remove(i, &hosted);
                }
                NodeAction::RequestRun { leader, epoch } => {
                    if self.bug == Some(Bug::NoRerequest) {
                        continue;
                    }
                    let id = self.id();
                    if let Some(fo) = self.nodes[i].fo.as_mut() {
                        fo.pending.insert(id, Pending::Rerequest(epoch));
                    }
                    self.send_fo(i, idx(leader), FoMsg::Realloc { id, mv: None });
                }
                NodeAction::RemoveLeftovers(list) => self.enqueue(i, Op::RemoveLeftovers(list)),
                NodeAction::Membership(copy) => {
                    // As the daemon's loop: the core's membership as it is
                    // now, a lapse it has got over meanwhile first.
                    let current = self.nodes[i]
                        .fo
                        .as_ref()
                        .and_then(|f| f.core.membership().cloned());
                    let feed = if self.bug == Some(Bug::NoLeaderFeed) {
                        vec![current.unwrap_or(copy)]
                    } else {
                        leader_feed(copy, current.as_ref())
                    };
                    for mut m in feed {
                        if self.bug == Some(Bug::SkipLeaseMargin) && m.leader == Some(pnn(i)) {
                            m.reassignable = m
                                .nodes
                                .iter()
                                .filter(|n| n.flags.contains(NodeFlags::DISCONNECTED))
                                .map(|n| n.pnn)
                                .collect();
                        }
                        let now = self.local(i);
                        let mut lo = Vec::new();
                        if let Some(fo) = self.nodes[i].fo.as_mut() {
                            fo.leader.membership(now, &m, &mut lo);
                        }
                        self.leader_actions(i, lo);
                    }
                }
            }
        }
    }

    /// How long the daemon's loop takes to get to something the lease
    /// intake or the lease watch handed it: usually at once, sometimes
    /// after other work (a request, a hook at adoption, the scheduler).
    fn loop_delay(&mut self) -> Duration {
        if self.shell_rng.chance(0.1) {
            let busy = self.profile.timing.margin / 5;
            self.shell_rng.between(Duration::ZERO, busy)
        } else {
            self.shell_rng.between(Duration::ZERO, 200 * US)
        }
    }

    /// Hands the loop of node i's failoverd something to do.
    fn defer(&mut self, i: usize, d: Deferred) {
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        trace!(self, "node {i}: to the loop: {d:?}");
        let inc = fo.inc;
        if let Some(fo) = self.nodes[i].fo.as_mut() {
            fo.deferred.push_back(d);
        }
        let at = self.now + self.loop_delay();
        self.push(at, Ev::Loop { node: i, inc });
    }

    /// The loop of node i's failoverd carries out the oldest thing handed
    /// to it.
    fn run_deferred(&mut self, i: usize) {
        let Some(d) = self.nodes[i]
            .fo
            .as_mut()
            .and_then(|f| f.deferred.pop_front())
        else {
            return;
        };
        match d {
            Deferred::Action(a) => self.node_actions(i, vec![a]),
            // The daemon's `Trigger::Lapsed`: the share this node dropped
            // must be taken again (the leader side runs it itself).
            Deferred::Lapsed => self.want_run(i),
        }
    }

    /// The lease watch of node i's failoverd is given `until` (the loop
    /// and the intake carry out the core's `SetLease` and `DropAll`).
    fn tell_watch(&mut self, i: usize, until: Option<Duration>) {
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        if fo.told == until {
            return;
        }
        fo.told = until;
        let inc = fo.inc;
        if let Some(at) = until {
            let real = self.real_of(i, at).max(self.now);
            self.push(real, Ev::Watch { node: i, inc, at });
        }
    }

    /// The lease watch of node i wakes at the end `at` it was told: if no
    /// renewal moved it, it removes every address and tells the loop.
    fn watch_fires(&mut self, i: usize, at: Duration) {
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        if fo.told != Some(at) {
            return;
        }
        fo.told = None;
        if self.bug == Some(Bug::NoDropOnLeaseLoss) {
            return;
        }
        let hosted: Vec<IpAddr> = fo.hosted.iter().copied().collect();
        self.nodes[i].kernel.lease.clear();
        trace!(
            self,
            "node {i}: lease watch: the end passed, dropping {hosted:?}"
        );
        if hosted.is_empty() {
            return;
        }
        self.remove(i, &hosted);
        if self.bug != Some(Bug::NoLeaderFeed) {
            self.defer(i, Deferred::Lapsed);
        }
    }

    fn enqueue(&mut self, i: usize, op: Op) {
        let slow = self.nodes[i].slow_hooks;
        let d = if slow {
            if self.rng.chance(0.3) {
                self.profile.hook_hung
            } else {
                self.rng.between(MS, self.profile.hook_slow)
            }
        } else {
            self.rng.between(US * 20, MS)
        };
        // Requests are served by tasks on two worker threads: one that
        // arrived shortly after another (within OVERTAKE, a loaded
        // scheduler) may reach the operation lock first.
        let overtake = self.rng.chance(0.5);
        let now = self.now;
        if let Some(fo) = self.nodes[i].fo.as_mut() {
            let waiting = fo.ops.len().saturating_sub(usize::from(fo.op_running));
            let recent = fo.last_enqueued.is_some_and(|t| now < t + OVERTAKE);
            fo.last_enqueued = Some(now);
            if overtake
                && recent
                && waiting >= 1
                && matches!(op, Op::Release { .. } | Op::Take { .. })
            {
                let at = fo.ops.len() - 1;
                fo.ops.insert(at, (op, d));
            } else {
                fo.ops.push_back((op, d));
            }
        }
        self.next_op(i);
    }

    /// Starts the operation at the head of the executor's queue: its
    /// kernel effect now, its answer when its hooks are done.
    fn next_op(&mut self, i: usize) {
        let now_local = self.local(i);
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        if fo.op_running {
            return;
        }
        let Some((op, d)) = fo.ops.front().cloned() else {
            return;
        };
        fo.op_running = true;
        let inc = fo.inc;
        match op {
            Op::Take {
                from,
                id,
                generation,
                run,
                ips,
            } => {
                let generation = if self.bug == Some(Bug::AcceptStaleTake) {
                    generation.max(fo.core.max_generation())
                } else {
                    generation
                };
                // Checked again under the operation lock.
                let ok = fo
                    .core
                    .check_take(now_local, pnn(from), generation, run)
                    .is_ok();
                let mut failed = Vec::new();
                if ok {
                    let node = &mut self.nodes[i];
                    let fo = node.fo.as_mut().expect("checked above");
                    for a in ips {
                        if !fo.publics.contains(&a) {
                            failed.push(a);
                            continue;
                        }
                        fo.hosted.insert(a);
                        fo.core.hosts(a);
                        fo.owners.insert(a, pnn(i));
                        node.kernel.configured.insert(a);
                        // The element first, then the address.
                        if let Some(u) = fo.core.lease_until() {
                            node.kernel.lease.insert(a, u);
                        }
                    }
                }
                let reply = FoMsg::Step {
                    id,
                    failed: ok.then_some(failed),
                };
                self.reply_after(i, from, reply, d);
            }
            Op::Release { from, id, ips } => {
                let failed = self.remove(i, &ips);
                self.reply_after(
                    i,
                    from,
                    FoMsg::Step {
                        id,
                        failed: Some(failed),
                    },
                    d,
                );
            }
            Op::Remove(ips) => {
                self.remove(i, &ips);
            }
            Op::RemoveLeftovers(ips) => {
                let still: Vec<IpAddr> = ips
                    .into_iter()
                    .filter(|a| fo.core.leftovers().contains(a) && !fo.hosted.contains(a))
                    .collect();
                self.remove(i, &still);
            }
        }
        let at = self.now + d;
        self.push(at, Ev::OpDone { node: i, inc });
    }

    /// Removes addresses from the kernel; returns those whose removal
    /// failed (kept as leftovers by the core).
    fn remove(&mut self, i: usize, ips: &[IpAddr]) -> Vec<IpAddr> {
        let now = self.local(i);
        let fails = self.nodes[i].removal_fails;
        let mut failed = Vec::new();
        for &a in ips {
            let broken =
                fails && self.rng.chance(0.5) && self.nodes[i].kernel.configured.contains(&a);
            let node = &mut self.nodes[i];
            let Some(fo) = node.fo.as_mut() else {
                return failed;
            };
            fo.hosted.remove(&a);
            if !broken {
                // Revoked after the address is gone.
                node.kernel.lease.remove(&a);
            }
            if broken {
                trace!(self, "node {i}: removing {a} failed");
                failed.push(a);
                if self.bug != Some(Bug::ForgetLeftovers) {
                    fo.core.removed(now, a, false);
                }
            } else {
                node.kernel.configured.remove(&a);
                fo.core.removed(now, a, true);
            }
        }
        failed
    }

    /// Sends `msg` to `to` when the operation's hooks are done (`d`).
    fn reply_after(&mut self, i: usize, to: usize, msg: FoMsg, d: Duration) {
        // Modelled as sent at once but not before d: keep FIFO order.
        let at = (self.now + d + self.delay()).max(self.fifo[i][to]);
        if i != to && !self.link[i][to] {
            return;
        }
        self.fifo[i][to] = at;
        self.push(
            at,
            Ev::Deliver {
                from: i,
                to,
                msg: Net::Fo(msg),
            },
        );
    }

    fn report(&self, i: usize) -> Option<PublicIps> {
        let fo = self.nodes[i].fo.as_ref()?;
        // As the daemon: no lease, nothing offered (failoverd's report).
        let can_host = fo.core.lease_valid(self.local(i));
        let mut all: BTreeSet<IpAddr> = fo.publics.clone();
        all.extend(fo.hosted.iter().copied());
        all.extend(fo.core.leftovers().iter().copied());
        let ips = all
            .into_iter()
            .map(|a| {
                let listed = fo.publics.contains(&a);
                let hosted = fo.hosted.contains(&a);
                let here = hosted || fo.core.leftovers().contains(&a);
                PublicIp {
                    addr: a,
                    prefix: 24,
                    configured: if listed {
                        vec!["eth1".into()]
                    } else {
                        Vec::new()
                    },
                    available: if listed && can_host {
                        vec!["eth1".into()]
                    } else {
                        Vec::new()
                    },
                    // A leftover is reported with no interface, as the
                    // daemon does.
                    active: here.then(|| if hosted { "eth1".into() } else { String::new() }),
                    owner: if here {
                        Some(pnn(i))
                    } else {
                        fo.owners.get(&a).copied().filter(|&o| o != pnn(i))
                    },
                }
            })
            .collect();
        Some(PublicIps {
            pnn: pnn(i),
            can_host,
            ips,
            ifaces: Vec::new(),
        })
    }

    fn fo_receive(&mut self, i: usize, from: usize, msg: FoMsg) {
        if !matches!(msg, FoMsg::GetIps { .. } | FoMsg::Report { .. }) {
            trace!(self, "node {i} <- {from}: {msg:?}");
        }
        let now = self.local(i);
        match msg {
            FoMsg::GetIps { id } => {
                if let Some(r) = self.report(i) {
                    self.send_fo(i, from, FoMsg::Report { id, report: r });
                }
            }
            FoMsg::Release {
                id,
                generation,
                run,
                ips,
            } => {
                let Some(fo) = self.nodes[i].fo.as_mut() else {
                    return;
                };
                if fo
                    .core
                    .check_release(now, pnn(from), generation, run)
                    .is_err()
                {
                    self.send_fo(i, from, FoMsg::Step { id, failed: None });
                    return;
                }
                for (a, o) in &ips {
                    match o {
                        Some(o) => fo.owners.insert(*a, *o),
                        None => fo.owners.remove(a),
                    };
                }
                let ips = ips.into_iter().map(|(a, _)| a).collect();
                self.enqueue(i, Op::Release { from, id, ips });
            }
            FoMsg::Take {
                id,
                generation,
                run,
                ips,
            } => {
                let Some(fo) = self.nodes[i].fo.as_mut() else {
                    return;
                };
                let generation = if self.bug == Some(Bug::AcceptStaleTake) {
                    generation.max(fo.core.max_generation())
                } else {
                    generation
                };
                if fo.core.check_take(now, pnn(from), generation, run).is_err() {
                    self.send_fo(i, from, FoMsg::Step { id, failed: None });
                    return;
                }
                self.enqueue(
                    i,
                    Op::Take {
                        from,
                        id,
                        generation,
                        run,
                        ips,
                    },
                );
            }
            FoMsg::Realloc { id, mv } => self.route(i, Waiter::Peer { from, id }, mv),
            FoMsg::ReallocReply { id, ok } => {
                let Some(fo) = self.nodes[i].fo.as_mut() else {
                    return;
                };
                match fo.pending.remove(&id) {
                    Some(Pending::Rerequest(epoch)) if ok => fo.core.run_seen(epoch),
                    _ => {}
                }
            }
            FoMsg::Report { id, report } => self.job_report(i, id, report),
            FoMsg::Step { id, failed } => self.job_step(i, from, id, failed),
        }
    }

    /// Routes IPREALLOCATE / MOVE_IP (hole 4: never forwarded twice).
    fn route(&mut self, i: usize, w: Waiter, mv: Option<MoveIp>) {
        let now = self.local(i);
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        let from = match w {
            Waiter::Cli => pnn(i),
            Waiter::Peer { from, .. } => pnn(from),
        };
        let mut lo = Vec::new();
        match fo.core.route(from, fo.leader.active()) {
            Route::Serve => match mv {
                Some(mv) => fo.leader.move_ip(now, mv, w, &mut lo),
                None => fo.leader.ipreallocate(now, w, &mut lo),
            },
            Route::Forward(to) => {
                let id = self.id();
                if let Some(fo) = self.nodes[i].fo.as_mut() {
                    fo.pending.insert(id, Pending::Forwarded);
                }
                self.send_fo(i, idx(to), FoMsg::Realloc { id, mv });
            }
            Route::Refuse => self.answer(i, w, false),
        }
        self.leader_actions(i, lo);
    }

    fn answer(&mut self, i: usize, w: Waiter, ok: bool) {
        if let Waiter::Peer { from, id } = w {
            self.send_fo(i, from, FoMsg::ReallocReply { id, ok });
        }
    }

    // ----- failoverd: leader side

    fn leader_actions(&mut self, i: usize, mut actions: Vec<LeaderAction<Waiter>>) {
        let mut guard = 0;
        while !actions.is_empty() && guard < 100 {
            guard += 1;
            let mut more = Vec::new();
            for a in actions {
                match &a {
                    LeaderAction::StartRun(o) | LeaderAction::StartMove(o, _) => trace!(
                        self,
                        "node {i}: leader starts job {} gen {} left out {:?}",
                        o.seq,
                        o.membership.generation,
                        o.unresponsive
                    ),
                    other => trace!(self, "node {i}: leader {other:?}"),
                }
                match a {
                    LeaderAction::StartRun(order) => self.start_job(i, order, None),
                    LeaderAction::StartMove(order, mv) => self.start_job(i, order, Some(mv)),
                    LeaderAction::Abort => {
                        if let Some(fo) = self.nodes[i].fo.as_mut() {
                            fo.job = None;
                        }
                    }
                    LeaderAction::Answer(w, _) => self.answer(i, w, true),
                    LeaderAction::MoveDone(w, r) => self.answer(i, w, r.is_ok()),
                    LeaderAction::Busy(w) => self.answer(i, w, false),
                    LeaderAction::Reroute(w) => {
                        let now = self.local(i);
                        let Some(fo) = self.nodes[i].fo.as_mut() else {
                            continue;
                        };
                        let from = match w {
                            Waiter::Cli => pnn(i),
                            Waiter::Peer { from, .. } => pnn(from),
                        };
                        match fo.core.route(from, fo.leader.active()) {
                            Route::Serve => fo.leader.ipreallocate(now, w, &mut more),
                            Route::Forward(to) => {
                                let id = self.id();
                                if let Some(fo) = self.nodes[i].fo.as_mut() {
                                    fo.pending.insert(id, Pending::Forwarded);
                                }
                                self.send_fo(i, idx(to), FoMsg::Realloc { id, mv: None });
                            }
                            Route::Refuse => self.answer(i, w, false),
                        }
                    }
                }
            }
            actions = more;
        }
    }

    fn start_job(&mut self, i: usize, order: RunOrder, mv: Option<MoveIp>) {
        let id = self.id();
        let nodes = run::connected_nodes(&order.membership);
        let deadline = self.local(i) + self.profile.request_timeout;
        if let Some(fo) = self.nodes[i].fo.as_mut() {
            fo.job = Some(Job {
                order,
                mv,
                phase: Phase::Gather {
                    id,
                    pending: nodes.iter().copied().collect(),
                    reports: BTreeMap::new(),
                },
                deadline,
            });
        }
        for p in nodes {
            self.send_fo(i, idx(p), FoMsg::GetIps { id });
        }
    }

    fn job_report(&mut self, i: usize, id: u64, report: PublicIps) {
        let Some(job) = self.nodes[i].fo.as_mut().and_then(|f| f.job.as_mut()) else {
            return;
        };
        if let Phase::Gather {
            id: jid,
            pending,
            reports,
        } = &mut job.phase
        {
            if *jid == id && pending.remove(&report.pnn) {
                reports.insert(report.pnn, report);
                if pending.is_empty() {
                    self.gathered(i);
                }
            }
        }
    }

    fn job_step(&mut self, i: usize, from: usize, id: u64, failed: Option<Vec<IpAddr>>) {
        let Some(job) = self.nodes[i].fo.as_mut().and_then(|f| f.job.as_mut()) else {
            return;
        };
        let from = pnn(from);
        match &mut job.phase {
            Phase::Release {
                id: jid,
                pending,
                failed: fset,
                ..
            } if *jid == id => {
                let Some(ips) = pending.remove(&from) else {
                    return;
                };
                match failed {
                    Some(list) => fset.extend(list),
                    None => fset.extend(ips),
                }
                if pending.is_empty() {
                    self.released(i);
                }
            }
            Phase::Take {
                id: jid,
                pending,
                failures,
                memory,
                ..
            } if *jid == id => {
                let Some(ips) = pending.remove(&from) else {
                    return;
                };
                match failed {
                    Some(list) => {
                        *failures |= !list.is_empty();
                        let bad: BTreeSet<IpAddr> = list.into_iter().collect();
                        run::record_take(memory, from, &ips, Some(&bad));
                    }
                    None => {
                        *failures = true;
                        // A refusal: nothing was taken.
                        run::record_take(memory, from, &ips, Some(&ips.iter().copied().collect()));
                    }
                }
                if pending.is_empty() {
                    self.taken(i);
                }
            }
            _ => {}
        }
    }

    /// Every report is in (or the gather timed out).
    fn gathered(&mut self, i: usize) {
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        let Some(job) = fo.job.take() else {
            return;
        };
        let Phase::Gather { reports, .. } = &job.phase else {
            fo.job = Some(job);
            return;
        };
        let m = &job.order.membership;
        let (answered, missing) = run::sort_reports(m, reports.keys().copied());
        let mut outcome = RunOutcome {
            answered,
            missing: missing.clone(),
            generation: m.generation,
            ..RunOutcome::default()
        };
        if missing.iter().any(|p| !job.order.unresponsive.contains(p)) {
            return self.finish(i, job.order.seq, outcome);
        }
        if self.trace {
            let summary: Vec<String> = reports
                .values()
                .map(|r| {
                    let active: Vec<String> = r
                        .ips
                        .iter()
                        .filter(|ip| ip.active.is_some())
                        .map(|ip| ip.addr.to_string())
                        .collect();
                    let owners: Vec<String> = r
                        .ips
                        .iter()
                        .filter_map(|ip| ip.owner.map(|o| format!("{}={o}", ip.addr)))
                        .collect();
                    format!("{}: hosts {active:?} believes {owners:?}", r.pnn)
                })
                .collect();
            trace!(
                self,
                "node {i}: plan gen {} memory {:?} reports [{}]",
                m.generation,
                job.order.last_owner,
                summary.join("; ")
            );
        }
        let planned = plan::plan(PlanInput {
            membership: m,
            reports,
            last_owner: &job.order.last_owner,
            tunables: Tunables::default(),
            force_rebalance: &job.order.force_rebalance,
            unresponsive: &job.order.unresponsive,
        });
        let Ok(mut p) = planned else {
            return self.finish(i, job.order.seq, outcome);
        };
        if let Some(mv) = job.mv {
            let target_ok = reports.get(&mv.pnn).is_some_and(|r| {
                r.ips
                    .iter()
                    .any(|x| x.addr == mv.addr && !x.available.is_empty())
            }) && m.flags(mv.pnn).is_some_and(NodeFlags::is_ok);
            if !target_ok || p.pinned.contains_key(&mv.addr) || p.held.contains(&mv.addr) {
                let now = self.local(i);
                let mut lo = Vec::new();
                if let Some(fo) = self.nodes[i].fo.as_mut() {
                    fo.leader
                        .move_refused(now, job.order.seq, "cannot move".into(), &mut lo);
                }
                return self.leader_actions(i, lo);
            }
            let mut releases = BTreeMap::new();
            for (&n, r) in reports {
                if n != mv.pnn && r.ips.iter().any(|x| x.addr == mv.addr) {
                    releases.insert(n, vec![(mv.addr, Some(mv.pnn))]);
                }
            }
            p = Plan {
                generation: m.generation,
                releases,
                takes: BTreeMap::from([(mv.pnn, vec![mv.addr])]),
                ..Plan::default()
            };
        }
        outcome.complete = run::complete(&p, !outcome.missing.is_empty());
        let id = self.id();
        let memory = job.order.last_owner.clone();
        let pending: BTreeMap<Pnn, Vec<IpAddr>> = p
            .releases
            .iter()
            .map(|(&n, v)| (n, v.iter().map(|(a, _)| *a).collect()))
            .collect();
        let sends: Vec<(Pnn, Releases)> = p.releases.iter().map(|(&n, v)| (n, v.clone())).collect();
        let generation = p.generation;
        // The run's stamp: this node's clock (it goes on across failoverd
        // restarts, as CLOCK_MONOTONIC does).
        let run = u64::try_from(self.local(i).as_nanos()).unwrap_or(u64::MAX);
        let deadline = self.local(i) + self.profile.release_timeout;
        let empty = pending.is_empty();
        let fo = self.nodes[i].fo.as_mut().expect("checked");
        fo.job = Some(Job {
            phase: Phase::Release {
                id,
                run,
                plan: p,
                pending,
                failed: BTreeSet::new(),
                memory,
                outcome,
            },
            deadline,
            ..job
        });
        for (n, ips) in sends {
            self.send_fo(
                i,
                idx(n),
                FoMsg::Release {
                    id,
                    generation,
                    run,
                    ips,
                },
            );
        }
        if empty {
            self.released(i);
        }
    }

    /// Every release is acknowledged (or timed out): take.
    fn released(&mut self, i: usize) {
        let id = self.id();
        let deadline = self.local(i) + self.profile.request_timeout;
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        let Some(job) = fo.job.take() else {
            return;
        };
        let (p, run, pending, mut failed, mut memory, outcome) = match job.phase {
            Phase::Release {
                plan,
                run,
                pending,
                failed,
                memory,
                outcome,
                ..
            } => (plan, run, pending, failed, memory, outcome),
            other => {
                fo.job = Some(Job {
                    phase: other,
                    ..job
                });
                return;
            }
        };
        // Unanswered releases failed.
        for ips in pending.values() {
            failed.extend(ips.iter().copied());
        }
        run::forget_released(&mut memory, &p, &failed);
        let takes = run::takes_after_release(&p, &failed);
        let generation = p.generation;
        let plan_complete = outcome.complete;
        fo.job = Some(Job {
            phase: Phase::Take {
                id,
                pending: takes.clone(),
                failures: false,
                release_failed: !failed.is_empty(),
                memory,
                outcome,
                plan_complete,
            },
            deadline,
            ..job
        });
        let empty = takes.is_empty();
        for (n, ips) in takes {
            self.send_fo(
                i,
                idx(n),
                FoMsg::Take {
                    id,
                    generation,
                    run,
                    ips,
                },
            );
        }
        if empty {
            self.taken(i);
        }
    }

    /// Every take is answered (or timed out): the run is over.
    fn taken(&mut self, i: usize) {
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        let Some(job) = fo.job.take() else {
            return;
        };
        let (pending, mut failures, release_failed, mut memory, mut outcome, plan_complete) =
            match job.phase {
                Phase::Take {
                    pending,
                    failures,
                    release_failed,
                    memory,
                    outcome,
                    plan_complete,
                    ..
                } => (
                    pending,
                    failures,
                    release_failed,
                    memory,
                    outcome,
                    plan_complete,
                ),
                other => {
                    fo.job = Some(Job {
                        phase: other,
                        ..job
                    });
                    return;
                }
            };
        for (n, ips) in &pending {
            failures = true;
            run::record_take(&mut memory, *n, ips, None);
        }
        outcome.ok = !failures && !release_failed;
        outcome.complete = outcome.ok && plan_complete;
        outcome.last_owner = Some(memory);
        self.finish(i, job.order.seq, outcome);
    }

    fn finish(&mut self, i: usize, seq: u64, outcome: RunOutcome) {
        trace!(
            self,
            "node {i}: job {seq} done ok {} complete {} missing {:?}",
            outcome.ok,
            outcome.complete,
            outcome.missing
        );
        let now = self.local(i);
        let mut lo = Vec::new();
        if let Some(fo) = self.nodes[i].fo.as_mut() {
            fo.job = None;
            fo.leader.run_finished(now, seq, outcome, &mut lo);
        }
        self.leader_actions(i, lo);
    }

    /// A phase of the job timed out.
    fn job_timeout(&mut self, i: usize) {
        let Some(job) = self.nodes[i].fo.as_ref().and_then(|f| f.job.as_ref()) else {
            return;
        };
        match job.phase {
            Phase::Gather { .. } => self.gathered(i),
            Phase::Release { .. } => self.released(i),
            Phase::Take { .. } => self.taken(i),
        }
    }

    fn fo_tick(&mut self, i: usize) {
        let now = self.local(i);
        let poll_every = self.profile.poll_every;
        let mut out = Vec::new();
        let mut lo = Vec::new();
        let mut poll = false;
        let mut timeout = false;
        if let Some(fo) = self.nodes[i].fo.as_mut() {
            fo.core.tick(now, &mut out);
            fo.leader.tick(now, &mut lo);
            if now >= fo.poll_at {
                fo.poll_at = now + poll_every;
                poll = true;
            }
            timeout = fo.job.as_ref().is_some_and(|j| now >= j.deadline);
        }
        self.node_actions(i, out);
        self.leader_actions(i, lo);
        if timeout {
            self.job_timeout(i);
        }
        if poll && self.cd_runs(i) {
            let local = self.local(i);
            if let Some(m) = self.nodes[i].cd.as_mut().map(|m| m.current(local)) {
                self.tell_fo(i, News::Membership(m));
            }
        }
    }

    fn fo_deadline(&self, i: usize) -> Option<Duration> {
        let fo = self.nodes[i].fo.as_ref()?;
        [
            fo.core.next_deadline(),
            fo.leader.next_deadline(),
            fo.job.as_ref().map(|j| j.deadline),
            Some(fo.poll_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- faults

    fn schedule_faults(&mut self) {
        let n = self.nodes.len();
        let phase = self.profile.fault_phase;
        let t = self.profile.timing;
        let count = 2 + self.rng.index(10);
        let settle = t.lease * 3 + t.margin;
        for _ in 0..count {
            let at = settle
                + self
                    .rng
                    .between(Duration::ZERO, phase.saturating_sub(settle));
            let a = self.rng.index(n);
            let b = (a + 1 + self.rng.index(n - 1)) % n;
            let long = t.lease + t.margin + self.rng.between(Duration::ZERO, t.lease * 2);
            let short = self.rng.between(t.interval, t.lease * 2);
            let d = if self.rng.chance(0.5) { long } else { short };
            let addr = self.addrs[self.rng.index(self.addrs.len())];
            match self.rng.below(24) {
                0 => {
                    self.push(
                        at,
                        Ev::Fault(Fault::Link {
                            from: a,
                            to: b,
                            up: false,
                        }),
                    );
                    self.push(
                        at + d,
                        Ev::Fault(Fault::Link {
                            from: a,
                            to: b,
                            up: true,
                        }),
                    );
                }
                1 | 2 => {
                    let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                    self.push(at, Ev::Fault(Fault::Partition(side)));
                    self.push(at + d, Ev::Fault(Fault::Partition(vec![true; n])));
                }
                3 => {
                    let p = [0.01, 0.05, 0.2][self.rng.index(3)];
                    self.push(at, Ev::Fault(Fault::Loss(p)));
                    self.push(at + d, Ev::Fault(Fault::Loss(0.0)));
                }
                4 => {
                    self.push(at, Ev::Fault(Fault::Dup(0.1)));
                    self.push(at + d, Ev::Fault(Fault::Dup(0.0)));
                }
                5 => {
                    self.push(at, Ev::Fault(Fault::CrashClusterd(a)));
                    self.push(at + short, Ev::Fault(Fault::StartClusterd(a)));
                }
                6 => {
                    self.push(at, Ev::Fault(Fault::CrashFailoverd(a)));
                    self.push(at + d, Ev::Fault(Fault::StartFailoverd(a)));
                }
                7 => {
                    self.push(at, Ev::Fault(Fault::PowerOff(a)));
                    self.push(at + d, Ev::Fault(Fault::PowerOn(a)));
                }
                8 => self.push(at, Ev::Fault(Fault::FreezeClusterd(a, d))),
                9 => self.push(at, Ev::Fault(Fault::FreezeFailoverd(a, d))),
                10 => {
                    self.push(at, Ev::Fault(Fault::SlowHooks(a, true)));
                    self.push(at + d, Ev::Fault(Fault::SlowHooks(a, false)));
                }
                11 | 21 => {
                    // Removals fail for a while; an operator deletes an
                    // address meanwhile.
                    self.push(at, Ev::Fault(Fault::RemovalFails(a, true)));
                    self.push(at + MS, Ev::Fault(Fault::DelHosted(a)));
                    self.push(at + d, Ev::Fault(Fault::RemovalFails(a, false)));
                }
                12 => {
                    self.push(at, Ev::Fault(Fault::Admin(a, AdminOp::Disable)));
                    self.push(at + d, Ev::Fault(Fault::Admin(a, AdminOp::Enable)));
                }
                13 => self.push(at, Ev::Fault(Fault::Admin(a, AdminOp::Ban { seconds: 1 }))),
                14 | 15 => self.push(
                    at,
                    Ev::Fault(Fault::MoveIp {
                        via: a,
                        addr,
                        to: pnn(b),
                    }),
                ),
                16 => self.push(at, Ev::Fault(Fault::Ipreallocate(a))),
                17 => self.push(at, Ev::Fault(Fault::AddIp(a, addr))),
                18 => self.push(at, Ev::Fault(Fault::DelIp(a, addr))),
                19 => self.push(at, Ev::Fault(Fault::ReloadIps(a))),
                22 => {
                    self.push(at, Ev::Fault(Fault::PartitionLeader { with: b }));
                    self.push(at + long, Ev::Fault(Fault::Partition(vec![true; n])));
                }
                20 => {
                    // A one-way cut of one node from every other.
                    for o in (0..n).filter(|&o| o != a) {
                        self.push(
                            at,
                            Ev::Fault(Fault::Link {
                                from: o,
                                to: a,
                                up: false,
                            }),
                        );
                        self.push(
                            at + d,
                            Ev::Fault(Fault::Link {
                                from: o,
                                to: a,
                                up: true,
                            }),
                        );
                    }
                }
                _ => {
                    // Clusterd restart right away: a silent lease flap.
                    self.push(at, Ev::Fault(Fault::CrashClusterd(a)));
                    self.push(at + MS, Ev::Fault(Fault::StartClusterd(a)));
                }
            }
        }
        self.push(phase, Ev::Fault(Fault::Quiet));
    }

    fn fault(&mut self, f: Fault) {
        trace!(self, "FAULT {f:?}");
        let n = self.nodes.len();
        match f {
            Fault::Link { from, to, up } => self.link[from][to] = up,
            Fault::Partition(side) => {
                for a in 0..n {
                    for b in 0..n {
                        self.link[a][b] = side[a] == side[b] || side.iter().all(|s| *s);
                    }
                }
            }
            Fault::Loss(p) => self.loss = p,
            Fault::Dup(p) => self.dup = p,
            Fault::CrashClusterd(i) => self.nodes[i].cd = None,
            Fault::StartClusterd(i) => {
                if self.nodes[i].powered && self.nodes[i].cd.is_none() {
                    self.start_clusterd(i);
                }
            }
            Fault::CrashFailoverd(i) => {
                if self.nodes[i].fo_frozen_until != Duration::MAX {
                    self.nodes[i].fo = None;
                }
            }
            Fault::StartFailoverd(i) => {
                if self.nodes[i].powered && self.nodes[i].fo.is_none() {
                    self.start_failoverd(i);
                }
            }
            Fault::PowerOff(i) => {
                let node = &mut self.nodes[i];
                node.powered = false;
                node.cd = None;
                node.fo = None;
                node.kernel = Kernel::default();
            }
            Fault::PowerOn(i) => {
                if !self.nodes[i].powered {
                    self.nodes[i].powered = true;
                    self.start_clusterd(i);
                    self.start_failoverd(i);
                }
            }
            Fault::FreezeClusterd(i, d) => self.nodes[i].cd_frozen_until = self.now + d,
            Fault::FreezeFailoverd(i, d) => {
                if self.nodes[i].fo_frozen_until != Duration::MAX {
                    self.nodes[i].fo_frozen_until = self.now + d;
                    self.nodes[i].fo_ticks_from =
                        self.now + d + self.shell_rng.between(Duration::ZERO, 200 * US);
                }
            }
            Fault::HangFailoverd(i) => self.nodes[i].fo_frozen_until = Duration::MAX,
            Fault::SlowHooks(i, on) => self.nodes[i].slow_hooks = on,
            Fault::RemovalFails(i, on) => self.nodes[i].removal_fails = on,
            Fault::Admin(i, op) => {
                let now = self.local(i);
                if self.cd_runs(i) {
                    let id = self.id();
                    if let Some(m) = self.nodes[i].cd.as_mut() {
                        m.admin(now, id, pnn(i), op, &mut self.out);
                    }
                    self.cd_outputs(i);
                }
            }
            Fault::MoveIp { via, addr, to } => {
                if self.fo_runs(via) {
                    self.route(via, Waiter::Cli, Some(MoveIp { addr, pnn: to }));
                }
            }
            Fault::Ipreallocate(i) => {
                if self.fo_runs(i) {
                    self.route(i, Waiter::Cli, None);
                }
            }
            Fault::AddIp(i, a) => {
                if self.fo_runs(i) {
                    if let Some(fo) = self.nodes[i].fo.as_mut() {
                        fo.publics.insert(a);
                    }
                    self.want_run(i);
                }
            }
            Fault::DelIp(i, a) => {
                if self.fo_runs(i) {
                    let now = self.local(i);
                    let forget = self.bug;
                    let known = self.nodes[i].fo.as_mut().is_some_and(|fo| {
                        let known = fo.publics.remove(&a);
                        if known && forget != Some(Bug::ForgetLeftovers) {
                            // Tracked until its removal succeeds.
                            fo.core.leftover(now, a);
                        }
                        known
                    });
                    if known {
                        self.enqueue(i, Op::Remove(vec![a]));
                    }
                    self.want_run(i);
                }
            }
            Fault::ReloadIps(i) => self.reload(i),
            Fault::PartitionLeader { with } => {
                let leader = (0..n).find(|&i| {
                    self.nodes[i]
                        .cd
                        .as_ref()
                        .is_some_and(|m| m.membership().leader == Some(pnn(i)))
                });
                if let Some(l) = leader {
                    let others: Vec<usize> = (0..n).filter(|&i| i != l).collect();
                    let mate = others[with % others.len()];
                    let side: Vec<bool> = (0..n).map(|i| i == l || i == mate).collect();
                    self.fault(Fault::Partition(side));
                }
            }
            Fault::DelHosted(i) => {
                let hosted = self.nodes[i]
                    .fo
                    .as_ref()
                    .and_then(|f| f.hosted.iter().next().copied());
                if let Some(a) = hosted {
                    self.fault(Fault::DelIp(i, a));
                }
            }
            Fault::Quiet => {
                for row in &mut self.link {
                    row.fill(true);
                }
                self.loss = 0.0;
                self.dup = 0.0;
                for i in 0..n {
                    let node = &mut self.nodes[i];
                    node.slow_hooks = false;
                    node.removal_fails = false;
                    node.cd_frozen_until = node.cd_frozen_until.min(self.now);
                    if node.fo_frozen_until != Duration::MAX {
                        node.fo_frozen_until = node.fo_frozen_until.min(self.now);
                        node.fo_ticks_from = node.fo_ticks_from.min(self.now);
                    }
                    if !node.powered {
                        self.fault(Fault::PowerOn(i));
                    }
                    self.fault(Fault::StartClusterd(i));
                    self.fault(Fault::StartFailoverd(i));
                    self.fault(Fault::Admin(i, AdminOp::Enable));
                    self.fault(Fault::Admin(i, AdminOp::Unban));
                    // Back to the file (only where addip/delip changed it:
                    // a reloadips asks for a run, which must not hide a
                    // missing re-request).
                    let changed = self.nodes[i]
                        .fo
                        .as_ref()
                        .is_some_and(|f| f.publics != self.nodes[i].file);
                    if changed {
                        self.reload(i);
                    }
                }
            }
        }
    }

    fn reload(&mut self, i: usize) {
        if !self.fo_runs(i) {
            return;
        }
        let now = self.local(i);
        let file = self.nodes[i].file.clone();
        let Some(fo) = self.nodes[i].fo.as_mut() else {
            return;
        };
        let gone: Vec<IpAddr> = fo.publics.difference(&file).copied().collect();
        fo.publics = file;
        for a in &gone {
            if self.bug != Some(Bug::ForgetLeftovers) {
                fo.core.leftover(now, *a);
            }
        }
        if !gone.is_empty() {
            self.enqueue(i, Op::Remove(gone));
        }
        self.want_run(i);
    }

    /// This node's list changed: a run is wanted.
    fn want_run(&mut self, i: usize) {
        let now = self.local(i);
        let mut lo = Vec::new();
        let mut no = Vec::new();
        let one_shot = self.bug == Some(Bug::NoRerequest);
        let mut ask = None;
        if let Some(fo) = self.nodes[i].fo.as_mut() {
            if fo.leader.active() {
                fo.leader.request_run(now, &mut lo);
            } else if one_shot {
                // The daemon before seed 289260: one request, to the
                // leader known now, if any.
                ask = fo.core.leader().filter(|&l| l != pnn(i));
            } else {
                fo.core.run_wanted(now, &mut no);
            }
        }
        self.leader_actions(i, lo);
        self.node_actions(i, no);
        if let Some(l) = ask {
            let id = self.id();
            self.send_fo(i, idx(l), FoMsg::Realloc { id, mv: None });
        }
    }

    // ----- the engine

    fn deliver(&mut self, from: usize, to: usize, msg: Net) {
        match msg {
            Net::Cluster(m) => {
                if !self.cd_runs(to) {
                    if self.nodes[to].powered && self.nodes[to].cd.is_some() {
                        // Frozen: it reads the message when it thaws.
                        let at = self.nodes[to].cd_frozen_until;
                        self.push(
                            at,
                            Ev::Deliver {
                                from,
                                to,
                                msg: Net::Cluster(m),
                            },
                        );
                    }
                    return;
                }
                let now = self.local(to);
                if let Some(c) = self.nodes[to].cd.as_mut() {
                    c.receive(now, &m, &mut self.out);
                }
                self.cd_outputs(to);
            }
            Net::Fo(m) => {
                if !self.fo_runs(to) {
                    if self.hung(to) {
                        return;
                    }
                    if self.nodes[to].powered && self.nodes[to].fo.is_some() {
                        let at = self.nodes[to].fo_frozen_until;
                        self.push(
                            at,
                            Ev::Deliver {
                                from,
                                to,
                                msg: Net::Fo(m),
                            },
                        );
                    }
                    return;
                }
                self.fo_receive(to, from, m);
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match &ev {
            Ev::Deliver { to, .. } => self.touch(*to),
            Ev::News { node, .. }
            | Ev::OpDone { node, .. }
            | Ev::Loop { node, .. }
            | Ev::Watch { node, .. } => self.touch(*node),
            Ev::Fault(_) => self.dirty.fill(true),
        }
        match ev {
            Ev::Deliver { from, to, msg } => {
                // A link that went down meanwhile loses what was in flight.
                if from == to || self.link[from][to] {
                    self.deliver(from, to, msg);
                }
            }
            Ev::News { node, inc, news } => {
                if self.nodes[node].fo.as_ref().is_some_and(|f| f.inc == inc) {
                    if self.fo_runs(node) {
                        self.fo_news(node, news);
                    } else if !self.hung(node) {
                        // At the thaw, the intake, the loop and the lease
                        // watch race.
                        let at = self.nodes[node].fo_frozen_until
                            + self.shell_rng.between(Duration::ZERO, 200 * US);
                        self.push(at, Ev::News { node, inc, news });
                    }
                }
            }
            Ev::Loop { node, inc } | Ev::Watch { node, inc, .. }
                if self.nodes[node].fo.as_ref().is_none_or(|f| f.inc != inc) => {}
            Ev::Loop { node, inc } => {
                if self.fo_runs(node) {
                    self.run_deferred(node);
                } else if !self.hung(node) {
                    let at = self.nodes[node].fo_frozen_until + self.loop_delay();
                    self.push(at, Ev::Loop { node, inc });
                }
            }
            Ev::Watch { node, inc, at } => {
                if self.fo_runs(node) {
                    self.watch_fires(node, at);
                } else if !self.hung(node) {
                    let thaw = self.nodes[node].fo_frozen_until
                        + self.shell_rng.between(Duration::ZERO, 200 * US);
                    self.push(thaw, Ev::Watch { node, inc, at });
                }
            }
            Ev::OpDone { node, inc } => {
                let Some(fo) = self.nodes[node].fo.as_mut() else {
                    return;
                };
                if fo.inc != inc {
                    return;
                }
                if self.hung(node) {
                    return;
                }
                if !self.fo_runs_now(node) {
                    let at = self.nodes[node].fo_frozen_until;
                    self.push(at, Ev::OpDone { node, inc });
                    return;
                }
                let Some(fo) = self.nodes[node].fo.as_mut() else {
                    return;
                };
                fo.ops.pop_front();
                fo.op_running = false;
                self.next_op(node);
            }
            Ev::Fault(f) => self.fault(f),
        }
    }

    /// Node i's failoverd hangs for good.
    fn hung(&self, i: usize) -> bool {
        self.nodes[i].fo_frozen_until == Duration::MAX && self.nodes[i].fo.is_some()
    }

    fn fo_runs_now(&self, i: usize) -> bool {
        self.fo_runs(i)
    }

    /// The next real instant something happens.
    /// When node i's processes are due and when its serving may change
    /// (real times).
    fn node_wake(&self, i: usize) -> Wake {
        let mut w = Wake::default();
        let mut other = |t: Duration| {
            w.other = Some(w.other.map_or(t, |b: Duration| b.min(t)));
        };
        if self.cd_runs(i) {
            if let Some(m) = self.nodes[i].cd.as_ref() {
                let local = self.local(i);
                w.cd = Some(self.real_of(i, m.next_deadline(local)));
            }
        } else if self.nodes[i].cd.is_some() && self.nodes[i].powered {
            other(self.nodes[i].cd_frozen_until);
        }
        if self.fo_runs(i) {
            if let Some(d) = self.fo_deadline(i) {
                w.fo = Some(self.real_of(i, d).max(self.nodes[i].fo_ticks_from));
            }
        } else if self.nodes[i].fo.is_some() && self.nodes[i].powered {
            other(self.nodes[i].fo_frozen_until);
        }
        for &end in self.nodes[i].kernel.lease.values() {
            // Serving changes then (checked by the invariant).
            let r = self.real_of(i, end);
            if r > self.now {
                other(r);
            }
        }
        w
    }

    /// The next real instant something happens (recomputing only the nodes
    /// something happened to).
    fn next_time(&mut self) -> Option<Duration> {
        let n = self.nodes.len();
        self.wake.resize(n, Wake::default());
        self.dirty.resize(n, true);
        let mut best = self.queue.keys().next().map(|(t, _)| *t);
        for i in 0..n {
            if self.dirty[i] {
                self.wake[i] = self.node_wake(i);
                self.dirty[i] = false;
            }
            for t in [self.wake[i].cd, self.wake[i].fo, self.wake[i].other]
                .into_iter()
                .flatten()
            {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
        best
    }

    /// Something happened to node i: recompute when it is due.
    fn touch(&mut self, i: usize) {
        if let Some(d) = self.dirty.get_mut(i) {
            *d = true;
        }
    }

    /// Does node i serve `a` now (configured, leased, lease alive)?
    fn serves(&self, i: usize, a: IpAddr) -> bool {
        let n = &self.nodes[i];
        n.powered
            && n.kernel.configured.contains(&a)
            && n.kernel.lease.get(&a).is_some_and(|&e| self.local(i) < e)
    }

    fn check_safety(&self) -> Option<Violation> {
        let n = self.nodes.len();
        for i in 0..n {
            for &a in &self.nodes[i].kernel.configured {
                if !self.serves(i, a) {
                    continue;
                }
                if let Some(j) = (i + 1..n).find(|&j| self.serves(j, a)) {
                    let mut nodes = vec![i, j];
                    nodes.extend((j + 1..n).filter(|&k| self.serves(k, a)));
                    return Some(Violation::TwoServers {
                        addr: a,
                        nodes,
                        at: self.now,
                    });
                }
            }
        }
        None
    }

    fn check_tracked(&self) -> Option<Violation> {
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(fo) = n.fo.as_ref().filter(|f| f.adopted) else {
                continue;
            };
            for &a in &n.kernel.configured {
                if !fo.hosted.contains(&a) && !fo.core.leftovers().contains(&a) {
                    return Some(Violation::Untracked { addr: a, node: i });
                }
            }
        }
        None
    }

    fn check_queues(&self) -> Option<Violation> {
        if self.queue.len() > 100_000 {
            return Some(Violation::Unbounded {
                what: format!("{} events in flight", self.queue.len()),
            });
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(fo) = &n.fo {
                if fo.ops.len() > 1_000 || fo.leader.queued() > 1_000 || fo.pending.len() > 10_000 {
                    return Some(Violation::Unbounded {
                        what: format!(
                            "node {i}: {} operations, {} waiting requests, {} pending",
                            fo.ops.len(),
                            fo.leader.queued(),
                            fo.pending.len()
                        ),
                    });
                }
            }
        }
        None
    }

    /// What still keeps the cluster from having converged (`None`: every
    /// listed address served by exactly one node that lists it, nothing
    /// configured that does not serve).
    fn unconverged(&self) -> Option<String> {
        // A hung failoverd on the leader stops every run: clusterd does not
        // know (a known limit, see docs/failoverd.md). Not this check's job.
        for i in 0..self.nodes.len() {
            if self.hung(i)
                && self.nodes[i]
                    .cd
                    .as_ref()
                    .is_some_and(|m| m.membership().leader == Some(pnn(i)))
            {
                return None;
            }
        }
        let mut listed: BTreeSet<IpAddr> = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(fo) = n.fo.as_ref().filter(|_| !self.hung(i)) {
                listed.extend(fo.publics.iter().copied());
            }
        }
        for &a in &listed {
            // A hung node may still hold it: it must stay there (hole 3).
            if (0..self.nodes.len())
                .any(|i| self.hung(i) && self.nodes[i].kernel.configured.contains(&a))
            {
                continue;
            }
            let servers: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.serves(i, a))
                .collect();
            if servers.len() != 1 {
                return Some(format!("{a} served by {servers:?}"));
            }
            let s = servers[0];
            if !self.nodes[s]
                .fo
                .as_ref()
                .is_some_and(|f| f.publics.contains(&a))
            {
                return Some(format!("{a} served by node {s}, which does not list it"));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if self.hung(i) {
                continue;
            }
            for &a in &n.kernel.configured {
                if !self.serves(i, a) {
                    return Some(format!("{a} configured on node {i} without serving"));
                }
            }
        }
        None
    }

    /// Runs the schedule to the end: faults, then until converged or the
    /// bound passed.
    pub fn run(&mut self) -> Outcome {
        let end = self.quiet_at + self.profile.bound;
        let (mut violation, convergence) = self.drive(end, true);
        if violation.is_none() && convergence.is_none() {
            let why = self
                .unconverged()
                .unwrap_or_else(|| "ran out of events".into());
            violation = Some(Violation::NoConvergence {
                why: format!("after {:?}: {why}", self.profile.bound),
            });
            if self.trace {
                for (i, n) in self.nodes.iter().enumerate() {
                    eprintln!(
                        "node {i}: powered {} kernel {:?} leases {:?} failoverd {:?}",
                        n.powered,
                        n.kernel.configured,
                        n.kernel.lease.keys().collect::<Vec<_>>(),
                        n.fo.as_ref().map(|f| (
                            &f.publics,
                            f.core.leftovers(),
                            f.core.max_generation()
                        )),
                    );
                    if std::env::var_os("SIM_TRACE_CLUSTERD").is_some() {
                        eprintln!("node {i} clusterd: {:#?}", n.cd);
                    }
                }
            }
        }
        Outcome {
            steps: self.steps,
            violation,
            convergence,
        }
    }

    /// A cluster of `nodes` nodes (3 to 5; every node lists every
    /// address) with no random faults, for scenario tests: add faults with
    /// [`World::schedule`], run with [`World::run_until`].
    ///
    /// # Panics
    ///
    /// Never for the generated nodes file.
    #[must_use]
    pub fn scenario(
        profile: Profile,
        seed: u64,
        bug: Option<Bug>,
        nodes: usize,
        addrs: usize,
    ) -> World {
        let mut w = World::build(profile, seed, bug, Some((nodes, addrs)));
        w.quiet_at = Duration::MAX;
        w
    }

    /// Injects `fault` at simulated time `at`.
    pub fn schedule(&mut self, at: Duration, fault: Fault) {
        self.push(at, Ev::Fault(fault));
    }

    /// Runs until simulated time `end`; returns the first violation of the
    /// safety, tracking or queue invariants.
    pub fn run_until(&mut self, end: Duration) -> Option<Violation> {
        self.drive(end, false).0
    }

    /// Simulated time.
    #[must_use]
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The public addresses of this cluster.
    #[must_use]
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// The nodes serving `a` now.
    #[must_use]
    pub fn servers(&self, a: IpAddr) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.serves(i, a))
            .collect()
    }

    /// Runs to `end` or the first violation; with `converge`, also stops
    /// once converged after the faults (returning how long that took).
    fn drive(&mut self, end: Duration, converge: bool) -> (Option<Violation>, Option<Duration>) {
        let mut violation = None;
        let mut convergence = None;
        while let Some(t) = self.next_time() {
            if t > end {
                break;
            }
            self.now = t.max(self.now);
            self.steps += 1;
            if self.now > end {
                break;
            }
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let ev = entry.remove();
                self.handle(ev);
            }
            // Processes due at the step's start (one made due by an event
            // of this step runs at the next, a microsecond later).
            for i in 0..self.nodes.len() {
                let w = self.wake.get(i).copied().unwrap_or_default();
                let now = self.now;
                let due = |t: Option<Duration>| t.is_some_and(|t| t <= now);
                if due(w.other) {
                    self.touch(i);
                }
                if self.cd_runs(i) && due(w.cd) {
                    self.touch(i);
                    self.cd_tick(i);
                }
                if self.fo_runs(i) && due(w.fo) {
                    self.touch(i);
                    self.fo_tick(i);
                }
            }
            if let Some(v) = self
                .check_safety()
                .or_else(|| self.check_tracked())
                .or_else(|| self.check_queues())
            {
                violation = Some(v);
                break;
            }
            if converge && self.now >= self.quiet_at && self.unconverged().is_none() {
                convergence = Some(self.now - self.quiet_at);
                break;
            }
            if self.steps > STEP_CAP {
                violation = Some(Violation::Unbounded {
                    what: format!("more than {STEP_CAP} steps (a busy loop)"),
                });
                break;
            }
            // Always move on: at least a microsecond per step.
            self.now += US;
        }
        (violation, convergence)
    }
}
