//! The axum server layer over real loopback sockets against a fake identity server and a
//! compressing Domain API: what it keeps, what it sends, what it refuses.
#![cfg(feature = "axum")]

mod server_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use erpnet_auth_tokio::server::{ServerAuth, ServerConfigError};
use erpnet_auth_tokio::store::SessionStore;
use erpnet_auth_tokio::SharedProvider;
use server_common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

struct Setup {
    provider: FakeProvider,
    store: Arc<CountingStore>,
    auth: ServerAuth,
    app: String,
    browser: reqwest::Client,
}

async fn setup(
    configure: impl FnOnce(erpnet_auth_tokio::server::ServerAuthBuilder) -> erpnet_auth_tokio::server::ServerAuthBuilder,
) -> Setup {
    let provider = FakeProvider::start().await;
    let store = Arc::new(CountingStore::default());
    let auth = configure(provider.server_auth().store(store.clone())).build().unwrap();
    let app = serve(app(auth.clone())).await;
    Setup { provider, store, auth, app, browser: browser() }
}

/// Waits (at most 5 s) for `condition`, which a request still in flight makes true.
async fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

fn has(cookie: &str, attribute: &str) -> bool {
    cookie.split(';').any(|part| part.trim().eq_ignore_ascii_case(attribute))
}

#[tokio::test]
async fn login_keeps_nothing_on_the_server_and_seals_the_pending_sign_in() {
    let s = setup(|b| b).await;
    let mut sizes = Vec::new();
    for _ in 0..200 {
        let response = s.browser.get(format!("{}/login", s.app)).send().await.unwrap();
        assert_eq!(response.status(), 302);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with(&format!("{}/id/authorize?", s.provider.root)), "{location}");
        assert_eq!(param(&location, "redirect_uri").as_deref(), Some(REDIRECT));
        let cookies = set_cookies(&response);
        assert_eq!(cookies.len(), 1, "only the pending sign-in's cookie: {cookies:?}");
        let pending = &cookies[0];
        assert!(pending.starts_with("erpnet-session-signin="), "{pending}");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=900"] {
            assert!(has(pending, attribute), "{pending} lacks {attribute}");
        }
        assert!(!has(pending, "Secure"), "plain-HTTP loopback: {pending}");
        // The sealed value names none of the secrets it carries.
        let value = pending.split(';').next().unwrap();
        for secret in [param(&location, "state").unwrap(), param(&location, "nonce").unwrap()] {
            assert!(!value.contains(&secret));
        }
        sizes.push(value.len());
    }
    assert_eq!(s.store.gets.load(Ordering::SeqCst) + s.store.writes(), 0, "no store command for /login");
    assert_eq!(s.auth.sessions_in_memory(), 0);
    assert_eq!(s.auth.callbacks_in_memory(), 0);
    assert_eq!(Counts::get(&s.provider.counts.requests), 0, "no identity-server request (fixed endpoints)");
    println!("# pending sign-in cookie: {} bytes; 200 /login: 0 store commands, 0 sessions in memory", sizes[0]);
}

