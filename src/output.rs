//! What the session hands to its host: outputs of `poll()`, events, and typed errors.

use serde::{Deserialize, Serialize};

use crate::authorize::CallbackError;
use crate::discovery::DiscoveryError;
use crate::http::{CallId, HttpRequest, HttpResponse, RequestId, TransportError};
use crate::id_token::IdTokenError;
use crate::oauth_error::OAuthError;
use crate::signature::SignatureCheck;
use crate::sites::{InstanceSites, SkippedSite};
use crate::snapshot::Snapshot;
use crate::token::TokenError;
use crate::usage::UsageError;
use crate::warning::Warning;

/// One output of [`Session::poll`](crate::Session::poll). Drain until `WaitUntil` or `Idle`.
///
/// Exhaustive on purpose: a driver must not compile past a new kind of output. (Events,
/// which a driver may pass on without understanding, stay `#[non_exhaustive]`.)
#[derive(Debug, Clone)]
pub enum Output {
    /// Send this request (without following redirects) and hand the answer back with
    /// `handle_response` or `handle_transport_error`.
    Http(HttpRequest),
    /// Store this snapshot (replacing the previous one) before acting on what follows.
    Persist(Box<Snapshot>),
    /// Verify this ID token signature and answer with `handle_signature` (only when the host
    /// verifies signatures: see `ConfigBuilder::host_verifies_signatures`).
    VerifySignature(Box<SignatureCheck>),
    /// Something happened.
    Event(Event),
    /// Nothing more to do now; call `handle_timeout` at this Unix ms time (or earlier, on
    /// any other input).
    WaitUntil(u64),
    /// Nothing more to do until the next command or input.
    Idle,
}

/// Something the host may want to know or show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An ERP.net instance's auto-discovery document named its sites; relative calls now
    /// resolve against its Domain API root (unless one was configured).
    SitesDiscovered {
        /// The sites the session uses.
        sites: InstanceSites,
    },
    /// A site the auto-discovery document lists that the session does not use: not working,
    /// or not on the instance's origin. Its default stays in use.
    SiteSkipped {
        /// Which, and why.
        site: SkippedSite,
    },
    /// The signed-in user's ERP.net profile (`{Profile site}/me`).
    ProfileReceived {
        /// The call, as returned by `fetch_profile`.
        call: CallId,
        /// `id` is the stable key; `login`, `name`, `email`, … as the site sent them.
        profile: serde_json::Map<String, serde_json::Value>,
    },
    /// The profile could not be fetched or read.
    ProfileFailed {
        /// The call.
        call: CallId,
        /// Why.
        error: UserInfoError,
    },
    /// The provider's endpoints are known; sign-in may begin.
    ProviderReady {
        /// `false` when the ERP.net fixed paths stand in for a failed discovery.
        discovered: bool,
    },
    /// Discovery failed and there is no fallback; `discover` tries again.
    DiscoveryFailed {
        /// Why.
        error: DiscoveryError,
    },
    /// The code exchange succeeded: the user is signed in.
    SignedIn {
        /// The scope granted (may be narrower than asked; reported, never refused). An answer
        /// without `scope` granted the scope asked for (RFC 6749 §5.1).
        scope: Option<String>,
        /// Access token expiry, Unix ms, when the server said.
        expires_at: Option<u64>,
    },
    /// The sign-in failed: its callback was refused after its state matched (the state is
    /// spent), the code exchange failed, or an ID token was refused. Tokens held before it
    /// are kept.
    SignInFailed {
        /// Why.
        error: SignInError,
    },
    /// New tokens replaced the old ones (refresh, or a new client-credentials token).
    TokensRenewed {
        /// The scope granted.
        scope: Option<String>,
        /// Access token expiry, Unix ms, when the server said.
        expires_at: Option<u64>,
    },
    /// A renewal failed transiently and will be retried at `retry_at`; tokens are kept.
    RenewalDeferred {
        /// Why.
        error: TokenError,
        /// Attempts so far.
        attempt: u32,
        /// When the next attempt goes out, Unix ms.
        retry_at: u64,
    },
    /// Renewal stopped without new tokens: refused for a reason a retry will not fix, or
    /// still failing after the bounded retries. Tokens are kept; the next call tries again.
    RenewalFailed {
        /// The last error.
        error: TokenError,
    },
    /// Renewal is impossible without a new sign-in; tokens are gone.
    SignInRequired {
        /// Why.
        reason: SignInRequiredReason,
    },
    /// The session signed out.
    SignedOut,
    /// A server answer (or a stored snapshot) was sloppy or suspect but tolerated.
    Warning {
        /// What.
        warning: Warning,
    },
    /// The userinfo endpoint answered for the signed-in user.
    UserInfoReceived {
        /// The call [`fetch_user_info`](crate::Session::fetch_user_info) returned.
        call: CallId,
        /// Its claims (`sub` matches the ID token's).
        claims: serde_json::Map<String, serde_json::Value>,
    },
    /// The userinfo request failed, or answered for another subject.
    UserInfoFailed {
        /// The call [`fetch_user_info`](crate::Session::fetch_user_info) returned.
        call: CallId,
        /// Why.
        error: UserInfoError,
    },
    /// An API call's answer (a 401 after a replay, a 403 and a 429 included).
    CallCompleted {
        /// The call.
        call: CallId,
        /// The request that got this answer: a host that kept the body itself finds it by this.
        request: RequestId,
        /// The answer as the host handed it in.
        response: HttpResponse,
    },
    /// An API call ended without an answer.
    CallFailed {
        /// The call.
        call: CallId,
        /// Why.
        error: CallFailure,
    },
}

