#!/usr/bin/env bash
# The whole stack on loopback: issuer (demo users), jwt-authz, three sample services and
# Envoy in front. Installs Envoy when missing, builds, waits for readiness, prints curl
# commands, and on Ctrl-C stops everything it started.
#
# Ports (override with the environment): ENVOY_PORT 8000, ENVOY_ADMIN_PORT 9901,
# ISSUER_PORT 8080, AUTHZ_GRPC_PORT 9001, AUTHZ_ADMIN_PORT 9002, AUTHZ_HTTP_PORT 9003,
# USERS_PORT 8101, ORDERS_PORT 8102, FEED_PORT 8103, MCP_PORT 8104. PROFILE=release builds
# optimised binaries.
#
# MODE=ext_authz (the default): Envoy asks jwt-authz about every request (gRPC ext_authz).
# MODE=module: the in-proxy mode as an Envoy dynamic module (libjwt_authz_module.so, built
# here; for Envoy 1.40): Envoy decides in-process what it can and asks jwt-authz's HTTP port
# about the rest (docs/in-proxy.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

ENVOY_PORT=${ENVOY_PORT:-8000}
ENVOY_ADMIN_PORT=${ENVOY_ADMIN_PORT:-9901}
ISSUER_PORT=${ISSUER_PORT:-8080}
AUTHZ_GRPC_PORT=${AUTHZ_GRPC_PORT:-9001}
AUTHZ_ADMIN_PORT=${AUTHZ_ADMIN_PORT:-9002}
AUTHZ_HTTP_PORT=${AUTHZ_HTTP_PORT:-9003}
USERS_PORT=${USERS_PORT:-8101}
ORDERS_PORT=${ORDERS_PORT:-8102}
FEED_PORT=${FEED_PORT:-8103}
MCP_PORT=${MCP_PORT:-8104}
PROFILE=${PROFILE:-debug}
MODE=${MODE:-ext_authz}
case "$MODE" in
  ext_authz | module) ;;
  *) echo "demo: MODE is ext_authz (the default) or module, not '$MODE'" >&2; exit 1 ;;
esac

run="$root/.demo"
logs="$run/logs"
mkdir -p "$logs" "$run/data"

for port in "$ENVOY_PORT" "$ENVOY_ADMIN_PORT" "$ISSUER_PORT" "$AUTHZ_GRPC_PORT" \
  "$AUTHZ_ADMIN_PORT" "$AUTHZ_HTTP_PORT" "$USERS_PORT" "$ORDERS_PORT" "$FEED_PORT" "$MCP_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is already in use; set the *_PORT variables to free ports" >&2
    exit 1
  fi
done

envoy_bin=$("$root/scripts/ensure-envoy.sh")
echo "== building ($PROFILE)"
release=()
if [[ "$PROFILE" == release ]]; then release=(--release); fi
cargo build "${release[@]}" --workspace --bins
bin="$root/target/$PROFILE"
module_dir=$bin
if [[ "$MODE" == module ]]; then
  if [[ "$PROFILE" == release ]]; then
    # `make module`'s build (the release profile with fat LTO).
    cargo build --profile module -p jwt-authz-module-ffi
    module_dir="$root/target/module"
  else
    cargo build -p jwt-authz-module-ffi
  fi
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs kept in $logs"
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

start() {
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=("$!")
}

wait_for() {
  local name=$1 url=$2
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "demo: $name did not become ready ($url); see $logs/$name.log" >&2
  tail -n 20 "$logs/$name.log" >&2 || true
  exit 1
}

public_url="http://127.0.0.1:$ENVOY_PORT"

# jwt-authz's client secret at the issuer's introspection endpoint: fresh for each run.
secret_file="$run/introspection.secret"
(umask 077 && head -c 24 /dev/urandom | base64 >"$secret_file")

echo "== starting the issuer on 127.0.0.1:$ISSUER_PORT"
start issuer "$bin/issuer" --demo --listen "127.0.0.1:$ISSUER_PORT" \
  --issuer-url "$public_url" --trust-forwarded-for \
  --status-base-url "http://127.0.0.1:$ISSUER_PORT" \
  --introspection-client "jwt-authz=$secret_file" \
  --resource "$public_url/mcp" --scope mcp:tools --scope mcp:admin=admin \
  --db "$run/data/users.db" --key-dir "$run/data/keys"
