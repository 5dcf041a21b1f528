// Mutual exclusion of token requests between tabs sharing a storage: with refresh-token
// rotation, two tabs refreshing the same token at once would revoke the whole grant.
import { WebStorage } from "./storage.js";

const HOLD_MS = 15_000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `fn` holding the lock `name`: Web Locks where present, else a storage-based lock. */
export function withLock(name, storage, fn) {
  const locks = globalThis.navigator?.locks;
  if (typeof locks?.request === "function") return locks.request(name, fn);
  if (storage instanceof WebStorage) return withStorageLock(name, storage, fn);
  return fn();
}

function read(storage, key) {
  try {
    return JSON.parse(storage.get(key) ?? "null");
  } catch {
    return null;
  }
}

/**
 * A lease in the shared storage: write, wait, read back; the writer that reads itself won.
 * A lease expires after HOLD_MS so that a closed tab cannot hold it forever.
 */
export async function withStorageLock(name, storage, fn) {
  const key = `${name}:lock`;
  const me = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  for (;;) {
    const held = read(storage, key);
    if (held === null || held.until < Date.now()) {
      storage.set(key, JSON.stringify({ owner: me, until: Date.now() + HOLD_MS }));
      await sleep(25);
      if (read(storage, key)?.owner === me) break;
    }
    await sleep(40 + Math.random() * 60);
  }
  try {
    return await fn();
  } finally {
    if (read(storage, key)?.owner === me) storage.remove(key);
  }
}
