//! Public-IP commands, with CTDB's names, arguments and output: `ip [all]
//! [-v]`, `ipinfo`, `ifaces`, `setifacelink`, `addip`, `delip`, `moveip`,
//! `reloadips`, `ipreallocate` (alias `sync`), `gratarp`, `tickle`,
//! `killtcp`.
//!
//! Every command talks to failoverd (service FAILOVERD). The reading
//! commands (`ip`, `ipinfo`, `ifaces`) ask the node(s) chosen with `-n`
//! (default: this node; several nodes give one block per node, see
//! [`crate::output`]); `ip all` and `ip -n all` merge every connected
//! node's answer as CTDB does. Actions address one node; `ipreallocate` and
//! `moveip` go to this node's failoverd, which forwards them to the leader.
//! Arguments are checked before anything is contacted. The reports are
//! pure values, tested against CTDB's expected outputs (ctdb/tests/UNIT/tool)
//! here and byte for byte on the binary in cli/tests/golden.

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
use transport::proto::service::FAILOVERD;

use crate::ctx::{block_on, Exit, Globals, Targets};
use crate::output::{emit, parse_nodes, render_one, Nodes, Report};

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
        /// `all` or a list of PNNs (default: the node addressed, as ctdb).
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
pub fn run(ctx: &Globals, cmd: &IpCommand) -> Result<()> {
    block_on(dispatch(ctx, cmd))
}

/// Sends an action to failoverd on `pnn`; a refusal becomes the daemon's
/// own message.
async fn act<Req: serde::Serialize + ?Sized, Resp: serde::de::DeserializeOwned>(
    ctx: &Globals,
    client: &Client,
    pnn: u32,
    opcode: u32,
    req: &Req,
) -> Result<Resp> {
    ctx.ask(client, pnn, FAILOVERD, opcode, req).await
}

