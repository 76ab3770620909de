//! Figures for the membership core, without a transport (run with
//! `cargo run --release -p clusterd --example heartbeat_cost`):
//!
//! * `hb_cpu_32_fast`: CPU time per second of heartbeating, per node, in a
//!   32-node cluster at the fast profile (10 ms heartbeats), state machine
//!   only; baseline: the same message volume into a handler that only copies
//!   each heartbeat into a per-peer slot.
//! * `detect_p50/p99_{fast,default}`: simulated time from a node's death to
//!   the survivors' published DISCONNECTED (ideal network, no scheduling
//!   delay), over 40 trials with random phase, beside `dead_after`.
//!
//! * `leader_failover_{p50,max}_{fast,default}`: simulated time from the
//!   leader's death until the new leader may reassign its IPs, beside the
//!   analytical bound 2 × (lease + margin) + interval.
//!
//! Prints one JSON line per figure (the workspace's bench format).

use std::path::Path;
use std::time::{Duration, Instant};

use clusterd::{ClusterMsg, Config, Member, NodeFlags, NodesFile, Output, Pnn, Timing};

fn figure(metric: &str, value: f64, unit: &str, baseline: f64) {
    let ratio = if baseline > 0.0 {
        value / baseline
    } else {
        0.0
    };
    println!(
        "{{\"bench\": \"cluster\", \"metric\": \"{metric}\", \"value\": {value:.3}, \"unit\": \"{unit}\", \"baseline\": {baseline:.3}, \"ratio\": {ratio:.3}}}"
    );
}

fn file(n: usize) -> NodesFile {
    let text: String = (0..n).map(|i| format!("2001:db8::{}\n", i + 1)).collect();
    NodesFile::parse(Path::new("nodes"), &text).expect("generated nodes file")
}

fn pnn(i: usize) -> Pnn {
    Pnn::try_from(i).expect("small index")
}

fn idx(p: Pnn) -> usize {
    usize::try_from(p).expect("small pnn")
}

struct Cluster {
    members: Vec<Member>,
    alive: Vec<bool>,
    outs: Vec<Vec<Output>>,
    inbox: Vec<(usize, ClusterMsg)>,
    now: Duration,
    step: Duration,
}

impl Cluster {
    fn new(n: usize, timing: Timing, step: Duration, start: Duration) -> Self {
        let f = file(n);
        let cfg = Config {
            timing,
            ..Config::default()
        };
        Self {
            members: (0..n)
                .map(|i| Member::new(cfg, &f, pnn(i), start).expect("live pnn"))
                .collect(),
            alive: vec![true; n],
            outs: (0..n).map(|_| Vec::with_capacity(4 * n)).collect(),
            inbox: Vec::with_capacity(4 * n * n),
            now: start,
            step,
        }
    }

    /// One step: nodes whose deadline passed tick; messages are delivered.
    fn advance(&mut self) {
        self.now += self.step;
        for (i, m) in self.members.iter_mut().enumerate() {
            if self.alive[i] && m.next_deadline(self.now - self.step) <= self.now {
                m.tick(self.now, &mut self.outs[i]);
            }
        }
        let mut rounds = 0;
        loop {
            for out in &mut self.outs {
                for o in out.drain(..) {
                    if let Output::Send { to, msg } = o {
                        self.inbox.push((idx(to), msg));
                    }
                }
            }
            if self.inbox.is_empty() || rounds > 8 {
                break;
            }
            rounds += 1;
            let inbox = std::mem::take(&mut self.inbox);
            for (to, msg) in &inbox {
                if self.alive[*to] {
                    self.members[*to].receive(self.now, msg, &mut self.outs[*to]);
                }
            }
            self.inbox = inbox;
            self.inbox.clear();
        }
    }
}

