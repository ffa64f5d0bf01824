"""Step 3: metric queries pushed down to real warehouses.

For each warehouse (a PostgreSQL and a MariaDB server started by the harness, see
warehouses.py, started and loaded once per test session by conftest.warehouses) the demo
is loaded with `kpitables demo --into URL --model-out DIR`, and kpitables serves that
model. Every metric question of the step-1 suite is then asked
through kpitables and compared with a hand-written SQL query run directly on the same
server. Other tests read what the warehouse received (its statement log) and check
failures: the warehouse stopped and started again mid-session, a statement the
warehouse refuses, a client cancel.
"""

import datetime
import decimal
import json
import re
import shutil
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from conftest import Kpitables, free_port, wait_until
from test_copy import copy_bytes
from test_ground_truth import CASES, FLOAT_TOLERANCE, LINES, ORDERS_DISTINCT, REVENUE, assert_rows_equal, duckdb_pg_types
from test_grain import GROUPING_CASES, JOIN_CASES, LITERAL_CASES, WRAPPER_CASES
from test_metric_kinds import CASES as KIND_CASES, PERCENTILE_CASES, PERCENTILE_TOLERANCE
from test_time_zones import CASES as ZONE_CASES
from test_time_zones import ask, truth_sql, zoned_model

GRAINS = {
    "year": "CAST(DATE_FORMAT({x}, '%Y-01-01') AS DATETIME)",
    "quarter": "CAST(MAKEDATE(YEAR({x}), 1) + INTERVAL (QUARTER({x}) - 1) QUARTER AS DATETIME)",
    "month": "CAST(DATE_FORMAT({x}, '%Y-%m-01') AS DATETIME)",
    "week": "CAST(DATE({x}) - INTERVAL WEEKDAY({x}) DAY AS DATETIME)",
    "day": "CAST(DATE({x}) AS DATETIME)",
    "hour": "CAST(DATE_FORMAT({x}, '%Y-%m-%d %H:00:00') AS DATETIME)",
    "minute": "CAST(DATE_FORMAT({x}, '%Y-%m-%d %H:%i:00') AS DATETIME)",
}


def mysql_sql(sql: str) -> str:
    """A hand-written PostgreSQL ground-truth query in MySQL spelling: date_trunc is not
    a MySQL function, intervals are written `INTERVAL 1 MONTH`, the float type is DOUBLE,
    integer casts are SIGNED."""
    sql = re.sub(
        r"date_trunc\('(\w+)', ([\w.]+)\)",
        lambda m: GRAINS[m.group(1)].format(x=m.group(2)),
        sql,
    )
    sql = re.sub(r"INTERVAL '(\d+) (\w+)'", lambda m: f"INTERVAL {m.group(1)} {m.group(2).upper()}", sql)
    sql = re.sub(r"\bAS (BIGINT|INTEGER)\)", "AS SIGNED)", sql)
    sql = sql.replace("AS TIMESTAMP)", "AS DATETIME)")
    return sql.replace("DOUBLE PRECISION", "DOUBLE")


class Warehouse:
    """The session's warehouse of one kind (conftest.warehouses: started and loaded once),
    and kpitables serving it for this module."""

    def __init__(self, loaded, tmp):
        self.kind = loaded.kind
        self.server = loaded.server
        self.env = loaded.env
        self.model = loaded.model
        self.kp = Kpitables(tmp / "kpitables.log", ["--model", str(self.model)], self.env)
        # Ground truth of the demo tables, which no test changes: a query asked again (the
        # same wrapper's truth for every BI shape) is answered from the first run.
        self._truths = {}

    def truth(self, sql, params=()):
        key = (sql, tuple(params))
        if key not in self._truths:
            self._truths[key] = self._truth(sql, params)
        return self._truths[key]

    def _truth(self, sql, params=()):
        if self.kind == "postgres":
            with psycopg.connect(self.server.dsn, autocommit=True, options="-c TimeZone=UTC") as c:
                return c.execute(sql, params or None).fetchall()
        with self.server.connect() as c:
            with c.cursor() as cur:
                sql = mysql_sql(sql)
                if params:
                    sql = re.sub(r"%(?!s)", "%%", sql)
                cur.execute(sql, params or None)
                return list(cur.fetchall())

    def truth_execute(self, sql):
        if self.kind == "postgres":
            with psycopg.connect(self.server.dsn, autocommit=True) as c:
                c.execute(sql)
        else:
            with self.server.connect() as c, c.cursor() as cur:
                cur.execute(sql)

    def statements(self):
        return self.server.statements()

    def close(self):
        self.kp.close()


@pytest.fixture(scope="module", params=["postgres", "mariadb"])
def wh(request, tmp_path_factory, warehouses):
    w = Warehouse(warehouses(request.param), tmp_path_factory.mktemp(request.param))
    try:
        yield w
    finally:
        w.close()


