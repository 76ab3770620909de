//! failoverd's messages: hosted addresses, takeover runs, CLI requests.
//!
//! Owned by failoverd; consumed by conntrackd ([`HOSTED`]), other nodes'
//! failoverd (the takeover-run requests) and the CLI.
//!
//! Opcodes (failoverd's range 0x0002_xxxx):
//! * [`HOSTED`] — event from failoverd to `(LOCAL, BROADCAST_SERVICE)` when
//!   the set of public addresses configured on this node changes, and every
//!   few seconds; payload [`Hosted`].
//! * [`IPREALLOCATED`] — event from the leader's failoverd to
//!   `(ALL_NODES, BROADCAST_SERVICE)` at the end of each takeover run;
//!   payload [`Ipreallocated`].
//! * Takeover runs, leader → every node's failoverd (service
//!   [`crate::proto::service::FAILOVERD`]):
//!   [`GET_PUBLIC_IPS`] `()` → [`PublicIps`]; [`RELEASE_IPS`]
//!   [`ReleaseIps`] → [`StepResult`]; [`TAKE_IPS`] [`TakeIps`] →
//!   [`StepResult`]. A node accepts RELEASE/TAKE only from the leader it
//!   follows, and TAKE only while its lease is valid.
//! * CLI → a failoverd: [`GET_PUBLIC_IPS`] (for `ip`, `ipinfo`, `ifaces`),
//!   [`ADD_IP`], [`DEL_IP`], [`RELOAD_IPS`], [`SET_IFACE_LINK`], [`GRATARP`],
//!   [`TICKLE`], [`KILLTCP`] (served by the node that receives them) and
//!   [`IPREALLOCATE`], [`MOVE_IP`] (forwarded to the leader's failoverd by a
//!   follower).
//!
//! Every reply that is not data is a [`StepResult`] or `()`; refusals come
//! back as transport errors (`ErrorCode`) with a message for the operator.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::cluster::Pnn;

/// Event: the public addresses configured on this node; payload [`Hosted`].
pub const HOSTED: u32 = 0x0002_0001;
/// Event: a takeover run finished; payload [`Ipreallocated`].
pub const IPREALLOCATED: u32 = 0x0002_0002;
/// Request `()` → [`PublicIps`]: the node's public addresses (known,
/// available, hosted) and its interfaces.
pub const GET_PUBLIC_IPS: u32 = 0x0002_0003;
/// Request [`ReleaseIps`] → [`StepResult`] (leader → node).
pub const RELEASE_IPS: u32 = 0x0002_0004;
/// Request [`TakeIps`] → [`StepResult`] (leader → node).
pub const TAKE_IPS: u32 = 0x0002_0005;
/// Request `()` → `u64` (the generation of the completed run): run a
/// takeover run now and answer when it has completed (CTDB's
/// `ipreallocate`). Sent to any failoverd; followers forward it to the
/// leader.
pub const IPREALLOCATE: u32 = 0x0002_0006;
/// Request [`MoveIp`] → `()`: release the address everywhere, then take it
/// on the target (CTDB's `moveip`). Followers forward it to the leader.
pub const MOVE_IP: u32 = 0x0002_0007;
/// Request [`AddIp`] → `()`: add an address to this node's list at run
/// time (CTDB's `addip`), then ask the leader for a run.
pub const ADD_IP: u32 = 0x0002_0008;
/// Request [`DelIp`] → `()`: remove an address from this node's list at run
/// time (CTDB's `delip`), releasing it first if hosted.
pub const DEL_IP: u32 = 0x0002_0009;
/// Request `()` → [`ReloadSummary`]: re-read public_addresses and apply only
/// the differences (CTDB's `reloadips`), then ask the leader for a run.
pub const RELOAD_IPS: u32 = 0x0002_000A;
/// Request [`SetIfaceLink`] → `()`: mark an interface up or down for
/// failover purposes (CTDB's `setifacelink`).
pub const SET_IFACE_LINK: u32 = 0x0002_000B;
/// Request [`Gratarp`] → `()`: announce an address on an interface now.
pub const GRATARP: u32 = 0x0002_000C;
/// Request `Vec<ConnectionPair>` → `()`: send a tickle ACK to each client.
pub const TICKLE: u32 = 0x0002_000D;
/// Request [`KillTcp`] → `u32` (connections reset): reset connections.
pub const KILLTCP: u32 = 0x0002_000E;
/// Request `()` → [`IpStatus`]: this node's public-IP health (for
/// `ipfailover status`): what the kernel has against what this node should
/// host, and the latest failed event hooks.
pub const GET_IP_STATUS: u32 = 0x0002_000F;
/// Request `()` → [`TunableList`]: this node's allocation tunables under
/// CTDB's names, as it would use them if it led a takeover run (CTDB's
/// `listvars`, `getvar`).
pub const GET_TUNABLES: u32 = 0x0002_0010;
/// Request [`SetTunable`] → [`SetTunableOutcome`]: change one tunable of
/// this node at run time, until failoverd restarts (CTDB's `setvar`).
pub const SET_TUNABLE: u32 = 0x0002_0011;

