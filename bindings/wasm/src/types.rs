//! The values that cross the JavaScript boundary. Their TypeScript definitions are generated
//! from these types (tsify), so they are never written twice.

use erpnet_auth as core;
use serde::Serialize;
use tsify::Tsify;
use wasm_bindgen::JsValue;

use crate::fields::Fields;
use crate::{error, to_f64};

/// Timing policy, milliseconds (non-negative integers; anything else is refused).
#[derive(Tsify, Default)]
#[serde(rename_all = "camelCase")]
pub struct TimingOptions {
    /// Renew this long before expiry (default 60000).
    #[tsify(optional)]
    pub renew_before_ms: Option<f64>,
    /// Clock-skew allowance (default 5000).
    #[tsify(optional)]
    pub clock_skew_ms: Option<f64>,
    /// Oldest acceptable callback (default 900000).
    #[tsify(optional)]
    pub callback_max_age_ms: Option<f64>,
    /// First retry delay (default 1000).
    #[tsify(optional)]
    pub retry_base_ms: Option<f64>,
    /// Longest retry delay (default 30000).
    #[tsify(optional)]
    pub retry_max_ms: Option<f64>,
    /// Attempts per renewal before a cooldown of `retryMaxMs` (default 4).
    #[tsify(optional)]
    pub max_refresh_attempts: Option<u32>,
    /// Lifetime assumed when `expires_in` is absent or unusable (default 3600000).
    #[tsify(optional)]
    pub assumed_lifetime_ms: Option<f64>,
    /// Deadline of token, discovery and key-set requests (default 30000).
    #[tsify(optional)]
    pub request_timeout_ms: Option<f64>,
    /// Proactive renewals at least this far apart (default 10000).
    #[tsify(optional)]
    pub min_renewal_interval_ms: Option<f64>,
    /// A brand-new token's 401 goes to the caller without a refresh for this long (default 60000).
    #[tsify(optional)]
    pub rejection_cooldown_ms: Option<f64>,
    /// Renew on a timer also when no call used the token (default false).
    #[tsify(optional)]
    pub renew_idle_sessions: Option<bool>,
    /// First wait before a call answered 429 is sent again (default 500).
    #[tsify(optional)]
    pub throttle_retry_base_ms: Option<f64>,
    /// Longest such wait; a longer `Retry-After` goes to the caller (default 15000).
    #[tsify(optional)]
    pub throttle_retry_max_ms: Option<f64>,
    /// Times one call is sent again after a 429 (default 5; 0: never).
    #[tsify(optional)]
    pub max_throttle_retries: Option<u32>,
}

/// Which API calls are sent again after a 429.
#[derive(Tsify, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub enum ThrottleRetry {
    /// None.
    Never,
    /// GET, HEAD, OPTIONS, PUT, DELETE (default outside ERP.net).
    IdempotentMethods,
    /// Every method (ERP.net's default: its 429 comes before execution).
    AllMethods,
}

