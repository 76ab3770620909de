//! etcd as the cluster lock through CTDB's own helper, unchanged (#15):
//! Debian's `/usr/libexec/ctdb/ctdb_etcd_lock` (package `ctdb`, Python,
//! `python3-etcd`, etcd's v2 API) against a real etcd (`etcd-server`)
//! started by the test in a namespace of its own on the cluster's LAN
//! (192.0.2.90). The nodes are a [`TestCluster`] running transportd,
//! clusterd, conntrackd and failoverd as processes, six public addresses
//! 198.51.100.201-206 on their `eth1`, the default timing profile.
//!
//! The helper calls `ctdb pnn` (and `testparm`, package `samba-common-bin`,
//! for the NetBIOS name that names its lock key): it finds the private
//! `ctdb` that clusterd puts first on its PATH (config::ctdb_shim), a
//! symlink to `ipfailover` answering for that node. Its lock key's value
//! ends in `_PNN`, so the test reads from etcd which node holds the lock.
//! An event hook calls `ctdb pnn` and `ctdb status` the same way.
//!
//! What is checked (docs/etcd.md, docs/clusterd.md "The leader"):
//! * 3 nodes: the cluster forms and the leader holds the lock; etcd is
//!   stopped for 30 s: no address leaves its node and the leader stays; etcd
//!   comes back: the lock is taken again; the lock holder is powered off:
//!   its addresses move, the survivors never lack one of theirs, and the
//!   time until the lock moves is printed (CTDB's helper leaves a key of
//!   9 s for every contended attempt; clusterd's backoff gets past that).
//! * 4 nodes split 2+2 with etcd reachable from one side only: that side
//!   ends up hosting every address, the other none, and no address is ever
//!   on both sides.
//!
//! A sampler reads every powered node's addresses every few ms; an address
//! seen on two nodes (two reads, as in leader_death.rs) or a kept address
//! missing fails the test.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::cluster::{bin_path, TestCluster};
use tests::netns::{require_root, wait_for, NetNs};

const POLL: Duration = Duration::from_millis(50);
const LIMIT: Duration = Duration::from_secs(40);
const LIST: [u8; 6] = [201, 202, 203, 204, 205, 206];
const ETCD_ADDR: &str = "192.0.2.90";
const HELPER: &str = "/usr/libexec/ctdb/ctdb_etcd_lock";
/// The daemons' PATH: Debian's python3 (with python3-etcd), not one a
/// developer's environment may put first.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";

fn public(i: u8) -> IpAddr {
    format!("198.51.100.{i}").parse().unwrap()
}

fn require_tools() {
    for (path, package) in [
        ("/usr/bin/etcd", "etcd-server"),
        ("/usr/bin/etcdctl", "etcd-client"),
        (HELPER, "ctdb"),
        ("/usr/bin/testparm", "samba-common-bin"),
        (
            "/usr/lib/python3/dist-packages/etcd/__init__.py",
            "python3-etcd",
        ),
    ] {
        assert!(
            Path::new(path).exists(),
            "needs {path} (apt-get install {package}; scripts/setup.sh does it)"
        );
    }
}

/// A single-member etcd in its own namespace on the LAN, v2 API enabled
/// (CTDB's helper speaks v2). Killed with its namespace.
struct Etcd {
    ns: NetNs,
    data: PathBuf,
    log: PathBuf,
    pid: Mutex<Option<u32>>,
}

impl Etcd {
    fn new(c: &TestCluster, tag: &str) -> Etcd {
        let ns = NetNs::new(&format!("{tag}-et")).unwrap();
        c.lan.attach(&ns, "eth0").unwrap();
        ns.ip(&["addr", "add", &format!("{ETCD_ADDR}/24"), "dev", "eth0"])
            .unwrap();
        // etcd talks to itself over loopback too.
        ns.ip(&["link", "set", "lo", "up"]).unwrap();
        let e = Etcd {
            ns,
            data: c.scratch.join("etcd-data"),
            log: c.scratch.join("etcd.log"),
            pid: Mutex::new(None),
        };
        e.start();
        e
    }

