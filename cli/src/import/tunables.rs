//! `ctdb.tunables`: `Name=value` lines (ctdbd's INI reader, no sections),
//! names as ctdbd knows them (any case), values as `strtoul(.., 0)`. Each is
//! mapped to `ipfailover.toml` or reported as ignored with the reason.
//! What ctdbd refuses (an unknown name, a bad value, a section, a line
//! without a value) is refused here. Pure.

use super::conf::number;
use super::ini::Item;
use super::report::{Line, Outcome, Toml, Value};
use super::Problem;

/// Why a group of tunables has no ipfailover equivalent.
const RECOVERY: &str = "ipfailover has no recovery daemon and no database recovery: the leader is chosen by heartbeats and leases, docs/clusterd.md";
const DATABASE: &str = "a database tunable: ipfailover has no databases";
const MONITOR: &str = "ipfailover runs no monitor event: [cluster] health_command runs every health_interval_ms, 5 s by default";
const BANS: &str = "ipfailover never bans a node by itself; `ipfailover ban SECONDS` does";
const DIAGNOSTICS: &str = "a diagnostic of ctdbd: no ipfailover equivalent";
const QUEUES: &str = "ctdbd's message queues: transportd bounds its own queues";
const OBSOLETE: &str =
    "obsolete in CTDB, which does not use it; ctdbd 4.17 even refuses to start with it";

/// How one tunable is handled.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// `[tunables] NAME`, the same name.
    Same,
    /// `[tunables] NAME`, 0 or 1 (CTDB takes any non-zero as 1).
    Flag,
    /// Seconds to `[section] key` in milliseconds (0 has no equivalent).
    Millis(&'static str, &'static str),
    /// KeepaliveInterval / KeepaliveLimit.
    Keepalive,
    /// Ignored for this reason.
    Ignore(&'static str),
}

/// ctdbd's tunables (`ctdb/common/tunable.c`, 4.17 to master) and their rule.
const TUNABLES: &[(&str, Rule)] = &[
    ("MaxRedirectCount", Rule::Ignore(OBSOLETE)),
    ("SeqnumInterval", Rule::Ignore(DATABASE)),
    ("ControlTimeout", Rule::Ignore("ipfailover's requests have their own time limits: `ipfailover -t`, [failover] release_timeout_ms")),
    ("TraverseTimeout", Rule::Ignore(DATABASE)),
    ("KeepaliveInterval", Rule::Keepalive),
    ("KeepaliveLimit", Rule::Keepalive),
    ("RecoverTimeout", Rule::Ignore(RECOVERY)),
    ("RecoverInterval", Rule::Ignore(RECOVERY)),
    ("ElectionTimeout", Rule::Ignore(RECOVERY)),
    ("TakeoverTimeout", Rule::Millis("failover", "release_timeout_ms")),
    ("MonitorInterval", Rule::Ignore(MONITOR)),
    ("TickleUpdateInterval", Rule::Ignore("conntrackd sends each connection change at once and a full sync every [conntrack] sync_interval_ms, 5 s by default")),
    ("EventScriptTimeout", Rule::Millis("failover", "hook_timeout_ms")),
    ("MonitorTimeoutCount", Rule::Ignore(MONITOR)),
    ("EventScriptUnhealthyOnTimeout", Rule::Ignore(OBSOLETE)),
    ("RecoveryGracePeriod", Rule::Ignore(RECOVERY)),
    ("RecoveryBanPeriod", Rule::Ignore(BANS)),
    ("DatabaseHashSize", Rule::Ignore(DATABASE)),
    ("DatabaseMaxDead", Rule::Ignore(DATABASE)),
    ("RerecoveryTimeout", Rule::Ignore(RECOVERY)),
    ("EnableBans", Rule::Ignore(BANS)),
    ("DeterministicIPs", Rule::Ignore("obsolete in CTDB: IPAllocAlgorithm replaces it")),
    ("LCP2PublicIPs", Rule::Ignore("obsolete in CTDB: IPAllocAlgorithm replaces it")),
    ("ReclockPingPeriod", Rule::Ignore(OBSOLETE)),
    ("NoIPFailback", Rule::Flag),
    ("DisableIPFailover", Rule::Ignore("obsolete in CTDB: ctdb.conf's [failover] disabled replaces it")),
    ("VerboseMemoryNames", Rule::Ignore(DIAGNOSTICS)),
    ("RecdPingTimeout", Rule::Ignore(RECOVERY)),
    ("RecdFailCount", Rule::Ignore(RECOVERY)),
    ("LogLatencyMs", Rule::Ignore(DIAGNOSTICS)),
    ("RecLockLatencyMs", Rule::Ignore(DIAGNOSTICS)),
    ("RecoveryDropAllIPs", Rule::Ignore("a node that loses the cluster drops its addresses itself when its lease ends, within [cluster] dead_after_ms, not minutes later")),
    ("VerifyRecoveryLock", Rule::Ignore(OBSOLETE)),
    ("VacuumInterval", Rule::Ignore(DATABASE)),
    ("VacuumMaxRunTime", Rule::Ignore(DATABASE)),
    ("RepackLimit", Rule::Ignore(DATABASE)),
    ("VacuumLimit", Rule::Ignore(OBSOLETE)),
    ("VacuumFastPathCount", Rule::Ignore(DATABASE)),
    ("MaxQueueDropMsg", Rule::Ignore(QUEUES)),
    ("AllowUnhealthyDBRead", Rule::Ignore(DATABASE)),
    ("StatHistoryInterval", Rule::Ignore(DIAGNOSTICS)),
    ("DeferredAttachTO", Rule::Ignore(DATABASE)),
    ("AllowClientDBAttach", Rule::Ignore(DATABASE)),
    ("RecoverPDBBySeqNum", Rule::Ignore(OBSOLETE)),
    ("DeferredRebalanceOnNodeAdd", Rule::Ignore(OBSOLETE)),
    ("FetchCollapse", Rule::Ignore(DATABASE)),
    ("HopcountMakeSticky", Rule::Ignore(DATABASE)),
    ("StickyDuration", Rule::Ignore(DATABASE)),
    ("StickyPindown", Rule::Ignore(DATABASE)),
    ("NoIPTakeover", Rule::Flag),
    ("DBRecordCountWarn", Rule::Ignore(DATABASE)),
    ("DBRecordSizeWarn", Rule::Ignore(DATABASE)),
    ("DBSizeWarn", Rule::Ignore(DATABASE)),
    ("PullDBPreallocation", Rule::Ignore(DATABASE)),
    ("NoIPHostOnAllDisabled", Rule::Ignore("obsolete in CTDB 4.x and in ipfailover: unhealthy nodes never host addresses")),
    ("Samba3AvoidDeadlocks", Rule::Ignore(OBSOLETE)),
    ("TDBMutexEnabled", Rule::Ignore(OBSOLETE)),
    ("LockProcessesPerDB", Rule::Ignore(DATABASE)),
    ("RecBufferSizeLimit", Rule::Ignore(RECOVERY)),
    ("QueueBufferSize", Rule::Ignore(QUEUES)),
    ("IPAllocAlgorithm", Rule::Same),
    ("AllowMixedVersions", Rule::Ignore("ctdbd's rolling-upgrade switch: no ipfailover equivalent")),
];

