//! End to end: the async client against the real test provider (tests/idp, oidc-provider,
//! with its Domain API and ERP.net's per-session request limit) over real HTTP. Needs Node
//! and the npm tools: `make e2e` runs them (`-- --ignored`).

use std::time::Duration;

use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::test_provider::TestProvider;
use erpnet_auth_tokio::erpnet_auth::{ApiRequest, CallFailure, Config, ConfigBuilder, Event, SignInOptions, Timing};
use erpnet_auth_tokio::{Client, Error};
use serde_json::Value;

/// The seed's confidential client at the test provider.
fn seed_client(provider: &TestProvider) -> ConfigBuilder {
    Config::erpnet(&provider.root)
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
}

/// Starts the provider off the runtime's threads (it waits for Node).
async fn start_provider(access_ttl_secs: u64) -> TestProvider {
    tokio::task::spawn_blocking(move || TestProvider::start(access_ttl_secs))
        .await
        .expect("join")
        .expect("the test provider (run `make setup`)")
}

/// What the provider and its Domain API counted.
async fn stats(provider: &TestProvider) -> Value {
    let answer = reqwest::get(format!("{}/test/stats", provider.root)).await.expect("stats");
    serde_json::from_slice(&answer.bytes().await.expect("body")).expect("json")
}

/// One of the provider's test controls (`/test/reject-next`, `/test/revoke-all`, …).
async fn post(provider: &TestProvider, path: &str) {
    let answer = reqwest::Client::new().post(format!("{}{path}", provider.root)).send().await.expect("test endpoint");
    assert!(answer.status().is_success());
}

fn count(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or(0)
}

/// Signs `user` in through the provider's own pages, as a browser would.
async fn sign_in(client: &Client, user: &'static str) {
    let url = client.sign_in(SignInOptions::new()).await.expect("sign-in URL");
    let back = tokio::task::spawn_blocking(move || sign_in_headless(&url, user)).await.expect("join").expect("login");
    let BrowserReturn::Redirect(back) = back else { panic!("expected a redirect, got a form_post") };
    client.handle_callback(&back).await.expect("callback");
    assert!(client.is_signed_in().await);
}

