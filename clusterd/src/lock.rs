//! The cluster lock, through CTDB's mutex-helper protocol
//! (`ctdb/doc/cluster_mutex_helper.txt`), so CTDB's own helpers (fcntl on a
//! cluster filesystem, etcd, Ceph RADOS) work unchanged.
//!
//! Protocol: the helper is started with its arguments and writes one ASCII
//! character to its stdout (a pipe): `'0'` the lock is taken, and the helper
//! keeps running while it holds it; `'1'` contended; `'2'` timeout; `'3'`
//! error. End of file without a character counts as `'3'`. After `'0'`, the
//! helper exiting means the lock is lost. We release by sending SIGTERM to the
//! helper's pid (as ctdbd does), then SIGKILL if it has not gone in a second.
//! The fcntl helper polls its parent and exits if we die, so a crashed
//! clusterd frees the lock too.
//!
//! The configured value is CTDB's: `!HELPER ARGS...` (split on blanks, no
//! quoting) runs that helper; anything else is a file for the fcntl helper.
//! Besides, `etcd://...` is clusterd's own etcd lock ([`crate::etcd_lock`]),
//! which runs no helper.
//!
//! The helper runs with [`LockSpec::env`] added to its environment: the
//! daemon puts a private `ctdb` command first on its `PATH`
//! ([`config::ctdb_shim`]), since CTDB's etcd helper asks `ctdb pnn`. Its
//! stdout is drained after the first answer (the etcd helper writes `0`
//! again at every renewal; a full pipe would block it and the lock would
//! expire under a helper that is still running), and what it writes on
//! stderr is logged, as is its exit status when it did not take the lock.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use std::ffi::OsString;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::etcd_lock::EtcdSpec;

/// Where Debian's `ctdb` package installs the fcntl helper.
pub const FCNTL_HELPER: &str = "/usr/libexec/ctdb/ctdb_mutex_fcntl_helper";

