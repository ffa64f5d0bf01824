#!/usr/bin/env python3
"""Many sessions of one user (a BI tool's service account) asking the demo questions at
once: every statement waits its turn instead of being refused. Prints, per setting of
`max_executing_statements`: statements answered and failed, latency p50/p99 (from the
question sent to its last row, queue included), wall time, and the server's peak and
idle resident memory (VmHWM, VmRSS), next to DuckDB answering the same questions in
one process, one after the other.

    python3 benches/queue_load.py [--sessions 64] [--rounds 2] [--bin target/release/kpitables]
                             [--executing 2 --executing 64]

Needs the demo data (`kpitables demo`) and the Python packages of tests/clients.
"""

import argparse
import concurrent.futures
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from e2e_duckdb import DATA, QUERIES, ROOT, demo_duckdb, free_port, same_answer  # noqa: E402


def rss_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def serve(binary, executing, sessions):
    port = free_port()
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    text = (ROOT / "kpitables.toml").read_text()
    # The model by absolute path (the configuration is written elsewhere); no audit or
    # history files of the demo's.
    text = re.sub(r'^model = .*$', f'model = "{ROOT / "semantic" / "demo"}"', text, flags=re.M)
    text = re.sub(r'^(audit_file|history_file) = .*$', "", text, flags=re.M)
    config.write(text + f"\n[limits]\nmax_connections = {sessions + 10}\n"
                 f"max_executing_statements = {executing}\nqueue_timeout = 0\n")
    config.close()
    server = subprocess.Popen(
        [binary, "serve", "--config", config.name, "--listen", f"127.0.0.1:{port}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    dsn = f"host=127.0.0.1 port={port} user=analyst password=analyst dbname=kpitables"
    for _ in range(1200):
        if server.poll() is not None:
            sys.exit(f"kpitables exited at start (configuration {config.name})")
        try:
            psycopg.connect(dsn).close()
            break
        except psycopg.OperationalError:
            time.sleep(0.25)
    return server, dsn


def run(binary, executing, sessions, rounds, duck_truth):
    server, dsn = serve(binary, executing, sessions)
    try:
        start_rss = rss_kb(server.pid, "VmRSS")
        conns = [psycopg.connect(dsn, autocommit=True) for _ in range(sessions)]
        latencies, failures = [], []

        def session(i):
            for r in range(rounds):
                name, sql, _ = QUERIES[(i + r) % len(QUERIES)]
                started = time.perf_counter()
                try:
                    rows = conns[i].execute(sql).fetchall()
                    latencies.append(time.perf_counter() - started)
                    same_answer(name, rows, duck_truth[name])
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    failures.append(f"{name}: {e}")

        wall = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
            list(pool.map(session, range(sessions)))
        wall = time.perf_counter() - wall
        peak = rss_kb(server.pid, "VmHWM")
        for c in conns:
            c.close()
        time.sleep(6)  # the idle purge runs every 2 s once statements have ended
        idle = rss_kb(server.pid, "VmRSS")
    finally:
        server.terminate()
        server.wait()
    lat = sorted(latencies)
    p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: float("nan"))
    print(f"max_executing_statements = {executing:>3}: {len(latencies)} answered, {len(failures)} failed; "
          f"p50 {p(0.5):.2f} s, p99 {p(0.99):.2f} s, wall {wall:.1f} s; "
          f"RSS start {start_rss // 1024} MB, peak {peak // 1024} MB, idle {idle // 1024} MB")
    for f in failures[:5]:
        print("   ", f)
    return failures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bin", default=os.environ.get("KPITABLES_BIN", str(ROOT / "target" / "release" / "kpitables")))
    parser.add_argument("--executing", type=int, action="append")
    args = parser.parse_args()
    if not (DATA / "_SUCCESS").exists():
        sys.exit("no demo data: run `kpitables demo` first")
    duck = demo_duckdb()
    truth = {}
    started = time.perf_counter()
    for name, _, sql in QUERIES:
        truth[name] = duck.execute(sql).fetchall()
    duck_seconds = time.perf_counter() - started
    print(f"binary: {args.bin}; {args.sessions} sessions of one user, {args.rounds} questions each "
          f"(the {len(QUERIES)} demo questions in turn); DuckDB answers all {len(QUERIES)} once in "
          f"{duck_seconds:.2f} s")
    failed = []
    for executing in args.executing or [2, args.sessions]:
        failed += run(args.bin, executing, args.sessions, args.rounds, truth)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
