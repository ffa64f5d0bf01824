"""MetricFlow's own test model (simple_manifest, shipped in the metricflow wheel under
metricflow_semantics/test_helpers/semantic_manifest_yamls/simple_manifest/) as a dbt
project with seeded rows (tests/clients/test_mf_conformance.py).

Usage (with the Python of the virtualenv that has dbt-metricflow and dbt-duckdb):
    python simple_manifest.py OUT_DIR

Writes OUT_DIR/project (a dbt project: the manifest's YAML re-keyed into dbt's shape,
one model per table reading OUT_DIR/data/<table>.parquet, time spines) and
OUT_DIR/data (the rows, one Parquet file per table). The re-keying is done here, in
the harness: MetricFlow's manifest files are YAML documents with singular keys
(`semantic_model:`, `metric:`, `saved_query:`) and `node_relation` where a dbt
project has lists (`semantic_models:`) and `model: ref('...')`; nothing else changes.

The rows exercise what the model asks for: sparse days (bookings on about half of
the days, none for a week in February), NULL foreign keys and dimension values,
several rows per entity, balances on random days, sub-daily timestamps. Every fact
table has rows on the first and the last day of the range, so the data's range is
the time spine's range (MetricFlow bounds cumulative metrics by its spine, kpitables
by the data or the query's filter).
"""

import datetime
import json
import pathlib
import random
import re
import sys

import duckdb
import yaml

START = datetime.date(2019, 12, 1)
END = datetime.date(2021, 1, 31)
DAYS = (END - START).days + 1
STATES = ["CA", "HI", "WA", "MD", "NY", "TX", None]


def manifest_dir() -> pathlib.Path:
    import metricflow_semantics

    return (
        pathlib.Path(metricflow_semantics.__file__).parent
        / "test_helpers" / "semantic_manifest_yamls" / "simple_manifest"
    )


def day(n: int) -> datetime.date:
    return START + datetime.timedelta(days=n)


def sparse_day(rng: random.Random) -> datetime.date:
    """A day of the range, skipping 2020-02-10..2020-02-16 (a week without rows)."""
    while True:
        d = day(rng.randrange(DAYS))
        if not (datetime.date(2020, 2, 10) <= d <= datetime.date(2020, 2, 16)):
            return d


def skewed(rng: random.Random, listings: list, rare: int, p: float) -> str:
    """A listing for a row: the last `rare` listings get one with probability `p`, so some
    listings have few bookings or views and a filter on a metric per listing
    (`Metric('bookings', ['listing']) > 2`) keeps some listings and drops others."""
    return rng.choice(listings[-rare:]) if rng.random() < p else rng.choice(listings[:-rare])


