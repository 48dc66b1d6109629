//! The listening socket, with `SO_REUSEPORT` when asked for.
//!
//! With `--reuse-port`, several processes bind the same address and the
//! kernel spreads new connections between them (on Linux, by a hash of the
//! connection's addresses): one single-threaded process per core behind one
//! port, no proxy in front.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel keeps for `accept`. mio's `bind` asks
/// for 128, which drops a burst of connects (each then waits a 1 s SYN
/// retry) whenever the loop is busy for a moment.
const BACKLOG: i32 = 1024;

/// Binds a non-blocking listener on `addr` with `SO_REUSEADDR` (as mio's
/// `bind` does), a backlog of 1024, and `SO_REUSEPORT` if asked.
pub fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As mio does: a restarted daemon can bind while old sockets linger.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_listeners_share_a_port_only_when_both_ask() {
        let first = bind_listener("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_listener(addr, true).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        let err = bind_listener(addr, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_taken_port_stays_taken_without_the_flag() {
        let plain = bind_listener("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = plain.local_addr().unwrap();
        assert!(bind_listener(addr, true).is_err());
    }
}
