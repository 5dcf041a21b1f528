//! Renewal semantics, scenario by scenario, on a fake clock.

mod common;

use common::*;
use erpnet_auth::config::ProviderMetadata;
use erpnet_auth::erpnet::{ERPNET_DEFAULT_API_CONCURRENCY, ERPNET_DEFAULT_SCOPE};
use erpnet_auth::error::{CallError, OAuthError, OAuthErrorCode, SignInRequiredReason, TokenError, Warning};
use erpnet_auth::*;

fn signed_in_with(timing: Timing) -> Session {
    signed_in_with_builder(seed_builder().timing(timing))
}

fn signed_in_with_builder(builder: ConfigBuilder) -> Session {
    signed_in_with_config(builder.build().unwrap())
}

/// Any configuration with user sign-in, signed in with TOKENS.
fn signed_in_with_config(config: Config) -> Session {
    let session = to_signed_in(config, TOKENS);
    assert!(session.is_signed_in());
    session
}

fn signed_in() -> Session {
    signed_in_with(Timing::default())
}

/// The snapshot another tab persisted after it refreshed: at-other and rt-other, fresh.
/// The snapshot another tab or process stored after rotating the tokens: written as JSON,
/// the way it reaches a host.
fn rotated_elsewhere(session: &Session) -> Snapshot {
    let mut other: serde_json::Value = serde_json::from_str(&session.snapshot().to_json()).unwrap();
    other["tokens"]["access_token"] = "at-other".into();
    other["tokens"]["refresh_token"] = "rt-other".into();
    other["tokens"]["received_at"] = EXPIRED.into();
    other["tokens"]["expires_at"] = (EXPIRED + 3_600_000).into();
    Snapshot::from_json(&other.to_string()).unwrap()
}

fn call(session: &mut Session, now: u64) -> (CallId, Drained) {
    let id = session.call_api(now, ApiRequest::get("Crm_Customers")).unwrap();
    (id, drain(session))
}

#[test]
fn forbidden_is_delivered_without_a_refresh() {
    let mut session = signed_in();
    let (id, out) = call(&mut session, T0);
    session.handle_response(T0, out.requests[0].id, HttpResponse::new(403, "{}")).unwrap();
    let out = drain(&mut session);
    assert!(out.requests.is_empty(), "no refresh on 403");
    assert!(
        matches!(&out.events[..], [Event::CallCompleted { call, response, .. }] if *call == id && response.status == 403)
    );
}

#[test]
fn a_429_is_sent_again_with_backoff_then_given_to_the_caller() {
    let mut session = signed_in();
    let request = ApiRequest::new(Method::Post, "Crm_Customers")
        .with_header("TransactionId", "tx-1")
        .with_body(b"{\"Name\":\"x\"}".to_vec());
    let call = session.call_api(T0, request).unwrap();
    let first = drain(&mut session).requests.remove(0);
    let (mut now, mut sent) = (T0, first.clone());
    let base = Timing::default().throttle_retry_base_ms;
    for attempt in 1..=Timing::default().max_throttle_retries {
        session.handle_response(now, sent.id, HttpResponse::new(429, "busy")).unwrap();
        let out = drain(&mut session);
        assert!(out.events.is_empty() && out.requests.is_empty(), "attempt {attempt}: nothing for the caller yet");
        let wait = out.wait_until.unwrap() - now;
        let exponential = (base << (attempt - 1)).min(Timing::default().throttle_retry_max_ms);
        assert!((exponential / 2..=exponential).contains(&wait), "attempt {attempt}: waited {wait} ms");
        now += wait;
        session.handle_timeout(now).unwrap();
        let again = drain(&mut session).requests.remove(0);
        // The same request again (ERP.net refuses before executing, so POST is safe).
        assert_eq!((&again.method, &again.url, &again.body), (&first.method, &first.url, &first.body));
        assert_eq!(again.header("TransactionId"), Some("tx-1"));
        assert_eq!(again.call, Some(call));
        sent = again;
    }
    session.handle_response(now, sent.id, HttpResponse::new(429, "still busy")).unwrap();
    let out = drain(&mut session);
    assert!(
        matches!(&out.events[..], [Event::CallCompleted { call: c, response, .. }] if *c == call && response.status == 429),
        "{:?}",
        out.events
    );
}

#[test]
fn retry_after_is_honoured_and_a_long_one_goes_to_the_caller() {
    let mut session = signed_in();
    let (_, out) = call(&mut session, T0);
    session
        .handle_response(T0, out.requests[0].id, HttpResponse::new(429, "").with_header("Retry-After", "3"))
        .unwrap();
    assert_eq!(drain(&mut session).wait_until, Some(T0 + 3_000));
    session.handle_timeout(T0 + 3_000).unwrap();
    let again = drain(&mut session).requests.remove(0);
    // Longer than the timing allows: the caller decides.
    let limited = HttpResponse::new(429, "").with_header("Retry-After", "30");
    session.handle_response(T0 + 3_000, again.id, limited).unwrap();
    let out = drain(&mut session);
    assert!(
        matches!(&out.events[..], [Event::CallCompleted { response, .. }] if response.header("retry-after") == Some("30"))
    );
}

