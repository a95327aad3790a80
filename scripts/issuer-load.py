#!/usr/bin/env python3
"""Login and status-list latency of the issuer, idle and while unauthenticated clients hammer
`GET /auth/status` (issue 32).

    python3 scripts/issuer-load.py [--binary target/release/issuer] [--rows 1000000]
                                   [--loops 32] [--logins 20] [--lists 60] [--port 18090]

Build the binary first (`cargo build --release -p issuer`). Python 3.11 standard library
only; loopback only. Steps:

1. Writes a database in the issuer's schema as released before issue 32 (user_version 2)
   with ROWS `issued_tokens` rows: a week of logins, 15-minute tokens, one in a hundred
   revoked, in lists of 65536 entries (the default size). Direct SQLite inserts, a few
   seconds.
2. Runs `BINARY users add` on it (which migrates the database to the binary's schema; the
   time is printed) and starts `BINARY` on 127.0.0.1:PORT with its default settings.
3. Idle: LOGINS sequential logins, then LISTS paced requests (7 a second, under the default
   per-address limit) each of `GET /auth/status/1` and `GET /auth/status`, all from
   127.0.0.1.
4. The same again while LOOPS threads each loop on `GET /auth/status` as fast as they can
   over a keep-alive connection, each from its own source address (127.0.0.2, 127.0.0.3,
   ...), so a per-address limit applies to each loop separately and does not hide the cost
   of the read path. (--loop-path /healthz makes a control: the same flood of HTTP
   requests, none of which reads anything.) The loops run in a process of their own, at a
   lower CPU priority (--loader-nice, default 10): on a small machine they would otherwise
   take the CPU the issuer's password hashing needs, which real attackers, on their own
   machines, do not; and the measuring requests never wait for the loops' interpreter
   lock.
5. Prints a table (median, p99, max, failures) and what the loops got (200, 429, other).

A measuring phase stops after --phase-seconds even if not all requests were made; the table
says how many were.
"""
import argparse
import http.client
import json
import math
import multiprocessing
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

# The schema of user_version 2 (crates/issuer/src/users.rs MIGRATIONS before issue 32).
SCHEMA_V2 = """
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE status_lists (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL,
    next_idx INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE issued_tokens (
    jti TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    list INTEGER NOT NULL REFERENCES status_lists(id),
    idx INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    UNIQUE (list, idx)
);
CREATE INDEX issued_tokens_by_subject ON issued_tokens (subject, expires_at);
PRAGMA user_version = 2;
"""

LIST_SIZE = 65536
TOKEN_TTL = 900
USER, PASSWORD = "loaduser", "load-test-password"


def make_database(path, rows):
    now = int(time.time())
    # A week of logins, the newest a few seconds ago; the oldest stays younger than the week
    # after which the issuer forgets expired tokens.
    span = 7 * 24 * 3600 - 3600
    first = now - span
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(SCHEMA_V2)
    lists = (rows + LIST_SIZE - 1) // LIST_SIZE
    with db:
        for n in range(lists):
            used = min(LIST_SIZE, rows - n * LIST_SIZE)
            revoked = len(range(0, used, 100))
            db.execute(
                "INSERT INTO status_lists (id, size, next_idx, version, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (n + 1, LIST_SIZE, used, revoked, first + n * LIST_SIZE * span // rows),
            )

        def tokens():
            for i in range(rows):
                issued = first + i * span // rows
                yield (
                    f"{i:032x}",
                    f"{i % 1000:032x}",
                    i // LIST_SIZE + 1,
                    i % LIST_SIZE,
                    issued,
                    issued + TOKEN_TTL,
                    issued + 60 if i % 100 == 0 else None,
                )

        db.executemany(
            "INSERT INTO issued_tokens"
            " (jti, subject, list, idx, issued_at, expires_at, revoked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            tokens(),
        )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    os.chmod(path, 0o600)
    return lists


def percentile(values, p):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Client:
    """One keep-alive connection from one source address; reconnects after an error."""

    def __init__(self, port, source="127.0.0.1", timeout=30):
        self.port, self.source, self.timeout = port, source, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout,
                source_address=(self.source, 0))
        try:
            self.conn.request(method, path, body, headers or {})
            response = self.conn.getresponse()
            data = response.read()
            return response.status, data
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise


def measure(client, name, n, deadline, pace, make):
    """`n` requests (or as many as fit before `deadline`); returns a row of the table."""
    times, failed = [], 0
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        method, path, body, headers = make()
        start = time.perf_counter()
        try:
            status, _ = client.request(method, path, body, headers)
        except (OSError, http.client.HTTPException):
            status = None
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        if status != 200:
            failed += 1
        if pace:
            time.sleep(max(0.0, pace - elapsed))
    return name, times, failed


def login_request():
    body = json.dumps({"username": USER, "password": PASSWORD})
    return "POST", "/auth/login", body, {"content-type": "application/json"}