wait_for issuer "http://127.0.0.1:$ISSUER_PORT/healthz"

echo "== starting jwt-authz on 127.0.0.1:$AUTHZ_GRPC_PORT (admin $AUTHZ_ADMIN_PORT)"
JWT_AUTHZ_GRPC_LISTEN="127.0.0.1:$AUTHZ_GRPC_PORT" \
JWT_AUTHZ_ADMIN_LISTEN="127.0.0.1:$AUTHZ_ADMIN_PORT" \
PUBLIC_ISSUER_URL="$public_url" \
JWKS_URI="http://127.0.0.1:$ISSUER_PORT/.well-known/jwks.json" \
INTROSPECTION_ENDPOINT="http://127.0.0.1:$ISSUER_PORT/auth/introspect" \
INTROSPECTION_SECRET_FILE="$secret_file" \
  "$root/scripts/render.sh" config/jwt-authz.demo.yaml.tmpl >"$run/jwt-authz.yaml"
if [[ "$MODE" == module ]]; then
  # The callout endpoints on the HTTP port, for the module's cluster of that name.
  printf 'in_proxy: {cluster: jwt_authz_http}\n' >>"$run/jwt-authz.yaml"
fi
start jwt-authz env RUST_LOG="${RUST_LOG:-info,jwt_authz=debug}" \
  JWT_AUTHZ_HTTP_LISTEN="127.0.0.1:$AUTHZ_HTTP_PORT" "$bin/jwt-authz" --config "$run/jwt-authz.yaml"
wait_for jwt-authz "http://127.0.0.1:$AUTHZ_ADMIN_PORT/readyz"

echo "== starting the sample services on $USERS_PORT, $ORDERS_PORT, $FEED_PORT, $MCP_PORT (MCP)"
start users "$bin/sample-service" --service users --listen "127.0.0.1:$USERS_PORT"
start orders "$bin/sample-service" --service orders --listen "127.0.0.1:$ORDERS_PORT"
start feed "$bin/sample-service" --service feed --listen "127.0.0.1:$FEED_PORT"
start mcp "$bin/sample-service" --service mcp --listen "127.0.0.1:$MCP_PORT"
for p in "$USERS_PORT" "$ORDERS_PORT" "$FEED_PORT" "$MCP_PORT"; do
  wait_for "service-$p" "http://127.0.0.1:$p/healthz"
done

if [[ "$MODE" == module ]]; then
  envoy_template=envoy/envoy-module.yaml.tmpl
  # The module is given jwt-authz's own file, as one JSON string.
  JWT_AUTHZ_MODULE="$module_dir/libjwt_authz_module.so"
  JWT_AUTHZ_CONFIG_JSON=$(python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))' \
    <"$run/jwt-authz.yaml")
  export JWT_AUTHZ_MODULE JWT_AUTHZ_CONFIG_JSON
  echo "== mode: module (in-proxy, $JWT_AUTHZ_MODULE)"
else
  envoy_template=envoy/envoy.yaml.tmpl
  echo "== mode: ext_authz (gRPC)"
fi
echo "== starting Envoy on 127.0.0.1:$ENVOY_PORT (admin 127.0.0.1:$ENVOY_ADMIN_PORT)"
ENVOY_LISTEN_ADDRESS=127.0.0.1 ENVOY_LISTEN_PORT=$ENVOY_PORT ENVOY_ADMIN_PORT=$ENVOY_ADMIN_PORT \
JWT_AUTHZ_HOST=127.0.0.1 JWT_AUTHZ_PORT=$AUTHZ_GRPC_PORT ISSUER_HOST=127.0.0.1 ISSUER_PORT=$ISSUER_PORT \
USERS_HOST=127.0.0.1 USERS_PORT=$USERS_PORT ORDERS_HOST=127.0.0.1 ORDERS_PORT=$ORDERS_PORT \
FEED_HOST=127.0.0.1 FEED_PORT=$FEED_PORT MCP_HOST=127.0.0.1 MCP_PORT=$MCP_PORT \
JWT_AUTHZ_HTTP_PORT=$AUTHZ_HTTP_PORT \
  "$root/scripts/render.sh" "$envoy_template" >"$run/envoy.yaml"
