//! Allocation of public IPs to nodes, with CTDB's three algorithms and their
//! exact results: LCP2 (the default), deterministic and non-deterministic.
//!
//! This crate owns the *decision* only (failoverd runs it in its takeover
//! runs, re-exported as `failoverd::alloc`; `ipfailover ipalloc` runs it
//! too, without linking failoverd). It is pure: no I/O, no clock, no
//! logging. The caller gathers the inputs (node flags and run states, and for
//! each public address its current owner and the nodes that know it) and gets
//! back, for every address, the node that should host it, or `None` when no
//! node can.
//!
//! Invariants (tested):
//! * An address is given only to a node that can host it: the node knows the
//!   address, its run state is RUNNING and it has no INACTIVE or DISABLED
//!   flag ([`NodeState::can_host`]).
//! * With `NoIPTakeover`, no node gains an address it did not hold.
//! * The result lists every input address once, in CTDB's order: descending
//!   128-bit address key, where an IPv4 address is `{0,0,0,addr}` and an IPv6
//!   address its four big-endian words (so IPv6 comes before IPv4).
//! * The result equals the straightforward transcription of CTDB's
//!   definitions kept in [`reference`], on every input (property tested);
//!   this crate only computes it faster (see `lcp2.rs`).
//!
//! CTDB compatibility notes: an address's current owner only counts if that
//! node knows the address (CTDB trusts only a node's claim about itself);
//! uint32 wrap-around in the LCP2 metric is reproduced; ties break as in CTDB
//! (first address in list order, then lowest PNN); the failback sort is
//! stable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

mod basic;
pub mod ctdb_input;
mod lcp2;
pub mod reference;

/// A node number (CTDB's PNN): the node's index in the nodes file.
pub use config::nodes::Pnn;

/// CTDB node flags (`ctdb/protocol/protocol.h`), as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NodeFlags(pub u32);

impl NodeFlags {
    /// The node is not connected to the cluster.
    pub const DISCONNECTED: u32 = 0x01;
    /// The node's monitor event failed.
    pub const UNHEALTHY: u32 = 0x02;
    /// The administrator disabled the node.
    pub const PERMANENTLY_DISABLED: u32 = 0x04;
    /// The node is banned.
    pub const BANNED: u32 = 0x08;
    /// The node is a deleted placeholder in the nodes file.
    pub const DELETED: u32 = 0x10;
    /// The administrator stopped the node.
    pub const STOPPED: u32 = 0x20;
    /// UNHEALTHY | PERMANENTLY_DISABLED.
    pub const DISABLED: u32 = Self::UNHEALTHY | Self::PERMANENTLY_DISABLED;
    /// DELETED | DISCONNECTED | BANNED | STOPPED.
    pub const INACTIVE: u32 = Self::DELETED | Self::DISCONNECTED | Self::BANNED | Self::STOPPED;

    /// True when no INACTIVE or DISABLED bit is set, so the node may host IPs.
    pub fn allows_hosting(self) -> bool {
        self.0 & (Self::INACTIVE | Self::DISABLED) == 0
    }
}

/// CTDB's daemon run state (`enum ctdb_runstate`). Only a RUNNING node
/// reports its addresses as available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RunState {
    /// 0.
    Unknown,
    /// 1.
    Init,
    /// 2.
    Setup,
    /// 3.
    FirstRecovery,
    /// 4.
    Startup,
    /// 5: the only state in which a node can host IPs.
    #[default]
    Running,
    /// 6.
    Shutdown,
    /// A value CTDB does not define.
    Other(u32),
}

impl RunState {
    /// The run state with CTDB's number.
    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::Init,
            2 => Self::Setup,
            3 => Self::FirstRecovery,
            4 => Self::Startup,
            5 => Self::Running,
            6 => Self::Shutdown,
            other => Self::Other(other),
        }
    }
}

/// What the allocator needs to know about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeState {
    /// CTDB node flags.
    pub flags: NodeFlags,
    /// Run state.
    pub runstate: RunState,
}

impl NodeState {
    /// A healthy, running node.
    pub fn healthy() -> Self {
        Self::default()
    }

    /// A running node with these flags.
    pub fn with_flags(flags: u32) -> Self {
        Self {
            flags: NodeFlags(flags),
            runstate: RunState::Running,
        }
    }

