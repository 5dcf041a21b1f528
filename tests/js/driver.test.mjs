// The built npm package (pkg/) in Node: the whole flow through a fake fetch.
import { test } from "node:test";
import assert from "node:assert/strict";

import { init, ErpNetAuth, ErpNetAuthError, MemoryStorage, applicationSecretHash } from "../../pkg/node.js";
import { Session, verifySignature, verifyWithWebCrypto } from "../../pkg/loop.js";
import { fakeServer, manualClock, sharedLock, sharedStorage, ROOT, CLIENT_ID, SECRET, REDIRECT } from "./fake-server.mjs";

await init();

function client(server, clock, extra = {}) {
  server.useClock(clock.now);
  return new ErpNetAuth({
    instance: ROOT,
    clientId: CLIENT_ID,
    clientSecret: SECRET,
    redirectUri: REDIRECT,
    fetch: server.fetch,
    now: clock.now,
    ...extra,
  });
}

async function signedIn(server, clock, extra) {
  const auth = client(server, clock, extra);
  const url = await auth.signIn();
  await auth.handleCallback(server.authorize(url));
  return auth;
}

test("sign-in: authorization URL, callback, code exchange with client_secret_post", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const auth = client(server, clock);
  const url = new URL(await auth.signIn({ prompt: "login" }));
  assert.equal(url.origin + url.pathname, `${ROOT}/id/connect/authorize`);
  assert.equal(url.searchParams.get("client_id"), CLIENT_ID);
  assert.equal(url.searchParams.get("code_challenge_method"), "S256");
  assert.equal(url.searchParams.get("prompt"), "login");
  assert.equal(url.searchParams.get("scope"), "openid profile offline_access read");
  const event = await auth.handleCallback(server.authorize(url.href));
  assert.equal(event.type, "signedIn");
  assert.equal(auth.isSignedIn, true);
  const exchange = server.stats.requests.find((r) => r.url.endsWith("/connect/token"));
  assert.equal(exchange.redirect, "manual", "token requests never follow redirects");
  assert.match(exchange.body, /^client_id=my\.trusted\.app%2Ffirst&client_secret=my-plain-app-secret&grant_type=authorization_code&code=code-\d+&redirect_uri=http%3A%2F%2Flocalhost%2Fsignin-callback&code_verifier=[\w-]{43}$/);
});

test("fetch attaches the token, resolves relative URLs and returns a standard Response", async () => {
  const server = fakeServer();
  const auth = await signedIn(server, manualClock());
  const response = await auth.fetch("Crm_Sales_Customers?$top=10");
  assert.ok(response instanceof Response);
  assert.equal(response.status, 200);
  assert.equal((await response.json()).value[0].Number, "C-0001");
  const api = server.stats.requests.at(-1);
  assert.equal(api.url, `${ROOT}/api/domain/odata/Crm_Sales_Customers?$top=10`);
  assert.match(new Headers(api.headers).get("authorization"), /^Bearer at-\d+$/);
});

test("a POST body survives the replay after a 401", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const auth = await signedIn(server, clock);
  clock.advance(60_000); // past the cooldown in which a brand-new token's 401 goes to the caller
  server.rejectNextApiCall();
  const response = await auth.fetch("Crm_Sales_Customers", { method: "POST", body: JSON.stringify({ Number: "C-2" }) });
  assert.equal(response.status, 200);
  assert.equal((await response.json()).echo, '{"Number":"C-2"}');
  assert.equal(server.stats.refresh, 1);
  assert.equal(server.stats.unauthorized, 1);
});

test("an expired token is renewed before the call; 50 concurrent calls make one refresh", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const auth = await signedIn(server, clock);
  clock.advance(3600 * 1000 + 1);
  const responses = await Promise.all(Array.from({ length: 50 }, () => auth.fetch("Crm_Sales_Customers")));
  assert.ok(responses.every((r) => r.status === 200));
  assert.equal(server.stats.refresh, 1);
  assert.equal(server.stats.reuse, 0);
  assert.equal(server.stats.unauthorized, 0, "no call went out with the expired token");
});

test("proactive renewal runs on a timer while the token still serves calls", async () => {
  const server = fakeServer({ ttl: 2 });
  const auth = await signedIn(server, { now: Date.now }, { timing: { minRenewalIntervalMs: 500 } });
  // Renewal on a timer is for sessions in use: one call puts it in use.
  assert.equal((await auth.fetch("Crm_Sales_Customers")).status, 200);
  // The client's timer is unref'd (it must not keep a server process alive): hold the loop.
  const keepAlive = setInterval(() => {}, 100);
  const renewed = new Promise((resolve) => auth.on("tokensRenewed", resolve));
  const event = await renewed;
  clearInterval(keepAlive);
  assert.equal(event.type, "tokensRenewed");
  assert.equal(server.stats.refresh, 1);
  auth.close();
});

test("the token is never sent to a foreign origin", async () => {
  const server = fakeServer();
  const auth = await signedIn(server, manualClock());
  const before = server.stats.requests.length;
  await assert.rejects(auth.fetch("https://evil.example/steal"), (e) => e instanceof ErpNetAuthError && e.code === "foreign_origin");
  assert.equal(server.stats.requests.length, before);
});

test("a forged callback is refused with a code", async () => {
  const server = fakeServer();
  const auth = client(server, manualClock());
  await auth.signIn();
  await assert.rejects(auth.handleCallback(`${REDIRECT}?code=x&state=forged`), (e) => e.code === "state_mismatch");
  assert.equal(auth.isSignedIn, false);
});

test("form_post: handleFormPost takes the POSTed body, handleCallback only a URL (a body given to it is refused, not guessed at)", async () => {
  const server = fakeServer();
  const auth = client(server, manualClock(), { responseMode: "form_post" });
  const body = new URL(server.authorize(await auth.signIn())).search.slice(1);
  await assert.rejects(auth.handleCallback(body), (e) => e instanceof ErpNetAuthError && e.code === "malformed_callback");
  const event = await auth.handleFormPost(new URLSearchParams(body));
  assert.equal(event.type, "signedIn");
  assert.equal(auth.isSignedIn, true);
  assert.equal(server.stats.token, 1);
  // A client whose code arrives in the query takes no form body.
  const query = client(fakeServer(), manualClock());
  const callback = new URL(server.authorize(await query.signIn()));
  await assert.rejects(query.handleFormPost(callback.search.slice(1)), (e) => e.code === "wrong_response_mode");
  assert.equal(query.isSignedIn, false);
});