/// Errors of the cluster lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The configured lock is empty or `!` with no command.
    #[error("cluster lock {0:?}: empty helper command")]
    Empty(String),
    /// A URL-style lock other than `etcd://`: not a file for the fcntl
    /// helper either.
    #[error(
        "cluster lock {0:?}: unknown kind of URL; the only one is \
         etcd://HOST:PORT[,HOST:PORT...]/PREFIX (docs/etcd.md)"
    )]
    Unsupported(String),
    /// A bad `etcd://` setting.
    #[error("cluster lock {url:?}: {reason} (docs/etcd.md)")]
    Etcd {
        /// The setting.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The helper could not be started.
    #[error("cluster lock helper {program}: cannot start")]
    Spawn {
        /// The helper.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading the helper's answer failed.
    #[error("cluster lock helper {program}: cannot read its answer")]
    Read {
        /// The helper.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A parsed `cluster lock` setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockSpec {
    /// The helper to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Added to its environment (not part of the setting).
    pub env: Vec<(OsString, OsString)>,
    /// The native etcd lock (`etcd://...`): no helper is run, and
    /// `program` and `args` are not used.
    pub etcd: Option<EtcdSpec>,
}

impl LockSpec {
    /// The setting as CTDB writes it: the lock file for the fcntl helper
    /// with one argument, `!helper args` otherwise.
    #[must_use]
    pub fn setting(&self) -> String {
        if let Some(e) = &self.etcd {
            return e.url.clone();
        }
        if self.program == std::path::Path::new(FCNTL_HELPER) && self.args.len() == 1 {
            return self.args[0].clone();
        }
        let mut out = format!("!{}", self.program.display());
        for a in &self.args {
            out.push(' ');
            out.push_str(a);
        }
        out
    }

    /// Parses CTDB's `cluster lock` value.
    ///
    /// # Errors
    ///
    /// [`LockError::Empty`] for an empty value or a bare `!`,
    /// [`LockError::Etcd`] for a bad `etcd://` URL, [`LockError::Unsupported`]
    /// for another URL.
    pub fn parse(value: &str) -> Result<Self, LockError> {
        let value = value.trim();
        if value.starts_with(crate::etcd_lock::SCHEME) {
            let etcd = EtcdSpec::parse(value).map_err(|reason| LockError::Etcd {
                url: value.into(),
                reason,
            })?;
            return Ok(Self {
                program: PathBuf::new(),
                args: Vec::new(),
                env: Vec::new(),
                etcd: Some(etcd),
            });
        }
        if let Some(cmd) = value.strip_prefix('!') {
            let mut words = cmd.split_whitespace();
            let program = words.next().ok_or_else(|| LockError::Empty(value.into()))?;
            return Ok(Self {
                program: program.into(),
                args: words.map(str::to_string).collect(),
                env: Vec::new(),
                etcd: None,
            });
        }
        if value.is_empty() {
            return Err(LockError::Empty(value.into()));
        }
        if value.contains("://") {
            return Err(LockError::Unsupported(value.into()));
        }
        Ok(Self {
            program: FCNTL_HELPER.into(),
            args: vec![value.to_string()],
            env: Vec::new(),
            etcd: None,
        })
    }
}

/// The helper's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockAnswer {
    /// `'0'`: taken.
    Taken,
    /// `'1'`: another holder has it.
    Contended,
    /// `'2'`, or our own timeout fired first.
    Timeout,
    /// `'3'`, end of file, or an unknown character.
    Error,
}

impl LockAnswer {
    /// The answer for one character of the protocol.
    #[must_use]
    pub fn from_byte(b: u8) -> Self {
        match b {
            b'0' => Self::Taken,
            b'1' => Self::Contended,
            b'2' => Self::Timeout,
            _ => Self::Error,
        }
    }
}

/// A running helper that holds the lock.
#[derive(Debug)]
pub struct HeldLock {
    child: Child,
    program: PathBuf,
    /// The reader of its stderr (the text comes back at its end).
    stderr: Option<tokio::task::JoinHandle<String>>,
}

/// Starts the helper and waits up to `timeout` for its answer. On
/// [`LockAnswer::Taken`] the returned [`HeldLock`] keeps the helper running;
/// otherwise the helper has been stopped.
///
/// # Errors
///
/// [`LockError::Spawn`] or [`LockError::Read`].
pub async fn take(
    spec: &LockSpec,
    timeout: Duration,
) -> Result<(LockAnswer, Option<HeldLock>), LockError> {
    let a = attempt(spec, timeout).await?;
    Ok((a.answer, a.held))
}

/// One attempt's result: the answer, the running helper when it took the
/// lock, and otherwise why not in the helper's words.
#[derive(Debug)]
pub struct Attempt {
    /// The helper's answer.
    pub answer: LockAnswer,
    /// The helper holding the lock (only with [`LockAnswer::Taken`]).
    pub held: Option<HeldLock>,
    /// When not taken: how the helper ended and the end of what it wrote
    /// on stderr (empty when it said nothing).
    pub detail: String,
}

/// Starts `cmd` on a thread of the blocking pool, not the caller's: the
/// parent of a fork/exec (or `posix_spawn`) waits until the child has
/// called exec, and on a machine so loaded that the child is not scheduled
/// for hundreds of ms, clusterd's one thread would send no heartbeat
/// meanwhile (seen in the etcd tests: the node starting the Python lock
/// helper lost its peers for `dead_after` at load 19 on 2 cores).
///
/// # Errors
///
/// The spawn's error, or `Other` if the blocking pool could not run it.
pub async fn spawn_off_thread(mut cmd: Command) -> std::io::Result<Child> {
    tokio::task::spawn_blocking(move || cmd.spawn())
        .await
        .map_err(|e| std::io::Error::other(format!("spawning thread failed: {e}")))?
}

/// Most of a failed helper's stderr kept for the log.
const STDERR_KEEP: usize = 2048;

/// [`take`] with the helper's own account of a failure.
///
/// # Errors
///
/// [`LockError::Spawn`] or [`LockError::Read`].
pub async fn attempt(spec: &LockSpec, timeout: Duration) -> Result<Attempt, LockError> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn_off_thread(cmd)
        .await
        .map_err(|source| LockError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut held = HeldLock {
        program: spec.program.clone(),
        child,
        stderr: None,
    };
    let Some(mut stdout) = stdout else {
        held.release().await;
        return Ok(Attempt {
            answer: LockAnswer::Error,
            held: None,
            detail: "no stdout pipe".into(),
        });
    };
    // stderr is read at the same time, so a helper that writes much there
    // before answering does not block on a full pipe.
    let mut err_task = stderr.map(|e| tokio::spawn(collect_stderr(e, spec.program.clone())));
    let mut byte = [0u8; 1];
    let answer = match tokio::time::timeout(timeout, stdout.read(&mut byte)).await {
        Err(_) => LockAnswer::Timeout,
        Ok(Ok(0)) => LockAnswer::Error,
        Ok(Ok(_)) => LockAnswer::from_byte(byte[0]),
        Ok(Err(source)) => {
            held.release().await;
            return Err(LockError::Read {
                program: spec.program.clone(),
                source,
            });
        }
    };
    if answer == LockAnswer::Taken {
        // stdout is drained (CTDB's etcd helper repeats its `0` at every
        // renewal); stderr is kept for the report when the lock is lost.
        held.stderr = err_task.take();
        tokio::spawn(drain(stdout));
        return Ok(Attempt {
            answer,
            held: Some(held),
            detail: String::new(),
        });
    }
    let status = if answer == LockAnswer::Timeout {
        held.release().await;
        None
    } else {
        // It answered (or closed stdout): give it a moment to exit by
        // itself, so that its status can be told.
        match tokio::time::timeout(Duration::from_secs(1), held.child.wait()).await {
            Ok(Ok(st)) => Some(st),
            _ => {
                held.release().await;
                None
            }
        }
    };
    let text = match err_task {
        Some(t) => tokio::time::timeout(Duration::from_secs(1), t)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => String::new(),
    };
    let mut detail = match (answer, status) {
        (LockAnswer::Timeout, _) => format!("no answer within {} ms", timeout.as_millis()),
        (_, Some(st)) => match st.code() {
            Some(c) => format!("exit status {c}"),
            None => format!("ended by {st}"),
        },
        (_, None) => "stopped".into(),
    };
    let text = text.trim();
    if !text.is_empty() {
        detail.push_str("; stderr: ");
        detail.push_str(text);
    }
    Ok(Attempt {
        answer,
        held: None,
        detail,
    })
}

/// Reads the helper's stderr to its end, logging each line at debug level,
/// and returns its last [`STDERR_KEEP`] bytes.
async fn collect_stderr(stderr: impl AsyncRead + Unpin, program: PathBuf) -> String {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut kept = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(helper = %program.display(), "cluster lock helper: {line}");
        kept.push_str(&line);
        kept.push('\n');
        if kept.len() > STDERR_KEEP {
            let cut = kept.len() - STDERR_KEEP;
            let cut = (cut..kept.len())
                .find(|&i| kept.is_char_boundary(i))
                .unwrap_or(0);
            kept.drain(..cut);
        }
    }
    kept
}

