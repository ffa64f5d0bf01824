#!/usr/bin/env python3
"""End-to-end on PostgreSQL: the same metric questions asked of PostgreSQL directly
(hand-written SQL through psycopg) and of kpitables serving the same tables (the query
pushed down to that PostgreSQL), then a throughput comparison with pgbench.

Starts its own PostgreSQL (initdb + pg_ctl in a temporary directory, as in the tests),
loads the demo with `kpitables demo --into`, and prints for each question the median and
p99 latency of both and the ratio kpitables / direct; then pgbench transactions per
second at 1, 8 and 32 clients, direct and through kpitables.

    python3 benches/e2e_postgres.py [--runs 20] [--seconds 10] [--bin PATH]

Needs the demo data (`kpitables demo`), the PostgreSQL server and pgbench, and the Python
packages of tests/clients (tests/run-all.sh installs them all).
"""

import argparse
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))
sys.path.insert(0, str(ROOT / "benches"))

from e2e_duckdb import QUERIES  # noqa: E402  the same questions and hand-written SQL
from warehouses import Postgres, free_port  # noqa: E402

THROUGHPUT_OURS = "SELECT region, revenue, orders FROM sales WHERE order_date = DATE '2024-06-18' GROUP BY region;\n"
THROUGHPUT_DIRECT = (
    "SELECT s.region, SUM(CASE WHEN o.status <> 'cancelled' THEN l.quantity * l.unit_price - l.discount END), "
    "COUNT(DISTINCT CASE WHEN o.status <> 'cancelled' THEN l.order_id END) "
    "FROM order_lines l JOIN orders o ON l.order_id = o.order_id JOIN stores s ON o.store_id = s.store_id "
    "WHERE o.order_date = DATE '2024-06-18' GROUP BY s.region;\n"
)


def timings(conn, sql, runs):
    conn.execute(sql).fetchall()  # warm-up
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        conn.execute(sql).fetchall()
        out.append(time.perf_counter() - start)
    return out


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def pgbench(port, user, password, dbname, script, clients, seconds):
    env = {**os.environ, "PGPASSWORD": password}
    out = subprocess.run(
        ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-f", script,
         "-c", str(clients), "-j", str(min(clients, 4)), "-T", str(seconds), dbname],
        capture_output=True, text=True, env=env,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr + out.stdout)
    found = re.search(r"tps = ([0-9.]+)", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if failed and int(failed.group(1)) > 0:
        raise RuntimeError(out.stdout)
    return float(found.group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--bin", default=os.environ.get("KPITABLES_BIN", str(ROOT / "target" / "debug" / "kpitables")))
    args = parser.parse_args()

    pg = Postgres()
    work = pathlib.Path(tempfile.mkdtemp(prefix="kp-bench-"))
    kp = None
    try:
        model = work / "model"
        subprocess.run([args.bin, "demo", "--out", str(ROOT / "data" / "demo"), "--into", pg.url,
                        "--model-out", str(model)], check=True, cwd=ROOT)
        port = free_port()
        log = open(work / "kpitables.log", "w")
        kp = subprocess.Popen([args.bin, "serve", "--model", str(model), "--listen", f"127.0.0.1:{port}"],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        ours_dsn = f"host=127.0.0.1 port={port} user=analyst password=analyst dbname=kpitables"
        for _ in range(600):
            try:
                psycopg.connect(ours_dsn).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.1)

        print(f"PostgreSQL {pg.port}, kpitables {port} ({args.bin}); {args.runs} runs per query, after one warm-up\n")
        print(f"{'question':36} {'direct med':>10} {'p99':>8} {'kpitables med':>13} {'p99':>8} {'ratio':>6}")
        ratios = []
        with psycopg.connect(pg.dsn, autocommit=True) as direct, psycopg.connect(ours_dsn, autocommit=True) as ours:
            for name, our_sql, direct_sql in QUERIES:
                d = timings(direct, direct_sql, args.runs)
                k = timings(ours, our_sql, args.runs)
                ratio = statistics.median(k) / statistics.median(d)
                ratios.append(ratio)
                print(f"{name:36} {statistics.median(d) * 1000:8.1f}ms {p99(d) * 1000:6.1f}ms "
                      f"{statistics.median(k) * 1000:11.1f}ms {p99(k) * 1000:6.1f}ms {ratio:6.2f}")
        print(f"\ngeometric mean of the ratios: {statistics.geometric_mean(ratios):.2f}\n")

        ours_script = work / "ours.sql"
        ours_script.write_text(THROUGHPUT_OURS)
        direct_script = work / "direct.sql"
        direct_script.write_text(THROUGHPUT_DIRECT)
        print(f"pgbench, {args.seconds} s each: {THROUGHPUT_OURS.strip()}")
        print(f"{'clients':>7} {'direct tps':>11} {'kpitables tps':>14} {'ratio':>6}")
        for clients in [1, 8, 32]:
            d = pgbench(pg.port, "postgres", "", "shop", direct_script, clients, args.seconds)
            k = pgbench(port, "analyst", "analyst", "kpitables", ours_script, clients, args.seconds)
            print(f"{clients:>7} {d:11.1f} {k:14.1f} {k / d:6.2f}")
    finally:
        if kp is not None:
            kp.terminate()
            kp.wait(timeout=30)
        pg.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