async fn dispatch(ctx: &Globals, cmd: &IpCommand) -> Result<()> {
    // Arguments are checked before anything is contacted.
    let all = match cmd {
        IpCommand::Ip { all, .. } => match all.as_deref() {
            None => false,
            Some("all") => true,
            Some(other) => bail!("ip: unexpected argument '{other}' (expected 'all')"),
        },
        _ => false,
    };
    let up = match cmd {
        IpCommand::Setifacelink { state, .. } => match state.as_str() {
            "up" => true,
            "down" => false,
            other => bail!("setifacelink: state must be 'up' or 'down', not '{other}'"),
        },
        _ => false,
    };
    let addip = match cmd {
        IpCommand::Addip { ip_mask, .. } => Some(parse_ip_mask(ip_mask)?),
        _ => None,
    };
    let pairs = match cmd {
        IpCommand::Tickle { src, dst } | IpCommand::Killtcp { src, dst, .. } => {
            pairs_from(*src, *dst)?
        }
        _ => Vec::new(),
    };
    let reload_nodes = match cmd {
        IpCommand::Reloadips { nodes: Some(n) } => Some(parse_nodes(n).map_err(|e| anyhow!(e))?),
        _ => None,
    };
    let (client, _incoming) = ctx.connect().await?;
    match cmd {
        IpCommand::Ip { verbose, .. } => {
            if all || ctx.nodes == Nodes::All {
                let nodes = ctx.all_nodes(&client, true).await?;
                let answers: Vec<(u32, Result<PublicIps, String>)> = ctx
                    .ask_each(&client, &nodes, FAILOVERD, GET_PUBLIC_IPS, &())
                    .await?;
                let mut reports = Vec::new();
                let mut failed = false;
                for (_, r) in answers {
                    match r {
                        Ok(r) => reports.push(r),
                        Err(e) => {
                            eprintln!("{e}");
                            failed = true;
                        }
                    }
                }
                let report = IpReport {
                    title: "Public IPs on ALL nodes".to_string(),
                    rows: merge_all(&reports),
                    verbose: *verbose,
                };
                emit(&render_one(&report, ctx.format))?;
                if failed {
                    return Err(Exit(1).into());
                }
            } else {
                let targets = ctx.targets(&client).await?;
                let results = ask_targets(ctx, &client, &targets).await?;
                let reports = results
                    .into_iter()
                    .map(|(pnn, r)| {
                        (
                            pnn,
                            r.map(|r| IpReport {
                                title: format!("Public IPs on node {pnn}"),
                                rows: node_rows(&r),
                                verbose: *verbose,
                            }),
                        )
                    })
                    .collect();
                ctx.print_reports(&targets, reports)?;
            }
        }
        IpCommand::Ipinfo { ip } => {
            let targets = ctx.targets(&client).await?;
            let results = ask_targets(ctx, &client, &targets).await?;
            // One node that does not know the address: ctdb prints that on
            // stdout, status 1.
            if let (Targets::One(_), [(_, Ok(r))]) = (&targets, results.as_slice()) {
                if let Err(e) = IpinfoReport::new(r, *ip) {
                    emit(&format!("{e}\n"))?;
                    return Err(Exit(1).into());
                }
            }
            let reports = results
                .into_iter()
                .map(|(pnn, r)| (pnn, r.and_then(|r| IpinfoReport::new(&r, *ip))))
                .collect();
            ctx.print_reports(&targets, reports)?;
        }
        IpCommand::Ifaces => {
            let targets = ctx.targets(&client).await?;
            let results = ask_targets(ctx, &client, &targets).await?;
            let reports = results
                .into_iter()
                .map(|(pnn, r)| (pnn, r.map(IfacesReport)))
                .collect();
            ctx.print_reports(&targets, reports)?;
        }
        IpCommand::Setifacelink { iface, .. } => {
            let pnn = ctx.one_node(&client).await?;
            let req = SetIfaceLink {
                iface: iface.clone(),
                up,
            };
            act::<_, ()>(ctx, &client, pnn, SET_IFACE_LINK, &req).await?;
        }
        IpCommand::Addip { iface, .. } => {
            let (addr, prefix) = addip.context("addip: address checked above")?;
            let pnn = ctx.one_node(&client).await?;
            // As ctdb: an address the node already lists is not an error.
            if knows(ctx, &client, pnn, addr).await? {
                eprintln!("Node already knows about IP {addr}");
                return Ok(());
            }
            let req = AddIp {
                addr,
                prefix,
                ifaces: iface.split(',').map(str::to_string).collect(),
            };
            act::<_, ()>(ctx, &client, pnn, ADD_IP, &req).await?;
        }
        IpCommand::Delip { ip } => {
            let pnn = ctx.one_node(&client).await?;
            if !knows(ctx, &client, pnn, *ip).await? {
                eprintln!("Node does not know about IP address {ip}");
                return Ok(());
            }
            act::<_, ()>(ctx, &client, pnn, DEL_IP, &DelIp { addr: *ip }).await?;
        }
        IpCommand::Moveip { ip, pnn } => {
            let req = MoveIp {
                addr: *ip,
                pnn: *pnn,
            };
            act::<_, ()>(ctx, &client, client.pnn(), MOVE_IP, &req)
                .await
                .map_err(|e| anyhow!("Failed to move IP {ip} to node {pnn}: {e:#}"))?;
        }
        IpCommand::Reloadips { .. } => {
            // As ctdb: no list means the node addressed (`-n`, else this
            // one); every node is asked even when one fails, and the
            // takeover run follows either way.
            let targets = match reload_nodes {
                Some(Nodes::All) => ctx.all_nodes(&client, true).await?,
                Some(Nodes::List(l)) => {
                    ctx.check_exist(&client, &l).await?;
                    l
                }
                None | Some(Nodes::Local) => vec![ctx.one_node(&client).await?],
            };
            let mut failed = false;
            for pnn in targets {
                let r: Result<ReloadSummary> = act(ctx, &client, pnn, RELOAD_IPS, &()).await;
                if let Err(e) = r {
                    eprintln!("reloadips on node {pnn}: {e:#}");
                    failed = true;
                }
            }
            if failed {
                eprintln!("Failed to reload IPs on some nodes.");
            }
            ipreallocate(ctx, &client).await?;
        }
        IpCommand::Ipreallocate => ipreallocate(ctx, &client).await?,
        IpCommand::Gratarp { ip, iface } => {
            let pnn = ctx.one_node(&client).await?;
            let req = Gratarp {
                addr: *ip,
                iface: iface.clone(),
            };
            act::<_, ()>(ctx, &client, pnn, GRATARP, &req).await?;
        }
        IpCommand::Tickle { .. } => {
            let pnn = ctx.one_node(&client).await?;
            act::<_, ()>(ctx, &client, pnn, TICKLE, &pairs).await?;
        }
        IpCommand::Killtcp { iface, .. } => {
            let pnn = ctx.one_node(&client).await?;
            let req = KillTcp {
                iface: iface.clone(),
                connections: pairs,
            };
            let _: u32 = act(ctx, &client, pnn, KILLTCP, &req).await?;
        }
    }
    Ok(())
}

