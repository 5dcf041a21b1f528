// Types of `erpnet-auth/redis`: snapshots and the token lock in Redis (node-redis client).
import type { Lease, SnapshotStorage, SnapshotWrite } from "./index.js";

/** The part of a node-redis client (`redis` package, v5) this store uses. */
export interface RedisCommandClient {
  sendCommand(args: string[], options?: { timeout?: number }): Promise<unknown>;
}

export interface RedisStorageOptions {
  /** Prefix of every key (default `erpnet-auth:`). */
  prefix?: string;
  /** How long a key lives after its last write, ms, or a function of the key (default 30 days; an hour for `ServerAuth`'s `signin:` keys, the outcomes of callbacks). */
  ttlMs?: number | ((key: string) => number);
  /** Each command settles within this, ms (default 2,000): with Redis down, or up and not answering, it fails with `storage_unavailable`. */
  commandTimeoutMs?: number;
}

/**
 * Snapshots in Redis with an atomic compare-and-swap, and a lock per session across every
 * process (`SET NX PX` with a random token, released by compare-and-delete).
 */
export class RedisStorage implements SnapshotStorage {
  constructor(client: RedisCommandClient, options?: RedisStorageOptions);
  readonly shared: true;
  get(key: string): Promise<string | null>;
  set(key: string, value: string, write?: SnapshotWrite): Promise<boolean>;
  remove(key: string): Promise<void>;
  /** Holds the lock `name` for at most `leaseMs`; waits at most `waitMs`, then fails with `lock_timeout`. */
  lock<T>(name: string, fn: (lease: Lease) => Promise<T>, options?: { leaseMs?: number; waitMs?: number }): Promise<T>;
}
