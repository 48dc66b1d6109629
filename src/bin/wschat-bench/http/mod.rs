//! Plain HTTP/1.1 for the receivers that do not use WebSocket: one
//! non-blocking keep-alive connection sending requests and reading their
//! responses, the SSE stream, and the poll answers.
//!
//! The connection knows HTTP framing only: a response is a head, then a
//! body of `Content-Length` bytes, none (`204`, `1xx`), or, without a
//! length, everything until the server closes (an SSE stream). What the
//! bodies mean is the scenario's business (see `sse` and `poll`). Every
//! byte goes through a [`Counted`] socket, so heads count as much as
//! bodies.

pub mod poll;
pub mod sse;

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;

use crate::conn::{connect_done, open_socket, ConnError, Counted, Readiness, Wire};

/// Bytes asked of one `read`: a poll answer of a busy room, or a burst of
/// events, in few system calls.
const READ_CHUNK: usize = 16 * 1024;

/// Headers of a response the parser makes room for.
const MAX_HEADERS: usize = 24;

/// What a response's head says that its reader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// `Connection: close`: the server ends the connection after it.
    pub close: bool,
    /// `Content-Type` starts with `text/event-stream`.
    pub event_stream: bool,
    /// `Content-Type` starts with `application/json`.
    pub json: bool,
}

/// One piece of a response, as it is read.
#[derive(Debug)]
pub enum Part<'a> {
    /// A head.
    Head(Head),
    /// The whole body of a response with a length.
    Body(&'a [u8]),
    /// The next bytes of a body that lasts until the connection ends.
    Stream(&'a [u8]),
}

/// How the connection stands after a readiness event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Still open.
    Alive,
    /// The server closed it between responses (after a `Connection:
    /// close` answer, or a kept-alive connection it let go idle).
    Ended,
}

/// Where reading is in the current response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Waiting for (the rest of) a head.
    Head,
    /// This many body bytes to come.
    Body(usize),
    /// A body without length: everything to the end.
    Stream,
}

/// One client connection speaking HTTP/1.1.
#[derive(Debug)]
pub struct HttpConn {
    stream: TcpStream,
    connected: bool,
    /// Requests queued, from `tx_pos` on not yet written.
    tx: Vec<u8>,
    tx_pos: usize,
    /// Bytes read and not yet used are `rx[rx_pos..rx_end]`; reads go
    /// after them (the buffer is zeroed once, when it grows, not per read).
    rx: Vec<u8>,
    rx_pos: usize,
    rx_end: usize,
    reading: Reading,
    /// Requests sent whose response has not been read whole.
    awaiting: usize,
    /// What crossed the socket.
    wire: Wire,
}

impl HttpConn {
    /// Starts connecting to `addr` (from `source`, if given). Register
    /// [`stream`](HttpConn::stream) for both readable and writable.
    pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<HttpConn, ConnError> {
        Ok(HttpConn {
            stream: open_socket(addr, source).map_err(ConnError::Connect)?,
            connected: false,
            tx: Vec::new(),
            tx_pos: 0,
            rx: Vec::new(),
            rx_pos: 0,
            rx_end: 0,
            reading: Reading::Head,
            awaiting: 0,
            wire: Wire::default(),
        })
    }

    /// The socket, to register with mio.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// What this connection read and wrote at its socket so far.
    pub fn wire(&self) -> Wire {
        self.wire
    }

    /// Whether a response is still to come for a request sent.
    pub fn awaiting(&self) -> bool {
        self.awaiting > 0
    }

    /// Queues a whole request and writes what the socket takes (the rest,
    /// or all of it while connecting, goes at the next readiness event).
    pub fn send(&mut self, request: &[u8]) -> Result<(), ConnError> {
        self.tx.extend_from_slice(request);
        self.awaiting += 1;
        self.flush()
    }

