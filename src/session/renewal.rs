//! The renewal pipeline: refreshing (or, for client credentials, re-requesting) the access
//! token, with bounded backoff, and the timing rules that say when a token is due.

use crate::config::Timing;
use crate::http::RequestId;
use crate::output::CallFailure;
use crate::random::{self, RandomSource};
use crate::secret::RefreshToken;
use crate::snapshot::StoredTokens;
use crate::token::{TokenError, TokenGrant};

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
pub(super) enum RenewalPhase {
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
    pub phase: RenewalPhase,
    /// Failures since the last success.
    pub failures: u32,
}

impl Renewal {
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, RenewalPhase::Idle)
    }

    /// New tokens will come out of this renewal unless it fails.
    pub fn is_underway(&self) -> bool {
        matches!(
            self.phase,
            RenewalPhase::InFlight { .. } | RenewalPhase::CheckingIdToken { .. } | RenewalPhase::Backoff { .. }
        )
    }

    pub fn retry_at(&self) -> Option<u64> {
        match self.phase {
            RenewalPhase::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// After the cooldown a call may try again (the failures stay counted).
    pub fn resume_if_due(&mut self, now: u64) {
        if matches!(self.phase, RenewalPhase::Suspended { until, .. } if until <= now) {
            self.phase = RenewalPhase::Idle;
        }
    }

    /// Why calls fail while suspended.
    pub fn suspended_failure(&self) -> Option<&CallFailure> {
        match &self.phase {
            RenewalPhase::Suspended { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// The refresh token the renewal under way used, if any.
    pub fn used(&self) -> Option<&RefreshToken> {
        match &self.phase {
            RenewalPhase::InFlight { used, .. } | RenewalPhase::CheckingIdToken { used, .. } => used.as_ref(),
            _ => None,
        }
    }
}

fn lifetime(tokens: &StoredTokens) -> Option<u64> {
    tokens.expires_at.map(|e| e.saturating_sub(tokens.received_at))
}

/// Until when the access token may be sent: expiry less the skew allowance (at most a
/// quarter of the lifetime, so short-lived tokens stay usable).
pub(super) fn usable_until(tokens: &StoredTokens, timing: &Timing) -> Option<u64> {
    let (expires_at, lifetime) = (tokens.expires_at?, lifetime(tokens)?);
    Some(expires_at.saturating_sub(timing.clock_skew_ms.min(lifetime / 4)))
}

/// When proactive renewal starts: expiry less the leeway (at most half the lifetime), and
/// never sooner than the minimum interval after receipt, so a short-lived token is not
/// renewed in a loop.
pub(super) fn renew_at(tokens: &StoredTokens, timing: &Timing) -> Option<u64> {
    let (expires_at, lifetime) = (tokens.expires_at?, lifetime(tokens)?);
    let due = expires_at.saturating_sub(timing.renew_before_ms.min(lifetime / 2));
    Some(due.max(tokens.received_at.saturating_add(timing.min_renewal_interval_ms)))
}

/// The wait before a call answered 429 goes out again: exponential with "equal jitter", at
/// least the server's `Retry-After`; `None` when the server asks for longer than the timing
/// allows (the 429 then goes to the caller).
pub(super) fn throttle_delay(
    timing: &Timing,
    attempt: u32,
    retry_after_secs: Option<u64>,
    rng: &mut dyn RandomSource,
) -> Option<u64> {
    let server = retry_after_secs.map_or(0, |secs| secs.saturating_mul(1000));
    if server > timing.throttle_retry_max_ms {
        return None;
    }
    let exponential = timing
        .throttle_retry_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(timing.throttle_retry_max_ms);
    let half = exponential / 2;
    // Truncation is the intent: a fraction of at most `half` milliseconds.
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let jitter = (random::unit_fraction(rng) * half as f64) as u64;
    Some((half + jitter).max(server).max(1))
}

/// Exponential backoff with "equal jitter", at least the server's `Retry-After`.
pub(super) fn backoff_delay(timing: &Timing, attempt: u32, error: &TokenError, rng: &mut dyn RandomSource) -> u64 {
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
