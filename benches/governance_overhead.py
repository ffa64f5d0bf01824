#!/usr/bin/env python3
"""What governance costs per statement: the same questions asked of two kpitables servers
on the demo model, one with the audit trail and model history written to files (the demo
configuration) and one without them, by a user with a row filter (`manager_east`) and by
one without (`exec`).

Prints the median latency of each over N runs and the ratios.

    python3 benches/governance_overhead.py [--runs 200] [--bin target/release/kpitables]

Needs the demo data (`kpitables demo`) and the Python packages of tests/clients.
"""

import argparse
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "demo"

QUERIES = [
    ("catalog: one kp.metrics row", "SELECT name FROM kp.metrics WHERE name = 'revenue'"),
    ("revenue by region", "SELECT region, revenue FROM sales ORDER BY region"),
    ("orders on one day", "SELECT revenue, orders FROM sales WHERE order_date = DATE '2024-06-18'"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, config):
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--config", str(config)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(1200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            if server.poll() is not None:
                sys.exit("kpitables did not start")
            time.sleep(0.25)
    sys.exit("kpitables did not start in time")


def median_ms(conn, sql, runs):
    conn.execute(sql).fetchall()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        conn.execute(sql).fetchall()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--bin", default=os.environ.get("KPITABLES_BIN", str(ROOT / "target" / "release" / "kpitables")))
    args = parser.parse_args()
    if not (DATA / "_SUCCESS").exists():
        sys.exit("no demo data: run `kpitables demo` first")

    work = pathlib.Path(tempfile.mkdtemp(prefix="kp-governance-"))
    demo = (ROOT / "kpitables.toml").read_text()
    model = ROOT / "semantic" / "demo"
    with_files = work / "with.toml"
    with_files.write_text(
        demo.replace('model = "semantic/demo"', f'model = "{model}"')
        .replace('"data/audit/', f'"{work}/')
    )
    without = work / "without.toml"
    without.write_text(
        "\n".join(
            line for line in with_files.read_text().splitlines()
            if not line.startswith(("audit_file", "history_file"))
        )
    )
    servers = [start(args.bin, with_files), start(args.bin, without)]
    try:
        print(f"binary: {args.bin}; runs per query: {args.runs}")
        print(f"{'query':30} {'user':13} {'audited ms':>11} {'not ms':>8} {'ratio':>6}")
        ratios = []
        for user in ["exec", "manager_east"]:
            conns = [
                psycopg.connect(f"host=127.0.0.1 port={port} user={user} password={user} dbname=kpitables",
                                autocommit=True)
                for _, port in servers
            ]
            for name, sql in QUERIES:
                audited, plain = (median_ms(c, sql, args.runs) for c in conns)
                ratios.append(audited / plain)
                print(f"{name:30} {user:13} {audited:11.2f} {plain:8.2f} {audited / plain:6.2f}")
        print(f"geometric mean ratio audited/not: {statistics.geometric_mean(ratios):.2f}")
        audit_lines = sum(1 for _ in open(work / "kpitables-audit.jsonl"))
        print(f"audit lines written: {audit_lines}")
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