start envoy "$envoy_bin" -c "$run/envoy.yaml" --disable-hot-restart --concurrency 2 --log-level warn
wait_for envoy "http://127.0.0.1:$ENVOY_ADMIN_PORT/ready"

cat <<EOF

== the stack is up ($MODE). Envoy: $public_url   logs: $logs/   config: $run/
Demo users: alice / alice-password (role admin), bob / bob-password (role user).

# log in as bob (no token needed for /auth/*)
TOKEN=\$(curl -s $public_url/auth/login -H 'content-type: application/json' \\
  -d '{"username":"bob","password":"bob-password"}' | jq -r .accessToken)

# call a service with the token: jwt-authz verifies it and injects x-user-*
curl -s $public_url/api/users/me -H "authorization: Bearer \$TOKEN"
curl -s $public_url/api/orders -H "authorization: Bearer \$TOKEN" \\
  -H 'content-type: application/json' -d '{"item":"book","quantity":2}'

# without a token: 401 with WWW-Authenticate
curl -si $public_url/api/orders

# an admin-only route as a plain user: 403 insufficient_scope
curl -si $public_url/api/users -H "authorization: Bearer \$TOKEN"

# an optional route: without a token, the public highlights (jwt-authz tells the service
# x-user-anonymous: true); with one, a section for bob; with a bad one, the public ones again
# (the rule says on_invalid: anonymous, and the bad token never reaches the service)
curl -s $public_url/api/feed/highlights
curl -s $public_url/api/feed/highlights -H "authorization: Bearer \$TOKEN"
curl -s $public_url/api/feed/highlights -H "authorization: Bearer not-a-token"

# an opaque token (not a JWT): jwt-authz asks the issuer's introspection endpoint about it
# (RFC 7662) once, then answers from its cache; after logout it stops working within a minute
OPAQUE=\$(curl -s $public_url/auth/login -H 'content-type: application/json' \\
  -d '{"username":"bob","password":"bob-password","token_format":"opaque"}' | jq -r .accessToken)
curl -s $public_url/api/users/me -H "authorization: Bearer \$OPAQUE"
curl -s http://127.0.0.1:$AUTHZ_ADMIN_PORT/metrics | grep jwt_authz_introspections_total

# an MCP client's discovery (RFC 9728, RFC 8414, RFC 8707): the 401 names the resource's
# metadata, which names the issuer, whose metadata names its token endpoint; a token asked
# for this resource (aud = its URI) with scope mcp:tools lists the tools; bob's first token
# (audience api-gateway, not this resource) is refused: 401 invalid_token
curl -si $public_url/mcp -X POST | grep -i www-authenticate
curl -s $public_url/.well-known/oauth-protected-resource/mcp
curl -s $public_url/.well-known/oauth-authorization-server | jq .token_endpoint
MCP_TOKEN=\$(curl -s $public_url/auth/token -d grant_type=password -d username=bob \\
  -d password=bob-password -d scope=mcp:tools --data-urlencode resource=$public_url/mcp | jq -r .access_token)
curl -s $public_url/mcp -H "authorization: Bearer \$MCP_TOKEN" -H 'content-type: application/json' \\
  -H 'accept: application/json, text/event-stream' -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
curl -si $public_url/mcp -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' | grep -i www-authenticate

# jwt-authz metrics and readiness
curl -s http://127.0.0.1:$AUTHZ_ADMIN_PORT/metrics | grep jwt_authz_checks_total
EOF
if [[ "$MODE" == module ]]; then
  cat <<EOF

# the module's counters in Envoy (the demo's provider has a status list, so its tokens are
# asked of jwt-authz every time: callouts; requests without a token are decided in Envoy)
curl -s http://127.0.0.1:$ENVOY_ADMIN_PORT/stats | grep jwt_authz_module
EOF
fi
cat <<EOF

Press Ctrl-C to stop everything.
EOF

wait -n "${pids[@]}" || true
echo "demo: a process exited unexpectedly; see $logs/" >&2
exit 1
