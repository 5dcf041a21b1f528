//! ID token validation (OpenID Connect Core §3.1.3.7, §3.3.2.11, §12.2): compact JWS
//! parsing with size limits, the signature against the provider's keys, then the claims.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::json::{Object, Wrong};
use crate::jwks::{JwkSet, SigningAlgorithm};
use crate::secret::Nonce;
use crate::signature::{self, HostChecks, SignatureError, SignatureQuestion};

/// Longer tokens are refused unparsed.
const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;

/// Why an ID token was refused. Carries no token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum IdTokenError {
    /// Longer than any real ID token.
    #[error("the ID token is too large")]
    TooLarge,
    /// Not a compact JWS with JSON header and claims.
    #[error("the ID token is not a well-formed JWS")]
    Malformed,
    /// `alg: none`: an unsigned token is never accepted.
    #[error("the ID token is unsigned (alg none)")]
    AlgorithmNone,
    /// An algorithm this library does not implement.
    #[error("the ID token's algorithm is not supported")]
    UnsupportedAlgorithm,
    /// An algorithm the configuration does not allow.
    #[error("the ID token's algorithm is not allowed by the configuration")]
    AlgorithmNotAllowed,
    /// No key in the provider's key set matches, even after fetching it again.
    #[error("no provider key matches the ID token's key id")]
    UnknownKey,
    /// The token names no key (`kid`) and the provider's key set, even fetched again, holds
    /// several it could have been signed with.
    #[error("the ID token names no key id and the provider has several keys it could be signed with")]
    AmbiguousKey,
    /// The matching key cannot be used (malformed, wrong curve, RSA under 2048 bits).
    #[error("the provider's key is unusable")]
    UnusableKey,
    /// The provider's key set could not be fetched.
    #[error("the provider's signing keys could not be fetched")]
    KeysUnavailable,
    /// The signature does not verify: the token was altered or not issued by the provider.
    #[error("the ID token's signature is invalid")]
    BadSignature,
    /// Built without the `id-token-signatures` feature.
    #[error("this build cannot verify signatures (feature id-token-signatures)")]
    SignaturesUnsupported,
    /// `iss` is not the provider's issuer.
    #[error("the ID token was issued by another issuer")]
    IssuerMismatch,
    /// `aud` does not contain the client id.
    #[error("the ID token is not for this client (aud)")]
    AudienceMismatch,
    /// Several audiences and no matching `azp`, or an `azp` of another client.
    #[error("the ID token's authorized party (azp) is not this client")]
    AuthorizedPartyMismatch,
    /// `exp` has passed (beyond the clock-skew allowance).
    #[error("the ID token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the allowance).
    #[error("the ID token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the allowance).
    #[error("the ID token was issued in the future")]
    IssuedInFuture,
    /// No `nonce` although the sign-in sent one.
    #[error("the ID token has no nonce")]
    MissingNonce,
    /// `nonce` is not the one sent: a replayed or injected token.
    #[error("the ID token's nonce does not match the sign-in")]
    NonceMismatch,
    /// `max_age` was sent and `auth_time` is absent.
    #[error("the ID token has no auth_time although max_age was sent")]
    MissingAuthTime,
    /// The user authenticated longer ago than `max_age`.
    #[error("the user authenticated longer ago than max_age allows")]
    AuthenticationTooOld,
    /// `at_hash` does not match the access token.
    #[error("the ID token's at_hash does not match the access token")]
    AccessTokenHashMismatch,
    /// `c_hash` does not match the code: a substituted code.
    #[error("the ID token's c_hash does not match the authorization code")]
    CodeHashMismatch,
    /// The front-channel ID token has no `c_hash`.
    #[error("the front-channel ID token has no c_hash")]
    MissingCodeHash,
    /// `s_hash` does not match the state.
    #[error("the ID token's s_hash does not match the state")]
    StateHashMismatch,
    /// A later ID token (refresh, or the token endpoint's after the front channel's) names
    /// another issuer, subject or audience.
    #[error("the ID token names another user, issuer or audience than the session's")]
    IdentityChanged,
    /// A later ID token names another original authentication (`auth_time`).
    #[error("the ID token names another authentication time than the session's")]
    AuthenticationChanged,
}

impl From<SignatureError> for IdTokenError {
    fn from(error: SignatureError) -> Self {
        match error {
            SignatureError::UnusableKey => IdTokenError::UnusableKey,
            SignatureError::BadSignature => IdTokenError::BadSignature,
            SignatureError::Unsupported => IdTokenError::SignaturesUnsupported,
        }
    }
}

