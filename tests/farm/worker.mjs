// One process of a server farm: a client for one user's session, its snapshot and token
// lock in Redis (or, with no REDIS_URL, a session of its own in memory). Commands arrive as
// JSON lines on stdin; each answer is one JSON line on stdout.
//   {"burst": 50}  -> 50 concurrent calls: {"statuses": {...}, "errors": {...}, "latencies": [...]}
//   {"exit": true}
import { createInterface } from "node:readline";
import { createClient } from "redis";
import { init, ErpNetAuth, MemoryStorage } from "../../pkg/node.js";
import { withProcessLock } from "../../pkg/loop.js";
import { RedisStorage } from "../../pkg/redis.js";
import { signInAtProvider } from "../idp/login.mjs";

const { ROOT, REDIS_URL, SESSION_KEY = "farm", API_CONCURRENCY = "1", REQUEST_TIMEOUT_MS = "2000", RETRY_MAX_MS = "30000", LOCK } = process.env;
await init();

let redis = null;
let storage;
if (REDIS_URL) {
  // Commands fail at once while the connection is down (no offline queue).
  redis = createClient({ url: REDIS_URL, disableOfflineQueue: true });
  redis.on("error", () => {});
  await redis.connect();
  storage = new RedisStorage(redis);
} else {
  storage = new MemoryStorage();
}
const auth = new ErpNetAuth({
  instance: ROOT,
  clientId: "my.trusted.app/first",
  clientSecret: "my-plain-app-secret",
  redirectUri: "http://localhost/signin-callback",
  storage,
  storageKey: SESSION_KEY,
  apiConcurrency: Number(API_CONCURRENCY),
  timing: { requestTimeoutMs: Number(REQUEST_TIMEOUT_MS), retryMaxMs: Number(RETRY_MAX_MS) },
  // The control experiment: the store shared, the lock only within each process.
  ...(LOCK === "process" ? { lock: withProcessLock } : {}),
});
const counts = { refreshesSeen: 0, conflicts: 0, storageErrors: 0, signInRequired: 0 };
auth.on("tokensRenewed", () => counts.refreshesSeen++);
auth.on("storageConflict", () => counts.conflicts++);
auth.on("storageError", () => counts.storageErrors++);
auth.on("signInRequired", () => counts.signInRequired++);
await auth.ready();
// Without a shared store each process signs its own user session in.
if (!REDIS_URL) await auth.handleCallback(await signInAtProvider(await auth.signIn()));

async function burst(n, path = "Crm_Sales_Customers") {
  const statuses = {};
  const errors = {};
  const latencies = [];
  await Promise.all(
    Array.from({ length: n }, async () => {
      const started = performance.now();
      try {
        const response = await auth.fetch(path);
        await response.arrayBuffer();
        statuses[response.status] = (statuses[response.status] ?? 0) + 1;
      } catch (error) {
        errors[error.code ?? "unknown"] = (errors[error.code ?? "unknown"] ?? 0) + 1;
      }
      latencies.push(performance.now() - started);
    }),
  );
  return { statuses, errors, latencies, ...counts };
}

console.log(JSON.stringify({ ready: true, pid: process.pid, signedIn: auth.isSignedIn }));
for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  if (command.exit) break;
  console.log(JSON.stringify(await burst(command.burst, command.path)));
}
auth.close();
await redis?.close();
