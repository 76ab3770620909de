//! What every command shares: the global options (CTDB's `-n`, `-X`, `-x`,
//! `-t`, plus `--run-dir` and `--json`), the connection to transportd, the
//! nodes a command addresses, and the operator's wording of a daemon that
//! did not answer (not running, node not connected, timed out).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use transport::client::{Client, ClientError, Incoming};
use transport::proto::control::{PeerList, LIST_PEERS};
use transport::proto::service::{well_known_name, TRANSPORT};
use transport::proto::{Address, ErrorCode, LOCAL};

use crate::output::{emit, parse_nodes, render_many, render_one, Format, Nodes, Report};

/// Global options, accepted before or after the command name.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Directory of ipfailover's sockets.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/run/ipfailover"
    )]
    pub run_dir: PathBuf,
    /// The node(s) to address: a PNN, a list such as 0,2, or "all"
    /// (default: this node).
    #[arg(short = 'n', long = "node", global = true, value_name = "PNN|all")]
    pub node: Option<String>,
    /// Machine-readable output: `|field|field|` rows after a header row.
    #[arg(short = 'X', global = true)]
    pub machine: bool,
    /// The same as -X (ctdb's older spelling).
    #[arg(short = 'Y', global = true)]
    pub machine_y: bool,
    /// Machine-readable output with this separator instead of `|`.
    #[arg(short = 'x', global = true, value_name = "SEP")]
    pub separator: Option<char>,
    /// JSON output.
    #[arg(short = 'j', long = "json", global = true)]
    pub json: bool,
    /// Time limit of each request to a daemon, in seconds.
    #[arg(
        short = 't',
        long = "timeout",
        visible_alias = "timelimit",
        global = true,
        value_name = "SECONDS",
        default_value_t = 10.0
    )]
    pub timeout: f64,
    /// Give up (exit status 1) if the whole command runs longer than this
    /// (default: $CTDB_TIMEOUT, else 120; 0: the default).
    #[arg(
        short = 'T',
        long = "maxruntime",
        global = true,
        value_name = "SECONDS"
    )]
    pub maxruntime: Option<u64>,
    /// ctdb's debug level of the tool itself (accepted for compatibility;
    /// ipfailover's command logs nothing).
    #[arg(short = 'd', long = "debug", global = true, value_name = "LEVEL")]
    pub debug: Option<String>,
}

/// The parsed global options.
#[derive(Debug, Clone)]
pub struct Globals {
    /// Directory of the sockets.
    pub run_dir: PathBuf,
    /// The nodes addressed with `-n`.
    pub nodes: Nodes,
    /// The output format.
    pub format: Format,
    /// Time limit of each request.
    pub timeout: Duration,
}

impl Globals {
    /// Checks the global options.
    ///
    /// # Errors
    ///
    /// A bad `-n` list or timeout, named.
    pub fn new(args: &GlobalArgs) -> Result<Globals> {
        let nodes = match &args.node {
            None => Nodes::Local,
            Some(n) => parse_nodes(n).map_err(anyhow::Error::msg)?,
        };
        if args.json && (args.machine || args.machine_y || args.separator.is_some()) {
            anyhow::bail!("--json and -Y options are mutually exclusive");
        }
        let format = if args.json {
            Format::Json
        } else if let Some(sep) = args.separator {
            Format::Machine(sep)
        } else if args.machine || args.machine_y {
            Format::Machine('|')
        } else {
            Format::Human
        };
        if !(args.timeout > 0.0 && args.timeout <= 3600.0) {
            anyhow::bail!(
                "-t {}: the timeout must be more than 0 and at most 3600 seconds",
                args.timeout
            );
        }
        Ok(Globals {
            run_dir: args.run_dir.clone(),
            nodes,
            format,
            timeout: Duration::from_secs_f64(args.timeout),
        })
    }

    /// transportd's socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("transport.sock")
    }

    /// Connects to this node's transportd, failing within the timeout with
    /// a message that says what to check.
    ///
    /// # Errors
    ///
    /// transportd is not running, refuses us, or does not answer in time.
    pub async fn connect(&self) -> Result<(Client, Incoming)> {
        let socket = self.socket();
        match tokio::time::timeout(self.timeout, Client::connect_unix(&socket, "cli")).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(ClientError::Connect { source, .. })) => anyhow::bail!(
                "cannot connect to transportd at {}: {source} (is ipfailover running on this node?)",
                socket.display()
            ),
            Ok(Err(e @ ClientError::Register { .. })) => {
                anyhow::bail!("transportd at {} refused this command: {e}", socket.display())
            }
            Ok(Err(e)) => anyhow::bail!(
                "transportd at {} did not complete the connection: {e}",
                socket.display()
            ),
            Err(_) => anyhow::bail!(
                "transportd at {} did not answer within {}s",
                socket.display(),
                self.timeout.as_secs_f64()
            ),
        }
    }
}

