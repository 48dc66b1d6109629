use super::*;
use crate::protocol::handshake::parse_head;

const PROXY: &str = "10.0.0.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted() -> TrustedProxies {
    TrustedProxies::parse(["10.0.0.0/8", "fd00::/8"]).unwrap()
}

/// The client address of a request with these header lines, from `peer`.
fn client_from(peer: &str, headers: &[&str]) -> IpAddr {
    let mut head = String::from("GET /room/a HTTP/1.1\r\nHost: chat\r\n");
    for line in headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let head = parse_head(head.as_bytes()).unwrap();
    client_address(ip(peer), &head, &trusted())
}

fn client(headers: &[&str]) -> IpAddr {
    client_from(PROXY, headers)
}

#[test]
fn untrusted_peers_are_their_own_client() {
    for headers in [
        &["X-Forwarded-For: 203.0.113.7"][..],
        &["Forwarded: for=203.0.113.7"],
        &[],
    ] {
        assert_eq!(client_from("198.51.100.2", headers), ip("198.51.100.2"));
        assert_eq!(client_from("2001:db8::9", headers), ip("2001:db8::9"));
    }
}

#[test]
fn a_trusted_peer_without_headers_is_the_client() {
    assert_eq!(client(&[]), ip(PROXY));
    assert_eq!(client(&["X-Forwarded-For:"]), ip(PROXY));
}

#[test]
fn mapped_peers_are_trusted_by_their_ipv4_range() {
    let got = client_from("::ffff:10.0.0.1", &["X-Forwarded-For: 203.0.113.7"]);
    assert_eq!(got, ip("203.0.113.7"));
}

#[test]
fn x_forwarded_for_right_most_untrusted_wins() {
    assert_eq!(client(&["X-Forwarded-For: 203.0.113.7"]), ip("203.0.113.7"));
    // Trusted hops are skipped; what a client wrote on the left is not read.
    let chain = "X-Forwarded-For: 6.6.6.6, 203.0.113.7, 10.0.0.2,10.0.0.3";
    assert_eq!(client(&[chain]), ip("203.0.113.7"));
    assert_eq!(client(&["x-forwarded-for: 203.0.113.7"]), ip("203.0.113.7"));
    assert_eq!(client(&["X-FORWARDED-FOR: 203.0.113.7"]), ip("203.0.113.7"));
}

#[test]
fn x_forwarded_for_over_several_lines_is_one_list() {
    let lines = [
        "X-Forwarded-For: 6.6.6.6",
        "X-Forwarded-For: 203.0.113.7, 10.0.0.2",
    ];
    assert_eq!(client(&lines), ip("203.0.113.7"));
    let lines = ["X-Forwarded-For: 203.0.113.7", "X-Forwarded-For: 10.0.0.2"];
    assert_eq!(client(&lines), ip("203.0.113.7"));
    let lines = ["X-Forwarded-For: 10.0.0.2", "X-Forwarded-For: 203.0.113.7"];
    assert_eq!(client(&lines), ip("203.0.113.7"));
}

#[test]
fn every_hop_trusted_gives_the_left_most() {
    let all = "X-Forwarded-For: 10.0.0.5, fd00::6, ::ffff:10.0.0.7";
    assert_eq!(client(&[all]), ip("10.0.0.5"));
    let all = "Forwarded: for=10.0.0.5, for=\"[fd00::6]\"";
    assert_eq!(client(&[all]), ip("10.0.0.5"));
}

