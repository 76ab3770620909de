//! LCP2 (CTDB `ipalloc_lcp2.c`), computed incrementally.
//!
//! CTDB recomputes every distance sum `dsum(ip, node)` from scratch whenever
//! it needs one, which makes placing U unassigned addresses O(U²·N·I). This
//! version makes the same choices in the same order, with the same uint32
//! wrap-around, by keeping state up to date instead:
//!
//! * `ds[node][row]` holds `dsum(ip_of(row), node)` for every tracked address:
//!   the unassigned ones, plus all of them when a failback phase will follow.
//!   When an address lands on or leaves a node, that node's column changes by
//!   the squared distances to it. Rows are in list order, so rows at equal
//!   distance come in a few contiguous "rings" per group of rows sharing their
//!   top 96 bits (see [`Rows`]): a column update is a few binary searches and
//!   vectorised slice adds. Wrapping adds and subtracts keep every value equal
//!   to CTDB's modulo 2³².
//! * For the "cheapest unassigned (address, node) pair" search, each node has
//!   a min segment tree over the unassigned positions keyed by
//!   `(dsum << 32) | position`, so its root is that node's cheapest address,
//!   first in list order on ties; a tournament over `(root, pnn)` gives the
//!   global choice, which is exactly CTDB's strict-`<` scan order (address
//!   first, then PNN). Placing an address applies the same rings to the
//!   placing node's tree as lazy range adds (O(rings·log U)) and clears the
//!   leaf there; other trees drop their stale leaf when it surfaces. With more
//!   than 2¹⁸ addresses a dsum could wrap, which a range add cannot
//!   reproduce, so the tree is rebuilt from the column instead (O(U)).
//! * Failback reads dsums from the table: finding a move costs O(I_src·N)
//!   lookups instead of O(I_src·N·I) distance computations, applying it two
//!   column updates.

use super::{Prepared, NONE};

/// d(x, x)² — what a column pass adds for an address against itself, which
/// CTDB's dsum excludes.
const SELF_SQ: u32 = 128 * 128;

/// Keys of the tracked rows (in list order), split into groups of rows with
/// the same first three key words. List order sorts by those words first, so
/// each group is one contiguous run of rows, sorted by descending low word.
///
/// For an address `y`, CTDB's distance to a row of group `g` is
/// `c(g, y) + lz(low ^ y.low)`, where `c(g, y)` (the leading zeros of the
/// first three words xor-ed) is the same for the whole group. The rows of a
/// group sharing at least `m` leading low-word bits with `y` form one
/// contiguous range, nested in the range for `m - 1`, so a group splits into
/// at most 33 pairs of "rings" of equal distance. A column pass is then a
/// few binary searches and constant slice adds per group, instead of a
/// distance computation per row.
struct Rows {
    low: Vec<u32>,
    groups: Vec<(usize, usize, [u32; 3])>,
}

impl Rows {
    fn new(keys: impl Iterator<Item = [u32; 4]>) -> Self {
        let mut low = Vec::new();
        let mut groups: Vec<(usize, usize, [u32; 3])> = Vec::new();
        for (r, k) in keys.enumerate() {
            low.push(k[3]);
            let top = [k[0], k[1], k[2]];
            match groups.last_mut() {
                Some(g) if g.2 == top => g.1 = r + 1,
                _ => groups.push((r, r + 1, top)),
            }
        }
        Rows { low, groups }
    }

    fn len(&self) -> usize {
        self.low.len()
    }

    /// Calls `f(lo, hi, d²)` for rings of rows `lo..hi` at distance `d` from
    /// `y`; every row is in exactly one ring.
    fn rings(&self, y: &[u32; 4], mut f: impl FnMut(usize, usize, u32)) {
        for &(start, end, top) in &self.groups {
            let base = (top[0] ^ y[0]).leading_zeros()
                + (top[1] ^ y[1]).leading_zeros()
                + (top[2] ^ y[2]).leading_zeros();
            low_rings(&self.low[start..end], y[3], base, |lo, hi, sq| {
                f(start + lo, start + hi, sq);
            });
        }
    }

