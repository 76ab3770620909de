//! The daemon (`clusterd::daemon::run`) over the real transport client, with
//! in-process routers instead of transportd: membership forms, MEMBERSHIP is
//! broadcast locally and re-sent every second, GET_MEMBERSHIP and ADMIN are
//! answered (ADMIN forwarded to the target node), a peer message with a
//! forged sender is dropped, a cut link disconnects the node, and the
//! configuration is read from a directory.

use std::path::Path;
use std::time::{Duration, Instant};

use clusterd::daemon::{self, Settings, PEER};
use clusterd::membership::{Config, Timing};
use clusterd::msg::{ClusterMsg, Heartbeat};
use clusterd::{Membership, NodeFlags, NodesFile};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use transport::client::{Client, ClientError};
use transport::msg::cluster::{
    AdminCommand, AdminOp, AdminOutcome, ADMIN, GET_MEMBERSHIP, MEMBERSHIP,
};
use transport::proto::service::CLUSTERD;
use transport::proto::{Address, ErrorCode};
use transport::router::Router;

const T: Duration = Duration::from_secs(5);

fn settings(n: usize, pnn: u32) -> Settings {
    let text: String = (0..n).map(|i| format!("192.0.2.{}\n", 10 + i)).collect();
    Settings {
        member: Config {
            timing: daemon::timing(Duration::from_millis(20), Duration::from_millis(100)),
            lock: false,
            can_lead: true,
        },
        nodes: NodesFile::parse(Path::new("nodes"), &text).unwrap(),
        pnn,
        lock: None,
        health: None,
        socket: "unused".into(),
        log_level: "off".into(),
        state_file: None,
    }
}

struct Cluster {
    routers: Vec<Router>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), daemon::DaemonError>>>,
}