#[test]
fn x_forwarded_for_ports_ipv6_and_empty_elements() {
    for (value, want) in [
        ("203.0.113.7:8080", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("203.0.113.7, , 10.0.0.2,", "203.0.113.7"),
        ("  203.0.113.7\t", "203.0.113.7"),
    ] {
        let line = format!("X-Forwarded-For: {value}");
        assert_eq!(client(&[&line]), ip(want), "{value}");
    }
}

#[test]
fn unreadable_hops_stop_the_walk() {
    for (value, want) in [
        ("garbage", PROXY),
        ("unknown", PROXY),
        ("203.0.113.7, garbage, 10.0.0.2", "10.0.0.2"),
        ("203.0.113.7, unknown, 10.0.0.2", "10.0.0.2"),
        ("203.0.113.7, 10.0.0.2:99999", PROXY),
        ("203.0.113.7, 300.1.1.1", PROXY),
        ("203.0.113.7, fe80::1%eth0", PROXY),
        ("203.0.113.7, [2001:db8::1", PROXY),
        ("203.0.113.7, [2001:db8::1]x", PROXY),
        ("203.0.113.7, \"203.0.113.8\"", PROXY),
    ] {
        let line = format!("X-Forwarded-For: {value}");
        assert_eq!(client(&[&line]), ip(want), "{value}");
    }
}

#[test]
fn forwarded_for_parameters() {
    let rfc = "Forwarded: for=192.0.2.60;proto=http;by=203.0.113.43";
    assert_eq!(client(&[rfc]), ip("192.0.2.60"));
    let v6 = "Forwarded: for=\"[2001:db8:cafe::17]:4711\"";
    assert_eq!(client(&[v6]), ip("2001:db8:cafe::17"));
    let v4_port = "Forwarded: For=\"192.0.2.43:47011\"";
    assert_eq!(client(&[v4_port]), ip("192.0.2.43"));
    let obfuscated_port = "Forwarded: proto=https; FOR=\"[2001:db8::1]:_abc-1\"";
    assert_eq!(client(&[obfuscated_port]), ip("2001:db8::1"));
    let chain = "Forwarded: for=6.6.6.6, for=192.0.2.43;by=10.0.0.9, for=10.0.0.2";
    assert_eq!(client(&[chain]), ip("192.0.2.43"));
    let lines = [
        "Forwarded: for=192.0.2.43",
        "Forwarded: for=10.0.0.2;proto=https",
    ];
    assert_eq!(client(&lines), ip("192.0.2.43"));
}

#[test]
fn forwarded_hidden_or_broken_hops_stop_the_walk() {
    for (value, want) in [
        ("for=unknown", PROXY),
        ("for=_hidden", PROXY),
        ("for=192.0.2.43, for=unknown, for=10.0.0.2", "10.0.0.2"),
        ("for=192.0.2.43, for=_gazonk, for=10.0.0.2", "10.0.0.2"),
        // An element without `for`: that proxy did not say whom it served.
        ("for=192.0.2.43, proto=https", PROXY),
        ("for=192.0.2.43, for=10.0.0.2;for=10.0.0.3", PROXY),
        ("for=192.0.2.43, for", PROXY),
        ("for=192.0.2.43, =10.0.0.2", PROXY),
        ("for=192.0.2.43, for=", PROXY),
        ("for=192.0.2.43, for=\"10.0.0.2", PROXY),
        ("for=192.0.2.43, for=\"[2001:db8::1]\"x", PROXY),
        ("for=192.0.2.43, for=10.0.0.2\"", PROXY),
        ("for=192.0.2.43, for=\"10.0.0.\\2\"", PROXY),
        ("for=192.0.2.43, for=\"[2001:db8::1]:http\"", PROXY),
        ("for=192.0.2.43, for=10.0.0.2;ext=\"a\\\"", PROXY),
        ("for=192.0.2.43, for=10.0.0.2;ext=a\\b", PROXY),
    ] {
        let line = format!("Forwarded: {value}");
        assert_eq!(client(&[&line]), ip(want), "{value}");
    }
}

#[test]
fn quoted_separators_stay_inside_their_value() {
    let line = "Forwarded: for=192.0.2.43;ext=\"a,b;c\", for=10.0.0.2";
    assert_eq!(client(&[line]), ip("192.0.2.43"));
    let line = "Forwarded: for=192.0.2.43;ext=\"a\\\",b\", for=10.0.0.2";
    assert_eq!(client(&[line]), ip("192.0.2.43"));
    let parts: Vec<&[u8]> = Unquoted::new(b"a,\"b,c\",d\\,e,", b',').collect();
    assert_eq!(
        parts,
        [&b"a"[..], b"\"b,c\"", b"d\\", b"e", b""],
        "escapes only count inside quotes"
    );
}

#[test]
fn forwarded_wins_over_x_forwarded_for() {
    let both = ["X-Forwarded-For: 198.51.100.1", "Forwarded: for=192.0.2.43"];
    assert_eq!(client(&both), ip("192.0.2.43"));
    // Even when Forwarded says less: it is the header that is read.
    let both = ["Forwarded: for=unknown", "X-Forwarded-For: 198.51.100.1"];
    assert_eq!(client(&both), ip(PROXY));
    // A Forwarded with no element at all says nothing: X-Forwarded-For is read.
    let empty = ["Forwarded: , ", "X-Forwarded-For: 198.51.100.1"];
    assert_eq!(client(&empty), ip("198.51.100.1"));
}

#[test]
fn nodes() {
    for (node, want) in [
        ("192.0.2.1", Some("192.0.2.1")),
        ("192.0.2.1:80", Some("192.0.2.1")),
        ("192.0.2.1:_p", Some("192.0.2.1")),
        ("[::1]", Some("::1")),
        ("[::1]:0", Some("::1")),
        ("::1", Some("::1")),
        ("::ffff:1.2.3.4", Some("::ffff:1.2.3.4")),
        ("unknown", None),
        ("_hidden", None),
        ("192.0.2.1:", None),
        ("192.0.2.1:_", None),
        ("192.0.2.1:_a b", None),
        ("[192.0.2.1]", None),
        ("[::1]:", None),
        ("[::1]80", None),
        ("", None),
    ] {
        assert_eq!(parse_node(node), want.map(ip), "{node:?}");
    }
}
