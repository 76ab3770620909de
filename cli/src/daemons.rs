//! `ipfailover daemons`: what masterd reports about the daemons it runs on
//! a node (state, pid, restarts, last exit), from masterd's status service
//! (`GET_STATUS` to `(PNN, MASTERD)`). CTDB has no such command; the forms
//! follow its conventions (`-X` rows, `-n PNN|all`).
//!
//! Human form:
//! ```text
//! masterd on node 0: pid 4242, multi-process, ready, up 0d 01:02:03
//! Daemon      State            PID   Restarts  Last exit
//! transportd  running          4243  0         -
//! clusterd    restarting       -     2         signal: 9 (SIGKILL)
//! ```

use std::fmt::Write as _;

use anyhow::Result;
use transport::msg::master::{DaemonState, DaemonStatus, MasterStatus, GET_STATUS};
use transport::proto::service::MASTERD;

use crate::ctx::{block_on, Exit, Globals};
use crate::output::Report;

/// `daemons`' output for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonsReport {
    /// The node.
    pub pnn: u32,
    /// masterd's answer.
    pub status: MasterStatus,
}

/// `D HH:MM:SS` from milliseconds, as CTDB's `uptime` shows durations.
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{}d {:02}:{:02}:{:02}",
        s / 86_400,
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

fn pid(d: &DaemonStatus) -> String {
    d.pid.map_or_else(|| "-".to_string(), |p| p.to_string())
}

impl Report for DaemonsReport {
    fn human(&self) -> String {
        let s = &self.status;
        let mut out = format!(
            "masterd on node {}: pid {}, {}, {}, up {}\n",
            self.pnn,
            s.pid,
            s.model,
            if s.ready { "ready" } else { "starting" },
            uptime(s.uptime_ms)
        );
        let name_w = s
            .daemons
            .iter()
            .map(|d| d.name.len())
            .max()
            .unwrap_or(0)
            .max("Daemon".len());
        let _ = writeln!(
            out,
            "{:<name_w$}  {:<15}  {:<7}  {:<8}  Last exit",
            "Daemon", "State", "PID", "Restarts"
        );
        for d in &s.daemons {
            let _ = writeln!(
                out,
                "{:<name_w$}  {:<15}  {:<7}  {:<8}  {}",
                d.name,
                d.state.to_string(),
                pid(d),
                d.restarts,
                d.last_exit.as_deref().unwrap_or("-")
            );
        }
        out
    }

    fn header(&self) -> Vec<&'static str> {
        vec!["Daemon", "State", "PID", "Restarts", "LastExit"]
    }

    fn rows(&self) -> Vec<Vec<String>> {
        let s = &self.status;
        let mut rows = vec![vec![
            "masterd".to_string(),
            if s.ready { "ready" } else { "starting" }.to_string(),
            s.pid.to_string(),
            "0".to_string(),
            String::new(),
        ]];
        rows.extend(s.daemons.iter().map(|d| {
            vec![
                d.name.clone(),
                d.state.to_string(),
                d.pid.map(|p| p.to_string()).unwrap_or_default(),
                d.restarts.to_string(),
                d.last_exit.clone().unwrap_or_default(),
            ]
        }));
        rows
    }

    fn json(&self) -> serde_json::Value {
        let s = &self.status;
        serde_json::json!({
            "pid": s.pid,
            "model": s.model.to_string(),
            "ready": s.ready,
            "uptime_ms": s.uptime_ms,
            "daemons": s.daemons.iter().map(|d| serde_json::json!({
                "name": d.name,
                "state": d.state.to_string(),
                "pid": d.pid,
                "restarts": d.restarts,
                "last_exit": d.last_exit,
            })).collect::<Vec<_>>(),
        })
    }
}

/// `daemons` on this node or the `-n` nodes; exit status 1 when a daemon
/// shown is not running.
///
/// # Errors
///
/// No transportd, or (one node) masterd not answering.
pub fn run(ctx: &Globals) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let targets = ctx.targets(&client).await?;
        let pnns = targets.pnns();
        let results: Vec<(u32, Result<MasterStatus, String>)> = ctx
            .ask_each(&client, &pnns, MASTERD, GET_STATUS, &())
            .await?;
        // Like nodestatus: a script can tell from the exit status alone.
        let down = results.iter().any(|(_, r)| {
            r.as_ref()
                .is_ok_and(|s| s.daemons.iter().any(|d| d.state != DaemonState::Running))
        });
        let reports = results
            .into_iter()
            .map(|(pnn, r)| (pnn, r.map(|status| DaemonsReport { pnn, status })))
            .collect();
        ctx.print_reports(&targets, reports)?;
        if down {
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{render_one, Format};
    use transport::msg::master::{DaemonState, Model};

    fn report() -> DaemonsReport {
        DaemonsReport {
            pnn: 1,
            status: MasterStatus {
                pid: 4242,
                model: Model::MultiProcess,
                ready: true,
                uptime_ms: 90_061_000,
                daemons: vec![
                    DaemonStatus {
                        name: "transportd".into(),
                        state: DaemonState::Running,
                        pid: Some(4243),
                        restarts: 0,
                        last_exit: None,
                    },
                    DaemonStatus {
                        name: "clusterd".into(),
                        state: DaemonState::Restarting,
                        pid: None,
                        restarts: 2,
                        last_exit: Some("signal: 9 (SIGKILL)".into()),
                    },
                ],
            },
        }
    }

    #[test]
    fn human_form_is_a_table() {
        assert_eq!(
            render_one(&report(), Format::Human),
            "masterd on node 1: pid 4242, multi-process, ready, up 1d 01:01:01\n\
             Daemon      State            PID      Restarts  Last exit\n\
             transportd  running          4243     0         -\n\
             clusterd    restarting       -        2         signal: 9 (SIGKILL)\n"
        );
    }

    #[test]
    fn machine_form_has_masterd_first() {
        assert_eq!(
            render_one(&report(), Format::Machine('|')),
            "|Daemon|State|PID|Restarts|LastExit|\n\
             |masterd|ready|4242|0||\n\
             |transportd|running|4243|0||\n\
             |clusterd|restarting||2|signal: 9 (SIGKILL)|\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_one(&report(), Format::Json)).unwrap();
        assert_eq!(v["daemons"][1]["state"], "restarting");
        assert_eq!(v["daemons"][1]["pid"], serde_json::Value::Null);
    }
}
