//! [`RawClient`]: one deliberately plain WebSocket client for every test.
//! It writes exactly the bytes a test asks for, with plain blocking
//! `write`s, and reads frames with the [`Decoder`] of `frames.rs`, so what
//! it accepts is an independent reading of RFC 6455, not the crate's.
//!
//! Two ways to read. The `read_frame`/`expect_*` family returns frames as
//! they are (fragments, RSV bits, exact headers) for the conformance tests;
//! one read there never waits longer than [`IO_TIMEOUT`]. The
//! `next_*` family returns whole messages, skips pings and pongs where it
//! says so, and waits as long as it is told: the load, fault and cluster
//! tests wait for many clients at once and across processes.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{
    check_101, close_payload, decode_frame, encode_frame, handshake_request, hex, op, random_key,
    random_mask, read_to_eof, server_frame, tcp_connect, Decoder, Frame, ReadError, Response,
    IO_TIMEOUT,
};

/// A raw WebSocket client over a blocking `TcpStream`. All reads are
/// bounded.
pub struct RawClient {
    /// The socket, for socket options, half-closes, resets, or writes a
    /// test times itself.
    pub stream: TcpStream,
    /// Bytes received and not consumed yet.
    pub decoder: Decoder,
    response: Option<Response>,
}

impl RawClient {
    /// Opens a TCP connection without any handshake.
    pub fn connect_tcp(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(tcp_connect(addr))
    }

