// Types of `erpnet-auth/loop`: the core's state machine itself, for a driver of your own, and
// the helpers the package's driver is built from. Load the WebAssembly first with `init()`
// from `erpnet-auth`.
import type { SignatureCheck } from "./erpnet_auth_wasm.js";
import type { SnapshotStorage } from "./index.js";

export type { ClientOptions as SessionOptions, ErrorInfo, Event, HttpRequest, Output, PublicJwk, RequestKind, SignatureCheck } from "./erpnet_auth_wasm.js";
export { Session } from "./erpnet_auth_wasm.js";

/** The answer headers the session reads, lowercase and comma-separated: `handleResponse` needs these. */
export function responseHeadersRead(): string;

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
