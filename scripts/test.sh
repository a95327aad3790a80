#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite.
# Installs what the tests need when it is missing, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== Envoy for the end-to-end tests"
ENVOY_BIN=$(./scripts/ensure-envoy.sh)
export ENVOY_BIN
"$ENVOY_BIN" --version

echo "== build"
cargo build --workspace --bins

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  echo "(cargo-nextest not found; using cargo test)"
  cargo test --workspace --no-fail-fast
fi
