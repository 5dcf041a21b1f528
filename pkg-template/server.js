// A server entry that is safe by default, on the web `Request`/`Response` types (Next.js
// route handlers, Hono, Deno, Bun, Cloudflare Workers; Express and node:http through
// `toWebRequest` / `sendWebResponse` below). The browser holds one cookie, never a token
// (the backend-for-frontend pattern of the browser-apps BCP):
//
// - the cookie is `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` with the `__Host-`
//   prefix unless the application runs on plain-HTTP loopback (development);
// - every sign-in starts under a fresh random id (a planted cookie is ignored), and the id
//   is rotated when the sign-in completes: whoever knew the id before cannot ride the
//   signed-in session (session fixation);
// - the cookie is parsed exactly (`notsid=X` is not `sid=X`) and its value must have the
//   shape of an id this helper makes;
// - nothing is kept and nothing is asked of the identity server for a visitor who has not
//   asked to sign in; an unknown id is not signed in and creates nothing;
// - sign-out is POST only, from the application's own origin (CSRF);
// - clients idle for `idleMs` are dropped from memory (their session stays in the store and
//   is reloaded on the next request); at most `maxSessionsInMemory` are kept;
// - the provider is discovered once per process (a `SharedProvider`), not per user.
import { ErpNetAuth, ErpNetAuthError, SharedProvider } from "./client.js";
import { MemoryStorage } from "./storage.js";

const ID_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** 32 random bytes, base64url: a session id nobody can guess. */
function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
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

const redirect = (location, cookie) => {
  const headers = new Headers({ location, "cache-control": "no-store" });
  if (cookie) headers.append("set-cookie", cookie);
  return new Response(null, { status: 302, headers });
};

const problem = (status, code, message) =>
  new Response(JSON.stringify({ code, message }), { status, headers: { "content-type": "application/json", "cache-control": "no-store" } });

/**
 * Sign-in, callback, sign-out and API calls for the users of a server application, one
 * session per browser, kept in `storage` (a `RedisStorage` for several processes).
 */
export class ServerAuth {
  #options;
  #storage;
  #cookieName;
  #secure;
  #appOrigin;
  #afterSignIn;
  #afterSignOut;
  #idleMs;
  #maxInMemory;
  #clients = new Map(); // id -> { auth, lastUsed, active }
  #provider = null;
  #driver;
  #loading = new Map(); // id -> Promise<entry>, while a session loads from the store
  #sweeper = null;

