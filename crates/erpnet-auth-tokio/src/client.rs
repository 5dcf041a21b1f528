//! The client handle, its builder and its event stream.

use std::sync::Arc;

use erpnet_auth::{
    ApiRequest, Config, Event, GrantKind, HttpResponse, IdTokenClaims, Session, SignInOptions, Snapshot,
};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, oneshot};

use crate::driver::{AbandonOnDrop, Command, Hub, Parts, PersistHook, Reply, Settings, SharedSession};
use crate::provider::SharedProvider;
use crate::store::SessionStore;
use crate::Error;

/// One user's (or one application's) authorized session on the tokio runtime: renewal, the
/// 401 replay and the 429 backoff happen inside.
///
/// `Clone + Send + Sync + 'static`: clones are handles to the same session. An API call made
/// on the runtime the client was built on sends its requests from the caller's own task;
/// token requests, store writes and timers run on a task of the session's. An idle session
/// (nothing in flight, no renewal due) has no task of its own; what needs one starts it
/// again on the runtime it was built on.
///
/// Dropping the last handle (no operation can be waiting then: each borrows a handle) ends
/// the session as [`close`](Self::close) does, in the background: API calls in flight are
/// aborted, and a token request or a revocation already sent finishes (its tokens installed
/// and stored, the token lock given back). A server may drop idle clients at any moment
/// without losing a rotated refresh token.
pub struct Client {
    hub: Arc<Hub>,
}

impl Clone for Client {
    fn clone(&self) -> Client {
        self.hub.add_handle();
        Client { hub: Arc::clone(&self.hub) }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.hub.drop_handle();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("closed", &self.hub.is_closed()).finish_non_exhaustive()
    }
}

impl Client {
    /// Starts the session's driver task on the current tokio runtime; discovery begins at
    /// once. `Err(Error::NoRuntime)` outside a runtime.
    pub fn new(config: Config) -> Result<Client, Error> {
        Self::builder(config).build()
    }

