.PHONY: demo test bench build
# The whole stack on loopback behind Envoy; Ctrl-C stops it.
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
