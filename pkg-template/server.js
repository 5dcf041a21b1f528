// @ts-check
// A server entry that is safe by default, on the web `Request`/`Response` types (Next.js
// route handlers, Hono, Deno, Bun, Cloudflare Workers; Express and node:http through
// `toWebRequest` / `sendWebResponse` / `forwardResponse` below). The browser holds cookies,
// never a token (the backend-for-frontend pattern of the browser-apps BCP):
//
// - the cookies are `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` with the `__Host-`
//   prefix unless the application runs on plain-HTTP loopback (development);
// - nothing is kept on the server for a visitor before the callback succeeds: the pending
//   sign-in (state, nonce, PKCE verifier) rides in a short-lived cookie sealed with AES-GCM
//   under the application's key, so a flood of `/login` costs no memory and no store key;
// - the session id is made when a sign-in completes (session fixation: no id known before
//   it is worth anything), and the cookie is parsed exactly (`notsid=X` is not `sid=X`);
// - a cross-site `/login` changes nothing of a signed-in session; the sign-in that completes
//   ends the one it replaces (revoked, removed); a forged callback (wrong `state`) leaves the
//   sign-in in progress alone; one authorization response is exchanged once, however often
//   it arrives;
// - sign-out is POST only, from the application's own origin (CSRF);
// - the entry answers its own failures (store, provider) with a plain `{code, message}`;
// - clients idle for `idleMs` are dropped from memory (their session stays in the store and
//   is reloaded on the next request); at most `maxSessionsInMemory` are kept;
// - the provider is discovered once per process (a `SharedProvider`), not per user.
import { ErpNetAuth, ErpNetAuthError, SharedProvider } from "./client.js";
import { MemoryStorage } from "./storage.js";
import { withLock } from "./lock.js";

const ID_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);
// RFC 6265 §4.1.1: a cookie name is an HTTP token.
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// The sealing key is derived for this one purpose, and the cookie's format says its version.
const SEAL_PURPOSE = "erpnet-auth/server pending sign-in v1";
const SEAL_PREFIX = "v1.";
// The core's default `timing.callbackMaxAgeMs`: a sign-in cookie lives no longer than the
// core would accept its callback.
const DEFAULT_SIGN_IN_MAX_AGE_MS = 15 * 60_000;
// Answers of callbacks whose state matched, kept to answer a repeat without a second code
// exchange; each one took a token request, so this bound is reached only by real traffic.
const MAX_REMEMBERED_CALLBACKS = 10_000;
const UTF8_ENCODER = new TextEncoder();
const UTF8_DECODER = new TextDecoder();

