//! Plain HTTP on a connection that may carry several requests: each
//! answered in order, a body read whole before its request is acted on,
//! and the connection kept for the next request or closed after the
//! answer, as the `Connection` header of that answer says.
//!
//! Endpoints that take a body are acted on in [`Server::on_body`], which
//! gets the request and its whole body; endpoints that answer from the
//! head alone are answered from `on_head` (see `handshake`).

use super::Server;
use crate::http::{self, Reply};
use crate::protocol::handshake::RequestHead;
use crate::protocol::http1::{body_framing, client_keeps_alive, expects_continue, BodyFraming};
use crate::server::connection::{AfterResponse, Connection, PendingBody};
use crate::server::http_policy::{body_length, Persistence};
use crate::server::policy::Refusal;
use crate::server::router::BodyRequest;

/// What a request's head decides about its answer, before routing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// How the answer goes out if the request is read to its end.
    reply: Reply,
    /// How the body (if any) is delimited.
    framing: BodyFraming,
    /// The request asks for a WebSocket: refused, what follows its head
    /// may be frames sent ahead, so the connection is not reused.
    upgrade: bool,
    /// The client waits for `100 Continue` before its body.
    expects_continue: bool,
}

impl Plan {
    /// The reply to a request refused from its head, closing.
    pub(super) fn closing(head: &RequestHead<'_>) -> Reply {
        Reply {
            after: AfterResponse::Close,
            head_only: head.method == "HEAD",
        }
    }

    /// The reply to a request answered from its head alone: a body sent
    /// with it is left unread, so the next request's first byte is
    /// unknown and the connection ends after the answer.
    pub(super) fn plain(&self) -> Reply {
        if self.framing.has_body() {
            self.reply.closing()
        } else {
            self.reply
        }
    }

    /// The reply to a request refused after routing.
    pub(super) fn refusal_reply(&self, refusal: Refusal) -> Reply {
        if refusal.keeps_connection() && !self.upgrade {
            self.plain()
        } else {
            self.reply.closing()
        }
    }
}

impl Server {
    /// How the answer to `head` goes out, or why the request is refused
    /// from its framing alone (a `Content-Length` that cannot be read, a
    /// `Transfer-Encoding`: either way the end of the request is unknown).
    pub(super) fn plan(&self, key: usize, head: &RequestHead<'_>) -> Result<Plan, Refusal> {
        let framing = match body_framing(head)? {
            BodyFraming::Coded => return Err(Refusal::TransferEncoding),
            framing => framing,
        };
        let config = &self.settings.config;
        let conn = self.table.get(key);
        let persistence = Persistence {
            client_keeps_alive: client_keeps_alive(head),
            served: conn.map_or(0, Connection::requests_served),
            max_requests: config.max_requests_per_connection,
            shared_by_clients: conn.is_some_and(Connection::is_behind_proxy)
                && !config.proxy_protocol,
            shutting_down: self.shutdown_deadline.is_some(),
        };
        Ok(Plan {
            reply: Reply {
                after: persistence.after_response(),
                head_only: head.method == "HEAD",
            },
            framing,
            upgrade: head.wants_upgrade(),
            expects_continue: expects_continue(head),
        })
    }

    /// Answers with the response `build` makes for `reply`.
    pub(super) fn answer(
        &mut self,
        key: usize,
        reply: Reply,
        build: impl FnOnce(Reply) -> Vec<u8>,
    ) {
        self.respond(key, build(reply), reply.after);
    }

    /// Starts reading the body of `request`, or refuses it from its head:
    /// without `Content-Length`, or with one over `--max-message-size`
    /// (a body too large is never buffered).
    pub(super) fn start_body(&mut self, key: usize, request: BodyRequest, plan: Plan) {
        let max_body = self.settings.config.max_message_size;
        let length = match body_length(plan.framing, max_body) {
            Ok(length) => length,
            Err(refusal) => return self.refuse_in(key, refusal, plan.reply.closing()),
        };
        let pending = PendingBody::new(request, length, plan.reply.after);
        if length == 0 {
            return self.on_body(key, pending, &[]);
        }
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        conn.expect_body(pending);
        if plan.expects_continue {
            conn.send_continue();
            self.table.mark_dirty(key);
        }
    }

