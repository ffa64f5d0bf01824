"""Step 5: the same metric, asked by an executive, a regional manager, an analyst and a
frontline employee, gives each exactly what their role allows (semantic/demo/access.toml,
users in kpitables.toml: each one's password is its name).

Ground truth applies each rule by hand in DuckDB on the same files: the manager's numbers
are those of region East, the employee's those of one store. Every attempt to get around
a rule (OR conditions, subqueries, CTEs, joins of two views, DISTINCT lists, counts,
parameters, EXPLAIN, catalogs) must still return only the allowed rows and metrics.
"""

import re
import subprocess

import time

import psycopg
import pytest

from test_ground_truth import LINES, OK, REVENUE, assert_rows_equal

STORE = "上海1号店"
COST = f"SUM(CASE WHEN {OK} THEN l.quantity * l.unit_cost END)"
ORDER_COUNT = "COUNT(*) FILTER (WHERE o.status <> 'cancelled')"
ORDERS = """orders o LEFT JOIN stores s ON o.store_id = s.store_id
  LEFT JOIN customers c ON o.customer_id = c.customer_id"""


def connect(server, user):
    return psycopg.connect(
        host=server["host"], port=server["port"], user=user, password=user,
        dbname="kpitables", autocommit=True,
    )


@pytest.fixture()
def as_user(server):
    opened = []

    def open_as(user):
        c = connect(server, user)
        opened.append(c)
        return c

    yield open_as
    for c in opened:
        c.close()


def denied(conn, sql, sqlstate="42501"):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    assert e.value.sqlstate == sqlstate, e.value
    # The session goes on.
    assert conn.execute("SELECT 1").fetchone() == (1,)
    return e.value


# ---- the regional manager: only the rows of region East ------------------------------

EAST = "s.region = 'East'"

MANAGER_CASES = [
    ("revenue by region", "SELECT region, revenue FROM sales ORDER BY 1",
     f"SELECT s.region, {REVENUE} FROM {LINES} WHERE {EAST} GROUP BY 1 ORDER BY 1"),
    ("the total is the region's total", "SELECT revenue FROM sales",
     f"SELECT {REVENUE} FROM {LINES} WHERE {EAST}"),
    ("an OR condition does not widen the rows",
     "SELECT region, revenue FROM sales WHERE region = 'West' OR 1 = 1 ORDER BY 1",
     f"SELECT s.region, {REVENUE} FROM {LINES} WHERE {EAST} GROUP BY 1 ORDER BY 1"),
    ("counting another region's rows finds none",
     "SELECT count(*) FROM sales WHERE region = 'West'", "SELECT 0"),
    ("a subquery reads the same rows",
     "SELECT t.region, t.revenue FROM (SELECT region, revenue FROM sales) t ORDER BY 1",
     f"SELECT s.region, {REVENUE} FROM {LINES} WHERE {EAST} GROUP BY 1 ORDER BY 1"),
    ("a CTE reads the same rows",
     "WITH x AS (SELECT city, revenue FROM sales) SELECT city, revenue FROM x ORDER BY 1",
     f"SELECT s.city, {REVENUE} FROM {LINES} WHERE {EAST} GROUP BY 1 ORDER BY 1"),
    ("a join of two views joins allowed rows only",
     """SELECT a.city, a.revenue, b.order_count FROM (SELECT city, revenue FROM sales) a
        JOIN (SELECT city, order_count FROM order_summary) b ON a.city = b.city ORDER BY 1""",
     f"""SELECT x.city, x.r, y.n FROM
           (SELECT s.city, {REVENUE} AS r FROM {LINES} WHERE {EAST} GROUP BY 1) x JOIN
           (SELECT s.city, {ORDER_COUNT} AS n FROM {ORDERS} WHERE {EAST} GROUP BY 1) y
           ON x.city = y.city ORDER BY 1"""),
    ("a DISTINCT list holds the allowed values only",
     "SELECT DISTINCT city FROM order_summary ORDER BY 1",
     f"SELECT DISTINCT s.city FROM {ORDERS} WHERE {EAST} ORDER BY 1"),
    ("a view that applies a segment of another region is empty",
     "SELECT revenue FROM north_sales",
     f"SELECT {REVENUE} FROM {LINES} WHERE {EAST} AND s.region = 'North'"),
    ("targets are limited too (the targets table carries the region)",
     "SELECT region, revenue_target FROM sales_targets ORDER BY 1",
     "SELECT region, SUM(revenue_target) FROM revenue_targets WHERE region = 'East' GROUP BY 1 ORDER BY 1"),
    ("a metric as a dimension counts what the manager sees: a customer's East orders (none reaches 30)",
     "SELECT customer_orders, customers, frequent_customer_revenue FROM sales WHERE customer_orders >= 15 ORDER BY 1",
     f"""WITH k AS (SELECT o.customer_id AS cid, {ORDER_COUNT} AS n FROM {ORDERS} WHERE {EAST} GROUP BY 1)
         SELECT k.n, COUNT(DISTINCT CASE WHEN o.status <> 'cancelled' THEN o.customer_id END),
                SUM(CASE WHEN o.status <> 'cancelled' AND k.n >= 30 THEN l.quantity * l.unit_price - l.discount END)
         FROM {LINES} JOIN k ON k.cid = o.customer_id WHERE {EAST} AND k.n >= 15 GROUP BY 1 ORDER BY 1"""),
    ("shares of total are shares of what the manager sees",
     "SELECT city, revenue_share FROM sales ORDER BY 1",
     f"""SELECT s.city, CAST({REVENUE} AS DOUBLE) / CAST(SUM({REVENUE}) OVER () AS DOUBLE)
         FROM {LINES} WHERE {EAST} GROUP BY 1 ORDER BY 1"""),
]


