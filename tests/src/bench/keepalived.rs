//! The failover benchmark's baseline: keepalived (Debian's package, VRRPv3)
//! on the same topology as ipfailover's trials — three node namespaces
//! whose `eth1` ports carry the public addresses, a client on the same LAN,
//! listeners on every node — measured in the same run.
//!
//! One VRRP instance per public address; node 0 has the highest priority
//! (150, then 100 and 50), so with preemption it holds every address. The
//! default profile uses keepalived's defaults (1 s adverts); the fast
//! profile VRRPv3 centisecond adverts of 10 ms. A trial powers node 0 off
//! (both its ports down at T0, then SIGKILL of its keepalived) and measures
//! T0 → the first new TCP connection to the address that succeeds; with
//! several addresses, T0 → every address answering. Then node 0 is plugged
//! in and restarted, and takes its addresses back before the next trial.
//! keepalived resets no idle client: it has no connection tracking.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::failover::{addresses_on, client_phase, first_connect, in_ns, public, public_lan, PORT};
use crate::cluster::TestCluster;
use crate::netns::wait_for;

const LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

/// Three nodes running keepalived for `count` addresses.
struct KeepalivedBed {
    c: TestCluster,
    eth1_ports: Vec<String>,
    addrs: Vec<IpAddr>,
    confs: Vec<std::path::PathBuf>,
    stop: Arc<AtomicBool>,
}

impl Drop for KeepalivedBed {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.c.nodes.len() {
            self.kill(i);
        }
    }
}

/// keepalived's configuration for node `i`.
fn config(i: usize, addrs: &[IpAddr], fast: bool) -> String {
    let priority = [150, 100, 50][i];
    let advert = if fast { "0.01" } else { "1" };
    let mut s = format!(
        "global_defs {{\n  router_id node{i}\n  vrrp_version 3\n  vrrp_garp_master_delay 0\n  \
         vrrp_garp_master_repeat 1\n  script_user root\n}}\n"
    );
    for (k, a) in addrs.iter().enumerate() {
        s.push_str(&format!(
            "vrrp_instance VI_{k} {{\n  state BACKUP\n  interface eth1\n  virtual_router_id {}\n  \
             priority {priority}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {a}/24 dev eth1\n  }}\n}}\n",
            k + 1
        ));
    }
    s
}

impl KeepalivedBed {
    fn new(tag: &str, count: usize, fast: bool) -> Result<KeepalivedBed> {
        let bed = Self::build(tag, count, fast)?;
        for i in 0..3 {
            bed.start(i)?;
        }
        Ok(bed)
    }

    /// The bed with keepalived configured but not started.
    fn build(tag: &str, count: usize, fast: bool) -> Result<KeepalivedBed> {
        if count == 0 || count > 255 {
            bail!("keepalived: 1..=255 addresses (one VRRP instance each)");
        }
        let c = TestCluster::new(tag, 3)?;
        let eth1_ports = public_lan(&c)?;
        // VRRP sends its adverts from an address of the interface.
        for (i, n) in c.nodes.iter().enumerate() {
            n.ns.ip(&[
                "addr",
                "add",
                &format!("192.0.2.{}/24", 50 + i),
                "dev",
                "eth1",
            ])?;
        }
        let addrs: Vec<IpAddr> = (0..count).map(public).collect();
        let mut confs = Vec::new();
        for (i, n) in c.nodes.iter().enumerate() {
            let path = n.config_dir.join("keepalived.conf");
            std::fs::write(&path, config(i, &addrs, fast))?;
            confs.push(path);
        }
        let stop = Arc::new(AtomicBool::new(false));
        c.listen_everywhere(PORT, &stop)?;
        Ok(KeepalivedBed {
            c,
            eth1_ports,
            addrs,
            confs,
            stop,
        })
    }

