//! ID token checks: one function for the three places an ID token is held before anything
//! it vouches for is used (the front channel's before the code is redeemed, the code
//! exchange's and a refresh's before their tokens are installed). An attempt is valid,
//! refused, or held: for the provider's key set (fetched once more for a token whose key is
//! missing or does not verify) or for the host's verdict on a signature.

use crate::config::Config;
use crate::id_token::{self, Expectations, IdTokenClaims, IdTokenError, Validation, Verifier};
use crate::secret::{AccessToken, AuthorizationCode, CsrfState, IdToken, Nonce};
use crate::signature::{HostChecks, SignatureCheck};

use super::provider::Provider;

/// One held ID token and what it must satisfy besides naming the provider and this client.
pub(super) struct Held<'a> {
    /// `None` when the answer that had to carry one does not: refused as malformed.
    pub token: Option<&'a IdToken>,
    /// Whether its signature is checked: always for the front channel's, as configured for
    /// the token endpoint's (TLS already vouches for it).
    pub signature: bool,
    /// The sign-in's nonce; `None` for a refresh (whose nonce, if any, is the original's).
    pub nonce: Option<&'a Nonce>,
    pub max_age_secs: Option<u64>,
    /// For `at_hash`.
    pub access_token: Option<&'a AccessToken>,
    /// For the front channel's `c_hash` and `s_hash`.
    pub code: Option<&'a AuthorizationCode>,
    pub state: Option<&'a CsrfState>,
    /// The claims it must agree with (OpenID Connect Core §12.2): the front channel's for the
    /// exchange's token, the session's for a refresh's.
    pub previous: Option<&'a IdTokenClaims>,
    /// The key set was fetched again for this token already.
    pub fetched_keys: bool,
}

/// One attempt, judged.
pub(super) enum Verdict {
    Valid(Box<IdTokenClaims>),
    Held(Wait),
    Refused(IdTokenError),
}

/// What a held token waits for.
pub(super) enum Wait {
    /// The key set: fetch it (the token's key is missing, or named and does not verify).
    FetchKeys,
    /// The host's verdict on this signature: emit the check.
    AskHost(Box<SignatureCheck>),
    /// The host's verdict on a check already emitted.
    Asked,
}

/// Checks `held` against the provider's keys (or the host's verdicts) at `now`.
pub(super) fn check(held: &Held<'_>, config: &Config, provider: &Provider, host: &mut HostChecks, now: u64) -> Verdict {
    let outcome = match held.token {
        Some(token) => {
            let expectations = Expectations {
                issuer: provider.metadata().map_or(config.issuer(), |m| m.issuer.as_str()),
                client_id: &config.client_id,
                now_ms: now,
                skew_ms: config.timing.clock_skew_ms,
                algorithms: &config.id_token_algorithms,
                verify_signature: held.signature,
                nonce: held.nonce,
                max_age_secs: held.max_age_secs,
                access_token: held.access_token.map(AccessToken::secret),
                code: held.code.map(AuthorizationCode::secret),
                state: held.state.map(CsrfState::secret),
                previous: held.previous,
            };
            let verifier = if config.host_signatures { Verifier::Host(host) } else { Verifier::Inline };
            id_token::validate(token.secret(), provider.keys(), &verifier, &expectations)
        }
        None => Err(IdTokenError::Malformed),
    };
    let fetch_again = !held.fetched_keys && provider.can_fetch_keys();
    match outcome {
        Ok(Validation::Valid(claims)) => Verdict::Valid(claims),
        Ok(Validation::NeedKeys { .. }) if fetch_again => Verdict::Held(Wait::FetchKeys),
        Ok(Validation::NeedKeys { ambiguous }) => Verdict::Refused(provider.missing_key_error(ambiguous)),
        // The key named is known but does not verify: the cached set may be stale (the
        // provider re-keyed under the same id) or planted in a store. Fetched again once for
        // this token, and at most once per interval for the session.
        Err(IdTokenError::BadSignature | IdTokenError::UnusableKey)
            if fetch_again && provider.may_refetch_keys(now) =>
        {
            Verdict::Held(Wait::FetchKeys)
        }
        Ok(Validation::NeedSignature(question)) => match host.ask(*question) {
            Some(check) => Verdict::Held(Wait::AskHost(Box::new(check))),
            None => Verdict::Held(Wait::Asked),
        },
        Err(error) => Verdict::Refused(error),
    }
}
