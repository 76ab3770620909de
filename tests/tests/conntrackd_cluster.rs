//! conntrackd as real processes: one transportd and one conntrackd per node
//! namespace on a bridged LAN (tests::cluster::TestCluster), real TCP
//! clients in the client namespace, queries over the transport.
//!
//! Node `i` hosts the public address 192.0.2.(50+i). Nodes learn it from
//! `--host` (as if failoverd had said so at start) except where a test sends
//! failoverd's HOSTED event itself.
//!
//! Needs the binaries: `cargo build --workspace --bins` first.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use conntrackd::daemon::{Hosted, HOSTED};
use tests::cluster::{bin_path, Node, TestCluster};
use tests::netns::{require_root, wait_for, NetNs};
use transport::client::Client;
use transport::msg::conntrack::{
    AddressCount, GetConnections, TrackedConnection, ADD_CONNECTIONS, GET_CONNECTIONS, GET_COUNTS,
    REMOVE_CONNECTIONS,
};
use transport::proto::service::CONNTRACKD;
use transport::proto::{Address, BROADCAST_SERVICE, LOCAL};

const LIMIT: Duration = Duration::from_secs(20);
const EVERY: Duration = Duration::from_millis(100);

/// Node 0's IPv6 public address.
fn public6() -> IpAddr {
    "2001:db8::50".parse().unwrap()
}

fn public(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50 + u8::try_from(i).unwrap()))
}

struct Bed {
    c: TestCluster,
    rt: tokio::runtime::Runtime,
    conntrackd: Vec<Option<u32>>,
    /// Per node, a client registered as `failoverd` (conntrackd believes
    /// HOSTED only from this node's failoverd), kept open so that events
    /// sent through it are delivered.
    failoverd: Vec<Option<Client>>,
}

impl Bed {
    fn new(tag: &str, n: usize) -> Bed {
        Bed::with_scan(tag, n, 500)
    }

    /// A bed whose conntrackd dump the kernel's sockets every `scan_ms`.
    fn with_scan(tag: &str, n: usize, scan_ms: u64) -> Bed {
        require_root();
        let c = TestCluster::new(tag, n).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for (i, node) in c.nodes.iter().enumerate() {
            node.ns
                .ip(&["addr", "add", &format!("{}/24", public(i)), "dev", "eth0"])
                .unwrap();
            if i == 0 {
                node.ns
                    .ip(&[
                        "addr",
                        "add",
                        &format!("{}/64", public6()),
                        "dev",
                        "eth0",
                        "nodad",
                    ])
                    .unwrap();
            }
            std::fs::write(
                node.config_dir.join("ipfailover.toml"),
                format!(
                    "[transport]\nrun_dir = \"{}\"\n\n[conntrack]\nscan_interval_ms = {scan_ms}\n\
                     sync_interval_ms = 1000\n\n[logging]\nlevel = \"debug\"\n",
                    node.run_dir.display()
                ),
            )
            .unwrap();
            start_transportd(node);
        }
        for node in &c.nodes {
            let sock = node.run_dir.join("transport.sock");
            if let Err(e) = wait_for("transportd socket", LIMIT, EVERY, || {
                sock.exists().then_some(())
            }) {
                let log = std::fs::read_to_string(node.run_dir.join("transportd.log"));
                panic!("{e}: {log:?}");
            }
        }
        Bed {
            conntrackd: vec![None; n],
            failoverd: (0..n).map(|_| None).collect(),
            c,
            rt,
        }
    }