test("the session survives a restart through storage", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const storage = new MemoryStorage();
  await signedIn(server, clock, { storage });
  const stored = JSON.parse(storage.get(`erpnet-auth:${CLIENT_ID}`));
  assert.equal(stored.version, 1);
  const again = client(server, clock, { storage });
  const response = await again.fetch("Crm_Sales_Customers");
  assert.equal(response.status, 200);
  assert.equal(server.stats.token, 1, "no new sign-in, no new token");
});

test("refresh rejected: signInRequired once, calls fail with its code, no request loop", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const auth = await signedIn(server, clock);
  const required = [];
  auth.on("signInRequired", (e) => required.push(e));
  server.revokeAll();
  clock.advance(3600 * 1000);
  const results = await Promise.allSettled([auth.fetch("A"), auth.fetch("B")]);
  assert.ok(results.every((r) => r.status === "rejected" && r.reason.code === "sign_in_required"));
  await assert.rejects(auth.fetch("C"), (e) => e.code === "not_signed_in");
  assert.equal(required.length, 1);
  assert.equal(server.stats.refresh, 1);
});

test("an aborted call rejects with the signal's reason", async () => {
  const server = fakeServer();
  const auth = await signedIn(server, manualClock());
  const controller = new AbortController();
  const pending = auth.fetch("Crm_Sales_Customers", { signal: controller.signal });
  controller.abort(new Error("user left"));
  await assert.rejects(pending, /user left/);
});

test("sign-out revokes and returns the end-session URL", async () => {
  const server = fakeServer();
  const auth = await signedIn(server, manualClock());
  const url = new URL(await auth.signOut({ postLogoutRedirectUri: "http://localhost/bye" }));
  assert.equal(url.pathname, "/id/connect/endsession");
  assert.equal(url.searchParams.get("client_id"), CLIENT_ID);
  assert.equal(url.searchParams.get("post_logout_redirect_uri"), "http://localhost/bye");
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(server.stats.revocation, 1);
  assert.equal(auth.isSignedIn, false);
});

test("timers never exceed setTimeout's limit", async () => {
  const server = fakeServer({ ttl: 10 * 365 * 24 * 3600 });
  const delays = [];
  const original = globalThis.setTimeout;
  globalThis.setTimeout = (fn, delay, ...rest) => (delays.push(delay), original(fn, 0, ...rest).unref());
  try {
    const auth = await signedIn(server, manualClock());
    await new Promise((r) => original(r, 20));
    assert.ok(delays.length > 0);
    assert.ok(delays.every((d) => d <= 2 ** 31 - 1), `delays ${delays}`);
    assert.equal(server.stats.refresh, 0, "a clamped timer that fires early re-arms instead of renewing");
    auth.close();
  } finally {
    globalThis.setTimeout = original;
  }
});

test("two clients sharing storage (two tabs) never refresh the same token twice", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const shared = sharedStorage();
  const lock = sharedLock();
  const a = await signedIn(server, clock, { storage: shared.view(), lock });
  const b = client(server, clock, { storage: shared.view(), lock });
  await b.ready();
  assert.equal(b.isSignedIn, true, "the second tab reads the first tab's tokens");
  clock.advance(3600 * 1000);
  const [ra, rb] = await Promise.all([a.fetch("Crm_Sales_Customers"), b.fetch("Crm_Sales_Customers")]);
  assert.equal(ra.status, 200);
  assert.equal(rb.status, 200);
  assert.equal(server.stats.refresh, 1, "one refresh for both tabs");
  assert.equal(server.stats.reuse, 0, "the grant was never revoked");
});

test("the low-level loop: Session, poll and handle* only", () => {
  const session = new Session({ instance: ROOT, clientId: CLIENT_ID, redirectUri: REDIRECT, discovery: false }, undefined);
  const url = session.signIn(1_700_000_000_000, undefined);
  assert.ok(url.startsWith(`${ROOT}/id/connect/authorize?`));
  const outputs = [];
  for (let o = session.poll(); ; o = session.poll()) {
    outputs.push(o.type === "http" ? `http:${o.request.kind}` : o.type);
    if (o.type === "idle" || o.type === "waitUntil") break;
  }
  // The pending sign-in is stored; the provider's keys are fetched while the user signs in,
  // and the session wants to be woken at that request's deadline.
  assert.deepEqual(outputs, ["persist", "http:keys", "waitUntil"]);
  assert.throws(() => session.handleResponse(1, 99, 200, []), (e) => e.code === "unknown_request");
  assert.throws(() => new Session({ instance: "http://demodb.my.erp.net", clientId: "a", redirectUri: REDIRECT }), (e) => e.code === "insecure_url");
  assert.throws(() => session.signIn(Number.NaN), (e) => e.code === "invalid_time");
  assert.throws(
    () => new Session({ instance: ROOT, clientId: 42, redirectUri: REDIRECT, clientSecret: "do-not-echo" }),
    (e) => e.code === "invalid_argument" && !e.message.includes("do-not-echo"),
  );
  assert.equal(applicationSecretHash("secret"), "K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=");
});

test("a cancelled sign-in (error=access_denied) is reported once and signIn() works again", async () => {
  const server = fakeServer();
  const auth = client(server, manualClock());
  const url = new URL(await auth.signIn());
  const cancelled = `${REDIRECT}?error=access_denied&error_description=The%20user%20cancelled&state=${url.searchParams.get("state")}`;
  await assert.rejects(auth.handleCallback(cancelled), (e) =>
    e instanceof ErpNetAuthError && e.code === "provider_error" && e.oauthError === "access_denied" && e.errorDescription === "The user cancelled");
  // The state was spent: the same callback again is refused before anything happens.
  await assert.rejects(auth.handleCallback(cancelled), (e) => e.code === "no_sign_in_pending");
  const again = await auth.signIn();
  assert.match(again, /\/connect\/authorize\?/);
  const event = await auth.handleCallback(server.authorize(again));
  assert.equal(event.type, "signedIn");
});

