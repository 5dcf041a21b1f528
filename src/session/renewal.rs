//! The renewal pipeline: refreshing (or, for client credentials, re-requesting) the access
//! token, with bounded backoff, and the timing rules that say when a token is due.

use crate::config::Timing;
use crate::http::RequestId;
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
///           └── new call ── Suspended ◄── refused, or attempts exhausted ◄─────────────────┘
/// ```
#[derive(Debug, Default)]
pub(super) enum RenewalPhase {
    #[default]
    Idle,
    /// The token request is in flight (it holds the session's token slot).
    InFlight { request: RequestId, used: Option<RefreshToken> },
    /// The answer's ID token is checked (waiting for keys) before its tokens are installed.
    CheckingIdToken { grant: Box<TokenGrant>, used: Option<RefreshToken>, fetched_keys: bool },
    /// A transient failure: the next attempt goes out at `until`.
    Backoff { until: u64 },
    /// Gave up; a new call (or adopted tokens) starts over.
    Suspended,
}

#[derive(Debug, Default)]
pub(super) struct Renewal {
    pub phase: RenewalPhase,
    /// Transient failures of the current renewal.
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

    /// A waiting call is the signal to try again after giving up.
    pub fn resume(&mut self) {
        if matches!(self.phase, RenewalPhase::Suspended) {
            *self = Renewal::default();
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

/// When proactive renewal starts: expiry less the leeway (at most half the lifetime, so a
/// short-lived token is not renewed in a loop).
pub(super) fn renew_at(tokens: &StoredTokens, timing: &Timing) -> Option<u64> {
    let (expires_at, lifetime) = (tokens.expires_at?, lifetime(tokens)?);
    Some(expires_at.saturating_sub(timing.renew_before_ms.min(lifetime / 2)))
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
