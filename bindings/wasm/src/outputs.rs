//! What JavaScript gets back: `poll()`'s outputs and their events, with failures as codes
//! and fields (the driver words the messages). Their TypeScript types are generated from
//! these types (tsify).

use erpnet_auth as core;
use serde::Serialize;
use tsify::Tsify;

use crate::to_f64;

/// A request the host must send (with `redirect: "manual"`) and answer.
#[derive(Tsify, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest {
    /// Hand this back with the answer.
    pub id: f64,
    /// What it is for.
    pub kind: core::RequestKind,
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
    /// How long the request may take from when it is sent, in ms: present whenever the
    /// session times the request, also before it knows the time (when `deadline` is absent).
    /// Abort it at `deadline ?? sendTime + timeoutMs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[tsify(optional)]
    pub timeout_ms: Option<f64>,
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

    fn with_oauth(mut self, oauth: Option<&core::error::OAuthError>) -> Self {
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

fn oauth_of_token(e: &core::error::TokenError) -> Option<&core::error::OAuthError> {
    match e {
        core::error::TokenError::OAuth(oauth) => Some(oauth),
        _ => None,
    }
}

/// A token error's code, with what caused it and its HTTP status as fields.
fn token_error(e: &core::error::TokenError) -> ErrorInfo {
    let mut info = ErrorInfo::new(e.code()).with_detail(token_detail(e));
    if let core::error::TokenError::Unavailable { status, .. }
    | core::error::TokenError::Redirect { status }
    | core::error::TokenError::UnexpectedStatus { status } = e
    {
        info.status = Some(*status);
    }
    info.with_oauth(oauth_of_token(e))
}

fn token_detail(e: &core::error::TokenError) -> Option<&'static str> {
    match e {
        core::error::TokenError::Malformed(reason) => Some(reason.code()),
        core::error::TokenError::Transport(kind) => Some(kind.code()),
        _ => None,
    }
}

fn sign_in_error(e: &core::error::SignInError) -> ErrorInfo {
    match e {
        core::error::SignInError::Token(t) => token_error(t),
        core::error::SignInError::Callback(core::error::CallbackError::Provider(oauth)) => {
            ErrorInfo::new(e.code()).with_oauth(Some(oauth))
        }
        _ => ErrorInfo::new(e.code()),
    }
}

fn call_failure(e: &core::CallFailure) -> ErrorInfo {
    let oauth = match e {
        core::CallFailure::RenewalRefused(t) | core::CallFailure::RenewalUnavailable(t) => oauth_of_token(t),
        core::CallFailure::SignInRequired(core::error::SignInRequiredReason::RefreshRejected { error }) => Some(error),
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

fn user_info_error(e: &core::error::UserInfoError) -> ErrorInfo {
    match e {
        core::error::UserInfoError::Call(failure) => call_failure(failure),
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
                    core::error::SignInRequiredReason::RefreshRejected { error } => Some(error),
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
                core::erpnet::SkippedSite::NotWorking { site_type, .. } => {
                    Event::SiteSkipped { site_type, why: "notWorking".to_owned() }
                }
                core::erpnet::SkippedSite::Elsewhere { site_type } => {
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
                    kind: req.kind,
                    call: req.call.map(|c| to_f64(c.0)),
                    method: req.method.as_str().to_owned(),
                    url: req.url,
                    headers: req.headers,
                    body: req.body.map(|b| String::from_utf8_lossy(&b).into_owned()),
                    deadline: req.deadline.map(to_f64),
                    timeout_ms: req.timeout_ms.map(to_f64),
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
