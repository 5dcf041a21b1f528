//! The loop contract, configuration checks, discovery, snapshots, client credentials,
//! sign-out and redaction.

mod common;

use base64::Engine;
use common::*;
use erpnet_auth::config::{ClientAuth, ProviderMetadata, ResponseMode, ResponseType};
use erpnet_auth::erpnet::{SkippedSite, ERPNET_DEFAULT_SCOPE};
use erpnet_auth::error::{
    CallError, CallbackError, ConfigError, RandomUnavailable, SignInError, SignInRequiredReason, SnapshotError,
    UserInfoError,
};
use erpnet_auth::secret::{AccessToken, AuthorizationCode, ClientSecret, PkceVerifier};
use erpnet_auth::*;

/// A token answer with a placeholder ID token (these sessions do not check it).
const WITH_ID_TOKEN: &str =
    r#"{"access_token":"at-1","expires_in":3600,"refresh_token":"rt-1","id_token":"h.p.s","scope":"openid read"}"#;

fn signed_in(builder: ConfigBuilder) -> Session {
    to_signed_in(builder.build().unwrap(), WITH_ID_TOKEN)
}

// ----- configuration -----

#[test]
fn configuration_refusals_say_what_to_change() {
    let cases: Vec<(ConfigBuilder, ConfigError)> = vec![
        (Config::erpnet(ROOT).redirect_uri(REDIRECT), ConfigError::Missing("client_id")),
        (Config::erpnet(ROOT).client_id(CLIENT_ID), ConfigError::Missing("redirect_uri")),
        (
            Config::erpnet("demodb.my.erp.net").client_id(CLIENT_ID).redirect_uri(REDIRECT),
            ConfigError::InvalidUrl { field: "instance root", reason: "it is relative" },
        ),
        (
            Config::erpnet("http://demodb.my.erp.net").client_id(CLIENT_ID).redirect_uri(REDIRECT),
            ConfigError::InsecureUrl { field: "instance root" },
        ),
        (
            Config::discover("ftp://idp.example").client_id(CLIENT_ID).redirect_uri(REDIRECT),
            ConfigError::InvalidUrl { field: "issuer", reason: "its scheme is not https" },
        ),
        (seed_builder().redirect_uri("http://app.example/cb"), ConfigError::InsecureUrl { field: "redirect_uri" }),
        (
            seed_builder().redirect_uri("/signin-callback"),
            ConfigError::InvalidUrl { field: "redirect_uri", reason: "it is relative or does not parse" },
        ),
        (
            seed_builder().response_type(ResponseType::CodeIdToken).response_mode(ResponseMode::Query),
            ConfigError::HybridWithQuery,
        ),
        (seed_builder().client_auth(ClientAuth::Public), ConfigError::PublicClientWithSecret),
        (
            Config::erpnet(ROOT).client_id(CLIENT_ID).redirect_uri(REDIRECT).client_auth(ClientAuth::ClientSecretBasic),
            ConfigError::SecretRequired("client_secret_basic"),
        ),
        (seed_builder().pkce(false), ConfigError::PkceRequired),
        (seed_builder().scope("  "), ConfigError::InvalidScope),
        (seed_builder().scope("openid \"read\""), ConfigError::InvalidScope),
        (seed_builder().api_root("http://10.0.0.1/api/"), ConfigError::InsecureUrl { field: "api_root" }),
        (
            Config::erpnet(ROOT).client_id(CLIENT_ID).client_credentials(),
            ConfigError::SecretRequired("the client_credentials grant"),
        ),
        (
            Config::with_endpoints(ProviderMetadata::new(
                "https://idp.example",
                "https://idp.example/authorize",
                "/token",
            ))
            .client_id("a")
            .redirect_uri(REDIRECT),
            ConfigError::InvalidUrl { field: "token_endpoint", reason: "it is relative" },
        ),
    ];
    for (builder, expected) in cases {
        let error = builder.build().unwrap_err();
        assert_eq!(error, expected);
        assert!(!error.to_string().contains(SECRET));
        assert!(error.to_string().len() > 20, "{error}");
    }
    assert!(ConfigError::HybridWithQuery.to_string().contains("use \"fragment\" or \"form_post\""));
}

#[test]
fn preset_defaults_and_loopback_exceptions() {
    let config = seed_builder().build().unwrap();
    assert_eq!(config.scope(), ERPNET_DEFAULT_SCOPE);
    assert_eq!(config.api_root(), Some("https://demodb.my.erp.net/api/domain/odata/"));
    assert_eq!(config.issuer(), "https://demodb.my.erp.net/id");
    assert_eq!(seed_builder().scope(SEED_SCOPE).build().unwrap().scope(), SEED_SCOPE);
    for root in ["http://127.0.0.1:5000", "http://localhost:8080", "http://[::1]:9000"] {
        assert!(Config::erpnet(root).client_id("a").redirect_uri(REDIRECT).build().is_ok(), "{root}");
    }
}

// ----- the loop contract -----

#[test]
fn commands_before_draining_are_refused() {
    let mut session = Session::with_random(seed_builder().build().unwrap(), CountingRandom::default());
    session.sign_in(T0, SignInOptions::new()).unwrap();
    assert_eq!(session.sign_in(T0, SignInOptions::new()), Err(UsageError::NotDrained));
    assert_eq!(session.handle_timeout(T0), Err(UsageError::NotDrained));
    drain(&mut session);
    assert!(session.handle_timeout(T0).is_ok());
}

