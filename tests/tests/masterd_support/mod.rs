//! Helpers of the masterd tests: a node configuration for masterd, a
//! masterd process guard (SIGTERM + exit status), the status request, and a
//! systemd-style notify socket.

#![allow(dead_code)] // each test file uses a part

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tests::cluster::{bin_path, Node};
use transport::msg::master::MasterStatus;

/// The daemons whose binaries are built next to masterd, in start order:
/// transportd today; clusterd, conntrackd and failoverd once they exist.
pub fn available_daemons() -> String {
    masterd::daemons::ALL
        .iter()
        .filter(|d| bin_path(d.name).is_ok())
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes the node's ipfailover.toml (run dir inside the scratch tree) and
/// optionally its public_addresses.
pub fn write_config(node: &Node, public_addresses: Option<&str>) {
    std::fs::write(
        node.config_dir.join("ipfailover.toml"),
        format!(
            "[transport]\nrun_dir = \"{}\"\n\n[logging]\nlevel = \"info\"\n",
            node.run_dir.display()
        ),
    )
    .unwrap();
    if let Some(pa) = public_addresses {
        std::fs::write(node.config_dir.join("public_addresses"), pa).unwrap();
    }
}

/// A masterd process in a node namespace; SIGKILLed on drop if still running.
pub struct Masterd {
    pub child: Child,
    pub pid: u32,
}

impl Masterd {
    /// Starts masterd in `node`'s namespace with `extra` arguments; stderr
    /// goes to `log` when given.
    pub fn start(
        node: &Node,
        extra: &[&str],
        notify: Option<&Path>,
        log: Option<&Path>,
    ) -> Masterd {
        let masterd = bin_path("masterd").unwrap();
        let mut cmd = node.ns.command(&masterd.to_string_lossy());
        cmd.arg("--config-dir")
            .arg(&node.config_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match log {
            Some(p) => {
                cmd.stderr(std::fs::File::create(p).unwrap());
            }
            None => {
                cmd.stderr(Stdio::null());
            }
        }
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        Masterd { child, pid }
    }

    /// SIGTERM, then the exit status (SIGKILL after `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let _ = kill(
            Pid::from_raw(i32::try_from(self.pid).unwrap()),
            Signal::SIGTERM,
        );
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Masterd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// masterd's status on `node`, or None when it does not answer.
pub fn status(node: &Node) -> Option<MasterStatus> {
    node.masterd_status()
}

/// Polls `f` every 50 ms for at most `limit`.
pub fn wait<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    tests::netns::wait_for(what, limit, Duration::from_millis(50), f).unwrap()
}

/// A datagram socket standing in for systemd's notify socket.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
}

impl NotifySocket {
    pub fn new(dir: &Path, name: &str) -> NotifySocket {
        let path = dir.join(name);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket { path, sock }
    }

    /// Waits up to `limit` for a datagram containing `what`; returns it.
    pub fn wait_for(&self, what: &str, limit: Duration) -> Option<String> {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains(what) {
                    return Some(text);
                }
            }
        }
        None
    }
}

/// `ipfailover ping -n all` on `node`: the number of nodes that answered.
pub fn ping_all(node: &Node) -> usize {
    let cli = bin_path("ipfailover").unwrap();
    let out = node
        .ns
        .command(&cli.to_string_lossy())
        .arg("--run-dir")
        .arg(&node.run_dir)
        .args(["ping", "-n", "all"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("response from"))
        .count()
}

/// Is process `pid` alive?
pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // A zombie is not alive for our purposes.
    match std::fs::read_to_string(format!("/proc/{raw}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
