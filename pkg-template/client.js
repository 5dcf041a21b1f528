// @ts-check
// The fetch-driven client. It holds no protocol logic: it drains the core's poll(), sends
// what the core asks for, feeds answers, timers and storage changes back, and turns events
// into promises. Every decision is the core's (src/session/ in the Rust crate).
//
// Its types are index.d.ts (and the core's, generated into erpnet_auth_wasm.d.ts):
// `make js-test` type-checks this file against them and checks that every export and member
// has its declaration, and every declaration its implementation.
import {
  Session as WasmSession,
  SharedClient,
  applicationSecretHash as wasmApplicationSecretHash,
  responseHeadersRead as wasmResponseHeadersRead,
} from "./erpnet_auth_wasm.js";
import { MemoryStorage, WebStorage } from "./storage.js";
import { withLock } from "./lock.js";
import { verifySignature } from "./signatures.js";

// setTimeout fires at once for delays above 2^31 - 1 ms; longer waits are re-armed.
const MAX_DELAY = 2_147_483_647;

/** @typedef {import("./index.js").ErrorCode} ErrorCode */
/** @typedef {import("./index.js").ErrorDetail} ErrorDetail */
/** @typedef {import("./erpnet_auth_wasm.js").ErrorInfo} ErrorInfo */
/** @typedef {import("./index.js").ErpNetAuthEvent} ErpNetAuthEvent */
/** @typedef {import("./index.js").SnapshotStorage} SnapshotStorage */

/** An error a caller can branch on by `code`. */
export class ErpNetAuthError extends Error {
  /**
   * @param {ErrorCode} code
   * @param {string} message
   * @param {{ cause?: unknown }} [options]
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = "ErpNetAuthError";
    this.code = code;
    // Set only when there is one (see `fromInfo`).
    /** @type {ErrorDetail | undefined} */ this.detail;
    /** @type {string | undefined} */ this.oauthError;
    /** @type {string | undefined} */ this.errorDescription;
    /** @type {number | undefined} */ this.status;
  }
}

// The wasm sends codes and fields, never prose (its error texts would cost kilobytes of
// formatting code); messages are worded here from them.
const words = (code) => code.replaceAll("_", " ");

/**
 * A message from an error's code and fields, e.g. "sign in required: reference token rejected".
 * @param {string} code
 * @param {Partial<ErrorInfo>} [info]
 */
function describe(code, { detail, oauthError, errorDescription, status } = {}) {
  let text = words(code);
  if (detail) text += `: ${words(detail)}`;
  if (oauthError) text += ` (the server answered ${oauthError}${errorDescription ? `: ${errorDescription}` : ""}${status ? `, HTTP ${status}` : ""})`;
  return text;
}

/**
 * An error from an event's `ErrorInfo`, with the server's OAuth fields when it sent some.
 * @param {ErrorInfo} info
 */
function fromInfo(info) {
  const error = new ErpNetAuthError(/** @type {ErrorCode} */ (info.code), describe(info.code, info));
  for (const field of /** @type {const} */ (["detail", "oauthError", "errorDescription", "status"])) {
    if (info[field] !== undefined) /** @type {Record<string, unknown>} */ (/** @type {unknown} */ (error))[field] = info[field];
  }
  return error;
}

const invalid = (message) => new ErpNetAuthError("invalid_argument", message);

// Whether the entry's init() has instantiated the WebAssembly. Before that, the glue fails
// with "Cannot read properties of undefined (reading 'session_new')": every entry checks.
let loaded = false;

/** Called by the entry (index.js, node.js) once its init() has instantiated the WebAssembly. */
export function wasmLoaded() {
  loaded = true;
}

function requireLoaded() {
  if (!loaded) throw new ErpNetAuthError("not_initialized", "`await init()` first: the WebAssembly is not loaded");
}

/**
 * The low-level state machine (section 3 of the README): the wasm's class itself (its
 * prototype, `instanceof`, the sessions a provider makes), its construction checked for init().
 */
export const Session = /* @__PURE__ */ new Proxy(WasmSession, {
  construct(target, args, newTarget) {
    requireLoaded();
    return Reflect.construct(target, args, newTarget);
  },
});

/** ERP.net's `ApplicationSecretHash` of a trusted application: `base64(sha256(utf8(secret)))`. */
export function applicationSecretHash(secret) {
  requireLoaded();
  return wasmApplicationSecretHash(secret);
}

/** The answer headers the core reads, comma-separated. */
export function responseHeadersRead() {
  requireLoaded();
  return wasmResponseHeadersRead();
}

function wrap(error) {
  if (error instanceof ErpNetAuthError) return error;
  const code = typeof error?.code === "string" ? error.code : "internal";
  // A coded error from the wasm carries its code as its message.
  const message = error?.message === code ? describe(code) : (error?.message ?? String(error));
  return new ErpNetAuthError(code, message, { cause: error });
}

/**
 * A signal that aborts at `ms` from now, as `AbortSignal.timeout` does (same `TimeoutError`),
 * at a tenth of its cost (~7 µs a call in Node 20). Its timer never keeps a process alive.
 */
