// Issue 23's figure for renewal under ERP.net's request limit, on the built package against
// the real test provider: 200 calls fired at the instant a 3-second token expires, through
// the ERP.net preset as shipped. The provider's Domain API runs one request per session at a
// time, 45 ms each, with five queued and 429 beyond, so the burst runs for about 9 s: three
// token lifetimes, each call judged by the token it carried.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import { init, ErpNetAuth } from "../../pkg/node.js";
import { signInAtProvider, startProcess } from "../idp/login.mjs";

const path = (p) => fileURLToPath(new URL(p, import.meta.url));
const TTL = 3;
const idp = await startProcess(path("../idp/server.mjs"), ["--access-ttl", String(TTL), "--api-service-ms", "45"]);
after(() => idp.stop());
const root = `http://127.0.0.1:${idp.port}`;
const stats = async () => (await fetch(`${root}/test/stats`)).json();
await init();

test("200 calls at the instant of expiry, 3-second tokens, ERP.net's request limit: every caller answered 200, the grant stands", async () => {
  const auth = new ErpNetAuth({ instance: root, clientId: "my.trusted.app/first", clientSecret: "my-plain-app-secret", redirectUri: "http://localhost/signin-callback" });
  try {
    const { expiresAt } = await auth.handleCallback(await signInAtProvider(await auth.signIn()));
    assert.ok(expiresAt, "the token answer said when the token expires");
    const before = await stats();
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt - Date.now())));
    const started = Date.now();
    const settled = await Promise.allSettled(Array.from({ length: 200 }, () => auth.fetch("Crm_Sales_Customers")));
    const elapsed = Date.now() - started;
    const after = await stats();
    const statuses = settled.map((r) => (r.status === "fulfilled" ? r.value.status : r.reason?.code));
    await Promise.all(settled.map((r) => r.status === "fulfilled" && r.value.arrayBuffer()));
    const ok = statuses.filter((s) => s === 200).length;
    const refreshes = after.refreshes - before.refreshes;
    const throttled = after.apiTooMany - before.apiTooMany;
    console.log(`# callers answered 200: ${ok}/200, refreshes: ${refreshes}, 429s from the server: ${throttled} (burst of ${elapsed} ms, ${after.apiRequests - before.apiRequests} API requests, ${after.apiUnauthorized - before.apiUnauthorized} answered 401 by the API)`);
    const others = statuses.filter((s) => s !== 200);
    assert.equal(ok, 200, `every caller answered 200 (others: ${[...new Set(others)].join(", ")})`);
    assert.ok(elapsed > 2 * TTL * 1000, `the burst spans several token lifetimes (${elapsed} ms)`);
    assert.equal(after.refreshFailures - before.refreshFailures, 0, "no refresh refused");
    assert.equal(after.grantsRevoked, before.grantsRevoked, "the grant stands (no refresh token reused)");
    assert.equal((await auth.fetch("Crm_Sales_Customers")).status, 200, "and serves the next call");
  } finally {
    auth.close();
  }
});