def tables(rng: random.Random) -> dict:
    """table name -> (columns with DuckDB types, rows)."""
    users = [f"u{i:02d}" for i in range(1, 41)]
    listings = [f"l{i:02d}" for i in range(1, 31)]
    t = {}
    t["dim_users_latest"] = (
        [("user_id", "VARCHAR"), ("ds", "DATE"), ("home_state_latest", "VARCHAR")],
        [(u, day(rng.randrange(60)), rng.choice(STATES)) for u in users[:36]],
    )
    users_rows = []
    for u in users:
        created = day(rng.randrange(DAYS))
        base = datetime.datetime(2020, 1, 1) + datetime.timedelta(minutes=rng.randrange(3 * 24 * 60))
        archived = None if rng.random() < 0.3 else datetime.datetime(2020, 1, 1, rng.randrange(24)) + datetime.timedelta(
            days=rng.randrange(3), minutes=rng.randrange(60))
        users_rows.append((
            u, created, created, created, rng.choice(STATES),
            base + datetime.timedelta(milliseconds=rng.randrange(10**6)),
            base + datetime.timedelta(seconds=rng.randrange(10**4)),
            base + datetime.timedelta(minutes=rng.randrange(10**3)),
            archived,
        ))
    # The first and last day of the spine in created_at and in archived_at (the time
    # dimension of the archived_users measure): the data's range is the spine's.
    first = datetime.datetime.combine(START, datetime.time(7, 15))
    last = datetime.datetime.combine(END, datetime.time(22, 40))
    users_rows[0] = (users_rows[0][0], START) + users_rows[0][2:-1] + (first,)
    users_rows[1] = (users_rows[1][0], END) + users_rows[1][2:-1] + (last,)
    t["dim_users"] = (
        [("user_id", "VARCHAR"), ("created_at", "DATE"), ("ds", "DATE"), ("ds_partitioned", "DATE"),
         ("home_state", "VARCHAR"), ("last_profile_edit_ts", "TIMESTAMP"), ("bio_added_ts", "TIMESTAMP"),
         ("last_login_ts", "TIMESTAMP"), ("archived_at", "TIMESTAMP")],
        users_rows,
    )
    t["dim_listings_latest"] = (
        [("listing_id", "VARCHAR"), ("user_id", "VARCHAR"), ("created_at", "DATE"), ("country", "VARCHAR"),
         ("is_lux", "BOOLEAN"), ("capacity", "INTEGER")],
        [(l, rng.choice(users), day(rng.randrange(DAYS)) if i > 1 else [START, END][i],
          rng.choice(["us", "fr", "cote d'ivoire", None]), rng.random() < 0.3, rng.randint(1, 6))
         for i, l in enumerate(listings)],
    )
    t["dim_lux_listing_id_mapping"] = (
        [("listing_id", "VARCHAR"), ("lux_listing_id", "VARCHAR")],
        [(l, f"lux_{l}") for l in listings if rng.random() < 0.3],
    )
    t["dim_companies"] = (
        [("company_id", "VARCHAR"), ("user_id", "VARCHAR"), ("company_name", "VARCHAR")],
        [(f"c{i}", u, f"company {i}") for i, u in enumerate(users[::5])],
    )
    bookings = []
    for i in range(500):
        d = [START, END][i] if i < 2 else sparse_day(rng)
        if i >= 2 and d.day % 3 == 0 and rng.random() < 0.8:
            continue  # fewer rows on every third day: days without rows
        bookings.append((
            f"b{i:04d}", d, d, d + datetime.timedelta(days=rng.randrange(4)), rng.random() < 0.4,
            round(rng.randint(100, 100000) / 100, 2), rng.choice(users), rng.choice(users),
            None if rng.random() < 0.05 else skewed(rng, listings, 6, 0.015),
            None if rng.random() < 0.5 else rng.choice(users),
        ))
    t["fct_bookings"] = (
        [("booking_id", "VARCHAR"), ("ds", "DATE"), ("ds_partitioned", "DATE"), ("paid_at", "DATE"),
         ("is_instant", "BOOLEAN"), ("booking_value", "DOUBLE"), ("guest_id", "VARCHAR"), ("host_id", "VARCHAR"),
         ("listing_id", "VARCHAR"), ("referrer_id", "VARCHAR")],
        bookings,
    )
    t["fct_views"] = (
        [("ds", "DATE"), ("ds_partitioned", "DATE"), ("listing_id", "VARCHAR"), ("user_id", "VARCHAR")],
        [(d, d, None if rng.random() < 0.05 else skewed(rng, listings, 10, 0.1), rng.choice(users))
         for d in [START, END] + [sparse_day(rng) for _ in range(600)]],
    )
    t["fct_revenue"] = (
        [("created_at", "DATE"), ("revenue", "DOUBLE"), ("user_id", "VARCHAR")],
        [(d, round(rng.randint(100, 50000) / 100, 2), rng.choice(users))
         for d in [START, END] + [sparse_day(rng) for _ in range(300)]],
    )
    accounts = []
    for u in users[:30]:
        for _ in range(rng.randint(4, 12)):
            d = sparse_day(rng)
            accounts.append((d, d.replace(day=1), rng.choice(["checking", "savings"]),
                             round(rng.randint(0, 500000) / 100, 2), u))
    accounts += [(START, START, "checking", 100.0, users[0]), (END, END.replace(day=1), "savings", 250.5, users[1])]
    t["fct_accounts"] = (
        [("ds", "DATE"), ("ds_month", "DATE"), ("account_type", "VARCHAR"), ("account_balance", "DOUBLE"),
         ("user_id", "VARCHAR")],
        accounts,
    )
    # Visits and buys: at most one of each per user and day (MetricFlow picks among
    # ties arbitrarily, so ties would make the oracle itself uncertain).
    visits, buys, seen_v, seen_b = [], [], set(), set()
    for i in range(700):
        u, d = rng.choice(users), ([START, END][i] if i < 2 else sparse_day(rng))
        if (u, d) in seen_v:
            continue
        seen_v.add((u, d))
        session = f"s{i:04d}"
        visits.append((d, rng.choice(["fb_ad_1", "ref_id_01", "google", None]), u, session))
        if rng.random() < 0.35:
            bd = d + datetime.timedelta(days=rng.choice([0, 1, 3, 6, 10, 40]))
            if bd <= END and (u, bd) not in seen_b:
                seen_b.add((u, bd))
                buys.append((bd, bd.replace(day=1), u, session if rng.random() < 0.7 else f"x{i:04d}"))
    if (users[2], START) not in seen_b:
        buys.append((START, START, users[2], "s_first"))
    if (users[3], END) not in seen_b:
        buys.append((END, END.replace(day=1), users[3], "s_last"))
    t["fct_visits"] = (
        [("ds", "DATE"), ("referrer_id", "VARCHAR"), ("user_id", "VARCHAR"), ("session_id", "VARCHAR")],
        visits,
    )
    t["fct_buys"] = (
        [("ds", "DATE"), ("ds_month", "DATE"), ("user_id", "VARCHAR"), ("session_id", "VARCHAR")],
        buys,
    )
    t["fct_id_verifications"] = (
        [("verification_id", "VARCHAR"), ("ds", "DATE"), ("ds_partitioned", "DATE"),
         ("verification_type", "VARCHAR"), ("user_id", "VARCHAR")],
        [(f"v{i}", d, d, rng.choice(["scan", "photo", None]), rng.choice(users))
         for i, d in enumerate([START, END] + [sparse_day(rng) for _ in range(150)])],
    )
    return t


