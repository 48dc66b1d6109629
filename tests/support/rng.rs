//! Pseudo-random numbers (splitmix64): the same sequence every run, so a
//! failure with "random" input can be replayed.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded generator for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// One sequence shared by every thread of a test binary, for masking keys
/// and handshake keys, where only "different each time" matters.
static SHARED: AtomicU64 = AtomicU64::new(0x5EED_0FC0_FFEE);

/// A pseudo-random `u64` from the shared sequence.
fn random_u64() -> u64 {
    mix(SHARED.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed))
}

/// A fresh 4-byte masking key.
pub fn random_mask() -> [u8; 4] {
    (random_u64() as u32).to_be_bytes()
}

/// A fresh `Sec-WebSocket-Key`: 16 pseudo-random bytes, base64.
pub fn random_key() -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&random_u64().to_be_bytes());
    raw[8..].copy_from_slice(&random_u64().to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}
