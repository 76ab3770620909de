//! `ipfailover`: the administration command, with CTDB's command names.

use clap::{CommandFactory as _, FromArgMatches as _, Parser};
use transport::msg::cluster::AdminOp;

mod as_ctdb;
mod cluster;
mod ctx;
mod daemons;
mod debug;
mod event;
mod generate;
mod history;
mod import;
mod ip;
mod ipalloc;
mod node;
mod output;
mod ping;
mod reloadnodes;
mod statistics;
mod tickles;
mod usage;
mod vars;

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
    /// Show the cluster's nodes, generation and leader (like `ctdb status`).
    Status,
    /// Show node states; the exit code is the OR of their flags.
    Nodestatus(cluster::NodestatusArgs),
    /// List the node addresses of the nodes file (no daemon needed).
    Listnodes(cluster::ListnodesArgs),
    /// Print this node's PNN.
    Pnn,
    /// Print the leader's PNN.
    Leader,
    /// Disable a node permanently (it hosts no public IPs).
    Disable,
    /// Enable a disabled node.
    Enable,
    /// Stop a node (inactive until `continue`).
    Stop,
    /// Continue a stopped node.
    Continue,
    /// Ban a node for BANTIME seconds.
    Ban(cluster::BanArgs),
    /// Lift a node's ban.
    Unban,
    /// Allow (on) or forbid (off) the node to become leader, until its
    /// clusterd restarts.
    Setleaderrole(cluster::LeaderRoleArgs),
    /// The tracked connections of a public address (conntrackd).
    Gettickles(tickles::GetArgs),
    /// Register a connection with conntrackd: CLIENT-IP:PORT SERVER-IP:PORT,
    /// or pairs on stdin.
    Addtickle(tickles::PairArgs),
    /// Unregister a connection: CLIENT-IP:PORT SERVER-IP:PORT, or pairs on
    /// stdin.
    Deltickle(tickles::PairArgs),
    /// List the allocation tunables (NoIPFailback, NoIPTakeover,
    /// IPAllocAlgorithm) and their values.
    Listvars,
    /// Show one tunable's value.
    Getvar(vars::GetvarArgs),
    /// Set a tunable at run time on every connected node (or the -n nodes)
    /// until failoverd restarts.
    Setvar(vars::SetvarArgs),
    /// failoverd's hooks as ctdb's event scripts (component `legacy`):
    /// status, run, script list|enable|disable.
    #[command(subcommand)]
    Event(event::EventCommand),
    /// The hooks' status in an event's last run (ctdb's alias of `event
    /// status legacy EVENT`; default event: monitor).
    Scriptstatus(event::ScriptstatusArgs),
    /// Set the log level of the node's daemons (ERROR, WARNING, NOTICE,
    /// INFO, DEBUG).
    Setdebug(debug::SetdebugArgs),
    /// Print the log level of the node's daemons.
    Getdebug,
    /// Print ipfailover's version.
    Version,
    /// The node's time, masterd's start and the last membership change's
    /// takeover run.
    Uptime,
    /// Print the pid of the node's masterd (ctdbd's, for ctdb).
    Getpid,
    /// Print the node's capabilities (LEADER, LMASTER).
    Getcapabilities,
    /// Print the cluster lock setting.
    Getreclock,
    /// Make every connected node re-read its nodes file and take it at run
    /// time (add nodes at the end, delete disconnected ones).
    Reloadnodes,
    /// Print the node's run state (RUNNING, STARTUP); with states given,
    /// fail unless it is one of them.
    Runstate(node::RunstateArgs),
    /// Stop ipfailover on the node (its addresses are released).
    Shutdown,
    /// Check that a TCP port can be bound on this host (no daemon needed).
    Checktcpport(node::ChecktcpportArgs),
    /// Show the daemons masterd runs on a node: state, pid, restarts, last
    /// exit (no ctdb equivalent).
    Daemons,
    /// Show the counters of every daemon of a node, grouped per daemon
    /// (ctdb statistics).
    Statistics,
    /// Start the counters of every daemon of a node again from 0 (ctdb
    /// statisticsreset).
    Statisticsreset,
    /// The failover history: takeover runs, addresses taken, released or
    /// dropped, with reasons and phase durations, newest first (no ctdb
    /// equivalent).
    History(history::HistoryArgs),
    /// Write this node's ipfailover configuration from its CTDB one
    /// (default /etc/ctdb), saying what each line became.
    ImportCtdb(import::ImportArgs),
    /// Write the man pages or shell completions into a directory (packaging).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// Parses the arguments (errors as ctdb reports them, [`usage`]) and runs
