//! How a connection fails, in words that group equal causes.

use std::fmt;
use std::io;

use crate::codec::{HandshakeFailure, Violation};

/// Why a connection failed. Its `Display` text is the key errors are
/// counted under, so it names the cause without per-connection details.
#[derive(Debug)]
pub enum ConnError {
    /// Creating the socket or the TCP connect failed.
    Connect(io::Error),
    /// A read or write failed after connecting (e.g. reset by the server).
    Io(io::Error),
    /// The TLS handshake failed or the server broke TLS (a certificate
    /// that does not check out, a bad record, an alert).
    Tls(rustls::Error),
    /// The server's answer to the upgrade was not a valid 101.
    Handshake(HandshakeFailure),
    /// The server broke RFC 6455 after the upgrade.
    Protocol(Violation),
    /// The server closed TCP without a close handshake (1006).
    UnexpectedEof(&'static str),
    /// The scenario gave up waiting (handshake or close).
    Timeout(&'static str),
    /// The server closed the connection (with this close code, if it sent
    /// one) while the scenario still needed it.
    Closed(Option<u16>),
    /// A plain HTTP response (SSE, polling) the scenario cannot use.
    Http(&'static str),
    /// A plain HTTP response with a status the scenario did not expect.
    Status(u16),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Connect(e) => write!(f, "connect: {}", io_kind(e)),
            ConnError::Io(e) => write!(f, "io: {}", io_kind(e)),
            ConnError::Tls(e) => write!(f, "tls: {e}"),
            ConnError::Handshake(h) => h.fmt(f),
            ConnError::Protocol(v) => v.fmt(f),
            ConnError::UnexpectedEof(when) => write!(f, "eof {when}"),
            ConnError::Timeout(what) => write!(f, "timeout: {what}"),
            ConnError::Closed(Some(code)) => write!(f, "closed by server: {code}"),
            ConnError::Closed(None) => f.write_str("closed by server"),
            ConnError::Http(what) => write!(f, "http: {what}"),
            ConnError::Status(code) => write!(f, "http: status {code}"),
        }
    }
}

impl ConnError {
    /// A failed read: TLS's own failures (carried in an `io::Error` by
    /// the TLS reader) become [`ConnError::Tls`], the rest stay I/O.
    pub fn from_io(e: io::Error) -> ConnError {
        if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            let inner = e.into_inner().expect("checked above");
            return match inner.downcast::<rustls::Error>() {
                Ok(tls) => ConnError::Tls(*tls),
                Err(other) => ConnError::Io(io::Error::new(io::ErrorKind::InvalidData, other)),
            };
        }
        ConnError::Io(e)
    }
}

/// An io error without its OS error number, so equal causes count together.
fn io_kind(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
