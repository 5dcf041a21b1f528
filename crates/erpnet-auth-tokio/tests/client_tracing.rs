//! Observability without secrets (feature `tracing`): every log line of a full run against
//! the real provider — sign-in, calls, a proactive renewal, a 401 replay, sign-out — is
//! captured at TRACE level, and none holds the client secret, a token, the code, the PKCE
//! verifier, the state or the nonce. Run with
//! `cargo test -p erpnet-auth-tokio --features tracing --test client_tracing -- --ignored`.
#![cfg(feature = "tracing")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::test_provider::TestProvider;
use erpnet_auth_tokio::erpnet_auth::{ApiRequest, Config, Event, SignInOptions, Snapshot, Timing};
use erpnet_auth_tokio::Client;
use tracing_subscriber::fmt::format::FmtSpan;

/// Every line written, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The secrets a snapshot holds.
fn secrets_of(snapshot: &Snapshot) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some(tokens) = snapshot.tokens() {
        secrets.push(tokens.access_token().secret().to_owned());
        secrets.extend(tokens.refresh_token().map(|t| t.secret().to_owned()));
    }
    secrets.extend(snapshot.id_token().map(|t| t.secret().to_owned()));
    if let Some(pending) = snapshot.pending() {
        secrets.push(pending.state.secret().to_owned());
        secrets.push(pending.nonce.secret().to_owned());
        secrets.extend(pending.verifier.as_ref().map(|v| v.secret().to_owned()));
    }
    secrets
}

// One thread: the subscriber set for it sees the driver's tasks and reqwest's too.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs the test provider: make e2e"]
async fn no_log_line_carries_a_secret() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let provider = tokio::task::spawn_blocking(|| TestProvider::start(4)).await.expect("join").expect("provider");
    let mut timing = Timing::default();
    timing.rejection_cooldown_ms = 300;
    let config = Config::erpnet(&provider.root)
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
        .timing(timing)
        .build()
        .expect("config");
    let seen = Arc::new(Mutex::new(vec!["my-plain-app-secret".to_owned()]));
    let collect = Arc::clone(&seen);
    let client = Client::builder(config)
        .on_persist(move |snapshot| collect.lock().expect("lock").extend(secrets_of(snapshot)))
        .build()
        .expect("client");
    let mut events = client.events();

    let url = client.sign_in(SignInOptions::new()).await.expect("sign-in");
    let back =
        tokio::task::spawn_blocking(move || sign_in_headless(&url, "alice")).await.expect("join").expect("login");
    let BrowserReturn::Redirect(back) = back else { panic!("form_post") };
    for (name, value) in reqwest::Url::parse(&back).expect("a URL").query_pairs() {
        if name == "code" || name == "state" {
            seen.lock().expect("lock").push(value.into_owned());
        }
    }
    client.handle_callback(&back).await.expect("callback");
    assert_eq!(client.call(ApiRequest::get("Crm_Sales_Customers")).await.expect("call").status, 200);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(events.next().await, Some(Event::TokensRenewed { .. })) {}
    })
    .await
    .expect("a proactive renewal");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reject = reqwest::Client::new().post(format!("{}/test/reject-next", provider.root)).send().await;
    assert!(reject.expect("test endpoint").status().is_success());
    assert_eq!(client.call(ApiRequest::get("Crm_Sales_Customers")).await.expect("replayed").status, 200);
    client.sign_out(None).await.expect("sign-out");
    client.close().await;

    let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("UTF-8");
    let secrets = seen.lock().expect("lock").clone();
    assert!(secrets.len() >= 10, "state, nonce, verifier, code, three tokens twice, the secret: {}", secrets.len());
    for secret in &secrets {
        assert!(secret.len() >= 16, "a real secret");
        assert!(!log.contains(secret.as_str()), "a secret in the log");
    }
    // What the log is for is there.
    for expected in [
        "token_request",
        "grant=\"authorization_code\"",
        "grant=\"refresh_token\"",
        "status=200",
        "tokens renewed",
        "call replayed after 401",
    ] {
        assert!(log.contains(expected), "the log lacks {expected:?}:\n{log}");
    }
    println!("{} log lines checked against {} secrets", log.lines().count(), secrets.len());
}
