//! The same cluster test in both of masterd's process models: three node
//! namespaces and a client on one LAN, a real `masterd` per node (child
//! processes, or `--single-process`), six public addresses
//! 192.0.2.201-206/24 on `eth0`.
//!
//! One body, parameterised by the model, checks: every node becomes ready;
//! every address is hosted exactly once; the `LOG_LEVEL` control changes
//! what a running daemon logs (and, in the single-process model, governs
//! every daemon at once); a daemon that stops on its own (a `SHUTDOWN`
//! control sent to failoverd's service) is restarted by masterd, counted,
//! and hosts addresses again; so is transportd (and the daemons that lose
//! their connection to it), after which the node serves again; a power-off (cable pulled, masterd SIGKILLed)
//! moves the victim's addresses to the survivors, the client's idle
//! connection to one of them is reset by a tickle and a new connection
//! reaches it at its new home; SIGTERM to the surviving masterds leaves no
//! public address configured anywhere.

mod masterd_support;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use masterd_support::{status, wait, Masterd};
use tests::cluster::{bin_path, Node, TestCluster};
use tests::netns::require_root;
use transport::client::Client;
use transport::msg::master::{DaemonState, MasterStatus, Model};
use transport::proto::control::{
    LogLevelReply, LogLevelRequest, PingReply, PingRequest, LOG_LEVEL, PING, SHUTDOWN,
};
use transport::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, TRANSPORT};
use transport::proto::Address;

const LIMIT: Duration = Duration::from_secs(40);
const PORT: u16 = 7446;
const PUBLIC: [u8; 6] = [201, 202, 203, 204, 205, 206];

fn public(i: u8) -> IpAddr {
    format!("192.0.2.{i}").parse().unwrap()
}

fn write_config(node: &Node) {
    std::fs::write(
        node.config_dir.join("ipfailover.toml"),
        format!(
            "[transport]\nrun_dir = \"{}\"\n\n\
             [failover]\ngarp_count = 3\ngarp_interval_ms = 100\nrelease_timeout_ms = 3000\n\n\
             [conntrack]\nscan_interval_ms = 200\n\n\
             [logging]\nlevel = \"info\"\n",
            node.run_dir.display()
        ),
    )
    .unwrap();
    let pa: String = PUBLIC
        .iter()
        .map(|i| format!("192.0.2.{i}/24 eth0\n"))
        .collect();
    std::fs::write(node.config_dir.join("public_addresses"), pa).unwrap();
}

/// The public addresses configured in namespace `ns`.
fn addresses_on(ns: &str) -> Vec<IpAddr> {
    let Ok(out) = Command::new("ip")
        .args(["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            f.find(|w| *w == "inet")?;
            let a: IpAddr = f.next()?.split('/').next()?.parse().ok()?;
            PUBLIC.iter().any(|&i| public(i) == a).then_some(a)
        })
        .collect()
}

/// Which of the `powered` nodes hosts each public address, if every one is
/// hosted exactly once.
fn placement(c: &TestCluster, powered: &[bool]) -> Option<BTreeMap<IpAddr, usize>> {
    let mut at: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for (i, n) in c.nodes.iter().enumerate() {
        if powered[i] {
            for a in addresses_on(n.ns.name()) {
                at.entry(a).or_default().push(i);
            }
        }
    }
    PUBLIC
        .iter()
        .map(|&k| match at.get(&public(k)).map(Vec::as_slice) {
            Some([one]) => Some((public(k), *one)),
            _ => None,
        })
        .collect()
}