/// Waits for the first event `matches` accepts, at most `limit`.
async fn wait_for(events: &mut erpnet_auth_tokio::Events, limit: Duration, matches: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(limit, async {
        loop {
            let event = events.next().await.expect("the client is running");
            if matches(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test provider: make e2e"]
async fn seed_scenario_sign_in_call_proactive_renewal_forced_401_replay() {
    // Tokens live 4 s: the session renews 2 s before expiry (half the lifetime).
    let provider = start_provider(4).await;
    // A 401 for a token renewed within the cooldown goes to the caller (the API may refuse
    // every token); shortened so that the forced 401 below is replayed.
    let mut timing = Timing::default();
    timing.rejection_cooldown_ms = 300;
    let client = Client::new(seed_client(&provider).timing(timing).build().expect("config")).expect("client");
    let mut events = client.events();
    // sign_in waits for discovery: no ProviderNotReady.
    sign_in(&client, "alice").await;
    let claims = client.claims().await.expect("ID token claims");
    assert_eq!(claims.sub, "alice");

    let answer = client.call(ApiRequest::get("Crm_Sales_Customers?$top=10")).await.expect("call");
    assert_eq!(answer.status, 200);
    assert!(String::from_utf8_lossy(&answer.body).contains("C-0001"));
    let profile = client.profile().await.expect("profile");
    assert_eq!(profile["id"], "user-alice");

    // Expiry nears: the session renews by itself (it is in use).
    wait_for(&mut events, Duration::from_secs(10), |e| matches!(e, Event::TokensRenewed { .. })).await;
    let before = stats(&provider).await;
    assert_eq!(count(&before, "refreshes"), 1);

    tokio::time::sleep(Duration::from_millis(400)).await;
    // The API refuses the (valid) token once: one refresh, one replay, the caller sees 200.
    post(&provider, "/test/reject-next").await;
    let answer = client.call(ApiRequest::get("Crm_Sales_Customers")).await.expect("call after a 401");
    assert_eq!(answer.status, 200);
    let after = stats(&provider).await;
    assert_eq!(count(&after, "apiUnauthorized") - count(&before, "apiUnauthorized"), 1);
    assert_eq!(count(&after, "refreshes") - count(&before, "refreshes"), 1, "one refresh for the 401");
    assert_eq!(count(&after, "refreshFailures"), 0);
    assert_eq!(count(&after, "grantsRevoked"), 0);

    let end = client.sign_out(Some("http://localhost/signed-out")).await.expect("sign-out");
    assert!(end.is_some_and(|url| url.contains("/id/connect/endsession")));
    assert!(!client.is_signed_in().await);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test provider: make e2e"]
async fn two_hundred_concurrent_calls_at_expiry_one_refresh_no_429() {
    let provider = start_provider(3).await;
    let client = Client::new(seed_client(&provider).build().expect("config")).expect("client");
    sign_in(&client, "bob").await;
    // No call went out, so the idle session is not renewed on a timer: let the token expire.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let before = stats(&provider).await;

    let calls: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.expect("join").expect("an answer").status);
    }
    let after = stats(&provider).await;
    assert!(statuses.iter().all(|&s| s == 200), "every caller got 200: {statuses:?}");
    assert_eq!(count(&after, "refreshes") - count(&before, "refreshes"), 1, "exactly one refresh");
    assert_eq!(count(&after, "refreshFailures"), 0);
    println!(
        "200 calls at expiry: 1 refresh, {} API requests, {} answered 429 by the API (retried inside), 0 reached a caller",
        count(&after, "apiRequests") - count(&before, "apiRequests"),
        count(&after, "apiTooMany") - count(&before, "apiTooMany"),
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test provider: make e2e"]
async fn revoked_grant_every_waiting_call_gets_sign_in_required() {
    let provider = start_provider(2).await;
    let client = Client::new(seed_client(&provider).build().expect("config")).expect("client");
    let mut events = client.events();
    sign_in(&client, "carol").await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    post(&provider, "/test/revoke-all").await;

    // Every call waits for the refresh, which meets the revoked grant.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await })
        })
        .collect();
    for call in calls {
        let error = call.await.expect("join").expect_err("no answer after the grant was revoked");
        assert!(matches!(error, Error::Failed(CallFailure::SignInRequired(_))), "{error:?}");
        assert_eq!(error.code(), "sign_in_required");
    }
    wait_for(&mut events, Duration::from_secs(1), |e| matches!(e, Event::SignInRequired { .. })).await;
    assert!(!client.is_signed_in().await);
    // A later call is refused at once, with nothing sent.
    let later = client.call(ApiRequest::get("Crm_Sales_Customers")).await.expect_err("signed out");
    assert_eq!(later.code(), "not_signed_in");
    let stats = stats(&provider).await;
    assert_eq!(count(&stats, "refreshes"), 1, "no retry loop on a revoked grant");
    assert_eq!(count(&stats, "refreshFailures"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test provider: make e2e"]
async fn call_futures_dropped_during_a_refresh_leave_no_wedge() {
    // Tokens live well beyond the refresh's 1.5 s hold (expiry counts from when it was sent).
    let provider = start_provider(6).await;
    let client = Client::new(seed_client(&provider).build().expect("config")).expect("client");
    sign_in(&client, "dave").await;
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    // The refresh is held 1.5 s at the provider: the calls wait for it.
    post(&provider, "/test/hold-token?ms=1500&when=before").await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for call in &calls {
        call.abort();
    }
    for call in calls {
        assert!(call.await.expect_err("aborted").is_cancelled());
    }
    // Ten more calls: the refresh completes, no slot was leaked by the dropped ones.
    let more: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(ApiRequest::get("Crm_Sales_Customers")).await })
        })
        .collect();
    for call in more {
        let answer = tokio::time::timeout(Duration::from_secs(10), call).await.expect("in time").expect("join");
        assert_eq!(answer.expect("an answer").status, 200);
    }
    let stats = stats(&provider).await;
    assert_eq!(count(&stats, "refreshes"), 1);
    assert_eq!(count(&stats, "tokenRequestsHeld"), 1);
    assert!(count(&stats, "apiRequests") <= 10 + 3, "the dropped calls did not go out (a few may have)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test provider: make e2e"]
async fn shared_provider_discovers_once_for_many_clients() {
    let provider = start_provider(60).await;
    let shared = erpnet_auth_tokio::SharedProvider::new(
        seed_client(&provider).snapshot_provider(false).build().expect("config"),
    )
    .expect("provider");
    let (a, b) = tokio::join!(shared.ready(), shared.ready());
    a.expect("ready");
    b.expect("ready");
    let clients: Vec<Client> = (0..5).map(|_| shared.client().build().expect("client")).collect();
    for (client, user) in clients.iter().zip(["u1", "u2", "u3", "u4", "u5"]) {
        sign_in(client, user).await;
        assert_eq!(client.call(ApiRequest::get("Crm_Sales_Customers")).await.expect("call").status, 200);
        let snapshot = client.snapshot().await.expect("snapshot");
        assert!(snapshot.metadata().is_none(), "the user's snapshot holds only the user's state");
    }
    let stats = stats(&provider).await;
    assert_eq!(count(&stats, "discoveryRequests"), 1, "discovered once for the process");
    assert_eq!(count(&stats, "keysRequests"), 1, "keys fetched once for the process");
}
