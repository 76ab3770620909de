//! Network namespaces, veth pairs, a bridged LAN and child processes for
//! integration tests and the demo.
//!
//! * [`NetNs`] creates a uniquely named namespace (`ip netns add`) and deletes
//!   it on drop, after ending the processes that were started in it through
//!   [`NetNs::spawn`] (by pid, never by name).
//! * [`NetNs::run`] runs a closure on a fresh thread that has entered the
//!   namespace (`setns`), so netlink and packet sockets it opens live there.
//! * [`Lan`] is a bridge in a namespace of its own ("the switch") that node
//!   namespaces are plugged into through veth pairs.
//!
//! Everything here needs root: [`require_root`] fails the test with
//! "needs root" instead of letting it pass silently.

use std::fs::File;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails (panics) with "needs root" unless the process runs as root.
///
/// # Panics
///
/// When the effective user is not root: namespace tests must never pass
/// silently without having run.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root: this test builds network namespaces"
    );
}

/// Runs `ip ARGS` (on the host's namespace only for `netns` and `link`
/// commands that name a namespace) and fails with its stderr.
///
/// # Errors
///
/// When `ip` cannot be started or exits non-zero.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("starting ip {}", args.join(" ")))?;
    check(&out, "ip", args)
}

fn check(out: &Output, prog: &str, args: &[&str]) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

/// A network namespace owned by a test, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    children: Mutex<Vec<Child>>,
}

