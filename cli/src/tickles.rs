//! `ipfailover gettickles ADDRESS [PORT]`, `addtickle`, `deltickle`: the
//! tracked connections of a public address, read from and registered with
//! conntrackd, in CTDB's formats.
//!
//! As in CTDB (and its NFS scripts, which feed `ss` output to them), a
//! connection is written *client* first: `SRC` is the client, `DST` the
//! public address. `addtickle`/`deltickle` take one pair as arguments or,
//! without arguments, one pair per line on stdin.

use std::fmt::Write as _;
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context, Result};

use transport::msg::conntrack::{
    get_connections, GetConnections, GetConnectionsError, TrackedConnection, ADD_CONNECTIONS,
    REMOVE_CONNECTIONS,
};
use transport::proto::service::CONNTRACKD;
use transport::proto::{Address, LOCAL};

use crate::ctx::{block_on, daemon_error, Globals};
use crate::output::{Nodes, Report};

/// Arguments of `ipfailover gettickles`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The public address.
    pub address: IpAddr,
    /// Only connections to this port of it.
    pub port: Option<u16>,
}

/// Arguments of `ipfailover addtickle` / `deltickle`.
#[derive(Debug, clap::Args)]
pub struct PairArgs {
    /// The client, `IP:PORT` (`[IPv6]:PORT` or `IPv6:PORT`); without
    /// arguments, pairs are read from stdin, one `CLIENT SERVER` per line.
    pub client: Option<String>,
    /// The public address and port, `IP:PORT`.
    pub server: Option<String>,
}

/// Parses `IP:PORT`, `[IPv6]:PORT` or `IPv6:PORT` (CTDB accepts the last).
///
/// # Errors
///
/// A message naming the text.
pub fn parse_endpoint(text: &str) -> Result<SocketAddr> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (ip, port) = text
        .rsplit_once(':')
        .with_context(|| format!("invalid address '{text}': expected IP:PORT"))?;
    let ip: IpAddr = ip
        .parse()
        .with_context(|| format!("invalid address '{text}': '{ip}' is not an IP address"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("invalid address '{text}': '{port}' is not a port"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Parses the `CLIENT SERVER` lines of stdin (blank lines skipped).
///
/// # Errors
///
/// The first bad line, with its number.
pub fn parse_pairs(text: &str) -> Result<Vec<TrackedConnection>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [] => {}
            [c, s] => out.push(TrackedConnection {
                client: parse_endpoint(c).with_context(|| format!("line {}", n + 1))?,
                server: parse_endpoint(s).with_context(|| format!("line {}", n + 1))?,
            }),
            _ => bail!(
                "line {}: expected 'CLIENT-IP:PORT SERVER-IP:PORT', got '{line}'",
                n + 1
            ),
        }
    }
    Ok(out)
}

/// `gettickles`' output for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicklesReport {
    /// The public address asked about.
    pub address: IpAddr,
    /// Its connections, client first.
    pub conns: Vec<TrackedConnection>,
}

impl Report for TicklesReport {
    fn human(&self) -> String {
        let mut s = format!(
            "Connections for IP: {}\nNum connections: {}\n",
            self.address,
            self.conns.len()
        );
        for c in &self.conns {
            let _ = writeln!(s, "SRC: {}   DST: {}", c.client, c.server);
        }
        s
    }