#[test]
fn unknown_and_repeated_answers_are_usage_errors() {
    let mut session = signed_in(seed_builder());
    assert_eq!(
        session.handle_response(T0, RequestId(999), HttpResponse::new(200, "")),
        Err(UsageError::UnknownRequest(RequestId(999)))
    );
    drain(&mut session);
    let call = session.call_api(T0, ApiRequest::get("Crm_Sales_Customers")).unwrap();
    let request = drain(&mut session).requests.remove(0);
    session.handle_response(T0, request.id, HttpResponse::new(200, "{}")).unwrap();
    let events = drain(&mut session).events;
    assert!(matches!(&events[..], [Event::CallCompleted { call: c, .. }] if *c == call));
    assert_eq!(
        session.handle_response(T0, request.id, HttpResponse::new(200, "{}")),
        Err(UsageError::AlreadyAnswered(request.id))
    );
    drain(&mut session);
    assert_eq!(session.cancel_call(T0, call), Err(UsageError::UnknownCall(call)));
}

#[test]
fn time_never_runs_backwards() {
    let mut session = signed_in(seed_builder().timing(renewing_idle_sessions()));
    let renew_at = T0 + 3_600_000 - 60_000;
    session.handle_timeout(renew_at).unwrap();
    let refresh = drain(&mut session).requests;
    assert_eq!(refresh.len(), 1);
    // The host's clock jumps back an hour: the session's time stays put.
    session
        .handle_response(T0, refresh[0].id, HttpResponse::new(200, r#"{"access_token":"at-2","expires_in":3600}"#))
        .unwrap();
    drain(&mut session);
    assert_eq!(session.expires_at(), Some(renew_at + 3_600_000));
}

#[test]
fn sign_in_needs_the_provider_and_the_right_grant() {
    let config = Config::discover("https://idp.example").client_id("a").redirect_uri(REDIRECT).build().unwrap();
    let mut session = Session::with_random(config, CountingRandom::default());
    drain(&mut session);
    assert_eq!(session.sign_in(T0, SignInOptions::new()), Err(UsageError::ProviderNotReady));
    let cc =
        Config::erpnet(ROOT).client_id("svc").client_secret("s").client_credentials().discovery(false).build().unwrap();
    let mut session = Session::with_random(cc, CountingRandom::default());
    assert_eq!(session.sign_in(T0, SignInOptions::new()), Err(UsageError::WrongGrant));
}

#[test]
fn failing_random_source_is_a_clear_error() {
    struct Broken;
    impl RandomSource for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), RandomUnavailable> {
            Err(RandomUnavailable)
        }
    }
    let mut session = Session::with_random(seed_builder().build().unwrap(), Broken);
    assert_eq!(session.sign_in(T0, SignInOptions::new()), Err(UsageError::RandomUnavailable));
    assert!(!session.is_sign_in_pending());
}

// ----- discovery -----

fn discovery_session(root: &str) -> (Session, HttpRequest) {
    let config =
        Config::erpnet(root).client_id(CLIENT_ID).client_secret(SECRET).redirect_uri(REDIRECT).build().unwrap();
    let mut session = Session::with_random(config, CountingRandom::default());
    let request = drain(&mut session).requests.remove(0);
    (session, request)
}

#[test]
fn discovery_is_a_sans_io_step_cached_in_the_snapshot() {
    let (mut session, request) = discovery_session(ROOT);
    assert_eq!(request.url, "https://demodb.my.erp.net/id/.well-known/openid-configuration");
    assert_eq!(request.kind, RequestKind::Discovery);
    let mut idp = SimIdp::new(ROOT, CLIENT_ID, Some(SECRET));
    let response = idp.handle(T0, &request);
    session.handle_response(T0, request.id, response).unwrap();
    let drained = drain(&mut session);
    assert_eq!(drained.events, vec![Event::ProviderReady { discovered: true }]);
    let snapshot = drained.persisted[0].clone();
    assert!(snapshot.metadata().unwrap().authorization_response_iss_parameter_supported);

    let restored = Snapshot::from_json(&snapshot.to_json()).unwrap();
    let config =
        Config::erpnet(ROOT).client_id(CLIENT_ID).client_secret(SECRET).redirect_uri(REDIRECT).build().unwrap();
    let mut session = Session::restore(config, restored, CountingRandom::default()).unwrap();
    let drained = drain(&mut session);
    assert!(
        drained.requests.iter().all(|r| r.kind == RequestKind::Sites),
        "a restored session does not fetch discovery again (only the instance's sites, not yet known)"
    );
    assert!(session.sign_in(T0, SignInOptions::new()).is_ok());
}

/// The provider's documents are written once and reused by every later snapshot write; what
/// is stored is still exactly the snapshot's own serialization, and reads back equal.
#[test]
fn snapshots_write_the_provider_documents_as_the_snapshot_serializes_them() {
    let (mut session, request) = discovery_session(ROOT);
    let response = SimIdp::new(ROOT, CLIENT_ID, Some(SECRET)).handle(T0, &request);
    session.handle_response(T0, request.id, response).unwrap();
    let mut stored: serde_json::Value = serde_json::from_str(&drain(&mut session).persisted[0].to_json()).unwrap();
    stored["jwks"] = serde_json::json!({"keys": [{"kty": "EC", "kid": "k\"1", "crv": "P-256", "x": "AA", "y": "AQ"}]});
    stored["sites"] = serde_json::json!({"odata_root": "https://demodb.my.erp.net/api/domain/odata/"});
    stored["tokens"] = serde_json::json!({"access_token": "at-1", "received_at": T0, "expires_at": T0 + 1000});
    let snapshot = Snapshot::from_json(&stored.to_string()).unwrap();
    assert!(snapshot.metadata().is_some() && snapshot.has_signing_keys() && snapshot.tokens().is_some());
    for _ in 0..2 {
        let written: serde_json::Value = serde_json::from_str(&snapshot.to_json()).unwrap();
        assert_eq!(written, serde_json::to_value(&snapshot).unwrap());
        assert_eq!(written, stored);
        assert_eq!(Snapshot::from_json(&snapshot.to_json()).unwrap(), snapshot);
    }
}

