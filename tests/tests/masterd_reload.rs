//! SIGHUP to masterd reloads the node's configuration, in both process
//! models (one node namespace, a real masterd with every daemon):
//!
//! * a bad `public_addresses` (with a new log level in ipfailover.toml) is
//!   refused with a log line naming `public_addresses:2`, and nothing
//!   changes: no daemon's log level, no address;
//! * fixed, a second SIGHUP applies both: every daemon logs at the new
//!   level and the added address appears on the node; the daemons are
//!   the same (no restart);
//! * clusterd's health command is started and stopped by reloads (the node
//!   turns UNHEALTHY, then OK), and a setting that needs a restart is
//!   logged as such; a node added to `nodes` is taken (the reloadnodes
//!   path) and listed by `ipfailover status`.

mod masterd_support;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use masterd_support::{status, wait, Masterd};
use tests::cluster::{Node, TestCluster};
use tests::netns::require_root;
use transport::client::Client;
use transport::msg::master::DaemonState;
use transport::proto::control::{LogLevelReply, LogLevelRequest, LOG_LEVEL};
use transport::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, TRANSPORT};
use transport::proto::Address;

const LIMIT: Duration = Duration::from_secs(30);

fn write_toml(node: &Node, level: &str) {
    write_toml_with(node, level, "");
}

/// ipfailover.toml with `level` and `extra` lines at the end of `[cluster]`.
fn write_toml_with(node: &Node, level: &str, extra: &str) {
    std::fs::write(
        node.config_dir.join("ipfailover.toml"),
        format!(
            "[cluster]\n{extra}\n\
             [transport]\nrun_dir = \"{}\"\n\n\
             [failover]\ngarp_count = 1\ngarp_interval_ms = 100\nrelease_timeout_ms = 3000\n\n\
             [logging]\nlevel = \"{level}\"\n",
            node.run_dir.display()
        ),
    )
    .unwrap();
}

/// `ipfailover status` on `node`.
fn cli_status(node: &Node) -> String {
    let out = Command::new(tests::cluster::bin_path("ipfailover").unwrap())
        .arg("--run-dir")
        .arg(&node.run_dir)
        .args(["-t", "5", "status"])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_publics(node: &Node, text: &str) {
    std::fs::write(node.config_dir.join("public_addresses"), text).unwrap();
}

/// The 192.0.2.20x addresses configured on eth0 in namespace `ns`.
fn publics_on(ns: &str) -> Vec<IpAddr> {
    let Ok(out) = Command::new("ip")
        .args(["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"])
        .output()
    else {
        return Vec::new();
    };
    let mut v: Vec<IpAddr> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            f.find(|w| *w == "inet")?;
            let a: IpAddr = f.next()?.split('/').next()?.parse().ok()?;
            a.to_string().starts_with("192.0.2.20").then_some(a)
        })
        .collect();
    v.sort();
    v
}

