//! The state machine against scripted servers on loopback, plain and TLS.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use wschat::protocol::frame::{decode_header, encode_frame, OpCode};
use wschat::protocol::handshake::accept_key;
use wschat::protocol::mask::apply_mask;

/// The upgrade of a plain client: the target's path, no subprotocol.
pub(super) fn upgrade(target: &Target) -> Upgrade<'_> {
    Upgrade {
        path: &target.path,
        protocol: None,
    }
}

/// Reads one client frame from a blocking socket: checks it is masked
/// and returns the opcode and the unmasked payload.
fn read_client_frame(s: &mut std::net::TcpStream) -> (OpCode, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let (header, n) = loop {
        if let Some(found) = decode_header(&buf).unwrap() {
            break found;
        }
        s.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    };
    assert_eq!(n, buf.len());
    let mask = header.mask.expect("client frames are masked");
    let mut payload = vec![0u8; header.payload_len as usize];
    s.read_exact(&mut payload).unwrap();
    apply_mask(&mut payload, mask, 0);
    (header.opcode, payload)
}

/// A scripted server: 101 with the first fragment in the same write,
/// a ping between fragments, then a close with 1001.
fn scripted_server(listener: TcpListener) -> Vec<(OpCode, Vec<u8>)> {
    let (mut s, _) = listener.accept().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key.as_bytes())
    )
    .into_bytes();
    encode_frame(false, OpCode::Text, false, &[b"hello "], &mut out);
    s.write_all(&out).unwrap();
    out.clear();
    encode_frame(true, OpCode::Ping, false, &[b"p1"], &mut out);
    encode_frame(true, OpCode::Continuation, false, &[b"world"], &mut out);
    // Split mid-frame across two writes.
    s.write_all(&out[..5]).unwrap();
    thread::sleep(Duration::from_millis(20));
    s.write_all(&out[5..]).unwrap();
    let mut seen = vec![read_client_frame(&mut s)];
    out.clear();
    encode_frame(
        true,
        OpCode::Close,
        false,
        &[&1001u16.to_be_bytes()],
        &mut out,
    );
    s.write_all(&out).unwrap();
    seen.push(read_client_frame(&mut s));
    seen
}

/// A poll with `conn` registered for reading and writing.
fn poll_for(conn: &mut Conn) -> (Poll, Events) {
    let poll = Poll::new().unwrap();
    poll.registry()
        .register(
            conn.stream(),
            Token(0),
            Interest::READABLE | Interest::WRITABLE,
        )
        .unwrap();
    (poll, Events::with_capacity(8))
}

#[test]
fn fragments_pings_and_close_against_a_scripted_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || scripted_server(listener));
    let target = Target::parse(&format!("ws://{addr}/echo")).unwrap();
    let mut rng = Rng::with_seed(11);
    let mut conn = Conn::connect(&target, upgrade(&target), false, None, None, &mut rng).unwrap();
    let (mut poll, mut events) = poll_for(&mut conn);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        assert!(Instant::now() < deadline, "timed out; saw {seen:?}");
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        let Some(event) = events.iter().next() else {
            continue;
        };
        let status = conn
            .on_ready(Readiness::of(event), &mut rng, |e, _| {
                seen.push(match e {
                    Event::Opened => "opened".to_string(),
                    Event::Message { binary, data } => {
                        format!("{binary}:{}", String::from_utf8_lossy(data))
                    }
                    Event::Bytes(_) => "bytes".to_string(),
                    Event::Ping => "ping".to_string(),
                })
            })
            .unwrap();
        if status != Status::Alive {
            break status;
        }
    };
    assert_eq!(status, Status::Finished { code: Some(1001) });
    assert_eq!(seen, ["opened", "ping", "false:hello world"]);
    let answers = server.join().unwrap();
    assert_eq!(answers[0], (OpCode::Pong, b"p1".to_vec()));
    assert_eq!(answers[1], (OpCode::Close, 1001u16.to_be_bytes().to_vec()));
}

#[test]
fn refused_connect_is_a_connect_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = Target::parse(&format!("ws://127.0.0.1:{port}/")).unwrap();
    let mut rng = Rng::with_seed(12);
    let mut conn = Conn::connect(&target, upgrade(&target), false, None, None, &mut rng).unwrap();
    let (mut poll, mut events) = poll_for(&mut conn);
    poll.poll(&mut events, Some(Duration::from_secs(5)))
        .unwrap();
    let event = events.iter().next().expect("an event");
    let result = conn.on_ready(Readiness::of(event), &mut rng, |_, _| {});
    assert!(matches!(result, Err(ConnError::Connect(_))), "{result:?}");
}
