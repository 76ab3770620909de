//! Floods (#14 item 2): every request kind a local client or a peer can
//! send, sent as fast as transportd takes it, at a node of a running
//! 3-node cluster with public addresses. What is over a limit must be
//! refused with a counted reason, never paid for with a heartbeat or a
//! lease: the flooded node keeps its lease and its addresses (every node's
//! kernel is watched), other clients are still answered, and the flooded
//! daemons' memory stays below [`RSS_LIMIT_KB`].
//!
//! The floods are sent by the test crate's `forge` client (`flood` and
//! `connect` steps): as a member of the transport group (uid 64000, group
//! `nogroup`, as tests/tests/transport_security.rs) on the flooded node,
//! and as root on another node (a peer's requests, through the peer link).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use transport::msg::cluster::{AdminCommand, AdminOp, Membership, ADMIN, GET_MEMBERSHIP};
use transport::msg::conntrack::{
    GetConnections, TrackedConnection, ADD_CONNECTIONS, GET_CONNECTIONS,
};
use transport::msg::failover::{GET_PUBLIC_IPS, IPREALLOCATE};
use transport::proto::control::{Statistics, STATISTICS};
use transport::proto::Address;

use tests::cluster::{bin_path, TestCluster};
use tests::netns::{require_root, wait_for};

/// The transport group's member the floods run as: uid 64000 (no passwd
/// entry needed), primary group `nogroup`.
const MEMBER: (u32, u32) = (64_000, 65_534);
const POLL: Duration = Duration::from_millis(50);
const LIMIT: Duration = Duration::from_secs(40);
/// The stated memory bound: no daemon of the flooded node may reach this
/// resident size (VmHWM, the peak) during the floods. Idle they take
/// 5-20 MB in a debug build.
const RSS_LIMIT_KB: u64 = 200 * 1024;
/// An ordinary request of another client must be answered within this,
/// flood or not.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);
/// conntrackd's table limit in this test (`[conntrack] max_connections`).
const MAX_CONNECTIONS: usize = 10_000;

fn public(i: u8) -> IpAddr {
    format!("198.51.100.{i}").parse().unwrap()
}

/// The public (198.51.100.0/24, not the client's .100) addresses
/// configured in namespace `ns`.
fn addresses_on(ns: &str) -> Vec<IpAddr> {
    tests::netns::ipv4_on(ns, "eth1")
        .into_iter()
        .filter(|a| a.octets()[..3] == [198, 51, 100] && a.octets()[3] != 100)
        .map(IpAddr::V4)
        .collect()
}

/// A running 3-node cluster whose transportds let the group `nogroup` in.
struct Bed {
    c: TestCluster,
    /// Per node: (daemon name, pid).
    pids: Vec<Vec<(&'static str, u32)>>,
    list: Vec<u8>,
}

impl Bed {
    fn new(tag: &str, list: &[u8]) -> Bed {
        let c = TestCluster::new(tag, 3).unwrap();
        c.add_public_ports("198.51.100.100/24").unwrap();
        let nodes: String = c.nodes.iter().map(|n| format!("{}\n", n.addr)).collect();
        let publics: String = list
            .iter()
            .map(|i| format!("198.51.100.{i}/24 eth1\n"))
            .collect();
        for n in &c.nodes {
            let toml = format!(
                "[transport]\nrun_dir = \"{}\"\n\n\
                 [failover]\ngarp_count = 1\nrelease_timeout_ms = 3000\n\n\
                 [conntrack]\nscan_interval_ms = 1000\nmax_connections = {MAX_CONNECTIONS}\n\n\
                 [logging]\nlevel = \"info\"\n",
                n.run_dir.display()
            );
            std::fs::write(n.config_dir.join("ipfailover.toml"), toml).unwrap();
            std::fs::write(n.config_dir.join("nodes"), &nodes).unwrap();
            std::fs::write(n.config_dir.join("public_addresses"), &publics).unwrap();
        }
        let mut pids = Vec::new();
        for i in 0..3 {
            let mut p = vec![(
                "transportd",
                c.start_transportd_with(i, &["--group", "nogroup"]).unwrap(),
            )];
            for name in ["clusterd", "conntrackd", "failoverd"] {
                p.push((name, c.start_daemon(i, name).unwrap()));
            }
            pids.push(p);
        }
        Bed {
            c,
            pids,
            list: list.to_vec(),
        }
    }

    fn socket(&self, i: usize) -> std::path::PathBuf {
        self.c.nodes[i].run_dir.join("transport.sock")
    }

