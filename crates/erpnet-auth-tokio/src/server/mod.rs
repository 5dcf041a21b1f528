//! The server side for axum (feature `axum`): sign-in, callback and sign-out routes, and an
//! extractor that hands a handler the signed-in user's [`Client`].
//!
//! The browser holds one `HttpOnly` cookie and never a token (the backend-for-frontend
//! pattern of the browser-apps BCP). What [`ServerAuth`] guarantees:
//!
//! * **The session cookie** is `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` with the
//!   `__Host-` prefix unless the application runs on plain-HTTP loopback (development). Its
//!   value is 256 random bits, drawn when a sign-in **completes**: an id known before the
//!   sign-in (planted, or the victim's earlier one) is worthless after it (no fixation). It
//!   is read exactly: the exact name, present once (a second cookie of the same name means
//!   no session), a value of the id's shape.
//! * **Nothing is kept for a visitor until a sign-in completes.** A request without a
//!   cookie, or with an unknown one, creates nothing: no client, no store key, no
//!   `Set-Cookie`, no request to the identity server. Even `GET /login` keeps nothing: the
//!   pending sign-in (`state`, `nonce`, PKCE verifier) travels in a second short-lived
//!   cookie, sealed with the application's key (XChaCha20-Poly1305; bound to its purpose
//!   and to the redirect URI) and opened at the callback.
//! * **One code exchange per authorization response.** The same callback arriving twice (a
//!   double submit, a retried redirect) is exchanged once; the second arrival waits for the
//!   first's outcome and gets the same answer, for as long as the pending sign-in lives;
//!   the exchange runs to its end even if the browser goes away. This holds within one
//!   process: a repeat that a load balancer sends to another process is exchanged there
//!   again (and refused by the provider), so give a farm session affinity for the callback
//!   or accept that rare case.
//! * **Cross-site requests end nothing.** A callback with a wrong `state` is refused and the
//!   sign-in in progress is kept; only a callback whose `state` matched spends it. A
//!   cross-site `GET /login` leaves the signed-in session as it is; when the new sign-in
//!   completes, the old session is ended properly (its refresh token revoked, its stored
//!   snapshot removed). Sign-out is `POST` only, from the application's own origin
//!   (`Origin`, or `Sec-Fetch-Site: same-origin` when there is none); else `403`.
//! * **Sessions in memory are bounded.** A session's client idle for
//!   [`idle_timeout`](ServerAuthBuilder::idle_timeout) leaves memory (a background sweep),
//!   at most [`max_sessions_in_memory`](ServerAuthBuilder::max_sessions_in_memory) are kept
//!   (the least recently used idle ones go first), and the next request reloads the
//!   session from the store by its cookie. A client a handler holds is never evicted under
//!   it. Each request checks the store, so a sign-out on another process ends the session
//!   here too; while the store is down, a session already in memory goes on serving.
//! * **Failures are plain.** A failure is answered with its status and `{"code": "…"}`
//!   ([`ServerError`]): no message, no internals, no secret. Nothing here logs.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use erpnet_auth::{ApiRequest, Config};
//! use erpnet_auth_tokio::server::{forward, ServerAuth, ServerError, SignedIn};
//! use erpnet_auth_tokio::SharedProvider;
//!
//! async fn customers(user: SignedIn) -> Result<axum::response::Response, ServerError> {
//!     // As the signed-in user; the token renews by itself.
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
//! let auth = ServerAuth::builder(SharedProvider::new(config)?, redirect_uri)
//!     .sealing_key([0u8; 32]) // the application's 32-byte key (the same in every process)
//!     .after_sign_in("/customers")
//!     .build()?;
//! let app = Router::new()
//!     .route("/customers", get(customers))
//!     .merge(auth.router()) // GET /login, GET|POST /signin-callback, POST /logout
//!     .with_state(auth);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod cookies;
mod error;
mod extract;
mod forward;
mod seal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use erpnet_auth::{SignInOptions, Snapshot};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, OnceCell};
use tokio::time::Instant;

use crate::store::{MemoryStore, SessionStore};
use crate::{Client, Error, SharedProvider};

use cookies::Attributes;
use seal::Sealer;

pub use error::ServerError;
pub use extract::SignedIn;
pub use forward::forward;

/// The largest `form_post` callback body read (the core refuses anything near it).
const MAX_FORM_POST_BYTES: usize = 64 * 1024;
/// At most this many spent callbacks are remembered (the oldest forgotten first), each for
/// the pending sign-in's lifetime: within it, a repeat gets the first arrival's outcome
/// instead of sending the code again. About 200 bytes each.
const MAX_CALLBACKS_REMEMBERED: usize = 4_096;
/// Provider documents a stored or sealed user state never carries: the process shares them.
const PROVIDER_MEMBERS: [&str; 3] = ["metadata", "sites", "jwks"];

