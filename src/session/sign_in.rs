//! The sign-in pipeline: the pending authorization (durable, awaiting its callback) and the
//! redemption of an accepted callback's code.

use crate::authorize::{self, Callback, CallbackError, CallbackVerdict, PendingAuthorization, SignInOptions};
use crate::config::{Config, TokenRequestParts};
use crate::discovery::ProviderMetadata;
use crate::http::{HttpResponse, RequestId, TransportError};
use crate::id_token::IdTokenClaims;
use crate::output::SignInError;
use crate::random::{self, RandomSource};
use crate::secret::{AuthorizationCode, CsrfState, IdToken, Nonce, PkceVerifier};
use crate::token::{self, TokenError, TokenGrant};
use crate::urls::WebUrl;
use crate::usage::UsageError;

use super::id_tokens::{Held, Verdict, Wait};

/// The provider's end-session URL (RP-initiated logout) with the ID token as a hint; with a
/// post-logout redirect URI, a fresh `state`. `None` when the provider has no end-session
/// endpoint. Built before a sign-out changes anything: an `Err` leaves the session as it was.
pub(super) fn end_session_url(
    config: &Config,
    metadata: Option<&ProviderMetadata>,
    id_token: Option<&IdToken>,
    post_logout_redirect_uri: Option<&str>,
    rng: &mut dyn RandomSource,
) -> Result<Option<String>, UsageError> {
    let Some(endpoint) = metadata.and_then(|m| m.end_session_endpoint.as_deref()) else { return Ok(None) };
    let url = WebUrl::parse(endpoint).map_err(|_| UsageError::ProviderNotReady)?;
    let state = match post_logout_redirect_uri {
        Some(_) => Some(random::unguessable(rng).map_err(|_| UsageError::RandomUnavailable)?),
        None => None,
    };
    let pairs = [
        id_token.map(|t| ("id_token_hint", t.secret())),
        post_logout_redirect_uri.map(|uri| ("post_logout_redirect_uri", uri)),
        state.as_deref().map(|state| ("state", state)),
        Some(("client_id", config.client_id.as_str())),
    ];
    let url = url.with_query_pairs(pairs.into_iter().flatten()).map_err(|_| UsageError::ProviderNotReady)?;
    Ok(Some(url.into()))
}

/// An accepted callback's code with what its redemption needs.
#[derive(Debug)]
pub(super) struct Exchange {
    code: AuthorizationCode,
    pending: PendingAuthorization,
    /// The front channel's validated claims (hybrid flow).
    front: Option<IdTokenClaims>,
}

impl Exchange {
    /// The code exchange: the code, the redirect URI it was sent to, the PKCE verifier.
    pub fn token_request(&self, config: &Config) -> TokenRequestParts {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", self.code.secret()),
            ("redirect_uri", self.pending.redirect_uri.as_str()),
        ];
        if let Some(verifier) = &self.pending.verifier {
            params.push(("code_verifier", verifier.secret()));
        }
        config.token_request(&params)
    }
}

/// Where the redemption of an accepted callback stands. Each step's data lives in its
/// variant, so a step cannot see data of another.
///
/// ```text
/// Idle ──callback (code)──────────────────────────────┐
///   └──callback (code id_token)──► CheckingFrontChannel ──valid──►  Queued ──slot free──► Exchanging
///                                        │ refused                                  │ answer
///                                        ▼                                          ▼
///                                      Idle ◄──refused / failed── CheckingIdToken ◄─┘ (with id_token)
///                                      Idle ◄──────────────────── signed in ◄───── valid (or none needed)
/// ```
#[derive(Debug, Default)]
enum Redemption {
    #[default]
    Idle,
    /// Hybrid flow: the front channel's ID token is checked before the code is redeemed.
    CheckingFrontChannel { exchange: Box<Exchange>, id_token: IdToken, fetched_keys: bool },
    /// Waiting for the token slot.
    Queued(Box<Exchange>),
    /// The code exchange is in flight, sent at `sent_at`.
    Exchanging {
        request: RequestId,
        pending: Box<PendingAuthorization>,
        front: Option<Box<IdTokenClaims>>,
        sent_at: u64,
    },
    /// The exchange's ID token is checked before any of its tokens is installed.
    CheckingIdToken {
        grant: Box<TokenGrant>,
        pending: Box<PendingAuthorization>,
        front: Option<Box<IdTokenClaims>>,
        sent_at: u64,
        fetched_keys: bool,
    },
}

/// The sign-in pipeline's state.
#[derive(Debug, Default)]
pub(super) struct SignIn {
    /// Durable: a sign-in whose callback has not come back yet.
    pending: Option<PendingAuthorization>,
    redemption: Redemption,
}

