//! A counting global allocator for the benchmark binary: live bytes and the
//! number of allocations, as `pub static` counters that any scenario can read
//! (`bench conntrack` uses them for bytes per connection).
//!
//! It counts the sizes *requested* from the system allocator, so malloc's own
//! per-block overhead is not included (scenarios may report RSS beside it).
//! The bench binary installs it with
//! `#[global_allocator] static A: tests::alloc_count::Counting = tests::alloc_count::Counting;`;
//! elsewhere the counters stay at zero ([`is_counting`] tells). The cost is
//! two relaxed atomic additions per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes currently allocated through [`Counting`].
pub static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// Allocations made through [`Counting`] (reallocations count once more).
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The counting wrapper around the system allocator.
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only updates counters, so `System`'s guarantees carry over.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is
        // `System::alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (hence by `System`)
        // with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which
        // is `System::realloc`'s.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

/// Bytes currently allocated (0 if [`Counting`] is not installed).
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Whether [`Counting`] is the global allocator of this process.
pub fn is_counting() -> bool {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let b = std::hint::black_box(Box::new([0u8; 64]));
    drop(b);
    ALLOCATIONS.load(Ordering::Relaxed) != before
}
