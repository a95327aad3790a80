#!/usr/bin/env bash
# Installs nginx and Caddy from Debian when missing (the end-to-end tests of the HTTP front
# ends run them). Prints, on stdout, the names of those that are still unavailable, one per
# line, and on stderr why; tests/e2e_proxies.rs skips only the proxies listed in
# $JWT_AUTHZ_UNAVAILABLE_PROXIES and fails on any other missing binary.
set -uo pipefail

missing=()
for bin in nginx caddy; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if ((${#missing[@]})); then
  sudo=()
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "cannot install ${missing[*]}: not root and no password-less sudo" >&2
      printf '%s\n' "${missing[@]}"
      exit 0
    fi
  fi
  echo "installing ${missing[*]} with apt-get" >&2
  if ! { "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2; then
    echo "apt-get could not install ${missing[*]} (see above)" >&2
  fi
fi
for bin in nginx caddy; do
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "$bin is not installed and could not be installed" >&2
    echo "$bin"
  fi
done
exit 0
