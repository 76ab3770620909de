//! Golden-file tests of the `ipfailover` binary: every command in its human,
//! `-X` and `--json` forms, bad arguments, and absent or hung daemons.
//!
//! The binary runs against a scripted transportd (tests/support) on a real
//! Unix socket, speaking the real protocol: a 3-node cluster where node 0
//! is this node, node 1 is up, and node 2 is down (not connected). Each case
//! is compared byte for byte with `cli/tests/golden/<case>.txt`, which holds
//! the command line, the exit status, stdout, stderr and the requests the
//! command sent (decoded, with their destination). On a mismatch the test
//! prints a diff. `UPDATE_GOLDEN=1 cargo test -p cli --test golden`
//! rewrites the files (review the diff before committing).

mod support;

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Fake, Node, Script};
use transport::msg::cluster::{
    AdminCommand, AdminOp, AdminOutcome, ClusterSettings, Membership, NodeFlags, NodeInfo, ADMIN,
    GET_MEMBERSHIP, GET_NODES_FILE, GET_SETTINGS, RELOAD_NODES,
};
use transport::msg::conntrack::{
    page_after, ConnectionsPage, GetConnections, GetConnectionsPage, TrackedConnection,
    ADD_CONNECTIONS, GET_CONNECTIONS, GET_CONNECTIONS_PAGE, PAGE_CONNECTIONS, REMOVE_CONNECTIONS,
};
use transport::msg::failover::{
    AddIp, ConnectionPair, DelIp, Gratarp, HookFailureInfo, IfaceInfo, IpStatus, KillTcp, MoveIp,
    PublicIp, PublicIps, ReloadSummary, SetIfaceLink, SetTunable, SetTunableOutcome, Tunable,
    TunableList, ADD_IP, DEL_IP, GET_IP_STATUS, GET_PUBLIC_IPS, GET_TUNABLES, GRATARP,
    IPREALLOCATE, KILLTCP, MOVE_IP, RELOAD_IPS, SET_IFACE_LINK, SET_TUNABLE, TICKLE,
};
use transport::msg::failover::{
    HookList, HookScript, HookScriptRun, HookStatus, RunEvent, RunTimes, SetHook, GET_HOOK_STATUS,
    GET_RUN_TIMES, LIST_HOOKS, RUN_EVENT, SET_HOOK,
};
use transport::msg::master::{DaemonState, DaemonStatus, MasterStatus, Model, GET_STATUS};
use transport::proto::control::{
    NodeList, Statistics, LIST_PEERS, LOG_LEVEL, PING, SHUTDOWN, STATISTICS, STATISTICS_RESET,
};
use transport::proto::service::{CLUSTERD, CONNTRACKD, FAILOVERD, MASTERD};
use transport::proto::{decode_payload, encode_payload, ErrorCode, RemoteError};

/// Longest a case may run before it counts as hung (and is killed).
const HANG_LIMIT: Duration = Duration::from_secs(30);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Decodes a request payload for the request log.
fn describe(opcode: u32, p: &[u8]) -> String {
    fn d<T: serde::de::DeserializeOwned + std::fmt::Debug>(name: &str, p: &[u8]) -> String {
        match decode_payload::<T>(p) {
            Ok(v) => format!("{name} {v:?}"),
            Err(e) => format!("{name} <undecodable: {e}>"),
        }
    }
    match opcode {
        LIST_PEERS => "LIST_PEERS".into(),
        PING => "PING".into(),
        GET_MEMBERSHIP => "GET_MEMBERSHIP".into(),
        GET_SETTINGS => "GET_SETTINGS".into(),
        ADMIN => d::<AdminCommand>("ADMIN", p),
        GET_PUBLIC_IPS => "GET_PUBLIC_IPS".into(),
        GET_IP_STATUS => "GET_IP_STATUS".into(),
        GET_TUNABLES => "GET_TUNABLES".into(),
        SET_TUNABLE => d::<SetTunable>("SET_TUNABLE", p),
        SET_IFACE_LINK => d::<SetIfaceLink>("SET_IFACE_LINK", p),
        ADD_IP => d::<AddIp>("ADD_IP", p),
        DEL_IP => d::<DelIp>("DEL_IP", p),
        MOVE_IP => d::<MoveIp>("MOVE_IP", p),
        RELOAD_IPS => "RELOAD_IPS".into(),
        IPREALLOCATE => "IPREALLOCATE".into(),
        GRATARP => d::<Gratarp>("GRATARP", p),
        TICKLE => d::<Vec<ConnectionPair>>("TICKLE", p),
        KILLTCP => d::<KillTcp>("KILLTCP", p),
        GET_CONNECTIONS => d::<GetConnections>("GET_CONNECTIONS", p),
        GET_CONNECTIONS_PAGE => d::<GetConnectionsPage>("GET_CONNECTIONS_PAGE", p),
        ADD_CONNECTIONS => d::<Vec<TrackedConnection>>("ADD_CONNECTIONS", p),
        REMOVE_CONNECTIONS => d::<Vec<TrackedConnection>>("REMOVE_CONNECTIONS", p),
        GET_STATUS => "GET_STATUS".into(),
        STATISTICS => "STATISTICS".into(),
        STATISTICS_RESET => "STATISTICS_RESET".into(),
        LOG_LEVEL => d::<transport::proto::control::LogLevelRequest>("LOG_LEVEL", p),
        GET_HOOK_STATUS => d::<String>("GET_HOOK_STATUS", p),
        LIST_HOOKS => "LIST_HOOKS".into(),
        SET_HOOK => d::<SetHook>("SET_HOOK", p),
        RUN_EVENT => d::<RunEvent>("RUN_EVENT", p),
        GET_RUN_TIMES => "GET_RUN_TIMES".into(),
        GET_NODES_FILE => "GET_NODES_FILE".into(),
        RELOAD_NODES => d::<NodeList>("RELOAD_NODES", p),
        SHUTDOWN => "SHUTDOWN".into(),
        other => format!("{other:#010x} ({} bytes)", p.len()),
    }
}

