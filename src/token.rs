//! Token endpoint requests and the parsing of their answers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{HttpResponse, TransportError, MAX_TOKEN_BYTES};
use crate::id_token::IdTokenError;
use crate::json::{Object, Wrong};
use crate::oauth_error::{clean_description, OAuthError, OAuthErrorCode};
use crate::secret::{AccessToken, IdToken, RefreshToken};
use crate::warning::Warning;

/// Longest accepted `expires_in`: ten years. Anything longer is a server bug.
pub(crate) const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 24 * 3600;

/// Why a token request (code exchange, refresh, client credentials) did not give tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum TokenError {
    /// The server refused with an OAuth error.
    #[error("the token endpoint refused: {0}")]
    OAuth(OAuthError),
    /// HTTP 5xx, 429 or 408: worth retrying later.
    #[error("the token endpoint is unavailable (HTTP {status})")]
    Unavailable {
        /// The status.
        status: u16,
        /// `Retry-After` in seconds from the answer's arrival, when the server gave one
        /// (as seconds or as an HTTP-date).
        retry_after_secs: Option<u64>,
    },
    /// A redirect: token requests are never redirected, so the endpoint is misconfigured.
    #[error("the token endpoint answered with a redirect (HTTP {status}), which is never followed")]
    Redirect {
        /// The status.
        status: u16,
    },
    /// Any other status without an OAuth error body (a proxy's HTML 400 or 401, a bare 403):
    /// not the provider's refusal, so retried with backoff like [`Unavailable`](Self::Unavailable).
    #[error("the token endpoint answered HTTP {status} without an OAuth error")]
    UnexpectedStatus {
        /// The status.
        status: u16,
    },
    /// The body is empty, not JSON, HTML, or JSON of the wrong shape.
    #[error("the token endpoint's answer is not a token response ({0})")]
    Malformed(MalformedReason),
    /// `token_type` is not Bearer.
    #[error("the token type is not Bearer; only Bearer tokens are supported")]
    UnsupportedTokenType,
    /// The host could not get an answer.
    #[error("the token endpoint could not be reached ({0:?})")]
    Transport(TransportError),
    /// An ID token (front channel, token endpoint or userinfo check) was refused.
    #[error("{0}")]
    InvalidIdToken(IdTokenError),
}

/// The shape of a malformed answer. Never the content: it may hold a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum MalformedReason {
    /// No body at all.
    EmptyBody,
    /// An HTML page (a proxy's or a login page).
    Html,
    /// Not JSON.
    NotJson,
    /// JSON, but not an object with an `access_token` string.
    MissingAccessToken,
    /// A field has the wrong type.
    WrongFieldType,
    /// Bigger than the limit.
    TooLarge,
    /// A token with characters a token cannot have (control characters such as CR or LF,
    /// which would break the `Authorization` header or the form body it travels in).
    InvalidTokenCharacters,
}

impl MalformedReason {
    /// A stable code, e.g. `too_large`.
    pub fn code(&self) -> &'static str {
        match self {
            MalformedReason::EmptyBody => "empty_body",
            MalformedReason::Html => "html",
            MalformedReason::NotJson => "not_json",
            MalformedReason::MissingAccessToken => "missing_access_token",
            MalformedReason::WrongFieldType => "wrong_field_type",
            MalformedReason::TooLarge => "too_large",
            MalformedReason::InvalidTokenCharacters => "invalid_token_characters",
        }
    }
}

impl std::fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MalformedReason::EmptyBody => "empty body",
            MalformedReason::Html => "an HTML page",
            MalformedReason::NotJson => "not JSON",
            MalformedReason::MissingAccessToken => "no access_token",
            MalformedReason::WrongFieldType => "a field has the wrong type",
            MalformedReason::TooLarge => "too large",
            MalformedReason::InvalidTokenCharacters => "a token with characters tokens cannot have",
        })
    }
}

impl TokenError {
    /// A stable code a caller can branch on. A server's refusal is always `oauth_error`;
    /// its own code is [`OAuthError::code`], so a server string never poses as ours.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::OAuth(_) => "oauth_error",
            TokenError::Unavailable { .. } => "unavailable",
            TokenError::Redirect { .. } => "redirect",
            TokenError::UnexpectedStatus { .. } => "unexpected_status",
            TokenError::Malformed(_) => "malformed_response",
            TokenError::UnsupportedTokenType => "unsupported_token_type",
            TokenError::Transport(_) => "transport",
            TokenError::InvalidIdToken(e) => e.code(),
        }
    }

    /// A retry may succeed without anything changing on our side. An answer that is not an
    /// OAuth error (`UnexpectedStatus`: an HTML 400 or 401 from a proxy in front of the
    /// provider) is one: only the provider's own refusal says something about the grant.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TokenError::Unavailable { .. }
                | TokenError::UnexpectedStatus { .. }
                | TokenError::Malformed(_)
                | TokenError::Transport(_)
        )
    }
}

