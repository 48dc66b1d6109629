//! Every configured limit, hit on purpose ("wschat under abuse"): the
//! status or close code it answers with, its metric, and that it is a limit
//! (just under it works, and it is per address where it says so).
//!
//! Limits that exist in `Config` today run on the in-process server. The
//! ones still being added (`--allowed-origin`, `--max-messages-per-second`,
//! `--max-connections-per-ip`, `--max-handshakes-per-ip-per-second`,
//! `--max-outbound-memory`) run the real binary with those flags, so this
//! file builds before they land; until then those tests fail with the
//! binary's "unexpected argument" error.

mod support;

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::{
    client_frame, encode_frame, encode_header, op, read_to_eof, start_server, tcp_connect,
    tcp_connect_from, tcp_connect_small_rcvbuf, test_config, wait_for, Daemon, Metrics, RawClient,
    ReadError, Response,
};

const SECOND_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A client that sends its upgrade request at once (as every real client
/// does) and reads the answer. Panics if the connection is reset before a
/// complete response head arrives: a refusal the client never sees.
fn refused_upgrade(addr: SocketAddr, source: Option<IpAddr>) -> Response {
    let mut client = RawClient::from_stream(match source {
        Some(ip) => tcp_connect_from(ip, addr),
        None => tcp_connect(addr),
    });
    let response = client.try_upgrade("/", &[]).unwrap_or_else(|e| {
        panic!(
            "no refusal reached the client ({e}): the server closed the socket with the \
             request unread, so the kernel sent a reset and dropped the response"
        )
    });
    // The refusal ends the connection.
    match read_to_eof(&mut client.stream, Duration::from_secs(3)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not closed after {response:?}: {e}"),
    }
    response
}

/// Panics unless `response` has `status` and a `Retry-After` of at least
/// one whole second.
fn assert_retry_after(response: &Response, status: u16) {
    assert_eq!(response.status, status, "{response:?}");
    let retry: u64 = response
        .header("Retry-After")
        .unwrap_or_else(|| panic!("{status} without Retry-After: {response:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {response:?}"));
    assert!(retry >= 1, "{response:?}");
}

/// Upgrades `path` until it works (a freed slot is reaped asynchronously).
fn upgrade_eventually(addr: SocketAddr, source: Option<IpAddr>, limit: Duration) -> RawClient {
    wait_for(limit, || {
        let mut client = RawClient::from_stream(match source {
            Some(ip) => tcp_connect_from(ip, addr),
            None => tcp_connect(addr),
        });
        match client.try_upgrade("/", &[]) {
            Ok(r) if r.status == 101 => Some(client),
            _ => None,
        }
    })
    .unwrap_or_else(|| panic!("no upgrade accepted within {limit:?}"))
}

#[test]
fn at_max_connections_a_new_client_gets_503_with_retry_after() {
    let server = start_server(wschat::Config {
        max_connections: 5,
        ..test_config()
    });
    let addr = server.addr();
    let mut open: Vec<RawClient> = (0..5).map(|_| RawClient::connect(addr, "/")).collect();
    for _ in 0..3 {
        assert_retry_after(&refused_upgrade(addr, None), 503);
    }
    // The five keep working while others are refused.
    open[0].send_text("still here");
    for ws in &mut open {
        let (opcode, text) = ws.next_message(Duration::from_secs(2));
        assert_eq!(opcode, op::TEXT);
        assert!(text.ends_with(b":still here"), "{text:?}");
    }
    // A freed slot is usable again: it is a limit, not a failure.
    let mut leaving = open.pop().unwrap();
    leaving.send_close(Some(1000), b"");
    leaving.expect_close_within(1000, Duration::from_secs(2));
    drop(leaving);
    let _again = upgrade_eventually(addr, None, Duration::from_secs(2));
    drop(open);
    let metrics = wait_for(Duration::from_secs(3), || {
        let m = Metrics::try_fetch(addr)?;
        (m.value("wschat_handshake_failures_total{reason=\"server_full\"}") >= 3.0).then_some(m)
    });
    assert!(metrics.is_some(), "503s not counted as server_full");
}

#[test]
fn a_frame_announcing_more_than_max_message_size_is_closed_1009_before_its_payload() {
    let server = start_server(wschat::Config {
        max_message_size: 1024,
        ..test_config()
    });
    // Exactly the limit is fine.
    let mut ws = RawClient::connect(server.addr(), "/echo");
    ws.send(op::BINARY, &[7u8; 1024]);
    assert_eq!(
        ws.next_message(Duration::from_secs(2)),
        (op::BINARY, vec![7u8; 1024])
    );
    // One more byte, announced by a header whose payload never comes.
    let header = encode_header(true, 0, op::BINARY, 1025, Some([1, 2, 3, 4]));
    ws.stream.write_all(&header).unwrap();
    // The payload never comes, so a close can only come from the header.
    ws.expect_close_within(1009, Duration::from_secs(3));

    // A fragmented message: the second header takes the total over.
    let mut ws = RawClient::connect(server.addr(), "/echo");
    let first = encode_frame(false, 0, op::TEXT, &[b'a'; 600], Some([5, 6, 7, 8]));
    ws.stream.write_all(&first).unwrap();
    let cont = encode_header(true, 0, op::CONTINUATION, 600, Some([1, 1, 1, 1]));
    ws.stream.write_all(&cont).unwrap();
    ws.expect_close_within(1009, Duration::from_secs(2));
    let m = Metrics::fetch(server.addr());
    assert_eq!(m.value("wschat_protocol_errors_total{code=\"1009\"}"), 2.0);
}

#[test]
fn a_foreign_origin_gets_403() {
    let daemon = Daemon::start(&["--allowed-origin", "https://chat.example"]);
    let addr = daemon.addr();
    for foreign in [
        "https://evil.example",
        "http://chat.example",
        "https://chat.example.evil.example",
    ] {
        let mut client = RawClient::connect_tcp(addr);
        let response = client.try_upgrade("/", &[("Origin", foreign)]).unwrap();
        assert_eq!(response.status, 403, "Origin {foreign}: {response:?}");
        read_to_eof(&mut client.stream, Duration::from_secs(3)).unwrap();
    }
    let mut client = RawClient::connect_tcp(addr);
    let response = client
        .try_upgrade("/", &[("Origin", "https://chat.example")])
        .unwrap();
    assert_eq!(response.status, 101, "allowed origin refused: {response:?}");
    let m = Metrics::fetch(addr);
    assert_eq!(
        m.value("wschat_handshake_failures_total{reason=\"origin\"}"),
        3.0,
        "{}",
        m.text
    );
}

#[test]
fn sending_over_max_messages_per_second_is_closed_1008() {
    let daemon = Daemon::start(&["--max-messages-per-second", "20"]);
    let addr = daemon.addr();
    // Well under the rate: 12 messages, one every 100 ms, all echoed.
    let mut polite = RawClient::connect(addr, "/echo");
    for i in 0..12 {
        polite.send_text(&format!("polite {i}"));
        let (opcode, text) = polite.next_message(Duration::from_secs(2));
        assert_eq!(
            (opcode, text),
            (op::TEXT, format!("polite {i}").into_bytes())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 200 at once: cut with 1008 before all come back.
    let mut flood = RawClient::connect(addr, "/echo");
    let burst: Vec<u8> = (0..200)
        .flat_map(|i| client_frame(true, op::TEXT, format!("flood {i}").as_bytes()))
        .collect();
    flood.stream.write_all(&burst).unwrap();
    let mut echoed = 0;
    let reason = loop {
        let (opcode, payload) = flood.next_message(Duration::from_secs(3));
        match opcode {
            op::TEXT => {
                assert_eq!(payload, format!("flood {echoed}").into_bytes());
                echoed += 1;
            }
            op::CLOSE => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                assert_eq!(code, 1008, "{payload:?}");
                break String::from_utf8_lossy(&payload[2..]).into_owned();
            }
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert!(echoed < 200, "all 200 echoed: no rate limit");
    assert!(!reason.is_empty());
    let m = Metrics::fetch(addr);
    assert_eq!(m.require("wschat_rate_limit_disconnects_total"), 1.0);
    assert_eq!(m.value("wschat_protocol_errors_total{code=\"1008\"}"), 1.0);
    // The polite client is untouched.
    polite.send_text("after");
    assert_eq!(
        polite.next_message(Duration::from_secs(2)),
        (op::TEXT, b"after".to_vec())
    );
}

#[test]
fn a_silent_client_is_pinged_then_closed_1001_while_a_ponging_one_stays() {
    let server = start_server(wschat::Config {
        ping_interval: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(800),
        ..test_config()
    });
    let addr = server.addr();
    let ponging = std::thread::spawn(move || {
        let mut ws = RawClient::connect(addr, "/echo");
        let until = Instant::now() + Duration::from_millis(2500);
        let mut pings = 0;
        while Instant::now() < until {
            match ws.next_frame(Duration::from_millis(100)) {
                Ok((op::PING, payload)) => {
                    pings += 1;
                    ws.send(op::PONG, &payload);
                }
                Ok(other) => panic!("ponging client got {other:?}"),
                Err(ReadError::Timeout) => {}
                Err(e) => panic!("ponging client: {e}"),
            }
        }
        ws.send_text("alive");
        assert_eq!(
            ws.next_message(Duration::from_secs(2)),
            (op::TEXT, b"alive".to_vec())
        );
        pings
    });
    let mut silent = RawClient::connect(addr, "/echo");
    let start = Instant::now();
    let (opcode, payload) = silent.next_frame(Duration::from_secs(3)).unwrap();
    let ping_at = start.elapsed();
    assert_eq!((opcode, payload), (op::PING, vec![]), "first frame");
    assert!(
        // Not early; the upper bound only absorbs a loaded machine.
        (Duration::from_millis(250)..Duration::from_millis(2000)).contains(&ping_at),
        "Ping after {ping_at:?}, ping_interval is 300 ms"
    );
    let reason = silent.expect_close_within(1001, Duration::from_secs(3));
    let closed_at = start.elapsed();
    assert_eq!(reason, "idle timeout");
    assert!(
        (Duration::from_millis(750)..Duration::from_millis(3000)).contains(&closed_at),
        "Close after {closed_at:?}, idle_timeout is 800 ms"
    );
    let pings = ponging.join().unwrap();
    assert!(pings >= 2, "the ponging client saw {pings} pings in 1.8 s");
}

#[test]
fn over_max_connections_per_ip_gets_429_but_other_addresses_connect() {
    let daemon = Daemon::start(&["--max-connections-per-ip", "3"]);
    let addr = daemon.addr();
    let mut mine: Vec<RawClient> = (0..3).map(|_| RawClient::connect(addr, "/")).collect();
    assert_retry_after(&refused_upgrade(addr, None), 429);
    // Another address is not affected.
    let other = RawClient::over(tcp_connect_from(SECOND_IP, addr), "/");
    // Freeing one slot lets 127.0.0.1 in again.
    let mut leaving = mine.pop().unwrap();
    leaving.send_close(Some(1000), b"");
    leaving.expect_close_within(1000, Duration::from_secs(2));
    drop(leaving);
    let again = upgrade_eventually(addr, None, Duration::from_secs(2));
    drop((mine, other, again));
    let m = wait_for(Duration::from_secs(3), || {
        let m = Metrics::try_fetch(addr)?;
        (m.value("wschat_handshake_failures_total{reason=\"per_address_limit\"}") >= 1.0)
            .then_some(m)
    });
    assert!(m.is_some(), "429 not counted as per_address_limit");
}

#[test]
fn over_max_handshakes_per_ip_per_second_gets_429() {
    let daemon = Daemon::start(&["--max-handshakes-per-ip-per-second", "5"]);
    let addr = daemon.addr();
    let start = Instant::now();
    let (mut accepted, mut refused) = (0u32, 0u32);
    for _ in 0..30 {
        let mut client = RawClient::connect_tcp(addr);
        let response = client
            .try_upgrade("/echo", &[])
            .unwrap_or_else(|e| panic!("attempt {}: no answer: {e}", accepted + refused + 1));
        match response.status {
            101 => {
                accepted += 1;
                client.send_close(Some(1000), b"");
            }
            429 => {
                refused += 1;
                assert_retry_after(&response, 429);
            }
            _ => panic!("{response:?}"),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        refused >= 1,
        "30 handshakes in {elapsed:.2} s, none refused"
    );
    assert!(accepted >= 1, "none accepted");
    // At 5/s, with a bucket of at most two seconds' worth.
    let allowed = (5.0 * (elapsed + 2.0)).ceil() as u32;
    assert!(
        accepted <= allowed,
        "{accepted} accepted in {elapsed:.2} s at 5/s"
    );
    // Per address: 127.0.0.2 is not limited by 127.0.0.1's handshakes.
    let _other = RawClient::over(tcp_connect_from(SECOND_IP, addr), "/echo");
    // And the bucket refills.
    std::thread::sleep(Duration::from_millis(1200));
    let _later = RawClient::connect(addr, "/echo");
}

/// Sends `payload` into the room on `sender` and reads the sender's own
/// copy back, so the sender never lags.
fn broadcast_and_wait(sender: &mut RawClient, opcode: u8, payload: &[u8]) {
    sender.send(opcode, payload);
    let (got, body) = sender.next_message(Duration::from_secs(5));
    assert_eq!(got, opcode);
    assert!(body.ends_with(payload), "sender's own copy");
}

#[test]
fn a_slow_consumer_is_closed_1008_after_everything_before_it_and_counted() {
    let server = start_server(wschat::Config {
        max_backpressure: 64 * 1024,
        ..test_config()
    });
    let addr = server.addr();
    let mut slow = RawClient::over(tcp_connect_small_rcvbuf(addr, 4096), "/room/r");
    let mut sender = RawClient::connect(addr, "/room/r");
    let mut sent = 0u32;
    let mut payload = vec![b'x'; 8 * 1024];
    while sent < 4000 {
        payload[..4].copy_from_slice(&sent.to_be_bytes());
        broadcast_and_wait(&mut sender, op::BINARY, &payload);
        sent += 1;
        if sent % 16 == 0
            && Metrics::fetch(addr).value("wschat_slow_consumer_disconnects_total") >= 1.0
        {
            break;
        }
    }
    let m = Metrics::fetch(addr);
    assert_eq!(
        m.value("wschat_slow_consumer_disconnects_total"),
        1.0,
        "after {sent} messages of 8 KiB"
    );
    assert_eq!(m.value("wschat_protocol_errors_total{code=\"1008\"}"), 1.0);
    // The slow client gets what was queued, in order and without a gap,
    // then Close 1008.
    let mut next = 0u32;
    let reason = loop {
        let (opcode, body) = slow.next_message(Duration::from_secs(3));
        if opcode == op::CLOSE {
            assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1008);
            break String::from_utf8_lossy(&body[2..]).into_owned();
        }
        let (_, data) = body.split_at(body.iter().position(|&b| b == b':').unwrap() + 1);
        assert_eq!(u32::from_be_bytes(data[..4].try_into().unwrap()), next);
        next += 1;
    };
    assert!(
        next < sent,
        "the slow client got all {sent}: it was not slow"
    );
    assert_eq!(reason, "slow consumer");
    // The sender is still in the room.
    broadcast_and_wait(&mut sender, op::TEXT, b"still here");
}

#[test]
fn past_max_outbound_memory_queues_are_closed_1008() {
    // The per-connection bound is out of reach (1 GiB), so only the total
    // of all queues (1 MiB) can close anyone.
    let daemon = Daemon::start(&[
        "--max-outbound-memory",
        "1048576",
        "--max-backpressure",
        "1073741824",
    ]);
    let addr = daemon.addr();
    let mut slow = RawClient::over(tcp_connect_small_rcvbuf(addr, 4096), "/");
    let mut sender = RawClient::connect(addr, "/");
    let payload = vec![b'y'; 64 * 1024];
    let mut sent = 0;
    while sent < 400 {
        broadcast_and_wait(&mut sender, op::BINARY, &payload);
        sent += 1;
        if sent % 8 == 0
            && Metrics::fetch(addr).value("wschat_slow_consumer_disconnects_total") >= 1.0
        {
            break;
        }
    }
    let m = Metrics::fetch(addr);
    assert!(
        m.value("wschat_slow_consumer_disconnects_total") >= 1.0,
        "{sent} messages of 64 KiB to a client that does not read: nobody closed"
    );
    loop {
        let (opcode, body) = slow.next_message(Duration::from_secs(5));
        if opcode == op::CLOSE {
            assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1008);
            break;
        }
    }
    broadcast_and_wait(&mut sender, op::TEXT, b"still here");
}

#[test]
fn messages_being_received_share_one_budget_past_which_1009() {
    let server = start_server(wschat::Config {
        max_inbound_memory: 1 << 20,
        ..test_config()
    });
    let key = [9, 8, 7, 6];
    // Each client announces 512 KiB and sends 400 KiB of it: two fit in
    // the 1 MiB budget, the third does not.
    let partial = |ws: &mut RawClient| {
        let frame = encode_frame(true, 0, op::BINARY, &vec![3u8; 512 * 1024], Some(key));
        let head = encode_header(true, 0, op::BINARY, 512 * 1024, Some(key)).len();
        ws.stream.write_all(&frame[..head + 400 * 1024]).unwrap();
        frame[head + 400 * 1024..].to_vec()
    };
    let mut a = RawClient::connect(server.addr(), "/echo");
    let rest_a = partial(&mut a);
    let mut b = RawClient::connect(server.addr(), "/echo");
    let rest_b = partial(&mut b);
    // Let the server take in both before the third arrives.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = RawClient::connect(server.addr(), "/echo");
    let _ = partial(&mut c);
    c.expect_close_within(1009, Duration::from_secs(3));
    // The two within the budget finish their messages normally.
    for (ws, rest) in [(&mut a, rest_a), (&mut b, rest_b)] {
        ws.stream.write_all(&rest).unwrap();
        assert_eq!(
            ws.next_message(Duration::from_secs(3)),
            (op::BINARY, vec![3u8; 512 * 1024])
        );
    }
    // Finished messages give their share back: a new one fits again.
    let mut d = RawClient::connect(server.addr(), "/echo");
    d.send(op::BINARY, &vec![4u8; 900 * 1024]);
    assert_eq!(
        d.next_message(Duration::from_secs(3)),
        (op::BINARY, vec![4u8; 900 * 1024])
    );
}
