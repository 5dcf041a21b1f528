//! Configuration, validated once when it is built: a session never meets an invalid one.

use crate::urls::{WebOrigin, WebUrl};
use base64::Engine;
use serde::{Deserialize, Serialize};

pub use crate::discovery::ProviderMetadata;
use crate::http::Method;
use crate::jwks::SigningAlgorithm;
use crate::secret::{AccessToken, ClientSecret};
use crate::setting::{
    directory, normalize_scope, parse_endpoint, parse_instance_root, parse_issuer, parse_redirect_uri, ConfigError,
};

/// The scope the ERP.net preset asks for unless told otherwise.
pub const ERPNET_DEFAULT_SCOPE: &str = "openid profile offline_access read";

/// How the client authenticates at the token and revocation endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body: ERP.net's documented method, and
    /// safe for ids containing `/`.
    ClientSecretPost,
    /// HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// A public client (a single-page app): `client_id` in the body, no secret, PKCE
    /// protects the code. Named `none` on the wire (OAuth's `token_endpoint_auth_method`).
    #[serde(rename = "none")]
    Public,
}

/// The authorization `response_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
#[non_exhaustive]
pub enum ResponseType {
    /// `code`, always with PKCE S256: today's recommendation.
    #[serde(rename = "code")]
    Code,
    /// `code id_token`, the OpenID Connect hybrid flow of the seed page.
    #[serde(rename = "code id_token")]
    CodeIdToken,
}

impl ResponseType {
    /// The value on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResponseType::Code => "code",
            ResponseType::CodeIdToken => "code id_token",
        }
    }
}

/// Where the authorization response parameters arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResponseMode {
    /// In the redirect URL's query (the default for `code`).
    Query,
    /// In the redirect URL's fragment (the default for `code id_token`).
    Fragment,
    /// In a form POSTed to the redirect URI.
    FormPost,
}

impl ResponseMode {
    fn as_str(&self) -> &'static str {
        match self {
            ResponseMode::Query => "query",
            ResponseMode::Fragment => "fragment",
            ResponseMode::FormPost => "form_post",
        }
    }
}

/// Which grant obtains tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrantKind {
    /// A user signs in through the browser; tokens are renewed with the refresh token.
    AuthorizationCode,
    /// The application acts as itself (ERP.net runs it as the app's system user); tokens are
    /// renewed by asking again.
    ClientCredentials,
    /// A static reference token (ERP.net's Automation applications: `enrt_…`, issued in the
    /// UI) sent as the Bearer: no sign-in, no token request, no renewal.
    ReferenceToken,
}

/// Which API calls the session sends again after a `429 Too Many Requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "typescript", derive(tsify::Tsify), serde(rename_all = "camelCase"))]
#[non_exhaustive]
pub enum ThrottleRetry {
    /// None: every 429 goes to the caller.
    Never,
    /// `GET`, `HEAD`, `OPTIONS`, `PUT` and `DELETE` (RFC 9110's idempotent methods): the
    /// default for APIs other than ERP.net's, where a 429 may not say whether the request ran.
    IdempotentMethods,
    /// Every method, `POST` included: ERP.net's default. Its 429 comes from the session's
    /// request limit, before the request is executed, so sending it again cannot run it twice.
    AllMethods,
}

impl ThrottleRetry {
    pub(crate) fn allows(self, method: &Method) -> bool {
        match self {
            ThrottleRetry::Never => false,
            ThrottleRetry::AllMethods => true,
            ThrottleRetry::IdempotentMethods => {
                matches!(method, Method::Get | Method::Head | Method::Options | Method::Put | Method::Delete)
            }
        }
    }
}

/// How many API requests of one session ERP.net runs and queues: one runs, five wait, the
/// next is answered 429 (`SessionConcurrentRequests`, platform default). The preset keeps
/// three in flight: one running and two waiting at the server hide the round trip, and three
/// queue places stay free for the session's other clients (tabs, processes) before anything
/// is refused.
pub const ERPNET_DEFAULT_API_CONCURRENCY: u32 = 3;

