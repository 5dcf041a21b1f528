// A fake ERP.net identity server and Domain API behind a fake `fetch`, for driver tests.
// It rotates refresh tokens and, like real servers, revokes the whole grant when a used one
// comes back, so a test that races two refreshes fails loudly.

export const ROOT = "https://demodb.my.erp.net";
export const CLIENT_ID = "my.trusted.app/first";
export const SECRET = "my-plain-app-secret";
export const REDIRECT = "http://localhost/signin-callback";

// ES256 keys for the ID tokens, made once per process with WebCrypto, on first use (Workers
// allow no key generation at a module's top level).
let keys = null;
function signingKeys() {
  keys ??= (async () => {
    const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
    const jwk = { ...(await crypto.subtle.exportKey("jwk", pair.publicKey)), kid: "fake-1", alg: "ES256", use: "sig" };
    delete jwk.key_ops;
    delete jwk.ext;
    return { privateKey: pair.privateKey, publicJwk: jwk };
  })();
  return keys;
}
// base64url without Buffer: the same file runs in the browser tests.
const b64url = (input) => {
  const bytes = typeof input === "string" ? new TextEncoder().encode(input) : input;
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
};

async function signIdToken(claims) {
  const input = `${b64url(JSON.stringify({ alg: "ES256", kid: "fake-1", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}`;
  const { privateKey } = await signingKeys();
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, new TextEncoder().encode(input));
  return `${input}.${b64url(new Uint8Array(signature))}`;
}

