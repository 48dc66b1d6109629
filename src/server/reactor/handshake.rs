//! Handshakes and plain HTTP answers: the head of a request, and what it gets.
//!
//! A part of the reactor's `impl Server`, in a file of its own so that
//! each file stays readable; it reaches the reactor's private state as a
//! child module.

use super::*;

impl Server {
    pub(super) fn consume_head(
        &mut self,
        key: usize,
        data: &mut [u8],
        scanned: usize,
        line_checked: bool,
    ) -> usize {
        let max = self.config.max_head_bytes;
        let end = match find_head_end(data, scanned) {
            Some(end) if end <= max => end,
            None if data.len() <= max => {
                // Only new bytes are searched: before, the line had no end.
                let line_end = if line_checked {
                    None
                } else {
                    data[scanned..].iter().position(|&b| b == b'\n')
                };
                if let Some(at) = line_end {
                    if let Err(err) = check_request_line(&data[..=scanned + at]) {
                        self.refuse(key, err);
                        return data.len();
                    }
                }
                let conn = &mut self.conns[key];
                conn.phase = Phase::Handshake {
                    scanned: data.len(),
                    line_checked: line_checked || line_end.is_some(),
                };
                conn.ack_now();
                return 0;
            }
            _ => {
                self.refuse(key, HandshakeError::HeadTooLarge);
                return data.len();
            }
        };
        let request = parse_head(&data[..end]).and_then(|head| route(&head, &self.config));
        match request {
            Err(err) => self.refuse(key, err),
            Ok(Request::Page) => self.respond(key, http::chat_page()),
            Ok(Request::Health) => self.respond(key, http::text(self.health())),
            Ok(Request::Metrics) => {
                let mut page = self.metrics.render(Gauges {
                    connections: self.conns.len(),
                    rooms: self.rooms.len(),
                    deflate_calls: self.deflater.calls(),
                });
                self.render_extra_metrics(&mut page);
                self.respond(key, http::text(&page));
            }
            Ok(Request::Upgrade { upgrade, room }) => {
                self.open(key, &upgrade, room.as_deref());
                // A first frame pipelined behind the head is used at once.
                return end + self.consume(key, &mut data[end..]);
            }
        }
        data.len()
    }

    pub(super) fn open(&mut self, key: usize, upgrade: &Upgrade, room: Option<&str>) {
        let id = self.next_connection_id();
        let endpoint = match room {
            Some(name) => Endpoint::Room(self.rooms.join(name, key)),
            None => Endpoint::Echo,
        };
        let conn = &mut self.conns[key];
        debug!("client-{id} open from {} ({:?})", conn.peer, endpoint);
        let inflate = match upgrade.deflate {
            Some(d) => Inflate::On {
                reset: d.client_no_context_takeover,
            },
            None => Inflate::Off,
        };
        conn.phase = Phase::Open {
            id,
            session: Session::with_inflate(inflate),
            endpoint,
            compression: Compression::new(upgrade.deflate, self.config.compression),
        };
        self.outbound += conn.queue.push_owned(http::switching_protocols(upgrade));
        self.metrics.upgraded += 1;
        self.mark_dirty(key);
        self.set_deadline(key, self.clock.after(self.config.ping_interval));
    }

    pub(super) fn respond(&mut self, key: usize, response: Vec<u8>) {
        self.outbound += response.len();
        self.conns[key].respond(response);
        self.mark_dirty(key);
        self.set_deadline(key, self.clock.after(self.config.close_timeout));
    }

    pub(super) fn refuse(&mut self, key: usize, err: HandshakeError) {
        let peer = self.conns[key].peer;
        self.count_refusal(err, peer);
        self.respond(key, http::error(err));
    }

    pub(super) fn count_refusal(&mut self, err: HandshakeError, peer: SocketAddr) {
        info!("{peer}: refused: {err}");
        *self
            .metrics
            .handshake_failures
            .entry(err.label())
            .or_default() += 1;
    }
}
