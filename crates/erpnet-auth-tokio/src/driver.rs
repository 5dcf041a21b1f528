//! The background task that owns one core [`Session`] (an actor).
//!
//! Commands arrive on a channel with a oneshot reply; every HTTP request and store command
//! runs as a task of a [`JoinSet`] whose result comes back to this loop; the session's
//! `WaitUntil` is a tokio sleep re-armed after every drain. Every command, answer and timer
//! is followed by a full drain of `poll()`. No protocol decision is made here: the session
//! decides, this loop carries.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use erpnet_auth::{
    ApiRequest, CallFailure, CallId, Callback, Event, HttpRequest, HttpResponse, IdTokenClaims, Method, Output,
    RequestId, RequestKind, Session, SignInOptions, SignatureCheckId, Snapshot, TransportError,
};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, oneshot, Notify};
use tokio::task::JoinSet;

use crate::http::{instant_of, now_ms};
use crate::provider::SharedProvider;
use crate::store::{Lease, SessionStore, StoreError, Write};
use crate::{trace, Error};

/// A reply to one command.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What a snapshot hook receives: every snapshot the session asks to store.
pub(crate) type PersistHook = Arc<dyn Fn(&Snapshot) + Send + Sync>;

/// The events' broadcast: a slow reader skips, never blocks the driver.
const EVENTS_CAPACITY: usize = 64;

/// What a [`Client`](crate::Client) asks of its driver.
pub(crate) enum Command {
    SignIn {
        options: SignInOptions,
        reply: Reply<String>,
    },
    Callback {
        input: String,
        form_post: bool,
        reply: Reply<()>,
    },
    Call {
        ticket: u64,
        request: ApiRequest,
        reply: Reply<HttpResponse>,
    },
    UserInfo {
        ticket: u64,
        reply: Reply<Map<String, Value>>,
    },
    Profile {
        ticket: u64,
        reply: Reply<Map<String, Value>>,
    },
    /// The future of the call `ticket` was dropped.
    Cancel {
        ticket: u64,
    },
    SignOut {
        post_logout_redirect_uri: Option<String>,
        reply: Reply<Option<String>>,
    },
    IsSignedIn(oneshot::Sender<bool>),
    Claims(oneshot::Sender<Option<IdTokenClaims>>),
    Snapshot(Reply<Snapshot>),
    Close(oneshot::Sender<()>),
}

/// What the client handles and the driver share: the command queue and its wake-up, the
/// events channel (made at the first subscriber, so that a session nobody listens to holds
/// no event buffer), call tickets and the closed flag. A mutex-guarded queue and a `Notify`
/// rather than an mpsc channel: an idle session's channel would cost ~800 bytes.
pub(crate) struct Hub {
    queue: Mutex<Queue>,
    wake: Notify,
    events: Mutex<Option<broadcast::Sender<Event>>>,
    tickets: AtomicU64,
    closed: AtomicBool,
}

#[derive(Default)]
struct Queue {
    commands: VecDeque<Command>,
    /// False once the last client handle is gone.
    open: bool,
    /// True once the driver ended: nothing is queued any more.
    ended: bool,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub {
            queue: Mutex::new(Queue { commands: VecDeque::new(), open: true, ended: false }),
            wake: Notify::new(),
            events: Mutex::new(None),
            tickets: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `command` for the driver; `Err(Closed)` once it ended.
    pub(crate) fn send(&self, command: Command) -> Result<(), Error> {
        let mut queue = self.queue();
        if queue.ended {
            return Err(Error::Closed);
        }
        queue.commands.push_back(command);
        drop(queue);
        self.wake.notify_one();
        Ok(())
    }

    /// The last client handle is gone: the driver ends.
    pub(crate) fn hang_up(&self) {
        self.queue().open = false;
        self.wake.notify_one();
    }

    /// The next command, `Ok(None)` when there is none now, `Err(())` once every client
    /// handle is gone.
    fn next_command(&self) -> Result<Option<Command>, ()> {
        let mut queue = self.queue();
        match queue.commands.pop_front() {
            Some(command) => Ok(Some(command)),
            None if !queue.open => Err(()),
            None => {
                // An idle session keeps no command slots (each is a command's full size).
                queue.commands.shrink_to_fit();
                Ok(None)
            }
        }
    }

    /// A receiver of the events from now on; `None` once the driver ended.
    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Event>> {
        if self.is_closed() {
            return None;
        }
        let mut slot = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        Some(slot.get_or_insert_with(|| broadcast::channel(EVENTS_CAPACITY).0).subscribe())
    }

    fn publish(&self, event: &Event) {
        let slot = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = slot.as_ref().filter(|s| s.receiver_count() > 0) {
            // No receiver left is not an error: events are offered, not owed.
            let _ = sender.send(event.clone());
        }
    }

    /// The driver ended: later subscribers get nothing, current ones see the end, queued
    /// commands are dropped (their callers see `Closed`).
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.events.lock().unwrap_or_else(PoisonError::into_inner).take();
        let dropped = {
            let mut queue = self.queue();
            queue.ended = true;
            std::mem::take(&mut queue.commands)
        };
        drop(dropped);
    }
}

