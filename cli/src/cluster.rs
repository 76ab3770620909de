//! clusterd's commands, with CTDB's names and output: `status`, `nodestatus
//! [all|PNNs]`, `listnodes`, `pnn`, `leader`, and the node administration
//! `disable`, `enable`, `stop`, `continue`, `ban SECONDS`, `unban`.
//!
//! Reading commands ask clusterd for its membership (`GET_MEMBERSHIP` to
//! `(PNN, CLUSTERD)`, through the local transportd). `status` and
//! `nodestatus` show one node's view: this node's, or the first node given
//! with `-n`; `pnn` and `leader` answer for each `-n` node (one block per
//! node, see [`crate::output`]). Administration commands go
//! to the local clusterd as `ADMIN { target, op }`, which forwards them to
//! the target; with `-n all` or a list they act on each of those nodes.
//! `listnodes` only reads the nodes file and works without any daemon.
//!
//! `status` prints CTDB's lines. ipfailover has no databases, so the
//! `hash:N lmaster:P` lines list the active (not INACTIVE) nodes in PNN order
//! (what CTDB's vnnmap holds when every node has the lmaster capability),
//! `Size` is their number, and `Recovery mode` is `NORMAL (0)` while this
//! node holds a valid lease under a leader and `RECOVERY (1)` otherwise.
//! `Leader:UNKNOWN` is printed when no leader is known.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use transport::client::{Client, ClientError};
use transport::msg::cluster::{
    AdminCommand, AdminOp, AdminOutcome, Membership, NodeFlags, NodeInfo, Pnn, ADMIN,
    GET_MEMBERSHIP,
};
use transport::msg::failover::{IpStatus, GET_IP_STATUS};
use transport::proto::service::{CLUSTERD, FAILOVERD};
use transport::proto::{Address, ErrorCode};

use crate::ctx::{block_on, daemon_error, Exit, Globals};
use crate::output::{emit, machine, Format, Nodes, Report};

/// Arguments of `nodestatus`.
#[derive(Debug, clap::Args)]
pub struct NodestatusArgs {
    /// `all`, a PNN, or a list such as 0,2 (default: the queried node).
    #[arg(value_name = "all|PNN-LIST")]
    pub nodes: Option<String>,
}

/// Arguments of `listnodes`.
#[derive(Debug, clap::Args)]
pub struct ListnodesArgs {
    /// Configuration directory holding the `nodes` file.
    #[arg(long, value_name = "DIR", default_value = "/etc/ipfailover")]
    pub config_dir: PathBuf,
}

/// Arguments of `ban`.
/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The node may lead.
    On,
    /// The node may not lead.
    Off,
}

/// `setleaderrole on|off`.
#[derive(Debug, clap::Args)]
pub struct LeaderRoleArgs {
    /// `on` or `off`.
    #[arg(value_enum)]
    pub role: Role,
}

#[derive(Debug, clap::Args)]
pub struct BanArgs {
    /// Ban time in seconds (greater than 0).
    #[arg(value_name = "BANTIME")]
    pub seconds: u32,
}

/// The machine-readable header of `status -X` and `nodestatus -X`.
const NODEMAP_HEADER: [&str; 11] = [
    "Node",
    "IP",
    "Disconnected",
    "Unknown",
    "Banned",
    "Disabled",
    "Unhealthy",
    "Stopped",
    "Inactive",
    "PartiallyOnline",
    "ThisNode",
];

fn address(n: &NodeInfo) -> String {
    n.address
        .map_or_else(|| "0.0.0.0".to_string(), |a| a.to_string())
}

fn bit(flags: NodeFlags, f: NodeFlags) -> String {
    if flags.intersects(f) { "1" } else { "0" }.to_string()
}

fn machine_row(n: &NodeInfo, this: Pnn) -> Vec<String> {
    let f = n.flags;
    vec![
        n.pnn.to_string(),
        address(n),
        bit(f, NodeFlags::DISCONNECTED),
        bit(f, NodeFlags::UNKNOWN),
        bit(f, NodeFlags::BANNED),
        bit(f, NodeFlags::PERMANENTLY_DISABLED),
        bit(f, NodeFlags::UNHEALTHY),
        bit(f, NodeFlags::STOPPED),
        bit(f, NodeFlags::INACTIVE),
        "0".to_string(),
        if n.pnn == this { "Y" } else { "N" }.to_string(),
    ]
}

