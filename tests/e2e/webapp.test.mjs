// The Node web app example (examples/node-webapp/server.mjs) as an attacker and a crowd see
// it: session fixation, cookie parsing, state per cookieless visitor, sign-out CSRF.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import { signInAtProvider, startProcess } from "../idp/login.mjs";

const path = (p) => fileURLToPath(new URL(p, import.meta.url));
let idp;
let app;
let root;
let base;
const stats = async () => (await fetch(`${root}/test/stats`)).json();
const providerRequests = (s) => (s.discoveryRequests ?? 0) + (s.keysRequests ?? 0) + s.tokenRequests;

before(async () => {
  idp = await startProcess(path("../idp/server.mjs"));
  root = `http://127.0.0.1:${idp.port}`;
  app = await startProcess(path("../../examples/node-webapp/server.mjs"), [], {
    PORT: "0",
    ERP_INSTANCE: root,
    ERP_SECRET: "my-plain-app-secret",
    ERP_REDIRECT_URI: "http://localhost/signin-callback",
  });
  base = `http://127.0.0.1:${app.port}`;
});
after(() => {
  app?.stop();
  idp?.stop();
});

const cookieOf = (response) => response.headers.getSetCookie().map((c) => c.split(";")[0]);

/** Signs in through the app with the browser's `cookie`; returns the cookie it ends with. */
async function signInThroughApp(cookie) {
  const login = await fetch(`${base}/login`, { headers: cookie ? { cookie } : {}, redirect: "manual" });
  assert.equal(login.status, 302);
  const started = cookieOf(login)[0] ?? cookie;
  const back = new URL(await signInAtProvider(login.headers.get("location")));
  const callback = await fetch(`${base}/signin-callback${back.search}`, { headers: { cookie: started }, redirect: "manual" });
  assert.equal(callback.status, 302, await callback.text());
  return cookieOf(callback)[0] ?? started;
}

test("session fixation: a cookie planted before sign-in is worthless after it", async () => {
  // The attacker gets an id from the app and plants it in the victim's browser.
  const attacker = cookieOf(await fetch(`${base}/login`, { redirect: "manual" }))[0];
  assert.ok(attacker, "the app set a cookie at /login");
  const victim = await signInThroughApp(attacker);
  assert.notEqual(victim, attacker, "the id was rotated at sign-in");
  assert.equal((await fetch(`${base}/customers`, { headers: { cookie: victim } })).status, 200, "the victim is signed in");
  const ride = await fetch(`${base}/customers`, { headers: { cookie: attacker } });
  assert.equal(ride.status, 401, "the planted id reads nothing");
});

test("the cookie is parsed exactly: another cookie whose name ends in the session's is not the session", async () => {
  const victim = await signInThroughApp();
  const [name, value] = victim.split("=");
  const lookalike = await fetch(`${base}/customers`, { headers: { cookie: `not${name}=${value}` } });
  assert.equal(lookalike.status, 401);
  const exact = await fetch(`${base}/customers`, { headers: { cookie: `other=1; ${name}=${value}` } });
  assert.equal(exact.status, 200);
});

test("2,000 cookieless visitors: no cookie, no state, no identity-server request", async () => {
  const before = await stats();
  const started = performance.now();
  let cookies = 0;
  for (let batch = 0; batch < 20; batch++) {
    const responses = await Promise.all(Array.from({ length: 100 }, () => fetch(`${base}/`)));
    for (const response of responses) {
      assert.equal(response.status, 200);
      cookies += response.headers.getSetCookie().length;
      await response.arrayBuffer();
    }
  }
  const after = await stats();
  assert.equal(cookies, 0, "no cookie for a visitor who did not ask to sign in");
  assert.equal(providerRequests(after) - providerRequests(before), 0, "no request to the identity server");
  console.log(`# 2,000 cookieless requests in ${(performance.now() - started).toFixed(0)} ms: ${cookies} cookies, ${providerRequests(after) - providerRequests(before)} identity-server requests`);
});

test("sign-out is POST from the app's own origin only", async () => {
  const victim = await signInThroughApp();
  const forged = await fetch(`${base}/logout`, { method: "POST", headers: { cookie: victim, origin: "https://evil.example" }, redirect: "manual" });
  assert.equal(forged.status, 403);
  const viaGet = await fetch(`${base}/logout`, { headers: { cookie: victim }, redirect: "manual" });
  assert.notEqual(viaGet.status, 302, "a link or an image cannot sign the user out");
  assert.equal((await fetch(`${base}/customers`, { headers: { cookie: victim } })).status, 200, "still signed in");
  const own = await fetch(`${base}/logout`, { method: "POST", headers: { cookie: victim, origin: "http://localhost" }, redirect: "manual" });
  assert.equal(own.status, 302);
  assert.match(own.headers.getSetCookie().join(), /Max-Age=0/);
  assert.equal((await fetch(`${base}/customers`, { headers: { cookie: victim } })).status, 401, "signed out");
});

test("two processes of the example behind one load balancer share sessions through Redis", async () => {
  const { startRedis } = await import("../idp/redis.mjs");
  const redis = await startRedis();
  const env = { PORT: "0", ERP_INSTANCE: root, ERP_SECRET: "my-plain-app-secret", ERP_REDIRECT_URI: "http://localhost/signin-callback", REDIS_URL: redis.url };
  const [a, b] = await Promise.all([startProcess(path("../../examples/node-webapp/server.mjs"), [], env), startProcess(path("../../examples/node-webapp/server.mjs"), [], env)]);
  const nodeA = `http://127.0.0.1:${a.port}`;
  const nodeB = `http://127.0.0.1:${b.port}`;
  try {
    // The sign-in starts on A and comes back to B: the pending sign-in is in Redis.
    const login = await fetch(`${nodeA}/login`, { redirect: "manual" });
    const back = new URL(await signInAtProvider(login.headers.get("location")));
    const callback = await fetch(`${nodeB}/signin-callback${back.search}`, { headers: { cookie: cookieOf(login)[0] }, redirect: "manual" });
    assert.equal(callback.status, 302, await callback.text());
    const cookie = cookieOf(callback)[0];
    for (const node of [nodeA, nodeB, nodeA]) assert.equal((await fetch(`${node}/customers`, { headers: { cookie } })).status, 200, node);
    // Signed out on B: A no longer serves the session.
    const out = await fetch(`${nodeB}/logout`, { method: "POST", headers: { cookie, origin: "http://localhost" }, redirect: "manual" });
    assert.equal(out.status, 302);
    assert.equal((await fetch(`${nodeA}/customers`, { headers: { cookie } })).status, 401);
  } finally {
    a.stop();
    b.stop();
    await redis.close();
  }
});
