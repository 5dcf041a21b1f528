//! The provider pipeline: its metadata (configured, discovered, or someone else's) and its
//! signing keys; and the one rule for provider documents the session did not fetch itself.

use crate::config::{Config, ProviderSource};
use crate::discovery::{self, DiscoveryError, Provenance, ProviderMetadata};
use crate::http::{HttpResponse, RequestId, TransportError};
use crate::id_token::IdTokenError;
use crate::jwks::JwkSet;
use crate::shared::Shared;
use crate::sites::InstanceSites;

use super::sites::Sites;

/// Where discovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiscoveryPhase {
    /// Not asked for (metadata fixed, cached, or already discovered).
    Idle,
    InFlight(RequestId),
    /// The last attempt failed with no fallback; `discover` tries again.
    Failed,
}

/// Where the key set stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeysPhase {
    Idle,
    Fetching(RequestId),
    /// The last fetch failed.
    Failed,
}

/// A key that is named but does not verify makes the session fetch the key set again at
/// most this often (a forged or broken token must not cost a fetch each).
const KEY_REFETCH_INTERVAL_MS: u64 = 60_000;

#[derive(Debug)]
pub(super) struct Provider {
    metadata: Option<Shared<ProviderMetadata>>,
    discovery: DiscoveryPhase,
    /// The metadata came from a stored snapshot: used, never shared.
    stored: bool,
    keys: Option<Shared<JwkSet>>,
    keys_phase: KeysPhase,
    /// The key set came from a stored snapshot: used, never shared.
    keys_stored: bool,
    /// When this session last asked for the key set.
    last_keys_fetch_at: Option<u64>,
}

/// The outcome of a discovery.
pub(super) enum Discovery {
    /// The endpoints are known: `discovered`, or the ERP.net fixed paths standing in for a
    /// failed discovery.
    Ready {
        discovered: bool,
    },
    Failed(DiscoveryError),
}

/// Where provider documents the session did not fetch itself come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Secondhand {
    /// Another session of this process ([`ProviderState`]).
    Process,
    /// A stored snapshot.
    Store,
}

/// A provider's documents, as a snapshot or a [`ProviderState`] carries them.
pub(super) struct Documents {
    pub metadata: Option<Shared<ProviderMetadata>>,
    pub keys: Option<Shared<JwkSet>>,
    pub sites: Option<Shared<InstanceSites>>,
}

impl Provider {
    /// Configured endpoints are known from the start; discovered ones are not.
    pub fn new(config: &Config) -> Provider {
        let metadata = match &config.provider {
            ProviderSource::Fixed(m) => Some(Shared::new(m.clone())),
            ProviderSource::Discover { .. } => None,
        };
        Provider {
            metadata,
            discovery: DiscoveryPhase::Idle,
            stored: false,
            keys: None,
            keys_phase: KeysPhase::Idle,
            keys_stored: false,
            last_keys_fetch_at: None,
        }
    }

    pub fn metadata(&self) -> Option<&ProviderMetadata> {
        self.metadata.as_deref()
    }

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

    /// What the session knows, to share with the other sessions of this process: what it took
    /// from a stored snapshot is not part of it (a store's word is used by the session that
    /// read it, never spread to the rest of the process).
    pub fn state(&self, sites: &Sites) -> ProviderState {
        ProviderState {
            metadata: self.metadata.clone().filter(|_| !self.stored),
            keys: self.keys.clone().filter(|_| !self.keys_stored),
            sites: sites.shareable().cloned(),
        }
    }

    /// The documents a snapshot carries (when the configuration stores them).
    pub fn documents(&self, sites: &Sites) -> Documents {
        Documents { metadata: self.metadata.clone(), keys: self.keys.clone(), sites: sites.known().cloned() }
    }

    /// Takes provider documents the session did not fetch itself; `false` when they were
    /// ignored as a whole, which the session reports: a configuration whose snapshots never
    /// carry them (a process sharing one provider state) ignores a store's, for someone else
    /// wrote it. Otherwise each is taken only while the session knows none of its own (what
    /// it discovered, fetched or was configured with is never replaced), and only under
    /// [`discovery::trust`]: metadata of the configured issuer with every endpoint on its
    /// origin; sites on the instance's origin; a key set with what vouches for it (a store
    /// whose snapshot's owner was checked, or the process's metadata just taken). What comes
    /// from a store is used, and never passed on ([`state`](Self::state)).
    pub fn take_secondhand(
        &mut self,
        documents: Documents,
        from: Secondhand,
        config: &Config,
        sites: &mut Sites,
    ) -> bool {
        let Documents { metadata, keys, sites: instance_sites } = documents;
        if metadata.is_none() && keys.is_none() && instance_sites.is_none() {
            return true;
        }
        if from == Secondhand::Store && !config.snapshot_provider {
            return false;
        }
        let stored = from == Secondhand::Store;
        let mut metadata_taken = false;
        if let (ProviderSource::Discover { issuer, .. }, Some(metadata)) = (&config.provider, metadata) {
            if self.metadata.is_none() && discovery::trust(&metadata, Provenance::Secondhand { issuer }).is_ok() {
                self.metadata = Some(metadata);
                self.stored = stored;
                metadata_taken = true;
            }
        }
        if let Some(keys) = keys {
            if self.keys.is_none() && (stored || metadata_taken) {
                self.keys = Some(keys);
                self.keys_stored = stored;
            }
        }
        if let (Some(root), Some(instance_sites)) = (&config.sites_root, instance_sites) {
            if sites.known().is_none() {
                let own = InstanceSites::clone(&instance_sites).on_instance_only(root);
                // Shared as it is when nothing had to be dropped (the usual case).
                let own = if own == *instance_sites { instance_sites } else { Shared::new(own) };
                sites.learn(own, stored);
            }
        }
        true
    }

