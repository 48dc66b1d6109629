//! End-to-end chat over real sockets with an independent client
//! (tungstenite), and the real binary under SIGTERM (issue 2, points 1, 3,
//! 4 and 10).

mod support;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use support::{start_server, test_config, wait_for, Daemon};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

type Client = WebSocket<TcpStream>;

fn connect(addr: SocketAddr, path: &str) -> Client {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (ws, response) =
        tungstenite::client::client_with_config(format!("ws://{addr}{path}"), stream, Some(config))
            .unwrap();
    assert_eq!(response.status(), 101);
    ws
}

fn read_message(ws: &mut Client) -> Message {
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

fn read_text(ws: &mut Client) -> String {
    match read_message(ws) {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// `from{id}:` of the first message a client sees from itself.
fn own_id(ws: &mut Client) -> String {
    ws.send(Message::text("whoami")).unwrap();
    let text = read_text(ws);
    let id = text.strip_suffix(":whoami").expect("from{id}:whoami");
    assert!(id.starts_with("from"));
    id.to_string()
}

#[test]
fn room_delivers_every_message_to_every_member_in_order() {
    let server = start_server(test_config());
    let mut clients: Vec<Client> = (0..3).map(|_| connect(server.addr(), "/")).collect();
    let mut ids = Vec::new();
    for i in 0..clients.len() {
        let id = own_id(&mut clients[i]);
        // Everyone else sees it too.
        for (j, other) in clients.iter_mut().enumerate() {
            if j != i {
                assert_eq!(read_text(other), format!("{id}:whoami"));
            }
        }
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids are distinct");

    for n in 0..200 {
        clients[0].send(Message::text(format!("m{n}"))).unwrap();
    }
    clients[0]
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .unwrap();
    let mut first_ids = Vec::new();
    for client in clients.iter_mut() {
        let mut sender = None;
        for n in 0..200 {
            let text = read_text(client);
            let (id, body) = text.split_once(':').unwrap();
            assert_eq!(body, format!("m{n}"), "in order");
            assert_eq!(*sender.get_or_insert(id.to_string()), id, "one sender");
        }
        let sender = sender.unwrap();
        match read_message(client) {
            Message::Binary(b) => {
                let mut expected = format!("{sender}:").into_bytes();
                expected.extend([0u8, 1, 2, 255]);
                assert_eq!(b.as_ref(), expected.as_slice(), "binary stays binary");
            }
            other => panic!("expected binary, got {other:?}"),
        }
        first_ids.push(sender);
    }
    first_ids.dedup();
    assert_eq!(first_ids.len(), 1);
}

#[test]
fn rooms_are_separate() {
    let server = start_server(test_config());
    let mut lobby = connect(server.addr(), "/");
    let mut rust_a = connect(server.addr(), "/room/rust");
    let mut rust_b = connect(server.addr(), "/room/rust");
    let id = own_id(&mut rust_a);
    assert_eq!(read_text(&mut rust_b), format!("{id}:whoami"));
    let lobby_id = own_id(&mut lobby);
    rust_a.send(Message::text("only rust")).unwrap();
    assert_eq!(read_text(&mut rust_b), format!("{id}:only rust"));
    lobby.send(Message::text("only lobby")).unwrap();
    assert_eq!(read_text(&mut lobby), format!("{lobby_id}:only lobby"));
    // rust_b got nothing from the lobby: its next message is rust's.
    rust_a.send(Message::text("again")).unwrap();
    assert_eq!(read_text(&mut rust_b), format!("{id}:again"));
}

#[test]
fn ids_are_never_reused() {
    let server = start_server(test_config());
    let mut seen = Vec::new();
    for _ in 0..5 {
        let mut c = connect(server.addr(), "/");
        let id: u64 = own_id(&mut c)["from".len()..].parse().unwrap();
        c.close(None).unwrap();
        seen.push(id);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[test]
fn echo_returns_text_and_binary_unchanged() {
    let server = start_server(test_config());
    let mut ws = connect(server.addr(), "/echo");
    ws.send(Message::text("héllo ☃")).unwrap();
    assert_eq!(read_message(&mut ws), Message::text("héllo ☃"));
    ws.send(Message::binary(vec![0u8, 159, 146, 150])).unwrap();
    assert_eq!(
        read_message(&mut ws),
        Message::binary(vec![0u8, 159, 146, 150])
    );
    ws.send(Message::text("")).unwrap();
    assert_eq!(read_message(&mut ws), Message::text(""));
}

#[test]
fn echo_of_1_mib_and_16_mib_messages() {
    let server = start_server(test_config());
    let mut ws = connect(server.addr(), "/echo");
    for size in [1 << 20, 16 << 20] {
        let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(read_message(&mut ws), Message::text(text));
        let binary: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
        ws.send(Message::binary(binary.clone())).unwrap();
        assert_eq!(read_message(&mut ws), Message::binary(binary));
    }
}

#[test]
fn message_of_16_mib_plus_one_is_refused_with_1009() {
    let server = start_server(test_config());
    let mut ws = connect(server.addr(), "/echo");
    // The send may fail half way once the server has closed.
    let _ = ws.send(Message::binary(vec![0u8; (16 << 20) + 1]));
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Size);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected close 1009, got {e}"),
        }
    }
}

#[test]
fn fragmented_message_is_reassembled() {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let server = start_server(test_config());
    let mut ws = connect(server.addr(), "/echo");
    let parts = ["frag", "men", "ted ☃"];
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let fin = i == parts.len() - 1;
        ws.write(Message::Frame(Frame::message(
            part.as_bytes().to_vec(),
            opcode,
            fin,
        )))
        .unwrap();
    }
    ws.flush().unwrap();
    assert_eq!(read_message(&mut ws), Message::text("fragmented ☃"));
}

/// Waits (bounded) until a log line of `daemon` contains `text`.
fn wait_for_log(daemon: &Daemon, text: &str) -> bool {
    wait_for(Duration::from_secs(5), || {
        (!daemon.log_lines_with(text).is_empty()).then_some(())
    })
    .is_some()
}

#[test]
fn binary_chats_and_sigterm_closes_everyone_with_1001_then_exits_0() {
    signal_closes_everyone_with_1001_then_exits_0("-TERM");
}

#[test]
fn binary_sigint_closes_everyone_with_1001_then_exits_0() {
    signal_closes_everyone_with_1001_then_exits_0("-INT");
}

fn signal_closes_everyone_with_1001_then_exits_0(signal: &str) {
    let mut daemon = Daemon::try_start(&[], "debug").unwrap();
    let mut a = connect(daemon.addr(), "/");
    let mut b = connect(daemon.addr(), "/");
    let id = own_id(&mut a);
    assert_eq!(read_text(&mut b), format!("{id}:whoami"));
    let id_b = own_id(&mut b);
    assert_eq!(read_text(&mut a), format!("{id_b}:whoami"));
    let status = Command::new("kill")
        .args([signal, &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for ws in [&mut a, &mut b] {
        match read_message(ws) {
            Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected Close 1001, got {other:?}"),
        }
        // Complete the closing handshake as a well-behaved client does.
        let _ = ws.flush();
    }
    drop(a);
    drop(b);
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("daemon did not exit after {signal}"));
    assert!(status.success(), "exit status {status:?}");
    // Each connection's end is logged at debug level, Swoole style.
    for id in [&id, &id_b] {
        let closed = format!("client-{} closed", &id["from".len()..]);
        assert!(wait_for_log(&daemon, &closed), "no `{closed}` in the log");
    }
}

#[test]
fn refusals_and_error_closes_are_logged_with_the_peer_and_the_reason() {
    use std::io::{Read, Write};
    let daemon = Daemon::try_start(&[], "debug").unwrap();
    let mut refused = TcpStream::connect(daemon.addr()).unwrap();
    let port = refused.local_addr().unwrap().port();
    refused
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    refused.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 426"));
    assert!(
        wait_for_log(&daemon, &format!("127.0.0.1:{port}: refused: 426")),
        "refusal logged with the peer address"
    );
    let mut ws = connect(daemon.addr(), "/echo");
    let port = ws.get_ref().local_addr().unwrap().port();
    // An unmasked frame, written under tungstenite's feet.
    ws.get_mut().write_all(&[0x81, 0x01, b'x']).unwrap();
    assert!(
        wait_for_log(
            &daemon,
            &format!("127.0.0.1:{port}): closing 1002: client frames must be masked")
        ),
        "error close logged with the peer address and reason"
    );
    let lines = daemon.log();
    let count = lines.iter().filter(|l| l.contains("closing 1002")).count();
    assert_eq!(count, 1, "logged once: {lines:?}");
}
