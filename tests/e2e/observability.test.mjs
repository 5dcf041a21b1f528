// A server is observable and its records keep secrets: ServerAuth against the real test
// provider (short-lived tokens, ERP.net's request limit), every event and log record
// captured, then searched for every secret that crossed the wire.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import { init, MemoryStorage } from "../../pkg/node.js";
import { ServerAuth } from "../../pkg/server.js";
import { signInAtProvider, startProcess } from "../idp/login.mjs";

const path = (p) => fileURLToPath(new URL(p, import.meta.url));
const SECRET = "my-plain-app-secret";
await init();

let idp;
let root;
before(async () => {
  idp = await startProcess(path("../idp/server.mjs"), ["--access-ttl", "2"]);
  root = `http://127.0.0.1:${idp.port}`;
});
after(() => idp?.stop());

test("events and log records of a whole run: sign-in, renewal, 401 replay, 429 backoff, lock wait, storage conflict, failures; no secret in them", async () => {
  const secrets = new Set([SECRET]);
  const keep = (value) => typeof value === "string" && value.length >= 8 && secrets.add(value);
  // Everything secret that crosses the wire, as the provider and the API see it.
  const recording = async (url, init = {}) => {
    if (typeof init.body === "string") {
      for (const [name, value] of new URLSearchParams(init.body)) if (["client_secret", "code", "code_verifier", "refresh_token", "token"].includes(name)) keep(value);
    }
    const authorization = new Headers(init.headers).get("authorization");
    if (authorization) keep(authorization.replace(/^Bearer /, ""));
    const response = await fetch(url, init);
    if (String(url).endsWith("/connect/token")) {
      const body = await response.clone().json().catch(() => ({}));
      for (const name of ["access_token", "refresh_token", "id_token"]) keep(body[name]);
      if (body.id_token) for (const part of body.id_token.split(".")) keep(part);
    }
    return response;
  };
  const records = [];
  const events = [];
  // Two processes sharing one store (and, in one Node process, one token lock).
  const storage = new MemoryStorage();
  const serverAuth = () =>
    new ServerAuth({
      instance: root,
      clientId: "my.trusted.app/first",
      clientSecret: SECRET,
      redirectUri: "http://localhost/signin-callback",
      storage,
      fetch: recording,
      // No limit of our own: ERP.net's (1 running, 5 queued) answers the burst below with 429s.
      apiConcurrency: null,
      logger: (record) => records.push(record),
    });
  const auth = serverAuth();
  const other = serverAuth();
  for (const entry of [auth, other]) entry.on("*", (event) => events.push(event));

  const jar = new Map();
  const take = (response) => {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(";");
      const at = pair.indexOf("=");
      keep(pair.slice(at + 1));
      if (/Max-Age=0/.test(line)) jar.delete(pair.slice(0, at));
      else jar.set(pair.slice(0, at), pair.slice(at + 1));
    }
    return response;
  };
  const request = (path, init = {}) => new Request(`http://localhost${path}`, { ...init, headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join("; "), ...init.headers } });

  const login = take(await auth.signIn(request("/login")));
  const authorization = new URL(login.headers.get("location"));
  for (const name of ["state", "nonce", "code_challenge"]) keep(authorization.searchParams.get(name));
  const back = new URL(await signInAtProvider(authorization.href));
  keep(back.searchParams.get("code"));
  assert.equal((await auth.callback(request("/signin-callback?code=forged-code-value&state=forged-state-value"))).status, 400);
  assert.equal(take(await auth.callback(request(`/signin-callback${back.search}`))).status, 302);
  assert.equal((await auth.fetch(request("/customers"), "Crm_Sales_Customers")).status, 200);
  assert.equal((await other.fetch(request("/customers"), "Crm_Sales_Customers")).status, 200);
  await new Promise((resolve) => setTimeout(resolve, 2_300)); // the access token expired
  // Both processes renew at once: one refreshes, the other waits for the lock and adopts.
  const both = await Promise.all([auth, other].map((entry) => entry.fetch(request("/customers"), "Crm_Sales_Customers")));
  assert.deepEqual(both.map((r) => r.status), [200, 200]);
  await fetch(`${root}/test/reject-next`, { method: "POST" });
  // A 401 for a token this short-lived is within the clock skew of its expiry: renewed and
  // replayed (only a current, unexpired token falls under the storm guard), and logged.
  assert.equal((await auth.fetch(request("/customers"), "Crm_Sales_Customers")).status, 200);
  const burst = await Promise.all(Array.from({ length: 12 }, () => auth.fetch(request("/customers"), "Crm_Sales_Customers")));
  assert.deepEqual([...new Set(burst.map((r) => r.status))], [200]);
  await Promise.all(burst.map((r) => r.arrayBuffer()));
  // The other process still holds the tokens from before the 401's renewal: its sign-out's
  // write loses the compare-and-swap (a storage conflict), and the session ends all the same.
  assert.equal(take(await other.signOut(request("/logout", { method: "POST", headers: { origin: "http://localhost" } }))).status, 302);
  assert.equal(await auth.user(request("/")), null);
  auth.close();
  other.close();

  const kinds = new Set(records.map((r) => r.event));
  for (const kind of ["signInStarted", "callbackRefused", "signedIn", "tokensRenewed", "replayed", "throttled", "lockWait", "storageConflict", "signedOut"]) {
    assert.ok(kinds.has(kind), `a ${kind} record (${[...kinds].join(", ")})`);
  }
  assert.ok(records.some((r) => r.event === "replayed" && r.status === 401), "the 401 answer was discarded and the call replayed");
  assert.ok(records.some((r) => r.event === "throttled" && r.status === 429), "a 429 answer was discarded and the call retried after its backoff");
  assert.ok(records.some((r) => r.event === "lockWait" && r.waitedMs > 0), "one process waited for the other's token request");
  assert.ok(events.some((e) => e.type === "callReplayed") && events.some((e) => e.type === "lockWait") && events.some((e) => e.type === "storageConflict"));
  assert.ok(events.some((e) => e.type === "signedIn") && events.some((e) => e.type === "tokensRenewed"));
  const text = JSON.stringify(records) + JSON.stringify(events, (_key, value) => (value instanceof Error ? { ...value, message: value.message } : value));
  assert.ok(secrets.size >= 12, `secrets captured: ${secrets.size}`);
  for (const secret of secrets) assert.ok(!text.includes(secret), `a secret in the records: ${secret.slice(0, 6)}…`);
  console.log(`# ${records.length} log records (${[...kinds].join(", ")}) and ${events.length} events; none holds any of the ${secrets.size} secrets that crossed the wire`);
});
