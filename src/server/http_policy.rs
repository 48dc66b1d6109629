//! The server's choices in an HTTP/1.1 exchange: whether a connection
//! stays open after an answer, and which request bodies it reads.
//!
//! What HTTP itself says (how a body is delimited, what the client lets
//! persist) is `protocol::http1`'s; the refusals these choices lead to are
//! in [`Refusal`]'s table.

use super::connection::AfterResponse;
use super::policy::Refusal;
use crate::protocol::http1::BodyFraming;

/// What decides whether a connection persists after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    /// The client lets it persist (`protocol::http1::client_keeps_alive`).
    pub client_keeps_alive: bool,
    /// Answers the connection carried before this one.
    pub served: u32,
    /// `--max-requests-per-connection`.
    pub max_requests: u32,
    /// The TCP peer is a trusted HTTP proxy, which may send other clients'
    /// requests on the same connection: the connection keeps the one
    /// client address the first request named, so it is not reused.
    pub shared_by_clients: bool,
    /// A shutdown has begun.
    pub shutting_down: bool,
}

impl Persistence {
    /// What happens after the answer: the last answer the connection may
    /// carry already says `Connection: close`, so the client is told
    /// rather than finding the socket closed.
    pub fn after_response(self) -> AfterResponse {
        let last = self.served.saturating_add(1) >= self.max_requests;
        if self.client_keeps_alive && !last && !self.shared_by_clients && !self.shutting_down {
            AfterResponse::NextRequest
        } else {
            AfterResponse::Close
        }
    }
}

/// The length of the body the server will read for a request to a path
/// that takes one, or why it refuses the request from its head alone: a
/// body too large is never buffered.
pub fn body_length(framing: BodyFraming, max_body: usize) -> Result<usize, Refusal> {
    match framing {
        BodyFraming::None => Err(Refusal::LengthRequired),
        BodyFraming::Coded => Err(Refusal::TransferEncoding),
        BodyFraming::Length(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= max_body)
            .ok_or(Refusal::BodyTooLarge),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Persistence = Persistence {
        client_keeps_alive: true,
        served: 0,
        max_requests: 100,
        shared_by_clients: false,
        shutting_down: false,
    };

    #[test]
    fn persists_while_everyone_lets_it() {
        assert_eq!(KEEP.after_response(), AfterResponse::NextRequest);
        for closing in [
            Persistence {
                client_keeps_alive: false,
                ..KEEP
            },
            Persistence {
                shared_by_clients: true,
                ..KEEP
            },
            Persistence {
                shutting_down: true,
                ..KEEP
            },
        ] {
            assert_eq!(
                closing.after_response(),
                AfterResponse::Close,
                "{closing:?}"
            );
        }
    }

    #[test]
    fn the_last_allowed_answer_closes() {
        let nth = |served| Persistence { served, ..KEEP }.after_response();
        assert_eq!(nth(98), AfterResponse::NextRequest, "the 99th answer");
        assert_eq!(nth(99), AfterResponse::Close, "the 100th answer");
        assert_eq!(nth(u32::MAX), AfterResponse::Close);
        let one = Persistence {
            max_requests: 1,
            ..KEEP
        };
        assert_eq!(one.after_response(), AfterResponse::Close);
    }

    #[test]
    fn bodies_need_a_length_within_the_limit() {
        assert_eq!(body_length(BodyFraming::Length(0), 10), Ok(0));
        assert_eq!(body_length(BodyFraming::Length(10), 10), Ok(10));
        assert_eq!(
            body_length(BodyFraming::Length(11), 10),
            Err(Refusal::BodyTooLarge)
        );
        assert_eq!(
            body_length(BodyFraming::Length(u64::MAX), usize::MAX),
            usize::try_from(u64::MAX).map_err(|_| Refusal::BodyTooLarge)
        );
        assert_eq!(
            body_length(BodyFraming::None, 10),
            Err(Refusal::LengthRequired)
        );
        assert_eq!(
            body_length(BodyFraming::Coded, 10),
            Err(Refusal::TransferEncoding)
        );
    }
}
