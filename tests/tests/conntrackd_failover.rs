//! A failover tickles exactly the connections that were open: real
//! transportd, clusterd, conntrackd and failoverd on each node of a 3-node
//! [`TestCluster`] (set up as in `failover_cluster.rs`: the public address
//! on each node's `eth1`, a second port on the same switch; the client has
//! 198.51.100.100/24), a real TCP client, and a capture in the client's
//! namespace of what the new owner sends to the client.
//!
//! conntrackd's periodic dump is set to 10 minutes, so the table follows
//! the connections only through conntrack events: a connection closed
//! before the failover must have left every node's table through the
//! conntrack update to a closing TCP state.
//!
//! Needs root, tcpdump and the binaries (`cargo build --workspace --bins`).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use tests::cluster::TestCluster;
use tests::netns::{require_root, wait_for};
use transport::client::Client;
use transport::msg::conntrack::{get_connections, GetConnections, TrackedConnection};
use transport::proto::service::CONNTRACKD;
use transport::proto::Address;

const POLL: Duration = Duration::from_millis(50);
const LIMIT: Duration = Duration::from_secs(40);
const PORT: u16 = 7446;
/// The one public address.
const PUBLIC: &str = "198.51.100.201";
const CLIENT: &str = "198.51.100.100";

fn public() -> IpAddr {
    PUBLIC.parse().unwrap()
}

/// The cluster and each node's `eth1` switch port.
struct Bed {
    c: TestCluster,
    eth1_ports: Vec<String>,
}

impl Bed {
    fn new(tag: &str) -> Bed {
        let c = TestCluster::new(tag, 3).unwrap();
        let eth1_ports = c.add_public_ports(&format!("{CLIENT}/24")).unwrap();
        for n in &c.nodes {
            let toml = format!(
                "[transport]\nrun_dir = \"{}\"\n\n\
                 [failover]\ngarp_count = 3\ngarp_interval_ms = 100\nrelease_timeout_ms = 3000\n\n\
                 [conntrack]\nscan_interval_ms = 600000\nsync_interval_ms = 1000\n\n\
                 [logging]\nlevel = \"info,failoverd=debug,conntrackd=debug\"\n",
                n.run_dir.display()
            );
            std::fs::write(n.config_dir.join("ipfailover.toml"), toml).unwrap();
            std::fs::write(
                n.config_dir.join("public_addresses"),
                format!("{PUBLIC}/24 eth1\n"),
            )
            .unwrap();
        }
        let bed = Bed { c, eth1_ports };
        for i in 0..bed.c.nodes.len() {
            bed.start(i);
        }
        bed
    }

    fn start(&self, i: usize) {
        self.c.start_transportd(i).unwrap();
        for name in ["clusterd", "conntrackd", "failoverd"] {
            self.c.start_daemon(i, name).unwrap();
        }
    }

    /// Pulls both of node `i`'s cables and SIGKILLs its processes.
    fn power_off(&self, i: usize) {
        self.c.lan.set_port(&self.eth1_ports[i], false).unwrap();
        self.c.power_off(i).unwrap();
    }

    fn logs(&self) -> String {
        self.c.log_tails(&["failoverd", "conntrackd"], 60)
    }