    fn header(&self) -> Vec<&'static str> {
        vec!["Source IP", "Port", "Destination IP", "Port"]
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.conns
            .iter()
            .map(|c| {
                vec![
                    c.client.ip().to_string(),
                    c.client.port().to_string(),
                    c.server.ip().to_string(),
                    c.server.port().to_string(),
                ]
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "address": self.address,
            "connections": self.conns.iter().map(|c| serde_json::json!({
                "client": c.client.to_string(),
                "server": c.server.to_string(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)] // the tests' shorthand for one node's output
/// Renders the connections of `address` as `ctdb gettickles` does.
pub fn render(
    address: IpAddr,
    conns: &[TrackedConnection],
    format: crate::output::Format,
) -> String {
    crate::output::render_one(
        &TicklesReport {
            address,
            conns: conns.to_vec(),
        },
        format,
    )
}

/// `gettickles` (`-n PNN|list|all` as every reading command).
///
/// # Errors
///
/// No transportd or conntrackd, or a refused request.
pub fn get(ctx: &Globals, args: &GetArgs) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let targets = ctx.targets(&client).await?;
        let query = GetConnections {
            address: args.address,
            port: args.port,
        };
        // Paged (an address may have more connections than one message);
        // every node is asked at once.
        let fetches = targets.pnns().into_iter().map(|pnn| {
            let client = &client;
            async move {
                let r = get_connections(client, Address::new(pnn, CONNTRACKD), query, ctx.timeout)
                    .await
                    .map_err(|e| match e {
                        GetConnectionsError::Request { source, .. } => {
                            daemon_error(CONNTRACKD, pnn, &source)
                        }
                        other => other.to_string(),
                    });
                (pnn, r)
            }
        });
        let results: Vec<(u32, Result<Vec<TrackedConnection>, String>)> =
            futures::future::join_all(fetches).await;
        let reports = results
            .into_iter()
            .map(|(pnn, r)| {
                (
                    pnn,
                    r.map(|conns| TicklesReport {
                        address: args.address,
                        conns,
                    }),
                )
            })
            .collect();
        ctx.print_reports(&targets, reports)
    })
}

/// The nodes `addtickle`/`deltickle` register with.
fn targets(ctx: &Globals) -> Result<Vec<u32>> {
    match &ctx.nodes {
        Nodes::Local => Ok(vec![LOCAL]),
        Nodes::List(l) => Ok(l.clone()),
        Nodes::All => bail!("-n all is not supported here: name the node(s) with -n PNN[,PNN]"),
    }
}

/// `addtickle` (`add` true) and `deltickle`.
///
/// # Errors
///
/// Bad pairs, no transportd or conntrackd, or a refused registration (an
/// address this node does not host).
pub fn change(ctx: &Globals, args: &PairArgs, add: bool) -> Result<()> {
    let pairs = match (&args.client, &args.server) {
        (Some(c), Some(s)) => vec![TrackedConnection {
            client: parse_endpoint(c)?,
            server: parse_endpoint(s)?,
        }],
        (None, None) => {
            let mut text = String::new();
            for line in std::io::stdin().lock().lines() {
                text.push_str(&line.context("reading stdin")?);
                text.push('\n');
            }
            parse_pairs(&text)?
        }
        _ => bail!("give both CLIENT-IP:PORT and SERVER-IP:PORT, or pairs on stdin"),
    };
    if pairs.is_empty() {
        return Ok(());
    }
    let opcode = if add {
        ADD_CONNECTIONS
    } else {
        REMOVE_CONNECTIONS
    };
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        if let Nodes::List(l) = &ctx.nodes {
            ctx.check_nodes(&client, l).await?;
        }
        for pnn in targets(ctx)? {
            let () = ctx
                .ask(&client, pnn, CONNTRACKD, opcode, &pairs)
                .await
                .with_context(|| {
                    format!(
                        "cannot {} the connection(s)",
                        if add { "add" } else { "remove" }
                    )
                })?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Format;

    fn conns() -> Vec<TrackedConnection> {
        vec![
            TrackedConnection {
                client: "198.51.100.7:40000".parse().unwrap(),
                server: "192.0.2.50:445".parse().unwrap(),
            },
            TrackedConnection {
                client: "198.51.100.8:40001".parse().unwrap(),
                server: "192.0.2.50:2049".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn human_form_is_ctdbs() {
        let a: IpAddr = "192.0.2.50".parse().unwrap();
        assert_eq!(
            render(a, &conns(), Format::Human),
            "Connections for IP: 192.0.2.50\n\
             Num connections: 2\n\
             SRC: 198.51.100.7:40000   DST: 192.0.2.50:445\n\
             SRC: 198.51.100.8:40001   DST: 192.0.2.50:2049\n"
        );
        assert_eq!(
            render(a, &[], Format::Human),
            "Connections for IP: 192.0.2.50\nNum connections: 0\n"
        );
    }

    #[test]
    fn machine_form_is_ctdbs() {
        let a: IpAddr = "192.0.2.50".parse().unwrap();
        assert_eq!(
            render(a, &conns(), Format::Machine('|')),
            "|Source IP|Port|Destination IP|Port|\n\
             |198.51.100.7|40000|192.0.2.50|445|\n\
             |198.51.100.8|40001|192.0.2.50|2049|\n"
        );
        assert_eq!(
            render(a, &[], Format::Machine(':')),
            ":Source IP:Port:Destination IP:Port:\n"
        );
    }

    #[test]
    fn ipv6_endpoints() {
        let a: IpAddr = "2001:db8::50".parse().unwrap();
        let c = vec![TrackedConnection {
            client: parse_endpoint("2001:db8::7:40000").unwrap(),
            server: parse_endpoint("[2001:db8::50]:445").unwrap(),
        }];
        assert_eq!(
            render(a, &c, Format::Human),
            "Connections for IP: 2001:db8::50\nNum connections: 1\n\
             SRC: [2001:db8::7]:40000   DST: [2001:db8::50]:445\n"
        );
        assert_eq!(
            render(a, &c, Format::Machine('|')),
            "|Source IP|Port|Destination IP|Port|\n|2001:db8::7|40000|2001:db8::50|445|\n"
        );
    }

    #[test]
    fn pairs_from_stdin() {
        let p = parse_pairs("198.51.100.7:40000 192.0.2.50:445\n\n  198.51.100.8:1 192.0.2.50:2\n")
            .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].client, "198.51.100.8:1".parse().unwrap());
        let e = parse_pairs("198.51.100.7:40000\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = parse_pairs("a b\n").unwrap_err();
        assert!(format!("{e:#}").contains("invalid address 'a'"), "{e:#}");
        assert!(parse_endpoint("192.0.2.1:99999").is_err());
    }
}
