//! masterd's messages: the status of the daemons it runs, for the CLI.
//!
//! Owned by masterd (service [`crate::proto::service::MASTERD`]). Opcodes
//! (masterd's range 0x0004_xxxx):
//! * [`GET_STATUS`] — request `()` to masterd → [`MasterStatus`].

use serde::{Deserialize, Serialize};

/// Request `()` → [`MasterStatus`].
pub const GET_STATUS: u32 = 0x0004_0001;

/// How masterd runs the daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Model {
    /// Each daemon is a child process, restarted when it crashes.
    MultiProcess,
    /// Every daemon is a task of masterd's own process.
    SingleProcess,
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Model::MultiProcess => "multi-process",
            Model::SingleProcess => "single-process",
        })
    }
}

/// What one daemon is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DaemonState {
    /// Running (a child process, or a task of masterd).
    Running,
    /// Exited or crashed; waiting for the backoff delay before the restart.
    Restarting,
    /// Could not be started (e.g. the binary is missing); retrying.
    FailedToStart,
    /// Stopped on request.
    Stopped,
}

impl std::fmt::Display for DaemonState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DaemonState::Running => "running",
            DaemonState::Restarting => "restarting",
            DaemonState::FailedToStart => "failed-to-start",
            DaemonState::Stopped => "stopped",
        })
    }
}

/// One daemon in a [`MasterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Its name (`transportd`, `clusterd`, ...).
    pub name: String,
    /// Its state.
    pub state: DaemonState,
    /// Its process id (masterd's own in the single-process model); `None`
    /// when not running.
    pub pid: Option<u32>,
    /// Restarts after an exit nobody asked for.
    pub restarts: u32,
    /// How it last exited, if it did (`signal: 9 (SIGKILL)`, ...).
    pub last_exit: Option<String>,
}

/// [`GET_STATUS`] reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// masterd's process id.
    pub pid: u32,
    /// The process model.
    pub model: Model,
    /// Whether every daemon has answered a PING since start (readiness as
    /// reported to systemd).
    pub ready: bool,
    /// Milliseconds since masterd started.
    pub uptime_ms: u64,
    /// The daemons, in start order.
    pub daemons: Vec<DaemonStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{decode_payload, encode_payload};

    #[test]
    fn status_round_trips() {
        let s = MasterStatus {
            pid: 42,
            model: Model::MultiProcess,
            ready: true,
            uptime_ms: 1_500,
            daemons: vec![DaemonStatus {
                name: "transportd".into(),
                state: DaemonState::Restarting,
                pid: None,
                restarts: 2,
                last_exit: Some("signal: 9 (SIGKILL)".into()),
            }],
        };
        let bytes = encode_payload(&s).unwrap();
        assert_eq!(decode_payload::<MasterStatus>(&bytes).unwrap(), s);
        assert_eq!(Model::SingleProcess.to_string(), "single-process");
        assert_eq!(DaemonState::FailedToStart.to_string(), "failed-to-start");
    }

    #[test]
    fn opcode_is_in_masterd_range() {
        assert_eq!(GET_STATUS >> 16, 4);
    }
}
