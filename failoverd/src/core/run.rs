//! The pure steps of one takeover run, shared by the daemon's run
//! ([`crate::leader::takeover_run`]) and the simulator: which nodes must
//! report, what may be taken once the releases are in, and how the leader's
//! memory of who holds what follows the acknowledgements.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use transport::msg::cluster::{Membership, NodeFlags, Pnn};

use crate::leader::plan::Plan;

/// The nodes a run asks for their public IPs: connected and not deleted.
#[must_use]
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

/// Splits the connected nodes by whether they answered: `(answered,
/// missing)`. The run may plan only when every missing node is in
/// `unresponsive` (left out by [`crate::core::leader::LeaderCore`]).
#[must_use]
pub fn sort_reports(
    m: &Membership,
    answered: impl IntoIterator<Item = Pnn>,
) -> (BTreeSet<Pnn>, BTreeSet<Pnn>) {
    let answered: BTreeSet<Pnn> = answered.into_iter().collect();
    let missing = connected_nodes(m)
        .into_iter()
        .filter(|p| !answered.contains(p))
        .collect();
    (answered, missing)
}

/// The takes of `plan` that may be sent once the releases are in: only
/// addresses none of whose releases failed (`failed_release`).
#[must_use]
pub fn takes_after_release(
    plan: &Plan,
    failed_release: &BTreeSet<IpAddr>,
) -> BTreeMap<Pnn, Vec<IpAddr>> {
    plan.takes
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
        .collect()
}

/// The memory after the release step: holders of acknowledged releases are
/// forgotten (the takes set the new ones); pinned addresses stay with the
/// node that may hold them.
pub fn forget_released(
    memory: &mut BTreeMap<IpAddr, Pnn>,
    plan: &Plan,
    failed_release: &BTreeSet<IpAddr>,
) {
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
}

/// The memory after `pnn` answered a take of `ips`: `failed` lists the
/// addresses it refused; `None` means no answer — the outcome is unknown,
/// so the node may hold every one of them now.
pub fn record_take(
    memory: &mut BTreeMap<IpAddr, Pnn>,
    pnn: Pnn,
    ips: &[IpAddr],
    failed: Option<&BTreeSet<IpAddr>>,
) {
    for a in ips {
        if failed.is_none_or(|f| !f.contains(a)) {
            memory.insert(*a, pnn);
        }
    }
}

/// Does a successful run of `plan` leave every address some node may host
/// hosted? Not when an address was held back or pinned to a node that
/// cannot answer, or a node was left out.
#[must_use]
pub fn complete(plan: &Plan, unresponsive_missing: bool) -> bool {
    plan.held.is_empty() && plan.pinned.is_empty() && !unresponsive_missing
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    #[test]
    fn a_failed_release_withholds_its_take() {
        let plan = Plan {
            releases: BTreeMap::from([(0, vec![(ip(1), Some(1)), (ip(2), Some(1))])]),
            takes: BTreeMap::from([(1, vec![ip(1), ip(2)]), (2, vec![ip(2)])]),
            ..Plan::default()
        };
        let failed = BTreeSet::from([ip(2)]);
        let takes = takes_after_release(&plan, &failed);
        assert_eq!(takes, BTreeMap::from([(1, vec![ip(1)])]));
        let mut memory = BTreeMap::from([(ip(1), 0), (ip(2), 0)]);
        forget_released(&mut memory, &plan, &failed);
        assert_eq!(memory, BTreeMap::from([(ip(2), 0)]));
    }

    #[test]
    fn an_unanswered_take_is_remembered_as_held() {
        let mut memory = BTreeMap::new();
        record_take(&mut memory, 3, &[ip(1), ip(2)], None);
        assert_eq!(memory, BTreeMap::from([(ip(1), 3), (ip(2), 3)]));
        let refused = BTreeSet::from([ip(2)]);
        let mut memory = BTreeMap::new();
        record_take(&mut memory, 3, &[ip(1), ip(2)], Some(&refused));
        assert_eq!(memory, BTreeMap::from([(ip(1), 3)]));
    }
}
