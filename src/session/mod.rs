//! The session machine.
//!
//! [`Session`] coordinates five pipelines, each a sub-object that owns its state as one
//! phase value:
//!
//! | pipeline | owner | phases |
//! | --- | --- | --- |
//! | provider | [`provider::Provider`], [`provider::Keys`] | discovery `Idle → InFlight → Idle / Failed`; keys `Idle → Fetching → Idle / Failed` |
//! | sign-in | [`sign_in::SignIn`] | pending authorization, then `Idle → CheckingFrontChannel → Queued → Exchanging → CheckingIdToken → Idle` |
//! | renewal | [`renewal::Renewal`] | `Idle → InFlight → (CheckingIdToken) → Idle`, `Backoff { until }`, `Suspended` |
//! | calls | [`calls::Calls`] | per call `Waiting ⇄ InFlight`, then closed exactly once |
//! | tokens | `Session` | the current tokens, their generation, the ID token and its claims |
//!
//! The token slot (`token_slot`) is the single-flight rule: at most one token request (code
//! exchange or renewal, or an abandoned one whose answer is still outstanding) at a time.
//!
//! ```text
//!                  sign_in           handle_callback            slot free           answer
//!   (no pending) ─────────► pending ────────────────► redemption ────────► Exchanging ────► signed in
//!                                                                                              │
//!        calls: Waiting ──usable token──► InFlight ──answer──► closed                         │
//!                  ▲                          │ 401 for the current token                      ▼
//!                  └──────── replay once ◄────┴──────── renewal: Idle ► InFlight ► Idle ◄── due / 401
//! ```
//!
//! Every command and input enters through [`Session::enter`] (the loop contract, the clock),
//! changes state, and leaves through [`Session::settle`], which advances held ID token
//! checks, starts a queued exchange, fires due timers, and releases or fails waiting calls.
//! Each question a transition asks has one answer here: [`Session::token_request_allowed`],
//! [`Session::may_start_renewal`], [`Session::tokens_on_the_way`], [`Session::usable_token`]
//! and [`Session::next_wakeup`] (the minimum over the [`Timer`] table).

mod calls;
mod provider;
mod renewal;
mod sign_in;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::urls::WebUrl;
use crate::usage::UsageError;
use crate::vec_map::VecMap;

pub use calls::ApiRequest;
use calls::{CallKind, CallPhase, Calls};
pub use provider::ProviderState;
use provider::{DiscoveryPhase, Keys, KeysPhase, Provider, Sites, SitesPhase};
use renewal::{Renewal, RenewalPhase};
use sign_in::{Exchange, Redemption, SignIn};

use crate::authorize::{self, Callback, CallbackError, CallbackVerdict, PendingAuthorization, SignInOptions};
use crate::config::{Config, GrantKind, ProviderSource};
use crate::discovery::{self, DiscoveryError, ProviderMetadata};
use crate::http::{CallId, HttpRequest, HttpResponse, Method, RequestId, RequestKind, TransportError};
use crate::id_token::{self, Expectations, IdTokenClaims, IdTokenError, Validation, Verifier};
use crate::json::Object;
use crate::jwks::JwkSet;
use crate::output::{CallError, CallFailure, Event, Output, SignInError, SignInRequiredReason, UserInfoError};
use crate::random::{self, RandomSource};
use crate::secret::{AccessToken, CsrfState, IdToken, Nonce, PkceVerifier, RefreshToken};
use crate::shared::Shared;
use crate::signature::{HostChecks, SignatureCheck, SignatureCheckId};
use crate::sites::InstanceSites;
use crate::snapshot::{Snapshot, SnapshotError, StoredTokens, SNAPSHOT_VERSION};
use crate::token::{self, TokenError, TokenGrant};
use crate::warning::Warning;

/// What an emitted request is for, so its answer goes to the right pipeline. The data a
/// step needs lives in that pipeline's phase, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Discovery,
    Sites,
    Keys,
    Exchange,
    Renewal,
    Revocation,
    Call {
        call: CallId,
        generation: u64,
    },
    /// Answer ignored: the call was cancelled or the session signed out.
    Abandoned,
    /// A token request whose answer no longer matters; it keeps the slot until answered.
    AbandonedToken,
    /// Past its deadline: it counted as a timeout, and its late answer is ignored.
    TimedOut,
}

impl Purpose {
    fn is_token_request(self) -> bool {
        matches!(self, Purpose::Exchange | Purpose::Renewal | Purpose::AbandonedToken)
    }
}

#[derive(Debug)]
struct Tokens {
    stored: StoredTokens,
    /// The API answered 401 to this access token: do not send it again.
    rejected: bool,
    /// When the session took them (installed or adopted), by its clock.
    installed_at: u64,
    /// They came from a renewal: a 401 for them within the cooldown may be the caller's.
    renewed: bool,
    /// The answer had no usable `expires_in`: `expires_at` is the assumed lifetime's.
    expiry_assumed: bool,
    /// The API answered a call made with this access token with a 2xx.
    accepted: bool,
}

impl Tokens {
    fn new(stored: StoredTokens, installed_at: u64) -> Tokens {
        Tokens { stored, rejected: false, installed_at, renewed: false, expiry_assumed: false, accepted: false }
    }
}

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
    last_request: u64,
    /// Every emitted request not answered yet, and what it is for.
    requests: VecMap<RequestId, Purpose>,
    /// The deadlines of the outstanding token, discovery, auto-discovery, key-set and
    /// revocation requests.
    deadlines: VecMap<RequestId, u64>,
    /// When a call last went out: proactive renewal is for sessions in use.
    last_call_sent_at: Option<u64>,
    /// The single-flight slot: the one token request in flight.
    token_slot: Option<RequestId>,
    provider: Provider,
    keys: Keys,
    sign_in: SignIn,
    renewal: Renewal,
    calls: Calls,
    tokens: Option<Tokens>,
    /// Bumped whenever the access token changes; a 401 is judged against it.
    generation: u64,
    /// The shortest age at which an access token of unknown lifetime (no `expires_in`) that
    /// the API had accepted was refused: the most the API lets such tokens live.
    observed_lifetime_ms: Option<u64>,
    /// The generation of the stored token state: bumped by this session's own changes,
    /// taken over from an adopted snapshot. Snapshots carry it.
    stored_generation: u64,
    /// The stored generation of the last snapshot written or adopted: the base a store
    /// compares a write against.
    base_generation: u64,
    id_token: Option<IdToken>,
    /// The validated claims of the current ID token.
    claims: Option<IdTokenClaims>,
    /// Signature checks handed to the host, and its verdicts.
    host_checks: HostChecks,
    /// The ERP.net instance's sites (auto-discovery).
    sites: Sites,
}

