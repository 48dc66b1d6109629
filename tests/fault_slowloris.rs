//! Slowloris: 500 connections that send their request head one byte a
//! second are all cut at the handshake timeout (408 or EOF), while normal
//! clients upgrade and chat with fast round trips the whole time.

mod support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{
    op, open_connections, percentile, start_server, tcp_connect, test_config, wait_for, Metrics,
    RawClient,
};

const SLOW_CLIENTS: usize = 500;
/// Slow clients opened at once.
const BATCH: usize = 50;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The slow clients send a byte at 0.5 s, 1.5 s, 2.5 s... after connecting,
/// so no write races the close at 2 s.
const FIRST_BYTE_AFTER: Duration = Duration::from_millis(500);
/// Longest acceptable round trip (and upgrade) of a normal client, debug build.
const FAST: Duration = Duration::from_millis(1000);

/// What one slow client saw.
struct Slow {
    stream: TcpStream,
    connected: Instant,
    sent: usize,
    received: Vec<u8>,
    /// When the server ended the connection, and how (`None`: EOF).
    ended: Option<(Instant, Option<io::ErrorKind>)>,
}

/// Two lobby clients: A says something every 20 ms and times its own copy
/// coming back; B, which joins during the attack, must hear A too.
/// Returns A's upgrade time, B's upgrade time and A's round trips.
fn chat_until(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> (Duration, Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut a = RawClient::connect(addr, "/");
    let a_upgrade = started.elapsed();
    let mut b: Option<RawClient> = None;
    let mut b_upgrade = Duration::ZERO;
    let mut rtts = Vec::new();
    let mut i = 0u32;
    while !stop.load(Ordering::SeqCst) {
        if b.is_none() && started.elapsed() > Duration::from_secs(1) {
            let t = Instant::now();
            b = Some(RawClient::connect(addr, "/"));
            b_upgrade = t.elapsed();
        }
        let text = format!("round trip {i}");
        let sent = Instant::now();
        a.send_text(&text);
        let (opcode, got) = a.next_message(Duration::from_secs(5));
        rtts.push(sent.elapsed());
        assert_eq!(opcode, op::TEXT);
        assert!(got.ends_with(text.as_bytes()), "{got:?}");
        if let Some(b) = b.as_mut() {
            let (_, got) = b.next_message(Duration::from_secs(5));
            assert!(got.ends_with(text.as_bytes()), "{got:?}");
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(b.is_some(), "the attack ended before B joined");
    (a_upgrade, b_upgrade, rtts)
}

#[test]
fn five_hundred_slowloris_connections_are_cut_at_the_timeout_while_chat_stays_fast() {
    let server = start_server(wschat::Config {
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..test_config()
    });
    let addr = server.addr();
    let head = b"GET / HTTP/1.1\r\nHost: slowloris\r\nUpgrade: websocket\r\n\r\n";

    // Opened 50 at a time, each batch accepted before the next: the listen
    // backlog is 128 (mio's default), and a burst that overflows it makes
    // the kernel drop SYNs, which delays connections by a 1 s retransmit
    // and would blur "closed at the timeout" (see fault_accept_burst.rs).
    let mut slow: Vec<Slow> = Vec::with_capacity(SLOW_CLIENTS);
    while slow.len() < SLOW_CLIENTS {
        for _ in 0..BATCH {
            let stream = tcp_connect(addr);
            stream.set_nonblocking(true).unwrap();
            slow.push(Slow {
                stream,
                connected: Instant::now(),
                sent: 0,
                received: Vec::new(),
                ended: None,
            });
        }
        let want = slow.len() as f64;
        wait_for(Duration::from_secs(2), || {
            (open_connections(addr) >= want).then_some(())
        })
        .unwrap_or_else(|| panic!("{want} slow clients not accepted in 2 s"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let chat = {
        let stop = stop.clone();
        std::thread::spawn(move || chat_until(addr, stop))
    };

    let deadline = Instant::now() + HANDSHAKE_TIMEOUT + Duration::from_secs(4);
    let mut buf = [0u8; 1024];
    while slow.iter().any(|s| s.ended.is_none()) && Instant::now() < deadline {
        let now = Instant::now();
        for s in slow.iter_mut().filter(|s| s.ended.is_none()) {
            let due = s.connected + FIRST_BYTE_AFTER + Duration::from_secs(s.sent as u64);
            if now >= due && s.sent < head.len() {
                // A failed write shows up as a read error or EOF below.
                if s.stream.write(&head[s.sent..s.sent + 1]).is_ok() {
                    s.sent += 1;
                }
            }
            loop {
                match s.stream.read(&mut buf) {
                    Ok(0) => s.ended = Some((Instant::now(), None)),
                    Ok(n) => {
                        s.received.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => s.ended = Some((Instant::now(), Some(e.kind()))),
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);
    let (a_upgrade, b_upgrade, mut rtts) = chat.join().expect("chat thread");

    let mut problems = Vec::new();
    let mut saw_408 = 0;
    for (i, s) in slow.iter().enumerate() {
        let Some((at, error)) = s.ended else {
            problems.push(format!(
                "#{i}: still open after {:?}",
                s.connected.elapsed()
            ));
            continue;
        };
        let lived = at.duration_since(s.connected);
        if !(HANDSHAKE_TIMEOUT - Duration::from_millis(100)
            ..HANDSHAKE_TIMEOUT + Duration::from_secs(3))
            .contains(&lived)
        {
            problems.push(format!("#{i}: closed after {lived:?}"));
        }
        if let Some(kind) = error {
            problems.push(format!("#{i}: ended with {kind:?}, not 408 or EOF"));
        }
        if s.received.starts_with(b"HTTP/1.1 408 ") {
            saw_408 += 1;
        } else if !s.received.is_empty() {
            problems.push(format!(
                "#{i}: got {:?}",
                String::from_utf8_lossy(&s.received)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {SLOW_CLIENTS} slow clients wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );

    let p99 = percentile(&mut rtts, 99.0);
    let max = *rtts.last().unwrap();
    eprintln!(
        "slowloris: {saw_408}/{SLOW_CLIENTS} saw 408; chat upgrades {a_upgrade:?} and \
         {b_upgrade:?}; {} round trips, p99 {p99:?}, max {max:?}",
        rtts.len()
    );
    assert!(
        a_upgrade < FAST && b_upgrade < FAST,
        "upgrades took {a_upgrade:?}, {b_upgrade:?}"
    );
    assert!(max < FAST, "slowest round trip {max:?}");
    assert!(rtts.len() >= 50, "only {} round trips", rtts.len());

    let m = Metrics::fetch(addr);
    assert_eq!(
        m.value("wschat_handshake_failures_total{reason=\"timeout\"}"),
        SLOW_CLIENTS as f64,
        "{}",
        m.text
    );
    // Nothing is left behind: the chat clients are gone too (dropped).
    let left = wait_for(Duration::from_secs(3), || {
        let open = open_connections(addr);
        (open == 0.0).then_some(open)
    });
    assert!(
        left.is_some(),
        "connections still open: {}",
        open_connections(addr)
    );
}
