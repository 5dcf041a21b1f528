//! The front channel: the authorization URL and the callback that answers it.

use crate::urls::Href;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ResponseMode, ResponseType};
use crate::discovery::ProviderMetadata;
use crate::json::{Object, Wrong};
use crate::oauth_error::{clean_description, OAuthError, OAuthErrorCode};
use crate::secret::{AuthorizationCode, CsrfState, IdToken, Nonce, PkceVerifier};
use crate::setting::{parse_endpoint, ConfigError};
use crate::usage::UsageError;

/// Optional parameters of one sign-in.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct SignInOptions {
    pub(crate) prompt: Option<String>,
    pub(crate) login_hint: Option<String>,
    pub(crate) ui_locales: Option<String>,
    pub(crate) max_age_secs: Option<u64>,
    pub(crate) extra: Vec<(String, String)>,
}

impl SignInOptions {
    /// No options.
    pub fn new() -> Self {
        Self::default()
    }

    /// `prompt`, e.g. `login` to force ERP.net's login screen.
    pub fn prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Some(prompt.into());
        self
    }

    /// `login_hint`: the user name to pre-fill.
    pub fn login_hint(mut self, hint: impl Into<String>) -> Self {
        self.login_hint = Some(hint.into());
        self
    }

    /// `ui_locales`, e.g. `bg en`.
    pub fn ui_locales(mut self, locales: impl Into<String>) -> Self {
        self.ui_locales = Some(locales.into());
        self
    }

    /// `max_age` in seconds.
    pub fn max_age_secs(mut self, secs: u64) -> Self {
        self.max_age_secs = Some(secs);
        self
    }

    /// Any other parameter. Parameters the session sets itself are not overridden.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((name.into(), value.into()));
        self
    }
}

/// A sign-in that has sent the browser away and awaits its callback. Persisted, so that a
/// browser sign-in survives the page reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingAuthorization {
    /// The `state` sent.
    pub state: CsrfState,
    /// The `nonce` sent.
    pub nonce: Nonce,
    /// The PKCE verifier, when a challenge was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<PkceVerifier>,
    /// The redirect URI sent (sent again in the code exchange).
    pub redirect_uri: String,
    /// When the sign-in began, Unix ms.
    pub created_at: u64,
    /// `max_age` sent, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
}

impl PendingAuthorization {
    pub(crate) fn from_object(mut p: Object) -> Result<PendingAuthorization, Wrong> {
        Ok(PendingAuthorization {
            state: CsrfState::new(p.required_string("state")?),
            nonce: Nonce::new(p.required_string("nonce")?),
            verifier: p.string("verifier")?.map(PkceVerifier::new),
            redirect_uri: p.required_string("redirect_uri")?,
            created_at: p.required_u64("created_at")?,
            max_age_secs: p.u64("max_age_secs")?,
        })
    }
}

impl<'de> Deserialize<'de> for PendingAuthorization {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Object::deserialize(d)?.read(PendingAuthorization::from_object)
    }
}

/// The redirect the browser came back with.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Callback<'a> {
    /// The full redirect URL (parameters in the query, or in the fragment for the hybrid
    /// flow's default mode).
    Url(&'a str),
    /// The `application/x-www-form-urlencoded` body POSTed with `response_mode=form_post`.
    FormPost(&'a str),
}

/// Why a callback was refused. Carries no parameter values: they may be codes or tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum CallbackError {
    /// No sign-in is waiting for a callback (caller error: call `sign_in` first).
    #[error("no sign-in is pending")]
    NoSignInPending,
    /// The host broke the loop contract.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Bigger than any real callback.
    #[error("the callback is too large")]
    TooLarge,
    /// Not a URL, or not a form body.
    #[error("the callback does not parse")]
    Malformed,
    /// The URL is not the configured redirect URI.
    #[error("the callback URL does not match the configured redirect URI")]
    RedirectUriMismatch,
    /// The parameters are not where the configured response mode puts them.
    #[error("the callback parameters are not where response_mode puts them")]
    WrongResponseMode,
    /// A parameter appears twice (RFC 6749 §4.1.2).
    #[error("the callback repeats the parameter {0}")]
    DuplicateParameter(String),
    /// No `state`.
    #[error("the callback has no state")]
    MissingState,
    /// `state` is not the one sent: a forged or stale callback.
    #[error("the callback's state does not match the pending sign-in")]
    StateMismatch,
    /// `iss` names another issuer (RFC 9207): a mix-up attack or a misconfiguration.
    #[error("the callback's iss does not match the provider's issuer")]
    IssuerMismatch,
    /// The provider promised `iss` (RFC 9207) and it is absent.
    #[error("the callback has no iss although the provider always sends it")]
    MissingIssuer,
    /// The sign-in began longer ago than the configured limit.
    #[error("the sign-in is too old; start a new one")]
    Expired,
    /// The provider answered with an error, e.g. `access_denied` when the user cancelled.
    #[error("the provider refused the sign-in: {0}")]
    Provider(OAuthError),
    /// No `code`.
    #[error("the callback has no code")]
    MissingCode,
    /// The hybrid flow's `id_token` is absent.
    #[error("the callback has no id_token although response_type is \"code id_token\"")]
    MissingIdToken,
}

