// End to end in Node against the real test provider (oidc-provider) over real HTTP.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import { init, ErpNetAuth, MemoryStorage } from "../../pkg/node.js";
import { signInAtProvider, startProcess } from "../idp/login.mjs";

const path = (p) => fileURLToPath(new URL(p, import.meta.url));
const TTL = 4;
const idp = await startProcess(path("../idp/server.mjs"), ["--access-ttl", String(TTL)]);
after(() => idp.stop());
const root = `http://127.0.0.1:${idp.port}`;
const stats = async () => (await fetch(`${root}/test/stats`)).json();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
await init();

function confidential(extra = {}) {
  return new ErpNetAuth({ instance: root, clientId: "my.trusted.app/first", clientSecret: "my-plain-app-secret", redirectUri: "http://localhost/signin-callback", ...extra });
}

async function signedIn(extra) {
  const auth = confidential(extra);
  await auth.handleCallback(await signInAtProvider(await auth.signIn()));
  return auth;
}

test("the Node web app example: /login, provider login and consent, /signin-callback, /customers, renewal", async () => {
  const app = await startProcess(path("../../examples/node-webapp/server.mjs"), [], {
    PORT: "0",
    ERP_INSTANCE: root,
    ERP_SECRET: "my-plain-app-secret",
    ERP_REDIRECT_URI: "http://localhost/signin-callback",
  });
  try {
    const base = `http://127.0.0.1:${app.port}`;
    const login = await fetch(`${base}/login`, { redirect: "manual" });
    assert.equal(login.status, 302);
    const cookie = login.headers.get("set-cookie").split(";")[0];
    const authorize = login.headers.get("location");
    assert.ok(authorize.startsWith(`${root}/id/connect/authorize?`));
    const back = new URL(await signInAtProvider(authorize));
    assert.equal(back.origin + back.pathname, "http://localhost/signin-callback");
    const callback = await fetch(`${base}/signin-callback${back.search}`, { headers: { cookie }, redirect: "manual" });
    assert.equal(callback.status, 302);
    const customers = await fetch(`${base}/customers`, { headers: { cookie } });
    assert.equal(customers.status, 200);
    assert.equal((await customers.json()).value[0].Number, "C-0001");
    const before = await stats();
    await sleep(TTL * 1000 + 500);
    const again = await fetch(`${base}/customers`, { headers: { cookie } });
    assert.equal(again.status, 200, "the token renewed itself");
    const after = await stats();
    assert.ok(after.refreshes > before.refreshes);
    assert.equal(after.grantsRevoked, 0);
  } finally {
    app.stop();
  }
});

test("rotation under load: 50 concurrent calls at expiry make exactly one refresh, the grant survives", async () => {
  // Nobody called the API yet: an idle session has no renewal timer, so every call below
  // meets the expired token at once.
  const auth = await signedIn();
  try {
    const before = await stats();
    await sleep(TTL * 1000 + 200);
    const responses = await Promise.all(Array.from({ length: 50 }, () => auth.fetch("Crm_Sales_Customers")));
    const after = await stats();
    assert.ok(responses.every((r) => r.status === 200), responses.map((r) => r.status).join());
    assert.equal(after.refreshes - before.refreshes, 1, "the provider counted one refresh");
    assert.equal(after.refreshFailures, before.refreshFailures);
    assert.equal(after.grantsRevoked, 0);
    assert.equal(after.apiUnauthorized, before.apiUnauthorized, "no call went out with the expired token");
    console.log(`# rotation under load: 50 calls at expiry -> ${after.refreshes - before.refreshes} refresh, ${after.apiRequests - before.apiRequests} API requests, ${after.apiUnauthorized - before.apiUnauthorized} API 401, ${after.grantsRevoked} grants revoked`);
  } finally {
    auth.close();
  }
});

