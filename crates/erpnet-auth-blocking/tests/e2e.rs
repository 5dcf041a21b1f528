//! End to end: the blocking driver against the real test provider (tests/idp, oidc-provider)
//! over real HTTP. Needs Node and the npm tools: `make e2e` runs them (`--ignored`).

use std::sync::{Arc, Mutex};

use erpnet_auth::{ApiRequest, Callback, Config, Event, Session, SignInOptions, UsageError};
use erpnet_auth_blocking::{now_ms, CallError, Driver, Exchange};
use erpnet_auth_test_support::provider_login::{sign_in_headless, BrowserReturn};
use erpnet_auth_test_support::test_provider::TestProvider;

/// A driver whose exchanges a test can read back.
struct Recorded {
    driver: Driver,
    log: Arc<Mutex<Vec<Exchange>>>,
}

impl Recorded {
    fn new(session: Session) -> Recorded {
        let mut driver = Driver::new(session);
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        driver.on_exchange(move |e| sink.lock().unwrap().push(e.clone()));
        driver.run().expect("discovery");
        Recorded { driver, log }
    }

    fn count(&self, test: impl Fn(&Exchange) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|e| test(e)).count()
    }
}

/// The seed's confidential client at the test provider.
fn seed_client(provider: &TestProvider) -> erpnet_auth::ConfigBuilder {
    Config::erpnet(&provider.root)
        .client_id("my.trusted.app/first")
        .client_secret("my-plain-app-secret")
        .redirect_uri("http://localhost/signin-callback")
}

/// Signs `user` in through the provider's pages (code flow).
fn sign_in(config: Config, user: &str) -> Recorded {
    let mut recorded = Recorded::new(Session::new(config));
    let driver = &mut recorded.driver;
    let url = driver.session.sign_in(now_ms(), SignInOptions::new()).expect("sign-in");
    driver.run().expect("run");
    let BrowserReturn::Redirect(back) = sign_in_headless(&url, user).expect("login") else { panic!("form_post") };
    driver.session.handle_callback(now_ms(), Callback::Url(&back)).expect("callback");
    driver.run().expect("run");
    assert!(driver.session.is_signed_in());
    recorded
}

fn signed_in(provider: &TestProvider) -> Recorded {
    sign_in(seed_client(provider).build().expect("config"), "alice")
}

#[test]
#[ignore = "needs the test provider: make e2e"]
fn revoked_grant_means_sign_in_required_once_and_no_loop() {
    let provider = TestProvider::start(2).expect("provider");
    let mut recorded = signed_in(&provider);
    let driver = &mut recorded.driver;
    assert_eq!(driver.call(ApiRequest::get("Crm_Sales_Customers")).expect("call").status, 200);
    provider.revoke_all().expect("revoke");
    // The proactive renewal meets the revoked grant.
    assert!(driver.sleep_until_due(None).expect("contract"));
    assert!(driver.wait_until().is_none());
    let driver = &mut recorded.driver;
    assert!(matches!(
        driver.call(ApiRequest::get("Crm_Sales_Customers")),
        Err(CallError::Refused(erpnet_auth::error::CallError::Usage(UsageError::NotSignedIn)))
    ));
    assert_eq!(driver.wait_until(), None, "nothing left to retry");
    assert_eq!(recorded.count(|e| matches!(e, Exchange::Event(Event::SignInRequired { .. }))), 1);
    let stats = provider.stats().expect("stats");
    assert_eq!(stats["refreshes"], 1);
    assert_eq!(stats["refreshFailures"], 1);
}

#[test]
#[ignore = "needs the test provider: make e2e"]
fn scope_without_read_gets_403_and_no_refresh() {
    let provider = TestProvider::start(60).expect("provider");
    let mut recorded =
        sign_in(seed_client(&provider).scope("openid profile offline_access").build().expect("config"), "bob");
    assert_eq!(recorded.driver.call(ApiRequest::get("Crm_Sales_Customers")).expect("call").status, 403);
    assert_eq!(provider.stats().expect("stats")["refreshes"], 0);
}