/// A successful token response, validated.
#[derive(Debug, Clone)]
pub(crate) struct TokenGrant {
    pub access_token: AccessToken,
    /// `None` when absent or unusable; the session then assumes its fallback lifetime.
    pub expires_in_secs: Option<u64>,
    /// What was sloppy but tolerated in the answer.
    pub warnings: Vec<Warning>,
    pub refresh_token: Option<RefreshToken>,
    pub id_token: Option<IdToken>,
    /// `scope` as sent; `None` when absent or unusable (`scope_absent` tells them apart).
    pub scope: Option<String>,
    /// No `scope` member at all: the scope asked for was granted (RFC 6749 §5.1).
    pub scope_absent: bool,
}

/// The members of a token answer.
struct RawTokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: ExpiresIn,
    refresh_token: Option<String>,
    id_token: Option<String>,
    scope: Lenient<String>,
}

impl RawTokenResponse {
    /// Takes its members out of `body`, which keeps the others (an error object's).
    fn from_object(body: &mut Object) -> Result<RawTokenResponse, Wrong> {
        let scope = match body.value("scope") {
            None => Lenient::Absent,
            Some(Value::String(scope)) => Lenient::Value(scope),
            Some(_) => Lenient::WrongType,
        };
        Ok(RawTokenResponse {
            access_token: body.string("access_token")?,
            token_type: body.string("token_type")?,
            expires_in: ExpiresIn::from_value(body.value("expires_in")),
            refresh_token: body.string("refresh_token")?,
            id_token: body.string("id_token")?,
            scope,
        })
    }
}

/// A field read leniently: a value of another type than expected is ignored, not an error.
enum Lenient<T> {
    Absent,
    Value(T),
    WrongType,
}

/// `access_token` (RFC 6750 §2.1 `b64token` travels in a header) and `refresh_token`
/// (RFC 6749 Appendix A: VSCHAR) are printable ASCII; the access token has no space.
pub(crate) fn is_token_text(token: &str, space_allowed: bool) -> bool {
    token.bytes().all(|b| b.is_ascii_graphic() || (space_allowed && b == b' '))
}

/// `expires_in` read leniently (a number or a numeric string), with an unusable value kept
/// apart from a malformed body so that each gets its own error.
#[derive(Default)]
enum ExpiresIn {
    #[default]
    Absent,
    Seconds(u64),
    Invalid,
}

impl ExpiresIn {
    fn from_secs(secs: u64) -> Self {
        if (1..=MAX_EXPIRES_IN_SECS).contains(&secs) {
            ExpiresIn::Seconds(secs)
        } else {
            ExpiresIn::Invalid
        }
    }

    /// A fraction of seconds, floored: `3599.9` lives 3599 s.
    fn from_fraction(secs: f64) -> Self {
        // Range checked first, so the conversion of the floor is exact.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        if secs.is_finite() && (1.0..=MAX_EXPIRES_IN_SECS as f64).contains(&secs) {
            ExpiresIn::Seconds(secs.floor() as u64)
        } else {
            ExpiresIn::Invalid
        }
    }
}

impl ExpiresIn {
    /// A number, or a number in a string as JSON writes numbers (`"3600"`, `"1.5"`); `null`
    /// or absent is absent, anything else unusable.
    fn from_value(value: Option<Value>) -> Self {
        match value {
            None => ExpiresIn::Absent,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(secs) => ExpiresIn::from_secs(secs),
                None if n.is_f64() => n.as_f64().map_or(ExpiresIn::Invalid, ExpiresIn::from_fraction),
                None => ExpiresIn::Invalid,
            },
            // The fraction is read by serde_json's own number parser: `str::parse::<f64>`
            // would add core's decimal-to-float tables (~13 KB) to the wasm for this one case.
            Some(Value::String(text)) => {
                let text = text.trim();
                match text.parse::<u64>() {
                    Ok(secs) => ExpiresIn::from_secs(secs),
                    Err(_) => serde_json::from_slice::<f64>(text.as_bytes())
                        .map_or(ExpiresIn::Invalid, ExpiresIn::from_fraction),
                }
            }
            Some(_) => ExpiresIn::Invalid,
        }
    }
}

/// An OAuth error object (`error`, `error_description`), when the body is one.
fn raw_error(body: &mut Object) -> Option<(String, Option<String>)> {
    let error = body.required_string("error").ok()?;
    Some((error, body.string("error_description").ok()?))
}