/// Everything a session is configured with. Give exactly one of `instance` (the ERP.net
/// preset), `issuer` (discovery) or `endpoints`. Unknown option names are refused.
#[derive(Tsify)]
#[serde(rename_all = "camelCase")]
pub struct ClientOptions {
    /// ERP.net instance root, e.g. `https://demodb.my.erp.net`.
    #[tsify(optional)]
    pub instance: Option<String>,
    /// Any OpenID Connect issuer (found through discovery).
    #[tsify(optional)]
    pub issuer: Option<String>,
    /// Explicit endpoints, named as in a discovery document (`issuer`,
    /// `authorization_endpoint`, `token_endpoint`, `jwks_uri`, `userinfo_endpoint`,
    /// `end_session_endpoint`, `revocation_endpoint`, …); nothing is fetched.
    #[tsify(optional, type = "ProviderMetadata")]
    pub endpoints: Option<core::ProviderMetadata>,
    /// The client id (ERP.net's `ApplicationUri`); not needed with `referenceToken`.
    #[tsify(optional)]
    pub client_id: Option<String>,
    /// The plain client secret (confidential clients, servers only).
    #[tsify(optional)]
    pub client_secret: Option<String>,
    /// Default: `client_secret_post` with a secret, `none` without.
    #[tsify(optional)]
    pub client_auth: Option<core::ClientAuth>,
    /// The registered redirect URI.
    #[tsify(optional)]
    pub redirect_uri: Option<String>,
    /// Default `code`.
    #[tsify(optional)]
    pub response_type: Option<core::ResponseType>,
    /// Default: `query` for `code`, `fragment` for hybrid.
    #[tsify(optional)]
    pub response_mode: Option<core::ResponseMode>,
    /// Default (ERP.net): `openid profile offline_access read`.
    #[tsify(optional)]
    pub scope: Option<String>,
    /// PKCE; may be switched off only for the hybrid flow.
    #[tsify(optional)]
    pub pkce: Option<bool>,
    /// Fetch the discovery document (default true).
    #[tsify(optional)]
    pub discovery: Option<bool>,
    /// The API root relative URLs resolve against (ERP.net: `{instance}/api/domain/odata/`).
    #[tsify(optional)]
    pub api_root: Option<String>,
    /// Further origins that may receive the access token.
    #[tsify(optional)]
    pub api_origins: Option<Vec<String>>,
    /// Use the `client_credentials` grant.
    #[tsify(optional)]
    pub client_credentials: Option<bool>,
    /// Call the API with this reference token (`enrt_…`, ERP.net Automation) as a static
    /// Bearer: no sign-in, no renewal; a 401 ends it with `reference_token_rejected`.
    #[tsify(optional)]
    pub reference_token: Option<String>,
    /// Validate ID tokens (default true): signature, issuer, audience, times, nonce, hashes.
    #[tsify(optional)]
    pub validate_id_tokens: Option<bool>,
    /// Check the token endpoint's ID token's signature too (default true).
    #[tsify(optional)]
    pub verify_token_endpoint_signature: Option<bool>,
    /// The ID token signing algorithms accepted (default all three).
    #[tsify(optional)]
    pub id_token_algorithms: Option<Vec<core::SigningAlgorithm>>,
    /// Whether stored snapshots carry the tokens (default true). `false` keeps them in
    /// memory only; the store then holds the pending sign-in across the redirect.
    #[tsify(optional)]
    pub persist_tokens: Option<bool>,
    /// Whether stored snapshots carry the provider's metadata, keys and the instance's
    /// sites (default true; a `SharedClient`'s sessions share them and leave them out).
    #[tsify(optional)]
    pub snapshot_provider: Option<bool>,
    /// At most this many API requests in flight; the rest wait in order. `null`: no
    /// limit. Default 3 with `instance` (ERP.net runs one request per session and queues
    /// five), no limit otherwise.
    #[tsify(optional, type = "number | null")]
    pub api_concurrency: Option<Option<u32>>,
    /// Which API calls are sent again after a 429 (default `allMethods` with `instance`,
    /// `idempotentMethods` otherwise).
    #[tsify(optional)]
    pub throttle_retry: Option<ThrottleRetry>,
    /// Timing policy.
    #[tsify(optional)]
    pub timing: Option<TimingOptions>,
}

/// A timing value: absent keeps the default; otherwise a non-negative whole number of
/// milliseconds below 10^15, or refused.
fn ms(name: &str, value: Option<f64>, default: u64) -> Result<u64, JsValue> {
    match value {
        None => Ok(default),
        // Validated range and integrality: the conversion is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(v) if (0.0..1e15).contains(&v) && v.fract() == 0.0 => Ok(v as u64),
        Some(_) => {
            Err(error("invalid_timing", &format!("timing.{name} must be a whole number of milliseconds, 0 or more")))
        }
    }
}

fn config_error(e: &core::ConfigError) -> JsValue {
    error(e.code(), &e.to_string())
}

const TIMING: [&str; 14] = [
    "renewBeforeMs",
    "clockSkewMs",
    "callbackMaxAgeMs",
    "retryBaseMs",
    "retryMaxMs",
    "maxRefreshAttempts",
    "assumedLifetimeMs",
    "requestTimeoutMs",
    "minRenewalIntervalMs",
    "rejectionCooldownMs",
    "renewIdleSessions",
    "throttleRetryBaseMs",
    "throttleRetryMaxMs",
    "maxThrottleRetries",
];

const OPTIONS: [&str; 24] = [
    "instance",
    "issuer",
    "endpoints",
    "clientId",
    "clientSecret",
    "clientAuth",
    "redirectUri",
    "responseType",
    "responseMode",
    "scope",
    "pkce",
    "discovery",
    "apiRoot",
    "apiOrigins",
    "clientCredentials",
    "referenceToken",
    "validateIdTokens",
    "verifyTokenEndpointSignature",
    "idTokenAlgorithms",
    "persistTokens",
    "snapshotProvider",
    "apiConcurrency",
    "throttleRetry",
    "timing",
];

const ALGORITHMS: [(&str, core::SigningAlgorithm); 3] = [
    ("RS256", core::SigningAlgorithm::RS256),
    ("PS256", core::SigningAlgorithm::PS256),
    ("ES256", core::SigningAlgorithm::ES256),
];

