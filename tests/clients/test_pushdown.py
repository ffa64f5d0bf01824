"""Step 3: metric queries pushed down to real warehouses.

For each warehouse (a PostgreSQL and a MariaDB server started by the harness, see
warehouses.py) the demo is loaded with `kpitables demo --into URL --model-out DIR`, and
kpitables serves that model. Every metric question of the step-1 suite is then asked
through kpitables and compared with a hand-written SQL query run directly on the same
server. Other tests read what the warehouse received (its statement log) and check
failures: the warehouse stopped and started again mid-session, a statement the
warehouse refuses, a client cancel.
"""

import re
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import BIN, DATA, ROOT, Kpitables
from test_ground_truth import CASES, LINES, ORDERS_DISTINCT, REVENUE, assert_rows_equal
from warehouses import MariaDB, Postgres

GRAINS = {
    "year": "CAST(DATE_FORMAT({x}, '%Y-01-01') AS DATETIME)",
    "quarter": "CAST(MAKEDATE(YEAR({x}), 1) + INTERVAL (QUARTER({x}) - 1) QUARTER AS DATETIME)",
    "month": "CAST(DATE_FORMAT({x}, '%Y-%m-01') AS DATETIME)",
    "week": "CAST(DATE({x}) - INTERVAL WEEKDAY({x}) DAY AS DATETIME)",
}


def mysql_sql(sql: str) -> str:
    """A hand-written PostgreSQL ground-truth query in MySQL spelling (date_trunc is not
    a MySQL function)."""
    return re.sub(
        r"date_trunc\('(\w+)', ([\w.]+)\)",
        lambda m: GRAINS[m.group(1)].format(x=m.group(2)),
        sql,
    )


class Warehouse:
    """One started warehouse, the demo loaded into it, and kpitables serving it."""

    def __init__(self, kind, tmp):
        self.kind = kind
        self.server = Postgres() if kind == "postgres" else MariaDB()
        try:
            model = tmp / "model"
            env = {}
            if kind == "mariadb":
                env["KPITABLES_WAREHOUSE_PASSWORD"] = self.server.password
            loaded = subprocess.run(
                [BIN, "demo", "--out", str(DATA), "--into", self.server.url, "--model-out", str(model)],
                cwd=ROOT, capture_output=True, text=True,
            )
            assert loaded.returncode == 0, loaded.stderr
            self.model = model
            self.kp = Kpitables(tmp / "kpitables.log", ["--model", str(model)], env)
        except Exception:
            self.server.close()
            raise

    def truth(self, sql, params=()):
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
        try:
            self.kp.close()
        finally:
            self.server.close()


@pytest.fixture(scope="module", params=["postgres", "mariadb"])
def wh(request, tmp_path_factory):
    w = Warehouse(request.param, tmp_path_factory.mktemp(request.param))
    try:
        yield w
    finally:
        w.close()


@pytest.fixture()
def kp(wh):
    with psycopg.connect(wh.kp.dsn, autocommit=True) as c:
        yield c


@pytest.mark.parametrize("name,ours,truth", CASES, ids=[c[0] for c in CASES])
def test_metric_matches_the_warehouse(wh, kp, name, ours, truth):
    got = kp.execute(ours).fetchall()
    assert_rows_equal(got, wh.truth(truth))


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


def test_client_cancel_cancels_the_warehouse_statement(wh, kp):
    """A cancel request stops the statement running in the warehouse: the statement is
    held behind a table lock taken by another session, the client cancels, and the
    warehouse no longer runs it."""
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

    errors = []

    def ask():
        try:
            kp.execute("SELECT category, revenue FROM sales GROUP BY category").fetchall()
        except psycopg.Error as e:
            errors.append(e)

    try:
        t = threading.Thread(target=ask)
        t.start()
        for _ in range(300):  # readiness wait: the statement reaches the warehouse
            if running() > 0:
                break
            time.sleep(0.1)
        assert running() > 0
        kp.cancel()
        t.join(timeout=60)
        assert not t.is_alive()
        assert errors and errors[0].sqlstate == "57014", errors
        for _ in range(300):  # readiness wait: the warehouse ends the cancelled statement
            if running() == 0:
                break
            time.sleep(0.1)
        assert running() == 0
    finally:
        locker.close()
    assert kp.execute("SELECT count(DISTINCT category) FROM sales").fetchone()[0] == 8
