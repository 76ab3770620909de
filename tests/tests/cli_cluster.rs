//! The `ipfailover` command against real daemons: a 3-node cluster in
//! network namespaces, each node run by masterd. Checks what the scripted
//! golden tests (cli/tests/golden.rs) cannot: that `-n all` really reaches
//! every node's daemons over the transport, that `daemons` reads a live
//! masterd, and that a node that goes away is reported per node, within
//! the `-t` timeout, while the others still answer.

mod masterd_support;

use std::process::Output;
use std::time::{Duration, Instant};

use masterd_support::{available_daemons, status, wait, write_config, Masterd};
use tests::cluster::{bin_path, Node, TestCluster};
use tests::netns::require_root;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `ipfailover ARGS` inside `node`'s namespace against its run dir.
fn ipfailover(node: &Node, args: &[&str]) -> Output {
    let bin = bin_path("ipfailover").unwrap();
    let mut cmd = node.ns.command(bin.to_str().unwrap());
    cmd.arg("--run-dir").arg(&node.run_dir).args(args);
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn n_all_reaches_every_node_and_reports_a_lost_one() {
    require_root();
    let c = TestCluster::new("cli-all", 3).unwrap();
    let pa = "192.0.2.201/24 eth0\n192.0.2.202/24 eth0\n";
    for n in &c.nodes {
        write_config(n, Some(pa));
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

    // pnn on every node, as onnode would show it.
    let out = wait("every node answers pnn", LIMIT, || {
        let o = ipfailover(n0, &["-n", "all", "pnn"]);
        o.status.success().then_some(o)
    });
    assert_eq!(
        text(&out.stdout),
        "\n>> NODE: 0 <<\n0\n\n>> NODE: 1 <<\n1\n\n>> NODE: 2 <<\n2\n"
    );

    // masterd's status of every node, in one -X table.
    let out = ipfailover(n0, &["-n", "all", "-X", "daemons"]);
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}{}", text(&out.stderr));
    let mut lines = table.lines();
    assert_eq!(
        lines.next(),
        Some("|PNN|Daemon|State|PID|Restarts|LastExit|")
    );
    for pnn in 0..3 {
        let row = format!("|{pnn}|masterd|ready|");
        assert!(table.contains(&row), "no {row} in\n{table}");
        let transportd = format!("|{pnn}|transportd|running|");
        assert!(table.contains(&transportd), "no {transportd} in\n{table}");
    }

    if bin_path("failoverd").is_ok() {
        // Every node lists its interface; ip all shows both addresses hosted.
        let out = wait("failoverd answers on every node", LIMIT, || {
            let o = ipfailover(n0, &["-n", "all", "-X", "ifaces"]);
            o.status.success().then_some(o)
        });
        let t = text(&out.stdout);
        assert!(t.starts_with("|PNN|Name|LinkStatus|References|\n"), "{t}");
        for pnn in 0..3 {
            assert!(t.contains(&format!("|{pnn}|eth0|1|")), "{t}");
        }
        wait("both addresses hosted in ip all", LIMIT, || {
            let o = ipfailover(n0, &["-X", "ip", "all"]);
            let t = text(&o.stdout);
            let hosted = t
                .lines()
                .filter(|l| l.starts_with("|192.0.2.20") && !l.ends_with("|-1|"))
                .count();
            (o.status.success() && hosted == 2).then_some(())
        });
    }

    // Node 2 goes away: it is reported, the others still answer, and the
    // command ends within its timeout (bounded here by LIMIT).
    c.power_off(2).unwrap();
    let start = Instant::now();
    let out = wait("node 2 reported as gone", LIMIT, || {
        let o = ipfailover(n0, &["-t", "2", "-n", "all", "pnn"]);
        (!o.status.success()).then_some(o)
    });
    assert!(start.elapsed() < LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "\n>> NODE: 0 <<\n0\n\n>> NODE: 1 <<\n1\n"
    );
    let err = text(&out.stderr);
    assert!(
        err == "node 2 is not connected\n"
            || err == "clusterd on node 2 did not answer within 2s\n",
        "{err}"
    );
}

/// The node commands of #17 against real masterds: `getpid` is masterd's
/// pid, `runstate` says RUNNING once every daemon answers, `setdebug` and
/// `getdebug` reach every daemon, and `shutdown`
/// stops the node's masterd (and so its daemons), after which the other
/// nodes report it with ctdb's words.
#[test]
fn getpid_runstate_and_shutdown_on_real_nodes() {
    require_root();
    let c = TestCluster::new("cli-node", 3).unwrap();
    for n in &c.nodes {
        write_config(n, None);
    }
    let daemons = available_daemons();
    let mut masterds: Vec<Masterd> = c
        .nodes
        .iter()
        .map(|n| Masterd::start(n, &["--daemons", &daemons], None, None))
        .collect();
    for n in &c.nodes {
        wait("masterd ready", LIMIT, || status(n).filter(|s| s.ready));
    }
    let n0 = &c.nodes[0];
    let out = ipfailover(n0, &["getpid"]);
    assert_eq!(text(&out.stdout), format!("{}\n", masterds[0].pid));
    let out = ipfailover(n0, &["-n", "1", "getpid"]);
    assert_eq!(text(&out.stdout), format!("{}\n", masterds[1].pid));
    let out = ipfailover(n0, &["runstate", "running"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "RUNNING\n");
    let out = ipfailover(n0, &["runstate", "setup"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "CTDB not in required run state (got RUNNING)\n"
    );

    // uptime: ctdb's four lines; the last membership change's run ends.
    let out = wait("node 1's last takeover run ended", LIMIT, || {
        let o = ipfailover(n0, &["-n", "1", "uptime"]);
        (o.status.success() && text(&o.stdout).contains(" seconds\n")).then_some(o)
    });
    let up = text(&out.stdout);
    let lines: Vec<&str> = up.lines().collect();
    assert_eq!(lines.len(), 4, "{up}");
    assert!(
        lines[0].starts_with("Current time of node 1        :                "),
        "{up}"
    );
    assert!(
        lines[1].starts_with("Ctdbd start time              : (000 00:00:"),
        "{up}"
    );
    assert!(
        lines[2].starts_with("Time of last recovery/failover: (000 00:00:"),
        "{up}"
    );
    assert!(
        lines[3].starts_with("Duration of last recovery/failover: 0."),
        "{up}"
    );

    // getcapabilities / getreclock from clusterd's settings.
    let out = ipfailover(n0, &["-n", "2", "getcapabilities"]);
    assert_eq!(text(&out.stdout), "LEADER: YES\nLMASTER: NO\n", "{out:?}");
    let out = ipfailover(n0, &["getreclock"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");

    // setleaderrole: node 0 (the leader) may no longer lead, node 1 does.
    let out = ipfailover(n0, &["leader"]);
    assert_eq!(text(&out.stdout), "0\n", "{out:?}");
    let out = ipfailover(n0, &["setleaderrole", "off"]);
    assert!(out.status.success(), "{out:?}");
    let out = ipfailover(n0, &["getcapabilities"]);
    assert_eq!(text(&out.stdout), "LEADER: NO\nLMASTER: NO\n", "{out:?}");
    wait("node 1 leads", LIMIT, || {
        let o = ipfailover(n0, &["leader"]);
        (text(&o.stdout) == "1\n").then_some(())
    });
    let out = ipfailover(n0, &["setleaderrole", "on"]);
    assert!(out.status.success(), "{out:?}");
    let out = ipfailover(n0, &["getcapabilities"]);
    assert_eq!(text(&out.stdout), "LEADER: YES\nLMASTER: NO\n", "{out:?}");

    // setdebug / getdebug on every daemon of a node, in ctdb's words.
    let out = ipfailover(n0, &["-n", "1", "getdebug"]);
    assert_eq!(text(&out.stdout), "NOTICE\n", "{out:?}");
    let out = ipfailover(n0, &["-n", "1", "setdebug", "debug"]);
    assert!(out.status.success(), "{out:?}");
    let out = ipfailover(n0, &["-n", "1", "getdebug"]);
    assert_eq!(text(&out.stdout), "DEBUG\n", "{out:?}");
    let out = ipfailover(n0, &["getdebug"]);
    assert_eq!(text(&out.stdout), "NOTICE\n", "{out:?}");
    let out = ipfailover(n0, &["setdebug", "LOUD"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Invalid debug level 'LOUD'. Valid levels are:\n\tERROR | WARNING | NOTICE | INFO | DEBUG\n"
    );

    // shutdown on node 2 itself: returns once its transportd is gone, and
    // its masterd has exited (status 0: asked to stop).
    let start = Instant::now();
    let out = ipfailover(&c.nodes[2], &["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let exited = wait("node 2's masterd exits", LIMIT, || {
        masterds[2].child.try_wait().ok().flatten()
    });
    assert!(exited.success(), "masterd exited with {exited:?}");
    eprintln!("shutdown took {:?}", start.elapsed());
    let out = wait("node 2 reported as down", LIMIT, || {
        let o = ipfailover(n0, &["-n", "2", "pnn"]);
        (!o.status.success()).then_some(o)
    });
    assert_eq!(
        text(&out.stderr),
        "Node 2 has status DISCONNECTED|INACTIVE\n"
    );
}