impl TimingOptions {
    fn from_fields(t: &Fields) -> Result<TimingOptions, JsValue> {
        Ok(TimingOptions {
            renew_before_ms: t.number("renewBeforeMs")?,
            clock_skew_ms: t.number("clockSkewMs")?,
            callback_max_age_ms: t.number("callbackMaxAgeMs")?,
            retry_base_ms: t.number("retryBaseMs")?,
            retry_max_ms: t.number("retryMaxMs")?,
            max_refresh_attempts: t.count("maxRefreshAttempts")?,
            assumed_lifetime_ms: t.number("assumedLifetimeMs")?,
            request_timeout_ms: t.number("requestTimeoutMs")?,
            min_renewal_interval_ms: t.number("minRenewalIntervalMs")?,
            rejection_cooldown_ms: t.number("rejectionCooldownMs")?,
            renew_idle_sessions: t.boolean("renewIdleSessions")?,
            throttle_retry_base_ms: t.number("throttleRetryBaseMs")?,
            throttle_retry_max_ms: t.number("throttleRetryMaxMs")?,
            max_throttle_retries: t.count("maxThrottleRetries")?,
        })
    }
}

/// Explicit endpoints, named as in a discovery document.
fn endpoints(e: &Fields) -> Result<core::ProviderMetadata, JsValue> {
    let mut metadata = core::ProviderMetadata::new(
        e.required_string("issuer")?,
        e.required_string("authorization_endpoint")?,
        e.required_string("token_endpoint")?,
    );
    metadata.end_session_endpoint = e.string("end_session_endpoint")?;
    metadata.revocation_endpoint = e.string("revocation_endpoint")?;
    metadata.userinfo_endpoint = e.string("userinfo_endpoint")?;
    metadata.jwks_uri = e.string("jwks_uri")?;
    metadata.token_endpoint_auth_methods_supported = e.strings("token_endpoint_auth_methods_supported")?;
    metadata.code_challenge_methods_supported = e.strings("code_challenge_methods_supported")?;
    metadata.authorization_response_iss_parameter_supported =
        e.boolean("authorization_response_iss_parameter_supported")?.unwrap_or(false);
    Ok(metadata)
}

impl ClientOptions {
    /// Reads the options object a caller gave.
    pub(crate) fn from_js(value: &JsValue) -> Result<ClientOptions, JsValue> {
        let o = Fields::new(value, "", &OPTIONS)?;
        let endpoints = match o.object("endpoints", "endpoints.", &core::ProviderMetadata::FIELDS)? {
            Some(e) => Some(endpoints(&e)?),
            None => None,
        };
        let timing = match o.object("timing", "timing.", &TIMING)? {
            Some(t) => Some(TimingOptions::from_fields(&t)?),
            None => None,
        };
        // `null` is "no limit", absent is the default.
        let api_concurrency =
            if o.is_null("apiConcurrency") { Some(None) } else { o.count("apiConcurrency")?.map(Some) };
        Ok(ClientOptions {
            instance: o.string("instance")?,
            issuer: o.string("issuer")?,
            endpoints,
            client_id: o.string("clientId")?,
            client_secret: o.string("clientSecret")?,
            client_auth: o.choice(
                "clientAuth",
                &[
                    ("client_secret_post", core::ClientAuth::ClientSecretPost),
                    ("client_secret_basic", core::ClientAuth::ClientSecretBasic),
                    ("none", core::ClientAuth::None),
                ],
            )?,
            redirect_uri: o.string("redirectUri")?,
            response_type: o.choice(
                "responseType",
                &[("code", core::ResponseType::Code), ("code id_token", core::ResponseType::CodeIdToken)],
            )?,
            response_mode: o.choice(
                "responseMode",
                &[
                    ("query", core::ResponseMode::Query),
                    ("fragment", core::ResponseMode::Fragment),
                    ("form_post", core::ResponseMode::FormPost),
                ],
            )?,
            scope: o.string("scope")?,
            pkce: o.boolean("pkce")?,
            discovery: o.boolean("discovery")?,
            api_root: o.string("apiRoot")?,
            api_origins: o.strings("apiOrigins")?,
            client_credentials: o.boolean("clientCredentials")?,
            reference_token: o.string("referenceToken")?,
            validate_id_tokens: o.boolean("validateIdTokens")?,
            verify_token_endpoint_signature: o.boolean("verifyTokenEndpointSignature")?,
            id_token_algorithms: o.choices("idTokenAlgorithms", &ALGORITHMS)?,
            persist_tokens: o.boolean("persistTokens")?,
            snapshot_provider: o.boolean("snapshotProvider")?,
            api_concurrency,
            throttle_retry: o.choice(
                "throttleRetry",
                &[
                    ("never", ThrottleRetry::Never),
                    ("idempotentMethods", ThrottleRetry::IdempotentMethods),
                    ("allMethods", ThrottleRetry::AllMethods),
                ],
            )?,
            timing,
        })
    }

