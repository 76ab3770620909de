//! `ipfailover`: the administration command, with CTDB's command names.

use clap::Parser;

mod ctx;
#[allow(dead_code)] // used by the state-reading commands as they land
mod output;
mod ping;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ctx = ctx::Ctx::new(&cli.global)?;
    match cli.command {
        Command::Ping(args) => ping::run(&ctx, &args),
    }
}
