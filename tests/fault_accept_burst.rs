//! A connection burst while the server is busy: the real binary is stopped
//! (SIGSTOP, standing in for a long turn of the loop or a busy machine),
//! 500 clients connect, and the server is resumed. Every client must be
//! served within a fraction of a second. With a listen backlog smaller
//! than the burst, the kernel drops the SYNs that do not fit and those
//! clients wait for their 1 s SYN retransmission (3 s for a second drop).

mod support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{open_connections, wait_for, Daemon};

const CLIENTS: usize = 500;
/// Time after SIGCONT by which every client must have its answer. Well
/// under the 1 s initial SYN retransmission timeout; a debug build admits
/// 500 connections in about 200 ms.
const SERVED_WITHIN: Duration = Duration::from_millis(900);

/// Sends `signal` (e.g. `-STOP`) to process `pid` with kill(1).
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Resumes the process on drop, so a failing test never leaves it stopped.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// One client of the burst.
struct Client {
    stream: TcpStream,
    sent: bool,
    response: Vec<u8>,
    served: Option<Duration>,
}

#[test]
fn a_burst_of_500_connects_during_a_stall_is_served_at_once_after_it() {
    let mut daemon = Daemon::start(&[]);
    let addr = daemon.addr();
    let pid = daemon.pid();
    assert_eq!(open_connections(addr), 0.0);

    signal(pid, "-STOP");
    let resume = Resume(pid);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_nonblocking(true).unwrap();
            match socket.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
                Err(e) => panic!("connect: {e}"),
            }
            Client {
                stream: socket.into(),
                sent: false,
                response: Vec::new(),
                served: None,
            }
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    drop(resume);
    let resumed = Instant::now();

    // Each client sends `GET /healthz` once connected and waits for `ok`.
    let request = b"GET /healthz HTTP/1.1\r\nHost: burst\r\nConnection: close\r\n\r\n";
    let give_up = resumed + Duration::from_secs(5);
    let mut buf = [0u8; 1024];
    while clients.iter().any(|c| c.served.is_none()) && Instant::now() < give_up {
        for c in clients.iter_mut().filter(|c| c.served.is_none()) {
            if !c.sent {
                // Connected yet? peer_addr fails with ENOTCONN until then.
                if c.stream.peer_addr().is_err() {
                    continue;
                }
                match c.stream.write(request) {
                    Ok(n) => {
                        assert_eq!(n, request.len());
                        c.sent = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => panic!("write: {e}"),
                }
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    assert!(
                        c.response.starts_with(b"HTTP/1.1 200"),
                        "{:?}",
                        String::from_utf8_lossy(&c.response)
                    );
                    c.served = Some(resumed.elapsed());
                }
                Ok(n) => c.response.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    daemon.assert_alive();

    let mut times: Vec<Duration> = clients.iter().filter_map(|c| c.served).collect();
    times.sort_unstable();
    let late = clients
        .iter()
        .filter(|c| !matches!(c.served, Some(t) if t <= SERVED_WITHIN))
        .count();
    eprintln!(
        "accept burst: {} of {CLIENTS} served; first {:?}, median {:?}, last {:?}",
        times.len(),
        times.first(),
        times.get(times.len() / 2),
        times.last()
    );
    assert_eq!(
        late,
        0,
        "{late} of {CLIENTS} clients not served within {SERVED_WITHIN:?} of the resume \
         (slowest {:?}): the listen backlog held only part of the burst, and the kernel \
         dropped the other SYNs until their retransmission",
        times.last()
    );
    // Served and closed: nothing stays behind once the clients hang up.
    drop(clients);
    let left = wait_for(Duration::from_secs(3), || {
        let open = open_connections(addr);
        (open == 0.0).then_some(open)
    });
    assert!(
        left.is_some(),
        "{} connections left",
        open_connections(addr)
    );
}
