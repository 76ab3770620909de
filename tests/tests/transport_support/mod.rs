//! Shared helpers of the transport integration tests: finding (building) the
//! `transportd` and `ipfailover` binaries, starting transportd processes in
//! test namespaces, and talking to them through the client library.

#![allow(dead_code)] // each test file uses a part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tests::netns::{veth, wait_for, NetNs};
use transport::client::{Client, Incoming};
use transport::proto::control::{PeerList, Statistics, LIST_PEERS, STATISTICS};
use transport::proto::service::TRANSPORT;
use transport::proto::Address;

/// Port of the peer links in the tests (inside the test namespaces).
pub const PORT: u16 = 14379;
/// How long a control request may take in the tests.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The directory of this build's binaries (`target/<profile>`).
fn bin_dir() -> PathBuf {
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Paths of `transportd` and `ipfailover`, building them first (once per
/// test binary) so that `cargo test -p tests` alone works.
pub fn bins() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = bin_dir();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "transport", "-p", "cli", "--bins"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        let status = cmd.status().expect("running cargo build for the binaries");
        assert!(
            status.success(),
            "building transportd and ipfailover failed"
        );
    });
    (dir.join("transportd"), dir.join("ipfailover"))
}

/// A private scratch directory (mode 0755 so an unprivileged client can
/// reach the socket), removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates `/tmp/ipf-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ipf-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }

    /// A path inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a new cluster key with `transportd --generate-key`.
pub fn generate_key(path: &Path) {
    let (transportd, _) = bins();
    let out = Command::new(transportd)
        .arg("--generate-key")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "--generate-key failed: {out:?}");
}

/// One transportd process.
#[derive(Debug, Clone)]
pub struct Daemon {
    /// Its run directory.
    pub run_dir: PathBuf,
    /// Its pid (for `NetNs::kill`).
    pub pid: u32,
    /// Its log file.
    pub log: PathBuf,
}

impl Daemon {
    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("transport.sock")
    }

    /// The log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts transportd in `ns` with `extra` flags; waits for its socket.
pub fn start(ns: &NetNs, scratch: &Scratch, name: &str, extra: &[&str]) -> Result<Daemon> {
    let (transportd, _) = bins();
    let run_dir = scratch.path(name);
    let log = scratch.path(&format!("{name}.log"));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut cmd = ns.command(transportd.to_str().context("path")?);
    cmd.arg("--run-dir")
        .arg(&run_dir)
        .args(["--port", &PORT.to_string(), "--log-level", "debug"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log_file);
    let pid = ns.spawn(cmd)?;
    let d = Daemon { run_dir, pid, log };
    let sock = d.socket();
    wait_for(
        "transportd socket",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || sock.exists().then_some(()),
    )
    .with_context(|| format!("transportd {name} did not start: {}", d.log_text()))?;
    Ok(d)
}

/// Two namespaces joined by a veth: node 0 at 192.0.2.1, node 1 at
/// 192.0.2.2, with a nodes file and (unless `keys` differ) one key.
pub struct Pair {
    /// Node 0's namespace.
    pub a: NetNs,
    /// Node 1's namespace.
    pub b: NetNs,
    /// Files.
    pub scratch: Scratch,
}

impl Pair {
    /// Builds the namespaces and writes `nodes`, `key0` and `key1` (the same
    /// key unless `same_key` is false).
    pub fn new(tag: &str, same_key: bool) -> Result<Pair> {
        let a = NetNs::new(&format!("{tag}a"))?;
        let b = NetNs::new(&format!("{tag}b"))?;
        veth(&a, "eth0", &b, "eth0")?;
        a.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])?;
        b.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"])?;
        let scratch = Scratch::new(tag);
        std::fs::write(scratch.path("nodes"), "192.0.2.1\n192.0.2.2\n")?;
        generate_key(&scratch.path("key0"));
        if same_key {
            std::fs::copy(scratch.path("key0"), scratch.path("key1"))?;
        } else {
            generate_key(&scratch.path("key1"));
        }
        Ok(Pair { a, b, scratch })
    }

    /// Starts node `pnn`'s transportd.
    pub fn start(&self, pnn: u32) -> Result<Daemon> {
        self.start_with(pnn, &[])
    }

    /// Starts node `pnn`'s transportd with `extra` flags.
    pub fn start_with(&self, pnn: u32, extra: &[&str]) -> Result<Daemon> {
        let ns = if pnn == 0 { &self.a } else { &self.b };
        let nodes = self.scratch.path("nodes");
        let key = self.scratch.path(&format!("key{pnn}"));
        let mut args = vec![
            "--nodes",
            nodes.to_str().context("path")?,
            "--key",
            key.to_str().context("path")?,
        ];
        args.extend_from_slice(extra);
        start(ns, &self.scratch, &format!("node{pnn}"), &args)
    }
}

/// A current-thread runtime for the test's clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects a client named `name` to `d`.
pub async fn connect(d: &Daemon, name: &str) -> Result<(Client, Incoming)> {
    Client::connect_unix(d.socket(), name)
        .await
        .with_context(|| format!("connecting {name}: {}", d.log_text()))
}

/// transportd's counters (service 0 of the client's node).
pub async fn stats(c: &Client) -> Result<Statistics> {
    Ok(
        c.request(Address::local(TRANSPORT), STATISTICS, &(), TIMEOUT)
            .await?,
    )
}

/// Waits (bounded) until the client's transportd sees `peer` as `up`.
pub async fn wait_peer(c: &Client, peer: u32, up: bool, limit: Duration) -> Result<()> {
    let start = tokio::time::Instant::now();
    loop {
        let list: PeerList = c
            .request(Address::local(TRANSPORT), LIST_PEERS, &(), TIMEOUT)
            .await?;
        if list
            .peers
            .iter()
            .any(|p| p.pnn == peer && p.connected == up)
        {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!(
                "peer {peer} not {} after {limit:?}: {list:?}",
                if up { "up" } else { "down" }
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
