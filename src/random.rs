//! Randomness is an input: the session draws state, nonce, PKCE verifiers and backoff
//! jitter only from the [`RandomSource`] it was given.

/// The source could not produce random bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the random source is unavailable")]
pub struct RandomUnavailable;

/// A source of random bytes. Production code uses [`OsRandom`]; tests inject a seeded one.
///
/// The bytes become `state`, `nonce` and the PKCE verifier, so a production source must be
/// cryptographically secure.
pub trait RandomSource {
    /// Fills `dest` entirely with random bytes.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomUnavailable>;
}

/// The operating system's secure generator (`getrandom`; `crypto.getRandomValues` in wasm).
#[cfg(feature = "os-random")]
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

#[cfg(feature = "os-random")]
impl RandomSource for OsRandom {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomUnavailable> {
        getrandom::fill(dest).map_err(|_| RandomUnavailable)
    }
}

impl<R: RandomSource + ?Sized> RandomSource for Box<R> {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RandomUnavailable> {
        (**self).fill(dest)
    }
}

/// A value nobody can guess (a `state`, a `nonce`, a PKCE verifier): 256 random bits as
/// unpadded base64url, 43 characters.
pub(crate) fn unguessable(rng: &mut dyn RandomSource) -> Result<String, RandomUnavailable> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A uniformly drawn fraction in `[0, 1)`, for backoff jitter.
pub(crate) fn unit_fraction(rng: &mut dyn RandomSource) -> f64 {
    let mut bytes = [0u8; 4];
    match rng.fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        // Jitter only spreads load; without randomness, no jitter is still correct.
        Err(RandomUnavailable) => 0.0,
    }
}
