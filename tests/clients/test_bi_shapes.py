"""The chart queries BI tools send for a view, in their own wrapping and date idioms, each
answered as a hand-written DuckDB query over the same files answers it (the ground truth);
and the schema probes and result metadata the tools read."""

import pytest

from test_ground_truth import LINES, OK, REVENUE, assert_rows_equal, assert_same_answer, avg6

# units is a bigint (SUM of integers), as in PostgreSQL.
UNITS = f"CAST(SUM(CASE WHEN {OK} THEN l.quantity END) AS BIGINT)"
# One row of the sales view per combination of its dimensions (what `SELECT *` returns).
# The view's rows: the distinct combinations of its dimensions, customer_orders (each
# customer's orders not cancelled) included.
SALES_ROWS = f"""SELECT DISTINCT o.order_date, s.region, s.city, s.store_name, o.channel,
  p.category, p.product_name, c.segment, o.status, k.n FROM {LINES}
  LEFT JOIN (SELECT customer_id, COUNT(CASE WHEN status <> 'cancelled' THEN 1 END) AS n
             FROM orders GROUP BY 1) k ON k.customer_id = o.customer_id"""

SHAPES = [
    (
        "Metabase: week starting Sunday (shifted date_trunc)",
        """SELECT (CAST(date_trunc('week', CAST(("public"."sales"."order_date" + INTERVAL '1 day') AS timestamp)) AS timestamp) + INTERVAL '-1 day') AS "order_date",
                  SUM("public"."sales"."revenue") AS "sum"
           FROM "public"."sales" GROUP BY 1 ORDER BY 1 ASC""",
        f"""SELECT CAST(date_trunc('week', o.order_date + INTERVAL 1 day) AS timestamp) + INTERVAL (-1) day, {REVENUE}
            FROM {LINES} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "Metabase: count of rows",
        'SELECT count(*) AS "count" FROM "public"."sales"',
        f"SELECT count(*) FROM ({SALES_ROWS}) t",
    ),
    (
        "Tableau: EXTRACT arithmetic for year-month",
        """SELECT CAST((EXTRACT(YEAR FROM "sales"."order_date") * 100 + EXTRACT(MONTH FROM "sales"."order_date")) AS BIGINT) AS "my:order_date:ok",
                  SUM("sales"."revenue") AS "sum:revenue:ok"
           FROM "public"."sales" "sales" GROUP BY 1 ORDER BY 1""",
        f"""SELECT CAST(EXTRACT(YEAR FROM o.order_date) * 100 + EXTRACT(MONTH FROM o.order_date) AS BIGINT), {REVENUE}
            FROM {LINES} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "Tableau: quarter and year as integers, number of records",
        """SELECT CAST(EXTRACT(QUARTER FROM "sales"."order_date") AS INTEGER) AS "qr:order_date:ok",
                  CAST(EXTRACT(YEAR FROM "sales"."order_date") AS INTEGER) AS "yr:order_date:ok",
                  SUM("sales"."units") AS "sum:units:ok", COUNT(1) AS "cnt:records:ok"
           FROM "public"."sales" "sales" GROUP BY 2, 1 ORDER BY 2, 1""",
        f"""SELECT q, y, u, n FROM
              (SELECT CAST(EXTRACT(QUARTER FROM o.order_date) AS INTEGER) AS q, CAST(EXTRACT(YEAR FROM o.order_date) AS INTEGER) AS y, {UNITS} AS u
               FROM {LINES} GROUP BY 1, 2) a
            JOIN (SELECT CAST(EXTRACT(QUARTER FROM order_date) AS INTEGER) AS q2, CAST(EXTRACT(YEAR FROM order_date) AS INTEGER) AS y2, count(*) AS n
               FROM ({SALES_ROWS}) r GROUP BY 1, 2) b ON a.q = b.q2 AND a.y = b.y2
            ORDER BY y, q""",
    ),
    (
        "Power BI: nested subqueries with a NULL filter and a row cap",
        """select "_"."region", "_"."a0" from (
             select "rows"."region" as "region", sum("rows"."revenue") as "a0"
             from (select "_"."region" as "region", "_"."revenue" as "revenue" from "public"."sales" "_") "rows"
             group by "region") "_"
           where not "_"."a0" is null order by "_"."region" limit 1000001""",
        f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "Superset: grouped by a dimension, ordered by the metric, row limit",
        """SELECT channel AS channel, sum(revenue) AS "SUM(revenue)" FROM public.sales
           GROUP BY channel ORDER BY "SUM(revenue)" DESC LIMIT 10000""",
        f"SELECT o.channel, {REVENUE} AS r FROM {LINES} GROUP BY 1 ORDER BY r DESC",
    ),
    (
        "filter list: SELECT DISTINCT dimension ORDER BY 1",
        "SELECT DISTINCT category FROM sales ORDER BY 1",
        f"SELECT DISTINCT p.category FROM {LINES} ORDER BY 1",
    ),
    (
        "date picker: MIN and MAX of the time dimension",
        "SELECT MIN(order_date), MAX(order_date) FROM sales",
        f"SELECT MIN(o.order_date), MAX(o.order_date) FROM {LINES}",
    ),
    (
        "COUNT(*) per group counts the view's rows in the group",
        "SELECT region, COUNT(*) FROM sales GROUP BY region ORDER BY region",
        f"SELECT region, count(*) FROM ({SALES_ROWS}) t GROUP BY 1 ORDER BY 1",
    ),
    (
        "CASE in GROUP BY, CAST and COALESCE",
        """SELECT CASE WHEN region IN ('East', 'North') THEN 'north-east' ELSE 'other' END AS zone,
                  CAST(COALESCE(SUM(revenue), 0) AS DOUBLE PRECISION) AS r
           FROM sales GROUP BY CASE WHEN region IN ('East', 'North') THEN 'north-east' ELSE 'other' END
           ORDER BY 1""",
        f"""SELECT CASE WHEN s.region IN ('East', 'North') THEN 'north-east' ELSE 'other' END,
                   CAST(COALESCE({REVENUE}, 0) AS DOUBLE) FROM {LINES} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "to_char on dates",
        "SELECT to_char(order_date, 'YYYY-MM') AS ym, revenue FROM sales GROUP BY 1 ORDER BY 1",
        f"SELECT strftime(o.order_date, '%Y-%m'), {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "date_part and EXTRACT",
        """SELECT date_part('year', order_date) AS y, EXTRACT(quarter FROM order_date) AS q, units
           FROM sales GROUP BY 1, 2 ORDER BY 1, 2""",
        # Both are integers here (docs/clients.md).
        f"SELECT CAST(date_part('year', o.order_date) AS INTEGER), CAST(EXTRACT(quarter FROM o.order_date) AS INTEGER), {UNITS} "
        f"FROM {LINES} GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "date_trunc with a timestamp range filter",
        """SELECT date_trunc('month', order_date) AS m, revenue FROM sales
           WHERE order_date >= TIMESTAMP '2024-01-01 00:00:00' AND order_date < TIMESTAMP '2024-04-01 00:00:00'
           GROUP BY 1 ORDER BY 1""",
        f"""SELECT date_trunc('month', o.order_date), {REVENUE} FROM {LINES}
            WHERE o.order_date >= DATE '2024-01-01' AND o.order_date < DATE '2024-04-01' GROUP BY 1 ORDER BY 1""",
    ),
    (
        "an aggregate over a subquery that groups: the average of the stores' revenue",
        "SELECT avg(r) FROM (SELECT store_name, revenue AS r FROM sales GROUP BY store_name) t",
        f"SELECT {avg6('r')} FROM (SELECT s.store_name, {REVENUE} AS r FROM {LINES} GROUP BY 1) t",
    ),
    (
        "an aggregate over a subquery that passes rows through: the metric at the outer grain",
        "SELECT avg(r) FROM (SELECT store_name, revenue AS r FROM sales) t",
        f"SELECT {REVENUE} FROM {LINES}",
    ),
]


@pytest.mark.parametrize("name,ours,truth", SHAPES, ids=[s[0] for s in SHAPES])
def test_bi_chart_query_matches_ground_truth(conn, duck, name, ours, truth):
    assert_same_answer(conn.execute(ours), duck.execute(truth))


@pytest.mark.parametrize(
    "probe",
    [
        "SELECT * FROM sales LIMIT 0",
        "SELECT * FROM sales WHERE 1 = 0",
        "SELECT * FROM (SELECT * FROM public.sales) t WHERE 1 = 0",
    ],
)
def test_schema_probe_returns_columns_and_no_rows(conn, probe):
    """Tools probe a relation's columns with LIMIT 0 or WHERE 1=0: no rows, every column
    with the type the catalog states."""
    cur = conn.execute(probe)
    assert cur.fetchall() == []
    catalog = conn.execute(
        """SELECT a.attname, a.atttypid FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid
           WHERE c.relname = 'sales' AND a.attnum > 0 ORDER BY a.attnum"""
    ).fetchall()
    assert [(d.name, d.type_code) for d in cur.description] == [(n, t) for n, t in catalog]


def test_row_description_names_the_view_column(conn):
    """A column selected as is from a view carries the view's OID and its column number
    (as pg_class/pg_attribute state them); a computed column carries neither."""
    cur = conn.execute("SELECT region, s.revenue, revenue * 2 AS twice FROM public.sales s LIMIT 1")
    attnums = dict(
        conn.execute(
            """SELECT a.attname, a.attnum FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid
               WHERE c.relname = 'sales'"""
        ).fetchall()
    )
    oid = conn.execute("SELECT 'sales'::regclass::oid").fetchone()[0]
    result = cur.pgresult
    assert (result.ftable(0), result.ftablecol(0)) == (oid, attnums["region"])
    assert (result.ftable(1), result.ftablecol(1)) == (oid, attnums["revenue"])
    assert (result.ftable(2), result.ftablecol(2)) == (0, 0)
    # numeric precision and scale travel in the type modifier, as the catalog states them
    typmod = conn.execute(
        """SELECT a.atttypmod FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid
           WHERE c.relname = 'sales' AND a.attname = 'revenue'"""
    ).fetchone()[0]
    assert result.fmod(1) == typmod > 0
