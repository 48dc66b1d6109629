//! Abrupt ends on the real binary: connections reset (RST) or dropped
//! mid-handshake, mid-frame and mid-close, half-closed after a partial head
//! or frame, and reset while broadcasts are queued for them. The server
//! does not crash, and both the `wschat_connections` gauge and the process's
//! open descriptors return to their baseline within a few seconds.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{
    assert_healthy, encode_frame, encode_header, handshake_request, op, open_connections,
    random_key, reset, tcp_connect, tcp_connect_small_rcvbuf, wait_for, Daemon, RawClient,
};

/// Rounds of every scenario.
const ROUNDS: usize = 30;

/// How a client ends its connection.
#[derive(Debug, Clone, Copy)]
enum End {
    /// `SO_LINGER` 0 then close: the server gets a reset.
    Reset,
    /// Plain close: the server gets FIN.
    Drop,
}

/// Ends the client side of `stream` the way `how` says.
fn end(stream: TcpStream, how: End) {
    match how {
        End::Reset => reset(stream),
        End::Drop => drop(stream),
    }
}

/// Waits until the server ends a connection whose write side we shut:
/// reads (discarding) until EOF or reset, at most 3 s.
fn expect_server_closes(stream: &mut TcpStream, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: server kept the connection open");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// One round of every way to end badly. Returns half-closed sockets that
/// the caller keeps open (the server must close its side on its own).
fn abuse_round(addr: SocketAddr, round: usize) -> Vec<TcpStream> {
    let mut kept = Vec::new();
    let how = if round % 2 == 0 {
        End::Reset
    } else {
        End::Drop
    };
    let request = handshake_request(&addr.to_string(), "/", &random_key(), &[]);
    let half_head = &request[..request.len() / 2];
    let payload = vec![b'z'; 1000];
    let frame = encode_frame(true, 0, op::TEXT, &payload, Some([1, 2, 3, 4]));
    let half_frame = &frame[..frame.len() / 2];

    // Mid-handshake: half a head, then RST or FIN.
    let mut s = tcp_connect(addr);
    s.write_all(half_head).unwrap();
    end(s, how);

    // Request sent, then gone before the 101 is read.
    let mut s = tcp_connect(addr);
    s.write_all(&request).unwrap();
    end(s, how);

    // Mid-handshake, half-closed: the server must not wait for more.
    let mut s = tcp_connect(addr);
    s.write_all(half_head).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    expect_server_closes(&mut s, "half-closed mid-handshake");
    kept.push(s);

    // Mid-frame: header and half a payload, then RST or FIN.
    let mut ws = RawClient::connect(addr, "/");
    ws.stream.write_all(half_frame).unwrap();
    end(ws.stream, how);

    // Mid-frame, half-closed.
    let mut ws = RawClient::connect(addr, "/echo");
    ws.stream.write_all(half_frame).unwrap();
    ws.stream.shutdown(Shutdown::Write).unwrap();
    expect_server_closes(&mut ws.stream, "half-closed mid-frame");
    kept.push(ws.stream);

    // A frame header announcing a large payload that never comes, then RST.
    let mut ws = RawClient::connect(addr, "/echo");
    let header = encode_header(true, 0, op::BINARY, 1 << 20, Some([9, 9, 9, 9]));
    ws.stream.write_all(&header).unwrap();
    end(ws.stream, how);

    // Mid-close: our Close sent, gone before reading the answer.
    let mut ws = RawClient::connect(addr, "/");
    ws.send_close(Some(1000), b"");
    end(ws.stream, how);

    // Mid-close, silent: the answer read, but no FIN from us; the server
    // must drop it after its close timeout.
    let mut ws = RawClient::connect(addr, "/echo");
    ws.send_close(Some(1000), b"");
    let (opcode, _) = ws.next_message(Duration::from_secs(3));
    assert_eq!(opcode, op::CLOSE);
    kept.push(ws.stream);

    // The server's own Close (protocol error: unmasked frame), then RST.
    let mut ws = RawClient::connect(addr, "/");
    ws.stream.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    end(ws.stream, how);

    kept
}

#[test]
fn resets_drops_and_half_closes_leave_no_connection_or_descriptor_behind() {
    let mut daemon = Daemon::start(&[
        "--handshake-timeout",
        "1",
        "--close-timeout",
        "1",
        "--max-backpressure",
        "65536",
    ]);
    let addr = daemon.addr();
    // Warm up every path once, then take the baseline.
    drop(abuse_round(addr, 0));
    let baseline_fds = wait_for(Duration::from_secs(4), || {
        (open_connections(addr) == 0.0).then(|| {
            std::thread::sleep(Duration::from_millis(200));
            daemon.fd_count()
        })
    })
    .expect("warm-up connections closed");

    // A chatter in the lobby keeps broadcasts going to the dying members,
    // and lobby members with queued broadcasts are reset.
    let mut chatter = RawClient::connect(addr, "/");
    let started = Instant::now();
    let mut kept = Vec::new();
    for round in 0..ROUNDS {
        let stuffed: Vec<RawClient> = (0..3)
            .map(|_| RawClient::over(tcp_connect_small_rcvbuf(addr, 4096), "/"))
            .collect();
        for i in 0..4 {
            chatter.send(op::BINARY, &vec![round as u8; 16 * 1024 + i]);
            chatter.next_message(Duration::from_secs(3));
        }
        for ws in stuffed {
            reset(ws.stream);
        }
        kept.extend(abuse_round(addr, round));
        daemon.assert_alive();
    }
    drop(chatter);
    let abuse_took = started.elapsed();

    // Within the timeouts (1 s each) plus a margin, everything is gone,
    // even though the half-closed sockets are still open on our side.
    let settled = Instant::now();
    let back = wait_for(Duration::from_secs(15), || {
        let open = open_connections(addr);
        let fds = daemon.fd_count();
        (open == 0.0 && fds <= baseline_fds).then_some((open, fds))
    });
    let after = settled.elapsed();
    daemon.assert_alive();
    assert!(
        back.is_some(),
        "after {} abrupt connections: {} still open per /metrics, {} descriptors (baseline {})\n{}",
        ROUNDS * 12,
        open_connections(addr),
        daemon.fd_count(),
        baseline_fds,
        daemon.log_tail()
    );
    eprintln!(
        "abrupt: {} connections in {abuse_took:?}; back to {baseline_fds} descriptors \
         {after:?} later",
        ROUNDS * 12
    );
    assert_healthy(addr);
    drop(kept);
}