/// The cluster's membership with these node flags (an admin command
/// changes them: the command waits until it sees the change).
fn membership_with(this: u32, flags: [NodeFlags; 3]) -> Membership {
    Membership {
        generation: 654_321,
        leader: Some(0),
        nodes: vec![
            NodeInfo {
                pnn: 0,
                address: Some(ip("192.0.2.11")),
                flags: flags[0],
            },
            NodeInfo {
                pnn: 1,
                address: Some(ip("192.0.2.12")),
                flags: flags[1],
            },
            NodeInfo {
                pnn: 2,
                address: Some(ip("192.0.2.13")),
                flags: flags[2],
            },
        ],
        this_node: this,
        lease_ok: true,
        reassignable: vec![],
        lease: Default::default(),
    }
}

fn pip(addr: &str, owner: Option<u32>, active: Option<&str>, ifaces: &[&str]) -> PublicIp {
    PublicIp {
        addr: ip(addr),
        prefix: if addr.contains(':') { 64 } else { 24 },
        configured: ifaces.iter().map(|s| s.to_string()).collect(),
        available: ifaces.iter().map(|s| s.to_string()).collect(),
        active: active.map(str::to_string),
        owner,
    }
}

/// Node 0 hosts .1 and the IPv6 address; node 1 is disabled and hosts
/// nothing, .2 was on node 2 (down) and is unassigned; .3 only node 0 lists.
fn public_ips(pnn: u32) -> PublicIps {
    let ifaces = vec![
        IfaceInfo {
            name: "eth1".into(),
            link_up: true,
            references: if pnn == 0 { 2 } else { 0 },
        },
        IfaceInfo {
            name: "eth2".into(),
            link_up: pnn == 0,
            references: 0,
        },
    ];
    let mut ips = vec![
        pip(
            "198.51.100.1",
            Some(0),
            (pnn == 0).then_some("eth1"),
            &["eth1", "eth2"],
        ),
        pip("198.51.100.2", None, None, &["eth1", "eth2"]),
        pip(
            "2001:db8::1",
            Some(0),
            (pnn == 0).then_some("eth1"),
            &["eth1"],
        ),
    ];
    if pnn == 0 {
        ips.insert(2, pip("198.51.100.3", None, None, &["eth2"]));
    } else {
        for i in &mut ips {
            i.available.clear();
        }
    }
    PublicIps {
        pnn,
        can_host: pnn == 0,
        ips,
        ifaces,
    }
}

fn connections(node: u32) -> Vec<TrackedConnection> {
    let mut v = vec![
        TrackedConnection {
            client: sa("203.0.113.7:40000"),
            server: sa("198.51.100.1:445"),
        },
        TrackedConnection {
            client: sa("203.0.113.8:40001"),
            server: sa("198.51.100.1:2049"),
        },
    ];
    if node == 1 {
        v.truncate(1);
    }
    v
}

/// A daemon's STATISTICS answer (counters that differ per node).
fn statistics(pnn: u32, names: &[&str]) -> Statistics {
    Statistics {
        counters: names
            .iter()
            .zip(1u64..)
            .map(|(n, i)| ((*n).to_string(), i * 10 + u64::from(pnn)))
            .collect(),
    }
}

fn master_status(pnn: u32) -> MasterStatus {
    let d = |name: &str, state, pid, restarts, last: Option<&str>| DaemonStatus {
        name: name.into(),
        state,
        pid,
        restarts,
        last_exit: last.map(str::to_string),
    };
    MasterStatus {
        pid: 4100 + pnn * 100,
        model: Model::MultiProcess,
        ready: pnn == 0,
        uptime_ms: 3_723_000,
        daemons: vec![
            d(
                "transportd",
                DaemonState::Running,
                Some(4101 + pnn * 100),
                0,
                None,
            ),
            d(
                "clusterd",
                DaemonState::Running,
                Some(4102 + pnn * 100),
                0,
                None,
            ),
            d(
                "conntrackd",
                DaemonState::Running,
                Some(4107 + pnn * 100),
                1,
                Some("signal: 9 (SIGKILL)"),
            ),
            if pnn == 0 {
                d("failoverd", DaemonState::Running, Some(4104), 0, None)
            } else {
                d(
                    "failoverd",
                    DaemonState::Restarting,
                    None,
                    3,
                    Some("exit status: 1"),
                )
            },
        ],
    }
}

type Flags = std::sync::Arc<std::sync::Mutex<[NodeFlags; 3]>>;

/// clusterd's ADMIN: node 2 is down, node 1 already disabled, node 0
/// already enabled; a change shows in the membership `flags` serves.
fn admin(flags: &Flags, p: &[u8]) -> Result<Vec<u8>, RemoteError> {
    let cmd: AdminCommand =
        decode_payload(p).map_err(|e| RemoteError::new(ErrorCode::BadRequest, e.to_string()))?;
    let outcome = match (cmd.target, cmd.op) {
        (t, _) if t > 2 => {
            return Err(RemoteError::new(
                ErrorCode::BadRequest,
                format!("Node {t} does not exist"),
            ))
        }
        (2, _) => {
            return Err(RemoteError::new(
                ErrorCode::NodeUnreachable,
                "node 2 did not answer the admin command",
            ))
        }
        (1, AdminOp::Disable) | (0, AdminOp::Enable) => AdminOutcome::Already,
        (t, op) => {
            let mut f = flags.lock().unwrap();
            let n = &mut f[t as usize];
            let bits = n.bits();
            *n = NodeFlags::from_bits(match op {
                AdminOp::Disable => bits | NodeFlags::PERMANENTLY_DISABLED.bits(),
                AdminOp::Enable => bits & !NodeFlags::PERMANENTLY_DISABLED.bits(),
                AdminOp::Stop => bits | NodeFlags::STOPPED.bits(),
                AdminOp::Continue => bits & !NodeFlags::STOPPED.bits(),
                AdminOp::Ban { .. } => bits | NodeFlags::BANNED.bits(),
                AdminOp::Unban => bits & !NodeFlags::BANNED.bits(),
                AdminOp::SetLeaderRole { .. } => bits,
            });
            AdminOutcome::Done
        }
    };
    Ok(encode_payload(&outcome).unwrap())
}

