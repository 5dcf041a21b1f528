//! What JavaScript hands in: the client's options, the timing policy, a sign-in's
//! parameters and an API call. Each options object is one table (`options_table!`), read
//! field by field from the object as given.

use erpnet_auth as core;
use wasm_bindgen::JsValue;

use crate::error;
use crate::fields::Fields;
use crate::table::options_table;

options_table! {
    /// Everything a session is configured with. Give exactly one of `instance` (the ERP.net
    /// preset), `issuer` (discovery) or `endpoints`. Unknown option names are refused.
    pub struct ClientOptions => core::ConfigBuilder {
        /// ERP.net instance root, e.g. `https://demodb.my.erp.net`.
        instance: String = "instance", string;
        /// Any OpenID Connect issuer (found through discovery).
        issuer: String = "issuer", string;
        /// Explicit endpoints, named as in a discovery document (`issuer`,
        /// `authorization_endpoint`, `token_endpoint`, `jwks_uri`, `userinfo_endpoint`,
        /// `end_session_endpoint`, `revocation_endpoint`, …); nothing is fetched.
        endpoints: core::config::ProviderMetadata = "endpoints", object(&core::config::ProviderMetadata::FIELDS, endpoints);
        /// The client id (ERP.net's `ApplicationUri`); not needed with `referenceToken`.
        client_id: String = "clientId", string => |b, v| b.client_id(v);
        /// The plain client secret (confidential clients, servers only).
        client_secret: String = "clientSecret", string => |b, v| b.client_secret(v);
        /// Default: `client_secret_post` with a secret, `none` without.
        client_auth: core::config::ClientAuth = "clientAuth", choice(&[
            ("client_secret_post", core::config::ClientAuth::ClientSecretPost),
            ("client_secret_basic", core::config::ClientAuth::ClientSecretBasic),
            ("none", core::config::ClientAuth::Public),
        ]) => |b, v| b.client_auth(v);
        /// The registered redirect URI.
        redirect_uri: String = "redirectUri", string => |b, v| b.redirect_uri(v);
        /// Default `code`.
        response_type: core::config::ResponseType = "responseType", choice(&[
            ("code", core::config::ResponseType::Code),
            ("code id_token", core::config::ResponseType::CodeIdToken),
        ]) => |b, v| b.response_type(v);
        /// Default: `query` for `code`, `fragment` for hybrid.
        response_mode: core::config::ResponseMode = "responseMode", choice(&[
            ("query", core::config::ResponseMode::Query),
            ("fragment", core::config::ResponseMode::Fragment),
            ("form_post", core::config::ResponseMode::FormPost),
        ]) => |b, v| b.response_mode(v);
        /// Default (ERP.net): `openid profile offline_access read`.
        scope: String = "scope", string => |b, v| b.scope(v);
        /// PKCE; may be switched off only for the hybrid flow.
        pkce: bool = "pkce", boolean => |b, v| b.pkce(v);
        /// Fetch the discovery document (default true).
        discovery: bool = "discovery", boolean => |b, v| b.discovery(v);
        /// The API root relative URLs resolve against (ERP.net: `{instance}/api/domain/odata/`).
        api_root: String = "apiRoot", string => |b, v| b.api_root(v);
        /// Further origins that may receive the access token.
        api_origins: Vec<String> = "apiOrigins", strings
            => |b, v| v.into_iter().fold(b, core::ConfigBuilder::allow_api_origin);
        /// Use the `client_credentials` grant.
        client_credentials: bool = "clientCredentials", boolean
            => |b, v| if v { b.client_credentials() } else { b };
        /// Call the API with this reference token (`enrt_…`, ERP.net Automation) as a static
        /// Bearer: no sign-in, no renewal; a 401 ends it with `reference_token_rejected`.
        reference_token: String = "referenceToken", string => |b, v| b.reference_token(v);
        /// Validate ID tokens (default true): signature, issuer, audience, times, nonce, hashes.
        validate_id_tokens: bool = "validateIdTokens", boolean => |b, v| b.validate_id_tokens(v);
        /// Check the token endpoint's ID token's signature too (default true).
        verify_token_endpoint_signature: bool = "verifyTokenEndpointSignature", boolean
            => |b, v| b.verify_token_endpoint_signature(v);
        /// The ID token signing algorithms accepted (default all three).
        id_token_algorithms: Vec<core::jose::SigningAlgorithm> = "idTokenAlgorithms", choices(&[
            ("RS256", core::jose::SigningAlgorithm::RS256),
            ("PS256", core::jose::SigningAlgorithm::PS256),
            ("ES256", core::jose::SigningAlgorithm::ES256),
        ]) => |b, v| b.id_token_algorithms(&v);
        /// Whether stored snapshots carry the tokens (default true). `false` keeps them in
        /// memory only; the store then holds the pending sign-in across the redirect.
        persist_tokens: bool = "persistTokens", boolean => |b, v| b.persist_tokens(v);
        /// Whether stored snapshots carry the provider's metadata, keys and the instance's
        /// sites (default true; a `SharedClient`'s sessions share them and leave them out).
        snapshot_provider: bool = "snapshotProvider", boolean => |b, v| b.snapshot_provider(v);
        /// At most this many API requests in flight; the rest wait in order. `null`: no
        /// limit. Default 3 with `instance` (ERP.net runs one request per session and queues
        /// five), no limit otherwise.
        #[tsify(type = "number | null")]
        api_concurrency: Option<u32> = "apiConcurrency", count_or_null => |b, v| b.api_concurrency(v);
        /// Which API calls are sent again after a 429 (default `allMethods` with `instance`,
        /// `idempotentMethods` otherwise).
        throttle_retry: core::config::ThrottleRetry = "throttleRetry", choice(&[
            ("never", core::config::ThrottleRetry::Never),
            ("idempotentMethods", core::config::ThrottleRetry::IdempotentMethods),
            ("allMethods", core::config::ThrottleRetry::AllMethods),
        ]) => |b, v| b.throttle_retry(v);
        /// Timing policy.
        timing: TimingOptions = "timing", object(TimingOptions::NAMES, TimingOptions::read)
            => |b, v| b.timing(v.apply(core::Timing::default())?);
    }
}

