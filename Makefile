.PHONY: test build
test:
	./scripts/test.sh

build:
	cargo build --workspace --release