@pytest.fixture()
def kp(wh):
    with psycopg.connect(wh.kp.dsn, autocommit=True) as c:
        yield c


def assert_warehouse_answer(wh, ours, duck, truth, float_tol=FLOAT_TOLERANCE):
    """`ours` (a cursor) answers as the hand-written query on the warehouse, numeric
    exactly; and each column has the PostgreSQL type the hand-written query states (as
    DuckDB, which runs the same text, types it: the type a client sees must not depend
    on where the data lives)."""
    assert_rows_equal(ours.fetchall(), wh.truth(truth), float_tol)
    assert [d.type_code for d in ours.description] == duckdb_pg_types(duck.execute(truth).description)


@pytest.mark.parametrize("name,ours,truth", CASES, ids=[c[0] for c in CASES])
def test_metric_matches_the_warehouse(wh, kp, duck, name, ours, truth):
    assert_warehouse_answer(wh, kp.execute(ours), duck, truth)


@pytest.mark.parametrize("name,ours,truth", KIND_CASES, ids=[c[0] for c in KIND_CASES])
def test_metric_kind_matches_the_warehouse(wh, kp, duck, name, ours, truth):
    """Derived, composite, period-over-period and cumulative metrics, pushed down."""
    assert_warehouse_answer(wh, kp.execute(ours), duck, truth)


@pytest.mark.parametrize("name,ours,truth,truth_mysql", PERCENTILE_CASES, ids=[c[0] for c in PERCENTILE_CASES])
def test_percentiles_match_the_warehouse(wh, kp, duck, name, ours, truth, truth_mysql):
    """Percentiles, pushed down to PostgreSQL (its ordered-set aggregates) and computed by
    kpitables over MariaDB's rows (MariaDB has them as window functions only), against
    each warehouse's own percentile functions."""
    rows = kp.execute(ours)
    assert_rows_equal(rows.fetchall(), wh.truth(truth if wh.kind == "postgres" else truth_mysql),
                      PERCENTILE_TOLERANCE)
    assert [d.type_code for d in rows.description] == duckdb_pg_types(duck.execute(truth).description)
    plan = "\n".join(line for (line,) in kp.execute("EXPLAIN " + ours).fetchall())
    sent = plan.split('Sent to source "warehouse":', 1)[1]
    # PostgreSQL computes them; MariaDB is asked for the rows only.
    assert ("percentile_" in sent) == (wh.kind == "postgres"), plan


DEMO_TABLES = ["stores", "products", "customers", "orders", "order_lines", "revenue_targets", "stock_counts"]


def _canonical(kind, column, dialect):
    """`column` of DuckDB type `kind` as text that DuckDB, PostgreSQL and MariaDB spell
    alike: integers and text as they are, a date as YYYY-MM-DD, a decimal of scale s as
    the integer of its value × 10^s, a double as millionths, an instant as microseconds
    since 1970 (UTC), a boolean as 1 or 0, NULL as <null>."""
    text = {"duckdb": "VARCHAR", "postgres": "TEXT", "mariadb": "CHAR"}[dialect]
    big = "SIGNED" if dialect == "mariadb" else "BIGINT"
    scale = re.match(r"DECIMAL\(\d+,\s*(\d+)\)", kind)
    if scale or kind in ("DOUBLE", "FLOAT", "REAL"):
        factor = 10 ** int(scale.group(1)) if scale else 1_000_000
        value = f"CAST(ROUND({column} * {factor}) AS {big})"
    elif kind == "TIMESTAMP WITH TIME ZONE":
        value = {
            "duckdb": f"epoch_us({column})",
            "postgres": f"CAST(EXTRACT(EPOCH FROM {column}) * 1000000 AS BIGINT)",
            "mariadb": f"CAST(UNIX_TIMESTAMP({column}) * 1000000 AS SIGNED)",
        }[dialect]
    elif kind == "BOOLEAN":
        return f"CASE WHEN {column} THEN '1' WHEN NOT {column} THEN '0' ELSE '<null>' END"
    else:
        value = column
    return f"COALESCE(CAST({value} AS {text}), '<null>')"


def _row_hashes(table, columns, dialect):
    """The number of rows and the sum of a 60-bit hash (MD5) of each row's canonical text:
    equal sums mean equal multisets of rows (a changed, lost or added row moves the sum)."""
    row = "CONCAT(" + ", '|', ".join(_canonical(kind, name, dialect) for name, kind in columns) + ")"
    digits = f"SUBSTR(MD5({row}), 1, 15)"
    number = {
        "duckdb": f"CAST('0x' || {digits} AS BIGINT)",
        "postgres": f"CAST(CAST('x' || {digits} AS BIT(60)) AS BIGINT)",
        "mariadb": f"CAST(CONV({digits}, 16, 10) AS UNSIGNED)",
    }[dialect]
    return f"SELECT COUNT(*), CAST(SUM({number}) AS DECIMAL(38, 0)) FROM {table}"


