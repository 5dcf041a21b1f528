# erpnet-auth: the two commands are `make demo` and `make test`.
.PHONY: demo test setup lint rust-test wasm-check secret-hash

demo:
	cargo run --quiet --example seed_simulated

test: setup lint rust-test wasm-check

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

# Prints ERP.net's ApplicationSecretHash for a secret read from standard input.
secret-hash:
	@cargo run --quiet --example secret_hash