impl NetNs {
    /// Creates a namespace named `ipf-<tag>-<pid>-<n>` with loopback up.
    ///
    /// # Errors
    ///
    /// When `ip netns add` fails (for example without root).
    pub fn new(tag: &str) -> Result<NetNs> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("ipf-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = NetNs {
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS`.
    ///
    /// # Errors
    ///
    /// When the command fails.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs a program inside the namespace and returns its output, whatever
    /// its exit status.
    ///
    /// # Errors
    ///
    /// When the program cannot be started.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, prog])
            .args(args)
            .output()
            .with_context(|| format!("running {prog} in {}", self.name))
    }

    /// Runs a program inside the namespace and fails unless it exits 0.
    ///
    /// # Errors
    ///
    /// When the program cannot be started or exits non-zero.
    pub fn exec_ok(&self, prog: &str, args: &[&str]) -> Result<String> {
        let out = self.exec(prog, args)?;
        check(&out, prog, args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Drops all IPv4 traffic between this namespace and `peers`, both
    /// ways, with an nftables table of its own (`ipftest_cut`): a network
    /// partition as the other side sees it. [`NetNs::heal`] removes it.
    ///
    /// # Errors
    ///
    /// When `nft` fails.
    pub fn cut_from(&self, peers: &[String]) -> Result<()> {
        let mut script = String::from(
            "table inet ipftest_cut {\n\
             chain in { type filter hook input priority 0; }\n\
             chain out { type filter hook output priority 0; }\n}\n",
        );
        for a in peers {
            script.push_str(&format!(
                "add rule inet ipftest_cut in ip saddr {a} drop\n\
                 add rule inet ipftest_cut out ip daddr {a} drop\n"
            ));
        }
        let file = std::env::temp_dir().join(format!("{}-cut.nft", self.name));
        std::fs::write(&file, script)?;
        let r = self.exec_ok("nft", &["-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        r.map(|_| ())
    }

    /// Removes what [`NetNs::cut_from`] added.
    ///
    /// # Errors
    ///
    /// When `nft` fails.
    pub fn heal(&self) -> Result<()> {
        self.exec_ok("nft", &["delete", "table", "inet", "ipftest_cut"])
            .map(|_| ())
    }

    /// A `Command` that runs `prog` inside the namespace (through
    /// `ip netns exec`), for callers that want to set up stdio themselves.
    pub fn command(&self, prog: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, prog]);
        cmd
    }

    /// Starts a process in the namespace; it is killed (by its pid) and
    /// reaped when the namespace guard drops. Returns its pid.
    ///
    /// # Errors
    ///
    /// When the process cannot be started.
    pub fn spawn(&self, mut cmd: Command) -> Result<u32> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {cmd:?} in {}", self.name))?;
        let pid = child.id();
        self.children
            .lock()
            .expect("children lock poisoned")
            .push(child);
        Ok(pid)
    }

    /// Sends SIGKILL to a process started with [`NetNs::spawn`] and reaps it.
    /// Returns false when no such process was started here.
    pub fn kill(&self, pid: u32) -> bool {
        let mut children = self.children.lock().expect("children lock poisoned");
        if let Some(pos) = children.iter().position(|c| c.id() == pid) {
            let mut child = children.swap_remove(pos);
            let _ = child.kill();
            let _ = child.wait();
            true
        } else {
            false
        }
    }

    /// Runs `f` on a new thread that has entered this namespace, so every
    /// socket `f` opens belongs to it, and returns `f`'s result.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered or `f` panics.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let handle = std::thread::spawn(move || -> Result<R> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("setns into the test namespace")?;
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs an async closure on a current-thread tokio runtime inside this
    /// namespace.
    ///
    /// # Errors
    ///
    /// When the namespace cannot be entered or the runtime cannot be built.
    pub fn block_on<F, Fut, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R>,
        R: Send + 'static,
    {
        self.run(move || -> Result<R> {
            let rt = tokio_runtime()?;
            Ok(rt.block_on(f()))
        })?
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(children) = self.children.get_mut() {
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Deleting can race with a process that is still exiting; retry a
        // bounded number of times.
        for _ in 0..20 {
            if ip(&["netns", "del", &self.name]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("warning: could not delete network namespace {}", self.name);
    }
}

/// Creates a veth pair with one end in each namespace, both set up.
///
/// # Errors
///
/// When `ip link add` fails (names longer than 15 bytes, for instance).
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) -> Result<()> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A switched LAN: a bridge `br0` in a namespace of its own. Nodes are
/// plugged in with [`Lan::attach`]. The bridge forwards at once (no STP
/// learning delay).
#[derive(Debug)]
pub struct Lan {
    switch: NetNs,
    ports: AtomicU32,
}

impl Lan {
    /// Creates the switch namespace and its bridge.
    ///
    /// # Errors
    ///
    /// When the namespace or the bridge cannot be created.
    pub fn new(tag: &str) -> Result<Lan> {
        let switch = NetNs::new(tag)?;
        switch.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Lan {
            switch,
            ports: AtomicU32::new(0),
        })
    }

    /// The switch's namespace (for captures on the bridge).
    pub fn switch(&self) -> &NetNs {
        &self.switch
    }

    /// Plugs `ns` into the LAN with an interface called `ifname` in `ns`, and
    /// returns the name of the switch-side port.
    ///
    /// # Errors
    ///
    /// When the veth pair cannot be created or enslaved.
    pub fn attach(&self, ns: &NetNs, ifname: &str) -> Result<String> {
        let n = self.ports.fetch_add(1, Ordering::Relaxed);
        let port = format!("port{n}");
        veth(&self.switch, &port, ns, ifname)?;
        self.switch.ip(&["link", "set", &port, "master", "br0"])?;
        Ok(port)
    }

    /// Unplugs a port (the cable pull of a node power-off).
    ///
    /// # Errors
    ///
    /// When the port does not exist.
    pub fn set_port(&self, port: &str, up: bool) -> Result<()> {
        self.switch
            .ip(&["link", "set", port, if up { "up" } else { "down" }])
    }
}

/// Polls `f` every `every` until it returns `Some`, for at most `limit`.
///
/// # Errors
///
/// When `limit` passes first; the error names `what`.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() >= limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// The IPv4 addresses configured on `iface` in namespace `ns` (`ip -o -4
/// addr show`), in the kernel's order; empty when the namespace or the
/// interface is not there.
pub fn ipv4_on(ns: &str, iface: &str) -> Vec<std::net::Ipv4Addr> {
    let Ok(out) = Command::new("ip")
        .args(["-n", ns, "-o", "-4", "addr", "show", "dev", iface])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            f.find(|w| *w == "inet")?;
            f.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_created_and_removed() {
        require_root();
        let name;
        {
            let ns = NetNs::new("t-ns").expect("create namespace");
            name = ns.name().to_string();
            let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
            assert!(String::from_utf8_lossy(&list.stdout).contains(&name));
        }
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }

    #[test]
    fn veth_pair_carries_pings() {
        require_root();
        let a = NetNs::new("t-va").unwrap();
        let b = NetNs::new("t-vb").unwrap();
        veth(&a, "eth0", &b, "eth0").unwrap();
        a.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
            .unwrap();
        b.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"])
            .unwrap();
        let out = a
            .exec("ping", &["-c", "1", "-W", "2", "192.0.2.2"])
            .unwrap();
        assert!(out.status.success(), "ping failed: {out:?}");
    }

    #[test]
    fn run_enters_the_namespace() {
        require_root();
        let ns = NetNs::new("t-run").unwrap();
        ns.ip(&[
            "link", "add", "dummy7", "type", "veth", "peer", "name", "dummy7b",
        ])
        .unwrap();
        let found = ns
            .run(|| nix::net::if_::if_nametoindex("dummy7").is_ok())
            .unwrap();
        assert!(found, "dummy7 not visible after setns");
        let host = nix::net::if_::if_nametoindex("dummy7").is_ok();
        assert!(!host, "dummy7 leaked into the host namespace");
    }
}
