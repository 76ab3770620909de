//! Fuzzing, as an ordinary test: the frame and every message payload that
//! transportd or a daemon decodes from received bytes (control payloads,
//! `msg::{cluster, failover, conntrack, master}`), the Noise hello and the
//! cluster key file. For each target: the valid seeds, then random bytes and
//! mutations of valid encodings (forged varint counts and lengths,
//! truncations, wrong enum variants, spliced encodings). Checks: no panic,
//! no hang, at most `128 * len + 4096` bytes held at once while decoding an
//! input of `len` bytes, and every valid encoding round-trips
//! (decode -> encode -> decode gives the same value and the same bytes).
//!
//! Short run (CI): `cargo test -p transport --test payload_fuzz`.
//! Long run: `FUZZ_CASES=10000000 cargo test --release -p transport --test
//! payload_fuzz -- --nocapture` (see docs/RELIABILITY.md, "Fuzzing").

mod fuzz;

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};

use fuzz::{run, Counting, Outcome, Rng, Target};
use serde::{de::DeserializeOwned, Serialize};
use transport::msg::cluster::{
    AdminCommand, AdminOp, AdminOutcome, ClusterSettings, Lease, LeaseUpdate, Membership,
    NodeFlags, NodeInfo,
};
use transport::msg::conntrack::{
    AddressCount, ConnectionsPage, GetConnections, GetConnectionsPage, TrackedConnection,
};
use transport::msg::failover::{
    AddIp, ConnectionPair, DelIp, Gratarp, HookFailureInfo, Hosted, IfaceInfo, IpStatus,
    Ipreallocated, KillTcp, MoveIp, PublicIp, PublicIps, ReleaseIps, ReloadSummary, SetIfaceLink,
    StepResult, TakeIps,
};
use transport::msg::failover::{
    HookList, HookScript, HookScriptRun, HookStatus, RunEvent, RunTimes, SetHook, SetTunable,
    SetTunableOutcome, Tunable, TunableList,
};
use transport::msg::master::{DaemonState, DaemonStatus, MasterStatus, Model};
use transport::proto::control::{
    LogLevelReply, LogLevelRequest, PeerInfo, PeerList, PingReply, PingRequest, RegisterReply,
    RegisterRequest, ServiceInfo, ServiceList, Statistics, SubscribeRequest, VersionInfo,
};
use transport::proto::{
    check, decode_payload, encode_payload, Address, Check, ErrorCode, HeaderRepr, Kind, Message,
    RemoteError, HEADER_LEN,
};
use transport::transportd::{key, noise};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Inputs per payload target in the short run (a fixed count: CI is
/// deterministic; `FUZZ_CASES` raises it).
const SHORT: u64 = 30_000;

/// The allocation bound. postcard hands serde a sequence's declared count
/// only when it is at most the bytes left (else no hint), and serde
/// preallocates at most that many elements: a forged count costs at most
/// `size_of::<element>()` bytes per input byte. No element type here is
/// over 128 bytes ([`huge_declared_counts_cost_at_most_the_bound`] checks
/// the largest); the rest is the decoded value and its re-encoding.
fn bound(len: usize) -> usize {
    128 * len + 4096
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

/// Runs one postcard payload type: decode; if valid, re-encode and check
/// the round trip.
fn payload<T>(name: &'static str, values: Vec<T>)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let seeds = values
        .iter()
        .map(|v| encode_payload(v).expect("seed encodes"))
        .collect();
    let mut decode = |b: &[u8]| match decode_payload::<T>(b) {
        Ok(v) => {
            let e = encode_payload(&v).expect("a decoded value encodes");
            let again: T = decode_payload(&e).expect("an encoding decodes");
            assert_eq!(again, v, "{name}: round trip changed the value");
            assert_eq!(
                encode_payload(&again).expect("encodes"),
                e,
                "{name}: encoding is not stable"
            );
            Outcome::Valid
        }
        Err(_) => Outcome::Invalid,
    };
    run(Target {
        name,
        seeds,
        default_cases: SHORT,
        alloc_bound: bound,
        mutate: None,
        decode: &mut decode,
    });
}

#[test]
fn control_payloads() {
    payload(
        "PingRequest",
        vec![
            PingRequest {
                data: vec![1, 2, 3],
            },
            PingRequest::default(),
        ],
    );
    payload(
        "PingReply",
        vec![PingReply {
            data: vec![9; 40],
            clients: 7,
        }],
    );
    payload(
        "VersionInfo",
        vec![VersionInfo {
            name: "clusterd".into(),
            crate_version: "0.1.0".into(),
            protocol_version: 1,
        }],
    );
    payload(
        "Statistics",
        vec![Statistics {
            counters: vec![("routed".into(), 5), ("x".into(), u64::MAX)],
        }],
    );
    payload(
        "LogLevelRequest",
        vec![
            LogLevelRequest {
                set: Some("debug".into()),
            },
            LogLevelRequest::default(),
        ],
    );
    payload(
        "LogLevelReply",
        vec![LogLevelReply {
            level: "info".into(),
        }],
    );
    payload(
        "RegisterRequest",
        vec![RegisterRequest {
            name: "failoverd".into(),
        }],
    );
    payload(
        "RegisterReply",
        vec![RegisterReply {
            pnn: 3,
            service: 0x8001,
        }],
    );
    payload(
        "SubscribeRequest",
        vec![SubscribeRequest {
            opcode: 0x0001_0002,
        }],
    );
    payload(
        "ServiceList",
        vec![ServiceList {
            pnn: 1,
            services: vec![ServiceInfo {
                id: 2,
                name: "failoverd".into(),
                subscriptions: vec![1, 0x0002_0001],
            }],
        }],
    );
    payload(
        "PeerList",
        vec![PeerList {
            pnn: 0,
            peers: vec![PeerInfo {
                pnn: 1,
                address: "192.0.2.2:4379".into(),
                connected: true,
                since_ms: 1234,
            }],
        }],
    );
    payload(
        "RemoteError",
        vec![
            RemoteError::new(ErrorCode::Refused, "no"),
            RemoteError::new(ErrorCode::Unknown(999), "?"),
        ],
    );
}

fn lease() -> Lease {
    Lease {
        at_ns: 1_000,
        expires_ns: 5_000_000_000,
        since_ns: 10,
    }
}

#[test]
fn cluster_payloads() {
    payload("Lease", vec![lease()]);
    payload(
        "LeaseUpdate",
        vec![LeaseUpdate {
            this_node: 2,
            lease: lease(),
        }],
    );
    payload("NodeFlags", vec![NodeFlags::BANNED, NodeFlags::OK]);
    payload(
        "Membership",
        vec![Membership {
            generation: 42,
            leader: Some(0),
            nodes: vec![
                NodeInfo {
                    pnn: 0,
                    address: Some(ip("192.0.2.1")),
                    flags: NodeFlags::OK,
                },
                NodeInfo {
                    pnn: 1,
                    address: Some(ip("2001:db8::2")),
                    flags: NodeFlags::DISCONNECTED,
                },
                NodeInfo {
                    pnn: 2,
                    address: None,
                    flags: NodeFlags::DELETED,
                },
            ],
            this_node: 1,
            lease_ok: true,
            reassignable: vec![0, 1],
            lease: lease(),
        }],
    );
    payload(
        "AdminCommand",
        vec![
            AdminCommand {
                target: 1,
                op: AdminOp::Ban { seconds: 30 },
            },
            AdminCommand {
                target: 0,
                op: AdminOp::Continue,
            },
        ],
    );
    payload(
        "AdminOutcome",
        vec![AdminOutcome::Done, AdminOutcome::Invalid],
    );
}

#[test]
fn failover_payloads() {
    let v4 = ip("203.0.113.10");
    let v6 = ip("2001:db8::10");
    payload(
        "IpStatus",
        vec![IpStatus {
            pnn: 1,
            lease_ok: true,
            hosted: vec![v4],
            missing: vec![v6],
            unexpected: vec![],
            hook_failures: vec![HookFailureInfo {
                hook: "10.interface".into(),
                event: "takeip".into(),
                reason: "exit 1".into(),
            }],
        }],
    );
    payload(
        "Hosted",
        vec![Hosted {
            addresses: vec![v4, v6],
        }],
    );
    payload("Ipreallocated", vec![Ipreallocated { generation: 9 }]);
    payload(
        "PublicIps",
        vec![PublicIps {
            pnn: 0,
            can_host: true,
            ips: vec![PublicIp {
                addr: v4,
                prefix: 24,
                configured: vec!["eth0".into(), "eth1".into()],
                available: vec!["eth0".into()],
                active: Some("eth0".into()),
                owner: Some(1),
            }],
            ifaces: vec![IfaceInfo {
                name: "eth0".into(),
                link_up: true,
                references: 2,
            }],
        }],
    );
    payload(
        "ReleaseIps",
        vec![ReleaseIps {
            generation: 7,
            run: 3,
            ips: vec![(v4, Some(2)), (v6, None)],
        }],
    );
    payload(
        "TakeIps",
        vec![TakeIps {
            generation: 7,
            run: 3,
            ips: vec![v4, v6],
        }],
    );
    payload(
        "StepResult",
        vec![StepResult {
            failed: vec![(v4, "no such interface".into())],
        }],
    );
    payload("MoveIp", vec![MoveIp { addr: v6, pnn: 2 }]);
    payload(
        "AddIp",
        vec![AddIp {
            addr: v4,
            prefix: 24,
            ifaces: vec!["eth0".into()],
        }],
    );
    payload("DelIp", vec![DelIp { addr: v4 }]);
    payload(
        "ReloadSummary",
        vec![ReloadSummary {
            added: vec![v4],
            removed: vec![v6],
            changed: vec![],
        }],
    );
    payload(
        "SetIfaceLink",
        vec![SetIfaceLink {
            iface: "eth0".into(),
            up: false,
        }],
    );
    payload(
        "Gratarp",
        vec![Gratarp {
            addr: v4,
            iface: "eth0".into(),
        }],
    );
    payload(
        "KillTcp",
        vec![KillTcp {
            iface: "eth0".into(),
            connections: vec![ConnectionPair {
                client: sa("198.51.100.7:40000"),
                server: sa("203.0.113.10:445"),
            }],
        }],
    );
}

/// The operator commands' payloads (#17): tunables, hooks, run times,
/// clusterd's settings and the leader-role admin command.
#[test]
fn operator_payloads() {
    payload(
        "TunableList",
        vec![TunableList {
            tunables: vec![Tunable {
                name: "NoIPFailback".into(),
                value: 1,
            }],
        }],
    );
    payload(
        "SetTunable",
        vec![SetTunable {
            name: "IPAllocAlgorithm".into(),
            value: 2,
        }],
    );
    payload(
        "SetTunableOutcome",
        vec![SetTunableOutcome::Set, SetTunableOutcome::Obsolete],
    );
    payload(
        "HookStatus",
        vec![HookStatus {
            dir_exists: true,
            ran: true,
            scripts: vec![HookScriptRun {
                name: "50.nfs".into(),
                state: "ERROR".into(),
                begin_unix_ms: 1_796_655_000_000,
                duration_us: 4_000,
                output: "exit status 3".into(),
            }],
        }],
    );
    payload(
        "HookList",
        vec![HookList {
            dir_exists: true,
            scripts: vec![HookScript {
                name: "10.ok".into(),
                enabled: true,
            }],
        }],
    );
    payload(
        "SetHook",
        vec![SetHook {
            name: "20.fail".into(),
            enabled: false,
        }],
    );
    payload(
        "RunEvent",
        vec![RunEvent {
            args: vec![
                "takeip".into(),
                "eth1".into(),
                "192.0.2.1".into(),
                "24".into(),
            ],
        }],
    );
    payload(
        "RunTimes",
        vec![RunTimes {
            now_unix_ms: 1_796_655_000_000,
            generation: 7,
            changed_unix_ms: Some(1_796_654_999_000),
            run_done_unix_ms: None,
        }],
    );
    payload(
        "ClusterSettings",
        vec![ClusterSettings {
            can_lead: true,
            cluster_lock: Some("!/usr/libexec/ctdb/ctdb_etcd_lock".into()),
        }],
    );
    payload(
        "AdminCommand (role)",
        vec![AdminCommand {
            target: 2,
            op: AdminOp::SetLeaderRole { on: false },
        }],
    );
}

#[test]
fn conntrack_and_master_payloads() {
    let conn = TrackedConnection {
        client: sa("[2001:db8::7]:40000"),
        server: sa("[2001:db8::10]:445"),
    };
    let query = GetConnections {
        address: ip("203.0.113.10"),
        port: Some(445),
    };
    payload("GetConnections", vec![query]);
    payload(
        "GetConnectionsPage",
        vec![GetConnectionsPage {
            query,
            after: Some(conn),
        }],
    );
    payload(
        "ConnectionsPage",
        vec![ConnectionsPage {
            conns: vec![conn, conn],
            more: true,
        }],
    );
    payload("Vec<TrackedConnection>", vec![vec![conn]]);
    payload(
        "Vec<AddressCount>",
        vec![vec![AddressCount {
            address: ip("203.0.113.10"),
            connections: 3,
        }]],
    );
    payload(
        "MasterStatus",
        vec![MasterStatus {
            pid: 100,
            model: Model::MultiProcess,
            ready: true,
            uptime_ms: 5,
            daemons: vec![
                DaemonStatus {
                    name: "clusterd".into(),
                    state: DaemonState::Running,
                    pid: Some(101),
                    restarts: 0,
                    last_exit: None,
                },
                DaemonStatus {
                    name: "failoverd".into(),
                    state: DaemonState::Restarting,
                    pid: None,
                    restarts: 2,
                    last_exit: Some("signal 9".into()),
                },
            ],
        }],
    );
    payload("String", vec![String::from("reloaded")]);
}

/// Frame-aware mutation: forge the header's length, kind, opcode, flags or
/// reserved field of a valid frame.
#[allow(clippy::ptr_arg)] // the harness's mutator type
fn mutate_frame(rng: &mut Rng, buf: &mut Vec<u8>) {
    if buf.len() < HEADER_LEN {
        return;
    }
    let payload_len = buf.len() - HEADER_LEN;
    match rng.below(5) {
        0 => {
            let len: u32 = match rng.below(4) {
                0 => u32::try_from(payload_len + 1).unwrap_or(u32::MAX),
                1 => u32::try_from(payload_len.saturating_sub(1)).unwrap_or(0),
                2 => u32::MAX,
                _ => (4 << 20) + 1,
            };
            buf[8..12].copy_from_slice(&len.to_be_bytes());
        }
        1 => buf[5] = rng.byte() % 6,
        2 => buf[32..36].copy_from_slice(&rng.next().to_be_bytes()[..4]),
        3 => buf[6..8].copy_from_slice(&rng.next().to_be_bytes()[..2]),
        _ => buf[36..40].copy_from_slice(&rng.next().to_be_bytes()[..4]),
    }
}

/// The frame layer on its own (header checks, lengths, the owned decoder)
/// with a round trip of every complete frame; the payloads are the other
/// targets. (tests/codec_fuzz.rs checks the borrowed decoders allocate
/// nothing.)
#[test]
fn frames() {
    let h = |kind, opcode| HeaderRepr {
        kind,
        src: Address::new(1, 0x8001),
        dst: Address::new(2, 2),
        request_id: 7,
        opcode,
    };
    let ping = encode_payload(&PingRequest { data: vec![1, 2] }).expect("encodes");
    let seeds = vec![
        Message::new(h(Kind::Request, 1), ping)
            .to_bytes()
            .expect("encodes"),
        Message::new(h(Kind::Event, 0x0002_0001), vec![])
            .to_bytes()
            .expect("encodes"),
        Message::new(h(Kind::Error, 9), vec![4, 2, b'n', b'o'])
            .to_bytes()
            .expect("encodes"),
    ];
    let mut decode = |b: &[u8]| match check(b) {
        Ok(Check::Complete { frame_len }) => {
            let msg = Message::decode(&b[..frame_len]).expect("check said complete");
            let again = msg.to_bytes().expect("a decoded frame encodes");
            assert_eq!(again, &b[..frame_len], "frame round trip");
            Outcome::Valid
        }
        Ok(Check::Incomplete { .. }) | Err(_) => {
            assert!(Message::decode(b).is_err());
            Outcome::Invalid
        }
    };
    run(Target {
        name: "frame",
        seeds,
        default_cases: 100_000,
        alloc_bound: bound,
        mutate: Some(&mutate_frame),
        decode: &mut decode,
    });
}

#[test]
fn noise_hello() {
    let mut decode = |b: &[u8]| match noise::parse_hello(b) {
        Ok(pnn) => {
            assert_eq!(noise::hello(pnn).as_slice(), b, "hello round trip");
            Outcome::Valid
        }
        Err(_) => Outcome::Invalid,
    };
    run(Target {
        name: "noise hello",
        seeds: vec![noise::hello(0).to_vec(), noise::hello(u32::MAX).to_vec()],
        default_cases: SHORT,
        alloc_bound: bound,
        mutate: None,
        decode: &mut decode,
    });
}

#[test]
fn cluster_key_file() {
    let hex = b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n".to_vec();
    let mut decode = |b: &[u8]| match key::parse(b) {
        Ok(k) => {
            // The hex form of a parsed key parses to the same key.
            let hex: String = k.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
            let again = key::parse(hex.as_bytes()).expect("hex of a key parses");
            assert_eq!(again.as_bytes(), k.as_bytes());
            Outcome::Valid
        }
        Err(_) => Outcome::Invalid,
    };
    run(Target {
        name: "cluster.key",
        seeds: vec![hex, vec![0x5A; 32]],
        default_cases: SHORT,
        alloc_bound: bound,
        mutate: None,
        decode: &mut decode,
    });
}

/// Forged counts, explicitly: a valid prefix, then a sequence count of
/// 2^32 - 1, 2^64 - 1, 2^20 or what the bytes after it could hold, then
/// up to 4000 bytes. A count beyond the input must fail, and no count may
/// make decoding hold more than the bound.
#[test]
fn huge_declared_counts_cost_at_most_the_bound() {
    use std::mem::size_of;
    // The element types behind the bound's 128 bytes per input byte.
    for (name, size) in [
        ("PublicIp", size_of::<PublicIp>()),
        ("IfaceInfo", size_of::<IfaceInfo>()),
        ("DaemonStatus", size_of::<DaemonStatus>()),
        ("ServiceInfo", size_of::<ServiceInfo>()),
        ("PeerInfo", size_of::<PeerInfo>()),
        ("NodeInfo", size_of::<NodeInfo>()),
        ("HookFailureInfo", size_of::<HookFailureInfo>()),
        ("TrackedConnection", size_of::<TrackedConnection>()),
        ("(IpAddr, Option<u32>)", size_of::<(IpAddr, Option<u32>)>()),
        ("(IpAddr, String)", size_of::<(IpAddr, String)>()),
        ("(String, u64)", size_of::<(String, u64)>()),
    ] {
        assert!(size <= 128, "{name} is {size} bytes: raise the bound");
    }
    fn check_one<T: DeserializeOwned + Debug>(name: &str, prefix: &[u8]) {
        for tail in [0usize, 8, 100, 4000] {
            // Counts beyond the input, and counts the input could hold
            // (the most preallocation postcard allows).
            let fits = u64::try_from(tail).expect("small");
            for count in [u64::from(u32::MAX), u64::MAX, 1 << 20, fits, fits / 2] {
                let mut input = prefix.to_vec();
                input.extend(fuzz::varint(count));
                input.extend(std::iter::repeat_n(0x01, tail));
                let (r, peak) = fuzz::peak_of(|| decode_payload::<T>(&input));
                if count > fits {
                    assert!(r.is_err(), "{name}: count {count} decoded: {r:?}");
                }
                assert!(
                    peak <= bound(input.len()),
                    "{name}: count {count} with {tail} bytes held {peak} bytes"
                );
            }
        }
    }
    // PublicIps: pnn 0, can_host true, then ips.
    check_one::<PublicIps>("PublicIps.ips", &[0, 1]);
    // Membership: generation 1, leader None, then nodes.
    check_one::<Membership>("Membership.nodes", &[1, 0]);
    // ServiceList: pnn 0, then services.
    check_one::<ServiceList>("ServiceList.services", &[0]);
    check_one::<Vec<TrackedConnection>>("Vec<TrackedConnection>", &[]);
    // ReleaseIps: generation, run, then ips.
    check_one::<ReleaseIps>("ReleaseIps.ips", &[1, 1]);
    // MasterStatus: pid, model, ready, uptime, then daemons.
    check_one::<MasterStatus>("MasterStatus.daemons", &[1, 0, 1, 1]);
    check_one::<Statistics>("Statistics.counters", &[]);
    check_one::<PingRequest>("PingRequest.data", &[]);
    check_one::<String>("String", &[]);

    // Nested: PublicIps.ips (PublicIp) holding `configured` (String), the
    // deepest sum of element sizes (checked to stay within 128 bytes).
    assert!(size_of::<PublicIp>() + size_of::<String>() <= 128);
    for tail in [0usize, 100, 4000] {
        let fits = u64::try_from(tail).expect("small");
        for outer in [u64::MAX, fits] {
            for inner in [u64::MAX, fits] {
                // pnn 0, can_host 1, `outer` ips; the first: V4 (variant 0)
                // 203.0.113.10, prefix 24, `inner` configured names.
                let mut input = vec![0, 1];
                input.extend(fuzz::varint(outer));
                input.extend([0, 203, 0, 113, 10, 24]);
                input.extend(fuzz::varint(inner));
                input.extend(std::iter::repeat_n(0x01, tail));
                let (r, peak) = fuzz::peak_of(|| decode_payload::<PublicIps>(&input));
                if outer > fits || inner > fits {
                    assert!(r.is_err(), "outer {outer} inner {inner} decoded");
                }
                assert!(
                    peak <= bound(input.len()),
                    "PublicIps outer {outer} inner {inner} tail {tail}: held {peak} bytes"
                );
            }
        }
    }
}
