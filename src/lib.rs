#![forbid(unsafe_code)]
#![warn(missing_docs)]
// The doctrine "no input panics, nothing is silently truncated", enforced. `expect` rather
// than `allow` for the few justified exceptions, so that a stale exception is an error too.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap,
    clippy::allow_attributes
)]
//! Sign ERP.net users in with OAuth 2.0 / OpenID Connect, call the ERP.net Domain API, and
//! keep the access token valid with the refresh token — as a **sans-IO state machine**.
//!
//! A [`Session`] never opens a socket, reads a clock or touches storage. It *emits*
//! [`Output`]s — "send this HTTP request", "persist this snapshot", "this happened", "wake me
//! at T" — and *consumes* responses, callbacks and the current time. The same core runs in
//! native programs with any HTTP client and, compiled to WebAssembly, inside the
//! `erpnet-auth` npm package.
//!
//! # The loop contract
//!
//! * **Commands** start things: [`sign_in`](Session::sign_in),
//!   [`handle_callback`](Session::handle_callback), [`call_api`](Session::call_api),
//!   [`fetch_user_info`](Session::fetch_user_info), [`fetch_profile`](Session::fetch_profile),
//!   [`cancel_call`](Session::cancel_call), [`sign_out`](Session::sign_out).
//! * **Inputs** feed results back: [`handle_response`](Session::handle_response),
//!   [`handle_transport_error`](Session::handle_transport_error),
//!   [`handle_signature`](Session::handle_signature) (when the host verifies ID token
//!   signatures: [`Output::VerifySignature`]),
//!   [`handle_timeout`](Session::handle_timeout), [`handle_snapshot`](Session::handle_snapshot).
//! * Each takes `now`, wall-clock Unix time in milliseconds. Time never runs backwards
//!   inside a session: an earlier `now` counts as the latest one seen.
//! * After **every** command or input, drain [`poll`](Session::poll) until it returns
//!   [`Output::WaitUntil`] or [`Output::Idle`]. A command before that is refused with
//!   [`UsageError::NotDrained`].
//! * Expected failures (a refused refresh, a broken network, a forged callback) are data:
//!   events or typed refusals. `Err(UsageError)` means the host broke the contract. No
//!   input panics.
//!
//! # Example: the whole seed scenario in one loop
//!
//! ```
//! use erpnet_auth::{
//!     ApiRequest, Callback, Config, Event, HttpRequest, HttpResponse, Output, RequestKind, Session, SignInOptions,
//!     TransportError,
//! };
//!
//! // Any HTTP client goes here. This one answers like ERP.net, from memory.
//! fn send(request: &HttpRequest) -> Result<HttpResponse, TransportError> {
//!     Ok(match request.kind {
//!         RequestKind::Token => HttpResponse::new(200, r#"{"access_token":"at","token_type":"Bearer",
//!             "expires_in":3600,"refresh_token":"rt","scope":"offline_access read"}"#),
//!         _ => HttpResponse::new(200, r#"{"value":[]}"#),
//!     })
//! }
//!
//! /// Drains the session, sending every request it emits; returns the events.
//! fn drive(session: &mut Session, now: u64) -> Vec<Event> {
//!     let mut events = Vec::new();
//!     let mut answers = Vec::new();
//!     let mut checks = Vec::new();
//!     loop {
//!         match session.poll() {
//!             Output::Http(request) => answers.push((request.id, send(&request))),
//!             Output::Persist(snapshot) => { /* store snapshot.to_json() */ let _ = snapshot; }
//!             Output::Event(event) => events.push(event),
//!             // Only with `host_verifies_signatures(true)` (the default without the
//!             // `id-token-signatures` feature): verify, then `handle_signature`.
//!             Output::VerifySignature(check) => checks.push(*check),
//!             Output::WaitUntil(_) | Output::Idle => {
//!                 if let Some(check) = checks.pop() {
//!                     session.handle_signature(now, check.id, check.verify_in_rust()).unwrap();
//!                     continue;
//!                 }
//!                 match answers.pop() {
//!                     Some((id, Ok(response))) => session.handle_response(now, id, response).unwrap(),
//!                     Some((id, Err(error))) => session.handle_transport_error(now, id, error).unwrap(),
//!                     None => return events,
//!                 }
//!             }
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::erpnet("https://demodb.my.erp.net")
//!     .client_id("my.trusted.app/first")
//!     .client_secret("my-plain-app-secret")
//!     .redirect_uri("http://localhost/signin-callback")
//!     // Plain OAuth here. With `openid` (in the preset's default scope) the code exchange must
//!     // also return an ID token that checks out, which a real provider does.
//!     .scope("offline_access read")
//!     .build()?;
//! let mut session = Session::new(config);
//! let now = 1_700_000_000_000;
//! drive(&mut session, now); // discovery (answered here with the fixed ERP.net paths)
//!
//! // 1. Send the browser to the sign-in page.
//! let url = session.sign_in(now, SignInOptions::new())?;
//! assert!(url.starts_with("https://demodb.my.erp.net/id/connect/authorize?client_id=my.trusted.app%2Ffirst"));
//! drive(&mut session, now);
//!
//! // 2. The browser comes back to the redirect URI (state taken from the URL here).
//! let state = url.split("state=").nth(1).and_then(|s| s.split('&').next()).unwrap();
//! let callback = format!("http://localhost/signin-callback?code=g0ZGZmNjVmOWI&state={state}");
//! session.handle_callback(now, Callback::Url(&callback))?;
//! let events = drive(&mut session, now);
//! assert!(matches!(events[..], [Event::SignedIn { .. }]));
//!
//! // 3. Call the Domain API; the token is attached, and renewed when needed.
//! let call = session.call_api(now, ApiRequest::get("Crm_Sales_Customers?$top=10"))?;
//! let events = drive(&mut session, now);
//! assert!(matches!(&events[..], [Event::CallCompleted { call: c, response, .. }] if *c == call && response.status == 200));
//!
//! // 4. An hour later the token has expired: the next call refreshes first, by itself.
//! let later = now + 3_600_000;
//! session.call_api(later, ApiRequest::get("Crm_Sales_Customers?$top=10"))?;
//! let events = drive(&mut session, later);
//! assert!(matches!(events[..], [Event::TokensRenewed { .. }, Event::CallCompleted { .. }]));
//! # Ok(()) }
//! ```
//!
//! # Renewal semantics
//!
//! * Expiry is stored absolute (`expires_at = now + expires_in`). The token is renewed
//!   proactively [`Timing::renew_before_ms`] before expiry (the `WaitUntil` names the time)
//!   while it keeps serving calls; only a call that would go out with an expired token waits.
//! * A 401 is a verdict on the token the request carried: for a token already replaced
//!   (another renewal, a tab, a process) the call is replayed with the current one; for the
//!   current token one refresh and one replay (a second 401 goes to the caller), except that
//!   a token a renewal brought less than [`Timing::rejection_cooldown_ms`] ago, still clear
//!   of its expiry by the clock-skew allowance, keeps the 401 with the caller (an API that
//!   refuses every token costs one refresh per cooldown). A replay goes out before the calls
//!   made after it. A 403 is delivered as is.
//! * At most one token request is in flight per session (refresh-token rotation with reuse
//!   detection revokes the whole grant if two race).
//! * `invalid_grant` on refresh ends the session ([`Event::SignInRequired`]); network errors,
//!   5xx, 429 and answers that are not OAuth errors (a proxy's HTML page) keep every token
//!   and retry with bounded, jittered backoff.
//!
//! # Servers: many users, several processes
//!
//! * **One provider per process.** [`Session::with_provider`] makes a user's session from a
//!   shared `Arc<Config>` and a [`ProviderState`] (metadata, signing keys, the instance's
//!   sites behind `Arc`s) that another session learned ([`Session::provider_state`]): the
//!   provider is discovered once per process and its documents are held once in memory.
//!   With [`ConfigBuilder::snapshot_provider`]`(false)` the users' snapshots hold only their
//!   own state, and provider documents found in one are ignored: a stored snapshot is data,
//!   never configuration, and what a session read from a store is never shared with the
//!   process. A key that is named but does not verify sends the session for the key set
//!   again once (at most once a minute).
//! * **One session shared by several processes.** Every snapshot carries the generation of
//!   its token state and the one it was derived from ([`Snapshot::base_generation`]): a
//!   shared store writes it only while the stored generation is not above that base
//!   (compare-and-swap). For each token request the host takes the session's lock, reads
//!   the stored snapshot and hands it to [`Session::handle_snapshot`] (newer tokens are
//!   adopted and the request may stop being [wanted](Session::is_request_wanted)), sends,
//!   writes with compare-and-swap, and releases once [`Session::is_checking_token_answer`]
//!   is false. A refused write lost a race: read the store again and hand it in; the
//!   session adopts the winner's tokens.
//! * **The lock is a lease, and the session sizes it.** The provider cannot check a
//!   fencing token, so the grant is safe only if a second refresh never starts while the
//!   first may still reach it: the lease must outlive the token request's deadline
//!   ([`HttpRequest::deadline`], where the driver aborts the request) and the key-set fetch
//!   that checking its ID token may need. Drivers compute none of it; they ask the session
//!   two questions. Before taking the lock: [`Session::token_lease_ms`], the lease to ask
//!   for. Holding it, after reading the store and right before sending:
//!   [`Session::lease_covers`], whether the lease (its end counted from before the lock was
//!   asked for) still covers the request; if not, the request is answered with a transport
//!   error instead of being sent, and the session retries after its backoff.
//! * **One layout for every store.** [`shared_store`] holds the keys, fields and Redis
//!   scripts of a shared store, the same as the npm package's `RedisStorage`, so a Node and a
//!   Rust process can share a session. The blocking driver (`erpnet-auth-blocking`), the
//!   tokio driver (`erpnet-auth-tokio`) and the npm package implement this protocol.
//!
//! # ERP.net
//!
//! * [`Config::erpnet`] reads the instance's sites from its auto-discovery document (a loop
//!   request like any other): relative calls resolve against the Domain API's OData root,
//!   [`Session::fetch_profile`] asks the Profile site who the user is. Only sites on the
//!   instance's origin are used, and a discovery document with an endpoint elsewhere is
//!   refused ([`DiscoveryError::ForeignEndpoint`]).
//! * At most [`ERPNET_DEFAULT_API_CONCURRENCY`](erpnet::ERPNET_DEFAULT_API_CONCURRENCY) API requests are in flight (an ERP.net
//!   session runs one and queues five); a `429` goes out again with backoff before the caller
//!   sees it ([`ThrottleRetry`](config::ThrottleRetry), [`Timing::max_throttle_retries`]).
//! * Every application type: user sign-in, [client credentials](ConfigBuilder::client_credentials)
//!   and [reference tokens](ConfigBuilder::reference_token); [`install_link`](install::install_link) for the
//!   administrator.
//!
//! # Security
//!
//! State, nonce and PKCE verifier come from the injected [`RandomSource`] ([`OsRandom`] by
//! default); state is compared in constant time and is single use; `iss` (RFC 9207) is
//! checked; every endpoint must be HTTPS or loopback; the access token is attached only to
//! the configured API origins; secrets print as `[redacted]` in every `Debug`, and no error
//! message contains one.
//!
//! # Cargo features
//!
//! * `os-random` (default): [`OsRandom`], the operating system's (or `crypto.getRandomValues`)
//!   randomness.
//! * `id-token-signatures` (default): RS256, PS256 and ES256 checked in Rust. Without it the
//!   session asks the host ([`Output::VerifySignature`]; the npm package answers with
//!   `node:crypto` where the runtime has it, else WebCrypto).
//! * `rust-urls` (default): URLs parsed by the `url` crate. In WebAssembly, `host-urls`
//!   instead has the host's WHATWG `URL` parse them (the same standard, full IDNA, and none of
//!   the parser in the wasm: what the npm package ships); the core's checks stay the core's.
//!   One of the two is needed; with both, `url` parses.

