//! Drives a [`Session`] against a [`SimIdp`] on a fake clock, exactly as a host would:
//! every command is followed by a full drain of `poll()`.

use std::collections::{BTreeMap, VecDeque};

use erpnet_auth::{
    ApiRequest, CallId, Callback, Event, HttpRequest, HttpResponse, Output, RequestId, Session, SignInOptions,
    SignatureCheck, Snapshot,
};

use crate::idp::SimIdp;

/// One line of what happened, for transcripts.
#[derive(Debug, Clone)]
pub enum Entry {
    /// The browser visited a URL.
    Browser(String),
    /// The session emitted a request.
    Request(HttpRequest),
    /// The host handed back an answer.
    Response(RequestId, HttpResponse),
    /// The session asked to persist.
    Persist(Box<Snapshot>),
    /// An event.
    Event(Event),
}

/// A session, a simulated server and a fake clock.
pub struct SimDriver {
    /// The session under test.
    pub session: Session,
    /// The simulated server.
    pub idp: SimIdp,
    /// The fake clock, Unix ms.
    pub now: u64,
    /// Everything, in order.
    pub log: Vec<Entry>,
    /// The latest persisted snapshot.
    pub stored: Option<Snapshot>,
    /// The latest `WaitUntil`.
    pub wait_until: Option<u64>,
    /// Requests emitted and not yet answered.
    pub outbox: VecDeque<HttpRequest>,
    /// Results per call.
    pub results: BTreeMap<CallId, Event>,
}

impl SimDriver {
    /// A driver; drains what the new session emitted (e.g. discovery).
    pub fn new(session: Session, idp: SimIdp, now: u64) -> Self {
        let mut driver = SimDriver {
            session,
            idp,
            now,
            log: Vec::new(),
            stored: None,
            wait_until: None,
            outbox: VecDeque::new(),
            results: BTreeMap::new(),
        };
        driver.drain();
        driver
    }

    /// Drains `poll()` into the log and the outbox. Signature checks (host verification)
    /// are answered at once, after the drain, with the crate's own verifier.
    pub fn drain(&mut self) {
        loop {
            let checks = self.drain_once();
            if checks.is_empty() {
                return;
            }
            for check in checks {
                self.session.handle_signature(self.now, check.id, check.verify_in_rust()).expect("contract kept");
            }
        }
    }

    fn drain_once(&mut self) -> Vec<SignatureCheck> {
        let mut checks = Vec::new();
        loop {
            match self.session.poll() {
                Output::VerifySignature(check) => checks.push(*check),
                Output::Http(req) => {
                    self.log.push(Entry::Request(req.clone()));
                    self.outbox.push_back(req);
                }
                Output::Persist(snapshot) => {
                    self.log.push(Entry::Persist(snapshot.clone()));
                    self.stored = Some(*snapshot);
                }
                Output::Event(event) => {
                    if let Event::CallCompleted { call, .. } | Event::CallFailed { call, .. } = &event {
                        assert!(self.results.insert(*call, event.clone()).is_none(), "two results for {call:?}");
                    }
                    self.log.push(Entry::Event(event));
                }
                Output::WaitUntil(at) => {
                    self.wait_until = Some(at);
                    return checks;
                }
                Output::Idle => {
                    self.wait_until = None;
                    return checks;
                }
            }
        }
    }

    /// Answers the oldest outstanding request from the server.
    pub fn deliver_one(&mut self) -> bool {
        let Some(req) = self.outbox.pop_front() else { return false };
        let response = self.idp.handle(self.now, &req);
        self.log.push(Entry::Response(req.id, response.clone()));
        self.session.handle_response(self.now, req.id, response).expect("contract kept");
        self.drain();
        true
    }

    /// Answers requests until none is outstanding.
    pub fn deliver_all(&mut self) {
        while self.deliver_one() {}
    }

    /// The whole browser sign-in: authorization URL, user login at the server, callback,
    /// code exchange.
    pub fn sign_in(&mut self) -> Result<(), String> {
        self.deliver_all();
        let url = self.session.sign_in(self.now, SignInOptions::new()).map_err(|e| e.to_string())?;
        self.drain();
        self.log.push(Entry::Browser(url.clone()));
        let back = self.idp.authorize_at(self.now, &url)?;
        self.log.push(Entry::Browser(back.clone()));
        let callback = if back.contains("://") { Callback::Url(&back) } else { Callback::FormPost(&back) };
        self.session.handle_callback(self.now, callback).map_err(|e| e.to_string())?;
        self.drain();
        self.deliver_all();
        Ok(())
    }

    /// Makes an API call and answers everything it leads to.
    pub fn call(&mut self, request: ApiRequest) -> Result<CallId, String> {
        let call = self.session.call_api(self.now, request).map_err(|e| e.to_string())?;
        self.drain();
        self.deliver_all();
        Ok(call)
    }

    /// Moves the clock forward and fires the timer if it is due.
    pub fn advance_to(&mut self, now: u64) {
        self.now = self.now.max(now);
        if self.wait_until.is_some_and(|at| at <= self.now) {
            self.session.handle_timeout(self.now).expect("contract kept");
            self.drain();
        }
    }

    /// The events logged so far.
    pub fn events(&self) -> Vec<&Event> {
        self.log.iter().filter_map(|e| if let Entry::Event(ev) = e { Some(ev) } else { None }).collect()
    }
}

/// One compact line per log entry, for transcript assertions.
pub fn summarize(entry: &Entry) -> String {
    fn field(body: &str, name: &str) -> Option<String> {
        url::form_urlencoded::parse(body.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
    match entry {
        Entry::Browser(url) => {
            let u = url::Url::parse(url).ok();
            format!("browser {}", u.map_or("form_post".to_owned(), |u| u.path().to_owned()))
        }
        Entry::Request(req) => {
            let u = url::Url::parse(&req.url).ok();
            let path = u.as_ref().map_or(String::new(), |u| u.path().to_owned());
            let detail = match req.body_text().and_then(|b| field(b, "grant_type")) {
                Some(grant) => format!(" {grant}"),
                None => req
                    .header("authorization")
                    .map_or(String::new(), |a| format!(" {}", a.replacen("Bearer ", "bearer=", 1))),
            };
            format!("request #{} {} {}{}", req.id.0, req.method.as_str(), path, detail)
        }
        Entry::Response(id, resp) => format!("response #{} {}", id.0, resp.status),
        Entry::Persist(s) => format!(
            "persist tokens={}",
            s.tokens().map_or("none".to_owned(), |t| format!(
                "{}+{}",
                t.access_token().secret(),
                t.refresh_token().map_or("no-refresh", |r| r.secret())
            ))
        ),
        Entry::Event(e) => {
            let text = format!("{e:?}");
            format!("event {}", text.split([' ', '{', '(']).next().unwrap_or_default())
        }
    }
}
