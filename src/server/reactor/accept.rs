//! New connections: the listener drained, each connection admitted or
//! refused at once.

use std::net::SocketAddr;

use log::{info, warn};
use mio::net::TcpStream;
use mio::Token;

use super::Server;
use crate::http;
use crate::server::connection::Connection;
use crate::server::policy::Refusal;
use crate::server::transport::Transport;

impl Server {
    /// Accepts every pending connection (until `WouldBlock`).
    pub(super) fn accept(&mut self) {
        while let Some((stream, peer)) = self.acceptor.accept(self.clock.now()) {
            self.admit(stream, peer);
        }
    }

    /// Takes a new connection in, or answers it with a refusal and drops it.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        self.metrics.accepted += 1;
        let now = self.clock.now();
        let admitted = if self.table.len() >= self.settings.max_connections {
            Err(Refusal::ServerFull)
        } else {
            self.per_address.admit(peer.ip(), now)
        };
        if let Err(refusal) = admitted {
            self.count_refusal(refusal, peer);
            // Best effort: the socket is new, so a small write fits.
            Transport::Tcp(stream).write_once(&http::error(refusal));
            return;
        }
        let key = self.table.next_key();
        let deadline = now + self.settings.config.handshake_timeout;
        let gauge = self.budgets.outbound.clone();
        let mut conn = Connection::new(Transport::tcp(stream), peer, gauge, now, deadline);
        if let Err(e) = conn.register(self.poll.registry(), Token(key)) {
            warn!("{peer}: register: {e}");
            self.per_address.release(peer.ip());
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
}
