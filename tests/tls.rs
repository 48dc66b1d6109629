//! TLS in the loop (`--tls-listen`): wss:// with an independent client
//! (tungstenite over rustls), a room shared by the TLS and plain listeners,
//! `/metrics` over TLS, bad input on either port, the handshake timeout,
//! certificate reload on SIGHUP and bad files at start, the shutdown's
//! Close 1001 and the closing handshake ending in `close_notify`, and pings
//! to a silent client. The CA and the certificates are made in the test.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{
    client_frame, decode_all, handshake_request, op, peer_common_name, random_key, start_server,
    test_config, tls_connect, wait_for, wss_connect, Daemon, Metrics, RawClient, Response, TestCa,
    TestServer, TlsClient, IO_TIMEOUT,
};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

fn tls_server(ca: &TestCa, tweak: impl FnOnce(&mut wschat::Config)) -> TestServer {
    let (cert, key) = ca.issue("server", "wschat test server");
    let mut config = wschat::Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..test_config()
    };
    tweak(&mut config);
    start_server(config)
}

/// Reads until the peer closes (or `limit` passes); returns what came and
/// how long it took.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return (got, start.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A TLS 1.0 ClientHello (no supported_versions extension), as an old
/// client sends it.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01]; // client_version TLS 1.0
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&(body.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

fn metric(addr: SocketAddr, series: &str) -> f64 {
    Metrics::fetch(addr).value(series)
}

#[test]
fn wss_echo_and_one_room_for_both_listeners() {
    let ca = TestCa::new("tls-echo");
    let server = tls_server(&ca, |_| {});
    let mut echo = wss_connect(server.tls_addr(), "/echo", ca.client_config());
    echo.send(Message::text("over TLS")).unwrap();
    assert_eq!(echo.read().unwrap(), Message::text("over TLS"));
    let big = vec![0x5a; 300 * 1024];
    echo.send(Message::binary(big.clone())).unwrap();
    assert_eq!(echo.read().unwrap(), Message::binary(big));

    // Many small records in one read (each frame its own record), and
    // records cut by the ends of reads: each decrypted in place, in order.
    let mut raw = tls_connect(server.tls_addr(), ca.client_config());
    let host = server.tls_addr().to_string();
    raw.write_all(&handshake_request(&host, "/echo", &random_key(), &[]))
        .unwrap();
    raw.flush().unwrap();
    for i in 0..300u32 {
        let frame = client_frame(true, op::TEXT, format!("record {i}").as_bytes());
        raw.write_all(&frame).unwrap();
    }
    raw.flush().unwrap();
    let mut received = Vec::new();
    let expected: usize = (0..300u32).map(|i| 2 + format!("record {i}").len()).sum();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + IO_TIMEOUT;
    while !String::from_utf8_lossy(&received).contains("record 299") && Instant::now() < deadline {
        let n = raw.read(&mut chunk).unwrap();
        received.extend_from_slice(&chunk[..n]);
    }
    let body = &received[received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), expected, "every echo, nothing else");
    let texts: Vec<String> = decode_all(body)
        .into_iter()
        .map(|f| String::from_utf8(f.payload).unwrap())
        .collect();
    let want: Vec<String> = (0..300).map(|i| format!("record {i}")).collect();
    assert_eq!(texts, want);

    let mut secure = wss_connect(server.tls_addr(), "/room/mixed", ca.client_config());
    let mut plain = RawClient::connect(server.addr(), "/room/mixed");
    secure.send(Message::text("from wss")).unwrap();
    let from_wss = plain.next_text(IO_TIMEOUT);
    assert!(from_wss.ends_with(":from wss"), "{from_wss}");
    assert_eq!(secure.read().unwrap().into_text().unwrap(), from_wss);
    plain.send_text("from ws");
    let from_ws = secure.read().unwrap().into_text().unwrap();
    assert!(from_ws.ends_with(":from ws"), "{from_ws}");
    secure.close(None).unwrap();
}

#[test]
fn the_page_and_metrics_over_https() {
    let ca = TestCa::new("tls-https");
    let server = tls_server(&ca, |_| {});
    // Both on one kept-alive TLS connection: /metrics, then the page
    // with `Connection: close`, after which the server closes.
    let mut stream = tls_connect(server.tls_addr(), ca.client_config());
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut both = Vec::new();
    let _ = stream.read_to_end(&mut both);
    let metrics = Response::parse(&both).expect("the /metrics answer");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert_eq!(metrics.header("connection"), Some("keep-alive"));
    let (page, rest) = metrics.body.split_at(metrics.content_length());
    let page = String::from_utf8_lossy(page);
    assert!(
        page.contains("wschat_tls_certificate_expiry_seconds "),
        "{page}"
    );
    assert!(
        page.contains("wschat_tls_handshakes_total{outcome=\"ok\"} 1"),
        "{page}"
    );
    let page = String::from_utf8_lossy(rest);
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.contains("Connection: close\r\n"), "{page}");
    assert!(page.ends_with(wschat::http::CHAT_HTML), "the whole page");
}