    /// The one node (among `candidates`) that has the public address.
    fn owner(&self, candidates: &[usize]) -> Option<usize> {
        let having: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| {
                self.c.nodes[*i]
                    .ns
                    .exec_ok("ip", &["-o", "-4", "addr", "show", "dev", "eth1"])
                    .is_ok_and(|out| out.contains(&format!("inet {PUBLIC}/")))
            })
            .collect();
        match having[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The connections node `i`'s conntrackd holds for the public address,
    /// sorted, or None when it does not answer.
    fn tracked_on(&self, i: usize) -> Option<Vec<TrackedConnection>> {
        let sock = self.c.nodes[i].run_dir.join("transport.sock");
        self.c.nodes[i]
            .ns
            .block_on(move || async move {
                let (c, _incoming) = Client::connect_unix(&sock, "test").await.ok()?;
                get_connections(
                    &c,
                    Address::local(CONNTRACKD),
                    GetConnections {
                        address: public(),
                        port: None,
                    },
                    Duration::from_secs(2),
                )
                .await
                .ok()
            })
            .ok()
            .flatten()
    }
}

/// One line of tcpdump's `-n -t` output: the destination port and the
/// flags of a segment from the public address's port to the client.
fn segment(line: &str) -> Option<(u16, String)> {
    // "IP 198.51.100.201.7446 > 198.51.100.100.40000: Flags [.], ack 0, ..."
    let mut words = line.split_whitespace();
    words.find(|w| *w == "IP")?;
    let src = words.next()?;
    if src != format!("{PUBLIC}.{PORT}") {
        return None;
    }
    words.next().filter(|w| *w == ">")?;
    let dst = words.next()?.trim_end_matches(':');
    let (host, port) = dst.rsplit_once('.')?;
    if host != CLIENT {
        return None;
    }
    let flags = line.split_once("Flags [")?.1.split_once(']')?.0.to_string();
    Some((port.parse().ok()?, flags))
}

#[test]
fn segment_lines_are_parsed() {
    let l = "IP 198.51.100.201.7446 > 198.51.100.100.40000: Flags [.], ack 0, win 1234, length 0";
    assert_eq!(segment(l), Some((40000, ".".to_string())));
    let r = "IP 198.51.100.201.7446 > 198.51.100.100.40001: Flags [R], seq 1, win 0, length 0";
    assert_eq!(segment(r), Some((40001, "R".to_string())));
    assert_eq!(
        segment("IP 198.51.100.202.7446 > 198.51.100.100.1: Flags [.]"),
        None
    );
    assert_eq!(segment("ARP, Request who-has 198.51.100.201"), None);
}

#[test]
fn a_failover_tickles_exactly_the_connections_that_were_open() {
    const N: usize = 10;
    const CLOSED: usize = 4;
    require_root();
    let bed = Bed::new("ctf");
    let all = [0, 1, 2];
    let owner = wait_for("the public address placed", LIMIT, POLL, || bed.owner(&all))
        .unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
    let to = SocketAddr::new(public(), PORT);
    let listener = bed.c.nodes[owner]
        .ns
        .run(move || TcpListener::bind(to))
        .unwrap()
        .unwrap();
    // conntrackd must follow failoverd's HOSTED before the client
    // connects, or its NEW events are not watched yet: wait until a probe
    // connection is tracked on every node, then close it.
    let probe_ok = wait_for("conntrackd tracking the address", LIMIT, POLL * 4, || {
        let probe = bed
            .c
            .client
            .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
            .ok()?
            .ok()?;
        let (server, _) = listener.accept().ok()?;
        let me = probe.local_addr().ok()?;
        let seen = wait_for("the probe", Duration::from_secs(2), POLL, || {
            all.iter()
                .all(|i| {
                    bed.tracked_on(*i)
                        .is_some_and(|v| v.iter().any(|c| c.client == me))
                })
                .then_some(())
        });
        drop((probe, server));
        seen.ok()
    });
    probe_ok.unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));

    let mut pairs: Vec<(TcpStream, TcpStream)> = (0..N)
        .map(|_| {
            let c = bed
                .c
                .client
                .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
                .unwrap()
                .unwrap();
            let (s, _) = listener.accept().unwrap();
            (c, s)
        })
        .collect();
    // The client closes some (the server closes its end too).
    let closed: Vec<(TcpStream, TcpStream)> = pairs.drain(..CLOSED).collect();
    let closed_ports: BTreeSet<u16> = closed
        .iter()
        .map(|(c, _)| c.local_addr().unwrap().port())
        .collect();
    drop(closed);
    let open: Vec<TrackedConnection> = {
        let mut v: Vec<TrackedConnection> = pairs
            .iter()
            .map(|(c, _)| TrackedConnection {
                client: c.local_addr().unwrap(),
                server: to,
            })
            .collect();
        v.sort_unstable();
        v
    };
    let open_ports: BTreeSet<u16> = open.iter().map(|c| c.client.port()).collect();
    let r = wait_for(
        "only the open connections on every node",
        LIMIT,
        POLL,
        || {
            all.iter()
                .all(|i| bed.tracked_on(*i).as_deref() == Some(&open[..]))
                .then_some(())
        },
    );
    if let Err(e) = r {
        let seen: Vec<_> = all.iter().map(|i| bed.tracked_on(*i)).collect();
        panic!("{e}: want {open:?}, nodes hold {seen:?}\n{}", bed.logs());
    }

    // Capture what reaches the client from the public address.
    let out_path = bed.c.scratch.join("tickles.txt");
    let err_path = bed.c.scratch.join("tcpdump.err");
    let mut dump = bed.c.client.command("tcpdump");
    dump.args(["-n", "-t", "-l", "--immediate-mode", "-i", "eth0"])
        .arg(format!("tcp and src host {PUBLIC} and src port {PORT}"))
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    let tcpdump = bed.c.client.spawn(dump).unwrap();
    wait_for("tcpdump listening", Duration::from_secs(10), POLL, || {
        std::fs::read_to_string(&err_path)
            .ok()
            .filter(|t| t.contains("listening on"))
    })
    .unwrap();

    bed.power_off(owner);
    let survivors: Vec<usize> = all.iter().copied().filter(|i| *i != owner).collect();
    let new_owner = wait_for("the address on a survivor", LIMIT, POLL, || {
        bed.owner(&survivors)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
    let read = || -> Vec<(u16, String)> {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .lines()
            .filter_map(segment)
            .collect()
    };
    let all_tickled = wait_for("a tickle to every open connection", LIMIT, POLL, || {
        let ports: BTreeSet<u16> = read().into_iter().map(|(p, _)| p).collect();
        open_ports.is_subset(&ports).then_some(())
    });
    // Late tickles (failoverd repeats them every 100 ms, 3 rounds) must
    // be in the capture too before it is judged.
    std::thread::sleep(Duration::from_secs(2));
    bed.c.client.kill(tcpdump);
    let segments = read();
    let tickled: BTreeSet<u16> = segments.iter().map(|(p, _)| p.to_owned()).collect();
    eprintln!(
        "owner {owner} -> {new_owner}; {} segments to {} ports; open {open_ports:?}, closed {closed_ports:?}",
        segments.len(),
        tickled.len()
    );
    if let Err(e) = all_tickled {
        panic!(
            "{e}: tickled {tickled:?}, open {open_ports:?}\n{segments:?}\n{}",
            bed.logs()
        );
    }
    assert_eq!(
        tickled, open_ports,
        "tickled ports differ from the open connections (closed: {closed_ports:?})\n{segments:?}"
    );
    // Each open connection got a tickle ACK (flags "."), not only a RST.
    for p in &open_ports {
        assert!(
            segments.iter().any(|(q, f)| q == p && f == "."),
            "no tickle ACK to port {p}: {segments:?}"
        );
    }
    drop(pairs);
}