  /**
   * @param {import("./server.d.ts").ServerAuthOptions} options the client's options
   *   (`instance`, `clientId`, `clientSecret`, `redirectUri`, …) plus the helper's own.
   */
  constructor(options) {
    const { storage, cookieName, appOrigin, afterSignIn = "/", afterSignOut = "/", idleMs = 5 * 60_000, maxSessionsInMemory = 10_000, fetch, now, lock, ...client } = options;
    // What each client's driver takes besides the shared provider.
    this.#driver = Object.fromEntries(Object.entries({ fetch, now, lock }).filter(([, v]) => v !== undefined));
    if (client.clientCredentials || client.referenceToken !== undefined) {
      throw new ErpNetAuthError("invalid_config", "ServerAuth signs users in; a client-credentials or reference-token client is an ErpNetAuth of its own, one per process");
    }
    if (!client.redirectUri) throw new ErpNetAuthError("missing_setting", "ServerAuth needs redirectUri");
    // A form_post callback is a cross-site POST: the SameSite=Lax cookie that ties it to its
    // sign-in does not come with it.
    if (client.responseMode === "form_post") {
      throw new ErpNetAuthError("invalid_config", "ServerAuth receives the code in the query (responseMode \"query\"): a form_post callback arrives without the SameSite=Lax session cookie");
    }
    const redirectUri = new URL(client.redirectUri);
    this.#appOrigin = appOrigin ?? redirectUri.origin;
    const app = new URL(this.#appOrigin);
    if (app.protocol !== "https:" && !(app.protocol === "http:" && LOOPBACK.has(app.hostname))) {
      throw new ErpNetAuthError("insecure_url", "the application must be served over HTTPS (plain HTTP only on loopback, for development)");
    }
    this.#secure = app.protocol === "https:";
    this.#cookieName = cookieName ?? (this.#secure ? "__Host-erpnet-session" : "erpnet-session");
    if (this.#cookieName.startsWith("__Host-") && !this.#secure) {
      throw new ErpNetAuthError("invalid_config", "a __Host- cookie needs HTTPS");
    }
    this.#options = client;
    this.#storage = storage ?? new MemoryStorage();
    this.#afterSignIn = afterSignIn;
    this.#afterSignOut = afterSignOut;
    this.#idleMs = idleMs;
    this.#maxInMemory = maxSessionsInMemory;
  }

  /** The session cookie's name (`__Host-erpnet-session` over HTTPS). */
  get cookieName() {
    return this.#cookieName;
  }

  /** How many signed-in clients are in memory now (idle ones are dropped). */
  get sessionsInMemory() {
    return this.#clients.size;
  }

  #cookie(id, maxAge) {
    const attributes = [`${this.#cookieName}=${id}`, "Path=/", "HttpOnly", "SameSite=Lax"];
    if (this.#secure) attributes.push("Secure");
    if (maxAge !== undefined) attributes.push(`Max-Age=${maxAge}`);
    return attributes.join("; ");
  }

  #idFrom(request) {
    const value = readCookie(request.headers.get("cookie"), this.#cookieName);
    return value !== undefined && ID_PATTERN.test(value) ? value : undefined;
  }

  // One provider per ServerAuth: options parsed once, the provider discovered once and held
  // once in memory; the users' snapshots hold only their own state. Made on first use, so
  // that constructing a ServerAuth needs no WebAssembly yet.
  #client(key) {
    this.#provider ??= new SharedProvider(this.#options);
    return new ErpNetAuth({ ...this.#driver, provider: this.#provider, storage: this.#storage, storageKey: key });
  }

  /**
   * The signed-in client of this request, reloaded from the store if needed; else undefined.
   * With `hold`, it is marked in use before anything else can run (no eviction closes it
   * under the caller, who releases it).
   */
  async #signedIn(request, hold = false) {
    const id = this.#idFrom(request);
    if (id === undefined) return undefined;
    const key = `session:${id}`;
    // Each request checks the store: a sign-out on another process removed the session.
    if ((await this.#storage.get(key)) === null) {
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
    const auth = this.#client(key);
    try {
      await auth.ready();
    } catch (error) {
      auth.close();
      throw error;
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
    if (this.#sweeper !== null) return;
    this.#sweeper = setInterval(() => {
      const cutoff = Date.now() - this.#idleMs;
      for (const [id, entry] of this.#clients) if (entry.active === 0 && entry.lastUsed < cutoff) this.#drop(id);
      if (this.#clients.size === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = null;
      }
    }, Math.max(1_000, Math.min(this.#idleMs, 60_000)));
    this.#sweeper.unref?.();
  }

  /**
   * Starts a sign-in: a redirect to the identity server, under a fresh id in the cookie
   * (whatever cookie came in is ignored). `parameters` as for `ErpNetAuth.signIn`.
   */
  async signIn(_request, parameters) {
    const id = newSessionId();
    const auth = this.#client(`signin:${id}`);
    try {
      return redirect(await auth.signIn(parameters), this.#cookie(id));
    } finally {
      auth.close();
    }
  }

  /**
   * Completes the sign-in at the redirect URI: exchanges the code, moves the session to a
   * new id (the sign-in's id is deleted) and redirects to `afterSignIn`. A failure answers
   * 400 with `{code, message}` and keeps nothing.
   */
  async callback(request) {
    const id = this.#idFrom(request);
    if (id === undefined) return problem(400, "no_sign_in", "no sign-in was started in this browser");
    const pendingKey = `signin:${id}`;
    if ((await this.#storage.get(pendingKey)) === null) return problem(400, "no_sign_in", "no sign-in was started in this browser");
    // The registered redirect URI with the query the browser brought (this app may sit
    // behind a proxy that rewrote the host).
    const input = new URL(new URL(request.url).search, this.#options.redirectUri).href;
    const auth = this.#client(pendingKey);
    try {
      await auth.handleCallback(input);
    } catch (error) {
      auth.close();
      await this.#storage.remove(pendingKey);
      const code = error?.code ?? "internal";
      return problem(400, code, error?.oauthError ? `${code}: ${error.oauthError}` : String(error?.message ?? code));
    }
    auth.close();
    const snapshot = await this.#storage.get(pendingKey);
    const rotated = newSessionId();
    await this.#storage.set(`session:${rotated}`, snapshot);
    await this.#storage.remove(pendingKey);
    return redirect(this.#afterSignIn, this.#cookie(rotated));
  }

  /**
   * Signs out: POST from the application's own origin only. Revokes the refresh token,
   * deletes the session, clears the cookie and redirects to the provider's end-session URL
   * (or `afterSignOut`).
   */
  async signOut(request, { postLogoutRedirectUri } = {}) {
    if (request.method !== "POST") return problem(405, "method_not_allowed", "sign out with POST");
    const origin = request.headers.get("origin");
    const sameOrigin = origin !== null ? origin === this.#appOrigin : request.headers.get("sec-fetch-site") === "same-origin";
    if (!sameOrigin) return problem(403, "cross_origin", "sign-out must come from the application's own pages");
    const clear = this.#cookie("", 0);
    const current = await this.#signedIn(request);
    if (!current) return redirect(this.#afterSignOut, clear);
    const endSession = await current.entry.auth.signOut({ postLogoutRedirectUri });
    this.#drop(current.id);
    await this.#storage.remove(`session:${current.id}`);
    return redirect(endSession ?? this.#afterSignOut, clear);
  }

  /** The signed-in user's ID token claims, or `null` (nothing is created for a visitor). */
  async user(request) {
    const current = await this.#signedIn(request);
    return current ? current.entry.auth.claims ?? {} : null;
  }

  /**
   * `fetch` to the Domain API as the request's user (relative URLs resolve against the API
   * root); renews the token by itself. Rejects with `not_signed_in` without a session.
   */
  async fetch(request, input, init) {
    const current = await this.#signedIn(request, true);
    if (!current) throw new ErpNetAuthError("not_signed_in", "this request has no signed-in session");
    try {
      return await current.entry.auth.fetch(input, init);
    } finally {
      current.entry.active--;
      current.entry.lastUsed = Date.now();
    }
  }

  /** Closes every client in memory (the sessions stay in the store). */
  close() {
    for (const id of [...this.#clients.keys()]) this.#drop(id);
    clearInterval(this.#sweeper);
    this.#sweeper = null;
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
  return new Request(new URL(req.originalUrl ?? req.url, origin), {
    method,
    headers,
    body: hasBody ? req : undefined,
    duplex: hasBody ? "half" : undefined,
  });
}

/** node:http and Express: writes a web `Response` (every `Set-Cookie` kept apart). */
export async function sendWebResponse(res, response) {
  const headers = {};
  response.headers.forEach((value, name) => {
    if (name !== "set-cookie") headers[name] = value;
  });
  const cookies = response.headers.getSetCookie?.() ?? [];
  if (cookies.length > 0) headers["set-cookie"] = cookies;
  res.writeHead(response.status, headers);
  if (response.body) {
    for await (const chunk of response.body) res.write(chunk);
  }
  res.end();
}