/// Node 0 has a problem of every kind; the others have none.
fn ip_status(pnn: u32) -> IpStatus {
    let mut s = IpStatus {
        pnn,
        lease_ok: true,
        hosted: vec![ip("198.51.100.201")],
        ..IpStatus::default()
    };
    if pnn == 0 {
        s.missing = vec![ip("198.51.100.202")];
        s.unexpected = vec![ip("198.51.100.209")];
        s.hook_failures = vec![HookFailureInfo {
            hook: "/etc/ipfailover/events/50.nfs".into(),
            event: "takeip eth1 198.51.100.201 24".into(),
            reason: "exit status 3".into(),
        }];
    }
    s
}

fn tunables(pnn: u32) -> TunableList {
    let t = |name: &str, value: u32| Tunable {
        name: name.into(),
        value,
    };
    TunableList {
        tunables: vec![
            t("NoIPFailback", pnn),
            t("NoIPTakeover", 0),
            t("IPAllocAlgorithm", 2),
        ],
    }
}

fn full_node(pnn: u32) -> Node {
    let flags: Flags = std::sync::Arc::new(std::sync::Mutex::new([
        NodeFlags::OK,
        NodeFlags::PERMANENTLY_DISABLED,
        NodeFlags::DISCONNECTED,
    ]));
    let seen = flags.clone();
    let node = Node::up()
        .func(CLUSTERD, GET_MEMBERSHIP, move |_| {
            let f = *seen.lock().unwrap();
            Ok(encode_payload(&membership_with(pnn, f)).unwrap())
        })
        .func(CLUSTERD, ADMIN, move |p| admin(&flags, p))
        .reply(FAILOVERD, GET_PUBLIC_IPS, &public_ips(pnn))
        .reply(FAILOVERD, GET_IP_STATUS, &ip_status(pnn))
        .reply(FAILOVERD, SET_IFACE_LINK, &())
        .func(FAILOVERD, ADD_IP, |p| {
            let req: AddIp = decode_payload(p).unwrap();
            if req.ifaces.iter().any(|i| i == "eth9") {
                Err(RemoteError::new(
                    ErrorCode::BadRequest,
                    "interface eth9 is not a public interface of node 0",
                ))
            } else {
                Ok(encode_payload(&()).unwrap())
            }
        })
        .reply(FAILOVERD, DEL_IP, &())
        .func(FAILOVERD, MOVE_IP, |p| {
            let req: MoveIp = decode_payload(p).unwrap();
            if req.pnn == 1 {
                Err(RemoteError::new(
                    ErrorCode::Refused,
                    "node 1 cannot host 198.51.100.1 (it is DISABLED)",
                ))
            } else {
                Ok(encode_payload(&()).unwrap())
            }
        })
        .reply(
            FAILOVERD,
            RELOAD_IPS,
            &ReloadSummary {
                added: vec![ip("198.51.100.9")],
                removed: vec![],
                changed: vec![],
            },
        )
        .reply(FAILOVERD, IPREALLOCATE, &654_321u64)
        .reply(FAILOVERD, GRATARP, &())
        .reply(FAILOVERD, TICKLE, &())
        .reply(FAILOVERD, KILLTCP, &1u32)
        .reply(FAILOVERD, GET_TUNABLES, &tunables(pnn))
        .func(FAILOVERD, SET_TUNABLE, |p| {
            let req: SetTunable = decode_payload(p).unwrap();
            if req.value > 2 {
                Err(RemoteError::new(
                    ErrorCode::BadRequest,
                    "Invalid value 7 for IPAllocAlgorithm: it must be 0-2",
                ))
            } else {
                Ok(encode_payload(&SetTunableOutcome::Set).unwrap())
            }
        })
        .reply(CONNTRACKD, GET_CONNECTIONS, &connections(pnn))
        .func(CONNTRACKD, GET_CONNECTIONS_PAGE, move |p| {
            let req: GetConnectionsPage = decode_payload(p).unwrap();
            let all = connections(pnn);
            let (page, more) = page_after(&all, req.after, PAGE_CONNECTIONS);
            Ok(encode_payload(&ConnectionsPage {
                conns: page.to_vec(),
                more,
            })
            .unwrap())
        })
        .reply(CONNTRACKD, ADD_CONNECTIONS, &())
        .reply(CONNTRACKD, REMOVE_CONNECTIONS, &())
        .reply(MASTERD, GET_STATUS, &master_status(pnn))
        .reply(MASTERD, SHUTDOWN, &())
        .reply(
            CLUSTERD,
            GET_SETTINGS,
            &ClusterSettings {
                can_lead: pnn == 0,
                cluster_lock: (pnn == 0).then(|| "/clusterfs/.ipfailover/reclock".to_string()),
            },
        )
        .reply(
            CLUSTERD,
            STATISTICS,
            &statistics(pnn, &["requests_sent", "peer_messages_refused"]),
        )
        .reply(CONNTRACKD, STATISTICS, &statistics(pnn, &["events_sent"]))
        .reply(
            FAILOVERD,
            STATISTICS,
            &statistics(pnn, &["requests_sent", "replies_received"]),
        )
        .reply(
            MASTERD,
            STATISTICS,
            &statistics(pnn, &["controls_answered"]),
        )
        .reply(CLUSTERD, STATISTICS_RESET, &())
        .reply(CONNTRACKD, STATISTICS_RESET, &())
        .reply(FAILOVERD, STATISTICS_RESET, &())
        .reply(MASTERD, STATISTICS_RESET, &())
        .func(CLUSTERD, LOG_LEVEL, support::log_level)
        .func(FAILOVERD, LOG_LEVEL, support::log_level)
        .func(CONNTRACKD, LOG_LEVEL, support::log_level)
        .func(MASTERD, LOG_LEVEL, support::log_level);
    with_hooks(node, pnn)
}

