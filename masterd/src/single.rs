//! The single-process model: every daemon is a task of masterd's process.
//!
//! transportd runs in-process too (its library [`transport::transportd`]),
//! still serving its Unix socket so that the CLI and every in-process daemon
//! reach it the same way as in the multi-process model; node-to-node links
//! are its usual TCP links. A daemon task that fails or panics is restarted
//! with the same [`Backoff`] as a crashed process.
//!
//! Each daemon has an in-process entry point in [`entry`]: a function from
//! an [`InProcessCtx`] to the daemon library's `entry::run_in_process`
//! future, the same code its binary runs (settings loaded from the
//! configuration directory, a connection to transportd's socket, the
//! daemon's `run`), so a restart re-reads the configuration as a restarted
//! process would.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use transport::controls::LogLevelHook;
use transport::msg::master::{DaemonState, DaemonStatus, Model};
use transport::tdaemon::{Env, ReloadTrigger, Reloads};
use transport::transportd;

use crate::backoff::Backoff;
use crate::service::{self, MasterState};
use crate::setup::NodeConfig;
use crate::{MasterError, Settings};

/// What an in-process daemon gets.
pub struct InProcessCtx {
    /// The node's validated configuration.
    pub config: NodeConfig,
    /// The process-wide log-level hook (one subscriber for all daemons).
    pub log_hook: Option<LogLevelHook>,
    /// Becomes true when the daemon must stop.
    pub shutdown: watch::Receiver<bool>,
    /// masterd's reload requests (its SIGHUP, once the configuration
    /// checked valid).
    pub reloads: Reloads,
}

impl InProcessCtx {
    /// A future that completes when the daemon must stop.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// The skeleton's environment: the log hook and the reload requests.
    pub fn env(&self) -> Env {
        Env {
            log_hook: self.log_hook.clone(),
            reloads: self.reloads.clone(),
        }
    }
}

/// A daemon's in-process entry point.
pub type Entry = fn(InProcessCtx) -> BoxFuture<'static, Result<(), String>>;

/// The in-process entry point of daemon `name`: each daemon's library
/// `entry` function, the one its binary runs too.
pub fn entry(name: &str) -> Option<Entry> {
    match name {
        "transportd" => Some(run_transportd),
        "clusterd" => Some(run_clusterd),
        "conntrackd" => Some(run_conntrackd),
        "failoverd" => Some(run_failoverd),
        _ => None,
    }
}

fn run_clusterd(ctx: InProcessCtx) -> BoxFuture<'static, Result<(), String>> {
    async move {
        let shutdown = ctx.shutdown_signal();
        clusterd::entry::run_in_process(ctx.config.dir(), ctx.env(), shutdown)
            .await
            .map_err(|e| e.to_string())
    }
    .boxed()
}

fn run_conntrackd(ctx: InProcessCtx) -> BoxFuture<'static, Result<(), String>> {
    async move {
        let shutdown = ctx.shutdown_signal();
        conntrackd::entry::run_in_process(ctx.config.dir(), ctx.env(), shutdown)
            .await
            .map_err(|e| e.to_string())
    }
    .boxed()
}

fn run_failoverd(ctx: InProcessCtx) -> BoxFuture<'static, Result<(), String>> {
    async move {
        let shutdown = ctx.shutdown_signal();
        failoverd::entry::run_in_process(ctx.config.dir(), ctx.env(), shutdown)
            .await
            .map_err(|e| e.to_string())
    }
    .boxed()
}

fn run_transportd(ctx: InProcessCtx) -> BoxFuture<'static, Result<(), String>> {
    async move {
        let shutdown = ctx.shutdown_signal();
        transportd::entry::run_in_process(ctx.config.dir(), ctx.env(), shutdown)
            .await
            .map_err(|e| e.to_string())
    }
    .boxed()
}

struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    name: &'static str,
}