    fn start(&self) {
        let url = |port: u16| format!("http://{ETCD_ADDR}:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = self.ns.command("/usr/bin/etcd");
        cmd.args(["--name", "e0", "--data-dir"])
            .arg(&self.data)
            .args(["--listen-client-urls", &url(2379)])
            .args(["--advertise-client-urls", &url(2379)])
            .args(["--listen-peer-urls", &url(2380)])
            .args(["--initial-advertise-peer-urls", &url(2380)])
            .args(["--initial-cluster", &format!("e0={}", url(2380))])
            .args(["--enable-v2=true", "--log-level", "warn"])
            .stdout(std::process::Stdio::null())
            .stderr(log);
        let pid = self.ns.spawn(cmd).unwrap();
        *self.pid.lock().unwrap() = Some(pid);
        let up = wait_for("etcd to answer", LIMIT, POLL, || {
            // Exit status 0 only when a proposal was committed.
            self.etcdctl(&["endpoint", "health"], "3")
        });
        if let Err(e) = up {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    fn stop(&self) {
        if let Some(pid) = self.pid.lock().unwrap().take() {
            assert!(self.ns.kill(pid), "etcd {pid} was not ours");
        }
    }

    fn etcdctl(&self, args: &[&str], api: &str) -> Option<String> {
        let out = self
            .ns
            .command("/usr/bin/etcdctl")
            .env("ETCDCTL_API", api)
            .args(["--endpoints", &format!("http://{ETCD_ADDR}:2379")])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The PNN in the lowest lock key of CTDB's helper, if any (its value
    /// is `UUID_PNN`, the PNN from `ctdb pnn`): the holder, or a node whose
    /// contended attempt left its key behind (it lives 9 s). The keys are
    /// under `/_locks/_ctdb/NETBIOS-NAME/` (hidden from a listing of
    /// `/_locks`: v2 hides names that start with `_`).
    fn lowest_key_pnn(&self) -> Option<usize> {
        let dir = format!("/_locks/_ctdb/{}", netbios_name());
        let out = self.etcdctl(&["ls", "--sort", &dir], "2")?;
        let first = out.lines().map(str::trim).find(|k| !k.is_empty())?;
        let value = self.etcdctl(&["get", first], "2")?;
        value.trim().rsplit('_').next()?.parse().ok()
    }
}

/// The NetBIOS name CTDB's helper names its lock after (this host's
/// smb.conf: the same for every node namespace of the test).
fn netbios_name() -> String {
    let out = Command::new("testparm")
        .args(["-s", "--parameter-name", "netbios name"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct Bed {
    c: TestCluster,
    eth1_ports: Vec<String>,
    etcd: Etcd,
    powered: Arc<Mutex<Vec<bool>>>,
}

impl Bed {
    fn new(tag: &str, n: usize) -> Bed {
        Bed::with_lock(tag, n, false)
    }

    /// [`Bed::new`], with clusterd's native etcd lock instead of CTDB's
    /// helper when `native` (`etcd://192.0.2.90:2379/ipf/TAG`).
    fn with_lock(tag: &str, n: usize, native: bool) -> Bed {
        require_root();
        require_tools();
        let c = TestCluster::new(tag, n).unwrap();
        let eth1_ports = c.add_public_ports("198.51.100.100/24").unwrap();
        let etcd = Etcd::new(&c, tag);
        // The helper's configuration: the lock's TTL and renewal are
        // CTDB's defaults (9 s, every 2 s); a request may take 2 s at
        // most, so a holder cut off from etcd notices within 4 s, before
        // its key ends (python-etcd's default of 60 s would not).
        let helper_conf = c.scratch.join("etcd-helper.conf");
        std::fs::write(
            &helper_conf,
            format!("host = {ETCD_ADDR}\nport = 2379\nlock_ttl = 9\nlock_refresh = 2\nread_timeout = 2\n"),
        )
        .unwrap();
        let pa: String = LIST
            .iter()
            .map(|i| format!("198.51.100.{i}/24 eth1\n"))
            .collect();
        let lock = if native {
            format!("etcd://{ETCD_ADDR}:2379/ipf/{tag}")
        } else {
            format!("!{HELPER} -c {}", helper_conf.display())
        };
        for node in &c.nodes {
            let toml = format!(
                "[cluster]\ncluster_lock = \"{lock}\"\n\n\
                 [transport]\nrun_dir = \"{}\"\n\n\
                 [failover]\ngarp_count = 1\n\n\
                 [logging]\nlevel = \"info\"\n",
                node.run_dir.display()
            );
            std::fs::write(node.config_dir.join("ipfailover.toml"), toml).unwrap();
            std::fs::write(node.config_dir.join("public_addresses"), &pa).unwrap();
            // A CTDB event script that asks `ctdb` about its node.
            let events = node.config_dir.join("events");
            std::fs::create_dir_all(&events).unwrap();
            let out = node.run_dir.join("hook-ctdb.txt");
            let hook = events.join("50.ctdb");
            std::fs::write(
                &hook,
                format!(
                    "#!/bin/sh\n[ \"$1\" = ipreallocated ] || exit 0\n\
                     {{ echo \"pnn=$(ctdb pnn)\"; ctdb -T 5 status; }} > {0}.tmp 2>&1\n\
                     mv {0}.tmp {0}\n",
                    out.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let bed = Bed {
            powered: Arc::new(Mutex::new(vec![true; n])),
            c,
            eth1_ports,
            etcd,
        };
        for i in 0..n {
            bed.c.start_transportd(i).unwrap();
            for name in ["clusterd", "conntrackd", "failoverd"] {
                let node = &bed.c.nodes[i];
                let mut d = node.ns.command(&bin_path(name).unwrap().to_string_lossy());
                d.arg("--config-dir")
                    .arg(&node.config_dir)
                    .env("PATH", SYSTEM_PATH)
                    .stdout(std::process::Stdio::null())
                    .stderr(bed.c.log_file(i, name).unwrap());
                node.spawn(d).unwrap();
            }
        }
        bed
    }

    fn power_off(&self, i: usize) {
        self.powered.lock().unwrap()[i] = false;
        self.c.lan.set_port(&self.eth1_ports[i], false).unwrap();
        self.c.power_off(i).unwrap();
    }

    fn cli(&self, i: usize, args: &[&str]) -> Option<String> {
        let out = Command::new(bin_path("ipfailover").unwrap())
            .arg("--run-dir")
            .arg(&self.c.nodes[i].run_dir)
            .args(["-t", "5"])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// How often node `i`'s clusterd took the cluster lock (its log).
    fn lock_taken(&self, i: usize) -> usize {
        std::fs::read_to_string(self.c.scratch.join(format!("node{i}-clusterd.log")))
            .unwrap_or_default()
            .matches("cluster lock taken")
            .count()
    }

    fn leader(&self, i: usize) -> Option<usize> {
        self.cli(i, &["leader"])?.parse().ok()
    }

    fn logs(&self) -> String {
        let mut s = self.c.log_tails(&["clusterd", "failoverd"], 20);
        s.push_str("--- etcd ---\n");
        s.push_str(&std::fs::read_to_string(&self.etcd.log).unwrap_or_default());
        s
    }

    /// Where each public address is, among powered nodes (every address
    /// hosted exactly once), or None.
    fn placement(&self) -> Option<BTreeMap<IpAddr, usize>> {
        let powered = self.powered.lock().unwrap().clone();
        let mut at: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.c.nodes.iter().enumerate() {
            if powered[i] {
                for a in tests::netns::ipv4_on(n.ns.name(), "eth1") {
                    at.entry(IpAddr::V4(a)).or_default().push(i);
                }
            }
        }
        LIST.iter()
            .map(|k| match at.get(&public(*k)).map(Vec::as_slice) {
                Some([one]) => Some((public(*k), *one)),
                _ => None,
            })
            .collect()
    }

    fn wait_placed(&self, what: &str, limit: Duration) -> BTreeMap<IpAddr, usize> {
        match wait_for(what, limit, POLL, || self.placement()) {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    /// The placement once 4 nodes host 6 addresses as 2, 2, 1, 1 (any
    /// order) and nothing moved for a second.
    fn wait_balanced_4(&self) -> BTreeMap<IpAddr, usize> {
        let balanced = || {
            self.placement().filter(|p| {
                let mut c: Vec<usize> = (0..4)
                    .map(|i| p.values().filter(|&&x| x == i).count())
                    .collect();
                c.sort_unstable();
                c == [1, 1, 2, 2]
            })
        };
        let r = wait_for(
            "6 addresses on 4 nodes, stable for 1 s",
            LIMIT,
            POLL,
            || {
                let p = balanced()?;
                std::thread::sleep(Duration::from_secs(1));
                (balanced().as_ref() == Some(&p)).then_some(p)
            },
        );
        match r {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    /// The placement once every one of `n` nodes hosts two addresses and
    /// nothing moved for a second (the first placement may still be
    /// rebalanced as the last node joins).
    fn wait_balanced(&self, n: usize) -> BTreeMap<IpAddr, usize> {
        let balanced = || {
            self.placement()
                .filter(|p| (0..n).all(|i| p.values().filter(|&&x| x == i).count() == 2))
        };
        let r = wait_for(
            "two addresses on every node, stable for 1 s",
            LIMIT,
            POLL,
            || {
                let p = balanced()?;
                std::thread::sleep(Duration::from_secs(1));
                (balanced().as_ref() == Some(&p)).then_some(p)
            },
        );
        match r {
            Ok(p) => p,
            Err(e) => panic!("{e}\n{}", self.logs()),
        }
    }

    /// Samples every powered node's public addresses (rtnetlink, one
    /// socket per namespace, as leader_death.rs) until `stop`: an address
    /// on two nodes (seen in two reads) or one of `keep` missing from its
    /// node is a violation.
    fn sampler(
        &self,
        keep: BTreeMap<IpAddr, usize>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<(usize, Vec<String>)> {
        let names: Vec<String> = self
            .c
            .nodes
            .iter()
            .map(|n| n.ns.name().to_string())
            .collect();
        let powered = Arc::clone(&self.powered);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let handles: Vec<netlink::link::Netlink> = names
                .iter()
                .map(|name| {
                    let file = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    rt.block_on(async { netlink::link::Netlink::new() })
                        .unwrap()
                })
                .collect();
            let mut violations = Vec::new();
            let mut samples = 0;
            let end = Instant::now() + Duration::from_secs(600);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let on = powered.lock().unwrap().clone();
                let read = |i: usize| -> Vec<IpAddr> {
                    if !on[i] {
                        return Vec::new();
                    }
                    rt.block_on(handles[i].all_addresses())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(_, p)| p.addr())
                        .filter(|a| LIST.iter().any(|k| public(*k) == *a))
                        .collect()
                };
                let first: Vec<Vec<IpAddr>> = (0..names.len()).map(read).collect();
                let second: Vec<Vec<IpAddr>> = (0..names.len()).map(read).collect();
                for (a, n) in &keep {
                    if on[*n] && (!first[*n].contains(a) || !second[*n].contains(a)) {
                        violations.push(format!("node {n} lacked its address {a}"));
                    }
                }
                for p in 0..names.len() {
                    for a in first[p].iter().filter(|a| second[p].contains(a)) {
                        for q in (0..names.len()).filter(|q| *q != p) {
                            let between = if q > p { &first[q] } else { &second[q] };
                            if between.contains(a) {
                                violations.push(format!("{a} on nodes {p} and {q}"));
                            }
                        }
                    }
                }
                violations.truncate(50);
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (samples, violations)
        })
    }

    /// Node `i`'s clusterd log after byte `from`.
    fn clusterd_log(&self, i: usize, from: usize) -> String {
        let log = std::fs::read_to_string(self.c.scratch.join(format!("node{i}-clusterd.log")))
            .unwrap_or_default();
        log.get(from..).unwrap_or_default().to_string()
    }

    /// Whether a powered node saw another powered node DISCONNECTED in its
    /// clusterd log after the byte offsets `from`, when no fault was
    /// injected between them: the machine was too busy for the heartbeats
    /// (`dead_after` of silence), not a fault of the lock.
    fn starved(&self, from: &[usize], cut: &[usize]) -> Option<String> {
        let on = self.powered.lock().unwrap().clone();
        for i in (0..on.len()).filter(|i| on[*i] && !cut.contains(i)) {
            for line in self.clusterd_log(i, from[i]).lines() {
                if !line.contains("membership generation") {
                    continue;
                }
                let hit = (0..on.len())
                    .filter(|j| *j != i && on[*j] && !cut.contains(j))
                    .any(|j| line.contains(&format!(" {j}:DISCONNECTED")));
                if hit {
                    return Some(format!("node {i}: {line}"));
                }
            }
        }
        None
    }
}

/// Runs `f` with the sampler watching `keep`; fails on any violation, but
/// a missing kept address only when no live node lost another one that
/// nothing cut it from (`cut`: nodes cut off on purpose): the default
/// profile's heartbeats tolerate 500 ms of scheduling stall, and a machine
/// overloaded beyond that loses leases whatever the lock does, which is
/// reported, not failed. An address on two nodes always fails.
fn watched<T>(
    bed: &Bed,
    keep: BTreeMap<IpAddr, usize>,
    cut: &[usize],
    what: &str,
    f: impl FnOnce() -> T,
) -> T {
    let from: Vec<usize> = (0..bed.c.nodes.len())
        .map(|i| bed.clusterd_log(i, 0).len())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = bed.sampler(keep, Arc::clone(&stop));
    let r = f();
    stop.store(true, Ordering::Relaxed);
    let (samples, violations) = sampler.join().unwrap();
    assert!(samples > 20, "{what}: the sampler hardly ran ({samples})");
    let twice: Vec<&String> = violations
        .iter()
        .filter(|v| v.contains(" on nodes "))
        .collect();
    assert!(twice.is_empty(), "{what}: {twice:?}\n{}", bed.logs());
    if !violations.is_empty() {
        match bed.starved(&from, cut) {
            Some(line) => eprintln!(
                "NOTE {what}: {:?} while the machine starved the heartbeats ({line}): reported, not failed",
                &violations[..violations.len().min(4)]
            ),
            None => panic!(
                "{what}: {:?}\n{}",
                &violations[..violations.len().min(10)],
                bed.logs()
            ),
        }
    }
    r
}

#[test]
fn etcd_helper_lock_survives_an_etcd_outage_and_the_holders_power_off() {
    let bed = Bed::new("etl", 3);
    let t0 = Instant::now();
    bed.wait_placed("every address hosted once", LIMIT);
    eprintln!(
        "cluster formed with the etcd helper: addresses hosted after {:?}",
        t0.elapsed()
    );
    let placed = bed.wait_balanced(3);
    let leader = wait_for("a leader", LIMIT, POLL, || bed.leader(1)).unwrap();
    // The key in etcd carries the PNN the helper got from `ctdb pnn`.
    let holder = wait_for("the lock key in etcd", LIMIT, POLL, || {
        bed.etcd.lowest_key_pnn()
    });
    assert_eq!(
        holder.ok(),
        Some(leader),
        "the leader holds the lock\n{}",
        bed.logs()
    );
    assert_eq!(bed.lock_taken(leader), 1, "{}", bed.logs());
    // The hooks asked the private `ctdb` about their node.
    for (i, n) in bed.c.nodes.iter().enumerate() {
        let file = n.run_dir.join("hook-ctdb.txt");
        let text = wait_for("the hook's ctdb output", LIMIT, POLL, || {
            std::fs::read_to_string(&file).ok()
        })
        .unwrap();
        assert!(text.starts_with(&format!("pnn={i}\n")), "node {i}: {text}");
        assert!(text.contains("Number of nodes:3"), "node {i}: {text}");
    }

    // etcd stopped for 30 s: nothing moves, the leader stays.
    watched(&bed, placed.clone(), &[], "etcd stopped for 30 s", || {
        bed.etcd.stop();
        std::thread::sleep(Duration::from_secs(30));
        assert_eq!(bed.placement().as_ref(), Some(&placed), "{}", bed.logs());
        for i in 0..3 {
            assert_eq!(bed.leader(i), Some(leader), "node {i}'s leader");
        }
        bed.etcd.start();
        let back = Instant::now();
        let again = wait_for("the lock taken again", LIMIT, POLL, || {
            (bed.lock_taken(leader) == 2).then_some(())
        });
        assert!(again.is_ok(), "{}", bed.logs());
        eprintln!(
            "etcd back: the leader held the lock again after {:?}",
            back.elapsed()
        );
    });
    let log = std::fs::read_to_string(bed.c.scratch.join(format!("node{leader}-clusterd.log")))
        .unwrap_or_default();
    assert!(
        log.contains("cluster lock lost") && log.contains("cluster lock not taken"),
        "the leader's clusterd logs the lost lock and the failed attempts\n{log}"
    );

    // The holder (the leader) loses power: its addresses move, the
    // survivors keep theirs.
    let keep: BTreeMap<IpAddr, usize> = placed
        .iter()
        .filter(|(_, n)| **n != leader)
        .map(|(a, n)| (*a, *n))
        .collect();
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let moved = watched(&bed, keep, &[leader], "the lock holder powered off", || {
        let off = Instant::now();
        bed.power_off(leader);
        bed.wait_placed("the holder's addresses on the survivors", LIMIT);
        let moved = off.elapsed();
        let new_leader = bed.leader(survivor).unwrap();
        let lock = wait_for("the lock to move", Duration::from_secs(60), POLL, || {
            (bed.lock_taken(new_leader) > 0).then_some(())
        });
        eprintln!(
            "holder {leader} powered off: its addresses hosted by the survivors after {moved:?}, \
             the lock taken by the new leader {new_leader} after {:?}",
            off.elapsed()
        );
        assert!(
            lock.is_ok(),
            "the survivors' leader takes the lock\n{}",
            bed.logs()
        );
        moved
    });
    assert!(
        moved < Duration::from_secs(5),
        "addresses moved after {moved:?}"
    );
}

#[test]
fn etcd_helper_lock_2_2_split_with_etcd_on_one_side() {
    split_with_etcd_on_one_side(&Bed::new("et2", 4));
}

/// The same with clusterd's native etcd lock (`etcd://`; this etcd's
/// default election timeout makes its lease 2 s): the holder's half, cut
/// from etcd, gives the lock up before etcd frees it, and no address is
/// ever on both halves.
#[test]
fn native_etcd_lock_2_2_split_with_etcd_on_one_side() {
    split_with_etcd_on_one_side(&Bed::with_lock("et4", 4, true));
}

/// 2+2 with etcd reachable only from the half that does not hold the lock:
/// that half ends up hosting every address, the other none.
fn split_with_etcd_on_one_side(bed: &Bed) {
    bed.wait_placed("every address hosted once", LIMIT);
    let holder = wait_for("the lock holder", LIMIT, POLL, || {
        (0..4).find(|&i| bed.lock_taken(i) > 0)
    })
    .unwrap();
    let lock_side: Vec<usize> = if holder < 2 { vec![2, 3] } else { vec![0, 1] };
    let other: Vec<usize> = (0..4).filter(|i| !lock_side.contains(i)).collect();
    let addr = |i: usize| bed.c.nodes[i].addr.to_string();
    watched(
        bed,
        BTreeMap::new(),
        &[0, 1, 2, 3],
        "2+2 split, etcd on one side",
        || {
            let t = Instant::now();
            // The holder's side is cut from the other side and from etcd.
            for &i in &other {
                let mut peers: Vec<String> = lock_side.iter().map(|&j| addr(j)).collect();
                peers.push(ETCD_ADDR.into());
                bed.c.nodes[i].ns.cut_from(&peers).unwrap();
            }
            for &j in &lock_side {
                let peers: Vec<String> = other.iter().map(|&i| addr(i)).collect();
                bed.c.nodes[j].ns.cut_from(&peers).unwrap();
            }
            let side = wait_for(
                "every address on the side that reaches etcd",
                Duration::from_secs(90),
                POLL,
                || {
                    let p = bed.placement()?;
                    p.values().all(|n| lock_side.contains(n)).then_some(p)
                },
            );
            match side {
            Ok(p) => eprintln!(
                "2+2 split (old holder {holder}): {lock_side:?} host every address after {:?}: {p:?}",
                t.elapsed(),
            ),
            Err(e) => panic!("{e}\n{}", bed.logs()),
        }
            assert!(
                lock_side.iter().any(|&j| bed.lock_taken(j) > 0),
                "a node of the side that reaches etcd took the lock\n{}",
                bed.logs()
            );
        },
    );
}

/// 2+2 with etcd reachable from both halves: the holder's half keeps the
/// lock, its leader and its addresses (not one missing at any sample), and
/// takes the other half's addresses; the other half, contended, hosts
/// nothing. No address is ever on both halves.
#[test]
fn etcd_helper_lock_2_2_split_with_etcd_on_both_sides() {
    let bed = Bed::new("et3", 4);
    bed.wait_placed("every address hosted once", LIMIT);
    let placed = bed.wait_balanced_4();
    let holder = wait_for("the lock holder", LIMIT, POLL, || {
        (0..4).find(|&i| bed.lock_taken(i) > 0)
    })
    .unwrap();
    let lock_side: Vec<usize> = if holder < 2 { vec![0, 1] } else { vec![2, 3] };
    let other: Vec<usize> = (0..4).filter(|i| !lock_side.contains(i)).collect();
    let keep: BTreeMap<IpAddr, usize> = placed
        .iter()
        .filter(|(_, n)| lock_side.contains(n))
        .map(|(a, n)| (*a, *n))
        .collect();
    let addr = |i: usize| bed.c.nodes[i].addr.to_string();
    watched(&bed, keep, &other, "2+2 split, etcd on both sides", || {
        let t = Instant::now();
        for &i in &other {
            let peers: Vec<String> = lock_side.iter().map(|&j| addr(j)).collect();
            bed.c.nodes[i].ns.cut_from(&peers).unwrap();
        }
        for &j in &lock_side {
            let peers: Vec<String> = other.iter().map(|&i| addr(i)).collect();
            bed.c.nodes[j].ns.cut_from(&peers).unwrap();
        }
        let side = wait_for("every address on the holder's side", LIMIT, POLL, || {
            let p = bed.placement()?;
            p.values().all(|n| lock_side.contains(n)).then_some(p)
        });
        match side {
            Ok(p) => eprintln!(
                "2+2 split, etcd on both sides (holder {holder}): {lock_side:?} host every address after {:?}: {p:?}",
                t.elapsed()
            ),
            Err(e) => panic!("{e}\n{}", bed.logs()),
        }
        assert_eq!(bed.leader(lock_side[1]), Some(holder), "{}", bed.logs());
        assert_eq!(bed.lock_taken(holder), 1, "the holder kept the lock");
    });
}