/// A setting of [`ServerAuthBuilder`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerConfigError {
    /// The redirect URI or the application origin does not parse as an absolute URL.
    #[error("{0} must be an absolute URL")]
    InvalidUrl(&'static str),
    /// The application is not served over HTTPS and is not plain-HTTP loopback.
    #[error("the application must be served over HTTPS (plain HTTP only on localhost, 127.0.0.1 or [::1])")]
    InsecureUrl,
    /// A `__Host-` cookie over plain HTTP (browsers refuse it).
    #[error("a __Host- cookie needs HTTPS")]
    HostCookieNeedsHttps,
    /// A cookie name with characters a cookie name cannot have.
    #[error("the cookie name must be a non-empty token (letters, digits, - and _)")]
    InvalidCookieName,
    /// A path that does not start with `/`, or two routes on one path.
    #[error("{0} must be an absolute path of its own, such as /login")]
    InvalidPath(&'static str),
    /// The operating system's random source failed (no sealing key could be drawn).
    #[error("no randomness is available for the sealing key")]
    RandomUnavailable,
}

impl ServerConfigError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ServerConfigError::InvalidUrl(_) => "invalid_url",
            ServerConfigError::InsecureUrl => "insecure_url",
            ServerConfigError::HostCookieNeedsHttps => "invalid_config",
            ServerConfigError::InvalidCookieName => "invalid_config",
            ServerConfigError::InvalidPath(_) => "invalid_config",
            ServerConfigError::RandomUnavailable => "random_unavailable",
        }
    }
}

/// Builds a [`ServerAuth`]; see [`ServerAuth::builder`].
#[must_use]
pub struct ServerAuthBuilder {
    provider: SharedProvider,
    redirect_uri: String,
    store: Option<Arc<dyn SessionStore>>,
    sealing_key: Option<[u8; 32]>,
    app_origin: Option<String>,
    cookie_name: Option<String>,
    login_path: String,
    logout_path: String,
    after_sign_in: String,
    after_sign_out: String,
    post_logout_redirect_uri: Option<String>,
    idle_timeout: Duration,
    max_sessions_in_memory: usize,
    pending_lifetime: Duration,
    sign_in_options: SignInOptions,
}

impl std::fmt::Debug for ServerAuthBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAuthBuilder").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

impl ServerAuthBuilder {
    /// Where sessions are kept (default: a [`MemoryStore`] of this process). Several
    /// processes serving one application share a `RedisStore` and the same
    /// [`sealing_key`](Self::sealing_key).
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The application's 32-byte key that seals pending sign-ins into their cookie. Default:
    /// a random key of this process, which is right for one process; several processes (a
    /// sign-in may start on one and come back to another) must share one key. Keep it as
    /// secret as the client secret.
    pub fn sealing_key(mut self, key: [u8; 32]) -> Self {
        self.sealing_key = Some(key);
        self
    }

    /// The application's origin as browsers see it, for the sign-out check and the cookie's
    /// `Secure` (default: the redirect URI's origin).
    pub fn app_origin(mut self, origin: impl Into<String>) -> Self {
        self.app_origin = Some(origin.into());
        self
    }

