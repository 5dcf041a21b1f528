//! A session on a simulated timeline, against the Domain API's request limit as ERP.net
//! enforces it: every request spends time on the wire, the host may send an emitted request
//! a little late (a busy event loop, a store round trip), and the API checks the token when
//! a request arrives, then runs one request of a session at a time with five waiting; the
//! next one is answered 429. Nothing here reads a clock: time is the timeline's.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use erpnet_auth::{
    ApiRequest, CallId, Callback, Event, HttpRequest, HttpResponse, Output, RequestId, RequestKind, Session,
    SignInOptions,
};

use crate::{SeededRandom, SimIdp};

/// ERP.net runs one request of a session and queues five (`SessionConcurrentRequests`).
pub const ERPNET_SESSION_REQUESTS: usize = 1 + 5;

/// What the timeline counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimelineStats {
    /// API requests that arrived with a token the API refused (401).
    pub api_unauthorized: u32,
    /// API requests refused because the session's queue was full (429).
    pub api_throttled: u32,
    /// API requests that ran.
    pub api_ran: u32,
}

enum Happening {
    /// A request reaches the server.
    Arrive(HttpRequest),
    /// An answer reaches the host.
    Answer(RequestId, HttpResponse),
    /// The session's timer.
    Timer,
}

/// A session, the simulated provider and API, and the timeline's clock.
pub struct Timeline {
    /// The session under test.
    pub session: Session,
    /// The simulated provider and Domain API.
    pub idp: SimIdp,
    /// The timeline's clock, Unix ms.
    pub now: u64,
    /// One-way network latency, ms.
    pub latency_ms: u64,
    /// How long the API runs one request, ms.
    pub service_ms: u64,
    /// How long the token endpoint takes, ms.
    pub token_service_ms: u64,
    /// The host sends an emitted request up to this long after it was emitted.
    pub max_send_delay_ms: u64,
    /// Every call's one result.
    pub results: BTreeMap<CallId, Event>,
    /// Counters of the API side.
    pub stats: TimelineStats,
    rng: SeededRandom,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64)>>,
    happenings: BTreeMap<u64, Happening>,
    /// When each request the API accepted for the session ends (running, then waiting).
    in_session: VecDeque<u64>,
    timer_at: Option<u64>,
    open_calls: usize,
}

impl Timeline {
    /// A timeline at `now`; drains what the new session emitted.
    pub fn new(session: Session, idp: SimIdp, now: u64, seed: u64) -> Timeline {
        let mut timeline = Timeline {
            session,
            idp,
            now,
            latency_ms: 10,
            service_ms: 45,
            token_service_ms: 20,
            max_send_delay_ms: 0,
            results: BTreeMap::new(),
            stats: TimelineStats::default(),
            rng: SeededRandom::new(seed),
            seq: 0,
            events: BinaryHeap::new(),
            happenings: BTreeMap::new(),
            in_session: VecDeque::new(),
            timer_at: None,
            open_calls: 0,
        };
        timeline.drain();
        timeline
    }