    fn start_conntrackd(&mut self, i: usize, host: bool) {
        let node = &self.c.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.run_dir.join("conntrackd.log"))
            .unwrap();
        let bin = bin_path("conntrackd").unwrap();
        let mut cmd = node.ns.command(bin.to_str().unwrap());
        cmd.arg("--config-dir").arg(&node.config_dir);
        if host {
            cmd.args(["--host", &public(i).to_string()]);
            if i == 0 {
                cmd.args(["--host", &public6().to_string()]);
            }
        }
        cmd.stdout(Stdio::null()).stderr(log);
        self.conntrackd[i] = Some(node.spawn(cmd).unwrap());
    }

    fn kill_conntrackd(&mut self, i: usize) {
        if let Some(pid) = self.conntrackd[i].take() {
            assert!(self.c.nodes[i].ns.kill(pid));
        }
    }

    fn logs(&self) -> String {
        self.c
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "--- node {} conntrackd ---\n{}\n",
                    n.pnn,
                    std::fs::read_to_string(n.run_dir.join("conntrackd.log")).unwrap_or_default()
                )
            })
            .collect()
    }

    async fn client(node: &Node) -> Option<Client> {
        Client::connect_unix(node.run_dir.join("transport.sock"), "conntrackd-test")
            .await
            .ok()
            .map(|(c, _)| c)
    }

    /// The connections node `i` holds for `address`, or None if it does not
    /// answer.
    fn query(&self, i: usize, address: IpAddr) -> Option<Vec<TrackedConnection>> {
        let node = &self.c.nodes[i];
        self.rt.block_on(async {
            let c = Self::client(node).await?;
            c.request(
                Address::local(CONNTRACKD),
                GET_CONNECTIONS,
                &GetConnections {
                    address,
                    port: None,
                },
                Duration::from_secs(2),
            )
            .await
            .ok()
        })
    }

    fn counts(&self, i: usize) -> Option<Vec<AddressCount>> {
        let node = &self.c.nodes[i];
        self.rt.block_on(async {
            let c = Self::client(node).await?;
            c.request(
                Address::local(CONNTRACKD),
                GET_COUNTS,
                &(),
                Duration::from_secs(2),
            )
            .await
            .ok()
        })
    }

    /// Waits until every node in `nodes` holds exactly `want` for `address`.
    fn wait_all(&self, nodes: &[usize], address: IpAddr, want: &[TrackedConnection], what: &str) {
        let mut want = want.to_vec();
        want.sort_unstable();
        let r = wait_for(what, LIMIT, EVERY, || {
            nodes
                .iter()
                .all(|i| self.query(*i, address).as_deref() == Some(&want[..]))
                .then_some(())
        });
        if let Err(e) = r {
            let seen: Vec<_> = nodes.iter().map(|i| self.query(*i, address)).collect();
            panic!("{e}: want {want:?}, nodes hold {seen:?}\n{}", self.logs());
        }
    }

    /// Runs `ipfailover --run-dir <node i's> ARGS`: (success, stdout or
    /// stderr).
    fn cli(&self, i: usize, args: &[&str]) -> (bool, String) {
        self.cli_stdin(i, args, "")
    }

    fn cli_stdin(&self, i: usize, args: &[&str], stdin: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = Command::new(bin_path("ipfailover").unwrap())
            .arg("--run-dir")
            .arg(&self.c.nodes[i].run_dir)
            .args(["-t", "5"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        (out.status.success(), text)
    }

    /// Sends failoverd's HOSTED event on node `i`, as failoverd would (from
    /// a client registered as `failoverd`).
    fn send_hosted(&mut self, i: usize, addresses: Vec<IpAddr>) {
        let node = &self.c.nodes[i];
        let sock = node.run_dir.join("transport.sock");
        let slot = &mut self.failoverd[i];
        self.rt.block_on(async {
            if slot.is_none() {
                let (c, _incoming) = Client::connect_unix(&sock, "failoverd")
                    .await
                    .expect("connect to transportd as failoverd");
                *slot = Some(c);
            }
            let c = slot.as_ref().expect("just connected");
            c.event(
                Address::new(LOCAL, BROADCAST_SERVICE),
                HOSTED,
                &Hosted { addresses },
            )
            .await
            .expect("send HOSTED");
        });
    }
}

/// Starts transportd; it finds its pnn from the address it can bind.
fn start_transportd(node: &Node) {
    let log = std::fs::File::create(node.run_dir.join("transportd.log")).unwrap();
    let bin = bin_path("transportd").unwrap();
    let mut cmd = node.ns.command(bin.to_str().unwrap());
    cmd.arg("--run-dir")
        .arg(&node.run_dir)
        .arg("--nodes")
        .arg(node.config_dir.join("nodes"))
        .arg("--key")
        .arg(node.config_dir.join("cluster.key"))
        .stdout(Stdio::null())
        .stderr(log);
    node.spawn(cmd).unwrap();
}

/// A listener on `addr` inside `ns`.
fn listen(ns: &NetNs, addr: SocketAddr) -> TcpListener {
    ns.run(move || TcpListener::bind(addr)).unwrap().unwrap()
}

/// `n` connections from `ns` to `to`, accepted by `l`; returns both ends.
fn connect(ns: &NetNs, l: &TcpListener, to: SocketAddr, n: usize) -> Vec<(TcpStream, TcpStream)> {
    let clients = ns
        .run(move || {
            (0..n)
                .map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(5)))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .unwrap()
        .unwrap();
    clients
        .into_iter()
        .map(|c| {
            let (s, _) = l.accept().unwrap();
            (c, s)
        })
        .collect()
}

fn tracked(pairs: &[(TcpStream, TcpStream)]) -> Vec<TrackedConnection> {
    pairs
        .iter()
        .map(|(c, _)| TrackedConnection {
            client: c.local_addr().unwrap(),
            server: c.peer_addr().unwrap(),
        })
        .collect()
}

fn ip_netns_left(tag: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("ipf-{tag}-"))
}

