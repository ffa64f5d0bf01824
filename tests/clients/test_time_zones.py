"""Step 4: timestamps with time zone are bucketed in the session's TimeZone (as `SET
TimeZone` sets it, the way PostgreSQL does), and in the model's default otherwise (the
demo model's `[model] time_zone = "Asia/Shanghai"`).

The demo's `ordered_at` is the instant an order was placed (stored in UTC); stores take
orders from 06:00 to 20:00 Beijing time, so early orders fall on the previous day in UTC
and in Europe. Ground truth converts the instant to local time with the engine's own
`AT TIME ZONE` (DuckDB here; PostgreSQL and MariaDB in test_pushdown.py) and groups by hand.
"""

import datetime
import re
import shutil
import subprocess

import psycopg
import pytest

from conftest import DATA, ROOT, Kpitables
from test_ground_truth import assert_rows_equal, duckdb_pg_types

# Metrics over ordered_at and a view of them, added to a copy of the demo model.
ZONED_METRICS = """
[[metrics]]
name = "orders_previous_period"
base = "order_count"
time = "ordered_at"
compare = "previous_period"
show = "value"

[[metrics]]
name = "orders_month_to_date"
base = "order_count"
time = "ordered_at"
window = "month_to_date"

[[metrics]]
name = "orders_trailing_24h"
base = "order_count"
time = "ordered_at"
window = "24 hours"

[[metrics]]
name = "orders_today"
base = "order_count"
time = "ordered_at"
window = "day_to_date"

[[views]]
name = "orders_by_time"
dimensions = ["ordered_at", "region"]
metrics = ["order_count", "orders_previous_period", "orders_month_to_date", "orders_trailing_24h", "orders_today"]
"""


def zoned_model(source: "pathlib.Path", target: "pathlib.Path", data=None):
    """Copy the model in `source` to `target`, adding the metrics and view above."""
    shutil.copytree(source, target)
    if data is not None:
        sources = target / "sources.toml"
        sources.write_text(re.sub(r'path = ".*"', f'path = "{data}"', sources.read_text()))
    (target / "zoned.toml").write_text(ZONED_METRICS)
    return target


# Local time of the order in the session's zone, per engine ({zone} is filled in).
LOCAL = {
    "duckdb": "(o.ordered_at AT TIME ZONE '{zone}')",
    "postgres": "(o.ordered_at AT TIME ZONE '{zone}')",
    "mariadb": "CONVERT_TZ(o.ordered_at, @@session.time_zone, '{zone}')",
}

ORDERS_LOCAL = "SELECT {local} AS lt, o.order_date, o.store_id FROM orders o WHERE o.status <> 'cancelled'"
# Every order, cancelled ones too (a group of only cancelled orders has a count of 0).
ALL_ORDERS_LOCAL = "SELECT {local} AS lt, o.store_id, o.status FROM orders o"

