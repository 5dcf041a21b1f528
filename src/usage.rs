//! The host's side of the loop contract: a command or input refused before anything
//! changed.

use serde::{Deserialize, Serialize};

use crate::http::{CallId, RequestId};
use crate::signature::SignatureCheckId;

/// A command or input refused before anything changed. Never caused by what a server or a
/// browser sent. [`kind`](Self::kind) tells the three families apart: the host broke the
/// loop contract, the command came too early (or does not apply), or the environment failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum UsageError {
    /// `poll()` was not drained (to `WaitUntil` or `Idle`) after the previous command or input.
    #[error("drain poll() until WaitUntil or Idle before the next command or input")]
    NotDrained,
    /// No such request was emitted.
    #[error("request {0:?} was never emitted by this session")]
    UnknownRequest(RequestId),
    /// This request was already answered.
    #[error("request {0:?} was already answered")]
    AlreadyAnswered(RequestId),
    /// No such signature check was emitted.
    #[error("signature check {0:?} was never emitted by this session")]
    UnknownSignatureCheck(SignatureCheckId),
    /// No such call is open.
    #[error("call {0:?} is not open")]
    UnknownCall(CallId),
    /// The provider's endpoints are not known yet (wait for `ProviderReady`, or `discover`).
    #[error("the provider's endpoints are not known yet")]
    ProviderNotReady,
    /// The command needs a signed-in session.
    #[error("the session is not signed in")]
    NotSignedIn,
    /// The command does not apply to this configuration's grant.
    #[error("this command does not apply to the configured grant")]
    WrongGrant,
    /// The random source failed.
    #[error("the random source is unavailable")]
    RandomUnavailable,
    /// The provider has no endpoint for this (e.g. no userinfo endpoint).
    #[error("the provider does not offer this endpoint")]
    NoEndpoint,
}

/// The family of a [`UsageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsageErrorKind {
    /// The host broke the loop contract (not drained, unknown or answered request or call):
    /// a bug in the driver.
    Contract,
    /// Not now, or not for this configuration (provider not ready, not signed in, no such
    /// endpoint, wrong grant): ask again later or differently.
    Precondition,
    /// The environment failed (no randomness).
    Environment,
}

impl UsageError {
    /// Which family this refusal belongs to.
    pub fn kind(&self) -> UsageErrorKind {
        match self {
            UsageError::NotDrained
            | UsageError::UnknownRequest(_)
            | UsageError::UnknownSignatureCheck(_)
            | UsageError::AlreadyAnswered(_)
            | UsageError::UnknownCall(_) => UsageErrorKind::Contract,
            UsageError::ProviderNotReady
            | UsageError::NotSignedIn
            | UsageError::WrongGrant
            | UsageError::NoEndpoint => UsageErrorKind::Precondition,
            UsageError::RandomUnavailable => UsageErrorKind::Environment,
        }
    }

    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            UsageError::NotDrained => "not_drained",
            UsageError::UnknownRequest(_) => "unknown_request",
            UsageError::UnknownSignatureCheck(_) => "unknown_signature_check",
            UsageError::AlreadyAnswered(_) => "already_answered",
            UsageError::UnknownCall(_) => "unknown_call",
            UsageError::ProviderNotReady => "provider_not_ready",
            UsageError::NotSignedIn => "not_signed_in",
            UsageError::WrongGrant => "wrong_grant",
            UsageError::RandomUnavailable => "random_unavailable",
            UsageError::NoEndpoint => "no_endpoint",
        }
    }
}
