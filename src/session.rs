//! The session machine. Every transition lives in this file: commands and inputs enter
//! through [`Session::enter`], change state, queue outputs, and leave through
//! [`Session::settle`], which fires due timers and releases waiting calls.

use std::collections::{BTreeMap, VecDeque};

use url::Url;

use crate::authorize::{self, Callback, CallbackError, PendingAuthorization, SignInOptions};
use crate::config::{Config, GrantKind, ProviderSource, Timing};
use crate::discovery::{self, DiscoveryError, ProviderMetadata};
use crate::http::{HttpRequest, HttpResponse, Method, RequestId, RequestKind, TransportError};
use crate::id_token::{self, Expectations, IdTokenClaims, IdTokenError, Validation};
use crate::jwks::JwkSet;
use crate::output::{CallError, CallFailure, CallId, Event, Output, SignInRequiredReason, UsageError};
use crate::random::{self, RandomSource};
use crate::secret::{AccessToken, AuthorizationCode, CsrfState, IdToken, Nonce, PkceVerifier, RefreshToken};
use crate::snapshot::{Snapshot, SnapshotError, StoredTokens, SNAPSHOT_VERSION};
use crate::token::{self, TokenError, TokenGrant};

/// A request to the Domain API (or another configured API origin), without the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// Absolute, or relative to the configured API root (`Crm_Sales_Customers?$top=10`).
    pub url: String,
    /// Headers other than `Authorization`.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl ApiRequest {
    /// A request with no headers and no body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        ApiRequest { method, url: url.into(), headers: Vec::new(), body: None }
    }

    /// A `GET`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("url", &crate::http::redact_query(&self.url))
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

/// What an emitted request is for, so its answer goes to the right transition.
#[derive(Debug)]
enum Purpose {
    Discovery,
    Jwks,
    UserInfo,
    /// The code exchange of this sign-in (and the front channel's claims, if any).
    Exchange {
        pending: Box<PendingAuthorization>,
        front: Option<Box<IdTokenClaims>>,
    },
    /// A refresh with this refresh token, or a client-credentials request when `None`.
    Renewal {
        used: Option<RefreshToken>,
    },
    Revocation,
    Api {
        call: CallId,
        generation: u64,
    },
    /// Answer ignored: the call was cancelled or the session signed out.
    Abandoned,
}

#[derive(Debug)]
struct Call {
    request: ApiRequest,
    replayed: bool,
    in_flight: Option<RequestId>,
}

#[derive(Debug)]
struct Tokens {
    stored: StoredTokens,
    /// The API answered 401 to this access token: do not send it again.
    rejected: bool,
}

#[derive(Debug, Default)]
struct Renewal {
    /// Transient failures of the current renewal.
    failures: u32,
    retry_at: Option<u64>,
    /// Gave up after the bound: no renewal until a new call or snapshot arrives.
    suspended: bool,
}

/// A code waiting for the token slot (an abandoned request still holds it).
#[derive(Debug)]
struct Exchange {
    code: AuthorizationCode,
    pending: PendingAuthorization,
    /// The front channel's validated claims (hybrid flow).
    front: Option<IdTokenClaims>,
}

/// An ID token awaiting validation, with what depends on it held back.
#[derive(Debug)]
enum Verifying {
    /// Hybrid flow: the front channel's token, before the code is redeemed.
    FrontChannel { exchange: Box<Exchange>, id_token: IdToken, fetched_keys: bool },
    /// The code exchange's answer, before its tokens are installed.
    SignIn {
        grant: TokenGrant,
        pending: Box<PendingAuthorization>,
        front: Option<Box<IdTokenClaims>>,
        fetched_keys: bool,
    },
}