/// Request `String` (an event: `takeip`, `ipreallocated`, ...) →
/// [`HookStatus`]: how each hook did in that event's last run (CTDB's
/// `event status legacy EVENT`).
pub const GET_HOOK_STATUS: u32 = 0x0002_0012;
/// Request `()` → [`HookList`]: the hooks directory's scripts (CTDB's
/// `event script list legacy`).
pub const LIST_HOOKS: u32 = 0x0002_0013;
/// Request [`SetHook`] → `()`: enable or disable one hook (CTDB's
/// `event script enable|disable legacy NAME`).
pub const SET_HOOK: u32 = 0x0002_0014;
/// Request [`RunEvent`] → [`HookStatus`]: run an event's hooks now (CTDB's
/// `event run TIMEOUT legacy EVENT ARGS...`). Root only: the arguments go
/// to the hooks as given.
pub const RUN_EVENT: u32 = 0x0002_0015;

/// Request `()` → [`RunTimes`]: when this node last saw the membership
/// change and the takeover run for it end (CTDB's `uptime`: last
/// recovery/failover).
pub const GET_RUN_TIMES: u32 = 0x0002_0016;

/// The answer to [`GET_RUN_TIMES`]; times in milliseconds since the Unix
/// epoch, on the answering node's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimes {
    /// The node's clock now.
    pub now_unix_ms: u64,
    /// The membership generation of the last change seen.
    pub generation: u64,
    /// When that generation was first seen (`None`: no membership yet).
    pub changed_unix_ms: Option<u64>,
    /// When the takeover run for it ended (IPREALLOCATED); `None`: not yet.
    pub run_done_unix_ms: Option<u64>,
}

/// Request `()` → [`History`]: the failover history this node keeps —
/// the takeover runs it led and the addresses it took or released, newest
/// first (`ipfailover history`, docs/observability.md).
pub const GET_HISTORY: u32 = 0x0002_0017;

/// The answer to [`GET_HISTORY`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The answering node.
    pub pnn: Pnn,
    /// How many entries it keeps at most (`[failover] history_size`).
    pub capacity: u32,
    /// Entries recorded since failoverd started, counting those dropped
    /// when the history was full.
    pub recorded: u64,
    /// The entries, newest first.
    pub entries: Vec<HistoryEntry>,
}

/// What a [`HistoryEntry`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryKind {
    /// A takeover run (or `moveip`) this node led.
    Run,
    /// Addresses this node took in one TAKE_IPS request.
    Take,
    /// Addresses this node released in one RELEASE_IPS request.
    Release,
    /// Addresses this node dropped because its lease ended.
    Drop,
}

/// One address moved by a run, or taken or released here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMove {
    /// The address.
    pub addr: IpAddr,
    /// The node that held it before (`None`: nobody, as far as known).
    pub from: Option<Pnn>,
    /// The node that holds it after (`None`: nobody).
    pub to: Option<Pnn>,
    /// Why it moved: `node death`, `lease loss`, `health`, `admin`,
    /// `rebalancing` or `initial`.
    pub reason: String,
}

