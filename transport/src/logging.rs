//! Logging set-up shared by every daemon binary and masterd: one `tracing`
//! subscriber whose filter can be changed at run time through the
//! `LOG_LEVEL` common control, writing to systemd's journal when the process
//! runs under systemd and plain text on stderr otherwise.
//!
//! The sink is chosen once, at [`init`], by [`Sink::detect`]: journald when
//! `$JOURNAL_STREAM` names the device and inode of this process's stderr
//! (what systemd sets when a unit's standard error goes to the journal, see
//! systemd.exec(5)), so that a daemon started by hand from a shell under a
//! systemd session, whose stderr is a terminal, still writes plain text.
//! Journal entries carry the level as `PRIORITY` (syslog's meaning: info is
//! 6, debug 7), the span and event fields as journal fields (prefixed
//! `F_`), and the binary's name as `SYSLOG_IDENTIFIER`.
//!
//! ```no_run
//! # async fn demo(client: transport::client::Client) -> Result<(), transport::logging::LoggingError> {
//! let hook = transport::logging::init("info")?;
//! client.set_log_level_hook(move |set| hook(set));
//! # Ok(()) }
//! ```

use std::io::IsTerminal;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

use crate::controls::LogLevelHook;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter string is not a valid tracing filter.
    #[error("bad log filter {filter:?}: {reason}")]
    BadFilter {
        /// The filter given.
        filter: String,
        /// The parser's reason.
        reason: String,
    },
    /// A global subscriber is already installed in this process.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Where log events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Plain text on stderr (colours only when stderr is a terminal).
    Stderr,
    /// systemd's journal, through its native socket (structured fields).
    Journald,
}

impl Sink {
    /// [`Sink::Journald`] when `$JOURNAL_STREAM` names this process's
    /// stderr, [`Sink::Stderr`] otherwise.
    pub fn detect() -> Sink {
        let value = std::env::var("JOURNAL_STREAM").ok();
        Sink::for_stream(value.as_deref(), std::io::stderr().as_raw_fd())
    }

    /// [`Sink::Journald`] when `journal_stream` (a `$JOURNAL_STREAM`
    /// value) names the open file `fd`, [`Sink::Stderr`] otherwise.
    pub fn for_stream(journal_stream: Option<&str>, fd: RawFd) -> Sink {
        let Some(value) = journal_stream else {
            return Sink::Stderr;
        };
        match nix::sys::stat::fstat(fd) {
            Ok(st) => {
                #[allow(clippy::useless_conversion)] // st_dev/st_ino are u64 on most targets only
                let (dev, ino) = (u64::from(st.st_dev), u64::from(st.st_ino));
                if journal_stream_names(value, dev, ino) {
                    Sink::Journald
                } else {
                    Sink::Stderr
                }
            }
            Err(_) => Sink::Stderr,
        }
    }
}