    pub(crate) fn build(self) -> Result<core::Config, JsValue> {
        let mut builder = match (self.instance, self.issuer, self.endpoints) {
            (Some(instance), None, None) => core::Config::erpnet(&instance),
            (None, Some(issuer), None) => core::Config::discover(&issuer),
            (None, None, Some(metadata)) => core::Config::with_endpoints(metadata),
            _ => return Err(config_error(&core::ConfigError::Missing("exactly one of instance, issuer or endpoints"))),
        };
        if let Some(id) = self.client_id {
            builder = builder.client_id(id);
        }
        if let Some(secret) = self.client_secret {
            builder = builder.client_secret(secret);
        }
        if let Some(auth) = self.client_auth {
            builder = builder.client_auth(auth);
        }
        if let Some(uri) = self.redirect_uri {
            builder = builder.redirect_uri(uri);
        }
        if let Some(t) = self.response_type {
            builder = builder.response_type(t);
        }
        if let Some(mode) = self.response_mode {
            builder = builder.response_mode(mode);
        }
        if let Some(scope) = self.scope {
            builder = builder.scope(scope);
        }
        if let Some(pkce) = self.pkce {
            builder = builder.pkce(pkce);
        }
        if let Some(discovery) = self.discovery {
            builder = builder.discovery(discovery);
        }
        if let Some(root) = self.api_root {
            builder = builder.api_root(root);
        }
        for origin in self.api_origins.unwrap_or_default() {
            builder = builder.allow_api_origin(origin);
        }
        if self.client_credentials == Some(true) {
            builder = builder.client_credentials();
        }
        if let Some(token) = self.reference_token {
            builder = builder.reference_token(token);
        }
        if let Some(validate) = self.validate_id_tokens {
            builder = builder.validate_id_tokens(validate);
        }
        if let Some(persist) = self.persist_tokens {
            builder = builder.persist_tokens(persist);
        }
        if let Some(provider) = self.snapshot_provider {
            builder = builder.snapshot_provider(provider);
        }
        if let Some(limit) = self.api_concurrency {
            builder = builder.api_concurrency(limit);
        }
        if let Some(policy) = self.throttle_retry {
            builder = builder.throttle_retry(match policy {
                ThrottleRetry::Never => core::ThrottleRetry::Never,
                ThrottleRetry::IdempotentMethods => core::ThrottleRetry::IdempotentMethods,
                ThrottleRetry::AllMethods => core::ThrottleRetry::AllMethods,
            });
        }
        if let Some(verify) = self.verify_token_endpoint_signature {
            builder = builder.verify_token_endpoint_signature(verify);
        }
        if let Some(algorithms) = self.id_token_algorithms {
            builder = builder.id_token_algorithms(&algorithms);
        }
        if let Some(t) = self.timing {
            let d = core::Timing::default();
            let mut timing = core::Timing::default();
            timing.renew_before_ms = ms("renewBeforeMs", t.renew_before_ms, d.renew_before_ms)?;
            timing.clock_skew_ms = ms("clockSkewMs", t.clock_skew_ms, d.clock_skew_ms)?;
            timing.callback_max_age_ms = ms("callbackMaxAgeMs", t.callback_max_age_ms, d.callback_max_age_ms)?;
            timing.retry_base_ms = ms("retryBaseMs", t.retry_base_ms, d.retry_base_ms)?;
            timing.retry_max_ms = ms("retryMaxMs", t.retry_max_ms, d.retry_max_ms)?;
            timing.assumed_lifetime_ms = ms("assumedLifetimeMs", t.assumed_lifetime_ms, d.assumed_lifetime_ms)?;
            timing.request_timeout_ms = ms("requestTimeoutMs", t.request_timeout_ms, d.request_timeout_ms)?;
            timing.min_renewal_interval_ms =
                ms("minRenewalIntervalMs", t.min_renewal_interval_ms, d.min_renewal_interval_ms)?;
            timing.rejection_cooldown_ms = ms("rejectionCooldownMs", t.rejection_cooldown_ms, d.rejection_cooldown_ms)?;
            timing.renew_idle_sessions = t.renew_idle_sessions.unwrap_or(d.renew_idle_sessions);
            timing.throttle_retry_base_ms =
                ms("throttleRetryBaseMs", t.throttle_retry_base_ms, d.throttle_retry_base_ms)?;
            timing.throttle_retry_max_ms = ms("throttleRetryMaxMs", t.throttle_retry_max_ms, d.throttle_retry_max_ms)?;
            timing.max_throttle_retries = t.max_throttle_retries.unwrap_or(d.max_throttle_retries);
            timing.max_refresh_attempts = match t.max_refresh_attempts {
                None => d.max_refresh_attempts,
                Some(0) => return Err(error("invalid_timing", "timing.maxRefreshAttempts must be 1 or more")),
                Some(n) => n,
            };
            builder = builder.timing(timing);
        }
        builder.build().map_err(|e| config_error(&e))
    }
}

