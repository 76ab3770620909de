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

/// `bench SCENARIO [OPTIONS]`: every scenario prints one JSON line per
/// measured figure on stdout and a readable line on stderr
/// (docs/BENCHMARKS.md).
#[derive(Debug, clap::Parser)]
#[command(name = "bench")]
pub struct Cli {
    /// The scenario to measure.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios, each with its own options (`bench SCENARIO --help`).
#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// transportd against raw sockets (round trips, throughput, the encrypted
    /// link); as root.
    Transport(transport::TransportArgs),
    /// The netlink crate (addresses, tickles, killtcp) against `ip -batch`
    /// and raw sockets; as root.
    Netlink(netlink::NetlinkArgs),
    /// sock_diag and the nftables table against `ss` and `nft`; as root.
    NetlinkDiag(netlink_diag::NetlinkDiagArgs),
    /// How fast clusterd notices a dead node, and what heartbeating costs;
    /// as root, with the daemons built beside `bench`.
    Cluster(cluster::ClusterArgs),
    /// The address allocation (LCP2) against the reference algorithm.
    Alloc(alloc::AllocArgs),
    /// conntrackd's table in memory, and over the transport (as root, with
    /// the daemons built beside `bench`; `--no-net` skips it).
    Conntrack(conntrack::ConntrackArgs),
    /// Failover as a client sees it, beside keepalived; as root, with the
    /// daemons built beside `bench`.
    Failover(failover::FailoverArgs),
    /// Resident memory of one node's daemons, beside keepalived; as root,
    /// with the daemons built beside `bench`.
    Memory(memory::MemoryArgs),
    /// failoverd's node-local executor against bare netlink calls; as root.
    FailoverNode(failover_node::FailoverNodeArgs),
    /// No failover without a fault: an idle cluster under stress-ng; as
    /// root, with the daemons built beside `bench`.
    FailoverLoad(load::LoadArgs),
    /// Cold start and restart of a cluster, beside keepalived; as root,
    /// with the daemons built beside `bench`.
    Start(start::StartArgs),
    /// What one Prometheus scrape of masterd's /metrics costs; as root,
    /// with the daemons built beside `bench`.
    Scrape(scrape::ScrapeArgs),
}

impl Scenario {
    /// The scenario's name on the command line.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Transport(_) => "transport",
            Scenario::Netlink(_) => "netlink",
            Scenario::NetlinkDiag(_) => "netlink-diag",
            Scenario::Cluster(_) => "cluster",
            Scenario::Alloc(_) => "alloc",
            Scenario::Conntrack(_) => "conntrack",
            Scenario::Failover(_) => "failover",
            Scenario::Memory(_) => "memory",
            Scenario::FailoverNode(_) => "failover-node",
            Scenario::FailoverLoad(_) => "failover-load",
            Scenario::Start(_) => "start",
            Scenario::Scrape(_) => "scrape",
        }
    }

    /// Runs the scenario.
    ///
    /// # Errors
    ///
    /// The scenario's own (a bed that cannot be built, a measurement that
    /// fails).
    pub fn run(&self) -> anyhow::Result<()> {
        match self {
            Scenario::Transport(a) => transport::run(a),
            Scenario::Netlink(a) => netlink::run(a),
            Scenario::NetlinkDiag(a) => netlink_diag::run(a),
            Scenario::Cluster(a) => cluster::run(a),
            Scenario::Alloc(a) => alloc::run(a),
            Scenario::Conntrack(a) => conntrack::run(a),
            Scenario::Failover(a) => failover::run(a),
            Scenario::Memory(a) => memory::run(a),
            Scenario::FailoverNode(a) => failover_node::run(a),
            Scenario::FailoverLoad(a) => load::run(a),
            Scenario::Start(a) => start::run(a),
            Scenario::Scrape(a) => scrape::run(a),
        }
    }
}

/// Which timing profiles a scenario measures (`--profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profiles {
    /// The default profile.
    Default,
    /// The fast profile.
    Fast,
    /// The default profile, then the fast one.
    Both,
}

impl Profiles {
    /// The profile names, in the order they are measured.
    #[must_use]
    pub fn names(self) -> Vec<&'static str> {
        match self {
            Profiles::Default => vec!["default"],
            Profiles::Fast => vec!["fast"],
            Profiles::Both => vec!["default", "fast"],
        }
    }
}

/// A clap parser of a count in `range` (`usize`), for `value_parser =`.
pub(crate) fn count_in(
    range: std::ops::RangeInclusive<u64>,
) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(range)
}

