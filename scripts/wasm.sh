#!/usr/bin/env bash
# Builds the decision core (crates/core/, crate jwt-authz-core), the in-proxy filter (crates/filter/) and
# the bench's do-nothing Wasm filter (crates/bench/wasm-noop/) for wasm32-wasip1, the target of
# Envoy's Wasm filters, into target/wasm/. `make wasm` runs it; `make test` too, so nothing
# that cannot run inside Envoy (sockets, threads, a clock, aws-lc) creeps into the core.
#
# With rustup and its wasm32-wasip1 target (`rustup target add wasm32-wasip1`), that
# toolchain builds it. Without it (rustup cannot download targets on our machines), Debian's
# rustc-web builds std for the target from source: its packages are installed with apt-get
# when missing. Exits 0 with "SKIPPING ..." on stderr only when neither can be had.
set -euo pipefail
cd "$(dirname "$0")/.."

crates=(-p jwt-authz-core -p jwt-authz-filter -p jwt-authz-wasm-noop)
out=target/wasm

if rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "rustup's wasm32-wasip1 target" >&2
  cargo build --release --target wasm32-wasip1 "${crates[@]}" --target-dir "$out"
  exit 0
fi

packages=(rustc-web cargo-web rust-web-src wasi-libc lld-19)
have_debian_toolchain() {
  [[ -x /usr/bin/rustc && -x /usr/bin/cargo && -x /usr/lib/llvm-19/bin/wasm-ld &&
    -f /usr/lib/wasm32-wasi/libc.a ]] && /usr/bin/rustc --version 2>/dev/null | grep -q "source tarball" &&
    compgen -G "/usr/src/rustc-*/library/std/Cargo.toml" >/dev/null
}
if ! have_debian_toolchain; then
  sudo=()
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "SKIPPING the wasm32-wasip1 build: no rustup wasm32-wasip1 target, and cannot install ${packages[*]} (not root, no password-less sudo)" >&2
      exit 0
    fi
  fi
  echo "installing ${packages[*]} with apt-get (Debian's Rust that builds std for wasm32-wasip1)" >&2
  if ! { "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"; } >&2; then
    echo "SKIPPING the wasm32-wasip1 build: apt-get could not install ${packages[*]} (see above)" >&2
    exit 0
  fi
fi

echo "Debian's $(/usr/bin/rustc --version), std built for wasm32-wasip1 (-Zbuild-std)" >&2
# Debian's rustc/cargo sit in /usr/bin behind rustup's on PATH: named by path. The first
# build compiles std (about a minute on two cores).
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
  RUSTFLAGS="-C linker=/usr/lib/llvm-19/bin/wasm-ld -L /usr/lib/wasm32-wasi" \
  /usr/bin/cargo build --release --target wasm32-wasip1 -Zbuild-std=std,panic_abort \
  "${crates[@]}" --target-dir "$out"
echo "built for wasm32-wasip1: ${crates[*]} ($out/wasm32-wasip1/release)" >&2
