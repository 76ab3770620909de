//! The failover history (`ipfailover history`, failoverd/src/history.rs) on
//! a real cluster: three nodes in network namespaces, each run by masterd
//! with every daemon, three public addresses. The node hosting
//! 192.0.2.201 is powered off (cable cut, masterd and its daemons killed);
//! the survivors' histories must show the run that moved its addresses,
//! with the reason `node death`, the victim as the source, a survivor as
//! the target, and measured phases (detection, lease wait, planning, take),
//! and the take on the new host with its first announcement. Bad
//! `--since` values are refused with a message that says why.

mod masterd_support;

use std::process::Output;
use std::time::Duration;

use masterd_support::{available_daemons, status, wait, Masterd};
use tests::cluster::{bin_path, Node, TestCluster};
use tests::netns::require_root;

const LIMIT: Duration = Duration::from_secs(30);
const VIP: &str = "192.0.2.201";

fn ipfailover(n: &Node, args: &[&str]) -> Output {
    let bin = bin_path("ipfailover").unwrap();
    n.ns.command(bin.to_str().unwrap())
        .arg("--run-dir")
        .arg(&n.run_dir)
        .args(args)
        .output()
        .unwrap()
}

fn hosts_vip(n: &Node) -> bool {
    tests::netns::ipv4_on(n.ns.name(), "eth0")
        .iter()
        .any(|a| a.to_string() == VIP)
}

