//! The tokens: the current access and refresh tokens with what the session learned about
//! them, their generations (the access token's, which a 401 is judged against, and the stored
//! state's, which a shared store compares), and the ID token with its claims. Tokens come in
//! by [`install`](Tokens::install) (a grant) or [`adopt`](Tokens::adopt) (a snapshot) and go
//! by [`forget`](Tokens::forget) or [`sign_out`](Tokens::sign_out).

use crate::config::{Config, GrantKind, Timing};
use crate::id_token::{self, IdTokenClaims};
use crate::secret::{AccessToken, IdToken, RefreshToken};
use crate::snapshot::StoredTokens;
use crate::token::TokenGrant;

/// The access token in use and what the session learned about it.
#[derive(Debug)]
struct Current {
    stored: StoredTokens,
    /// The API answered 401 to this access token: do not send it again.
    rejected: bool,
    /// When the session took them (installed or adopted), by its clock.
    installed_at: u64,
    /// They came from a renewal: a 401 for them within the cooldown may be the caller's.
    renewed: bool,
    /// The answer had no usable `expires_in`: `expires_at` is the assumed lifetime's.
    expiry_assumed: bool,
    /// The API answered a call made with this access token with a 2xx.
    accepted: bool,
}

impl Current {
    fn new(stored: StoredTokens, installed_at: u64) -> Current {
        Current { stored, rejected: false, installed_at, renewed: false, expiry_assumed: false, accepted: false }
    }
}

#[derive(Debug)]
pub(super) struct Tokens {
    current: Option<Current>,
    /// Bumped whenever the access token changes; a 401 is judged against it.
    generation: u64,
    /// The generation of the stored token state: bumped by this session's own changes,
    /// taken over from an adopted snapshot. Snapshots carry it.
    stored_generation: u64,
    /// The stored generation of the last snapshot written or adopted: the base a store
    /// compares a write against.
    base_generation: u64,
    /// The shortest age at which an access token of unknown lifetime (no `expires_in`) that
    /// the API had accepted was refused: the most the API lets such tokens live.
    observed_lifetime_ms: Option<u64>,
    id_token: Option<IdToken>,
    /// The validated claims of the current ID token.
    claims: Option<IdTokenClaims>,
}

/// What the event of newly installed tokens reports.
pub(super) struct Installed {
    pub scope: Option<String>,
    pub expires_at: Option<u64>,
}

impl Tokens {
    /// A reference token is the session's token from the start, with no expiry it knows of
    /// and no way to renew it.
    pub fn new(reference_token: Option<AccessToken>) -> Tokens {
        let current = reference_token.map(|access_token| {
            let stored =
                StoredTokens { access_token, received_at: 0, expires_at: None, refresh_token: None, scope: None };
            Current::new(stored, 0)
        });
        Tokens {
            current,
            generation: 0,
            stored_generation: 0,
            base_generation: 0,
            observed_lifetime_ms: None,
            id_token: None,
            claims: None,
        }
    }

    pub fn is_signed_in(&self) -> bool {
        self.current.is_some()
    }