test("ERP.net's session limit (1 running, 5 queued, 429 beyond): 200 calls at expiry, 1 refresh, no 429 for any caller", async () => {
  const auth = await signedIn();
  try {
    const before = await stats();
    await sleep(TTL * 1000 + 200);
    const responses = await Promise.all(Array.from({ length: 200 }, () => auth.fetch("Crm_Sales_Customers")));
    const after = await stats();
    assert.deepEqual([...new Set(responses.map((r) => r.status))], [200], "every call answered 200");
    assert.equal(after.refreshes - before.refreshes, 1);
    assert.equal(after.apiTooMany - before.apiTooMany, 0, "the server never had to refuse");
    console.log(`# session limit: 200 calls at expiry -> ${after.refreshes - before.refreshes} refresh, ${after.apiRequests - before.apiRequests} API requests, ${after.apiTooMany - before.apiTooMany} 429 from the server, 0 to callers`);
  } finally {
    auth.close();
  }
  // Without the client's limit the server refuses, and the client's retries absorb it.
  const unlimited = await signedIn({ apiConcurrency: null, timing: { throttleRetryBaseMs: 20, maxThrottleRetries: 50 } });
  try {
    const before = await stats();
    const responses = await Promise.all(Array.from({ length: 200 }, () => unlimited.fetch("Crm_Sales_Customers")));
    const after = await stats();
    assert.deepEqual([...new Set(responses.map((r) => r.status))], [200]);
    assert.ok(after.apiTooMany - before.apiTooMany > 0, "the server refused some");
    console.log(`# no client limit: 200 calls -> ${after.apiTooMany - before.apiTooMany} 429 from the server, retried, 0 to callers`);
  } finally {
    unlimited.close();
  }
});

test("ERP.net from the instance root only: auto-discovery, then /me through a renewal", async () => {
  const auth = await signedIn();
  try {
    assert.equal(auth.profileSite, `${root}/profile/`, "the Profile site came from /tools/auto-discovery");
    const before = await stats();
    await sleep(TTL * 1000 + 200);
    const profile = await auth.profile();
    const after = await stats();
    assert.match(profile.id, /^user-/);
    assert.equal(after.refreshes - before.refreshes, 1, "the expired token was renewed first");
    console.log(`# profile: /me answered id ${profile.id} after ${after.refreshes - before.refreshes} refresh`);
  } finally {
    auth.close();
  }
});

test("the provider revokes the grant: signInRequired once, no request loop", async () => {
  const auth = await signedIn();
  const required = [];
  auth.on("signInRequired", (e) => required.push(e));
  await fetch(`${root}/test/revoke-all`, { method: "POST" });
  const before = await stats();
  const results = await Promise.allSettled([auth.fetch("Crm_Sales_Customers"), auth.fetch("Crm_Sales_Customers")]);
  await sleep(TTL * 1000 + 500);
  const late = await Promise.allSettled([auth.fetch("Crm_Sales_Customers")]);
  const after = await stats();
  assert.ok(results.every((r) => r.status === "rejected" && r.reason.code === "sign_in_required"), JSON.stringify(results));
  assert.equal(late[0].reason.code, "not_signed_in");
  assert.equal(required.length, 1);
  assert.equal(after.refreshes - before.refreshes, 1, "one refresh attempt, no loop");
  assert.equal(after.apiUnauthorized - before.apiUnauthorized, 2, "each call tried once");
  console.log(`# grant revoked: ${after.refreshes - before.refreshes} refresh attempt, ${required.length} signInRequired, ${after.apiRequests - before.apiRequests} API requests`);
  auth.close();
});

test("two clients in one process sharing a session at expiry: one refresh, the grant survives reuse detection", async () => {
  const storage = new MemoryStorage();
  const a = await signedIn({ storage });
  const b = confidential({ storage });
  await b.ready();
  assert.equal(b.isSignedIn, true, "the second client reads the first one's session");
  try {
    const before = await stats();
    await sleep(TTL * 1000 + 200);
    const responses = await Promise.all([
      ...Array.from({ length: 20 }, () => a.fetch("Crm_Sales_Customers")),
      ...Array.from({ length: 20 }, () => b.fetch("Crm_Sales_Customers")),
    ]);
    const after = await stats();
    assert.ok(responses.every((r) => r.status === 200), responses.map((r) => r.status).join());
    assert.equal(after.refreshes - before.refreshes, 1, "the provider counted one refresh");
    assert.equal(after.refreshFailures, before.refreshFailures);
    assert.equal(after.grantsRevoked, 0);
    console.log(`# two clients, one process, 40 calls at expiry -> ${after.refreshes - before.refreshes} refresh, ${after.grantsRevoked} grants revoked`);
  } finally {
    a.close();
    b.close();
  }
});
