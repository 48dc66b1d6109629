//! A fast, non-cryptographic PRNG for masks, keys and payloads.
//!
//! RFC 6455 section 5.3 asks for unpredictable masks so that a hostile page
//! cannot steer the bytes a proxy sees. A load tool is not such a page: what
//! matters here is that every frame gets a fresh mask and that drawing one
//! costs a few cycles, so xorshift64* is enough and keeps the client from
//! becoming the bottleneck.

use std::time::{SystemTime, UNIX_EPOCH};

/// xorshift64* (Vigna 2014): one multiply and three shifts per 64 bits.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the clock and the process id, so two runs
    /// (or two bench processes side by side) draw different keys and masks.
    pub fn from_entropy() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng::with_seed(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// A generator with a fixed seed (tests, reproducible payloads).
    pub fn with_seed(seed: u64) -> Rng {
        // The state must never be zero; splitmix the seed so close seeds
        // still start far apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A fresh masking key for one client frame.
    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    /// Fills `buf` with random bytes (handshake nonces, binary payloads).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_ne_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_change_from_frame_to_frame() {
        let mut rng = Rng::with_seed(0);
        let masks: Vec<[u8; 4]> = (0..1000).map(|_| rng.mask()).collect();
        let mut unique = masks.clone();
        unique.sort_unstable();
        unique.dedup();
        assert!(
            unique.len() > 990,
            "{} distinct masks of 1000",
            unique.len()
        );
    }

    #[test]
    fn fill_covers_odd_lengths() {
        let mut rng = Rng::with_seed(7);
        let mut buf = [0u8; 13];
        rng.fill(&mut buf);
        assert!(buf.iter().filter(|b| **b != 0).count() > 8);
    }
}