/// Timing policy. All durations in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// Renew this long before the access token expires (capped at half its lifetime).
    pub renew_before_ms: u64,
    /// Treat a token as expired this long before its expiry, for clock skew and latency
    /// (capped at a quarter of its lifetime).
    pub clock_skew_ms: u64,
    /// A callback arriving later than this after its sign-in began is refused.
    pub callback_max_age_ms: u64,
    /// First retry delay after a transient refresh failure; doubles each attempt.
    pub retry_base_ms: u64,
    /// Upper bound of one retry delay.
    pub retry_max_ms: u64,
    /// Attempts of one renewal before it gives up: waiting calls then fail, and calls fail
    /// at once, without a request, for `retry_max_ms`; the next call after that tries again.
    /// An outage therefore costs at most one token request per `retry_max_ms`.
    pub max_refresh_attempts: u32,
    /// Token, discovery, auto-discovery, key-set and revocation requests not answered this
    /// long after they were emitted count as a transport timeout (the slot is freed; a late
    /// answer is ignored). Drivers abort the real request at
    /// [`HttpRequest::deadline`](crate::HttpRequest::deadline), or this long after sending
    /// one emitted before the session knew the time
    /// ([`HttpRequest::timeout_ms`](crate::HttpRequest::timeout_ms)).
    pub request_timeout_ms: u64,
    /// Proactive renewals are at least this far apart (a 1-second token does not refresh
    /// twice a second); a call that finds the token expired still renews on demand.
    pub min_renewal_interval_ms: u64,
    /// A 401 for the current token, when a renewal brought it less than this long ago, goes
    /// to the caller without another refresh (an API that refuses every token costs one
    /// refresh per cooldown, not one per call) — unless the token is within
    /// [`clock_skew_ms`](Self::clock_skew_ms) of its expiry (or past it), or, of unknown
    /// lifetime, it worked before or is as old as one that stopped working: then the 401 is
    /// its expiry, and it is renewed and the call replayed.
    pub rejection_cooldown_ms: u64,
    /// Renew proactively also when no call used the current token (default: only sessions
    /// in use are renewed on a timer; an idle one renews when its next call comes).
    pub renew_idle_sessions: bool,
    /// The lifetime assumed for an access token whose answer had no usable `expires_in`
    /// (RFC 6749 lets a server omit it). A token that ends sooner is renewed on its 401.
    pub assumed_lifetime_ms: u64,
    /// First wait before an API call answered `429 Too Many Requests` is sent again; doubles
    /// each time, with jitter, at least the server's `Retry-After`.
    pub throttle_retry_base_ms: u64,
    /// Upper bound of one such wait (a longer `Retry-After` ends the retries: the 429 goes
    /// to the caller).
    pub throttle_retry_max_ms: u64,
    /// How often one call is sent again after a 429 before the 429 goes to the caller.
    pub max_throttle_retries: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            renew_before_ms: 60_000,
            clock_skew_ms: 5_000,
            callback_max_age_ms: 15 * 60_000,
            retry_base_ms: 1_000,
            retry_max_ms: 30_000,
            max_refresh_attempts: 4,
            assumed_lifetime_ms: 3_600_000,
            request_timeout_ms: 30_000,
            min_renewal_interval_ms: 10_000,
            rejection_cooldown_ms: 60_000,
            renew_idle_sessions: false,
            throttle_retry_base_ms: 500,
            throttle_retry_max_ms: 15_000,
            max_throttle_retries: 5,
        }
    }
}

/// Where the provider's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProviderSource {
    /// Fetch `{issuer}/.well-known/openid-configuration`; on failure use `fallback`, if any.
    /// With `on_issuer_origin` (the ERP.net preset) every endpoint of the document must be on
    /// the issuer's origin.
    Discover { issuer: String, fallback: Option<ProviderMetadata>, on_issuer_origin: bool },
    /// Use these endpoints; fetch nothing.
    Fixed(ProviderMetadata),
}

