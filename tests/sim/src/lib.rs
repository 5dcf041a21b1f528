//! A simulated ERP.net identity server and Domain API, plus the seeded randomness and the
//! loop driver the tests and the simulated demo share. It implements just enough of the
//! protocol to hold the client to it: single-use codes bound to PKCE and the redirect URI,
//! refresh-token rotation with optional reuse detection that revokes the whole grant (as
//! oidc-provider and IdentityServer do), expiring access tokens, and a Domain API that
//! answers 401 and 403 as ERP.net does.

pub mod driver;
pub mod idp;
pub mod jwt;
pub mod timeline;

pub use driver::{summarize, Entry, SimDriver};
pub use idp::{Rotation, SimIdp, SimStats};
pub use jwt::{left_hash, Signer};
pub use timeline::{Timeline, TimelineStats, ERPNET_SESSION_REQUESTS};

use erpnet_auth::{error::RandomUnavailable, RandomSource};

/// Deterministic randomness for tests: a splitmix64 stream from a seed.
#[derive(Debug, Clone)]
pub struct SeededRandom(u64);

impl SeededRandom {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRandom(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomUnavailable> {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// Readable randomness for golden tests: the n-th draw is 32 bytes of value n, so state is
/// `AAAA…`, the nonce `AQEB…` and the verifier `AgIC…`.
#[derive(Debug, Clone, Default)]
pub struct CountingRandom(u8);

impl RandomSource for CountingRandom {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomUnavailable> {
        dest.fill(self.0);
        self.0 = self.0.wrapping_add(1);
        Ok(())
    }
}
