//! Public-IP commands, with CTDB's names, arguments and output: `ip [all]
//! [-v]`, `ipinfo`, `ifaces`, `setifacelink`, `addip`, `delip`, `moveip`,
//! `reloadips`, `ipreallocate` (alias `sync`), `gratarp`, `tickle`,
//! `killtcp`.
//!
//! Every command talks to failoverd (service FAILOVERD) on the node chosen
//! with `-n` (default: this node); `ipreallocate` and `moveip` go to this
//! node's failoverd, which forwards them to the leader. The rendering
//! functions are pure and tested against CTDB's expected outputs
//! (ctdb/tests/UNIT/tool).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Context, Result};

use transport::client::Client;
use transport::msg::failover::{
    AddIp, ConnectionPair, DelIp, Gratarp, KillTcp, MoveIp, PublicIp, PublicIps, ReloadSummary,
    SetIfaceLink, ADD_IP, DEL_IP, GET_PUBLIC_IPS, GRATARP, IPREALLOCATE, KILLTCP, MOVE_IP,
    RELOAD_IPS, SET_IFACE_LINK, TICKLE,
};
use transport::proto::control::{PeerList, LIST_PEERS};
use transport::proto::service::{FAILOVERD, TRANSPORT};
use transport::proto::Address;

use crate::ctx::{block_on, Ctx};
use crate::output::{machine, parse_nodes, Format, Nodes};

/// The public-IP commands (flattened into the top-level command list).
#[derive(Debug, clap::Subcommand)]
pub enum IpCommand {
    /// Show the public IPs of a node, or of all nodes, with their owners.
    Ip {
        /// `all`: the IPs of every node.
        all: Option<String>,
        /// Also show the interfaces.
        #[arg(short = 'v')]
        verbose: bool,
    },
    /// Show one public IP of a node in detail.
    Ipinfo {
        /// The address.
        ip: IpAddr,
    },
    /// Show a node's public interfaces and their link state.
    Ifaces,
    /// Mark an interface up or down for failover.
    Setifacelink {
        /// The interface.
        iface: String,
        /// `up` or `down`.
        state: String,
    },
    /// Add a public IP to a node's list at run time.
    Addip {
        /// ADDRESS/PREFIX.
        ip_mask: String,
        /// Interface(s), comma separated.
        iface: String,
    },
    /// Remove a public IP from a node's list (released first if hosted).
    Delip {
        /// The address.
        ip: IpAddr,
    },
    /// Move a public IP to a node.
    Moveip {
        /// The address.
        ip: IpAddr,
        /// The node that must host it.
        pnn: u32,
    },
    /// Re-read public_addresses on nodes and apply the differences.
    Reloadips {
        /// `all` or a list of PNNs (default: every node).
        nodes: Option<String>,
    },
    /// Run a takeover run now and wait for it.
    #[command(alias = "sync")]
    Ipreallocate,
    /// Send gratuitous ARPs (or an unsolicited NA) for an IP now.
    Gratarp {
        /// The address.
        ip: IpAddr,
        /// The interface.
        iface: String,
    },
    /// Send a tickle ACK to a client (pairs on stdin when none given).
    Tickle {
        /// The client: IP:PORT.
        src: Option<SocketAddr>,
        /// The public end: IP:PORT.
        dst: Option<SocketAddr>,
    },
    /// Reset TCP connections (pairs on stdin when none given).
    Killtcp {
        /// The interface of the public address.
        iface: String,
        /// The client: IP:PORT.
        src: Option<SocketAddr>,
        /// The public end: IP:PORT.
        dst: Option<SocketAddr>,
    },
}

/// Runs a public-IP command.
///
/// # Errors
///
/// No transportd or failoverd, a refused request, bad arguments.
pub fn run(ctx: &Ctx, cmd: &IpCommand) -> Result<()> {
    block_on(dispatch(ctx, cmd))
}

fn failoverd(pnn: u32) -> Address {
    Address::new(pnn, FAILOVERD)
}