    fn start(&self, i: usize) -> Result<()> {
        let n = &self.c.nodes[i];
        let run = |f: &str| n.run_dir.join(f).to_string_lossy().into_owned();
        // A SIGKILLed keepalived leaves its pid files, and the next one
        // would take itself for a second copy.
        for f in ["keepalived.pid", "vrrp.pid"] {
            let _ = std::fs::remove_file(n.run_dir.join(f));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.run_dir.join("keepalived.log"))?;
        let mut cmd = n.ns.command("keepalived");
        cmd.args(["-n", "-l", "-G", "-P", "-f"])
            .arg(&self.confs[i])
            .args(["-p", &run("keepalived.pid"), "-r", &run("vrrp.pid")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        n.spawn(cmd).context("starting keepalived")?;
        Ok(())
    }

    /// SIGKILL of every keepalived process of node `i` (the parent, which
    /// we started, and its VRRP child), by pid.
    fn kill(&self, i: usize) {
        let n = &self.c.nodes[i];
        n.kill_all();
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", n.ns.name()])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let Ok(pid) = pid.parse::<i32>() else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "keepalived" {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    /// The last lines of every node's keepalived log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.c.nodes.iter().enumerate() {
            let text =
                std::fs::read_to_string(n.run_dir.join("keepalived.log")).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- node {i} keepalived\n{}\n",
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        out
    }

    /// Every address on node 0 and nowhere else.
    fn wait_on_node0(&self) -> Result<()> {
        let placed = wait_for("keepalived: every address on node 0", LIMIT, POLL, || {
            let mut at: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
            for (i, n) in self.c.nodes.iter().enumerate() {
                for a in addresses_on(n.ns.name()) {
                    at.entry(a).or_default().push(i);
                }
            }
            self.addrs
                .iter()
                .all(|a| at.get(a).map(Vec::as_slice) == Some(&[0]))
                .then_some(())
        });
        placed.with_context(|| self.logs())
    }

    /// Powers node 0 off and returns T0 → the first address answering and
    /// T0 → all of them answering, in ms; then powers it on again. Trial
    /// `n`'s clients start at [`client_phase`]`(n)` after T0, as
    /// ipfailover's do.
    fn trial(&mut self, n: usize) -> Result<(f64, f64)> {
        self.wait_on_node0()?;
        // Let the last takeover's gratuitous ARPs settle.
        std::thread::sleep(Duration::from_millis(300));
        let targets: Vec<SocketAddr> = self
            .addrs
            .iter()
            .map(|a| SocketAddr::new(*a, PORT))
            .collect();
        let ports = [self.eth1_ports[0].clone(), self.c.nodes[0].port.clone()];
        let t0 = self.c.lan.switch().block_on(move || async move {
            let nl = netlink::link::Netlink::new()?;
            for p in &ports {
                nl.link(p).await?;
            }
            let t0 = Instant::now();
            futures::future::try_join(
                nl.set_link_up(&ports[0], false),
                nl.set_link_up(&ports[1], false),
            )
            .await?;
            anyhow::Ok(t0)
        })??;
        self.kill(0);
        let phase = client_phase(n);
        // Probes start after T0: an answer takes far longer than starting
        // a thread, and no probe can reach node 0 before it is gone.
        let probes: Vec<_> = targets
            .iter()
            .map(|t| {
                let t = *t;
                in_ns(self.c.client.name(), move || first_connect(t, phase))
            })
            .collect();
        let mut times = Vec::new();
        for p in probes {
            let at = p
                .join()
                .map_err(|_| anyhow::anyhow!("probe thread panicked"))??
                .context("keepalived: an address never answered")?;
            times.push(at.saturating_duration_since(t0).as_secs_f64() * 1e3);
        }
        let first = times.first().copied().unwrap_or(f64::NAN);
        let all = times.iter().copied().fold(0.0, f64::max);
        // Power on: flush its stale VIPs (a SIGKILLed keepalived leaves
        // them), plug in, restart; it preempts and takes them back.
        let ns = self.c.nodes[0].ns.name().to_string();
        for a in addresses_on(&ns) {
            let _ = self.c.nodes[0]
                .ns
                .ip(&["addr", "del", &format!("{a}/24"), "dev", "eth1"]);
        }
        self.c.power_on(0)?;
        self.c.lan.set_port(&self.eth1_ports[0], true)?;
        self.start(0)?;
        Ok((first, all))
    }
}

/// keepalived's figures for one profile: reconnect times (ms) of
/// `trials` single-address trials, and, when `mass > 0`, the all-answer
/// time of `mass` addresses (p50 over `mass_trials`).
pub struct Baseline {
    /// T0 → first new connection, per single-address trial.
    pub reconnect: Vec<f64>,
    /// T0 → every one of `mass` addresses answering, per mass trial.
    pub mass_all: Vec<f64>,
}

/// Measures keepalived on the benchmark's topology.
///
/// # Errors
///
/// When the bed cannot be built or a trial times out (keepalived missing:
/// `apt-get install keepalived`, which scripts/setup.sh does).
pub fn measure(profile: &str, trials: usize, mass: usize, mass_trials: usize) -> Result<Baseline> {
    if Command::new("keepalived")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        bail!("keepalived is not installed (scripts/setup.sh installs it)");
    }
    let fast = profile == "fast";
    let mut reconnect = Vec::new();
    {
        let mut bed = KeepalivedBed::new(&format!("bk{}", &profile[..1]), 1, fast)?;
        for t in 0..trials {
            let (first, _) = bed
                .trial(t)
                .with_context(|| format!("keepalived {profile} trial {t}"))?;
            eprintln!("keepalived {profile} trial {t}: reconnect {first:.1} ms");
            reconnect.push(first);
        }
    }
    let mut mass_all = Vec::new();
    if mass > 0 {
        let mut bed = KeepalivedBed::new(&format!("bkm{}", &profile[..1]), mass, fast)?;
        for t in 0..mass_trials {
            let (_, all) = bed
                .trial(t)
                .with_context(|| format!("keepalived {profile} mass trial {t}"))?;
            eprintln!(
                "keepalived {profile} mass trial {t}: {mass} addresses answer after {all:.1} ms"
            );
            mass_all.push(all);
        }
    }
    Ok(Baseline {
        reconnect,
        mass_all,
    })
}

/// keepalived's cold start with `count` addresses (1..=255): the three
/// nodes' keepalived started at once (T0 right before the first spawn),
/// until every address is configured on exactly one node, in ms — watched
/// by the chaos tests' rtnetlink detector, as `bench start` watches
/// ipfailover.
///
/// # Errors
///
/// When the bed cannot be built, keepalived is missing, or the addresses
/// are not all hosted within a minute.
pub fn measure_start(profile: &str, count: usize) -> Result<f64> {
    use crate::chaos::monitor::{self, Log, Threads};
    let bed = KeepalivedBed::build(&format!("bks{}", &profile[..1]), count, profile == "fast")?;
    let log = Arc::new(Log::new(3, super::start::is_public));
    let mut threads = Threads::new();
    for (i, n) in bed.c.nodes.iter().enumerate() {
        monitor::start_node(&mut threads, &log, n.ns.name(), i, "none")?;
    }
    let t0 = Instant::now();
    let t0_log = log.at(t0);
    for i in 0..3 {
        bed.start(i)?;
    }
    wait_for("keepalived: every address on one node", LIMIT, POLL, || {
        let p = log.placement();
        bed.addrs
            .iter()
            .all(|a| p.get(a).is_some_and(|n| n.len() == 1))
            .then_some(())
    })
    .with_context(|| bed.logs())?;
    threads.stop();
    // The exact moment, from the events' own stamps (not the poll's).
    let (first, dups) = super::start::first_all_hosted(&log.snapshot(), &bed.addrs, t0_log);
    if dups > 0 {
        eprintln!(
            "keepalived {profile}: an address was on two nodes {dups} times during the start"
        );
    }
    let first = first.context("keepalived: no moment with every address once")?;
    #[allow(clippy::cast_precision_loss)] // µs of a minute at most
    Ok(first.saturating_sub(t0_log) as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_has_one_vrrpv3_instance_per_address() {
        let addrs: Vec<IpAddr> = (0..3).map(public).collect();
        let c = config(1, &addrs, true);
        assert_eq!(c.matches("vrrp_instance").count(), 3);
        assert!(c.contains("vrrp_version 3"));
        assert!(c.contains("advert_int 0.01"));
        assert!(c.contains("priority 100"));
        assert!(c.contains("virtual_router_id 3"));
        assert!(config(0, &addrs, false).contains("advert_int 1\n"));
    }
}