    /// `col[r] ±= d(row r, y)²` for every row, wrapping.
    fn apply(&self, col: &mut [u32], y: &[u32; 4], add: bool) {
        self.rings(y, |lo, hi, sq| add_const(&mut col[lo..hi], sq, add));
    }
}

/// Adds (or subtracts) `v` to a slice, wrapping; a loop the compiler
/// vectorises.
fn add_const(col: &mut [u32], v: u32, add: bool) {
    if add {
        col.iter_mut().for_each(|c| *c = c.wrapping_add(v));
    } else {
        col.iter_mut().for_each(|c| *c = c.wrapping_sub(v));
    }
}

/// The rings of one group: `keys` sorted descending, distance
/// `base + common prefix length of key and y`.
fn low_rings(keys: &[u32], y: u32, base: u32, mut f: impl FnMut(usize, usize, u32)) {
    let (mut lo, mut hi) = (0usize, keys.len());
    let mut m = 0u32;
    // m grows by at least one per round: at most 33 rounds.
    while m <= 32 {
        if lo == hi {
            return;
        }
        // Every key in lo..hi shares as many leading bits with y as both
        // ends of the (sorted) range do: skip the rings that are empty.
        m = m.max(
            (keys[lo] ^ y)
                .leading_zeros()
                .min((keys[hi - 1] ^ y).leading_zeros()),
        );
        let d = base + m;
        if m == 32 {
            f(lo, hi, d * d);
            return;
        }
        // Keys sharing m + 1 leading bits: [y & mask, y | !mask].
        let mask = !0u32 << (31 - m);
        let (top, bottom) = (y | !mask, y & mask);
        let inner = &keys[lo..hi];
        let nlo = lo + inner.partition_point(|&k| k > top);
        let nhi = lo + inner.partition_point(|&k| k >= bottom);
        if lo < nlo {
            f(lo, nlo, d * d);
        }
        if nhi < hi {
            f(nhi, hi, d * d);
        }
        (lo, hi) = (nlo, nhi);
        m += 1;
    }
}

/// Min segment trees, one per node, over positions `0..size`.
struct Trees {
    size: usize,
    t: Vec<u64>,
    /// A tournament tree over `(root, node)` of every node's tree, so the
    /// least root over all nodes is `top[1]`, kept current in O(log N) per
    /// change instead of a scan of N roots (each in its own cache line).
    nsize: usize,
    top: Vec<(u64, usize)>,
}

impl Trees {
    fn new(nodes: usize, positions: usize) -> Self {
        let size = positions.next_power_of_two().max(1);
        Trees {
            size,
            t: vec![u64::MAX; nodes * 2 * size],
            nsize: nodes.next_power_of_two().max(1),
            top: (0..2 * nodes.next_power_of_two().max(1))
                .map(|i| (u64::MAX, i))
                .collect(),
        }
    }

    fn tree(&mut self, node: usize) -> &mut [u64] {
        let s = 2 * self.size;
        &mut self.t[node * s..(node + 1) * s]
    }

    /// The least `(root, node)`: the cheapest pair, first in (address, PNN)
    /// order on ties.
    fn best(&self) -> (u64, usize) {
        self.top[1]
    }

    fn sync_root(&mut self, node: usize) {
        let mut i = self.nsize + node;
        self.top[i] = (self.t[node * 2 * self.size + 1], node);
        while i > 1 {
            i /= 2;
            self.top[i] = self.top[2 * i].min(self.top[2 * i + 1]);
        }
    }

    /// Rebuilds one node's tree from its leaves `leaf(pos)`.
    fn rebuild(&mut self, node: usize, positions: usize, leaf: impl Fn(usize) -> u64) {
        let size = self.size;
        let t = self.tree(node);
        for pos in 0..size {
            t[size + pos] = if pos < positions { leaf(pos) } else { u64::MAX };
        }
        for i in (1..size).rev() {
            t[i] = t[2 * i].min(t[2 * i + 1]);
        }
        self.sync_root(node);
    }

