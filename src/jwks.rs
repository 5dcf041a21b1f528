//! The provider's signing keys (RFC 7517): the key set, and the key a signature names.

use serde::{Deserialize, Serialize};

use crate::http::MAX_JWKS_BYTES;
use crate::json::{Object, Wrong};

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
