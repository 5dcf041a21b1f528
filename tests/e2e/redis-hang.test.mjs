// A Redis that accepts the connection and never answers (a real redis-server frozen with
// SIGSTOP): every store command settles within its timeout with `storage_unavailable`, the
// server entry answers typed, a late reply changes nothing, and service resumes after SIGCONT.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "redis";

import { init, ErpNetAuthError } from "../../pkg/node.js";
import { RedisStorage } from "../../pkg/redis.js";
import { ServerAuth } from "../../pkg/server.js";
import { fakeServer, ROOT, CLIENT_ID, SECRET, REDIRECT } from "../js/fake-server.mjs";

await init();
const TIMEOUT_MS = 300;
// Generous for a loaded machine; a hang is what this bound catches.
const BOUND_MS = TIMEOUT_MS + 700;

let redis;
let dir;
let client;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), "erpnet-auth-redis-hang-"));
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  redis = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  for (let tries = 0; ; tries++) {
    const up = await new Promise((resolve) => {
      const socket = connect(port, "127.0.0.1", () => (socket.end(), resolve(true)));
      socket.on("error", () => resolve(false));
    });
    if (up) break;
    if (tries > 200) throw new Error("redis-server did not start");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  // The client options the README's Redis setup shows.
  client = createClient({ url: `redis://127.0.0.1:${port}`, disableOfflineQueue: true, commandsQueueMaxLength: 1_000 });
  client.on("error", () => {});
  await client.connect();
});
after(async () => {
  redis?.kill("SIGCONT");
  await client?.close().catch(() => {});
  redis?.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

const freeze = () => redis.kill("SIGSTOP");
const thaw = () => redis.kill("SIGCONT");

/** How `promise` settled and after how long; a hang past 5 s is reported as one. */
async function settle(promise) {
  const started = performance.now();
  let timer;
  const hang = new Promise((resolve) => (timer = setTimeout(() => resolve({ hung: true }), 5_000)));
  const outcome = await Promise.race([promise.then((value) => ({ value }), (error) => ({ error })), hang]);
  clearTimeout(timer);
  return { ...outcome, ms: performance.now() - started };
}

function typedWithin(outcome, what) {
  assert.ok(!outcome.hung, `${what} still pending after 5 s`);
  assert.ok(outcome.error instanceof ErpNetAuthError && outcome.error.code === "storage_unavailable", `${what}: ${outcome.error ?? "resolved"}`);
  assert.ok(outcome.ms < BOUND_MS, `${what} took ${outcome.ms.toFixed(0)} ms`);
}

test("every RedisStorage command settles within commandTimeoutMs while Redis is frozen; a late lock is let go", async () => {
  const store = new RedisStorage(client, { commandTimeoutMs: TIMEOUT_MS });
  await store.set("session:a", JSON.stringify({ generation: 1 }), { generation: 1, baseGeneration: 0 });
  freeze();
  const times = {};
  try {
    for (const [what, run] of [
      ["get", () => store.get("session:a")],
      ["set", () => store.set("session:a", JSON.stringify({ generation: 2 }), { generation: 2, baseGeneration: 1 })],
      ["remove", () => store.remove("session:b")],
      ["lock", () => store.lock("session:a:token", async () => "ran", { leaseMs: 60_000 })],
    ]) {
      const outcome = await settle(run());
      typedWithin(outcome, what);
      times[what] = Math.round(outcome.ms);
    }
  } finally {
    thaw();
  }
  // The frozen commands run when Redis resumes: the lock taken late is released after it (the
  // release is queued behind it on the same connection), so nobody waits out a 60 s lease.
  await client.ping();
  assert.equal(await client.exists("erpnet-auth:lock:session:a:token"), 0, "no lock left behind");
  assert.equal(await store.lock("session:a:token", async () => "ran", { waitMs: 100 }), "ran");
  // The write given up on landed late (generation 2 on top of 1); compare-and-swap still
  // orders writes: one derived from an older state is refused.
  assert.equal(JSON.parse(await store.get("session:a")).generation, 2);
  assert.equal(await store.set("session:a", JSON.stringify({ generation: 2 }), { generation: 2, baseGeneration: 1 }), false);
  console.log(`# Redis frozen, commandTimeoutMs ${TIMEOUT_MS}: get ${times.get} ms, set ${times.set} ms, remove ${times.remove} ms, lock ${times.lock} ms -> storage_unavailable`);
});

test("the server entry with Redis frozen: user(), fetch() and callback() fail typed within the timeout; /login needs no store; all resumes", async () => {
  const identity = fakeServer();
  const store = new RedisStorage(client, { commandTimeoutMs: TIMEOUT_MS });
  const auth = new ServerAuth({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT, fetch: identity.fetch, storage: store, cookieKey: "a-test-only-cookie-key-of-32-characters!" });
  const cookies = (response, jar = new Map()) => {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const at = pair.indexOf("=");
      if (/Max-Age=0/.test(line)) jar.delete(pair.slice(0, at));
      else jar.set(pair.slice(0, at), pair.slice(at + 1));
    }
    return jar;
  };
  const header = (jar) => [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
  const jar = new Map();
  const login = await auth.signIn(new Request("http://localhost/login"));
  cookies(login, jar);
  const back = new URL(identity.authorize(login.headers.get("location")));
  cookies(await auth.callback(new Request(`http://localhost/signin-callback${back.search}`, { headers: { cookie: header(jar) } })), jar);
  const request = (path) => new Request(`http://localhost${path}`, { headers: { cookie: header(jar) } });
  assert.equal((await auth.user(request("/"))).sub, "admin");

  freeze();
  const times = {};
  try {
    const user = await settle(auth.user(request("/")));
    typedWithin(user, "user()");
    times.user = Math.round(user.ms);
    const call = await settle(auth.fetch(request("/customers"), "Crm_Sales_Customers"));
    typedWithin(call, "fetch()");
    times.fetch = Math.round(call.ms);
    // A new sign-in starts without the store, and its callback answers 503 with a code.
    const again = await settle(auth.signIn(request("/login")));
    assert.ok(!again.hung && again.value?.status === 302, "signIn() needs no store");
    const next = cookies(again.value, new Map(jar));
    const nextBack = new URL(identity.authorize(again.value.headers.get("location")));
    const callback = await settle(auth.callback(new Request(`http://localhost/signin-callback${nextBack.search}`, { headers: { cookie: header(next) } })));
    assert.ok(!callback.hung, "callback() still pending after 5 s");
    assert.equal(callback.value.status, 503);
    assert.equal((await callback.value.json()).code, "storage_unavailable");
    times.callback = Math.round(callback.ms);
  } finally {
    thaw();
  }
  await client.ping();
  assert.equal((await auth.user(request("/"))).sub, "admin", "service resumes");
  assert.equal((await auth.fetch(request("/customers"), "Crm_Sales_Customers")).status, 200);
  console.log(`# Redis frozen (commandTimeoutMs ${TIMEOUT_MS}): user() failed in ${times.user} ms, fetch() in ${times.fetch} ms, callback() answered 503 in ${times.callback} ms`);
  auth.close();
});
