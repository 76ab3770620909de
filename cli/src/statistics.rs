//! `ipfailover statistics`: the counters of every daemon of a node, as each
//! answers the common `STATISTICS` control, like `ctdb statistics` (which
//! prints ctdbd's one set of counters; ipfailover's are per daemon).
//!
//! Human form, one block per daemon that answered:
//! ```text
//! transportd
//!     local_in                                  120
//!     peer_in                                   340
//! clusterd
//!     requests_sent                              12
//! ```
//! `-X`: `|Daemon|Counter|Value|` rows (with `PNN` first for several
//! nodes); `--json`: `{"daemons": [{"daemon": .., "counters": {..}}]}`, a
//! daemon that gave no answer with `"error"` instead. A daemon that does
//! not answer is named on stderr and the command exits 1 after printing
//! the others; a node where none answers is reported like any unreachable
//! node.

use std::fmt::Write as _;

use anyhow::Result;
use transport::client::Client;
use transport::proto::control::{Statistics, STATISTICS, STATISTICS_RESET};
use transport::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, MASTERD, TRANSPORT};
use transport::proto::Address;

use crate::ctx::{block_on, daemon_error, Exit, Globals};
use crate::output::Report;

/// The daemons asked, in masterd's start order, masterd last.
const DAEMONS: [(u16, &str); 5] = [
    (TRANSPORT, "transportd"),
    (CLUSTERD, "clusterd"),
    (CONNTRACKD, "conntrackd"),
    (FAILOVERD, "failoverd"),
    (MASTERD, "masterd"),
];

/// Width of the counter-name column (the longest names today are ~25).
const NAME_WIDTH: usize = 32;

/// `statistics`' output for one node: each daemon's counters or the
/// reason it gave none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatisticsReport {
    /// `(daemon, counters or why not)`, in [`DAEMONS`] order.
    pub daemons: Vec<(&'static str, Result<Statistics, String>)>,
}

impl StatisticsReport {
    fn answered(&self) -> impl Iterator<Item = (&'static str, &Statistics)> + '_ {
        self.daemons
            .iter()
            .filter_map(|(d, r)| r.as_ref().ok().map(|s| (*d, s)))
    }

    /// The reasons of the daemons that did not answer.
    pub fn errors(&self) -> impl Iterator<Item = &str> + '_ {
        self.daemons
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(String::as_str))
    }
}

impl Report for StatisticsReport {
    fn human(&self) -> String {
        let mut out = String::new();
        for (daemon, s) in self.answered() {
            let _ = writeln!(out, "{daemon}");
            for (name, v) in &s.counters {
                let _ = writeln!(out, "    {name:<NAME_WIDTH$} {v:>12}");
            }
        }
        out
    }

