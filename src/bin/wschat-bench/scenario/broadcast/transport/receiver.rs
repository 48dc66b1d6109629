//! One receiver of a transport comparison and how it reads: a `wschat.v1`
//! WebSocket, an SSE stream, or a poller (long or not). Whatever the
//! transport, the room's objects end in the same [`Tally::object`], so
//! offsets, losses, duplicates and latency are counted the same way.

use std::io::Write as _;
use std::time::Instant;

use super::super::tally::{Member, Moment, Tally};
use super::Transport;
use crate::conn::{Conn, ConnError, Event, Readiness, Status, Wire};
use crate::http::{self, poll, sse, HttpConn, Part};
use crate::rng::Rng;
use crate::v1::Welcome;

/// A receiver's connection.
#[derive(Debug)]
pub enum Link {
    /// A WebSocket speaking `wschat.v1`.
    Ws(Conn),
    /// An SSE stream and its parser.
    Sse(HttpConn, sse::Parser),
    /// A keep-alive connection for polls.
    Poll(HttpConn),
}

impl Link {
    /// The socket, to register with mio.
    pub fn stream(&mut self) -> &mut mio::net::TcpStream {
        match self {
            Link::Ws(conn) => conn.stream(),
            Link::Sse(conn, _) | Link::Poll(conn) => conn.stream(),
        }
    }

    /// What the connection moved at its socket so far.
    pub fn wire(&self) -> Wire {
        match self {
            Link::Ws(conn) => conn.wire(),
            Link::Sse(conn, _) | Link::Poll(conn) => conn.wire(),
        }
    }
}

/// A poller's own state: its session, its position and its schedule.
#[derive(Debug, Default)]
pub struct Poller {
    /// The session token of the first answer (empty before it).
    pub session: String,
    /// The `next` of the last answer (empty before the first).
    pub since: String,
    /// When the next poll is due (polling, between polls).
    pub next_due: Option<Instant>,
    /// When the last poll was sent.
    pub last_sent: Option<Instant>,
    /// An answer came in the last readiness event.
    pub answered: bool,
    /// The last answer's head said `Connection: close`.
    pub close_after: bool,
}

/// One receiver.
#[derive(Debug)]
pub struct Receiver {
    /// Its connection.
    pub link: Link,
    /// Its place in the room and its counts.
    pub member: Member,
    /// When it started connecting (join latency, timeouts).
    pub started: Instant,
    /// It has its welcome (or its first poll answer).
    pub joined: bool,
    /// For pollers.
    pub poller: Poller,
}

/// What reading needs besides the receiver.
#[derive(Debug)]
pub struct Reading<'a> {
    /// Where the room's objects are counted.
    pub tally: &'a mut Tally,
    /// This run's mark in the messages.
    pub run_tag: &'a str,
    /// When this readiness event came.
    pub at: Moment,
    /// Masks for the WebSocket's frames.
    pub rng: &'a mut Rng,
}

/// What a readiness event did to a receiver's connection.
#[derive(Debug)]
pub enum Outcome {
    /// Still there.
    Alive,
    /// The server closed it between two responses (a poller opens another).
    Ended,
    /// It failed, or closed when it must not.
    Failed(ConnError),
}

impl Receiver {
    /// Whether a poll of this receiver waits for its answer.
    pub fn awaiting(&self) -> bool {
        matches!(&self.link, Link::Poll(conn) if conn.awaiting())
    }

    /// Handles one readiness event of this receiver's connection.
    pub fn on_ready(&mut self, readiness: Readiness, r: &mut Reading<'_>) -> Outcome {
        let member = &mut self.member;
        let result = match &mut self.link {
            Link::Ws(conn) => ws_ready(conn, readiness, member, r),
            Link::Sse(conn, parser) => sse_ready(conn, parser, readiness, member, r),
            Link::Poll(conn) => poll_ready(conn, readiness, member, &mut self.poller, r),
        };
        self.joined |= self.member.position.knows_epoch();
        match result {
            Ok(http::Status::Alive) => Outcome::Alive,
            Ok(http::Status::Ended) => Outcome::Ended,
            Err(e) => Outcome::Failed(e),
        }
    }
}