/// The nodes a reading command addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// One node: CTDB's output as is.
    One(u32),
    /// Several nodes: one block per node (see [`crate::output`]).
    Many(Vec<u32>),
}

impl Targets {
    /// The nodes, in order.
    pub fn pnns(&self) -> Vec<u32> {
        match self {
            Targets::One(p) => vec![*p],
            Targets::Many(l) => l.clone(),
        }
    }
}

impl Globals {
    /// Resolves `-n` for a reading command: this node, the given PNNs, or
    /// every node of the nodes file (`all`: this one and every configured
    /// peer, connected or not, so a node that is down is reported).
    ///
    /// # Errors
    ///
    /// transportd does not list its peers.
    pub async fn targets(&self, client: &Client) -> Result<Targets> {
        Ok(match &self.nodes {
            Nodes::Local => Targets::One(client.pnn()),
            Nodes::List(l) => {
                self.check_nodes(client, l).await?;
                if l.len() == 1 {
                    Targets::One(l[0])
                } else {
                    Targets::Many(l.clone())
                }
            }
            Nodes::All => Targets::Many(self.all_nodes(client, false).await?),
        })
    }

    /// The one node a command acts on: `-n PNN` (checked as ctdb checks
    /// it, [`Globals::check_nodes`]) or this node; a list or `all` is refused.
    ///
    /// # Errors
    ///
    /// A list or `all`; a node that does not exist or is not connected.
    pub async fn one_node(&self, client: &Client) -> Result<u32> {
        match &self.nodes {
            Nodes::Local => Ok(client.pnn()),
            Nodes::List(l) if l.len() == 1 => {
                self.check_nodes(client, l).await?;
                Ok(l[0])
            }
            _ => anyhow::bail!("this command acts on one node: give -n PNN (not a list or 'all')"),
        }
    }

    /// Refuses a PNN that is not a node of the nodes file, as CTDB does
    /// (`Node 5 does not exist`), before anything is asked of it; a single
    /// node must also be connected (`Node 2 has status
    /// DISCONNECTED|INACTIVE`, ctdb's `verify_pnn`).
    ///
    /// # Errors
    ///
    /// The first unknown PNN, a single node that is down; transportd does
    /// not list its peers.
    pub async fn check_nodes(&self, client: &Client, pnns: &[u32]) -> Result<()> {
        let peers = self.peers(client).await?;
        let known = |p: u32| p == client.pnn() || peers.iter().any(|q| q.pnn == p);
        if let Some(p) = pnns.iter().find(|p| !known(**p)) {
            anyhow::bail!("Node {p} does not exist");
        }
        // One node named with -n: as ctdb, a node that is not connected is
        // refused at once instead of waiting for its answer.
        if let [one] = pnns {
            if peers.iter().any(|q| q.pnn == *one && !q.connected) {
                anyhow::bail!("Node {one} has status DISCONNECTED|INACTIVE");
            }
        }
        Ok(())
    }

    /// Checks that every node of an explicit node list exists (connected
    /// or not).
    ///
    /// # Errors
    ///
    /// `Node N does not exist`; transportd does not answer.
    pub async fn check_exist(&self, client: &Client, pnns: &[u32]) -> Result<()> {
        let all = self.all_nodes(client, false).await?;
        if let Some(p) = pnns.iter().find(|p| !all.contains(p)) {
            anyhow::bail!("Node {p} does not exist");
        }
        Ok(())
    }

    /// transportd's peers (every node of the nodes file but this one).
    ///
    /// # Errors
    ///
    /// transportd does not answer `LIST_PEERS`.
    pub async fn peers(&self, client: &Client) -> Result<Vec<transport::proto::control::PeerInfo>> {
        let list: PeerList = client
            .request(Address::local(TRANSPORT), LIST_PEERS, &(), self.timeout)
            .await
            .map_err(|e| anyhow::anyhow!(daemon_error(TRANSPORT, LOCAL, &e)))?;
        Ok(list.peers)
    }

