//! Rule as a test: once a cluster is steady, sending and handling heartbeats
//! allocates nothing (a counting global allocator watches the member calls).

use std::path::Path;
use std::time::Duration;

use clusterd::{ClusterMsg, Config, Member, NodesFile, Output, Pnn, Timing};

// Counts per thread: the member calls all run on the test thread.
#[global_allocator]
static GLOBAL: alloccount::Counting = alloccount::Counting;

#[test]
fn steady_heartbeats_allocate_nothing() {
    const N: usize = 8;
    let text: String = (1..=N).map(|i| format!("192.0.2.{i}\n")).collect();
    let file = NodesFile::parse(Path::new("nodes"), &text).unwrap();
    let cfg = Config {
        timing: Timing::fast(),
        ..Config::default()
    };
    let mut members: Vec<Member> = (0..N)
        .map(|i| Member::new(cfg, &file, Pnn::try_from(i).unwrap(), Duration::ZERO).unwrap())
        .collect();
    // Per-node output buffers and one inbox, reused (their capacity grows
    // during warm-up only).
    let mut outs: Vec<Vec<Output>> = (0..N).map(|_| Vec::with_capacity(4 * N)).collect();
    let mut inbox: Vec<(usize, ClusterMsg)> = Vec::with_capacity(4 * N * N);
    let mut now = Duration::ZERO;
    let mut publishes = 0usize;
    let mut sent = 0usize;
    let mut counted_from = None;
    for round in 0..600 {
        if round == 300 {
            counted_from = Some(alloccount::thread_allocations());
            publishes = 0;
            sent = 0;
        }
        now += Duration::from_millis(1);
        for (i, m) in members.iter_mut().enumerate() {
            m.tick(now, &mut outs[i]);
        }
        for out in &mut outs {
            for o in out.drain(..) {
                match o {
                    Output::Send { to, msg } => {
                        sent += 1;
                        inbox.push((usize::try_from(to).unwrap(), msg));
                    }
                    Output::Publish(_) => publishes += 1,
                    _ => {}
                }
            }
        }
        for (to, msg) in inbox.drain(..) {
            members[to].receive(now, &msg, &mut outs[to]);
        }
    }
    let allocs = counted_from.map(|c| alloccount::thread_allocations() - c);
    assert!(
        members[N - 1].membership().leader == Some(0),
        "cluster formed"
    );
    assert_eq!(publishes, 0, "steady state publishes nothing new");
    assert!(sent >= 300 / 10 * N * (N - 1), "heartbeats flowed: {sent}");
    assert_eq!(allocs, Some(0), "allocations while heartbeating");
}
