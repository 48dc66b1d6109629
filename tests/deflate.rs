//! permessage-deflate (RFC 7692) over real sockets, with a client-side
//! codec written here on flate2 directly (not the crate's wrappers), in the
//! spirit of the Autobahn testsuite's sections 12 and 13.

mod support;

use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use support::{op, rsv, start_server, test_config, RawClient, Response};
use wschat::config::CompressionMode;

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// The client's half of the extension.
struct ClientCodec {
    compress: Compress,
    decompress: Decompress,
    /// Reset the compressor after each message (client_no_context_takeover).
    reset_out: bool,
    /// Reset the decompressor after each message (server_no_context_takeover).
    reset_in: bool,
}

impl ClientCodec {
    fn new(window: u8, response: &str) -> ClientCodec {
        ClientCodec {
            compress: Compress::new_with_window_bits(Compression::default(), false, window),
            decompress: Decompress::new_with_window_bits(false, 15),
            reset_out: response.contains("client_no_context_takeover"),
            reset_in: response.contains("server_no_context_takeover"),
        }
    }

    fn deflate(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let mut input = data;
        loop {
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .unwrap();
            input = &input[(self.compress.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.len() + 64);
        }
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        if self.reset_out {
            self.compress.reset();
        }
        out
    }

    fn inflate(&mut self, data: &[u8]) -> Vec<u8> {
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(data.len() * 4 + 64);
        let mut rest = &input[..];
        loop {
            let before = self.decompress.total_in();
            self.decompress
                .decompress_vec(rest, &mut out, FlushDecompress::Sync)
                .unwrap();
            rest = &rest[(self.decompress.total_in() - before) as usize..];
            if rest.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.len() + 1024);
        }
        if self.reset_in {
            self.decompress.reset(false);
        }
        out
    }
}

/// Connects to `path` offering `offer`; returns the client and the
/// `Sec-WebSocket-Extensions` of the 101 (if any).
fn connect(addr: std::net::SocketAddr, path: &str, offer: &str) -> (RawClient, Option<String>) {
    let client =
        RawClient::connect_with_headers(addr, path, &[("Sec-WebSocket-Extensions", offer)]);
    let head: &Response = client.handshake_response().unwrap();
    let ext = head.header("sec-websocket-extensions").map(str::to_string);
    (client, ext)
}

fn server(mode: CompressionMode) -> support::TestServer {
    let mut config = test_config();
    config.compression = mode;
    config.max_message_size = 1 << 20;
    start_server(config)
}