/// One user's (or one application's) authorization state: the sans-IO machine.
///
/// Methods fall into four kinds: getters; commands (`sign_in`, `handle_callback`,
/// `call_api`, `cancel_call`, `sign_out`, `discover`); inputs (`handle_response`,
/// `handle_transport_error`, `handle_timeout`, `handle_snapshot`); and [`poll`](Self::poll).
/// After every command or input, drain `poll()` until it returns
/// [`Output::WaitUntil`] or [`Output::Idle`]; the next command or input before that is
/// refused with [`UsageError::NotDrained`].
pub struct Session {
    config: Config,
    rng: Box<dyn RandomSource + Send>,
    now: u64,
    undrained: bool,
    outputs: VecDeque<Output>,
    next_request: u64,
    next_call: u64,
    requests: BTreeMap<RequestId, Purpose>,
    metadata: Option<ProviderMetadata>,
    discovery_in_flight: bool,
    pending: Option<PendingAuthorization>,
    tokens: Option<Tokens>,
    id_token: Option<IdToken>,
    /// Bumped whenever the access token changes; a 401 is judged against it.
    generation: u64,
    /// The single-flight slot: the one token request in flight.
    token_request: Option<RequestId>,
    queued_exchange: Option<Exchange>,
    renewal: Renewal,
    calls: BTreeMap<CallId, Call>,
    waiting: VecDeque<CallId>,
    jwks: Option<JwkSet>,
    jwks_request: Option<RequestId>,
    /// The last key-set fetch failed.
    jwks_failed: bool,
    /// The validated claims of the current ID token.
    claims: Option<IdTokenClaims>,
    verifying: Option<Verifying>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.config.client_id)
            .field("now", &self.now)
            .field("signed_in", &self.tokens.is_some())
            .field("sign_in_pending", &self.pending.is_some())
            .field("open_calls", &self.calls.len())
            .field("token_request_in_flight", &self.token_request.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A new session with the operating system's secure random source.
    #[cfg(feature = "os-random")]
    pub fn new(config: Config) -> Session {
        Self::with_random(config, crate::OsRandom)
    }

    /// A new session drawing randomness from `rng` (tests inject a seeded one).
    pub fn with_random(config: Config, rng: impl RandomSource + Send + 'static) -> Session {
        let mut session = Self::unstarted(config, rng);
        if session.metadata.is_none() {
            session.start_discovery();
        }
        session
    }

    /// The session before anything is emitted.
    fn unstarted(config: Config, rng: impl RandomSource + Send + 'static) -> Session {
        let metadata = match &config.provider {
            ProviderSource::Fixed(m) => Some(m.clone()),
            ProviderSource::Discover { .. } => None,
        };
        Session {
            config,
            rng: Box::new(rng),
            now: 0,
            undrained: false,
            outputs: VecDeque::new(),
            next_request: 1,
            next_call: 1,
            requests: BTreeMap::new(),
            metadata,
            discovery_in_flight: false,
            pending: None,
            tokens: None,
            id_token: None,
            generation: 0,
            token_request: None,
            queued_exchange: None,
            renewal: Renewal::default(),
            calls: BTreeMap::new(),
            waiting: VecDeque::new(),
            jwks: None,
            jwks_request: None,
            jwks_failed: false,
            claims: None,
            verifying: None,
        }
    }

    /// A session restored from a snapshot. Refuses a snapshot of another client or issuer.
    pub fn restore(
        config: Config,
        snapshot: Snapshot,
        rng: impl RandomSource + Send + 'static,
    ) -> Result<Session, SnapshotError> {
        check_snapshot_owner(&config, &snapshot)?;
        let mut session = Self::unstarted(config, rng);
        session.adopt(snapshot);
        // Discovery only when the snapshot did not bring the provider's metadata.
        if session.metadata.is_none() {
            session.start_discovery();
        }
        Ok(session)
    }

    // ----- getters -----

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The durable state, as it would be persisted now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            issuer: self.config.issuer().to_owned(),
            client_id: self.config.client_id.clone(),
            metadata: self.metadata.clone(),
            pending: self.pending.clone(),
            tokens: self.tokens.as_ref().map(|t| t.stored.clone()),
            id_token: self.id_token.clone(),
            jwks: self.jwks.clone(),
        }
    }

    /// Whether request `id` still matters. A host sharing one storage between sessions
    /// (browser tabs) asks this before sending a token request: after
    /// [`handle_snapshot`](Self::handle_snapshot) adopted newer tokens, a refresh with the
    /// old refresh token must not be sent. Answer an unwanted request with any transport
    /// error; its answer is ignored either way.
    pub fn is_request_wanted(&self, id: RequestId) -> bool {
        self.requests.get(&id).is_some_and(|p| !matches!(p, Purpose::Abandoned))
    }

    /// Whether the session holds tokens.
    pub fn is_signed_in(&self) -> bool {
        self.tokens.is_some()
    }

    /// Whether a sign-in awaits its callback.
    pub fn is_sign_in_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The granted scope, as the server reported it.
    pub fn granted_scope(&self) -> Option<&str> {
        self.tokens.as_ref().and_then(|t| t.stored.scope.as_deref())
    }

    /// When the access token expires, Unix ms.
    pub fn expires_at(&self) -> Option<u64> {
        self.tokens.as_ref().and_then(|t| t.stored.expires_at)
    }

    /// Whether the provider's endpoints are known, so that `sign_in` can build a URL.
    pub fn is_provider_ready(&self) -> bool {
        self.metadata.is_some()
    }

    /// The provider metadata in use, once known.
    pub fn provider_metadata(&self) -> Option<&ProviderMetadata> {
        self.metadata.as_ref()
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
        if self.metadata.is_none() && !self.discovery_in_flight {
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
        let metadata = self.metadata.as_ref().ok_or(UsageError::ProviderNotReady)?;
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
        self.pending = Some(pending);
        self.persist();
        // The keys will be needed to check this sign-in's ID token: fetch them meanwhile.
        if self.config.needs_signing_keys() && self.jwks.is_none() {
            self.start_jwks_fetch();
        }
        self.settle();
        Ok(url)
    }

    /// Handles the browser's return from the provider. On success the code exchange is
    /// emitted; its result arrives as [`Event::SignedIn`] or [`Event::SignInFailed`]. On a
    /// refusal the session is unchanged, except that a real provider error or an expired
    /// sign-in ends the pending sign-in.
    pub fn handle_callback(&mut self, now: u64, callback: Callback<'_>) -> Result<(), CallbackError> {
        self.enter(now)?;
        let pending = self.pending.as_ref().ok_or(CallbackError::NoSignInPending)?;
        let metadata = self.metadata.as_ref().ok_or(CallbackError::Usage(UsageError::ProviderNotReady))?;
        match authorize::accept_callback(&self.config, metadata, pending, callback, self.now) {
            Ok(accepted) => {
                let pending = self.pending.take().ok_or(CallbackError::NoSignInPending)?;
                self.persist();
                let exchange = Exchange { code: accepted.code, pending, front: None };
                match accepted.front_channel_id_token {
                    // The front channel's ID token is checked before the code is redeemed.
                    Some(id_token) if self.config.id_tokens_checked() => {
                        self.verifying = Some(Verifying::FrontChannel {
                            exchange: Box::new(exchange),
                            id_token,
                            fetched_keys: false,
                        });
                    }
                    _ => self.queued_exchange = Some(exchange),
                }
                self.settle();
                Ok(())
            }
            Err(error) => {
                if authorize::consumes_pending(&error) {
                    self.pending = None;
                    self.persist();
                    self.settle();
                }
                Err(error)
            }
        }
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
        let can_get_tokens = self.config.grant == GrantKind::ClientCredentials
            || self.queued_exchange.is_some()
            || self.verifying.is_some()
            || self.token_request_is(|p| matches!(p, Purpose::Exchange { .. }));
        if self.tokens.is_none() && !can_get_tokens {
            return Err(CallError::Usage(UsageError::NotSignedIn));
        }
        let id = CallId(self.next_call);
        self.next_call += 1;
        self.calls.insert(id, Call { request: ApiRequest { url, ..request }, replayed: false, in_flight: None });
        self.waiting.push_back(id);
        // A new call is the signal to try renewal again after giving up.
        self.renewal.suspended = false;
        self.settle();
        Ok(id)
    }

    /// Cancels a call: its result becomes [`CallFailure::Cancelled`]; an answer that still
    /// arrives is ignored.
    pub fn cancel_call(&mut self, now: u64, call: CallId) -> Result<(), UsageError> {
        self.enter(now)?;
        let entry = self.calls.remove(&call).ok_or(UsageError::UnknownCall(call))?;
        self.waiting.retain(|c| *c != call);
        if let Some(request) = entry.in_flight {
            self.requests.insert(request, Purpose::Abandoned);
        }
        self.event(Event::CallFailed { call, error: CallFailure::Cancelled });
        self.settle();
        Ok(())
    }

    /// Signs out: forgets the tokens and the pending sign-in, fails waiting calls, emits a
    /// revocation of the refresh token when the provider has a revocation endpoint, and
    /// returns the end-session URL to send the browser to, when the provider has one.
    pub fn sign_out(&mut self, now: u64, post_logout_redirect_uri: Option<&str>) -> Result<Option<String>, UsageError> {
        self.enter(now)?;
        let refresh_token = self.tokens.take().and_then(|t| t.stored.refresh_token);
        let id_token = self.id_token.take();
        self.claims = None;
        self.verifying = None;
        self.pending = None;
        self.queued_exchange = None;
        self.generation += 1;
        self.renewal = Renewal::default();
        if let Some(id) = self.token_request {
            self.requests.insert(id, Purpose::Abandoned);
        }
        let calls = std::mem::take(&mut self.calls);
        self.waiting.clear();
        for (call, entry) in calls {
            if let Some(request) = entry.in_flight {
                self.requests.insert(request, Purpose::Abandoned);
            }
            self.event(Event::CallFailed { call, error: CallFailure::SignedOut });
        }
        self.persist();
        let metadata = self.metadata.clone();
        if let (Some(refresh), Some(endpoint)) =
            (&refresh_token, metadata.as_ref().and_then(|m| m.revocation_endpoint.clone()))
        {
            let parts = token::token_request(
                &self.config,
                &[("token", refresh.secret()), ("token_type_hint", "refresh_token")],
            );
            self.emit(
                RequestKind::Revocation,
                Method::Post,
                endpoint,
                parts.headers,
                Some(parts.body),
                Purpose::Revocation,
            );
        }
        let end_session = match metadata.as_ref().and_then(|m| m.end_session_endpoint.as_deref()) {
            Some(endpoint) => {
                let mut url = Url::parse(endpoint).map_err(|_| UsageError::ProviderNotReady)?;
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(id_token) = &id_token {
                        query.append_pair("id_token_hint", id_token.secret());
                    }
                    if let Some(uri) = post_logout_redirect_uri {
                        query.append_pair("post_logout_redirect_uri", uri);
                        let state = random::token_43(self.rng.as_mut()).map_err(|_| UsageError::RandomUnavailable)?;
                        query.append_pair("state", &state);
                    }
                    query.append_pair("client_id", &self.config.client_id);
                }
                Some(String::from(url))
            }
            None => None,
        };
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
        self.adopt(snapshot);
        self.renewal = Renewal::default();
        // A renewal with a refresh token that is no longer current must not go out if the
        // host has not sent it yet: with rotation the server would see reuse.
        if let Some(id) = self.token_request {
            let current = self.tokens.as_ref().and_then(|t| t.stored.refresh_token.as_ref());
            if let Some(Purpose::Renewal { used: Some(used) }) = self.requests.get(&id) {
                if current != Some(used) {
                    self.requests.insert(id, Purpose::Abandoned);
                }
            }
        }
        if had_tokens && self.tokens.is_none() {
            self.fail_waiting(CallFailure::SignInRequired(SignInRequiredReason::SignedOutElsewhere));
        }
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
        self.now = self.now.max(now);
        Ok(())
    }

    /// Every command and input ends here: due timers fire, queued work starts, waiting calls
    /// are released or failed.
    fn settle(&mut self) {
        self.advance_verification();
        if self.renewal.retry_at.is_some_and(|at| at <= self.now) {
            self.renewal.retry_at = None;
            self.start_renewal();
        }
        if self.token_request.is_none() {
            if let Some(exchange) = self.queued_exchange.take() {
                self.start_exchange(exchange);
            }
        }
        if self.proactive_renewal_due() {
            self.start_renewal();
        }
        self.release_waiting();
        self.undrained = true;
    }

    fn next_wakeup(&self) -> Option<u64> {
        let proactive = match &self.tokens {
            Some(t) if self.can_renew() && !self.renewal.suspended && self.token_request.is_none() => {
                renew_at(&t.stored, &self.config.timing).filter(|at| *at > self.now)
            }
            _ => None,
        };
        [self.renewal.retry_at, proactive].into_iter().flatten().min()
    }

    // ----- transitions on answers -----

    fn on_answer(&mut self, id: RequestId, purpose: Purpose, answer: Result<HttpResponse, TransportError>) {
        if self.token_request == Some(id) {
            self.token_request = None;
        }
        match purpose {
            Purpose::Discovery => self.on_discovery(answer),
            Purpose::Jwks => self.on_jwks(answer),
            Purpose::UserInfo => self.on_user_info(answer),
            Purpose::Exchange { pending, front } => self.on_exchange(*pending, front, answer),
            Purpose::Renewal { used } => self.on_renewal(used, answer),
            Purpose::Api { call, generation } => self.on_api_answer(id, call, generation, answer),
            // Revocation is best effort (RFC 7009): the tokens are already forgotten.
            Purpose::Revocation | Purpose::Abandoned => {}
        }
    }

    fn on_discovery(&mut self, answer: Result<HttpResponse, TransportError>) {
        self.discovery_in_flight = false;
        let (issuer, fallback) = match &self.config.provider {
            ProviderSource::Discover { issuer, fallback } => (issuer.clone(), fallback.clone()),
            ProviderSource::Fixed(_) => return,
        };
        let result = match answer {
            Ok(response) => discovery::parse_discovery(&issuer, response.status, &response.body),
            Err(_) => Err(DiscoveryError::Transport),
        };
        match (result, fallback) {
            (Ok(metadata), _) => {
                self.metadata = Some(metadata);
                self.persist();
                self.event(Event::ProviderReady { discovered: true });
            }
            // A document naming another issuer is an attack or a misconfiguration, never a
            // reason to fall back silently.
            (Err(error @ DiscoveryError::IssuerMismatch), _) | (Err(error), None) => {
                self.event(Event::DiscoveryFailed { error });
            }
            (Err(_), Some(fallback)) => {
                self.metadata = Some(fallback);
                self.event(Event::ProviderReady { discovered: false });
            }
        }
    }

    fn on_exchange(
        &mut self,
        pending: PendingAuthorization,
        front: Option<Box<IdTokenClaims>>,
        answer: Result<HttpResponse, TransportError>,
    ) {
        match parse_answer(answer) {
            // Its ID token is checked before any of its tokens is installed.
            Ok(grant) if grant.id_token.is_some() && self.config.id_tokens_checked() => {
                self.verifying =
                    Some(Verifying::SignIn { grant, pending: Box::new(pending), front, fetched_keys: false });
            }
            Ok(grant) => {
                if let Some(front) = front {
                    self.claims = Some(*front);
                }
                let (scope, expires_at) = self.install(grant, None);
                self.event(Event::SignedIn { scope, expires_at });
            }
            // Codes are single use: never retried. Tokens held before are kept.
            Err(error) => self.event(Event::SignInFailed { error }),
        }
    }

    fn on_renewal(&mut self, used: Option<RefreshToken>, answer: Result<HttpResponse, TransportError>) {
        let error = match parse_answer(answer).and_then(|grant| self.check_refreshed_id_token(grant)) {
            Ok((grant, claims)) => {
                self.renewal = Renewal::default();
                if claims.is_some() {
                    self.claims = claims;
                }
                let (scope, expires_at) = self.install(grant, used);
                self.event(Event::TokensRenewed { scope, expires_at });
                return;
            }
            Err(error) => error,
        };
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
                self.generation += 1;
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
                    self.renewal = Renewal { suspended: true, ..Renewal::default() };
                    self.event(Event::RenewalFailed { error: error.clone() });
                    self.fail_waiting(CallFailure::RenewalUnavailable(error.clone()));
                } else {
                    let delay = backoff_delay(&timing, self.renewal.failures, error, self.rng.as_mut());
                    let retry_at = self.now.saturating_add(delay);
                    self.renewal.retry_at = Some(retry_at);
                    self.event(Event::RenewalDeferred {
                        error: error.clone(),
                        attempt: self.renewal.failures,
                        retry_at,
                    });
                }
            }
            error => {
                self.renewal = Renewal { suspended: true, ..Renewal::default() };
                self.event(Event::RenewalFailed { error: error.clone() });
                self.fail_waiting(CallFailure::RenewalRefused(error.clone()));
            }
        }
    }

    fn on_api_answer(
        &mut self,
        id: RequestId,
        call: CallId,
        generation: u64,
        answer: Result<HttpResponse, TransportError>,
    ) {
        let Some(entry) = self.calls.get_mut(&call) else { return };
        entry.in_flight = None;
        let response = match answer {
            Err(error) => {
                self.calls.remove(&call);
                self.event(Event::CallFailed { call, error: CallFailure::Transport(error) });
                return;
            }
            Ok(response) => response,
        };
        if response.status == 401 && !entry.replayed {
            entry.replayed = true;
            if generation == self.generation {
                // The current token was refused: renew, then replay once.
                if let Some(tokens) = &mut self.tokens {
                    tokens.rejected = true;
                }
                self.renewal.suspended = false;
            }
            // Otherwise the token was already replaced: just replay.
            self.waiting.push_back(call);
            return;
        }
        self.calls.remove(&call);
        self.event(Event::CallCompleted { call, request: id, response });
    }

    // ----- actions -----

    /// Installs new tokens; returns what the event reports. Persisted before any use.
    fn install(&mut self, grant: TokenGrant, used: Option<RefreshToken>) -> (Option<String>, Option<u64>) {
        let expires_at = grant.expires_in_secs.map(|s| self.now.saturating_add(s.saturating_mul(1000)));
        // Rotation: a new refresh token replaces the old; an absent one keeps it.
        let refresh_token = grant.refresh_token.or(used);
        if grant.id_token.is_some() {
            self.id_token = grant.id_token;
        }
        let stored = StoredTokens {
            access_token: grant.access_token,
            received_at: self.now,
            expires_at,
            refresh_token,
            scope: grant.scope.clone(),
        };
        self.tokens = Some(Tokens { stored, rejected: false });
        self.generation += 1;
        self.persist();
        (grant.scope, expires_at)
    }

    fn start_discovery(&mut self) {
        let url = discovery::discovery_url(self.config.issuer());
        let headers = vec![("Accept".to_owned(), "application/json".to_owned())];
        self.discovery_in_flight = true;
        self.emit(RequestKind::Discovery, Method::Get, url, headers, None, Purpose::Discovery);
        self.undrained = true;
    }

    fn start_exchange(&mut self, exchange: Exchange) {
        let Some(endpoint) = self.metadata.as_ref().map(|m| m.token_endpoint.clone()) else { return };
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", exchange.code.secret()),
            ("redirect_uri", exchange.pending.redirect_uri.as_str()),
        ];
        if let Some(verifier) = &exchange.pending.verifier {
            params.push(("code_verifier", verifier.secret()));
        }
        let parts = token::token_request(&self.config, &params);
        let purpose =
            Purpose::Exchange { pending: Box::new(exchange.pending.clone()), front: exchange.front.map(Box::new) };
        let id = self.emit(RequestKind::Token, Method::Post, endpoint, parts.headers, Some(parts.body), purpose);
        self.token_request = Some(id);
    }

    /// Starts a refresh (or a client-credentials request) unless one is in flight or a
    /// retry is scheduled: the single-flight rule.
    fn start_renewal(&mut self) {
        if self.token_request.is_some() || self.renewal.retry_at.is_some() || self.queued_exchange.is_some() {
            return;
        }
        let Some(endpoint) = self.metadata.as_ref().map(|m| m.token_endpoint.clone()) else { return };
        let refresh_token = self.tokens.as_ref().and_then(|t| t.stored.refresh_token.clone());
        let (parts, used) = match (&refresh_token, self.config.grant) {
            (Some(refresh), _) => (
                token::token_request(
                    &self.config,
                    &[("grant_type", "refresh_token"), ("refresh_token", refresh.secret())],
                ),
                refresh_token.clone(),
            ),
            (None, GrantKind::ClientCredentials) => {
                let mut params = vec![("grant_type", "client_credentials")];
                if !self.config.scope.is_empty() {
                    params.push(("scope", self.config.scope.as_str()));
                }
                (token::token_request(&self.config, &params), None)
            }
            (None, _) => return,
        };
        let id = self.emit(
            RequestKind::Token,
            Method::Post,
            endpoint,
            parts.headers,
            Some(parts.body),
            Purpose::Renewal { used },
        );
        self.token_request = Some(id);
    }

    fn proactive_renewal_due(&self) -> bool {
        let Some(tokens) = &self.tokens else { return false };
        self.can_renew()
            && !self.renewal.suspended
            && self.token_request.is_none()
            && (tokens.rejected || renew_at(&tokens.stored, &self.config.timing).is_some_and(|at| at <= self.now))
    }

    fn can_renew(&self) -> bool {
        self.config.grant == GrantKind::ClientCredentials
            || self.tokens.as_ref().is_some_and(|t| t.stored.refresh_token.is_some())
    }

    /// The access token, if it may be sent now.
    fn usable_token(&self) -> Option<AccessToken> {
        let tokens = self.tokens.as_ref()?;
        let fresh = usable_until(&tokens.stored, &self.config.timing).is_none_or(|until| self.now < until);
        (fresh && !tokens.rejected).then(|| tokens.stored.access_token.clone())
    }

    /// Sends every waiting call if the token is usable; otherwise makes sure a renewal is
    /// under way, or fails them when none is possible.
    fn release_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        if let Some(token) = self.usable_token() {
            while let Some(call) = self.waiting.pop_front() {
                self.send_call(call, &token);
            }
            return;
        }
        let renewing =
            self.token_request.is_some() || self.renewal.retry_at.is_some() || self.queued_exchange.is_some();
        if renewing {
            return;
        }
        if self.can_renew() {
            // A waiting call is the signal to try again, even after giving up: suspension
            // only ever stops renewals nobody is waiting for.
            self.renewal.suspended = false;
            self.start_renewal();
            return;
        }
        if self.tokens.is_some() && !self.can_renew() {
            // An expired or refused access token with no way to renew it is worthless:
            // forget it once, say so once; later calls are refused as not signed in.
            self.tokens = None;
            self.generation += 1;
            self.persist();
            self.event(Event::SignInRequired { reason: SignInRequiredReason::NoRefreshToken });
            self.fail_waiting(CallFailure::SignInRequired(SignInRequiredReason::NoRefreshToken));
        } else if self.tokens.is_none() && self.config.grant == GrantKind::AuthorizationCode {
            self.fail_waiting(CallFailure::SignInRequired(SignInRequiredReason::NotSignedIn));
        }
    }

    fn send_call(&mut self, call: CallId, token: &AccessToken) {
        let Some(entry) = self.calls.get(&call) else { return };
        let request = entry.request.clone();
        let mut headers = request.headers;
        headers.push(("Authorization".to_owned(), format!("Bearer {}", token.secret())));
        let purpose = Purpose::Api { call, generation: self.generation };
        let id = self.emit(RequestKind::Api, request.method, request.url, headers, request.body, purpose);
        if let Some(entry) = self.calls.get_mut(&call) {
            entry.in_flight = Some(id);
        }
    }

    fn fail_waiting(&mut self, error: CallFailure) {
        while let Some(call) = self.waiting.pop_front() {
            self.calls.remove(&call);
            self.event(Event::CallFailed { call, error: error.clone() });
        }
    }

    fn resolve_api_url(&self, raw: &str) -> Result<String, CallError> {
        let url = match (Url::parse(raw), &self.config.api_root) {
            (Ok(url), _) => url,
            (Err(url::ParseError::RelativeUrlWithoutBase), Some(root)) => {
                root.join(raw).map_err(|_| CallError::InvalidUrl)?
            }
            _ => return Err(CallError::InvalidUrl),
        };
        let origin = url.origin();
        if !self.config.api_origins.contains(&origin) {
            return Err(CallError::ForeignOrigin { origin: origin.ascii_serialization() });
        }
        Ok(url.into())
    }

    fn adopt(&mut self, snapshot: Snapshot) {
        if snapshot.metadata.is_some() {
            self.metadata = snapshot.metadata;
        }
        self.pending = snapshot.pending;
        let changed = self.tokens.as_ref().map(|t| &t.stored) != snapshot.tokens.as_ref();
        if changed {
            self.tokens = snapshot.tokens.map(|stored| Tokens { stored, rejected: false });
            self.generation += 1;
        }
        if snapshot.id_token.is_some() {
            self.claims = snapshot.id_token.as_ref().and_then(|t| id_token::claims_unverified(t.secret()));
            self.id_token = snapshot.id_token;
        }
        if snapshot.jwks.is_some() {
            self.jwks = snapshot.jwks;
        }
    }

    // ----- OpenID Connect: keys, ID tokens, userinfo -----

    /// Fetches the provider's key set unless a fetch is under way. False when the provider
    /// has no `jwks_uri`.
    fn start_jwks_fetch(&mut self) -> bool {
        if self.jwks_request.is_some() {
            return true;
        }
        let Some(url) = self.metadata.as_ref().and_then(|m| m.jwks_uri.clone()) else { return false };
        let headers = vec![("Accept".to_owned(), "application/json".to_owned())];
        let id = self.emit(RequestKind::Keys, Method::Get, url, headers, None, Purpose::Jwks);
        self.jwks_request = Some(id);
        true
    }

    fn on_jwks(&mut self, answer: Result<HttpResponse, TransportError>) {
        self.jwks_request = None;
        match answer.ok().filter(|r| r.status == 200).and_then(|r| JwkSet::parse(&r.body)) {
            Some(keys) => {
                self.jwks = Some(keys);
                self.jwks_failed = false;
                self.persist();
            }
            None => self.jwks_failed = true,
        }
    }

    fn expectations<'a>(&'a self, nonce: Option<&'a Nonce>) -> Expectations<'a> {
        Expectations {
            issuer: self.metadata.as_ref().map_or(self.config.issuer(), |m| m.issuer.as_str()),
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

    /// Moves a held-back ID token on: validated, waiting for keys, or refused.
    fn advance_verification(&mut self) {
        if self.jwks_request.is_some() {
            return; // the keys are on their way
        }
        let Some(verifying) = self.verifying.take() else { return };
        match verifying {
            Verifying::FrontChannel { mut exchange, id_token, fetched_keys } => {
                let mut x = self.expectations(Some(&exchange.pending.nonce));
                x.max_age_secs = exchange.pending.max_age_secs;
                x.code = Some(exchange.code.secret());
                x.state = Some(exchange.pending.state.secret());
                match id_token::validate(id_token.secret(), self.jwks.as_ref(), &x) {
                    Ok(Validation::Valid(claims)) => {
                        exchange.front = Some(*claims);
                        self.queued_exchange = Some(*exchange);
                    }
                    Ok(Validation::NeedKeys) if !fetched_keys && self.start_jwks_fetch() => {
                        self.verifying = Some(Verifying::FrontChannel { exchange, id_token, fetched_keys: true });
                    }
                    Ok(Validation::NeedKeys) => self.refuse_sign_in(self.missing_key_error()),
                    Err(error) => self.refuse_sign_in(error),
                }
            }
            Verifying::SignIn { grant, pending, front, fetched_keys } => {
                let Some(token) = grant.id_token.clone() else { return };
                let mut x = self.expectations(Some(&pending.nonce));
                x.verify_signature = self.config.verify_token_endpoint_signature;
                x.max_age_secs = pending.max_age_secs;
                x.access_token = Some(grant.access_token.secret());
                x.previous = front.as_deref();
                match id_token::validate(token.secret(), self.jwks.as_ref(), &x) {
                    Ok(Validation::Valid(claims)) => {
                        self.claims = Some(*claims);
                        let (scope, expires_at) = self.install(grant, None);
                        self.event(Event::SignedIn { scope, expires_at });
                    }
                    Ok(Validation::NeedKeys) if !fetched_keys && self.start_jwks_fetch() => {
                        self.verifying = Some(Verifying::SignIn { grant, pending, front, fetched_keys: true });
                    }
                    Ok(Validation::NeedKeys) => self.refuse_sign_in(self.missing_key_error()),
                    Err(error) => self.refuse_sign_in(error),
                }
            }
        }
    }

    fn missing_key_error(&self) -> IdTokenError {
        if self.jwks_failed {
            IdTokenError::KeysUnavailable
        } else {
            IdTokenError::UnknownKey
        }
    }

    /// The sign-in ends without tokens; calls that waited for it fail.
    fn refuse_sign_in(&mut self, error: IdTokenError) {
        self.event(Event::SignInFailed { error: TokenError::InvalidIdToken(error) });
        if self.tokens.is_none() {
            self.fail_waiting(CallFailure::SignInRequired(SignInRequiredReason::NotSignedIn));
        }
    }

    /// A refreshed ID token must name the same user (OIDC Core §12.2); its signature is
    /// checked when the cached keys allow, without holding the renewal up for a fetch.
    fn check_refreshed_id_token(&self, grant: TokenGrant) -> Result<(TokenGrant, Option<IdTokenClaims>), TokenError> {
        let Some(token) = grant.id_token.as_ref().filter(|_| self.config.id_tokens_checked()) else {
            return Ok((grant, None));
        };
        let mut x = self.expectations(None);
        x.verify_signature = self.config.verify_token_endpoint_signature;
        x.access_token = Some(grant.access_token.secret());
        x.previous = self.claims.as_ref();
        let mut outcome = id_token::validate(token.secret(), self.jwks.as_ref(), &x);
        if matches!(outcome, Ok(Validation::NeedKeys)) {
            x.verify_signature = false;
            outcome = id_token::validate(token.secret(), self.jwks.as_ref(), &x);
        }
        match outcome {
            Ok(Validation::Valid(claims)) => Ok((grant, Some(*claims))),
            Ok(Validation::NeedKeys) => Ok((grant, None)),
            Err(error) => Err(TokenError::InvalidIdToken(error)),
        }
    }

    /// Asks the userinfo endpoint about the signed-in user; the answer arrives as
    /// [`Event::UserInfoReceived`] (its `sub` checked against the ID token's) or
    /// [`Event::UserInfoFailed`].
    pub fn fetch_user_info(&mut self, now: u64) -> Result<(), UsageError> {
        self.enter(now)?;
        let endpoint =
            self.metadata.as_ref().and_then(|m| m.userinfo_endpoint.clone()).ok_or(UsageError::NoEndpoint)?;
        let token = self.usable_token().ok_or(UsageError::NotSignedIn)?;
        let headers = vec![
            ("Accept".to_owned(), "application/json".to_owned()),
            ("Authorization".to_owned(), format!("Bearer {}", token.secret())),
        ];
        self.emit(RequestKind::UserInfo, Method::Get, endpoint, headers, None, Purpose::UserInfo);
        self.settle();
        Ok(())
    }

    fn on_user_info(&mut self, answer: Result<HttpResponse, TransportError>) {
        let event = match answer {
            Err(error) => Event::UserInfoFailed { error: TokenError::Transport(error) },
            Ok(response) if response.status != 200 => {
                Event::UserInfoFailed { error: TokenError::UnexpectedStatus { status: response.status } }
            }
            Ok(response) => match serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&response.body) {
                Err(_) => Event::UserInfoFailed { error: TokenError::Malformed(crate::MalformedReason::NotJson) },
                Ok(claims) => {
                    let sub = claims.get("sub").and_then(serde_json::Value::as_str);
                    match (&self.claims, sub) {
                        (Some(id), Some(sub)) if id.sub == sub => Event::UserInfoReceived { claims },
                        (None, Some(_)) => Event::UserInfoReceived { claims },
                        _ => Event::UserInfoFailed { error: TokenError::InvalidIdToken(IdTokenError::SubjectMismatch) },
                    }
                }
            },
        };
        self.event(event);
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
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let call = match purpose {
            Purpose::Api { call, .. } => Some(call),
            _ => None,
        };
        self.requests.insert(id, purpose);
        self.outputs.push_back(Output::Http(HttpRequest { id, kind, call, method, url, headers, body }));
        id
    }

    fn take_request(&mut self, id: RequestId) -> Result<Purpose, UsageError> {
        match self.requests.remove(&id) {
            Some(purpose) => Ok(purpose),
            None if id.0 > 0 && id.0 < self.next_request => Err(UsageError::AlreadyAnswered(id)),
            None => Err(UsageError::UnknownRequest(id)),
        }
    }

    fn token_request_is(&self, test: impl Fn(&Purpose) -> bool) -> bool {
        self.token_request.and_then(|id| self.requests.get(&id)).is_some_and(test)
    }

    fn persist(&mut self) {
        let snapshot = self.snapshot();
        self.outputs.push_back(Output::Persist(Box::new(snapshot)));
    }

    fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }
}

