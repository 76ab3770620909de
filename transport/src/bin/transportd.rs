//! `transportd`: routes ipfailover frames between the local daemons (Unix
//! socket) and the other nodes (authenticated, encrypted TCP).
//!
//! `transportd --generate-key FILE` writes a new cluster key and exits.
//!
//! `transportd --config-dir DIR` takes everything from the node's
//! configuration directory instead of flags: `ipfailover.toml`
//! (`[transport]`, `[cluster] pnn`, `[logging] level`), the `nodes` file and
//! the cluster key file. This is how masterd starts it: the daemon skeleton
//! ([`transport::tdaemon`]) over [`transport::transportd::entry`], with
//! SIGHUP reloading the directory (docs/tdaemon.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use transport::controls::LogLevelHook;
use transport::nodes::Nodes;
use transport::transportd::{self, entry, key, peercred::Policy, Settings};

// Counts heap allocations for STATISTICS (`allocations`): the benchmark checks
// that steady-state routing makes none.
#[global_allocator]
static ALLOC: alloccount::Counting = alloccount::Counting;

/// Routes ipfailover messages between local daemons and cluster nodes.
#[derive(Debug, Parser)]
#[command(name = "transportd", version, about)]
struct Args {
    /// Read ipfailover.toml, `nodes` and the cluster key from this directory
    /// (the other flags except --log-level and --generate-key are then not
    /// allowed; the log level comes from the file).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["run_dir", "nodes", "pnn", "port", "key", "group"])]
    config_dir: Option<PathBuf>,
    /// Directory of the local socket (transport.sock).
    #[arg(long, default_value = transportd::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// CTDB-format nodes file (one address per line; line N is node N).
    /// Without it transportd serves this node only.
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// This node's number; default: the first nodes-file address that can be bound.
    #[arg(long)]
    pnn: Option<u32>,
    /// TCP port of the node-to-node links.
    #[arg(long, default_value_t = transportd::DEFAULT_PORT)]
    port: u16,
    /// Cluster key file (64 hex characters or 32 raw bytes, not world-readable).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Group whose members may use the local socket (root always may).
    #[arg(long)]
    group: Option<String>,
    /// Initial log filter (tracing syntax, e.g. "info" or "transport=debug").
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Write a new random cluster key to FILE (mode 0600) and exit.
    #[arg(long, value_name = "FILE")]
    generate_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.generate_key {
        return match key::generate(path) {
            Ok(_) => {
                eprintln!("wrote a new cluster key to {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("transportd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(dir) = &args.config_dir {
        // The daemon skeleton: the directory, logging, SIGHUP reloads,
        // SIGTERM/SIGINT (what masterd runs).
        return transport::tdaemon::main(
            entry::NAME,
            entry::load(dir),
            runtime_builder().enable_all(),
            entry::run,
        );
    }
    let hook = match transport::logging::init(&args.log_level) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("transportd: bad log level {:?}: {e}", args.log_level);
            return ExitCode::from(2);
        }
    };
    match setup(args, hook) {
        Ok(config) => serve(config),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("transportd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn setup(args: Args, hook: LogLevelHook) -> Result<Settings, String> {
    let nodes = match &args.nodes {
        Some(p) => Nodes::load(p).map_err(|e| e.to_string())?,
        None => Nodes::default(),
    };
    let key = match &args.key {
        Some(p) => Some(key::ClusterKey::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let policy = Policy::new(args.group.as_deref()).map_err(|e| format!("--group: {e}"))?;
    Ok(Settings {
        run_dir: args.run_dir,
        nodes,
        pnn: args.pnn,
        port: args.port,
        key,
        policy,
        log_level: Some(hook),
    })
}

fn serve(settings: Settings) -> ExitCode {
    let runtime = match transport::controls::keep_realtime(runtime_builder().enable_all()).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("transportd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    transport::controls::lock_memory_if_realtime();
    runtime.block_on(async move {
        let daemon = match transportd::Daemon::bind(settings).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("transportd: {e}");
                return ExitCode::FAILURE;
            }
        };
        // SIGHUP must not end the process; without a configuration
        // directory there is nothing to reload.
        let _reloads = transport::tdaemon::hangup_reloads();
        daemon.run(transport::controls::termination_signal()).await;
        ExitCode::SUCCESS
    })
}

/// One thread by default: a frame is read, routed and written to an idle
/// destination in the same task, without crossing threads (measured faster
/// than two workers for both round trip and throughput);
/// `IPFAILOVER_TRANSPORTD_THREADS=N` selects a multi-threaded runtime.
fn runtime_builder() -> tokio::runtime::Builder {
    match std::env::var("IPFAILOVER_TRANSPORTD_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
    {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
}