/// Parameters after validation: the code to redeem.
pub(crate) struct AcceptedCallback {
    pub code: AuthorizationCode,
    pub front_channel_id_token: Option<IdToken>,
}

/// Parameters must stay far below this.
const MAX_CALLBACK_BYTES: usize = 64 * 1024;
const KNOWN_PARAMS: [&str; 8] =
    ["code", "state", "error", "error_description", "iss", "id_token", "session_state", "scope"];

pub(crate) fn authorization_url(
    config: &Config,
    metadata: &ProviderMetadata,
    pending: &PendingAuthorization,
    options: &SignInOptions,
) -> Result<String, ConfigError> {
    let url = parse_endpoint("authorization_endpoint", &metadata.authorization_endpoint)?;
    let challenge = pending.verifier.as_ref().map(PkceVerifier::s256_challenge);
    let max_age = options.max_age_secs.map(|s| s.to_string());
    let mut ours: Vec<(&str, &str)> = vec![
        ("client_id", &config.client_id),
        ("redirect_uri", &pending.redirect_uri),
        ("response_type", config.response_type.as_str()),
        ("scope", &config.scope),
        ("nonce", pending.nonce.secret()),
        ("state", pending.state.secret()),
    ];
    if let Some(challenge) = &challenge {
        ours.push(("code_challenge", challenge));
        ours.push(("code_challenge_method", "S256"));
    }
    if let Some(mode) = config.response_mode_param() {
        ours.push(("response_mode", mode));
    }
    let optional = [
        ("prompt", options.prompt.as_deref()),
        ("login_hint", options.login_hint.as_deref()),
        ("ui_locales", options.ui_locales.as_deref()),
        ("max_age", max_age.as_deref()),
    ];
    ours.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let extra = options.extra.iter().filter(|(name, _)| !ours.iter().any(|(n, _)| n == name));
    let extra: Vec<(&str, &str)> = extra.map(|(name, value)| (name.as_str(), value.as_str())).collect();
    let url = url.with_query_pairs(ours.into_iter().chain(extra));
    url.map(String::from)
        .map_err(|_| ConfigError::InvalidUrl { field: "authorization_endpoint", reason: "it does not parse" })
}

/// What a callback amounts to.
pub(crate) enum CallbackVerdict {
    /// Refused before its `state` matched: the pending sign-in is untouched.
    Refused(CallbackError),
    /// Its `state` matched, so it is the provider's one answer to this sign-in, and it is
    /// refused: the one-time state is spent (RFC 9700 §4.7).
    Spent(CallbackError),
    /// The code to redeem.
    Accepted(AcceptedCallback),
}

/// Judges a callback against the pending sign-in.
pub(crate) fn judge_callback(
    config: &Config,
    metadata: &ProviderMetadata,
    pending: &PendingAuthorization,
    callback: Callback<'_>,
    now: u64,
) -> CallbackVerdict {
    let params = match callback_params(config, pending, callback) {
        Ok(params) => params,
        Err(error) => return CallbackVerdict::Refused(error),
    };
    let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let Some(state) = get("state") else { return CallbackVerdict::Refused(CallbackError::MissingState) };
    if !pending.state.constant_time_eq(state) {
        return CallbackVerdict::Refused(CallbackError::StateMismatch);
    }
    match check_matched(config, metadata, pending, &get, now) {
        Ok(accepted) => CallbackVerdict::Accepted(accepted),
        Err(error) => CallbackVerdict::Spent(error),
    }
}

