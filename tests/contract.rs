//! The loop contract as a property: over random sequences of commands and inputs (valid,
//! early, repeated, unknown, hostile), every `Err` leaves the session exactly as it was —
//! the same durable state, nothing queued: `poll()` answers `WaitUntil` or `Idle` at once —
//! and a command issued before draining is refused without touching anything either.

mod common;

use common::*;
use erpnet_auth::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    SignIn,
    /// A callback: 0 the real one, 1 a forged state, 2 the provider's error, 3 junk.
    Callback(u8),
    Call {
        foreign: bool,
        with_authorization: bool,
    },
    UserInfo,
    Cancel(u64),
    /// Answer the n-th outstanding request: 0 success, 1 OAuth error, 2 503, 3 401, 4 junk.
    Answer {
        index: usize,
        how: u8,
    },
    Transport {
        index: usize,
    },
    AnswerUnknown(u64),
    Timeout(u64),
    SignOut,
    AdoptOwnSnapshot,
    AdoptForeignSnapshot,
    Discover,
    /// The next command without draining first.
    Undrained,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::SignIn),
        3 => (0u8..4).prop_map(Step::Callback),
        4 => (any::<bool>(), prop::bool::weighted(0.1)).prop_map(|(f, a)| Step::Call { foreign: f && a, with_authorization: a && !f }),
        1 => Just(Step::UserInfo),
        1 => (0u64..6).prop_map(Step::Cancel),
        6 => (0usize..4, 0u8..5).prop_map(|(index, how)| Step::Answer { index, how }),
        1 => (0usize..4).prop_map(|index| Step::Transport { index }),
        1 => (0u64..40).prop_map(Step::AnswerUnknown),
        3 => (0u64..4_000_000).prop_map(Step::Timeout),
        1 => Just(Step::SignOut),
        1 => Just(Step::AdoptOwnSnapshot),
        1 => Just(Step::AdoptForeignSnapshot),
        1 => Just(Step::Discover),
        1 => Just(Step::Undrained),
    ]
}

struct Host {
    session: Session,
    outbox: Vec<HttpRequest>,
    now: u64,
    last_url: Option<String>,
}

impl Host {
    fn drain(&mut self) {
        let drained = drain(&mut self.session);
        self.outbox.extend(drained.requests);
    }

    fn answer(&self, request: &HttpRequest, how: u8) -> HttpResponse {
        match (request.kind, how) {
            (_, 2) => HttpResponse::new(503, ""),
            (_, 4) => HttpResponse::new(200, "<html>"),
            (RequestKind::Token, 1) => HttpResponse::new(400, r#"{"error":"invalid_grant"}"#),
            (RequestKind::Token, _) => HttpResponse::new(
                200,
                r#"{"access_token":"at","token_type":"Bearer","expires_in":3600,"refresh_token":"rt","scope":"offline_access read"}"#,
            ),
            (RequestKind::Api | RequestKind::UserInfo, 3) => HttpResponse::new(401, ""),
            (RequestKind::UserInfo, _) => HttpResponse::new(200, r#"{"sub":"admin"}"#),
            _ => HttpResponse::new(200, "{}"),
        }
    }

    /// Runs one step; returns whether it was refused with `Err`.
    fn run(&mut self, step: &Step) -> bool {
        self.now += 1;
        let now = self.now;
        let s = &mut self.session;
        match step {
            Step::SignIn => match s.sign_in(now, SignInOptions::new()) {
                Ok(url) => {
                    self.last_url = Some(url);
                    false
                }
                Err(_) => true,
            },
            Step::Callback(kind) => {
                let state = self
                    .last_url
                    .as_deref()
                    .and_then(|u| u.split("state=").nth(1))
                    .and_then(|s| s.split('&').next())
                    .unwrap_or("none")
                    .to_owned();
                let url = match kind {
                    0 => format!("{REDIRECT}?code=c&state={state}"),
                    1 => format!("{REDIRECT}?code=c&state=forged"),
                    2 => format!("{REDIRECT}?error=access_denied&state={state}"),
                    _ => "::junk::".to_owned(),
                };
                s.handle_callback(now, Callback::Url(&url)).is_err()
            }
            Step::Call { foreign, with_authorization } => {
                let mut request =
                    ApiRequest::get(if *foreign { "https://evil.example/x" } else { "Crm_Sales_Customers" });
                if *with_authorization {
                    request = request.with_header("Authorization", "Bearer mine");
                }
                s.call_api(now, request).is_err()
            }
            Step::UserInfo => s.fetch_user_info(now).is_err(),
            Step::Cancel(n) => s.cancel_call(now, CallId(*n)).is_err(),
            Step::Answer { index, how } => {
                if self.outbox.is_empty() {
                    return s.handle_timeout(now).is_err();
                }
                let request = self.outbox.remove(index % self.outbox.len());
                let response = self.answer(&request, *how);
                self.session.handle_response(now, request.id, response).is_err()
            }
            Step::Transport { index } => {
                if self.outbox.is_empty() {
                    return s.handle_timeout(now).is_err();
                }
                let request = self.outbox.remove(index % self.outbox.len());
                self.session.handle_transport_error(now, request.id, TransportError::Connect).is_err()
            }
            Step::AnswerUnknown(id) => s.handle_response(now, RequestId(*id), HttpResponse::new(200, "{}")).is_err(),
            Step::Timeout(advance) => {
                self.now += advance;
                s.handle_timeout(self.now).is_err()
            }
            Step::SignOut => s.sign_out(now, Some("http://localhost/")).is_err(),
            Step::AdoptOwnSnapshot => {
                let snapshot = s.snapshot();
                s.handle_snapshot(now, snapshot).is_err()
            }
            Step::AdoptForeignSnapshot => {
                let mut other = Session::with_random(
                    Config::erpnet(ROOT)
                        .client_id("other.app")
                        .client_secret("x")
                        .redirect_uri(REDIRECT)
                        .build()
                        .unwrap(),
                    CountingRandom::default(),
                );
                drain(&mut other);
                s.handle_snapshot(now, other.snapshot()).is_err()
            }
            Step::Discover => s.discover(now).is_err(),
            Step::Undrained => false,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn an_err_changes_nothing_and_queues_nothing(steps in prop::collection::vec(step(), 1..40)) {
        let config = seed_builder().scope("offline_access read").build().unwrap();
        let mut host = Host { session: Session::with_random(config, CountingRandom::default()), outbox: Vec::new(), now: T0, last_url: None };
        host.drain();
        let mut undrained = false;
        for step in &steps {
            if let Step::Undrained = step {
                // Leave the previous outputs in place and try a command: refused, nothing moves.
                if host.session.call_api(host.now, ApiRequest::get("Crm_Sales_Customers")).is_ok() {
                    undrained = true;
                    let before = host.session.snapshot().to_json();
                    prop_assert_eq!(host.session.handle_timeout(host.now), Err(UsageError::NotDrained));
                    prop_assert_eq!(host.session.sign_in(host.now, SignInOptions::new()).map(|_| ()), Err(UsageError::NotDrained));
                    prop_assert_eq!(host.session.snapshot().to_json(), before);
                    host.drain();
                }
                continue;
            }
            let before = host.session.snapshot().to_json();
            let refused = host.run(step);
            if refused {
                prop_assert_eq!(host.session.snapshot().to_json(), before, "{:?} changed the state", step);
                let first = host.session.poll();
                prop_assert!(matches!(first, Output::WaitUntil(_) | Output::Idle), "{:?} queued {:?}", step, first);
            } else {
                host.drain();
            }
        }
        let _ = undrained;
    }
}
