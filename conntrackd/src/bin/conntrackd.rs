//! `conntrackd`: the tracked-connection table of one node (see
//! docs/conntrackd.md). Reads `ipfailover.toml` from `--config-dir`,
//! connects to transportd's socket in the run directory and runs until
//! SIGTERM, SIGINT or a SHUTDOWN control.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

use conntrackd::daemon::{self, Options};
use transport::client::Client;

/// Tracks the TCP clients of the public addresses and replicates them to
/// every node.
#[derive(Debug, Parser)]
#[command(name = "conntrackd", version, about)]
struct Args {
    /// Configuration directory (ipfailover.toml).
    #[arg(long, default_value = config::DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    /// Public addresses hosted from the start, before failoverd says
    /// anything (testing without failoverd).
    #[arg(long = "host", value_name = "ADDRESS")]
    hosted: Vec<std::net::IpAddr>,
}

/// How long to retry connecting while transportd starts.
const CONNECT_FOR: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args = Args::parse();
    let loaded = match config::load(&args.config_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("conntrackd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = match EnvFilter::try_new(&loaded.config.logging.level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "conntrackd: bad logging level {:?} in {}: {e}",
                loaded.config.logging.level,
                loaded.dir.join(config::FILE_NAME).display()
            );
            return ExitCode::FAILURE;
        }
    };
    let (layer, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let run_dir = loaded.resolve(&loaded.config.transport.run_dir);
    let incarnation = match daemon::next_incarnation(&run_dir.join("conntrackd.incarnation")) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut opts = Options::from_config(&loaded.config, incarnation);
    opts.initial_hosted = args.hosted;
    let nodes_path = loaded.dir.join("nodes");
    match std::fs::read_to_string(&nodes_path) {
        Ok(text) => opts.nodes = Some(daemon::node_pnns(&text)),
        Err(e) => tracing::warn!(
            file = %nodes_path.display(),
            error = %e,
            "no nodes file: replication from any node is accepted"
        ),
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("conntrackd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let socket = run_dir.join("transport.sock");
        let start = Instant::now();
        let (client, incoming) = loop {
            match Client::connect_unix(&socket, "conntrackd").await {
                Ok(c) => break c,
                Err(e) if start.elapsed() < CONNECT_FOR => {
                    tracing::debug!(error = %e, "transportd not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    eprintln!(
                        "conntrackd: cannot connect to transportd at {}: {e}",
                        socket.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        };
        let handle = Arc::new(handle);
        client.set_log_level_hook(move |level| {
            if let Some(level) = level {
                let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                handle.reload(f).map_err(|e| e.to_string())?;
            }
            handle
                .with_current(|f| f.to_string())
                .map_err(|e| e.to_string())
        });
        let shutdown = async {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        match daemon::run(opts, client, incoming, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}