    /// True when the node may host the addresses it knows.
    pub fn can_host(&self) -> bool {
        self.runstate == RunState::Running && self.flags.allows_hosting()
    }
}

/// Which nodes know (have configured) an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownOn {
    /// Every node.
    All,
    /// Only these nodes.
    Nodes(BTreeSet<Pnn>),
}

/// One public address as input to the allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpEntry {
    /// The address.
    pub addr: IpAddr,
    /// The node that currently hosts it, by its own report. It is ignored
    /// unless that node knows the address (as CTDB does).
    pub owner: Option<Pnn>,
    /// The nodes that have the address in their public_addresses file.
    pub known_on: KnownOn,
}

/// The allocation algorithm (CTDB tunable `IPAllocAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// 0: address `i` (in list order) goes to node `i % nodes`.
    Deterministic,
    /// 1: fewest-addresses-first with a count-based failback.
    NonDeterministic,
    /// 2 (default): least common prefix squared.
    #[default]
    Lcp2,
}

impl Algorithm {
    /// CTDB's `determine_algorithm`: 0 det, 1 nondet, anything else LCP2.
    pub fn from_tunable(v: u32) -> Self {
        match v {
            0 => Self::Deterministic,
            1 => Self::NonDeterministic,
            _ => Self::Lcp2,
        }
    }

    /// The name used on the command line (`det`, `nondet`, `lcp2`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Deterministic => "det",
            Self::NonDeterministic => "nondet",
            Self::Lcp2 => "lcp2",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = AllocError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lcp2" => Ok(Self::Lcp2),
            "det" | "deterministic" => Ok(Self::Deterministic),
            "nondet" | "nondeterministic" => Ok(Self::NonDeterministic),
            other => Err(AllocError::UnknownAlgorithm(other.to_string())),
        }
    }
}

/// The tunables that steer allocation, with CTDB's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tunables {
    /// `NoIPFailback` (default 0): never move an address that has a healthy
    /// holder just to rebalance (LCP2 and nondet skip their failback step;
    /// det ignores it, as CTDB does).
    pub no_ip_failback: bool,
    /// `NoIPTakeover` (default 0): no node gains an address; holders keep
    /// theirs, and addresses of nodes that cannot host them become unassigned.
    pub no_ip_takeover: bool,
    /// `IPAllocAlgorithm` (default 2 = LCP2).
    pub algorithm: Algorithm,
}

impl Tunables {
    /// The tunable names [`Tunables::set`] accepts.
    pub const NAMES: &'static [&'static str] = &[
        "NoIPFailback",
        "NoIPTakeover",
        "IPAllocAlgorithm",
        "NoIPHostOnAllDisabled",
    ];

    /// Sets a tunable by its CTDB name (case-insensitive, as CTDB matches
    /// them). `NoIPHostOnAllDisabled` is obsolete in CTDB and accepted but
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`AllocError::UnknownTunable`] for any other name.
    pub fn set(&mut self, name: &str, value: u32) -> Result<(), AllocError> {
        if name.eq_ignore_ascii_case("NoIPFailback") {
            self.no_ip_failback = value != 0;
        } else if name.eq_ignore_ascii_case("NoIPTakeover") {
            self.no_ip_takeover = value != 0;
        } else if name.eq_ignore_ascii_case("IPAllocAlgorithm") {
            self.algorithm = Algorithm::from_tunable(value);
        } else if name.eq_ignore_ascii_case("NoIPHostOnAllDisabled") {
            // Obsolete in CTDB 4.17 and master: accepted, no effect.
        } else {
            return Err(AllocError::UnknownTunable(name.to_string()));
        }
        Ok(())
    }
}

/// What [`Tunables::set_checked`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunableSet {
    /// The value is in effect.
    Set,
    /// An obsolete CTDB tunable: accepted, no effect (CTDB says "Setting
    /// obsolete tunable variable").
    Obsolete,
}

