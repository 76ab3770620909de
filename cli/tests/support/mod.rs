//! A scripted transportd for the CLI's end-to-end tests.
//!
//! It listens on `RUN_DIR/transport.sock`, speaks the real framed protocol
//! (the `transport` crate's codec), answers the registration like
//! transportd, and answers every request addressed to `(pnn, service)` from
//! a script: a fixed reply per `(pnn, service, opcode)`, or what the real
//! transportd says when nobody can answer (`UnknownService` for a service
//! not running, `NodeUnreachable` for a node not connected), or nothing at
//! all (a hung daemon: the CLI's timeout must fire). Every request is
//! logged, decoded, so an action's golden file shows what was sent where.
//!
//! The real daemons and a real transportd are covered by the tests crate;
//! this responder exists to make the CLI's output deterministic.

#![allow(dead_code)] // each test binary uses a part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::watch;
use transport::client::Link;
use transport::controls::answer_message;
use transport::proto::control::{
    LogLevelReply, LogLevelRequest, PeerInfo, PeerList, PingReply, PingRequest, RegisterReply,
    Statistics, LIST_PEERS, LOG_LEVEL, PING, REGISTER, STATISTICS, STATISTICS_RESET,
};
use transport::proto::service::{well_known_name, TRANSPORT};
use transport::proto::{
    decode_payload, encode_payload, Address, ErrorCode, Kind, RemoteError, LOCAL,
};

/// Computes a reply from a request payload.
pub type AnswerFn = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, RemoteError> + Send + Sync>;

/// How a scripted daemon answers one opcode.
#[derive(Clone)]
pub enum Answer {
    /// This reply payload (or error) whatever the request.
    Fixed(Result<Vec<u8>, RemoteError>),
    /// Computed from the request payload.
    Func(AnswerFn),
    /// Never answer (a hung daemon).
    Silent,
}

/// A node as the local transportd sees it.
#[derive(Clone, Default)]
pub struct Node {
    /// Connected to the local transportd (else every request to it gets
    /// `NodeUnreachable`).
    pub connected: bool,
    /// Running services: service id -> opcode -> answer.
    pub services: BTreeMap<u16, BTreeMap<u32, Answer>>,
}

impl Node {
    /// A connected node with no daemon yet.
    pub fn up() -> Node {
        Node {
            connected: true,
            services: BTreeMap::new(),
        }
    }

    /// A node that is not connected.
    pub fn down() -> Node {
        Node::default()
    }

    /// Adds a fixed reply.
    pub fn reply<T: Serialize>(mut self, service: u16, opcode: u32, value: &T) -> Node {
        let bytes = encode_payload(value).unwrap();
        self.services
            .entry(service)
            .or_default()
            .insert(opcode, Answer::Fixed(Ok(bytes)));
        self
    }

    /// Adds an error reply.
    pub fn error(mut self, service: u16, opcode: u32, code: ErrorCode, msg: &str) -> Node {
        self.services
            .entry(service)
            .or_default()
            .insert(opcode, Answer::Fixed(Err(RemoteError::new(code, msg))));
        self
    }

    /// Adds a computed reply.
    pub fn func(
        mut self,
        service: u16,
        opcode: u32,
        f: impl Fn(&[u8]) -> Result<Vec<u8>, RemoteError> + Send + Sync + 'static,
    ) -> Node {
        self.services
            .entry(service)
            .or_default()
            .insert(opcode, Answer::Func(Arc::new(f)));
        self
    }

    /// A service that is registered but never answers `opcode`.
    pub fn silent(mut self, service: u16, opcode: u32) -> Node {
        self.services
            .entry(service)
            .or_default()
            .insert(opcode, Answer::Silent);
        self
    }
}

/// The script: this node's PNN and every node.
#[derive(Clone, Default)]
pub struct Script {
    /// The PNN of the node the CLI runs on.
    pub this: u32,
    /// Every node of the nodes file.
    pub nodes: BTreeMap<u32, Node>,
}

/// Describes a request payload for the log (`None`: not a known opcode).
pub type Describe = fn(u32, &[u8]) -> String;

/// A running scripted transportd; stopped and its socket removed on drop.
pub struct Fake {
    /// The run directory holding `transport.sock`.
    pub run_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fake {
    /// Starts answering on `run_dir/transport.sock`.
    pub fn start(run_dir: &Path, script: Script, describe: Describe) -> Fake {
        std::fs::create_dir_all(run_dir).unwrap();
        let path = run_dir.join("transport.sock");
        let _ = std::fs::remove_file(&path);
        let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(false);
        let thread = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(serve(
                    std_listener,
                    Arc::new(script),
                    log,
                    describe,
                    stopped,
                ));
            })
        };
        Fake {
            run_dir: run_dir.to_path_buf(),
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// The requests received since the last call, one line each.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(self.run_dir.join("transport.sock"));
    }
}

async fn serve(
    listener: std::os::unix::net::UnixListener,
    script: Arc<Script>,
    log: Arc<Mutex<Vec<String>>>,
    describe: Describe,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = UnixListener::from_std(listener).unwrap();
    let mut tasks = Vec::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let script = Arc::clone(&script);
                let log = Arc::clone(&log);
                let stopped = stopped.clone();
                tasks.push(tokio::spawn(connection(stream, script, log, describe, stopped)));
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}

fn name(service: u16) -> String {
    well_known_name(service).map_or_else(|| format!("{service:#06x}"), str::to_string)
}

