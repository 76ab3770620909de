//! `conntrackd`: the tracked-connection table of one node (see
//! docs/conntrackd.md). Reads `ipfailover.toml` from `--config-dir`,
//! connects to transportd's socket in the run directory and runs until
//! SIGTERM, SIGINT or a SHUTDOWN control. The daemon itself is
//! [`conntrackd::entry::run`], which masterd's single-process model runs too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use conntrackd::entry;

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

fn main() -> ExitCode {
    let args = Args::parse();
    let mut loaded = match entry::load(&args.config_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("conntrackd: {e}");
            return ExitCode::FAILURE;
        }
    };
    loaded.options.initial_hosted = args.hosted;
    let hook = match transport::logging::init(&loaded.log_level) {
        Ok(h) => h,
        Err(e) => {
            eprintln!(
                "conntrackd: {} [logging] level: {e}",
                args.config_dir.join(config::FILE_NAME).display()
            );
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    transport::controls::run_to_exit(
        "conntrackd",
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        entry::run(
            loaded,
            Some(hook),
            transport::controls::termination_signal(),
        ),
    )
}
