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
    const results = await Promise.all(farm.map((w) => w.send({ burst: 50 })));
    const after = await stats();
    assert.ok(after.refreshes - before.refreshes > 1, "several processes refreshed the same refresh token");
    assert.ok(after.grantsRevoked > before.grantsRevoked, "the provider saw reuse and revoked the grant");
    console.log(`# farm control (per-process lock): ${after.refreshes - before.refreshes} refreshes, ${after.grantsRevoked - before.grantsRevoked} grant revoked, calls ${JSON.stringify(merge(results, "statuses"))} ${JSON.stringify(merge(results, "errors"))}`);
  } finally {
    await Promise.all(farm.map((w) => w.stop()));
  }
});
