//! One client connection: it owns the socket and moves through
//! handshaking → open → closing.
//!
//! The connection reads and writes its socket and keeps only what is
//! unfinished between reads (part of a request head, or part of a frame
//! header). What the bytes mean is decided by `protocol`; what a message
//! does (echo, broadcast) is decided by the reactor and the rooms.

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

use mio::net::TcpStream;

use super::admission::RateBucket;
use super::outgoing::Outgoing;
use super::room::{is_valid_room_name, Delivery, Member, Membership, LOBBY};
use super::timer::Millis;
use super::write_queue::{BufferPool, Flush, WriteQueue};
use crate::config::Config;
use crate::protocol::deflate::{Deflater, Inflater};
use crate::protocol::extension::{CompressionMode, Deflate};
use crate::protocol::handshake::{RequestHead, Upgrade};
use crate::protocol::session::CloseState;
use crate::protocol::{HandshakeError, Session};

/// What a WebSocket connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/echo`: every message comes back unchanged.
    Echo,
    /// A chat room: every message goes to every member.
    Room(Membership),
}

/// permessage-deflate state of one connection.
#[derive(Debug)]
pub enum Compression {
    /// Not negotiated.
    Off,
    /// Agreed without context takeover: the loop's shared deflater and
    /// inflater serve, and this connection keeps no compression memory.
    Shared(Deflate),
    /// Agreed with context takeover (`--compression dedicated`).
    Dedicated(Box<OwnDeflate>),
}

/// A connection's own compression contexts.
#[derive(Debug)]
pub struct OwnDeflate {
    /// What was agreed.
    pub agreed: Deflate,
    /// Compresses what this connection is sent.
    pub deflater: Deflater,
    /// Inflates what this connection sends.
    pub inflater: Inflater,
}

impl Compression {
    /// The state for an agreement (or none) in the configured mode. In
    /// `shared` mode no connection gets contexts of its own (a client that
    /// narrowed the server's window is then sent plain frames).
    pub fn new(agreed: Option<Deflate>, mode: CompressionMode) -> Compression {
        match agreed {
            None => Compression::Off,
            Some(d) if mode != CompressionMode::Dedicated => Compression::Shared(d),
            Some(d) => Compression::Dedicated(Box::new(OwnDeflate {
                agreed: d,
                deflater: Deflater::new(d.server_max_window_bits.max(9)),
                inflater: Inflater::new(),
            })),
        }
    }

