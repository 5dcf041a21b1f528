//! The driver of one core [`Session`].
//!
//! The session and everything the driver keeps about it live in the [`Hub`], under a mutex
//! that is never held across an `.await`: whoever has work for the session takes the lock,
//! hands its input in, drains `poll()`, carries out what the session asked for, and lets go.
//! No protocol decision is made here: the session decides, this code carries.
//!
//! An API call is driven by its caller's own task: it opens the call and drains; when the
//! session emits that call's request then and there (the common case: a valid token, nothing
//! to store first), the caller sends it with reqwest itself, locks again to hand the answer
//! in, and takes its outcome. No other task is involved. Everything else (requests emitted
//! for someone else or later: token requests and their lock, discovery, a replay after a
//! refresh, store writes) runs as a task of a [`JoinSet`] whose result comes back to the
//! driver's task, which also sleeps on the session's `WaitUntil` and serves the commands of
//! the client's other methods.
//!
//! That task exists only while there is something to wait for: an idle session (nothing in
//! flight, at most a wake-up due) has none, and the next command, a task started by a caller
//! or its timer spawns it again, so that ten thousand idle sessions cost their state and not
//! ten thousand tasks. What only a busy session needs ([`Work`]) is made when work arrives
//! and dropped when it is done.
//!
//! The end is graceful: once closed or once its last handle is gone, the driver takes no
//! new command and fails the waiting ones, but a token request or a revocation already sent
//! runs to its answer, which is installed and stored, and a held token lock is given back.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use erpnet_auth::{
    ApiRequest, CallFailure, CallId, Callback, Event, HttpRequest, HttpResponse, IdTokenClaims, Method, Output,
    RequestId, RequestKind, Session, SignInOptions, SignatureCheckId, Snapshot, TransportError,
};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, oneshot};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::{Instant, Sleep};

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

/// Call tickets: unique in the process, so that no session needs a counter of its own.
static TICKETS: AtomicU64 = AtomicU64::new(0);

/// What a [`Client`](crate::Client) asks of its driver's task.
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
    /// An API call that its caller cannot drive itself (see [`Hub::call`]).
    Call {
        ticket: u64,
        request: ApiRequest,
        reply: OutcomeSender,
    },
    UserInfo {
        ticket: u64,
        reply: Reply<Map<String, Value>>,
    },
    Profile {
        ticket: u64,
        reply: Reply<Map<String, Value>>,
    },
    SignOut {
        post_logout_redirect_uri: Option<String>,
        reply: Reply<Option<String>>,
    },
    IsSignedIn(oneshot::Sender<bool>),
    Claims(oneshot::Sender<Option<IdTokenClaims>>),
    Snapshot(Reply<Snapshot>),
    /// Answered (by dropping it) once the driver ended.
    Close(oneshot::Sender<()>),
}

impl Command {
    /// The ticket of a call not taken yet.
    fn ticket(&self) -> Option<u64> {
        match self {
            Command::Call { ticket, .. } | Command::UserInfo { ticket, .. } | Command::Profile { ticket, .. } => {
                Some(*ticket)
            }
            _ => None,
        }
    }
}

/// What the client handles share: the driver (the session and all that goes with it) under
/// its lock, and the count of handles.
pub(crate) struct Hub {
    driver: Mutex<Driver>,
    /// Client handles alive; the last one's drop ends the driver.
    handles: AtomicUsize,
    /// Where the driver's task and requests run (the runtime its HTTP connections belong
    /// to): a caller on another runtime leaves its call to the driver's task.
    runtime: tokio::runtime::Handle,
    runtime_id: tokio::runtime::Id,
}

/// What to do once the lock is let go (never under it: a task spawned on a runtime that
/// shut down is dropped at once, and its drop takes the lock).
#[must_use]
enum Start {
    Nothing,
    /// Wake the driver's task: something it waits for changed.
    Wake(Waker),
    /// Spawn the driver's task.
    Spawn,
}

impl Hub {
    /// Makes the hub and starts the driver's first task on `runtime`: a shared session loads
    /// what the store holds, then every session drains (discovery begins).
    pub(crate) fn start(parts: Parts, runtime: tokio::runtime::Handle, config: Arc<erpnet_auth::Config>) -> Arc<Hub> {
        let runtime_id = runtime.id();
        let hub = Arc::new(Hub {
            driver: Mutex::new(Driver::new(parts, runtime.clone())),
            handles: AtomicUsize::new(1),
            runtime,
            runtime_id,
        });
        let task = DriverTask { hub: Arc::clone(&hub), done: false };
        drop(hub.runtime.spawn(task.run(Some(config))));
        hub
    }

