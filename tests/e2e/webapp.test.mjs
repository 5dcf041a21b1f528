// The Node web app example (examples/node-webapp/server.mjs) as an attacker and a crowd see
// it: session fixation, cookie parsing, state per cookieless visitor, sign-out and sign-in
// CSRF, a farm sharing Redis, error pages while Redis is down.
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

/** A browser's cookie jar for the app: Set-Cookie applied, Max-Age=0 deletes. */
function browser(from) {
  const jar = new Map(from?.jar);
  return {
    jar,
    get cookie() {
      return [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
    },
    async fetch(url, init = {}) {
      const response = await fetch(url, { redirect: "manual", ...init, headers: { ...(jar.size ? { cookie: this.cookie } : {}), ...init.headers } });
      for (const line of response.headers.getSetCookie()) {
        const [pair] = line.split(";");
        const at = pair.indexOf("=");
        if (/Max-Age=0/.test(line)) jar.delete(pair.slice(0, at));
        else jar.set(pair.slice(0, at), pair.slice(at + 1));
      }
      return response;
    },
  };
}
const SESSION = "erpnet-session";

/** Signs in through the app (at `start`, back at `end`) with `user`'s browser; returns it. */
async function signInThroughApp(user = browser(), start = base, end = start) {
  const login = await user.fetch(`${start}/login`);
  assert.equal(login.status, 302);
  const back = new URL(await signInAtProvider(login.headers.get("location")));
  const callback = await user.fetch(`${end}/signin-callback${back.search}`);
  assert.equal(callback.status, 302, await callback.text());
  return user;
}

test("session fixation: cookies planted before sign-in are worthless after it", async () => {
  // The attacker gets cookies from the app and plants them in the victim's browser.
  const attacker = browser();
  await attacker.fetch(`${base}/login`);
  assert.ok(attacker.jar.size > 0, "the app set a cookie at /login");
  attacker.jar.set(SESSION, "A".repeat(43));
  const victim = await signInThroughApp(browser(attacker));
  assert.notEqual(victim.jar.get(SESSION), attacker.jar.get(SESSION), "the id was made at sign-in");
  assert.equal((await victim.fetch(`${base}/customers`)).status, 200, "the victim is signed in");
  const ride = await attacker.fetch(`${base}/customers`);
  assert.equal(ride.status, 401, "the planted cookies read nothing");
});

test("the cookie is parsed exactly: another cookie whose name ends in the session's is not the session", async () => {
  const victim = await signInThroughApp();
  const value = victim.jar.get(SESSION);
  const lookalike = await fetch(`${base}/customers`, { headers: { cookie: `not${SESSION}=${value}` } });
  assert.equal(lookalike.status, 401);
  const exact = await fetch(`${base}/customers`, { headers: { cookie: `other=1; ${SESSION}=${value}` } });
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
  const forged = await victim.fetch(`${base}/logout`, { method: "POST", headers: { origin: "https://evil.example" } });
  assert.equal(forged.status, 403);
  const viaGet = await victim.fetch(`${base}/logout`);
  assert.notEqual(viaGet.status, 302, "a link or an image cannot sign the user out");
  assert.equal((await victim.fetch(`${base}/customers`)).status, 200, "still signed in");
  const session = victim.jar.get(SESSION);
  const own = await victim.fetch(`${base}/logout`, { method: "POST", headers: { origin: "http://localhost" } });
  assert.equal(own.status, 302);
  assert.match(own.headers.getSetCookie().join(), /Max-Age=0/);
  assert.equal((await fetch(`${base}/customers`, { headers: { cookie: `${SESSION}=${session}` } })).status, 401, "signed out");
});

test("a cross-site /login leaves the signed-in session alone until the new sign-in completes", async () => {
  const user = await signInThroughApp();
  const first = user.jar.get(SESSION);
  const login = await user.fetch(`${base}/login`, { headers: { "sec-fetch-site": "cross-site" } });
  assert.equal(login.status, 302);
  assert.equal(user.jar.get(SESSION), first, "the session cookie is untouched");
  assert.equal((await user.fetch(`${base}/customers`)).status, 200, "still signed in");
  const back = new URL(await signInAtProvider(login.headers.get("location")));
  assert.equal((await user.fetch(`${base}/signin-callback${back.search}`)).status, 302);
  assert.notEqual(user.jar.get(SESSION), first);
  assert.equal((await fetch(`${base}/customers`, { headers: { cookie: `${SESSION}=${first}` } })).status, 401, "the old session ended");
  assert.equal((await user.fetch(`${base}/customers`)).status, 200);
});

/** Whether a body an app sent shows anything of its insides. */
function assertPlain(response, text) {
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/, `${response.status} ${text.slice(0, 200)}`);
  assert.doesNotMatch(text, /node_modules|\/work\/|\bat \S+ \(|<pre>|Error:/, text.slice(0, 300));
  assert.equal(typeof JSON.parse(text).code, "string");
}

test("two processes of the example behind one load balancer share sessions through Redis; /login stores nothing", async () => {
  const { startRedis } = await import("../idp/redis.mjs");
  const redis = await startRedis();
  const env = { PORT: "0", ERP_INSTANCE: root, ERP_SECRET: "my-plain-app-secret", ERP_REDIRECT_URI: "http://localhost/signin-callback", REDIS_URL: redis.url, ERP_COOKIE_KEY: "an-e2e-only-cookie-key-of-32-characters" };
  const [a, b] = await Promise.all([startProcess(path("../../examples/node-webapp/server.mjs"), [], env), startProcess(path("../../examples/node-webapp/server.mjs"), [], env)]);
  const nodeA = `http://127.0.0.1:${a.port}`;
  const nodeB = `http://127.0.0.1:${b.port}`;
  const { createClient } = await import("redis");
  const inspect = await createClient({ url: redis.url }).connect();
  try {
    for (let i = 0; i < 200; i++) await fetch(`${i % 2 ? nodeA : nodeB}/login`, { redirect: "manual" });
    assert.equal(await inspect.dbSize(), 0, "200 cookieless /login: no Redis key");
    // The sign-in starts on A and comes back to B: the pending sign-in rides in its cookie.
    const user = await signInThroughApp(browser(), nodeA, nodeB);
    for (const node of [nodeA, nodeB, nodeA]) assert.equal((await user.fetch(`${node}/customers`)).status, 200, node);
    // Signed out on B: A no longer serves the session.
    const session = user.jar.get(SESSION);
    const out = await user.fetch(`${nodeB}/logout`, { method: "POST", headers: { origin: "http://localhost" } });
    assert.equal(out.status, 302);
    assert.equal((await fetch(`${nodeA}/customers`, { headers: { cookie: `${SESSION}=${session}` } })).status, 401);
  } finally {
    await inspect.close();
    a.stop();
    b.stop();
    await redis.close();
  }
});

test("error pages carry no internals: with Redis down every route answers a plain typed JSON", async () => {
  const { startRedis } = await import("../idp/redis.mjs");
  const redis = await startRedis();
  const env = { PORT: "0", ERP_INSTANCE: root, ERP_SECRET: "my-plain-app-secret", ERP_REDIRECT_URI: "http://localhost/signin-callback", REDIS_URL: redis.url, ERP_COOKIE_KEY: "an-e2e-only-cookie-key-of-32-characters", NODE_ENV: "development" };
  const app = await startProcess(path("../../examples/node-webapp/server.mjs"), [], env);
  const node = `http://127.0.0.1:${app.port}`;
  try {
    const user = await signInThroughApp(browser(), node);
    const login = await user.fetch(`${node}/login`);
    const back = new URL(await signInAtProvider(login.headers.get("location")));
    await redis.stop();
    for (const [what, send] of [
      ["GET /", () => user.fetch(`${node}/`)],
      ["GET /customers", () => user.fetch(`${node}/customers`)],
      ["GET /signin-callback", () => user.fetch(`${node}/signin-callback${back.search}`)],
      ["POST /logout", () => user.fetch(`${node}/logout`, { method: "POST", headers: { origin: "http://localhost" } })],
    ]) {
      const response = await send();
      const text = await response.text();
      assert.ok(response.status >= 500, `${what}: ${response.status}`);
      assertPlain(response, text);
    }
  } finally {
    app.stop();
    await redis.close();
  }
});