    /// Which node hosts each public address, if every one is hosted
    /// exactly once and nothing else is.
    fn placement(&self) -> Option<BTreeMap<IpAddr, usize>> {
        let mut at: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.c.nodes.iter().enumerate() {
            for a in addresses_on(n.ns.name()) {
                at.entry(a).or_default().push(i);
            }
        }
        let mut out = BTreeMap::new();
        for &k in &self.list {
            match at.get(&public(k)).map(Vec::as_slice) {
                Some([one]) => {
                    out.insert(public(k), *one);
                }
                _ => return None,
            }
        }
        (at.len() == out.len()).then_some(out)
    }

    fn logs(&self) -> String {
        self.c
            .log_tails(&["transportd", "clusterd", "failoverd", "conntrackd"], 15)
    }

    /// A root client's request to `dst` through node `i`'s transportd.
    fn request<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        i: usize,
        dst: Address,
        opcode: u32,
    ) -> Option<T> {
        let sock = self.socket(i);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client, _incoming) = transport::client::Client::connect_unix(&sock, "floodtest")
                .await
                .ok()?;
            client
                .request::<_, T>(dst, opcode, &(), Duration::from_secs(5))
                .await
                .ok()
        })
    }

    /// The STATISTICS counters of service `service` of node `i`.
    fn stats(&self, i: usize, service: u16) -> BTreeMap<String, u64> {
        let s: Statistics = self
            .request(i, Address::local(service), STATISTICS)
            .unwrap_or_else(|| panic!("STATISTICS of service {service} on node {i}"));
        s.counters.into_iter().collect()
    }

    /// VmHWM (peak resident size, kB) of each daemon of node `i`.
    fn peak_rss(&self, i: usize) -> Vec<(&'static str, u64)> {
        self.pids[i]
            .iter()
            .map(|(name, pid)| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_else(|e| panic!("{name} of node {i} (pid {pid}) is gone: {e}"));
                let kb = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0);
                (*name, kb)
            })
            .collect()
    }
}

/// Runs `forge` against `socket` (as the group member when `member`),
/// registering `name` and running `steps`; returns its output.
fn forge(socket: &Path, member: bool, name: &str, steps: &[String]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forge"));
    cmd.arg(socket).arg(name).args(steps);
    if member {
        cmd.uid(MEMBER.0).gid(MEMBER.1);
    }
    let out = cmd.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `flood:COUNT:CONCURRENCY:...` step with an encoded payload.
fn flood<T: serde::Serialize>(
    count: u32,
    concurrency: u32,
    pnn: &str,
    service: u16,
    op: u32,
    payload: &T,
) -> String {
    let bytes = transport::proto::encode_payload(payload).unwrap();
    let request = tests::forge::step("request", pnn, &service.to_string(), op, &bytes);
    let rest = request.strip_prefix("request:").unwrap();
    format!("flood:{count}:{concurrency}:{rest}")
}

/// `(ok, refused, other)` of a forge flood's output line.
fn flood_counts(out: &str) -> (u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("flood "))
        .unwrap_or_else(|| panic!("no flood result in {out}"));
    let get = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    };
    (get("ok="), get("refused="), get("other="))
}

