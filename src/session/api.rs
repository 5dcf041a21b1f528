//! The session's public face: how it is made, what a host may ask it, and its commands and
//! inputs. Each command or input is the loop contract's entry (`enter`), one step of the
//! pipeline it concerns, and `settle`; the machine itself (the frame, the timers, the
//! questions, the outcomes turned into outputs) is the module's root.

use std::sync::Arc;

use super::calls::{ApiRequest, CallKind};
use super::provider::ProviderState;
use super::renewal::Renewal;
use super::requests::{Outgoing, Purpose};
use super::sign_in::{self, Answered};
use super::{Session, TOKEN_LEASE_MARGIN_MS};

use crate::authorize::{Callback, CallbackError, SignInOptions};
use crate::config::{Config, GrantKind};
use crate::discovery::ProviderMetadata;
use crate::http::{CallId, HttpResponse, RequestId, RequestKind, TransportError};
use crate::id_token::IdTokenClaims;
use crate::output::{CallError, CallFailure, Event, SignInRequiredReason};
use crate::random::RandomSource;
use crate::secret::IdToken;
use crate::signature::SignatureCheckId;
use crate::snapshot::{Snapshot, SnapshotError};
use crate::urls::{self, WebUrl};
use crate::usage::UsageError;

impl Session {
    /// A new session with the operating system's secure random source.
    #[cfg(feature = "os-random")]
    pub fn new(config: impl Into<Arc<Config>>) -> Session {
        Self::with_random(config, crate::random::OsRandom)
    }

    /// A new session drawing randomness from `rng` (tests inject a seeded one).
    pub fn with_random(config: impl Into<Arc<Config>>, rng: impl RandomSource + Send + 'static) -> Session {
        Self::assemble(config.into(), &ProviderState::default(), None, rng)
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
        self.provider.state(&self.sites)
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether request `id` still matters. A host sharing one storage between sessions
    /// (browser tabs) asks this before sending a token request: after
    /// [`handle_snapshot`](Self::handle_snapshot) adopted newer tokens, a refresh with the
    /// old refresh token must not be sent. Answer an unwanted request with any transport
    /// error; its answer is ignored either way.
    pub fn is_request_wanted(&self, id: RequestId) -> bool {
        self.requests.is_wanted(id)
    }

    /// Whether the session holds tokens.
    pub fn is_signed_in(&self) -> bool {
        self.tokens.is_signed_in()
    }

    /// Whether a token answer arrived and is still being checked (its ID token waits for the
    /// provider's keys or a host signature verdict) before its tokens are installed and
    /// persisted. A host that holds a lock across processes or tabs for token requests keeps
    /// it until this is false, so that the next holder reads the new tokens, not the rotated
    /// ones.
    pub fn is_checking_token_answer(&self) -> bool {
        self.renewal.is_checking_id_token() || self.sign_in.is_checking_id_token()
    }

    /// The lease, in milliseconds, that a lock shared by several processes (a shared
    /// store's token lock) must be taken for before token request `id` is sent; `None` when
    /// `id` is not a token request that may still be sent (answered, timed out, abandoned,
    /// or not a token request).
    ///
    /// The lease covers the request until its [deadline](crate::HttpRequest::deadline), then
    /// the key-set fetch that checking the answer's ID token may need (bounded by
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
        let deadline = self.requests.token_request_deadline(id).filter(|_| self.clock_started)?;
        let key_fetch = self.config.timing.request_timeout_ms;
        Some(deadline.saturating_add(key_fetch).saturating_add(TOKEN_LEASE_MARGIN_MS / 2))
    }

    /// Whether a sign-in awaits its callback.
    pub fn is_sign_in_pending(&self) -> bool {
        self.sign_in.pending().is_some()
    }

    /// The granted scope, as the server reported it (the scope asked for when its answer
    /// named none, RFC 6749 §5.1); `None` when unknown.
    pub fn granted_scope(&self) -> Option<&str> {
        self.tokens.stored().and_then(|t| t.scope.as_deref())
    }

