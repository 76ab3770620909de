//! transportd as a future ([`run`]) and its configuration: the daemon part
//! of [`super`], built with the crate feature `transportd` only.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::controls::LogLevelHook;
use crate::nodes::Nodes;

use super::key::ClusterKey;
use super::peercred::Policy;
use super::state::RoutingState;
use super::{key, local, peer, socket_path, state};

/// Everything transportd needs to run.
pub struct Settings {
    /// Directory of the local socket.
    pub run_dir: PathBuf,
    /// The cluster's nodes (empty: a single node without peers).
    pub nodes: Nodes,
    /// This node's pnn; `None`: the first node whose address can be bound.
    pub pnn: Option<u32>,
    /// TCP port of the peer links.
    pub port: u16,
    /// The cluster key (required when there are peers).
    pub key: Option<ClusterKey>,
    /// Who may connect locally besides root.
    pub policy: Policy,
    /// Log level control (LOG_LEVEL to service 0).
    pub log_level: Option<LogLevelHook>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("run_dir", &self.run_dir)
            .field("nodes", &self.nodes)
            .field("pnn", &self.pnn)
            .field("port", &self.port)
            .field("key", &self.key)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why transportd cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The run directory cannot be created.
    #[error("run directory {path}: {source}")]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another transportd answers on the socket.
    #[error("{path}: another transportd is already running")]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
    },
    /// The local socket cannot be bound.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The given pnn is not a live node of the nodes file.
    #[error("pnn {pnn} is not a node of the nodes file")]
    UnknownPnn {
        /// The pnn.
        pnn: u32,
    },
    /// No address of the nodes file is local.
    #[error("no address of the nodes file can be bound on port {port}: this host is not a cluster node (or another transportd runs)")]
    NoLocalNode {
        /// The port.
        port: u16,
    },
    /// The peer port cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Peers are configured but no key.
    #[error("the nodes file lists other nodes but no cluster key was given (--key)")]
    NoKey,
}

/// RoutingState shared by every task of one transportd.
pub(crate) struct Shared {
    pub(super) pnn: u32,
    pub(super) port: u16,
    /// The node list in force (`SET_NODES` replaces it; the peer links
    /// follow it).
    pub(super) nodes: state::NodesWatch,
    pub(super) key: ClusterKey,
    pub(super) policy: Policy,
    pub(super) state: Mutex<RoutingState>,
    pub(super) next_id: AtomicU64,
    pub(super) stop: watch::Sender<bool>,
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, RoutingState> {
        // Routing code never panics while holding the lock; if it did, the
        // table is still usable (worst case a half-routed frame).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn request_stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Resolves once a stop is requested: at once if it already was (a task
/// that subscribed after the request must stop too, which
/// `Receiver::changed` would miss).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A bound but not yet running transportd: lets callers learn the pnn and
/// socket before [`Daemon::run`].
pub struct Daemon {
    shared: Arc<Shared>,
    unix: UnixListener,
    socket: PathBuf,
    tcp: Option<(TcpListener, IpAddr)>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("pnn", &self.shared.pnn)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Binds the local socket and the peer port. Must be called within a
    /// tokio runtime.
    ///
    /// # Errors
    /// Any [`Error`]: run directory, socket, unknown pnn, no local node,
    /// missing key.
    pub async fn bind(settings: Settings) -> Result<Daemon, Error> {
        let (pnn, tcp) = bind_tcp(&settings).await?;
        let has_peers = settings.nodes.iter().any(|(p, _)| p != pnn);
        let key = match (&settings.key, has_peers) {
            (Some(k), _) => k.clone(),
            (None, false) => ClusterKey::from_bytes([0; key::KEY_LEN]),
            (None, true) => return Err(Error::NoKey),
        };
        let unix = bind_unix(&settings.run_dir).await?;
        let socket = socket_path(&settings.run_dir);
        let peers: Vec<(u32, SocketAddr)> = settings
            .nodes
            .iter()
            .map(|(p, a)| (p, SocketAddr::new(a, settings.port)))
            .collect();
        let (stop, _) = watch::channel(false);
        let nodes: state::NodesWatch = Arc::new(watch::Sender::new(settings.nodes));
        let mut table = RoutingState::new(pnn, peers, settings.log_level, Instant::now());
        table.follow_nodes(Arc::clone(&nodes), settings.port);
        let shared = Arc::new(Shared {
            pnn,
            port: settings.port,
            key,
            policy: settings.policy,
            state: Mutex::new(table),
            next_id: AtomicU64::new(1),
            stop,
            nodes,
        });
        Ok(Daemon {
            shared,
            unix,
            socket,
            tcp,
        })
    }

    /// This node's pnn.
    pub fn pnn(&self) -> u32 {
        self.shared.pnn
    }

    /// The local socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs until `shutdown` completes or a SHUTDOWN control arrives; then
    /// stops accepting, closes every connection and removes the socket.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Daemon {
            shared,
            unix,
            socket,
            tcp,
        } = self;
        // Connection tasks are spawned on their own and stop when told: if
        // this future is dropped instead of finishing (an in-process
        // transportd aborted by its supervisor), tell them, or they would
        // keep the node's old links and registrations alive.
        struct StopOnDrop(Arc<Shared>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.request_stop();
            }
        }
        let _stop_on_drop = StopOnDrop(Arc::clone(&shared));
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(local::serve(unix, Arc::clone(&shared)));
        if let Some((listener, own_addr)) = tcp {
            tasks.spawn(peer::listen(listener, Arc::clone(&shared)));
            tasks.spawn(dial_peers(own_addr, Arc::clone(&shared)));
        }
        tracing::info!(pnn = shared.pnn, socket = %socket.display(), "transportd running");
        let mut stop = shared.stop.subscribe();
        tokio::select! {
            () = shutdown => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        shared.request_stop();
        // Give connection tasks a moment to flush (e.g. the SHUTDOWN reply).
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        let _ = std::fs::remove_file(&socket);
        tracing::info!(pnn = shared.pnn, "transportd stopped");
    }
}