    /// Handles one readiness event: finishes the connect, writes what is
    /// queued, reads until the socket is drained, and hands each piece of
    /// a response to `on_part` in order.
    pub fn on_ready(
        &mut self,
        readiness: Readiness,
        mut on_part: impl FnMut(Part<'_>),
    ) -> Result<Status, ConnError> {
        if !self.connected {
            if !self.finish_connect(readiness)? {
                return Ok(Status::Alive);
            }
            self.connected = true;
        }
        self.flush()?;
        if !(readiness.readable || readiness.closed) {
            return Ok(Status::Alive);
        }
        loop {
            self.make_room();
            let free = &mut self.rx[self.rx_end..];
            let n = match Counted::new(&mut self.stream, &mut self.wire).read(free) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Status::Alive),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnError::Io(e)),
            };
            self.rx_end += n;
            if n == 0 {
                return self.on_eof();
            }
            self.parse(&mut on_part)?;
        }
    }

    /// Makes room for a read of at least half a [`READ_CHUNK`] after the
    /// unused bytes: moves them to the front, or grows the buffer.
    fn make_room(&mut self) {
        if self.rx_pos == self.rx_end {
            self.rx_pos = 0;
            self.rx_end = 0;
        }
        if self.rx.len() - self.rx_end >= READ_CHUNK / 2 {
            return;
        }
        if self.rx_pos > 0 {
            self.rx.copy_within(self.rx_pos..self.rx_end, 0);
            self.rx_end -= self.rx_pos;
            self.rx_pos = 0;
        }
        if self.rx.len() - self.rx_end < READ_CHUNK / 2 {
            let len = self.rx.len();
            self.rx.resize(len + READ_CHUNK, 0);
        }
    }

    /// The server closed its side: fine between responses, a failure in
    /// the middle of one (an SSE stream ending is the scenario's to judge).
    fn on_eof(&self) -> Result<Status, ConnError> {
        match self.reading {
            Reading::Head if self.awaiting == 0 && self.rx_pos == self.rx_end => Ok(Status::Ended),
            Reading::Stream => Err(ConnError::UnexpectedEof("at the end of an event stream")),
            _ => Err(ConnError::UnexpectedEof("before the end of a response")),
        }
    }

    /// Hands out every whole piece in the receive buffer.
    fn parse(&mut self, on_part: &mut impl FnMut(Part<'_>)) -> Result<(), ConnError> {
        loop {
            let data = &self.rx[self.rx_pos..self.rx_end];
            match self.reading {
                Reading::Stream => {
                    if !data.is_empty() {
                        on_part(Part::Stream(data));
                    }
                    self.rx_pos = self.rx_end;
                    return Ok(());
                }
                Reading::Body(len) => {
                    if data.len() < len {
                        return Ok(());
                    }
                    on_part(Part::Body(&data[..len]));
                    self.rx_pos += len;
                    self.reading = Reading::Head;
                    self.awaiting = self.awaiting.saturating_sub(1);
                }
                Reading::Head => {
                    let Some((used, head, length)) = parse_head(data)? else {
                        return Ok(());
                    };
                    self.rx_pos += used;
                    on_part(Part::Head(head));
                    self.reading = match length {
                        _ if head.status < 200 => Reading::Head,
                        _ if head.status == 204 || head.status == 304 => {
                            self.awaiting = self.awaiting.saturating_sub(1);
                            Reading::Head
                        }
                        Some(len) => Reading::Body(len),
                        None => Reading::Stream,
                    };
                }
            }
        }
    }

    /// Whether TCP is connected (the same checks as a WebSocket `Conn`).
    fn finish_connect(&mut self, readiness: Readiness) -> Result<bool, ConnError> {
        connect_done(&self.stream, readiness).map_err(ConnError::Connect)
    }

    /// Writes queued bytes until done or the socket is full.
    fn flush(&mut self) -> Result<(), ConnError> {
        if !self.connected {
            return Ok(());
        }
        let mut socket = Counted::new(&mut self.stream, &mut self.wire);
        while self.tx_pos < self.tx.len() {
            match socket.write(&self.tx[self.tx_pos..]) {
                Ok(0) => return Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.tx_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        self.tx.clear();
        self.tx_pos = 0;
        Ok(())
    }
}

/// A response head at the start of `data`: its length, what it says, and
/// its `Content-Length`; `None` while incomplete.
fn parse_head(data: &[u8]) -> Result<Option<(usize, Head, Option<usize>)>, ConnError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(data) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ConnError::Http("malformed response head")),
    };
    let mut head = Head {
        status: response.code.unwrap_or(0),
        close: false,
        event_stream: false,
        json: false,
    };
    let mut length = None;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = value
                .parse()
                .map_err(|_| ConnError::Http("bad Content-Length"))?;
            length = Some(len);
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        } else if h.name.eq_ignore_ascii_case("content-type") {
            let value = value.to_ascii_lowercase();
            head.event_stream = value.starts_with("text/event-stream");
            head.json = value.starts_with("application/json");
        }
    }
    Ok(Some((used, head, length)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn responses_split_anywhere_are_read_whole_and_every_byte_counted() {
        let body = br#"{"epoch":"e","recovered":true,"next":"e:1","messages":[],"session":"s","id":1,"members":1}"#;
        let mut responses = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            body.len()
        )
        .into_bytes();
        responses.extend_from_slice(body);
        responses.extend_from_slice(b"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");
        responses.extend_from_slice(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = responses.clone();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut request = [0u8; 64];
            let _ = s.read(&mut request).unwrap();
            for piece in sent.chunks(7) {
                s.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let mut conn = HttpConn::connect(addr, None).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        poll.registry()
            .register(conn.stream(), mio::Token(0), interest)
            .unwrap();
        for _ in 0..3 {
            conn.send(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        }
        let mut events = mio::Events::with_capacity(8);
        let (mut heads, mut bodies) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = Status::Alive;
        while status == Status::Alive && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            for event in events.iter() {
                status = conn
                    .on_ready(Readiness::of(event), |part| match part {
                        Part::Head(head) => heads.push(head),
                        Part::Body(body) => bodies.push(body.to_vec()),
                        Part::Stream(_) => panic!("every response here has a length"),
                    })
                    .unwrap();
            }
        }
        server.join().unwrap();
        assert_eq!(status, Status::Ended);
        let statuses: Vec<(u16, bool)> = heads.iter().map(|h| (h.status, h.close)).collect();
        assert_eq!(statuses, [(200, false), (204, false), (200, true)]);
        assert_eq!(bodies, [body.to_vec(), b"{}".to_vec()]);
        assert!(!conn.awaiting());
        let wire = conn.wire();
        assert_eq!(wire.read, responses.len() as u64);
        assert_eq!(wire.written, 3 * 18);
    }

    #[test]
    fn heads_say_status_length_connection_and_type() {
        let poll = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\nCache-Control: no-store\r\n\r\n{}";
        let (used, head, length) = parse_head(poll).unwrap().unwrap();
        assert_eq!((used, length), (poll.len() - 2, Some(2)));
        assert!(head.json && !head.close && !head.event_stream);
        let sse =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
        let (_, head, length) = parse_head(sse).unwrap().unwrap();
        assert!(head.event_stream && head.close && length.is_none());
        assert!(parse_head(&sse[..20]).unwrap().is_none());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
