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
use crate::server::metrics::{render_tls, render_top_rooms, Gauges};
use crate::server::router::{route, Request};

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
            Ok(Request::Upgrade { upgrade, room }) => self.open(key, &upgrade, room.as_deref()),
        }
        end
    }

    /// The `/metrics` page.
    fn metrics_page(&self) -> String {
        let mut page = self.metrics.render(Gauges {
            connections: self.table.len(),
            rooms: self.hub.rooms.len(),
            deflate_calls: self.hub.deflate_calls(),
        });
        let mut sizes: Vec<(&str, usize)> = self.hub.rooms.sizes().collect();
        render_top_rooms(&mut page, &mut sizes);
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

    /// Completes an upgrade: the connection joins its room (or echoes)
    /// and its 101 is queued.
    fn open(&mut self, key: usize, upgrade: &Upgrade, room: Option<&str>) {
        let id = self.relay.next_id();
        let endpoint = match room {
            Some(name) => {
                self.hub.rooms.join(name, key);
                Endpoint::Room
            }
            None => Endpoint::Echo,
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
    }
}
