//! The renewal pipeline: refreshing (or, for client credentials, re-requesting) the access
//! token, with bounded, jittered backoff, and the judgement of its answer.

use crate::config::{Config, Timing, TokenRequestParts};
use crate::http::{HttpResponse, RequestId, TransportError};
use crate::id_token::IdTokenClaims;
use crate::output::{CallFailure, SignInRequiredReason};
use crate::random::{self, RandomSource};
use crate::secret::RefreshToken;
use crate::token::{self, TokenError, TokenGrant};

use super::id_tokens::{Held, Verdict, Wait};

/// Where the renewal stands.
///
/// ```text
///            ┌──────────── success ◄──────────── CheckingIdToken ◄─ answer with id_token ─┐
///            ▼                                                                             │
///          Idle ──due / 401 / waiting call──► InFlight ── answer ──► success ──────────────┤
///           ▲  ▲                                 │ transient failure                       │
///           │  └── timer ── Backoff { until } ◄──┘ (until the attempts run out)            │
///           └── cooldown over ── Suspended { until } ◄── refused, or attempts exhausted ◄──┘
/// ```
///
/// Failures are counted until a renewal succeeds (or other tokens are adopted), so after a
/// cooldown the first failure suspends again: an outage costs one request per cooldown,
/// whatever the call rate.
#[derive(Debug, Default)]
enum Phase {
    #[default]
    Idle,
    /// The token request is in flight (it holds the session's token slot), sent at `sent_at`.
    InFlight { request: RequestId, used: Option<RefreshToken>, sent_at: u64 },
    /// The answer's ID token is checked (waiting for keys) before its tokens are installed.
    CheckingIdToken { grant: Box<TokenGrant>, used: Option<RefreshToken>, sent_at: u64, fetched_keys: bool },
    /// A transient failure: the next attempt goes out at `until`.
    Backoff { until: u64 },
    /// Gave up: until `until`, calls that need new tokens fail at once with `failure`.
    Suspended { until: u64, failure: CallFailure },
}

#[derive(Debug, Default)]
pub(super) struct Renewal {
    phase: Phase,
    /// Failures since the last success.
    failures: u32,
}

/// What a renewal came to.
pub(super) enum Renewed {
    /// New tokens, to install (`used`: the refresh token spent), with the claims of their ID
    /// token when it was checked.
    Tokens { grant: Box<TokenGrant>, used: Option<RefreshToken>, claims: Option<Box<IdTokenClaims>>, sent_at: u64 },
    /// Its ID token is checked before its tokens are used.
    Checking,
    /// The token that failed was already replaced (another tab or process rotated it and the
    /// session adopted the result): its failure says nothing about the current one.
    Stale,
    /// Only a new sign-in can help: the tokens are worthless.
    SignInRequired(SignInRequiredReason),
    /// A transient failure: retried at `retry_at`; the tokens are kept.
    Deferred { error: TokenError, attempt: u32, retry_at: u64 },
    /// Given up until the cooldown is over; calls that need new tokens fail with `failure`.
    GaveUp { error: TokenError, failure: CallFailure },
}

/// The token request of a renewal: a refresh with `refresh_token`, or without one (client
/// credentials) a new token for the configured scope.
pub(super) fn token_request(config: &Config, refresh_token: Option<&RefreshToken>) -> TokenRequestParts {
    match refresh_token {
        Some(refresh) => config.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh.secret())]),
        None => {
            let mut params = vec![("grant_type", "client_credentials")];
            if !config.scope.is_empty() {
                params.push(("scope", config.scope.as_str()));
            }
            config.token_request(&params)
        }
    }
}

