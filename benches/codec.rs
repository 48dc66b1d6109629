//! Micro-benchmarks of the sans-I/O codec: the per-byte and per-frame work
//! every message pays, measured without sockets so changes to masking,
//! header parsing, UTF-8 validation or the handshake show up on their own.
//!
//! `cargo bench --bench codec`; throughput groups report bytes per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wschat::config::CompressionMode;
use wschat::protocol::frame::{decode_header, FrameHeader, OpCode};
use wschat::protocol::handshake::{accept_key, find_head_end, parse_head};
use wschat::protocol::mask::apply_mask;
use wschat::protocol::utf8::Utf8Validator;

/// What Chrome sends to upgrade (header order and values as Chrome 120
/// writes them, cookies and all), so parsing cost is that of a real head.
const CHROME_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
Host: chat.example.com:9502\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://chat.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Cookie: session=3f9a1c7e5b2d4a6f8e0c1b3d5f7a9e2c; theme=dark; _ga=GA1.1.123456789.1700000000\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: chat\r\n\r\n";

/// Unmasking is the one pass over every payload byte a server must make.
fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [125usize, 4 * 1024, 64 * 1024] {
        let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box([0x37, 0xfa, 0x21, 0x3d]), 0))
        });
    }
    group.finish();
}

/// Header decode and encode, once per frame: the fixed cost that dominates
/// small messages.
fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("header");
    let cases = [
        ("masked_16B", 16u64),
        ("masked_16KiB", 16 * 1024),
        ("masked_1MiB", 1 << 20),
    ];
    for (name, len) in cases {
        let mut header = FrameHeader::new(true, OpCode::Binary, len);
        header.mask = Some([1, 2, 3, 4]);
        let mut wire = Vec::new();
        header.encode(&mut wire);
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| decode_header(black_box(&wire)))
        });
    }
    for (name, len) in [("16B", 16u64), ("16KiB", 16 * 1024), ("1MiB", 1 << 20)] {
        let header = FrameHeader::new(true, OpCode::Text, len);
        let mut out = Vec::with_capacity(16);
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                out.clear();
                black_box(&header).encode(&mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// 64 KiB of chat-like text: mostly ASCII with Latin-1, Greek, CJK and
/// emoji mixed in, so both the ASCII fast path and multi-byte decoding count.
fn mixed_text() -> Vec<u8> {
    let words = [
        "hello ",
        "world ",
        "grüße ",
        "κόσμε ",
        "naïve ",
        "日本語 ",
        "テキスト ",
        "🦀 ",
        "ok, ",
        "the quick brown fox ",
        "jumps ",
        "€100 ",
        "\n",
    ];
    let mut text = Vec::with_capacity(64 * 1024 + 32);
    let mut i = 0usize;
    while text.len() < 64 * 1024 {
        text.extend_from_slice(words[i % words.len()].as_bytes());
        i = i.wrapping_mul(31).wrapping_add(7) % 1009;
    }
    // Cut at a code point boundary, then pad with spaces to exactly 64 KiB.
    let mut end = 64 * 1024;
    while std::str::from_utf8(&text[..end]).is_err() {
        end -= 1;
    }
    text.truncate(end);
    text.resize(64 * 1024, b' ');
    text
}

/// Incremental UTF-8 validation of text messages, whole and as the 4 KiB
/// pieces reads deliver (splits land inside code points).
fn utf8(c: &mut Criterion) {
    let text = mixed_text();
    assert!(std::str::from_utf8(&text).is_ok());
    let mut group = c.benchmark_group("utf8");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("feed_64KiB_whole", |b| {
        b.iter(|| {
            let mut v = Utf8Validator::new();
            v.feed(black_box(&text)).unwrap();
            v.finish().unwrap();
        })
    });
    group.bench_function("feed_64KiB_in_4001B_chunks", |b| {
        b.iter(|| {
            let mut v = Utf8Validator::new();
            for chunk in black_box(&text).chunks(4001) {
                v.feed(chunk).unwrap();
            }
            v.finish().unwrap();
        })
    });
    group.finish();
}

/// The server's whole opening handshake on a real browser request: find the
/// end of the head, parse it, check the upgrade rules, negotiate the
/// permessage-deflate Chrome offers (default mode), derive the accept key.
fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    let protocols = vec!["chat".to_string()];
    group.bench_function("chrome_request_to_upgrade", |b| {
        b.iter(|| {
            let req = black_box(CHROME_REQUEST);
            let end = find_head_end(req, 0).unwrap();
            let head = parse_head(&req[..end]).unwrap();
            head.check_upgrade(&protocols, CompressionMode::default().takeover())
                .unwrap()
        })
    });
    group.bench_function("accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
    group.finish();
}

criterion_group!(benches, unmask, header, utf8, handshake);
criterion_main!(benches);
