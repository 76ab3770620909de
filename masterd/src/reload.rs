//! SIGHUP: masterd reloads the node's configuration (what `systemctl
//! reload` asks; the unit's `ExecReload` sends it).
//!
//! masterd re-reads and checks the whole configuration directory with the
//! daemons' own checks ([`crate::setup::load`]). An invalid configuration
//! is refused: logged at error with its `FILE:LINE`, and no daemon is asked
//! to reload, so nothing of it is applied anywhere. A valid one is applied
//! by masterd (its log level) and then by every daemon: in the
//! multi-process model masterd sends SIGHUP to each running child, in the
//! single-process model it asks each daemon task to reload. Each daemon
//! reads and checks the files again itself ([`transport::tdaemon`]) and
//! applies what it can at run time.

use std::path::PathBuf;

use transport::controls::LogLevelHook;
use transport::tdaemon::{self, Reloads};

/// Serves masterd's reload requests (`reloads`: SIGHUP) for the
/// configuration directory `dir`, whose log level at start was `level`:
/// on each valid reload, `forward` asks the daemons to reload.
pub async fn serve(
    dir: PathBuf,
    mut level: String,
    log_hook: Option<LogLevelHook>,
    mut reloads: Reloads,
    forward: impl Fn(),
) {
    loop {
        reloads.next().await;
        match crate::setup::load(&dir) {
            Err(e) => {
                tracing::error!(
                    daemon = "masterd",
                    "reload refused, nothing applied by any daemon: {e}"
                );
            }
            Ok(cfg) => {
                tdaemon::log_warnings(&cfg.loaded.warnings);
                let new = cfg.loaded.config.logging.level.clone();
                tdaemon::apply_log_level("masterd", log_hook.as_ref(), &level, &new);
                level = new;
                tracing::info!("reload: configuration valid, asking every daemon to reload");
                forward();
            }
        }
    }
}
