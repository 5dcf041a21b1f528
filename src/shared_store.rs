//! The layout of a session store that several processes share, for every driver of this
//! crate: the keys, the fields and the Redis scripts. Constants and key names only, no IO.
//!
//! It is byte for byte the layout of the npm package's `RedisStorage`, so a Node process and
//! a Rust process can serve one user's session together (a test of this crate compares it
//! with the package's source):
//!
//! * the snapshot of session `key` is the hash [`snapshot_key`]`(prefix, key)` =
//!   `{prefix}{key}`, with the fields [`GENERATION_FIELD`] (`g`, the stored generation) and
//!   [`SNAPSHOT_FIELD`] (`v`, the snapshot's JSON); it is written only by
//!   [`COMPARE_AND_SWAP_SCRIPT`], and read with `HGET {prefix}{key} v`;
//! * a lock `name` is the string key [`lock_key`]`(prefix, name)` = `{prefix}lock:{name}`,
//!   taken with `SET … {random token} NX PX {lease ms}` and released with
//!   [`RELEASE_SCRIPT`] (only by its holder);
//! * the lock that guards session `key`'s token requests is named
//!   [`token_lock_name`]`(key)` = `{key}:token`, and leased for
//!   [`Session::token_lease_ms`](crate::Session::token_lease_ms);
//! * keys live [`default_ttl_ms`] after their last write unless configured otherwise.
//!
//! [`DEFAULT_PREFIX`] is `erpnet-auth:`.

pub use crate::session::TOKEN_LEASE_MARGIN_MS;

/// The prefix of every key unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "erpnet-auth:";

/// The snapshot hash's field holding the stored generation (a decimal integer).
pub const GENERATION_FIELD: &str = "g";

/// The snapshot hash's field holding the snapshot ([`Snapshot::to_json`](crate::Snapshot::to_json)).
pub const SNAPSHOT_FIELD: &str = "v";

/// Writes a snapshot unless the stored one is newer than the one it was derived from.
///
/// `KEYS[1]`: the hash ([`snapshot_key`]). `ARGV`: the snapshot's
/// [`generation`](crate::Snapshot::generation), its
/// [`base_generation`](crate::Snapshot::base_generation), its JSON, and the key's time to
/// live in milliseconds (`0`: no expiry set). Returns `1` when written, `0` when refused. An
/// unconditional write passes generation `0` and base [`UNCONDITIONAL_BASE_GENERATION`].
pub const COMPARE_AND_SWAP_SCRIPT: &str = "local stored = tonumber(redis.call('HGET', KEYS[1], 'g') or '-1')
if stored > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'g', ARGV[1], 'v', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1";

/// Deletes a lock only if it still holds this holder's token, so a holder whose lease ran
/// out cannot release the next holder's lock. `KEYS[1]`: the lock ([`lock_key`]); `ARGV[1]`:
/// the random token it was taken with. Returns the number of keys deleted.
pub const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// The base generation of an unconditional write (JavaScript's `Number.MAX_SAFE_INTEGER`,
/// what the npm package passes): no stored generation is above it.
pub const UNCONDITIONAL_BASE_GENERATION: u64 = 9_007_199_254_740_991;

/// How long a session's key lives after its last write by default: 30 days.
pub const SESSION_TTL_MS: u64 = 30 * 24 * 3_600_000;

/// The key prefix (after the store's own prefix) of a server's sign-ins not completed yet.
pub const SIGN_IN_KEY_PREFIX: &str = "signin:";

/// How long a sign-in not completed lives by default: an hour (the provider's callback comes
/// within minutes or never).
pub const SIGN_IN_TTL_MS: u64 = 3_600_000;

/// The hash holding session `key`'s snapshot: `{prefix}{key}`.
pub fn snapshot_key(prefix: &str, key: &str) -> String {
    format!("{prefix}{key}")
}

/// The string key of lock `name`: `{prefix}lock:{name}`.
pub fn lock_key(prefix: &str, name: &str) -> String {
    format!("{prefix}lock:{name}")
}

/// The name of the lock that guards session `key`'s token requests: `{key}:token`.
pub fn token_lock_name(key: &str) -> String {
    format!("{key}:token")
}

/// The default time to live of `key` (as given to the store, before the prefix):
/// [`SIGN_IN_TTL_MS`] for a sign-in not completed ([`SIGN_IN_KEY_PREFIX`]), else
/// [`SESSION_TTL_MS`].
pub fn default_ttl_ms(key: &str) -> u64 {
    if key.starts_with(SIGN_IN_KEY_PREFIX) {
        SIGN_IN_TTL_MS
    } else {
        SESSION_TTL_MS
    }
}
