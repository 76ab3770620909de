//! `ipfailover.toml`: every setting that is not in CTDB's own files (`nodes`,
//! `public_addresses`), with its default.
//!
//! The file is optional and so is every key in it; an absent file means all
//! defaults. Unknown sections and keys are rejected (a typo must not silently
//! become a default), and every error names the file, the line and the column.
//! Loading is all-or-nothing: a daemon gets either a whole valid [`Config`] or
//! an error, never a half-applied one.
//!
//! This crate is a leaf: it knows the settings of every daemon but none of
//! their code, so masterd, each daemon and the CLI read the same file the
//! same way. It also holds the one reader of each of CTDB's own files
//! ([`nodes`], [`public_addresses`]) and the text rules they share
//! ([`text`]). docs/configuration.md documents every key and rule; a test
//! checks that the keys and the docs agree.

pub mod ctdb_shim;
pub mod nodes;
pub mod public_addresses;
pub mod text;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The file name inside the configuration directory.
pub const FILE_NAME: &str = "ipfailover.toml";

/// The default configuration directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/ipfailover";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read, or is not text.
    #[error(transparent)]
    Text(#[from] text::TextError),
    /// The file is not valid TOML, has an unknown key, or a value of the
    /// wrong type or out of range.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration of one node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[cluster]`: membership, heartbeats, leader, cluster lock.
    pub cluster: ClusterConfig,
    /// `[transport]`: sockets, the node port, the cluster key.
    pub transport: TransportConfig,
    /// `[failover]`: announcements, hooks, release behaviour.
    pub failover: FailoverConfig,
    /// `[conntrack]`: the tracked-connection table.
    pub conntrack: ConntrackConfig,
    /// `[logging]`.
    pub logging: LoggingConfig,
    /// `[metrics]`: masterd's Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[tunables]`: CTDB's allocation tunables under CTDB's names.
    pub tunables: Tunables,
}

/// Heartbeat timing presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 100 ms heartbeats, a node is dead after 500 ms of silence: detects a
    /// dead node well within a second on a LAN and tolerates a 400 ms stall
    /// of a loaded machine without a false alarm.
    #[default]
    Default,
    /// 10 ms heartbeats, dead after 30 ms: for dedicated, lightly loaded
    /// cluster networks (keepalived's fastest VRRPv3 setting is comparable).
    Fast,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's PNN; when absent it is found by matching the local
    /// addresses against the nodes file.
    pub pnn: Option<u32>,
    /// The heartbeat preset; `heartbeat_interval_ms` and `dead_after_ms`
    /// override its values.
    pub profile: Profile,
    /// Interval between heartbeats, in milliseconds.
    pub heartbeat_interval_ms: Option<Spanned<u64>>,
    /// Silence after which a node is DISCONNECTED, in milliseconds.
    pub dead_after_ms: Option<Spanned<u64>>,
    /// The cluster lock, CTDB syntax: a path (CTDB's fcntl helper on that
    /// file) or `!HELPER ARGS`. Without a lock, a partition needs a strict
    /// majority of the configured nodes to lead.
    pub cluster_lock: Option<String>,
    /// Whether this node may become the leader (CTDB's `leader capability`).
    pub leader_capability: bool,
    /// A command run every `health_interval_ms`; a non-zero exit marks the
    /// node UNHEALTHY until it succeeds again.
    pub health_command: Option<String>,
    /// Interval of the health command, in milliseconds.
    pub health_interval_ms: u64,
    /// Time limit of one health-command run, in milliseconds.
    pub health_timeout_ms: u64,
    /// Real-time priority (SCHED_RR, 1-99) at which masterd runs failoverd
    /// in the multi-process model, with transportd and clusterd (the
    /// heartbeat path) one step above; all three then also lock their
    /// memory. 0 leaves them at normal scheduling. Hooks and helpers they
    /// start run at normal priority. On by default (1), as ctdbd and
    /// corosync run: measured on a 2-core machine, the fast profile lost
    /// its lease 2-15 times less often at real-time priority
    /// (docs/BENCHMARKS.md, failover-load).
    pub realtime_priority: u8,
    /// Where clusterd keeps what must survive its restarts (the node lists
    /// of a node list change in progress). Default `/var/lib/ipfailover`;
    /// with a `run_dir` other than the default, `<run_dir>/state`, so that
    /// test clusters on one host stay apart.
    pub state_dir: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            pnn: None,
            profile: Profile::Default,
            heartbeat_interval_ms: None,
            dead_after_ms: None,
            cluster_lock: None,
            leader_capability: true,
            health_command: None,
            health_interval_ms: 5_000,
            health_timeout_ms: 10_000,
            realtime_priority: 1,
            state_dir: None,
        }
    }
}