options_table! {
    /// Timing policy, milliseconds (non-negative integers; anything else is refused).
    pub struct TimingOptions => core::Timing {
        /// Renew this long before expiry (default 60000).
        renew_before_ms: f64 = "renewBeforeMs", number
            => |t, v, name| { t.renew_before_ms = ms(name, v)?; t };
        /// Clock-skew allowance (default 5000).
        clock_skew_ms: f64 = "clockSkewMs", number => |t, v, name| { t.clock_skew_ms = ms(name, v)?; t };
        /// Oldest acceptable callback (default 900000).
        callback_max_age_ms: f64 = "callbackMaxAgeMs", number
            => |t, v, name| { t.callback_max_age_ms = ms(name, v)?; t };
        /// First retry delay (default 1000).
        retry_base_ms: f64 = "retryBaseMs", number => |t, v, name| { t.retry_base_ms = ms(name, v)?; t };
        /// Longest retry delay (default 30000).
        retry_max_ms: f64 = "retryMaxMs", number => |t, v, name| { t.retry_max_ms = ms(name, v)?; t };
        /// Attempts per renewal before a cooldown of `retryMaxMs` (default 4).
        max_refresh_attempts: u32 = "maxRefreshAttempts", count => |t, v| {
            if v == 0 {
                return Err(error("invalid_timing", "timing.maxRefreshAttempts must be 1 or more"));
            }
            t.max_refresh_attempts = v;
            t
        };
        /// Lifetime assumed when `expires_in` is absent or unusable (default 3600000).
        assumed_lifetime_ms: f64 = "assumedLifetimeMs", number
            => |t, v, name| { t.assumed_lifetime_ms = ms(name, v)?; t };
        /// Deadline of token, discovery and key-set requests (default 30000).
        request_timeout_ms: f64 = "requestTimeoutMs", number
            => |t, v, name| { t.request_timeout_ms = ms(name, v)?; t };
        /// Proactive renewals at least this far apart (default 10000).
        min_renewal_interval_ms: f64 = "minRenewalIntervalMs", number
            => |t, v, name| { t.min_renewal_interval_ms = ms(name, v)?; t };
        /// A brand-new token's 401 goes to the caller without a refresh for this long (default 60000).
        rejection_cooldown_ms: f64 = "rejectionCooldownMs", number
            => |t, v, name| { t.rejection_cooldown_ms = ms(name, v)?; t };
        /// Renew on a timer also when no call used the token (default false).
        renew_idle_sessions: bool = "renewIdleSessions", boolean => |t, v| { t.renew_idle_sessions = v; t };
        /// First wait before a call answered 429 is sent again (default 500).
        throttle_retry_base_ms: f64 = "throttleRetryBaseMs", number
            => |t, v, name| { t.throttle_retry_base_ms = ms(name, v)?; t };
        /// Longest such wait; a longer `Retry-After` goes to the caller (default 15000).
        throttle_retry_max_ms: f64 = "throttleRetryMaxMs", number
            => |t, v, name| { t.throttle_retry_max_ms = ms(name, v)?; t };
        /// Times one call is sent again after a 429 (default 5; 0: never).
        max_throttle_retries: u32 = "maxThrottleRetries", count => |t, v| { t.max_throttle_retries = v; t };
    }
}

