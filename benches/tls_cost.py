#!/usr/bin/env python3
"""What TLS costs: one kpitables server with `tls = "allow"` on the demo model, asked the
same things over plaintext and over TLS (sslmode=require, TLS 1.3), interleaved in one run:

- per query: the median and p99 latency of `SELECT 1` and of a small metric question on
  one open connection;
- per connection: connect (startup, SCRAM, TLS handshake), `SELECT 1`, close;
- memory: the server's RSS with 200 idle TLS sessions open, against its RSS before.

Prints each figure and the ratio TLS/plain.

    python3 benches/tls_cost.py [--runs 300] [--bin ~/.cache/kpitables/target/release/kpitables]

Needs the demo data (`kpitables demo`), openssl, and the Python packages of tests/clients.
"""

import argparse
import os
import pathlib
import re
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
    ("SELECT 1", "SELECT 1"),
    ("revenue on one day by region", "SELECT region, revenue FROM sales WHERE order_date = DATE '2024-06-18'"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def certificates(work):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.crt",
        "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost")
    return work / "server.crt", work / "server.key"


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


def rss_mb(pid):
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def pct(times, p):
    times = sorted(times)
    return times[min(len(times) - 1, int(len(times) * p))] * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--bin", default=os.environ.get("KPITABLES_BIN", str(ROOT / "target" / "release" / "kpitables")))
    args = parser.parse_args()
    if not (DATA / "_SUCCESS").exists():
        sys.exit("no demo data: run `kpitables demo` first")

    work = pathlib.Path(tempfile.mkdtemp(prefix="kp-tls-"))
    cert, key = certificates(work)
    text = (ROOT / "kpitables.toml").read_text()
    text = re.sub(r'^model = .*$', f'model = "{ROOT / "semantic" / "demo"}"', text, flags=re.M)
    text = re.sub(r'^(audit_file|history_file) = .*$', "", text, flags=re.M)
    config = work / "kpitables.toml"
    config.write_text(
        text + f'\n[tls]\nmode = "allow"\ncert = "{cert}"\nkey = "{key}"\n'
        f"\n[limits]\nmax_connections = {args.sessions + 20}\n"
    )
    server, port = start(args.bin, config)
    base = f"host=localhost hostaddr=127.0.0.1 port={port} user=exec password=exec dbname=kpitables"
    modes = {"plain": base + " sslmode=disable", "tls": base + " sslmode=require"}
    try:
        with psycopg.connect(modes["tls"]) as c:
            assert c.pgconn.ssl_in_use
        print(f"kpitables {args.bin}, {args.runs} runs each, plaintext and TLS interleaved\n")
        print(f"{'':34} {'plain p50':>10} {'tls p50':>10} {'ratio':>6} {'plain p99':>10} {'tls p99':>10}")
        conns = {m: psycopg.connect(d, autocommit=True) for m, d in modes.items()}
        for label, sql in QUERIES:
            times = {m: [] for m in modes}
            for c in conns.values():
                for _ in range(20):
                    c.execute(sql).fetchall()
            for _ in range(args.runs):
                for m, c in conns.items():
                    t = time.perf_counter()
                    c.execute(sql).fetchall()
                    times[m].append(time.perf_counter() - t)
            p, s = pct(times["plain"], 0.5), pct(times["tls"], 0.5)
            print(f"{'query: ' + label:34} {p:9.3f}ms {s:9.3f}ms {s / p:5.2f}x "
                  f"{pct(times['plain'], 0.99):9.3f}ms {pct(times['tls'], 0.99):9.3f}ms")
        for c in conns.values():
            c.close()

        times = {m: [] for m in modes}
        for _ in range(max(20, args.runs // 3)):
            for m, d in modes.items():
                t = time.perf_counter()
                with psycopg.connect(d, autocommit=True) as c:
                    c.execute("SELECT 1").fetchall()
                times[m].append(time.perf_counter() - t)
        p, s = pct(times["plain"], 0.5), pct(times["tls"], 0.5)
        print(f"{'connect + SELECT 1 + close':34} {p:9.3f}ms {s:9.3f}ms {s / p:5.2f}x "
              f"{pct(times['plain'], 0.99):9.3f}ms {pct(times['tls'], 0.99):9.3f}ms")

    finally:
        server.terminate()
        server.wait(timeout=60)

    # Memory on a fresh server, so nothing freed by the runs above hides what sessions hold.
    server, port = start(args.bin, config)
    base = f"host=localhost hostaddr=127.0.0.1 port={port} user=exec password=exec dbname=kpitables"
    try:
        with psycopg.connect(base + " sslmode=require", autocommit=True) as c:
            c.execute("SELECT region, revenue FROM sales").fetchall()
        time.sleep(1)
        before = rss_mb(server.pid)
        idle = [psycopg.connect(base + " sslmode=require", autocommit=True) for _ in range(args.sessions)]
        for c in idle:
            c.execute("SELECT 1").fetchall()
        time.sleep(1)
        after = rss_mb(server.pid)
        print(f"\nRSS of a fresh server: {before:.1f} MB after one query, {after:.1f} MB with "
              f"{args.sessions} idle TLS sessions (+{after - before:.1f} MB, "
              f"{(after - before) * 1024 / args.sessions:.0f} kB per session)")
        for c in idle:
            c.close()
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
