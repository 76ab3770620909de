//! What every command shares: the global options (CTDB's `-n`, `-X`, `-x`,
//! `-t`, plus `--run-dir` and `--json`) and the connection to transportd.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use transport::client::{Client, Incoming};

use crate::output::{parse_nodes, Format, Nodes};

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
        global = true,
        value_name = "SECONDS",
        default_value_t = 10.0
    )]
    pub timeout: f64,
}

/// The parsed global options.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Directory of the sockets.
    pub run_dir: PathBuf,
    /// The nodes addressed with `-n`.
    pub nodes: Nodes,
    /// The output format.
    #[allow(dead_code)] // read by the state-reading commands as they land
    pub format: Format,
    /// Time limit of each request.
    pub timeout: Duration,
}

impl Ctx {
    /// Checks the global options.
    ///
    /// # Errors
    ///
    /// A bad `-n` list or timeout, named.
    pub fn new(args: &GlobalArgs) -> Result<Ctx> {
        let nodes = match &args.node {
            None => Nodes::Local,
            Some(n) => parse_nodes(n).map_err(anyhow::Error::msg)?,
        };
        let format = if args.json {
            Format::Json
        } else if let Some(sep) = args.separator {
            Format::Machine(sep)
        } else if args.machine {
            Format::Machine('|')
        } else {
            Format::Human
        };
        if !(args.timeout > 0.0 && args.timeout <= 3600.0) {
            anyhow::bail!(
                "-t {}: the timeout must be between 0 and 3600 seconds",
                args.timeout
            );
        }
        Ok(Ctx {
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
            Ok(r) => r.with_context(|| {
                format!(
                    "cannot connect to transportd at {}: is ipfailover running on this node?",
                    socket.display()
                )
            }),
            Err(_) => anyhow::bail!(
                "transportd at {} did not answer within {:?}",
                socket.display(),
                self.timeout
            ),
        }
    }
}

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