#[test]
fn a_client_hello_on_the_plain_port_is_closed_at_once() {
    let ca = TestCa::new("tls-plain-port");
    let server = tls_server(&ca, |c| c.handshake_timeout = Duration::from_secs(30));
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.write_all(&tls10_client_hello()).unwrap();
    let (got, took) = read_until_closed(&mut stream, Duration::from_secs(10));
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    assert!(
        got.ends_with("this port speaks plain HTTP, not TLS\n"),
        "{got}"
    );
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    let failures = "wschat_handshake_failures_total{reason=\"tls_on_plain_port\"}";
    assert_eq!(metric(server.addr(), failures), 1.0);
}

#[test]
fn bad_handshakes_fail_alone_and_are_counted_by_reason() {
    let ca = TestCa::new("tls-bad");
    let server = tls_server(&ca, |_| {});
    let mut chatting = wss_connect(server.tls_addr(), "/echo", ca.client_config());

    let mut plaintext = TcpStream::connect(server.tls_addr()).unwrap();
    plaintext
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut plaintext, IO_TIMEOUT);
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert: {answer:?}");

    let mut old = TcpStream::connect(server.tls_addr()).unwrap();
    old.write_all(&tls10_client_hello()).unwrap();
    let (answer, _) = read_until_closed(&mut old, IO_TIMEOUT);
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert: {answer:?}");

    let mut garbage = TcpStream::connect(server.tls_addr()).unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x03, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    garbage.write_all(&[0xde; 600]).unwrap();
    let _ = read_until_closed(&mut garbage, IO_TIMEOUT);

    chatting.send(Message::text("still here")).unwrap();
    assert_eq!(chatting.read().unwrap(), Message::text("still here"));
    let metrics = Metrics::fetch(server.addr());
    let failed: f64 = metrics
        .text
        .lines()
        .filter(|l| l.starts_with("wschat_tls_handshakes_total{") && !l.contains("\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failed, 3.0, "{}", metrics.text);
    assert_eq!(
        metrics.value("wschat_tls_handshakes_total{outcome=\"ok\"}"),
        1.0
    );
}

#[test]
fn a_client_hello_cut_and_left_hanging_meets_the_handshake_timeout() {
    let ca = TestCa::new("tls-hanging");
    let server = tls_server(&ca, |c| c.handshake_timeout = Duration::from_millis(300));
    let mut stream = TcpStream::connect(server.tls_addr()).unwrap();
    let hello = tls10_client_hello();
    stream.write_all(&hello[..20]).unwrap();
    let (_, took) = read_until_closed(&mut stream, Duration::from_secs(10));
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert_eq!(metric(server.addr(), "wschat_timeouts_total"), 1.0);
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let ca = TestCa::new("tls-reload");
    let (cert, key) = ca.issue("live", "first certificate");
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let daemon = Daemon::start(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert_s,
        "--tls-key",
        key_s,
    ]);
    let tls_addr: SocketAddr = wait_for(IO_TIMEOUT, || {
        let line = daemon.log_lines_with("listening for TLS on ").pop()?;
        line.rsplit(' ').next()?.parse().ok()
    })
    .expect("a TLS listener");
    let mut before = wss_connect(tls_addr, "/echo", ca.client_config());
    assert_eq!(peer_common_name(before.get_ref()), "first certificate");

    let (next_cert, next_key) = ca.issue("next", "second certificate");
    std::fs::copy(&next_cert, &cert).unwrap();
    std::fs::copy(&next_key, &key).unwrap();
    hangup(&daemon);
    wait_for(IO_TIMEOUT, || {
        let lines = daemon.log_lines_with("TLS certificate reloaded");
        lines
            .iter()
            .any(|l| l.contains("second certificate"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no reload logged:\n{}", daemon.log_tail()));
    let after = tls_connect(tls_addr, ca.client_config());
    assert_eq!(peer_common_name(&after), "second certificate");
    before.send(Message::text("kept my session")).unwrap();
    assert_eq!(before.read().unwrap(), Message::text("kept my session"));

    std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\nhalf a file").unwrap();
    hangup(&daemon);
    wait_for(IO_TIMEOUT, || {
        (!daemon
            .log_lines_with("not reloaded, the old one stays")
            .is_empty())
        .then_some(())
    })
    .unwrap_or_else(|| panic!("no failed reload logged:\n{}", daemon.log_tail()));
    let still = tls_connect(tls_addr, ca.client_config());
    assert_eq!(peer_common_name(&still), "second certificate");
}

fn hangup(daemon: &Daemon) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn bad_files_stop_the_start_with_status_1_and_a_reason() {
    let ca = TestCa::new("tls-start");
    let (cert, _) = ca.issue("a", "a");
    let (_, other_key) = ca.issue("b", "b");
    let missing = ca.dir().join("missing.pem");
    for (cert, key, reason) in [
        (&missing, &other_key, "cannot read"),
        (&cert, &other_key, "refused"),
        (&cert, &cert, "no PEM private key"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }
}

/// After the server's last record: `close_notify` (rustls reads it as a
/// clean end, `Ok(0)`, where a bare FIN is `UnexpectedEof`), then the TCP
/// connection's end.
fn assert_close_notify_then_eof(stream: &mut TlsClient) {
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{n} more bytes of plaintext after the Close frame"),
        Err(e) => panic!("no close_notify before the end: {e}"),
    }
    // The socket under TLS: nothing more, then EOF (a FIN, not a reset).
    match stream.sock.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes after close_notify: {:02x?}", &buf[..n]),
        Err(e) => panic!("no clean EOF after close_notify: {e}"),
    }
}

#[test]
fn shutdown_sends_close_1001_over_tls_then_close_notify_and_eof() {
    let ca = TestCa::new("tls-shutdown");
    // A long shutdown timeout: the server must stop because the client
    // finished the closing handshake, not because the time ran out.
    let server = tls_server(&ca, |c| c.shutdown_timeout = Duration::from_secs(20));
    let mut ws = wss_connect(server.tls_addr(), "/room/bye", ca.client_config());
    ws.send(Message::text("before")).unwrap();
    let first = ws.read().unwrap().into_text().unwrap();
    assert!(first.ends_with(":before"), "{first}");

    let started = Instant::now();
    server.handle().shutdown();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away, "{frame:?}"),
        other => panic!("expected Close 1001, got {other:?}"),
    }
    // tungstenite queued the Close reply; send it, as a well-behaved client.
    ws.flush().unwrap();
    assert_close_notify_then_eof(ws.get_mut());
    server.stop().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
}

#[test]
fn a_closing_handshake_the_client_starts_ends_with_close_notify() {
    let ca = TestCa::new("tls-client-close");
    let server = tls_server(&ca, |_| {});
    let mut ws = wss_connect(server.tls_addr(), "/echo", ca.client_config());
    ws.send(Message::text("one more")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("one more"));
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .unwrap();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal, "{frame:?}"),
        other => panic!("expected the Close reply, got {other:?}"),
    }
    assert_close_notify_then_eof(ws.get_mut());
}

