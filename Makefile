.PHONY: demo test bench build wasm module
# The whole stack on loopback behind Envoy; Ctrl-C stops it. MODE=module runs Envoy with the
# dynamic module (in-proxy mode) instead of ext_authz.
demo:
	./scripts/demo.sh

# Everything CI runs (installs Envoy into .venv when missing).
test:
	./scripts/test.sh

# jwt-authz against the no-op floor and Envoy's jwt_authn; writes BENCHMARKS.md.
bench:
	python3 scripts/bench.py

build:
	cargo build --workspace --release

# The decision core (crates/core/) built for wasm32-wasip1, Envoy's Wasm target (installs Debian's
# rustc-web when rustup has no wasm32-wasip1 target).
wasm:
	./scripts/wasm.sh

# The in-proxy mode as an Envoy dynamic module, for Envoy 1.40:
# target/module/libjwt_authz_module.so (the release profile with fat LTO: Cargo.toml's
# [profile.module] says why).
module:
	cargo build --profile module -p jwt-authz-module-ffi
