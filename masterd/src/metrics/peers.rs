//! Per-peer metrics from clusterd's and conntrackd's `STATISTICS`
//! (clusterd/src/heartbeats.rs, conntrackd/src/lag.rs): heartbeats
//! received and missed, silence, round trip, and conntrack replication lag,
//! each with a `peer` label.
//!
//! The daemons name them `peerN_WHAT` (`peer2_heartbeats_missed`,
//! `peer2_heartbeat_rtt_us_le_1000`, `peer1_replication_lag_ms`, ...);
//! [`per_peer`] splits such a name, and [`families`] maps them to metric
//! families. They are left out of `ipfailover_daemon_statistic`.

use std::collections::BTreeMap;

use prometheus::proto;
use transport::proto::control::Statistics;

/// What one `peerN_...` statistic is: `(suffix, metric, type, help, scale)`
/// with the value divided by `scale` (ms → s).
const SCALARS: [(&str, &str, proto::MetricType, &str, f64); 6] = [
    (
        "heartbeats_received",
        "ipfailover_heartbeats_received_total",
        proto::MetricType::COUNTER,
        "Heartbeats this node's clusterd received from the peer.",
        1.0,
    ),
    (
        "heartbeats_missed",
        "ipfailover_heartbeats_missed_total",
        proto::MetricType::COUNTER,
        "Heartbeats of the peer that did not arrive (gaps between heartbeats, and the silence so far, in heartbeat intervals).",
        1.0,
    ),
    (
        "heartbeat_silence_ms",
        "ipfailover_heartbeat_silence_seconds",
        proto::MetricType::GAUGE,
        "Seconds since this node's clusterd last received a heartbeat from the peer.",
        1e3,
    ),
    (
        "replication_lag_ms",
        "ipfailover_conntrack_replication_lag_seconds",
        proto::MetricType::GAUGE,
        "How long this node's copy of the peer's tracked connections has been behind the versions the peer announced (0: current).",
        1e3,
    ),
    (
        "replication_age_ms",
        "ipfailover_conntrack_replication_age_seconds",
        proto::MetricType::GAUGE,
        "Seconds since the last conntrack replication message from the peer (every sync interval while it flows).",
        1e3,
    ),
    (
        "replication_caught_up",
        "ipfailover_conntrack_replication_catchups_total",
        proto::MetricType::COUNTER,
        "Times this node's copy of the peer's tracked connections caught up after being behind.",
        1.0,
    ),
];

/// The heartbeat round-trip histogram's statistic prefix and metric.
const RTT: (&str, &str, &str) = (
    "heartbeat_rtt",
    "ipfailover_heartbeat_round_trip_seconds",
    "From sending a heartbeat to the peer's echo of it: the network round trip plus the time the peer holds it until its next heartbeat (at most one interval).",
);

/// One peer's round-trip statistics: (bucket bound µs, cumulative count),
/// sum µs, count.
type RttParts = (Vec<(u64, u64)>, Option<u64>, Option<u64>);

/// Splits `peerN_REST` into `(N, REST)` when REST is one of the per-peer
/// heartbeat or replication statistics.
#[must_use]
pub fn per_peer(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix("peer")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (pnn, rest) = rest.split_at(digits);
    let rest = rest.strip_prefix('_')?;
    (!pnn.is_empty() && (rest.starts_with("heartbeat") || rest.starts_with("replication_")))
        .then_some((pnn, rest))
}

fn metric_with_peer(pnn: &str) -> proto::Metric {
    let mut label = proto::LabelPair::default();
    label.set_name("peer".to_string());
    label.set_value(pnn.to_string());
    let mut m = proto::Metric::default();
    m.set_label(vec![label]);
    m
}

fn family(
    name: &str,
    help: &str,
    t: proto::MetricType,
    metrics: Vec<proto::Metric>,
) -> proto::MetricFamily {
    let mut f = proto::MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(t);
    f.set_metric(metrics);
    f
}

