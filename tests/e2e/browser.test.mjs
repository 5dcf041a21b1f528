// End to end in headless Chromium: a public SPA with PKCE signs in through the real test
// provider's pages, calls the API, survives a reload, and renews after expiry.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { startProcess } from "../idp/login.mjs";

const path = (p) => fileURLToPath(new URL(p, import.meta.url));
const spa = path("../js/.out/spa/");
rmSync(spa, { recursive: true, force: true });
mkdirSync(`${spa}/erpnet-auth`, { recursive: true });
cpSync(path("./spa/"), spa, { recursive: true });
for (const file of ["index.js", "client.js", "storage.js", "lock.js", "signatures.js", "erpnet_auth_wasm.js", "erpnet_auth_wasm_bg.wasm"]) {
  cpSync(path(`../../pkg/${file}`), `${spa}/erpnet-auth/${file}`);
}

const TTL = 4;
const idp = await startProcess(path("../idp/server.mjs"), ["--access-ttl", String(TTL), "--spa-root", spa]);
const root = `http://127.0.0.1:${idp.port}`;
const stats = async () => (await fetch(`${root}/test/stats`)).json();
const { chromium } = await import(path("../../node_modules/playwright-core/index.mjs"));
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
after(async () => {
  await browser.close();
  idp.stop();
});

/** Clicks "Sign in", then fills the provider's login and consent pages as a user would. */
async function signInThroughProvider(page, user) {
  await page.click("#signin");
  await page.waitForURL(/\/id\/interaction\//);
  await page.fill("input[name=login]", user);
  await page.fill("input[name=password]", "secret");
  await page.click("button[type=submit]");
  // The login page has a submit button too: wait for the consent form itself.
  await page.waitForSelector("input[name=prompt][value=consent]", { state: "attached" });
  await page.click("button[type=submit]");
}

test("SPA: real redirect to the provider, login and consent, callback, API, reload, renewal", async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${root}/spa/`);
  await page.waitForSelector("body[data-state=signed-out]");

  await signInThroughProvider(page, "spa-user");

  await page.waitForSelector("body[data-state=signed-in]");
  assert.equal(await page.textContent("#result"), "200");
  assert.equal(new URL(page.url()).search, "", "the code left the address bar");
  const afterSignIn = await stats();
  assert.equal(afterSignIn.codeExchanges, 1);

  await page.reload();
  await page.waitForSelector("body[data-state=signed-in]");
  assert.equal(await page.textContent("#result"), "200", "signed in after the reload");
  assert.equal((await stats()).codeExchanges, 1, "no new sign-in after the reload");

  await page.waitForTimeout(TTL * 1000 + 500);
  assert.equal(await page.evaluate(() => window.callApi()), 200);
  const end = await stats();
  assert.ok(end.refreshes >= 1, `refreshes ${end.refreshes}`);
  assert.equal(end.refreshFailures, 0);
  assert.equal(end.grantsRevoked, 0);
  const events = await page.evaluate(() => window.appEvents);
  assert.ok(events.includes("tokensRenewed"), events.join());
  assert.deepEqual(errors, []);
  console.log(`# SPA: ${end.codeExchanges} code exchange, ${end.refreshes} refreshes, ${end.apiRequests} API requests, ${end.apiUnauthorized} API 401`);
  // Its renewal timers would otherwise go on counting at the shared provider.
  await page.close();
});

test("SPA: a sign-in cancelled at the provider is shown, not bounced back to the login page; the next one works", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${root}/spa/`);
  await page.waitForSelector("body[data-state=signed-out]");
  await page.click("#signin");
  await page.waitForURL(/\/id\/interaction\//);
  await page.click("text=[ Cancel ]");
  await page.waitForSelector("body[data-state=sign-in-failed]");
  assert.equal(await page.textContent("#result"), "Sign-in cancelled.");
  assert.equal(await page.evaluate(() => window.signInError), "access_denied");
  assert.equal(new URL(page.url()).search, "", "the error left the address bar");
  await page.waitForTimeout(500);
  assert.match(page.url(), /\/spa\/$/, "no redirect back to the provider");

  const before = await stats();
  await signInThroughProvider(page, "changed-mind");
  await page.waitForSelector("body[data-state=signed-in]");
  assert.equal(await page.textContent("#result"), "200");
  assert.equal((await stats()).codeExchanges - before.codeExchanges, 1);
  await context.close();
});

test("two tabs sharing IndexedDB renew through Web Locks: no refresh collides, the grant survives", async () => {
  const context = await browser.newContext();
  const first = await context.newPage();
  await first.goto(`${root}/spa/`);
  await first.waitForSelector("body[data-state=signed-out]");
  await signInThroughProvider(first, "two-tabs");
  await first.waitForSelector("body[data-state=signed-in]");

  const second = await context.newPage();
  await second.goto(`${root}/spa/`);
  await second.waitForSelector("body[data-state=signed-in]");
  assert.equal(await second.evaluate(() => typeof navigator.locks?.request), "function");

  const before = await stats();
  // Three token lifetimes: both tabs' timers fire at every renewal time.
  const started = Date.now();
  while (Date.now() - started < 3 * TTL * 1000) {
    const statuses = await Promise.all([first.evaluate(() => window.callApi()), second.evaluate(() => window.callApi())]);
    assert.deepEqual(statuses, [200, 200]);
    await first.waitForTimeout(500);
  }
  const after = await stats();
  const refreshes = after.refreshes - before.refreshes;
  assert.equal(after.refreshFailures - before.refreshFailures, 0, "no refresh was refused");
  assert.equal(after.grantsRevoked, before.grantsRevoked, "the grant was never revoked for reuse");
  // One refresh per token lifetime at most (4-second tokens renew on demand: the minimum
  // renewal interval is 10 s), not one per tab.
  assert.ok(refreshes >= 2 && refreshes <= 4, `refreshes ${refreshes}`);
  console.log(`# two tabs over ${3 * TTL} s: ${refreshes} refreshes, ${after.apiRequests - before.apiRequests} API requests, 0 refused, 0 grants revoked`);
  await context.close();
});

