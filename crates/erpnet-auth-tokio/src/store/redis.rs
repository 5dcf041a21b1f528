//! Sessions in Redis, in the npm package's `RedisStorage` layout: a Node process and a Rust
//! process serve one user's session together.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script, Value};

use erpnet_auth::shared_store;

use super::{acquire, lock_token, millis_floor, Lease, SessionStore, StoreError, StoreFuture, Write};

const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A key's time to live by default: [`shared_store::default_ttl_ms`] (30 days; an hour for
/// `signin:` keys), as the npm package's.
fn default_ttl(key: &str) -> Duration {
    Duration::from_millis(shared_store::default_ttl_ms(key))
}

type TtlOf = dyn Fn(&str) -> Duration + Send + Sync;

/// Sessions in Redis, shared by every process that reaches it, Node ones included.
///
/// The npm package's `RedisStorage` layout, byte for byte ([`erpnet_auth::shared_store`]
/// holds it, one copy for every driver): a snapshot is the hash
/// `{prefix}{key}` with fields `g` (generation) and `v` (the snapshot's JSON), written by one
/// atomic compare-and-swap script that also renews its time to live; the lock `name` is the
/// string `{prefix}lock:{name}`, taken with `SET NX PX` and a random token and released by a
/// compare-and-delete script.
///
/// Every command is bounded by [`command_timeout`](Self::command_timeout) (2 s by default),
/// also when Redis accepts the connection and never answers (stopped, busy in a long script
/// or `DEBUG SLEEP`, a network that drops packets): the call then fails with [`StoreError::Unavailable`] and the
/// connection manager reconnects by itself when the connection was lost. A command that timed
/// out may still run once Redis answers again: a compare-and-swap write then still checks the
/// generation; a lock taken that late is released at once (or ends with its lease).
///
/// ```no_run
/// # async fn example() -> Result<(), erpnet_auth_tokio::store::StoreError> {
/// use std::time::Duration;
/// use erpnet_auth_tokio::store::RedisStore;
///
/// let store = RedisStore::open_with_timeout("redis://127.0.0.1:6379", Duration::from_millis(500))
///     .await?
///     .prefix("my-app:");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    ttl: Arc<TtlOf>,
    command_timeout: Duration,
    compare_and_swap: Arc<Script>,
    release: Arc<Script>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on an existing connection manager: keys under `erpnet-auth:`, commands
    /// bounded by 2 s. The manager's own response and connection timeouts are its creator's
    /// choice; this store's bound holds whatever they are.
    pub fn new(connection: ConnectionManager) -> RedisStore {
        RedisStore {
            connection,
            prefix: shared_store::DEFAULT_PREFIX.to_owned(),
            ttl: Arc::new(default_ttl),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            compare_and_swap: Arc::new(Script::new(shared_store::COMPARE_AND_SWAP_SCRIPT)),
            release: Arc::new(Script::new(shared_store::RELEASE_SCRIPT)),
        }
    }

    /// Connects to `url` (`redis://host:port/db`, `rediss://` needs the `redis` crate's TLS
    /// features), with the default command timeout of 2 s.
    pub async fn open(url: &str) -> Result<RedisStore, StoreError> {
        RedisStore::open_with_timeout(url, DEFAULT_COMMAND_TIMEOUT).await
    }

    /// Connects to `url` with `command_timeout` as the bound of every command, of the first
    /// connection, and of the connection manager's own connection attempts and answers.
    pub async fn open_with_timeout(url: &str, command_timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = Client::open(url).map_err(|error| unavailable("CONNECT", &error))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout));
        let connection =
            bounded("CONNECT", command_timeout, ConnectionManager::new_with_config(client, config)).await?;
        Ok(RedisStore::new(connection).command_timeout(command_timeout))
    }

    /// The prefix of every key (default `erpnet-auth:`, the npm package's).
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisStore {
        self.prefix = prefix.into();
        self
    }

    /// How long every key lives after its last write. [`Duration::ZERO`]: forever.
    pub fn ttl(mut self, ttl: Duration) -> RedisStore {
        self.ttl = Arc::new(move |_: &str| ttl);
        self
    }

    /// How long a key lives after its last write, by key (the default: 30 days, an hour for
    /// keys starting `signin:`). [`Duration::ZERO`]: forever.
    pub fn ttl_by_key(mut self, ttl: impl Fn(&str) -> Duration + Send + Sync + 'static) -> RedisStore {
        self.ttl = Arc::new(ttl);
        self
    }

    /// The longest any command may take before the call fails with
    /// [`StoreError::Unavailable`] (default 2 s).
    pub fn command_timeout(mut self, timeout: Duration) -> RedisStore {
        self.command_timeout = timeout;
        self
    }

    fn lock_key(&self, name: &str) -> String {
        shared_store::lock_key(&self.prefix, name)
    }

    async fn run<T>(
        &self,
        command: &'static str,
        send: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        bounded(command, self.command_timeout, send).await
    }

    /// Sends the compare-and-delete of `token` without waiting for it: after a lock attempt
    /// whose answer never came, the `SET` may still run when Redis answers again, and this
    /// release, sent after it on the same connection, frees it.
    fn release_in_background(&self, key: String, token: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let store = self.clone();
        runtime.spawn(async move {
            let mut connection = store.connection.clone();
            // EVAL, not EVALSHA: nobody is left to load the script if Redis answers NOSCRIPT
            // after this task has given up. A failure leaves the lease to run out.
            let release = ::redis::cmd("EVAL").arg(shared_store::RELEASE_SCRIPT).arg(1).arg(&key).arg(&token).clone();
            let _ = store.run("EVAL", release.query_async::<i64>(&mut connection)).await;
        });
    }
}

