//! A client's life, on loopback without Node. Idle, it holds no task, yet its timer still
//! renews it. Ended by `close()` or by its last handle's drop, it lets a token request or a
//! revocation in flight finish (a rotated refresh token is never lost), stores what it
//! brought and gives the token lock back; new and waiting operations get `Closed`.
//! Sign-out resolves once its snapshot is stored. A call whose future is dropped (or whose
//! client is closed) while its own task sends its request gives that request up and frees
//! its place.
//!
//! The fake provider rotates refresh tokens and detects reuse as oidc-provider does: a
//! refresh token presented after it was rotated revokes the whole grant.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erpnet_auth_tokio::erpnet_auth::{
    config::ProviderMetadata, ApiRequest, Config, ConfigBuilder, Event, SignInOptions, Snapshot, Timing,
};
use erpnet_auth_tokio::store::{Lease, MemoryStore, SessionStore, StoreError, StoreFuture, Write};
use erpnet_auth_tokio::{Client, Error};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const REDIRECT: &str = "http://localhost/signin-callback";
const KEY: &str = "alice";
const LOCK: &str = "alice:token";

/// The grant as the fake provider sees it.
#[derive(Default)]
struct Grant {
    serial: usize,
    access: String,
    refresh: String,
    /// Refresh tokens rotated away: presenting one again revokes the grant.
    spent: Vec<String>,
    revoked: bool,
}

#[derive(Default)]
struct Provider {
    grant: Mutex<Grant>,
    /// The current access token is refused by the API (as after its expiry).
    expired: AtomicBool,
    refresh_delay_ms: AtomicUsize,
    /// The tokens' lifetime, seconds (an hour when 0).
    expires_in: AtomicUsize,
    revoke_delay_ms: AtomicUsize,
    api_delay_ms: AtomicUsize,
    api_received: AtomicUsize,
    refreshes_received: AtomicUsize,
    refreshes_answered: AtomicUsize,
    revocations_answered: AtomicUsize,
    /// Answers whose client went away before they were written.
    abandoned: AtomicUsize,
    grants_revoked: AtomicUsize,
}

struct Fake {
    root: String,
    state: Arc<Provider>,
}

impl Fake {
    async fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let root = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(Provider::default());
        let serving = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(stream, Arc::clone(&serving)));
            }
        });
        Fake { root, state }
    }

    fn config(&self) -> Config {
        self.config_with(Timing::default())
    }

    fn config_with(&self, timing: Timing) -> Config {
        self.config_builder(timing).build().expect("config")
    }

    fn config_builder(&self, timing: Timing) -> ConfigBuilder {
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
            .timing(timing)
    }

    fn current_refresh(&self) -> String {
        self.state.grant.lock().expect("grant").refresh.clone()
    }

    fn count(&self, counter: impl Fn(&Provider) -> &AtomicUsize) -> usize {
        counter(&self.state).load(Ordering::SeqCst)
    }
}

