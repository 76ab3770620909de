//! Logging set-up shared by every daemon binary: a `tracing` subscriber whose
//! filter can be changed at run time through the `LOG_LEVEL` common control.
//!
//! ```no_run
//! # async fn demo(client: transport::client::Client) -> Result<(), transport::logging::LoggingError> {
//! let hook = transport::logging::init("info")?;
//! client.set_log_level_hook(move |set| hook(set));
//! # Ok(()) }
//! ```

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

/// Installs a stderr `tracing` subscriber with `filter` (e.g. `"info"` or
/// `"transport=debug,info"`) and returns the hook answering `LOG_LEVEL`.
///
/// # Errors
/// [`LoggingError::BadFilter`], [`LoggingError::AlreadyInstalled`] (in a
/// single-process node, install once and share the hook).
pub fn init(filter: &str) -> Result<LogLevelHook, LoggingError> {
    let parsed = parse(filter)?;
    let (layer, handle) = reload::Layer::new(parsed);
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init()
        .map_err(|e| LoggingError::AlreadyInstalled(e.to_string()))?;
    Ok(hook(handle, filter))
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
}
