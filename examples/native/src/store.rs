//! Where sessions live when several threads or processes serve one user: the snapshot,
//! written with compare-and-swap on its generation, and a leased lock for token requests.
//!
//! The protocol [`NativeDriver`](crate::NativeDriver) runs for every token request: take
//! the lock → load the stored snapshot → hand it to the session (newer tokens are adopted,
//! and the refresh may no longer be wanted) → refresh → write with compare-and-swap →
//! release. The lock is a lease longer than the token request's deadline (the driver sends
//! only if the lease left covers it), so it cannot run out while a refresh it guards may
//! still reach the provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use erpnet_auth::Snapshot;

/// The store did not answer (down, timed out) or the lock stayed taken too long.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or refused the command.
    Unavailable(String),
    /// The lock stayed taken for longer than any holder may keep it.
    LockTimeout,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "the session store is unavailable ({why})"),
            StoreError::LockTimeout => f.write_str("the token lock stayed taken longer than its lease"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A held lock: release it with [`SessionStore::unlock`].
#[derive(Debug)]
pub struct Lease {
    token: String,
    /// When the lease ends, on this process's clock (counted from before it was asked for,
    /// so never later than the store's).
    pub expires_at: Instant,
}

/// Snapshots with compare-and-swap, and a leased lock per session.
pub trait SessionStore {
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
        let asked = Instant::now();
        acquire(asked + lease + Duration::from_secs(1), || {
            Ok(self.with(|s| {
                let now = Instant::now();
                if s.locks.get(key).is_some_and(|(_, until)| *until > now) {
                    return false;
                }
                s.locks.insert(key.to_owned(), (token.clone(), now + lease));
                true
            }))
        })?;
        Ok(Lease { token, expires_at: asked + lease })
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

// KEYS[1] the hash; ARGV: generation, base generation, snapshot, time to live (ms).
const COMPARE_AND_SWAP: &str = "local stored = tonumber(redis.call('HGET', KEYS[1], 'g') or '-1')
if stored > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'g', ARGV[1], 'v', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1";
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Sessions in Redis, the same layout as the npm package's `RedisStorage` (a Rust and a
/// Node process can share them): hashes `g` (generation) and `v` (snapshot), an atomic
/// compare-and-swap script, `SET NX PX` locks with a random token released by
/// compare-and-delete. Every command times out; a broken connection is reopened on the next
/// command.
pub struct RedisStore {
    client: redis::Client,
    connection: Option<redis::Connection>,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    cas: redis::Script,
    release: redis::Script,
}

impl RedisStore {
    /// A store at `url` (`redis://host:port`), keys under `erpnet-auth:`, sessions kept 30
    /// days after their last write, commands timing out after 2 s. Connects lazily.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.category().to_owned()))?;
        Ok(RedisStore {
            client,
            connection: None,
            prefix: "erpnet-auth:".to_owned(),
            ttl: Duration::from_secs(30 * 24 * 3600),
            timeout: Duration::from_secs(2),
            cas: redis::Script::new(COMPARE_AND_SWAP),
            release: redis::Script::new(RELEASE),
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

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

impl SessionStore for RedisStore {
    fn load(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(key);
        self.run(|c, _| redis::cmd("HGET").arg(&key).arg("v").query(c))
    }

    fn compare_and_swap(&mut self, key: &str, snapshot: &Snapshot) -> Result<bool, StoreError> {
        let key = self.key(key);
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
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
        let key = format!("{}lock:{key}", self.prefix);
        let token = random_token();
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let asked = Instant::now();
        let mut last_asked = asked;
        acquire(asked + lease + Duration::from_secs(1), || {
            last_asked = Instant::now();
            let taken: Option<String> =
                self.run(|c, _| redis::cmd("SET").arg(&key).arg(&token).arg("NX").arg("PX").arg(lease_ms).query(c))?;
            Ok(taken.is_some())
        })?;
        Ok(Lease { token, expires_at: last_asked + lease })
    }

    fn unlock(&mut self, key: &str, lease: Lease) -> Result<(), StoreError> {
        let key = format!("{}lock:{key}", self.prefix);
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