/// The single node a per-node command addresses.
fn one_node(ctx: &Ctx, client: &Client) -> Result<u32> {
    match &ctx.nodes {
        Nodes::Local => Ok(client.pnn()),
        Nodes::List(l) if l.len() == 1 => Ok(l[0]),
        _ => bail!("this command takes a single node (-n PNN)"),
    }
}

async fn connected_nodes(ctx: &Ctx, client: &Client) -> Result<Vec<u32>> {
    let list: PeerList = client
        .request(Address::local(TRANSPORT), LIST_PEERS, &(), ctx.timeout)
        .await
        .context("listing the nodes")?;
    let mut all: Vec<u32> = list
        .peers
        .iter()
        .filter(|p| p.connected)
        .map(|p| p.pnn)
        .collect();
    all.push(client.pnn());
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

async fn get_ips(ctx: &Ctx, client: &Client, pnn: u32) -> Result<PublicIps> {
    client
        .request(failoverd(pnn), GET_PUBLIC_IPS, &(), ctx.timeout)
        .await
        .with_context(|| format!("asking failoverd on node {pnn} for its public IPs"))
}

async fn dispatch(ctx: &Ctx, cmd: &IpCommand) -> Result<()> {
    let (client, _incoming) = ctx.connect().await?;
    match cmd {
        IpCommand::Ip { all, verbose } => {
            let all = match all.as_deref() {
                None => false,
                Some("all") => true,
                Some(other) => bail!("ip: unexpected argument '{other}' (expected 'all')"),
            };
            let (title, rows) = if all || ctx.nodes == Nodes::All {
                let mut reports = Vec::new();
                for pnn in connected_nodes(ctx, &client).await? {
                    if let Ok(r) = get_ips(ctx, &client, pnn).await {
                        reports.push(r);
                    }
                }
                ("Public IPs on ALL nodes".to_string(), merge_all(&reports))
            } else {
                let pnn = one_node(ctx, &client)?;
                let r = get_ips(ctx, &client, pnn).await?;
                (format!("Public IPs on node {pnn}"), node_rows(&r))
            };
            print!("{}", render_ip(&title, &rows, *verbose, ctx.format));
        }
        IpCommand::Ipinfo { ip } => {
            let pnn = one_node(ctx, &client)?;
            let r = get_ips(ctx, &client, pnn).await?;
            print!("{}", render_ipinfo(&r, *ip)?);
        }
        IpCommand::Ifaces => {
            let pnn = one_node(ctx, &client)?;
            let r = get_ips(ctx, &client, pnn).await?;
            print!("{}", render_ifaces(&r, ctx.format));
        }
        IpCommand::Setifacelink { iface, state } => {
            let up = match state.as_str() {
                "up" => true,
                "down" => false,
                other => bail!("setifacelink: state must be 'up' or 'down', not '{other}'"),
            };
            let pnn = one_node(ctx, &client)?;
            let req = SetIfaceLink {
                iface: iface.clone(),
                up,
            };
            client
                .request::<_, ()>(failoverd(pnn), SET_IFACE_LINK, &req, ctx.timeout)
                .await
                .map_err(remote_message)?;
        }
        IpCommand::Addip { ip_mask, iface } => {
            let (addr, prefix) = parse_ip_mask(ip_mask)?;
            let pnn = one_node(ctx, &client)?;
            let req = AddIp {
                addr,
                prefix,
                ifaces: iface.split(',').map(str::to_string).collect(),
            };
            client
                .request::<_, ()>(failoverd(pnn), ADD_IP, &req, ctx.timeout)
                .await
                .map_err(remote_message)?;
        }
        IpCommand::Delip { ip } => {
            let pnn = one_node(ctx, &client)?;
            client
                .request::<_, ()>(failoverd(pnn), DEL_IP, &DelIp { addr: *ip }, ctx.timeout)
                .await
                .map_err(remote_message)?;
        }
        IpCommand::Moveip { ip, pnn } => {
            let req = MoveIp {
                addr: *ip,
                pnn: *pnn,
            };
            client
                .request::<_, ()>(failoverd(client.pnn()), MOVE_IP, &req, ctx.timeout)
                .await
                .map_err(|e| anyhow!("Failed to move IP {ip} to node {pnn}: {}", remote(&e)))?;
        }
        IpCommand::Reloadips { nodes } => {
            let targets = match nodes.as_deref().map(parse_nodes) {
                None | Some(Ok(Nodes::All)) => connected_nodes(ctx, &client).await?,
                Some(Ok(Nodes::List(l))) => l,
                Some(Ok(Nodes::Local)) => vec![client.pnn()],
                Some(Err(e)) => bail!(e),
            };
            for pnn in targets {
                let _: ReloadSummary = client
                    .request(failoverd(pnn), RELOAD_IPS, &(), ctx.timeout)
                    .await
                    .map_err(|e| anyhow!("reloadips on node {pnn}: {}", remote(&e)))?;
            }
            ipreallocate(ctx, &client).await?;
        }
        IpCommand::Ipreallocate => ipreallocate(ctx, &client).await?,
        IpCommand::Gratarp { ip, iface } => {
            let pnn = one_node(ctx, &client)?;
            let req = Gratarp {
                addr: *ip,
                iface: iface.clone(),
            };
            client
                .request::<_, ()>(failoverd(pnn), GRATARP, &req, ctx.timeout)
                .await
                .map_err(remote_message)?;
        }
        IpCommand::Tickle { src, dst } => {
            let pairs = pairs_from(*src, *dst)?;
            let pnn = one_node(ctx, &client)?;
            client
                .request::<_, ()>(failoverd(pnn), TICKLE, &pairs, ctx.timeout)
                .await
                .map_err(remote_message)?;
        }
        IpCommand::Killtcp { iface, src, dst } => {
            let pairs = pairs_from(*src, *dst)?;
            let pnn = one_node(ctx, &client)?;
            let req = KillTcp {
                iface: iface.clone(),
                connections: pairs,
            };
            let _: u32 = client
                .request(failoverd(pnn), KILLTCP, &req, ctx.timeout)
                .await
                .map_err(remote_message)?;
        }
    }
    Ok(())
}

async fn ipreallocate(ctx: &Ctx, client: &Client) -> Result<()> {
    let _: u64 = client
        .request(failoverd(client.pnn()), IPREALLOCATE, &(), ctx.timeout)
        .await
        .map_err(|e| anyhow!("ipreallocate failed: {}", remote(&e)))?;
    Ok(())
}

/// The operator's message of a refused request (the daemon's text), or the
/// whole error otherwise.
fn remote(e: &transport::client::ClientError) -> String {
    match e {
        transport::client::ClientError::Remote { error, .. } => error.message.clone(),
        other => other.to_string(),
    }
}

fn remote_message(e: transport::client::ClientError) -> anyhow::Error {
    anyhow!(remote(&e))
}

fn parse_ip_mask(s: &str) -> Result<(IpAddr, u8)> {
    let (a, m) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("addip: '{s}' is not ADDRESS/PREFIX"))?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| anyhow!("addip: '{a}' is not an IP address"))?;
    let prefix: u8 = m
        .parse()
        .map_err(|_| anyhow!("addip: '{m}' is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        bail!("addip: prefix /{prefix} is too long for {addr}");
    }
    Ok((addr, prefix))
}

