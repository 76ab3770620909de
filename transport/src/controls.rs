//! The common controls, implemented once: [`PING`], [`VERSION`],
//! [`STATISTICS`], [`LOG_LEVEL`], [`SHUTDOWN`] and [`STATISTICS_RESET`].
//!
//! The client library answers them for every daemon (so no daemon writes
//! them), and the in-process router and transportd answer them for service 0.
//! This module is pure: it turns a request payload and a [`ControlContext`]
//! into a reply payload or a [`RemoteError`], and says whether shutdown was
//! asked; the caller sends the answer and fires its shutdown notification.

use std::sync::Arc;

use crate::proto::control::{
    self, LogLevelReply, LogLevelRequest, PingReply, PingRequest, Statistics, VersionInfo,
    LOG_LEVEL, PING, SHUTDOWN, STATISTICS, STATISTICS_RESET, VERSION,
};
use crate::proto::{
    decode_payload, encode_payload, ErrorCode, HeaderRepr, Kind, Message, RemoteError,
};

/// A daemon's log-level hook: called with `None` to read the level and with
/// `Some(filter)` to set it; returns the level in force, or why the filter was
/// refused. Typically wraps a `tracing_subscriber::reload::Handle`.
pub type LogLevelHook = Arc<dyn Fn(Option<&str>) -> Result<String, String> + Send + Sync>;

/// What the answering side knows about itself.
pub struct ControlContext<'a> {
    /// The service's registered name.
    pub name: &'a str,
    /// Local clients of the answering transport (0 for a daemon).
    pub clients: u32,
    /// Builds the counters on demand (only called for [`STATISTICS`]).
    pub statistics: &'a dyn Fn() -> Statistics,
    /// The log-level hook, if one is installed.
    pub log_level: Option<&'a LogLevelHook>,
    /// Starts the counters again from 0 ([`STATISTICS_RESET`]); `None`:
    /// refused.
    pub reset_statistics: Option<&'a dyn Fn()>,
}

/// The outcome of a common control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlAnswer {
    /// The reply payload, or the error to send back.
    pub result: Result<Vec<u8>, RemoteError>,
    /// The request was [`SHUTDOWN`]: fire the shutdown notification after
    /// sending the reply.
    pub shutdown: bool,
}

/// Answers the common control `opcode` with request `payload`.
///
/// Opcodes outside the common range, or common opcodes not defined in this
/// version, get [`ErrorCode::UnknownOpcode`]; undecodable payloads get
/// [`ErrorCode::BadRequest`].
pub fn answer_common(opcode: u32, payload: &[u8], ctx: &ControlContext<'_>) -> ControlAnswer {
    let mut shutdown = false;
    let result = match opcode {
        PING => decode_payload::<PingRequest>(payload)
            .map_err(bad_request)
            .and_then(|req| {
                encode_payload(&PingReply {
                    data: req.data,
                    clients: ctx.clients,
                })
                .map_err(internal)
            }),
        VERSION => decode_payload::<()>(payload)
            .map_err(bad_request)
            .and_then(|()| {
                encode_payload(&VersionInfo {
                    name: ctx.name.to_owned(),
                    crate_version: env!("CARGO_PKG_VERSION").to_owned(),
                    protocol_version: crate::proto::VERSION,
                })
                .map_err(internal)
            }),
        STATISTICS => decode_payload::<()>(payload)
            .map_err(bad_request)
            .and_then(|()| encode_payload(&(ctx.statistics)()).map_err(internal)),
        LOG_LEVEL => decode_payload::<LogLevelRequest>(payload)
            .map_err(bad_request)
            .and_then(|req| match ctx.log_level {
                None => Err(RemoteError::new(
                    ErrorCode::Refused,
                    format!("{} has no log level control", ctx.name),
                )),
                Some(hook) => hook(req.set.as_deref())
                    .map_err(|why| RemoteError::new(ErrorCode::BadRequest, why))
                    .and_then(|level| encode_payload(&LogLevelReply { level }).map_err(internal)),
            }),
        STATISTICS_RESET => decode_payload::<()>(payload)
            .map_err(bad_request)
            .and_then(|()| match ctx.reset_statistics {
                None => Err(RemoteError::new(
                    ErrorCode::Refused,
                    format!("{} cannot reset its statistics", ctx.name),
                )),
                Some(reset) => {
                    reset();
                    encode_payload(&()).map_err(internal)
                }
            }),
        SHUTDOWN => decode_payload::<()>(payload)
            .map_err(bad_request)
            .and_then(|()| {
                shutdown = true;
                encode_payload(&()).map_err(internal)
            }),
        other => Err(RemoteError::new(
            ErrorCode::UnknownOpcode,
            format!(
                "{} does not handle opcode {other:#010x}{}",
                ctx.name,
                if control::is_common(other) {
                    " (unknown common control)"
                } else {
                    ""
                }
            ),
        )),
    };
    ControlAnswer { result, shutdown }
}