/// Why only a new sign-in can help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum SignInRequiredReason {
    /// The provider refused the refresh token (`invalid_grant`, `invalid_client`,
    /// `unauthorized_client`): expired, revoked, reused, or the app changed.
    RefreshRejected {
        /// The server's error.
        error: OAuthError,
    },
    /// The access token expired or was refused and there is no refresh token.
    NoRefreshToken,
    /// A snapshot without tokens was adopted (another tab or process signed out).
    SignedOutElsewhere,
    /// No sign-in completed: it failed, or never happened.
    NotSignedIn,
    /// A refresh answered with an ID token that did not check out. Its tokens are not used,
    /// and the refresh token it replaced may already be spent (rotation), so retrying it
    /// would look like reuse and revoke the grant: only a new sign-in is safe.
    RefreshedIdTokenRefused {
        /// Why the ID token was refused.
        error: IdTokenError,
    },
    /// The API refused the configured reference token: revoked or expired. Issue a new one;
    /// nothing can renew it.
    ReferenceTokenRejected,
}

/// Why an API call ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum CallFailure {
    /// The host could not deliver the request.
    #[error("the request could not be delivered ({0:?})")]
    Transport(TransportError),
    /// A new sign-in is needed.
    #[error("sign-in required: {0}")]
    SignInRequired(SignInRequiredReason),
    /// Renewal failed after its bounded retries; tokens are kept and the next call retries.
    #[error("the token could not be renewed: {0}")]
    RenewalUnavailable(TokenError),
    /// Renewal was refused for a reason a retry will not fix; tokens are kept.
    #[error("the token renewal was refused: {0}")]
    RenewalRefused(TokenError),
    /// The caller cancelled it.
    #[error("the call was cancelled")]
    Cancelled,
    /// The session signed out while the call waited.
    #[error("the session signed out")]
    SignedOut,
    /// The provider's endpoints are unknown (discovery failed), so no token can be had;
    /// `discover` tries again.
    #[error("the provider's endpoints are unknown: discovery failed")]
    ProviderUnavailable,
}

/// Why a sign-in failed after its callback's state matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum SignInError {
    /// The callback was refused after its state matched (the provider's error such as
    /// `access_denied`, a wrong or missing `iss`, an expired sign-in, no code).
    #[error("{0}")]
    Callback(CallbackError),
    /// The code exchange failed.
    #[error("{0}")]
    Token(TokenError),
    /// An ID token (front channel or token endpoint) was refused.
    #[error("{0}")]
    IdToken(IdTokenError),
    /// The token endpoint answered an `openid` sign-in without an ID token (OpenID Connect
    /// Core §3.1.3.3 requires one).
    #[error("the token response has no id_token although the scope asks for openid")]
    MissingIdToken,
}