/// A clap parser of a number of seconds or minutes `x` with
/// `min <= x <= max` (`min_open`: `min < x`).
pub(crate) fn float_in(
    min: f64,
    min_open: bool,
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |v: &str| {
        let x: f64 = v.trim().parse().map_err(|e| format!("{v:?}: {e}"))?;
        let low_ok = if min_open { x > min } else { x >= min };
        if low_ok && x <= max {
            Ok(x)
        } else {
            let open = if min_open { "(" } else { "[" };
            Err(format!("{x} is not in {open}{min}, {max}]"))
        }
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

    use clap::{CommandFactory, Parser};

    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(line.split_whitespace())
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_and_bad_values_are_refused_naming_the_flag() {
        for (line, flag) in [
            ("bench failover --trails 5", "--trails"),
            ("bench alloc --quik", "--quik"),
            ("bench netlink --reps x", "--reps"),
            ("bench netlink --only addrs", "--only"),
            ("bench failover --trials 0", "--trials"),
            ("bench failover --profile slow", "--profile"),
            ("bench start --addresses 1,0", "--addresses"),
            ("bench conntrack --secs 11", "--secs"),
            ("bench memory --model many", "--model"),
            ("bench failover-load --minutes 0.01", "--minutes"),
            ("bench transport --only rtt,nope", "--only"),
            ("bench transport --ready /tmp/r", "--role"),
        ] {
            let e = parse(line).expect_err(line).to_string();
            assert!(e.contains(flag), "{line}: {e}");
        }
        assert!(parse("bench nosuch").is_err());
        assert!(parse("bench").is_err());
    }

    #[test]
    fn defaults_and_lists_are_those_of_the_hand_parsers() {
        let Scenario::Start(a) = parse("bench start").unwrap().scenario else {
            panic!("not start")
        };
        assert_eq!(a.addresses, [1, 64, 256]);
        assert_eq!((a.trials, a.profile), (3, Profiles::Both));
        let Scenario::Start(a) = parse("bench start --addresses 4,8 --profile fast")
            .unwrap()
            .scenario
        else {
            panic!("not start")
        };
        assert_eq!(a.addresses, [4, 8]);
        assert_eq!(a.profile.names(), ["fast"]);
        let Scenario::Conntrack(a) = parse("bench conntrack --join-only").unwrap().scenario else {
            panic!("not conntrack")
        };
        let o = conntrack::Opts::from(&a);
        assert!(o.net_only && o.join_only && o.net);
        assert_eq!((o.conns, o.addrs, o.rate), (1_000_000, 16, 10_000));
        let Scenario::Transport(a) = parse("bench transport --only rtt,link-16k")
            .unwrap()
            .scenario
        else {
            panic!("not transport")
        };
        assert_eq!(a.only, ["rtt", "link-16k"]);
        assert_eq!((a.rounds, a.repeat, a.role), (3, 0, None));
        // The hidden command line of transport's child processes.
        let Scenario::Transport(a) = parse(
            "bench transport --role sink --transportd /r/t.sock --name conntrackd --ready /r/x",
        )
        .unwrap()
        .scenario
        else {
            panic!("not transport")
        };
        assert_eq!(a.role.as_deref(), Some("sink"));
        assert_eq!(a.name.as_deref(), Some("conntrackd"));
        let Scenario::FailoverLoad(a) = parse("bench failover-load").unwrap().scenario else {
            panic!("not failover-load")
        };
        assert_eq!((a.minutes, a.cpu), (10.0, None));
    }

    /// The `bench` command lines in `text`: code-block lines (joined over
    /// a trailing `\`) and inline code spans (joined over line ends), each
    /// with the line where it starts.
    fn command_lines(text: &str) -> Vec<(usize, String)> {
        let mut segments: Vec<(usize, String)> = Vec::new();
        let mut prose: Vec<(usize, &str)> = Vec::new();
        let mut in_block = false;
        let mut pending: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            if line.trim_start().starts_with("```") {
                in_block = !in_block;
                continue;
            }
            if in_block {
                let (start, mut joined) = pending.take().unwrap_or((n, String::new()));
                joined.push(' ');
                match line.trim_end().strip_suffix('\\') {
                    Some(head) => {
                        joined.push_str(head);
                        pending = Some((start, joined));
                    }
                    None => {
                        joined.push_str(line);
                        segments.push((start, joined));
                    }
                }
            } else {
                prose.push((n, line));
            }
        }
        // Inline spans, which may run over a line end.
        let mut span: Option<(usize, String)> = None;
        for (n, line) in prose {
            for (k, part) in line.split('`').enumerate() {
                if k > 0 {
                    span = match span.take() {
                        Some(s) => {
                            segments.push(s);
                            None
                        }
                        None => Some((n, String::new())),
                    };
                }
                if let Some((_, s)) = &mut span {
                    s.push(' ');
                    s.push_str(part);
                }
            }
        }
        let mut lines = Vec::new();
        for (n, seg) in segments {
            // One shell line may hold several commands; `#` ends it.
            let words: Vec<&str> = seg.split_whitespace().take_while(|t| *t != "#").collect();
            for tokens in words.split(|t| matches!(*t, "&" | "&&" | "||" | ";" | "|")) {
                let Some(i) = tokens
                    .iter()
                    .position(|t| *t == "bench" || t.ends_with("/bench"))
                else {
                    continue;
                };
                let mut rest = &tokens[i + 1..];
                if rest.first() == Some(&"--") {
                    rest = &rest[1..];
                }
                let is_scenario = rest.first().is_some_and(|s| {
                    s.starts_with(|c: char| c.is_ascii_lowercase())
                        && s.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                });
                if is_scenario {
                    lines.push((n, format!("bench {}", rest.join(" "))));
                }
            }
        }
        lines
    }

    /// A synopsis rather than a command: `[--reps N]`, `default|fast`.
    fn is_synopsis(line: &str) -> bool {
        line.split_whitespace().any(|t| {
            t.contains(['[', ']', '|'])
                || t.contains("...")
                || (t.chars().any(|c| c.is_ascii_uppercase())
                    && !t.chars().any(|c| c.is_ascii_lowercase()))
        })
    }

    /// Checks one documented line: a command parses; a synopsis names only
    /// options its scenario has.
    fn check(line: &str) -> Result<(), String> {
        if !is_synopsis(line) {
            return parse(line).map(|_| ()).map_err(|e| e.to_string());
        }
        let mut words = line.split_whitespace().skip(1);
        let name = words.next().unwrap_or_default();
        let cmd = Cli::command();
        let sub = cmd
            .find_subcommand(name)
            .ok_or_else(|| format!("no scenario {name}"))?;
        for w in words.flat_map(|w| w.split('|')) {
            let w = w.trim_matches(|c| c == '[' || c == ']');
            let Some(flag) = w.strip_prefix("--") else {
                continue;
            };
            let flag = flag.split('=').next().unwrap_or_default();
            if !sub.get_arguments().any(|a| a.get_long() == Some(flag)) {
                return Err(format!("{name} has no option --{flag}"));
            }
        }
        Ok(())
    }

    #[test]
    fn extraction_finds_spans_blocks_and_synopses() {
        let text = "a `bench failover\n--trials 3` b `make && bench alloc --quick | jq .`  `bench::x` c\n```\nsudo target/release/bench -- \\\n  alloc --quick # x\n```\n`bench SCENARIO`\n";
        let got = command_lines(text);
        assert_eq!(
            got,
            [
                (4, "bench alloc --quick".to_string()),
                (1, "bench failover --trials 3".to_string()),
                (2, "bench alloc --quick".to_string())
            ]
        );
        assert!(check("bench alloc --quick").is_ok());
        assert!(check("bench alloc --quik").is_err());
        assert!(check("bench netlink [--reps N] [--only addr|tickle|killtcp]").is_ok());
        assert!(check("bench netlink [--rep N]").is_err());
        assert!(check("bench conntrack [--no-net|--net-only]").is_ok());
        assert!(check("bench conntrack [--no-net|--net-onyl]").is_err());
    }

    /// Every `bench` command line quoted in docs/ and in the benches'
    /// module docs parses (a synopsis: names only existing options).
    #[test]
    fn every_documented_command_line_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let docs = root.join("../docs");
        let mut files = Vec::new();
        for dir in [docs.clone(), docs.join("bench"), root.join("src/bench")] {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "md" || x == "rs") {
                    files.push(p);
                }
            }
        }
        files.sort();
        let (mut commands, mut synopses, mut bad) = (0, 0, Vec::new());
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            let text = if f.extension().is_some_and(|x| x == "rs") {
                // Module docs only: `//! ` lines.
                text.lines()
                    .map(|l| l.strip_prefix("//!").map_or("", str::trim_start))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                text
            };
            for (n, line) in command_lines(&text) {
                eprintln!("{}:{n}: {line}", f.display());
                if is_synopsis(&line) {
                    synopses += 1;
                } else {
                    commands += 1;
                }
                if let Err(e) = check(&line) {
                    bad.push(format!("{}:{n}: {line}: {e}", f.display()));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "documented lines that do not parse:\n{}",
            bad.join("\n")
        );
        // The extraction finds what is there (docs/BENCHMARKS.md alone
        // quotes more than ten).
        assert!(
            commands >= 20 && synopses >= 8,
            "{commands} commands, {synopses} synopses"
        );
    }

    #[test]
    fn ratio_is_value_over_baseline() {
        let f = Figure::with_baseline("t", "m", 4.0, "us", 2.0);
        assert_eq!(f.ratio, Some(2.0));
        let line = serde_json::to_string(&f).unwrap();
        assert!(line.contains("\"ratio\":2.0"), "{line}");
    }
}
