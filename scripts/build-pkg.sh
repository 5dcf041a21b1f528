#!/usr/bin/env bash
# Builds the npm package into pkg/: release wasm, wasm-bindgen, wasm-opt -Oz, the committed
# sources of pkg-template/; checks the wasm imports nothing from `env`; prints sizes.
set -euo pipefail
cd "$(dirname "$0")/.."

# The wasm is built from bindings/npm-build (its own lockfile: ASCII-only IDNA) with the
# nightly pinned there (its rust-toolchain.toml) and its size levers: std rebuilt for size
# with panics that abort at once, no Debug formatting, no panic locations. The crate itself
# stays on stable; see scripts/wasm-levers.sh for what each lever is worth.
nightly=$(sed -n 's/^channel = "\(.*\)"$/\1/p' bindings/npm-build/rust-toolchain.toml)
# No build-machine paths in the shipped wasm.
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$PWD=/erpnet-auth --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=$(rustc +"$nightly" --print sysroot)=/rust \
  -Zunstable-options -Cpanic=immediate-abort -Zfmt-debug=none -Zlocation-detail=none"
# NPM_BUILD_FEATURES picks an alternative for a side-by-side measurement (e.g. rust-urls).
cargo +"$nightly" build --quiet --release --manifest-path bindings/npm-build/Cargo.toml \
  --target wasm32-unknown-unknown --target-dir target/npm --features "${NPM_BUILD_FEATURES:-}" \
  -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
rm -rf pkg
wasm-bindgen --target web --out-dir pkg --out-name erpnet_auth_wasm \
  target/npm/wasm32-unknown-unknown/release/erpnet_auth_npm_build.wasm
# With its function names, for `make wasm-size`.
cp pkg/erpnet_auth_wasm_bg.wasm target/npm/attribution.wasm
# Rust 1.95 emits these features; binaryen 132 needs them named. Flattening and re-looping
# the control flow before -Oz, and -Oz until it converges, take 1.4 KB gzip more off (make
# wasm-levers) for ~14 s of build.
node_modules/.bin/wasm-opt --flatten --rereloop -Oz -Oz --converge --strip-debug --strip-producers \
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
