// make bench-peers: the issue's comparison table, one run, every library side by side.
// Sizes from bundling the same app (apps/); speed in Node against one instant provider,
// interleaved rounds, medians. Ratios are against oauth4webapi.
import { appSizes } from "./size.mjs";
import { nodeFigures } from "./node.mjs";
import { chromiumColdStart } from "./chromium.mjs";

const rounds = Number(process.env.PEER_ROUNDS ?? 5);
const sizes = appSizes();
const speed = await nodeFigures(rounds);
const chromium = await chromiumColdStart(rounds + 2);
for (const [lib, ms] of Object.entries(chromium.firstScript)) speed[`chromium:${lib}`] = ms * 1000;
for (const [lib, ms] of Object.entries(chromium.afterArrival)) speed[`arrived:${lib}`] = ms * 1000;
const libs = ["erpnet-auth", "oauth4webapi", "openid-client", "oidc-client-ts", "auth0-spa-js"];
const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;
const ratio = (value, base) => (Number.isFinite(value) && Number.isFinite(base) && base > 0 ? ` (${(value / base).toFixed(2)}×)` : "");
const cell = (key, format, baseKey) => (lib) => {
  const value = speed[`${key}:${lib}`];
  return value === undefined || Number.isNaN(value) ? "—" : `${format(value)}${ratio(value, speed[`${key}:${baseKey ?? "oauth4webapi"}`])}`;
};
const overFetch = (kind) => (lib) => {
  const value = speed[`${kind}:${lib}`];
  return value === undefined ? "—" : `${(value - speed[`${kind}:fetch`]).toFixed(1)} µs`;
};
const rows = [
  ["app size, JS + wasm, gzip -9 (esbuild --minify)", (lib) => `${kb(sizes[lib].total)}${sizes[lib].wasm ? ` (wasm ${kb(sizes[lib].wasm)})` : ""}${ratio(sizes[lib].total, sizes.oauth4webapi.total)}`],
  ["code response with RS256 ID token, signature checked (median µs)", cell("code", (v) => `${v.toFixed(0)} µs`)],
  ["one authorized call over plain fetch, sequential", overFetch("seq")],
  ["one authorized call over plain fetch, 200 concurrent", overFetch("conc")],
  ["cold start, Node (import → ready)", cell("cold", (v) => `${(v / 1000).toFixed(1)} ms`, "openid-client")],
  ["cold start, Chromium (first script → ready)", cell("chromium", (v) => `${(v / 1000).toFixed(1)} ms`)],
  ["cold start, Chromium (JS arrived → ready)", cell("arrived", (v) => `${(v / 1000).toFixed(1)} ms`)],
];
console.log(`Node ${process.version}, ${rounds} interleaved rounds, medians; ratios against oauth4webapi (Node cold start: against openid-client)\n`);
console.log(`| figure | ${libs.join(" | ")} |`);
console.log(`| --- | ${libs.map(() => "---").join(" | ")} |`);
for (const [label, format] of rows) console.log(`| ${label} | ${libs.map(format).join(" | ")} |`);
const webCrypto = speed["code:erpnet-auth/webcrypto"];
console.log(`\nerpnet-auth's code response with the signature by WebCrypto, as the peers check it (the package's default in Node is node:crypto's verify): ${webCrypto.toFixed(0)} µs${ratio(webCrypto, speed["code:oauth4webapi"])}`);
console.log(`plain fetch itself (the instant transport): ${speed["seq:fetch"].toFixed(1)} µs sequential, ${speed["conc:fetch"].toFixed(1)} µs at 200 concurrent`);
process.exit(0);
