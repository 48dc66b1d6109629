//! Plain HTTP answers and refused upgrades, over real sockets (issue 2,
//! points 2 and 5); persistent connections, pipelining, HEAD and request
//! bodies (issue 14).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{
    check_101, client_frame, handshake_request, op, random_key, start_server, test_config,
    RawClient, Response,
};

/// Sends `request` on a fresh connection and returns the response head and
/// body, after checking that the server closes the connection.
fn exchange(addr: SocketAddr, request: &[u8]) -> (Response, Vec<u8>) {
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

/// Sends `request` on a fresh connection and reads one response; the
/// connection is returned for what the test does next.
fn ask(addr: SocketAddr, request: &[u8]) -> (Response, RawClient) {
    let mut client = RawClient::connect_tcp(addr);
    let response = client.request(request);
    (response, client)
}

#[test]
fn get_root_serves_the_embedded_chat_page() {
    let server = start_server(test_config());
    let (head, _) = ask(server.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = head.body.clone();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("connection"), Some("keep-alive"));
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
    let (head, _) = ask(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((head.status, head.body.as_slice()), (200, &b"ok"[..]));
    // Refusals of requests read to their end keep the connection.
    assert_eq!(ask(addr, b"GET /nope HTTP/1.1\r\n\r\n").0.status, 404);
    let (head, _) = ask(addr, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(head.status, 405);
    assert_eq!(head.header("allow"), Some("GET, HEAD"));
    assert_eq!(head.header("connection"), Some("keep-alive"));
    assert_eq!(ask(addr, b"PUT /echo HTTP/1.1\r\n\r\n").0.status, 405);
    // The others close it.
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

// ---- persistent connections (issue 14) ------------------------------------

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// Panics unless `response` is `200 ok` from `/healthz`.
fn assert_ok(response: &Response) {
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "ok"),
        "{response:?}"
    );
}

#[test]
fn an_http_1_1_connection_serves_several_requests() {
    let server = start_server(test_config());
    let mut client = RawClient::connect_tcp(server.addr());
    for _ in 0..3 {
        let response = client.request(HEALTHZ);
        assert_ok(&response);
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    let page = client.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(page.body, wschat::http::CHAT_HTML.as_bytes());
    let metrics = support::Metrics::fetch(server.addr());
    assert_eq!(
        metrics.require("wschat_connections_accepted_total"),
        2.0,
        "four requests on one connection, then this one"
    );
}

#[test]
fn connection_close_from_the_client_is_honoured() {
    let server = start_server(test_config());
    let mut client = RawClient::connect_tcp(server.addr());
    assert_ok(&client.request(HEALTHZ));
    let last = client.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n");
    assert_ok(&last);
    assert_eq!(last.header("connection"), Some("close"));
    client.expect_eof();
}

#[test]
fn http_1_0_closes_unless_it_asks_for_keep_alive() {
    let server = start_server(test_config());
    let addr = server.addr();
    let (response, mut client) = ask(addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_ok(&response);
    assert_eq!(response.header("connection"), Some("close"));
    client.expect_eof();
    let asking = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let (response, mut client) = ask(addr, asking);
    assert_eq!(response.header("connection"), Some("keep-alive"));
    assert_ok(&client.request(b"GET /healthz HTTP/1.0\r\n\r\n"));
    client.expect_eof();
}

#[test]
fn pipelined_requests_are_answered_in_order_each_once() {
    let server = start_server(test_config());
    let mut client = RawClient::connect_tcp(server.addr());
    let mut three = HEALTHZ.to_vec();
    three.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    three.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    client.send_raw(&three);
    assert_ok(&client.read_response());
    assert_eq!(client.read_response().status, 404);
    let head = client.read_http_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length(), wschat::http::CHAT_HTML.len());
    // Nothing more was answered: the next bytes are this request's.
    let last = client.request(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_ok(&last);
    client.expect_eof();
}

#[test]
fn the_second_request_of_a_connection_may_upgrade() {
    let server = start_server(test_config());
    let mut client = RawClient::connect_tcp(server.addr());
    assert_ok(&client.request(HEALTHZ));
    client.handshake("/echo", &[]);
    client.send_text("kept");
    client.expect_text("kept");
    // Pipelined: a request, an upgrade and a first frame in one write.
    let key = random_key();
    let mut bytes = HEALTHZ.to_vec();
    bytes.extend(handshake_request("x", "/echo", &key, &[]));
    bytes.extend(client_frame(true, op::TEXT, b"behind two heads"));
    let mut client = RawClient::connect_tcp(server.addr());
    client.send_raw(&bytes);
    assert_ok(&client.read_response());
    check_101(&client.read_http_head(), &key);
    client.expect_text("behind two heads");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let server = start_server(wschat::Config {
        keep_alive_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_secs(3),
        ..test_config()
    });
    let mut client = RawClient::connect_tcp(server.addr());
    assert_ok(&client.request(HEALTHZ));
    let answered = Instant::now();
    client.expect_eof();
    let idle = answered.elapsed();
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(2),
        "closed after {idle:?}"
    );
    // A next request begun in time has the handshake timeout, not the
    // keep-alive timeout, to end.
    let mut client = RawClient::connect_tcp(server.addr());
    assert_ok(&client.request(HEALTHZ));
    client.send_raw(b"GET /hea");
    std::thread::sleep(Duration::from_millis(800));
    assert_ok(&client.request(b"lthz HTTP/1.1\r\nHost: x\r\n\r\n"));
}

#[test]
fn a_partial_next_request_gets_408_after_the_handshake_timeout() {
    let server = start_server(wschat::Config {
        keep_alive_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_millis(500),
        ..test_config()
    });
    let mut client = RawClient::connect_tcp(server.addr());
    assert_ok(&client.request(HEALTHZ));
    std::thread::sleep(Duration::from_millis(700));
    client.send_raw(b"GET /healthz HTTP/1.1\r\n");
    let started = Instant::now();
    let response = client.read_response();
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.text(), "request timeout\n");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400), "408 after {took:?}");
    client.expect_eof();
}