#[test]
fn sessions_of_one_process_share_one_provider_state_and_snapshots_hold_only_the_user() {
    let (mut first, request) = discovery_session(ROOT);
    let mut idp = SimIdp::new(ROOT, CLIENT_ID, Some(SECRET));
    let response = idp.handle(T0, &request);
    first.handle_response(T0, request.id, response).unwrap();
    drain(&mut first);
    let shared = first.provider_state();
    assert!(shared.metadata().is_some());
    let config = Config::erpnet(ROOT)
        .client_id(CLIENT_ID)
        .client_secret(SECRET)
        .redirect_uri(REDIRECT)
        .snapshot_provider(false)
        .build()
        .unwrap();
    let config = std::sync::Arc::new(config);
    // A thousand users' sessions made from it: none asks the provider again.
    let mut sessions: Vec<Session> = (0..1000)
        .map(|_| {
            Session::with_provider(std::sync::Arc::clone(&config), &shared, None, CountingRandom::default()).unwrap()
        })
        .collect();
    for session in &mut sessions {
        let drained = drain(session);
        assert!(drained.requests.iter().all(|r| r.kind == RequestKind::Sites), "no discovery");
        assert!(session.is_provider_ready());
    }
    let url = sessions[0].sign_in(T0, SignInOptions::new()).unwrap();
    assert!(url.starts_with("https://demodb.my.erp.net/id/connect/authorize?"));
    // The user's snapshot: the pending sign-in, no provider documents.
    let snapshot = drain(&mut sessions[0]).persisted.pop().unwrap();
    assert!(snapshot.pending().is_some());
    assert!(snapshot.metadata().is_none() && !snapshot.has_signing_keys());
    assert!(!snapshot.to_json().contains("token_endpoint"));
    // Restored with the shared state and that snapshot: ready at once, the sign-in still pending.
    let mut restored = Session::with_provider(config, &shared, Some(snapshot), CountingRandom::default()).unwrap();
    assert!(drain(&mut restored).requests.iter().all(|r| r.kind != RequestKind::Discovery));
    assert!(restored.is_sign_in_pending() && restored.is_provider_ready());
}

#[test]
fn a_shared_provider_state_of_another_issuer_is_ignored() {
    let (mut other, request) = discovery_session("https://other.my.erp.net");
    let mut idp = SimIdp::new("https://other.my.erp.net", CLIENT_ID, Some(SECRET));
    let response = idp.handle(T0, &request);
    other.handle_response(T0, request.id, response).unwrap();
    drain(&mut other);
    let config =
        Config::erpnet(ROOT).client_id(CLIENT_ID).client_secret(SECRET).redirect_uri(REDIRECT).build().unwrap();
    let mut session = Session::with_provider(config, &other.provider_state(), None, CountingRandom::default()).unwrap();
    let drained = drain(&mut session);
    assert!(!session.is_provider_ready());
    assert_eq!(drained.requests[0].url, "https://demodb.my.erp.net/id/.well-known/openid-configuration");
}

#[test]
fn discovery_issuer_mismatch_is_never_papered_over() {
    let (mut session, request) = discovery_session(ROOT);
    let doc = r#"{"issuer":"https://evil.example/id","authorization_endpoint":"https://evil.example/a","token_endpoint":"https://evil.example/t"}"#;
    session.handle_response(T0, request.id, HttpResponse::new(200, doc)).unwrap();
    assert_eq!(drain(&mut session).events, vec![Event::DiscoveryFailed { error: DiscoveryError::IssuerMismatch }]);
    assert_eq!(DiscoveryError::IssuerMismatch.code(), "discovery_issuer_mismatch", "not the callback's `iss` code");
    assert_eq!(CallbackError::IssuerMismatch.code(), "issuer_mismatch");
    assert_eq!(session.sign_in(T0, SignInOptions::new()), Err(UsageError::ProviderNotReady));
    session.discover(T0).unwrap();
    assert_eq!(drain(&mut session).requests.len(), 1, "discover() tries again");
}

#[test]
fn erpnet_preset_falls_back_to_fixed_paths() {
    let (mut session, request) = discovery_session(ROOT);
    session.handle_transport_error(T0, request.id, TransportError::Connect).unwrap();
    let drained = drain(&mut session);
    assert_eq!(drained.events, vec![Event::ProviderReady { discovered: false }]);
    assert!(drained.persisted.is_empty(), "a fallback is not cached");
    let url = session.sign_in(T0, SignInOptions::new()).unwrap();
    assert!(url.starts_with("https://demodb.my.erp.net/id/connect/authorize?"));
}

#[test]
fn generic_discovery_refuses_insecure_endpoints() {
    let config = Config::discover("https://idp.example").client_id("a").redirect_uri(REDIRECT).build().unwrap();
    let mut session = Session::with_random(config, CountingRandom::default());
    let request = drain(&mut session).requests.remove(0);
    let doc = r#"{"issuer":"https://idp.example","authorization_endpoint":"https://idp.example/a","token_endpoint":"http://idp.example/t"}"#;
    session.handle_response(T0, request.id, HttpResponse::new(200, doc)).unwrap();
    let events = drain(&mut session).events;
    assert!(matches!(
        &events[..],
        [Event::DiscoveryFailed {
            error: DiscoveryError::BadEndpoint(ConfigError::InsecureUrl { field: "token_endpoint" })
        }]
    ));
}