    /// When the access token expires, Unix ms.
    pub fn expires_at(&self) -> Option<u64> {
        self.tokens.stored().and_then(|t| t.expires_at)
    }

    /// Whether the provider's endpoints are known, so that `sign_in` can build a URL.
    pub fn is_provider_ready(&self) -> bool {
        self.provider.is_ready()
    }

    /// The provider metadata in use, once known.
    pub fn provider_metadata(&self) -> Option<&ProviderMetadata> {
        self.provider.metadata()
    }

    /// The last ID token received.
    pub fn id_token(&self) -> Option<&IdToken> {
        self.tokens.id_token()
    }

    /// The claims of the current ID token: validated when it arrived (restored ones were
    /// validated before they were persisted).
    pub fn claims(&self) -> Option<&IdTokenClaims> {
        self.tokens.claims()
    }

    /// Whether the ERP.net instance's auto-discovery is under way (calls wait for it).
    pub fn is_discovering_sites(&self) -> bool {
        self.sites.in_flight()
    }

    /// The Profile site's root, when auto-discovery found it on the instance.
    pub fn profile_site(&self) -> Option<&str> {
        self.sites.profile()
    }

    // ----- commands -----

    /// Fetches the discovery document again after [`Event::DiscoveryFailed`].
    ///
    /// # Errors
    ///
    /// [`UsageError::NotDrained`] when `poll()` was not drained since the last command.
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
    ///
    /// # Errors
    ///
    /// * [`UsageError::ProviderNotReady`]: the provider's endpoints are not known yet; wait
    ///   for [`Event::ProviderReady`] (or [`discover`](Self::discover) after
    ///   [`Event::DiscoveryFailed`]).
    /// * [`UsageError::WrongGrant`]: the configuration is not a user sign-in (client
    ///   credentials, a reference token).
    /// * [`UsageError::RandomUnavailable`]: the random source failed.
    /// * [`UsageError::NotDrained`].
    pub fn sign_in(&mut self, now: u64, options: SignInOptions) -> Result<String, UsageError> {
        self.enter(now)?;
        if self.config.grant != GrantKind::AuthorizationCode {
            return Err(UsageError::WrongGrant);
        }
        let metadata = self.provider.metadata().ok_or(UsageError::ProviderNotReady)?;
        let url = self.sign_in.begin(&self.config, metadata, &options, self.rng.as_mut(), self.now)?;
        self.persist();
        // The keys will be needed to check this sign-in's ID token: fetch them meanwhile.
        if self.config.needs_signing_keys() && !self.provider.has_keys() {
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
    ///
    /// # Errors
    ///
    /// A [`CallbackError`] for a callback refused before its state matched (above), or
    /// `CallbackError::Usage(UsageError::NotDrained)`.
    pub fn handle_callback(&mut self, now: u64, callback: Callback<'_>) -> Result<(), CallbackError> {
        self.enter(now)?;
        let answered = self.sign_in.callback(&self.config, self.provider.metadata(), callback, self.now)?;
        self.persist();
        if let Answered::Spent(error) = answered {
            self.event(Event::SignInFailed { error });
        }
        self.settle();
        Ok(())
    }

    /// Calls the API with the access token. Exactly one [`Event::CallCompleted`] or
    /// [`Event::CallFailed`] follows for the returned id. Refused (nothing sent) for an
    /// origin that is not a configured API origin.
    ///
    /// # Errors
    ///
    /// * [`CallError::ForeignOrigin`] / [`CallError::InvalidUrl`]: the URL is not on a
    ///   configured API origin, does not parse, or is relative with no API root.
    /// * [`CallError::AuthorizationHeader`]: the request sets `Authorization` itself.
    /// * `CallError::Usage(`[`UsageError::NotSignedIn`]`)`: no tokens, and none on the way.
    /// * `CallError::Usage(`[`UsageError::NotDrained`]`)`.
    pub fn call_api(&mut self, now: u64, request: ApiRequest) -> Result<CallId, CallError> {
        self.enter(now)?;
        let url = self.sites.resolve(&request.url, &self.config)?;
        if request.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("authorization")) {
            return Err(CallError::AuthorizationHeader);
        }
        // While the instance's sites are being discovered a relative URL is resolved when the
        // call goes out (against the discovered root); it was checked against today's.
        let resolve_when_sent = self.sites.in_flight() && urls::is_relative(&request.url);
        let url = if resolve_when_sent { request.url.clone() } else { url };
        Ok(self.open_call(ApiRequest { url, ..request }, CallKind::Api, resolve_when_sent)?)
    }

    /// Asks the userinfo endpoint about the signed-in user, through the same renewal-aware
    /// path as API calls (a due token is renewed first; a 401 renews and retries once). The
    /// answer arrives as [`Event::UserInfoReceived`] (its `sub` checked against the ID
    /// token's) or [`Event::UserInfoFailed`], for the returned call.
    ///
    /// # Errors
    ///
    /// [`UsageError::NoEndpoint`] (the provider has no userinfo endpoint, or it is not known
    /// yet), [`UsageError::NotSignedIn`], [`UsageError::NotDrained`].
    pub fn fetch_user_info(&mut self, now: u64) -> Result<CallId, UsageError> {
        self.enter(now)?;
        let endpoint = self.provider.metadata().and_then(|m| m.userinfo_endpoint.clone());
        let endpoint = endpoint.ok_or(UsageError::NoEndpoint)?;
        let request = ApiRequest::get(endpoint).with_header("Accept", "application/json");
        self.open_call(request, CallKind::UserInfo, false)
    }

    /// Asks the instance's Profile site who the signed-in user is (`{Profile site}/me`,
    /// found by auto-discovery), through the renewal-aware call path. The answer arrives as
    /// [`Event::ProfileReceived`] (with `id`, the stable key) or [`Event::ProfileFailed`].
    /// The picture is `{Profile site}/me/picture`: fetch it with [`call_api`](Self::call_api)
    /// (an `<img>` cannot send the Bearer).
    ///
    /// # Errors
    ///
    /// [`UsageError::NoEndpoint`] (no Profile site known: not the ERP.net preset, or its
    /// auto-discovery has not answered yet — see [`is_discovering_sites`](Self::is_discovering_sites)),
    /// [`UsageError::NotSignedIn`], [`UsageError::NotDrained`].
    pub fn fetch_profile(&mut self, now: u64) -> Result<CallId, UsageError> {
        self.enter(now)?;
        let url = self.sites.profile().and_then(|s| WebUrl::parse(s).ok()).and_then(|s| s.join("me").ok());
        let url = url.ok_or(UsageError::NoEndpoint)?;
        self.open_call(ApiRequest::get(url.as_str()), CallKind::Profile, false)
    }

    /// Opens a call that waits for a usable token; refused when no tokens will come.
    fn open_call(
        &mut self,
        request: ApiRequest,
        kind: CallKind,
        resolve_when_sent: bool,
    ) -> Result<CallId, UsageError> {
        if !self.tokens.is_signed_in() && !self.tokens_on_the_way() {
            return Err(UsageError::NotSignedIn);
        }
        let id = self.calls.open(request, kind, resolve_when_sent);
        self.settle();
        Ok(id)
    }

    /// Cancels a call: its result becomes [`CallFailure::Cancelled`]; an answer that still
    /// arrives is ignored.
    ///
    /// # Errors
    ///
    /// [`UsageError::UnknownCall`] (no such call is open: it already ended), [`UsageError::NotDrained`].
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
    ///
    /// # Errors
    ///
    /// [`UsageError::RandomUnavailable`] (the end-session request's state could not be made;
    /// nothing changed), [`UsageError::NotDrained`].
    pub fn sign_out(&mut self, now: u64, post_logout_redirect_uri: Option<&str>) -> Result<Option<String>, UsageError> {
        self.enter(now)?;
        // Everything that can fail runs before anything changes.
        let metadata = self.provider.metadata();
        let end_session = sign_in::end_session_url(
            &self.config,
            metadata,
            self.tokens.id_token(),
            post_logout_redirect_uri,
            self.rng.as_mut(),
        )?;
        let refresh_token = self.tokens.sign_out();
        self.sign_in.reset();
        self.renewal = Renewal::default();
        if let Some(id) = self.requests.slot() {
            self.requests.abandon(id);
        }
        for call in self.calls.ids() {
            self.finish_call(call, Err(CallFailure::SignedOut));
        }
        self.persist();
        let revocation = self.provider.metadata().and_then(|m| m.revocation_endpoint.clone());
        if let (Some(refresh), Some(endpoint)) = (&refresh_token, revocation) {
            let parts = self.config.token_request(&[("token", refresh.secret()), ("token_type_hint", "refresh_token")]);
            self.emit(Outgoing::form_post(RequestKind::Revocation, endpoint, parts), Purpose::Revocation);
        }
        self.event(Event::SignedOut);
        self.settle();
        Ok(end_session)
    }

    // ----- inputs -----

    /// The answer to request `id`.
    ///
    /// # Errors
    ///
    /// [`UsageError::UnknownRequest`], [`UsageError::AlreadyAnswered`], [`UsageError::NotDrained`].
    pub fn handle_response(&mut self, now: u64, id: RequestId, response: HttpResponse) -> Result<(), UsageError> {
        self.enter(now)?;
        let purpose = self.requests.take(id)?;
        self.on_answer(id, purpose, Ok(response));
        self.settle();
        Ok(())
    }

    /// Request `id` got no answer.
    ///
    /// # Errors
    ///
    /// [`UsageError::UnknownRequest`], [`UsageError::AlreadyAnswered`], [`UsageError::NotDrained`].
    pub fn handle_transport_error(&mut self, now: u64, id: RequestId, error: TransportError) -> Result<(), UsageError> {
        self.enter(now)?;
        let purpose = self.requests.take(id)?;
        self.on_answer(id, purpose, Err(error));
        self.settle();
        Ok(())
    }

    /// Time passed (the host's timer for [`Output::WaitUntil`](crate::Output::WaitUntil) fired).
    ///
    /// # Errors
    ///
    /// [`UsageError::NotDrained`].
    pub fn handle_timeout(&mut self, now: u64) -> Result<(), UsageError> {
        self.enter(now)?;
        self.settle();
        Ok(())
    }

    /// Another tab or process persisted a newer snapshot: adopt its durable state. A
    /// renewal in flight with the old refresh token is then judged against the new one.
    ///
    /// # Errors
    ///
    /// `SnapshotError::OtherClient` (the snapshot is another client's or issuer's: nothing
    /// adopted), or the contract's `NotDrained`.
    pub fn handle_snapshot(&mut self, now: u64, snapshot: Snapshot) -> Result<(), SnapshotError> {
        self.enter(now)?;
        check_snapshot_owner(&self.config, &snapshot)?;
        let had_tokens = self.tokens.is_signed_in();
        if self.adopt(snapshot) {
            if let Some(stale) = self.renewal.tokens_adopted(self.tokens.refresh_token()) {
                self.requests.abandon(stale);
            }
        }
        if had_tokens && !self.tokens.is_signed_in() {
            self.fail_waiting(CallFailure::SignInRequired(SignInRequiredReason::SignedOutElsewhere));
        }
        self.settle();
        Ok(())
    }

    /// The host's verdict on a signature check: `true` only for a valid signature (`false`
    /// also when it could not check). A verdict for a check whose token no longer matters (a
    /// sign-out, adopted tokens) is accepted and ignored.
    ///
    /// # Errors
    ///
    /// [`UsageError::UnknownSignatureCheck`], [`UsageError::NotDrained`].
    pub fn handle_signature(&mut self, now: u64, id: SignatureCheckId, valid: bool) -> Result<(), UsageError> {
        self.enter(now)?;
        self.host_checks.answer(id, valid).map_err(|_| UsageError::UnknownSignatureCheck(id))?;
        self.settle();
        Ok(())
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
