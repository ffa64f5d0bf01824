"""Step 10: dbt MetricFlow projects served by kpitables.

MetricFlow's own sample project (shipped by the PyPI package dbt-metricflow under
dbt_metricflow/cli/sample_dbt_models/) is imported with `kpitables import metricflow`
and served on its seed files (embedded engine) and from PostgreSQL. A set of its
questions (metrics x group-bys x grains x filters) is answered three ways and compared:

- kpitables, as SQL over the generated views, with MetricFlow's column names;
- a hand-written SQL query over the seed CSVs in DuckDB (the ground truth);
- MetricFlow itself (`mf query`'s engine through dbt-duckdb, one process for all).

What the import cannot map is reported per item and makes it fail unless
--allow-partial; serving the project directory directly imports it at load.
"""

import json
import math
import os
import pathlib
import shutil
import subprocess

import duckdb
import psycopg
import pytest

from conftest import BIN, ROOT, Kpitables

MF_VENV = pathlib.Path(os.environ.get("KPITABLES_MF_VENV", pathlib.Path.home() / ".cache/kpitables/mf-venv"))
MF_PYTHON = MF_VENV / "bin" / "python"
HERE = pathlib.Path(__file__).parent


def package_dir() -> pathlib.Path:
    out = subprocess.run(
        [str(MF_PYTHON), "-c", "import dbt_metricflow.cli as c, pathlib; print(pathlib.Path(c.__file__).parent)"],
        capture_output=True, text=True, check=True,
    )
    return pathlib.Path(out.stdout.strip())


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tutorial project `mf tutorial` generates: dbt project, sample models and seeds,
    built with `dbt build` into a DuckDB file (for MetricFlow's own answers)."""
    cli = package_dir()
    root = tmp_path_factory.mktemp("mf") / "mf_tutorial_project"
    shutil.copytree(cli / "mf_tutorial_project", root)
    shutil.copytree(cli / "sample_dbt_models" / "sample_models", root / "models" / "sample_models")
    shutil.copytree(cli / "sample_dbt_models" / "seeds", root / "seeds")
    dbt_build(root)
    return root


def dbt_build(root: pathlib.Path):
    """Point the project's DuckDB profile at a file in it and `dbt build` (seeds, models,
    the semantic manifest MetricFlow reads)."""
    profiles = root / "profiles.yml"
    profiles.write_text(profiles.read_text().replace("$db_file_path", f"'{root / 'warehouse.duckdb'}'"))
    built = subprocess.run(
        [str(MF_VENV / "bin" / "dbt"), "build", "--profiles-dir", str(root), "--project-dir", str(root)],
        cwd=root, capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr


def run_import(project_dir, out, *extra):
    return subprocess.run(
        [BIN, "import", "metricflow", str(project_dir), "--out", str(out), *extra],
        cwd=ROOT, capture_output=True, text=True,
    )


def imported_server(project_dir, out, *extra):
    """Import `project_dir` into `out` (which must map completely) and serve it."""
    done = run_import(project_dir, out, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    k = Kpitables(out.parent / "kpitables.log", args=["--model", str(out)])
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def seeds_server(project, tmp_path_factory):
    yield from imported_server(project, tmp_path_factory.mktemp("mf-model") / "model")


@pytest.fixture(scope="module")
def pg_server(project, warehouses, tmp_path_factory):
    """The seeds loaded into a schema of the session's PostgreSQL warehouse, imported with
    --source postgres://... --schema."""
    pg = warehouses("postgres").server
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("DROP SCHEMA IF EXISTS mf_sample CASCADE")
        c.execute("CREATE SCHEMA mf_sample")
        c.execute("CREATE TABLE mf_sample.countries_seed (country text PRIMARY KEY, region text)")
        c.execute("CREATE TABLE mf_sample.customers_seed (id_customer text PRIMARY KEY, country text, ds date)")
        c.execute(
            "CREATE TABLE mf_sample.transactions_seed (id_transaction text PRIMARY KEY, id_order text, "
            "id_customer text, transaction_amount_usd double precision, transaction_type_name text, ds date)"
        )
        for table in ["countries_seed", "customers_seed", "transactions_seed"]:
            with c.cursor().copy(f"COPY mf_sample.{table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                copy.write((project / "seeds" / f"{table}.csv").read_bytes())
    out = tmp_path_factory.mktemp("mf-pg-model") / "model"
    yield from imported_server(project, out, "--source", pg.url, "--schema", "mf_sample")


@pytest.fixture(scope="module")
def truth(project):
    db = duckdb.connect()
    for table in ["countries", "customers", "transactions"]:
        db.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_csv('{project / 'seeds' / (table + '_seed.csv')}', header = true)"
        )
    return db


# MetricFlow questions: metrics, group-by names, where (MetricFlow templates), and the
# same question as hand-written SQL over the seeds. `view` is the kpitables view that
# offers the metrics together (one per semantic model; all_metrics for mixed ones).
NA = "c.country IN (SELECT country FROM countries WHERE region = 'NA')"
QUESTIONS = [
    dict(
        view="transactions",
        metrics=["transactions"],
        group_by=["metric_time__day"],
        truth="SELECT ds, count(*) FROM transactions GROUP BY 1",
    ),
    dict(
        view="transactions",
        metrics=["transactions", "quick_buy_transactions", "quick_buy_amount_usd"],
        group_by=["metric_time__month", "customer__customer_country"],
        truth="""SELECT date_trunc('month', t.ds), c.country, count(*),
                 sum(CASE WHEN transaction_type_name = 'quick-buy' THEN 1 ELSE 0 END),
                 sum(CASE WHEN transaction_type_name = 'quick-buy' THEN transaction_amount_usd ELSE 0 END)
                 FROM transactions t LEFT JOIN customers c USING (id_customer) GROUP BY 1, 2""",
    ),
    dict(
        view="transactions",
        metrics=["cancellation_rate", "revenue_usd", "transaction_amount"],
        group_by=["customer__country__region"],
        truth="""SELECT r.region,
                 sum(CASE WHEN transaction_type_name = 'cancellation' THEN transaction_amount_usd ELSE 0 END)
                   / sum(transaction_amount_usd),
                 sum(transaction_amount_usd)
                   - sum(CASE WHEN transaction_type_name = 'cancellation' THEN transaction_amount_usd ELSE 0 END)
                   + sum(CASE WHEN transaction_type_name = 'alteration' THEN transaction_amount_usd ELSE 0 END),
                 sum(transaction_amount_usd)
                 FROM transactions t LEFT JOIN customers c USING (id_customer)
                 LEFT JOIN countries r ON r.country = c.country GROUP BY 1""",
    ),
    dict(
        view="transactions",
        metrics=["cancellations_mx", "transaction_usd_na", "cancellations"],
        group_by=["metric_time__week"],
        truth=f"""SELECT date_trunc('week', t.ds),
                 sum(CASE WHEN c.country = 'MX' THEN
                       CASE WHEN transaction_type_name = 'cancellation' THEN transaction_amount_usd ELSE 0 END END),
                 sum(CASE WHEN {NA} THEN transaction_amount_usd END),
                 sum(CASE WHEN transaction_type_name = 'cancellation' THEN transaction_amount_usd ELSE 0 END)
                 FROM transactions t LEFT JOIN customers c USING (id_customer) GROUP BY 1""",
    ),
    dict(
        view="transactions",
        metrics=["transactions", "alterations"],
        group_by=["transaction__is_large", "transaction__quick_buy_transaction"],
        where=["{{ Dimension('country__region', entity_path=['customer']) }} = 'NA'"],
        sql_where="customer__country__region = 'NA'",
        truth=f"""SELECT transaction_amount_usd >= 30,
                 CASE WHEN transaction_type_name = 'quick-buy' THEN 'Quick Buy' ELSE 'Not Quick Buy' END,
                 count(*),
                 sum(CASE WHEN transaction_type_name = 'alteration' THEN transaction_amount_usd ELSE 0 END)
                 FROM transactions t LEFT JOIN customers c USING (id_customer) WHERE {NA} GROUP BY 1, 2""",
    ),
    dict(
        view="customers",
        metrics=["new_customers"],
        group_by=["metric_time__month", "customer__customer_country", "country__region"],
        truth="""SELECT date_trunc('month', c.ds), c.country, r.region, count(*)
                 FROM customers c LEFT JOIN countries r USING (country) GROUP BY 1, 2, 3""",
    ),
    dict(
        view="all_metrics",
        metrics=["transactions", "new_customers"],
        group_by=["metric_time__month"],
        truth="""SELECT coalesce(t.m, c.m), t.n, c.n FROM
                 (SELECT date_trunc('month', ds) AS m, count(*) AS n FROM transactions GROUP BY 1) t
                 FULL JOIN (SELECT date_trunc('month', ds) AS m, count(*) AS n FROM customers GROUP BY 1) c
                 ON t.m = c.m""",
    ),
    dict(
        view="transactions",
        metrics=["transactions"],
        group_by=["customer"],
        where=["{{ TimeDimension('metric_time', 'day') }} >= '2022-03-20'"],
        sql_where="metric_time >= '2022-03-20'",
        truth="SELECT id_customer, count(*) FROM transactions WHERE ds >= DATE '2022-03-20' GROUP BY 1",
    ),
]

# Cumulative metrics at day grain: MetricFlow answers every day of its time spine that
# has data in the window; kpitables the days with data.
CUMULATIVE = dict(
    view="transactions",
    metrics=["cumulative_transactions", "cumulative_transactions_in_last_7_days"],
    group_by=["metric_time__day"],
    # Every day from the first row to the last (the time spine), rows on the day or not;
    # a window without rows has no value.
    truth="""SELECT d.ds,
             (SELECT count(*) FROM transactions t WHERE t.ds <= d.ds),
             (SELECT nullif(count(*), 0) FROM transactions t WHERE t.ds <= d.ds AND t.ds > d.ds - INTERVAL 7 DAY)
             FROM (SELECT CAST(x AS DATE) AS ds FROM generate_series(
                 (SELECT min(ds) FROM transactions), (SELECT max(ds) FROM transactions), INTERVAL 1 DAY) AS s(x)) d""",
)


def normalize(value):
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()[:10]
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[7] == "-":
        return value[:10]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) or type(value).__name__ == "Decimal":
        return round(float(value), 6)
    return value


def rows(result):
    return sorted((tuple(normalize(v) for v in r) for r in result), key=repr)


def same(actual, expected):
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        for x, y in zip(a, e):
            if isinstance(x, float) and isinstance(y, float):
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-6), (a, e)
            else:
                assert x == y, (a, e)


def ask(server, q):
    columns = ", ".join(q["group_by"] + q["metrics"])
    keys = ", ".join(str(i + 1) for i in range(len(q["group_by"])))
    sql = f"SELECT {columns} FROM {q['view']}"
    if q.get("sql_where"):
        sql += f" WHERE {q['sql_where']}"
    sql += f" GROUP BY {keys}"
    with psycopg.connect(server.dsn, autocommit=True) as c:
        return rows(c.execute(sql).fetchall())


@pytest.fixture(scope="module")
def metricflow(project):
    """MetricFlow's answers to QUESTIONS and CUMULATIVE, from one process."""
    questions = [
        {"metrics": q["metrics"], "group_by": q["group_by"], "where": q.get("where")}
        for q in QUESTIONS + [CUMULATIVE]
    ]
    done = subprocess.run(
        [str(MF_PYTHON), str(HERE / "metricflow" / "mf_answers.py"), str(project)],
        input=json.dumps(questions), capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout)
    for q, a in zip(questions, answers):
        assert "error" not in a, (q, a)
    return answers


@pytest.mark.parametrize("index", range(len(QUESTIONS)))
def test_sample_questions_match_duckdb_and_metricflow(index, seeds_server, pg_server, truth, metricflow):
    q = QUESTIONS[index]
    expected = rows(truth.execute(q["truth"]).fetchall())
    assert expected, "the question has rows"
    # MetricFlow's answer is the same number set (its semantics, our ground truth).
    answer = metricflow[index]
    assert answer["columns"] == q["group_by"] + q["metrics"]
    same(rows(answer["rows"]), expected)
    # kpitables on the seed files and on PostgreSQL.
    same(ask(seeds_server, q), expected)
    same(ask(pg_server, q), expected)


def test_cumulative_metrics_by_day(seeds_server, pg_server, truth, metricflow):
    expected = rows(truth.execute(CUMULATIVE["truth"]).fetchall())
    ours = ask(seeds_server, CUMULATIVE)
    same(ours, expected)
    same(ask(pg_server, CUMULATIVE), expected)
    # MetricFlow has the same value on each of those days, and more days: those of its
    # time spine after the data.
    theirs = {r[0]: r for r in rows(metricflow[len(QUESTIONS)]["rows"])}
    for r in ours:
        same([theirs[r[0]]], [r])
    data_days = {r[0] for r in ours}
    assert all(day not in data_days for day in set(theirs) - data_days)
    assert len(theirs) > len(ours)


# Every day of the data's range with each cumulative metric's value (NULL where its
# window holds no row).
DAILY_WINDOWS = """SELECT d.ds,
       (SELECT nullif(count(*), 0) FROM transactions t WHERE t.ds <= d.ds) AS total,
       (SELECT nullif(count(*), 0) FROM transactions t WHERE t.ds <= d.ds AND t.ds > d.ds - INTERVAL 7 DAY) AS last_7
       FROM (SELECT CAST(x AS DATE) AS ds FROM generate_series(
           (SELECT min(ds) FROM transactions), (SELECT max(ds) FROM transactions), INTERVAL 1 DAY) AS s(x)) d"""


@pytest.mark.parametrize("grain", ["week", "month"])
@pytest.mark.parametrize("metric,column", [("cumulative_transactions", "total"),
                                           ("cumulative_transactions_in_last_7_days", "last_7")])
def test_cumulative_metrics_above_the_day_take_each_periods_first_day(
        grain, metric, column, seeds_server, pg_server, truth):
    """Above the day, MetricFlow's period_agg (first, its default) takes the first day of
    each period within the queried range whose window holds rows: kpitables'
    `period_agg = "first"`, on the seed files and pushed down to PostgreSQL, against
    DuckDB by hand (the same rows simple_manifest's sparse days check against MetricFlow
    itself in test_mf_conformance.py)."""
    expected = rows(truth.execute(
        f"""SELECT DISTINCT date_trunc('{grain}', ds),
                   first_value({column}) OVER (PARTITION BY date_trunc('{grain}', ds) ORDER BY ds)
            FROM ({DAILY_WINDOWS}) v WHERE {column} IS NOT NULL"""
    ).fetchall())
    assert expected
    q = dict(view="transactions", metrics=[metric], group_by=[f"metric_time__{grain}"])
    same(ask(seeds_server, q), expected)
    same(ask(pg_server, q), expected)


def test_saved_queries_are_views(seeds_server, truth):
    with psycopg.connect(seeds_server.dsn, autocommit=True) as c:
        got = rows(c.execute(
            "SELECT metric_time, customer__customer_country, transactions, quick_buy_transactions "
            "FROM core_transaction_metrics"
        ).fetchall())
        columns = [r[0] for r in c.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'core_transaction_metrics' "
            "ORDER BY ordinal_position"
        ).fetchall()]
    expected = rows(truth.execute(
        """SELECT t.ds, c.country, count(*), sum(CASE WHEN transaction_type_name = 'quick-buy' THEN 1 ELSE 0 END)
           FROM transactions t LEFT JOIN customers c USING (id_customer) GROUP BY 1, 2"""
    ).fetchall())
    same(got, expected)
    # MetricFlow's names: metric_time__day beside the other grains.
    assert columns[:3] == ["metric_time", "metric_time__day", "metric_time__week"]
    assert "customer__customer_country" in columns


