// Types of the JavaScript driver (`erpnet-auth`): what an application uses. The values that
// cross into or out of the WebAssembly core (options, events, errors as data) are generated
// from the Rust types into erpnet_auth_wasm.d.ts and re-exported here; the low-level loop
// is `erpnet-auth/loop` (loop.d.ts). `make js-test` checks these declarations against the
// JavaScript both ways: every export and member has one, and every one is implemented.
import type {
  ClientOptions as CoreOptions,
  ErrorInfo,
  Event,
  IdTokenClaims,
  SignatureCheck,
  SignInParameters,
} from "./erpnet_auth_wasm.js";

export type {
  ClientAuth,
  ErrorInfo,
  Event,
  IdTokenClaims,
  ProviderMetadata,
  PublicJwk,
  ResponseMode,
  ResponseType,
  SignatureCheck,
  SignInParameters,
  SigningAlgorithm,
  ThrottleRetry,
  TimingOptions,
} from "./erpnet_auth_wasm.js";
export { applicationSecretHash } from "./erpnet_auth_wasm.js";

/**
 * Loads the WebAssembly; call once before creating a client. In browsers it is fetched from
 * beside the module unless `source` says otherwise; in Node it is read from disk. Until it
 * has settled, every entry of the package throws an {@link ErpNetAuthError} `not_initialized`.
 */
export function init(
  source?: URL | string | Response | Promise<Response | WebAssembly.Module> | BufferSource | WebAssembly.Module,
): Promise<void>;

/**
 * The provider, named exactly once: the ERP.net preset (`instance`), any OpenID Connect
 * issuer found through discovery (`issuer`), or explicit `endpoints`.
 */
export type ProviderChoice =
  | (Required<Pick<CoreOptions, "instance">> & { issuer?: undefined; endpoints?: undefined })
  | (Required<Pick<CoreOptions, "issuer">> & { instance?: undefined; endpoints?: undefined })
  | (Required<Pick<CoreOptions, "endpoints">> & { instance?: undefined; issuer?: undefined });

/** Everything a session is configured with (read by the core; unknown names are refused). */
export type ClientOptions = Omit<CoreOptions, "instance" | "issuer" | "endpoints"> & ProviderChoice;

/**
 * Codes of {@link ErpNetAuthError}, stable: branch on these. From the client and its
 * storages, from reading the options, and from the core (configuration, misuse, callback,
 * code exchange and renewal, ID token checks, calls, userinfo and profile, discovery, stored
 * snapshots). A server's OAuth refusal is always `oauth_error`, its own code in `oauthError`.
 */
export type ErrorCode =
  // The client, the server entry and the storages.
  | "not_initialized"
  | "not_ready"
  | "closed"
  | "internal"
  | "invalid_argument"
  | "invalid_config"
  | "shared_store_not_allowed"
  | "body_too_large"
  | "lock_lease_short"
  | "lock_timeout"
  | "storage_unavailable"
  | "snapshot_tampered"
  // Options and arguments, as the core reads them.
  | "invalid_time"
  | "invalid_timing"
  | "invalid_method"
  // Configuration.
  | "missing_setting"
  | "invalid_url"
  | "insecure_url"
  | "hybrid_with_query"
  | "public_client_with_secret"
  | "secret_required"
  | "pkce_required"
  | "invalid_scope"
  | "invalid_client_id"
  | "hybrid_without_openid"
  | "zero_api_concurrency"
  | "invalid_reference_token"
  // A command at the wrong time.
  | "not_drained"
  | "unknown_request"
  | "unknown_signature_check"
  | "already_answered"
  | "unknown_call"
  | "provider_not_ready"
  | "not_signed_in"
  | "wrong_grant"
  | "random_unavailable"
  | "no_endpoint"
  // The callback.
  | "no_sign_in_pending"
  | "too_large"
  | "malformed_callback"
  | "redirect_uri_mismatch"
  | "wrong_response_mode"
  | "duplicate_parameter"
  | "missing_state"
  | "state_mismatch"
  | "issuer_mismatch"
  | "missing_issuer"
  | "sign_in_expired"
  | "provider_error"
  | "missing_code"
  | "missing_id_token"
  // The token endpoint (code exchange, renewal).
  | "oauth_error"
  | "unavailable"
  | "redirect"
  | "unexpected_status"
  | "malformed_response"
  | "unsupported_token_type"
  | "transport"
  | "token_response_without_id_token"
  // ID token checks.
  | "id_token_too_large"
  | "id_token_malformed"
  | "id_token_alg_none"
  | "id_token_alg_unsupported"
  | "id_token_alg_not_allowed"
  | "id_token_unknown_key"
  | "id_token_ambiguous_key"
  | "id_token_unusable_key"
  | "id_token_keys_unavailable"
  | "id_token_bad_signature"
  | "id_token_signatures_unsupported"
  | "id_token_issuer"
  | "id_token_audience"
  | "id_token_azp"
  | "id_token_expired"
  | "id_token_not_yet_valid"
  | "id_token_iat_future"
  | "id_token_missing_nonce"
  | "id_token_nonce"
  | "id_token_missing_auth_time"
  | "id_token_auth_too_old"
  | "id_token_at_hash"
  | "id_token_c_hash"
  | "id_token_missing_c_hash"
  | "id_token_s_hash"
  | "id_token_identity_changed"
  | "id_token_authentication_changed"
  // API calls.
  | "invalid_call_url"
  | "foreign_origin"
  | "authorization_header"
  | "sign_in_required"
  | "renewal_unavailable"
  | "renewal_refused"
  | "cancelled"
  | "signed_out"
  | "provider_unavailable"
  // Userinfo and the ERP.net profile.
  | "userinfo_status"
  | "userinfo_malformed"
  | "userinfo_subject"
  // Discovery.
  | "discovery_status"
  | "discovery_malformed"
  | "discovery_issuer_mismatch"
  | "discovery_bad_endpoint"
  | "discovery_foreign_endpoint"
  // Stored snapshots.
  | "snapshot_version"
  | "snapshot_corrupt"
  | "snapshot_inconsistent"
  | "snapshot_other_client"
  | "install_refused";