def phase(port, args, label):
    deadline = time.monotonic() + args.phase_seconds
    client = Client(port)
    rows = [measure(client, f"{label:<9} POST /auth/login", args.logins, deadline, 0,
                    login_request)]
    deadline = time.monotonic() + args.phase_seconds
    lists, aggregate = [], []
    # Interleaved, so both see the same moments of the load.
    for _ in range(args.lists):
        for out, path in ((lists, "/auth/status/1"), (aggregate, "/auth/status")):
            out.append(measure(client, "", 1, deadline, 0,
                               lambda path=path: ("GET", path, None, None)))
        time.sleep(1 / 7)
    for name, got in ((f"{label:<9} GET /auth/status/1", lists),
                      (f"{label:<9} GET /auth/status", aggregate)):
        times = [t for _, ts, _ in got for t in ts]
        rows.append((name, times, sum(f for _, _, f in got)))
    return rows


def hammer(port, path, source, stop, counts, lock):
    client = Client(port, source, timeout=30)
    mine = {}
    while not stop.is_set():
        try:
            status, _ = client.request("GET", path)
        except (OSError, http.client.HTTPException) as e:
            status = type(e).__name__
        mine[status] = mine.get(status, 0) + 1
    with lock:
        for k, v in mine.items():
            counts[k] = counts.get(k, 0) + v


def loader(port, path, loops, nice, stop, results):
    """The loop threads, in a process of their own: they hold its interpreter lock, not the
    measuring process's (whose requests would otherwise wait for it, up to 5 ms each)."""
    if nice:
        os.nice(nice)
    lock, counts, threads = threading.Lock(), {}, []
    for i in range(loops):
        t = threading.Thread(target=hammer, daemon=True,
                             args=(port, path, f"127.0.0.{2 + i}", stop, counts, lock))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout=60)
    results.put(counts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/issuer")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--loops", type=int, default=32)
    parser.add_argument("--logins", type=int, default=20)
    parser.add_argument("--lists", type=int, default=60)
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--phase-seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--loader-nice", type=int, default=10)
    parser.add_argument("--loop-path", default="/auth/status",
                        help="what the loops request (/healthz: a control that costs the "
                             "issuer no database read, only the HTTP work)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    if args.loops > 253:
        sys.exit("at most 253 loops (source addresses 127.0.0.2-127.0.0.254)")

    data = tempfile.mkdtemp(prefix="issuer-load-")
    db = os.path.join(data, "users.db")
    start = time.monotonic()
    lists = make_database(db, args.rows)
    print(f"database: {args.rows} issued_tokens rows in {lists} lists, "
          f"written in {time.monotonic() - start:.1f} s ({data})")

    env = dict(os.environ, ISSUER_DB=db, ISSUER_KEY_DIR=os.path.join(data, "keys"),
               ISSUER_LISTEN=f"127.0.0.1:{args.port}", RUST_LOG="warn")
    start = time.monotonic()
    subprocess.run([args.binary, "users", "add", USER, "--role", "user"], env=env,
                   input=PASSWORD + "\n", text=True, check=True, stdout=subprocess.DEVNULL)
    print(f"`users add` (opens and migrates the database): {time.monotonic() - start:.2f} s")

    log_path = os.path.join(data, "issuer.log")
    log = open(log_path, "w")
    issuer = subprocess.Popen([args.binary], env=env, stderr=log)
    try:
        for _ in range(200):
            try:
                if Client(args.port, timeout=1).request("GET", "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("the issuer did not start; see " + log_path)

        table = phase(args.port, args, "idle")

        stop, results = multiprocessing.Event(), multiprocessing.Queue()
        loads = multiprocessing.Process(
            target=loader, daemon=True,
            args=(args.port, args.loop_path, args.loops, args.loader_nice, stop, results))
        loops_start = time.monotonic()
        loads.start()
        time.sleep(args.warmup)
        table += phase(args.port, args, f"{args.loops} loops")
        stop.set()
        counts = results.get(timeout=90)
        loads.join(timeout=10)
        loops_time = time.monotonic() - loops_start
    finally:
        issuer.terminate()
        issuer.wait(timeout=10)
        log.close()

    print()
    print(f"{'phase / request':<36} {'n':>4} {'median ms':>10} {'p99 ms':>9} "
          f"{'max ms':>9} {'failed':>7}")
    for name, times, failed in table:
        if not times:
            print(f"{name:<36} {0:>4}")
            continue
        print(f"{name:<36} {len(times):>4} {statistics.median(times) * 1000:>10.1f} "
              f"{percentile(times, 99) * 1000:>9.1f} {max(times) * 1000:>9.1f} {failed:>7}")
    total = sum(counts.values())
    print()
    print(f"loops: {args.loops} x GET {args.loop_path} for {loops_time:.0f} s: {total} requests "
          f"({total / loops_time:.0f}/s); " +
          ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=str)))
    errors = [line for line in open(log_path) if "ERROR" in line or "WARN" in line]
    print(f"issuer log: {len(errors)} warnings/errors" +
          (f", first: {errors[0].strip()}" if errors else ""))
    print(f"load average: {os.getloadavg()[0]:.2f} (2 cores shared with other work)"
          if os.cpu_count() == 2 else f"load average: {os.getloadavg()[0]:.2f}")
    if not args.keep:
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    main()