/// Runs the node's daemons as tasks of this process until `shutdown`
/// completes or a SHUTDOWN control reaches masterd; then stops them in
/// reverse order.
///
/// # Errors
///
/// [`MasterError::NotInProcess`] (before anything starts) for a daemon
/// without an in-process entry point.
pub async fn run(
    cfg: NodeConfig,
    opts: Settings,
    log_hook: Option<LogLevelHook>,
    reloads: Reloads,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MasterError> {
    let (trigger, _) = ReloadTrigger::new();
    let reload_task = {
        let trigger = trigger.clone();
        tokio::spawn(crate::reload::serve(
            cfg.dir().to_path_buf(),
            cfg.loaded.config.logging.level.clone(),
            log_hook.clone(),
            reloads,
            move || trigger.reload(),
        ))
    };
    let mut entries = Vec::new();
    for d in &opts.daemons {
        let e = entry(d.name).ok_or_else(|| MasterError::NotInProcess {
            daemon: d.name.to_owned(),
        })?;
        entries.push((d.name, e));
    }
    let status = Arc::new(Mutex::new(
        entries
            .iter()
            .map(|(name, _)| DaemonStatus {
                name: (*name).to_owned(),
                state: DaemonState::Restarting,
                pid: None,
                restarts: 0,
                last_exit: None,
            })
            .collect::<Vec<_>>(),
    ));
    let view = Arc::clone(&status);
    let shared = MasterState::new(
        Model::SingleProcess,
        Arc::new(move || view.lock().map(|s| s.clone()).unwrap_or_default()),
    );
    let mut tasks = Vec::new();
    for (index, (name, entry)) in entries.into_iter().enumerate() {
        let (stop, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(supervise(
            name,
            entry,
            index,
            cfg.clone(),
            Common {
                log_hook: log_hook.clone(),
                reload: trigger.clone(),
            },
            Arc::clone(&status),
            stop_rx,
        ));
        tasks.push(Task { stop, handle, name });
        if index == 0 {
            // Let transportd bind its socket before the others connect.
            wait_for_socket(&cfg.socket()).await;
        }
    }
    let stop_tasks = async {
        for task in tasks.into_iter().rev() {
            task.stop.send_replace(true);
            let abort = task.handle.abort_handle();
            if tokio::time::timeout(opts.stop_grace, task.handle)
                .await
                .is_err()
            {
                tracing::warn!(
                    daemon = task.name,
                    "did not stop in time; aborting its task"
                );
                abort.abort();
            }
        }
    };
    service::serve_until_stopped(
        cfg.socket(),
        opts.daemons.clone(),
        Arc::clone(&shared),
        log_hook,
        cfg.metrics_listen(),
        shutdown,
        stop_tasks,
    )
    .await;
    reload_task.abort();
    Ok(())
}

/// The runtime of a daemon on the heartbeat path (transportd, clusterd):
/// one thread of its own, at masterd's real-time priority if it has one,
/// as the daemon has in the multi-process model, where it is a process
/// of its own. On the shared runtime a blocking kernel call of another
/// daemon (an nftables commit or a packet socket's close waits for an RCU
/// grace period: seconds on a loaded host) can hold up the node's
/// heartbeats and links: in session 9's single-process chaos runs (load
/// 11–19) a node's peers dropped their links to it ("nothing received for
/// 3s") while its failoverd restarted, which took 2.7–30.8 s.
struct HeartbeatPath(Option<tokio::runtime::Runtime>);

impl HeartbeatPath {
    fn for_daemon(name: &str) -> Option<HeartbeatPath> {
        if !matches!(name, "transportd" | "clusterd") {
            return None;
        }
        let built = transport::controls::keep_realtime(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("ipf-{name}"))
                .enable_all(),
        )
        .build();
        match built {
            Ok(rt) => Some(HeartbeatPath(Some(rt))),
            Err(e) => {
                tracing::warn!(daemon = name, error = %e, "no thread of its own: running on the shared runtime");
                None
            }
        }
    }

    fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(f),
            None => tokio::spawn(f),
        }
    }
}

