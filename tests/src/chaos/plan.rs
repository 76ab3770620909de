//! The fault plan: every fault of a run, with its node(s), start offset and
//! duration, drawn from the seed before anything runs (pure). The same seed,
//! node count, address count, fault count and profile give the same plan,
//! whatever happens while it is carried out.
//!
//! Faults come in rounds of 1 to 3 overlapping faults; after each round the
//! driver heals everything and waits for the cluster to converge. The first
//! faults of a plan run through every kind once, in a seeded order, so that
//! a plan of at least [`Kind::ALL`]`.len()` faults covers every kind.

use super::rng::Rng;

/// A daemon masterd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Daemon {
    /// transportd.
    Transportd,
    /// clusterd.
    Clusterd,
    /// conntrackd.
    Conntrackd,
    /// failoverd.
    Failoverd,
}

impl Daemon {
    /// The four daemons, in masterd's start order.
    pub const ALL: [Daemon; 4] = [
        Daemon::Transportd,
        Daemon::Clusterd,
        Daemon::Conntrackd,
        Daemon::Failoverd,
    ];

    /// The daemon's name (as masterd reports it).
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Transportd => "transportd",
            Daemon::Clusterd => "clusterd",
            Daemon::Conntrackd => "conntrackd",
            Daemon::Failoverd => "failoverd",
        }
    }
}

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// SIGKILL of one daemon (masterd restarts it). In the single-process
    /// model a daemon is a task: it is ended with a SHUTDOWN control.
    KillDaemon(Daemon),
    /// SIGKILL of failoverd and clusterd of one node together (SHUTDOWN
    /// controls in the single-process model).
    KillFailoverdClusterd,
    /// SIGKILL of masterd (its daemons die with it); restarted after
    /// systemd's RestartSec (1 s) plus up to 2 s (a slow start).
    KillMasterd,
    /// Power-off: both cables pulled and every process killed; powered on
    /// (clean kernel state, masterd started) after `hold`.
    KillNode,
    /// Orderly restart of the node's service (SIGTERM to masterd, start).
    RestartNode,
    /// SIGSTOP of one daemon for less than the lease.
    StopDaemonShort,
    /// SIGSTOP of one daemon for several leases.
    StopDaemonLong,
    /// SIGSTOP of every process of the node for less than the lease.
    StopNodeShort,
    /// SIGSTOP of every process of the node for several leases.
    StopNodeLong,
    /// The public link (eth1) down for `hold`.
    LinkPublic,
    /// The cluster link (eth0) down for `hold`: the node still reaches the
    /// client but not its peers.
    LinkCluster,
    /// Full partition (nftables) between a group of nodes and the others.
    PartitionFull,
    /// One-way partition: the group does not hear the others.
    PartitionOneWay,
    /// `ipfailover disable` for `hold`, then `enable`.
    Disable,
    /// `ipfailover ban SECONDS` (expires by itself, `unban` at heal).
    Ban,
    /// `ipfailover moveip ADDRESS PNN`.
    MoveIp,
    /// `ipfailover addip` of an extra address on one node.
    AddIp,
    /// `ipfailover delip` of an address on one node.
    DelIp,
    /// An extra address toggled in some nodes' public_addresses, then
    /// `ipfailover reloadips all`.
    ReloadIps,
    /// `ipfailover ipreallocate`.
    IpReallocate,
    /// An event hook that takes 0.3 to 1.5 s, installed for `hold`.
    HookSlow,
    /// An event hook that hangs (killed at `hook_timeout_ms`), for `hold`.
    HookHang,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 25] = [
        Kind::KillDaemon(Daemon::Transportd),
        Kind::KillDaemon(Daemon::Clusterd),
        Kind::KillDaemon(Daemon::Conntrackd),
        Kind::KillDaemon(Daemon::Failoverd),
        Kind::KillFailoverdClusterd,
        Kind::KillMasterd,
        Kind::KillNode,
        Kind::RestartNode,
        Kind::StopDaemonShort,
        Kind::StopDaemonLong,
        Kind::StopNodeShort,
        Kind::StopNodeLong,
        Kind::LinkPublic,
        Kind::LinkCluster,
        Kind::PartitionFull,
        Kind::PartitionOneWay,
        Kind::Disable,
        Kind::Ban,
        Kind::MoveIp,
        Kind::AddIp,
        Kind::DelIp,
        Kind::ReloadIps,
        Kind::IpReallocate,
        Kind::HookSlow,
        Kind::HookHang,
    ];

    /// The name used in the JSON output.
    pub fn name(self) -> String {
        match self {
            Kind::KillDaemon(d) => format!("kill_{}", d.name()),
            Kind::KillFailoverdClusterd => "kill_failoverd_clusterd".into(),
            Kind::KillMasterd => "kill_masterd".into(),
            Kind::KillNode => "kill_node".into(),
            Kind::RestartNode => "restart_node".into(),
            Kind::StopDaemonShort => "stop_daemon_short".into(),
            Kind::StopDaemonLong => "stop_daemon_long".into(),
            Kind::StopNodeShort => "stop_node_short".into(),
            Kind::StopNodeLong => "stop_node_long".into(),
            Kind::LinkPublic => "link_public".into(),
            Kind::LinkCluster => "link_cluster".into(),
            Kind::PartitionFull => "partition_full".into(),
            Kind::PartitionOneWay => "partition_one_way".into(),
            Kind::Disable => "admin_disable".into(),
            Kind::Ban => "admin_ban".into(),
            Kind::MoveIp => "admin_moveip".into(),
            Kind::AddIp => "admin_addip".into(),
            Kind::DelIp => "admin_delip".into(),
            Kind::ReloadIps => "admin_reloadips".into(),
            Kind::IpReallocate => "admin_ipreallocate".into(),
            Kind::HookSlow => "hook_slow".into(),
            Kind::HookHang => "hook_hang".into(),
        }
    }

    /// Whether the fault takes a whole node out (its addresses must move).
    pub fn is_node_loss(self) -> bool {
        matches!(
            self,
            Kind::KillMasterd | Kind::KillNode | Kind::StopNodeLong | Kind::LinkCluster
        )
    }
}