fn bad_request(err: crate::proto::PayloadError) -> RemoteError {
    RemoteError::new(ErrorCode::BadRequest, err.to_string())
}

fn internal(err: crate::proto::PayloadError) -> RemoteError {
    RemoteError::new(ErrorCode::Internal, err.to_string())
}

/// The Reply (`Ok`) or Error (`Err`) frame answering `request`.
///
/// The answer goes from the request's destination back to its source, with
/// the same request id and opcode. An error that cannot be encoded (it always
/// can) degrades to an empty Error payload.
pub fn answer_message(request: &HeaderRepr, result: Result<Vec<u8>, RemoteError>) -> Message {
    match result {
        Ok(payload) => Message::new(request.answer(Kind::Reply), payload),
        Err(err) => error_message(request, &err),
    }
}

/// The Error frame answering `request` with `err`.
pub fn error_message(request: &HeaderRepr, err: &RemoteError) -> Message {
    Message::new(
        request.answer(Kind::Error),
        encode_payload(err).unwrap_or_default(),
    )
}

/// The end of a daemon binary's `main`: runs `run` on `runtime` (the
/// binary chooses its kind) and turns the outcome into the exit status —
/// 0, or 1 with the error logged and written to stderr as `NAME: ERROR`.
pub fn run_to_exit<E: std::fmt::Display>(
    name: &str,
    runtime: std::io::Result<tokio::runtime::Runtime>,
    run: impl std::future::Future<Output = Result<(), E>>,
) -> std::process::ExitCode {
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    lock_memory_if_realtime();
    match runtime.block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Makes every thread of a runtime built by `builder` run at the
/// real-time policy and priority of the calling thread, if that is
/// real-time (masterd's `realtime_priority`): masterd sets it with
/// `SCHED_RESET_ON_FORK`, which the kernel applies to every clone, threads
/// included, so without this a runtime's worker and blocking threads run at
/// normal priority while only the main thread is real-time. Processes the
/// daemon starts (hooks, helpers) still start at normal priority. A thread
/// that cannot take the policy stays normal (logged once per thread).
pub fn keep_realtime(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    // SAFETY: plain system calls on this thread; `param` outlives the call.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 || (policy & !libc::SCHED_RESET_ON_FORK) != libc::SCHED_RR {
        return builder;
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above.
    if unsafe { libc::sched_getparam(0, &raw mut param) } != 0 {
        return builder;
    }
    let priority = param.sched_priority;
    builder.on_thread_start(move || {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: a plain system call on the calling thread (tid 0).
        let r = unsafe {
            libc::sched_setscheduler(
                0,
                libc::SCHED_RR | libc::SCHED_RESET_ON_FORK,
                &raw const param,
            )
        };
        if r != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "a runtime thread cannot take real-time priority"
            );
        }
    })
}

/// A daemon started at real-time priority (masterd's
/// `realtime_priority`) also locks its memory, so that a page fault under
/// memory pressure cannot stall it past its lease: current and future
/// pages, each locked when first touched (`MCL_ONFAULT`: no thread stack
/// or heap reservation is filled in ahead of use). Normal daemons do not.
pub fn lock_memory_if_realtime() {
    // SAFETY: plain system calls on this process, no memory passed.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 || (policy & !libc::SCHED_RESET_ON_FORK) != libc::SCHED_RR {
        return;
    }
    // SAFETY: as above.
    let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) };
    if r == 0 {
        tracing::debug!("real-time priority: memory locked");
    } else {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "real-time priority, but cannot lock memory"
        );
    }
}

