//! A cluster of node namespaces on one switched LAN, plus a client namespace:
//! the test bed shared by the integration tests and the demo.
//!
//! Node `i` (its PNN) lives in its own namespace with `eth0` plugged into the
//! LAN and the private address `192.0.2.(10+i)/24` (and `2001:db8::(10+i)/64`);
//! the client has `192.0.2.100/24` (`2001:db8::100/64`). Each node gets a
//! configuration directory holding the CTDB-format `nodes` file and the
//! cluster key, and a run directory for its sockets, all under one scratch
//! directory that is removed on drop. Powering a node off pulls its cable
//! (switch port down) and SIGKILLs the processes started for it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::netns::{Lan, NetNs};

/// One node of a [`TestCluster`].
#[derive(Debug)]
pub struct Node {
    /// The node's PNN (its line in the nodes file).
    pub pnn: u32,
    /// The node's namespace.
    pub ns: NetNs,
    /// The node's private (cluster) IPv4 address.
    pub addr: Ipv4Addr,
    /// The node's private IPv6 address.
    pub addr6: Ipv6Addr,
    /// The switch port the node is plugged into.
    pub port: String,
    /// The node's configuration directory (`nodes`, `cluster.key`, ...).
    pub config_dir: PathBuf,
    /// The node's run directory (sockets).
    pub run_dir: PathBuf,
    pids: std::sync::Mutex<Vec<u32>>,
}

impl Node {
    /// Starts a process inside the node's namespace and remembers it, so that
    /// [`TestCluster::power_off`] kills it. Returns its pid.
    ///
    /// # Errors
    ///
    /// When the process cannot be started.
    pub fn spawn(&self, cmd: Command) -> Result<u32> {
        let pid = self.ns.spawn(cmd)?;
        self.pids.lock().expect("pid list poisoned").push(pid);
        Ok(pid)
    }

    /// masterd's status on this node (through its transportd), or None when
    /// it does not answer within 2 s.
    pub fn masterd_status(&self) -> Option<transport::msg::master::MasterStatus> {
        use transport::msg::master::{MasterStatus, GET_STATUS};
        use transport::proto::{service::MASTERD, Address};
        let sock = self.run_dir.join("transport.sock");
        self.ns
            .block_on(move || async move {
                let (client, _incoming) = transport::client::Client::connect_unix(&sock, "test")
                    .await
                    .ok()?;
                client
                    .request::<_, MasterStatus>(
                        Address::local(MASTERD),
                        GET_STATUS,
                        &(),
                        std::time::Duration::from_secs(2),
                    )
                    .await
                    .ok()
            })
            .ok()
            .flatten()
    }

    /// Kills (SIGKILL) every process started for this node.
    pub fn kill_all(&self) {
        let pids: Vec<u32> = std::mem::take(&mut *self.pids.lock().expect("pid list poisoned"));
        for pid in pids {
            self.ns.kill(pid);
        }
    }
}

/// Nodes, a client and the LAN that joins them.
#[derive(Debug)]
pub struct TestCluster {
    /// The nodes, index = PNN.
    pub nodes: Vec<Node>,
    /// The client namespace (`eth0`, 192.0.2.100/24, 2001:db8::100/64).
    pub client: NetNs,
    /// The client's switch port.
    pub client_port: String,
    /// The switch.
    pub lan: Lan,
    /// The scratch directory holding every node's directories.
    pub scratch: PathBuf,
}

/// The client's IPv4 address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

