//! Runs every case of CTDB's own IP-allocation test suite
//! (`tests/data/ctdb-takeover-cases.json`, see its README) through the same
//! parser and allocator as `ipfailover ipalloc`, and compares with CTDB's
//! expected output: as sets of lines (must match) and in order (must match
//! too: CTDB's own test compares the text exactly).

use std::collections::BTreeSet;

use ipalloc::ctdb_input::{apply_runstates, parse_home_nodes, parse_known_ips, parse_node_states};
use ipalloc::{allocate, reference, Algorithm, AllocInput, Tunables};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ctdb-takeover-cases.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Vec<Value>>(&text).unwrap()
}

fn input_of(case: &Value) -> AllocInput {
    let states = case["node_states_raw"].as_str().unwrap();
    let mut nodes = parse_node_states(states).unwrap();
    if let Some(rs) = case["runstate"].as_array() {
        let s: Vec<String> = rs.iter().map(|v| v.as_u64().unwrap().to_string()).collect();
        apply_runstates(&mut nodes, &s.join(",")).unwrap();
    }
    let multi = case["multi"].as_bool().unwrap_or(false);
    let ips = parse_known_ips(case["stdin_raw"].as_str().unwrap(), nodes.len(), multi).unwrap();
    let mut tunables = Tunables {
        algorithm: case["algorithm"]
            .as_str()
            .unwrap()
            .parse::<Algorithm>()
            .unwrap(),
        ..Tunables::default()
    };
    if let Some(t) = case["tunables"].as_object() {
        for (k, v) in t {
            tunables
                .set(k, u32::try_from(v.as_u64().unwrap()).unwrap())
                .unwrap();
        }
    }
    let home_nodes = match case["home_nodes"].as_str() {
        Some(h) => parse_home_nodes(h, nodes.len()).unwrap(),
        None => Default::default(),
    };
    AllocInput {
        nodes,
        ips,
        tunables,
        force_rebalance: Vec::new(),
        home_nodes,
    }
}

fn expected_lines(case: &Value) -> Vec<String> {
    case["expected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["ip"].as_str().unwrap(),
                e["pnn"].as_i64().unwrap()
            )
        })
        .collect()
}

fn is_basic(case: &Value) -> bool {
    case["home_nodes"].is_null()
        && case["runstate"].is_null()
        && !case["multi"].as_bool().unwrap_or(false)
}

fn run(filter: impl Fn(&Value) -> bool) -> (usize, usize, Vec<String>) {
    let mut total = 0;
    let mut in_order = 0;
    let mut failures = Vec::new();
    for case in cases().iter().filter(|c| filter(c)) {
        total += 1;
        let name = case["name"].as_str().unwrap();
        let got: Vec<String> = allocate(&input_of(case))
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        let want = expected_lines(case);
        let got_set: BTreeSet<&String> = got.iter().collect();
        let want_set: BTreeSet<&String> = want.iter().collect();
        if got_set != want_set {
            failures.push(format!("{name}: got {got:?}\nwant {want:?}"));
        } else if got == want {
            in_order += 1;
        } else {
            failures.push(format!("{name}: same lines, different order"));
        }
    }
    (total, in_order, failures)
}

#[test]
fn ctdb_cases_without_home_nodes_runstate_or_multi() {
    let (total, in_order, failures) = run(is_basic);
    eprintln!("basic CTDB cases: {total}, matching in order: {in_order}");
    assert_eq!(total, 47, "the case file changed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(in_order, total);
}

#[test]
fn ctdb_cases_with_home_nodes_runstate_or_multi() {
    let (total, in_order, failures) = run(|c| !is_basic(c));
    eprintln!("extended CTDB cases: {total}, matching in order: {in_order}");
    assert_eq!(total, 6, "the case file changed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reference_agrees_on_small_ctdb_cases() {
    // The reference is slow: skip the 900-address scale cases.
    for case in cases() {
        if case["expected"].as_array().unwrap().len() > 100 {
            continue;
        }
        let input = input_of(&case);
        let want = expected_lines(&case);
        let got: Vec<String> = reference::allocate(&input)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, want, "reference on {}", case["name"]);
    }
}

/// The in-repo copy must stay identical to the shared reference, where that
/// exists (it lives outside the repository: ../shared from the main
/// checkout, ../../shared from a worktree).
#[test]
fn case_file_copy_matches_the_shared_reference() {
    let copy = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ctdb-takeover-cases.json"
    ))
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for up in ["../../shared", "../../../shared"] {
        let original = root.join(up).join("reference/ctdb-takeover-cases.json");
        if let Ok(bytes) = std::fs::read(&original) {
            assert!(
                bytes == copy,
                "{} differs from the copy",
                original.display()
            );
        }
    }
    assert!(copy.len() > 1000);
}