#[test]
fn a_429_for_a_post_to_another_api_goes_to_the_caller() {
    // Outside ERP.net a 429 may not say whether the request ran: only idempotent methods
    // are sent again.
    let metadata =
        ProviderMetadata::new("https://idp.example", "https://idp.example/authorize", "https://idp.example/token");
    let config = Config::with_endpoints(metadata)
        .client_id("app")
        .redirect_uri(REDIRECT)
        .scope("read")
        .api_root("https://api.example/")
        .build()
        .unwrap();
    assert_eq!(config.api_concurrency(), None, "no request limit outside ERP.net");
    let mut session = signed_in_with_config(config);
    session.call_api(T0, ApiRequest::new(Method::Post, "orders")).unwrap();
    let post = drain(&mut session).requests.remove(0);
    session.handle_response(T0, post.id, HttpResponse::new(429, "")).unwrap();
    assert!(
        matches!(&drain(&mut session).events[..], [Event::CallCompleted { response, .. }] if response.status == 429)
    );
    session.call_api(T0, ApiRequest::get("orders")).unwrap();
    let get = drain(&mut session).requests.remove(0);
    session.handle_response(T0, get.id, HttpResponse::new(429, "")).unwrap();
    assert!(drain(&mut session).events.is_empty(), "a GET is sent again");
}

#[test]
fn a_throttled_call_can_be_cancelled_and_ends_once() {
    let mut session = signed_in();
    let (call, out) = call(&mut session, T0);
    session.handle_response(T0, out.requests[0].id, HttpResponse::new(429, "")).unwrap();
    drain(&mut session);
    session.cancel_call(T0 + 1, call).unwrap();
    let out = drain(&mut session);
    assert!(matches!(&out.events[..], [Event::CallFailed { error: CallFailure::Cancelled, .. }]), "{:?}", out.events);
    assert!(out.wait_until.is_none_or(|at| at > T0 + 60_000), "no retry left to wait for: {:?}", out.wait_until);
    session.handle_timeout(T0 + 60_000).unwrap();
    assert!(drain(&mut session).requests.is_empty());
}

#[test]
fn a_thousand_calls_at_expiry_make_one_refresh_then_go_out_a_few_at_a_time_in_order() {
    let mut session = signed_in();
    let (first_call, first) = call(&mut session, EXPIRED);
    assert_eq!(first.requests.len(), 1);
    assert_eq!(first.requests[0].kind, RequestKind::Token);
    for _ in 0..999 {
        assert!(call(&mut session, EXPIRED).1.requests.is_empty(), "calls wait for the one refresh");
    }
    session
        .handle_response(EXPIRED, first.requests[0].id, HttpResponse::new(200, TOKENS.replace("at-1", "at-2")))
        .unwrap();
    let limit = usize::try_from(ERPNET_DEFAULT_API_CONCURRENCY).unwrap();
    let mut in_flight: std::collections::VecDeque<HttpRequest> = drain(&mut session).requests.into();
    let mut completed = Vec::new();
    while let Some(request) = in_flight.pop_front() {
        assert!(in_flight.len() < limit, "at most {limit} in flight");
        assert_eq!(request.header("authorization"), Some("Bearer at-2"));
        session.handle_response(EXPIRED, request.id, HttpResponse::new(200, "{}")).unwrap();
        let out = drain(&mut session);
        for event in &out.events {
            if let Event::CallCompleted { call, .. } = event {
                completed.push(*call);
            }
        }
        in_flight.extend(out.requests);
    }
    assert_eq!(completed.len(), 1000);
    assert_eq!(completed[0], first_call);
    assert!(completed.windows(2).all(|w| w[0] < w[1]), "completed in call order");

    // Without a limit they all go out at once.
    let mut session = signed_in_with_builder(seed_builder().api_concurrency(None));
    let sent: usize = (0..1000).map(|_| call(&mut session, T0).1.requests.len()).sum();
    assert_eq!(sent, 1000);
}

#[test]
fn transient_failures_back_off_then_fail_waiting_calls_and_keep_tokens() {
    let mut timing = Timing::default();
    timing.max_refresh_attempts = 3;
    let mut session = signed_in_with(timing);
    let (id, out) = call(&mut session, EXPIRED);
    let mut refresh = out.requests[0].clone();
    let mut now = EXPIRED;
    let mut delays = Vec::new();
    for attempt in 1..=3u32 {
        session.handle_response(now, refresh.id, HttpResponse::new(503, "")).unwrap();
        let out = drain(&mut session);
        if attempt < 3 {
            let Event::RenewalDeferred { attempt: a, retry_at, .. } = out.events[0].clone() else {
                panic!("{:?}", out.events)
            };
            assert_eq!(a, attempt);
            assert_eq!(out.wait_until, Some(retry_at));
            delays.push(retry_at - now);
            now = retry_at;
            session.handle_timeout(now).unwrap();
            refresh = drain(&mut session).requests.remove(0);
        } else {
            assert!(matches!(out.events[0], Event::RenewalFailed { .. }));
            assert!(
                matches!(&out.events[1], Event::CallFailed { call, error: CallFailure::RenewalUnavailable(_) } if *call == id)
            );
            assert_eq!(out.wait_until, None, "no retry loop after the bound");
        }
    }
    // Exponential with equal jitter: attempt 1 in [500, 1000) ms, attempt 2 in [1000, 2000).
    assert!((500..1000).contains(&delays[0]) && (1000..2000).contains(&delays[1]), "{delays:?}");
    assert!(session.snapshot().tokens().cloned().unwrap().refresh_token().is_some(), "tokens kept");
    // Backed off it stays: until the cooldown (the longest retry delay) is over, calls fail
    // at once and nothing is sent, however many come.
    for i in 1..=5 {
        let (id, out) = call(&mut session, now + i * 1_000);
        assert!(out.requests.is_empty(), "call {i} sent {:?}", out.requests);
        assert!(
            matches!(&out.events[..], [Event::CallFailed { call, error: CallFailure::RenewalUnavailable(_) }] if *call == id)
        );
    }
    // After it, the next call tries again: one request.
    let (_, out) = call(&mut session, now + Timing::default().retry_max_ms);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].kind, RequestKind::Token);
}

