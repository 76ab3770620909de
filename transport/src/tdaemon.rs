//! tdaemon: the one skeleton every daemon is built on, written once (as
//! CTDB's `sock_daemon`): load the configuration directory, set up
//! logging, connect to transportd patiently and register, answer the
//! common controls (the client library does that), stop on SIGTERM/SIGINT
//! or the SHUTDOWN control, reload on SIGHUP, and run the daemon's `run`
//! future with a shutdown signal.
//!
//! A daemon provides three things:
//!
//! * a configuration type implementing [`DaemonConfig`]: its `load(dir)`
//!   reads and **fully validates** every file the daemon reads (errors name
//!   `FILE:LINE`), and says which log level and loader warnings it has;
//! * an `entry::run(config, env, shutdown)` future (its library's one
//!   entry, used by both process models): [`connect`] then the daemon;
//! * what it applies on a reload: [`reloader`] re-reads and validates the
//!   files on each request of [`Reloads`], applies the log level itself and
//!   hands each valid new configuration (with the one in force) to the
//!   daemon, which applies what it can at run time and logs
//!   [`needs_restart`] for the rest. An invalid configuration is refused,
//!   logged at error, and nothing of it is applied.
//!
//! Its binary is then [`main`] with the daemon's name, runtime and entry.
//! In masterd's single-process model masterd builds the [`Env`] itself (the
//! process-wide log hook, and reload requests it sends on its own SIGHUP).
//!
//! The connect patience is one for every daemon: [`CONNECT_PATIENCE`].

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::client::{Client, ClientError, CloseOnDrop, Incoming};
use crate::controls::LogLevelHook;

/// How long a daemon waits for transportd's socket at start, in both
/// process models: masterd starts transportd first, but a restarted
/// transportd on a loaded host can take seconds to bind again.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// The shutdown signal of a daemon binary: SIGTERM or SIGINT.
pub type Termination = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why the skeleton could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// transportd's socket did not accept a connection in time.
    #[error("cannot connect to transportd at {}: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The last error.
        #[source]
        source: ClientError,
    },
}

/// A daemon's configuration, as its `load` reads it from a directory.
pub trait DaemonConfig: Clone + Send + Sync + 'static {
    /// The `[logging] level` filter.
    fn log_level(&self) -> &str;
    /// Warnings of the configuration loader (deprecated keys...), logged
    /// at start and at each reload.
    fn warnings(&self) -> &[String];
}

/// Reload requests: SIGHUP to the daemon's process ([`hangup_reloads`]),
/// or masterd's reload of its tasks in the single-process model
/// ([`ReloadTrigger`]).
#[derive(Debug, Clone)]
pub struct Reloads(Option<watch::Receiver<u64>>);

/// The sending side of [`Reloads`] (one request reaches every receiver).
#[derive(Debug, Clone)]
pub struct ReloadTrigger(watch::Sender<u64>);

impl ReloadTrigger {
    /// A trigger and its first receiver.
    #[must_use]
    pub fn new() -> (ReloadTrigger, Reloads) {
        let (tx, rx) = watch::channel(0);
        (ReloadTrigger(tx), Reloads(Some(rx)))
    }

    /// Asks every receiver to reload.
    pub fn reload(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Another receiver (sees requests made from now on).
    #[must_use]
    pub fn subscribe(&self) -> Reloads {
        Reloads(Some(self.0.subscribe()))
    }
}

impl Reloads {
    /// No reload is ever requested (tests, benchmarks).
    #[must_use]
    pub fn none() -> Reloads {
        Reloads(None)
    }

    /// Completes at the next request; never once no request can come.
    pub async fn next(&mut self) {
        if let Some(rx) = &mut self.0 {
            if rx.changed().await.is_ok() {
                return;
            }
        }
        std::future::pending().await
    }
}

/// Reload requests from SIGHUP to this process (must be called inside a
/// runtime). If the handler cannot be installed none come (logged).
#[must_use]
pub fn hangup_reloads() -> Reloads {
    use tokio::signal::unix::{signal, SignalKind};
    let (trigger, reloads) = ReloadTrigger::new();
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    trigger.reload();
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP: no reload"),
    }
    reloads
}