/// CTDB's `print_nodemap`: the optional header, then one line per
/// non-deleted node.
fn human_nodemap(out: &mut String, nodes: &[&NodeInfo], this: Pnn, header: bool) {
    if header {
        let deleted = nodes
            .iter()
            .filter(|n| n.flags.contains(NodeFlags::DELETED))
            .count();
        if deleted == 0 {
            let _ = writeln!(out, "Number of nodes:{}", nodes.len());
        } else {
            let _ = writeln!(
                out,
                "Number of nodes:{} (including {deleted} deleted nodes)",
                nodes.len()
            );
        }
    }
    for n in nodes {
        if n.flags.contains(NodeFlags::DELETED) {
            continue;
        }
        let _ = writeln!(
            out,
            "pnn:{} {:<16} {}{}",
            n.pnn,
            address(n),
            n.flags,
            if n.pnn == this { " (THIS NODE)" } else { "" }
        );
    }
}

fn machine_nodemap(nodes: &[&NodeInfo], this: Pnn, sep: char) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .filter(|n| !n.flags.contains(NodeFlags::DELETED))
        .map(|n| machine_row(n, this))
        .collect();
    machine(&NODEMAP_HEADER, &rows, sep)
}

/// One node in `ctdb status --json`'s form.
fn ctdb_json_node(n: &NodeInfo, this: Pnn) -> serde_json::Value {
    let f = n.flags;
    serde_json::json!({
        "pnn": n.pnn,
        "address": address(n),
        "partially_online": false,
        "flags_raw": f.bits(),
        "flags_ok": f.bits() == 0,
        "flags": {
            "disconnected": f.contains(NodeFlags::DISCONNECTED),
            "unknown": f.contains(NodeFlags::UNKNOWN),
            "disabled": f.contains(NodeFlags::PERMANENTLY_DISABLED),
            "banned": f.contains(NodeFlags::BANNED),
            "unhealthy": f.contains(NodeFlags::UNHEALTHY),
            "deleted": f.contains(NodeFlags::DELETED),
            "stopped": f.contains(NodeFlags::STOPPED),
            "inactive": f.is_inactive(),
        },
        "this_node": n.pnn == this,
    })
}

fn json_nodes(nodes: &[&NodeInfo], this: Pnn) -> serde_json::Value {
    serde_json::Value::Array(
        nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "pnn": n.pnn,
                    "address": n.address,
                    "flags": n.flags.bits(),
                    "state": n.flags.to_string(),
                    "this_node": n.pnn == this,
                })
            })
            .collect(),
    )
}

/// `status` in the given format.
pub fn render_status(m: &Membership, format: Format) -> String {
    let all: Vec<&NodeInfo> = m.nodes.iter().collect();
    let active: Vec<Pnn> = m
        .nodes
        .iter()
        .filter(|n| !n.flags.is_inactive())
        .map(|n| n.pnn)
        .collect();
    let normal = m.lease_ok && m.leader.is_some();
    match format {
        Format::Machine(sep) => machine_nodemap(&all, m.this_node, sep),
        Format::Json => {
            // CTDB's schema (`ctdb status --json`), ipfailover's own facts
            // under "ipfailover".
            let deleted = all
                .iter()
                .filter(|n| n.flags.contains(NodeFlags::DELETED))
                .count();
            let nodes: serde_json::Map<String, serde_json::Value> = all
                .iter()
                .map(|n| (n.pnn.to_string(), ctdb_json_node(n, m.this_node)))
                .collect();
            let vnn_map: Vec<serde_json::Value> = active
                .iter()
                .enumerate()
                .map(|(i, p)| serde_json::json!({ "hash": i, "lmaster": p }))
                .collect();
            let v = serde_json::json!({
                "node_status": {
                    "node_count": m.nodes.len(),
                    "deleted_node_count": deleted,
                    "nodes": nodes,
                },
                "vnn_status": {
                    "generation": m.generation,
                    "size": active.len(),
                    "vnn_map": vnn_map,
                },
                "recovery_mode": if normal { "NORMAL" } else { "RECOVERY" },
                "recovery_mode_raw": u8::from(!normal),
                // CTDB_UNKNOWN_PNN when there is none, as ctdb prints it.
                "leader": m.leader.unwrap_or(u32::MAX),
                "ipfailover": {
                    "this_node": m.this_node,
                    "lease_ok": m.lease_ok,
                },
            });
            format!("{v:#}\n")
        }
        Format::Human => {
            let mut out = String::new();
            human_nodemap(&mut out, &all, m.this_node, true);
            let _ = writeln!(out, "Generation:{}", m.generation);
            let _ = writeln!(out, "Size:{}", active.len());
            for (i, p) in active.iter().enumerate() {
                let _ = writeln!(out, "hash:{i} lmaster:{p}");
            }
            if normal {
                out.push_str("Recovery mode:NORMAL (0)\n");
            } else {
                out.push_str("Recovery mode:RECOVERY (1)\n");
            }
            match m.leader {
                Some(l) => {
                    let _ = writeln!(out, "Leader:{l}");
                }
                None => out.push_str("Leader:UNKNOWN\n"),
            }
            out
        }
    }
}