/// Timings of a cluster profile (docs/clusterd.md), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The lease.
    pub lease_ms: u64,
    /// The leader's margin.
    pub margin_ms: u64,
}

impl Timing {
    /// The default profile: lease 500 ms, margin 100 ms.
    pub const DEFAULT: Timing = Timing {
        lease_ms: 500,
        margin_ms: 100,
    };
    /// The fast profile: lease 30 ms, margin 10 ms.
    pub const FAST: Timing = Timing {
        lease_ms: 30,
        margin_ms: 10,
    };
}

/// One planned fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What.
    pub kind: Kind,
    /// The node it hits (PNN).
    pub node: usize,
    /// For partitions: the group cut off from the rest (contains `node`).
    /// For admin faults: unused.
    pub group: Vec<usize>,
    /// For address faults: an index into the address pool (base addresses
    /// then extras); for `MoveIp` the target is `target`.
    pub addr: usize,
    /// For `MoveIp`: the target node; for `StopDaemon*`: the daemon index
    /// (into [`Daemon::ALL`]); for `Ban`: seconds.
    pub target: usize,
    /// Start, ms after the round begins.
    pub start_ms: u64,
    /// How long the fault lasts before it is undone (0 for instant ones).
    pub hold_ms: u64,
}

/// Faults that run together, then a heal and convergence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// The faults.
    pub faults: Vec<Fault>,
}

/// What the plan depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// The seed.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Number of base public addresses.
    pub ips: usize,
    /// Number of extra addresses (for addip/reloadips).
    pub extras: usize,
    /// Number of faults.
    pub faults: usize,
    /// Profile timings.
    pub timing: Timing,
    /// Only these kinds (empty: every kind).
    pub only: Vec<Kind>,
}

/// The kinds named in `names` (as [`Kind::name`] prints them).
///
/// # Errors
///
/// When a name is not a kind; the message lists them.
pub fn kinds_named(names: &[String]) -> anyhow::Result<Vec<Kind>> {
    names
        .iter()
        .map(|n| {
            Kind::ALL
                .iter()
                .copied()
                .find(|k| k.name() == *n)
                .ok_or_else(|| {
                    let all: Vec<String> = Kind::ALL.iter().map(|k| k.name()).collect();
                    anyhow::anyhow!("unknown fault kind {n}; kinds: {}", all.join(", "))
                })
        })
        .collect()
}

