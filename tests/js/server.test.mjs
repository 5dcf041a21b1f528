// The server entry (erpnet-auth/server) in Node through a fake fetch: cookies, rotation,
// eviction from memory and reload from the store.
import { test } from "node:test";
import assert from "node:assert/strict";

import { init, MemoryStorage, withProcessLock } from "../../pkg/node.js";
import { ServerAuth, readCookie } from "../../pkg/server.js";
import { fakeServer, ROOT, CLIENT_ID, SECRET, REDIRECT } from "./fake-server.mjs";

await init();
const APP = "http://localhost";

function serverAuth(server, extra = {}) {
  return new ServerAuth({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT, fetch: server.fetch, ...extra });
}

const cookieOf = (response) => response.headers.getSetCookie()[0].split(";")[0];
const request = (path, cookie, init = {}) => new Request(`${APP}${path}`, { ...init, headers: { ...(cookie ? { cookie } : {}), ...init.headers } });

async function signIn(auth, server) {
  const started = await auth.signIn(request("/login"));
  const back = new URL(server.authorize(started.headers.get("location")));
  const done = await auth.callback(request(`/signin-callback${back.search}`, cookieOf(started)));
  assert.equal(done.status, 302);
  return cookieOf(done);
}

test("the cookie: HttpOnly, SameSite=Lax, Path=/; over HTTPS Secure and __Host-", async () => {
  const server = fakeServer();
  const local = serverAuth(server);
  const cookie = (await local.signIn(request("/login"))).headers.getSetCookie()[0];
  assert.match(cookie, /^erpnet-session=[\w-]{43}; Path=\/; HttpOnly; SameSite=Lax$/);
  const secure = serverAuth(server, { redirectUri: "https://app.example/signin-callback" });
  assert.equal(secure.cookieName, "__Host-erpnet-session");
  const over = (await secure.signIn(new Request("https://app.example/login"))).headers.getSetCookie()[0];
  assert.match(over, /^__Host-erpnet-session=[\w-]{43}; Path=\/; HttpOnly; SameSite=Lax; Secure$/);
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

test("idle sessions leave memory and come back from the store; the memory is bounded", async () => {
  const server = fakeServer();
  const storage = new MemoryStorage();
  const auth = serverAuth(server, { storage, idleMs: 10, maxSessionsInMemory: 2 });
  const users = [];
  for (let i = 0; i < 3; i++) users.push(await signIn(auth, server));
  for (const cookie of users) assert.equal((await auth.fetch(request("/customers", cookie), "Crm_Sales_Customers")).status, 200);
  assert.ok(auth.sessionsInMemory <= 2, `at most 2 in memory, ${auth.sessionsInMemory}`);
  await new Promise((resolve) => setTimeout(resolve, 1_200));
  assert.equal(auth.sessionsInMemory, 0, "idle ones dropped");
  const discoveries = server.stats.requests.filter((r) => r.url.endsWith("openid-configuration")).length;
  assert.equal((await auth.fetch(request("/customers", users[0]), "Crm_Sales_Customers")).status, 200, "reloaded from the store");
  assert.equal(auth.sessionsInMemory, 1);
  assert.equal(server.stats.requests.filter((r) => r.url.endsWith("openid-configuration")).length, discoveries, "no new discovery");
  assert.equal(discoveries, 1, "one discovery for every user of the process");
  assert.equal(await auth.user(request("/", "erpnet-session=" + "A".repeat(43))), null, "an unknown id is not signed in");
  assert.equal(auth.sessionsInMemory, 1, "and creates nothing");
  auth.close();
});

test("a failed callback answers 400 with a code and keeps nothing", async () => {
  const server = fakeServer();
  const storage = new MemoryStorage();
  const auth = serverAuth(server, { storage });
  const started = await auth.signIn(request("/login"));
  const cookie = cookieOf(started);
  const forged = await auth.callback(request("/signin-callback?code=x&state=forged", cookie));
  assert.equal(forged.status, 400);
  assert.equal((await forged.json()).code, "state_mismatch");
  const again = await auth.callback(request("/signin-callback?code=x&state=forged", cookie));
  assert.equal((await again.json()).code, "no_sign_in", "the pending sign-in is gone");
  auth.close();
});

test("concurrent first requests of one session load one client: one renewal for all of them", async () => {
  const server = fakeServer({ ttl: 1 });
  const storage = new MemoryStorage();
  // Counts token-lock acquisitions: each client in memory renewing takes it once.
  let locks = 0;
  const lock = (name, fn) => (locks++, withProcessLock(name, fn));
  const auth = serverAuth(server, { storage, lock });
  const cookie = await signIn(auth, server);
  auth.close(); // nothing in memory: the next requests load the session from the store
  await new Promise((resolve) => setTimeout(resolve, 1_100)); // the access token expired
  const refreshesBefore = server.stats.refresh;
  const locksBefore = locks;
  const responses = await Promise.all(Array.from({ length: 20 }, () => auth.fetch(request("/customers", cookie), "Crm_Sales_Customers")));
  assert.deepEqual([...new Set(responses.map((r) => r.status))], [200]);
  assert.equal(auth.sessionsInMemory, 1, "one client for the session");
  assert.equal(server.stats.refresh - refreshesBefore, 1, "one refresh for the 20 calls");
  assert.equal(locks - locksBefore, 1, "one client renewed (several would each take the lock)");
  auth.close();
});
