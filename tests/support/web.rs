//! The transports without WebSocket as a client library sees them: SSE
//! streams, polls and posts over `ureq` (an HTTP client of its own, not
//! the crate's code), with an event-stream reader written here from the
//! WHATWG standard's parsing rules.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// An agent for one test: no TLS, non-2xx statuses returned as answers,
/// every call bounded.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// `http://ADDR{path}`.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// One server-sent event: its last `id` field (if it had one) and its
/// `data` lines joined by LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `id` field, if the event had one.
    pub id: Option<String>,
    /// The data.
    pub data: String,
}

/// An open SSE stream.
pub struct Sse {
    reader: BufReader<ureq::BodyReader<'static>>,
    /// The response's status.
    pub status: u16,
    /// The response's headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Comment lines seen so far (heartbeats).
    pub comments: usize,
}

impl Sse {
    /// Opens `path` with `headers`; panics unless it answers 200 with
    /// `text/event-stream`.
    pub fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let sse = Sse::try_open(addr, path, headers);
        assert_eq!(sse.status, 200, "{path}: {:?}", sse.headers);
        assert_eq!(sse.header("content-type"), Some("text/event-stream"));
        sse
    }

    /// Opens `path` with `headers`, whatever the answer.
    pub fn try_open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut request = agent().get(url(addr, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Sse {
            reader: BufReader::new(response.into_body().into_reader()),
            status,
            headers,
            comments: 0,
        }
    }

    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next line without its LF; `None` at the end of the stream.
    pub fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_string()),
            Err(e) => panic!("reading the stream: {e}"),
        }
    }

    /// The next event, comments skipped (and counted); `None` at the end
    /// of the stream.
    pub fn try_next_event(&mut self) -> Option<Event> {
        let (mut id, mut data): (Option<String>, Option<String>) = (None, None);
        loop {
            let line = self.next_line()?;
            if line.is_empty() {
                match data.take() {
                    Some(data) => return Some(Event { id, data }),
                    None => continue,
                }
            }
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => id = Some(value),
                "data" => {
                    data = Some(match data {
                        Some(d) => format!("{d}\n{value}"),
                        None => value,
                    })
                }
                other => panic!("unexpected field {other:?}"),
            }
        }
    }

    /// The next event; panics at the end of the stream.
    pub fn next_event(&mut self) -> Event {
        self.try_next_event().expect("the stream ended")
    }

    /// The next event's id and data as JSON.
    pub fn next_json(&mut self) -> (Option<String>, Value) {
        let event = self.next_event();
        let value = serde_json::from_str(&event.data)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", event.data));
        (event.id, value)
    }

    /// The next `message` object (presence skipped), with its event id.
    pub fn next_message(&mut self) -> (String, Value) {
        loop {
            let (id, value) = self.next_json();
            if value["type"] == "message" {
                return (id.expect("a message event has an id"), value);
            }
            assert!(
                value["type"] == "join" || value["type"] == "leave",
                "{value}"
            );
        }
    }

    /// Reads to the end of the stream; returns the events left.
    pub fn rest(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.try_next_event()).collect()
    }
}

/// A poll's answer: status and body (JSON for a 200).
#[derive(Debug)]
pub struct Polled {
    /// The status.
    pub status: u16,
    /// The `Connection` header.
    pub connection: String,
    /// The body as JSON (`Null` if it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
}

/// `GET /room/{room}/poll?{query}`, with `Wschat-Session` if given.
pub fn poll(
    agent: &ureq::Agent,
    addr: SocketAddr,
    room: &str,
    query: &str,
    session: Option<&str>,
) -> Polled {
    let path = format!("/room/{room}/poll?{query}");
    let mut request = agent.get(url(addr, &path));
    if let Some(session) = session {
        request = request.header("Wschat-Session", session);
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let connection = response
        .headers()
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response.body_mut().read_to_string().unwrap();
    Polled {
        status,
        connection,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// `POST /room/{room}/messages` with `body`, typed `content_type`, as
/// `session` (if given); returns the status and the body.
pub fn post(
    agent: &ureq::Agent,
    addr: SocketAddr,
    room: &str,
    session: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let path = format!("/room/{room}/messages");
    let mut request = agent.post(url(addr, &path));
    if let Some(session) = session {
        request = request.header("Wschat-Session", session);
    }
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    let mut response = request
        .send(body)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// Posts `text` as `session`; panics unless it is accepted (204).
pub fn post_text(agent: &ureq::Agent, addr: SocketAddr, room: &str, session: &str, text: &str) {
    let (status, body) = post(
        agent,
        addr,
        room,
        Some(session),
        Some("text/plain; charset=utf-8"),
        text.as_bytes(),
    );
    assert_eq!(status, 204, "{body}");
}