/// `send`, failing with [`StoreError::Unavailable`] once `timeout` has passed.
async fn bounded<T>(
    command: &'static str,
    timeout: Duration,
    send: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(unavailable(command, &error)),
        Err(_) => Err(StoreError::Unavailable { command, reason: "timed out".to_owned() }),
    }
}

/// The error's category only: the client's message may quote the command, a snapshot in it.
fn unavailable(command: &'static str, error: &RedisError) -> StoreError {
    let reason = if error.is_timeout() {
        "timed out"
    } else if error.is_connection_refusal() {
        "connection refused"
    } else if error.is_connection_dropped() {
        "connection lost"
    } else {
        error.category()
    };
    StoreError::Unavailable { command, reason: reason.to_owned() }
}

impl SessionStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let hash = shared_store::snapshot_key(&self.prefix, key);
            self.run(
                "HGET",
                ::redis::cmd("HGET").arg(&hash).arg(shared_store::SNAPSHOT_FIELD).query_async(&mut connection),
            )
            .await
        })
    }

    fn set<'a>(&'a self, key: &'a str, value: &'a str, write: Option<Write>) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let hash = shared_store::snapshot_key(&self.prefix, key);
            let ttl_ms = millis_floor((self.ttl)(key));
            let (generation, base) = match write {
                Some(write) => (write.generation, write.base_generation),
                None => (0, shared_store::UNCONDITIONAL_BASE_GENERATION),
            };
            let mut invocation = self.compare_and_swap.key(&hash);
            invocation.arg(generation).arg(base).arg(value).arg(ttl_ms);
            let written: i64 = self.run("EVALSHA", invocation.invoke_async(&mut connection)).await?;
            Ok(written == 1)
        })
    }

    fn remove<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let hash = shared_store::snapshot_key(&self.prefix, key);
            self.run("DEL", ::redis::cmd("DEL").arg(&hash).query_async::<i64>(&mut connection)).await?;
            Ok(())
        })
    }

    fn lock<'a>(&'a self, name: &'a str, lease: Duration, wait: Duration) -> StoreFuture<'a, Lease> {
        Box::pin(async move {
            let key = self.lock_key(name);
            let token = lock_token();
            // Redis holds it at least as long as this process counts (`expires_at_ms` is
            // rounded down); PX 0 would be refused.
            let lease_ms = u64::try_from(lease.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX).max(1);
            let asked_at = acquire(wait, || async {
                let mut connection = self.connection.clone();
                let command = ::redis::cmd("SET").arg(&key).arg(&token).arg("NX").arg("PX").arg(lease_ms).clone();
                match self.run("SET", command.query_async::<Value>(&mut connection)).await {
                    Ok(answer) => Ok(!matches!(answer, Value::Nil)),
                    Err(error) => {
                        self.release_in_background(key.clone(), token.clone());
                        Err(error)
                    }
                }
            })
            .await?;
            Ok(Lease { expires_at_ms: asked_at.saturating_add(millis_floor(lease)), token })
        })
    }

    fn unlock<'a>(&'a self, name: &'a str, lease: Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let key = self.lock_key(name);
            let mut invocation = self.release.key(&key);
            invocation.arg(&lease.token);
            self.run("EVALSHA", invocation.invoke_async::<i64>(&mut connection)).await?;
            Ok(())
        })
    }
}