/// Optional parameters of one sign-in.
#[derive(Tsify, Default)]
#[serde(rename_all = "camelCase")]
pub struct SignInParameters {
    /// e.g. `login` to force the login screen.
    #[tsify(optional)]
    pub prompt: Option<String>,
    /// The user name to pre-fill.
    #[tsify(optional)]
    pub login_hint: Option<String>,
    /// e.g. `bg en`.
    #[tsify(optional)]
    pub ui_locales: Option<String>,
    /// `max_age` in seconds.
    #[tsify(optional)]
    pub max_age: Option<u32>,
    /// Any other parameters.
    #[tsify(optional)]
    pub extra: Option<Vec<(String, String)>>,
}

impl SignInParameters {
    /// Reads the parameters object a caller gave.
    pub(crate) fn from_js(value: &JsValue) -> Result<SignInParameters, JsValue> {
        let p = Fields::new(value, "", &["prompt", "loginHint", "uiLocales", "maxAge", "extra"])?;
        Ok(SignInParameters {
            prompt: p.string("prompt")?,
            login_hint: p.string("loginHint")?,
            ui_locales: p.string("uiLocales")?,
            max_age: p.count("maxAge")?,
            extra: p.pairs("extra")?,
        })
    }

    pub(crate) fn into_core(self) -> core::SignInOptions {
        let mut options = core::SignInOptions::new();
        if let Some(p) = self.prompt {
            options = options.prompt(p);
        }
        if let Some(h) = self.login_hint {
            options = options.login_hint(h);
        }
        if let Some(l) = self.ui_locales {
            options = options.ui_locales(l);
        }
        if let Some(m) = self.max_age {
            options = options.max_age_secs(u64::from(m));
        }
        for (name, value) in self.extra.unwrap_or_default() {
            options = options.param(name, value);
        }
        options
    }
}

/// An API call without its body (the driver keeps the body).
pub(crate) fn api_call(
    method: &str,
    url: String,
    headers: Vec<(String, String)>,
    expected_duration_ms: Option<f64>,
) -> Result<core::ApiRequest, JsValue> {
    let method = core::Method::parse(method).ok_or_else(|| error("invalid_method", "unsupported HTTP method"))?;
    let mut request = core::ApiRequest::new(method, url);
    request.headers = headers;
    if let Some(ms) = expected_duration_ms {
        if !(ms.is_finite() && ms >= 0.0 && ms.fract() == 0.0 && ms <= 9_007_199_254_740_991.0) {
            return Err(error("invalid_argument", "expectedDurationMs must be a whole number of milliseconds"));
        }
        // Range-checked above: a whole, non-negative, exactly representable number.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ms = ms as u64;
        request = request.with_expected_duration(ms);
    }
    Ok(request)
}

/// What a request is for.
#[derive(Tsify, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RequestKind {
    /// The discovery document.
    Discovery,
    /// The token endpoint.
    Token,
    /// The revocation endpoint.
    Revocation,
    /// The provider's signing keys.
    Keys,
    /// The userinfo endpoint.
    UserInfo,
    /// An ERP.net instance's auto-discovery document.
    Sites,
    /// An ERP.net Profile site's `/me`.
    Profile,
    /// An API call carrying the access token.
    Api,
}

/// A request the host must send (with `redirect: "manual"`) and answer.
#[derive(Tsify, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest {
    /// Hand this back with the answer.
    pub id: f64,
    /// What it is for.
    pub kind: RequestKind,
    /// For API requests, the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub call: Option<f64>,
    /// The method.
    pub method: String,
    /// The absolute URL.
    pub url: String,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The body, for token and revocation requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub body: Option<String>,
    /// Unix ms at which the session counts the request as timed out: abort it then.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub deadline: Option<f64>,
    /// The most body bytes the session reads from the answer: stop reading one byte past it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub max_response_bytes: Option<f64>,
}

/// A signature for the host to verify: everything else about the token the core checked.
#[derive(Tsify, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureCheck {
    /// Hand this back with the verdict.
    pub id: f64,
    /// `RS256`, `PS256` or `ES256`.
    pub algorithm: &'static str,
    /// The public key, for `crypto.subtle.importKey("jwk", …)`.
    pub key: PublicJwk,
    /// The JWS signing input (ASCII).
    pub signing_input: String,
    /// The signature.
    #[serde(serialize_with = "as_bytes")]
    #[tsify(type = "Uint8Array")]
    pub signature: Vec<u8>,
}

