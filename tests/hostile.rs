//! Hostile and broken inputs, table-driven: each gets its typed outcome and leaves the
//! session's durable state exactly as it was.

mod common;

use base64::Engine;
use common::*;
use erpnet_auth::*;

fn state0() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0u8; 32])
}

fn pending_session(builder: ConfigBuilder) -> Session {
    let mut session = Session::with_random(builder.build().unwrap(), CountingRandom::default());
    session.sign_in(T0, SignInOptions::new()).unwrap();
    drain(&mut session);
    session
}

#[test]
fn hostile_callbacks_are_refused_and_change_nothing() {
    let s = state0();
    let long = "x".repeat(70_000);
    let cases: Vec<(&str, String, CallbackError)> = vec![
        ("wrong state", format!("{REDIRECT}?code=c&state=forged"), CallbackError::StateMismatch),
        ("no state", format!("{REDIRECT}?code=c"), CallbackError::MissingState),
        ("empty state", format!("{REDIRECT}?code=c&state="), CallbackError::StateMismatch),
        ("state prefix", format!("{REDIRECT}?code=c&state={}", &s[..42]), CallbackError::StateMismatch),
        ("state with suffix", format!("{REDIRECT}?code=c&state={s}A"), CallbackError::StateMismatch),
        ("state in other case", format!("{REDIRECT}?code=c&state={}", s.to_lowercase()), CallbackError::StateMismatch),
        ("invalid utf-8 state", format!("{REDIRECT}?code=c&state=%FF%FE"), CallbackError::StateMismatch),
        (
            "state twice",
            format!("{REDIRECT}?code=c&state={s}&state={s}"),
            CallbackError::DuplicateParameter("state".into()),
        ),
        ("code twice", format!("{REDIRECT}?code=c&code=d&state={s}"), CallbackError::DuplicateParameter("code".into())),
        (
            "other host",
            format!("http://evil.example/signin-callback?code=c&state={s}"),
            CallbackError::RedirectUriMismatch,
        ),
        ("other path", format!("http://localhost/other?code=c&state={s}"), CallbackError::RedirectUriMismatch),
        (
            "other scheme",
            format!("https://localhost/signin-callback?code=c&state={s}"),
            CallbackError::RedirectUriMismatch,
        ),
        (
            "non-ASCII host",
            format!("http://ÑANDÚ.Example/signin-callback?code=c&state={s}"),
            CallbackError::RedirectUriMismatch,
        ),
        (
            "other port",
            format!("http://localhost:8080/signin-callback?code=c&state={s}"),
            CallbackError::RedirectUriMismatch,
        ),
        ("not a URL", "::::".to_owned(), CallbackError::Malformed),
        ("relative URL", format!("/signin-callback?code=c&state={s}"), CallbackError::Malformed),
        ("empty input", String::new(), CallbackError::Malformed),
        ("in the fragment", format!("{REDIRECT}#code=c&state={s}"), CallbackError::WrongResponseMode),
        ("too large", format!("{REDIRECT}?code={long}&state={s}"), CallbackError::TooLarge),
        ("forged error", format!("{REDIRECT}?error=access_denied&state=forged"), CallbackError::StateMismatch),
        ("error without state", format!("{REDIRECT}?error=access_denied"), CallbackError::MissingState),
    ];
    assert!(cases.len() >= 18);
    for (name, input, expected) in cases {
        let mut session = pending_session(seed_builder());
        let before = state_of(&session);
        let outcome = session.handle_callback(T0 + 1_000, Callback::Url(&input));
        assert_eq!(outcome, Err(expected), "{name}");
        assert_eq!(state_of(&session), before, "{name}: state changed");
        let drained = drain(&mut session);
        assert!(drained.requests.is_empty() && drained.events.is_empty(), "{name}: produced output");
    }
}

#[test]
fn form_post_body_given_to_a_query_client_is_refused() {
    let mut session = pending_session(seed_builder());
    let before = state_of(&session);
    let body = format!("code=c&state={}", state0());
    assert_eq!(session.handle_callback(T0, Callback::FormPost(&body)), Err(CallbackError::WrongResponseMode));
    assert_eq!(state_of(&session), before);
}

