//! Hostile and broken inputs, table-driven: each gets its typed outcome and leaves the
//! session's durable state exactly as it was.

mod common;

use common::*;
use erpnet_auth::config::{ClientAuth, ProviderMetadata, ResponseMode, ResponseType};
use erpnet_auth::error::{
    CallError, CallbackError, ConfigError, MalformedReason, OAuthError, OAuthErrorCode, SignInError, TokenError,
    UserInfoError, Warning,
};
use erpnet_auth::*;

/// Prints a table's size: `cargo test --test hostile -- --nocapture` lists the cases per
/// input kind (the README's figures).
fn report(kind: &str, cases: usize) {
    println!("hostile: {cases:3} {kind}");
}

/// Asserts that no secret of the tests reached `text`.
fn assert_no_secret(name: &str, text: &str) {
    for secret in [SECRET, "at-1", "rt-1", "s3cr3t-value", "planted-rt"] {
        assert!(!text.contains(secret), "{name}: {secret} leaked into {text}");
    }
}

fn pending_session(builder: ConfigBuilder) -> Session {
    to_pending(builder.build().unwrap()).0
}

/// A pending sign-in keeps the redirect URI it was sent with: restored under a configuration
/// with another one (the application moved its callback), the callback is matched with the
/// pending sign-in's, not the configuration's.
#[test]
fn a_restored_sign_in_is_matched_with_its_own_redirect_uri() {
    let s = first_state();
    let earlier = pending_session(seed_builder());
    let moved = seed_builder().redirect_uri("http://localhost/new-callback").build().unwrap();
    for (name, callback, expected) in [
        ("the pending sign-in's redirect URI", format!("{REDIRECT}?code=c&state={s}"), Ok(())),
        ("the same, written otherwise", format!("HTTP://LocalHost:80/signin-callback?code=c&state={s}"), Ok(())),
        (
            "the configuration's redirect URI",
            format!("http://localhost/new-callback?code=c&state={s}"),
            Err(CallbackError::RedirectUriMismatch),
        ),
    ] {
        let mut session = Session::restore(moved.clone(), earlier.snapshot(), CountingRandom::default()).unwrap();
        assert_eq!(session.handle_callback(T0 + 1_000, Callback::Url(&callback)), expected, "{name}");
    }
}