export function fakeServer({ ttl = 3600, clock = () => Date.now() } = {}) {
  let counter = 0;
  // ID tokens are dated by the client's clock (tests hand it in with `useClock`).
  let idTokenClock = clock;
  const fresh = (prefix) => `${prefix}${++counter}`;
  const grants = [];
  const codes = new Map();
  const accessTokens = new Map();
  const stats = { token: 0, refresh: 0, api: 0, unauthorized: 0, revocation: 0, reuse: 0, requests: [] };
  let rejectNextApiCall = false;

  const json = (status, body, headers = {}) =>
    new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

  async function issue(grant, signIn) {
    const access = fresh("at-");
    accessTokens.set(access, { grant, expiresAt: clock() + ttl * 1000 });
    if (grant.refresh) grant.used.add(grant.refresh);
    grant.refresh = fresh("rt-");
    const body = { access_token: access, token_type: "Bearer", expires_in: ttl, refresh_token: grant.refresh, scope: grant.scope };
    if (grant.scope?.split(" ").includes("openid")) {
      const iat = Math.floor(idTokenClock() / 1000);
      const claims = { iss: `${ROOT}/id`, sub: "admin", aud: CLIENT_ID, iat, exp: iat + 300, name: "SPS" };
      if (signIn) claims.nonce = grant.nonce;
      body.id_token = await signIdToken(claims);
    }
    return json(200, body);
  }

  async function fetch(url, init = {}) {
    const u = new URL(url);
    const body = typeof init.body === "string" ? init.body : init.body ? new TextDecoder().decode(init.body) : "";
    stats.requests.push({ url: u.href, method: init.method, headers: init.headers, body, redirect: init.redirect });
    if (u.origin !== ROOT) throw new TypeError("fake network: unknown host");
    if (u.pathname === "/id/.well-known/openid-configuration") {
      const id = `${ROOT}/id`;
      return json(200, {
        issuer: id,
        authorization_endpoint: `${id}/connect/authorize`,
        token_endpoint: `${id}/connect/token`,
        end_session_endpoint: `${id}/connect/endsession`,
        revocation_endpoint: `${id}/connect/revocation`,
        jwks_uri: `${id}/.well-known/openid-configuration/jwks`,
        userinfo_endpoint: `${id}/connect/userinfo`,
      });
    }
    if (u.pathname === "/id/.well-known/openid-configuration/jwks") return json(200, { keys: [(await signingKeys()).publicJwk] });
    if (u.pathname === "/id/connect/token") {
      stats.token++;
      const form = new URLSearchParams(body);
      if (form.get("client_id") !== CLIENT_ID || form.get("client_secret") !== SECRET) return json(400, { error: "invalid_client" });
      if (form.get("grant_type") === "authorization_code") {
        const code = codes.get(form.get("code"));
        if (!code || code.used) return json(400, { error: "invalid_grant" });
        code.used = true;
        return issue(code.grant, true);
      }
      if (form.get("grant_type") === "refresh_token") {
        stats.refresh++;
        const presented = form.get("refresh_token");
        const grant = grants.find((g) => g.refresh === presented || g.used.has(presented));
        if (!grant || grant.revoked) return json(400, { error: "invalid_grant" });
        if (grant.used.has(presented)) {
          grant.revoked = true;
          stats.reuse++;
          return json(400, { error: "invalid_grant" });
        }
        return issue(grant, false);
      }
      return json(400, { error: "unsupported_grant_type" });
    }
    if (u.pathname === "/id/connect/revocation") {
      stats.revocation++;
      return new Response("", { status: 200 });
    }
    if (u.pathname.startsWith("/api/domain/odata/") || u.pathname === "/id/connect/userinfo") {
      stats.api++;
      const auth = new Headers(init.headers).get("authorization") ?? "";
      const token = accessTokens.get(auth.replace(/^Bearer /, ""));
      if (rejectNextApiCall || !token || token.expiresAt <= clock() || token.grant.revoked) {
        rejectNextApiCall = false;
        stats.unauthorized++;
        return new Response("", { status: 401, headers: { "www-authenticate": 'Bearer error="invalid_token"' } });
      }
      if (u.pathname === "/id/connect/userinfo") return json(200, { sub: "admin", name: "SPS" });
      return json(200, { value: [{ Id: "9da64839-a8d0-491d-aebb-4d18fa42b014", Number: "C-0001" }], echo: body || undefined });
    }
    return new Response("<html>not found</html>", { status: 404 });
  }

  /** The browser leg: the user signs in at the authorization URL; returns the callback URL. */
  function authorize(authorizationUrl) {
    const u = new URL(authorizationUrl);
    const grant = { scope: u.searchParams.get("scope"), nonce: u.searchParams.get("nonce"), refresh: null, used: new Set(), revoked: false };
    grants.push(grant);
    const code = fresh("code-");
    codes.set(code, { grant, used: false });
    const back = new URL(u.searchParams.get("redirect_uri"));
    back.searchParams.set("code", code);
    back.searchParams.set("state", u.searchParams.get("state"));
    back.searchParams.set("iss", `${ROOT}/id`);
    return back.href;
  }

  return {
    fetch,
    authorize,
    stats,
    revokeAll: () => grants.forEach((g) => (g.revoked = true)),
    rejectNextApiCall: () => (rejectNextApiCall = true),
    useClock: (now) => (idTokenClock = now),
  };
}

/** A manual clock. */
export function manualClock(start = 1_700_000_000_000) {
  let now = start;
  return { now: () => now, advance: (ms) => (now += ms), set: (t) => (now = t) };
}

/** An in-process mutex with the `lock` option's shape, shared by clients in one test. */
export function sharedLock() {
  const tails = new Map();
  return async (name, fn) => {
    const previous = tails.get(name) ?? Promise.resolve();
    let release;
    const current = new Promise((resolve) => (release = resolve));
    tails.set(name, previous.then(() => current));
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  };
}

/** A storage two clients share, with `subscribe` like localStorage's `storage` event. */
export function sharedStorage() {
  const values = new Map();
  const listeners = new Set();
  return {
    values,
    view() {
      const mine = new Set();
      return {
        get: (key) => values.get(key) ?? null,
        set: (key, value) => {
          values.set(key, value);
          for (const l of listeners) if (!mine.has(l)) queueMicrotask(() => l.fn(key, value));
        },
        remove: (key) => values.delete(key),
        subscribe: (key, listener) => {
          const entry = { fn: (k, v) => k === key && listener(v) };
          mine.add(entry);
          listeners.add(entry);
          return () => listeners.delete(entry);
        },
      };
    },
  };
}