#[tokio::test]
async fn a_sign_in_rotates_into_a_new_session_stored_without_provider_documents() {
    let s = setup(|b| b).await;
    // A cookie planted before the sign-in (an attacker's id) comes along to /login.
    let planted = format!("erpnet-session={}", "A".repeat(43));
    let started = start_sign_in(&s.browser, &s.app, Some(&planted)).await;
    let response = callback(
        &s.browser,
        &s.app,
        &format!("{}; {planted}", started.pending),
        &format!("code=c1&state={}", started.state),
    )
    .await;
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "/");
    let cookies = set_cookies(&response);
    let session = cookies.iter().find(|c| c.starts_with("erpnet-session=")).expect("the session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(has(session, attribute), "{session} lacks {attribute}");
    }
    let cleared = cookies.iter().find(|c| c.starts_with("erpnet-session-signin=")).expect("the pending cookie cleared");
    assert!(has(cleared, "Max-Age=0"), "{cleared}");
    let cookie = session.split(';').next().unwrap().to_owned();
    assert_ne!(cookie, planted, "the id was drawn at sign-in, not taken from the browser");
    let id = cookie.strip_prefix("erpnet-session=").unwrap();
    assert_eq!(id.len(), 43);
    assert_eq!(s.store.live_keys(), [format!("session:{id}")], "one key, the new session's");
    let stored = s.store.get(&format!("session:{id}")).await.unwrap().unwrap();
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(stored.get("tokens").is_some());
    for member in ["metadata", "jwks", "sites", "pending"] {
        assert!(stored.get(member).is_none(), "{member} stored");
    }
    let customers = s.browser.get(format!("{}/customers", s.app)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(customers.status(), 200);
    let ride = s.browser.get(format!("{}/customers", s.app)).header("cookie", &planted).send().await.unwrap();
    assert_eq!(ride.status(), 401, "the planted id reads nothing");
}