impl IdTokenError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "id_token_too_large",
            Self::Malformed => "id_token_malformed",
            Self::AlgorithmNone => "id_token_alg_none",
            Self::UnsupportedAlgorithm => "id_token_alg_unsupported",
            Self::AlgorithmNotAllowed => "id_token_alg_not_allowed",
            Self::UnknownKey => "id_token_unknown_key",
            Self::AmbiguousKey => "id_token_ambiguous_key",
            Self::UnusableKey => "id_token_unusable_key",
            Self::KeysUnavailable => "id_token_keys_unavailable",
            Self::BadSignature => "id_token_bad_signature",
            Self::SignaturesUnsupported => "id_token_signatures_unsupported",
            Self::IssuerMismatch => "id_token_issuer",
            Self::AudienceMismatch => "id_token_audience",
            Self::AuthorizedPartyMismatch => "id_token_azp",
            Self::Expired => "id_token_expired",
            Self::NotYetValid => "id_token_not_yet_valid",
            Self::IssuedInFuture => "id_token_iat_future",
            Self::MissingNonce => "id_token_missing_nonce",
            Self::NonceMismatch => "id_token_nonce",
            Self::MissingAuthTime => "id_token_missing_auth_time",
            Self::AuthenticationTooOld => "id_token_auth_too_old",
            Self::AccessTokenHashMismatch => "id_token_at_hash",
            Self::CodeHashMismatch => "id_token_c_hash",
            Self::MissingCodeHash => "id_token_missing_c_hash",
            Self::StateHashMismatch => "id_token_s_hash",
            Self::IdentityChanged => "id_token_identity_changed",
            Self::AuthenticationChanged => "id_token_authentication_changed",
        }
    }
}

/// The claims of a validated ID token, exposed to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
#[non_exhaustive]
pub struct IdTokenClaims {
    /// The issuer.
    pub iss: String,
    /// The subject: the user's stable id at the provider.
    pub sub: String,
    /// The audiences.
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issue time, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub nbf: Option<u64>,
    /// When the user authenticated, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub auth_time: Option<u64>,
    /// The authorized party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub azp: Option<String>,
    /// The user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub name: Option<String>,
    /// The user's e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub email: Option<String>,
    /// The user's login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "typescript", tsify(optional))]
    pub preferred_username: Option<String>,
    /// Every other claim (ERP.net's own among them), as JSON.
    #[serde(flatten)]
    #[cfg_attr(feature = "typescript", tsify(type = "Record<string, unknown>"))]
    pub other: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing)]
    nonce: Option<Nonce>,
    #[serde(default, skip_serializing)]
    at_hash: Option<String>,
    #[serde(default, skip_serializing)]
    c_hash: Option<String>,
    #[serde(default, skip_serializing)]
    s_hash: Option<String>,
}

impl IdTokenClaims {
    /// The claims from the token's payload (a member twice is refused, as elsewhere).
    fn from_object(mut c: Object) -> Result<IdTokenClaims, Wrong> {
        let aud = match c.value("aud") {
            Some(Value::String(one)) => vec![one],
            Some(Value::Array(many)) => many
                .into_iter()
                .map(|a| match a {
                    Value::String(a) => Ok(a),
                    _ => Err(Wrong("aud")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(Wrong("aud")),
        };
        Ok(IdTokenClaims {
            iss: c.required_string("iss")?,
            sub: c.required_string("sub")?,
            aud,
            exp: numeric_date(&mut c, "exp")?.ok_or(Wrong("exp"))?,
            iat: numeric_date(&mut c, "iat")?.ok_or(Wrong("iat"))?,
            nbf: numeric_date(&mut c, "nbf")?,
            auth_time: numeric_date(&mut c, "auth_time")?,
            azp: c.string("azp")?,
            name: c.string("name")?,
            email: c.string("email")?,
            preferred_username: c.string("preferred_username")?,
            nonce: c.string("nonce")?.map(Nonce::new),
            at_hash: c.string("at_hash")?,
            c_hash: c.string("c_hash")?,
            s_hash: c.string("s_hash")?,
            other: c.rest(),
        })
    }
}

impl<'de> Deserialize<'de> for IdTokenClaims {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Object::deserialize(d)?.read(IdTokenClaims::from_object)
    }
}

/// A NumericDate, whole seconds (it may carry a fraction, which does not matter here).
fn numeric_date(c: &mut Object, name: &'static str) -> Result<Option<u64>, Wrong> {
    match c.f64(name)? {
        None => Ok(None),
        // Validated range: truncation to whole seconds is the intent.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(value) if value.is_finite() && (0.0..1e13).contains(&value) => Ok(Some(value as u64)),
        Some(_) => Err(Wrong(name)),
    }
}

struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

impl Header {
    fn from_object(mut h: Object) -> Result<Header, Wrong> {
        Ok(Header { alg: h.required_string("alg")?, kid: h.string("kid")?, crit: h.value("crit") })
    }
}

/// A compact JWS split and decoded.
struct Jws<'a> {
    signing_input: &'a str,
    header: Header,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn decode(part: &str) -> Result<Vec<u8>, IdTokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| IdTokenError::Malformed)
}