impl ClusterConfig {
    /// The heartbeat interval in force (profile value unless overridden).
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.heartbeat_interval_ms
            .as_ref()
            .map_or(self.profile_values().0, |v| *v.get_ref())
    }

    /// The dead-after time in force (profile value unless overridden).
    pub fn dead_after_ms(&self) -> u64 {
        self.dead_after_ms
            .as_ref()
            .map_or(self.profile_values().1, |v| *v.get_ref())
    }

    /// The leader's lease margin in force, in milliseconds: the larger of
    /// one heartbeat interval and a fifth of `dead_after_ms`. The leader
    /// gives a node's addresses to another node no earlier than this after
    /// that node's lease ended (clock-rate drift, scheduling). clusterd's
    /// `daemon::timing` computes the same (a clusterd test checks that they
    /// agree); failoverd reads it here to keep what it does after a lost
    /// lease inside it.
    pub fn margin_ms(&self) -> u64 {
        self.heartbeat_interval_ms().max(self.dead_after_ms() / 5)
    }

    fn profile_values(&self) -> (u64, u64) {
        match self.profile {
            Profile::Default => (100, 500),
            Profile::Fast => (10, 30),
        }
    }
}

/// `[transport]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// TCP port of the node-to-node links (CTDB's port).
    pub port: u16,
    /// The pre-shared cluster key (64 hex characters), relative to the
    /// configuration directory unless absolute. Must not be readable by
    /// group or others.
    pub key_file: PathBuf,
    /// Directory of the local sockets.
    pub run_dir: PathBuf,
    /// A group whose members may use the local socket besides root.
    pub group: Option<String>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            port: 4379,
            key_file: PathBuf::from("cluster.key"),
            run_dir: PathBuf::from("/run/ipfailover"),
            group: None,
        }
    }
}

/// `[failover]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    /// Do not manage public addresses at all on this node (CTDB's
    /// `[failover] disabled`).
    pub disabled: bool,
    /// Announcements (gratuitous ARP in both forms, or an unsolicited NA)
    /// sent after taking an address, the first at once.
    pub garp_count: u32,
    /// Interval between those announcements, in milliseconds.
    pub garp_interval_ms: u64,
    /// Re-announce every hosted address at this interval, in seconds, for
    /// switches with long ARP caches; 0 turns it off.
    pub garp_refresh_s: u64,
    /// Tickle ACKs sent to each client of a taken address (one per
    /// announcement round, as CTDB does).
    pub tickle_count: u32,
    /// Directory of event hooks (`takeip`, `releaseip`, `updateip`,
    /// `ipreallocated`), relative to the configuration directory unless
    /// absolute.
    pub hooks_dir: PathBuf,
    /// Time limit of one hook run, in milliseconds (CTDB's
    /// EventScriptTimeout is 30 s).
    pub hook_timeout_ms: u64,
    /// How long the leader waits for releases to be acknowledged before it
    /// gives up on a takeover run, in milliseconds.
    pub release_timeout_ms: u64,
    /// Name of the nftables table (family inet) that ipfailover owns.
    pub nft_table: String,
    /// Enforce the lease in the kernel (nftables tables
    /// `<nft_table>_lease`, families inet and arp): a node stops answering
    /// for its public addresses when its lease ends even if every process
    /// of ipfailover is dead or frozen.
    pub kernel_lease: bool,
    /// Entries of the failover history failoverd keeps in memory (takeover
    /// runs it led, takes, releases, drops; `ipfailover history`).
    pub history_size: u32,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            disabled: false,
            garp_count: 3,
            garp_interval_ms: 1_000,
            garp_refresh_s: 0,
            tickle_count: 3,
            hooks_dir: PathBuf::from("events"),
            hook_timeout_ms: 30_000,
            release_timeout_ms: 9_000,
            nft_table: "ipfailover".into(),
            kernel_lease: true,
            history_size: 100,
        }
    }
}

