//! Prints what one authorized call costs inside the machine, and what happens when 1,000
//! calls arrive at the instant the token expires. Run with `make bench`.

use std::hint::black_box;
use std::time::Instant;

use erpnet_auth::*;
use erpnet_auth_sim::SeededRandom;

const T0: u64 = 1_700_000_000_000;
const TOKENS: &str =
    r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-1","scope":"openid read"}"#;

struct Counts {
    token_requests: usize,
    token_ids: Vec<RequestId>,
    api_emitted: usize,
    api_requests: Vec<RequestId>,
    failures: usize,
    completed: usize,
}

fn drain(session: &mut Session, counts: &mut Counts) {
    loop {
        match session.poll() {
            Output::Http(req) if req.kind == RequestKind::Token => {
                counts.token_requests += 1;
                counts.token_ids.push(req.id);
            }
            Output::Http(req) => {
                counts.api_emitted += 1;
                counts.api_requests.push(req.id);
            }
            Output::Event(Event::CallFailed { .. }) => counts.failures += 1,
            Output::Event(Event::CallCompleted { .. }) => counts.completed += 1,
            Output::WaitUntil(_) | Output::Idle => return,
            _ => {}
        }
    }
}

fn signed_in() -> (Session, Counts) {
    let config = Config::erpnet("https://demodb.my.erp.net")
        .client_id("my.trusted.app/first")
        .client_secret("secret")
        .redirect_uri("http://localhost/signin-callback")
        .discovery(false)
        // Plain OAuth: this measures the renewal machine, not ID token checks.
        .scope("offline_access read")
        .build()
        .expect("valid configuration");
    let mut session = Session::with_random(config, SeededRandom::new(7));
    let mut counts = Counts {
        token_requests: 0,
        token_ids: Vec::new(),
        api_emitted: 0,
        api_requests: Vec::new(),
        failures: 0,
        completed: 0,
    };
    let url = session.sign_in(T0, SignInOptions::new()).expect("sign-in");
    drain(&mut session, &mut counts);
    let state = url.split("state=").nth(1).and_then(|s| s.split('&').next()).expect("state");
    session
        .handle_callback(T0, Callback::Url(&format!("http://localhost/signin-callback?code=c&state={state}")))
        .expect("callback");
    let mut exchange = None;
    loop {
        match session.poll() {
            Output::Http(req) => exchange = Some(req.id),
            Output::WaitUntil(_) | Output::Idle => break,
            _ => {}
        }
    }
    session.handle_response(T0, exchange.expect("exchange"), HttpResponse::new(200, TOKENS)).expect("answer");
    drain(&mut session, &mut counts);
    (session, counts)
}

fn one_call_cost() {
    let (mut session, mut counts) = signed_in();
    let ok = HttpResponse::new(200, Vec::new());
    let mut run = |n: usize| {
        let start = Instant::now();
        for _ in 0..n {
            session.call_api(T0 + 1, ApiRequest::get("Crm_Sales_Customers?$top=10")).expect("call");
            counts.api_requests.clear();
            drain(&mut session, &mut counts);
            let id = counts.api_requests[0];
            session.handle_response(T0 + 1, id, ok.clone()).expect("answer");
            drain(&mut session, &mut counts);
        }
        start.elapsed()
    };
    run(10_000); // warm-up
    let n = 200_000;
    let elapsed = run(n);
    black_box(&counts);
    println!(
        "one authorized call (call_api -> request -> handle_response -> CallCompleted): {:.2} µs ({} calls in {:.1} ms)",
        elapsed.as_secs_f64() * 1e6 / n as f64,
        n,
        elapsed.as_secs_f64() * 1e3
    );
}

fn thousand_calls_at_expiry() {
    let (mut session, mut counts) = signed_in();
    counts.token_requests = 0;
    counts.token_ids.clear();
    counts.api_emitted = 0;
    let expired = T0 + 3_600_000;
    let start = Instant::now();
    for _ in 0..1000 {
        session.call_api(expired, ApiRequest::get("Crm_Sales_Customers")).expect("call");
        drain(&mut session, &mut counts);
    }
    let token_requests = counts.token_requests;
    // The one refresh answers; every waiting call goes out and is answered.
    let refresh = counts.token_ids[0];
    session.handle_response(expired, refresh, HttpResponse::new(200, TOKENS.replace("at-1", "at-2"))).expect("refresh");
    drain(&mut session, &mut counts);
    for id in std::mem::take(&mut counts.api_requests) {
        session.handle_response(expired, id, HttpResponse::new(200, Vec::new())).expect("answer");
        drain(&mut session, &mut counts);
    }
    let elapsed = start.elapsed();
    println!(
        "1,000 calls issued at the instant the token expires: {} token request(s), {} API requests, {} completed, {} failures, {:.2} ms",
        counts.token_requests,
        counts.api_emitted,
        counts.completed,
        counts.failures,
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(token_requests, 1, "single flight");
}

fn main() {
    one_call_cost();
    thousand_calls_at_expiry();
}
