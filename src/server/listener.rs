//! The listening socket and how it is drained.
//!
//! With `--reuse-port`, several processes bind the same address and the
//! kernel spreads new connections between them (on Linux, by a hash of the
//! connection's addresses): one single-threaded process per core behind one
//! port, no proxy in front.
//!
//! Under socket activation the listener is the one systemd handed over
//! (see [`super::systemd`]) and `--listen` is not bound.
//!
//! An [`Acceptor`] accepts until `WouldBlock`; when the process is out of
//! descriptors it pauses (the pending connections wait in the backlog)
//! instead of spinning on the error, and warns at most once a second.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::systemd::Activation;
use super::timer::Time;

/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Descriptors kept free for the listener, the poller, logs and Redis.
const RESERVED_DESCRIPTORS: u64 = 32;

/// The listener, while it is open, and its pause after running out of
/// descriptors.
#[derive(Debug)]
pub struct Acceptor {
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    paused_until: Option<Time>,
    last_warning: Option<Time>,
}

impl Acceptor {
    /// Registers `listener` under `token`.
    pub fn new(
        mut listener: TcpListener,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Acceptor> {
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(Acceptor {
            local_addr: listener.local_addr()?,
            listener: Some(listener),
            paused_until: None,
            last_warning: None,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next pending connection, if one can be taken now. `None` when
    /// the backlog is drained, the listener closed, or accepting paused.
    pub fn accept(&mut self, now: Time) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let listener = self.listener.as_ref()?;
            if self.paused_until.is_some() {
                return None;
            }
            match listener.accept() {
                Ok(accepted) => return Some(accepted),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_out_of_descriptors(&e) => {
                    self.paused_until = Some(now + ACCEPT_BACKOFF);
                    let warned_lately = self
                        .last_warning
                        .is_some_and(|t| now.since(t) < Duration::from_secs(1));
                    if !warned_lately {
                        warn!("accept: {e}; pausing accepts");
                        self.last_warning = Some(now);
                    }
                    return None;
                }
                // ECONNABORTED and the like concern one connection only.
                Err(e) => debug!("accept: {e}"),
            }
        }
    }

    /// When a pause ends, if accepting is paused.
    pub fn paused_until(&self) -> Option<Time> {
        self.paused_until
    }

    /// Ends a pause that is over at `now`; returns whether it did.
    #[must_use]
    pub fn resume(&mut self, now: Time) -> bool {
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
            return true;
        }
        false
    }

    /// Stops listening (at shutdown).
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
        }
    }
}

/// `wanted`, lowered so that every connection can have a descriptor.
pub fn descriptor_bound(wanted: usize) -> usize {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) => {
            let fit = soft.saturating_sub(RESERVED_DESCRIPTORS) as usize;
            if fit < wanted {
                warn!("open-files limit {soft}: serving at most {fit} connections");
            }
            wanted.min(fit)
        }
        Err(_) => wanted,
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and macOS alike.
    matches!(e.raw_os_error(), Some(23) | Some(24))
}

/// Pending connections the kernel keeps for `accept`. mio's `bind` asks
/// for 128, which drops a burst of connects (each then waits a 1 s SYN
/// retry) whenever the loop is busy for a moment.
const BACKLOG: i32 = 1024;

/// The plain listener and, with `tls_addr`, the TLS one: those systemd
/// handed over (the TLS one named `tls`), or else bound here.
pub fn listeners(
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    reuse_port: bool,
    mut activation: Activation,
) -> io::Result<(TcpListener, Option<TcpListener>)> {
    let plain = match activation.take_plain()? {
        Some(listener) => listener,
        None if activation.is_empty() => bind_listener(addr, reuse_port)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "systemd passed no plain listener (names: {})",
                    activation.names().join(", ")
                ),
            ))
        }
    };
    let tls = match tls_addr {
        None => None,
        Some(tls_addr) => match activation.take("tls")? {
            Some(listener) => Some(listener),
            None => Some(bind_listener(tls_addr, reuse_port)?),
        },
    };
    activation.warn_unused();
    Ok((plain, tls))
}

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
    fn max_connections_fit_the_open_files_limit() {
        let (soft, _) = rlimit::Resource::NOFILE.get().unwrap();
        let bound = descriptor_bound(usize::MAX);
        assert_eq!(bound as u64, soft.saturating_sub(RESERVED_DESCRIPTORS));
        assert_eq!(descriptor_bound(10), 10.min(bound));
    }

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
