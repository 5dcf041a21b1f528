//! WebAssembly bindings of the `erpnet-auth` core for the npm package.
//!
//! A thin layer: every export is synchronous (the async lives in the JavaScript driver),
//! values cross as plain objects through serde-wasm-bindgen, their TypeScript types are
//! generated from the Rust types below by tsify, and every error becomes a JavaScript
//! `Error` with a stable `code`. No protocol logic lives here.
#![forbid(unsafe_code)]

mod fields;
mod options;
mod outputs;
mod table;

use erpnet_auth as core;
use tsify::{Ts, Tsify};
use wasm_bindgen::prelude::*;

use options::api_call;
pub use options::{ClientOptions, SignInParameters, TimingOptions};
pub use outputs::{ErrorInfo, Event, HttpRequest, Output, PublicJwk, SignatureCheck};

/// A JavaScript `Error` whose `code` a caller can branch on. The message never contains a
/// secret: the core's error texts do not.
fn error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    // Setting a property on a fresh Error object cannot fail.
    let _ = js_sys::Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}

/// An error that crosses as its code alone (the driver words the message): the core's
/// prose stays out of the wasm. Configuration and option errors keep theirs (`error`).
fn coded(code: &str) -> JsValue {
    error(code, code)
}

fn usage(e: core::UsageError) -> JsValue {
    coded(e.code())
}

fn bad_value(e: impl std::fmt::Display) -> JsValue {
    // serde's messages quote string values ("invalid type: string \"…\""), and a misplaced
    // secret must not be echoed: keep the field names (in backticks), drop quoted values.
    let text = e.to_string();
    let redacted: String = text.split('"').enumerate().map(|(i, part)| if i % 2 == 1 { "…" } else { part }).collect();
    error("invalid_argument", &format!("invalid argument: {redacted}"))
}

/// Unix milliseconds from JavaScript (`Date.now()`).
fn time(now: f64) -> Result<u64, JsValue> {
    if (0.0..=9_007_199_254_740_991.0).contains(&now) {
        // Truncation of a validated, non-negative, integral-range value is the intent.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(now as u64)
    } else {
        Err(error("invalid_time", "now must be Unix time in milliseconds (Date.now())"))
    }
}

fn id(value: f64) -> Result<u64, JsValue> {
    time(value).map_err(|_| error("invalid_argument", "ids are non-negative integers"))
}

/// A client's options parsed once and what its sessions learned of the provider, shared by
/// every session made from it: a server's users' sessions hold one copy of the
/// configuration and of the provider's metadata, keys and sites, not one each, and their
/// snapshots leave the provider out.
#[wasm_bindgen]
pub struct SharedClient {
    config: std::sync::Arc<core::Config>,
    provider: core::ProviderState,
}

#[wasm_bindgen]
impl SharedClient {
    /// Parses `options` (as `new Session` does).
    #[wasm_bindgen(constructor)]
    pub fn new(options: Ts<ClientOptions>) -> Result<SharedClient, JsValue> {
        let mut options = ClientOptions::from_js(&options.js_value())?;
        options.snapshot_provider = Some(false);
        Ok(SharedClient { config: std::sync::Arc::new(options.build()?), provider: core::ProviderState::default() })
    }

    /// A session of this client, restored from `snapshot` (JSON) when given; it discovers
    /// the provider only if no session of this client has yet.
    pub fn session(&self, snapshot: Option<String>) -> Result<WasmSession, JsValue> {
        open_session(std::sync::Arc::clone(&self.config), &self.provider, snapshot)
    }

    /// Takes over what `session` knows of the provider (after its discovery, key set or
    /// sites answer), for the sessions made from now on.
    #[wasm_bindgen(js_name = learnFrom)]
    pub fn learn_from(&mut self, session: &WasmSession) {
        let learned = session.inner.provider_state();
        self.provider = learned.or(&self.provider);
    }

    /// Whether the provider's metadata is known.
    #[wasm_bindgen(getter, js_name = isProviderKnown)]
    pub fn is_provider_known(&self) -> bool {
        self.provider.metadata().is_some()
    }
}

