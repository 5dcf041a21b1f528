//! The axum web app (this example) against the real test provider (tests/idp,
//! oidc-provider, with its Domain API) over real HTTP, as a user and as an attacker sees it:
//! the seed scenario, session fixation, cookie parsing, a cookieless crowd, sign-out CSRF,
//! a double-submitted callback. Needs Node and the npm tools: `make e2e` runs them
//! (`-- --ignored`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum_webapp::Settings;
use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::redis_server::RedisServer;
use erpnet_auth_test_support::test_provider::TestProvider;
use erpnet_auth_tokio::server::ServerAuth;
use erpnet_auth_tokio::store::{Lease, MemoryStore, SessionStore, StoreFuture, Write};
use serde_json::Value;

/// A store that counts what is written to it.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    writes: AtomicUsize,
}

impl SessionStore for CountingStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.get(key)
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str, write: Option<Write>) -> StoreFuture<'a, bool> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.set(key, value, write)
    }
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.remove(key)
    }
    fn lock<'a>(&'a self, name: &'a str, lease: Duration, wait: Duration) -> StoreFuture<'a, Lease> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.lock(name, lease, wait)
    }
    fn unlock<'a>(&'a self, name: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        self.inner.unlock(name, lease)
    }
}

struct Running {
    provider: TestProvider,
    store: Arc<CountingStore>,
    auth: ServerAuth,
    base: String,
    browser: reqwest::Client,
}

/// The example's settings for the test provider at `root`.
fn settings(root: &str) -> Settings {
    Settings {
        instance: Some(root.to_owned()),
        issuer: None,
        api_root: None,
        client_id: "my.trusted.app/first".into(),
        client_secret: "my-plain-app-secret".into(),
        redirect_uri: "http://localhost/signin-callback".into(),
        scope: None,
        post_logout_redirect_uri: None,
        redis_url: None,
        sealing_key: None,
        port: 0,
    }
}

async fn start_provider() -> TestProvider {
    tokio::task::spawn_blocking(|| TestProvider::start(3600))
        .await
        .expect("join")
        .expect("the test provider (run `make setup`)")
}

/// Serves the example's app on `auth` on a loopback port; its base URL.
async fn serve(auth: ServerAuth) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum_webapp::app(auth);
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// The provider, and the example's app on a loopback port as `serve_from_env` runs it.
async fn start() -> Running {
    let provider = start_provider().await;
    let store = Arc::new(CountingStore::default());
    let auth = settings(&provider.root).server_auth(Some(store.clone())).await.expect("server auth");
    let base = serve(auth.clone()).await;
    Running { provider, store, auth, base, browser: browser() }
}

async fn stats(provider: &TestProvider) -> Value {
    let answer = reqwest::get(format!("{}/test/stats", provider.root)).await.expect("stats");
    serde_json::from_slice(&answer.bytes().await.expect("body")).expect("json")
}

fn count(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or(0)
}

fn provider_requests(stats: &Value) -> u64 {
    count(stats, "discoveryRequests") + count(stats, "keysRequests") + count(stats, "tokenRequests")
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all("set-cookie").iter().map(|v| v.to_str().expect("ascii").to_owned()).collect()
}

fn cookie_pair(response: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(response)
        .into_iter()
        .map(|c| c.split(';').next().unwrap_or_default().trim().to_owned())
        .find(|pair| pair.split_once('=').is_some_and(|(n, v)| n == name && !v.is_empty()))
}

impl Running {
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut request = self.browser.get(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send().await.expect("the app answers")
    }

    /// `/login` with the browser's `cookie`, then the provider's pages as `user`: the
    /// pending cookie and the callback's query, not yet sent to the app.
    async fn to_provider_and_back(&self, cookie: Option<&str>, user: &'static str) -> (String, String) {
        let login = self.get("/login", cookie).await;
        assert_eq!(login.status(), 302);
        assert!(cookie_pair(&login, "erpnet-session").is_none(), "/login sets no session cookie");
        let pending = cookie_pair(&login, "erpnet-session-signin").expect("the pending sign-in cookie");
        let url = login.headers()["location"].to_str().expect("ascii").to_owned();
        let back = tokio::task::spawn_blocking(move || sign_in_headless(&url, user)).await.expect("join");
        let BrowserReturn::Redirect(back) = back.expect("login at the provider") else { panic!("form_post") };
        let query = url::Url::parse(&back).expect("url").query().expect("a query").to_owned();
        (pending, query)
    }

    /// Signs `user` in through the app and the provider's pages; the session cookie.
    async fn sign_in(&self, user: &'static str) -> String {
        let (pending, query) = self.to_provider_and_back(None, user).await;
        let done = self.get(&format!("/signin-callback?{query}"), Some(&pending)).await;
        assert_eq!(done.status(), 302);
        assert_eq!(done.headers()["location"], "/customers");
        cookie_pair(&done, "erpnet-session").expect("a session cookie")
    }
}

