//! `listvars`, `getvar`, `setvar`: failoverd's allocation tunables under
//! CTDB's names (`NoIPFailback`, `NoIPTakeover`, `IPAllocAlgorithm`).
//!
//! As `ctdb`: names match case-insensitively, a name that is not in the
//! node's list is `No such tunable NAME` on stdout with status 1 (CTDB's
//! obsolete tunables are in no list), values are printed `%-26s = %u`.
//! Unlike `ctdb`, `setvar` without `-n` sets the value on every connected
//! node: the leader's values steer each takeover run and the leader can
//! change at any time. Values last until failoverd restarts (CTDB keeps
//! them until ctdbd restarts); `[tunables]` in ipfailover.toml makes them
//! permanent.

use anyhow::{anyhow, bail, Result};
use transport::client::Client;
use transport::msg::failover::{
    SetTunable, SetTunableOutcome, TunableList, GET_TUNABLES, SET_TUNABLE,
};
use transport::proto::service::FAILOVERD;

use crate::ctx::{block_on, Exit, Globals};
use crate::output::{emit, Nodes, Report};

/// `getvar NAME`.
#[derive(Debug, clap::Args)]
pub struct GetvarArgs {
    /// The tunable (case-insensitive).
    pub name: String,
}

/// `setvar NAME VALUE`.
#[derive(Debug, clap::Args)]
pub struct SetvarArgs {
    /// The tunable (case-insensitive).
    pub name: String,
    /// The value: a non-negative integer (`0x` hex accepted, as ctdb).
    pub value: String,
}

/// One node's tunables, or one of them (`getvar`, as the user spelled it).
struct VarsReport {
    list: TunableList,
    only: Option<String>,
}

impl VarsReport {
    fn shown(&self) -> Vec<(String, u32)> {
        self.list
            .tunables
            .iter()
            .filter_map(|t| match &self.only {
                None => Some((t.name.clone(), t.value)),
                Some(o) if o.eq_ignore_ascii_case(&t.name) => Some((o.clone(), t.value)),
                Some(_) => None,
            })
            .collect()
    }
}

impl Report for VarsReport {
    fn human(&self) -> String {
        self.shown()
            .iter()
            .map(|(n, v)| format!("{n:<26} = {v}\n"))
            .collect()
    }

    fn header(&self) -> Vec<&'static str> {
        vec!["Name", "Value"]
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.shown()
            .into_iter()
            .map(|(n, v)| vec![n, v.to_string()])
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.shown()
                .into_iter()
                .map(|(n, v)| (n, serde_json::Value::from(v)))
                .collect(),
        )
    }
}

/// ctdb's value syntax (`strtoul` base 0): decimal, `0x` hex, `0` octal.
fn parse_value(s: &str) -> Option<u32> {
    let t = s.trim();
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse().ok()
    }
}

/// `listvars` (`only` = None) or `getvar NAME`.
///
/// # Errors
///
/// No transportd or failoverd; `No such tunable` (status 1).
pub fn show(ctx: &Globals, only: Option<&GetvarArgs>) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let targets = ctx.targets(&client).await?;
        let results: Vec<(u32, Result<TunableList, String>)> = ctx
            .ask_each(&client, &targets.pnns(), FAILOVERD, GET_TUNABLES, &())
            .await?;
        if let Some(a) = only {
            let known = results.iter().any(|(_, r)| {
                r.as_ref().is_ok_and(|l| {
                    l.tunables
                        .iter()
                        .any(|t| t.name.eq_ignore_ascii_case(&a.name))
                })
            });
            if !known && results.iter().any(|(_, r)| r.is_ok()) {
                emit(&format!("No such tunable {}\n", a.name))?;
                return Err(Exit(1).into());
            }
        }
        let reports = results
            .into_iter()
            .map(|(pnn, r)| {
                (
                    pnn,
                    r.map(|list| VarsReport {
                        list,
                        only: only.map(|a| a.name.clone()),
                    }),
                )
            })
            .collect();
        ctx.print_reports(&targets, reports)
    })
}

/// `setvar NAME VALUE`: on every connected node (or the `-n` nodes).
///
/// # Errors
///
/// No transportd or failoverd; `No such tunable`; a bad value; a node
/// that refuses.
pub fn set(ctx: &Globals, args: &SetvarArgs) -> Result<()> {
    let Some(value) = parse_value(&args.value) else {
        bail!(
            "Invalid value {} for {}: not a number",
            args.value,
            args.name
        );
    };
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let (targets, skipped) = set_targets(ctx, &client).await?;
        // ctdb checks the name against the node's list first.
        let first = targets.first().copied().unwrap_or(client.pnn());
        let list: TunableList = ctx
            .ask(&client, first, FAILOVERD, GET_TUNABLES, &())
            .await
            .map_err(|e| anyhow!("Failed to get list of variables from node {first}: {e:#}"))?;
        if !list
            .tunables
            .iter()
            .any(|t| t.name.eq_ignore_ascii_case(&args.name))
        {
            emit(&format!("No such tunable {}\n", args.name))?;
            return Err(Exit(1).into());
        }
        let req = SetTunable {
            name: args.name.clone(),
            value,
        };
        let mut failed = false;
        for pnn in targets {
            let r: Result<SetTunableOutcome> =
                ctx.ask(&client, pnn, FAILOVERD, SET_TUNABLE, &req).await;
            match r {
                Ok(SetTunableOutcome::Set) => {}
                Ok(SetTunableOutcome::Obsolete) => {
                    eprintln!("Setting obsolete tunable variable '{}'", args.name);
                }
                Err(e) => {
                    eprintln!("node {pnn}: {e:#}");
                    failed = true;
                }
            }
        }
        for pnn in skipped {
            eprintln!("node {pnn} is not connected: {} not set there", args.name);
        }
        if failed {
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

/// The nodes `setvar` sets: the `-n` list, else every connected node;
/// and the nodes left out because they are not connected.
async fn set_targets(ctx: &Globals, client: &Client) -> Result<(Vec<u32>, Vec<u32>)> {
    match &ctx.nodes {
        Nodes::List(l) => {
            ctx.check_nodes(client, l).await?;
            Ok((l.clone(), Vec::new()))
        }
        Nodes::Local | Nodes::All => {
            let peers = ctx.peers(client).await?;
            let mut up: Vec<u32> = peers
                .iter()
                .filter(|p| p.connected)
                .map(|p| p.pnn)
                .collect();
            up.push(client.pnn());
            up.sort_unstable();
            up.dedup();
            let down = peers
                .iter()
                .filter(|p| !p.connected && p.pnn != client.pnn())
                .map(|p| p.pnn)
                .collect();
            Ok((up, down))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_strtoul_base_0() {
        assert_eq!(parse_value("1"), Some(1));
        assert_eq!(parse_value("0"), Some(0));
        assert_eq!(parse_value("0x2"), Some(2));
        assert_eq!(parse_value("010"), Some(8));
        assert_eq!(parse_value("-1"), None);
        assert_eq!(parse_value("one"), None);
    }
}