/// A validated configuration. Build it with [`Config::erpnet`], [`Config::discover`] or
/// [`Config::with_endpoints`].
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) provider: ProviderSource,
    pub(crate) client_id: String,
    pub(crate) client_secret: Option<ClientSecret>,
    pub(crate) client_auth: ClientAuth,
    pub(crate) grant: GrantKind,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) response_type: ResponseType,
    pub(crate) response_mode: Option<ResponseMode>,
    pub(crate) pkce: bool,
    pub(crate) scope: String,
    pub(crate) api_root: Option<WebUrl>,
    pub(crate) api_origins: Vec<WebOrigin>,
    pub(crate) timing: Timing,
    pub(crate) validate_id_tokens: bool,
    pub(crate) verify_token_endpoint_signature: bool,
    pub(crate) id_token_algorithms: Vec<SigningAlgorithm>,
    pub(crate) persist_tokens: bool,
    pub(crate) snapshot_provider: bool,
    pub(crate) host_signatures: bool,
    pub(crate) api_concurrency: Option<u32>,
    pub(crate) throttle_retry: ThrottleRetry,
    pub(crate) reference_token: Option<AccessToken>,
    /// The ERP.net instance root whose auto-discovery document names its sites, when the
    /// preset discovers; `api_root_explicit` keeps a configured API root over a discovered one.
    pub(crate) sites_root: Option<WebUrl>,
    pub(crate) api_root_explicit: bool,
}

/// Header and body of a token-endpoint POST, client authentication included.
pub(crate) struct TokenRequestParts {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Config {
    /// The ERP.net preset for an instance root such as `https://demodb.my.erp.net`: authority
    /// `{root}/id` (discovered, with the documented fixed paths as the fallback), Domain API
    /// root `{root}/api/domain/odata/`, scope [`ERPNET_DEFAULT_SCOPE`], `client_secret_post`.
    /// Every endpoint of the discovered document must be on the instance's origin.
    pub fn erpnet(instance_root: &str) -> ConfigBuilder {
        ConfigBuilder::new(Preset::Erpnet(instance_root.to_owned()))
    }

    /// Any OpenID Connect provider, found through discovery at
    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discover(issuer: &str) -> ConfigBuilder {
        ConfigBuilder::new(Preset::Discover(issuer.to_owned()))
    }

    /// Any OAuth 2.0 / OpenID Connect provider with known endpoints; nothing is fetched.
    pub fn with_endpoints(metadata: ProviderMetadata) -> ConfigBuilder {
        ConfigBuilder::new(Preset::Fixed(metadata))
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The scope asked for.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The Domain API root that relative call URLs resolve against, if any.
    pub fn api_root(&self) -> Option<&str> {
        self.api_root.as_ref().map(WebUrl::as_str)
    }

    /// The timing policy.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The most API requests in flight at once, if limited.
    pub fn api_concurrency(&self) -> Option<u32> {
        self.api_concurrency
    }

    /// Whether snapshots carry the tokens.
    pub fn persists_tokens(&self) -> bool {
        self.persist_tokens
    }

    /// Whether snapshots carry the provider's metadata, signing keys and the instance's
    /// sites (false when a process shares them through [`ProviderState`](crate::ProviderState)).
    pub fn snapshots_provider(&self) -> bool {
        self.snapshot_provider
    }

    /// The grant.
    pub fn grant(&self) -> GrantKind {
        self.grant
    }

    /// ID tokens are validated when the scope asks for `openid` and validation is on.
    pub(crate) fn id_tokens_checked(&self) -> bool {
        self.validate_id_tokens && self.scope.split(' ').any(|s| s == "openid")
    }

    /// Whether some ID token of a sign-in needs the provider's keys. The hybrid flow's
    /// front-channel token is checked whatever `validate_id_tokens` says: it authenticates a
    /// code that arrived through the browser.
    pub(crate) fn needs_signing_keys(&self) -> bool {
        self.response_type == ResponseType::CodeIdToken
            || (self.id_tokens_checked() && self.verify_token_endpoint_signature)
    }

    /// The issuer this configuration expects.
    pub fn issuer(&self) -> &str {
        match &self.provider {
            ProviderSource::Discover { issuer, .. } => issuer,
            ProviderSource::Fixed(m) => &m.issuer,
        }
    }

    pub(crate) fn effective_response_mode(&self) -> ResponseMode {
        match (self.response_mode, self.response_type) {
            (Some(mode), _) => mode,
            (None, ResponseType::Code) => ResponseMode::Query,
            (None, ResponseType::CodeIdToken) => ResponseMode::Fragment,
        }
    }

    /// The `response_mode` parameter to send: only when it differs from the default.
    pub(crate) fn response_mode_param(&self) -> Option<&'static str> {
        let default = match self.response_type {
            ResponseType::Code => ResponseMode::Query,
            ResponseType::CodeIdToken => ResponseMode::Fragment,
        };
        let mode = self.effective_response_mode();
        (mode != default).then(|| mode.as_str())
    }