/// What the process model gives a daemon besides its configuration.
#[derive(Clone)]
pub struct Env {
    /// The log-level hook (`LOG_LEVEL` control and reloads); in the
    /// single-process model one for the whole process.
    pub log_hook: Option<LogLevelHook>,
    /// Reload requests.
    pub reloads: Reloads,
}

impl Env {
    /// No log hook, no reloads (tests).
    #[must_use]
    pub fn bare() -> Env {
        Env {
            log_hook: None,
            reloads: Reloads::none(),
        }
    }
}

/// A registered connection to transportd; the registration ends when
/// `registration` is dropped (not when the last clone of the client is):
/// in masterd's single-process model a daemon is restarted in the same
/// process at once, and transportd refuses a name still registered.
pub struct Connection {
    /// The client.
    pub client: Client,
    /// Requests and events for the daemon.
    pub incoming: Incoming,
    /// Ends the registration when dropped.
    pub registration: CloseOnDrop,
}

/// Connects to transportd at `socket` as service `name`, retrying for
/// [`CONNECT_PATIENCE`] while it starts, and answers `LOG_LEVEL` with
/// `log_hook` (the other common controls are answered by the client).
///
/// # Errors
///
/// [`Error::Connect`] with the last error once the patience has passed.
pub async fn connect(
    name: &str,
    socket: &Path,
    log_hook: Option<LogLevelHook>,
) -> Result<Connection, Error> {
    let (client, incoming) = Client::connect_unix_patiently(socket, name, CONNECT_PATIENCE)
        .await
        .map_err(|source| Error::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    let registration = client.close_on_drop();
    if let Some(hook) = log_hook {
        client.set_log_level_hook(move |level| hook(level));
    }
    tracing::info!(service = name, socket = %socket.display(), "registered with transportd");
    Ok(Connection {
        client,
        incoming,
        registration,
    })
}

/// A valid reloaded configuration, with the one in force before it.
#[derive(Debug, Clone)]
pub struct Reloaded<C> {
    /// The configuration in force until now.
    pub old: C,
    /// The new, fully validated one.
    pub new: C,
}

/// Logs loader warnings.
pub fn log_warnings(warnings: &[String]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
}

/// Logs that `key` differs from the value the daemon started with, which
/// it keeps until the next start. (Compare with the settings of the start,
/// not of the previous reload: a reload back to them needs nothing.)
pub fn needs_restart(name: &str, key: &str) {
    tracing::warn!(daemon = name, "reload: needs a restart: {key}");
}

/// Logs that `key` changed and was applied (`from` → `to`).
pub fn changed(name: &str, key: &str, from: &dyn std::fmt::Debug, to: &dyn std::fmt::Debug) {
    tracing::info!(
        daemon = name,
        "reload: {key} changed from {from:?} to {to:?}"
    );
}

/// Serves reload requests for daemon `name` whose configuration directory
/// is `dir` and whose configuration in force is `current`: on each
/// request `load(dir)` re-reads and validates every file; an error is
/// logged (at error, naming file and line) and nothing is applied; a valid
/// configuration has its log level applied through `log_hook` when the
/// file's level changed, and is then sent, with the one it replaces, on
/// the returned channel for the daemon to apply the rest. Ends with
/// `reloads` or when the receiver is dropped.
pub fn reloader<C, E>(
    name: &'static str,
    dir: PathBuf,
    current: C,
    load: fn(&Path) -> Result<C, E>,
    log_hook: Option<LogLevelHook>,
    mut reloads: Reloads,
) -> mpsc::UnboundedReceiver<Reloaded<C>>
where
    C: DaemonConfig,
    E: Display + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut current = current;
        loop {
            tokio::select! {
                () = reloads.next() => {}
                () = tx.closed() => return,
            }
            let new = match load(&dir) {
                Ok(new) => new,
                Err(e) => {
                    tracing::error!(daemon = name, "reload refused, nothing applied: {e}");
                    continue;
                }
            };
            log_warnings(new.warnings());
            apply_log_level(
                name,
                log_hook.as_ref(),
                current.log_level(),
                new.log_level(),
            );
            let old = std::mem::replace(&mut current, new.clone());
            if tx.send(Reloaded { old, new }).is_err() {
                return;
            }
            tracing::info!(daemon = name, "reload: done");
        }
    });
    rx
}

