#!/usr/bin/env python3
"""Envoy's instructions per request, counted by valgrind's callgrind: a measure of what a
filter costs Envoy that moves by ~2 % between runs (Envoy's own timers run meanwhile), where
req/s on a shared, noisy machine moved by 30 %.

    python3 scripts/envoy_instructions.py [--requests N] [--no-guard] [WASM]

One Envoy 1.40 (`--concurrency 1`) under callgrind with one listener per row, every route a
`direct_response` (no upstream): no filter, jwt_authn without and with its cache, gRPC ext_authz to
jwt-authz (Envoy's side only: the sidecar's own work is not in the count), the do-nothing
Wasm filter (crates/bench/wasm-noop), the jwt-authz filter (WASM, default the one `make wasm`
built) and the jwt-authz dynamic module (`make module`) with a held token and with every request's
token verified in Envoy (`max_cached_tokens: 0`). Each row: 50 requests to warm
up, then N (default 300) on one keep-alive connection counted alone. `--no-guard` leaves
out the guards the shipped in-proxy configurations put after the filter (Envoy's RBAC) and the
module (its own `jwt_authz_guard`). Needs the
release binaries (`make build`), the filter (`make wasm`) and valgrind (Debian's package).
"""

import argparse
import http.client
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

RELEASE = bench.ROOT / "target" / "wasm" / "wasm32-wasip1" / "release"
OUT = bench.WORK / "callgrind"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--no-guard", action="store_true")
    ap.add_argument("wasm", nargs="?", default=str(RELEASE / "jwt_authz_filter.wasm"))
    a = ap.parse_args()
    if a.no_guard:
        bench.RBAC_GUARD = ""
        bench.MODULE_GUARD = ""
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if not bench.MODULE.exists():
        raise SystemExit(f"{bench.MODULE} missing: make module")
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("callgrind.out*"):
        old.unlink()
    setup = bench.DirectRows()
    token, ports, sidecar = setup.token, setup.ports, setup.sidecar
    (bench.WORK / "instructions-authz.yaml").write_text(sidecar())
    # Three Wasm VMs at most: each reserves GiBs of address space, and under valgrind more
    # than a few fail to start on the worker.
    in_proxy = {"wasm_noop": (str(RELEASE / "jwt_authz_wasm_noop.wasm"), ""),
                "in_proxy_hot": (a.wasm, sidecar()),
                "in_proxy_miss": (a.wasm, sidecar(", max_cached_tokens: 0")),
                "module_hot": (str(bench.MODULE), sidecar()),
                "module_verify": (str(bench.MODULE), sidecar(", max_cached_tokens: 0"))}
    rows, config = setup.envoy(["none", "jwt_authn", "jwt_authn_cache", "ext_authz_jwt_authz"],
                               in_proxy)
    (bench.WORK / "instructions-envoy.yaml").write_text(config)
    envoy = os.path.realpath(bench.run([bench.ROOT / "scripts" / "ensure-envoy.sh"]).strip())
    binary = Path(envoy)
    # The pip package's `envoy` is a launcher script: valgrind must run the binary itself.
    if binary.read_bytes()[:2] == b"#!":
        found = list(binary.parent.parent.glob("lib/python3*/site-packages/envoy/_bin/envoy"))
        if not found:
            raise SystemExit(f"cannot find the Envoy binary behind {binary}")
        binary = found[0]
    proc = None
    try:
        bench.Proc("instructions-jwt-authz",
                   [bench.BIN / "jwt-authz", "--config", bench.WORK / "instructions-authz.yaml"])
        bench.wait_port(ports["authz"])
        bench.wait_port(ports["authz_http"])
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
             f"--callgrind-out-file={OUT / 'callgrind.out'}", binary,
             "-c", bench.WORK / "instructions-envoy.yaml", "--concurrency", "1",
             "--disable-hot-restart", "--log-level", "warn"],
            stdout=open(bench.WORK / "instructions-envoy.log", "w"), stderr=subprocess.STDOUT)
        for port in rows.values():
            bench.wait_port(port, timeout=600)

        def load(port, n):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            for _ in range(n):
                conn.request("GET", "/bench", headers={"authorization": f"Bearer {token}"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise SystemExit(f"port {port}: {response.status} (see "
                                     f"{bench.WORK / 'instructions-envoy.log'})")
            conn.close()

        def control(*args):
            subprocess.run(["callgrind_control", *args, str(proc.pid)], check=True,
                           capture_output=True)

        print(f"Envoy instructions per request (callgrind, {a.requests} requests per row, "
              f"filter {a.wasm}{', no guard' if a.no_guard else ''})")
        for name, port in rows.items():
            load(port, 50)
            control("-i", "on")
            control("-z")
            load(port, a.requests)
            before = set(OUT.iterdir())
            control("-d")
            control("-i", "off")
            total = 0
            for dump in set(OUT.iterdir()) - before:
                for line in dump.read_text(errors="replace").splitlines():
                    if line.startswith(("totals:", "summary:")):
                        total = max(total, int(line.split()[1]))
            print(f"  {name.removeprefix('direct_'):22s} {total / a.requests:10,.0f}", flush=True)
    finally:
        if proc:
            proc.terminate()
            proc.wait(60)
        bench.Proc.stop_all()


if __name__ == "__main__":
    main()