/// One entry of a node's failover history. Durations in microseconds;
/// `None` where the phase does not apply or was not measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Its number on the node (increasing).
    pub seq: u64,
    /// What it records.
    pub kind: HistoryKind,
    /// When it started, milliseconds since the Unix epoch (the node's
    /// clock).
    pub at_unix_ms: u64,
    /// The membership generation of the run.
    pub generation: u64,
    /// The run's stamp ([`ReleaseIps::run`]): a take or release on a node
    /// has its run's.
    pub run: u64,
    /// The main reason (the most severe of the moves'; `none` when nothing
    /// moved).
    pub reason: String,
    /// The node that led the run (for a take or release: that asked).
    pub leader: Option<Pnn>,
    /// The addresses moved (a run), taken or released (this node).
    pub moves: Vec<HistoryMove>,
    /// From the last heartbeat heard from the node whose death caused the
    /// run to this node seeing it disconnected.
    pub detection_us: Option<u64>,
    /// From seeing that node disconnected to its lease certainly over (its
    /// addresses may be given away).
    pub lease_wait_us: Option<u64>,
    /// Gathering the reports and planning (a run).
    pub plan_us: Option<u64>,
    /// The release step (a run), or this node's release.
    pub release_us: Option<u64>,
    /// The take step (a run), or this node's take.
    pub take_us: Option<u64>,
    /// From the take request's arrival to the first announcement sent for
    /// one of its addresses (a take).
    pub announce_us: Option<u64>,
    /// The whole run or request.
    pub total_us: u64,
    /// Tickle ACKs sent to the clients of the taken addresses.
    pub tickles: u64,
    /// Connections reset on release.
    pub resets: u64,
    /// Every step succeeded.
    pub ok: bool,
    /// The first error, when not.
    pub error: Option<String>,
}

/// One hook's part in an event run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookScriptRun {
    /// Its file name in the hooks directory.
    pub name: String,
    /// `OK`, `ERROR`, `TIMEDOUT`, `CANNOT RUN` or `DISABLED`.
    pub state: String,
    /// When it started, milliseconds since the Unix epoch.
    pub begin_unix_ms: u64,
    /// How long it ran, microseconds.
    pub duration_us: u64,
    /// Why it failed (empty when it did not).
    pub output: String,
}

/// The answer to [`GET_HOOK_STATUS`] and [`RUN_EVENT`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    /// The hooks directory is configured and exists.
    pub dir_exists: bool,
    /// The event's hooks ran since failoverd started.
    pub ran: bool,
    /// Every hook of that run, in order.
    pub scripts: Vec<HookScriptRun>,
}

/// One script of the hooks directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookScript {
    /// Its file name.
    pub name: String,
    /// Executable: it runs.
    pub enabled: bool,
}

/// The answer to [`LIST_HOOKS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookList {
    /// The hooks directory is configured and exists.
    pub dir_exists: bool,
    /// Its scripts, in the order they run.
    pub scripts: Vec<HookScript>,
}

/// The payload of [`SET_HOOK`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHook {
    /// The script's file name.
    pub name: String,
    /// Enable (make executable) or disable.
    pub enabled: bool,
}

/// The payload of [`RUN_EVENT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEvent {
    /// The event and its arguments (`takeip eth1 192.0.2.1 24`).
    pub args: Vec<String>,
}

/// One tunable and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunable {
    /// CTDB's name, e.g. `NoIPFailback`.
    pub name: String,
    /// Its value.
    pub value: u32,
}

/// The answer to [`GET_TUNABLES`], in CTDB's `listvars` order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunableList {
    /// The tunables.
    pub tunables: Vec<Tunable>,
}

/// The payload of [`SET_TUNABLE`] (the name matches case-insensitively).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTunable {
    /// The name.
    pub name: String,
    /// The new value.
    pub value: u32,
}

/// The answer to [`SET_TUNABLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetTunableOutcome {
    /// The value is in effect for the next takeover run this node leads.
    Set,
    /// A tunable CTDB has made obsolete: accepted, no effect.
    Obsolete,
}

/// The answer to [`GET_IP_STATUS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpStatus {
    /// The reporting node.
    pub pnn: Pnn,
    /// Its lease is valid (it may host public IPs).
    pub lease_ok: bool,
    /// The public addresses it hosts.
    pub hosted: Vec<IpAddr>,
    /// Assigned to this node (hosted, or given to it by the last takeover
    /// run) but not configured in the kernel.
    pub missing: Vec<IpAddr>,
    /// Public addresses configured in the kernel that this node does not
    /// host.
    pub unexpected: Vec<IpAddr>,
    /// The latest failures of event hooks, oldest first (at most 16).
    pub hook_failures: Vec<HookFailureInfo>,
}

