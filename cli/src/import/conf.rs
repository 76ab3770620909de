//! `ctdb.conf`: each option ctdbd knows (CTDB 4.17 to master: sections
//! `cluster`, `database`, `event`, `failover`, `legacy`, `logging`), checked
//! as ctdbd checks it and mapped to `ipfailover.toml` or reported as
//! ignored with the reason. Pure: items in, report lines and settings out.
//!
//! As ctdbd: section names are case-insensitive, option names are not; an
//! unknown section or option is ignored (ctdbd ignores it too); the last
//! value of an option counts. What ctdbd refuses (an empty value, a boolean
//! that is not `true`/`yes`/`false`/`no`, a bad number, an unknown log level,
//! a `transport` other than `tcp`, a `node address` that is not an
//! address) is refused here, naming the line.

use std::net::IpAddr;

use super::ini::Item;
use super::report::{Line, Outcome, Toml, Value};
use super::Problem;

/// The type ctdbd gives an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int,
}

/// ctdbd's options: (section, name, type).
const OPTIONS: &[(&str, &str, Kind)] = &[
    ("cluster", "transport", Kind::Str),
    ("cluster", "node address", Kind::Str),
    ("cluster", "cluster lock", Kind::Str),
    ("cluster", "recovery lock", Kind::Str),
    ("cluster", "nodes list", Kind::Str),
    ("cluster", "leader timeout", Kind::Int),
    ("cluster", "leader capability", Kind::Bool),
    ("database", "volatile database directory", Kind::Str),
    ("database", "persistent database directory", Kind::Str),
    ("database", "state database directory", Kind::Str),
    ("database", "lock debug script", Kind::Str),
    ("database", "tdb mutexes", Kind::Bool),
    ("event", "debug script", Kind::Str),
    ("failover", "disabled", Kind::Bool),
    ("failover", "shutdown extra timeout", Kind::Int),
    ("failover", "shutdown failover timeout", Kind::Int),
    ("legacy", "realtime scheduling", Kind::Bool),
    ("legacy", "lmaster capability", Kind::Bool),
    ("legacy", "start as stopped", Kind::Bool),
    ("legacy", "start as disabled", Kind::Bool),
    ("legacy", "script log level", Kind::Str),
    ("logging", "location", Kind::Str),
    ("logging", "log level", Kind::Str),
];

const SECTIONS: &[&str] = &[
    "cluster", "database", "event", "failover", "legacy", "logging",
];

/// What the rest of the import needs from ctdb.conf besides the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conf {
    /// The cluster lock in force: (line, option name, value).
    pub lock: Option<(usize, &'static str, String)>,
    /// `[cluster] node address`: (line, address).
    pub node_address: Option<(usize, IpAddr)>,
    /// `[cluster] nodes list`: (line, value).
    pub nodes_list: Option<(usize, String)>,
    /// Files the lock needs in OUT: (name, bytes).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Options of the import that change a mapping.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--ignore-failover-disabled`.
    pub ignore_failover_disabled: bool,
    /// `--no-ctdb`: ctdbd will not run beside ipfailover.
    pub no_ctdb: bool,
    /// OUT, absolute (where a lock helper's own configuration goes).
    pub out: String,
    /// The text of CTDB's `etcd` file (ctdb_etcd_lock's configuration,
    /// `$CTDB_BASE/etcd`), if there is one.
    pub etcd_config: Option<String>,
}

