//! Where sessions live when several tasks or processes serve one user: the snapshot, written
//! with compare-and-swap on its generation, and a leased lock for token requests.
//!
//! # The protocol
//!
//! For every token request the driver takes the session's lock (`{key}:token`), reads the
//! stored snapshot and hands it to the session (newer tokens are adopted, and the refresh
//! may no longer be wanted), sends, writes the new snapshot with compare-and-swap and
//! releases the lock. A refused write lost a race: the driver reads the store again and the
//! session adopts the winner's tokens, never a logout.
//!
//! The lock is a *lease*: it ends by itself after the time it was taken for, so a process
//! that dies holding it blocks the others only until then. The lease must outlive the token
//! request's deadline, because the provider cannot check a fencing token: with refresh-token
//! rotation a second refresh that starts while the first may still reach the provider
//! revokes the whole grant. The core states the lease each token request needs and whether
//! a held lease still covers it; [`Lease::expires_at_ms`] is what it is asked about.
//!
//! # Implementations
//!
//! * [`MemoryStore`]: the tasks of one process.
//! * `RedisStore` (feature `redis`): several processes, in the npm package's
//!   `RedisStorage` layout, so that Node and Rust processes serve one session together.
//!
//! Any other store implements [`SessionStore`]; it must settle every call within a bounded
//! time (a store that hangs would hang every token request of the session).

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use erpnet_auth::{OsRandom, RandomSource, Snapshot};

#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use memory::MemoryStore;

/// The future every [`SessionStore`] method returns (boxed, so that the trait is object
/// safe and can be shared as `Arc<dyn SessionStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The generation pair of a compare-and-swap write (from [`Snapshot::generation`] and
/// [`Snapshot::base_generation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    /// The generation of the state being written.
    pub generation: u64,
    /// The generation it was derived from: the write is refused when the store holds a
    /// newer one.
    pub base_generation: u64,
}

impl From<&Snapshot> for Write {
    fn from(snapshot: &Snapshot) -> Write {
        Write { generation: snapshot.generation(), base_generation: snapshot.base_generation() }
    }
}

/// A held lock, released with [`SessionStore::unlock`].
#[derive(Debug)]
pub struct Lease {
    token: String,
    /// When the lease ends, Unix milliseconds on this process's clock, counted from before
    /// the lock was asked for: never later than the store's own expiry of the lock.
    pub expires_at_ms: u64,
}

impl Lease {
    /// A lease held under `token` (what tells this holder's lock from a later one's), for
    /// implementations of [`SessionStore`] outside this crate.
    pub fn new(token: impl Into<String>, expires_at_ms: u64) -> Lease {
        Lease { token: token.into(), expires_at_ms }
    }

    /// The holder's token.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Why a store call failed. Neither variant carries a stored value or a command argument
/// (a snapshot holds tokens): the command's name and a category only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer within its command timeout, or refused / lost the
    /// connection.
    #[error("the session store did not answer {command} ({reason})")]
    Unavailable {
        /// The command that failed (`HGET`, `EVAL`, `SET`, …).
        command: &'static str,
        /// A category (`timed out`, `I/O error`, …), never a value.
        reason: String,
    },
    /// The lock stayed taken longer than the wait allowed.
    #[error("the token lock stayed taken longer than the wait allowed")]
    LockTimeout,
}

impl StoreError {
    /// The stable code, as the npm package's: `storage_unavailable` or `lock_timeout`.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable { .. } => "storage_unavailable",
            StoreError::LockTimeout => "lock_timeout",
        }
    }
}

/// Snapshots with compare-and-swap on their generation, and a leased lock per name: the
/// contract of the npm package's storages (`MemoryStorage`, `RedisStorage`).
///
/// Object safe (shared as `Arc<dyn SessionStore>`). Every method settles within the store's
/// own bound: a store that stops answering gives [`StoreError::Unavailable`], never a hang.
pub trait SessionStore: Send + Sync + 'static {
    /// The value stored under `key` (a snapshot's JSON), if any.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>>;

    /// Stores `value` under `key`. With `Some(write)` only while the stored generation is
    /// not above `write.base_generation`: `Ok(false)` when refused (another process changed
    /// the session meanwhile; read it again). With `None` unconditionally (`Ok(true)`).
    fn set<'a>(&'a self, key: &'a str, value: &'a str, write: Option<Write>) -> StoreFuture<'a, bool>;

    /// Removes `key` (nothing happens when it is absent).
    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;

    /// Takes the lock `name` for `lease`, waiting at most `wait` for another holder to
    /// release it or for its lease to end (with growing, jittered pauses), else
    /// [`StoreError::LockTimeout`].
    fn lock<'a>(&'a self, name: &'a str, lease: Duration, wait: Duration) -> StoreFuture<'a, Lease>;

    /// Releases the lock `name` only if it is still `lease`'s (compare-and-delete): a holder
    /// whose lease ran out does not free the lock another has taken since.
    fn unlock<'a>(&'a self, name: &'a str, lease: Lease) -> StoreFuture<'a, ()>;
}

/// Now, Unix milliseconds (0 on a clock set before 1970, which only shortens leases).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// Whole milliseconds of `duration`, rounded down (a lease's end as this process sees it).
pub(crate) fn millis_floor(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A random lock token: 16 bytes, hex.
pub(crate) fn lock_token() -> String {
    let mut bytes = [0u8; 16];
    if OsRandom.fill(&mut bytes).is_err() {
        // The token needs to be unique, not secret: without the OS's randomness, the process,
        // the time and a counter still tell holders apart.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.subsec_nanos());
        bytes[..4].copy_from_slice(&std::process::id().to_le_bytes());
        bytes[4..8].copy_from_slice(&nanos.to_le_bytes());
        bytes[8..].copy_from_slice(&count.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tries `attempt` until it takes the lock, pausing 5 ms, 10 ms, … up to 200 ms between
/// tries, each pause stretched by a random 0–100 % so that waiters do not retry in step.
/// Gives up once `wait` has passed. Returns when (Unix ms) the successful try was asked.
pub(crate) async fn acquire<F, Fut>(wait: Duration, mut attempt: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, StoreError>>,
{
    let give_up = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        let asked_at = unix_ms();
        if attempt().await? {
            return Ok(asked_at);
        }
        let now = tokio::time::Instant::now();
        if now >= give_up {
            return Err(StoreError::LockTimeout);
        }
        let mut jitter = [0u8; 1];
        // Without randomness the pauses are only not stretched.
        let _ = OsRandom.fill(&mut jitter);
        let stretched = pause + pause * u32::from(jitter[0]) / 255;
        // One last try at the end of the wait rather than a pause past it.
        tokio::time::sleep(stretched.min(give_up - now)).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
