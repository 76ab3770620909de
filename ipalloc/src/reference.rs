//! The reference allocation: a plain transcription of CTDB's definitions
//! (notes section a), recomputing every count and distance sum from scratch
//! each time, as CTDB does. It is slow on purpose (LCP2 is O(U²·N·I)) and
//! exists as the oracle that [`super::allocate`] is compared with in property
//! tests, and as the baseline of `bench alloc`. Do not use it in the daemon.

use super::{ip_distance, Algorithm, AllocError, AllocInput, Assignment, Prepared, NONE};

/// Same contract as [`super::allocate`], computed the slow, obvious way.
///
/// # Errors
///
/// As [`super::allocate`].
pub fn allocate(input: &AllocInput) -> Result<Vec<Assignment>, AllocError> {
    let p = Prepared::new(input)?;
    let owner = match p.tunables.algorithm {
        Algorithm::Lcp2 => lcp2(&p),
        Algorithm::Deterministic => deterministic(&p),
        Algorithm::NonDeterministic => nondeterministic(&p),
    };
    Ok(p.finish(&owner))
}

fn pnn(n: usize) -> u32 {
    u32::try_from(n).expect("node index came from a u32 PNN")
}

/// Number of addresses on `node`, counted now.
fn coverage(owner: &[u32], node: usize) -> usize {
    owner.iter().filter(|&&o| o == pnn(node)).count()
}

fn find_takeover_node(p: &Prepared, owner: &mut [u32], ip: usize) -> bool {
    let mut best: Option<(usize, usize)> = None;
    for n in 0..p.nodes {
        if !p.can_takeover(ip, n) {
            continue;
        }
        let num = coverage(owner, n);
        match best {
            None => best = Some((n, num)),
            Some((_, min)) if num < min => best = Some((n, num)),
            _ => {}
        }
    }
    match best {
        Some((n, _)) => {
            owner[ip] = pnn(n);
            true
        }
        None => false,
    }
}

fn basic_allocate_unassigned(p: &Prepared, owner: &mut [u32]) {
    for ip in 0..owner.len() {
        if owner[ip] == NONE {
            find_takeover_node(p, owner, ip);
        }
    }
}

fn deterministic(p: &Prepared) -> Vec<u32> {
    if p.nodes == 0 {
        return vec![NONE; p.addrs.len()];
    }
    let mut owner: Vec<u32> = (0..p.addrs.len())
        .map(|i| {
            if p.home[i] != NONE {
                p.home[i]
            } else {
                pnn(i % p.nodes)
            }
        })
        .collect();
    p.unassign_unsuitable(&mut owner);
    basic_allocate_unassigned(p, &mut owner);
    owner
}

fn nondeterministic(p: &Prepared) -> Vec<u32> {
    let mut owner = p.owner.clone();
    p.unassign_unsuitable(&mut owner);
    basic_allocate_unassigned(p, &mut owner);
    if p.tunables.no_ip_failback {
        return owner;
    }
    let num_ips = owner.len();
    let mut retries = 0;
    'again: loop {
        for ip in 0..num_ips {
            if owner[ip] == NONE {
                continue;
            }
            let mut max: Option<(usize, usize)> = None;
            let mut min: Option<(usize, usize)> = None;
            for n in 0..p.nodes {
                if !p.can_takeover(ip, n) {
                    continue;
                }
                let num = coverage(&owner, n);
                if max.is_none_or(|(_, m)| num > m) {
                    max = Some((n, num));
                }
                if min.is_none_or(|(_, m)| num < m) {
                    min = Some((n, num));
                }
            }
            let (Some((maxnode, maxnum)), Some((_, minnum))) = (max, min) else {
                continue;
            };
            if maxnum > minnum + 1 && retries < num_ips + 5 {
                for tt in 0..num_ips {
                    if owner[tt] == pnn(maxnode) {
                        find_takeover_node(p, &mut owner, tt);
                        retries += 1;
                        continue 'again;
                    }
                }
            }
        }
        return owner;
    }
}

