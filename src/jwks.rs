//! The provider's signing keys (RFC 7517) and JWS signature verification (RFC 7515/7518)
//! for RS256, PS256 and ES256, with the RustCrypto crates.

use serde::{Deserialize, Serialize};

use crate::json::{Object, Wrong};

use crate::id_token::IdTokenError;

/// A signing algorithm the session accepts for ID tokens. `none` never is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (the ERP.net default).
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl SigningAlgorithm {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Self::RS256),
            "PS256" => Some(Self::PS256),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            Self::RS256 | Self::PS256 => "RSA",
            Self::ES256 => "EC",
        }
    }
}

/// One JSON Web Key, as far as verification needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    /// `RSA` or `EC`.
    pub kty: String,
    /// The key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `sig` or `enc`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The algorithm the key is for, if restricted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A key set (RFC 7517 §5). Cached in snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwk {
    fn from_object(mut k: Object) -> Result<Jwk, Wrong> {
        Ok(Jwk {
            kty: k.required_string("kty")?,
            kid: k.string("kid")?,
            use_: k.string("use")?,
            alg: k.string("alg")?,
            n: k.string("n")?,
            e: k.string("e")?,
            crv: k.string("crv")?,
            x: k.string("x")?,
            y: k.string("y")?,
        })
    }
}

impl JwkSet {
    pub(crate) fn from_object(mut set: Object) -> Result<JwkSet, Wrong> {
        let keys = set.objects("keys")?.ok_or(Wrong("keys"))?;
        Ok(JwkSet { keys: keys.into_iter().map(Jwk::from_object).collect::<Result<_, _>>()? })
    }
}

impl<'de> Deserialize<'de> for Jwk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Object::deserialize(d)?.read(Jwk::from_object)
    }
}

impl<'de> Deserialize<'de> for JwkSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Object::deserialize(d)?.read(JwkSet::from_object)
    }
}

/// Larger key sets are refused.
pub(crate) const MAX_JWKS_BYTES: usize = 128 * 1024;

impl JwkSet {
    pub(crate) fn parse(body: &[u8]) -> Option<JwkSet> {
        if body.len() > MAX_JWKS_BYTES {
            return None;
        }
        Object::parse(body).ok().and_then(|set| JwkSet::from_object(set).ok())
    }

    /// The keys a signature with `alg` may have been made with.
    fn suitable(&self, alg: SigningAlgorithm) -> impl Iterator<Item = &Jwk> {
        self.keys.iter().filter(move |k| {
            k.kty == alg.key_type()
                && k.use_.as_deref().is_none_or(|u| u == "sig")
                && k.alg.as_deref().is_none_or(|a| SigningAlgorithm::parse(a) == Some(alg))
        })
    }

    /// The key for `kid` (or the only suitable one when the token names none).
    pub(crate) fn find(&self, alg: SigningAlgorithm, kid: Option<&str>) -> Option<&Jwk> {
        match kid {
            Some(kid) => self.suitable(alg).find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut candidates = self.suitable(alg);
                let only = candidates.next()?;
                candidates.next().is_none().then_some(only)
            }
        }
    }

    /// Whether a token naming no key could have been signed with several of these keys.
    pub(crate) fn is_ambiguous(&self, alg: SigningAlgorithm, kid: Option<&str>) -> bool {
        kid.is_none() && self.suitable(alg).nth(1).is_some()
    }
}

#[cfg(feature = "id-token-signatures")]
fn b64(value: Option<&String>) -> Result<Vec<u8>, IdTokenError> {
    use base64::Engine;
    let value = value.ok_or(IdTokenError::UnusableKey)?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).map_err(|_| IdTokenError::UnusableKey)
}

/// RSA keys shorter than this are refused.
#[cfg(feature = "id-token-signatures")]
const MIN_RSA_BITS: usize = 2048;

/// Verifies `signature` over `signing_input` with `key`.
#[cfg(feature = "id-token-signatures")]
pub(crate) fn verify(
    alg: SigningAlgorithm,
    key: &Jwk,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), IdTokenError> {
    use rsa::signature::Verifier;
    use rsa::traits::PublicKeyParts;

    // The same refusals as when the host does the math.
    crate::signature::check_key_and_length(alg, key, signature)?;
    match alg {
        SigningAlgorithm::RS256 | SigningAlgorithm::PS256 => {
            let n = rsa::BigUint::from_bytes_be(&b64(key.n.as_ref())?);
            let e = rsa::BigUint::from_bytes_be(&b64(key.e.as_ref())?);
            let public = rsa::RsaPublicKey::new(n, e).map_err(|_| IdTokenError::UnusableKey)?;
            if public.size() * 8 < MIN_RSA_BITS {
                return Err(IdTokenError::UnusableKey);
            }
            let verified = if alg == SigningAlgorithm::RS256 {
                let signature =
                    rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| IdTokenError::BadSignature)?;
                rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public).verify(signing_input, &signature)
            } else {
                let signature = rsa::pss::Signature::try_from(signature).map_err(|_| IdTokenError::BadSignature)?;
                rsa::pss::VerifyingKey::<sha2::Sha256>::new(public).verify(signing_input, &signature)
            };
            verified.map_err(|_| IdTokenError::BadSignature)
        }
        SigningAlgorithm::ES256 => {
            if key.crv.as_deref() != Some("P-256") {
                return Err(IdTokenError::UnusableKey);
            }
            let (x, y) = (b64(key.x.as_ref())?, b64(key.y.as_ref())?);
            if x.len() != 32 || y.len() != 32 {
                return Err(IdTokenError::UnusableKey);
            }
            let point = p256::EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
            let public =
                p256::ecdsa::VerifyingKey::from_encoded_point(&point).map_err(|_| IdTokenError::UnusableKey)?;
            // JWS carries ECDSA signatures as r || s, 64 bytes.
            let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| IdTokenError::BadSignature)?;
            public.verify(signing_input, &signature).map_err(|_| IdTokenError::BadSignature)
        }
    }
}

/// Without the `id-token-signatures` feature nothing can be verified.
#[cfg(not(feature = "id-token-signatures"))]
pub(crate) fn verify(_: SigningAlgorithm, _: &Jwk, _: &[u8], _: &[u8]) -> Result<(), IdTokenError> {
    Err(IdTokenError::SignaturesUnsupported)
}