    // ----- discovery -----

    pub fn discovery_sent(&mut self, request: RequestId) {
        self.discovery = DiscoveryPhase::InFlight(request);
    }

    /// Takes the answer to the discovery request `id`; `None` when it is not the one awaited.
    pub fn on_discovery(
        &mut self,
        id: RequestId,
        answer: Result<HttpResponse, TransportError>,
        config: &Config,
    ) -> Option<Discovery> {
        if self.discovery != DiscoveryPhase::InFlight(id) {
            return None;
        }
        self.discovery = DiscoveryPhase::Idle;
        let ProviderSource::Discover { issuer, fallback, on_issuer_origin } = &config.provider else { return None };
        let result = match answer {
            Ok(response) => discovery::parse_discovery(issuer, *on_issuer_origin, response.status, &response.body),
            Err(_) => Err(DiscoveryError::Transport),
        };
        match (result, fallback) {
            (Ok(metadata), _) => {
                self.metadata = Some(Shared::new(metadata));
                Some(Discovery::Ready { discovered: true })
            }
            // A document naming another issuer, or moving an endpoint off the instance, is an
            // attack or a misconfiguration, never a reason to fall back silently.
            (Err(error @ (DiscoveryError::IssuerMismatch | DiscoveryError::ForeignEndpoint { .. })), _)
            | (Err(error), None) => {
                self.discovery = DiscoveryPhase::Failed;
                Some(Discovery::Failed(error))
            }
            (Err(_), Some(fallback)) => {
                self.metadata = Some(Shared::new(fallback.clone()));
                Some(Discovery::Ready { discovered: false })
            }
        }
    }

    // ----- the key set -----

    pub fn keys(&self) -> Option<&JwkSet> {
        self.keys.as_deref()
    }

    pub fn has_keys(&self) -> bool {
        self.keys.is_some()
    }

    pub fn is_fetching_keys(&self) -> bool {
        matches!(self.keys_phase, KeysPhase::Fetching(_))
    }

    /// A fetch is under way, or one can be made (the provider names its key set).
    pub fn can_fetch_keys(&self) -> bool {
        self.is_fetching_keys() || self.jwks_uri().is_some()
    }

    pub fn jwks_uri(&self) -> Option<&str> {
        self.metadata.as_deref().and_then(|m| m.jwks_uri.as_deref())
    }

    /// Whether a key that does not verify may send the session for the key set again now.
    pub fn may_refetch_keys(&self, now: u64) -> bool {
        self.last_keys_fetch_at.is_none_or(|at| now >= at.saturating_add(KEY_REFETCH_INTERVAL_MS))
    }

    pub fn keys_sent(&mut self, request: RequestId, now: u64) {
        self.keys_phase = KeysPhase::Fetching(request);
        self.last_keys_fetch_at = Some(now);
    }

    /// Takes the answer to the key-set request `id`; true when a new key set was installed.
    pub fn on_keys(&mut self, id: RequestId, answer: Result<HttpResponse, TransportError>) -> bool {
        if self.keys_phase != KeysPhase::Fetching(id) {
            return false;
        }
        match answer.ok().filter(|r| r.status == 200).and_then(|r| JwkSet::parse(&r.body)) {
            Some(keys) => {
                self.keys = Some(Shared::new(keys));
                self.keys_stored = false;
                self.keys_phase = KeysPhase::Idle;
                true
            }
            None => {
                self.keys_phase = KeysPhase::Failed;
                false
            }
        }
    }

    /// Why a token whose key is still missing after a fetch is refused (`ambiguous`: it names
    /// no key and several would do).
    pub fn missing_key_error(&self, ambiguous: bool) -> IdTokenError {
        if self.keys_phase == KeysPhase::Failed {
            IdTokenError::KeysUnavailable
        } else if ambiguous {
            IdTokenError::AmbiguousKey
        } else {
            IdTokenError::UnknownKey
        }
    }

    /// The discovery and key-set requests awaited, for the session's invariants.
    #[cfg(any(test, feature = "check-invariants"))]
    pub fn requests(&self) -> (Option<RequestId>, Option<RequestId>) {
        let discovery = match self.discovery {
            DiscoveryPhase::InFlight(request) => Some(request),
            _ => None,
        };
        let keys = match self.keys_phase {
            KeysPhase::Fetching(request) => Some(request),
            _ => None,
        };
        (discovery, keys)
    }
}

/// What a session knows of its provider: the metadata, the signing keys and (ERP.net) the
/// instance's sites, behind shared pointers. A server hands one session's state to the
/// others of its process ([`Session::with_provider`](super::Session::with_provider)), so
/// that the provider is discovered once per process and its documents are held once in
/// memory, not once per user. Cloning it is cheap.
#[derive(Clone, Default)]
pub struct ProviderState {
    metadata: Option<Shared<ProviderMetadata>>,
    keys: Option<Shared<JwkSet>>,
    sites: Option<Shared<InstanceSites>>,
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

    pub(super) fn documents(&self) -> Documents {
        Documents { metadata: self.metadata.clone(), keys: self.keys.clone(), sites: self.sites.clone() }
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