function deadlineSignal(ms) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException("the request reached its deadline", "TimeoutError")), ms);
  /** @type {any} */ (timer).unref?.();
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

/** The answer's headers the core reads (it names them): only these cross into the wasm. */
let headersRead;
function answerHeaders(response) {
  headersRead ??= wasmResponseHeadersRead().split(",");
  const flat = [];
  for (const name of headersRead) {
    const value = response.headers.get(name);
    if (value !== null) flat.push(name, value);
  }
  return flat;
}

/** One decoder for every body: decoding without `stream` keeps no state between calls. */
const UTF8 = new TextDecoder();

function transportKind(error) {
  if (error?.name === "TimeoutError") return "timeout";
  if (error?.name === "AbortError") return "interrupted";
  return "connect";
}

/** A streamed request body is buffered (a replay after a 401 or 429 needs it again) up to this. */
export const MAX_REPLAY_BODY_BYTES = 16 * 1024 * 1024;

/**
 * Reads a stream up to one byte past `limit`, then cancels the rest: the bytes (at most
 * `limit + 1`) and whether there were more than `limit`.
 */
async function readUpTo(stream, limit) {
  const reader = stream.getReader();
  const chunks = [];
  let length = 0;
  let done = false;
  try {
    while (length <= limit) {
      const next = await reader.read();
      done = next.done;
      if (done) break;
      chunks.push(next.value);
      length += next.value.byteLength;
    }
  } finally {
    // A finished stream has nothing left to cancel; one read past the limit (or failed) has.
    if (!done) reader.cancel().catch(() => {});
  }
  const bytes = new Uint8Array(Math.min(length, limit + 1));
  let offset = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, bytes.length - offset);
    bytes.set(part, offset);
    offset += part.length;
  }
  return { bytes, over: length > limit };
}

/**
 * @param {BodyInit} body
 * @returns {Promise<BodyInit | undefined>}
 */