    /// A builder, for a shared provider, a store, a restored snapshot or an HTTP client.
    pub fn builder(config: impl Into<Arc<Config>>) -> ClientBuilder {
        ClientBuilder::new(config.into())
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        self.hub.send(command)
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply))?;
        answer.await.unwrap_or(Err(Error::Closed))
    }

    /// A call whose future, dropped before its answer, cancels it in the session.
    async fn ask_call<T>(&self, command: impl FnOnce(u64, Reply<T>) -> Command) -> Result<T, Error> {
        let ticket = self.hub.ticket();
        let (reply, answer) = oneshot::channel();
        self.send(command(ticket, reply))?;
        let mut guard = AbandonOnDrop { hub: &self.hub, ticket, sending: None, armed: true };
        let result = answer.await;
        guard.armed = false;
        result.unwrap_or(Err(Error::Closed))
    }

    /// The authorization URL to send the browser to. Waits for the provider's discovery
    /// instead of failing with `ProviderNotReady`; after a failed discovery it asks again.
    /// Resolves once the pending sign-in is stored (a shared store's other processes can
    /// then take the callback).
    ///
    /// `Err(Error::Discovery(_))`: the provider could not be discovered (try again later).
    /// `Err(Error::Usage(WrongGrant))`: the configuration has no user sign-in.
    pub async fn sign_in(&self, options: SignInOptions) -> Result<String, Error> {
        self.ask(|reply| Command::SignIn { options, reply }).await
    }

    /// Completes the sign-in from the redirect URL the browser came back with: resolves
    /// once the code is exchanged and the tokens stored.
    ///
    /// `Err(Error::Callback(_))`: refused before its state matched (nothing changed, the
    /// sign-in still waits for its real callback; `NoSignInPending` without a sign-in).
    /// `Err(Error::SignIn(_))`: the sign-in failed after its state matched (the provider's
    /// `access_denied`, the code exchange, the ID token).
    pub async fn handle_callback(&self, redirect_url: &str) -> Result<(), Error> {
        let input = redirect_url.to_owned();
        self.ask(|reply| Command::Callback { input, form_post: false, reply }).await
    }

    /// The same for the body POSTed with `response_mode=form_post`.
    pub async fn handle_form_post(&self, body: &str) -> Result<(), Error> {
        let input = body.to_owned();
        self.ask(|reply| Command::Callback { input, form_post: true, reply }).await
    }

    /// An authorized Domain API call (a relative URL resolves against the API root). The
    /// token is renewed first when due, a 401 renews and replays once, a 429 is sent again
    /// after a backoff; the answer is the API's, whatever its status.
    ///
    /// `Err(Error::Refused(_))`: nothing was sent (a foreign origin, an `Authorization`
    /// header, not signed in). `Err(Error::Failed(_))`: no answer (`sign_in_required`,
    /// the transport, renewal unavailable, signed out). `Err(Error::Closed)` once the client
    /// is closed, also for a call whose request is under way then. Dropping the future
    /// cancels the call in the session and gives up its request if it is being sent.
    pub async fn call(&self, request: ApiRequest) -> Result<HttpResponse, Error> {
        self.hub.call(request).await
    }

    /// The provider's userinfo claims for the signed-in user (its `sub` checked against
    /// the ID token's), through the same renewal-aware path as calls.
    ///
    /// `Err(Error::Usage(NoEndpoint))` when the provider has no userinfo endpoint,
    /// `Err(Error::Refused)`-like failures as [`call`](Self::call)'s.
    pub async fn user_info(&self) -> Result<Map<String, Value>, Error> {
        self.ask_call(|ticket, reply| Command::UserInfo { ticket, reply }).await
    }

    /// ERP.net: who the signed-in user is, from the instance's Profile site (`{site}/me`,
    /// found by auto-discovery, which this waits for): `id` (the stable key), `login`,
    /// `name`, `email`, …
    ///
    /// `Err(Error::Usage(NoEndpoint))` when the instance has no Profile site.
    pub async fn profile(&self) -> Result<Map<String, Value>, Error> {
        self.ask_call(|ticket, reply| Command::Profile { ticket, reply }).await
    }

    /// Signs out: forgets the tokens, fails open calls with `signed_out`, revokes the
    /// refresh token where the provider allows, and resolves to the end-session URL to send
    /// the browser to, when the provider has one. A shared session resolves once the
    /// signed-out snapshot is stored, and the session writes nothing more of its own accord
    /// (a key removed then stays removed unless the client is used again). The revocation, sent by then, completes even if the client is closed
    /// or dropped right after.
    pub async fn sign_out(&self, post_logout_redirect_uri: Option<&str>) -> Result<Option<String>, Error> {
        let post_logout_redirect_uri = post_logout_redirect_uri.map(str::to_owned);
        self.ask(|reply| Command::SignOut { post_logout_redirect_uri, reply }).await
    }

    /// The session's events from now on. A broadcast: a reader that falls behind skips the
    /// events it missed; it never slows the session.
    pub fn events(&self) -> Events {
        Events { receiver: self.hub.subscribe() }
    }

    /// Whether the session holds tokens (false once closed).
    pub async fn is_signed_in(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        self.send(Command::IsSignedIn(reply)).is_ok() && answer.await.unwrap_or(false)
    }

    /// The validated claims of the current ID token.
    pub async fn claims(&self) -> Option<IdTokenClaims> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Claims(reply)).ok()?;
        answer.await.ok().flatten()
    }

    /// The durable state as it would be stored now (what a store holds, and what
    /// [`ClientBuilder::snapshot`] restores).
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        self.ask(Command::Snapshot).await
    }

    /// Ends the session for good. At once, every later operation and every one waiting now
    /// fails with `Error::Closed` (API calls in flight are aborted); what cannot be cut short
    /// without harm finishes first: a token request already sent (a refresh, a code
    /// exchange) runs to its answer, bounded by its deadline, and its tokens are installed
    /// and stored (an answer thrown away would lose a rotated refresh token, and the
    /// provider revokes a grant whose old refresh token comes back); a revocation already
    /// sent (a sign-out's) completes; pending store writes are done and a held token lock
    /// is given back. Resolves once all of that is over: at once for an idle session.
    /// Dropping this future does not stop the close. Nothing is signed out or removed from
    /// a store.
    pub async fn close(&self) {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::Close(reply)).is_ok() {
            // An error means the driver already ended.
            let _ = answer.await;
        }
    }
}

/// The session's events ([`Client::events`]).
#[derive(Debug)]
pub struct Events {
    receiver: Option<broadcast::Receiver<Event>>,
}

