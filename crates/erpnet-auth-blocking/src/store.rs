//! Where sessions live when several threads or processes serve one user: the snapshot,
//! written with compare-and-swap on its generation, and a leased lock for token requests.
//!
//! The protocol [`Driver`](crate::Driver) runs for every token request: take
//! the lock → load the stored snapshot → hand it to the session (newer tokens are adopted,
//! and the refresh may no longer be wanted) → refresh → write with compare-and-swap →
//! release. The lock is a lease of the length the session asks for
//! ([`Session::token_lease_ms`](erpnet_auth::Session::token_lease_ms)), and the driver sends
//! only if the session says the lease left still covers the request
//! ([`Session::lease_covers`](erpnet_auth::Session::lease_covers)), so it cannot run out
//! while a refresh it guards may still reach the provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[cfg(feature = "redis")]
use erpnet_auth::shared_store::{
    default_ttl_ms, lock_key, snapshot_key, COMPARE_AND_SWAP_SCRIPT, DEFAULT_PREFIX, RELEASE_SCRIPT, SNAPSHOT_FIELD,
};
use erpnet_auth::Snapshot;

use crate::now_ms;

/// The store did not answer (down, timed out) or the lock stayed taken too long.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or refused the command.
    Unavailable(String),
    /// The lock stayed taken for longer than any holder may keep it.
    LockTimeout,
    /// The token lock's lease would end before the token request it guards may still reach
    /// the provider (taking the lock or reading the store took too long): not sent.
    LeaseTooShort,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "the session store is unavailable ({why})"),
            StoreError::LockTimeout => f.write_str("the token lock stayed taken longer than its lease"),
            StoreError::LeaseTooShort => {
                f.write_str("the token lock's lease would end before the token request's deadline")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// A held lock: release it with [`SessionStore::unlock`].
#[derive(Debug)]
pub struct Lease {
    token: String,
    /// When the lease ends, Unix ms on this process's clock (counted from before it was
    /// asked for, so never later than the store's), for
    /// [`Session::lease_covers`](erpnet_auth::Session::lease_covers).
    pub expires_at_ms: u64,
}

/// Snapshots with compare-and-swap, and a leased lock per session. `Send`, so that a
/// [`Driver`](crate::Driver) sharing a session through it can move between threads.
pub trait SessionStore: Send {
    /// The stored snapshot (JSON), if any.
    fn load(&mut self, key: &str) -> Result<Option<String>, StoreError>;
    /// Writes `snapshot` only while the stored generation is not above its
    /// [`base_generation`](Snapshot::base_generation); `Ok(false)` when refused.
    fn compare_and_swap(&mut self, key: &str, snapshot: &Snapshot) -> Result<bool, StoreError>;
    /// Takes the lock of `key` for `lease`, waiting at most `lease` plus a second.
    fn lock(&mut self, key: &str, lease: Duration) -> Result<Lease, StoreError>;
    /// Releases the lock if it is still this lease's.
    fn unlock(&mut self, key: &str, lease: Lease) -> Result<(), StoreError>;
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // An OS without randomness cannot happen here; a fixed token would still exclude.
    let _ = getrandom::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits for a lock with growing, jittered pauses until `give_up`.
fn acquire(give_up: Instant, mut try_once: impl FnMut() -> Result<bool, StoreError>) -> Result<(), StoreError> {
    let mut pause = Duration::from_millis(5);
    loop {
        if try_once()? {
            return Ok(());
        }
        if Instant::now() + pause > give_up {
            return Err(StoreError::LockTimeout);
        }
        let mut jitter = [0u8; 1];
        let _ = getrandom::fill(&mut jitter);
        std::thread::sleep(pause + pause * u32::from(jitter[0]) / 255);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[derive(Default)]
struct Shared {
    snapshots: HashMap<String, (u64, String)>,
    locks: HashMap<String, (String, Instant)>,
}

/// Sessions in this process's memory, shared by every clone (threads of one process).
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        // A thread that panicked while holding it left whole values behind: go on with them.
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut shared)
    }
}

impl SessionStore for MemoryStore {
    fn load(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(|s| s.snapshots.get(key).map(|(_, json)| json.clone())))
    }

    fn compare_and_swap(&mut self, key: &str, snapshot: &Snapshot) -> Result<bool, StoreError> {
        Ok(self.with(|s| {
            if s.snapshots.get(key).is_some_and(|(stored, _)| *stored > snapshot.base_generation()) {
                return false;
            }
            s.snapshots.insert(key.to_owned(), (snapshot.generation(), snapshot.to_json()));
            true
        }))
    }

    fn lock(&mut self, key: &str, lease: Duration) -> Result<Lease, StoreError> {
        let token = random_token();
        let mut last_asked_ms = now_ms();
        acquire(Instant::now() + lease + Duration::from_secs(1), || {
            last_asked_ms = now_ms();
            Ok(self.with(|s| {
                let now = Instant::now();
                if s.locks.get(key).is_some_and(|(_, until)| *until > now) {
                    return false;
                }
                s.locks.insert(key.to_owned(), (token.clone(), now + lease));
                true
            }))
        })?;
        Ok(Lease { token, expires_at_ms: last_asked_ms.saturating_add(duration_ms(lease)) })
    }

    fn unlock(&mut self, key: &str, lease: Lease) -> Result<(), StoreError> {
        self.with(|s| {
            if s.locks.get(key).is_some_and(|(token, _)| *token == lease.token) {
                s.locks.remove(key);
            }
        });
        Ok(())
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Sessions in Redis, in the layout of [`erpnet_auth::shared_store`], the npm package's
/// `RedisStorage`'s (a Rust and a Node process can share them): hashes `g` (generation) and
/// `v` (snapshot), an atomic compare-and-swap script, `SET NX PX` locks with a random token
/// released by compare-and-delete. Every command times out; a broken connection is reopened
/// on the next command.
#[cfg(feature = "redis")]
pub struct RedisStore {
    client: redis::Client,
    connection: Option<redis::Connection>,
    prefix: String,
    timeout: Duration,
    cas: redis::Script,
    release: redis::Script,
}

#[cfg(feature = "redis")]
impl RedisStore {
    /// A store at `url` (`redis://host:port`), keys under `erpnet-auth:`, each living
    /// [`default_ttl_ms`] after its last write (a session 30 days), commands timing out after
    /// 2 s. Connects lazily.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.category().to_owned()))?;
        Ok(RedisStore {
            client,
            connection: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: Duration::from_secs(2),
            cas: redis::Script::new(COMPARE_AND_SWAP_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
        })
    }

    /// Runs `f` on a connection; a failure drops the connection (reopened next time).
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection, &Self) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut connection = match self.connection.take() {
            Some(connection) => connection,
            None => {
                let connection = self
                    .client
                    .get_connection_with_timeout(self.timeout)
                    .map_err(|e| StoreError::Unavailable(e.category().to_owned()))?;
                connection
                    .set_read_timeout(Some(self.timeout))
                    .map_err(|e| StoreError::Unavailable(e.category().to_owned()))?;
                connection
                    .set_write_timeout(Some(self.timeout))
                    .map_err(|e| StoreError::Unavailable(e.category().to_owned()))?;
                connection
            }
        };
        match f(&mut connection, self) {
            Ok(value) => {
                self.connection = Some(connection);
                Ok(value)
            }
            // The error's category only: its text may quote the command, a snapshot in it.
            Err(e) => Err(StoreError::Unavailable(e.category().to_owned())),
        }
    }
}

