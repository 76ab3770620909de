//! Replication lag per peer for `STATISTICS` (masterd's metrics,
//! docs/observability.md). An observer of the replication messages the
//! shell receives; it never changes what the engine does.
//!
//! Every node sends, each sync interval, the versions its own views are
//! complete to ([`Msg::Versions`]). This node's copy of a peer's views is
//! **behind** while such a message names a version it does not hold yet
//! (deltas still on the way, or lost and being re-synced); the lag is how
//! long it has been behind, 0 once a `Versions` message finds every view
//! current. Its resolution is the sync interval. The **age** is the time
//! since the last replication message of any kind from the peer: about a
//! sync interval at most while replication flows.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::msg::Msg;
use crate::table::{Pnn, Table, Version};

#[derive(Debug, Clone, Copy, Default)]
struct Peer {
    last_ns: u64,
    behind_since_ns: Option<u64>,
    /// Episodes of being behind that ended.
    caught_up: u64,
}

/// The lag of every peer (see the module docs).
#[derive(Debug, Default)]
pub struct ReplicationLag {
    peers: Mutex<BTreeMap<Pnn, Peer>>,
}

/// Is `table`'s copy of `reporter`'s views behind the `versions` it says
/// they are complete to?
#[must_use]
pub fn behind(table: &Table, reporter: Pnn, versions: &[(IpAddr, Version)]) -> bool {
    versions.iter().any(|(address, v)| {
        table
            .view_info(address.to_canonical(), reporter)
            .map_or(*v > Version::default(), |i| i.complete_to < *v)
    })
}

impl ReplicationLag {
    /// A replication message `msg` from `from` at `now_ns`; `table` is
    /// this node's table before the engine applies it.
    pub fn message(&self, from: Pnn, msg: &Msg, table: &Table, now_ns: u64) {
        let behind_now = match msg {
            Msg::Versions { reporter, versions } if *reporter == from => {
                Some(behind(table, *reporter, versions))
            }
            _ => None,
        };
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let p = peers.entry(from).or_default();
        p.last_ns = now_ns;
        match (behind_now, p.behind_since_ns) {
            (Some(true), None) => p.behind_since_ns = Some(now_ns),
            (Some(false), Some(_)) => {
                p.behind_since_ns = None;
                p.caught_up += 1;
            }
            _ => {}
        }
    }

    /// `peerN_replication_age_ms`, `peerN_replication_lag_ms` (0 when
    /// current) and `peerN_replication_caught_up` (episodes of lag that
    /// ended), as of `now_ns`.
    #[must_use]
    pub fn snapshot(&self, now_ns: u64) -> Vec<(String, u64)> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(peers.len() * 3);
        for (pnn, p) in peers.iter() {
            let ms = |since: u64| now_ns.saturating_sub(since) / 1_000_000;
            out.push((format!("peer{pnn}_replication_age_ms"), ms(p.last_ns)));
            out.push((
                format!("peer{pnn}_replication_lag_ms"),
                p.behind_since_ns.map_or(0, ms),
            ));
            out.push((format!("peer{pnn}_replication_caught_up"), p.caught_up));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn get(s: &[(String, u64)], n: &str) -> Option<u64> {
        s.iter().find(|(k, _)| k == n).map(|(_, v)| *v)
    }

    #[test]
    fn lag_runs_from_the_first_behind_versions_to_the_first_current_one() {
        let table = Table::new(std::time::Duration::from_secs(1));
        let lag = ReplicationLag::default();
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let current = Msg::Versions {
            reporter: 2,
            versions: vec![(a, Version::default())],
        };
        let ahead = Msg::Versions {
            reporter: 2,
            versions: vec![(a, Version::new(1, 5))],
        };
        lag.message(2, &current, &table, 1_000 * MS);
        assert_eq!(
            get(&lag.snapshot(1_500 * MS), "peer2_replication_lag_ms"),
            Some(0)
        );
        assert_eq!(
            get(&lag.snapshot(1_500 * MS), "peer2_replication_age_ms"),
            Some(500)
        );
        lag.message(2, &ahead, &table, 2_000 * MS);
        lag.message(2, &ahead, &table, 2_100 * MS);
        assert_eq!(
            get(&lag.snapshot(2_300 * MS), "peer2_replication_lag_ms"),
            Some(300)
        );
        lag.message(2, &current, &table, 2_400 * MS);
        let s = lag.snapshot(2_500 * MS);
        assert_eq!(get(&s, "peer2_replication_lag_ms"), Some(0));
        assert_eq!(get(&s, "peer2_replication_caught_up"), Some(1));
        assert_eq!(get(&s, "peer2_replication_age_ms"), Some(100));
    }
}
