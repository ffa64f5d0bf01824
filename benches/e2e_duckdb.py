#!/usr/bin/env python3
"""End-to-end: the same metric questions asked of kpitables (over the wire, embedded
DataFusion) and hand-written for DuckDB on the same Parquet/CSV files.

Prints the median of each over N runs and the ratio kpitables / DuckDB, for the demo
(retail, 1.6 M order lines) and for TPC-H at scale factor 1 (6 M line items, the model in
semantic/tpch; the files are generated with `tpchgen-cli` from PyPI when missing).

    python3 benches/e2e_duckdb.py [--runs 7] [--bin target/release/kpitables] [--no-tpch]

`--bin` may be given several times (for example builds on different allocators): each
binary answers the same questions in the same run, and the geometric means are listed
side by side at the end.

Needs the demo data (`kpitables demo`) and the Python packages of tests/clients.
"""

import argparse
import datetime
import decimal
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

# The metric kinds of step 13, listed apart so that the figure of the questions above stays
# comparable from one step to the next.
STEP13_QUERIES = [
    (
        "median and p90 order value by channel",
        "SELECT channel, median_order_value, p90_order_value FROM order_summary ORDER BY 1",
        "SELECT o.channel, percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(o.order_amount AS DOUBLE)), "
        "percentile_cont(0.9) WITHIN GROUP (ORDER BY CAST(o.order_amount AS DOUBLE)) "
        f"FROM orders o WHERE {OK} GROUP BY 1 ORDER BY 1",
    ),
    (
        "online revenue by region, calculated field",
        "SELECT region, SUM(CASE WHEN channel = 'online' THEN revenue ELSE 0 END) FROM sales GROUP BY region ORDER BY 1",
        f"SELECT s.region, SUM(CASE WHEN o.channel = 'online' THEN {NET} ELSE 0 END) FROM {LO} "
        f"JOIN stores s ON o.store_id = s.store_id WHERE {OK} GROUP BY 1 ORDER BY 1",
    ),
    (
        "YTD against last year's YTD by month, 2024",
        "SELECT order_date__month, revenue_ytd_yoy_growth FROM sales_trends "
        "WHERE order_date >= '2024-01-01' AND order_date < '2025-01-01' ORDER BY 1",
        f"WITH m AS (SELECT date_trunc('month', o.order_date) AS p, SUM({NET}) AS r FROM {LO} "
        f"WHERE {OK} AND o.order_date >= DATE '2023-01-01' AND o.order_date < DATE '2025-01-01' GROUP BY 1), "
        "c AS (SELECT p, SUM(r) OVER (PARTITION BY year(p) ORDER BY p) AS ytd FROM m) "
        "SELECT cur.p, CAST(cur.ytd - prev.ytd AS DOUBLE) / CAST(prev.ytd AS DOUBLE) FROM c cur "
        "JOIN c prev ON prev.p = cur.p - INTERVAL 1 YEAR WHERE cur.p >= DATE '2024-01-01' ORDER BY 1",
    ),
    (
        "running total on every day, sparse rows (spine)",
        "SELECT order_date, revenue_running_total FROM sales_trends WHERE region = 'West' "
        "AND channel = 'online' AND category = 'Electronics' "
        "AND order_date BETWEEN '2024-05-01' AND '2024-05-31' ORDER BY 1",
        f"WITH d AS (SELECT o.order_date AS day, SUM({NET}) AS r FROM {LO} "
        "JOIN stores s ON o.store_id = s.store_id JOIN products p ON l.product_id = p.product_id "
        f"WHERE {OK} AND s.region = 'West' AND o.channel = 'online' AND p.category = 'Electronics' "
        "AND o.order_date <= DATE '2024-05-31' GROUP BY 1), "
        "days AS (SELECT CAST(x AS DATE) AS day FROM generate_series(DATE '2024-05-01', DATE '2024-05-31', INTERVAL 1 DAY) t(x)) "
        "SELECT days.day, (SELECT SUM(r) FROM d WHERE d.day <= days.day) FROM days ORDER BY 1",
    ),
    (
        "orders per hour, one week (sub-daily grain)",
        "SELECT ordered_at__hour, order_count FROM order_summary "
        "WHERE order_date BETWEEN '2024-06-10' AND '2024-06-16' ORDER BY 1",
        "SELECT date_trunc('hour', o.ordered_at AT TIME ZONE 'Asia/Shanghai') AS h, "
        "COUNT(CASE WHEN o.status <> 'cancelled' THEN 1 END) FROM orders o "
        "WHERE o.order_date BETWEEN DATE '2024-06-10' AND DATE '2024-06-16' GROUP BY 1 ORDER BY 1",
    ),
    (
        "month-end stock by region (balance per store)",
        "SELECT region, count_date__month, stock_units FROM inventory ORDER BY 1, 2",
        "SELECT region, m, SUM(units) FROM (SELECT s.region, CAST(date_trunc('month', c.count_date) AS DATE) AS m, "
        "c.units, c.count_date, max(c.count_date) OVER (PARTITION BY date_trunc('month', c.count_date), c.store_id) AS d "
        "FROM stock_counts c JOIN stores s ON s.store_id = c.store_id) t WHERE count_date = d GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "revenue every day, zero-filled (window = period), sparse rows",
        "SELECT order_date, revenue_every_period FROM sales_trends WHERE region = 'West' "
        "AND channel = 'online' AND category = 'Electronics' "
        "AND order_date BETWEEN '2024-05-01' AND '2024-05-31' ORDER BY 1",
        f"WITH d AS (SELECT o.order_date AS day, SUM({NET}) AS r FROM {LO} "
        "JOIN stores s ON o.store_id = s.store_id JOIN products p ON l.product_id = p.product_id "
        f"WHERE {OK} AND s.region = 'West' AND o.channel = 'online' AND p.category = 'Electronics' "
        "AND o.order_date BETWEEN DATE '2024-05-01' AND DATE '2024-05-31' GROUP BY 1), "
        "days AS (SELECT CAST(x AS DATE) AS day FROM generate_series(DATE '2024-05-01', DATE '2024-05-31', INTERVAL 1 DAY) t(x)) "
        "SELECT days.day, coalesce(d.r, 0) FROM days LEFT JOIN d ON d.day = days.day ORDER BY 1",
    ),
    (
        "frequent customers' revenue by region (metric filter)",
        "SELECT region, frequent_customer_revenue FROM sales ORDER BY 1",
        f"SELECT s.region, SUM({NET}) FROM {LO} JOIN stores s ON o.store_id = s.store_id "
        "JOIN (SELECT customer_id, COUNT(*) AS n FROM orders WHERE status <> 'cancelled' GROUP BY 1) k "
        f"ON k.customer_id = o.customer_id WHERE {OK} AND k.n >= 30 GROUP BY 1 ORDER BY 1",
    ),
    (
        "Spring Festival 2024 against 2023's, by day (holiday-aligned)",
        "SELECT order_date, revenue, revenue_aligned_growth FROM sales_trends "
        "WHERE season = '春节' AND order_date__year = '2024-01-01' ORDER BY 1",
        f"WITH d AS (SELECT o.order_date AS day, SUM({NET}) AS r FROM {LO} WHERE {OK} GROUP BY 1) "
        "SELECT k.day, cur.r, CAST(cur.r - prev.r AS DOUBLE PRECISION) / CAST(prev.r AS DOUBLE PRECISION) FROM calendar k "
        "JOIN d cur ON cur.day = k.day LEFT JOIN d prev ON prev.day = k.last_year_day "
        "WHERE k.season = '春节' AND k.day >= DATE '2024-01-01' AND k.day < DATE '2025-01-01' ORDER BY 1",
    ),
    (
        "2024's retail months against the retail month before (calendar grain)",
        "SELECT retail_month, revenue, revenue_last_retail_month FROM sales_trends "
        "WHERE order_date >= '2024-01-01' AND order_date < '2025-01-01' GROUP BY 1 ORDER BY 1",
        f"WITH m AS (SELECT k.retail_month AS p, SUM({NET}) AS r FROM {LO} JOIN calendar k ON k.day = o.order_date "
        f"WHERE {OK} GROUP BY 1), q AS (SELECT retail_month AS p, lag(retail_month) OVER (ORDER BY min(day)) AS prev "
        "FROM calendar GROUP BY retail_month) "
        "SELECT cur.p, cur.r, prev.r FROM m cur JOIN q ON q.p = cur.p LEFT JOIN m prev ON prev.p = q.prev "
        "WHERE cur.p >= DATE '2024-01-01' AND cur.p < DATE '2025-01-01' ORDER BY 1",
    ),
    (
        "average stock by region and quarter",
        "SELECT region, count_date__quarter, avg_stock_units FROM inventory ORDER BY 1, 2",
        "SELECT region, q, SUM(a) FROM (SELECT s.region, CAST(date_trunc('quarter', c.count_date) AS DATE) AS q, "
        "c.store_id, AVG(c.units) AS a FROM stock_counts c JOIN stores s ON s.store_id = c.store_id "
        "GROUP BY 1, 2, 3) t GROUP BY 1, 2 ORDER BY 1, 2",
    ),
]