impl SignInError {
    /// A stable code a caller can branch on (the inner error's code).
    pub fn code(&self) -> &'static str {
        match self {
            SignInError::Callback(e) => e.code(),
            SignInError::Token(e) => e.code(),
            SignInError::IdToken(e) => e.code(),
            SignInError::MissingIdToken => "token_response_without_id_token",
        }
    }
}

/// Why a userinfo request gave no claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum UserInfoError {
    /// The request ended without an answer (as an API call would).
    #[error("{0}")]
    Call(CallFailure),
    /// The endpoint answered with another status than 200 (after one renewal for a 401).
    #[error("the userinfo endpoint answered HTTP {status}")]
    Status {
        /// The status.
        status: u16,
    },
    /// The answer is not a JSON object.
    #[error("the userinfo answer is not a JSON object")]
    Malformed,
    /// The answer names another subject than the ID token.
    #[error("the userinfo answer is for another subject than the ID token")]
    SubjectMismatch,
}

impl UserInfoError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            UserInfoError::Call(e) => e.code(),
            UserInfoError::Status { .. } => "userinfo_status",
            UserInfoError::Malformed => "userinfo_malformed",
            UserInfoError::SubjectMismatch => "userinfo_subject",
        }
    }
}

/// Why [`call_api`](crate::Session::call_api) refused a request. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum CallError {
    /// The host broke the loop contract.
    #[error(transparent)]
    Usage(UsageError),
    /// The URL does not parse, or is relative with no API root configured.
    #[error("the URL is not valid or is relative with no API root configured")]
    InvalidUrl,
    /// The URL's origin is not a configured API origin: the token is never sent there.
    #[error("the access token is only sent to the configured API origins; {origin} is not one")]
    ForeignOrigin {
        /// The refused origin (scheme, host and port only).
        origin: String,
    },
    /// The caller set `Authorization` itself; the session owns that header.
    #[error("the Authorization header is set by the session; remove it from the request")]
    AuthorizationHeader,
}

impl From<UsageError> for CallError {
    fn from(e: UsageError) -> Self {
        CallError::Usage(e)
    }
}

impl SignInRequiredReason {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            SignInRequiredReason::RefreshRejected { .. } => "refresh_rejected",
            SignInRequiredReason::NoRefreshToken => "no_refresh_token",
            SignInRequiredReason::SignedOutElsewhere => "signed_out_elsewhere",
            SignInRequiredReason::NotSignedIn => "not_signed_in",
            SignInRequiredReason::RefreshedIdTokenRefused { .. } => "refreshed_id_token_refused",
            SignInRequiredReason::ReferenceTokenRejected => "reference_token_rejected",
        }
    }
}

impl std::fmt::Display for SignInRequiredReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignInRequiredReason::RefreshRejected { error } => {
                write!(f, "the provider refused the refresh token ({error})")
            }
            SignInRequiredReason::NoRefreshToken => {
                f.write_str("the access token cannot be renewed: there is no refresh token")
            }
            SignInRequiredReason::SignedOutElsewhere => f.write_str("another tab or process signed out"),
            SignInRequiredReason::NotSignedIn => f.write_str("no sign-in completed"),
            SignInRequiredReason::RefreshedIdTokenRefused { error } => {
                write!(f, "a refresh answered with an ID token that was refused ({error})")
            }
            SignInRequiredReason::ReferenceTokenRejected => {
                f.write_str("the API refused the reference token: it was revoked or has expired")
            }
        }
    }
}

impl CallFailure {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            CallFailure::Transport(_) => "transport",
            CallFailure::SignInRequired(_) => "sign_in_required",
            CallFailure::RenewalUnavailable(_) => "renewal_unavailable",
            CallFailure::RenewalRefused(_) => "renewal_refused",
            CallFailure::Cancelled => "cancelled",
            CallFailure::SignedOut => "signed_out",
            CallFailure::ProviderUnavailable => "provider_unavailable",
        }
    }
}

impl CallError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Usage(e) => e.code(),
            CallError::InvalidUrl => "invalid_call_url",
            CallError::ForeignOrigin { .. } => "foreign_origin",
            CallError::AuthorizationHeader => "authorization_header",
        }
    }
}
