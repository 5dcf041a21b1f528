// @ts-check
// Snapshot storage. Anything with get/set/remove (sync or async) works: a server backs it
// with its session store, one key per user session.
//
// Writes are compare-and-swap: `set(key, value, { generation, baseGeneration })` writes
// only while the stored generation is not above `baseGeneration` (the state the new one was
// derived from) and returns `false` when it refused, because another client changed the
// tokens meanwhile; the client then adopts the stored snapshot.

/** The generation a stored snapshot carries: -1 when nothing is stored, 0 when it has none. */
export function storedGeneration(value) {
  if (typeof value !== "string") return -1;
  try {
    const generation = JSON.parse(value)?.generation;
    return Number.isSafeInteger(generation) ? generation : 0;
  } catch {
    return 0;
  }
}

/** Whether a write based on `write.baseGeneration` may replace `stored`. */
export function mayReplace(stored, write) {
  return write === undefined || storedGeneration(stored) <= write.baseGeneration;
}

/** Keeps the snapshot in memory (the default): lost when the process or page ends. */
export class MemoryStorage {
  // key -> { value, generation }: the generation kept beside the value, so that a write
  // compares without parsing the stored snapshot.
  #entries = new Map();

  get(key) {
    return this.#entries.get(key)?.value ?? null;
  }

  set(key, value, write) {
    const stored = this.#entries.get(key);
    if (write !== undefined && stored !== undefined && stored.generation > write.baseGeneration) return false;
    this.#entries.set(key, { value, generation: write?.generation ?? storedGeneration(value) });
    return true;
  }

  remove(key) {
    this.#entries.delete(key);
  }
}

/**
 * Browsers: `localStorage` (shared by the tabs of an origin, survives restarts) or
 * `sessionStorage` (one tab, survives reloads). Tabs sharing it pick up each other's
 * renewed tokens through the `storage` event.
 */
export class WebStorage {
  #area;

  constructor(area = globalThis.localStorage) {
    if (!area) throw new TypeError("WebStorage needs localStorage or sessionStorage");
    this.#area = area;
  }

  get(key) {
    return this.#area.getItem(key);
  }

  // Not atomic across tabs by itself: tabs write inside the token lock (Web Locks).
  set(key, value, write) {
    if (!mayReplace(this.#area.getItem(key), write)) return false;
    this.#area.setItem(key, value);
    return true;
  }

  remove(key) {
    this.#area.removeItem(key);
  }

  /** Calls `listener(newValue)` when another tab changes `key`. Returns the unsubscribe. */
  subscribe(key, listener) {
    if (typeof globalThis.addEventListener !== "function") return () => {};
    const onStorage = (event) => {
      if (event.storageArea === this.#area && event.key === key) listener(event.newValue);
    };
    globalThis.addEventListener("storage", onStorage);
    return () => globalThis.removeEventListener("storage", onStorage);
  }
}

/**
 * Browsers, several tabs: the snapshot in IndexedDB. A write resolves once its transaction
 * has committed, so a tab that takes the renewal lock after another released it reads the
 * other's tokens — localStorage gives no such order (Chromium hands other tabs its writes
 * asynchronously), and two tabs could then refresh one rotating refresh token twice.
 * Other tabs hear of changes through a BroadcastChannel.
 */
export class IndexedDbStorage {
  #name;
  /** @type {Promise<IDBDatabase> | null} */
  #db = null;
  /** @type {BroadcastChannel | null} */
  #channel = null;

  constructor(name = "erpnet-auth") {
    if (!globalThis.indexedDB) throw new TypeError("IndexedDbStorage needs IndexedDB (a browser)");
    this.#name = name;
  }

  #open() {
    this.#db ??= new Promise((resolve, reject) => {
      const request = indexedDB.open(this.#name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore("snapshots");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    return this.#db;
  }

  async #run(mode, operation) {
    const db = await this.#open();
    return new Promise((resolve, reject) => {
      const transaction = db.transaction("snapshots", mode);
      let result;
      operation(transaction.objectStore("snapshots"), (value) => (result = value));
      transaction.oncomplete = () => resolve(result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  }

  async get(key) {
    const value = await this.#run("readonly", (store, done) => {
      const request = store.get(key);
      request.onsuccess = () => done(request.result);
    });
    return value ?? null;
  }

  /** Compare and write in one transaction: atomic across tabs. */
  async set(key, value, write) {
    const written = await this.#run("readwrite", (store, done) => {
      const current = store.get(key);
      current.onsuccess = () => {
        if (!mayReplace(current.result, write)) return done(false);
        store.put(value, key);
        done(true);
      };
    });
    if (written) this.#notify(key, value);
    return written;
  }

  async remove(key) {
    await this.#run("readwrite", (store) => store.delete(key));
    this.#notify(key, null);
  }

  // One channel for sending and hearing: a BroadcastChannel does not receive its own
  // messages, so a client never hears its own writes back. (With a second channel object it
  // did, out of order: an older write of its own arriving after a newer one was adopted as
  // "another tab's" and rolled the session back.)
  #channelFor() {
    if (typeof BroadcastChannel === "undefined") return null;
    this.#channel ??= new BroadcastChannel(`erpnet-auth:${this.#name}`);
    return this.#channel;
  }

  #notify(key, value) {
    this.#channelFor()?.postMessage({ key, value });
  }

  /** Calls `listener(newValue)` when another tab changes `key`. Returns the unsubscribe. */
  subscribe(key, listener) {
    const channel = this.#channelFor();
    if (!channel) return () => {};
    const onMessage = (event) => {
      if (event.data?.key === key) listener(event.data.value);
    };
    channel.addEventListener("message", onMessage);
    return () => channel.removeEventListener("message", onMessage);
  }
}