/// Which nodes `nodestatus` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The queried node only.
    This,
    /// Every node (with the `Number of nodes` header).
    All,
    /// These nodes.
    List(Vec<Pnn>),
}

/// Parses `nodestatus`'s argument.
///
/// # Errors
///
/// A bad PNN list, named.
pub fn parse_selection(arg: Option<&str>) -> Result<Selection> {
    match arg {
        None => Ok(Selection::This),
        Some(a) => match crate::output::parse_nodes(a).map_err(anyhow::Error::msg)? {
            Nodes::All => Ok(Selection::All),
            Nodes::List(l) => Ok(Selection::List(l)),
            Nodes::Local => Ok(Selection::This),
        },
    }
}

/// `nodestatus`: the text and the exit code (the OR of the shown nodes'
/// flags, as CTDB returns it).
///
/// # Errors
///
/// A listed PNN that is not a node (`Node N does not exist`).
pub fn render_nodestatus(m: &Membership, sel: &Selection, format: Format) -> Result<(String, u8)> {
    let chosen: Vec<&NodeInfo> = match sel {
        Selection::This => m.nodes.iter().filter(|n| n.pnn == m.this_node).collect(),
        Selection::All => m.nodes.iter().collect(),
        Selection::List(list) => {
            let mut v = Vec::new();
            for p in list {
                match m.nodes.iter().find(|n| n.pnn == *p) {
                    Some(n) if !n.flags.contains(NodeFlags::DELETED) => v.push(n),
                    _ => bail!("Node {p} does not exist"),
                }
            }
            v
        }
    };
    let code = chosen
        .iter()
        .filter(|n| !n.flags.contains(NodeFlags::DELETED))
        .fold(0u32, |acc, n| acc | n.flags.bits());
    // Flags clusterd sets are below 0x80; keep the low byte like a shell.
    let code = u8::try_from(code & 0xff).unwrap_or(u8::MAX);
    let text = match format {
        Format::Machine(sep) => machine_nodemap(&chosen, m.this_node, sep),
        Format::Json => format!("{:#}\n", json_nodes(&chosen, m.this_node)),
        Format::Human => {
            let mut out = String::new();
            human_nodemap(&mut out, &chosen, m.this_node, *sel == Selection::All);
            out
        }
    };
    Ok((text, code))
}

/// `listnodes` from the text of a nodes file: live nodes' addresses.
pub fn render_listnodes(nodes: &transport::nodes::Nodes, format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Human => {
            for (_, a) in nodes.iter() {
                let _ = writeln!(out, "{a}");
            }
        }
        Format::Machine(sep) => {
            for (p, a) in nodes.iter() {
                let _ = writeln!(out, "{sep}{p}{sep}{a}{sep}");
            }
        }
        Format::Json => {
            let v: Vec<serde_json::Value> = nodes
                .iter()
                .map(|(p, a)| serde_json::json!({"pnn": p, "address": a}))
                .collect();
            let _ = writeln!(out, "{:#}", serde_json::Value::Array(v));
        }
    }
    out
}