/// One validation attempt, judged.
enum Judged {
    Valid(Box<IdTokenClaims>),
    /// A key-set fetch is under way.
    AwaitKeys,
    /// A signature check is at the host.
    AwaitSignature,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.config.client_id)
            .field("now", &self.now)
            .field("signed_in", &self.tokens.is_some())
            .field("sign_in_pending", &self.sign_in.pending.is_some())
            .field("open_calls", &self.calls.len())
            .field("token_request_in_flight", &self.token_slot.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session with the operating system's secure random source.
    #[cfg(feature = "os-random")]
    pub fn new(config: impl Into<Arc<Config>>) -> Session {
        Self::with_random(config, random::OsRandom)
    }

    /// A new session drawing randomness from `rng` (tests inject a seeded one).
    pub fn with_random(config: impl Into<Arc<Config>>, rng: impl RandomSource + Send + 'static) -> Session {
        Self::assemble(config.into(), &ProviderState::default(), None, rng)
    }

    /// The one way a session comes to be: the shared provider state, then the snapshot,
    /// then discovery of whatever is still unknown. The snapshot's owner is checked first.
    fn assemble(
        config: Arc<Config>,
        provider: &ProviderState,
        snapshot: Option<Snapshot>,
        rng: impl RandomSource + Send + 'static,
    ) -> Session {
        let mut session = Self::unstarted(config, rng);
        session.install_provider(provider);
        if let Some(snapshot) = snapshot {
            session.adopt(snapshot);
        }
        // Discovery only when neither brought the provider's metadata (or sites).
        if session.needs_provider() && !session.provider.is_ready() {
            session.start_discovery();
        }
        if session.sites.known().is_none() {
            session.start_sites_fetch(false);
        }
        session
    }

    /// A reference token needs nothing from the identity server.
    fn needs_provider(&self) -> bool {
        self.config.grant != GrantKind::ReferenceToken
    }

    /// The session before anything is emitted.
    fn unstarted(config: impl Into<Arc<Config>>, rng: impl RandomSource + Send + 'static) -> Session {
        let config = config.into();
        let metadata = match &config.provider {
            ProviderSource::Fixed(m) => Some(Shared::new(m.clone())),
            ProviderSource::Discover { .. } => None,
        };
        // A reference token is the session's token from the start, with no expiry it knows
        // of and no way to renew it.
        let tokens = config.reference_token.clone().map(|access_token| {
            let stored =
                StoredTokens { access_token, received_at: 0, expires_at: None, refresh_token: None, scope: None };
            Tokens::new(stored, 0)
        });
        Session {
            config,
            rng: Box::new(rng),
            now: 0,
            clock_started: false,
            undrained: false,
            outputs: VecDeque::new(),
            last_request: 0,
            requests: VecMap::default(),
            deadlines: VecMap::default(),
            last_call_sent_at: None,
            token_slot: None,
            provider: Provider { metadata, discovery: DiscoveryPhase::Idle, stored: false },
            keys: Keys::default(),
            sign_in: SignIn::default(),
            renewal: Renewal::default(),
            calls: Calls::default(),
            tokens,
            generation: 0,
            observed_lifetime_ms: None,
            stored_generation: 0,
            base_generation: 0,
            id_token: None,
            claims: None,
            host_checks: HostChecks::default(),
            sites: Sites::new(),
        }
    }

    /// A session restored from a snapshot. Refuses a snapshot of another client or issuer.
    pub fn restore(
        config: impl Into<Arc<Config>>,
        snapshot: Snapshot,
        rng: impl RandomSource + Send + 'static,
    ) -> Result<Session, SnapshotError> {
        let config = config.into();
        check_snapshot_owner(&config, &snapshot)?;
        Ok(Self::assemble(config, &ProviderState::default(), Some(snapshot), rng))
    }

    /// A session of a server process that shares one [`ProviderState`] between its users'
    /// sessions: what `provider` holds is installed (metadata only for the configured
    /// issuer with every endpoint on its origin, as from a snapshot), then `snapshot` (if
    /// any) is restored; discovery starts only if the metadata is still unknown. With
    /// [`snapshot_provider(false)`](crate::ConfigBuilder::snapshot_provider) the user's
    /// snapshots then hold only the user's state.
    pub fn with_provider(
        config: impl Into<Arc<Config>>,
        provider: &ProviderState,
        snapshot: Option<Snapshot>,
        rng: impl RandomSource + Send + 'static,
    ) -> Result<Session, SnapshotError> {
        let config = config.into();
        if let Some(snapshot) = &snapshot {
            check_snapshot_owner(&config, snapshot)?;
        }
        Ok(Self::assemble(config, provider, snapshot, rng))
    }

    /// What this session knows of its provider, to share with the other sessions of this
    /// process (see [`with_provider`](Self::with_provider)).
    ///
    /// What the session took from a stored snapshot is not part of it: a store's word is
    /// used by the session that read it, never spread to the rest of the process.
    pub fn provider_state(&self) -> ProviderState {
        ProviderState {
            metadata: self.provider.metadata.clone().filter(|_| !self.provider.stored),
            keys: self.keys.set.clone().filter(|_| !self.keys.stored),
            sites: self.sites.shareable().cloned(),
        }
    }

    /// Installs what `state` holds: the metadata if it is the configured issuer's with every
    /// endpoint on its origin (else ignored, as a stored snapshot's would be), the signing
    /// keys, and the sites reachable on the instance's own origin.
    fn install_provider(&mut self, state: &ProviderState) {
        if let (ProviderSource::Discover { issuer, .. }, Some(metadata)) = (&self.config.provider, &state.metadata) {
            if metadata.issuer.trim_end_matches('/') == issuer.trim_end_matches('/')
                && metadata.endpoints_on_issuer_origin()
            {
                self.provider.metadata = Some(Shared::clone(metadata));
                if state.keys.is_some() {
                    self.keys.set.clone_from(&state.keys);
                }
            }
        }
        if let (Some(root), Some(sites)) = (&self.config.sites_root, &state.sites) {
            let own = InstanceSites::clone(sites).on_instance_only(root);
            // Shared as it is when nothing had to be dropped (the usual case: it came from a
            // session of the same instance).
            self.sites.set_known(if own == **sites { Shared::clone(sites) } else { Shared::new(own) });
        }
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The durable state, as it would be persisted now.
    pub fn snapshot(&self) -> Snapshot {
        let persist = self.config.persist_tokens;
        let provider = self.config.snapshot_provider;
        Snapshot {
            version: SNAPSHOT_VERSION,
            issuer: self.config.issuer().to_owned(),
            client_id: self.config.client_id.clone(),
            metadata: self.provider.metadata.clone().filter(|_| provider),
            pending: self.sign_in.pending.clone(),
            sites: self.sites.known().cloned().filter(|_| provider),
            generation: self.stored_generation,
            base_generation: self.base_generation,
            tokens: self.tokens.as_ref().filter(|_| persist).map(|t| t.stored.clone()),
            id_token: self.id_token.clone().filter(|_| persist),
            jwks: self.keys.set.clone().filter(|_| provider),
        }
    }

    /// Whether request `id` still matters. A host sharing one storage between sessions
    /// (browser tabs) asks this before sending a token request: after
    /// [`handle_snapshot`](Self::handle_snapshot) adopted newer tokens, a refresh with the
    /// old refresh token must not be sent. Answer an unwanted request with any transport
    /// error; its answer is ignored either way.
    pub fn is_request_wanted(&self, id: RequestId) -> bool {
        self.requests
            .get(&id)
            .is_some_and(|p| !matches!(p, Purpose::Abandoned | Purpose::AbandonedToken | Purpose::TimedOut))
    }

    /// Whether the session holds tokens.
    pub fn is_signed_in(&self) -> bool {
        self.tokens.is_some()
    }

    /// Whether a token answer arrived and is still being checked (its ID token waits for the
    /// provider's keys or a host signature verdict) before its tokens are installed and
    /// persisted. A host that holds a lock across processes or tabs for token requests keeps
    /// it until this is false, so that the next holder reads the new tokens, not the rotated
    /// ones.
    pub fn is_checking_token_answer(&self) -> bool {
        matches!(self.renewal.phase, RenewalPhase::CheckingIdToken { .. })
            || matches!(self.sign_in.redemption, Redemption::CheckingIdToken { .. })
    }

    /// The lease, in milliseconds, that a lock shared by several processes (a shared
    /// store's token lock) must be taken for before token request `id` is sent; `None` when
    /// `id` is not a token request that may still be sent (answered, timed out, abandoned,
    /// or not a token request).
    ///
    /// The lease covers the request until its [deadline](HttpRequest::deadline), then the
    /// key-set fetch that checking the answer's ID token may need (bounded by
    /// [`Timing::request_timeout_ms`](crate::Timing::request_timeout_ms)), plus a margin of
    /// [`TOKEN_LEASE_MARGIN_MS`]: right after the request is emitted, twice the request
    /// timeout plus the margin. It is counted from the session's latest `now`, so a lease
    /// asked for at that time or later by the host's clock ends no earlier than needed.
    /// Once the lock is held, ask [`lease_covers`](Self::lease_covers) before sending.
    pub fn token_lease_ms(&self, id: RequestId) -> Option<u64> {
        let end = self.token_lease_end(id)?;
        Some(end.saturating_add(TOKEN_LEASE_MARGIN_MS / 2).saturating_sub(self.now))
    }

    /// Whether a lock held until `lease_expires_at_ms` (Unix ms on the clock that gives the
    /// session its `now`, counted from *before* the lock was asked for, so never later than
    /// the store's own expiry) still covers sending token request `id` now: the lease must
    /// outlast the request's deadline and a key-set fetch after it by at least half of
    /// [`TOKEN_LEASE_MARGIN_MS`]. `false` also when `id` is not a token request that may
    /// still be sent.
    ///
    /// When it is `false` for a [wanted](Self::is_request_wanted) request, do not send it:
    /// taking the lock and reading the store took so long that the lease could run out while
    /// the refresh may still reach the provider, and another process could then send the
    /// same refresh token. Answer it with a transport error instead; the session retries
    /// after its backoff.
    pub fn lease_covers(&self, id: RequestId, lease_expires_at_ms: u64) -> bool {
        self.token_lease_end(id).is_some_and(|end| lease_expires_at_ms >= end)
    }

    /// The earliest end of a lease that covers token request `id`: its deadline, a key-set
    /// fetch's full timeout after it, and half the margin (the other half is slack for
    /// taking the lock and reading the store).
    fn token_lease_end(&self, id: RequestId) -> Option<u64> {
        // Before the first input the deadlines are not yet instants; no token request is
        // emitted then, but the answer must not depend on it.
        if !self.clock_started || !matches!(self.requests.get(&id), Some(Purpose::Exchange | Purpose::Renewal)) {
            return None;
        }
        let deadline = self.deadlines.get(&id).copied()?;
        let key_fetch = self.config.timing.request_timeout_ms;
        Some(deadline.saturating_add(key_fetch).saturating_add(TOKEN_LEASE_MARGIN_MS / 2))
    }

    /// Whether a sign-in awaits its callback.
    pub fn is_sign_in_pending(&self) -> bool {
        self.sign_in.pending.is_some()
    }

    /// The granted scope, as the server reported it (the scope asked for when its answer
    /// named none, RFC 6749 §5.1); `None` when unknown.
    pub fn granted_scope(&self) -> Option<&str> {
        self.tokens.as_ref().and_then(|t| t.stored.scope.as_deref())
    }

    /// When the access token expires, Unix ms.
    pub fn expires_at(&self) -> Option<u64> {
        self.tokens.as_ref().and_then(|t| t.stored.expires_at)
    }

    /// Whether the provider's endpoints are known, so that `sign_in` can build a URL.
    pub fn is_provider_ready(&self) -> bool {
        self.provider.is_ready()
    }

    /// The provider metadata in use, once known.
    pub fn provider_metadata(&self) -> Option<&ProviderMetadata> {
        self.provider.metadata.as_deref()
    }

    /// The last ID token received.
    pub fn id_token(&self) -> Option<&IdToken> {
        self.id_token.as_ref()
    }

    /// The claims of the current ID token: validated when it arrived (restored ones were
    /// validated before they were persisted).
    pub fn claims(&self) -> Option<&IdTokenClaims> {
        self.claims.as_ref()
    }

    // ----- commands -----

    /// Fetches the discovery document again after [`Event::DiscoveryFailed`].
    pub fn discover(&mut self, now: u64) -> Result<(), UsageError> {
        self.enter(now)?;
        if !self.provider.is_ready_or_coming() {
            self.start_discovery();
        }
        self.settle();
        Ok(())
    }

    /// Begins a sign-in: returns the authorization URL to send the browser to, and keeps the
    /// pending authorization (persisted) until its callback. A new sign-in replaces a
    /// pending one.
    pub fn sign_in(&mut self, now: u64, options: SignInOptions) -> Result<String, UsageError> {
        self.enter(now)?;
        if self.config.grant != GrantKind::AuthorizationCode {
            return Err(UsageError::WrongGrant);
        }
        let metadata = self.provider.metadata.as_deref().ok_or(UsageError::ProviderNotReady)?;
        let redirect_uri = self.config.redirect_uri.clone().ok_or(UsageError::WrongGrant)?;
        let mut draw = || random::token_43(self.rng.as_mut()).map_err(|_| UsageError::RandomUnavailable);
        let state = CsrfState::new(draw()?);
        let nonce = Nonce::new(draw()?);
        let verifier = if self.config.pkce { Some(PkceVerifier::new(draw()?)) } else { None };
        let pending = PendingAuthorization {
            state,
            nonce,
            verifier,
            redirect_uri,
            created_at: self.now,
            max_age_secs: options.max_age_secs,
        };
        // The configuration was validated; only a hostile discovery could make this fail.
        let url = authorize::authorization_url(&self.config, metadata, &pending, &options)
            .map_err(|_| UsageError::ProviderNotReady)?;
        self.sign_in.pending = Some(pending);
        self.persist();
        // The keys will be needed to check this sign-in's ID token: fetch them meanwhile.
        if self.config.needs_signing_keys() && self.keys.set.is_none() {
            self.start_keys_fetch();
        }
        self.settle();
        Ok(url)
    }

    /// Handles the browser's return from the provider.
    ///
    /// * `Err` — refused before its `state` matched the pending sign-in (too large, does
    ///   not parse, wrong redirect URI or response mode, repeated parameter, no or another
    ///   state): nothing changed, the sign-in still waits for its real callback.
    /// * `Ok` — the state matched, so the one-time state is spent. The code exchange is
    ///   emitted and its result arrives as [`Event::SignedIn`] or [`Event::SignInFailed`];
    ///   a refusal after the match (a provider error such as `access_denied`, a wrong or
    ///   missing `iss`, an expired sign-in, no code) is [`Event::SignInFailed`] at once.
    pub fn handle_callback(&mut self, now: u64, callback: Callback<'_>) -> Result<(), CallbackError> {
        self.enter(now)?;
        let pending = self.sign_in.pending.as_ref().ok_or(CallbackError::NoSignInPending)?;
        let metadata = self.provider.metadata.as_deref().ok_or(CallbackError::Usage(UsageError::ProviderNotReady))?;
        let accepted = match authorize::judge_callback(&self.config, metadata, pending, callback, self.now) {
            CallbackVerdict::Refused(error) => return Err(error),
            CallbackVerdict::Spent(error) => {
                self.sign_in.pending = None;
                self.persist();
                self.refuse_sign_in(SignInError::Callback(error));
                self.settle();
                return Ok(());
            }
            CallbackVerdict::Accepted(accepted) => accepted,
        };
        let Some(pending) = self.sign_in.pending.take() else { return Err(CallbackError::NoSignInPending) };
        self.persist();
        let exchange = Box::new(Exchange { code: accepted.code, pending, front: None });
        self.sign_in.redemption = match accepted.front_channel_id_token {
            // The front channel's ID token is checked before the code is redeemed.
            Some(id_token) => Redemption::CheckingFrontChannel { exchange, id_token, fetched_keys: false },
            None => Redemption::Queued(exchange),
        };
        self.settle();
        Ok(())
    }

    /// Calls the API with the access token. Exactly one [`Event::CallCompleted`] or
    /// [`Event::CallFailed`] follows for the returned id. Refused (nothing sent) for an
    /// origin that is not a configured API origin.
    pub fn call_api(&mut self, now: u64, request: ApiRequest) -> Result<CallId, CallError> {
        self.enter(now)?;
        let url = self.resolve_api_url(&request.url)?;
        if request.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("authorization")) {
            return Err(CallError::AuthorizationHeader);
        }
        if self.tokens.is_none() && !self.tokens_on_the_way() {
            return Err(CallError::Usage(UsageError::NotSignedIn));
        }
        // While the instance's sites are being discovered a relative URL is resolved when the
        // call goes out (against the discovered root); it was checked against today's.
        let resolve_when_sent = self.sites.in_flight() && crate::urls::is_relative(&request.url);
        let url = if resolve_when_sent { request.url.clone() } else { url };
        let id = self.calls.open(ApiRequest { url, ..request }, CallKind::Api, resolve_when_sent);
        self.settle();
        Ok(id)
    }

    /// Asks the userinfo endpoint about the signed-in user, through the same renewal-aware
    /// path as API calls (a due token is renewed first; a 401 renews and retries once). The
    /// answer arrives as [`Event::UserInfoReceived`] (its `sub` checked against the ID
    /// token's) or [`Event::UserInfoFailed`], for the returned call.
    pub fn fetch_user_info(&mut self, now: u64) -> Result<CallId, UsageError> {
        self.enter(now)?;
        let endpoint = self.provider.metadata.as_deref().and_then(|m| m.userinfo_endpoint.clone());
        let endpoint = endpoint.ok_or(UsageError::NoEndpoint)?;
        if self.tokens.is_none() && !self.tokens_on_the_way() {
            return Err(UsageError::NotSignedIn);
        }
        let request = ApiRequest::get(endpoint).with_header("Accept", "application/json");
        let id = self.calls.open(request, CallKind::UserInfo, false);
        self.settle();
        Ok(id)
    }

    /// Asks the instance's Profile site who the signed-in user is (`{Profile site}/me`,
    /// found by auto-discovery), through the renewal-aware call path. The answer arrives as
    /// [`Event::ProfileReceived`] (with `id`, the stable key) or [`Event::ProfileFailed`].
    /// The picture is `{Profile site}/me/picture`: fetch it with [`call_api`](Self::call_api)
    /// (an `<img>` cannot send the Bearer).
    pub fn fetch_profile(&mut self, now: u64) -> Result<CallId, UsageError> {
        self.enter(now)?;
        let site = self.sites.known().and_then(|s| s.profile.as_deref());
        let url =
            site.and_then(|s| WebUrl::parse(s).ok()).and_then(|s| s.join("me").ok()).ok_or(UsageError::NoEndpoint)?;
        if self.tokens.is_none() && !self.tokens_on_the_way() {
            return Err(UsageError::NotSignedIn);
        }
        let id = self.calls.open(ApiRequest::get(url.as_str()), CallKind::Profile, false);
        self.settle();
        Ok(id)
    }

    /// Whether the ERP.net instance's auto-discovery is under way (calls wait for it).
    pub fn is_discovering_sites(&self) -> bool {
        self.sites.in_flight()
    }

    /// The Profile site's root, when auto-discovery found it on the instance.
    pub fn profile_site(&self) -> Option<&str> {
        self.sites.known().and_then(|s| s.profile.as_deref())
    }

    /// Cancels a call: its result becomes [`CallFailure::Cancelled`]; an answer that still
    /// arrives is ignored.
    pub fn cancel_call(&mut self, now: u64, call: CallId) -> Result<(), UsageError> {
        self.enter(now)?;
        if self.calls.get(call).is_none() {
            return Err(UsageError::UnknownCall(call));
        }
        self.finish_call(call, Err(CallFailure::Cancelled));
        self.settle();
        Ok(())
    }

    /// Signs out: forgets the tokens and the pending sign-in, fails open calls, emits a
    /// revocation of the refresh token when the provider has a revocation endpoint, and
    /// returns the end-session URL to send the browser to, when the provider has one.
    pub fn sign_out(&mut self, now: u64, post_logout_redirect_uri: Option<&str>) -> Result<Option<String>, UsageError> {
        self.enter(now)?;
        // Everything that can fail runs before anything changes.
        let end_session = self.end_session_url(post_logout_redirect_uri)?;
        let refresh_token = self.tokens.take().and_then(|t| t.stored.refresh_token);
        self.id_token = None;
        self.claims = None;
        self.sign_in = SignIn::default();
        self.tokens_changed();
        self.renewal = Renewal::default();
        if let Some(id) = self.token_slot {
            self.abandon(id);
        }
        for call in self.calls.ids() {
            self.finish_call(call, Err(CallFailure::SignedOut));
        }
        self.persist();
        let revocation = self.provider.metadata.as_deref().and_then(|m| m.revocation_endpoint.clone());
        if let (Some(refresh), Some(endpoint)) = (&refresh_token, revocation) {
            let parts = self.config.token_request(&[("token", refresh.secret()), ("token_type_hint", "refresh_token")]);
            self.emit(
                RequestKind::Revocation,
                Method::Post,
                endpoint,
                parts.headers,
                Some(parts.body),
                Purpose::Revocation,
            );
        }
        self.event(Event::SignedOut);
        self.settle();
        Ok(end_session)
    }

    // ----- inputs -----

    /// The answer to request `id`.
    pub fn handle_response(&mut self, now: u64, id: RequestId, response: HttpResponse) -> Result<(), UsageError> {
        self.enter(now)?;
        let purpose = self.take_request(id)?;
        self.on_answer(id, purpose, Ok(response));
        self.settle();
        Ok(())
    }

    /// Request `id` got no answer.
    pub fn handle_transport_error(&mut self, now: u64, id: RequestId, error: TransportError) -> Result<(), UsageError> {
        self.enter(now)?;
        let purpose = self.take_request(id)?;
        self.on_answer(id, purpose, Err(error));
        self.settle();
        Ok(())
    }

    /// Time passed (the host's timer for [`Output::WaitUntil`] fired).
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), UsageError> {
        self.enter(now)?;
        self.settle();
        Ok(())
    }

    /// Another tab or process persisted a newer snapshot: adopt its durable state. A
    /// renewal in flight with the old refresh token is then judged against the new one.
    pub fn handle_snapshot(&mut self, now: u64, snapshot: Snapshot) -> Result<(), SnapshotError> {
        self.enter(now)?;
        check_snapshot_owner(&self.config, &snapshot)?;
        let had_tokens = self.tokens.is_some();
        if self.adopt(snapshot) {
            self.on_tokens_adopted();
        }
        if had_tokens && self.tokens.is_none() {
            self.fail_waiting(CallFailure::SignInRequired(SignInRequiredReason::SignedOutElsewhere));
        }
        self.settle();
        Ok(())
    }

    /// The host's verdict on a signature check: `true` only for a valid signature (`false`
    /// also when it could not check). A verdict for a check whose token no longer matters (a
    /// sign-out, adopted tokens) is accepted and ignored.
    pub fn handle_signature(&mut self, now: u64, id: SignatureCheckId, valid: bool) -> Result<(), UsageError> {
        self.enter(now)?;
        let question = match self.host_checks.outstanding.remove(&id) {
            Some(question) => question,
            None if id.0 > 0 && id.0 <= self.host_checks.last => {
                self.settle();
                return Ok(());
            }
            None => return Err(UsageError::UnknownSignatureCheck(id)),
        };
        self.host_checks.verdicts.push((question, valid));
        self.settle();
        Ok(())
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

    // ----- the loop's frame -----

    /// Every command and input starts here: the contract check and the clock, which never
    /// runs backwards.
    fn enter(&mut self, now: u64) -> Result<(), UsageError> {
        if self.undrained || !self.outputs.is_empty() {
            return Err(UsageError::NotDrained);
        }
        if !self.clock_started {
            self.clock_started = true;
            for deadline in self.deadlines.values_mut() {
                *deadline = deadline.saturating_add(now);
            }
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
        if self.token_slot.is_none() && self.sign_in.redemption.is_queued() {
            if let Redemption::Queued(exchange) = std::mem::take(&mut self.sign_in.redemption) {
                self.start_exchange(*exchange);
            }
        }
        self.release_waiting();
        #[cfg(any(test, feature = "check-invariants"))]
        self.check_invariants();
        self.undrained = true;
    }

    // ----- the questions, each answered once -----

    /// Is the token slot free for a new token request?
    fn token_request_allowed(&self) -> bool {
        self.token_slot.is_none() && self.provider.is_ready()
    }

    /// Could a renewal (refresh, or client credentials) start now?
    fn may_start_renewal(&self) -> bool {
        self.token_request_allowed()
            && self.renewal.is_idle()
            // A code waiting for the slot goes first: its tokens replace these anyway.
            && !self.sign_in.redemption.is_queued()
            && self.can_renew()
    }

    /// May a call wait for tokens: will they arrive without a new command?
    fn tokens_on_the_way(&self) -> bool {
        self.sign_in.redemption.is_underway()
            || self.renewal.is_underway()
            || (self.can_renew() && self.provider.is_ready_or_coming())
    }

    fn can_renew(&self) -> bool {
        self.config.grant == GrantKind::ClientCredentials
            || self.tokens.as_ref().is_some_and(|t| t.stored.refresh_token.is_some())
    }

    /// The access token, if it may be sent now.
    fn usable_token(&self) -> Option<AccessToken> {
        let tokens = self.tokens.as_ref()?;
        let fresh = renewal::usable_until(&tokens.stored, &self.config.timing).is_none_or(|until| self.now < until);
        (fresh && !tokens.rejected).then(|| tokens.stored.access_token.clone())
    }

    fn timer_deadline(&self, timer: Timer) -> Option<u64> {
        match timer {
            Timer::RequestDeadline => self.deadlines.values().min().copied(),
            Timer::RenewalRetry => self.renewal.retry_at(),
            Timer::ThrottleRetry => self.calls.next_throttle_end(),
            Timer::ProactiveRenewal => {
                let tokens = self.tokens.as_ref().filter(|_| self.may_start_renewal())?;
                if tokens.rejected {
                    Some(self.now)
                } else if self.in_use(tokens) {
                    renewal::renew_at(&tokens.stored, &self.config.timing)
                } else {
                    None
                }
            }
        }
    }

    /// Is the session in use: has a call gone out with these tokens? An idle session is not
    /// renewed on a timer (its next call renews on demand) unless the timing says so.
    fn in_use(&self, tokens: &Tokens) -> bool {
        self.config.timing.renew_idle_sessions || self.last_call_sent_at.is_some_and(|at| at >= tokens.installed_at)
    }

    /// The soonest timer still ahead. A due timer that could not fire (the slot is held by
    /// an abandoned request) waits for that answer, not for a time.
    fn next_wakeup(&self) -> Option<u64> {
        Timer::ALL.into_iter().filter_map(|t| self.timer_deadline(t)).filter(|at| *at > self.now).min()
    }

    fn fire(&mut self, timer: Timer) {
        match timer {
            Timer::RequestDeadline => {
                let due: Vec<RequestId> =
                    self.deadlines.iter().filter(|(_, at)| **at <= self.now).map(|(id, _)| *id).collect();
                for id in due {
                    self.deadlines.remove(&id);
                    if let Some(purpose) = self.requests.insert(id, Purpose::TimedOut) {
                        self.on_answer(id, purpose, Err(TransportError::Timeout));
                    }
                }
            }
            Timer::RenewalRetry => {
                self.renewal.phase = RenewalPhase::Idle;
                if self.may_start_renewal() {
                    self.start_renewal();
                }
            }
            Timer::ProactiveRenewal => self.start_renewal(),
            Timer::ThrottleRetry => self.calls.release_throttled(self.now),
        }
    }

    // ----- transitions on answers -----

    fn on_answer(&mut self, id: RequestId, purpose: Purpose, answer: Result<HttpResponse, TransportError>) {
        if self.token_slot == Some(id) {
            self.token_slot = None;
        }
        match purpose {
            Purpose::Discovery => self.on_discovery(id, answer),
            Purpose::Sites => self.on_sites(id, answer),
            Purpose::Keys => {
                if self.keys.phase == KeysPhase::Fetching(id) && self.keys.on_answer(answer) {
                    self.persist();
                }
            }
            Purpose::Exchange => self.on_exchange(id, answer),
            Purpose::Renewal => self.on_renewal(id, answer),
            Purpose::Call { call, generation } => self.on_call_answer(id, call, generation, answer),
            // Revocation is best effort (RFC 7009): the tokens are already forgotten.
            Purpose::Revocation | Purpose::Abandoned | Purpose::AbandonedToken | Purpose::TimedOut => {}
        }
    }

    fn on_discovery(&mut self, id: RequestId, answer: Result<HttpResponse, TransportError>) {
        if self.provider.discovery != DiscoveryPhase::InFlight(id) {
            return;
        }
        self.provider.discovery = DiscoveryPhase::Idle;
        let ProviderSource::Discover { issuer, fallback, on_issuer_origin } = &self.config.provider else { return };
        let result = match answer {
            Ok(response) => discovery::parse_discovery(issuer, *on_issuer_origin, response.status, &response.body),
            Err(_) => Err(DiscoveryError::Transport),
        };
        match (result, fallback.clone()) {
            (Ok(metadata), _) => {
                self.provider.metadata = Some(Shared::new(metadata));
                self.persist();
                self.event(Event::ProviderReady { discovered: true });
            }
            // A document naming another issuer, or moving an endpoint off the instance, is an
            // attack or a misconfiguration, never a reason to fall back silently.
            (Err(error @ (DiscoveryError::IssuerMismatch | DiscoveryError::ForeignEndpoint { .. })), _)
            | (Err(error), None) => {
                self.provider.discovery = DiscoveryPhase::Failed;
                self.event(Event::DiscoveryFailed { error });
            }
            (Err(_), Some(fallback)) => {
                self.provider.metadata = Some(Shared::new(fallback));
                self.event(Event::ProviderReady { discovered: false });
            }
        }
    }

    fn on_exchange(&mut self, id: RequestId, answer: Result<HttpResponse, TransportError>) {
        if !matches!(self.sign_in.redemption, Redemption::Exchanging { request, .. } if request == id) {
            return;
        }
        let Redemption::Exchanging { pending, front, sent_at, .. } = std::mem::take(&mut self.sign_in.redemption)
        else {
            return;
        };
        match parse_answer(answer, self.now) {
            Ok(grant) if self.config.id_tokens_checked() => {
                if grant.id_token.is_none() {
                    // OpenID Connect Core §3.1.3.3: a code exchange for `openid` returns one.
                    self.refuse_sign_in(SignInError::MissingIdToken);
                    return;
                }
                // Its ID token is checked before any of its tokens is installed.
                self.sign_in.redemption = Redemption::CheckingIdToken {
                    grant: Box::new(grant),
                    pending,
                    front,
                    sent_at,
                    fetched_keys: false,
                };
            }
            Ok(grant) => self.complete_sign_in(grant, front.map(|c| *c), sent_at),
            // Codes are single use: never retried. Tokens held before are kept.
            Err(error) => self.refuse_sign_in(SignInError::Token(error)),
        }
    }

    fn complete_sign_in(&mut self, grant: TokenGrant, claims: Option<IdTokenClaims>, sent_at: u64) {
        if claims.is_some() {
            self.claims = claims;
        }
        // A new grant: whatever the old one's renewal went through is over.
        self.renewal = Renewal::default();
        let (scope, expires_at) = self.install(grant, None, sent_at);
        self.event(Event::SignedIn { scope, expires_at });
    }

    /// The sign-in ends without tokens; calls that waited for it fail (in `settle`).
    fn refuse_sign_in(&mut self, error: SignInError) {
        self.event(Event::SignInFailed { error });
    }

    fn on_renewal(&mut self, id: RequestId, answer: Result<HttpResponse, TransportError>) {
        if !matches!(self.renewal.phase, RenewalPhase::InFlight { request, .. } if request == id) {
            return;
        }
        let RenewalPhase::InFlight { used, sent_at, .. } = std::mem::take(&mut self.renewal.phase) else { return };
        match parse_answer(answer, self.now) {
            Ok(grant) if grant.id_token.is_some() && self.config.id_tokens_checked() => {
                self.renewal.phase =
                    RenewalPhase::CheckingIdToken { grant: Box::new(grant), used, sent_at, fetched_keys: false };
            }
            Ok(grant) => self.complete_renewal(grant, used, None, sent_at),
            Err(error) => self.renewal_failed(used, error),
        }
    }

    fn complete_renewal(
        &mut self,
        grant: TokenGrant,
        used: Option<RefreshToken>,
        claims: Option<IdTokenClaims>,
        sent_at: u64,
    ) {
        self.renewal = Renewal::default();
        if claims.is_some() {
            self.claims = claims;
        }
        let (scope, expires_at) = self.install(grant, used, sent_at);
        self.event(Event::TokensRenewed { scope, expires_at });
    }

    fn renewal_failed(&mut self, used: Option<RefreshToken>, error: TokenError) {
        let current = self.tokens.as_ref().and_then(|t| t.stored.refresh_token.as_ref());
        if used.is_some() && current != used.as_ref() {
            // The token that failed was already replaced (another tab or process rotated
            // it and we adopted the result): its failure says nothing about the current one.
            self.renewal = Renewal::default();
            return;
        }
        match &error {
            TokenError::OAuth(oauth) if oauth.code.ends_session() && used.is_some() => {
                self.tokens = None;
                self.tokens_changed();
                self.renewal = Renewal::default();
                self.persist();
                let reason = SignInRequiredReason::RefreshRejected { error: oauth.clone() };
                self.event(Event::SignInRequired { reason: reason.clone() });
                self.fail_waiting(CallFailure::SignInRequired(reason));
            }
            error if error.is_transient() => {
                self.renewal.failures += 1;
                let timing = self.config.timing;
                if self.renewal.failures >= timing.max_refresh_attempts {
                    self.suspend_renewal(CallFailure::RenewalUnavailable(error.clone()));
                    self.event(Event::RenewalFailed { error: error.clone() });
                    self.fail_waiting(CallFailure::RenewalUnavailable(error.clone()));
                } else {
                    let delay = renewal::backoff_delay(&timing, self.renewal.failures, error, self.rng.as_mut());
                    let retry_at = self.now.saturating_add(delay);
                    self.renewal.phase = RenewalPhase::Backoff { until: retry_at };
                    self.event(Event::RenewalDeferred {
                        error: error.clone(),
                        attempt: self.renewal.failures,
                        retry_at,
                    });
                }
            }
            error => {
                self.renewal.failures += 1;
                self.suspend_renewal(CallFailure::RenewalRefused(error.clone()));
                self.event(Event::RenewalFailed { error: error.clone() });
                self.fail_waiting(CallFailure::RenewalRefused(error.clone()));
            }
        }
    }

    /// Gives up for a cooldown: calls that need new tokens meanwhile fail at once.
    fn suspend_renewal(&mut self, failure: CallFailure) {
        let until = self.now.saturating_add(self.config.timing.retry_max_ms);
        self.renewal.phase = RenewalPhase::Suspended { until, failure };
    }

    /// A refresh's answer is not used when its ID token is refused. Retrying with the old
    /// refresh token would be reuse if the server rotated it, so the session ends here
    /// (unless another tab or process already moved on to newer tokens).
    fn refreshed_id_token_refused(&mut self, used: Option<RefreshToken>, error: IdTokenError) {
        let current = self.tokens.as_ref().and_then(|t| t.stored.refresh_token.as_ref());
        if used.is_some() && current != used.as_ref() {
            self.renewal = Renewal::default();
            return;
        }
        self.tokens = None;
        self.tokens_changed();
        self.renewal = Renewal::default();
        self.persist();
        let reason = SignInRequiredReason::RefreshedIdTokenRefused { error };
        self.event(Event::SignInRequired { reason: reason.clone() });
        self.fail_waiting(CallFailure::SignInRequired(reason));
    }

    fn on_call_answer(
        &mut self,
        id: RequestId,
        call: CallId,
        generation: u64,
        answer: Result<HttpResponse, TransportError>,
    ) {
        let Some(entry) = self.calls.get(call) else { return };
        if entry.phase != CallPhase::InFlight(id) {
            return;
        }
        let response = match answer {
            Err(error) => return self.finish_call(call, Err(CallFailure::Transport(error))),
            Ok(response) => response,
        };
        if response.status == 429 && self.config.throttle_retry.allows(&entry.request.method) {
            let attempt = entry.throttled.saturating_add(1);
            if attempt <= self.config.timing.max_throttle_retries {
                let retry_after =
                    response.header_read("retry-after").and_then(|v| token::retry_after_secs(v, self.now));
                if let Some(delay) = renewal::throttle_delay(&self.config.timing, attempt, retry_after, &mut *self.rng)
                {
                    // The answer is dropped (never handed to the caller); the call waits, then
                    // goes out again with the same method, URL, headers and body.
                    self.calls.throttle(call, self.now.saturating_add(delay));
                    return;
                }
            }
        }
        // A 401 is a verdict on the token the request carried.
        if response.status == 401 && !entry.replayed {
            if generation == self.generation {
                if self.rejection_is_the_apis() {
                    return self.finish_call(call, Ok((id, response)));
                }
                // The current token was refused: renew, then replay once.
                if let Some(tokens) = &mut self.tokens {
                    tokens.rejected = true;
                    if tokens.expiry_assumed && tokens.accepted {
                        let age = self.now.saturating_sub(tokens.stored.received_at);
                        self.observed_lifetime_ms = Some(self.observed_lifetime_ms.map_or(age, |l| l.min(age)));
                    }
                }
            }
            // Otherwise the token was already replaced: just replay, with the current one.
            self.calls.replay(call);
            return;
        }
        if generation == self.generation && (200..300).contains(&response.status) {
            if let Some(tokens) = &mut self.tokens {
                tokens.accepted = true;
            }
        }
        self.finish_call(call, Ok((id, response)));
    }

    /// Whether a 401 for the current access token goes to the caller without a renewal: an
    /// API that refuses every token must not cost a refresh per call, so a token a renewal
    /// brought less than the cooldown ago is not renewed again for a 401. Unless the 401 is
    /// explained by its expiry: it is past it, or within the clock-skew allowance of it (the
    /// request left, waited in a queue or reached a server whose `exp` is in whole seconds
    /// that late). When its expiry was only assumed (no `expires_in`), by what the API
    /// showed: it accepted this token before and now refuses it, or the token is as old as
    /// one the API accepted was when it refused it.
    fn rejection_is_the_apis(&self) -> bool {
        let Some(tokens) = &self.tokens else { return false };
        let timing = &self.config.timing;
        let recent = tokens.renewed && self.now < tokens.installed_at.saturating_add(timing.rejection_cooldown_ms);
        let near_expiry =
            tokens.stored.expires_at.is_some_and(|at| self.now.saturating_add(timing.clock_skew_ms) >= at);
        let age = self.now.saturating_sub(tokens.stored.received_at);
        let outlived = self.observed_lifetime_ms.is_some_and(|l| age.saturating_add(timing.clock_skew_ms) >= l);
        let stopped_working = tokens.expiry_assumed && (tokens.accepted || outlived);
        recent && !near_expiry && !stopped_working
    }

    /// Ends a call with its one result.
    fn finish_call(&mut self, call: CallId, result: Result<(RequestId, HttpResponse), CallFailure>) {
        let Some(entry) = self.calls.close(call) else { return };
        if let CallPhase::InFlight(request) = entry.phase {
            if self.requests.contains_key(&request) {
                self.abandon(request);
            }
        }
        let event = match (entry.kind, result) {
            (CallKind::Api, Ok((request, response))) => Event::CallCompleted { call, request, response },
            (CallKind::Api, Err(error)) => Event::CallFailed { call, error },
            (CallKind::UserInfo, Ok((_, response))) => match self.user_info_claims(&response) {
                Ok(claims) => Event::UserInfoReceived { call, claims },
                Err(error) => Event::UserInfoFailed { call, error },
            },
            (CallKind::UserInfo, Err(error)) => Event::UserInfoFailed { call, error: UserInfoError::Call(error) },
            (CallKind::Profile, Ok((_, response))) => match profile_of(&response) {
                Ok(profile) => Event::ProfileReceived { call, profile },
                Err(error) => Event::ProfileFailed { call, error },
            },
            (CallKind::Profile, Err(error)) => Event::ProfileFailed { call, error: UserInfoError::Call(error) },
        };
        self.event(event);
    }

    fn user_info_claims(
        &self,
        response: &HttpResponse,
    ) -> Result<serde_json::Map<String, serde_json::Value>, UserInfoError> {
        if response.status != 200 {
            return Err(UserInfoError::Status { status: response.status });
        }
        if response.body.len() > crate::http::MAX_USERINFO_BYTES {
            return Err(UserInfoError::Malformed);
        }
        let claims = Object::parse(&response.body).map_err(|_| UserInfoError::Malformed)?.rest();
        let sub = claims.get("sub").and_then(serde_json::Value::as_str);
        match (&self.claims, sub) {
            (Some(id), Some(sub)) if id.sub == sub => Ok(claims),
            (None, Some(_)) => Ok(claims),
            _ => Err(UserInfoError::SubjectMismatch),
        }
    }

    // ----- actions -----

    /// Installs new tokens; returns what the event reports. Persisted before any use.
    /// Expiry counts from `sent_at`, when the request left: a slow answer must not make a
    /// token look fresher than the server made it.
    fn install(
        &mut self,
        grant: TokenGrant,
        used: Option<RefreshToken>,
        sent_at: u64,
    ) -> (Option<String>, Option<u64>) {
        for warning in &grant.warnings {
            self.event(Event::Warning { warning: *warning });
        }
        let lifetime_ms =
            grant.expires_in_secs.map_or(self.config.timing.assumed_lifetime_ms, |s| s.saturating_mul(1000));
        let expires_at = (lifetime_ms > 0).then(|| sent_at.saturating_add(lifetime_ms));
        // Rotation: a new refresh token replaces the old; an absent one keeps it.
        // Anything but a sign-in: a refresh, or a client-credentials request.
        let renewed = used.is_some() || self.config.grant == GrantKind::ClientCredentials;
        let scope = if grant.scope_absent { self.scope_asked_for(used.is_some()) } else { grant.scope };
        let refresh_token = grant.refresh_token.or(used);
        if grant.id_token.is_some() {
            self.id_token = grant.id_token;
        }
        let stored = StoredTokens {
            access_token: grant.access_token,
            received_at: sent_at,
            expires_at,
            refresh_token,
            scope: scope.clone(),
        };
        let expiry_assumed = grant.expires_in_secs.is_none();
        self.tokens = Some(Tokens { renewed, expiry_assumed, ..Tokens::new(stored, self.now) });
        self.tokens_changed();
        self.persist();
        (scope, expires_at)
    }

    /// The scope a token answer without `scope` granted (RFC 6749 §5.1: the one asked for).
    /// A refresh asks for none, which means the one granted before (§6); a sign-in or a
    /// client-credentials request asked for the configured one.
    fn scope_asked_for(&self, refresh: bool) -> Option<String> {
        let granted_before = self.tokens.as_ref().and_then(|t| t.stored.scope.clone()).filter(|_| refresh);
        granted_before.or_else(|| (!self.config.scope.is_empty()).then(|| self.config.scope.clone()))
    }

    /// Asks the ERP.net instance for its sites (the preset with discovery on, once).
    fn start_sites_fetch(&mut self, legacy: bool) {
        let Some(root) = &self.config.sites_root else { return };
        let path = if legacy { "sys/auto-discovery" } else { "tools/auto-discovery" };
        let Ok(url) = root.join(path) else { return };
        let headers = vec![("Accept".to_owned(), "application/json".to_owned())];
        let request = self.emit(RequestKind::Sites, Method::Get, url.into(), headers, None, Purpose::Sites);
        self.sites.phase = SitesPhase::InFlight { request, legacy };
        self.undrained = true;
    }

    fn on_sites(&mut self, id: RequestId, answer: Result<HttpResponse, TransportError>) {
        let SitesPhase::InFlight { request, legacy } = self.sites.phase else { return };
        if request != id {
            return;
        }
        self.sites.phase = SitesPhase::Idle;
        let Some(root) = self.config.sites_root.clone() else { return };
        let parsed = match &answer {
            Ok(response) if response.status == 200 => crate::sites::parse_sites(&response.body, &root),
            _ => None,
        };
        match parsed {
            Some((sites, skipped)) => {
                for site in skipped {
                    self.event(Event::SiteSkipped { site });
                }
                self.sites.set_known(Shared::new(sites.clone()));
                self.persist();
                self.event(Event::SitesDiscovered { sites });
            }
            // Instances before the 2025 path answer the older one.
            None if !legacy && matches!(&answer, Ok(r) if r.status == 404) => self.start_sites_fetch(true),
            // Without the document the documented default paths stay in use; calls go on.
            None => {}
        }
    }

    /// Relative calls resolve against the discovered Domain API root, unless one was
    /// configured.
    fn api_root(&self) -> Option<&WebUrl> {
        match self.sites.odata_root() {
            Some(root) if !self.config.api_root_explicit => Some(root),
            _ => self.config.api_root.as_ref(),
        }
    }

    fn start_discovery(&mut self) {
        let url = discovery::discovery_url(self.config.issuer());
        let headers = vec![("Accept".to_owned(), "application/json".to_owned())];
        let id = self.emit(RequestKind::Discovery, Method::Get, url, headers, None, Purpose::Discovery);
        self.provider.discovery = DiscoveryPhase::InFlight(id);
        self.undrained = true;
    }

    fn start_exchange(&mut self, exchange: Exchange) {
        let Some(endpoint) = self.provider.token_endpoint() else {
            self.sign_in.redemption = Redemption::Queued(Box::new(exchange));
            return;
        };
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", exchange.code.secret()),
            ("redirect_uri", exchange.pending.redirect_uri.as_str()),
        ];
        if let Some(verifier) = &exchange.pending.verifier {
            params.push(("code_verifier", verifier.secret()));
        }
        let parts = self.config.token_request(&params);
        let id =
            self.emit(RequestKind::Token, Method::Post, endpoint, parts.headers, Some(parts.body), Purpose::Exchange);
        self.token_slot = Some(id);
        self.sign_in.redemption = Redemption::Exchanging {
            sent_at: self.now,
            request: id,
            pending: Box::new(exchange.pending),
            front: exchange.front.map(Box::new),
        };
    }

    /// Starts a refresh (or a client-credentials request). Callers ask
    /// [`may_start_renewal`](Self::may_start_renewal) first; this checks again.
    fn start_renewal(&mut self) {
        if !self.may_start_renewal() {
            return;
        }
        let Some(endpoint) = self.provider.token_endpoint() else { return };
        let used = self.tokens.as_ref().and_then(|t| t.stored.refresh_token.clone());
        let parts = match &used {
            Some(refresh) => {
                self.config.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh.secret())])
            }
            None => {
                let mut params = vec![("grant_type", "client_credentials")];
                if !self.config.scope.is_empty() {
                    params.push(("scope", self.config.scope.as_str()));
                }
                self.config.token_request(&params)
            }
        };
        let id =
            self.emit(RequestKind::Token, Method::Post, endpoint, parts.headers, Some(parts.body), Purpose::Renewal);
        self.token_slot = Some(id);
        self.renewal.phase = RenewalPhase::InFlight { request: id, used, sent_at: self.now };
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
                    if self.may_start_renewal() {
                        self.start_renewal();
                    }
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
        if self.may_start_renewal() {
            self.start_renewal();
        }
        if self.tokens_on_the_way() {
            return;
        }
        if !self.provider.is_ready_or_coming() && self.config.grant == GrantKind::ClientCredentials {
            self.fail_waiting(CallFailure::ProviderUnavailable);
        } else if self.tokens.is_some() {
            // An expired or refused access token with no way to renew it is worthless:
            // forget it once, say so once; later calls are refused as not signed in.
            self.tokens = None;
            self.tokens_changed();
            self.persist();
            let reason = if self.config.grant == GrantKind::ReferenceToken {
                SignInRequiredReason::ReferenceTokenRejected
            } else {
                SignInRequiredReason::NoRefreshToken
            };
            self.event(Event::SignInRequired { reason: reason.clone() });
            self.fail_waiting(CallFailure::SignInRequired(reason));
        } else if self.config.grant == GrantKind::ReferenceToken {
            self.fail_waiting(CallFailure::SignInRequired(SignInRequiredReason::ReferenceTokenRejected));
        } else {
            self.fail_waiting(CallFailure::SignInRequired(SignInRequiredReason::NotSignedIn));
        }
    }

    /// A call expected to run longer than the current token lasts, when a renewed token
    /// would last long enough (otherwise renewing cannot help, and the call goes now).
    fn wants_fresher_token(&self, call: CallId) -> bool {
        let Some(duration) = self.calls.get(call).and_then(|c| c.request.expected_duration_ms) else { return false };
        let Some(tokens) = &self.tokens else { return false };
        let Some(until) = renewal::usable_until(&tokens.stored, &self.config.timing) else { return false };
        let span = until.saturating_sub(tokens.stored.received_at);
        self.now.saturating_add(duration) > until && span > duration && self.can_renew()
    }

    fn call_limit(&self) -> usize {
        self.config.api_concurrency.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn send_call(&mut self, call: CallId, token: &AccessToken) {
        let Some(entry) = self.calls.get(call) else { return };
        let mut request = entry.request.clone();
        if entry.resolve_when_sent {
            if let Ok(url) = self.resolve_api_url(&request.url) {
                request.url = url;
            }
        }
        let kind = match entry.kind {
            CallKind::Api => RequestKind::Api,
            CallKind::UserInfo => RequestKind::UserInfo,
            CallKind::Profile => RequestKind::Profile,
        };
        let mut headers = request.headers;
        headers.push(("Authorization".to_owned(), format!("Bearer {}", token.secret())));
        let purpose = Purpose::Call { call, generation: self.generation };
        let id = self.emit(kind, request.method, request.url, headers, request.body, purpose);
        self.calls.sent(call, id);
        self.last_call_sent_at = Some(self.now);
    }

    fn fail_waiting(&mut self, error: CallFailure) {
        for call in self.calls.waiting_ids() {
            self.finish_call(call, Err(error.clone()));
        }
    }

    /// The absolute URL of a call: as given, or below the API root when relative.
    fn resolve_api_url(&self, raw: &str) -> Result<String, CallError> {
        let url = crate::urls::resolve_call(raw, self.api_root()).map_err(|_| CallError::InvalidUrl)?;
        if !self.config.api_origins.contains(&url.origin) {
            return Err(CallError::ForeignOrigin { origin: url.origin.serialization().to_owned() });
        }
        Ok(url.href)
    }

    /// The end-session URL for `sign_out`, built before anything changes.
    fn end_session_url(&mut self, post_logout_redirect_uri: Option<&str>) -> Result<Option<String>, UsageError> {
        let Some(endpoint) = self.provider.metadata.as_deref().and_then(|m| m.end_session_endpoint.as_deref()) else {
            return Ok(None);
        };
        let url = WebUrl::parse(endpoint).map_err(|_| UsageError::ProviderNotReady)?;
        let state = match post_logout_redirect_uri {
            Some(_) => Some(random::token_43(self.rng.as_mut()).map_err(|_| UsageError::RandomUnavailable)?),
            None => None,
        };
        let pairs = [
            self.id_token.as_ref().map(|t| ("id_token_hint", t.secret())),
            post_logout_redirect_uri.map(|uri| ("post_logout_redirect_uri", uri)),
            state.as_deref().map(|state| ("state", state)),
            Some(("client_id", self.config.client_id.as_str())),
        ];
        let url = url.with_query_pairs(pairs.into_iter().flatten()).map_err(|_| UsageError::ProviderNotReady)?;
        Ok(Some(url.into()))
    }

    /// Takes a snapshot's durable state; true when its tokens differ from the session's.
    fn adopt(&mut self, mut snapshot: Snapshot) -> bool {
        let (metadata, sites, jwks) = (snapshot.metadata.take(), snapshot.sites.take(), snapshot.jwks.take());
        self.adopt_provider_documents(metadata, sites, jwks);
        self.sign_in.pending = snapshot.pending;
        if !self.config.persist_tokens {
            // Tokens live in memory only: a stored snapshot never brings (or takes away) any,
            // but its generation is carried on, so that this session's writes replace it.
            if snapshot.generation >= self.stored_generation {
                self.stored_generation = snapshot.generation;
                self.base_generation = snapshot.generation;
            }
            return false;
        }
        // An older state than this session's (an echo of its own earlier write, a slow
        // replica) must not roll the tokens back.
        if snapshot.generation < self.stored_generation {
            return false;
        }
        self.stored_generation = snapshot.generation;
        self.base_generation = snapshot.generation;
        let changed = self.tokens.as_ref().map(|t| &t.stored) != snapshot.tokens.as_ref();
        if changed {
            // Adopted tokens count as taken when they were issued, not now: a restored
            // session's first 401 still renews.
            let now = self.now;
            self.tokens = snapshot.tokens.map(|stored| {
                let installed_at = stored.received_at.min(now);
                Tokens::new(stored, installed_at)
            });
            self.generation += 1;
        }
        if snapshot.id_token.is_some() {
            self.claims = snapshot.id_token.as_ref().and_then(|t| id_token::claims_unverified(t.secret()));
            self.id_token = snapshot.id_token;
        }
        changed
    }

    /// The provider's documents in a stored snapshot: data, never configuration. A
    /// configuration whose snapshots never carry them (a process sharing one provider state)
    /// ignores them, and says so: someone else wrote the store. Otherwise each is taken only
    /// while the session knows none of its own (a restore), and only when it cannot send
    /// anything off the issuer's or the instance's origin: what the session discovered,
    /// fetched or was given by its process (or was configured with) is never replaced, and
    /// what it takes from a snapshot it uses itself but never passes on
    /// ([`provider_state`](Self::provider_state)).
    fn adopt_provider_documents(
        &mut self,
        metadata: Option<Shared<ProviderMetadata>>,
        sites: Option<Shared<InstanceSites>>,
        jwks: Option<Shared<JwkSet>>,
    ) {
        if metadata.is_none() && sites.is_none() && jwks.is_none() {
            return;
        }
        if !self.config.snapshot_provider {
            self.event(Event::Warning { warning: Warning::StoredProviderDataIgnored });
            return;
        }
        if let (ProviderSource::Discover { issuer, .. }, Some(metadata)) = (&self.config.provider, metadata) {
            if self.provider.metadata.is_none()
                && metadata.issuer.trim_end_matches('/') == issuer.trim_end_matches('/')
                && metadata.endpoints_on_issuer_origin()
            {
                self.provider.metadata = Some(metadata);
                self.provider.stored = true;
            }
        }
        if let (Some(root), Some(sites)) = (&self.config.sites_root, sites) {
            if self.sites.known().is_none() {
                let own = InstanceSites::clone(&sites).on_instance_only(root);
                self.sites.set_stored(if own == *sites { sites } else { Shared::new(own) });
            }
        }
        if let Some(jwks) = jwks {
            if self.keys.set.is_none() {
                self.keys.set = Some(jwks);
                self.keys.stored = true;
            }
        }
    }

    /// Adopted tokens restart the renewal. One in flight with a refresh token that is no
    /// longer current must not go out if the host has not sent it yet: with rotation the
    /// server would see reuse.
    fn on_tokens_adopted(&mut self) {
        let current = self.tokens.as_ref().and_then(|t| t.stored.refresh_token.clone());
        let stale = self.renewal.used().is_some_and(|used| Some(used) != current.as_ref());
        match self.renewal.phase {
            RenewalPhase::InFlight { request, .. } if stale => {
                self.abandon(request);
                self.renewal = Renewal::default();
            }
            RenewalPhase::CheckingIdToken { .. } if stale => self.renewal = Renewal::default(),
            RenewalPhase::Backoff { .. } | RenewalPhase::Suspended { .. } => self.renewal = Renewal::default(),
            _ => {}
        }
    }

    // ----- OpenID Connect: keys and ID tokens -----

    /// Fetches the provider's key set unless a fetch is under way. False when the provider
    /// has no `jwks_uri`.
    fn start_keys_fetch(&mut self) -> bool {
        if self.keys.is_fetching() {
            return true;
        }
        let Some(url) = self.provider.metadata.as_deref().and_then(|m| m.jwks_uri.clone()) else { return false };
        let headers = vec![("Accept".to_owned(), "application/json".to_owned())];
        let id = self.emit(RequestKind::Keys, Method::Get, url, headers, None, Purpose::Keys);
        self.keys.phase = KeysPhase::Fetching(id);
        self.keys.last_fetch_at = Some(self.now);
        true
    }

    fn expectations<'a>(&'a self, nonce: Option<&'a Nonce>) -> Expectations<'a> {
        Expectations {
            issuer: self.provider.metadata.as_deref().map_or(self.config.issuer(), |m| m.issuer.as_str()),
            client_id: &self.config.client_id,
            now_ms: self.now,
            skew_ms: self.config.timing.clock_skew_ms,
            algorithms: &self.config.id_token_algorithms,
            verify_signature: true,
            nonce,
            max_age_secs: None,
            access_token: None,
            code: None,
            state: None,
            previous: None,
        }
    }

    fn verifier(&self) -> Verifier<'_> {
        if self.config.host_signatures {
            Verifier::Host(&self.host_checks)
        } else {
            Verifier::Inline
        }
    }

    /// What to do with one validation attempt: valid, held (a key fetch or a host signature
    /// check was started, or is under way), or refused.
    fn judge_id_token(
        &mut self,
        outcome: Result<Validation, IdTokenError>,
        fetched_keys: bool,
    ) -> Result<Judged, IdTokenError> {
        match outcome {
            Ok(Validation::Valid(claims)) => Ok(Judged::Valid(claims)),
            Ok(Validation::NeedKeys { .. }) if !fetched_keys && self.start_keys_fetch() => Ok(Judged::AwaitKeys),
            Ok(Validation::NeedKeys { ambiguous }) => Err(self.keys.missing_key_error(ambiguous)),
            // The key named is known but does not verify: the cached set may be stale (the
            // provider re-keyed under the same id) or planted in a store. Fetched again once
            // for this token, and at most once per interval for the session.
            Err(IdTokenError::BadSignature | IdTokenError::UnusableKey)
                if !fetched_keys && self.keys.may_refetch(self.now) && self.start_keys_fetch() =>
            {
                Ok(Judged::AwaitKeys)
            }
            Ok(Validation::NeedSignature(needed)) => {
                if !self.host_checks.is_outstanding(&needed) {
                    self.host_checks.last += 1;
                    let id = SignatureCheckId(self.host_checks.last);
                    let crate::signature::SignatureQuestion { algorithm, key, signing_input, signature } =
                        (*needed).clone();
                    self.host_checks.outstanding.insert(id, *needed);
                    self.outputs.push_back(Output::VerifySignature(Box::new(SignatureCheck {
                        id,
                        algorithm,
                        key,
                        signing_input,
                        signature,
                    })));
                }
                Ok(Judged::AwaitSignature)
            }
            Err(error) => Err(error),
        }
    }

    /// Moves held-back ID tokens on: validated, waiting for keys or a signature check, or
    /// refused. A host verdict answers the attempt that follows it and is then forgotten.
    fn advance_id_token_checks(&mut self) {
        let runs = !self.keys.is_fetching();
        self.advance_held_id_tokens();
        if runs {
            self.host_checks.verdicts.clear();
        }
    }

    fn advance_held_id_tokens(&mut self) {
        if self.keys.is_fetching() {
            return; // the keys are on their way
        }
        match std::mem::take(&mut self.sign_in.redemption) {
            Redemption::CheckingFrontChannel { mut exchange, id_token, fetched_keys } => {
                let outcome = {
                    let mut x = self.expectations(Some(&exchange.pending.nonce));
                    x.max_age_secs = exchange.pending.max_age_secs;
                    x.code = Some(exchange.code.secret());
                    x.state = Some(exchange.pending.state.secret());
                    id_token::validate(id_token.secret(), self.keys.set.as_deref(), &self.verifier(), &x)
                };
                self.sign_in.redemption = match self.judge_id_token(outcome, fetched_keys) {
                    Ok(Judged::Valid(claims)) => {
                        exchange.front = Some(*claims);
                        Redemption::Queued(exchange)
                    }
                    Ok(Judged::AwaitKeys) => {
                        Redemption::CheckingFrontChannel { exchange, id_token, fetched_keys: true }
                    }
                    Ok(Judged::AwaitSignature) => Redemption::CheckingFrontChannel { exchange, id_token, fetched_keys },
                    Err(error) => {
                        self.refuse_sign_in(SignInError::IdToken(error));
                        Redemption::Idle
                    }
                };
            }
            Redemption::CheckingIdToken { grant, pending, front, sent_at, fetched_keys } => {
                let outcome = match grant.id_token.as_ref() {
                    Some(token) => {
                        let mut x = self.expectations(Some(&pending.nonce));
                        x.verify_signature = self.config.verify_token_endpoint_signature;
                        x.max_age_secs = pending.max_age_secs;
                        x.access_token = Some(grant.access_token.secret());
                        x.previous = front.as_deref();
                        id_token::validate(token.secret(), self.keys.set.as_deref(), &self.verifier(), &x)
                    }
                    None => Err(IdTokenError::Malformed),
                };
                match self.judge_id_token(outcome, fetched_keys) {
                    Ok(Judged::Valid(claims)) => self.complete_sign_in(*grant, Some(*claims), sent_at),
                    Ok(held) => {
                        let fetched_keys = fetched_keys || matches!(held, Judged::AwaitKeys);
                        self.sign_in.redemption =
                            Redemption::CheckingIdToken { grant, pending, front, sent_at, fetched_keys };
                    }
                    Err(error) => self.refuse_sign_in(SignInError::IdToken(error)),
                }
            }
            other => self.sign_in.redemption = other,
        }
        if self.keys.is_fetching() {
            return;
        }
        // Taken only when it is this phase: every other phase stays as it is.
        if !matches!(self.renewal.phase, RenewalPhase::CheckingIdToken { .. }) {
            return;
        }
        if let RenewalPhase::CheckingIdToken { grant, used, sent_at, fetched_keys } =
            std::mem::take(&mut self.renewal.phase)
        {
            // A refreshed ID token must name the same user (OIDC Core §12.2).
            let outcome = match grant.id_token.as_ref() {
                Some(token) => {
                    let mut x = self.expectations(None);
                    x.verify_signature = self.config.verify_token_endpoint_signature;
                    x.access_token = Some(grant.access_token.secret());
                    x.previous = self.claims.as_ref();
                    id_token::validate(token.secret(), self.keys.set.as_deref(), &self.verifier(), &x)
                }
                None => Err(IdTokenError::Malformed),
            };
            match self.judge_id_token(outcome, fetched_keys) {
                Ok(Judged::Valid(claims)) => self.complete_renewal(*grant, used, Some(*claims), sent_at),
                Ok(held) => {
                    let fetched_keys = fetched_keys || matches!(held, Judged::AwaitKeys);
                    self.renewal.phase = RenewalPhase::CheckingIdToken { grant, used, sent_at, fetched_keys }
                }
                Err(error) => self.refreshed_id_token_refused(used, error),
            }
        }
    }

    // ----- plumbing -----

    fn emit(
        &mut self,
        kind: RequestKind,
        method: Method,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
        purpose: Purpose,
    ) -> RequestId {
        self.last_request += 1;
        let id = RequestId(self.last_request);
        let call = match purpose {
            Purpose::Call { call, .. } => Some(call),
            _ => None,
        };
        self.requests.insert(id, purpose);
        let (deadline, timeout_ms) = match kind {
            RequestKind::Token
            | RequestKind::Discovery
            | RequestKind::Sites
            | RequestKind::Keys
            | RequestKind::Revocation => {
                let timeout = self.config.timing.request_timeout_ms;
                let at = self.now.saturating_add(timeout);
                self.deadlines.insert(id, at);
                // Before the first input the session does not know the time: it still counts
                // the deadline (from that input on) and cannot tell the host an instant, but
                // the host can time the request from when it sends it.
                (self.clock_started.then_some(at), Some(timeout))
            }
            RequestKind::UserInfo | RequestKind::Profile | RequestKind::Api => (None, None),
        };
        let request = HttpRequest { id, kind, call, method, url, headers, body, deadline, timeout_ms };
        self.outputs.push_back(Output::Http(request));
        id
    }

    /// The answer to `id` will be ignored.
    fn abandon(&mut self, id: RequestId) {
        if let Some(purpose) = self.requests.get_mut(&id) {
            *purpose = if purpose.is_token_request() { Purpose::AbandonedToken } else { Purpose::Abandoned };
        }
    }

    fn take_request(&mut self, id: RequestId) -> Result<Purpose, UsageError> {
        self.deadlines.remove(&id);
        match self.requests.remove(&id) {
            Some(purpose) => Ok(purpose),
            None if id.0 > 0 && id.0 <= self.last_request => Err(UsageError::AlreadyAnswered(id)),
            None => Err(UsageError::UnknownRequest(id)),
        }
    }

    /// This session changed the tokens: the access token's generation (a 401 is judged
    /// against it) and the stored state's (a store's older snapshot never rolls it back).
    fn tokens_changed(&mut self) {
        self.generation += 1;
        self.stored_generation += 1;
    }

    fn persist(&mut self) {
        let snapshot = self.snapshot();
        self.base_generation = self.stored_generation;
        self.outputs.push_back(Output::Persist(Box::new(snapshot)));
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// The machine's invariants, checked at the end of every `settle` in tests and in the
    /// simulation (feature `check-invariants`). A violation is a bug in this file.
    #[cfg(any(test, feature = "check-invariants"))]
    fn check_invariants(&self) {
        let token_requests: Vec<RequestId> =
            self.requests.iter().filter(|(_, p)| p.is_token_request()).map(|(id, _)| *id).collect();
        assert!(token_requests.len() <= 1, "two token requests in flight: {token_requests:?}");
        assert_eq!(token_requests.first().copied(), self.token_slot, "the token slot disagrees with the requests");
        if let RenewalPhase::InFlight { request, .. } = self.renewal.phase {
            assert_eq!(self.token_slot, Some(request), "a renewal in flight without the slot");
            assert_eq!(self.requests.get(&request), Some(&Purpose::Renewal));
        }
        if let Redemption::Exchanging { request, .. } = self.sign_in.redemption {
            assert_eq!(self.token_slot, Some(request), "an exchange in flight without the slot");
            assert_eq!(self.requests.get(&request), Some(&Purpose::Exchange));
        }
        if self.sign_in.redemption.is_queued() {
            assert!(self.token_slot.is_some(), "a queued exchange with the slot free after settle");
        }
        if matches!(self.renewal.phase, RenewalPhase::Backoff { .. }) {
            assert!(self.renewal.failures > 0, "a retry scheduled without a failure");
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
        for (call, entry) in self.calls.iter() {
            if let CallPhase::InFlight(request) = entry.phase {
                let purpose = self.requests.get(&request);
                assert!(
                    matches!(purpose, Some(Purpose::Call { call: c, .. }) if c == call),
                    "call {call:?} in flight without its request"
                );
            }
        }
        for purpose in self.requests.values() {
            if let Purpose::Call { call, .. } = purpose {
                assert!(self.calls.get(*call).is_some(), "a live request for a closed call {call:?}");
            }
        }
        for id in self.deadlines.keys() {
            let purpose = self.requests.get(id);
            assert!(purpose.is_some_and(|p| *p != Purpose::TimedOut), "a deadline for a request not outstanding");
        }
        if let KeysPhase::Fetching(request) = self.keys.phase {
            assert_eq!(self.requests.get(&request), Some(&Purpose::Keys));
        }
        if let DiscoveryPhase::InFlight(request) = self.provider.discovery {
            assert_eq!(self.requests.get(&request), Some(&Purpose::Discovery));
        }
    }
}

fn parse_answer(answer: Result<HttpResponse, TransportError>, now: u64) -> Result<TokenGrant, TokenError> {
    match answer {
        Ok(response) => token::parse_token_response(&response, now),
        Err(error) => Err(TokenError::Transport(error)),
    }
}

fn check_snapshot_owner(config: &Config, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    if snapshot.client_id != config.client_id
        || snapshot.issuer.trim_end_matches('/') != config.issuer().trim_end_matches('/')
    {
        return Err(SnapshotError::OtherClient);
    }
    Ok(())
}

/// The profile document: a JSON object with a string `id`.
fn profile_of(response: &HttpResponse) -> Result<serde_json::Map<String, serde_json::Value>, UserInfoError> {
    if response.status != 200 {
        return Err(UserInfoError::Status { status: response.status });
    }
    if response.body.len() > crate::http::MAX_USERINFO_BYTES {
        return Err(UserInfoError::Malformed);
    }
    let profile = Object::parse(&response.body).map_err(|_| UserInfoError::Malformed)?.rest();
    match profile.get("id") {
        Some(serde_json::Value::String(id)) if !id.is_empty() => Ok(profile),
        _ => Err(UserInfoError::Malformed),
    }
}
