//! masterd on the node's transport: the `masterd` service answering
//! [`GET_STATUS`], readiness, and the SHUTDOWN control.
//!
//! [`run`] keeps a connection to transportd (reconnecting when transportd
//! restarts), answers status requests from a [`StatusSource`], and until
//! the node is ready PINGs every daemon's service every 100 ms; when all
//! answer it sets [`MasterState::ready`] and sends `READY=1` to systemd (once per
//! masterd lifetime). A SHUTDOWN control sent to masterd fires
//! [`MasterState::stop`], which the model's main loop treats like SIGTERM.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use transport::client::{Client, Incoming};
use transport::controls::LogLevelHook;
use transport::msg::master::{DaemonStatus, MasterStatus, Model, GET_STATUS};
use transport::proto::control::{PingReply, PingRequest, PING};
use transport::proto::{Address, ErrorCode, Kind, Message};

use crate::daemons::DaemonDef;

/// Produces the daemons' status on demand.
pub type StatusSource = Arc<dyn Fn() -> Vec<DaemonStatus> + Send + Sync>;

/// State shared between the model's main loop and the service task.
pub struct MasterState {
    /// The process model.
    pub model: Model,
    /// When masterd started.
    pub started: Instant,
    /// Every daemon has answered a PING.
    pub ready: AtomicBool,
    /// The daemons' status.
    pub status: StatusSource,
    /// Set to true by a SHUTDOWN control, and when the daemons are being
    /// stopped for any reason.
    pub stop: watch::Sender<bool>,
}

impl std::fmt::Debug for MasterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterState")
            .field("model", &self.model)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl MasterState {
    /// New shared state.
    pub fn new(model: Model, status: StatusSource) -> Arc<MasterState> {
        let (stop, _) = watch::channel(false);
        Arc::new(MasterState {
            model,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            status,
            stop,
        })
    }

    /// The answer to [`GET_STATUS`].
    pub fn snapshot(&self) -> MasterStatus {
        MasterStatus {
            pid: std::process::id(),
            model: self.model,
            ready: self.ready.load(Ordering::Relaxed),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            daemons: (self.status)(),
        }
    }
}

/// How long one readiness PING may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Interval of readiness checks and reconnection attempts.
const TICK: Duration = Duration::from_millis(100);

/// Serves until `quit` becomes true.
pub async fn run(
    socket: PathBuf,
    daemons: Vec<DaemonDef>,
    shared: Arc<MasterState>,
    log_hook: Option<LogLevelHook>,
    mut quit: watch::Receiver<bool>,
) {
    let mut warned = false;
    while !*quit.borrow() {
        let (client, incoming) = match Client::connect_unix(&socket, "masterd").await {
            Ok(c) => c,
            Err(e) => {
                // While the daemons are being stopped, transportd going
                // away is expected.
                let stopping = *shared.stop.borrow();
                if !warned && !stopping && shared.started.elapsed() > Duration::from_secs(5) {
                    tracing::warn!(socket = %socket.display(), error = %e, "cannot reach transportd yet");
                    warned = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    _ = quit.changed() => {}
                }
                continue;
            }
        };
        warned = false;
        tracing::debug!(socket = %socket.display(), "connected to transportd");
        if let Some(hook) = &log_hook {
            let hook = Arc::clone(hook);
            client.set_log_level_hook(move |set| hook(set));
        }
        serve(&client, incoming, &daemons, &shared, &mut quit).await;
    }
}

async fn serve(
    client: &Client,
    mut incoming: Incoming,
    daemons: &[DaemonDef],
    shared: &MasterState,
    quit: &mut watch::Receiver<bool>,
) {
    let closed = client.closed();
    tokio::pin!(closed);
    let shutdown = client.shutdown_requested();
    tokio::pin!(shutdown);
    let mut shutdown_seen = false;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = quit.changed() => return,
            () = &mut closed => return,
            () = &mut shutdown, if !shutdown_seen => {
                shutdown_seen = true;
                tracing::info!("SHUTDOWN control received");
                shared.stop.send_replace(true);
            }
            msg = incoming.recv() => match msg {
                Some(m) => answer(client, &m, shared).await,
                None => return,
            },
            _ = tick.tick(), if !shared.ready.load(Ordering::Relaxed) => {
                if all_answer(client, daemons).await {
                    shared.ready.store(true, Ordering::Relaxed);
                    let ms = shared.started.elapsed().as_millis();
                    tracing::info!(after_ms = %ms, "every daemon answers: ready");
                    let names: Vec<&str> = daemons.iter().map(|d| d.name).collect();
                    let state = format!("READY=1\nSTATUS=running {} ({})", names.join(", "), shared.model);
                    if let Err(e) = crate::notify::notify(&state) {
                        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
                    }
                }
            }
        }
    }
}

async fn answer(client: &Client, msg: &Message, shared: &MasterState) {
    if msg.header.kind != Kind::Request {
        return;
    }
    let result = if msg.header.opcode == GET_STATUS {
        client.reply(msg, &shared.snapshot()).await
    } else {
        client
            .reply_error(
                msg,
                ErrorCode::UnknownOpcode,
                format!("masterd does not handle opcode {:#010x}", msg.header.opcode),
            )
            .await
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot answer a request");
    }
}

/// Does every daemon answer a PING on this node?
async fn all_answer(client: &Client, daemons: &[DaemonDef]) -> bool {
    for d in daemons {
        let r: Result<PingReply, _> = client
            .request(
                Address::local(d.service),
                PING,
                &PingRequest { data: Vec::new() },
                PING_TIMEOUT,
            )
            .await;
        if r.is_err() {
            return false;
        }
    }
    true
}

/// What both models do once their daemons run: serve masterd's status on
/// `socket` (and Prometheus metrics on `metrics`, if set), wait until `shutdown` completes or a SHUTDOWN control arrives,
/// then run `stop_daemons` (the model's own reverse-order stop) and end the
/// service.
pub async fn serve_until_stopped<S: Future<Output = ()>>(
    socket: PathBuf,
    daemons: Vec<DaemonDef>,
    shared: Arc<MasterState>,
    log_hook: Option<LogLevelHook>,
    metrics: Option<std::net::SocketAddr>,
    shutdown: impl Future<Output = ()>,
    stop_daemons: S,
) {
    let (quit_tx, quit_rx) = watch::channel(false);
    let exporter = metrics.map(|listen| {
        tokio::spawn(crate::metrics::run(
            listen,
            socket.clone(),
            Arc::clone(&shared),
            daemons.clone(),
            quit_rx.clone(),
        ))
    });
    let service = tokio::spawn(run(socket, daemons, Arc::clone(&shared), log_hook, quit_rx));
    let mut stop = shared.stop.subscribe();
    tokio::select! {
        () = shutdown => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    tracing::info!("stopping the daemons (reverse start order)");
    shared.stop.send_replace(true);
    let _ = crate::notify::notify("STOPPING=1");
    stop_daemons.await;
    quit_tx.send_replace(true);
    let _ = service.await;
    if let Some(e) = exporter {
        let _ = e.await;
    }
    tracing::info!("all daemons stopped");
}