/// One request from a fresh client on `node`'s transportd.
fn request<Req, Rep>(node: &Node, to: u16, opcode: u32, req: Req) -> Result<Rep, String>
where
    Req: serde::Serialize + Send + 'static,
    Rep: serde::de::DeserializeOwned + Send + 'static,
{
    let sock = node.run_dir.join("transport.sock");
    node.ns
        .block_on(move || async move {
            let (client, _incoming) = Client::connect_unix(&sock, "test")
                .await
                .map_err(|e| e.to_string())?;
            client
                .request::<Req, Rep>(Address::local(to), opcode, &req, Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
}

fn log_level(node: &Node, to: u16, set: Option<&str>) -> String {
    let r: LogLevelReply = request(
        node,
        to,
        LOG_LEVEL,
        LogLevelRequest {
            set: set.map(str::to_owned),
        },
    )
    .unwrap();
    r.level
}

fn daemon<'a>(s: &'a MasterStatus, name: &str) -> &'a transport::msg::master::DaemonStatus {
    s.daemons.iter().find(|d| d.name == name).unwrap()
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `ipfailover ARGS` against `node`'s sockets: success and output.
fn cli(node: &Node, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin_path("ipfailover").unwrap())
        .arg("--run-dir")
        .arg(&node.run_dir)
        .args(["-t", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn cluster_test(model: Model) {
    require_root();
    let single = model == Model::SingleProcess;
    let c = TestCluster::new(if single { "mdc-s" } else { "mdc-m" }, 3).unwrap();
    for n in &c.nodes {
        write_config(n);
    }
    let logs: Vec<PathBuf> = (0..3)
        .map(|i| c.scratch.join(format!("masterd{i}.log")))
        .collect();
    let args: &[&str] = if single { &["--single-process"] } else { &[] };
    let mut ms: Vec<Option<Masterd>> = c
        .nodes
        .iter()
        .zip(&logs)
        .map(|(n, log)| Some(Masterd::start(n, args, None, Some(log))))
        .collect();
    let all_logs = || {
        logs.iter()
            .enumerate()
            .map(|(i, p)| format!("--- node {i}\n{}\n", tail(p)))
            .collect::<String>()
    };

    // Ready, in the model asked for, with every daemon.
    for (i, n) in c.nodes.iter().enumerate() {
        let s = tests::netns::wait_for("masterd ready", LIMIT, Duration::from_millis(50), || {
            status(n).filter(|s| s.ready)
        })
        .unwrap_or_else(|e| panic!("node {i}: {e}\n{}", all_logs()));
        assert_eq!(s.model, model);
        let names: Vec<&str> = s.daemons.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["transportd", "clusterd", "conntrackd", "failoverd"]);
        assert!(
            s.daemons.iter().all(|d| d.state == DaemonState::Running),
            "{s:?}"
        );
        if single {
            assert!(s.daemons.iter().all(|d| d.pid == Some(s.pid)), "{s:?}");
        } else {
            assert!(s.daemons.iter().all(|d| d.pid != Some(s.pid)), "{s:?}");
        }
    }
    let mut powered = vec![true; 3];
    let placed = |what: &str, powered: &[bool]| {
        tests::netns::wait_for(what, LIMIT, Duration::from_millis(50), || {
            placement(&c, powered)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", all_logs()))
    };
    placed("every address hosted exactly once", &powered);

    // The log level changes at run time. Node 0's log has no debug line yet;
    // after LOG_LEVEL=debug to transportd, a new local client makes
    // transportd log one.
    let n0 = &c.nodes[0];
    assert!(!tail(&logs[0]).contains("local client registered"));
    assert_eq!(log_level(n0, TRANSPORT, Some("debug")), "debug");
    wait("transportd logs at debug level", LIMIT, || {
        let _ = status(n0); // a new local client
        tail(&logs[0])
            .contains("local client registered")
            .then_some(())
    });
    // One filter for the whole process in the single-process model; each
    // process its own in the multi-process model.
    let expected = if single { "debug" } else { "info" };
    assert_eq!(log_level(n0, FAILOVERD, None), expected);
    assert_eq!(log_level(n0, TRANSPORT, Some("info")), "info");

    // A daemon that stops on its own is restarted and counted.
    let before = status(n0).unwrap();
    let () = request(n0, FAILOVERD, SHUTDOWN, ()).unwrap();
    let s = wait("failoverd restarted", LIMIT, || {
        status(n0).filter(|s| {
            let f = daemon(s, "failoverd");
            f.restarts == daemon(&before, "failoverd").restarts + 1
                && f.state == DaemonState::Running
        })
    });
    assert!(daemon(&s, "failoverd").last_exit.is_some(), "{s:?}");
    if !single {
        assert_ne!(
            daemon(&s, "failoverd").pid,
            daemon(&before, "failoverd").pid
        );
    }
    wait("restarted failoverd answers", LIMIT, || {
        request::<_, PingReply>(n0, FAILOVERD, PING, PingRequest { data: Vec::new() })
            .ok()
            .map(|_| ())
    });
    placed("every address hosted once after the restart", &powered);
    assert!(tail(&logs[0]).contains("restarted"), "{}", tail(&logs[0]));

    // transportd itself stops on its own: masterd restarts it, the daemons
    // that lose their connection end and are restarted too, and the node
    // serves again.
    let before = status(n0).unwrap();
    let _: Result<(), String> = request(n0, TRANSPORT, SHUTDOWN, ()); // the reply may be lost
    wait("transportd and the daemons back", LIMIT, || {
        status(n0).filter(|s| {
            daemon(s, "transportd").restarts > daemon(&before, "transportd").restarts
                && s.daemons.iter().all(|d| d.state == DaemonState::Running)
        })
    });
    for svc in [CLUSTERD, CONNTRACKD, FAILOVERD] {
        wait(
            "every daemon answers after transportd's restart",
            LIMIT,
            || {
                request::<_, PingReply>(n0, svc, PING, PingRequest { data: Vec::new() })
                    .ok()
                    .map(|_| ())
            },
        );
    }
    let placement_now = placed(
        "every address hosted once after transportd's restart",
        &powered,
    );

    // Power-off: an idle client of the victim is reset by a tickle, the
    // victim's addresses move to the survivors, and the client reaches the
    // address at its new home.
    let victim = placement_now[&public(201)];
    let stop = Arc::new(AtomicBool::new(false));
    c.listen_everywhere(PORT, &stop).unwrap();
    let server = SocketAddr::new(public(201), PORT);
    let stream = c
        .client
        .run(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)).unwrap())
        .unwrap();
    let survivor = (victim + 1) % 3;
    tests::netns::wait_for(
        "the connection replicated to a survivor",
        LIMIT,
        Duration::from_millis(100),
        || {
            let (ok, text) = cli(&c.nodes[survivor], &["gettickles", "192.0.2.201"]);
            (ok && text.contains("Num connections: 1")).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", all_logs()));
    let reader = std::thread::spawn(move || {
        let mut stream = stream;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 8];
        stream.read(&mut buf).map_err(|e| e.kind())
    });
    let t0 = Instant::now();
    powered[victim] = false;
    c.lan.set_port(&c.nodes[victim].port, false).unwrap();
    drop(ms[victim].take()); // SIGKILL: the node is gone
    let moved = placed("the victim's addresses hosted by survivors", &powered);
    let took = t0.elapsed();
    assert!(moved.values().all(|&n| n != victim), "{moved:?}");
    let read = reader.join().unwrap();
    eprintln!("{model}: power-off to all addresses re-hosted: {took:?}");
    assert_eq!(
        read,
        Err(ErrorKind::ConnectionReset),
        "the idle client was not reset by a tickle\n{}",
        all_logs()
    );
    wait("a new connection to the moved address", LIMIT, || {
        c.client
            .run(move || TcpStream::connect_timeout(&server, Duration::from_millis(500)).is_ok())
            .unwrap()
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);

    // SIGTERM: the survivors stop cleanly and leave no public address.
    for (i, m) in ms.iter_mut().enumerate() {
        if let Some(m) = m {
            let st = m.terminate(LIMIT).expect("masterd stops after SIGTERM");
            assert!(st.success(), "node {i}: {st:?}\n{}", tail(&logs[i]));
        }
    }
    for (i, n) in c.nodes.iter().enumerate() {
        if powered[i] {
            assert_eq!(
                addresses_on(n.ns.name()),
                Vec::<IpAddr>::new(),
                "node {i} kept public addresses after SIGTERM"
            );
            assert!(!n.run_dir.join("transport.sock").exists());
        }
    }
}

#[test]
fn masterd_cluster_multi_process() {
    cluster_test(Model::MultiProcess);
}

#[test]
fn masterd_cluster_single_process() {
    cluster_test(Model::SingleProcess);
}
