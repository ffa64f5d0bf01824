"""Step 8: the plan cache. A statement is planned once per model version, user, time zone
and SQL, and reused by repeated simple queries and by every Parse of a prepared statement;
EXPLAIN says whether the plan was cached; /metrics counts hits and misses. A cached plan
never serves what another plan would answer differently: another user's row filter,
another session's settings, a later model, the time of execution. Every answer here is
compared with DuckDB on the same files.
"""

import re
import shutil
import time

import psycopg
import pytest

from conftest import DATA, ROOT, Kpitables, free_port, wait_until
from test_ground_truth import LINES, REVENUE, assert_rows_equal
from test_operations import http_get, metric, write_config

BY_REGION = "SELECT region, revenue FROM sales ORDER BY region"
TRUTH_BY_REGION = f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1"


def dsn(k, user="exec"):
    return f"host=127.0.0.1 port={k.port} user={user} password={user} dbname=kpitables"


def cache_line(c, sql):
    """The plan cache line of EXPLAIN for `sql`."""
    lines = [r[0] for r in c.execute(f"EXPLAIN {sql}").fetchall()]
    return lines[0]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A server over a copy of the demo model (so a test can change it) with HTTP."""
    d = tmp_path_factory.mktemp("plan_cache")
    model = d / "model"
    shutil.copytree(ROOT / "semantic" / "demo", model)
    sources = model / "sources.toml"
    sources.write_text(re.sub(r'path = ".*"', f'path = "{DATA}"', sources.read_text()))
    http_port = free_port()
    k = Kpitables(d / "kpitables.log", ["--model", str(model), "--http", f"127.0.0.1:{http_port}"])
    k.http_port = http_port
    k.model = model
    try:
        yield k
    finally:
        k.close()


def test_a_repeated_statement_is_planned_once_and_counted(cached, duck):
    sql = "SELECT channel, revenue FROM sales WHERE region <> 'nowhere' ORDER BY 1"
    truth = duck.execute(
        f"SELECT o.channel, {REVENUE} FROM {LINES} WHERE s.region <> 'nowhere' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    before = http_get(cached.http_port, "/metrics")[1]
    with psycopg.connect(dsn(cached), autocommit=True) as c:
        assert cache_line(c, sql).startswith("Plan cache: miss")
        for _ in range(5):
            assert_rows_equal(c.execute(sql).fetchall(), truth)
        assert cache_line(c, sql).startswith("Plan cache: hit")
    # Another session of the same user finds it too, over the extended protocol.
    with psycopg.connect(dsn(cached), autocommit=True) as c:
        for _ in range(3):
            assert_rows_equal(c.execute(sql, prepare=True).fetchall(), truth)
    after = http_get(cached.http_port, "/metrics")[1]
    delta = lambda **l: (  # noqa: E731
        metric(after, "kpitables_plan_cache_lookups_total", **l)
        - metric(before, "kpitables_plan_cache_lookups_total", **l)
    )
    # The first EXPLAIN planned it; the five queries, the second EXPLAIN and the prepared
    # statement (one Parse) found it.
    assert delta(outcome="miss") == 1
    assert delta(outcome="hit") == 7


def test_each_user_gets_a_plan_with_their_own_rules(cached, duck):
    everyone = duck.execute(TRUTH_BY_REGION).fetchall()
    east = [r for r in everyone if r[0] == "East"]
    assert east and len(everyone) > len(east)
    with psycopg.connect(dsn(cached, "exec"), autocommit=True) as exec_, psycopg.connect(
        dsn(cached, "manager_east"), autocommit=True
    ) as manager:
        assert_rows_equal(exec_.execute(BY_REGION).fetchall(), everyone)
        assert cache_line(manager, BY_REGION).startswith("Plan cache: miss")
        assert_rows_equal(manager.execute(BY_REGION).fetchall(), east)
        assert_rows_equal(exec_.execute(BY_REGION).fetchall(), everyone)
        assert_rows_equal(manager.execute(BY_REGION).fetchall(), east)


def test_session_values_in_a_plan_are_the_asking_sessions(cached):
    sql = "SELECT current_setting('application_name') AS app, pg_backend_pid() AS pid, current_user AS u"
    seen = []
    for app, user in [("first", "exec"), ("second", "exec"), ("second", "analyst")]:
        with psycopg.connect(dsn(cached, user), autocommit=True, application_name=app) as c:
            for _ in range(2):
                got = c.execute(sql).fetchone()
                assert got == (app, c.info.backend_pid, user)
            seen.append(got)
    assert len({pid for _, pid, _ in seen}) == 3


def test_time_zone_is_part_of_the_key(cached):
    sql = "SELECT current_setting('TimeZone') AS zone, ordered_at__day, order_count FROM order_summary WHERE order_date = '2024-06-18' ORDER BY 2"
    with psycopg.connect(dsn(cached), autocommit=True) as c:
        shanghai = c.execute(sql).fetchall()
        c.execute("SET TimeZone = 'UTC'")
        assert cache_line(c, sql).startswith("Plan cache: miss")
        utc = c.execute(sql).fetchall()
        c.execute("RESET TimeZone")
        assert c.execute(sql).fetchall() == shanghai
    assert {r[0] for r in shanghai} == {"Asia/Shanghai"} and {r[0] for r in utc} == {"UTC"}
    # The demo's early orders fall on the previous day in UTC (test_time_zones.py).
    assert len(shanghai) == 1 and len(utc) == 2
    assert sum(r[2] for r in shanghai) == sum(r[2] for r in utc)


def test_the_time_of_execution_is_not_cached(cached):
    with psycopg.connect(dsn(cached), autocommit=True) as c:
        first = c.execute("SELECT now() AS t").fetchone()
        time.sleep(0.02)
        second = c.execute("SELECT now() AS t").fetchone()
        assert second[0] > first[0]


def test_a_reload_starts_an_empty_cache(cached, duck):
    units = "SELECT region, units FROM sales ORDER BY 1"
    truth = duck.execute(
        f"SELECT s.region, CAST(SUM(CASE WHEN o.status <> 'cancelled' THEN l.quantity END) AS BIGINT) FROM {LINES} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    metrics = cached.model / "metrics.toml"
    original = metrics.read_text()
    with psycopg.connect(dsn(cached), autocommit=True) as c:
        assert_rows_equal(c.execute(units).fetchall(), truth)
        assert cache_line(c, units).startswith("Plan cache: hit")
        changes = c.execute("SELECT count(*) FROM kp.changes").fetchone()[0]
        try:
            metrics.write_text(original.replace('expr = "quantity"\n', 'expr = "quantity * 2"\n', 1))
            assert wait_until(lambda: c.execute("SELECT count(*) FROM kp.changes").fetchone()[0] > changes)
            assert cache_line(c, units).startswith("Plan cache: miss")
            assert_rows_equal(c.execute(units).fetchall(), [(r, 2 * v) for r, v in truth])
        finally:
            metrics.write_text(original)
            assert wait_until(lambda: c.execute("SELECT count(*) FROM kp.changes").fetchone()[0] > changes + 1)
        assert_rows_equal(c.execute(units).fetchall(), truth)


def test_temporary_tables_bypass_the_cache(cached):
    with psycopg.connect(dsn(cached), autocommit=True) as c:
        c.execute("CREATE TEMP TABLE picked AS SELECT region FROM sales WHERE region = 'East'")
        sql = "SELECT s.region, s.revenue FROM sales s JOIN picked p ON s.region = p.region"
        assert cache_line(c, sql) == "Plan cache: not cached (the session has temporary tables)"
        assert [r[0] for r in c.execute(sql).fetchall()] == ["East"]


def test_a_statement_over_64_kb_is_not_kept(cached):
    """A thousand plans of megabyte literals would hold gigabytes (found reading the
    fuzzer's memory): such a statement is planned each time, and answers right."""
    sql = f"SELECT region, revenue FROM sales WHERE region = '{'x' * 100_000}' GROUP BY region"
    with psycopg.connect(dsn(cached), autocommit=True) as c:
        assert cache_line(c, sql) == "Plan cache: not cached (the statement is over 64 kB)"
        assert c.execute(sql).fetchall() == []
        assert cache_line(c, sql) == "Plan cache: not cached (the statement is over 64 kB)"



def test_the_kept_plans_are_bounded_by_their_size(cached):
    """A plan holds its statement several times over: a thousand plans of 20 kB
    literals held 130 MB (found by the fuzzer's hour run). Past 8 MB of kept SQL the
    least recently used plans go, whatever their count."""
    def sql(i):
        return f"SELECT region, revenue FROM sales WHERE region = '{i:04}{'x' * 40_000}' GROUP BY region"
    with psycopg.connect(dsn(cached), autocommit=True) as c:
        # 260 statements of 40 kB: 10 MB, under the 1 000 entries but over 8 MB.
        for i in range(260):
            assert c.execute(sql(i)).fetchall() == []
        assert cache_line(c, sql(259)).startswith("Plan cache: hit")
        assert cache_line(c, sql(0)).startswith("Plan cache: miss")
        assert c.execute(sql(0)).fetchall() == []

def test_the_cache_is_bounded_and_can_be_turned_off(tmp_path, duck):
    truth = duck.execute(TRUTH_BY_REGION).fetchall()
    config = write_config(tmp_path / "kpitables.toml", "[limits]\nplan_cache_entries = 2\n")
    k = Kpitables(tmp_path / "kpitables.log", ["--config", str(config)])
    try:
        with psycopg.connect(dsn(k), autocommit=True) as c:
            statements = [BY_REGION, "SELECT revenue FROM sales", "SELECT orders FROM sales"]
            for sql in statements:
                c.execute(sql).fetchall()
            # Two entries: the oldest was dropped, the two latest are kept.
            assert cache_line(c, statements[2]).startswith("Plan cache: hit")
            assert cache_line(c, statements[1]).startswith("Plan cache: hit")
            assert cache_line(c, statements[0]).startswith("Plan cache: miss")
            assert_rows_equal(c.execute(BY_REGION).fetchall(), truth)
    finally:
        k.close()
    k = Kpitables(tmp_path / "off.log", [], env={"KPITABLES_PLAN_CACHE_ENTRIES": "0"})
    try:
        with psycopg.connect(dsn(k), autocommit=True) as c:
            assert_rows_equal(c.execute(BY_REGION).fetchall(), truth)
            assert cache_line(c, BY_REGION) == "Plan cache: not cached (plan_cache_entries = 0)"
    finally:
        k.close()
