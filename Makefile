.PHONY: demo test build
# The whole stack on loopback behind Envoy; Ctrl-C stops it.
demo:
	./scripts/demo.sh

# Everything CI runs (installs Envoy into .venv when missing).
test:
	./scripts/test.sh

build:
	cargo build --workspace --release
