use super::*;

/// What a client sends after the header: never part of it.
const REQUEST: &[u8] = b"GET /room/a HTTP/1.1\r\nHost: chat\r\n\r\n";

const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn complete(source: Option<SocketAddr>, consumed: usize) -> ProxyHeader {
    ProxyHeader::Complete { source, consumed }
}

fn v2(command_version: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = SIG.to_vec();
    bytes.extend([command_version, family]);
    bytes.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// Reads `bytes` (then a request) one split at a time: every shorter
/// prefix is `Partial` or already the final answer, and once a prefix is
/// answered, every longer one gets the same answer.
fn read_every_split(bytes: &[u8]) -> ProxyHeader {
    let mut input = bytes.to_vec();
    input.extend(REQUEST);
    let last = read_proxy_header(&input);
    assert_ne!(last, ProxyHeader::Partial, "{bytes:?}");
    let mut answered = None;
    for k in 0..=input.len() {
        let got = read_proxy_header(&input[..k]);
        match &answered {
            Some(first) => assert_eq!(&got, first, "after {k} bytes"),
            None if got == ProxyHeader::Partial => {}
            None => {
                assert_eq!(got, last, "after {k} bytes");
                answered = Some(got);
            }
        }
    }
    last
}

#[test]
fn v1_tcp4_tcp6_unknown() {
    let tcp4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
    assert_eq!(
        read_every_split(tcp4),
        complete(addr("192.0.2.1:56324"), tcp4.len())
    );
    let tcp6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n";
    assert_eq!(
        read_every_split(tcp6),
        complete(addr("[2001:db8::1]:4711"), tcp6.len())
    );
    let unknown = b"PROXY UNKNOWN\r\n";
    assert_eq!(read_every_split(unknown), complete(None, unknown.len()));
    let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                    ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), MAX_V1_HEADER_BYTES);
    assert_eq!(read_every_split(longest), complete(None, longest.len()));
}