    pub fn stored(&self) -> Option<&StoredTokens> {
        self.current.as_ref().map(|c| &c.stored)
    }

    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.stored().and_then(|t| t.refresh_token.as_ref())
    }

    pub fn id_token(&self) -> Option<&IdToken> {
        self.id_token.as_ref()
    }

    pub fn claims(&self) -> Option<&IdTokenClaims> {
        self.claims.as_ref()
    }

    /// The access token's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The stored state's generation, and the one the last write or adoption was based on.
    pub fn stored_generations(&self) -> (u64, u64) {
        (self.stored_generation, self.base_generation)
    }

    /// A snapshot of the current state was written: it is the store's base now.
    pub fn persisted(&mut self) {
        self.base_generation = self.stored_generation;
    }

    /// The access token, if it may be sent at `now`.
    pub fn usable(&self, now: u64, timing: &Timing) -> Option<AccessToken> {
        let current = self.current.as_ref()?;
        let fresh = usable_until(&current.stored, timing).is_none_or(|until| now < until);
        (fresh && !current.rejected).then(|| current.stored.access_token.clone())
    }

    /// When these tokens are due for a renewal on the timer: at once after the API refused
    /// them; before expiry for a session in use (a call went out with them, `last_call_at`)
    /// or when the timing renews idle sessions too.
    pub fn renewal_due(&self, now: u64, timing: &Timing, last_call_at: Option<u64>) -> Option<u64> {
        let current = self.current.as_ref()?;
        let in_use = timing.renew_idle_sessions || last_call_at.is_some_and(|at| at >= current.installed_at);
        if current.rejected {
            Some(now)
        } else if in_use {
            renew_at(&current.stored, timing)
        } else {
            None
        }
    }

    /// Whether a call expected to run `duration_ms` outlives the access token, and a
    /// renewed one would last long enough (otherwise renewing cannot help).
    pub fn outlived_by(&self, duration_ms: u64, now: u64, timing: &Timing) -> bool {
        let Some(current) = &self.current else { return false };
        let Some(until) = usable_until(&current.stored, timing) else { return false };
        let span = until.saturating_sub(current.stored.received_at);
        now.saturating_add(duration_ms) > until && span > duration_ms
    }

    /// Whether a 401 for the current access token goes to the caller without a renewal: an
    /// API that refuses every token must not cost a refresh per call, so a token a renewal
    /// brought less than the cooldown ago is not renewed again for a 401. Unless the 401 is
    /// explained by its expiry: it is past it, or within the clock-skew allowance of it (the
    /// request left, waited in a queue or reached a server whose `exp` is in whole seconds
    /// that late). When its expiry was only assumed (no `expires_in`), by what the API
    /// showed: it accepted this token before and now refuses it, or the token is as old as
    /// one the API accepted was when it refused it.
    pub fn rejection_is_the_apis(&self, now: u64, timing: &Timing) -> bool {
        let Some(current) = &self.current else { return false };
        let recent = current.renewed && now < current.installed_at.saturating_add(timing.rejection_cooldown_ms);
        let near_expiry = current.stored.expires_at.is_some_and(|at| now.saturating_add(timing.clock_skew_ms) >= at);
        let age = now.saturating_sub(current.stored.received_at);
        let outlived = self.observed_lifetime_ms.is_some_and(|l| age.saturating_add(timing.clock_skew_ms) >= l);
        let stopped_working = current.expiry_assumed && (current.accepted || outlived);
        recent && !near_expiry && !stopped_working
    }

    /// The API refused the current access token: it is not sent again. When its lifetime was
    /// assumed and the API had accepted it, its age says how long the API lets such tokens live.
    pub fn reject(&mut self, now: u64) {
        let Some(current) = &mut self.current else { return };
        current.rejected = true;
        if current.expiry_assumed && current.accepted {
            let age = now.saturating_sub(current.stored.received_at);
            self.observed_lifetime_ms = Some(self.observed_lifetime_ms.map_or(age, |l| l.min(age)));
        }
    }

    /// The API answered a call made with the current access token with a 2xx.
    pub fn accept(&mut self) {
        if let Some(current) = &mut self.current {
            current.accepted = true;
        }
    }

    /// Installs a grant's tokens (and the claims of its ID token, when checked). Expiry
    /// counts from `sent_at`, when the request left: a slow answer must not make a token look
    /// fresher than the server made it. `used` is the refresh token a refresh spent: an
    /// answer without a new one keeps it (rotation replaces it).
    pub fn install(
        &mut self,
        grant: TokenGrant,
        used: Option<RefreshToken>,
        claims: Option<IdTokenClaims>,
        sent_at: u64,
        now: u64,
        config: &Config,
    ) -> Installed {
        if claims.is_some() {
            self.claims = claims;
        }
        let lifetime_ms = grant.expires_in_secs.map_or(config.timing.assumed_lifetime_ms, |s| s.saturating_mul(1000));
        let expires_at = (lifetime_ms > 0).then(|| sent_at.saturating_add(lifetime_ms));
        // Anything but a sign-in: a refresh, or a client-credentials request.
        let renewed = used.is_some() || config.grant == GrantKind::ClientCredentials;
        let scope = if grant.scope_absent { self.scope_asked_for(used.is_some(), config) } else { grant.scope };
        let refresh_token = grant.refresh_token.or(used);
        if grant.id_token.is_some() {
            self.id_token = grant.id_token;
        }
        let stored = StoredTokens {
            access_token: grant.access_token,
            received_at: sent_at,
            expires_at,
            refresh_token,
            scope: scope.clone(),
        };
        let expiry_assumed = grant.expires_in_secs.is_none();
        self.current = Some(Current { renewed, expiry_assumed, ..Current::new(stored, now) });
        self.changed();
        Installed { scope, expires_at }
    }

    /// The scope a token answer without `scope` granted (RFC 6749 §5.1: the one asked for).
    /// A refresh asks for none, which means the one granted before (§6); a sign-in or a
    /// client-credentials request asked for the configured one.
    fn scope_asked_for(&self, refresh: bool, config: &Config) -> Option<String> {
        let granted_before = self.stored().and_then(|t| t.scope.clone()).filter(|_| refresh);
        granted_before.or_else(|| (!config.scope.is_empty()).then(|| config.scope.clone()))
    }

    /// Takes a stored snapshot's token state; true when its tokens differ from the session's.
    /// An older state than this session's (an echo of its own earlier write, a slow replica)
    /// never rolls the tokens back. Without `persist_tokens`, tokens live in memory only: a
    /// stored snapshot never brings (or takes away) any, but its generation is carried on, so
    /// that this session's writes replace it.
    pub fn adopt(
        &mut self,
        tokens: Option<StoredTokens>,
        id_token: Option<IdToken>,
        generation: u64,
        persist_tokens: bool,
        now: u64,
    ) -> bool {
        if !persist_tokens {
            if generation >= self.stored_generation {
                self.stored_generation = generation;
                self.base_generation = generation;
            }
            return false;
        }
        if generation < self.stored_generation {
            return false;
        }
        self.stored_generation = generation;
        self.base_generation = generation;
        let changed = self.stored() != tokens.as_ref();
        if changed {
            // Adopted tokens count as taken when they were issued, not now: a restored
            // session's first 401 still renews.
            self.current = tokens.map(|stored| {
                let installed_at = stored.received_at.min(now);
                Current::new(stored, installed_at)
            });
            self.generation += 1;
        }
        if id_token.is_some() {
            self.claims = id_token.as_ref().and_then(|t| id_token::claims_unverified(t.secret()));
            self.id_token = id_token;
        }
        changed
    }

    /// Drops the access and refresh tokens, which nothing can renew any more. The ID token
    /// stays, for the logout's `id_token_hint`.
    pub fn forget(&mut self) {
        self.current = None;
        self.changed();
    }

    /// Drops everything; returns the refresh token, to revoke.
    pub fn sign_out(&mut self) -> Option<RefreshToken> {
        let refresh_token = self.current.take().and_then(|c| c.stored.refresh_token);
        self.id_token = None;
        self.claims = None;
        self.changed();
        refresh_token
    }

    /// This session changed the tokens: the access token's generation (a 401 is judged
    /// against it) and the stored state's (a store's older snapshot never rolls it back).
    fn changed(&mut self) {
        self.generation += 1;
        self.stored_generation += 1;
    }
}

fn lifetime(tokens: &StoredTokens) -> Option<u64> {
    tokens.expires_at.map(|e| e.saturating_sub(tokens.received_at))
}

/// Until when the access token may be sent: expiry less the skew allowance (at most a
/// quarter of the lifetime, so short-lived tokens stay usable).
fn usable_until(tokens: &StoredTokens, timing: &Timing) -> Option<u64> {
    let (expires_at, lifetime) = (tokens.expires_at?, lifetime(tokens)?);
    Some(expires_at.saturating_sub(timing.clock_skew_ms.min(lifetime / 4)))
}

/// When proactive renewal starts: expiry less the leeway (at most half the lifetime), and
/// never sooner than the minimum interval after receipt, so a short-lived token is not
/// renewed in a loop.
fn renew_at(tokens: &StoredTokens, timing: &Timing) -> Option<u64> {
    let (expires_at, lifetime) = (tokens.expires_at?, lifetime(tokens)?);
    let due = expires_at.saturating_sub(timing.renew_before_ms.min(lifetime / 2));
    Some(due.max(tokens.received_at.saturating_add(timing.min_renewal_interval_ms)))
}