/// `SRC DST` from the command line, or `SRC DST` lines on stdin.
fn pairs_from(src: Option<SocketAddr>, dst: Option<SocketAddr>) -> Result<Vec<ConnectionPair>> {
    match (src, dst) {
        (Some(client), Some(server)) => Ok(vec![ConnectionPair { client, server }]),
        (None, None) => {
            let mut out = Vec::new();
            for (i, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line.context("reading stdin")?;
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut f = line.split_whitespace();
                let (Some(a), Some(b), None) = (f.next(), f.next(), f.next()) else {
                    bail!("stdin line {}: expected 'IP:PORT IP:PORT'", i + 1);
                };
                let client = a
                    .parse()
                    .map_err(|_| anyhow!("stdin line {}: bad address '{a}'", i + 1))?;
                let server = b
                    .parse()
                    .map_err(|_| anyhow!("stdin line {}: bad address '{b}'", i + 1))?;
                out.push(ConnectionPair { client, server });
            }
            Ok(out)
        }
        _ => bail!("give both SRC and DST, or pairs on stdin"),
    }
}

/// One line of `ip` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRow {
    /// The address.
    pub addr: IpAddr,
    /// Its owner, -1 for none.
    pub pnn: i64,
    /// The interface it is on (on its owner).
    pub active: Option<String>,
    /// Usable interfaces.
    pub available: Vec<String>,
    /// Listed interfaces.
    pub configured: Vec<String>,
}