/// Does a `$JOURNAL_STREAM` value (`DEVICE:INODE`, both decimal) name the
/// file with device `dev` and inode `ino`?
pub fn journal_stream_names(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// Installs the process's `tracing` subscriber with `filter` (e.g. `"info"`
/// or `"transport=debug,info"`) on the sink [`Sink::detect`] chooses, and
/// returns the hook answering `LOG_LEVEL`. When the journal cannot be
/// reached, logs go to stderr and a warning says why.
///
/// # Errors
/// [`LoggingError::BadFilter`], [`LoggingError::AlreadyInstalled`] (in a
/// single-process node, install once and share the hook).
pub fn init(filter: &str) -> Result<LogLevelHook, LoggingError> {
    init_with(filter, Sink::detect())
}

/// [`init`] on a given sink.
///
/// # Errors
/// As [`init`].
pub fn init_with(filter: &str, sink: Sink) -> Result<LogLevelHook, LoggingError> {
    let parsed = parse(filter)?;
    let (layer, handle) = reload::Layer::new(parsed);
    let (journald, journal_error) = match sink {
        Sink::Journald => match tracing_journald::layer() {
            Ok(l) => (Some(l.with_priority_mappings(syslog_priorities())), None),
            Err(e) => (None, Some(e)),
        },
        Sink::Stderr => (None, None),
    };
    let text = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    tracing_subscriber::registry()
        .with(layer)
        .with(journald)
        .with(text)
        .try_init()
        .map_err(|e| LoggingError::AlreadyInstalled(e.to_string()))?;
    if let Some(e) = journal_error {
        tracing::warn!(error = %e, "cannot reach the systemd journal; logging to stderr");
    }
    Ok(hook(handle, filter))
}

/// syslog's meaning of the levels (what `journalctl -p info` expects):
/// INFO is informational (6), DEBUG and TRACE are debug (7); the crate's
/// default would file INFO as notice (5).
fn syslog_priorities() -> tracing_journald::PriorityMappings {
    use tracing_journald::Priority;
    tracing_journald::PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

/// The `LOG_LEVEL` hook over a reloadable filter, starting at `initial`.
pub fn hook<S: 'static>(handle: reload::Handle<EnvFilter, S>, initial: &str) -> LogLevelHook {
    let current = Arc::new(Mutex::new(initial.to_owned()));
    Arc::new(move |set: Option<&str>| {
        let mut cur = current
            .lock()
            .map_err(|_| "log level lock poisoned".to_owned())?;
        if let Some(new) = set {
            let filter = parse(new).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())?;
            new.clone_into(&mut cur);
        }
        Ok(cur.clone())
    })
}

fn parse(filter: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::try_new(filter).map_err(|e| LoggingError::BadFilter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_is_refused_and_hook_changes_the_level() {
        assert!(matches!(
            init("transport=notalevel"),
            Err(LoggingError::BadFilter { .. })
        ));
        // A local subscriber (not the global one: other tests may install that).
        let (layer, handle) = reload::Layer::new(parse("info").unwrap());
        let subscriber = tracing_subscriber::registry().with(layer);
        let hook = hook(handle, "info");
        assert_eq!(hook(None).unwrap(), "info");
        assert_eq!(hook(Some("debug")).unwrap(), "debug");
        assert_eq!(hook(None).unwrap(), "debug");
        assert!(hook(Some("x=nope")).is_err());
        assert_eq!(hook(None).unwrap(), "debug");
        drop(subscriber);
        // With the subscriber gone, setting fails instead of pretending.
        assert!(hook(Some("info")).is_err());
    }

    #[test]
    fn journal_stream_must_name_the_same_device_and_inode() {
        assert!(journal_stream_names("8:12345", 8, 12345));
        assert!(journal_stream_names("8:12345\n", 8, 12345));
        assert!(!journal_stream_names("8:12346", 8, 12345));
        assert!(!journal_stream_names("9:12345", 8, 12345));
        assert!(!journal_stream_names("", 8, 12345));
        assert!(!journal_stream_names("8", 8, 12345));
        assert!(!journal_stream_names("a:b", 8, 12345));
        assert!(!journal_stream_names("8:12345:1", 8, 12345));
    }

    #[test]
    fn the_sink_is_journald_only_for_the_named_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("logging-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = std::fs::File::create(dir.join("a")).unwrap();
        let b = std::fs::File::create(dir.join("b")).unwrap();
        let m = a.metadata().unwrap();
        let value = format!("{}:{}", m.dev(), m.ino());
        assert_eq!(
            Sink::for_stream(Some(&value), a.as_raw_fd()),
            Sink::Journald
        );
        assert_eq!(Sink::for_stream(Some(&value), b.as_raw_fd()), Sink::Stderr);
        assert_eq!(Sink::for_stream(None, a.as_raw_fd()), Sink::Stderr);
        assert_eq!(Sink::for_stream(Some(&value), -1), Sink::Stderr);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