@pytest.mark.parametrize("table", DEMO_TABLES)
def test_a_loaded_table_equals_its_demo_file(wh, duck, table):
    """The warehouse ground truth reads the tables `kpitables demo --into` loaded, so a
    loader bug would change both sides alike: every row of each loaded table is checked
    against the demo file itself (DuckDB on the file), through a hash of each row's
    canonical text summed over the table, computed in each engine."""
    columns = [(name, kind.upper()) for name, kind, *_ in duck.execute(f"DESCRIBE {table}").fetchall()]
    assert columns, table
    [(rows, total)] = duck.execute(_row_hashes(table, columns, "duckdb")).fetchall()
    assert rows > 0
    [(wh_rows, wh_total)] = wh.truth(_row_hashes(table, columns, wh.kind))
    assert (wh_rows, decimal.Decimal(wh_total)) == (rows, decimal.Decimal(total))


GRAIN_CASES = WRAPPER_CASES + LITERAL_CASES + GROUPING_CASES + JOIN_CASES


@pytest.mark.parametrize("name,ours,truth", GRAIN_CASES, ids=[c[0] for c in GRAIN_CASES])
def test_grain_through_wrappers_matches_the_warehouse(wh, kp, duck, name, ours, truth):
    """BI wrappers, grouped subqueries, grouping sets and joined views, pushed down. A
    wrapper that casts a numeric metric to a double before aggregating it gets, from a
    warehouse, the double of the warehouse's full quotient rather than of the metric's
    numeric(14, 6): those doubles are compared to the metric's last place (1e-6)."""
    tolerance = 1e-6 if name.startswith("renamed and cast columns") else FLOAT_TOLERANCE
    assert_warehouse_answer(wh, kp.execute(ours), duck, truth, tolerance)


