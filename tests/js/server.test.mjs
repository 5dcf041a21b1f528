// The server entry (erpnet-auth/server) in Node through a fake fetch: cookies, rotation,
// the sealed pending sign-in, one code exchange per callback, cross-site requests, eviction
// from memory and reload from the store, typed failures, events and log records.
import { test } from "node:test";
import assert from "node:assert/strict";

import { init, ErpNetAuthError, MemoryStorage } from "../../pkg/node.js";
import { withProcessLock } from "../../pkg/loop.js";
import { ServerAuth, readCookie } from "../../pkg/server.js";
import { fakeServer, ROOT, CLIENT_ID, SECRET, REDIRECT } from "./fake-server.mjs";

await init();
const APP = "http://localhost";
const KEY = "a-test-only-cookie-key-of-32-characters!";

function serverAuth(server, extra = {}) {
  return new ServerAuth({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT, fetch: server.fetch, ...extra });
}

/** A browser's cookie jar for the app: Set-Cookie applied, Max-Age=0 deletes. */
function browser() {
  const jar = new Map();
  return {
    jar,
    get header() {
      return [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
    },
    apply(response) {
      for (const line of response.headers.getSetCookie()) {
        const [pair, ...attributes] = line.split(";");
        const at = pair.indexOf("=");
        const [name, value] = [pair.slice(0, at), pair.slice(at + 1)];
        if (attributes.some((a) => a.trim() === "Max-Age=0")) jar.delete(name);
        else jar.set(name, value);
      }
      return response;
    },
    request(path, init = {}) {
      const cookie = this.header;
      return new Request(`${APP}${path}`, { ...init, headers: { ...(cookie ? { cookie } : {}), ...init.headers } });
    },
  };
}

const setCookieNames = (response) => response.headers.getSetCookie().map((c) => c.slice(0, c.indexOf("=")));

/** Signs `user` (a browser) in; returns the callback's answer. */
async function signIn(auth, server, user = browser()) {
  const started = user.apply(await auth.signIn(user.request("/login")));
  assert.equal(started.status, 302);
  const back = new URL(server.authorize(started.headers.get("location")));
  const done = user.apply(await auth.callback(user.request(`/signin-callback${back.search}`)));
  assert.equal(done.status, 302, await done.clone().text());
  return user;
}

/** A MemoryStorage that counts writes and can be made to fail. */
function countingStorage() {
  const inner = new MemoryStorage();
  const counts = { get: 0, set: 0, remove: 0 };
  let failing = false;
  const fail = () => {
    if (failing) throw new ErpNetAuthError("storage_unavailable", "the store is down (test)");
  };
  return {
    counts,
    inner,
    fail: (on = true) => (failing = on),
    get: (key) => (counts.get++, fail(), inner.get(key)),
    set: (key, value, write) => (counts.set++, fail(), inner.set(key, value, write)),
    remove: (key) => (counts.remove++, fail(), inner.remove(key)),
  };
}

test("the cookies: HttpOnly, SameSite=Lax, Path=/; over HTTPS Secure and __Host-", async () => {
  const server = fakeServer();
  const local = serverAuth(server);
  const cookie = (await local.signIn(new Request(`${APP}/login`))).headers.getSetCookie()[0];
  assert.match(cookie, /^erpnet-session-signin=v1\.[\w-]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=900$/);
  const secure = serverAuth(server, { redirectUri: "https://app.example/signin-callback" });
  assert.equal(secure.cookieName, "__Host-erpnet-session");
  const over = (await secure.signIn(new Request("https://app.example/login"))).headers.getSetCookie()[0];
  assert.match(over, /^__Host-erpnet-session-signin=v1\.[\w-]+; Path=\/; HttpOnly; SameSite=Lax; Secure; Max-Age=900$/);
  const user = await signIn(local, server);
  assert.match(user.jar.get("erpnet-session"), /^[\w-]{43}$/);
  assert.equal(user.jar.has("erpnet-session-signin"), false, "the sign-in cookie is cleared once it is spent");
  assert.throws(() => serverAuth(server, { redirectUri: "http://app.example/signin-callback" }), (e) => e.code === "insecure_url");
  assert.throws(() => serverAuth(server, { responseMode: "form_post" }), (e) => e.code === "invalid_config");
  assert.throws(() => serverAuth(server, { clientCredentials: true }), (e) => e.code === "invalid_config");
  local.close();
  secure.close();
});

test("readCookie matches the exact name", () => {
  assert.equal(readCookie("notsid=a; sid=b", "sid"), "b");
  assert.equal(readCookie("notsid=a", "sid"), undefined);
  assert.equal(readCookie(" sid = c ;x=1", "sid"), "c");
  assert.equal(readCookie(null, "sid"), undefined);
});

test("/login keeps nothing on the server: the pending sign-in rides in a sealed, expiring cookie", async () => {
  const server = fakeServer();
  const storage = countingStorage();
  let now = Date.now();
  const auth = serverAuth(server, { storage, now: () => now }); // a key of its own, made at construction
  for (let i = 0; i < 50; i++) await auth.signIn(new Request(`${APP}/login`));
  assert.deepEqual(storage.counts, { get: 0, set: 0, remove: 0 }, "no store access for a sign-in that has not come back");
  assert.equal(auth.sessionsInMemory, 0);

  const started = await auth.signIn(new Request(`${APP}/login`));
  const sealed = readCookie(started.headers.getSetCookie()[0].split(";")[0], "erpnet-session-signin");
  const authorization = new URL(started.headers.get("location"));
  for (const secret of [authorization.searchParams.get("state"), authorization.searchParams.get("nonce")]) {
    assert.ok(!sealed.includes(secret), "the cookie is encrypted, not signed");
  }
  const back = new URL(server.authorize(authorization.href));
  const callback = (cookie) => auth.callback(new Request(`${APP}/signin-callback${back.search}`, { headers: { cookie: `erpnet-session-signin=${cookie}` } }));
  // One bit flipped, another key's seal, or the time past its expiry: not a sign-in.
  const flipped = sealed.slice(0, -2) + (sealed.at(-2) === "A" ? "B" : "A") + sealed.at(-1);
  assert.equal((await (await callback(flipped)).json()).code, "no_sign_in");
  const other = serverAuth(server, { cookieKey: KEY });
  const foreign = readCookie((await other.signIn(new Request(`${APP}/login`))).headers.getSetCookie()[0].split(";")[0], "erpnet-session-signin");
  assert.equal((await (await callback(foreign)).json()).code, "no_sign_in");
  now += 16 * 60_000;
  assert.equal((await (await callback(sealed)).json()).code, "no_sign_in", "expired");
  now -= 16 * 60_000;
  const done = await callback(sealed);
  assert.equal(done.status, 302);
  assert.equal(storage.counts.set, 1, "one write: the signed-in session");
  auth.close();
  other.close();
});

test("the same callback twice (a double submit): one code exchange, both answers carry the same session", async () => {
  const server = fakeServer();
  const auth = serverAuth(server);
  const user = browser();
  const started = user.apply(await auth.signIn(user.request("/login")));
  const back = new URL(server.authorize(started.headers.get("location")));
  const tokenRequests = server.stats.token;
  const answers = await Promise.all([auth.callback(user.request(`/signin-callback${back.search}`)), auth.callback(user.request(`/signin-callback${back.search}`))]);
  assert.equal(server.stats.token - tokenRequests, 1, "one code exchange");
  assert.deepEqual(answers.map((a) => a.status), [302, 302]);
  const sessions = answers.map((a) => readCookie(a.headers.getSetCookie().join("; "), "erpnet-session"));
  assert.equal(sessions[0], sessions[1]);
  // Retried after it completed (the browser had not applied the first answer yet).
  const late = await auth.callback(user.request(`/signin-callback${back.search}`));
  assert.equal(late.status, 302);
  assert.equal(readCookie(late.headers.getSetCookie().join("; "), "erpnet-session"), sessions[0]);
  assert.equal(server.stats.token - tokenRequests, 1, "still one code exchange");
  user.apply(answers[0]);
  assert.equal((await auth.user(user.request("/"))).sub, "admin");
  auth.close();
});

test("a cross-site /login keeps the signed-in session; the sign-in that completes ends it (revoked, removed)", async () => {
  const server = fakeServer();
  const storage = new MemoryStorage();
  const auth = serverAuth(server, { storage });
  const user = await signIn(auth, server);
  const first = user.jar.get("erpnet-session");
  // A top-level navigation from another site carries the Lax cookie.
  const login = user.apply(await auth.signIn(user.request("/login")));
  assert.ok(!setCookieNames(login).includes("erpnet-session"), "the session cookie is untouched");
  assert.equal(user.jar.get("erpnet-session"), first);
  assert.equal((await auth.user(user.request("/"))).sub, "admin", "still signed in");
  assert.equal((await auth.fetch(user.request("/customers"), "Crm_Sales_Customers")).status, 200);
  // The new sign-in completes: the old session ends as a sign-out ends it.
  const revocations = server.stats.revocation;
  const back = new URL(server.authorize(login.headers.get("location")));
  const done = user.apply(await auth.callback(user.request(`/signin-callback${back.search}`)));
  assert.equal(done.status, 302);
  assert.notEqual(user.jar.get("erpnet-session"), first);
  assert.equal(storage.get(`session:${first}`), null, "the old session left the store");
  assert.equal(server.stats.revocation - revocations, 1, "its refresh token was revoked");
  assert.equal(await auth.user(new Request(`${APP}/`, { headers: { cookie: `erpnet-session=${first}` } })), null);
  assert.equal((await auth.user(user.request("/"))).sub, "admin");
  auth.close();
});

test("a forged callback (wrong state) leaves the sign-in in progress; a spent one is cleared", async () => {
  const server = fakeServer();
  const auth = serverAuth(server);
  const user = browser();
  const started = user.apply(await auth.signIn(user.request("/login")));
  const forged = await auth.callback(user.request("/signin-callback?code=x&state=forged"));
  assert.equal(forged.status, 400);
  assert.equal((await forged.json()).code, "state_mismatch");
  assert.deepEqual(forged.headers.getSetCookie(), [], "nothing cleared");
  const back = new URL(server.authorize(started.headers.get("location")));
  const done = user.apply(await auth.callback(user.request(`/signin-callback${back.search}`)));
  assert.equal(done.status, 302, "the real callback still signs in");

  // State matched but the provider refused the code: the pending sign-in is spent and cleared.
  const again = user.apply(await auth.signIn(user.request("/login")));
  const state = new URL(again.headers.get("location")).searchParams.get("state");
  const refused = await auth.callback(user.request(`/signin-callback?code=unknown&state=${state}`));
  assert.equal(refused.status, 400);
  assert.equal((await refused.json()).code, "oauth_error");
  assert.match(refused.headers.getSetCookie().join(), /erpnet-session-signin=; .*Max-Age=0/);
  assert.ok(!setCookieNames(refused).includes("erpnet-session"), "the signed-in session is kept");
  auth.close();
});

test("ServerAuth validates its options at construction, with typed errors", () => {
  const server = fakeServer();
  const refused = (extra, code) =>
    assert.throws(() => serverAuth(server, extra), (e) => e instanceof ErpNetAuthError && e.code === code, `${JSON.stringify(extra)} -> ${code}`);
  refused({ clientSecret: undefined }, "missing_setting"); // an unset ERP_SECRET
  refused({ clientSecret: "" }, "missing_setting");
  assert.ok(serverAuth(server, { clientSecret: undefined, clientAuth: "none" }), "a public client, asked for");
  refused({ redirectUri: "javascript:alert(1)//" }, "insecure_url");
  refused({ redirectUri: "javascript:alert(1)//", appOrigin: "https://app.example" }, "insecure_url");
  refused({ redirectUri: "not a url" }, "invalid_config");
  refused({ redirectUri: undefined }, "missing_setting");
  refused({ appOrigin: "https://app.example/path" }, "invalid_config");
  refused({ idleMs: -1 }, "invalid_config");
  refused({ maxSessionsInMemory: 0 }, "invalid_config");
  refused({ afterSignIn: 42 }, "invalid_config");
  refused({ afterSignIn: "javascript:alert(1)" }, "invalid_config");
  refused({ cookieName: "a b" }, "invalid_config");
  refused({ storage: {} }, "invalid_config");
  refused({ cookieKey: "short" }, "invalid_config");
  refused({ logger: 3 }, "invalid_config");
  refused({ fetch: "nope" }, "invalid_config");
  refused({ storage: { shared: true, get() {}, set() {}, remove() {} } }, "missing_setting"); // several processes: one cookieKey
  refused({ renewBeforeMS: 1 }, "invalid_argument"); // the client's options too, at construction
  refused({ scope: 7 }, "invalid_argument");
});

test("idle sessions leave memory and come back from the store; the memory is bounded", async () => {
  const server = fakeServer();
  const storage = new MemoryStorage();
  const auth = serverAuth(server, { storage, idleMs: 10, maxSessionsInMemory: 2 });
  const users = [];
  for (let i = 0; i < 3; i++) users.push(await signIn(auth, server));
  for (const user of users) assert.equal((await auth.fetch(user.request("/customers"), "Crm_Sales_Customers")).status, 200);
  assert.ok(auth.sessionsInMemory <= 2, `at most 2 in memory, ${auth.sessionsInMemory}`);
  await new Promise((resolve) => setTimeout(resolve, 1_200));
  assert.equal(auth.sessionsInMemory, 0, "idle ones dropped");
  const discoveries = server.stats.requests.filter((r) => r.url.endsWith("openid-configuration")).length;
  assert.equal((await auth.fetch(users[0].request("/customers"), "Crm_Sales_Customers")).status, 200, "reloaded from the store");
  assert.equal(auth.sessionsInMemory, 1);
  assert.equal(server.stats.requests.filter((r) => r.url.endsWith("openid-configuration")).length, discoveries, "no new discovery");
  assert.equal(discoveries, 1, "one discovery for every user of the process");
  assert.equal(await auth.user(new Request(`${APP}/`, { headers: { cookie: "erpnet-session=" + "A".repeat(43) } })), null, "an unknown id is not signed in");
  assert.equal(auth.sessionsInMemory, 1, "and creates nothing");
  auth.close();
});

test("concurrent first requests of one session load one client: one renewal for all of them", async () => {
  const server = fakeServer({ ttl: 1 });
  const storage = new MemoryStorage();
  // Counts token-lock acquisitions: each client in memory renewing takes it once.
  let locks = 0;
  const lock = (name, fn) => (locks++, withProcessLock(name, fn));
  const auth = serverAuth(server, { storage, lock });
  const user = await signIn(auth, server);
  auth.close(); // nothing in memory: the next requests load the session from the store
  await new Promise((resolve) => setTimeout(resolve, 1_100)); // the access token expired
  const refreshesBefore = server.stats.refresh;
  const locksBefore = locks;
  const responses = await Promise.all(Array.from({ length: 20 }, () => auth.fetch(user.request("/customers"), "Crm_Sales_Customers")));
  assert.deepEqual([...new Set(responses.map((r) => r.status))], [200]);
  assert.equal(auth.sessionsInMemory, 1, "one client for the session");
  assert.equal(server.stats.refresh - refreshesBefore, 1, "one refresh for the 20 calls");
  assert.equal(locks - locksBefore, 1, "one client renewed (several would each take the lock)");
  auth.close();
});

test("the server entry answers its own failures (discovery, storage) with a plain typed answer", async () => {
  const server = fakeServer();
  const storage = countingStorage();
  let discoveryDown = true;
  const fetch = (url, init) => (discoveryDown && String(url).includes("openid-configuration") ? Promise.reject(new TypeError("fetch failed")) : server.fetch(url, init));
  const auth = serverAuth(server, { storage, fetch });
  const plain = async (response, status, code) => {
    assert.equal(response.status, status);
    assert.equal(response.headers.get("content-type"), "application/json");
    const body = await response.json();
    assert.equal(body.code, code);
    assert.deepEqual(Object.keys(body).sort(), ["code", "message"]);
    assert.doesNotMatch(body.message, /\bat |\/|\\/, "no stack, no path");
  };
  // A provider without the ERP.net preset's documented paths: no discovery, no sign-in.
  const generic = serverAuth(server, { instance: undefined, issuer: `${ROOT}/id`, fetch });
  await plain(await generic.signIn(new Request(`${APP}/login`)), 502, "transport");
  generic.close();
  discoveryDown = false;
  const user = await signIn(auth, server);
  storage.fail();
  await assert.rejects(auth.user(user.request("/")), (e) => e instanceof ErpNetAuthError && e.code === "storage_unavailable");
  await assert.rejects(auth.fetch(user.request("/customers"), "Crm_Sales_Customers"), (e) => e instanceof ErpNetAuthError && e.code === "storage_unavailable");
  await plain(await auth.signOut(user.request("/logout", { method: "POST", headers: { origin: APP } })), 503, "storage_unavailable");
  const again = await auth.signIn(user.request("/login"));
  user.apply(again);
  const back = new URL(server.authorize(again.headers.get("location")));
  await plain(await auth.callback(user.request(`/signin-callback${back.search}`)), 503, "storage_unavailable");
  storage.fail(false);
  assert.equal((await auth.user(user.request("/"))).sub, "admin", "back once the store is");
  auth.close();
});

test("events and log records: sign-in, renewal, 401, failures; no secret in them", async () => {
  const server = fakeServer({ ttl: 1 });
  const records = [];
  const events = [];
  const auth = serverAuth(server, { logger: (record) => records.push(record) });
  auth.on("*", (event) => events.push(event));
  let signedIn = 0;
  const off = auth.on("signedIn", () => signedIn++);
  const user = await signIn(auth, server);
  assert.equal(signedIn, 1);
  off();
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  assert.equal((await auth.fetch(user.request("/customers"), "Crm_Sales_Customers")).status, 200); // renewed first
  server.rejectNextApiCall();
  // A 401 for a token within the clock-skew allowance of its expiry (these live a second):
  // renewed and replayed, and the refusal logged.
  assert.equal((await auth.fetch(user.request("/customers"), "Crm_Sales_Customers")).status, 200);
  await auth.callback(user.request("/signin-callback?code=x&state=forged"));
  const kinds = new Set(records.map((r) => r.event));
  for (const kind of ["signedIn", "tokensRenewed", "replayed", "lockWait", "callbackRefused"]) assert.ok(kinds.has(kind), `${kind} in ${[...kinds]}`);
  for (const record of records) {
    assert.match(record.level, /^(debug|info|warn|error)$/);
    assert.equal(typeof record.event, "string");
  }
  assert.ok(events.some((e) => e.type === "tokensRenewed" && typeof e.session === "string"));
  const sessionId = user.jar.get("erpnet-session");
  const text = JSON.stringify(records) + JSON.stringify(events);
  const sent = server.stats.requests.flatMap((r) => [...new URLSearchParams(r.body)].filter(([name]) => ["client_secret", "code", "code_verifier", "refresh_token", "token"].includes(name)));
  const secrets = [SECRET, sessionId, ...sent.map(([, value]) => value)].filter((v) => v.length > 5);
  assert.ok(secrets.length >= 4, "the code, the verifier and a refresh token were sent");
  for (const secret of secrets) {
    assert.ok(!text.includes(secret), `a secret in the records: ${secret.slice(0, 4)}…`);
  }
  auth.close();
});

test("the verifySignature option reaches the clients: an ID token its verifier refuses signs nobody in", async () => {
  const server = fakeServer();
  let checks = 0;
  const auth = serverAuth(server, { verifySignature: () => (checks++, false) });
  const user = browser();
  const started = user.apply(await auth.signIn(user.request("/login")));
  const back = new URL(server.authorize(started.headers.get("location")));
  const done = await auth.callback(user.request(`/signin-callback${back.search}`));
  // Asked at least once (a refused signature makes the core fetch the key set once more and ask again).
  assert.ok(checks >= 1, "the application's verifier was asked");
  assert.equal(done.status, 400);
  assert.match((await done.json()).code, /^id_token_/);
  auth.close();
});