impl TestCluster {
    /// Builds `n` node namespaces and a client on one LAN, and writes each
    /// node's nodes file and cluster key.
    ///
    /// # Errors
    ///
    /// When a namespace, link or file cannot be created.
    pub fn new(tag: &str, n: usize) -> Result<TestCluster> {
        if n == 0 || n > 100 {
            bail!("a test cluster has 1 to 100 nodes, not {n}");
        }
        let lan = Lan::new(&format!("{tag}-sw"))?;
        let scratch = std::env::temp_dir().join(format!(
            "ipfailover-{tag}-{}-{}",
            std::process::id(),
            lan.switch().name().rsplit('-').next().unwrap_or("0")
        ));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let key = random_key_hex()?;
        let mut nodes = Vec::with_capacity(n);
        // No comment line: in CTDB's format a `#` line is a deleted node and
        // takes a PNN.
        let mut nodes_file = String::new();
        for i in 0..n {
            let host = u8::try_from(10 + i).context("too many nodes")?;
            let addr = Ipv4Addr::new(192, 0, 2, host);
            let addr6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(host));
            nodes_file.push_str(&format!("{addr}\n"));
            let ns = NetNs::new(&format!("{tag}-n{i}"))?;
            let port = lan.attach(&ns, "eth0")?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ns.ip(&[
                "addr",
                "add",
                &format!("{addr6}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            let config_dir = scratch.join(format!("node{i}/etc"));
            let run_dir = scratch.join(format!("node{i}/run"));
            std::fs::create_dir_all(&config_dir)?;
            std::fs::create_dir_all(&run_dir)?;
            nodes.push(Node {
                pnn: u32::try_from(i).context("too many nodes")?,
                ns,
                addr,
                addr6,
                port,
                config_dir,
                run_dir,
                pids: std::sync::Mutex::new(Vec::new()),
            });
        }
        for node in &nodes {
            write_private(&node.config_dir.join("nodes"), &nodes_file)?;
            write_private(&node.config_dir.join("cluster.key"), &format!("{key}\n"))?;
        }
        let client = NetNs::new(&format!("{tag}-cl"))?;
        let client_port = lan.attach(&client, "eth0")?;
        client.ip(&["addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", "eth0"])?;
        client.ip(&["addr", "add", "2001:db8::100/64", "dev", "eth0", "nodad"])?;
        Ok(TestCluster {
            nodes,
            client,
            client_port,
            lan,
            scratch,
        })
    }

    /// The log file of daemon `name` on node `pnn` in the scratch directory
    /// (`node{pnn}-{name}.log`), opened for appending.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened.
    pub fn log_file(&self, pnn: usize, name: &str) -> Result<std::fs::File> {
        let path = self.scratch.join(format!("node{pnn}-{name}.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))
    }

    /// Starts node `pnn`'s transportd (as a process of the node, logging to
    /// [`TestCluster::log_file`]) and waits up to 10 s for its socket.
    /// Returns its pid.
    ///
    /// # Errors
    ///
    /// When it cannot be started or its socket does not appear.
    pub fn start_transportd(&self, pnn: usize) -> Result<u32> {
        self.start_transportd_with(pnn, &[])
    }

    /// [`TestCluster::start_transportd`] with `extra` flags (such as
    /// `--group nogroup`).
    ///
    /// # Errors
    ///
    /// When it cannot be started or its socket does not appear.
    pub fn start_transportd_with(&self, pnn: usize, extra: &[&str]) -> Result<u32> {
        let node = &self.nodes[pnn];
        let sock = node.run_dir.join("transport.sock");
        let _ = std::fs::remove_file(&sock);
        let mut t = node.ns.command(&bin_path("transportd")?.to_string_lossy());
        t.arg("--run-dir")
            .arg(&node.run_dir)
            .arg("--nodes")
            .arg(node.config_dir.join("nodes"))
            .arg("--key")
            .arg(node.config_dir.join("cluster.key"))
            .args(["--pnn", &pnn.to_string()])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(self.log_file(pnn, "transportd")?);
        let pid = node.spawn(t)?;
        crate::netns::wait_for(
            "transportd socket",
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(20),
            || sock.exists().then_some(()),
        )?;
        Ok(pid)
    }

    /// Starts daemon `name` (clusterd, conntrackd, failoverd) of node `pnn`
    /// with its configuration directory, logging to
    /// [`TestCluster::log_file`]. Returns its pid.
    ///
    /// # Errors
    ///
    /// When it cannot be started.
    pub fn start_daemon(&self, pnn: usize, name: &str) -> Result<u32> {
        let node = &self.nodes[pnn];
        let mut d = node.ns.command(&bin_path(name)?.to_string_lossy());
        d.arg("--config-dir")
            .arg(&node.config_dir)
            .stdout(std::process::Stdio::null())
            .stderr(self.log_file(pnn, name)?);
        node.spawn(d)
    }

    /// Plugs a second port `eth1` of every node into the switch (for the
    /// public addresses), makes the nodes answer ARP only on the interface
    /// that has the address, and gives the client `client_cidr` too.
    /// Returns the nodes' `eth1` switch ports, by PNN.
    ///
    /// # Errors
    ///
    /// When a link, sysctl or address cannot be set.
    pub fn add_public_ports(&self, client_cidr: &str) -> Result<Vec<String>> {
        let mut ports = Vec::new();
        for n in &self.nodes {
            ports.push(self.lan.attach(&n.ns, "eth1")?);
            n.ns.ip(&["link", "set", "eth1", "up"])?;
            for (k, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                n.ns.exec_ok("sysctl", &["-qw", &format!("net.ipv4.conf.all.{k}={v}")])?;
            }
        }
        self.client
            .ip(&["addr", "add", client_cidr, "dev", "eth0"])?;
        Ok(ports)
    }

    /// A listener on every node (`0.0.0.0:port`, in its namespace) that
    /// accepts connections and keeps them open without answering, until
    /// `stop` is set (at most 10 minutes): the idle server side of a
    /// client's connection to a public address.
    ///
    /// # Errors
    ///
    /// When a port cannot be bound.
    pub fn listen_everywhere(
        &self,
        port: u16,
        stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<()> {
        self.listen_everywhere_on("0.0.0.0", port, stop)
    }

    /// [`TestCluster::listen_everywhere`] on `[::]:port` (IPv6; the IPv4
    /// tests keep their IPv4 listener).
    ///
    /// # Errors
    ///
    /// When a port cannot be bound.
    pub fn listen_everywhere_v6(
        &self,
        port: u16,
        stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<()> {
        self.listen_everywhere_on("::", port, stop)
    }

    fn listen_everywhere_on(
        &self,
        host: &'static str,
        port: u16,
        stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        use std::time::{Duration, Instant};
        for n in &self.nodes {
            let l =
                n.ns.run(move || -> std::io::Result<std::net::TcpListener> {
                    let l = std::net::TcpListener::bind((host, port))?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                })??;
            let stop = std::sync::Arc::clone(stop);
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let end = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match l.accept() {
                        Ok((s, _)) => kept.push(s),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
        Ok(())
    }

    /// The last `lines` lines of the logs of `daemons` on every node, for a
    /// failure message.
    pub fn log_tails(&self, daemons: &[&str], lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            for name in daemons {
                let p = self.scratch.join(format!("node{i}-{name}.log"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(lines).collect();
                out.push_str(&format!("--- node{i} {name} (last lines)\n"));
                for l in tail.iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Pulls node `pnn`'s cable and SIGKILLs its processes: a power-off as
    /// the rest of the cluster sees it.
    ///
    /// # Errors
    ///
    /// When there is no such node or its port cannot be set down.
    pub fn power_off(&self, pnn: usize) -> Result<()> {
        let node = self.nodes.get(pnn).context("no such node")?;
        self.lan.set_port(&node.port, false)?;
        node.kill_all();
        Ok(())
    }

    /// Plugs node `pnn`'s cable back in (its processes must be restarted).
    ///
    /// # Errors
    ///
    /// When there is no such node or its port cannot be set up.
    pub fn power_on(&self, pnn: usize) -> Result<()> {
        let node = self.nodes.get(pnn).context("no such node")?;
        self.lan.set_port(&node.port, true)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.kill_all();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The node address as an `IpAddr`, for callers that mix families.
pub fn node_ip(node: &Node) -> IpAddr {
    IpAddr::V4(node.addr)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn random_key_hex() -> Result<String> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

/// The path of a workspace binary built next to the running test or bench
/// executable (`target/<profile>/<name>`).
///
/// # Errors
///
/// When it has not been built; the message says how to build it.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    // Test executables live in target/<profile>/deps, binaries one level up.
    for _ in 0..2 {
        if let Some(d) = &dir {
            let candidate = d.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    bail!("binary '{name}' not found next to {}: run `cargo build --workspace --bins` (with --release for benchmarks) first", exe.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::require_root;

    #[test]
    fn cluster_nodes_reach_each_other_and_power_off_cuts_one() {
        require_root();
        let c = TestCluster::new("t-cl", 3).unwrap();
        let nodes = std::fs::read_to_string(c.nodes[1].config_dir.join("nodes")).unwrap();
        // Line N is node N.
        assert_eq!(nodes.lines().nth(2), Some("192.0.2.12"), "{nodes}");
        let ping = |ns: &NetNs, to: &str| {
            ns.exec("ping", &["-c", "1", "-W", "1", to])
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        assert!(ping(&c.client, "192.0.2.10"));
        assert!(ping(&c.nodes[0].ns, "192.0.2.12"));
        c.power_off(2).unwrap();
        assert!(!ping(&c.nodes[0].ns, "192.0.2.12"));
        assert!(ping(&c.nodes[0].ns, "192.0.2.11"));
    }
}
