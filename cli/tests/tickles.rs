//! `ipfailover gettickles/addtickle/deltickle` without a running cluster:
//! a clear error and a non-zero exit, never a hang; bad pairs are refused
//! before connecting. (The golden human and -X forms are unit tests in
//! cli/src/tickles.rs; tests/tests/conntrackd_cluster.rs runs the command
//! against real daemons.)

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ipfailover(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipfailover"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn missing_run_dir() -> String {
    std::env::temp_dir()
        .join(format!("ipfailover-no-such-run-dir-{}", std::process::id()))
        .display()
        .to_string()
}

#[test]
fn gettickles_without_transportd_fails_clearly() {
    let dir = missing_run_dir();
    let start = Instant::now();
    let out = ipfailover(
        &["--run-dir", &dir, "-t", "2", "gettickles", "192.0.2.50"],
        "",
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to transportd at") && err.contains("is ipfailover running"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn addtickle_refuses_bad_pairs_before_connecting() {
    let dir = missing_run_dir();
    let out = ipfailover(
        &[
            "--run-dir",
            &dir,
            "addtickle",
            "198.51.100.7",
            "192.0.2.50:445",
        ],
        "",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid address '198.51.100.7'"), "{err}");
    let out = ipfailover(
        &["--run-dir", &dir, "deltickle"],
        "198.51.100.7:1 192.0.2.50:445 extra\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn gettickles_rejects_a_bad_address() {
    let out = ipfailover(&["gettickles", "not-an-ip"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-ip"));
}