def test_metadata_is_kept(seeds_server):
    with psycopg.connect(seeds_server.dsn, autocommit=True) as c:
        label, description = c.execute(
            "SELECT label, description FROM kp.metrics WHERE name = 'transaction_amount'"
        ).fetchone()
        assert label == "Transaction Amount (USD)"
        assert description == "The total USD value of the transaction."
        assert c.execute("SELECT label FROM kp.metrics WHERE name = 'cancellations_mx'").fetchone()[0] == "Cancellations in Mexico"


def test_report_lists_what_cannot_be_mapped(project, tmp_path):
    """A conversion metric with constant properties and an approximate percentile measure
    cannot be mapped: the import names each with file, line and reason and fails; --allow-partial
    writes the rest."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("target", "*.duckdb", "logs"))
    (copy / "models" / "sample_models" / "extra.yml").write_text(
        """semantic_models:
  - name: transaction_stats
    model: ref('transactions')
    defaults:
      agg_time_dimension: ds
    entities:
      - name: transaction_stat
        type: primary
        expr: id_transaction
    measures:
      - name: p90_amount
        agg: percentile
        expr: transaction_amount_usd
        agg_params:
          percentile: 0.9
          use_approximate_percentile: true
    dimensions:
      - name: ds
        type: time
        type_params:
          time_granularity: day