/// CTDB's message when a node already is in the state asked for.
pub fn already_message(target: Pnn, op: AdminOp) -> String {
    match op {
        AdminOp::Disable => format!("Node {target} is already disabled"),
        AdminOp::Enable => format!("Node {target} is not disabled"),
        AdminOp::Stop => format!("Node {target} is already stopped"),
        AdminOp::Continue => format!("Node {target} is not stopped"),
        AdminOp::Ban { .. } => format!("Node {target} is already banned"),
        AdminOp::Unban => format!("Node {target} is not banned"),
        // ctdb says nothing when the role is already so.
        AdminOp::SetLeaderRole { .. } => String::new(),
    }
}

/// The node whose view `status`/`nodestatus` show: the first `-n` node,
/// else this one (`-n all`: this one; the view is cluster-wide).
fn queried(ctx: &Globals, client: &Client) -> u32 {
    match &ctx.nodes {
        Nodes::List(l) => l.first().copied().unwrap_or(client.pnn()),
        Nodes::Local | Nodes::All => client.pnn(),
    }
}

fn clusterd_error(pnn: u32, e: ClientError) -> anyhow::Error {
    anyhow::anyhow!(daemon_error(CLUSTERD, pnn, &e))
}

async fn get_membership(ctx: &Globals, client: &Client, pnn: u32) -> Result<Membership> {
    client
        .request(
            Address::new(pnn, CLUSTERD),
            GET_MEMBERSHIP,
            &(),
            ctx.timeout,
        )
        .await
        .map_err(|e| clusterd_error(pnn, e))
}

async fn fetch(ctx: &Globals) -> Result<Membership> {
    let (client, _incoming) = ctx.connect().await?;
    let pnn = queried(ctx, &client);
    if let Nodes::List(_) = &ctx.nodes {
        ctx.check_nodes(&client, &[pnn]).await?;
    }
    get_membership(ctx, &client, pnn).await
}

/// How long `status` waits for failoverd's part (it must not hang on a
/// failoverd that is stuck: the membership is the main answer).
const IP_STATUS_WAIT: Duration = Duration::from_secs(1);

/// `status`: clusterd's view in CTDB's format, then (human and JSON forms)
/// the queried node's public-IP problems from failoverd, if any.
///
/// # Errors
///
/// No transportd or clusterd.
pub fn status(ctx: &Globals) -> Result<()> {
    let (m, ips) = block_on_value(async {
        let m = fetch(ctx).await?;
        if let Format::Machine(_) = ctx.format {
            // CTDB's machine form has no place for it.
            return Ok((m, Err(String::new())));
        }
        let (client, _incoming) = ctx.connect().await?;
        let ips: Result<IpStatus, _> = client
            .request(
                Address::new(m.this_node, FAILOVERD),
                GET_IP_STATUS,
                &(),
                ctx.timeout.min(IP_STATUS_WAIT),
            )
            .await;
        let ips = ips.map_err(|e| daemon_error(FAILOVERD, m.this_node, &e));
        Ok::<_, anyhow::Error>((m, ips))
    })?;
    let mut text = render_status(&m, ctx.format);
    text.push_str(&render_ip_status(m.this_node, &ips, ctx.format));
    if let Format::Json = ctx.format {
        // One JSON document: the membership's, with the public-IP part.
        let mut v: serde_json::Value = serde_json::from_str(&render_status(&m, ctx.format))?;
        v["ipfailover"]["public_ips"] = match &ips {
            Ok(s) => serde_json::to_value(s)?,
            Err(e) => serde_json::json!({ "error": e }),
        };
        text = format!("{v:#}\n");
    }
    emit(&text)?;
    Ok(())
}