/// The usual cluster: 0 (this node) and 1 up, 2 down.
fn cluster() -> Script {
    let mut s = Script::default();
    s.nodes.insert(0, full_node(0));
    s.nodes.insert(1, full_node(1));
    s.nodes.insert(2, Node::down());
    s
}

/// 2026-12-07 14:50:00 UTC, the scripted clock (the runner sets TZ=UTC).
const NOW_MS: u64 = 1_796_655_000_000;

/// The hooks' last run of `event`: `takeip` ran (one hook failed), the
/// others never ran.
fn hook_status(event: &str) -> HookStatus {
    let run = |name: &str, state: &str, duration_us, output: &str| HookScriptRun {
        name: name.into(),
        state: state.into(),
        begin_unix_ms: NOW_MS - 60_000,
        duration_us,
        output: output.into(),
    };
    match event {
        "takeip" => HookStatus {
            dir_exists: true,
            ran: true,
            scripts: vec![
                run("50.nfs", "OK", 4_200, ""),
                run("60.custom", "ERROR", 12_345, "exit status 3"),
                run("70.off", "DISABLED", 0, ""),
            ],
        },
        "ipreallocated" => HookStatus {
            dir_exists: true,
            ran: true,
            scripts: vec![run("50.nfs", "OK", 1_000, "")],
        },
        _ => HookStatus {
            dir_exists: true,
            ran: false,
            scripts: vec![],
        },
    }
}

/// failoverd's hooks and run times: node 1's last takeover run is still
/// going.
fn with_hooks(node: Node, pnn: u32) -> Node {
    node.func(FAILOVERD, GET_HOOK_STATUS, |p| {
        let event: String = decode_payload(p).unwrap();
        Ok(encode_payload(&hook_status(&event)).unwrap())
    })
    .reply(
        FAILOVERD,
        LIST_HOOKS,
        &HookList {
            dir_exists: true,
            scripts: vec![
                HookScript {
                    name: "50.nfs".into(),
                    enabled: true,
                },
                HookScript {
                    name: "60.custom".into(),
                    enabled: true,
                },
                HookScript {
                    name: "70.off".into(),
                    enabled: false,
                },
            ],
        },
    )
    .func(FAILOVERD, SET_HOOK, |p| {
        let req: SetHook = decode_payload(p).unwrap();
        if ["50.nfs", "60.custom", "70.off"].contains(&req.name.as_str()) {
            Ok(encode_payload(&()).unwrap())
        } else {
            Err(RemoteError::new(
                ErrorCode::BadRequest,
                format!("Script {} does not exist in legacy", req.name),
            ))
        }
    })
    .func(FAILOVERD, RUN_EVENT, |p| {
        let req: RunEvent = decode_payload(p).unwrap();
        let event = req.args.first().cloned().unwrap_or_default();
        Ok(encode_payload(&hook_status(&event)).unwrap())
    })
    .reply(
        FAILOVERD,
        GET_RUN_TIMES,
        &RunTimes {
            now_unix_ms: NOW_MS,
            generation: 654_321,
            changed_unix_ms: Some(NOW_MS - 125_000),
            run_done_unix_ms: (pnn == 0).then_some(NOW_MS - 124_432),
        },
    )
}

/// A nodes file as clusterd gives it: `A,B,#,...` (`#`: deleted), or
/// `!why` for a file it cannot read.
fn nodes_file(spec: &str) -> Result<NodeList, RemoteError> {
    if let Some(why) = spec.strip_prefix('!') {
        return Err(RemoteError::new(ErrorCode::BadRequest, why));
    }
    Ok(NodeList {
        addrs: spec
            .split(',')
            .map(|a| (!a.starts_with('#')).then(|| ip(a)))
            .collect(),
    })
}

/// [`cluster`] whose nodes 0 and 1 read the nodes files `f0` and `f1`;
/// node 1 refuses to reload unless `ok`.
fn reload_cluster(f0: &'static str, f1: &'static str, ok: bool) -> Script {
    let mut s = cluster();
    for (pnn, spec) in [(0, f0), (1, f1)] {
        let node = full_node(pnn).func(CLUSTERD, GET_NODES_FILE, move |_| {
            nodes_file(spec).map(|l| encode_payload(&l).unwrap())
        });
        let node = if pnn == 0 || ok {
            node.reply(CLUSTERD, RELOAD_NODES, &())
        } else {
            node.error(
                CLUSTERD,
                RELOAD_NODES,
                ErrorCode::Refused,
                "Nodes file on node 1 changed while reloading: run reloadnodes again",
            )
        };
        s.nodes.insert(pnn, node);
    }
    s
}

/// Node 1's failoverd and masterd hang.
fn hung_node_1() -> Script {
    let mut s = cluster();
    s.nodes.insert(
        1,
        full_node(1)
            .silent(FAILOVERD, GET_PUBLIC_IPS)
            .silent(FAILOVERD, STATISTICS)
            .silent(FAILOVERD, STATISTICS_RESET)
            .silent(MASTERD, GET_STATUS),
    );
    s
}

/// transportd runs, no daemon has registered.
fn no_daemons() -> Script {
    let mut s = Script::default();
    s.nodes.insert(0, Node::up());
    s
}

/// This node's failoverd hangs.
fn hung_failoverd() -> Script {
    let mut s = cluster();
    s.nodes
        .insert(0, full_node(0).silent(FAILOVERD, GET_PUBLIC_IPS));
    s
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    Cluster,
    /// The cluster, with the nodes files of nodes 0 and 1 as their
    /// clusterd reads them (see [`reload_cluster`]) and whether node 1
    /// takes it.
    Reload(&'static str, &'static str, bool),
    HungNode1,
    NoDaemons,
    HungFailoverd,
    /// No socket at all.
    NoSocket,
    /// A socket nobody answers on.
    Stuck,
    /// A socket file nobody listens on.
    Stale,
}