fn as_bytes<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// The public members of a JSON Web Key that verification needs.
#[derive(Tsify, Serialize)]
pub struct PublicJwk {
    /// `RSA` or `EC`.
    pub kty: String,
    /// RSA modulus, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub n: Option<String>,
    /// RSA exponent, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub e: Option<String>,
    /// EC curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub crv: Option<String>,
    /// EC x coordinate, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub y: Option<String>,
}

/// A failure as data: stable codes and fields, no prose (the JavaScript driver words its
/// messages from them). A server's OAuth refusal has the code `oauth_error` and the
/// server's own words in the other fields.
#[derive(Tsify, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// Stable, e.g. `oauth_error`, `transport`, `unavailable`, `state_mismatch`.
    pub code: String,
    /// The code of what caused it, when `code` is a family: `sign_in_required` →
    /// `reference_token_rejected`, `renewal_unavailable` → `oauth_error`, `transport` →
    /// `timeout`.
    #[tsify(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The server's OAuth `error` (`invalid_grant`, `access_denied`, …), when it sent one.
    #[tsify(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth_error: Option<String>,
    /// The server's `error_description`, cleaned and capped.
    #[tsify(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// The HTTP status the OAuth error came with.
    #[tsify(optional)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

impl ErrorInfo {
    fn new(code: &str) -> Self {
        ErrorInfo { code: code.to_owned(), detail: None, oauth_error: None, error_description: None, status: None }
    }

    fn with_detail(mut self, detail: Option<&str>) -> Self {
        self.detail = detail.map(str::to_owned);
        self
    }

    fn with_oauth(mut self, oauth: Option<&core::OAuthError>) -> Self {
        if let Some(oauth) = oauth {
            self.oauth_error = Some(oauth.code.as_str().to_owned());
            self.error_description.clone_from(&oauth.description);
            self.status = oauth.status;
        }
        self
    }
}

/// Something that happened.
#[derive(Tsify, Serialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Event {
    /// The provider's endpoints are known.
    ProviderReady {
        /// False when the ERP.net fixed paths stand in for a failed discovery.
        discovered: bool,
    },
    /// Discovery failed; `discover()` tries again.
    DiscoveryFailed {
        /// Why.
        error: ErrorInfo,
    },
    /// The user is signed in.
    SignedIn {
        /// The granted scope.
        #[tsify(optional)]
        scope: Option<String>,
        /// Access-token expiry, Unix ms.
        #[tsify(optional)]
        expires_at: Option<f64>,
    },
    /// The code exchange failed.
    SignInFailed {
        /// Why.
        error: ErrorInfo,
    },
    /// New tokens replaced the old ones.
    TokensRenewed {
        /// The granted scope.
        #[tsify(optional)]
        scope: Option<String>,
        /// Access-token expiry, Unix ms.
        #[tsify(optional)]
        expires_at: Option<f64>,
    },
    /// A renewal failed transiently and will be retried.
    RenewalDeferred {
        /// Why.
        error: ErrorInfo,
        /// Attempts so far.
        attempt: u32,
        /// The next attempt, Unix ms.
        retry_at: f64,
    },
    /// A renewal stopped without new tokens; tokens are kept.
    RenewalFailed {
        /// Why.
        error: ErrorInfo,
    },
    /// Only a new sign-in helps; tokens are gone.
    SignInRequired {
        /// Why.
        reason: ErrorInfo,
    },
    /// The session signed out.
    SignedOut,
    /// Userinfo answered for the signed-in user.
    UserInfo {
        /// The call `fetchUserInfo` returned.
        call: f64,
        /// Its claims.
        #[tsify(type = "Record<string, unknown>")]
        claims: serde_json::Map<String, serde_json::Value>,
    },
    /// Userinfo failed, or answered for another subject.
    UserInfoFailed {
        /// The call `fetchUserInfo` returned.
        call: f64,
        /// Why.
        error: ErrorInfo,
    },
    /// The instance's auto-discovery named its sites (each on the instance's origin).
    SitesDiscovered {
        /// The Domain API's OData root, if named.
        #[tsify(optional)]
        #[serde(skip_serializing_if = "Option::is_none")]
        odata_root: Option<String>,
        /// The Profile site, if named.
        #[tsify(optional)]
        #[serde(skip_serializing_if = "Option::is_none")]
        profile: Option<String>,
    },
    /// A site the document lists that is not used: `notWorking` or `elsewhere`.
    SiteSkipped {
        /// Its `Type`.
        site_type: String,
        /// `notWorking` or `elsewhere`.
        why: String,
    },
    /// The signed-in user's ERP.net profile (`id` is the stable key).
    Profile {
        /// The call `fetchProfile` returned.
        call: f64,
        /// The profile.
        #[tsify(type = "Record<string, unknown>")]
        profile: serde_json::Map<String, serde_json::Value>,
    },
    /// The profile could not be fetched or read.
    ProfileFailed {
        /// The call.
        call: f64,
        /// Why.
        error: ErrorInfo,
    },
    /// A call's answer.
    CallCompleted {
        /// The call.
        call: f64,
        /// The request whose answer it is.
        request: f64,
        /// Its status.
        status: u16,
    },
    /// A call ended without an answer.
    CallFailed {
        /// The call.
        call: f64,
        /// Why.
        error: ErrorInfo,
    },
    /// A server answer was sloppy but tolerated (e.g. an unusable `expires_in`).
    Warning {
        /// Stable, e.g. `unusable_expires_in`.
        code: String,
    },
    /// An event this binding does not know (a newer core): never dropped silently.
    Unknown {
        /// The core's description of it.
        description: String,
    },
}

