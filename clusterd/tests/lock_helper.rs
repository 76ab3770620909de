//! The cluster lock with CTDB's real fcntl helper
//! (`/usr/libexec/ctdb/ctdb_mutex_fcntl_helper`, Debian package `ctdb`) and
//! with small `!` helpers that give the other answers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clusterd::lock::{attempt, take, LockAnswer, LockSpec, FCNTL_HELPER};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("clusterd-lock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require_helper() {
    assert!(
        Path::new(FCNTL_HELPER).exists(),
        "needs CTDB's lock helper {FCNTL_HELPER} (apt-get install ctdb; scripts/setup.sh does it)"
    );
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn second_holder_is_contended_until_the_first_releases() {
    require_helper();
    let dir = TempDir::new("contend");
    let spec = LockSpec::parse(dir.0.join("lock").to_str().unwrap()).unwrap();
    let (a, held_a) = take(&spec, WAIT).await.unwrap();
    assert_eq!(a, LockAnswer::Taken);
    let mut held_a = held_a.unwrap();
    let pid = held_a.pid().unwrap();
    let (b, held_b) = take(&spec, WAIT).await.unwrap();
    assert_eq!(b, LockAnswer::Contended);
    assert!(held_b.is_none());
    held_a.release().await;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "released helper {pid} is gone"
    );
    let (c, held_c) = take(&spec, WAIT).await.unwrap();
    assert_eq!(c, LockAnswer::Taken);
    held_c.unwrap().release().await;
}

#[tokio::test]
async fn killed_holder_frees_the_lock_and_reports_loss() {
    require_helper();
    let dir = TempDir::new("killed");
    let spec = LockSpec::parse(dir.0.join("lock").to_str().unwrap()).unwrap();
    let (a, held) = take(&spec, WAIT).await.unwrap();
    assert_eq!(a, LockAnswer::Taken);
    let mut held = held.unwrap();
    let pid = i32::try_from(held.pid().unwrap()).unwrap();
    // Kill the holder's helper by its pid (as if it crashed).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::timeout(WAIT, held.lost())
        .await
        .expect("loss reported when the helper dies");
    let (b, held_b) = take(&spec, WAIT).await.unwrap();
    assert_eq!(b, LockAnswer::Taken, "the lock is free again");
    held_b.unwrap().release().await;
}

#[tokio::test]
async fn helper_on_an_unusable_path_reports_error() {
    require_helper();
    let spec = LockSpec::parse("/nonexistent/clusterd/lock").unwrap();
    let (a, held) = take(&spec, WAIT).await.unwrap();
    assert_eq!(a, LockAnswer::Error);
    assert!(held.is_none());
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[tokio::test]
async fn custom_helpers_answers_and_timeouts() {
    let dir = TempDir::new("custom");
    let cases = [
        ("timeout.sh", "printf 2", LockAnswer::Timeout),
        ("error.sh", "printf 3", LockAnswer::Error),
        ("silent.sh", "exit 0", LockAnswer::Error),
        (
            "contended.sh",
            "printf 1; exec sleep 5",
            LockAnswer::Contended,
        ),
    ];
    for (name, body, want) in cases {
        let p = script(&dir.0, name, body);
        let spec = LockSpec::parse(&format!("!{} arg1", p.display())).unwrap();
        let (a, held) = take(&spec, WAIT).await.unwrap();
        assert_eq!(a, want, "{name}");
        assert!(held.is_none());
    }
    // A helper that never answers: our own timeout counts as '2'.
    let p = script(&dir.0, "hang.sh", "exec sleep 30");
    let spec = LockSpec::parse(&format!("!{}", p.display())).unwrap();
    let (a, held) = take(&spec, Duration::from_millis(200)).await.unwrap();
    assert_eq!(a, LockAnswer::Timeout);
    assert!(held.is_none());
    // Arguments reach the helper, split on blanks.
    let out = dir.0.join("args");
    let p = script(
        &dir.0,
        "args.sh",
        &format!("echo \"$@\" > {}; printf 0; exec sleep 30", out.display()),
    );
    let spec = LockSpec::parse(&format!("!{}  a  b", p.display())).unwrap();
    let (a, held) = take(&spec, WAIT).await.unwrap();
    assert_eq!(a, LockAnswer::Taken);
    held.unwrap().release().await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a b\n");
}

#[tokio::test]
async fn missing_helper_is_a_spawn_error() {
    let spec = LockSpec::parse("!/nonexistent/helper x").unwrap();
    let e = take(&spec, WAIT).await.unwrap_err();
    assert!(e.to_string().contains("/nonexistent/helper"), "{e}");
}

/// A helper's failure comes with its own words: how it ended and what it
/// wrote on stderr (clusterd logs both).
#[tokio::test]
async fn a_failing_helper_says_why() {
    let dir = TempDir::new("why");
    let p = script(
        &dir.0,
        "fails.sh",
        "echo 'cannot reach 192.0.2.9: refused' >&2; exit 7",
    );
    let spec = LockSpec::parse(&format!("!{}", p.display())).unwrap();
    let a = attempt(&spec, WAIT).await.unwrap();
    assert_eq!(a.answer, LockAnswer::Error);
    assert_eq!(
        a.detail,
        "exit status 7; stderr: cannot reach 192.0.2.9: refused"
    );
}

/// CTDB's Ceph RADOS helper, where Debian ships it, starts and fails with
/// a clear reason when no Ceph is reachable (here, or without librados:
/// the loader's message).
#[tokio::test]
async fn the_ceph_rados_helper_fails_with_a_clear_reason() {
    const CEPH: &str = "/usr/libexec/ctdb/ctdb_mutex_ceph_rados_helper";
    assert!(
        Path::new(CEPH).exists(),
        "needs {CEPH} (apt-get install ctdb; scripts/setup.sh does it)"
    );
    let dir = TempDir::new("ceph");
    // No ceph.conf anywhere near: an empty one of our own.
    let conf = dir.0.join("ceph.conf");
    std::fs::write(&conf, "").unwrap();
    let spec = LockSpec::parse(&format!("!{CEPH} ceph client.admin rbd ipfailover-lock")).unwrap();
    let spec = LockSpec {
        env: vec![("CEPH_CONF".into(), conf.into_os_string())],
        ..spec
    };
    let a = attempt(&spec, Duration::from_secs(15)).await.unwrap();
    assert_ne!(a.answer, LockAnswer::Taken);
    assert!(a.held.is_none());
    assert!(
        a.detail.contains("stderr: ") && a.detail.len() > 30,
        "no reason given: {:?} {}",
        a.answer,
        a.detail
    );
    println!("ceph helper: {:?}: {}", a.answer, a.detail);
}