/// The one path from options and a stored snapshot (JSON) to a session.
fn open_session(
    config: std::sync::Arc<core::Config>,
    provider: &core::ProviderState,
    snapshot: Option<String>,
) -> Result<WasmSession, JsValue> {
    let snapshot = match snapshot {
        Some(json) => Some(core::Snapshot::from_json(&json).map_err(|e| coded(e.code()))?),
        None => None,
    };
    let inner =
        core::Session::with_provider(config, provider, snapshot, core::OsRandom).map_err(|e| coded(e.code()))?;
    Ok(WasmSession { inner })
}

/// One session's authorization state: the sans-IO machine. See the package README for the
/// loop contract; most applications use the `ErpNetAuth` driver instead.
#[wasm_bindgen(js_name = Session)]
pub struct WasmSession {
    inner: core::Session,
}

#[wasm_bindgen(js_class = Session)]
impl WasmSession {
    /// A session from options, restored from `snapshot` (JSON) when given.
    #[wasm_bindgen(constructor)]
    pub fn new(options: Ts<ClientOptions>, snapshot: Option<String>) -> Result<WasmSession, JsValue> {
        let options = ClientOptions::from_js(&options.js_value())?;
        let config = options.build()?;
        open_session(std::sync::Arc::new(config), &core::ProviderState::default(), snapshot)
    }

    /// The authorization URL to send the browser to.
    #[wasm_bindgen(js_name = signIn)]
    pub fn sign_in(&mut self, now: f64, options: Option<Ts<SignInParameters>>) -> Result<String, JsValue> {
        let options = match options {
            Some(o) => SignInParameters::from_js(&o.js_value())?,
            None => core::SignInOptions::new(),
        };
        self.inner.sign_in(time(now)?, options).map_err(usage)
    }

    /// The full redirect URL the browser came back with.
    #[wasm_bindgen(js_name = handleCallbackUrl)]
    pub fn handle_callback_url(&mut self, now: f64, url: &str) -> Result<(), JsValue> {
        self.inner.handle_callback(time(now)?, core::Callback::Url(url)).map_err(callback_error)
    }

    /// The `application/x-www-form-urlencoded` body of a `form_post` callback.
    #[wasm_bindgen(js_name = handleCallbackFormPost)]
    pub fn handle_callback_form_post(&mut self, now: f64, body: &str) -> Result<(), JsValue> {
        self.inner.handle_callback(time(now)?, core::Callback::FormPost(body)).map_err(callback_error)
    }

    /// Starts an API call; returns its id. `url` is absolute or relative to the API root;
    /// `headers` (other than `Authorization`) are name, value, name, value, … (as Node's
    /// `rawHeaders`); `expectedDurationMs` is how long the call is expected to run (a long
    /// poll: a token that would expire before it ends is renewed first). The body stays with
    /// the caller: the emitted request names the call, and the driver attaches the body.
    #[wasm_bindgen(js_name = callApi)]
    pub fn call_api(
        &mut self,
        now: f64,
        method: &str,
        url: String,
        headers: Vec<String>,
        #[wasm_bindgen(js_name = expectedDurationMs)] expected_duration_ms: Option<f64>,
    ) -> Result<f64, JsValue> {
        let request = api_call(method, url, pairs(headers)?, expected_duration_ms)?;
        let call = self.inner.call_api(time(now)?, request).map_err(|e| coded(e.code()))?;
        Ok(to_f64(call.0))
    }

    /// Cancels a call.
    #[wasm_bindgen(js_name = cancelCall)]
    pub fn cancel_call(&mut self, now: f64, call: f64) -> Result<(), JsValue> {
        self.inner.cancel_call(time(now)?, core::CallId(id(call)?)).map_err(usage)
    }

    /// Signs out; returns the end-session URL when the provider has one.
    #[wasm_bindgen(js_name = signOut)]
    pub fn sign_out(&mut self, now: f64, post_logout_redirect_uri: Option<String>) -> Result<Option<String>, JsValue> {
        self.inner.sign_out(time(now)?, post_logout_redirect_uri.as_deref()).map_err(usage)
    }

    /// Asks the userinfo endpoint about the signed-in user through the renewal-aware call
    /// path; returns the call whose `userInfo` or `userInfoFailed` event follows.
    #[wasm_bindgen(js_name = fetchUserInfo)]
    pub fn fetch_user_info(&mut self, now: f64) -> Result<f64, JsValue> {
        let call = self.inner.fetch_user_info(time(now)?).map_err(usage)?;
        Ok(to_f64(call.0))
    }

