// Types of `erpnet-auth/server`: a server entry on the web Request/Response types.
import type { ClientOptions, DriverOptions, ErpNetAuthError, ErpNetRequestInit, IdTokenClaims, SignInParameters, SnapshotStorage } from "./index.js";

/** One structured log record: named fields only, never a token, code, verifier, state, nonce, secret or session id. */
export interface ServerLogRecord {
  level: "debug" | "info" | "warn" | "error";
  /**
   * What happened: `signInStarted`, `signedIn`, `tokensRenewed`, `replayed` (an API answer
   * discarded, 401, and the call sent again after a renewal), `throttled` (a 429 discarded,
   * the call retried after its backoff), `renewalDeferred`, `lockWait` (how long a token
   * request waited for the token lock), `storageConflict` (a stored write lost its
   * compare-and-swap), `callbackRefused`, `signInRequired`, `sessionEnded`, `failed`,
   * `storageError`, …
   */
  event: string;
  /** A short hash of the session's id (never the id). */
  session?: string;
  /** The error code, when something failed. */
  code?: string;
  /** The provider's OAuth error code, when it sent one. */
  oauthError?: string;
  /** The HTTP status involved. */
  status?: number;
  [field: string]: unknown;
}

/** A function of a record, or an object with level methods (`console`, pino, …). */
export type ServerLogger =
  | ((record: ServerLogRecord) => void)
  | Partial<Record<"debug" | "info" | "warn" | "error" | "log", (record: ServerLogRecord) => void>>;

/** Options of {@link ServerAuth}: the client's options (`instance`, `clientId`, `clientSecret`, `redirectUri`, …), the driver's but storage, and the entry's own. */
export type ServerAuthOptions = ClientOptions & Omit<DriverOptions, "storage" | "storageKey"> & ServerEntryOptions;

/** What the server entry itself is configured with. */
export interface ServerEntryOptions {
  /** Where sessions live (default: in this process's memory); a `RedisStorage` for several processes. */
  storage?: SnapshotStorage;
  /**
   * Seals the pending sign-in's cookie (AES-GCM, a key derived for that purpose): a string of
   * 32 characters or more (`openssl rand -base64 32`) or 32+ bytes. Default: a random key per
   * `ServerAuth`; required, the same in each, when several processes share a store.
   */
  cookieKey?: string | ArrayBuffer | ArrayBufferView;
  /** The session cookie's name (default `__Host-erpnet-session`, or `erpnet-session` on plain-HTTP loopback); the sign-in's is this plus `-signin`. */
  cookieName?: string;
  /** The application's origin, for the sign-out CSRF check (default: the redirect URI's). */
  appOrigin?: string;
  /** Where the browser goes after signing in (default `/`): a path or an http(s) URL. */
  afterSignIn?: string;
  /** Where the browser goes after signing out when the provider has no end-session URL (default `/`). */
  afterSignOut?: string;
  /** A client unused this long is dropped from memory (its session stays in the store), ms (default 5 minutes). */
  idleMs?: number;
  /** At most this many signed-in clients in memory (default 10,000); the least recently used idle ones go first. */
  maxSessionsInMemory?: number;
  /** Receives structured records of what happened (sign-in, renewal, 401 replays, 429 backoffs, lock waits, storage conflicts, failures). */
  logger?: ServerLogger;
}

/** A session event of one of the users, with `session`: a short hash of its id. */
export interface ServerSessionEvent {
  type: string;
  session?: string;
  [field: string]: unknown;
}

/** Sign-in, callback, sign-out and API calls for a server's users; the browser holds only cookies. */
export class ServerAuth {
  /** Checks every option; throws an `ErpNetAuthError` (`missing_setting`, `insecure_url`, `invalid_config`, `invalid_argument`, `not_initialized`). */
  constructor(options: ServerAuthOptions);
  readonly cookieName: string;
  /** Signed-in clients in memory now. */
  readonly sessionsInMemory: number;
  /** Subscribes to the session events of every user (`signedIn`, `tokensRenewed`, …, or `*`); returns the unsubscribe. */
  on(type: string, listener: (event: ServerSessionEvent) => void): () => void;
  /** A redirect to the identity server, the pending sign-in sealed in a cookie; nothing is stored. A failure is a plain `{code, message}` answer. */
  signIn(request: Request, parameters?: SignInParameters): Promise<Response>;
  /** Completes the sign-in (a new session id; the browser's previous session ends); one code exchange per authorization response; 400 `{code, message}` on failure, 503 while the store is down. `form_post` is refused at construction: a cross-site POST carries no `SameSite=Lax` cookie. */
  callback(request: Request): Promise<Response>;
  /** POST from the application's origin only: revokes, deletes the session, clears the cookie. */
  signOut(request: Request, options?: { postLogoutRedirectUri?: string }): Promise<Response>;
  /** The signed-in user's ID token claims, or null; rejects with an `ErpNetAuthError` (`storage_unavailable`). */
  user(request: Request): Promise<IdTokenClaims | Record<string, never> | null>;
  /** `fetch` to the Domain API as the request's user; rejects with an `ErpNetAuthError` (`not_signed_in`, …). Hand the answer on with `forwardResponse` / `browserResponse`. */
  fetch(request: Request, input: string | URL | Request, init?: ErpNetRequestInit): Promise<Response>;
  /** Closes the clients in memory; the sessions stay in the store. */
  close(): void;
}

/** The value of cookie `name` in a `Cookie` header (exact name). */
export function readCookie(header: string | null | undefined, name: string): string | undefined;

/** A plain answer for an error: `{code, message}` JSON, status from the code (401, 502, 503, 500); no stack, no cause's text. */
export function errorResponse(error: ErpNetAuthError | unknown): Response;

/** An API answer for the browser: the decoded body with only the headers that still describe it. */
export function browserResponse(response: Response): Response;

/** node:http / Express: the incoming message as a web Request. */
export function toWebRequest(req: { method?: string; url?: string; originalUrl?: string; headers: Record<string, string | string[] | undefined> } & AsyncIterable<Uint8Array>, origin: string): Request;

/** The part of a node:http / Express response these helpers write to. */
export interface NodeResponse {
  writeHead(status: number, headers: Record<string, string | string[]>): unknown;
  write(chunk: Uint8Array): boolean;
  end(): unknown;
  once(event: "drain" | "close", listener: () => void): unknown;
  off?(event: "drain" | "close", listener: () => void): unknown;
  destroy?(): unknown;
  readonly destroyed?: boolean;
}

/** node:http / Express: writes a web Response the application made (`ServerAuth`'s answers, cookies kept). */
export function sendWebResponse(res: NodeResponse, response: Response): Promise<void>;

/** node:http / Express: hands an API answer on as `browserResponse` filters it; never rejects. */
export function forwardResponse(res: NodeResponse, response: Response): Promise<void>;
