//! Plain HTTP answers and refused upgrades, over real sockets
//! (issue 2, points 2 and 5).

mod support;

use std::time::Duration;

use support::{
    check_101, client_frame, handshake_request, op, random_key, start_server, test_config,
    RawClient, Response,
};

/// Sends `request` on a fresh connection and returns the response head and
/// body, after checking that the server closes the connection.
fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> (Response, Vec<u8>) {
    let mut client = RawClient::connect_tcp(addr);
    client.send_raw(request);
    let raw = client.read_until_eof(Duration::from_secs(10));
    let mut head = Response::parse(&raw).expect("a complete response head");
    let body = std::mem::take(&mut head.body);
    let length: usize = head
        .header("content-length")
        .expect("every response has Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length matches the body");
    assert_eq!(head.header("connection"), Some("close"));
    (head, body)
}

#[test]
fn get_root_serves_the_embedded_chat_page() {
    let server = start_server(test_config());
    let (head, body) = exchange(server.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(body, wschat::http::CHAT_HTML.as_bytes());
    assert_eq!(body, std::fs::read("chat.html").unwrap());
}

#[test]
fn healthz_unknown_paths_methods_and_garbage() {
    let server = start_server(test_config());
    let addr = server.addr();
    let (head, body) = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((head.status, body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").0.status, 404);
    let (head, _) = exchange(addr, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.status, 405);
    assert_eq!(head.header("allow"), Some("GET"));
    assert_eq!(exchange(addr, b"PUT /echo HTTP/1.1\r\n\r\n").0.status, 405);
    assert_eq!(exchange(addr, b"\x16\x03\x01 junk\r\n\r\n").0.status, 400);
    assert_eq!(exchange(addr, b"GET / HTTP/9.9\r\n\r\n").0.status, 505);
    assert_eq!(exchange(addr, b"GET /\r\n\r\n").0.status, 400);
}

#[test]
fn each_invalid_upgrade_gets_its_status_and_a_reason() {
    let server = start_server(test_config());
    let addr = server.addr();
    let key = random_key();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            format!("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 8\r\n\r\n").into_bytes(),
            426,
            "Version",
        ),
        (
            format!("GET /echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes(),
            400,
            "Host",
        ),
        (
            format!("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes(),
            400,
            "Upgrade",
        ),
        (
            format!("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes(),
            400,
            "Connection",
        ),
        (
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            400,
            "Sec-WebSocket-Key",
        ),
        (
            format!("GET /echo HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes(),
            400,
            "HTTP/1.1",
        ),
        (
            handshake_request("x", "/room/bad%name", &key, &[]),
            400,
            "room",
        ),
        (handshake_request("x", "/nowhere", &key, &[]), 404, "not found"),
    ];
    for (request, status, reason) in cases {
        let (head, body) = exchange(addr, &request);
        assert_eq!(head.status, status, "{}", String::from_utf8_lossy(&request));
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains(reason), "body {body:?} names {reason:?}");
        assert_eq!(body.lines().count(), 1, "one-line reason");
        if status == 426 {
            assert_eq!(head.header("sec-websocket-version"), Some("13"));
        }
    }
}

#[test]
fn head_over_8_kib_gets_431() {
    let server = start_server(test_config());
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 9000));
    request.extend(b"\r\n\r\n");
    assert_eq!(exchange(server.addr(), &request).0.status, 431);
    // A head that never ends is cut off at the limit too.
    let mut client = RawClient::connect_tcp(server.addr());
    let _ = client.try_send_raw(&vec![b'G'; 20_000]);
    let raw = client.read_until_eof(Duration::from_secs(10));
    assert!(
        raw.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn head_one_byte_per_read_then_pipelined_frame() {
    let server = start_server(test_config());
    let key = random_key();
    let mut bytes = handshake_request("localhost", "/echo", &key, &[]);
    let head_len = bytes.len();
    bytes.extend(client_frame(true, op::TEXT, b"pipelined"));
    let mut client = RawClient::connect_tcp(server.addr());
    // Every byte of the head in its own write; the frame in the same write
    // as the head's last byte.
    for b in &bytes[..head_len - 1] {
        client.send_raw(std::slice::from_ref(b));
        std::thread::sleep(Duration::from_micros(200));
    }
    client.send_raw(&bytes[head_len - 1..]);
    let head = client.read_http_head();
    check_101(&head, &key);
    client.expect_text("pipelined");
}

#[test]
fn head_written_in_pieces_by_a_nagle_client_is_answered_without_delay() {
    // A client with Nagle's algorithm on (the default: no TCP_NODELAY)
    // sends each piece only once the previous one is acknowledged. The
    // server delays ACKs to send them with its answers, so it must
    // acknowledge an incomplete head at once: otherwise every piece after
    // the first waits for the 40 ms delayed-ACK timer.
    let server = start_server(test_config());
    let rounds = 10;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let key = random_key();
        let request = handshake_request("localhost", "/echo", &key, &[]);
        let mut client = RawClient::connect_tcp(server.addr());
        client.stream.set_nodelay(false).unwrap();
        for piece in request.chunks(request.len() / 6 + 1) {
            client.send_raw(piece);
        }
        check_101(&client.read_http_head(), &key);
    }
    // Held back, the pieces after the first wait for the delayed-ACK timer
    // (tens of ms; Nagle then sends the rest together): some 300 ms
    // for ten handshakes. Unhindered, all ten take a few milliseconds.
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(15 * rounds),
        "{rounds} handshakes in 6 pieces each took {took:?}"
    );
}

#[test]
fn subprotocol_is_the_clients_first_supported_choice() {
    let mut config = test_config();
    config.protocols = vec!["chat".into(), "superchat".into()];
    let server = start_server(config);
    let addr = server.addr();
    let offered = |value: &str| {
        let client =
            RawClient::connect_with_headers(addr, "/echo", &[("Sec-WebSocket-Protocol", value)]);
        client
            .handshake_response()
            .unwrap()
            .header("sec-websocket-protocol")
            .map(str::to_string)
    };
    assert_eq!(offered("superchat, chat").as_deref(), Some("superchat"));
    assert_eq!(offered("other, chat").as_deref(), Some("chat"));
    assert_eq!(offered("other"), None);
    let plain = RawClient::connect(addr, "/echo");
    assert_eq!(
        plain
            .handshake_response()
            .unwrap()
            .header("sec-websocket-protocol"),
        None
    );
}

#[test]
fn browser_style_connection_header_is_accepted() {
    let server = start_server(test_config());
    let key = random_key();
    let mut client = RawClient::connect_tcp(server.addr());
    client.send_raw(
        format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, Upgrade\r\n\
             Upgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\
             Origin: http://localhost\r\n\r\n"
        )
        .as_bytes(),
    );
    check_101(&client.read_http_head(), &key);
}

#[test]
fn lines_ending_in_a_bare_lf_are_answered_at_once() {
    let server = start_server(wschat::Config {
        handshake_timeout: Duration::from_secs(5),
        ..test_config()
    });
    let started = std::time::Instant::now();
    let mut client = RawClient::connect_tcp(server.addr());
    let response = client.request(b"GET /healthz HTTP/1.1\nHost: x\n\n");
    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
}

#[test]
fn absolute_form_targets_are_routed_by_their_path() {
    let server = start_server(test_config());
    let addr = server.addr();
    let mut client = RawClient::connect_tcp(addr);
    let response = client.request(b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
    let key = random_key();
    let mut ws = RawClient::connect_tcp(addr);
    ws.send_raw(&handshake_request(
        "x",
        "http://x/echo?from=proxy",
        &key,
        &[],
    ));
    check_101(&ws.read_http_head(), &key);
    ws.send_text("absolute");
    ws.expect_text("absolute");
}

#[test]
fn two_host_headers_are_refused_as_duplicate_not_missing() {
    let server = start_server(test_config());
    let addr = server.addr();
    let key = random_key();
    let upgrade = handshake_request("a", "/echo", &key, &[("Host", "b")]);
    let plain = b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n".to_vec();
    for request in [upgrade, plain] {
        let mut client = RawClient::connect_tcp(addr);
        let response = client.request(&request);
        assert_eq!(
            (response.status, response.text().as_str()),
            (400, "duplicate Host header\n"),
            "{}",
            String::from_utf8_lossy(&request)
        );
    }
    let metrics = support::Metrics::fetch(addr);
    assert_eq!(
        metrics.value("wschat_handshake_failures_total{reason=\"duplicate_host\"}"),
        2.0
    );
}