/// A shared session: the store, this session's key in it, and where the protocol stands.
pub(crate) struct SharedSession {
    store: Arc<dyn SessionStore>,
    key: String,
    lock_name: String,
    /// Held from a token request until its answer is checked and stored.
    lease: Option<Lease>,
    /// The token request between taking the lock and its answer.
    gating: Option<RequestId>,
    /// Snapshots to write, in order (one write at a time).
    writes: VecDeque<Box<Snapshot>>,
    /// A write or the re-read after a lost one is under way.
    writing: bool,
    /// Requests emitted while writes were pending: they go out once the state is stored.
    held: Vec<HttpRequest>,
}

impl SharedSession {
    pub(crate) fn new(store: Arc<dyn SessionStore>, key: String) -> SharedSession {
        let lock_name = format!("{key}:token");
        SharedSession {
            store,
            key,
            lock_name,
            lease: None,
            gating: None,
            writes: VecDeque::new(),
            writing: false,
            held: Vec::new(),
        }
    }

    fn writes_pending(&self) -> bool {
        self.writing || !self.writes.is_empty()
    }
}

/// A finished task of the driver.
enum Done {
    Answer {
        id: RequestId,
        kind: RequestKind,
        call: Option<CallId>,
        shared: bool,
        result: Result<HttpResponse, TransportError>,
    },
    /// The token lock (unless already held) and the stored snapshot, for a token request.
    Gate {
        request: HttpRequest,
        lease: Option<Result<Lease, StoreError>>,
        stored: Result<Option<String>, StoreError>,
    },
    Written {
        generation: u64,
        result: Result<bool, StoreError>,
    },
    Reread(Result<Option<String>, StoreError>),
    Unlocked(Result<(), StoreError>),
    /// The stored snapshot, read before a callback or a sign-out.
    Fresh(Box<Deferred>, Result<Option<String>, StoreError>),
}

/// An input to hand to the session once the current drain is over.
enum Input {
    Answer(RequestId, Result<HttpResponse, TransportError>),
    Signature(SignatureCheckId, bool),
}

/// A command that waits: for the provider's endpoints, or for the instance's sites.
enum Deferred {
    SignIn { options: SignInOptions, reply: Reply<String> },
    Callback { input: String, form_post: bool, reply: Reply<()> },
    SignOut { post_logout_redirect_uri: Option<String>, reply: Reply<Option<String>> },
    Profile { ticket: u64, reply: Reply<Map<String, Value>> },
}

impl Deferred {
    fn is_abandoned(&self) -> bool {
        match self {
            Deferred::SignIn { reply, .. } => reply.is_closed(),
            Deferred::Callback { reply, .. } => reply.is_closed(),
            Deferred::SignOut { reply, .. } => reply.is_closed(),
            Deferred::Profile { reply, .. } => reply.is_closed(),
        }
    }
}

/// A reply released once every pending snapshot write is done (a sign-in URL's pending
/// authorization, new tokens, a sign-out must be stored before the caller acts on them).
enum Settled {
    SignIn(Reply<String>, String),
    Callback(Reply<()>, Result<(), Error>),
    SignOut(Reply<Option<String>>, Option<String>),
}

impl Settled {
    fn send(self) {
        // A caller that went away no longer wants the answer.
        match self {
            Settled::SignIn(reply, url) => drop(reply.send(Ok(url))),
            Settled::Callback(reply, result) => drop(reply.send(result)),
            Settled::SignOut(reply, url) => drop(reply.send(Ok(url))),
        }
    }
}

enum CallReply {
    Api(Reply<HttpResponse>),
    Claims(Reply<Map<String, Value>>),
}

/// An open call and its caller.
struct Pending {
    ticket: u64,
    call: CallId,
    reply: CallReply,
    /// Requests sent for it so far, and the last answer's status (a replay's reason).
    sends: u32,
    last_status: u16,
}

