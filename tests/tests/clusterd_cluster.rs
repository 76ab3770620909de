//! clusterd as real processes: every node of a [`TestCluster`] runs
//! transportd and clusterd in its own namespace; the test reads each node's
//! membership with GET_MEMBERSHIP through that node's transportd socket (Unix
//! sockets live in the filesystem, which the namespaces share).
//!
//! Timing is measured and printed, never asserted tightly: the bounds below
//! are generous so a loaded machine does not fail the tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clusterd::{Membership, NodeFlags};
use tests::cluster::{bin_path, TestCluster};
use tests::netns::{require_root, wait_for, NetNs};
use transport::client::Client;
use transport::msg::cluster::GET_MEMBERSHIP;
use transport::proto::service::CLUSTERD;
use transport::proto::Address;

const POLL: Duration = Duration::from_millis(20);

/// Writes node `i`'s ipfailover.toml and starts its transportd and clusterd.
fn start_node(c: &TestCluster, i: usize, cluster_toml: &str) {
    let node = &c.nodes[i];
    let toml = format!(
        "[transport]\nrun_dir = \"{}\"\n\n[cluster]\n{cluster_toml}\n\n[logging]\nlevel = \"info,clusterd=debug\"\n",
        node.run_dir.display()
    );
    std::fs::write(node.config_dir.join("ipfailover.toml"), toml).unwrap();
    // TestCluster's nodes file starts with a `#` line, which CTDB's format
    // reads as a deleted node 0: write one where line N is node N.
    let nodes: String = c.nodes.iter().map(|n| format!("{}\n", n.addr)).collect();
    std::fs::write(node.config_dir.join("nodes"), nodes).unwrap();
    c.start_transportd(i).unwrap();
    c.start_daemon(i, "clusterd").unwrap();
}

/// Node `i`'s membership as its clusterd answers GET_MEMBERSHIP.
fn membership(c: &TestCluster, i: usize) -> Option<Membership> {
    let sock = c.nodes[i].run_dir.join("transport.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (client, _incoming) = Client::connect_unix(&sock, "test").await.ok()?;
        client
            .request::<_, Membership>(
                Address::local(CLUSTERD),
                GET_MEMBERSHIP,
                &(),
                Duration::from_secs(2),
            )
            .await
            .ok()
    })
}