# (name, session TimeZone or None for the default, our query, ground truth over `t`)
CASES = [
    (
        "orders per day in the model's default zone (Asia/Shanghai): the store's dates",
        None,
        "SELECT ordered_at__day, order_count FROM order_summary WHERE order_date BETWEEN '2024-06-17' AND '2024-06-19' ORDER BY 1",
        "SELECT date_trunc('day', t.lt), COUNT(*) FROM t WHERE t.order_date BETWEEN DATE '2024-06-17' AND DATE '2024-06-19' GROUP BY 1 ORDER BY 1",
    ),
    (
        "orders per day in UTC: the early orders move to the day before",
        "UTC",
        "SELECT ordered_at__day, order_count FROM order_summary WHERE order_date BETWEEN '2024-06-17' AND '2024-06-19' ORDER BY 1",
        "SELECT date_trunc('day', t.lt), COUNT(*) FROM t WHERE t.order_date BETWEEN DATE '2024-06-17' AND DATE '2024-06-19' GROUP BY 1 ORDER BY 1",
    ),
    (
        "orders per month in Europe/Berlin across the daylight-saving change",
        "Europe/Berlin",
        "SELECT ordered_at__month, order_count FROM order_summary WHERE order_date BETWEEN '2024-02-20' AND '2024-04-05' ORDER BY 1",
        "SELECT date_trunc('month', t.lt), COUNT(*) FROM t WHERE t.order_date BETWEEN DATE '2024-02-20' AND DATE '2024-04-05' GROUP BY 1 ORDER BY 1",
    ),
    (
        "orders per ISO week in America/New_York",
        "America/New_York",
        "SELECT ordered_at__week, order_count FROM order_summary WHERE order_date BETWEEN '2024-10-28' AND '2024-11-17' ORDER BY 1",
        "SELECT date_trunc('week', t.lt), COUNT(*) FROM t WHERE t.order_date BETWEEN DATE '2024-10-28' AND DATE '2024-11-17' GROUP BY 1 ORDER BY 1",
    ),
    (
        "CAST(ordered_at AS DATE) and EXTRACT(hour ...) are local, as in PostgreSQL",
        "UTC",
        "SELECT CAST(ordered_at AS DATE) AS d, EXTRACT(hour FROM ordered_at) AS h, order_count FROM order_summary WHERE order_date = '2024-06-01' GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT CAST(t.lt AS DATE), CAST(EXTRACT(hour FROM t.lt) AS INTEGER), COUNT(*) FROM t WHERE t.order_date = DATE '2024-06-01' GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "a filter on a day column selects the local day",
        "UTC",
        "SELECT ordered_at__day, order_count FROM order_summary WHERE ordered_at__day = '2024-06-17' GROUP BY 1",
        "SELECT date_trunc('day', t.lt), COUNT(*) FROM t WHERE t.lt >= TIMESTAMP '2024-06-17 00:00:00' AND t.lt < TIMESTAMP '2024-06-18 00:00:00' GROUP BY 1",
    ),
    (
        "previous period by local month (Europe/Berlin), the earlier month read outside the filter",
        "Europe/Berlin",
        "SELECT ordered_at__month, order_count, orders_previous_period FROM orders_by_time WHERE ordered_at__month >= '2024-03-01' AND ordered_at__month < '2024-06-01' ORDER BY 1",
        """SELECT cur.p, cur.n, prev.n
           FROM (SELECT date_trunc('month', t.lt) AS p, COUNT(*) AS n FROM t GROUP BY 1) cur
           LEFT JOIN (SELECT date_trunc('month', t.lt) AS p, COUNT(*) AS n FROM t GROUP BY 1) prev
             ON prev.p = cur.p - INTERVAL '1 month'
           WHERE cur.p >= TIMESTAMP '2024-03-01 00:00:00' AND cur.p < TIMESTAMP '2024-06-01 00:00:00' ORDER BY 1""",
    ),
    (
        "month-to-date by local day (America/New_York) across a month's first day",
        "America/New_York",
        "SELECT ordered_at__day, orders_month_to_date FROM orders_by_time WHERE ordered_at__day BETWEEN '2024-03-30' AND '2024-04-02' ORDER BY 1",
        """SELECT d.p, (SELECT COUNT(*) FROM t x WHERE x.lt >= date_trunc('month', d.p) AND x.lt < d.p + INTERVAL '1 day')
           FROM (SELECT DISTINCT date_trunc('day', t.lt) AS p FROM t
                 WHERE t.lt >= TIMESTAMP '2024-03-30 00:00:00' AND t.lt < TIMESTAMP '2024-04-03 00:00:00') d
           ORDER BY 1""",
    ),
    # Sub-daily grains (step 13): the demo's ordered_at has granularity = "minute".
    (
        "orders per hour of one day in the model's zone (the stores open 06:00 to 20:00)",
        None,
        "SELECT ordered_at__hour, order_count FROM order_summary WHERE order_date = '2024-06-17' ORDER BY 1",
        "SELECT date_trunc('hour', t.lt), COUNT(*) FROM t WHERE t.order_date = DATE '2024-06-17' GROUP BY 1 ORDER BY 1",
    ),
    (
        "orders per minute of one UTC hour, by region",
        "UTC",
        "SELECT ordered_at__minute, region, order_count FROM order_summary WHERE ordered_at__hour = '2024-06-17 03:00:00' ORDER BY 1, 2",
        """SELECT date_trunc('minute', a.lt), s.region, COUNT(CASE WHEN a.status <> 'cancelled' THEN 1 END)
           FROM a JOIN stores s ON s.store_id = a.store_id
           WHERE a.lt >= TIMESTAMP '2024-06-17 03:00:00' AND a.lt < TIMESTAMP '2024-06-17 04:00:00' GROUP BY 1, 2 ORDER BY 1, 2""",
    ),
    (
        "the previous hour's orders at hour grain (America/New_York), the hour before the filter read",
        "America/New_York",
        "SELECT ordered_at__hour, order_count, orders_previous_period FROM orders_by_time WHERE ordered_at__day = '2024-06-17' ORDER BY 1",
        """SELECT k.p, cur.n, prev.n
           FROM (SELECT date_trunc('hour', t.lt) AS p FROM t UNION SELECT date_trunc('hour', t.lt) + INTERVAL '1 hour' FROM t) k
           LEFT JOIN (SELECT date_trunc('hour', t.lt) AS p, COUNT(*) AS n FROM t GROUP BY 1) cur ON cur.p = k.p
           LEFT JOIN (SELECT date_trunc('hour', t.lt) AS p, COUNT(*) AS n FROM t GROUP BY 1) prev ON prev.p = k.p - INTERVAL '1 hour'
           WHERE k.p >= TIMESTAMP '2024-06-17 00:00:00' AND k.p < TIMESTAMP '2024-06-18 00:00:00' ORDER BY 1""",
    ),
    (
        "trailing 24 hours, month-to-date and today-so-far per hour, across a month's first day (UTC)",
        "UTC",
        "SELECT ordered_at__hour, orders_trailing_24h, orders_month_to_date, orders_today FROM orders_by_time "
        "WHERE ordered_at >= '2024-05-31 12:00:00' AND ordered_at < '2024-06-01 06:00:00' ORDER BY 1",
        """SELECT h.p,
                  (SELECT COUNT(*) FROM t x WHERE x.lt >= h.p + INTERVAL '1 hour' - INTERVAL '24 hour' AND x.lt < h.p + INTERVAL '1 hour'),
                  (SELECT COUNT(*) FROM t x WHERE x.lt >= date_trunc('month', h.p) AND x.lt < h.p + INTERVAL '1 hour'),
                  (SELECT COUNT(*) FROM t x WHERE x.lt >= date_trunc('day', h.p) AND x.lt < h.p + INTERVAL '1 hour')
           FROM (SELECT DISTINCT date_trunc('hour', a.lt) AS p FROM a
                 WHERE a.lt >= TIMESTAMP '2024-05-31 12:00:00' AND a.lt < TIMESTAMP '2024-06-01 06:00:00') h
           ORDER BY 1""",
    ),
]