options_table! {
    /// Optional parameters of one sign-in.
    pub struct SignInParameters => core::SignInOptions {
        /// e.g. `login` to force the login screen.
        prompt: String = "prompt", string => |o, v| o.prompt(v);
        /// The user name to pre-fill.
        login_hint: String = "loginHint", string => |o, v| o.login_hint(v);
        /// e.g. `bg en`.
        ui_locales: String = "uiLocales", string => |o, v| o.ui_locales(v);
        /// `max_age` in seconds.
        max_age: u32 = "maxAge", count => |o, v| o.max_age_secs(u64::from(v));
        /// Any other parameters.
        extra: Vec<(String, String)> = "extra", pairs
            => |o, v| v.into_iter().fold(o, |o, (name, value)| o.param(name, value));
    }
}

/// A timing value: a non-negative whole number of milliseconds below 10^15, or refused.
fn ms(name: &str, value: f64) -> Result<u64, JsValue> {
    if (0.0..1e15).contains(&value) && value.fract() == 0.0 {
        // Validated range and integrality: the conversion is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        return Ok(value as u64);
    }
    Err(error("invalid_timing", &format!("timing.{name} must be a whole number of milliseconds, 0 or more")))
}

fn config_error(e: &core::error::ConfigError) -> JsValue {
    error(e.code(), &e.to_string())
}

/// Explicit endpoints, named as in a discovery document (the core's names).
fn endpoints(e: &Fields) -> Result<core::config::ProviderMetadata, JsValue> {
    let mut metadata = core::config::ProviderMetadata::new(
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
        ClientOptions::read(&Fields::new(value, None, ClientOptions::NAMES)?)
    }

    /// The configuration: the provider the options name, then every other option.
    pub(crate) fn build(mut self) -> Result<core::Config, JsValue> {
        let builder = match (self.instance.take(), self.issuer.take(), self.endpoints.take()) {
            (Some(instance), None, None) => core::Config::erpnet(&instance),
            (None, Some(issuer), None) => core::Config::discover(&issuer),
            (None, None, Some(metadata)) => core::Config::with_endpoints(metadata),
            _ => {
                return Err(config_error(&core::error::ConfigError::Missing(
                    "exactly one of instance, issuer or endpoints",
                )))
            }
        };
        self.apply(builder)?.build().map_err(|e| config_error(&e))
    }
}

impl SignInParameters {
    /// The sign-in options of the parameters object a caller gave.
    pub(crate) fn from_js(value: &JsValue) -> Result<core::SignInOptions, JsValue> {
        SignInParameters::read(&Fields::new(value, None, SignInParameters::NAMES)?)?.apply(core::SignInOptions::new())
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