fn pnn_i64(p: Option<u32>) -> i64 {
    p.map_or(-1, i64::from)
}

/// The rows of one node's `ip`: its known addresses with its belief.
pub fn node_rows(r: &PublicIps) -> Vec<IpRow> {
    let mut rows: Vec<IpRow> = r
        .ips
        .iter()
        .filter(|i| !i.configured.is_empty())
        .map(|i| IpRow {
            addr: i.addr,
            pnn: pnn_i64(i.owner),
            active: i.active.clone(),
            available: i.available.clone(),
            configured: i.configured.clone(),
        })
        .collect();
    rows.sort_by_key(|r| r.addr);
    rows
}

/// `ip all`: every node's addresses, the owner from the node that hosts it
/// (else any node's belief), the interfaces from the owner's view.
pub fn merge_all(reports: &[PublicIps]) -> Vec<IpRow> {
    let mut rows: BTreeMap<IpAddr, IpRow> = BTreeMap::new();
    let mut from_owner: BTreeMap<IpAddr, bool> = BTreeMap::new();
    for r in reports {
        for i in r.ips.iter().filter(|i| !i.configured.is_empty()) {
            let is_owner = i.active.is_some();
            let row = rows.entry(i.addr).or_insert_with(|| IpRow {
                addr: i.addr,
                pnn: -1,
                active: None,
                available: Vec::new(),
                configured: Vec::new(),
            });
            let had_owner = from_owner.get(&i.addr).copied().unwrap_or(false);
            if is_owner && !had_owner {
                row.pnn = i64::from(r.pnn);
                row.active = i.active.clone();
                row.available = i.available.clone();
                row.configured = i.configured.clone();
                from_owner.insert(i.addr, true);
            } else if !had_owner && row.pnn == -1 {
                row.pnn = pnn_i64(i.owner);
            }
        }
    }
    rows.into_values().collect()
}

/// Renders `ip` as CTDB does (human, `-v`, `-X`).
pub fn render_ip(title: &str, rows: &[IpRow], verbose: bool, format: Format) -> String {
    match format {
        Format::Machine(sep) => {
            let mut header = vec!["Public IP", "Node"];
            if verbose {
                header.extend([
                    "ActiveInterfaces",
                    "AvailableInterfaces",
                    "ConfiguredInterfaces",
                ]);
            }
            let lines: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let mut v = vec![r.addr.to_string(), r.pnn.to_string()];
                    if verbose {
                        v.push(r.active.clone().unwrap_or_default());
                        v.push(r.available.join(","));
                        v.push(r.configured.join(","));
                    }
                    v
                })
                .collect();
            machine(&header, &lines, sep)
        }
        Format::Json => {
            let mut out = String::from("[");
            for (i, r) in rows.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!(
                    "{{\"address\":\"{}\",\"node\":{},\"active\":\"{}\",\"available\":\"{}\",\"configured\":\"{}\"}}",
                    r.addr,
                    r.pnn,
                    r.active.clone().unwrap_or_default(),
                    r.available.join(","),
                    r.configured.join(",")
                ));
            }
            out.push_str("]\n");
            out
        }
        Format::Human => {
            let mut out = format!("{title}\n");
            for r in rows {
                if verbose {
                    out.push_str(&format!(
                        "{} node[{}] active[{}] available[{}] configured[{}]\n",
                        r.addr,
                        r.pnn,
                        r.active.clone().unwrap_or_default(),
                        r.available.join(","),
                        r.configured.join(",")
                    ));
                } else {
                    out.push_str(&format!("{} {}\n", r.addr, r.pnn));
                }
            }
            out
        }
    }
}