    /// The frame of `message` this connection should be sent.
    pub fn frame_of(&mut self, message: &mut Outgoing<'_>) -> Rc<[u8]> {
        match self {
            Compression::Off => message.frame_for(None, None),
            Compression::Shared(d) => message.frame_for(Some(*d), None),
            Compression::Dedicated(own) => {
                message.frame_for(Some(own.agreed), Some(&mut own.deflater))
            }
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the request head; `scanned` bytes were already searched.
    Handshake {
        /// Bytes of `inbuf` already searched for the end of the head.
        scanned: usize,
        /// The request line was complete and valid.
        line_checked: bool,
    },
    /// Upgraded: frames flow.
    Open {
        /// The id in `from{id}:`, unique for the life of the process.
        id: u64,
        /// The WebSocket state machine.
        session: Session,
        /// Echo or room.
        endpoint: Endpoint,
        /// permessage-deflate state.
        compression: Compression,
    },
    /// A plain HTTP response is queued; the connection ends after it.
    Responded,
}

/// What a complete request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /`: the chat page.
    Page,
    /// `GET /healthz`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// A valid upgrade to a WebSocket endpoint.
    Upgrade {
        /// The accept key and subprotocol.
        upgrade: Upgrade,
        /// `None` for `/echo`, else the room's name.
        room: Option<String>,
    },
}

/// Decides what a request head asks for, or why it is refused.
///
/// `allowed_origins` empty allows every origin; otherwise a browser's
/// upgrade (browsers always send `Origin`) must come from a listed origin,
/// the defence against cross-site WebSocket hijacking. Clients that send no
/// `Origin` are not browsers and are not affected.
pub fn route(head: &RequestHead<'_>, config: &Config) -> Result<Request, HandshakeError> {
    let allowed_origins = &config.allowed_origins;
    let path = head.path();
    let room = match path {
        "/" => Some(LOBBY.to_string()),
        "/echo" => None,
        _ => match path.strip_prefix("/room/") {
            Some(name) if is_valid_room_name(name) => Some(name.to_string()),
            Some(_) => return Err(HandshakeError::InvalidRoomName),
            None => {
                return match (head.method, path) {
                    (_, "/healthz" | "/metrics") if head.method != "GET" => {
                        Err(HandshakeError::MethodNotAllowed)
                    }
                    (_, "/healthz") => Ok(Request::Health),
                    (_, "/metrics") => Ok(Request::Metrics),
                    _ => Err(HandshakeError::NotFound),
                }
            }
        },
    };
    if head.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if !head.wants_upgrade() {
        return match path {
            "/" => Ok(Request::Page),
            _ => Err(HandshakeError::UpgradeRequired),
        };
    }
    let upgrade = head.check_upgrade(&config.protocols, config.compression)?;
    if let Some(origin) = head.header("origin") {
        if !allowed_origins.is_empty() && !allowed_origins.iter().any(|o| o.as_bytes() == origin) {
            return Err(HandshakeError::ForbiddenOrigin);
        }
    }
    Ok(Request::Upgrade { upgrade, room })
}

/// Flags kept as single bits would save little; bools keep the code plain.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flags {
    /// Listed in the reactor's dirty list: needs a flush this turn.
    pub dirty: bool,
    /// Reading stopped until the queue drains (echo backpressure).
    pub paused: bool,
    /// We sent FIN after our last bytes.
    pub write_shut: bool,
    /// The peer sent FIN.
    pub read_eof: bool,
    /// Listed for removal at the end of the turn.
    pub dead: bool,
    /// A Ping was sent and nothing has arrived since.
    pub pinged: bool,
    /// Listed in the reactor's list of connections to read again.
    pub unread: bool,
}

/// A client socket and everything the server keeps for it.
#[derive(Debug)]
pub struct Connection {
    /// The socket, registered with the reactor's `Poll`.
    pub stream: TcpStream,
    /// The peer's address, for logs and per-address limits.
    pub peer: SocketAddr,
    /// Handshaking, open or responded.
    pub phase: Phase,
    /// Bytes received but not yet used: part of a head or a frame header.
    pub inbuf: Vec<u8>,
    /// Bytes to send.
    pub queue: WriteQueue,
    /// When this connection's one timer fires; 0 for none.
    pub deadline: Millis,
    /// When the peer last sent anything.
    pub last_rx: Millis,
    /// Message rate of this client, when a limit is set.
    pub rate: RateBucket,
    /// State bits.
    pub flags: Flags,
}

/// The result of reading a socket until it would block (or a budget ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadResult {
    /// `n` bytes are in the scratch buffer.
    Data(usize),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side.
    Eof,
}

impl Connection {
    /// A connection just accepted.
    pub fn new(stream: TcpStream, peer: SocketAddr, now: Millis) -> Connection {
        Connection {
            stream,
            peer,
            phase: Phase::Handshake {
                scanned: 0,
                line_checked: false,
            },
            inbuf: Vec::new(),
            queue: WriteQueue::new(),
            deadline: 0,
            last_rx: now,
            rate: RateBucket::default(),
            flags: Flags::default(),
        }
    }

