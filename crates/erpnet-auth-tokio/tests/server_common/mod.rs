//! What the server layer's tests share: a fake identity server and Domain API on a real
//! loopback socket (it counts what reaches it), a store that counts its commands, the app
//! under test on another socket, and a browser whose cookies the test handles by hand.
#![allow(dead_code)]

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use erpnet_auth::{config::ProviderMetadata, Config};
use erpnet_auth_tokio::server::{ServerAuth, ServerAuthBuilder, SignedIn};
use erpnet_auth_tokio::store::{Lease, MemoryStore, SessionStore, StoreError, StoreFuture, Write};
use erpnet_auth_tokio::SharedProvider;

pub const REDIRECT: &str = "http://localhost/signin-callback";
pub const APP: &str = "http://localhost";

/// What reached the fake identity server and API.
#[derive(Default)]
pub struct Counts {
    pub code_exchanges: AtomicUsize,
    pub refreshes: AtomicUsize,
    pub revocations: AtomicUsize,
    pub api_calls: AtomicUsize,
    /// Every request, whatever its path.
    pub requests: AtomicUsize,
    /// The refresh tokens revoked.
    pub revoked: Mutex<Vec<String>>,
}

impl Counts {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// The JSON the fake API answers, gzip-compressed on the wire.
pub const CUSTOMERS: &str = r#"{"value":[{"Id":"1","Name":"Ada"},{"Id":"2","Name":"Grace"}]}"#;

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

async fn token(State(counts): State<Arc<Counts>>, body: String) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let grant = form.iter().find(|(k, _)| k == "grant_type").map(|(_, v)| v.as_str()).unwrap_or_default();
    let serial = match grant {
        "authorization_code" => {
            // Slow enough that a double submit arrives while the first exchange runs.
            tokio::time::sleep(Duration::from_millis(200)).await;
            counts.code_exchanges.fetch_add(1, Ordering::SeqCst)
        }
        "refresh_token" => counts.refreshes.fetch_add(1, Ordering::SeqCst) + 1_000,
        _ => return (StatusCode::BAD_REQUEST, r#"{"error":"unsupported_grant_type"}"#).into_response(),
    };
    let body = serde_json::json!({
        "access_token": format!("access-{serial}"),
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": format!("refresh-{serial}"),
        "scope": "read",
    });
    ([("content-type", "application/json"), ("cache-control", "no-store")], body.to_string()).into_response()
}

async fn revoke(State(counts): State<Arc<Counts>>, body: String) -> StatusCode {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    counts.revocations.fetch_add(1, Ordering::SeqCst);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    if let Some((_, token)) = form.iter().find(|(k, _)| k == "token") {
        counts.revoked.lock().unwrap().push(token.clone());
    }
    StatusCode::OK
}

/// IIS-like: compresses, and sends headers that describe its own connection and origin.
async fn customers(State(counts): State<Arc<Counts>>, headers: HeaderMap) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    counts.api_calls.fetch_add(1, Ordering::SeqCst);
    if !headers.get("authorization").is_some_and(|v| v.to_str().unwrap_or_default().starts_with("Bearer access-")) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body = gzip(CUSTOMERS);
    (
        [
            ("content-type", "application/json; odata.metadata=minimal"),
            ("content-encoding", "gzip"),
            ("set-cookie", "ARRAffinity=upstream; Path=/"),
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("x-upstream-hop", "1"),
            ("connection", "x-upstream-hop"),
            ("odata-version", "4.0"),
        ],
        body,
    )
        .into_response()
}

/// The fake identity server and API on a loopback port.
pub struct FakeProvider {
    pub root: String,
    pub counts: Arc<Counts>,
}

impl FakeProvider {
    pub async fn start() -> FakeProvider {
        let counts = Arc::new(Counts::default());
        let app = Router::new()
            .route("/id/token", post(token))
            .route("/id/revoke", post(revoke))
            .route("/api/Crm_Sales_Customers", get(customers))
            .with_state(Arc::clone(&counts));
        let root = serve(app).await;
        FakeProvider { root, counts }
    }

    /// A confidential client of it with fixed endpoints (nothing is discovered) and no
    /// `openid` (no ID token to check).
    pub fn config(&self) -> Config {
        let root = &self.root;
        let metadata =
            ProviderMetadata::new(format!("{root}/id"), format!("{root}/id/authorize"), format!("{root}/id/token"))
                .with_revocation_endpoint(format!("{root}/id/revoke"));
        Config::with_endpoints(metadata)
            .client_id("my.app")
            .client_secret("my-secret")
            .redirect_uri(REDIRECT)
            .scope("read")
            .api_root(format!("{root}/api/"))
            .snapshot_provider(false)
            .build()
            .unwrap()
    }

