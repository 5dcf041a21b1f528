//! A provider document (metadata, key set, an instance's sites) held once and shared: by a
//! session, its snapshots and, on a server, the other sessions of its process. Its JSON is
//! written at the first persist and reused by every later one
//! ([`Snapshot::to_json`](crate::Snapshot::to_json)), so a snapshot write costs the user's
//! state, not the provider's kilobytes again.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) struct Shared<T>(Arc<Document<T>>);

struct Document<T> {
    value: T,
    json: OnceLock<Option<String>>,
}

impl<T> Shared<T> {
    pub(crate) fn new(value: T) -> Shared<T> {
        Shared(Arc::new(Document { value, json: OnceLock::new() }))
    }
}

impl<T: Serialize> Shared<T> {
    /// Its JSON, written at the first call. `None` only if it could not be serialized,
    /// which these plain documents cannot fail.
    pub(crate) fn json(&self) -> Option<&str> {
        self.0.json.get_or_init(|| serde_json::to_string(&self.0.value).ok()).as_deref()
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<T: PartialEq> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.value == other.0.value
    }
}

impl<T: Eq> Eq for Shared<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Shared<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.value.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shared<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Shared::new)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn written_as_the_value_would_be_and_read_back() {
        let keys: crate::jwks::JwkSet =
            serde_json::from_str(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AQ"}]}"#).unwrap();
        let shared = Shared::new(keys.clone());
        let direct = serde_json::to_string(&keys).unwrap();
        assert_eq!(shared.json(), Some(direct.as_str()));
        assert_eq!(shared.clone().json(), Some(direct.as_str()), "the written JSON is reused");
        assert_eq!(serde_json::to_string(&shared).unwrap(), direct);
        let back: Shared<crate::jwks::JwkSet> = serde_json::from_str(&direct).unwrap();
        assert_eq!(back, shared);
        assert_eq!(serde_json::to_value(&shared).unwrap(), serde_json::to_value(&keys).unwrap());
    }
}
