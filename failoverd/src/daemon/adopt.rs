//! Adoption at start, and the record that makes it safe.
//!
//! A crashed failoverd leaves its addresses configured; the restarted one
//! adopts them without removing and re-adding them ("restart without a
//! blip") — but only those the record (`<run_dir>/failoverd.hosted`, see
//! [`crate::record`]) says were configured during the current unbroken
//! lease. Anything else found is removed (and tracked as a leftover until
//! that works), and everything goes when there is no valid lease.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{requests, Ctx};
use crate::public_addresses::PublicAddress;
use crate::record;

/// Adopts the public addresses already in the kernel (restart without a
/// blip) that the record says this node configured during its current
/// unbroken lease (`lease_since_ns`; `None`: no valid lease); removes every
/// other public address it finds, and any recorded one that is no longer in
/// public_addresses. See [`record`].
pub(super) async fn adopt(ctx: &Ctx, lease_since_ns: Option<u64>) {
    let recorded = ctx.settings.record_file.as_deref().and_then(record::load);
    let ok = if ctx.settings.disabled {
        BTreeMap::new()
    } else {
        record::adoptable(recorded.as_ref(), &record::boot_id(), lease_since_ns)
    };
    let publics: Vec<PublicAddress> = ctx.lock().publics.values().cloned().collect();
    let keep: Vec<(PublicAddress, u64)> = publics
        .iter()
        .filter_map(|p| ok.get(&p.addr).map(|at| (p.clone(), *at)))
        .collect();
    let adopted = match ctx.exec.adopt(&keep).await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "adoption of configured addresses failed");
            Vec::new()
        }
    };
    if !adopted.is_empty() {
        tracing::info!(
            ?adopted,
            "public addresses configured before a restart: adopted"
        );
        let mut s = ctx.lock();
        for a in &adopted {
            s.owners.insert(*a, ctx.pnn);
        }
    }
    // Everything else that may be in the kernel is not ours to keep: public
    // addresses configured but not adopted, and recorded addresses that are
    // no longer listed (an `addip` before the crash, a reloadips since).
    let unlisted = recorded
        .iter()
        .flat_map(|r| r.entries.keys())
        .filter(|a| !publics.iter().any(|p| p.addr == **a))
        .copied();
    let mut remove: Vec<IpAddr> = match ctx.exec.check(&publics).await {
        Ok(d) => d.unexpected,
        Err(_) => publics
            .iter()
            .map(|p| p.addr)
            .filter(|a| !adopted.contains(a))
            .collect(),
    };
    remove.extend(unlisted);
    if !remove.is_empty() {
        tracing::warn!(
            addresses = ?remove,
            lease_since_ns,
            "public addresses this node may not keep (configured before its lease last broke, unknown to the record, or no longer listed): removing any left in the kernel"
        );
        for (addr, why) in requests::remove(ctx, &remove).await {
            tracing::error!(%addr, why, "cannot remove a leftover address: retried later");
        }
    }
    if lease_since_ns.is_none() {
        super::drop_all(ctx, true).await;
    }
    write_record(ctx);
}

/// Asks the record writer ([`record_writer`]) to rewrite the record of
/// configured addresses from the executor's hosted set (on every change).
/// Never waits: the write (an fsync, milliseconds on a busy disk) happens
/// in the writer's blocking thread, not in the daemon's loop, which must
/// keep taking clusterd's lease renewals meanwhile.
pub(super) fn write_record(ctx: &Ctx) {
    if ctx.settings.record_file.is_some() {
        ctx.record_wake.notify_one();
    }
}

/// Writes the record each time [`write_record`] asks, from the hosted set
/// of that moment: changes that come during a write make one more write,
/// not one each. A record that lags the kernel by a write is what a crash
/// between a kernel change and its write always left (see [`record`]): an
/// address missing from it is removed after a restart, not adopted; one
/// listed but gone from the kernel is not adopted (adoption keeps only
/// what it finds configured).
pub(super) async fn record_writer(
    exec: crate::node::Executor,
    path: std::path::PathBuf,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    loop {
        wake.notified().await;
        let r = record::Record {
            boot_id: record::boot_id(),
            entries: exec
                .hosted()
                .into_iter()
                .map(|h| (h.public.addr, h.since_ns))
                .collect(),
        };
        let count = r.entries.len();
        let path = path.clone();
        let started = std::time::Instant::now();
        let stored =
            tokio::task::spawn_blocking(move || record::store(&path, &r).map_err(|e| (path, e)))
                .await;
        match stored {
            Ok(Ok(())) => tracing::debug!(
                count,
                took_ms = started.elapsed().as_secs_f64() * 1e3,
                "record of configured addresses written"
            ),
            Ok(Err((path, e))) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the record of configured addresses");
            }
            Err(e) => tracing::warn!(error = %e, "the record writer failed"),
        }
    }
}
