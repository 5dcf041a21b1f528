# erpnet-auth: the two commands are `make demo` and `make test`.
.PHONY: bench-farm bench-peers wasm-levers wasm-size fuzz fuzz-smoke check e2e demo demo-simulated test setup lint rust-test wasm-check secret-hash bench sim-long pkg js-test wasm-test package-test

# The seed scenario against the embedded test provider (oidc-provider) over real HTTP.
demo:
	@bash scripts/setup.sh demo
	@cargo run --quiet -p erpnet-auth-demo --bin demo

# The same scenario against the in-process simulated server, on a fake clock (no Node).
demo-simulated:
	cargo run --quiet --example seed_simulated

test: setup lint rust-test fuzz-smoke wasm-check wasm-test pkg js-test package-test e2e

setup:
	bash scripts/setup.sh

# The fast inner loop: no installs, no root, no browser or Node: formatting, lints and the
# Rust tests (the simulation included).
check:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p erpnet-auth-tokio -p erpnet-auth-blocking --all-targets --all-features -- -D warnings
	cargo clippy -p erpnet-auth --lib --no-default-features --features rust-urls -- -D warnings
	# The npm package's core: URLs by the host's parser, signatures by the host's WebCrypto.
	cargo clippy -p erpnet-auth --lib --target wasm32-unknown-unknown --no-default-features --features host-urls,os-random -- -D warnings

rust-test:
	cargo test --workspace
	# The driver crates' optional parts (Redis stores, the axum layer, tracing, the console).
	cargo test -p erpnet-auth-tokio --all-features
	cargo test -p erpnet-auth-blocking --all-features
	# The ID token and hostile tests again, the host doing the signature math.
	ERPNET_TEST_HOST_SIGNATURES=1 cargo test --test id_tokens --test hostile --test simulation

# The core must build for WebAssembly (browsers and Node).
wasm-check:
	cargo build --lib --target wasm32-unknown-unknown

# The npm package in pkg/: release wasm, wasm-bindgen, wasm-opt -Oz; prints sizes.
pkg:
	bash scripts/build-pkg.sh

# The built package in Node, driven through a fake fetch; first its JavaScript type-checked
# against its declarations (tsc --checkJs), and every export and member matched to a
# declaration both ways (declarations.test.mjs).
js-test: pkg
	node_modules/.bin/tsc -p tests/js/types/tsconfig.json
	node --test tests/js/declarations.test.mjs tests/js/driver.test.mjs tests/js/server.test.mjs tests/js/forward.test.mjs tests/js/before-init.test.mjs tests/js/planted-snapshot.test.mjs

# The bindings in a real JavaScript engine: Node, then headless Chromium.
WASM_TEST = CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p erpnet-auth-wasm --target wasm32-unknown-unknown
# Node with either URL parser (the `url` crate, the host's URL); Chromium with both too.
wasm-test:
	$(WASM_TEST)
	$(WASM_TEST) --no-default-features --features host-urls
	CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_USE_BROWSER=1 $(WASM_TEST)
	CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_USE_BROWSER=1 $(WASM_TEST) --no-default-features --features host-urls

# npm pack -> install into a fresh project -> Node ESM, tsc --strict, publint, attw,
# headless Chromium; prints the bundled browser app's size.
package-test: pkg
	node tests/packaging/run.mjs

# End to end against the real test provider (tests/idp, oidc-provider) over real HTTP:
# the native driver (the demo program), the package in Node, and in headless Chromium;
# server farms (Node and Rust processes) sharing sessions in a real Redis.
e2e: pkg
	cargo test -q -p erpnet-auth-blocking --test e2e -- --ignored --test-threads=1
	cargo test -q -p erpnet-auth-blocking --features redis --test farm -- --ignored --nocapture
	cargo test -q -p erpnet-auth-demo --test demo -- --ignored
	cargo test -q -p erpnet-auth-tokio --all-features --test client_e2e --test readme --test client_shared --test client_tracing --test store_redis --test farm -- --ignored --test-threads=1
	cargo test -q -p axum-webapp --test webapp -- --ignored --test-threads=1
	npm install --no-audit --no-fund --prefix examples/node-webapp >/dev/null
	node --test --test-concurrency=1 tests/e2e/

# Every parser under coverage-guided fuzzing (nightly, cargo fuzz): FUZZ_SECONDS per target;
# prints executions per target and whether anything crashed.
FUZZ_SECONDS ?= 600
fuzz:
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

# The same targets for a few seconds each, from the committed corpus: part of make test.
fuzz-smoke:
	bash scripts/fuzz.sh 3

# Prints ERP.net's ApplicationSecretHash for a secret read from standard input.
secret-hash:
	@cargo run --quiet --example secret_hash

# Prints the cost of one call through the machine, the "1,000 calls at expiry" scenario,
# the cost of one RS256 ID token check natively and with the npm package (WebCrypto) under
# Node. The size levers, the signature code among them: make wasm-levers.
bench: pkg
	cargo bench -p erpnet-auth-bench --bench session
	cargo bench -p erpnet-auth-bench --bench id_token
	cargo bench -p erpnet-auth-tokio --bench client
	node tests/bench/id-token-wasm.mjs
	node tests/bench/call-cost.mjs

# The peers, side by side in one run (oauth4webapi, openid-client, oidc-client-ts,
# auth0-spa-js, pinned in package.json): app size, code response with a checked RS256 ID
# token, cost of an authorized call, cold start. Prints a table.
bench-peers: pkg
	node benches/peers/run.mjs

# Server farms: 1, 2, 4, 8 Node processes sharing one user's session in a real Redis, and each
# with its own session in memory: refreshes per expiry, grants revoked, call latency p50/p99.
# Then the bytes per idle signed-in session of one process (10,000 sessions).
bench-farm: pkg
	node benches/farm/run.mjs
	node --expose-gc benches/farm/memory.mjs

# What each size lever of the npm package's wasm is worth: cumulative real builds, a table.
wasm-levers:
	bash scripts/wasm-levers.sh

# Where the shipped wasm's bytes go, by crate and by core module (twiggy).
wasm-size: pkg
	command -v twiggy >/dev/null || cargo install twiggy --version 0.8.0
	node scripts/wasm-attribution.mjs target/npm/attribution.wasm

# The simulation over many more random schedules than `make test` runs (3,000).
SIM_SCHEDULES ?= 200000
sim-long:
	SIM_SCHEDULES=$(SIM_SCHEDULES) cargo test --release --test simulation -- --nocapture
