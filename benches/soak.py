#!/usr/bin/env python3
"""Soak: a mixed BI workload from many clients for a bounded time against one kpitables
on the demo model (embedded engine), reporting queries/s, latency percentiles, errors
and the server's RSS at the start, the peak, the end and 5 s later (idle).

Each client loops over one of these, picked at random per round:

- an introspection burst: 10 statements of the BI corpus (tests/bi_queries) that run
  and only read (SELECT, WITH, SHOW), as a tool sends them when it connects;
- a dashboard: 20 questions over the demo views (metrics x dimensions x filters);
- prepared statements: 10 executions of a parameterized question (server-side prepare);
- COPY: a view's rows with `COPY (SELECT ...) TO STDOUT`;
- a cancel: a statement that sleeps, cancelled by the client (57014 expected, counted
  apart).

Every 15 s the model is reloaded (SIGHUP after a label changes). Any error other than
an expected cancel is an error of the run. All clients log in as one user (a BI
tool's service account), whose `max_statements_per_user` is raised to the number of
clients (with the default 16, the extra statements would wait their turn in the queue;
the embedded engine's `max_executing_statements` still queues what runs at once).

    python3 benches/soak.py --clients 64 --seconds 300 [--bin target/release/kpitables]

Needs the demo data (`kpitables demo`) and the Python packages of tests/clients.
"""

import argparse
import json
import os
import pathlib
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))

DASHBOARD = [
    "SELECT region, revenue, orders FROM sales GROUP BY 1",
    "SELECT order_date__month, revenue FROM sales WHERE order_date >= '2024-01-01' GROUP BY 1 ORDER BY 1",
    "SELECT category, units, revenue_per_order FROM sales GROUP BY 1 ORDER BY 2 DESC",
    "SELECT channel, online_share FROM sales GROUP BY 1",
    "SELECT segment, customers FROM sales GROUP BY 1",
    "SELECT region, category, revenue FROM sales WHERE channel = 'online' GROUP BY 1, 2",
    "SELECT order_date__quarter, revenue, revenue_growth FROM sales_trends GROUP BY 1 ORDER BY 1",
    "SELECT order_date, revenue_mtd FROM sales_trends WHERE order_date BETWEEN '2024-03-01' AND '2024-03-31' ORDER BY 1",
    "SELECT region, revenue_target, revenue_attainment FROM sales_targets GROUP BY 1",
    "SELECT store_name, revenue FROM sales GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    "SELECT order_status, order_count FROM order_summary GROUP BY 1",
    "SELECT count(*) FROM sales",
    "SELECT region, gross_margin_rate FROM sales GROUP BY 1",
    "SELECT order_date__year, region, revenue FROM sales GROUP BY 1, 2",
    "SELECT category, revenue_share FROM sales GROUP BY 1",
    "SELECT product_name, units FROM sales WHERE category = 'Electronics' GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
    "SELECT region, avg_order_value FROM order_summary GROUP BY 1",
    "SELECT order_date__week, orders FROM sales WHERE order_date >= '2024-06-01' GROUP BY 1",
    "SELECT north_region, revenue FROM sales GROUP BY 1",
    "SELECT SUM(revenue) FROM (SELECT region, revenue FROM sales GROUP BY region) t",
]
PREPARED = "SELECT region, revenue FROM sales WHERE category = %s GROUP BY region"
CATEGORIES = ["Electronics", "Home", "Clothing", "Grocery", "Sports", "Beauty", "Toys", "Books"]


def corpus():
    """Statements of the BI corpus that run (those not listed in KNOWN_GAPS.txt)."""
    from test_bi_corpus import entries, known_gaps

    gaps = known_gaps()
    # Only what reads: the corpus also creates temporary tables and opens transactions,
    # state a client keeps from one burst to the next.
    reads = re.compile(r"^\s*(SELECT|WITH|SHOW)\b", re.I)
    return [sql for _, source, sql in entries() if source not in gaps and reads.match(sql)]