test("userInfo() goes through the renewal-aware call path: a 401 renews and retries once", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const auth = client(server, clock);
  await auth.handleCallback(server.authorize(await auth.signIn()));
  clock.advance(60_000); // past the cooldown of a brand-new token
  server.rejectNextApiCall();
  const claims = await auth.userInfo();
  assert.equal(claims.sub, "admin");
  assert.equal(server.stats.refresh, 1, "one refresh for the refused token");
  const asked = server.stats.requests.filter((r) => r.url.endsWith("/connect/userinfo"));
  assert.equal(asked.length, 2, "the refused request and its one replay");
});

test("explicit endpoints carry jwks_uri and userinfo_endpoint, so ID tokens are checked without discovery", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const id = `${ROOT}/id`;
  const auth = client(server, clock, {
    instance: undefined,
    endpoints: {
      issuer: id,
      authorization_endpoint: `${id}/connect/authorize`,
      token_endpoint: `${id}/connect/token`,
      jwks_uri: `${id}/.well-known/openid-configuration/jwks`,
      userinfo_endpoint: `${id}/connect/userinfo`,
    },
    apiRoot: `${ROOT}/api/domain/odata/`,
    idTokenAlgorithms: ["ES256"],
  });
  const event = await auth.handleCallback(server.authorize(await auth.signIn()));
  assert.equal(event.type, "signedIn");
  assert.equal(auth.claims.sub, "admin", "the ID token was validated with the configured key set");
  assert.ok(!server.stats.requests.some((r) => r.url.endsWith("/openid-configuration")), "no discovery");
  assert.equal((await auth.userInfo()).name, "SPS");
});

test("unknown option names and bad timing values are refused, not ignored", async () => {
  const base = { instance: ROOT, clientId: CLIENT_ID, redirectUri: REDIRECT };
  assert.throws(() => new Session({ ...base, redirectUrl: REDIRECT }), (e) => e.code === "invalid_argument" && /redirectUrl/.test(e.message));
  assert.throws(() => new Session({ ...base, timing: { renewBeforeMS: 1000 } }), (e) => e.code === "invalid_argument");
  assert.throws(() => new Session({ ...base, timing: { renewBeforeMs: -5 } }), (e) => e.code === "invalid_timing");
  assert.throws(() => new Session({ ...base, timing: { clockSkewMs: 1.5 } }), (e) => e.code === "invalid_timing");
  assert.throws(() => new Session({ ...base, timing: { maxRefreshAttempts: 0 } }), (e) => e.code === "invalid_timing");
  assert.throws(
    () => new Session({ clientId: CLIENT_ID, redirectUri: REDIRECT, endpoints: { issuer: ROOT, authorization_endpoint: `${ROOT}/a`, token_endpoint: `${ROOT}/t`, jwks_url: `${ROOT}/k` } }),
    (e) => e.code === "invalid_argument" && /jwks_url/.test(e.message),
  );
});

test("a storage read that fails inside a token request's send answers the request; later calls do not hang", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const storage = new MemoryStorage();
  const auth = await signedIn(server, clock, { storage, timing: { maxRefreshAttempts: 1 } });
  clock.advance(3600 * 1000 + 1);
  const get = storage.get.bind(storage);
  storage.get = async () => {
    throw new Error("disk on fire");
  };
  const errors = [];
  auth.on("error", (e) => errors.push(e.error.message));
  await assert.rejects(auth.fetch("Crm_Sales_Customers"), (e) => e.code === "renewal_unavailable");
  assert.deepEqual(errors, ["disk on fire"]);
  storage.get = get;
  clock.advance(30_000); // the cooldown
  assert.equal((await auth.fetch("Crm_Sales_Customers")).status, 200);
});

test("a token endpoint that never answers is aborted at the request's deadline", async (t) => {
  // The client's timers and deadline signals are unref'd: hold the loop for the test.
  const keepAlive = setInterval(() => {}, 50);
  t.after(() => clearInterval(keepAlive));
  const server = fakeServer();
  const clock = { now: Date.now };
  const auth = await signedIn(server, clock, { timing: { requestTimeoutMs: 200, maxRefreshAttempts: 1 } });
  const hung = [];
  const fetchHanging = async (url, init) => {
    if (url.endsWith("/connect/token")) {
      hung.push(init.signal);
      return new Promise((_, reject) => init.signal?.addEventListener("abort", () => reject(init.signal.reason)));
    }
    return server.fetch(url, init);
  };
  const stuck = client(server, clock, { fetch: fetchHanging, timing: { requestTimeoutMs: 200, maxRefreshAttempts: 1 } });
  await stuck.handleCallback(server.authorize(await stuck.signIn())).catch(() => {});
  assert.equal(hung.length, 1, "the code exchange went out");
  // The session's own deadline timer and the fetch's abort signal fire at the same instant,
  // in either order.
  const aborted = await Promise.race([
    new Promise((resolve) => (hung[0].aborted ? resolve(true) : hung[0].addEventListener("abort", () => resolve(true)))),
    new Promise((resolve) => setTimeout(() => resolve(false), 1000)),
  ]);
  assert.ok(aborted, "and was aborted at its deadline");
  await assert.rejects(stuck.fetch("Crm_Sales_Customers"), (e) => e.code === "not_signed_in");
  auth.close();
  stuck.close();
});

test("close() ends the client for good, even with a request in flight", async (t) => {
  const keepAlive = setInterval(() => {}, 50);
  t.after(() => clearInterval(keepAlive));
  const server = fakeServer({ ttl: 2 });
  let release;
  const slow = async (url, init) => {
    if (url.endsWith("/connect/token") && server.stats.token >= 1) await new Promise((r) => (release = r));
    return server.fetch(url, init);
  };
  const auth = client(server, { now: Date.now }, { fetch: slow, timing: { minRenewalIntervalMs: 100, renewIdleSessions: true } });
  await auth.handleCallback(server.authorize(await auth.signIn()));
  // The proactive refresh goes out and hangs; the client is closed meanwhile.
  await new Promise((r) => setTimeout(r, 1_200));
  assert.ok(release, "the refresh is in flight");
  auth.close();
  release();
  // The refresh that was in flight reaches the server; its answer re-arms nothing.
  await new Promise((r) => setTimeout(r, 2_500));
  assert.equal(server.stats.refresh, 1, "no refresh after close() but the one in flight");
  await assert.rejects(auth.fetch("Crm_Sales_Customers"), (e) => e.code === "closed");
});