#[tokio::test]
#[ignore = "needs the test provider: make e2e"]
async fn the_seed_scenario_through_the_providers_pages() {
    let app = start().await;
    let cookie = app.sign_in("alice").await;
    let home = app.get("/", Some(&cookie)).await.text().await.expect("body");
    assert!(home.starts_with("Signed in as alice."), "{home}");
    let customers = app.get("/customers", Some(&cookie)).await;
    assert_eq!(customers.status(), 200);
    assert!(set_cookies(&customers).is_empty(), "no upstream cookie on the app's origin");
    let body: Value = serde_json::from_slice(&customers.bytes().await.expect("body")).expect("the API's JSON");
    assert!(body["value"].is_array(), "{body}");
    let signed_in = stats(&app.provider).await;
    assert_eq!(count(&signed_in, "codeExchanges"), 1);
    assert_eq!(count(&signed_in, "grantsRevoked"), 0);
    assert_eq!(count(&signed_in, "discoveryRequests"), 1, "the provider discovered once per process");
    assert_eq!(count(&signed_in, "keysRequests"), 1, "its keys fetched once per process");
    let out = app
        .browser
        .post(format!("{}/logout", app.base))
        .header("cookie", &cookie)
        .header("origin", "http://localhost")
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 303);
    let location = out.headers()["location"].to_str().expect("ascii").to_owned();
    assert!(location.starts_with(&format!("{}/id/", app.provider.root)), "to the end-session endpoint: {location}");
    assert_eq!(app.get("/customers", Some(&cookie)).await.status(), 401, "signed out");
    // The sign-out revoked the refresh token (its request runs on after the answer).
    let mut revoked = 0;
    for _ in 0..100 {
        revoked = count(&stats(&app.provider).await, "grantsRevoked");
        if revoked == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(revoked, 1, "the grant ended with the sign-out");
}

#[tokio::test]
#[ignore = "needs the test provider: make e2e"]
async fn a_planted_cookie_is_worthless_and_the_cookie_is_parsed_exactly() {
    let app = start().await;
    // The attacker plants an id of the right shape in the victim's browser before sign-in.
    let planted = format!("erpnet-session={}", "A".repeat(43));
    let writes_before = app.store.writes.load(Ordering::SeqCst);
    let ride = app.get("/customers", Some(&planted)).await;
    assert_eq!(ride.status(), 401);
    assert!(set_cookies(&ride).is_empty());
    assert_eq!(app.store.writes.load(Ordering::SeqCst), writes_before, "nothing stored for it");
    assert_eq!(app.auth.sessions_in_memory(), 0, "nothing in memory for it");
    let (pending, query) = app.to_provider_and_back(Some(&planted), "victim").await;
    let done = app.get(&format!("/signin-callback?{query}"), Some(&format!("{pending}; {planted}"))).await;
    let victim = cookie_pair(&done, "erpnet-session").expect("the victim's session");
    assert_ne!(victim, planted, "the id was drawn at sign-in");
    assert_eq!(app.get("/customers", Some(&victim)).await.status(), 200);
    assert_eq!(app.get("/customers", Some(&planted)).await.status(), 401, "the planted id reads nothing");
    let value = victim.strip_prefix("erpnet-session=").expect("name");
    assert_eq!(app.get("/customers", Some(&format!("noterpnet-session={value}"))).await.status(), 401);
    assert_eq!(app.get("/customers", Some(&format!("other=1; erpnet-session={value}"))).await.status(), 200);
    let twice = format!("erpnet-session={value}; erpnet-session={}", "B".repeat(43));
    assert_eq!(app.get("/customers", Some(&twice)).await.status(), 401, "the name twice: no session");
}

#[tokio::test]
#[ignore = "needs the test provider: make e2e"]
async fn two_thousand_cookieless_visitors_cost_nothing() {
    let app = start().await;
    app.sign_in("alice").await; // the provider is discovered: the crowd meets a warm process
    let before = stats(&app.provider).await;
    let writes_before = app.store.writes.load(Ordering::SeqCst);
    let in_memory = app.auth.sessions_in_memory();
    let callbacks = app.auth.callbacks_in_memory();
    let started = std::time::Instant::now();
    let mut cookies = 0;
    for _ in 0..20 {
        let batch: Vec<_> = (0..100)
            .map(|_| {
                let request = app.browser.get(format!("{}/", app.base));
                tokio::spawn(async move {
                    let response = request.send().await.expect("home");
                    assert_eq!(response.status(), 200);
                    set_cookies(&response).len()
                })
            })
            .collect();
        for handle in batch {
            cookies += handle.await.expect("join");
        }
    }
    let elapsed = started.elapsed();
    let after = stats(&app.provider).await;
    assert_eq!(cookies, 0, "no cookie for a visitor who did not ask to sign in");
    assert_eq!(provider_requests(&after) - provider_requests(&before), 0, "no identity-server request");
    assert_eq!(app.store.writes.load(Ordering::SeqCst), writes_before, "nothing stored");
    assert_eq!(app.auth.sessions_in_memory(), in_memory, "nothing in memory");
    println!(
        "# 2,000 cookieless requests in {} ms: {cookies} cookies, {} identity-server requests, 0 store writes",
        elapsed.as_millis(),
        provider_requests(&after) - provider_requests(&before)
    );
    // Even visitors who ask to sign in cost nothing until they come back: the pending
    // sign-in is in their cookie, and the provider is known to the process already.
    for _ in 0..200 {
        let login = app.get("/login", None).await;
        assert_eq!(login.status(), 302);
        assert!(cookie_pair(&login, "erpnet-session").is_none());
    }
    let logins = stats(&app.provider).await;
    assert_eq!(provider_requests(&logins) - provider_requests(&after), 0, "no identity-server request for /login");
    assert_eq!(app.store.writes.load(Ordering::SeqCst), writes_before, "nothing stored for /login");
    assert_eq!(app.auth.sessions_in_memory(), in_memory);
    assert_eq!(app.auth.callbacks_in_memory(), callbacks);
}

