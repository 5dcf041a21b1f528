//! `erpnet-auth` on threads: a blocking driver over real HTTP ([ureq]), for console
//! programs and services that prefer threads to async (for tokio, see `erpnet-auth-tokio`).
//!
//! [`Driver`] holds no protocol logic: it drains [`Session::poll`], sends each emitted
//! request (never following redirects, each bounded by its [`HttpRequest::deadline`]),
//! feeds the answers back, sleeps until the `WaitUntil` time when asked, and hands snapshots
//! to a persistence callback. It keeps nothing that grows: what happened goes to an
//! optional observer, and a call's result is kept only until [`Driver::call`] takes it. A
//! driver is `Send`: it can move to the thread that serves its user.
//!
//! ```no_run
//! use erpnet_auth::{ApiRequest, Callback, Config, Session, SignInOptions};
//! use erpnet_auth_blocking::{now_ms, Driver};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::erpnet("https://demodb.my.erp.net")
//!     .client_id("my.trusted.app/first")
//!     .client_secret("my-plain-app-secret")
//!     .redirect_uri("http://localhost:8765/signin-callback")
//!     .build()?;
//! let mut driver = Driver::new(Session::new(config));
//! driver.run()?; // discovery
//! let url = driver.session.sign_in(now_ms(), SignInOptions::new())?;
//! driver.run()?;
//! println!("sign in at {url}");
//! # let redirect = String::new();
//! // … the browser comes back to the redirect URI with `redirect`:
//! driver.session.handle_callback(now_ms(), Callback::Url(&redirect))?;
//! driver.run()?;
//! let customers = driver.call(ApiRequest::get("Crm_Sales_Customers?$top=10"))?;
//! println!("{}", String::from_utf8_lossy(&customers.body));
//! # Ok(()) }
//! ```
//!
//! Several threads or processes can serve one user's session through a [`store`]:
//! [`Driver::share_in`] (see the store module for the protocol).
//!
//! # Cargo features
//!
//! None is on by default: the driver, its HTTP client and the in-memory store are all most
//! programs need.
//!
//! * `redis`: `store::RedisStore`, sessions in Redis in the npm package's `RedisStorage`
//!   layout (a Node and a Rust process can share a session), and the `farm_worker` program.
//! * `console`: the `console` program, which signs a user in at a real ERP.net instance
//!   with their own browser and catches the redirect on a loopback port.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod store;

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erpnet_auth::shared_store::token_lock_name;
use erpnet_auth::{
    ApiRequest, CallFailure, CallId, Event, HttpRequest, HttpResponse, Output, RequestKind, Session, SignatureCheck,
    Snapshot, TransportError, UsageError,
};
use store::{Lease, SessionStore, StoreError};

/// Wall-clock Unix milliseconds: the `now` every command takes.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One thing that happened, for an observer (a printer, a log, a test).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Exchange {
    /// A request the session emitted and the driver sent.
    Request(HttpRequest),
    /// Its answer.
    Response(HttpResponse),
    /// The request got no answer.
    Failed(TransportError),
    /// An event.
    Event(Event),
    /// The shared store failed (the token request it guarded was not sent).
    Store(StoreError),
    /// A write lost its compare-and-swap: another process stored newer tokens, adopted.
    Conflict {
        /// The generation this session tried to write.
        generation: u64,
    },
}

/// An HTTP client that sends requests exactly as given, with redirects off. It has no
/// timeout of its own: [`send`] gives each request one.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder().max_redirects(0).http_status_as_error(false).build().into()
}

/// How long a request without a deadline (an API call, userinfo, profile, revocation) may
/// take, answer body included, unless [`Driver::set_call_timeout`] says otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

const MAX_API_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How long `request` may take from `now` (Unix ms): until its
/// [deadline](HttpRequest::deadline), where the session counts it as timed out (and a token
/// lock's lease is sized for it), else `otherwise`. `None`: the deadline has passed.
pub fn request_timeout(request: &HttpRequest, now: u64, otherwise: Duration) -> Option<Duration> {
    match request.deadline {
        Some(deadline) if deadline > now => Some(Duration::from_millis(deadline - now)),
        Some(_) => None,
        None => Some(otherwise),
    }
}

