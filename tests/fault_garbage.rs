//! Garbage in: seeded random bytes as a request head and as frames, an
//! HTTP/0.9 request line, huge heads (a 1 MB request line, a 1 MB
//! `Sec-WebSocket-Key`, 10000 header lines). Each gets the right status or
//! close code, never a crash: the server answers `/healthz` afterwards and
//! stops cleanly.

mod support;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use support::{
    assert_healthy, read_to_eof, start_server, tcp_connect, test_config, Decoder, Metrics,
    RawClient, Response, Rng, IO_TIMEOUT,
};

/// Sends `request` (from another thread, so a huge one cannot block the
/// read) and returns the answer after checking that it is well formed:
/// a status line, `Content-Length` matching the body, `Connection: close`,
/// and the connection closed after it.
fn exchange(addr: SocketAddr, request: Vec<u8>) -> Response {
    let mut stream = tcp_connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let len = request.len();
    let sending = std::thread::spawn(move || {
        // The server may stop reading once it has refused: errors are fine.
        let _ = writer.write_all(&request);
    });
    let raw = read_to_eof(&mut stream, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("request of {len} bytes: {e}"));
    sending.join().unwrap();
    let response = Response::parse(&raw)
        .unwrap_or_else(|| panic!("request of {len} bytes: no response in {raw:?}"));
    assert!(
        response.head.starts_with("HTTP/1.1 "),
        "status line: {response:?}"
    );
    assert_eq!(
        response.header("Content-Length").map(str::parse::<usize>),
        Some(Ok(response.body.len())),
        "{response:?}"
    );
    assert_eq!(response.header("Connection"), Some("close"), "{response:?}");
    response
}

