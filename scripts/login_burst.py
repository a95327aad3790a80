#!/usr/bin/env python3
"""Peak memory of the issuer under a burst of parallel logins.

    python3 scripts/login_burst.py [ISSUER_BINARY] [PORT] [N]

Starts ISSUER_BINARY (default target/release/issuer; build it with
`cargo build --release -p issuer`) on 127.0.0.1:PORT with a fresh database, sends N
(default 500) wrong-password logins at once (each from its own X-Forwarded-For address, so
no throttle is involved: only the bound on password hashing), and prints the answers by
status and the process's peak RSS (VmHWM). Loopback only.
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/issuer"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 18080
n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
data = tempfile.mkdtemp()
env = dict(os.environ, ISSUER_DB=f"{data}/users.db", ISSUER_KEY_DIR=f"{data}/keys",
           ISSUER_LISTEN=f"127.0.0.1:{port}", RUST_LOG="warn")
issuer = subprocess.Popen([binary, "--demo", "--trust-forwarded-for"], env=env)
try:
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            break
        except OSError:
            time.sleep(0.1)

    def peak_rss_kib():
        with open(f"/proc/{issuer.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM"):
                    return int(line.split()[1])
        return -1

    print(f"idle: peak RSS {peak_rss_kib() / 1024:.0f} MiB")
    answers, lock, start = {}, threading.Lock(), threading.Barrier(n)

    def login(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        body = json.dumps({"username": f"user{i}", "password": "wrong-password"})
        start.wait()
        try:
            conn.request("POST", "/auth/login", body, {
                "content-type": "application/json",
                "x-forwarded-for": f"10.{i // 250}.{i % 250}.1",
            })
            status = conn.getresponse().status
        except OSError as e:
            status = type(e).__name__
        with lock:
            answers[status] = answers.get(status, 0) + 1

    began = time.time()
    threads = [threading.Thread(target=login, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{n} parallel logins: {answers} in {time.time() - began:.1f} s")
    print(f"peak RSS {peak_rss_kib() / 1024:.0f} MiB")
finally:
    issuer.terminate()
    issuer.wait()
