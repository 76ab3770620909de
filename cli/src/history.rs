//! `ipfailover history [-n PNN|all] [--since DURATION] [-X|--json]`: the
//! failover history failoverd keeps on each node (failoverd/src/history.rs,
//! docs/observability.md) — takeover runs the node led, addresses it took,
//! released or dropped — newest first, one line each, nodes merged.
//!
//! A take or release records the stamp of the run that ordered it; its
//! reasons come from that run's entry in the leader's history, which is
//! read too when it is not among the nodes asked (the reason stays `-`
//! when the leader cannot say: it restarted, or its history moved on).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use transport::msg::failover::{History, HistoryEntry, HistoryKind, HistoryMove, GET_HISTORY};
use transport::proto::service::FAILOVERD;

use crate::ctx::{block_on, Exit, Globals};
use crate::output::{emit, json_text, machine, Format};

/// Arguments of `ipfailover history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only entries of the last DURATION: a number with a unit, s, m, h or
    /// d, or several (90s, 15m, 2h, 1d, 1h30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
}

/// Parses `--since`: one or more NUMBER UNIT pairs (`ms`, `s`, `m`, `h`,
/// `d`), such as `90s`, `15m` or `1h30m`.
///
/// # Errors
///
/// A message naming the bad part and giving examples.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HELP: &str = "use a number and a unit (s, m, h, d), such as 30s, 15m, 2h, 1d or 1h30m";
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("empty duration: {HELP}"));
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{text:?}: expected a number at {rest:?}: {HELP}"));
        }
        let (num, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let ms_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{text:?}: {num} has no unit: {HELP}")),
            other => return Err(format!("{text:?}: unknown unit {other:?}: {HELP}")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{text:?}: {num} is too large"))?;
        total = n
            .checked_mul(ms_per)
            .and_then(|v| total.checked_add(v))
            .filter(|&v| v <= 100 * 365 * 86_400_000)
            .ok_or_else(|| format!("{text:?}: longer than 100 years"))?;
        rest = after;
    }
    if total == 0 {
        return Err(format!("{text:?}: the duration must be more than 0"));
    }
    Ok(Duration::from_millis(total))
}

/// One line of the output: an entry of node `pnn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The node whose history it is.
    pub pnn: u32,
    /// The entry (reasons filled in from the leader's run).
    pub entry: HistoryEntry,
}

fn kind_word(k: HistoryKind) -> &'static str {
    match k {
        HistoryKind::Run => "run",
        HistoryKind::Take => "take",
        HistoryKind::Release => "release",
        HistoryKind::Drop => "drop",
    }
}

fn node(p: Option<u32>) -> String {
    p.map_or_else(|| "none".to_string(), |p| p.to_string())
}

/// `ADDR FROM->TO` of a move (`none` for nobody).
fn move_text(m: &HistoryMove) -> String {
    format!("{} {}->{}", m.addr, node(m.from), node(m.to))
}

/// The moves of an entry, the first two in full and then a count.
fn moves_text(moves: &[HistoryMove]) -> String {
    if moves.is_empty() {
        return "-".to_string();
    }
    let mut out: Vec<String> = moves.iter().take(2).map(move_text).collect();
    if moves.len() > 2 {
        out.push(format!("+{} more", moves.len() - 2));
    }
    out.join(", ")
}