#[test]
fn retry_after_on_refresh_is_honoured() {
    let mut session = signed_in();
    let (_, out) = call(&mut session, EXPIRED);
    session
        .handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(429, "").with_header("Retry-After", "20"))
        .unwrap();
    let out = drain(&mut session);
    assert!(matches!(out.events[0], Event::RenewalDeferred { retry_at, .. } if retry_at == EXPIRED + 20_000));
}

#[test]
fn invalid_grant_requires_sign_in_and_fails_waiting_calls() {
    let mut session = signed_in();
    let (a, out) = call(&mut session, EXPIRED);
    let (b, _) = call(&mut session, EXPIRED);
    session
        .handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(400, r#"{"error":"invalid_grant"}"#))
        .unwrap();
    let out = drain(&mut session);
    let reason = SignInRequiredReason::RefreshRejected {
        error: OAuthError { code: OAuthErrorCode::InvalidGrant, description: None, status: Some(400) },
    };
    assert_eq!(
        out.events,
        vec![
            Event::SignInRequired { reason: reason.clone() },
            Event::CallFailed { call: a, error: CallFailure::SignInRequired(reason.clone()) },
            Event::CallFailed { call: b, error: CallFailure::SignInRequired(reason) },
        ]
    );
    assert!(out.persisted[0].tokens().is_none(), "the dead grant is not retried after a restart");
    assert_eq!(session.call_api(EXPIRED, ApiRequest::get("x")), Err(CallError::Usage(UsageError::NotSignedIn)));
}

#[test]
fn invalid_grant_for_a_token_another_tab_already_rotated_keeps_the_session() {
    let mut session = signed_in();
    let (id, out) = call(&mut session, EXPIRED);
    let refresh = out.requests[0].id;
    // Meanwhile another tab refreshed and persisted; this tab adopts its snapshot.
    session.handle_snapshot(EXPIRED, rotated_elsewhere(&session)).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1, "the waiting call goes out with the adopted token");
    assert_eq!(out.requests[0].header("authorization"), Some("Bearer at-other"));
    // The old refresh fails: the refresh token it used is no longer current.
    session.handle_response(EXPIRED, refresh, HttpResponse::new(400, r#"{"error":"invalid_grant"}"#)).unwrap();
    let out2 = drain(&mut session);
    assert!(out2.events.is_empty() && out2.persisted.is_empty(), "{:?}", out2.events);
    assert!(session.is_signed_in());
    session.handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, "{}")).unwrap();
    assert!(matches!(&drain(&mut session).events[..], [Event::CallCompleted { call, .. }] if *call == id));
}

#[test]
fn a_401_for_a_token_already_replaced_just_replays() {
    let mut session = signed_in();
    // Two calls go out with at-1 (past the rejection cooldown of a new token); the first
    // comes back 401 and causes a refresh.
    let t = T0 + Timing::default().rejection_cooldown_ms;
    let (_, a) = call(&mut session, t);
    let (b_id, b) = call(&mut session, t);
    session.handle_response(t, a.requests[0].id, HttpResponse::new(401, "")).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    assert_eq!(refresh.kind, RequestKind::Token);
    session.handle_response(T0, refresh.id, HttpResponse::new(200, TOKENS.replace("at-1", "at-2"))).unwrap();
    let replay_a = drain(&mut session).requests.remove(0);
    assert_eq!(replay_a.header("authorization"), Some("Bearer at-2"));
    // The second call's 401 is for at-1, already replaced: replay without refreshing.
    session.handle_response(T0, b.requests[0].id, HttpResponse::new(401, "")).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].kind, RequestKind::Api);
    assert_eq!(out.requests[0].header("authorization"), Some("Bearer at-2"));
    session.handle_response(T0, out.requests[0].id, HttpResponse::new(200, "{}")).unwrap();
    assert!(matches!(&drain(&mut session).events[..], [Event::CallCompleted { call, .. }] if *call == b_id));
}

#[test]
fn cancelled_calls_get_one_result_and_late_answers_are_ignored() {
    let mut session = signed_in();
    let (waiting, _) = call(&mut session, EXPIRED);
    session.cancel_call(EXPIRED, waiting).unwrap();
    assert_eq!(drain(&mut session).events, vec![Event::CallFailed { call: waiting, error: CallFailure::Cancelled }]);

    let mut session = signed_in();
    let (sent, out) = call(&mut session, T0);
    session.cancel_call(T0, sent).unwrap();
    drain(&mut session);
    session.handle_response(T0, out.requests[0].id, HttpResponse::new(200, "{}")).unwrap();
    assert!(drain(&mut session).events.is_empty());
}

