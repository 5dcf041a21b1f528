//! Prints what one authorized call costs inside the machine, and what happens when 1,000
//! calls arrive at the instant the token expires. Run with `make bench`.

use std::hint::black_box;
use std::time::Instant;

use erpnet_auth::erpnet::ERPNET_DEFAULT_API_CONCURRENCY;
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
    signed_in_with(Some(ERPNET_DEFAULT_API_CONCURRENCY))
}

/// Signed in, with at most `limit` API requests in flight.
fn signed_in_with(limit: Option<u32>) -> (Session, Counts) {
    let config = Config::erpnet("https://demodb.my.erp.net")
        .client_id("my.trusted.app/first")
        .client_secret("secret")
        .redirect_uri("http://localhost/signin-callback")
        .discovery(false)
        // Plain OAuth: this measures the renewal machine, not ID token checks.
        .scope("offline_access read")
        .api_concurrency(limit)
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
    // A few at a time (the ERP.net preset's limit): each answer lets the next one out.
    while !counts.api_requests.is_empty() {
        let id = counts.api_requests.remove(0);
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

/// Simulated time for the ERP.net session limit: one-way latency and the server's time per
/// request.
const ONE_WAY_MS: u64 = 10;
const SERVICE_MS: u64 = 20;
const SERVER_QUEUE: usize = 5;

/// What the simulated ERP.net session saw and what the callers got.
struct LimitRun {
    total_ms: u64,
    refused_by_server: usize,
    refused_to_callers: usize,
    completed: usize,
    succeeded: usize,
    max_in_flight: usize,
}

/// 1,000 calls at the instant the token expires against a session that runs one request at
/// a time, queues five and answers 429 beyond: a discrete-event simulation on a fake clock.
fn limited_session(limit: Option<u32>) -> LimitRun {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};

    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum At {
        /// The request reaches the server.
        Server(u64),
        /// The server finished the running request.
        Done,
        /// An answer reaches the client.
        Client(u64, u16),
        /// The token endpoint's answer reaches the client.
        Tokens(u64),
    }
    let (mut session, _) = signed_in_with(limit);
    let mut pending = Vec::new();
    let out = |session: &mut Session, pending: &mut Vec<(RequestId, RequestKind)>, run: &mut LimitRun| -> Option<u64> {
        loop {
            match session.poll() {
                Output::Http(req) => pending.push((req.id, req.kind)),
                Output::Event(Event::CallCompleted { response, .. }) => {
                    run.completed += 1;
                    if response.status == 429 {
                        run.refused_to_callers += 1;
                    } else {
                        run.succeeded += 1;
                    }
                }
                Output::Event(Event::CallFailed { .. }) => run.completed += 1,
                Output::WaitUntil(at) => return Some(at),
                Output::Idle => return None,
                _ => {}
            }
        }
    };
    let mut run = LimitRun {
        total_ms: 0,
        refused_by_server: 0,
        refused_to_callers: 0,
        completed: 0,
        succeeded: 0,
        max_in_flight: 0,
    };

    let start = T0 + 3_600_000;
    let mut now = start;
    let mut events: BinaryHeap<Reverse<(u64, u64, At)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut schedule = |events: &mut BinaryHeap<Reverse<(u64, u64, At)>>, at: u64, what: At| {
        seq += 1;
        events.push(Reverse((at, seq, what)));
    };
    let (mut running, mut queue, mut in_flight): (Option<u64>, VecDeque<u64>, usize) = (None, VecDeque::new(), 0);
    let mut wake = None;
    for _ in 0..1000 {
        session.call_api(now, ApiRequest::get("Crm_Sales_Customers")).expect("call");
        wake = out(&mut session, &mut pending, &mut run);
    }
    loop {
        for (id, kind) in pending.drain(..) {
            if kind == RequestKind::Token {
                schedule(&mut events, now + 2 * ONE_WAY_MS + 5, At::Tokens(id.0));
            } else {
                in_flight += 1;
                run.max_in_flight = run.max_in_flight.max(in_flight);
                schedule(&mut events, now + ONE_WAY_MS, At::Server(id.0));
            }
        }
        let next_event = events.peek().map(|Reverse((at, _, _))| *at);
        now = match (next_event, wake) {
            (Some(e), Some(w)) => e.min(w),
            (Some(e), None) => e,
            (None, Some(w)) => w,
            (None, None) => break,
        };
        if wake.is_some_and(|w| w <= now) && next_event.is_none_or(|e| e > now) {
            session.handle_timeout(now).expect("timeout");
            wake = out(&mut session, &mut pending, &mut run);
            continue;
        }
        let Some(Reverse((_, _, what))) = events.pop() else { break };
        match what {
            At::Server(id) if running.is_none() => {
                running = Some(id);
                schedule(&mut events, now + SERVICE_MS, At::Done);
            }
            At::Server(id) if queue.len() < SERVER_QUEUE => queue.push_back(id),
            At::Server(id) => {
                run.refused_by_server += 1;
                schedule(&mut events, now + ONE_WAY_MS, At::Client(id, 429));
            }
            At::Done => {
                if let Some(id) = running.take() {
                    schedule(&mut events, now + ONE_WAY_MS, At::Client(id, 200));
                }
                if let Some(id) = queue.pop_front() {
                    running = Some(id);
                    schedule(&mut events, now + SERVICE_MS, At::Done);
                }
            }
            At::Tokens(id) => {
                let tokens = TOKENS.replace("at-1", "at-2").replace("rt-1", "rt-2");
                session.handle_response(now, RequestId(id), HttpResponse::new(200, tokens)).expect("refresh");
                wake = out(&mut session, &mut pending, &mut run);
            }
            At::Client(id, status) => {
                in_flight -= 1;
                session.handle_response(now, RequestId(id), HttpResponse::new(status, Vec::new())).expect("answer");
                wake = out(&mut session, &mut pending, &mut run);
            }
        }
        if run.completed == 1000 {
            break;
        }
    }
    run.total_ms = now - start;
    run
}

fn thousand_calls_against_the_session_limit() {
    // The server runs one request at a time: after the refresh (one round trip and 5 ms),
    // 1,000 × its service time, plus one round trip for the last answer.
    let ideal = 2 * ONE_WAY_MS + 5 + 1000 * SERVICE_MS + 2 * ONE_WAY_MS;
    for (label, limit) in
        [("ERP.net preset, 3 in flight", Some(ERPNET_DEFAULT_API_CONCURRENCY)), ("no limit, 429s retried", None)]
    {
        let run = limited_session(limit);
        println!(
            "1,000 calls at expiry against an ERP.net session (1 running, {SERVER_QUEUE} queued, 429 beyond; {SERVICE_MS} ms each, {ONE_WAY_MS} ms one way), {label}: {} answered ({} with 200), 429s sent by the server {}, seen by callers {}, at most {} in flight, {:.1} s (ideal {:.1} s, {:.2}×)",
            run.completed,
            run.succeeded,
            run.refused_by_server,
            run.refused_to_callers,
            run.max_in_flight,
            run.total_ms as f64 / 1000.0,
            ideal as f64 / 1000.0,
            run.total_ms as f64 / ideal as f64
        );
    }
}

fn main() {
    one_call_cost();
    thousand_calls_at_expiry();
    thousand_calls_against_the_session_limit();
}
