//! Golden tests: the exact requests of the seed page
//! (`renew-access-token-via-refresh-token.md`), byte for byte.

mod common;

use base64::Engine;
use common::*;
use erpnet_auth::config::{ClientAuth, ResponseType};
use erpnet_auth::install::{
    application_secret_hash, install_link, Impersonation, InstallClientType, ReferenceTokenIssuers, ServiceAccess,
    TrustedApplication,
};
use erpnet_auth::secret::PkceVerifier;
use erpnet_auth::*;

fn b64url(byte: u8) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([byte; 32])
}

/// The seed's authorize request: hybrid, its exact scope, no PKCE (the seed sends none).
#[test]
fn seed_authorize_request() {
    let config = seed_builder().scope(SEED_SCOPE).response_type(ResponseType::CodeIdToken).pkce(false).build().unwrap();
    let mut session = Session::with_random(config, CountingRandom::default());
    let url = session.sign_in(T0, SignInOptions::new()).unwrap();
    let (state, nonce) = (b64url(0), b64url(1));
    assert_eq!(
        url,
        format!(
            "https://demodb.my.erp.net/id/connect/authorize?client_id=my.trusted.app%2Ffirst\
             &redirect_uri=http%3A%2F%2Flocalhost%2Fsignin-callback&response_type=code+id_token\
             &scope=openid+profile+offline_access+DomainApi&nonce={nonce}&state={state}"
        )
    );
    let drained = drain(&mut session);
    let kinds: Vec<RequestKind> = drained.requests.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RequestKind::Keys], "the front channel's keys are fetched while the user signs in");
    assert_eq!(drained.persisted.len(), 1, "the pending sign-in is persisted");
    assert!(drained.persisted[0].pending().is_some());
}

/// Today's shape: `code` with PKCE S256 and the preset's default scope, plus options.
#[test]
fn preset_authorize_request_with_pkce_and_options() {
    let config = seed_builder().build().unwrap();
    let mut session = Session::with_random(config, CountingRandom::default());
    let options = SignInOptions::new()
        .prompt("login")
        .login_hint("admin")
        .ui_locales("bg en")
        .param("acr_values", "idp:local")
        .param("state", "ignored");
    let url = session.sign_in(T0, options).unwrap();
    let verifier = PkceVerifier::new(b64url(2));
    assert_eq!(
        url,
        format!(
            "https://demodb.my.erp.net/id/connect/authorize?client_id=my.trusted.app%2Ffirst\
             &redirect_uri=http%3A%2F%2Flocalhost%2Fsignin-callback&response_type=code\
             &scope=openid+profile+offline_access+read&nonce={}&state={}&code_challenge={}\
             &code_challenge_method=S256&prompt=login&login_hint=admin&ui_locales=bg+en&acr_values=idp%3Alocal",
            b64url(1),
            b64url(0),
            verifier.s256_challenge()
        )
    );
}