#[test]
fn the_last_allowed_answer_says_connection_close() {
    let server = start_server(wschat::Config {
        max_requests_per_connection: 3,
        ..test_config()
    });
    let mut client = RawClient::connect_tcp(server.addr());
    for expected in ["keep-alive", "keep-alive", "close"] {
        let response = client.request(HEALTHZ);
        assert_ok(&response);
        assert_eq!(response.header("connection"), Some(expected));
    }
    client.expect_eof();
}

#[test]
fn the_daemon_takes_the_keep_alive_flags() {
    let daemon = support::Daemon::start(&[
        "--keep-alive-timeout",
        "0.3",
        "--max-requests-per-connection",
        "2",
    ]);
    let mut client = RawClient::connect_tcp(daemon.addr());
    let first = client.request(HEALTHZ);
    assert_eq!(first.header("connection"), Some("keep-alive"));
    let second = client.request(HEALTHZ);
    assert_eq!(second.header("connection"), Some("close"));
    client.expect_eof();
    let mut idle = RawClient::connect_tcp(daemon.addr());
    assert_ok(&idle.request(HEALTHZ));
    let answered = Instant::now();
    idle.expect_eof();
    assert!(answered.elapsed() < Duration::from_secs(2));
}

#[test]
fn answers_to_requests_sent_before_the_clients_fin_all_go_out() {
    let server = start_server(test_config());
    let mut client = RawClient::from_stream(support::tcp_connect_small_rcvbuf(server.addr(), 4096));
    client.send_raw(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20));
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..20 {
        let page = client.read_response();
        assert_eq!(page.body, wschat::http::CHAT_HTML.as_bytes(), "answer {i}");
    }
    client.expect_eof();
}

