# erpnet-auth: the two commands are `make demo` and `make test`.
.PHONY: demo test setup lint rust-test wasm-check secret-hash bench sim-long pkg js-test

demo:
	cargo run --quiet --example seed_simulated

test: setup lint rust-test wasm-check pkg js-test

setup:
	bash scripts/setup.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

rust-test:
	cargo test --workspace

# The core must build for WebAssembly (browsers and Node).
wasm-check:
	cargo build --lib --target wasm32-unknown-unknown

# The npm package in pkg/: release wasm, wasm-bindgen, wasm-opt -Oz; prints sizes.
pkg:
	bash scripts/build-pkg.sh

# The built package in Node, driven through a fake fetch.
js-test: pkg
	node --test tests/js/

# Prints ERP.net's ApplicationSecretHash for a secret read from standard input.
secret-hash:
	@cargo run --quiet --example secret_hash

# Prints the cost of one call through the machine and the "1,000 calls at expiry" scenario.
bench:
	cargo bench --bench session

# The simulation over many more random schedules than `make test` runs (3,000).
SIM_SCHEDULES ?= 200000
sim-long:
	SIM_SCHEDULES=$(SIM_SCHEDULES) cargo test --release --test simulation -- --nocapture
