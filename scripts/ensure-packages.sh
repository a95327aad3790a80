#!/usr/bin/env bash
# Installs the Debian packages the tests run for real when they are missing: nginx and Caddy
# (crates/sidecar/tests) and redis-server (crates/sidecar/tests). Prints, on stdout, the
# binaries that are still unavailable, one per line, and on stderr why; the tests skip only
# what is listed in $JWT_AUTHZ_UNAVAILABLE_PACKAGES and fail on any other missing binary.
set -uo pipefail
# nginx lives in /usr/sbin, which is not on every user's PATH.
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
# binary:package
wanted=(nginx:nginx caddy:caddy redis-server:redis-server)
for entry in "${wanted[@]}"; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
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
for entry in "${wanted[@]}"; do
  bin=${entry%%:*}
  if ! command -v "$bin" >/dev/null 2>&1; then
    echo "$bin is not installed and could not be installed" >&2
    echo "$bin"
  fi
done
exit 0