impl Tunables {
    /// CTDB's obsolete IP tunables, accepted by [`Tunables::set_checked`]
    /// with no effect and listed by nobody (CTDB lists none of them).
    pub const OBSOLETE: &'static [&'static str] = &[
        "DeterministicIPs",
        "LCP2PublicIPs",
        "DisableIPFailover",
        "NoIPHostOnAllDisabled",
    ];

    /// The tunables and their values, in CTDB's `listvars` order.
    #[must_use]
    pub fn list(&self) -> [(&'static str, u32); 3] {
        let algorithm = match self.algorithm {
            Algorithm::Deterministic => 0,
            Algorithm::NonDeterministic => 1,
            Algorithm::Lcp2 => 2,
        };
        [
            ("NoIPFailback", u32::from(self.no_ip_failback)),
            ("NoIPTakeover", u32::from(self.no_ip_takeover)),
            ("IPAllocAlgorithm", algorithm),
        ]
    }

    /// Sets a tunable at run time with the configuration file's ranges
    /// (`NoIPFailback` and `NoIPTakeover` 0 or 1, `IPAllocAlgorithm` 0-2),
    /// so a value the file would refuse is not accepted here either.
    ///
    /// # Errors
    ///
    /// A name that is not a tunable (`No such tunable NAME`), a value out
    /// of range (named).
    pub fn set_checked(&mut self, name: &str, value: u32) -> Result<TunableSet, String> {
        if Self::OBSOLETE.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            return Ok(TunableSet::Obsolete);
        }
        let Some((canonical, _)) = self
            .list()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            return Err(format!("No such tunable {name}"));
        };
        let max = if canonical == "IPAllocAlgorithm" {
            2
        } else {
            1
        };
        if value > max {
            return Err(format!(
                "Invalid value {value} for {canonical}: it must be 0-{max}"
            ));
        }
        self.set(canonical, value).map_err(|e| e.to_string())?;
        Ok(TunableSet::Set)
    }
}

/// Everything one allocation run needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllocInput {
    /// The nodes; the PNN is the index.
    pub nodes: Vec<NodeState>,
    /// The public addresses, in any order.
    pub ips: Vec<IpEntry>,
    /// Allocation tunables.
    pub tunables: Tunables,
    /// Nodes that LCP2 may move addresses to even though they hold some
    /// (CTDB's force-rebalance list, sent by `addip`/`reloadips`).
    pub force_rebalance: Vec<Pnn>,
    /// Deterministic algorithm only: fixed home node per address (CTDB
    /// master's `home_nodes` file). Other algorithms ignore it.
    pub home_nodes: BTreeMap<IpAddr, Pnn>,
}

/// One line of the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Assignment {
    /// The address.
    pub addr: IpAddr,
    /// The node that should host it, or `None` if no node can.
    pub pnn: Option<Pnn>,
}

impl fmt::Display for Assignment {
    /// CTDB's planner output: `ADDRESS PNN`, with `-1` for none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pnn {
            Some(p) => write!(f, "{} {}", self.addr, p),
            None => write!(f, "{} -1", self.addr),
        }
    }
}

/// Why an allocation input is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The same address appears twice in the input.
    #[error("address {0} is listed more than once")]
    DuplicateAddress(IpAddr),
    /// A PNN refers to no node.
    #[error("address {addr}: {what} {pnn} is not a node (there are {nodes} nodes)")]
    NoSuchNode {
        /// The address whose entry is wrong.
        addr: IpAddr,
        /// Which field: "current owner", "known-on node", "home node".
        what: &'static str,
        /// The bad PNN.
        pnn: Pnn,
        /// How many nodes there are.
        nodes: usize,
    },
    /// A force-rebalance PNN refers to no node.
    #[error("force-rebalance node {pnn} is not a node (there are {nodes} nodes)")]
    NoSuchRebalanceNode {
        /// The bad PNN.
        pnn: Pnn,
        /// How many nodes there are.
        nodes: usize,
    },
    /// Unknown algorithm name.
    #[error("unknown allocation algorithm '{0}' (expected lcp2, det or nondet)")]
    UnknownAlgorithm(String),
    /// Unknown tunable name.
    #[error("unknown tunable '{0}' (known: NoIPFailback, NoIPTakeover, IPAllocAlgorithm, NoIPHostOnAllDisabled)")]
    UnknownTunable(String),
}

