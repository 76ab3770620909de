//! Rule as a test: once a cluster is steady, sending and handling heartbeats
//! allocates nothing (a counting global allocator watches the member calls).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clusterd::{ClusterMsg, Config, Member, NodesFile, Output, Pnn, Timing};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    for round in 0..600 {
        if round == 300 {
            COUNTING.store(true, Ordering::SeqCst);
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
    COUNTING.store(false, Ordering::SeqCst);
    assert!(
        members[N - 1].membership().leader == Some(0),
        "cluster formed"
    );
    assert_eq!(publishes, 0, "steady state publishes nothing new");
    assert!(sent >= 300 / 10 * N * (N - 1), "heartbeats flowed: {sent}");
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations while heartbeating"
    );
}
