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


def quotient6(numerator, denominator):
    """A quotient of a numeric(p, 2) by an integer as PostgreSQL gives it to 6 places
    (AVG of numeric(p, 2) is numeric(p + 4, 6), docs/model-reference.md): rounded half
    away from zero, from the exact numerator and denominator (the demo's amounts are
    positive; the scaled quotient is a double within 1e-7 of the exact one, which moves
    the rounding only for a quotient that close to a half)."""
    return (f"CAST(FLOOR(({numerator}) * 1000000 / ({denominator}) + 0.5) AS BIGINT)"
            " * CAST(0.000001 AS DECIMAL(7, 6))")


def avg6(x):
    return quotient6(f"SUM({x})", f"COUNT({x})")
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
        f"SELECT o.channel, {avg6('l.unit_price')} FROM {LINES} GROUP BY 1 ORDER BY 1",
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
        f"""SELECT s.region, COUNT(CASE WHEN {OK} THEN 1 END), {avg6(f"CASE WHEN {OK} THEN o.order_amount END")},
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
        f"SELECT s.region, {quotient6(REVENUE, ORDERS_DISTINCT)} FROM {LINES} GROUP BY 1 ORDER BY 1",
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


# A double (DOUBLE PRECISION) summed by another engine in another order may differ in
# its last bits: the bound on the error of a sum of n doubles is n·ε, 1.6 million order
# lines × 1.1e-16 ≈ 1.8e-10 of the sum of magnitudes; 1e-9 relative allows that and no
# more. numeric values, integers, text and dates are compared exactly.
FLOAT_TOLERANCE = 1e-9


def normalize(value):
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def same(a, b, float_tol=FLOAT_TOLERANCE):
    """Exact for numeric, integers and everything else; `float_tol` relative for doubles.
    A numeric against a double is a difference of type, never equal."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=float_tol, abs_tol=float_tol)
    if isinstance(a, float) or isinstance(b, float):
        # An integer-valued double against an integer (a COUNT read as a double by a
        # client) is the same number; a double against a numeric is not the same answer.
        if isinstance(a, int) or isinstance(b, int):
            return float(a) == float(b)
        return False
    if isinstance(a, (decimal.Decimal, int)) and isinstance(b, (decimal.Decimal, int)):
        return decimal.Decimal(a) == decimal.Decimal(b)
    return a == b


def assert_rows_equal(ours, truth, float_tol=FLOAT_TOLERANCE):
    ours = [tuple(normalize(v) for v in row) for row in ours]
    truth = [tuple(normalize(v) for v in row) for row in truth]
    assert len(ours) == len(truth), f"{len(ours)} rows vs {len(truth)} expected"
    assert len(ours) > 0
    for i, (a, b) in enumerate(zip(ours, truth)):
        assert len(a) == len(b), f"row {i}: {a} vs {b}"
        assert all(same(x, y, float_tol) for x, y in zip(a, b)), f"row {i}: {a} != {b}"


def as_doubles(rows):
    """The hand-written answer for a client that holds every number as a double (a
    spreadsheet, a pandas frame, JSON): numeric values as the doubles nearest them,
    compared within the tolerance for doubles."""
    return [tuple(float(v) if isinstance(v, decimal.Decimal) else v for v in row) for row in rows]


def assert_same_answer(ours, truth, float_tol=FLOAT_TOLERANCE):
    """`ours`, a psycopg cursor, answers as `truth`, a DuckDB connection that ran the
    hand-written query: the same rows (numeric exactly) and the PostgreSQL type of every
    column as the hand-written query states it."""
    expected = truth.fetchall()
    assert_rows_equal(ours.fetchall(), expected, float_tol)
    assert [d.type_code for d in ours.description] == duckdb_pg_types(truth.description)
    return expected


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
    assert_same_answer(conn.execute(ours), duck.execute(truth))


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
