#!/usr/bin/env bash
# Builds the npm package into pkg/: release wasm, wasm-bindgen, wasm-opt -Oz, the committed
# sources of pkg-template/; checks the wasm imports nothing from `env`; prints sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

# No build-machine paths in the shipped wasm (panic locations carry source paths).
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$PWD=/erpnet-auth --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=$(rustc --print sysroot)=/rust"
cargo build --quiet -p erpnet-auth-wasm --target wasm32-unknown-unknown --profile wasm-release
rm -rf pkg
wasm-bindgen --target web --out-dir pkg --out-name erpnet_auth_wasm \
  target/wasm32-unknown-unknown/wasm-release/erpnet_auth_wasm.wasm
# Rust 1.95 emits these features; binaryen 132 needs them named.
node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  pkg/erpnet_auth_wasm_bg.wasm -o pkg/erpnet_auth_wasm_bg.wasm
# The declaration of [Symbol.dispose] would force lib "esnext.disposable" on every
# TypeScript consumer; the JS still implements it where the runtime has the symbol.
sed -i '/\[Symbol\.dispose\]()/d' pkg/erpnet_auth_wasm.d.ts
rm -f pkg/.gitignore pkg/package.json
cp -r pkg-template/. pkg/
cp LICENSE-MIT LICENSE-APACHE pkg/
node scripts/check-pkg.mjs pkg
