//! failoverd's entry point on the daemon skeleton ([`transport::tdaemon`]),
//! shared by the `failoverd` binary and masterd's single-process model:
//! load the settings from a configuration directory ([`load`]:
//! `ipfailover.toml` and `public_addresses`), then connect to the node's
//! transportd and run until shutdown, serving reloads and dropping every
//! public address on the way out ([`run`]). The binary is
//! [`transport::tdaemon::main`] over these; masterd adds only its
//! supervision.
//!
//! On a reload (SIGHUP, or masterd's reload in the single-process model)
//! the files are read and checked again as at start; a valid new
//! configuration applies the log level, `public_addresses` (the same path
//! as `ipfailover reloadips` on this node), the `[tunables]` and
//! `[failover] history_size`; the others are logged as "needs a restart:
//! KEY".

use std::future::Future;
use std::path::{Path, PathBuf};

use transport::tdaemon::{self, DaemonConfig, Env};

use crate::daemon::{self, DaemonError, Settings};
use crate::public_addresses::{self, PublicAddressesError};

/// The service name failoverd registers.
pub const NAME: &str = "failoverd";

/// Why failoverd cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// `ipfailover.toml` is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// `public_addresses` is unreadable or invalid.
    #[error(transparent)]
    PublicAddresses(#[from] PublicAddressesError),
    /// transportd's socket did not accept a connection in time.
    #[error(transparent)]
    Connect(#[from] tdaemon::Error),
    /// The daemon stopped with an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The lease path's runtime could not be built, or its connection
    /// task failed.
    #[error("cannot run the lease path: {0}")]
    LeasePath(String),
}

/// failoverd's lease path: a runtime of its own (one worker thread, at the
/// calling thread's real-time priority) that carries the transport
/// client's reading and writing and the intake of clusterd's lease news,
/// so that no bulk work on the daemon's runtime — the take of 256
/// addresses spawns 256 announcers, queued ahead of any task woken after
/// them — can delay a lease renewal. (Measured before: news 7.4 ms late
/// during such a take, past the lease end; the new owner dropped all 256
/// addresses 2 ms after taking them.)
///
/// The kernel lease's keeper, which renews the lease elements on each
/// news, runs on a second runtime of the lease path (one thread, same
/// priority): a renewal can wait in the kernel for an RCU grace period
/// (every 256th empties the cap chains; ending stale elements), 10–20 ms
/// in which the thread can do nothing else — on the intake's thread that
/// held up the next news past the lease end (seen in the failover bench,
/// fast profile: the node dropped its addresses), on the daemon's runtime
/// a release held the keeper up the same way.
struct LeasePath(
    Option<tokio::runtime::Runtime>,
    Option<tokio::runtime::Runtime>,
);

impl LeasePath {
    fn new() -> Result<LeasePath, EntryError> {
        let build = |name: &str| {
            transport::controls::keep_realtime(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(name)
                    .enable_all(),
            )
            .build()
            .map_err(|e| EntryError::LeasePath(e.to_string()))
        };
        Ok(LeasePath(
            Some(build("failoverd-lease")?),
            Some(build("failoverd-keeper")?),
        ))
    }

    /// The intake's and the transport client's runtime.
    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle().clone())
    }

    /// The kernel lease keeper's runtime.
    fn keeper(&self) -> Option<tokio::runtime::Handle> {
        self.1.as_ref().map(|rt| rt.handle().clone())
    }
}

impl Drop for LeasePath {
    fn drop(&mut self) {
        // Dropped inside the daemon's runtime: a blocking shutdown would
        // panic there. Their tasks end with the client and the executor,
        // gone by then.
        for rt in [self.0.take(), self.1.take()].into_iter().flatten() {
            rt.shutdown_background();
        }
    }
}

/// What [`load`] reads from the configuration directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The daemon's settings.
    pub settings: Settings,
    /// The configuration directory.
    pub dir: PathBuf,
    /// `ipfailover.toml` as loaded (for what a reload changed).
    pub config: config::Config,
    /// transportd's socket.
    pub socket: PathBuf,
    /// The `[logging] level` filter.
    pub log_level: String,
    /// Warnings of the configuration loader (deprecated keys...).
    pub warnings: Vec<String>,
}

impl DaemonConfig for Loaded {
    fn log_level(&self) -> &str {
        &self.log_level
    }

    fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// failoverd's settings from the configuration directory `dir`
/// (`public_addresses` absent: no public addresses).
///
/// # Errors
///
/// [`EntryError::Config`] or [`EntryError::PublicAddresses`], naming file
/// and line.
pub fn load(dir: &Path) -> Result<Loaded, EntryError> {
    let loaded = config::load(dir)?;
    let path = dir.join("public_addresses");
    let publics = match public_addresses::load(&path) {
        Ok(p) => p,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let socket = loaded
        .resolve(&loaded.config.transport.run_dir)
        .join("transport.sock");
    Ok(Loaded {
        settings: Settings::from_config(&loaded, path, publics),
        dir: dir.to_path_buf(),
        config: loaded.config.clone(),
        socket,
        log_level: loaded.config.logging.level.clone(),
        warnings: loaded.warnings.clone(),
    })
}

/// Connects to transportd (the skeleton's patience), answers `LOG_LEVEL`
/// with `env`'s hook, serves `env`'s reloads, and runs failoverd until
/// `shutdown` completes, a `SHUTDOWN` control arrives or transportd closes;
/// every public address is dropped before it returns.
///
/// # Errors
///
/// [`EntryError::Connect`], or the daemon's error.
pub async fn run(
    loaded: Loaded,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EntryError> {
    let lease_path = LeasePath::new()?;
    let lease_rt = lease_path
        .handle()
        .ok_or_else(|| EntryError::LeasePath("no runtime".into()))?;
    // Connected from the lease path's runtime: the client's reader and
    // writer tasks run there.
    let socket = loaded.socket.clone();
    let hook = env.log_hook.clone();
    let conn = lease_rt
        .spawn(async move { tdaemon::connect(NAME, &socket, hook).await })
        .await
        .map_err(|e| EntryError::LeasePath(e.to_string()))??;
    // The registration ends with this future (returned, failed, panicked
    // or dropped).
    let _registration = conn.registration;
    let reloads = tdaemon::reloader(
        NAME,
        loaded.dir.clone(),
        loaded.clone(),
        load,
        env.log_hook,
        env.reloads,
    );
    let keeper_rt = lease_path
        .keeper()
        .ok_or_else(|| EntryError::LeasePath("no keeper runtime".into()))?;
    daemon::run_with_reloads(
        loaded.settings,
        conn.client,
        conn.incoming,
        shutdown,
        &lease_rt,
        &keeper_rt,
        reloads,
    )
    .await?;
    drop(lease_path);
    Ok(())
}

/// [`load`] then [`run`]: the whole daemon from its configuration
/// directory (masterd's single-process model).
///
/// # Errors
///
/// As [`load`] and [`run`].
pub async fn run_in_process(
    dir: &Path,
    env: Env,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EntryError> {
    let loaded = load(dir)?;
    tdaemon::log_warnings(&loaded.warnings);
    run(loaded, env, shutdown).await
}