pub(crate) struct Driver {
    session: Session,
    http: reqwest::Client,
    hub: Arc<Hub>,
    shared: Option<Box<SharedSession>>,
    provider: Option<SharedProvider>,
    on_persist: Option<PersistHook>,
    max_body_bytes: usize,
    tasks: JoinSet<Done>,
    /// The HTTP tasks in flight and their requests: a task that ends without an answer (a
    /// panic) still answers its request, so that no slot stays taken.
    in_flight: Vec<(tokio::task::Id, RequestId)>,
    outbox: Vec<HttpRequest>,
    inputs: VecDeque<Input>,
    wake_at: Option<u64>,
    calls: Vec<Pending>,
    deferred: Vec<Deferred>,
    settled: Vec<Settled>,
    /// Callbacks waiting for their code exchange's outcome.
    callbacks: Vec<Reply<()>>,
    /// Set by `DiscoveryFailed`, cleared when discovery is asked for again.
    discovery_failed: Option<erpnet_auth::DiscoveryError>,
    /// Token requests sent since the last outcome (the span's attempt).
    token_attempt: u32,
    /// The store's last failure since the last token answer: a call failing for want of
    /// renewal reports it.
    store_error: Option<StoreError>,
}

/// The parts a [`ClientBuilder`](crate::ClientBuilder) hands over.
pub(crate) struct Parts {
    pub session: Session,
    pub config: Arc<erpnet_auth::Config>,
    pub http: reqwest::Client,
    pub hub: Arc<Hub>,
    pub shared: Option<Box<SharedSession>>,
    pub provider: Option<SharedProvider>,
    pub on_persist: Option<PersistHook>,
    pub max_body_bytes: usize,
}

impl Driver {
    pub(crate) fn new(parts: Parts) -> (Box<Driver>, Arc<erpnet_auth::Config>) {
        let driver = Box::new(Driver {
            session: parts.session,
            http: parts.http,
            hub: parts.hub,
            shared: parts.shared,
            provider: parts.provider,
            on_persist: parts.on_persist,
            max_body_bytes: parts.max_body_bytes,
            tasks: JoinSet::new(),
            in_flight: Vec::new(),
            outbox: Vec::new(),
            inputs: VecDeque::new(),
            wake_at: None,
            calls: Vec::new(),
            deferred: Vec::new(),
            settled: Vec::new(),
            callbacks: Vec::new(),
            discovery_failed: None,
            token_attempt: 0,
            store_error: None,
        });
        (driver, parts.config)
    }