    /// The session cookie's name (default `__Host-erpnet-session` over HTTPS,
    /// `erpnet-session` on loopback). The pending sign-in's cookie is named after it with
    /// `-signin` appended.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = Some(name.into());
        self
    }

    /// The sign-in route (default `/login`).
    pub fn login_path(mut self, path: impl Into<String>) -> Self {
        self.login_path = path.into();
        self
    }

    /// The sign-out route (default `/logout`).
    pub fn logout_path(mut self, path: impl Into<String>) -> Self {
        self.logout_path = path.into();
        self
    }

    /// Where the browser goes once signed in (default `/`).
    pub fn after_sign_in(mut self, location: impl Into<String>) -> Self {
        self.after_sign_in = location.into();
        self
    }

    /// Where the browser goes after signing out when the provider has no end-session
    /// endpoint (default `/`).
    pub fn after_sign_out(mut self, location: impl Into<String>) -> Self {
        self.after_sign_out = location.into();
        self
    }

    /// The `post_logout_redirect_uri` sent to the provider's end-session endpoint (it must
    /// be registered there).
    pub fn post_logout_redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.post_logout_redirect_uri = Some(uri.into());
        self
    }

    /// How long a session's client stays in memory unused (default 5 minutes).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// At most this many sessions' clients in memory (default 10,000; at least 1).
    pub fn max_sessions_in_memory(mut self, count: usize) -> Self {
        self.max_sessions_in_memory = count.max(1);
        self
    }

    /// How long a started sign-in may take to come back (default 15 minutes, the core's
    /// default `callback_max_age_ms`): the pending sign-in's cookie lives this long.
    pub fn pending_sign_in_lifetime(mut self, lifetime: Duration) -> Self {
        self.pending_lifetime = lifetime;
        self
    }

    /// The sign-in parameters of the `/login` route (`prompt`, `login_hint`, …).
    pub fn sign_in_options(mut self, options: SignInOptions) -> Self {
        self.sign_in_options = options;
        self
    }

    /// Checks the settings and makes the [`ServerAuth`].
    pub fn build(self) -> Result<ServerAuth, ServerConfigError> {
        let redirect =
            url::Url::parse(&self.redirect_uri).map_err(|_| ServerConfigError::InvalidUrl("redirect_uri"))?;
        let origin = match &self.app_origin {
            Some(origin) => url::Url::parse(origin).map_err(|_| ServerConfigError::InvalidUrl("app_origin"))?,
            None => redirect.clone(),
        };
        let loopback = matches!(origin.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        let secure = match origin.scheme() {
            "https" => true,
            "http" if loopback => false,
            _ => return Err(ServerConfigError::InsecureUrl),
        };
        let session_cookie = self
            .cookie_name
            .unwrap_or_else(|| if secure { "__Host-erpnet-session" } else { "erpnet-session" }.to_owned());
        if session_cookie.is_empty()
            || !session_cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ServerConfigError::InvalidCookieName);
        }
        if session_cookie.starts_with("__Host-") && !secure {
            return Err(ServerConfigError::HostCookieNeedsHttps);
        }
        let callback_path = redirect.path().to_owned();
        for (field, path) in [("login_path", &self.login_path), ("logout_path", &self.logout_path)] {
            if !path.starts_with('/') || *path == callback_path {
                return Err(ServerConfigError::InvalidPath(field));
            }
        }
        if self.login_path == self.logout_path {
            return Err(ServerConfigError::InvalidPath("logout_path"));
        }
        let key = match self.sealing_key {
            Some(key) => key,
            None => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|_| ServerConfigError::RandomUnavailable)?;
                key
            }
        };
        let mut callback_base = redirect.clone();
        callback_base.set_query(None);
        callback_base.set_fragment(None);
        let settings = Settings {
            sealer: Sealer::new(&key, &self.redirect_uri),
            pending_cookie: format!("{session_cookie}-signin"),
            session_cookie,
            redirect_uri: self.redirect_uri,
            callback_base: callback_base.into(),
            callback_path,
            app_origin: origin.origin().ascii_serialization(),
            secure,
            login_path: self.login_path,
            logout_path: self.logout_path,
            after_sign_in: self.after_sign_in,
            after_sign_out: self.after_sign_out,
            post_logout_redirect_uri: self.post_logout_redirect_uri,
            idle_timeout: self.idle_timeout,
            max_in_memory: self.max_sessions_in_memory,
            pending_lifetime: self.pending_lifetime,
            sign_in_options: self.sign_in_options,
        };
        Ok(ServerAuth {
            inner: Arc::new(Inner {
                provider: self.provider,
                store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                settings,
                epoch: Instant::now(),
                sessions: Mutex::new(HashMap::new()),
                sweeping: AtomicBool::new(false),
                callbacks: Mutex::new(HashMap::new()),
            }),
        })
    }
}

struct Settings {
    sealer: Sealer,
    session_cookie: String,
    pending_cookie: String,
    redirect_uri: String,
    /// The redirect URI without query or fragment: the callback's query is put on it (the
    /// host a proxy forwarded does not matter).
    callback_base: String,
    callback_path: String,
    app_origin: String,
    secure: bool,
    login_path: String,
    logout_path: String,
    after_sign_in: String,
    after_sign_out: String,
    post_logout_redirect_uri: Option<String>,
    idle_timeout: Duration,
    max_in_memory: usize,
    pending_lifetime: Duration,
    sign_in_options: SignInOptions,
}

/// Sign-in, callback, sign-out and the signed-in user's [`Client`] for the users of an axum
/// application, one session per browser, kept in a [`SessionStore`]. Cheap to clone (all
/// clones share one state); see the [module documentation](self) for what it guarantees.
///
/// Use it as axum state (`ServerAuth: FromRef<S>`) so that [`SignedIn`] can find it, and
/// merge [`router`](Self::router) into the application's router.
#[derive(Clone)]
pub struct ServerAuth {
    inner: Arc<Inner>,
}

struct Inner {
    provider: SharedProvider,
    store: Arc<dyn SessionStore>,
    settings: Settings,
    epoch: Instant,
    sessions: Mutex<HashMap<String, Arc<Resident>>>,
    /// Whether the idle sweep runs (it stops when no session is in memory).
    sweeping: AtomicBool,
    callbacks: Mutex<HashMap<[u8; 32], Arc<Flight>>>,
}