#[test]
fn v1_broken_lines_are_malformed() {
    for line in [
        &b"PROXY TCP4 192.0.2.1\r\n"[..],
        b"PROXY TCP5 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
        b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
        b"PROXY TCP4 192.0.2.256 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
        b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 3\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\r\n",
        b"PROXY \xff\xfe\r\n",
        b"PROXY \r\n",
    ] {
        let got = read_every_split(line);
        assert!(
            matches!(got, ProxyHeader::Invalid(InvalidProxyHeader::Malformed(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn v1_oversize_is_refused_at_107_bytes() {
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(300, b'x');
    let too_long = ProxyHeader::Invalid(InvalidProxyHeader::TooLong);
    assert_eq!(read_proxy_header(&long[..106]), ProxyHeader::Partial);
    assert_eq!(read_proxy_header(&long[..107]), too_long);
    assert_eq!(read_every_split(&long), too_long);
    // One byte over: the `\n` falls past the bound.
    let mut over = b"PROXY UNKNOWN ".to_vec();
    over.resize(106, b'a');
    over.extend(b"\r\n");
    assert_eq!(read_every_split(&over), too_long);
}

/// A v2 PROXY block from 192.0.2.1:56324 to 198.51.100.2:443.
fn v2_proxy_ipv4() -> Vec<u8> {
    let payload = [192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x01, 0xBB];
    v2(0x21, 0x11, &payload)
}

#[test]
fn v2_proxy_from_ipv4() {
    let bytes = v2_proxy_ipv4();
    assert_eq!(bytes.len(), 28);
    assert_eq!(
        read_every_split(&bytes),
        complete(addr("192.0.2.1:56324"), 28)
    );
}

#[test]
fn v2_proxy_ipv6_with_tlvs() {
    let mut payload = Vec::new();
    payload.extend(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    payload.extend(
        "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    payload.extend([0x12, 0x67, 0x01, 0xBB]);
    // AWS NLB's VPC endpoint id (type 0xEA, subtype 1), then a NOOP.
    payload.extend([0xEA, 0x00, 0x17, 0x01]);
    payload.extend(b"vpce-08d2bf15fdf7a0fdd");
    payload.extend([0x04, 0x00, 0x02, 0x00, 0x00]);
    let bytes = v2(0x21, 0x21, &payload);
    assert_eq!(bytes.len(), 16 + 36 + 26 + 5);
    assert_eq!(
        read_every_split(&bytes),
        complete(addr("[2001:db8::1]:4711"), bytes.len())
    );
}

#[test]
fn v2_local_and_unspecified_give_no_source() {
    // HAProxy's and AWS's health checks: LOCAL, with or without addresses.
    let local = v2(0x20, 0x00, &[]);
    assert_eq!(read_every_split(&local), complete(None, 16));
    let with_addresses = v2(0x20, 0x11, &v2_proxy_ipv4()[16..]);
    assert_eq!(read_every_split(&with_addresses), complete(None, 28));
    let unspec = v2(0x21, 0x00, &[]);
    assert_eq!(read_every_split(&unspec), complete(None, 16));
    let unix = v2(0x21, 0x31, &[0; 216]);
    assert_eq!(read_every_split(&unix), complete(None, 16 + 216));
}

#[test]
fn v2_broken_blocks_are_malformed() {
    let block = v2_proxy_ipv4();
    let ipv4 = &block[16..];
    for bytes in [
        v2(0x11, 0x11, ipv4),
        v2(0x31, 0x11, ipv4),
        v2(0x22, 0x11, ipv4),
        v2(0x21, 0x41, ipv4),
        v2(0x21, 0x13, ipv4),
        v2(0x21, 0x11, &ipv4[..4]),
        v2(0x21, 0x21, ipv4),
        // A TLV that claims more bytes than the block has, and leftovers.
        v2(0x21, 0x11, &[ipv4, &[0x04, 0x00, 0x0A, 0x00]].concat()),
        v2(0x21, 0x11, &[ipv4, &[0x04, 0x00]].concat()),
    ] {
        let got = read_every_split(&bytes);
        assert!(
            matches!(got, ProxyHeader::Invalid(InvalidProxyHeader::Malformed(_))),
            "{bytes:02x?}: {got:?}"
        );
    }
}

#[test]
fn v2_oversize_is_refused_from_its_length() {
    let too_long = ProxyHeader::Invalid(InvalidProxyHeader::TooLong);
    let mut fixed = SIG.to_vec();
    fixed.extend([0x21, 0x00, 0xFF, 0xFF]);
    assert_eq!(read_proxy_header(&fixed[..15]), ProxyHeader::Partial);
    assert_eq!(read_proxy_header(&fixed), too_long);
    let largest = v2(0x21, 0x00, &[0; MAX_V2_HEADER_BYTES - 16]);
    assert_eq!(
        read_proxy_header(&largest),
        complete(None, MAX_V2_HEADER_BYTES)
    );
    let over = v2(0x21, 0x00, &[0; MAX_V2_HEADER_BYTES - 15]);
    assert_eq!(read_every_split(&over), too_long);
}

#[test]
fn garbage_and_plain_requests_are_missing() {
    let missing = ProxyHeader::Invalid(InvalidProxyHeader::Missing);
    assert_eq!(read_proxy_header(b""), ProxyHeader::Partial);
    for bytes in [
        REQUEST,
        b"POST / HTTP/1.1\r\n",
        b"PROXI TCP4",
        b"proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXYTCP4",
        b"\r\n\r\n\0\r\nQUIT!",
        b"\r\nGET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00",
        b"\0",
    ] {
        assert_eq!(read_every_split(bytes), missing, "{bytes:?}");
    }
}

#[test]
fn looks_like_works_on_partial_buffers() {
    for yes in [
        &b"P"[..],
        b"PROXY",
        b"PROXY TCP4 192.0.2.1",
        b"PROXY UNKNOWN\r\nGET /",
        b"\r",
        b"\r\n\r\n\0\r\nQUI",
        SIG,
        &v2_proxy_ipv4(),
    ] {
        assert!(looks_like_proxy_header(yes), "{yes:?}");
    }
    for no in [
        &b""[..],
        b"PO",
        b"PROXI",
        b"GET / HTTP/1.1\r\n",
        b"\r\n\r\nGET",
    ] {
        assert!(!looks_like_proxy_header(no), "{no:?}");
    }
}

#[test]
fn refusals_and_messages() {
    assert_eq!(
        InvalidProxyHeader::Missing.refusal(),
        Refusal::ProxyHeaderMissing
    );
    assert_eq!(
        InvalidProxyHeader::TooLong.refusal(),
        Refusal::ProxyHeaderMalformed
    );
    let ProxyHeader::Invalid(bad) = read_proxy_header(b"PROXY TCP5 a b 1 2\r\n") else {
        panic!("not invalid");
    };
    assert_eq!(bad.refusal(), Refusal::ProxyHeaderMalformed);
    assert!(bad
        .to_string()
        .starts_with("malformed PROXY protocol header: v1: "));
    assert_eq!(
        InvalidProxyHeader::Missing.to_string(),
        "no PROXY protocol header"
    );
}