/**
 * What caused an error whose code is a family (`ErpNetAuthError.detail`, `ErrorInfo.detail`):
 * how a transport failed, why a token answer was malformed, why only a new sign-in helps, or
 * the code of the renewal's failure.
 */
export type ErrorDetail =
  | ErrorCode
  // How a request failed to get an answer.
  | "connect"
  | "timeout"
  | "interrupted"
  | "other"
  // Why a token answer was unreadable.
  | "empty_body"
  | "html"
  | "not_json"
  | "missing_access_token"
  | "wrong_field_type"
  | "invalid_token_characters"
  // Why only a new sign-in helps (also `reason.code` of a `signInRequired` event).
  | "refresh_rejected"
  | "no_refresh_token"
  | "signed_out_elsewhere"
  | "refreshed_id_token_refused"
  | "reference_token_rejected";

/** Codes of `warning` events: a server answer was sloppy but tolerated. */
export type WarningCode = "unusable_expires_in" | "unusable_scope" | "stored_provider_data_ignored";

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

/** What the driver supplies besides the core's options. */
export interface DriverOptions {
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
  /** The signature math of ID token checks (default `verifySignature` of `erpnet-auth/loop`); anything but `true` is a refusal. */
  verifySignature?: (check: SignatureCheck) => boolean | Promise<boolean>;
}

/**
 * Options of {@link ErpNetAuth}: the core's options plus what the driver supplies, or a
 * provider shared by the clients of this process (the core's options then come from it;
 * giving one here too is refused).
 */
export type ErpNetAuthOptions =
  | (ClientOptions & DriverOptions & { provider?: undefined })
  | (DriverOptions & { provider: SharedProvider } & { [name in keyof CoreOptions]?: undefined });

/**
 * Events a client emits, by `type`: the core's {@link Event}s and the driver's own.
 * - `callReplayed`: an API answer was discarded instead of handed to its caller, because the
 *   session sends the call again: `status` 401 (after a renewal, or with the token another
 *   client renewed meanwhile) or 429 (after its backoff).
 * - `lockWait`: a token request got the token lock after waiting `waitedMs` for it.
 * - `storageConflict`: a stored write lost its compare-and-swap (another client stored a
 *   newer state, `generation` was this one's); the stored state is adopted.
 * - `storageError`: a storage operation failed; with `snapshot_tampered`, a stored snapshot
 *   of a shared provider's client held provider data (metadata, sites, keys), which such
 *   snapshots never hold: it was ignored.
 * - `storageDiscarded`: the stored snapshot could not be used (another version or client):
 *   the client started signed out.
 * - `error`: a failure with no caller to reject (a timer, a verifier, a request's send).
 */
export type ErpNetAuthEvent =
  | Event
  | { type: "callReplayed"; call: number; status: number }
  | { type: "lockWait"; waitedMs: number }
  | { type: "storageError"; error: ErpNetAuthError }
  | { type: "storageConflict"; generation: number }
  | { type: "storageDiscarded"; reason: ErpNetAuthError }
  | { type: "error"; error: ErpNetAuthError };

/** An error with a stable {@link ErrorCode}: `not_initialized` before `init()` settled,
 * `not_ready` for state read before it is known, `invalid_argument` for an option, … */
export class ErpNetAuthError extends Error {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown });
  /** The library's stable code; a server's OAuth refusal is always `oauth_error`. */
  readonly code: ErrorCode;
  /** What caused it, when `code` is a family (`sign_in_required` → `reference_token_rejected`, `transport` → `timeout`). */
  readonly detail?: ErrorDetail;
  /** The server's OAuth `error` (`invalid_grant`, `access_denied`, …), when it sent one. */
  readonly oauthError?: string;
  /** The server's `error_description`, cleaned and capped. */
  readonly errorDescription?: string;
  /** The HTTP status that came with the OAuth error. */
  readonly status?: number;
}

/** The `signedIn` event a completed callback resolves to. */
export type SignedIn = Extract<Event, { type: "signedIn" }>;

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
  /** Completes a sign-in from the URL the browser came back to (`location.href`, or the request URL on a server). */
  handleCallback(url: string | URL): Promise<SignedIn>;
  /** Completes a sign-in from the body of a `form_post` callback (`application/x-www-form-urlencoded`). */
  handleFormPost(body: string | URLSearchParams): Promise<SignedIn>;
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
