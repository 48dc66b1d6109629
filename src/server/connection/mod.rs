//! One client connection: a [`Transport`] under one state machine that
//! owns both directions and its timer.
//!
//! A connection starts in an HTTP exchange: it reads a request head (and
//! the body, for a path that takes one), answers, and either reads the
//! next request (keep-alive, pipelined requests answered in order) or
//! ends; an upgrade makes it a WebSocket session after its 101. It keeps
//! only what is unfinished between reads (part of a head or a body, part
//! of a frame header). What the bytes mean is decided by `protocol`; what a
//! message does (echo, broadcast) is decided by the reactor and the rooms,
//! which see a connection only through the methods here: every field is
//! private, every byte to the peer goes through its write queue (or, for a
//! last word before dropping it, [`Connection::write_once`]), and every
//! byte from it through its transport.

mod compression;
mod state;
mod stream;
mod streams;
mod timers;

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use mio::{Registry, Token};

pub use self::compression::{Compression, OwnDeflate};
pub use self::state::{AfterResponse, Endpoint, PendingBody, Received, Shared, WebSocket};
use self::state::{Exchange, State};
pub use self::stream::Echo;
pub use self::streams::{EventStream, HeldPoll};
pub use self::timers::{Expiry, Timeouts};
use super::admission::RateBucket;
use super::outgoing::{Format, Outgoing};
use super::room::Member;
use super::timer::{Time, Timer};
use super::transport::Transport;
use super::write_queue::{ByteGauge, WriteQueue};

/// State bits, packed: every idle connection carries them.
#[derive(Debug, Default, Clone, Copy)]
struct Flags(u16);

impl Flags {
    /// Listed in the reactor's dirty list: needs a flush this turn.
    const DIRTY: u16 = 1 << 0;
    /// Reading stopped until the queue drains (echo backpressure).
    const PAUSED: u16 = 1 << 1;
    /// We sent FIN after our last bytes.
    const WRITE_SHUT: u16 = 1 << 2;
    /// The peer sent FIN.
    const READ_EOF: u16 = 1 << 3;
    /// Listed for removal at the end of the turn.
    const DEAD: u16 = 1 << 4;
    /// A Ping was sent and nothing has arrived since.
    const PINGED: u16 = 1 << 5;
    /// Listed in the reactor's list of connections to read again.
    const READ_AGAIN: u16 = 1 << 6;
    /// The TCP peer is a trusted proxy: the client's address comes from
    /// what it says (PROXY header, `Forwarded`), and is counted then.
    const BEHIND_PROXY: u16 = 1 << 7;
    /// Counted in the per-address limits under `peer`'s address.
    const ADMITTED: u16 = 1 << 8;
    /// The kept input holds pipelined requests not answered yet: their
    /// answers wait until the queue drains (see `PAUSED`).
    const PENDING_INPUT: u16 = 1 << 9;

    fn get(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    fn set(&mut self, bit: u16, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }

    /// Sets `bit` to `on` and returns what it was.
    fn replace(&mut self, bit: u16, on: bool) -> bool {
        let was = self.get(bit);
        self.set(bit, on);
        was
    }
}

/// A socket address in 20 bytes instead of `SocketAddr`'s 32 (no IPv6
/// flow label or scope, which logs and limits never use): every connection
/// keeps one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerAddr {
    /// IPv4 addresses as IPv4-mapped IPv6.
    ip: [u8; 16],
    port: u16,
    v4: bool,
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> PeerAddr {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        PeerAddr {
            ip,
            port: addr.port(),
            v4: addr.is_ipv4(),
        }
    }
}

impl From<PeerAddr> for SocketAddr {
    fn from(peer: PeerAddr) -> SocketAddr {
        let v6 = Ipv6Addr::from(peer.ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) if peer.v4 => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, peer.port)
    }
}

/// A client connection and everything the server keeps for it.
#[derive(Debug)]
pub struct Connection {
    transport: Transport,
    peer: PeerAddr,
    state: State,
    /// Bytes received but not yet used: part of a head or a frame header.
    inbuf: Vec<u8>,
    queue: WriteQueue,
    /// When the armed timer fires (kept apart from its name, which packs
    /// beside the flags: eight bytes per connection).
    deadline: Option<Time>,
    /// What the armed timer is for.
    timer: Timer,
    /// When the peer last sent anything.
    last_rx: Time,
    /// Message rate of this client, when a limit is set.
    rate: RateBucket,
    flags: Flags,
}

