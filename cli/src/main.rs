//! `ipfailover`: the administration command, with CTDB's command names.

use clap::Parser;

mod ctx;
mod ipalloc;
#[allow(dead_code)] // used by the state-reading commands as they land
mod output;
mod ping;
mod tickles;

/// Public-IP failover for clustered file servers: administration command.
#[derive(Debug, Parser)]
#[command(name = "ipfailover", version, about)]
struct Cli {
    #[command(flatten)]
    global: ctx::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check that transportd answers on a node (like `ctdb ping`).
    Ping(ping::PingArgs),
    /// Plan an IP allocation offline: CTDB takeover-test input on stdin,
    /// `ADDRESS PNN` lines out.
    Ipalloc(ipalloc::IpallocArgs),
    /// The tracked connections of a public address (conntrackd).
    Gettickles(tickles::GetArgs),
    /// Register a connection with conntrackd: CLIENT-IP:PORT SERVER-IP:PORT,
    /// or pairs on stdin.
    Addtickle(tickles::PairArgs),
    /// Unregister a connection: CLIENT-IP:PORT SERVER-IP:PORT, or pairs on
    /// stdin.
    Deltickle(tickles::PairArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ctx = ctx::Ctx::new(&cli.global)?;
    match cli.command {
        Command::Ping(args) => ping::run(&ctx, &args),
        Command::Ipalloc(args) => ipalloc::run(&args),
        Command::Gettickles(args) => tickles::get(&ctx, &args),
        Command::Addtickle(args) => tickles::change(&ctx, &args, true),
        Command::Deltickle(args) => tickles::change(&ctx, &args, false),
    }
}
