//! `conntrackd`: the tracked-connection table of one node (see
//! docs/conntrackd.md). Reads `ipfailover.toml` from `--config-dir`,
//! connects to transportd's socket in the run directory and runs until
//! SIGTERM, SIGINT or a SHUTDOWN control; SIGHUP reloads the configuration.
//! The daemon itself is [`conntrackd::entry::run`] on the skeleton
//! [`transport::tdaemon`], which masterd's single-process model runs too.

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
    let loaded = entry::load(&args.config_dir).map(|mut l| {
        l.settings.initial_hosted = args.hosted;
        l
    });
    transport::tdaemon::main(
        entry::NAME,
        loaded,
        tokio::runtime::Builder::new_current_thread().enable_all(),
        entry::run,
    )
}
