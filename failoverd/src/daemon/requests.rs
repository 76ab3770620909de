//! The requests this node serves, each in its own task so that the loop
//! always answers: the leader's GET_PUBLIC_IPS, RELEASE_IPS and TAKE_IPS
//! (checked by [`crate::core::NodeCore`]), and the CLI's changes and
//! queries. Addresses whose removal fails, or that a change forgets before
//! their release succeeded, become the core's leftovers (hole 6): reported
//! as configured here and removed again until it works.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use transport::msg::cluster::Pnn;
use transport::msg::conntrack::TrackedConnection;
use transport::msg::failover::{
    AddIp, ConnectionPair, DelIp, Gratarp, HookFailureInfo, IfaceInfo, IpStatus, KillTcp, PublicIp,
    PublicIps, ReleaseIps, ReloadSummary, SetIfaceLink, SetTunable, SetTunableOutcome, StepResult,
    TakeIps, Tunable, TunableList, ADD_IP, DEL_IP, GET_IP_STATUS, GET_PUBLIC_IPS, GET_TUNABLES,
    GRATARP, KILLTCP, RELEASE_IPS, RELOAD_IPS, SET_IFACE_LINK, SET_TUNABLE, TAKE_IPS, TICKLE,
};
use transport::msg::failover::{HistoryKind, HistoryMove, RunTimes, GET_HISTORY, GET_RUN_TIMES};
use transport::msg::failover::{
    HookList, HookScript, HookScriptRun, HookStatus, RunEvent, SetHook, GET_HOOK_STATUS,
    LIST_HOOKS, RUN_EVENT, SET_HOOK,
};
use transport::proto::service::FAILOVERD;
use transport::proto::{ErrorCode, Message};

use super::{lease, reply, reply_error, Ctx, Trigger};
use crate::alloc::TunableSet;
use crate::node::{HookEvent, NodeError, ScriptResult, ScriptRun};
use crate::public_addresses::{self, PublicAddress, PublicAddressesError};