/// One failed event hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFailureInfo {
    /// The executable.
    pub hook: String,
    /// The event with its arguments (`takeip eth0 192.0.2.1 24`).
    pub event: String,
    /// What went wrong (`exit status 3`, `timed out after 30000 ms`, ...).
    pub reason: String,
}

/// The payload of [`HOSTED`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosted {
    /// The public addresses configured on this node's interfaces.
    pub addresses: Vec<IpAddr>,
}

/// The payload of [`IPREALLOCATED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipreallocated {
    /// The membership generation the run was computed for.
    pub generation: u64,
}

/// One interface of a node, as `ctdb ifaces` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceInfo {
    /// Interface name.
    pub name: String,
    /// Usable for public addresses: the kernel link is up and no
    /// `setifacelink down` is in force.
    pub link_up: bool,
    /// How many public addresses are configured on it.
    pub references: u32,
}

/// One public address of a node, in the node's own view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIp {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length (from public_addresses).
    pub prefix: u8,
    /// The interfaces public_addresses lists for it, in order.
    pub configured: Vec<String>,
    /// Those of them that are usable now; empty = this node cannot host it.
    pub available: Vec<String>,
    /// The interface it is configured on on this node, if it is hosted here.
    pub active: Option<String>,
    /// The node this node believes hosts it (the last takeover run told it),
    /// `Some(this node)` exactly when it is hosted here.
    pub owner: Option<Pnn>,
}

/// The answer to [`GET_PUBLIC_IPS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIps {
    /// The reporting node.
    pub pnn: Pnn,
    /// False when failover is disabled on the node (`[failover] disabled`)
    /// or it is not ready: it then hosts nothing and offers nothing.
    pub can_host: bool,
    /// Its public addresses (known ones, plus any hosted one it no longer
    /// lists, with empty `configured`), in ascending address order.
    pub ips: Vec<PublicIp>,
    /// Its interfaces named in public_addresses.
    pub ifaces: Vec<IfaceInfo>,
}

/// The payload of [`RELEASE_IPS`]: release these addresses (or just record
/// their new owner where they are not hosted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseIps {
    /// The membership generation of the run (a node refuses an older one).
    pub generation: u64,
    /// The run's stamp: the leader host's `CLOCK_MONOTONIC` (ns) when the
    /// run started, the same in all its steps. Within one leader and
    /// generation a node refuses a step of a run older than one it has
    /// seen (a TAKE delayed past a newer run's RELEASE must not be done).
    pub run: u64,
    /// Each address with the node that will host it (`None`: nobody).
    pub ips: Vec<(IpAddr, Option<Pnn>)>,
}

/// The payload of [`TAKE_IPS`]: host these addresses (redundant takes of an
/// address already hosted succeed without a change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeIps {
    /// The membership generation of the run (a node refuses an older one).
    pub generation: u64,
    /// The run's stamp (see [`ReleaseIps::run`]).
    pub run: u64,
    /// The addresses.
    pub ips: Vec<IpAddr>,
}

/// The answer to [`RELEASE_IPS`] and [`TAKE_IPS`]: which addresses failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// Addresses that could not be released / taken, with the reason.
    pub failed: Vec<(IpAddr, String)>,
}

/// The payload of [`MOVE_IP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveIp {
    /// The address.
    pub addr: IpAddr,
    /// The node that must host it.
    pub pnn: Pnn,
}

/// The payload of [`ADD_IP`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddIp {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
    /// Interfaces it may go on, in order of preference.
    pub ifaces: Vec<String>,
}

/// The payload of [`DEL_IP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelIp {
    /// The address.
    pub addr: IpAddr,
}

/// The answer to [`RELOAD_IPS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    /// Addresses added to the node's list.
    pub added: Vec<IpAddr>,
    /// Addresses removed from it (released first when hosted).
    pub removed: Vec<IpAddr>,
    /// Addresses whose prefix or interfaces changed.
    pub changed: Vec<IpAddr>,
}

/// The payload of [`SET_IFACE_LINK`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetIfaceLink {
    /// Interface name.
    pub iface: String,
    /// Up or down.
    pub up: bool,
}