fn cpu_32_fast() {
    const N: usize = 32;
    let mut c = Cluster::new(N, Timing::fast(), Duration::from_millis(1), Duration::ZERO);
    for _ in 0..1000 {
        c.advance();
    }
    assert!(
        c.members[N - 1].membership().leader.is_some(),
        "cluster formed"
    );
    let secs: u32 = 5;
    let t0 = Instant::now();
    for _ in 0..secs * 1000 {
        c.advance();
    }
    let per_node_per_s = t0.elapsed().as_secs_f64() / f64::from(secs) / N as f64;
    // Baseline: the same number of heartbeats, each copied into a slot.
    let hb = clusterd::msg::Heartbeat {
        from: 0,
        to: 1,
        stamp: Duration::ZERO,
        echo: None,
        echo_incarnation: 0,
        grant: false,
        expired: clusterd::msg::NodeSet::EMPTY,
        incarnation: 1,
        flags: NodeFlags::OK,
        can_lead: true,
        supports: Some(0),
        active_leader: true,
        generation: 1,
        nodes: clusterd::msg::NodeSet::EMPTY,
        also: clusterd::msg::NodeSet::EMPTY,
    };
    let mut slots = vec![hb; N];
    let per_s_msgs = N * (N - 1) * 100; // 100 heartbeats/s to each of N-1 peers
    let t1 = Instant::now();
    for s in 0..secs as usize {
        for k in 0..per_s_msgs {
            let mut m = hb;
            m.stamp = Duration::from_nanos(u64::try_from(k + s).unwrap_or(0));
            slots[k % N] = std::hint::black_box(m);
        }
    }
    std::hint::black_box(&slots);
    let base_per_node_per_s = t1.elapsed().as_secs_f64() / f64::from(secs) / N as f64;
    figure(
        "hb_cpu_32_fast",
        per_node_per_s * 100.0,
        "%core",
        base_per_node_per_s * 100.0,
    );
    eprintln!(
        "32 nodes, fast profile: {:.3} % of one core per node for heartbeating (copy-only baseline {:.4} %)",
        per_node_per_s * 100.0,
        base_per_node_per_s * 100.0
    );
}

fn detection(name: &str, timing: Timing, step: Duration) {
    const N: usize = 3;
    let trials = 40u32;
    let mut times = Vec::new();
    for trial in 0..trials {
        let mut c = Cluster::new(N, timing, step, Duration::from_secs(10));
        for _ in 0..(timing.lease * 12).as_micros() / step.as_micros() {
            c.advance();
        }
        // Random phase: run a fraction of an interval more.
        let phase =
            (u128::from(trial) * 7919) % (timing.interval.as_micros() / step.as_micros()).max(1);
        for _ in 0..phase {
            c.advance();
        }
        let killed = 2;
        c.alive[killed] = false;
        let t_kill = c.now;
        let mut seen = None;
        for _ in 0..(timing.dead_after * 10).as_micros() / step.as_micros() {
            c.advance();
            let all = (0..N).filter(|&i| c.alive[i]).all(|i| {
                c.members[i]
                    .membership()
                    .flags(pnn(killed))
                    .is_some_and(|f| f.contains(NodeFlags::DISCONNECTED))
            });
            if all {
                seen = Some(c.now - t_kill);
                break;
            }
        }
        if let Some(s) = seen {
            times.push(s.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        // Index of the q-quantile; the value is below the length.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).copied().unwrap_or(f64::NAN)
    };
    let dead = timing.dead_after.as_secs_f64() * 1000.0;
    figure(&format!("detect_p50_{name}"), pick(0.5), "ms", dead);
    figure(&format!("detect_p99_{name}"), pick(0.99), "ms", dead);
    eprintln!(
        "{name}: {} of {trials} trials detected; p50 {:.1} ms, p99 {:.1} ms (dead_after {dead} ms, simulated, ideal network)",
        times.len(),
        pick(0.5),
        pick(0.99)
    );
}

/// Leader death → the new leader may reassign the old leader's IPs.
fn leader_failover(name: &str, timing: Timing, step: Duration) {
    const N: usize = 3;
    let mut times = Vec::new();
    for trial in 0..20u32 {
        let mut c = Cluster::new(N, timing, step, Duration::from_secs(10));
        let warm = (timing.lease * 12).as_micros() / step.as_micros();
        let phase =
            (u128::from(trial) * 7919) % (timing.interval.as_micros() / step.as_micros()).max(1);
        for _ in 0..warm + phase {
            c.advance();
        }
        c.alive[0] = false;
        let t_kill = c.now;
        for _ in 0..(timing.lease * 20).as_micros() / step.as_micros() {
            c.advance();
            if c.members[1].may_reassign(0, c.now) {
                times.push((c.now - t_kill).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let p50 = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    let max = times.last().copied().unwrap_or(f64::NAN);
    let bound = ((timing.lease + timing.margin) * 2 + timing.interval).as_secs_f64() * 1000.0;
    figure(&format!("leader_failover_p50_{name}"), p50, "ms", bound);
    figure(&format!("leader_failover_max_{name}"), max, "ms", bound);
    eprintln!(
        "{name}: leader death -> old leader's IPs reassignable: {} of 20 trials, p50 {p50:.1} ms, max {max:.1} ms (baseline: 2(lease+margin)+interval = {bound} ms)",
        times.len()
    );
}

fn main() {
    cpu_32_fast();
    detection("fast", Timing::fast(), Duration::from_micros(500));
    detection("default", Timing::default(), Duration::from_millis(1));
    leader_failover("fast", Timing::fast(), Duration::from_micros(500));
    leader_failover("default", Timing::default(), Duration::from_millis(1));
}