fn logs(c: &TestCluster) -> String {
    let mut out = String::new();
    for i in 0..c.nodes.len() {
        for name in ["transportd", "clusterd"] {
            let p = c.scratch.join(format!("node{i}-{name}.log"));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- node{i} {name} (last lines)\n"));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

/// Waits until every node in `live` publishes a valid lease under one common
/// leader and sees exactly the nodes of `live` as not DISCONNECTED; returns
/// the leader.
fn wait_converged(c: &TestCluster, live: &[usize], limit: Duration) -> u32 {
    let r = wait_for("a converged membership", limit, POLL, || {
        let mut leader = None;
        for &i in live {
            let m = membership(c, i)?;
            if !m.lease_ok || m.leader.is_none() {
                return None;
            }
            if leader.is_some() && leader != m.leader {
                return None;
            }
            leader = m.leader;
            for n in &m.nodes {
                let up = !n.flags.contains(NodeFlags::DISCONNECTED);
                let want = live.contains(&usize::try_from(n.pnn).unwrap());
                if up != want {
                    return None;
                }
            }
        }
        leader
    });
    match r {
        Ok(l) => l,
        Err(e) => panic!("{e}\n{}", logs(c)),
    }
}

#[test]
fn clusterd_killed_node_is_disconnected_on_the_others() {
    require_root();
    let c = TestCluster::new("cdk", 3).unwrap();
    for i in 0..3 {
        start_node(&c, i, "");
    }
    let leader = wait_converged(&c, &[0, 1, 2], Duration::from_secs(20));
    assert_eq!(leader, 0, "the lowest PNN leads");
    let t0 = Instant::now();
    c.power_off(2).unwrap();
    let seen = wait_for(
        "node 2 DISCONNECTED on 0 and 1",
        Duration::from_secs(10),
        POLL,
        || {
            let all = [0, 1].iter().all(|&i| {
                membership(&c, i)
                    .and_then(|m| m.flags(2))
                    .is_some_and(|f| f.contains(NodeFlags::DISCONNECTED))
            });
            all.then(|| t0.elapsed())
        },
    );
    let took = seen.unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    eprintln!("node 2 seen DISCONNECTED by both survivors after {took:?} (dead_after 500 ms, polling every {POLL:?})");
    // Generous: dead_after is 500 ms.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let m = membership(&c, 1).unwrap();
    assert_eq!(m.leader, Some(0));
    assert!(m.lease_ok, "the majority side keeps its leases: {m:?}");
}

/// Drops all traffic between `ns` and the given node addresses, both ways.
fn isolate(ns: &NetNs, from: &[String]) {
    let nft = |args: &[&str]| {
        ns.exec_ok("nft", args).unwrap();
    };
    nft(&["add", "table", "inet", "ipftest"]);
    for (chain, hook, dir) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
        nft(&[
            "add", "chain", "inet", "ipftest", chain, "{", "type", "filter", "hook", hook,
            "priority", "0", ";", "}",
        ]);
        for a in from {
            nft(&[
                "add", "rule", "inet", "ipftest", chain, "ip", dir, a, "drop",
            ]);
        }
    }
}

#[test]
fn clusterd_partition_only_the_majority_leads() {
    require_root();
    let c = TestCluster::new("cdp", 3).unwrap();
    for i in 0..3 {
        start_node(&c, i, "");
    }
    assert_eq!(wait_converged(&c, &[0, 1, 2], Duration::from_secs(20)), 0);
    // Cut the leader off: 1 + 2 is the majority and must elect node 1.
    let others: Vec<String> = c.nodes[1..].iter().map(|n| n.addr.to_string()).collect();
    isolate(&c.nodes[0].ns, &others);
    let t0 = Instant::now();
    let leader = wait_converged(&c, &[1, 2], Duration::from_secs(20));
    eprintln!(
        "majority side converged on leader {leader} after {:?}",
        t0.elapsed()
    );
    assert_eq!(leader, 1);
    let lost = wait_for(
        "node 0 loses its lease",
        Duration::from_secs(10),
        POLL,
        || membership(&c, 0).filter(|m| !m.lease_ok),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    assert_ne!(lost.leader, Some(0), "the minority must not lead: {lost:?}");
    // For a while, the minority never regains a lease and never leads.
    for _ in 0..20 {
        let m = membership(&c, 0).unwrap();
        assert!(!m.lease_ok && m.leader != Some(0), "minority leads: {m:?}");
        let m1 = membership(&c, 1).unwrap();
        assert_ne!(
            m1.leader,
            Some(0),
            "the majority follows the cut-off node: {m1:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn clusterd_cluster_lock_moves_when_its_holder_dies() {
    require_root();
    assert!(
        std::path::Path::new(clusterd::lock::FCNTL_HELPER).exists(),
        "needs CTDB's fcntl helper ({}): apt-get install ctdb",
        clusterd::lock::FCNTL_HELPER
    );
    let c = TestCluster::new("cdl", 2).unwrap();
    let lock: PathBuf = c.scratch.join("cluster.lock");
    let setting = format!("cluster_lock = \"{}\"", lock.display());
    for i in 0..2 {
        start_node(&c, i, &setting);
    }
    let leader = wait_converged(&c, &[0, 1], Duration::from_secs(30));
    let other = 1 - usize::try_from(leader).unwrap();
    let t0 = Instant::now();
    c.power_off(usize::try_from(leader).unwrap()).unwrap();
    // The fcntl helper notices its parent is gone and exits (it polls), and
    // the survivor's next attempt takes the lock.
    let m = wait_for(
        "the survivor leads with the lock",
        Duration::from_secs(60),
        POLL,
        || {
            membership(&c, other)
                .filter(|m| m.lease_ok && m.leader == Some(u32::try_from(other).unwrap()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    eprintln!(
        "lock moved from {leader} to {other} after {:?}",
        t0.elapsed()
    );
    assert!(m.flags(leader).unwrap().contains(NodeFlags::DISCONNECTED));
    // A 2-node cluster without the lock could not lead alone: the survivor
    // leads because it holds the lock, which we check through its helper.
    let ps = Command::new("pgrep")
        .args(["-f", &format!("ctdb_mutex_fcntl_helper {}", lock.display())])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "no fcntl helper holds {}",
        lock.display()
    );
}

/// Runs `ipfailover --run-dir <node i's run dir> ARGS`; (exit code, stdout,
/// stderr).
fn cli(c: &TestCluster, i: usize, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_path("ipfailover").unwrap())
        .args(["--run-dir", c.nodes[i].run_dir.to_str().unwrap(), "-t", "5"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until node `observer` sees `pnn` with exactly `flags`.
fn wait_flags(c: &TestCluster, observer: usize, pnn: u32, flags: NodeFlags) {
    wait_for(
        &format!("node {observer} to see node {pnn} as {flags}"),
        Duration::from_secs(10),
        POLL,
        || (membership(c, observer)?.flags(pnn)? == flags).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(c)));
}

#[test]
fn clusterd_admin_commands_across_nodes_via_the_cli() {
    require_root();
    let c = TestCluster::new("cda", 3).unwrap();
    for i in 0..3 {
        start_node(&c, i, "");
    }
    assert_eq!(wait_converged(&c, &[0, 1, 2], Duration::from_secs(20)), 0);
    assert_eq!(cli(&c, 1, &["pnn"]).1, "1\n");
    assert_eq!(cli(&c, 2, &["leader"]).1, "0\n");
    assert_eq!(cli(&c, 2, &["-n", "1", "pnn"]).1, "1\n");

    // From node 0, disable node 1; node 2 sees it.
    let (code, out, err) = cli(&c, 0, &["-n", "1", "disable"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    wait_flags(&c, 2, 1, NodeFlags::PERMANENTLY_DISABLED);
    let (code, out, _) = cli(&c, 2, &["nodestatus", "1"]);
    assert_eq!(code, 4);
    assert_eq!(out, "pnn:1 192.0.2.11       DISABLED\n");
    let (code, out, _) = cli(&c, 0, &["-n", "1", "disable"]);
    assert_eq!((code, out.as_str()), (0, "Node 1 is already disabled\n"));
    let (_, status, _) = cli(&c, 0, &["status"]);
    assert!(status.starts_with("Number of nodes:3\npnn:0 192.0.2.10       OK (THIS NODE)\npnn:1 192.0.2.11       DISABLED\npnn:2 192.0.2.12       OK\n"), "{status}");
    // No failoverd in this cluster: status says so after CTDB's lines.
    assert!(
        status.ends_with(
            "Recovery mode:NORMAL (0)\nLeader:0\n\
             Public IPs of node 0: unknown (failoverd is not running on node 0)\n"
        ),
        "{status}"
    );
    let (_, x, _) = cli(&c, 0, &["-X", "nodestatus", "all"]);
    assert!(x.contains("|1|192.0.2.11|0|0|0|1|0|0|0|0|N|\n"), "{x}");
    assert_eq!(cli(&c, 2, &["-n", "1", "enable"]).0, 0);
    wait_flags(&c, 0, 1, NodeFlags::OK);

    // Ban node 2 from node 1; it becomes inactive everywhere; unban.
    assert_eq!(cli(&c, 1, &["-n", "2", "ban", "300"]).0, 0);
    wait_flags(&c, 0, 2, NodeFlags::BANNED);
    let (code, out, _) = cli(&c, 0, &["nodestatus", "all"]);
    assert_eq!(code, 8, "{out}");
    assert!(
        out.contains("pnn:2 192.0.2.12       BANNED|INACTIVE\n"),
        "{out}"
    );
    assert_eq!(cli(&c, 0, &["-n", "2", "unban"]).0, 0);
    wait_flags(&c, 1, 2, NodeFlags::OK);

    // Stop and continue the leader itself, from another node.
    assert_eq!(cli(&c, 2, &["-n", "0", "stop"]).0, 0);
    wait_flags(&c, 2, 0, NodeFlags::STOPPED);
    assert_eq!(cli(&c, 2, &["-n", "0", "continue"]).0, 0);
    wait_flags(&c, 2, 0, NodeFlags::OK);

    // Errors.
    let (code, _, err) = cli(&c, 0, &["-n", "7", "disable"]);
    assert_eq!(code, 1);
    assert!(err.contains("Node 7 does not exist"), "{err}");
}

#[test]
fn clusterd_health_command_sets_and_clears_unhealthy() {
    require_root();
    let c = TestCluster::new("cdh", 2).unwrap();
    let flag = c.scratch.join("node1-healthy");
    start_node(&c, 0, "");
    start_node(
        &c,
        1,
        &format!(
            "health_command = \"test -e {}\"\nhealth_interval_ms = 50",
            flag.display()
        ),
    );
    // No flag file: node 1 is UNHEALTHY (still connected and active).
    wait_flags(&c, 0, 1, NodeFlags::UNHEALTHY);
    let (code, out, _) = cli(&c, 0, &["nodestatus", "1"]);
    assert_eq!(
        (code, out.as_str()),
        (2, "pnn:1 192.0.2.11       UNHEALTHY\n")
    );
    std::fs::write(&flag, b"").unwrap();
    wait_flags(&c, 0, 1, NodeFlags::OK);
    std::fs::remove_file(&flag).unwrap();
    wait_flags(&c, 1, 1, NodeFlags::UNHEALTHY);
}

#[test]
fn clusterd_bad_configuration_exits_1_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("ipf-cd-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |dir: &std::path::Path| {
        Command::new(bin_path("clusterd").unwrap())
            .args(["--config-dir", dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // A bad address on line 2 of the nodes file.
    std::fs::write(dir.join("nodes"), "192.0.2.10\n192.0.2.x\n").unwrap();
    let out = run(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nodes:2"), "{err}");
    // An unknown key in ipfailover.toml.
    std::fs::write(dir.join("nodes"), "192.0.2.10\n").unwrap();
    std::fs::write(dir.join("ipfailover.toml"), "[cluster]\nbogus = 1\n").unwrap();
    let out = run(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ipfailover.toml:2"), "{err}");
    // No local address in the nodes file.
    std::fs::write(dir.join("ipfailover.toml"), "").unwrap();
    let out = run(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none of this host's addresses"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes the drop rules [`isolate`] or [`deafen`] installed in `ns`.
fn heal(ns: &NetNs) {
    ns.exec_ok("nft", &["delete", "table", "inet", "ipftest"])
        .unwrap();
}

/// Drops only what `ns` sends to `to`: `to` no longer hears `ns`, while
/// `ns` still hears `to` (until the transport notices the silence and
/// closes the link; its close still reaches `ns`).
fn deafen(ns: &NetNs, to: &str) {
    let nft = |args: &[&str]| {
        ns.exec_ok("nft", args).unwrap();
    };
    nft(&["add", "table", "inet", "ipftest"]);
    nft(&[
        "add", "chain", "inet", "ipftest", "out", "{", "type", "filter", "hook", "output",
        "priority", "0", ";", "}",
    ]);
    nft(&[
        "add", "rule", "inet", "ipftest", "out", "ip", "daddr", to, "drop",
    ]);
}

/// Every node of `live` publishes the same generation, leader and flags,
/// with a valid lease: returns that membership.
fn wait_agreement(c: &TestCluster, live: &[usize], limit: Duration) -> Membership {
    let r = wait_for("every node agrees on the membership", limit, POLL, || {
        let ms: Vec<Membership> = live
            .iter()
            .map(|&i| membership(c, i))
            .collect::<Option<_>>()?;
        let first = &ms[0];
        let same = ms.iter().all(|m| {
            m.lease_ok
                && m.leader.is_some()
                && m.generation == first.generation
                && m.leader == first.leader
                && m.nodes == first.nodes
        });
        same.then(|| first.clone())
    });
    r.unwrap_or_else(|e| panic!("{e}\n{}", logs(c)))
}

/// Nodes that publish themselves as leader with a valid lease.
fn leading(c: &TestCluster, nodes: &[usize]) -> Vec<usize> {
    nodes
        .iter()
        .copied()
        .filter(|&i| {
            membership(c, i)
                .is_some_and(|m| m.lease_ok && m.leader == Some(u32::try_from(i).unwrap()))
        })
        .collect()
}

#[test]
fn clusterd_partition_2_1_heals_to_one_leader_and_one_membership() {
    require_root();
    let c = TestCluster::new("cdh21", 3).unwrap();
    for i in 0..3 {
        start_node(&c, i, "");
    }
    assert_eq!(wait_converged(&c, &[0, 1, 2], Duration::from_secs(20)), 0);
    let others: Vec<String> = c.nodes[1..].iter().map(|n| n.addr.to_string()).collect();
    isolate(&c.nodes[0].ns, &others);
    assert_eq!(wait_converged(&c, &[1, 2], Duration::from_secs(20)), 1);
    wait_for(
        "node 0 loses its lease",
        Duration::from_secs(10),
        POLL,
        || membership(&c, 0).filter(|m| !m.lease_ok),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    // Heal: the transport reconnects, node 0 rejoins, and all three agree
    // on one generation, one leader and the same flags.
    heal(&c.nodes[0].ns);
    let t0 = Instant::now();
    let agreed = wait_agreement(&c, &[0, 1, 2], Duration::from_secs(20));
    let took = t0.elapsed();
    eprintln!(
        "healed 2+1 partition: agreement on generation {} leader {:?} after {took:?}",
        agreed.generation, agreed.leader
    );
    assert!(
        agreed
            .nodes
            .iter()
            .all(|n| !n.flags.contains(NodeFlags::DISCONNECTED)),
        "{agreed:?}"
    );
    // The bound: transport redial backoff (≤ 2 s) + rejoin hold and
    // promises (a few leases of 500 ms) + slack for a loaded machine.
    assert!(took < Duration::from_secs(10), "agreement after {took:?}");
    // And it stays that way: one leader, every node agreeing.
    for _ in 0..10 {
        let l = leading(&c, &[0, 1, 2]);
        assert_eq!(l.len(), 1, "leaders after healing: {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_agreement(&c, &[0, 1, 2], Duration::from_secs(5));
}

#[test]
fn clusterd_one_way_partition_lease_is_lost_and_at_most_one_leads() {
    require_root();
    let c = TestCluster::new("cd1w", 3).unwrap();
    for i in 0..3 {
        start_node(&c, i, "");
    }
    assert_eq!(wait_converged(&c, &[0, 1, 2], Duration::from_secs(20)), 0);
    // Node 2 still hears the leader (node 0), but node 0 no longer hears
    // node 2. Leases are granted by a majority (docs/clusterd.md,
    // "Leases"): node 1 still hears node 2 both ways, so node 2 keeps its
    // lease and the leader may not give its addresses away.
    deafen(&c.nodes[2].ns, &c.nodes[0].addr.to_string());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let l = leading(&c, &[0, 1, 2]);
        assert!(
            l.len() <= 1,
            "several leaders during a one-way partition: {l:?}"
        );
        assert!(!l.contains(&2), "node 2 leads: {}", logs(&c));
        if let Some(m2) = membership(&c, 2) {
            assert!(
                m2.lease_ok,
                "node 2 lost the lease node 1 grants: {m2:?}\n{}",
                logs(&c)
            );
        }
        if let Some(m0) = membership(&c, 0) {
            assert!(!m0.reassignable.contains(&2), "{m0:?}");
        }
        std::thread::sleep(POLL);
    }
    // Node 1 stops hearing node 2 too: node 2's lease must lapse, even
    // though it keeps hearing both for a while, and never come back.
    deafen(&c.nodes[2].ns, &c.nodes[1].addr.to_string());
    let t0 = Instant::now();
    let mut lost_after = None;
    let mut polls = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        polls += 1;
        let l = leading(&c, &[0, 1, 2]);
        assert!(
            l.len() <= 1,
            "several leaders during a one-way partition: {l:?}"
        );
        assert!(!l.contains(&2), "node 2 leads: {}", logs(&c));
        let m2 = membership(&c, 2);
        if lost_after.is_none() && m2.as_ref().is_some_and(|m| !m.lease_ok) {
            lost_after = Some(t0.elapsed());
        }
        if let (Some(_), Some(m)) = (lost_after, &m2) {
            assert!(
                !m.lease_ok,
                "node 2 regained a lease nobody can grant: {m:?}"
            );
        }
        std::thread::sleep(POLL);
    }
    let lost = lost_after.unwrap_or_else(|| panic!("node 2 kept its lease\n{}", logs(&c)));
    eprintln!("one-way partition: node 2 lost its lease after {lost:?} ({polls} polls)");
    // lease 500 ms + margin + polling: generous for a loaded machine.
    assert!(lost < Duration::from_secs(3), "lease lost after {lost:?}");
    // The leader side stays led by node 0 and sees node 2 disconnected.
    let m0 = membership(&c, 0).unwrap();
    assert_eq!(m0.leader, Some(0), "{m0:?}");
    assert!(m0.lease_ok);
    assert!(m0.flags(2).unwrap().contains(NodeFlags::DISCONNECTED));
    assert!(m0.reassignable.contains(&2), "{m0:?}");
    heal(&c.nodes[2].ns);
    wait_agreement(&c, &[0, 1, 2], Duration::from_secs(20));
}
