//! `clusterd`: membership, heartbeats, leader, cluster lock and node
//! administration for one node, over transportd.
//!
//! `clusterd [--config-dir DIR]` reads `DIR/ipfailover.toml` and `DIR/nodes`,
//! connects to transportd's socket (retrying while it starts) and runs until
//! SIGTERM/SIGINT or a SHUTDOWN control; SIGHUP reloads the configuration. A
//! bad configuration is reported with its file and line and exits with code
//! 1 before anything is started. The daemon itself is
//! [`clusterd::entry::run`] on the skeleton [`transport::tdaemon`], which
//! masterd's single-process model runs too.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use clusterd::entry;

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
    // One thread: clusterd's work is tiny and latency-bound.
    transport::tdaemon::main(
        entry::NAME,
        entry::load(&args.config_dir),
        tokio::runtime::Builder::new_current_thread().enable_all(),
        entry::run,
    )
}