    /// This node and its peers (only the connected ones if `connected`),
    /// in PNN order.
    ///
    /// # Errors
    ///
    /// transportd does not answer `LIST_PEERS`.
    pub async fn all_nodes(&self, client: &Client, connected: bool) -> Result<Vec<u32>> {
        let mut all: Vec<u32> = self
            .peers(client)
            .await?
            .iter()
            .filter(|p| p.connected || !connected)
            .map(|p| p.pnn)
            .collect();
        all.push(client.pnn());
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// Sends `req` to `service` on each node at once and collects each
    /// answer, or the operator's reason why there is none.
    ///
    /// # Errors
    ///
    /// The request cannot be encoded.
    pub async fn ask_each<Req, Resp>(
        &self,
        client: &Client,
        pnns: &[u32],
        service: u16,
        opcode: u32,
        req: &Req,
    ) -> Result<Vec<(u32, Result<Resp, String>)>>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let dsts: Vec<Address> = pnns.iter().map(|&p| Address::new(p, service)).collect();
        let answers = client
            .request_each(&dsts, opcode, req, self.timeout)
            .await
            .context("encoding the request")?;
        Ok(answers
            .into_iter()
            .map(|(dst, r)| (dst.pnn, r.map_err(|e| daemon_error(service, dst.pnn, &e))))
            .collect())
    }

    /// Sends `req` to `service` on one node.
    ///
    /// # Errors
    ///
    /// The operator's reason why there is no answer (see [`daemon_error`]).
    pub async fn ask<Req, Resp>(
        &self,
        client: &Client,
        pnn: u32,
        service: u16,
        opcode: u32,
        req: &Req,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        client
            .request(Address::new(pnn, service), opcode, req, self.timeout)
            .await
            .map_err(|e| anyhow::anyhow!(daemon_error(service, pnn, &e)))
    }

    /// Prints one report, or one per node; a node without an answer is
    /// reported on stderr, and then the command fails with [`Exit`]`(1)`.
    ///
    /// # Errors
    ///
    /// One node and no answer: its reason. Several: [`Exit`] if any failed.
    pub fn print_reports<R: Report>(
        &self,
        targets: &Targets,
        mut results: Vec<(u32, Result<R, String>)>,
    ) -> Result<()> {
        if let Targets::One(_) = targets {
            if let Some((_, r)) = results.pop() {
                let r = r.map_err(anyhow::Error::msg)?;
                emit(&render_one(&r, self.format))?;
                return Ok(());
            }
        }
        emit(&render_many(&results, self.format))?;
        let mut failed = false;
        for (_, r) in &results {
            if let Err(e) = r {
                eprintln!("{e}");
                failed = true;
            }
        }
        if failed {
            return Err(Exit(1).into());
        }
        Ok(())
    }
}

/// The operator's reason why `service` on node `pnn` gave no answer:
/// "failoverd is not running on node 1", "node 2 is not connected",
/// "conntrackd on node 0 did not answer within 2s", or the daemon's own
/// message for a refused request.
pub fn daemon_error(service: u16, pnn: u32, e: &ClientError) -> String {
    let name = well_known_name(service).map_or_else(
        || format!("service {service}"),
        |n| {
            if n == "transport" {
                "transportd".to_string()
            } else {
                n.to_string()
            }
        },
    );
    let node = if pnn == LOCAL {
        "this node".to_string()
    } else {
        format!("node {pnn}")
    };
    match e {
        ClientError::Remote { error, .. } => match error.code {
            ErrorCode::UnknownService => format!("{name} is not running on {node}"),
            ErrorCode::NodeUnreachable => format!("{node} is not connected"),
            ErrorCode::ShuttingDown => format!("{name} on {node} is shutting down"),
            ErrorCode::UnknownOpcode => {
                format!("{name} on {node} does not know this request (is it an older version?)")
            }
            _ => error.message.clone(),
        },
        ClientError::Timeout { after, .. } => {
            format!(
                "{name} on {node} did not answer within {}s",
                after.as_secs_f64()
            )
        }
        ClientError::Closed { .. } => "transportd closed the connection".to_string(),
        ClientError::Payload { source, .. } => {
            format!("{name} on {node} sent a reply this command cannot read: {source}")
        }
        other => other.to_string(),
    }
}

/// Ends the command with this exit status after its output (and its
/// reasons on stderr) have been printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Runs an async command body on a small runtime.
///
/// # Errors
///
/// The runtime cannot start, or the body fails.
pub fn block_on<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(f)
}