/// A `wschat.v1` WebSocket's event: its objects go to the tally.
fn ws_ready(
    conn: &mut Conn,
    readiness: Readiness,
    member: &mut Member,
    r: &mut Reading<'_>,
) -> Result<http::Status, ConnError> {
    let (tally, run_tag, at) = (&mut *r.tally, r.run_tag, r.at);
    let result = conn.on_ready(readiness, r.rng, |event, _| match event {
        Event::Message {
            binary: false,
            data,
        } => tally.object(member, data, run_tag, at),
        Event::Message { binary: true, .. } => tally.foreign += 1,
        Event::Ping => tally.pings += 1,
        Event::Opened | Event::Bytes(_) => {}
    });
    match result? {
        Status::Alive => Ok(http::Status::Alive),
        Status::Finished { code } => Err(ConnError::Closed(code)),
    }
}

/// An SSE stream's event: the head is checked, the events parsed as they
/// come, each one's data a `wschat.v1` object.
fn sse_ready(
    conn: &mut HttpConn,
    parser: &mut sse::Parser,
    readiness: Readiness,
    member: &mut Member,
    r: &mut Reading<'_>,
) -> Result<http::Status, ConnError> {
    let (tally, run_tag, at) = (&mut *r.tally, r.run_tag, r.at);
    let mut refused = None;
    let status = conn.on_ready(readiness, |part| match part {
        Part::Head(head) if head.status != 200 => refused = Some(ConnError::Status(head.status)),
        Part::Head(head) if !head.event_stream => {
            refused = Some(ConnError::Http(
                "an event stream that is not text/event-stream",
            ))
        }
        Part::Head(_) => {}
        Part::Stream(bytes) if refused.is_none() => {
            parser.feed(bytes, |event| tally.object(member, event.data, run_tag, at));
        }
        Part::Stream(_) => {}
        Part::Body(_) => refused = Some(ConnError::Http("an event stream with a length")),
    });
    if let Some(e) = refused {
        return Err(e);
    }
    match status? {
        // An SSE stream is the connection's last answer: its end is the
        // stream's.
        http::Status::Ended => Err(ConnError::Closed(None)),
        alive => Ok(alive),
    }
}

/// A poller's event: each answer (head checked, body read) moves its
/// position and delivers its messages.
fn poll_ready(
    conn: &mut HttpConn,
    readiness: Readiness,
    member: &mut Member,
    poller: &mut Poller,
    r: &mut Reading<'_>,
) -> Result<http::Status, ConnError> {
    let (tally, run_tag, at) = (&mut *r.tally, r.run_tag, r.at);
    let mut failed = None;
    let status = conn.on_ready(readiness, |part| match part {
        Part::Head(head) if head.status != 200 => failed = Some(ConnError::Status(head.status)),
        Part::Head(head) if !head.json => {
            failed = Some(ConnError::Http("a poll answer that is not JSON"))
        }
        Part::Head(head) => poller.close_after = head.close,
        Part::Body(body) if failed.is_none() => {
            match take_answer(tally, member, poller, body, run_tag, at) {
                Ok(()) => poller.answered = true,
                Err(e) => failed = Some(e),
            }
        }
        Part::Body(_) => {}
        Part::Stream(_) => failed = Some(ConnError::Http("a poll answer without a length")),
    });
    if let Some(e) = failed {
        return Err(e);
    }
    status
}

/// Takes in one poll answer: the first one places the member (as a
/// welcome would: what it holds is history from before the join), a later
/// one that cannot continue from `since` (another epoch, or `recovered`
/// false) is a fresh welcome after a `since`, so a gap it leaves counts as
/// announced, not lost. Then its objects, and the position to poll from.
fn take_answer(
    tally: &mut Tally,
    member: &mut Member,
    poller: &mut Poller,
    body: &[u8],
    run_tag: &str,
    at: Moment,
) -> Result<(), ConnError> {
    let answer = poll::parse(body).map_err(|_| {
        tally.malformed += 1;
        ConnError::Http("a poll answer that cannot be read")
    })?;
    let welcome = Welcome {
        epoch: answer.epoch,
        offset: answer.next_offset,
        recovered: answer.recovered,
    };
    let position = &mut member.position;
    if !position.knows_epoch() {
        position.welcome(&welcome, &mut tally.offsets);
    } else if answer.epoch != position.epoch() || !answer.recovered {
        position.rejoin();
        position.welcome(&welcome, &mut tally.offsets);
    }
    for item in answer.messages() {
        match item {
            Ok(object) => tally.object(member, object, run_tag, at),
            Err(_) => tally.malformed += 1,
        }
    }
    poller.since.clear();
    poller.since.push_str(answer.next);
    if poller.session != answer.session {
        poller.session.clear();
        poller.session.push_str(answer.session);
    }
    Ok(())
}

