//! The chaos test bed: a [`TestCluster`] whose nodes run real masterds (in
//! either process model), public addresses on each node's `eth1`, the
//! duplicate detector and the client load attached, and the primitive
//! fault actions (signals, cables, nftables partitions, hooks, the
//! `ipfailover` command).
//!
//! Only processes of this bed's namespaces are signalled: masterds it
//! started (by pid), and the processes whose network namespace is one of
//! its node namespaces (masterd's daemons, hooks, the lock helper).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use transport::msg::master::{DaemonState, MasterStatus};

use super::load::{self, Load};
use super::monitor::{self, Log, Threads};
use super::plan::{Daemon, Timing};
use super::serving::Ev;
use crate::cluster::{bin_path, TestCluster};

/// The nftables table (family inet) the partitions use in node namespaces.
pub const CUT_TABLE: &str = "ipfchaos";
/// failoverd's nftables table (the default name, one per node namespace).
pub const NFT_TABLE: &str = "ipfailover";
/// The tables (inet and arp) of failoverd's kernel lease: `<nft_table>_lease`
/// (docs/netlink-nft.md); the detector follows the inet one's guard and
/// lease sets.
pub const LEASE_TABLE: &str = "ipfailover_lease";
/// The client's address in the public subnet.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
/// The client's IPv6 address (2001:db8:1::100/64).
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);
/// The client's link-local address (the source of its solicitations).
pub const CLIENT_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x100);

/// How the bed is built.
#[derive(Debug, Clone)]
pub struct BedOptions {
    /// Namespace tag (short).
    pub tag: String,
    /// Nodes.
    pub nodes: usize,
    /// Base public addresses (every node lists them).
    pub ips: usize,
    /// Extra addresses (listed by nobody at first).
    pub extras: usize,
    /// `fast` profile (else `default`).
    pub fast: bool,
    /// Single-process model (else multi-process).
    pub single: bool,
    /// A cluster lock file (CTDB's fcntl helper), if any.
    pub lock: Option<PathBuf>,
    /// failoverd's `kernel_lease` (on by default; off only to show what
    /// the detector sees without it).
    pub kernel_lease: bool,
}

/// Is `a` one of the public ranges the bed uses (not the client)?
pub fn is_public(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[..3] == [198, 51, 100] && v4 != CLIENT_V4
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[..4] == [0x2001, 0xdb8, 1, 0] && s[7] != 0x100
        }
    }
}

/// The address pool: `ips` base addresses (every third one IPv6) then
/// `extras` IPv4 extras, with their prefix lengths.
pub fn pool(ips: usize, extras: usize) -> Vec<(IpAddr, u8)> {
    let mut out = Vec::new();
    for i in 0..ips {
        let host = u8::try_from(201 + i).unwrap_or(249).min(249);
        if ips >= 3 && i % 3 == 2 {
            out.push((
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(host))),
                64,
            ));
        } else {
            out.push((IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)), 24));
        }
    }
    for e in 0..extras {
        let host = u8::try_from(250 + e).unwrap_or(254).min(254);
        out.push((IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)), 24));
    }
    out
}

/// The bed.
#[derive(Debug)]
pub struct Bed {
    /// The namespaces.
    pub c: TestCluster,
    /// Each node's `eth1` switch port.
    pub ports1: Vec<String>,
    /// Base addresses then extras.
    pub pool: Vec<(IpAddr, u8)>,
    /// Number of base addresses.
    pub ips: usize,
    /// Options.
    pub opts: BedOptions,
    /// The profile's timings.
    pub timing: Timing,
    /// The detector's log.
    pub log: Arc<Log>,
    /// The client load.
    pub load: Arc<Load>,
    /// Each node's `eth1` MAC, by PNN.
    pub macs: Vec<[u8; 6]>,
    /// What each node's public_addresses lists (pool indices).
    pub files: Mutex<Vec<BTreeSet<usize>>>,
    /// Whether each node is powered.
    pub powered: Mutex<Vec<bool>>,
    /// When each node's conntrackd last started (its table of replicated
    /// connections starts empty), in the log's time.
    pub conntrackd_started: Mutex<Vec<super::serving::Micros>>,
    masterd: Vec<Mutex<Option<Child>>>,
    threads: Mutex<Threads>,
}