def test_metric_condition_and_having(wh, kp):
    per_city = wh.truth(f"SELECT s.city, {REVENUE} AS r FROM {LINES} GROUP BY s.city ORDER BY 2")
    threshold = float(per_city[len(per_city) // 2][1])
    got = kp.execute("SELECT city, revenue FROM sales WHERE revenue > %s ORDER BY city", (threshold,)).fetchall()
    expected = wh.truth(
        f"SELECT s.city, {REVENUE} FROM {LINES} GROUP BY s.city HAVING {REVENUE} > %s ORDER BY 1", (threshold,)
    )
    assert 0 < len(expected) < len(per_city)
    assert_rows_equal(got, expected)
    got = kp.execute("SELECT city, SUM(orders) FROM sales GROUP BY city HAVING SUM(orders) >= %s ORDER BY 1", (1000,)).fetchall()
    expected = wh.truth(
        f"SELECT s.city, {ORDERS_DISTINCT} FROM {LINES} GROUP BY s.city HAVING {ORDERS_DISTINCT} >= %s ORDER BY 1", (1000,)
    )
    assert_rows_equal(got, expected)


def test_types_arrive_as_postgres_types(wh, kp):
    """numeric keeps its scale, dates are dates, timestamps are timestamps, text is UTF-8,
    on every source."""
    cur = kp.execute(
        "SELECT store_name, order_date, revenue FROM sales WHERE store_name LIKE '上海%' "
        "AND order_date = DATE '2024-11-11' ORDER BY store_name LIMIT 1"
    )
    types = {d.name: d.type_code for d in cur.description}
    row = cur.fetchone()
    assert types["order_date"] == 1082  # date
    assert types["revenue"] == 1700  # numeric
    assert row[0].startswith("上海")
    assert str(row[2]).split(".")[1].__len__() == 2  # scale 2, as the model's numeric(p,2)
    expected = wh.truth(
        f"SELECT s.store_name, o.order_date, {REVENUE} FROM {LINES} WHERE s.store_name LIKE '上海%' "
        "AND o.order_date = DATE '2024-11-11' GROUP BY s.store_name, o.order_date ORDER BY 1 LIMIT 1"
    )
    assert_rows_equal([row], expected)


COPY_OPTIONS = ["", "(FORMAT csv, HEADER)", "(FORMAT csv, DELIMITER ';', NULL 'NULL', FORCE_QUOTE ({force}))",
                "(FORMAT text, HEADER, DELIMITER '|', NULL '')", "(FORMAT binary)"]
COPY_VALUES = ("SELECT 'a,b' AS x, 'say \"hi\"' AS y, CAST(NULL AS TEXT) AS z, '' AS w, "
               "'tab' || chr(9) || 'here' AS t, 'new' || chr(10) || 'line' AS n, 'back\\slash|bar;semi' AS b, "
               "'\\.' AS dot, 42 AS i, CAST(1.50 AS NUMERIC(10, 2)) AS d, DATE '2024-02-29' AS day")


@pytest.mark.parametrize("wh", ["postgres"], indirect=True)
@pytest.mark.parametrize("options", COPY_OPTIONS)
def test_copy_is_postgresql_copy_byte_for_byte(wh, kp, options):
    """COPY through kpitables (pushed down to PostgreSQL) gives the very bytes PostgreSQL's
    own COPY gives for the hand-written query, in every format; so do literal values that
    need quoting and escaping."""
    ours = ("SELECT store_name, order_date, revenue, orders FROM sales "
            "WHERE order_date = DATE '2024-11-11' ORDER BY store_name")
    truth = (f"SELECT s.store_name, o.order_date, {REVENUE} AS revenue, {ORDERS_DISTINCT} AS orders "
             f"FROM {LINES} WHERE o.order_date = DATE '2024-11-11' GROUP BY 1, 2 ORDER BY 1")
    with psycopg.connect(wh.server.dsn, autocommit=True) as pg:
        metric_options = options.format(force="store_name, orders")
        expected = copy_bytes(pg, f"COPY ({truth}) TO STDOUT {metric_options}")
        assert len(expected) > 100
        assert copy_bytes(kp, f"COPY ({ours}) TO STDOUT {metric_options}") == expected
        values_options = options.format(force="x, i, d, day")
        assert copy_bytes(kp, f"COPY ({COPY_VALUES}) TO STDOUT {values_options}") == copy_bytes(
            pg, f"COPY ({COPY_VALUES}) TO STDOUT {values_options}"
        )


def test_copy_is_pushed_down_and_follows_the_rules(wh):
    """COPY runs the same statement in the warehouse as SELECT, under the reader's row
    filter, and each line equals the hand-written query on the warehouse."""
    dsn = wh.kp.dsn.replace("user=exec password=exec", "user=manager_east password=manager_east")
    with psycopg.connect(dsn, autocommit=True) as c:
        data = copy_bytes(c, "COPY (SELECT category, revenue FROM sales ORDER BY category) TO STDOUT (FORMAT csv)")
    got = [tuple(line.split(",")) for line in data.decode().splitlines()]
    truth = wh.truth(f"SELECT p.category, {REVENUE} FROM {LINES} WHERE s.region = 'East' GROUP BY 1 ORDER BY 1")
    assert_rows_equal([(c, decimal.Decimal(v)) for c, v in got], truth)
    assert any("order_lines" in s and "East" in s for s in wh.statements()[-20:])


def test_aggregation_happens_in_the_warehouse(wh, kp):
    """EXPLAIN shows the one statement sent; the warehouse's log shows it received exactly
    that statement, with the aggregation and grouping in it."""
    query = "SELECT region, revenue, orders FROM sales WHERE channel = 'online' GROUP BY region ORDER BY region"
    plan = "\n".join(r[0] for r in kp.execute("EXPLAIN " + query).fetchall())
    assert 'Sent to source "warehouse":' in plan, plan
    sent = plan.split('Sent to source "warehouse":', 1)[1].strip().splitlines()[0].strip()
    assert re.search(r"\bsum\(", sent, re.I) and re.search(r"GROUP BY", sent), sent
    assert re.search(r"count\(DISTINCT", sent, re.I), sent
    rows = kp.execute(query).fetchall()
    assert len(rows) == 5
    received = wh.statements()
    assert any(s.strip() == sent for s in received), (sent, received[-5:])


def test_balances_are_computed_in_the_warehouse(wh, kp):
    """A balance (month-end stock per store, summed by region) and an average balance go
    to the warehouse as one statement each part, the last day chosen there (a window
    function), not by kpitables over fetched rows."""
    query = "SELECT region, count_date__month, stock_units, avg_stock_units FROM inventory GROUP BY 1, 2"
    plan = "\n".join(r[0] for r in kp.execute("EXPLAIN " + query).fetchall())
    parts = plan.split('Sent to source "warehouse":')[1:]
    assert len(parts) == 1, plan
    sent = parts[0]
    assert re.search(r"max\(.*\) OVER \(PARTITION BY", sent, re.I) and re.search(r"\bavg\(", sent, re.I), sent
    assert len(kp.execute(query).fetchall()) == 5 * 36

def test_statements_reuse_the_pooled_warehouse_connections(wh, kp):
    """One statement after another runs on the pooled connection: the warehouse sees no
    new connection per statement. (The MySQL-protocol pool kept no idle connection, so
    every statement opened one, with its setup round trips; found by the fault tests.)
    At most one new connection is allowed: a connection goes back to the MySQL pool
    through its recycler task, which the next statement may outrun once."""
    query = "SELECT region, revenue FROM sales WHERE order_date = DATE '2024-03-01' GROUP BY region"
    kp.execute(query).fetchall()
    before = wh.server.connections()
    for _ in range(4):
        assert len(kp.execute(query).fetchall()) == 5
    assert wh.server.connections() - before <= 1


def test_a_warehouse_error_keeps_its_sqlstate_and_the_session_survives(wh, kp):
    """The warehouse refuses the statement (a table was renamed there): the client gets
    the warehouse's own SQLSTATE and message, naming the source; the session keeps
    working and answers again once the table is back."""
    rename = {
        "postgres": ("ALTER TABLE customers RENAME TO customers_moved", "ALTER TABLE customers_moved RENAME TO customers"),
        "mariadb": ("RENAME TABLE customers TO customers_moved", "RENAME TABLE customers_moved TO customers"),
    }[wh.kind]
    wh.truth_execute(rename[0])
    try:
        with pytest.raises(psycopg.Error) as failure:
            kp.execute("SELECT segment, revenue FROM sales GROUP BY segment").fetchall()
        assert failure.value.sqlstate == {"postgres": "42P01", "mariadb": "42S02"}[wh.kind], failure.value
        assert 'source "warehouse"' in str(failure.value) and "customers" in str(failure.value)
        assert kp.execute("SELECT 1").fetchone() == (1,)
    finally:
        wh.truth_execute(rename[1])
    assert len(kp.execute("SELECT segment, revenue FROM sales GROUP BY segment").fetchall()) == 3


def test_division_by_zero(wh, kp):
    """PostgreSQL refuses a division by zero (22012, passed through); MySQL-protocol
    warehouses answer NULL, as documented in docs/model-reference.md."""
    query = "SELECT region, revenue / (orders - orders) FROM sales GROUP BY region"
    if wh.kind == "postgres":
        with pytest.raises(psycopg.Error) as failure:
            kp.execute(query).fetchall()
        assert failure.value.sqlstate == "22012", failure.value
    else:
        assert {r[1] for r in kp.execute(query).fetchall()} == {None}
    assert kp.execute("SELECT count(DISTINCT region) FROM sales").fetchone()[0] == 5


def test_a_stopped_warehouse_gives_08_and_kpitables_recovers(wh, kp):
    before = kp.execute("SELECT revenue FROM sales").fetchone()
    wh.server.stop()
    try:
        with pytest.raises(psycopg.Error) as failure:
            kp.execute("SELECT region, revenue FROM sales").fetchall()
        assert failure.value.sqlstate.startswith("08"), (failure.value.sqlstate, failure.value)
        assert 'source "warehouse"' in str(failure.value)
        assert failure.value.diag.message_hint
        # The session keeps working for what needs no warehouse.
        assert kp.execute("SELECT count(*) FROM pg_catalog.pg_class WHERE relkind = 'v'").fetchone()[0] >= 2
    finally:
        wh.server.start()
    # Back: the same session gets answers again, without a restart of kpitables.
    assert kp.execute("SELECT revenue FROM sales").fetchone() == before


def hold_order_lines(wh):
    """Lock order_lines in the warehouse from another session, so a statement reading it
    waits; returns the lock's connection and a function counting such waiting statements."""
    if wh.kind == "postgres":
        locker = psycopg.connect(wh.server.dsn)
        locker.execute("LOCK TABLE order_lines IN ACCESS EXCLUSIVE MODE")

        def running():
            with psycopg.connect(wh.server.dsn, autocommit=True) as c:
                return c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kpitables' "
                    "AND state = 'active' AND query ILIKE '%order_lines%'"
                ).fetchone()[0]
    else:
        locker = wh.server.connect()
        locker.cursor().execute("LOCK TABLES order_lines WRITE")

        def running():
            with wh.server.connect() as c, c.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM information_schema.processlist "
                    "WHERE command = 'Query' AND info LIKE '%%order_lines%%' AND info NOT LIKE '%%processlist%%'"
                )
                return cur.fetchone()[0]

    return locker, running