    pub(crate) fn ticket(&self) -> u64 {
        TICKETS.fetch_add(1, Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Driver> {
        self.driver.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` under the lock, then starts or wakes the driver's task when what it did
    /// needs that.
    fn with_driver<T>(self: &Arc<Self>, work: impl FnOnce(&mut Driver) -> T) -> T {
        let mut driver = self.lock();
        let result = work(&mut driver);
        let start = driver.start_after_caller();
        drop(driver);
        self.carry_out(start);
        result
    }

    fn carry_out(self: &Arc<Self>, start: Start) {
        match start {
            Start::Nothing => {}
            Start::Wake(waker) => waker.wake(),
            Start::Spawn => {
                let task = DriverTask { hub: Arc::clone(self), done: false };
                drop(self.runtime.spawn(task.run(None)));
            }
        }
    }

    /// Closing or ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closing
    }

    /// A new client handle.
    pub(crate) fn add_handle(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// A client handle is gone; the last one ends the driver.
    pub(crate) fn drop_handle(self: &Arc<Self>) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.hang_up();
        }
    }

    /// Queues `command` for the driver's task, starting it when there is none;
    /// `Err(Closed)` once closing (except for `Close`, whose caller waits for the end) or
    /// ended.
    pub(crate) fn send(self: &Arc<Self>, command: Command) -> Result<(), Error> {
        let mut driver = self.lock();
        if driver.ended || (driver.closing && !matches!(command, Command::Close(_))) {
            return Err(Error::Closed);
        }
        driver.commands.push_back(command);
        let start = driver.stir();
        drop(driver);
        self.carry_out(start);
        Ok(())
    }

    /// The last client handle is gone: an idle driver ends here, a busy one ends gracefully
    /// on its task.
    fn hang_up(self: &Arc<Self>) {
        let mut driver = self.lock();
        driver.open = false;
        let start = if !driver.task && driver.work.as_ref().is_none_or(|work| work.is_idle()) {
            driver.end();
            Start::Nothing
        } else {
            driver.stir()
        };
        drop(driver);
        self.carry_out(start);
    }

    /// A receiver of the events from now on; `None` once the client is closing or gone.
    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Event>> {
        let mut driver = self.lock();
        if driver.closing {
            return None;
        }
        Some(driver.events.get_or_insert_with(|| broadcast::channel(EVENTS_CAPACITY).0).subscribe())
    }

    /// A call's future was dropped before its answer: the call is cancelled in the session
    /// (its concurrency slot freed, a late answer ignored), and the request its caller was
    /// sending, if any, is answered with a transport error.
    pub(crate) fn abandon(self: &Arc<Self>, ticket: u64, sending: Option<RequestId>) {
        self.with_driver(|driver| driver.abandon(ticket, sending));
    }

    /// An authorized API call, driven by the caller's own task when it runs on the driver's
    /// runtime and the session serves calls at once (no command queued before it, the store
    /// loaded): the caller sends its call's requests itself, the first one when the session
    /// emits it at once, a later one (a call that waited for a free place, a renewal or a
    /// backoff) when the session hands it over. Else the call goes through the driver's
    /// task, as every other command.
    pub(crate) async fn call(self: &Arc<Self>, request: ApiRequest) -> Result<HttpResponse, Error> {
        let ticket = self.ticket();
        let outcome = Arc::new(Outcome::default());
        let reply = OutcomeSender(Arc::clone(&outcome));
        let on_runtime = tokio::runtime::Handle::try_current().is_ok_and(|current| current.id() == self.runtime_id);
        let mut guard = AbandonOnDrop { hub: self, ticket, sending: None, armed: true };
        let next = if on_runtime {
            self.with_driver(|driver| driver.call(ticket, request, reply))?
        } else {
            Next::Queue(request, reply)
        };
        let (call, settings, mut emitted) = match next {
            Next::Queue(request, reply) => {
                self.send(Command::Call { ticket, request, reply })?;
                let ended = std::future::poll_fn(|cx| outcome.poll_end(cx)).await;
                guard.armed = false;
                return ended;
            }
            Next::Driven { call, settings, request } => (call, settings, request),
        };
        loop {
            let request = match emitted.take() {
                Some(request) => request,
                None => match std::future::poll_fn(|cx| outcome.poll_next(cx)).await {
                    Handed::Send(request) => request,
                    Handed::Ended(ended) => {
                        guard.armed = false;
                        return ended;
                    }
                },
            };
            let (id, kind) = (request.id, request.kind);
            guard.sending = Some(id);
            let deadline = deadline_of(&request);
            // The call may end first (the client closed, signed out): the request is then
            // given up, and answered as such.
            let result = {
                let mut exchange = pin!(crate::http::send(&settings.http, request, deadline, settings.max_body_bytes));
                std::future::poll_fn(|cx| match outcome.poll_end(cx) {
                    Poll::Ready(ended) => Poll::Ready(Err(ended)),
                    Poll::Pending => exchange.as_mut().poll(cx).map(Ok),
                })
                .await
            };
            let result = match result {
                Ok(result) => result,
                Err(ended) => {
                    guard.armed = false;
                    self.abandon(ticket, guard.sending.take());
                    return ended;
                }
            };
            // Its own answer settles the call: that must not wake this task again.
            outcome.withdraw();
            emitted = self.with_driver(|driver| driver.answer(call, id, kind, result));
            guard.sending = None;
            if let Some(ended) = outcome.try_take() {
                guard.armed = false;
                return ended;
            }
        }
    }
}

/// What a caller does next for its call.
enum Next {
    /// Leave it to the driver's task.
    Queue(ApiRequest, OutcomeSender),
    /// Drive it: send `request` when there is one, else wait for the outcome or for a
    /// request handed over.
    Driven { call: CallId, settings: Arc<Settings>, request: Option<HttpRequest> },
}

/// Gives a call up in the session when its future is dropped before its answer.
pub(crate) struct AbandonOnDrop<'a> {
    pub(crate) hub: &'a Arc<Hub>,
    pub(crate) ticket: u64,
    /// The request the caller is sending itself.
    pub(crate) sending: Option<RequestId>,
    pub(crate) armed: bool,
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub.abandon(self.ticket, self.sending);
        }
    }
}

/// What a waiting caller finds in its slot.
enum Handed {
    Ended(Result<HttpResponse, Error>),
    /// A request of its call, to send.
    Send(HttpRequest),
}

/// Where an API call's outcome lands for its caller, and the requests the session emits
/// for it while the caller waits: a slot whose waiter can take its waker back. A caller
/// that hands in its own call's answer must not wake itself: its task would be scheduled
/// again, through another worker.
#[derive(Default)]
pub(crate) struct Outcome(Mutex<Slot>);

#[derive(Default)]
struct Slot {
    settled: bool,
    /// `None` once settled: the driver ended without an outcome, or it was taken.
    result: Option<Result<HttpResponse, Error>>,
    /// A request of the call for its waiting caller to send.
    request: Option<HttpRequest>,
    waker: Option<Waker>,
}

impl Outcome {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The outcome, once the call ended.
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<Result<HttpResponse, Error>> {
        match self.poll_slot(cx, false) {
            Poll::Ready(Handed::Ended(ended)) => Poll::Ready(ended),
            Poll::Ready(Handed::Send(_)) | Poll::Pending => Poll::Pending,
        }
    }

    /// The outcome, or a request handed over.
    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Handed> {
        self.poll_slot(cx, true)
    }

    fn poll_slot(&self, cx: &mut Context<'_>, take_request: bool) -> Poll<Handed> {
        let mut slot = self.lock();
        if slot.settled {
            return Poll::Ready(Handed::Ended(slot.result.take().unwrap_or(Err(Error::Closed))));
        }
        if let Some(request) = slot.request.take_if(|_| take_request) {
            return Poll::Ready(Handed::Send(request));
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn withdraw(&self) {
        self.lock().waker = None;
    }

    fn try_take(&self) -> Option<Result<HttpResponse, Error>> {
        let mut slot = self.lock();
        slot.settled.then(|| slot.result.take().unwrap_or(Err(Error::Closed)))
    }

    fn settle(&self, result: Option<Result<HttpResponse, Error>>) {
        let waker = {
            let mut slot = self.lock();
            if slot.settled {
                return;
            }
            slot.settled = true;
            slot.result = result;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The driver's end of an [`Outcome`]; dropped unsent (the driver ended), its caller sees
/// `Closed`.
pub(crate) struct OutcomeSender(Arc<Outcome>);

impl OutcomeSender {
    fn send(self, result: Result<HttpResponse, Error>) {
        self.0.settle(Some(result));
    }

    /// Hands `request` to the waiting caller; gives it back when the call already ended.
    fn hand(&self, request: HttpRequest) -> Option<HttpRequest> {
        let waker = {
            let mut slot = self.0.lock();
            if slot.settled || slot.request.is_some() {
                return Some(request);
            }
            slot.request = Some(request);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        None
    }

    /// The request handed over and not taken: its caller went away.
    fn take_request(&self) -> Option<HttpRequest> {
        self.0.lock().request.take()
    }
}

impl Drop for OutcomeSender {
    fn drop(&mut self) {
        self.0.settle(None);
    }
}

/// The driver's task, for as long as the session has something to wait for. However its
/// future ends (finished, or dropped by a runtime shutting down, even before it ran), the
/// hub knows: a lost task ends the session (its callers see `Closed`).
struct DriverTask {
    hub: Arc<Hub>,
    done: bool,
}

impl DriverTask {
    async fn run(mut self, load: Option<Arc<erpnet_auth::Config>>) {
        if let Some(config) = load {
            self.hub.load_stored(config).await;
        }
        let hub = Arc::clone(&self.hub);
        std::future::poll_fn(|cx| hub.drive(cx)).await;
        self.done = true;
    }
}

impl Drop for DriverTask {
    fn drop(&mut self) {
        if !self.done {
            let mut driver = self.hub.lock();
            driver.task = false;
            driver.end();
        }
    }
}

/// The waker of a parked driver's timer: its task is spawned again (the timer holds the
/// waker; the hub holds the driver).
struct Alarm(Weak<Hub>);

impl std::task::Wake for Alarm {
    fn wake(self: Arc<Self>) {
        if let Some(hub) = self.0.upgrade() {
            // Not the hub's lock here: a task of its own takes it.
            let runtime = hub.runtime.clone();
            drop(runtime.spawn(async move {
                let start = hub.lock().stir();
                match start {
                    Start::Spawn => DriverTask { hub, done: false }.run(None).await,
                    start => hub.carry_out(start),
                }
            }));
        }
    }
}

impl Hub {
    /// A shared session starts from what the store holds (one read), so that a session
    /// stored with its provider's metadata does not discover again. Until then the session
    /// serves no one: commands wait in the queue.
    async fn load_stored(&self, config: Arc<erpnet_auth::Config>) {
        let shared = {
            let driver = self.lock();
            driver.shared.as_ref().map(|shared| (Arc::clone(&shared.store), shared.key.clone()))
        };
        let stored = match shared {
            Some((store, key)) => Some(store.get(&key).await),
            None => None,
        };
        let mut driver = self.lock();
        if let Some(stored) = stored {
            driver.restore(config, stored);
        }
        driver.loading = false;
        driver.pump();
    }

    /// One turn of the driver's task: serves commands, answers and the timer until nothing
    /// is ready; ends once there is nothing to wait for (idle: parked, its timer armed to
    /// start it again) or once closed and finished.
    fn drive(self: &Arc<Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut driver = self.lock();
        let weak = Arc::downgrade(self);
        driver.drive(cx, weak)
    }
}
/// A shared session: the store and this session's key in it. Where the protocol stands
/// (the lease, the writes) is [`Work`]'s.
pub(crate) struct SharedSession {
    store: Arc<dyn SessionStore>,
    key: Box<str>,
}

impl SharedSession {
    pub(crate) fn new(store: Arc<dyn SessionStore>, key: String) -> SharedSession {
        SharedSession { store, key: key.into_boxed_str() }
    }

    /// The lock of the session's token requests (as the npm package names it).
    fn lock_name(&self) -> String {
        format!("{}:token", self.key)
    }
}

/// A held lease of the token lock. One that is dropped unreleased (the driver ended, or
/// stopped waiting for the lock it had asked for) gives itself back on a task of its own,
/// bounded by the store's own timeout: no other process waits for it to run out.
struct HeldLease {
    lease: Option<Lease>,
    store: Arc<dyn SessionStore>,
    name: String,
}

impl HeldLease {
    fn expires_at_ms(&self) -> u64 {
        self.lease.as_ref().map_or(0, |lease| lease.expires_at_ms)
    }

    async fn release(mut self) -> Result<(), StoreError> {
        match self.lease.take() {
            Some(lease) => self.store.unlock(&self.name, lease).await,
            None => Ok(()),
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        // Outside a runtime (one shutting down) the lease runs out by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = Arc::clone(&self.store);
            let name = std::mem::take(&mut self.name);
            drop(runtime.spawn(async move {
                if let Err(error) = store.unlock(&name, lease).await {
                    trace::storage_error(error.code(), "unlock");
                }
            }));
        }
    }
}

/// Takes the lock on a task of its own and hands the lease over: a driver that stops
/// waiting (it ends) never loses a lease the store granted, since the lease, dropped
/// undelivered, gives itself back.
async fn take_lock(
    store: Arc<dyn SessionStore>,
    name: String,
    lease: Duration,
    wait: Duration,
) -> Result<HeldLease, StoreError> {
    let (handover, taken) = oneshot::channel();
    drop(tokio::spawn(async move {
        let result = store.lock(&name, lease, wait).await;
        let held = result.map(|lease| HeldLease { lease: Some(lease), store, name });
        // Nobody waiting any more is not an error: the lease releases itself.
        let _ = handover.send(held);
    }));
    taken.await.unwrap_or_else(|_| Err(StoreError::Unavailable { command: "lock", reason: "task ended".into() }))
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
    /// The token lock, taken for a token request.
    Locked {
        request: HttpRequest,
        taken: Result<HeldLease, StoreError>,
    },
    /// The stored snapshot, read under the lock for a token request.
    Gate {
        request: HttpRequest,
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
    /// A call left to the driver's task.
    Api(OutcomeSender),
    /// A call its caller drives: the requests emitted while it waits are handed to it.
    Driven(OutcomeSender),
    Claims(Reply<Map<String, Value>>),
}

impl CallReply {
    fn fail(self, error: Error) {
        // A caller that went away no longer wants the answer.
        match self {
            CallReply::Api(reply) | CallReply::Driven(reply) => reply.send(Err(error)),
            CallReply::Claims(reply) => drop(reply.send(Err(error))),
        }
    }
}

/// An open call and its caller.
struct Pending {
    ticket: u64,
    reply: CallReply,
    /// Requests sent for it so far, and the last answer's status (a replay's reason).
    sends: u32,
    last_status: u16,
}

/// A task of the driver in flight.
struct Flight {
    abort: AbortHandle,
    /// The request it sends or gates: answered even if the task ends without a result (a
    /// panic), so that no slot stays taken.
    request: Option<RequestId>,
    /// Runs to its end when the driver closes: a token request or a revocation (and the
    /// key-set fetch that checking a token answer may need), a store write, the read under
    /// the lock, the lock's release. Anything else is aborted.
    lasting: bool,
}

/// What only a busy session holds: made when work arrives, dropped once all is done.
#[derive(Default)]
struct Work {
    tasks: JoinSet<Done>,
    in_flight: Vec<Flight>,
    outbox: Vec<HttpRequest>,
    inputs: VecDeque<Input>,
    /// Open calls by id (looked up once or twice a call: a map, for a busy session's hundreds).
    calls: HashMap<CallId, Pending>,
    deferred: Vec<Deferred>,
    settled: Vec<Settled>,
    /// Callbacks waiting for their code exchange's outcome.
    callbacks: Vec<Reply<()>>,
    /// Set by `DiscoveryFailed`, cleared when discovery is asked for again.
    discovery_failed: Option<erpnet_auth::DiscoveryError>,
    /// A shared session's token lock, held from a token request until its answer is
    /// checked and stored.
    lease: Option<HeldLease>,
    /// The token request between asking for the lock and its answer.
    gating: Option<RequestId>,
    /// Snapshots to write, in order (one write at a time).
    writes: VecDeque<Box<Snapshot>>,
    /// A write or the re-read after a lost one is under way.
    writing: bool,
    /// Requests emitted while writes were pending: they go out once the state is stored.
    held: Vec<HttpRequest>,
    /// Callers of `close()`, answered when the driver ends.
    closers: Vec<oneshot::Sender<()>>,
    /// The call whose caller is draining the session: its request is handed back to the
    /// caller, to send from its own task.
    inline: Option<CallId>,
    inline_request: Option<HttpRequest>,
}

impl Work {
    fn writes_pending(&self) -> bool {
        self.writing || !self.writes.is_empty()
    }

    /// Whether the driver's task has anything to wait for or to finish. Open calls alone
    /// are not: each waits for a request in flight, the timer, or its own caller.
    fn needs_task(&self) -> bool {
        !(self.in_flight.is_empty()
            && self.tasks.is_empty()
            && self.outbox.is_empty()
            && self.inputs.is_empty()
            && self.deferred.is_empty()
            && self.settled.is_empty()
            && self.callbacks.is_empty()
            && self.lease.is_none()
            && self.gating.is_none()
            && !self.writes_pending()
            && self.held.is_empty()
            && self.closers.is_empty())
    }

    fn is_idle(&self) -> bool {
        self.calls.is_empty() && !self.needs_task()
    }
}

/// What wakes the driver's task.
enum Wake {
    Command(Command),
    HungUp,
    Joined(Result<(tokio::task::Id, Done), JoinError>),
    Timer,
}

/// How a client sends and what it is told of, shared by every client of a
/// [`SharedProvider`] that keeps the defaults (one copy, not one per user).
pub(crate) struct Settings {
    pub http: reqwest::Client,
    pub on_persist: Option<PersistHook>,
    pub max_body_bytes: usize,
}

/// The session and all that goes with it, under the hub's lock.
pub(crate) struct Driver {
    session: Session,
    settings: Arc<Settings>,
    shared: Option<SharedSession>,
    provider: Option<SharedProvider>,
    runtime: tokio::runtime::Handle,
    /// The session's next wake-up (Unix ms) and its timer; neither while it has none.
    wake_at: Option<NonZeroU64>,
    timer: Option<Pin<Box<Sleep>>>,
    /// The store's last failure since the last token answer: a call failing for want of
    /// renewal reports it.
    store_error: Option<Box<StoreError>>,
    /// Token requests sent since the last outcome (the span's attempt).
    token_attempt: u32,
    /// Commands for the driver's task, in order.
    commands: VecDeque<Command>,
    /// The events' channel, made at the first subscriber (a session nobody listens to holds
    /// no event buffer).
    events: Option<broadcast::Sender<Event>>,
    /// The driver's task, when it waits.
    waker: Option<Waker>,
    /// The driver has a task (running, waiting, or spawned and about to run).
    task: bool,
    /// A caller's own work started something the driver's task must wait for, or moved the
    /// timer.
    stirred: bool,
    /// The first task has not drained the session yet (a shared session's stored snapshot
    /// is being read): nothing is served but through it.
    loading: bool,
    /// False once the last client handle is gone.
    open: bool,
    /// Closed or hung up: finishing what must finish, taking nothing new.
    closing: bool,
    /// Finished: nothing is taken.
    ended: bool,
    work: Option<Box<Work>>,
}

/// The parts a [`ClientBuilder`](crate::ClientBuilder) hands over.
pub(crate) struct Parts {
    pub session: Session,
    pub settings: Arc<Settings>,
    pub shared: Option<SharedSession>,
    pub provider: Option<SharedProvider>,
}

/// The instant a request is given up at: its deadline, else its timeout counted from now
/// (requests emitted before the session knew the time have no deadline yet); none for an
/// API call.
fn deadline_of(request: &HttpRequest) -> Option<Instant> {
    match (request.deadline, request.timeout_ms) {
        (Some(at), _) => Some(instant_of(at)),
        (None, Some(timeout_ms)) => Some(instant_of(now_ms().saturating_add(timeout_ms))),
        (None, None) => None,
    }
}

impl Driver {
    fn new(parts: Parts, runtime: tokio::runtime::Handle) -> Driver {
        Driver {
            // Until the first task drained it (the session's first requests wait in it).
            loading: true,
            session: parts.session,
            settings: parts.settings,
            shared: parts.shared,
            provider: parts.provider,
            runtime,
            wake_at: None,
            timer: None,
            store_error: None,
            token_attempt: 0,
            commands: VecDeque::new(),
            events: None,
            waker: None,
            // Spawned by `Hub::start`.
            task: true,
            stirred: false,
            open: true,
            closing: false,
            ended: false,
            work: None,
        }
    }

    /// Starts the task when there is none, else wakes it.
    fn stir(&mut self) -> Start {
        if self.ended {
            Start::Nothing
        } else if self.task {
            self.waker.take().map_or(Start::Nothing, Start::Wake)
        } else {
            self.task = true;
            Start::Spawn
        }
    }

    /// After a caller's own work: the task is woken (or started) when something it must
    /// wait for began or the timer moved; an idle session lets go of its work.
    fn start_after_caller(&mut self) -> Start {
        let stirred = std::mem::take(&mut self.stirred);
        if self.ended {
            return Start::Nothing;
        }
        if stirred || (!self.task && self.work.as_ref().is_some_and(|work| work.needs_task())) {
            return self.stir();
        }
        if !self.task && self.work.as_ref().is_some_and(|work| work.is_idle()) {
            self.work = None;
        }
        Start::Nothing
    }

    /// Serves commands, answers and the timer until nothing is ready. Ready once the task
    /// may end: parked (idle, its timer armed to start it again) or closed and finished.
    fn drive(&mut self, cx: &mut Context<'_>, hub: Weak<Hub>) -> Poll<()> {
        loop {
            self.stirred = false;
            let wake = match self.poll_wake(cx) {
                Poll::Ready(wake) => wake,
                Poll::Pending => {
                    if self.closing || self.work.as_ref().is_some_and(|work| work.needs_task()) {
                        return Poll::Pending;
                    }
                    if self.work.as_ref().is_some_and(|work| work.is_idle()) {
                        self.work = None;
                    }
                    if let Some(timer) = self.timer.as_mut() {
                        // Parked, its timer starts it again: no task waits on it meanwhile.
                        let alarm = Waker::from(Arc::new(Alarm(hub.clone())));
                        if timer.as_mut().poll(&mut Context::from_waker(&alarm)).is_ready() {
                            continue;
                        }
                    }
                    self.task = false;
                    self.waker = None;
                    return Poll::Ready(());
                }
            };
            match wake {
                Wake::Command(command) => self.command(command),
                Wake::HungUp => self.begin_closing(None),
                Wake::Joined(joined) => self.joined(joined),
                Wake::Timer => {
                    self.wake_at = None;
                    if let Err(e) = self.session.handle_timeout(now_ms()) {
                        trace::driver_bug(e.code());
                    }
                    self.pump();
                }
            }
            if self.closing {
                if self.work.as_ref().is_some_and(|work| work.is_idle()) {
                    self.work = None;
                }
                if self.finished() {
                    self.task = false;
                    self.end();
                    return Poll::Ready(());
                }
            }
        }
    }

    /// Commands first, then finished tasks, then the timer (not once closing: nothing new
    /// is started then).
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if let Some(command) = self.commands.pop_front() {
            return Poll::Ready(Wake::Command(command));
        }
        if self.commands.capacity() > 0 {
            // An idle session keeps no command slots (each is a command's full size).
            self.commands = VecDeque::new();
        }
        if !self.open && !self.closing {
            return Poll::Ready(Wake::HungUp);
        }
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        if let Some(work) = self.work.as_mut().filter(|work| !work.tasks.is_empty()) {
            if let Poll::Ready(Some(joined)) = work.tasks.poll_join_next_with_id(cx) {
                return Poll::Ready(Wake::Joined(joined));
            }
        }
        if let Some(timer) = self.timer.as_mut().filter(|_| !self.closing) {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
        }
        Poll::Pending
    }

    /// The end: later operations get `Closed`, current subscribers see the end, queued
    /// commands and waiting callers are dropped (they see `Closed`), unfinished tasks are
    /// aborted and a lease still held gives itself back.
    fn end(&mut self) {
        self.ended = true;
        self.closing = true;
        self.waker = None;
        self.events = None;
        self.commands = VecDeque::new();
        self.work = None;
        self.timer = None;
        self.wake_at = None;
    }

    fn work(&mut self) -> &mut Work {
        self.work.get_or_insert_with(Box::default)
    }

    fn spawn(&mut self, request: Option<RequestId>, lasting: bool, task: impl Future<Output = Done> + Send + 'static) {
        let runtime = self.runtime.clone();
        let work = self.work();
        let abort = work.tasks.spawn_on(task, &runtime);
        work.in_flight.push(Flight { abort, request, lasting });
        self.stirred = true;
    }

    /// Installs the snapshot a shared session's store held (or notes why not).
    fn restore(&mut self, config: Arc<erpnet_auth::Config>, stored: Result<Option<String>, StoreError>) {
        let stored = match stored {
            Ok(stored) => stored,
            Err(error) => {
                trace::storage_error(error.code(), "get");
                self.store_error = Some(Box::new(error));
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

    // ----- a caller's own call -----

    /// Opens an API call for a caller that drives it itself: its request, when the
    /// session emits it at once, goes back to the caller.
    fn call(&mut self, ticket: u64, request: ApiRequest, reply: OutcomeSender) -> Result<Next, Error> {
        if self.closing {
            return Err(Error::Closed);
        }
        if self.loading || !self.commands.is_empty() {
            // After the commands before it, as they were asked for.
            return Ok(Next::Queue(request, reply));
        }
        match self.session.call_api(now_ms(), request) {
            Ok(call) => {
                self.open(ticket, call, CallReply::Driven(reply));
                self.work().inline = Some(call);
                self.pump();
                let request = self.inline_request();
                Ok(Next::Driven { call, settings: Arc::clone(&self.settings), request })
            }
            Err(error) => {
                self.pump();
                Err(Error::Refused(error))
            }
        }
    }

    /// Hands in the answer to the request a caller sent for its call; the call's next
    /// request when the session emits it at once (a replay with the current token).
    fn answer(
        &mut self,
        call: CallId,
        id: RequestId,
        kind: RequestKind,
        result: Result<HttpResponse, TransportError>,
    ) -> Option<HttpRequest> {
        self.work().inline = Some(call);
        self.on_answer(id, kind, Some(call), false, result);
        self.inline_request()
    }

    fn inline_request(&mut self) -> Option<HttpRequest> {
        let work = self.work.as_mut()?;
        work.inline = None;
        work.inline_request.take()
    }

    /// A call's caller went away: see [`Hub::abandon`].
    fn abandon(&mut self, ticket: u64, sending: Option<RequestId>) {
        if self.ended {
            return;
        }
        if let Some(at) = self.commands.iter().position(|command| command.ticket() == Some(ticket)) {
            // Not taken yet: it never will be.
            drop(self.commands.remove(at));
            return;
        }
        let now = now_ms();
        let open = self.work.as_ref().and_then(|w| w.calls.iter().find(|(_, p)| p.ticket == ticket));
        // A request handed over that its caller did not take is answered as one it sent.
        let handed = open.and_then(|(_, pending)| match &pending.reply {
            CallReply::Driven(reply) => reply.take_request().map(|request| request.id),
            _ => None,
        });
        if let Some(call) = open.map(|(call, _)| *call) {
            if let Err(e) = self.session.cancel_call(now, call) {
                trace::driver_bug(e.code());
            }
        }
        // Once closing nothing more is handed to the session (as for the requests aborted
        // then).
        for id in sending.into_iter().chain(handed).filter(|_| !self.closing) {
            if let Err(e) = self.session.handle_transport_error(now, id, TransportError::Other) {
                trace::driver_bug(e.code());
            }
        }
        self.pump();
    }

    // ----- the driver's task -----

    fn command(&mut self, command: Command) {
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
                Err(error) => reply.send(Err(Error::Refused(error))),
            },
            Command::UserInfo { ticket, reply } => match self.session.fetch_user_info(now) {
                Ok(call) => self.open(ticket, call, CallReply::Claims(reply)),
                Err(error) => drop(reply.send(Err(Error::Usage(error)))),
            },
            Command::Profile { ticket, reply } => {
                // The Profile site comes from the instance's auto-discovery: wait for it.
                if self.session.is_discovering_sites() {
                    self.work().deferred.push(Deferred::Profile { ticket, reply });
                } else {
                    self.run_deferred(now, Deferred::Profile { ticket, reply });
                }
            }
            Command::IsSignedIn(reply) => drop(reply.send(self.session.is_signed_in())),
            Command::Claims(reply) => drop(reply.send(self.session.claims().cloned())),
            Command::Snapshot(reply) => drop(reply.send(Ok(self.session.snapshot()))),
            Command::Close(reply) => return self.begin_closing(Some(reply)),
        }
        self.pump();
    }

    fn open(&mut self, ticket: u64, call: CallId, reply: CallReply) {
        self.work().calls.insert(call, Pending { ticket, reply, sends: 0, last_status: 0 });
    }

    /// A shared session reads the store before a callback (the sign-in may have begun in
    /// another process, which stored its pending authorization) and before a sign-out (so
    /// that it ends the latest tokens, and its write is not refused as stale).
    fn read_then(&mut self, now: u64, deferred: Deferred) {
        let Some(shared) = &self.shared else { return self.wait_for_provider(now, deferred) };
        let store = Arc::clone(&shared.store);
        let key = shared.key.clone();
        let deferred = Box::new(deferred);
        self.spawn(None, false, async move {
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
        if let Err(e) = self.session.discover(now) {
            trace::driver_bug(e.code());
        }
        let work = self.work();
        work.discovery_failed = None;
        work.deferred.push(deferred);
    }

    /// Runs the deferred commands whose wait is over; true when one ran.
    fn release_deferred(&mut self) -> bool {
        let ready = self.session.is_provider_ready();
        let sites_known = !self.session.is_discovering_sites();
        let Some(work) = self.work.as_mut().filter(|work| !work.deferred.is_empty()) else { return false };
        work.deferred.retain(|d| !d.is_abandoned());
        let failed = work.discovery_failed.is_some();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut work.deferred).into_iter().partition(|d| match d {
            Deferred::Profile { .. } => sites_known,
            _ => ready || failed,
        });
        work.deferred = waiting;
        let ran = !due.is_empty();
        let now = now_ms();
        for deferred in due {
            self.run_deferred(now, deferred);
        }
        ran
    }

    fn run_deferred(&mut self, now: u64, deferred: Deferred) {
        let failed =
            self.work.as_ref().and_then(|w| w.discovery_failed.clone()).filter(|_| !self.session.is_provider_ready());
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
                    Ok(()) => self.work().callbacks.push(reply),
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
        self.work().settled.push(reply);
    }

    fn release_settled(&mut self) {
        let Some(work) = self.work.as_mut() else { return };
        if work.settled.is_empty() || work.writes_pending() {
            return;
        }
        for reply in std::mem::take(&mut work.settled) {
            reply.send();
        }
    }

    /// Drains the session after a command or input, carries out what it asked for, hands
    /// in what is already known (signature verdicts, requests not to be sent), runs the
    /// commands whose wait is over, and so on until nothing is left; then re-arms the timer.
    fn pump(&mut self) {
        loop {
            self.drain();
            let Some(work) = self.work.as_mut() else { return };
            for request in std::mem::take(&mut work.outbox) {
                self.dispatch(request);
            }
            let input = self.work.as_mut().and_then(|w| w.inputs.pop_front());
            if let Some(input) = input {
                self.apply(input);
                continue;
            }
            if self.release_deferred() {
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
                Output::Http(request) => self.work().outbox.push(request),
                Output::Persist(snapshot) => self.persist(snapshot),
                Output::VerifySignature(check) => {
                    // Only with `host_verifies_signatures(true)`: answered with the crate's
                    // own verifier, as a host with another crypto library would.
                    let valid = check.verify_in_rust();
                    self.work().inputs.push_back(Input::Signature(check.id, valid));
                }
                Output::Event(event) => self.on_event(event),
                Output::WaitUntil(at) => return self.arm(Some(at)),
                Output::Idle => return self.arm(None),
            }
        }
    }

    /// Sets the timer to the session's next wake-up; no timer (and no memory for one) while
    /// it has none.
    fn arm(&mut self, at: Option<u64>) {
        // A time at the epoch is as due as one just after it.
        let at = at.map(|at| NonZeroU64::MIN.saturating_add(at.saturating_sub(1)));
        if at == self.wake_at && (at.is_none() || self.timer.is_some()) {
            return;
        }
        self.wake_at = at;
        match (at, self.timer.as_mut()) {
            (None, _) => self.timer = None,
            (Some(at), Some(timer)) => timer.as_mut().reset(instant_of(at.get())),
            (Some(at), None) => {
                // The caller draining the session may be on another runtime, or on none.
                let _runtime = self.runtime.enter();
                self.timer = Some(Box::pin(tokio::time::sleep_until(instant_of(at.get()))));
            }
        }
        // The task must see the new time (a parked one registers its alarm again).
        self.stirred = true;
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
        let listened = self.events.as_ref().is_some_and(|sender| sender.receiver_count() > 0);
        if let Event::CallCompleted { call, request, response } = event {
            // The answer goes to its caller; a copy only for the event's subscribers.
            let copy = listened.then(|| response.clone());
            if let Some(Pending { reply: CallReply::Api(reply) | CallReply::Driven(reply), .. }) = self.take_call(call)
            {
                reply.send(Ok(response));
            }
            if let Some(response) = copy {
                self.publish(Event::CallCompleted { call, request, response });
            }
            return;
        }
        match &event {
            Event::CallFailed { call, error } => {
                if let Some(pending) = self.take_call(*call) {
                    let error = self.failure(error.clone());
                    pending.reply.fail(error);
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
                if let Some(work) = self.work.as_mut() {
                    for reply in std::mem::take(&mut work.callbacks) {
                        work.settled.push(Settled::Callback(reply, Ok(())));
                    }
                }
            }
            Event::SignInFailed { error } => {
                self.token_attempt = 0;
                if let Some(work) = self.work.as_mut() {
                    for reply in std::mem::take(&mut work.callbacks) {
                        work.settled.push(Settled::Callback(reply, Err(Error::SignIn(error.clone()))));
                    }
                }
            }
            Event::DiscoveryFailed { error } => self.work().discovery_failed = Some(error.clone()),
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
        self.publish(event);
    }

    fn publish(&self, event: Event) {
        if let Some(sender) = self.events.as_ref().filter(|sender| sender.receiver_count() > 0) {
            // No receiver left is not an error: events are offered, not owed.
            let _ = sender.send(event);
        }
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
            (CallFailure::RenewalUnavailable(_), Some(store)) => Error::Store((**store).clone()),
            _ => Error::Failed(failure),
        }
    }

    fn claims_answer(&mut self, call: CallId, result: Result<Map<String, Value>, Error>) {
        if let Some(Pending { reply: CallReply::Claims(reply), .. }) = self.take_call(call) {
            drop(reply.send(result));
        }
    }

    fn take_call(&mut self, call: CallId) -> Option<Pending> {
        self.work.as_mut()?.calls.remove(&call)
    }

    // ----- requests -----

    fn dispatch(&mut self, request: HttpRequest) {
        if self.closing && !matches!(request.kind, RequestKind::Revocation | RequestKind::Keys) {
            // The session ends: nothing new starts (a token request not sent yet is never
            // sent), except a revocation and the keys that checking a token answer needs.
            trace::not_sent(request.id.0, "closing");
            return;
        }
        if self.shared.is_some() {
            let work = self.work();
            // Requests wait for the state before them to be stored, so that what they use is
            // what the other processes read.
            if work.writes_pending() {
                work.held.push(request);
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
        let Some(lease_ms) = self.session.token_lease_ms(request.id) else {
            // No longer sendable (answered, abandoned): answered like any unsent request.
            self.work().inputs.push_back(Input::Answer(request.id, Err(TransportError::Other)));
            return;
        };
        let id = request.id;
        let work = self.work();
        work.gating = Some(id);
        if work.lease.is_some() {
            return self.read_under_lock(request);
        }
        let Some(shared) = &self.shared else { return };
        let store = Arc::clone(&shared.store);
        let name = shared.lock_name();
        // Not lasting: a driver that ends stops waiting, and a lease granted after that
        // gives itself back.
        self.spawn(Some(id), false, async move {
            let lease = Duration::from_millis(lease_ms);
            // As long as a holder may keep it, and a second more.
            let wait = lease + Duration::from_secs(1);
            let started = tokio::time::Instant::now();
            let taken = take_lock(store, name, lease, wait).await;
            let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            trace::lock_wait(waited_ms, if taken.is_ok() { "taken" } else { "failed" });
            Done::Locked { request, taken }
        });
    }

    fn on_locked(&mut self, request: HttpRequest, taken: Result<HeldLease, StoreError>) {
        match taken {
            Ok(lease) => {
                self.work().lease = Some(lease);
                if self.closing {
                    // Taken too late: given back once this drain is over.
                    self.not_sent(request.id, TransportError::Other);
                } else {
                    self.read_under_lock(request);
                }
            }
            Err(error) => {
                // Nothing was sent: the session backs off and tries again.
                trace::storage_error(error.code(), "lock");
                self.store_error = Some(Box::new(error));
                self.not_sent(request.id, TransportError::Connect);
            }
        }
    }

    /// Holding the lock: the stored snapshot (newer tokens may have arrived), then send.
    fn read_under_lock(&mut self, request: HttpRequest) {
        let Some(shared) = &self.shared else { return };
        let store = Arc::clone(&shared.store);
        let key = shared.key.clone();
        self.spawn(Some(request.id), true, async move {
            let stored = store.get(&key).await;
            Done::Gate { request, stored }
        });
    }

    fn on_gate(&mut self, request: HttpRequest, stored: Result<Option<String>, StoreError>) {
        let id = request.id;
        let stored = match stored {
            Ok(stored) => stored,
            Err(error) => {
                trace::storage_error(error.code(), "get");
                self.store_error = Some(Box::new(error));
                return self.not_sent(id, TransportError::Connect);
            }
        };
        if self.closing {
            return self.not_sent(id, TransportError::Other);
        }
        if let Some(json) = stored {
            self.adopt(&json);
        }
        let covered = self
            .work
            .as_ref()
            .and_then(|w| w.lease.as_ref())
            .is_some_and(|lease| self.session.lease_covers(id, lease.expires_at_ms()));
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
        let work = self.work();
        work.gating = None;
        work.inputs.push_back(Input::Answer(id, Err(error)));
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
            if let Some(pending) = self.work.as_mut().and_then(|w| w.calls.get_mut(&call)) {
                pending.sends += 1;
                if pending.sends > 1 {
                    trace::resent(call.0, pending.last_status, pending.sends);
                }
            }
        }
        let request = match (kind, call, self.work.as_mut()) {
            (RequestKind::Api, Some(call), Some(work)) => {
                if work.inline == Some(call) && work.inline_request.is_none() {
                    // The caller draining the session sends its own call's request.
                    work.inline_request = Some(request);
                    return;
                }
                match work.calls.get(&call).map(|pending| &pending.reply) {
                    // Its caller waits: it sends the request from its own task.
                    Some(CallReply::Driven(reply)) => match reply.hand(request) {
                        None => return,
                        Some(request) => request,
                    },
                    _ => request,
                }
            }
            _ => request,
        };
        let deadline = deadline_of(&request);
        let http = self.settings.http.clone();
        let max_body_bytes = self.settings.max_body_bytes;
        let provider = self.provider.clone().filter(|_| {
            matches!(kind, RequestKind::Discovery | RequestKind::Keys | RequestKind::Sites)
                && request.method == Method::Get
        });
        let shared = provider.is_some();
        let span = (kind == RequestKind::Token).then(|| {
            self.token_attempt += 1;
            trace::TokenSpan::start(trace::grant_of(request.body.as_deref()), self.token_attempt, id.0)
        });
        let lasting = matches!(kind, RequestKind::Token | RequestKind::Revocation | RequestKind::Keys);
        self.spawn(Some(id), lasting, async move {
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
    }

    fn joined(&mut self, joined: Result<(tokio::task::Id, Done), JoinError>) {
        let task = match &joined {
            Ok((task, _)) => *task,
            Err(error) => error.id(),
        };
        let flight = self.work.as_mut().and_then(|work| {
            let at = work.in_flight.iter().position(|f| f.abort.id() == task)?;
            Some(work.in_flight.swap_remove(at))
        });
        let done = match joined {
            Ok((_, done)) => done,
            Err(_) => {
                // Aborted (closing) or panicked: its request is answered all the same.
                if let Some(id) = flight.and_then(|f| f.request) {
                    let work = self.work();
                    if work.gating == Some(id) {
                        work.gating = None;
                    }
                    if !self.closing {
                        self.work().inputs.push_back(Input::Answer(id, Err(TransportError::Other)));
                        self.pump();
                    }
                }
                return;
            }
        };
        match done {
            Done::Answer { id, kind, call, shared, result } => self.on_answer(id, kind, call, shared, result),
            Done::Locked { request, taken } => self.on_locked(request, taken),
            Done::Gate { request, stored } => self.on_gate(request, stored),
            Done::Written { generation, result } => self.on_written(generation, result),
            Done::Reread(result) => self.on_reread(result),
            Done::Fresh(deferred, stored) => {
                match stored {
                    Ok(Some(json)) => self.adopt(&json),
                    Ok(None) => {}
                    Err(error) => {
                        // Carried on with what this process knows.
                        trace::storage_error(error.code(), "get");
                        self.store_error = Some(Box::new(error));
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
            if let Some(pending) = self.work.as_mut().and_then(|w| w.calls.get_mut(&call)) {
                pending.last_status = response.status;
            }
            if response.status == 429 {
                trace::throttled(call.0, id.0);
            }
        }
        let work = self.work();
        if kind == RequestKind::Token {
            work.gating = None;
        }
        if work.inputs.is_empty() {
            // Nothing before it: handed in at once (no queue to fill and empty again).
            self.apply(Input::Answer(id, result));
        } else {
            work.inputs.push_back(Input::Answer(id, result));
        }
        self.pump();
        if shared {
            if let Some(provider) = &self.provider {
                provider.learn(self.session.provider_state());
            }
        }
    }

    // ----- persistence -----

    fn persist(&mut self, snapshot: Box<Snapshot>) {
        if let Some(hook) = &self.settings.on_persist {
            hook(&snapshot);
        }
        if self.shared.is_some() {
            self.work().writes.push_back(snapshot);
            self.next_write();
        }
    }

    fn next_write(&mut self) {
        let Some(shared) = &self.shared else { return };
        let Some(work) = self.work.as_mut().filter(|w| !w.writing) else { return };
        let Some(snapshot) = work.writes.pop_front() else { return };
        work.writing = true;
        let store = Arc::clone(&shared.store);
        let key = shared.key.clone();
        let write = Write { generation: snapshot.generation(), base_generation: snapshot.base_generation() };
        let json = snapshot.to_json();
        self.spawn(None, true, async move {
            let result = store.set(&key, &json, Some(write)).await;
            Done::Written { generation: write.generation, result }
        });
    }

    fn on_written(&mut self, generation: u64, result: Result<bool, StoreError>) {
        let Some(shared) = &self.shared else { return };
        match result {
            Ok(true) => self.work().writing = false,
            Ok(false) => {
                // Another process stored newer tokens meanwhile: read and adopt them (a lost
                // race is no logout). Requests keep waiting until they are adopted.
                trace::storage_conflict(generation);
                let store = Arc::clone(&shared.store);
                let key = shared.key.clone();
                self.spawn(None, true, async move { Done::Reread(store.get(&key).await) });
                return;
            }
            Err(error) => {
                self.work().writing = false;
                trace::storage_error(error.code(), "set");
                self.store_error = Some(Box::new(error));
            }
        }
        self.after_write();
    }

    fn on_reread(&mut self, result: Result<Option<String>, StoreError>) {
        self.work().writing = false;
        match result {
            Ok(Some(json)) => self.adopt(&json),
            Ok(None) => {}
            Err(error) => {
                trace::storage_error(error.code(), "get");
                self.store_error = Some(Box::new(error));
            }
        }
        self.after_write();
    }

    /// The next write, or, when all are stored, the requests and replies that waited.
    fn after_write(&mut self) {
        self.next_write();
        let work = self.work();
        if work.writes_pending() {
            return;
        }
        for request in std::mem::take(&mut work.held) {
            self.dispatch(request);
        }
        self.pump();
    }

    /// The token lock is released once no token request is between lock and answer, the
    /// answer's ID token is checked, and its tokens are stored: the next holder then reads
    /// the new tokens, never the rotated ones.
    fn release_lease_when_done(&mut self) {
        let checking = self.session.is_checking_token_answer();
        let Some(work) = self.work.as_mut() else { return };
        if work.lease.is_none() || work.gating.is_some() || work.writes_pending() || checking {
            return;
        }
        self.release_lease();
    }

    fn release_lease(&mut self) {
        let Some(lease) = self.work.as_mut().and_then(|w| w.lease.take()) else { return };
        self.spawn(None, true, async move { Done::Unlocked(lease.release().await) });
    }

    // ----- the end -----

    /// Closed (`closer` waits for the end) or hung up: later commands get `Closed`, and so
    /// do the callers waiting now (their calls are cancelled in the session, so that
    /// nothing is sent for them after a refresh); requests that need not finish are
    /// aborted. A token request or a revocation in flight, the writes and the lock's release
    /// run on.
    fn begin_closing(&mut self, closer: Option<oneshot::Sender<()>>) {
        if let Some(closer) = closer {
            self.work().closers.push(closer);
        }
        if self.closing {
            return;
        }
        self.closing = true;
        for command in std::mem::take(&mut self.commands) {
            if let Command::Close(closer) = command {
                self.work().closers.push(closer);
            }
            // Any other command is dropped: its caller sees `Closed`.
        }
        let Some(work) = self.work.as_mut() else { return };
        let mut calls: Vec<_> = std::mem::take(&mut work.calls).into_iter().collect();
        // In the order they were made.
        calls.sort_unstable_by_key(|(call, _)| *call);
        let callbacks = std::mem::take(&mut work.callbacks);
        // Their callers see `Closed`.
        work.deferred.clear();
        for flight in work.in_flight.iter().filter(|f| !f.lasting) {
            flight.abort.abort();
        }
        let now = now_ms();
        for (call, pending) in calls {
            if let Err(e) = self.session.cancel_call(now, call) {
                trace::driver_bug(e.code());
            }
            pending.reply.fail(Error::Closed);
        }
        for reply in callbacks {
            drop(reply.send(Err(Error::Closed)));
        }
        self.pump();
    }

    /// Closing: true once nothing lasting is in flight, all is stored and the lock is given
    /// back (a lease still held now is released, and waited for).
    fn finished(&mut self) -> bool {
        let Some(work) = self.work.as_ref() else { return true };
        if work.in_flight.iter().any(|f| f.lasting) || work.writes_pending() {
            return false;
        }
        if work.lease.is_some() {
            self.release_lease();
            return false;
        }
        true
    }
}