/// Merges every node's own view into allocation entries, as CTDB's
/// `create_merged_ip_list` does: `views[n]` is what node `n` reports, each
/// known address with the holder it believes in. An address is known on the
/// nodes that list it; its owner is taken only from a node that claims to
/// hold it itself (`Some(n)` in `views[n]`), the last such claim in PNN order
/// winning. A node listing an address twice counts once.
pub fn merge_views(views: &[Vec<(IpAddr, Option<Pnn>)>]) -> Vec<IpEntry> {
    let mut index: std::collections::HashMap<IpAddr, usize> = std::collections::HashMap::new();
    let mut out: Vec<IpEntry> = Vec::new();
    for (n, view) in views.iter().enumerate() {
        let Ok(me) = Pnn::try_from(n) else {
            break; // More nodes than PNNs: cannot happen with real node lists.
        };
        for &(addr, claim) in view {
            let i = *index.entry(addr).or_insert_with(|| {
                out.push(IpEntry {
                    addr,
                    owner: None,
                    known_on: KnownOn::Nodes(BTreeSet::new()),
                });
                out.len() - 1
            });
            if let KnownOn::Nodes(set) = &mut out[i].known_on {
                set.insert(me);
            }
            if claim == Some(me) {
                out[i].owner = Some(me);
            }
        }
    }
    out
}

/// Marks "no node" in the internal owner vectors (CTDB_UNKNOWN_PNN).
pub(crate) const NONE: u32 = u32::MAX;

/// The 128-bit key CTDB sorts and measures addresses by.
pub fn ip_key(addr: &IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [0, 0, 0, u32::from(*a)],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// CTDB's LCP2 distance: for each of the 4 key words, 32 if equal, else the
/// leading zeros of their XOR. All four words count (CTDB does not stop at
/// the first differing word). Between 0 and 128.
pub fn ip_distance(a: &[u32; 4], b: &[u32; 4]) -> u32 {
    (a[0] ^ b[0]).leading_zeros()
        + (a[1] ^ b[1]).leading_zeros()
        + (a[2] ^ b[2]).leading_zeros()
        + (a[3] ^ b[3]).leading_zeros()
}

/// The input after validation, sorted in CTDB's order, with flat per-address
/// availability. Shared by the fast algorithms and the reference.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Addresses in CTDB list order (descending key).
    pub addrs: Vec<IpAddr>,
    /// Their keys.
    pub keys: Vec<[u32; 4]>,
    /// Number of nodes.
    pub nodes: usize,
    /// `avail[i * nodes + n]`: node n can host address i.
    pub avail: Vec<bool>,
    /// Current owner per address after the merge rule (owner must know it),
    /// or NONE.
    pub owner: Vec<u32>,
    /// Deterministic home node per address, or NONE.
    pub home: Vec<u32>,
    /// Force-rebalance nodes.
    pub force_rebalance: Vec<usize>,
    /// Tunables.
    pub tunables: Tunables,
    /// Test hook: make LCP2 take its rebuild path (normally used only above
    /// 2¹⁸ addresses, where a dsum could wrap).
    pub lcp2_rebuild_only: bool,
}

impl Prepared {
    pub fn new(input: &AllocInput) -> Result<Self, AllocError> {
        let nodes = input.nodes.len();
        let pnn_ok = |p: Pnn| usize::try_from(p).is_ok_and(|p| p < nodes);
        let mut order: Vec<usize> = (0..input.ips.len()).collect();
        let keyed: Vec<([u32; 4], bool)> = input
            .ips
            .iter()
            .map(|e| (ip_key(&e.addr), e.addr.is_ipv6()))
            .collect();
        // Descending key; on an equal key (only `::a.b.c.d` vs `a.b.c.d`),
        // IPv6 first.
        order.sort_by(|&a, &b| keyed[b].cmp(&keyed[a]));
        // Equal addresses have equal sort keys, so they are now adjacent.
        if let Some(w) = order
            .windows(2)
            .find(|w| input.ips[w[0]].addr == input.ips[w[1]].addr)
        {
            return Err(AllocError::DuplicateAddress(input.ips[w[0]].addr));
        }
        let mut addrs = Vec::with_capacity(order.len());
        let mut keys = Vec::with_capacity(order.len());
        let mut avail = vec![false; order.len() * nodes];
        let mut owner = vec![NONE; order.len()];
        let mut home = vec![NONE; order.len()];
        for (i, &src) in order.iter().enumerate() {
            let e = &input.ips[src];
            addrs.push(e.addr);
            keys.push(keyed[src].0);
            let known = |n: usize| match &e.known_on {
                KnownOn::All => true,
                KnownOn::Nodes(set) => u32::try_from(n).is_ok_and(|p| set.contains(&p)),
            };
            if let KnownOn::Nodes(set) = &e.known_on {
                if let Some(&bad) = set.iter().find(|&&p| !pnn_ok(p)) {
                    return Err(AllocError::NoSuchNode {
                        addr: e.addr,
                        what: "known-on node",
                        pnn: bad,
                        nodes,
                    });
                }
            }
            for (n, node) in input.nodes.iter().enumerate() {
                avail[i * nodes + n] = known(n) && node.can_host();
            }
            if let Some(p) = e.owner {
                if !pnn_ok(p) {
                    return Err(AllocError::NoSuchNode {
                        addr: e.addr,
                        what: "current owner",
                        pnn: p,
                        nodes,
                    });
                }
                // CTDB only believes a node about addresses it reports itself.
                if known(p as usize) {
                    owner[i] = p;
                }
            }
            if let Some(&p) = input.home_nodes.get(&e.addr) {
                if !pnn_ok(p) {
                    return Err(AllocError::NoSuchNode {
                        addr: e.addr,
                        what: "home node",
                        pnn: p,
                        nodes,
                    });
                }
                home[i] = p;
            }
        }
        let mut force_rebalance = Vec::new();
        for &p in &input.force_rebalance {
            if !pnn_ok(p) {
                return Err(AllocError::NoSuchRebalanceNode { pnn: p, nodes });
            }
            force_rebalance.push(p as usize);
        }
        Ok(Self {
            addrs,
            keys,
            nodes,
            avail,
            owner,
            home,
            force_rebalance,
            tunables: input.tunables,
            lcp2_rebuild_only: false,
        })
    }

