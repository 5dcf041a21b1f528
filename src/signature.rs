//! Signature checks the host performs: when the session is configured to let the host verify
//! ID token signatures (the WebAssembly build, which asks the platform's crypto instead of
//! carrying its own RSA and P-256 code), it emits [`Output::VerifySignature`](crate::Output::VerifySignature)
//! and holds the ID token until [`Session::handle_signature`](crate::Session::handle_signature)
//! brings the verdict. Everything but the signature math stays in the core: the algorithm
//! allow-list, the key choice, key strength and shape, and what a verdict means. Otherwise the
//! math is done here, with the RustCrypto crates (JWS, RFC 7515/7518: RS256, PS256, ES256).

use base64::Engine;

use crate::jwks::{Jwk, SigningAlgorithm};
use crate::vec_map::VecMap;

/// Identifies one signature check; hand it back with the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SignatureCheckId(pub u64);

/// Verify `signature` over `signing_input` with `key` for `algorithm`, and answer with
/// [`Session::handle_signature`](crate::Session::handle_signature): `true` only when the
/// signature is valid; `false` when it is not or the host cannot check it.
///
/// The key has been checked already (type, curve, RSA size of at least 2048 bits) and the
/// signature has the length the key implies. In WebCrypto: `importKey("jwk", key,
/// {name: "RSASSA-PKCS1-v1_5" | "RSA-PSS" | "ECDSA", hash: "SHA-256", namedCurve: "P-256"})`,
/// then `verify` (RSA-PSS with `saltLength: 32`; ECDSA takes the JWS `r || s` form as is).
/// In `node:crypto`: `verify("sha256", input, {key, padding, saltLength: 32 | dsaEncoding:
/// "ieee-p1363"}, signature)` with the key from `createPublicKey({key, format: "jwk"})`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignatureCheck {
    /// Hand this back with the verdict.
    pub id: SignatureCheckId,
    /// RS256, PS256 or ES256.
    pub algorithm: SigningAlgorithm,
    /// The provider's public key, as a JWK (public members only).
    pub key: Jwk,
    /// The JWS signing input: `base64url(header) "." base64url(payload)`, ASCII.
    pub signing_input: String,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

// The signing input carries the ID token's claims: print only the shape.
impl std::fmt::Debug for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureCheck")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .field("kid", &self.key.kid)
            .finish_non_exhaustive()
    }
}

impl SignatureCheck {
    /// Verifies the signature with the crate's own RustCrypto verifier: what a native host
    /// that opted into host checks can answer with.
    #[cfg(feature = "id-token-signatures")]
    pub fn verify_in_rust(&self) -> bool {
        verify(self.algorithm, &self.key, self.signing_input.as_bytes(), &self.signature).is_ok()
    }
}

/// One question put to the host: this signature over this input, with this key and
/// algorithm. A verdict answers exactly the question that was asked: the next attempt's
/// question is compared with it whole, not by a digest.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SignatureQuestion {
    pub algorithm: SigningAlgorithm,
    pub key: Jwk,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl SignatureQuestion {
    fn is(&self, algorithm: SigningAlgorithm, key: &Jwk, signing_input: &str, signature: &[u8]) -> bool {
        self.algorithm == algorithm
            && self.signing_input == signing_input
            && self.signature == signature
            && self.key == *key
    }
}

/// Why a signature was refused before or by the math. Carries no token content; the ID token
/// check reports it as the matching [`IdTokenError`](crate::error::IdTokenError).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// The key cannot be used (malformed, wrong curve, RSA under 2048 bits).
    UnusableKey,
    /// The signature does not verify.
    BadSignature,
    /// Built without the `id-token-signatures` feature.
    #[cfg_attr(feature = "id-token-signatures", expect(dead_code))]
    Unsupported,
}

/// Checks outstanding at the host and the verdicts it gave. A verdict answers the attempt
/// that follows it and is then forgotten.
#[derive(Default)]
pub(crate) struct HostChecks {
    last: u64,
    outstanding: VecMap<SignatureCheckId, SignatureQuestion>,
    verdicts: Vec<(SignatureQuestion, bool)>,
}

// The questions carry ID tokens' claims: print only how many there are.
impl std::fmt::Debug for HostChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostChecks")
            .field("last", &self.last)
            .field("outstanding", &self.outstanding.len())
            .field("verdicts", &self.verdicts.len())
            .finish()
    }
}

/// A verdict for a check this session never emitted.
pub(crate) struct UnknownCheck;

impl HostChecks {
    pub fn verdict(
        &self,
        algorithm: SigningAlgorithm,
        key: &Jwk,
        signing_input: &str,
        signature: &[u8],
    ) -> Option<bool> {
        self.verdicts.iter().find(|(q, _)| q.is(algorithm, key, signing_input, signature)).map(|(_, v)| *v)
    }