impl Connection {
    /// A connection just accepted; its handshake must end by `deadline`.
    pub fn new(
        mut transport: Transport,
        peer: SocketAddr,
        gauge: ByteGauge,
        now: Time,
        deadline: Time,
    ) -> Connection {
        transport.count_into(&gauge);
        Connection {
            transport,
            peer: PeerAddr::from(peer),
            state: State::Head(Exchange::default()),
            inbuf: Vec::new(),
            queue: WriteQueue::with_gauge(gauge),
            deadline: Some(deadline),
            timer: Timer::Handshake,
            last_rx: now,
            rate: RateBucket::default(),
            flags: Flags::default(),
        }
    }

    /// The client's address, for logs and per-address limits: the TCP
    /// peer's, or what a trusted proxy said of the client.
    pub fn peer(&self) -> SocketAddr {
        self.peer.into()
    }

    /// Whether the TCP peer is a trusted proxy.
    pub fn is_behind_proxy(&self) -> bool {
        self.flags.get(Flags::BEHIND_PROXY)
    }

    /// Marks the TCP peer as a trusted proxy, whose word on the client's
    /// address will be taken.
    pub fn set_behind_proxy(&mut self) {
        self.flags.set(Flags::BEHIND_PROXY, true);
    }

    /// The client's real address, as a trusted proxy told it.
    pub fn set_client(&mut self, client: SocketAddr) {
        self.peer = PeerAddr::from(client);
    }

    /// Whether the connection is counted in the per-address limits.
    pub fn is_admitted(&self) -> bool {
        self.flags.get(Flags::ADMITTED)
    }

    /// Notes that the connection is counted in the per-address limits
    /// under its address.
    pub fn set_admitted(&mut self) {
        self.flags.set(Flags::ADMITTED, true);
    }

    /// The member id: a WebSocket's once upgraded, an SSE stream's once
    /// open.
    pub fn id(&self) -> Option<u64> {
        match &self.state {
            State::WebSocket(ws) => Some(ws.id),
            State::Stream(stream) => Some(stream.id),
            _ => None,
        }
    }

    /// The open WebSocket, once upgraded.
    pub fn websocket(&self) -> Option<&WebSocket> {
        match &self.state {
            State::WebSocket(ws) => Some(ws),
            _ => None,
        }
    }

    /// The open WebSocket, once upgraded.
    pub fn websocket_mut(&mut self) -> Option<&mut WebSocket> {
        match &mut self.state {
            State::WebSocket(ws) => Some(ws),
            _ => None,
        }
    }

    /// Whether the request head is still being read.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.state, State::Head(_))
    }

    /// Registers the transport with the reactor's poller.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.transport.register(registry, token)
    }

    /// Removes the transport from the poller, before the connection is dropped.
    pub fn deregister(&mut self, registry: &Registry) {
        self.transport.deregister(registry);
    }

    // ---- the reactor's bookkeeping ----

    /// Marks the connection as needing a flush; `false` if it already was.
    #[must_use]
    pub fn mark_dirty(&mut self) -> bool {
        !self.flags.replace(Flags::DIRTY, true)
    }

    /// Clears the flush mark, as the flush happens.
    pub fn clear_dirty(&mut self) {
        self.flags.set(Flags::DIRTY, false);
    }

    /// Whether the connection waits for a flush, with `bytes` or more queued.
    pub fn needs_flush_of(&self, bytes: usize) -> bool {
        self.flags.get(Flags::DIRTY) && self.queue.queued_bytes() >= bytes
    }

    /// Marks the connection to be read again next turn; `false` if it already was.
    #[must_use]
    pub fn mark_read_again(&mut self) -> bool {
        !self.flags.replace(Flags::READ_AGAIN, true)
    }

    /// Clears the read-again mark.
    pub fn clear_read_again(&mut self) {
        self.flags.set(Flags::READ_AGAIN, false);
    }

    /// Marks the connection for removal; `false` if it already was.
    #[must_use]
    pub fn mark_dead(&mut self) -> bool {
        !self.flags.replace(Flags::DEAD, true)
    }

    /// Whether the connection is marked for removal.
    pub fn is_dead(&self) -> bool {
        self.flags.get(Flags::DEAD)
    }
}

impl Member for Connection {
    fn backlog(&self) -> Option<usize> {
        match self.state {
            State::WebSocket(_) | State::Stream(_)
                if !self.queue.is_sealed() && !self.flags.get(Flags::DEAD) =>
            {
                Some(self.backlog_bytes())
            }
            _ => None,
        }
    }

    fn format(&self) -> Format {
        match &self.state {
            State::WebSocket(ws) => ws.format,
            State::Stream(_) => Format::Sse,
            _ => Format::Classic,
        }
    }

    fn queue(&mut self, message: &mut Outgoing<'_>) -> bool {
        let frame = match &mut self.state {
            State::WebSocket(ws) => ws.compression.frame_of(message, ws.format),
            State::Stream(_) => message.frame_for(Format::Sse, None, None),
            _ => return false,
        };
        self.queue.push_shared(frame);
        self.mark_dirty()
    }