/// The public-IP part of `status` (human form only; empty when all is
/// well, so that the output is CTDB's).
pub fn render_ip_status(pnn: Pnn, ips: &Result<IpStatus, String>, format: Format) -> String {
    if !matches!(format, Format::Human) {
        return String::new();
    }
    let mut out = String::new();
    match ips {
        Err(e) => {
            let _ = writeln!(out, "Public IPs of node {pnn}: unknown ({e})");
        }
        Ok(s) => {
            if !s.missing.is_empty() || !s.unexpected.is_empty() {
                let _ = writeln!(out, "Public IP problems on node {pnn}:");
                for a in &s.missing {
                    let _ = writeln!(
                        out,
                        "  {a}: assigned to this node but not configured in the kernel"
                    );
                }
                for a in &s.unexpected {
                    let _ = writeln!(
                        out,
                        "  {a}: configured in the kernel but not hosted by this node"
                    );
                }
            }
            if !s.hook_failures.is_empty() {
                let _ = writeln!(out, "Failed event hooks on node {pnn} (oldest first):");
                for f in &s.hook_failures {
                    let _ = writeln!(out, "  {} {}: {}", f.hook, f.event, f.reason);
                }
            }
        }
    }
    out
}

/// `nodestatus`; exits with the OR of the shown nodes' flags.
///
/// # Errors
///
/// No transportd or clusterd; a node that does not exist.
pub fn nodestatus(ctx: &Globals, args: &NodestatusArgs) -> Result<()> {
    let sel = parse_selection(args.nodes.as_deref())?;
    let m = block_on_value(fetch(ctx))?;
    let (text, code) = render_nodestatus(&m, &sel, ctx.format)?;
    emit(&text)?;
    if code != 0 {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::process::exit(i32::from(code));
    }
    Ok(())
}

/// `listnodes`.
///
/// # Errors
///
/// The nodes file cannot be read (`Failed to read nodes from "FILE"`).
pub fn listnodes(ctx: &Globals, args: &ListnodesArgs) -> Result<()> {
    let file = args.config_dir.join("nodes");
    // The load error names the file and the cause (not chained again).
    let nodes = transport::nodes::Nodes::load(&file)
        .map_err(|e| anyhow::anyhow!("Failed to read nodes from \"{}\": {e}", file.display()))?;
    emit(&render_listnodes(&nodes, ctx.format))?;
    Ok(())
}

/// `pnn`'s output: the node's PNN (CTDB prints it alone, also with `-X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PnnReport(pub Pnn);

impl Report for PnnReport {
    fn human(&self) -> String {
        format!("{}\n", self.0)
    }
    fn header(&self) -> Vec<&'static str> {
        vec!["PNN"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![vec![self.0.to_string()]]
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "pnn": self.0 })
    }
    fn machine_one(&self, _sep: char) -> String {
        self.human()
    }
}

/// `leader`'s output: the leader a node follows (CTDB prints it alone,
/// also with `-X`; `UNKNOWN` when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderReport(pub Option<Pnn>);

impl Report for LeaderReport {
    fn human(&self) -> String {
        match self.0 {
            Some(l) => format!("{l}\n"),
            None => "UNKNOWN\n".to_string(),
        }
    }
    fn header(&self) -> Vec<&'static str> {
        vec!["Leader"]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        vec![vec![self
            .0
            .map_or_else(|| "UNKNOWN".to_string(), |l| l.to_string())]]
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "leader": self.0 })
    }
    fn machine_one(&self, _sep: char) -> String {
        self.human()
    }
}

/// Asks every target node's clusterd for its membership and prints one
/// report per node made by `report`.
fn per_node<R: Report>(ctx: &Globals, report: impl Fn(&Membership) -> R) -> Result<()> {
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let targets = ctx.targets(&client).await?;
        let pnns = targets.pnns();
        let results: Vec<(u32, Result<Membership, String>)> = ctx
            .ask_each(&client, &pnns, CLUSTERD, GET_MEMBERSHIP, &())
            .await?;
        let reports = results
            .into_iter()
            .map(|(pnn, r)| (pnn, r.map(|m| report(&m))))
            .collect();
        ctx.print_reports(&targets, reports)
    })
}

/// `pnn`: the queried node's PNN (each node's with `-n all`).
///
/// # Errors
///
/// No transportd or clusterd.
pub fn pnn(ctx: &Globals) -> Result<()> {
    per_node(ctx, |m| PnnReport(m.this_node))
}

