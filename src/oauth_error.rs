//! The error object of OAuth 2.0 (RFC 6749 §4.1.2.1, §5.2): what the authorization endpoint
//! (in a callback) and the token endpoint (in an answer) send when they refuse.

use serde::{Deserialize, Serialize};

/// An OAuth error code (RFC 6749 §5.2), with the unregistered ones kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`
    InvalidRequest,
    /// `invalid_client`
    InvalidClient,
    /// `invalid_grant`: the code or refresh token is invalid, expired, revoked or reused.
    InvalidGrant,
    /// `unauthorized_client`
    UnauthorizedClient,
    /// `unsupported_grant_type`
    UnsupportedGrantType,
    /// `invalid_scope`
    InvalidScope,
    /// `access_denied` (authorization endpoint; the user cancelled)
    AccessDenied,
    /// `login_required`, `consent_required`, `interaction_required` and the like
    InteractionRequired,
    /// `server_error`
    ServerError,
    /// `temporarily_unavailable`
    TemporarilyUnavailable,
    /// Any other code.
    Other(String),
}

impl OAuthErrorCode {
    pub(crate) fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "access_denied" => Self::AccessDenied,
            "login_required" | "consent_required" | "interaction_required" | "account_selection_required" => {
                Self::InteractionRequired
            }
            "server_error" => Self::ServerError,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            // Keep unknown codes, but only when they are the short ASCII words codes are.
            other if other.len() <= 64 && other.bytes().all(|b| b.is_ascii_graphic()) => Self::Other(other.to_owned()),
            _ => Self::Other("unrecognised".to_owned()),
        }
    }

    /// The code as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::InteractionRequired => "interaction_required",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::Other(code) => code,
        }
    }

    /// The grant behind the tokens is gone: only a new sign-in helps.
    pub(crate) fn ends_session(&self) -> bool {
        matches!(self, Self::InvalidGrant | Self::InvalidClient | Self::UnauthorizedClient)
    }
}

/// The OAuth error a server sent: code and optional description (a server's words, which
/// never contain our secrets, truncated to 500 characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    /// The error code.
    pub code: OAuthErrorCode,
    /// `error_description`, if sent: at most 500 characters, control characters removed.
    pub description: Option<String>,
    /// The HTTP status it came with (none for the authorization endpoint's redirects).
    pub status: Option<u16>,
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.description {
            Some(d) => write!(f, "{}: {}", self.code.as_str(), d),
            None => f.write_str(self.code.as_str()),
        }
    }
}

/// A server's `error_description` as it may enter a message: at most 500 characters, with
/// control characters (line breaks, escapes) removed.
pub(crate) fn clean_description(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(500).collect()
}