    /// The validated claims of the current ID token (`sub`, `name`, `email`, ERP.net's own).
    #[wasm_bindgen(getter)]
    pub fn claims(&self) -> Result<JsValue, JsValue> {
        match self.inner.claims() {
            // Plain objects, not Maps: the claims are flattened JSON.
            Some(claims) => {
                use serde::Serialize;
                claims.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|_| coded("internal"))
            }
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// Tries discovery again after a `discoveryFailed` event.
    pub fn discover(&mut self, now: f64) -> Result<(), JsValue> {
        self.inner.discover(time(now)?).map_err(usage)
    }

    /// The answer to request `id`: its status, its headers as name, value, name, value, …
    /// (those `responseHeadersRead()` names are enough; `[...response.headers].flat()` does),
    /// and its body as text (token, discovery, key set, revocation and sites answers; not
    /// needed for API calls).
    #[wasm_bindgen(js_name = handleResponse)]
    pub fn handle_response(
        &mut self,
        now: f64,
        request: f64,
        status: u16,
        headers: Vec<String>,
        body: Option<String>,
    ) -> Result<(), JsValue> {
        let response = core::HttpResponse {
            status,
            headers: pairs(headers)?,
            body: body.map(String::into_bytes).unwrap_or_default(),
        };
        self.inner.handle_response(time(now)?, core::RequestId(id(request)?), response).map_err(usage)
    }

    /// Request `id` got no answer: `kind` is `connect`, `timeout`, `interrupted` or `other`.
    #[wasm_bindgen(js_name = handleTransportError)]
    pub fn handle_transport_error(&mut self, now: f64, request: f64, kind: &str) -> Result<(), JsValue> {
        let error = core::TransportError::from_code(kind);
        self.inner.handle_transport_error(time(now)?, core::RequestId(id(request)?), error).map_err(usage)
    }

    /// The verdict on signature check `id` (a `verifySignature` output): `true` only for a
    /// valid signature, `false` when it is not or could not be checked.
    #[wasm_bindgen(js_name = handleSignature)]
    pub fn handle_signature(&mut self, now: f64, check: f64, valid: bool) -> Result<(), JsValue> {
        self.inner.handle_signature(time(now)?, core::SignatureCheckId(id(check)?), valid).map_err(usage)
    }

    /// Asks the instance's Profile site who the user is (`/me`): a `profile` or
    /// `profileFailed` event for the returned call follows.
    #[wasm_bindgen(js_name = fetchProfile)]
    pub fn fetch_profile(&mut self, now: f64) -> Result<f64, JsValue> {
        self.inner.fetch_profile(time(now)?).map(|c| to_f64(c.0)).map_err(usage)
    }

    /// Whether the instance's auto-discovery is under way.
    #[wasm_bindgen(getter, js_name = isDiscoveringSites)]
    pub fn is_discovering_sites(&self) -> bool {
        self.inner.is_discovering_sites()
    }

    /// The Profile site, once auto-discovery found it on the instance.
    #[wasm_bindgen(getter, js_name = profileSite)]
    pub fn profile_site(&self) -> Option<String> {
        self.inner.profile_site().map(str::to_owned)
    }

    /// The timer for `waitUntil` fired.
    #[wasm_bindgen(js_name = handleTimeout)]
    pub fn handle_timeout(&mut self, now: f64) -> Result<(), JsValue> {
        self.inner.handle_timeout(time(now)?).map_err(usage)
    }

    /// Another tab or process stored a newer snapshot (JSON): adopt it.
    #[wasm_bindgen(js_name = handleSnapshot)]
    pub fn handle_snapshot(&mut self, now: f64, snapshot: &str) -> Result<(), JsValue> {
        let snapshot = core::Snapshot::from_json(snapshot).map_err(|e| coded(e.code()))?;
        self.inner.handle_snapshot(time(now)?, snapshot).map_err(|e| coded(e.code()))
    }

    /// Whether request `id` still matters (false after a cancel, a sign-out, or when an
    /// adopted snapshot made a refresh obsolete). Answer an unwanted request with
    /// `handleTransportError(now, id, "other")` instead of sending it.
    #[wasm_bindgen(js_name = isRequestWanted)]
    pub fn is_request_wanted(&self, request: f64) -> Result<bool, JsValue> {
        Ok(self.inner.is_request_wanted(core::RequestId(id(request)?)))
    }

    /// The lease, in ms, to take a shared store's token lock for before token request `id`
    /// is sent (it covers the request's deadline and a key-set fetch after it, with a
    /// margin); `undefined` when `id` is not a token request that may still be sent.
    #[wasm_bindgen(js_name = tokenLeaseMs)]
    pub fn token_lease_ms(&self, request: f64) -> Result<Option<f64>, JsValue> {
        Ok(self.inner.token_lease_ms(core::RequestId(id(request)?)).map(to_f64))
    }

    /// Whether a token lock held until `expiresAt` (Unix ms, counted from before the lock
    /// was asked for) still covers sending token request `id`; if not, answer it with
    /// `handleTransportError` instead of sending it.
    #[wasm_bindgen(js_name = leaseCovers)]
    pub fn lease_covers(&self, request: f64, expires_at: f64) -> Result<bool, JsValue> {
        Ok(self.inner.lease_covers(core::RequestId(id(request)?), time(expires_at)?))
    }

    /// The next output; drain until `waitUntil` or `idle`.
    pub fn poll(&mut self) -> Result<Ts<Output>, JsValue> {
        Output::from_core(self.inner.poll()).into_ts().map_err(bad_value)
    }

    /// The durable state as JSON.
    pub fn snapshot(&self) -> String {
        self.inner.snapshot().to_json()
    }

    /// Whether the session holds tokens.
    #[wasm_bindgen(getter, js_name = isSignedIn)]
    pub fn is_signed_in(&self) -> bool {
        self.inner.is_signed_in()
    }

    /// Whether the provider's endpoints are known (sign-in can begin).
    #[wasm_bindgen(getter, js_name = isProviderReady)]
    pub fn is_provider_ready(&self) -> bool {
        self.inner.is_provider_ready()
    }

    /// A token answer is still being checked: hold the token-request lock until it is not.
    #[wasm_bindgen(getter, js_name = isCheckingTokenAnswer)]
    pub fn is_checking_token_answer(&self) -> bool {
        self.inner.is_checking_token_answer()
    }

    /// Whether a sign-in awaits its callback.
    #[wasm_bindgen(getter, js_name = isSignInPending)]
    pub fn is_sign_in_pending(&self) -> bool {
        self.inner.is_sign_in_pending()
    }

    /// The scope the server granted.
    #[wasm_bindgen(getter, js_name = grantedScope)]
    pub fn granted_scope(&self) -> Option<String> {
        self.inner.granted_scope().map(str::to_owned)
    }

    /// When the access token expires, Unix ms.
    #[wasm_bindgen(getter, js_name = expiresAt)]
    pub fn expires_at(&self) -> Option<f64> {
        self.inner.expires_at().map(to_f64)
    }
}

/// Headers crossed as one flat list of strings (no object conversion at the boundary).
fn pairs(flat: Vec<String>) -> Result<Vec<(String, String)>, JsValue> {
    if !flat.len().is_multiple_of(2) {
        return Err(error("invalid_argument", "headers are name, value, name, value, …"));
    }
    let mut flat = flat.into_iter();
    Ok(std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect())
}

fn callback_error(e: core::error::CallbackError) -> JsValue {
    coded(e.code())
}

/// The answer headers the session reads, lowercase and separated by commas: `handleResponse`
/// needs these (more are allowed, and cost a crossing each).
#[wasm_bindgen(js_name = responseHeadersRead)]
pub fn response_headers_read() -> String {
    core::http::RESPONSE_HEADERS_READ.join(",")
}

/// ERP.net's `ApplicationSecretHash` for a secret: `base64(sha256(utf8(secret)))`.
#[wasm_bindgen(js_name = applicationSecretHash)]
pub fn application_secret_hash(secret: &str) -> String {
    core::install::application_secret_hash(secret)
}

/// Ids and Unix ms stay far below 2^53.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn to_f64(value: u64) -> f64 {
    value as f64
}