/// Renders `ipinfo` as CTDB does.
///
/// # Errors
///
/// "Node N does not know about IP A" when the node does not list it.
pub fn render_ipinfo(r: &PublicIps, addr: IpAddr) -> Result<String> {
    let Some(ip): Option<&PublicIp> = r
        .ips
        .iter()
        .find(|i| i.addr == addr && !i.configured.is_empty())
    else {
        bail!("Node {} does not know about IP {addr}", r.pnn);
    };
    let mut out = format!(
        "Public IP[{addr}] info on node {}\nIP:{addr}\nCurrentNode:{}\nNumInterfaces:{}\n",
        r.pnn,
        pnn_i64(ip.owner),
        ip.configured.len()
    );
    for (n, name) in ip.configured.iter().enumerate() {
        let info = r.ifaces.iter().find(|i| i.name == *name);
        let link = if info.is_some_and(|i| i.link_up) {
            "up"
        } else {
            "down"
        };
        let refs = info.map_or(0, |i| i.references);
        let active = if ip.active.as_deref() == Some(name) {
            " (active)"
        } else {
            ""
        };
        out.push_str(&format!(
            "Interface[{}]: Name:{name} Link:{link} References:{refs}{active}\n",
            n + 1
        ));
    }
    Ok(out)
}

/// Renders `ifaces` as CTDB does.
pub fn render_ifaces(r: &PublicIps, format: Format) -> String {
    match format {
        Format::Machine(sep) => {
            let rows: Vec<Vec<String>> = r
                .ifaces
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        u8::from(i.link_up).to_string(),
                        i.references.to_string(),
                    ]
                })
                .collect();
            machine(&["Name", "LinkStatus", "References"], &rows, sep)
        }
        _ => {
            let mut out = format!("Interfaces on node {}\n", r.pnn);
            for i in &r.ifaces {
                out.push_str(&format!(
                    "name:{} link:{} references:{}\n",
                    i.name,
                    if i.link_up { "up" } else { "down" },
                    i.references
                ));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use transport::msg::failover::IfaceInfo;

    use super::*;

    fn ip(addr: &str, owner: Option<u32>, active: Option<&str>) -> PublicIp {
        PublicIp {
            addr: addr.parse().unwrap(),
            prefix: 24,
            configured: vec!["eth2".into(), "eth1".into()],
            available: vec!["eth2".into(), "eth1".into()],
            active: active.map(str::to_string),
            owner,
        }
    }

    fn ifaces() -> Vec<IfaceInfo> {
        vec![
            IfaceInfo {
                name: "eth2".into(),
                link_up: true,
                references: 2,
            },
            IfaceInfo {
                name: "eth1".into(),
                link_up: true,
                references: 4,
            },
        ]
    }

    #[test]
    fn ip_matches_ctdb() {
        let r = PublicIps {
            pnn: 0,
            can_host: true,
            ips: vec![
                ip("10.0.0.32", Some(1), None),
                ip("10.0.0.31", Some(0), Some("eth2")),
                ip("10.0.0.33", None, None),
            ],
            ifaces: ifaces(),
        };
        let rows = node_rows(&r);
        assert_eq!(
            render_ip("Public IPs on node 0", &rows, false, Format::Human),
            "Public IPs on node 0\n10.0.0.31 0\n10.0.0.32 1\n10.0.0.33 -1\n"
        );
        assert_eq!(
            render_ip("Public IPs on node 0", &rows, false, Format::Machine('|')),
            "|Public IP|Node|\n|10.0.0.31|0|\n|10.0.0.32|1|\n|10.0.0.33|-1|\n"
        );
    }

    #[test]
    fn ip_all_verbose_matches_ctdb() {
        // ctdb.ip.007: sorted by address, IPv4 before IPv6; unassigned -1.
        let mut unassigned = ip("10.0.0.32", None, None);
        unassigned.available.clear();
        let n0 = PublicIps {
            pnn: 0,
            can_host: true,
            ips: vec![
                ip("10.0.0.31", Some(0), Some("eth2")),
                unassigned.clone(),
                ip("fd00::5357:5f01", Some(2), None),
            ],
            ifaces: ifaces(),
        };
        let n2 = PublicIps {
            pnn: 2,
            can_host: true,
            ips: vec![
                ip("fd00::5357:5f01", Some(2), Some("eth2")),
                ip("10.0.0.31", Some(0), None),
            ],
            ifaces: ifaces(),
        };
        let rows = merge_all(&[n0, n2]);
        let text = render_ip("Public IPs on ALL nodes", &rows, true, Format::Human);
        // CTDB prints empty lists for an unassigned address; we show the
        // interfaces as known by the node that lists it only when it
        // hosts it.
        assert_eq!(
            text,
            "Public IPs on ALL nodes\n\
             10.0.0.31 node[0] active[eth2] available[eth2,eth1] configured[eth2,eth1]\n\
             10.0.0.32 node[-1] active[] available[] configured[]\n\
             fd00::5357:5f01 node[2] active[eth2] available[eth2,eth1] configured[eth2,eth1]\n"
        );
    }

    #[test]
    fn ipinfo_matches_ctdb() {
        let r = PublicIps {
            pnn: 0,
            can_host: true,
            ips: vec![ip("10.0.0.32", Some(1), None)],
            ifaces: ifaces(),
        };
        let mut r_active = r.clone();
        r_active.ips[0].active = Some("eth2".into());
        r_active.ips[0].owner = Some(0);
        let text = render_ipinfo(&r, "10.0.0.32".parse().unwrap()).unwrap();
        assert_eq!(
            text,
            "Public IP[10.0.0.32] info on node 0\nIP:10.0.0.32\nCurrentNode:1\nNumInterfaces:2\n\
             Interface[1]: Name:eth2 Link:up References:2\n\
             Interface[2]: Name:eth1 Link:up References:4\n"
        );
        let text = render_ipinfo(&r_active, "10.0.0.32".parse().unwrap()).unwrap();
        assert!(text.contains("Interface[1]: Name:eth2 Link:up References:2 (active)\n"));
        let err = render_ipinfo(&r, "10.0.0.31".parse().unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "Node 0 does not know about IP 10.0.0.31");
    }

    #[test]
    fn ifaces_match_ctdb() {
        let r = PublicIps {
            pnn: 0,
            can_host: true,
            ips: Vec::new(),
            ifaces: ifaces(),
        };
        assert_eq!(
            render_ifaces(&r, Format::Human),
            "Interfaces on node 0\nname:eth2 link:up references:2\nname:eth1 link:up references:4\n"
        );
        assert_eq!(
            render_ifaces(&r, Format::Machine('|')),
            "|Name|LinkStatus|References|\n|eth2|1|2|\n|eth1|1|4|\n"
        );
    }

    #[test]
    fn ip_mask_is_checked() {
        assert_eq!(
            parse_ip_mask("192.0.2.5/24").unwrap(),
            ("192.0.2.5".parse().unwrap(), 24)
        );
        assert!(parse_ip_mask("192.0.2.5").is_err());
        assert!(parse_ip_mask("192.0.2.5/33").is_err());
        assert!(parse_ip_mask("2001:db8::5/64").is_ok());
    }
}