/// `[conntrack]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackConfig {
    /// Learn connections from the kernel's conntrack events (needs the
    /// nftables table); off means sock_diag dumps and registration only.
    pub kernel_events: bool,
    /// Interval of the sock_diag dump of established connections, in ms.
    pub scan_interval_ms: u64,
    /// Interval of the full per-address sync to other nodes, in ms (CTDB's
    /// TickleUpdateInterval is 20 s; changes are also sent at once).
    pub sync_interval_ms: u64,
    /// How long the connections of an address that nobody hosts are kept,
    /// in milliseconds.
    pub grace_period_ms: u64,
    /// The most connections the table stores from other nodes and
    /// registrations (a node's own connections are never refused); what
    /// is over it is refused and counted.
    pub max_connections: u64,
}

/// The largest `[conntrack] max_connections` accepted (about 2-5 GB of
/// table at the limit).
pub const MAX_CONNECTIONS_LIMIT: u64 = 100_000_000;

/// Largest `[failover] history_size` (entries are a few hundred bytes; a
/// run of 256 addresses a few kilobytes).
pub const MAX_HISTORY_SIZE: u32 = 100_000;

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            kernel_events: true,
            scan_interval_ms: 10_000,
            sync_interval_ms: 5_000,
            grace_period_ms: 60_000,
            max_connections: 4_000_000,
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing filter: `error`, `warn`, `info`, `debug`, `trace`, or
    /// per-module directives such as `info,failoverd=debug`.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
        }
    }
}

/// The default of `[metrics] listen`: loopback only, Prometheus's
/// registered exporter port range.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9379";

/// `[metrics]`: the Prometheus endpoint masterd serves (`GET /metrics`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ADDRESS:PORT` to listen on (`[::1]:9379` for IPv6), or `""` for no
    /// endpoint at all. Checked by [`parse`].
    pub listen: Spanned<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Spanned::new(0..0, DEFAULT_METRICS_LISTEN.to_owned()),
        }
    }
}

impl MetricsConfig {
    /// Where to serve `/metrics`, or `None` when turned off. [`parse`] has
    /// checked the value, so this only fails on a [`MetricsConfig`] built
    /// by hand.
    ///
    /// # Errors
    ///
    /// The reason, naming the value, when `listen` is neither empty nor
    /// `ADDRESS:PORT` with a port from 1 to 65535.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let v = self.listen.get_ref().trim();
        if v.is_empty() {
            return Ok(None);
        }
        let addr: std::net::SocketAddr = v.parse().map_err(|_| {
            format!(
                "listen = {:?}: use ADDRESS:PORT (\"127.0.0.1:9379\", \"[::1]:9379\"), or \"\" to turn the endpoint off",
                self.listen.get_ref()
            )
        })?;
        if addr.port() == 0 {
            return Err(format!(
                "listen = {:?}: the port must be 1 to 65535 (Prometheus must know where to scrape)",
                self.listen.get_ref()
            ));
        }
        Ok(Some(addr))
    }
}

/// `[tunables]`: CTDB's allocation tunables, under CTDB's names, so that a
/// `ctdb.tunables` line such as `NoIPFailback=1` becomes `NoIPFailback = 1`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tunables {
    /// 0 deterministic, 1 non-deterministic, 2 LCP2 (CTDB treats any other
    /// value as LCP2; we reject it).
    #[serde(rename = "IPAllocAlgorithm")]
    pub ip_alloc_algorithm: Spanned<u32>,
    /// 1: never move an address back to a node that becomes able to host
    /// it again (no rebalancing).
    #[serde(rename = "NoIPFailback")]
    pub no_ip_failback: Spanned<u32>,
    /// 1: no node takes over addresses it does not already host.
    #[serde(rename = "NoIPTakeover")]
    pub no_ip_takeover: Spanned<u32>,
    /// Obsolete in CTDB 4.x and ignored there and here (accepted so that
    /// existing tunables files load, with a warning).
    #[serde(rename = "NoIPHostOnAllDisabled")]
    pub no_ip_host_on_all_disabled: Option<Spanned<u32>>,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            ip_alloc_algorithm: Spanned::new(0..0, 2),
            no_ip_failback: Spanned::new(0..0, 0),
            no_ip_takeover: Spanned::new(0..0, 0),
            no_ip_host_on_all_disabled: None,
        }
    }
}

/// A loaded configuration and the warnings it produced (obsolete keys).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Human-readable warnings, each naming file and line.
    pub warnings: Vec<String>,
    /// The configuration directory it was loaded from.
    pub dir: PathBuf,
    /// The file's text ("" when absent), for positions of later checks.
    text: String,
}

impl Loaded {
    /// `path` resolved against the configuration directory unless absolute.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    /// The `ipfailover.toml` file of the directory.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// 1-based line and column of the first `KEY = ...` line of the file
    /// ((1, 1) when the key is absent), for errors found after loading.
    #[must_use]
    pub fn key_position(&self, key: &str) -> (usize, usize) {
        find_key(&self.text, key).map_or((1, 1), |s| text::line_col(&self.text, s.start))
    }