struct Case {
    name: &'static str,
    setup: Setup,
    args: &'static [&'static str],
    stdin: &'static str,
}

const fn c(name: &'static str, args: &'static [&'static str]) -> Case {
    Case {
        name,
        setup: Setup::Cluster,
        args,
        stdin: "",
    }
}

const fn on(setup: Setup, name: &'static str, args: &'static [&'static str]) -> Case {
    Case {
        name,
        setup,
        args,
        stdin: "",
    }
}

const fn stdin(name: &'static str, args: &'static [&'static str], input: &'static str) -> Case {
    Case {
        name,
        setup: Setup::Cluster,
        args,
        stdin: input,
    }
}

const CASES: &[Case] = &[
    // transportd (round-trip times are replaced by T)
    c("ping", &["ping"]),
    c("ping-n-all", &["-n", "all", "ping"]),
    // clusterd's reading commands
    c("status", &["status"]),
    c("status-X", &["-X", "status"]),
    c("status-x-colon", &["-x", ":", "status"]),
    c("status-json", &["--json", "status"]),
    c("status-n1", &["-n", "1", "status"]),
    c("nodestatus", &["nodestatus"]),
    c("nodestatus-all", &["nodestatus", "all"]),
    c("nodestatus-all-X", &["-X", "nodestatus", "all"]),
    c("nodestatus-all-json", &["--json", "nodestatus", "all"]),
    c("nodestatus-1", &["nodestatus", "1"]),
    c("nodestatus-0,2", &["nodestatus", "0,2"]),
    c("nodestatus-bad-node", &["nodestatus", "5"]),
    c("listnodes", &["listnodes", "--config-dir", "$RUN_DIR/etc"]),
    c(
        "listnodes-X",
        &["-X", "listnodes", "--config-dir", "$RUN_DIR/etc"],
    ),
    c(
        "listnodes-json",
        &["--json", "listnodes", "--config-dir", "$RUN_DIR/etc"],
    ),
    c(
        "listnodes-missing",
        &["listnodes", "--config-dir", "$RUN_DIR/nope"],
    ),
    c("pnn", &["pnn"]),
    c("pnn-X", &["-X", "pnn"]),
    c("pnn-json", &["--json", "pnn"]),
    c("pnn-n-all", &["-n", "all", "pnn"]),
    c("leader", &["leader"]),
    c("leader-X", &["-X", "leader"]),
    c("leader-json", &["--json", "leader"]),
    c("leader-n-all", &["-n", "all", "leader"]),
    c("leader-n-all-X", &["-n", "all", "-X", "leader"]),
    // failoverd's reading commands
    c("ip", &["ip"]),
    c("ip-X", &["-X", "ip"]),
    c("ip-json", &["--json", "ip"]),
    c("ip-v", &["ip", "-v"]),
    c("ip-v-X", &["-X", "ip", "-v"]),
    c("ip-all", &["ip", "all"]),
    c("ip-all-v", &["ip", "-v", "all"]),
    c("ip-all-X", &["-X", "ip", "all"]),
    c("ip-all-json", &["--json", "ip", "all"]),
    c("ip-n1", &["-n", "1", "ip"]),
    c("ip-n-all", &["-n", "all", "ip"]),
    c("ip-n-0,1", &["-n", "0,1", "ip"]),
    c("ip-n-0,1-X", &["-n", "0,1", "-X", "ip"]),
    c("ipinfo", &["ipinfo", "198.51.100.1"]),
    c("ipinfo-X", &["-X", "ipinfo", "198.51.100.1"]),
    c("ipinfo-json", &["--json", "ipinfo", "198.51.100.1"]),
    c("ipinfo-unassigned", &["ipinfo", "198.51.100.2"]),
    c("ipinfo-unknown", &["ipinfo", "198.51.100.99"]),
    c("ipinfo-n-all", &["-n", "all", "ipinfo", "198.51.100.3"]),
    c("ifaces", &["ifaces"]),
    c("ifaces-X", &["-X", "ifaces"]),
    c("ifaces-json", &["--json", "ifaces"]),
    c("ifaces-n-all", &["-n", "all", "ifaces"]),
    c("ifaces-n-all-X", &["-n", "all", "-X", "ifaces"]),
    c("ifaces-n-all-json", &["-n", "all", "--json", "ifaces"]),
    // conntrackd's reading commands
    c("gettickles", &["gettickles", "198.51.100.1"]),
    c("gettickles-X", &["-X", "gettickles", "198.51.100.1"]),
    c("gettickles-json", &["--json", "gettickles", "198.51.100.1"]),
    c("gettickles-port", &["gettickles", "198.51.100.1", "445"]),
    c(
        "gettickles-n-all",
        &["-n", "all", "gettickles", "198.51.100.1"],
    ),
    c(
        "gettickles-n-all-X",
        &["-n", "all", "-X", "gettickles", "198.51.100.1"],
    ),
    // masterd
    c("daemons", &["daemons"]),
    c("daemons-X", &["-X", "daemons"]),
    c("daemons-json", &["--json", "daemons"]),
    c("daemons-n-all", &["-n", "all", "daemons"]),
    c("daemons-n1-restarting", &["-n", "1", "daemons"]),
    c("statistics", &["statistics"]),
    c("statistics-X", &["-X", "statistics"]),
    c("statistics-json", &["--json", "statistics"]),
    c("statistics-n-all", &["-n", "all", "statistics"]),
    c("statistics-n-all-X", &["-n", "all", "-X", "statistics"]),
    c("statisticsreset", &["statisticsreset"]),
    c("statisticsreset-n-0,1", &["-n", "0,1", "statisticsreset"]),
    c("statisticsreset-n-all", &["-n", "all", "statisticsreset"]),
    c("statisticsreset-extra", &["statisticsreset", "0"]),
    c(
        "down-node-statisticsreset-n2",
        &["-n", "2", "statisticsreset"],
    ),
    // reloadnodes (ctdb's tool tests ctdb.reloadnodes.0NN): node 2 is
    // down, node 1 up.
    on(
        Setup::Reload(
            "192.0.2.11,192.0.2.12,192.0.2.13",
            "192.0.2.11,192.0.2.12,192.0.2.13",
            true,
        ),
        "reloadnodes-unchanged",
        &["reloadnodes"],
    ),
    on(
        Setup::Reload(
            "192.0.2.11,192.0.2.12,192.0.2.13,192.0.2.14",
            "192.0.2.11,192.0.2.12,192.0.2.13,192.0.2.14",
            true,
        ),
        "reloadnodes-new",
        &["reloadnodes"],
    ),
    on(
        Setup::Reload(
            "192.0.2.11,192.0.2.12,#192.0.2.13",
            "192.0.2.11,192.0.2.12,#192.0.2.13",
            true,
        ),
        "reloadnodes-delete-disconnected",
        &["reloadnodes"],
    ),
    on(
        Setup::Reload(
            "192.0.2.11,#192.0.2.12,192.0.2.13",
            "192.0.2.11,#192.0.2.12,192.0.2.13",
            true,
        ),
        "reloadnodes-delete-connected",
        &["reloadnodes"],
    ),
    on(
        Setup::Reload(
            "192.0.2.11,192.0.2.12,192.0.2.99",
            "192.0.2.11,192.0.2.12,192.0.2.99",
            true,
        ),
        "reloadnodes-changed-address",
        &["reloadnodes"],
    ),
    on(
        Setup::Reload("192.0.2.11,192.0.2.12", "192.0.2.11,192.0.2.12", true),
        "reloadnodes-missing",
        &["reloadnodes"],
    ),
    on(
        Setup::Reload(
            "192.0.2.11,192.0.2.12,192.0.2.13,192.0.2.14",
            "192.0.2.11,192.0.2.12,192.0.2.13",
            true,
        ),
        "reloadnodes-differs",
        &["reloadnodes"],
    ),
    on(
        Setup::Reload(
            "192.0.2.11,192.0.2.12,192.0.2.13",
            "!/etc/ipfailover/nodes:2: not a node address: 192.0.2.x",
            true,
        ),
        "reloadnodes-bad-file-node1",
        &["reloadnodes"],
    ),
    on(
        Setup::Reload(
            "192.0.2.11,192.0.2.12,192.0.2.13,192.0.2.14",
            "192.0.2.11,192.0.2.12,192.0.2.13,192.0.2.14",
            false,
        ),
        "reloadnodes-node1-fails",
        &["reloadnodes"],
    ),
    c("reloadnodes-extra", &["reloadnodes", "all"]),
    c("getdebug", &["getdebug"]),
    // hooks as ctdb's event scripts, uptime
    c("event-status", &["event", "status", "legacy", "takeip"]),
    c(
        "event-status-never",
        &["event", "status", "legacy", "releaseip"],
    ),
    c(
        "event-status-bad-component",
        &["event", "status", "nfs", "takeip"],
    ),
    c("event-script-list", &["event", "script", "list", "legacy"]),
    c(
        "event-script-disable",
        &["event", "script", "disable", "legacy", "60.custom"],
    ),
    c(
        "event-script-enable-unknown",
        &["event", "script", "enable", "legacy", "99.none"],
    ),
    c(
        "event-run",
        &["event", "run", "10", "legacy", "ipreallocated"],
    ),
    c(
        "event-run-failed",
        &[
            "event",
            "run",
            "10",
            "legacy",
            "takeip",
            "eth1",
            "198.51.100.1",
            "24",
        ],
    ),
    c("scriptstatus", &["scriptstatus"]),
    c("scriptstatus-takeip", &["scriptstatus", "takeip"]),
    c("uptime", &["uptime"]),
    c("uptime-n1-in-progress", &["-n", "1", "uptime"]),
    c("setdebug", &["setdebug", "DEBUG"]),
    c("setdebug-n1-number", &["-n", "1", "setdebug", "2"]),
    c("setdebug-invalid", &["setdebug", "LOUD"]),
    c("reloadnodes-n-all", &["-n", "all", "reloadnodes"]),
    // actions: no output; the request log shows what went where
    c("setifacelink", &["setifacelink", "eth2", "down"]),
    c("addip", &["addip", "198.51.100.9/24", "eth1,eth2"]),
    c("addip-refused", &["addip", "198.51.100.9/24", "eth9"]),
    c("delip", &["delip", "198.51.100.3"]),
    c("moveip", &["moveip", "198.51.100.1", "0"]),
    c("moveip-refused", &["moveip", "198.51.100.1", "1"]),
    c("reloadips", &["reloadips"]),
    c("reloadips-0,1", &["reloadips", "0,1"]),
    c("reloadips-0,2-down", &["reloadips", "0,2"]),
    c("addip-known", &["addip", "198.51.100.1/24", "eth1"]),
    c("delip-unknown", &["delip", "198.51.100.99"]),
    c("ipreallocate", &["ipreallocate"]),
    c("sync", &["sync"]),
    c("gratarp", &["gratarp", "198.51.100.1", "eth1"]),
    c(
        "tickle",
        &["tickle", "203.0.113.7:40000", "198.51.100.1:445"],
    ),
    stdin(
        "tickle-stdin",
        &["tickle"],
        "203.0.113.7:40000 198.51.100.1:445\n203.0.113.8:40001 198.51.100.1:2049\n",
    ),
    c(
        "killtcp",
        &["killtcp", "eth1", "203.0.113.7:40000", "198.51.100.1:445"],
    ),
    c(
        "addtickle",
        &["addtickle", "203.0.113.9:40002", "198.51.100.1:445"],
    ),
    c(
        "deltickle",
        &["deltickle", "203.0.113.9:40002", "198.51.100.1:445"],
    ),
    stdin(
        "addtickle-stdin",
        &["addtickle"],
        "203.0.113.9:40002 198.51.100.1:445\n\n[2001:db8::9]:40003 [2001:db8::1]:445\n",
    ),
    c("disable", &["disable"]),
    c("disable-already", &["-n", "1", "disable"]),
    c("enable-already", &["enable"]),
    c("stop", &["stop"]),
    c("continue", &["continue"]),
    c("ban", &["ban", "30"]),
    c("unban", &["unban"]),
    c("stop-n-0,1", &["-n", "0,1", "stop"]),
    c("stop-n-all", &["-n", "all", "stop"]),
    c("stop-bad-node", &["-n", "7", "stop"]),
    // tunables
    c("listvars", &["listvars"]),
    c("listvars-X", &["-X", "listvars"]),
    c("listvars-json", &["--json", "listvars"]),
    c("listvars-n-all", &["-n", "all", "listvars"]),
    c("getvar", &["getvar", "noipfailback"]),
    c("getvar-n1", &["-n", "1", "getvar", "NoIPFailback"]),
    c("getvar-unknown", &["getvar", "MonitorInterval"]),
    c("getvar-obsolete", &["getvar", "NoIPHostOnAllDisabled"]),
    c("setvar", &["setvar", "NoIPFailback", "1"]),
    c(
        "setvar-n1-hex",
        &["-n", "1", "setvar", "IPAllocAlgorithm", "0x1"],
    ),
    c("setvar-unknown", &["setvar", "RecoverTimeout", "30"]),
    c("setvar-bad-value", &["setvar", "NoIPFailback", "yes"]),
    c("setvar-refused", &["setvar", "IPAllocAlgorithm", "7"]),
    // node commands
    c("version", &["version"]),
    // checktcpport needs no daemon; its bind test is a unit test
    // (cli/src/node.rs), these are the argument errors.
    c("checktcpport-missing", &["checktcpport"]),
    c("checktcpport-bad-port", &["checktcpport", "65536"]),
    c("getpid", &["getpid"]),
    c("runstate", &["runstate"]),
    c("runstate-running", &["runstate", "startup", "running"]),
    c("runstate-n1-not-setup", &["-n", "1", "runstate", "setup"]),
    c("runstate-invalid", &["runstate", "dancing"]),
    c("shutdown-n1", &["-n", "1", "shutdown"]),
    c("getcapabilities", &["getcapabilities"]),
    c("setleaderrole-off", &["setleaderrole", "off"]),
    c("setleaderrole-bad", &["setleaderrole", "maybe"]),
    c(
        "getcapabilities-n1-X",
        &["-n", "1", "-X", "getcapabilities"],
    ),
    c("getreclock", &["getreclock"]),
    c("getreclock-n1-none", &["-n", "1", "getreclock"]),
    c("shutdown-n2-down", &["-n", "2", "shutdown"]),
    c("down-node-disable-n2", &["-n", "2", "disable"]),
    c("down-node-status-n2", &["-n", "2", "status"]),
    c("down-node-delip-n2", &["-n", "2", "delip", "198.51.100.1"]),
    // the offline planner (CTDB's takeover-test input and output)
    stdin(
        "ipalloc",
        &["ipalloc", "--node-states", "0,0,0x20"],
        "198.51.100.1 -1\n198.51.100.2 -1\n198.51.100.3 -1\n198.51.100.4 2\n",
    ),
    stdin(
        "ipalloc-bad-input",
        &["ipalloc", "--node-states", "0,0"],
        "198.51.100.1 7\n",
    ),
    // bad arguments: checked before anything is contacted
    c("no-command", &[]),
    c("unknown-command", &["frobnicate"]),
    c("ip-bad-argument", &["ip", "some"]),
    c("ipinfo-bad-address", &["ipinfo", "198.51.100"]),
    c("ipinfo-missing", &["ipinfo"]),
    c("moveip-bad-pnn", &["moveip", "198.51.100.1", "x"]),
    c("moveip-missing-pnn", &["moveip", "198.51.100.1"]),
    c("ban-missing", &["ban"]),
    c("ban-zero", &["ban", "0"]),
    c("ban-negative", &["ban", "-5"]),
    c("bad-n", &["-n", "one", "ip"]),
    c("bad-timeout", &["-t", "0", "ip"]),
    c("addip-no-prefix", &["addip", "198.51.100.9", "eth1"]),
    c("addip-long-prefix", &["addip", "198.51.100.9/33", "eth1"]),
    c(
        "setifacelink-bad-state",
        &["setifacelink", "eth1", "sideways"],
    ),
    c("tickle-one-endpoint", &["tickle", "203.0.113.7:40000"]),
    stdin("tickle-bad-stdin", &["tickle"], "203.0.113.7:40000\n"),
    c(
        "gettickles-bad-port",
        &["gettickles", "198.51.100.1", "99999"],
    ),
    c(
        "addtickle-bad-endpoint",
        &["addtickle", "203.0.113.9", "198.51.100.1:445"],
    ),
    c(
        "action-n-all",
        &["-n", "all", "addip", "198.51.100.9/24", "eth1"],
    ),
    c("nodestatus-bad-list", &["nodestatus", "0,x"]),
    c("unknown-option", &["-q", "status"]),
    c("extra-argument", &["pnn", "3"]),
    c("json-and-X", &["--json", "-X", "ip"]),
    // ctdb's global options: -Y, -d, -T, --timelimit
    c("Y-status", &["-Y", "status"]),
    c(
        "d-T-timelimit",
        &["-d", "NOTICE", "-T", "30", "--timelimit", "5", "pnn"],
    ),
    on(
        Setup::Stuck,
        "maxruntime",
        &["-T", "1", "-t", "5", "status"],
    ),
    // daemons absent or hung
    on(Setup::NoSocket, "no-transportd-status", &["status"]),
    on(Setup::NoSocket, "no-transportd-ip", &["ip"]),
    on(Setup::Stuck, "stuck-transportd", &["-t", "0.5", "status"]),
    on(Setup::Stale, "stale-socket", &["ifaces"]),
    on(Setup::NoDaemons, "no-clusterd", &["status"]),
    on(Setup::NoDaemons, "no-failoverd", &["ip"]),
    on(
        Setup::NoDaemons,
        "no-conntrackd",
        &["gettickles", "198.51.100.1"],
    ),
    on(Setup::NoDaemons, "no-masterd", &["daemons"]),
    on(Setup::NoDaemons, "no-daemons-statistics", &["statistics"]),
    on(Setup::NoDaemons, "no-clusterd-disable", &["disable"]),
    on(Setup::HungFailoverd, "hung-failoverd", &["-t", "1", "ip"]),
    on(
        Setup::HungNode1,
        "hung-node-ip-all",
        &["-t", "1", "ip", "all"],
    ),
    on(
        Setup::HungNode1,
        "hung-node-ifaces-n-all",
        &["-t", "1", "-n", "all", "ifaces"],
    ),
    on(
        Setup::HungNode1,
        "hung-node-statistics-n1",
        &["-t", "1", "-n", "1", "statistics"],
    ),
    on(
        Setup::HungNode1,
        "hung-node-statisticsreset-n1",
        &["-t", "1", "-n", "1", "statisticsreset"],
    ),
    on(
        Setup::NoDaemons,
        "no-daemons-statisticsreset",
        &["statisticsreset"],
    ),
    on(
        Setup::HungNode1,
        "hung-node-daemons-n-all-json",
        &["-t", "1", "-n", "all", "--json", "daemons"],
    ),
    c("down-node-ip-n2", &["-n", "2", "ip"]),
    c("no-such-node-ip", &["-n", "5", "ip"]),
    c("no-such-node-status", &["-n", "5", "status"]),
    c(
        "no-such-node-gettickles",
        &["-n", "0,5", "gettickles", "198.51.100.1"],
    ),
    c(
        "no-such-node-gratarp",
        &["-n", "5", "gratarp", "198.51.100.1", "eth1"],
    ),
];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Runs one case and renders the transcript that goes in its golden file.
fn transcript(case: &Case, base: &Path) -> String {
    let run_dir = base.join(case.name);
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(run_dir.join("etc")).unwrap();
    std::fs::write(
        run_dir.join("etc/nodes"),
        "192.0.2.11\n192.0.2.12\n#192.0.2.99\n192.0.2.13\n",
    )
    .unwrap();
    let mut fake = None;
    let mut stuck = None;
    match case.setup {
        Setup::Cluster => fake = Some(Fake::start(&run_dir, cluster(), describe)),
        Setup::Reload(f0, f1, ok) => {
            fake = Some(Fake::start(&run_dir, reload_cluster(f0, f1, ok), describe));
        }
        Setup::HungNode1 => fake = Some(Fake::start(&run_dir, hung_node_1(), describe)),
        Setup::NoDaemons => fake = Some(Fake::start(&run_dir, no_daemons(), describe)),
        Setup::HungFailoverd => fake = Some(Fake::start(&run_dir, hung_failoverd(), describe)),
        Setup::NoSocket => {}
        Setup::Stuck => stuck = Some(support::stuck_socket(&run_dir)),
        Setup::Stale => support::stale_socket(&run_dir),
    }
    let rd = run_dir.display().to_string();
    let args: Vec<String> = case
        .args
        .iter()
        .map(|a| a.replace("$RUN_DIR", &rd))
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipfailover"))
        .arg("--run-dir")
        .arg(&run_dir)
        .args(&args)
        .env_remove("CTDB_TIMEOUT")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .env_remove("CLICOLOR_FORCE")
        .env("NO_COLOR", "1")
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(case.stdin.as_bytes()).unwrap();
    drop(input);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}: ipfailover hung for {HANG_LIMIT:?}", case.name);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    let log = fake.as_ref().map(Fake::take_log).unwrap_or_default();
    drop(fake);
    drop(stuck);
    let _ = std::fs::remove_dir_all(&run_dir);
    let clean = |b: &[u8]| {
        let s = String::from_utf8_lossy(b).replace(&rd, "$RUN_DIR");
        // ping's round-trip time is the one figure that is not scripted.
        s.lines()
            .map(|l| match (l.find(" time="), l.find(" sec")) {
                (Some(a), Some(b)) if a < b => format!("{} time=T{}\n", &l[..a], &l[b..]),
                _ => format!("{l}\n"),
            })
            .collect::<String>()
    };
    let mut t = format!("$ ipfailover {}\n", case.args.join(" "));
    if !case.stdin.is_empty() {
        t.push_str("--- stdin\n");
        t.push_str(case.stdin);
    }
    t.push_str(&format!(
        "--- exit status {}\n--- stdout\n{}--- stderr\n{}--- requests\n",
        status
            .code()
            .map_or_else(|| "signal".to_string(), |c| c.to_string()),
        clean(&out.stdout),
        clean(&out.stderr),
    ));
    for line in log {
        t.push_str(&line);
        t.push('\n');
    }
    t
}

/// A line diff (longest common subsequence): `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[test]
fn every_command_matches_its_golden_file() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let base = std::env::temp_dir().join(format!("ipf-golden-{}", std::process::id()));
    let mut failures = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for case in CASES {
        assert!(names.insert(case.name), "duplicate case {}", case.name);
        let actual = transcript(case, &base);
        let file = golden_dir().join(format!("{}.txt", case.name));
        if update {
            std::fs::write(&file, &actual).unwrap();
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}: output differs from {} (- expected, + actual):\n{}",
                case.name,
                file.display(),
                diff(&expected, &actual)
            )),
            Err(e) => failures.push(format!(
                "{}: cannot read {}: {e} (run with UPDATE_GOLDEN=1 to create it)\nactual:\n{actual}",
                case.name,
                file.display()
            )),
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    // Every golden file belongs to a case (no stale files).
    if !update {
        for entry in std::fs::read_dir(golden_dir()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().to_string();
            let stem = name.trim_end_matches(".txt");
            if !names.contains(stem) {
                failures.push(format!("{name}: golden file without a case"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
