// The package README's browser example (section 2), run as written in headless Chromium
// against the real test provider: sign in, call the API, reload, still signed in.
//
// The code is taken from the README at run time. Only what names a deployment is replaced
// (each exactly once, or the test fails): the instance (the test provider plays it) and the
// redirect URI (registered there under /spa/). The bare import "erpnet-auth" is resolved by an
// import map, as a bundler would.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { startProcess } from "../idp/login.mjs";

const path = (p) => fileURLToPath(new URL(p, import.meta.url));

/** The first ```js block of the README's section 2. */
function readmeExample() {
  const readme = readFileSync(path("../../pkg/README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## 2. A browser single-page app"));
  const start = section.indexOf("```js\n");
  assert.ok(start >= 0, "section 2 has a JavaScript example");
  return section.slice(start + "```js\n".length, section.indexOf("\n```", start + 1));
}

const DEPLOYMENT = [
  ['"https://demodb.my.erp.net"', "location.origin"],
  ["`${location.origin}/`", "`${location.origin}/spa/`"],
];
function deployed(code) {
  for (const [written, here] of DEPLOYMENT) {
    assert.equal(code.split(written).length - 1, 1, `the README example names ${written} once`);
    code = code.replace(written, here);
  }
  return code;
}

const root = path("../js/.out/readme-spa/");
rmSync(root, { recursive: true, force: true });
mkdirSync(`${root}/erpnet-auth`, { recursive: true });
for (const file of ["index.js", "client.js", "storage.js", "lock.js", "signatures.js", "erpnet_auth_wasm.js", "erpnet_auth_wasm_bg.wasm"]) {
  cpSync(path(`../../pkg/${file}`), `${root}/erpnet-auth/${file}`);
}
writeFileSync(`${root}/app.js`, deployed(readmeExample()));
writeFileSync(
  `${root}/index.html`,
  `<!doctype html>
<meta charset="utf-8">
<title>the README's SPA</title>
<script type="importmap">{ "imports": { "erpnet-auth": "./erpnet-auth/index.js" } }</script>
<script type="module" src="./app.js"></script>
`,
);

const idp = await startProcess(path("../idp/server.mjs"), ["--spa-root", root]);
const origin = `http://127.0.0.1:${idp.port}`;
const stats = async () => (await fetch(`${origin}/test/stats`)).json();
const { chromium } = await import(path("../../node_modules/playwright-core/index.mjs"));
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
after(async () => {
  await browser.close();
  idp.stop();
});

/** The next value the page logs with console.log (the example logs the customers). */
const nextLog = (page) =>
  page.waitForEvent("console", { predicate: (message) => message.type() === "log", timeout: 20_000 }).then((message) => message.args()[0].jsonValue());

/** `waiting`, failed at once by an uncaught error in the page (rather than by its timeout). */
const unlessThePageFails = (page, waiting) =>
  Promise.race([waiting, new Promise((_, reject) => page.once("pageerror", (error) => reject(new Error(`the page failed: ${error.message}`))))]);

test("the README's SPA example as written: login page once, the API called, and a reload stays signed in", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  const loginPages = [];
  // Sign-ins started by the page (the provider's own steps go to /id/connect/authorize/<uid>).
  page.on("request", (request) => new URL(request.url()).pathname === "/id/connect/authorize" && loginPages.push(request.url()));

  // First visit: not signed in, so the example sends the browser to the login page.
  await page.goto(`${origin}/spa/`);
  await unlessThePageFails(page, page.waitForURL(/\/id\/interaction\//, { timeout: 20_000 }));
  assert.equal(loginPages.length, 1);
  assert.equal(new URL(loginPages[0]).searchParams.get("prompt"), "login");
  await page.fill("input[name=login]", "readme-user");
  await page.fill("input[name=password]", "secret");
  const customers = nextLog(page);
  await page.click("button[type=submit]");
  await page.waitForSelector("input[name=prompt][value=consent]", { state: "attached" });
  await page.click("button[type=submit]");
  // Back with the code: the example completes the sign-in and calls the API.
  assert.deepEqual((await unlessThePageFails(page, customers)).map((c) => c.Number), ["C-0001"]);
  assert.equal(new URL(page.url()).search, "", "the code left the address bar");
  assert.equal((await stats()).codeExchanges, 1);

  // A reload: the session comes back from IndexedDB, with no login page and no new sign-in.
  const again = nextLog(page).catch((error) => error);
  await page.reload();
  const result = await again;
  assert.deepEqual(errors, [], "no error in the page");
  assert.deepEqual(loginPages.slice(1), [], "the reload did not go to the login page");
  assert.ok(Array.isArray(result), `the example called the API after the reload (${result})`);
  assert.deepEqual(result.map((c) => c.Number), ["C-0001"]);
  const end = await stats();
  assert.equal(end.codeExchanges, 1, "no new sign-in after the reload");
  console.log(`# README SPA: ${loginPages.length} login page, ${end.codeExchanges} code exchange, ${end.apiRequests} API requests`);
  await context.close();
});
