//! Shared sessions through the client: several clients (as several processes would) serve
//! one user's session from one store, against the real provider with refresh-token
//! rotation and reuse detection. Needs Node: `make e2e` runs them (`-- --ignored`).

use std::sync::Arc;
use std::time::Duration;

use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::test_provider::TestProvider;
use erpnet_auth_tokio::erpnet_auth::{ApiRequest, Config, ConfigBuilder, SignInOptions, Timing};
use erpnet_auth_tokio::store::{Lease, MemoryStore, SessionStore, StoreError, StoreFuture, Write};
use erpnet_auth_tokio::{Client, Error, SharedProvider};
use serde_json::Value;

fn seed_client(provider: &TestProvider) -> ConfigBuilder {
    Config::erpnet(&provider.root)
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
}

async fn start_provider(access_ttl_secs: u64) -> TestProvider {
    tokio::task::spawn_blocking(move || TestProvider::start(access_ttl_secs))
        .await
        .expect("join")
        .expect("the test provider (run `make setup`)")
}

async fn stats(provider: &TestProvider) -> Value {
    let answer = reqwest::get(format!("{}/test/stats", provider.root)).await.expect("stats");
    serde_json::from_slice(&answer.bytes().await.expect("body")).expect("json")
}

fn count(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or(0)
}

async fn sign_in(client: &Client, user: &'static str) {
    let url = client.sign_in(SignInOptions::new()).await.expect("sign-in URL");
    let back = tokio::task::spawn_blocking(move || sign_in_headless(&url, user)).await.expect("join").expect("login");
    let BrowserReturn::Redirect(back) = back else { panic!("expected a redirect") };
    client.handle_callback(&back).await.expect("callback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test provider: make e2e"]
async fn four_clients_share_one_session_one_refresh_per_expiry() {
    let provider = start_provider(3).await;
    let config = Arc::new(seed_client(&provider).build().expect("config"));
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let first = Client::builder(Arc::clone(&config)).store(Arc::clone(&store), "alice").build().expect("client");
    sign_in(&first, "alice").await;
    // The others start from what the store holds.
    let mut clients = vec![first];
    for _ in 0..3 {
        clients.push(Client::builder(Arc::clone(&config)).store(Arc::clone(&store), "alice").build().expect("client"));
    }
    for client in &clients {
        assert!(client.is_signed_in().await, "signed in from the store");
    }
    for expiry in 1..=3u64 {
        // Idle sessions are not renewed on a timer: the token expires.
        tokio::time::sleep(Duration::from_millis(3_300)).await;
        let calls: Vec<_> = clients
            .iter()
            .flat_map(|client| (0..25).map(move |_| client.clone()))
            .map(|client| tokio::spawn(async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await }))
            .collect();
        for call in calls {
            assert_eq!(call.await.expect("join").expect("an answer").status, 200);
        }
        let stats = stats(&provider).await;
        assert_eq!(count(&stats, "refreshes"), expiry, "one refresh per expiry for the four clients");
        assert_eq!(count(&stats, "refreshFailures"), 0);
        assert_eq!(count(&stats, "grantsRevoked"), 0);
    }
}

/// A store that is down: every command fails as a timed-out Redis would.
struct DownStore;

impl SessionStore for DownStore {
    fn get<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async { Err(down("HGET")) })
    }
    fn set<'a>(&'a self, _key: &'a str, _value: &'a str, _write: Option<Write>) -> StoreFuture<'a, bool> {
        Box::pin(async { Err(down("EVAL")) })
    }
    fn remove<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(down("DEL")) })
    }
    fn lock<'a>(&'a self, _name: &'a str, _lease: Duration, _wait: Duration) -> StoreFuture<'a, Lease> {
        Box::pin(async { Err(down("SET")) })
    }
    fn unlock<'a>(&'a self, _name: &'a str, _lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(async { Err(down("EVAL")) })
    }
}

fn down(command: &'static str) -> StoreError {
    StoreError::Unavailable { command, reason: "timed out".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test provider: make e2e"]
async fn a_store_that_is_down_gives_waiting_calls_a_typed_error_and_sends_no_refresh() {
    let provider = start_provider(2).await;
    let mut timing = Timing::default();
    timing.retry_base_ms = 100;
    timing.retry_max_ms = 200;
    let config = Arc::new(seed_client(&provider).timing(timing).build().expect("config"));
    let signed_in = Client::builder(Arc::clone(&config)).build().expect("client");
    sign_in(&signed_in, "bob").await;
    let snapshot = signed_in.snapshot().await.expect("snapshot");
    signed_in.close().await;

    let client = Client::builder(config).snapshot(snapshot).store(Arc::new(DownStore), "bob").build().expect("client");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let error = tokio::time::timeout(Duration::from_secs(10), client.call(ApiRequest::get("Crm_Sales_Customers")))
        .await
        .expect("settles: a store that is down is an error, not a hang")
        .expect_err("no token without the store's lock");
    assert!(matches!(error, Error::Store(StoreError::Unavailable { .. })), "{error:?}");
    assert_eq!(error.code(), "storage_unavailable");
    let stats = stats(&provider).await;
    assert_eq!(count(&stats, "refreshes"), 0, "nothing sent without the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test provider: make e2e"]
async fn a_sign_in_begun_by_one_client_is_completed_and_ended_by_another() {
    let provider = start_provider(60).await;
    // As a server process would: the provider known once, so a new client writes nothing
    // until its user does something. (A client that discovers writes the provider's
    // metadata when it arrives, and a snapshot without a pending sign-in written after one
    // with it replaces it: the store's compare-and-swap guards the tokens, not the rest.)
    let shared = SharedProvider::new(seed_client(&provider).snapshot_provider(false).build().expect("config"))
        .expect("provider");
    shared.ready().await.expect("ready");
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let first = shared.client().store(Arc::clone(&store), "carol").build().expect("client");
    // Running before the sign-in began: it learns of it from the store at the callback.
    let second = shared.client().store(Arc::clone(&store), "carol").build().expect("client");
    assert!(!second.is_signed_in().await);
    let url = first.sign_in(SignInOptions::new()).await.expect("sign-in URL");
    let back =
        tokio::task::spawn_blocking(move || sign_in_headless(&url, "carol")).await.expect("join").expect("login");
    let BrowserReturn::Redirect(back) = back else { panic!("expected a redirect") };
    second.handle_callback(&back).await.expect("the callback on the other client");
    assert_eq!(second.call(ApiRequest::get("Crm_Sales_Customers")).await.expect("call").status, 200);
    // The first learns of the tokens at its first token request; signed out by the second,
    // the stored session holds none.
    second.sign_out(None).await.expect("sign-out");
    let stored = store.get("carol").await.expect("get").expect("a snapshot");
    let snapshot = erpnet_auth_tokio::erpnet_auth::Snapshot::from_json(&stored).expect("snapshot");
    assert!(snapshot.tokens().is_none());
    assert_eq!(count(&stats(&provider).await, "codeExchanges"), 1);
}
