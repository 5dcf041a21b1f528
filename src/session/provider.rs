//! The provider pipeline: its metadata (fixed, cached or discovered) and its signing keys.

use crate::discovery::ProviderMetadata;
use crate::http::{HttpResponse, RequestId, TransportError};
use crate::id_token::IdTokenError;
use crate::jwks::JwkSet;

/// Where discovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DiscoveryPhase {
    /// Not asked for (metadata fixed, cached, or already discovered).
    Idle,
    InFlight(RequestId),
    /// The last attempt failed with no fallback; `discover` tries again.
    Failed,
}

#[derive(Debug)]
pub(super) struct Provider {
    pub metadata: Option<ProviderMetadata>,
    pub discovery: DiscoveryPhase,
}

impl Provider {
    pub fn is_ready(&self) -> bool {
        self.metadata.is_some()
    }

    /// Endpoints are known or on their way.
    pub fn is_ready_or_coming(&self) -> bool {
        self.metadata.is_some() || matches!(self.discovery, DiscoveryPhase::InFlight(_))
    }

    pub fn token_endpoint(&self) -> Option<String> {
        self.metadata.as_ref().map(|m| m.token_endpoint.clone())
    }
}

/// Where the key set stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeysPhase {
    Idle,
    Fetching(RequestId),
    /// The last fetch failed.
    Failed,
}

#[derive(Debug)]
pub(super) struct Keys {
    pub set: Option<JwkSet>,
    pub phase: KeysPhase,
}

impl Keys {
    pub fn is_fetching(&self) -> bool {
        matches!(self.phase, KeysPhase::Fetching(_))
    }

    /// Takes a fetch's answer; true when a new key set was installed.
    pub fn on_answer(&mut self, answer: Result<HttpResponse, TransportError>) -> bool {
        match answer.ok().filter(|r| r.status == 200).and_then(|r| JwkSet::parse(&r.body)) {
            Some(keys) => {
                self.set = Some(keys);
                self.phase = KeysPhase::Idle;
                true
            }
            None => {
                self.phase = KeysPhase::Failed;
                false
            }
        }
    }

    /// Why a token whose key is still missing after a fetch is refused.
    pub fn missing_key_error(&self) -> IdTokenError {
        if self.phase == KeysPhase::Failed {
            IdTokenError::KeysUnavailable
        } else {
            IdTokenError::UnknownKey
        }
    }
}

/// Where the instance's auto-discovery stands (ERP.net preset only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SitesPhase {
    /// Not asked for, or done.
    Idle,
    /// Asked at `/tools/auto-discovery`, or at the older `/sys/auto-discovery` (`legacy`).
    InFlight { request: RequestId, legacy: bool },
}

#[derive(Debug)]
pub(super) struct Sites {
    pub known: Option<crate::InstanceSites>,
    pub phase: SitesPhase,
}

impl Sites {
    pub fn in_flight(&self) -> bool {
        matches!(self.phase, SitesPhase::InFlight { .. })
    }
}
