// Where the npm package's wasm goes: code bytes by crate and, for this crate, by module.
// Reads `twiggy top` of the module after wasm-bindgen and before wasm-opt (which strips the
// function names), so the total is larger than the shipped file; the shares carry over.
// Usage: node scripts/wasm-attribution.mjs [path.wasm]   (make wasm-size)
import { execFileSync } from "node:child_process";

const wasm = process.argv[2] ?? "target/npm/attribution.wasm";
const csv = execFileSync("twiggy", ["top", "-n", "1000000", "--format", "csv", wasm], { encoding: "utf8", maxBuffer: 1 << 28 });

function parseCsvLine(line) {
  const fields = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') (field += '"'), i++;
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") fields.push(field), (field = "");
    else field += c;
  }
  fields.push(field);
  return fields;
}

const byCrate = new Map();
const byModule = new Map();
let code = 0;
const add = (map, key, bytes) => map.set(key, (map.get(key) ?? 0) + bytes);
for (const line of csv.trim().split("\n").slice(1)) {
  const [name, size] = parseCsvLine(line);
  const bytes = Number(size);
  if (name.includes("subsection") || name.startsWith("custom section")) continue;
  let owner;
  if (name.startsWith("data segment")) owner = "(data: strings, tables)";
  else if (/^(session|__wbg|__wbindgen|applicationSecretHash)/.test(name)) owner = "(export shims)";
  else owner = /([a-z_][a-z0-9_]*)\[[0-9a-f]+\]/.exec(name)?.[1] ?? "(unnamed: imports, tables, types)";
  add(byCrate, owner, bytes);
  code += bytes;
  if (owner === "erpnet_auth") add(byModule, /erpnet_auth\[[0-9a-f]+\]::([a-z_]+)/.exec(name)?.[1] ?? "(root)", bytes);
}

const table = (title, map, total) => {
  console.log(`| ${title} | bytes | share |\n| --- | --- | --- |`);
  for (const [key, bytes] of [...map].sort((a, b) => b[1] - a[1])) {
    if (bytes / total < 0.005) continue;
    console.log(`| ${key} | ${bytes.toLocaleString("en")} | ${((100 * bytes) / total).toFixed(1)} % |`);
  }
  console.log();
};
console.log(`${wasm}: ${code.toLocaleString("en")} bytes of code and data before wasm-opt (names and custom sections left out)\n`);
table("crate", byCrate, code);
const core = byCrate.get("erpnet_auth") ?? 1;
table("erpnet_auth module", byModule, core);
