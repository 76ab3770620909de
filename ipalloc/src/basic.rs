//! Deterministic and non-deterministic allocation (CTDB
//! `ipalloc_deterministic.c`, `ipalloc_nondeterministic.c`, and the shared
//! `find_takeover_node` / `basic_allocate_unassigned`).
//!
//! Both count addresses per node; a node's load is its number of addresses.
//! Counts are kept incrementally instead of recounted for every query, which
//! changes nothing in the result.

use std::collections::HashMap;

use super::{Prepared, NONE};

/// Node counts of an owner vector.
fn counts(p: &Prepared, owner: &[u32]) -> Vec<usize> {
    let mut c = vec![0usize; p.nodes];
    for &o in owner {
        if o != NONE {
            c[o as usize] += 1;
        }
    }
    c
}

/// CTDB `find_takeover_node`: among the nodes that can take `ip` over, the
/// one with the fewest addresses now; ties to the lowest PNN. Moves `ip`
/// there (keeping `count` in step) and returns false if there is none.
fn find_takeover_node(p: &Prepared, owner: &mut [u32], count: &mut [usize], ip: usize) -> bool {
    let mut best: Option<usize> = None;
    for n in 0..p.nodes {
        if !p.can_takeover(ip, n) {
            continue;
        }
        if best.is_none_or(|b| count[n] < count[b]) {
            best = Some(n);
        }
    }
    let Some(n) = best else {
        return false;
    };
    if owner[ip] != NONE {
        count[owner[ip] as usize] -= 1;
    }
    owner[ip] = u32::try_from(n).expect("node index came from a u32 PNN");
    count[n] += 1;
    true
}

/// CTDB `basic_allocate_unassigned`: each unassigned address in list order
/// goes to the least-loaded node that can take it.
fn allocate_unassigned(p: &Prepared, owner: &mut [u32], count: &mut [usize]) {
    for ip in 0..owner.len() {
        if owner[ip] == NONE {
            find_takeover_node(p, owner, count, ip);
        }
    }
}

/// Deterministic: address `i` goes to its home node or to `i % nodes`, then
/// unsuitable assignments are dropped and refilled least-loaded-first. The
/// current owner is ignored; NoIPFailback is ignored.
pub(crate) fn deterministic(p: &Prepared) -> Vec<u32> {
    let n = p.addrs.len();
    if p.nodes == 0 {
        return vec![NONE; n];
    }
    let mut owner: Vec<u32> = (0..n)
        .map(|i| {
            if p.home[i] != NONE {
                p.home[i]
            } else {
                u32::try_from(i % p.nodes).expect("node index came from a u32 PNN")
            }
        })
        .collect();
    p.unassign_unsuitable(&mut owner);
    let mut count = counts(p, &owner);
    allocate_unassigned(p, &mut owner, &mut count);
    owner
}

/// Non-deterministic: keep suitable owners, give each unassigned address to
/// the least-loaded node, then (unless NoIPFailback) CTDB's `basic_failback`:
/// scanning addresses in list order, if among the nodes that can take an
/// address over the most loaded has more than one address more than the
/// least loaded, re-home the *first address in list order held by that most
/// loaded node* and rescan; at most `addresses + 5` re-homings.
pub(crate) fn nondeterministic(p: &Prepared) -> Vec<u32> {
    let mut owner = p.owner.clone();
    p.unassign_unsuitable(&mut owner);
    let mut count = counts(p, &owner);
    allocate_unassigned(p, &mut owner, &mut count);
    if p.tunables.no_ip_failback {
        return owner;
    }
    // Addresses with the same availability row have the same max/min nodes
    // within one scan (counts only change on a move, which restarts the
    // scan), so compute them once per row class and scan.
    let mut class_of = Vec::with_capacity(owner.len());
    let mut classes: HashMap<&[bool], usize> = HashMap::new();
    for ip in 0..owner.len() {
        let row = &p.avail[ip * p.nodes..(ip + 1) * p.nodes];
        let next = classes.len();
        class_of.push(*classes.entry(row).or_insert(next));
    }
    let num_classes = classes.len();
    let limit = owner.len() + 5;
    let mut retries = 0usize;
    'scan: loop {
        // Per class: (maxnode, maxnum, minnum) among takeover-capable nodes.
        let mut cache: Vec<Option<Option<(usize, usize, usize)>>> = vec![None; num_classes];
        for ip in 0..owner.len() {
            if owner[ip] == NONE {
                continue;
            }
            let spread = *cache[class_of[ip]].get_or_insert_with(|| {
                let mut max: Option<(usize, usize)> = None;
                let mut min: Option<usize> = None;
                for (n, &c) in count.iter().enumerate() {
                    if !p.can_takeover(ip, n) {
                        continue;
                    }
                    if max.is_none_or(|(_, m)| c > m) {
                        max = Some((n, c));
                    }
                    if min.is_none_or(|m| c < m) {
                        min = Some(c);
                    }
                }
                max.zip(min)
                    .map(|((maxnode, maxnum), minnum)| (maxnode, maxnum, minnum))
            });
            let Some((maxnode, maxnum, minnum)) = spread else {
                continue;
            };
            if maxnum > minnum + 1 && retries < limit {
                let maxpnn = u32::try_from(maxnode).expect("node index came from a u32 PNN");
                if let Some(first) = owner.iter().position(|&o| o == maxpnn) {
                    find_takeover_node(p, &mut owner, &mut count, first);
                    retries += 1;
                    continue 'scan;
                }
            }
        }
        break;
    }
    owner
}