function base64url(bytes) {
  let binary = "";
  for (let at = 0; at < bytes.length; at += 0x8000) binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function fromBase64url(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  try {
    const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

/** 32 random bytes, base64url: a session id nobody can guess. */
function newSessionId() {
  return base64url(crypto.getRandomValues(new Uint8Array(32)));
}

async function sha256Hex(text) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", UTF8_ENCODER.encode(text)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A handle for a session in events and logs: the id's hash, cut short; never the id. */
async function sessionHandle(id) {
  return (await sha256Hex(`erpnet-auth session handle\n${id}`)).slice(0, 16);
}

/** The value of cookie `name` in a `Cookie` header: exact name, first occurrence. */
export function readCookie(header, name) {
  for (const part of (header ?? "").split(";")) {
    const at = part.indexOf("=");
    if (at < 0) continue;
    if (part.slice(0, at).trim() === name) return part.slice(at + 1).trim();
  }
  return undefined;
}

const redirect = (location, cookies = []) => {
  const headers = new Headers({ location, "cache-control": "no-store" });
  for (const cookie of cookies) headers.append("set-cookie", cookie);
  return new Response(null, { status: 302, headers });
};

const words = (code) => code.replaceAll("_", " ");

const problem = (status, code, message, cookies = []) => {
  const headers = new Headers({ "content-type": "application/json", "cache-control": "no-store" });
  for (const cookie of cookies) headers.append("set-cookie", cookie);
  return new Response(JSON.stringify({ code, message }), { status, headers });
};

// How the server entry's own failures and an API call's errors map to HTTP.
const STATUS_OF = {
  not_signed_in: 401,
  sign_in_required: 401,
  storage_unavailable: 503,
  lock_timeout: 503,
  lock_lease_short: 503,
  renewal_unavailable: 503,
  provider_unavailable: 503,
  closed: 503,
  transport: 502,
  timeout: 502,
  connect: 502,
  interrupted: 502,
  malformed_response: 502,
  renewal_refused: 502,
  body_too_large: 413,
};

/**
 * The error as an `ErpNetAuthError` (anything else is `internal`, its text not repeated).
 * @param {unknown} error
 * @param {import("./index.js").ErrorCode} [fallback]
 * @returns {ErpNetAuthError}
 */
function typed(error, fallback = "internal") {
  if (error instanceof ErpNetAuthError) return error;
  return new ErpNetAuthError(fallback, words(fallback), { cause: error });
}

/** A standard OAuth error code, or nothing: the only provider text a plain answer repeats. */
const oauthCode = (value) => (typeof value === "string" && /^[\w.-]{1,64}$/.test(value) ? value : undefined);

/**
 * A plain answer for `error`: `{code, message}` as JSON, the status from the code (401 for
 * `not_signed_in` and `sign_in_required`, 503 for a store that is down, 502 for a provider
 * or API that failed, 500 otherwise). No stack, no path, no text of a cause.
 */
export function errorResponse(error) {
  const failure = typed(error);
  const code = failure.code;
  const status = STATUS_OF[code] ?? (code.startsWith("discovery_") ? 502 : 500);
  const oauthError = oauthCode(failure.oauthError);
  return problem(status, code, oauthError ? `${words(code)}: ${oauthError}` : words(code));
}

/** The key material of `cookieKey` (32 random bytes when none is given). */
function keyMaterial(cookieKey) {
  if (cookieKey === undefined || cookieKey === null) return crypto.getRandomValues(new Uint8Array(32));
  if (typeof cookieKey === "string") {
    if (cookieKey.length >= 32) return UTF8_ENCODER.encode(cookieKey);
  } else if (cookieKey instanceof ArrayBuffer || ArrayBuffer.isView(cookieKey)) {
    const bytes = cookieKey instanceof ArrayBuffer ? new Uint8Array(cookieKey) : new Uint8Array(cookieKey.buffer, cookieKey.byteOffset, cookieKey.byteLength);
    if (bytes.length >= 32) return bytes.slice();
  }
  throw new ErpNetAuthError("invalid_config", "cookieKey must be at least 32 random bytes (a string of 32 characters or more, e.g. `openssl rand -base64 32`, or bytes)");
}

const isFunction = (value) => typeof value === "function";

/** Checks an `afterSignIn` / `afterSignOut` target: a path of this application or an http(s) URL. */
function checkTarget(name, value) {
  if (typeof value === "string") {
    if (value.startsWith("/") && !value.startsWith("//") && !value.startsWith("/\\")) return value;
    try {
      const url = new URL(value);
      if (url.protocol === "https:" || url.protocol === "http:") return value;
    } catch {
      // falls through to the refusal
    }
  }
  throw new ErpNetAuthError("invalid_config", `${name} must be a path of the application ("/…") or an http(s) URL`);
}

/** Whether `url` may carry a browser back to this application: https, or http on loopback. */
const servedSafely = (url) => url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK.has(url.hostname));

/** @typedef {{ auth: ErpNetAuth, lastUsed: number, active: number }} SessionEntry a signed-in client in memory */

/**
 * Sign-in, callback, sign-out and API calls for the users of a server application, one
 * session per browser, kept in `storage` (a `RedisStorage` for several processes).
 */
export class ServerAuth {
  /** @type {import("./index.js").ClientOptions} */
  #options;
  /** @type {import("./index.js").SnapshotStorage} */
  #storage;
  #cookieName;
  #signInCookieName;
  #secure;
  #appOrigin;
  #afterSignIn;
  #afterSignOut;
  #idleMs;
  #maxInMemory;
  #signInMaxAgeMs;
  #sealingKey;
  #sealingData;
  /** @type {import("./server.js").ServerLogger | undefined} */
  #logger;
  /** @type {() => number} */
  #now;
  /** @type {import("./index.js").TokenLock} */
  #lock;
  /** @type {Map<string, Set<(event: any) => void>>} */
  #listeners = new Map();
  /** @type {Map<string, SessionEntry>} id -> its client */
  #clients = new Map();
  #provider;
  /** @type {import("./index.js").DriverOptions} */
  #driver;
  /** @type {Map<string, Promise<SessionEntry>>} id -> its load, while a session loads from the store */
  #loading = new Map();
  /** @type {Map<string, { outcome: Promise<any>, settled: boolean, until: number }>} hash of (sealed sign-in, state) -> its exchange */
  #callbacks = new Map();
  /** @type {{ auth: ErpNetAuth, storage: MemoryStorage } | null} the one client that starts every sign-in */
  #starter = null;
  #starting = Promise.resolve(); // the turn of the sign-in being started
  /** @type {ReturnType<typeof setInterval> | undefined} */
  #sweeper;

  /**
   * @param {import("./server.js").ServerAuthOptions} options the client's options
   *   (`instance`, `clientId`, `clientSecret`, `redirectUri`, …) plus the helper's own.
   *   Every option is checked here: a mistake is an `ErpNetAuthError` at construction.
   */
  constructor(options) {
    if (options === null || typeof options !== "object") throw new ErpNetAuthError("invalid_config", "ServerAuth takes an options object");
    const { storage, cookieName, cookieKey, appOrigin, afterSignIn = "/", afterSignOut = "/", idleMs = 5 * 60_000, maxSessionsInMemory = 10_000, logger, fetch, now, lock, verifySignature, ...client } = options;
    if (client.clientCredentials || client.referenceToken !== undefined) {
      throw new ErpNetAuthError("invalid_config", "ServerAuth signs users in; a client-credentials or reference-token client is an ErpNetAuth of its own, one per process");
    }
    // An unset secret (a missing ERP_SECRET) would make a public client that fails only at the
    // first callback with invalid_client: a public client is asked for by name.
    const secret = client.clientSecret;
    if ((secret === undefined || secret === null || secret === "") && client.clientAuth !== "none") {
      throw new ErpNetAuthError("missing_setting", 'ServerAuth needs clientSecret (a confidential client); a public client says clientAuth: "none"');
    }
    if (client.redirectUri === undefined || client.redirectUri === null) throw new ErpNetAuthError("missing_setting", "ServerAuth needs redirectUri");
    // A form_post callback is a cross-site POST: the SameSite=Lax cookie that ties it to its
    // sign-in does not come with it.
    if (client.responseMode === "form_post") {
      throw new ErpNetAuthError("invalid_config", "ServerAuth receives the code in the query (responseMode \"query\"): a form_post callback arrives without the SameSite=Lax cookies");
    }
    let redirectUri;
    try {
      redirectUri = new URL(client.redirectUri);
    } catch {
      throw new ErpNetAuthError("invalid_config", "redirectUri is not an absolute URL");
    }
    if (!servedSafely(redirectUri)) throw new ErpNetAuthError("insecure_url", "redirectUri must be https (plain http only on loopback, for development)");
    let app;
    try {
      app = new URL(appOrigin ?? redirectUri.origin);
    } catch {
      throw new ErpNetAuthError("invalid_config", "appOrigin is not an origin (scheme://host[:port])");
    }
    if (appOrigin !== undefined && (typeof appOrigin !== "string" || appOrigin.replace(/\/$/, "") !== app.origin)) {
      throw new ErpNetAuthError("invalid_config", "appOrigin is an origin only (scheme://host[:port]), without a path");
    }
    if (!servedSafely(app)) throw new ErpNetAuthError("insecure_url", "the application must be served over HTTPS (plain HTTP only on loopback, for development)");
    this.#appOrigin = app.origin;
    this.#secure = app.protocol === "https:";
    if (cookieName !== undefined && (typeof cookieName !== "string" || !COOKIE_NAME.test(cookieName))) {
      throw new ErpNetAuthError("invalid_config", "cookieName must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)");
    }
    this.#cookieName = cookieName ?? (this.#secure ? "__Host-erpnet-session" : "erpnet-session");
    if (this.#cookieName.startsWith("__Host-") && !this.#secure) throw new ErpNetAuthError("invalid_config", "a __Host- cookie needs HTTPS");
    this.#signInCookieName = `${this.#cookieName}-signin`;
    if (storage !== undefined && (storage === null || typeof storage !== "object" || ![storage.get, storage.set, storage.remove].every(isFunction))) {
      throw new ErpNetAuthError("invalid_config", "storage must have get, set and remove (a MemoryStorage, a RedisStorage, …)");
    }
    // A sign-in started on one process may come back to another: they must open each
    // other's sign-in cookies.
    if (storage?.shared && (cookieKey === undefined || cookieKey === null)) {
      throw new ErpNetAuthError("missing_setting", "a store shared by several processes needs the same cookieKey in each (it seals the sign-in cookie)");
    }
    this.#afterSignIn = checkTarget("afterSignIn", afterSignIn);
    this.#afterSignOut = checkTarget("afterSignOut", afterSignOut);
    if (typeof idleMs !== "number" || !(idleMs > 0) || !Number.isFinite(idleMs)) throw new ErpNetAuthError("invalid_config", "idleMs must be a positive number of milliseconds");
    if (!Number.isSafeInteger(maxSessionsInMemory) || maxSessionsInMemory < 1) throw new ErpNetAuthError("invalid_config", "maxSessionsInMemory must be a whole number, at least 1");
    if (logger !== undefined && !isFunction(logger) && !(logger !== null && typeof logger === "object" && ["debug", "info", "warn", "error", "log"].some((m) => isFunction(logger[m])))) {
      throw new ErpNetAuthError("invalid_config", "logger must be a function of a record, or an object with info/warn/error (console, pino, …)");
    }
    for (const [name, value] of Object.entries({ fetch, now, lock, verifySignature })) {
      if (value !== undefined && !isFunction(value)) throw new ErpNetAuthError("invalid_config", `${name} must be a function`);
    }
    const material = keyMaterial(cookieKey);

    this.#options = /** @type {import("./index.js").ClientOptions} */ (client);
    this.#storage = storage ?? new MemoryStorage();
    this.#idleMs = idleMs;
    this.#maxInMemory = maxSessionsInMemory;
    this.#logger = logger;
    this.#now = now ?? Date.now;
    this.#lock = lock ?? (isFunction(this.#storage.lock) ? (name, fn, lockOptions) => /** @type {Required<import("./index.js").SnapshotStorage>} */ (this.#storage).lock(name, fn, lockOptions) : (name, fn) => withLock(name, this.#storage, fn));
    // What each client's driver takes besides the shared provider (the core never sees these).
    this.#driver = Object.fromEntries(Object.entries({ fetch, now, verifySignature }).filter(([, v]) => v !== undefined));
    const callbackMaxAgeMs = client.timing?.callbackMaxAgeMs;
    this.#signInMaxAgeMs = typeof callbackMaxAgeMs === "number" && Number.isSafeInteger(callbackMaxAgeMs) && callbackMaxAgeMs > 0 ? callbackMaxAgeMs : DEFAULT_SIGN_IN_MAX_AGE_MS;
    this.#sealingData = UTF8_ENCODER.encode(`${SEAL_PURPOSE}\n${this.#signInCookieName}`);
    this.#sealingKey = crypto.subtle
      .importKey("raw", material, "HKDF", false, ["deriveKey"])
      .then((base) => crypto.subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: UTF8_ENCODER.encode(SEAL_PURPOSE) }, base, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]));
    // Read by the core here, so that a wrong option fails now rather than at the first /login.
    try {
      this.#provider = new SharedProvider(this.#options);
    } catch (error) {
      if (error instanceof ErpNetAuthError) throw error;
      if (typeof error?.code === "string") throw new ErpNetAuthError(error.code, String(error.message ?? error.code), { cause: error });
      throw new ErpNetAuthError("not_initialized", "the WebAssembly is not loaded: `await init()` before creating a ServerAuth", { cause: error });
    }
  }

  /** The session cookie's name (`__Host-erpnet-session` over HTTPS). */
  get cookieName() {
    return this.#cookieName;
  }

  /** How many signed-in clients are in memory now (idle ones are dropped). */
  get sessionsInMemory() {
    return this.#clients.size;
  }

  /**
   * Subscribes to the session events of every client this object runs (`signedIn`,
   * `tokensRenewed`, `renewalDeferred`, `signInRequired`, `callReplayed`, `lockWait`,
   * `storageConflict`, `error`, …, or `*`), each with `session`: a short hash of the
   * session's id, never the id. Returns the unsubscribe.
   */
  on(type, listener) {
    let listeners = this.#listeners.get(type);
    if (!listeners) this.#listeners.set(type, (listeners = new Set()));
    listeners.add(listener);
    return () => this.#listeners.get(type)?.delete(listener);
  }

  #emit(event) {
    for (const key of [event.type, "*"]) {
      for (const listener of this.#listeners.get(key) ?? []) {
        try {
          listener(event);
        } catch (error) {
          queueMicrotask(() => {
            throw error;
          });
        }
      }
    }
  }

  /** One structured record for the logger: named fields only, never a secret. */
  #log(level, event, fields = {}) {
    const logger = this.#logger;
    if (logger === undefined) return;
    const record = { level, event };
    for (const [name, value] of Object.entries(fields)) if (value !== undefined) record[name] = value;
    try {
      if (typeof logger === "function") logger(/** @type {import("./server.js").ServerLogRecord} */ (record));
      else (logger[level] ?? logger.log)?.call(logger, record);
    } catch {
      // A logger that fails never fails a request.
    }
  }

  /** A session event: to the listeners, and as a log record with the fields that say what happened. */
  #relay(event, session) {
    if (this.#listeners.size > 0) this.#emit(session === undefined ? event : { ...event, session });
    if (this.#logger === undefined) return;
    const info = event.error ?? event.reason;
    const why = info ? { code: info.code, detail: info.detail, oauthError: oauthCode(info.oauthError), status: info.status } : {};
    switch (event.type) {
      case "signedIn":
        return this.#log("info", "signedIn", { session, scope: event.scope, expiresAt: event.expiresAt });
      case "tokensRenewed":
        return this.#log("info", "tokensRenewed", { session, expiresAt: event.expiresAt });
      case "signedOut":
        return this.#log("info", "signedOut", { session });
      case "storageConflict":
        return this.#log("info", "storageConflict", { session, generation: event.generation });
      // An API answer discarded because the call is sent again: a 401's replay, a 429's retry.
      case "callReplayed":
        return this.#log("info", event.status === 429 ? "throttled" : "replayed", { session, status: event.status });
      case "lockWait":
        return this.#log("debug", "lockWait", { session, waitedMs: event.waitedMs });
      case "renewalDeferred":
        return this.#log("warn", "renewalDeferred", { session, ...why, attempt: event.attempt, retryAt: event.retryAt });
      case "signInFailed":
      case "renewalFailed":
      case "signInRequired":
      case "callFailed":
      case "storageDiscarded":
        return this.#log("warn", event.type, { session, ...why });
      case "discoveryFailed":
      case "storageError":
      case "error":
        return this.#log("error", event.type, { session, ...why });
      case "warning":
        return this.#log("warn", "warning", { session, code: event.code });
      case "providerReady":
        return this.#log("debug", "providerReady", { discovered: event.discovered });
      default:
        return undefined;
    }
  }

  // Every client shares the one provider: options parsed once, the provider discovered once
  // and held once in memory; the users' snapshots hold only their own state.
  #client(storage, key, session, ownLock = true) {
    const driver = ownLock ? { ...this.#driver, lock: this.#lock } : this.#driver;
    const auth = new ErpNetAuth({ ...driver, provider: this.#provider, storage, storageKey: key });
    auth.on("*", (event) => this.#relay(event, session));
    return auth;
  }

  #cookie(name, value, maxAgeSeconds) {
    const attributes = [`${name}=${value}`, "Path=/", "HttpOnly", "SameSite=Lax"];
    if (this.#secure) attributes.push("Secure");
    if (maxAgeSeconds !== undefined) attributes.push(`Max-Age=${maxAgeSeconds}`);
    return attributes.join("; ");
  }

  #idFrom(request) {
    const value = readCookie(request.headers.get("cookie"), this.#cookieName);
    return value !== undefined && ID_PATTERN.test(value) ? value : undefined;
  }

  /** A store operation; whatever a custom store throws comes out as `storage_unavailable`. */
  async #store(operation, ...args) {
    try {
      return await this.#storage[operation](...args);
    } catch (error) {
      throw typed(error, "storage_unavailable");
    }
  }

  /** The pending sign-in `snapshot`, sealed for the browser: AES-GCM under the application's key. */
  async #seal(snapshot) {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const plain = UTF8_ENCODER.encode(`${this.#now() + this.#signInMaxAgeMs}\n${snapshot}`);
    const sealed = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: this.#sealingData }, await this.#sealingKey, plain));
    const bytes = new Uint8Array(iv.length + sealed.length);
    bytes.set(iv);
    bytes.set(sealed, iv.length);
    return SEAL_PREFIX + base64url(bytes);
  }

  /** The pending sign-in a sealed cookie holds, or undefined (forged, another key's, expired). */
  async #open(value) {
    // A real one is well under 2 KB; anything much longer is not worth decrypting.
    if (value === undefined || !value.startsWith(SEAL_PREFIX) || value.length > 8_192) return undefined;
    const bytes = fromBase64url(value.slice(SEAL_PREFIX.length));
    if (bytes === null || bytes.length < 12 + 16) return undefined;
    let plain;
    try {
      plain = UTF8_DECODER.decode(await crypto.subtle.decrypt({ name: "AES-GCM", iv: bytes.subarray(0, 12), additionalData: this.#sealingData }, await this.#sealingKey, bytes.subarray(12)));
    } catch {
      return undefined;
    }
    const newline = plain.indexOf("\n");
    const expiresAt = Number(plain.slice(0, newline));
    if (newline < 0 || !(expiresAt > this.#now())) return undefined;
    return plain.slice(newline + 1);
  }

  /**
   * The signed-in client of session `id`, reloaded from the store if needed; else undefined.
   * With `hold`, it is marked in use before anything else can run (no eviction closes it
   * under the caller, who releases it).
   */
  async #signedIn(id, hold = false) {
    if (id === undefined) return undefined;
    const key = `session:${id}`;
    // Each request checks the store: a sign-out on another process removed the session.
    if ((await this.#store("get", key)) === null) {
      this.#drop(id);
      return undefined;
    }
    // Concurrent first requests of one session share one load: one client per session in
    // this process, so that its calls share one renewal.
    let entry = this.#clients.get(id);
    if (!entry) {
      let loading = this.#loading.get(id);
      if (!loading) {
        loading = this.#load(id, key).finally(() => this.#loading.delete(id));
        this.#loading.set(id, loading);
      }
      entry = await loading;
    }
    entry.lastUsed = Date.now();
    if (!entry.auth.isSignedIn) return undefined;
    if (hold) entry.active++;
    return { id, entry };
  }

  async #load(id, key) {
    const auth = this.#client(this.#storage, key, await sessionHandle(id));
    try {
      await auth.ready();
    } catch (error) {
      auth.close();
      throw typed(error, "storage_unavailable");
    }
    const entry = { auth, lastUsed: Date.now(), active: 0 };
    this.#clients.set(id, entry);
    this.#evictOverflow(id);
    this.#sweep();
    return entry;
  }

  #drop(id) {
    const entry = this.#clients.get(id);
    if (!entry) return;
    this.#clients.delete(id);
    entry.auth.close();
  }

  #evictOverflow(keep) {
    if (this.#clients.size <= this.#maxInMemory) return;
    // The least recently used idle ones go first; never the one this request just loaded.
    const idle = [...this.#clients].filter(([id, e]) => e.active === 0 && id !== keep).sort(([, a], [, b]) => a.lastUsed - b.lastUsed);
    for (const [id] of idle.slice(0, this.#clients.size - this.#maxInMemory)) this.#drop(id);
  }

  #sweep() {
    if (this.#sweeper !== undefined) return;
    this.#sweeper = setInterval(() => {
      const cutoff = Date.now() - this.#idleMs;
      for (const [id, entry] of this.#clients) if (entry.active === 0 && entry.lastUsed < cutoff) this.#drop(id);
      if (this.#clients.size === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, Math.max(1_000, Math.min(this.#idleMs, 60_000)));
    /** @type {any} */ (this.#sweeper).unref?.();
  }

  /** Ends session `id` as a sign-out does: refresh token revoked, session removed. */
  async #end(id, reason) {
    const current = await this.#signedIn(id);
    if (!current) return;
    // Revocation is best effort: the session leaves the store regardless.
    await current.entry.auth.signOut().catch(() => {});
    this.#drop(id);
    await this.#store("remove", `session:${id}`);
    this.#log("info", "sessionEnded", { session: await sessionHandle(id), reason });
  }

  /** A failure of the entry itself, as a plain answer. */
  #failed(operation, error, cookies) {
    const failure = typed(error);
    this.#log("error", "failed", { operation, code: failure.code });
    const response = errorResponse(failure);
    for (const cookie of cookies ?? []) response.headers.append("set-cookie", cookie);
    return response;
  }

  /**
   * Starts a sign-in: a redirect to the identity server, the pending sign-in sealed in a
   * short-lived cookie. Nothing is stored, and a signed-in session is left as it is (it
   * ends when the new sign-in completes). `parameters` as for `ErpNetAuth.signIn`. A
   * failure (the provider cannot be reached) is a plain `{code, message}` answer.
   */
  async signIn(_request, parameters) {
    try {
      const { location, snapshot } = await this.#startSignIn(parameters);
      const sealed = await this.#seal(snapshot);
      this.#log("debug", "signInStarted");
      return redirect(location, [this.#cookie(this.#signInCookieName, sealed, Math.floor(this.#signInMaxAgeMs / 1000))]);
    } catch (error) {
      return this.#failed("signIn", error);
    }
  }

  // Every sign-in starts on one client, one at a time: its snapshot after `signIn` is that
  // sign-in's pending state, which goes into the cookie. A client per request would leave
  // its wasm session to the garbage collector's finalizers, and a flood of /login would grow
  // the wasm memory faster than they free it.
  async #startSignIn(parameters) {
    const previous = this.#starting;
    /** @type {(value: void) => void} */
    let done = () => {};
    this.#starting = new Promise((resolve) => (done = resolve));
    await previous;
    try {
      if (this.#starter === null) {
        const storage = new MemoryStorage();
        this.#starter = { storage, auth: this.#client(storage, "signin", undefined, false) };
      }
      const { auth, storage } = this.#starter;
      const location = await auth.signIn(parameters);
      return { location, snapshot: storage.get("signin") };
    } finally {
      done();
    }
  }

  /**
   * Completes the sign-in at the redirect URI: exchanges the code, stores the session under
   * a new id, ends the session the browser held before (if any) and redirects to
   * `afterSignIn`. The same callback arriving again (a double submit, a retried redirect)
   * waits for the first's outcome and gets its answer: one code exchange. A failure answers
   * 400 with `{code, message}` (503 when the store is down); a callback whose `state` does
   * not match leaves the sign-in in progress alone.
   */
  async callback(request) {
    try {
      const sealed = readCookie(request.headers.get("cookie"), this.#signInCookieName);
      const snapshot = await this.#open(sealed);
      if (snapshot === undefined) {
        this.#log("warn", "callbackRefused", { code: "no_sign_in" });
        return problem(400, "no_sign_in", "no sign-in was started in this browser");
      }
      const search = new URL(request.url).search;
      const key = await sha256Hex(`${sealed}\n${new URLSearchParams(search).get("state") ?? ""}`);
      let exchange = this.#callbacks.get(key);
      if (!exchange) {
        exchange = { outcome: this.#exchangeOnce(key, snapshot, search, this.#idFrom(request)), settled: false, until: 0 };
        this.#callbacks.set(key, exchange);
        this.#forgetCallbacks();
        const entry = exchange;
        const forget = () => this.#callbacks.get(key) === entry && this.#callbacks.delete(key);
        entry.outcome.then((outcome) => {
          entry.settled = true;
          // Only a spent sign-in is worth remembering: a refused state may be followed by the real one.
          if (outcome.spent) entry.until = this.#now() + this.#signInMaxAgeMs;
          else forget();
        }, forget);
      }
      return this.#callbackAnswer(await exchange.outcome);
    } catch (error) {
      return this.#failed("callback", error);
    }
  }

  #forgetCallbacks() {
    const now = this.#now();
    for (const [key, entry] of this.#callbacks) {
      if (this.#callbacks.size <= MAX_REMEMBERED_CALLBACKS && !(entry.settled && entry.until <= now)) continue;
      if (entry.settled) this.#callbacks.delete(key);
    }
  }

  #callbackAnswer(outcome) {
    const spent = outcome.spent ? [this.#cookie(this.#signInCookieName, "", 0)] : [];
    if (outcome.session !== undefined) return redirect(this.#afterSignIn, [this.#cookie(this.#cookieName, outcome.session), ...spent]);
    if (outcome.failure !== undefined) return this.#failed("callback", new ErpNetAuthError(outcome.failure, words(outcome.failure)), spent);
    this.#log("warn", "callbackRefused", { code: outcome.code, oauthError: outcome.oauthError });
    return problem(400, outcome.code, outcome.oauthError ? `${words(outcome.code)}: ${outcome.oauthError}` : words(outcome.code), spent);
  }

  /**
   * The outcome of one authorization response, exchanged at most once: in this process by
   * the caller's map; across processes sharing a store with a lock, under that lock, the
   * outcome kept in the store (`signin:` key) for the repeats that reach another process.
   */
  async #exchangeOnce(key, snapshot, search, previous) {
    const store = this.#storage;
    const lock = store.lock;
    if (!store.shared || typeof lock !== "function") return this.#exchange(snapshot, search, previous);
    try {
      return await lock.call(store, `signin:${key}`, async () => {
        const known = await this.#store("get", `signin:${key}`);
        if (known !== null) {
          try {
            return JSON.parse(known);
          } catch {
            // unreadable: exchanged again below, as if unknown
          }
        }
        const outcome = await this.#exchange(snapshot, search, previous);
        if (outcome.spent) await this.#store("set", `signin:${key}`, JSON.stringify(outcome)).catch(() => {});
        return outcome;
      });
    } catch (error) {
      return { failure: typed(error, "storage_unavailable").code, spent: false };
    }
  }

  /** The code exchange itself. Never rejects: the outcome says what happened. */
  async #exchange(snapshot, search, previous) {
    const rotated = newSessionId();
    const session = await sessionHandle(rotated);
    const pending = new MemoryStorage();
    const key = `signin:${session}`;
    pending.set(key, snapshot);
    // The registered redirect URI with the query the browser brought (this app may sit
    // behind a proxy that rewrote the host).
    const input = new URL(search, this.#options.redirectUri).href;
    const auth = this.#client(pending, key, session, false);
    try {
      await auth.handleCallback(input);
    } catch (error) {
      const failure = typed(error);
      // The core spends the pending sign-in once the state matched (and keeps it otherwise):
      // whether it changed says whether this callback was the sign-in's own.
      return { code: failure.code, oauthError: oauthCode(failure.oauthError), spent: pending.get(key) !== snapshot };
    } finally {
      auth.close();
    }
    try {
      await this.#store("set", `session:${rotated}`, pending.get(key));
    } catch (error) {
      return { failure: typed(error, "storage_unavailable").code, spent: true };
    }
    if (previous !== undefined) {
      await this.#end(previous, "replaced").catch((error) => this.#log("warn", "sessionNotEnded", { code: typed(error).code }));
    }
    return { session: rotated, spent: true };
  }

  /**
   * Signs out: POST from the application's own origin only. Revokes the refresh token,
   * deletes the session, clears the cookie and redirects to the provider's end-session URL
   * (or `afterSignOut`). A store that is down answers 503 with `{code, message}`.
   * @param {Request} request
   * @param {{ postLogoutRedirectUri?: string }} [options]
   */
  async signOut(request, { postLogoutRedirectUri } = {}) {
    if (request.method !== "POST") return problem(405, "method_not_allowed", "sign out with POST");
    const origin = request.headers.get("origin");
    const sameOrigin = origin !== null ? origin === this.#appOrigin : request.headers.get("sec-fetch-site") === "same-origin";
    if (!sameOrigin) return problem(403, "cross_origin", "sign-out must come from the application's own pages");
    const clear = this.#cookie(this.#cookieName, "", 0);
    try {
      const current = await this.#signedIn(this.#idFrom(request));
      if (!current) return redirect(this.#afterSignOut, [clear]);
      const endSession = await current.entry.auth.signOut({ postLogoutRedirectUri });
      this.#drop(current.id);
      await this.#store("remove", `session:${current.id}`);
      return redirect(endSession ?? this.#afterSignOut, [clear]);
    } catch (error) {
      return this.#failed("signOut", error);
    }
  }

  /**
   * The signed-in user's ID token claims, or `null` (nothing is created for a visitor).
   * Rejects with an `ErpNetAuthError` (`storage_unavailable` while the store is down).
   */
  async user(request) {
    try {
      const current = await this.#signedIn(this.#idFrom(request));
      return current ? (current.entry.auth.claims ?? {}) : null;
    } catch (error) {
      throw typed(error);
    }
  }

  /**
   * `fetch` to the Domain API as the request's user (relative URLs resolve against the API
   * root); renews the token by itself. Rejects with an `ErpNetAuthError`: `not_signed_in`
   * without a session. Hand the answer to the browser with `forwardResponse` (node:http,
   * Express) or `browserResponse` (web frameworks).
   */
  async fetch(request, input, init) {
    let current;
    try {
      current = await this.#signedIn(this.#idFrom(request), true);
    } catch (error) {
      throw typed(error);
    }
    if (!current) throw new ErpNetAuthError("not_signed_in", "this request has no signed-in session");
    try {
      // Its errors are typed already, or the caller's own abort reason.
      return await current.entry.auth.fetch(input, init);
    } finally {
      current.entry.active--;
      current.entry.lastUsed = Date.now();
    }
  }

  /** Closes every client in memory (the sessions stay in the store); later calls make new ones. */
  close() {
    for (const id of [...this.#clients.keys()]) this.#drop(id);
    this.#starter?.auth.close();
    this.#starter = null;
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }
}

/** node:http and Express: the incoming message as a web `Request` (its body streamed). */
export function toWebRequest(req, origin) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (Array.isArray(value)) for (const v of value) headers.append(name, v);
    else if (value !== undefined) headers.set(name, value);
  }
  const method = req.method ?? "GET";
  const hasBody = method !== "GET" && method !== "HEAD";
  // `duplex` is what a streamed body needs (Fetch); not yet in TypeScript's RequestInit.
  return new Request(new URL(req.originalUrl ?? req.url, origin), /** @type {RequestInit} */ ({
    method,
    headers,
    body: hasBody ? req : undefined,
    duplex: hasBody ? "half" : undefined,
  }));
}

// How a body is framed on one connection: `fetch` hands over the body decoded, and whoever
// writes it frames it again. Copied, they describe bytes that are not sent (a gzip
// Content-Encoding on plain text, a Content-Length the body overruns into the next answer).
const FRAMING = new Set(["content-encoding", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"]);
// What an upstream says about itself, not about the body: on the application's origin it
// would set cookies, open CORS, prompt for credentials, pin HSTS or clear the site's data.
const UPSTREAM_ONLY = new Set(["set-cookie", "set-cookie2", "www-authenticate", "strict-transport-security", "alt-svc", "clear-site-data", "public-key-pins", "expect-ct", "report-to", "nel"]);
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/** The headers of `headers` that still describe the body once it is handed on. */
function handedOnHeaders(headers, upstream) {
  const named = new Set((headers.get("connection") ?? "").split(",").map((name) => name.trim().toLowerCase()));
  const kept = new Headers();
  headers.forEach((value, name) => {
    if (FRAMING.has(name) || named.has(name)) return;
    if (upstream && (UPSTREAM_ONLY.has(name) || name.startsWith("access-control-"))) return;
    if (name !== "set-cookie") kept.append(name, value);
  });
  if (!upstream) for (const cookie of headers.getSetCookie?.() ?? []) kept.append("set-cookie", cookie);
  return kept;
}

/**
 * An API answer (`await auth.fetch(…)`) as a web `Response` for the browser: the body as
 * `fetch` decoded it, with only the headers that still describe it (no Content-Encoding,
 * Content-Length, Transfer-Encoding or other hop-by-hop header; none of the upstream's
 * Set-Cookie, CORS, WWW-Authenticate, HSTS, Alt-Svc or Clear-Site-Data). Next.js route
 * handlers, Hono, Workers: `return browserResponse(await auth.fetch(request, "…"))`.
 */
export function browserResponse(response) {
  // A redirect the API answered is not followed (the token stays with the API): not handed on.
  if (response.status < 200 || response.status > 599 || response.type === "opaqueredirect") {
    response.body?.cancel().catch(() => {});
    return problem(502, "upstream_redirect", "the API answered with a redirect");
  }
  const body = NULL_BODY.has(response.status) ? null : response.body;
  if (body === null) response.body?.cancel().catch(() => {});
  return new Response(body, { status: response.status, statusText: response.statusText, headers: handedOnHeaders(response.headers, true) });
}

/** Writes `response` to a node:http / Express `res`: headers, then the body with backpressure. */
async function write(res, response, headers) {
  const head = {};
  headers.forEach((value, name) => {
    if (name !== "set-cookie") head[name] = value;
  });
  const cookies = headers.getSetCookie?.() ?? [];
  if (cookies.length > 0) head["set-cookie"] = cookies;
  res.writeHead(response.status, head);
  if (!response.body) return void res.end();
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (res.destroyed) return void reader.cancel().catch(() => {});
      if (!res.write(value)) {
        await new Promise(/** @param {(value?: unknown) => void} resolve */ (resolve) => {
          const go = () => (res.off?.("drain", go), res.off?.("close", go), resolve());
          res.once("drain", go);
          res.once("close", go);
        });
      }
    }
    res.end();
  } catch {
    // The body broke off (the upstream went away): the connection is closed, so the browser
    // sees a cut answer rather than one that looks whole.
    reader.cancel().catch(() => {});
    res.destroy?.();
  }
}

/**
 * node:http and Express: writes a web `Response` the application made (ServerAuth's
 * redirects and answers: every `Set-Cookie` kept apart). Framing and hop-by-hop headers are
 * left to node:http. For an API answer use `forwardResponse`.
 */
export function sendWebResponse(res, response) {
  return write(res, response, handedOnHeaders(response.headers, false));
}

/**
 * node:http and Express: hands an API answer (`await auth.fetch(…)`) on to the browser,
 * as `browserResponse` filters it. Never rejects: a body that breaks off closes the connection.
 */
export function forwardResponse(res, response) {
  return sendWebResponse(res, browserResponse(response));
}
