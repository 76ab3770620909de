//! `ipfailover`: the administration command, with CTDB's command names.

use clap::Parser;

#[allow(dead_code)] // used by the state-reading commands as they land
mod output;

/// Public-IP failover for clustered file servers: administration command.
#[derive(Debug, Parser)]
#[command(name = "ipfailover", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    #[allow(unreachable_code)] // until the first subcommand lands
    match cli.command {}
}