test("two clients in one Node process sharing a session refresh once at expiry with the default lock", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const shared = sharedStorage();
  // No `lock` option: Node has no Web Locks, so the in-process lock is the default.
  const a = await signedIn(server, clock, { storage: shared.view() });
  const b = client(server, clock, { storage: shared.view() });
  await b.ready();
  clock.advance(3600 * 1000);
  const results = await Promise.all([
    ...Array.from({ length: 10 }, () => a.fetch("Crm_Sales_Customers")),
    ...Array.from({ length: 10 }, () => b.fetch("Crm_Sales_Customers")),
  ]);
  assert.ok(results.every((r) => r.status === 200));
  assert.equal(server.stats.refresh, 1, "one refresh for both clients");
  assert.equal(server.stats.reuse, 0, "the grant was never revoked");
});

test("a token answer that never ends is read only to the session's limit, then refused", async () => {
  const server = fakeServer();
  const clock = manualClock();
  let pulled = 0;
  let cancelled = false;
  const endless = () =>
    new ReadableStream({
      pull(controller) {
        const chunk = new TextEncoder().encode(`{"access_token":"${"a".repeat(64 * 1024)}`);
        pulled += chunk.byteLength;
        controller.enqueue(chunk);
      },
      cancel() {
        cancelled = true;
      },
    });
  const fetchEndless = async (url, init) =>
    url.endsWith("/connect/token") ? new Response(endless(), { headers: { "content-type": "application/json" } }) : server.fetch(url, init);
  const auth = client(server, clock, { fetch: fetchEndless });
  const failure = await auth.handleCallback(server.authorize(await auth.signIn())).catch((e) => e);
  assert.ok(failure instanceof ErpNetAuthError, String(failure));
  assert.match(failure.message, /too large/);
  assert.ok(cancelled, "the stream was cancelled");
  assert.ok(pulled <= 256 * 1024 + 2 * 64 * 1024, `read ${pulled} bytes`);
  assert.equal(auth.isSignedIn, false);
});

