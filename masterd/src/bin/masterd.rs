//! `masterd`: starts and watches the ipfailover daemons of one node.
//!
//! ```text
//! masterd [--config-dir DIR] [--single-process] [--bin-dir DIR] [--daemons LIST]
//! ```
//!
//! The configuration directory is validated first: a bad `ipfailover.toml`,
//! `nodes`, cluster key or `public_addresses` stops masterd with exit code 1
//! and nothing started. SIGHUP reloads it ([`masterd::reload`]); SIGTERM
//! and SIGINT stop the node.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use masterd::{daemons, multi, setup, single, MasterError, Settings};

/// Starts and watches the ipfailover daemons of one node.
#[derive(Debug, Parser)]
#[command(name = "masterd", version, about)]
struct Args {
    /// The node's configuration directory (ipfailover.toml, nodes,
    /// public_addresses, cluster.key).
    #[arg(long, value_name = "DIR", default_value = config::DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
    /// Run every daemon as a task of this process instead of as child
    /// processes.
    #[arg(long)]
    single_process: bool,
    /// Where the daemon binaries are (default: masterd's own directory).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Run only these daemons (comma-separated, must include transportd;
    /// default: transportd,clusterd,conntrackd,failoverd).
    #[arg(long, value_name = "LIST")]
    daemons: Option<String>,
    /// Seconds each daemon gets to stop (after SIGTERM) before it is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    stop_grace: u64,
    /// Only validate the configuration directory and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("masterd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), MasterError> {
    let cfg = setup::load(&args.config_dir)?;
    let daemons = daemons::select(args.daemons.as_deref())?;
    let opts = Settings {
        daemons,
        stop_grace: Duration::from_secs(args.stop_grace),
    };
    // Everything that can be checked without starting anything is checked
    // now: binaries (multi-process) or in-process entry points.
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => multi::default_bin_dir()?,
    };
    if args.single_process {
        for d in &opts.daemons {
            if single::entry(d.name).is_none() {
                return Err(MasterError::NotInProcess {
                    daemon: d.name.to_owned(),
                });
            }
        }
    } else {
        multi::specs(&opts, &bin_dir, cfg.dir(), 0)?; // binaries present
    }
    if args.check {
        println!(
            "{}: configuration OK ({} node(s), {} public address(es))",
            cfg.dir().display(),
            cfg.nodes.iter().count(),
            cfg.public_addresses
        );
        return Ok(());
    }
    let level = cfg.loaded.config.logging.level.clone();
    let hook = match transport::logging::init(&level) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("masterd: logging: {e}");
            None
        }
    };
    for w in &cfg.loaded.warnings {
        tracing::warn!("{w}");
    }
    let runtime = runtime_builder(args.single_process)
        .enable_all()
        .build()
        .map_err(MasterError::Runtime)?;
    runtime.block_on(async move {
        tracing::info!(
            config_dir = %cfg.dir().display(),
            model = if args.single_process { "single-process" } else { "multi-process" },
            "masterd starting"
        );
        let reloads = transport::tdaemon::hangup_reloads();
        if args.single_process {
            single::run(
                cfg,
                opts,
                hook,
                reloads,
                transport::controls::termination_signal(),
            )
            .await
        } else {
            multi::run(
                cfg,
                opts,
                &bin_dir,
                hook,
                reloads,
                transport::controls::termination_signal(),
            )
            .await
        }
    })
}

/// Multi-process: one thread is plenty for a supervisor (and the children's
/// PR_SET_PDEATHSIG then follows the main thread, which lives as long as
/// masterd). Single-process: two workers by default;
/// `IPFAILOVER_MASTERD_THREADS=N` sets the number (1: one thread for
/// failoverd, conntrackd and masterd's own work; transportd and clusterd
/// have a thread each, see `single::HeartbeatPath`).
fn runtime_builder(single_process: bool) -> tokio::runtime::Builder {
    if !single_process {
        return tokio::runtime::Builder::new_current_thread();
    }
    match std::env::var("IPFAILOVER_MASTERD_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(2)
    {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
}