#[test]
fn the_first_discovery_deadline_counts_from_the_first_input_not_from_zero() {
    let config = Config::discover("https://idp.example").client_id("a").redirect_uri(REDIRECT).build().unwrap();
    let mut session = Session::with_random(config, CountingRandom::default());
    let discovery = drain(&mut session).requests.remove(0);
    assert_eq!(discovery.deadline, None, "the session does not know the time yet");
    // The first input, long after 1970: the request is not overdue.
    session.handle_timeout(T0).unwrap();
    let out = drain(&mut session);
    assert!(out.events.is_empty(), "{:?}", out.events);
    assert_eq!(out.wait_until, Some(T0 + Timing::default().request_timeout_ms));
    session.handle_timeout(T0 + Timing::default().request_timeout_ms).unwrap();
    let out = drain(&mut session);
    assert!(matches!(out.events[..], [Event::DiscoveryFailed { .. }]), "{:?}", out.events);
}

/// Every request whose time the session keeps carries a limit the host can apply, from the
/// very first one: the discovery and auto-discovery a new session emits before it knows the
/// time say how long they may take from when they are sent (`timeout_ms`), and every later
/// one names its deadline too. A host that aborts the first discovery by it gets the
/// session's own answer to a timeout (the ERP.net preset's fixed paths), and a shared load
/// whose requester timed out is no longer wanted, so the next session asks again.
#[test]
fn every_request_the_session_times_carries_a_limit_from_the_first_one() {
    let timeout = Timing::default().request_timeout_ms;
    let config = Config::erpnet(ROOT).client_id(CLIENT_ID).client_secret(SECRET).redirect_uri(REDIRECT);
    let mut session = Session::with_random(config.build().unwrap(), CountingRandom::default());
    let first = drain(&mut session).requests;
    let kinds: Vec<RequestKind> = first.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RequestKind::Discovery, RequestKind::Sites]);
    for request in &first {
        assert_eq!(request.deadline, None, "{:?}: the session does not know the time yet", request.kind);
        assert_eq!(request.timeout_ms, Some(timeout), "{:?}: but the host knows how long it may take", request.kind);
    }
    // The host sent them at T0 and aborts them when their time is up.
    let sent_at = T0;
    for request in &first {
        session.handle_transport_error(sent_at + timeout, request.id, TransportError::Timeout).unwrap();
        let out = drain(&mut session);
        if request.kind == RequestKind::Discovery {
            assert_eq!(out.events, vec![Event::ProviderReady { discovered: false }], "the fixed paths stand in");
        }
        assert!(!session.is_request_wanted(request.id), "a shared load for it is abandoned");
    }

    // From the first input on, requests name their deadline as well.
    let mut session = signed_in(seed_builder());
    let now = T0 + 3_600_000;
    session.call_api(now, ApiRequest::get("Crm_Customers")).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    assert_eq!(
        (refresh.kind, refresh.deadline, refresh.timeout_ms),
        (RequestKind::Token, Some(now + timeout), Some(timeout))
    );
    session.sign_out(now, None).unwrap();
    let revocation = drain(&mut session).requests.into_iter().find(|r| r.kind == RequestKind::Revocation).unwrap();
    assert_eq!((revocation.deadline, revocation.timeout_ms), (Some(now + timeout), Some(timeout)));
    // An API call's time is its caller's (a long poll runs for minutes): none.
    let mut session = signed_in(seed_builder());
    session.call_api(T0, ApiRequest::get("Crm_Customers")).unwrap();
    let call = drain(&mut session).requests.remove(0);
    assert_eq!((call.kind, call.deadline, call.timeout_ms), (RequestKind::Api, None, None));
}

// ----- snapshots -----

#[test]
fn snapshot_round_trip_and_refusals() {
    let session = signed_in(seed_builder());
    let json = session.snapshot().to_json();
    let snapshot = Snapshot::from_json(&json).unwrap();
    assert_eq!(snapshot, session.snapshot());
    assert_eq!(snapshot.tokens().unwrap().expires_at(), Some(T0 + 3_600_000), "expiry is absolute");

    let v2 = json.replacen("\"version\":1", "\"version\":2", 1);
    assert_eq!(Snapshot::from_json(&v2), Err(SnapshotError::UnsupportedVersion { found: 2 }));
    assert!(matches!(Snapshot::from_json(&json[..json.len() / 2]), Err(SnapshotError::Corrupt { .. })));
    assert!(matches!(Snapshot::from_json("{\"tokens\":1}"), Err(SnapshotError::Corrupt { .. })));
    let wrong_type = json.replacen("\"received_at\":", "\"received_at\":\"rt-1\",\"x\":", 1);
    let error = Snapshot::from_json(&wrong_type).unwrap_err();
    assert!(!format!("{error} {error:?}").contains("rt-1"), "{error}");
    let inconsistent = json.replace(&format!("\"expires_at\":{}", T0 + 3_600_000), "\"expires_at\":1");
    assert!(matches!(Snapshot::from_json(&inconsistent), Err(SnapshotError::Inconsistent(_))));

    let other = Config::erpnet(ROOT)
        .client_id("other/app")
        .client_secret("x")
        .redirect_uri(REDIRECT)
        .discovery(false)
        .build()
        .unwrap();
    assert_eq!(Session::restore(other, snapshot, CountingRandom::default()).unwrap_err(), SnapshotError::OtherClient);
}

