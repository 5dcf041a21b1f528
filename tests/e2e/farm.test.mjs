// A server farm against a real Redis and the real test provider (rotation, reuse detection,
// ERP.net's per-session limit): several Node processes serve one user's session.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { createClient } from "redis";

import { init, ErpNetAuth } from "../../pkg/node.js";
import { RedisStorage } from "../../pkg/redis.js";
import { signInAtProvider, startProcess } from "../idp/login.mjs";
import { startRedis } from "../idp/redis.mjs";
import { startWorker } from "../farm/farm.mjs";

const path = (p) => fileURLToPath(new URL(p, import.meta.url));
const TTL = 3;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
await init();

let idp;
let redis;
let client;
let root;
const stats = async () => (await fetch(`${root}/test/stats`)).json();
before(async () => {
  idp = await startProcess(path("../idp/server.mjs"), ["--access-ttl", String(TTL)]);
  root = `http://127.0.0.1:${idp.port}`;
  redis = await startRedis();
  client = createClient({ url: redis.url, disableOfflineQueue: true });
  client.on("error", () => {});
  await client.connect();
});
after(async () => {
  await client?.close().catch(() => {});
  await redis?.close();
  idp?.stop();
});

/** Signs a user in once, its session stored in Redis under `key`. */
async function signInto(key) {
  const auth = new ErpNetAuth({ instance: root, clientId: "my.trusted.app/first", clientSecret: "my-plain-app-secret", redirectUri: "http://localhost/signin-callback", storage: new RedisStorage(client), storageKey: key });
  await auth.handleCallback(await signInAtProvider(await auth.signIn()));
  auth.close();
}

async function workers(count, key, extra = {}) {
  const env = { ROOT: root, REDIS_URL: redis.url, SESSION_KEY: key, ...extra };
  const started = await Promise.all(Array.from({ length: count }, () => startWorker(env)));
  for (const worker of started) assert.ok(worker.signedIn, "each process restored the session from Redis");
  return started;
}

const merge = (results, field) => {
  const total = {};
  for (const result of results) for (const [k, v] of Object.entries(result[field])) total[k] = (total[k] ?? 0) + v;
  return total;
};

test("4 processes × 50 concurrent calls at each of 3 expiries: one refresh per expiry, no grant revoked, every call 200", async () => {
  await signInto("farm-4x50");
  const farm = await workers(4, "farm-4x50");
  try {
    const lines = [];
    for (let expiry = 1; expiry <= 3; expiry++) {
      await sleep(TTL * 1000 + 300);
      const before = await stats();
      const results = await Promise.all(farm.map((w) => w.send({ burst: 50 })));
      const after = await stats();
      const statuses = merge(results, "statuses");
      assert.deepEqual(statuses, { 200: 200 }, `expiry ${expiry}: ${JSON.stringify({ statuses, errors: merge(results, "errors") })}`);
      assert.equal(after.refreshes - before.refreshes, 1, `expiry ${expiry}: exactly one refresh across the 4 processes`);
      assert.equal(after.refreshFailures, before.refreshFailures);
      assert.equal(after.grantsRevoked, 0);
      lines.push(`expiry ${expiry}: ${after.refreshes - before.refreshes} refresh, ${after.apiRequests - before.apiRequests} API requests, ${after.apiTooMany - before.apiTooMany} 429, ${after.apiUnauthorized - before.apiUnauthorized} 401`);
    }
    console.log(`# farm 4 × 50: ${lines.join("; ")}; grants revoked ${(await stats()).grantsRevoked}`);
  } finally {
    await Promise.all(farm.map((w) => w.stop()));
  }
});

test("control: the same store with a lock only within each process loses the grant", async () => {
  await signInto("farm-control");
  const farm = await workers(4, "farm-control", { LOCK: "process" });
  try {
    await sleep(TTL * 1000 + 300);
    const before = await stats();
    // The first refresh's answer leaves a second late (rotated already), as over a slow
    // network: without it one process could finish before the others read the store, and
    // the control would show nothing about the locks.
    await fetch(`${root}/test/hold-token?when=after&ms=1000`, { method: "POST" });
    const results = await Promise.all(farm.map((w) => w.send({ burst: 50 })));
    const after = await stats();
    assert.ok(after.refreshes - before.refreshes > 1, "several processes refreshed the same refresh token");
    assert.ok(after.grantsRevoked > before.grantsRevoked, "the provider saw reuse and revoked the grant");
    console.log(`# farm control (per-process lock): ${after.refreshes - before.refreshes} refreshes, ${after.grantsRevoked - before.grantsRevoked} grant revoked, calls ${JSON.stringify(merge(results, "statuses"))} ${JSON.stringify(merge(results, "errors"))}`);
  } finally {
    await Promise.all(farm.map((w) => w.stop()));
  }
});

/** Waits until `test(stats)` holds (polling the provider's counters). */
async function until(test, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const now = await stats();
    if (test(now)) return now;
    await sleep(20);
  }
  throw new Error("the provider never reached the expected state");
}

/**
 * Two processes share `key`; the token is expired. The provider holds the next token request
 * (`when`: before it sees it, or after it rotated), the holder of the lock is killed with
 * SIGKILL once `held(stats)` says the request got there, and the other process then makes
 * 20 calls. Resolves to the provider's counters before and after, the other's result and
 * how long its calls took.
 */
