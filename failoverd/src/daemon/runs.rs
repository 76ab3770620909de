//! The leader's jobs as tasks, and the requests a follower sends the leader.
//!
//! [`Runs`] carries out the [`LeaderAction`]s of the leader core: it spawns a
//! takeover run ([`crate::leader::takeover_run`]) or a move
//! ([`crate::leader::move_ip`]) as a task, aborts it when the core says so
//! (dropping a run at any point is safe: takes are only ever sent after the
//! releases they depend on were acknowledged), reports how it went, and
//! answers the requests that waited for it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use tokio::task::{JoinError, JoinHandle};

use transport::client::ClientError;
use transport::msg::cluster::Pnn;
use transport::msg::failover::IPREALLOCATE;
use transport::proto::service::FAILOVERD;
use transport::proto::{Address, ErrorCode, Message};

use super::{lease, reply, reply_error, route, Ctx, Trigger};
use crate::core::{LeaderAction, LeaderCore, RunOutcome};
use crate::leader::{self, RunError, RunSettings};

pub(super) enum JobOutput {
    Run(RunOutcome, Option<RunError>),
    Move(Result<BTreeMap<IpAddr, Pnn>, RunError>),
}

/// The job in progress (at most one).
#[derive(Default)]
pub(super) struct Runs {
    job: Option<(u64, JoinHandle<JobOutput>)>,
}

impl Runs {
    /// Resolves when the job in progress ends (never when there is none).
    pub(super) async fn done(&mut self) -> (u64, Result<JobOutput, JoinError>) {
        match self.job.as_mut() {
            Some((seq, handle)) => (*seq, handle.await),
            None => std::future::pending().await,
        }
    }

    /// Aborts the job in progress (shutdown).
    pub(super) fn abort(&mut self) {
        if let Some((_, h)) = self.job.take() {
            h.abort();
        }
    }

    /// Reports how job `seq` went to the leader core.
    pub(super) async fn finished(
        &mut self,
        _ctx: &Ctx,
        leader: &mut LeaderCore<Message>,
        seq: u64,
        done: Result<JobOutput, JoinError>,
        out: &mut Vec<LeaderAction<Message>>,
    ) {
        self.job = None;
        let now = lease::now();
        match done {
            Ok(JobOutput::Run(outcome, err)) => {
                if let Some(e) = err {
                    tracing::warn!(error = %e, "takeover run unsuccessful: retrying");
                }
                leader.run_finished(now, seq, outcome, out);
            }
            Ok(JobOutput::Move(Ok(memory))) => {
                let outcome = RunOutcome {
                    ok: true,
                    complete: true,
                    last_owner: Some(memory),
                    ..RunOutcome::default()
                };
                leader.run_finished(now, seq, outcome, out);
            }
            Ok(JobOutput::Move(Err(e @ RunError::CannotMove { .. }))) => {
                leader.move_refused(now, seq, e.to_string(), out);
            }
            Ok(JobOutput::Move(Err(e))) => {
                tracing::warn!(error = %e, "moveip unsuccessful");
                leader.run_finished(now, seq, RunOutcome::default(), out);
            }
            Err(e) => {
                tracing::warn!(error = %e, "takeover run task ended abnormally");
                leader.run_finished(now, seq, RunOutcome::default(), out);
            }
        }
    }

    /// Carries out one action of the leader core.
    pub(super) async fn carry_out(
        &mut self,
        ctx: &Ctx,
        leader: &mut LeaderCore<Message>,
        action: LeaderAction<Message>,
        out: &mut Vec<LeaderAction<Message>>,
    ) {
        let settings = RunSettings {
            tunables: ctx.lock().tunables,
            request_timeout: ctx.settings.request_timeout,
            release_timeout: ctx.settings.release_timeout,
        };
        match action {
            LeaderAction::StartRun(order) => {
                tracing::info!(
                    generation = order.membership.generation,
                    seq = order.seq,
                    left_out = ?order.unresponsive,
                    "takeover run starting"
                );
                let client = ctx.client.clone();
                let seq = order.seq;
                let handle = tokio::spawn(async move {
                    let (outcome, err) = leader::takeover_run(&client, &order, settings).await;
                    JobOutput::Run(outcome, err)
                });
                self.replace(seq, handle);
            }
            LeaderAction::StartMove(order, mv) => {
                let client = ctx.client.clone();
                let seq = order.seq;
                let handle = tokio::spawn(async move {
                    JobOutput::Move(leader::move_ip(&client, &order, mv, settings).await)
                });
                self.replace(seq, handle);
            }
            LeaderAction::Abort => {
                if let Some((seq, h)) = self.job.take() {
                    tracing::info!(
                        seq,
                        "takeover run abandoned (overtaken or leadership moved)"
                    );
                    h.abort();
                }
            }
            LeaderAction::Answer(req, generation) => reply(ctx, &req, &generation).await,
            LeaderAction::MoveDone(req, Ok(())) => reply(ctx, &req, &()).await,
            LeaderAction::MoveDone(req, Err(why)) => {
                reply_error(ctx, &req, ErrorCode::Refused, why).await;
            }
            LeaderAction::Reroute(req) => route(ctx, leader, req, out).await,
            LeaderAction::Busy(req) => {
                let busy = &ctx.limits.leader_busy;
                if busy.note() {
                    tracing::warn!(
                        from = %req.header.src,
                        refused = busy.get(),
                        "request refused: too many wait for a run"
                    );
                }
                reply_error(
                    ctx,
                    &req,
                    ErrorCode::Refused,
                    "too many requests wait for a run",
                )
                .await;
            }
        }
    }

    fn replace(&mut self, seq: u64, handle: JoinHandle<JobOutput>) {
        if let Some((_, old)) = self.job.replace((seq, handle)) {
            old.abort();
        }
    }
}

/// Asks `to` (the leader) for a takeover run. With `epoch` (a re-request
/// after a lease flap) the node core hears when it was answered.
pub(super) fn ask_for_run(ctx: &Ctx, to: Pnn, epoch: Option<u64>) {
    let client = ctx.client.clone();
    let triggers = ctx.triggers.clone();
    let timeout = ctx.settings.release_timeout * 3;
    tokio::spawn(async move {
        let r: Result<u64, _> = client
            .request(Address::new(to, FAILOVERD), IPREALLOCATE, &(), timeout)
            .await;
        match r {
            Ok(_) => {
                if let Some(epoch) = epoch {
                    let _ = triggers.send(Trigger::RunSeen(epoch));
                }
            }
            Err(e) => {
                tracing::debug!(leader = to, error = %e, "asking the leader for a takeover run failed");
            }
        }
    });
}

/// Forwards a leader-only request that came from this node to the leader
/// and relays its answer (once: the leader never forwards it again).
pub(super) fn forward(ctx: &Ctx, req: Message, to: Pnn, permit: transport::limit::Permit) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let timeout = ctx.settings.release_timeout * 3;
        let answer = ctx
            .client
            .request_raw(
                Address::new(to, FAILOVERD),
                req.header.opcode,
                req.payload.clone(),
                timeout,
            )
            .await;
        match answer {
            Ok(a) => {
                let _ = ctx.client.reply_raw(&req, Ok(a.payload)).await;
            }
            Err(ClientError::Remote { error, .. }) => {
                let _ = ctx.client.reply_raw(&req, Err(error)).await;
            }
            Err(e) => reply_error(&ctx, &req, ErrorCode::NodeUnreachable, e.to_string()).await,
        }
    });
}
