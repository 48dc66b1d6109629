//! RESP2 on a byte buffer, through the `redis-protocol` crate: commands
//! out, and the few shapes of reply the cluster expects in.
//!
//! Decoding uses `decode_range`, which returns ranges into the buffer: a
//! message's payload is handed on without being copied.

use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, RangeFrame};

/// A frame decoded from the front of a buffer, with the bytes it took.
#[derive(Debug)]
pub struct Decoded {
    /// The frame, as ranges into the buffer it was decoded from.
    pub frame: RangeFrame,
    /// Bytes of the buffer the frame took.
    pub used: usize,
}

/// The bytes from Redis are not RESP2: the stream cannot be resynchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadStream {
    /// The first byte of the frame that could not be decoded: what the log
    /// can show of it (the crate's own message adds nothing a reader can act on).
    pub first_byte: u8,
}

/// Decodes the frame at the front of `buf`: `None` until it is complete.
pub fn decode(buf: &[u8]) -> Result<Option<Decoded>, BadStream> {
    match decode_range(buf) {
        Ok(Some((frame, used))) => Ok(Some(Decoded { frame, used })),
        Ok(None) => Ok(None),
        Err(_) => Err(BadStream {
            first_byte: buf.first().copied().unwrap_or(0),
        }),
    }
}

/// Appends a command (an array of bulk strings) to `out`.
pub fn command<const N: usize>(args: [&[u8]; N], out: &mut Vec<u8>) {
    let items = args.map(BorrowedFrame::BulkString);
    let frame = BorrowedFrame::Array(&items);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    let written = encode_borrowed(&mut out[start..], &frame, false)
        .expect("the buffer is sized by encode_len");
    out.truncate(start + written);
}

/// A reply on the publishing connection, which only sends commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// `:n` (EVALSHA of the publish script, INCRBY).
    Integer(i64),
    /// `+OK`, `+PONG`.
    Status(&'a [u8]),
    /// `-ERR …`.
    Error(&'a [u8]),
    /// `$n …` (SCRIPT LOAD).
    Bulk(&'a [u8]),
    /// Anything else: not an answer these commands have (arrays are read
    /// apart, by the command that expects one).
    Unexpected,
}

/// Reads a frame from the publishing connection.
pub fn answer<'a>(frame: &RangeFrame, buf: &'a [u8]) -> Answer<'a> {
    match frame {
        RangeFrame::Integer(n) => Answer::Integer(*n),
        RangeFrame::SimpleString(r) => Answer::Status(slice(buf, *r)),
        RangeFrame::Error(r) => Answer::Error(slice(buf, *r)),
        RangeFrame::BulkString(r) => Answer::Bulk(slice(buf, *r)),
        _ => Answer::Unexpected,
    }
}

/// A frame on the subscribed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push<'a> {
    /// A message published to a channel the connection listens to
    /// (`pmessage` after PSUBSCRIBE, `message` after SUBSCRIBE).
    Message {
        /// The channel it was published to.
        channel: &'a [u8],
        /// The message, as published.
        payload: &'a [u8],
    },
    /// The confirmation of a (P)SUBSCRIBE.
    Subscribed,
    /// The answer to a PING in subscribed mode.
    Pong,
    /// `-ERR …`.
    Error(&'a [u8]),
    /// Anything else.
    Unexpected,
}

/// Reads a frame from the subscribed connection.
pub fn push<'a>(frame: &RangeFrame, buf: &'a [u8]) -> Push<'a> {
    let items = match frame {
        RangeFrame::Array(items) => items,
        RangeFrame::Error(r) => return Push::Error(slice(buf, *r)),
        RangeFrame::SimpleString(r) if slice(buf, *r).eq_ignore_ascii_case(b"pong") => {
            return Push::Pong
        }
        _ => return Push::Unexpected,
    };
    let text = |i: usize| match items.get(i) {
        Some(RangeFrame::BulkString(r) | RangeFrame::SimpleString(r)) => Some(slice(buf, *r)),
        _ => None,
    };
    let Some(kind) = text(0) else {
        return Push::Unexpected;
    };
    match (kind, items.len()) {
        (k, 4) if k.eq_ignore_ascii_case(b"pmessage") => match (text(2), text(3)) {
            (Some(channel), Some(payload)) => Push::Message { channel, payload },
            _ => Push::Unexpected,
        },
        (k, 3) if k.eq_ignore_ascii_case(b"message") => match (text(1), text(2)) {
            (Some(channel), Some(payload)) => Push::Message { channel, payload },
            _ => Push::Unexpected,
        },
        (k, 3) if k.eq_ignore_ascii_case(b"psubscribe") || k.eq_ignore_ascii_case(b"subscribe") => {
            Push::Subscribed
        }
        (k, 2) if k.eq_ignore_ascii_case(b"pong") => Push::Pong,
        _ => Push::Unexpected,
    }
}

fn slice(buf: &[u8], (start, end): (usize, usize)) -> &[u8] {
    buf.get(start..end).unwrap_or(&[])
}