/// ctdbd's boolean: `true`/`yes`/`false`/`no`, any case.
fn boolean(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

/// A C `strtoul(.., 0)` number over the whole string: decimal, `0x` hex or
/// `0` octal.
pub fn number(v: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        (h, 16)
    } else if v.len() > 1 && v.starts_with('0') {
        (&v[1..], 8)
    } else {
        (v, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// A CTDB log level (`ERROR`, `WARNING`, `NOTICE`, `INFO`, `DEBUG`, any
/// case, or any prefix of one; or a number 0-10) as ipfailover's nearest
/// level. `None` if ctdbd would refuse it.
pub fn log_level(v: &str) -> Option<&'static str> {
    if v.starts_with(|c: char| c.is_ascii_digit()) {
        let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
        return match digits.parse::<u32>().ok()? {
            0 => Some("error"),
            1 | 2 => Some("warn"),
            3..=9 => Some("info"),
            10 => Some("debug"),
            _ => None,
        };
    }
    if v.is_empty() {
        return None;
    }
    let v = v.to_ascii_uppercase();
    [
        ("ERROR", "error"),
        ("WARNING", "warn"),
        ("NOTICE", "info"),
        ("INFO", "info"),
        ("DEBUG", "debug"),
    ]
    .iter()
    .find(|(name, _)| name.starts_with(v.as_str()))
    .map(|(_, ours)| *ours)
}

/// Maps the items of `ctdb.conf` (named `label` in the report): what the
/// rest of the import needs, and every line ctdbd would refuse, each as a
/// [`Problem`] (the import is refused when there is any).
pub fn map(
    items: &[Item],
    label: &str,
    opts: &Options,
    toml: &mut Toml,
    lines: &mut Vec<Line>,
) -> (Conf, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut section: Option<&'static str> = None;
    let mut unknown_section: Option<String> = None;
    // Each item's section: (known section, unknown section's name).
    let mut placed: Vec<(Option<&'static str>, Option<String>)> = Vec::new();
    for item in items {
        if let Item::Section { name, .. } = item {
            section = SECTIONS
                .iter()
                .find(|s| s.eq_ignore_ascii_case(name))
                .copied();
            unknown_section = section.is_none().then(|| name.clone());
        }
        placed.push((section, unknown_section.clone()));
    }
    let last_of = |sec: &str, key: &str| -> usize {
        items
            .iter()
            .zip(&placed)
            .rev()
            .filter_map(|(it, (s, _))| match it {
                Item::Option { line, key: k, .. } if *s == Some(sec) && k == key => Some(*line),
                _ => None,
            })
            .next()
            .unwrap_or(0)
    };
    let mut conf = Conf::default();
    let mut recovery_lock: Option<(usize, String)> = None;
    // Report lines of the lock options, completed once the winner is known.
    let mut lock_lines: Vec<usize> = Vec::new();
    for (item, (section, unknown)) in items.iter().zip(&placed) {
        match item {
            Item::Section { line, name } => {
                if section.is_none() {
                    lines.push(Line::ignored(
                        format!("{label}:{line}"),
                        format!("[{name}]"),
                        "not a ctdb.conf section: ctdbd ignores it and its options",
                    ));
                }
            }
            Item::NoEquals { line, text } => lines.push(Line::ignored(
                format!("{label}:{line}"),
                text,
                "no '=': ctdbd ignores the line",
            )),
            Item::Invalid { line, text, what } => problems.push(Problem {
                line: *line,
                what: format!("{text:?}: {what} (ctdbd refuses the file)"),
            }),
            Item::Option { line, key, value } => {
                let at = format!("{label}:{line}");
                let what = format!("{key} = {value}");
                let Some(sec) = *section else {
                    let why = match unknown {
                        Some(s) => format!("in [{s}], which is not a ctdb.conf section"),
                        None => "before any section: ctdbd ignores it".to_string(),
                    };
                    lines.push(Line::ignored(at, what, why));
                    continue;
                };
                let Some(&(_, name, kind)) = OPTIONS.iter().find(|(s, k, _)| *s == sec && k == key)
                else {
                    lines.push(Line::ignored(
                        at,
                        what,
                        format!("not a [{sec}] option of ctdb.conf: ctdbd ignores it"),
                    ));
                    continue;
                };
                if value.is_empty() {
                    problems.push(Problem {
                        line: *line,
                        what: format!("[{sec}] {key}: empty value (ctdbd refuses it)"),
                    });
                    continue;
                }
                let refuse = |why: String| Problem {
                    line: *line,
                    what: format!("[{sec}] {key} = {value}: {why} (ctdbd refuses it too)"),
                };
                let bool_value = match kind {
                    Kind::Bool => match boolean(value) {
                        Some(b) => Some(b),
                        None => {
                            problems.push(refuse("not a boolean: true, yes, false or no".into()));
                            continue;
                        }
                    },
                    _ => None,
                };
                if kind == Kind::Int && number(value).is_none_or(|n| n > i32::MAX as u64) {
                    problems.push(refuse("not a number".into()));
                    continue;
                }
                let last = last_of(sec, key);
                if last != *line {
                    lines.push(Line::ignored(
                        at,
                        what,
                        format!("set again on line {last}: the last one counts, as in ctdbd"),
                    ));
                    continue;
                }
                let source = format!("{label}:{line}: {what}");
                let mut set = |s: &'static str, k: &'static str, v: Value| {
                    let d = Toml::describe(s, k, &v);
                    toml.set(s, k, v, source.clone());
                    d
                };
                let line_of = match (sec, name) {
                    ("cluster", "transport") => {
                        if value != "tcp" {
                            problems.push(refuse("only tcp is supported".into()));
                            continue;
                        }
                        Line::ignored(at, what, "ipfailover's nodes always talk TCP, on [transport] port")
                    }
                    ("cluster", "node address") => match value.parse::<IpAddr>() {
                        Ok(a) => {
                            conf.node_address = Some((*line, a));
                            Line::mapped(at, what, "[cluster] pnn of this address in nodes (below)")
                        }
                        Err(_) => {
                            problems.push(refuse("not an IPv4 or IPv6 address".into()));
                            continue;
                        }
                    },
                    ("cluster", "cluster lock") => {
                        conf.lock = Some((*line, "cluster lock", value.clone()));
                        lock_lines.push(lines.len());
                        Line::mapped(at, what, "")
                    }
                    ("cluster", "recovery lock") => {
                        recovery_lock = Some((*line, value.clone()));
                        lock_lines.push(lines.len());
                        Line::mapped(at, what, "")
                    }
                    ("cluster", "nodes list") => {
                        conf.nodes_list = Some((*line, value.clone()));
                        Line::mapped(at, what, "the nodes file it names (below)")
                    }
                    ("cluster", "leader timeout") => Line::ignored(
                        at,
                        what,
                        "a leader is replaced when its heartbeats stop, after [cluster] dead_after_ms, 500 ms by default",
                    ),
                    ("cluster", "leader capability") => {
                        let d = set("cluster", "leader_capability", Value::Bool(bool_value.unwrap_or(true)));
                        Line::mapped(at, what, d)
                    }
                    ("database", _) => Line::ignored(
                        at,
                        what,
                        "ipfailover has no databases; they stay with ctdbd if it keeps running for Samba",
                    ),
                    ("legacy", "lmaster capability") => Line::ignored(
                        at,
                        what,
                        "ipfailover has no databases",
                    ),
                    ("event", "debug script") => Line::ignored(
                        at,
                        what,
                        "failoverd kills a hook that overruns [failover] hook_timeout_ms and reports it; it runs no debug script",
                    ),
                    ("failover", "disabled") => {
                        let b = bool_value.unwrap_or(false);
                        if b && opts.ignore_failover_disabled {
                            Line::ignored(
                                at,
                                what,
                                "--ignore-failover-disabled: it hands the addresses from ctdbd to ipfailover",
                            )
                        } else if b {
                            let d = set("failover", "disabled", Value::Bool(true));
                            Line::mapped(
                                at,
                                what,
                                format!("{d}: this node will host no public address (if you set it to hand the addresses to ipfailover, import again with --ignore-failover-disabled)"),
                            )
                        } else {
                            let d = set("failover", "disabled", Value::Bool(false));
                            Line::mapped(at, what, d)
                        }
                    }
                    ("failover", _) => Line::ignored(
                        at,
                        what,
                        "masterd stops failoverd first, which releases the node's addresses; docs/masterd.md",
                    ),
                    ("legacy", "realtime scheduling") => {
                        let p = u64::from(bool_value.unwrap_or(true));
                        let d = set("cluster", "realtime_priority", Value::Int(p));
                        Line::mapped(at, what, d)
                    }
                    ("legacy", "start as stopped" | "start as disabled") => {
                        let cmd = if name == "start as stopped" { "stop" } else { "disable" };
                        if bool_value == Some(true) {
                            Line::not_imported(
                                at,
                                what,
                                format!("ipfailover has no such setting: run `ipfailover {cmd}` on this node once it has started"),
                            )
                        } else {
                            Line::ignored(at, what, "false is what ipfailover does")
                        }
                    }
                    ("legacy", "script log level") => {
                        if log_level(value).is_none() {
                            problems.push(refuse("not a log level".into()));
                            continue;
                        }
                        Line::ignored(
                            at,
                            what,
                            "failoverd logs each hook that fails as a warning and lists it in `ipfailover status`",
                        )
                    }
                    ("logging", "location") => Line::ignored(
                        at,
                        what,
                        "ipfailover logs to the journal under systemd, to stderr otherwise; journald can forward to syslog",
                    ),
                    ("logging", "log level") => match log_level(value) {
                        Some(level) => {
                            let d = set("logging", "level", Value::Str(level.into()));
                            let nearest = if value.to_ascii_uppercase().starts_with('N') {
                                " (ipfailover has no NOTICE level: info is the nearest)"
                            } else {
                                ""
                            };
                            Line::mapped(at, what, format!("{d}{nearest}"))
                        }
                        None => {
                            problems.push(refuse(
                                "not a log level: ERROR, WARNING, NOTICE, INFO, DEBUG or 0-10".into(),
                            ));
                            continue;
                        }
                    },
                    _ => Line::ignored(at, what, "no ipfailover equivalent"),
                };
                lines.push(line_of);
            }
        }
    }
    if conf.lock.is_none() {
        if let Some((line, value)) = recovery_lock.clone() {
            conf.lock = Some((line, "recovery lock", value));
        }
    }
    for index in lock_lines {
        let Some(l) = lines.get_mut(index) else {
            continue;
        };
        let Some((lock_line, name, value)) = &conf.lock else {
            continue;
        };
        if l.at != format!("{label}:{lock_line}") {
            l.outcome = Outcome::Ignored(format!(
                "deprecated; `cluster lock` on line {lock_line} wins, as in ctdbd"
            ));
            continue;
        }
        let (ours, note, file) = lock(value, opts);
        conf.files.extend(file);
        let v = Value::Str(ours);
        let d = Toml::describe("cluster", "cluster_lock", &v);
        toml.set(
            "cluster",
            "cluster_lock",
            v,
            format!("{}: {name} = {value}", l.at),
        );
        let deprecated = if *name == "recovery lock" {
            "; `recovery lock` is the deprecated name of `cluster lock`"
        } else {
            ""
        };
        l.outcome = Outcome::Mapped(format!("{d}: {note}{deprecated}"));
    }
    (conf, problems)
}

/// A cluster lock for ipfailover: its value, what the report says about
/// it, and a file (name, bytes) it needs in OUT.
pub type Lock = (String, String, Option<(String, Vec<u8>)>);

/// The cluster lock ipfailover gets for CTDB's `value`, what the report
/// says about it, and a file it needs in OUT.
///
/// When ctdbd keeps running (for Samba's databases) it keeps holding its
/// own cluster lock; an ipfailover leader asking for the same lock would
/// wait for ever. So, unless `--no-ctdb`, the lock is renamed where the
/// helper's arguments name it: a file for the fcntl helper (a plain path,
/// or `!.../ctdb_mutex_fcntl_helper FILE ...`) gets `.ipfailover` appended,
/// as does the RADOS helper's object (its 4th argument). `ctdb_etcd_lock`
/// names its lock from its configuration file (`locks_dir`; ctdbd passes
/// `CTDB_BASE`, so it reads CTDB's `etcd`): it gets a copy of that file in
/// OUT with `_ipfailover` appended to `locks_dir`, through `-c FILE`. Any
/// other helper is kept as it is, with a warning saying what to change.
#[must_use]
pub fn lock(value: &str, opts: &Options) -> Lock {
    let suffix = ".ipfailover";
    let cmd = value.strip_prefix('!');
    let words: Vec<&str> = cmd.unwrap_or("").split_whitespace().collect();
    let program = words.first().copied().unwrap_or("");
    let base = program.rsplit('/').next().unwrap_or(program);
    if base == "ctdb_etcd_lock" && opts.no_ctdb {
        return (
            value.to_string(),
            "WARNING: the same lock as ctdbd, but ctdb_etcd_lock asks `ctdb pnn` for its lock's name, which fails without ctdbd: use another lock helper".into(),
            None,
        );
    }
    if opts.no_ctdb {
        return (
            value.to_string(),
            "the same lock as ctdbd (--no-ctdb: ctdbd will not run beside ipfailover)".into(),
            None,
        );
    }
    let Some(_) = cmd else {
        return (
            format!("{value}{suffix}"),
            format!("CTDB's fcntl helper on a file of its own beside ctdbd's (ctdbd keeps {value} for its databases)"),
            None,
        );
    };
    let renamed = |index: usize, what: &str| -> Option<Lock> {
        let old = words.get(index)?;
        let mut new: Vec<String> = words.iter().map(|w| (*w).to_string()).collect();
        new[index] = format!("{old}{suffix}");
        Some((
            format!("!{}", new.join(" ")),
            format!("{base} with {what} of its own beside ctdbd's ({old})"),
            None,
        ))
    };
    let configured = words
        .iter()
        .any(|w| *w == "-c" || w.starts_with("--config") || (w.starts_with("-c") && w.len() > 2));
    let done = match base {
        "ctdb_mutex_fcntl_helper" => renamed(1, "a lock file"),
        "ctdb_mutex_ceph_rados_helper" => renamed(4, "a RADOS object"),
        "ctdb_etcd_lock" if !configured && !opts.out.contains(char::is_whitespace) => {
            Some(etcd(&words, opts))
        }
        _ => None,
    };
    done.unwrap_or_else(|| {
        (
            value.to_string(),
            String::from("WARNING: kept as it is: if ctdbd keeps running with this lock, ipfailover's leader and ctdbd's compete for it and ipfailover may get no leader: make this helper take a lock of its own (ctdb_etcd_lock: a configuration file with another `locks_dir`), or import with --no-ctdb if ctdbd will not run any more"),
            None,
        )
    })
}

/// The name of ctdb_etcd_lock's own configuration in OUT.
pub const ETCD_CONFIG: &str = "ctdb_etcd_lock.conf";

/// ctdb_etcd_lock with `-c OUT/ctdb_etcd_lock.conf`: CTDB's `etcd` file
/// (its `key = value` lines; the helper cannot read any other line) with
/// `_ipfailover` appended to `locks_dir` (CTDB's default `_ctdb`).
fn etcd(words: &[&str], opts: &Options) -> Lock {
    let mut out = String::new();
    let mut old_dir = None;
    for line in opts.etcd_config.as_deref().unwrap_or("").lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "locks_dir" {
            old_dir = Some(value.trim().to_string());
        } else {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    let old = old_dir.unwrap_or_else(|| "_ctdb".into());
    let new = format!("{old}_ipfailover");
    out.push_str(&format!("locks_dir = {new}\n"));
    let path = format!("{}/{ETCD_CONFIG}", opts.out.trim_end_matches('/'));
    let mut cmd = vec![words[0].to_string(), "-c".into(), path.clone()];
    cmd.extend(words[1..].iter().map(|w| (*w).to_string()));
    let from = if opts.etcd_config.is_some() {
        "CTDB's etcd file"
    } else {
        "CTDB's defaults"
    };
    (
        format!("!{}", cmd.join(" ")),
        format!("ctdb_etcd_lock with a lock of its own: {path} is {from} with locks_dir = {new} (ctdbd keeps {old}); the helper asks `ctdb pnn`, so ctdbd must be running"),
        Some((ETCD_CONFIG.to_string(), out.into_bytes())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::ini;

    fn run(text: &str, opts: Options) -> (Result<Conf, Vec<Problem>>, Toml, Vec<String>) {
        let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
        let items = ini::parse(&lines);
        let mut toml = Toml::default();
        let mut report = Vec::new();
        let (conf, problems) = map(&items, "ctdb.conf", &opts, &mut toml, &mut report);
        let r = if problems.is_empty() {
            Ok(conf)
        } else {
            Err(problems)
        };
        (r, toml, report.iter().map(ToString::to_string).collect())
    }

    fn ok(text: &str) -> (Conf, Toml, Vec<String>) {
        let (r, t, l) = run(text, Options::default());
        (r.expect("accepted"), t, l)
    }

    fn errors(text: &str) -> Vec<String> {
        run(text, Options::default())
            .0
            .expect_err("refused")
            .iter()
            .map(|p| format!("{}: {}", p.line, p.what))
            .collect()
    }

    #[test]
    fn log_levels_map_to_the_nearest() {
        for (ctdb, ours) in [
            ("ERROR", "error"),
            ("ERR", "error"),
            ("warning", "warn"),
            ("NOTICE", "info"),
            ("INFO", "info"),
            ("DEBUG", "debug"),
            ("0", "error"),
            ("3", "info"),
            ("10", "debug"),
        ] {
            assert_eq!(log_level(ctdb), Some(ours), "{ctdb}");
        }
        assert_eq!(log_level("LOUD"), None);
        assert_eq!(log_level("11"), None);
        let (_, t, l) = ok("[logging]\n\tlog level = NOTICE\n");
        assert_eq!(t.get("logging", "level"), Some(&Value::Str("info".into())));
        assert!(l[0].contains("no NOTICE level"), "{l:?}");
    }

    #[test]
    fn booleans_and_numbers_as_ctdbd_reads_them() {
        assert_eq!(boolean("Yes"), Some(true));
        assert_eq!(boolean("FALSE"), Some(false));
        assert_eq!(boolean("1"), None);
        assert_eq!(number("0x10"), Some(16));
        assert_eq!(number("010"), Some(8));
        assert_eq!(number("-1"), None);
        assert_eq!(number(""), None);
    }

    #[test]
    fn realtime_leader_and_failover_settings_map() {
        let (_, t, _) = ok(
            "[legacy]\nrealtime scheduling = no\n[cluster]\nleader capability = false\n[failover]\ndisabled = true\n",
        );
        assert_eq!(t.get("cluster", "realtime_priority"), Some(&Value::Int(0)));
        assert_eq!(
            t.get("cluster", "leader_capability"),
            Some(&Value::Bool(false))
        );
        assert_eq!(t.get("failover", "disabled"), Some(&Value::Bool(true)));
        let (r, t, l) = run(
            "[failover]\ndisabled = true\n",
            Options {
                ignore_failover_disabled: true,
                ..Options::default()
            },
        );
        assert!(r.is_ok());
        assert_eq!(t.get("failover", "disabled"), None);
        assert!(
            l[0].contains("ignored (--ignore-failover-disabled"),
            "{l:?}"
        );
    }

    #[test]
    fn unknown_sections_options_and_repeats_are_ignored_as_ctdbd_does() {
        let (_, t, l) = ok(
            "x = 1\n[Cluster]\nCluster Lock = /a\nfoo = 2\n[bar]\ny = 3\n[logging]\nlog level = ERROR\nlog level = DEBUG\nnonsense\n",
        );
        assert!(
            l[0].starts_with("ctdb.conf:1: x = 1: ignored (before any section"),
            "{l:?}"
        );
        assert!(
            l[1].contains("Cluster Lock = /a: ignored (not a [cluster] option"),
            "{l:?}"
        );
        assert!(l[2].contains("foo = 2: ignored"), "{l:?}");
        assert!(l[3].contains("[bar]: ignored"), "{l:?}");
        assert!(l[4].contains("y = 3: ignored (in [bar]"), "{l:?}");
        assert!(
            l[5].contains("ctdb.conf:8: log level = ERROR: ignored (set again on line 9"),
            "{l:?}"
        );
        assert!(l[7].contains("nonsense: ignored (no '='"), "{l:?}");
        assert_eq!(t.get("logging", "level"), Some(&Value::Str("debug".into())));
    }

    #[test]
    fn what_ctdbd_refuses_is_refused_with_its_line() {
        let e = errors(
            "[cluster]\ntransport = ib\nnode address = node1\nleader timeout = soon\n[legacy]\nrealtime scheduling = maybe\n[logging]\nlog level = LOUD\nlocation =\n[cluster\n",
        );
        assert_eq!(e.len(), 7, "{e:?}");
        assert!(
            e[0].starts_with("2: [cluster] transport = ib: only tcp"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("3: [cluster] node address = node1: not an IPv4"),
            "{e:?}"
        );
        assert!(e[2].starts_with("4: "), "{e:?}");
        assert!(e[3].contains("not a boolean"), "{e:?}");
        assert!(e[4].contains("not a log level"), "{e:?}");
        assert!(e[5].contains("empty value"), "{e:?}");
        assert!(e[6].starts_with("10: "), "{e:?}");
    }

    #[test]
    fn cluster_lock_wins_over_the_deprecated_recovery_lock() {
        let (c, t, l) = ok("[cluster]\nrecovery lock = /old\ncluster lock = /new\n");
        assert_eq!(c.lock, Some((3, "cluster lock", "/new".into())));
        assert!(
            l[0].contains("recovery lock = /old: ignored (deprecated"),
            "{l:?}"
        );
        assert!(l[1].contains("cluster lock = /new -> [cluster] cluster_lock = \"/new.ipfailover\": CTDB's fcntl helper"), "{l:?}");
        assert_eq!(
            t.get("cluster", "cluster_lock"),
            Some(&Value::Str("/new.ipfailover".into()))
        );
        let (c, _, l) = ok("[cluster]\nrecovery lock = /old\n");
        assert_eq!(c.lock, Some((2, "recovery lock", "/old".into())));
        assert!(l[0].contains("deprecated name"), "{l:?}");
    }

    #[test]
    fn locks_get_their_own_name_beside_ctdbd() {
        let beside = Options {
            out: "/etc/ipfailover".into(),
            ..Options::default()
        };
        let alone = Options {
            no_ctdb: true,
            ..beside.clone()
        };
        assert_eq!(
            lock("/cfs/.ctdb/reclock", &beside).0,
            "/cfs/.ctdb/reclock.ipfailover"
        );
        assert_eq!(lock("/cfs/.ctdb/reclock", &alone).0, "/cfs/.ctdb/reclock");
        assert_eq!(
            lock(
                "!/usr/libexec/ctdb/ctdb_mutex_fcntl_helper /cfs/lock 10",
                &beside
            )
            .0,
            "!/usr/libexec/ctdb/ctdb_mutex_fcntl_helper /cfs/lock.ipfailover 10"
        );
        assert_eq!(
            lock("!/usr/libexec/ctdb/ctdb_mutex_ceph_rados_helper ceph client.admin rbd reclock 10", &beside).0,
            "!/usr/libexec/ctdb/ctdb_mutex_ceph_rados_helper ceph client.admin rbd reclock.ipfailover 10"
        );
        // A RADOS helper line too short to name an object, and an unknown
        // helper, are kept with a warning.
        for v in [
            "!/x/ctdb_mutex_ceph_rados_helper ceph",
            "!/usr/local/bin/my_lock a",
        ] {
            let (kept, note, file) = lock(v, &beside);
            assert_eq!(kept, v);
            assert!(
                note.starts_with("WARNING") && note.contains("compete"),
                "{note}"
            );
            assert!(file.is_none());
        }
    }

    #[test]
    fn the_etcd_helper_gets_a_locks_dir_of_its_own() {
        let opts = Options {
            out: "/etc/ipfailover".into(),
            etcd_config: Some("port = 2379\nlocks_dir = _site\n\n# x\n".into()),
            ..Options::default()
        };
        let (v, note, file) = lock("!/usr/libexec/ctdb/ctdb_etcd_lock -v", &opts);
        assert_eq!(
            v,
            "!/usr/libexec/ctdb/ctdb_etcd_lock -c /etc/ipfailover/ctdb_etcd_lock.conf -v"
        );
        assert!(
            note.contains("locks_dir = _site_ipfailover (ctdbd keeps _site)"),
            "{note}"
        );
        let (name, bytes) = file.expect("a configuration file");
        assert_eq!(name, ETCD_CONFIG);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "port = 2379\nlocks_dir = _site_ipfailover\n"
        );
        let (_, _, file) = lock(
            "!/usr/libexec/ctdb/ctdb_etcd_lock",
            &Options {
                etcd_config: None,
                ..opts.clone()
            },
        );
        assert_eq!(file.unwrap().1, b"locks_dir = _ctdb_ipfailover\n");
        // Its own -c, or no ctdbd: kept, with a warning.
        let (v, note, _) = lock("!/usr/libexec/ctdb/ctdb_etcd_lock -c /etc/e", &opts);
        assert_eq!(v, "!/usr/libexec/ctdb/ctdb_etcd_lock -c /etc/e");
        assert!(note.starts_with("WARNING"), "{note}");
        let (_, note, _) = lock(
            "!/usr/libexec/ctdb/ctdb_etcd_lock",
            &Options {
                no_ctdb: true,
                ..opts
            },
        );
        assert!(note.contains("ctdb pnn"), "{note}");
    }
}
