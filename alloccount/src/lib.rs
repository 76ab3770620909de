//! The workspace's one counting global allocator: the system allocator,
//! counting. transportd installs it to report `allocations` in its
//! STATISTICS; the benchmark, the no-allocation tests and the fuzz harness
//! install it in their test binaries. Std only, so any crate can take it as a
//! (dev-)dependency.
//!
//! Install it with
//! `#[global_allocator] static A: alloccount::Counting = alloccount::Counting;`.
//! In a process that does not, every counter stays 0 ([`is_installed`]
//! tells).
//!
//! What it counts, for every allocation and reallocation:
//!
//! * process-wide: [`allocations`] and [`live_bytes`] (two relaxed atomic
//!   additions);
//! * per thread, so that tests running in parallel in one binary do not see
//!   each other: [`thread_allocations`] and the live-byte peak that
//!   [`peak_of`] measures;
//! * on the threads that called [`track_thread`]: [`tracked_allocations`]
//!   (for a test that counts a daemon's threads and not the rest).
//!
//! Sizes are the sizes *requested*; malloc's own per-block overhead is not
//! included.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static TRACKED_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised without destructors: touching them inside the
    // allocator never allocates, and `try_with` copes with thread teardown.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

/// The counting wrapper around the system allocator.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

fn to_isize(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

/// One allocation (or reallocation) of `grow` more bytes on this thread.
fn counted(grow: isize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    let _ = ALLOCS.try_with(|a| a.set(a.get().wrapping_add(1)));
    if TRACKED.try_with(Cell::get).unwrap_or(false) {
        TRACKED_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
    thread_live(grow);
}

fn thread_live(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let live = l.get().saturating_add(delta);
        l.set(live);
        if delta > 0 {
            let _ = PEAK.try_with(|p| p.set(p.get().max(live)));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only updates counters (atomics and const thread-locals that
// never allocate), so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which
        // is `System::alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            counted(to_isize(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            counted(to_isize(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (hence by `System`)
        // with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        thread_live(-to_isize(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which
        // is `System::realloc`'s.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            counted(to_isize(new_size).saturating_sub(to_isize(layout.size())));
        }
        p
    }
}

/// Allocations and reallocations made so far in this process.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Bytes currently allocated in this process.
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Allocations and reallocations made so far by the calling thread.
pub fn thread_allocations() -> u64 {
    ALLOCS.try_with(Cell::get).unwrap_or(0)
}

/// Counts (or stops counting) the calling thread's allocations in
/// [`tracked_allocations`].
pub fn track_thread(on: bool) {
    let _ = TRACKED.try_with(|t| t.set(on));
}

/// Allocations and reallocations made so far by threads while tracked
/// ([`track_thread`]).
pub fn tracked_allocations() -> u64 {
    TRACKED_ALLOCATIONS.load(Ordering::Relaxed)
}

/// Runs `f` and returns its result and the peak of bytes it had allocated at
/// once on this thread (beyond what was live before).
pub fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.try_with(Cell::get).unwrap_or(0);
    let _ = PEAK.try_with(|p| p.set(start));
    let r = f();
    let peak = PEAK
        .try_with(Cell::get)
        .unwrap_or(start)
        .saturating_sub(start);
    (r, usize::try_from(peak).unwrap_or(0))
}

/// Whether [`Counting`] is the global allocator of this process.
pub fn is_installed() -> bool {
    let before = thread_allocations();
    drop(std::hint::black_box(Box::new([0u8; 64])));
    thread_allocations() != before
}