def truth_sql(engine: str, zone: str, sql: str) -> str:
    """The ground truth with `t` (orders with their local time) defined for `engine`."""
    local = LOCAL[engine].format(zone=zone)
    return f"WITH t AS ({ORDERS_LOCAL.format(local=local)}), a AS ({ALL_ORDERS_LOCAL.format(local=local)}) {sql}"


def ask(dsn: str, zone, sql: str, types=False):
    """The rows (and the PostgreSQL type of each column, with `types`)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        if zone is not None:
            c.execute(f"SET TimeZone = '{zone}'")
        cur = c.execute(sql)
        rows = cur.fetchall()
        return (rows, [d.type_code for d in cur.description]) if types else rows


@pytest.fixture(scope="module")
def zoned(tmp_path_factory):
    """kpitables serving the demo model plus metrics computed per period of ordered_at."""
    tmp = tmp_path_factory.mktemp("zoned")
    model = zoned_model(ROOT / "semantic" / "demo", tmp / "model", DATA)
    k = Kpitables(tmp / "kpitables.log", ["--model", str(model)])
    try:
        yield k
    finally:
        k.close()


@pytest.mark.parametrize("name,zone,ours,truth", CASES, ids=[c[0] for c in CASES])
def test_buckets_follow_the_session_time_zone(zoned, duck, name, zone, ours, truth):
    got, types = ask(zoned.dsn, zone, ours, types=True)
    truth = duck.execute(truth_sql("duckdb", zone or "Asia/Shanghai", truth))
    assert_rows_equal(got, truth.fetchall())
    assert types == duckdb_pg_types(truth.description)


def test_a_window_per_hour_of_dates_is_refused(zoned):
    """A date has no hours: a month-to-date value per hour of order_date is 0A000."""
    with psycopg.connect(zoned.dsn, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as err:
            c.execute("SELECT date_trunc('hour', order_date), revenue_mtd FROM sales_trends WHERE order_date = '2024-06-17' GROUP BY 1")
        assert err.value.sqlstate == "0A000"
        assert "whose values are dates" in str(err.value)
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_the_zone_changes_the_answer(zoned):
    """The same question gives different days in two zones (the tests above are not
    comparing two zones that happen to agree)."""
    q = "SELECT ordered_at__day, order_count FROM order_summary WHERE order_date = '2024-06-18' ORDER BY 1"
    assert len(ask(zoned.dsn, None, q)) == 1
    assert len(ask(zoned.dsn, "UTC", q)) == 2


def test_set_show_reset_and_parameter_status(zoned):
    with psycopg.connect(zoned.dsn, autocommit=True) as c:
        assert c.execute("SHOW TimeZone").fetchone()[0] == "Asia/Shanghai"
        assert c.info.parameter_status("TimeZone") == "Asia/Shanghai"
        c.execute("SET TIME ZONE 'europe/berlin'")
        assert c.execute("SHOW TimeZone").fetchone()[0] == "Europe/Berlin"
        assert c.info.parameter_status("TimeZone") == "Europe/Berlin"
        # A timestamptz arrives with the session's offset (psycopg reads it from the text).
        at = c.execute(
            "SELECT ordered_at FROM order_summary WHERE order_date = '2024-07-01' ORDER BY 1 LIMIT 1"
        ).fetchone()[0]
        assert at.utcoffset() == datetime.timedelta(hours=2)
        c.execute("SET TIME ZONE 8")  # SQL standard: hours east of Greenwich
        assert c.execute("SHOW TimeZone").fetchone()[0] == "<+08>-08"  # as PostgreSQL
        day = c.execute(
            "SELECT ordered_at__day FROM order_summary WHERE order_date = '2024-07-01' GROUP BY 1"
        ).fetchall()
        assert day == [(datetime.datetime(2024, 7, 1),)]
        c.execute("RESET TimeZone")
        assert c.execute("SHOW TimeZone").fetchone()[0] == "Asia/Shanghai"
        c.execute("SET TIME ZONE LOCAL")
        assert c.execute("SHOW TimeZone").fetchone()[0] == "Asia/Shanghai"


def test_startup_time_zone_is_the_sessions(zoned):
    """A driver's startup TimeZone (pgJDBC sends one; libpq's `options`) is the session's
    zone and what RESET returns to."""
    with psycopg.connect(zoned.dsn, autocommit=True, options="-c TimeZone=UTC") as c:
        assert c.info.parameter_status("TimeZone") == "UTC"
        q = "SELECT ordered_at__day, order_count FROM order_summary WHERE order_date = '2024-06-18' ORDER BY 1"
        assert len(c.execute(q).fetchall()) == 2
        c.execute("SET TimeZone = 'Asia/Tokyo'")
        c.execute("RESET TimeZone")
        assert c.execute("SHOW TimeZone").fetchone()[0] == "UTC"


def test_psql_prints_timestamptz_in_the_session_zone(zoned):
    out = subprocess.run(
        ["psql", zoned.dsn, "-X", "-A", "-t", "-c", "SET TimeZone = 'America/New_York'", "-c",
         "SELECT ordered_at FROM order_summary WHERE order_date = '2024-01-10' ORDER BY 1 LIMIT 1"],
        capture_output=True, text=True, env={"PGPASSWORD": "analyst", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"SET\n2024-01-09 17:\d\d:\d\d-05\n", out.stdout), out.stdout


def test_an_unknown_zone_is_22023_with_a_hint_and_the_session_goes_on(zoned):
    with psycopg.connect(zoned.dsn, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute("SET TimeZone = 'Mars/Olympus_Mons'")
        assert e.value.sqlstate == "22023"
        assert "Mars/Olympus_Mons" in e.value.diag.message_primary
        assert "Asia/Shanghai" in e.value.diag.message_hint
        assert c.execute("SHOW TimeZone").fetchone()[0] == "Asia/Shanghai"
