#!/usr/bin/env python3
"""make bench: jwt-authz against what users would pick instead, in one run, on loopback.

Builds release binaries, then measures
  a. direct gRPC Check (tools in crates/bench/: authz-load, a tonic load generator, and noop-authz,
     the no-op floor) for a hot token, 10,000 tokens cycling, a fresh signature check every
     time (token cache off), and denials (no token, bad signature);
  b. end to end through the real Envoy with wrk: no auth, native jwt_authn without and with
     jwt_cache_config, ext_authz to the no-op server, ext_authz to jwt-authz; interleaved
     rounds so machine drift hits all alike;
  b2. the front ends, each against its own no-op floor in the same rounds: Envoy gRPC
     ext_authz, Envoy HTTP ext_authz (http_service), nginx auth_request (Debian's nginx);
  c. CPU time per Check and RSS (idle, under load, after 1,000,000 unique tokens);
  d. cost curves in-process (crates/bench/src/bin/curves.rs): rules, providers, keys, cached
     tokens, identity headers; and the miss path's own work (a check with the cache off,
     less the cached check, less the RS256 signature check alone);
  e. a flood: the latency of a steady valid cached-token load alone and while a flood of
     distinct invalid tokens (bad signatures under the real kid, some unknown kids)
     saturates the sidecar, directly and through Envoy against the no-op floor under the
     same flood;
and writes BENCHMARKS.md, docs/benchmarks.svg and docs/curve-*.svg. The system under test runs on CPU 0, the
load generator on CPU 1 (taskset), with the same settings for every target.
"""

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
WORK = ROOT / "target" / "bench"
DURATION = os.environ.get("BENCH_DURATION", "5s")
BASELINE_BIN = os.environ.get("BENCH_BASELINE_BIN")
WARMUP = os.environ.get("BENCH_WARMUP", "1s")
E2E_SECONDS = int(os.environ.get("BENCH_E2E_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
FLOOD = int(os.environ.get("BENCH_FLOOD", "1000000"))
FLOOD_ROUNDS = int(os.environ.get("BENCH_FLOOD_ROUNDS", "3"))
# The valid load during the flood: steady (paced), light, a few requests in flight.
VALID_RATE = 2000
VALID_CONCURRENCY = 4
CONCURRENCY = 64
CONNECTIONS = 2
WRK_CONNECTIONS = 32
SUT_CPU = "0"
LOAD_CPU = "1"
TICKS = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"== {msg}", flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def serve_status_list(port, body):
    """Serves the benchmark's Token Status List at /status/1 on loopback (a thread)."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/status/1":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("content-type", "application/statuslist+jwt")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


# Every port free_port has handed out: the kernel may offer a port again once its socket is
# closed, and one run asks for dozens before anything listens on them (a run failed with two
# of Envoy's listeners on one port).
_HANDED_OUT = set()


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


class Proc:
    """A process of the system under test, pinned to SUT_CPU."""

    procs = []

    def __init__(self, name, cmd, env=None):
        self.name = name
        self.log = open(WORK / f"{name}.log", "w")
        self.p = subprocess.Popen(
            ["taskset", "-c", SUT_CPU, *map(str, cmd)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        Proc.procs.append(self)

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mib(self):
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()

    @classmethod
    def stop_all(cls):
        for p in cls.procs:
            p.stop()


class RssSampler:
    """Peak RSS of a process while a load runs."""

    def __init__(self, proc):
        self.proc, self.peak, self.done = proc, 0.0, False
        self.t = threading.Thread(target=self.sample, daemon=True)
        self.t.start()

    def sample(self):
        while not self.done:
            self.peak = max(self.peak, self.proc.rss_mib())
            time.sleep(0.1)

    def stop(self):
        self.done = True
        self.t.join()
        return self.peak


# A sampled W3C trace context (Trace Context §3.2's example), as from a proxy that traces.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def admin_metric(port, name, labels):
    """One counter from a jwt-authz admin port (0 when absent)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def authz_load(port, *mode, duration=DURATION, warmup=WARMUP, extra=(),
               concurrency=CONCURRENCY, connections=CONNECTIONS):
    out = run(
        [
            "taskset", "-c", LOAD_CPU, BIN / "authz-load", "--target", f"127.0.0.1:{port}",
            "--duration", duration, "--warmup", warmup, "--concurrency", str(concurrency),
            "--connections", str(connections), *mode, *extra,
        ]
    )
    return json.loads(out.strip().splitlines()[-1])


def admin_value(port, name):
    """An unlabelled counter or gauge from a jwt-authz admin port (0 when absent)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return int(float(line.split()[1]))
    return 0


def admin_sum(port, name, labels):
    """The sum of every sample of a labelled counter whose labels include `labels`."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(int(float(l.rsplit(" ", 1)[1])) for l in text.splitlines()
               if l.startswith(f"{name}{{") and labels in l)


def flood_tokens(tokens, out):
    """Distinct invalid tokens that each cost the sidecar work: nine in ten carry the real
    kid and a broken signature (a signature check each), one in ten an unknown kid (which
    asks for a rate-limited key refetch)."""
    import base64
    lines = []
    for i, token in enumerate(tokens):
        header, payload, sig = token.split(".")
        if i % 10 == 9:
            raw = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
            raw["kid"] = f"unknown-{i}"
            header = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")
        sig = ("B" if sig[0] == "A" else "A") + sig[1:]
        lines.append(f"{header}.{payload}.{sig}")
    out.write_text("\n".join(lines) + "\n")


def valid_load(target, hot_file, http=None):
    """The steady valid load whose latency the flood must not spoil."""
    extra = ["--rate", str(VALID_RATE)] + (["--http", http] if http else [])
    return authz_load(target, "--tokens", hot_file, extra=extra,
                      concurrency=VALID_CONCURRENCY, connections=1)


def start_flood(target, flood_file, seconds, http_port=None, bad_token=None):
    """A saturating flood from the load CPU at nice 19, so that the valid load's own client
    is not the one slowed down. gRPC (authz-load) directly, wrk through a proxy."""
    if http_port:
        cmd = ["wrk", "-t1", "-c64", f"-d{seconds}s", "-s", WORK / "report.lua",
               "-H", f"authorization: Bearer {bad_token}", f"http://127.0.0.1:{http_port}/bench"]
    else:
        cmd = [BIN / "authz-load", "--target", f"127.0.0.1:{target}", "--duration",
               f"{seconds}s", "--warmup", "0s", "--concurrency", "64", "--connections", "2",
               "--tokens", flood_file]
    return subprocess.Popen(["nice", "-n", "19", "taskset", "-c", LOAD_CPU, *map(str, cmd)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def flood_report(proc):
    out, _ = proc.communicate(timeout=120)
    r = json.loads(out.strip().splitlines()[-1])
    if "rps" not in r:
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def wrk(port, token, seconds=E2E_SECONDS):
    out = run(
        [
            "taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s",
            "-s", WORK / "report.lua", "-H", f"authorization: Bearer {token}",
            f"http://127.0.0.1:{port}/bench",
        ]
    )
    r = json.loads(out.strip().splitlines()[-1])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def ensure_tools():
    if not shutil.which("wrk"):
        log("installing wrk (Debian package)")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       capture_output=True)
        if not shutil.which("wrk"):
            subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True,
                           capture_output=True)
    if not shutil.which("taskset"):
        raise SystemExit("taskset (util-linux) is required")
    missing = run([ROOT / "scripts" / "ensure-packages.sh"]).split()
    if "nginx" in missing:
        log("nginx could not be installed: the nginx rows will be missing")


def authz_config(grpc, admin, cache_entries, http=None, dpop=False, status_origin=None,
                 otlp=None, limits=None, in_proxy=None, introspect=None):
    http_listen = f', http: "127.0.0.1:{http}"' if http else ""
    # DPoP runs in a process of its own: the proofs it remembers must not count in the
    # other rows' memory figures.
    dpop_mode = "optional" if dpop else "off"
    # So do status lists: the hot row with them on against the hot row with them off.
    status = (f'{{mode: required, allowed_origins: ["{status_origin}"]}}'
              if status_origin else "{mode: off}")
    # Tracing on (its own process), exporting to the OTLP sink; off everywhere else.
    tracing = f'tracing: {{otlp_endpoint: "http://127.0.0.1:{otlp}"}}\n' if otlp else ""
    # Signature checks always handed to the verification threads, for the row that shows
    # the hand-off's price (by default they are only while tokens are being refused).
    limits = f"limits: {limits}\n" if limits else ""
    # The in-proxy callout endpoints (and, in the filter's copy, its settings).
    in_proxy = f"in_proxy: {in_proxy}\n" if in_proxy else ""
    # Opaque tokens at a local endpoint (bench-introspect), with its answers cached or
    # (introspect = (port, 0)) not: the hot and miss rows. Limits out of the way.
    introspection = ""
    if introspect:
        port, entries = introspect
        introspection = f"""    introspection:
      endpoint: http://127.0.0.1:{port}/introspect
      client_id: bench
      client_auth: {{client_secret_basic: {{secret_file: {WORK / "introspect.secret"}}}}}
      cache: {{max_entries: {entries}}}
      rate_limit: {{per_second: 1000000000, burst: 1000000000}}
      max_in_flight: 100000
"""
    # One identity header, `x-user-id` from `sub`: what the jwt_authn rows set
    # (`claim_to_headers`) and the ext_authz rows let through, so every row does the same work.
    return f"""
listen: {{grpc: "127.0.0.1:{grpc}", admin: "127.0.0.1:{admin}"{http_listen}}}
log: {{level: warn}}
identity: {{headers: [{{claim: sub, header: x-user-id}}]}}
providers:
  - name: bench
    issuer: https://bench.test
    audiences: [bench]
    jwks: {{file: {WORK / "jwks.json"}}}
    algorithms: [RS256, EdDSA]
    dpop: {{mode: {dpop_mode}, algorithms: [ES256]}}
    status_list: {status}
{introspection}token_cache: {{max_entries: {cache_entries}}}
{tracing}{limits}{in_proxy}"""


class DirectRows:
    """What envoy_instructions.py and envoy_cpu.py share: a token and the RSA JWKS that
    verifies it (bench-tokens), ports for a jwt-authz sidecar with an in-proxy HTTP port,
    and one Envoy configuration whose listeners (one per row) answer directly."""

    def __init__(self):
        run([BIN / "bench-tokens", "--out", WORK, "--rs256", "10",
             "--status-uri", "http://127.0.0.1:9/status/1"])
        self.token = (WORK / "tokens-rs256.txt").read_text().split()[0]
        jwks = json.loads((WORK / "jwks.json").read_text())
        self.rsa_jwks = json.dumps({"keys": [k for k in jwks["keys"] if k["kty"] == "RSA"]})
        self.ports = {k: free_port() for k in
                      ["authz", "authz_admin", "authz_http", "noop", "noop_http", "upstream"]}

    def sidecar(self, extra=""):
        """The sidecar's configuration (and an in-proxy filter's), `extra` added to its
        `in_proxy` settings."""
        p = self.ports
        return authz_config(p["authz"], p["authz_admin"], 100000, p["authz_http"],
                            in_proxy=f"{{cluster: authz_http{extra}}}")

    def envoy(self, names, in_proxy):
        """Listeners `direct_<name>` for `names` and the keys of `in_proxy` (as
        `envoy_config` takes it): their ports, and the configuration."""
        rows = {f"direct_{name}": free_port() for name in [*names, *in_proxy]}
        p = self.ports
        return rows, envoy_config(rows, p["upstream"], p["noop"], p["authz"], free_port(),
                                  self.rsa_jwks, p["noop_http"], p["authz_http"], in_proxy)


def shipped_guard(template="envoy-in-proxy.yaml.tmpl", name="envoy.filters.http.rbac"):
    """The guard an in-proxy template puts after the jwt-authz filter, as shipped: only
    requests the filter marked as decided go on (Envoy skips a Wasm filter whose VM failed on
    a worker; a route may leave the dynamic module out). The Wasm mode's is an RBAC filter,
    the module's its own library's guard (the library's path filled in)."""
    text = (ROOT / "envoy" / template).read_text()
    start = text.index(f"          - name: {name}\n")
    end = text.index("          - name: envoy.filters.http.router", start)
    return "\n" + text[start:end].rstrip().replace("${JWT_AUTHZ_MODULE}", str(MODULE))


MODULE = ROOT / "target" / "module" / "libjwt_authz_module.so"
RBAC_GUARD = shipped_guard()
MODULE_GUARD = shipped_guard("envoy-module.yaml.tmpl", "jwt_authz.guard")


# Rows run right after the row their target compares them with (issue 35's: the module
# against jwt_authn with and without its cache). On a shared host the same row's rounds
# spread by 20 % and more, and a round of every row takes minutes: two rows compared are
# closest in the machine's state when run back to back.
BESIDE = {"module_hot": "jwt_authn_cache", "module_verify": "jwt_authn",
          "direct_module_hot": "direct_jwt_authn_cache", "direct_module_verify": "direct_jwt_authn"}


def round_order(names, i):
    """The order of round `i`'s rows: `names`' order, each row of BESIDE moved to just after
    the row it is compared with; every other round reversed, so no row is always early or
    late in a round (nor always first of its pair)."""
    order = []
    for name in names:
        if name in BESIDE and BESIDE[name] in names:
            continue
        order.append(name)
        order += [row for row, ref in BESIDE.items() if ref == name and row in names]
    return order if i % 2 == 0 else order[::-1]


def envoy_config(ports, upstream, noop, authz, admin, rsa_jwks, noop_http, authz_http,
                 in_proxy=None):
    """`in_proxy`: {listener: (path of a filter .wasm, or of the dynamic module .so, plugin
    configuration)}, one listener each with that Wasm filter or dynamic module (jwt-authz's
    calls the `authz_http` cluster), the shipped guard after it.
    A port named `direct_<row>` is <row>'s filters on a listener whose route answers itself
    (`direct_response`, no upstream): issue 19's harness."""
    def listener(name, port, filters):
        route = ('direct_response: {status: 200, body: {inline_string: "ok"}}'
                 if name.startswith("direct_") else "route: {cluster: upstream}")
        return f"""
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, {route}}}]
          http_filters:
{filters}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""

    def ext_authz_filter(service):
        return f"""
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              status_on_error: {{code: ServiceUnavailable}}
              {service}"""

    def ext_authz(cluster):
        return ext_authz_filter(
            f"grpc_service: {{envoy_grpc: {{cluster_name: {cluster}}}, timeout: 1s}}")

    def ext_authz_http(cluster):
        return ext_authz_filter(f"""http_service:
                path_prefix: /ext-authz
                server_uri: {{uri: "http://authz", cluster: {cluster}, timeout: 1s}}
                authorization_response:
                  allowed_upstream_headers: {{patterns: [{{exact: x-user-id}}]}}""")

    def jwt_authn(cache):
        cache_cfg = "\n                  jwt_cache_config: {jwt_cache_size: 10000}" if cache else ""
        return f"""
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  issuer: https://bench.test
                  audiences: [bench]
                  local_jwks: {{inline_string: '{rsa_jwks}'}}
                  claim_to_headers: [{{header_name: x-user-id, claim_name: sub}}]{cache_cfg}
              rules: [{{match: {{prefix: "/"}}, requires: {{provider_name: bench}}}}]"""

    def wasm_filter(name, wasm, plugin):
        # A JSON string is a YAML double-quoted scalar.
        return f"""
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: jwt_authz
                failure_policy: FAIL_CLOSED
                vm_config:
                  vm_id: {name}
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{wasm}"}}}}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {json.dumps(plugin)}""" + (RBAC_GUARD if plugin else "")

    def module_filter(name, lib, plugin):
        return f"""
          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{module: {{local: {{filename: "{lib}"}}}}, do_not_close: true}}
              filter_name: {name}
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {json.dumps(plugin)}""" + MODULE_GUARD

    def in_proxy_filter(name, path, plugin):
        if str(path).endswith(".so"):
            return module_filter(name, path, plugin)
        return wasm_filter(name, path, plugin)

    filters = {
        "none": "",
        "jwt_authn": jwt_authn(False),
        "jwt_authn_cache": jwt_authn(True),
        "ext_authz_noop": ext_authz("noop"),
        "ext_authz_jwt_authz": ext_authz("authz"),
        "http_authz_noop": ext_authz_http("noop_http"),
        "http_authz_jwt_authz": ext_authz_http("authz_http"),
        **{name: in_proxy_filter(name, path, plugin)
           for name, (path, plugin) in (in_proxy or {}).items()},
    }
    # One Wasm VM per filter configuration: the direct listener of an in-proxy row gets its
    # own `vm_id`/name, so its counters and cache are its own.
    listeners = "".join(
        listener(name, port, filters[name] if name in filters else
                 filters[name.removeprefix("direct_")].replace(
                     f"name: {name.removeprefix('direct_')}", f"name: {name}").replace(
                     f"vm_id: {name.removeprefix('direct_')}", f"vm_id: {name}"))
        for name, port in ports.items())

    def cluster(name, port, h2):
        proto = """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}""" if h2 else ""
        return f"""
  - name: {name}
    type: STATIC
    connect_timeout: 1s{proto}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
"""

    return f"""
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
{listeners}
  clusters:
{cluster("upstream", upstream, False)}
{cluster("noop", noop, True)}
{cluster("authz", authz, True)}
{cluster("noop_http", noop_http, False)}
{cluster("authz_http", authz_http, False)}
"""


def nginx_config(ports, upstream, noop_http, authz_http):
    """One nginx worker, one server per floor/jwt-authz, auth_request as deploy/nginx does."""
    def server(name, port, authz):
        return f"""
  upstream {name}_authz {{ server 127.0.0.1:{authz}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    auth_request /_authz;
    auth_request_set $authz_user_id $upstream_http_x_user_id;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header X-User-Id $authz_user_id;
    location = /_authz {{
      internal;
      proxy_pass http://{name}_authz/auth-request;
      proxy_pass_request_body off;
      proxy_http_version 1.1;
      proxy_set_header Content-Length "";
      proxy_set_header Connection "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Host $host;
    }}
    location / {{ proxy_pass http://bench_upstream; }}
  }}"""

    root = WORK / "nginx"
    root.mkdir(exist_ok=True)
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream bench_upstream {{ server 127.0.0.1:{upstream}; keepalive 32; }}
{server("nginx_noop", ports["nginx_noop"], noop_http)}
{server("nginx_jwt_authz", ports["nginx_jwt_authz"], authz_http)}
}}
"""


def machine():
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next(
        (int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
         if l.startswith("MemTotal")), 0)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 1024 / 1024, 1),
        "kernel": platform.release(),
        "rustc": run(["rustc", "--version"]).strip(),
        "envoy": "",
        "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
                or "wrk").splitlines()[0].strip(),
        "commit": run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT).strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main():
    ensure_tools()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "report.lua").write_text(WRK_SCRIPT)
    log("building release binaries")
    subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT,
                   check=True)
    log("building the dynamic module (make module)")
    subprocess.run(["cargo", "build", "--profile", "module", "-p", "jwt-authz-module-ffi"],
                   cwd=ROOT, check=True)
    log("building the in-proxy filter (make wasm)")
    wasm_log = subprocess.run([ROOT / "scripts" / "wasm.sh"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stderr
    wasm = ROOT / "target" / "wasm" / "wasm32-wasip1" / "release" / "jwt_authz_filter.wasm"
    noop_wasm = wasm.with_name("jwt_authz_wasm_noop.wasm")
    if "SKIPPING" in wasm_log or not (wasm.exists() and noop_wasm.exists()):
        log(f"SKIPPING the in-proxy rows: no filter .wasm\n{wasm_log}")
        wasm = None
    envoy = run([ROOT / "scripts" / "ensure-envoy.sh"]).strip()
    info = machine()
    info["envoy"] = run([envoy, "--version"]).strip().split("version:")[-1].strip()
    log("keys and tokens")
    status_port = free_port()
    status_origin = f"http://127.0.0.1:{status_port}"
    run([BIN / "bench-tokens", "--out", WORK, "--rs256", "10000",
         "--status-uri", f"{status_origin}/status/1"])
    serve_status_list(status_port, (WORK / "status-list.jwt").read_bytes())
    tokens = (WORK / "tokens-rs256.txt").read_text().split()
    hot = tokens[0]
    (WORK / "hot.txt").write_text(hot + "\n")
    flood_tokens(tokens, WORK / "flood.txt")
    jwks = json.loads((WORK / "jwks.json").read_text())
    rsa_jwks = json.dumps({"keys": [k for k in jwks["keys"] if k["kty"] == "RSA"]})

    results = {"machine": info, "settings": {
        "duration": DURATION, "warmup": WARMUP, "concurrency": CONCURRENCY,
        "connections": CONNECTIONS, "e2e_seconds": E2E_SECONDS, "rounds": ROUNDS,
        "wrk_connections": WRK_CONNECTIONS, "flood": FLOOD,
        "baseline": os.environ.get("BENCH_BASELINE_LABEL", BASELINE_BIN or "")}}
    try:
        ports = {k: free_port() for k in ["authz", "authz_admin", "verify", "verify_admin",
                                          "noop", "noop_mimalloc", "upstream", "authz_http", "noop_http",
                                          "dpop", "dpop_admin", "status", "status_admin",
                                          "traced", "traced_admin", "otlp",
                                          "baseline", "baseline_admin",
                                          "baseline_verify", "baseline_verify_admin",
                                          "isolated", "isolated_admin",
                                          "introspect", "introspect_admin",
                                          "introspect_miss", "introspect_miss_admin",
                                          "introspect_endpoint"]}
        (WORK / "authz.yaml").write_text(authz_config(
            ports["authz"], ports["authz_admin"], 100000, ports["authz_http"],
            in_proxy="{cluster: authz_http}"))
        (WORK / "verify.yaml").write_text(authz_config(ports["verify"], ports["verify_admin"], 0))
        (WORK / "isolated.yaml").write_text(authz_config(
            ports["isolated"], ports["isolated_admin"], 0, limits="{isolate_after_refusals: 0}"))
        (WORK / "dpop.yaml").write_text(
            authz_config(ports["dpop"], ports["dpop_admin"], 100000, dpop=True))
        (WORK / "status.yaml").write_text(authz_config(
            ports["status"], ports["status_admin"], 100000, status_origin=status_origin))
        (WORK / "traced.yaml").write_text(authz_config(
            ports["traced"], ports["traced_admin"], 100000, otlp=ports["otlp"]))
        (WORK / "introspect.secret").write_text("bench-introspection-secret\n")
        (WORK / "opaque-hot.txt").write_text("bench-opaque-token-0123456789abcdef\n")
        (WORK / "introspect.yaml").write_text(authz_config(
            ports["introspect"], ports["introspect_admin"], 100000,
            introspect=(ports["introspect_endpoint"], 100000)))
        (WORK / "introspect-miss.yaml").write_text(authz_config(
            ports["introspect_miss"], ports["introspect_miss_admin"], 100000,
            introspect=(ports["introspect_endpoint"], 0)))
        Proc("bench-introspect", ["taskset", "-c", LOAD_CPU, BIN / "bench-introspect",
                                  f"127.0.0.1:{ports['introspect_endpoint']}"])
        introspect = Proc("jwt-authz-introspect",
                          [BIN / "jwt-authz", "--config", WORK / "introspect.yaml"])
        introspect_miss = Proc("jwt-authz-introspect-miss",
                               [BIN / "jwt-authz", "--config", WORK / "introspect-miss.yaml"])
        Proc("otlp-sink", [BIN / "otlp-sink", f"127.0.0.1:{ports['otlp']}"])
        traced = Proc("jwt-authz-traced", [BIN / "jwt-authz", "--config", WORK / "traced.yaml"])
        authz = Proc("jwt-authz", [BIN / "jwt-authz", "--config", WORK / "authz.yaml"])
        # An earlier jwt-authz build (BENCH_BASELINE_BIN) on the same workload: what a change
        # costs, measured in the same rounds instead of across runs.
        baseline = None
        if BASELINE_BIN:
            (WORK / "baseline.yaml").write_text(
                authz_config(ports["baseline"], ports["baseline_admin"], 100000))
            baseline = Proc("jwt-authz-baseline",
                            [BASELINE_BIN, "--config", WORK / "baseline.yaml"])
            (WORK / "baseline-verify.yaml").write_text(
                authz_config(ports["baseline_verify"], ports["baseline_verify_admin"], 0))
            baseline_verify = Proc("jwt-authz-baseline-nocache",
                                   [BASELINE_BIN, "--config", WORK / "baseline-verify.yaml"])
        status = Proc("jwt-authz-status", [BIN / "jwt-authz", "--config", WORK / "status.yaml"])
        verify = Proc("jwt-authz-nocache", [BIN / "jwt-authz", "--config", WORK / "verify.yaml"])
        isolated = Proc("jwt-authz-nocache-isolated",
                        [BIN / "jwt-authz", "--config", WORK / "isolated.yaml"])
        dpop = Proc("jwt-authz-dpop", [BIN / "jwt-authz", "--config", WORK / "dpop.yaml"])
        noop = Proc("noop-authz", [BIN / "noop-authz", f"127.0.0.1:{ports['noop']}"])
        # The same floor with jwt-authz's allocator: which part of the gap is the allocator.
        noop_mimalloc = Proc("noop-authz-mimalloc", [BIN / "noop-authz-mimalloc",
                                                     f"127.0.0.1:{ports['noop_mimalloc']}"])
        Proc("noop-authz-http", [BIN / "noop-authz", "--http", f"127.0.0.1:{ports['noop_http']}"])
        upstream = Proc("upstream", [BIN / "bench-upstream", f"127.0.0.1:{ports['upstream']}"])
        for p in ["authz", "verify", "isolated", "noop", "noop_mimalloc", "upstream", "authz_http", "noop_http", "dpop",
                  "status", "otlp", "traced", "introspect", "introspect_miss",
                  "introspect_endpoint"] + (["baseline", "baseline_verify"] if baseline else []):
            wait_port(ports[p])
        time.sleep(1)
        results["rss_idle_mib"] = authz.rss_mib()

        log("cost curves (in-process, one thread)")
        results["curves"] = json.loads(run(
            ["taskset", "-c", SUT_CPU, BIN / "curves", "--dir", WORK / "curves"]).strip())

        log("raw RS256 verification cost (aws-lc, pre-parsed key, one thread)")
        results["verify_cost"] = json.loads(run(
            ["taskset", "-c", LOAD_CPU, BIN / "authz-load", "--verify-cost",
             WORK / "jwks.json", WORK / "tokens-rs256.txt"]).strip())

        scenarios = [
            ("noop", noop, ports["noop"], ["--tokens", WORK / "hot.txt"]),
            ("noop_mimalloc", noop_mimalloc, ports["noop_mimalloc"],
             ["--tokens", WORK / "hot.txt"]),
            ("hot", authz, ports["authz"], ["--tokens", WORK / "hot.txt"]),
            ("status_hot", status, ports["status"], ["--tokens", WORK / "status-token.txt"]),
            *([("hot_baseline", baseline, ports["baseline"], ["--tokens", WORK / "hot.txt"])]
              if baseline else []),
            ("hot_traceparent", authz, ports["authz"],
             ["--tokens", WORK / "hot.txt", "--traceparent", TRACEPARENT]),
            ("hot_traced", traced, ports["traced"],
             ["--tokens", WORK / "hot.txt", "--traceparent", TRACEPARENT]),
            ("introspect_hot", introspect, ports["introspect"],
             ["--tokens", WORK / "opaque-hot.txt"]),
            ("introspect_miss", introspect_miss, ports["introspect_miss"],
             ["--tokens", WORK / "opaque-hot.txt"]),
            ("dpop_hot", dpop, ports["dpop"],
             ["--tokens", WORK / "dpop-token.txt", "--dpop-key", WORK / "dpop-p256.pk8"]),
            ("tokens_10k", authz, ports["authz"], ["--tokens", WORK / "tokens-rs256.txt"]),
            ("always_verify", verify, ports["verify"], ["--tokens", WORK / "tokens-rs256.txt"]),
            ("always_verify_isolated", isolated, ports["isolated"],
             ["--tokens", WORK / "tokens-rs256.txt"]),
            *([("always_verify_baseline", baseline_verify, ports["baseline_verify"],
                ["--tokens", WORK / "tokens-rs256.txt"])] if baseline else []),
            ("deny_no_token", authz, ports["authz"], ["--no-token"]),
            ("deny_bad_signature", authz, ports["authz"], ["--tokens", WORK / "bad-signature.txt"]),
        ]
        runs = {name: [] for name, *_ in scenarios}
        rss_peaks = {name: 0.0 for name, *_ in scenarios}
        log(f"direct gRPC Check ({ROUNDS} interleaved rounds)")
        for i in range(ROUNDS):
            for name, proc, port, mode in scenarios:
                before = proc.cpu_seconds()
                sampler = RssSampler(proc)
                r = authz_load(port, *mode)
                rss_peaks[name] = max(rss_peaks[name], sampler.stop())
                r["cpu_seconds"] = proc.cpu_seconds() - before
                runs[name].append(r)
                print(f"   round {i + 1} {name}: {r['rps']:.0f} checks/s, p99 {r['p99_us']} us, "
                      f"{r['cpu_seconds'] * 1e6 / max(r['total'], 1):.1f} CPU us/check", flush=True)
        direct = {}
        for name, rs in runs.items():
            direct[name] = {
                "rps": statistics.median(r["rps"] for r in rs),
                "p50_us": statistics.median(r["p50_us"] for r in rs),
                "p99_us": statistics.median(r["p99_us"] for r in rs),
                "p999_us": statistics.median(r["p999_us"] for r in rs),
                "cpu_us_per_check": sum(r["cpu_seconds"] for r in rs) * 1e6
                / max(sum(r["total"] for r in rs), 1),
                "ok": sum(r["ok"] for r in rs),
                "denied": sum(r["denied"] for r in rs),
                "errors": sum(r["errors"] for r in rs),
                "rounds": [round(r["rps"]) for r in rs],
                "cpu_rounds": [round(r["cpu_seconds"] * 1e6 / max(r["total"], 1), 2) for r in rs],
                "rss_peak_mib": rss_peaks[name],
            }
        results["direct"] = direct
        results["tracing"] = {
            result: admin_metric(ports["traced_admin"], "jwt_authz_trace_spans_exported_total",
                                 f'result="{result}"')
            for result in ("ok", "error")}
        results["rss_load_mib"] = direct["hot"]["rss_peak_mib"]

        log(f"flood, directly ({FLOOD_ROUNDS} rounds: valid load alone, then under a flood)")
        seconds = int(DURATION.rstrip("s")) + 2
        flood_direct = {"alone": [], "flood": [], "flood_load": [], "cpu_share": [],
                        "shed": 0, "verified": 0, "jwks_fetches": 0}
        for i in range(FLOOD_ROUNDS):
            flood_direct["alone"].append(valid_load(ports["authz"], WORK / "hot.txt"))
            shed0 = admin_value(ports["authz_admin"], "jwt_authz_verifications_shed_total")
            bad0 = admin_sum(ports["authz_admin"], "jwt_authz_checks_total", 'reason="bad_signature"')
            fetch0 = admin_sum(ports["authz_admin"], "jwt_authz_jwks_fetches_total", "")
            cpu0, t0 = authz.cpu_seconds(), time.time()
            flood = start_flood(ports["authz"], WORK / "flood.txt", seconds)
            time.sleep(1)
            flood_direct["flood"].append(valid_load(ports["authz"], WORK / "hot.txt"))
            flood_direct["flood_load"].append(flood_report(flood))
            flood_direct["cpu_share"].append((authz.cpu_seconds() - cpu0) / (time.time() - t0))
            flood_direct["shed"] += admin_value(ports["authz_admin"], "jwt_authz_verifications_shed_total") - shed0
            flood_direct["verified"] += admin_sum(ports["authz_admin"], "jwt_authz_checks_total", 'reason="bad_signature"') - bad0
            flood_direct["jwks_fetches"] += admin_sum(ports["authz_admin"], "jwt_authz_jwks_fetches_total", "") - fetch0
            a, f = flood_direct["alone"][-1], flood_direct["flood"][-1]
            print(f"   round {i + 1}: valid p99 alone {a['p99_us']} us, under flood {f['p99_us']} us "
                  f"(flood {flood_direct['flood_load'][-1]['rps']:.0f} checks/s, sidecar CPU "
                  f"{100 * flood_direct['cpu_share'][-1]:.0f} %)", flush=True)
        flood_direct["seconds"] = seconds * FLOOD_ROUNDS
        flood_direct["isolations"] = admin_value(ports["authz_admin"],
                                                 "jwt_authz_verification_isolations_total")
        results["flood_direct"] = flood_direct

        log("end to end through Envoy (interleaved rounds)")
        e2e_ports = {k: free_port() for k in
                     ["none", "jwt_authn", "jwt_authn_cache", "ext_authz_noop", "ext_authz_jwt_authz",
                      "http_authz_noop", "http_authz_jwt_authz"]}
        admin = free_port()
        in_proxy = None
        if wasm:
            # The filter is given the sidecar's own file; the miss row holds no token, so
            # every request is a callout (the sidecar's cache still answers it, as in the
            # ext_authz rows).
            plugin = lambda extra: authz_config(  # noqa: E731
                ports["authz"], ports["authz_admin"], 100000, ports["authz_http"],
                in_proxy=f"{{cluster: authz_http{extra}}}")
            # The floor: a Wasm filter that does nothing (crates/bench/wasm-noop), in the same VM
            # runtime, so the rows show what the filter's own work costs.
            in_proxy = {"wasm_noop": (noop_wasm, ""),
                        "in_proxy_hot": (wasm, plugin("")),
                        "in_proxy_miss": (wasm, plugin(", max_cached_tokens: 0")),
                        "module_hot": (MODULE, plugin("")),
                        "module_verify": (MODULE, plugin(", max_cached_tokens: 0"))}
            e2e_ports.update({name: free_port() for name in in_proxy})
        # Issue 19's harness: the rows its targets compare (and issue 35's: jwt_authn with and
        # without its cache against the module), on listeners that answer themselves
        # (direct_response) instead of routing to the upstream, in the same rounds.
        # Without the upstream's share of the core every row is cheaper, so the ratios
        # between rows differ from the upstream rows': both are shown.
        e2e_ports.update({f"direct_{name}": free_port() for name in
                          ["none", "jwt_authn", "jwt_authn_cache", "ext_authz_jwt_authz",
                           *(in_proxy or {})]})
        (WORK / "envoy.yaml").write_text(envoy_config(
            e2e_ports, ports["upstream"], ports["noop"], ports["authz"], admin, rsa_jwks,
            ports["noop_http"], ports["authz_http"], in_proxy))
        Proc("envoy", [envoy, "-c", WORK / "envoy.yaml", "--concurrency", "1",
                       "--disable-hot-restart", "--log-level", "warn"])
        nginx = shutil.which("nginx")
        if nginx:
            nginx_ports = {"nginx_noop": free_port(), "nginx_jwt_authz": free_port()}
            (WORK / "nginx.conf").write_text(
                nginx_config(nginx_ports, ports["upstream"], ports["noop_http"], ports["authz_http"]))
            Proc("nginx", [nginx, "-p", WORK / "nginx", "-c", WORK / "nginx.conf", "-e", "stderr"])
            e2e_ports.update(nginx_ports)
        else:
            log("SKIPPING the nginx rows: nginx is not installed (scripts/ensure-packages.sh)")
        for p in e2e_ports.values():
            wait_port(p)
        for name, port in e2e_ports.items():  # warm-up and sanity check
            r = wrk(port, hot, seconds=1)
            if r["non2xx"] or r["errors"]:
                raise SystemExit(f"{name}: {r['non2xx']} non-2xx, {r['errors']} errors")
        rounds = {name: [] for name in e2e_ports}
        for i in range(ROUNDS):
            for name in round_order(e2e_ports, i):
                port = e2e_ports[name]
                r = wrk(port, hot)
                rounds[name].append(r)
                print(f"   round {i + 1} {name}: {r['rps']:.0f} req/s", flush=True)
        e2e = {}
        for name, rs in rounds.items():
            e2e[name] = {
                "rps": statistics.median(r["rps"] for r in rs),
                "p50_us": statistics.median(r["p50_us"] for r in rs),
                "p99_us": statistics.median(r["p99_us"] for r in rs),
                "p999_us": statistics.median(r["p999_us"] for r in rs),
                "rounds": [round(r["rps"]) for r in rs],
            }
        results["e2e"] = e2e
        if in_proxy:
            # Where the filter decided (Envoy's counters over the whole run, both listeners):
            # the hot row must be in-proxy, not callouts.
            stats = urllib.request.urlopen(
                f"http://127.0.0.1:{admin}/stats?filter=jwt_authz_(filter|module)").read().decode()
            results["in_proxy_stats"] = {
                line.split(":")[0].strip(): int(line.split(":")[1])
                for line in stats.splitlines() if ":" in line}
            print(f"   filter counters: {results['in_proxy_stats']}", flush=True)

        log(f"flood through Envoy ({FLOOD_ROUNDS} rounds: valid load alone, then under a flood)")
        bad_token = (WORK / "flood.txt").read_text().split()[0]
        flood_e2e = {name: {"alone": [], "flood": [], "flood_load": []}
                     for name in ("ext_authz_noop", "ext_authz_jwt_authz")}
        for i in range(FLOOD_ROUNDS):
            for name, rec in flood_e2e.items():
                url = f"http://127.0.0.1:{e2e_ports[name]}/bench"
                rec["alone"].append(valid_load(ports["authz"], WORK / "hot.txt", http=url))
                flood = start_flood(None, None, seconds, http_port=e2e_ports[name],
                                    bad_token=bad_token)
                time.sleep(1)
                rec["flood"].append(valid_load(ports["authz"], WORK / "hot.txt", http=url))
                rec["flood_load"].append(flood_report(flood))
                print(f"   round {i + 1} {name}: valid p99 alone {rec['alone'][-1]['p99_us']} us, "
                      f"under flood {rec['flood'][-1]['p99_us']} us "
                      f"(flood {rec['flood_load'][-1]['rps']:.0f} req/s)", flush=True)
        results["flood_e2e"] = flood_e2e

        log(f"cache flood: {FLOOD} unique tokens")
        sampler = RssSampler(authz)
        flood = authz_load(ports["authz"], "--mint-ed25519", WORK / "ed25519.pk8",
                           warmup="0s", extra=("--requests", str(FLOOD)))
        results["flood"] = flood
        results["rss_flood_peak_mib"] = sampler.stop()
        time.sleep(1)
        results["rss_after_flood_mib"] = authz.rss_mib()
        print(f"   {flood['requests']} checks ({flood['ok']} allowed), RSS after "
              f"{results['rss_after_flood_mib']:.1f} MiB", flush=True)
    finally:
        Proc.stop_all()

    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    subprocess.run([sys.executable, ROOT / "scripts" / "bench_report.py", WORK / "results.json"],
                   check=True)


if __name__ == "__main__":
    main()