def test_client_cancel_cancels_the_warehouse_statement(wh, kp):
    """A cancel request stops the statement running in the warehouse: the statement is
    held behind a table lock taken by another session, the client cancels, and the
    warehouse no longer runs it."""
    locker, running = hold_order_lines(wh)
    errors = []

    def ask():
        try:
            kp.execute("SELECT category, revenue FROM sales GROUP BY category").fetchall()
        except psycopg.Error as e:
            errors.append(e)

    try:
        t = threading.Thread(target=ask)
        t.start()
        assert wait_until(lambda: running() > 0)
        kp.cancel()
        t.join(timeout=60)
        assert not t.is_alive()
        assert errors and errors[0].sqlstate == "57014", errors
        assert wait_until(lambda: running() == 0)
    finally:
        locker.close()
    assert kp.execute("SELECT count(DISTINCT category) FROM sales").fetchone()[0] == 8


def test_an_administrator_cancels_and_terminates_the_warehouse_statement(wh):
    """pg_cancel_backend and pg_terminate_backend from another session (the `ops`
    administrator) stop the statement in the warehouse too."""
    locker, running = hold_order_lines(wh)
    admin = wh.kp.dsn.replace("user=exec password=exec", "user=ops password=ops")
    query = "SELECT category, revenue FROM sales GROUP BY category"
    try:
        with psycopg.connect(admin, autocommit=True) as ops:
            for signal, sqlstate in [("pg_cancel_backend", "57014"), ("pg_terminate_backend", "57P01")]:
                errors = []
                session = psycopg.connect(wh.kp.dsn, autocommit=True)

                def ask():
                    try:
                        session.execute(query).fetchall()
                    except psycopg.Error as e:
                        errors.append(e)

                t = threading.Thread(target=ask)
                t.start()
                try:
                    assert wait_until(lambda: running() > 0)
                    (pid,) = ops.execute(
                        "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query = %s", (query,)
                    ).fetchone()
                    assert ops.execute(f"SELECT {signal}(%s)", (pid,)).fetchone() == (True,)
                    t.join(timeout=60)
                    assert not t.is_alive()
                    assert errors and errors[0].sqlstate == sqlstate, errors
                    assert wait_until(lambda: running() == 0)
                finally:
                    session.close()
    finally:
        locker.close()


