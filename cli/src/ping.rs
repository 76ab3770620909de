//! `ipfailover ping [-n PNN|all]`: checks that transportd answers on this
//! node or on others, as `ctdb ping` does, printing
//! `response from 1 time=0.000123 sec  (3 clients)` per node.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use transport::client::Client;
use transport::proto::control::{PeerList, PingReply, PingRequest, LIST_PEERS, PING};
use transport::proto::service::TRANSPORT;
use transport::proto::Address;

/// How long one ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Arguments of `ipfailover ping`.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// Node to ping: a PNN, or "all" (default: this node).
    #[arg(short = 'n', long = "node", value_name = "PNN|all")]
    pub node: Option<String>,
    /// transportd's socket.
    #[arg(long, default_value = "/run/ipfailover/transport.sock")]
    pub socket: PathBuf,
}

/// Which nodes to ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    This,
    Node(u32),
    All,
}

fn parse_target(node: Option<&str>) -> Result<Target> {
    match node {
        None => Ok(Target::This),
        Some("all") => Ok(Target::All),
        Some(n) => n
            .parse()
            .map(Target::Node)
            .with_context(|| format!("-n {n:?}: expected a PNN or \"all\"")),
    }
}

/// Runs the command; fails if any pinged node did not answer.
///
/// # Errors
/// No transportd, a bad `-n`, or a node that did not answer.
pub fn run(args: &PingArgs) -> Result<()> {
    let target = parse_target(args.node.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(ping(target, args))
}

async fn ping(target: Target, args: &PingArgs) -> Result<()> {
    let (client, _incoming) = Client::connect_unix(&args.socket, "cli")
        .await
        .with_context(|| format!("connecting to transportd at {}", args.socket.display()))?;
    let nodes = match target {
        Target::This => vec![client.pnn()],
        Target::Node(p) => vec![p],
        Target::All => {
            let list: PeerList = client
                .request(Address::local(TRANSPORT), LIST_PEERS, &(), PING_TIMEOUT)
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
                PING_TIMEOUT,
            )
            .await;
        match answer {
            Ok(reply) => println!(
                "response from {pnn} time={:.6} sec  ({} clients)",
                start.elapsed().as_secs_f64(),
                reply.clients
            ),
            Err(err) => {
                failed += 1;
                println!("Unable to get ping response from node {pnn}: {err}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} node(s) did not answer");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_argument() {
        assert_eq!(parse_target(None).unwrap(), Target::This);
        assert_eq!(parse_target(Some("all")).unwrap(), Target::All);
        assert_eq!(parse_target(Some("2")).unwrap(), Target::Node(2));
        assert!(parse_target(Some("x")).is_err());
    }
}
