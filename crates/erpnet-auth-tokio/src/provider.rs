//! One provider per process: discovery, signing keys and the instance's sites, fetched once
//! and shared by every user session of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use erpnet_auth::{
    Config, Event, GrantKind, HttpResponse, Output, ProviderState, RequestId, Session, SignInOptions, TransportError,
};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::driver::Settings;
use crate::http::{instant_of, now_ms};
use crate::{ClientBuilder, Error};

/// An answer to a provider document request is reused by the sessions asking within this
/// long (a key rotation seen by a thousand sessions costs one fetch), as the npm package's.
const REUSE: Duration = Duration::from_secs(10);

/// The provider of every user session of a server process (the npm package's
/// `SharedProvider`): its discovery document, signing keys and (ERP.net) instance sites are
/// fetched once and held once in memory; each user's [`Client`](crate::Client), made with
/// [`client`](Self::client), starts from them with
/// [`Session::with_provider`](erpnet_auth::Session::with_provider) and holds only its own
/// state.
///
/// Build the [`Config`] with
/// [`snapshot_provider(false)`](erpnet_auth::ConfigBuilder::snapshot_provider) so that
/// each user's stored snapshot holds only that user's state too (the documents are not
/// written once per user).
///
/// Cloning is cheap (a shared pointer); `Send + Sync + 'static`.
///
/// ```no_run
/// # async fn example() -> Result<(), erpnet_auth_tokio::Error> {
/// use erpnet_auth_tokio::{erpnet_auth::Config, SharedProvider};
/// let config = Config::erpnet("https://demodb.my.erp.net")
///     .client_id("my.trusted.app/first")
///     .client_secret("my-plain-app-secret")
///     .redirect_uri("https://app.example/signin-callback")
///     .snapshot_provider(false)
///     .build()
///     .expect("a valid configuration");
/// let provider = SharedProvider::new(config)?;
/// provider.ready().await?; // discovery, keys, sites: once for the process
/// let alice = provider.client().build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SharedProvider {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    http: reqwest::Client,
    /// What its clients with the default settings share.
    client_settings: Arc<Settings>,
    state: RwLock<ProviderState>,
    /// The load under way (or the last one); a failed one is replaced by the next caller.
    load: Mutex<Option<Arc<Load>>>,
    /// Provider documents the sessions asked for, by URL: one fetch shared by all.
    documents: Mutex<HashMap<String, Arc<Document>>>,
}

/// One load attempt, awaited by every concurrent caller.
type Load = OnceCell<Result<(), Error>>;

/// One fetch of a provider document, shared by every session asking while it runs or
/// within [`REUSE`] after it.
struct Document {
    answer: OnceCell<Result<HttpResponse, TransportError>>,
    answered_at: Mutex<Option<Instant>>,
}

impl Document {
    fn is_fresh(&self, now: Instant) -> bool {
        let answered_at = *self.answered_at.lock().unwrap_or_else(PoisonError::into_inner);
        answered_at.is_none_or(|at| now.duration_since(at) < REUSE)
    }
}

impl std::fmt::Debug for SharedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedProvider").field("state", &self.state()).finish_non_exhaustive()
    }
}

impl SharedProvider {
    /// The provider of `config`'s clients, with the crate's default HTTP client (redirects
    /// off), shared by every client made with [`client`](Self::client). Nothing is fetched
    /// until [`ready`](Self::ready) or the first client needs it.
    pub fn new(config: impl Into<Arc<Config>>) -> Result<SharedProvider, Error> {
        Ok(Self::with_http(config, crate::http::default_http_client()?))
    }

