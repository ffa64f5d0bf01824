#!/usr/bin/env python3
"""The cost of evaluating the demo's alert rules and data quality checks, per rule, on the
embedded engine and on PostgreSQL (the demo loaded by `kpitables demo --into` into a
PostgreSQL this script starts, as the tests do).

Each run is `kpitables alerts run --at 2024-06-15 --dry-run --format json`, whose report
has each rule's evaluation time (planning and running its statements as its run-as
user); the median of `--runs` runs is printed per rule, with the whole process's time.

    python3 benches/alerts_cost.py [--runs 10] [--bin PATH]

Needs the demo data (`kpitables demo`), the PostgreSQL server and the Python packages of
tests/clients (tests/run-all.sh installs them).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "clients"))


def runs(binary, model, n, env=None):
    per_rule = {}
    wall = []
    for _ in range(n):
        started = time.perf_counter()
        done = subprocess.run(
            [binary, "alerts", "run", "--model", str(model), "--at", "2024-06-15", "--dry-run", "--format", "json"],
            cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})},
        )
        wall.append((time.perf_counter() - started) * 1000)
        report = json.loads(done.stdout)
        for rule in report["rules"]:
            assert rule["error"] is None, rule
            per_rule.setdefault(rule["rule"], []).append(rule["duration_ms"])
    return {r: statistics.median(v) for r, v in per_rule.items()}, statistics.median(wall)


def without_quality(model, tmp):
    """A copy of `model` whose tables have no quality checks (what they cost is the
    difference of the whole runs)."""
    import re
    import shutil

    copy = pathlib.Path(tmp) / "no-quality"
    shutil.copytree(model, copy)
    tables = copy / "tables.toml"
    tables.write_text(re.sub(r"^quality = .*$", "", tables.read_text(), flags=re.M))
    sources = copy / "sources.toml"
    sources.write_text(sources.read_text().replace('"../../data/demo"', f'"{ROOT / "data" / "demo"}"'))
    alerts = copy / "alerts.toml"
    alerts.write_text(alerts.read_text().split("[[alerts]]\nname = \"orders_table_quality\"")[0])
    return copy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bin", default=str(ROOT / "target" / "release" / "kpitables"))
    args = parser.parse_args()
    from warehouses import Postgres

    embedded, embedded_wall = runs(args.bin, ROOT / "semantic" / "demo", args.runs)
    pg = Postgres()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _, embedded_plain = runs(args.bin, without_quality(ROOT / "semantic" / "demo", tmp), args.runs)
            model = pathlib.Path(tmp) / "model"
            subprocess.run(
                [args.bin, "demo", "--out", str(ROOT / "data" / "demo"), "--into", pg.url, "--model-out", str(model)],
                cwd=ROOT, check=True, capture_output=True,
            )
            postgres, postgres_wall = runs(args.bin, model, args.runs)
            (pathlib.Path(tmp) / "no-quality").rename(pathlib.Path(tmp) / "no-quality-files")
            _, postgres_plain = runs(args.bin, without_quality(model, tmp), args.runs)
    finally:
        pg.close()
    print(f"{'rule':32} {'embedded ms':>12} {'PostgreSQL ms':>14}")
    for rule in embedded:
        print(f"{rule:32} {embedded[rule]:12.1f} {postgres.get(rule, float('nan')):14.1f}")
    print(f"{'whole run (process, wall)':32} {embedded_wall:12.1f} {postgres_wall:14.1f}")
    print(
        f"{'the orders quality checks (diff)':32} {embedded_wall - embedded_plain:12.1f}"
        f" {postgres_wall - postgres_plain:14.1f}"
    )


if __name__ == "__main__":
    main()