impl Renewal {
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle)
    }

    /// New tokens will come out of this renewal unless it fails.
    pub fn is_underway(&self) -> bool {
        matches!(self.phase, Phase::InFlight { .. } | Phase::CheckingIdToken { .. } | Phase::Backoff { .. })
    }

    pub fn is_checking_id_token(&self) -> bool {
        matches!(self.phase, Phase::CheckingIdToken { .. })
    }

    /// When the next attempt after a transient failure goes out.
    pub fn retry_at(&self) -> Option<u64> {
        match self.phase {
            Phase::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// The backoff is over: the next attempt may start.
    pub fn backoff_over(&mut self) {
        self.phase = Phase::Idle;
    }

    /// After the cooldown a call may try again (the failures stay counted).
    pub fn resume_if_due(&mut self, now: u64) {
        if matches!(self.phase, Phase::Suspended { until, .. } if until <= now) {
            self.phase = Phase::Idle;
        }
    }

    /// Why calls fail while suspended.
    pub fn suspended_failure(&self) -> Option<&CallFailure> {
        match &self.phase {
            Phase::Suspended { failure, .. } => Some(failure),
            _ => None,
        }
    }

    #[cfg(any(test, feature = "check-invariants"))]
    /// The request in flight.
    pub fn request(&self) -> Option<RequestId> {
        match self.phase {
            Phase::InFlight { request, .. } => Some(request),
            _ => None,
        }
    }

    pub fn sent(&mut self, request: RequestId, used: Option<RefreshToken>, now: u64) {
        self.phase = Phase::InFlight { request, used, sent_at: now };
    }

    /// Other tokens were adopted (`current`: their refresh token). A renewal with a refresh
    /// token that is no longer current is dropped: if the host has not sent it yet it must
    /// not go out (with rotation the server would see reuse), and its answer would be stale.
    /// A backoff or a suspension is over too. Returns the request to abandon, if any.
    pub fn tokens_adopted(&mut self, current: Option<&RefreshToken>) -> Option<RequestId> {
        let used = match &self.phase {
            Phase::InFlight { used, .. } | Phase::CheckingIdToken { used, .. } => used.as_ref(),
            _ => None,
        };
        let stale = used.is_some_and(|used| Some(used) != current);
        match self.phase {
            Phase::InFlight { request, .. } if stale => {
                *self = Renewal::default();
                Some(request)
            }
            Phase::CheckingIdToken { .. } if stale => {
                *self = Renewal::default();
                None
            }
            Phase::Backoff { .. } | Phase::Suspended { .. } => {
                *self = Renewal::default();
                None
            }
            _ => None,
        }
    }

    /// Takes the answer to request `id`; `None` when it is not the renewal in flight.
    /// `current` is the session's refresh token now (another process may have replaced it).
    pub fn on_answer(
        &mut self,
        id: RequestId,
        answer: Result<HttpResponse, TransportError>,
        now: u64,
        config: &Config,
        current: Option<&RefreshToken>,
        rng: &mut dyn RandomSource,
    ) -> Option<Renewed> {
        if !matches!(self.phase, Phase::InFlight { request, .. } if request == id) {
            return None;
        }
        let Phase::InFlight { used, sent_at, .. } = std::mem::take(&mut self.phase) else { return None };
        let answer = answer.map_err(TokenError::Transport).and_then(|r| token::parse_token_response(&r, now));
        Some(match answer {
            Ok(grant) if grant.id_token.is_some() && config.id_tokens_checked() => {
                self.phase = Phase::CheckingIdToken { grant: Box::new(grant), used, sent_at, fetched_keys: false };
                Renewed::Checking
            }
            Ok(grant) => {
                *self = Renewal::default();
                Renewed::Tokens { grant: Box::new(grant), used, claims: None, sent_at }
            }
            Err(error) => self.failed(used, error, current, now, &config.timing, rng),
        })
    }

    fn failed(
        &mut self,
        used: Option<RefreshToken>,
        error: TokenError,
        current: Option<&RefreshToken>,
        now: u64,
        timing: &Timing,
        rng: &mut dyn RandomSource,
    ) -> Renewed {
        if used.is_some() && current != used.as_ref() {
            *self = Renewal::default();
            return Renewed::Stale;
        }
        match error {
            TokenError::OAuth(oauth) if oauth.code.ends_session() && used.is_some() => {
                *self = Renewal::default();
                Renewed::SignInRequired(SignInRequiredReason::RefreshRejected { error: oauth })
            }
            error if error.is_transient() => {
                self.failures += 1;
                if self.failures < timing.max_refresh_attempts {
                    let delay = backoff_delay(timing, self.failures, &error, rng);
                    let retry_at = now.saturating_add(delay);
                    self.phase = Phase::Backoff { until: retry_at };
                    Renewed::Deferred { error, attempt: self.failures, retry_at }
                } else {
                    self.give_up(error.clone(), CallFailure::RenewalUnavailable(error), now, timing)
                }
            }
            error => {
                self.failures += 1;
                self.give_up(error.clone(), CallFailure::RenewalRefused(error), now, timing)
            }
        }
    }

    /// Gives up for a cooldown: calls that need new tokens meanwhile fail at once.
    fn give_up(&mut self, error: TokenError, failure: CallFailure, now: u64, timing: &Timing) -> Renewed {
        let until = now.saturating_add(timing.retry_max_ms);
        self.phase = Phase::Suspended { until, failure: failure.clone() };
        Renewed::GaveUp { error, failure }
    }

    /// The ID token of the answer being checked, and what it must satisfy: the session's
    /// claims (`previous`; a refreshed ID token names the same user, OIDC Core §12.2).
    pub fn held<'a>(&'a self, config: &Config, previous: Option<&'a IdTokenClaims>) -> Option<Held<'a>> {
        let Phase::CheckingIdToken { grant, fetched_keys, .. } = &self.phase else { return None };
        Some(Held {
            token: grant.id_token.as_ref(),
            signature: config.verify_token_endpoint_signature,
            nonce: None,
            max_age_secs: None,
            access_token: Some(&grant.access_token),
            code: None,
            state: None,
            previous,
            fetched_keys: *fetched_keys,
        })
    }

    /// Takes the verdict on the ID token being checked. A refused one ends the session
    /// (unless another tab or process already moved on to newer tokens, `current`): the
    /// answer is not used, and retrying with the old refresh token would be reuse if the
    /// server rotated it.
    pub fn checked(&mut self, verdict: Verdict, current: Option<&RefreshToken>) -> Option<Renewed> {
        let Phase::CheckingIdToken { grant, used, sent_at, fetched_keys } = std::mem::take(&mut self.phase) else {
            return None;
        };
        match verdict {
            Verdict::Valid(claims) => {
                *self = Renewal::default();
                Some(Renewed::Tokens { grant, used, claims: Some(claims), sent_at })
            }
            Verdict::Held(wait) => {
                let fetched_keys = fetched_keys || matches!(wait, Wait::FetchKeys);
                self.phase = Phase::CheckingIdToken { grant, used, sent_at, fetched_keys };
                None
            }
            Verdict::Refused(error) => {
                *self = Renewal::default();
                Some(if used.is_some() && current != used.as_ref() {
                    Renewed::Stale
                } else {
                    Renewed::SignInRequired(SignInRequiredReason::RefreshedIdTokenRefused { error })
                })
            }
        }
    }

    /// A backoff follows a failure.
    #[cfg(any(test, feature = "check-invariants"))]
    pub fn check(&self) {
        if matches!(self.phase, Phase::Backoff { .. }) {
            assert!(self.failures > 0, "a retry scheduled without a failure");
        }
    }
}

/// Exponential backoff with "equal jitter", at least the server's `Retry-After`.
fn backoff_delay(timing: &Timing, attempt: u32, error: &TokenError, rng: &mut dyn RandomSource) -> u64 {
    let exponential =
        timing.retry_base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(20)).min(timing.retry_max_ms);
    let half = exponential / 2;
    // Truncation is the intent: a fraction of at most `half` milliseconds.
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let jitter = (random::unit_fraction(rng) * half as f64) as u64;
    let server = match error {
        TokenError::Unavailable { retry_after_secs: Some(secs), .. } => secs.saturating_mul(1000).min(600_000),
        _ => 0,
    };
    (half + jitter).max(server).max(1)
}
