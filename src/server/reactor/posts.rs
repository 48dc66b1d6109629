//! `POST /room/{name}/messages`: a message sent without WebSocket, as the
//! SSE or polling member whose session token is in `Wschat-Session`.
//!
//! Once accepted it goes where a WebSocket member's message goes (the
//! relay, then the room's members, numbered and kept), under the same
//! rate limit, and is answered `204`. The member is the session's alone:
//! nothing in the request can name another id.

use super::Server;
use crate::http::{self, Reply};
use crate::protocol::OpCode;
use crate::server::hub::RoomMessage;
use crate::server::policy::Refusal;
use crate::server::relay::Route;
use crate::server::router::Content;
use crate::server::sessions::Token;
use crate::server::timer::wall_ms;

impl Server {
    /// Posts `body` to `room` as the member of `token`'s session, typed
    /// by `content`; or refuses it: 401 without a session of this room,
    /// 415 for another type, 400 for text that is not UTF-8, 429 over the
    /// member's rate.
    pub(super) fn post_message(
        &mut self,
        key: usize,
        room: &str,
        token: Option<Token>,
        content: Content,
        body: &[u8],
        reply: Reply,
    ) {
        let session = token.and_then(|t| self.sessions.find(&t, room));
        let (Some(session), Some(room_key)) = (session, self.hub.rooms.find(room)) else {
            return self.refuse_in(key, Refusal::Unauthorized, reply);
        };
        let opcode = match content {
            Content::Text if std::str::from_utf8(body).is_ok() => OpCode::Text,
            Content::Text => return self.refuse_in(key, Refusal::InvalidUtf8, reply),
            Content::Binary => OpCode::Binary,
            Content::Unsupported => {
                return self.refuse_in(key, Refusal::UnsupportedMediaType, reply)
            }
        };
        let now = self.clock.now();
        let rate = self.settings.config.max_messages_per_second;
        let Some(member) = self.sessions.get_mut(session) else {
            return self.refuse_in(key, Refusal::Unauthorized, reply);
        };
        if rate.is_some_and(|rate| !member.rate.take(now, rate)) {
            return self.refuse_in(key, Refusal::RateLimited, reply);
        }
        self.metrics.messages_received += 1;
        self.metrics.bytes_received += body.len() as u64;
        let message = RoomMessage {
            sender: member.id,
            opcode,
            payload: body,
            time_ms: wall_ms(),
            numbered: None,
        };
        // Cluster mode: it comes back through Redis, as a WebSocket
        // member's message does.
        if self.relay_room_message(room_key, message) == Route::DeliverHere {
            self.broadcast(room_key, message);
        }
        self.answer(key, reply, http::no_content);
    }
}
