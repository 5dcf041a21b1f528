//! Helpers shared by the integration tests: configuration of the seed's trusted app, a loop
//! driver that drains `poll()` as the contract says, and the states a test starts from,
//! reached by name (`to_pending`, `to_exchanging`, `to_signed_in`, `to_refreshing`) instead
//! of each file's own copy of the sign-in sequence.
#![allow(dead_code, unused_imports)]

use base64::Engine;
use erpnet_auth::{
    Callback, Config, ConfigBuilder, Event, HttpRequest, HttpResponse, Output, RequestKind, Session, SignInOptions,
    Snapshot, Timing,
};
pub use erpnet_auth_sim::{CountingRandom, SeededRandom, SimIdp};

pub const ROOT: &str = "https://demodb.my.erp.net";
pub const CLIENT_ID: &str = "my.trusted.app/first";
pub const SECRET: &str = "s3cr+t/=";
pub const REDIRECT: &str = "http://localhost/signin-callback";
pub const SEED_SCOPE: &str = "openid profile offline_access DomainApi";
/// 2022-06-12T18:22:04Z, the seed's `iat`.
pub const T0: u64 = 1_655_057_724_000;

/// The seed page's trusted application, without discovery (fixed ERP.net paths). These
/// tests feed placeholder ID tokens (and the seed's own, from another issuer), so ID token
/// validation is off here; tests/id_tokens.rs covers it with real signed tokens.
///
/// With `ERPNET_TEST_HOST_SIGNATURES=1` every such session lets the host verify signatures
/// (`drain` answers the checks): `make rust-test` runs the ID token and hostile tests both
/// ways.
pub fn seed_builder() -> ConfigBuilder {
    Config::erpnet(ROOT)
        .client_id(CLIENT_ID)
        .client_secret(SECRET)
        .redirect_uri(REDIRECT)
        .discovery(false)
        .validate_id_tokens(false)
        .host_verifies_signatures(host_signatures())
}

/// Whether this test run lets the host verify signatures.
pub fn host_signatures() -> bool {
    std::env::var_os("ERPNET_TEST_HOST_SIGNATURES").is_some_and(|v| v == "1")
}

/// Everything one drain produced.
#[derive(Debug, Default)]
pub struct Drained {
    pub requests: Vec<HttpRequest>,
    pub events: Vec<Event>,
    pub persisted: Vec<Snapshot>,
    pub wait_until: Option<u64>,
    /// Signature checks answered (host verification), with their verdicts.
    pub signature_checks: Vec<bool>,
}

/// Drains `poll()` to its end, as every host must. Signature checks (host verification)
/// are answered after the drain with the crate's own verifier, and drained again.
pub fn drain(session: &mut Session) -> Drained {
    let mut out = Drained::default();
    loop {
        let checks = drain_once(session, &mut out);
        if checks.is_empty() {
            return out;
        }
        for check in checks {
            let valid = check.verify_in_rust();
            out.signature_checks.push(valid);
            // Time never runs backwards: 0 means "no later than the last input".
            session.handle_signature(0, check.id, valid).unwrap();
        }
    }
}

fn drain_once(session: &mut Session, out: &mut Drained) -> Vec<erpnet_auth::SignatureCheck> {
    let mut checks = Vec::new();
    loop {
        match session.poll() {
            Output::VerifySignature(check) => checks.push(*check),
            Output::Http(req) => out.requests.push(req),
            Output::Persist(snapshot) => out.persisted.push(*snapshot),
            Output::Event(event) => out.events.push(event),
            Output::WaitUntil(at) => {
                out.wait_until = Some(at);
                return checks;
            }
            Output::Idle => {
                out.wait_until = None;
                return checks;
            }
        }
    }
}

/// The state the host would persist, for "nothing changed" assertions.
pub fn state_of(session: &Session) -> String {
    session.snapshot().to_json()
}

/// Timing that renews proactively even when no call used the token, for tests about what a
/// renewal does rather than when it starts.
pub fn renewing_idle_sessions() -> Timing {
    let mut timing = Timing::default();
    timing.renew_idle_sessions = true;
    timing
}

// ----- states by name -----

/// The token answer most tests sign in with: an hour's access token and a refresh token.
pub const TOKENS: &str =
    r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-1","scope":"openid read"}"#;
/// When the access token of [`TOKENS`] expires, for a sign-in at [`T0`].
pub const EXPIRED: u64 = T0 + 3_600_000;

/// The `state` of a session's first sign-in when it draws from [`CountingRandom`]: 32 zero
/// bytes.
pub fn first_state() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 32])
}

/// The provider's answer to the first sign-in: `code=c` and its state, in the query.
pub fn first_callback() -> String {
    format!("{REDIRECT}?code=c&state={}", first_state())
}

/// A new session of `config` drawing from [`CountingRandom`], what it opens with (discovery,
/// the instance's sites) drained and left unanswered.
pub fn new_session(config: Config) -> Session {
    let mut session = Session::with_random(config, CountingRandom::default());
    drain(&mut session);
    session
}

/// A sign-in begun at [`T0`]: the callback is awaited. Returns what the sign-in emitted (the
/// key set's request, when ID tokens will be checked).
pub fn to_pending(config: Config) -> (Session, Drained) {
    let mut session = new_session(config);
    session.sign_in(T0, SignInOptions::new()).unwrap();
    let out = drain(&mut session);
    (session, out)
}

/// `callback` handed in at [`T0`]: returns the code exchange it emitted.
pub fn exchange(session: &mut Session, callback: &str) -> HttpRequest {
    session.handle_callback(T0, Callback::Url(callback)).unwrap();
    let exchange = drain(session).requests.remove(0);
    assert_eq!(exchange.kind, RequestKind::Token, "the code exchange");
    exchange
}

/// The first sign-in's callback handed in: the code exchange is out.
pub fn to_exchanging(config: Config) -> (Session, HttpRequest) {
    let (mut session, _) = to_pending(config);
    let request = exchange(&mut session, &first_callback());
    (session, request)
}

/// The code exchange answered at [`T0`] with `tokens`.
pub fn redeem(session: &mut Session, exchange: &HttpRequest, tokens: &str) -> Drained {
    session.handle_response(T0, exchange.id, HttpResponse::new(200, tokens)).unwrap();
    drain(session)
}

/// Signed in at [`T0`] with `tokens`.
pub fn to_signed_in(config: Config, tokens: &str) -> Session {
    let (mut session, request) = to_exchanging(config);
    redeem(&mut session, &request, tokens);
    session
}

/// Signed in with [`TOKENS`], one call (answered 200) put the session in use, and the
/// proactive renewal's timer fired: the refresh is out.
pub fn to_refreshing(config: Config) -> (Session, HttpRequest) {
    let mut session = to_signed_in(config, TOKENS);
    session.call_api(T0, erpnet_auth::ApiRequest::get("Crm_Customers")).unwrap();
    let call = drain(&mut session).requests.remove(0);
    session.handle_response(T0, call.id, HttpResponse::new(200, "{}")).unwrap();
    let renew_at = drain(&mut session).wait_until.unwrap();
    session.handle_timeout(renew_at).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    assert!(refresh.body_text().unwrap().contains("grant_type=refresh_token&refresh_token=rt-1"));
    (session, refresh)
}
