//! `ipfailover`: the administration command, with CTDB's command names.

use clap::Parser;

mod ipalloc;

/// Public-IP failover for clustered file servers: administration command.
#[derive(Debug, Parser)]
#[command(name = "ipfailover", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Plan an IP allocation offline: CTDB takeover-test input on stdin,
    /// `ADDRESS PNN` lines out.
    Ipalloc(ipalloc::IpallocArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ipalloc(args) => ipalloc::run(&args),
    }
}