TPCH = ROOT / "data" / "tpch-sf1"
TPCH_TABLES = ["lineitem", "orders", "customer", "nation", "region"]
LOC = "lineitem l JOIN orders o ON l.l_orderkey = o.o_orderkey"
LOCNR = (f"{LOC} JOIN customer c ON o.o_custkey = c.c_custkey "
         "JOIN nation n ON c.c_nationkey = n.n_nationkey JOIN region r ON n.n_regionkey = r.r_regionkey")
REV = "l.l_extendedprice * (1 - l.l_discount)"
TPCH_QUERIES = [
    (
        "TPC-H Q1: pricing summary",
        "SELECT return_flag, line_status, quantity, base_price, revenue, avg_discount, line_items "
        "FROM lineitems WHERE ship_date <= '1998-09-02' ORDER BY 1, 2",
        "SELECT l_returnflag, l_linestatus, SUM(l_quantity), SUM(l_extendedprice), "
        "SUM(l_extendedprice * (1 - l_discount)), AVG(l_discount), COUNT(l_orderkey) "
        "FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "TPC-H Q5-like: revenue by nation, Asia 1994",
        "SELECT nation, revenue FROM lineitems WHERE region = 'ASIA' "
        "AND order_date >= '1994-01-01' AND order_date < '1995-01-01' ORDER BY revenue DESC",
        f"SELECT n.n_name, SUM({REV}) AS r FROM {LOCNR} WHERE r.r_name = 'ASIA' "
        "AND o.o_orderdate >= DATE '1994-01-01' AND o.o_orderdate < DATE '1995-01-01' GROUP BY 1 ORDER BY r DESC",
    ),
    (
        "TPC-H: revenue by ship mode, priority",
        "SELECT ship_mode, order_priority, revenue FROM lineitems "
        "WHERE ship_date >= '1994-01-01' AND ship_date < '1995-01-01' ORDER BY 1, 2",
        f"SELECT l.l_shipmode, o.o_orderpriority, SUM({REV}) FROM {LOC} "
        "WHERE l.l_shipdate >= DATE '1994-01-01' AND l.l_shipdate < DATE '1995-01-01' GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "TPC-H: orders by month, priority, 1995",
        "SELECT order_date__month, order_priority, orders FROM tpch_orders "
        "WHERE order_date >= '1995-01-01' AND order_date < '1996-01-01' ORDER BY 1, 2",
        "SELECT date_trunc('month', o_orderdate), o_orderpriority, COUNT(o_orderkey) FROM orders "
        "WHERE o_orderdate >= DATE '1995-01-01' AND o_orderdate < DATE '1996-01-01' GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "TPC-H: revenue growth by month, 1996",
        "SELECT order_date__month, revenue, revenue_growth FROM lineitems "
        "WHERE order_date >= '1996-01-01' AND order_date < '1997-01-01' ORDER BY 1",
        f"WITH m AS (SELECT date_trunc('month', o.o_orderdate) AS p, SUM({REV}) AS r FROM {LOC} "
        "WHERE o.o_orderdate >= DATE '1995-12-01' AND o.o_orderdate < DATE '1997-01-01' GROUP BY 1) "
        "SELECT cur.p, cur.r, (cur.r - prev.r) / prev.r FROM m cur LEFT JOIN m prev "
        "ON prev.p = cur.p - INTERVAL '1 month' WHERE cur.p >= DATE '1996-01-01' ORDER BY 1",
    ),
    (
        "TPC-H: trailing 28-day revenue, March 1997",
        "SELECT order_date, revenue_trailing_28d FROM lineitems "
        "WHERE order_date BETWEEN '1997-03-01' AND '1997-03-31' ORDER BY 1",
        f"SELECT o.o_orderdate, SUM(SUM({REV})) OVER (ORDER BY o.o_orderdate "
        "RANGE BETWEEN INTERVAL '27 days' PRECEDING AND CURRENT ROW) "
        f"FROM {LOC} WHERE o.o_orderdate BETWEEN DATE '1997-02-02' AND DATE '1997-03-31' "
        "GROUP BY 1 ORDER BY 1 OFFSET 27",
    ),
]