impl std::fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAuth")
            .field("app_origin", &self.inner.settings.app_origin)
            .field("cookie_name", &self.inner.settings.session_cookie)
            .field("sessions_in_memory", &self.sessions_in_memory())
            .finish_non_exhaustive()
    }
}

/// A session's client in memory.
pub(crate) struct Resident {
    client: OnceCell<Client>,
    /// When it was last used, ms after the `epoch` (for the idle sweep and the LRU order).
    last_used: AtomicU64,
    /// Requests that hold it now: never evicted while any does.
    holds: AtomicUsize,
    epoch: Instant,
}

impl Resident {
    fn touch(&self) {
        self.last_used.store(millis(self.epoch.elapsed()), Ordering::Relaxed);
    }
}

/// A request's hold on a session's client: released (and the session marked as used) when
/// dropped.
pub(crate) struct Hold {
    resident: Arc<Resident>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.resident.touch();
        self.resident.holds.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One authorization response being exchanged, or lately exchanged.
struct Flight {
    outcome: watch::Sender<Option<Outcome>>,
    /// When the outcome was known (`None` while the exchange runs).
    finished: Mutex<Option<Instant>>,
}

#[derive(Clone)]
enum Outcome {
    SignedIn {
        session_id: String,
        cross_site: bool,
    },
    /// `spent`: the state matched (or the pending sign-in is useless), so its cookie goes.
    Refused {
        error: ServerError,
        spent: bool,
        cross_site: bool,
    },
}

enum CallbackInput {
    Query(String),
    FormPost(Bytes),
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}

fn session_key(id: &str) -> String {
    format!("session:{id}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent between statements: a panic elsewhere cannot leave
    // them half-changed.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The user state of a snapshot as JSON, without the provider's documents (the process
/// shares those; a stored or sealed copy of them would only be something to tamper with).
fn user_state_json(snapshot: &Snapshot) -> Option<serde_json::Map<String, serde_json::Value>> {
    let serde_json::Value::Object(mut state) = serde_json::from_str(&snapshot.to_json()).ok()? else {
        return None;
    };
    for member in PROVIDER_MEMBERS {
        state.remove(member);
    }
    Some(state)
}

fn redirect(status: StatusCode, location: &str, cookies: &[String]) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(location) => {
            headers.insert(LOCATION, location);
        }
        Err(_) => return ServerError::ConfigMismatch.into_response(),
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(SET_COOKIE, value);
        }
    }
    response
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

impl ServerAuth {
    /// A server layer on `provider` (one per process) for the application whose redirect URI
    /// is `redirect_uri` — the same as in the provider's configuration, exactly as
    /// registered; its path is the callback route.
    pub fn builder(provider: SharedProvider, redirect_uri: impl Into<String>) -> ServerAuthBuilder {
        ServerAuthBuilder {
            provider,
            redirect_uri: redirect_uri.into(),
            store: None,
            sealing_key: None,
            app_origin: None,
            cookie_name: None,
            login_path: "/login".to_owned(),
            logout_path: "/logout".to_owned(),
            after_sign_in: "/".to_owned(),
            after_sign_out: "/".to_owned(),
            post_logout_redirect_uri: None,
            idle_timeout: Duration::from_secs(5 * 60),
            max_sessions_in_memory: 10_000,
            pending_lifetime: Duration::from_secs(15 * 60),
            sign_in_options: SignInOptions::new(),
        }
    }

    /// The routes: `GET` sign-in (default `/login`), `GET` and `POST` (`form_post`) callback
    /// at the redirect URI's path, `POST` sign-out (default `/logout`). Merge or nest it
    /// into the application's router; other methods are answered `405`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let settings = &self.inner.settings;
        let (login, callback, callback_post, logout) = (self.clone(), self.clone(), self.clone(), self.clone());
        Router::new()
            .route(&settings.login_path, get(move |headers: HeaderMap| async move { login.sign_in(&headers).await }))
            .route(
                &settings.callback_path,
                get(move |headers: HeaderMap, uri: Uri| async move {
                    callback.callback(&headers, uri.query().unwrap_or("")).await
                })
                .post(move |headers: HeaderMap, body: Bytes| async move {
                    callback_post.callback_form_post(&headers, body).await
                })
                .layer(DefaultBodyLimit::max(MAX_FORM_POST_BYTES)),
            )
            .route(
                &settings.logout_path,
                post(move |headers: HeaderMap| async move { logout.sign_out(&headers).await }),
            )
    }

    /// The session cookie's name (`__Host-erpnet-session` over HTTPS).
    pub fn cookie_name(&self) -> &str {
        &self.inner.settings.session_cookie
    }