/// Parses a token endpoint's answer received at `now_ms` (for a `Retry-After` date).
pub(crate) fn parse_token_response(response: &HttpResponse, now_ms: u64) -> Result<TokenGrant, TokenError> {
    let status = response.status;
    let body = response.body.as_slice();
    if body.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed(MalformedReason::TooLarge));
    }
    if status != 200 {
        return Err(classify_failure(response, now_ms));
    }
    let mut object = match Object::parse(body) {
        Ok(object) => object,
        // A member twice.
        Err(e) if e.is_data() && body.trim_ascii_start().starts_with(b"{") => {
            return Err(TokenError::Malformed(MalformedReason::WrongFieldType))
        }
        // JSON, but not an object.
        Err(e) if e.is_data() => return Err(TokenError::Malformed(MalformedReason::MissingAccessToken)),
        Err(_) => return Err(TokenError::Malformed(body_shape(body))),
    };
    let raw = RawTokenResponse::from_object(&mut object)
        .map_err(|_| TokenError::Malformed(MalformedReason::WrongFieldType))?;
    // A 200 carrying an error object: some servers do this.
    let access_token = match raw.access_token {
        Some(token) if !token.is_empty() && !is_token_text(&token, false) => {
            return Err(TokenError::Malformed(MalformedReason::InvalidTokenCharacters))
        }
        Some(token) if !token.is_empty() => AccessToken::new(token),
        _ => {
            if let Some(err) = raw_error(&mut object) {
                return Err(TokenError::OAuth(oauth_error(err, status)));
            }
            return Err(TokenError::Malformed(MalformedReason::MissingAccessToken));
        }
    };
    match raw.token_type.as_deref() {
        None => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(TokenError::UnsupportedTokenType),
    }
    if raw.refresh_token.as_deref().is_some_and(|t| !is_token_text(t, true)) {
        return Err(TokenError::Malformed(MalformedReason::InvalidTokenCharacters));
    }
    let mut warnings = Vec::new();
    let expires_in_secs = match raw.expires_in {
        ExpiresIn::Absent => None,
        ExpiresIn::Seconds(secs) => Some(secs),
        ExpiresIn::Invalid => {
            warnings.push(Warning::UnusableExpiresIn);
            None
        }
    };
    let scope_absent = matches!(raw.scope, Lenient::Absent);
    let scope = match raw.scope {
        Lenient::Absent => None,
        Lenient::Value(scope) => Some(scope),
        Lenient::WrongType => {
            warnings.push(Warning::UnusableScope);
            None
        }
    };
    Ok(TokenGrant {
        access_token,
        expires_in_secs,
        warnings,
        refresh_token: raw.refresh_token.filter(|t| !t.is_empty()).map(RefreshToken::new),
        id_token: raw.id_token.filter(|t| !t.is_empty()).map(IdToken::new),
        scope,
        scope_absent,
    })
}

/// `Retry-After` in seconds from now: delay-seconds, or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn retry_after_secs(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    let at_ms = u64::try_from(at.as_millis()).ok()?;
    // A date in the past means "now"; rounded up so that the server's time is honoured.
    Some(at_ms.saturating_sub(now_ms).div_ceil(1000))
}

fn classify_failure(response: &HttpResponse, now_ms: u64) -> TokenError {
    let status = response.status;
    if let Some(err) = Object::parse(&response.body).ok().as_mut().and_then(raw_error) {
        if (400..500).contains(&status) && status != 429 && status != 408 {
            return TokenError::OAuth(oauth_error(err, status));
        }
    }
    match status {
        300..=399 => TokenError::Redirect { status },
        408 | 429 | 500..=599 => TokenError::Unavailable {
            status,
            retry_after_secs: response.header_read("retry-after").and_then(|v| retry_after_secs(v, now_ms)),
        },
        _ => TokenError::UnexpectedStatus { status },
    }
}

fn oauth_error((error, description): (String, Option<String>), status: u16) -> OAuthError {
    OAuthError {
        code: OAuthErrorCode::parse(&error),
        description: description.as_deref().map(clean_description),
        status: Some(status),
    }
}

fn body_shape(body: &[u8]) -> MalformedReason {
    let text = String::from_utf8_lossy(body.get(..body.len().min(512)).unwrap_or_default()).to_ascii_lowercase();
    let trimmed = text.trim_start();
    if body.iter().all(u8::is_ascii_whitespace) {
        MalformedReason::EmptyBody
    } else if trimmed.starts_with("<!doctype html") || trimmed.starts_with("<html") {
        MalformedReason::Html
    } else {
        MalformedReason::NotJson
    }
}