def demo_duckdb():
    """DuckDB over the demo's files: the ground truth of the demo questions."""
    duck = duckdb.connect()
    for name in ["order_lines", "orders", "stores", "products"]:
        duck.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{DATA / (name + '.parquet')}')")
    duck.execute(f"CREATE VIEW customers AS SELECT * FROM read_csv('{DATA / 'customers.csv'}', header = true)")
    duck.execute(f"CREATE VIEW stock_counts AS SELECT * FROM read_csv('{DATA / 'stock_counts.csv'}', header = true)")
    duck.execute(f"CREATE VIEW calendar AS SELECT * FROM read_csv('{DATA / 'calendar.csv'}', header = true)")
    return duck


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


def serve(binary, model=None):
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", *(["--model", str(model)] if model else [])],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(1200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.25)
    conn = psycopg.connect(f"host=127.0.0.1 port={port} user=analyst password=analyst dbname=kpitables", autocommit=True)
    return server, conn


def same_answer(name, ours, truth):
    """The same rows (numbers to 4 significant digits: the engines sum floats in another
    order, and an average of a decimal column has 6 decimal places on the engine, 10 on
    DuckDB)."""
    def cell(v):
        if isinstance(v, datetime.datetime) and v.tzinfo is None and v.time() == datetime.time(0):
            v = v.date()  # DuckDB's date_trunc of a date is a timestamp
        if isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool):
            return f"{float(v):.4g}"
        return str(v)

    def norm(rows):
        return sorted(tuple(cell(v) for v in row) for row in rows)
    a, b = norm(ours), norm(truth)
    assert a == b, f"{name}: different answers\n{a[:3]}\n{b[:3]}"