    /// Builds the form body: client authentication fields first when posted (as the ERP.net
    /// examples order them), then the grant's own parameters.
    pub(crate) fn token_request(&self, params: &[(&str, &str)]) -> TokenRequestParts {
        let mut form = form_urlencoded::Serializer::new(String::new());
        let mut headers = vec![
            ("Content-Type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
            ("Accept".to_owned(), "application/json".to_owned()),
        ];
        match (self.client_auth, &self.client_secret) {
            (ClientAuth::ClientSecretPost, Some(secret)) => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", secret.secret());
            }
            (ClientAuth::ClientSecretBasic, Some(secret)) => {
                // RFC 6749 §2.3.1: each part form-encoded before base64.
                let user: String = form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect();
                let pass: String = form_urlencoded::byte_serialize(secret.secret().as_bytes()).collect();
                let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                headers.push(("Authorization".to_owned(), format!("Basic {credentials}")));
            }
            _ => {
                form.append_pair("client_id", &self.client_id);
            }
        }
        for (name, value) in params {
            form.append_pair(name, value);
        }
        TokenRequestParts { headers, body: form.finish().into_bytes() }
    }
}

#[derive(Debug, Clone)]
enum Preset {
    Erpnet(String),
    Discover(String),
    Fixed(ProviderMetadata),
}

/// Builds a [`Config`]; every check happens in [`build`](ConfigBuilder::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    preset: Preset,
    discovery: bool,
    client_id: Option<String>,
    client_secret: Option<ClientSecret>,
    client_auth: Option<ClientAuth>,
    grant: GrantKind,
    redirect_uri: Option<String>,
    response_type: ResponseType,
    response_mode: Option<ResponseMode>,
    pkce: bool,
    scope: Option<String>,
    api_root: Option<String>,
    extra_api_origins: Vec<String>,
    timing: Timing,
    validate_id_tokens: bool,
    verify_token_endpoint_signature: bool,
    id_token_algorithms: Vec<SigningAlgorithm>,
    persist_tokens: bool,
    snapshot_provider: bool,
    host_signatures: bool,
    api_concurrency: Option<Option<u32>>,
    throttle_retry: Option<ThrottleRetry>,
    reference_token: Option<AccessToken>,
}

impl ConfigBuilder {
    fn new(preset: Preset) -> Self {
        ConfigBuilder {
            preset,
            discovery: true,
            client_id: None,
            client_secret: None,
            client_auth: None,
            grant: GrantKind::AuthorizationCode,
            redirect_uri: None,
            response_type: ResponseType::Code,
            response_mode: None,
            pkce: true,
            scope: None,
            api_root: None,
            extra_api_origins: Vec::new(),
            timing: Timing::default(),
            validate_id_tokens: true,
            verify_token_endpoint_signature: true,
            id_token_algorithms: vec![SigningAlgorithm::RS256, SigningAlgorithm::PS256, SigningAlgorithm::ES256],
            persist_tokens: true,
            snapshot_provider: true,
            host_signatures: !cfg!(feature = "id-token-signatures"),
            api_concurrency: None,
            throttle_retry: None,
            reference_token: None,
        }
    }

