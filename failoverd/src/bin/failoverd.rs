//! `failoverd`: public IPs for one node — follows clusterd's membership,
//! carries out takeover runs on this node and, on the leader, plans them.
//!
//! `failoverd [--config-dir DIR]` reads `DIR/ipfailover.toml` and
//! `DIR/public_addresses` (absent = no public addresses), connects to
//! transportd's socket `<run_dir>/transport.sock` (retrying for a few seconds
//! while it starts) and runs until SIGTERM/SIGINT or a SHUTDOWN control,
//! then drops its public addresses. A bad configuration is reported with its
//! file and line and exits with code 1 before anything is applied. The
//! daemon itself is [`failoverd::entry::run`], which masterd's
//! single-process model runs too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use failoverd::entry;

/// ipfailover's public-address daemon.
#[derive(Debug, Parser)]
#[command(name = "failoverd", version, about)]
struct Args {
    /// Configuration directory (ipfailover.toml, public_addresses).
    #[arg(long, value_name = "DIR", default_value = config::DEFAULT_CONFIG_DIR)]
    config_dir: PathBuf,
}

fn main() -> ExitCode {
    let dir = Args::parse().config_dir;
    let loaded = match entry::load(&dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("failoverd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hook = match transport::logging::init(&loaded.log_level) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("failoverd: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    transport::controls::run_to_exit(
        "failoverd",
        transport::controls::keep_realtime(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all(),
        )
        .build(),
        entry::run(
            loaded,
            Some(hook),
            transport::controls::termination_signal(),
        ),
    )
}