async function replayableBody(body) {
  if (body === undefined || body === null) return undefined;
  if (typeof body === "string" || body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return body;
  if (body instanceof URLSearchParams || body instanceof Blob || body instanceof FormData) return body;
  if (!(body instanceof ReadableStream)) return new Response(body).arrayBuffer();
  // A stream can be read once: buffered, with a limit rather than a silent empty replay.
  const { bytes, over } = await readUpTo(body, MAX_REPLAY_BODY_BYTES);
  if (over) {
    throw new ErpNetAuthError("body_too_large", `a streamed request body is buffered for replays up to ${MAX_REPLAY_BODY_BYTES} bytes; send a larger one as a Blob or an ArrayBuffer`);
  }
  return bytes;
}

/**
 * The body as text, read only up to one byte past `limit`: the session refuses a body that
 * long as malformed, and a server sending without end cannot fill the memory.
 */
async function readCapped(response, limit) {
  if (limit === undefined || !response.body) return response.text();
  // A character cut at the end decodes to U+FFFD (3 bytes): still past the limit.
  return UTF8.decode((await readUpTo(response.body, limit)).bytes);
}

// What a snapshot holds of the provider. A shared provider's clients never store these
// (their snapshots hold only the user's state), so in one of their snapshots they are
// planted: by whoever can write the store, to move the token endpoint (the client secret
// goes there) or the API root, or to install their own signing keys for the whole process.
const PROVIDER_MEMBERS = ["metadata", "sites", "jwks"];

/**
 * What the clients of one `SharedProvider` share, out of its public API: the parsed options,
 * the sessions made from them, what those sessions learned of the provider, and the loads of
 * provider documents in flight.
 */
class ProviderLink {
  #client;
  #reuseMs;
  /** @type {Map<string, { pending: boolean, at: number, answer: Promise<any> }>} url -> its load */
  #loads = new Map();

  /**
   * @param {import("./index.js").ClientOptions} options
   * @param {number} reuseMs
   */
  constructor(options, reuseMs) {
    this.options = options;
    try {
      this.#client = new SharedClient(options);
    } catch (error) {
      throw wrap(error);
    }
    this.#reuseMs = reuseMs;
  }

  /**
   * A session (the wasm machine) of this client, restored from `snapshot`.
   * @param {string | undefined} snapshot
   */
  session(snapshot) {
    return this.#client.session(snapshot ?? undefined);
  }

  /**
   * Takes over what `session` learned of the provider. Only sessions of this provider's
   * clients come here, and they never hold provider data from a stored snapshot (the
   * client strips it), so what is learned is what was fetched.
   * @param {WasmSession} session
   */
  learnFrom(session) {
    this.#client.learnFrom(session);
  }

  /**
   * The user's state of a stored snapshot of one of its clients: the snapshot without
   * provider members, and the error to report when it had any. A snapshot that is not JSON
   * is refused here (the core would refuse it too; nothing unread gets past). Here rather
   * than in the client, so that a browser app's bundle (no provider) leaves it out.
   * @param {string} value
   * @returns {{ value: string, tampered: ErpNetAuthError | null }}
   */
  userState(value) {
    let snapshot;
    try {
      snapshot = JSON.parse(value);
    } catch (error) {
      throw new ErpNetAuthError("snapshot_corrupt", "snapshot corrupt", { cause: error });
    }
    if (snapshot === null || typeof snapshot !== "object" || !PROVIDER_MEMBERS.some((name) => Object.hasOwn(snapshot, name))) {
      return { value, tampered: null };
    }
    for (const name of PROVIDER_MEMBERS) delete snapshot[name];
    return { value: JSON.stringify(snapshot), tampered: new ErpNetAuthError("snapshot_tampered", "provider data in a shared provider's stored snapshot: ignored") };
  }

  /**
   * `load()`'s answer for `url`, shared with every caller asking while it runs or soon after.
   * @template T
   * @param {string} url
   * @param {() => Promise<T>} load
   * @returns {Promise<T>}
   */
  loadOnce(url, load) {
    const now = Date.now();
    const known = this.#loads.get(url);
    if (known && (known.pending || now - known.at < this.#reuseMs)) return known.answer;
    // The callback runs on a later turn, when `entry` is set.
    const answer = load().finally(() => {
      entry.pending = false;
      entry.at = Date.now();
    });
    const entry = { pending: true, at: now, answer };
    // A failure is not reused (a load abandoned at its requester's time limit included):
    // the next caller tries again.
    answer.catch(() => this.#loads.get(url) === entry && this.#loads.delete(url));
    this.#loads.set(url, entry);
    return answer;
  }
}

// Each SharedProvider's link; a brand rather than `instanceof`, so that a bundle of a
// browser app (no provider) leaves the classes out.
/** @type {WeakMap<SharedProvider, ProviderLink>} */
const providers = /* @__PURE__ */ new WeakMap();

/**
 * One per process and client configuration on a server: the options parsed once, and the
 * provider's metadata, signing keys and (ERP.net) sites discovered once and held once in
 * memory for every client made with it (`new ErpNetAuth({ provider, storage, storageKey })`).
 * Their snapshots then hold only the user's state. Discovery and key-set fetches of its
 * clients go out once per URL at a time, and an answer serves the clients that ask within
 * `reuseMs` (default 10 s): a key rotation seen by a thousand sessions costs one fetch.
 */
export class SharedProvider {
  /**
   * @param {import("./index.js").ClientOptions} options
   * @param {{ reuseMs?: number }} [settings]
   */
  constructor(options, { reuseMs = 10_000 } = {}) {
    requireLoaded();
    if (options === null || typeof options !== "object") throw invalid("options must be an object");
    if (typeof reuseMs !== "number" || !(reuseMs >= 0) || !Number.isFinite(reuseMs)) throw invalid("`reuseMs` must be a number, 0 or more");
    this.options = options;
    providers.set(this, new ProviderLink(options, reuseMs));
  }
}

const SHARED_KINDS = new Set(["discovery", "keys", "sites"]);

const isFunction = (value) => typeof value === "function";
const isThenable = (value) => value !== null && (typeof value === "object" || typeof value === "function") && isFunction(value.then);

/** The driver's own options, checked before anything is made of them. */
function checkDriverOptions({ storage, storageKey, fetch, now, lock, verifySignature, provider }) {
  if (storage != null && (typeof storage !== "object" || ![storage.get, storage.set, storage.remove].every(isFunction))) {
    throw invalid("`storage` needs get, set and remove");
  }
  if (storageKey != null && (typeof storageKey !== "string" || storageKey === "")) throw invalid("`storageKey` must be a non-empty string");
  for (const [name, value] of Object.entries({ fetch, now, lock, verifySignature })) {
    if (value != null && !isFunction(value)) throw invalid(`\`${name}\` must be a function`);
  }
  if (provider != null && !providers.has(provider)) throw invalid("`provider` must be a SharedProvider");
}

/** @typedef {{ test: (event: ErpNetAuthEvent) => boolean, resolve: (event: ErpNetAuthEvent) => void }} Waiter */
/** @typedef {{ resolve: (response: Response | undefined) => void, reject: (reason: unknown) => void, body: BodyInit | null | undefined, signal: AbortSignal | null | undefined }} PendingCall */

/** The client: sign-in, callback, `fetch` that renews its token by itself, sign-out. */
export class ErpNetAuth {
  /** @type {import("./index.js").ClientOptions} */
  #options;
  /** @type {ProviderLink | null} */
  #provider;
  /** @type {SnapshotStorage} */
  #storage;
  /** @type {string} */
  #key;
  /** @type {(input: string, init: RequestInit) => Promise<Response>} */
  #fetch;
  /** @type {() => number} */
  #now;
  /** @type {import("./index.js").TokenLock} */
  #lock;
  /** @type {(check: import("./index.js").SignatureCheck) => boolean | Promise<boolean>} */
  #verifySignature;
  // Set from the constructor or ready() on, before any command reaches it.
  /** @type {WasmSession} */
  #session = /** @type {any} */ (null);
  /** @type {Promise<string | null> | null} */
  #loading = null;
  /** @type {ErpNetAuthError | undefined} */
  #loadFailure = undefined;
  /** @type {ErpNetAuthError | null} */
  #discarded = null;
  /** @type {ErpNetAuthError | null} */
  #tampered = null;
  /** @type {Promise<void> | null} */
  #ready = null;
  #started = false;
  /** @type {Map<string, Set<(event: any) => void>>} */
  #listeners = new Map();
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #timer;
  /** @type {Map<number, PendingCall>} */
  #calls = new Map();
  /** @type {Map<number, Response>} */
  #responses = new Map();
  /** @type {Promise<void>} */
  #persisted = Promise.resolve();
  /** @type {string | null} */
  #lastStored = null;
  /** @type {Waiter[]} */
  #waiters = [];
  /** @type {((value: void) => void)[]} */
  #drainWaiters = [];
  /** @type {(() => void) | null} */
  #unsubscribe = null;
  #closed = false;

  /**
   * @param {import("./index.js").ErpNetAuthOptions} options
   */
  constructor(options) {
    requireLoaded();
    if (options === null || typeof options !== "object") throw invalid("options must be an object");
    const { storage, storageKey, fetch, now, lock, provider, verifySignature: verify, ...own } = options;
    checkDriverOptions({ storage, storageKey, fetch, now, lock, verifySignature: verify, provider });
    if (provider != null) {
      // They would be ignored: the clients of a provider share its options.
      const given = Object.keys(own).find((name) => own[name] !== undefined);
      if (given !== undefined) throw invalid(`\`${given}\` is an option of the provider`);
    }
    this.#provider = provider ? (providers.get(provider) ?? null) : null;
    // A shared provider brings the (parsed) options of every client made with it.
    const core = provider ? provider.options : /** @type {import("./index.js").ClientOptions} */ (own);
    this.#options = core;
    // Tokens in memory only: what must survive the sign-in redirect (the pending sign-in)
    // goes to this tab's session storage in a browser.
    this.#storage = storage ?? (core.persistTokens === false && globalThis.sessionStorage ? new WebStorage(globalThis.sessionStorage) : new MemoryStorage());
    this.#key = storageKey ?? `erpnet-auth:${core.clientId ?? "reference-token"}`;
    // ERP.net's licence rules: the application's own token (client credentials) and a
    // reference token belong to one process; sharing them across processes is refused.
    if ((core.clientCredentials || core.referenceToken !== undefined) && this.#storage.shared) {
      throw new ErpNetAuthError("shared_store_not_allowed", "a client-credentials or reference-token client keeps its token per process (ERP.net: one session per running instance); give it no shared storage");
    }
    this.#fetch = fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#now = now ?? Date.now;
    this.#verifySignature = verify ?? verifySignature;
    // A shared store brings its own lock (across processes); else Web Locks or this process.
    this.#lock = lock ?? (typeof this.#storage.lock === "function" ? (name, fn, options) => /** @type {Required<SnapshotStorage>} */ (this.#storage).lock(name, fn, options) : (name, fn) => withLock(name, this.#storage, fn));
    // The stored session is read now. A storage that answers at once (memory,
    // localStorage, sessionStorage) makes the state known from here on; one that answers
    // later (IndexedDB, Redis) makes it known when ready() has settled, and reading it
    // before then throws `not_ready` rather than answering "signed out".
    let stored;
    try {
      stored = this.#storage.get(this.#key);
    } catch (error) {
      stored = Promise.reject(error);
    }
    if (isThenable(stored)) {
      this.#loading = Promise.resolve(stored);
      // Awaited by ready(); a client never made ready must not leave an unhandled rejection.
      this.#loading.catch(() => {});
      // The core's options are read now all the same (a provider's were, when it was made).
      if (!this.#provider) this.#openSession(undefined).free();
    } else {
      this.#open(stored ?? null);
    }
  }

  /** A session (the wasm machine) of this client, restored from `snapshot` (JSON). */
  #openSession(snapshot) {
    try {
      return this.#provider ? this.#provider.session(snapshot) : new WasmSession(this.#options, snapshot);
    } catch (error) {
      throw wrap(error);
    }
  }

  /** The session from the stored value; what cannot be used of it is reported at ready(). */
  #open(stored) {
    try {
      const state = stored !== null && this.#provider ? this.#provider.userState(stored) : { value: stored, tampered: null };
      this.#session = this.#openSession(state.value ?? undefined);
      this.#tampered = state.tampered;
    } catch (error) {
      if (stored === null || !String(error?.code).startsWith("snapshot_")) throw error;
      // A snapshot of another version or client cannot be used: start signed out.
      this.#session = this.#openSession(undefined);
      this.#discarded = error;
    }
    this.#lastStored = stored;
  }

  /**
   * Loads the stored session (and starts the provider's discovery). Every method awaits it;
   * with a storage that answers asynchronously (`IndexedDbStorage`, a server's store),
   * await it before reading `isSignedIn`, `claims`, `grantedScope` or `profileSite`.
   */
  ready() {
    if (this.#closed) return Promise.reject(new ErpNetAuthError("closed", "the client was closed"));
    this.#ready ??= this.#start();
    return this.#ready;
  }

  async #start() {
    if (this.#session === null) {
      try {
        this.#open((await this.#loading) ?? null);
      } catch (error) {
        this.#loadFailure = wrap(error);
        throw this.#loadFailure;
      }
    }
    // Reported now that listeners can have been added.
    if (this.#discarded !== null) this.#emit({ type: "storageDiscarded", reason: this.#discarded });
    if (this.#tampered !== null) this.#emit({ type: "storageError", error: this.#tampered });
    this.#unsubscribe = this.#storage.subscribe?.(this.#key, (value) => this.#adopt(value)) ?? null;
    if (this.#loading === null && this.#unsubscribe !== null) {
      // Read at construction: what another tab stored since is adopted before anything runs.
      const current = this.#storage.get(this.#key);
      if (!isThenable(current)) this.#adopt(current);
    }
    this.#drain();
    this.#started = true;
  }

  /** The session, once the stored state is known. */
  #known() {
    if (this.#session !== null) return this.#session;
    if (this.#loadFailure !== undefined) {
      throw new ErpNetAuthError("not_ready", "the stored session could not be loaded", { cause: this.#loadFailure });
    }
    throw new ErpNetAuthError("not_ready", "`await auth.ready()` first: the stored session is still loading");
  }

  /** Subscribes to events (`signedIn`, `tokensRenewed`, `signInRequired`, …, or `*`). */
  on(type, listener) {
    let listeners = this.#listeners.get(type);
    if (!listeners) this.#listeners.set(type, (listeners = new Set()));
    listeners.add(listener);
    return () => this.#listeners.get(type)?.delete(listener);
  }

  /** Whether the session holds tokens. Throws `not_ready` while the stored state is loading. */
  get isSignedIn() {
    return this.#known().isSignedIn;
  }

  /** The scope the server granted. Throws `not_ready` while the stored state is loading. */
  get grantedScope() {
    return this.#known().grantedScope;
  }

  /**
   * The validated ID token claims (`sub`, `name`, `email`, ERP.net's own), if signed in.
   * Throws `not_ready` while the stored state is loading.
   */
  get claims() {
    return this.#known().claims;
  }

  /** Asks the provider's userinfo endpoint about the user; its `sub` must match the ID token's. */
  async userInfo() {
    await this.ready();
    // Renewal-aware like fetch(): the core renews a due token first and retries a 401 once.
    return (await this.#eventCall((now) => this.#session.fetchUserInfo(now), "userInfo", "userInfoFailed")).claims;
  }

  /** Starts a call whose result comes as an event (`done` or `failed`, naming the call). */
  async #eventCall(start, done, failed) {
    const call = this.#command(start, false);
    const outcome = this.#waitFor((event) => (event.type === done || event.type === failed) && event.call === call);
    this.#drain();
    const event = await outcome.promise;
    if (event.type === failed) throw fromInfo(event.error);
    return event;
  }

  /**
   * ERP.net: who the signed-in user is, from the instance's Profile site (`/me`, found by
   * auto-discovery): `id` (the stable key), `login`, `name`, `email`, … Renewal-aware like
   * fetch(). The picture: `auth.fetch(new URL("me/picture", auth.profileSite))`.
   */
  async profile() {
    await this.ready();
    await this.#sitesKnown();
    return (await this.#eventCall((now) => this.#session.fetchProfile(now), "profile", "profileFailed")).profile;
  }

  /** The instance's Profile site, once auto-discovery found it. Throws `not_ready` while the stored state is loading. */
  get profileSite() {
    return this.#known().profileSite;
  }

  /**
   * Begins a sign-in; resolves to the authorization URL to send the browser to.
   * @param {import("./index.js").SignInParameters} [parameters]
   * @returns {Promise<string>}
   */
  async signIn(parameters) {
    await this.ready();
    await this.#providerReady();
    const url = this.#command((now) => this.#session.signIn(now, parameters));
    await this.#persisted;
    return url;
  }

  /**
   * Browsers: begins a sign-in and navigates to the provider's login page.
   * @param {import("./index.js").SignInParameters} [parameters]
   */
  async redirectToSignIn(parameters) {
    const url = await this.signIn(parameters);
    globalThis.location.assign(url);
    return url;
  }

  /**
   * Browsers, tokens in memory (`persistTokens: false`): after a reload, signs the user in
   * again without a login page through a top-level redirect with `prompt=none` (ERP.net
   * allows no iframe). The provider answers at once: with a code while the user still has a
   * session there, else with `login_required` (or `interaction_required`,
   * `consent_required`), which `handleCallback` rejects with as `oauthError`. Call it only
   * on a page load that is not the callback, so that a refusal never loops.
   * @param {import("./index.js").SignInParameters} [parameters]
   */
  async restoreSession(parameters = {}) {
    return this.redirectToSignIn({ ...parameters, prompt: "none" });
  }

  /**
   * Completes the sign-in from the URL the browser came back to (`location.href`, or the
   * request URL on a server). Resolves once the code is exchanged and the tokens stored.
   * @param {string | URL} url
   */
  async handleCallback(url) {
    const input = String(url);
    return this.#callback((now) => this.#session.handleCallbackUrl(now, input));
  }

  /**
   * Completes the sign-in from the body of a `form_post` callback (`responseMode:
   * "form_post"`), as it arrived: `application/x-www-form-urlencoded` text.
   * @param {string | URLSearchParams} body
   */
  async handleFormPost(body) {
    const input = String(body);
    return this.#callback((now) => this.#session.handleCallbackFormPost(now, input));
  }

  /**
   * Hands the callback to the session and waits for the sign-in's outcome.
   * @param {(now: number) => void} handle
   * @returns {Promise<import("./index.js").SignedIn>}
   */
  async #callback(handle) {
    await this.ready();
    // A snapshot without the provider's metadata (a shared provider's, in a process that has
    // not discovered yet) restores a session that discovers first.
    await this.#providerReady();
    const outcome = this.#waitFor((event) => event.type === "signedIn" || event.type === "signInFailed");
    try {
      this.#command(handle);
    } catch (error) {
      outcome.cancel();
      throw error;
    }
    const event = await outcome.promise;
    await this.#persisted;
    if (event.type === "signInFailed") throw fromInfo(event.error);
    return /** @type {import("./index.js").SignedIn} */ (event);
  }

  /**
   * `fetch` with the access token: the same arguments and a standard `Response`. Relative
   * URLs resolve against the API root; the token is only ever sent to the API origins.
   * @param {string | URL | Request} input
   * @param {import("./index.js").ErpNetRequestInit} [init]
   * @returns {Promise<Response>}
   */
  async fetch(input, init = {}) {
    // A started client goes on at once: a call costs no extra turn of the microtask queue.
    if (this.#closed || !this.#started) await this.ready();
    let method = init.method ?? "GET";
    let url = input;
    let headers = init.headers === undefined ? undefined : new Headers(init.headers);
    let body = init.body;
    let signal = init.signal;
    if (typeof Request !== "undefined" && input instanceof Request) {
      url = input.url;
      method = init.method ?? input.method;
      headers = new Headers(init.headers ?? input.headers);
      body = init.body ?? (method === "GET" || method === "HEAD" ? undefined : (input.body ?? undefined));
      signal = init.signal ?? input.signal;
    } else if (input instanceof URL) {
      url = input.href;
    }
    body = body === undefined || body === null ? undefined : await replayableBody(body);
    signal?.throwIfAborted();
    const flatHeaders = headers === undefined ? [] : [...headers].flat();
    const call = this.#command((now) => this.#session.callApi(now, method.toUpperCase(), String(url), flatHeaders, init.expectedDurationMs), false);
    const result = new Promise((resolve, reject) => this.#calls.set(call, { resolve, reject, body, signal }));
    signal?.addEventListener("abort", () => {
      if (this.#calls.has(call)) this.#command((now) => this.#session.cancelCall(now, call));
    }, { once: true });
    this.#drain();
    return result;
  }

  /**
   * Signs out: forgets the tokens, revokes the refresh token where the provider allows, and
   * resolves to the end-session URL (send the browser there to end the provider session).
   * @param {{ postLogoutRedirectUri?: string }} [options]
   * @returns {Promise<string | undefined>}
   */
  async signOut({ postLogoutRedirectUri } = {}) {
    await this.ready();
    // The revocation and end-session endpoints come from the metadata; without them the
    // session still signs out here.
    await this.#providerReady().catch(() => {});
    const url = this.#command((now) => this.#session.signOut(now, postLogoutRedirectUri));
    await this.#persisted;
    return url ?? undefined;
  }

  /** Ends the client for good: timers and storage listeners stop, answers still in flight
   * are dropped (no renewal is started by them), and pending calls fail with `closed`. */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#unsubscribe?.();
    for (const [, call] of this.#calls) call.reject(new ErpNetAuthError("closed", "the client was closed"));
    this.#calls.clear();
    // A token request waiting for its answer's checks lets go of its lock.
    for (const resolve of this.#drainWaiters.splice(0)) resolve();
  }

  // ----- the loop -----

  #command(fn, drain = true) {
    let result;
    try {
      result = fn(this.#now());
    } catch (error) {
      // The core's contract: an error changed nothing and queued nothing. Drain anyway, so
      // that a driver bug can never leave outputs behind that wedge every later command.
      this.#drain();
      throw wrap(error);
    }
    if (drain) this.#drain();
    return result;
  }

  /** Resolves after the next drain of the session's outputs. */
  #nextDrain() {
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  #drain() {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    queueMicrotask(() => waiters.forEach((resolve) => resolve()));
    for (;;) {
      const output = this.#session.poll();
      switch (output.type) {
        case "http":
          this.#send(output.request);
          break;
        case "verifySignature":
          this.#verify(output.check);
          break;
        case "persist":
          this.#persist(output);
          break;
        case "event":
          this.#dispatch(output.event);
          break;
        case "waitUntil":
          this.#arm(output.at);
          return;
        default:
          this.#arm(null);
          return;
      }
    }
  }

  /** Answers a signature check with the client's verifier, exactly once. */
  async #verify(check) {
    // Answered after the drain that asked, even by a verifier that answers at once or
    // throws; one that throws has not found the signature valid.
    const verify = this.#verifySignature;
    const valid = await Promise.resolve(check).then(verify).then((verdict) => verdict === true, () => false);
    if (this.#closed) return;
    try {
      this.#command((now) => this.#session.handleSignature(now, check.id, valid));
    } catch (error) {
      this.#emit({ type: "error", error: wrap(error) });
    }
  }

  #arm(at) {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (at === null || this.#closed) return;
    const delay = Math.min(Math.max(0, at - this.#now()), MAX_DELAY);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed) return;
      if (this.#now() < at) return this.#arm(at);
      // Never throw out of a timer callback (in Node that ends the process).
      try {
        this.#command((now) => this.#session.handleTimeout(now));
      } catch (error) {
        this.#emit({ type: "error", error: wrap(error) });
      }
    }, delay);
    // A timer someone awaits (a call's retry after a 429, a sign-in's after a failure) keeps
    // a Node process alive, as the request it stands for would; a renewal timer alone does not.
    if (this.#calls.size === 0 && this.#waiters.length === 0) /** @type {any} */ (this.#timer)?.unref?.();
  }

  #persist({ snapshot, generation, baseGeneration }) {
    this.#lastStored = snapshot;
    // Writes are chained: requests that follow wait for this one, so new tokens are
    // stored before they are used.
    this.#persisted = this.#persisted
      .then(async () => {
        const written = await this.#storage.set(this.#key, snapshot, { generation, baseGeneration });
        if (written !== false || this.#closed) return;
        // Another client stored a newer state meanwhile: adopt it (a lost race is no logout).
        this.#emit({ type: "storageConflict", generation });
        this.#adopt(await this.#storage.get(this.#key));
      })
      .catch((error) => this.#emit({ type: "storageError", error: wrap(error) }));
  }

  #adopt(value) {
    if (value === null || value === this.#lastStored || !this.#session) return;
    this.#lastStored = value;
    try {
      let snapshot = value;
      if (this.#provider) {
        const state = this.#provider.userState(value);
        if (state.tampered !== null) this.#emit({ type: "storageError", error: state.tampered });
        snapshot = state.value;
      }
      this.#command((now) => this.#session.handleSnapshot(now, snapshot));
    } catch (error) {
      this.#emit({ type: "storageError", error: wrap(error) });
    }
  }

  /** Sends one request and hands back exactly one answer for it, whatever fails on the way
   * (storage, lock, network): the session's slot for it is never left taken. */
  async #send(request) {
    const answered = { done: false };
    try {
      await this.#persisted;
      // No lease for a token request no longer to be sent: answered as unwanted below.
      const leaseMs = request.kind === "token" && !this.#closed ? this.#session.tokenLeaseMs(request.id) : undefined;
      if (leaseMs !== undefined) {
        // One token request at a time across every tab or process sharing this storage. A
        // leased lock (a shared store's) is as long as the core says: it outlives the
        // request's deadline and the ID token checks that follow.
        const asked = Date.now();
        await this.#lock(`${this.#key}:token`, async (lease) => {
          this.#emit({ type: "lockWait", waitedMs: Date.now() - asked });
          const stored = await this.#storage.get(this.#key);
          this.#adopt(stored);
          // The core judges whether the lease left still covers the request (else another
          // process could send the same refresh token while this one is still out). Not
          // sent then; the session retries after its backoff.
          if (lease?.expiresAt !== undefined && !this.#closed && this.#session.isRequestWanted(request.id) && !this.#session.leaseCovers(request.id, lease.expiresAt)) {
            throw new ErpNetAuthError("lock_lease_short", "the token lock's lease would end before the token request's deadline");
          }
          await this.#exchange(request, answered);
          // The answer's ID token may still wait for a signature verdict or the keys: the
          // next holder must read the tokens it brings, so the lock is kept until then.
          while (!this.#closed && this.#session.isCheckingTokenAnswer) await this.#nextDrain();
          await this.#persisted;
        }, { leaseMs });
      } else {
        await this.#exchange(request, answered);
      }
    } catch (error) {
      if (!answered.done) this.#answerNotSent(request);
      this.#emit({ type: "error", error: wrap(error) });
    }
  }

  /** `request` never left (storage or lock failed): a transport failure, unless closed. */
  #answerNotSent(request) {
    if (this.#closed) return;
    try {
      this.#command((now) => this.#session.handleTransportError(now, request.id, "connect"));
    } catch (error) {
      this.#emit({ type: "error", error: wrap(error) });
    }
  }

  /**
   * A signal that aborts `request` when the session counts it as timed out: at its deadline,
   * or `timeoutMs` after it is sent (now) when the session did not know the time yet. Not
   * cleared for an API call: its caller reads the body, which the deadline still bounds.
   * @param {import("./erpnet_auth_wasm.js").HttpRequest} request
   */
  #limit(request) {
    const ms = request.deadline === undefined ? request.timeoutMs : request.deadline - this.#now();
    return ms === undefined ? undefined : deadlineSignal(Math.max(0, ms));
  }

  async #exchange(request, answered) {
    const answer = (fn) => {
      answered.done = true;
      if (!this.#closed) this.#command(fn);
    };
    if (this.#closed || !this.#session.isRequestWanted(request.id)) {
      return answer((now) => this.#session.handleTransportError(now, request.id, "other"));
    }
    if (this.#provider && SHARED_KINDS.has(request.kind) && request.method === "GET") return this.#exchangeShared(this.#provider, request, answered);
    const call = request.call === undefined ? undefined : this.#calls.get(request.call);
    const deadline = this.#limit(request);
    const live = /** @type {AbortSignal[]} */ ([call?.signal, deadline?.signal].filter(Boolean));
    const signal = live.length > 1 && AbortSignal.any ? AbortSignal.any(live) : live[0];
    let response;
    try {
      response = await this.#fetch(request.url, {
        method: request.method,
        headers: request.headers,
        body: request.kind === "api" ? call?.body : request.body,
        // Token requests never follow redirects; API requests neither, so the token cannot
        // reach another origin through one.
        redirect: "manual",
        signal,
      });
    } catch (error) {
      deadline?.clear();
      return answer((now) => this.#session.handleTransportError(now, request.id, transportKind(error)));
    }
    const headers = answerHeaders(response);
    if (request.kind === "api") {
      this.#responses.set(request.id, response);
      answer((now) => this.#session.handleResponse(now, request.id, response.status, headers));
      // An answer not handed to its caller is discarded; while its call waits, the session
      // sends it again (a 401: renewed or superseded token; a 429: after a backoff).
      if (!this.#responses.delete(request.id)) return;
      response.body?.cancel().catch(() => {});
      if (this.#calls.has(/** @type {number} */ (request.call))) {
        this.#emit({ type: "callReplayed", call: request.call, status: response.status });
      }
      return;
    }
    let body;
    try {
      body = await readCapped(response, request.maxResponseBytes);
    } catch (error) {
      return answer((now) => this.#session.handleTransportError(now, request.id, transportKind(error)));
    } finally {
      deadline?.clear();
    }
    answer((now) => this.#session.handleResponse(now, request.id, response.status, headers, body));
  }

  /**
   * A discovery, key set or sites request of a client with a shared provider: one fetch per
   * URL for all its clients, and what this session learned goes back to the provider.
   * @param {ProviderLink} provider
   * @param {import("./erpnet_auth_wasm.js").HttpRequest} request
   * @param {{ done: boolean }} answered
   */
  async #exchangeShared(provider, request, answered) {
    const load = async () => {
      const deadline = this.#limit(request);
      const signal = deadline?.signal;
      // Past its requester's time limit the load is abandoned, answered or not (a transport
      // may ignore the signal): it fails, so the provider forgets it and the next sign-in
      // loads again.
      const abandoned = new Promise((_, reject) => signal?.addEventListener("abort", () => reject(signal.reason)));
      try {
        return await Promise.race([abandoned, (async () => {
          const response = await this.#fetch(request.url, { method: request.method, headers: request.headers, redirect: "manual", signal });
          return { status: response.status, headers: answerHeaders(response), body: await readCapped(response, request.maxResponseBytes) };
        })()]);
      } finally {
        deadline?.clear();
      }
    };
    let result;
    try {
      result = await provider.loadOnce(request.url, load);
    } catch (error) {
      answered.done = true;
      if (!this.#closed) this.#command((now) => this.#session.handleTransportError(now, request.id, transportKind(error)));
      return;
    }
    answered.done = true;
    if (this.#closed) return;
    this.#command((now) => this.#session.handleResponse(now, request.id, result.status, result.headers, result.body));
    provider.learnFrom(this.#session);
  }

  #dispatch(event) {
    if (event.type === "callCompleted") {
      const call = this.#calls.get(event.call);
      const response = this.#responses.get(event.request);
      this.#calls.delete(event.call);
      this.#responses.delete(event.request);
      call?.resolve(response);
    } else if (event.type === "callFailed") {
      const call = this.#calls.get(event.call);
      this.#calls.delete(event.call);
      if (event.error.code === "cancelled" && call?.signal?.aborted) call.reject(call.signal.reason);
      else call?.reject(fromInfo(event.error));
    }
    for (const waiter of [...this.#waiters]) {
      if (waiter.test(event)) waiter.resolve(event);
    }
    this.#emit(event);
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

  #waitFor(test) {
    let waiter;
    const promise = new Promise((resolve) => {
      waiter = { test, resolve: (event) => (this.#waiters = this.#waiters.filter((w) => w !== waiter), resolve(event)) };
      this.#waiters.push(waiter);
    });
    return { promise, cancel: () => (this.#waiters = this.#waiters.filter((w) => w !== waiter)) };
  }

  /** Waits for the instance's auto-discovery, if one is under way. */
  async #sitesKnown() {
    // The sites request has a deadline, so this ends: with the document, or without it.
    while (!this.#closed && this.#session.isDiscoveringSites) await this.#nextDrain();
  }

  async #providerReady() {
    if (this.#session.isProviderReady) return;
    const outcome = this.#waitFor((e) => e.type === "providerReady" || e.type === "discoveryFailed");
    // Starts discovery again if an earlier attempt failed; a no-op while one is under way.
    this.#command((now) => this.#session.discover(now));
    if (this.#session.isProviderReady) return outcome.cancel();
    const event = await outcome.promise;
    if (event.type === "discoveryFailed") throw fromInfo(event.error);
  }
}
