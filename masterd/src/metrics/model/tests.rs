use std::net::IpAddr;
use std::time::Duration;

use transport::msg::cluster::{Lease, Membership, NodeFlags, NodeInfo};
use transport::msg::conntrack::AddressCount;
use transport::msg::failover::{IpStatus, PublicIp, PublicIps};
use transport::msg::master::{DaemonState, DaemonStatus, MasterStatus, Model};
use transport::proto::control::{PeerInfo, PeerList, Statistics};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn public(pnn: u32, owners: &[(&str, Option<u32>)]) -> PublicIps {
    PublicIps {
        pnn,
        can_host: true,
        ips: owners
            .iter()
            .map(|(a, o)| PublicIp {
                addr: ip(a),
                prefix: 24,
                configured: vec!["eth0".into()],
                available: vec!["eth0".into()],
                active: None,
                owner: *o,
            })
            .collect(),
        ifaces: Vec::new(),
    }
}

fn stats(pairs: &[(&str, u64)]) -> Statistics {
    Statistics {
        counters: pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect(),
    }
}

/// Node 1 of three: node 2 is gone, node 1 leads and hosts .201; .202 is
/// listed by node 2 only and nobody hosts it; failoverd does not answer
/// STATISTICS.
fn snapshot() -> Snapshot {
    let now_ns = 10_000_000_000;
    Snapshot {
        pnn: Some(1),
        master: Some(MasterStatus {
            pid: 7,
            model: Model::MultiProcess,
            ready: true,
            uptime_ms: 5000,
            daemons: vec![
                DaemonStatus {
                    name: "transportd".into(),
                    state: DaemonState::Running,
                    pid: Some(8),
                    restarts: 0,
                    last_exit: None,
                },
                DaemonStatus {
                    name: "failoverd".into(),
                    state: DaemonState::Restarting,
                    pid: None,
                    restarts: 3,
                    last_exit: Some("signal: 9 (SIGKILL)".into()),
                },
            ],
        }),
        statistics: vec![
            (
                "transportd".into(),
                Some(stats(&[
                    ("local_in", 10),
                    ("peer_in", 20),
                    ("delivered", 25),
                    ("forwarded", 5),
                    ("bad_frames", 2),
                    ("clients", 4),
                    ("peer0_frames_in", 7),
                    ("peer0_bytes_in", 700),
                    ("peer0_frames_out", 8),
                    ("peer0_bytes_out", 800),
                    ("service_clusterd_frames_out", 3),
                    ("service_clients_bytes_in", 90),
                ])),
            ),
            ("failoverd".into(), None),
            ("conntrackd".into(), Some(stats(&[("events_sent", 1)]))),
        ],
        peers: Some(PeerList {
            pnn: 1,
            peers: vec![
                PeerInfo {
                    pnn: 0,
                    address: "192.0.2.1:4379".into(),
                    connected: true,
                    since_ms: 61_000,
                },
                PeerInfo {
                    pnn: 2,
                    address: "192.0.2.3:4379".into(),
                    connected: false,
                    since_ms: 500,
                },
            ],
        }),
        membership: Some(Membership {
            generation: 9,
            leader: Some(1),
            nodes: vec![
                NodeInfo {
                    pnn: 0,
                    address: None,
                    flags: NodeFlags::OK,
                },
                NodeInfo {
                    pnn: 1,
                    address: None,
                    flags: NodeFlags::OK,
                },
                NodeInfo {
                    pnn: 2,
                    address: None,
                    flags: NodeFlags::DISCONNECTED.union(NodeFlags::BANNED),
                },
            ],
            this_node: 1,
            lease_ok: true,
            reassignable: vec![2],
            lease: Lease {
                at_ns: now_ns,
                expires_ns: now_ns + 1_500_000_000,
                since_ns: 1,
            },
        }),
        public_ips: Some(public(
            1,
            &[("192.0.2.201", Some(1)), ("192.0.2.203", Some(0))],
        )),
        peer_public_ips: vec![public(
            0,
            &[("192.0.2.202", None), ("192.0.2.203", Some(0))],
        )],
        ip_status: Some(IpStatus {
            pnn: 1,
            lease_ok: true,
            hosted: vec![ip("192.0.2.201")],
            missing: Vec::new(),
            unexpected: Vec::new(),
            hook_failures: Vec::new(),
        }),
        connection_counts: Some(vec![AddressCount {
            address: ip("192.0.2.201"),
            connections: 12,
        }]),
        now_ns,
        gather_time: Duration::from_millis(3),
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

fn has(text: &str, line: &str) {
    assert!(lines(text).contains(&line), "missing {line:?} in:\n{text}");
}

#[test]
fn snapshot_maps_to_the_documented_series() {
    let text = encode(&snapshot(), &Tracker::new()).unwrap();
    for line in [
        "ipfailover_node_info{pnn=\"1\"} 1",
        "ipfailover_daemon_up{daemon=\"masterd\"} 1",
        "ipfailover_daemon_up{daemon=\"transportd\"} 1",
        "ipfailover_daemon_up{daemon=\"failoverd\"} 0",
        "ipfailover_daemon_statistic{daemon=\"transportd\",name=\"clients\"} 4",
        "ipfailover_daemon_restarts_total{daemon=\"failoverd\"} 3",
        "ipfailover_daemon_running{daemon=\"failoverd\"} 0",
        "ipfailover_daemon_running{daemon=\"transportd\"} 1",
        "ipfailover_masterd_ready 1",
        "ipfailover_leader 1",
        "ipfailover_leader_pnn 1",
        "ipfailover_membership_generation 9",
        "ipfailover_lease_valid 1",
        "ipfailover_lease_remaining_seconds 1.5",
        "ipfailover_node_flags{node=\"2\"} 9",
        "ipfailover_node_flag{flag=\"banned\",node=\"2\"} 1",
        "ipfailover_node_flag{flag=\"disconnected\",node=\"2\"} 1",
        "ipfailover_node_flag{flag=\"stopped\",node=\"2\"} 0",
        "ipfailover_node_flag{flag=\"banned\",node=\"0\"} 0",
        "ipfailover_address_hosted{address=\"192.0.2.201\"} 1",
        "ipfailover_address_hosted{address=\"192.0.2.203\"} 0",
        "ipfailover_address_owner{address=\"192.0.2.203\"} 0",
        "ipfailover_addresses_hosted 1",
        "ipfailover_public_addresses 2",
        "ipfailover_addresses_unhosted 1",
        "ipfailover_address_lists_answered 2",
        "ipfailover_tracked_connections{address=\"192.0.2.201\"} 12",
        "ipfailover_transport_peer_connected{peer=\"0\"} 1",
        "ipfailover_transport_peer_connected{peer=\"2\"} 0",
        "ipfailover_transport_peer_state_age_seconds{peer=\"0\"} 61",
        "ipfailover_transport_frames_total{direction=\"peer_in\"} 20",
        "ipfailover_transport_errors_total{kind=\"bad_frames\"} 2",
        "ipfailover_transport_peer_frames_total{direction=\"in\",peer=\"0\"} 7",
        "ipfailover_transport_peer_bytes_total{direction=\"out\",peer=\"0\"} 800",
        "ipfailover_transport_service_frames_total{direction=\"out\",service=\"clusterd\"} 3",
        "ipfailover_transport_service_bytes_total{direction=\"in\",service=\"clients\"} 90",
        "ipfailover_takeover_runs_total 0",
        "ipfailover_takeover_run_duration_seconds_count 0",
    ] {
        has(&text, line);
    }
    // Every family has help and a type, and counters end in _total.
    assert!(text.contains("# TYPE ipfailover_takeover_runs_total counter"));
    assert!(text.contains("# TYPE ipfailover_takeover_run_duration_seconds histogram"));
    assert!(text.contains("# HELP ipfailover_addresses_unhosted "));
    assert!(text.starts_with("# HELP "), "{text}");
}

/// failoverd's counters (failoverd/src/counters.rs) in their metrics.
fn failoverd_stats() -> Statistics {
    stats(&[
        ("requests_sent", 5),
        ("takes", 3),
        ("take_failures", 1),
        ("releases", 2),
        ("release_failures", 0),
        ("announcements_sent", 12),
        ("tickles_sent", 4),
        ("resets_sent", 6),
        ("hook_runs", 7),
        ("hook_failures", 1),
        ("takeover_runs_led", 9),
        ("takeover_runs_failed", 2),
        ("take_us_le_1000", 1),
        ("take_us_le_10000", 2),
        ("take_us_sum", 7_500),
        ("take_count", 2),
        ("release_us_le_1000", 0),
        ("release_us_sum", 2_000_000),
        ("release_count", 1),
    ])
}

#[test]
fn failoverd_counters_become_counters_and_histograms() {
    let mut snap = snapshot();
    snap.statistics[1].1 = Some(failoverd_stats());
    let text = encode(&snap, &Tracker::new()).unwrap();
    for line in [
        "ipfailover_daemon_up{daemon=\"failoverd\"} 1",
        "ipfailover_announcements_sent_total 12",
        "ipfailover_tickles_sent_total 4",
        "ipfailover_resets_sent_total 6",
        "ipfailover_hook_runs_total 7",
        "ipfailover_hook_script_failures_total 1",
        "ipfailover_takeover_runs_led_total 9",
        "ipfailover_takeover_run_failures_total 2",
        "ipfailover_address_takes_total{result=\"ok\"} 3",
        "ipfailover_address_takes_total{result=\"failed\"} 1",
        "ipfailover_address_releases_total{result=\"ok\"} 2",
        "ipfailover_address_take_duration_seconds_bucket{le=\"0.001\"} 1",
        "ipfailover_address_take_duration_seconds_bucket{le=\"0.01\"} 2",
        "ipfailover_address_take_duration_seconds_bucket{le=\"+Inf\"} 2",
        "ipfailover_address_take_duration_seconds_sum 0.0075",
        "ipfailover_address_take_duration_seconds_count 2",
        "ipfailover_address_release_duration_seconds_bucket{le=\"+Inf\"} 1",
        "ipfailover_address_release_duration_seconds_sum 2",
        "ipfailover_daemon_statistic{daemon=\"failoverd\",name=\"requests_sent\"} 5",
    ] {
        has(&text, line);
    }
    assert!(text.contains("# TYPE ipfailover_address_take_duration_seconds histogram"));
    // Buckets are not repeated as plain statistics; a histogram without
    // its counters (takeover_run here) is left out.
    assert!(!text.contains("take_us_le_"), "{text}");
    assert!(
        !text.contains("ipfailover_takeover_run_led_duration_seconds"),
        "{text}"
    );
}

#[test]
fn nothing_reached_is_still_a_scrape() {
    let snap = Snapshot {
        statistics: vec![("transportd".into(), None), ("clusterd".into(), None)],
        ..Snapshot::default()
    };
    let text = encode(&snap, &Tracker::new()).unwrap();
    has(&text, "ipfailover_daemon_up{daemon=\"masterd\"} 1");
    has(&text, "ipfailover_daemon_up{daemon=\"transportd\"} 0");
    has(&text, "ipfailover_daemon_up{daemon=\"clusterd\"} 0");
    assert!(!text.contains("ipfailover_leader "), "{text}");
    assert!(text.contains("ipfailover_build_info{"), "{text}");
}

#[test]
fn traffic_counters_are_recognised_and_nothing_else() {
    assert_eq!(
        traffic_counter("peer12_bytes_out"),
        Some((Traffic::Peer("12"), "bytes", "out"))
    );
    assert_eq!(
        traffic_counter("service_failoverd_frames_in"),
        Some((Traffic::Service("failoverd"), "frames", "in"))
    );
    for other in [
        "peer_in",
        "peers_connected",
        "peerx_frames_in",
        "peer1_frames_sideways",
        "local_in",
        "service__frames_in",
        "handshake_failures",
    ] {
        assert_eq!(traffic_counter(other), None, "{other}");
    }
    let text = encode(&snapshot(), &Tracker::new()).unwrap();
    assert!(!text.contains("name=\"peer0_frames_in\""), "{text}");
}

#[test]
fn unhosted_needs_no_owner_in_any_answer() {
    let a = public(0, &[("192.0.2.201", None), ("192.0.2.202", None)]);
    let b = public(1, &[("192.0.2.201", Some(1)), ("2001:db8::1", None)]);
    let got: Vec<String> = unhosted(&[&a, &b])
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, ["192.0.2.202", "2001:db8::1"]);
    assert!(unhosted(&[]).is_empty());
}

#[test]
fn a_run_after_a_membership_change_is_timed() {
    let mut t = Tracker::new();
    let s = Duration::from_secs;
    t.membership(4, s(1)); // baseline: not a change
    t.run_ended(4, s(2)); // a run without a change seen (moveip): counted, not timed
    assert_eq!(t.runs.get(), 1);
    assert_eq!(t.run_duration.get_sample_count(), 0);
    assert_eq!(t.membership_changes.get(), 0);
    t.membership(5, s(10));
    t.membership(5, s(11)); // the periodic repeat changes nothing
    t.membership(6, s(12)); // a second change before the run: timed from the first
    t.run_ended(5, Duration::from_millis(12_400)); // an older run: not the one
    assert_eq!(t.run_duration.get_sample_count(), 0);
    t.run_ended(6, Duration::from_millis(12_500));
    assert_eq!(t.runs.get(), 3);
    assert_eq!(t.membership_changes.get(), 2);
    assert_eq!(t.run_duration.get_sample_count(), 1);
    assert!((t.run_duration.get_sample_sum() - 2.5).abs() < 1e-9);
    let text = encode(&Snapshot::default(), &t).unwrap();
    has(&text, "ipfailover_takeover_runs_total 3");
    has(
        &text,
        "ipfailover_takeover_run_duration_seconds_bucket{le=\"2.5\"} 1",
    );
    has(
        &text,
        "ipfailover_takeover_run_duration_seconds_bucket{le=\"1\"} 0",
    );
    has(&text, "ipfailover_membership_changes_total 2");
}

#[test]
fn lease_flaps_and_moved_addresses_are_counted() {
    let mut t = Tracker::new();
    let valid = Lease {
        at_ns: 100,
        expires_ns: 1000,
        since_ns: 50,
    };
    let gone = Lease::default();
    t.lease(&gone, 200); // starting without a lease is no flap
    t.lease(&valid, 200);
    t.lease(&valid, 300);
    t.lease(&gone, 400);
    t.lease(&valid, 500);
    t.lease(&valid, 2000); // ran out without news: a flap too
    assert_eq!(t.lease_flaps.get(), 2);
    t.hosted(&[ip("192.0.2.201")]); // baseline
    t.hosted(&[ip("192.0.2.201"), ip("192.0.2.202"), ip("192.0.2.203")]);
    t.hosted(&[ip("192.0.2.203")]);
    assert_eq!(t.taken.get(), 2);
    assert_eq!(t.released.get(), 2);
}

#[test]
fn every_metric_is_documented() {
    let doc = include_str!("../../../../docs/observability.md");
    let mut t = Tracker::new();
    t.membership(1, Duration::ZERO);
    let mut snap = snapshot();
    let mut f = failoverd_stats();
    f.counters.push(("takeover_run_us_le_1000".into(), 0));
    f.counters.push(("takeover_run_us_sum".into(), 0));
    f.counters.push(("takeover_run_count".into(), 0));
    snap.statistics[1].1 = Some(f);
    // clusterd's and conntrackd's per-peer statistics (metrics/peers.rs).
    let mut per_peer = vec![
        ("peer0_heartbeats_received".to_string(), 9),
        ("peer0_heartbeats_missed".to_string(), 1),
        ("peer0_heartbeat_silence_ms".to_string(), 50),
        ("peer0_heartbeat_rtt_us_le_1000".to_string(), 3),
        ("peer0_heartbeat_rtt_us_sum".to_string(), 900),
        ("peer0_heartbeat_rtt_count".to_string(), 3),
    ];
    snap.statistics.push((
        "clusterd".into(),
        Some(Statistics {
            counters: per_peer.clone(),
        }),
    ));
    per_peer.clear();
    for what in [
        "replication_lag_ms",
        "replication_age_ms",
        "replication_caught_up",
    ] {
        per_peer.push((format!("peer0_{what}"), 1));
    }
    snap.statistics[2].1 = Some(Statistics { counters: per_peer });
    let text = encode(&snap, &t).unwrap();
    for name in [
        "ipfailover_heartbeat_round_trip_seconds",
        "ipfailover_heartbeats_missed_total",
        "ipfailover_conntrack_replication_lag_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
    }
    assert!(!text.contains("name=\"peer0_heartbeats_missed\""), "{text}");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not in docs/observability.md"
            );
        }
    }
}
