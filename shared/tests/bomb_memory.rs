//! Decompression bombs cost memory in proportion to the limit, never to the size they claim.
//!
//! This test binary counts every allocation made through Rust's allocator (the decoder's output buffer and
//! everything postcard builds; zstd's own window is bounded separately by `window_log_max`). It holds a single
//! test so that no other test allocates while it measures.

// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to the system allocator.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use octoisp_shared::Limits;
use octoisp_shared::frame::{self, DecodeError, FLAG_ZSTD};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the same arguments; the counters do not affect allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated (above what was live before) while running `f`.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

#[test]
fn gigabyte_bombs_are_refused_within_the_limit() {
    const MIB: usize = 1024 * 1024;
    const SLACK: usize = 64 * 1024;
    let limits = Limits {
        max_frame_bytes: MIB,
        max_decompressed_bytes: 2 * MIB,
    };
    for declare in [true, false] {
        let frame = common::frame_of(FLAG_ZSTD, &common::rle_bomb(8192, declare)); // 1 GiB of zeros
        let (result, peak) = peak_during(|| frame::decode(&frame, &limits));
        assert!(
            matches!(result, Err(DecodeError::DecompressedTooLarge { .. })),
            "{result:?}"
        );
        // Growing the output past the limit reallocates it once (old and new buffer live together: three
        // times the limit); the slack covers the few hundred bytes other threads of the test process (the
        // harness) may allocate meanwhile, which made an exact bound fail on a loaded machine.
        assert!(
            peak <= 3 * limits.max_decompressed_bytes + SLACK,
            "declared {declare}: peak {peak} bytes"
        );
    }
    // The default limits: a declared 1 GiB is refused before any output buffer exists.
    let frame = common::frame_of(FLAG_ZSTD, &common::rle_bomb(8192, true));
    let (result, peak) = peak_during(|| frame::decode(&frame, &Limits::default()));
    assert!(
        matches!(result, Err(DecodeError::DecompressedTooLarge { .. })),
        "{result:?}"
    );
    assert!(peak < MIB, "peak {peak} bytes");
}