async function killTheHolder(key, when, ms, held) {
  await signInto(key);
  const [holder, other] = await workers(2, key);
  try {
    await sleep(TTL * 1000 + 300);
    const before = await stats();
    await fetch(`${root}/test/hold-token?when=${when}&ms=${ms}`, { method: "POST" });
    void holder.send({ burst: 5 }).catch(() => {});
    await until((s) => held(s, before));
    holder.kill("SIGKILL");
    const started = Date.now();
    const result = await other.send({ burst: 20 });
    return { before, result, waited: Date.now() - started };
  } finally {
    holder.kill("SIGKILL");
    await other.stop();
  }
}

test("the lock holder killed (SIGKILL) before its refresh reached the provider: the others go on after the lease", async () => {
  const { before, result, waited } = await killTheHolder("farm-kill-early", "before", 1500, (s, b) => (s.tokenRequestsHeld ?? 0) > (b.tokenRequestsHeld ?? 0));
  const after = await until((s) => (s.tokenRequestsLost ?? 0) > (before.tokenRequestsLost ?? 0));
  assert.deepEqual(result.statuses, { 200: 20 }, JSON.stringify(result.errors));
  assert.equal(after.refreshes - before.refreshes, 1, "only the survivor's refresh reached the provider");
  assert.equal(after.grantsRevoked, before.grantsRevoked);
  console.log(`# holder killed before the provider saw its refresh: the other process waited ${waited} ms (the lease), then 1 refresh, 20 × 200, 0 grants revoked`);
});

test("the lock holder killed after the provider rotated (the lost answer): the grant is lost, reported as sign-in required", async () => {
  // Killed once the provider rotated: the new refresh token exists only in the holder's socket.
  const { before, result, waited } = await killTheHolder("farm-kill-late", "after", 3000, (s, b) => s.refreshes > b.refreshes);
  const after = await stats();
  // The survivor, after the lease, presents the refresh token the provider already
  // rotated: reuse detection revokes the grant. Nothing on the client side can know the
  // new token; the user signs in again. Every call ends with a typed error, none hangs.
  assert.deepEqual(result.errors, { sign_in_required: 20 });
  assert.equal(after.refreshes - before.refreshes, 2);
  assert.equal(after.refreshFailures - before.refreshFailures, 1);
  assert.equal(after.grantsRevoked - before.grantsRevoked, 1);
  console.log(`# holder killed after the provider rotated: the other waited ${waited} ms, its refresh with the old token was refused as reuse, grant revoked (${after.grantsRevoked - before.grantsRevoked}); 20 calls -> sign_in_required`);
});

test("Redis restarted mid-run: calls fail with a typed error while it is down, none hangs; afterwards service resumes without a new sign-in", async () => {
  await signInto("farm-restart");
  // After failed renewals a session waits `retryMaxMs` before it tries again (an outage
  // costs one token request per that time): 2 s here.
  const farm = await workers(2, "farm-restart", { RETRY_MAX_MS: "2000" });
  try {
    const first = await Promise.all(farm.map((w) => w.send({ burst: 10 })));
    assert.deepEqual(merge(first, "statuses"), { 200: 20 });
    const before = await stats();
    await redis.stop();
    await sleep(TTL * 1000 + 300);
    const started = Date.now();
    const down = await Promise.all(farm.map((w) => w.send({ burst: 10 })));
    const tookMs = Date.now() - started;
    const errors = merge(down, "errors");
    assert.deepEqual(merge(down, "statuses"), {}, "no call went out with the expired token");
    assert.equal(Object.values(errors).reduce((a, b) => a + b, 0), 20, "every call ended");
    for (const code of Object.keys(errors)) assert.match(code, /^(renewal_unavailable|transport)$/);
    await redis.start();
    await sleep(2_500); // node-redis reconnects by itself; the sessions' retry wait ends
    const again = await Promise.all(farm.map((w) => w.send({ burst: 10 })));
    const after = await stats();
    assert.deepEqual(merge(again, "statuses"), { 200: 20 }, JSON.stringify(merge(again, "errors")));
    assert.equal(after.codeExchanges, before.codeExchanges, "no new sign-in");
    assert.equal(after.grantsRevoked, before.grantsRevoked);
    console.log(`# Redis down: 20 calls ended in ${tookMs} ms with ${JSON.stringify(errors)}; Redis back: 20 × 200, ${after.refreshes - before.refreshes} refresh, no new sign-in`);
  } finally {
    await Promise.all(farm.map((w) => w.stop()));
  }
});

test("RedisStorage: compare-and-swap on the server, and a sign-in never completed expires within the hour", async () => {
  const store = new RedisStorage(client);
  assert.equal(await store.set("cas", JSON.stringify({ generation: 3 }), { generation: 3, baseGeneration: 2 }), true);
  assert.equal(await store.set("cas", JSON.stringify({ generation: 3 }), { generation: 3, baseGeneration: 2 }), false, "the stored 3 is above the base 2");
  assert.equal(await store.set("cas", JSON.stringify({ generation: 4 }), { generation: 4, baseGeneration: 3 }), true);
  assert.equal(JSON.parse(await store.get("cas")).generation, 4);
  await store.set("signin:abc", "{}", { generation: 0, baseGeneration: 0 });
  const pending = await client.pTTL("erpnet-auth:signin:abc");
  assert.ok(pending > 0 && pending <= 3600_000, `signin TTL ${pending}`);
  const session = await client.pTTL("erpnet-auth:cas");
  assert.ok(session > 29 * 24 * 3600_000, `session TTL ${session}`);
});
