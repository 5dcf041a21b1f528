//! The server layer's failures, answered as plain typed responses.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use erpnet_auth::{CallFailure, UsageError};

use crate::store::StoreError;
use crate::Error;

/// Why the server layer could not serve a request. As a response
/// ([`IntoResponse`]) it is a status and a JSON body `{"code": "…"}` with the stable
/// [`code`](Self::code) and nothing else: no message, no internals, no secret.
///
/// | status | codes |
/// | --- | --- |
/// | 400 | `no_sign_in`, a refused callback (`state_mismatch`, `provider_error`, `invalid_grant`, …) |
/// | 401 | `not_signed_in`, `sign_in_required` |
/// | 403 | `cross_origin` |
/// | 500 | `config_mismatch`, `random_unavailable`, other misuse |
/// | 502 | the provider or the API could not be reached or answered wrongly |
/// | 503 | `storage_unavailable`, `lock_timeout`, `renewal_unavailable`, `closed` |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The request carries no signed-in session (no cookie, an unknown or malformed one, or
    /// a session that has ended).
    #[error("this request has no signed-in session")]
    NotSignedIn,
    /// A callback without a sign-in started in this browser (no pending sign-in cookie, or
    /// one that does not open, or one past its lifetime).
    #[error("no sign-in was started in this browser")]
    NoSignIn,
    /// A sign-out that did not come from the application's own pages.
    #[error("sign-out must come from the application's own pages")]
    CrossOrigin,
    /// The provider's authorization URL names another redirect URI than the one the
    /// server layer was built with.
    #[error("the provider configuration's redirect URI is not the server layer's")]
    ConfigMismatch,
    /// The operating system's random source failed (no session id could be drawn).
    #[error("no randomness is available")]
    RandomUnavailable,
    /// The session store failed.
    #[error("{0}")]
    Store(StoreError),
    /// The user's client failed (the code exchange, a call, the provider's discovery, …).
    #[error("{0}")]
    Client(Error),
}

impl ServerError {
    /// A stable code a caller can branch on (the client's own code for
    /// [`ServerError::Client`]).
    pub fn code(&self) -> &'static str {
        match self {
            ServerError::NotSignedIn => "not_signed_in",
            ServerError::NoSignIn => "no_sign_in",
            ServerError::CrossOrigin => "cross_origin",
            ServerError::ConfigMismatch => "config_mismatch",
            ServerError::RandomUnavailable => "random_unavailable",
            ServerError::Store(e) => e.code(),
            ServerError::Client(e) => e.code(),
        }
    }

    /// The HTTP status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ServerError::NotSignedIn => StatusCode::UNAUTHORIZED,
            ServerError::NoSignIn => StatusCode::BAD_REQUEST,
            ServerError::CrossOrigin => StatusCode::FORBIDDEN,
            ServerError::ConfigMismatch | ServerError::RandomUnavailable => StatusCode::INTERNAL_SERVER_ERROR,
            ServerError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::Client(e) => client_status(e),
        }
    }
}

fn client_status(error: &Error) -> StatusCode {
    match error {
        Error::SignIn(_) | Error::Callback(_) => StatusCode::BAD_REQUEST,
        Error::Usage(UsageError::NotSignedIn) => StatusCode::UNAUTHORIZED,
        Error::Failed(CallFailure::SignInRequired(_) | CallFailure::SignedOut) => StatusCode::UNAUTHORIZED,
        Error::Failed(CallFailure::RenewalUnavailable(_) | CallFailure::RenewalRefused(_)) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::Failed(_) | Error::Discovery(_) | Error::UserInfo(_) => StatusCode::BAD_GATEWAY,
        Error::Store(_) | Error::Closed => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

impl From<Error> for ServerError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => ServerError::Store(e),
            e => ServerError::Client(e),
        }
    }
}

/// A plain answer: `status`, `{"code": code}`, never cached.
pub(crate) fn problem(status: StatusCode, code: &str) -> Response {
    let body = serde_json::json!({ "code": code }).to_string();
    (status, [(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-store")], body).into_response()
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        problem(self.status(), self.code())
    }
}
