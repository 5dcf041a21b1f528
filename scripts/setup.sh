#!/usr/bin/env bash
# Installs what `make test` needs and is missing. Idempotent: skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

have_component() { rustup component list --installed 2>/dev/null | grep -q "^$1"; }
for component in rustfmt clippy; do
  have_component "$component" || rustup component add "$component"
done
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
