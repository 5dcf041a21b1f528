//! What a server or a store sent that was sloppy or suspect but tolerated.

use serde::{Deserialize, Serialize};

/// Something a server or a store sent that was sloppy or suspect but tolerated: worth a log
/// line, not a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Warning {
    /// `expires_in` was negative, zero, absurdly large or not a number: the token is given
    /// the assumed lifetime ([`Timing::assumed_lifetime_ms`](crate::Timing)) and renewed
    /// on a 401 if it ends sooner.
    UnusableExpiresIn,
    /// `scope` was not a string: the granted scope is reported as unknown.
    UnusableScope,
    /// A stored snapshot carried the provider's documents (endpoints, signing keys or the
    /// instance's sites) although this configuration never stores them
    /// ([`snapshot_provider(false)`](crate::ConfigBuilder::snapshot_provider)): someone else
    /// wrote the store. They were ignored.
    StoredProviderDataIgnored,
}

impl Warning {
    /// A stable code a caller can branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Warning::UnusableExpiresIn => "unusable_expires_in",
            Warning::UnusableScope => "unusable_scope",
            Warning::StoredProviderDataIgnored => "stored_provider_data_ignored",
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Warning::UnusableExpiresIn => {
                "the token endpoint sent an unusable expires_in; the assumed lifetime applies"
            }
            Warning::UnusableScope => "the token endpoint sent a scope that is not a string; it is ignored",
            Warning::StoredProviderDataIgnored => {
                "a stored snapshot carried provider documents this configuration never stores; they were ignored"
            }
        })
    }
}