/// One output of `poll()`.
#[derive(Tsify, Serialize)]
#[tsify(hashmap_as_object)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Output {
    /// Send this request.
    Http {
        /// The request.
        request: HttpRequest,
    },
    /// Verify this ID token signature (`verifySignature(check)`) and answer with `handleSignature`.
    VerifySignature {
        /// The check.
        check: SignatureCheck,
    },
    /// Store this snapshot (JSON) before acting on what follows.
    Persist {
        /// The snapshot.
        snapshot: String,
        /// Its token state's generation: higher is newer.
        generation: f64,
        /// The stored generation it was derived from: a shared store writes it only while the
        /// stored generation is not above this (compare-and-swap).
        #[serde(rename = "baseGeneration")]
        base_generation: f64,
    },
    /// Something happened.
    Event {
        /// The event.
        event: Event,
    },
    /// Nothing more now; call `handleTimeout` at this Unix ms time.
    WaitUntil {
        /// When.
        at: f64,
    },
    /// Nothing more until the next command or input.
    Idle,
}

fn oauth_of_token(e: &core::TokenError) -> Option<&core::OAuthError> {
    match e {
        core::TokenError::OAuth(oauth) => Some(oauth),
        _ => None,
    }
}

/// A token error's code, with what caused it and its HTTP status as fields.
fn token_error(e: &core::TokenError) -> ErrorInfo {
    let mut info = ErrorInfo::new(e.code()).with_detail(token_detail(e));
    if let core::TokenError::Unavailable { status, .. }
    | core::TokenError::Redirect { status }
    | core::TokenError::UnexpectedStatus { status } = e
    {
        info.status = Some(*status);
    }
    info.with_oauth(oauth_of_token(e))
}

fn token_detail(e: &core::TokenError) -> Option<&'static str> {
    match e {
        core::TokenError::Malformed(reason) => Some(reason.code()),
        core::TokenError::Transport(kind) => Some(kind.code()),
        _ => None,
    }
}

fn sign_in_error(e: &core::SignInError) -> ErrorInfo {
    match e {
        core::SignInError::Token(t) => token_error(t),
        core::SignInError::Callback(core::CallbackError::Provider(oauth)) => {
            ErrorInfo::new(e.code()).with_oauth(Some(oauth))
        }
        _ => ErrorInfo::new(e.code()),
    }
}

fn call_failure(e: &core::CallFailure) -> ErrorInfo {
    let oauth = match e {
        core::CallFailure::RenewalRefused(t) | core::CallFailure::RenewalUnavailable(t) => oauth_of_token(t),
        core::CallFailure::SignInRequired(core::SignInRequiredReason::RefreshRejected { error }) => Some(error),
        _ => None,
    };
    let detail = match e {
        core::CallFailure::Transport(kind) => Some(kind.code()),
        core::CallFailure::SignInRequired(reason) => Some(reason.code()),
        core::CallFailure::RenewalUnavailable(t) | core::CallFailure::RenewalRefused(t) => {
            Some(token_detail(t).unwrap_or(t.code()))
        }
        _ => None,
    };
    ErrorInfo::new(e.code()).with_detail(detail).with_oauth(oauth)
}

fn user_info_error(e: &core::UserInfoError) -> ErrorInfo {
    match e {
        core::UserInfoError::Call(failure) => call_failure(failure),
        other => ErrorInfo::new(other.code()),
    }
}

