//! The planner input parser: CTDB's rules and the errors where CTDB would
//! silently skip or misread a line.

use std::net::IpAddr;

use ipalloc::ctdb_input::{
    apply_runstates, parse_c_number, parse_home_nodes, parse_known_ips, parse_node_states,
    InputError,
};
use ipalloc::{KnownOn, RunState};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn node_states_are_c_numbers() {
    let n = parse_node_states("0,0x20,2,010").unwrap();
    let flags: Vec<u32> = n.iter().map(|s| s.flags.0).collect();
    assert_eq!(flags, vec![0, 0x20, 2, 8]);
    assert!(n.iter().all(|s| s.runstate == RunState::Running));
    assert_eq!(parse_c_number("0X1f"), Some(31));
    assert_eq!(parse_c_number("09"), None);
    assert!(matches!(
        parse_node_states("0,x"),
        Err(InputError::BadNodeState(_))
    ));
    assert!(matches!(
        parse_node_states("0,,0"),
        Err(InputError::BadNodeState(_))
    ));
}

#[test]
fn runstates_by_number_or_name() {
    let mut n = parse_node_states("0,0,0").unwrap();
    apply_runstates(&mut n, "5,startup,4").unwrap();
    assert_eq!(n[1].runstate, RunState::Startup);
    assert_eq!(n[2].runstate, RunState::Startup);
    assert!(!n[1].can_host());
    assert!(matches!(
        apply_runstates(&mut n, "5,5"),
        Err(InputError::RunStateCount { got: 2, nodes: 3 })
    ));
    assert!(matches!(
        apply_runstates(&mut n, "5,5,busy"),
        Err(InputError::BadRunState(_))
    ));
}

#[test]
fn columns_comments_and_defaults() {
    let text = "192.0.2.1\n192.0.2.2\t1\n192.0.2.3 -1 0,2 # only on 0 and 2\n# a comment\n   \n2001:db8::1 2 2#x\n";
    let e = parse_known_ips(text, 3, false).unwrap();
    assert_eq!(e.len(), 4);
    assert_eq!(
        (e[0].addr, e[0].owner, &e[0].known_on),
        (ip("192.0.2.1"), None, &KnownOn::All)
    );
    assert_eq!(e[1].owner, Some(1));
    assert_eq!(e[2].known_on, KnownOn::Nodes([0, 2].into()));
    assert_eq!(e[2].owner, None);
    assert_eq!(e[3].known_on, KnownOn::Nodes([2].into()));
}

#[test]
fn reading_stops_at_the_first_empty_line_and_nothing_may_follow() {
    assert_eq!(
        parse_known_ips("192.0.2.1 0\n\n", 1, false).unwrap().len(),
        1
    );
    assert_eq!(
        parse_known_ips("192.0.2.1 0\n\n192.0.2.2 0\n", 1, false),
        Err(InputError::AfterEnd { line: 3, blank: 2 })
    );
}

#[test]
fn bad_lines_name_their_number() {
    let e = |t: &str| parse_known_ips(t, 2, false).unwrap_err();
    assert!(matches!(
        e("192.0.2.1 0\nnope 1\n"),
        InputError::BadAddress { line: 2, .. }
    ));
    assert!(matches!(
        e("192.0.2.1 zero\n"),
        InputError::BadPnn { line: 1, .. }
    ));
    assert!(matches!(
        e("192.0.2.1 2\n"),
        InputError::NoSuchNode {
            line: 1,
            pnn: 2,
            ..
        }
    ));
    assert!(matches!(
        e("192.0.2.1 -2\n"),
        InputError::NoSuchNode {
            line: 1,
            pnn: -2,
            ..
        }
    ));
    assert!(matches!(
        e("192.0.2.1 0 0,5\n"),
        InputError::NoSuchNode {
            line: 1,
            pnn: 5,
            ..
        }
    ));
    assert!(matches!(
        e("192.0.2.1 0 ,\n"),
        InputError::EmptyAllowed { line: 1 }
    ));
    assert!(matches!(
        e("192.0.2.1 0 0 extra\n"),
        InputError::ExtraToken { line: 1, .. }
    ));
    assert!(matches!(
        e("192.0.2.1 0\n192.0.2.1 1\n"),
        InputError::Duplicate {
            line: 2,
            first: 1,
            ..
        }
    ));
    let msg = e("192.0.2.1 0\nnope 1\n").to_string();
    assert_eq!(msg, "line 2: bad address 'nope'");
}

#[test]
fn multi_blocks_are_per_node_views_and_the_last_self_claim_wins() {
    // Node 0 says .1 is on 0; node 1 says .1 is on 1 and knows .2 (claimed
    // by node 0, which does not know it: ignored).
    let text = "192.0.2.1 0\n\n192.0.2.1 1\n192.0.2.2 0\n";
    let e = parse_known_ips(text, 2, true).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].addr, e[0].owner), (ip("192.0.2.1"), Some(1)));
    assert_eq!(e[0].known_on, KnownOn::Nodes([0, 1].into()));
    assert_eq!((e[1].addr, e[1].owner), (ip("192.0.2.2"), None));
    assert_eq!(e[1].known_on, KnownOn::Nodes([1].into()));
    assert!(matches!(
        parse_known_ips("192.0.2.1 0 0,1\n", 2, true),
        Err(InputError::ExtraToken { line: 1, .. })
    ));
    assert!(matches!(
        parse_known_ips("192.0.2.1 0\n\n192.0.2.1 1\n\n192.0.2.3 1\n", 2, true),
        Err(InputError::TooManyBlocks { line: 5, .. })
    ));
}

#[test]
fn home_nodes_lines() {
    let h = parse_home_nodes("# homes\n192.0.2.1 2\n\n192.0.2.2 0\n", 3).unwrap();
    assert_eq!(h.get(&ip("192.0.2.1")), Some(&2));
    assert_eq!(h.len(), 2);
    assert!(parse_home_nodes("192.0.2.1 3\n", 3).is_err());
    assert!(parse_home_nodes("192.0.2.1\n", 3).is_err());
}