async fn connection(
    stream: tokio::net::UnixStream,
    script: Arc<Script>,
    log: Arc<Mutex<Vec<String>>>,
    describe: Describe,
    mut stopped: watch::Receiver<bool>,
) {
    let Link {
        outgoing,
        mut incoming,
    } = Link::from_stream(stream);
    let mut registered = false;
    loop {
        let msg = tokio::select! {
            _ = stopped.changed() => return,
            m = incoming.recv() => match m { Some(m) => m, None => return },
        };
        if msg.header.kind != Kind::Request {
            continue;
        }
        let mut header = msg.header;
        if !registered {
            assert_eq!(header.opcode, REGISTER, "first frame must register");
            registered = true;
            let reply = RegisterReply {
                pnn: script.this,
                service: 0x8000,
            };
            let _ = outgoing
                .send(answer_message(&header, Ok(encode_payload(&reply).unwrap())))
                .await;
            continue;
        }
        header.src = Address::new(script.this, 0x8000);
        if header.dst.pnn == LOCAL {
            header.dst.pnn = script.this;
        }
        let dst = header.dst;
        log.lock().unwrap().push(format!(
            "{}:{} {}",
            dst.pnn,
            name(dst.service),
            describe(header.opcode, &msg.payload)
        ));
        let answer: Option<Result<Vec<u8>, RemoteError>> =
            if dst.service == TRANSPORT && dst.pnn == script.this {
                Some(transport_control(&script, header.opcode, &msg.payload))
            } else {
                match script.nodes.get(&dst.pnn) {
                    None => Some(Err(RemoteError::new(
                        ErrorCode::NodeUnreachable,
                        format!("node {} is not connected to node {}", dst.pnn, script.this),
                    ))),
                    Some(node) if !node.connected => Some(Err(RemoteError::new(
                        ErrorCode::NodeUnreachable,
                        format!("node {} is not connected to node {}", dst.pnn, script.this),
                    ))),
                    Some(_) if dst.service == TRANSPORT => {
                        Some(transport_control(&script, header.opcode, &msg.payload))
                    }
                    Some(node) => match node.services.get(&dst.service) {
                        None => Some(Err(RemoteError::new(
                            ErrorCode::UnknownService,
                            format!("no service {:#06x} on node {}", dst.service, dst.pnn),
                        ))),
                        Some(ops) => match ops.get(&header.opcode) {
                            None => Some(Err(RemoteError::new(
                                ErrorCode::UnknownOpcode,
                                format!("unknown opcode {:#010x}", header.opcode),
                            ))),
                            Some(Answer::Fixed(r)) => Some(r.clone()),
                            Some(Answer::Func(f)) => Some(f(&msg.payload)),
                            Some(Answer::Silent) => None,
                        },
                    },
                }
            };
        if let Some(result) = answer {
            let _ = outgoing.send(answer_message(&header, result)).await;
        }
    }
}

/// A daemon's `LOG_LEVEL` answer: the level set, else `info`.
///
/// # Errors
///
/// A payload that does not decode.
pub fn log_level(payload: &[u8]) -> Result<Vec<u8>, RemoteError> {
    let req: LogLevelRequest = decode_payload(payload)
        .map_err(|e| RemoteError::new(ErrorCode::BadRequest, e.to_string()))?;
    Ok(encode_payload(&LogLevelReply {
        level: req.set.unwrap_or_else(|| "info".to_string()),
    })
    .unwrap())
}

fn transport_control(script: &Script, opcode: u32, payload: &[u8]) -> Result<Vec<u8>, RemoteError> {
    match opcode {
        PING => {
            let req: PingRequest = decode_payload(payload)
                .map_err(|e| RemoteError::new(ErrorCode::BadRequest, e.to_string()))?;
            Ok(encode_payload(&PingReply {
                data: req.data,
                clients: 4,
            })
            .unwrap())
        }
        STATISTICS_RESET => Ok(encode_payload(&()).unwrap()),
        LOG_LEVEL => log_level(payload),
        STATISTICS => Ok(encode_payload(&Statistics {
            counters: vec![
                ("local_in".to_string(), 120),
                ("peer_in".to_string(), 340),
                ("clients".to_string(), 4),
            ],
        })
        .unwrap()),
        LIST_PEERS => {
            let peers = script
                .nodes
                .iter()
                .filter(|(pnn, _)| **pnn != script.this)
                .map(|(pnn, n)| PeerInfo {
                    pnn: *pnn,
                    address: format!("192.0.2.{}", 11 + pnn),
                    connected: n.connected,
                    since_ms: 0,
                })
                .collect();
            Ok(encode_payload(&PeerList {
                pnn: script.this,
                peers,
            })
            .unwrap())
        }
        other => Err(RemoteError::new(
            ErrorCode::UnknownOpcode,
            format!("transport control {other:#010x} not scripted"),
        )),
    }
}

/// Leaves a socket file nobody listens on (a transportd that died).
pub fn stale_socket(run_dir: &Path) {
    drop(stuck_socket(run_dir));
}

/// Binds `run_dir/transport.sock` and never accepts: a transportd that
/// hangs. The socket lives as long as the returned listener.
pub fn stuck_socket(run_dir: &Path) -> std::os::unix::net::UnixListener {
    std::fs::create_dir_all(run_dir).unwrap();
    let path = run_dir.join("transport.sock");
    let _ = std::fs::remove_file(&path);
    std::os::unix::net::UnixListener::bind(path).unwrap()
}