    /// Adds a piecewise-constant amount to the present leaves of one node's
    /// tree, lazily, in one descent: `segs` are disjoint `(lo, hi, v)` ranges
    /// sorted by `lo`; `lazy` holds what an internal node's children still
    /// owe. Absent leaves stay absent (saturating add on `u64::MAX`); present
    /// ones never overflow because the caller bounds every dsum below 2³².
    fn add_segments(&mut self, lazy: &mut [u64], node: usize, segs: &[(usize, usize, u64)]) {
        let base = node * 2 * self.size;
        let t = &mut self.t[base..base + 2 * self.size];
        let lz = &mut lazy[base..base + 2 * self.size];
        segments_rec(t, lz, self.size, 1, 0, self.size, segs);
        self.sync_root(node);
    }

    /// Sets one leaf to "absent", first pushing pending adds down its path.
    fn clear_lazy(&mut self, lazy: &mut [u64], node: usize, pos: usize) {
        let size = self.size;
        let base = node * 2 * size;
        let t = &mut self.t[base..base + 2 * size];
        let lz = &mut lazy[base..base + 2 * size];
        let depth = size.trailing_zeros();
        for level in (1..=depth).rev() {
            push(t, lz, size, (size + pos) >> level);
        }
        let mut i = size + pos;
        t[i] = u64::MAX;
        while i > 1 {
            i /= 2;
            t[i] = t[2 * i].min(t[2 * i + 1]);
        }
        self.sync_root(node);
    }

    /// Sets one leaf to "absent".
    fn clear(&mut self, node: usize, pos: usize) {
        let size = self.size;
        let t = self.tree(node);
        let mut i = size + pos;
        t[i] = u64::MAX;
        while i > 1 {
            i /= 2;
            t[i] = t[2 * i].min(t[2 * i + 1]);
        }
        self.sync_root(node);
    }
}

/// Moves an internal node's pending add to its children.
fn push(t: &mut [u64], lazy: &mut [u64], size: usize, i: usize) {
    let v = lazy[i];
    if v == 0 {
        return;
    }
    for c in [2 * i, 2 * i + 1] {
        t[c] = t[c].saturating_add(v);
        if c < size {
            lazy[c] = lazy[c].wrapping_add(v);
        }
    }
    lazy[i] = 0;
}

/// See [`Trees::add_segments`]. `segs` are the segments overlapping `l..r`.
fn segments_rec(
    t: &mut [u64],
    lazy: &mut [u64],
    size: usize,
    i: usize,
    l: usize,
    r: usize,
    segs: &[(usize, usize, u64)],
) {
    let Some(&(lo, hi, v)) = segs.first() else {
        return;
    };
    if segs.len() == 1 && lo <= l && r <= hi {
        t[i] = t[i].saturating_add(v);
        if i < size {
            lazy[i] = lazy[i].wrapping_add(v);
        }
        return;
    }
    if i >= size {
        // A leaf overlaps exactly one segment, which covers it: handled above.
        return;
    }
    push(t, lazy, size, i);
    let mid = (l + r) / 2;
    let left = &segs[..segs.partition_point(|s| s.0 < mid)];
    let right = &segs[segs.partition_point(|s| s.1 <= mid)..];
    segments_rec(t, lazy, size, 2 * i, l, mid, left);
    segments_rec(t, lazy, size, 2 * i + 1, mid, r, right);
    t[i] = t[2 * i].min(t[2 * i + 1]);
}

fn pnn(n: usize) -> u32 {
    u32::try_from(n).expect("node index came from a u32 PNN")
}

