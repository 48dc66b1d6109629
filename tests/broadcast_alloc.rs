//! A broadcast to 10000 receivers is framed once and shared: no copy and no
//! allocation per receiver, counted by a counting global allocator.

#[path = "../benches/support/receivers.rs"]
mod receivers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use receivers::Lobby;

/// Counts allocations and allocated bytes, then defers to the system.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: a global allocator can only be written as an `unsafe impl`.
// Every method passes its arguments unchanged to `System`, so `System`'s
// guarantees are the ones callers get; the counters are plain atomics.
// This test crate is the only place with `unsafe`; the library forbids it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted(f: impl FnOnce() -> usize) -> (usize, usize, usize) {
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::SeqCst),
        BYTES.load(Ordering::SeqCst),
    );
    let delivered = f();
    let (a1, b1) = (
        ALLOCATIONS.load(Ordering::SeqCst),
        BYTES.load(Ordering::SeqCst),
    );
    (delivered, a1 - a0, b1 - b0)
}

#[test]
fn broadcast_to_10000_receivers_allocates_nothing_per_receiver() {
    let message = vec![b'x'; 1024];
    for compress in [false, true] {
        let mut lobby = Lobby::new(10_000, compress);
        // The first message gives each queue its (small, kept) ring of slots.
        lobby.broadcast(1, &message);
        lobby.drain();
        let (delivered, allocations, bytes) = counted(|| lobby.broadcast(2, &message));
        assert_eq!(delivered, 10_000);
        assert!(
            allocations <= 8,
            "compress={compress}: {allocations} allocations for 10000 receivers"
        );
        assert!(
            bytes < 4 * 1024 + 64 * 1024,
            "compress={compress}: {bytes} bytes allocated: the frame was copied"
        );
        let calls = lobby.deflater.calls();
        assert_eq!(
            calls,
            u64::from(compress) * 2,
            "one deflate call per message"
        );
    }
}