@pytest.mark.parametrize("name,ours,truth", MANAGER_CASES, ids=[c[0] for c in MANAGER_CASES])
def test_a_regional_manager_sees_only_the_region(as_user, duck, name, ours, truth):
    got = as_user("manager_east").execute(ours).fetchall()
    assert_rows_equal(got, duck.execute(truth).fetchall())


def test_parameters_and_explain_keep_the_row_filter(as_user, duck):
    c = as_user("manager_east")
    # Extended protocol with a parameter.
    got = c.execute("SELECT count(*) FROM sales WHERE region = %s", ["West"]).fetchall()
    assert got == [(0,)]
    got = c.execute("SELECT revenue FROM sales WHERE channel = %s", ["online"]).fetchall()
    truth = duck.execute(f"SELECT {REVENUE} FROM {LINES} WHERE {EAST} AND o.channel = 'online'").fetchall()
    assert_rows_equal(got, truth)
    plan = "\n".join(r[0] for r in c.execute("EXPLAIN SELECT region, revenue FROM sales").fetchall())
    assert "'East'" in plan, plan


def test_a_metric_as_a_dimension_goes_with_its_metric(as_user):
    """customer_orders shows order_count per customer: store staff, who may not read
    order_count, do not get the column (nor a metric filtered by it); an analyst does."""
    staff = as_user("staff")
    e = denied(staff, "SELECT customer_orders, revenue FROM sales GROUP BY 1", "42703")
    assert 'column "customer_orders" does not exist' in str(e)
    columns = [r[0] for r in staff.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'sales'").fetchall()]
    assert "revenue" in columns and "customer_orders" not in columns
    denied(staff, "SELECT frequent_customer_revenue FROM sales")
    analyst = as_user("analyst")
    assert analyst.execute("SELECT count(*) FROM (SELECT customer_orders FROM sales GROUP BY 1) t").fetchone()[0] > 10


def test_each_user_gets_a_different_total(as_user, duck):
    """The same question, four users, four answers, each equal to the rule applied by hand."""
    total = f"SELECT {REVENUE} FROM {LINES}"
    truths = {
        "exec": duck.execute(total).fetchall(),
        "analyst": duck.execute(total).fetchall(),
        "manager_east": duck.execute(f"{total} WHERE {EAST}").fetchall(),
        "staff": duck.execute(f"{total} WHERE s.store_name = '{STORE}'").fetchall(),
    }
    for user, truth in truths.items():
        assert_rows_equal(as_user(user).execute("SELECT revenue FROM sales").fetchall(), truth)
    assert truths["staff"][0][0] < truths["manager_east"][0][0] < truths["exec"][0][0]


# ---- metrics by role ------------------------------------------------------------------

def test_a_sensitive_metric_and_what_is_computed_from_it_are_denied(as_user, duck):
    c = as_user("analyst")
    for metric in ["cost", "gross_profit", "gross_margin_rate"]:
        e = denied(c, f"SELECT region, {metric} FROM sales")
        assert e.diag.message_primary == f'permission denied for metric "{metric}"'
        assert "analyst" in e.diag.message_hint
    e = denied(c, "SELECT margin_rate_growth FROM sales_trends GROUP BY order_date__month")
    # Absent from every catalog the analyst reads, and from SELECT *.
    columns = [r[0] for r in c.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'sales'").fetchall()]
    assert "revenue" in columns and "cost" not in columns and "gross_profit" not in columns
    attributes = [r[0] for r in c.execute(
        "SELECT attname FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid WHERE c.relname = 'sales'").fetchall()]
    assert "revenue" in attributes and "cost" not in attributes
    star = c.execute("SELECT * FROM sales LIMIT 1")
    names = [d.name for d in star.description]
    assert "cost" not in names and "gross_margin_rate" not in names
    # The executive has it, equal to the hand-written cost.
    got = as_user("exec").execute("SELECT region, cost FROM sales ORDER BY 1").fetchall()
    truth = duck.execute(f"SELECT s.region, {COST} FROM {LINES} GROUP BY 1 ORDER BY 1").fetchall()
    assert_rows_equal(got, truth)


WRAPPED = [
    ("a pass-through wrapper", "SELECT SUM(c) FROM (SELECT customers AS c FROM sales) t", "customers"),
    ("a CTE", "WITH x AS (SELECT region, customers FROM sales) SELECT region, customers FROM x", "customers"),
    ("a qualified name in a wrapper", "SELECT t.g FROM (SELECT s.gmv AS g FROM sales s) t", "gmv"),
    ("a grouped wrapper", "SELECT MAX(x) FROM (SELECT region, SUM(gmv) AS x FROM sales GROUP BY region) t", "gmv"),
]


@pytest.mark.parametrize("name,sql,metric", WRAPPED, ids=[w[0] for w in WRAPPED])
def test_a_denied_metric_is_42501_however_the_query_names_it(as_user, name, sql, metric):
    """Named through a wrapper, a CTE or an alias, a metric the role may not read is the
    same denial as named directly, never "does not exist" with a "did you mean"."""
    e = denied(as_user("staff"), sql)
    assert e.diag.message_primary == f'permission denied for metric "{metric}"'
    assert "store_staff" in e.diag.message_hint


def test_a_frontline_employee_sees_a_few_metrics_of_one_store(as_user, duck):
    c = as_user("staff")
    got = c.execute("SELECT store_name, revenue, orders, units FROM sales").fetchall()
    truth = duck.execute(
        f"""SELECT s.store_name, {REVENUE}, COUNT(DISTINCT CASE WHEN {OK} THEN l.order_id END),
                   SUM(CASE WHEN {OK} THEN l.quantity END)
            FROM {LINES} WHERE s.store_name = '{STORE}' GROUP BY 1"""
    ).fetchall()
    assert_rows_equal(got, truth)
    denied(c, "SELECT gmv FROM sales")
    e = denied(c, "SELECT * FROM order_summary")
    assert e.diag.message_primary == 'permission denied for view "order_summary"'
    views = [r[0] for r in c.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()]
    assert views == ["sales"]
    columns = [r[0] for r in c.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'sales' ORDER BY ordinal_position").fetchall()]
    assert [m for m in ["revenue", "orders", "units", "gmv", "customers"] if m in columns] == ["revenue", "orders", "units"]


# ---- masking ------------------------------------------------------------------------

def test_customer_names_are_masked_unless_the_role_unmasks_them(as_user, duck):
    c = as_user("analyst")
    names = [r[0] for r in c.execute("SELECT DISTINCT customer_name FROM order_summary").fetchall()]
    assert names and all(re.fullmatch(r".\*\*\*", n) for n in names), names[:5]
    # Filtering on a real name finds nothing: the value compared is the masked one.
    assert c.execute(
        "SELECT count(*) FROM order_summary WHERE customer_name = 'Customer 00001'").fetchall() == [(0,)]
    got = as_user("exec").execute(
        "SELECT customer_name, order_count FROM order_summary WHERE customer_name = 'Customer 00001' GROUP BY 1"
    ).fetchall()
    truth = duck.execute(
        f"SELECT c.customer_name, {ORDER_COUNT} FROM {ORDERS} WHERE c.customer_name = 'Customer 00001' GROUP BY 1"
    ).fetchall()
    assert_rows_equal(got, truth)


# ---- lifecycle ------------------------------------------------------------------------

def test_a_deprecated_metric_answers_with_a_notice_naming_its_replacement(as_user, duck):
    c = as_user("analyst")
    notices = []
    # A notice is valid only during the callback: keep its fields.
    c.add_notice_handler(lambda n: notices.append((n.severity, n.sqlstate, n.message_primary)))
    got = c.execute("SELECT region, sales_amount FROM sales ORDER BY 1").fetchall()
    truth = duck.execute(f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1").fetchall()
    assert_rows_equal(got, truth)
    assert notices == [("WARNING", "01P01", 'metric "sales_amount" is deprecated; use "revenue" instead')]
    # The catalog shows the status (psql's \d+ column description).
    comment = c.execute(
        """SELECT col_description(c.oid, a.attnum) FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid
           WHERE c.relname = 'sales' AND a.attname = 'sales_amount'"""
    ).fetchone()[0]
    assert comment.startswith("[deprecated: use revenue] "), comment


def test_psql_shows_the_deprecation_notice(server):
    out = subprocess.run(
        ["psql", "-X", "-h", server["host"], "-p", str(server["port"]), "-U", "analyst", "kpitables",
         "-c", "SELECT sales_amount FROM sales"],
        capture_output=True, text=True, env={"PGPASSWORD": "analyst", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert 'WARNING:  metric "sales_amount" is deprecated; use "revenue" instead' in out.stderr


def test_a_retired_metric_is_an_error_naming_its_replacement(as_user):
    c = as_user("exec")
    e = denied(c, "SELECT gross_sales FROM sales", "42704")
    assert e.diag.message_primary == 'metric "gross_sales" is retired'
    assert e.diag.message_hint == 'use "gmv" instead'


def test_a_draft_is_visible_to_modelers_only(as_user, duck):
    got = as_user("analyst").execute("SELECT revenue_per_customer FROM sales").fetchall()
    truth = duck.execute(
        f"SELECT CAST({REVENUE} AS DOUBLE) / COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END) FROM {LINES}"
    ).fetchall()
    assert_rows_equal(got, truth)
    e = denied(as_user("manager_east"), "SELECT revenue_per_customer FROM sales", "42704")
    assert e.diag.message_primary == 'metric "revenue_per_customer" is a draft'


# ---- the kp catalog -------------------------------------------------------------------

def test_kp_metrics_shows_each_user_what_it_may_see(as_user):
    from model_facts import METRICS

    exec_rows = as_user("exec").execute(
        "SELECT name, label, owner, domain, status, replaced_by, version, tags FROM kp.metrics ORDER BY name"
    ).fetchall()
    by_name = {r[0]: r for r in exec_rows}
    # Every metric of the model but the retired one, with the model's metadata.
    assert set(by_name) == {m for m, d in METRICS.items() if d.get("status") != "retired"}
    for name, row in by_name.items():
        item = METRICS[name]
        assert row[1] == item.get("label") and row[2] == item.get("owner") and row[3] == item.get("domain")
        assert row[4] == item.get("status", "active")
        assert row[5] == item.get("replaced_by")
        assert re.fullmatch(r"[0-9a-f]{12}", row[6])
        assert list(row[7] or []) == item.get("tags", [])
    analyst = {r[0] for r in as_user("analyst").execute("SELECT name FROM kp.metrics").fetchall()}
    assert "revenue" in analyst and not {"cost", "gross_profit", "gross_margin_rate"} & analyst
    staff = as_user("staff")
    assert {r[0] for r in staff.execute("SELECT name FROM kp.metrics").fetchall()} == {"revenue", "orders", "units"}
    from model_facts import VIEWS

    # The view's metrics in the view's own order, restricted to the three allowed.
    allowed = [m for m in VIEWS["sales"]["metrics"] if m in {"revenue", "orders", "units"}]
    assert staff.execute("SELECT name, metrics, row_filter FROM kp.views").fetchall() == [
        ("sales", allowed, f"(store_name = '{STORE}')")
    ]


def test_kp_lineage_traces_a_metric_to_its_sources_and_its_users(as_user):
    rows = as_user("exec").execute(
        "SELECT direction, kind, name FROM kp.lineage WHERE metric = 'gross_margin_rate' ORDER BY 1, 2, 3"
    ).fetchall()
    got = {}
    for direction, kind, name in rows:
        got.setdefault((direction, kind), set()).add(name)
    assert got[("upstream", "metric")] == {"revenue", "cost"}
    assert got[("upstream", "table")] == {"order_lines", "orders"}
    assert {"order_lines.unit_cost", "order_lines.unit_price", "orders.status"} <= got[("upstream", "column")]
    assert got[("upstream", "source")] == {"demo_files"}
    assert got[("downstream", "metric")] == {"margin_rate_growth"}
    assert {"sales", "sales_trends", "north_sales"} <= got[("downstream", "view")]
    # The analyst may not see cost: its lineage is not shown, nor cost as a user of revenue.
    analyst = as_user("analyst").execute(
        "SELECT DISTINCT metric FROM kp.lineage WHERE metric IN ('cost', 'gross_margin_rate')").fetchall()
    assert analyst == []
    users_of_revenue = {r[0] for r in as_user("analyst").execute(
        "SELECT name FROM kp.lineage WHERE metric = 'revenue' AND direction = 'downstream' AND kind = 'metric'").fetchall()}
    assert "revenue_share" in users_of_revenue and "gross_profit" not in users_of_revenue


def test_kp_dimensions_say_which_are_masked_for_the_reader(as_user):
    q = "SELECT masked FROM kp.dimensions WHERE name = 'customer_name'"
    assert as_user("analyst").execute(q).fetchall() == [(True,)]
    assert as_user("exec").execute(q).fetchall() == [(False,)]


# ---- audit ----------------------------------------------------------------------------

def test_every_query_is_audited_to_the_file_and_kp_audit(server, duck):
    import json
    import pathlib

    with psycopg.connect(host=server["host"], port=server["port"], user="manager_east", password="manager_east",
                         dbname="kpitables", autocommit=True, application_name="audit-check") as c:
        started = time.monotonic()
        got = c.execute("SELECT region, revenue FROM sales WHERE channel = 'online' GROUP BY 1").fetchall()
        elapsed_ms = (time.monotonic() - started) * 1000
        assert len(got) == 1
        # Fails while executing (after planning): recorded with what it read.
        with pytest.raises(psycopg.errors.DivisionByZero):
            c.execute("SELECT region, revenue / 0 FROM sales GROUP BY 1").fetchall()
    with psycopg.connect(host=server["host"], port=server["port"], user="analyst", password="analyst",
                         dbname="kpitables", autocommit=True, application_name="audit-check") as c:
        with pytest.raises(psycopg.Error):
            c.execute("SELECT cost FROM sales")
        # The trail is for the roles allowed to read it.
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT * FROM kp.audit")
        assert e.value.sqlstate == "42501"
    with psycopg.connect(host=server["host"], port=server["port"], user="exec", password="exec",
                         dbname="kpitables", autocommit=True) as c:
        rows = c.execute(
            """SELECT user_name, views, metrics, dimensions, filters, rows, outcome, sqlstate, duration_ms
               FROM kp.audit WHERE application = 'audit-check' ORDER BY at"""
        ).fetchall()
    ok = [r for r in rows if r[0] == "manager_east" and r[6] == "ok"]
    assert ok and ok[-1][1:8] == (["sales"], ["revenue"], ["region"], ["channel = 'online'"], 1, "ok", None)
    # The recorded duration is the statement's own: no longer than the client waited.
    assert isinstance(ok[-1][8], int) and 0 <= ok[-1][8] <= elapsed_ms + 1
    failed = [r for r in rows if r[0] == "manager_east" and r[6] == "error"]
    assert failed and failed[-1][1:8] == (["sales"], ["revenue"], ["region"], [], 0, "error", "22012")
    denied_rows = [r for r in rows if r[0] == "analyst"]
    assert [r[6:8] for r in denied_rows] == [("error", "42501"), ("error", "42501")]

    # The same records, as JSON lines in the file.
    path = pathlib.Path(server["log"]).parent / "audit.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    mine = [r for r in records if r["application"] == "audit-check"]
    assert [(r["user"], r["outcome"]) for r in mine] == [
        ("manager_east", "ok"), ("manager_east", "error"), ("analyst", "error"), ("analyst", "error")
    ]
    assert mine[0]["metrics"] == ["revenue"] and mine[0]["rows"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", mine[0]["time"])
    assert mine[1]["sqlstate"] == "22012"
    assert mine[2]["sqlstate"] == "42501" and "cost" in mine[2]["message"]