def test_readyz_follows_the_warehouse(wh, tmp_path):
    """/readyz is 503, naming the source, while the warehouse is down, and 200 again
    when it is back."""
    http_port = free_port()
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(wh.model), "--http", f"127.0.0.1:{http_port}"], wh.env)

    def readyz():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        status, body = readyz()
        assert status == 200 and body["ready"] is True, body
        assert [s["source"] for s in body["sources"]] == ["warehouse"] and body["sources"][0]["ready"] is True
        wh.server.stop()
        try:
            status, body = readyz()
            assert status == 503 and body["ready"] is False, body
            (source,) = body["sources"]
            assert source["source"] == "warehouse" and source["ready"] is False and source["error"], body
        finally:
            wh.server.start()
        assert wait_until(lambda: readyz()[0] == 200)
    finally:
        k.close()


def test_a_statement_past_query_timeout_is_cancelled_with_57014(wh, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(wh.model, model)
    with open(model / "sources.toml", "a") as f:
        f.write("query_timeout_secs = 1\n")
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(model)], wh.env)
    try:
        locker, running = hold_order_lines(wh)
        try:
            with psycopg.connect(k.dsn, autocommit=True) as c:
                with pytest.raises(psycopg.Error) as failure:
                    c.execute("SELECT category, revenue FROM sales GROUP BY category").fetchall()
                assert failure.value.sqlstate == "57014", failure.value
                assert "timed out after 1 s" in str(failure.value) and 'source "warehouse"' in str(failure.value)
                assert failure.value.diag.message_hint
                assert wait_until(lambda: running() == 0)
        finally:
            locker.close()
        with psycopg.connect(k.dsn, autocommit=True) as c:
            assert c.execute("SELECT count(DISTINCT category) FROM sales").fetchone()[0] == 8
    finally:
        k.close()


def test_text_comparisons_are_case_sensitive_on_every_source(wh, kp):
    assert kp.execute("SELECT region, revenue FROM sales WHERE region = 'east'").fetchall() == []
    assert len(kp.execute("SELECT region, revenue FROM sales WHERE region = 'East'").fetchall()) == 1


SAMPLES = {
    "postgres": [
        "DROP TABLE IF EXISTS samples",
        "CREATE TABLE samples (id bigint PRIMARY KEY, label text, amount numeric(20,6), day date, "
        "local_ts timestamp, happened_at timestamptz)",
        "INSERT INTO samples VALUES "
        "(1, '上海 Ünïcode', 12345678901234.123456, '2024-02-29', '2024-02-29 23:59:59.5', '2024-03-10 23:30:00+08'), "
        "(2, NULL, -0.000001, NULL, NULL, NULL), "
        "(3, 'plain', NULL, '1999-12-31', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00')",
    ],
    "mariadb": [
        "DROP TABLE IF EXISTS samples",
        # The label column keeps MariaDB's default, case-insensitive collation.
        "CREATE TABLE samples (id bigint PRIMARY KEY, label varchar(50), amount decimal(20,6), "
        "day date, local_ts datetime(6), happened_at timestamp(6) NULL) DEFAULT CHARSET = utf8mb4",
        "INSERT INTO samples VALUES "
        "(1, '上海 Ünïcode', 12345678901234.123456, '2024-02-29', '2024-02-29 23:59:59.5', '2024-03-10 15:30:00'), "
        "(2, NULL, -0.000001, NULL, NULL, NULL), "
        "(3, 'plain', NULL, '1999-12-31', '2000-01-01 00:00:00', '2000-01-01 00:00:00')",
    ],
}

