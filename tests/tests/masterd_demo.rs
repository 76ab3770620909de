//! The demo runs end to end (3 nodes: with 2 and no cluster lock the
//! survivor has no majority and must not take over) and cleans up after
//! itself: exit 0, and none of its namespaces left.

use std::process::Command;

use tests::cluster::bin_path;
use tests::netns::require_root;

#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    require_root();
    let demo = bin_path("demo").unwrap();
    let child = Command::new(&demo)
        .args(["--nodes", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("cluster connected"), "{stderr}");
    assert!(stderr.contains("cleaning up"), "{stderr}");
    if bin_path("failoverd").is_ok() {
        // With failoverd built, the takeover must be shown, not skipped.
        assert!(stdout.contains("moved from node"), "{stdout}\n{stderr}");
    }
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    // The demo names its namespaces ipf-demo-*-<its pid>-*; none may remain.
    let mine = format!("-{pid}-");
    let left: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with("ipf-demo-") && l.contains(&mine))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}
