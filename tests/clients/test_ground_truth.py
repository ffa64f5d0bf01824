"""Every metric answer from kpitables equals a hand-written query run by DuckDB on the
same demo files. Nothing here compares kpitables with its own earlier output."""

import datetime
import decimal
import math

import pytest

# The joins a hand-written query needs to reach each table from an order line.
LINES = """order_lines l
  LEFT JOIN orders o ON l.order_id = o.order_id
  LEFT JOIN stores s ON o.store_id = s.store_id
  LEFT JOIN products p ON l.product_id = p.product_id
  LEFT JOIN customers c ON o.customer_id = c.customer_id"""
ORDERS = """orders o
  LEFT JOIN stores s ON o.store_id = s.store_id
  LEFT JOIN customers c ON o.customer_id = c.customer_id"""
OK = "o.status <> 'cancelled'"
REVENUE = f"SUM(CASE WHEN {OK} THEN l.quantity * l.unit_price - l.discount END)"
ORDERS_DISTINCT = f"COUNT(DISTINCT CASE WHEN {OK} THEN l.order_id END)"

CASES = [
    ("total revenue", "SELECT revenue FROM sales", f"SELECT {REVENUE} FROM {LINES}"),
    (
        "revenue by region, implicit grouping",
        "SELECT region, revenue FROM sales ORDER BY region",
        f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "SUM(revenue) with GROUP BY",
        "SELECT region, SUM(revenue) FROM sales GROUP BY region ORDER BY 1",
        f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "orders (count distinct) by month through date_trunc",
        "SELECT date_trunc('month', order_date) AS month, orders FROM sales GROUP BY 1 ORDER BY 1",
        f"SELECT date_trunc('month', o.order_date), {ORDERS_DISTINCT} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "MAX(customers) is the distinct count at the total grain, not a max of sub-groups",
        "SELECT MAX(customers) FROM sales",
        f"SELECT COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END) FROM {LINES}",
    ),
    (
        "customers by segment",
        "SELECT segment, customers FROM sales ORDER BY segment",
        f"SELECT c.segment, COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "units by category, filtered on channel",
        "SELECT category, units FROM sales WHERE channel = 'online' ORDER BY category",
        f"SELECT p.category, CAST(SUM(CASE WHEN {OK} THEN l.quantity END) AS BIGINT) FROM {LINES} WHERE o.channel = 'online' GROUP BY 1 ORDER BY 1",
    ),
    (
        "average unit price by channel",
        "SELECT channel, avg_unit_price FROM sales ORDER BY channel",
        f"SELECT o.channel, CAST(AVG(l.unit_price) AS DECIMAL(38, 10)) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "max and min unit price by category",
        "SELECT category, max_unit_price, min_unit_price FROM sales ORDER BY 1",
        f"SELECT p.category, MAX(l.unit_price), MIN(l.unit_price) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "promo units by quarter (column form)",
        "SELECT order_date__quarter, promo_units FROM sales ORDER BY 1",
        f"SELECT CAST(date_trunc('quarter', o.order_date) AS DATE), CAST(SUM(CASE WHEN l.is_promo AND {OK} THEN l.quantity END) AS BIGINT) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "cost and GMV by year (column form)",
        "SELECT order_date__year, cost, gmv FROM sales ORDER BY 1",
        f"SELECT CAST(date_trunc('year', o.order_date) AS DATE), SUM(CASE WHEN {OK} THEN l.quantity * l.unit_cost END), SUM(l.quantity * l.unit_price) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "discounts and GMV by order status",
        "SELECT order_status, discount_amount, gmv FROM sales ORDER BY 1",
        f"SELECT o.status, SUM(CASE WHEN {OK} THEN l.discount END), SUM(l.quantity * l.unit_price) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "revenue by ISO week within a date range",
        "SELECT order_date__week, revenue FROM sales WHERE order_date BETWEEN '2023-01-01' AND '2023-03-31' ORDER BY 1",
        f"SELECT CAST(date_trunc('week', o.order_date) AS DATE), {REVENUE} FROM {LINES} WHERE o.order_date BETWEEN DATE '2023-01-01' AND DATE '2023-03-31' GROUP BY 1 ORDER BY 1",
    ),
    (
        "order metrics by region on the orders table",
        "SELECT region, order_count, avg_order_value, shipping_fees, buying_customers FROM order_summary ORDER BY region",
        f"""SELECT s.region, COUNT(CASE WHEN {OK} THEN 1 END), CAST(AVG(CASE WHEN {OK} THEN o.order_amount END) AS DECIMAL(38, 10)),
                   SUM(CASE WHEN {OK} THEN o.shipping_fee END), COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END)
            FROM {ORDERS} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "metrics of two fact tables side by side, each aggregated on its own",
        "SELECT channel, order_count, revenue FROM order_summary ORDER BY channel",
        f"""SELECT a.channel, a.n, b.r FROM
              (SELECT o.channel, COUNT(CASE WHEN {OK} THEN 1 END) n FROM orders o GROUP BY 1) a
              JOIN (SELECT o.channel, {REVENUE} r FROM {LINES} GROUP BY 1) b ON a.channel = b.channel
            ORDER BY 1""",
    ),
    (
        "a draft metric by month of 2024",
        "SELECT order_date__month, returned_orders FROM order_summary WHERE order_date >= '2024-01-01' ORDER BY 1",
        "SELECT CAST(date_trunc('month', o.order_date) AS DATE), COUNT(CASE WHEN o.status = 'returned' THEN 1 END) FROM orders o WHERE o.order_date >= DATE '2024-01-01' GROUP BY 1 ORDER BY 1",
    ),
    (
        "CTE over a view, ordered by a metric",
        "WITH t AS (SELECT region, revenue FROM sales) SELECT region FROM t ORDER BY revenue DESC LIMIT 2",
        f"SELECT s.region FROM {LINES} GROUP BY 1 ORDER BY {REVENUE} DESC LIMIT 2",
    ),
    (
        "IN subquery over a view",
        "SELECT store_name, orders FROM sales WHERE region IN (SELECT region FROM sales WHERE region LIKE 'E%') ORDER BY store_name",
        f"SELECT s.store_name, {ORDERS_DISTINCT} FROM {LINES} WHERE s.region LIKE 'E%' GROUP BY 1 ORDER BY 1",
    ),
    (
        "Chinese dimension values",
        "SELECT store_name, revenue FROM sales WHERE store_name LIKE '上海%' ORDER BY store_name",
        f"SELECT s.store_name, {REVENUE} FROM {LINES} WHERE s.store_name LIKE '上海%' GROUP BY 1 ORDER BY 1",
    ),
    (
        "day grain at the end of the data",
        "SELECT order_date, revenue, orders FROM sales WHERE order_date >= DATE '2024-12-25' ORDER BY order_date",
        f"SELECT o.order_date, {REVENUE}, {ORDERS_DISTINCT} FROM {LINES} WHERE o.order_date >= DATE '2024-12-25' GROUP BY 1 ORDER BY 1",
    ),
    (
        "date picker bounds",
        "SELECT MIN(order_date), MAX(order_date) FROM sales",
        "SELECT MIN(order_date), MAX(order_date) FROM orders",
    ),
    (
        "filter list of a dimension",
        "SELECT DISTINCT region FROM sales ORDER BY 1",
        "SELECT DISTINCT region FROM stores ORDER BY 1",
    ),
    (
        "a BI wrapper subquery",
        "SELECT region, SUM(revenue) AS r FROM (SELECT region, revenue FROM sales) t GROUP BY region ORDER BY 1",
        f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "an expression over two metrics",
        "SELECT region, revenue / orders AS per_order FROM sales ORDER BY region",
        f"SELECT s.region, CAST({REVENUE} / {ORDERS_DISTINCT} AS DECIMAL(38, 10)) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "EXTRACT(YEAR ...) as the grain",
        "SELECT EXTRACT(YEAR FROM order_date) AS y, units FROM sales GROUP BY 1 ORDER BY 1",
        # EXTRACT is an integer here (PostgreSQL 15 returns numeric; docs/clients.md).
        f"SELECT CAST(EXTRACT(YEAR FROM o.order_date) AS INTEGER), CAST(SUM(CASE WHEN {OK} THEN l.quantity END) AS BIGINT) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "LIMIT and OFFSET over a metric ordering",
        "SELECT store_name, revenue FROM sales ORDER BY revenue DESC LIMIT 5 OFFSET 3",
        f"SELECT s.store_name, {REVENUE} r FROM {LINES} GROUP BY 1 ORDER BY r DESC LIMIT 5 OFFSET 3",
    ),
    (
        "segment and channel, two dimensions from two tables",
        "SELECT segment, channel, revenue, customers FROM sales ORDER BY 1, 2",
        f"SELECT c.segment, o.channel, {REVENUE}, COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END) FROM {LINES} GROUP BY 1, 2 ORDER BY 1, 2",
    ),
]


def normalize(value):
    if isinstance(value, (decimal.Decimal, int)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-8, abs_tol=1e-6)
    return a == b


def assert_rows_equal(ours, truth):
    ours = [tuple(normalize(v) for v in row) for row in ours]
    truth = [tuple(normalize(v) for v in row) for row in truth]
    assert len(ours) == len(truth), f"{len(ours)} rows vs {len(truth)} expected"
    assert len(ours) > 0
    for i, (a, b) in enumerate(zip(ours, truth)):
        assert len(a) == len(b), f"row {i}: {a} vs {b}"
        assert all(same(x, y) for x, y in zip(a, b)), f"row {i}: {a} != {b}"


# The PostgreSQL type (OID) of each DuckDB result type.
PG_TYPE_OF_DUCKDB = {
    "BOOLEAN": 16, "BIGINT": 20, "SMALLINT": 21, "INTEGER": 23, "VARCHAR": 25, "FLOAT": 700,
    "DOUBLE": 701, "DATE": 1082, "TIMESTAMP": 1114, "TIMESTAMP WITH TIME ZONE": 1184, "HUGEINT": 1700,
}


def duckdb_pg_types(description):
    return [1700 if str(d[1]).startswith("DECIMAL") else PG_TYPE_OF_DUCKDB.get(str(d[1]), str(d[1]))
            for d in description]


@pytest.mark.parametrize("name,ours,truth", CASES, ids=[c[0] for c in CASES])
def test_metric_matches_ground_truth(conn, duck, name, ours, truth):
    """Values and the PostgreSQL type of every column: the hand-written query states the
    type PostgreSQL gives (SUM of integers is bigint, AVG of numeric is numeric, a grain
    column of a date is a date), so a changed type fails here."""
    cur = conn.execute(ours)
    got = cur.fetchall()
    expected = duck.execute(truth).fetchall()
    assert_rows_equal(got, expected)
    assert [d.type_code for d in cur.description] == duckdb_pg_types(duck.description)


def test_metric_condition_filters_groups(conn, duck):
    """A WHERE condition on a metric filters after aggregation (as HAVING)."""
    per_city = duck.execute(f"SELECT s.city, {REVENUE} AS r FROM {LINES} GROUP BY 1 ORDER BY 2").fetchall()
    threshold = float(per_city[len(per_city) // 2][1])
    got = conn.execute(
        "SELECT city, revenue FROM sales WHERE revenue > %s ORDER BY city", (threshold,)
    ).fetchall()
    expected = duck.execute(
        f"SELECT s.city, {REVENUE} FROM {LINES} GROUP BY 1 HAVING {REVENUE} > ? ORDER BY 1", [threshold]
    ).fetchall()
    assert 0 < len(expected) < len(per_city)
    assert_rows_equal(got, expected)


def test_having_filters_groups(conn, duck):
    per_city = duck.execute(f"SELECT s.city, {ORDERS_DISTINCT} AS n FROM {LINES} GROUP BY 1 ORDER BY 2").fetchall()
    threshold = int(per_city[len(per_city) // 3][1])
    got = conn.execute(
        "SELECT city, SUM(orders) FROM sales GROUP BY city HAVING SUM(orders) >= %s ORDER BY 1", (threshold,)
    ).fetchall()
    expected = duck.execute(
        f"SELECT s.city, {ORDERS_DISTINCT} FROM {LINES} GROUP BY 1 HAVING {ORDERS_DISTINCT} >= ? ORDER BY 1",
        [threshold],
    ).fetchall()
    assert 0 < len(expected) < len(per_city)
    assert_rows_equal(got, expected)


def test_total_of_non_additive_metric_is_not_summed(conn):
    """Customers per region do not add up to all customers: the total is computed, not summed."""
    total = conn.execute("SELECT customers FROM sales").fetchone()[0]
    by_region = conn.execute("SELECT region, customers FROM sales").fetchall()
    assert sum(r[1] for r in by_region) > total