/// `leader`: the leader the queried node follows (each node's with `-n
/// all`, which shows at a glance whether they agree).
///
/// # Errors
///
/// No transportd or clusterd.
pub fn leader(ctx: &Globals) -> Result<()> {
    per_node(ctx, |m| LeaderReport(m.leader))
}

/// `disable`, `enable`, `stop`, `continue`, `ban`, `unban` on this node or
/// the `-n` nodes. No output on success; CTDB's message when a node already
/// is in that state (exit 0).
///
/// # Errors
///
/// No transportd or clusterd; a node that does not exist or does not answer.
pub fn admin(ctx: &Globals, op: AdminOp) -> Result<()> {
    if let AdminOp::Ban { seconds: 0 } = op {
        // ctdb's words and status (EINVAL).
        eprintln!("Ban time cannot be zero");
        return Err(Exit(22).into());
    }
    block_on(async {
        let (client, _incoming) = ctx.connect().await?;
        let targets: Vec<Pnn> = match &ctx.nodes {
            Nodes::Local => vec![client.pnn()],
            Nodes::List(l) => {
                if l.len() == 1 {
                    ctx.check_nodes(&client, l).await?;
                }
                l.clone()
            }
            Nodes::All => get_membership(ctx, &client, client.pnn())
                .await?
                .nodes
                .iter()
                .filter(|n| !n.flags.contains(NodeFlags::DELETED))
                .map(|n| n.pnn)
                .collect(),
        };
        let mut failed = Vec::new();
        let mut changed = Vec::new();
        for target in targets {
            let r: Result<AdminOutcome, ClientError> = client
                .request(
                    Address::local(CLUSTERD),
                    ADMIN,
                    &AdminCommand { target, op },
                    ctx.timeout,
                )
                .await;
            match r {
                Ok(AdminOutcome::Done) => changed.push(target),
                Ok(AdminOutcome::Already) => {
                    let text = already_message(target, op);
                    if !text.is_empty() {
                        emit(&format!("{text}\n"))?;
                    }
                }
                Ok(AdminOutcome::Invalid) => failed.push(format!("node {target}: invalid command")),
                // clusterd's own refusals: no such node, target silent.
                Err(ClientError::Remote { error, .. })
                    if matches!(
                        error.code,
                        ErrorCode::BadRequest | ErrorCode::NodeUnreachable
                    ) =>
                {
                    failed.push(error.message.clone());
                }
                Err(e) => failed.push(format!("{:#}", clusterd_error(client.pnn(), e))),
            }
        }
        if !changed.is_empty() && flag_of(op).is_some() {
            // As ctdb: return once the flag shows in the membership and the
            // takeover run that follows has finished, so that `disable &&
            // check the addresses are gone` holds (also when another node
            // of the list failed).
            let waited = match wait_for_flags(ctx, &client, &changed, op).await {
                Ok(()) => crate::ip::ipreallocate_within(ctx, &client, ctx.timeout).await,
                Err(e) => Err(e),
            };
            if let Err(e) = waited {
                failed.push(format!("{e:#}"));
            }
        }
        if !failed.is_empty() {
            bail!("{}", failed.join("\n"));
        }
        Ok(())
    })
}

/// The flag an admin command changes, and whether it ends up set (`None`:
/// no flag, nothing to wait for: `setleaderrole`, which ctdb does not
/// follow with a takeover run either).
fn flag_of(op: AdminOp) -> Option<(NodeFlags, bool)> {
    Some(match op {
        AdminOp::Disable => (NodeFlags::PERMANENTLY_DISABLED, true),
        AdminOp::Enable => (NodeFlags::PERMANENTLY_DISABLED, false),
        AdminOp::Stop => (NodeFlags::STOPPED, true),
        AdminOp::Continue => (NodeFlags::STOPPED, false),
        AdminOp::Ban { .. } => (NodeFlags::BANNED, true),
        AdminOp::Unban => (NodeFlags::BANNED, false),
        AdminOp::SetLeaderRole { .. } => return None,
    })
}

/// How often [`wait_for_flags`] asks (ctdb: every second).
const FLAGS_POLL: Duration = Duration::from_millis(50);