def catalog(semantic_models: list, metrics: list) -> dict:
    """metric name -> (type, semantic model of its first input, whether sub-daily)."""
    models = semantic_models
    measure_model, subdaily = {}, set()
    for sm in models:
        for m in sm.get("measures", []):
            measure_model[m["name"]] = sm["name"]
            if m.get("agg_time_dimension") == "archived_at":
                subdaily.add(m["name"])
    by_name = {m["name"]: m for m in metrics}
    for sm in models:  # create_metric: true makes a simple metric of the measure
        for m in sm.get("measures", []):
            if m.get("create_metric"):
                by_name.setdefault(m["name"], {"name": m["name"], "type": "simple", "type_params": {"measure": m["name"]}})

    def first_measure(metric):
        p = metric.get("type_params", {})
        if "measure" in p:
            return p["measure"] if isinstance(p["measure"], str) else p["measure"]["name"]
        if "numerator" in p:
            return first_measure(by_name[p["numerator"]["name"]])
        if "metrics" in p:
            return first_measure(by_name[p["metrics"][0]["name"]])
        c = p["conversion_type_params"]["base_measure"]
        return c if isinstance(c, str) else c["name"]

    out = {}
    for name, m in by_name.items():
        measure = first_measure(m)
        out[name] = (m["type"], measure_model[measure], measure in subdaily)
    return out


def saved_query(s: dict) -> dict:
    """A saved query's name, and its order_by (as SQL) and limit."""
    order = []
    for o in s["query_params"].get("order_by") or []:
        m = re.fullmatch(r"(?:TimeDimension\('(\w+)', '(\w+)'\)|Dimension\('(\w+)'\)|Metric\('(\w+)'\))"
                         r"(\.descending\((True|False)\))?", o.strip())
        column = f"{m.group(1)}__{m.group(2)}" if m.group(1) else (m.group(3) or m.group(4))
        order.append(column + (" DESC" if m.group(6) == "True" else ""))
    return {"name": s["name"], "order_by": order, "limit": s["query_params"].get("limit")}