/// Runs LCP2 and returns the owner of every address (NONE for none).
pub(crate) fn run(p: &Prepared) -> Vec<u32> {
    let num_ips = p.addrs.len();
    let nodes = p.nodes;
    let mut owner = p.owner.clone();
    p.unassign_unsuitable(&mut owner);

    // Initial imbalance: sum over pairs on each node.
    let mut on_node: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    for (ip, &o) in owner.iter().enumerate() {
        if o != NONE {
            on_node[o as usize].push(ip);
        }
    }
    let mut imb: Vec<u32> = on_node
        .iter()
        .map(|ips| {
            let mut s = 0u32;
            for (i, &a) in ips.iter().enumerate() {
                for &b in &ips[i + 1..] {
                    let d = super::ip_distance(&p.keys[a], &p.keys[b]);
                    s = s.wrapping_add(d * d);
                }
            }
            s
        })
        .collect();
    let mut candidate: Vec<bool> = on_node.iter().map(Vec::is_empty).collect();
    for &n in &p.force_rebalance {
        candidate[n] = true;
    }
    drop(on_node);

    if p.tunables.no_ip_takeover {
        // No node can take any address over: nothing is placed or moved.
        return owner;
    }
    // CTDB runs the failback loop if any candidate exists; a candidate that
    // can take no address over receives nothing in it, so the loop would
    // move nothing: skip it (and its full distance table) then.
    let failback = !p.tunables.no_ip_failback
        && (0..nodes).any(|n| candidate[n] && (0..num_ips).any(|ip| p.can_takeover(ip, n)));

    let unassigned: Vec<usize> = (0..num_ips).filter(|&ip| owner[ip] == NONE).collect();
    if unassigned.is_empty() && !failback {
        return owner;
    }

    // Tracked rows: every address if a failback follows, else the unassigned.
    let (rows, row_of): (Rows, Vec<usize>) = if failback {
        (Rows::new(p.keys.iter().copied()), (0..num_ips).collect())
    } else {
        let mut row_of = vec![usize::MAX; num_ips];
        for (r, &ip) in unassigned.iter().enumerate() {
            row_of[ip] = r;
        }
        (Rows::new(unassigned.iter().map(|&ip| p.keys[ip])), row_of)
    };
    let nrows = rows.len();
    let mut ds = vec![0u32; nodes * nrows];
    for (ip, &o) in owner.iter().enumerate() {
        if o == NONE {
            continue;
        }
        let n = o as usize;
        rows.apply(&mut ds[n * nrows..(n + 1) * nrows], &p.keys[ip], true);
        if row_of[ip] != usize::MAX {
            let c = &mut ds[n * nrows + row_of[ip]];
            *c = c.wrapping_sub(SELF_SQ);
        }
    }

    allocate_unassigned(
        p,
        &mut owner,
        &mut imb,
        &unassigned,
        &rows,
        &row_of,
        &mut ds,
        failback,
    );

    if failback {
        lcp2_failback(p, &mut owner, &mut imb, &candidate, &rows, &mut ds);
    }
    owner
}