    fn header(&self) -> Vec<&'static str> {
        vec!["Daemon", "Counter", "Value"]
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.answered()
            .flat_map(|(daemon, s)| {
                s.counters
                    .iter()
                    .map(move |(n, v)| vec![daemon.to_string(), n.clone(), v.to_string()])
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        let daemons: Vec<serde_json::Value> = self
            .daemons
            .iter()
            .map(|(daemon, r)| match r {
                Ok(s) => {
                    let counters: serde_json::Map<String, serde_json::Value> = s
                        .counters
                        .iter()
                        .map(|(n, v)| (n.clone(), serde_json::Value::from(*v)))
                        .collect();
                    serde_json::json!({ "daemon": daemon, "counters": counters })
                }
                Err(e) => serde_json::json!({ "daemon": daemon, "error": e }),
            })
            .collect();
        serde_json::json!({ "daemons": daemons })
    }
}

/// Asks every daemon of node `pnn` at once; `Err` (the first reason) when
/// none answers.
async fn node(ctx: &Globals, client: &Client, pnn: u32) -> Result<StatisticsReport, String> {
    let asks = DAEMONS.iter().map(|&(service, name)| async move {
        let r: Result<Statistics, _> = client
            .request(Address::new(pnn, service), STATISTICS, &(), ctx.timeout)
            .await;
        (name, r.map_err(|e| daemon_error(service, pnn, &e)))
    });
    let daemons = futures::future::join_all(asks).await;
    if daemons.iter().all(|(_, r)| r.is_err()) {
        let first = daemons
            .into_iter()
            .find_map(|(_, r)| r.err())
            .unwrap_or_default();
        return Err(first);
    }
    Ok(StatisticsReport { daemons })
}

/// `statistics` on this node or the `-n` nodes.
///
/// # Errors
///
/// No transportd; one node and no daemon answering; [`Exit`]`(1)` when a
/// daemon gave no answer (after printing the others).
pub fn run(ctx: &Globals) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let targets = ctx.targets(&client).await?;
        let pnns = targets.pnns();
        let results: Vec<(u32, Result<StatisticsReport, String>)> =
            futures::future::join_all(pnns.iter().map(|&pnn| {
                let client = &client;
                async move { (pnn, node(ctx, client, pnn).await) }
            }))
            .await;
        let partial: Vec<String> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|r| r.errors().map(str::to_string))
            .collect();
        ctx.print_reports(&targets, results)?;
        for e in &partial {
            eprintln!("{e}");
        }
        if !partial.is_empty() {
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

/// `statisticsreset` (ctdb's): every daemon of this node or of the `-n`
/// nodes starts its counters again from 0 (levels such as `clients` keep
/// their value). No output; a daemon that cannot be reset is named on
/// stderr and the command exits 1 after asking the others.
///
/// # Errors
///
/// No transportd; a node that does not exist or (alone) is not
/// connected; [`Exit`]`(1)` when a daemon was not reset.
pub fn reset(ctx: &Globals) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnns = ctx.targets(&client).await?.pnns();
        let asks = pnns.iter().flat_map(|&pnn| {
            let client = &client;
            DAEMONS.iter().map(move |&(service, _)| async move {
                client
                    .request::<(), ()>(
                        Address::new(pnn, service),
                        STATISTICS_RESET,
                        &(),
                        ctx.timeout,
                    )
                    .await
                    .map_err(|e| daemon_error(service, pnn, &e))
            })
        });
        // A node that is not connected fails for each of its daemons
        // with the same reason: say it once.
        let mut failed: Vec<String> = Vec::new();
        for e in futures::future::join_all(asks)
            .await
            .into_iter()
            .filter_map(Result::err)
        {
            if !failed.contains(&e) {
                failed.push(e);
            }
        }
        for e in &failed {
            eprintln!("{e}");
        }
        if !failed.is_empty() {
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{render_one, Format};

    fn report() -> StatisticsReport {
        StatisticsReport {
            daemons: vec![
                (
                    "transportd",
                    Ok(Statistics {
                        counters: vec![("local_in".into(), 120), ("peer_in".into(), 7)],
                    }),
                ),
                (
                    "failoverd",
                    Err("failoverd is not running on node 1".into()),
                ),
                (
                    "masterd",
                    Ok(Statistics {
                        counters: vec![("controls_answered".into(), 3)],
                    }),
                ),
            ],
        }
    }

    #[test]
    fn human_form_groups_counters_per_daemon() {
        assert_eq!(
            render_one(&report(), Format::Human),
            "transportd\n    local_in                                  120\n    peer_in                                     7\nmasterd\n    controls_answered                           3\n"
        );
        assert_eq!(
            report().errors().collect::<Vec<_>>(),
            ["failoverd is not running on node 1"]
        );
    }

    #[test]
    fn machine_and_json_forms() {
        assert_eq!(
            render_one(&report(), Format::Machine('|')),
            "|Daemon|Counter|Value|\n|transportd|local_in|120|\n|transportd|peer_in|7|\n|masterd|controls_answered|3|\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_one(&report(), Format::Json)).unwrap();
        assert_eq!(v["daemons"][0]["counters"]["peer_in"], 7);
        assert_eq!(
            v["daemons"][1]["error"],
            "failoverd is not running on node 1"
        );
    }
}