#[test]
fn pending_sign_in_survives_a_reload() {
    let (_, mut out) = to_pending(seed_builder().build().unwrap());
    let saved = out.persisted.pop().unwrap().to_json();
    // The page reloads: a new session from storage completes the sign-in.
    let snapshot = Snapshot::from_json(&saved).unwrap();
    let mut session = Session::restore(seed_builder().build().unwrap(), snapshot, SeededRandom::new(9)).unwrap();
    session.handle_callback(T0 + 30_000, Callback::Url(&first_callback())).unwrap();
    let exchange = drain(&mut session).requests.remove(0);
    assert!(exchange
        .body_text()
        .unwrap()
        .contains(&format!("code_verifier={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([2u8; 32]))));
}

#[test]
fn tokens_kept_in_memory_never_reach_a_snapshot() {
    let memory_only = || seed_builder().persist_tokens(false);
    // The pending sign-in is persisted across the redirect; the tokens that follow are not.
    let (_, mut out) = to_pending(memory_only().build().unwrap());
    let pending = out.persisted.pop().unwrap();
    assert!(pending.pending().is_some());
    let mut session = Session::restore(memory_only().build().unwrap(), pending, CountingRandom::default()).unwrap();
    let request = exchange(&mut session, &first_callback());
    let body = r#"{"access_token":"at-1","expires_in":3600,"refresh_token":"rt-1","id_token":"h.p.s"}"#;
    let out = redeem(&mut session, &request, body);
    assert!(session.is_signed_in());
    let stored: Vec<String> = out.persisted.iter().map(Snapshot::to_json).collect();
    assert!(!stored.is_empty(), "the cleared pending sign-in is persisted");
    for json in stored.iter().chain([&state_of(&session)]) {
        assert!(!json.contains("at-1") && !json.contains("rt-1") && !json.contains("h.p.s"), "{json}");
        let snapshot = Snapshot::from_json(json).unwrap();
        assert!(snapshot.pending().is_none() && snapshot.tokens().is_none() && snapshot.id_token().is_none());
    }

    // A token-less snapshot from the store neither signs the session out nor in.
    let stored = session.snapshot();
    session.handle_snapshot(T0 + 1, stored).unwrap();
    drain(&mut session);
    assert!(session.is_signed_in());
    session.call_api(T0 + 2, ApiRequest::get("Crm_Customers")).unwrap();
    let call = drain(&mut session).requests.remove(0);
    assert_eq!(call.header("authorization"), Some("Bearer at-1"));

    // After a reload (restored from what was stored after the sign-in), the next write
    // replaces that snapshot: its base is the stored generation, which a compare-and-swap
    // store compares against.
    let after_sign_in = out.persisted.last().unwrap().clone();
    assert_eq!(after_sign_in.generation(), 1);
    let mut reloaded =
        Session::restore(memory_only().build().unwrap(), after_sign_in, CountingRandom::default()).unwrap();
    drain(&mut reloaded);
    reloaded.sign_in(T0, SignInOptions::new().prompt("none")).unwrap();
    let write = drain(&mut reloaded).persisted.pop().unwrap();
    assert!(write.pending().is_some());
    assert!(write.base_generation() >= 1, "accepted by a store holding generation 1");

    // Tokens written to the store by a persisting version are ignored (and overwritten).
    let full = signed_in(seed_builder()).snapshot();
    let restored = Session::restore(memory_only().build().unwrap(), full, CountingRandom::default()).unwrap();
    assert!(!restored.is_signed_in());
    assert!(restored.snapshot().tokens().is_none());
}

#[test]
fn every_answer_the_session_reads_has_a_size_limit_the_host_can_enforce() {
    for kind in
        [RequestKind::Discovery, RequestKind::Token, RequestKind::Keys, RequestKind::UserInfo, RequestKind::Revocation]
    {
        let limit = kind.max_response_bytes().unwrap();
        assert!((4 * 1024..=512 * 1024).contains(&limit), "{kind:?} {limit}");
    }
    assert_eq!(RequestKind::Api.max_response_bytes(), None, "API bodies go to the caller unread");

    // One byte past the token limit is enough for a clean refusal.
    let mut session = signed_in(seed_builder());
    session.call_api(T0 + 3_600_000, ApiRequest::get("Crm_Customers")).unwrap();
    let refresh = drain(&mut session).requests.into_iter().find(|r| r.kind == RequestKind::Token).unwrap();
    let limit = RequestKind::Token.max_response_bytes().unwrap();
    let body = format!("{{\"access_token\":\"{}", "a".repeat(limit));
    session.handle_response(T0 + 3_600_000, refresh.id, HttpResponse::new(200, body)).unwrap();
    let events = drain(&mut session).events;
    assert!(events.iter().any(|e| format!("{e:?}").contains("TooLarge")), "{events:?}");
    assert!(session.is_signed_in(), "the tokens are kept");
}

// ----- client credentials -----

#[test]
fn client_credentials_gets_a_token_and_renews_by_asking_again() {
    let config = Config::erpnet(ROOT)
        .client_id("svc/app")
        .client_secret(SECRET)
        .client_credentials()
        .scope("read update")
        .discovery(false)
        .build()
        .unwrap();
    let mut session = Session::with_random(config, CountingRandom::default());
    let mut idp = SimIdp::new(ROOT, "svc/app", Some(SECRET));
    idp.access_ttl_secs = 600;
    let call = session.call_api(T0, ApiRequest::get("Crm_Sales_Customers")).unwrap();
    let request = drain(&mut session).requests.remove(0);
    assert_eq!(
        request.body_text().unwrap(),
        "client_id=svc%2Fapp&client_secret=s3cr%2Bt%2F%3D&grant_type=client_credentials&scope=read+update"
    );
    let response = idp.handle(T0, &request);
    session.handle_response(T0, request.id, response).unwrap();
    let drained = drain(&mut session);
    assert!(matches!(drained.events[..], [Event::TokensRenewed { .. }]));
    assert_eq!(drained.requests[0].kind, RequestKind::Api);
    // One process's token (ERP.net's licence rule): never in a snapshot, so never in a
    // shared store.
    assert!(drained.persisted.iter().all(|s| s.tokens().is_none()));
    assert!(session.snapshot().tokens().is_none());
    let response = idp.handle(T0, &drained.requests[0]);
    session.handle_response(T0, drained.requests[0].id, response).unwrap();
    let drained = drain(&mut session);
    assert!(
        matches!(&drained.events[..], [Event::CallCompleted { call: c, response, .. }] if *c == call && response.status == 200)
    );
    // At the renewal time (60 s before the 600 s expiry) it asks again with the same grant.
    assert_eq!(drained.wait_until, Some(T0 + 540_000));
    session.handle_timeout(T0 + 540_000).unwrap();
    let again = drain(&mut session).requests.remove(0);
    assert!(again.body_text().unwrap().contains("grant_type=client_credentials"));
    assert_eq!(idp.stats.client_credentials, 1);
}

// ----- sign-out -----

#[test]
fn sign_out_revokes_and_returns_the_end_session_url() {
    let mut session = signed_in(seed_builder());
    let end = session.sign_out(T0, Some("http://localhost/signed-out")).unwrap().unwrap();
    assert!(end.starts_with("https://demodb.my.erp.net/id/connect/endsession?id_token_hint=h.p.s&post_logout_redirect_uri=http%3A%2F%2Flocalhost%2Fsigned-out&state="), "{end}");
    let drained = drain(&mut session);
    assert_eq!(drained.requests.len(), 1);
    assert_eq!(drained.requests[0].url, "https://demodb.my.erp.net/id/connect/revocation");
    assert_eq!(
        drained.requests[0].body_text().unwrap(),
        "client_id=my.trusted.app%2Ffirst&client_secret=s3cr%2Bt%2F%3D&token=rt-1&token_type_hint=refresh_token"
    );
    assert!(drained.persisted[0].tokens().is_none());
    assert_eq!(drained.events, vec![Event::SignedOut]);
    assert!(!session.is_signed_in());
}

// ----- redaction -----

#[test]
fn secrets_never_print() {
    let mut session = signed_in(seed_builder().client_auth(ClientAuth::ClientSecretBasic));
    session.call_api(T0, ApiRequest::get("Crm_Sales_Customers?$filter=x")).unwrap();
    let drained = drain(&mut session);
    let request = drained.requests[0].clone();
    let snapshot = session.snapshot();
    let printed = format!(
        "{session:?} {snapshot:?} {request:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        seed_builder().build().unwrap(),
        ClientSecret::new(SECRET),
        AccessToken::new("at-1"),
        PkceVerifier::new("verifier-xyz"),
        AuthorizationCode::new("code-xyz"),
        HttpResponse::new(200, r#"{"access_token":"at-1"}"#),
    );
    for secret in [SECRET, "at-1", "rt-1", "h.p.s", "verifier-xyz", "code-xyz", &first_state()] {
        assert!(!printed.contains(secret), "{secret} printed in {printed}");
    }
    assert!(printed.contains("[redacted]"));
}

#[test]
fn token_is_only_sent_to_api_origins() {
    let mut session = signed_in(seed_builder().allow_api_origin("https://files.demodb.my.erp.net"));
    for url in [
        "https://evil.example/api",
        "http://demodb.my.erp.net/api/domain/odata/x",
        "https://demodb.my.erp.net:8443/x",
        "https://demodb.my.erp.net.evil.example/x",
    ] {
        let refused = session.call_api(T0, ApiRequest::get(url));
        assert!(matches!(refused, Err(CallError::ForeignOrigin { .. })), "{url}");
    }
    assert_eq!(
        session.call_api(T0, ApiRequest::get("x").with_header("authorization", "Bearer mine")),
        Err(CallError::AuthorizationHeader)
    );
    assert!(drain(&mut session).requests.is_empty());
    session.call_api(T0, ApiRequest::get("https://files.demodb.my.erp.net/blob/1")).unwrap();
    assert_eq!(drain(&mut session).requests[0].url, "https://files.demodb.my.erp.net/blob/1");
}

/// RFC 9207: `iss` is required when the provider promises it, except where an ID token in
/// this very response is validated (the hybrid flow); a stray `id_token` parameter in a code
/// flow's callback does not waive it. A refusal after the state matched spends the state.
#[test]
fn rfc9207_iss_is_required_unless_an_id_token_names_the_issuer() {
    let mut metadata = ProviderMetadata::new(
        format!("{ROOT}/id"),
        format!("{ROOT}/id/connect/authorize"),
        format!("{ROOT}/id/connect/token"),
    );
    metadata.authorization_response_iss_parameter_supported = true;
    for (response_type, params, refusal) in [
        (ResponseType::Code, "code=c", Some(CallbackError::MissingIssuer)),
        (ResponseType::Code, "code=c&id_token=h.p.s", Some(CallbackError::MissingIssuer)),
        (ResponseType::Code, "code=c&iss=https%3A%2F%2Fdemodb.my.erp.net%2Fid", None),
        (ResponseType::CodeIdToken, "code=c&id_token=h.p.s", None),
        (
            ResponseType::CodeIdToken,
            "code=c&id_token=h.p.s&iss=https%3A%2F%2Fevil.example",
            Some(CallbackError::IssuerMismatch),
        ),
    ] {
        let config = Config::with_endpoints(metadata.clone())
            .client_id(CLIENT_ID)
            .client_secret(SECRET)
            .redirect_uri(REDIRECT)
            .response_type(response_type)
            .validate_id_tokens(false)
            .build()
            .unwrap();
        let (mut session, _) = to_pending(config);
        let separator = if response_type == ResponseType::Code { '?' } else { '#' };
        let url = format!("{REDIRECT}{separator}{params}&state={}", first_state());
        assert_eq!(session.handle_callback(T0, Callback::Url(&url)), Ok(()), "{params}");
        let events = drain(&mut session).events;
        match refusal {
            Some(error) => {
                assert_eq!(events, vec![Event::SignInFailed { error: SignInError::Callback(error) }], "{params}")
            }
            // Accepted: no refusal (the hybrid one then fails on its placeholder ID token).
            None => assert!(
                !events.iter().any(|e| matches!(e, Event::SignInFailed { error: SignInError::Callback(_) })),
                "{params}: {events:?}"
            ),
        }
        assert!(!session.is_sign_in_pending(), "{params}: the state is spent either way");
    }
}

#[test]
fn a_snapshot_before_draining_is_a_usage_error() {
    let mut session = signed_in(seed_builder());
    let snapshot = session.snapshot();
    session.call_api(T0, ApiRequest::get("Crm_Customers")).unwrap();
    let error = session.handle_snapshot(T0, snapshot).unwrap_err();
    assert_eq!(error, SnapshotError::Usage(UsageError::NotDrained));
    assert_eq!(error.code(), "not_drained");
}

#[test]
fn restore_fetches_discovery_only_when_the_snapshot_lacks_metadata() {
    let config =
        || Config::erpnet(ROOT).client_id(CLIENT_ID).client_secret(SECRET).redirect_uri(REDIRECT).build().unwrap();
    let mut fresh = Session::with_random(config(), CountingRandom::default());
    let request = drain(&mut fresh).requests.remove(0);
    let without_metadata = fresh.snapshot();
    assert!(without_metadata.metadata().is_none());
    let mut restored = Session::restore(config(), without_metadata, CountingRandom::default()).unwrap();
    let again: Vec<HttpRequest> =
        drain(&mut restored).requests.into_iter().filter(|r| r.kind != RequestKind::Sites).collect();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].kind), (RequestId(1), RequestKind::Discovery));

    let doc = SimIdp::new(ROOT, CLIENT_ID, Some(SECRET)).handle(T0, &request);
    fresh.handle_response(T0, request.id, doc).unwrap();
    drain(&mut fresh);
    let mut restored = Session::restore(config(), fresh.snapshot(), CountingRandom::default()).unwrap();
    assert!(drain(&mut restored).requests.iter().all(|r| r.kind == RequestKind::Sites));
    assert!(restored.is_provider_ready());
}

// ----- reference tokens (ERP.net Automation) -----

#[test]
fn a_reference_token_is_a_static_bearer_confined_to_the_api_and_ends_typed_on_401() {
    let config = Config::erpnet(ROOT).reference_token("enrt_abc123").build().unwrap();
    assert_eq!(config.grant(), GrantKind::ReferenceToken);
    let mut session = Session::with_random(config, CountingRandom::default());
    let out = drain(&mut session);
    let kinds: Vec<RequestKind> = out.requests.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, vec![RequestKind::Sites], "no OpenID discovery, no token request, only the instance's sites");
    session.handle_response(T0, out.requests[0].id, HttpResponse::new(404, "")).unwrap();
    let legacy = drain(&mut session).requests.remove(0);
    assert_eq!(legacy.url, format!("{ROOT}/sys/auto-discovery"));
    session.handle_response(T0, legacy.id, HttpResponse::new(404, "")).unwrap();
    drain(&mut session);
    assert!(session.is_signed_in());
    assert!(!state_of(&session).contains("enrt_"), "the token lives in the configuration only");

    session.call_api(T0, ApiRequest::get("Crm_Customers?$top=1")).unwrap();
    let call = drain(&mut session).requests.remove(0);
    assert_eq!(call.url, format!("{ROOT}/api/domain/odata/Crm_Customers?$top=1"));
    assert_eq!(call.header("authorization"), Some("Bearer enrt_abc123"));
    assert!(!format!("{call:?}").contains("enrt_"), "redacted in Debug");
    session.handle_response(T0, call.id, HttpResponse::new(200, "{}")).unwrap();
    drain(&mut session);
    assert_eq!(
        session.call_api(T0, ApiRequest::get("https://evil.example/x")).unwrap_err().code(),
        "foreign_origin",
        "confined to the API origins"
    );

    // Revoked: the 401 ends it with a typed reason, once; nothing tries to renew it.
    let id = session.call_api(T0 + 1, ApiRequest::get("Crm_Customers")).unwrap();
    let call = drain(&mut session).requests.remove(0);
    session.handle_response(T0 + 1, call.id, HttpResponse::new(401, "")).unwrap();
    let out = drain(&mut session);
    assert!(out.requests.is_empty(), "no token request: {:?}", out.requests);
    let reason = SignInRequiredReason::ReferenceTokenRejected;
    assert!(out.events.contains(&Event::SignInRequired { reason: reason.clone() }), "{:?}", out.events);
    assert!(out.events.contains(&Event::CallFailed { call: id, error: CallFailure::SignInRequired(reason) }));
    assert!(!session.is_signed_in());

    for bad in ["", "enrt_a\r\nX-Injected: 1", "enrt_ä"] {
        let error = Config::erpnet(ROOT).reference_token(bad).build().unwrap_err();
        assert_eq!(error, ConfigError::InvalidReferenceToken);
        assert!(!error.to_string().contains("enrt_"));
    }
}