test("SPA with tokens in memory: nothing secret at rest, a reload restores the session through a prompt=none redirect", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const interactions = [];
  page.on("request", (r) => r.url().includes("/id/interaction/") && interactions.push(r.url()));
  // First visit, no session at the provider: the silent attempt comes back login_required.
  await page.goto(`${root}/spa/memory.html`);
  await page.waitForSelector("body[data-state^='signed-out:']");
  const refusal = await page.evaluate(() => window.signInError);
  assert.ok(["login_required", "interaction_required"].includes(refusal), refusal);
  assert.equal(interactions.length, 0, "no login page for the silent attempt");
  assert.equal(new URL(page.url()).search, "");

  await signInThroughProvider(page, "memory-user");
  await page.waitForSelector("body[data-state=signed-in]");
  assert.equal(await page.textContent("#result"), "200");
  const atRest = await page.evaluate(async () => ({
    session: Object.fromEntries(Object.entries(sessionStorage)),
    local: localStorage.length,
    databases: (await indexedDB.databases()).map((d) => d.name),
  }));
  const snapshots = Object.values(atRest.session).map((value) => JSON.parse(value));
  assert.equal(snapshots.length, 1, "the snapshot is in sessionStorage");
  assert.deepEqual(
    ["tokens", "id_token", "pending"].filter((field) => field in snapshots[0]),
    [],
    "no token and no leftover sign-in at rest",
  );
  assert.equal(atRest.local, 0);
  assert.deepEqual(atRest.databases, []);

  const before = await stats();
  const seen = interactions.length;
  await page.reload();
  await page.waitForSelector("body[data-state=signed-in]");
  assert.equal(await page.textContent("#result"), "200");
  assert.equal(interactions.length, seen, "restored without a login page");
  assert.equal((await stats()).codeExchanges - before.codeExchanges, 1, "one silent sign-in");
  console.log(`# tokens in memory: first visit ${refusal}, reload restored with ${interactions.length - seen} login pages`);
  await context.close();
});

test("IndexedDbStorage: compare-and-swap in one transaction; two tabs writing the same base, exactly one wins", async () => {
  const context = await browser.newContext();
  const [one, two] = [await context.newPage(), await context.newPage()];
  // Any page of the origin without scripts of its own (the SPA pages navigate on load).
  for (const page of [one, two]) await page.goto(`${root}/test/stats`);
  const write = (page, generation, base) =>
    page.evaluate(
      async ([generation, base]) => {
        const { IndexedDbStorage } = await import("/spa/erpnet-auth/storage.js");
        return new IndexedDbStorage("cas-test").set("k", JSON.stringify({ generation }), { generation, baseGeneration: base });
      },
      [generation, base],
    );
  assert.equal(await write(one, 3, 2), true);
  assert.equal(await write(two, 3, 2), false, "the stored 3 is above the base 2");
  assert.equal(await write(two, 4, 3), true);
  // Both tabs renewed from generation 4 at once: IndexedDB runs the two transactions one
  // after the other, so the second sees the first's write and refuses.
  const results = await Promise.all([write(one, 5, 4), write(two, 5, 4)]);
  assert.deepEqual(results.sort(), [false, true]);
  const stored = await one.evaluate(async () => {
    const { IndexedDbStorage } = await import("/spa/erpnet-auth/storage.js");
    return JSON.parse(await new IndexedDbStorage("cas-test").get("k")).generation;
  });
  assert.equal(stored, 5);
  await context.close();
});
