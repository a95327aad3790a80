#!/usr/bin/env python3
"""Writes BENCHMARKS.md and docs/benchmarks.svg from the results of scripts/bench.py.

Usage: bench_report.py target/bench/results.json
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DIRECT = [
    ("noop", "no-op ext_authz (floor), hot token"),
    ("noop_mimalloc", "no-op ext_authz with jwt-authz's allocator (mimalloc), hot token"),
    ("hot", "jwt-authz, one hot token (cache hit)"),
    ("status_hot", "jwt-authz, hot token with a Token Status List entry read each check"),
    ("hot_traceparent", "jwt-authz, hot token, request carries traceparent, tracing off"),
    ("hot_traced", "jwt-authz, hot token, tracing on: every check a sampled span, exported"),
    ("introspect_hot", "jwt-authz, hot opaque token (RFC 7662 answer cached)"),
    ("introspect_miss", "jwt-authz, opaque token introspected every check (cache off: one round trip to a local endpoint)"),
    ("dpop_hot", "jwt-authz, hot DPoP-bound token + a fresh ES256 proof each check"),
    ("tokens_10k", "jwt-authz, 10,000 tokens cycling"),
    ("always_verify", "jwt-authz, signature verified every time (cache off)"),
    ("always_verify_isolated", "jwt-authz, signature verified every time, always on the verification threads (limits.isolate_after_refusals: 0)"),
    ("deny_no_token", "jwt-authz, denied: no token"),
    ("deny_bad_signature", "jwt-authz, denied: bad signature"),
]
E2E = [
    ("none", "Envoy, no auth"),
    ("jwt_authn", "Envoy jwt_authn"),
    ("jwt_authn_cache", "Envoy jwt_authn + jwt_cache_config"),
    ("ext_authz_noop", "Envoy ext_authz → no-op server"),
    ("ext_authz_jwt_authz", "Envoy ext_authz → jwt-authz"),
    ("wasm_noop", "Envoy + a Wasm filter that does nothing (crates/bench/wasm-noop: the in-proxy floor)"),
    ("in_proxy_hot", "Envoy + jwt-authz Wasm filter (in-proxy), token held"),
    ("in_proxy_miss", "Envoy + jwt-authz Wasm filter, every request a callout (max_cached_tokens: 0)"),
    ("module_hot", "Envoy + jwt-authz dynamic module (native in-proxy), token held"),
    ("module_verify", "Envoy + jwt-authz dynamic module, every token verified in Envoy (max_cached_tokens: 0)"),
]

# Only when `make bench` ran with BENCH_BASELINE_BIN (an earlier build, same workload).
BASELINE = [("hot_baseline", "baseline build (BENCH_BASELINE_BIN), one hot token"),
            ("always_verify_baseline", "baseline build (BENCH_BASELINE_BIN), signature verified every time")]

# The valid load of the flood scenario (scripts/bench.py).
VALID = {"rate": 2000, "concurrency": 4}

# Front ends: (label, no-op floor key, jwt-authz key), each pair measured in the same rounds.
FRONTS = [
    ("Envoy gRPC ext_authz", "ext_authz_noop", "ext_authz_jwt_authz"),
    ("Envoy HTTP ext_authz (http_service)", "http_authz_noop", "http_authz_jwt_authz"),
    ("nginx auth_request", "nginx_noop", "nginx_jwt_authz"),
]


def pct(x):
    return f"{100 * x:.1f} %"


def verdict(ok):
    return "met" if ok else "**missed**"


def chart(r):
    rows = [("Direct Check: " + label, r["direct"][k]["rps"], k) for k, label in DIRECT]
    rows += [("Through Envoy: " + label, r["e2e"][k]["rps"], k) for k, label in E2E
             if k in r["e2e"]]
    width, bar_x, bar_w, row_h = 980, 430, 470, 26
    height = 60 + row_h * len(rows) + 30
    top = {"direct": max(r["direct"][k]["rps"] for k, _ in DIRECT),
           "e2e": max(r["e2e"][k]["rps"] for k, _ in E2E if k in r["e2e"])}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="10" y="24" font-size="16" font-weight="bold">jwt-authz throughput '
        '(requests/s, higher is better; bars scaled per group)</text>',
        f'<text x="10" y="44" fill="#555">{r["machine"]["cpu"]}, {r["machine"]["cores"]} cores, '
        f'commit {r["machine"]["commit"]}, {r["machine"]["date"]}</text>',
    ]
    y = 60
    for i, (label, rps, key) in enumerate(rows):
        group = "direct" if i < len(DIRECT) else "e2e"
        if i == len(DIRECT):
            y += 10
        w = bar_w * rps / top[group]
        ours = "jwt_authz" in key or key in ("hot", "status_hot", "hot_traceparent", "hot_traced",
                                             "dpop_hot", "introspect_hot", "introspect_miss", "tokens_10k", "always_verify",
                                             "always_verify_isolated",
                                             "deny_no_token", "deny_bad_signature")
        color = "#2b6cb0" if ours else "#a0aec0"
        out.append(f'<text x="10" y="{y + 17}">{label}</text>')
        out.append(f'<rect x="{bar_x}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{color}"/>')
        out.append(f'<text x="{bar_x + w + 6:.1f}" y="{y + 17}">{rps:,.0f}</text>')
        y += row_h
    out.append(f'<text x="10" y="{y + 20}" fill="#555">blue: jwt-authz; grey: alternatives and floors. '
               'Regenerate: make bench</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# Cost curves (crates/bench/src/bin/curves.rs): dimension, title, the series charted, and whether the
# cost may grow with n (identity headers: every header is work the answer has to carry).
CURVES = [
    ("rules", "route rules (a third each exact, prefix, regex; the request matches the last)",
     [("check_ns", "whole check"), ("route_ns", "route lookup (index)"),
      ("route_linear_ns", "route lookup, every rule in order (reference)")], False),
    ("providers", "providers (chosen by iss; the token from the last)",
     [("check_ns", "whole check")], False),
    ("keys", "keys in the JWKS (the token signed by the last)",
     [("check_ns", "whole check")], False),
    ("cached_tokens", "tokens in the verified-token cache",
     [("lookup_ns", "cache lookup of a hit")], False),
    ("identity_headers", "identity headers (claims mapped to headers)",
     [("check_ns", "whole check")], True),
]
COLORS = ["#2b6cb0", "#38a169", "#a0aec0"]


def curve_chart(r, dim, title, series):
    import math
    points = r["curves"][dim]
    width, height, left, right, top, bottom = 640, 300, 70, 20, 50, 50
    ns = [p["n"] for p in points]
    top_value = max(p[k] for p in points for k, _ in series) * 1.1
    lo, hi = math.log10(min(ns)), math.log10(max(ns))

    def x(n):
        return left + (width - left - right) * ((math.log10(n) - lo) / ((hi - lo) or 1))

    def y(v):
        return height - bottom - (height - top - bottom) * v / top_value

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">CPU per call (ns) by {title}</text>',
        f'<text x="10" y="38" fill="#555">in-process, one thread; commit {r["machine"]["commit"]}, '
        f'{r["machine"]["date"]}; make bench</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
    ]
    for n in ns:
        out.append(f'<text x="{x(n):.1f}" y="{height - bottom + 16}" text-anchor="middle">{n:,}</text>')
    for i in range(5):
        v = top_value * i / 4
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
    for i, (key, label) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{x(p['n']):.1f},{y(p[key]):.1f}" for p in points)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        for p in points:
            out.append(f'<circle cx="{x(p["n"]):.1f}" cy="{y(p[key]):.1f}" r="3" fill="{color}"/>')
        out.append(f'<text x="{left + 10}" y="{height - 12 - 14 * (len(series) - 1 - i)}" '
                   f'fill="{color}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def percentile_median(runs, key):
    import statistics
    return statistics.median(x[key] for x in runs)


def in_proxy_targets(e):
    """Issue 19's targets for the in-proxy mode, from the same wrk rounds as ext_authz: with
    the upstream, and in the issue's own harness (direct_response) when it was measured. The
    do-nothing Wasm filter is held to the same bars: where it misses one, no Wasm filter in
    this Envoy can meet it."""
    if "in_proxy_hot" not in e:
        return ["| in-proxy mode | not measured (no filter .wasm: see the run's log) | |"]
    out = []
    for prefix, where in (("", "upstream"), ("direct_", "direct response")):
        if f"{prefix}in_proxy_hot" not in e:
            continue
        hot, miss = e[f"{prefix}in_proxy_hot"]["rps"], e[f"{prefix}in_proxy_miss"]["rps"]
        ext = e[f"{prefix}ext_authz_jwt_authz"]["rps"]
        jwt_authn = e[f"{prefix}jwt_authn_cache"]["rps"]
        floor = e.get(f"{prefix}wasm_noop", {}).get("rps")
        out += [
            f"| in-proxy ({where}), token held: ≥ 2× ext_authz → jwt-authz | {hot:,.0f} against "
            f"{ext:,.0f} req/s ({hot / ext:.2f}×) | {verdict(hot >= 2 * ext)} |",
            *([f"| the same bar for a Wasm filter that does nothing ({where}) | {floor:,.0f} "
               f"against {ext:,.0f} req/s ({floor / ext:.2f}×) | {verdict(floor >= 2 * ext)} |"]
              if floor else []),
            f"| in-proxy ({where}), token held: ≥ 80 % of jwt_authn + jwt_cache_config | "
            f"{hot:,.0f} against {jwt_authn:,.0f} req/s ({pct(hot / jwt_authn)}) | "
            f"{verdict(hot >= 0.8 * jwt_authn)} |",
            *([f"| the same bar for a Wasm filter that does nothing ({where}) | {floor:,.0f} "
               f"against {jwt_authn:,.0f} req/s ({pct(floor / jwt_authn)}) | "
               f"{verdict(floor >= 0.8 * jwt_authn)} |"] if floor else []),
            f"| in-proxy ({where}), every request a callout: within 10 % of ext_authz → "
            f"jwt-authz | {miss:,.0f} against {ext:,.0f} req/s ({pct(miss / ext)}) | "
            f"{verdict(miss >= 0.9 * ext)} |",
        ]
    return out


def module_targets(e):
    """Issue 35's targets for the dynamic module, from the same wrk rounds as Envoy's own
    jwt_authn: with the upstream and with the route answering itself. A held token against
    jwt_authn with its token cache (both decide from memory); a token verified in Envoy on
    every request (`max_cached_tokens: 0`) against jwt_authn without its cache (both verify
    the RS256 signature on every request)."""
    if "module_hot" not in e:
        return ["| dynamic module | not measured (no module .so: see the run's log) | |"]
    out = []
    for prefix, where in (("", "upstream"), ("direct_", "direct response")):
        if f"{prefix}module_hot" not in e or f"{prefix}jwt_authn" not in e:
            continue
        hot, verify = e[f"{prefix}module_hot"]["rps"], e[f"{prefix}module_verify"]["rps"]
        cached, uncached = e[f"{prefix}jwt_authn_cache"]["rps"], e[f"{prefix}jwt_authn"]["rps"]

        def rounds(row, ref):
            # Each round's ratio (the two rows ran back to back: scripts/bench.py, BESIDE).
            return ", ".join(pct(a / b) for a, b in zip(e[f"{prefix}{row}"]["rounds"],
                                                         e[f"{prefix}{ref}"]["rounds"]))
        out += [
            f"| dynamic module ({where}), token held: ≥ 90 % of jwt_authn + jwt_cache_config | "
            f"{hot:,.0f} against {cached:,.0f} req/s ({pct(hot / cached)}; round by round "
            f"{rounds('module_hot', 'jwt_authn_cache')}) | {verdict(hot >= 0.9 * cached)} |",
            f"| dynamic module ({where}), token verified in Envoy: ≥ jwt_authn without its "
            f"cache | {verify:,.0f} against {uncached:,.0f} req/s ({pct(verify / uncached)}; "
            f"round by round {rounds('module_verify', 'jwt_authn')}) | "
            f"{verdict(verify >= uncached)} |",
        ]
    return out


def report(r):
    m, s, d, e = r["machine"], r["settings"], r["direct"], r["e2e"]
    noop = d["noop"]["rps"]
    hot_ratio = d["hot"]["rps"] / noop
    hot_cpu_ratio = d["noop"]["cpu_us_per_check"] / d["hot"]["cpu_us_per_check"]
    e2e_ratio = e["ext_authz_jwt_authz"]["rps"] / e["ext_authz_noop"]["rps"]
    verify_us = r["verify_cost"]["rs256_verify_us"]
    av = d["always_verify"]
    av_cpu = av["cpu_us_per_check"]
    hot_cpu = d["hot"]["cpu_us_per_check"]
    status_cpu = d["status_hot"]["cpu_us_per_check"]
    hot_spread = max(d["hot"]["cpu_rounds"]) - min(d["hot"]["cpu_rounds"])
    noop_spread = max(d["noop"]["cpu_rounds"]) - min(d["noop"]["cpu_rounds"])
    off_cpu = d["hot_traceparent"]["cpu_us_per_check"]
    traced_cpu = d["hot_traced"]["cpu_us_per_check"]
    spans = r["tracing"]
    own = av_cpu - verify_us
    flood_rss = r["rss_after_flood_mib"]
    miss_budget = d["noop"]["cpu_us_per_check"] + verify_us + 5
    # The miss path's own work, in-process (crates/bench/src/bin/curves.rs, `miss_path`).
    mp = (r.get("curves", {}).get("miss_path") or [None])[0]
    miss_own_us = (mp["uncached_ns"] - mp["cached_ns"] - mp["signature_ns"]) / 1e3 if mp else None
    curve_targets = []
    for dim, title, series, may_grow in CURVES:
        if may_grow or dim not in r.get("curves", {}):
            continue
        pts = r["curves"][dim]
        key = series[0][0]
        first, last = pts[0][key], pts[-1][key]
        curve_targets.append(
            f"| {series[0][1]} grows sub-linearly with {dim.replace('_', ' ')} ({pts[0]['n']:,} → "
            f"{pts[-1]['n']:,}: at most 1.5×, where linear would be {pts[-1]['n'] // pts[0]['n']:,}×) | "
            f"{first:,.0f} → {last:,.0f} ns ({last / first:.2f}×) | {verdict(last / first <= 1.5)} |")
    flood_targets = []
    fd, fe = r.get("flood_direct"), r.get("flood_e2e")
    if fd:
        alone, flood = percentile_median(fd["alone"], "p99_us"), percentile_median(fd["flood"], "p99_us")
        flood_targets.append(
            f"| under a flood, directly: valid cached-token p99 ≤ 2× its p99 alone | {alone:,.0f} → "
            f"{flood:,.0f} µs ({flood / alone:.2f}×) | {verdict(flood <= 2 * alone)} |")
    if fe:
        floor = percentile_median(fe["ext_authz_noop"]["flood"], "p99_us")
        ours = percentile_median(fe["ext_authz_jwt_authz"]["flood"], "p99_us")
        flood_targets.append(
            f"| under a flood, through Envoy: valid p99 ≤ 1.2× the no-op floor's p99 under the "
            f"same flood | {ours:,.0f} against {floor:,.0f} µs ({ours / floor:.2f}×) | "
            f"{verdict(ours <= 1.2 * floor)} |")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`scripts/bench.py`, then `scripts/bench_report.py`); do not",
        "edit by hand. Numbers are from one run on the machine below; rerun to compare.",
        "",
        "![throughput chart](docs/benchmarks.svg)",
        "",
        "Raw figures: [`docs/benchmarks.json`](docs/benchmarks.json).",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory_gib']} GiB; kernel {m['kernel']}",
        f"- {m['rustc']}; Envoy {m['envoy']}; {m['wrk']}",
        f"- jwt-authz commit {m['commit']}, run {m['date']}",
        f"- Command: `make bench` (environment knobs: BENCH_DURATION={s['duration']}, "
        f"BENCH_WARMUP={s['warmup']}, BENCH_E2E_SECONDS={s['e2e_seconds']}, "
        f"BENCH_ROUNDS={s['rounds']}, BENCH_FLOOD={s['flood']})",
        "- Placement: the system under test (jwt-authz or the no-op server, Envoy, the upstream)",
        "  is pinned to CPU 0 and the load generator to CPU 1 with `taskset`, for every target.",
        "",
        "## Direct gRPC Check",
        "",
        f"`crates/bench/` `authz-load` (tonic): {s['connections']} HTTP/2 connections, {s['concurrency']} "
        f"requests in flight, {s['warmup']} warm-up, {s['duration']} measured, {s['rounds']} "
        "interleaved rounds (medians shown; every round in the last column). The no-op server "
        "(`noop-authz`, same tonic + envoy-types stack, answers OK with one header) is the floor. "
        "CPU µs/check is the server's process CPU time over all rounds divided by the checks it "
        "answered, the figure least disturbed by other load on the host.",
        "",
        "| scenario | checks/s | vs no-op | p50 µs | p99 µs | p99.9 µs | CPU µs/check | rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in DIRECT + BASELINE:
        if key not in d:
            continue
        x = d[key]
        lines.append(
            f"| {label} | {x['rps']:,.0f} | {pct(x['rps'] / noop)} | {x['p50_us']:.0f} | "
            f"{x['p99_us']:.0f} | {x['p999_us']:.0f} | {x['cpu_us_per_check']:.1f} | "
            f"{', '.join(f'{v:,}' for v in x['rounds'])} |")
    lines += [
        "",
        "Every direct run answered as expected: "
        + ", ".join(f"{k} {d[k]['ok']} allowed / {d[k]['denied']} denied / {d[k]['errors']} errors"
                    for k, _ in DIRECT + BASELINE if k in d) + ".",
        "",
        "## End to end through Envoy",
        "",
        f"`wrk -t1 -c{s['wrk_connections']}` for {s['e2e_seconds']} s per run against one Envoy "
        "(`--concurrency 1`) with one listener per setup, all routing to the same upstream, "
        f"the same hot RS256 token; {s['rounds']} interleaved rounds, medians shown (each "
        "round's figure in the last column).",
        "",
        "| setup | req/s | vs ext_authz → no-op | vs jwt_authn | p50 µs | p99 µs | p99.9 µs | rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, label in E2E:
        if key not in e:
            lines.append(f"| {label} | not measured (no filter .wasm) | | | | | | |")
            continue
        x = e[key]
        lines.append(
            f"| {label} | {x['rps']:,.0f} | {pct(x['rps'] / e['ext_authz_noop']['rps'])} | "
            f"{pct(x['rps'] / e['jwt_authn']['rps'])} | {x['p50_us']:.0f} | {x['p99_us']:.0f} | "
            f"{x['p999_us']:.0f} | {', '.join(f'{v:,}' for v in x['rounds'])} |")
    if any(k.startswith("direct_") for k in e):
        lines += [
            "",
            "### Issue 19's harness: the route answers itself",
            "",
            "The rows issue 19's targets compare, on listeners whose route is a "
            "`direct_response` (no upstream), as the issue measured them, in the same "
            "interleaved rounds as the table above. Without the upstream's share of the core "
            "every row is cheaper, so the ratios between rows are not those above: a fixed "
            "cost per request (the upstream) is gone from all of them, which favours what "
            "costs more than it (ext_authz against in-proxy) and penalises what costs little "
            "(a Wasm filter against native jwt_authn).",
            "",
            "| setup | req/s | vs ext_authz → jwt-authz | vs jwt_authn + jwt_cache_config | "
            "p50 µs | p99 µs | rounds |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for key, label in E2E:
            x = e.get(f"direct_{key}")
            if x is None:
                continue
            lines.append(
                f"| {label} | {x['rps']:,.0f} | "
                f"{pct(x['rps'] / e['direct_ext_authz_jwt_authz']['rps'])} | "
                f"{pct(x['rps'] / e['direct_jwt_authn_cache']['rps'])} | {x['p50_us']:.0f} | "
                f"{x['p99_us']:.0f} | {', '.join(f'{v:,}' for v in x['rounds'])} |")
    lines += [
        "",
        "## Front ends",
        "",
        "The same wrk load and token through each proxy jwt-authz ships a configuration for, "
        "in the same interleaved rounds as above. Each front end's floor is that proxy asking "
        "the no-op server over the same protocol (`noop-authz`, gRPC or `--http`), so the ratio "
        "is what jwt-authz's decision costs on that path. nginx runs one worker "
        "(`worker_processes 1`, Debian's package) with `auth_request` to `/auth-request`, as "
        "`deploy/nginx/` does; Envoy runs `--concurrency 1`.",
        "",
        "| front end | floor req/s | jwt-authz req/s | jwt-authz vs floor | p50 µs | p99 µs | floor rounds | jwt-authz rounds |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for label, floor_key, key in FRONTS:
        if floor_key not in e or key not in e:
            lines.append(f"| {label} | not measured (proxy not installed) | | | | | | |")
            continue
        f, x = e[floor_key], e[key]
        lines.append(
            f"| {label} | {f['rps']:,.0f} | {x['rps']:,.0f} | {pct(x['rps'] / f['rps'])} | "
            f"{x['p50_us']:.0f} | {x['p99_us']:.0f} | {', '.join(f'{v:,}' for v in f['rounds'])} | "
            f"{', '.join(f'{v:,}' for v in x['rounds'])} |")
    lines += [
        "",
        "## CPU and memory",
        "",
        f"- CPU per check (process CPU time / checks): jwt-authz hot {hot_cpu:.1f} µs, "
        f"10k tokens {d['tokens_10k']['cpu_us_per_check']:.1f} µs, always-verify {av_cpu:.1f} µs; "
        f"no-op server {d['noop']['cpu_us_per_check']:.1f} µs.",
        f"- Raw RS256 verification (aws-lc, key parsed once, one thread): {verify_us:.1f} µs.",
        f"- DPoP (RFC 9449): a hot DPoP-bound token with a fresh ES256 proof costs "
        f"{d['dpop_hot']['cpu_us_per_check']:.1f} µs per check against {hot_cpu:.1f} µs for the "
        f"hot bearer token: {d['dpop_hot']['cpu_us_per_check'] - hot_cpu:.1f} µs for the proof "
        "(parse, P-256 signature check, thumbprint, claims, the in-memory jti replay check), "
        "paid on every request since no proof is cached. The P-256 signature check alone is "
        "most of it (`cargo bench --bench verify -- dpop`: dpop/es256_signature against "
        "dpop/verify_proof). The DPoP process (a jwt-authz of its own, so that the proofs it "
        f"remembers stay out of the other rows) peaked at {d['dpop_hot']['rss_peak_mib']:.1f} "
        "MiB RSS.",
        f"- Opaque tokens (RFC 7662 introspection): a hot opaque token, its answer cached, costs "
        f"{d['introspect_hot']['cpu_us_per_check']:.1f} µs per check against {hot_cpu:.1f} µs for "
        f"the hot JWT ({d['introspect_hot']['rps']:,.0f} against {d['hot']['rps']:,.0f} checks/s; "
        "the lookup is the token's SHA-256 in the introspection cache, as in the token cache). "
        f"Introspected every check (cache off), one loopback round trip to a local endpoint "
        f"(crates/bench/src/bin/bench-introspect.rs, on the load generator's CPU) costs "
        f"{d['introspect_miss']['cpu_us_per_check']:.1f} µs of jwt-authz CPU per check "
        f"({d['introspect_miss']['cpu_us_per_check'] - d['introspect_hot']['cpu_us_per_check']:+.1f} µs: "
        "the HTTP/1.1 request with its Basic credentials, the answer read "
        f"and checked) and p50 {d['introspect_miss']['p50_us']:.0f} µs against "
        f"{d['introspect_hot']['p50_us']:.0f} µs hot; a real endpoint adds its own time and the network.",
        f"- Revocation (Token Status List): a hot token whose status list entry is read on "
        f"every check costs {status_cpu:.1f} µs per check against {hot_cpu:.1f} µs for the hot "
        f"token without a status check ({status_cpu - hot_cpu:+.1f} µs); the hot row's own "
        f"rounds spread over {hot_spread:.1f} µs ({', '.join(f'{v:.1f}' for v in d['hot']['cpu_rounds'])}). "
        "The lookup is the `status` claim read from the cached claims, one hash-map lookup by "
        "list URI and one bit; the list (1,024 entries, served on loopback) is fetched once "
        "before the rounds and not again (ttl 1 h).",
        f"- Tracing (OpenTelemetry): with tracing off, a hot token whose request carries a "
        f"sampled `traceparent` costs {off_cpu:.1f} µs per check against {hot_cpu:.1f} µs "
        f"without the header ({off_cpu - hot_cpu:+.1f} µs): off, nothing reads it (the debug "
        "decision line would, and is off here). With tracing on and every check sampled (the "
        f"worst case: a span per check, exported over OTLP/gRPC to `otlp-sink`, a receiver that "
        f"discards them) a check costs {traced_cpu:.1f} µs ({traced_cpu - hot_cpu:+.1f} µs, "
        "the exporter's batching thread included); the traced process exported "
        f"{spans['ok']:,} spans ({spans['error']:,} in failed batches; spans beyond the export "
        "queue are dropped, not queued).",
        f"- RSS: idle {r['rss_idle_mib']:.1f} MiB; peak under the hot load "
        f"{r['rss_load_mib']:.1f} MiB; peak during {s['flood']:,} unique tokens "
        f"{r['rss_flood_peak_mib']:.1f} MiB; after them {flood_rss:.1f} MiB "
        f"({r['flood']['ok']:,} allowed, {r['flood']['errors']} errors).",
        "",
        "## Targets",
        "",
        "| target | result | |",
        "|---|---|---|",
        f"| hot-token checks ≥ 90 % of the no-op floor | {pct(hot_ratio)} by median throughput; "
        f"{pct(hot_cpu_ratio)} by CPU per check (the capacity of a core) | "
        f"{verdict(hot_ratio >= 0.9)} (throughput) / {verdict(hot_cpu_ratio >= 0.9)} (CPU) |",
        f"| always-verify limited by RSA verification | RSA {verify_us:.1f} µs of {av_cpu:.1f} µs "
        f"CPU per check ({pct(verify_us / av_cpu)}) | {verdict(verify_us / av_cpu >= 0.5)} |",
        f"| through Envoy, jwt-authz ≥ 95 % of ext_authz → no-op | {pct(e2e_ratio)} | {verdict(e2e_ratio >= 0.95)} |",
        f"| status list check on a hot token within noise (CPU per check, against the hot "
        f"row's round-to-round spread) | {status_cpu - hot_cpu:+.1f} µs, spread {hot_spread:.1f} µs | "
        f"{verdict(abs(status_cpu - hot_cpu) <= hot_spread)} |",
        f"| tracing off costs nothing measurable (CPU per check with a sampled `traceparent` "
        f"against the hot row, within its round-to-round spread) | {off_cpu - hot_cpu:+.1f} µs, "
        f"spread {hot_spread:.1f} µs | {verdict(abs(off_cpu - hot_cpu) <= hot_spread)} |",
        *([f"| tracing off costs nothing measurable against the build before tracing "
           f"({s.get('baseline', '')}: CPU per check, hot token, same rounds; within the "
           f"hot row's spread) | {hot_cpu - d['hot_baseline']['cpu_us_per_check']:+.1f} µs, "
           f"spread {hot_spread:.1f} µs | "
           f"{verdict(abs(hot_cpu - d['hot_baseline']['cpu_us_per_check']) <= hot_spread)} |"]
          if "hot_baseline" in d else []),
        f"| RSS after {s['flood']:,} unique tokens ≤ 64 MiB | {flood_rss:.1f} MiB | {verdict(flood_rss <= 64)} |",
        f"| hot token CPU per check within 95 % of the no-op floor's (floor ÷ hot) | "
        f"{d['noop']['cpu_us_per_check']:.1f} ÷ {hot_cpu:.1f} µs = {pct(hot_cpu_ratio)} | "
        f"{verdict(hot_cpu_ratio >= 0.95)} |",
        *([f"| the same against the floor with jwt-authz's allocator (mimalloc; what is left is "
           f"the check's own work) | {d['noop_mimalloc']['cpu_us_per_check']:.1f} ÷ {hot_cpu:.1f} µs = "
           f"{pct(d['noop_mimalloc']['cpu_us_per_check'] / hot_cpu)} | "
           f"{verdict(d['noop_mimalloc']['cpu_us_per_check'] / hot_cpu >= 0.95)} |"]
          if "noop_mimalloc" in d else []),
        *([f"| hot token, this build against {s.get('baseline', '')} (same rounds, CPU per "
           f"check; no worse beyond the hot row's spread) | {hot_cpu:.1f} against "
           f"{d['hot_baseline']['cpu_us_per_check']:.1f} µs "
           f"({hot_cpu - d['hot_baseline']['cpu_us_per_check']:+.1f} µs, spread {hot_spread:.1f} µs) | "
           f"{verdict(hot_cpu - d['hot_baseline']['cpu_us_per_check'] <= hot_spread)} |"]
          if "hot_baseline" in d else []),
        f"| miss path: always-verify CPU per check ≤ floor + RSA + 5 µs (default: checked where "
        f"it arrives while nothing is refused) | {av_cpu:.1f} µs against {d['noop']['cpu_us_per_check']:.1f} + {verify_us:.1f} "
        f"+ 5 = {miss_budget:.1f} µs | {verdict(av_cpu <= miss_budget)} |",
        *([f"| miss path, its own work in-process (the miss path's part of the 5 µs: a whole check "
           f"with the cache off, less the same check cached, less the RS256 signature check alone; "
           f"`curves`, fastest of interleaved batches, no network) ≤ 5 µs | "
           f"{mp['uncached_ns'] / 1e3:.1f} − {mp['cached_ns'] / 1e3:.1f} − {mp['signature_ns'] / 1e3:.1f} "
           f"= {miss_own_us:.1f} µs | {verdict(miss_own_us <= 5)} |"]
          if mp else []),
        *([f"| miss path, always handed to the verification threads "
           f"(`limits.isolate_after_refusals: 0`: the price of isolation) | "
           f"{d['always_verify_isolated']['cpu_us_per_check']:.1f} µs against {miss_budget:.1f} µs | "
           f"{verdict(d['always_verify_isolated']['cpu_us_per_check'] <= miss_budget)} |"]
          if "always_verify_isolated" in d else []),
        *in_proxy_targets(e),
        *module_targets(e),
        *curve_targets,
        *flood_targets,
        "",
    ]
    notes = []
    if hot_ratio < 0.9:
        notes.append(
            f"- Hot token: {pct(0.9 - hot_ratio)} short of 90 % of the floor. The floor server "
            "does no work at all per request; what remains in jwt-authz is the decision itself "
            "(SHA-256 of the token, a cache lookup, building identity headers).")
    if e2e_ratio < 0.95:
        notes.append(f"- Through Envoy: {pct(0.95 - e2e_ratio)} short of 95 %.")
    if "in_proxy_stats" in r:
        st = {k.rsplit("jwt_authz_filter_", 1)[-1]: v for k, v in r["in_proxy_stats"].items()}
        notes.append(
            "- In-proxy rows: the jwt-authz Wasm filter (`crates/filter/`, Envoy's V8) given the "
            "sidecar's own configuration, in the same Envoy and rounds as the other rows. The "
            "held row's token is decided inside Envoy after its first callout; the callout row "
            "holds nothing (`in_proxy.max_cached_tokens: 0`), so every request is an HTTP call "
            "to the sidecar's in-proxy endpoint, which answers from its own token cache as in "
            "the ext_authz rows. The filter's counters over the whole run (every in-proxy listener): "
            f"{st.get('decided_cached', 0):,} decided with held claims, "
            f"{st.get('callouts', 0):,} callouts, {st.get('callout_failures', 0):,} failed "
            f"callouts, {st.get('poll_failures', 0):,} failed polls.")
    if "wasm_noop" in e:
        floor, hot = e["wasm_noop"]["rps"], e["in_proxy_hot"]["rps"]
        ext, none = e["ext_authz_jwt_authz"]["rps"], e["none"]["rps"]
        notes.append(
            "- The Wasm floor: a filter that does nothing (`crates/bench/wasm-noop`, every callback "
            "proxy-wasm's default) in the same Envoy and V8 does "
            f"{floor:,.0f} req/s, {floor / ext:.2f}× ext_authz → jwt-authz, so on this host no "
            "Wasm filter can go much past that ratio. Per request, loading a Wasm filter costs "
            f"Envoy {1e6 / floor - 1e6 / none:.1f} µs (against no auth), and the jwt-authz filter "
            f"deciding a held token {1e6 / hot - 1e6 / floor:.1f} µs more (reading the request's "
            "headers, the decision, the header changes: each a call between Envoy and the VM).")
    if flood_rss > 64:
        notes.append(f"- Flood RSS: {flood_rss - 64:.1f} MiB over 64 MiB.")
    parse = av_cpu - hot_cpu - verify_us
    notes.append(
        f"- Always-verify, the split per check: {verify_us:.1f} µs RSA verification in aws-lc "
        f"(one core: {1e6 / verify_us:,.0f} verifications/s), {hot_cpu:.1f} µs that every check "
        f"pays, cached or not (gRPC, HTTP/2, the decision; the no-op floor pays "
        f"{d['noop']['cpu_us_per_check']:.1f} µs of it), and {parse:.1f} µs of token handling "
        "on a cache miss: the token split, base64url-decoded and its header and claims parsed "
        "once (`crates/jose/src/jws.rs`), the claims validated on that parse, the check's timeout "
        "armed; the signature is checked where the token arrived, since nothing is being "
        "refused. The token cache takes both the RSA and the parsing "
        "off the hot path; the aws-lc key is parsed once per JWKS fetch (`crates/jose/src/crypto.rs`; "
        "`cargo bench --bench verify` shows signature/prepared against signature/stock, and "
        "token/parse_once against token/jsonwebtoken_decode)."
        + (f" Isolated on the verification threads (as under a flood), the same check costs "
           f"{d['always_verify_isolated']['cpu_us_per_check']:.1f} µs: the hand-off there and "
           f"back, with both sides on one CPU, costs "
           f"{d['always_verify_isolated']['cpu_us_per_check'] - av_cpu:.1f} µs more, which is "
           "why checks are isolated only while tokens are being refused."
           if "always_verify_isolated" in d else ""))
    if mp:
        notes.append(
            f"- Miss path, where the end-to-end figure goes: in-process the miss path's own work "
            f"(everything a cache miss adds but the RS256 check) is {miss_own_us:.1f} µs; end to "
            f"end the always-verify row pays {parse:.1f} µs beyond the hot row and RSA. The "
            "difference is not work the miss path does: perf of an always-verify load against a "
            "hot one (same binary, pinned) shows the same calls per check (one `writev` per "
            "answer, the same reads) each costing more — the kernel's TCP send and wake-up of a "
            "load generator that now waits on the server, tonic and h2 running with caches "
            "the RSA check just used. It grows with the host's load (in this run the no-op "
            f"floor's own rounds spread over {noop_spread:.1f} µs), so the end-to-end row is "
            "kept as measured and the own-work row shows the part the code controls.")
    notes.append(
        "- Throughput on this 2-core machine: the load generator has one core and is the first "
        "to saturate, so the no-op floor and the cached jwt-authz runs reach about the same "
        "checks/s; the CPU per check of the server (the hot row against the no-op row) is "
        "the fair capacity comparison. The host is shared and noisy: rounds of the same "
        "scenario differ by up to a factor of two, which is why rounds are interleaved and "
        "medians reported.")
    lines += ["Notes:", "", *notes, ""]
    if "curves" in r:
        lines += [
            "## Cost curves",
            "",
            "How the CPU of one check of a cached token grows with the configuration, measured "
            "in-process (`crates/bench/src/bin/curves.rs`, pinned to CPU 0; no network, so these are the "
            "decision's own nanoseconds, the part of the CPU per check above that jwt-authz "
            "controls). Each point is its own `Runtime` built from a generated configuration; "
            "every point is calibrated, then measured in 15 interleaved rounds and its fastest "
            "batch kept. The cached-tokens curve times the cache lookup a hit does, with entries "
            "inserted directly (verifying a million tokens would measure the verification). "
            "Rule matching at 1/10/100/1,000 rules is also a criterion bench: "
            "`cargo bench --bench rules`.",
            "",
        ]
        for dim, title, series, may_grow in CURVES:
            pts = r["curves"].get(dim)
            if not pts:
                continue
            lines += [f"### {title[0].upper() + title[1:]}", "",
                      f"![{dim}](docs/curve-{dim.replace('_', '-')}.svg)", "",
                      "| n | " + " | ".join(label for _, label in series) + " |",
                      "|---:|" + "---:|" * len(series)]
            for p in pts:
                lines.append(f"| {p['n']:,} | " + " | ".join(f"{p[k]:,.0f} ns" for k, _ in series) + " |")
            lines.append("")
    if fd and fe:
        def row(label, rec, extra=""):
            a, f = rec["alone"], rec["flood"]
            return (f"| {label} | {percentile_median(a, 'p50_us'):,.0f} | {percentile_median(a, 'p99_us'):,.0f} | "
                    f"{percentile_median(f, 'p50_us'):,.0f} | {percentile_median(f, 'p99_us'):,.0f} | "
                    f"{percentile_median(rec['flood_load'], 'rps'):,.0f} | "
                    f"{', '.join(str(x['p99_us']) for x in a)} / {', '.join(str(x['p99_us']) for x in f)} |{extra}")
        shed, verified = fd["shed"], fd["verified"]
        lines += [
            "## Flood",
            "",
            f"A steady valid load ({VALID['rate']} requests/s of the cached hot token, "
            f"{VALID['concurrency']} in flight, paced) measured alone and while a flood of invalid "
            "tokens runs (a second load generator at nice 19 on the load CPU, 64 in flight, as "
            "fast as answered). Directly, the flood is 10,000 distinct tokens over gRPC: nine in "
            "ten carry the real `kid` and a broken signature (a signature check each), one in ten "
            "an unknown `kid` (a key refetch, rate-limited). Through Envoy (one worker) the flood "
            "is `wrk -c64` with a bad-signature token against the same listener as the valid "
            "load, and the same for the no-op floor (which lets the flood through to the "
            f"upstream). {len(fd['alone'])} rounds, medians shown; each round's p99 alone / under "
            "flood in the last column.",
            "",
            "| valid load | p50 µs alone | p99 µs alone | p50 µs under flood | p99 µs under flood | flood req/s | p99 rounds (alone / flood) |",
            "|---|---:|---:|---:|---:|---:|---|",
            row("directly against jwt-authz", fd),
            row("through Envoy → no-op floor", fe["ext_authz_noop"]),
            row("through Envoy → jwt-authz", fe["ext_authz_jwt_authz"]),
            "",
            f"- Directly, during the flood rounds ({fd['seconds']} s): jwt-authz used "
            f"{', '.join(f'{100 * c:.0f} %' for c in fd['cpu_share'])} of its CPU per round "
            f"(process CPU time over wall time; 100 % = the one CPU it is pinned to); "
            f"{verified:,} flood tokens had their signature checked and were refused "
            f"(`bad_signature`), {shed:,} were shed at the full verification queue "
            f"(`verify_busy`, 503 at once); {fd['jwks_fetches']} key refetches for the "
            "unknown kids (`jwt_authz_jwks_fetches_total`; `unknown_kid_interval` is 10 s)"
            + (f"; signature checks were moved onto the verification threads "
               f"{fd['isolations']} time(s) (`jwt_authz_verification_isolations_total`, "
               "raised by the refusals)." if "isolations" in fd else "."),
            "",
        ]
    lines += [
        "## Micro-benchmark",
        "",
        "`cargo bench --bench verify` (criterion) times the verification path in-process: a",
        "cached Check decision, an uncached one, and verification alone.",
        "",
    ]
    return "\n".join(lines)


def main():
    results = json.loads(Path(sys.argv[1]).read_text())
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.svg").write_text(chart(results))
    for dim, title, series, _ in CURVES:
        if dim in results.get("curves", {}):
            (ROOT / "docs" / f"curve-{dim.replace('_', '-')}.svg").write_text(
                curve_chart(results, dim, title, series))
    (ROOT / "BENCHMARKS.md").write_text(report(results))
    (ROOT / "docs" / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    print("wrote BENCHMARKS.md, docs/benchmarks.svg and docs/curve-*.svg")


if __name__ == "__main__":
    main()
