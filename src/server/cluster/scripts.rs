//! The two Lua scripts that number, keep and read room history in Redis,
//! and the keys they use.
//!
//! Both run atomically in Redis, which is the point: the offset of a
//! message is assigned, the message kept and published in one step, so
//! the order of offsets is the order of the channel, on every instance;
//! and a read sees the epoch, the head and the entries of one instant.
//!
//! Keys, for a room `lobby`:
//!
//! * `wschat:meta:lobby`, a hash: `epoch` (the room's epoch) and `offset`
//!   (the last offset assigned). It lives for the history TTL or a day,
//!   whichever is longer ([`meta_ttl`]), refreshed by every publish and
//!   read: a room that is quiet for a while keeps its epoch (and a client
//!   coming back finds its place even after the entries expired, learning
//!   that they did); only a room unused for that long starts a new one.
//! * `wschat:history:lobby`, a stream: entry `{offset}-0` per message, with
//!   the fields `sender`, `opcode` (`text`, `binary`), `time` (ms since the
//!   Unix epoch) and `payload`; trimmed with `MAXLEN ~ {--history-size}`
//!   and expiring `--history-ttl` after the last message. Not written with
//!   `--history-size 0`, which still numbers messages.
//! * `wschat:epochs`, a counter that makes new epochs unique.
//!
//! An epoch is made when a script finds no meta (never used, expired,
//! flushed, Redis restarted without persistence): Redis's `TIME` in
//! microseconds, in base 36 on 11 digits, then the counter in base 36;
//! 12 to 22 letters and digits (scripts cannot draw random numbers).
//!
//! The scripts are loaded with `SCRIPT LOAD` when the publishing link
//! connects and run with `EVALSHA`; a `NOSCRIPT` answer (Redis's script
//! cache was flushed) makes the link load them again and resend (see
//! `link.rs`).

use std::time::Duration;

/// The hash of a room's epoch and last offset: this prefix, then the name.
pub const META_PREFIX: &str = "wschat:meta:";

/// The stream of a room's history: this prefix, then the name.
pub const HISTORY_PREFIX: &str = "wschat:history:";

/// The counter that makes epochs unique.
pub const EPOCHS_KEY: &str = "wschat:epochs";

/// The least a room's meta lives after its last use.
pub const META_TTL_FLOOR: Duration = Duration::from_secs(24 * 60 * 60);

/// One of the two scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Numbers, keeps and publishes one message (`scripts/publish.lua`).
    Publish,
    /// Reads a room's epoch, head and entries (`scripts/read.lua`).
    Read,
}

impl Script {
    /// Both, in the order they are loaded.
    pub const ALL: [Script; 2] = [Script::Publish, Script::Read];

    /// The Lua source.
    pub fn source(self) -> &'static str {
        match self {
            // `epoch.lua` (making an epoch) goes before each: Redis loads
            // every script on its own.
            Script::Publish => concat!(
                include_str!("scripts/epoch.lua"),
                include_str!("scripts/publish.lua")
            ),
            Script::Read => concat!(
                include_str!("scripts/epoch.lua"),
                include_str!("scripts/read.lua")
            ),
        }
    }

    /// The SHA-1 of the source in hex, as `SCRIPT LOAD` answers and
    /// `EVALSHA` takes it.
    pub fn sha1(self) -> String {
        sha1_smol::Sha1::from(self.source()).digest().to_string()
    }

    /// An index for per-script state.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Script::Publish => "publish",
            Script::Read => "read",
        })
    }
}

/// How long a room's meta lives after its last use: the history TTL, but
/// at least a day, so that an epoch does not change only because a room
/// was quiet, and never shorter than the entries it numbers.
pub fn meta_ttl(history_ttl: Duration) -> Duration {
    history_ttl.max(META_TTL_FLOOR)
}

/// Whole milliseconds, at least 1 (`PEXPIRE 0` would delete the key).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_those_redis_computes() {
        // What `SCRIPT LOAD` answered for these sources with Redis 7.0 is
        // checked by the link at every connect; here, only the form.
        for script in Script::ALL {
            let sha = script.sha1();
            assert_eq!(sha.len(), 40);
            assert!(sha
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert_ne!(Script::Publish.sha1(), Script::Read.sha1());
        assert_eq!(
            sha1_smol::Sha1::from("return 1").digest().to_string(),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db",
            "SHA-1 of a script as Redis reports it"
        );
    }

    #[test]
    fn the_meta_outlives_the_entries_and_a_quiet_day() {
        assert_eq!(meta_ttl(Duration::from_secs(600)), META_TTL_FLOOR);
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(meta_ttl(week), week);
        assert_eq!(millis(Duration::from_micros(10)), 1);
        assert_eq!(millis(Duration::from_secs(600)), 600_000);
    }
}