async fn start(n: u32) -> Cluster {
    let routers = Router::cluster(n);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for r in &routers {
        let (client, incoming) = r.connect("clusterd").await.unwrap();
        let mut rx = stop_rx.clone();
        let s = settings(usize::try_from(n).unwrap(), r.pnn());
        tasks.push(tokio::spawn(daemon::run(s, client, incoming, async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    Cluster {
        routers,
        stop,
        tasks,
    }
}

impl Cluster {
    async fn shutdown(self) {
        self.stop.send(true).unwrap();
        for t in self.tasks {
            t.await.unwrap().unwrap();
        }
    }
}

async fn get(c: &Client, pnn: u32) -> Result<Membership, ClientError> {
    c.request(Address::new(pnn, CLUSTERD), GET_MEMBERSHIP, &(), T)
        .await
}

async fn wait(c: &Client, pnn: u32, what: &str, f: impl Fn(&Membership) -> bool) -> Membership {
    let start = Instant::now();
    loop {
        if let Ok(m) = get(c, pnn).await {
            if f(&m) {
                return m;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}: last {m:?}"
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: no answer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn all_ok(m: &Membership) -> bool {
    m.lease_ok && m.leader == Some(0) && m.nodes.iter().all(|n| n.flags.is_ok())
}

#[tokio::test]
async fn membership_forms_and_is_broadcast_and_answered() {
    let c = start(3).await;
    let (probe, mut incoming) = c.routers[1].connect("probe").await.unwrap();
    probe.subscribe(MEMBERSHIP).await.unwrap();
    let m = wait(&probe, 1, "converged", all_ok).await;
    assert_eq!(m.this_node, 1);
    // GET_MEMBERSHIP to a remote node's clusterd, through the routers.
    let m2 = wait(&probe, 2, "node 2 converged", all_ok).await;
    assert_eq!(m2.this_node, 2);
    // Without any change, MEMBERSHIP is re-sent every second (a generous
    // 3 s bound per event, for a loaded machine).
    while incoming.try_recv().is_some() {}
    let start = Instant::now();
    let mut seen = 0;
    while seen < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(3), incoming.recv())
            .await
            .expect("a MEMBERSHIP event within 3 s")
            .unwrap();
        assert_eq!(msg.header.opcode, MEMBERSHIP);
        let ev: Membership = msg.decode_payload().unwrap();
        assert_eq!(ev.this_node, 1);
        seen += 1;
    }
    eprintln!("two unchanged MEMBERSHIP events in {:?}", start.elapsed());
    c.shutdown().await;
}

#[tokio::test]
async fn admin_is_forwarded_to_the_target_and_answered() {
    let c = start(3).await;
    let (probe, _in) = c.routers[0].connect("probe").await.unwrap();
    wait(&probe, 0, "converged", all_ok).await;
    let admin = |target, op| {
        let probe = probe.clone();
        async move {
            probe
                .request::<_, AdminOutcome>(
                    Address::local(CLUSTERD),
                    ADMIN,
                    &AdminCommand { target, op },
                    T,
                )
                .await
        }
    };
    assert_eq!(
        admin(2, AdminOp::Disable).await.unwrap(),
        AdminOutcome::Done
    );
    assert_eq!(
        admin(2, AdminOp::Disable).await.unwrap(),
        AdminOutcome::Already
    );
    wait(&probe, 1, "node 1 sees 2 disabled", |m| {
        m.flags(2) == Some(NodeFlags::PERMANENTLY_DISABLED)
    })
    .await;
    assert_eq!(
        admin(0, AdminOp::Ban { seconds: 0 }).await.unwrap(),
        AdminOutcome::Invalid
    );
    match admin(9, AdminOp::Stop).await {
        Err(ClientError::Remote { error, .. }) => {
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert_eq!(error.message, "Node 9 does not exist");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(admin(2, AdminOp::Enable).await.unwrap(), AdminOutcome::Done);
    wait(&probe, 0, "node 2 enabled", all_ok).await;
    // An unknown request is refused, not left to time out.
    let r: Result<(), _> = probe
        .request(Address::local(CLUSTERD), 0x0001_7777, &(), T)
        .await;
    match r {
        Err(ClientError::Remote { error, .. }) => assert_eq!(error.code, ErrorCode::UnknownOpcode),
        other => panic!("expected UnknownOpcode, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test]
async fn forged_sender_is_dropped_and_a_cut_node_disconnects() {
    let c = start(3).await;
    let (probe, _in) = c.routers[0].connect("probe").await.unwrap();
    wait(&probe, 0, "converged", all_ok).await;
    // A client on node 0 claims to be node 1 and tells the leader (node 0)
    // that it is STOPPED: the frame's source is node 0, so it is dropped.
    let forged = ClusterMsg::Heartbeat(Heartbeat {
        from: 1,
        to: 0,
        stamp: Duration::from_secs(1_000_000),
        echo: None,
        echo_incarnation: 0,
        grant: false,
        expired: clusterd::msg::NodeSet::EMPTY,
        incarnation: 1,
        flags: NodeFlags::STOPPED,
        can_lead: true,
        supports: Some(0),
        active_leader: false,
        generation: 0,
        nodes: clusterd::msg::NodeSet::EMPTY,
        also: clusterd::msg::NodeSet::EMPTY,
    });
    for _ in 0..5 {
        probe
            .event(Address::new(0, CLUSTERD), PEER, &forged)
            .await
            .unwrap();
    }
    // The same from a client on node 1 (right PNN, but not clusterd).
    let (probe1, _in1) = c.routers[1].connect("probe").await.unwrap();
    for _ in 0..5 {
        probe1
            .event(Address::new(0, CLUSTERD), PEER, &forged)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = get(&probe, 0).await.unwrap();
    assert_eq!(m.flags(1), Some(NodeFlags::OK), "{m:?}");
    // Cut node 2 off: the others see it DISCONNECTED, it loses its lease.
    Router::unlink(&c.routers[0], &c.routers[2]);
    Router::unlink(&c.routers[1], &c.routers[2]);
    wait(&probe, 0, "node 2 disconnected", |m| {
        m.flags(2)
            .is_some_and(|f| f.contains(NodeFlags::DISCONNECTED))
            && m.lease_ok
    })
    .await;
    let (probe2, _in2) = c.routers[2].connect("probe").await.unwrap();
    wait(&probe2, 2, "node 2 loses its lease", |m| !m.lease_ok).await;
    c.shutdown().await;
}

#[test]
fn timing_matches_the_profiles() {
    assert_eq!(
        daemon::timing(Duration::from_millis(100), Duration::from_millis(500)),
        Timing::default_profile()
    );
    assert_eq!(
        daemon::timing(Duration::from_millis(10), Duration::from_millis(30)),
        Timing::fast()
    );
}

#[test]
fn settings_are_read_from_the_config_dir() {
    let dir = std::env::temp_dir().join(format!("clusterd-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nodes"), "192.0.2.10\n#192.0.2.11\n192.0.2.12\n").unwrap();
    std::fs::write(
        dir.join("ipfailover.toml"),
        "[cluster]\nprofile = \"fast\"\ncluster_lock = \"!/bin/lockhelper a b\"\nhealth_command = \"/bin/check x\"\nleader_capability = false\n\n[transport]\nrun_dir = \"/tmp/ipf-run\"\n",
    )
    .unwrap();
    let local = [
        "198.51.100.1".parse().unwrap(),
        "192.0.2.12".parse().unwrap(),
    ];
    let s = Settings::load(&dir, Some(&local)).unwrap();
    assert_eq!(s.pnn, 2);
    assert_eq!(s.member.timing, Timing::fast());
    assert!(s.member.lock && !s.member.can_lead);
    let lock = s.lock.unwrap();
    assert_eq!(lock.program, Path::new("/bin/lockhelper"));
    assert_eq!(lock.args, ["a", "b"]);
    assert_eq!(s.health.unwrap().args, ["x"]);
    assert_eq!(s.socket, Path::new("/tmp/ipf-run/transport.sock"));
    // A deleted node's address does not match; an explicit deleted PNN fails.
    let e = Settings::load(&dir, Some(&["192.0.2.11".parse().unwrap()])).unwrap_err();
    assert!(
        e.to_string().contains("none of this host's addresses"),
        "{e}"
    );
    std::fs::write(dir.join("ipfailover.toml"), "[cluster]\npnn = 1\n").unwrap();
    let e = Settings::load(&dir, Some(&local)).unwrap_err();
    assert!(
        e.to_string()
            .contains("ipfailover.toml:2:1: pnn = 1: not a node of"),
        "{e}"
    );
    std::fs::write(
        dir.join("ipfailover.toml"),
        "[cluster]\ncluster_lock = \"!\"\n",
    )
    .unwrap();
    let e = Settings::load(&dir, Some(&local)).unwrap_err();
    assert!(
        e.to_string().contains("ipfailover.toml:2:1: cluster_lock"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