fn split(token: &str) -> Result<Jws<'_>, IdTokenError> {
    if token.len() > MAX_ID_TOKEN_BYTES {
        return Err(IdTokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed);
    };
    let signing_input = token.get(..header.len() + 1 + payload.len()).ok_or(IdTokenError::Malformed)?;
    let header = Object::parse(&decode(header)?).ok().and_then(|h| Header::from_object(h).ok());
    let header = header.ok_or(IdTokenError::Malformed)?;
    Ok(Jws { signing_input, header, payload: decode(payload)?, signature: decode(signature)? })
}

/// The claims of a token this session validated before (restored from a snapshot).
pub(crate) fn claims_unverified(token: &str) -> Option<IdTokenClaims> {
    let jws = split(token).ok()?;
    Object::parse(&jws.payload).ok().and_then(|c| IdTokenClaims::from_object(c).ok())
}

/// `base64url(left half of SHA-256(value))`: at_hash, c_hash and s_hash for the SHA-256
/// algorithms.
pub(crate) fn left_half_hash(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.get(..16).unwrap_or_default())
}

/// What a token must satisfy.
pub(crate) struct Expectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub now_ms: u64,
    pub skew_ms: u64,
    pub algorithms: &'a [SigningAlgorithm],
    pub verify_signature: bool,
    /// The nonce sent, for a sign-in's tokens; `None` for refreshed ones.
    pub nonce: Option<&'a Nonce>,
    /// `max_age` sent, in seconds.
    pub max_age_secs: Option<u64>,
    pub access_token: Option<&'a str>,
    /// The code and the state, for the front channel's token.
    pub code: Option<&'a str>,
    pub state: Option<&'a str>,
    /// The session's earlier claims: a later token must name the same user.
    pub previous: Option<&'a IdTokenClaims>,
}

/// The outcome of one validation attempt.
pub(crate) enum Validation {
    Valid(Box<IdTokenClaims>),
    /// The signature needs keys the session does not have (yet); `ambiguous` when the token
    /// names no key and several would do.
    NeedKeys {
        ambiguous: bool,
    },
    /// The host's verdict on this signature is needed (host checks only).
    NeedSignature(Box<SignatureQuestion>),
}

/// Who does the signature math.
pub(crate) enum Verifier<'a> {
    /// The crate's own RustCrypto code, inline.
    Inline,
    /// The host, through `Output::VerifySignature`: the verdicts it has given so far.
    Host(&'a HostChecks),
}

pub(crate) fn validate(
    token: &str,
    keys: Option<&JwkSet>,
    verifier: &Verifier<'_>,
    x: &Expectations<'_>,
) -> Result<Validation, IdTokenError> {
    let jws = split(token)?;
    if jws.header.crit.is_some() {
        // Extensions we do not understand must not be ignored (RFC 7515 §4.1.11).
        return Err(IdTokenError::Malformed);
    }
    if jws.header.alg.eq_ignore_ascii_case("none") {
        return Err(IdTokenError::AlgorithmNone);
    }
    let alg = SigningAlgorithm::parse(&jws.header.alg).ok_or(IdTokenError::UnsupportedAlgorithm)?;
    if !x.algorithms.contains(&alg) {
        return Err(IdTokenError::AlgorithmNotAllowed);
    }
    if x.verify_signature {
        let kid = jws.header.kid.as_deref();
        let Some(key) = keys.and_then(|k| k.find(alg, kid)) else {
            return Ok(Validation::NeedKeys { ambiguous: keys.is_some_and(|k| k.is_ambiguous(alg, kid)) });
        };
        match verifier {
            Verifier::Inline => signature::verify(alg, key, jws.signing_input.as_bytes(), &jws.signature)?,
            Verifier::Host(checks) => {
                signature::check_key_and_length(alg, key, &jws.signature)?;
                match checks.verdict(alg, key, jws.signing_input, &jws.signature) {
                    Some(true) => {}
                    Some(false) => return Err(IdTokenError::BadSignature),
                    None => {
                        return Ok(Validation::NeedSignature(Box::new(SignatureQuestion {
                            algorithm: alg,
                            key: key.clone(),
                            signing_input: jws.signing_input.to_owned(),
                            signature: jws.signature,
                        })))
                    }
                }
            }
        }
    }
    let claims = Object::parse(&jws.payload).ok().and_then(|c| IdTokenClaims::from_object(c).ok());
    let claims = claims.ok_or(IdTokenError::Malformed)?;
    check_claims(&claims, x)?;
    Ok(Validation::Valid(Box::new(claims)))
}