impl Events {
    /// The next event; `None` once the client is closed or gone. Events missed by a reader
    /// that fell behind are skipped.
    pub async fn next(&mut self) -> Option<Event> {
        let receiver = self.receiver.as_mut()?;
        loop {
            match receiver.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    self.receiver = None;
                    return None;
                }
            }
        }
    }
}

/// Builds a [`Client`]: `Client::builder(config)…build()`.
#[must_use]
pub struct ClientBuilder {
    config: Arc<Config>,
    http: Option<reqwest::Client>,
    snapshot: Option<Snapshot>,
    store: Option<(Arc<dyn SessionStore>, String)>,
    provider: Option<SharedProvider>,
    max_body_bytes: usize,
    on_persist: Option<PersistHook>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("snapshot", &self.snapshot.is_some())
            .field("store_key", &self.store.as_ref().map(|(_, key)| key))
            .field("provider", &self.provider.is_some())
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(crate) fn new(config: Arc<Config>) -> ClientBuilder {
        ClientBuilder {
            config,
            http: None,
            snapshot: None,
            store: None,
            provider: None,
            max_body_bytes: crate::http::DEFAULT_MAX_BODY_BYTES,
            on_persist: None,
        }
    }

    /// Sends with this HTTP client. It must not follow redirects
    /// (`redirect(reqwest::redirect::Policy::none())`): the crate's default does not.
    pub fn http(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Restores this snapshot (a shared store's stored snapshot wins when there is one).
    pub fn snapshot(mut self, snapshot: Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// Shares the session with other tasks or processes through `store` under `key`: the
    /// stored snapshot is loaded first, every snapshot is written with compare-and-swap, and
    /// each token request runs under the store's lock `{key}:token`.
    pub fn store(mut self, store: Arc<dyn SessionStore>, key: impl Into<String>) -> Self {
        self.store = Some((store, key.into()));
        self
    }

    /// Starts from `provider`'s shared discovery, keys and sites (and shares its HTTP client
    /// unless [`http`](Self::http) names another).
    pub fn provider(mut self, provider: &SharedProvider) -> Self {
        self.provider = Some(provider.clone());
        self
    }

    /// API answers are read up to this many bytes (default 16 MiB); a longer one fails the
    /// call with a transport error rather than being buffered.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Called with every snapshot the session asks to store, before the session acts on
    /// what follows (a store of the application's own). Keep it quick, and do not use the
    /// client from it: it runs while the session is locked, on whichever task drives it then
    /// (the session's own, or the caller of an API call).
    pub fn on_persist(mut self, hook: impl Fn(&Snapshot) + Send + Sync + 'static) -> Self {
        self.on_persist = Some(Arc::new(hook));
        self
    }

    /// Starts the client's task on the current tokio runtime.
    ///
    /// `Err(Error::NoRuntime)` outside a runtime; `Err(Error::SharedStoreNotAllowed)` for a
    /// client-credentials or reference-token client with a store; `Err(Error::Snapshot(_))` for a snapshot
    /// of another client, issuer or version; `Err(Error::HttpClient)` when the default HTTP
    /// client cannot be built.
    pub fn build(self) -> Result<Client, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if self.store.is_some() && self.config.grant() != GrantKind::AuthorizationCode {
            return Err(Error::SharedStoreNotAllowed);
        }
        let default_body_limit = self.max_body_bytes == crate::http::DEFAULT_MAX_BODY_BYTES;
        let settings = match (self.http, &self.provider, self.on_persist) {
            (None, Some(provider), None) if default_body_limit => provider.client_settings(),
            (http, provider, on_persist) => Arc::new(Settings {
                http: match (http, provider) {
                    (Some(http), _) => http,
                    (None, Some(provider)) => provider.http().clone(),
                    (None, None) => crate::http::default_http_client()?,
                },
                on_persist,
                max_body_bytes: self.max_body_bytes,
            }),
        };
        let state = self.provider.as_ref().map(SharedProvider::state).unwrap_or_default();
        let session = Session::with_provider(Arc::clone(&self.config), &state, self.snapshot, erpnet_auth::OsRandom)
            .map_err(Error::Snapshot)?;
        let parts = Parts {
            session,
            settings,
            shared: self.store.map(|(store, key)| SharedSession::new(store, key)),
            provider: self.provider,
        };
        Ok(Client { hub: Hub::start(parts, runtime, self.config) })
    }
}
