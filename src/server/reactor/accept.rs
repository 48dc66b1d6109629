//! New connections: the listener drained, each connection admitted or
//! refused at once.

use std::net::SocketAddr;

use log::{info, warn};
use mio::net::TcpStream;
use mio::Token;

use super::Server;
use crate::http;
use crate::protocol::handshake::RequestHead;
use crate::server::connection::Connection;
use crate::server::policy::Refusal;
use crate::server::proxy::client_address;
use crate::server::transport::Transport;

impl Server {
    /// Accepts every pending connection (until `WouldBlock`).
    pub(super) fn accept(&mut self) {
        while let Some((stream, peer)) = self.acceptor.accept(self.clock.now()) {
            self.admit(stream, peer, false);
        }
    }

    /// Accepts every pending connection of the TLS listener.
    pub(super) fn accept_tls(&mut self) {
        let now = self.clock.now();
        while let Some((stream, peer)) = self.tls.as_mut().and_then(|t| t.acceptor.accept(now)) {
            self.admit(stream, peer, true);
        }
    }

    /// Takes a new connection in, or answers it with a refusal and drops it.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, tls: bool) {
        self.metrics.accepted += 1;
        let now = self.clock.now();
        // A trusted proxy's connections are counted by the client's
        // address, once it says which (see `Server::learn_client`).
        let behind_proxy = self.settings.config.trusted_proxies.contains(peer.ip());
        let admitted = if self.table.len() >= self.settings.max_connections {
            Err(Refusal::ServerFull)
        } else if behind_proxy {
            Ok(())
        } else {
            self.per_address.admit(peer.ip(), now)
        };
        if let Err(refusal) = admitted {
            self.count_refusal(refusal, peer);
            if !tls {
                // Best effort: the socket is new, so a small write fits.
                // (A TLS client could not read it before a handshake.)
                Transport::raw(stream).write_once(&http::error(refusal, http::Reply::CLOSE));
            }
            return;
        }
        let key = self.table.next_key();
        let deadline = now + self.settings.config.handshake_timeout;
        let gauge = self.budgets.outbound.clone();
        let mut transport = match self.tls.as_ref().filter(|_| tls).map(|t| t.certs.accept()) {
            None => Transport::tcp(stream),
            Some(Ok(session)) => Transport::tls(stream, session),
            Some(Err(e)) => {
                warn!("{peer}: TLS: {e}");
                if !behind_proxy {
                    self.per_address.release(peer.ip());
                }
                return;
            }
        };
        if behind_proxy && self.settings.config.proxy_protocol {
            transport = transport.behind_proxy_protocol();
        }
        let mut conn = Connection::new(transport, peer, gauge, now, deadline);
        if behind_proxy {
            conn.set_behind_proxy();
        } else {
            conn.set_admitted();
        }
        if let Err(e) = conn.register(self.poll.registry(), Token(key)) {
            warn!("{peer}: register: {e}");
            if conn.is_admitted() {
                self.per_address.release(peer.ip());
            }
            return;
        }
        self.table.insert(conn);
    }

    /// Logs and counts a refused request.
    pub(super) fn count_refusal(&mut self, refusal: Refusal, peer: SocketAddr) {
        info!("{peer}: refused: {refusal}");
        *self
            .metrics
            .handshake_failures
            .entry(refusal.label())
            .or_default() += 1;
    }

    /// Takes the client's address from a trusted proxy's word (`source`
    /// from a PROXY header, or the request head's `Forwarded` /
    /// `X-Forwarded-For`) and counts the connection under it. Refused when
    /// that address is over its limits.
    pub(super) fn learn_client(
        &mut self,
        key: usize,
        source: Option<SocketAddr>,
        head: Option<&RequestHead<'_>>,
    ) -> Result<(), Refusal> {
        let Some(conn) = self.table.get_mut(key) else {
            return Ok(());
        };
        if !conn.is_behind_proxy() {
            return Ok(());
        }
        if let Some(source) = source {
            conn.set_client(source);
        }
        if let Some(head) = head {
            let said = conn.peer().ip();
            let client = client_address(said, head, &self.settings.config.trusted_proxies);
            if client != said {
                conn.set_client(SocketAddr::new(client, 0));
            }
            if !conn.is_admitted() {
                self.per_address.admit(conn.peer().ip(), self.clock.now())?;
                conn.set_admitted();
            }
        }
        Ok(())
    }
}