mod authorize;
pub mod config;
mod discovery;
pub mod http;
mod id_token;
pub mod install;
mod json;
mod jwks;
mod oauth_error;
mod output;
mod random;
pub mod secret;
mod session;
mod setting;
mod shared;
pub mod shared_store;
mod signature;
mod sites;
pub mod snapshot;
mod token;
mod urls;
mod usage;
mod vec_map;
mod warning;

// What the seed scenario and a driving loop touch; everything else lives in the modules
// below (and in `config`, `http`, `install`, `secret`, `shared_store`, `snapshot`).
pub use authorize::{Callback, SignInOptions};
pub use config::{Config, ConfigBuilder, GrantKind, Timing};
pub use discovery::DiscoveryError;
pub use http::{CallId, HttpRequest, HttpResponse, Method, RequestId, RequestKind, TransportError};
pub use id_token::IdTokenClaims;
pub use output::{CallFailure, Event, Output};
#[cfg(feature = "os-random")]
pub use random::OsRandom;
pub use random::RandomSource;
pub use session::{ApiRequest, ProviderState, Session};
pub use signature::{SignatureCheck, SignatureCheckId};
pub use snapshot::Snapshot;
pub use usage::UsageError;

pub mod error {
    //! Every error the crate returns or reports, with its stable `code()`, and the warnings
    //! (sloppy answers that were tolerated).
    //!
    //! Commands and inputs refuse with [`UsageError`] (the host broke the loop contract, or a
    //! precondition does not hold), or with their own type ([`CallError`], [`CallbackError`],
    //! [`SnapshotError`]); a configuration that cannot be used is a [`ConfigError`]. What a
    //! server or a browser sends arrives as data, in events: [`CallFailure`], [`SignInError`]
    //! (and in it [`TokenError`], [`IdTokenError`], [`OAuthError`]), [`SignInRequiredReason`],
    //! [`UserInfoError`], [`DiscoveryError`], [`Warning`].