    /// Wraps a connected stream (set up by the caller, e.g. with
    /// [`super::tcp_connect_small_rcvbuf`]) without any handshake.
    pub fn from_stream(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            decoder: Decoder::default(),
            response: None,
        }
    }

    /// Connects and completes the opening handshake for `path` (no
    /// subprotocol, no extension offered). Panics unless the server answers
    /// 101 with the right `Sec-WebSocket-Accept`.
    pub fn connect(addr: SocketAddr, path: &str) -> RawClient {
        Self::connect_with_headers(addr, path, &[])
    }

    /// Like [`RawClient::connect`] with extra request headers (for example
    /// `("Sec-WebSocket-Protocol", "chat")`).
    pub fn connect_with_headers(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> RawClient {
        let mut client = Self::connect_tcp(addr);
        client.handshake(path, extra);
        client
    }

    /// Completes the opening handshake for `path` on a connected stream.
    pub fn over(stream: TcpStream, path: &str) -> RawClient {
        let mut client = Self::from_stream(stream);
        client.handshake(path, &[]);
        client
    }

    /// Sends a handshake request on a fresh connection and checks the 101
    /// response (status, `Upgrade`, `Connection`, `Sec-WebSocket-Accept`).
    /// Bytes after the response head stay buffered for [`Self::read_frame`].
    pub fn handshake(&mut self, path: &str, extra: &[(&str, &str)]) -> Response {
        let key = random_key();
        let head = self.request_upgrade(path, extra, &key).unwrap_or_else(|e| {
            panic!(
                "{path}: no upgrade response: {e:?}; got so far: {:?}",
                String::from_utf8_lossy(self.decoder.buffered())
            )
        });
        check_101(&head, &key);
        head
    }

    /// Sends a handshake request and returns the response head, whatever
    /// its status (for refusals), or why none came.
    pub fn try_upgrade(
        &mut self,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<Response, ReadError> {
        self.request_upgrade(path, extra, &random_key())
    }

    fn request_upgrade(
        &mut self,
        path: &str,
        extra: &[(&str, &str)],
        key: &str,
    ) -> Result<Response, ReadError> {
        let host = self.stream.peer_addr().map_err(ReadError::Io)?.to_string();
        self.try_send_raw(&handshake_request(&host, path, key, extra))
            .map_err(ReadError::Io)?;
        let head = self.try_read_http_head()?;
        self.response = Some(head.clone());
        Ok(head)
    }

    /// The response of the handshake done by `connect`, `handshake` or
    /// `try_upgrade`.
    pub fn handshake_response(&self) -> Option<&Response> {
        self.response.as_ref()
    }

    /// Reads an HTTP response head (at most 16 KiB, within [`IO_TIMEOUT`]).
    /// Later bytes stay buffered.
    pub fn try_read_http_head(&mut self) -> Result<Response, ReadError> {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let buffered = self.decoder.buffered();
            if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Response::parse(&self.decoder.take(end + 4)).unwrap());
            }
            assert!(
                buffered.len() < 16 * 1024,
                "HTTP head over 16 KiB: [{}]",
                hex(buffered)
            );
            self.fill_until(deadline)?;
        }
    }

    /// Like [`Self::try_read_http_head`], panicking with what came.
    pub fn read_http_head(&mut self) -> Response {
        self.try_read_http_head().unwrap_or_else(|e| {
            panic!(
                "reading HTTP response head: {e:?}; got so far: {:?}",
                String::from_utf8_lossy(self.decoder.buffered())
            )
        })
    }

    // -- sending ------------------------------------------------------------

    /// Writes `bytes` as they are; panics on error.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("write of {} bytes failed: {e}", bytes.len()));
    }

    /// Writes `bytes` as they are, returning the error (for writes that may
    /// race with the server closing).
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `bytes` in consecutive writes of at most `chunk_size` bytes.
    pub fn send_in_chunks(&mut self, bytes: &[u8], chunk_size: usize) {
        self.send_in_chunks_paced(bytes, chunk_size, Duration::ZERO);
    }

    /// Like [`Self::send_in_chunks`], sleeping `pause` between writes so that
    /// the server is likely to read each chunk on its own.
    pub fn send_in_chunks_paced(&mut self, bytes: &[u8], chunk_size: usize, pause: Duration) {
        assert!(chunk_size > 0);
        for (i, chunk) in bytes.chunks(chunk_size).enumerate() {
            if i > 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
            self.send_raw(chunk);
        }
    }

    /// Sends one frame. `rsv` is the 3-bit RSV value (see
    /// [`super::rsv`]); with `mask` a fresh masking key is used, without
    /// it the frame is unmasked (which a server must reject).
    pub fn send_frame(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: bool) {
        let key = mask.then(random_mask);
        self.send_raw(&encode_frame(fin, rsv, opcode, payload, key));
    }

    /// Sends a masked, final frame with `opcode`.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.send_frame(true, 0, opcode, payload, true);
    }

    /// Sends a masked, final text frame.
    pub fn send_text(&mut self, text: &str) {
        self.send(op::TEXT, text.as_bytes());
    }

    /// Sends a masked, final binary frame.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.send(op::BINARY, data);
    }

    /// Sends a masked ping.
    pub fn send_ping(&mut self, payload: &[u8]) {
        self.send(op::PING, payload);
    }

    /// Sends a masked close frame with `code` (none: empty payload) and
    /// `reason`.
    pub fn send_close(&mut self, code: Option<u16>, reason: &[u8]) {
        self.send(op::CLOSE, &close_payload(code, reason));
    }

    // -- frames as they are -------------------------------------------------

    /// Reads once more into the buffer, waiting until `deadline` at most.
    pub(super) fn fill_until(&mut self, deadline: Instant) -> Result<(), ReadError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        self.decoder.read_from(&mut self.stream, left).map(drop)
    }

    /// Like [`Self::fill_until`], but one read waits at most
    /// [`IO_TIMEOUT`]: the conformance tests treat that much silence as a
    /// failure whatever their overall limit.
    fn fill(&mut self, deadline: Option<Instant>) -> Result<(), ReadError> {
        let silence = Instant::now() + IO_TIMEOUT;
        self.fill_until(deadline.map_or(silence, |d| d.min(silence)))
    }

    fn read_frame_before(&mut self, deadline: Option<Instant>) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.decoder.next_any() {
                return Ok(frame);
            }
            self.fill(deadline)?;
        }
    }

    /// Reads the next frame; panics if the connection ends or stays silent
    /// for [`IO_TIMEOUT`] (a large frame may take longer as long as bytes
    /// keep coming).
    pub fn read_frame(&mut self) -> Frame {
        self.read_frame_before(None).unwrap_or_else(|e| {
            panic!(
                "read_frame: {e:?}; buffered bytes: [{}]",
                hex(self.decoder.buffered())
            )
        })
    }

    /// Reads the next frame, which must arrive within `limit`.
    pub fn read_frame_within(&mut self, limit: Duration) -> Frame {
        let deadline = Instant::now() + limit;
        self.read_frame_before(Some(deadline)).unwrap_or_else(|e| {
            panic!(
                "no frame within {limit:?}: {e:?}; buffered bytes: [{}]",
                hex(self.decoder.buffered())
            )
        })
    }

    /// Reads the next frame and asserts it is exactly the unfragmented,
    /// RSV-clear frame `opcode`/`payload` with shortest length encoding.
    pub fn expect_frame(&mut self, opcode: u8, payload: &[u8]) {
        let frame = self.read_frame();
        let expected = server_frame(true, opcode, payload);
        if frame.to_bytes() != expected {
            let want = decode_frame(&expected).unwrap().unwrap().0;
            panic!("unexpected frame\n  got:  {frame:?}\n  want: {want:?}");
        }
    }

    /// Expects a text frame with `text`.
    pub fn expect_text(&mut self, text: &str) {
        self.expect_frame(op::TEXT, text.as_bytes());
    }

    /// Expects a binary frame with `data`.
    pub fn expect_binary(&mut self, data: &[u8]) {
        self.expect_frame(op::BINARY, data);
    }

    /// Expects a pong with `payload`.
    pub fn expect_pong(&mut self, payload: &[u8]) {
        self.expect_frame(op::PONG, payload);
    }

    /// Reads the next frame and asserts it is a well-formed close frame:
    /// FIN, RSV clear, payload empty or a code plus a valid UTF-8 reason of
    /// at most 123 bytes. Returns it. Does not wait for the TCP close.
    pub fn expect_close_frame(&mut self) -> Frame {
        let frame = self.read_frame();
        assert_eq!(
            frame.opcode,
            op::CLOSE,
            "expected a close frame, got {frame:?}"
        );
        assert!(frame.fin && frame.rsv == 0, "malformed close {frame:?}");
        assert_ne!(
            frame.payload.len(),
            1,
            "close with 1-byte payload {frame:?}"
        );
        assert!(
            frame.close_reason().len() <= 123,
            "close reason over 123 bytes {frame:?}"
        );
        assert!(
            std::str::from_utf8(frame.close_reason()).is_ok(),
            "close reason not UTF-8 {frame:?}"
        );
        frame
    }

    /// Asserts that the very next frame is a close with `code` (no frame may
    /// come before it), then that the server closes the TCP connection
    /// (see [`Self::expect_eof`]).
    pub fn expect_close(&mut self, code: u16) {
        let frame = self.expect_close_frame();
        assert_eq!(
            frame.close_code(),
            Some(code),
            "expected close {code}, got {frame:?}"
        );
        self.expect_eof();
    }

    /// Asserts that the very next frame is a close with an empty payload,
    /// then that the server closes the TCP connection.
    pub fn expect_empty_close(&mut self) {
        let frame = self.expect_close_frame();
        assert!(
            frame.payload.is_empty(),
            "expected empty close, got {frame:?}"
        );
        self.expect_eof();
    }

    /// Asserts that no more bytes come and that the server closes the TCP
    /// connection (read returns 0) within [`IO_TIMEOUT`], without a reset.
    pub fn expect_eof(&mut self) {
        assert!(
            self.decoder.pending() == 0,
            "bytes after the close frame: [{}]",
            hex(self.decoder.buffered())
        );
        match self.fill(None) {
            Err(ReadError::Eof) => {}
            Ok(()) => panic!(
                "expected TCP close, got more bytes: [{}]",
                hex(self.decoder.buffered())
            ),
            Err(ReadError::Timeout) => {
                panic!("server did not close the TCP connection within {IO_TIMEOUT:?}")
            }
            Err(ReadError::Io(e)) => panic!("expected a clean TCP close (FIN), got {e}"),
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for
    /// `duration`.
    pub fn expect_no_frame_within(&mut self, duration: Duration) {
        assert!(
            self.decoder.pending() == 0,
            "unexpected buffered bytes: [{}]",
            hex(self.decoder.buffered())
        );
        match self.fill(Some(Instant::now() + duration)) {
            Err(ReadError::Timeout) => {}
            Ok(()) => {
                let shown = match decode_frame(self.decoder.buffered()) {
                    Ok(Some((f, _))) => format!("{f:?}"),
                    _ => format!("[{}]", hex(self.decoder.buffered())),
                };
                panic!("expected silence for {duration:?}, got {shown}")
            }
            Err(e) => panic!("expected silence for {duration:?}, got {e:?}"),
        }
    }

    /// Reads everything until the server closes the connection and returns
    /// the bytes (buffered ones first). Panics on silence for
    /// [`IO_TIMEOUT`] or if `limit` passes.
    pub fn read_until_eof(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        loop {
            match self.fill(Some(deadline)) {
                Ok(()) => {}
                Err(ReadError::Eof) => return self.decoder.take(self.decoder.pending()),
                Err(e) => panic!(
                    "read_until_eof: {e:?}; got so far: [{}]",
                    hex(self.decoder.buffered())
                ),
            }
        }
    }

    // -- whole messages -----------------------------------------------------

    fn next_frame_before(&mut self, deadline: Instant) -> Result<(u8, Vec<u8>), ReadError> {
        loop {
            if let Some((opcode, payload)) = self.decoder.next_frame() {
                return Ok((opcode, payload.to_vec()));
            }
            self.fill_until(deadline)?;
        }
    }

    /// The next frame (pings and pongs included) within `limit`, as
    /// `(opcode, payload)`; panics on a fragment (see
    /// [`Decoder::next_frame`]).
    pub fn next_frame(&mut self, limit: Duration) -> Result<(u8, Vec<u8>), ReadError> {
        self.next_frame_before(Instant::now() + limit)
    }

    /// The next frame that is not a ping or pong, within `limit`; panics if
    /// none comes.
    pub fn next_message(&mut self, limit: Duration) -> (u8, Vec<u8>) {
        let deadline = Instant::now() + limit;
        loop {
            match self.next_frame_before(deadline) {
                Ok((op::PING | op::PONG, _)) => continue,
                Ok(message) => return message,
                Err(e) => panic!("no message within {limit:?}: {e}"),
            }
        }
    }

    /// The next text or binary message before `deadline`, skipping pings
    /// and pongs; `None` on timeout or a broken connection. Panics on a
    /// close: a client reading this way expects to stay connected.
    pub fn next_data_before(&mut self, deadline: Instant) -> Option<(u8, Vec<u8>)> {
        loop {
            match self.next_frame_before(deadline).ok()? {
                (op::CLOSE, payload) => panic!("closed by the server: {payload:?}"),
                (opcode @ (op::TEXT | op::BINARY), payload) => return Some((opcode, payload)),
                _ => continue,
            }
        }
    }

    /// The next text message within `limit`; panics if none comes.
    pub fn next_text(&mut self, limit: Duration) -> String {
        match self.next_data_before(Instant::now() + limit) {
            Some((op::TEXT, payload)) => String::from_utf8(payload).expect("UTF-8"),
            Some((opcode, payload)) => panic!("expected text, got opcode {opcode}: {payload:?}"),
            None => panic!("no message within {limit:?}"),
        }
    }

    /// Asserts that no text or binary message comes within `wait` (pings
    /// and pongs may).
    pub fn expect_no_message_within(&mut self, wait: Duration) {
        if let Some((_, payload)) = self.next_data_before(Instant::now() + wait) {
            panic!(
                "expected nothing, got {:?}",
                String::from_utf8_lossy(&payload)
            );
        }
    }

    /// Expects a close with `code`, skipping pings and pongs before it,
    /// then the end of the connection, all within `limit`; returns the
    /// reason. Unlike [`Self::expect_close`], a reset after the close
    /// passes: a server that closes with client bytes unread resets, and
    /// load tests do not control what is in flight.
    pub fn expect_close_within(&mut self, code: u16, limit: Duration) -> String {
        let (opcode, payload) = self.next_message(limit);
        assert_eq!(
            opcode,
            op::CLOSE,
            "expected Close {code}, got opcode {opcode} {:?}",
            String::from_utf8_lossy(&payload)
        );
        let got = payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned();
        assert_eq!(got, Some(code), "close reason {reason:?}");
        let after = self.decoder.take(self.decoder.pending());
        assert!(after.is_empty(), "bytes after Close: {after:?}");
        match read_to_eof(&mut self.stream, limit) {
            Ok(rest) => assert!(rest.is_empty(), "bytes after Close: {rest:?}"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("no TCP close after Close {code}: {e}"),
        }
        reason
    }
}