fn check_claims(c: &IdTokenClaims, x: &Expectations<'_>) -> Result<(), IdTokenError> {
    if c.iss != x.issuer {
        return Err(IdTokenError::IssuerMismatch);
    }
    if !c.aud.iter().any(|a| a == x.client_id) {
        return Err(IdTokenError::AudienceMismatch);
    }
    match &c.azp {
        Some(azp) if azp != x.client_id => return Err(IdTokenError::AuthorizedPartyMismatch),
        None if c.aud.len() > 1 => return Err(IdTokenError::AuthorizedPartyMismatch),
        _ => {}
    }
    let ms = |secs: u64| secs.saturating_mul(1000);
    if x.now_ms >= ms(c.exp).saturating_add(x.skew_ms) {
        return Err(IdTokenError::Expired);
    }
    if c.nbf.is_some_and(|nbf| ms(nbf) > x.now_ms.saturating_add(x.skew_ms)) {
        return Err(IdTokenError::NotYetValid);
    }
    if ms(c.iat) > x.now_ms.saturating_add(x.skew_ms) {
        return Err(IdTokenError::IssuedInFuture);
    }
    if let Some(expected) = x.nonce {
        let nonce = c.nonce.as_ref().ok_or(IdTokenError::MissingNonce)?;
        if !expected.constant_time_eq(nonce.secret()) {
            return Err(IdTokenError::NonceMismatch);
        }
    }
    if let Some(max_age) = x.max_age_secs {
        let auth_time = c.auth_time.ok_or(IdTokenError::MissingAuthTime)?;
        if ms(auth_time.saturating_add(max_age)).saturating_add(x.skew_ms) < x.now_ms {
            return Err(IdTokenError::AuthenticationTooOld);
        }
    }
    let hash_matches = |claim: &Option<String>, value: Option<&str>| match (claim, value) {
        (Some(claim), Some(value)) => Some(*claim == left_half_hash(value)),
        _ => None,
    };
    if hash_matches(&c.at_hash, x.access_token) == Some(false) {
        return Err(IdTokenError::AccessTokenHashMismatch);
    }
    if x.code.is_some() && c.c_hash.is_none() {
        return Err(IdTokenError::MissingCodeHash);
    }
    if hash_matches(&c.c_hash, x.code) == Some(false) {
        return Err(IdTokenError::CodeHashMismatch);
    }
    if hash_matches(&c.s_hash, x.state) == Some(false) {
        return Err(IdTokenError::StateHashMismatch);
    }
    if let Some(previous) = x.previous {
        // OpenID Connect Core §12.2: the same user, client and original authentication.
        let azp_changed = matches!((&previous.azp, &c.azp), (Some(a), Some(b)) if a != b);
        if previous.iss != c.iss || previous.sub != c.sub || previous.aud != c.aud || azp_changed {
            return Err(IdTokenError::IdentityChanged);
        }
        if matches!((previous.auth_time, c.auth_time), (Some(a), Some(b)) if a != b) {
            return Err(IdTokenError::AuthenticationChanged);
        }
        // A refreshed token's nonce, if present, is the original's.
        if let (None, Some(nonce)) = (x.nonce, &c.nonce) {
            if !previous.nonce.as_ref().is_some_and(|p| p.constant_time_eq(nonce.secret())) {
                return Err(IdTokenError::NonceMismatch);
            }
        }
    }
    Ok(())
}
