//! The sign-in pipeline: the pending authorization (durable, awaiting its callback) and the
//! redemption of an accepted callback's code.

use crate::authorize::PendingAuthorization;
use crate::http::RequestId;
use crate::id_token::IdTokenClaims;
use crate::secret::{AuthorizationCode, IdToken};
use crate::token::TokenGrant;

/// An accepted callback's code with what its redemption needs.
#[derive(Debug)]
pub(super) struct Exchange {
    pub code: AuthorizationCode,
    pub pending: PendingAuthorization,
    /// The front channel's validated claims (hybrid flow).
    pub front: Option<IdTokenClaims>,
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
pub(super) enum Redemption {
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

impl Redemption {
    /// Tokens will come out of this redemption unless it fails.
    pub fn is_underway(&self) -> bool {
        !matches!(self, Redemption::Idle)
    }

    pub fn is_queued(&self) -> bool {
        matches!(self, Redemption::Queued(_))
    }
}

/// The sign-in pipeline's state.
#[derive(Debug, Default)]
pub(super) struct SignIn {
    /// Durable: a sign-in whose callback has not come back yet.
    pub pending: Option<PendingAuthorization>,
    pub redemption: Redemption,
}
