//! The provider pipeline: its metadata (fixed, cached or discovered) and its signing keys.

use crate::discovery::ProviderMetadata;
use crate::http::{HttpResponse, RequestId, TransportError};
use crate::id_token::IdTokenError;
use crate::jwks::JwkSet;
use crate::shared::Shared;
use crate::sites::InstanceSites;
use crate::urls::WebUrl;

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
    pub metadata: Option<Shared<ProviderMetadata>>,
    pub discovery: DiscoveryPhase,
    /// The metadata came from a stored snapshot: used, never shared.
    pub stored: bool,
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

/// A key that is named but does not verify makes the session fetch the key set again at
/// most this often (a forged or broken token must not cost a fetch each).
pub(super) const KEY_REFETCH_INTERVAL_MS: u64 = 60_000;

#[derive(Debug)]
pub(super) struct Keys {
    pub set: Option<Shared<JwkSet>>,
    pub phase: KeysPhase,
    /// The set came from a stored snapshot: used, never shared.
    pub stored: bool,
    /// When this session last asked for the key set.
    pub last_fetch_at: Option<u64>,
}

impl Default for Keys {
    fn default() -> Self {
        Keys { set: None, phase: KeysPhase::Idle, stored: false, last_fetch_at: None }
    }
}

impl Keys {
    /// Whether a key that does not verify may send the session for the key set again now.
    pub fn may_refetch(&self, now: u64) -> bool {
        self.last_fetch_at.is_none_or(|at| now >= at.saturating_add(KEY_REFETCH_INTERVAL_MS))
    }

    pub fn is_fetching(&self) -> bool {
        matches!(self.phase, KeysPhase::Fetching(_))
    }

    /// Takes a fetch's answer; true when a new key set was installed.
    pub fn on_answer(&mut self, answer: Result<HttpResponse, TransportError>) -> bool {
        match answer.ok().filter(|r| r.status == 200).and_then(|r| JwkSet::parse(&r.body)) {
            Some(keys) => {
                self.set = Some(Shared::new(keys));
                self.stored = false;
                self.phase = KeysPhase::Idle;
                true
            }
            None => {
                self.phase = KeysPhase::Failed;
                false
            }
        }
    }

    /// Why a token whose key is still missing after a fetch is refused (`ambiguous`: it names
    /// no key and several would do).
    pub fn missing_key_error(&self, ambiguous: bool) -> IdTokenError {
        if self.phase == KeysPhase::Failed {
            IdTokenError::KeysUnavailable
        } else if ambiguous {
            IdTokenError::AmbiguousKey
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
    /// Written through `set_known`, which keeps `odata_root` in step.
    known: Option<Shared<InstanceSites>>,
    /// The known sites' Domain API root, parsed once (calls resolve against it).
    odata_root: Option<WebUrl>,
    /// The known sites came from a stored snapshot: used, never shared.
    stored: bool,
    pub phase: SitesPhase,
}

impl Sites {
    pub fn new() -> Sites {
        Sites { known: None, odata_root: None, stored: false, phase: SitesPhase::Idle }
    }

    pub fn known(&self) -> Option<&Shared<InstanceSites>> {
        self.known.as_ref()
    }

    /// The known sites, unless they came from a stored snapshot.
    pub fn shareable(&self) -> Option<&Shared<InstanceSites>> {
        self.known.as_ref().filter(|_| !self.stored)
    }

    /// Sites read from a stored snapshot (checked to be on the instance).
    pub fn set_stored(&mut self, sites: Shared<InstanceSites>) {
        self.set_known(sites);
        self.stored = true;
    }

    pub fn odata_root(&self) -> Option<&WebUrl> {
        self.odata_root.as_ref()
    }

    /// The sites learned, unless they equal those already known (then shared as they are).
    pub fn set_known(&mut self, sites: Shared<InstanceSites>) {
        self.stored = false;
        if self.known.as_ref() == Some(&sites) {
            return;
        }
        self.odata_root = sites.odata_root.as_deref().and_then(|r| WebUrl::parse(r).ok());
        self.known = Some(sites);
    }

    pub fn in_flight(&self) -> bool {
        matches!(self.phase, SitesPhase::InFlight { .. })
    }
}

/// What a session knows of its provider: the metadata, the signing keys and (ERP.net) the
/// instance's sites, behind shared pointers. A server hands one session's state to the
/// others of its process ([`Session::with_provider`](crate::Session::with_provider)), so
/// that the provider is discovered once per process and its documents are held once in
/// memory, not once per user. Cloning it is cheap.
#[derive(Clone, Default)]
pub struct ProviderState {
    pub(crate) metadata: Option<Shared<ProviderMetadata>>,
    pub(crate) keys: Option<Shared<JwkSet>>,
    pub(crate) sites: Option<Shared<InstanceSites>>,
}

impl ProviderState {
    /// The provider's metadata, if known.
    pub fn metadata(&self) -> Option<&ProviderMetadata> {
        self.metadata.as_deref()
    }

    /// Whether it holds the provider's signing keys.
    pub fn has_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether it holds the instance's sites (ERP.net auto-discovery).
    pub fn has_sites(&self) -> bool {
        self.sites.is_some()
    }

    /// This state's parts where it has them, `other`'s where it has not (a session that
    /// has not fetched the keys yet leaves a process's shared keys in place).
    #[must_use]
    pub fn or(self, other: &ProviderState) -> ProviderState {
        ProviderState {
            metadata: self.metadata.or_else(|| other.metadata.clone()),
            keys: self.keys.or_else(|| other.keys.clone()),
            sites: self.sites.or_else(|| other.sites.clone()),
        }
    }
}

impl std::fmt::Debug for ProviderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderState")
            .field("issuer", &self.metadata.as_ref().map(|m| m.issuer.as_str()))
            .field("keys", &self.keys.is_some())
            .field("sites", &self.sites.is_some())
            .finish()
    }
}
