// Types of `erpnet-auth/server`: a server entry on the web Request/Response types.
import type { ErpNetAuthOptions, ErpNetRequestInit, IdTokenClaims, SignInParameters, SnapshotStorage } from "./index.js";

export interface ServerAuthOptions extends Omit<ErpNetAuthOptions, "storage" | "storageKey"> {
  /** Where sessions live (default: in this process's memory); a `RedisStorage` for several processes. */
  storage?: SnapshotStorage;
  /** The cookie's name (default `__Host-erpnet-session`, or `erpnet-session` on plain-HTTP loopback). */
  cookieName?: string;
  /** The application's origin, for the sign-out CSRF check (default: the redirect URI's). */
  appOrigin?: string;
  /** Where the browser goes after signing in (default `/`). */
  afterSignIn?: string;
  /** Where the browser goes after signing out when the provider has no end-session URL (default `/`). */
  afterSignOut?: string;
  /** A client unused this long is dropped from memory (its session stays in the store), ms (default 5 minutes). */
  idleMs?: number;
  /** At most this many signed-in clients in memory (default 10,000); the least recently used idle ones go first. */
  maxSessionsInMemory?: number;
}

/** Sign-in, callback, sign-out and API calls for a server's users; the browser holds only a cookie. */
export class ServerAuth {
  constructor(options: ServerAuthOptions);
  readonly cookieName: string;
  /** Signed-in clients in memory now. */
  readonly sessionsInMemory: number;
  /** A redirect to the identity server under a fresh session id. */
  signIn(request: Request, parameters?: SignInParameters): Promise<Response>;
  /** Completes the sign-in from the query (the session id is rotated); 400 `{code, message}` on failure. `form_post` is refused at construction: a cross-site POST carries no `SameSite=Lax` cookie. */
  callback(request: Request): Promise<Response>;
  /** POST from the application's origin only: revokes, deletes the session, clears the cookie. */
  signOut(request: Request, options?: { postLogoutRedirectUri?: string }): Promise<Response>;
  /** The signed-in user's ID token claims, or null. */
  user(request: Request): Promise<IdTokenClaims | Record<string, never> | null>;
  /** `fetch` to the Domain API as the request's user; rejects with `not_signed_in`. */
  fetch(request: Request, input: string | URL | Request, init?: ErpNetRequestInit): Promise<Response>;
  /** Closes the clients in memory; the sessions stay in the store. */
  close(): void;
}

/** The value of cookie `name` in a `Cookie` header (exact name). */
export function readCookie(header: string | null | undefined, name: string): string | undefined;

/** node:http / Express: the incoming message as a web Request. */
export function toWebRequest(req: { method?: string; url?: string; originalUrl?: string; headers: Record<string, string | string[] | undefined> } & AsyncIterable<Uint8Array>, origin: string): Request;

/** node:http / Express: writes a web Response. */
export function sendWebResponse(res: { writeHead(status: number, headers: Record<string, string | string[]>): unknown; write(chunk: Uint8Array): unknown; end(): unknown }, response: Response): Promise<void>;
