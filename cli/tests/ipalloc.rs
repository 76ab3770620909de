//! End-to-end: the built `ipfailover ipalloc` on CTDB cases (from
//! samba's ctdb/tests/UNIT/takeover, see ipalloc/tests/data/README.md),
//! and its exit status on bad input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ipalloc(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipfailover"))
        .arg("ipalloc")
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

/// CTDB lcp2.032 step 2: 4 nodes, all healthy -> node 0 stopped.
#[test]
fn lcp2_stop_node_0_matches_ctdb() {
    let stdin = "130.216.30.181 2\n130.216.30.180 3\n130.216.30.179 2\n130.216.30.178 1\n\
130.216.30.177 3\n130.216.30.176 0\n130.216.30.175 1\n130.216.30.174 0\n130.216.30.173 3\n\
130.216.30.172 2\n130.216.30.171 1\n130.216.30.170 0\n10.19.99.253 1\n10.19.99.252 3\n\
10.19.99.251 2\n10.19.99.250 0\n";
    let want = "130.216.30.181 2\n130.216.30.180 3\n130.216.30.179 2\n130.216.30.178 1\n\
130.216.30.177 3\n130.216.30.176 1\n130.216.30.175 1\n130.216.30.174 3\n130.216.30.173 3\n\
130.216.30.172 2\n130.216.30.171 1\n130.216.30.170 2\n10.19.99.253 1\n10.19.99.252 3\n\
10.19.99.251 2\n10.19.99.250 1\n";
    let out = ipalloc(&["--node-states", "0x20,0,0,0"], stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

/// CTDB nondet.002: 3 nodes, node 1 unhealthy.
#[test]
fn nondet_one_unhealthy_matches_ctdb() {
    let stdin = "192.168.20.249 0\n192.168.20.250 1\n192.168.20.251 2\n192.168.20.252 0\n\
192.168.20.253 1\n192.168.20.254 2\n192.168.21.252 0\n192.168.21.253 1\n192.168.21.254 2\n";
    let want = "192.168.21.254 2\n192.168.21.253 0\n192.168.21.252 0\n192.168.20.254 2\n\
192.168.20.253 2\n192.168.20.252 0\n192.168.20.251 2\n192.168.20.250 0\n192.168.20.249 0\n";
    let out = ipalloc(&["--algorithm", "nondet", "--node-states", "0,2,0"], stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

#[test]
fn no_ip_takeover_tunable_is_applied() {
    let out = ipalloc(
        &["--node-states", "0,0", "--tunable", "NoIPTakeover=1"],
        "192.0.2.1 0\n192.0.2.2 -1\n",
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "192.0.2.2 -1\n192.0.2.1 0\n"
    );
}

#[test]
fn bad_address_fails_naming_the_line() {
    let out = ipalloc(&["--node-states", "0,0"], "192.0.2.1 0\n192.0.2.x 1\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 2: bad address '192.0.2.x'"), "{err}");
}

#[test]
fn pnn_out_of_range_fails() {
    let out = ipalloc(&["--node-states", "0,0"], "192.0.2.1 5\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 1: current PNN 5 is not a node"), "{err}");
}

#[test]
fn unknown_tunable_and_algorithm_fail() {
    let out = ipalloc(&["--node-states", "0", "--tunable", "NoSuch=1"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("unknown tunable 'NoSuch'"));
    let out = ipalloc(&["--node-states", "0", "--algorithm", "best"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("unknown allocation algorithm"));
}
