//! Real client addresses behind proxies: `Forwarded` / `X-Forwarded-For`
//! from a trusted and from an untrusted peer, and PROXY protocol v1 and v2
//! headers (valid, malformed, missing, from an untrusted peer, before
//! TLS), with the per-address limit applied to the real address.
//!
//! Peers are told apart by their loopback source address: 127.0.0.1 is
//! the trusted proxy, 127.0.0.2 an untrusted client.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use support::{
    handshake_request, random_key, start_server, tcp_connect_from, test_config, wait_for, Daemon,
    Metrics, RawClient, Response, TestCa, TestServer, IO_TIMEOUT,
};
use wschat::server::proxy::TrustedProxies;

const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn server(proxy_protocol: bool) -> TestServer {
    start_server(wschat::Config {
        trusted_proxies: TrustedProxies::parse(["127.0.0.1"]).unwrap(),
        proxy_protocol,
        max_connections_per_ip: Some(1),
        ..test_config()
    })
}

/// Sends `prefix` then an upgrade to `/echo` with `extra` headers from
/// `source`; returns the response and the open client.
fn upgrade_from(
    source: IpAddr,
    addr: SocketAddr,
    prefix: &[u8],
    extra: &[(&str, &str)],
) -> (Response, RawClient) {
    let mut stream = tcp_connect_from(source, addr);
    stream.write_all(prefix).unwrap();
    let request = handshake_request(&addr.to_string(), "/echo", &random_key(), extra);
    stream.write_all(&request).unwrap();
    let mut client = RawClient::from_stream(stream);
    let head = client.read_http_head();
    (head, client)
}

fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 9502\r\n").into_bytes()
}

/// A PROXY v2 header for a TCP over IPv4 connection from `client`.
fn v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&9502u16.to_be_bytes());
    h
}

/// A refusal count from `/metrics`, asked from the untrusted address
/// (the trusted one must send a PROXY header first).
fn refused(addr: SocketAddr, label: &str) -> f64 {
    let mut stream = tcp_connect_from(STRANGER, addr);
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let response = Response::parse(&raw).expect("a response");
    assert_eq!(response.status, 200);
    let metrics = Metrics {
        text: String::from_utf8_lossy(&response.body).into_owned(),
    };
    metrics.value(&format!(
        "wschat_handshake_failures_total{{reason=\"{label}\"}}"
    ))
}

#[test]
fn forwarded_for_from_the_trusted_proxy_names_the_client_for_the_limits() {
    let server = server(false);
    let addr = server.addr();
    let xff = |ip| [("X-Forwarded-For", ip)];
    let (head, mut a) = upgrade_from(PROXY, addr, b"", &xff("203.0.113.7"));
    assert_eq!(head.status, 101);
    let (head, _b) = upgrade_from(PROXY, addr, b"", &xff("198.51.100.1, 203.0.113.8"));
    assert_eq!(head.status, 101, "another client behind the same proxy");
    let (head, _) = upgrade_from(PROXY, addr, b"", &xff("203.0.113.7"));
    assert_eq!(head.status, 429, "203.0.113.7 is at its limit of 1");
    let (head, _) = upgrade_from(PROXY, addr, b"", &[("Forwarded", "for=203.0.113.7")]);
    assert_eq!(head.status, 429, "Forwarded names the same client");
    a.send_text("still fine");
    a.expect_text("still fine");
}

#[test]
fn forwarded_for_from_anyone_else_is_ignored() {
    let server = server(false);
    let addr = server.addr();
    let (head, _a) = upgrade_from(STRANGER, addr, b"", &[("X-Forwarded-For", "203.0.113.7")]);
    assert_eq!(head.status, 101);
    let (head, _) = upgrade_from(STRANGER, addr, b"", &[("X-Forwarded-For", "203.0.113.9")]);
    assert_eq!(head.status, 429, "both are 127.0.0.2, whatever they claim");
}

#[test]
fn proxy_protocol_v1_and_v2_name_the_client() {
    let server = server(true);
    let addr = server.addr();
    let (head, mut a) = upgrade_from(PROXY, addr, &v1("198.51.100.1"), &[]);
    assert_eq!(head.status, 101);
    a.send_text("behind v1");
    a.expect_text("behind v1");
    let (head, mut b) = upgrade_from(PROXY, addr, &v2([198, 51, 100, 2], 40001), &[]);
    assert_eq!(head.status, 101);
    b.send_text("behind v2");
    b.expect_text("behind v2");
    let (head, _) = upgrade_from(PROXY, addr, &v2([198, 51, 100, 1], 40002), &[]);
    assert_eq!(head.status, 429, "198.51.100.1 again, by v2 this time");
}

#[test]
fn proxy_protocol_refusals() {
    let server = start_server(wschat::Config {
        trusted_proxies: TrustedProxies::parse(["127.0.0.1"]).unwrap(),
        proxy_protocol: true,
        ..test_config()
    });
    let addr = server.addr();
    let (head, _) = upgrade_from(PROXY, addr, b"", &[]);
    assert_eq!(head.status, 400, "a trusted peer must send the header");
    assert_eq!(refused(addr, "proxy_header_missing"), 1.0);
    let (head, _) = upgrade_from(PROXY, addr, b"PROXY TCP4 not-an-address\r\n", &[]);
    assert_eq!(head.status, 400);
    assert_eq!(refused(addr, "proxy_header_malformed"), 1.0);
    let (head, _) = upgrade_from(STRANGER, addr, &v1("198.51.100.3"), &[]);
    assert_eq!(head.status, 400, "only a trusted proxy may send one");
    assert_eq!(refused(addr, "proxy_header_untrusted"), 1.0);
    let (head, _) = upgrade_from(STRANGER, addr, b"", &[]);
    assert_eq!(
        head.status, 101,
        "an untrusted client without a header is served"
    );
}

#[test]
fn proxy_protocol_comes_before_tls() {
    let ca = TestCa::new("proxy-tls");
    let (cert, key) = ca.issue("server", "behind a proxy");
    let server = start_server(wschat::Config {
        trusted_proxies: TrustedProxies::parse(["127.0.0.1"]).unwrap(),
        proxy_protocol: true,
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..test_config()
    });
    let mut tcp = TcpStream::connect(server.tls_addr()).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.write_all(&v1("198.51.100.4")).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(ca.client_config(), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
}

#[test]
fn log_lines_name_the_real_client() {
    let daemon = Daemon::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--proxy-protocol",
        "--allowed-origin",
        "https://chat.example",
    ]);
    let origin = [("Origin", "https://evil.example")];
    let (head, _) = upgrade_from(PROXY, daemon.addr(), &v1("198.51.100.5"), &origin);
    assert_eq!(head.status, 403);
    wait_for(IO_TIMEOUT, || {
        let lines = daemon.log_lines_with("refused: 403");
        lines
            .iter()
            .any(|l| l.contains("198.51.100.5"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no refusal naming the client:\n{}", daemon.log_tail()));
}

#[test]
fn a_missing_header_is_refused_once_however_the_bytes_come() {
    let server = start_server(wschat::Config {
        trusted_proxies: TrustedProxies::parse(["127.0.0.1"]).unwrap(),
        proxy_protocol: true,
        ..test_config()
    });
    let addr = server.addr();
    let mut stream = tcp_connect_from(PROXY, addr);
    stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let _ = stream.write_all(b"Host: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("PROXY protocol header required"),
        "{answer}"
    );
    assert_eq!(refused(addr, "proxy_header_missing"), 1.0);
}
