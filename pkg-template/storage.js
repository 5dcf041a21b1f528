// Snapshot storage. Anything with get/set/remove (sync or async) works: a server backs it
// with its session store, one key per user session.

/** Keeps the snapshot in memory (the default): lost when the process or page ends. */
export class MemoryStorage {
  #values = new Map();

  get(key) {
    return this.#values.get(key) ?? null;
  }

  set(key, value) {
    this.#values.set(key, value);
  }

  remove(key) {
    this.#values.delete(key);
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

  set(key, value) {
    this.#area.setItem(key, value);
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
  #db = null;
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
      const request = operation(transaction.objectStore("snapshots"));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
      transaction.onabort = () => reject(transaction.error);
    });
  }

  async get(key) {
    return (await this.#run("readonly", (store) => store.get(key))) ?? null;
  }

  async set(key, value) {
    await this.#run("readwrite", (store) => store.put(value, key));
    this.#notify(key, value);
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