/// Maps the items of `ctdb.tunables` (named `label` in the report).
///
/// # Errors
///
/// Every line ctdbd would refuse, each as a [`Problem`].
pub fn map(
    items: &[Item],
    label: &str,
    toml: &mut Toml,
    lines: &mut Vec<Line>,
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut keepalive: [Option<u64>; 2] = [None, None];
    let mut keepalive_lines = Vec::new();
    for item in items {
        let (line, key, value) = match item {
            Item::Option { line, key, value } => (*line, key, value),
            Item::Section { line, name } => {
                problems.push(Problem {
                    line: *line,
                    what: format!("[{name}]: ctdb.tunables has no sections (ctdbd refuses it)"),
                });
                continue;
            }
            Item::NoEquals { line, text } | Item::Invalid { line, text, .. } => {
                problems.push(Problem {
                    line: *line,
                    what: format!("{text:?}: expected NAME=VALUE (ctdbd refuses it)"),
                });
                continue;
            }
        };
        let Some(&(name, rule)) = TUNABLES.iter().find(|(n, _)| n.eq_ignore_ascii_case(key)) else {
            problems.push(Problem {
                line,
                what: format!("{key}: not a CTDB tunable (ctdbd refuses it)"),
            });
            continue;
        };
        let Some(n) = number(value).filter(|n| u32::try_from(*n).is_ok()) else {
            problems.push(Problem {
                line,
                what: format!(
                    "{key}={value}: not a number from 0 to 4294967295 (ctdbd refuses it)"
                ),
            });
            continue;
        };
        let at = format!("{label}:{line}");
        let what = format!("{key}={value}");
        let source = format!("{label}:{line}: {what}");
        let out = match rule {
            Rule::Ignore(why) => Line::ignored(at, what, why),
            Rule::Same => {
                let (v, note) = if n > 2 {
                    (2, " (CTDB uses LCP2 for any value but 0 and 1)")
                } else {
                    (n, "")
                };
                toml.set("tunables", name, Value::Int(v), source);
                Line::mapped(at, what, format!("[tunables] {name} = {v}{note}"))
            }
            Rule::Flag => {
                let v = u64::from(n != 0);
                let note = if n > 1 {
                    " (CTDB takes any value but 0 as 1)"
                } else {
                    ""
                };
                toml.set("tunables", name, Value::Int(v), source);
                Line::mapped(at, what, format!("[tunables] {name} = {v}{note}"))
            }
            Rule::Millis(section, key) => {
                if n == 0 {
                    Line::ignored(
                        at,
                        what,
                        format!("0 has no equivalent: [{section}] {key} keeps its default"),
                    )
                } else {
                    let v = Value::Int(n * 1000);
                    let d = Toml::describe(section, key, &v);
                    toml.set(section, key, v, source);
                    Line::mapped(at, what, d)
                }
            }
            Rule::Keepalive => {
                keepalive[usize::from(name == "KeepaliveLimit")] = Some(n);
                // Completed below, when both values are known.
                keepalive_lines.push(lines.len());
                Line::ignored(at, what, "")
            }
        };
        lines.push(out);
    }
    if !keepalive_lines.is_empty() {
        let interval = keepalive[0].unwrap_or(5);
        let limit = keepalive[1].unwrap_or(5);
        let why = format!(
            "CTDB declares a silent node dead after KeepaliveInterval x KeepaliveLimit = {interval} s x {limit} = {} s; ipfailover's heartbeats do in 500 ms by default, set by [cluster] profile and dead_after_ms: set dead_after_ms yourself only if you need slower detection",
            interval * limit
        );
        for index in keepalive_lines {
            if let Some(l) = lines.get_mut(index) {
                l.outcome = Outcome::Ignored(why.clone());
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::ini;

    fn run(text: &str) -> (Result<(), Vec<Problem>>, Toml, Vec<String>) {
        let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
        let mut toml = Toml::default();
        let mut report = Vec::new();
        let r = map(&ini::parse(&lines), "ctdb.tunables", &mut toml, &mut report);
        (r, toml, report.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn allocation_tunables_keep_their_names() {
        let (r, t, l) = run("NoIPFailback=1\nnoiptakeover = 0\nIPAllocAlgorithm=7\n");
        assert!(r.is_ok());
        assert_eq!(t.get("tunables", "NoIPFailback"), Some(&Value::Int(1)));
        assert_eq!(t.get("tunables", "NoIPTakeover"), Some(&Value::Int(0)));
        assert_eq!(t.get("tunables", "IPAllocAlgorithm"), Some(&Value::Int(2)));
        assert!(l[2].contains("CTDB uses LCP2"), "{l:?}");
        let (_, t, l) = run("NoIPFailback=0x2\n");
        assert_eq!(t.get("tunables", "NoIPFailback"), Some(&Value::Int(1)));
        assert!(l[0].contains("any value but 0"), "{l:?}");
    }

    #[test]
    fn timeouts_become_milliseconds() {
        let (_, t, l) = run("EventScriptTimeout=60\nTakeoverTimeout=20\n");
        assert_eq!(
            t.get("failover", "hook_timeout_ms"),
            Some(&Value::Int(60_000))
        );
        assert_eq!(
            t.get("failover", "release_timeout_ms"),
            Some(&Value::Int(20_000))
        );
        assert_eq!(
            l[0],
            "ctdb.tunables:1: EventScriptTimeout=60 -> [failover] hook_timeout_ms = 60000"
        );
        let (_, t, l) = run("EventScriptTimeout=0\n");
        assert_eq!(t.get("failover", "hook_timeout_ms"), None);
        assert!(l[0].contains("0 has no equivalent"), "{l:?}");
    }

    #[test]
    fn keepalive_and_recovery_are_ignored_with_the_reason() {
        let (_, t, l) = run("KeepaliveInterval=2\nRecoverTimeout=30\nKeepaliveLimit=3\n");
        assert_eq!(t, Toml::default());
        assert_eq!(l.len(), 3);
        assert!(
            l[0].starts_with("ctdb.tunables:1: KeepaliveInterval=2: ignored (CTDB declares"),
            "{l:?}"
        );
        assert!(l[0].contains("2 s x 3 = 6 s"), "{l:?}");
        assert!(
            l[1].starts_with(
                "ctdb.tunables:2: RecoverTimeout=30: ignored (ipfailover has no recovery daemon"
            ),
            "{l:?}"
        );
        assert!(
            l[2].starts_with("ctdb.tunables:3: KeepaliveLimit=3: ignored (CTDB declares"),
            "{l:?}"
        );
    }

    #[test]
    fn what_ctdbd_refuses_is_refused() {
        let (r, _, _) = run("NoIPFailbak=1\nNoIPFailback=yes\nNoIPFailback\n[x]\nNoIPFailback=-1\nIPAllocAlgorithm=4294967296\n");
        let e: Vec<String> = r
            .unwrap_err()
            .iter()
            .map(|p| format!("{}: {}", p.line, p.what))
            .collect();
        assert_eq!(e.len(), 6, "{e:?}");
        assert_eq!(
            e[0],
            "1: NoIPFailbak: not a CTDB tunable (ctdbd refuses it)"
        );
        assert!(
            e[1].starts_with("2: NoIPFailback=yes: not a number"),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("3: \"NoIPFailback\": expected NAME=VALUE"),
            "{e:?}"
        );
        assert!(e[3].starts_with("4: [x]"), "{e:?}");
    }
}
