#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! placeholder
mod authorize;
mod config;
mod discovery;
mod http;
mod output;
mod pkce;
mod random;
mod secret;
mod session;
mod snapshot;
mod token;

pub use authorize::{Callback, CallbackError, PendingAuthorization, SignInOptions};
pub use config::{
    ClientAuth, Config, ConfigBuilder, ConfigError, GrantKind, ResponseMode, ResponseType, Timing, ERPNET_DEFAULT_SCOPE,
};
pub use discovery::{DiscoveryError, ProviderMetadata};
pub use http::{HttpRequest, HttpResponse, Method, RequestId, RequestKind, TransportError};
pub use output::{CallError, CallFailure, CallId, Event, Output, SignInRequiredReason, UsageError};
pub use pkce::{application_secret_hash, s256_challenge};
#[cfg(feature = "os-random")]
pub use random::OsRandom;
pub use random::{RandomSource, RandomUnavailable};
pub use secret::{AccessToken, AuthorizationCode, ClientSecret, CsrfState, IdToken, Nonce, PkceVerifier, RefreshToken};
pub use session::{ApiRequest, Session};
pub use snapshot::{Snapshot, SnapshotError, StoredTokens, SNAPSHOT_VERSION};
pub use token::{MalformedReason, OAuthError, OAuthErrorCode, TokenError};