/// Dials every node of the list in force with a higher PNN than this one
/// until shutdown, following the list: a node added by `SET_NODES` gets
/// a dialler, a removed one loses it (its link was closed by the table).
async fn dial_peers(own_addr: IpAddr, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut list = shared.nodes.subscribe();
    let mut dialers: std::collections::HashMap<u32, (SocketAddr, tokio::task::AbortHandle)> =
        std::collections::HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let wanted: Vec<(u32, SocketAddr)> = list
            .borrow_and_update()
            .iter()
            .filter(|(p, _)| *p > shared.pnn)
            .map(|(p, a)| (p, SocketAddr::new(a, shared.port)))
            .collect();
        dialers.retain(|p, (target, handle)| {
            let keep = wanted.contains(&(*p, *target));
            if !keep {
                handle.abort();
            }
            keep
        });
        for (p, target) in wanted {
            if let std::collections::hash_map::Entry::Vacant(e) = dialers.entry(p) {
                let handle = tasks.spawn(peer::dial(p, target, own_addr, Arc::clone(&shared)));
                e.insert((target, handle));
            }
        }
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            changed = list.changed() => if changed.is_err() { break },
        }
    }
    // The diallers end on the stop signal they have seen too.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Runs transportd with `settings` until `shutdown` completes (or a SHUTDOWN
/// control arrives).
///
/// # Errors
/// As [`Daemon::bind`].
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let daemon = Daemon::bind(settings).await?;
    daemon.run(shutdown).await;
    Ok(())
}

/// Finds our pnn and binds the peer port on our node address.
async fn bind_tcp(settings: &Settings) -> Result<(u32, Option<(TcpListener, IpAddr)>), Error> {
    if settings.nodes.is_empty() {
        return Ok((settings.pnn.unwrap_or(0), None));
    }
    let bind = |addr: IpAddr| async move {
        let sa = SocketAddr::new(addr, settings.port);
        TcpListener::bind(sa)
            .await
            .map_err(|source| Error::Tcp { addr: sa, source })
    };
    if let Some(pnn) = settings.pnn {
        let addr = settings.nodes.addr(pnn).ok_or(Error::UnknownPnn { pnn })?;
        return Ok((pnn, Some((bind(addr).await?, addr))));
    }
    // As CTDB: our pnn is the first node whose address we can bind.
    for (pnn, addr) in settings.nodes.iter() {
        if let Ok(listener) = bind(addr).await {
            return Ok((pnn, Some((listener, addr))));
        }
    }
    Err(Error::NoLocalNode {
        port: settings.port,
    })
}

async fn bind_unix(run_dir: &Path) -> Result<UnixListener, Error> {
    std::fs::create_dir_all(run_dir).map_err(|source| Error::RunDir {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let path = socket_path(run_dir);
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            return Err(Error::AlreadyRunning { path });
        }
        // A stale socket of a dead transportd.
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(|source| Error::Socket {
        path: path.clone(),
        source,
    })?;
    // Access control is SO_PEERCRED (peercred): everyone may connect() and
    // be refused with a clear reason.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(|source| {
        Error::Socket {
            path: path.clone(),
            source,
        }
    })?;
    Ok(listener)
}
