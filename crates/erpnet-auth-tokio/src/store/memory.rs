//! The tasks of one process sharing sessions in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{acquire, lock_token, millis_floor, Lease, SessionStore, StoreFuture, Write};

struct Entry {
    value: String,
    // Kept beside the value so that a write compares without parsing the stored snapshot.
    generation: u64,
}

struct Held {
    token: String,
    until: Instant,
}

#[derive(Default)]
struct Shared {
    entries: HashMap<String, Entry>,
    locks: HashMap<String, Held>,
}

/// Sessions in this process's memory, shared by every clone: the tasks of one process
/// (several processes need a store they all reach, such as `RedisStore`).
///
/// Its calls never wait on another task except in [`lock`](SessionStore::lock), which
/// pauses on tokio's timer; the inner mutex is held for a map operation only, never across
/// an `.await`.
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for MemoryStore {
    // The values are snapshots, with tokens: counted, never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (entries, locks) = self.with(|shared| (shared.entries.len(), shared.locks.len()));
        f.debug_struct("MemoryStore").field("entries", &entries).field("locks", &locks).finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        // A task that panicked while holding it left whole values behind: go on with them.
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut shared)
    }

    fn try_lock(&self, name: &str, token: &str, lease: Duration) -> bool {
        self.with(|shared| {
            let now = Instant::now();
            if shared.locks.get(name).is_some_and(|held| held.until > now) {
                return false;
            }
            shared.locks.insert(name.to_owned(), Held { token: token.to_owned(), until: now + lease });
            true
        })
    }
}

/// The generation a value carries when written without a [`Write`] (the npm
/// `MemoryStorage`'s rule): its JSON's `generation`, 0 when it has none.
fn stored_generation(value: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(value)
        .ok()
        .and_then(|json| json.get("generation").and_then(serde_json::Value::as_u64))
        .unwrap_or(0)
}

// Each call does its work when first polled, like any future: one created and dropped
// unpolled changes nothing.
impl SessionStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move { Ok(self.with(|shared| shared.entries.get(key).map(|entry| entry.value.clone()))) })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a str, write: Option<Write>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let generation = write.map_or_else(|| stored_generation(value), |write| write.generation);
            Ok(self.with(|shared| {
                if let (Some(write), Some(stored)) = (write, shared.entries.get(key)) {
                    if stored.generation > write.base_generation {
                        return false;
                    }
                }
                shared.entries.insert(key.to_owned(), Entry { value: value.to_owned(), generation });
                true
            }))
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.with(|shared| shared.entries.remove(key));
            Ok(())
        })
    }

    fn lock<'a>(&'a self, name: &'a str, lease: Duration, wait: Duration) -> StoreFuture<'a, Lease> {
        Box::pin(async move {
            let token = lock_token();
            let asked_at = acquire(wait, || std::future::ready(Ok(self.try_lock(name, &token, lease)))).await?;
            Ok(Lease { expires_at_ms: asked_at.saturating_add(millis_floor(lease)), token })
        })
    }

    fn unlock<'a>(&'a self, name: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.with(|shared| {
                if shared.locks.get(name).is_some_and(|held| held.token == lease.token) {
                    shared.locks.remove(name);
                }
            });
            Ok(())
        })
    }
}