    /// CTDB `can_node_host_ip`.
    pub fn can_host(&self, ip: usize, node: usize) -> bool {
        self.avail[ip * self.nodes + node]
    }

    /// CTDB `can_node_takeover_ip`.
    pub fn can_takeover(&self, ip: usize, node: usize) -> bool {
        !self.tunables.no_ip_takeover && self.avail[ip * self.nodes + node]
    }

    /// CTDB `unassign_unsuitable_ips`, in place.
    pub fn unassign_unsuitable(&self, owner: &mut [u32]) {
        for (i, o) in owner.iter_mut().enumerate() {
            if *o != NONE && !self.can_host(i, *o as usize) {
                *o = NONE;
            }
        }
    }

    pub fn finish(&self, owner: &[u32]) -> Vec<Assignment> {
        self.addrs
            .iter()
            .zip(owner)
            .map(|(&addr, &o)| Assignment {
                addr,
                pnn: (o != NONE).then_some(o),
            })
            .collect()
    }
}

/// A bound on LCP2 failback moves, far above what any real input needs (each
/// move lowers the total imbalance, so CTDB's loop ends by itself unless the
/// uint32 metric wraps around).
pub(crate) fn max_failback_moves(p: &Prepared) -> usize {
    100 * (p.addrs.len() + 1)
}

/// Computes where every public address should live, with the algorithm
/// named in `input.tunables.algorithm`. The result is in CTDB's list order.
///
/// # Errors
///
/// [`AllocError`] when the input is inconsistent: a duplicate address or a
/// PNN that is not a node.
pub fn allocate(input: &AllocInput) -> Result<Vec<Assignment>, AllocError> {
    let p = Prepared::new(input)?;
    let owner = match p.tunables.algorithm {
        Algorithm::Lcp2 => lcp2::run(&p),
        Algorithm::Deterministic => basic::deterministic(&p),
        Algorithm::NonDeterministic => basic::nondeterministic(&p),
    };
    Ok(p.finish(&owner))
}

/// The LCP2 imbalance of every node under `result` (the sum over pairs of
/// addresses on the node of their squared distance, uint32 wrap-around as in
/// CTDB). Useful for reports and tests.
pub fn lcp2_imbalances(nodes: usize, result: &[Assignment]) -> Vec<u32> {
    let mut per_node: Vec<Vec<[u32; 4]>> = vec![Vec::new(); nodes];
    for a in result {
        if let Some(p) = a.pnn {
            if let Some(v) = per_node.get_mut(p as usize) {
                v.push(ip_key(&a.addr));
            }
        }
    }
    per_node
        .iter()
        .map(|keys| {
            let mut s = 0u32;
            for (i, a) in keys.iter().enumerate() {
                for b in &keys[i + 1..] {
                    let d = ip_distance(a, b);
                    s = s.wrapping_add(d * d);
                }
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests;