def rss_kb(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    import psycopg

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--bin", help="the kpitables binary (default: KPITABLES_BIN or target/debug)")
    args = parser.parse_args()
    if args.bin:
        os.environ["KPITABLES_BIN"] = str(pathlib.Path(args.bin).resolve())
    # conftest reads KPITABLES_BIN when it is imported.
    from conftest import DATA, Kpitables

    work = pathlib.Path(tempfile.mkdtemp(prefix="kpitables-soak-"))
    model = work / "model"
    shutil.copytree(ROOT / "semantic" / "demo", model)
    sources = model / "sources.toml"
    sources.write_text(re.sub(r'path = ".*"', f'path = "{DATA}"', sources.read_text()))
    # One user for every client (as a BI tool's service account): its statement limit
    # is raised to the number of clients; the other limits are the defaults.
    config = work / "kpitables.toml"
    text = (ROOT / "kpitables.toml").read_text()
    text = re.sub(r"^(model|audit_file|history_file) = .*$", "", text, flags=re.M)
    config.write_text(text + f"\n[limits]\nmax_statements_per_user = {args.clients}\n")
    k = Kpitables(work / "kpitables.log", ["--config", str(config), "--model", str(model)])
    statements = corpus()
    latencies, errors, cancels = [], [], [0]
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds

    def timed(run):
        started = time.perf_counter()
        run()
        with lock:
            latencies.append(time.perf_counter() - started)

    def client(n):
        rng = random.Random(n)
        try:
            with psycopg.connect(k.dsn, autocommit=True, application_name=f"soak-{n}") as c:
                while time.monotonic() < stop:
                    kind = rng.choice(["introspection", "dashboard", "dashboard", "prepared", "copy", "cancel"])
                    try:
                        if kind == "introspection":
                            for sql in rng.sample(statements, 10):
                                def introspect():
                                    cur = c.execute(sql)
                                    if cur.description:
                                        cur.fetchall()
                                timed(introspect)
                        elif kind == "dashboard":
                            for sql in DASHBOARD:
                                timed(lambda: c.execute(sql).fetchall())
                        elif kind == "prepared":
                            for _ in range(10):
                                timed(lambda: c.execute(PREPARED, (rng.choice(CATEGORIES),), prepare=True).fetchall())
                        elif kind == "copy":
                            def copy():
                                with c.cursor().copy("COPY (SELECT order_date, region, revenue FROM sales) TO STDOUT") as cp:
                                    for _ in cp:
                                        pass
                            timed(copy)
                        else:
                            timer = threading.Timer(0.2, c.cancel)
                            timer.start()
                            try:
                                c.execute("SELECT pg_sleep(5), region FROM sales GROUP BY region").fetchall()
                                with lock:
                                    errors.append("a cancelled statement finished")
                            except psycopg.errors.QueryCanceled:
                                with lock:
                                    cancels[0] += 1
                            finally:
                                timer.cancel()
                    except psycopg.Error as e:
                        with lock:
                            errors.append(f"{kind}: {e.sqlstate}: {str(e).splitlines()[0]}")
        except psycopg.Error as e:
            with lock:
                errors.append(f"connection: {e}")

    def reloads():
        metrics = model / "metrics.toml"
        n = 0
        while time.monotonic() < stop - 5:
            time.sleep(15)
            n += 1
            text = metrics.read_text()
            metrics.write_text(re.sub(r'(label = "销售额)[^"]*"', rf'\g<1> v{n}"', text, count=1))
            k.proc.send_signal(signal.SIGHUP)

    try:
        start_rss = rss_kb(k.proc.pid)
        peak = [start_rss]
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        threads.append(threading.Thread(target=reloads))
        started = time.monotonic()
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak.append(rss_kb(k.proc.pid))
            time.sleep(1)
        elapsed = time.monotonic() - started
        with psycopg.connect(k.dsn, autocommit=True) as c:
            reloaded = c.execute("SELECT count(*) FROM kp.changes").fetchone()[0]
        end_rss = rss_kb(k.proc.pid)
        # Idle: the server gives freed memory back once no statement has run for a
        # moment (src/server/memory.rs looks every 2 s).
        time.sleep(5)
        idle_rss = rss_kb(k.proc.pid)
        ordered = sorted(latencies)
        report = {
            "clients": args.clients,
            "seconds": round(elapsed, 1),
            "statements": len(latencies),
            "queries_per_second": round(len(latencies) / elapsed, 1),
            "latency_ms": {
                "p50": round(1000 * statistics.median(ordered), 1) if ordered else None,
                "p99": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1) if ordered else None,
            },
            "cancels": cancels[0],
            "model_changes_served": reloaded,
            "errors": len(errors),
            "first_errors": errors[:10],
            "rss_mb": {
                "start": start_rss // 1024,
                "peak": max(peak) // 1024,
                "end": end_rss // 1024,
                "idle_5s": idle_rss // 1024,
            },
            "server_alive": k.proc.poll() is None,
        }
        print(json.dumps(report, indent=2, ensure_ascii=False))
        if errors or not report["server_alive"]:
            sys.exit(1)
    finally:
        k.close()


if __name__ == "__main__":
    main()