/// Σ d(ip, x)² over the addresses x ≠ ip among `among` that are on `node`.
fn dsum(p: &Prepared, owner: &[u32], ip: usize, among: std::ops::Range<usize>, node: u32) -> u32 {
    let mut sum = 0u32;
    for x in among {
        if owner[x] != node || x == ip {
            continue;
        }
        let d = ip_distance(&p.keys[ip], &p.keys[x]);
        sum = sum.wrapping_add(d.wrapping_mul(d));
    }
    sum
}

fn imbalance(p: &Prepared, owner: &[u32], node: u32) -> u32 {
    let mut s = 0u32;
    for i in 0..owner.len() {
        if owner[i] == node {
            s = s.wrapping_add(dsum(p, owner, i, i + 1..owner.len(), node));
        }
    }
    s
}

fn lcp2(p: &Prepared) -> Vec<u32> {
    let all = 0..p.addrs.len();
    let mut owner = p.owner.clone();
    p.unassign_unsuitable(&mut owner);
    let mut imb: Vec<u32> = (0..p.nodes).map(|n| imbalance(p, &owner, pnn(n))).collect();
    let mut candidate = vec![true; p.nodes];
    for &o in &owner {
        if o != NONE {
            candidate[o as usize] = false;
        }
    }
    for &n in &p.force_rebalance {
        candidate[n] = true;
    }

    // Allocate unassigned addresses: the (address, node) pair of least dsum,
    // first found in (list order, PNN order) on ties.
    loop {
        let mut best: Option<(usize, usize, u32)> = None;
        for ip in all.clone() {
            if owner[ip] != NONE {
                continue;
            }
            for n in 0..p.nodes {
                if !p.can_takeover(ip, n) {
                    continue;
                }
                let d = dsum(p, &owner, ip, all.clone(), pnn(n));
                if best.is_none_or(|(_, _, m)| d < m) {
                    best = Some((ip, n, d));
                }
            }
        }
        let Some((ip, n, d)) = best else { break };
        owner[ip] = pnn(n);
        imb[n] = imb[n].wrapping_add(d);
        if !owner.contains(&NONE) {
            break;
        }
    }

    if p.tunables.no_ip_failback || !candidate.iter().any(|&c| c) {
        return owner;
    }

    // Failback. CTDB loops until no move helps; the total imbalance falls
    // with every move, so this ends; the bound only guards wrap-around.
    for _ in 0..super::max_failback_moves(p) {
        let mut order: Vec<usize> = (0..p.nodes).collect();
        order.sort_by(|&a, &b| imb[b].cmp(&imb[a])); // stable
        let mut moved = false;
        for &src in &order {
            if imb[src] == 0 {
                break;
            }
            // (ip, dst, srcimbl, dstimbl)
            let mut best: Option<(usize, usize, u32, u32)> = None;
            for ip in all.clone() {
                if owner[ip] != pnn(src) {
                    continue;
                }
                let srcdsum = dsum(p, &owner, ip, all.clone(), pnn(src));
                let srcimbl = imb[src].wrapping_sub(srcdsum);
                for dst in 0..p.nodes {
                    if !candidate[dst] || !p.can_takeover(ip, dst) {
                        continue;
                    }
                    let dstdsum = dsum(p, &owner, ip, all.clone(), pnn(dst));
                    let dstimbl = imb[dst].wrapping_add(dstdsum);
                    if dstimbl < imb[src]
                        && dstdsum < srcdsum
                        && best.is_none_or(|(_, _, bs, bd)| {
                            srcimbl.wrapping_add(dstimbl) < bs.wrapping_add(bd)
                        })
                    {
                        best = Some((ip, dst, srcimbl, dstimbl));
                    }
                }
            }
            if let Some((ip, dst, srcimbl, dstimbl)) = best {
                imb[src] = srcimbl;
                imb[dst] = dstimbl;
                owner[ip] = pnn(dst);
                moved = true;
                break;
            }
        }
        if !moved {
            break;
        }
    }
    owner
}
