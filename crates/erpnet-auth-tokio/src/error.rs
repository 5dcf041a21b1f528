//! The one error type of the client, with stable codes.

use erpnet_auth::{
    error::{CallError, CallbackError, SignInError, SnapshotError, UserInfoError},
    CallFailure, DiscoveryError, UsageError,
};

use crate::store::StoreError;

/// Why an operation of a [`Client`](crate::Client) or a [`SharedProvider`](crate::SharedProvider)
/// did not succeed. [`code`](Error::code) gives a stable string to branch on, the same as the
/// npm package's `ErpNetAuthError.code` where both have one. No variant carries a token, a
/// code, a secret or a URL query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session refused the call before sending anything (a foreign origin, an
    /// `Authorization` header of the caller's, not signed in, …).
    #[error("the call was refused: {0}")]
    Refused(CallError),
    /// The call ended without an answer: a new sign-in is required, the token could not be
    /// renewed, the transport failed, the session signed out, or it was cancelled.
    #[error("{0}")]
    Failed(CallFailure),
    /// The sign-in failed after its callback matched (the provider's error, the code
    /// exchange, the ID token).
    #[error("the sign-in failed: {0}")]
    SignIn(SignInError),
    /// The callback was refused before its state matched: nothing changed, and the sign-in
    /// still waits for its real callback.
    #[error("the callback was refused: {0}")]
    Callback(CallbackError),
    /// The provider's discovery document could not be had; the next `sign_in` (or
    /// [`SharedProvider::ready`](crate::SharedProvider::ready)) tries again.
    #[error("the provider's discovery failed: {0}")]
    Discovery(DiscoveryError),
    /// The userinfo endpoint or the Profile site answered, but not with the user's claims.
    #[error("{0}")]
    UserInfo(UserInfoError),
    /// A command that does not apply now or to this configuration (not signed in, no such
    /// endpoint, wrong grant, no randomness).
    #[error("{0}")]
    Usage(UsageError),
    /// The shared session store failed (down, timed out, or its lock stayed taken).
    #[error("{0}")]
    Store(StoreError),
    /// A snapshot given to [`ClientBuilder::snapshot`](crate::ClientBuilder::snapshot)
    /// belongs to another client or issuer, or to another version of this library.
    #[error("the snapshot cannot be restored: {0}")]
    Snapshot(SnapshotError),
    /// A client-credentials or reference-token client was given a shared store: ERP.net runs
    /// one session per running instance of an application, so its own token stays in its
    /// process (as the npm package refuses it too).
    #[error("a client-credentials or reference-token client keeps its token in its process; give it no shared store")]
    SharedStoreNotAllowed,
    /// The HTTP client could not be built (its TLS backend failed to initialise).
    #[error("the HTTP client could not be built")]
    HttpClient,
    /// The client was closed (or its last handle dropped): nothing more is done.
    #[error("the client was closed")]
    Closed,
    /// The client was created outside a tokio runtime.
    #[error("no tokio runtime: create the client inside one (`#[tokio::main]` or `Runtime::enter`)")]
    NoRuntime,
}

impl Error {
    /// A stable code a caller can branch on: the inner error's code (`sign_in_required`,
    /// `foreign_origin`, `refresh_rejected` is reported as `sign_in_required`, …),
    /// `storage_unavailable`, `lock_timeout`, `closed`, `no_runtime`, `shared_store_not_allowed`,
    /// `http_client`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Refused(e) => e.code(),
            Error::Failed(e) => e.code(),
            Error::SignIn(e) => e.code(),
            Error::Callback(e) => e.code(),
            Error::Discovery(e) => e.code(),
            Error::UserInfo(e) => e.code(),
            Error::Usage(e) => e.code(),
            Error::Store(e) => e.code(),
            Error::Snapshot(e) => e.code(),
            Error::SharedStoreNotAllowed => "shared_store_not_allowed",
            Error::HttpClient => "http_client",
            Error::Closed => "closed",
            Error::NoRuntime => "no_runtime",
        }
    }
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        Error::Usage(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<UserInfoError> for Error {
    /// A userinfo or profile request that ended without an answer fails as a call does
    /// (so that `sign_in_required` reads the same everywhere).
    fn from(e: UserInfoError) -> Self {
        match e {
            UserInfoError::Call(failure) => Error::Failed(failure),
            other => Error::UserInfo(other),
        }
    }
}