/// A duration in microseconds for a person: `0.4ms`, `512ms`, `1.27s`.
#[must_use]
pub fn human_us(us: Option<u64>) -> String {
    match us {
        None => "-".to_string(),
        Some(us) if us < 10_000 => format!("{:.1}ms", us as f64 / 1e3),
        Some(us) if us < 1_000_000 => format!("{}ms", us / 1_000),
        Some(us) => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in local time.
#[must_use]
pub fn local_time(unix_ms: u64) -> String {
    let secs = libc::time_t::try_from(unix_ms / 1000).unwrap_or(0);
    // SAFETY: `tm` is a plain C struct for which all-zero is valid;
    // localtime_r writes only into it and reads `secs`; both live for the
    // call. A null return (an impossible time) leaves it zeroed.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return "?".to_string();
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        unix_ms % 1000
    )
}

fn reason_text(e: &HistoryEntry) -> &str {
    if e.reason.is_empty() {
        "-"
    } else {
        &e.reason
    }
}

/// The columns of the human table.
const COLUMNS: [&str; 13] = [
    "TIME", "NODE", "KIND", "REASON", "MOVES", "DETECT", "LEASE", "PLAN", "RELEASE", "TAKE",
    "ANNOUNCE", "TOTAL", "TICKLES",
];

/// The human table: one line per entry, columns padded.
#[must_use]
pub fn human(lines: &[Line]) -> String {
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let e = &l.entry;
            let mut total = human_us(Some(e.total_us));
            if !e.ok {
                total.push_str(" FAILED");
            }
            vec![
                local_time(e.at_unix_ms),
                l.pnn.to_string(),
                kind_word(e.kind).to_string(),
                reason_text(e).to_string(),
                moves_text(&e.moves),
                human_us(e.detection_us),
                human_us(e.lease_wait_us),
                human_us(e.plan_us),
                human_us(e.release_us),
                human_us(e.take_us),
                human_us(e.announce_us),
                total,
                e.tickles.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = COLUMNS.iter().map(|c| c.len()).collect();
    for r in &rows {
        for (w, f) in widths.iter_mut().zip(r) {
            *w = (*w).max(f.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |fields: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (f, w) in fields.zip(&widths) {
            let _ = write!(s, "{f:<w$}  ");
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut COLUMNS.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    let errors: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            l.entry
                .error
                .as_ref()
                .map(|e| format!("node {} entry {}: {e}", l.pnn, l.entry.seq))
        })
        .collect();
    if !errors.is_empty() {
        out.push_str("\nFailures:\n");
        for e in errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

/// `-X`: one row per entry, times in milliseconds since the epoch and
/// durations in microseconds; moves as `ADDR:FROM>TO:REASON` separated by
/// spaces (empty FROM or TO: nobody).
#[must_use]
pub fn machine_rows(lines: &[Line], sep: char) -> String {
    let header = [
        "Time",
        "PNN",
        "Kind",
        "Seq",
        "Generation",
        "Run",
        "Leader",
        "Reason",
        "Moves",
        "Detection",
        "LeaseWait",
        "Plan",
        "Release",
        "Take",
        "Announce",
        "Total",
        "Tickles",
        "Resets",
        "Ok",
        "Error",
    ];
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let e = &l.entry;
            let moves: Vec<String> = e
                .moves
                .iter()
                .map(|m| {
                    format!(
                        "{}:{}>{}:{}",
                        m.addr,
                        m.from.map_or_else(String::new, |p| p.to_string()),
                        m.to.map_or_else(String::new, |p| p.to_string()),
                        m.reason
                    )
                })
                .collect();
            vec![
                e.at_unix_ms.to_string(),
                l.pnn.to_string(),
                kind_word(e.kind).to_string(),
                e.seq.to_string(),
                e.generation.to_string(),
                e.run.to_string(),
                opt(e.leader.map(u64::from)),
                e.reason.clone(),
                moves.join(" "),
                opt(e.detection_us),
                opt(e.lease_wait_us),
                opt(e.plan_us),
                opt(e.release_us),
                opt(e.take_us),
                opt(e.announce_us),
                e.total_us.to_string(),
                e.tickles.to_string(),
                e.resets.to_string(),
                u8::from(e.ok).to_string(),
                e.error.clone().unwrap_or_default().replace(sep, " "),
            ]
        })
        .collect();
    machine(&header, &rows, sep)
}

/// `--json`: `{"entries": [...], "errors": [...]}`, durations in
/// microseconds.
#[must_use]
pub fn json(lines: &[Line], errors: &[(u32, String)]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let e = &l.entry;
            serde_json::json!({
                "pnn": l.pnn,
                "seq": e.seq,
                "kind": kind_word(e.kind),
                "at_unix_ms": e.at_unix_ms,
                "generation": e.generation,
                "run": e.run,
                "leader": e.leader,
                "reason": e.reason,
                "moves": e.moves.iter().map(|m| serde_json::json!({
                    "address": m.addr.to_string(),
                    "from": m.from,
                    "to": m.to,
                    "reason": m.reason,
                })).collect::<Vec<_>>(),
                "detection_us": e.detection_us,
                "lease_wait_us": e.lease_wait_us,
                "plan_us": e.plan_us,
                "release_us": e.release_us,
                "take_us": e.take_us,
                "announce_us": e.announce_us,
                "total_us": e.total_us,
                "tickles": e.tickles,
                "resets": e.resets,
                "ok": e.ok,
                "error": e.error,
            })
        })
        .collect();
    let errors: Vec<serde_json::Value> = errors
        .iter()
        .map(|(pnn, e)| serde_json::json!({ "pnn": pnn, "error": e }))
        .collect();
    serde_json::json!({ "entries": entries, "errors": errors })
}

/// Merges the histories: reasons of takes and releases from their runs
/// (in any history given), entries since `since_ms`, newest first.
#[must_use]
pub fn merge(histories: &[History], shown: &BTreeSet<u32>, since_ms: Option<u64>) -> Vec<Line> {
    let mut runs: BTreeMap<(u32, u64), BTreeMap<IpAddr, String>> = BTreeMap::new();
    for h in histories {
        for e in h.entries.iter().filter(|e| e.kind == HistoryKind::Run) {
            runs.insert(
                (h.pnn, e.run),
                e.moves.iter().map(|m| (m.addr, m.reason.clone())).collect(),
            );
        }
    }
    let mut lines: Vec<Line> = histories
        .iter()
        .filter(|h| shown.contains(&h.pnn))
        .flat_map(|h| {
            h.entries.iter().map(|e| Line {
                pnn: h.pnn,
                entry: e.clone(),
            })
        })
        .filter(|l| since_ms.is_none_or(|s| l.entry.at_unix_ms >= s))
        .collect();
    for l in &mut lines {
        let e = &mut l.entry;
        if e.kind == HistoryKind::Run || !e.reason.is_empty() {
            continue;
        }
        if let Some(reasons) = e.leader.and_then(|p| runs.get(&(p, e.run))) {
            e.fill_reasons(reasons);
        }
    }
    lines.sort_by(|a, b| {
        (b.entry.at_unix_ms, b.pnn, b.entry.seq).cmp(&(a.entry.at_unix_ms, a.pnn, a.entry.seq))
    });
    lines
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `history` on this node or the `-n` nodes.
///
/// # Errors
///
/// No transportd; [`Exit`]`(1)` when a node gave no history (after
/// printing the others'); the only node asked gave none.
pub fn run(ctx: &Globals, args: &HistoryArgs) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let targets = ctx.targets(&client).await?;
        let pnns = targets.pnns();
        let answers: Vec<(u32, Result<History, String>)> = ctx
            .ask_each(&client, &pnns, FAILOVERD, GET_HISTORY, &())
            .await?;
        let mut histories = Vec::new();
        let mut errors = Vec::new();
        for (pnn, r) in answers {
            match r {
                Ok(h) => histories.push(h),
                Err(e) => errors.push((pnn, e)),
            }
        }
        if histories.is_empty() {
            if let Some((_, e)) = errors.first() {
                anyhow::bail!("{e}");
            }
        }
        // The leaders of the takes and releases shown, for their reasons.
        let have: BTreeSet<u32> = histories.iter().map(|h| h.pnn).collect();
        let leaders: Vec<u32> = histories
            .iter()
            .flat_map(|h| h.entries.iter())
            .filter(|e| e.kind != HistoryKind::Run)
            .filter_map(|e| e.leader)
            .filter(|p| !have.contains(p))
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        if !leaders.is_empty() {
            let extra: Vec<(u32, Result<History, String>)> = ctx
                .ask_each(&client, &leaders, FAILOVERD, GET_HISTORY, &())
                .await?;
            histories.extend(extra.into_iter().filter_map(|(_, r)| r.ok()));
        }
        let since_ms = args
            .since
            .map(|d| now_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        let lines = merge(&histories, &have, since_ms);
        let text = match ctx.format {
            Format::Human => human(&lines),
            Format::Machine(sep) => machine_rows(&lines, sep),
            Format::Json => json_text(&json(&lines, &errors)),
        };
        emit(&text)?;
        for (_, e) in &errors {
            eprintln!("{e}");
        }
        if !errors.is_empty() {
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, last])
    }

    fn entry(kind: HistoryKind, seq: u64, at: u64, run: u64) -> HistoryEntry {
        let mut e = HistoryEntry::new(kind, at);
        e.seq = seq;
        e.run = run;
        e.leader = Some(0);
        e
    }

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        let e = parse_duration("5x").unwrap_err();
        assert!(e.contains("unknown unit \"x\"") && e.contains("15m"), "{e}");
        let e = parse_duration("10").unwrap_err();
        assert!(e.contains("no unit"), "{e}");
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("-5m")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("0s").unwrap_err().contains("more than 0"));
        assert!(parse_duration("99999999999d")
            .unwrap_err()
            .contains("100 years"));
    }

    #[test]
    fn merge_fills_reasons_from_the_leaders_run_and_sorts_newest_first() {
        let mut run = entry(HistoryKind::Run, 3, 2_000, 77);
        run.reason = "node death".into();
        run.moves = vec![HistoryMove {
            addr: ip(1),
            from: Some(1),
            to: Some(2),
            reason: "node death".into(),
        }];
        let mut take = entry(HistoryKind::Take, 5, 2_010, 77);
        take.moves = vec![HistoryMove {
            addr: ip(1),
            from: None,
            to: Some(2),
            reason: String::new(),
        }];
        let old = entry(HistoryKind::Drop, 4, 10, 0);
        let leader = History {
            pnn: 0,
            capacity: 100,
            recorded: 3,
            entries: vec![run],
        };
        let taker = History {
            pnn: 2,
            capacity: 100,
            recorded: 5,
            entries: vec![take, old],
        };
        // Only node 2 asked for; node 0's history read for the reasons.
        let lines = merge(&[taker.clone(), leader.clone()], &BTreeSet::from([2]), None);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].entry.reason, "node death");
        assert_eq!(lines[0].entry.moves[0].reason, "node death");
        assert_eq!(lines[1].entry.kind, HistoryKind::Drop);
        // --since leaves the old one out; both nodes: the run first by time.
        let lines = merge(&[taker, leader], &BTreeSet::from([0, 2]), Some(1_000));
        let got: Vec<(u32, HistoryKind)> = lines.iter().map(|l| (l.pnn, l.entry.kind)).collect();
        assert_eq!(got, [(2, HistoryKind::Take), (0, HistoryKind::Run)]);
        let text = human(&lines);
        assert!(text.starts_with("TIME"), "{text}");
        assert!(text.contains("203.0.113.1 1->2"), "{text}");
        assert!(text.contains("node death"), "{text}");
        let x = machine_rows(&lines, '|');
        assert!(x.lines().nth(1).unwrap().contains("|take|5|"), "{x}");
        assert!(x.contains("203.0.113.1:1>2:node death"), "{x}");
        let j = json(&lines, &[(1, "node 1 is not connected".into())]);
        assert_eq!(j["entries"][1]["moves"][0]["from"], 1);
        assert_eq!(j["errors"][0]["pnn"], 1);
    }

    #[test]
    fn durations_print_for_people() {
        assert_eq!(human_us(None), "-");
        assert_eq!(human_us(Some(420)), "0.4ms");
        assert_eq!(human_us(Some(512_300)), "512ms");
        assert_eq!(human_us(Some(1_270_000)), "1.27s");
    }
}
