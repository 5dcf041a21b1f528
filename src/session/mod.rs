//! The session machine. [`Session`] coordinates the pipelines, each a sub-object that owns
//! its state (private) and returns outcomes that the session turns into outputs
//! (docs/architecture.md draws them):
//!
//! | pipeline | module |
//! | --- | --- |
//! | provider: metadata, signing keys, documents from elsewhere | `provider` |
//! | ERP.net instance sites | `sites` |
//! | sign-in: the pending authorization, the code's redemption | `sign_in` |
//! | ID token checks (front channel, code exchange, refresh) | `id_tokens` |
//! | renewal | `renewal` |
//! | calls | `calls` |
//! | tokens, their generations, the ID token and its claims | `tokens` |
//! | outstanding requests, their deadlines, the token slot | `requests` |
//!
//! The public face, each command or input a thin dispatcher, is `api`. This root is the
//! machine under it: every command and input enters through `enter` (the loop contract, the
//! clock), changes state, and leaves through `settle`, which fires due timers, advances held
//! ID token checks, starts a queued exchange, and releases or fails waiting calls. Each
//! question a transition asks has one answer here (`token_request_allowed`,
//! `may_start_renewal`, `tokens_on_the_way`, `usable_token`), and the next wake-up is the
//! minimum over the [`Timer`] table.

mod api;
mod calls;
mod id_tokens;
mod provider;
mod renewal;
mod requests;
mod sign_in;
mod sites;
mod tokens;

use std::collections::VecDeque;
use std::sync::Arc;

pub use calls::ApiRequest;
use calls::Calls;
use id_tokens::{Verdict, Wait};
pub use provider::ProviderState;
use provider::{Discovery, Documents, Provider, Secondhand};
use renewal::{Renewal, Renewed};
use requests::{Outgoing, Purpose, Requests};
use sign_in::{Exchange, Redeemed, SignIn};
use sites::{Discovered, Sites};
use tokens::{Installed, Tokens};

use crate::config::{Config, GrantKind};
use crate::discovery;
use crate::http::{CallId, HttpResponse, RequestId, RequestKind, TransportError};
use crate::id_token::IdTokenClaims;
use crate::output::{CallFailure, Event, Output, SignInRequiredReason};
use crate::random::RandomSource;
use crate::secret::{AccessToken, RefreshToken};
use crate::signature::HostChecks;
use crate::snapshot::{Snapshot, SNAPSHOT_VERSION};
use crate::token::TokenGrant;
use crate::usage::UsageError;
use crate::warning::Warning;

/// The session's timers. The next wake-up is the soonest of their deadlines; `settle` fires
/// the due ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The next attempt after a transient renewal failure.
    RenewalRetry,
    /// Renew a token nearing expiry (or refused by the API) before a call fails.
    ProactiveRenewal,
    /// A token, discovery, auto-discovery, key-set or revocation request past its deadline
    /// counts as timed out.
    RequestDeadline,
    /// An API call answered 429 goes back into the queue.
    ThrottleRetry,
}

impl Timer {
    const ALL: [Timer; 4] =
        [Timer::RequestDeadline, Timer::RenewalRetry, Timer::ProactiveRenewal, Timer::ThrottleRetry];
}

/// The slack, in milliseconds, of a shared store's token lock beyond what a token request
/// needs (its deadline, then a key-set fetch): [`Session::token_lease_ms`] asks for a lease
/// that ends this long after that, and [`Session::lease_covers`] accepts a held lease that
/// still ends half of it after that (the other half tolerates a host clock a little behind
/// the session's latest `now`).
pub const TOKEN_LEASE_MARGIN_MS: u64 = 5_000;