#[test]
fn random_heads_are_refused_with_400_431_or_505() {
    let server = start_server(test_config());
    let addr = server.addr();
    let mut rng = Rng::new(0x0BAD_5EED);
    let mut failures = Vec::new();
    for case in 0..150 {
        // One third without CR or LF and up to 6000 bytes (so the head is
        // the blank line we add), one third over 8 KiB, one third anything.
        let (mut bytes, allowed): (Vec<u8>, &[u16]) = match case % 3 {
            0 => {
                let len = 1 + rng.below(6000) as usize;
                let b =
                    rng.bytes(len)
                        .into_iter()
                        .map(|b| if b == b'\r' || b == b'\n' { b'.' } else { b });
                (b.collect(), &[400, 505])
            }
            1 => {
                let len = 9000 + rng.below(20_000) as usize;
                let b =
                    rng.bytes(len)
                        .into_iter()
                        .map(|b| if b == b'\r' || b == b'\n' { b'.' } else { b });
                (b.collect(), &[431])
            }
            _ => {
                let len = 1 + rng.below(4000) as usize;
                (rng.bytes(len), &[400, 404, 405, 426, 431, 505])
            }
        };
        bytes.extend_from_slice(b"\r\n\r\n");
        let len = bytes.len();
        let response = exchange(addr, bytes);
        if !allowed.contains(&response.status) {
            failures.push(format!("case {case} ({len} bytes): {}", response.head));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_healthy(addr);
    let m = Metrics::fetch(addr);
    assert!(m.value("wschat_handshake_failures_total{reason=\"malformed\"}") >= 50.0);
    assert!(m.value("wschat_handshake_failures_total{reason=\"head_too_large\"}") >= 50.0);
}

#[test]
fn random_frames_after_the_upgrade_get_a_protocol_close_or_are_ignored_at_eof() {
    let server = start_server(wschat::Config {
        max_message_size: 64 * 1024,
        ..test_config()
    });
    let addr = server.addr();
    let mut rng = Rng::new(0x00F4_A3E5);
    let mut closes = [0u32; 4];
    for case in 0..100 {
        let mut ws = RawClient::connect(addr, "/echo");
        let len = 2 + rng.below(4096) as usize;
        let garbage = rng.bytes(len);
        let _ = ws.stream.write_all(&garbage);
        let _ = ws.stream.shutdown(Shutdown::Write);
        let raw =
            read_to_eof(&mut ws.stream, IO_TIMEOUT).unwrap_or_else(|e| panic!("case {case}: {e}"));
        let mut decoder = Decoder::default();
        decoder.push(&raw);
        let mut seen_close = false;
        while let Some((opcode, payload)) = decoder.next_frame() {
            assert!(!seen_close, "case {case}: a frame after the Close");
            match opcode {
                support::op::CLOSE => {
                    seen_close = true;
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let slot = [1000, 1002, 1007, 1009].iter().position(|&c| c == code);
                    let slot = slot.unwrap_or_else(|| panic!("case {case}: close {code}"));
                    closes[slot] += 1;
                }
                support::op::TEXT | support::op::BINARY | support::op::PONG => {}
                other => panic!("case {case}: opcode {other} from the server"),
            }
        }
        assert_eq!(decoder.pending(), 0, "case {case}: a cut frame");
    }
    eprintln!("random frames: closes 1000/1002/1007/1009: {closes:?}");
    assert!(
        closes[1] >= 50,
        "most random frames break a rule: {closes:?}"
    );
    assert_healthy(addr);
}

#[test]
fn an_http_0_9_request_line_is_answered_at_once_not_after_the_timeout() {
    let server = start_server(wschat::Config {
        handshake_timeout: Duration::from_secs(5),
        ..test_config()
    });
    let addr = server.addr();
    let started = Instant::now();
    let mut stream = tcp_connect(addr);
    stream.write_all(b"GET /\r\n").unwrap();
    // No header can follow a request line without a version: the request
    // is complete (and invalid for HTTP/1.x) at its CRLF.
    let raw = read_to_eof(&mut stream, Duration::from_millis(1500)).unwrap_or_else(|e| {
        panic!(
            "`GET /\\r\\n` (HTTP/0.9) not answered within 1.5 s ({e}); the server waits for a \
             blank line that an HTTP/0.9 client never sends, until its 5 s handshake timeout"
        )
    });
    let response = Response::parse(&raw).expect("a response head");
    assert!(
        [400, 505].contains(&response.status),
        "HTTP/0.9 got {response:?} after {:?}",
        started.elapsed()
    );
    assert_healthy(addr);
}

#[test]
fn huge_heads_get_431_and_one_just_under_the_limit_is_served() {
    let server = start_server(test_config());
    let addr = server.addr();
    let mb = 1 << 20;

    let mut line = b"GET /".to_vec();
    line.resize(mb, b'a');
    line.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(exchange(addr, line).status, 431, "1 MB request line");

    let mut key = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        .to_vec();
    key.resize(key.len() + mb, b'A');
    key.extend_from_slice(b"==\r\n\r\n");
    assert_eq!(exchange(addr, key).status, 431, "1 MB Sec-WebSocket-Key");

    let mut many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("x{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(exchange(addr, many).status, 431, "10000 header lines");

    // 65 short headers fit in 8 KiB but not in the parser's 64 slots.
    let mut slots = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..65 {
        slots.extend_from_slice(format!("x{i}: y\r\n").as_bytes());
    }
    slots.extend_from_slice(b"\r\n");
    assert_eq!(exchange(addr, slots).status, 431, "65 headers");

    // A head of exactly 8 KiB is served; one byte more is not.
    let head_of = |len: usize| {
        let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ".to_vec();
        head.resize(len - 4, b'p');
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    assert_eq!(
        exchange(addr, head_of(8 * 1024)).status,
        200,
        "a head of 8 KiB"
    );
    assert_eq!(
        exchange(addr, head_of(8 * 1024 + 1)).status,
        431,
        "8 KiB + 1"
    );

    // Versions and malformed lines.
    for (request, status) in [
        (&b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"[..], 505),
        (b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400),
        (b"GET\0/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n : x\r\n\r\n", 400),
        (b"\r\n\r\n", 400),
    ] {
        let response = exchange(addr, request.to_vec());
        assert_eq!(
            response.status,
            status,
            "{:?}: {response:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_healthy(addr);
}
