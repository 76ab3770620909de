//! `setdebug LEVEL` and `getdebug`: the log level of a node's daemons in
//! ctdb's words. ctdb's five levels map onto the daemons' tracing levels
//! one to one, so that what `setdebug` sets `getdebug` reads back:
//!
//! | ctdb | daemons |
//! |---|---|
//! | ERROR | error |
//! | WARNING | warn |
//! | NOTICE | info (the default) |
//! | INFO | debug |
//! | DEBUG | trace |

use anyhow::Result;
use transport::client::Client;
use transport::proto::control::{LogLevelReply, LogLevelRequest, LOG_LEVEL};
use transport::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, MASTERD, TRANSPORT};
use transport::proto::Address;

use crate::ctx::{block_on, Exit, Globals};
use crate::output::emit;

/// `setdebug LEVEL`.
#[derive(Debug, clap::Args)]
pub struct SetdebugArgs {
    /// ERROR, WARNING, NOTICE, INFO or DEBUG (any case), or ctdb's number.
    pub level: String,
}

/// ctdb's levels and the daemons' tracing level for each.
const LEVELS: [(&str, &str); 5] = [
    ("ERROR", "error"),
    ("WARNING", "warn"),
    ("NOTICE", "info"),
    ("INFO", "debug"),
    ("DEBUG", "trace"),
];

/// The daemons of a node, by service id and name.
const DAEMONS: [(u16, &str); 5] = [
    (TRANSPORT, "transportd"),
    (CLUSTERD, "clusterd"),
    (FAILOVERD, "failoverd"),
    (CONNTRACKD, "conntrackd"),
    (MASTERD, "masterd"),
];

/// The tracing level for a ctdb level name or number (Samba's debug
/// levels: 0 ERROR, 1 WARNING, 2-3 NOTICE, 4-5 INFO, more DEBUG).
fn tracing_level(ctdb: &str) -> Option<&'static str> {
    if let Ok(n) = ctdb.parse::<u32>() {
        let i = match n {
            0 => 0,
            1 => 1,
            2 | 3 => 2,
            4 | 5 => 3,
            _ => 4,
        };
        return Some(LEVELS[i].1);
    }
    LEVELS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(ctdb))
        .map(|(_, t)| *t)
}

/// ctdb's name for a daemon's filter; a filter with per-target parts is
/// shown as it is.
fn ctdb_level(filter: &str) -> String {
    LEVELS
        .iter()
        .find(|(_, t)| t.eq_ignore_ascii_case(filter.trim()))
        .map_or_else(|| filter.to_string(), |(c, _)| (*c).to_string())
}

/// Asks every daemon of node `pnn`; the answers of those that run.
async fn ask_all(
    ctx: &Globals,
    client: &Client,
    pnn: u32,
    set: Option<&str>,
) -> Vec<(&'static str, Result<String, String>)> {
    let req = LogLevelRequest {
        set: set.map(str::to_string),
    };
    let mut out = Vec::new();
    for (service, name) in DAEMONS {
        let r: Result<LogLevelReply, _> = client
            .request(Address::new(pnn, service), LOG_LEVEL, &req, ctx.timeout)
            .await;
        out.push((
            name,
            r.map(|r| r.level)
                .map_err(|e| crate::ctx::daemon_error(service, pnn, &e)),
        ));
    }
    out
}

/// `setdebug LEVEL`: on every daemon of the node.
///
/// # Errors
///
/// An unknown level (ctdb's message, status 1); no daemon took it.
pub fn setdebug(ctx: &Globals, args: &SetdebugArgs) -> Result<()> {
    let Some(level) = tracing_level(&args.level) else {
        eprintln!(
            "Invalid debug level '{}'. Valid levels are:\n\tERROR | WARNING | NOTICE | INFO | DEBUG",
            args.level
        );
        return Err(Exit(1).into());
    };
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnn = ctx.one_node(&client).await?;
        let answers = ask_all(ctx, &client, pnn, Some(level)).await;
        if answers.iter().all(|(_, r)| r.is_err()) {
            for (_, r) in &answers {
                if let Err(e) = r {
                    eprintln!("{e}");
                }
            }
            return Err(Exit(1).into());
        }
        Ok(())
    })
}

/// `getdebug`: the node's level in ctdb's words; when its daemons differ,
/// one `DAEMON: LEVEL` line each.
///
/// # Errors
///
/// No daemon answered.
pub fn getdebug(ctx: &Globals) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let pnn = ctx.one_node(&client).await?;
        let answers = ask_all(ctx, &client, pnn, None).await;
        let levels: Vec<(&str, String)> = answers
            .iter()
            .filter_map(|(n, r)| r.as_ref().ok().map(|l| (*n, ctdb_level(l))))
            .collect();
        let Some((_, first)) = levels.first() else {
            for (_, r) in &answers {
                if let Err(e) = r {
                    eprintln!("{e}");
                }
            }
            return Err(Exit(1).into());
        };
        if levels.iter().all(|(_, l)| l == first) {
            emit(&format!("{first}\n"))
        } else {
            let text: String = levels.iter().map(|(n, l)| format!("{n}: {l}\n")).collect();
            emit(&text)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_in_ctdbs_words() {
        for (c, t) in LEVELS {
            assert_eq!(tracing_level(c), Some(t));
            assert_eq!(tracing_level(&c.to_lowercase()), Some(t));
            assert_eq!(ctdb_level(t), c);
        }
        assert_eq!(tracing_level("0"), Some("error"));
        assert_eq!(tracing_level("3"), Some("info"));
        assert_eq!(tracing_level("10"), Some("trace"));
        assert_eq!(tracing_level("LOUD"), None);
        assert_eq!(ctdb_level("transport=trace,info"), "transport=trace,info");
    }
}
