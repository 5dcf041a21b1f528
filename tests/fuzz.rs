//! Fuzzing of every parser through the public API: no input panics, and a refused input
//! changes nothing.

mod common;

use common::*;
use erpnet_auth::*;
use proptest::prelude::*;

fn pending() -> Session {
    to_pending(seed_builder().build().unwrap()).0
}

/// Strings built from the pieces callbacks are made of, so the fuzzer reaches deep paths.
fn callback_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("code=".to_owned()),
        Just("state=".to_owned()),
        Just(first_state()),
        Just("&".to_owned()),
        Just("#".to_owned()),
        Just("?".to_owned()),
        Just("=".to_owned()),
        Just("error=access_denied".to_owned()),
        Just("iss=https%3A%2F%2Fdemodb.my.erp.net%2Fid".to_owned()),
        Just("%".to_owned()),
        Just("%FF".to_owned()),
        Just("id_token=a.b.c".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,4}",
    ];
    (
        prop_oneof![Just(REDIRECT.to_owned()), Just("http://localhost".to_owned()), Just(String::new())],
        prop::collection::vec(piece, 0..12),
    )
        .prop_map(|(head, parts)| format!("{head}{}", parts.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn callbacks_never_panic(input in callback_like(), form in any::<bool>()) {
        let mut session = pending();
        let before = state_of(&session);
        let callback = if form { Callback::FormPost(&input) } else { Callback::Url(&input) };
        match session.handle_callback(T0 + 1, callback) {
            // The state matched: spent either way, and exactly one of code exchange or refusal.
            Ok(()) => {
                let drained = drain(&mut session);
                let refused = drained.events.iter().filter(|e| matches!(e, Event::SignInFailed { .. })).count();
                prop_assert_eq!(drained.requests.len() + refused, 1);
                prop_assert!(!session.is_sign_in_pending());
            }
            // Refused before the state matched: nothing changed, nothing to drain.
            Err(_) => {
                prop_assert_eq!(state_of(&session), before);
                prop_assert!(matches!(session.poll(), Output::Idle | Output::WaitUntil(_)));
            }
        }
    }

    #[test]
    fn token_responses_never_panic(status in prop_oneof![Just(200u16), Just(400), Just(401), Just(429), Just(503), 100u16..600], body in token_like()) {
        let (mut session, exchange) = to_exchanging(seed_builder().build().unwrap());
        session.handle_response(T0, exchange.id, HttpResponse::new(status, body.into_bytes())).unwrap();
        let events: Vec<Event> =
            drain(&mut session).events.into_iter().filter(|e| !matches!(e, Event::Warning { .. })).collect();
        prop_assert_eq!(events.len(), 1);
        match &events[0] {
            Event::SignedIn { expires_at, .. } => {
                prop_assert!(session.is_signed_in());
                prop_assert!(expires_at.is_none_or(|e| e > T0));
            }
            Event::SignInFailed { error } => {
                prop_assert!(!session.is_signed_in());
                prop_assert!(!error.to_string().contains(SECRET));
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn snapshots_never_panic(text in snapshot_like()) {
        if let Ok(snapshot) = Snapshot::from_json(&text) {
            // Whatever parses restores or is refused as another client's: never a panic.
            let _ = Session::restore(seed_builder().build().unwrap(), snapshot, CountingRandom::default());
        }
    }

    #[test]
    fn discovery_documents_never_panic(status in 100u16..600, body in discovery_like()) {
        let config = Config::discover("https://idp.example").client_id("a").redirect_uri(REDIRECT).build().unwrap();
        let mut session = Session::with_random(config, CountingRandom::default());
        let request = drain(&mut session).requests.remove(0);
        session.handle_response(T0, request.id, HttpResponse::new(status, body.into_bytes())).unwrap();
        let events = drain(&mut session).events;
        prop_assert_eq!(events.len(), 1);
    }
}

fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| if f.is_finite() { f.to_string() } else { "1e999".to_owned() }),
        "[ -~]{0,10}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"Bearer\"".to_owned()),
        Just("3600".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ]
}

fn object_of(fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(fields), json_value()), 0..8).prop_map(|pairs| {
        let inner: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap())).collect();
        format!("{{{}}}", inner.join(","))
    })
}

fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        object_of(&[
            "access_token",
            "token_type",
            "expires_in",
            "refresh_token",
            "id_token",
            "scope",
            "error",
            "error_description"
        ]),
        "\\PC{0,64}",
        Just(String::new()),
    ]
}

fn snapshot_like() -> impl Strategy<Value = String> {
    prop_oneof![
        object_of(&["version", "issuer", "client_id", "metadata", "pending", "tokens", "id_token"]),
        "\\PC{0,64}",
        Just(r#"{"version":1,"issuer":"https://demodb.my.erp.net/id","client_id":"my.trusted.app/first","tokens":{"access_token":"a","received_at":5,"expires_at":4}}"#.to_owned()),
    ]
}

fn discovery_like() -> impl Strategy<Value = String> {
    prop_oneof![
        object_of(&["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint", "authorization_response_iss_parameter_supported"]),
        Just(r#"{"issuer":"https://idp.example","authorization_endpoint":"https://idp.example/a","token_endpoint":"https://idp.example/t"}"#.to_owned()),
        "\\PC{0,64}",
    ]
}