    pub use crate::authorize::CallbackError;
    pub use crate::discovery::DiscoveryError;
    pub use crate::id_token::IdTokenError;
    pub use crate::install::InstallLinkError;
    pub use crate::oauth_error::{OAuthError, OAuthErrorCode};
    pub use crate::output::{CallError, CallFailure, SignInError, SignInRequiredReason, UserInfoError};
    pub use crate::random::RandomUnavailable;
    pub use crate::setting::ConfigError;
    pub use crate::snapshot::SnapshotError;
    pub use crate::token::{MalformedReason, TokenError};
    pub use crate::usage::{UsageError, UsageErrorKind};
    pub use crate::warning::Warning;
}

pub mod jose {
    //! JOSE as the session uses it: the provider's signing keys (JWK, RFC 7517), the
    //! algorithms an ID token may be signed with (JWS, RFC 7515/7518), and the claims of a
    //! validated ID token. A host that verifies signatures itself receives a
    //! [`SignatureCheck`](crate::SignatureCheck) with the key to use.

    pub use crate::id_token::IdTokenClaims;
    pub use crate::jwks::{Jwk, JwkSet, SigningAlgorithm};
}

pub mod erpnet {
    //! What is ERP.net's own: the preset's defaults
    //! ([`Config::erpnet`](crate::Config::erpnet)) and the instance's sites, from its
    //! auto-discovery document. Installing an application: [`install`](crate::install).

    pub use crate::config::{ERPNET_DEFAULT_API_CONCURRENCY, ERPNET_DEFAULT_SCOPE};
    pub use crate::sites::{InstanceSites, SkippedSite};
}