SAMPLES_MODEL = """
[[tables]]
name = "samples"
source = "warehouse"
primary_key = "id"

[[dimensions]]
name = "label"
table = "samples"

[[dimensions]]
name = "day"
table = "samples"
kind = "time"

[[dimensions]]
name = "local_ts"
table = "samples"
kind = "time"

[[dimensions]]
name = "happened_at"
table = "samples"
kind = "time"

[[metrics]]
name = "total_amount"
table = "samples"
agg = "sum"
expr = "amount"

[[metrics]]
name = "sample_count"
table = "samples"
agg = "count"
expr = "id"

[[views]]
name = "samples_view"
dimensions = ["label", "day", "local_ts", "happened_at"]
metrics = ["total_amount", "sample_count"]
"""


def serve_samples(wh, tmp_path):
    """Create the samples table in the warehouse and serve a model over it."""
    for sql in SAMPLES[wh.kind]:
        wh.truth_execute(sql)
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(wh.model / "sources.toml", model / "sources.toml")
    (model / "samples.toml").write_text(SAMPLES_MODEL)
    return Kpitables(tmp_path / "kpitables.log", ["--model", str(model)], wh.env)


def utc_naive(value):
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def test_types_and_values_are_the_same_on_every_source(wh, tmp_path):
    """numeric(20,6) at full precision, date, timestamp, timestamp with time zone (MySQL
    TIMESTAMP), NULLs and non-ASCII text arrive as PostgreSQL types with the warehouse's
    values."""
    k = serve_samples(wh, tmp_path)
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            cur = c.execute("SELECT label, day, local_ts, happened_at, total_amount, sample_count FROM samples_view")
            types = [d.type_code for d in cur.description]
            got = sorted((tuple(utc_naive(v) for v in r) for r in cur.fetchall()), key=repr)
    finally:
        k.close()
    assert types == [25, 1082, 1114, 1184, 1700, 20], types
    expected = wh.truth("SELECT label, day, local_ts, happened_at, SUM(amount), COUNT(id) FROM samples "
                        "GROUP BY label, day, local_ts, happened_at")
    expected = sorted((tuple(utc_naive(v) for v in r) for r in expected), key=repr)
    assert got == expected
    assert any(r[0] == "上海 Ünïcode" and r[4] == decimal.Decimal("12345678901234.123456") for r in got), got
    assert any(r[3] == datetime.datetime(2024, 3, 10, 15, 30) for r in got), got


def test_nulls_sort_as_in_postgresql_on_every_source(wh, tmp_path):
    """NULLs last when ascending, first when descending (MySQL's own order is the
    opposite); the sort runs in the warehouse."""
    k = serve_samples(wh, tmp_path)
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            up = [r[0] for r in c.execute("SELECT label, sample_count FROM samples_view ORDER BY label").fetchall()]
            down = [r[0] for r in c.execute("SELECT label, sample_count FROM samples_view ORDER BY label DESC").fetchall()]
            plan = "\n".join(r[0] for r in c.execute("EXPLAIN SELECT label, sample_count FROM samples_view ORDER BY label").fetchall())
    finally:
        k.close()
    assert up == ["plain", "上海 Ünïcode", None], up
    assert down == [None, "上海 Ünïcode", "plain"], down
    assert "ORDER BY" in plan.split('Sent to source "warehouse":', 1)[1], plan


def test_text_filters_are_case_sensitive_even_on_a_case_insensitive_column(wh, tmp_path):
    """samples.label has MariaDB's default case-insensitive collation; kpitables still
    compares as PostgreSQL does (=, LIKE, IN)."""
    k = serve_samples(wh, tmp_path)
    try:
        if wh.kind == "mariadb":
            # The column itself really is case-insensitive in the warehouse.
            assert wh.truth("SELECT COUNT(*) FROM samples WHERE label = 'PLAIN'")[0][0] == 1
        with psycopg.connect(k.dsn, autocommit=True) as c:
            count = "SELECT sample_count FROM samples_view WHERE "
            assert c.execute(count + "label = 'PLAIN'").fetchall() in ([], [(0,)], [(None,)])
            assert c.execute(count + "label = 'plain'").fetchall() == [(1,)]
            assert c.execute(count + "label LIKE 'PL%'").fetchall() in ([], [(0,)], [(None,)])
            assert c.execute(count + "label IN ('PLAIN', 'x')").fetchall() in ([], [(0,)], [(None,)])
            assert c.execute(count + "label IN ('plain', 'x')").fetchall() == [(1,)]
    finally:
        k.close()


def test_integer_division_is_postgresql_integer_division_on_every_source(wh, kp):
    """orders / 7 of two integers truncates, as in PostgreSQL, also where the warehouse's
    `/` would give a decimal (MySQL)."""
    got = kp.execute("SELECT region, orders / 7 FROM sales GROUP BY region ORDER BY region").fetchall()
    divide = "DIV" if wh.kind == "mariadb" else "/"
    expected = wh.truth(f"SELECT s.region, {ORDERS_DISTINCT} {divide} 7 FROM {LINES} GROUP BY s.region ORDER BY 1")
    assert all(isinstance(r[1], int) for r in got), got
    assert_rows_equal(got, expected)


