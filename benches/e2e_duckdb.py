#!/usr/bin/env python3
"""End-to-end: the same metric questions asked of kpitables (over the wire, embedded
DataFusion) and hand-written for DuckDB on the same Parquet/CSV files.

Prints the median of each over N runs and the ratio kpitables / DuckDB.

    python3 benches/e2e_duckdb.py [--runs 7] [--bin target/release/kpitables]

Needs the demo data (`kpitables demo`) and the Python packages of tests/clients.
"""

import argparse
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time

import duckdb
import psycopg

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "demo"

OK = "o.status <> 'cancelled'"
NET = "l.quantity * l.unit_price - l.discount"
# Hand-written as a person would: only the joins each question needs.
LO = "order_lines l JOIN orders o ON l.order_id = o.order_id"

QUERIES = [
    (
        "total revenue",
        "SELECT revenue FROM sales",
        f"SELECT SUM({NET}) FROM {LO} WHERE {OK}",
    ),
    (
        "revenue, orders by region",
        "SELECT region, revenue, orders FROM sales ORDER BY region",
        f"SELECT s.region, SUM({NET}), COUNT(DISTINCT l.order_id) FROM {LO} "
        f"JOIN stores s ON o.store_id = s.store_id WHERE {OK} GROUP BY 1 ORDER BY 1",
    ),
    (
        "customers by month",
        "SELECT order_date__month, customers FROM sales ORDER BY 1",
        f"SELECT date_trunc('month', o.order_date), COUNT(DISTINCT o.customer_id) FROM {LO} "
        f"WHERE {OK} GROUP BY 1 ORDER BY 1",
    ),
    (
        "units by category, online, 2024",
        "SELECT category, units FROM sales WHERE channel = 'online' AND order_date >= '2024-01-01' ORDER BY 1",
        f"SELECT p.category, SUM(l.quantity) FROM {LO} JOIN products p ON l.product_id = p.product_id "
        f"WHERE {OK} AND o.channel = 'online' AND o.order_date >= DATE '2024-01-01' GROUP BY 1 ORDER BY 1",
    ),
    (
        "avg order value by segment",
        "SELECT segment, avg_order_value FROM order_summary ORDER BY 1",
        f"SELECT c.segment, AVG(o.order_amount) FROM orders o JOIN customers c ON o.customer_id = c.customer_id "
        f"WHERE {OK} GROUP BY 1 ORDER BY 1",
    ),
    (
        "top stores by revenue",
        "SELECT store_name, revenue FROM sales ORDER BY revenue DESC LIMIT 10",
        f"SELECT s.store_name, SUM({NET}) r FROM {LO} JOIN stores s ON o.store_id = s.store_id "
        f"WHERE {OK} GROUP BY 1 ORDER BY r DESC LIMIT 10",
    ),
    (
        "customers by region, Superset wrapper",
        "SELECT region, SUM(customers) FROM (SELECT * FROM sales) AS virtual_table GROUP BY region ORDER BY 1",
        f"SELECT s.region, COUNT(DISTINCT o.customer_id) FROM {LO} JOIN stores s ON o.store_id = s.store_id "
        f"WHERE {OK} GROUP BY 1 ORDER BY 1",
    ),
    (
        "ROLLUP customers by region, channel",
        "SELECT region, channel, customers FROM sales GROUP BY ROLLUP (region, channel)",
        f"SELECT s.region, o.channel, COUNT(DISTINCT o.customer_id) FROM {LO} JOIN stores s ON o.store_id = s.store_id "
        f"WHERE {OK} GROUP BY ROLLUP (1, 2)",
    ),
    (
        "revenue growth by month, 2024",
        "SELECT order_date__month, revenue, revenue_growth FROM sales_trends "
        "WHERE order_date >= '2024-01-01' ORDER BY 1",
        f"WITH m AS (SELECT date_trunc('month', o.order_date) AS p, SUM({NET}) AS r FROM {LO} "
        f"WHERE {OK} AND o.order_date >= DATE '2023-12-01' GROUP BY 1) "
        "SELECT cur.p, cur.r, (cur.r - prev.r) / prev.r FROM m cur "
        "LEFT JOIN m prev ON prev.p = cur.p - INTERVAL '1 month' "
        "WHERE cur.p >= DATE '2024-01-01' ORDER BY 1",
    ),
    (
        "trailing 7-day revenue, June 2024",
        "SELECT order_date, revenue_trailing_7d FROM sales_trends "
        "WHERE order_date BETWEEN '2024-06-01' AND '2024-06-30' ORDER BY 1",
        f"SELECT o.order_date, SUM(SUM({NET})) OVER (ORDER BY o.order_date "
        "RANGE BETWEEN INTERVAL '6 days' PRECEDING AND CURRENT ROW) "
        f"FROM {LO} WHERE {OK} AND o.order_date BETWEEN DATE '2024-05-25' AND DATE '2024-06-30' "
        "GROUP BY 1 ORDER BY 1 OFFSET 7",
    ),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_seconds(fn, runs):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--bin", default=os.environ.get("KPITABLES_BIN", str(ROOT / "target" / "release" / "kpitables")))
    args = parser.parse_args()
    if not (DATA / "_SUCCESS").exists():
        sys.exit("no demo data: run `kpitables demo` first")

    duck = duckdb.connect()
    for name in ["order_lines", "orders", "stores", "products"]:
        duck.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{DATA / (name + '.parquet')}')")
    duck.execute(f"CREATE VIEW customers AS SELECT * FROM read_csv('{DATA / 'customers.csv'}', header = true)")

    port = free_port()
    server = subprocess.Popen(
        [args.bin, "serve", "--listen", f"127.0.0.1:{port}"], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(1200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.25)
        conn = psycopg.connect(f"host=127.0.0.1 port={port} user=analyst password=analyst dbname=kpitables", autocommit=True)
        print(f"binary: {args.bin}; runs per query: {args.runs}; DuckDB {duckdb.__version__} (threads: default)")
        print(f"{'query':34} {'kpitables ms':>13} {'duckdb ms':>10} {'ratio':>7}")
        ratios = []
        for name, ours, truth in QUERIES:
            a = sorted(map(str, conn.execute(ours).fetchall()))
            b = sorted(map(str, duck.execute(truth).fetchall()))
            assert len(a) == len(b), f"{name}: different answers"
            kp = median_seconds(lambda: conn.execute(ours).fetchall(), args.runs)
            dk = median_seconds(lambda: duck.execute(truth).fetchall(), args.runs)
            ratios.append(kp / dk)
            print(f"{name:34} {kp * 1000:13.1f} {dk * 1000:10.1f} {kp / dk:7.2f}")
        print(f"geometric mean ratio kpitables/duckdb: {statistics.geometric_mean(ratios):.2f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