impl Event {
    fn from_core(event: core::Event) -> Event {
        match event {
            core::Event::ProviderReady { discovered } => Event::ProviderReady { discovered },
            core::Event::DiscoveryFailed { error } => Event::DiscoveryFailed { error: ErrorInfo::new(error.code()) },
            core::Event::SignedIn { scope, expires_at } => {
                Event::SignedIn { scope, expires_at: expires_at.map(to_f64) }
            }
            core::Event::SignInFailed { error } => Event::SignInFailed { error: sign_in_error(&error) },
            core::Event::TokensRenewed { scope, expires_at } => {
                Event::TokensRenewed { scope, expires_at: expires_at.map(to_f64) }
            }
            core::Event::RenewalDeferred { error, attempt, retry_at } => {
                Event::RenewalDeferred { error: token_error(&error), attempt, retry_at: to_f64(retry_at) }
            }
            core::Event::RenewalFailed { error } => Event::RenewalFailed { error: token_error(&error) },
            core::Event::SignInRequired { reason } => {
                let oauth = match &reason {
                    core::SignInRequiredReason::RefreshRejected { error } => Some(error),
                    _ => None,
                };
                Event::SignInRequired { reason: ErrorInfo::new(reason.code()).with_oauth(oauth) }
            }
            core::Event::SignedOut => Event::SignedOut,
            core::Event::Warning { warning } => Event::Warning { code: warning.code().to_owned() },
            core::Event::UserInfoReceived { call, claims } => Event::UserInfo { call: to_f64(call.0), claims },
            core::Event::UserInfoFailed { call, error } => {
                Event::UserInfoFailed { call: to_f64(call.0), error: user_info_error(&error) }
            }
            core::Event::SitesDiscovered { sites } => {
                Event::SitesDiscovered { odata_root: sites.odata_root, profile: sites.profile }
            }
            core::Event::SiteSkipped { site } => match site {
                core::SkippedSite::NotWorking { site_type, .. } => {
                    Event::SiteSkipped { site_type, why: "notWorking".to_owned() }
                }
                core::SkippedSite::Elsewhere { site_type } => {
                    Event::SiteSkipped { site_type, why: "elsewhere".to_owned() }
                }
                other => Event::Unknown { description: format!("{other:?}") },
            },
            core::Event::ProfileReceived { call, profile } => Event::Profile { call: to_f64(call.0), profile },
            core::Event::ProfileFailed { call, error } => {
                Event::ProfileFailed { call: to_f64(call.0), error: user_info_error(&error) }
            }
            core::Event::CallCompleted { call, request, response } => {
                Event::CallCompleted { call: to_f64(call.0), request: to_f64(request.0), status: response.status }
            }
            core::Event::CallFailed { call, error } => {
                Event::CallFailed { call: to_f64(call.0), error: call_failure(&error) }
            }
            // Events stay open in the core (`#[non_exhaustive]`); one this binding does not
            // know is passed on loudly, never turned into `idle`.
            other => Event::Unknown { description: format!("{other:?}") },
        }
    }
}

impl Output {
    pub(crate) fn from_core(output: core::Output) -> Output {
        match output {
            core::Output::Http(req) => Output::Http {
                request: HttpRequest {
                    id: to_f64(req.id.0),
                    kind: match req.kind {
                        core::RequestKind::Discovery => RequestKind::Discovery,
                        core::RequestKind::Token => RequestKind::Token,
                        core::RequestKind::Revocation => RequestKind::Revocation,
                        core::RequestKind::Keys => RequestKind::Keys,
                        core::RequestKind::UserInfo => RequestKind::UserInfo,
                        core::RequestKind::Sites => RequestKind::Sites,
                        core::RequestKind::Profile => RequestKind::Profile,
                        core::RequestKind::Api => RequestKind::Api,
                    },
                    call: req.call.map(|c| to_f64(c.0)),
                    method: req.method.as_str().to_owned(),
                    url: req.url,
                    headers: req.headers,
                    body: req.body.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    deadline: req.deadline.map(to_f64),
                    max_response_bytes: req.kind.max_response_bytes().map(|n| to_f64(n as u64)),
                },
            },
            core::Output::VerifySignature(check) => {
                let core::SignatureCheck { id, algorithm, key, signing_input, signature, .. } = *check;
                Output::VerifySignature {
                    check: SignatureCheck {
                        id: to_f64(id.0),
                        algorithm: algorithm.name(),
                        key: PublicJwk { kty: key.kty, n: key.n, e: key.e, crv: key.crv, x: key.x, y: key.y },
                        signing_input,
                        signature,
                    },
                }
            }
            core::Output::Persist(snapshot) => Output::Persist {
                generation: to_f64(snapshot.generation()),
                base_generation: to_f64(snapshot.base_generation()),
                snapshot: snapshot.to_json(),
            },
            core::Output::Event(event) => Output::Event { event: Event::from_core(event) },
            core::Output::WaitUntil(at) => Output::WaitUntil { at: to_f64(at) },
            core::Output::Idle => Output::Idle,
        }
    }
}