    /// The pending sign-in cookie's name (the session cookie's with `-signin`).
    pub fn pending_cookie_name(&self) -> &str {
        &self.inner.settings.pending_cookie
    }

    /// How many sessions' clients are in memory now.
    pub fn sessions_in_memory(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// How many callbacks are being exchanged or remembered (to answer their repeats) now.
    pub fn callbacks_in_memory(&self) -> usize {
        lock(&self.inner.callbacks).len()
    }

    /// The session store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    fn attributes(&self, cross_site: bool, max_age_secs: Option<i64>) -> Attributes {
        Attributes { secure: self.inner.settings.secure, cross_site, max_age_secs }
    }

    /// Starts a sign-in with the configured sign-in options: see
    /// [`sign_in_with`](Self::sign_in_with).
    pub async fn sign_in(&self, headers: &HeaderMap) -> Response {
        self.sign_in_with(headers, self.inner.settings.sign_in_options.clone()).await
    }

    /// Starts a sign-in: `302` to the provider's authorization URL with the pending sign-in
    /// sealed into its cookie. Nothing is stored; the session cookie, if any, is left as it
    /// is (that session ends when this sign-in completes). Waits for the provider's
    /// discovery on the process's first sign-in; a discovery failure answers `502`.
    pub async fn sign_in_with(&self, headers: &HeaderMap, options: SignInOptions) -> Response {
        match self.start_sign_in(headers, options).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn start_sign_in(&self, headers: &HeaderMap, options: SignInOptions) -> Result<Response, ServerError> {
        let settings = &self.inner.settings;
        // Discovery, keys and sites once per process, before the first sign-in's client
        // (which would otherwise start fetching the keys itself, then be closed).
        self.inner.provider.ready().await?;
        // A client of no store: the pending sign-in is read back from it, not persisted.
        let client = self.inner.provider.client().build()?;
        let started = async { Ok::<_, Error>((client.sign_in(options).await?, client.snapshot().await?)) }.await;
        client.close().await;
        let (url, snapshot) = started?;
        let parsed = url::Url::parse(&url).map_err(|_| ServerError::ConfigMismatch)?;
        let param = |name: &str| parsed.query_pairs().find(|(n, _)| n == name).map(|(_, v)| v.into_owned());
        if param("redirect_uri").as_deref() != Some(settings.redirect_uri.as_str()) {
            return Err(ServerError::ConfigMismatch);
        }
        // A form_post callback is a cross-site POST: only a SameSite=None cookie comes along.
        let cross_site = param("response_mode").as_deref() == Some("form_post");
        let state = user_state_json(&snapshot).ok_or(ServerError::ConfigMismatch)?;
        let prior = cookies::read_session_id(headers, &settings.session_cookie);
        let payload = serde_json::json!({ "snapshot": state, "prior": prior, "cross_site": cross_site });
        let sealed =
            settings.sealer.seal(payload.to_string().as_bytes()).map_err(|_| ServerError::RandomUnavailable)?;
        let lifetime = i64::try_from(settings.pending_lifetime.as_secs()).unwrap_or(i64::MAX);
        let cookie =
            cookies::set_cookie(&settings.pending_cookie, &sealed, self.attributes(cross_site, Some(lifetime)));
        Ok(redirect(StatusCode::FOUND, &url, &[cookie]))
    }

    /// Completes a sign-in at the redirect URI (`query`: the request's query string):
    /// exchanges the code once, stores the session under a new id, ends the browser's
    /// previous session, and redirects to `after_sign_in` with the new session cookie. A
    /// refused callback answers `400` with its code; the pending sign-in survives a refusal
    /// before its `state` matched.
    pub async fn callback(&self, headers: &HeaderMap, query: &str) -> Response {
        self.finish_sign_in(headers, CallbackInput::Query(query.to_owned()), StatusCode::FOUND).await
    }

    /// The same for a `response_mode=form_post` callback's body.
    pub async fn callback_form_post(&self, headers: &HeaderMap, body: Bytes) -> Response {
        self.finish_sign_in(headers, CallbackInput::FormPost(body), StatusCode::SEE_OTHER).await
    }

    async fn finish_sign_in(&self, headers: &HeaderMap, input: CallbackInput, status: StatusCode) -> Response {
        let settings = &self.inner.settings;
        let Some(sealed) = cookies::read_sealed(headers, &settings.pending_cookie) else {
            return ServerError::NoSignIn.into_response();
        };
        let mut hash = Sha256::new();
        hash.update(sealed.as_bytes());
        match &input {
            CallbackInput::Query(query) => {
                hash.update(b"?");
                hash.update(query.as_bytes());
            }
            CallbackInput::FormPost(body) => {
                hash.update(b"#");
                hash.update(body);
            }
        }
        let key: [u8; 32] = hash.finalize().into();
        let (flight, first) = self.inner.join_flight(key);
        if first {
            // Its own task: a browser that goes away does not cut the exchange short, and
            // its repeat finds the outcome instead of sending the code again.
            let inner = Arc::clone(&self.inner);
            let current = cookies::read_session_id(headers, &settings.session_cookie);
            let running = Arc::clone(&flight);
            tokio::spawn(async move {
                let outcome = inner.exchange(&sealed, input, current).await;
                inner.land_flight(&key, &running, outcome);
            });
        }
        let mut outcome = flight.outcome.subscribe();
        let outcome = match outcome.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        match outcome {
            Some(Outcome::SignedIn { session_id, cross_site }) => redirect(
                status,
                &settings.after_sign_in,
                &[
                    cookies::clear_cookie(&settings.pending_cookie, self.attributes(cross_site, None)),
                    cookies::set_cookie(&settings.session_cookie, &session_id, self.attributes(false, None)),
                ],
            ),
            Some(Outcome::Refused { error, spent, cross_site }) => {
                let response = error.into_response();
                if spent {
                    with_cookie(
                        response,
                        &cookies::clear_cookie(&settings.pending_cookie, self.attributes(cross_site, None)),
                    )
                } else {
                    response
                }
            }
            None => ServerError::Client(Error::Closed).into_response(),
        }
    }

    /// Signs out (the route is `POST` only): only from the application's own origin (else
    /// `403 cross_origin`). Revokes the refresh token, deletes the stored session, clears
    /// the cookie and redirects (`303`) to the provider's end-session URL, or to
    /// `after_sign_out` when it has none.
    pub async fn sign_out(&self, headers: &HeaderMap) -> Response {
        let settings = &self.inner.settings;
        if !self.same_origin(headers) {
            return ServerError::CrossOrigin.into_response();
        }
        let clear = cookies::clear_cookie(&settings.session_cookie, self.attributes(false, None));
        let Some(id) = cookies::read_session_id(headers, &settings.session_cookie) else {
            return redirect(StatusCode::SEE_OTHER, &settings.after_sign_out, &[clear]);
        };
        match self.inner.end_session(&id, settings.post_logout_redirect_uri.as_deref()).await {
            Ok(end_session) => {
                redirect(StatusCode::SEE_OTHER, end_session.as_deref().unwrap_or(&settings.after_sign_out), &[clear])
            }
            Err(error) => error.into_response(),
        }
    }

    /// Whether the request comes from the application's own pages: its `Origin` is the
    /// application's, or, without `Origin`, `Sec-Fetch-Site` says `same-origin`.
    fn same_origin(&self, headers: &HeaderMap) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match header("origin") {
            Some(origin) => origin == self.inner.settings.app_origin,
            None => header("sec-fetch-site") == Some("same-origin"),
        }
    }

