// Cold start in headless Chromium, two ways: from the page's first script to a usable client
// (the JS's download included), and from the JS's arrival (the bundle's responseEnd, the
// issue's measure) to a usable client (erpnet-auth: its wasm preloaded beside the JS and
// compiled from the page's head, as its README advises, then instantiated). Files from a loopback server,
// uncompressed. Each load in a fresh browser context (no cache), interleaved across
// libraries; medians in ms.
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdirSync, readFileSync, copyFileSync } from "node:fs";
import { extname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const out = join(root, "target", "peers", "cold");
const libs = ["erpnet-auth", "oauth4webapi", "openid-client", "oidc-client-ts", "auth0-spa-js"];

export async function chromiumColdStart(loads = 7) {
  mkdirSync(out, { recursive: true });
  for (const lib of libs) {
    const args = [`benches/peers/cold/${lib}.js`, "--bundle", "--minify", "--format=esm", "--platform=browser", "--log-level=error", `--outfile=${join(out, `${lib}.js`)}`];
    if (lib === "erpnet-auth") args.push("--alias:erpnet-auth=./pkg/index.js");
    execFileSync(join(root, "node_modules", ".bin", "esbuild"), args, { cwd: root });
  }
  copyFileSync(join(root, "pkg", "erpnet_auth_wasm_bg.wasm"), join(out, "erpnet_auth_wasm_bg.wasm"));
  const types = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };
  const server = createServer((req, res) => {
    const name = new URL(req.url, "http://x").pathname.slice(1);
    if (name.endsWith(".html")) {
      res.writeHead(200, { "content-type": types[".html"] });
      // erpnet-auth's documented setup: the wasm's fetch starts with the page, beside the JS,
      // and a script in the head compiles it as it arrives (after the first-script mark, so
      // that its cost counts).
      const erpnet = name.startsWith("erpnet-auth");
      const preload = erpnet ? '<link rel="preload" href="/erpnet_auth_wasm_bg.wasm" as="fetch" type="application/wasm" crossorigin>' : "";
      const compile = erpnet ? '<script>window.erpnetAuthWasm = WebAssembly.compileStreaming(fetch("/erpnet_auth_wasm_bg.wasm"))</script>' : "";
      return res.end(`<!doctype html>${preload}<script>window.t0 = performance.now()</script>${compile}<script type="module" src="/${name.replace(".html", ".js")}"></script>`);
    }
    try {
      const body = readFileSync(join(out, name));
      res.writeHead(200, { "content-type": types[extname(name)] ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const { chromium } = await import(join(root, "node_modules", "playwright-core", "index.mjs"));
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--headless", "--no-sandbox", "--disable-gpu"] });
  const samples = Object.fromEntries(libs.map((lib) => [lib, []]));
  const afterArrival = Object.fromEntries(libs.map((lib) => [lib, []]));
  try {
    for (let i = 0; i < loads + 1; i++) {
      for (const lib of libs) {
        const context = await browser.newContext();
        const page = await context.newPage();
        await page.goto(`${origin}/${lib}.html`);
        const ready = await page.waitForFunction(() => window.ready, null, { timeout: 10_000 }).then((h) => h.jsonValue(), () => NaN);
        const arrived = await page.evaluate((name) => performance.getEntriesByName(new URL(name, location.href).href)[0]?.responseEnd ?? NaN, `/${lib}.js`);
        const t0 = await page.evaluate(() => window.t0);
        if (i > 0) {
          // The first round warms the browser's process.
          samples[lib].push(ready);
          afterArrival[lib].push(t0 + ready - arrived);
        }
        await context.close();
      }
    }
  } finally {
    await browser.close();
    server.close();
  }
  const median = (values) => [...values].sort((a, b) => a - b)[values.length >> 1];
  return {
    firstScript: Object.fromEntries(libs.map((lib) => [lib, median(samples[lib])])),
    afterArrival: Object.fromEntries(libs.map((lib) => [lib, median(afterArrival[lib])])),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await chromiumColdStart());
