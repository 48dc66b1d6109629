//! Control frames and the closing handshake (RFC 6455 sections 5.5 and
//! 7): Ping answered with Pong, a Close echoed, a session failed or closed
//! by the server, and the Close frame each of those sends.

use super::{CloseState, Event, Session};
use crate::protocol::close::{encode_close_payload, parse_close_payload, CloseCode};
use crate::protocol::error::ProtocolError;
use crate::protocol::frame::{encode_frame, OpCode};

impl Session {
    /// Fails the connection (section 7.1.7): returns the Close frame to send,
    /// or `None` if a Close was already sent.
    #[must_use]
    pub fn fail(&mut self, err: ProtocolError) -> Option<Event> {
        let frame = self.close_frame(err.close_code(), err.reason())?;
        self.state = CloseState::Failed;
        Some(Event::Close {
            frame,
            error: Some(err),
        })
    }

    /// Fails the connection for a reason the server found outside the
    /// protocol (a policy: slow consumer, message rate): like
    /// [`Session::fail`], everything that arrives afterwards is discarded.
    /// Returns the Close frame, or `None` if a Close was already sent.
    #[must_use]
    pub fn abort(&mut self, code: CloseCode, reason: &str) -> Option<Vec<u8>> {
        let frame = self.close_frame(code, reason)?;
        self.state = CloseState::Failed;
        Some(frame)
    }

    /// The Ping frame that asks a silent peer for a sign of life, or `None`
    /// once a Close was sent (nothing may follow it).
    #[must_use]
    pub fn ping(&self) -> Option<Vec<u8>> {
        (self.state == CloseState::Open).then(|| control_frame(OpCode::Ping, b""))
    }

    /// Starts a closing handshake of our own (shutdown, idle timeout):
    /// returns the Close frame, or `None` if a Close was already sent.
    #[must_use]
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Option<Event> {
        let frame = self.close_frame(code, reason)?;
        self.state = CloseState::CloseSent;
        Some(Event::Close { frame, error: None })
    }

    fn close_frame(&mut self, code: CloseCode, reason: &str) -> Option<Vec<u8>> {
        if self.state != CloseState::Open {
            return None;
        }
        // The peer may still be mid-frame: keep parsing, stop collecting.
        self.message = Vec::new();
        let mut payload = Vec::with_capacity(2 + reason.len());
        encode_close_payload(code, reason, &mut payload);
        Some(control_frame(OpCode::Close, &payload))
    }

    pub(super) fn on_control(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        match opcode {
            // Section 5.5.2: "Upon receipt of a Ping frame, an endpoint MUST
            // send a Pong frame in response ... unless it already received a
            // Close frame." Nothing is sent after our own Close either.
            OpCode::Ping if self.state == CloseState::Open => {
                events.push(Event::Send(control_frame(OpCode::Pong, payload)));
            }
            OpCode::Close => self.on_close(payload, events)?,
            // Section 5.5.3: an unsolicited Pong needs no response.
            _ => {}
        }
        Ok(())
    }

    fn on_close(&mut self, payload: &[u8], events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        let code = parse_close_payload(payload)?;
        if self.state == CloseState::Open {
            // Section 5.5.1: reply with a Close, "typically echoing the status
            // code it received"; an empty Close gets an empty Close.
            let mut reply = Vec::with_capacity(2);
            if let Some(code) = code {
                encode_close_payload(code, "", &mut reply);
            }
            events.push(Event::Close {
                frame: control_frame(OpCode::Close, &reply),
                error: None,
            });
        }
        self.message = Vec::new();
        self.state = CloseState::Closed;
        Ok(())
    }
}

/// Encodes an unmasked control frame.
fn control_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + payload.len());
    encode_frame(true, opcode, false, &[payload], &mut out);
    out
}