/// Completes on SIGTERM or SIGINT (logged): how every daemon binary learns
/// that it must stop. If the handlers cannot be installed it never
/// completes (logged): the daemon then stops only on the SHUTDOWN control.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with the SHUTDOWN control");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with<'a>(
        stats: &'a dyn Fn() -> Statistics,
        hook: Option<&'a LogLevelHook>,
    ) -> ControlContext<'a> {
        ControlContext {
            name: "failoverd",
            clients: 3,
            statistics: stats,
            log_level: hook,
            reset_statistics: None,
        }
    }

    #[test]
    fn statistics_reset_calls_the_hook_or_is_refused() {
        let stats = Statistics::default;
        let ans = answer_common(STATISTICS_RESET, &[], &ctx_with(&stats, None));
        assert_eq!(ans.result.unwrap_err().code, ErrorCode::Refused);
        let called = std::cell::Cell::new(0);
        let reset = || called.set(called.get() + 1);
        let mut ctx = ctx_with(&stats, None);
        ctx.reset_statistics = Some(&reset);
        let ans = answer_common(STATISTICS_RESET, &[], &ctx);
        decode_payload::<()>(&ans.result.unwrap()).unwrap();
        assert_eq!(called.get(), 1);
        assert!(!ans.shutdown);
    }

    #[test]
    fn ping_echoes_and_counts_clients() {
        let stats = Statistics::default;
        let ctx = ctx_with(&stats, None);
        let req = encode_payload(&PingRequest {
            data: vec![1, 2, 3],
        })
        .unwrap();
        let ans = answer_common(PING, &req, &ctx);
        let reply: PingReply = decode_payload(&ans.result.unwrap()).unwrap();
        assert_eq!(reply.data, vec![1, 2, 3]);
        assert_eq!(reply.clients, 3);
        assert!(!ans.shutdown);
    }

    #[test]
    fn version_names_service_and_protocol() {
        let stats = Statistics::default;
        let ans = answer_common(VERSION, &[], &ctx_with(&stats, None));
        let v: VersionInfo = decode_payload(&ans.result.unwrap()).unwrap();
        assert_eq!(v.name, "failoverd");
        assert_eq!(v.protocol_version, 1);
        assert_eq!(v.crate_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn statistics_come_from_the_context() {
        let stats = || Statistics {
            counters: vec![("routed".into(), 7)],
        };
        let ans = answer_common(STATISTICS, &[], &ctx_with(&stats, None));
        let s: Statistics = decode_payload(&ans.result.unwrap()).unwrap();
        assert_eq!(s.get("routed"), Some(7));
    }

    #[test]
    fn log_level_without_hook_is_refused_and_with_hook_set() {
        let stats = Statistics::default;
        let req = encode_payload(&LogLevelRequest {
            set: Some("debug".into()),
        })
        .unwrap();
        let ans = answer_common(LOG_LEVEL, &req, &ctx_with(&stats, None));
        assert_eq!(ans.result.unwrap_err().code, ErrorCode::Refused);

        let hook: LogLevelHook = Arc::new(|set: Option<&str>| match set {
            Some("bogus") => Err("bad filter".to_owned()),
            Some(l) => Ok(l.to_owned()),
            None => Ok("info".to_owned()),
        });
        let ans = answer_common(LOG_LEVEL, &req, &ctx_with(&stats, Some(&hook)));
        let r: LogLevelReply = decode_payload(&ans.result.unwrap()).unwrap();
        assert_eq!(r.level, "debug");
        let bogus = encode_payload(&LogLevelRequest {
            set: Some("bogus".into()),
        })
        .unwrap();
        let ans = answer_common(LOG_LEVEL, &bogus, &ctx_with(&stats, Some(&hook)));
        assert_eq!(ans.result.unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn shutdown_sets_the_flag() {
        let stats = Statistics::default;
        let ans = answer_common(SHUTDOWN, &[], &ctx_with(&stats, None));
        assert!(ans.shutdown);
        assert_eq!(ans.result, Ok(vec![]));
    }

    #[test]
    fn unknown_opcode_and_bad_payload_are_errors() {
        let stats = Statistics::default;
        let ctx = ctx_with(&stats, None);
        assert_eq!(
            answer_common(0x77, &[], &ctx).result.unwrap_err().code,
            ErrorCode::UnknownOpcode
        );
        // VERSION takes `()`: one stray byte is a bad request.
        assert_eq!(
            answer_common(VERSION, &[0], &ctx).result.unwrap_err().code,
            ErrorCode::BadRequest
        );
        // PING with a length prefix longer than the payload.
        assert_eq!(
            answer_common(PING, &[9, 1], &ctx).result.unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
}