    /// Checks `[cluster] pnn`, when set, against the nodes file: it must be
    /// a live (not `#deleted`) node.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] at the `pnn` key.
    pub fn check_pnn(&self, nodes: &nodes::NodesFile) -> Result<(), ConfigError> {
        let Some(pnn) = self.config.cluster.pnn else {
            return Ok(());
        };
        if nodes.is_live(pnn) {
            return Ok(());
        }
        let (line, column) = self.key_position("pnn");
        Err(ConfigError::Invalid {
            file: self.file(),
            line,
            column,
            message: format!(
                "pnn = {pnn}: not a node of {} ({} entries, numbered from 0; #deleted entries cannot run)",
                nodes.file.display(),
                nodes.len()
            ),
        })
    }
}

/// Loads `DIR/ipfailover.toml`; a missing file means all defaults.
///
/// # Errors
///
/// When the file exists but cannot be read, or is invalid (see [`parse`]).
pub fn load(dir: &Path) -> Result<Loaded, ConfigError> {
    let file = dir.join(FILE_NAME);
    let text = match text::read(&file) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => String::new(),
        Err(e) => return Err(e.into()),
    };
    let (config, warnings) = parse(&text, &file)?;
    Ok(Loaded {
        config,
        warnings,
        dir: dir.to_path_buf(),
        text,
    })
}