# Fiscal years from April and weeks from Sunday, each written the way each server
# spells it: (question, PostgreSQL truth, MySQL truth).
FISCAL = [
    (
        "SELECT order_date__fiscal_year, revenue FROM sales ORDER BY 1",
        f"SELECT make_date(CAST(EXTRACT(YEAR FROM o.order_date - INTERVAL '3 month') AS INTEGER), 4, 1), {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1",
        f"SELECT MAKEDATE(YEAR(o.order_date - INTERVAL 3 MONTH), 1) + INTERVAL 3 MONTH, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "SELECT order_date__week, revenue FROM sales WHERE order_date BETWEEN '2024-03-03' AND '2024-03-30' ORDER BY 1",
        f"SELECT o.order_date - CAST(EXTRACT(DOW FROM o.order_date) AS INTEGER), {REVENUE} FROM {LINES} WHERE o.order_date BETWEEN DATE '2024-03-03' AND DATE '2024-03-30' GROUP BY 1 ORDER BY 1",
        f"SELECT o.order_date - INTERVAL (DAYOFWEEK(o.order_date) - 1) DAY, {REVENUE} FROM {LINES} WHERE o.order_date BETWEEN DATE '2024-03-03' AND DATE '2024-03-30' GROUP BY 1 ORDER BY 1",
    ),
]


def test_fiscal_years_and_week_starts_on_every_source(wh, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(wh.model, model)
    dims = (model / "dimensions.toml").read_text()
    patched = dims.replace(
        'name = "order_date"\ntable = "orders"\nkind = "time"\n',
        'name = "order_date"\ntable = "orders"\nkind = "time"\nweek_start = "sunday"\nfiscal_year_start_month = 4\n',
    )
    assert patched != dims
    (model / "dimensions.toml").write_text(patched)
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(model)], wh.env)
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            for ours, pg_truth, mysql_truth in FISCAL:
                truth = pg_truth if wh.kind == "postgres" else mysql_truth
                got = c.execute(ours).fetchall()
                assert_rows_equal(got, wh.truth(truth))
    finally:
        k.close()


def test_time_zones_on_every_source(wh, tmp_path):
    """timestamptz buckets in the session's TimeZone, computed by the warehouse."""
    model = zoned_model(wh.model, tmp_path / "model")
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(model)], wh.env)
    try:
        for name, zone, ours, truth in ZONE_CASES:
            got = ask(k.dsn, zone, ours)
            expected = wh.truth(truth_sql(wh.kind, zone or "Asia/Shanghai", truth))
            assert_rows_equal(got, expected)
        plan = "\n".join(
            r[0] for r in ask(k.dsn, "Europe/Berlin", "EXPLAIN SELECT ordered_at__day, order_count FROM order_summary")
        )
        conversion = "AT TIME ZONE 'Europe/Berlin'" if wh.kind == "postgres" else "CONVERT_TZ("
        assert conversion in plan.split("Sent to source")[-1], plan
    finally:
        k.close()


def test_access_rules_hold_in_the_statement_sent_to_the_warehouse(wh):
    """The regional manager's row filter is part of the pushed-down statement; masked
    names are masked by the warehouse."""
    def as_user(user):
        return psycopg.connect(host="127.0.0.1", port=wh.kp.port, user=user, password=user,
                               dbname="kpitables", autocommit=True)

    with as_user("manager_east") as c:
        got = c.execute("SELECT region, revenue FROM sales WHERE region = 'West' OR 1 = 1 ORDER BY 1").fetchall()
        truth = wh.truth(f"SELECT s.region, {REVENUE} FROM {LINES} WHERE s.region = 'East' GROUP BY 1 ORDER BY 1")
        assert_rows_equal(got, truth)
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN SELECT region, revenue FROM sales").fetchall())
        assert "'East'" in plan.split("Sent to source")[-1], plan
    with as_user("analyst") as c:
        names = [r[0] for r in c.execute("SELECT DISTINCT customer_name FROM order_summary").fetchall()]
        assert names and all(re.fullmatch(r".\*\*\*", n) for n in names), names[:5]
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT cost FROM sales")
        assert e.value.sqlstate == "42501"


def test_the_audit_trail_holds_the_sql_sent_to_the_warehouse(wh):
    with psycopg.connect(host="127.0.0.1", port=wh.kp.port, user="manager_east", password="manager_east",
                         dbname="kpitables", autocommit=True, application_name="audit-pushdown") as c:
        c.execute("SELECT region, revenue FROM sales").fetchall()
    with psycopg.connect(wh.kp.dsn, autocommit=True) as c:
        pushed = c.execute(
            "SELECT pushed_sql FROM kp.audit WHERE application = 'audit-pushdown' AND outcome = 'ok'"
        ).fetchall()
    assert pushed and pushed[-1][0].startswith("warehouse: SELECT") and "'East'" in pushed[-1][0], pushed