/// Requests served by this node itself, each in its own task.
pub(super) async fn serve(ctx: &Ctx, msg: Message) {
    let op = msg.header.opcode;
    // Run steps come only from the leader's failoverd: another local
    // service of the leader's node (any member of the transport group can
    // register one) must not move addresses, nor block the leader's runs
    // with a made-up generation or run stamp (#14).
    if matches!(op, RELEASE_IPS | TAKE_IPS) && msg.header.src.service != FAILOVERD {
        tracing::warn!(from = %msg.header.src, opcode = op, "run step not from a failoverd: refused");
        let why = format!(
            "run steps are accepted only from failoverd, not {}",
            msg.header.src
        );
        reply_error(ctx, &msg, ErrorCode::Refused, why).await;
        return;
    }
    let result: Result<(), (ErrorCode, String)> = match op {
        GET_PUBLIC_IPS => match report(ctx).await {
            Ok(r) => {
                reply(ctx, &msg, &r).await;
                Ok(())
            }
            Err(e) => Err((ErrorCode::Internal, e.to_string())),
        },
        RELEASE_IPS => match decode::<ReleaseIps>(&msg) {
            Ok(req) => match release(ctx, msg.header.src.pnn, req).await {
                Ok(r) => {
                    reply(ctx, &msg, &r).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        TAKE_IPS => match decode::<TakeIps>(&msg) {
            Ok(req) => match take(ctx, msg.header.src.pnn, req).await {
                Ok(r) => {
                    reply(ctx, &msg, &r).await;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        ADD_IP => match decode::<AddIp>(&msg) {
            Ok(req) => add_ip(ctx, req),
            Err(e) => Err(e),
        }
        .map(|()| {
            let _ = ctx.triggers.send(Trigger::Run);
        }),
        DEL_IP => match decode::<DelIp>(&msg) {
            Ok(req) => del_ip(ctx, req.addr).await,
            Err(e) => Err(e),
        }
        .map(|()| {
            let _ = ctx.triggers.send(Trigger::Run);
        }),
        RELOAD_IPS => match reload_ips(ctx).await {
            Ok(summary) => {
                let _ = ctx.triggers.send(Trigger::Run);
                reply(ctx, &msg, &summary).await;
                return;
            }
            Err(e) => Err(e),
        },
        SET_IFACE_LINK => match decode::<SetIfaceLink>(&msg) {
            Ok(req) => set_iface_link(ctx, req).await,
            Err(e) => Err(e),
        },
        GRATARP => match decode::<Gratarp>(&msg) {
            Ok(req) => ctx
                .exec
                .announce(req.addr)
                .await
                .map(|_| ())
                .map_err(|e| (ErrorCode::Refused, e.to_string())),
            Err(e) => Err(e),
        },
        TICKLE => match decode::<Vec<ConnectionPair>>(&msg) {
            Ok(pairs) => ctx
                .exec
                .tickle(&tracked(&pairs))
                .await
                .map(|_| ())
                .map_err(|e| (ErrorCode::Internal, e.to_string())),
            Err(e) => Err(e),
        },
        GET_TUNABLES => {
            let list = TunableList {
                tunables: ctx
                    .lock()
                    .tunables
                    .list()
                    .into_iter()
                    .map(|(name, value)| Tunable {
                        name: name.to_string(),
                        value,
                    })
                    .collect(),
            };
            reply(ctx, &msg, &list).await;
            return;
        }
        SET_TUNABLE => match decode::<SetTunable>(&msg) {
            Ok(req) => {
                let r = ctx.lock().tunables.set_checked(&req.name, req.value);
                match r {
                    Ok(done) => {
                        tracing::info!(name = %req.name, value = req.value, obsolete = (done == TunableSet::Obsolete), from = %msg.header.src, "tunable set");
                        let outcome = match done {
                            TunableSet::Set => SetTunableOutcome::Set,
                            TunableSet::Obsolete => SetTunableOutcome::Obsolete,
                        };
                        reply(ctx, &msg, &outcome).await;
                        return;
                    }
                    Err(why) => Err((ErrorCode::BadRequest, why)),
                }
            }
            Err(e) => Err(e),
        },
        GET_HOOK_STATUS => match decode::<String>(&msg) {
            Ok(event) => {
                let status = hook_status(ctx, ctx.exec.hook_status(&event));
                reply(ctx, &msg, &status).await;
                return;
            }
            Err(e) => Err(e),
        },
        LIST_HOOKS => {
            let list = HookList {
                dir_exists: ctx.exec.hooks_dir_exists(),
                scripts: ctx
                    .exec
                    .hook_scripts()
                    .into_iter()
                    .map(|(p, enabled)| HookScript {
                        name: file_name(&p),
                        enabled,
                    })
                    .collect(),
            };
            reply(ctx, &msg, &list).await;
            return;
        }
        SET_HOOK => match decode::<SetHook>(&msg) {
            Ok(req) => {
                tracing::info!(hook = %req.name, enabled = req.enabled, from = %msg.header.src, "hook enabled or disabled by hand");
                ctx.exec
                    .set_hook_enabled(&req.name, req.enabled)
                    .map_err(|e| (ErrorCode::BadRequest, e))
            }
            Err(e) => Err(e),
        },
        RUN_EVENT => match decode::<RunEvent>(&msg) {
            Ok(req) if req.args.first().is_some_and(|e| !e.is_empty()) => {
                tracing::info!(args = ?req.args, from = %msg.header.src, "event hooks run by hand");
                let outcome = ctx.exec.run_event(HookEvent::ByHand(req.args)).await;
                let status = hook_status(ctx, Some(outcome.scripts));
                reply(ctx, &msg, &status).await;
                return;
            }
            Ok(_) => Err((ErrorCode::BadRequest, "no event given".to_string())),
            Err(e) => Err(e),
        },
        GET_RUN_TIMES => {
            let times = RunTimes {
                now_unix_ms: super::unix_ms(),
                ..ctx.lock().run_times.clone()
            };
            reply(ctx, &msg, &times).await;
            return;
        }
        GET_HISTORY => {
            let history = crate::history::HISTORY.snapshot(ctx.pnn);
            reply(ctx, &msg, &history).await;
            return;
        }
        GET_IP_STATUS => {
            let status = ip_status(ctx).await;
            reply(ctx, &msg, &status).await;
            return;
        }
        KILLTCP => match decode::<KillTcp>(&msg) {
            Ok(req) => match ctx.exec.killtcp(&tracked(&req.connections)).await {
                Ok(n) => {
                    reply(ctx, &msg, &u32::try_from(n).unwrap_or(u32::MAX)).await;
                    return;
                }
                Err(e) => Err((ErrorCode::Refused, e.to_string())),
            },
            Err(e) => Err(e),
        },
        other => Err((
            ErrorCode::UnknownOpcode,
            format!("failoverd does not serve opcode {other:#010x}"),
        )),
    };
    match result {
        Ok(()) => {
            if !matches!(msg.header.opcode, GET_PUBLIC_IPS | RELEASE_IPS | TAKE_IPS) {
                reply(ctx, &msg, &()).await;
            }
        }
        Err((code, text)) => reply_error(ctx, &msg, code, text).await,
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// An event's last run in the protocol's form.
fn hook_status(ctx: &Ctx, runs: Option<Vec<ScriptRun>>) -> HookStatus {
    HookStatus {
        dir_exists: ctx.exec.hooks_dir_exists(),
        ran: runs.is_some(),
        scripts: runs
            .unwrap_or_default()
            .into_iter()
            .map(|r| HookScriptRun {
                name: r.name,
                state: r.result.word().to_string(),
                begin_unix_ms: r
                    .begin
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                duration_us: u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
                output: match r.result {
                    ScriptResult::Error(why) | ScriptResult::CannotRun(why) => why,
                    ScriptResult::TimedOut => "timed out".to_string(),
                    ScriptResult::Ok | ScriptResult::Disabled => String::new(),
                },
            })
            .collect(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(msg: &Message) -> Result<T, (ErrorCode, String)> {
    transport::proto::decode_payload(&msg.payload)
        .map_err(|e| (ErrorCode::BadRequest, format!("bad payload: {e}")))
}

fn tracked(pairs: &[ConnectionPair]) -> Vec<TrackedConnection> {
    pairs
        .iter()
        .map(|p| TrackedConnection {
            client: p.client,
            server: p.server,
        })
        .collect()
}

/// This node's GET_PUBLIC_IPS answer.
async fn report(ctx: &Ctx) -> Result<PublicIps, NodeError> {
    let (publics, owners, leftovers) = {
        let s = ctx.lock();
        (
            s.publics.clone(),
            s.owners.clone(),
            s.node.leftovers().clone(),
        )
    };
    let mut names: Vec<String> = publics.values().flat_map(|p| p.ifaces.clone()).collect();
    names.sort();
    names.dedup();
    let infos = ctx.exec.interfaces(&names).await?;
    let up: HashMap<&str, bool> = infos.iter().map(|i| (i.name.as_str(), i.up)).collect();
    let mut hosted: BTreeMap<IpAddr, String> = ctx
        .exec
        .hosted()
        .into_iter()
        .map(|h| (h.public.addr, h.iface))
        .collect();
    // A leftover may still be configured here: the leader must release it
    // here before it gives it to anyone (hole 6).
    for a in leftovers {
        hosted.entry(a).or_default();
    }
    // A node without a valid lease cannot take anything now (a TAKE would
    // be refused): it offers nothing, so that the leader does not release
    // addresses elsewhere for it (they would stay unhosted until the run is
    // retried after its lease comes, a blip on healthy nodes). Once its
    // lease is valid it asks for a run and gets its share.
    let can_host = !ctx.settings.disabled && ctx.lease_valid();
    let mut ips: Vec<PublicIp> = publics
        .values()
        .map(|p| {
            let active = hosted.get(&p.addr).cloned();
            PublicIp {
                addr: p.addr,
                prefix: p.prefix,
                configured: p.ifaces.clone(),
                available: p
                    .ifaces
                    .iter()
                    .filter(|i| can_host && up.get(i.as_str()).copied().unwrap_or(false))
                    .cloned()
                    .collect(),
                owner: if active.is_some() {
                    Some(ctx.pnn)
                } else {
                    owners.get(&p.addr).copied().filter(|&o| o != ctx.pnn)
                },
                active,
            }
        })
        .collect();
    for (addr, iface) in &hosted {
        if !publics.contains_key(addr) {
            ips.push(PublicIp {
                addr: *addr,
                prefix: 0,
                configured: Vec::new(),
                available: Vec::new(),
                active: Some(iface.clone()),
                owner: Some(ctx.pnn),
            });
        }
    }
    ips.sort_by_key(|a| a.addr);
    Ok(PublicIps {
        pnn: ctx.pnn,
        can_host,
        ips,
        ifaces: infos
            .into_iter()
            .map(|i| IfaceInfo {
                name: i.name,
                link_up: i.up,
                references: u32::try_from(i.references).unwrap_or(u32::MAX),
            })
            .collect(),
    })
}

fn refused(e: &crate::core::Refusal) -> (ErrorCode, String) {
    (ErrorCode::Refused, e.to_string())
}

/// Tries again to remove the core's leftovers in `addrs` (those still
/// leftovers). The executor decides under its operation lock what a
/// leftover is: of a hosted address (taken again, or moved with a copy
/// left on a renamed link), only the copies on other links; of one not
/// hosted, every copy. Each stays a leftover until no copy is left.
pub(super) async fn remove_leftovers(ctx: &Ctx, addrs: &[IpAddr]) {
    let still: Vec<IpAddr> = {
        let s = ctx.lock();
        addrs
            .iter()
            .copied()
            .filter(|a| s.node.leftovers().contains(a))
            .collect()
    };
    if still.is_empty() {
        return;
    }
    let results = ctx.exec.remove_leftovers(&still).await;
    let now = lease::now();
    let mut s = ctx.lock();
    for (addr, r) in results {
        s.node.removed(now, addr, r.is_ok());
        if let Err(e) = r {
            tracing::warn!(%addr, error = %e, "a leftover address could not be removed yet: kept as a leftover");
        }
    }
}

/// Removes `addrs` from the kernel (a release, a forgotten address, a
/// leftover); every one that could not be removed stays a leftover of the
/// core. Returns the failures.
pub(super) async fn remove(ctx: &Ctx, addrs: &[IpAddr]) -> Vec<(IpAddr, String)> {
    if addrs.is_empty() {
        return Vec::new();
    }
    let results = ctx.exec.release_many(addrs).await;
    // One taken again meanwhile (a newer take) is hosted, not a leftover.
    let hosted: Vec<IpAddr> = ctx.exec.hosted().iter().map(|h| h.public.addr).collect();
    let now = lease::now();
    let mut s = ctx.lock();
    let mut failed = Vec::new();
    for (addr, r) in results {
        if hosted.contains(&addr) {
            s.node.hosts(addr);
        } else {
            s.node.removed(now, addr, r.is_ok());
        }
        if let Err(e) = r {
            tracing::warn!(%addr, error = %e, "removal failed: kept as a leftover");
            failed.push((addr, e.to_string()));
        }
    }
    failed
}

async fn release(ctx: &Ctx, from: Pnn, req: ReleaseIps) -> Result<StepResult, (ErrorCode, String)> {
    {
        let mut s = ctx.lock();
        s.node
            .check_release(lease::now(), from, req.generation, req.run)
            .map_err(|e| refused(&e))?;
        for (addr, owner) in &req.ips {
            match owner {
                Some(o) => s.owners.insert(*addr, *o),
                None => s.owners.remove(addr),
            };
        }
    }
    // Every requested address goes to the executor, not only those it lists
    // as hosted right now: it removes kernel leftovers too (an address added
    // at run time before a crash, or one whose take is still in flight when
    // this list would have been made), and a release must never be
    // acknowledged while the address is still configured here.
    let hosted: Vec<IpAddr> = req.ips.iter().map(|(a, _)| *a).collect();
    let seen = Seen::start();
    let had: Vec<IpAddr> = ctx.exec.hosted().iter().map(|h| h.public.addr).collect();
    let failed = remove(ctx, &hosted).await;
    // The history lists the addresses that were here (a release also
    // sweeps addresses this node did not host).
    let moves: Vec<HistoryMove> = req
        .ips
        .iter()
        .filter(|(a, _)| had.contains(a))
        .map(|(a, to)| HistoryMove {
            addr: *a,
            from: Some(ctx.pnn),
            to: *to,
            reason: String::new(),
        })
        .collect();
    seen.record(
        HistoryKind::Release,
        from,
        &req.generation,
        req.run,
        moves,
        &failed,
    );
    Ok(StepResult { failed })
}

/// A take or release as the history records it ([`crate::history`]):
/// observation only.
struct Seen {
    started: std::time::Instant,
    start_ns: u64,
    at_unix_ms: u64,
    resets: u64,
}

impl Seen {
    fn start() -> Seen {
        Seen {
            started: std::time::Instant::now(),
            start_ns: crate::history::now_ns(),
            at_unix_ms: crate::history::unix_ms(),
            resets: crate::counters::COUNTERS
                .resets
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn record(
        &self,
        kind: HistoryKind,
        leader: Pnn,
        generation: &u64,
        run: u64,
        moves: Vec<HistoryMove>,
        failed: &[(IpAddr, String)],
    ) {
        use crate::history::{entry, HISTORY};
        if moves.is_empty() && failed.is_empty() {
            return;
        }
        let took = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut e = entry(kind, self.at_unix_ms);
        e.generation = *generation;
        e.run = run;
        e.leader = Some(leader);
        e.moves = moves;
        e.total_us = took;
        e.ok = failed.is_empty();
        e.error = failed.first().map(|(a, why)| format!("{a}: {why}"));
        if kind == HistoryKind::Take {
            e.take_us = Some(took);
            HISTORY.take(e, self.start_ns);
        } else {
            e.release_us = Some(took);
            // Resets counted while it ran (releases run one at a time).
            e.resets = crate::counters::COUNTERS
                .resets
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(self.resets);
            HISTORY.push(e, self.start_ns);
        }
    }
}

async fn take(ctx: &Ctx, from: Pnn, req: TakeIps) -> Result<StepResult, (ErrorCode, String)> {
    let check = || {
        ctx.lock()
            .node
            .check_take(lease::now(), from, req.generation, req.run)
    };
    check().map_err(|e| refused(&e))?;
    let seen = Seen::start();
    let mut failed = Vec::new();
    let publics: Vec<PublicAddress> = {
        let s = ctx.lock();
        req.ips
            .iter()
            .filter_map(|a| match s.publics.get(a) {
                Some(p) => Some(p.clone()),
                None => {
                    failed.push((*a, "not in this node's public addresses".to_string()));
                    None
                }
            })
            .collect()
    };
    let mut taken = Vec::new();
    // Checked again under the executor's operation lock: the take may have
    // waited there for an earlier operation while the run was overtaken.
    let still = || check().map_err(|e| e.to_string());
    let mut added = Vec::new();
    crate::history::HISTORY.take_started(&req.ips, seen.start_ns);
    for (addr, r) in ctx.exec.take_many_if(&publics, &still).await {
        match r {
            Ok(t) => {
                if matches!(t, crate::node::Taken::Added { .. }) {
                    added.push(addr);
                }
                taken.push(addr);
            }
            Err(e) => failed.push((addr, e.to_string())),
        }
    }
    if !ctx.lease_valid() {
        // The lease lapsed while taking. The loop drops every address when
        // the lease end passes (removal first, at once); a release here
        // would wait for killtcp for nothing.
        return Err((
            ErrorCode::Refused,
            format!("node {}: lease lost while taking", ctx.pnn),
        ));
    }
    {
        // A taken address that is a leftover stays one (no `hosts`): a
        // copy may be left on another link (a redundant take of an address
        // moved off a renamed link, a take of one left on a renamed link),
        // and the next retry removes only such copies, never the hosted
        // one, and ends the leftover once none is left (hole 6).
        let mut s = ctx.lock();
        for a in &taken {
            s.owners.insert(*a, ctx.pnn);
        }
    }
    let moves: Vec<HistoryMove> = added
        .iter()
        .map(|a| HistoryMove {
            addr: *a,
            from: None,
            to: Some(ctx.pnn),
            reason: String::new(),
        })
        .collect();
    seen.record(
        HistoryKind::Take,
        from,
        &req.generation,
        req.run,
        moves,
        &failed,
    );
    Ok(StepResult { failed })
}

/// This node's public-IP health: the kernel against the hosted set and the
/// last run's assignments, and the latest hook failures.
async fn ip_status(ctx: &Ctx) -> IpStatus {
    let (publics, assigned, lease_ok) = {
        let s = ctx.lock();
        let assigned: Vec<IpAddr> = s
            .owners
            .iter()
            .filter(|(_, o)| **o == ctx.pnn)
            .map(|(a, _)| *a)
            .collect();
        (
            s.publics.values().cloned().collect::<Vec<_>>(),
            assigned,
            s.node.lease_valid(lease::now()),
        )
    };
    let status = ctx.exec.status();
    let hosted: Vec<IpAddr> = status.hosted.iter().map(|h| h.public.addr).collect();
    let (mut missing, unexpected) = match ctx.exec.check(&publics).await {
        Ok(d) => (d.missing, d.unexpected),
        Err(e) => {
            tracing::warn!(error = %e, "cannot compare the kernel's addresses");
            (Vec::new(), Vec::new())
        }
    };
    // Given to this node by the last run but not hosted (a take failed).
    missing.extend(assigned.iter().filter(|a| !hosted.contains(a)));
    missing.sort();
    missing.dedup();
    IpStatus {
        pnn: ctx.pnn,
        lease_ok,
        hosted,
        missing,
        unexpected,
        hook_failures: status
            .hook_failures
            .iter()
            .map(|f| HookFailureInfo {
                hook: f.hook.display().to_string(),
                event: f.event.clone(),
                reason: f.reason.clone(),
            })
            .collect(),
    }
}

fn add_ip(ctx: &Ctx, req: AddIp) -> Result<(), (ErrorCode, String)> {
    let max = if req.addr.is_ipv4() { 32 } else { 128 };
    if req.prefix > max || req.ifaces.is_empty() {
        return Err((
            ErrorCode::BadRequest,
            format!("bad address {}/{} or no interface", req.addr, req.prefix),
        ));
    }
    let mut s = ctx.lock();
    if let Some(old) = s.publics.get(&req.addr) {
        if old.prefix == req.prefix && old.ifaces == req.ifaces {
            return Ok(());
        }
        return Err((
            ErrorCode::Refused,
            format!("Node {} already knows IP {} as {old}", ctx.pnn, req.addr),
        ));
    }
    tracing::info!(addr = %req.addr, prefix = req.prefix, ifaces = ?req.ifaces, "addip");
    s.publics.insert(
        req.addr,
        PublicAddress {
            addr: req.addr,
            prefix: req.prefix,
            ifaces: req.ifaces,
        },
    );
    Ok(())
}

async fn del_ip(ctx: &Ctx, addr: IpAddr) -> Result<(), (ErrorCode, String)> {
    if ctx.lock().publics.remove(&addr).is_none() {
        return Err((
            ErrorCode::Refused,
            format!("Node {} does not know about IP {addr}", ctx.pnn),
        ));
    }
    tracing::info!(%addr, "delip");
    // Forgotten by the list, but tracked until its removal succeeds.
    ctx.lock().node.leftover(lease::now(), addr);
    match remove(ctx, &[addr]).await.pop() {
        None => Ok(()),
        Some((_, why)) => Err((ErrorCode::Internal, why)),
    }
}

async fn reload_ips(ctx: &Ctx) -> Result<ReloadSummary, (ErrorCode, String)> {
    // The whole file is read and checked before anything changes: a broken
    // file is refused with its FILE:LINE error and changes nothing.
    let new = read_for_reload(&ctx.settings.public_addresses)
        .map_err(|e| (ErrorCode::BadRequest, e.to_string()))?;
    let summary = take_publics(ctx, &new).await;
    tracing::info!(?summary, "reloadips");
    Ok(summary)
}

/// Makes the checked list `new` this node's public addresses, releasing
/// those it no longer lists: `reloadips`, and a reload of the
/// configuration (which asks for a takeover run after it, as `reloadips`).
pub(super) async fn take_publics(ctx: &Ctx, new: &[PublicAddress]) -> ReloadSummary {
    let d = apply_reload(&mut ctx.lock().publics, new);
    let removed: Vec<IpAddr> = d.removed.iter().map(|p| p.addr).collect();
    {
        let now = lease::now();
        let mut s = ctx.lock();
        for a in &removed {
            s.node.leftover(now, *a);
        }
    }
    for (addr, why) in remove(ctx, &removed).await {
        tracing::warn!(%addr, why, "reloadips: release failed; kept as a leftover");
    }
    let summary = ReloadSummary {
        added: d.added.iter().map(|p| p.addr).collect(),
        removed,
        changed: d.changed.iter().map(|c| c.new.addr).collect(),
    };
    summary
}

/// The list `reloadips` loads: the file at `path`, or nothing when it does
/// not exist (as at start).
///
/// # Errors
///
/// The file's first problem, naming file and line.
fn read_for_reload(path: &Path) -> Result<Vec<PublicAddress>, PublicAddressesError> {
    match public_addresses::load(path) {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Makes `publics` the reloaded list `new`; returns what changed.
fn apply_reload(
    publics: &mut BTreeMap<IpAddr, PublicAddress>,
    new: &[PublicAddress],
) -> public_addresses::Diff {
    let old: Vec<PublicAddress> = publics.values().cloned().collect();
    let d = public_addresses::diff(&old, new);
    for p in &d.removed {
        publics.remove(&p.addr);
    }
    for p in &d.added {
        publics.insert(p.addr, p.clone());
    }
    for c in &d.changed {
        publics.insert(c.new.addr, c.new.clone());
    }
    d
}

async fn set_iface_link(ctx: &Ctx, req: SetIfaceLink) -> Result<(), (ErrorCode, String)> {
    let known = ctx
        .lock()
        .publics
        .values()
        .any(|p| p.ifaces.contains(&req.iface));
    if !known {
        return Err((
            ErrorCode::Refused,
            format!("Interface {} not configured on node {}", req.iface, ctx.pnn),
        ));
    }
    let state = if req.up { None } else { Some(false) };
    ctx.exec.set_link_override(&req.iface, state).await;
    let _ = ctx.triggers.send(Trigger::Run);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use super::{apply_reload, read_for_reload};
    use crate::public_addresses::{self, PublicAddress};

    fn publics(text: &str) -> BTreeMap<IpAddr, PublicAddress> {
        public_addresses::parse(text, std::path::Path::new("old"))
            .expect("test list")
            .into_iter()
            .map(|p| (p.addr, p))
            .collect()
    }

    /// `reloadips` with a file that is broken on its last line changes
    /// nothing: the error names the line and the configured list stays,
    /// although the lines before it were valid changes.
    #[test]
    fn reloadips_with_a_broken_file_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("failoverd-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("public_addresses");
        let mut configured = publics("192.0.2.1/24 eth0\n192.0.2.2/24 eth0\n");
        let before = configured.clone();
        std::fs::write(
            &path,
            "192.0.2.3/24 eth0\n192.0.2.4/24 eth0\n192.0.2.5/33 eth0\n",
        )
        .unwrap();
        let e = read_for_reload(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:3: bad prefix '33' for 192.0.2.5 (expected 1-32)",
                path.display()
            )
        );
        assert_eq!(configured, before, "nothing applied");
        // The same file fixed is applied whole.
        std::fs::write(&path, "192.0.2.3/24 eth0\n192.0.2.2/24 eth0\n").unwrap();
        let new = read_for_reload(&path).unwrap();
        let d = apply_reload(&mut configured, &new);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.removed.len(), 1);
        let now: Vec<String> = configured.keys().map(ToString::to_string).collect();
        assert_eq!(now, ["192.0.2.2", "192.0.2.3"]);
    }
}
