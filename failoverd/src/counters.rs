//! failoverd's operation counters for the `STATISTICS` control (and so for
//! `ipfailover statistics` and masterd's Prometheus metrics,
//! docs/observability.md): addresses taken and released with their
//! durations, announcements, tickles, resets, hook runs, takeover runs
//! led with theirs.
//!
//! One set per process ([`COUNTERS`]): a node runs one failoverd (its own
//! process, or one task of masterd's single process). Plain relaxed
//! atomics: counting never waits and never allocates. A duration is kept
//! as a histogram in the named-counter form of `STATISTICS`:
//! `NAME_us_le_BOUND` (cumulative, BOUND in microseconds), `NAME_us_sum`,
//! `NAME_count`; masterd turns those back into a Prometheus histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the duration buckets, in microseconds (1 ms to 10 s:
/// adding an address is about a millisecond, a slow hook seconds).
pub const BUCKETS_US: [u64; 10] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 10_000_000,
];

/// A duration histogram of atomics.
#[derive(Debug, Default)]
pub struct Timing {
    buckets: [AtomicU64; BUCKETS_US.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Timing {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        for (b, bound) in self.buckets.iter().zip(BUCKETS_US) {
            if us <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn push(&self, name: &str, out: &mut Vec<(String, u64)>) {
        for (b, bound) in self.buckets.iter().zip(BUCKETS_US) {
            out.push((format!("{name}_us_le_{bound}"), b.load(Ordering::Relaxed)));
        }
        out.push((
            format!("{name}_us_sum"),
            self.sum_us.load(Ordering::Relaxed),
        ));
        out.push((format!("{name}_count"), self.count.load(Ordering::Relaxed)));
    }
}

/// failoverd's counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Addresses added to this node (a take that configured one).
    pub takes: AtomicU64,
    /// Addresses a take could not configure.
    pub take_failures: AtomicU64,
    /// Duration of each take request, per address taken.
    pub take_time: Timing,
    /// Addresses removed from this node.
    pub releases: AtomicU64,
    /// Addresses a release could not remove.
    pub release_failures: AtomicU64,
    /// Duration of each release request, per address released.
    pub release_time: Timing,
    /// Gratuitous ARPs and unsolicited neighbour advertisements sent.
    pub announcements: AtomicU64,
    /// Tickle ACKs sent to the clients of taken addresses.
    pub tickles: AtomicU64,
    /// Connections reset (killtcp) on release or on request.
    pub resets: AtomicU64,
    /// Event hook runs (one per event that ran the hook directory).
    pub hook_runs: AtomicU64,
    /// Hook scripts that failed.
    pub hook_failures: AtomicU64,
    /// Takeover runs this node led that ended.
    pub runs_led: AtomicU64,
    /// Takeover runs this node led in which a node failed a step.
    pub runs_failed: AtomicU64,
    /// Duration of each takeover run this node led (gather, plan,
    /// release, take).
    pub run_time: Timing,
}

/// This process's failoverd counters.
pub static COUNTERS: Counters = Counters {
    takes: AtomicU64::new(0),
    take_failures: AtomicU64::new(0),
    take_time: Timing::new(),
    releases: AtomicU64::new(0),
    release_failures: AtomicU64::new(0),
    release_time: Timing::new(),
    announcements: AtomicU64::new(0),
    tickles: AtomicU64::new(0),
    resets: AtomicU64::new(0),
    hook_runs: AtomicU64::new(0),
    hook_failures: AtomicU64::new(0),
    runs_led: AtomicU64::new(0),
    runs_failed: AtomicU64::new(0),
    run_time: Timing::new(),
};

impl Timing {
    /// An empty histogram (for the static).
    pub const fn new() -> Timing {
        Timing {
            buckets: [const { AtomicU64::new(0) }; BUCKETS_US.len()],
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to counter `c`.
pub fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The counters as `STATISTICS` reports them (after the client's own).
pub fn snapshot() -> Vec<(String, u64)> {
    let c = &COUNTERS;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = vec![
        ("takes".to_string(), get(&c.takes)),
        ("take_failures".to_string(), get(&c.take_failures)),
        ("releases".to_string(), get(&c.releases)),
        ("release_failures".to_string(), get(&c.release_failures)),
        ("announcements_sent".to_string(), get(&c.announcements)),
        ("tickles_sent".to_string(), get(&c.tickles)),
        ("resets_sent".to_string(), get(&c.resets)),
        ("hook_runs".to_string(), get(&c.hook_runs)),
        ("hook_failures".to_string(), get(&c.hook_failures)),
        ("takeover_runs_led".to_string(), get(&c.runs_led)),
        ("takeover_runs_failed".to_string(), get(&c.runs_failed)),
    ];
    c.take_time.push("take", &mut out);
    c.release_time.push("release", &mut out);
    c.run_time.push("takeover_run", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_is_cumulative_with_sum_and_count() {
        let t = Timing::new();
        t.observe(Duration::from_micros(800));
        t.observe(Duration::from_millis(30));
        t.observe(Duration::from_secs(20));
        let mut out = Vec::new();
        t.push("take", &mut out);
        let get = |n: &str| out.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("take_us_le_1000"), Some(1));
        assert_eq!(get("take_us_le_25000"), Some(1));
        assert_eq!(get("take_us_le_50000"), Some(2));
        assert_eq!(get("take_us_le_10000000"), Some(2));
        assert_eq!(get("take_count"), Some(3));
        assert_eq!(get("take_us_sum"), Some(800 + 30_000 + 20_000_000));
        assert_eq!(out.len(), BUCKETS_US.len() + 2);
    }

    #[test]
    fn snapshot_names_every_counter_once() {
        let s = snapshot();
        let mut names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        let len = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), len);
        assert!(names.contains(&"announcements_sent"));
        assert!(names.contains(&"release_us_le_1000"));
    }
}
