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
    const authorize = login.headers.get("location");
    assert.ok(authorize.startsWith(`${root}/id/connect/authorize?`));
    const back = new URL(await signInAtProvider(authorize));
    assert.equal(back.origin + back.pathname, "http://localhost/signin-callback");
    const callback = await fetch(`${base}/signin-callback${back.search}`, { headers: { cookie: login.headers.get("set-cookie").split(";")[0] }, redirect: "manual" });
    assert.equal(callback.status, 302);
    // The session id is rotated at sign-in: the callback's cookie is the signed-in one.
    const cookie = callback.headers.get("set-cookie").split(";")[0];
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

test("the Web Portal example: users sign in for identity only, the API sees only the application's token", async () => {
  const app = await startProcess(path("../../examples/node-webapp/portal.mjs"), [], {
    PORT: "0",
    ERP_INSTANCE: root,
    ERP_CLIENT_ID: "my.trusted.app/first",
    ERP_SECRET: "my-plain-app-secret",
    ERP_REDIRECT_URI: "http://localhost/signin-callback",
  });
  try {
    const base = `http://127.0.0.1:${app.port}`;
    const before = await stats();
    const login = await fetch(`${base}/login`, { redirect: "manual" });
    const started = login.headers.get("set-cookie").split(";")[0];
    const back = new URL(await signInAtProvider(login.headers.get("location")));
    const callback = await fetch(`${base}/signin-callback${back.search}`, { headers: { cookie: started }, redirect: "manual" });
    assert.equal(callback.status, 302);
    const cookie = callback.headers.get("set-cookie").split(";")[0];
    assert.equal((await fetch(`${base}/portal`, { headers: { cookie: started }, redirect: "manual" })).status, 302, "the sign-in's id no longer signs in");
    const portal = await fetch(`${base}/portal`, { headers: { cookie } });
    assert.equal(portal.status, 200);
    const page = await portal.json();
    assert.ok(page.user.sub, "the user's identity");
    assert.equal(page.customers[0].Number, "C-0001", "the application's data");
    const after = await stats();
    assert.equal((after.apiUserTokens ?? 0) - (before.apiUserTokens ?? 0), 0, "no user token reached the API");
    assert.ok((after.apiAppTokens ?? 0) - (before.apiAppTokens ?? 0) >= 1);
    console.log(`# web portal: ${(after.apiUserTokens ?? 0) - (before.apiUserTokens ?? 0)} user tokens and ${(after.apiAppTokens ?? 0) - (before.apiAppTokens ?? 0)} application tokens seen by the API`);
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

test("an Automation reference token: calls with no OAuth flow, then its revocation ends it with a typed reason", async () => {
  const { token } = await (await fetch(`${root}/test/reference-token`, { method: "POST" })).json();
  const auth = new ErpNetAuth({ instance: root, referenceToken: token });
  try {
    const before = await stats();
    const responses = await Promise.all(Array.from({ length: 20 }, () => auth.fetch("Crm_Sales_Customers")));
    assert.deepEqual([...new Set(responses.map((r) => r.status))], [200]);
    await fetch(`${root}/test/revoke-reference-tokens`, { method: "POST" });
    const ended = [];
    auth.on("signInRequired", (e) => ended.push(e.reason.code));
    await assert.rejects(auth.fetch("Crm_Sales_Customers"), (e) => e.code === "sign_in_required" && /reference token/.test(e.message));
    const after = await stats();
    assert.deepEqual(ended, ["reference_token_rejected"]);
    assert.equal(after.tokenRequests - before.tokenRequests, 0, "no token request, ever");
    assert.equal(after.apiReferenceToken - (before.apiReferenceToken ?? 0), 20);
    console.log(`# reference token: 20 calls, then revoked -> ${ended[0]}, ${after.tokenRequests - before.tokenRequests} token requests`);
  } finally {
    auth.close();
  }
});

test("a multipart $batch POST refused with 401 is replayed byte for byte, headers included, after the renewal", async () => {
  const auth = await signedIn();
  try {
    await auth.fetch("Crm_Sales_Customers"); // the session is in use
    await fetch(`${root}/test/reject-next`, { method: "POST" });
    const boundary = "batch_36522ad7-fc75-4b56-8c71-56071383e77b";
    const body = [`--${boundary}`, "Content-Type: application/http", "", "GET Crm_Sales_Customers?$top=1 HTTP/1.1", "", `--${boundary}--`, ""].join("\r\n");
    const stream = new Blob([body]).stream(); // read once: the driver must have buffered it
    const before = await stats();
    const response = await auth.fetch("$batch", {
      method: "POST",
      body: stream,
      duplex: "half",
      headers: { "content-type": `multipart/mixed; boundary=${boundary}`, TransactionId: "tx-42" },
    });
    assert.equal(response.status, 200);
    const after = await stats();
    const batches = after.batches.slice(before.batches?.length ?? 0);
    assert.equal(batches.length, 2, "refused once, then replayed");
    assert.equal(batches[0].sha256, batches[1].sha256, "byte-identical");
    assert.equal(batches[1].bytes, body.length);
    assert.deepEqual([batches[1].transactionId, batches[1].contentType], ["tx-42", `multipart/mixed; boundary=${boundary}`]);
    assert.equal(after.refreshes - before.refreshes, 1);
    console.log(`# $batch: ${batches.length} deliveries, same ${batches[1].bytes} bytes and headers, 1 refresh between`);
  } finally {
    auth.close();
  }
});

test("a long poll that would outlive the token renews it first (expectedDurationMs); without, it runs twice", async () => {
  for (const [label, init] of [["with expectedDurationMs", { expectedDurationMs: 2_500 }], ["without", {}]]) {
    const auth = await signedIn();
    try {
      // In use, then 2 s old: the 4-second token is still sent for short calls (usable until
      // 3 s) but ends during a 2.5-second poll.
      await auth.fetch("Crm_Sales_Customers");
      await sleep(2_000);
      const before = await stats();
      const response = await auth.fetch("WaitForChanges?ms=2500", init);
      const after = await stats();
      assert.equal(response.status, 200, label);
      const polls = after.longPolls - (before.longPolls ?? 0);
      if (init.expectedDurationMs) {
        assert.equal(polls, 1, "one long poll, started with a token that outlives it");
        assert.equal((after.longPollsExpired ?? 0) - (before.longPollsExpired ?? 0), 0);
      } else {
        assert.equal(polls, 2, "the first one's token expired during it: refused at the end, renewed, run again");
      }
      console.log(`# long poll ${label}: ${polls} long poll(s), ${after.refreshes - before.refreshes} refresh`);
    } finally {
      auth.close();
    }
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