/// Waits until this node's membership shows `op`'s flag on every target,
/// for at most the request time limit (`-t`).
async fn wait_for_flags(
    ctx: &Globals,
    client: &Client,
    targets: &[Pnn],
    op: AdminOp,
) -> Result<()> {
    let Some((flag, set)) = flag_of(op) else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + ctx.timeout;
    loop {
        let pending: Vec<Pnn> = match get_membership(ctx, client, client.pnn()).await {
            Ok(m) => targets
                .iter()
                .copied()
                .filter(|t| {
                    !m.nodes
                        .iter()
                        .any(|n| n.pnn == *t && n.flags.contains(flag) == set)
                })
                .collect(),
            Err(_) => targets.to_vec(),
        };
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "node(s) {pending:?}: the change is not in the membership after {}s",
                ctx.timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(FLAGS_POLL).await;
    }
}

/// [`block_on`] for a body that returns a value.
fn block_on_value<T, F: std::future::Future<Output = Result<T>>>(f: F) -> Result<T> {
    let mut slot = None;
    block_on(async {
        slot = Some(f.await?);
        Ok(())
    })?;
    slot.context("the command produced nothing")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn node(pnn: Pnn, addr: &str, flags: u32) -> NodeInfo {
        NodeInfo {
            pnn,
            address: addr.parse::<IpAddr>().ok(),
            flags: NodeFlags::from_bits(flags),
        }
    }

    /// ctdb.status.001's cluster.
    fn three(this: Pnn, flags: [u32; 3]) -> Membership {
        Membership {
            generation: 654_321,
            leader: Some(0),
            nodes: vec![
                node(0, "192.168.20.41", flags[0]),
                node(1, "192.168.20.42", flags[1]),
                node(2, "192.168.20.43", flags[2]),
            ],
            this_node: this,
            lease_ok: true,
            reassignable: vec![],
            lease: Default::default(),
        }
    }

    #[test]
    fn status_human_matches_ctdb() {
        let got = render_status(&three(0, [0, 0, 0]), Format::Human);
        let want = "\
Number of nodes:3
pnn:0 192.168.20.41    OK (THIS NODE)
pnn:1 192.168.20.42    OK
pnn:2 192.168.20.43    OK
Generation:654321
Size:3
hash:0 lmaster:0
hash:1 lmaster:1
hash:2 lmaster:2
Recovery mode:NORMAL (0)
Leader:0
";
        assert_eq!(got, want);
    }

    #[test]
    fn status_machine_matches_ctdb() {
        let got = render_status(&three(0, [0, 0, 0]), Format::Machine('|'));
        let want = "\
|Node|IP|Disconnected|Unknown|Banned|Disabled|Unhealthy|Stopped|Inactive|PartiallyOnline|ThisNode|
|0|192.168.20.41|0|0|0|0|0|0|0|0|Y|
|1|192.168.20.42|0|0|0|0|0|0|0|0|N|
|2|192.168.20.43|0|0|0|0|0|0|0|0|N|
";
        assert_eq!(got, want);
        let got = render_status(&three(1, [0x24, 0x08, 0x01]), Format::Machine(':'));
        let want = "\
:Node:IP:Disconnected:Unknown:Banned:Disabled:Unhealthy:Stopped:Inactive:PartiallyOnline:ThisNode:
:0:192.168.20.41:0:0:0:1:0:1:1:0:N:
:1:192.168.20.42:0:0:1:0:0:0:1:0:Y:
:2:192.168.20.43:1:0:0:0:0:0:1:0:N:
";
        assert_eq!(got, want);
    }

    #[test]
    fn status_without_leader_and_with_inactive_nodes() {
        let mut m = three(2, [0x01, 0x08, 0]);
        m.leader = None;
        m.lease_ok = false;
        let got = render_status(&m, Format::Human);
        let want = "\
Number of nodes:3
pnn:0 192.168.20.41    DISCONNECTED|INACTIVE
pnn:1 192.168.20.42    BANNED|INACTIVE
pnn:2 192.168.20.43    OK (THIS NODE)
Generation:654321
Size:1
hash:0 lmaster:2
Recovery mode:RECOVERY (1)
Leader:UNKNOWN
";
        assert_eq!(got, want);
    }

    #[test]
    fn deleted_nodes_are_counted_but_not_listed() {
        let mut m = three(0, [0, 0x10, 0]);
        m.nodes[1].address = None;
        let got = render_status(&m, Format::Human);
        assert!(
            got.starts_with(
                "Number of nodes:3 (including 1 deleted nodes)\npnn:0 192.168.20.41    OK (THIS NODE)\npnn:2 192.168.20.43    OK\n"
            ),
            "{got}"
        );
        let x = render_status(&m, Format::Machine('|'));
        assert_eq!(x.lines().count(), 3, "{x}");
    }

    #[test]
    fn nodestatus_all_matches_ctdb_and_ors_the_flags() {
        let m = three(2, [0x04 | 0x20, 0x08, 0]);
        let (text, code) = render_nodestatus(&m, &Selection::All, Format::Human).unwrap();
        let want = "\
Number of nodes:3
pnn:0 192.168.20.41    DISABLED|STOPPED|INACTIVE
pnn:1 192.168.20.42    BANNED|INACTIVE
pnn:2 192.168.20.43    OK (THIS NODE)
";
        assert_eq!(text, want);
        assert_eq!(code, 0x24 | 0x08);
    }

    #[test]
    fn nodestatus_one_node_has_no_header() {
        let m = three(0, [0, 0x02, 0]);
        let (text, code) = render_nodestatus(&m, &Selection::List(vec![1]), Format::Human).unwrap();
        assert_eq!(text, "pnn:1 192.168.20.42    UNHEALTHY\n");
        assert_eq!(code, 2);
        let (text, code) = render_nodestatus(&m, &Selection::This, Format::Human).unwrap();
        assert_eq!(text, "pnn:0 192.168.20.41    OK (THIS NODE)\n");
        assert_eq!(code, 0);
        let (x, _) = render_nodestatus(&m, &Selection::This, Format::Machine('|')).unwrap();
        assert_eq!(
            x,
            "|Node|IP|Disconnected|Unknown|Banned|Disabled|Unhealthy|Stopped|Inactive|PartiallyOnline|ThisNode|\n|0|192.168.20.41|0|0|0|0|0|0|0|0|Y|\n"
        );
        let e = render_nodestatus(&m, &Selection::List(vec![4]), Format::Human).unwrap_err();
        assert_eq!(e.to_string(), "Node 4 does not exist");
    }

    #[test]
    fn json_forms_parse() {
        let m = three(0, [0, 0x04, 0]);
        let v: serde_json::Value = serde_json::from_str(&render_status(&m, Format::Json)).unwrap();
        assert_eq!(v["leader"], 0);
        let n1 = &v["node_status"]["nodes"]["1"];
        assert_eq!(n1["flags_raw"], 4);
        assert_eq!(n1["flags"]["disabled"], true);
        assert_eq!(n1["flags"]["inactive"], false);
        assert_eq!(n1["flags_ok"], false);
        assert_eq!(v["node_status"]["node_count"], 3);
        assert_eq!(v["vnn_status"]["size"], 3);
        assert_eq!(v["recovery_mode_raw"], 0);
        let (j, code) = render_nodestatus(&m, &Selection::All, Format::Json).unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(code, 4);
    }

    #[test]
    fn listnodes_like_ctdb() {
        let nodes = transport::nodes::Nodes::parse(
            std::path::Path::new("nodes"),
            "192.168.20.41\n#192.168.20.42\n\n192.168.20.43\n",
        )
        .unwrap();
        assert_eq!(
            render_listnodes(&nodes, Format::Human),
            "192.168.20.41\n192.168.20.43\n"
        );
        assert_eq!(
            render_listnodes(&nodes, Format::Machine('|')),
            "|0|192.168.20.41|\n|2|192.168.20.43|\n"
        );
    }

    #[test]
    fn already_messages() {
        assert_eq!(
            already_message(1, AdminOp::Disable),
            "Node 1 is already disabled"
        );
        assert_eq!(
            already_message(2, AdminOp::Ban { seconds: 5 }),
            "Node 2 is already banned"
        );
        assert_eq!(already_message(0, AdminOp::Unban), "Node 0 is not banned");
    }
}