/// Parses and validates the text of an `ipfailover.toml` named `file`.
///
/// # Errors
///
/// [`ConfigError::Invalid`] with the line and column of the first problem:
/// bad TOML, an unknown section or key, a wrong type, or a value out of
/// range; [`ConfigError::Text`] for a `\r` that does not end a line.
pub fn parse(text: &str, file: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    // The same line-end rule as every other file (TOML allows CRLF too).
    text::check_line_ends(text, file)?;
    let config: Config = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| text::line_col(text, s.start));
        ConfigError::Invalid {
            file: file.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    let invalid = |span: std::ops::Range<usize>, message: String| {
        let (line, column) = text::line_col(text, span.start);
        ConfigError::Invalid {
            file: file.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let c = &config.cluster;
    if let Some(v) = &c.heartbeat_interval_ms {
        if !(1..=60_000).contains(v.get_ref()) {
            return Err(invalid(
                v.span(),
                format!(
                    "heartbeat_interval_ms = {}: must be 1 to 60000",
                    v.get_ref()
                ),
            ));
        }
    }
    let interval = c.heartbeat_interval_ms();
    let dead_after = c.dead_after_ms();
    if dead_after < 3 * interval {
        let span = c
            .dead_after_ms
            .as_ref()
            .or(c.heartbeat_interval_ms.as_ref())
            .map_or(0..0, Spanned::span);
        return Err(invalid(
            span,
            format!(
                "dead_after_ms ({dead_after}) must be at least 3 heartbeat intervals ({interval} ms each), or one lost heartbeat declares a node dead"
            ),
        ));
    }
    if c.health_interval_ms == 0 || c.health_timeout_ms == 0 {
        return Err(invalid(
            find_key(text, "health_interval_ms")
                .or_else(|| find_key(text, "health_timeout_ms"))
                .unwrap_or(0..0),
            "health_interval_ms and health_timeout_ms must be greater than 0".into(),
        ));
    }
    if c.realtime_priority > 99 {
        return Err(invalid(
            find_key(text, "realtime_priority").unwrap_or(0..0),
            format!(
                "realtime_priority = {}: use 1-99 (SCHED_RR), or 0 for normal scheduling",
                c.realtime_priority
            ),
        ));
    }
    for (name, v) in [
        ("garp_interval_ms", config.failover.garp_interval_ms),
        ("hook_timeout_ms", config.failover.hook_timeout_ms),
        ("release_timeout_ms", config.failover.release_timeout_ms),
        ("scan_interval_ms", config.conntrack.scan_interval_ms),
        ("sync_interval_ms", config.conntrack.sync_interval_ms),
    ] {
        if v == 0 {
            return Err(invalid(
                find_key(text, name).unwrap_or(0..0),
                format!("{name} must be greater than 0"),
            ));
        }
    }
    let size = config.failover.history_size;
    if size == 0 || size > MAX_HISTORY_SIZE {
        return Err(invalid(
            find_key(text, "history_size").unwrap_or(0..0),
            format!("history_size = {size}: use 1 to {MAX_HISTORY_SIZE}"),
        ));
    }
    let max = config.conntrack.max_connections;
    if max == 0 || max > MAX_CONNECTIONS_LIMIT {
        return Err(invalid(
            find_key(text, "max_connections").unwrap_or(0..0),
            format!("max_connections = {max}: use 1 to {MAX_CONNECTIONS_LIMIT}"),
        ));
    }
    if config.failover.nft_table.is_empty()
        || config.failover.nft_table.len() > 32
        || !config
            .failover
            .nft_table
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
    {
        return Err(invalid(
            find_key(text, "nft_table").unwrap_or(0..0),
            format!(
                "nft_table = {:?}: use 1 to 32 letters, digits, '_' or '-'",
                config.failover.nft_table
            ),
        ));
    }
    if let Err(message) = config.metrics.listen_addr() {
        return Err(invalid(config.metrics.listen.span(), message));
    }
    let t = &config.tunables;
    if *t.ip_alloc_algorithm.get_ref() > 2 {
        return Err(invalid(
            t.ip_alloc_algorithm.span(),
            format!(
                "IPAllocAlgorithm = {}: must be 0 (deterministic), 1 (non-deterministic) or 2 (LCP2)",
                t.ip_alloc_algorithm.get_ref()
            ),
        ));
    }
    for (name, v) in [
        ("NoIPFailback", &t.no_ip_failback),
        ("NoIPTakeover", &t.no_ip_takeover),
    ] {
        if *v.get_ref() > 1 {
            return Err(invalid(
                v.span(),
                format!("{name} = {}: must be 0 or 1", v.get_ref()),
            ));
        }
    }
    let mut warnings = Vec::new();
    if let Some(v) = &t.no_ip_host_on_all_disabled {
        let (line, _) = text::line_col(text, v.span().start);
        warnings.push(format!(
            "{}:{line}: NoIPHostOnAllDisabled is obsolete (CTDB 4.x ignores it too): unhealthy nodes never host addresses",
            file.display()
        ));
    }
    Ok((config, warnings))
}

/// The span of the first `name = ...` line, for errors about values that
/// carry no span of their own.
fn find_key(text: &str, name: &str) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(name) {
            if rest.trim_start().starts_with('=') {
                let start = offset + (line.len() - trimmed.len());
                return Some(start..start + name.len());
            }
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<(Config, Vec<String>), ConfigError> {
        parse(text, Path::new("/etc/ipfailover/ipfailover.toml"))
    }

    fn err(text: &str) -> String {
        p(text).expect_err("should be rejected").to_string()
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let (c, w) = p("").unwrap();
        assert!(w.is_empty());
        assert_eq!(c.cluster.heartbeat_interval_ms(), 100);
        assert_eq!(c.cluster.dead_after_ms(), 500);
        assert_eq!(c.cluster.margin_ms(), 100);
        assert_eq!(c.cluster.realtime_priority, 1);
        assert_eq!(c.transport.port, 4379);
        assert_eq!(c.failover.garp_count, 3);
        assert_eq!(*c.tunables.ip_alloc_algorithm.get_ref(), 2);
        assert!(c.cluster.leader_capability);
    }

    #[test]
    fn fast_profile_and_overrides() {
        let (c, _) = p("[cluster]\nprofile = \"fast\"\n").unwrap();
        assert_eq!(
            (c.cluster.heartbeat_interval_ms(), c.cluster.dead_after_ms()),
            (10, 30)
        );
        let (c, _) = p("[cluster]\nprofile = \"fast\"\ndead_after_ms = 50\n").unwrap();
        assert_eq!(c.cluster.dead_after_ms(), 50);
        assert_eq!(c.cluster.margin_ms(), 10);
        let (c, _) = p("[cluster]\ndead_after_ms = 3000\n").unwrap();
        assert_eq!(c.cluster.margin_ms(), 600);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("[cluster]\npnn = 1\nheartbeat_intervall_ms = 10\n");
        assert!(e.starts_with("/etc/ipfailover/ipfailover.toml:3:"), "{e}");
        assert!(e.contains("heartbeat_intervall_ms"), "{e}");
    }

    #[test]
    fn unknown_section_is_rejected() {
        let e = err("[clustre]\n");
        assert!(e.contains(":1:"), "{e}");
        assert!(e.contains("clustre"), "{e}");
    }

    #[test]
    fn wrong_type_is_rejected_with_line() {
        let e = err("\n[transport]\nport = \"4379\"\n");
        assert!(e.contains(":3:"), "{e}");
    }

    #[test]
    fn out_of_range_port_is_rejected() {
        let e = err("[transport]\nport = 70000\n");
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn dead_after_too_short_is_rejected_at_its_line() {
        let e = err("[cluster]\nheartbeat_interval_ms = 100\ndead_after_ms = 200\n");
        assert!(e.contains(":3:"), "{e}");
        assert!(e.contains("at least 3 heartbeat intervals"), "{e}");
    }

    #[test]
    fn zero_interval_is_rejected() {
        let e = err("[cluster]\nheartbeat_interval_ms = 0\n");
        assert!(e.contains(":2:") && e.contains("1 to 60000"), "{e}");
        let e = err("[failover]\n\ngarp_interval_ms = 0\n");
        assert!(e.contains(":3:") && e.contains("garp_interval_ms"), "{e}");
    }

    #[test]
    fn tunables_use_ctdb_names_and_ranges() {
        let (c, _) = p("[tunables]\nNoIPFailback = 1\nIPAllocAlgorithm = 0\n").unwrap();
        assert_eq!(*c.tunables.no_ip_failback.get_ref(), 1);
        assert_eq!(*c.tunables.ip_alloc_algorithm.get_ref(), 0);
        let e = err("[tunables]\nIPAllocAlgorithm = 7\n");
        assert!(e.contains(":2:") && e.contains("IPAllocAlgorithm"), "{e}");
        let e = err("[tunables]\nNoIPFailback = 2\n");
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn obsolete_tunable_warns_with_line() {
        let (_, w) = p("[tunables]\n\nNoIPHostOnAllDisabled = 1\n").unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains(":3:"), "{w:?}");
    }

    #[test]
    fn realtime_priority_above_99_is_rejected() {
        let e = err("[cluster]\nrealtime_priority = 100\n");
        assert!(e.contains("realtime_priority = 100"), "{e}");
        assert!(e.contains(":2"), "the error names the line: {e}");
    }

    #[test]
    fn bad_nft_table_name_is_rejected() {
        let e = err("[failover]\nnft_table = \"a b\"\n");
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn missing_file_is_defaults_and_relative_paths_resolve() {
        let dir = std::env::temp_dir().join(format!("ipf-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let loaded = load(&dir).unwrap();
        assert_eq!(
            loaded.resolve(&loaded.config.transport.key_file),
            dir.join("cluster.key")
        );
        assert_eq!(
            loaded.resolve(Path::new("/abs/key")),
            PathBuf::from("/abs/key")
        );
        std::fs::write(dir.join(FILE_NAME), "[logging]\nlevel = 3\n").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("ipfailover.toml:2:"), "{e}");
    }

    #[test]
    fn metrics_listen_is_checked() {
        let (c, _) = p("").unwrap();
        assert_eq!(
            c.metrics.listen_addr().unwrap(),
            Some("127.0.0.1:9379".parse().unwrap())
        );
        let (c, _) = p("[metrics]\nlisten = \"\"\n").unwrap();
        assert_eq!(c.metrics.listen_addr().unwrap(), None);
        let (c, _) = p("[metrics]\nlisten = \"[::1]:9100\"\n").unwrap();
        assert_eq!(
            c.metrics.listen_addr().unwrap(),
            Some("[::1]:9100".parse().unwrap())
        );
        let e = err("[metrics]\nlisten = \"localhost:9379\"\n");
        assert!(
            e.contains("ipfailover.toml:2:10: listen = \"localhost:9379\": use ADDRESS:PORT"),
            "{e}"
        );
        let e = err("[metrics]\nlisten = \"127.0.0.1:0\"\n");
        assert!(
            e.contains(":2:10: listen = \"127.0.0.1:0\": the port must be 1 to 65535"),
            "{e}"
        );
        let e = err("[metrics]\nlisten = \"127.0.0.1:70000\"\n");
        assert!(e.contains(":2:10:"), "{e}");
        let e = err("[metrics]\nlisten = 9379\n");
        assert!(e.contains(":2:10:"), "{e}");
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let example = include_str!("../../packaging/etc/ipfailover.toml");
        // The example parses, and every key it shows appears in the docs.
        p(example).expect("the packaged example must be valid");
        for line in example.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && !key.contains(' ') {
                    assert!(
                        doc.contains(&format!("`{key}`")),
                        "{key} is not in docs/configuration.md"
                    );
                }
            }
        }
    }
}