/// What a callback whose state matched came to.
pub(super) enum Answered {
    /// Its code is on its way to the token endpoint (its front-channel ID token first).
    Accepted,
    /// Refused after its state matched: the one-time state is spent.
    Spent(SignInError),
}

/// What a redemption came to.
pub(super) enum Redeemed {
    /// Tokens, to install, with the validated claims of their ID token (or the front
    /// channel's).
    Tokens { grant: Box<TokenGrant>, claims: Option<Box<IdTokenClaims>>, sent_at: u64 },
    /// Its ID token is checked before any of its tokens is installed.
    Checking,
    /// No tokens. Codes are single use: never retried; tokens held before are kept.
    Refused(SignInError),
}

impl SignIn {
    pub fn pending(&self) -> Option<&PendingAuthorization> {
        self.pending.as_ref()
    }

    /// Begins a sign-in: the pending authorization (replacing one that waits) and the URL to
    /// send the browser to. Refused, with nothing changed, when randomness fails or a hostile
    /// discovery made the authorization endpoint unusable.
    pub fn begin(
        &mut self,
        config: &Config,
        metadata: &ProviderMetadata,
        options: &SignInOptions,
        rng: &mut dyn RandomSource,
        now: u64,
    ) -> Result<String, UsageError> {
        let redirect_uri = config.redirect_uri.clone().ok_or(UsageError::WrongGrant)?;
        let mut draw = || random::unguessable(rng).map_err(|_| UsageError::RandomUnavailable);
        let state = CsrfState::new(draw()?);
        let nonce = Nonce::new(draw()?);
        let verifier = if config.pkce { Some(PkceVerifier::new(draw()?)) } else { None };
        let pending = PendingAuthorization {
            state,
            nonce,
            verifier,
            redirect_uri,
            created_at: now,
            max_age_secs: options.max_age_secs,
        };
        // The configuration was validated; only a hostile discovery could make this fail.
        let url = authorize::authorization_url(config, metadata, &pending, options)
            .map_err(|_| UsageError::ProviderNotReady)?;
        self.pending = Some(pending);
        Ok(url)
    }

    /// A stored snapshot's pending sign-in (or none) replaces this one.
    pub fn restore(&mut self, pending: Option<PendingAuthorization>) {
        self.pending = pending;
    }

    /// Judges a callback against the pending sign-in. `Err`: refused before its state matched
    /// (nothing changed); otherwise the pending sign-in is spent.
    pub fn callback(
        &mut self,
        config: &Config,
        metadata: Option<&ProviderMetadata>,
        callback: Callback<'_>,
        now: u64,
    ) -> Result<Answered, CallbackError> {
        let pending = self.pending.as_ref().ok_or(CallbackError::NoSignInPending)?;
        let metadata = metadata.ok_or(CallbackError::Usage(UsageError::ProviderNotReady))?;
        let accepted = match authorize::judge_callback(config, metadata, pending, callback, now) {
            CallbackVerdict::Refused(error) => return Err(error),
            CallbackVerdict::Spent(error) => {
                self.pending = None;
                return Ok(Answered::Spent(SignInError::Callback(error)));
            }
            CallbackVerdict::Accepted(accepted) => accepted,
        };
        let Some(pending) = self.pending.take() else { return Err(CallbackError::NoSignInPending) };
        let exchange = Box::new(Exchange { code: accepted.code, pending, front: None });
        self.redemption = match accepted.front_channel_id_token {
            // The front channel's ID token is checked before the code is redeemed.
            Some(id_token) => Redemption::CheckingFrontChannel { exchange, id_token, fetched_keys: false },
            None => Redemption::Queued(exchange),
        };
        Ok(Answered::Accepted)
    }

    /// Tokens will come out of this redemption unless it fails.
    pub fn is_underway(&self) -> bool {
        !matches!(self.redemption, Redemption::Idle)
    }

    /// A code waits for the token slot.
    pub fn is_queued(&self) -> bool {
        matches!(self.redemption, Redemption::Queued(_))
    }

    /// The exchange's answer is being checked.
    pub fn is_checking_id_token(&self) -> bool {
        matches!(self.redemption, Redemption::CheckingIdToken { .. })
    }

    #[cfg(any(test, feature = "check-invariants"))]
    /// The code exchange in flight.
    pub fn request(&self) -> Option<RequestId> {
        match self.redemption {
            Redemption::Exchanging { request, .. } => Some(request),
            _ => None,
        }
    }

    /// The code waiting for the token slot, taken to be sent.
    pub fn take_queued(&mut self) -> Option<Exchange> {
        if !self.is_queued() {
            return None;
        }
        match std::mem::take(&mut self.redemption) {
            Redemption::Queued(exchange) => Some(*exchange),
            _ => None,
        }
    }