/// The request of an SSE stream of `room`, with the headers
/// `EventSource` sends that the server reads.
pub fn sse_request(out: &mut Vec<u8>, room: &str, host: &str) {
    out.clear();
    let _ = write!(
        out,
        "GET /room/{room}/events HTTP/1.1\r\nHost: {host}\r\n\
         Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
}

/// A poll of `room` from the poller's position (none on its first poll,
/// which makes its member), waiting at most `timeout`, with its session
/// once it has one.
pub fn poll_request(out: &mut Vec<u8>, room: &str, host: &str, poller: &Poller, timeout: &str) {
    out.clear();
    let _ = write!(out, "GET /room/{room}/poll?");
    if !poller.since.is_empty() {
        let _ = write!(out, "since={}&", poller.since);
    }
    let _ = write!(
        out,
        "timeout={timeout} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
    );
    if !poller.session.is_empty() {
        let _ = write!(out, "Wschat-Session: {}\r\n", poller.session);
    }
    out.extend_from_slice(b"\r\n");
}

/// A new receiver's connection for `transport` (its request queued, or,
/// for WebSocket, its upgrade), given the way to open sockets.
pub fn new_link(
    transport: Transport,
    open_ws: impl FnOnce() -> Result<Conn, ConnError>,
    open_http: impl FnOnce() -> Result<HttpConn, ConnError>,
) -> Result<Link, ConnError> {
    Ok(match transport {
        Transport::Websocket => Link::Ws(open_ws()?),
        Transport::Sse => Link::Sse(open_http()?, sse::Parser::new()),
        Transport::LongPoll | Transport::Poll => Link::Poll(open_http()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_name_their_position_and_session_once_they_have_them() {
        let mut out = Vec::new();
        let mut poller = Poller::default();
        poll_request(&mut out, "bench", "127.0.0.1:9", &poller, "30");
        assert_eq!(
            out,
            b"GET /room/bench/poll?timeout=30 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAccept: application/json\r\n\r\n"
        );
        poller.since = "k3x:44".into();
        poller.session = "0000000b91d0".into();
        poll_request(&mut out, "bench", "h", &poller, "0");
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("GET /room/bench/poll?since=k3x:44&timeout=0 HTTP/1.1\r\n"));
        assert!(text.ends_with("Wschat-Session: 0000000b91d0\r\n\r\n"));
        sse_request(&mut out, "bench", "h");
        assert!(out.starts_with(b"GET /room/bench/events HTTP/1.1\r\n"));
    }

    #[test]
    fn answers_place_the_member_then_deliver() {
        let mut tally = Tally::new(1);
        let mut member = Member {
            expected: vec![0],
            ..Member::default()
        };
        let mut poller = Poller::default();
        let at = Moment {
            nanos: 5,
            in_window: true,
        };
        let first = br#"{"epoch":"e","recovered":true,"next":"e:2","messages":[{"type":"message","offset":2,"from":1,"time":1,"text":"old"}],"session":"s1","id":3,"members":2}"#;
        take_answer(&mut tally, &mut member, &mut poller, first, "b1", at).unwrap();
        assert_eq!(
            (poller.since.as_str(), poller.session.as_str()),
            ("e:2", "s1")
        );
        assert_eq!(tally.offsets.history_on_join, 1);
        let next = br#"{"epoch":"e","recovered":true,"next":"e:4","messages":[{"type":"message","offset":3,"from":1,"time":1,"text":"b1:0:0:1"},{"type":"join","id":9,"members":3},{"type":"message","offset":4,"from":1,"time":1,"text":"b1:0:1:2"}],"session":"s1","id":3,"members":3}"#;
        tally.senders[0].received = vec![false; 2];
        take_answer(&mut tally, &mut member, &mut poller, next, "b1", at).unwrap();
        assert_eq!((tally.deliveries, tally.presence), (2, 1));
        // The same answer again: offsets already had.
        take_answer(&mut tally, &mut member, &mut poller, next, "b1", at).unwrap();
        assert_eq!((tally.deliveries, tally.offsets.duplicates), (2, 2));
        // History that moved on without the poller: announced, not lost.
        let gone = br#"{"epoch":"e","recovered":false,"next":"e:9","messages":[{"type":"message","offset":8,"from":1,"time":1,"text":"x"},{"type":"message","offset":9,"from":1,"time":1,"text":"y"}],"session":"s1","id":3,"members":3}"#;
        take_answer(&mut tally, &mut member, &mut poller, gone, "b1", at).unwrap();
        assert_eq!((tally.offsets.not_recoverable, tally.offsets.gaps), (3, 0));
        assert!(take_answer(&mut tally, &mut member, &mut poller, b"{}", "b1", at).is_err());
        assert_eq!(tally.malformed, 1);
    }
}