    /// The client id (ERP.net's `ApplicationUri`, which may contain `/`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The plain client secret of a confidential client.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(ClientSecret::new(secret));
        self
    }

    /// How to authenticate the client. Default: `client_secret_post` with a secret, `none`
    /// without.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = Some(auth);
        self
    }

    /// The redirect URI, exactly as registered (ERP.net's `ImpersonateLoginUrl`): `https`, or
    /// `http` on loopback (`127.0.0.1`, `[::1]`, `localhost`); any other scheme
    /// (`javascript:`, `data:`, an app's own) is refused by [`build`](Self::build).
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

    /// `code` (default) or `code id_token`.
    pub fn response_type(mut self, response_type: ResponseType) -> Self {
        self.response_type = response_type;
        self
    }

    /// Where the callback parameters arrive. Default: query for `code`, fragment for hybrid.
    pub fn response_mode(mut self, mode: ResponseMode) -> Self {
        self.response_mode = Some(mode);
        self
    }

    /// Switches PKCE off. Allowed only for `code id_token` (to talk to servers that reject it).
    pub fn pkce(mut self, enabled: bool) -> Self {
        self.pkce = enabled;
        self
    }

    /// The space-separated scope to ask for.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Use the `client_credentials` grant instead of a user sign-in.
    pub fn client_credentials(mut self) -> Self {
        self.grant = GrantKind::ClientCredentials;
        self
    }

    /// Calls the API with a personal or service reference token (`enrt_…`) as a static
    /// Bearer, with the same confinement to the API origins and the same request limit. A 401
    /// ends it with `SignInRequired(ReferenceTokenRejected)`: a reference token cannot be
    /// renewed. The token lives in the configuration, never in a snapshot; no client id or
    /// redirect URI is needed.
    pub fn reference_token(mut self, token: impl Into<String>) -> Self {
        self.grant = GrantKind::ReferenceToken;
        self.reference_token = Some(AccessToken::new(token.into()));
        self
    }

    /// The API root relative call URLs resolve against; its origin may receive the token.
    pub fn api_root(mut self, root: impl Into<String>) -> Self {
        self.api_root = Some(root.into());
        self
    }

    /// Another origin that may receive the access token.
    pub fn allow_api_origin(mut self, origin: impl Into<String>) -> Self {
        self.extra_api_origins.push(origin.into());
        self
    }

    /// Whether to fetch the discovery document (default yes). With the ERP.net preset and
    /// `false`, the documented fixed paths are used directly.
    pub fn discovery(mut self, enabled: bool) -> Self {
        self.discovery = enabled;
        self
    }

    /// Whether ID tokens are validated (default yes): signature, issuer, audience, times,
    /// nonce, hashes. Switch off only for a provider whose ID tokens cannot be (tests that
    /// feed placeholder tokens do).
    pub fn validate_id_tokens(mut self, enabled: bool) -> Self {
        self.validate_id_tokens = enabled;
        self
    }

    /// Whether the token endpoint's ID token has its signature checked too (default yes).
    /// Its claims are always checked; TLS already vouches for its origin (OIDC Core
    /// §3.1.3.7). The hybrid flow's front-channel ID token is always signature-checked.
    pub fn verify_token_endpoint_signature(mut self, enabled: bool) -> Self {
        self.verify_token_endpoint_signature = enabled;
        self
    }

    /// At most this many API requests of the session in flight at once; the rest wait in
    /// order (cancellable). `None`: no limit. Default: [`ERPNET_DEFAULT_API_CONCURRENCY`]
    /// with the ERP.net preset (whose sessions run one request at a time), no limit otherwise.
    pub fn api_concurrency(mut self, limit: Option<u32>) -> Self {
        self.api_concurrency = Some(limit);
        self
    }

    /// Which API calls are sent again after a 429 (with backoff, see [`Timing`]). Default:
    /// [`ThrottleRetry::AllMethods`] with the ERP.net preset, else
    /// [`ThrottleRetry::IdempotentMethods`].
    pub fn throttle_retry(mut self, policy: ThrottleRetry) -> Self {
        self.throttle_retry = Some(policy);
        self
    }

    /// Whether the host verifies ID token signatures (default: yes without the
    /// `id-token-signatures` feature, no with it). The session then emits
    /// [`Output::VerifySignature`](crate::Output::VerifySignature) for each signature and
    /// waits for [`Session::handle_signature`](crate::Session::handle_signature); everything
    /// else about the token (algorithm, key choice and strength, claims) it still checks
    /// itself. The npm package answers with `node:crypto` where the runtime has it (Node,
    /// Bun, Deno), else with WebCrypto.
    pub fn host_verifies_signatures(mut self, enabled: bool) -> Self {
        self.host_signatures = enabled;
        self
    }

    /// Whether snapshots carry the tokens (default yes). With `false` the tokens live only in
    /// the session's memory and a snapshot holds the pending sign-in and the provider's
    /// metadata: what a browser app following the browser-apps BCP keeps in session storage
    /// across the sign-in redirect, so that a script injected into the page finds no refresh
    /// token at rest. After a reload such a session is signed out; sign in again with
    /// `prompt=none` (a top-level redirect that returns without a login page while the user
    /// still has a session at the provider). Tokens found in a stored snapshot are ignored.
    pub fn persist_tokens(mut self, enabled: bool) -> Self {
        self.persist_tokens = enabled;
        self
    }

    /// Whether snapshots carry the provider's metadata, signing keys and the instance's
    /// sites (default yes). A server whose sessions share one
    /// [`ProviderState`](crate::ProviderState) per process turns it off: each user's stored
    /// snapshot then holds only that user's state, and a session restored without the
    /// shared state discovers the provider again. Provider documents found in a stored
    /// snapshot are then ignored ([`Warning::StoredProviderDataIgnored`](crate::error::Warning::StoredProviderDataIgnored)):
    /// only someone else could have written them. With `true`, a stored document is used
    /// only while the session knows none of its own, and never passed on to a
    /// [`ProviderState`](crate::ProviderState).
    pub fn snapshot_provider(mut self, enabled: bool) -> Self {
        self.snapshot_provider = enabled;
        self
    }

    /// The signing algorithms accepted for ID tokens (default RS256, PS256, ES256).
    pub fn id_token_algorithms(mut self, algorithms: &[SigningAlgorithm]) -> Self {
        self.id_token_algorithms = algorithms.to_vec();
        self
    }

    /// The timing policy.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Validates everything and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let erpnet = matches!(self.preset, Preset::Erpnet(_));
        if self.api_concurrency == Some(Some(0)) {
            return Err(ConfigError::ZeroApiConcurrency);
        }
        let (provider, default_scope, default_api_root) = match &self.preset {
            Preset::Erpnet(root) => {
                let root = parse_issuer("instance root", root)?;
                let base = root.as_str().trim_end_matches('/').to_owned();
                let metadata = ProviderMetadata::erpnet_fixed(&base);
                let provider = if self.discovery {
                    ProviderSource::Discover {
                        issuer: metadata.issuer.clone(),
                        fallback: Some(metadata),
                        on_issuer_origin: true,
                    }
                } else {
                    ProviderSource::Fixed(metadata)
                };
                (provider, Some(ERPNET_DEFAULT_SCOPE), Some(format!("{base}/api/domain/odata/")))
            }
            Preset::Discover(issuer) => {
                let issuer = parse_issuer("issuer", issuer)?;
                let issuer = issuer.as_str().trim_end_matches('/').to_owned();
                (ProviderSource::Discover { issuer, fallback: None, on_issuer_origin: false }, None, None)
            }
            Preset::Fixed(metadata) => {
                metadata.validate()?;
                (ProviderSource::Fixed(metadata.clone()), None, None)
            }
        };

        let reference = self.grant == GrantKind::ReferenceToken;
        if let Some(token) = &self.reference_token {
            // Sent as a header value: visible ASCII only, nothing that could end the header.
            let token = token.secret();
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::InvalidReferenceToken);
            }
        }
        let client_id = match self.client_id.filter(|id| !id.is_empty()) {
            Some(id) => id,
            None if reference => String::new(),
            None => return Err(ConfigError::Missing("client_id")),
        };
        if client_id.chars().any(char::is_control) {
            return Err(ConfigError::InvalidClientId);
        }
        if self.client_secret.as_ref().is_some_and(|s| s.secret().is_empty()) {
            return Err(ConfigError::Missing("a non-empty client_secret"));
        }
        let client_auth = self.client_auth.unwrap_or(if self.client_secret.is_some() {
            ClientAuth::ClientSecretPost
        } else {
            ClientAuth::Public
        });
        match (client_auth, &self.client_secret) {
            (ClientAuth::Public, Some(_)) => return Err(ConfigError::PublicClientWithSecret),
            (ClientAuth::ClientSecretPost, None) => return Err(ConfigError::SecretRequired("client_secret_post")),
            (ClientAuth::ClientSecretBasic, None) => return Err(ConfigError::SecretRequired("client_secret_basic")),
            _ => {}
        }
        if self.grant == GrantKind::ClientCredentials && client_auth == ClientAuth::Public {
            return Err(ConfigError::SecretRequired("the client_credentials grant"));
        }

        let redirect_uri = match (self.grant, self.redirect_uri) {
            (GrantKind::AuthorizationCode, None) => return Err(ConfigError::Missing("redirect_uri")),
            (_, Some(uri)) => Some(parse_redirect_uri(&uri)?),
            (GrantKind::ClientCredentials | GrantKind::ReferenceToken, None) => None,
        };
        if self.response_type == ResponseType::CodeIdToken && self.response_mode == Some(ResponseMode::Query) {
            return Err(ConfigError::HybridWithQuery);
        }
        if !self.pkce && self.response_type == ResponseType::Code {
            return Err(ConfigError::PkceRequired);
        }

        let scope = match self.scope.as_deref().or(default_scope) {
            Some(scope) => normalize_scope(scope)?,
            None if self.grant != GrantKind::AuthorizationCode => String::new(),
            None => "openid".to_owned(),
        };

        if self.response_type == ResponseType::CodeIdToken && !scope.split(' ').any(|s| s == "openid") {
            return Err(ConfigError::HybridWithoutOpenid);
        }

        let sites_root = match &self.preset {
            Preset::Erpnet(root) if self.discovery => Some(parse_instance_root(root)?),
            _ => None,
        };
        let api_root_explicit = self.api_root.is_some();
        let api_root = match self.api_root.or(default_api_root) {
            Some(root) => Some(directory("api_root", parse_endpoint("api_root", &root)?)?),
            None => None,
        };
        let mut api_origins: Vec<WebOrigin> = api_root.iter().map(WebUrl::origin).collect();
        for origin in &self.extra_api_origins {
            api_origins.push(parse_endpoint("api origin", origin)?.origin());
        }

        Ok(Config {
            provider,
            client_id,
            client_secret: self.client_secret,
            client_auth,
            grant: self.grant,
            redirect_uri,
            response_type: self.response_type,
            response_mode: self.response_mode,
            pkce: self.pkce,
            scope,
            api_root,
            api_origins,
            timing: self.timing,
            validate_id_tokens: self.validate_id_tokens,
            verify_token_endpoint_signature: self.verify_token_endpoint_signature,
            id_token_algorithms: self.id_token_algorithms,
            // Only a user's tokens are stored. A reference token lives in the configuration; a
            // client-credentials token is one process's (ERP.net's licence rule: each running
            // instance of a service keeps its own session), so never in a shared store.
            persist_tokens: self.persist_tokens && self.grant == GrantKind::AuthorizationCode,
            snapshot_provider: self.snapshot_provider,
            reference_token: self.reference_token,
            sites_root,
            api_root_explicit,
            host_signatures: self.host_signatures,
            api_concurrency: self.api_concurrency.unwrap_or(erpnet.then_some(ERPNET_DEFAULT_API_CONCURRENCY)),
            throttle_retry: self.throttle_retry.unwrap_or(if erpnet {
                ThrottleRetry::AllMethods
            } else {
                ThrottleRetry::IdempotentMethods
            }),
        })
    }
}
