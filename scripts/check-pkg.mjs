// Checks the built package's wasm (no imports from `env`: everything it needs comes from
// the generated glue) and prints raw and gzip sizes of the wasm and the JavaScript.
import { readFileSync, readdirSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join } from "node:path";

const dir = process.argv[2] ?? "pkg";
const wasm = readFileSync(join(dir, "erpnet_auth_wasm_bg.wasm"));
const imports = WebAssembly.Module.imports(new WebAssembly.Module(wasm));
const fromEnv = imports.filter((i) => i.module === "env");
if (fromEnv.length > 0) {
  console.error(`the wasm imports from env: ${fromEnv.map((i) => i.name).join(", ")}`);
  process.exit(1);
}
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const row = (name, bytes) => console.log(`${name.padEnd(28)} ${kb(bytes.length).padStart(9)} raw ${kb(gzipSync(bytes, { level: 9 }).length).padStart(9)} gzip`);
console.log(`wasm imports: ${imports.length}, none from env (modules: ${[...new Set(imports.map((i) => i.module))].join(", ")})`);
row("erpnet_auth_wasm_bg.wasm", wasm);
let js = Buffer.alloc(0);
for (const file of readdirSync(dir).filter((f) => f.endsWith(".js")).sort()) {
  const bytes = readFileSync(join(dir, file));
  row(file, bytes);
  js = Buffer.concat([js, bytes]);
}
row("all .js", js);