#[test]
fn hybrid_callback_without_id_token_spends_the_state() {
    let mut session = pending_session(seed_builder().response_type(ResponseType::CodeIdToken).validate_id_tokens(true));
    let url = format!("{REDIRECT}#code=c&state={}", state0());
    session.handle_callback(T0, Callback::Url(&url)).unwrap();
    let drained = drain(&mut session);
    assert_eq!(
        drained.events,
        vec![Event::SignInFailed { error: SignInError::Callback(CallbackError::MissingIdToken) }]
    );
    assert!(drained.requests.is_empty(), "no code is redeemed");
    assert!(!session.is_sign_in_pending());
}

#[test]
fn provider_error_and_expiry_end_the_pending_sign_in_only() {
    let s = state0();
    let mut session = pending_session(seed_builder());
    let denied = format!("{REDIRECT}?error=access_denied&error_description=The+user+cancelled&state={s}");
    session.handle_callback(T0 + 1, Callback::Url(&denied)).unwrap();
    assert!(!session.is_sign_in_pending());
    let drained = drain(&mut session);
    assert_eq!(drained.persisted.len(), 1);
    assert_eq!(
        drained.events,
        vec![Event::SignInFailed {
            error: SignInError::Callback(CallbackError::Provider(OAuthError {
                code: OAuthErrorCode::AccessDenied,
                description: Some("The user cancelled".into()),
                status: None,
            }))
        }]
    );

    let mut session = pending_session(seed_builder());
    let late = T0 + Timing::default().callback_max_age_ms + 1;
    session.handle_callback(late, Callback::Url(&format!("{REDIRECT}?code=c&state={s}"))).unwrap();
    assert_eq!(
        drain(&mut session).events,
        vec![Event::SignInFailed { error: SignInError::Callback(CallbackError::Expired) }]
    );
    assert!(!session.is_sign_in_pending());
}

#[test]
fn callback_without_pending_sign_in_is_a_usage_error() {
    let mut session = Session::with_random(seed_builder().build().unwrap(), CountingRandom::default());
    let outcome = session.handle_callback(T0, Callback::Url(&format!("{REDIRECT}?code=c&state=x")));
    assert_eq!(outcome, Err(CallbackError::NoSignInPending));
}

#[test]
fn state_is_single_use() {
    let url = format!("{REDIRECT}?code=c&state={}", state0());
    let mut session = pending_session(seed_builder());
    session.handle_callback(T0, Callback::Url(&url)).unwrap();
    drain(&mut session);
    assert_eq!(session.handle_callback(T0, Callback::Url(&url)), Err(CallbackError::NoSignInPending));
}

/// A signed-in session whose renewal request is out, and that request.
fn session_refreshing() -> (Session, HttpRequest) {
    let mut session = pending_session(seed_builder());
    session.handle_callback(T0, Callback::Url(&format!("{REDIRECT}?code=c&state={}", state0()))).unwrap();
    let exchange = drain(&mut session).requests.remove(0);
    let body = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-1","scope":"openid read"}"#;
    session.handle_response(T0, exchange.id, HttpResponse::new(200, body)).unwrap();
    let renew_at = drain(&mut session).wait_until.unwrap();
    session.handle_timeout(renew_at).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    assert!(refresh.body_text().unwrap().contains("grant_type=refresh_token&refresh_token=rt-1"));
    (session, refresh)
}

fn json(status: u16, body: &str) -> HttpResponse {
    HttpResponse::new(status, body.as_bytes().to_vec())
}