/// The log level of service `to` on `node`.
fn level(node: &Node, to: u16) -> Result<String, String> {
    let sock = node.run_dir.join("transport.sock");
    node.ns
        .block_on(move || async move {
            let (client, _incoming) = Client::connect_unix(&sock, "test")
                .await
                .map_err(|e| e.to_string())?;
            client
                .request::<_, LogLevelReply>(
                    Address::local(to),
                    LOG_LEVEL,
                    &LogLevelRequest { set: None },
                    Duration::from_secs(5),
                )
                .await
                .map(|r| r.level)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
}

fn hang_up(m: &Masterd) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(m.pid).unwrap()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn reload_test(single: bool) {
    require_root();
    let c = TestCluster::new(if single { "mdhup-s" } else { "mdhup-m" }, 1).unwrap();
    let n = &c.nodes[0];
    write_toml(n, "info");
    write_publics(n, "192.0.2.201/24 eth0\n");
    let log = c.scratch.join("masterd.log");
    let args: &[&str] = if single { &["--single-process"] } else { &[] };
    let m = Masterd::start(n, args, None, Some(&log));
    let ready = tests::netns::wait_for("masterd ready", LIMIT, Duration::from_millis(50), || {
        status(n).filter(|s| s.ready)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", log_of(&log)));
    let pids: Vec<Option<u32>> = ready.daemons.iter().map(|d| d.pid).collect();
    let one: Vec<IpAddr> = vec!["192.0.2.201".parse().unwrap()];
    tests::netns::wait_for(
        "192.0.2.201 hosted",
        LIMIT,
        Duration::from_millis(50),
        || (publics_on(n.ns.name()) == one).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", log_of(&log)));
    let services = [TRANSPORT, CLUSTERD, CONNTRACKD, FAILOVERD];
    for s in services {
        assert_eq!(level(n, s).as_deref(), Ok("info"), "service {s}");
    }

    // A bad file: refused, naming file and line; nothing changes.
    write_toml(n, "debug");
    write_publics(
        n,
        "192.0.2.201/24 eth0\n192.0.2.300/24 eth0\n192.0.2.202/24 eth0\n",
    );
    hang_up(&m);
    let refused = wait("the reload refused", LIMIT, || {
        log_of(&log)
            .lines()
            .find(|l| l.contains("reload refused") && l.contains("public_addresses:2"))
            .map(str::to_owned)
    });
    assert!(refused.contains("ERROR"), "{refused}");
    std::thread::sleep(Duration::from_secs(1));
    for s in services {
        assert_eq!(level(n, s).as_deref(), Ok("info"), "service {s}");
    }
    assert_eq!(publics_on(n.ns.name()), one);

    // Fixed: both applied, by the same daemons.
    write_publics(n, "192.0.2.201/24 eth0\n192.0.2.202/24 eth0\n");
    hang_up(&m);
    let two: Vec<IpAddr> = vec![
        "192.0.2.201".parse().unwrap(),
        "192.0.2.202".parse().unwrap(),
    ];
    tests::netns::wait_for(
        "192.0.2.202 added",
        LIMIT,
        Duration::from_millis(50),
        || (publics_on(n.ns.name()) == two).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", log_of(&log)));
    for s in services {
        let l = wait("the new log level", LIMIT, || {
            level(n, s).ok().filter(|l| l == "debug")
        });
        assert_eq!(l, "debug", "service {s}");
    }
    let text = log_of(&log);
    assert!(text.contains("reload: [logging] level changed"), "{text}");
    assert!(text.contains("reload: public_addresses changed"), "{text}");
    let s = status(n).expect("status");
    assert!(
        s.daemons.iter().all(|d| d.state == DaemonState::Running),
        "{s:?}"
    );
    let after: Vec<Option<u32>> = s.daemons.iter().map(|d| d.pid).collect();
    assert_eq!(after, pids, "a reload restarts no daemon");
    assert!(s.daemons.iter().all(|d| d.restarts == 0), "{s:?}");

    // clusterd: a health command set by a reload runs (the node turns
    // UNHEALTHY), removed by the next one the node is healthy again; a
    // setting that needs a restart is named.
    write_toml_with(
        n,
        "debug",
        "health_command = \"/bin/false\"\nhealth_interval_ms = 100\nleader_capability = false\n",
    );
    hang_up(&m);
    wait("the node unhealthy", LIMIT, || {
        cli_status(n).contains("UNHEALTHY").then_some(())
    });
    let text = log_of(&log);
    assert!(
        text.contains("needs a restart: [cluster] leader_capability"),
        "{text}"
    );
    write_toml(n, "debug");
    hang_up(&m);
    wait("the node healthy again", LIMIT, || {
        let st = cli_status(n);
        (st.contains("OK") && !st.contains("UNHEALTHY")).then_some(())
    });
    // Back to the settings it started with: nothing needs a restart.
    let text = log_of(&log);
    assert_eq!(
        text.matches("needs a restart: [cluster] leader_capability")
            .count(),
        1,
        "{text}"
    );
    // clusterd: a node added to the nodes file is taken through the
    // reloadnodes path (the membership checks it, transportd and
    // conntrackd get the list): `ipfailover status` lists it.
    assert!(!cli_status(n).contains("pnn:1"));
    let nodes = n.config_dir.join("nodes");
    let mut list = std::fs::read_to_string(&nodes).unwrap();
    list.push_str("203.0.113.99\n");
    std::fs::write(&nodes, list).unwrap();
    hang_up(&m);
    wait("the added node listed", LIMIT, || {
        cli_status(n).contains("pnn:1 203.0.113.99").then_some(())
    });
    let s = status(n).expect("status");
    let after: Vec<Option<u32>> = s.daemons.iter().map(|d| d.pid).collect();
    assert_eq!(after, pids, "a reload restarts no daemon");
    let mut m = m;
    let st = m.terminate(LIMIT);
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
}

#[test]
fn masterd_sighup_reloads_multi_process() {
    reload_test(false);
}

#[test]
fn masterd_sighup_reloads_single_process() {
    reload_test(true);
}
