//! A blocking native driver for `erpnet-auth` over real HTTP (ureq), for console programs.
//!
//! It holds no protocol logic: it drains [`Session::poll`], sends each emitted request
//! (never following redirects), feeds the answers back, sleeps until the `WaitUntil` time
//! when asked, and persists snapshots through a callback.

pub mod provider_login;
pub mod test_provider;
pub mod transcript;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erpnet_auth::{
    ApiRequest, CallFailure, CallId, Event, HttpRequest, HttpResponse, Output, Session, Snapshot, TransportError,
};

/// Wall-clock Unix milliseconds: the `now` every command takes.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One exchange as it happened, for printing.
#[derive(Debug, Clone)]
pub enum Exchange {
    /// A request the session emitted and the driver sent.
    Request(HttpRequest),
    /// Its answer.
    Response(HttpResponse),
    /// The request got no answer.
    Failed(TransportError),
    /// An event.
    Event(Event),
}

/// An HTTP client that sends requests exactly as given, with redirects off.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends one request with `agent`; every status is an answer, only I/O failures are errors.
pub fn send(agent: &ureq::Agent, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
    let mut builder = ureq::http::Request::builder().method(request.method.as_str()).uri(&request.url);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let http_request = builder.body(request.body.clone().unwrap_or_default()).map_err(|_| TransportError::Other)?;
    let mut response = agent.run(http_request).map_err(|e| match e {
        ureq::Error::Timeout(_) => TransportError::Timeout,
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => TransportError::Connect,
        _ => TransportError::Other,
    })?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(4 * 1024 * 1024)
        .read_to_vec()
        .map_err(|_| TransportError::Interrupted)?;
    Ok(HttpResponse { status, headers, body })
}

/// Stores a snapshot the session asked to persist.
pub type PersistFn = Box<dyn FnMut(&Snapshot)>;

/// A session driven over real HTTP, one request at a time.
pub struct NativeDriver {
    /// The session.
    pub session: Session,
    agent: ureq::Agent,
    outbox: VecDeque<HttpRequest>,
    /// Everything that happened, in order.
    pub log: Vec<Exchange>,
    /// The latest snapshot the session asked to persist.
    pub stored: Option<Snapshot>,
    results: BTreeMap<CallId, Event>,
    wait_until: Option<u64>,
    on_persist: Option<PersistFn>,
}

/// Why [`NativeDriver::call`] got no response.
#[derive(Debug)]
pub enum CallError {
    /// The session refused the call (foreign origin, not signed in, …).
    Refused(erpnet_auth::CallError),
    /// The call ended without an answer.
    Failed(CallFailure),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(e) => write!(f, "{e}"),
            CallError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl NativeDriver {
    /// Drives `session`, sending whatever it emitted already (e.g. discovery).
    pub fn new(session: Session) -> Self {
        let mut driver = NativeDriver {
            session,
            agent: http_agent(),
            outbox: VecDeque::new(),
            log: Vec::new(),
            stored: None,
            results: BTreeMap::new(),
            wait_until: None,
            on_persist: None,
        };
        driver.run();
        driver
    }

    /// Calls `persist` with every snapshot the session asks to store.
    pub fn on_persist(&mut self, persist: impl FnMut(&Snapshot) + 'static) {
        self.on_persist = Some(Box::new(persist));
    }

    /// Drains `poll()` until it says wait or idle.
    pub fn drain(&mut self) {
        loop {
            match self.session.poll() {
                Output::Http(request) => self.outbox.push_back(request),
                Output::Persist(snapshot) => {
                    if let Some(persist) = &mut self.on_persist {
                        persist(&snapshot);
                    }
                    self.stored = Some(*snapshot);
                }
                Output::Event(event) => {
                    if let Event::CallCompleted { call, .. } | Event::CallFailed { call, .. } = &event {
                        self.results.insert(*call, event.clone());
                    }
                    self.log.push(Exchange::Event(event));
                }
                Output::WaitUntil(at) => {
                    self.wait_until = Some(at);
                    return;
                }
                _ => {
                    self.wait_until = None;
                    return;
                }
            }
        }
    }

    /// Drains, then sends every emitted request and feeds its answer back, until nothing is
    /// outstanding.
    pub fn run(&mut self) {
        self.drain();
        while let Some(request) = self.outbox.pop_front() {
            if !self.session.is_request_wanted(request.id) {
                let _ = self.session.handle_transport_error(now_ms(), request.id, TransportError::Other);
                self.drain();
                continue;
            }
            self.log.push(Exchange::Request(request.clone()));
            let answer = send(&self.agent, &request);
            let fed = match answer {
                Ok(response) => {
                    self.log.push(Exchange::Response(response.clone()));
                    self.session.handle_response(now_ms(), request.id, response)
                }
                Err(error) => {
                    self.log.push(Exchange::Failed(error));
                    self.session.handle_transport_error(now_ms(), request.id, error)
                }
            };
            // The driver drains after every input, so the contract cannot be broken here.
            debug_assert!(fed.is_ok(), "{fed:?}");
            self.drain();
        }
    }

    /// Calls the API and blocks until its result.
    pub fn call(&mut self, request: ApiRequest) -> Result<HttpResponse, CallError> {
        let call = self.session.call_api(now_ms(), request).map_err(CallError::Refused)?;
        self.run();
        loop {
            match self.results.remove(&call) {
                Some(Event::CallCompleted { response, .. }) => return Ok(response),
                Some(Event::CallFailed { error, .. }) => return Err(CallError::Failed(error)),
                _ => {}
            }
            // A call waits only for a renewal retry: sleep until the session's next time.
            if !self.sleep_until_due(None) {
                return Err(CallError::Failed(CallFailure::Cancelled));
            }
        }
    }

    /// When the session next wants to be woken, Unix ms.
    pub fn wait_until(&self) -> Option<u64> {
        self.wait_until
    }

    /// Sleeps until the session's `WaitUntil` time (at most until `limit`), then hands it
    /// the time and runs what follows. Returns false when there was nothing to wait for.
    pub fn sleep_until_due(&mut self, limit: Option<u64>) -> bool {
        let Some(at) = self.wait_until else { return false };
        let at = limit.map_or(at, |l| at.min(l));
        let now = now_ms();
        if at > now {
            std::thread::sleep(Duration::from_millis(at - now));
        }
        let _ = self.session.handle_timeout(now_ms());
        self.run();
        true
    }
}