    /// Puts `question` to the host, unless it is already waiting for that verdict.
    pub fn ask(&mut self, question: SignatureQuestion) -> Option<SignatureCheck> {
        if self.outstanding.values().any(|q| *q == question) {
            return None;
        }
        self.last += 1;
        let id = SignatureCheckId(self.last);
        let SignatureQuestion { algorithm, key, signing_input, signature } = question.clone();
        self.outstanding.insert(id, question);
        Some(SignatureCheck { id, algorithm, key, signing_input, signature })
    }

    /// The host's verdict on check `id`. A verdict for a check already answered is ignored.
    pub fn answer(&mut self, id: SignatureCheckId, valid: bool) -> Result<(), UnknownCheck> {
        match self.outstanding.remove(&id) {
            Some(question) => self.verdicts.push((question, valid)),
            None if id.0 > 0 && id.0 <= self.last => {}
            None => return Err(UnknownCheck),
        }
        Ok(())
    }

    /// The verdicts were used by the attempt that followed them.
    pub fn forget_verdicts(&mut self) {
        self.verdicts.clear();
    }
}

fn b64(value: Option<&String>) -> Result<Vec<u8>, SignatureError> {
    let value = value.ok_or(SignatureError::UnusableKey)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).map_err(|_| SignatureError::UnusableKey)
}

/// RSA keys shorter than this are refused.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// What the core checks before the host does the math: the key suits the algorithm and is
/// strong enough, and the signature has the length that key implies.
pub(crate) fn check_key_and_length(
    algorithm: SigningAlgorithm,
    key: &Jwk,
    signature: &[u8],
) -> Result<(), SignatureError> {
    match algorithm {
        SigningAlgorithm::RS256 | SigningAlgorithm::PS256 => {
            let n = b64(key.n.as_ref())?;
            let e = b64(key.e.as_ref())?;
            let modulus = n.iter().position(|b| *b != 0).and_then(|first| n.get(first..)).unwrap_or_default();
            if modulus.len().saturating_mul(8) < MIN_RSA_BITS || e.iter().all(|b| *b == 0) {
                return Err(SignatureError::UnusableKey);
            }
            if signature.len() != modulus.len() {
                return Err(SignatureError::BadSignature);
            }
        }
        SigningAlgorithm::ES256 => {
            if key.crv.as_deref() != Some("P-256")
                || b64(key.x.as_ref())?.len() != 32
                || b64(key.y.as_ref())?.len() != 32
            {
                return Err(SignatureError::UnusableKey);
            }
            if signature.len() != 64 {
                return Err(SignatureError::BadSignature);
            }
        }
    }
    Ok(())
}

/// Verifies `signature` over `signing_input` with `key`.
#[cfg(feature = "id-token-signatures")]
pub(crate) fn verify(
    alg: SigningAlgorithm,
    key: &Jwk,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    use rsa::signature::Verifier;
    use rsa::traits::PublicKeyParts;

    // The same refusals as when the host does the math.
    check_key_and_length(alg, key, signature)?;
    match alg {
        SigningAlgorithm::RS256 | SigningAlgorithm::PS256 => {
            let n = rsa::BigUint::from_bytes_be(&b64(key.n.as_ref())?);
            let e = rsa::BigUint::from_bytes_be(&b64(key.e.as_ref())?);
            let public = rsa::RsaPublicKey::new(n, e).map_err(|_| SignatureError::UnusableKey)?;
            if public.size() * 8 < MIN_RSA_BITS {
                return Err(SignatureError::UnusableKey);
            }
            let verified = if alg == SigningAlgorithm::RS256 {
                let signature =
                    rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| SignatureError::BadSignature)?;
                rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public).verify(signing_input, &signature)
            } else {
                let signature = rsa::pss::Signature::try_from(signature).map_err(|_| SignatureError::BadSignature)?;
                rsa::pss::VerifyingKey::<sha2::Sha256>::new(public).verify(signing_input, &signature)
            };
            verified.map_err(|_| SignatureError::BadSignature)
        }
        SigningAlgorithm::ES256 => {
            if key.crv.as_deref() != Some("P-256") {
                return Err(SignatureError::UnusableKey);
            }
            let (x, y) = (b64(key.x.as_ref())?, b64(key.y.as_ref())?);
            if x.len() != 32 || y.len() != 32 {
                return Err(SignatureError::UnusableKey);
            }
            let point = p256::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
            let public =
                p256::ecdsa::VerifyingKey::from_encoded_point(&point).map_err(|_| SignatureError::UnusableKey)?;
            // JWS carries ECDSA signatures as r || s, 64 bytes.
            let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| SignatureError::BadSignature)?;
            public.verify(signing_input, &signature).map_err(|_| SignatureError::BadSignature)
        }
    }
}

/// Without the `id-token-signatures` feature nothing can be verified.
#[cfg(not(feature = "id-token-signatures"))]
pub(crate) fn verify(_: SigningAlgorithm, _: &Jwk, _: &[u8], _: &[u8]) -> Result<(), SignatureError> {
    Err(SignatureError::Unsupported)
}