#[test]
fn rotation_new_same_or_absent_refresh_token() {
    for (body, expected) in [
        (r#"{"access_token":"at-2","expires_in":3600,"refresh_token":"rt-2"}"#, "rt-2"),
        (r#"{"access_token":"at-2","expires_in":3600,"refresh_token":"rt-1"}"#, "rt-1"),
        (r#"{"access_token":"at-2","expires_in":3600}"#, "rt-1"),
    ] {
        let mut session = signed_in();
        let (_, out) = call(&mut session, EXPIRED);
        session.handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, body)).unwrap();
        let out = drain(&mut session);
        let persisted = out.persisted[0].tokens().cloned().unwrap();
        assert_eq!(persisted.refresh_token().unwrap().secret(), expected);
        assert_eq!(session.id_token(), None);
        // Persisted before the replayed call uses the new token: Persist comes first.
        assert_eq!(out.requests[0].header("authorization"), Some("Bearer at-2"));
    }
}

#[test]
fn short_lived_tokens_are_not_renewed_in_a_loop() {
    let (mut session, exchange) = to_exchanging(seed_builder().timing(renewing_idle_sessions()).build().unwrap());
    // A 4-second token: not "60 s before expiry" (which is now), and not at half its life
    // either, but no sooner than the minimum renewal interval; a call that finds it expired
    // meanwhile renews on demand.
    session
        .handle_response(
            T0,
            exchange.id,
            HttpResponse::new(200, r#"{"access_token":"a","expires_in":4,"refresh_token":"r"}"#),
        )
        .unwrap();
    let out = drain(&mut session);
    assert!(out.requests.is_empty());
    assert_eq!(out.wait_until, Some(T0 + Timing::default().min_renewal_interval_ms));
    // A 40-second token renews at half its life.
    let (mut session, exchange) = to_exchanging(seed_builder().timing(renewing_idle_sessions()).build().unwrap());
    let body = r#"{"access_token":"a","expires_in":40,"refresh_token":"r"}"#;
    session.handle_response(T0, exchange.id, HttpResponse::new(200, body)).unwrap();
    assert_eq!(drain(&mut session).wait_until, Some(T0 + 20_000));
}

/// Found by the long simulation (seed 120377): a 401 for an already-replaced token arrives
/// after renewal gave up and the current token expired. The replayed call must trigger a
/// new renewal, not wait forever.
#[test]
fn replay_after_renewal_gave_up_tries_again() {
    let mut timing = renewing_idle_sessions();
    timing.max_refresh_attempts = 1;
    let mut session = signed_in_with(timing);
    let (b, out) = call(&mut session, T0);
    let b_request = out.requests[0].id;
    // Proactive renewal replaces at-1 with at-2.
    let renew_1 = T0 + 3_540_000;
    session.handle_timeout(renew_1).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    session.handle_response(renew_1, refresh.id, HttpResponse::new(200, TOKENS.replace("at-1", "at-2"))).unwrap();
    let renew_2 = drain(&mut session).wait_until.unwrap();
    // The next proactive renewal fails once: with one attempt allowed, renewal gives up.
    session.handle_timeout(renew_2).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    session.handle_response(renew_2, refresh.id, HttpResponse::new(503, "")).unwrap();
    let out = drain(&mut session);
    assert!(matches!(out.events[..], [Event::RenewalFailed { .. }]));
    assert_eq!(out.wait_until, None);
    // at-2 expires; then B's 401 (for at-1) finally arrives.
    let late = renew_1 + 3_600_000 + 1;
    session.handle_response(late, b_request, HttpResponse::new(401, "")).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1, "the replay starts a renewal");
    assert_eq!(out.requests[0].kind, RequestKind::Token);
    session.handle_response(late, out.requests[0].id, HttpResponse::new(200, TOKENS.replace("at-1", "at-3"))).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests[0].header("authorization"), Some("Bearer at-3"));
    session.handle_response(late, out.requests[0].id, HttpResponse::new(200, "{}")).unwrap();
    assert!(matches!(&drain(&mut session).events[..], [Event::CallCompleted { call, .. }] if *call == b));
}

/// Another tab rotated the refresh token before this tab sent its own refresh: the stale
/// refresh is no longer wanted, and once answered the adopted token serves the calls.
#[test]
fn an_unsent_refresh_made_obsolete_by_another_tab_is_not_wanted() {
    let mut session = signed_in();
    let (id, out) = call(&mut session, EXPIRED);
    let refresh = out.requests[0].id;
    assert!(session.is_request_wanted(refresh));
    session.handle_snapshot(EXPIRED, rotated_elsewhere(&session)).unwrap();
    let out = drain(&mut session);
    assert!(!session.is_request_wanted(refresh), "a refresh with rt-1 must not be sent now");
    assert_eq!(out.requests[0].header("authorization"), Some("Bearer at-other"));
    session.handle_transport_error(EXPIRED, refresh, TransportError::Other).unwrap();
    let out2 = drain(&mut session);
    assert!(out2.requests.is_empty() && out2.events.is_empty());
    session.handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, "{}")).unwrap();
    assert!(matches!(&drain(&mut session).events[..], [Event::CallCompleted { call, .. }] if *call == id));
}