/// One user's (or one application's) authorization state: the sans-IO machine.
///
/// Methods fall into four kinds: getters; commands (`sign_in`, `handle_callback`,
/// `call_api`, `fetch_user_info`, `cancel_call`, `sign_out`, `discover`); inputs
/// (`handle_response`, `handle_transport_error`, `handle_timeout`, `handle_snapshot`); and
/// [`poll`](Self::poll). After every command or input, drain `poll()` until it returns
/// [`Output::WaitUntil`] or [`Output::Idle`]; the next command or input before that is
/// refused with [`UsageError::NotDrained`]. A command or input that returns `Err` changed
/// nothing and queued nothing.
pub struct Session {
    config: Arc<Config>,
    rng: Box<dyn RandomSource + Send>,
    now: u64,
    /// False until the first input brings the time: requests emitted before (the discovery a
    /// new session starts with) get their deadline counted from that first input.
    clock_started: bool,
    undrained: bool,
    outputs: VecDeque<Output>,
    requests: Requests,
    provider: Provider,
    sites: Sites,
    sign_in: SignIn,
    renewal: Renewal,
    calls: Calls,
    tokens: Tokens,
    /// Signature checks handed to the host, and its verdicts.
    host_checks: HostChecks,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.config.client_id)
            .field("now", &self.now)
            .field("signed_in", &self.tokens.is_signed_in())
            .field("sign_in_pending", &self.sign_in.pending().is_some())
            .field("open_calls", &self.calls.len())
            .field("token_request_in_flight", &self.requests.slot().is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The one way a session comes to be: the process's provider state, then the snapshot,
    /// then discovery of whatever is still unknown. The snapshot's owner was checked.
    fn assemble(
        config: Arc<Config>,
        provider: &ProviderState,
        snapshot: Option<Snapshot>,
        rng: impl RandomSource + Send + 'static,
    ) -> Session {
        let mut session = Session {
            provider: Provider::new(&config),
            tokens: Tokens::new(config.reference_token.clone()),
            config,
            rng: Box::new(rng),
            now: 0,
            clock_started: false,
            undrained: false,
            outputs: VecDeque::new(),
            requests: Requests::default(),
            sites: Sites::new(),
            sign_in: SignIn::default(),
            renewal: Renewal::default(),
            calls: Calls::default(),
            host_checks: HostChecks::default(),
        };
        session.provider.take_secondhand(
            provider.documents(),
            Secondhand::Process,
            &session.config,
            &mut session.sites,
        );
        if let Some(snapshot) = snapshot {
            session.adopt(snapshot);
        }
        // A reference token needs nothing from the identity server.
        if session.config.grant != GrantKind::ReferenceToken && !session.provider.is_ready() {
            session.start_discovery();
        }
        if session.sites.known().is_none() {
            session.start_sites_fetch(false);
        }
        session
    }

    // ----- the loop's frame -----

    /// The durable state, as it would be persisted now.
    pub fn snapshot(&self) -> Snapshot {
        let (persist, provider) = (self.config.persist_tokens, self.config.snapshot_provider);
        let documents = self.provider.documents(&self.sites);
        let (generation, base_generation) = self.tokens.stored_generations();
        Snapshot {
            version: SNAPSHOT_VERSION,
            issuer: self.config.issuer().to_owned(),
            client_id: self.config.client_id.clone(),
            metadata: documents.metadata.filter(|_| provider),
            pending: self.sign_in.pending().cloned(),
            sites: documents.sites.filter(|_| provider),
            generation,
            base_generation,
            tokens: self.tokens.stored().filter(|_| persist).cloned(),
            id_token: self.tokens.id_token().filter(|_| persist).cloned(),
            jwks: documents.keys.filter(|_| provider),
        }
    }

    /// The next output. Drain until [`Output::WaitUntil`] or [`Output::Idle`].
    pub fn poll(&mut self) -> Output {
        if let Some(output) = self.outputs.pop_front() {
            return output;
        }
        self.undrained = false;
        match self.next_wakeup() {
            Some(at) => Output::WaitUntil(at),
            None => Output::Idle,
        }
    }

    /// Every command and input starts here: the contract check and the clock, which never
    /// runs backwards.
    fn enter(&mut self, now: u64) -> Result<(), UsageError> {
        if self.undrained || !self.outputs.is_empty() {
            return Err(UsageError::NotDrained);
        }
        if !self.clock_started {
            self.clock_started = true;
            self.requests.start_clock(now);
        }
        self.now = self.now.max(now);
        Ok(())
    }

    /// Every command and input ends here: due timers fire, held ID token checks move on, a
    /// queued code exchange takes the free slot, waiting calls are released or failed.
    fn settle(&mut self) {
        // Timers first: a deadline may free the slot or end a key fetch that a held ID token
        // waits for. A renewal timer does not take the slot from a queued exchange.
        for timer in Timer::ALL {
            if self.timer_deadline(timer).is_some_and(|at| at <= self.now) {
                self.fire(timer);
            }
        }
        self.advance_id_token_checks();
        if self.requests.slot().is_none() {
            if let Some(exchange) = self.sign_in.take_queued() {
                self.start_exchange(exchange);
            }
        }
        self.release_waiting();
        #[cfg(any(test, feature = "check-invariants"))]
        self.check_invariants();
        self.undrained = true;
    }

    fn emit(&mut self, request: Outgoing, purpose: Purpose) -> RequestId {
        let timeout_ms = self.config.timing.request_timeout_ms;
        let request = self.requests.emit(request, purpose, self.now, self.clock_started, timeout_ms);
        let id = request.id;
        self.outputs.push_back(Output::Http(request));
        id
    }

    fn persist(&mut self) {
        let snapshot = self.snapshot();
        self.tokens.persisted();
        self.outputs.push_back(Output::Persist(Box::new(snapshot)));
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    // ----- the questions, each answered once -----

    /// Is the token slot free for a new token request?
    fn token_request_allowed(&self) -> bool {
        self.requests.slot().is_none() && self.provider.is_ready()
    }

    /// Could a renewal (refresh, or client credentials) start now?
    fn may_start_renewal(&self) -> bool {
        self.token_request_allowed()
            && self.renewal.is_idle()
            // A code waiting for the slot goes first: its tokens replace these anyway.
            && !self.sign_in.is_queued()
            && self.can_renew()
    }

    /// May a call wait for tokens: will they arrive without a new command?
    fn tokens_on_the_way(&self) -> bool {
        self.sign_in.is_underway()
            || self.renewal.is_underway()
            || (self.can_renew() && self.provider.is_ready_or_coming())
    }

    fn can_renew(&self) -> bool {
        self.config.grant == GrantKind::ClientCredentials || self.tokens.refresh_token().is_some()
    }

    /// The access token, if it may be sent now.
    fn usable_token(&self) -> Option<AccessToken> {
        self.tokens.usable(self.now, &self.config.timing)
    }

    /// A call expected to run longer than the current token lasts, when a renewed token
    /// would last long enough (otherwise renewing cannot help, and the call goes now).
    fn wants_fresher_token(&self, call: CallId) -> bool {
        let Some(duration) = self.calls.get(call).and_then(|c| c.request().expected_duration_ms) else { return false };
        self.tokens.outlived_by(duration, self.now, &self.config.timing) && self.can_renew()
    }

    fn call_limit(&self) -> usize {
        self.config.api_concurrency.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    // ----- the timers -----

    fn timer_deadline(&self, timer: Timer) -> Option<u64> {
        match timer {
            Timer::RequestDeadline => self.requests.next_deadline(),
            Timer::RenewalRetry => self.renewal.retry_at(),
            Timer::ThrottleRetry => self.calls.next_throttle_end(),
            Timer::ProactiveRenewal if self.may_start_renewal() => {
                self.tokens.renewal_due(self.now, &self.config.timing, self.calls.last_sent_at())
            }
            Timer::ProactiveRenewal => None,
        }
    }

    /// The soonest timer still ahead. A due timer that could not fire (the slot is held by
    /// an abandoned request) waits for that answer, not for a time.
    fn next_wakeup(&self) -> Option<u64> {
        Timer::ALL.into_iter().filter_map(|t| self.timer_deadline(t)).filter(|at| *at > self.now).min()
    }

    fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::RequestDeadline => {
                for id in self.requests.due(self.now) {
                    if let Some(purpose) = self.requests.time_out(id) {
                        self.on_answer(id, purpose, Err(TransportError::Timeout));
                    }
                }
            }
            Timer::RenewalRetry => {
                self.renewal.backoff_over();
                self.start_renewal();
            }
            Timer::ProactiveRenewal => self.start_renewal(),
            Timer::ThrottleRetry => self.calls.release_throttled(self.now),
        }
    }

    // ----- answers, to the pipeline they belong to -----

    fn on_answer(&mut self, id: RequestId, purpose: Purpose, answer: Result<HttpResponse, TransportError>) {
        match purpose {
            Purpose::Discovery => match self.provider.on_discovery(id, answer, &self.config) {
                Some(Discovery::Ready { discovered }) => {
                    if discovered {
                        self.persist();
                    }
                    self.event(Event::ProviderReady { discovered });
                }
                Some(Discovery::Failed(error)) => self.event(Event::DiscoveryFailed { error }),
                None => {}
            },
            Purpose::Sites => match self.sites.on_answer(id, &answer, &self.config) {
                Some(Discovered::Sites { sites, skipped }) => {
                    for site in skipped {
                        self.event(Event::SiteSkipped { site });
                    }
                    self.persist();
                    self.event(Event::SitesDiscovered { sites });
                }
                Some(Discovered::TryLegacy) => self.start_sites_fetch(true),
                None => {}
            },
            Purpose::Keys => {
                if self.provider.on_keys(id, answer) {
                    self.persist();
                }
            }
            Purpose::Exchange => {
                if let Some(redeemed) = self.sign_in.on_answer(id, answer, self.now, &self.config) {
                    self.redeemed(redeemed);
                }
            }
            Purpose::Renewal => {
                let current = self.tokens.refresh_token();
                let renewed = self.renewal.on_answer(id, answer, self.now, &self.config, current, self.rng.as_mut());
                if let Some(renewed) = renewed {
                    self.renewed(renewed);
                }
            }
            Purpose::Call { call, generation } => {
                let tokens = &mut self.tokens;
                let result = self.calls.on_answer(
                    call,
                    id,
                    generation,
                    answer,
                    tokens,
                    &self.config,
                    self.now,
                    self.rng.as_mut(),
                );
                if let Some(result) = result {
                    self.finish_call(call, result);
                }
            }
            // Revocation is best effort (RFC 7009): the tokens are already forgotten.
            Purpose::Revocation | Purpose::Abandoned | Purpose::AbandonedToken | Purpose::TimedOut => {}
        }
    }

    fn redeemed(&mut self, redeemed: Redeemed) {
        match redeemed {
            Redeemed::Tokens { grant, claims, sent_at } => {
                // A new grant: whatever the old one's renewal went through is over.
                self.renewal = Renewal::default();
                let Installed { scope, expires_at } = self.install(*grant, None, claims, sent_at);
                self.event(Event::SignedIn { scope, expires_at });
            }
            Redeemed::Checking => {}
            // The sign-in ends without tokens; calls that waited for it fail (in `settle`).
            Redeemed::Refused(error) => self.event(Event::SignInFailed { error }),
        }
    }

    fn renewed(&mut self, renewed: Renewed) {
        match renewed {
            Renewed::Tokens { grant, used, claims, sent_at } => {
                let Installed { scope, expires_at } = self.install(*grant, used, claims, sent_at);
                self.event(Event::TokensRenewed { scope, expires_at });
            }
            Renewed::Checking | Renewed::Stale => {}
            Renewed::SignInRequired(reason) => self.forget(reason),
            Renewed::Deferred { error, attempt, retry_at } => {
                self.event(Event::RenewalDeferred { error, attempt, retry_at });
            }
            Renewed::GaveUp { error, failure } => {
                self.event(Event::RenewalFailed { error });
                self.fail_waiting(failure);
            }
        }
    }

    /// Installs new tokens, persisted before any use; what the answer had that was sloppy
    /// is reported first.
    fn install(
        &mut self,
        grant: TokenGrant,
        used: Option<RefreshToken>,
        claims: Option<Box<IdTokenClaims>>,
        sent_at: u64,
    ) -> Installed {
        for warning in &grant.warnings {
            self.event(Event::Warning { warning: *warning });
        }
        let installed = self.tokens.install(grant, used, claims.map(|c| *c), sent_at, self.now, &self.config);
        self.persist();
        installed
    }

    /// The tokens are worthless: forgotten and persisted, said once, and the calls that
    /// waited for new ones fail. Later calls are refused as not signed in.
    fn forget(&mut self, reason: SignInRequiredReason) {
        self.tokens.forget();
        self.persist();
        self.event(Event::SignInRequired { reason: reason.clone() });
        self.fail_waiting(CallFailure::SignInRequired(reason));
    }

    /// Ends a call with its one result.
    fn finish_call(&mut self, call: CallId, result: Result<(RequestId, HttpResponse), CallFailure>) {
        let Some(entry) = self.calls.close(call) else { return };
        if let Some(request) = entry.in_flight() {
            self.requests.abandon(request);
        }
        let event = calls::result_event(call, entry.kind(), result, self.tokens.claims());
        self.event(event);
    }

    fn fail_waiting(&mut self, error: CallFailure) {
        for call in self.calls.waiting_ids() {
            self.finish_call(call, Err(error.clone()));
        }
    }

    // ----- starting requests -----

    fn start_discovery(&mut self) {
        let url = discovery::discovery_url(self.config.issuer());
        let id = self.emit(Outgoing::json_get(RequestKind::Discovery, url), Purpose::Discovery);
        self.provider.discovery_sent(id);
    }

    /// Asks the ERP.net instance for its sites (the preset with discovery on).
    fn start_sites_fetch(&mut self, legacy: bool) {
        let Some(url) = Sites::url(&self.config, legacy) else { return };
        let id = self.emit(Outgoing::json_get(RequestKind::Sites, url), Purpose::Sites);
        self.sites.sent(id, legacy);
    }

    /// Fetches the provider's key set unless a fetch is under way or it names none.
    fn start_keys_fetch(&mut self) {
        if self.provider.is_fetching_keys() {
            return;
        }
        let Some(url) = self.provider.jwks_uri().map(str::to_owned) else { return };
        let id = self.emit(Outgoing::json_get(RequestKind::Keys, url), Purpose::Keys);
        self.provider.keys_sent(id, self.now);
    }

    fn start_exchange(&mut self, exchange: Exchange) {
        let Some(endpoint) = self.provider.token_endpoint() else {
            self.sign_in.queue(exchange);
            return;
        };
        let request = Outgoing::form_post(RequestKind::Token, endpoint, exchange.token_request(&self.config));
        let id = self.emit(request, Purpose::Exchange);
        self.sign_in.sent(exchange, id, self.now);
    }

    /// Starts a refresh (or a client-credentials request) when one may start.
    fn start_renewal(&mut self) {
        if !self.may_start_renewal() {
            return;
        }
        let Some(endpoint) = self.provider.token_endpoint() else { return };
        let used = self.tokens.refresh_token().cloned();
        let parts = renewal::token_request(&self.config, used.as_ref());
        let id = self.emit(Outgoing::form_post(RequestKind::Token, endpoint, parts), Purpose::Renewal);
        self.renewal.sent(id, used, self.now);
    }

    /// Sends every waiting call if the token is usable; otherwise makes sure tokens are on
    /// their way, or fails the calls when nothing will bring them.
    fn release_waiting(&mut self) {
        // Calls wait for the instance's sites: their relative URLs resolve against them.
        if !self.calls.has_waiting() || self.sites.in_flight() {
            return;
        }
        if let Some(token) = self.usable_token() {
            // At most `api_concurrency` in flight (an ERP.net session runs one request at a
            // time and refuses more than five waiting); the rest wait in order.
            while self.calls.in_flight() < self.call_limit() {
                let Some(call) = self.calls.peek_waiting() else { break };
                if self.wants_fresher_token(call) {
                    self.start_renewal();
                    if self.renewal.is_underway() {
                        break; // it, and the calls behind it, wait for the renewed token
                    }
                }
                self.calls.next_waiting();
                self.send_call(call, &token);
            }
            return;
        }
        // After a renewal gave up, calls fail at once until its cooldown is over; then the
        // next call tries again.
        self.renewal.resume_if_due(self.now);
        if let Some(failure) = self.renewal.suspended_failure() {
            let failure = failure.clone();
            self.fail_waiting(failure);
            return;
        }
        self.start_renewal();
        if self.tokens_on_the_way() {
            return;
        }
        let reference = self.config.grant == GrantKind::ReferenceToken;
        if !self.provider.is_ready_or_coming() && self.config.grant == GrantKind::ClientCredentials {
            self.fail_waiting(CallFailure::ProviderUnavailable);
        } else if self.tokens.is_signed_in() {
            // An expired or refused access token with no way to renew it is worthless.
            self.forget(if reference {
                SignInRequiredReason::ReferenceTokenRejected
            } else {
                SignInRequiredReason::NoRefreshToken
            });
        } else {
            self.fail_waiting(CallFailure::SignInRequired(if reference {
                SignInRequiredReason::ReferenceTokenRejected
            } else {
                SignInRequiredReason::NotSignedIn
            }));
        }
    }

    fn send_call(&mut self, call: CallId, token: &AccessToken) {
        let resolve = |url: &str| self.sites.resolve(url, &self.config).ok();
        let Some(request) = self.calls.outgoing(call, token, resolve) else { return };
        let id = self.emit(request, Purpose::Call { call, generation: self.tokens.generation() });
        self.calls.sent(call, id, self.now);
    }

    /// Takes a stored snapshot's durable state; true when its tokens differ from the
    /// session's.
    fn adopt(&mut self, mut snapshot: Snapshot) -> bool {
        let documents =
            Documents { metadata: snapshot.metadata.take(), keys: snapshot.jwks.take(), sites: snapshot.sites.take() };
        if !self.provider.take_secondhand(documents, Secondhand::Store, &self.config, &mut self.sites) {
            self.event(Event::Warning { warning: Warning::StoredProviderDataIgnored });
        }
        self.sign_in.restore(snapshot.pending);
        let persist = self.config.persist_tokens;
        self.tokens.adopt(snapshot.tokens, snapshot.id_token, snapshot.generation, persist, self.now)
    }

    // ----- ID tokens held before they are used -----

    /// Moves held ID tokens on: validated, waiting for keys or a signature check, or
    /// refused. A host verdict answers the attempt that follows it and is then forgotten.
    fn advance_id_token_checks(&mut self) {
        let runs = !self.provider.is_fetching_keys();
        self.advance_held_id_tokens();
        if runs {
            self.host_checks.forget_verdicts();
        }
    }

    fn advance_held_id_tokens(&mut self) {
        if self.provider.is_fetching_keys() {
            return; // the keys are on their way
        }
        if let Some(held) = self.sign_in.held(&self.config) {
            let verdict = id_tokens::check(&held, &self.config, &self.provider, &mut self.host_checks, self.now);
            let verdict = self.wait_for(verdict);
            if let Some(redeemed) = self.sign_in.checked(verdict) {
                self.redeemed(redeemed);
            }
        }
        if self.provider.is_fetching_keys() {
            return;
        }
        if let Some(held) = self.renewal.held(&self.config, self.tokens.claims()) {
            let verdict = id_tokens::check(&held, &self.config, &self.provider, &mut self.host_checks, self.now);
            let verdict = self.wait_for(verdict);
            if let Some(renewed) = self.renewal.checked(verdict, self.tokens.refresh_token()) {
                self.renewed(renewed);
            }
        }
    }

    /// Starts what a held ID token waits for: the key set, or the host's verdict.
    fn wait_for(&mut self, verdict: Verdict) -> Verdict {
        match verdict {
            Verdict::Held(Wait::FetchKeys) => {
                self.start_keys_fetch();
                Verdict::Held(Wait::FetchKeys)
            }
            Verdict::Held(Wait::AskHost(check)) => {
                self.outputs.push_back(Output::VerifySignature(check));
                Verdict::Held(Wait::Asked)
            }
            verdict => verdict,
        }
    }

    /// The machine's invariants across its pipelines, checked at the end of every `settle`
    /// in tests and in the simulation (feature `check-invariants`). A violation is a bug in
    /// this module.
    #[cfg(any(test, feature = "check-invariants"))]
    fn check_invariants(&self) {
        self.requests.check();
        self.renewal.check();
        let slot = self.requests.slot();
        if let Some(request) = self.renewal.request() {
            assert_eq!(slot, Some(request), "a renewal in flight without the slot");
            assert_eq!(self.requests.purpose(request), Some(Purpose::Renewal));
        }
        if let Some(request) = self.sign_in.request() {
            assert_eq!(slot, Some(request), "an exchange in flight without the slot");
            assert_eq!(self.requests.purpose(request), Some(Purpose::Exchange));
        }
        if self.sign_in.is_queued() {
            assert!(slot.is_some(), "a queued exchange with the slot free after settle");
        }
        if self.calls.has_waiting() && self.calls.in_flight() < self.call_limit() && !self.sites.in_flight() {
            let head_wants_fresher = self.calls.peek_waiting().is_some_and(|c| self.wants_fresher_token(c));
            assert!(
                self.usable_token().is_none() || (head_wants_fresher && self.renewal.is_underway()),
                "a call waits although the token is usable and a slot is free"
            );
            assert!(self.tokens_on_the_way(), "a call waits for tokens nothing will bring");
        }
        assert!(self.calls.in_flight() <= self.call_limit(), "more calls in flight than the limit");
        assert!(self.calls.consistent(), "the waiting queue disagrees with the call phases or is out of call order");
        for (call, request) in self.calls.in_flight_requests() {
            let purpose = self.requests.purpose(request);
            assert!(
                matches!(purpose, Some(Purpose::Call { call: c, .. }) if c == call),
                "call {call:?} in flight without its request"
            );
        }
        for call in self.requests.calls() {
            assert!(self.calls.get(call).is_some(), "a live request for a closed call {call:?}");
        }
        let (discovery, keys) = self.provider.requests();
        if let Some(request) = keys {
            assert_eq!(self.requests.purpose(request), Some(Purpose::Keys));
        }
        if let Some(request) = discovery {
            assert_eq!(self.requests.purpose(request), Some(Purpose::Discovery));
        }
    }
}