// ----- ERP.net auto-discovery and the profile site -----

const SITES: &str = r#"{"Host":"demodb.my.erp.net","DbName":"demodb","WebSites":[
    {"Type":"ID","Status":"Working","Url":"https://demodb.my.erp.net/id"},
    {"Type":"DomainAPI","Status":"Working","Url":"https://demodb.my.erp.net/api2",
     "AdditionalProperties":{"ODataServiceRoot":"https://demodb.my.erp.net/api2/domain/odata/"}},
    {"Type":"UserProfile","Status":"Working","Url":"https://demodb.my.erp.net/profile"},
    {"Type":"TableAPI","Status":"NotWorking","StatusDescription":"stopped","Url":"https://demodb.my.erp.net/tables"}]}"#;

#[test]
fn the_instance_root_is_enough_sites_come_from_auto_discovery() {
    let config = || Config::erpnet(ROOT).reference_token("enrt_abc123").build().unwrap();
    let mut session = Session::with_random(config(), CountingRandom::default());
    let sites = drain(&mut session).requests.remove(0);
    assert_eq!(
        (sites.kind, sites.url.as_str()),
        (RequestKind::Sites, "https://demodb.my.erp.net/tools/auto-discovery")
    );
    assert!(sites.header("authorization").is_none(), "the document is public: no token");

    // A call made before the answer waits: its relative URL resolves against the discovered root.
    let call = session.call_api(T0, ApiRequest::get("Crm_Customers")).unwrap();
    assert!(drain(&mut session).requests.is_empty());
    session.handle_response(T0, sites.id, HttpResponse::new(200, SITES)).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests[0].url, "https://demodb.my.erp.net/api2/domain/odata/Crm_Customers");
    assert_eq!(out.requests[0].call, Some(call));
    assert!(out.events.iter().any(|e| matches!(e, Event::SitesDiscovered { .. })));
    assert!(out.events.contains(&Event::SiteSkipped {
        site: SkippedSite::NotWorking { site_type: "TableAPI".into(), description: Some("stopped".into()) }
    }));
    assert_eq!(session.profile_site(), Some("https://demodb.my.erp.net/profile/"));

    // Cached in the snapshot: a restored session does not ask again.
    let mut restored = Session::restore(config(), session.snapshot(), CountingRandom::default()).unwrap();
    assert!(drain(&mut restored).requests.is_empty());
    // A store writer cannot move the calls off the instance: foreign sites are dropped.
    let mut planted: serde_json::Value = serde_json::from_str(&session.snapshot().to_json()).unwrap();
    planted["sites"]["odata_root"] = "https://evil.example/odata/".into();
    let planted = Snapshot::from_json(&planted.to_string()).unwrap();
    let mut restored = Session::restore(config(), planted, CountingRandom::default()).unwrap();
    drain(&mut restored);
    restored.call_api(T0, ApiRequest::get("Crm_Customers")).unwrap();
    assert_eq!(drain(&mut restored).requests[0].url, format!("{ROOT}/api/domain/odata/Crm_Customers"));

    // An explicit API root wins over the discovered one.
    let explicit = Config::erpnet(ROOT).reference_token("enrt_abc123").api_root(format!("{ROOT}/api/domain/odata/"));
    let mut session = Session::with_random(explicit.build().unwrap(), CountingRandom::default());
    let sites = drain(&mut session).requests.remove(0);
    session.handle_response(T0, sites.id, HttpResponse::new(200, SITES)).unwrap();
    drain(&mut session);
    session.call_api(T0, ApiRequest::get("Crm_Customers")).unwrap();
    assert_eq!(drain(&mut session).requests[0].url, format!("{ROOT}/api/domain/odata/Crm_Customers"));
}

