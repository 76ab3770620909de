//! The benchmark harness: one entry point, one JSON object per measured figure.
//!
//! Each scenario prints lines such as
//! `{"bench": "transport", "metric": "rtt_p50", "value": 41.2, "unit": "us", "baseline": 18.0, "ratio": 2.29}`
//! on stdout, where `baseline` is the comparison measured in the same run, and
//! a human summary on stderr.

use serde::Serialize;

pub mod alloc;
pub mod cluster;
pub mod conntrack;
pub mod failover;
pub mod failover_node;
pub mod keepalived;
pub mod load;
pub mod memory;
pub mod netlink;
pub mod netlink_diag;
pub mod scrape;
pub mod start;
pub mod transport;

/// One measured figure, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// The scenario (`transport`, `netlink`, ...).
    pub bench: String,
    /// What was measured (`rtt_p50`, ...).
    pub metric: String,
    /// The measured value.
    pub value: f64,
    /// Its unit (`us`, `ms`, `msg/s`, `B`, ...).
    pub unit: String,
    /// The comparison measured in the same run, if any.
    pub baseline: Option<f64>,
    /// `value / baseline`, if there is a baseline.
    pub ratio: Option<f64>,
    /// The profile measured, for scenarios that name it (`bench start`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The number of public addresses, for scenarios that name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<usize>,
}

impl Figure {
    /// A figure with a baseline; the ratio is computed.
    pub fn with_baseline(bench: &str, metric: &str, value: f64, unit: &str, baseline: f64) -> Self {
        let ratio = if baseline == 0.0 {
            None
        } else {
            Some(value / baseline)
        };
        Figure {
            bench: bench.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            baseline: Some(baseline),
            ratio,
            profile: None,
            addresses: None,
        }
    }

    /// A figure with no baseline.
    pub fn plain(bench: &str, metric: &str, value: f64, unit: &str) -> Self {
        Figure {
            bench: bench.into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            baseline: None,
            ratio: None,
            profile: None,
            addresses: None,
        }
    }

    /// The same figure naming its profile and number of addresses (two
    /// more JSON fields).
    #[must_use]
    pub fn tagged(mut self, profile: &str, addresses: usize) -> Self {
        self.profile = Some(profile.into());
        self.addresses = Some(addresses);
        self
    }

    /// Prints the JSON line on stdout and a readable line on stderr.
    pub fn print(&self) {
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot encode figure {}: {e}", self.metric),
        }
        match (self.baseline, self.ratio) {
            (Some(b), Some(r)) => eprintln!(
                "{:>10} {:<28} {:>12.2} {:<6} baseline {:>12.2}  ratio {:.2}",
                self.bench, self.metric, self.value, self.unit, b, r
            ),
            _ => eprintln!(
                "{:>10} {:<28} {:>12.2} {}",
                self.bench, self.metric, self.value, self.unit
            ),
        }
        if let (Some(p), Some(n)) = (&self.profile, self.addresses) {
            eprintln!("{:>10} ({p} profile, {n} addresses)", "");
        }
    }
}

/// The daemons' `[logging] level` in the benches' beds: `info`, or
/// `BENCH_LOG_LEVEL` (a tracing filter such as
/// `info,failoverd=debug,clusterd=debug`) for an investigation.
pub(crate) fn log_level() -> String {
    std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".to_string())
}

/// Extra `[cluster]` lines for the benches' beds, from `BENCH_CLUSTER`
/// (for an experiment, e.g. `heartbeat_interval_ms = 5` and
/// `dead_after_ms = 20` over a profile; `\n` separates lines): empty
/// unless set. The figures printed are then those of that setting, not
/// of the named profile.
pub(crate) fn cluster_extra() -> String {
    std::env::var("BENCH_CLUSTER")
        .map(|v| format!("{}\n", v.replace("\\n", "\n")))
        .unwrap_or_default()
}

/// The `p`-th percentile (0..=100) of unsorted samples, nearest-rank.
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    // The rank is at most samples.len(), far below usize::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// The value after `name` in a benchmark's arguments, parsed, or `default`
/// when `name` is absent.
///
/// # Errors
///
/// When `name` has no value or it does not parse.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    use anyhow::Context;
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} needs a value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut s, 50.0), 50.0);
        assert_eq!(percentile(&mut s, 99.0), 99.0);
        assert_eq!(percentile(&mut s, 100.0), 100.0);
        assert!(percentile(&mut [], 50.0).is_nan());
    }

    #[test]
    fn ratio_is_value_over_baseline() {
        let f = Figure::with_baseline("t", "m", 4.0, "us", 2.0);
        assert_eq!(f.ratio, Some(2.0));
        let line = serde_json::to_string(&f).unwrap();
        assert!(line.contains("\"ratio\":2.0"), "{line}");
    }
}