/// Places the unassigned addresses, cheapest (address, node) pair first.
#[allow(clippy::too_many_arguments)] // the shared LCP2 state, passed apart for borrowck
fn allocate_unassigned(
    p: &Prepared,
    owner: &mut [u32],
    imb: &mut [u32],
    unassigned: &[usize],
    rows: &Rows,
    row_of: &[usize],
    ds: &mut [u32],
    track_all: bool,
) {
    let nodes = p.nodes;
    let nrows = rows.len();
    let count = unassigned.len();
    if count == 0 || nodes == 0 {
        return;
    }
    let mut trees = Trees::new(nodes, count);
    // Node-major eligibility and the rows of the unassigned positions, so a
    // tree rebuild reads memory in order.
    let mut elig = vec![false; nodes * count];
    for (pos, &ip) in unassigned.iter().enumerate() {
        for n in 0..nodes {
            elig[n * count + pos] = p.can_takeover(ip, n);
        }
    }
    let rows_at: Vec<usize> = unassigned.iter().map(|&ip| row_of[ip]).collect();
    let mut placed = vec![false; count];
    let leaf = |ds: &[u32], placed: &[bool], n: usize, pos: usize| -> u64 {
        if placed[pos] || !elig[n * count + pos] {
            return u64::MAX;
        }
        (u64::from(ds[n * nrows + rows_at[pos]]) << 32) | pos as u64
    };
    for n in 0..nodes {
        trees.rebuild(n, count, |pos| leaf(ds, &placed, n, pos));
    }
    // No possible uint32 wrap (every dsum < 2³² when there are at most 2¹⁸
    // addresses): update the placing node's tree by ring range adds instead
    // of rebuilding it.
    let lazy_path = p.addrs.len() <= 1 << 18 && !p.lcp2_rebuild_only;
    let mut lazy = if lazy_path {
        vec![0u64; trees.t.len()]
    } else {
        Vec::new()
    };
    let pos_rows = Rows::new(unassigned.iter().map(|&ip| p.keys[ip]));
    let mut segs: Vec<(usize, usize, u64)> = Vec::new();
    let mut steps = 0;
    while steps < count {
        let (best, n) = trees.best();
        if lazy_path && best != u64::MAX {
            // The low half is a position below `count`.
            #[allow(clippy::cast_possible_truncation)]
            let pos = (best & 0xffff_ffff) as usize;
            if placed[pos] {
                trees.clear_lazy(&mut lazy, n, pos);
                continue;
            }
        }
        steps += 1;
        if best == u64::MAX {
            return; // Leftovers: no node can take them.
        }
        // The low half is a position below `count`, a usize.
        #[allow(clippy::cast_possible_truncation)]
        let pos = (best & 0xffff_ffff) as usize;
        // The high half is the dsum, a u32.
        #[allow(clippy::cast_possible_truncation)]
        let dsum = (best >> 32) as u32;
        let ip = unassigned[pos];
        owner[ip] = pnn(n);
        placed[pos] = true;
        imb[n] = imb[n].wrapping_add(dsum);
        if lazy_path {
            // Other trees keep a stale leaf for `pos`; it is cleared when it
            // surfaces as a root (below), which is rarer than clearing it in
            // every tree now.
            trees.clear_lazy(&mut lazy, n, pos);
            segs.clear();
            pos_rows.rings(&p.keys[ip], |lo, hi, sq| {
                segs.push((lo, hi, u64::from(sq) << 32));
            });
            segs.sort_unstable_by_key(|s| s.0);
            trees.add_segments(&mut lazy, n, &segs);
            if track_all {
                // The failback phase needs every row's dsum.
                rows.apply(&mut ds[n * nrows..(n + 1) * nrows], &p.keys[ip], true);
                let c = &mut ds[n * nrows + row_of[ip]];
                *c = c.wrapping_sub(SELF_SQ);
            }
            continue;
        }
        for m in 0..nodes {
            trees.clear(m, pos);
        }
        rows.apply(&mut ds[n * nrows..(n + 1) * nrows], &p.keys[ip], true);
        let c = &mut ds[n * nrows + row_of[ip]];
        *c = c.wrapping_sub(SELF_SQ);
        trees.rebuild(n, count, |pos| leaf(ds, &placed, n, pos));
    }
}

/// CTDB `lcp2_failback`: repeatedly take the nodes by imbalance (descending,
/// stable), and move the best address off the first one that has a move that
/// lowers both its cost and the destination's below the source's imbalance.
/// Only rebalance candidates receive addresses. Rows are all addresses.
fn lcp2_failback(
    p: &Prepared,
    owner: &mut [u32],
    imb: &mut [u32],
    candidate: &[bool],
    rows: &Rows,
    ds: &mut [u32],
) {
    let nodes = p.nodes;
    let num_ips = owner.len();
    for _ in 0..super::max_failback_moves(p) {
        let mut order: Vec<usize> = (0..nodes).collect();
        order.sort_by(|&a, &b| imb[b].cmp(&imb[a]));
        let mut moved = false;
        for &src in &order {
            if imb[src] == 0 {
                break;
            }
            let src_pnn = pnn(src);
            // (ip, dst, srcimbl, dstimbl)
            let mut best: Option<(usize, usize, u32, u32)> = None;
            for ip in 0..num_ips {
                if owner[ip] != src_pnn {
                    continue;
                }
                let srcdsum = ds[src * num_ips + ip];
                let srcimbl = imb[src].wrapping_sub(srcdsum);
                for dst in 0..nodes {
                    if !candidate[dst] || !p.can_takeover(ip, dst) {
                        continue;
                    }
                    let dstdsum = ds[dst * num_ips + ip];
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
                rows.apply(
                    &mut ds[src * num_ips..(src + 1) * num_ips],
                    &p.keys[ip],
                    false,
                );
                rows.apply(
                    &mut ds[dst * num_ips..(dst + 1) * num_ips],
                    &p.keys[ip],
                    true,
                );
                ds[src * num_ips + ip] = ds[src * num_ips + ip].wrapping_add(SELF_SQ);
                ds[dst * num_ips + ip] = ds[dst * num_ips + ip].wrapping_sub(SELF_SQ);
                moved = true;
                break;
            }
        }
        if !moved {
            return;
        }
    }
}
