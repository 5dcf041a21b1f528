// @ts-check
// Mutual exclusion of token requests between clients sharing a stored session: with
// refresh-token rotation, two clients refreshing the same token at once would revoke the
// whole grant.
//
// Browsers: the Web Locks API, which excludes across the tabs of an origin. Elsewhere (Node,
// Deno, Bun, workers without Web Locks): a lock inside this JavaScript realm, which excludes
// the clients of one process. Several processes sharing a store need a distributed lock,
// passed as the `lock` option. A storage-lease fallback for browsers without Web Locks was
// removed: with the delays of storage events it did not exclude (two tabs held it at once),
// and every current browser has Web Locks.

/** @type {Map<string, Promise<unknown>>} */
const tails = new Map();

/**
 * Runs `fn` holding the lock `name` inside this process (or realm).
 * @template T
 * @param {string} name
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
export async function withProcessLock(name, fn) {
  const previous = tails.get(name) ?? Promise.resolve();
  /** @type {(value?: unknown) => void} */
  let release = () => {};
  const mine = new Promise((resolve) => (release = resolve));
  const tail = previous.then(() => mine);
  tails.set(name, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (tails.get(name) === tail) tails.delete(name);
  }
}

/**
 * Runs `fn` holding the lock `name`: Web Locks where present, else the in-process lock.
 * @template T
 * @param {string} name
 * @param {import("./index.js").SnapshotStorage} _storage
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
export function withLock(name, _storage, fn) {
  const locks = globalThis.navigator?.locks;
  // The Web Locks request settles with what `fn`'s promise settles with.
  if (typeof locks?.request === "function") return /** @type {Promise<T>} */ (/** @type {unknown} */ (locks.request(name, fn)));
  return withProcessLock(name, fn);
}
