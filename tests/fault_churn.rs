//! Churn on the real binary: 5000 connect / chat / disconnect cycles (a
//! third closing cleanly, a third dropping, a third resetting; rooms
//! created and emptied all along) leave no descriptor, connection or room
//! behind, and the server's memory does not grow past a small bound.
//!
//! Timers are short (1 s) on purpose: every connection leaves its
//! handshake and ping deadlines in the timer heap until they come due
//! (16 bytes each, by design: stale entries are skipped, not removed), so
//! with the default 10 s / 30 s the heap grows by ~32 bytes per connection
//! opened in the last 30 s. With 1 s timers that is a small steady state
//! reached during the warm-up, and any growth after it is a leak.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{mib, op, open_connections, reset, wait_for, Daemon, Metrics, RawClient};

const THREADS: usize = 4;
const CYCLES: usize = 5000;
/// As many cycles as measured, at the same rate: the allocator and the
/// timer heap reach their steady state.
const WARM_UP: usize = CYCLES;
/// Allowed RSS growth over the 5000 measured cycles: about 100 bytes a
/// cycle, so a leak of anything per connection (its ~250-byte struct, a
/// buffer, a room or timer entry that never goes) would show. Measured
/// growth is 30-50 KiB.
const RSS_GROWTH_BOUND_KIB: u64 = 512;

/// Cycle `i` of thread `t`: connect to a room (one of 50 per thread, so
/// rooms come and go) or `/echo`, say something, hear it back, leave.
fn cycle(addr: SocketAddr, t: usize, i: usize) {
    let path = if i % 10 == 9 {
        "/echo".to_string()
    } else {
        format!("/room/churn-{t}-{}", i % 50)
    };
    let mut ws = RawClient::connect(addr, &path);
    let text = format!("cycle {t}/{i}");
    ws.send_text(&text);
    let (opcode, got) = ws.next_message(Duration::from_secs(5));
    assert_eq!(opcode, op::TEXT);
    assert!(got.ends_with(text.as_bytes()), "{got:?}");
    match i % 3 {
        0 => {
            ws.send_close(Some(1000), b"");
            ws.expect_close_within(1000, Duration::from_secs(5));
        }
        1 => drop(ws),
        _ => reset(ws.stream),
    }
}

/// Runs `count` cycles spread over [`THREADS`] threads.
fn churn(addr: SocketAddr, count: usize) {
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                for i in (t..count).step_by(THREADS) {
                    cycle(addr, t, i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("churn thread");
    }
}

/// Waits until no connection is open and returns `(descriptors, RSS KiB)`.
fn settle(daemon: &Daemon) -> (usize, u64) {
    let addr = daemon.addr();
    wait_for(Duration::from_secs(5), || {
        (open_connections(addr) == 0.0).then_some(())
    })
    .unwrap_or_else(|| panic!("{} connections still open", open_connections(addr)));
    // The last metrics request's own connection goes after our FIN.
    std::thread::sleep(Duration::from_millis(200));
    (daemon.fd_count(), daemon.rss_kib())
}

#[test]
fn five_thousand_connect_chat_disconnect_cycles_leak_nothing() {
    let mut daemon = Daemon::start(&[
        "--handshake-timeout",
        "1",
        "--close-timeout",
        "1",
        "--ping-interval",
        "1",
        "--idle-timeout",
        "2",
        // Rooms outlive their members while they keep history: a short
        // age limit lets the check below see them all go.
        "--history-ttl",
        "1",
    ]);
    let addr = daemon.addr();
    churn(addr, WARM_UP);
    // Both measures are taken once every room and its history are gone.
    let forgotten = || {
        wait_for(Duration::from_secs(5), || {
            let m = Metrics::fetch(addr);
            (m.require("wschat_rooms") == 0.0 && m.require("wschat_history_messages") == 0.0)
                .then_some(())
        })
    };
    forgotten();
    let (fds_before, rss_before) = settle(&daemon);

    let started = Instant::now();
    churn(addr, CYCLES);
    let took = started.elapsed();
    daemon.assert_alive();
    let emptied = forgotten();
    let (fds_after, rss_after) = settle(&daemon);
    let m = Metrics::fetch(addr);
    eprintln!(
        "churn: {CYCLES} cycles in {took:?}; descriptors {fds_before} -> {fds_after}; \
         RSS {:.2} MiB -> {:.2} MiB (peak {:.2} MiB)",
        mib(rss_before),
        mib(rss_after),
        mib(daemon.peak_rss_kib())
    );
    assert!(
        fds_after <= fds_before,
        "descriptors grew from {fds_before} to {fds_after}"
    );
    assert!(
        emptied.is_some(),
        "rooms or history left behind: {}",
        m.text
    );
    assert!(
        m.require("wschat_upgrades_total") >= (WARM_UP + CYCLES) as f64,
        "{}",
        m.text
    );
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth <= RSS_GROWTH_BOUND_KIB,
        "RSS grew {growth} KiB over {CYCLES} cycles (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
}