/// Floods every request kind at the leader's node (`target`), one kind
/// after the other — from a group member there and from root on another
/// node — while every node's
/// kernel is watched and a root client asks `ipfailover ip` on the target
/// every 200 ms:
/// * no address moves or disappears, anywhere, during the floods and a
///   lease after them (the flooded node kept its lease; clusterd dropped
///   no heartbeat: `peer_dropped` stays 0);
/// * every `ipfailover ip` succeeds within [`ANSWER_LIMIT`];
/// * the refusals are counted: clusterd `admin_refused`, failoverd
///   `requests_refused`, conntrackd `registrations_refused` (the table
///   never holds more than [`MAX_CONNECTIONS`]), transportd
///   `clients_over_limit` and `requests_throttled`;
///
/// Without clusterd's limit and channel (and transportd's request
/// budgets), the ADMIN floods (20,000 at once) cost the leader its lease
/// and its addresses; without the budgets alone, in one run of two.
/// * no daemon of the target passes [`RSS_LIMIT_KB`].
#[test]
fn floods_of_every_request_kind_leave_the_lease_and_other_clients_alone() {
    require_root();
    let list = [201, 202, 203, 204, 205, 206];
    let bed = Bed::new("flood", &list);
    let placed = match wait_for("every address hosted once", LIMIT, POLL, || bed.placement()) {
        Ok(p) => p,
        Err(e) => panic!("{e}\n{}", bed.logs()),
    };
    let leader = bed
        .request::<Membership>(0, Address::local(1), GET_MEMBERSHIP)
        .and_then(|m| m.leader)
        .expect("a leader") as usize;
    let target = leader;
    let peer = (target + 1) % 3;
    let hosted_by_target = placed
        .iter()
        .find(|(_, n)| **n == target)
        .map(|(a, _)| *a)
        .expect("the leader hosts an address");
    // Let the runs settle: the placement must not change from here on.
    std::thread::sleep(Duration::from_secs(2));
    let placed = bed.placement().expect("still placed");
    let t = target.to_string();
    let target_u32 = u32::try_from(target).unwrap();
    let enable = AdminCommand {
        target: target_u32,
        op: AdminOp::Enable,
    };
    // Registrations: 3 lists of 3000 fit under the table's limit (10000),
    // then lists of 3000 more do not (a forge argument holds at most 128
    // KiB of hex).
    let conns = |from: u32, n: u32| -> Vec<TrackedConnection> {
        (from..from + n)
            .map(|i| TrackedConnection {
                client: std::net::SocketAddr::new(
                    std::net::Ipv4Addr::new(203, 0, 113, u8::try_from(1 + i / 50_000).unwrap())
                        .into(),
                    u16::try_from(1 + i % 50_000).unwrap(),
                ),
                server: std::net::SocketAddr::new(hosted_by_target, 445),
            })
            .collect()
    };
    let register = |from: u32| {
        let bytes = transport::proto::encode_payload(&conns(from, 3_000)).unwrap();
        tests::forge::step("request", "local", "3", ADD_CONNECTIONS, &bytes)
    };
    let get_conns = GetConnections {
        address: hosted_by_target,
        port: None,
    };
    // One kind after the other (all at once, ten debug-built clients
    // starve the unprivileged daemons of a 2-core machine of CPU, which is
    // not what the limits are about): (what, from node, as the member?,
    // forge steps). Each sends more at once than a client may have in
    // flight (4), so the limits refuse some.
    let floods: Vec<(&str, usize, bool, Vec<String>)> = vec![
        (
            "member admin",
            target,
            true,
            vec![flood(60_000, 20_000, "local", 1, ADMIN, &enable)],
        ),
        (
            "member get_public_ips",
            target,
            true,
            vec![flood(8_000, 2_000, "local", 2, GET_PUBLIC_IPS, &())],
        ),
        (
            "member ipreallocate",
            target,
            true,
            vec![flood(500, 64, "local", 2, IPREALLOCATE, &())],
        ),
        (
            "member add_connections",
            target,
            true,
            vec![
                register(0),
                register(3_000),
                register(6_000),
                flood(40, 8, "local", 3, ADD_CONNECTIONS, &conns(9_000, 3_000)),
            ],
        ),
        (
            "member get_connections",
            target,
            true,
            vec![flood(300, 64, "local", 3, GET_CONNECTIONS, &get_conns)],
        ),
        (
            "member connections",
            target,
            true,
            vec!["connect:100:1000".to_owned()],
        ),
        (
            "peer admin",
            peer,
            false,
            vec![flood(60_000, 20_000, &t, 1, ADMIN, &enable)],
        ),
        (
            "peer get_public_ips",
            peer,
            false,
            vec![flood(4_000, 64, &t, 2, GET_PUBLIC_IPS, &())],
        ),
        (
            "peer get_connections",
            peer,
            false,
            vec![flood(200, 16, &t, 3, GET_CONNECTIONS, &get_conns)],
        ),
    ];

    /// Ends the watcher and the asker even if a flood panics.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Relaxed);
        }
    }
    let flooding = AtomicBool::new(true);
    let started = Instant::now();
    let (moves, answers, outputs) = std::thread::scope(|s| {
        // Every node's kernel, every 50 ms, until 2 s (4 leases) after
        // the floods (at most 3 minutes).
        let watcher = s.spawn(|| {
            let mut moves = Vec::new();
            let mut after: Option<Instant> = None;
            while started.elapsed() < Duration::from_secs(180) {
                if !flooding.load(Ordering::Relaxed) && after.is_none() {
                    after = Some(Instant::now());
                }
                if after.is_some_and(|a| a.elapsed() > Duration::from_secs(2)) {
                    break;
                }
                if bed.placement().as_ref() != Some(&placed) && moves.len() < 20 {
                    let now: Vec<Vec<IpAddr>> = bed
                        .c
                        .nodes
                        .iter()
                        .map(|n| addresses_on(n.ns.name()))
                        .collect();
                    moves.push(format!(
                        "{:?}: addresses per node {now:?}",
                        started.elapsed()
                    ));
                }
                std::thread::sleep(POLL);
            }
            moves
        });
        // Another client: `ipfailover ip` on the target, as root.
        let asker = s.spawn(|| {
            let mut answers = Vec::new();
            while flooding.load(Ordering::Relaxed) && answers.len() < 500 {
                let t0 = Instant::now();
                let out = Command::new(bin_path("ipfailover").unwrap())
                    .arg("--run-dir")
                    .arg(&bed.c.nodes[target].run_dir)
                    .args(["-t", "10", "ip"])
                    .output()
                    .unwrap();
                let took = t0.elapsed();
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                answers.push((
                    out.status.success() && text.contains("198.51.100.201"),
                    took,
                    text,
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
            answers
        });
        let done = Done(&flooding);
        let mut outputs = Vec::new();
        for (what, from, member, steps) in &floods {
            let t0 = Instant::now();
            let out = forge(&bed.socket(*from), *member, "flooder", steps);
            eprintln!(
                "{what} ({:?}): {}",
                t0.elapsed(),
                out.lines().skip(1).collect::<Vec<_>>().join(" | ")
            );
            outputs.push(((*what).to_owned(), out));
        }
        drop(done);
        (watcher.join().unwrap(), asker.join().unwrap(), outputs)
    });
    let took = started.elapsed();
    eprintln!(
        "floods took {took:?}; {} `ipfailover ip` asked",
        answers.len()
    );

    assert!(
        moves.is_empty(),
        "addresses moved during the floods:\n{}\n{}",
        moves.join("\n"),
        bed.logs()
    );
    let slowest = answers.iter().map(|a| a.1).max().unwrap_or_default();
    eprintln!("slowest `ipfailover ip`: {slowest:?}");
    assert!(!answers.is_empty(), "the other client was never answered");
    for (ok, took, text) in &answers {
        assert!(
            *ok && *took < ANSWER_LIMIT,
            "`ipfailover ip` during the floods: ok {ok}, took {took:?}: {text}\n{}",
            bed.logs()
        );
    }

    // Refusals were counted; nothing was dropped on the heartbeat path.
    let clusterd = bed.stats(target, 1);
    let failoverd = bed.stats(target, 2);
    let conntrackd = bed.stats(target, 3);
    let transportd = bed.stats(target, 0);
    eprintln!("clusterd {clusterd:?}\nfailoverd {failoverd:?}\nconntrackd {conntrackd:?}\ntransportd {transportd:?}");
    assert!(clusterd["admin_refused"] > 0, "{clusterd:?}");
    assert_eq!(
        clusterd["peer_dropped"], 0,
        "heartbeats dropped: {clusterd:?}"
    );
    assert!(failoverd["requests_refused"] > 0, "{failoverd:?}");
    assert!(conntrackd["registrations_refused"] > 0, "{conntrackd:?}");
    assert!(
        conntrackd["connections_stored"] <= MAX_CONNECTIONS as u64,
        "{conntrackd:?}"
    );
    assert!(transportd["clients_over_limit"] > 0, "{transportd:?}");
    assert!(transportd["requests_throttled"] > 0, "{transportd:?}");
    let connect = outputs
        .iter()
        .find(|(w, _)| w == "member connections")
        .map(|(_, o)| o.clone())
        .unwrap_or_default();
    assert!(
        connect.contains("too many local connections"),
        "the member's 100 connections: {connect}"
    );
    // Each flood was answered: refused or served, never left hanging.
    for (what, out) in &outputs {
        if what == "member connections" {
            continue;
        }
        let (ok, refused, other) = flood_counts(out);
        assert!(ok + refused > 0, "{what}: {out}");
        assert_eq!(other, 0, "{what}: answers other than ok or refused: {out}");
    }

    let peaks = bed.peak_rss(target);
    eprintln!("peak RSS of the target's daemons (kB): {peaks:?}");
    for (name, kb) in peaks {
        assert!(
            kb < RSS_LIMIT_KB,
            "{name} reached {kb} kB (limit {RSS_LIMIT_KB})"
        );
    }
}
