//! `failoverd`: public IPs for one node — follows clusterd's membership,
//! carries out takeover runs on this node and, on the leader, plans them.
//!
//! `failoverd [--config-dir DIR]` reads `DIR/ipfailover.toml` and
//! `DIR/public_addresses` (absent = no public addresses), connects to
//! transportd's socket `<run_dir>/transport.sock` (retrying while it starts)
//! and runs until SIGTERM/SIGINT or a SHUTDOWN control, then drops its public
//! addresses; SIGHUP reloads the configuration. A bad configuration is
//! reported with its file and line and exits with code 1 before anything is
//! applied. The daemon itself is [`failoverd::entry::run`] on the skeleton
//! [`transport::tdaemon`], which masterd's single-process model runs too.

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
    transport::tdaemon::main(
        entry::NAME,
        entry::load(&dir),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all(),
        entry::run,
    )
}