def write_data(data: pathlib.Path, rng: random.Random):
    data.mkdir(parents=True, exist_ok=True)
    db = duckdb.connect()
    for name, (columns, rows) in tables(rng).items():
        db.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in columns)})")
        db.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' for _ in columns)})", rows)
        db.execute(f"COPY {name} TO '{data / (name + '.parquet')}' (FORMAT parquet)")


def documents(path: pathlib.Path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rekey(project: pathlib.Path, data: pathlib.Path):
    source = manifest_dir()
    models = project / "models"
    models.mkdir(parents=True, exist_ok=True)
    found = {"semantic_model": [], "metric": [], "saved_query": []}
    for f in sorted(source.rglob("*.yaml")):
        for d in documents(f):
            for key, value in d.items():
                if key in found:
                    found[key].append(value)
    semantic_models = found["semantic_model"]
    for sm in semantic_models:
        table = sm.pop("node_relation")["alias"]
        sm["model"] = f"ref('{table}')"
        (models / f"{table}.sql").write_text(f"select * from read_parquet('{data / (table + '.parquet')}')\n")
    metrics, saved = found["metric"], found["saved_query"]
    for m in metrics:
        m.setdefault("label", m["name"])  # dbt requires a label; MetricFlow's files have none
    dump = lambda obj: yaml.safe_dump(obj, sort_keys=False, allow_unicode=True)  # noqa: E731
    (project.parent / "catalog.json").write_text(json.dumps({
        "metrics": catalog(semantic_models, metrics),
        "saved_queries": [saved_query(s) for s in saved],
    }))
    (models / "semantic_models.yml").write_text(dump({"semantic_models": semantic_models}))
    (models / "metrics.yml").write_text(dump({"metrics": metrics}))
    (models / "saved_queries.yml").write_text(dump({"saved_queries": saved}))
    # Time spines: the project configuration's, as dbt time spine models; `alien_day`
    # (the custom grain) is a period of three days.
    (models / "mf_time_spine.sql").write_text(
        "{{ config(materialized = 'table') }}\n"
        "select cast(range as date) as ds,\n"
        f"  cast(date '{START}' + cast(3 * ((cast(range as date) - date '{START}') // 3) as integer) as date) as alien_day\n"
        f"from range(date '{START}', date '{END}' + interval 1 day, interval 1 day)\n"
    )
    (models / "mf_time_spine_hour.sql").write_text(
        "{{ config(materialized = 'table') }}\n"
        "select range as ts from range(timestamp '2020-01-01', timestamp '2020-01-05', interval 1 hour)\n"
    )
    (models / "time_spines.yml").write_text(dump({"models": [
        {"name": "mf_time_spine",
         "time_spine": {"standard_granularity_column": "ds",
                        "custom_granularities": [{"name": "alien_day", "column_name": "alien_day"}]},
         "columns": [{"name": "ds", "granularity": "day"}, {"name": "alien_day"}]},
        {"name": "mf_time_spine_hour",
         "time_spine": {"standard_granularity_column": "ts"},
         "columns": [{"name": "ts", "granularity": "hour"}]},
    ]}))
    (project / "dbt_project.yml").write_text(dump({
        "name": "simple_manifest", "version": "1.0.0", "config-version": 2,
        "profile": "simple_manifest", "model-paths": ["models"],
    }))
    (project / "profiles.yml").write_text(dump({"simple_manifest": {
        "target": "dev",
        "outputs": {"dev": {"type": "duckdb", "path": str(project / "warehouse.duckdb")}},
    }}))


def main():
    out = pathlib.Path(sys.argv[1]).resolve()
    write_data(out / "data", random.Random(20191201))
    rekey(out / "project", out / "data")


if __name__ == "__main__":
    main()
