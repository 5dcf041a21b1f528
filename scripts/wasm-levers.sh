#!/usr/bin/env bash
# Every size lever of the npm package's wasm, cumulative, each a real build: prints the
# wasm after wasm-bindgen and wasm-opt -Oz, raw and gzip -9. (make wasm-levers; ~4 min)
set -euo pipefail
cd "$(dirname "$0")/.."
# The nightly the shipped wasm is built with.
nightly=$(sed -n 's/^channel = "\(.*\)"$/\1/p' bindings/npm-build/rust-toolchain.toml)
out=target/levers
mkdir -p "$out"

measure() { # label wasm [wasm-opt passes]
  rm -rf "$out/bg" && wasm-bindgen --target web --out-dir "$out/bg" --out-name m "$2"
  # shellcheck disable=SC2086
  node_modules/.bin/wasm-opt ${3:--Oz} --strip-debug --strip-producers \
    --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$out/bg/m_bg.wasm" -o "$out/m.wasm"
  printf '| %s | %s | %s |\n' "$1" "$(stat -c %s "$out/m.wasm")" "$(gzip -9c "$out/m.wasm" | wc -c)"
}
npm_build() { # target-dir features cargo-args...
  local dir=$1 features=$2
  shift 2
  cargo "$@" build --quiet --release --manifest-path bindings/npm-build/Cargo.toml \
    --target wasm32-unknown-unknown --target-dir "$out/$dir" --features "$features"
  echo "$out/$dir/wasm32-unknown-unknown/release/erpnet_auth_npm_build.wasm"
}
nightly_build() { # target-dir features rustflags build-std-features
  RUSTFLAGS="-Zunstable-options $3" npm_build "$1" "$2" +"$nightly" \
    -Zbuild-std=std,panic_abort ${4:+-Zbuild-std-features=$4}
}

echo "| lever (cumulative) | raw bytes | gzip bytes |"
echo "| --- | --- | --- |"
cargo build --quiet -p erpnet-auth-wasm --target wasm32-unknown-unknown --profile wasm-release --target-dir "$out/main"
measure "stable, main lockfile (full Unicode IDNA), RustCrypto verifier in the wasm" \
  "$out/main/wasm32-unknown-unknown/wasm-release/erpnet_auth_wasm.wasm"
measure "ASCII-only IDNA (bindings/npm-build lockfile)" "$(npm_build stable-sig "wasm-signatures rust-urls")"
measure "signatures verified by the host (node:crypto or WebCrypto): no RSA/P-256 code" "$(npm_build stable rust-urls)"
measure "nightly -Zbuild-std, -Cpanic=immediate-abort" "$(nightly_build abort rust-urls "-Cpanic=immediate-abort")"
measure "-Zfmt-debug=none -Zlocation-detail=none" \
  "$(nightly_build fmt rust-urls "-Cpanic=immediate-abort -Zfmt-debug=none -Zlocation-detail=none")"
measure "std's optimize_for_size" \
  "$(nightly_build size rust-urls "-Cpanic=immediate-abort -Zfmt-debug=none -Zlocation-detail=none" optimize_for_size)"
host=$(nightly_build host "" "-Cpanic=immediate-abort -Zfmt-debug=none -Zlocation-detail=none" optimize_for_size)
measure "URLs parsed by the host's URL: no url/idna code" "$host"
measure "wasm-opt --flatten --rereloop -Oz -Oz --converge (what make pkg ships)" "$host" \
  "--flatten --rereloop -Oz -Oz --converge"