    /// The signed-in user of this request: `Ok(None)` without a signed-in session (nothing
    /// is created for it). The session is loaded from the store when it is not in memory.
    /// [`SignedIn`] as an extractor does this.
    pub async fn user(&self, headers: &HeaderMap) -> Result<Option<SignedIn>, ServerError> {
        let Some(id) = cookies::read_session_id(headers, &self.inner.settings.session_cookie) else {
            return Ok(None);
        };
        Arc::clone(&self.inner).signed_in(&id).await
    }

    /// Drops every session's client from memory and closes it (the sessions stay in the
    /// store). Resolves once their token requests in flight are answered and stored.
    pub async fn close(&self) {
        let residents: Vec<Arc<Resident>> = lock(&self.inner.sessions).drain().map(|(_, r)| r).collect();
        for resident in residents {
            if let Some(client) = resident.client.get() {
                client.close().await;
            }
        }
    }
}

impl Inner {
    async fn signed_in(self: Arc<Self>, id: &str) -> Result<Option<SignedIn>, ServerError> {
        let key = session_key(id);
        // Each request checks the store: a sign-out on another process removed the session.
        let stored = match self.store.get(&key).await {
            Ok(Some(json)) => Some(json),
            Ok(None) => {
                lock(&self.sessions).remove(id);
                return Ok(None);
            }
            // While the store is down a session already in memory goes on serving.
            Err(_) if self.is_loaded(id) => None,
            Err(error) => return Err(error.into()),
        };
        let hold = {
            let mut sessions = lock(&self.sessions);
            let resident = sessions.entry(id.to_owned()).or_insert_with(|| {
                Arc::new(Resident {
                    client: OnceCell::new(),
                    last_used: AtomicU64::new(millis(self.epoch.elapsed())),
                    holds: AtomicUsize::new(0),
                    epoch: self.epoch,
                })
            });
            resident.holds.fetch_add(1, Ordering::AcqRel);
            Hold { resident: Arc::clone(resident) }
        };
        self.ensure_sweep();
        let loaded = hold.resident.client.get_or_try_init(|| async { self.load(&key, stored.as_deref()) }).await;
        let client = match loaded {
            Ok(client) => client.clone(),
            Err(error) => {
                self.forget_if_unloaded(id, &hold.resident);
                return match error {
                    Load::Unusable => Ok(None),
                    Load::Failed(error) => Err(error),
                };
            }
        };
        self.evict_overflow(id);
        if !client.is_signed_in().await {
            return Ok(None);
        }
        Ok(Some(SignedIn::new(client, hold)))
    }