    /// A request whose body is whole: where endpoints that take a body
    /// act on it. The connection reads the next request once the answer is
    /// queued (or ends after it, as `pending.after` says).
    pub(super) fn on_body(&mut self, key: usize, pending: PendingBody, body: &[u8]) {
        let reply = Reply {
            after: pending.after,
            head_only: false,
        };
        match pending.request {
            BodyRequest::PostMessage {
                room,
                session,
                content,
            } => self.post_message(key, &room, session, content, body, reply),
        }
    }

    /// Queues a plain response; after it the connection ends (the client
    /// has `--close-timeout` to take it) or waits `--keep-alive-timeout`
    /// for the next request.
    pub(super) fn respond(&mut self, key: usize, response: Vec<u8>, after: AfterResponse) {
        let config = &self.settings.config;
        let at = self.clock.after(match after {
            AfterResponse::Close => config.close_timeout,
            AfterResponse::NextRequest => config.keep_alive_timeout,
        });
        if let Some(conn) = self.table.get_mut(key) {
            // A body being read (refused midway) is no longer held.
            self.budgets.inbound -= conn.buffered_bytes();
            if conn.respond(response, after, at) {
                self.table.read_again(key);
            }
            self.table.track_timer(key);
            self.table.mark_dirty(key);
        }
    }

    /// Answers a request with a refusal, after which the connection ends.
    pub(super) fn refuse(&mut self, key: usize, refusal: Refusal) {
        self.refuse_in(key, refusal, Reply::CLOSE);
    }

    /// Answers a request with a refusal, sent as `reply` says; it is
    /// logged and counted.
    pub(super) fn refuse_in(&mut self, key: usize, refusal: Refusal, reply: Reply) {
        if let Some(peer) = self.table.get(key).map(|c| c.peer()) {
            self.count_refusal(refusal, peer);
            self.respond(key, http::error(refusal, reply), reply.after);
        }
    }

    /// Ends an HTTP exchange between or within requests (keep-alive
    /// timeout, shutdown, the client's FIN): at once when nothing is on its
    /// way to the client, else once the queued answers are out.
    pub(super) fn end_exchange(&mut self, key: usize) {
        let close_by = self.clock.after(self.settings.config.close_timeout);
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        if conn.backlog_bytes() == 0 {
            self.table.remove_at_turn_end(key);
            return;
        }
        self.budgets.inbound -= conn.buffered_bytes();
        if conn.finish_exchange(close_by) {
            self.table.read_again(key);
        }
        self.table.track_timer(key);
        self.table.mark_dirty(key);
    }

    /// Counts the body bytes connection `key` now holds (it held `before`)
    /// into the inbound budget, which request bodies share with WebSocket
    /// messages; the request that takes it past the budget is refused.
    pub(super) fn hold_body(&mut self, key: usize, before: usize) {
        let Some(conn) = self.table.get(key) else {
            return;
        };
        let after = conn.buffered_bytes();
        self.budgets.inbound = self.budgets.inbound + after - before;
        if after > 0 && self.budgets.inbound > self.settings.config.max_inbound_memory {
            self.refuse(key, Refusal::InboundMemory);
        }
    }

    /// Whether connection `key` must answer no more pipelined requests for
    /// now: its answers waiting to be read pass `--max-backpressure`. It
    /// then stops reading, and the requests already read wait in its kept
    /// input until the queue drains.
    pub(super) fn holds_pipeline(&mut self, key: usize) -> bool {
        let bound = self.settings.config.max_backpressure;
        let Some(conn) = self.table.get_mut(key) else {
            return false;
        };
        // The queue alone, as `resume_reading` sees it: a TLS transport's
        // own bound keeps what it holds small.
        let full = conn.is_handshaking() && conn.queued_bytes() >= bound;
        if full {
            conn.hold_pipeline();
        }
        full
    }
}