/// the command.
fn main() -> std::process::ExitCode {
    // Called as `ctdb` (the private symlink of config::ctdb_shim), it
    // answers as ctdb for the node of $IPFAILOVER_RUN_DIR.
    let (argv, as_ctdb) = as_ctdb::argv();
    let args: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut cmd = Cli::command();
    if as_ctdb {
        cmd = cmd.name("ctdb").bin_name("ctdb");
    }
    let parsed = cmd
        .clone()
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return usage::report(&e, &cmd, &args),
    };
    if let Err(e) = start_watchdog(cli.global.maxruntime) {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(ctx::Exit(code)) = e.downcast_ref::<ctx::Exit>() {
                return std::process::ExitCode::from(*code);
            }
            eprintln!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `-T` (ctdb's maxruntime): the whole command ends with status 1 after
/// this many seconds; 0 or absent: `$CTDB_TIMEOUT`, else 120 s. Every
/// request has its own `-t` limit too, so this is a backstop.
fn start_watchdog(maxruntime: Option<u64>) -> Result<(), &'static str> {
    let seconds = match maxruntime.filter(|s| *s > 0) {
        Some(s) => s,
        None => match std::env::var("CTDB_TIMEOUT") {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| "Invalid value CTDB_TIMEOUT")?,
            Err(_) => 120,
        },
    };
    if seconds == 0 {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("maxruntime".into())
        .spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            eprintln!("Maximum runtime exceeded - exiting");
            std::process::exit(1);
        })
        .map(|_| ())
        .map_err(|_| "cannot start the -T watchdog thread")
}

/// Runs the command; errors are printed by `main`, bare as CTDB prints
/// them, and give exit status 1 (or the status an [`ctx::Exit`] carries).
fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = ctx::Globals::new(&cli.global)?;
    match cli.command {
        Command::Ping(args) => ping::run(&ctx, &args),
        Command::Ipalloc(args) => ipalloc::run(&args),
        Command::Ip(cmd) => ip::run(&ctx, &cmd),
        Command::Status => cluster::status(&ctx),
        Command::Nodestatus(args) => cluster::nodestatus(&ctx, &args),
        Command::Listnodes(args) => cluster::listnodes(&ctx, &args),
        Command::Pnn => cluster::pnn(&ctx),
        Command::Leader => cluster::leader(&ctx),
        Command::Disable => cluster::admin(&ctx, AdminOp::Disable),
        Command::Enable => cluster::admin(&ctx, AdminOp::Enable),
        Command::Stop => cluster::admin(&ctx, AdminOp::Stop),
        Command::Continue => cluster::admin(&ctx, AdminOp::Continue),
        Command::Ban(args) => cluster::admin(
            &ctx,
            AdminOp::Ban {
                seconds: args.seconds,
            },
        ),
        Command::Unban => cluster::admin(&ctx, AdminOp::Unban),
        Command::Setleaderrole(args) => cluster::admin(
            &ctx,
            AdminOp::SetLeaderRole {
                on: args.role == cluster::Role::On,
            },
        ),
        Command::Gettickles(args) => tickles::get(&ctx, &args),
        Command::Addtickle(args) => tickles::change(&ctx, &args, true),
        Command::Deltickle(args) => tickles::change(&ctx, &args, false),
        Command::Listvars => vars::show(&ctx, None),
        Command::Getvar(args) => vars::show(&ctx, Some(&args)),
        Command::Setvar(args) => vars::set(&ctx, &args),
        Command::Event(cmd) => event::run(&ctx, &cmd),
        Command::Scriptstatus(args) => event::scriptstatus(&ctx, &args),
        Command::Setdebug(args) => debug::setdebug(&ctx, &args),
        Command::Getdebug => debug::getdebug(&ctx),
        Command::Version => node::version(),
        Command::Getpid => node::getpid(&ctx),
        Command::Uptime => node::uptime(&ctx),
        Command::Getcapabilities => node::getcapabilities(&ctx),
        Command::Getreclock => node::getreclock(&ctx),
        Command::Reloadnodes => reloadnodes::run(&ctx),
        Command::Runstate(args) => node::runstate(&ctx, &args),
        Command::Shutdown => node::shutdown(&ctx),
        Command::Checktcpport(args) => node::checktcpport(&args),
        Command::Daemons => daemons::run(&ctx),
        Command::Statistics => statistics::run(&ctx),
        Command::Statisticsreset => statistics::reset(&ctx),
        Command::History(args) => history::run(&ctx, &args),
        Command::ImportCtdb(args) => import::run(&args),
        Command::Generate(args) => generate::run(<Cli as clap::CommandFactory>::command(), &args),
    }
}
