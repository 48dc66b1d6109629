//! A complete request head: routed, then answered with a plain response,
//! a refusal, a body to read first, or the 101 of an upgrade.

use log::debug;

use super::exchange::Plan;
use super::Server;
use crate::http;
use crate::protocol::handshake::{parse_head, Upgrade};
use crate::protocol::session::Inflate;
use crate::protocol::Session;
use crate::server::connection::{Compression, Endpoint, WebSocket};
use crate::server::history::Position;
use crate::server::hub::Joining;
use crate::server::json;
use crate::server::metrics::{
    render_tls, render_top_rooms, render_transports, ByTransport, Gauges,
};
use crate::server::outgoing::Format;
use crate::server::router::{route, Request};

use super::{members, wake};

impl Server {
    /// Acts on the request head `data[..end]` of connection `key`; returns
    /// the bytes of `data` used: the head. What follows it is the next
    /// request, the body, or (after an upgrade) the first frames.
    pub(super) fn on_head(&mut self, key: usize, data: &mut [u8], end: usize) -> usize {
        let head = match parse_head(&data[..end]) {
            Ok(head) => head,
            Err(err) => {
                self.refuse(key, err.into());
                return end;
            }
        };
        let plan = match self.plan(key, &head) {
            Ok(plan) => plan,
            Err(refusal) => {
                self.refuse_in(key, refusal, Plan::closing(&head));
                return end;
            }
        };
        let request = self
            .learn_client(key, None, Some(&head))
            .and_then(|()| route(&head, &self.settings.routes));
        match request {
            Err(refusal) => self.refuse_in(key, refusal, plan.refusal_reply(refusal)),
            Ok(Request::Page) => self.answer(key, plan.plain(), http::chat_page),
            Ok(Request::Health) => {
                let health = self.relay.health();
                self.answer(key, plan.plain(), |reply| http::text(health, reply));
            }
            Ok(Request::Metrics) => {
                let page = self.metrics_page();
                self.answer(key, plan.plain(), |reply| http::text(&page, reply));
            }
            Ok(Request::WithBody(request)) => self.start_body(key, request, plan),
            Ok(Request::Events { room, since }) => {
                self.open_stream(key, plan.plain(), &room, since.as_ref())
            }
            Ok(Request::Poll(request)) => self.poll(key, plan.plain(), request),
            Ok(Request::Upgrade {
                upgrade,
                room,
                since,
            }) => self.open(key, &upgrade, room.as_deref(), since.as_ref()),
        }
        end
    }

    /// The `/metrics` page.
    fn metrics_page(&self) -> String {
        let mut page = self.metrics.render(Gauges {
            connections: self.table.len(),
            rooms: self.hub.rooms.len(),
            deflate_calls: self.hub.deflate_calls(),
            history: self.hub.rooms.kept(),
        });
        let mut sizes: Vec<(&str, usize)> = self.hub.rooms.sizes().collect();
        render_top_rooms(&mut page, &mut sizes);
        render_transports(
            &mut page,
            self.members_by_transport(),
            self.metrics.deliveries,
        );
        self.relay.render_metrics(&mut page);
        if let Some(tls) = &self.tls {
            render_tls(
                &mut page,
                tls.certs.info().not_after,
                &self.metrics.tls_handshakes,
            );
        }
        page
    }

    /// Room members now, by transport.
    fn members_by_transport(&self) -> ByTransport<usize> {
        let mut members = ByTransport {
            poll: self.sessions.pollers(),
            ..ByTransport::default()
        };
        for (key, conn) in self.table.conns() {
            if self.hub.rooms.room_of(key).is_none() {
                continue;
            }
            match crate::server::room::Member::format(conn) {
                Format::Sse => members.sse += 1,
                _ => members.websocket += 1,
            }
        }
        members
    }

    /// Completes an upgrade: the 101 is queued, and the connection joins
    /// its room (welcomed and replayed to, if it speaks `wschat.v1`) or
    /// echoes.
    fn open(
        &mut self,
        key: usize,
        upgrade: &Upgrade,
        room: Option<&str>,
        since: Option<&Position>,
    ) {
        let id = self.relay.next_id();
        let endpoint = match room {
            Some(_) => Endpoint::Room,
            None => Endpoint::Echo,
        };
        let format = match upgrade.protocol.as_deref() {
            Some(json::SUBPROTOCOL) => Format::Json,
            _ => Format::Classic,
        };
        let inflate = match upgrade.deflate {
            Some(d) => Inflate::On {
                reset: d.client_no_context_takeover,
            },
            None => Inflate::Off,
        };
        let ws = WebSocket {
            id,
            session: Session::with_inflate(inflate),
            endpoint,
            format,
            compression: Compression::new(upgrade.deflate, self.settings.config.compression),
        };
        let ping_at = self.clock.after(self.settings.config.ping_interval);
        let Some(conn) = self.table.get_mut(key) else {
            return;
        };
        debug!("client-{id} open from {} ({room:?})", conn.peer());
        conn.upgrade(http::switching_protocols(upgrade), ws, ping_at);
        self.table.track_timer(key);
        self.metrics.upgraded += 1;
        self.table.mark_dirty(key);
        if let Some(name) = room {
            self.join_room(key, id, format, name, since);
        }
    }

    /// Makes connection `key` (member `id`, speaking `format`) a member
    /// of room `name`: a JSON or SSE member is welcomed and replayed to,
    /// or in cluster mode held while its history is read from Redis.
    pub(super) fn join_room(
        &mut self,
        key: usize,
        id: u64,
        format: Format,
        name: &str,
        since: Option<&Position>,
    ) {
        // Cluster mode: a JSON member's history is Redis's. When Redis
        // cannot be asked, what the instance keeps is all there is, and
        // the member is not told it has everything.
        let clustered = self.relay.is_clustered() && format.is_json();
        let recall = clustered && self.recall(name, key, id, since, format);
        let joining = Joining {
            key,
            id,
            format,
            since,
            recall: clustered,
        };
        let mut woken = Vec::new();
        let members = &mut members(&mut self.table, &mut self.sessions);
        let room = self.hub.join(name, joining, members, &mut woken);
        if clustered && !recall {
            let now = self.clock.now();
            self.hub
                .recalled(room, joining, None, members, &mut woken, now);
        }
        wake(&mut self.table, &mut self.sessions, &mut woken);
        self.pump(key);
    }
}
