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

use failoverd::entry;

const USAGE: &str = "usage: failoverd [--config-dir DIR]";

fn parse_args() -> Result<PathBuf, String> {
    let mut dir = PathBuf::from(config::DEFAULT_CONFIG_DIR);
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--config-dir") => {
                dir = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("--config-dir needs a directory\n{USAGE}"))?;
            }
            Some(s) if s.starts_with("--config-dir=") => {
                dir = PathBuf::from(&s["--config-dir=".len()..]);
            }
            Some("-h" | "--help") => return Err(USAGE.to_string()),
            Some("-V" | "--version") => {
                return Err(format!("failoverd {}", env!("CARGO_PKG_VERSION")))
            }
            _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
        }
    }
    Ok(dir)
}

fn main() -> ExitCode {
    let dir = match parse_args() {
        Ok(d) => d,
        Err(text) => {
            eprintln!("{text}");
            return if text.starts_with("usage") || text.starts_with("failoverd ") {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
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