/// The per-peer families of `stats` (clusterd's and conntrackd's answers
/// together); a family without any peer is left out.
#[must_use]
pub fn families(stats: &[&Statistics]) -> Vec<proto::MetricFamily> {
    let mut scalars: BTreeMap<&str, Vec<proto::Metric>> = BTreeMap::new();
    let mut rtt: BTreeMap<&str, RttParts> = BTreeMap::new();
    for s in stats {
        for (name, v) in &s.counters {
            let Some((pnn, rest)) = per_peer(name) else {
                continue;
            };
            if let Some((_, metric, t, _, scale)) = SCALARS.iter().find(|x| x.0 == rest) {
                let mut m = metric_with_peer(pnn);
                #[allow(clippy::cast_precision_loss)] // counters and ms: exact below 2^53
                let value = *v as f64 / scale;
                if *t == proto::MetricType::COUNTER {
                    let mut c = proto::Counter::default();
                    c.set_value(value);
                    m.set_counter(c);
                } else {
                    let mut g = proto::Gauge::default();
                    g.set_value(value);
                    m.set_gauge(g);
                }
                scalars.entry(metric).or_default().push(m);
                continue;
            }
            let Some(h) = rest.strip_prefix(RTT.0) else {
                continue;
            };
            let e = rtt.entry(pnn).or_default();
            if let Some(bound) = h.strip_prefix("_us_le_").and_then(|b| b.parse().ok()) {
                e.0.push((bound, *v));
            } else if h == "_us_sum" {
                e.1 = Some(*v);
            } else if h == "_count" {
                e.2 = Some(*v);
            }
        }
    }
    let mut out = Vec::new();
    for (_, metric, t, help, _) in SCALARS {
        if let Some(ms) = scalars.remove(metric) {
            out.push(family(metric, help, t, ms));
        }
    }
    let mut hist = Vec::new();
    for (pnn, (mut buckets, sum, count)) in rtt {
        let (Some(sum), Some(count)) = (sum, count) else {
            continue;
        };
        buckets.sort_unstable();
        let mut h = proto::Histogram::default();
        h.set_sample_count(count);
        #[allow(clippy::cast_precision_loss)]
        h.set_sample_sum(sum as f64 / 1e6);
        h.set_bucket(
            buckets
                .into_iter()
                .map(|(bound, n)| {
                    let mut b = proto::Bucket::default();
                    #[allow(clippy::cast_precision_loss)]
                    b.set_upper_bound(bound as f64 / 1e6);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        let mut m = metric_with_peer(pnn);
        m.set_histogram(h);
        hist.push(m);
    }
    if !hist.is_empty() {
        out.push(family(RTT.1, RTT.2, proto::MetricType::HISTOGRAM, hist));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_only_for_peer_statistics() {
        assert_eq!(
            per_peer("peer2_heartbeats_missed"),
            Some(("2", "heartbeats_missed"))
        );
        assert_eq!(
            per_peer("peer13_replication_lag_ms"),
            Some(("13", "replication_lag_ms"))
        );
        assert_eq!(per_peer("peer2_frames_in"), None);
        assert_eq!(per_peer("peer_received"), None);
        assert_eq!(per_peer("peers_connected"), None);
    }

    #[test]
    fn families_carry_the_peer_label() {
        let s = Statistics {
            counters: vec![
                ("peer1_heartbeats_missed".into(), 4),
                ("peer1_heartbeat_silence_ms".into(), 250),
                ("peer1_heartbeat_rtt_us_le_1000".into(), 3),
                ("peer1_heartbeat_rtt_us_le_5000".into(), 5),
                ("peer1_heartbeat_rtt_us_sum".into(), 9_000),
                ("peer1_heartbeat_rtt_count".into(), 5),
                ("peer2_replication_lag_ms".into(), 1500),
            ],
        };
        let fams = families(&[&s]);
        let names: Vec<&str> = fams.iter().map(proto::MetricFamily::name).collect();
        assert_eq!(
            names,
            [
                "ipfailover_heartbeats_missed_total",
                "ipfailover_heartbeat_silence_seconds",
                "ipfailover_conntrack_replication_lag_seconds",
                "ipfailover_heartbeat_round_trip_seconds",
            ]
        );
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&fams, &mut text)
            .unwrap();
        assert!(
            text.contains("ipfailover_heartbeat_silence_seconds{peer=\"1\"} 0.25"),
            "{text}"
        );
        assert!(
            text.contains("ipfailover_conntrack_replication_lag_seconds{peer=\"2\"} 1.5"),
            "{text}"
        );
        assert!(
            text.contains(
                "ipfailover_heartbeat_round_trip_seconds_bucket{peer=\"1\",le=\"0.005\"} 5"
            ),
            "{text}"
        );
        assert!(
            text.contains("ipfailover_heartbeat_round_trip_seconds_count{peer=\"1\"} 5"),
            "{text}"
        );
    }
}
