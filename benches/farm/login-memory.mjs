// What a flood of cookieless `GET /login` costs the server: bytes the process keeps per
// request after a full GC (JS heap, wasm linear memory and other buffers), with the default
// in-memory store, and the Redis keys it leaves with a RedisStorage.
//   node --expose-gc benches/farm/login-memory.mjs [requests]
import { fileURLToPath } from "node:url";
import { createClient } from "redis";
import { init } from "../../pkg/node.js";
import { RedisStorage } from "../../pkg/redis.js";
import { ServerAuth } from "../../pkg/server.js";
import { startProcess } from "../../tests/idp/login.mjs";
import { startRedis } from "../../tests/idp/redis.mjs";

const REQUESTS = Number(process.argv[2] ?? 20_000);
const BATCH = 100; // concurrent requests at a time
if (!globalThis.gc) throw new Error("run with node --expose-gc");

const idp = await startProcess(fileURLToPath(new URL("../../tests/idp/server.mjs", import.meta.url)));
const redis = await startRedis();
const client = createClient({ url: redis.url, disableOfflineQueue: true });
client.on("error", () => {});
await client.connect();
await init();
const options = {
  instance: `http://127.0.0.1:${idp.port}`,
  clientId: "my.trusted.app/first",
  clientSecret: "my-plain-app-secret",
  redirectUri: "http://localhost/signin-callback",
  cookieKey: "a-bench-only-cookie-key-of-32-characters",
};

async function flood(auth, count) {
  let cookieBytes = 0;
  for (let done = 0; done < count; done += BATCH) {
    const answers = await Promise.all(Array.from({ length: Math.min(BATCH, count - done) }, () => auth.signIn(new Request("http://localhost/login"))));
    for (const answer of answers) {
      if (answer.status !== 302) throw new Error(`/login answered ${answer.status}`);
      cookieBytes += answer.headers.getSetCookie().join("").length;
    }
  }
  return cookieBytes / count;
}

async function settled() {
  // Finalizers (the wasm sessions' frees) run after a collection, on later turns.
  for (let i = 0; i < 3; i++) {
    globalThis.gc();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const m = process.memoryUsage();
  return m.heapUsed + m.external + m.arrayBuffers;
}

try {
  const memory = new ServerAuth(options);
  await flood(memory, 2_000); // warm: discovery, JIT, the wasm memory's working size
  const before = await settled();
  const started = performance.now();
  const cookie = await flood(memory, REQUESTS);
  const elapsed = performance.now() - started;
  const after = await settled();
  memory.close();

  const shared = new ServerAuth({ ...options, storage: new RedisStorage(client) });
  const keysBefore = await client.dbSize();
  await flood(shared, REQUESTS);
  const keys = (await client.dbSize()) - keysBefore;
  shared.close();

  console.log(`cookieless GET /login          ${REQUESTS} (${BATCH} at a time)`);
  console.log(`kept per request (MemoryStorage, after GC)  ${((after - before) / REQUESTS).toFixed(1)} B`);
  console.log(`Redis keys created (RedisStorage)           ${keys}`);
  console.log(`Set-Cookie per answer                       ${cookie.toFixed(0)} B`);
  console.log(`time per /login (sealing included)          ${((elapsed * 1000) / REQUESTS).toFixed(0)} µs`);
} finally {
  await client.close().catch(() => {});
  await redis.close();
  idp.stop();
}