/// The history of `nodes` as read through `n`, as JSON.
fn history_json(n: &Node, nodes: &str) -> serde_json::Value {
    let out = ipfailover(n, &["-n", nodes, "--json", "history"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn moves_vip(e: &serde_json::Value) -> Option<&serde_json::Value> {
    e["moves"].as_array()?.iter().find(|m| m["address"] == VIP)
}

fn positive(e: &serde_json::Value, field: &str) -> bool {
    e[field].as_u64().is_some_and(|v| v > 0)
}

#[test]
fn a_node_death_shows_in_the_survivors_history() {
    require_root();
    assert!(
        bin_path("failoverd").is_ok() && bin_path("ipfailover").is_ok(),
        "needs every binary built: cargo build --workspace --bins"
    );
    let c = TestCluster::new("hist", 3).unwrap();
    let pa = "192.0.2.201/24 eth0\n192.0.2.202/24 eth0\n192.0.2.203/24 eth0\n";
    for n in &c.nodes {
        std::fs::write(
            n.config_dir.join("ipfailover.toml"),
            format!(
                "[transport]\nrun_dir = \"{}\"\n\n[metrics]\nlisten = \"\"\n",
                n.run_dir.display()
            ),
        )
        .unwrap();
        std::fs::write(n.config_dir.join("public_addresses"), pa).unwrap();
    }
    let daemons = available_daemons();
    let mut masterds: Vec<Masterd> = c
        .nodes
        .iter()
        .map(|n| {
            let log = c.scratch.join(format!("node{}-masterd.log", n.pnn));
            Masterd::start(n, &["--daemons", &daemons], None, Some(&log))
        })
        .collect();
    for n in &c.nodes {
        wait("masterd ready", LIMIT, || status(n).filter(|s| s.ready));
    }
    let victim = wait("someone hosts 192.0.2.201", LIMIT, || {
        c.nodes.iter().position(hosts_vip)
    });
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let reader = &c.nodes[survivors[0]];
    let list = survivors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    // Entries from the start (the initial allocation) are older than this.
    std::thread::sleep(Duration::from_millis(20));
    let off_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    c.power_off(victim).unwrap();
    let _ = masterds[victim].child.kill();
    let _ = masterds[victim].child.wait();
    let new_host = wait("a survivor hosts 192.0.2.201", LIMIT, || {
        survivors.iter().copied().find(|&i| hosts_vip(&c.nodes[i]))
    });

    // The run that moved it, in the history of the survivor that led it.
    let recent = |e: &serde_json::Value| e["at_unix_ms"].as_u64().is_some_and(|t| t >= off_ms);
    let h = wait("the history shows the run and the take", LIMIT, || {
        let mut h = history_json(reader, &list);
        let entries = h["entries"].as_array_mut()?;
        entries.retain(recent);
        let run = entries
            .iter()
            .any(|e| e["kind"] == "run" && moves_vip(e).is_some());
        let take = entries
            .iter()
            .any(|e| e["kind"] == "take" && moves_vip(e).is_some() && e["pnn"] == new_host);
        (run && take).then_some(h)
    });
    let entries = h["entries"].as_array().unwrap();
    let run = entries
        .iter()
        .find(|e| e["kind"] == "run" && moves_vip(e).is_some())
        .unwrap();
    let m = moves_vip(run).unwrap();
    assert_eq!(m["from"], victim, "{run:#}");
    assert_eq!(m["to"], new_host, "{run:#}");
    assert_eq!(m["reason"], "node death", "{run:#}");
    assert_eq!(run["reason"], "node death", "{run:#}");
    assert_eq!(run["ok"], true, "{run:#}");
    assert!(
        survivors.iter().any(|&s| run["pnn"] == s),
        "run led by a survivor: {run:#}"
    );
    // Every address the victim held moved away from it for its death.
    for m in run["moves"].as_array().unwrap() {
        if m["from"] == victim {
            assert_eq!(m["reason"], "node death", "{run:#}");
        }
    }
    for phase in [
        "detection_us",
        "lease_wait_us",
        "plan_us",
        "take_us",
        "total_us",
    ] {
        assert!(positive(run, phase), "{phase} not measured: {run:#}");
    }
    assert!(run["release_us"].as_u64().is_some(), "{run:#}");
    // The detection is about clusterd's dead_after (500 ms by default),
    // certainly under the test's limits.
    let detection = run["detection_us"].as_u64().unwrap();
    assert!(
        (100_000..10_000_000).contains(&detection),
        "detection {detection} µs: {run:#}"
    );
    let take = entries
        .iter()
        .find(|e| e["kind"] == "take" && e["pnn"] == new_host && moves_vip(e).is_some())
        .unwrap();
    assert_eq!(take["reason"], "node death", "{take:#}");
    assert_eq!(take["run"], run["run"], "{take:#}");
    assert!(positive(take, "take_us"), "{take:#}");
    assert!(positive(take, "announce_us"), "{take:#}");
    // Newest first (the whole history).
    let all = history_json(reader, &list);
    let times: Vec<u64> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at_unix_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // The table a person reads: a header, the run's line with its reason
    // and move.
    let out = ipfailover(reader, &["-n", &list, "history", "--since", "10m"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("TIME "), "{text}");
    let arrow = format!("{VIP} {victim}->{new_host}");
    assert!(
        text.lines()
            .any(|l| l.contains(" run ") && l.contains("node death") && l.contains(&arrow)),
        "no run line with {arrow} in\n{text}"
    );
    println!("{text}");
    // -X: a header and one row per entry.
    let out = ipfailover(reader, &["-n", &list, "-X", "history"]);
    let x = String::from_utf8_lossy(&out.stdout);
    assert!(x.starts_with("|Time|PNN|Kind|"), "{x}");
    assert!(x.lines().count() > entries.len(), "{x}");
    // A --since that reaches back before nothing: nothing.
    let out = ipfailover(reader, &["--json", "history", "--since", "1ms"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["entries"].as_array().is_some_and(|e| e.len() <= 1),
        "{v:#}"
    );

    // Bad --since values: refused, saying why.
    for (bad, why) in [
        ("5x", "unknown unit"),
        ("10", "no unit"),
        ("3m-", "expected a number"),
        ("0s", "more than 0"),
    ] {
        let out = ipfailover(reader, &["history", "--since", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--since {bad} accepted");
        assert!(err.contains(why), "--since {bad}: {err}");
    }
}