/// The payload of [`GRATARP`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gratarp {
    /// The address to announce.
    pub addr: IpAddr,
    /// The interface to announce it on.
    pub iface: String,
}

/// One TCP connection, client side and public side (CTDB's `tickle` and
/// `ctdb_killtcp` pairs: `SRC` is the client, `DST` the public address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionPair {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The public address and port.
    pub server: SocketAddr,
}

/// The payload of [`KILLTCP`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillTcp {
    /// The interface to send the resets on (CTDB's `ctdb_killtcp IFACE`).
    pub iface: String,
    /// The connections to reset.
    pub connections: Vec<ConnectionPair>,
}

/// The reasons a history move may give, most severe first.
pub const HISTORY_REASONS: [&str; 6] = [
    "node death",
    "lease loss",
    "health",
    "admin",
    "rebalancing",
    "initial",
];

/// The most severe reason of `moves` (`none` without moves).
#[must_use]
pub fn main_reason(moves: &[HistoryMove]) -> String {
    HISTORY_REASONS
        .iter()
        .find(|r| moves.iter().any(|m| m.reason == **r))
        .map_or_else(|| "none".to_string(), |r| (*r).to_string())
}

impl HistoryEntry {
    /// A new entry of `kind` with nothing measured yet.
    #[must_use]
    pub fn new(kind: HistoryKind, at_unix_ms: u64) -> HistoryEntry {
        HistoryEntry {
            seq: 0,
            kind,
            at_unix_ms,
            generation: 0,
            run: 0,
            reason: String::new(),
            leader: None,
            moves: Vec::new(),
            detection_us: None,
            lease_wait_us: None,
            plan_us: None,
            release_us: None,
            take_us: None,
            announce_us: None,
            total_us: 0,
            tickles: 0,
            resets: 0,
            ok: true,
            error: None,
        }
    }

    /// Gives a take's or release's moves the reasons of its run (by
    /// address), and the entry the most severe of them.
    pub fn fill_reasons(&mut self, reasons: &BTreeMap<IpAddr, String>) {
        let mut any = false;
        for m in &mut self.moves {
            if let Some(r) = reasons.get(&m.addr) {
                m.reason.clone_from(r);
                any = true;
            }
        }
        if any {
            self.reason = main_reason(&self.moves);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::proto::{decode_payload, encode_payload};

    #[test]
    fn opcodes_are_in_failoverd_range_and_distinct() {
        let all = [
            HOSTED,
            IPREALLOCATED,
            GET_PUBLIC_IPS,
            RELEASE_IPS,
            TAKE_IPS,
            IPREALLOCATE,
            MOVE_IP,
            ADD_IP,
            DEL_IP,
            RELOAD_IPS,
            SET_IFACE_LINK,
            GRATARP,
            TICKLE,
            KILLTCP,
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a >> 16, 0x0002, "{a:#x}");
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The wave-2 contract fixes these two.
        assert_eq!(HOSTED, 0x0002_0001);
        assert_eq!(IPREALLOCATED, 0x0002_0002);
    }

    #[test]
    fn payloads_round_trip() {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 201));
        let hosted = Hosted { addresses: vec![a] };
        let bytes = encode_payload(&hosted).unwrap();
        // One element, V4 tag, octets.
        assert_eq!(bytes, [1, 0, 192, 0, 2, 201]);
        assert_eq!(decode_payload::<Hosted>(&bytes).unwrap(), hosted);

        let ips = PublicIps {
            pnn: 2,
            can_host: true,
            ips: vec![PublicIp {
                addr: a,
                prefix: 24,
                configured: vec!["eth0".into(), "eth1".into()],
                available: vec!["eth1".into()],
                active: Some("eth1".into()),
                owner: Some(2),
            }],
            ifaces: vec![IfaceInfo {
                name: "eth1".into(),
                link_up: true,
                references: 1,
            }],
        };
        let bytes = encode_payload(&ips).unwrap();
        assert_eq!(decode_payload::<PublicIps>(&bytes).unwrap(), ips);

        let rel = ReleaseIps {
            generation: 7,
            run: 123_456_789,
            ips: vec![(a, Some(1)), (a, None)],
        };
        let bytes = encode_payload(&rel).unwrap();
        assert_eq!(decode_payload::<ReleaseIps>(&bytes).unwrap(), rel);
    }
}
