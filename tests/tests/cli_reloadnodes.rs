//! `ipfailover reloadnodes` and `statisticsreset` against real daemons in
//! network namespaces (root), each node run by masterd:
//!
//! * a 3-node cluster grows to 4 by `reloadnodes` without a restart: the
//!   new node joins (transportd links, membership) and is given addresses
//!   by the takeover runs;
//! * a changed address, a nodes file that differs between nodes and the
//!   deletion of a connected node are refused with ctdb's words and change
//!   nothing on any node;
//! * the new node, once disconnected, is deleted (`#`) at run time and its
//!   addresses move to the others;
//! * `statisticsreset` starts the counters of every daemon again.

mod masterd_support;

use std::process::Output;
use std::time::Duration;

use masterd_support::{available_daemons, status, wait, write_config, Masterd};
use tests::cluster::{bin_path, Node, TestCluster};
use tests::netns::require_root;

const LIMIT: Duration = Duration::from_secs(30);

fn ipfailover(node: &Node, args: &[&str]) -> Output {
    let bin = bin_path("ipfailover").unwrap();
    let mut cmd = node.ns.command(bin.to_str().unwrap());
    cmd.arg("--run-dir").arg(&node.run_dir).args(args);
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_nodes(node: &Node, lines: &[&str]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(node.config_dir.join("nodes"), s).unwrap();
}

/// The owner of each public address in `ip all -X` (`|ADDR|PNN|`).
fn owners(node: &Node) -> Option<Vec<(String, i64)>> {
    let o = ipfailover(node, &["-X", "ip", "all"]);
    if !o.status.success() {
        return None;
    }
    text(&o.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Some((f.get(1)?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect()
}

#[test]
fn reloadnodes_adds_and_deletes_nodes_at_run_time_and_refuses_bad_files() {
    reload_scenario("cli-rln", &[], true);
}

/// The same with every node's daemons as tasks of one masterd process, and
/// the new node started after the reload (ctdb's documented order).
#[test]
fn reloadnodes_in_the_single_process_model_new_node_started_after() {
    reload_scenario("cli-rls", &["--single-process"], false);
}

fn reload_scenario(tag: &str, model: &[&str], start_first: bool) {
    require_root();
    if bin_path("failoverd").is_err() {
        panic!("failoverd is not built: run cargo build --workspace --bins");
    }
    let c = TestCluster::new(tag, 4).unwrap();
    let three = ["192.0.2.10", "192.0.2.11", "192.0.2.12"];
    let four = ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"];
    let pa = "192.0.2.201/24 eth0\n192.0.2.202/24 eth0\n192.0.2.203/24 eth0\n192.0.2.204/24 eth0\n";
    for n in &c.nodes {
        write_config(n, Some(pa));
    }
    for n in &c.nodes[..3] {
        write_nodes(n, &three);
    }
    write_nodes(&c.nodes[3], &four);
    let daemons = available_daemons();
    let mut args = vec!["--daemons", daemons.as_str()];
    args.extend_from_slice(model);
    let mut masterds: Vec<Masterd> = c.nodes[..3]
        .iter()
        .map(|n| Masterd::start(n, &args, None, None))
        .collect();
    for n in &c.nodes[..3] {
        wait("masterd ready", LIMIT, || status(n).filter(|s| s.ready));
    }
    let n0 = &c.nodes[0];
    wait("4 addresses hosted by 3 nodes", LIMIT, || {
        owners(n0).filter(|o| o.len() == 4 && o.iter().all(|(_, p)| (0..3).contains(p)))
    });

    // Nothing changed: ctdb's message, status 0.
    let out = ipfailover(n0, &["reloadnodes"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        "No change in nodes file, skipping unnecessary reload\n"
    );

    // Node 1's address changed in place: refused everywhere.
    for n in &c.nodes[..3] {
        write_nodes(n, &["192.0.2.10", "192.0.2.99", "192.0.2.12"]);
    }
    let out = ipfailover(n0, &["reloadnodes"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        "Node 1 has changed IP address (was 192.0.2.11, now 192.0.2.99)\n\
         ERROR: Nodes will not be reloaded due to previous error\n"
    );
    // A node's file differs from this node's: refused.
    for n in &c.nodes[..2] {
        write_nodes(n, &four);
    }
    write_nodes(&c.nodes[2], &three);
    let out = ipfailover(n0, &["reloadnodes"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        "ERROR: Nodes file on node 2 differs from current node (0)\n"
    );
    // Nothing changed on any node.
    for n in &c.nodes[..3] {
        let o = ipfailover(n, &["nodestatus", "all"]);
        assert!(text(&o.stdout).starts_with("Number of nodes:3\n"), "{o:?}");
    }

    // Add node 3: start it, then reload the 4-line file everywhere; or,
    // in ctdb's documented order, reload first (node 3 shows
    // disconnected) and start it then.
    write_nodes(&c.nodes[2], &four);
    if start_first {
        masterds.push(Masterd::start(&c.nodes[3], &args, None, None));
    }
    let out = ipfailover(n0, &["reloadnodes"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "Node 3 is NEW\n");
    if !start_first {
        let o = ipfailover(n0, &["nodestatus", "all"]);
        assert!(
            text(&o.stdout).contains("pnn:3 192.0.2.13       DISCONNECTED|INACTIVE"),
            "{o:?}"
        );
        masterds.push(Masterd::start(&c.nodes[3], &args, None, None));
    }
    wait("node 3 joins", LIMIT, || {
        let o = ipfailover(n0, &["nodestatus", "all"]);
        (o.status.success() && text(&o.stdout).contains("pnn:3 192.0.2.13       OK")).then_some(())
    });
    let n3 = &c.nodes[3];
    wait("node 3 hosts an address", LIMIT, || {
        owners(n0).filter(|o| o.iter().any(|(_, p)| *p == 3))
    });
    // Every node sees 4 nodes; node 3's own view agrees.
    for n in &c.nodes {
        wait("4 nodes everywhere", LIMIT, || {
            let o = ipfailover(n, &["nodestatus", "all"]);
            (o.status.success() && text(&o.stdout).starts_with("Number of nodes:4\n")).then_some(())
        });
    }
    assert!(ipfailover(n3, &["-n", "0", "pnn"]).status.success());
    // While the change was being completed every clusterd counted its
    // quorums in both lists; once every node runs the new list each keeps
    // that one alone (docs/clusterd.md, "Node list changes"), and its state
    // file (<run_dir>/state: a run_dir other than the default) says so.
    for n in &c.nodes {
        let file = n.run_dir.join("state/clusterd-node-lists");
        wait("the node list change complete on every node", LIMIT, || {
            let text = std::fs::read_to_string(&file).ok()?;
            let lists: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
            (lists == ["0 1 2 3"]).then_some(())
        });
    }

    // Deleting node 3 while it is connected: refused.
    let deleted = ["192.0.2.10", "192.0.2.11", "192.0.2.12", "#192.0.2.13"];
    for n in &c.nodes[..3] {
        write_nodes(n, &deleted);
    }
    write_nodes(n3, &deleted);
    let out = ipfailover(n0, &["reloadnodes"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(text(&out.stdout), "Node 3 is DELETED\n");
    assert_eq!(
        text(&out.stderr),
        "ERROR: Node 3 is still connected\n\
         ERROR: Nodes will not be reloaded due to previous error\n"
    );

    // Node 3 goes away; then its deletion is accepted and its addresses
    // move to the others.
    c.power_off(3).unwrap();
    if let Some(mut m) = masterds.pop() {
        let _ = m.terminate(Duration::from_secs(5));
    }
    // Disconnected in every remaining node's view (each checks its own
    // before it takes the deletion: a node that still hears node 3 refuses
    // it, as ctdb does).
    for n in &c.nodes[..3] {
        wait("node 3 disconnected", LIMIT, || {
            let o = ipfailover(n, &["nodestatus", "all"]);
            text(&o.stdout)
                .contains("pnn:3 192.0.2.13       DISCONNECTED|INACTIVE")
                .then_some(())
        });
    }
    let out = ipfailover(n0, &["reloadnodes"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout), "Node 3 is DELETED\n");
    wait("node 3 deleted everywhere", LIMIT, || {
        c.nodes[..3]
            .iter()
            .all(|n| {
                let o = ipfailover(n, &["nodestatus", "all"]);
                text(&o.stdout).starts_with("Number of nodes:4 (including 1 deleted nodes)\n")
            })
            .then_some(())
    });
    wait("node 3's addresses moved", LIMIT, || {
        owners(n0).filter(|o| o.len() == 4 && o.iter().all(|(_, p)| (0..3).contains(p)))
    });
    // -n all now means the three live nodes.
    let out = ipfailover(n0, &["-n", "all", "pnn"]);
    assert_eq!(
        text(&out.stdout),
        "\n>> NODE: 0 <<\n0\n\n>> NODE: 1 <<\n1\n\n>> NODE: 2 <<\n2\n",
        "{out:?}"
    );
}

/// The value of `daemon`'s `counter` in `statistics -X` of `node`.
fn counter(node: &Node, daemon: &str, counter: &str) -> Option<u64> {
    let o = ipfailover(node, &["-X", "statistics"]);
    let prefix = format!("|{daemon}|{counter}|");
    text(&o.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim_end_matches('|').parse().ok())
}

#[test]
fn statisticsreset_starts_every_daemons_counters_again() {
    require_root();
    let c = TestCluster::new("cli-strs", 2).unwrap();
    for n in &c.nodes {
        write_config(n, None);
    }
    let daemons = available_daemons();
    let _masterds: Vec<Masterd> = c
        .nodes
        .iter()
        .map(|n| Masterd::start(n, &["--daemons", &daemons], None, None))
        .collect();
    for n in &c.nodes {
        wait("masterd ready", LIMIT, || status(n).filter(|s| s.ready));
    }
    let n0 = &c.nodes[0];
    // Heartbeats make these grow; let them count for a while.
    wait("counters have grown", LIMIT, || {
        (counter(n0, "transportd", "peer_in")? > 100
            && counter(n0, "clusterd", "peer_received")? > 100)
            .then_some(())
    });
    let before_in = counter(n0, "transportd", "peer_in").unwrap();
    let before_rx = counter(n0, "clusterd", "peer_received").unwrap();
    let before_node1 = counter(&c.nodes[1], "transportd", "peer_in").unwrap();
    let out = ipfailover(n0, &["statisticsreset"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let after_in = counter(n0, "transportd", "peer_in").unwrap();
    let after_rx = counter(n0, "clusterd", "peer_received").unwrap();
    assert!(after_in < before_in / 2, "{before_in} -> {after_in}");
    assert!(after_rx < before_rx / 2, "{before_rx} -> {after_rx}");
    // Levels keep their value; the other node was not reset.
    assert_eq!(counter(n0, "transportd", "peers_connected"), Some(1));
    assert!(counter(&c.nodes[1], "transportd", "peer_in").unwrap() >= before_node1);
    // Every daemon answered the reset: masterd's and failoverd's own
    // counters start again too.
    let answered = counter(n0, "masterd", "controls_answered").unwrap();
    assert!(answered < 5, "masterd controls_answered {answered}");
    // -n all resets every node.
    let out = ipfailover(n0, &["-n", "all", "statisticsreset"]);
    assert!(out.status.success(), "{out:?}");
    assert!(counter(&c.nodes[1], "transportd", "peer_in").unwrap() < before_node1);
}