def compare(conn, duck, queries, runs):
    print(f"{'query':44} {'kpitables ms':>13} {'duckdb ms':>10} {'ratio':>7}")
    ratios = []
    for name, ours, truth in queries:
        same_answer(name, conn.execute(ours).fetchall(), duck.execute(truth).fetchall())
        kp = median_seconds(lambda: conn.execute(ours).fetchall(), runs)
        dk = median_seconds(lambda: duck.execute(truth).fetchall(), runs)
        ratios.append(kp / dk)
        print(f"{name:44} {kp * 1000:13.1f} {dk * 1000:10.1f} {kp / dk:7.2f}")
    print(f"geometric mean ratio kpitables/duckdb: {statistics.geometric_mean(ratios):.2f}")
    return ratios


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--bin", action="append",
                        help="a kpitables binary (several: compared in one run)")
    parser.add_argument("--no-tpch", action="store_true", help="only the demo questions")
    args = parser.parse_args()
    if not (DATA / "_SUCCESS").exists():
        sys.exit("no demo data: run `kpitables demo` first")

    duck = demo_duckdb()
    bins = args.bin or [os.environ.get("KPITABLES_BIN", str(ROOT / "target" / "release" / "kpitables"))]
    print(f"binaries: {', '.join(bins)}; runs per query: {args.runs}; DuckDB {duckdb.__version__} (threads: default)")
    summary = []
    for binary in bins:
        print(f"\n== {binary}\ndemo (semantic/demo)")
        server, conn = serve(binary)
        try:
            ratios = compare(conn, duck, QUERIES, args.runs)
            print("\nthe metric kinds of step 13 (not in the demo figure)")
            step13 = statistics.geometric_mean(compare(conn, duck, STEP13_QUERIES, args.runs))
        finally:
            server.terminate()
            server.wait()
        demo = statistics.geometric_mean(ratios)
        if args.no_tpch:
            summary.append((binary, demo, step13, None))
            continue
        if not all((TPCH / f"{t}.parquet").exists() for t in TPCH_TABLES):
            subprocess.run([os.path.join(os.path.dirname(sys.executable), "tpchgen-cli"), "parquet", "-s", "1",
                            f"--tables={','.join(TPCH_TABLES)}", f"--output-dir={TPCH}"], check=True)
        tpch = duckdb.connect()
        for name in TPCH_TABLES:
            tpch.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{TPCH / (name + '.parquet')}')")
        print("\nTPC-H scale factor 1 (semantic/tpch)")
        server, conn = serve(binary, ROOT / "semantic" / "tpch")
        try:
            tpch_ratios = compare(conn, tpch, TPCH_QUERIES, args.runs)
        finally:
            server.terminate()
            server.wait()
        summary.append((binary, demo, step13, statistics.geometric_mean(tpch_ratios)))
    print("\ngeometric mean ratio kpitables/duckdb, per binary:")
    for binary, demo, step13, tpch_mean in summary:
        tpch_text = "" if tpch_mean is None else f"; TPC-H SF1 {tpch_mean:.2f}"
        print(f"  {binary}: demo {demo:.2f}; step 13 kinds {step13:.2f}{tpch_text}")


if __name__ == "__main__":
    main()