/// A callback whose state matched is the provider's one answer: refused for any later
/// reason, it spends the one-time state (RFC 9700 §4.7), so replaying the valid callback
/// afterwards is refused too.
#[test]
fn refusals_after_the_state_matched_spend_it() {
    let s = state0();
    let cases: Vec<(&str, String, CallbackError)> = vec![
        (
            "foreign iss",
            format!("{REDIRECT}?code=c&state={s}&iss=https%3A%2F%2Fevil.example%2Fid"),
            CallbackError::IssuerMismatch,
        ),
        (
            "iss with other case",
            format!("{REDIRECT}?code=c&state={s}&iss=https%3A%2F%2FDEMODB.my.erp.net%2Fid"),
            CallbackError::IssuerMismatch,
        ),
        ("no code", format!("{REDIRECT}?state={s}"), CallbackError::MissingCode),
        ("empty code", format!("{REDIRECT}?code=&state={s}"), CallbackError::MissingCode),
        (
            "provider error",
            format!("{REDIRECT}?error=access_denied&state={s}"),
            CallbackError::Provider(OAuthError { code: OAuthErrorCode::AccessDenied, description: None, status: None }),
        ),
        (
            "error description with control characters",
            format!("{REDIRECT}?error=server_error&error_description=a%0D%0AX-Injected%3A%201&state={s}"),
            CallbackError::Provider(OAuthError {
                code: OAuthErrorCode::ServerError,
                description: Some("aX-Injected: 1".into()),
                status: None,
            }),
        ),
    ];
    for (name, input, expected) in cases {
        let mut session = pending_session(seed_builder());
        session.handle_callback(T0 + 1_000, Callback::Url(&input)).unwrap();
        let drained = drain(&mut session);
        assert_eq!(drained.events, vec![Event::SignInFailed { error: SignInError::Callback(expected) }], "{name}");
        assert!(drained.requests.is_empty(), "{name}: a code was redeemed");
        assert!(!session.is_sign_in_pending(), "{name}: the state was not spent");
        assert!(drained.persisted.last().is_some_and(|p| p.pending().is_none()), "{name}: not persisted spent");
        let valid = format!("{REDIRECT}?code=c&state={s}");
        assert_eq!(
            session.handle_callback(T0 + 2_000, Callback::Url(&valid)),
            Err(CallbackError::NoSignInPending),
            "{name}: the valid callback was redeemed after a refusal"
        );
    }
}