#[test]
fn head_gets_the_get_answer_without_its_body() {
    let server = start_server(test_config());
    let mut client = RawClient::connect_tcp(server.addr());
    for path in [
        "/",
        "/healthz",
        "/metrics",
        "/nope",
        "/echo",
        "/room/x/messages",
    ] {
        let get = client.request(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        client.send_raw(format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let head = client.read_http_head();
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        assert_eq!(head.header("allow"), get.header("allow"), "{path}");
        if path != "/metrics" {
            assert_eq!(head.content_length(), get.content_length(), "{path}");
        }
    }
    // No body came after any HEAD answer: the next response starts here.
    assert_ok(&client.request(HEALTHZ));
}

#[test]
fn allow_lists_the_methods_of_the_path() {
    let server = start_server(test_config());
    let addr = server.addr();
    for (request, allow) in [
        (
            &b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n"[..],
            "GET, HEAD",
        ),
        (b"DELETE / HTTP/1.1\r\n\r\n", "GET, HEAD"),
        (b"PUT /room/a HTTP/1.1\r\n\r\n", "GET, HEAD"),
        (b"GET /room/a/messages HTTP/1.1\r\n\r\n", "POST"),
        (b"DELETE /room/a/messages HTTP/1.1\r\n\r\n", "POST"),
    ] {
        let (response, _) = ask(addr, request);
        assert_eq!(response.status, 405, "{response:?}");
        assert_eq!(response.header("allow"), Some(allow), "{response:?}");
    }
}

#[test]
fn a_client_behind_a_trusted_http_proxy_is_not_kept() {
    let server = start_server(wschat::Config {
        trusted_proxies: wschat::server::proxy::TrustedProxies::parse(["127.0.0.1"]).unwrap(),
        ..test_config()
    });
    let request = b"GET /healthz HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n";
    let (response, mut client) = ask(server.addr(), request);
    assert_ok(&response);
    assert_eq!(response.header("connection"), Some("close"));
    client.expect_eof();
}

#[test]
fn pipelined_requests_wait_for_a_slow_reader_and_are_all_answered() {
    let server = start_server(wschat::Config {
        max_backpressure: 32 * 1024,
        max_requests_per_connection: 1000,
        ..test_config()
    });
    let stream = support::tcp_connect_small_rcvbuf(server.addr(), 4096);
    let mut client = RawClient::from_stream(stream);
    // 200 pages of 16 KiB asked at once: far more than the queue's bound
    // and the socket buffers hold, so most wait in the server unanswered.
    let count = 200;
    let mut requests = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(count - 1);
    requests.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    client.send_raw(&requests);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..count {
        let page = client.read_response();
        assert_eq!(page.status, 200, "answer {i}");
        assert_eq!(page.body, wschat::http::CHAT_HTML.as_bytes(), "answer {i}");
    }
    client.expect_eof();
}

#[test]
fn shutdown_closes_idle_kept_alive_connections_at_once_and_lets_answers_finish() {
    let server = start_server(wschat::Config {
        max_backpressure: 64 * 1024,
        max_requests_per_connection: 2000,
        shutdown_timeout: Duration::from_secs(10),
        ..test_config()
    });
    let mut idle = RawClient::connect_tcp(server.addr());
    assert_ok(&idle.request(HEALTHZ));
    let mut busy = RawClient::from_stream(support::tcp_connect_small_rcvbuf(server.addr(), 4096));
    // 16 MB of pages asked at once, more than the socket buffers hold.
    busy.send_raw(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000));
    std::thread::sleep(Duration::from_millis(300));
    let handle = server.handle();
    let asked = Instant::now();
    handle.shutdown();
    idle.expect_eof();
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "idle connection closed after {took:?}"
    );
    // Every answer queued before the shutdown arrives whole, then FIN;
    // the requests not answered yet are not.
    let raw = busy.read_until_eof(Duration::from_secs(10));
    let mut rest = raw.as_slice();
    let mut pages = 0;
    while !rest.is_empty() {
        let response = Response::parse(rest).expect("a whole response head");
        let end = response.head.len() + response.content_length();
        assert!(
            rest.len() >= end,
            "a response cut short after {pages} pages"
        );
        assert_eq!(
            &rest[response.head.len()..end],
            wschat::http::CHAT_HTML.as_bytes()
        );
        rest = &rest[end..];
        pages += 1;
    }
    assert!((1..1000).contains(&pages), "{pages} pages");
    drop(busy);
    server.stop().expect("a clean stop");
}