#[test]
fn connections_appear_everywhere_close_everywhere_and_survive_a_restart() {
    let mut b = Bed::new("ctc", 3);
    b.start_conntrackd(0, true);
    b.start_conntrackd(1, true);
    // Node 2 learns its address from failoverd's HOSTED event.
    b.start_conntrackd(2, false);
    let all = [0, 1, 2];
    let a0 = SocketAddr::new(public(0), 445);
    let a1 = SocketAddr::new(public(1), 445);
    let a2 = SocketAddr::new(public(2), 2049);
    let l0 = listen(&b.c.nodes[0].ns, a0);
    let l1 = listen(&b.c.nodes[1].ns, a1);
    let l2 = listen(&b.c.nodes[2].ns, a2);
    // failoverd repeats HOSTED every few seconds: do the same until node 2
    // reports a connection (the first may precede conntrackd's subscription).
    let pairs2 = connect(&b.c.client, &l2, a2, 3);
    let want2 = tracked(&pairs2);
    wait_for(
        "node 2 to learn its address from HOSTED",
        LIMIT,
        EVERY * 5,
        || {
            b.send_hosted(2, vec![public(2)]);
            (b.query(2, public(2)).map(|v| v.len()) == Some(3)).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", b.logs()));
    b.wait_all(
        &all,
        public(2),
        &want2,
        "node 2's connections on every node",
    );

    let pairs0 = connect(&b.c.client, &l0, a0, 5);
    let want0 = tracked(&pairs0);
    b.wait_all(
        &all,
        public(0),
        &want0,
        "node 0's connections on every node",
    );

    // `ipfailover gettickles` on node 0 prints node 2's connections in
    // CTDB's forms.
    let mut sorted2 = want2.clone();
    sorted2.sort_unstable();
    let human = b.cli(0, &["gettickles", &public(2).to_string()]);
    let mut expect = format!("Connections for IP: {}\nNum connections: 3\n", public(2));
    for c in &sorted2 {
        expect.push_str(&format!("SRC: {}   DST: {}\n", c.client, c.server));
    }
    assert_eq!(human, (true, expect));
    let machine = b.cli(1, &["-X", "gettickles", &public(2).to_string(), "2049"]);
    let mut expect = String::from("|Source IP|Port|Destination IP|Port|\n");
    for c in &sorted2 {
        expect.push_str(&format!(
            "|{}|{}|{}|{}|\n",
            c.client.ip(),
            c.client.port(),
            c.server.ip(),
            c.server.port()
        ));
    }
    assert_eq!(machine, (true, expect));

    // Registration with `ipfailover addtickle` on node 1, and its refusal
    // for an address node 1 does not host.
    let reg = TrackedConnection {
        client: "198.51.100.7:40000".parse().unwrap(),
        server: a1,
    };
    let (ok, out) = b.cli(1, &["addtickle", "198.51.100.7:40000", &a1.to_string()]);
    assert!(ok, "{out}");
    let (ok, out) = b.cli(1, &["addtickle", "198.51.100.7:40001", &a0.to_string()]);
    assert!(!ok && out.contains("not hosted"), "{out}");
    b.wait_all(
        &all,
        public(1),
        &[reg],
        "the registered connection on every node",
    );
    // The same through the transport directly, as a file server would.
    let node1 = &b.c.nodes[1];
    let removed: Result<(), _> = b.rt.block_on(async {
        let c = Bed::client(node1).await.unwrap();
        c.request(
            Address::local(CONNTRACKD),
            REMOVE_CONNECTIONS,
            &vec![reg],
            Duration::from_secs(2),
        )
        .await
    });
    removed.unwrap();
    b.wait_all(
        &all,
        public(1),
        &[],
        "the unregistered connection gone everywhere",
    );
    let node1 = &b.c.nodes[1];
    let added: Result<(), _> = b.rt.block_on(async {
        let c = Bed::client(node1).await.unwrap();
        c.request(
            Address::local(CONNTRACKD),
            ADD_CONNECTIONS,
            &vec![reg],
            Duration::from_secs(2),
        )
        .await
    });
    added.unwrap();
    b.wait_all(&all, public(1), &[reg], "registered again");
    let (ok, out) = b.cli_stdin(1, &["deltickle"], &format!("198.51.100.7:40000 {a1}\n"));
    assert!(ok, "{out}");
    b.wait_all(&all, public(1), &[], "deltickle from stdin");

    // Closing removes them everywhere (conntrack's update to FIN_WAIT; see
    // also closed_connections_leave_every_node_without_a_scan).
    drop(pairs0);
    b.wait_all(&all, public(0), &[], "closed connections gone everywhere");

    // A killed and restarted conntrackd re-learns its own connections and
    // receives the others'.
    let pairs1 = connect(&b.c.client, &l1, a1, 4);
    let want1 = tracked(&pairs1);
    b.wait_all(
        &all,
        public(1),
        &want1,
        "node 1's connections on every node",
    );
    b.kill_conntrackd(1);
    let more0 = connect(&b.c.client, &l0, a0, 2);
    let want0 = tracked(&more0);
    b.wait_all(
        &[0, 2],
        public(0),
        &want0,
        "new connections while node 1 is down",
    );
    b.start_conntrackd(1, true);
    b.wait_all(&all, public(1), &want1, "node 1 re-learns its own");
    b.wait_all(&all, public(0), &want0, "node 1 receives node 0's");
    b.wait_all(&all, public(2), &want2, "node 1 receives node 2's");
    drop((pairs1, pairs2, more0));
    drop(b);
    assert!(!ip_netns_left("ctc"));
}

/// A connection closed by its client, or by the server, leaves the table
/// of every node promptly: the conntrack update to a closing TCP state
/// removes it, not the next sock_diag dump (set to 10 minutes here, so
/// this fails if removal waits for a dump) nor conntrack's DESTROY (after
/// TIME_WAIT, 2 minutes).
#[test]
fn closed_connections_leave_every_node_without_a_scan() {
    const PROMPT: Duration = Duration::from_secs(5);
    let mut b = Bed::with_scan("ctx", 2, 600_000);
    b.start_conntrackd(0, true);
    b.start_conntrackd(1, true);
    let both = [0, 1];
    let a0 = SocketAddr::new(public(0), 445);
    let l0 = listen(&b.c.nodes[0].ns, a0);
    // conntrackd's first dump happens at its start: wait until node 0
    // answers before connecting, so that the connections are learned from
    // conntrack events alone.
    wait_for("node 0's conntrackd", LIMIT, EVERY, || {
        b.counts(0).map(|_| ())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", b.logs()));
    let mut pairs = connect(&b.c.client, &l0, a0, 6);
    b.wait_all(
        &both,
        public(0),
        &tracked(&pairs),
        "six connections everywhere",
    );

    // Two closed by the client, one by the server (its client stays open,
    // in CLOSE_WAIT): all three leave, the other three stay.
    let by_server = pairs.remove(5);
    let by_client = [pairs.remove(0), pairs.remove(0)];
    let (client_end, server_end) = by_server;
    drop(server_end);
    drop(by_client);
    let want = tracked(&pairs);
    let mut sorted = want.clone();
    sorted.sort_unstable();
    let start = std::time::Instant::now();
    let r = wait_for("closed connections gone everywhere", PROMPT, EVERY, || {
        both.iter()
            .all(|i| b.query(*i, public(0)).as_deref() == Some(&sorted[..]))
            .then_some(())
    });
    if let Err(e) = r {
        let seen: Vec<_> = both.iter().map(|i| b.query(*i, public(0))).collect();
        panic!("{e}: want {sorted:?}, nodes hold {seen:?}\n{}", b.logs());
    }
    eprintln!(
        "closed connections gone everywhere after {:?}",
        start.elapsed()
    );
    drop((client_end, pairs));
    drop(b);
    assert!(!ip_netns_left("ctx"));
}

#[test]
fn all_nodes_agree_after_a_partition_heals() {
    let mut b = Bed::new("ctp", 3);
    for i in 0..3 {
        b.start_conntrackd(i, true);
    }
    let all = [0, 1, 2];
    let a0 = SocketAddr::new(public(0), 445);
    let a2 = SocketAddr::new(public(2), 445);
    let l0 = listen(&b.c.nodes[0].ns, a0);
    let l2 = listen(&b.c.nodes[2].ns, a2);
    let before = connect(&b.c.client, &l0, a0, 2);
    b.wait_all(
        &all,
        public(0),
        &tracked(&before),
        "connections before the partition",
    );

    // Cut node 2 off from nodes 0 and 1 (the client still reaches all).
    let ns2 = &b.c.nodes[2].ns;
    ns2.exec_ok(
        "nft",
        &["add table inet cut; \
             add chain inet cut in { type filter hook input priority 0; }; \
             add chain inet cut out { type filter hook output priority 0; }; \
             add rule inet cut in ip saddr { 192.0.2.10, 192.0.2.11 } drop; \
             add rule inet cut out ip daddr { 192.0.2.10, 192.0.2.11 } drop"],
    )
    .unwrap();
    let during0 = connect(&b.c.client, &l0, a0, 3);
    let during2 = connect(&b.c.client, &l2, a2, 4);
    drop(before);
    let want0 = tracked(&during0);
    let want2 = tracked(&during2);
    b.wait_all(&[0, 1], public(0), &want0, "changes on the majority side");
    b.wait_all(&[2], public(2), &want2, "changes on the cut-off node");
    // Stay cut off past conntrackd's peer timeout (3 missed announcements
    // of 1 s), so that both sides forget each other and must re-sync on
    // contact rather than rely on TCP retransmissions alone.
    std::thread::sleep(Duration::from_secs(4));
    // Node 2 has not seen them while cut off.
    assert_ne!(b.query(2, public(0)).as_deref(), Some(&want0[..]));

    ns2.exec_ok("nft", &["delete table inet cut"]).unwrap();
    b.wait_all(
        &all,
        public(0),
        &want0,
        "node 0's table everywhere after healing",
    );
    b.wait_all(
        &all,
        public(2),
        &want2,
        "node 2's table everywhere after healing",
    );
    let counts: Vec<_> = all.iter().map(|i| b.counts(*i)).collect();
    assert!(counts[0].is_some(), "{}", b.logs());
    assert!(counts.iter().all(|c| c == &counts[0]), "{counts:?}");
    drop((during0, during2));
    drop(b);
    assert!(!ip_netns_left("ctp"));
}

#[test]
fn bad_configuration_is_refused_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("ipfailover-ct-badconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ipfailover.toml"),
        "[conntrack]\nscan_interval_ms = 1000\nno_such_key = 1\n",
    )
    .unwrap();
    let out = Command::new(bin_path("conntrackd").unwrap())
        .arg("--config-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ipfailover.toml") && err.contains('3'),
        "{err}"
    );
    assert!(err.contains("no_such_key"), "{err}");
}

/// Replication comes only from the other nodes' conntrackd: a sync chunk
/// sent by another service of node 0 (a root tool registered under any
/// name) in node 0's name, listing a made-up client of node 0's address,
/// does not reach node 1's table; the real replication still does (#14).
#[test]
fn replication_not_from_a_conntrackd_is_ignored() {
    use conntrackd::msg::{encode, Msg, SyncChunk};
    use conntrackd::{Conn, Version};
    use transport::msg::conntrack::REPLICATION;

    let mut b = Bed::new("ctforge", 2);
    b.start_conntrackd(0, true);
    b.start_conntrackd(1, true);
    let a0 = SocketAddr::new(public(0), 445);
    let l0 = listen(&b.c.nodes[0].ns, a0);
    let pairs = connect(&b.c.client, &l0, a0, 1);
    let real = tracked(&pairs);
    b.wait_all(&[0, 1], public(0), &real, "the real connection everywhere");

    let forged_client: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let chunk = Msg::Sync(SyncChunk {
        reporter: 0,
        address: public(0),
        version: Version::new(u32::MAX, u64::MAX / 2),
        index: 0,
        total: 1,
        conns: vec![Conn {
            client: forged_client,
            public_port: 445,
        }],
    });
    let bytes = encode(&chunk).unwrap();
    let sock = b.c.nodes[0].run_dir.join("transport.sock");
    b.rt.block_on(async {
        let (forger, _incoming) = Client::connect_unix(&sock, "forger").await.unwrap();
        for _ in 0..3 {
            forger
                .event_raw(Address::new(1, CONNTRACKD), REPLICATION, bytes.clone())
                .await
                .unwrap();
        }
    });
    // Node 1 keeps the real view for a while: the forged chunk (a newer
    // version of node 0's view) would have replaced it.
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let held = b.query(1, public(0));
        assert_eq!(
            held.as_deref(),
            Some(&real[..]),
            "node 1 took the forged sync\n{}",
            b.logs()
        );
        std::thread::sleep(EVERY);
    }
    let log = std::fs::read_to_string(b.c.nodes[1].run_dir.join("conntrackd.log")).unwrap();
    assert!(
        log.contains("replication not from a conntrackd"),
        "the forgery was not logged\n{log}"
    );
    drop(pairs);
    drop(b);
    assert!(!ip_netns_left("ctforge"));
}