/// Answers everything outstanding at `now`: token requests with `token`, API calls 200.
/// Returns how many token requests went out.
fn serve(session: &mut Session, now: u64, mut out: Drained, token: &dyn Fn() -> HttpResponse) -> u32 {
    let mut token_requests = 0;
    while let Some(request) = out.requests.pop() {
        let response = if request.kind == RequestKind::Token {
            token_requests += 1;
            token()
        } else {
            HttpResponse::new(200, "{}")
        };
        session.handle_response(now, request.id, response).unwrap();
        let more = drain(session);
        out.requests.extend(more.requests);
    }
    token_requests
}

/// A 10-minute token-endpoint outage with an expired token and one API call a second: the
/// token requests stay bounded by the longest backoff, whatever the call rate (it was 318).
#[test]
fn an_outage_costs_one_token_request_per_cooldown() {
    let mut session = signed_in();
    let timing = Timing::default();
    let unavailable = || HttpResponse::new(503, "");
    let (mut token_requests, mut failed, mut now) = (0, 0, EXPIRED);
    while now < EXPIRED + 600_000 {
        let (_, out) = call(&mut session, now);
        failed += out.events.iter().filter(|e| matches!(e, Event::CallFailed { .. })).count();
        token_requests += serve(&mut session, now, out, &unavailable);
        // Timers (backoff retries) that fall due before the next call.
        let next = now + 1_000;
        while let Some(at) = drain(&mut session).wait_until.filter(|at| *at < next) {
            session.handle_timeout(at).unwrap();
            let out = drain(&mut session);
            failed += out.events.iter().filter(|e| matches!(e, Event::CallFailed { .. })).count();
            token_requests += serve(&mut session, at, out, &unavailable);
        }
        now = next;
    }
    let bound = timing.max_refresh_attempts + u32::try_from(600_000 / timing.retry_max_ms).unwrap();
    println!("10-minute outage, one call a second: {token_requests} token requests, {failed} calls failed");
    assert!(token_requests <= bound, "{token_requests} token requests (bound {bound})");
    assert!(session.is_signed_in(), "no token is dropped for a transient fault");
    // The endpoint is back: the next call after the cooldown renews and goes through.
    let ok = || HttpResponse::new(200, TOKENS.replace("at-1", "at-2"));
    let later = now + timing.retry_max_ms;
    let (_, out) = call(&mut session, later);
    serve(&mut session, later, out, &ok);
    assert_eq!(session.snapshot().tokens().unwrap().access_token().secret(), "at-2");
}

/// A session nobody uses is not refreshed on a timer (it was 7 refreshes in 12 s of 3-second
/// tokens); its next call renews on demand.
#[test]
fn an_idle_session_is_not_renewed_on_a_timer() {
    let (mut session, exchange) = to_exchanging(seed_builder().build().unwrap());
    let short = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3,"refresh_token":"rt-1"}"#;
    session.handle_response(T0, exchange.id, HttpResponse::new(200, short)).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.wait_until, None, "no timer for an idle session");
    // Twelve seconds (four lifetimes) of timers firing anyway: nothing goes out.
    for second in 1..=12 {
        session.handle_timeout(T0 + second * 1_000).unwrap();
        assert!(drain(&mut session).requests.is_empty(), "a refresh at {second} s");
    }
    // The next call renews on demand, then goes out with the new token.
    let (_, out) = call(&mut session, T0 + 13_000);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].kind, RequestKind::Token);
}

/// A token request that never gets an answer frees the slot at its deadline: calls do not
/// wait forever, and the renewal backs off like after any transport error.
#[test]
fn a_hung_token_endpoint_times_out() {
    let mut session = signed_in();
    let (_, out) = call(&mut session, EXPIRED);
    let refresh = out.requests[0].clone();
    let deadline = refresh.deadline.expect("token requests have a deadline");
    assert_eq!(deadline, EXPIRED + Timing::default().request_timeout_ms);
    assert_eq!(out.wait_until, Some(deadline));
    session.handle_timeout(deadline).unwrap();
    let out = drain(&mut session);
    assert!(
        matches!(
            &out.events[..],
            [Event::RenewalDeferred { error: TokenError::Transport(TransportError::Timeout), .. }]
        ),
        "{:?}",
        out.events
    );
    assert!(!session.is_request_wanted(refresh.id), "the host may stop waiting");
    // The late answer is ignored without a contract error.
    session.handle_response(deadline + 1, refresh.id, HttpResponse::new(200, TOKENS)).unwrap();
    assert!(drain(&mut session).events.is_empty());
}

#[test]
fn a_long_call_does_not_start_with_a_token_that_expires_during_it() {
    let mut session = signed_in();
    // 50 minutes in: the token (1 hour, renewed from 59 minutes) still serves short calls.
    let now = T0 + 50 * 60_000;
    let (_, out) = call(&mut session, now);
    assert_eq!(out.requests[0].kind, RequestKind::Api);
    session.handle_response(now, out.requests[0].id, HttpResponse::new(200, "{}")).unwrap();
    drain(&mut session);
    // A 15-minute long poll would outlive it: the token is renewed first, then the call goes.
    let poll = ApiRequest::get("WaitForChanges").with_expected_duration(15 * 60_000);
    session.call_api(now, poll).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].kind, RequestKind::Token, "renewed before the long call");
    session.handle_response(now, out.requests[0].id, HttpResponse::new(200, TOKENS.replace("at-1", "at-2"))).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].header("authorization"), Some("Bearer at-2"));
    // A call longer than any token lives is not held for a renewal that cannot help.
    session.call_api(now, ApiRequest::get("x").with_expected_duration(2 * 3_600_000)).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].kind, RequestKind::Api);
}