/// Sets the log level to the file's `new` level when it differs from the
/// file's `old` one (a level set by `ipfailover setdebug` since stays
/// otherwise), logging the change.
pub fn apply_log_level(name: &str, hook: Option<&LogLevelHook>, old: &str, new: &str) {
    if old == new {
        return;
    }
    match hook {
        Some(hook) => match hook(Some(new)) {
            Ok(_) => changed(name, "[logging] level", &old, &new),
            Err(e) => tracing::error!(daemon = name, "reload: [logging] level {new:?}: {e}"),
        },
        None => needs_restart(name, "[logging] level"),
    }
}

/// The whole `main` of a daemon binary: `loaded` is its `load` of the
/// configuration directory (an error is printed as `NAME: ERROR` and exits
/// 1 before anything starts); logging is set up at the file's level and
/// the loader's warnings logged; then `run(config, env, shutdown)` runs on
/// `runtime` with SIGHUP as reload requests and SIGTERM/SIGINT as the
/// shutdown signal. Exit 0, or 1 with the error logged.
pub fn main<C, E1, E2, F, Fut>(
    name: &'static str,
    loaded: Result<C, E1>,
    runtime: &mut tokio::runtime::Builder,
    run: F,
) -> std::process::ExitCode
where
    C: DaemonConfig,
    E1: Display,
    E2: Display,
    F: FnOnce(C, Env, Termination) -> Fut,
    Fut: Future<Output = Result<(), E2>>,
{
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let hook = match crate::logging::init(config.log_level()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{name}: [logging] level: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    log_warnings(config.warnings());
    crate::controls::run_to_exit(
        name,
        crate::controls::keep_realtime(runtime).build(),
        async move {
            let env = Env {
                log_hook: Some(hook),
                reloads: hangup_reloads(),
            };
            run(config, env, Box::pin(crate::controls::termination_signal())).await
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, PartialEq)]
    struct Level(String);

    impl DaemonConfig for Level {
        fn log_level(&self) -> &str {
            &self.0
        }
        fn warnings(&self) -> &[String] {
            &[]
        }
    }

    /// The directory's `level` file; "bad" is invalid.
    fn load(dir: &Path) -> Result<Level, String> {
        let text = std::fs::read_to_string(dir.join("level")).map_err(|e| e.to_string())?;
        let level = text.trim().to_owned();
        if level == "bad" {
            return Err(format!("{}:1: bad level", dir.join("level").display()));
        }
        Ok(Level(level))
    }

    /// A refused reload hands nothing over and sets no level; a valid one
    /// sets the level (only when the file's changed) and hands old and new.
    #[tokio::test]
    async fn an_invalid_reload_applies_nothing_a_valid_one_everything() {
        let dir = std::env::temp_dir().join(format!("tdaemon-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let set = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = Arc::clone(&set);
        let hook: LogLevelHook = Arc::new(move |l: Option<&str>| {
            if let Some(l) = l {
                seen.lock().unwrap().push(l.to_owned());
            }
            Ok(l.unwrap_or("info").to_owned())
        });
        let (trigger, reloads) = ReloadTrigger::new();
        let mut rx = reloader(
            "test",
            dir.clone(),
            Level("info".into()),
            load,
            Some(hook),
            reloads,
        );
        let step = |rx: &mut mpsc::UnboundedReceiver<Reloaded<Level>>| {
            let r = rx.try_recv().ok();
            r.map(|r| (r.old.0, r.new.0))
        };
        std::fs::write(dir.join("level"), "bad\n").unwrap();
        trigger.reload();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(step(&mut rx), None);
        assert!(set.lock().unwrap().is_empty());

        std::fs::write(dir.join("level"), "debug\n").unwrap();
        trigger.reload();
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.old.0.as_str(), r.new.0.as_str()), ("info", "debug"));
        assert_eq!(*set.lock().unwrap(), ["debug"]);

        // Same file again: handed over, level not set again.
        trigger.reload();
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.old.0.as_str(), r.new.0.as_str()), ("debug", "debug"));
        assert_eq!(set.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