    fn is_loaded(&self, id: &str) -> bool {
        lock(&self.sessions).get(id).is_some_and(|r| r.client.initialized())
    }

    fn load(&self, key: &str, stored: Option<&str>) -> Result<Client, Load> {
        let snapshot = Snapshot::from_json(stored.ok_or(Load::Unusable)?).map_err(|_| Load::Unusable)?;
        let client = self.provider.client().snapshot(snapshot).store(Arc::clone(&self.store), key).build().map_err(
            |e| match e {
                Error::Snapshot(_) => Load::Unusable,
                e => Load::Failed(e.into()),
            },
        )?;
        Ok(client)
    }

    /// Removes a resident whose load failed, unless another request has loaded it since.
    fn forget_if_unloaded(&self, id: &str, resident: &Arc<Resident>) {
        let mut sessions = lock(&self.sessions);
        if sessions.get(id).is_some_and(|r| Arc::ptr_eq(r, resident) && !r.client.initialized()) {
            sessions.remove(id);
        }
    }

    /// Over the bound: the least recently used idle sessions leave memory, never `keep`.
    fn evict_overflow(&self, keep: &str) {
        let mut sessions = lock(&self.sessions);
        let excess = sessions.len().saturating_sub(self.settings.max_in_memory);
        if excess == 0 {
            return;
        }
        let mut idle: Vec<(u64, String)> = sessions
            .iter()
            .filter(|(id, r)| r.holds.load(Ordering::Acquire) == 0 && id.as_str() != keep)
            .map(|(id, r)| (r.last_used.load(Ordering::Relaxed), id.clone()))
            .collect();
        idle.sort_unstable();
        for (_, id) in idle.into_iter().take(excess) {
            // Dropping the last handle ends an idle client (a token request it has in flight
            // still finishes and is stored).
            sessions.remove(&id);
        }
    }

