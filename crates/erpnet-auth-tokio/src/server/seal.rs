//! The pending sign-in, sealed into a cookie: nothing is kept on the server for a visitor
//! who has only asked to sign in.
//!
//! The cookie carries the PKCE verifier, the `state` and the `nonce`, so it is encrypted
//! and authenticated (XChaCha20-Poly1305: its 192-bit nonces can be drawn at random for as
//! many cookies as a key will ever seal). The associated data binds a sealed value to its
//! purpose and to the application's redirect URI, so a value sealed for anything else with
//! the same key does not open here.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;
const PURPOSE: &[u8] = b"erpnet-auth-tokio/pending-sign-in/1\0";

/// Seals and opens pending sign-ins with the application's key.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
    associated: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// The sealing failed: no randomness for the nonce.
#[derive(Debug)]
pub(crate) struct SealFailed;

impl Sealer {
    pub(crate) fn new(key: &[u8; 32], redirect_uri: &str) -> Sealer {
        let mut associated = PURPOSE.to_vec();
        associated.extend_from_slice(redirect_uri.as_bytes());
        Sealer { cipher: XChaCha20Poly1305::new(&(*key).into()), associated }
    }

    /// `plaintext` sealed, as unpadded base64url.
    pub(crate) fn seal(&self, plaintext: &[u8]) -> Result<String, SealFailed> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealFailed)?;
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &self.associated })
            .map_err(|_| SealFailed)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    }

    /// The plaintext of a value [`seal`](Self::seal) made with this key for this
    /// application; `None` for anything else (tampered, another key, another purpose).
    pub(crate) fn open(&self, sealed: &str) -> Option<Vec<u8>> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let (nonce, ciphertext) = bytes.split_at_checked(NONCE_LEN)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        self.cipher.decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: &self.associated }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_its_own() {
        let sealer = Sealer::new(&[7; 32], "http://localhost/cb");
        let sealed = sealer.seal(b"pending").unwrap();
        assert_eq!(sealer.open(&sealed).as_deref(), Some(&b"pending"[..]));
        assert_ne!(sealed, sealer.seal(b"pending").unwrap(), "a fresh nonce each time");
        assert_eq!(Sealer::new(&[8; 32], "http://localhost/cb").open(&sealed), None, "another key");
        assert_eq!(Sealer::new(&[7; 32], "http://localhost/other").open(&sealed), None, "another app");
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 5;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(sealer.open(std::str::from_utf8(&tampered).unwrap()), None, "tampered");
        assert_eq!(sealer.open(""), None);
        assert_eq!(sealer.open("!!"), None);
    }
}