/// `GET_PUBLIC_IPS` from every target node.
async fn ask_targets(
    ctx: &Globals,
    client: &Client,
    targets: &Targets,
) -> Result<Vec<(u32, Result<PublicIps, String>)>> {
    let pnns = targets.pnns();
    ctx.ask_each(client, &pnns, FAILOVERD, GET_PUBLIC_IPS, &())
        .await
}

/// Does failoverd on `pnn` list `addr` among its public addresses?
async fn knows(ctx: &Globals, client: &Client, pnn: u32, addr: IpAddr) -> Result<bool> {
    let ips: PublicIps = act(ctx, client, pnn, GET_PUBLIC_IPS, &())
        .await
        .map_err(|e| anyhow!("Failed to get Public IPs from node {pnn}: {e:#}"))?;
    Ok(ips
        .ips
        .iter()
        .any(|i| i.addr == addr && !i.configured.is_empty()))
}

async fn ipreallocate(ctx: &Globals, client: &Client) -> Result<()> {
    let _: u64 = act(ctx, client, client.pnn(), IPREALLOCATE, &())
        .await
        .map_err(|e| anyhow!("ipreallocate failed: {e:#}"))?;
    Ok(())
}

/// A takeover run, asked again until one succeeds or `within` has passed
/// (after an admin command the cluster may be between leaders for a
/// moment; ctdb asks until it gets an answer).
///
/// # Errors
///
/// The last failure, when none succeeded in time.
pub(crate) async fn ipreallocate_within(
    ctx: &Globals,
    client: &Client,
    within: std::time::Duration,
) -> Result<()> {
    use transport::client::ClientError;
    use transport::proto::{Address, ErrorCode};
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r: Result<u64, ClientError> = client
            .request(
                Address::new(client.pnn(), FAILOVERD),
                IPREALLOCATE,
                &(),
                ctx.timeout,
            )
            .await;
        match r {
            Ok(_) => return Ok(()),
            // No failoverd on this node (a node that runs clusterd only):
            // no public address to move, no run to wait for.
            Err(ClientError::Remote { error, .. }) if error.code == ErrorCode::UnknownService => {
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow!(
                    "ipreallocate failed: {}",
                    crate::ctx::daemon_error(FAILOVERD, client.pnn(), &e)
                ));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

fn parse_ip_mask(s: &str) -> Result<(IpAddr, u8)> {
    // ctdb's one message for every malformed ADDRESS/PREFIX.
    let invalid = || anyhow!("Invalid IP/Mask {s}");
    let (a, m) = s.split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = a.parse().map_err(|_| invalid())?;
    let prefix: u8 = m.parse().map_err(|_| invalid())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(invalid());
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

/// `ip all`, as CTDB merges it: every address any node lists, owned by
/// the node that says it hosts it (`-1` when no answering node does), with
/// the interfaces as that owner sees them (empty when unowned).
pub fn merge_all(reports: &[PublicIps]) -> Vec<IpRow> {
    let mut rows: BTreeMap<IpAddr, IpRow> = BTreeMap::new();
    for r in reports {
        for i in r.ips.iter().filter(|i| !i.configured.is_empty()) {
            let row = rows.entry(i.addr).or_insert_with(|| IpRow {
                addr: i.addr,
                pnn: -1,
                active: None,
                available: Vec::new(),
                configured: Vec::new(),
            });
            if i.owner == Some(r.pnn) {
                row.pnn = i64::from(r.pnn);
                row.active = i.active.clone();
                row.available = i.available.clone();
                row.configured = i.configured.clone();
            }
        }
    }
    rows.into_values().collect()
}

/// `ip`'s output: a title and rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpReport {
    /// `Public IPs on node N` or `Public IPs on ALL nodes`.
    pub title: String,
    /// The addresses, in address order (IPv4 first).
    pub rows: Vec<IpRow>,
    /// `-v`: with the interfaces.
    pub verbose: bool,
}

impl Report for IpReport {
    fn human(&self) -> String {
        let mut out = format!("{}\n", self.title);
        for r in &self.rows {
            if self.verbose {
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

    fn header(&self) -> Vec<&'static str> {
        let mut header = vec!["Public IP", "Node"];
        if self.verbose {
            header.extend([
                "ActiveInterfaces",
                "AvailableInterfaces",
                "ConfiguredInterfaces",
            ]);
        }
        header
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|r| {
                let mut v = vec![r.addr.to_string(), r.pnn.to_string()];
                if self.verbose {
                    v.push(r.active.clone().unwrap_or_default());
                    v.push(r.available.join(","));
                    v.push(r.configured.join(","));
                }
                v
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "address": r.addr,
                        "node": r.pnn,
                        "active": r.active,
                        "available": r.available,
                        "configured": r.configured,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)] // the tests' shorthand for one node's output
/// Renders `ip` as CTDB does (human, `-v`, `-X`), or as JSON.
pub fn render_ip(
    title: &str,
    rows: &[IpRow],
    verbose: bool,
    format: crate::output::Format,
) -> String {
    render_one(
        &IpReport {
            title: title.to_string(),
            rows: rows.to_vec(),
            verbose,
        },
        format,
    )
}

/// One interface line of `ipinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpinfoIface {
    /// Its name.
    pub name: String,
    /// Link usable.
    pub up: bool,
    /// Addresses on it.
    pub references: u32,
    /// The address is on it.
    pub active: bool,
}

/// `ipinfo`'s output for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpinfoReport {
    /// The reporting node.
    pub pnn: u32,
    /// The address.
    pub addr: IpAddr,
    /// Its owner as the node believes, -1 for none.
    pub current: i64,
    /// Its configured interfaces, in order.
    pub ifaces: Vec<IpinfoIface>,
}

impl IpinfoReport {
    /// The report of `addr` from a node's answer.
    ///
    /// # Errors
    ///
    /// "Node N does not know about IP A" when the node does not list it.
    pub fn new(r: &PublicIps, addr: IpAddr) -> Result<IpinfoReport, String> {
        let Some(ip): Option<&PublicIp> = r
            .ips
            .iter()
            .find(|i| i.addr == addr && !i.configured.is_empty())
        else {
            return Err(format!("Node {} does not know about IP {addr}", r.pnn));
        };
        let ifaces = ip
            .configured
            .iter()
            .map(|name| {
                let info = r.ifaces.iter().find(|i| i.name == *name);
                IpinfoIface {
                    name: name.clone(),
                    up: info.is_some_and(|i| i.link_up),
                    references: info.map_or(0, |i| i.references),
                    active: ip.active.as_deref() == Some(name),
                }
            })
            .collect();
        Ok(IpinfoReport {
            pnn: r.pnn,
            addr,
            current: pnn_i64(ip.owner),
            ifaces,
        })
    }
}

fn up_down(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}

impl Report for IpinfoReport {
    fn human(&self) -> String {
        let mut out = format!(
            "Public IP[{a}] info on node {}\nIP:{a}\nCurrentNode:{}\nNumInterfaces:{}\n",
            self.pnn,
            self.current,
            self.ifaces.len(),
            a = self.addr,
        );
        for (n, i) in self.ifaces.iter().enumerate() {
            out.push_str(&format!(
                "Interface[{}]: Name:{} Link:{} References:{}{}\n",
                n + 1,
                i.name,
                up_down(i.up),
                i.references,
                if i.active { " (active)" } else { "" }
            ));
        }
        out
    }

    fn header(&self) -> Vec<&'static str> {
        vec![
            "Public IP",
            "CurrentNode",
            "Interface",
            "LinkStatus",
            "References",
            "Active",
        ]
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.ifaces
            .iter()
            .map(|i| {
                vec![
                    self.addr.to_string(),
                    self.current.to_string(),
                    i.name.clone(),
                    u8::from(i.up).to_string(),
                    i.references.to_string(),
                    u8::from(i.active).to_string(),
                ]
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "address": self.addr,
            "current_node": self.current,
            "interfaces": self.ifaces.iter().map(|i| serde_json::json!({
                "name": i.name,
                "link": up_down(i.up),
                "references": i.references,
                "active": i.active,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)] // the tests' shorthand for one node's output
/// Renders `ipinfo` as CTDB does.
///
/// # Errors
///
/// "Node N does not know about IP A" when the node does not list it.
pub fn render_ipinfo(r: &PublicIps, addr: IpAddr) -> Result<String> {
    let report = IpinfoReport::new(r, addr).map_err(anyhow::Error::msg)?;
    Ok(report.human())
}

/// `ifaces`' output for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfacesReport(pub PublicIps);

impl Report for IfacesReport {
    fn human(&self) -> String {
        let r = &self.0;
        if r.ifaces.is_empty() {
            return format!("No interfaces configured on node {}\n", r.pnn);
        }
        let mut out = format!("Interfaces on node {}\n", r.pnn);
        for i in &r.ifaces {
            out.push_str(&format!(
                "name:{} link:{} references:{}\n",
                i.name,
                up_down(i.link_up),
                i.references
            ));
        }
        out
    }

    fn header(&self) -> Vec<&'static str> {
        vec!["Name", "LinkStatus", "References"]
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.0
            .ifaces
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    u8::from(i.link_up).to_string(),
                    i.references.to_string(),
                ]
            })
            .collect()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.0
                .ifaces
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "name": i.name,
                        "link": up_down(i.link_up),
                        "references": i.references,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)] // the tests' shorthand for one node's output
/// Renders `ifaces` as CTDB does.
pub fn render_ifaces(r: &PublicIps, format: crate::output::Format) -> String {
    render_one(&IfacesReport(r.clone()), format)
}

#[cfg(test)]
mod tests {
    use transport::msg::failover::IfaceInfo;

    use super::*;
    use crate::output::Format;

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
    fn a_node_without_interfaces_says_so_like_ctdb() {
        let r = PublicIps {
            pnn: 3,
            can_host: false,
            ips: Vec::new(),
            ifaces: Vec::new(),
        };
        assert_eq!(
            render_ifaces(&r, Format::Human),
            "No interfaces configured on node 3\n"
        );
        // -X stays parseable: the header alone.
        assert_eq!(
            render_ifaces(&r, Format::Machine('|')),
            "|Name|LinkStatus|References|\n"
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
