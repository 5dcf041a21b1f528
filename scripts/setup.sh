#!/usr/bin/env bash
# Installs what `make test` (or, with the argument `demo`, `make demo`) needs and is
# missing. Idempotent: skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

install_npm_tools() {
  # Build and test tools and the test OpenID provider, pinned in package-lock.json.
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
  fi
}

if [ "${1:-all}" = demo ]; then
  install_npm_tools
  exit 0
fi

have_component() { rustup component list --installed 2>/dev/null | grep -q "^$1"; }
for component in rustfmt clippy; do
  have_component "$component" || rustup component add "$component"
done
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

# The wasm-bindgen CLI must match the crate exactly (pinned in bindings/wasm/Cargo.toml).
wanted=$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' bindings/wasm/Cargo.toml)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wanted" ]; then
  # No --locked: the registry copy here lacks one crate version the CLI's lockfile pins.
  cargo install wasm-bindgen-cli --version "$wanted"
fi

install_npm_tools

# Two pinned nightlies (one toolchain when the dates agree); the crate itself builds on
# stable. The npm package's wasm (std rebuilt for size) needs its nightly's sources; the
# fuzz targets need theirs and cargo fuzz.
install_nightly() { # toolchain [component]
  rustup toolchain list | grep -q "^$1" || rustup toolchain install "$1" --profile minimal
  if [ -n "${2:-}" ]; then
    rustup component list --toolchain "$1" --installed | grep -q "^$2" || rustup component add "$2" --toolchain "$1"
  fi
}
install_nightly "$(sed -n 's/^channel = "\(.*\)"$/\1/p' bindings/npm-build/rust-toolchain.toml)" rust-src
install_nightly "$(cat fuzz/rust-toolchain)"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2

# Headless Chromium for the browser tests (Debian's; never a downloaded browser), and a
# real Redis for the server-farm tests (started by the tests on a free port).
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
