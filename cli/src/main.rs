//! `ipfailover`: the administration command, with CTDB's command names.

use clap::Parser;

mod ctx;
mod ip;
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
    /// Public-IP commands: ip, ipinfo, ifaces, setifacelink, addip, delip,
    /// moveip, reloadips, ipreallocate, gratarp, tickle, killtcp.
    #[command(flatten)]
    Ip(ip::IpCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ctx = ctx::Ctx::new(&cli.global)?;
    match cli.command {
        Command::Ping(args) => ping::run(&ctx, &args),
        Command::Ipalloc(args) => ipalloc::run(&args),
        Command::Ip(cmd) => ip::run(&ctx, &cmd),
    }
}