impl Drop for HeartbeatPath {
    fn drop(&mut self) {
        // Dropped inside masterd's runtime: a blocking shutdown would panic.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

async fn wait_for_socket(path: &Path) {
    for _ in 0..50 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn set(status: &Mutex<Vec<DaemonStatus>>, index: usize, f: impl FnOnce(&mut DaemonStatus)) {
    if let Ok(mut all) = status.lock() {
        if let Some(s) = all.get_mut(index) {
            f(s);
        }
    }
}

/// What every daemon task of the process shares.
struct Common {
    /// The process-wide log hook.
    log_hook: Option<LogLevelHook>,
    /// masterd's reload requests.
    reload: ReloadTrigger,
}

async fn supervise(
    name: &'static str,
    entry: Entry,
    index: usize,
    cfg: NodeConfig,
    common: Common,
    status: Arc<Mutex<Vec<DaemonStatus>>>,
    mut stop: watch::Receiver<bool>,
) {
    let Common { log_hook, reload } = common;
    let mut backoff = Backoff::default();
    let mut first = true;
    let own = HeartbeatPath::for_daemon(name);
    while !*stop.borrow() {
        let ctx = InProcessCtx {
            config: cfg.clone(),
            log_hook: log_hook.clone(),
            shutdown: stop.clone(),
            reloads: reload.subscribe(),
        };
        set(&status, index, |s| {
            s.state = DaemonState::Running;
            s.pid = Some(std::process::id());
            if !first {
                s.restarts += 1;
            }
        });
        if first {
            tracing::info!(daemon = name, "started (in-process)");
        } else {
            tracing::warn!(daemon = name, "restarted (in-process)");
        }
        first = false;
        backoff.started(Instant::now());
        // A task of its own, so that a panic ends only this daemon; the
        // heartbeat path's daemons on a thread of their own.
        let outcome = match &own {
            Some(path) => path.spawn(entry(ctx)).await,
            None => tokio::spawn(entry(ctx)).await,
        };
        if *stop.borrow() {
            break;
        }
        let how = match outcome {
            Ok(Ok(())) => "returned".to_owned(),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(e) if e.is_panic() => "panicked".to_owned(),
            Err(e) => format!("cancelled: {e}"),
        };
        tracing::error!(daemon = name, exit = %how, "daemon task ended unexpectedly");
        set(&status, index, |s| {
            s.state = DaemonState::Restarting;
            s.pid = None;
            s.last_exit = Some(how);
        });
        let delay = backoff.exited(Instant::now());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
    }
    set(&status, index, |s| {
        s.state = DaemonState::Stopped;
        s.pid = None;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    /// Panics on its first run, fails on its second, then runs until told
    /// to stop.
    fn flaky(ctx: InProcessCtx) -> BoxFuture<'static, Result<(), String>> {
        async move {
            match CALLS.fetch_add(1, Ordering::SeqCst) {
                0 => panic!("flaky daemon panics (test)"),
                1 => Err("flaky daemon fails (test)".to_owned()),
                _ => {
                    ctx.shutdown_signal().await;
                    Ok(())
                }
            }
        }
        .boxed()
    }

    fn config() -> (NodeConfig, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("masterd-single-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("nodes"), "192.0.2.10\n").unwrap();
        std::fs::write(dir.join("ipfailover.toml"), "[cluster]\npnn = 0\n").unwrap();
        (crate::setup::load(&dir).unwrap(), dir)
    }

    #[tokio::test]
    async fn a_panicking_or_failing_daemon_task_is_restarted_then_stopped() {
        let (cfg, dir) = config();
        let status = Arc::new(Mutex::new(vec![DaemonStatus {
            name: "flaky".into(),
            state: DaemonState::Restarting,
            pid: None,
            restarts: 0,
            last_exit: None,
        }]));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(
            "flaky",
            flaky,
            0,
            cfg,
            Common {
                log_hook: None,
                reload: ReloadTrigger::new().0,
            },
            Arc::clone(&status),
            stop_rx,
        ));
        let snapshot = || status.lock().unwrap()[0].clone();
        // Bounded: 100 ms and 200 ms of backoff, well within 10 s.
        let mut waited = 0;
        while CALLS.load(Ordering::SeqCst) < 3 && waited < 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);
        let s = snapshot();
        assert_eq!(s.state, DaemonState::Running);
        assert_eq!(s.restarts, 2);
        assert_eq!(s.pid, Some(std::process::id()));
        assert_eq!(
            s.last_exit.as_deref(),
            Some("failed: flaky daemon fails (test)")
        );
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let s = snapshot();
        assert_eq!(s.state, DaemonState::Stopped);
        assert_eq!(s.restarts, 2, "a stop is not a restart");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