/// One kept-alive connection: requests answered in order.
async fn connection(mut stream: TcpStream, provider: Arc<Provider>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        let header = |name: &str| {
            head.lines().skip(1).find_map(|line| {
                let (n, v) = line.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buffer.len() < end + 4 + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
        buffer.drain(..end + 4 + length);
        let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let (delay, answered, status, extra, answer) =
            respond(&provider, &path, header("authorization").as_deref(), &body);
        if delay > 0 {
            // The answer waits; a client that goes away meanwhile is seen leaving.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(delay as u64)) => {}
                read = stream.read(&mut chunk) => {
                    if matches!(read, Ok(0) | Err(_)) {
                        provider.abandoned.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n{extra}content-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            provider.abandoned.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if let Some(answered) = answered {
            answered(&provider).fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Counter = fn(&Provider) -> &AtomicUsize;

/// The answer to one request: a delay (ms), the counter of answers written, status line,
/// extra headers, body.
fn respond(
    provider: &Provider,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (usize, Option<Counter>, &'static str, &'static str, String) {
    let form: Vec<(String, String)> = url_decode(body);
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut grant = provider.grant.lock().expect("grant");
    match path {
        "/id/token" => {
            let expires_in = match provider.expires_in.load(Ordering::SeqCst) {
                0 => 3600,
                seconds => seconds,
            };
            let issue = |grant: &mut Grant| {
                grant.serial += 1;
                grant.access = format!("access-{}", grant.serial);
                grant.refresh = format!("refresh-{}", grant.serial);
                format!(
                    r#"{{"access_token":"{}","token_type":"Bearer","expires_in":{expires_in},"refresh_token":"{}","scope":"read"}}"#,
                    grant.access, grant.refresh
                )
            };
            let invalid = r#"{"error":"invalid_grant"}"#.to_owned();
            match field("grant_type").as_str() {
                "authorization_code" => {
                    grant.revoked = false;
                    grant.spent.clear();
                    (0, None, "200 OK", "", issue(&mut grant))
                }
                "refresh_token" => {
                    provider.refreshes_received.fetch_add(1, Ordering::SeqCst);
                    let presented = field("refresh_token");
                    if grant.spent.contains(&presented) && !grant.revoked {
                        grant.revoked = true;
                        provider.grants_revoked.fetch_add(1, Ordering::SeqCst);
                    }
                    if grant.revoked || presented != grant.refresh {
                        return (0, None, "400 Bad Request", "", invalid);
                    }
                    // Rotated when received, as a real provider does: an answer that does not
                    // reach the client loses the new refresh token.
                    let old = std::mem::take(&mut grant.refresh);
                    grant.spent.push(old);
                    provider.expired.store(false, Ordering::SeqCst);
                    let delay = provider.refresh_delay_ms.load(Ordering::SeqCst);
                    (delay, Some(|p| &p.refreshes_answered), "200 OK", "", issue(&mut grant))
                }
                _ => (0, None, "400 Bad Request", "", r#"{"error":"unsupported_grant_type"}"#.to_owned()),
            }
        }
        "/id/revoke" => {
            if field("token") == grant.refresh {
                grant.revoked = true;
            }
            let delay = provider.revoke_delay_ms.load(Ordering::SeqCst);
            (delay, Some(|p| &p.revocations_answered), "200 OK", "", String::new())
        }
        _ if path.starts_with("/api/") => {
            provider.api_received.fetch_add(1, Ordering::SeqCst);
            let delay = provider.api_delay_ms.load(Ordering::SeqCst);
            let valid = !grant.revoked
                && !provider.expired.load(Ordering::SeqCst)
                && authorization.is_some_and(|value| value == format!("Bearer {}", grant.access));
            if valid {
                (delay, None, "200 OK", "", r#"{"value":[]}"#.to_owned())
            } else {
                (delay, None, "401 Unauthorized", "www-authenticate: Bearer error=\"invalid_token\"\r\n", String::new())
            }
        }
        _ => (0, None, "404 Not Found", "", String::new()),
    }
}

/// `application/x-www-form-urlencoded`, enough for what the client sends.
fn url_decode(body: &str) -> Vec<(String, String)> {
    let decode = |text: &str| {
        let bytes = text.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(byte) = u8::from_str_radix(hex, 16) {
                    out.push(byte);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn sign_in(client: &Client) {
    let url = client.sign_in(SignInOptions::new()).await.expect("sign-in URL");
    let state = url.split("state=").nth(1).and_then(|rest| rest.split('&').next()).expect("state");
    client.handle_callback(&format!("{REDIRECT}?code=the-code&state={state}")).await.expect("signed in");
}

async fn stored(store: &dyn SessionStore) -> Option<Snapshot> {
    let json = store.get(KEY).await.expect("get")?;
    Some(Snapshot::from_json(&json).expect("a snapshot"))
}

fn refresh_of(snapshot: &Snapshot) -> String {
    snapshot.tokens().and_then(|t| t.refresh_token()).map(|t| t.secret().to_owned()).expect("a refresh token")
}

/// Whether another process could take the token lock now.
async fn lock_is_free(store: &dyn SessionStore) -> bool {
    match store.lock(LOCK, Duration::from_secs(1), Duration::ZERO).await {
        Ok(lease) => {
            store.unlock(LOCK, lease).await.expect("unlock");
            true
        }
        Err(StoreError::LockTimeout) => false,
        Err(error) => panic!("{error:?}"),
    }
}

async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, future).await.expect("in time")
}

async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let give_up = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < give_up {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition().await
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

#[tokio::test]
async fn idle_clients_hold_no_task_and_wake_for_their_next_operation() {
    let fake = Fake::start().await;
    let first = Client::new(fake.config()).expect("client");
    sign_in(&first).await;
    let snapshot = first.snapshot().await.expect("snapshot");
    first.close().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = alive_tasks();
    let clients: Vec<Client> =
        (0..100).map(|_| Client::builder(fake.config()).snapshot(snapshot.clone()).build().expect("client")).collect();
    for client in &clients {
        assert!(client.is_signed_in().await);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(alive_tasks(), before, "100 idle signed-in clients, no task among them");
    // Each starts again for its next operation, and parks again after it.
    for client in &clients {
        assert!(client.claims().await.is_none(), "no ID token (plain OAuth)");
        assert!(client.snapshot().await.expect("snapshot").tokens().is_some());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(alive_tasks(), before);
    for client in &clients[..50] {
        within(Duration::from_secs(5), client.close()).await;
        assert_eq!(client.snapshot().await.map(|_| ()), Err(Error::Closed));
    }
    drop(clients);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(alive_tasks(), before);
}

#[tokio::test]
async fn an_idle_client_in_use_is_renewed_by_its_timer() {
    let fake = Fake::start().await;
    fake.state.expires_in.store(2, Ordering::SeqCst);
    let mut timing = Timing::default();
    timing.renew_before_ms = 1_000;
    timing.min_renewal_interval_ms = 0;
    let client = Client::new(fake.config_with(timing)).expect("client");
    sign_in(&client).await;
    // In use: its token is renewed a second before it expires, with no call waiting.
    let answer = client.call(ApiRequest::get("Crm_Sales_Customers")).await.expect("an answer");
    assert_eq!(answer.status, 200);
    assert_eq!(fake.count(|p| &p.refreshes_received), 0);
    assert!(
        eventually(Duration::from_secs(5), async || fake.count(|p| &p.refreshes_answered) == 1).await,
        "renewed by the timer"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = client.call(ApiRequest::get("Crm_Sales_Customers")).await.expect("an answer");
    assert_eq!(answer.status, 200, "with the renewed token");
    assert_eq!(fake.count(|p| &p.grants_revoked), 0);
    client.close().await;
}

/// A refresh in flight against a slow token endpoint when the client is ended (closed, or
/// its last handle dropped, as a server's idle eviction does).
async fn end_during_a_refresh(by_drop: bool) {
    let fake = Fake::start().await;
    let store = Arc::new(MemoryStore::new());
    let client = Client::builder(fake.config()).store(store.clone(), KEY).build().expect("client");
    sign_in(&client).await;
    let before = stored(store.as_ref()).await.expect("stored at sign-in");
    fake.state.refresh_delay_ms.store(500, Ordering::SeqCst);
    fake.state.expired.store(true, Ordering::SeqCst);
    let refresh_started = async {
        assert!(
            eventually(Duration::from_secs(5), async || fake.count(|p| &p.refreshes_received) == 1).await,
            "the 401 started a refresh"
        );
    };
    if by_drop {
        // A request cancelled and its session evicted: the call's future and the last handle go.
        let call = client.call(ApiRequest::get("Crm_Sales_Customers"));
        tokio::select! {
            answer = call => panic!("answered during the refresh: {answer:?}"),
            () = refresh_started => {}
        }
        drop(client);
        assert!(
            eventually(Duration::from_secs(5), async || stored(store.as_ref())
                .await
                .is_some_and(|s| refresh_of(&s) == fake.current_refresh()))
            .await,
            "the rotated tokens stored after the drop"
        );
        assert!(eventually(Duration::from_secs(5), async || lock_is_free(store.as_ref()).await).await);
    } else {
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await }
        });
        refresh_started.await;
        let closing = tokio::spawn({
            let client = client.clone();
            async move { client.close().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // While the refresh finishes: nothing new is taken on.
        assert_eq!(client.snapshot().await.map(|_| ()), Err(Error::Closed));
        assert_eq!(client.call(ApiRequest::get("Crm_Sales_Customers")).await.map(|_| ()), Err(Error::Closed));
        within(Duration::from_secs(5), closing).await.expect("join");
        assert_eq!(within(Duration::from_secs(5), call).await.expect("join").map(|_| ()), Err(Error::Closed));
        // close() returned once all of it was done.
        let after = stored(store.as_ref()).await.expect("still stored");
        assert_eq!(refresh_of(&after), fake.current_refresh(), "the rotated refresh token was stored");
        assert!(after.generation() > before.generation());
        assert!(lock_is_free(store.as_ref()).await, "the token lock was given back");
    }
    assert_eq!(fake.count(|p| &p.refreshes_answered), 1);
    assert_eq!(fake.count(|p| &p.abandoned), 0, "the refresh's answer was read");

    // Another client (process) carries on from the store without a new sign-in.
    let next = Client::builder(fake.config()).store(store.clone(), KEY).build().expect("client");
    let answer = within(Duration::from_secs(5), next.call(ApiRequest::get("Crm_Sales_Customers"))).await;
    assert_eq!(answer.expect("an answer").status, 200);
    assert_eq!(fake.count(|p| &p.refreshes_received), 1, "no second refresh");
    assert_eq!(fake.count(|p| &p.grants_revoked), 0);
    next.close().await;
}

#[tokio::test]
async fn close_during_a_refresh_lets_it_finish_and_stores_the_rotated_tokens() {
    end_during_a_refresh(false).await;
}

#[tokio::test]
async fn dropping_the_last_handle_during_a_refresh_lets_it_finish_and_stores_the_rotated_tokens() {
    end_during_a_refresh(true).await;
}

/// A memory store whose lock and unlock take time, as a remote store's do.
#[derive(Default)]
struct SlowStore {
    inner: MemoryStore,
    lock_delay_ms: AtomicUsize,
    unlock_delay_ms: AtomicUsize,
    locked: Notify,
    unlocks_started: AtomicUsize,
}

impl SessionStore for SlowStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        self.inner.get(key)
    }
    fn set<'a>(&'a self, key: &'a str, value: &'a str, write: Option<Write>) -> StoreFuture<'a, bool> {
        self.inner.set(key, value, write)
    }
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        self.inner.remove(key)
    }
    fn lock<'a>(&'a self, name: &'a str, lease: Duration, wait: Duration) -> StoreFuture<'a, Lease> {
        Box::pin(async move {
            let taken = self.inner.lock(name, lease, wait).await?;
            self.locked.notify_one();
            let delay = self.lock_delay_ms.load(Ordering::SeqCst) as u64;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Ok(taken)
        })
    }
    fn unlock<'a>(&'a self, name: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.unlocks_started.fetch_add(1, Ordering::SeqCst);
            let delay = self.unlock_delay_ms.load(Ordering::SeqCst) as u64;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            self.inner.unlock(name, lease).await
        })
    }
}

#[tokio::test]
async fn close_right_after_a_refresh_still_gives_the_lock_back() {
    let fake = Fake::start().await;
    let store = Arc::new(SlowStore::default());
    let client = Client::builder(fake.config()).store(store.clone(), KEY).build().expect("client");
    sign_in(&client).await;
    store.unlock_delay_ms.store(300, Ordering::SeqCst);
    let unlocks = store.unlocks_started.load(Ordering::SeqCst);
    fake.state.expired.store(true, Ordering::SeqCst);
    // Refreshed and replayed: the lock's release is under way when the answer comes back.
    let answer = within(Duration::from_secs(5), client.call(ApiRequest::get("Crm_Sales_Customers"))).await;
    assert_eq!(answer.expect("an answer").status, 200);
    assert_eq!(store.unlocks_started.load(Ordering::SeqCst), unlocks + 1);
    within(Duration::from_secs(5), client.close()).await;
    assert!(lock_is_free(&store.inner).await, "released before close() returned, not left for its lease");
}

#[tokio::test]
async fn close_right_after_the_lock_was_taken_gives_it_back() {
    let fake = Fake::start().await;
    let store = Arc::new(SlowStore::default());
    let client = Client::builder(fake.config()).store(store.clone(), KEY).build().expect("client");
    sign_in(&client).await;
    store.lock_delay_ms.store(300, Ordering::SeqCst);
    fake.state.expired.store(true, Ordering::SeqCst);
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await }
    });
    // The lock is taken in the store; its answer has not reached the client yet.
    within(Duration::from_secs(5), store.locked.notified()).await;
    within(Duration::from_secs(5), client.close()).await;
    assert_eq!(within(Duration::from_secs(5), call).await.expect("join").map(|_| ()), Err(Error::Closed));
    assert!(
        eventually(Duration::from_secs(3), async || lock_is_free(&store.inner).await).await,
        "released once taken, not left for its lease"
    );
    assert_eq!(fake.count(|p| &p.refreshes_received), 0, "nothing sent by a closed client");
}

#[tokio::test]
async fn sign_out_resolves_once_stored_and_nothing_is_written_after_it() {
    let fake = Fake::start().await;
    let store = Arc::new(MemoryStore::new());
    let client = Client::builder(fake.config()).store(store.clone(), KEY).build().expect("client");
    sign_in(&client).await;
    fake.state.revoke_delay_ms.store(200, Ordering::SeqCst);
    assert_eq!(within(Duration::from_secs(5), client.sign_out(None)).await, Ok(None));
    let signed_out = stored(store.as_ref()).await.expect("the signed-out snapshot was stored before sign_out returned");
    assert!(signed_out.tokens().is_none());
    // The application removes the session right away (as the axum layer does).
    store.remove(KEY).await.expect("remove");
    assert!(eventually(Duration::from_secs(5), async || fake.count(|p| &p.revocations_answered) == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    within(Duration::from_secs(5), client.close()).await;
    assert!(store.get(KEY).await.expect("get").is_none(), "nothing written back after the removal");
}

async fn end_right_after_sign_out(by_drop: bool) {
    let fake = Fake::start().await;
    let store = Arc::new(MemoryStore::new());
    let client = Client::builder(fake.config()).store(store.clone(), KEY).build().expect("client");
    sign_in(&client).await;
    let refresh = fake.current_refresh();
    fake.state.revoke_delay_ms.store(300, Ordering::SeqCst);
    within(Duration::from_secs(5), client.sign_out(None)).await.expect("signed out");
    if by_drop {
        drop(client);
    } else {
        within(Duration::from_secs(5), client.close()).await;
        assert_eq!(fake.count(|p| &p.revocations_answered), 1, "close() waited for the revocation");
    }
    assert!(eventually(Duration::from_secs(5), async || fake.count(|p| &p.revocations_answered) == 1).await);
    assert_eq!(fake.count(|p| &p.abandoned), 0, "the revocation was not cut short");
    assert!(fake.state.grant.lock().expect("grant").revoked, "{refresh} revoked");
}

#[tokio::test]
async fn the_revocation_completes_when_the_client_is_closed_right_after_sign_out() {
    end_right_after_sign_out(false).await;
}

#[tokio::test]
async fn the_revocation_completes_when_the_client_is_dropped_right_after_sign_out() {
    end_right_after_sign_out(true).await;
}

#[tokio::test]
async fn the_revocation_of_a_client_without_a_store_completes_after_close() {
    let fake = Fake::start().await;
    let client = Client::new(fake.config()).expect("client");
    sign_in(&client).await;
    fake.state.revoke_delay_ms.store(300, Ordering::SeqCst);
    within(Duration::from_secs(5), client.sign_out(None)).await.expect("signed out");
    within(Duration::from_secs(5), client.close()).await;
    assert_eq!(fake.count(|p| &p.revocations_answered), 1);
    assert_eq!(fake.count(|p| &p.abandoned), 0);
}

/// Until the fake API has received `count` requests in all.
async fn api_requests(fake: &Fake, count: usize) {
    assert!(
        eventually(Duration::from_secs(5), async || fake.count(|p| &p.api_received) >= count).await,
        "{count} API requests received"
    );
}

#[tokio::test]
async fn a_call_dropped_while_its_own_task_sends_gives_its_request_up_and_frees_its_place() {
    let fake = Fake::start().await;
    // One call at a time: a place not given back would hold every later call.
    let config = fake.config_builder(Timing::default()).api_concurrency(Some(1)).build().expect("config");
    let client = Client::new(config).expect("client");
    sign_in(&client).await;
    let answer = within(Duration::from_secs(5), client.call(ApiRequest::get("Crm_Sales_Customers"))).await;
    assert_eq!(answer.expect("an answer").status, 200);
    fake.state.api_delay_ms.store(10_000, Ordering::SeqCst);
    let call = client.call(ApiRequest::get("Crm_Sales_Customers"));
    tokio::select! {
        answer = call => panic!("answered while the API waits: {answer:?}"),
        () = api_requests(&fake, 2) => {}
    }
    // The call's future is gone, in the middle of its own exchange.
    assert!(
        eventually(Duration::from_secs(5), async || fake.count(|p| &p.abandoned) == 1).await,
        "the request was given up"
    );
    fake.state.api_delay_ms.store(0, Ordering::SeqCst);
    let answer = within(Duration::from_secs(5), client.call(ApiRequest::get("Crm_Sales_Customers"))).await;
    assert_eq!(answer.expect("an answer").status, 200, "the next call went out");
    assert_eq!(fake.count(|p| &p.api_received), 3);
    client.close().await;
}

#[tokio::test]
async fn close_ends_a_call_its_own_task_is_sending_at_once() {
    let fake = Fake::start().await;
    let client = Client::new(fake.config()).expect("client");
    sign_in(&client).await;
    fake.state.api_delay_ms.store(10_000, Ordering::SeqCst);
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await }
    });
    api_requests(&fake, 1).await;
    within(Duration::from_secs(2), client.close()).await;
    let answer = within(Duration::from_secs(2), call).await.expect("join");
    assert_eq!(answer.map(|_| ()), Err(Error::Closed));
    assert!(
        eventually(Duration::from_secs(5), async || fake.count(|p| &p.abandoned) == 1).await,
        "the request was given up"
    );
}

#[tokio::test]
async fn a_subscriber_sees_the_answer_the_caller_got() {
    let fake = Fake::start().await;
    let client = Client::new(fake.config()).expect("client");
    sign_in(&client).await;
    let mut events = client.events();
    let answer = within(Duration::from_secs(5), client.call(ApiRequest::get("Crm_Sales_Customers"))).await;
    let answer = answer.expect("an answer");
    assert_eq!(answer.status, 200);
    loop {
        match within(Duration::from_secs(5), events.next()).await {
            Some(Event::CallCompleted { response, .. }) => {
                assert!(response == answer, "the same answer, headers and body");
                break;
            }
            Some(_) => {}
            None => panic!("no CallCompleted event"),
        }
    }
    client.close().await;
}

#[tokio::test]
async fn calls_waiting_for_a_free_place_are_sent_by_their_callers_in_turn() {
    let fake = Fake::start().await;
    let config = fake.config_builder(Timing::default()).api_concurrency(Some(1)).build().expect("config");
    let client = Client::new(config).expect("client");
    sign_in(&client).await;
    fake.state.api_delay_ms.store(50, Ordering::SeqCst);
    let calls = (0..5).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(within(Duration::from_secs(5), call).await.expect("join").expect("an answer").status, 200);
    }
    assert_eq!(fake.count(|p| &p.api_received), 5);
    client.close().await;
}

#[tokio::test]
async fn a_waiting_call_dropped_when_its_turn_comes_is_not_sent_and_frees_its_place() {
    let fake = Fake::start().await;
    let config = fake.config_builder(Timing::default()).api_concurrency(Some(1)).build().expect("config");
    let client = Client::new(config).expect("client");
    sign_in(&client).await;
    fake.state.api_delay_ms.store(100, Ordering::SeqCst);
    let first = client.call(ApiRequest::get("Crm_Sales_Customers"));
    let second = client.call(ApiRequest::get("Crm_Sales_Customers"));
    // One task polls both: the first one's answer gives the second its turn, and the second
    // is dropped in that same turn, before it could send.
    let answer = within(Duration::from_secs(5), async {
        tokio::select! {
            biased;
            answer = first => answer,
            answer = second => panic!("the second call went before the first: {answer:?}"),
        }
    })
    .await;
    assert_eq!(answer.expect("an answer").status, 200);
    fake.state.api_delay_ms.store(0, Ordering::SeqCst);
    let answer = within(Duration::from_secs(5), client.call(ApiRequest::get("Crm_Sales_Customers"))).await;
    assert_eq!(answer.expect("an answer").status, 200, "the next call went out");
    assert_eq!(fake.count(|p| &p.api_received), 2, "the dropped call was never sent");
    client.close().await;
}