fn mac_of(ns: &str, iface: &str) -> Result<[u8; 6]> {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", iface])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no MAC")?;
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = word.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC {word}");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)?;
    }
    Ok(mac)
}

/// Formats a MAC.
pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Bed {
    /// Builds the namespaces, writes the configuration, starts the
    /// detector, the listeners, the client load and every node's masterd.
    ///
    /// # Errors
    ///
    /// When any of it cannot be set up.
    pub fn new(opts: BedOptions) -> Result<Bed> {
        let c = TestCluster::new(&opts.tag, opts.nodes)?;
        let ports1 = c.add_public_ports(&format!("{CLIENT_V4}/24"))?;
        c.client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_V6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        c.client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_LL}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        let pool = pool(opts.ips, opts.extras);
        let timing = if opts.fast {
            Timing::FAST
        } else {
            Timing::DEFAULT
        };
        let mut macs = Vec::new();
        for n in &c.nodes {
            macs.push(mac_of(n.ns.name(), "eth1")?);
        }
        let client_mac = mac_of(c.client.name(), "eth0")?;
        let log = Arc::new(Log::new(opts.nodes, is_public));
        let load = Arc::new(Load::default());
        let files = vec![(0..opts.ips).collect::<BTreeSet<usize>>(); opts.nodes];
        let bed = Bed {
            ports1,
            ips: opts.ips,
            timing,
            log,
            load,
            macs,
            files: Mutex::new(files),
            powered: Mutex::new(vec![true; opts.nodes]),
            masterd: (0..opts.nodes).map(|_| Mutex::new(None)).collect(),
            conntrackd_started: Mutex::new(vec![0; opts.nodes]),
            threads: Mutex::new(Threads::new()),
            pool,
            opts,
            c,
        };
        for i in 0..bed.opts.nodes {
            bed.write_config(i)?;
            bed.write_public_addresses(i)?;
        }
        {
            let mut th = bed.threads.lock().expect("threads");
            for (i, n) in bed.c.nodes.iter().enumerate() {
                monitor::start_node(&mut th, &bed.log, n.ns.name(), i, LEASE_TABLE)?;
                load::start_listeners(&mut th, n.ns.name())?;
            }
            let targets: Vec<IpAddr> = bed.pool.iter().map(|(a, _)| *a).collect();
            monitor::start_client(
                &mut th,
                &bed.log,
                monitor::ProbeSetup {
                    ns: bed.c.client.name().to_string(),
                    iface: "eth0".into(),
                    mac: client_mac,
                    ip4: CLIENT_V4,
                    ll6: CLIENT_LL,
                    targets,
                },
            )?;
            let base: Vec<IpAddr> = bed.pool[..bed.ips].iter().map(|(a, _)| *a).collect();
            load::start_clients(&mut th, &bed.log, &bed.load, bed.c.client.name(), &base)?;
        }
        let t = bed.log.now();
        for i in 0..bed.opts.nodes {
            bed.log.push(t, i, Ev::Reach(true));
        }
        for i in 0..bed.opts.nodes {
            bed.start_masterd(i)?;
        }
        Ok(bed)
    }

    /// Number of nodes.
    pub fn n(&self) -> usize {
        self.opts.nodes
    }

    fn write_config(&self, i: usize) -> Result<()> {
        let node = &self.c.nodes[i];
        let lock = match &self.opts.lock {
            Some(p) => format!("cluster_lock = \"{}\"\n", p.display()),
            None => String::new(),
        };
        let toml = format!(
            "[transport]\nrun_dir = \"{}\"\n\n\
             [cluster]\nprofile = \"{}\"\n{lock}\n\
             [failover]\ngarp_count = 3\ngarp_interval_ms = 100\nrelease_timeout_ms = 3000\n\
             hook_timeout_ms = 1500\nnft_table = \"{NFT_TABLE}\"\nkernel_lease = {}\n\n\
             [conntrack]\nscan_interval_ms = 200\n\n\
             [logging]\nlevel = \"{}\"\n",
            node.run_dir.display(),
            if self.opts.fast { "fast" } else { "default" },
            self.opts.kernel_lease,
            std::env::var("CHAOS_LOG").unwrap_or_else(|_| "info".into()),
        );
        std::fs::write(node.config_dir.join("ipfailover.toml"), toml)
            .context("writing ipfailover.toml")
    }

    /// Rewrites node `i`'s public_addresses from [`Bed::files`].
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_public_addresses(&self, i: usize) -> Result<()> {
        let list: Vec<usize> = self.files.lock().expect("files")[i]
            .iter()
            .copied()
            .collect();
        let text: String = list
            .iter()
            .map(|&k| format!("{}/{} eth1\n", self.pool[k].0, self.pool[k].1))
            .collect();
        std::fs::write(self.c.nodes[i].config_dir.join("public_addresses"), text)
            .context("writing public_addresses")
    }

    /// Starts node `i`'s masterd (stderr appended to `node{i}-masterd.log`).
    ///
    /// # Errors
    ///
    /// When it cannot be started.
    pub fn start_masterd(&self, i: usize) -> Result<()> {
        let node = &self.c.nodes[i];
        let _ = std::fs::remove_file(node.run_dir.join("transport.sock"));
        let mut cmd = node.ns.command(&bin_path("masterd")?.to_string_lossy());
        cmd.arg("--config-dir")
            .arg(&node.config_dir)
            .args(["--stop-grace", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.c.log_file(i, "masterd")?);
        if self.opts.single {
            cmd.arg("--single-process");
        }
        // Its own process group: a Ctrl-C meant for the chaos driver must
        // not reach the cluster (the driver stops it itself).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("starting masterd")?;
        self.conntrackd_started.lock().expect("started")[i] = self.log.now();
        *self.masterd[i].lock().expect("masterd") = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i`'s masterd (its daemons die with it) and reaps it.
    pub fn kill_masterd(&self, i: usize) {
        if let Some(mut ch) = self.masterd[i].lock().expect("masterd").take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    /// SIGTERM to node `i`'s masterd, waiting up to 20 s (then SIGKILL).
    /// Returns whether it exited 0 in time.
    pub fn terminate_masterd(&self, i: usize) -> bool {
        let Some(mut ch) = self.masterd[i].lock().expect("masterd").take() else {
            return false;
        };
        let Ok(pid) = i32::try_from(ch.id()) else {
            return false;
        };
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(st)) = ch.try_wait() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = ch.kill();
        let _ = ch.wait();
        false
    }

    /// Whether node `i` has a masterd child we started (not reaped).
    pub fn has_masterd(&self, i: usize) -> bool {
        self.masterd[i].lock().expect("masterd").is_some()
    }

    /// If node `i`'s masterd exited without being told to: its status
    /// (the child is reaped and forgotten).
    pub fn masterd_exited(&self, i: usize) -> Option<String> {
        let mut g = self.masterd[i].lock().expect("masterd");
        let st = g.as_mut()?.try_wait().ok()??;
        *g = None;
        Some(st.to_string())
    }

    /// masterd's pid on node `i`.
    pub fn masterd_pid(&self, i: usize) -> Option<u32> {
        self.masterd[i]
            .lock()
            .expect("masterd")
            .as_ref()
            .map(Child::id)
    }

    /// masterd's status on node `i` (None: no answer within 2 s).
    pub fn status(&self, i: usize) -> Option<MasterStatus> {
        self.c.nodes[i].masterd_status()
    }

    /// Whether node `i`'s masterd is ready with every daemon running.
    pub fn ready(&self, i: usize) -> bool {
        self.status(i)
            .is_some_and(|s| s.ready && s.daemons.iter().all(|d| d.state == DaemonState::Running))
    }

    /// The pid of daemon `d` on node `i` (masterd's in the single-process
    /// model).
    pub fn daemon_pid(&self, i: usize, d: Daemon) -> Option<u32> {
        self.status(i)?
            .daemons
            .iter()
            .find(|s| s.name == d.name())
            .and_then(|s| s.pid)
    }

    /// Ends daemon `d` of node `i`: SIGKILL (multi-process), or a SHUTDOWN
    /// control to its service (single-process: a daemon is a task).
    /// Returns whether it was done.
    pub fn kill_daemon(&self, i: usize, d: Daemon) -> bool {
        if matches!(d, Daemon::Conntrackd | Daemon::Transportd) {
            self.conntrackd_started.lock().expect("started")[i] = self.log.now();
        }
        if self.opts.single {
            use transport::proto::control::SHUTDOWN;
            use transport::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, TRANSPORT};
            let svc = match d {
                Daemon::Transportd => TRANSPORT,
                Daemon::Clusterd => CLUSTERD,
                Daemon::Conntrackd => CONNTRACKD,
                Daemon::Failoverd => FAILOVERD,
            };
            let sock = self.c.nodes[i].run_dir.join("transport.sock");
            let r = self.c.nodes[i].ns.block_on(move || async move {
                let (client, _in) = transport::client::Client::connect_unix(&sock, "chaos")
                    .await
                    .ok()?;
                // The reply may be lost as the daemon stops (its task ends
                // before the answer leaves; transportd's always): the
                // request was sent, so the restart that follows is allowed
                // (an allowance not used is forgotten at the next check).
                let _ = client
                    .request::<(), ()>(
                        transport::proto::Address::local(svc),
                        SHUTDOWN,
                        &(),
                        Duration::from_secs(2),
                    )
                    .await;
                Some(())
            });
            return matches!(r, Ok(Some(())));
        }
        match self.daemon_pid(i, d).and_then(|p| i32::try_from(p).ok()) {
            Some(pid) => kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok(),
            None => false,
        }
    }

    /// Ends several daemons of node `i` at once (their pids read in one
    /// status request, then SIGKILLed back to back); see
    /// [`Bed::kill_daemon`]. Returns how many were ended.
    pub fn kill_daemons(&self, i: usize, ds: &[Daemon]) -> usize {
        if self.opts.single {
            return ds.iter().filter(|d| self.kill_daemon(i, **d)).count();
        }
        let Some(st) = self.status(i) else { return 0 };
        let pids: Vec<i32> = ds
            .iter()
            .filter_map(|d| {
                st.daemons
                    .iter()
                    .find(|s| s.name == d.name())
                    .and_then(|s| s.pid)
                    .and_then(|p| i32::try_from(p).ok())
            })
            .collect();
        pids.iter()
            .filter(|p| kill(Pid::from_raw(**p), Signal::SIGKILL).is_ok())
            .count()
    }

    /// Every process whose network namespace is node `i`'s.
    pub fn node_pids(&self, i: usize) -> Vec<i32> {
        let path = format!("/run/netns/{}", self.c.nodes[i].ns.name());
        let Ok(meta) = std::fs::metadata(&path) else {
            return Vec::new();
        };
        let want = format!("net:[{}]", meta.ino());
        let me = i32::try_from(std::process::id()).unwrap_or(-1);
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/net")) {
                if link.to_string_lossy() == want {
                    out.push(pid);
                }
            }
        }
        out
    }

    /// Sends `sig` to every process of node `i`; returns how many.
    pub fn signal_node(&self, i: usize, sig: Signal) -> usize {
        let pids = self.node_pids(i);
        for p in &pids {
            let _ = kill(Pid::from_raw(*p), sig);
        }
        pids.len()
    }

    /// Sends `sig` to daemon `d` of node `i` (masterd's process in the
    /// single-process model).
    pub fn signal_daemon(&self, i: usize, d: Daemon, sig: Signal) -> Option<i32> {
        let pid = i32::try_from(self.daemon_pid(i, d)?).ok()?;
        kill(Pid::from_raw(pid), sig).ok()?;
        Some(pid)
    }

    /// Plugs node `i`'s public (`eth1`) or cluster (`eth0`) cable in or out.
    /// The detector hears of the public one: out before the cable is
    /// pulled is not needed (reach ends when the command returns), in is
    /// recorded before the cable goes in (the node may answer at once).
    ///
    /// # Errors
    ///
    /// When the switch port cannot be set.
    pub fn set_link(&self, i: usize, public: bool, up: bool) -> Result<()> {
        let port = if public {
            &self.ports1[i]
        } else {
            &self.c.nodes[i].port
        };
        if public && up {
            self.log.push(self.log.now(), i, Ev::Reach(true));
        }
        self.c.lan.set_port(port, up)?;
        if public && !up {
            self.log.push(self.log.now(), i, Ev::Reach(false));
        }
        Ok(())
    }

    /// Power-off: both cables out, masterd and every process of the node
    /// killed.
    ///
    /// # Errors
    ///
    /// When a port cannot be set.
    pub fn power_off(&self, i: usize) -> Result<()> {
        self.powered.lock().expect("powered")[i] = false;
        self.set_link(i, true, false)?;
        self.set_link(i, false, false)?;
        self.kill_masterd(i);
        self.signal_node(i, Signal::SIGKILL);
        Ok(())
    }

    /// Power-on after [`Bed::power_off`]: the kernel starts clean (public
    /// addresses and nftables tables gone, as after a reboot), cables in,
    /// masterd started.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be reset or masterd cannot start.
    pub fn power_on(&self, i: usize) -> Result<()> {
        let ns = &self.c.nodes[i].ns;
        ns.ip(&["addr", "flush", "dev", "eth1", "scope", "global"])?;
        ns.exec_ok("nft", &["flush", "ruleset"])?;
        self.set_link(i, false, true)?;
        self.set_link(i, true, true)?;
        self.powered.lock().expect("powered")[i] = true;
        self.start_masterd(i)
    }

    /// Cuts the nodes of `group` off from the other nodes with an nftables
    /// table of their own ([`CUT_TABLE`]) on the cluster (private)
    /// addresses: both ways, or only what comes in (`one_way`: the group
    /// does not hear the others, the others hear it). Client traffic is
    /// untouched.
    ///
    /// # Errors
    ///
    /// When `nft` fails.
    pub fn partition(&self, group: &[usize], one_way: bool) -> Result<()> {
        for &g in group {
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for (j, n) in self.c.nodes.iter().enumerate() {
                if !group.contains(&j) {
                    v4.push(n.addr.to_string());
                    v6.push(n.addr6.to_string());
                }
            }
            if v4.is_empty() {
                continue;
            }
            let (s4, s6) = (v4.join(", "), v6.join(", "));
            let mut script = format!(
                "table inet {CUT_TABLE} {{\n\
                 chain in {{ type filter hook input priority -5; \
                 ip saddr {{ {s4} }} drop; ip6 saddr {{ {s6} }} drop; }}\n"
            );
            if !one_way {
                script.push_str(&format!(
                    "chain out {{ type filter hook output priority -5; \
                     ip daddr {{ {s4} }} drop; ip6 daddr {{ {s6} }} drop; }}\n"
                ));
            }
            script.push_str("}\n");
            let file = self.c.scratch.join(format!("cut{g}.nft"));
            std::fs::write(&file, script)?;
            self.c.nodes[g]
                .ns
                .exec_ok("nft", &["-f", &file.to_string_lossy()])?;
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal_partitions(&self) {
        for n in &self.c.nodes {
            let _ = n.ns.exec("nft", &["delete", "table", "inet", CUT_TABLE]);
        }
    }

    /// Installs (`Some(script body)`) or removes node `i`'s chaos hook.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn set_hook(&self, i: usize, body: Option<&str>) -> Result<()> {
        let dir = self.c.nodes[i].config_dir.join("events");
        let path = dir.join("50.chaos");
        match body {
            Some(b) => {
                std::fs::create_dir_all(&dir)?;
                let tmp = dir.join(".50.chaos.tmp");
                std::fs::write(&tmp, format!("#!/bin/sh\n{b}\n"))?;
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
                std::fs::rename(&tmp, &path)?;
            }
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// `ipfailover ARGS` against node `i`'s transportd: success and output.
    pub fn cli(&self, i: usize, args: &[&str]) -> (bool, String) {
        let Ok(bin) = bin_path("ipfailover") else {
            return (false, "ipfailover not built".into());
        };
        match Command::new(bin)
            .arg("--run-dir")
            .arg(&self.c.nodes[i].run_dir)
            .args(["-t", "5"])
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
                .trim()
                .to_string(),
            ),
            Err(e) => (false, e.to_string()),
        }
    }

    /// `ipfailover --json daemons` on node `i`: each daemon's name, restart
    /// count and last exit.
    pub fn daemons(&self, i: usize) -> Option<Vec<(String, u64, Option<String>)>> {
        let (_, text) = self.cli(i, &["--json", "daemons"]);
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let list = v.get("daemons")?.as_array()?;
        Some(
            list.iter()
                .filter_map(|d| {
                    Some((
                        d.get("name")?.as_str()?.to_string(),
                        d.get("restarts")?.as_u64()?,
                        d.get("last_exit")
                            .and_then(|x| x.as_str())
                            .map(str::to_string),
                    ))
                })
                .collect(),
        )
    }

    /// Whether node `i` sees a complete cluster: `ipfailover --json status`
    /// answers with a valid lease, a leader, and every node OK.
    pub fn members_ok(&self, i: usize) -> bool {
        let (ok, text) = self.cli(i, &["--json", "status"]);
        if !ok {
            return false;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return false;
        };
        // CTDB's schema; the lease under "ipfailover", an unknown leader
        // is CTDB_UNKNOWN_PNN.
        v["ipfailover"]["lease_ok"].as_bool() == Some(true)
            && v["leader"]
                .as_u64()
                .is_some_and(|l| l != u64::from(u32::MAX))
            && v["node_status"]["nodes"]
                .as_object()
                .is_some_and(|ns| ns.values().all(|n| n["flags_ok"].as_bool() == Some(true)))
    }

    /// The placement the nodes' address lists call for is met: every
    /// address some powered node lists is configured on exactly one
    /// powered node that lists it, and no other public address is
    /// configured on a powered node. Returns the owner of each address.
    pub fn placed(&self) -> Option<BTreeMap<IpAddr, usize>> {
        let files = self.files.lock().expect("files").clone();
        let powered = self.powered.lock().expect("powered").clone();
        let now = self.log.placement();
        let mut out = BTreeMap::new();
        let wanted: BTreeSet<usize> = files
            .iter()
            .enumerate()
            .filter(|(i, _)| powered[*i])
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        for &k in &wanted {
            let a = self.pool[k].0;
            let on: Vec<usize> = now
                .get(&a)
                .map(|v| v.iter().copied().filter(|n| powered[*n]).collect())
                .unwrap_or_default();
            match on.as_slice() {
                [one] if files[*one].contains(&k) => {
                    out.insert(a, *one);
                }
                _ => return None,
            }
        }
        for (a, nodes) in &now {
            if !out.contains_key(a) && nodes.iter().any(|n| powered[*n]) {
                return None;
            }
        }
        Some(out)
    }

    /// A short description of where every public address is now.
    pub fn where_now(&self) -> String {
        self.log
            .placement()
            .iter()
            .map(|(a, n)| format!("{a}@{n:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The last lines of every node's masterd log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.c.log_tails(&["masterd"], lines)
    }

    /// Copies every log of the scratch directory to `dest` (created), so
    /// that they outlive the bed. Returns `dest`.
    ///
    /// # Errors
    ///
    /// When `dest` cannot be created.
    pub fn keep_logs(&self, dest: &std::path::Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dest)?;
        for e in std::fs::read_dir(&self.c.scratch)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let _ = std::fs::copy(&p, dest.join(e.file_name()));
            }
        }
        Ok(dest.to_path_buf())
    }

    /// Stops the detector and load threads.
    pub fn stop_threads(&self) {
        self.threads.lock().expect("threads").stop();
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for i in 0..self.opts.nodes {
            self.signal_node(i, Signal::SIGCONT);
            self.kill_masterd(i);
        }
        self.stop_threads();
        for i in 0..self.opts.nodes {
            self.signal_node(i, Signal::SIGKILL);
        }
    }
}