    fn id(&self) -> u64 {
        Connection::id(self).unwrap_or(0)
    }

    fn queue_frame(&mut self, frame: std::rc::Rc<[u8]>) -> bool {
        if !matches!(self.state, State::WebSocket(_) | State::Stream(_)) {
            return false;
        }
        self.queue.push_shared(frame);
        self.mark_dirty()
    }

    fn session(&self) -> Option<&str> {
        self.stream().map(|s| &*s.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::protocol::deflate::Inflater;
    use crate::protocol::handshake::Upgrade;
    use crate::protocol::session::Limits;
    use crate::protocol::Session;
    use crate::server::router::BodyRequest;

    pub(super) const TIMEOUTS: Timeouts = Timeouts {
        ping: Duration::from_secs(30),
        idle: Duration::from_secs(60),
    };

    pub(super) fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    /// A connection over a real loopback socket, handshake due at 10 s.
    pub(super) fn accepted() -> (Connection, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let transport = Transport::tcp(mio::net::TcpStream::from_std(server));
        let conn = Connection::new(transport, peer, ByteGauge::new(), t(0), t(10_000));
        (conn, client)
    }

    fn shared_parts() -> (Inflater, Vec<Vec<u8>>) {
        (Inflater::new(), Vec::new())
    }

    fn receive(conn: &mut Connection, data: &mut [u8]) -> Received {
        let (mut inflater, mut spare) = shared_parts();
        let mut shared = Shared {
            max_head_bytes: 8192,
            proxy_protocol: false,
            limits: Limits {
                max_message_size: 1 << 20,
                in_place_max: 64 * 1024,
            },
            inflater: &mut inflater,
            spare: &mut spare,
        };
        conn.receive(data, &mut shared, &mut Vec::new())
    }

    fn open(conn: &mut Connection) {
        let ws = WebSocket {
            id: 7,
            session: Session::new(),
            endpoint: Endpoint::Echo,
            format: Format::Classic,
            compression: Compression::Off,
        };
        let upgrade = Upgrade {
            accept: "x".into(),
            protocol: None,
            deflate: None,
        };
        conn.upgrade(crate::http::switching_protocols(&upgrade), ws, t(30_000));
    }

    #[test]
    fn idle_connection_struct_stays_small() {
        // The idle footprint target is 0.5 KiB of RSS per connection; the
        // struct is most of it (buffers are empty while idle).
        let size = std::mem::size_of::<Connection>();
        eprintln!("Connection is {size} bytes");
        assert!(size <= 256, "Connection is {size} bytes");
    }

    #[test]
    fn a_late_head_times_out() {
        let (mut conn, _client) = accepted();
        assert_eq!(conn.poll_timeout(), Some(t(10_000)));
        assert_eq!(
            receive(&mut conn, &mut b"GET / HT".to_vec()),
            Received::Partial
        );
        assert_eq!(conn.handle_timeout(t(10_000), TIMEOUTS), Expiry::Handshake);
        assert_eq!(conn.poll_timeout(), None, "a timer fires once");
    }

    #[test]
    fn a_silent_client_is_pinged_then_given_up_on_virtual_time() {
        let (mut conn, _client) = accepted();
        open(&mut conn);
        let after_101 = conn.queued_bytes();
        assert_eq!(conn.poll_timeout(), Some(t(30_000)));
        assert_eq!(conn.handle_timeout(t(30_000), TIMEOUTS), Expiry::Pinged);
        assert_eq!(conn.queued_bytes(), after_101 + 2, "an empty Ping");
        assert_eq!(conn.poll_timeout(), Some(t(60_000)), "idle timer armed");
        assert_eq!(
            conn.handle_timeout(t(60_000), TIMEOUTS),
            Expiry::Idle(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_client_that_speaks_is_not_pinged() {
        let (mut conn, _client) = accepted();
        open(&mut conn);
        conn.on_activity(t(20_000));
        assert_eq!(conn.handle_timeout(t(30_000), TIMEOUTS), Expiry::Rearmed);
        assert_eq!(
            conn.poll_timeout(),
            Some(t(50_000)),
            "a ping interval after"
        );
        assert_eq!(conn.handle_timeout(t(50_000), TIMEOUTS), Expiry::Pinged);
        // The Pong (any bytes) arrives: the idle timer finds a live client.
        conn.on_activity(t(51_000));
        assert_eq!(conn.handle_timeout(t(80_000), TIMEOUTS), Expiry::Rearmed);
        assert_eq!(conn.poll_timeout(), Some(t(81_000)));
    }

    #[test]
    fn a_close_expects_the_peer_within_the_close_timer() {
        let (mut conn, _client) = accepted();
        open(&mut conn);
        assert!(!conn.close_expected());
        let frame = conn
            .websocket_mut()
            .unwrap()
            .session
            .abort(crate::protocol::CloseCode::GOING_AWAY, "bye")
            .unwrap();
        conn.send_close(frame, t(5_000));
        assert!(conn.is_closing() && conn.close_expected());
        assert_eq!(conn.handle_timeout(t(5_000), TIMEOUTS), Expiry::Close);
    }

    #[test]
    fn a_response_ends_the_connection_or_reads_the_next_request() {
        let (mut conn, _client) = accepted();
        let ok = || b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        assert!(!conn.respond(ok(), AfterResponse::Close, t(5_000)));
        assert!(conn.is_closing());
        assert!(!conn.keeps_input());
        assert_eq!(
            receive(&mut conn, &mut b"GET /".to_vec()),
            Received::Ignored
        );

        let (mut kept, _client) = accepted();
        let request = b"GET /healthz HTTP/1.1\r\n\r\n";
        assert!(!kept.respond(ok(), AfterResponse::NextRequest, t(5_000)));
        assert!(!kept.is_closing() && kept.is_handshaking());
        assert_eq!(kept.requests_served(), 1);
        assert_eq!(
            receive(&mut kept, &mut request.to_vec()),
            Received::Head(request.len())
        );
    }

    #[test]
    fn a_kept_alive_connection_is_idle_until_its_next_request_begins() {
        let (mut conn, _client) = accepted();
        assert!(!conn.begin_request(t(1)), "the first request's timer runs");
        let _ = conn.respond(b"x".to_vec(), AfterResponse::NextRequest, t(5_000));
        assert_eq!(conn.poll_timeout(), Some(t(5_000)));
        assert!(conn.begin_request(t(12_000)));
        assert_eq!(conn.poll_timeout(), Some(t(12_000)), "now the request's");
        assert!(!conn.begin_request(t(13_000)), "once");
        assert_eq!(conn.handle_timeout(t(12_000), TIMEOUTS), Expiry::Handshake);

        let (mut idle, _client) = accepted();
        let _ = idle.respond(b"x".to_vec(), AfterResponse::NextRequest, t(5_000));
        assert_eq!(idle.handle_timeout(t(5_000), TIMEOUTS), Expiry::KeepAlive);
    }

    #[test]
    fn a_body_is_held_until_whole_then_handed_over_with_its_request() {
        let (mut conn, _client) = accepted();
        let request = BodyRequest::PostMessage {
            room: "a".into(),
            session: None,
            content: crate::server::router::Content::Text,
        };
        conn.expect_body(PendingBody::new(
            request.clone(),
            5,
            AfterResponse::NextRequest,
        ));
        assert!(conn.is_reading_body() && conn.keeps_input());
        assert_eq!(receive(&mut conn, &mut b"hel".to_vec()), Received::Partial);
        assert_eq!(conn.buffered_bytes(), 3, "counted in the inbound budget");
        let Received::Body(pending) = receive(&mut conn, &mut b"helloGET".to_vec()) else {
            panic!("the body is whole");
        };
        assert_eq!((pending.request, pending.length), (request, 5));
        assert_eq!(conn.buffered_bytes(), 0);
        assert!(conn.is_handshaking(), "the next request is read next");
    }

    #[test]
    fn ending_an_exchange_resumes_reading_held_for_a_slow_reader() {
        let (mut conn, _client) = accepted();
        conn.hold_pipeline();
        assert!(!conn.wants_read() && !conn.take_pending_input());
        assert!(
            conn.finish_exchange(t(5_000)),
            "reading resumes, for the FIN"
        );
        assert!(conn.wants_read() && !conn.take_pending_input());
        assert!(conn.is_closing());
    }

    #[test]
    fn queued_bytes_count_into_the_gauge_until_the_connection_goes() {
        let gauge = ByteGauge::new();
        let (conn, _client) = accepted();
        let mut conn = Connection {
            queue: WriteQueue::with_gauge(gauge.clone()),
            ..conn
        };
        open(&mut conn);
        assert_eq!(gauge.get(), conn.queued_bytes());
        assert!(gauge.get() > 0);
        drop(conn);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn peer_addresses_keep_their_form() {
        for text in [
            "127.0.0.1:9502",
            "[::1]:443",
            "[::ffff:10.0.0.1]:80",
            "0.0.0.0:0",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(SocketAddr::from(PeerAddr::from(addr)), addr, "{text}");
        }
        assert_eq!(std::mem::size_of::<PeerAddr>(), 20);
    }
}
