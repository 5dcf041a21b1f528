//! `erpnet-auth` on tokio: an async client that drives the sans-IO core over real HTTP.
//!
//! A [`Client`] is one user's (or one application's) session: it sends what the core asks
//! for with reqwest (redirects never followed, the core's deadlines enforced, answer bodies
//! capped while read), feeds the answers back, sleeps on tokio timers until the core's next
//! wake-up, and answers each caller when its operation ends. An API call's own requests go
//! out from the task that awaits [`Client::call`]; token requests, store writes and timers
//! run on a background task while there is something to wait for. Renewal before expiry,
//! the 401 refresh-and-replay and the 429 backoff are the core's; a caller just awaits
//! [`Client::call`].
//!
//! ```no_run
//! use erpnet_auth_tokio::erpnet_auth::{ApiRequest, Config, SignInOptions};
//! use erpnet_auth_tokio::Client;
//!
//! # async fn example(redirect_url: &str) -> Result<(), erpnet_auth_tokio::Error> {
//! let config = Config::erpnet("https://demodb.my.erp.net")
//!     .client_id("my.trusted.app/first")
//!     .client_secret("my-plain-app-secret")
//!     .redirect_uri("http://localhost/signin-callback")
//!     .build()
//!     .expect("a valid configuration");
//! let client = Client::new(config)?;
//! let url = client.sign_in(SignInOptions::new()).await?; // send the browser there
//! # let _ = url;
//! client.handle_callback(redirect_url).await?; // the browser came back
//! let answer = client.call(ApiRequest::get("Crm_Sales_Customers?$top=10")).await?;
//! println!("{} {}", answer.status, String::from_utf8_lossy(&answer.body));
//! # Ok(()) }
//! ```
//!
//! # A web server on axum (feature `axum`)
//!
//! [`server::ServerAuth`] gives axum the sign-in, callback and sign-out routes and a
//! [`server::SignedIn`] extractor that hands a handler the signed-in user's client; the
//! browser holds one `HttpOnly` cookie and never a token.
//!
#![cfg_attr(all(feature = "axum", feature = "redis"), doc = "```no_run")]
#![cfg_attr(not(all(feature = "axum", feature = "redis")), doc = "```ignore")]
//! use axum::{routing::get, Router};
//! use erpnet_auth_tokio::erpnet_auth::{ApiRequest, Config};
//! use erpnet_auth_tokio::server::{forward, ServerAuth, ServerError, SignedIn};
//! use erpnet_auth_tokio::store::RedisStore;
//! use erpnet_auth_tokio::SharedProvider;
//! use std::sync::Arc;
//!
//! async fn customers(user: SignedIn) -> Result<axum::response::Response, ServerError> {
//!     // As the signed-in user; the token renews by itself. Only the headers that still
//!     // describe the body go on to the browser.
//!     Ok(forward(user.call(ApiRequest::get("Crm_Sales_Customers?$top=10")).await?))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redirect_uri = "https://app.example.com/signin-callback"; // exactly as registered
//! let config = Config::erpnet("https://demodb.my.erp.net")
//!     .client_id("my.trusted.app/first")
//!     .client_secret(std::env::var("ERP_SECRET")?)
//!     .redirect_uri(redirect_uri)
//!     .build()?;
//! // One provider per process: discovery and keys fetched once for every user.
//! let auth = ServerAuth::builder(SharedProvider::new(config)?, redirect_uri)
//!     .sealing_key([7u8; 32]) // the application's 32-byte key, the same in every process
//!     .store(Arc::new(RedisStore::open("redis://127.0.0.1/").await?)) // several processes
//!     .after_sign_in("/customers")
//!     .build()?;
//! let app = Router::new()
//!     .route("/customers", get(customers))
//!     .merge(auth.router()) // GET /login, GET|POST /signin-callback, POST /logout
//!     .with_state(auth);
//! axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await?;
//! # Ok(()) }
//! ```
//!
//! `examples/axum-webapp` in the repository is the seed's web application on it.
//!
//! # Servers
//!
//! * [`SharedProvider`]: discovery, signing keys and the instance's sites fetched once per
//!   process and held once in memory; each user's client starts from them.
//! * [`ClientBuilder::store`]: a session shared by several tasks or processes through a
//!   [`store::SessionStore`] (in memory, or Redis with the npm package's layout), with
//!   compare-and-swap writes and a leased lock around every token request, as the core's
//!   crate docs describe.
//!
//! # Cargo features
//!
//! * `rustls` (default): HTTPS through rustls.
//! * `redis`: [`store::RedisStore`].
//! * `tracing`: a span per token request (grant, status, duration, attempt) and events for
//!   renewal, 401 replays, 429 backoff, lock waits and storage conflicts. Fields are kinds,
//!   statuses, durations and ids: never a URL, a header value, a body, a token, a code, a
//!   verifier, a state or a nonce.
//! * `axum`: the server side.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The sans-IO core this crate drives.
pub use erpnet_auth;

/// The repository README's Rust example, compiled by `cargo test` so that it stays correct.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

mod client;
mod driver;
mod error;
mod http;
mod provider;
#[cfg(feature = "axum")]
pub mod server;
pub mod store;
mod trace;

pub use client::{Client, ClientBuilder, Events};
pub use error::Error;
pub use http::{default_http_client, DEFAULT_MAX_BODY_BYTES};
pub use provider::SharedProvider;