    /// The task: loads the shared session, then serves commands, answers and the timer
    /// until closed or until every client handle is gone.
    ///
    /// Boxed: the task's future then holds a pointer, not a second copy of the driver.
    pub(crate) async fn run(mut self: Box<Self>, config: Arc<erpnet_auth::Config>) {
        self.load_stored(config).await;
        self.pump();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed_for = None;
        let hub = Arc::clone(&self.hub);
        loop {
            // Commands first, each followed by its drain; a wake-up counted before the queue
            // is read is never lost.
            let woken = hub.wake.notified();
            match hub.next_command() {
                Ok(Some(command)) => {
                    if !self.command(command) {
                        break;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(()) => break,
            }
            if self.wake_at != armed_for {
                armed_for = self.wake_at;
                if let Some(at) = armed_for {
                    sleep.as_mut().reset(instant_of(at));
                }
            }
            tokio::select! {
                biased;
                () = woken => {}
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.joined(joined),
                () = &mut sleep, if armed_for.is_some() => {
                    armed_for = None;
                    if let Err(e) = self.session.handle_timeout(now_ms()) {
                        trace::driver_bug(e.code());
                    }
                    self.pump();
                }
            }
        }
        self.shut_down();
    }

    /// A shared session starts from what the store holds (one read), so that a session
    /// stored with its provider's metadata does not discover again.
    async fn load_stored(&mut self, config: Arc<erpnet_auth::Config>) {
        let Some(shared) = &self.shared else { return };
        let stored = match shared.store.get(&shared.key).await {
            Ok(stored) => stored,
            Err(error) => {
                trace::storage_error(error.code(), "get");
                self.store_error = Some(error);
                return;
            }
        };
        let Some(json) = stored else { return };
        let snapshot = match Snapshot::from_json(&json) {
            Ok(snapshot) => snapshot,
            Err(error) => return trace::snapshot_discarded(error.code()),
        };
        let state = self.provider.as_ref().map(SharedProvider::state).unwrap_or_default();
        match Session::with_provider(config, &state, Some(snapshot), erpnet_auth::OsRandom) {
            Ok(session) => self.session = session,
            Err(error) => trace::snapshot_discarded(error.code()),
        }
    }

    /// Handles one command; false once closed.
    fn command(&mut self, command: Command) -> bool {
        let now = now_ms();
        match command {
            Command::SignIn { options, reply } => self.wait_for_provider(now, Deferred::SignIn { options, reply }),
            Command::Callback { input, form_post, reply } => {
                self.read_then(now, Deferred::Callback { input, form_post, reply });
            }
            Command::SignOut { post_logout_redirect_uri, reply } => {
                self.read_then(now, Deferred::SignOut { post_logout_redirect_uri, reply });
            }
            Command::Call { ticket, request, reply } => match self.session.call_api(now, request) {
                Ok(call) => self.open(ticket, call, CallReply::Api(reply)),
                Err(error) => drop(reply.send(Err(Error::Refused(error)))),
            },
            Command::UserInfo { ticket, reply } => match self.session.fetch_user_info(now) {
                Ok(call) => self.open(ticket, call, CallReply::Claims(reply)),
                Err(error) => drop(reply.send(Err(Error::Usage(error)))),
            },
            Command::Profile { ticket, reply } => {
                // The Profile site comes from the instance's auto-discovery: wait for it.
                if self.session.is_discovering_sites() {
                    self.deferred.push(Deferred::Profile { ticket, reply });
                } else {
                    self.run_deferred(now, Deferred::Profile { ticket, reply });
                }
            }
            Command::Cancel { ticket } => {
                if let Some(call) = self.calls.iter().find(|p| p.ticket == ticket).map(|p| p.call) {
                    if let Err(e) = self.session.cancel_call(now, call) {
                        trace::driver_bug(e.code());
                    }
                }
            }
            Command::IsSignedIn(reply) => drop(reply.send(self.session.is_signed_in())),
            Command::Claims(reply) => drop(reply.send(self.session.claims().cloned())),
            Command::Snapshot(reply) => drop(reply.send(Ok(self.session.snapshot()))),
            Command::Close(reply) => {
                self.shut_down();
                let _ = reply.send(());
                return false;
            }
        }
        self.pump();
        true
    }

    fn open(&mut self, ticket: u64, call: CallId, reply: CallReply) {
        self.calls.push(Pending { ticket, call, reply, sends: 0, last_status: 0 });
    }

    /// A shared session reads the store before a callback (the sign-in may have begun in
    /// another process, which stored its pending authorization) and before a sign-out (so
    /// that it ends the latest tokens, and its write is not refused as stale).
    fn read_then(&mut self, now: u64, deferred: Deferred) {
        let Some(shared) = &self.shared else { return self.wait_for_provider(now, deferred) };
        let store = Arc::clone(&shared.store);
        let key = shared.key.clone();
        let deferred = Box::new(deferred);
        self.tasks.spawn(async move {
            let stored = store.get(&key).await;
            Done::Fresh(deferred, stored)
        });
    }

    /// Sign-in, callback and sign-out need the provider's endpoints: run at once when they
    /// are known, else ask for discovery (again, after a failure) and wait for its outcome.
    fn wait_for_provider(&mut self, now: u64, deferred: Deferred) {
        if self.session.is_provider_ready() {
            return self.run_deferred(now, deferred);
        }
        self.discovery_failed = None;
        if let Err(e) = self.session.discover(now) {
            trace::driver_bug(e.code());
        }
        self.deferred.push(deferred);
    }

    /// Runs the deferred commands whose wait is over; true when one ran.
    fn release_deferred(&mut self) -> bool {
        self.deferred.retain(|d| !d.is_abandoned());
        let ready = self.session.is_provider_ready();
        let failed = self.discovery_failed.is_some();
        let sites_known = !self.session.is_discovering_sites();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred).into_iter().partition(|d| match d {
            Deferred::Profile { .. } => sites_known,
            _ => ready || failed,
        });
        self.deferred = waiting;
        let ran = !due.is_empty();
        let now = now_ms();
        for deferred in due {
            self.run_deferred(now, deferred);
        }
        ran
    }

    fn run_deferred(&mut self, now: u64, deferred: Deferred) {
        let failed = self.discovery_failed.clone().filter(|_| !self.session.is_provider_ready());
        match deferred {
            Deferred::SignIn { reply, .. } if failed.is_some() => {
                drop(reply.send(Err(failed.map_or(Error::Closed, Error::Discovery))));
            }
            Deferred::Callback { reply, .. } if failed.is_some() => {
                drop(reply.send(Err(failed.map_or(Error::Closed, Error::Discovery))));
            }
            Deferred::SignIn { options, reply } => match self.session.sign_in(now, options) {
                Ok(url) => self.settle(Settled::SignIn(reply, url)),
                Err(error) => drop(reply.send(Err(Error::Usage(error)))),
            },
            Deferred::Callback { input, form_post, reply } => {
                let callback = if form_post { Callback::FormPost(&input) } else { Callback::Url(&input) };
                match self.session.handle_callback(now, callback) {
                    Ok(()) => self.callbacks.push(reply),
                    Err(error) => drop(reply.send(Err(Error::Callback(error)))),
                }
            }
            // Without the provider's endpoints the session still signs out here (no
            // revocation, no end-session URL).
            Deferred::SignOut { post_logout_redirect_uri, reply } => {
                match self.session.sign_out(now, post_logout_redirect_uri.as_deref()) {
                    Ok(url) => self.settle(Settled::SignOut(reply, url)),
                    Err(error) => drop(reply.send(Err(Error::Usage(error)))),
                }
            }
            Deferred::Profile { ticket, reply } => match self.session.fetch_profile(now) {
                Ok(call) => self.open(ticket, call, CallReply::Claims(reply)),
                Err(error) => drop(reply.send(Err(Error::Usage(error)))),
            },
        }
    }

    /// Releases `reply` once what the command changed is stored: at the end of this drain,
    /// or once the writes it queued are done.
    fn settle(&mut self, reply: Settled) {
        self.settled.push(reply);
    }

    fn release_settled(&mut self) {
        if self.settled.is_empty() || self.shared.as_ref().is_some_and(|s| s.writes_pending()) {
            return;
        }
        for reply in std::mem::take(&mut self.settled) {
            reply.send();
        }
    }

    /// Drains the session after a command or input, carries out what it asked for, hands
    /// in what is already known (signature verdicts, requests not to be sent), runs the
    /// commands whose wait is over, and so on until nothing is left; then re-arms the timer.
    fn pump(&mut self) {
        loop {
            self.drain();
            for request in std::mem::take(&mut self.outbox) {
                self.dispatch(request);
            }
            if let Some(input) = self.inputs.pop_front() {
                self.apply(input);
                continue;
            }
            if !self.deferred.is_empty() && self.release_deferred() {
                continue;
            }
            break;
        }
        self.release_settled();
        self.release_lease_when_done();
    }

    fn drain(&mut self) {
        loop {
            match self.session.poll() {
                Output::Http(request) => self.outbox.push(request),
                Output::Persist(snapshot) => self.persist(snapshot),
                Output::VerifySignature(check) => {
                    // Only with `host_verifies_signatures(true)`: answered with the crate's
                    // own verifier, as a host with another crypto library would.
                    let valid = check.verify_in_rust();
                    self.inputs.push_back(Input::Signature(check.id, valid));
                }
                Output::Event(event) => self.on_event(event),
                Output::WaitUntil(at) => {
                    self.wake_at = Some(at);
                    return;
                }
                Output::Idle => {
                    self.wake_at = None;
                    return;
                }
            }
        }
    }

    fn apply(&mut self, input: Input) {
        let now = now_ms();
        let result = match input {
            Input::Answer(id, Ok(response)) => self.session.handle_response(now, id, response),
            Input::Answer(id, Err(error)) => self.session.handle_transport_error(now, id, error),
            Input::Signature(id, valid) => self.session.handle_signature(now, id, valid),
        };
        if let Err(e) = result {
            trace::driver_bug(e.code());
        }
    }

    fn on_event(&mut self, event: Event) {
        match &event {
            Event::CallCompleted { call, response, .. } => {
                if let Some(pending) = self.take_call(*call) {
                    if let CallReply::Api(reply) = pending.reply {
                        drop(reply.send(Ok(response.clone())));
                    }
                }
            }
            Event::CallFailed { call, error } => {
                if let Some(pending) = self.take_call(*call) {
                    let error = self.failure(error.clone());
                    match pending.reply {
                        CallReply::Api(reply) => drop(reply.send(Err(error))),
                        CallReply::Claims(reply) => drop(reply.send(Err(error))),
                    }
                }
            }
            Event::UserInfoReceived { call, claims } => self.claims_answer(*call, Ok(claims.clone())),
            Event::ProfileReceived { call, profile } => self.claims_answer(*call, Ok(profile.clone())),
            Event::UserInfoFailed { call, error } | Event::ProfileFailed { call, error } => {
                let error = match Error::from(error.clone()) {
                    Error::Failed(failure) => self.failure(failure),
                    other => other,
                };
                self.claims_answer(*call, Err(error));
            }
            Event::SignedIn { .. } => {
                self.token_outcome();
                for reply in std::mem::take(&mut self.callbacks) {
                    self.settle(Settled::Callback(reply, Ok(())));
                }
            }
            Event::SignInFailed { error } => {
                self.token_attempt = 0;
                for reply in std::mem::take(&mut self.callbacks) {
                    self.settle(Settled::Callback(reply, Err(Error::SignIn(error.clone()))));
                }
            }
            Event::DiscoveryFailed { error } => self.discovery_failed = Some(error.clone()),
            Event::TokensRenewed { expires_at, .. } => {
                self.token_outcome();
                trace::renewed(expires_at.map(|at| at.saturating_sub(now_ms())));
            }
            Event::RenewalDeferred { error, attempt, retry_at } => {
                trace::renewal_deferred(error.code(), *attempt, retry_at.saturating_sub(now_ms()));
            }
            Event::RenewalFailed { error } => {
                self.token_attempt = 0;
                trace::renewal_failed(error.code());
            }
            Event::SignInRequired { reason } => {
                self.token_attempt = 0;
                trace::sign_in_required(reason.code());
            }
            _ => {}
        }
        self.hub.publish(&event);
    }

    /// New tokens arrived: the attempt count and any store failure are behind us.
    fn token_outcome(&mut self) {
        self.token_attempt = 0;
        self.store_error = None;
    }

    /// A call that failed for want of a renewal while the store was failing reports the
    /// store's error: that is what the caller can act on.
    fn failure(&self, failure: CallFailure) -> Error {
        match (&failure, &self.store_error) {
            (CallFailure::RenewalUnavailable(_), Some(store)) => Error::Store(store.clone()),
            _ => Error::Failed(failure),
        }
    }

    fn claims_answer(&mut self, call: CallId, result: Result<Map<String, Value>, Error>) {
        if let Some(Pending { reply: CallReply::Claims(reply), .. }) = self.take_call(call) {
            drop(reply.send(result));
        }
    }

    fn take_call(&mut self, call: CallId) -> Option<Pending> {
        let at = self.calls.iter().position(|p| p.call == call)?;
        Some(self.calls.swap_remove(at))
    }

    // ----- requests -----

    fn dispatch(&mut self, request: HttpRequest) {
        if let Some(shared) = self.shared.as_mut() {
            // Requests wait for the state before them to be stored, so that what they use is
            // what the other processes read.
            if shared.writes_pending() {
                shared.held.push(request);
                return;
            }
            if request.kind == RequestKind::Token {
                return self.gate(request);
            }
        }
        self.send(request);
    }

    /// A token request of a shared session: the lock (unless held), then the stored snapshot.
    fn gate(&mut self, request: HttpRequest) {
        let Some(shared) = self.shared.as_mut() else { return };
        let Some(lease_ms) = self.session.token_lease_ms(request.id) else {
            // No longer sendable (answered, abandoned): answered like any unsent request.
            self.inputs.push_back(Input::Answer(request.id, Err(TransportError::Other)));
            return;
        };
        shared.gating = Some(request.id);
        let store = Arc::clone(&shared.store);
        let key = shared.key.clone();
        let name = shared.lock_name.clone();
        let need_lock = shared.lease.is_none();
        self.tasks.spawn(async move {
            let lease = if need_lock {
                let lease = Duration::from_millis(lease_ms);
                // As long as a holder may keep it, and a second more.
                let wait = lease + Duration::from_secs(1);
                let started = tokio::time::Instant::now();
                let taken = store.lock(&name, lease, wait).await;
                let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                trace::lock_wait(waited_ms, if taken.is_ok() { "taken" } else { "failed" });
                Some(taken)
            } else {
                None
            };
            let stored = match &lease {
                Some(Err(_)) => Ok(None),
                _ => store.get(&key).await,
            };
            Done::Gate { request, lease, stored }
        });
    }

    fn on_gate(
        &mut self,
        request: HttpRequest,
        lease: Option<Result<Lease, StoreError>>,
        stored: Result<Option<String>, StoreError>,
    ) {
        let id = request.id;
        let failure = match lease {
            Some(Err(error)) => Some((error, "lock")),
            Some(Ok(lease)) => {
                if let Some(shared) = self.shared.as_mut() {
                    shared.lease = Some(lease);
                }
                None
            }
            None => None,
        };
        let failure = failure.or_else(|| stored.as_ref().err().map(|e| (e.clone(), "get")));
        if let Some((error, operation)) = failure {
            // Nothing was sent: the session backs off and tries again.
            trace::storage_error(error.code(), operation);
            self.store_error = Some(error);
            self.not_sent(id, TransportError::Connect);
            return;
        }
        if let Ok(Some(json)) = stored {
            self.adopt(&json);
        }
        let covered = self
            .shared
            .as_ref()
            .and_then(|s| s.lease.as_ref())
            .is_some_and(|lease| self.session.lease_covers(id, lease.expires_at_ms));
        if !self.session.is_request_wanted(id) {
            trace::not_sent(id.0, "not_wanted");
            self.not_sent(id, TransportError::Other);
        } else if !covered {
            trace::not_sent(id.0, "lease_short");
            self.not_sent(id, TransportError::Other);
        } else {
            self.send(request);
        }
    }

    /// Answers a token request that was not sent.
    fn not_sent(&mut self, id: RequestId, error: TransportError) {
        if let Some(shared) = self.shared.as_mut() {
            shared.gating = None;
        }
        self.inputs.push_back(Input::Answer(id, Err(error)));
        self.pump();
    }

    /// Hands a stored snapshot to the session (it ignores an older one or one of another
    /// client), then drains.
    fn adopt(&mut self, json: &str) {
        match Snapshot::from_json(json) {
            Ok(snapshot) => {
                if let Err(error) = self.session.handle_snapshot(now_ms(), snapshot) {
                    trace::snapshot_discarded(error.code());
                }
            }
            Err(error) => trace::snapshot_discarded(error.code()),
        }
        self.pump();
    }

    fn send(&mut self, request: HttpRequest) {
        let id = request.id;
        let kind = request.kind;
        let call = request.call;
        if let Some(call) = call {
            if let Some(pending) = self.calls.iter_mut().find(|p| p.call == call) {
                pending.sends += 1;
                if pending.sends > 1 {
                    trace::resent(call.0, pending.last_status, pending.sends);
                }
            }
        }
        // Requests emitted before the session knew the time carry no deadline: give them the
        // session's own timeout. API calls have none (a long poll may take minutes).
        let deadline = match (request.deadline, kind) {
            (Some(at), _) => Some(instant_of(at)),
            (None, RequestKind::Api) => None,
            (None, _) => Some(instant_of(now_ms().saturating_add(self.session.config().timing().request_timeout_ms))),
        };
        let http = self.http.clone();
        let max_body_bytes = self.max_body_bytes;
        let provider = self.provider.clone().filter(|_| {
            matches!(kind, RequestKind::Discovery | RequestKind::Keys | RequestKind::Sites)
                && request.method == Method::Get
        });
        let shared = provider.is_some();
        let span = (kind == RequestKind::Token).then(|| {
            self.token_attempt += 1;
            trace::TokenSpan::start(trace::grant_of(request.body.as_deref()), self.token_attempt, id.0)
        });
        let handle = self.tasks.spawn(async move {
            let result = match provider {
                // One fetch per URL for every session of the process.
                Some(provider) => {
                    let url = request.url.clone();
                    provider.load_once(&url, crate::http::send(&http, request, deadline, max_body_bytes)).await
                }
                None => crate::http::send(&http, request, deadline, max_body_bytes).await,
            };
            if let Some(span) = span {
                span.finish(&result);
            }
            Done::Answer { id, kind, call, shared, result }
        });
        self.in_flight.push((handle.id(), id));
    }

    fn joined(&mut self, joined: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        let (task, done) = match joined {
            Ok(done) => done,
            Err(error) => {
                // A task that panicked still answers its request.
                let task = error.id();
                if let Some(at) = self.in_flight.iter().position(|(t, _)| *t == task) {
                    let (_, id) = self.in_flight.swap_remove(at);
                    self.inputs.push_back(Input::Answer(id, Err(TransportError::Other)));
                    self.pump();
                }
                return;
            }
        };
        if let Some(at) = self.in_flight.iter().position(|(t, _)| *t == task) {
            self.in_flight.swap_remove(at);
        }
        match done {
            Done::Answer { id, kind, call, shared, result } => self.on_answer(id, kind, call, shared, result),
            Done::Gate { request, lease, stored } => self.on_gate(request, lease, stored),
            Done::Written { generation, result } => self.on_written(generation, result),
            Done::Reread(result) => self.on_reread(result),
            Done::Fresh(deferred, stored) => {
                match stored {
                    Ok(Some(json)) => self.adopt(&json),
                    Ok(None) => {}
                    Err(error) => {
                        // Carried on with what this process knows.
                        trace::storage_error(error.code(), "get");
                        self.store_error = Some(error);
                    }
                }
                self.wait_for_provider(now_ms(), *deferred);
                self.pump();
            }
            Done::Unlocked(result) => {
                if let Err(error) = result {
                    // The lease runs out by itself.
                    trace::storage_error(error.code(), "unlock");
                }
            }
        }
    }

    fn on_answer(
        &mut self,
        id: RequestId,
        kind: RequestKind,
        call: Option<CallId>,
        shared: bool,
        result: Result<HttpResponse, TransportError>,
    ) {
        if let (Some(call), Ok(response)) = (call, &result) {
            if let Some(pending) = self.calls.iter_mut().find(|p| p.call == call) {
                pending.last_status = response.status;
            }
            if response.status == 429 {
                trace::throttled(call.0, id.0);
            }
        }
        if kind == RequestKind::Token {
            if let Some(shared) = self.shared.as_mut() {
                shared.gating = None;
            }
        }
        self.inputs.push_back(Input::Answer(id, result));
        self.pump();
        if shared {
            if let Some(provider) = &self.provider {
                provider.learn(self.session.provider_state());
            }
        }
    }

    // ----- persistence -----

    fn persist(&mut self, snapshot: Box<Snapshot>) {
        if let Some(hook) = &self.on_persist {
            hook(&snapshot);
        }
        if let Some(shared) = self.shared.as_mut() {
            shared.writes.push_back(snapshot);
            self.next_write();
        }
    }

    fn next_write(&mut self) {
        let Some(shared) = self.shared.as_mut() else { return };
        if shared.writing {
            return;
        }
        let Some(snapshot) = shared.writes.pop_front() else { return };
        shared.writing = true;
        let store = Arc::clone(&shared.store);
        let key = shared.key.clone();
        let write = Write { generation: snapshot.generation(), base_generation: snapshot.base_generation() };
        let json = snapshot.to_json();
        self.tasks.spawn(async move {
            let result = store.set(&key, &json, Some(write)).await;
            Done::Written { generation: write.generation, result }
        });
    }

    fn on_written(&mut self, generation: u64, result: Result<bool, StoreError>) {
        let Some(shared) = self.shared.as_mut() else { return };
        match result {
            Ok(true) => shared.writing = false,
            Ok(false) => {
                // Another process stored newer tokens meanwhile: read and adopt them (a lost
                // race is no logout). Requests keep waiting until they are adopted.
                trace::storage_conflict(generation);
                let store = Arc::clone(&shared.store);
                let key = shared.key.clone();
                self.tasks.spawn(async move { Done::Reread(store.get(&key).await) });
                return;
            }
            Err(error) => {
                shared.writing = false;
                trace::storage_error(error.code(), "set");
                self.store_error = Some(error);
            }
        }
        self.after_write();
    }

    fn on_reread(&mut self, result: Result<Option<String>, StoreError>) {
        if let Some(shared) = self.shared.as_mut() {
            shared.writing = false;
        }
        match result {
            Ok(Some(json)) => self.adopt(&json),
            Ok(None) => {}
            Err(error) => {
                trace::storage_error(error.code(), "get");
                self.store_error = Some(error);
            }
        }
        self.after_write();
    }

    /// The next write, or, when all are stored, the requests and replies that waited.
    fn after_write(&mut self) {
        self.next_write();
        let Some(shared) = self.shared.as_mut() else { return };
        if shared.writes_pending() {
            return;
        }
        let held = std::mem::take(&mut shared.held);
        for request in held {
            self.dispatch(request);
        }
        self.pump();
    }

    /// The token lock is released once no token request is between lock and answer, the
    /// answer's ID token is checked, and its tokens are stored: the next holder then reads
    /// the new tokens, never the rotated ones.
    fn release_lease_when_done(&mut self) {
        let checking = self.session.is_checking_token_answer();
        let Some(shared) = self.shared.as_mut() else { return };
        if shared.lease.is_none() || shared.gating.is_some() || shared.writes_pending() || checking {
            return;
        }
        let Some(lease) = shared.lease.take() else { return };
        let store = Arc::clone(&shared.store);
        let name = shared.lock_name.clone();
        self.tasks.spawn(async move { Done::Unlocked(store.unlock(&name, lease).await) });
    }

    // ----- the end -----

    /// Final: every waiting caller gets `Closed`; a held lock is let go; in-flight tasks
    /// are aborted when the driver is dropped.
    fn shut_down(&mut self) {
        self.hub.close();
        for pending in self.calls.drain(..) {
            match pending.reply {
                CallReply::Api(reply) => drop(reply.send(Err(Error::Closed))),
                CallReply::Claims(reply) => drop(reply.send(Err(Error::Closed))),
            }
        }
        for reply in self.callbacks.drain(..) {
            drop(reply.send(Err(Error::Closed)));
        }
        // Replies of deferred and settled commands are dropped: their callers see `Closed`.
        self.deferred.clear();
        self.settled.clear();
        if let Some(shared) = self.shared.as_mut() {
            shared.held.clear();
            shared.writes.clear();
            if let Some(lease) = shared.lease.take() {
                let store = Arc::clone(&shared.store);
                let name = shared.lock_name.clone();
                // Detached: the other processes need not wait for the lease to run out.
                tokio::spawn(async move {
                    let _ = store.unlock(&name, lease).await;
                });
            }
        }
        self.tasks.abort_all();
        self.in_flight.clear();
    }
}
