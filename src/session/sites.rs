//! The instance-sites pipeline (ERP.net preset with discovery on): the auto-discovery
//! document, asked for once, names the Domain API's root that relative calls resolve against
//! and the Profile site.

use crate::config::Config;
use crate::http::{HttpResponse, RequestId, TransportError};
use crate::output::CallError;
use crate::shared::Shared;
use crate::sites::{self, InstanceSites, SkippedSite};
use crate::urls::{self, WebUrl};

/// Where the instance's auto-discovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not asked for, or done.
    Idle,
    /// Asked at `/tools/auto-discovery`, or at the older `/sys/auto-discovery` (`legacy`).
    InFlight { request: RequestId, legacy: bool },
}

#[derive(Debug)]
pub(super) struct Sites {
    known: Option<Shared<InstanceSites>>,
    /// The known sites' Domain API root, parsed once (calls resolve against it).
    odata_root: Option<WebUrl>,
    /// The known sites came from a stored snapshot: used, never shared.
    stored: bool,
    phase: Phase,
}

/// The outcome of an auto-discovery answer.
pub(super) enum Discovered {
    /// The sites the session uses now, and those the document listed that it does not.
    Sites { sites: InstanceSites, skipped: Vec<SkippedSite> },
    /// An instance from before the current path: ask at the older one.
    TryLegacy,
}

impl Sites {
    pub fn new() -> Sites {
        Sites { known: None, odata_root: None, stored: false, phase: Phase::Idle }
    }

    pub fn known(&self) -> Option<&Shared<InstanceSites>> {
        self.known.as_ref()
    }

    /// The known sites, unless they came from a stored snapshot.
    pub fn shareable(&self) -> Option<&Shared<InstanceSites>> {
        self.known.as_ref().filter(|_| !self.stored)
    }

    /// The Profile site's root.
    pub fn profile(&self) -> Option<&str> {
        self.known.as_deref().and_then(|s| s.profile.as_deref())
    }

    pub fn in_flight(&self) -> bool {
        matches!(self.phase, Phase::InFlight { .. })
    }

    /// Sites learned (checked to be on the instance); `stored` when a snapshot brought them.
    /// Sites equal to those already known are kept as they are (and shared as they are).
    pub fn learn(&mut self, sites: Shared<InstanceSites>, stored: bool) {
        self.stored = stored;
        if self.known.as_ref() == Some(&sites) {
            return;
        }
        self.odata_root = sites.odata_root.as_deref().and_then(|r| WebUrl::parse(r).ok());
        self.known = Some(sites);
    }

    /// Where to ask for the instance's sites (at the older path when `legacy`), when the
    /// configuration discovers them.
    pub fn url(config: &Config, legacy: bool) -> Option<String> {
        let root = config.sites_root.as_ref()?;
        let path = if legacy { "sys/auto-discovery" } else { "tools/auto-discovery" };
        root.join(path).ok().map(String::from)
    }

    pub fn sent(&mut self, request: RequestId, legacy: bool) {
        self.phase = Phase::InFlight { request, legacy };
    }

    /// Takes the answer to the auto-discovery request `id`; `None` when it is not the one
    /// awaited, or when it names no sites (the documented default paths stay in use; calls
    /// go on).
    pub fn on_answer(
        &mut self,
        id: RequestId,
        answer: &Result<HttpResponse, TransportError>,
        config: &Config,
    ) -> Option<Discovered> {
        let Phase::InFlight { request, legacy } = self.phase else { return None };
        if request != id {
            return None;
        }
        self.phase = Phase::Idle;
        let root = config.sites_root.as_ref()?;
        let parsed = match answer {
            Ok(response) if response.status == 200 => sites::parse_sites(&response.body, root),
            _ => None,
        };
        match parsed {
            Some((sites, skipped)) => {
                self.learn(Shared::new(sites.clone()), false);
                Some(Discovered::Sites { sites, skipped })
            }
            // Instances before the 2025 path answer the older one.
            None if !legacy && matches!(answer, Ok(r) if r.status == 404) => Some(Discovered::TryLegacy),
            None => None,
        }
    }

    /// The absolute URL of a call: as given, or below the API root when relative (the
    /// discovered Domain API root, unless one was configured). Refused for an origin that is
    /// not a configured API origin: the token is never sent there.
    pub fn resolve(&self, raw: &str, config: &Config) -> Result<String, CallError> {
        let root = match &self.odata_root {
            Some(root) if !config.api_root_explicit => Some(root),
            _ => config.api_root.as_ref(),
        };
        let url = urls::resolve_call(raw, root).map_err(|_| CallError::InvalidUrl)?;
        if !config.api_origins.contains(&url.origin) {
            return Err(CallError::ForeignOrigin { origin: url.origin.serialization().to_owned() });
        }
        Ok(url.href)
    }
}