    /// The code waits again (the token endpoint is not known).
    pub fn queue(&mut self, exchange: Exchange) {
        self.redemption = Redemption::Queued(Box::new(exchange));
    }

    pub fn sent(&mut self, exchange: Exchange, request: RequestId, now: u64) {
        self.redemption = Redemption::Exchanging {
            sent_at: now,
            request,
            pending: Box::new(exchange.pending),
            front: exchange.front.map(Box::new),
        };
    }

    /// Forgets everything: a sign-out.
    pub fn reset(&mut self) {
        *self = SignIn::default();
    }

    /// Takes the answer to request `id`; `None` when it is not the exchange in flight.
    pub fn on_answer(
        &mut self,
        id: RequestId,
        answer: Result<HttpResponse, TransportError>,
        now: u64,
        config: &Config,
    ) -> Option<Redeemed> {
        if !matches!(self.redemption, Redemption::Exchanging { request, .. } if request == id) {
            return None;
        }
        let Redemption::Exchanging { pending, front, sent_at, .. } = std::mem::take(&mut self.redemption) else {
            return None;
        };
        let answer = answer.map_err(TokenError::Transport).and_then(|r| token::parse_token_response(&r, now));
        Some(match answer {
            // OpenID Connect Core §3.1.3.3: a code exchange for `openid` returns an ID token.
            Ok(grant) if config.id_tokens_checked() && grant.id_token.is_none() => {
                Redeemed::Refused(SignInError::MissingIdToken)
            }
            Ok(grant) if config.id_tokens_checked() => {
                self.redemption = Redemption::CheckingIdToken {
                    grant: Box::new(grant),
                    pending,
                    front,
                    sent_at,
                    fetched_keys: false,
                };
                Redeemed::Checking
            }
            Ok(grant) => Redeemed::Tokens { grant: Box::new(grant), claims: front, sent_at },
            Err(error) => Redeemed::Refused(SignInError::Token(error)),
        })
    }

    /// The ID token being checked, and what it must satisfy.
    pub fn held(&self, config: &Config) -> Option<Held<'_>> {
        match &self.redemption {
            Redemption::CheckingFrontChannel { exchange, id_token, fetched_keys } => Some(Held {
                token: Some(id_token),
                signature: true,
                nonce: Some(&exchange.pending.nonce),
                max_age_secs: exchange.pending.max_age_secs,
                access_token: None,
                code: Some(&exchange.code),
                state: Some(&exchange.pending.state),
                previous: None,
                fetched_keys: *fetched_keys,
            }),
            Redemption::CheckingIdToken { grant, pending, front, fetched_keys, .. } => Some(Held {
                token: grant.id_token.as_ref(),
                signature: config.verify_token_endpoint_signature,
                nonce: Some(&pending.nonce),
                max_age_secs: pending.max_age_secs,
                access_token: Some(&grant.access_token),
                code: None,
                state: None,
                previous: front.as_deref(),
                fetched_keys: *fetched_keys,
            }),
            _ => None,
        }
    }

    /// Takes the verdict on the ID token being checked: a valid front-channel token lets the
    /// code go to the token endpoint; a valid exchange's gives its tokens.
    pub fn checked(&mut self, verdict: Verdict) -> Option<Redeemed> {
        let fetched = |fetched_keys: bool, wait: &Wait| fetched_keys || matches!(wait, Wait::FetchKeys);
        match (std::mem::take(&mut self.redemption), verdict) {
            (Redemption::CheckingFrontChannel { mut exchange, .. }, Verdict::Valid(claims)) => {
                exchange.front = Some(*claims);
                self.redemption = Redemption::Queued(exchange);
                None
            }
            (Redemption::CheckingFrontChannel { exchange, id_token, fetched_keys }, Verdict::Held(wait)) => {
                let fetched_keys = fetched(fetched_keys, &wait);
                self.redemption = Redemption::CheckingFrontChannel { exchange, id_token, fetched_keys };
                None
            }
            (Redemption::CheckingIdToken { grant, sent_at, .. }, Verdict::Valid(claims)) => {
                Some(Redeemed::Tokens { grant, claims: Some(claims), sent_at })
            }
            (Redemption::CheckingIdToken { grant, pending, front, sent_at, fetched_keys }, Verdict::Held(wait)) => {
                let fetched_keys = fetched(fetched_keys, &wait);
                self.redemption = Redemption::CheckingIdToken { grant, pending, front, sent_at, fetched_keys };
                None
            }
            (Redemption::CheckingFrontChannel { .. } | Redemption::CheckingIdToken { .. }, Verdict::Refused(error)) => {
                Some(Redeemed::Refused(SignInError::IdToken(error)))
            }
            (other, _) => {
                self.redemption = other;
                None
            }
        }
    }
}