metrics:
  - name: p90_transaction_amount
    type: simple
    type_params:
      measure: p90_amount
  - name: buy_conversion
    type: conversion
    type_params:
      conversion_type_params:
        base_measure:
          name: transactions
          join_to_timespine: true
        conversion_measure: transactions
        entity: customer
"""
    )
    out = tmp_path / "model"
    failed = run_import(copy, out)
    assert failed.returncode == 1
    assert not out.exists()
    report = failed.stdout
    assert "models/sample_models/extra.yml:23: metric p90_transaction_amount:" in report, report
    assert "an approximate percentile is not mapped" in report
    assert "models/sample_models/extra.yml:27: metric buy_conversion: join_to_timespine on the base measure" in report
    assert "2 item(s) cannot be mapped" in failed.stderr
    partial = run_import(copy, out, "--allow-partial")
    assert partial.returncode == 0, partial.stdout + partial.stderr
    assert "not mapped (2)" in (out / "metricflow-import.txt").read_text()
    metrics = (out / "metrics.toml").read_text()
    assert "p90_transaction_amount" not in metrics and 'name = "revenue_usd"' in metrics
    # Serving the project directly refuses it with the same reasons, at their lines.
    check = subprocess.run([BIN, "check", str(copy)], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode != 0
    assert "extra.yml:27" in check.stdout + check.stderr


def test_serve_the_project_directly(project, truth, tmp_path):
    """`kpitables serve --model <dbt project>` imports at load, rows from its seeds."""
    k = Kpitables(tmp_path / "kpitables.log", args=["--model", str(project)])
    try:
        q = QUESTIONS[2]
        same(ask(k, q), rows(truth.execute(q["truth"]).fetchall()))
    finally:
        k.close()


# ---------------------------------------------------------------------------------------
# A project of our own (tests/clients/metricflow/shop/) with every metric type MetricFlow
# has that kpitables maps: simple metrics of every aggregation, filters through one and
# two joins, ratios (one with a filtered numerator), derived metrics (with offset_window
# by a month and by 7 days), cumulative metrics (trailing, to date, all time), a saved
# query with a where. Conversion metrics are reported as not mapped (see
# test_report_lists_what_cannot_be_mapped).


def write_shop_seeds(seeds: pathlib.Path):
    """Deterministic shop rows: 4 regions, 40 customers, 600 orders in 2024 H1, about
    1200 visits from December 2023."""
    import csv
    import datetime
    import random

    rng = random.Random(20241203)
    seeds.mkdir(parents=True, exist_ok=True)
    with open(seeds / "regions_seed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["region_id", "region_name", "country"])
        w.writerows([(1, "North", "NO"), (2, "South", "ZA"), (3, "East", "CN"), (4, "West", "US")])
    start = datetime.date(2023, 6, 1)
    with open(seeds / "customers_seed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "region_id", "segment", "signed_up_at"])
        for c in range(1, 41):
            w.writerow([c, rng.randint(1, 4), rng.choice(["consumer", "smb", "enterprise"]),
                        start + datetime.timedelta(days=rng.randint(0, 300))])
    with open(seeds / "orders_seed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["order_id", "customer_id", "ordered_at", "channel", "amount", "discount"])
        for o in range(1, 601):
            day = datetime.date(2024, 1, 1) + datetime.timedelta(days=rng.randint(0, 181))
            w.writerow([o, rng.randint(1, 40), day, rng.choice(["web", "store", "phone"]),
                        f"{rng.randint(500, 30000) / 100:.2f}", rng.choice([0, 0, 0, 5, 10])])
    # Visits: at most one per customer and day, so the latest visit before an order is
    # one visit (MetricFlow breaks ties arbitrarily, kpitables by the greatest key).
    with open(seeds / "visits_seed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["visit_id", "customer_id", "visited_at", "referrer"])
        seen = set()
        for v in range(1, 1201):
            customer = rng.randint(1, 40)
            day = datetime.date(2023, 12, 1) + datetime.timedelta(days=rng.randint(0, 200))
            if (customer, day) in seen:
                continue
            seen.add((customer, day))
            w.writerow([v, customer, day, rng.choice(["ad", "search", "direct"])])
    # Wallet snapshots: each customer's balance on a few random days a month, so
    # customers' last snapshots in a month fall on different days.
    with open(seeds / "wallets_seed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["snapshot_id", "customer_id", "snapshot_date", "balance"])
        sid = 0
        for customer in range(1, 41):
            balance = rng.randint(0, 50000)
            for day in sorted(rng.sample(range(0, 182), 12)):
                sid += 1
                balance = max(0, balance + rng.randint(-8000, 9000))
                w.writerow([sid, customer, datetime.date(2024, 1, 1) + datetime.timedelta(days=day),
                            f"{balance / 100:.2f}"])


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop") / "shop"
    shutil.copytree(HERE / "metricflow" / "shop", root)
    write_shop_seeds(root / "seeds")
    dbt_build(root)
    out = root.parent / "model"
    done = run_import(root, out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not mapped (0)" in done.stdout
    k = Kpitables(root.parent / "kpitables.log", args=["--model", str(out)])
    db = duckdb.connect()
    for table in ["orders", "customers", "regions", "visits", "wallets"]:
        db.execute(f"CREATE VIEW {table} AS SELECT * FROM read_csv('{root / 'seeds' / (table + '_seed.csv')}', header = true)")
    try:
        yield root, k, db
    finally:
        k.close()


OC = "orders o LEFT JOIN customers c USING (customer_id) LEFT JOIN regions r USING (region_id)"
DISCOUNTED = "sum(CASE WHEN discount > 0 THEN 1 ELSE 0 END)"
SHOP_QUESTIONS = [
    dict(
        view="orders",
        metrics=["revenue", "orders", "buyers", "average_order", "largest_order", "smallest_order",
                 "discounted_orders"],
        group_by=["metric_time__month", "customer__segment"],
        truth=f"""SELECT date_trunc('month', ordered_at), c.segment, sum(amount), count(order_id),
                  count(DISTINCT o.customer_id), avg(amount), max(amount), min(amount), {DISCOUNTED}
                  FROM {OC} GROUP BY 1, 2""",
    ),
    # Percentiles: exact, as PostgreSQL and DuckDB compute them.
    dict(
        view="orders",
        metrics=["median_order", "order_p90", "order_p90_listed"],
        group_by=["metric_time__month", "order__channel"],
        truth="""SELECT date_trunc('month', ordered_at), channel, percentile_cont(0.5) WITHIN GROUP (ORDER BY amount),
                  percentile_cont(0.9) WITHIN GROUP (ORDER BY amount),
                  percentile_disc(0.9) WITHIN GROUP (ORDER BY amount)
                  FROM orders GROUP BY 1, 2""",
    ),
    dict(
        view="orders",
        metrics=["enterprise_revenue", "north_revenue", "revenue_per_buyer", "online_share",
                 "revenue_minus_discounted"],
        group_by=["customer__region__region_name"],
        truth=f"""SELECT r.region_name, sum(amount) FILTER (WHERE c.segment = 'enterprise'),
                  sum(amount) FILTER (WHERE r.region_name = 'North' AND channel <> 'phone'),
                  sum(amount) / count(DISTINCT o.customer_id),
                  sum(amount) FILTER (WHERE channel = 'web') / sum(amount),
                  sum(amount) - {DISCOUNTED}
                  FROM {OC} GROUP BY 1""",
    ),
    dict(
        view="orders",
        metrics=["revenue", "revenue_month_over_month"],
        group_by=["metric_time__month"],
        more_periods=True,
        # The offset input's periods end with the data's last month (MetricFlow's with
        # its time spine).
        truth="""WITH m AS (SELECT date_trunc('month', ordered_at) AS m, sum(amount) AS r FROM orders GROUP BY 1),
                      k AS (SELECT m FROM m UNION SELECT m + INTERVAL 1 MONTH FROM m)
                 SELECT k.m, c.r, (c.r - p.r) / p.r FROM k LEFT JOIN m c ON c.m = k.m
                 LEFT JOIN m p ON p.m = k.m - INTERVAL 1 MONTH WHERE k.m <= (SELECT max(m) FROM m)""",
    ),
    dict(
        view="orders",
        metrics=["orders", "orders_week_ago"],
        group_by=["metric_time__week"],
        more_periods=True,
        truth="""WITH w AS (SELECT date_trunc('week', ordered_at) AS w, count(*) AS n FROM orders GROUP BY 1),
                      k AS (SELECT w FROM w UNION SELECT w + INTERVAL 7 DAY FROM w)
                 SELECT k.w, c.n, p.n FROM k LEFT JOIN w c ON c.w = k.w LEFT JOIN w p ON p.w = k.w - INTERVAL 7 DAY
                 WHERE k.w <= (SELECT max(w) FROM w)""",
    ),
    dict(
        view="orders",
        metrics=["orders_week_ago"],
        group_by=["metric_time__day"],
        more_periods=True,
        # An offset alone: a row for each day whose day a week before has rows, up to
        # the data's last day.
        truth="""WITH d AS (SELECT ordered_at AS d, count(*) AS n FROM orders GROUP BY 1)
                 SELECT d.d + INTERVAL 7 DAY, d.n FROM d WHERE d.d + INTERVAL 7 DAY <= (SELECT max(d) FROM d)""",
    ),
    # An offset shorter than the period: each row in the month of its day a week later,
    # up to the data's last day.
    dict(
        view="orders",
        metrics=["orders_week_ago"],
        group_by=["metric_time__month"],
        more_periods=True,
        truth="""SELECT date_trunc('month', ordered_at + INTERVAL 7 DAY), count(*) FROM orders
                 WHERE ordered_at + INTERVAL 7 DAY <= (SELECT max(ordered_at) FROM orders) GROUP BY 1""",
    ),
    # period_agg: average: a week's value is the average of its days' trailing 7 days
    # (every day of the data's range whose window holds rows).
    dict(
        view="orders",
        metrics=["orders_trailing_7_days_average"],
        group_by=["metric_time__week"],
        more_periods=True,
        truth="""WITH d AS (SELECT ordered_at AS d, count(*) AS n FROM orders GROUP BY 1),
                      s AS (SELECT CAST(x AS DATE) AS d FROM generate_series(
                              (SELECT min(d) FROM d), (SELECT max(d) FROM d), INTERVAL 1 DAY) AS s(x)),
                      w AS (SELECT s.d, sum(d.n) AS v FROM s JOIN d ON d.d <= s.d AND d.d > s.d - INTERVAL 7 DAY GROUP BY 1)
                 SELECT date_trunc('week', w.d), avg(v) FROM w GROUP BY 1""",
    ),
    # offset_to_grain: against the first day of the month the day is in; every day of
    # the data's range whose month's first day has rows (the time spine) has a row.
    dict(
        view="orders",
        metrics=["revenue", "revenue_since_month_start"],
        group_by=["metric_time__day"],
        more_periods=True,
        truth="""WITH d AS (SELECT ordered_at AS d, sum(amount) AS r FROM orders GROUP BY 1),
                      s AS (SELECT CAST(x AS DATE) AS d FROM generate_series(
                              (SELECT min(d) FROM d), (SELECT max(d) FROM d), INTERVAL 1 DAY) AS s(x)),
                      k AS (SELECT d FROM d UNION SELECT s.d FROM s JOIN d f ON f.d = date_trunc('month', s.d))
                 SELECT k.d, c.r, c.r - f.r FROM k LEFT JOIN d c ON c.d = k.d
                 LEFT JOIN d f ON f.d = date_trunc('month', k.d)""",
    ),
    dict(
        view="orders",
        metrics=["revenue_trailing_7_days", "revenue_month_to_date"],
        group_by=["metric_time__day"],
        more_periods=True,
        # Every day whose window holds rows (the time spine) up to the last row, rows on
        # the day or not.
        truth="""SELECT * FROM (SELECT d.d,
                 (SELECT sum(amount) FROM orders WHERE ordered_at <= d.d AND ordered_at > d.d - INTERVAL 7 DAY) AS t,
                 (SELECT sum(amount) FROM orders WHERE ordered_at <= d.d AND ordered_at >= date_trunc('month', d.d)) AS m
                 FROM (SELECT CAST(x AS DATE) AS d FROM generate_series(
                     (SELECT min(ordered_at) FROM orders), (SELECT max(ordered_at) FROM orders),
                     INTERVAL 1 DAY) AS s(x)) d) WHERE t IS NOT NULL OR m IS NOT NULL""",
    ),
    dict(
        view="customers",
        metrics=["signups_all_time"],
        group_by=["metric_time__day", "customer__segment"],
        more_periods=True,
        # Every day from the first signup to the last, for each segment with signups by then.
        truth="""SELECT * FROM (SELECT d.d, g.s, (SELECT count(*) FROM customers WHERE segment = g.s AND signed_up_at <= d.d) AS n
                 FROM (SELECT CAST(x AS DATE) AS d FROM generate_series(
                     (SELECT min(signed_up_at) FROM customers), (SELECT max(signed_up_at) FROM customers),
                     INTERVAL 1 DAY) AS s(x)) d
                 CROSS JOIN (SELECT DISTINCT segment AS s FROM customers) g) WHERE n > 0""",
    ),
    dict(
        view="all_metrics",
        metrics=["revenue", "signups"],
        group_by=["metric_time__quarter"],
        truth="""SELECT coalesce(o.q, c.q), o.r, c.n FROM
                 (SELECT date_trunc('quarter', ordered_at) AS q, sum(amount) AS r FROM orders GROUP BY 1) o
                 FULL JOIN (SELECT date_trunc('quarter', signed_up_at) AS q, count(*) AS n FROM customers GROUP BY 1) c
                 ON o.q = c.q""",
    ),
    dict(
        view="orders",
        metrics=["revenue", "largest_order"],
        group_by=["order__channel", "order__is_large"],
        where=["{{ TimeDimension('metric_time', 'day') }} >= '2024-03-01'",
               "{{ Dimension('customer__segment') }} = 'smb'"],
        sql_where="metric_time >= '2024-03-01' AND customer__segment = 'smb'",
        truth=f"""SELECT channel, amount >= 100, sum(amount), max(amount) FROM {OC}
                  WHERE ordered_at >= DATE '2024-03-01' AND c.segment = 'smb' GROUP BY 1, 2""",
    ),
]


# Conversion metrics by hand: each order credited to the customer's latest visit at or
# before it (within the window), counted in the groups of that visit.
def credited(window_days=None, where="TRUE"):
    window = f"AND v.visited_at > o.ordered_at - INTERVAL {window_days} DAY" if window_days else ""
    return f"""SELECT v.*, o.order_id, o.amount FROM (
                 SELECT o.order_id, o.amount, v.visit_id,
                        row_number() OVER (PARTITION BY o.order_id ORDER BY v.visited_at DESC) AS rn
                 FROM orders o JOIN visits v ON v.customer_id = o.customer_id
                   AND v.visited_at <= o.ordered_at {window} AND {where}) o
               JOIN visits v USING (visit_id) WHERE o.rn = 1"""


VC = "visits v LEFT JOIN customers c USING (customer_id)"
SHOP_QUESTIONS += [
    dict(
        view="visits",
        metrics=["visits", "visit_to_order_rate_7_days", "visit_orders", "ad_visit_buyers_30_days"],
        group_by=["metric_time__month"],
        truth=f"""WITH b AS (SELECT date_trunc('month', visited_at) AS m, count(*) AS n FROM visits GROUP BY 1),
                  c7 AS (SELECT date_trunc('month', visited_at) AS m, count(*) AS n FROM ({credited(7)}) GROUP BY 1),
                  c AS (SELECT date_trunc('month', visited_at) AS m, count(*) AS n FROM ({credited()}) GROUP BY 1),
                  ad AS (SELECT date_trunc('month', visited_at) AS m, count(DISTINCT customer_id) AS n
                         FROM ({credited(30, "v.referrer = 'ad'")}) GROUP BY 1)
                  SELECT b.m, b.n, coalesce(c7.n, 0) / b.n, coalesce(c.n, 0), coalesce(ad.n, 0)
                  FROM b LEFT JOIN c7 USING (m) LEFT JOIN c USING (m) LEFT JOIN ad USING (m)""",
    ),
    dict(
        view="visits",
        metrics=["visit_orders", "visit_to_order_rate_7_days"],
        group_by=["visit__referrer"],
        truth=f"""WITH b AS (SELECT referrer, count(*) AS n FROM visits GROUP BY 1),
                  c7 AS (SELECT referrer, count(*) AS n FROM ({credited(7)}) GROUP BY 1),
                  c AS (SELECT referrer, count(*) AS n FROM ({credited()}) GROUP BY 1)
                  SELECT b.referrer, coalesce(c.n, 0), coalesce(c7.n, 0) / b.n
                  FROM b LEFT JOIN c7 USING (referrer) LEFT JOIN c USING (referrer)""",
    ),
    dict(
        view="visits",
        metrics=["visit_to_order_rate_7_days"],
        group_by=["customer__segment"],
        where=["{{ TimeDimension('metric_time', 'day') }} >= '2024-03-01'"],
        sql_where="metric_time >= '2024-03-01'",
        truth=f"""WITH b AS (SELECT c.segment, count(*) AS n FROM {VC} WHERE visited_at >= DATE '2024-03-01' GROUP BY 1),
                  c7 AS (SELECT c.segment, count(*) AS n FROM ({credited(7)}) v LEFT JOIN customers c USING (customer_id)
                         WHERE visited_at >= DATE '2024-03-01' GROUP BY 1)
                  SELECT b.segment, coalesce(c7.n, 0) / b.n FROM b LEFT JOIN c7 USING (segment)""",
    ),
]


def test_own_project_every_metric_type(shop):
    """Each question on the shop project: kpitables equals DuckDB by hand, and so does
    MetricFlow (which has more periods for offsets and cumulative metrics: those of its
    time spine; on ours it agrees)."""
    root, k, db = shop
    questions = [{"metrics": q["metrics"], "group_by": q["group_by"], "where": q.get("where")}
                 for q in SHOP_QUESTIONS]
    questions.append({"saved_query": "web_revenue_by_region"})
    done = subprocess.run(
        [str(MF_PYTHON), str(HERE / "metricflow" / "mf_answers.py"), str(root)],
        input=json.dumps(questions), capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout)
    for q, answer in zip(SHOP_QUESTIONS, answers):
        assert "error" not in answer, (q, answer)
        expected = rows(db.execute(q["truth"]).fetchall())
        assert expected
        same(ask(k, q), expected)
        keys = len(q["group_by"])
        # MetricFlow orders the metric columns its own way: take them by name.
        order = [answer["columns"].index(c) for c in q["group_by"] + q["metrics"]]
        theirs = rows([[r[i] for i in order] for r in answer["rows"]])
        if q.get("more_periods"):
            # MetricFlow's spine ends with its time spine table (an all-time window goes
            # on to its last day), and it leaves out a period whose only metric is an
            # offset with nothing earlier: compare on the periods both answer.
            ours = {r[:keys] for r in expected}
            theirs = [r for r in theirs if r[:keys] in ours]
            answered = {r[:keys] for r in theirs}
            left_out = [r for r in expected if r[:keys] not in answered]
            assert all(v is None for r in left_out for v in r[keys:]), left_out[:3]
            expected = [r for r in expected if r[:keys] in answered]
        same(theirs, expected)
    # The saved query: a view with its where applied.
    expected = rows(db.execute(
        f"""SELECT date_trunc('month', ordered_at), r.region_name, sum(amount), count(*) FROM {OC}
            WHERE channel = 'web' GROUP BY 1, 2"""
    ).fetchall())
    with psycopg.connect(k.dsn, autocommit=True) as c:
        got = rows(c.execute(
            "SELECT metric_time__month, customer__region__region_name, revenue, orders "
            "FROM web_revenue_by_region GROUP BY 1, 2"
        ).fetchall())
    same(got, expected)
    same(rows(answers[-1]["rows"]), expected)


# Balances: MetricFlow's non_additive_dimension. The day is chosen per period of the
# queried time and per window grouping (customer), not per other group-by column.
WC = "wallets w LEFT JOIN customers c USING (customer_id)"
SHOP_QUESTIONS += [
    dict(
        view="wallets",
        metrics=["wallet_balance", "first_day_wallet_balance"],
        group_by=["metric_time__month", "customer__segment"],
        truth=f"""SELECT date_trunc('month', snapshot_date), c.segment,
                  sum(balance) FILTER (WHERE NOT EXISTS (SELECT 1 FROM wallets l WHERE l.customer_id = w.customer_id
                      AND date_trunc('month', l.snapshot_date) = date_trunc('month', w.snapshot_date)
                      AND l.snapshot_date > w.snapshot_date)),
                  sum(balance) FILTER (WHERE NOT EXISTS (SELECT 1 FROM wallets l
                      WHERE date_trunc('month', l.snapshot_date) = date_trunc('month', w.snapshot_date)
                      AND l.snapshot_date < w.snapshot_date))
                  FROM {WC} GROUP BY 1, 2""",
    ),
    dict(
        view="wallets",
        metrics=["wallet_balance", "first_day_wallet_balance"],
        group_by=["customer__segment"],
        truth=f"""SELECT c.segment,
                  sum(balance) FILTER (WHERE NOT EXISTS (SELECT 1 FROM wallets l WHERE l.customer_id = w.customer_id
                      AND l.snapshot_date > w.snapshot_date)),
                  sum(balance) FILTER (WHERE NOT EXISTS (SELECT 1 FROM wallets l WHERE l.snapshot_date < w.snapshot_date))
                  FROM {WC} GROUP BY 1""",
    ),
]

SHOP_TABLES = {
    "regions": "region_id int PRIMARY KEY, region_name varchar(20), country varchar(2)",
    "customers": "customer_id int PRIMARY KEY, region_id int, segment varchar(20), signed_up_at date",
    "orders": "order_id int PRIMARY KEY, customer_id int, ordered_at date, channel varchar(10), "
              "amount decimal(10, 2), discount int",
    "visits": "visit_id int PRIMARY KEY, customer_id int, visited_at date, referrer varchar(10)",
    "wallets": "snapshot_id int PRIMARY KEY, customer_id int, snapshot_date date, balance decimal(10, 2)",
}


@pytest.fixture(scope="module", params=["postgres", "mariadb"])
def shop_warehouse(request, shop, warehouses, tmp_path_factory):
    """The shop's seed rows in a schema (database) of the session's PostgreSQL or MariaDB
    warehouse, the project imported with --source <url> --schema mf_shop and served."""
    import csv

    root, _, _ = shop
    w = warehouses(request.param)
    data = {t: list(csv.reader(open(root / "seeds" / f"{t}_seed.csv")))
            for t in SHOP_TABLES}
    if request.param == "postgres":
        c = psycopg.connect(w.server.dsn, autocommit=True)
        c.execute("DROP SCHEMA IF EXISTS mf_shop CASCADE")
        c.execute("CREATE SCHEMA mf_shop")
        url, env, extra = w.server.url, {}, []
    else:
        c = w.server.connect()
        c.cursor().execute("DROP DATABASE IF EXISTS mf_shop")
        c.cursor().execute("CREATE DATABASE mf_shop")
        url, env = w.server.url_without_password, w.env
        extra = ["--password-env", "KPITABLES_WAREHOUSE_PASSWORD"]
    with c:
        for table, columns in SHOP_TABLES.items():
            header, *values = data[table]
            marks = ", ".join(["%s"] * len(header))
            cur = c.cursor()
            # The dbt models are `select * from {{ ref('<table>_seed') }}`: the import
            # follows them to the seeds' tables.
            cur.execute(f"CREATE TABLE mf_shop.{table}_seed ({columns})")
            cur.executemany(f"INSERT INTO mf_shop.{table}_seed VALUES ({marks})", values)
    out = tmp_path_factory.mktemp(f"shop-{request.param}") / "model"
    done = run_import(root, out, "--source", url, "--schema", "mf_shop", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    k = Kpitables(out.parent / "kpitables.log", args=["--model", str(out)], env=env)
    try:
        yield k
    finally:
        k.close()


def test_own_project_on_warehouses(shop, shop_warehouse):
    """The shop's questions pushed down to PostgreSQL and MariaDB equal DuckDB's."""
    _, _, db = shop
    for q in SHOP_QUESTIONS:
        same(ask(shop_warehouse, q), rows(db.execute(q["truth"]).fetchall()))


def test_offsets_refuse_grains_metricflow_answers_otherwise(shop):
    _, k, _ = shop
    with psycopg.connect(k.dsn, autocommit=True) as c:
        # A month back by week: MetricFlow joins each week's Monday to the day a month
        # before (seldom a Monday), which is no metric kpitables defines.
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute("SELECT metric_time__week, revenue_month_over_month FROM orders GROUP BY 1")
        assert "week grain" in str(e.value)
        assert 'metric_time__month' in e.value.diag.message_hint
        # offset_to_grain is served by day (by month MetricFlow joins the spine's months,
        # which is not the first day's rows).
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute("SELECT metric_time__month, revenue_since_month_start FROM orders GROUP BY 1")
        assert c.execute("SELECT count(*) FROM (SELECT metric_time__month, revenue FROM orders GROUP BY 1) t").fetchone()[0] == 6