    /// Starts the idle sweep unless it runs; it stops by itself when memory is empty or the
    /// `ServerAuth` is gone.
    fn ensure_sweep(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let every = self.settings.idle_timeout.clamp(Duration::from_millis(100), Duration::from_secs(60));
        let weak: Weak<Inner> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if !inner.sweep() {
                    return;
                }
            }
        });
    }

    /// Drops the clients idle longer than the idle timeout; whether the sweep goes on.
    fn sweep(&self) -> bool {
        let idle_ms = millis(self.settings.idle_timeout);
        let now = millis(self.epoch.elapsed());
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, r| {
            r.holds.load(Ordering::Acquire) > 0 || now.saturating_sub(r.last_used.load(Ordering::Relaxed)) < idle_ms
        });
        if sessions.is_empty() {
            // Under the lock: a session added after this starts a new sweep.
            self.sweeping.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// The flight of authorization response `key`, and whether this caller is its first.
    fn join_flight(&self, key: [u8; 32]) -> (Arc<Flight>, bool) {
        let mut callbacks = lock(&self.callbacks);
        let finished_at = |f: &Flight| *lock(&f.finished);
        let memory = self.settings.pending_lifetime;
        callbacks.retain(|_, f| finished_at(f).is_none_or(|at| at.elapsed() < memory));
        if let Some(flight) = callbacks.get(&key) {
            return (Arc::clone(flight), false);
        }
        let finished: usize = callbacks.values().filter(|f| finished_at(f).is_some()).count();
        if finished >= MAX_CALLBACKS_REMEMBERED {
            let mut oldest: Vec<([u8; 32], Instant)> =
                callbacks.iter().filter_map(|(k, f)| finished_at(f).map(|at| (*k, at))).collect();
            oldest.sort_unstable_by_key(|(_, at)| *at);
            for (k, _) in oldest.into_iter().take(finished + 1 - MAX_CALLBACKS_REMEMBERED) {
                callbacks.remove(&k);
            }
        }
        let flight = Arc::new(Flight { outcome: watch::channel(None).0, finished: Mutex::new(None) });
        callbacks.insert(key, Arc::clone(&flight));
        (flight, true)
    }

    /// Publishes a flight's outcome. One that spent nothing is forgotten at once (the same
    /// request may be tried again); a spent one is remembered for its repeats.
    fn land_flight(&self, key: &[u8; 32], flight: &Arc<Flight>, outcome: Outcome) {
        let spent = !matches!(outcome, Outcome::Refused { spent: false, .. });
        *lock(&flight.finished) = Some(Instant::now());
        flight.outcome.send_replace(Some(outcome));
        if !spent {
            let mut callbacks = lock(&self.callbacks);
            if callbacks.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
                callbacks.remove(key);
            }
        }
    }

    async fn exchange(&self, sealed: &str, input: CallbackInput, current: Option<String>) -> Outcome {
        let refused = |error: ServerError, spent: bool, cross_site: bool| Outcome::Refused { error, spent, cross_site };
        let Some(payload) = self.settings.sealer.open(sealed) else {
            return refused(ServerError::NoSignIn, false, false);
        };
        let Ok(serde_json::Value::Object(mut payload)) = serde_json::from_slice(&payload) else {
            return refused(ServerError::NoSignIn, false, false);
        };
        let cross_site = payload.get("cross_site").and_then(serde_json::Value::as_bool).unwrap_or(false);
        let prior = payload.get("prior").and_then(serde_json::Value::as_str).map(str::to_owned);
        let snapshot = payload.remove("snapshot").and_then(|s| Snapshot::from_json(&s.to_string()).ok());
        let Some(snapshot) = snapshot else { return refused(ServerError::NoSignIn, true, cross_site) };
        let lifetime = millis(self.settings.pending_lifetime);
        if snapshot.pending().is_none_or(|p| p.created_at.saturating_add(lifetime) < unix_ms()) {
            return refused(ServerError::NoSignIn, true, cross_site);
        }
        let client = match self.provider.client().snapshot(snapshot).build() {
            Ok(client) => client,
            Err(error) => return refused(error.into(), false, cross_site),
        };
        let answered = match &input {
            CallbackInput::Query(query) => {
                client.handle_callback(&format!("{}?{query}", self.settings.callback_base)).await
            }
            CallbackInput::FormPost(body) => match std::str::from_utf8(body) {
                Ok(body) => client.handle_form_post(body).await,
                Err(_) => Err(Error::Callback(erpnet_auth::error::CallbackError::Malformed)),
            },
        };
        if let Err(error) = answered {
            client.close().await;
            // Refused before its state matched: the sign-in in progress is kept.
            let spent = matches!(error, Error::SignIn(_));
            return refused(error.into(), spent, cross_site);
        }
        let stored = self.store_new_session(&client).await;
        if stored.is_err() {
            // The tokens could not be kept: give the grant back rather than leave it live
            // (the revocation finishes after the client is dropped).
            let _ = client.sign_out(None).await;
        } else {
            client.close().await;
        }
        let session_id = match stored {
            Ok(id) => id,
            Err(error) => return refused(error, true, cross_site),
        };
        // The browser's previous session (the one it had at /login, and the one it has now)
        // ends now that the new one exists.
        let mut previous: Vec<String> = current.into_iter().chain(prior).collect();
        previous.dedup();
        for id in previous {
            let _ = self.end_session(&id, None).await;
        }
        Outcome::SignedIn { session_id, cross_site }
    }

    async fn store_new_session(&self, client: &Client) -> Result<String, ServerError> {
        let snapshot = client.snapshot().await?;
        let state = user_state_json(&snapshot).ok_or(ServerError::Client(Error::Closed))?;
        let id = cookies::new_session_id().map_err(|_| ServerError::RandomUnavailable)?;
        self.store.set(&session_key(&id), &serde_json::Value::Object(state).to_string(), None).await?;
        Ok(id)
    }

    /// Ends session `id`: its client in memory is closed (a token request it has in flight
    /// finishes and is stored first), the stored session is signed out by a client of no
    /// store (its refresh token revoked; nothing written back that could outlive the
    /// removal) and removed from the store. The end-session URL, if the provider has one.
    async fn end_session(
        &self,
        id: &str,
        post_logout_redirect_uri: Option<&str>,
    ) -> Result<Option<String>, ServerError> {
        let key = session_key(id);
        let resident = lock(&self.sessions).remove(id);
        if let Some(client) = resident.as_ref().and_then(|r| r.client.get()) {
            client.close().await;
        }
        let Some(json) = self.store.get(&key).await? else { return Ok(None) };
        let mut end_session = None;
        let detached = Snapshot::from_json(&json).ok().and_then(|s| self.provider.client().snapshot(s).build().ok());
        if let Some(client) = detached {
            // Dropped after: its revocation finishes in the background.
            end_session = client.sign_out(post_logout_redirect_uri).await.ok().flatten();
        }
        self.store.remove(&key).await?;
        Ok(end_session)
    }
}

enum Load {
    /// The stored session cannot be restored (corrupt, another client's): not signed in.
    Unusable,
    Failed(ServerError),
}