#[test]
fn an_older_snapshot_never_rolls_the_tokens_back() {
    let mut session = signed_in();
    let first = session.snapshot();
    assert_eq!(first.generation(), 1, "the sign-in's tokens");
    // A refresh: generation 2.
    let (_, out) = call(&mut session, EXPIRED);
    session
        .handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, TOKENS.replace("at-1", "at-2")))
        .unwrap();
    drain(&mut session);
    assert_eq!(session.snapshot().generation(), 2);
    // The store echoes the first write late (a slow replica, a tab's own old message).
    session.handle_snapshot(EXPIRED, first).unwrap();
    drain(&mut session);
    session.call_api(EXPIRED, ApiRequest::get("Crm_Customers")).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests[0].header("authorization"), Some("Bearer at-2"), "not rolled back to at-1");
    // A newer one (another process refreshed after us) is adopted, and its generation kept.
    let mut newer: serde_json::Value = serde_json::from_str(&session.snapshot().to_json()).unwrap();
    newer["tokens"]["access_token"] = "at-3".into();
    newer["generation"] = 3.into();
    session.handle_snapshot(EXPIRED, Snapshot::from_json(&newer.to_string()).unwrap()).unwrap();
    drain(&mut session);
    assert_eq!(session.snapshot().generation(), 3);
    session.call_api(EXPIRED, ApiRequest::get("Crm_Customers")).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.last().unwrap().header("authorization"), Some("Bearer at-3"));
}

/// The compare-and-swap a shared store does with `base_generation`: a write whose base is
/// below the stored generation lost a race and is refused.
fn store_accepts(stored: u64, write: &Snapshot) -> bool {
    stored <= write.base_generation()
}

#[test]
fn each_write_names_the_generation_it_replaces_and_a_lost_race_is_refused_then_adopted() {
    // Two processes restored from one stored snapshot (generation 1).
    let stored = signed_in().snapshot();
    let mut winner = signed_in();
    let mut loser = signed_in();
    assert_eq!(stored.generation(), 1);
    // The winner refreshes: generation 2, derived from 1, which the store holds: written.
    let (_, out) = call(&mut winner, EXPIRED);
    winner
        .handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, TOKENS.replace("at-1", "at-2")))
        .unwrap();
    let written = drain(&mut winner).persisted;
    let won = written.last().unwrap();
    assert_eq!((won.generation(), won.base_generation()), (2, 1));
    assert!(store_accepts(stored.generation(), won));
    // The loser refreshed the same generation (a lock lost, say): derived from 1 as well,
    // but the store now holds 2, so its write is refused…
    let (_, out) = call(&mut loser, EXPIRED);
    loser.handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, TOKENS.replace("at-1", "at-9"))).unwrap();
    let lost = drain(&mut loser).persisted;
    let lost = lost.last().unwrap();
    assert_eq!((lost.generation(), lost.base_generation()), (2, 1));
    assert!(!store_accepts(won.generation(), lost));
    // …and the loser adopts what the store holds: the winner's tokens, at the same generation.
    loser.handle_snapshot(EXPIRED, Snapshot::from_json(&won.to_json()).unwrap()).unwrap();
    drain(&mut loser);
    loser.call_api(EXPIRED, ApiRequest::get("Crm_Customers")).unwrap();
    let out = drain(&mut loser);
    assert_eq!(out.requests.last().unwrap().header("authorization"), Some("Bearer at-2"));
    // A write that does not change the tokens is based on the generation it carries.
    loser.sign_out(EXPIRED, None).unwrap();
    let after = drain(&mut loser).persisted;
    let signed_out = after.last().unwrap();
    assert_eq!(signed_out.base_generation(), 2, "based on the adopted state");
    assert!(store_accepts(won.generation(), signed_out));
}

