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

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Where Debian's `ctdb` package installs the fcntl helper.
pub const FCNTL_HELPER: &str = "/usr/libexec/ctdb/ctdb_mutex_fcntl_helper";

/// Errors of the cluster lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The configured lock is empty or `!` with no command.
    #[error("cluster lock {0:?}: empty helper command")]
    Empty(String),
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
}

impl LockSpec {
    /// The setting as CTDB writes it: the lock file for the fcntl helper
    /// with one argument, `!helper args` otherwise.
    #[must_use]
    pub fn setting(&self) -> String {
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
    /// [`LockError::Empty`] for an empty value or a bare `!`.
    pub fn parse(value: &str) -> Result<Self, LockError> {
        let value = value.trim();
        if let Some(cmd) = value.strip_prefix('!') {
            let mut words = cmd.split_whitespace();
            let program = words.next().ok_or_else(|| LockError::Empty(value.into()))?;
            return Ok(Self {
                program: program.into(),
                args: words.map(str::to_string).collect(),
            });
        }
        if value.is_empty() {
            return Err(LockError::Empty(value.into()));
        }
        Ok(Self {
            program: FCNTL_HELPER.into(),
            args: vec![value.to_string()],
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
    let child = Command::new(&spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| LockError::Spawn {
            program: spec.program.clone(),
            source,
        })?;
    let mut held = HeldLock {
        program: spec.program.clone(),
        child,
    };
    let answer = match held.child.stdout.as_mut() {
        None => LockAnswer::Error,
        Some(stdout) => {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(timeout, stdout.read(&mut byte)).await {
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
            }
        }
    };
    if answer == LockAnswer::Taken {
        return Ok((answer, Some(held)));
    }
    held.release().await;
    Ok((answer, None))
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

    /// Resolves when the helper exits: the lock is lost.
    pub async fn lost(&mut self) {
        // An error here means the child cannot be waited for; treat as lost.
        let _ = self.child.wait().await;
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
