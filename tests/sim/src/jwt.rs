//! ES256 ID tokens signed by the simulated server, with a key made from a seed so that
//! whole runs stay reproducible.

use base64::Engine;
use p256::ecdsa::signature::Signer as _;
use sha2::{Digest, Sha256};

use crate::SeededRandom;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `base64url(left half of SHA-256(value))`: `at_hash`, `c_hash`, `s_hash`.
pub fn left_hash(value: &str) -> String {
    b64(&Sha256::digest(value.as_bytes())[..16])
}

/// One P-256 signing key and its key id.
#[derive(Clone)]
pub struct Signer {
    key: p256::ecdsa::SigningKey,
    /// The `kid` in the key set and in every token's header.
    pub kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Signer {
    /// A key derived from `seed`.
    pub fn from_seed(seed: u64, kid: &str) -> Signer {
        let mut rng = SeededRandom::new(seed);
        loop {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            // Nearly every 32-byte string is a valid scalar; draw again on the rare other.
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                return Signer { key, kid: kid.to_owned() };
            }
        }
    }

    /// The public key as one JWK (an object, for a `keys` array).
    pub fn jwk(&self) -> serde_json::Value {
        let point = self.key.verifying_key().to_encoded_point(false);
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(point.x().map(|x| x.as_slice()).unwrap_or_default()),
            "y": b64(point.y().map(|y| y.as_slice()).unwrap_or_default()),
        })
    }

    /// A compact JWS of `claims`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = b64(serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"}).to_string().as_bytes());
        let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
        let signature: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }
}