#[tokio::test]
async fn a_wrong_state_keeps_the_sign_in_in_progress() {
    let s = setup(|b| b).await;
    let started = start_sign_in(&s.browser, &s.app, None).await;
    let forged = callback(&s.browser, &s.app, &started.pending, "code=evil&state=forged").await;
    assert_eq!(forged.status(), 400);
    assert!(set_cookies(&forged).is_empty(), "the pending sign-in is not cleared");
    assert_eq!(forged.text().await.unwrap(), r#"{"code":"state_mismatch"}"#);
    assert_eq!(Counts::get(&s.provider.counts.code_exchanges), 0);
    let real = callback(&s.browser, &s.app, &started.pending, &format!("code=c1&state={}", started.state)).await;
    assert_eq!(real.status(), 302, "the real callback still completes the sign-in");
    // Without the pending cookie, or with one that does not open: nothing to complete.
    let none = s.browser.get(format!("{}/signin-callback?code=c&state=s", s.app)).send().await.unwrap();
    assert_eq!(none.text().await.unwrap(), r#"{"code":"no_sign_in"}"#);
    let tampered = callback(&s.browser, &s.app, "erpnet-session-signin=AAAA", "code=c&state=s").await;
    assert_eq!(tampered.status(), 400);
    assert_eq!(tampered.text().await.unwrap(), r#"{"code":"no_sign_in"}"#);
}

#[tokio::test]
async fn the_same_callback_twice_exchanges_the_code_once() {
    let s = setup(|b| b).await;
    let started = start_sign_in(&s.browser, &s.app, None).await;
    let query = format!("code=once&state={}", started.state);
    let (first, second) = tokio::join!(
        callback(&s.browser, &s.app, &started.pending, &query),
        callback(&s.browser, &s.app, &started.pending, &query)
    );
    assert_eq!((first.status(), second.status()), (reqwest::StatusCode::FOUND, reqwest::StatusCode::FOUND));
    let (a, b) = (cookie_pair(&first, "erpnet-session"), cookie_pair(&second, "erpnet-session"));
    assert!(a.is_some() && a == b, "both get the one session: {a:?} {b:?}");
    // A late repeat (a retried redirect) is answered the same, still without a new exchange.
    let late = callback(&s.browser, &s.app, &started.pending, &query).await;
    assert_eq!(cookie_pair(&late, "erpnet-session"), a);
    assert_eq!(Counts::get(&s.provider.counts.code_exchanges), 1, "one code exchange");
    assert_eq!(s.store.live_keys().len(), 1, "one session");
}

#[tokio::test]
async fn visitors_who_did_not_sign_in_cost_nothing() {
    let s = setup(|b| b).await;
    let planted = format!("erpnet-session={}", "A".repeat(43));
    let mut cookies = 0;
    for batch in 0..20 {
        let requests = (0..100).map(|i| {
            let request = s.browser.get(format!("{}/{}", s.app, if i % 2 == 0 { "" } else { "customers" }));
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                (status, set_cookies(&response).len())
            }
        });
        for (status, set) in futures_join_all(requests).await {
            assert!(status == 200 || status == 401, "batch {batch}: {status}");
            cookies += set;
        }
    }
    assert_eq!(cookies, 0, "no cookie for a visitor who did not ask to sign in");
    assert_eq!(s.store.gets.load(Ordering::SeqCst) + s.store.writes(), 0, "no store command without a cookie");
    // A planted (unknown) id and a malformed one: one look-up each, nothing created.
    for cookie in [planted.clone(), "erpnet-session=short".into(), format!("{planted}; {planted}")] {
        let response = s.browser.get(format!("{}/customers", s.app)).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(set_cookies(&response).is_empty());
        assert_eq!(response.text().await.unwrap(), r#"{"code":"not_signed_in"}"#);
    }
    assert_eq!(s.store.gets.load(Ordering::SeqCst), 1, "only the well-formed single id was looked up");
    assert_eq!(s.store.writes(), 0);
    assert_eq!(s.auth.sessions_in_memory(), 0);
    assert_eq!(Counts::get(&s.provider.counts.requests), 0, "no identity-server request");
    println!("# 2,000 cookieless requests: {cookies} cookies, 0 store commands, 0 identity-server requests");
}

/// `join_all` without a futures dependency: spawned and awaited in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn the_cookie_is_read_exactly() {
    let s = setup(|b| b).await;
    let cookie = sign_in(&s.browser, &s.app).await;
    let value = cookie.strip_prefix("erpnet-session=").unwrap();
    let status = |c: String| {
        let request = s.browser.get(format!("{}/customers", s.app)).header("cookie", c);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(format!("noterpnet-session={value}")).await, 401, "another name ending in ours");
    assert_eq!(status(format!("other=1; erpnet-session={value}")).await, 200);
    assert_eq!(status(format!("erpnet-session={value}; erpnet-session={}", "B".repeat(43))).await, 401, "twice");
    assert_eq!(status(format!("erpnet-session={value}x")).await, 401, "not an id's shape");
}

#[tokio::test]
async fn sign_out_is_post_from_the_apps_own_origin_only() {
    let s = setup(|b| b.after_sign_out("/bye")).await;
    let cookie = sign_in(&s.browser, &s.app).await;
    let logout = format!("{}/logout", s.app);
    let forged =
        s.browser.post(&logout).header("cookie", &cookie).header("origin", "https://evil.example").send().await;
    let forged = forged.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(forged.text().await.unwrap(), r#"{"code":"cross_origin"}"#);
    let sneaky = s.browser.post(&logout).header("cookie", &cookie).header("sec-fetch-site", "cross-site").send().await;
    assert_eq!(sneaky.unwrap().status(), 403, "no Origin, and not same-origin");
    let bare = s.browser.post(&logout).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(bare.status(), 403, "neither header: refused");
    let via_get = s.browser.get(&logout).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(via_get.status(), 405, "a link or an image cannot sign the user out");
    let customers = || s.browser.get(format!("{}/customers", s.app)).header("cookie", &cookie).send();
    assert_eq!(customers().await.unwrap().status(), 200, "still signed in");
    assert_eq!(Counts::get(&s.provider.counts.revocations), 0);

    let own = s.browser.post(&logout).header("cookie", &cookie).header("origin", APP).send().await.unwrap();
    assert_eq!(own.status(), 303);
    assert_eq!(own.headers()["location"], "/bye");
    let cleared = cookie_pair(&own, "erpnet-session").unwrap();
    assert_eq!(cleared, "erpnet-session=");
    assert!(set_cookies(&own).iter().any(|c| has(c, "Max-Age=0")));
    assert!(eventually(|| Counts::get(&s.provider.counts.revocations) == 1).await, "the refresh token revoked");
    assert!(s.store.live_keys().is_empty(), "the session removed from the store");
    assert_eq!(customers().await.unwrap().status(), 401, "signed out");
    let same_origin_fetch =
        s.browser.post(&logout).header("cookie", &cookie).header("sec-fetch-site", "same-origin").send().await;
    assert_eq!(same_origin_fetch.unwrap().status(), 303, "Sec-Fetch-Site: same-origin without Origin is ours");
}

#[tokio::test]
async fn a_cross_site_login_ends_the_session_only_when_the_new_sign_in_completes() {
    let s = setup(|b| b).await;
    let old = sign_in(&s.browser, &s.app).await;
    // A page elsewhere sends the signed-in browser to /login (top-level GET: the Lax cookie comes).
    let started = start_sign_in(&s.browser, &s.app, Some(&old)).await;
    let customers = |cookie: String| {
        let request = s.browser.get(format!("{}/customers", s.app)).header("cookie", cookie);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(customers(old.clone()).await, 200, "the session survives the cross-site /login");
    assert_eq!(Counts::get(&s.provider.counts.revocations), 0);
    // The user completes that sign-in after all: the old session ends properly.
    let done = callback(
        &s.browser,
        &s.app,
        &format!("{}; {old}", started.pending),
        &format!("code=c2&state={}", started.state),
    )
    .await;
    assert_eq!(done.status(), 302);
    let new = cookie_pair(&done, "erpnet-session").unwrap();
    assert_ne!(new, old);
    assert_eq!(customers(old).await, 401, "the old session ended");
    assert_eq!(customers(new.clone()).await, 200);
    let revoked = || s.provider.counts.revoked.lock().unwrap().clone();
    assert!(eventually(|| revoked() == ["refresh-0"]).await, "its refresh token revoked: {:?}", revoked());
    let id = new.strip_prefix("erpnet-session=").unwrap();
    assert_eq!(s.store.live_keys(), [format!("session:{id}")], "only the new session is stored");
}

#[tokio::test]
async fn idle_sessions_leave_memory_and_come_back_from_the_store() {
    let s = setup(|b| b.idle_timeout(Duration::from_millis(150)).max_sessions_in_memory(2)).await;
    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(sign_in(&s.browser, &s.app).await);
    }
    for cookie in &users {
        let response = s.browser.get(format!("{}/customers", s.app)).header("cookie", cookie).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(s.auth.sessions_in_memory() <= 2, "at most 2 in memory: {}", s.auth.sessions_in_memory());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.auth.sessions_in_memory(), 0, "idle ones dropped");
    let response = s.browser.get(format!("{}/customers", s.app)).header("cookie", &users[0]).send().await.unwrap();
    assert_eq!(response.status(), 200, "reloaded from the store");
    assert_eq!(s.auth.sessions_in_memory(), 1);
    assert_eq!(Counts::get(&s.provider.counts.refreshes), 0, "its tokens came back with it");
}

#[tokio::test]
async fn an_api_answer_handed_on_keeps_only_the_headers_that_describe_it() {
    let s = setup(|b| b).await;
    let cookie = sign_in(&s.browser, &s.app).await;
    let address = s.app.strip_prefix("http://").unwrap();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut reader = BufReader::new(stream);
    // Two requests on one kept-alive connection: the first answer's framing must be exact,
    // or the second is read from the wrong place.
    for round in 0..2 {
        let request =
            format!("GET /customers HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\nCookie: {cookie}\r\n\r\n");
        reader.get_mut().write_all(request.as_bytes()).await.unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK\r\n", "round {round}");
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.trim_end().split_once(": ").unwrap();
            headers.push((name.to_ascii_lowercase(), value.to_owned()));
        }
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        for gone in [
            "set-cookie",
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "x-upstream-hop",
            "transfer-encoding",
        ] {
            assert!(!names.contains(&gone), "{gone} handed on: {names:?}");
        }
        assert_eq!(header("content-type"), Some("application/json; odata.metadata=minimal"));
        assert_eq!(header("odata-version"), Some("4.0"));
        assert_eq!(header("content-encoding"), Some("gzip"), "the body is as the API sent it");
        let length: usize = header("content-length").expect("a length").parse().unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.unwrap();
        let mut decoded = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut decoded).unwrap();
        assert_eq!(decoded, CUSTOMERS, "the declared encoding and length describe the bytes");
    }
    assert_eq!(Counts::get(&s.provider.counts.api_calls), 2);
}

#[tokio::test]
async fn failures_are_plain_typed_answers() {
    let s = setup(|b| b).await;
    let cookie = sign_in(&s.browser, &s.app).await;
    let started = start_sign_in(&s.browser, &s.app, None).await;
    s.auth.close().await; // nothing in memory: the next request needs the store
    s.store.down.store(true, Ordering::SeqCst);
    let response = s.browser.get(format!("{}/customers", s.app)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), r#"{"code":"storage_unavailable"}"#);
    // A sign-in whose tokens cannot be stored: refused, and the grant given back.
    let done = callback(&s.browser, &s.app, &started.pending, &format!("code=c3&state={}", started.state)).await;
    assert_eq!(done.status(), 503);
    assert_eq!(done.text().await.unwrap(), r#"{"code":"storage_unavailable"}"#);
    let revoked = || s.provider.counts.revoked.lock().unwrap().clone();
    assert!(eventually(|| revoked() == ["refresh-1"]).await, "the grant given back: {:?}", revoked());
    s.store.down.store(false, Ordering::SeqCst);
    let back = s.browser.get(format!("{}/customers", s.app)).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(back.status(), 200, "service resumes with the store");
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_at_construction() {
    let provider = FakeProvider::start().await;
    let build = |redirect: &str| ServerAuth::builder(SharedProvider::new(provider.config()).unwrap(), redirect);
    assert_eq!(build("http://app.example/cb").build().unwrap_err(), ServerConfigError::InsecureUrl);
    assert_eq!(build("not a url").build().unwrap_err(), ServerConfigError::InvalidUrl("redirect_uri"));
    assert_eq!(build(REDIRECT).cookie_name("__Host-x").build().unwrap_err(), ServerConfigError::HostCookieNeedsHttps);
    assert_eq!(build(REDIRECT).cookie_name("a;b").build().unwrap_err(), ServerConfigError::InvalidCookieName);
    assert_eq!(build(REDIRECT).login_path("/signin-callback").build().unwrap_err().code(), "invalid_config");
    let https = build("https://app.example/signin-callback").build().unwrap();
    assert_eq!(https.cookie_name(), "__Host-erpnet-session");
    assert_eq!(https.pending_cookie_name(), "__Host-erpnet-session-signin");
    // The provider's configuration names another redirect URI: /login says so, plainly.
    let mismatched = serve(app(build("http://localhost/other-callback").build().unwrap())).await;
    let response = browser().get(format!("{mismatched}/login")).send().await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().await.unwrap(), r#"{"code":"config_mismatch"}"#);
}

#[tokio::test]
async fn over_https_the_cookies_are_secure_and_host_prefixed() {
    let provider = FakeProvider::start().await;
    let config = erpnet_auth::Config::with_endpoints(erpnet_auth::config::ProviderMetadata::new(
        format!("{}/id", provider.root),
        format!("{}/id/authorize", provider.root),
        format!("{}/id/token", provider.root),
    ))
    .client_id("my.app")
    .client_secret("my-secret")
    .redirect_uri("https://app.example/signin-callback")
    .scope("read")
    .build()
    .unwrap();
    let auth = ServerAuth::builder(SharedProvider::new(config).unwrap(), "https://app.example/signin-callback")
        .build()
        .unwrap();
    let app = serve(app(auth)).await;
    let response = browser().get(format!("{app}/login")).send().await.unwrap();
    let cookies = set_cookies(&response);
    assert!(cookies[0].starts_with("__Host-erpnet-session-signin="), "{cookies:?}");
    assert!(has(&cookies[0], "Secure") && has(&cookies[0], "Path=/"), "{cookies:?}");
}

#[tokio::test]
async fn a_form_post_callback_completes_the_sign_in_with_a_cross_site_pending_cookie() {
    let provider = FakeProvider::start().await;
    let root = &provider.root;
    let metadata = erpnet_auth::config::ProviderMetadata::new(
        format!("{root}/id"),
        format!("{root}/id/authorize"),
        format!("{root}/id/token"),
    );
    let config = erpnet_auth::Config::with_endpoints(metadata)
        .client_id("my.app")
        .client_secret("my-secret")
        .redirect_uri(REDIRECT)
        .scope("read")
        .response_mode(erpnet_auth::config::ResponseMode::FormPost)
        .api_root(format!("{root}/api/"))
        .build()
        .unwrap();
    let auth = ServerAuth::builder(SharedProvider::new(config).unwrap(), REDIRECT).build().unwrap();
    let app = serve(app(auth)).await;
    let browser = browser();
    let login = browser.get(format!("{app}/login")).send().await.unwrap();
    let location = login.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(param(&location, "response_mode").as_deref(), Some("form_post"));
    let pending_cookie = set_cookies(&login).remove(0);
    // The provider's page POSTs cross-site: only a SameSite=None cookie comes along.
    assert!(has(&pending_cookie, "SameSite=None") && has(&pending_cookie, "Secure"), "{pending_cookie}");
    let pending = pending_cookie.split(';').next().unwrap().to_owned();
    let body = format!("code=posted&state={}", param(&location, "state").unwrap());
    let done = browser
        .post(format!("{app}/signin-callback"))
        .header("cookie", &pending)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let session = cookie_pair(&done, "erpnet-session").expect("a session cookie");
    let customers = browser.get(format!("{app}/customers")).header("cookie", &session).send().await.unwrap();
    assert_eq!(customers.status(), 200);
    assert_eq!(Counts::get(&provider.counts.code_exchanges), 1);
}

/// The process's resident memory, bytes (Linux), for the printed figure only.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// 2,000 by default; `SERVER_LOGINS=20000` for issue 23's figure.
#[tokio::test]
async fn cookieless_logins_leave_no_key_and_nothing_in_memory() {
    let s = setup(|b| b).await;
    let total: usize = std::env::var("SERVER_LOGINS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let login = || {
        let request = s.browser.get(format!("{}/login", s.app));
        tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
    };
    // Warm: the allocator's and the connection pool's first growth is not the logins' cost.
    for handle in (0..100).map(|_| login()).collect::<Vec<_>>() {
        assert_eq!(handle.await.unwrap(), 302);
    }
    let memory_before = resident_bytes();
    let started = std::time::Instant::now();
    for _ in 0..total / 100 {
        for handle in (0..100).map(|_| login()).collect::<Vec<_>>() {
            assert_eq!(handle.await.unwrap(), 302);
        }
    }
    let elapsed = started.elapsed();
    let memory_after = resident_bytes();
    assert_eq!(s.store.gets.load(Ordering::SeqCst) + s.store.writes(), 0, "no store command");
    assert!(s.store.live_keys().is_empty(), "no key");
    assert_eq!(s.auth.sessions_in_memory(), 0);
    assert_eq!(s.auth.callbacks_in_memory(), 0);
    let per_login = match (memory_before, memory_after) {
        (Some(before), Some(after)) => format!("{} B", after.saturating_sub(before) / total as u64),
        _ => "unknown".to_owned(),
    };
    println!(
        "# {total} cookieless /login in {} ms: 0 store keys, 0 store commands, 0 sessions and 0 callbacks in memory; resident memory grew {per_login} per login (the test process: client, server and allocator)",
        elapsed.as_millis()
    );
}
