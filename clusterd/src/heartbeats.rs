//! Per-peer heartbeat statistics for `STATISTICS` (and so for masterd's
//! metrics and `ipfailover statistics`, docs/observability.md): heartbeats
//! received and missed, the time since the last one, and the round trip
//! of this node's heartbeats as the peers' echoes show it.
//!
//! An observer of the peer messages the frame tap decodes
//! (`daemon::peer_tap`): it never changes what the state machine sees.
//!
//! * **Round trip**: a heartbeat echoes the stamp of the newest heartbeat
//!   of ours the peer received (our `CLOCK_MONOTONIC`); when the echo
//!   advances, `now - echo` is one round trip. The peer echoes in its next
//!   heartbeat, so the figure includes the time the peer held ours until
//!   then: the network's round trip plus up to one heartbeat interval.
//! * **Missed**: a gap of `g` between two heartbeats of a peer counts
//!   `floor(g / interval) - 1` missed heartbeats; while the peer is silent
//!   the gap so far counts the same way, so the figure only grows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::nodes::Pnn;

/// Upper bounds of the round-trip buckets, in microseconds (a LAN round
/// trip is under a millisecond; the echo adds up to an interval: 10 ms in
/// the fast profile, 100 ms by default).
pub const RTT_BUCKETS_US: [u64; 12] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000,
];

/// Round trips longer than this are not counted (an echo of a stamp from
/// before a long stall says nothing about the link).
const RTT_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
struct Peer {
    received: u64,
    missed: u64,
    last_rx_ns: Option<u64>,
    last_echo_ns: Option<u64>,
    rtt_buckets: [u64; RTT_BUCKETS_US.len()],
    rtt_sum_us: u64,
    rtt_count: u64,
}

/// The statistics of every peer (see the module docs).
#[derive(Debug)]
pub struct HeartbeatStats {
    interval_ns: u64,
    peers: Mutex<BTreeMap<Pnn, Peer>>,
}

impl HeartbeatStats {
    /// Statistics for heartbeats sent every `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> HeartbeatStats {
        HeartbeatStats {
            interval_ns: u64::try_from(interval.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            peers: Mutex::new(BTreeMap::new()),
        }
    }

    fn missed_in(&self, gap_ns: u64) -> u64 {
        (gap_ns / self.interval_ns).saturating_sub(1)
    }

    /// A heartbeat from `from` arrived at `now_ns`, echoing our stamp
    /// `echo` (our `CLOCK_MONOTONIC`), if any.
    pub fn heartbeat(&self, from: Pnn, echo: Option<Duration>, now_ns: u64) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let p = peers.entry(from).or_default();
        p.received += 1;
        if let Some(last) = p.last_rx_ns {
            p.missed += self.missed_in(now_ns.saturating_sub(last));
        }
        p.last_rx_ns = Some(now_ns);
        let Some(echo) = echo.map(|e| u64::try_from(e.as_nanos()).unwrap_or(u64::MAX)) else {
            return;
        };
        if p.last_echo_ns.is_some_and(|l| echo <= l) || echo > now_ns {
            return;
        }
        p.last_echo_ns = Some(echo);
        let rtt = Duration::from_nanos(now_ns - echo);
        if rtt > RTT_MAX {
            return;
        }
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        for (b, bound) in p.rtt_buckets.iter_mut().zip(RTT_BUCKETS_US) {
            if us <= bound {
                *b += 1;
            }
        }
        p.rtt_sum_us += us;
        p.rtt_count += 1;
    }

    /// The statistics at `now_ns`, as `STATISTICS` names them:
    /// `peerN_heartbeats_received`, `peerN_heartbeats_missed`,
    /// `peerN_heartbeat_silence_ms` (since the last one), and the round
    /// trip as `peerN_heartbeat_rtt_us_le_BOUND` (cumulative),
    /// `peerN_heartbeat_rtt_us_sum`, `peerN_heartbeat_rtt_count`.
    #[must_use]
    pub fn snapshot(&self, now_ns: u64) -> Vec<(String, u64)> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(peers.len() * (RTT_BUCKETS_US.len() + 5));
        let mut name = String::new();
        let mut push = |out: &mut Vec<(String, u64)>, pnn: Pnn, what: &str, v: u64| {
            name.clear();
            let _ = write!(name, "peer{pnn}_{what}");
            out.push((name.clone(), v));
        };
        for (&pnn, p) in peers.iter() {
            let silent = p.last_rx_ns.map(|l| now_ns.saturating_sub(l));
            let pending = silent.map_or(0, |g| self.missed_in(g));
            push(&mut out, pnn, "heartbeats_received", p.received);
            push(&mut out, pnn, "heartbeats_missed", p.missed + pending);
            if let Some(s) = silent {
                push(&mut out, pnn, "heartbeat_silence_ms", s / 1_000_000);
            }
            for (b, bound) in p.rtt_buckets.iter().zip(RTT_BUCKETS_US) {
                push(&mut out, pnn, &format!("heartbeat_rtt_us_le_{bound}"), *b);
            }
            push(&mut out, pnn, "heartbeat_rtt_us_sum", p.rtt_sum_us);
            push(&mut out, pnn, "heartbeat_rtt_count", p.rtt_count);
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
    fn gaps_count_missed_heartbeats_and_never_go_back() {
        let h = HeartbeatStats::new(Duration::from_millis(100));
        h.heartbeat(2, None, 1_000 * MS);
        h.heartbeat(2, None, 1_100 * MS);
        h.heartbeat(2, None, 1_190 * MS); // early: none missed
        let s = h.snapshot(1_200 * MS);
        assert_eq!(get(&s, "peer2_heartbeats_received"), Some(3));
        assert_eq!(get(&s, "peer2_heartbeats_missed"), Some(0));
        assert_eq!(get(&s, "peer2_heartbeat_silence_ms"), Some(10));
        // Silent for 1 s: 9 missed so far, then 10 once the next arrives
        // after 1.05 s.
        let s = h.snapshot(2_190 * MS);
        assert_eq!(get(&s, "peer2_heartbeats_missed"), Some(9));
        h.heartbeat(2, None, 2_240 * MS);
        let s = h.snapshot(2_250 * MS);
        assert_eq!(get(&s, "peer2_heartbeats_missed"), Some(9));
        assert_eq!(get(&s, "peer2_heartbeats_received"), Some(4));
    }

    #[test]
    fn round_trips_come_from_advancing_echoes() {
        let h = HeartbeatStats::new(Duration::from_millis(100));
        let at = |ms: u64| Duration::from_millis(ms);
        h.heartbeat(1, Some(at(1_000)), 1_003 * MS); // 3 ms
        h.heartbeat(1, Some(at(1_000)), 1_103 * MS); // same echo: not again
        h.heartbeat(1, Some(at(1_100)), 1_160 * MS); // 60 ms
        h.heartbeat(1, Some(at(5_000)), 1_200 * MS); // from the future: no
        let s = h.snapshot(1_200 * MS);
        assert_eq!(get(&s, "peer1_heartbeat_rtt_count"), Some(2));
        assert_eq!(get(&s, "peer1_heartbeat_rtt_us_sum"), Some(63_000));
        assert_eq!(get(&s, "peer1_heartbeat_rtt_us_le_2500"), Some(0));
        assert_eq!(get(&s, "peer1_heartbeat_rtt_us_le_5000"), Some(1));
        assert_eq!(get(&s, "peer1_heartbeat_rtt_us_le_100000"), Some(2));
        assert_eq!(get(&s, "peer7_heartbeats_received"), None);
    }
}
