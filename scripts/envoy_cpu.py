#!/usr/bin/env python3
"""Envoy's CPU time per request (user and system, from /proc), row by row: what the
instruction counts of envoy_instructions.py leave out (the kernel's share, and how fast the
instructions run), where `make bench`'s req/s mix both with the load generator's noise.

    python3 scripts/envoy_cpu.py [--rounds N] [--seconds S] [--no-guard]

One Envoy 1.40 (`--concurrency 1`, pinned to CPU 0) with one listener per row, every route a
`direct_response`: no filter, `jwt_authn` with and without its cache, and the jwt-authz
dynamic module with a held token and with every token verified in Envoy. wrk (pinned to
CPU 1, as in `make bench`) loads each row for S seconds (default 5), N rounds (default 3)
interleaved, after a 1 s warm-up of each; each line: req/s, and Envoy's user and system CPU
microseconds per request; then each row's medians over the rounds. `--no-guard` leaves out
the module's guard (its second filter, `jwt_authz_guard`) after the module. Needs the
release binaries and the module (`make build module`), wrk (installed here if missing).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ENVOY_CPU = "0"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--no-guard", action="store_true")
    a = ap.parse_args()
    if a.no_guard:
        bench.MODULE_GUARD = ""
    if not bench.MODULE.exists():
        raise SystemExit(f"{bench.MODULE} missing: make module")
    bench.ensure_tools()
    bench.WORK.mkdir(parents=True, exist_ok=True)
    (bench.WORK / "report.lua").write_text(bench.WRK_SCRIPT)
    setup = bench.DirectRows()
    token, ports, sidecar = setup.token, setup.ports, setup.sidecar
    (bench.WORK / "cpu-authz.yaml").write_text(sidecar())
    in_proxy = {"module_hot": (str(bench.MODULE), sidecar()),
                "module_verify": (str(bench.MODULE), sidecar(", max_cached_tokens: 0"))}
    rows, config = setup.envoy(["none", "jwt_authn", "jwt_authn_cache"], in_proxy)
    (bench.WORK / "cpu-envoy.yaml").write_text(config)
    envoy = os.path.realpath(bench.run([bench.ROOT / "scripts" / "ensure-envoy.sh"]).strip())
    proc = None
    try:
        bench.Proc("cpu-jwt-authz", ["taskset", "-c", bench.LOAD_CPU, bench.BIN / "jwt-authz",
                                     "--config", bench.WORK / "cpu-authz.yaml"])
        bench.wait_port(ports["authz"])
        bench.wait_port(ports["authz_http"])
        proc = subprocess.Popen(
            ["taskset", "-c", ENVOY_CPU, envoy, "-c", bench.WORK / "cpu-envoy.yaml",
             "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
            stdout=open(bench.WORK / "cpu-envoy.log", "w"), stderr=subprocess.STDOUT)
        for port in rows.values():
            bench.wait_port(port, timeout=60)
        # The module polls the sidecar and fetches its keys before it decides alone.
        time.sleep(2)
        tick = os.sysconf("SC_CLK_TCK")

        def cpu():
            # utime and stime (fields 14 and 15 of /proc/<pid>/stat), after the command name.
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]), int(fields[12])

        # A warm-up pass per row, not counted (connections, caches, the first verifications).
        for port in rows.values():
            bench.wrk(port, token, seconds=1)
        print(f"Envoy CPU per request (direct response, {a.seconds} s per row and round"
              f"{', no guard' if a.no_guard else ''})")
        seen = {name: [] for name in rows}
        for round_ in range(1, a.rounds + 1):
            for name, port in rows.items():
                user0, sys0 = cpu()
                r = bench.wrk(port, token, seconds=a.seconds)
                user1, sys1 = cpu()
                n = max(r["requests"], 1)
                if r["non2xx"] or r["errors"]:
                    raise SystemExit(f"{name}: {r} (see {bench.WORK / 'cpu-envoy.log'})")
                user, system = (1e6 * (user1 - user0) / tick / n, 1e6 * (sys1 - sys0) / tick / n)
                seen[name].append((r["rps"], user, system))
                print(f"  round {round_} {name.removeprefix('direct_'):16s} "
                      f"{r['rps']:9,.0f} req/s  user {user:6.2f} us  sys {system:6.2f} us",
                      flush=True)
        # Each column's median over the rounds (of user + system too: the row's CPU per
        # request, which is not the sum of the two medians).
        for name, runs in seen.items():
            med = [statistics.median(col) for col in zip(*runs)]
            both = statistics.median(u + s for _, u, s in runs)
            print(f"  median  {name.removeprefix('direct_'):16s} {med[0]:9,.0f} req/s  "
                  f"user {med[1]:6.2f} us  sys {med[2]:6.2f} us  user + sys {both:6.2f} us")
    finally:
        if proc:
            proc.terminate()
            proc.wait(30)
        bench.Proc.stop_all()


if __name__ == "__main__":
    main()