/// RESP as tests write it by hand: what a client sends and what Redis
/// answers, to compare with what the code under test writes and reads.
#[cfg(test)]
pub(crate) mod wire {
    use super::command;
    use crate::server::cluster::scripts::Script;

    /// A command of `args`.
    pub(crate) fn cmd<const N: usize>(args: [&[u8]; N]) -> Vec<u8> {
        let mut out = Vec::new();
        command(args, &mut out);
        out
    }

    /// A bulk string.
    pub(crate) fn bulk(bytes: &[u8]) -> Vec<u8> {
        let mut out = format!("${}\r\n", bytes.len()).into_bytes();
        out.extend(bytes);
        out.extend(b"\r\n");
        out
    }

    /// The `EVALSHA` of the read script for `room`, at most `max` entries,
    /// as `scripts/read.lua` reads its arguments.
    pub(crate) fn evalsha_read(room: &str, max: &str, mode: &str, epoch: &str, n: &str) -> Vec<u8> {
        cmd([
            b"EVALSHA",
            Script::Read.sha1().as_bytes(),
            b"3",
            format!("wschat:meta:{room}").as_bytes(),
            format!("wschat:history:{room}").as_bytes(),
            b"wschat:epochs",
            b"86400000",
            max.as_bytes(),
            mode.as_bytes(),
            epoch.as_bytes(),
            n.as_bytes(),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Decoded {
        let d = decode(bytes).unwrap().unwrap();
        assert_eq!(d.used, bytes.len());
        d
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = b"before".to_vec();
        command(
            [b"PUBLISH", b"wschat:room:lobby", b"\x11\x07a\r\nb"],
            &mut out,
        );
        assert_eq!(
            out,
            b"before*3\r\n$7\r\nPUBLISH\r\n$17\r\nwschat:room:lobby\r\n$6\r\n\x11\x07a\r\nb\r\n"
        );
        let mut out = Vec::new();
        command([b"PING"], &mut out);
        assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn answers() {
        let d = one(b":1000\r\n");
        assert_eq!(answer(&d.frame, b":1000\r\n"), Answer::Integer(1000));
        let buf = b"+OK\r\n";
        assert_eq!(answer(&one(buf).frame, buf), Answer::Status(b"OK"));
        let buf = b"-ERR value is not an integer\r\n";
        assert_eq!(
            answer(&one(buf).frame, buf),
            Answer::Error(b"ERR value is not an integer")
        );
        let buf = b"$3\r\nabc\r\n";
        assert_eq!(answer(&one(buf).frame, buf), Answer::Bulk(b"abc"));
        let buf = b"*1\r\n:1\r\n";
        assert_eq!(answer(&one(buf).frame, buf), Answer::Unexpected);
    }

    #[test]
    fn pushes() {
        let buf = b"*4\r\n$8\r\npmessage\r\n$13\r\nwschat:room:*\r\n$17\r\nwschat:room:lobby\r\n$4\r\n\x11\x01\r\n\r\n";
        assert_eq!(
            push(&one(buf).frame, buf),
            Push::Message {
                channel: b"wschat:room:lobby",
                payload: b"\x11\x01\r\n"
            }
        );
        let buf = b"*3\r\n$10\r\npsubscribe\r\n$13\r\nwschat:room:*\r\n:1\r\n";
        assert_eq!(push(&one(buf).frame, buf), Push::Subscribed);
        let buf = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
        assert_eq!(push(&one(buf).frame, buf), Push::Pong);
        let buf = b"-NOAUTH Authentication required.\r\n";
        assert_eq!(
            push(&one(buf).frame, buf),
            Push::Error(b"NOAUTH Authentication required.")
        );
        for buf in [
            &b"*2\r\n$8\r\npmessage\r\n$1\r\nx\r\n"[..],
            b"*4\r\n$8\r\npmessage\r\n$1\r\nx\r\n:1\r\n:2\r\n",
            b"*0\r\n",
            b":5\r\n",
        ] {
            assert_eq!(push(&one(buf).frame, buf), Push::Unexpected, "{buf:?}");
        }
    }

    #[test]
    fn partial_frames_wait_and_garbage_is_an_error() {
        let whole = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nhello\r\n";
        for cut in 0..whole.len() {
            assert!(decode(&whole[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert!(decode(b"hello\r\n").is_err());
        assert!(decode(b"$abc\r\n").is_err());
        assert!(decode(b"*-5\r\n").is_err());
    }

    #[test]
    fn two_frames_in_one_buffer_come_out_one_by_one() {
        let buf = b":1\r\n:2\r\n";
        let d = decode(buf).unwrap().unwrap();
        assert_eq!(d.used, 4);
        assert_eq!(answer(&d.frame, buf), Answer::Integer(1));
        let d = decode(&buf[4..]).unwrap().unwrap();
        assert_eq!(answer(&d.frame, &buf[4..]), Answer::Integer(2));
    }
}
