//! The lease watch and the core's clock.
//!
//! The core works on the host's `CLOCK_MONOTONIC` (the clock of clusterd's
//! lease instants, [`now`]); tokio timers need [`Instant`]s ([`instant`]).
//!
//! [`watch`] is the only thing that acts on the lease end, and it is a task
//! of its own: it sleeps until the end the loop last gave it and then
//! closes the executor's gate and removes every public address
//! ([`Executor::drop_all`] with [`DropMode::LeaseLost`], which does not
//! wait for the executor's operation lock: removal first, or, for the
//! addresses the kernel lease guards, a reset of their local connections
//! first that ends by a quarter of the leader's margin after the lease
//! end — the executor counts from the end its gate was given, so a watch
//! that fires late has less time, or none, and removes first). Nothing the
//! loop waits for — adoption's releases, a hook, a request, the lock of a
//! slow operation — can delay it
//! (hole 1). The loop only ever moves the end later (a renewal) or clears
//! it (lease lost, which the loop then acts on itself too). The kernel's
//! lease elements are the last line: they expire by themselves even when
//! this process is frozen.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use transport::msg::cluster::monotonic_ns;

use crate::node::{DropMode, Executor};

/// The core's `now`: `CLOCK_MONOTONIC`.
pub(super) fn now() -> Duration {
    Duration::from_nanos(monotonic_ns())
}

/// The tokio instant of a core instant (`CLOCK_MONOTONIC`); one in the past
/// is now.
pub(super) fn instant(at: Duration) -> Instant {
    let (clock, tokio_now) = (now(), Instant::now());
    tokio_now + at.saturating_sub(clock)
}

/// Drops every public address when the lease end in `until` passes without
/// being moved (see the module docs), and then tells the loop
/// ([`super::Trigger::Lapsed`]) that this node's share must be taken again.
/// Runs until aborted or the sender is gone.
pub(super) async fn watch(
    exec: Executor,
    mut until: watch::Receiver<Option<Instant>>,
    lapsed: tokio::sync::mpsc::UnboundedSender<super::Trigger>,
) {
    loop {
        let end = *until.borrow_and_update();
        let expired = async {
            match end {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = until.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = expired => {
                exec.set_lease(None);
                if !exec.hosted().is_empty() {
                    tracing::error!("the lease ended without renewal: dropping every public address");
                }
                match exec.drop_all(DropMode::LeaseLost).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(count = n, "lease watch: dropped every public address");
                        let _ = lapsed.send(super::Trigger::Lapsed);
                    }
                    Err(e) => tracing::error!(error = %e, "lease watch: dropping public addresses failed"),
                }
                // Wait for the next lease.
                if until.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}