#[test]
fn hostile_token_responses_keep_every_token() {
    use MalformedReason::*;
    let big = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(300_000));
    let oauth = |code: OAuthErrorCode, d: Option<&str>| {
        TokenError::OAuth(OAuthError { code, description: d.map(str::to_owned), status: Some(400) })
    };
    let cases: Vec<(&str, HttpResponse, TokenError)> = vec![
        ("empty body", json(200, ""), TokenError::Malformed(EmptyBody)),
        ("whitespace body", json(200, " \n"), TokenError::Malformed(EmptyBody)),
        ("HTML page", json(200, "<!DOCTYPE html><html>login</html>"), TokenError::Malformed(Html)),
        ("plain text", json(200, "OK"), TokenError::Malformed(NotJson)),
        ("truncated JSON", json(200, r#"{"access_token":"at-"#), TokenError::Malformed(NotJson)),
        ("JSON array", json(200, "[]"), TokenError::Malformed(MissingAccessToken)),
        ("JSON string", json(200, r#""at-2""#), TokenError::Malformed(MissingAccessToken)),
        ("empty object", json(200, "{}"), TokenError::Malformed(MissingAccessToken)),
        ("empty access token", json(200, r#"{"access_token":""}"#), TokenError::Malformed(MissingAccessToken)),
        ("numeric access token", json(200, r#"{"access_token":42}"#), TokenError::Malformed(WrongFieldType)),
        (
            "numeric refresh token",
            json(200, r#"{"access_token":"a","refresh_token":7}"#),
            TokenError::Malformed(WrongFieldType),
        ),
        ("too large", json(200, &big), TokenError::Malformed(TooLarge)),
        ("MAC token", json(200, r#"{"access_token":"a","token_type":"mac"}"#), TokenError::UnsupportedTokenType),
        ("DPoP token", json(200, r#"{"access_token":"a","token_type":"DPoP"}"#), TokenError::UnsupportedTokenType),
        ("negative expires_in", json(200, r#"{"access_token":"a","expires_in":-1}"#), TokenError::InvalidExpiresIn),
        ("zero expires_in", json(200, r#"{"access_token":"a","expires_in":0}"#), TokenError::InvalidExpiresIn),
        ("absurd expires_in", json(200, r#"{"access_token":"a","expires_in":1e30}"#), TokenError::InvalidExpiresIn),
        ("fractional expires_in", json(200, r#"{"access_token":"a","expires_in":1.5}"#), TokenError::InvalidExpiresIn),
        (
            "u64::MAX expires_in",
            json(200, r#"{"access_token":"a","expires_in":18446744073709551615}"#),
            TokenError::InvalidExpiresIn,
        ),
        ("text expires_in", json(200, r#"{"access_token":"a","expires_in":"soon"}"#), TokenError::InvalidExpiresIn),
        ("bool expires_in", json(200, r#"{"access_token":"a","expires_in":true}"#), TokenError::InvalidExpiresIn),
        ("500 HTML", json(500, "<html>oops</html>"), TokenError::Unavailable { status: 500, retry_after_secs: None }),
        (
            "503 Retry-After",
            json(503, "").with_header("Retry-After", "7"),
            TokenError::Unavailable { status: 503, retry_after_secs: Some(7) },
        ),
        ("429", json(429, r#"{"error":"slow_down"}"#), TokenError::Unavailable { status: 429, retry_after_secs: None }),
        (
            "302 redirect",
            json(302, "").with_header("Location", "https://evil.example/"),
            TokenError::Redirect { status: 302 },
        ),
        ("404 HTML", json(404, "<html>not found</html>"), TokenError::UnexpectedStatus { status: 404 }),
        ("400 non-UTF-8", HttpResponse::new(400, vec![0xff, 0xfe, 0x00]), TokenError::UnexpectedStatus { status: 400 }),
        ("invalid_request", json(400, r#"{"error":"invalid_request"}"#), oauth(OAuthErrorCode::InvalidRequest, None)),
        (
            "invalid_scope",
            json(400, r#"{"error":"invalid_scope","error_description":"bad"}"#),
            oauth(OAuthErrorCode::InvalidScope, Some("bad")),
        ),
        (
            "error in a 200",
            json(200, r#"{"error":"server_error"}"#),
            TokenError::OAuth(OAuthError { code: OAuthErrorCode::ServerError, description: None, status: Some(200) }),
        ),
        (
            "unknown error code",
            json(400, r#"{"error":"weird_thing"}"#),
            oauth(OAuthErrorCode::Other("weird_thing".into()), None),
        ),
    ];
    assert!(cases.len() >= 30);
    for (name, response, expected) in cases {
        let (mut session, refresh) = session_refreshing();
        let before = state_of(&session);
        session.handle_response(T0 + 3_541_000, refresh.id, response).unwrap();
        let drained = drain(&mut session);
        let error = drained.events.iter().find_map(|e| match e {
            Event::RenewalDeferred { error, .. } | Event::RenewalFailed { error } => Some(error.clone()),
            _ => None,
        });
        assert_eq!(error, Some(expected.clone()), "{name}");
        assert_eq!(state_of(&session), before, "{name}: durable state changed");
        assert!(drained.persisted.is_empty(), "{name}: persisted");
        assert!(session.is_signed_in(), "{name}: tokens dropped");
        let message = format!("{expected} {expected:?} {:?}", drained.events);
        for secret in ["at-1", "rt-1", SECRET] {
            assert!(!message.contains(secret), "{name}: {secret} leaked into {message}");
        }
    }
}

#[test]
fn transport_error_on_refresh_keeps_tokens_and_schedules_a_retry() {
    let (mut session, refresh) = session_refreshing();
    let before = state_of(&session);
    session.handle_transport_error(T0 + 3_541_000, refresh.id, TransportError::Timeout).unwrap();
    let drained = drain(&mut session);
    assert!(matches!(
        drained.events[..],
        [Event::RenewalDeferred { error: TokenError::Transport(TransportError::Timeout), attempt: 1, .. }]
    ));
    assert_eq!(state_of(&session), before);
}

#[test]
fn failed_code_exchange_reports_typed_errors() {
    for (response, expected) in [
        (
            json(400, r#"{"error":"invalid_grant"}"#),
            TokenError::OAuth(OAuthError { code: OAuthErrorCode::InvalidGrant, description: None, status: Some(400) }),
        ),
        (json(200, "<html></html>"), TokenError::Malformed(MalformedReason::Html)),
        (json(502, ""), TokenError::Unavailable { status: 502, retry_after_secs: None }),
    ] {
        let mut session = pending_session(seed_builder());
        session.handle_callback(T0, Callback::Url(&format!("{REDIRECT}?code=c&state={}", state0()))).unwrap();
        let exchange = drain(&mut session).requests.remove(0);
        session.handle_response(T0, exchange.id, response).unwrap();
        let drained = drain(&mut session);
        assert_eq!(drained.events, vec![Event::SignInFailed { error: SignInError::Token(expected) }]);
        assert!(drained.requests.is_empty(), "a code is never redeemed twice");
        assert!(!session.is_signed_in());
    }
}