/// The checks after the state matched.
fn check_matched<'a>(
    config: &Config,
    metadata: &ProviderMetadata,
    pending: &PendingAuthorization,
    get: &impl Fn(&str) -> Option<&'a str>,
    now: u64,
) -> Result<AcceptedCallback, CallbackError> {
    // The `iss` parameter may be absent only where an ID token in this very response is
    // validated, `iss` claim included: the hybrid flow, whose front-channel token always is.
    let id_token_checked_here = config.response_type == ResponseType::CodeIdToken;
    match get("iss") {
        Some(iss) if iss != metadata.issuer => return Err(CallbackError::IssuerMismatch),
        None if metadata.authorization_response_iss_parameter_supported && !id_token_checked_here => {
            return Err(CallbackError::MissingIssuer)
        }
        _ => {}
    }
    if now.saturating_sub(pending.created_at) > config.timing.callback_max_age_ms {
        return Err(CallbackError::Expired);
    }
    if let Some(error) = get("error") {
        return Err(CallbackError::Provider(OAuthError {
            code: OAuthErrorCode::parse(error),
            description: get("error_description").map(clean_description),
            status: None,
        }));
    }
    let code = get("code").filter(|c| !c.is_empty()).ok_or(CallbackError::MissingCode)?;
    let id_token = match config.response_type {
        ResponseType::Code => None,
        _ => Some(IdToken::new(get("id_token").filter(|t| !t.is_empty()).ok_or(CallbackError::MissingIdToken)?)),
    };
    Ok(AcceptedCallback { code: AuthorizationCode::new(code), front_channel_id_token: id_token })
}

fn callback_params(
    config: &Config,
    pending: &PendingAuthorization,
    callback: Callback<'_>,
) -> Result<Vec<(String, String)>, CallbackError> {
    let mode = config.effective_response_mode();
    let raw = match callback {
        Callback::Url(s) | Callback::FormPost(s) if s.len() > MAX_CALLBACK_BYTES => {
            return Err(CallbackError::TooLarge)
        }
        Callback::FormPost(body) => {
            if mode != ResponseMode::FormPost {
                return Err(CallbackError::WrongResponseMode);
            }
            body.to_owned()
        }
        Callback::Url(s) => {
            let url = Href::parse(s).map_err(|_| CallbackError::Malformed)?;
            let expected = Href::parse(&pending.redirect_uri).map_err(|_| CallbackError::RedirectUriMismatch)?;
            if url.location() != expected.location() {
                return Err(CallbackError::RedirectUriMismatch);
            }
            let (wanted, other) = match mode {
                ResponseMode::Query => (url.query(), url.fragment()),
                ResponseMode::Fragment => (url.fragment(), url.query()),
                _ => return Err(CallbackError::WrongResponseMode),
            };
            let carries_response = |part: Option<&str>| {
                part.is_some_and(|p| form_urlencoded::parse(p.as_bytes()).any(|(k, _)| k == "state"))
            };
            if !carries_response(wanted) && carries_response(other) {
                return Err(CallbackError::WrongResponseMode);
            }
            wanted.unwrap_or_default().to_owned()
        }
    };
    // Refused, not decoded lossily: a code or state with U+FFFD in it is not what was sent.
    // Delimiters are ASCII, so the whole text decodes as UTF-8 exactly when every part does.
    if percent_encoding::percent_decode_str(&raw).decode_utf8().is_err() {
        return Err(CallbackError::Malformed);
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        if let Some(known) = KNOWN_PARAMS.iter().find(|k| **k == name) {
            if params.iter().any(|(n, _)| n == known) {
                return Err(CallbackError::DuplicateParameter((*known).to_owned()));
            }
            params.push((name.into_owned(), value.into_owned()));
        }
    }
    Ok(params)
}

impl CallbackError {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            CallbackError::NoSignInPending => "no_sign_in_pending",
            CallbackError::Usage(e) => e.code(),
            CallbackError::TooLarge => "too_large",
            CallbackError::Malformed => "malformed_callback",
            CallbackError::RedirectUriMismatch => "redirect_uri_mismatch",
            CallbackError::WrongResponseMode => "wrong_response_mode",
            CallbackError::DuplicateParameter(_) => "duplicate_parameter",
            CallbackError::MissingState => "missing_state",
            CallbackError::StateMismatch => "state_mismatch",
            CallbackError::IssuerMismatch => "issuer_mismatch",
            CallbackError::MissingIssuer => "missing_issuer",
            CallbackError::Expired => "sign_in_expired",
            CallbackError::Provider(_) => "provider_error",
            CallbackError::MissingCode => "missing_code",
            CallbackError::MissingIdToken => "missing_id_token",
        }
    }
}