// ---- request bodies ----------------------------------------------------------

/// A `POST /room/lobby/messages` head for a body of `length` bytes, with
/// `extra` header lines.
fn post_head(length: usize, extra: &str) -> Vec<u8> {
    format!(
        "POST /room/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Panics unless `response` is the 401 a post gets until sessions exist.
fn assert_unauthorized(response: &Response) {
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.text(), "missing or invalid Wschat-Session\n");
    assert_eq!(response.header("www-authenticate"), Some("Wschat-Session"));
}

#[test]
fn a_posted_message_is_read_whole_then_refused_without_a_session() {
    let server = start_server(test_config());
    let mut client = RawClient::connect_tcp(server.addr());
    let mut request = post_head(5, "");
    request.extend_from_slice(b"hello");
    let response = client.request(&request);
    assert_unauthorized(&response);
    assert_eq!(response.header("connection"), Some("keep-alive"));
    assert_ok(&client.request(HEALTHZ));
    let metrics = support::Metrics::fetch(server.addr());
    assert_eq!(
        metrics.value("wschat_handshake_failures_total{reason=\"session\"}"),
        1.0
    );
}

#[test]
fn a_body_split_across_many_writes_is_read_whole_and_never_as_a_request() {
    let server = start_server(test_config());
    let mut client = RawClient::connect_tcp(server.addr());
    // A body that reads like requests: it must not be answered as any.
    let body = HEALTHZ.repeat(100);
    let mut bytes = post_head(body.len(), "");
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(b"GET /nope HTTP/1.1\r\n\r\n");
    client.send_in_chunks_paced(&bytes, 97, Duration::from_millis(1));
    assert_unauthorized(&client.read_response());
    assert_eq!(client.read_response().status, 404);
    let last = client.request(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_ok(&last);
    client.expect_eof();
}

#[test]
fn a_post_without_content_length_gets_411() {
    let server = start_server(test_config());
    let addr = server.addr();
    let (response, _) = exchange(
        addr,
        b"POST /room/lobby/messages HTTP/1.1\r\nHost: x\r\n\r\nhello",
    );
    assert_eq!(response.status, 411);
    let (response, body) = exchange(
        addr,
        b"POST /room/lobby/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(response.status, 411);
    let reason = String::from_utf8(body).unwrap();
    assert!(
        reason.contains("send the body with Content-Length"),
        "{reason}"
    );
    // A transfer coding on any request: its end is unknown.
    let (response, _) = exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(response.status, 411);
}

#[test]
fn a_body_over_the_message_size_gets_413_from_its_head_alone() {
    let server = start_server(wschat::Config {
        max_message_size: 1024,
        ..test_config()
    });
    let addr = server.addr();
    for length in ["1025", "99999999999999999999999"] {
        let head = format!(
            "POST /room/lobby/messages HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\
             Expect: 100-continue\r\n\r\n"
        );
        // Only the head is sent: the answer does not wait for a body.
        let (response, body) = exchange(addr, head.as_bytes());
        assert_eq!(response.status, 413, "{length}: no 100 Continue first");
        assert_eq!(body, b"request body too large\n");
    }
    let mut client = RawClient::connect_tcp(addr);
    let mut request = post_head(1024, "");
    request.resize(request.len() + 1024, b'x');
    assert_unauthorized(&client.request(&request));
}

#[test]
fn a_slow_body_gets_408() {
    let server = start_server(wschat::Config {
        handshake_timeout: Duration::from_millis(500),
        ..test_config()
    });
    let mut client = RawClient::connect_tcp(server.addr());
    let started = Instant::now();
    let mut request = post_head(10, "");
    request.extend_from_slice(b"12345");
    client.send_raw(&request);
    let response = client.read_response();
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.text(), "request body not complete in time\n");
    assert!(started.elapsed() >= Duration::from_millis(400));
    client.expect_eof();
    let metrics = support::Metrics::fetch(server.addr());
    assert_eq!(
        metrics.value("wschat_handshake_failures_total{reason=\"body_timeout\"}"),
        1.0
    );
}

#[test]
fn a_content_length_that_cannot_be_read_gets_400() {
    let server = start_server(test_config());
    for headers in [
        "Content-Length: 5, 5\r\n",
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: -5\r\n",
    ] {
        let request = format!("POST /room/lobby/messages HTTP/1.1\r\n{headers}\r\nhello");
        let (response, body) = exchange(server.addr(), request.as_bytes());
        assert_eq!(response.status, 400, "{headers:?}");
        assert_eq!(body, b"invalid Content-Length\n");
    }
}

#[test]
fn a_body_sent_where_none_is_read_closes_the_connection_after_the_answer() {
    let server = start_server(test_config());
    let (response, body) = exchange(
        server.addr(),
        b"GET /healthz HTTP/1.1\r\nContent-Length: 22\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
    );
    assert_eq!((response.status, body.as_slice()), (200, &b"ok"[..]));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let server = start_server(test_config());
    let mut client = RawClient::connect_tcp(server.addr());
    client.send_raw(&post_head(5, "Expect: 100-continue\r\n"));
    let interim = client.read_http_head();
    assert_eq!(interim.status_line(), "HTTP/1.1 100 Continue");
    assert_unauthorized(&client.request(b"hello"));
}

#[test]
fn request_bodies_share_the_inbound_memory_budget() {
    let server = start_server(wschat::Config {
        max_inbound_memory: 1000,
        ..test_config()
    });
    let addr = server.addr();
    let mut first = RawClient::connect_tcp(addr);
    let mut request = post_head(800, "");
    request.resize(request.len() + 700, b'a');
    first.send_raw(&request);
    std::thread::sleep(Duration::from_millis(100));
    let mut second = RawClient::connect_tcp(addr);
    let mut request = post_head(800, "");
    request.resize(request.len() + 700, b'b');
    second.send_raw(&request);
    let refused = second.read_response();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    second.expect_eof();
    assert_unauthorized(&first.request(&[b'a'; 100]));
}

// ---- property: how requests are cut into reads changes nothing -------------

/// Request `pick` of a small set that covers every way a request ends:
/// with or without a body, answered with or without one, CRLF or bare LF.
fn pipelined_request(pick: usize, body: &[u8]) -> Vec<u8> {
    match pick % 6 {
        0 => HEALTHZ.to_vec(),
        1 => b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        2 => b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        3 => {
            let mut post = post_head(body.len(), "");
            post.extend_from_slice(body);
            post
        }
        4 => b"GET /healthz HTTP/1.1\nHost: x\n\n".to_vec(),
        _ => b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(),
    }
}

/// Writes `stream` in pieces ending at `cuts` (a pause after each, so the
/// server tends to read them apart) and returns every byte of the answer.
fn answers_to(addr: SocketAddr, stream: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut client = RawClient::connect_tcp(addr);
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        client.send_raw(&stream[start..end]);
        std::thread::sleep(Duration::from_millis(1));
        start = end;
    }
    client.read_until_eof(Duration::from_secs(10))
}

#[test]
fn any_split_of_pipelined_requests_gives_the_same_answers() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let server = start_server(test_config());
    let addr = server.addr();
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let requests = proptest::collection::vec(0..6usize, 1..8);
    let cuts = proptest::collection::vec(any::<proptest::sample::Index>(), 0..16);
    // Bodies with CR, LF and request lines in them as often as not.
    let body = proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r')], 0..64);
    runner
        .run(&(requests, cuts, body), |(picks, cuts, body)| {
            let mut stream: Vec<u8> = picks
                .iter()
                .flat_map(|&pick| pipelined_request(pick, &body))
                .collect();
            stream.extend_from_slice(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len())).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let whole = answers_to(addr, &stream, &[]);
            let split = answers_to(addr, &stream, &cuts);
            prop_assert_eq!(
                String::from_utf8_lossy(&split),
                String::from_utf8_lossy(&whole),
                "cut at {:?}",
                cuts
            );
            // One answer per request, the last one closing.
            let heads = whole.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
            prop_assert_eq!(heads, picks.len() + 1);
            Ok(())
        })
        .unwrap();
}
