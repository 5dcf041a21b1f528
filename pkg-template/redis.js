// @ts-check
// Servers that outgrow one process (cluster workers, containers behind a load balancer):
// the snapshots and the token-request lock in Redis, through a node-redis client (the
// `redis` package, an optional peer dependency) that the application creates and connects.
//
//   import { createClient } from "redis";
//   import { RedisStorage } from "erpnet-auth/redis";
//   const redis = await createClient({ url, disableOfflineQueue: true, commandsQueueMaxLength: 1_000 }).connect();
//   new ErpNetAuth({ ...options, storage: new RedisStorage(redis), storageKey: `session:${id}` });
//
// The protocol, for every token request: take the lock → read the stored snapshot → hand it
// to the session (newer tokens are adopted, and the refresh may no longer be wanted) →
// refresh → write with compare-and-swap → release. The lock is a lease that outlives the
// token request's deadline: the client aborts its request at that deadline, and refuses to
// send when the lease left would not cover it, so a lease can never expire while a refresh
// it guards may still reach the provider.
import { ErpNetAuthError } from "./client.js";

// KEYS[1] the hash; ARGV: generation, base generation, snapshot, time to live (ms).
const COMPARE_AND_SWAP = `local stored = tonumber(redis.call('HGET', KEYS[1], 'g') or '-1')
if stored > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'g', ARGV[1], 'v', ARGV[3])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1`;
// Deletes the lock only if it is still this holder's (its random token).
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

const HOUR_MS = 3600 * 1000;
const DAY_MS = 24 * HOUR_MS;

/** A session lives 30 days after its last write; the outcome of a callback (`ServerAuth`'s
 * `signin:` keys, kept to answer a repeat without a second code exchange) an hour. */
const defaultTtl = (key) => (key.startsWith("signin:") ? HOUR_MS : 30 * DAY_MS);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function randomToken() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Snapshots in Redis hashes (`g`: generation, `v`: the snapshot), written by one atomic
 * compare-and-swap script, and a lock per session (`SET NX PX` with a random token,
 * released by compare-and-delete). Every command settles within `commandTimeoutMs`: with
 * Redis down, or up and not answering, calls fail with `storage_unavailable` instead of
 * waiting.
 */
export class RedisStorage {
  /**
   * Marks a store shared between processes (client-credentials clients refuse it).
   * @type {true}
   */
  shared = true;
  #client;
  #prefix;
  #ttlMs;
  #timeoutMs;

  /**
   * @param client a connected node-redis client (`createClient(...).connect()`); pass
   *   `disableOfflineQueue: true` to it so that commands fail at once while it reconnects.
   * @param options `prefix` of every key (default `erpnet-auth:`), `ttlMs` how long a key
   *   lives after its last write, a number or a function of the key (default 30 days, an
   *   hour for a callback's outcome), `commandTimeoutMs` (2,000).
   */
  constructor(client, { prefix = "erpnet-auth:", ttlMs = defaultTtl, commandTimeoutMs = 2_000 } = {}) {
    if (typeof client?.sendCommand !== "function") throw new TypeError("RedisStorage needs a node-redis client (the `redis` package)");
    this.#client = client;
    this.#prefix = prefix;
    this.#ttlMs = ttlMs;
    this.#timeoutMs = commandTimeoutMs;
  }

  /**
   * Sends one command; settles within the timeout. node-redis's own `timeout` drops a command
   * still waiting to be written, but one already written waits for its reply however long
   * Redis takes (a Redis that accepts the connection and never answers): the reply is raced
   * against a timer. A reply that comes later is dropped here; what the command did in Redis
   * stays safe (writes are compare-and-swap on the generation, and a lock taken late is let
   * go: see `lock`).
   */
  async #command(args) {
    let reply;
    let timer;
    try {
      reply = this.#client.sendCommand(args, { timeout: this.#timeoutMs });
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(Object.assign(new Error("no reply in time"), { name: "TimeoutError" })), this.#timeoutMs);
      });
      return await Promise.race([reply, late]);
    } catch (error) {
      // The client's message may quote the command (and a snapshot in it): never repeated.
      throw new ErpNetAuthError("storage_unavailable", `Redis did not answer ${args[0]} (${error?.name ?? "error"})`, { cause: error });
    } finally {
      clearTimeout(timer);
      // A reply abandoned above may still fail (the connection closes): nobody waits for it.
      reply?.catch?.(() => {});
    }
  }

  /** Sends the release of `key` if held by `token`; nothing waits for it. */
  #releaseLater(key, token) {
    try {
      this.#client.sendCommand(["EVAL", RELEASE, "1", key, token])?.catch?.(() => {});
    } catch {
      // No connection: the lease runs out by itself.
    }
  }

  async get(key) {
    return (await this.#command(["HGET", this.#prefix + key, "v"])) ?? null;
  }

  /** Writes with compare-and-swap when `write` is given; `false` when a newer state is stored. */
  async set(key, value, write) {
    const lifetime = typeof this.#ttlMs === "function" ? this.#ttlMs(key) : this.#ttlMs;
    const ttl = String(Math.max(0, Math.floor(lifetime)));
    const base = write === undefined ? String(Number.MAX_SAFE_INTEGER) : String(write.baseGeneration);
    const generation = write === undefined ? "0" : String(write.generation);
    const written = await this.#command(["EVAL", COMPARE_AND_SWAP, "1", this.#prefix + key, generation, base, value, ttl]);
    return Number(written) === 1;
  }

  async remove(key) {
    await this.#command(["DEL", this.#prefix + key]);
  }

  /**
   * Runs `fn(lease)` holding the lock `name` across every process on this Redis: a lease of
   * `leaseMs`, `lease.expiresAt` its end on this process's clock (counted from before the
   * lock was asked for, so never later than Redis's). Waits at most `waitMs` (default: the
   * lease, the longest a holder can keep it, plus a second), then fails with `lock_timeout`.
   */
  async lock(name, fn, { leaseMs = 65_000, waitMs = leaseMs + 1_000 } = {}) {
    const key = `${this.#prefix}lock:${name}`;
    const token = randomToken();
    const giveUpAt = Date.now() + waitMs;
    let delay = 5;
    for (;;) {
      const askedAt = Date.now();
      let taken;
      try {
        taken = await this.#command(["SET", key, token, "NX", "PX", String(Math.ceil(leaseMs))]);
      } catch (error) {
        // The SET may still reach Redis after this gave up, and take the lock for a whole
        // lease nobody uses: the release goes out behind it on the same connection, where
        // Redis runs commands in order, and lets it go.
        this.#releaseLater(key, token);
        throw error;
      }
      if (taken === "OK") {
        try {
          return await fn({ expiresAt: askedAt + leaseMs });
        } finally {
          // A failed release only leaves the lease to run out.
          await this.#command(["EVAL", RELEASE, "1", key, token]).catch(() => {});
        }
      }
      if (Date.now() + delay > giveUpAt) {
        throw new ErpNetAuthError("lock_timeout", `the token lock ${name} stayed taken for ${waitMs} ms`);
      }
      await sleep(delay + Math.random() * delay);
      delay = Math.min(delay * 2, 200);
    }
  }
}
