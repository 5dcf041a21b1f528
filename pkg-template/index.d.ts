// Types of the JavaScript driver. Every value that crosses into or out of the WebAssembly
// core (options, events, requests, errors) is generated from the Rust types into
// erpnet_auth_wasm.d.ts and re-exported here.
import type {
  ClientOptions,
  ErrorInfo,
  Event,
  IdTokenClaims,
  SignatureCheck,
  SignInParameters,
} from "./erpnet_auth_wasm.js";

export type {
  ClientAuth,
  ClientOptions,
  ErrorInfo,
  Event,
  HttpRequest,
  IdTokenClaims,
  Output,
  ProviderMetadata,
  RequestKind,
  ResponseMode,
  ResponseType,
  PublicJwk,
  SignatureCheck,
  SignInParameters,
  SigningAlgorithm,
  TimingOptions,
} from "./erpnet_auth_wasm.js";
export { Session, applicationSecretHash, responseHeadersRead } from "./erpnet_auth_wasm.js";

/**
 * Loads the WebAssembly; call once before creating a client. In browsers it is fetched from
 * beside the module unless `source` says otherwise; in Node it is read from disk. Until it
 * has settled, every entry of the package throws an {@link ErpNetAuthError} `not_initialized`.
 */
export function init(
  source?: URL | string | Response | Promise<Response | WebAssembly.Module> | BufferSource | WebAssembly.Module,
): Promise<void>;

/** What a client writes: the snapshot's generation and the one it was derived from. */
export interface SnapshotWrite {
  /** The generation of the token state written (higher is newer). */
  generation: number;
  /** Write only while the stored generation is not above this (compare-and-swap). */
  baseGeneration: number;
}

/** A lease on a lock: its end on this process's clock, Unix ms. */
export interface Lease {
  expiresAt: number;
}

/** Mutual exclusion of token requests; `fn` gets the lease when the lock is one. */
export type TokenLock = <T>(name: string, fn: (lease?: Lease) => Promise<T>, options?: { leaseMs: number }) => Promise<T>;

/**
 * Where the session snapshot lives. Methods may be synchronous or return promises. `set`
 * with a `write` is a compare-and-swap: it returns `false` (and writes nothing) when the
 * stored generation is above `write.baseGeneration`; the client then adopts the stored one.
 */
export interface SnapshotStorage {
  get(key: string): string | null | Promise<string | null>;
  set(key: string, value: string, write?: SnapshotWrite): void | boolean | Promise<void | boolean>;
  remove(key: string): void | Promise<void>;
  /** Calls `listener` when another tab or process changes `key`; returns the unsubscribe. */
  subscribe?(key: string, listener: (value: string | null) => void): () => void;
  /** A lock across everything sharing this store (used unless the `lock` option is given). */
  lock?: TokenLock;
  /** Shared between processes: client-credentials and reference-token clients refuse it. */
  readonly shared?: boolean;
}

/** Keeps the snapshot in memory (the default). */
export class MemoryStorage implements SnapshotStorage {
  get(key: string): string | null;
  set(key: string, value: string, write?: SnapshotWrite): boolean;
  remove(key: string): void;
}

/**
 * `localStorage` (default) or `sessionStorage`. With `localStorage`, tabs see each other's
 * tokens, but Chromium delivers its writes to other tabs asynchronously, so tabs that renew
 * should use {@link IndexedDbStorage}.
 */
export class WebStorage implements SnapshotStorage {
  constructor(area?: Storage);
  get(key: string): string | null;
  set(key: string, value: string, write?: SnapshotWrite): boolean;
  remove(key: string): void;
  subscribe(key: string, listener: (value: string | null) => void): () => void;
}

/** IndexedDB: the storage for several tabs that renew (committed writes, ordered by the lock). */
export class IndexedDbStorage implements SnapshotStorage {
  constructor(databaseName?: string);
  get(key: string): Promise<string | null>;
  set(key: string, value: string, write?: SnapshotWrite): Promise<boolean>;
  remove(key: string): Promise<void>;
  subscribe(key: string, listener: (value: string | null) => void): () => void;
}

/** Runs `fn` holding the lock `name`: Web Locks in browsers (across tabs), else a lock within this process. */
export function withLock<T>(name: string, storage: SnapshotStorage, fn: () => Promise<T>): Promise<T>;
/** Runs `fn` holding the lock `name` within this process: the default where Web Locks are missing (Node). */
export function withProcessLock<T>(name: string, fn: () => Promise<T>): Promise<T>;

/**
 * Answers a `verifySignature` output: `true` only for a valid signature. node:crypto where the
 * runtime has it (Node, Bun, Deno: no worker-thread round trip), else WebCrypto.
 */
export function verifySignature(check: SignatureCheck): Promise<boolean>;
/** Answers a `verifySignature` output with WebCrypto alone: `true` only for a valid signature. */
export function verifyWithWebCrypto(check: SignatureCheck): Promise<boolean>;

/** `fetch` options, plus how long the call is expected to run (a long poll such as
 * `WaitForChanges`): a token that would expire before it ends is renewed first. */
export interface ErpNetRequestInit extends RequestInit {
  expectedDurationMs?: number;
}

/**
 * One per process and client configuration on a server: the options parsed once, the
 * provider's metadata, signing keys and sites discovered once and held once in memory for
 * every client made with it; their snapshots hold only the user's state. Discovery and key
 * fetches go out once per URL at a time, an answer serving the clients asking within
 * `reuseMs` (default 10,000).
 */
