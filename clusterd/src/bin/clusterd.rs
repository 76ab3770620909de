//! `clusterd`: membership, heartbeats, leader, cluster lock and node
//! administration for one node, over transportd.
//!
//! `clusterd [--config-dir DIR]` reads `DIR/ipfailover.toml` and `DIR/nodes`,
//! connects to transportd's socket (retrying for a few seconds while it
//! starts) and runs until SIGTERM/SIGINT or a SHUTDOWN control. A bad
//! configuration is reported with its file and line and exits with code 1
//! before anything is started.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

use clusterd::daemon::{self, Settings};
use transport::controls::LogLevelHook;

/// How long clusterd waits for transportd's socket at start.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// ipfailover's membership daemon.
#[derive(Debug, Parser)]
#[command(name = "clusterd", version, about)]
struct Args {
    /// Configuration directory (ipfailover.toml, nodes).
    #[arg(long, value_name = "DIR", default_value = config::DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Settings::load(&args.config_dir, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("clusterd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hook = match init_logging(&settings.log_level) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("clusterd: logging level {:?}: {e}", settings.log_level);
            return ExitCode::FAILURE;
        }
    };
    // One thread: clusterd's work is tiny and latency-bound.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clusterd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let (client, incoming) = match daemon::connect(&settings.socket, CONNECT_PATIENCE).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("clusterd: {e}");
                return ExitCode::FAILURE;
            }
        };
        client.set_log_level_hook(move |level| hook(level));
        match daemon::run(settings, client, incoming, signals()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("clusterd: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Completes on SIGTERM or SIGINT.
async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SHUTDOWN");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// Plain-text logging to stderr with a filter the LOG_LEVEL control can
/// change at run time.
fn init_logging(level: &str) -> Result<LogLevelHook, String> {
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    let (layer, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .map_err(|e| e.to_string())?;
    let current = Arc::new(std::sync::Mutex::new(level.to_owned()));
    Ok(Arc::new(move |set: Option<&str>| {
        let mut cur = current
            .lock()
            .map_err(|_| "log level lock poisoned".to_owned())?;
        if let Some(new) = set {
            let filter = EnvFilter::try_new(new).map_err(|e| format!("bad filter {new:?}: {e}"))?;
            handle.reload(filter).map_err(|e| e.to_string())?;
            new.clone_into(&mut cur);
        }
        Ok(cur.clone())
    }))
}