    /// The WebSocket id, once upgraded.
    pub fn id(&self) -> Option<u64> {
        match self.phase {
            Phase::Open { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Sends at once the ACK the kernel holds back (accepted sockets delay
    /// their ACKs so that they ride on the answer). A client that writes
    /// its request in pieces with Nagle's algorithm on waits for that ACK
    /// before it sends the next piece: with no answer to ride on yet, a
    /// delayed ACK would cost it 40 ms per piece.
    pub fn ack_now(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
    }

    /// Reads once into `scratch`, retrying on `EINTR`.
    pub fn read_into(&mut self, scratch: &mut [u8]) -> io::Result<ReadResult> {
        loop {
            return match self.stream.read(scratch) {
                Ok(0) => Ok(ReadResult::Eof),
                Ok(n) => Ok(ReadResult::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadResult::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Writes the queue until it is empty or the socket would block. Once
    /// the final bytes are out, sends FIN so the peer sees the end.
    ///
    /// Once both Close frames have been exchanged there is no FIN to send
    /// here: the reactor drops the socket at once (see [`Connection::is_done`])
    /// and closing it sends the FIN.
    pub fn flush(&mut self, pool: &mut BufferPool) -> io::Result<Flush> {
        let last_bytes = self.queue.is_sealed() && !self.flags.write_shut;
        if last_bytes {
            // The final bytes wait for the FIN and leave in one segment with
            // it: one packet and one wakeup fewer for the peer.
            #[cfg(target_os = "linux")]
            let _ = socket2::SockRef::from(&self.stream).set_tcp_cork(true);
        }
        let result = self.queue.write_to_pooled(&mut self.stream, pool)?;
        if result == Flush::Done && last_bytes {
            self.flags.write_shut = true;
            if !self.is_done() {
                // The peer may be gone already; the socket is closed either way.
                let _ = self.stream.shutdown(Shutdown::Write);
            }
        }
        Ok(result)
    }

    /// Nothing is left to do but close the socket: everything queued is
    /// written and either the peer sent FIN or the closing handshake is
    /// complete. In the latter case the server closes TCP first without
    /// waiting for the client's FIN (RFC 6455 section 7.1.1), so the
    /// client's FIN later meets a socket nobody waits on.
    pub fn is_done(&self) -> bool {
        // Flags first: this is asked after every read.
        self.flags.write_shut
            && self.queue.is_empty()
            && (self.flags.read_eof
                || matches!(
                    &self.phase,
                    Phase::Open { session, .. } if session.state() == CloseState::Closed
                ))
    }

    /// Queues a plain HTTP response; the connection ends after it.
    pub fn respond(&mut self, response: Vec<u8>) {
        self.phase = Phase::Responded;
        self.inbuf = Vec::new();
        self.queue.push_owned(response);
        self.queue.seal();
    }
}

impl Member for Connection {
    fn push_broadcast(&mut self, message: &mut Outgoing<'_>, limit: usize) -> Delivery {
        // The session may already have failed on bytes later in the same
        // read; until its Close is queued, earlier messages still go out.
        let Phase::Open { compression, .. } = &mut self.phase else {
            return Delivery::Skipped;
        };
        if self.queue.is_sealed() || self.flags.dead {
            return Delivery::Skipped;
        }
        deliver(
            &mut self.queue,
            compression,
            &mut self.flags.dirty,
            message,
            limit,
        )
    }
}

/// Queues a broadcast for one receiver: its queue, its compression, and
/// whether it already waits for a flush. The part of a [`Connection`] that
/// a broadcast touches, so benches and tests can fan out to receivers
/// without sockets.
pub fn deliver(
    queue: &mut WriteQueue,
    compression: &mut Compression,
    dirty: &mut bool,
    message: &mut Outgoing<'_>,
    limit: usize,
) -> Delivery {
    let queued = queue.queued_bytes();
    // A message larger than the bound still goes to an idle receiver:
    // the bound is on the backlog, not on one message.
    if queued > 0 && queued + message.len() > limit {
        return Delivery::Refused;
    }
    let bytes = queue.push_shared(compression.frame_of(message));
    if std::mem::replace(dirty, true) {
        Delivery::Queued(bytes)
    } else {
        Delivery::Woken(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::handshake::parse_head;

    fn route_of(head: &str) -> Result<Request, HandshakeError> {
        let head = parse_head(head.as_bytes())?;
        route(&head, &Config::default())
    }

    const UPGRADE: &str = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn idle_connection_struct_stays_small() {
        // The idle footprint target is 0.5 KiB of RSS per connection; the
        // struct is most of it (buffers are empty while idle).
        let size = std::mem::size_of::<Connection>();
        eprintln!("Connection is {size} bytes");
        assert!(size <= 256, "Connection is {size} bytes");
    }

    #[test]
    fn foreign_origins_are_refused_when_a_list_is_set() {
        let config = Config {
            allowed_origins: vec!["https://chat.example".to_string()],
            ..Config::default()
        };
        let check = |origin: &str| {
            let text = format!("GET / HTTP/1.1\r\n{origin}{UPGRADE}");
            let head = parse_head(text.as_bytes()).unwrap();
            route(&head, &config).map(|_| ())
        };
        assert_eq!(check("Origin: https://chat.example\r\n"), Ok(()));
        assert_eq!(
            check("Origin: https://evil.example\r\n"),
            Err(HandshakeError::ForbiddenOrigin)
        );
        assert_eq!(check(""), Ok(()), "no Origin: not a browser");
        let text = format!("GET / HTTP/1.1\r\nOrigin: https://evil.example\r\n{UPGRADE}");
        let head = parse_head(text.as_bytes()).unwrap();
        assert!(
            route(&head, &Config::default()).is_ok(),
            "no list: every origin"
        );
    }

    #[test]
    fn plain_routes() {
        assert_eq!(
            route_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            Ok(Request::Page)
        );
        assert_eq!(route_of("GET /?room=x HTTP/1.1\r\n\r\n"), Ok(Request::Page));
        assert_eq!(
            route_of("GET /healthz HTTP/1.1\r\n\r\n"),
            Ok(Request::Health)
        );
        assert_eq!(
            route_of("GET /metrics HTTP/1.0\r\n\r\n"),
            Ok(Request::Metrics)
        );
        assert_eq!(
            route_of("GET /nope HTTP/1.1\r\n\r\n"),
            Err(HandshakeError::NotFound)
        );
        assert_eq!(
            route_of("POST / HTTP/1.1\r\n\r\n"),
            Err(HandshakeError::MethodNotAllowed)
        );
        assert_eq!(
            route_of("DELETE /healthz HTTP/1.1\r\n\r\n"),
            Err(HandshakeError::MethodNotAllowed)
        );
        assert_eq!(
            route_of("GET /echo HTTP/1.1\r\n\r\n"),
            Err(HandshakeError::UpgradeRequired)
        );
    }

    #[test]
    fn upgrade_routes() {
        let lobby = route_of(&format!("GET / HTTP/1.1\r\n{UPGRADE}")).unwrap();
        assert!(matches!(lobby, Request::Upgrade { room: Some(ref r), .. } if r == LOBBY));
        let echo = route_of(&format!("GET /echo HTTP/1.1\r\n{UPGRADE}")).unwrap();
        assert!(matches!(echo, Request::Upgrade { room: None, .. }));
        let room = route_of(&format!("GET /room/rust HTTP/1.1\r\n{UPGRADE}")).unwrap();
        assert!(matches!(room, Request::Upgrade { room: Some(ref r), .. } if r == "rust"));
        assert_eq!(
            route_of(&format!("GET /room/a%20b HTTP/1.1\r\n{UPGRADE}")),
            Err(HandshakeError::InvalidRoomName)
        );
        assert_eq!(
            route_of(&format!("GET /room/ HTTP/1.1\r\n{UPGRADE}")),
            Err(HandshakeError::InvalidRoomName)
        );
    }
}