test("ID token signatures are checked by the platform: the session's checks and the three algorithms, node:crypto and WebCrypto alike", async () => {
  // Through the client: the fake server's ES256 tokens are verified (the wasm has no
  // signature code), and the session waits for the verdict before it signs in.
  const server = fakeServer();
  const outputs = [];
  const poll = Session.prototype.poll;
  Session.prototype.poll = function () {
    const out = poll.call(this);
    outputs.push(out.type);
    return out;
  };
  try {
    const auth = await signedIn(server, manualClock());
    assert.equal(auth.claims.sub, "admin");
  } finally {
    Session.prototype.poll = poll;
  }
  assert.ok(outputs.includes("verifySignature"), outputs.join());

  const input = "eyJhbGciOiJ0ZXN0In0.eyJzdWIiOiJhZG1pbiJ9";
  const bytes = new TextEncoder().encode(input);
  const cases = [
    ["RS256", { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, { name: "RSASSA-PKCS1-v1_5" }],
    ["PS256", { name: "RSA-PSS", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, { name: "RSA-PSS", saltLength: 32 }],
    ["ES256", { name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
  ];
  const keys = {};
  for (const verify of [verifySignature, verifyWithWebCrypto]) {
    for (const [algorithm, generate, sign] of cases) {
      const pair = await crypto.subtle.generateKey(generate, true, ["sign", "verify"]);
      const { kty, n, e, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
      const key = Object.fromEntries(Object.entries({ kty, n, e, crv, x, y }).filter(([, v]) => v !== undefined));
      keys[algorithm] = key;
      const signature = new Uint8Array(await crypto.subtle.sign(sign, pair.privateKey, bytes));
      const what = `${verify.name} ${algorithm}`;
      assert.equal(await verify({ id: 1, algorithm, key, signingInput: input, signature }), true, what);
      assert.equal(await verify({ id: 1, algorithm, key, signingInput: input, signature }), true, `${what}, the key cached`);
      const tampered = signature.slice();
      tampered[10] ^= 1;
      assert.equal(await verify({ id: 2, algorithm, key, signingInput: input, signature: tampered }), false, what);
      assert.equal(await verify({ id: 3, algorithm, key, signingInput: `${input}x`, signature }), false, what);
      // The same key and bytes under the other RSA padding: never valid.
      if (algorithm !== "ES256") {
        const other = algorithm === "RS256" ? "PS256" : "RS256";
        assert.equal(await verify({ id: 5, algorithm: other, key, signingInput: input, signature }), false, `${what} as ${other}`);
      }
    }
    assert.equal(await verify({ id: 6, algorithm: "RS256", key: keys.ES256, signingInput: input, signature: new Uint8Array(256) }), false, `${verify.name}: EC key for RS256`);
    assert.equal(await verify({ id: 8, algorithm: "ES256", key: keys.RS256, signingInput: input, signature: new Uint8Array(64) }), false, `${verify.name}: RSA key for ES256`);
    // A P-384 key with a signature it made: not ES256's curve.
    const p384 = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-384" }, true, ["sign", "verify"]);
    const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", p384.publicKey);
    const p384Signature = new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, p384.privateKey, bytes));
    assert.equal(await verify({ id: 9, algorithm: "ES256", key: { kty, crv, x, y }, signingInput: input, signature: p384Signature }), false, `${verify.name}: a P-384 key for ES256`);
    assert.equal(await verify({ id: 7, algorithm: "RS256", key: { kty: "RSA", n: "!!", e: "AQAB" }, signingInput: input, signature: new Uint8Array(256) }), false, `${verify.name}: a broken key`);
    assert.equal(await verify({ id: 4, algorithm: "HS256", key: { kty: "oct" }, signingInput: input, signature: new Uint8Array(32) }), false, verify.name);
  }
});

test("the verifySignature option does the signature math: anything but true refuses the sign-in", async () => {
  for (const [name, verify] of [["false", () => false], ["throws", () => { throw new Error("no crypto here"); }], ["truthy", () => "yes"], ["async false", async () => false]]) {
    const server = fakeServer();
    const checks = [];
    const auth = client(server, manualClock(), { verifySignature: (check) => (checks.push(check.algorithm), verify(check)) });
    const url = await auth.signIn();
    await assert.rejects(auth.handleCallback(server.authorize(url)), (error) => error instanceof ErpNetAuthError, name);
    assert.equal(auth.isSignedIn, false, name);
    assert.deepEqual(checks, ["ES256"], name);
  }
  const server = fakeServer();
  const checks = [];
  const auth = await signedIn(server, manualClock(), { verifySignature: (check) => (checks.push(check.algorithm), verifyWithWebCrypto(check)) });
  assert.equal(auth.isSignedIn, true);
  assert.deepEqual(checks, ["ES256"]);
});

test("URLs with Unicode host names: the platform's URL parser writes them in punycode, for the client and the low-level Session alike", async () => {
  const id = "https://bücher.example/id";
  const auth = new ErpNetAuth({
    clientId: CLIENT_ID,
    redirectUri: "https://app.bücher.example/callback",
    endpoints: { issuer: id, authorization_endpoint: `${id}/connect/authorize`, token_endpoint: `${id}/connect/token` },
    scope: "read",
    fetch: () => Promise.reject(new Error("no network in this test")),
  });
  const url = new URL(await auth.signIn());
  assert.equal(url.host, "xn--bcher-kva.example");
  // The redirect URI is sent exactly as configured (it must equal the registered one).
  assert.equal(url.searchParams.get("redirect_uri"), "https://app.bücher.example/callback");
  // The low-level Session gets the same: its URLs are parsed by the host's URL (full IDNA).
  const endpoints = { issuer: id, authorization_endpoint: `${id}/connect/authorize`, token_endpoint: `${id}/connect/token` };
  const session = new Session({ clientId: CLIENT_ID, redirectUri: "https://app.bücher.example/cb", endpoints, scope: "read" });
  const direct = new URL(session.signIn(1_700_000_000_000, undefined));
  assert.equal(direct.origin, "https://xn--bcher-kva.example");
  // The redirect URI is sent exactly as registered.
  assert.equal(direct.searchParams.get("redirect_uri"), "https://app.bücher.example/cb");
  // A host name no parser accepts is still a typed refusal.
  assert.throws(
    () => new Session({ clientId: CLIENT_ID, redirectUri: REDIRECT, endpoints: { ...endpoints, issuer: "https://b\u00fccher..example:99999/id" } }),
    (e) => e.code === "invalid_url" && /issuer/.test(e.message),
  );
});

test("an ERP.net session's request limit: a few calls in flight, the rest in order, 429s retried before any caller sees one", async (t) => {
  const keepAlive = setInterval(() => {}, 50);
  t.after(() => clearInterval(keepAlive));
  // The platform's rule: one request runs, five wait, the next is answered 429.
  const limited = (server) => {
    let active = 0;
    const seen = { max: 0, refused: 0 };
    const fetch = async (url, init) => {
      if (!url.includes("/api/domain/odata/")) return server.fetch(url, init);
      if (active >= 6) {
        seen.refused++;
        return new Response("", { status: 429 });
      }
      active++;
      seen.max = Math.max(seen.max, active);
      await new Promise((resolve) => setTimeout(resolve, 2));
      try {
        return await server.fetch(url, init);
      } finally {
        active--;
      }
    };
    return { fetch, seen };
  };
  const clock = { now: Date.now };
  for (const [label, apiConcurrency, timing] of [
    ["default (3 in flight)", undefined, {}],
    ["no limit, retries only", null, { throttleRetryBaseMs: 5, throttleRetryMaxMs: 50, maxThrottleRetries: 20 }],
  ]) {
    const server = fakeServer();
    const { fetch, seen } = limited(server);
    const options = { fetch, timing, ...(apiConcurrency === undefined ? {} : { apiConcurrency }) };
    const auth = await signedIn(server, clock, options);
    const statuses = await Promise.all(Array.from({ length: 40 }, (_, i) => auth.fetch(`Crm_Sales_Customers?$skip=${i}`).then((r) => r.status)));
    assert.deepEqual(new Set(statuses), new Set([200]), label);
    if (apiConcurrency === undefined) {
      assert.ok(seen.max <= 3, `${label}: ${seen.max} in flight`);
      assert.equal(seen.refused, 0, label);
    } else {
      assert.ok(seen.refused > 0, `${label}: the server refused some (${seen.refused}), the callers saw none`);
    }
    auth.close();
  }
});

test("a 429's Retry-After reaches the session: one longer than the retry limit goes to the caller, none is retried", async () => {
  for (const [label, retryAfter, expected, apiRequests] of [["Retry-After: 5 (s), above the 500 ms limit", "5", 429, 1], ["no Retry-After", null, 200, 2]]) {
    const server = fakeServer();
    let sent = 0;
    const fetch = async (url, init) => {
      if (!url.includes("/api/domain/odata/")) return server.fetch(url, init);
      if (sent++ > 0) return server.fetch(url, init);
      const headers = { "content-type": "text/plain", "x-request-id": "r1", ...(retryAfter === null ? {} : { "Retry-After": retryAfter }) };
      return new Response("busy", { status: 429, headers });
    };
    const auth = await signedIn(server, { now: Date.now }, { fetch, timing: { throttleRetryBaseMs: 5, throttleRetryMaxMs: 500 } });
    const response = await auth.fetch("Crm_Sales_Customers");
    assert.equal(response.status, expected, label);
    assert.equal(sent, apiRequests, label);
    auth.close();
  }
});

test("a streamed body is buffered once for its replays, and a too large one is refused with a code", async () => {
  const server = fakeServer();
  const auth = await signedIn(server, manualClock());
  const stream = (chunks) => new ReadableStream({ pull(c) { const next = chunks.shift(); next ? c.enqueue(next) : c.close(); } });
  server.rejectNextApiCall(); // a 401 first: the replay must carry the same bytes
  const response = await auth.fetch("Crm_Sales_Customers", { method: "POST", body: stream([new TextEncoder().encode('{"Name":'), new TextEncoder().encode('"x"}')]), duplex: "half" });
  assert.equal(response.status, 200);
  assert.equal((await response.json()).echo, '{"Name":"x"}');
  const big = new Uint8Array(1024 * 1024);
  await assert.rejects(
    auth.fetch("Crm_Sales_Customers", { method: "POST", body: stream(Array.from({ length: 17 }, () => big)), duplex: "half" }),
    (e) => e.code === "body_too_large",
  );
});

test("a long poll (expectedDurationMs) renews a token that would expire during it, first", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const auth = await signedIn(server, clock);
  clock.advance(50 * 60_000);
  assert.equal((await auth.fetch("Crm_Sales_Customers")).status, 200);
  assert.equal(server.stats.refresh, 0, "a short call goes with the current token");
  const response = await auth.fetch("Crm_Sales_Customers?WaitForChanges", { expectedDurationMs: 15 * 60_000 });
  assert.equal(response.status, 200);
  assert.equal(server.stats.refresh, 1, "renewed before the long call");
  await assert.rejects(auth.fetch("x", { expectedDurationMs: -1 }), (e) => e.code === "invalid_argument");
});

test("a reference token (ERP.net Automation): a static Bearer, confined, and a typed end on 401", async () => {
  const server = fakeServer();
  const seen = [];
  const fetch = async (url, init) => {
    if (url.includes("auto-discovery")) return new Response("", { status: 404 });
    seen.push({ url, authorization: new Headers(init.headers).get("authorization") });
    return new Response("{}", { status: seen.length === 1 ? 200 : 401 });
  };
  const auth = new ErpNetAuth({ instance: ROOT, referenceToken: "enrt_abc123", fetch });
  await auth.ready();
  assert.equal(auth.isSignedIn, true);
  assert.equal((await auth.fetch("Crm_Sales_Customers")).status, 200);
  assert.deepEqual(seen[0], { url: `${ROOT}/api/domain/odata/Crm_Sales_Customers`, authorization: "Bearer enrt_abc123" });
  await assert.rejects(auth.fetch("https://evil.example/x"), (e) => e.code === "foreign_origin");
  const ended = [];
  auth.on("signInRequired", (e) => ended.push(e.reason ?? e));
  await assert.rejects(auth.fetch("Crm_Sales_Customers"), (e) => e.code === "reference_token_rejected" || /reference token/.test(e.message));
  assert.equal(seen.filter((r) => r.url.includes("/connect/")).length, 0, "no token request, ever");
  assert.equal(server.stats.token, 0);
  assert.equal(ended.length, 1);
});

test("ERP.net auto-discovery: the instance root is enough; calls go to the discovered OData root, profile() to /me", async () => {
  const server = fakeServer();
  const sites = {
    Host: "demodb.my.erp.net",
    WebSites: [
      { Type: "ID", Status: "Working", Url: `${ROOT}/id` },
      { Type: "DomainAPI", Status: "Working", Url: `${ROOT}/api`, AdditionalProperties: { ODataServiceRoot: `${ROOT}/api/domain/odata/` } },
      { Type: "UserProfile", Status: "Working", Url: `${ROOT}/profile` },
    ],
  };
  const fetch = async (url, init) => {
    if (url === `${ROOT}/tools/auto-discovery`) return Response.json(sites);
    if (url === `${ROOT}/profile/me`) {
      const ok = /^Bearer at-/.test(new Headers(init.headers).get("authorization") ?? "");
      return ok ? Response.json({ id: "6f1c", login: "admin", name: "SPS" }) : new Response("", { status: 401 });
    }
    return server.fetch(url, init);
  };
  const auth = await signedIn(server, manualClock(), { fetch });
  assert.equal(auth.profileSite, `${ROOT}/profile/`);
  const profile = await auth.profile();
  assert.deepEqual([profile.id, profile.login], ["6f1c", "admin"]);
  assert.equal((await auth.fetch("Crm_Sales_Customers")).status, 200);
});

test("a SharedProvider: the provider discovered once for many clients, their snapshots hold only the user", async () => {
  const { SharedProvider } = await import("../../pkg/node.js");
  const server = fakeServer();
  const clock = manualClock();
  server.useClock(clock.now);
  const provider = new SharedProvider({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT });
  const storage = new MemoryStorage();
  const make = (key) => new ErpNetAuth({ provider, storage, storageKey: key, fetch: server.fetch, now: clock.now });
  // Ten clients start at once: their discovery and sites requests go out once.
  const clients = Array.from({ length: 10 }, (_, i) => make(`user-${i}`));
  const urls = await Promise.all(clients.map((c) => c.signIn()));
  const discoveries = server.stats.requests.filter((r) => r.url.endsWith("/.well-known/openid-configuration"));
  assert.equal(discoveries.length, 1, "one discovery for ten clients");
  await clients[0].handleCallback(server.authorize(urls[0]));
  assert.equal((await clients[0].fetch("Crm_Sales_Customers")).status, 200);
  const stored = JSON.parse(storage.get("user-0"));
  assert.ok(stored.tokens, "the user's tokens are stored");
  assert.equal(stored.metadata, undefined, "no provider metadata in the user's snapshot");
  assert.equal(stored.jwks, undefined);
  // A client made later (a reloaded session) asks the provider nothing.
  const before = server.stats.requests.length;
  const later = make("user-0");
  await later.ready();
  assert.equal(later.isSignedIn, true);
  assert.equal((await later.fetch("Crm_Sales_Customers")).status, 200);
  assert.deepEqual(server.stats.requests.slice(before).map((r) => new URL(r.url).pathname), ["/api/domain/odata/Crm_Sales_Customers"]);
  for (const c of [...clients, later]) c.close();
});

test("a client-credentials client refuses a store shared between processes (ERP.net's licence rules)", () => {
  const shared = { shared: true, get: () => null, set: () => true, remove: () => {} };
  assert.throws(
    () => new ErpNetAuth({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, clientCredentials: true, storage: shared }),
    (error) => error instanceof ErpNetAuthError && error.code === "shared_store_not_allowed",
  );
});

test("compare-and-swap: a write that lost its race is refused, and the winner's tokens are adopted", async () => {
  const server = fakeServer({ ttl: 60 });
  const clock = manualClock();
  const inner = new MemoryStorage();
  let armed = false;
  // Another process (its lock bypassed) stores a newer state just before this client's
  // renewal is written.
  const storage = {
    get: (key) => inner.get(key),
    remove: (key) => inner.remove(key),
    set(key, value, write) {
      if (armed && write && write.generation > write.baseGeneration) {
        armed = false;
        const newer = JSON.parse(value);
        inner.set(key, JSON.stringify({ ...newer, generation: write.generation + 5, tokens: { ...newer.tokens, access_token: "at-theirs" } }));
      }
      return inner.set(key, value, write);
    },
  };
  const auth = await signedIn(server, clock, { storage, storageKey: "k" });
  const conflicts = [];
  auth.on("storageConflict", (event) => conflicts.push(event));
  armed = true;
  clock.advance(61_000);
  await auth.fetch("Crm_Sales_Customers");
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(conflicts.length, 1, "the renewal's write was refused");
  assert.equal(JSON.parse(inner.get("k")).tokens.access_token, "at-theirs", "the winner's state stays stored");
  const before = server.stats.requests.length;
  await auth.fetch("Crm_Sales_Customers").catch(() => {});
  const next = server.stats.requests.slice(before).find((r) => r.url.includes("/odata/"));
  assert.equal(new Headers(next.headers).get("authorization"), "Bearer at-theirs", "the client adopted the winner's tokens");
  auth.close();
});

test("a SharedProvider in a fresh process completes a sign-in another process started (it discovers first)", async () => {
  const { SharedProvider } = await import("../../pkg/node.js");
  const server = fakeServer();
  const clock = manualClock();
  server.useClock(clock.now);
  const options = { instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT };
  const storage = new MemoryStorage();
  const started = new ErpNetAuth({ provider: new SharedProvider(options), storage, storageKey: "s", fetch: server.fetch, now: clock.now });
  const url = await started.signIn();
  started.close();
  assert.equal(JSON.parse(storage.get("s")).metadata, undefined, "the stored sign-in holds no provider metadata");
  // Another process, its own SharedProvider, nothing discovered yet.
  const other = new ErpNetAuth({ provider: new SharedProvider(options), storage, storageKey: "s", fetch: server.fetch, now: clock.now });
  const event = await other.handleCallback(server.authorize(url));
  assert.equal(event.type, "signedIn");
  assert.equal((await other.fetch("Crm_Sales_Customers")).status, 200);
  other.close();
});

test("state read before an asynchronous storage has loaded throws not_ready, never a false 'signed out'; a synchronous one is known at construction", async () => {
  const server = fakeServer();
  const clock = manualClock();
  const memory = new MemoryStorage();
  (await signedIn(server, clock, { storage: memory, storageKey: "k" })).close();
  // IndexedDB-like: every operation answers later.
  const later = { get: async (key) => memory.get(key), set: async (key, value, write) => memory.set(key, value, write), remove: async (key) => memory.remove(key) };
  const auth = client(server, clock, { storage: later, storageKey: "k" });
  const notReady = (e) => e instanceof ErpNetAuthError && e.code === "not_ready" && /await auth\.ready\(\)/.test(e.message);
  for (const read of [() => auth.isSignedIn, () => auth.claims, () => auth.grantedScope, () => auth.profileSite]) assert.throws(read, notReady);
  await auth.ready();
  assert.equal(auth.isSignedIn, true);
  assert.equal(auth.claims.sub, "admin");
  auth.close();

  // A synchronous storage (memory, localStorage, sessionStorage): nothing to wait for.
  const known = client(server, clock, { storage: memory, storageKey: "k" });
  assert.equal(known.isSignedIn, true);
  assert.equal(known.claims.sub, "admin");
  assert.equal(client(server, clock, { storage: memory, storageKey: "nobody" }).isSignedIn, false);
  assert.equal((await known.fetch("Crm_Sales_Customers")).status, 200);
  known.close();

  // A storage that fails: the state stays unknown, and says why.
  const failing = client(server, clock, { storage: { get: async () => Promise.reject(new Error("store down")), set: async () => true, remove: async () => {} } });
  await assert.rejects(failing.ready());
  assert.throws(() => failing.isSignedIn, (e) => e.code === "not_ready" && e.cause !== undefined);
});

test("ErpNetAuth's and SharedProvider's options are checked at construction, each mistake a typed error", async () => {
  const { SharedProvider } = await import("../../pkg/node.js");
  const base = { instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT };
  const later = { get: async () => null, set: async () => true, remove: async () => {} };
  const refused = (options, code, pattern) =>
    assert.throws(() => new ErpNetAuth(options), (e) => e instanceof ErpNetAuthError && e.code === code && pattern.test(e.message), JSON.stringify(Object.keys(options ?? {})));
  refused(undefined, "invalid_argument", /options/);
  refused({ ...base, renewBeforeMS: 1 }, "invalid_argument", /renewBeforeMS/);
  refused({ ...base, instance: 5 }, "invalid_argument", /instance/);
  refused({ ...base, timing: { requestTimeoutMs: -1 } }, "invalid_timing", /./);
  refused({ ...base, redirectUri: "http://app.example.com/callback" }, "insecure_url", /redirect/);
  refused({ ...base, redirectUri: "javascript:alert(1)" }, "invalid_url", /redirect_uri/);
  // Also with a storage that answers later: the core's options do not wait for it.
  refused({ ...base, storage: later, renewBeforeMS: 1 }, "invalid_argument", /renewBeforeMS/);
  refused({ ...base, storage: {} }, "invalid_argument", /storage/);
  refused({ ...base, storage: "localStorage" }, "invalid_argument", /storage/);
  refused({ ...base, storageKey: "" }, "invalid_argument", /storageKey/);
  refused({ ...base, storageKey: 7 }, "invalid_argument", /storageKey/);
  for (const name of ["fetch", "now", "lock", "verifySignature"]) refused({ ...base, [name]: "yes" }, "invalid_argument", new RegExp(name));
  refused({ provider: base }, "invalid_argument", /provider/);
  const provider = new SharedProvider(base);
  // With a provider the client's options are the provider's: one given here would be ignored.
  refused({ provider, clientId: "someone.else" }, "invalid_argument", /clientId/);
  assert.ok(new ErpNetAuth({ provider, storageKey: "user-1", storage: later }));
  assert.throws(() => new SharedProvider({ ...base, renewBeforeMS: 1 }), (e) => e instanceof ErpNetAuthError && e.code === "invalid_argument" && /renewBeforeMS/.test(e.message));
  assert.throws(() => new SharedProvider(base, { reuseMs: "10s" }), (e) => e instanceof ErpNetAuthError && e.code === "invalid_argument" && /reuseMs/.test(e.message));
});

test("the provider's error_description, cleaned and capped, is in the error's message (code exchange, callback, refresh)", async () => {
  const description = `The code\u0007 was\r\n already used ${"x".repeat(600)}`;
  const cleaned = `The code was already used ${"x".repeat(600)}`.slice(0, 500);
  const server = fakeServer();
  const clock = manualClock();
  let refuse = true;
  const fetch = async (url, init) =>
    refuse && url.endsWith("/connect/token")
      ? Response.json({ error: "invalid_grant", error_description: description }, { status: 400 })
      : server.fetch(url, init);
  const auth = client(server, clock, { fetch });
  await assert.rejects(auth.handleCallback(server.authorize(await auth.signIn())), (e) => {
    assert.equal(e.code, "oauth_error");
    assert.equal(e.oauthError, "invalid_grant");
    assert.equal(e.errorDescription, cleaned);
    assert.ok(e.message.includes(`invalid_grant: ${cleaned}`), e.message);
    assert.ok(!e.message.includes("\u0007") && !e.message.includes("\n"));
    return true;
  });
  const state = new URL(await auth.signIn()).searchParams.get("state");
  await assert.rejects(auth.handleCallback(`${REDIRECT}?error=access_denied&error_description=The+user+said+no&state=${state}`), (e) => e.oauthError === "access_denied" && e.message.includes("access_denied: The user said no"));
  refuse = false;
  await auth.handleCallback(server.authorize(await auth.signIn()));
  refuse = true;
  clock.advance(3600 * 1000 + 1);
  await assert.rejects(auth.fetch("Crm_Sales_Customers"), (e) => e.code === "sign_in_required" && e.message.includes(`invalid_grant: ${cleaned}`));
  auth.close();
});

// A fetch that never answers `hang(url)` requests, not even when aborted (a dead peer behind a
// transport that ignores the signal): it records each such request's signal and send time.
function hangingFetch(server, hang) {
  const hung = [];
  const fetch = (url, init) => {
    if (!hang(url)) return server.fetch(url, init);
    hung.push({ url, signal: init.signal, sentAt: Date.now() });
    return new Promise(() => {});
  };
  return { fetch, hung };
}

/** Ms from `sentAt` until `signal` aborted with a TimeoutError, or null if it did not within `ms`. */
const timedOutAfter = (signal, sentAt, ms) =>
  Promise.race([
    new Promise((resolve) => {
      const done = () => resolve(signal.reason?.name === "TimeoutError" ? Date.now() - sentAt : null);
      if (signal?.aborted) done();
      else signal?.addEventListener("abort", done);
    }),
    new Promise((resolve) => setTimeout(() => resolve(null), ms)),
  ]);

test("a new session's first discovery carries its time limit: a discovery that never answers is aborted at sendTime + requestTimeoutMs", async (t) => {
  const keepAlive = setInterval(() => {}, 50);
  t.after(() => clearInterval(keepAlive));
  const server = fakeServer();
  const { fetch, hung } = hangingFetch(server, (url) => url.endsWith("/.well-known/openid-configuration"));
  const auth = client(server, { now: Date.now }, { fetch, timing: { requestTimeoutMs: 200 } });
  t.after(() => auth.close());
  const ready = new Promise((resolve) => auth.on("providerReady", resolve));
  const signIn = auth.signIn();
  while (hung.length === 0) await new Promise((r) => setTimeout(r, 5));
  const after = await timedOutAfter(hung[0].signal, hung[0].sentAt, 2_000);
  assert.ok(after !== null && after >= 150, `the hung discovery was aborted by its time limit (after ${after} ms)`);
  // The ERP.net preset stands its fixed paths in for the discovery that failed.
  assert.equal((await ready).discovered, false);
  assert.ok((await signIn).startsWith(`${ROOT}/id/connect/authorize?`));
});

test("a SharedProvider's shared load is abandoned when its requester's time limit passes: a later sign-in loads again, never the hung load", async (t) => {
  const keepAlive = setInterval(() => {}, 50);
  t.after(() => clearInterval(keepAlive));
  const { SharedProvider } = await import("../../pkg/node.js");
  const server = fakeServer();
  let first = true;
  const { fetch, hung } = hangingFetch(server, (url) => {
    if (!url.endsWith("/.well-known/openid-configuration") || !first) return false;
    first = false;
    return true;
  });
  const provider = new SharedProvider({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT, timing: { requestTimeoutMs: 200 } });
  const make = (key) => new ErpNetAuth({ provider, storage: new MemoryStorage(), storageKey: key, fetch, now: Date.now });
  const a = make("a");
  t.after(() => a.close());
  // The first sign-in meets the hung discovery; it ends by its time limit either way.
  await Promise.race([a.signIn().catch(() => {}), new Promise((r) => setTimeout(r, 3_000))]);
  assert.equal(hung.length, 1);
  const discoveries = () => server.stats.requests.filter((r) => r.url.endsWith("/.well-known/openid-configuration")).length;
  // A later sign-in asks again and gets the document.
  const b = make("b");
  t.after(() => b.close());
  const ready = new Promise((resolve) => b.on("providerReady", resolve));
  const url = await Promise.race([b.signIn(), new Promise((_, reject) => setTimeout(() => reject(new Error("the later sign-in hung")), 3_000))]);
  assert.equal(discoveries(), 1, "the later sign-in sent its own discovery (the fake server saw it)");
  assert.equal((await ready).discovered, true, "and it was discovered, not the fixed paths standing in");
  assert.ok(url.startsWith(`${ROOT}/id/connect/authorize?`));
});