/// Draws the plan.
pub fn plan(o: &PlanOptions) -> Vec<Round> {
    let mut r = Rng::new(o.seed);
    let pool: Vec<Kind> = if o.only.is_empty() {
        Kind::ALL.to_vec()
    } else {
        o.only.clone()
    };
    let mut kinds = pool.clone();
    r.shuffle(&mut kinds);
    let n = o.nodes.max(1);
    let lease = o.timing.lease_ms;
    let bound = lease + o.timing.margin_ms;
    let mut rounds = Vec::new();
    let mut made = 0usize;
    while made < o.faults {
        let want = usize::try_from(r.range(1, 3))
            .unwrap_or(1)
            .min(o.faults - made);
        let mut faults = Vec::with_capacity(want);
        for _ in 0..want {
            let kind = if made < kinds.len() {
                kinds[made]
            } else {
                pool[r.index(pool.len())]
            };
            made += 1;
            let node = r.index(n);
            let mut group = vec![node];
            if n > 2 {
                // A group of up to half the nodes.
                let size = usize::try_from(r.range(1, (n / 2) as u64)).unwrap_or(1);
                while group.len() < size {
                    let g = r.index(n);
                    if !group.contains(&g) {
                        group.push(g);
                    }
                }
                group.sort_unstable();
            }
            let addr = r.index(o.ips + o.extras);
            let target = match kind {
                Kind::StopDaemonShort | Kind::StopDaemonLong => r.index(Daemon::ALL.len()),
                Kind::Ban => usize::try_from(r.range(1, 3)).unwrap_or(1),
                _ => r.index(n),
            };
            let start_ms = r.range(0, 1000);
            let hold_ms = match kind {
                Kind::KillMasterd => 1000 + r.range(0, 2000),
                Kind::KillNode => r.range(500, 3000),
                Kind::StopDaemonShort | Kind::StopNodeShort => (lease / 2).max(1),
                Kind::StopDaemonLong | Kind::StopNodeLong => {
                    r.range(2 * bound, 6 * bound).max(r.range(100, 400))
                }
                Kind::LinkPublic | Kind::LinkCluster => r.range(200, 3000),
                Kind::PartitionFull | Kind::PartitionOneWay => r.range(300, 4000),
                Kind::Disable => r.range(500, 3000),
                Kind::HookSlow | Kind::HookHang => r.range(1000, 4000),
                _ => 0,
            };
            faults.push(Fault {
                kind,
                node,
                group,
                addr,
                target,
                start_ms,
                hold_ms,
            });
        }
        rounds.push(Round { faults });
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seed: u64, faults: usize) -> PlanOptions {
        PlanOptions {
            seed,
            nodes: 4,
            ips: 6,
            extras: 2,
            faults,
            timing: Timing::DEFAULT,
            only: Vec::new(),
        }
    }

    #[test]
    fn same_seed_same_plan_other_seed_other_plan() {
        assert_eq!(plan(&opts(5, 60)), plan(&opts(5, 60)));
        assert_ne!(plan(&opts(5, 60)), plan(&opts(6, 60)));
    }

    #[test]
    fn exactly_the_faults_asked_and_every_kind_early() {
        for seed in 0..20 {
            let p = plan(&opts(seed, 40));
            let all: Vec<&Fault> = p.iter().flat_map(|r| &r.faults).collect();
            assert_eq!(all.len(), 40);
            for k in Kind::ALL {
                assert!(
                    all.iter().any(|f| f.kind == k),
                    "seed {seed}: {k:?} missing"
                );
            }
            assert!(p.iter().all(|r| (1..=3).contains(&r.faults.len())));
        }
    }

    #[test]
    fn nodes_groups_and_durations_are_in_range() {
        let p = plan(&opts(11, 500));
        for f in p.iter().flat_map(|r| &r.faults) {
            assert!(f.node < 4 && f.group.contains(&f.node));
            assert!(f.group.len() <= 2 && f.group.iter().all(|g| *g < 4));
            assert!(f.addr < 8 && f.start_ms <= 1000);
            match f.kind {
                Kind::StopNodeShort | Kind::StopDaemonShort => {
                    assert!(f.hold_ms < Timing::DEFAULT.lease_ms)
                }
                Kind::StopNodeLong | Kind::StopDaemonLong => {
                    assert!(f.hold_ms > Timing::DEFAULT.lease_ms + Timing::DEFAULT.margin_ms)
                }
                _ => {}
            }
        }
        // Fast profile: long stops still exceed its lease and margin.
        let mut o = opts(11, 200);
        o.timing = Timing::FAST;
        for f in plan(&o).iter().flat_map(|r| &r.faults) {
            if f.kind == Kind::StopNodeShort {
                assert_eq!(f.hold_ms, 15);
            }
            if f.kind == Kind::StopNodeLong {
                assert!(f.hold_ms >= 80);
            }
        }
    }

    #[test]
    fn a_kind_filter_keeps_only_those_kinds() {
        let mut o = opts(3, 30);
        o.only = kinds_named(&["kill_masterd".into(), "admin_moveip".into()]).unwrap();
        let kinds: Vec<Kind> = plan(&o)
            .iter()
            .flat_map(|r| &r.faults)
            .map(|f| f.kind)
            .collect();
        assert_eq!(kinds.len(), 30);
        assert!(kinds
            .iter()
            .all(|k| matches!(k, Kind::KillMasterd | Kind::MoveIp)));
        assert!(kinds.contains(&Kind::KillMasterd) && kinds.contains(&Kind::MoveIp));
        assert!(kinds_named(&["nonsense".into()]).is_err());
    }

    #[test]
    fn kind_names_are_unique() {
        let mut names: Vec<String> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
    }
}