/// The seed's hybrid sign-in against the real provider. `alter` rewrites the front-channel
/// ID token's claims in transit (keeping its signature).
fn hybrid_sign_in(mode: erpnet_auth::config::ResponseMode, alter: bool) -> (Recorded, serde_json::Value, TestProvider) {
    use base64::Engine;
    let provider = TestProvider::start(60).expect("provider");
    let config = seed_client(&provider)
        .scope("openid profile offline_access DomainApi")
        .response_type(erpnet_auth::config::ResponseType::CodeIdToken)
        .response_mode(mode)
        .build()
        .expect("config");
    let mut recorded = Recorded::new(Session::new(config));
    let driver = &mut recorded.driver;
    let url = driver.session.sign_in(now_ms(), SignInOptions::new()).expect("sign-in");
    assert!(url.contains("response_type=code+id_token"));
    driver.run().expect("run"); // the keys are fetched meanwhile
    let back = sign_in_headless(&url, "alice").expect("login");
    let tamper = |params: &str| -> String {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(params.as_bytes())
            .map(|(k, v)| {
                if k == "id_token" && alter {
                    let mut parts: Vec<String> = v.split('.').map(str::to_owned).collect();
                    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                    let mut claims: serde_json::Value =
                        serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
                    claims["sub"] = "mallory".into();
                    parts[1] = engine.encode(claims.to_string());
                    (k.into_owned(), parts.join("."))
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
    };
    match back {
        BrowserReturn::FormPost { action, body } => {
            assert_eq!(mode, erpnet_auth::config::ResponseMode::FormPost);
            assert_eq!(action, "http://localhost/signin-callback");
            assert!(body.contains("id_token="));
            driver.session.handle_callback(now_ms(), Callback::FormPost(&tamper(&body))).expect("callback");
        }
        BrowserReturn::Redirect(back) => {
            assert_eq!(mode, erpnet_auth::config::ResponseMode::Fragment);
            let (base, fragment) = back.split_once('#').expect("a fragment");
            assert!(fragment.contains("id_token="));
            driver
                .session
                .handle_callback(now_ms(), Callback::Url(&format!("{base}#{}", tamper(fragment))))
                .expect("callback");
        }
    }
    driver.run().expect("run");
    let stats = provider.stats().expect("stats");
    (recorded, stats, provider)
}

#[test]
#[ignore = "needs the test provider: make e2e"]
fn seed_hybrid_sign_in_with_form_post_and_fragment_signatures_checked() {
    for mode in [erpnet_auth::config::ResponseMode::FormPost, erpnet_auth::config::ResponseMode::Fragment] {
        let (mut recorded, stats, _provider) = hybrid_sign_in(mode, false);
        assert!(
            recorded.driver.session.is_signed_in(),
            "{mode:?}: {:?}",
            recorded.log.lock().unwrap().iter().filter(|e| matches!(e, Exchange::Event(_))).collect::<Vec<_>>()
        );
        let claims = recorded.driver.session.claims().expect("validated claims");
        assert_eq!(claims.sub, "alice");
        assert_eq!(stats["codeExchanges"], 1);
        let keys = recorded.count(|e| matches!(e, Exchange::Request(r) if r.kind == erpnet_auth::RequestKind::Keys));
        assert_eq!(keys, 1, "the keys were fetched once");
        assert_eq!(recorded.driver.call(ApiRequest::get("Crm_Customers?$top=10")).expect("call").status, 200);
    }
}

#[test]
#[ignore = "needs the test provider: make e2e"]
fn an_altered_front_channel_id_token_is_refused_before_any_token_request() {
    for mode in [erpnet_auth::config::ResponseMode::FormPost, erpnet_auth::config::ResponseMode::Fragment] {
        let (recorded, stats, _provider) = hybrid_sign_in(mode, true);
        assert!(!recorded.driver.session.is_signed_in());
        let refused = recorded.log.lock().unwrap().iter().any(|e| {
            matches!(
                e,
                Exchange::Event(Event::SignInFailed {
                    error: erpnet_auth::error::SignInError::IdToken(erpnet_auth::error::IdTokenError::BadSignature)
                })
            )
        });
        assert!(refused, "{mode:?}");
        assert_eq!(stats["tokenRequests"], 0, "{mode:?}: the code was never redeemed");
        let token_requests =
            recorded.count(|e| matches!(e, Exchange::Request(r) if r.kind == erpnet_auth::RequestKind::Token));
        assert_eq!(token_requests, 0);
    }
}