/// A token-endpoint answer that is not an OAuth error (a proxy's HTML 400 or 401, a bare
/// 403) says nothing about the grant: renewal backs off as after a 5xx, the waiting call
/// goes through once the endpoint answers, and renewal is suspended only after the bounded
/// attempts. (It was suspended for the whole cooldown at the first such answer.)
#[test]
fn a_token_answer_that_is_not_an_oauth_error_backs_off_like_a_5xx() {
    let not_oauth = [
        HttpResponse::new(400, "<html><body>Bad Request</body></html>").with_header("Content-Type", "text/html"),
        HttpResponse::new(401, "<!doctype html><title>Sign in to the proxy</title>"),
        HttpResponse::new(403, ""),
    ];
    for answer in not_oauth {
        let status = answer.status;
        let mut session = signed_in();
        let (id, out) = call(&mut session, EXPIRED);
        session.handle_response(EXPIRED, out.requests[0].id, answer.clone()).unwrap();
        let out = drain(&mut session);
        let [Event::RenewalDeferred { error: TokenError::UnexpectedStatus { status: s }, attempt: 1, retry_at }] =
            out.events[..]
        else {
            panic!("HTTP {status}: {:?}", out.events)
        };
        assert_eq!(s, status);
        assert_eq!(out.wait_until, Some(retry_at), "HTTP {status}");
        session.handle_timeout(retry_at).unwrap();
        let retry = drain(&mut session).requests.remove(0);
        assert_eq!(retry.kind, RequestKind::Token, "HTTP {status}");
        session.handle_response(retry_at, retry.id, HttpResponse::new(200, TOKENS.replace("at-1", "at-2"))).unwrap();
        let replayed = drain(&mut session).requests.remove(0);
        assert_eq!(replayed.header("authorization"), Some("Bearer at-2"), "HTTP {status}");
        session.handle_response(retry_at, replayed.id, HttpResponse::new(200, "{}")).unwrap();
        assert!(matches!(&drain(&mut session).events[..], [Event::CallCompleted { call, .. }] if *call == id));

        // Always such answers: suspended only after the bounded attempts.
        let mut session = signed_in();
        let (id, out) = call(&mut session, EXPIRED);
        let mut refresh = out.requests[0].clone();
        let mut now = EXPIRED;
        let attempts = Timing::default().max_refresh_attempts;
        for attempt in 1..=attempts {
            session.handle_response(now, refresh.id, answer.clone()).unwrap();
            let out = drain(&mut session);
            if attempt < attempts {
                assert!(matches!(out.events[..], [Event::RenewalDeferred { .. }]), "HTTP {status}: {:?}", out.events);
                now = out.wait_until.unwrap();
                session.handle_timeout(now).unwrap();
                refresh = drain(&mut session).requests.remove(0);
            } else {
                assert!(
                    matches!(&out.events[..], [Event::RenewalFailed { .. }, Event::CallFailed { call, error: CallFailure::RenewalUnavailable(_) }] if *call == id),
                    "HTTP {status}: {:?}",
                    out.events
                );
            }
        }
        assert!(session.is_signed_in(), "HTTP {status}: tokens kept");
    }
    // The provider's own refusal is still final at once.
    let mut session = signed_in();
    let (_, out) = call(&mut session, EXPIRED);
    let refusal = HttpResponse::new(400, r#"{"error":"invalid_request","error_description":"bad"}"#);
    session.handle_response(EXPIRED, out.requests[0].id, refusal).unwrap();
    assert!(matches!(drain(&mut session).events[0], Event::RenewalFailed { error: TokenError::OAuth(_) }));
}
/// RFC 6749 §5.1: a token answer without `scope` granted the scope asked for. A sign-in
/// reports the configured scope; a refresh (which asks for none, so the original) keeps the
/// scope granted before. A `scope` of the wrong type stays unknown, with a warning.
#[test]
fn a_token_answer_without_scope_granted_the_scope_asked_for() {
    let (mut session, exchange) = to_exchanging(seed_builder().build().unwrap());
    let no_scope = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-1"}"#;
    let out = redeem(&mut session, &exchange, no_scope);
    let asked = ERPNET_DEFAULT_SCOPE.to_owned();
    assert_eq!(out.events, vec![Event::SignedIn { scope: Some(asked.clone()), expires_at: Some(EXPIRED) }]);
    assert_eq!(session.granted_scope(), Some(asked.as_str()));
    assert_eq!(out.persisted.last().unwrap().tokens().unwrap().scope(), Some(asked.as_str()));

    // A refresh granted "openid read"; the next one says nothing: still "openid read".
    let mut session = signed_in();
    let (_, out) = call(&mut session, EXPIRED);
    let body = r#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600}"#;
    session.handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, body)).unwrap();
    let out = drain(&mut session);
    assert!(matches!(&out.events[0], Event::TokensRenewed { scope: Some(s), .. } if s == "openid read"));
    assert_eq!(session.granted_scope(), Some("openid read"));

    // A scope that is not a string: unknown, not the one asked for.
    let mut session = signed_in();
    let (_, out) = call(&mut session, EXPIRED);
    let body = r#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600,"scope":7}"#;
    session.handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, body)).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.events[0], Event::Warning { warning: Warning::UnusableScope });
    assert!(matches!(&out.events[1], Event::TokensRenewed { scope: None, .. }));
    assert_eq!(session.granted_scope(), None);
}