    fn schedule(&mut self, at: u64, happening: Happening) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq)));
        self.happenings.insert(self.seq, happening);
    }

    /// Drains `poll()`: requests go on the wire, results are kept, the timer is set.
    /// Signature checks (host verification) are answered after the drain, and drained again.
    pub fn drain(&mut self) {
        loop {
            let checks = self.drain_once();
            if checks.is_empty() {
                return;
            }
            for check in checks {
                let valid = check.verify_in_rust();
                self.session.handle_signature(self.now, check.id, valid).expect("contract kept");
            }
        }
    }

    fn drain_once(&mut self) -> Vec<erpnet_auth::SignatureCheck> {
        let mut checks = Vec::new();
        loop {
            match self.session.poll() {
                Output::Http(request) => {
                    let delay =
                        if self.max_send_delay_ms == 0 { 0 } else { self.rng.below(self.max_send_delay_ms + 1) };
                    let arrival = self.now + delay + self.latency_ms;
                    self.schedule(arrival, Happening::Arrive(request));
                }
                Output::VerifySignature(check) => checks.push(*check),
                Output::Persist(_) => {}
                Output::Event(event) => {
                    if let Event::CallCompleted { call, .. } | Event::CallFailed { call, .. } = &event {
                        assert!(self.results.insert(*call, event.clone()).is_none(), "two results for {call:?}");
                        self.open_calls -= 1;
                    }
                }
                Output::WaitUntil(at) => {
                    if self.timer_at != Some(at) {
                        self.timer_at = Some(at);
                        self.schedule(at.max(self.now), Happening::Timer);
                    }
                    return checks;
                }
                Output::Idle => {
                    self.timer_at = None;
                    return checks;
                }
            }
        }
    }

    /// The server's side of a request that arrives now.
    fn arrive(&mut self, request: HttpRequest) {
        let now = self.now;
        if request.kind != RequestKind::Api {
            let answered = now + self.token_service_ms;
            let response = self.idp.handle(answered, &request);
            self.schedule(answered + self.latency_ms, Happening::Answer(request.id, response));
            return;
        }
        // The token is checked on arrival, before the request joins the session's queue.
        let verdict = self.idp.handle(now, &request);
        if verdict.status == 401 {
            self.stats.api_unauthorized += 1;
            self.schedule(now + self.latency_ms, Happening::Answer(request.id, verdict));
            return;
        }
        while self.in_session.front().is_some_and(|end| *end <= now) {
            self.in_session.pop_front();
        }
        if self.in_session.len() >= ERPNET_SESSION_REQUESTS {
            self.stats.api_throttled += 1;
            let busy =
                HttpResponse::new(429, r#"{"error":{"message":"Too many concurrent requests for this session."}}"#);
            self.schedule(now + self.latency_ms, Happening::Answer(request.id, busy));
            return;
        }
        let start = self.in_session.back().map_or(now, |end| (*end).max(now));
        let end = start + self.service_ms;
        self.in_session.push_back(end);
        self.stats.api_ran += 1;
        self.schedule(end + self.latency_ms, Happening::Answer(request.id, verdict));
    }

    /// Runs the timeline to its next happening; false when nothing is left before `until`.
    fn step(&mut self, until: u64) -> bool {
        let Some(Reverse((at, seq))) = self.events.peek().copied() else { return false };
        if at > until {
            return false;
        }
        self.events.pop();
        let Some(happening) = self.happenings.remove(&seq) else { return true };
        self.now = self.now.max(at);
        match happening {
            Happening::Arrive(request) => self.arrive(request),
            Happening::Answer(id, response) => {
                self.session.handle_response(self.now, id, response).expect("contract kept");
                self.drain();
            }
            Happening::Timer => {
                if self.timer_at == Some(at) {
                    self.session.handle_timeout(self.now).expect("contract kept");
                    self.drain();
                }
            }
        }
        true
    }

    /// Runs until every call has its result (or `until`, whichever is first).
    pub fn run_calls(&mut self, until: u64) {
        while self.open_calls > 0 && self.step(until) {}
    }

    /// Runs until nothing is on the wire (timers due before `until` fire too).
    pub fn settle(&mut self, until: u64) {
        while self.step(until) {}
        self.now = self.now.max(until);
    }

    /// Makes a call now; its result arrives as the timeline runs.
    pub fn call(&mut self, request: ApiRequest) -> CallId {
        let call = self.session.call_api(self.now, request).expect("the call is accepted");
        self.open_calls += 1;
        self.drain();
        call
    }

    /// The whole browser sign-in, then the code exchange on the timeline.
    pub fn sign_in(&mut self) {
        let url = self.session.sign_in(self.now, SignInOptions::new()).expect("sign-in begins");
        self.drain();
        let back = self.idp.authorize_at(self.now, &url).expect("the user signs in");
        self.session.handle_callback(self.now, Callback::Url(&back)).expect("the callback is accepted");
        self.drain();
        while !self.session.is_signed_in() && self.step(u64::MAX) {}
    }
}
