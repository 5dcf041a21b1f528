// The server-farm benchmark: 1, 2, 4 and 8 Node processes serve one user's session shared in
// a real Redis, against the real test provider (rotation, reuse detection, ERP.net's
// per-session limit); and, for comparison, the same processes each with a session of its own
// in memory (no shared store). Each round waits for the token to expire, then every process
// makes CALLS concurrent calls. Prints refreshes per expiry, grants revoked, and call latency
// p50/p99 (the round at expiry, which includes the refresh).
//   node benches/farm/run.mjs            (make bench-farm)
import { fileURLToPath } from "node:url";
import { startProcess } from "../../tests/idp/login.mjs";
import { startRedis } from "../../tests/idp/redis.mjs";
import { startWorker, percentile } from "../../tests/farm/farm.mjs";
import { createClient } from "redis";
import { init, ErpNetAuth } from "../../pkg/node.js";
import { RedisStorage } from "../../pkg/redis.js";
import { signInAtProvider } from "../../tests/idp/login.mjs";

const TTL = Number(process.env.FARM_TTL ?? 6);
const ROUNDS = Number(process.env.FARM_ROUNDS ?? 3);
const CALLS = Number(process.env.FARM_CALLS ?? 50);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const idp = await startProcess(fileURLToPath(new URL("../../tests/idp/server.mjs", import.meta.url)), ["--access-ttl", String(TTL)]);
const root = `http://127.0.0.1:${idp.port}`;
const stats = async () => (await fetch(`${root}/test/stats`)).json();
const redis = await startRedis();
const client = createClient({ url: redis.url, disableOfflineQueue: true });
client.on("error", () => {});
await client.connect();
await init();

async function signInto(key) {
  const auth = new ErpNetAuth({ instance: root, clientId: "my.trusted.app/first", clientSecret: "my-plain-app-secret", redirectUri: "http://localhost/signin-callback", storage: new RedisStorage(client), storageKey: key });
  await auth.handleCallback(await signInAtProvider(await auth.signIn()));
  auth.close();
}

async function scenario(processes, shared) {
  const key = `bench-${processes}-${shared ? "shared" : "own"}`;
  if (shared) await signInto(key);
  const env = shared ? { ROOT: root, REDIS_URL: redis.url, SESSION_KEY: key } : { ROOT: root };
  const farm = await Promise.all(Array.from({ length: processes }, () => startWorker(env)));
  const latencies = [];
  let refreshes = 0;
  let ok = 0;
  let calls = 0;
  const revokedBefore = (await stats()).grantsRevoked;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      await sleep(TTL * 1000 + 300);
      const before = await stats();
      const results = await Promise.all(farm.map((w) => w.send({ burst: CALLS })));
      const after = await stats();
      refreshes += after.refreshes - before.refreshes;
      for (const result of results) {
        latencies.push(...result.latencies);
        ok += result.statuses[200] ?? 0;
        calls += result.latencies.length;
      }
    }
  } finally {
    await Promise.all(farm.map((w) => w.stop()));
  }
  const sessions = shared ? 1 : processes;
  return {
    processes,
    store: shared ? "Redis, shared" : "memory, own",
    perExpiry: (refreshes / ROUNDS / sessions).toFixed(2),
    revoked: (await stats()).grantsRevoked - revokedBefore,
    ok: `${ok}/${calls}`,
    p50: percentile(latencies, 50).toFixed(1),
    p99: percentile(latencies, 99).toFixed(1),
  };
}

try {
  const rows = [];
  for (const processes of [1, 2, 4, 8]) {
    for (const shared of [true, false]) rows.push(await scenario(processes, shared));
  }
  console.log(`\n${ROUNDS} expiries, ${CALLS} concurrent calls per process at each (access token lives ${TTL} s; apiConcurrency 1 per process)`);
  console.log("processes | store          | refreshes per expiry per session | grants revoked | calls 200 | p50 ms | p99 ms");
  console.log("--------- | -------------- | -------------------------------- | -------------- | --------- | ------ | ------");
  for (const r of rows) console.log(`${String(r.processes).padEnd(9)} | ${r.store.padEnd(14)} | ${r.perExpiry.padEnd(32)} | ${String(r.revoked).padEnd(14)} | ${r.ok.padEnd(9)} | ${r.p50.padStart(6)} | ${r.p99.padStart(6)}`);
} finally {
  await client.close().catch(() => {});
  await redis.close();
  idp.stop();
}