/// Sends one request with `agent` (one of [`http_agent`]'s), the answer's body included
/// within `timeout`; every status is an answer, only I/O failures are errors.
pub fn send(agent: &ureq::Agent, request: &HttpRequest, timeout: Duration) -> Result<HttpResponse, TransportError> {
    let mut builder = ureq::http::Request::builder().method(request.method.as_str()).uri(&request.url);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let http_request = builder.body(request.body.clone().unwrap_or_default()).map_err(|_| TransportError::Other)?;
    let http_request = agent.configure_request(http_request).timeout_global(Some(timeout)).build();
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
    // Past the session's own limit one more byte is enough for it to refuse the body; API
    // answers go to the caller, capped here at what this example is willing to buffer.
    let limit = request.kind.max_response_bytes().unwrap_or(MAX_API_BODY_BYTES);
    let mut body = Vec::new();
    response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .reader()
        .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => TransportError::Timeout,
            _ => TransportError::Interrupted,
        })?;
    if request.kind.max_response_bytes().is_none() && body.len() > MAX_API_BODY_BYTES {
        return Err(TransportError::Other);
    }
    Ok(HttpResponse { status, headers, body })
}

/// Why [`Driver::call`] got no response.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError {
    /// The session refused the call (foreign origin, not signed in, …); nothing was sent.
    Refused(erpnet_auth::error::CallError),
    /// The call ended without an answer.
    Failed(CallFailure),
    /// The driver broke the loop contract (a bug in the driver, not an outcome of the call).
    Usage(UsageError),
    /// The session has nothing in flight and nothing to wait for, yet the call has no
    /// result: impossible by the session's own invariant, reported rather than hidden.
    Stuck(CallId),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Refused(e) => write!(f, "{e}"),
            CallError::Failed(e) => write!(f, "{e}"),
            CallError::Usage(e) => write!(f, "driver bug: {e}"),
            CallError::Stuck(call) => write!(f, "call {call:?} has no result and nothing is pending"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<UsageError> for CallError {
    fn from(e: UsageError) -> Self {
        CallError::Usage(e)
    }
}

type Observer = Box<dyn FnMut(&Exchange) + Send>;
type Persist = Box<dyn FnMut(&Snapshot) + Send>;

/// A session store shared with other threads or processes, and this session's key in it.
struct Shared {
    store: Box<dyn SessionStore>,
    key: String,
    /// Held from a token request until its answer is checked and stored.
    lease: Option<Lease>,
    /// A write was refused: the stored snapshot is read and adopted after this drain.
    conflict: bool,
}

/// A session driven over real HTTP, one request at a time.
pub struct Driver {
    /// The session: call its commands directly, then [`run`](Self::run).
    pub session: Session,
    agent: ureq::Agent,
    call_timeout: Duration,
    outbox: VecDeque<HttpRequest>,
    checks: VecDeque<SignatureCheck>,
    /// Results of calls not yet taken by [`call`](Self::call).
    results: BTreeMap<CallId, Event>,
    wait_until: Option<u64>,
    observer: Option<Observer>,
    persist: Option<Persist>,
    shared: Option<Shared>,
}

impl Driver {
    /// Drives `session`. Attach the callbacks, then [`run`](Self::run) sends what the
    /// session emitted at its creation (discovery).
    pub fn new(session: Session) -> Self {
        Driver {
            session,
            agent: http_agent(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            outbox: VecDeque::new(),
            checks: VecDeque::new(),
            results: BTreeMap::new(),
            wait_until: None,
            observer: None,
            persist: None,
            shared: None,
        }
    }

    /// Keeps the session in `store` under `key`, shared with other threads or processes:
    /// loads what is stored now, writes every snapshot with compare-and-swap, and runs each
    /// token request under the store's lock (see [`store`]).
    pub fn share_in(&mut self, store: Box<dyn SessionStore>, key: &str) -> Result<(), StoreError> {
        self.shared = Some(Shared { store, key: key.to_owned(), lease: None, conflict: false });
        self.adopt_stored()
    }

    /// Hands the stored snapshot to the session (it ignores an older one).
    fn adopt_stored(&mut self) -> Result<(), StoreError> {
        let Some(shared) = &mut self.shared else { return Ok(()) };
        let stored = shared.store.load(&shared.key)?;
        if let Some(snapshot) = stored.and_then(|json| Snapshot::from_json(&json).ok()) {
            // Drained before every input; a snapshot of another client is ignored.
            self.drain();
            let _ = self.session.handle_snapshot(now_ms(), snapshot);
            self.drain();
        }
        Ok(())
    }

    fn release_lease(&mut self) {
        if let Some(shared) = &mut self.shared {
            if let Some(lease) = shared.lease.take() {
                // A failed release only leaves the lease to run out.
                let _ = shared.store.unlock(&token_lock_name(&shared.key), lease);
            }
        }
    }

    /// Takes the token lock for the lease the session asks for, and adopts the stored
    /// snapshot, before `request` goes out. `Ok(false)`: not to be sent (another process
    /// renewed meanwhile). `Err(LeaseTooShort)`: the lease held would not cover it.
    fn before_token_request(&mut self, request: &HttpRequest) -> Result<bool, StoreError> {
        let Some(shared) = &mut self.shared else { return Ok(true) };
        if shared.lease.is_none() {
            // No lease: the request is no longer to be sent.
            let Some(lease_ms) = self.session.token_lease_ms(request.id) else { return Ok(false) };
            let lease = shared.store.lock(&token_lock_name(&shared.key), Duration::from_millis(lease_ms))?;
            shared.lease = Some(lease);
        }
        self.adopt_stored()?;
        if !self.session.is_request_wanted(request.id) {
            return Ok(false);
        }
        let lease_end = self.shared.as_ref().and_then(|s| s.lease.as_ref()).map(|lease| lease.expires_at_ms);
        if !lease_end.is_some_and(|end| self.session.lease_covers(request.id, end)) {
            return Err(StoreError::LeaseTooShort);
        }
        Ok(true)
    }

    /// How long a request without a deadline (an API call, userinfo, profile, revocation)
    /// may take, answer body included; [`DEFAULT_CALL_TIMEOUT`] unless set.
    pub fn set_call_timeout(&mut self, timeout: Duration) {
        self.call_timeout = timeout;
    }

    fn timeout_without_deadline(&self, kind: RequestKind) -> Duration {
        match kind {
            // Emitted before the session's first input (the discovery a new session starts
            // with): it counts their timeout from that input on.
            RequestKind::Token | RequestKind::Discovery | RequestKind::Sites | RequestKind::Keys => {
                Duration::from_millis(self.session.config().timing().request_timeout_ms)
            }
            _ => self.call_timeout,
        }
    }

    /// Calls `persist` with every snapshot the session asks to store, before going on.
    pub fn on_persist(&mut self, persist: impl FnMut(&Snapshot) + Send + 'static) {
        self.persist = Some(Box::new(persist));
    }

    /// Calls `observer` with every request, answer and event, as they happen.
    pub fn on_exchange(&mut self, observer: impl FnMut(&Exchange) + Send + 'static) {
        self.observer = Some(Box::new(observer));
    }

    fn observe(&mut self, exchange: Exchange) {
        if let Some(observer) = &mut self.observer {
            observer(&exchange);
        }
    }

    /// Drains `poll()` until it says wait or idle. Call it after every command.
    pub fn drain(&mut self) {
        loop {
            match self.session.poll() {
                Output::Http(request) => self.outbox.push_back(request),
                Output::VerifySignature(check) => self.checks.push_back(*check),
                Output::Persist(snapshot) => {
                    if let Some(shared) = &mut self.shared {
                        match shared.store.compare_and_swap(&shared.key, &snapshot) {
                            Ok(true) => {}
                            Ok(false) => {
                                shared.conflict = true;
                                let generation = snapshot.generation();
                                self.observe(Exchange::Conflict { generation });
                            }
                            Err(error) => self.observe(Exchange::Store(error)),
                        }
                    }
                    if let Some(persist) = &mut self.persist {
                        persist(&snapshot);
                    }
                }
                Output::Event(event) => {
                    if let Event::CallCompleted { call, .. } | Event::CallFailed { call, .. } = &event {
                        self.results.insert(*call, event.clone());
                    }
                    self.observe(Exchange::Event(event));
                }
                Output::WaitUntil(at) => {
                    self.wait_until = Some(at);
                    break;
                }
                Output::Idle => {
                    self.wait_until = None;
                    break;
                }
            }
        }
        // A lost compare-and-swap: the winner's tokens are adopted (a lost race is no logout).
        if self.shared.as_mut().is_some_and(|s| std::mem::take(&mut s.conflict)) {
            if let Err(error) = self.adopt_stored() {
                self.observe(Exchange::Store(error));
            }
        }
    }

    /// Drains, then sends every emitted request and feeds its answer back, until nothing is
    /// outstanding.
    pub fn run(&mut self) -> Result<(), UsageError> {
        self.drain();
        loop {
            // Only when configured with `host_verifies_signatures(true)`: answered here with
            // the crate's own verifier, as a host with another crypto library would.
            if let Some(check) = self.checks.pop_front() {
                self.session.handle_signature(now_ms(), check.id, check.verify_in_rust())?;
                self.drain();
                continue;
            }
            // The token lock is held until the answer's ID token is checked and stored.
            if !self.session.is_checking_token_answer() {
                self.release_lease();
            }
            let Some(request) = self.outbox.pop_front() else { break };
            if request.kind == RequestKind::Token {
                match self.before_token_request(&request) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.release_lease();
                        self.session.handle_transport_error(now_ms(), request.id, TransportError::Other)?;
                        self.drain();
                        continue;
                    }
                    Err(error) => {
                        self.release_lease();
                        self.observe(Exchange::Store(error));
                        self.session.handle_transport_error(now_ms(), request.id, TransportError::Connect)?;
                        self.drain();
                        continue;
                    }
                }
            }
            if !self.session.is_request_wanted(request.id) {
                self.session.handle_transport_error(now_ms(), request.id, TransportError::Other)?;
                self.drain();
                continue;
            }
            // The session aborts the request at its deadline, and a token lock's lease is
            // sized for that deadline: the HTTP request must not outlive it.
            let Some(timeout) = request_timeout(&request, now_ms(), self.timeout_without_deadline(request.kind)) else {
                self.session.handle_transport_error(now_ms(), request.id, TransportError::Timeout)?;
                self.drain();
                continue;
            };
            self.observe(Exchange::Request(request.clone()));
            match send(&self.agent, &request, timeout) {
                Ok(response) => {
                    self.observe(Exchange::Response(response.clone()));
                    self.session.handle_response(now_ms(), request.id, response)?;
                }
                Err(error) => {
                    self.observe(Exchange::Failed(error));
                    self.session.handle_transport_error(now_ms(), request.id, error)?;
                }
            }
            self.drain();
        }
        self.release_lease();
        Ok(())
    }

    /// Calls the API and blocks until its result (sleeping through a renewal's backoff).
    pub fn call(&mut self, request: ApiRequest) -> Result<HttpResponse, CallError> {
        let call = self.session.call_api(now_ms(), request).map_err(CallError::Refused)?;
        self.run()?;
        loop {
            match self.results.remove(&call) {
                Some(Event::CallCompleted { response, .. }) => return Ok(response),
                Some(Event::CallFailed { error, .. }) => return Err(CallError::Failed(error)),
                _ => {}
            }
            // A call without a result waits for a timer (a renewal retry): sleep until then.
            if !self.sleep_until_due(None)? {
                return Err(CallError::Stuck(call));
            }
        }
    }

    /// When the session next wants to be woken, Unix ms.
    pub fn wait_until(&self) -> Option<u64> {
        self.wait_until
    }

    /// Sleeps until the session's `WaitUntil` time (at most until `limit`), then hands it
    /// the time and runs what follows. `Ok(false)` when there was nothing to wait for.
    pub fn sleep_until_due(&mut self, limit: Option<u64>) -> Result<bool, UsageError> {
        let Some(at) = self.wait_until else { return Ok(false) };
        let at = limit.map_or(at, |l| at.min(l));
        let now = now_ms();
        if at > now {
            std::thread::sleep(Duration::from_millis(at - now));
        }
        self.session.handle_timeout(now_ms())?;
        self.run()?;
        Ok(true)
    }
}
