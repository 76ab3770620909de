//! `ipfailover ping [-n PNN|all]`: checks that transportd answers on this
//! node or on others, as `ctdb ping` does, printing
//! `response from 1 time=0.000123 sec  (3 clients)` per node.

use std::time::Instant;

use anyhow::{Context, Result};

use transport::proto::control::{PeerList, PingReply, PingRequest, LIST_PEERS, PING};
use transport::proto::service::TRANSPORT;
use transport::proto::Address;

use crate::ctx::{block_on, Globals};
use crate::output::{emit, Nodes};

/// Arguments of `ipfailover ping` (it uses the global `-n`).
#[derive(Debug, clap::Args)]
pub struct PingArgs {}

/// Runs the command; fails if any pinged node did not answer.
///
/// # Errors
/// No transportd, or a node that did not answer.
pub fn run(ctx: &Globals, _args: &PingArgs) -> Result<()> {
    block_on(ping(ctx))
}

async fn ping(ctx: &Globals) -> Result<()> {
    let (client, _incoming) = ctx.connect().await?;
    let nodes = match &ctx.nodes {
        Nodes::Local => vec![client.pnn()],
        Nodes::List(list) => list.clone(),
        Nodes::All => {
            let list: PeerList = client
                .request(Address::local(TRANSPORT), LIST_PEERS, &(), ctx.timeout)
                .await
                .context("listing the peers")?;
            let mut all: Vec<u32> = list.peers.iter().map(|p| p.pnn).collect();
            all.push(client.pnn());
            all.sort_unstable();
            all
        }
    };
    let mut failed = 0;
    for pnn in nodes {
        let start = Instant::now();
        let answer: Result<PingReply, _> = client
            .request(
                Address::new(pnn, TRANSPORT),
                PING,
                &PingRequest::default(),
                ctx.timeout,
            )
            .await;
        match answer {
            Ok(reply) => emit(&format!(
                "response from {pnn} time={} sec  ({} clients)\n",
                crate::output::seconds(start.elapsed()),
                reply.clients
            ))?,
            Err(err) => {
                failed += 1;
                emit(&format!(
                    "Unable to get ping response from node {pnn}: {}\n",
                    crate::ctx::daemon_error(TRANSPORT, pnn, &err)
                ))?;
            }
        }
    }
    if failed > 0 {
        // The per-node lines said it all (ctdb adds no summary either).
        return Err(crate::ctx::Exit(1).into());
    }
    Ok(())
}