export class SharedProvider {
  /** Reads `options` at once: a mistake throws an {@link ErpNetAuthError} (`invalid_argument`, …). */
  constructor(options: ClientOptions, settings?: { reuseMs?: number });
  /** The parsed options every client made with it uses. */
  readonly options: ClientOptions;
}

/** Options of {@link ErpNetAuth}: the core's options plus what the driver supplies. */
export interface ErpNetAuthOptions extends ClientOptions {
  /** A provider shared by the clients of this process; the core options then come from it (giving one here too is refused). */
  provider?: SharedProvider;
  /** Where the snapshot is kept (default: in memory; with `persistTokens: false` in a browser, `sessionStorage`). */
  storage?: SnapshotStorage;
  /** The storage key (default `erpnet-auth:<clientId>`). On a server, one key per user session. */
  storageKey?: string;
  /** The `fetch` to send requests with (default `globalThis.fetch`). */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** The clock, Unix ms (default `Date.now`). */
  now?: () => number;
  /** Mutual exclusion of token requests (default: the storage's own `lock`, else Web Locks, else within this process). */
  lock?: TokenLock;
  /** The signature math of ID token checks (default {@link verifySignature}); anything but `true` is a refusal. */
  verifySignature?: (check: SignatureCheck) => boolean | Promise<boolean>;
}

/**
 * Events a client emits, by `type`. `storageError` with `snapshot_tampered`: a stored
 * snapshot of a shared provider's client held provider data (metadata, sites, keys), which
 * such snapshots never hold; it was ignored.
 */
export type ErpNetAuthEvent =
  | Event
  | { type: "storageError"; error: ErpNetAuthError }
  | { type: "storageConflict"; generation: number }
  | { type: "storageDiscarded"; reason: ErpNetAuthError }
  | { type: "error"; error: ErpNetAuthError };

/**
 * An error with a stable `code` (`foreign_origin`, `state_mismatch`, `oauth_error`, …;
 * `not_initialized` before `init()` settled, `not_ready` for state read before it is known,
 * `invalid_argument` for an option).
 */
export class ErpNetAuthError extends Error {
  constructor(code: string, message: string, options?: { cause?: unknown });
  /** The library's stable code; a server's OAuth refusal is always `oauth_error`. */
  readonly code: string;
  /** What caused it, when `code` is a family (`sign_in_required` → `reference_token_rejected`, `transport` → `timeout`). */
  readonly detail?: string;
  /** The server's OAuth `error` (`invalid_grant`, `access_denied`, …), when it sent one. */
  readonly oauthError?: string;
  /** The server's `error_description`, cleaned and capped. */
  readonly errorDescription?: string;
  /** The HTTP status that came with the OAuth error. */
  readonly status?: number;
}

/** The client: sign-in, callback, `fetch` that renews its token by itself, sign-out. */
export class ErpNetAuth {
  /**
   * Checks every option at once (an {@link ErpNetAuthError}: `invalid_argument`, naming the
   * option; `not_initialized` before `init()`) and reads the stored session: a storage that
   * answers at once makes the state known here, one that answers later after {@link ready}.
   */
  constructor(options: ErpNetAuthOptions);
  /**
   * Loads the stored session; every method awaits it. With an asynchronous storage
   * (`IndexedDbStorage`, a server's store) await it before reading the properties below.
   */
  ready(): Promise<void>;
  /** Resolves to the authorization URL to send the browser to. */
  signIn(parameters?: SignInParameters): Promise<string>;
  /** Browsers: begins a sign-in and navigates to the provider. */
  redirectToSignIn(parameters?: SignInParameters): Promise<string>;
  /** Browsers with `persistTokens: false`: a top-level `prompt=none` sign-in after a reload. */
  restoreSession(parameters?: SignInParameters): Promise<string>;
  /** Completes a sign-in from the redirect URL or a `form_post` body. */
  handleCallback(urlOrFormBody: string | URL): Promise<Extract<Event, { type: "signedIn" }>>;
  /** `fetch` with the access token; relative URLs resolve against the API root. */
  fetch(input: string | URL | Request, init?: ErpNetRequestInit): Promise<Response>;
  /** Signs out; resolves to the end-session URL, if the provider has one. */
  signOut(options?: { postLogoutRedirectUri?: string }): Promise<string | undefined>;
  /** Subscribes to events of one `type`, or all with `"*"`; returns the unsubscribe. */
  on<T extends ErpNetAuthEvent["type"] | "*">(
    type: T,
    listener: (event: T extends "*" ? ErpNetAuthEvent : Extract<ErpNetAuthEvent, { type: T }>) => void,
  ): () => void;
  /** Ends the client for good: timers and listeners stop, answers in flight are dropped, pending calls and later commands fail with `closed`. */
  close(): void;
  /** Asks the provider's userinfo endpoint about the user; its `sub` must match the ID token's. */
  userInfo(): Promise<Record<string, unknown>>;
  /** ERP.net: the signed-in user from the instance's Profile site (`/me`): `id`, `login`, `name`, `email`, … */
  profile(): Promise<Record<string, unknown>>;
  /** Whether the session holds tokens. Throws `not_ready` while the stored session is loading. */
  readonly isSignedIn: boolean;
  /** The scope the server granted. Throws `not_ready` while the stored session is loading. */
  readonly grantedScope: string | undefined;
  /** The validated ID token claims, if signed in. Throws `not_ready` while the stored session is loading. */
  readonly claims: IdTokenClaims | undefined;
  /** ERP.net: the instance's Profile site, once auto-discovery found it. Throws `not_ready` while the stored session is loading. */
  readonly profileSite: string | undefined;
}

export type { ErrorInfo as ErpNetAuthErrorInfo };
