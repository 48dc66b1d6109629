//! Allocation counts, by a counting global allocator that counts only on
//! threads that ask for it:
//! - a broadcast to 10000 receivers is framed once and shared: no copy and
//!   no allocation per receiver;
//! - an echoed small message costs the server no allocation.

#[path = "../benches/support/receivers.rs"]
mod receivers;

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use receivers::Lobby;
use support::{test_config, RawClient};

/// Counts allocations and allocated bytes made on counting threads, then
/// defers to the system.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    // `try_with`: a thread being torn down has no locals left to ask.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size, Ordering::Relaxed);
    }
}

// SAFETY: a global allocator can only be written as an `unsafe impl`.
// Every method passes its arguments unchanged to `System`, so `System`'s
// guarantees are the ones callers get; the counters are plain atomics and
// the flag a const-initialised thread local, which never allocates.
// This test crate is the only place with `unsafe`; the library forbids it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Held by each test while it counts, so that tests never count at once.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Allocations and bytes so far, on every counting thread.
fn totals() -> (usize, usize) {
    (
        ALLOCATIONS.load(Ordering::SeqCst),
        BYTES.load(Ordering::SeqCst),
    )
}

/// Runs `f` on this thread with counting on; returns its result and the
/// allocations and bytes it made.
fn counted(f: impl FnOnce() -> usize) -> (usize, usize, usize) {
    COUNTED.with(|c| c.set(true));
    let (a0, b0) = totals();
    let delivered = f();
    let (a1, b1) = totals();
    COUNTED.with(|c| c.set(false));
    (delivered, a1 - a0, b1 - b0)
}

#[test]
fn broadcast_to_10000_receivers_allocates_nothing_per_receiver() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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

/// Sends `count` 16-byte text messages, 100 per write, and reads every
/// echo back.
fn echo_small_messages(c: &mut RawClient, count: usize) {
    let text = "0123456789abcdef";
    let frame = support::client_frame(true, support::op::TEXT, text.as_bytes());
    for _ in 0..count / 100 {
        c.send_raw(&frame.repeat(100));
        for _ in 0..100 {
            c.expect_text(text);
        }
    }
}

#[test]
fn echoing_small_messages_allocates_nothing_per_message() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The server runs on a thread of its own that counts from the start;
    // the client's allocations (on this thread) are not counted.
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        let server = wschat::Server::bind(test_config()).expect("bind");
        tx.send((server.local_addr(), server.handle())).unwrap();
        server.run()
    });
    let (addr, handle) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut c = RawClient::connect(addr, "/echo");
    // Warm up: buffers and queue slots that are kept for reuse.
    echo_small_messages(&mut c, 1_000);
    let (a0, _) = totals();
    echo_small_messages(&mut c, 10_000);
    let (a1, _) = totals();
    // A write may start a queue buffer (a few allocations per batch of
    // 100 echoes); a message that allocated would show 10000 at least.
    let allocations = a1 - a0;
    assert!(
        allocations < 1_000,
        "{allocations} server allocations for 10000 echoed messages"
    );
    drop(c);
    handle.shutdown();
    thread.join().unwrap().unwrap();
}