#[test]
fn who_am_i_through_the_profile_site() {
    let mut session = Session::with_random(
        Config::erpnet(ROOT).reference_token("enrt_abc123").build().unwrap(),
        CountingRandom::default(),
    );
    let sites = drain(&mut session).requests.remove(0);
    assert_eq!(session.fetch_profile(T0), Err(UsageError::NoEndpoint), "before the sites are known");
    session.handle_response(T0, sites.id, HttpResponse::new(200, SITES)).unwrap();
    drain(&mut session);
    let call = session.fetch_profile(T0).unwrap();
    let me = drain(&mut session).requests.remove(0);
    assert_eq!((me.kind, me.url.as_str()), (RequestKind::Profile, "https://demodb.my.erp.net/profile/me"));
    assert_eq!(me.header("authorization"), Some("Bearer enrt_abc123"));
    let body = r#"{"id":"6f1c","login":"admin","name":"Admin","email":"admin@mail.com","isAdmin":true}"#;
    session.handle_response(T0, me.id, HttpResponse::new(200, body)).unwrap();
    let out = drain(&mut session);
    let [Event::ProfileReceived { call: c, profile }] = &out.events[..] else { panic!("{:?}", out.events) };
    assert_eq!((*c, profile["id"].as_str(), profile["login"].as_str()), (call, Some("6f1c"), Some("admin")));

    let call = session.fetch_profile(T0).unwrap();
    let me = drain(&mut session).requests.remove(0);
    session.handle_response(T0, me.id, HttpResponse::new(200, r#"{"name":"no id"}"#)).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.events, vec![Event::ProfileFailed { call, error: UserInfoError::Malformed }]);
}