#[test]
fn hostile_callbacks_are_refused_and_change_nothing() {
    let s = first_state();
    let long = "x".repeat(70_000);
    let cases: Vec<(&str, String, CallbackError)> = vec![
        ("wrong state", format!("{REDIRECT}?code=c&state=forged"), CallbackError::StateMismatch),
        ("no state", format!("{REDIRECT}?code=c"), CallbackError::MissingState),
        ("empty state", format!("{REDIRECT}?code=c&state="), CallbackError::StateMismatch),
        ("state prefix", format!("{REDIRECT}?code=c&state={}", &s[..42]), CallbackError::StateMismatch),
        ("state with suffix", format!("{REDIRECT}?code=c&state={s}A"), CallbackError::StateMismatch),
        ("state in other case", format!("{REDIRECT}?code=c&state={}", s.to_lowercase()), CallbackError::StateMismatch),
        ("invalid utf-8 state", format!("{REDIRECT}?code=c&state=%FF%FE"), CallbackError::Malformed),
        ("invalid utf-8 code", format!("{REDIRECT}?code=abc%FF(def&state={s}"), CallbackError::Malformed),
        ("overlong utf-8 in the code", format!("{REDIRECT}?code=%C0%AF&state={s}"), CallbackError::Malformed),
        ("lone surrogate in the code", format!("{REDIRECT}?code=%ED%A0%80&state={s}"), CallbackError::Malformed),
        (
            "truncated utf-8 in an ignored parameter",
            format!("{REDIRECT}?code=c&state={s}&scope=%E2%82"),
            CallbackError::Malformed,
        ),
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
    report("callbacks refused before the state matched", cases.len());
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
    let body = format!("code=c&state={}", first_state());
    assert_eq!(session.handle_callback(T0, Callback::FormPost(&body)), Err(CallbackError::WrongResponseMode));
    assert_eq!(state_of(&session), before);
}

#[test]
fn hybrid_callback_without_id_token_spends_the_state() {
    let mut session = pending_session(seed_builder().response_type(ResponseType::CodeIdToken).validate_id_tokens(true));
    let url = format!("{REDIRECT}#code=c&state={}", first_state());
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
    let s = first_state();
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
    let url = format!("{REDIRECT}?code=c&state={}", first_state());
    let mut session = pending_session(seed_builder());
    session.handle_callback(T0, Callback::Url(&url)).unwrap();
    drain(&mut session);
    assert_eq!(session.handle_callback(T0, Callback::Url(&url)), Err(CallbackError::NoSignInPending));
}

/// When [`session_refreshing`]'s renewal left: 60 s before the first token's expiry.
const REFRESH_SENT: u64 = T0 + 3_540_000;

/// A signed-in session whose renewal request is out, and that request.
fn session_refreshing() -> (Session, HttpRequest) {
    to_refreshing(seed_builder().build().unwrap())
}

fn json(status: u16, body: &str) -> HttpResponse {
    HttpResponse::new(status, body.as_bytes().to_vec())
}

/// A callback whose state matched is the provider's one answer: refused for any later
/// reason, it spends the one-time state (RFC 9700 §4.7), so replaying the valid callback
/// afterwards is refused too.
#[test]
fn refusals_after_the_state_matched_spend_it() {
    let s = first_state();
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
    report("callbacks refused after the state matched", cases.len());
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
        // A member twice: parsers disagree on which one counts.
        (
            "access token twice",
            json(200, r#"{"access_token":"a","access_token":"b"}"#),
            TokenError::Malformed(WrongFieldType),
        ),
        (
            "an unknown member twice",
            json(200, r#"{"access_token":"a","x":1,"x":2}"#),
            TokenError::Malformed(WrongFieldType),
        ),
        (
            "a member twice deeper down",
            json(200, r#"{"access_token":"a","x":[{"y":1,"y":2}]}"#),
            TokenError::Malformed(WrongFieldType),
        ),
        (
            "numeric refresh token",
            json(200, r#"{"access_token":"a","refresh_token":7}"#),
            TokenError::Malformed(WrongFieldType),
        ),
        ("too large", json(200, &big), TokenError::Malformed(TooLarge)),
        ("MAC token", json(200, r#"{"access_token":"a","token_type":"mac"}"#), TokenError::UnsupportedTokenType),
        (
            "CR LF in the access token",
            json(200, r#"{"access_token":"abc\r\nX-Injected: 1"}"#),
            TokenError::Malformed(InvalidTokenCharacters),
        ),
        (
            "NUL in the access token",
            json(200, r#"{"access_token":"abc\u0000def"}"#),
            TokenError::Malformed(InvalidTokenCharacters),
        ),
        (
            "tab in the access token",
            json(200, r#"{"access_token":"abc\tdef"}"#),
            TokenError::Malformed(InvalidTokenCharacters),
        ),
        (
            "space in the access token",
            json(200, r#"{"access_token":"abc def"}"#),
            TokenError::Malformed(InvalidTokenCharacters),
        ),
        (
            "non-ASCII access token",
            json(200, r#"{"access_token":"abcé"}"#),
            TokenError::Malformed(InvalidTokenCharacters),
        ),
        (
            "DEL in the access token",
            json(200, r#"{"access_token":"abc\u007f"}"#),
            TokenError::Malformed(InvalidTokenCharacters),
        ),
        (
            "LF in the refresh token",
            json(200, r#"{"access_token":"a","refresh_token":"rt\nX: 1"}"#),
            TokenError::Malformed(InvalidTokenCharacters),
        ),
        ("DPoP token", json(200, r#"{"access_token":"a","token_type":"DPoP"}"#), TokenError::UnsupportedTokenType),
        ("500 HTML", json(500, "<html>oops</html>"), TokenError::Unavailable { status: 500, retry_after_secs: None }),
        (
            "503 Retry-After",
            json(503, "").with_header("Retry-After", "7"),
            TokenError::Unavailable { status: 503, retry_after_secs: Some(7) },
        ),
        ("429", json(429, r#"{"error":"slow_down"}"#), TokenError::Unavailable { status: 429, retry_after_secs: None }),
        (
            "503 Retry-After as an HTTP-date",
            json(503, "").with_header("Retry-After", "Sun, 12 Jun 2022 19:14:55 GMT"),
            TokenError::Unavailable { status: 503, retry_after_secs: Some(30) },
        ),
        (
            "503 Retry-After as a past date",
            json(503, "").with_header("Retry-After", "Sun, 12 Jun 2022 19:13:55 GMT"),
            TokenError::Unavailable { status: 503, retry_after_secs: Some(0) },
        ),
        (
            "503 Retry-After unreadable",
            json(503, "").with_header("Retry-After", "soon\r\n"),
            TokenError::Unavailable { status: 503, retry_after_secs: None },
        ),
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
        // The provider's words reach the message (and the npm package's), cleaned and capped.
        (
            "error description with control characters, too long",
            json(
                400,
                &format!(
                    r#"{{"error":"invalid_scope","error_description":"bad\r\nX-Injected: 1 {}"}}"#,
                    "x".repeat(600)
                ),
            ),
            oauth(OAuthErrorCode::InvalidScope, Some(&format!("badX-Injected: 1 {}", "x".repeat(483)))),
        ),
    ];
    assert!(cases.len() >= 30);
    report("token responses", cases.len());
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
        let (mut session, exchange) = to_exchanging(seed_builder().build().unwrap());
        session.handle_response(T0, exchange.id, response).unwrap();
        let drained = drain(&mut session);
        assert_eq!(drained.events, vec![Event::SignInFailed { error: SignInError::Token(expected) }]);
        assert!(drained.requests.is_empty(), "a code is never redeemed twice");
        assert!(!session.is_signed_in());
    }
}

/// Sloppy but harmless answers are accepted (RFC 6749 lets `expires_in` be omitted; servers
/// send strings and fractions): the unusable ones with a warning and the assumed lifetime.
#[test]
fn sloppy_token_answers_are_accepted_with_a_warning() {
    let assumed = Timing::default().assumed_lifetime_ms / 1000;
    let unusable = Some(Warning::UnusableExpiresIn);
    let cases: Vec<(&str, &str, u64, Option<Warning>)> = vec![
        ("numeric string", r#""expires_in":"3600""#, 3600, None),
        ("padded numeric string", r#""expires_in":" 120 ""#, 120, None),
        ("fraction, floored", r#""expires_in":3599.9"#, 3599, None),
        ("fraction in a string", r#""expires_in":"1.5""#, 1, None),
        ("exponent in a string", r#""expires_in":"3.6e3""#, 3600, None),
        ("not a JSON number in a string", r#""expires_in":"+1.5""#, assumed, unusable),
        ("absent", r#""x":0"#, assumed, None),
        ("null", r#""expires_in":null"#, assumed, None),
        ("negative", r#""expires_in":-1"#, assumed, unusable),
        ("zero", r#""expires_in":0"#, assumed, unusable),
        ("below a second", r#""expires_in":0.5"#, assumed, unusable),
        ("absurd", r#""expires_in":1e30"#, assumed, unusable),
        ("u64::MAX", r#""expires_in":18446744073709551615"#, assumed, unusable),
        ("text", r#""expires_in":"soon""#, assumed, unusable),
        ("bool", r#""expires_in":true"#, assumed, unusable),
        ("array", r#""expires_in":[3600]"#, assumed, unusable),
        ("object", r#""expires_in":{"s":3600}"#, assumed, unusable),
        ("NaN text", r#""expires_in":"NaN""#, assumed, unusable),
        ("scope a number", r#""expires_in":60,"scope":42"#, 60, Some(Warning::UnusableScope)),
        ("scope an array", r#""expires_in":60,"scope":["openid"]"#, 60, Some(Warning::UnusableScope)),
    ];
    report("sloppy token answers accepted", cases.len());
    for (name, field, lifetime_secs, warning) in cases {
        let (mut session, refresh) = session_refreshing();
        let now = T0 + 3_541_000;
        let body = format!(r#"{{"access_token":"at-2","token_type":"Bearer",{field}}}"#);
        session.handle_response(now, refresh.id, json(200, &body)).unwrap();
        // Expiry counts from when the refresh left, a second before its answer.
        let now = REFRESH_SENT;
        let events = drain(&mut session).events;
        let expected_warning: Vec<Event> = warning.into_iter().map(|warning| Event::Warning { warning }).collect();
        let warnings: Vec<Event> = events.iter().filter(|e| matches!(e, Event::Warning { .. })).cloned().collect();
        assert_eq!(warnings, expected_warning, "{name}");
        let renewed = events.iter().find_map(|e| match e {
            Event::TokensRenewed { expires_at, .. } => Some(*expires_at),
            _ => None,
        });
        assert_eq!(renewed, Some(Some(now + lifetime_secs * 1000)), "{name}: {events:?}");
    }
}

/// `form_post` bodies go through the same checks as URLs.
#[test]
fn hostile_form_post_callbacks_are_refused_and_change_nothing() {
    let s = first_state();
    let builder = || {
        seed_builder()
            .response_type(ResponseType::CodeIdToken)
            .response_mode(ResponseMode::FormPost)
            .validate_id_tokens(true)
    };
    let cases: Vec<(&str, String, CallbackError)> = vec![
        ("invalid utf-8", format!("code=%FF&id_token=a.b.c&state={s}"), CallbackError::Malformed),
        (
            "state twice",
            format!("code=c&id_token=a.b.c&state={s}&state={s}"),
            CallbackError::DuplicateParameter("state".into()),
        ),
        (
            "id_token twice",
            format!("code=c&id_token=a&id_token=b&state={s}"),
            CallbackError::DuplicateParameter("id_token".into()),
        ),
        ("no state", "code=c&id_token=a.b.c".to_owned(), CallbackError::MissingState),
        ("forged state", "code=c&id_token=a.b.c&state=forged".to_owned(), CallbackError::StateMismatch),
        ("too large", format!("code={}&state={s}", "c".repeat(70_000)), CallbackError::TooLarge),
    ];
    report("form_post callbacks refused", cases.len() + 1);
    for (name, body, expected) in cases {
        let mut session = pending_session(builder());
        let before = state_of(&session);
        assert_eq!(session.handle_callback(T0 + 1_000, Callback::FormPost(&body)), Err(expected), "{name}");
        assert_eq!(state_of(&session), before, "{name}: state changed");
        assert!(matches!(session.poll(), Output::WaitUntil(_) | Output::Idle), "{name}: queued output");
    }
    // The parameters in a URL where a form is expected.
    let mut session = pending_session(builder());
    let url = format!("{REDIRECT}#code=c&id_token=a.b.c&state={s}");
    assert_eq!(session.handle_callback(T0, Callback::Url(&url)), Err(CallbackError::WrongResponseMode));
}

/// Configurations that cannot be used are refused when built, each with what to change, and
/// no secret in the message.
#[test]
fn unusable_configurations_are_refused_at_build() {
    let secret = "s3cr3t-value";
    let erp = || Config::erpnet(ROOT).client_id(CLIENT_ID).client_secret(secret).redirect_uri(REDIRECT);
    let invalid = |field: &'static str, reason: &'static str| ConfigError::InvalidUrl { field, reason };
    let cases: Vec<(&str, ConfigBuilder, ConfigError)> = vec![
        (
            "issuer with a query",
            Config::discover("https://idp.example/?tenant=x").client_id("a").redirect_uri(REDIRECT),
            invalid("issuer", "an issuer has no query"),
        ),
        (
            "issuer with a fragment",
            Config::discover("https://idp.example/#x").client_id("a").redirect_uri(REDIRECT),
            invalid("issuer", "it has a fragment"),
        ),
        (
            "issuer with CR LF",
            Config::discover("https://idp.example/\r\nX: 1").client_id("a").redirect_uri(REDIRECT),
            invalid("issuer", "it has control characters"),
        ),
        (
            "instance root with a query",
            Config::erpnet("https://demodb.my.erp.net/?x=1").client_id("a").redirect_uri(REDIRECT),
            invalid("instance root", "an issuer has no query"),
        ),
        (
            "relative issuer",
            Config::discover("/id").client_id("a").redirect_uri(REDIRECT),
            invalid("issuer", "it is relative"),
        ),
        (
            "ftp issuer",
            Config::discover("ftp://idp.example").client_id("a").redirect_uri(REDIRECT),
            invalid("issuer", "its scheme is not https"),
        ),
        (
            "plain http issuer",
            Config::discover("http://idp.example").client_id("a").redirect_uri(REDIRECT),
            ConfigError::InsecureUrl { field: "issuer" },
        ),
        ("empty client secret", erp().client_secret(""), ConfigError::Missing("a non-empty client_secret")),
        ("client id with CR LF", erp().client_id("app\r\nX: 1"), ConfigError::InvalidClientId),
        ("client id with NUL", erp().client_id("app\0"), ConfigError::InvalidClientId),
        ("empty client id", erp().client_id(""), ConfigError::Missing("client_id")),
        (
            "redirect URI with CR LF",
            erp().redirect_uri("http://localhost/cb\r\nX: 1"),
            invalid("redirect_uri", "it has control characters"),
        ),
        (
            "redirect URI with a tab",
            erp().redirect_uri("http://localhost/c\tb"),
            invalid("redirect_uri", "it has control characters"),
        ),
        (
            "redirect URI with a fragment",
            erp().redirect_uri("http://localhost/cb#x"),
            invalid("redirect_uri", "it has a fragment"),
        ),
        (
            "plain http redirect URI off loopback",
            erp().redirect_uri("http://app.example/cb"),
            ConfigError::InsecureUrl { field: "redirect_uri" },
        ),
        // The code and state would be handed to script, a document or another program.
        (
            "javascript: redirect URI",
            erp().redirect_uri("javascript:alert(document.cookie)//"),
            invalid("redirect_uri", "its scheme is not https"),
        ),
        (
            "data: redirect URI",
            erp().redirect_uri("data:text/html,<script>alert(1)</script>"),
            invalid("redirect_uri", "its scheme is not https"),
        ),
        (
            "file: redirect URI",
            erp().redirect_uri("file:///tmp/cb"),
            invalid("redirect_uri", "its scheme is not https"),
        ),
        (
            "another scheme with a host",
            erp().redirect_uri("myapp://callback/signin"),
            invalid("redirect_uri", "its scheme is not https"),
        ),
        (
            "hybrid without openid",
            erp().response_type(ResponseType::CodeIdToken).scope("offline_access read"),
            ConfigError::HybridWithoutOpenid,
        ),
        (
            "hybrid in the query",
            erp().response_type(ResponseType::CodeIdToken).response_mode(ResponseMode::Query),
            ConfigError::HybridWithQuery,
        ),
        ("public client with a secret", erp().client_auth(ClientAuth::Public), ConfigError::PublicClientWithSecret),
        (
            "basic without a secret",
            Config::erpnet(ROOT).client_id("a").redirect_uri(REDIRECT).client_auth(ClientAuth::ClientSecretBasic),
            ConfigError::SecretRequired("client_secret_basic"),
        ),
        (
            "client credentials without a secret",
            Config::erpnet(ROOT).client_id("a").client_credentials(),
            ConfigError::SecretRequired("the client_credentials grant"),
        ),
        ("PKCE off for code", erp().pkce(false), ConfigError::PkceRequired),
        ("empty scope", erp().scope("   "), ConfigError::InvalidScope),
        ("scope with a quote", erp().scope("openid \"read\""), ConfigError::InvalidScope),
        ("scope with a backslash", erp().scope("openid re\\ad"), ConfigError::InvalidScope),
        ("no redirect URI", Config::erpnet(ROOT).client_id("a"), ConfigError::Missing("redirect_uri")),
    ];
    report("configurations refused", cases.len());
    for (name, builder, expected) in cases {
        let error = builder.build().map(|_| ()).unwrap_err();
        assert_eq!(error, expected, "{name}");
        assert_no_secret(name, &format!("{error} {error:?}"));
    }
}

/// A stored snapshot is input like any other: refused when it cannot be true, with its
/// position only, never its content.
#[test]
fn unusable_snapshots_are_refused() {
    let good: serde_json::Value = {
        let (session, _) = session_refreshing();
        serde_json::from_str(&session.snapshot().to_json()).unwrap()
    };
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        edit(&mut v);
        v.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "snapshot_corrupt"),
        ("not JSON", "tokens: planted-rt".to_owned(), "snapshot_corrupt"),
        ("an array", "[]".to_owned(), "snapshot_corrupt"),
        ("no version", r#"{"issuer":"x"}"#.to_owned(), "snapshot_corrupt"),
        ("a future version", with(&|v| v["version"] = 2.into()), "snapshot_version"),
        ("version as text", with(&|v| v["version"] = "1".into()), "snapshot_corrupt"),
        (
            "CR LF in the access token",
            with(&|v| v["tokens"]["access_token"] = "at\r\nX-Injected: 1".into()),
            "snapshot_inconsistent",
        ),
        (
            "LF in the refresh token",
            with(&|v| v["tokens"]["refresh_token"] = "planted-rt\n".into()),
            "snapshot_inconsistent",
        ),
        ("NUL in the access token", with(&|v| v["tokens"]["access_token"] = "at\0".into()), "snapshot_inconsistent"),
        ("space in the access token", with(&|v| v["tokens"]["access_token"] = "a t".into()), "snapshot_inconsistent"),
        ("empty access token", with(&|v| v["tokens"]["access_token"] = "".into()), "snapshot_inconsistent"),
        (
            "expiry before receipt",
            with(&|v| {
                v["tokens"]["expires_at"] = 5.into();
                v["tokens"]["received_at"] = 6.into();
            }),
            "snapshot_inconsistent",
        ),
        ("negative expiry", with(&|v| v["tokens"]["expires_at"] = (-5).into()), "snapshot_corrupt"),
        ("token as a number", with(&|v| v["tokens"]["access_token"] = 7.into()), "snapshot_corrupt"),
        (
            "a refresh token twice",
            with(&|v| v["tokens"]["refresh_token"] = "rt-1".into()).replacen(
                r#""refresh_token":"#,
                r#""refresh_token":"planted-rt","refresh_token":"#,
                1,
            ),
            "snapshot_corrupt",
        ),
        ("the tokens twice", with(&|_| {}).replacen('{', r#"{"tokens":null,"#, 1), "snapshot_corrupt"),
        (
            "metadata of another issuer",
            with(&|v| v["metadata"]["issuer"] = "https://evil.example/id".into()),
            "snapshot_inconsistent",
        ),
        (
            "plain http token endpoint",
            with(&|v| v["metadata"]["token_endpoint"] = "http://evil.example/token".into()),
            "snapshot_inconsistent",
        ),
    ];
    report("snapshots refused", cases.len());
    for (name, text, code) in cases {
        let error = Snapshot::from_json(&text).unwrap_err();
        assert_eq!(error.code(), code, "{name}: {error:?}");
        assert_no_secret(name, &format!("{error} {error:?}"));
    }
}

/// A stored snapshot cannot redirect secrets: explicit endpoints always win, and stored
/// metadata whose endpoints leave the issuer's origin is discarded and discovered again.
#[test]
fn stored_metadata_cannot_send_secrets_elsewhere() {
    // Discovery on: the stored document's token endpoint points elsewhere.
    let config = || Config::erpnet(ROOT).client_id(CLIENT_ID).client_secret(SECRET).redirect_uri(REDIRECT);
    let mut session = Session::with_random(config().build().unwrap(), CountingRandom::default());
    let discovery = drain(&mut session).requests.remove(0);
    let id = format!("{ROOT}/id");
    let doc = serde_json::json!({"issuer": id, "authorization_endpoint": format!("{id}/connect/authorize"),
        "token_endpoint": format!("{id}/connect/token")});
    session.handle_response(T0, discovery.id, HttpResponse::new(200, doc.to_string())).unwrap();
    drain(&mut session);
    let mut planted: serde_json::Value = serde_json::from_str(&session.snapshot().to_json()).unwrap();
    planted["metadata"]["token_endpoint"] = "https://evil.example/steal".into();
    planted["tokens"] = serde_json::json!({"access_token": "at-1", "received_at": T0, "expires_at": T0 + 1000, "refresh_token": "planted-rt"});
    let planted = Snapshot::from_json(&planted.to_string()).unwrap();

    let mut restored = Session::restore(config().build().unwrap(), planted.clone(), CountingRandom::default()).unwrap();
    let out = drain(&mut restored);
    let discovery: Vec<&HttpRequest> = out.requests.iter().filter(|r| r.kind != RequestKind::Sites).collect();
    assert_eq!(discovery.len(), 1, "the stored document was discarded");
    assert_eq!(discovery[0].kind, RequestKind::Discovery);
    assert!(!restored.is_provider_ready());

    // Explicit endpoints: the stored ones are never used, even for the same issuer.
    let fixed = ProviderMetadata::new(id.clone(), format!("{id}/connect/authorize"), format!("{id}/connect/token"));
    let explicit = || {
        Config::with_endpoints(fixed.clone())
            .client_id(CLIENT_ID)
            .client_secret(SECRET)
            .redirect_uri(REDIRECT)
            .allow_api_origin(ROOT)
    };
    let mut restored = Session::restore(explicit().build().unwrap(), planted, CountingRandom::default()).unwrap();
    drain(&mut restored);
    // The stored token has expired: the next call renews it first.
    restored.call_api(T0 + 2_000, ApiRequest::get(format!("{ROOT}/api/domain/odata/Crm_Customers"))).unwrap();
    let refresh = drain(&mut restored).requests.remove(0);
    assert_eq!(refresh.url, format!("{id}/connect/token"), "the configured endpoint, never the stored one");
}

/// The access token goes only to the configured API origins, whatever a URL parser
/// differential tries; every refusal leaves the session as it was.
#[test]
fn api_calls_refused_change_nothing() {
    let body = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-1"}"#;
    let mut session = to_signed_in(seed_builder().build().unwrap(), body);
    let foreign = |origin: &str| CallError::ForeignOrigin { origin: origin.to_owned() };
    let cases: Vec<(&str, ApiRequest, CallError)> = vec![
        ("another host", ApiRequest::get("https://evil.example/api/domain/odata/x"), foreign("https://evil.example")),
        (
            "a suffix host",
            ApiRequest::get("https://demodb.my.erp.net.evil.example/x"),
            foreign("https://demodb.my.erp.net.evil.example"),
        ),
        (
            "userinfo trick",
            ApiRequest::get("https://demodb.my.erp.net@evil.example/x"),
            foreign("https://evil.example"),
        ),
        (
            "plain http",
            ApiRequest::get("http://demodb.my.erp.net/api/domain/odata/x"),
            foreign("http://demodb.my.erp.net"),
        ),
        (
            "another port",
            ApiRequest::get("https://demodb.my.erp.net:8443/x"),
            foreign("https://demodb.my.erp.net:8443"),
        ),
        ("scheme-relative", ApiRequest::get("//evil.example/x"), foreign("https://evil.example")),
        ("backslashes", ApiRequest::get("\\\\evil.example\\x"), foreign("https://evil.example")),
        ("scheme without slashes", ApiRequest::get("https:evil.example/x"), foreign("https://evil.example")),
        (
            "backslash before @",
            ApiRequest::get("https://evil.example\\@demodb.my.erp.net/"),
            foreign("https://evil.example"),
        ),
        ("IPv6 loopback", ApiRequest::get("https://[::1]/x"), foreign("https://[::1]")),
        ("javascript", ApiRequest::get("javascript:alert(1)"), foreign("null")),
        ("data", ApiRequest::get("data:text/plain,hi"), foreign("null")),
        ("file", ApiRequest::get("file:///etc/passwd"), foreign("null")),
        (
            "Authorization set",
            ApiRequest::get("x").with_header("Authorization", "Bearer mine"),
            CallError::AuthorizationHeader,
        ),
        (
            "AUTHORIZATION set",
            ApiRequest::get("x").with_header("AUTHORIZATION", "Basic x"),
            CallError::AuthorizationHeader,
        ),
        ("not a URL", ApiRequest::get("https://"), CallError::InvalidUrl),
    ];
    report("API calls refused", cases.len());
    for (name, request, expected) in cases {
        let before = state_of(&session);
        assert_eq!(session.call_api(T0 + 1, request), Err(expected), "{name}");
        assert_eq!(state_of(&session), before, "{name}: state changed");
        assert!(matches!(session.poll(), Output::WaitUntil(_) | Output::Idle), "{name}: something was sent");
    }
    let setting = ConfigError::InvalidUrl { field: "issuer", reason: "it does not parse" };
    assert_eq!((CallError::InvalidUrl.code(), setting.code()), ("invalid_call_url", "invalid_url"));
}

/// Discovery documents that cannot be used fail discovery with their own reason; nothing
/// is kept, and `discover` can try again.
#[test]
fn hostile_discovery_documents_are_refused() {
    let doc = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::json!({"issuer": "https://idp.example", "authorization_endpoint": "https://idp.example/a",
            "token_endpoint": "https://idp.example/t"});
        edit(&mut v);
        HttpResponse::new(200, v.to_string())
    };
    let bad = |field| DiscoveryError::BadEndpoint(ConfigError::InsecureUrl { field });
    let cases: Vec<(&str, HttpResponse, DiscoveryError)> = vec![
        ("404", HttpResponse::new(404, "<html>"), DiscoveryError::Status(404)),
        ("500", HttpResponse::new(500, ""), DiscoveryError::Status(500)),
        (
            "redirect",
            HttpResponse::new(302, "").with_header("Location", "https://evil.example/"),
            DiscoveryError::Status(302),
        ),
        ("HTML", HttpResponse::new(200, "<!doctype html>"), DiscoveryError::Malformed),
        ("array", HttpResponse::new(200, "[]"), DiscoveryError::Malformed),
        ("empty", HttpResponse::new(200, ""), DiscoveryError::Malformed),
        ("no token endpoint", doc(&|v| v["token_endpoint"] = serde_json::Value::Null), DiscoveryError::Malformed),
        ("endpoint a number", doc(&|v| v["token_endpoint"] = 5.into()), DiscoveryError::Malformed),
        (
            "token endpoint twice",
            HttpResponse::new(
                200,
                r#"{"issuer":"https://idp.example","authorization_endpoint":"https://idp.example/a","token_endpoint":"https://idp.example/t","token_endpoint":"https://evil.example/t"}"#,
            ),
            DiscoveryError::Malformed,
        ),
        ("another issuer", doc(&|v| v["issuer"] = "https://evil.example".into()), DiscoveryError::IssuerMismatch),
        ("issuer in other case", doc(&|v| v["issuer"] = "https://IDP.example".into()), DiscoveryError::IssuerMismatch),
        (
            "plain http token endpoint",
            doc(&|v| v["token_endpoint"] = "http://idp.example/t".into()),
            bad("token_endpoint"),
        ),
        ("plain http keys", doc(&|v| v["jwks_uri"] = "http://idp.example/k".into()), bad("jwks_uri")),
        (
            "relative endpoint",
            doc(&|v| v["authorization_endpoint"] = "/a".into()),
            DiscoveryError::BadEndpoint(ConfigError::InvalidUrl {
                field: "authorization_endpoint",
                reason: "it is relative",
            }),
        ),
        (
            "too large",
            HttpResponse::new(200, format!("{{\"x\":\"{}\"}}", "y".repeat(300_000))),
            DiscoveryError::Malformed,
        ),
    ];
    report("discovery documents refused", cases.len());
    for (name, response, expected) in cases {
        let config = Config::discover("https://idp.example").client_id("a").redirect_uri(REDIRECT).build().unwrap();
        let mut session = Session::with_random(config, CountingRandom::default());
        let request = drain(&mut session).requests.remove(0);
        let before = state_of(&session);
        session.handle_response(T0, request.id, response).unwrap();
        let out = drain(&mut session);
        assert_eq!(out.events, vec![Event::DiscoveryFailed { error: expected }], "{name}");
        assert_eq!(state_of(&session), before, "{name}: state changed");
        assert!(!session.is_provider_ready());
        session.discover(T0).unwrap();
        assert_eq!(drain(&mut session).requests.len(), 1, "{name}: discover tries again");
    }
}

/// The ERP.net preset holds a discovery document to the instance's origin, as it holds a
/// stored one and the instance's sites: an endpoint elsewhere (another host, a subdomain,
/// plain http, another port) fails discovery without falling back, so that whoever can
/// answer for the document cannot send the client secret, a code or a refresh token away.
#[test]
fn the_erpnet_preset_holds_the_discovery_document_to_the_instance_origin() {
    let id = format!("{ROOT}/id");
    let foreign = |field: &'static str, url: &str| {
        let mut doc = serde_json::json!({"issuer": id, "authorization_endpoint": format!("{id}/connect/authorize"),
            "token_endpoint": format!("{id}/connect/token"), "jwks_uri": format!("{id}/.well-known/openid-configuration/jwks")});
        doc[field] = url.into();
        (field, doc)
    };
    let cases = [
        foreign("token_endpoint", "https://evil.example/connect/token"),
        foreign("token_endpoint", "https://other.my.erp.net/id/connect/token"),
        foreign("token_endpoint", "https://demodb.my.erp.net:8443/id/connect/token"),
        foreign("authorization_endpoint", "https://evil.example/authorize"),
        foreign("jwks_uri", "https://evil.example/jwks"),
        foreign("userinfo_endpoint", "https://evil.example/userinfo"),
        foreign("revocation_endpoint", "https://evil.example/revoke"),
        foreign("end_session_endpoint", "https://evil.example/logout"),
    ];
    report("discovery documents off the instance's origin", cases.len());
    for (field, doc) in cases {
        let config = Config::erpnet(ROOT).client_id(CLIENT_ID).client_secret(SECRET).redirect_uri(REDIRECT);
        let mut session = Session::with_random(config.build().unwrap(), CountingRandom::default());
        let out = drain(&mut session);
        let discovery = out.requests.iter().find(|r| r.kind == RequestKind::Discovery).unwrap();
        let before = state_of(&session);
        session.handle_response(T0, discovery.id, HttpResponse::new(200, doc.to_string())).unwrap();
        let out = drain(&mut session);
        assert_eq!(
            out.events,
            vec![Event::DiscoveryFailed { error: DiscoveryError::ForeignEndpoint { field } }],
            "{field}"
        );
        assert!(!session.is_provider_ready(), "{field}: no fallback to the fixed paths either");
        assert_eq!(state_of(&session), before, "{field}: state changed");
        assert_eq!(DiscoveryError::ForeignEndpoint { field }.code(), "discovery_foreign_endpoint");
    }
    // A generic provider may keep its endpoints on other origins.
    let config = Config::discover("https://idp.example").client_id("a").redirect_uri(REDIRECT).build().unwrap();
    let mut session = Session::with_random(config, CountingRandom::default());
    let request = drain(&mut session).requests.remove(0);
    let doc = r#"{"issuer":"https://idp.example","authorization_endpoint":"https://login.idp.example/a","token_endpoint":"https://api.idp.example/t"}"#;
    session.handle_response(T0, request.id, HttpResponse::new(200, doc)).unwrap();
    assert_eq!(drain(&mut session).events, vec![Event::ProviderReady { discovered: true }]);
}

/// Userinfo answers that are not the signed-in user's claims fail the userinfo call only.
#[test]
fn hostile_userinfo_answers_fail_the_call_only() {
    let cases: Vec<(&str, HttpResponse, UserInfoError)> = vec![
        ("500", HttpResponse::new(500, ""), UserInfoError::Status { status: 500 }),
        ("403", HttpResponse::new(403, ""), UserInfoError::Status { status: 403 }),
        ("HTML", HttpResponse::new(200, "<html>"), UserInfoError::Malformed),
        ("array", HttpResponse::new(200, "[]"), UserInfoError::Malformed),
        ("no sub", HttpResponse::new(200, r#"{"name":"x"}"#), UserInfoError::SubjectMismatch),
        ("sub a number", HttpResponse::new(200, r#"{"sub":7}"#), UserInfoError::SubjectMismatch),
        ("sub twice", HttpResponse::new(200, r#"{"sub":"admin","sub":"mallory"}"#), UserInfoError::Malformed),
    ];
    report("userinfo answers refused", cases.len() + 1);
    for (name, response, expected) in cases {
        let (mut session, refresh) = session_refreshing();
        let body = r#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600}"#;
        session.handle_response(T0 + 3_541_000, refresh.id, json(200, body)).unwrap();
        drain(&mut session);
        let before = state_of(&session);
        let call = session.fetch_user_info(T0 + 3_541_000).unwrap();
        let request = drain(&mut session).requests.remove(0);
        session.handle_response(T0 + 3_541_000, request.id, response).unwrap();
        let out = drain(&mut session);
        assert_eq!(out.events, vec![Event::UserInfoFailed { call, error: expected }], "{name}");
        assert_eq!(state_of(&session), before, "{name}: state changed");
    }
    // A 401 (for a token older than the rejection cooldown) renews and retries once; a
    // second 401 is the caller's.
    let (mut session, refresh) = session_refreshing();
    session
        .handle_response(T0 + 3_541_000, refresh.id, json(200, r#"{"access_token":"at-2","expires_in":3600}"#))
        .unwrap();
    drain(&mut session);
    let later = T0 + 3_541_000 + Timing::default().rejection_cooldown_ms;
    let call = session.fetch_user_info(later).unwrap();
    let first = drain(&mut session).requests.remove(0);
    session.handle_response(later, first.id, HttpResponse::new(401, "")).unwrap();
    let renewal = drain(&mut session).requests.remove(0);
    assert_eq!(renewal.kind, RequestKind::Token);
    session.handle_response(later, renewal.id, json(200, r#"{"access_token":"at-3","expires_in":3600}"#)).unwrap();
    let replay = drain(&mut session).requests.remove(0);
    assert_eq!(replay.header("authorization"), Some("Bearer at-3"));
    session.handle_response(later, replay.id, HttpResponse::new(401, "")).unwrap();
    assert_eq!(
        drain(&mut session).events,
        vec![Event::UserInfoFailed { call, error: UserInfoError::Status { status: 401 } }]
    );
}