/// A session signed in with tokens that live `expires_in` seconds (`None`: the answer says
/// nothing), then renewed once by a call after their expiry: the current token is a renewed
/// one, `at-2`, received at the returned time.
fn renewed_with(expires_in: Option<u64>) -> (Session, u64) {
    let mut session = signed_in();
    let (_, out) = call(&mut session, EXPIRED);
    let lifetime = expires_in.map_or(String::new(), |s| format!(r#","expires_in":{s}"#));
    let body = format!(r#"{{"access_token":"at-2","token_type":"Bearer","refresh_token":"rt-2"{lifetime}}}"#);
    session.handle_response(EXPIRED, out.requests[0].id, HttpResponse::new(200, body)).unwrap();
    let replay = drain(&mut session).requests.remove(0);
    session.handle_response(EXPIRED, replay.id, HttpResponse::new(200, "{}")).unwrap();
    drain(&mut session);
    (session, EXPIRED)
}

/// Answers the 401 of a call at `now` and returns what the session sends next.
fn unauthorized(session: &mut Session, now: u64) -> (CallId, Vec<HttpRequest>) {
    let (id, out) = call(session, now);
    assert_eq!(out.requests[0].kind, RequestKind::Api);
    session.handle_response(now, out.requests[0].id, HttpResponse::new(401, "")).unwrap();
    (id, drain(session).requests)
}

/// A 401 is a verdict on the token the request carried. A renewed token within the clock
/// skew of its expiry (a provider that keeps `exp` in whole seconds ends it up to a second
/// early; a queue delays the request): renewed and replayed, however new the token is.
/// A fresh renewed token refused: the storm guard keeps the 401 with the caller.
#[test]
fn a_401_for_a_renewed_token_near_its_expiry_renews_and_replays_whatever_its_age() {
    // A 3-second token: every moment of its life is within the 5-second skew of its end.
    let (mut session, received) = renewed_with(Some(3));
    let (id, next) = unauthorized(&mut session, received + 2_100);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].kind, RequestKind::Token, "renewed although a renewal brought it 2 s ago");
    session
        .handle_response(received + 2_150, next[0].id, HttpResponse::new(200, TOKENS.replace("at-1", "at-3")))
        .unwrap();
    let replay = drain(&mut session).requests.remove(0);
    assert_eq!((replay.call, replay.header("authorization")), (Some(id), Some("Bearer at-3")));

    // A 10-second one refused at 6 s: within the skew of its end.
    let (mut session, received) = renewed_with(Some(10));
    let (_, next) = unauthorized(&mut session, received + 6_000);
    assert_eq!(next[0].kind, RequestKind::Token);

    // The same token refused 20 s after it came, far from its end: the caller's 401.
    let (mut session, received) = renewed_with(Some(3_600));
    let (id, out) = call(&mut session, received + 20_000);
    session.handle_response(received + 20_000, out.requests[0].id, HttpResponse::new(401, "")).unwrap();
    let out = drain(&mut session);
    assert!(out.requests.is_empty(), "no refresh within the cooldown");
    assert!(
        matches!(&out.events[..], [Event::CallCompleted { call, response, .. }] if *call == id && response.status == 401)
    );
}

/// A token whose lifetime the provider did not say (no `expires_in`): once the API accepted
/// it, its 401 means it stopped working, and it is renewed whatever its age; a later token
/// as old as that one was when it stopped is renewed on its 401 too.
#[test]
fn a_401_for_a_token_of_unknown_lifetime_that_worked_renews_and_replays() {
    let (mut session, received) = renewed_with(None);
    assert_eq!(session.expires_at(), Some(received + Timing::default().assumed_lifetime_ms));
    // It served a call (in `renewed_with`); 8 s after it came, the API refuses it.
    let (id, next) = unauthorized(&mut session, received + 8_000);
    assert_eq!(next.len(), 1, "renewed");
    assert_eq!(next[0].kind, RequestKind::Token);
    let at_3 = r#"{"access_token":"at-3","token_type":"Bearer","refresh_token":"rt-3"}"#;
    let renewed_at = received + 8_000;
    session.handle_response(renewed_at, next[0].id, HttpResponse::new(200, at_3)).unwrap();
    let replay = drain(&mut session).requests.remove(0);
    assert_eq!((replay.call, replay.header("authorization")), (Some(id), Some("Bearer at-3")));
    session.handle_response(renewed_at, replay.id, HttpResponse::new(200, "{}")).unwrap();
    drain(&mut session);
    // at-3 goes unused for 8 s; its first call is refused: as old as at-2 was, so renewed.
    let (_, next) = unauthorized(&mut session, renewed_at + 8_000);
    assert_eq!(next[0].kind, RequestKind::Token, "as old as the API lets such tokens live");
}

/// A 401 for a token another client's renewal replaced (adopted from the store meanwhile)
/// is replayed with the current token without a refresh, within the cooldown too.
#[test]
fn a_401_for_a_superseded_token_replays_with_the_current_one_without_a_refresh() {
    let (mut session, received) = renewed_with(Some(3_600));
    let (id, out) = call(&mut session, received + 1_000);
    let sent = out.requests[0].clone();
    session.handle_snapshot(received + 1_000, rotated_elsewhere(&session)).unwrap();
    drain(&mut session);
    session.handle_response(received + 1_000, sent.id, HttpResponse::new(401, "")).unwrap();
    let out = drain(&mut session);
    assert_eq!(out.requests.len(), 1);
    assert_eq!(out.requests[0].kind, RequestKind::Api, "no refresh");
    assert_eq!((out.requests[0].call, out.requests[0].header("authorization")), (Some(id), Some("Bearer at-other")));
}

/// A replayed call goes out before the calls made after it (as a call answered 429 does):
/// ERP.net runs a session's requests in the order they come, and a replay behind a burst
/// would wait for all of it.
#[test]
fn a_replay_goes_out_before_the_calls_made_after_it() {
    let mut session = signed_in_with_builder(seed_builder().api_concurrency(Some(1)));
    let t = T0 + Timing::default().rejection_cooldown_ms;
    let (first, out) = call(&mut session, t);
    let (second, waiting) = call(&mut session, t);
    assert!(waiting.requests.is_empty(), "one in flight");
    session.handle_response(t, out.requests[0].id, HttpResponse::new(401, "")).unwrap();
    let refresh = drain(&mut session).requests.remove(0);
    session.handle_response(t, refresh.id, HttpResponse::new(200, TOKENS.replace("at-1", "at-2"))).unwrap();
    let next = drain(&mut session).requests;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].call, Some(first), "the replay first");
    session.handle_response(t, next[0].id, HttpResponse::new(200, "{}")).unwrap();
    assert_eq!(drain(&mut session).requests[0].call, Some(second));
}
