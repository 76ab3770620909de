//! `ipfailover`: the administration command, with CTDB's command names.

use clap::Parser;

mod ctx;
mod generate;
mod ipalloc;
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
    /// Plan an IP allocation offline: CTDB takeover-test input on stdin,
    /// `ADDRESS PNN` lines out.
    Ipalloc(ipalloc::IpallocArgs),
    /// Write the man pages or shell completions into a directory (packaging).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ctx = ctx::Ctx::new(&cli.global)?;
    match cli.command {
        Command::Ping(args) => ping::run(&ctx, &args),
        Command::Ipalloc(args) => ipalloc::run(&args),
        Command::Generate(args) => generate::run(<Cli as clap::CommandFactory>::command(), &args),
    }
}