#[tokio::test]
#[ignore = "needs the test provider: make e2e"]
async fn sign_out_is_post_from_the_apps_own_origin_only() {
    let app = start().await;
    let cookie = app.sign_in("alice").await;
    let logout = format!("{}/logout", app.base);
    let forged = app
        .browser
        .post(&logout)
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), 403);
    assert_eq!(app.get("/logout", Some(&cookie)).await.status(), 405, "a link or an image cannot sign out");
    assert_eq!(app.get("/customers", Some(&cookie)).await.status(), 200, "still signed in");
    let own = app
        .browser
        .post(&logout)
        .header("cookie", &cookie)
        .header("origin", "http://localhost")
        .send()
        .await
        .expect("own");
    assert_eq!(own.status(), 303);
    assert!(set_cookies(&own).iter().any(|c| c.contains("Max-Age=0")));
    assert_eq!(app.get("/customers", Some(&cookie)).await.status(), 401, "signed out");
}

#[tokio::test]
#[ignore = "needs the test provider: make e2e"]
async fn a_double_submitted_callback_exchanges_the_code_once() {
    let app = start().await;
    let (pending, query) = app.to_provider_and_back(None, "alice").await;
    let path = format!("/signin-callback?{query}");
    let (first, second) = tokio::join!(app.get(&path, Some(&pending)), app.get(&path, Some(&pending)));
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (302, 302));
    let cookie = cookie_pair(&first, "erpnet-session");
    assert!(cookie.is_some());
    assert_eq!(cookie, cookie_pair(&second, "erpnet-session"), "both arrivals get the one session");
    let stats = stats(&app.provider).await;
    assert_eq!(count(&stats, "codeExchanges"), 1, "the code was sent once");
    assert_eq!(count(&stats, "grantsRevoked"), 0, "no replay, no revoked grant");
    let cookie = cookie.expect("session");
    assert_eq!(app.get("/customers", Some(&cookie)).await.status(), 200);
    // A wrong state later does not disturb anything either.
    assert_eq!(app.get("/signin-callback?code=x&state=forged", Some(&pending)).await.status(), 400);
}

#[tokio::test]
#[ignore = "needs the test provider and redis-server: make e2e"]
async fn two_processes_behind_one_load_balancer_share_sessions_through_redis() {
    let provider = start_provider().await;
    let redis = tokio::task::spawn_blocking(RedisServer::start).await.expect("join").expect("redis-server");
    // Two "processes": each its own provider, server layer and memory; Redis and the
    // sealing key shared, as REDIS_URL and ERP_SEALING_KEY give them.
    let shared =
        Settings { redis_url: Some(redis.url.clone()), sealing_key: Some([42; 32]), ..settings(&provider.root) };
    let a = serve(shared.server_auth(None).await.expect("a")).await;
    let b = serve(shared.server_auth(None).await.expect("b")).await;
    let browser = browser();
    let get = |base: &str, path: &str, cookie: &str| {
        let request = browser.get(format!("{base}{path}")).header("cookie", cookie);
        async move { request.send().await.expect("answer") }
    };
    // The sign-in starts on A and comes back to B: the pending sign-in is in the browser.
    let login = browser.get(format!("{a}/login")).send().await.expect("login");
    let pending = cookie_pair(&login, "erpnet-session-signin").expect("pending");
    let url = login.headers()["location"].to_str().expect("ascii").to_owned();
    let back = tokio::task::spawn_blocking(move || sign_in_headless(&url, "alice")).await.expect("join");
    let BrowserReturn::Redirect(back) = back.expect("login at the provider") else { panic!("form_post") };
    let query = url::Url::parse(&back).expect("url").query().expect("query").to_owned();
    let done = get(&b, &format!("/signin-callback?{query}"), &pending).await;
    assert_eq!(done.status(), 302);
    let cookie = cookie_pair(&done, "erpnet-session").expect("session");
    for node in [&a, &b, &a] {
        assert_eq!(get(node, "/customers", &cookie).await.status(), 200, "{node}");
    }
    // Signed out on B: A no longer serves the session.
    let out = browser
        .post(format!("{b}/logout"))
        .header("cookie", &cookie)
        .header("origin", "http://localhost")
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 303);
    assert_eq!(get(&a, "/customers", &cookie).await.status(), 401, "signed out everywhere");
    let stats = stats(&provider).await;
    assert_eq!(count(&stats, "codeExchanges"), 1);
}