async fn drain(mut r: impl AsyncRead + Unpin) {
    let mut buf = [0u8; 64];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

impl HeldLock {
    /// The helper's pid (None once it has been reaped).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The helper program.
    #[must_use]
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }

    /// Resolves when the helper exits: the lock is lost. Returns how it
    /// ended and the end of what it wrote on stderr.
    pub async fn lost(&mut self) -> String {
        // An error here means the child cannot be waited for; treat as lost.
        let mut detail = match self.child.wait().await {
            Ok(st) => match st.code() {
                Some(c) => format!("exit status {c}"),
                None => format!("ended by {st}"),
            },
            Err(e) => format!("cannot wait for it: {e}"),
        };
        if let Some(t) = self.stderr.take() {
            let text = tokio::time::timeout(Duration::from_secs(1), t)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let text = text.trim();
            if !text.is_empty() {
                detail.push_str("; stderr: ");
                detail.push_str(text);
            }
        }
        detail
    }

    /// Releases the lock: SIGTERM to the helper's pid, SIGKILL after 1 s,
    /// then reaps it.
    pub async fn release(&mut self) {
        if let Some(pid) = self.child.id() {
            if let Ok(pid) = i32::try_from(pid) {
                // The pid is our own unreaped child, so it cannot have been
                // reused by another process.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        if tokio::time::timeout(Duration::from_secs(1), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_setting_reads_back_as_ctdb_writes_it() {
        for v in [
            "/clusterfs/.ctdb/reclock",
            "!/usr/libexec/ctdb/ctdb_etcd_lock -v",
        ] {
            assert_eq!(LockSpec::parse(v).unwrap().setting(), v);
        }
    }

    use super::*;

    #[test]
    fn parse_plain_path_means_fcntl_helper() {
        let s = LockSpec::parse("/clusterfs/.lock").unwrap();
        assert_eq!(s.program, PathBuf::from(FCNTL_HELPER));
        assert_eq!(s.args, vec!["/clusterfs/.lock".to_string()]);
    }

    #[test]
    fn parse_bang_command_splits_on_blanks() {
        let s = LockSpec::parse("!/usr/libexec/ctdb/ctdb_etcd_lock  -v  /x").unwrap();
        assert_eq!(s.program, PathBuf::from("/usr/libexec/ctdb/ctdb_etcd_lock"));
        assert_eq!(s.args, vec!["-v".to_string(), "/x".to_string()]);
        assert!(matches!(LockSpec::parse("!  "), Err(LockError::Empty(_))));
        assert!(matches!(LockSpec::parse(""), Err(LockError::Empty(_))));
        assert!(matches!(
            LockSpec::parse("zk://192.0.2.1:2181/ipf"),
            Err(LockError::Unsupported(_))
        ));
        let e = LockSpec::parse("etcd://192.0.2.1:2379/ipf").unwrap();
        assert_eq!(e.setting(), "etcd://192.0.2.1:2379/ipf");
        assert_eq!(e.etcd.unwrap().key, "/ipf/lock");
        let err = LockSpec::parse("etcd://192.0.2.1/ipf")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"etcd://192.0.2.1/ipf\": member \"192.0.2.1\": no port"),
            "{err}"
        );
    }

    #[test]
    fn answers() {
        assert_eq!(LockAnswer::from_byte(b'0'), LockAnswer::Taken);
        assert_eq!(LockAnswer::from_byte(b'1'), LockAnswer::Contended);
        assert_eq!(LockAnswer::from_byte(b'2'), LockAnswer::Timeout);
        assert_eq!(LockAnswer::from_byte(b'3'), LockAnswer::Error);
        assert_eq!(LockAnswer::from_byte(b'x'), LockAnswer::Error);
    }
}