#[test]
fn negotiation_answers_over_the_wire() {
    let shared = server(CompressionMode::Shared);
    let cases = [
        (
            "permessage-deflate; client_max_window_bits",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (
            "permessage-deflate; server_max_window_bits=7, permessage-deflate",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        ("permessage-deflate; bogus", None),
        ("x-webkit-deflate-frame", None),
    ];
    for (offer, expected) in cases {
        let (_c, ext) = connect(shared.addr(), "/echo", offer);
        assert_eq!(ext.as_deref(), expected, "{offer}");
    }
    let off = server(CompressionMode::Off);
    let (_c, ext) = connect(off.addr(), "/echo", "permessage-deflate");
    assert_eq!(ext, None);
    let dedicated = server(CompressionMode::Dedicated);
    let (_c, ext) = connect(
        dedicated.addr(),
        "/echo",
        "permessage-deflate; server_max_window_bits=10",
    );
    assert_eq!(
        ext.as_deref(),
        Some("permessage-deflate; server_max_window_bits=10")
    );
}

/// Autobahn 12.x/13.x style: for each offer, many message sizes echo intact,
/// compressed both ways.
#[test]
fn echo_of_many_sizes_for_every_offer() {
    // (mode, offer, the client's window, whether the server compresses)
    for (mode, offer, client_window, compresses) in [
        (CompressionMode::Shared, "permessage-deflate", 15, true),
        (CompressionMode::Shared, "permessage-deflate; client_max_window_bits=9", 9, true),
        (CompressionMode::Shared, "permessage-deflate; client_max_window_bits=15", 15, true),
        (CompressionMode::Shared, "permessage-deflate; client_no_context_takeover", 15, true),
        (CompressionMode::Shared, "permessage-deflate; server_max_window_bits=15", 15, true),
        // A narrowed server window gets plain frames in shared mode, and
        // zlib cannot keep to 8 bits in either mode.
        (CompressionMode::Shared, "permessage-deflate; server_max_window_bits=12", 15, false),
        (CompressionMode::Shared, "permessage-deflate; server_max_window_bits=8", 15, false),
        (CompressionMode::Dedicated, "permessage-deflate; server_max_window_bits=8", 15, false),
        (CompressionMode::Dedicated, "permessage-deflate", 15, true),
        (CompressionMode::Dedicated, "permessage-deflate; client_no_context_takeover", 15, true),
        (CompressionMode::Dedicated, "permessage-deflate; server_no_context_takeover", 12, true),
        (CompressionMode::Dedicated, "permessage-deflate; server_max_window_bits=9", 15, true),
        (
            CompressionMode::Dedicated,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=11",
            11,
            true,
        ),
        (
            CompressionMode::Dedicated,
            "permessage-deflate; server_max_window_bits=7, permessage-deflate; client_max_window_bits=10",
            10,
            true,
        ),
    ] {
        let server = server(mode);
        let (mut client, ext) = connect(server.addr(), "/echo", offer);
        let ext = ext.unwrap_or_else(|| panic!("{offer} accepted"));
        let mut codec = ClientCodec::new(client_window, &ext);
        for size in [16usize, 64, 256, 1024, 4096, 16384, 65536, 131072] {
            for round in 0..3 {
                let text: String = (0..size)
                    .map(|i| char::from(b'a' + ((i * 7 + round) % 26) as u8))
                    .collect();
                client.send_frame(true, rsv::RSV1, op::TEXT, &codec.deflate(text.as_bytes()), true);
                let frame = client.read_frame();
                assert_eq!(frame.opcode, op::TEXT);
                // Below --compression-min-size (64) the echo goes plain.
                let payload = if size >= 64 && compresses {
                    assert_eq!(frame.rsv, rsv::RSV1, "{offer}: echo of {size} is compressed");
                    codec.inflate(&frame.payload)
                } else {
                    assert_eq!(frame.rsv, 0, "{offer}: echo of {size} is plain");
                    frame.payload
                };
                assert_eq!(payload, text.as_bytes(), "{offer} size {size}");
            }
        }
        client.send_close(Some(1000), b"");
        client.expect_close(1000);
    }
}

#[test]
fn fragmented_compressed_message_and_short_messages_sent_plain() {
    let server = server(CompressionMode::Shared);
    let (mut client, ext) = connect(server.addr(), "/echo", "permessage-deflate");
    let mut codec = ClientCodec::new(15, &ext.unwrap());
    let text = "fragmented and compressed ☃ ".repeat(40);
    let compressed = codec.deflate(text.as_bytes());
    let (a, b) = compressed.split_at(compressed.len() / 3);
    client.send_frame(false, rsv::RSV1, op::TEXT, a, true);
    client.send_ping(b"between");
    client.send_frame(true, 0, op::CONTINUATION, b, true);
    client.expect_pong(b"between");
    let frame = client.read_frame();
    assert_eq!(codec.inflate(&frame.payload), text.as_bytes());
    // Below --compression-min-size (64): sent uncompressed.
    client.send_frame(true, rsv::RSV1, op::TEXT, &codec.deflate(b"tiny"), true);
    let frame = client.read_frame();
    assert_eq!((frame.rsv, frame.payload.as_slice()), (0, &b"tiny"[..]));
    // The client may send uncompressed messages too.
    client.send_text("plain from the client");
    client.expect_text("plain from the client");
}

#[test]
fn rsv1_on_control_continuation_or_without_the_extension_closes_1002() {
    let server = server(CompressionMode::Shared);
    let (mut c, _) = connect(server.addr(), "/echo", "permessage-deflate");
    c.send_frame(true, rsv::RSV1, op::PING, b"", true);
    c.expect_close(1002);
    let (mut c, _) = connect(server.addr(), "/echo", "permessage-deflate");
    c.send_frame(false, 0, op::TEXT, b"a", true);
    c.send_frame(true, rsv::RSV1, op::CONTINUATION, b"b", true);
    c.expect_close(1002);
    let mut c = RawClient::connect(server.addr(), "/echo");
    c.send_frame(true, rsv::RSV1, op::TEXT, &[0xf2, 0x48, 0x05, 0x00], true);
    c.expect_close(1002);
}

#[test]
fn compression_bomb_closes_1009_and_corrupt_data_1007() {
    let server = server(CompressionMode::Shared);
    let (mut c, ext) = connect(server.addr(), "/echo", "permessage-deflate");
    let mut codec = ClientCodec::new(15, &ext.unwrap());
    // 8 MiB of zeros in a few KB, against a 1 MiB limit.
    let bomb = codec.deflate(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 16 * 1024);
    c.send_frame(true, rsv::RSV1, op::BINARY, &bomb, true);
    c.expect_close(1009);
    let (mut c, _) = connect(server.addr(), "/echo", "permessage-deflate");
    c.send_frame(
        true,
        rsv::RSV1,
        op::BINARY,
        &[0xff, 0xff, 0xff, 0xff, 0x00],
        true,
    );
    c.expect_close(1007);
}

#[test]
fn invalid_utf8_inside_compressed_text_closes_1007() {
    let server = server(CompressionMode::Shared);
    let (mut c, ext) = connect(server.addr(), "/echo", "permessage-deflate");
    let mut codec = ClientCodec::new(15, &ext.unwrap());
    let mut bad = "valid text first, ".repeat(10).into_bytes();
    bad.extend([0xed, 0xa0, 0x80]);
    c.send_frame(true, rsv::RSV1, op::TEXT, &codec.deflate(&bad), true);
    c.expect_close(1007);
}

#[test]
fn broadcast_is_compressed_once_for_all_deflate_receivers() {
    let server = server(CompressionMode::Shared);
    let mut deflating = Vec::new();
    for _ in 0..5 {
        let (c, ext) = connect(
            server.addr(),
            "/",
            "permessage-deflate; client_max_window_bits",
        );
        deflating.push((c, ClientCodec::new(15, &ext.unwrap())));
    }
    let mut plain = RawClient::connect(server.addr(), "/");
    let metrics = || {
        let mut m = RawClient::connect_tcp(server.addr());
        m.send_raw(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let body = String::from_utf8(m.read_until_eof(Duration::from_secs(5))).unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix("wschat_deflate_calls_total "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let before = metrics();
    let message = "a chat line long enough to be compressed, ".repeat(3);
    plain.send_text(&message);
    for (c, codec) in deflating.iter_mut() {
        let frame = c.read_frame();
        assert_eq!(frame.rsv, rsv::RSV1);
        let text = String::from_utf8(codec.inflate(&frame.payload)).unwrap();
        assert!(text.ends_with(&format!(":{message}")), "{text}");
    }
    let frame = plain.read_frame();
    assert_eq!(
        frame.rsv, 0,
        "a receiver without the extension gets the plain frame"
    );
    assert!(String::from_utf8(frame.payload)
        .unwrap()
        .ends_with(&message));
    assert_eq!(metrics() - before, 1, "one deflate call for five receivers");
}

#[test]
fn dedicated_mode_keeps_context_between_messages() {
    let server = server(CompressionMode::Dedicated);
    let (mut c, ext) = connect(server.addr(), "/echo", "permessage-deflate");
    let ext = ext.unwrap();
    assert!(!ext.contains("no_context_takeover"), "{ext}");
    let mut codec = ClientCodec::new(15, &ext);
    let line = "the same line, again and again, compressing better each time ".repeat(2);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        c.send_frame(
            true,
            rsv::RSV1,
            op::TEXT,
            &codec.deflate(line.as_bytes()),
            true,
        );
        let frame = c.read_frame();
        sizes.push(frame.payload.len());
        assert_eq!(codec.inflate(&frame.payload), line.as_bytes());
    }
    assert!(sizes[1] < sizes[0] / 2, "context taken over: {sizes:?}");
}
