#!/usr/bin/env bash
# How much the ID token signature code (RSA, P-256) adds to the package's wasm: builds it
# without the feature into a scratch directory and compares with pkg/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/size-probe
rm -rf "$out" && mkdir -p "$out"
cargo build --quiet -p erpnet-auth-wasm --target wasm32-unknown-unknown --profile wasm-release --no-default-features
wasm-bindgen --target web --out-dir "$out" --out-name probe target/wasm32-unknown-unknown/wasm-release/erpnet_auth_wasm.wasm
node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$out/probe_bg.wasm" -o "$out/probe_bg.wasm"
# Restore the default build so pkg/ and target/ agree.
cargo build --quiet -p erpnet-auth-wasm --target wasm32-unknown-unknown --profile wasm-release
node -e '
const { readFileSync } = require("node:fs"); const { gzipSync } = require("node:zlib");
const size = (f) => { const b = readFileSync(f); return [b.length, gzipSync(b, { level: 9 }).length]; };
const [withRaw, withGz] = size("pkg/erpnet_auth_wasm_bg.wasm");
const [noRaw, noGz] = size(process.argv[1]);
const kb = (n) => (n / 1024).toFixed(1) + " KB";
console.log(`ID token signature code in the wasm: +${kb(withRaw - noRaw)} raw, +${kb(withGz - noGz)} gzip (with ${kb(withRaw)} / ${kb(withGz)}, without ${kb(noRaw)} / ${kb(noGz)})`);
' "$out/probe_bg.wasm"
