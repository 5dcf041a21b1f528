// App size: the same small browser app (apps/*.js) on each library, bundled with esbuild
// --minify, gzip -9; for erpnet-auth the wasm is added.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const out = `${root}target/peers`;
mkdirSync(out, { recursive: true });
const gzip = (file) => gzipSync(readFileSync(file), { level: 9 }).length;

export function appSizes() {
  const sizes = {};
  for (const name of ["erpnet-auth", "oauth4webapi", "openid-client", "oidc-client-ts", "auth0-spa-js"]) {
    const args = [`benches/peers/apps/${name}.js`, "--bundle", "--minify", "--format=esm", "--platform=browser", "--log-level=error", `--outfile=${out}/${name}.js`];
    if (name === "erpnet-auth") args.push(`--alias:erpnet-auth=./pkg/index.js`);
    execFileSync(`${root}node_modules/.bin/esbuild`, args, { cwd: root });
    const js = gzip(`${out}/${name}.js`);
    const wasm = name === "erpnet-auth" ? gzip(`${root}pkg/erpnet_auth_wasm_bg.wasm`) : 0;
    sizes[name] = { js, wasm, total: js + wasm };
  }
  return sizes;
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(appSizes());