#[cfg(feature = "redis")]
impl SessionStore for RedisStore {
    fn load(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let key = snapshot_key(&self.prefix, key);
        self.run(|c, _| redis::cmd("HGET").arg(&key).arg(SNAPSHOT_FIELD).query(c))
    }

    fn compare_and_swap(&mut self, key: &str, snapshot: &Snapshot) -> Result<bool, StoreError> {
        let ttl = default_ttl_ms(key);
        let key = snapshot_key(&self.prefix, key);
        let written: i64 = self.run(|c, store| {
            store
                .cas
                .key(&key)
                .arg(snapshot.generation())
                .arg(snapshot.base_generation())
                .arg(snapshot.to_json())
                .arg(ttl)
                .invoke(c)
        })?;
        Ok(written == 1)
    }

    fn lock(&mut self, key: &str, lease: Duration) -> Result<Lease, StoreError> {
        let key = lock_key(&self.prefix, key);
        let token = random_token();
        let lease_ms = duration_ms(lease);
        let mut last_asked_ms = now_ms();
        acquire(Instant::now() + lease + Duration::from_secs(1), || {
            last_asked_ms = now_ms();
            let taken: Option<String> =
                self.run(|c, _| redis::cmd("SET").arg(&key).arg(&token).arg("NX").arg("PX").arg(lease_ms).query(c))?;
            Ok(taken.is_some())
        })?;
        Ok(Lease { token, expires_at_ms: last_asked_ms.saturating_add(lease_ms) })
    }

    fn unlock(&mut self, key: &str, lease: Lease) -> Result<(), StoreError> {
        let key = lock_key(&self.prefix, key);
        let _: i64 = self.run(|c, store| store.release.key(&key).arg(&lease.token).invoke(c))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(generation: u64) -> Snapshot {
        let json =
            format!(r#"{{"version":1,"issuer":"https://id.example","client_id":"c","generation":{generation}}}"#);
        Snapshot::from_json(&json).expect("snapshot")
    }

    #[test]
    fn a_write_based_on_an_older_generation_is_refused() {
        let mut store = MemoryStore::new();
        assert!(store.compare_and_swap("k", &snapshot(3)).expect("write"));
        // Read back, its base is itself: an unchanged rewrite is accepted, an older state not.
        assert!(store.compare_and_swap("k", &snapshot(3)).expect("write"));
        assert!(!store.compare_and_swap("k", &snapshot(2)).expect("write"));
        assert_eq!(store.load("k").expect("load"), Some(snapshot(3).to_json()));
    }

    #[test]
    fn the_lock_excludes_until_released_or_its_lease_ends() {
        let mut first = MemoryStore::new();
        let mut second = first.clone();
        let lease = first.lock("k", Duration::from_millis(300)).expect("lock");
        let started = Instant::now();
        // Taken: the second waits out the lease (the holder "died" without releasing).
        let again = second.lock("k", Duration::from_secs(5)).expect("after the lease");
        assert!(started.elapsed() >= Duration::from_millis(250));
        // The first holder's late release does not free the second's lock: a third waits
        // (at most its lease and a second) and gives up.
        first.unlock("k", lease).expect("unlock");
        assert_eq!(first.lock("k", Duration::from_millis(10)).map(|_| ()), Err(StoreError::LockTimeout));
        second.unlock("k", again).expect("unlock");
        assert!(first.lock("k", Duration::from_millis(10)).is_ok(), "free once released by its holder");
    }
}
