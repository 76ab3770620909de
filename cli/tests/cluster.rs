//! End-to-end: the built `ipfailover` cluster commands that need no daemon
//! (`listnodes`), and the clear failure of the others when none runs.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn ipfailover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipfailover"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ipf-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn listnodes_reads_the_nodes_file_like_ctdb() {
    let d = scratch("listnodes");
    std::fs::write(
        d.join("nodes"),
        "192.168.20.41\n#192.168.20.42\n\n192.168.20.43\n",
    )
    .unwrap();
    let dir = d.to_str().unwrap();
    let out = ipfailover(&["listnodes", "--config-dir", dir]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "192.168.20.41\n192.168.20.43\n"
    );
    let out = ipfailover(&["-X", "listnodes", "--config-dir", dir]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "|0|192.168.20.41|\n|2|192.168.20.43|\n"
    );
    let missing = d.join("nope");
    let out = ipfailover(&["listnodes", "--config-dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Failed to read nodes from"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn commands_fail_clearly_without_a_daemon() {
    let d = scratch("nodaemon");
    let run = d.to_str().unwrap();
    for cmd in [
        &["status"][..],
        &["nodestatus", "all"],
        &["pnn"],
        &["leader"],
        &["disable"],
        &["ban", "10"],
    ] {
        let start = Instant::now();
        let mut args = vec!["--run-dir", run, "-t", "3"];
        args.extend_from_slice(cmd);
        let out = ipfailover(&args);
        assert!(!out.status.success(), "{cmd:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot connect to transportd"),
            "{cmd:?}: {err}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "{cmd:?} hung");
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn ban_zero_is_refused() {
    let out = ipfailover(&["--run-dir", "/nonexistent", "ban", "0"]);
    // ctdb's message and status (EINVAL), before any daemon is asked.
    assert_eq!(out.status.code(), Some(22));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Ban time cannot be zero\n"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    // Output to a pipe whose reader is already closed: the write fails with
    // EPIPE, which must not be a panic. The nodes file holds at most 256
    // nodes (less than a pipe buffer), so the reader is closed before the
    // command starts: `sh` waits 200 ms, then execs it with the same stdout.
    let d = scratch("pipe");
    let nodes: String = (1..=256).map(|i| format!("2001:db8::{i:x}\n")).collect();
    std::fs::write(d.join("nodes"), nodes).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("sleep 0.2; exec \"$0\" listnodes --config-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_ipfailover"))
        .arg(&d)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