    /// The same with this HTTP client (it must not follow redirects).
    pub fn with_http(config: impl Into<Arc<Config>>, http: reqwest::Client) -> SharedProvider {
        SharedProvider {
            inner: Arc::new(Inner {
                config: config.into(),
                client_settings: Arc::new(Settings {
                    http: http.clone(),
                    on_persist: None,
                    max_body_bytes: crate::http::DEFAULT_MAX_BODY_BYTES,
                }),
                http,
                state: RwLock::new(ProviderState::default()),
                load: Mutex::new(None),
                documents: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The configuration every client of this provider uses.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// Whether the provider's endpoints are known.
    pub fn is_ready(&self) -> bool {
        self.state().metadata().is_some()
    }

    /// What is known of the provider now (cheap: shared pointers).
    pub fn state(&self) -> ProviderState {
        self.inner.state.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Discovery, the signing keys (when the configuration checks ID token signatures) and
    /// the instance's sites, fetched once per process. Concurrent callers share one load; a
    /// failed load is tried again by the next caller. `Err(Error::Discovery(_))` when the
    /// discovery document could not be had (the ERP.net preset falls back to its fixed
    /// paths instead).
    pub async fn ready(&self) -> Result<(), Error> {
        if self.is_ready() {
            return Ok(());
        }
        let load = {
            let mut slot = self.inner.load.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(slot.get_or_insert_with(|| Arc::new(OnceCell::new())))
        };
        let result = load.get_or_init(|| self.load()).await.clone();
        let mut slot = self.inner.load.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, &load)) {
            // Settled: a success needs no cell any more, a failure is retried.
            *slot = None;
        }
        result
    }

    /// A builder of one user's client on this provider (its HTTP client shared too).
    pub fn client(&self) -> ClientBuilder {
        ClientBuilder::new(Arc::clone(&self.inner.config)).provider(self)
    }

    /// Takes over what a session learned of the provider (a document it fetched).
    pub(crate) fn learn(&self, learned: ProviderState) {
        let mut state = self.inner.state.write().unwrap_or_else(PoisonError::into_inner);
        *state = learned.or(&state);
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn client_settings(&self) -> Arc<Settings> {
        Arc::clone(&self.inner.client_settings)
    }

    /// The answer for `url`: fetched by `fetch` unless another session's fetch of it is
    /// under way or answered within [`REUSE`]. A failure is not reused.
    pub(crate) async fn load_once(
        &self,
        url: &str,
        fetch: impl std::future::Future<Output = Result<HttpResponse, TransportError>>,
    ) -> Result<HttpResponse, TransportError> {
        let document = {
            let mut documents = self.inner.documents.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            documents.retain(|_, document| document.is_fresh(now));
            Arc::clone(
                documents
                    .entry(url.to_owned())
                    .or_insert_with(|| Arc::new(Document { answer: OnceCell::new(), answered_at: Mutex::new(None) })),
            )
        };
        let answer = document
            .answer
            .get_or_init(|| async {
                let answer = fetch.await;
                *document.answered_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                answer
            })
            .await
            .clone();
        if answer.is_err() {
            let mut documents = self.inner.documents.lock().unwrap_or_else(PoisonError::into_inner);
            if documents.get(url).is_some_and(|current| Arc::ptr_eq(current, &document)) {
                documents.remove(url);
            }
        }
        answer
    }

    /// One load: a session of the provider's own fetches what is missing.
    async fn load(&self) -> Result<(), Error> {
        let state = self.state();
        let config = Arc::clone(&self.inner.config);
        let mut session =
            Session::with_provider(config, &state, None, erpnet_auth::OsRandom).map_err(Error::Snapshot)?;
        let timeout_ms = session.config().timing().request_timeout_ms;
        let mut requests: JoinSet<(RequestId, Result<HttpResponse, TransportError>)> = JoinSet::new();
        let mut failed = None;
        let mut asked_for_keys = false;
        loop {
            loop {
                match session.poll() {
                    Output::Http(request) => {
                        let http = self.inner.http.clone();
                        let deadline = instant_of(request.deadline.unwrap_or_else(|| now_ms() + timeout_ms));
                        let id = request.id;
                        requests.spawn(async move { (id, crate::http::send(&http, request, Some(deadline), 0).await) });
                    }
                    Output::Event(Event::DiscoveryFailed { error }) => failed = Some(error),
                    Output::VerifySignature(_) | Output::Persist(_) | Output::Event(_) => {}
                    Output::WaitUntil(_) | Output::Idle => break,
                }
            }
            // The keys are fetched by a session when a sign-in will check an ID token: a
            // sign-in begun here (and forgotten) fetches them for the whole process.
            if !asked_for_keys
                && session.is_provider_ready()
                && session.config().grant() == GrantKind::AuthorizationCode
            {
                asked_for_keys = true;
                // Ignored: a configuration that needs no keys fetches none.
                let _ = session.sign_in(now_ms(), SignInOptions::new());
                continue;
            }
            let Some(joined) = requests.join_next().await else { break };
            let (id, answer) = match joined {
                Ok(answered) => answered,
                // The task only ends by answering; a panic is reported as a failed load.
                Err(_) => return Err(Error::Discovery(erpnet_auth::DiscoveryError::Transport)),
            };
            let handled = match answer {
                Ok(response) => session.handle_response(now_ms(), id, response),
                Err(error) => session.handle_transport_error(now_ms(), id, error),
            };
            handled?;
        }
        self.learn(session.provider_state());
        match failed {
            Some(error) if !session.is_provider_ready() => Err(Error::Discovery(error)),
            _ => Ok(()),
        }
    }
}