    pub fn server_auth(&self) -> ServerAuthBuilder {
        ServerAuth::builder(SharedProvider::new(self.config()).unwrap(), REDIRECT)
    }
}

/// Serves `app` on a fresh loopback port; its root URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://127.0.0.1:{port}")
}

/// A store that counts its commands (and can be made to fail them all).
#[derive(Default)]
pub struct CountingStore {
    inner: MemoryStore,
    pub gets: AtomicUsize,
    pub sets: AtomicUsize,
    pub removes: AtomicUsize,
    pub locks: AtomicUsize,
    pub keys: Mutex<Vec<String>>,
    pub down: std::sync::atomic::AtomicBool,
}

impl CountingStore {
    pub fn writes(&self) -> usize {
        Counts::get(&self.sets) + Counts::get(&self.removes) + Counts::get(&self.locks)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable { command: "get", reason: "connection refused".into() })
        } else {
            Ok(())
        }
    }

    /// The keys set and not removed since.
    pub fn live_keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().clone()
    }
}

impl SessionStore for CountingStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.check()?;
            self.inner.get(key).await
        })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a str, write: Option<Write>) -> StoreFuture<'a, bool> {
        self.sets.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.check()?;
            let written = self.inner.set(key, value, write).await?;
            let mut keys = self.keys.lock().unwrap();
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_owned());
            }
            Ok(written)
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.removes.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.check()?;
            self.keys.lock().unwrap().retain(|k| k != key);
            self.inner.remove(key).await
        })
    }

    fn lock<'a>(&'a self, name: &'a str, lease: Duration, wait: Duration) -> StoreFuture<'a, Lease> {
        self.locks.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            self.check()?;
            self.inner.lock(name, lease, wait).await
        })
    }

    fn unlock<'a>(&'a self, name: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        self.inner.unlock(name, lease)
    }
}

/// The app under test: a home page that names the user, a page that calls the API as the
/// user, and the server layer's routes.
pub fn app(auth: ServerAuth) -> Router {
    async fn home(user: Option<SignedIn>) -> &'static str {
        if user.is_some() {
            "signed in"
        } else {
            "welcome"
        }
    }
    async fn customers(user: SignedIn) -> Result<Response, erpnet_auth_tokio::server::ServerError> {
        user.forward(erpnet_auth::ApiRequest::get("Crm_Sales_Customers")).await
    }
    Router::new().route("/", get(home)).route("/customers", get(customers)).merge(auth.router()).with_state(auth)
}

/// A browser that follows no redirect and sends the cookies it is told to.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The `Set-Cookie` values of a response.
pub fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// `name=value` of the response's cookie `name`, if it sets one.
pub fn cookie_pair(response: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(response)
        .into_iter()
        .map(|c| c.split(';').next().unwrap().trim().to_owned())
        .find(|pair| pair.split_once('=').is_some_and(|(n, _)| n == name))
}

/// The query parameter `name` of `url`.
pub fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url).unwrap().query_pairs().find(|(n, _)| n == name).map(|(_, v)| v.into_owned())
}

/// A started sign-in: the pending cookie (`name=value`) and the state the provider would
/// send back.
pub struct Started {
    pub pending: String,
    pub state: String,
}

pub async fn start_sign_in(browser: &reqwest::Client, app: &str, cookie: Option<&str>) -> Started {
    let mut request = browser.get(format!("{app}/login"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let pending = cookie_pair(&response, "erpnet-session-signin").expect("a pending sign-in cookie");
    Started { pending, state: param(&location, "state").unwrap() }
}

/// The callback of a started sign-in with `code`, sending `cookies`.
pub async fn callback(browser: &reqwest::Client, app: &str, cookies: &str, query: &str) -> reqwest::Response {
    browser.get(format!("{app}/signin-callback?{query}")).header("cookie", cookies).send().await.unwrap()
}

/// Signs in through the app; the session cookie (`name=value`).
pub async fn sign_in(browser: &reqwest::Client, app: &str) -> String {
    let started = start_sign_in(browser, app, None).await;
    let response = callback(browser, app, &started.pending, &format!("code=the-code&state={}", started.state)).await;
    assert_eq!(response.status(), 302, "{:?}", response.text().await);
    cookie_pair(&response, "erpnet-session").expect("a session cookie")
}
