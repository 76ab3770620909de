//! The allocator counts what it should: installed here, it must see a known
//! allocation, per thread and process-wide, and a known peak.

#[global_allocator]
static A: alloccount::Counting = alloccount::Counting;

#[test]
fn counts_allocations_bytes_and_peaks() {
    assert!(alloccount::is_installed());
    let (t0, p0) = (alloccount::thread_allocations(), alloccount::allocations());
    let v = std::hint::black_box(vec![0u8; 10_000]);
    assert!(alloccount::live_bytes() >= 10_000);
    assert_eq!(alloccount::thread_allocations() - t0, 1);
    assert!(alloccount::allocations() > p0);
    drop(v);

    let ((), peak) = alloccount::peak_of(|| {
        let a = std::hint::black_box(vec![0u8; 4000]);
        drop(a);
        let b = std::hint::black_box(vec![0u8; 1000]);
        drop(b);
    });
    assert_eq!(peak, 4000);

    let n = 10_000u64;
    let before = alloccount::tracked_allocations();
    std::thread::spawn(move || {
        alloccount::track_thread(true);
        for i in 0..n {
            drop(std::hint::black_box(Box::new(i)));
        }
        alloccount::track_thread(false);
    })
    .join()
    .unwrap();
    assert!(alloccount::tracked_allocations() - before >= n);
    // This thread, untracked, adds nothing (the binary runs this test only).
    let before = alloccount::tracked_allocations();
    drop(std::hint::black_box(Box::new(1u64)));
    let after = alloccount::tracked_allocations();
    assert_eq!(after, before, "an untracked thread counted");
}