#[test]
fn a_silent_wss_client_is_pinged_and_its_pongs_keep_it_open() {
    let ca = TestCa::new("tls-ping");
    let (ping, idle) = (Duration::from_millis(150), Duration::from_secs(1));
    let server = tls_server(&ca, |c| {
        c.ping_interval = ping;
        c.idle_timeout = idle;
    });
    let mut ws = wss_connect(server.tls_addr(), "/echo", ca.client_config());
    // The client sends nothing but the Pongs tungstenite answers each Ping
    // with (on its next read), for longer than the idle timeout.
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < idle + idle / 2 {
        match ws.read().unwrap() {
            Message::Ping(_) => pings += 1,
            other => panic!("expected a Ping, got {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(pings >= 3, "{pings} pings in {took:?}");
    assert!(took < IO_TIMEOUT, "pings came every {:?}", took / pings);
    ws.send(Message::text("still open")).unwrap();
    let echo = loop {
        match ws.read().unwrap() {
            Message::Ping(_) => {}
            other => break other,
        }
    };
    assert_eq!(echo, Message::text("still open"));
    assert_eq!(metric(server.addr(), "wschat_timeouts_total"), 0.0);
}

#[test]
fn a_slow_wss_reader_is_cut_at_its_bound_while_a_fast_one_keeps_receiving() {
    let ca = TestCa::new("tls-slow");
    let server = tls_server(&ca, |c| c.max_backpressure = 64 * 1024);
    let slow_tcp = support::tcp_connect_small_rcvbuf(server.tls_addr(), 4096);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(ca.client_config(), name).unwrap();
    let mut slow_tls = rustls::StreamOwned::new(conn, slow_tcp);
    let url = format!("wss://localhost:{}/room/flood", server.tls_addr().port());
    let (_slow, _) = tungstenite::client(url.as_str(), &mut slow_tls).expect("slow wss");
    let mut fast = wss_connect(server.tls_addr(), "/room/flood", ca.client_config());
    let mut sender = RawClient::connect(server.addr(), "/room/flood");
    let line = "x".repeat(16_000);
    for i in 0..1000 {
        // The fast reader (and the sender, a member too) keep up: each
        // reads every message before the next is sent.
        sender.send_text(&line);
        assert!(sender.next_text(IO_TIMEOUT).ends_with(&line));
        let got = fast.read().unwrap_or_else(|e| panic!("message {i}: {e}"));
        let text = got.into_text().unwrap();
        assert!(
            text.ends_with(&line),
            "message {i}: {:?}",
            &text[..text.len().min(80)]
        );
    }
    let cut = wait_for(IO_TIMEOUT, || {
        let n = metric(server.addr(), "wschat_slow_consumer_disconnects_total");
        (n >= 1.0).then_some(n)
    });
    assert_eq!(cut, Some(1.0), "the slow reader, and only it, is cut");
}