fn parse_answer(answer: Result<HttpResponse, TransportError>) -> Result<TokenGrant, TokenError> {
    match answer {
        Ok(response) => token::parse_token_response(&response),
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

fn lifetime(tokens: &StoredTokens) -> Option<u64> {
    tokens.expires_at.map(|e| e.saturating_sub(tokens.received_at))
}

/// Until when the access token may be sent: expiry less the skew allowance (at most a
/// quarter of the lifetime, so short-lived tokens stay usable).
fn usable_until(tokens: &StoredTokens, timing: &Timing) -> Option<u64> {
    let (expires_at, lifetime) = (tokens.expires_at?, lifetime(tokens)?);
    Some(expires_at.saturating_sub(timing.clock_skew_ms.min(lifetime / 4)))
}

/// When proactive renewal starts: expiry less the leeway (at most half the lifetime, so a
/// short-lived token is not renewed in a loop).
fn renew_at(tokens: &StoredTokens, timing: &Timing) -> Option<u64> {
    let (expires_at, lifetime) = (tokens.expires_at?, lifetime(tokens)?);
    Some(expires_at.saturating_sub(timing.renew_before_ms.min(lifetime / 2)))
}

/// Exponential backoff with "equal jitter", at least the server's `Retry-After`.
fn backoff_delay(timing: &Timing, attempt: u32, error: &TokenError, rng: &mut dyn RandomSource) -> u64 {
    let exponential =
        timing.retry_base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20)).min(timing.retry_max_ms);
    let half = exponential / 2;
    // Truncation is the intent: a fraction of at most `half` milliseconds.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let jitter = (random::unit_fraction(rng) * half as f64) as u64;
    let server = match error {
        TokenError::Unavailable { retry_after_secs: Some(secs), .. } => secs.saturating_mul(1000).min(600_000),
        _ => 0,
    };
    (half + jitter).max(server).max(1)
}