#[test]
fn pkce_rfc7636_appendix_b() {
    let verifier = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
    assert_eq!(verifier.s256_challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

#[test]
fn application_secret_hash_matches_erpnet_formula() {
    // base64(sha256(utf8("my-secret"))), computed independently with coreutils:
    // printf %s my-secret | sha256sum | xxd -r -p | base64
    assert_eq!(application_secret_hash("my-secret"), "GG73bp1qcj7LVw1NnCh0h9AB5dNfftSjEzUKQHlQMY4=");
    assert_eq!(application_secret_hash(""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
}

/// Signs the seed's app in (hybrid, fragment) up to the emitted code exchange.
fn seed_session_at_exchange(auth: ClientAuth, secret: Option<&str>) -> (Session, HttpRequest) {
    let mut builder = Config::erpnet(ROOT)
        .client_id(CLIENT_ID)
        .redirect_uri(REDIRECT)
        .discovery(false)
        .scope(SEED_SCOPE)
        .response_type(ResponseType::CodeIdToken)
        .pkce(false)
        .validate_id_tokens(false)
        .client_auth(auth);
    if let Some(secret) = secret {
        builder = builder.client_secret(secret);
    }
    let config = builder.build().unwrap();
    let (mut session, mut out) = to_pending(config);
    // The front channel's ID token is checked before the code is redeemed: its keys first.
    let keys = out.requests.remove(0);
    assert_eq!(keys.kind, RequestKind::Keys);
    let signer = erpnet_auth_sim::Signer::from_seed(7, "seed-key");
    let jwks = serde_json::json!({ "keys": [signer.jwk()] }).to_string();
    session.handle_response(T0, keys.id, HttpResponse::new(200, jwks)).unwrap();
    drain(&mut session);
    let (code, state) = ("g0ZGZmNjVmOWI", b64url(0));
    let id_token = signer.sign(&serde_json::json!({
        "iss": format!("{ROOT}/id"), "sub": "admin", "aud": CLIENT_ID, "iat": T0 / 1000, "exp": T0 / 1000 + 300,
        "nonce": b64url(1), "c_hash": erpnet_auth_sim::left_hash(code), "s_hash": erpnet_auth_sim::left_hash(&state),
    }));
    let callback = format!("http://localhost/signin-callback#code={code}&id_token={id_token}&state={state}");
    session.handle_callback(T0 + 5_000, Callback::Url(&callback)).unwrap();
    let drained = drain(&mut session);
    assert_eq!(drained.requests.len(), 1);
    let request = drained.requests.into_iter().next().unwrap();
    (session, request)
}

#[test]
fn seed_code_exchange_client_secret_post() {
    let (_, req) = seed_session_at_exchange(ClientAuth::ClientSecretPost, Some(SECRET));
    assert_eq!(req.method, Method::Post);
    assert_eq!(req.url, "https://demodb.my.erp.net/id/connect/token");
    assert_eq!(req.kind, RequestKind::Token);
    assert_eq!(
        req.headers,
        vec![
            ("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
            ("Accept".to_owned(), "application/json".to_owned()),
        ]
    );
    assert_eq!(
        req.body_text().unwrap(),
        "client_id=my.trusted.app%2Ffirst&client_secret=s3cr%2Bt%2F%3D&grant_type=authorization_code\
         &code=g0ZGZmNjVmOWI&redirect_uri=http%3A%2F%2Flocalhost%2Fsignin-callback"
    );
}

#[test]
fn seed_code_exchange_client_secret_basic() {
    let (_, req) = seed_session_at_exchange(ClientAuth::ClientSecretBasic, Some(SECRET));
    // RFC 6749 §2.3.1: form-encode id and secret, then base64 "id:secret".
    let credentials = base64::engine::general_purpose::STANDARD.encode("my.trusted.app%2Ffirst:s3cr%2Bt%2F%3D");
    assert_eq!(req.header("authorization"), Some(format!("Basic {credentials}").as_str()));
    assert_eq!(
        req.body_text().unwrap(),
        "grant_type=authorization_code&code=g0ZGZmNjVmOWI&redirect_uri=http%3A%2F%2Flocalhost%2Fsignin-callback"
    );
}

#[test]
fn public_client_code_exchange_sends_id_and_verifier_never_a_secret() {
    let config = Config::erpnet(ROOT).client_id(CLIENT_ID).redirect_uri(REDIRECT).discovery(false).build().unwrap();
    let (mut session, _) = to_pending(config);
    let callback = format!("http://localhost/signin-callback?code=g0ZGZmNjVmOWI&state={}&scope=openid", b64url(0));
    session.handle_callback(T0 + 1, Callback::Url(&callback)).unwrap();
    let req = drain(&mut session).requests.remove(0);
    assert_eq!(req.header("authorization"), None);
    assert_eq!(
        req.body_text().unwrap(),
        format!(
            "client_id=my.trusted.app%2Ffirst&grant_type=authorization_code&code=g0ZGZmNjVmOWI\
             &redirect_uri=http%3A%2F%2Flocalhost%2Fsignin-callback&code_verifier={}",
            b64url(2)
        )
    );
}

/// The seed's first token response, verbatim.
pub const SEED_TOKEN_RESPONSE: &str = include_str!("data/seed-token-response.json");
/// The seed's refresh response, verbatim.
pub const SEED_REFRESH_RESPONSE: &str = include_str!("data/seed-refresh-response.json");

#[test]
fn seed_responses_parse_and_refresh_request_is_exact() {
    let (mut session, exchange) = seed_session_at_exchange(ClientAuth::ClientSecretPost, Some(SECRET));
    // The exchange left at the callback (T0 + 5 s); its answer came a second later. Expiry
    // counts from when the request left.
    let (sent, t) = (T0 + 5_000, T0 + 6_000);
    session.handle_response(t, exchange.id, HttpResponse::new(200, SEED_TOKEN_RESPONSE)).unwrap();
    let drained = drain(&mut session);
    assert_eq!(
        drained.events,
        vec![Event::SignedIn {
            scope: Some(SEED_SCOPE.replace("offline_access DomainApi", "DomainApi offline_access")),
            expires_at: Some(sent + 3_600_000)
        }]
    );
    let stored = drained.persisted[0].tokens().cloned().unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "6-Cv7vQ5ouhYzs0AWg6tsG-YK7O5xP_kb5Qb8wEJMnw");
    assert_eq!(stored.expires_at(), Some(sent + 3_600_000));
    assert_eq!(drained.wait_until, None, "a session nobody used is not renewed on a timer");

    // The seed's API call: the session is in use, so proactive renewal is scheduled 60 s
    // before expiry.
    session.call_api(t, ApiRequest::get("Crm_Customers?$top=10")).unwrap();
    let call = drain(&mut session).requests.remove(0);
    session.handle_response(t, call.id, HttpResponse::new(200, r#"{"value":[]}"#)).unwrap();
    assert_eq!(drain(&mut session).wait_until, Some(sent + 3_600_000 - 60_000));
    let t = sent;
    session.handle_timeout(t + 3_600_000 - 60_000).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    assert_eq!(refresh.url, "https://demodb.my.erp.net/id/connect/token");
    assert_eq!(
        refresh.body_text().unwrap(),
        "client_id=my.trusted.app%2Ffirst&client_secret=s3cr%2Bt%2F%3D&grant_type=refresh_token\
         &refresh_token=6-Cv7vQ5ouhYzs0AWg6tsG-YK7O5xP_kb5Qb8wEJMnw"
    );
    session.handle_response(t + 3_541_000, refresh.id, HttpResponse::new(200, SEED_REFRESH_RESPONSE)).unwrap();
    let drained = drain(&mut session);
    assert!(matches!(drained.events[..], [Event::TokensRenewed { .. }]));
    let stored = session.snapshot().tokens().cloned().unwrap();
    assert_eq!(stored.refresh_token().unwrap().secret(), "SvQvQ9cxcYzs0AWg6tsGW1-YK7O5xP_k98868wEEMjr");
    assert!(stored.access_token().secret().starts_with("eyJhbGciOiJIUzI1NiJ9."));
}

#[test]
fn seed_api_call_is_exact() {
    let (mut session, exchange) = seed_session_at_exchange(ClientAuth::ClientSecretPost, Some(SECRET));
    session.handle_response(T0 + 6_000, exchange.id, HttpResponse::new(200, SEED_TOKEN_RESPONSE)).unwrap();
    drain(&mut session);
    session.call_api(T0 + 7_000, ApiRequest::get("Crm_Customers?$top=10")).unwrap();
    let req = drain(&mut session).requests.remove(0);
    assert_eq!(req.method, Method::Get);
    assert_eq!(req.url, "https://demodb.my.erp.net/api/domain/odata/Crm_Customers?$top=10");
    let token: serde_json::Value = serde_json::from_str(SEED_TOKEN_RESPONSE).unwrap();
    assert_eq!(
        req.headers,
        vec![("Authorization".to_owned(), format!("Bearer {}", token["access_token"].as_str().unwrap()))]
    );
    assert_eq!(req.body, None);
}

/// The install link of the seed page's trusted application, character for character, and
/// the combinations ERP.net refuses.
#[test]
fn install_link_for_a_trusted_application() {
    let mut web = TrustedApplication::new("my.trusted.app/first", InstallClientType::Confidential);
    web.application_name = Some("My app & co".to_owned());
    web.redirect_uri = Some("http://localhost/signin-callback".to_owned());
    web.impersonate = Impersonation::Internal;
    web.request_secret = true;
    web.scope = Some("openid profile offline_access read update".to_owned());
    assert_eq!(
        install_link("https://demodb.my.erp.net", &web).unwrap(),
        "https://demodb.my.erp.net/manage/apps/install?applicationUri=my.trusted.app%2Ffirst\
         &redirectUri=http%3A%2F%2Flocalhost%2Fsignin-callback&applicationName=My+app+%26+co\
         &clientType=Confidential&impersonate=internal&requestSecret=true&serviceAccess=none\
         &referenceTokens=none&scope=openid+profile+offline_access+read+update"
    );

    let mut service = TrustedApplication::new("my.service", InstallClientType::Confidential);
    service.service_access = ServiceAccess::ClientCredentials;
    service.reference_tokens = ReferenceTokenIssuers::AdministratorsOnly;
    assert_eq!(
        install_link("https://demodb.my.erp.net/", &service).unwrap(),
        "https://demodb.my.erp.net/manage/apps/install?applicationUri=my.service&clientType=Confidential\
         &impersonate=none&requestSecret=false&serviceAccess=clientCredentials&referenceTokens=administratorsOnly"
    );

    let mut spa = TrustedApplication::new("my.spa", InstallClientType::Public);
    spa.redirect_uri = Some("https://app.example/".to_owned());
    spa.impersonate = Impersonation::All;
    assert!(install_link("https://demodb.my.erp.net", &spa).unwrap().contains("clientType=Public&impersonate=all"));
    let with = |change: &dyn Fn(&mut TrustedApplication)| {
        let mut app = spa.clone();
        change(&mut app);
        app
    };
    let refusals: Vec<(TrustedApplication, &str)> = vec![
        (with(&|a| a.request_secret = true), "install_refused"),
        (with(&|a| a.impersonate = Impersonation::None), "install_refused"),
        (with(&|a| a.redirect_uri = None), "install_refused"),
        (with(&|a| a.service_access = ServiceAccess::ClientCredentials), "install_refused"),
        (with(&|a| a.redirect_uri = Some("http://app.example/".to_owned())), "insecure_url"),
        (with(&|a| a.application_uri = " ".to_owned()), "invalid_client_id"),
        (with(&|a| a.scope = Some("read \"x\"".to_owned())), "invalid_scope"),
    ];
    for (app, code) in refusals {
        assert_eq!(install_link("https://demodb.my.erp.net", &app).unwrap_err().code(), code, "{app:?}");
    }
    assert_eq!(install_link("demodb.my.erp.net", &spa).unwrap_err().code(), "invalid_url");
}
