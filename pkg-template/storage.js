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
