"""Step 4: every kind of metric (derived, composite, period-over-period, cumulative),
segments and targets equal a hand-written query on the same data. Here the embedded engine is checked against
DuckDB on the demo files; test_pushdown.py asks the same CASES of PostgreSQL and MariaDB
and checks them against queries run on those servers.

The hand-written queries are written independently of how kpitables computes: previous
periods by joining per-period totals on `period - INTERVAL`, windows by joining each day
with the daily totals before it and summing with CASE.
"""

import pytest

from test_ground_truth import LINES, OK, REVENUE, assert_rows_equal, assert_same_answer

COST = f"SUM(CASE WHEN {OK} THEN l.quantity * l.unit_cost END)"
ORDERS = f"COUNT(DISTINCT CASE WHEN {OK} THEN l.order_id END)"
ONLINE = f"SUM(CASE WHEN {OK} AND o.channel = 'online' THEN l.quantity * l.unit_price - l.discount END)"
FLOAT = "DOUBLE PRECISION"


def per_period(grain, where="1 = 1", extra_keys=""):
    """Revenue, cost and orders per period (and extra keys), over all data matching
    `where` (not limited to the periods shown)."""
    keys = f"CAST(date_trunc('{grain}', o.order_date) AS DATE) AS p" if grain != "day" else "o.order_date AS p"
    return f"""SELECT {keys}{extra_keys}, {REVENUE} AS r, {COST} AS c, {ORDERS} AS n
               FROM {LINES} WHERE {where} GROUP BY 1{', 2' if extra_keys else ''}"""


def growth(cur, prev):
    return f"CAST({cur} - {prev} AS {FLOAT}) / CAST({prev} AS {FLOAT})"


# Per-day totals and the days shown, for window metrics.
DAILY = f"""SELECT o.order_date AS day, {REVENUE} AS r FROM {LINES} GROUP BY 1"""

CASES = [
    (
        "derived: online revenue by region",
        "SELECT region, revenue, online_revenue FROM sales ORDER BY region",
        f"SELECT s.region, {REVENUE}, {ONLINE} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "derived metric with a further filter and a breakdown by category",
        "SELECT category, online_revenue FROM sales WHERE region = 'East' ORDER BY category",
        f"SELECT p.category, {ONLINE} FROM {LINES} WHERE s.region = 'East' GROUP BY 1 ORDER BY 1",
    ),
    (
        "composite: profit, margin rate, revenue per order and online share by region",
        "SELECT region, gross_profit, gross_margin_rate, revenue_per_order, online_share FROM sales ORDER BY region",
        f"""SELECT s.region, {REVENUE} - {COST},
                   CAST({REVENUE} - {COST} AS {FLOAT}) / CAST({REVENUE} AS {FLOAT}),
                   CAST({REVENUE} AS {FLOAT}) / CAST({ORDERS} AS {FLOAT}),
                   CAST({ONLINE} AS {FLOAT}) / CAST({REVENUE} AS {FLOAT})
            FROM {LINES} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "composite: the margin rate of a year is computed from the year's totals",
        "SELECT order_date__year, gross_margin_rate FROM sales ORDER BY 1",
        f"""SELECT CAST(date_trunc('year', o.order_date) AS DATE), CAST({REVENUE} - {COST} AS {FLOAT}) / CAST({REVENUE} AS {FLOAT})
            FROM {LINES} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "composite: the total margin rate is not an average of the regions' rates",
        "SELECT gross_margin_rate FROM sales",
        f"SELECT CAST({REVENUE} - {COST} AS {FLOAT}) / CAST({REVENUE} AS {FLOAT}) FROM {LINES}",
    ),
    (
        "composite: division by zero gives NULL (cancelled orders have no orders)",
        "SELECT order_status, revenue_per_order FROM sales ORDER BY 1",
        f"""SELECT o.status, CAST({REVENUE} AS {FLOAT}) / CAST(NULLIF({ORDERS}, 0) AS {FLOAT})
            FROM {LINES} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "previous period by month, filtered from January: December is read for January, and the "
        "periods end with the data's last month (the month after it is no period of the answer)",
        "SELECT order_date__month, revenue, revenue_previous_period, revenue_growth FROM sales_trends WHERE order_date >= '2024-01-01' ORDER BY 1",
        f"""WITH m AS ({per_period('month')}),
                 k AS (SELECT p FROM m UNION SELECT CAST(p + INTERVAL '1 month' AS DATE) FROM m)
            SELECT k.p, cur.r, prev.r, {growth('cur.r', 'prev.r')}
            FROM k LEFT JOIN m cur ON cur.p = k.p LEFT JOIN m prev ON prev.p = k.p - INTERVAL '1 month'
            WHERE k.p >= DATE '2024-01-01' AND k.p <= (SELECT max(p) FROM m) ORDER BY 1""",
    ),
    (
        "previous period at the first month of the data is NULL",
        "SELECT order_date__month, revenue_previous_period, revenue_growth FROM sales_trends WHERE order_date < '2022-04-01' ORDER BY 1",
        f"""WITH m AS ({per_period('month')})
            SELECT cur.p, prev.r, {growth('cur.r', 'prev.r')}
            FROM m cur LEFT JOIN m prev ON prev.p = cur.p - INTERVAL '1 month'
            WHERE cur.p < DATE '2022-04-01' ORDER BY 1""",
    ),
    (
        "same quarter last year by region: growth and difference of orders",
        "SELECT order_date__quarter, region, revenue_yoy_growth, orders_yoy_difference FROM sales_trends WHERE order_date >= '2023-01-01' ORDER BY 1, 2",
        f"""WITH q AS ({per_period('quarter', extra_keys=', s.region AS g')})
            SELECT cur.p, cur.g, {growth('cur.r', 'prev.r')}, cur.n - prev.n
            FROM q cur LEFT JOIN q prev ON prev.p = cur.p - INTERVAL '1 year' AND prev.g = cur.g
            WHERE cur.p >= DATE '2023-01-01' ORDER BY 1, 2""",
    ),
    (
        "previous day inside a date range: the day before the range is read",
        "SELECT order_date, revenue_previous_period FROM sales_trends WHERE order_date BETWEEN '2024-03-01' AND '2024-03-10' ORDER BY 1",
        f"""WITH d AS ({per_period('day')})
            SELECT cur.p, prev.r FROM d cur LEFT JOIN d prev ON prev.p = cur.p - INTERVAL '1 day'
            WHERE cur.p BETWEEN DATE '2024-03-01' AND DATE '2024-03-10' ORDER BY 1""",
    ),
    (
        "same day last year across February 29: the earlier year's days are read, 2024-02-29 has none",
        "SELECT order_date, revenue, revenue_yoy_growth FROM sales_trends WHERE order_date BETWEEN '2024-02-27' AND '2024-03-01' ORDER BY 1",
        f"""WITH d AS ({per_period('day')})
            SELECT cur.p, cur.r, {growth('cur.r', 'prev.r')}
            FROM d cur LEFT JOIN d prev ON prev.p + INTERVAL '1 year' = cur.p
            WHERE cur.p BETWEEN DATE '2024-02-27' AND DATE '2024-03-01' ORDER BY 1""",
    ),
    (
        "previous ISO week, with the grain written as date_trunc",
        "SELECT date_trunc('week', order_date) AS week, revenue_growth FROM sales_trends WHERE order_date >= '2024-01-01' AND order_date < '2024-04-01' GROUP BY 1 ORDER BY 1",
        # date_trunc of a date is a timestamp, as the query wrote it.
        f"""WITH w AS ({per_period('week')})
            SELECT CAST(cur.p AS TIMESTAMP), {growth('cur.r', 'prev.r')}
            FROM w cur LEFT JOIN w prev ON prev.p = cur.p - INTERVAL '7 day'
            WHERE cur.p >= DATE '2024-01-01' AND cur.p < DATE '2024-04-01' ORDER BY 1""",
    ),
    (
        "year over year by year, and a composite compared with the previous year",
        "SELECT order_date__year, revenue_yoy_growth, margin_rate_growth FROM sales_trends ORDER BY 1",
        f"""WITH y AS ({per_period('year')})
            SELECT cur.p, {growth('cur.r', 'prev.r')},
                   CAST(cur.r - cur.c AS {FLOAT}) / CAST(cur.r AS {FLOAT}) - CAST(prev.r - prev.c AS {FLOAT}) / CAST(prev.r AS {FLOAT})
            FROM y cur LEFT JOIN y prev ON prev.p = cur.p - INTERVAL '1 year' ORDER BY 1""",
    ),
    (
        "month-to-date, year-to-date, running total, trailing 7 days and its daily average, inside a date range",
        "SELECT order_date, revenue_mtd, revenue_ytd, revenue_running_total, revenue_trailing_7d, revenue_avg_7d FROM sales_trends WHERE order_date BETWEEN '2024-03-01' AND '2024-03-10' ORDER BY 1",
        f"""WITH daily AS ({DAILY})
            SELECT d.day,
                   SUM(CASE WHEN x.day >= CAST(date_trunc('month', d.day) AS DATE) THEN x.r END),
                   SUM(CASE WHEN x.day >= CAST(date_trunc('year', d.day) AS DATE) THEN x.r END),
                   SUM(x.r),
                   SUM(CASE WHEN x.day > d.day - INTERVAL '7 day' THEN x.r END),
                   CAST(SUM(CASE WHEN x.day > d.day - INTERVAL '7 day' THEN x.r END) AS {FLOAT}) / 7
            FROM daily d JOIN daily x ON x.day <= d.day
            WHERE d.day BETWEEN DATE '2024-03-01' AND DATE '2024-03-10'
            GROUP BY d.day ORDER BY 1""",
    ),
    (
        "year-to-date by month from April: January to March are read",
        "SELECT order_date__month, revenue, revenue_ytd FROM sales_trends WHERE order_date >= '2024-04-01' AND order_date < '2024-07-01' ORDER BY 1",
        f"""WITH m AS ({per_period('month')})
            SELECT cur.p, cur.r, SUM(x.r) FROM m cur JOIN m x
              ON x.p <= cur.p AND x.p >= CAST(date_trunc('year', cur.p) AS DATE)
            WHERE cur.p >= DATE '2024-04-01' AND cur.p < DATE '2024-07-01'
            GROUP BY cur.p, cur.r ORDER BY 1""",
    ),
    (
        "month- and year-to-date by day with the day's month and week beside it: the windows run across them",
        "SELECT order_date__month, order_date__week, order_date, revenue_mtd, revenue_ytd FROM sales_trends WHERE order_date BETWEEN '2024-02-26' AND '2024-03-05' ORDER BY 3",
        f"""WITH daily AS ({DAILY})
            SELECT CAST(date_trunc('month', d.day) AS DATE), CAST(date_trunc('week', d.day) AS DATE), d.day,
                   SUM(CASE WHEN x.day >= CAST(date_trunc('month', d.day) AS DATE) THEN x.r END),
                   SUM(x.r)
            FROM daily d JOIN daily x ON x.day <= d.day AND x.day >= CAST(date_trunc('year', d.day) AS DATE)
            WHERE d.day BETWEEN DATE '2024-02-26' AND DATE '2024-03-05'
            GROUP BY d.day ORDER BY 3""",
    ),
    (
        "previous period with the month before the day: the period is the finest grain, the day",
        "SELECT order_date__month, order_date, revenue, revenue_previous_period FROM sales_trends WHERE order_date BETWEEN '2024-02-28' AND '2024-03-02' ORDER BY 2",
        f"""WITH d AS ({per_period('day')})
            SELECT CAST(date_trunc('month', cur.p) AS DATE), cur.p, cur.r, prev.r
            FROM d cur LEFT JOIN d prev ON prev.p = cur.p - INTERVAL '1 day'
            WHERE cur.p BETWEEN DATE '2024-02-28' AND DATE '2024-03-02' ORDER BY 2""",
    ),
    (
        "trailing 7 days by region, filtered on channel",
        "SELECT order_date, region, revenue_trailing_7d FROM sales_trends WHERE channel = 'online' AND order_date BETWEEN '2023-12-30' AND '2024-01-02' ORDER BY 1, 2",
        f"""WITH daily AS (SELECT o.order_date AS day, s.region AS g, {REVENUE} AS r FROM {LINES}
                           WHERE o.channel = 'online' GROUP BY 1, 2)
            SELECT d.day, d.g, SUM(x.r) FROM daily d JOIN daily x
              ON x.g = d.g AND x.day <= d.day AND x.day > d.day - INTERVAL '7 day'
            WHERE d.day BETWEEN DATE '2023-12-30' AND DATE '2024-01-02'
            GROUP BY d.day, d.g ORDER BY 1, 2""",
    ),
    (
        "trailing 30-day active customers, a distinct count over the window",
        "SELECT order_date, customers, active_customers_30d FROM sales_trends WHERE order_date BETWEEN '2024-06-01' AND '2024-06-03' ORDER BY 1",
        f"""WITH bought AS (SELECT DISTINCT o.order_date AS day, o.customer_id AS who
                            FROM order_lines l JOIN orders o ON l.order_id = o.order_id
                            WHERE {OK} AND o.order_date BETWEEN DATE '2024-05-01' AND DATE '2024-06-03'),
                 days AS (SELECT DISTINCT o.order_date AS day FROM orders o
                          WHERE o.order_date BETWEEN DATE '2024-06-01' AND DATE '2024-06-03')
            SELECT d.day,
                   COUNT(DISTINCT CASE WHEN b.day = d.day THEN b.who END),
                   COUNT(DISTINCT b.who)
            FROM days d JOIN bought b ON b.day <= d.day AND b.day > d.day - INTERVAL '30 day'
            GROUP BY d.day ORDER BY 1""",
    ),
]


CUSTOMERS = f"COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END)"

CASES += [
    (
        "share of total by region (the total over all regions)",
        "SELECT region, revenue_share, customer_share FROM sales ORDER BY region",
        f"""WITH g AS (SELECT s.region AS k, {REVENUE} AS r, {CUSTOMERS} AS c FROM {LINES} GROUP BY 1),
                 t AS (SELECT {REVENUE} AS r, {CUSTOMERS} AS c FROM {LINES})
            SELECT g.k, CAST(g.r AS {FLOAT}) / CAST(t.r AS {FLOAT}), CAST(g.c AS {FLOAT}) / CAST(t.c AS {FLOAT})
            FROM g CROSS JOIN t ORDER BY 1""",
    ),
    (
        "share of total within the rows a filter selects",
        "SELECT category, revenue_share FROM sales WHERE channel = 'online' AND order_date >= '2024-01-01' ORDER BY category",
        f"""WITH g AS (SELECT p.category AS k, {REVENUE} AS r FROM {LINES}
                       WHERE o.channel = 'online' AND o.order_date >= DATE '2024-01-01' GROUP BY 1),
                 t AS (SELECT {REVENUE} AS r FROM {LINES} WHERE o.channel = 'online' AND o.order_date >= DATE '2024-01-01')
            SELECT g.k, CAST(g.r AS {FLOAT}) / CAST(t.r AS {FLOAT}) FROM g CROSS JOIN t ORDER BY 1""",
    ),
]

NORTH = "s.region = 'North'"

CASES += [
    (
        "segment as a filter",
        "SELECT category, revenue, orders FROM sales WHERE north_region ORDER BY category",
        f"SELECT p.category, {REVENUE}, {ORDERS} FROM {LINES} WHERE {NORTH} GROUP BY 1 ORDER BY 1",
    ),
    (
        "segment as a grouping column, with a composite",
        "SELECT new_customers, customers, revenue_per_order FROM sales GROUP BY 1 ORDER BY 1",
        f"""SELECT c.signup_date >= DATE '2024-01-01', COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END),
                   CAST({REVENUE} AS {FLOAT}) / CAST({ORDERS} AS {FLOAT})
            FROM {LINES} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "segment negated and combined with a dimension filter",
        "SELECT region, revenue FROM sales WHERE NOT online_orders AND region <> 'West' ORDER BY 1",
        f"""SELECT s.region, {REVENUE} FROM {LINES}
            WHERE NOT (o.channel IN ('online', 'app')) AND s.region <> 'West' GROUP BY 1 ORDER BY 1""",
    ),
    (
        "a view that applies a segment to every query",
        "SELECT city, revenue, orders FROM north_sales ORDER BY city",
        f"SELECT s.city, {REVENUE}, {ORDERS} FROM {LINES} WHERE {NORTH} GROUP BY 1 ORDER BY 1",
    ),
    (
        "the applied segment holds for the previous period too",
        "SELECT order_date__month, revenue, revenue_growth FROM north_sales WHERE order_date >= '2024-07-01' ORDER BY 1",
        f"""WITH m AS ({per_period('month', where=NORTH)})
            SELECT cur.p, cur.r, {growth('cur.r', 'prev.r')}
            FROM m cur LEFT JOIN m prev ON prev.p = cur.p - INTERVAL '1 month'
            WHERE cur.p >= DATE '2024-07-01' ORDER BY 1""",
    ),
]


def targets_by(key, where="1 = 1"):
    return f"SELECT {key} AS p, SUM(t.revenue_target) AS target FROM revenue_targets t WHERE {where} GROUP BY 1"


CASES += [
    (
        "targets and attainment by month and region",
        "SELECT order_date__month, region, revenue, revenue_target, revenue_attainment FROM sales_targets WHERE order_date >= '2024-10-01' ORDER BY 1, 2",
        f"""WITH a AS (SELECT CAST(date_trunc('month', o.order_date) AS DATE) AS p, s.region AS g, {REVENUE} AS r
                       FROM {LINES} WHERE o.order_date >= DATE '2024-10-01' GROUP BY 1, 2)
            SELECT a.p, a.g, a.r, t.revenue_target, CAST(a.r AS {FLOAT}) / CAST(t.revenue_target AS {FLOAT})
            FROM a JOIN revenue_targets t ON t.month = a.p AND t.region = a.g ORDER BY 1, 2""",
    ),
    (
        "targets roll up to quarters: attainment from the quarter's totals",
        "SELECT order_date__quarter, revenue, revenue_target, revenue_attainment FROM sales_targets WHERE order_date >= '2024-01-01' ORDER BY 1",
        f"""WITH a AS (SELECT CAST(date_trunc('quarter', o.order_date) AS DATE) AS p, {REVENUE} AS r FROM {LINES}
                       WHERE o.order_date >= DATE '2024-01-01' GROUP BY 1),
                 t AS ({targets_by("CAST(date_trunc('quarter', t.month) AS DATE)", "t.month >= DATE '2024-01-01'")})
            SELECT a.p, a.r, t.target, CAST(a.r AS {FLOAT}) / CAST(t.target AS {FLOAT})
            FROM a JOIN t ON t.p = a.p ORDER BY 1""",
    ),
    (
        "targets by region over all time, and by year for one region",
        "SELECT region, revenue_target, revenue_attainment FROM sales_targets ORDER BY 1",
        f"""WITH a AS (SELECT s.region AS g, {REVENUE} AS r FROM {LINES} GROUP BY 1),
                 t AS ({targets_by("t.region")})
            SELECT a.g, t.target, CAST(a.r AS {FLOAT}) / CAST(t.target AS {FLOAT})
            FROM a JOIN t ON t.p = a.g ORDER BY 1""",
    ),
    (
        "yearly attainment of the East region",
        "SELECT order_date__year, revenue_attainment FROM sales_targets WHERE region = 'East' ORDER BY 1",
        f"""WITH a AS (SELECT CAST(date_trunc('year', o.order_date) AS DATE) AS p, {REVENUE} AS r FROM {LINES}
                       WHERE s.region = 'East' GROUP BY 1),
                 t AS ({targets_by("CAST(date_trunc('year', t.month) AS DATE)", "t.region = 'East'")})
            SELECT a.p, CAST(a.r AS {FLOAT}) / CAST(t.target AS {FLOAT}) FROM a JOIN t ON t.p = a.p ORDER BY 1""",
    ),
]


def under(condition, value):
    """`value`'s aggregate with `condition` added to its CASE (the metric over the rows
    that meet it)."""
    return value.replace(f"CASE WHEN {OK} THEN", f"CASE WHEN {OK} AND {condition} THEN")


APP = "o.channel = 'app'"
# Conditional aggregation (step 13): a BI tool's calculated field wraps a metric in
# CASE WHEN <condition on dimensions> THEN ... END or FILTER (WHERE ...); the answer is
# the metric over the rows meeting the condition, at the query's grain, for every kind.
CASES += [
    (
        "conditional: SUM(CASE WHEN channel = 'online' THEN revenue ELSE 0 END) by region",
        "SELECT region, SUM(CASE WHEN channel = 'online' THEN revenue ELSE 0 END) AS online FROM sales GROUP BY region ORDER BY 1",
        f"SELECT s.region, COALESCE({ONLINE}, 0) FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "conditional: FILTER (WHERE ...) and a ratio of the app channel, through a wrapper",
        "SELECT region, SUM(revenue) FILTER (WHERE channel = 'online'), MAX(CASE WHEN channel = 'app' THEN revenue_per_order END) "
        "FROM (SELECT * FROM sales) t GROUP BY region ORDER BY 1",
        f"""SELECT s.region, {ONLINE},
                   CAST({under(APP, REVENUE)} AS {FLOAT}) / CAST({under(APP, ORDERS)} AS {FLOAT})
            FROM {LINES} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "conditional: a distinct count under a condition on a joined dimension, no grouping",
        "SELECT SUM(CASE WHEN category = 'Electronics' THEN orders END) FROM sales",
        f"""SELECT {under("p.category = 'Electronics'", ORDERS)} FROM {LINES}""",
    ),
    (
        "conditional: by month under a filter, a condition no row of some groups meets",
        "SELECT order_date__month, SUM(CASE WHEN channel IN ('online', 'app') THEN revenue END), "
        "SUM(CASE WHEN region = 'Nowhere' THEN revenue ELSE 0 END) "
        "FROM sales WHERE order_date >= '2024-10-01' GROUP BY 1 ORDER BY 1",
        f"""SELECT CAST(date_trunc('month', o.order_date) AS DATE), {under("o.channel IN ('online', 'app')", REVENUE)},
                   COALESCE({under("s.region = 'Nowhere'", REVENUE)}, 0)
            FROM {LINES} WHERE o.order_date >= DATE '2024-10-01' GROUP BY 1 ORDER BY 1""",
    ),
]

# The time spine: a window metric has a value on every period whose window holds rows,
# whether the period has rows or not (West's online Electronics sales have no row on
# 2024-05-10), past the last row as far as a window reaches, and up to the filter's bound.
# The days are every day of the demo's range (every day has an order) and 30 after it.
SPARSE = "s.region = 'West' AND o.channel = 'online' AND p.category = 'Electronics'"
SPARSE_DAILY = f"SELECT o.order_date AS day, {REVENUE} AS r FROM {LINES} WHERE {SPARSE} GROUP BY 1"
ALL_DAYS = """SELECT DISTINCT o.order_date AS day FROM orders o
              UNION SELECT DISTINCT CAST(o.order_date + INTERVAL '30 day' AS DATE) FROM orders o"""
SPARSE_VIEW = "sales_trends WHERE region = 'West' AND channel = 'online' AND category = 'Electronics'"
# 8 to 12 May 2024, each day (every day has an order).
RANGE_DAYS = "SELECT DISTINCT o.order_date AS x FROM orders o WHERE o.order_date BETWEEN DATE '2024-05-08' AND DATE '2024-05-12'"

SPINE_CASES = [
    (
        "spine: a day without rows has its month-to-date, running total and trailing 7 days",
        f"SELECT order_date__month, order_date, revenue, revenue_mtd, revenue_running_total, revenue_trailing_7d FROM {SPARSE_VIEW} AND order_date BETWEEN '2024-05-08' AND '2024-05-12' ORDER BY 2",
        f"""WITH daily AS ({SPARSE_DAILY}), days AS ({ALL_DAYS})
            SELECT CAST(date_trunc('month', d.day) AS DATE), d.day, MAX(CASE WHEN x.day = d.day THEN x.r END),
                   SUM(CASE WHEN x.day >= CAST(date_trunc('month', d.day) AS DATE) THEN x.r END),
                   SUM(x.r),
                   SUM(CASE WHEN x.day > d.day - INTERVAL '7 day' THEN x.r END)
            FROM days d JOIN daily x ON x.day <= d.day
            WHERE d.day BETWEEN DATE '2024-05-08' AND DATE '2024-05-12'
            GROUP BY d.day ORDER BY 2""",
    ),
    (
        "spine: up to a bound past the last row, trailing 7 days go on until the window is empty",
        f"SELECT order_date, revenue_trailing_7d FROM {SPARSE_VIEW} AND order_date BETWEEN '2024-12-28' AND '2025-01-20' ORDER BY 1",
        f"""WITH daily AS ({SPARSE_DAILY}), days AS ({ALL_DAYS})
            SELECT d.day, SUM(x.r) FROM days d JOIN daily x ON x.day <= d.day AND x.day > d.day - INTERVAL '7 day'
            WHERE d.day BETWEEN DATE '2024-12-28' AND DATE '2025-01-20' GROUP BY d.day ORDER BY 1""",
    ),
    (
        "spine: without an upper bound every window ends with the data's last day, whatever the filters",
        f"SELECT order_date, revenue_running_total, revenue_trailing_7d FROM {SPARSE_VIEW} AND order_date >= '2024-12-28' ORDER BY 1",
        f"""WITH daily AS ({SPARSE_DAILY}), days AS ({ALL_DAYS})
            SELECT d.day, SUM(x.r), SUM(CASE WHEN x.day > d.day - INTERVAL '7 day' THEN x.r END)
            FROM days d JOIN daily x ON x.day <= d.day
            WHERE d.day >= DATE '2024-12-28' AND d.day <= (SELECT MAX(order_date) FROM orders) GROUP BY d.day ORDER BY 1""",
    ),
    (
        "spine: month-to-date ends with the last row's month",
        f"SELECT order_date, revenue_mtd FROM {SPARSE_VIEW} AND order_date BETWEEN '2024-12-28' AND '2025-01-05' ORDER BY 1",
        f"""WITH daily AS ({SPARSE_DAILY}), days AS ({ALL_DAYS})
            SELECT d.day, SUM(x.r) FROM days d JOIN daily x
              ON x.day <= d.day AND x.day >= CAST(date_trunc('month', d.day) AS DATE)
            WHERE d.day BETWEEN DATE '2024-12-28' AND DATE '2025-01-05' GROUP BY d.day ORDER BY 1""",
    ),
    (
        "spine: a running total runs up to the filter's bound, past the data",
        f"SELECT order_date, revenue_running_total FROM {SPARSE_VIEW} AND order_date BETWEEN '2024-12-30' AND '2025-01-03' ORDER BY 1",
        f"""WITH daily AS ({SPARSE_DAILY}), days AS ({ALL_DAYS})
            SELECT d.day, SUM(x.r) FROM days d JOIN daily x ON x.day <= d.day
            WHERE d.day BETWEEN DATE '2024-12-30' AND DATE '2025-01-03' GROUP BY d.day ORDER BY 1""",
    ),
    (
        "offset: a day whose previous day has rows has the previous day's value, with rows of its own or not",
        f"SELECT order_date, revenue_previous_period FROM {SPARSE_VIEW} AND order_date BETWEEN '2024-05-08' AND '2024-05-12' ORDER BY 1",
        f"""WITH daily AS ({SPARSE_DAILY}), days AS ({ALL_DAYS})
            SELECT d.day, x.r FROM days d JOIN daily x ON x.day = d.day - INTERVAL '1 day'
            WHERE d.day BETWEEN DATE '2024-05-08' AND DATE '2024-05-12' ORDER BY 1""",
    ),
    (
        "every period: each day of the range has the day's revenue, 0 on a day without rows",
        f"SELECT order_date, revenue, revenue_every_period FROM {SPARSE_VIEW} AND order_date BETWEEN '2024-05-08' AND '2024-05-12' ORDER BY 1",
        f"""WITH daily AS ({SPARSE_DAILY})
            SELECT t.x, d.r, coalesce(d.r, 0) FROM ({RANGE_DAYS}) AS t
            LEFT JOIN daily d ON d.day = t.x ORDER BY 1""",
    ),
    (
        "every period by day and category: the categories of each day's rows, a day without "
        "any row once, with NULL (MetricFlow's join_to_timespine)",
        f"SELECT order_date, category, revenue_every_period FROM {SPARSE_VIEW} AND order_date BETWEEN '2024-05-08' AND '2024-05-12' ORDER BY 1, 2",
        f"""WITH daily AS (SELECT o.order_date AS day, p.category AS g, {REVENUE} AS r FROM {LINES}
                           WHERE {SPARSE} GROUP BY 1, 2)
            SELECT t.x, d.g, coalesce(d.r, 0) FROM ({RANGE_DAYS}) AS t
            LEFT JOIN daily d ON d.day = t.x ORDER BY 1, 2""",
    ),
    (
        "spine: every category on every day, with rows on the day or not",
        "SELECT order_date, category, revenue_trailing_7d FROM sales_trends WHERE region = 'West' AND channel = 'online' AND order_date BETWEEN '2024-05-09' AND '2024-05-11' ORDER BY 1, 2",
        f"""WITH daily AS (SELECT o.order_date AS day, p.category AS g, {REVENUE} AS r FROM {LINES}
                           WHERE s.region = 'West' AND o.channel = 'online' GROUP BY 1, 2),
                 days AS ({ALL_DAYS})
            SELECT d.day, x.g, SUM(x.r) FROM days d JOIN daily x
              ON x.day <= d.day AND x.day > d.day - INTERVAL '7 day'
            WHERE d.day BETWEEN DATE '2024-05-09' AND DATE '2024-05-11'
            GROUP BY d.day, x.g ORDER BY 1, 2""",
    ),
]
CASES += SPINE_CASES

# 本年累计同比: this year's to-date against last year's to the same day (a period-over-period
# metric of a cumulative one). Last year's same day is the day one year before (29 February
# 2024 against 28 February 2023).
YTD = "x.day >= CAST(date_trunc('year', d.day) AS DATE) AND x.day <= d.day"
YTD_LAST_YEAR = ("x.day >= CAST(date_trunc('year', d.day) AS DATE) - INTERVAL '1 year' "
                 "AND x.day <= d.day - INTERVAL '1 year'")
CASES += [
    (
        "year-to-date against last year's to the same day, by day across 29 February",
        "SELECT order_date, revenue_ytd, revenue_ytd_last_year, revenue_ytd_yoy_growth FROM sales_trends "
        "WHERE order_date BETWEEN '2024-02-27' AND '2024-03-02' ORDER BY 1",
        f"""WITH daily AS ({DAILY}),
                 t AS (SELECT d.day, SUM(CASE WHEN {YTD} THEN x.r END) AS cur,
                              SUM(CASE WHEN {YTD_LAST_YEAR} THEN x.r END) AS prev
                       FROM daily d CROSS JOIN daily x
                       WHERE d.day BETWEEN DATE '2024-02-27' AND DATE '2024-03-02' GROUP BY d.day)
            SELECT day, cur, prev, {growth('cur', 'prev')} FROM t ORDER BY 1""",
    ),
    (
        "year-to-date growth by month and region: each month's to-date against the same months last year",
        "SELECT order_date__month, region, revenue_ytd_yoy_growth FROM sales_trends "
        "WHERE order_date >= '2024-01-01' AND order_date < '2025-01-01' ORDER BY 1, 2",
        f"""WITH m AS ({per_period('month', extra_keys=', s.region AS g')}),
                 t AS (SELECT d.p, d.g,
                              SUM(CASE WHEN x.p >= CAST(date_trunc('year', d.p) AS DATE) AND x.p <= d.p THEN x.r END) AS cur,
                              SUM(CASE WHEN x.p >= CAST(date_trunc('year', d.p) AS DATE) - INTERVAL '1 year'
                                        AND x.p <= d.p - INTERVAL '1 year' THEN x.r END) AS prev
                       FROM m d JOIN m x ON x.g = d.g
                       WHERE d.p >= DATE '2024-01-01' AND d.p < DATE '2025-01-01' GROUP BY d.p, d.g)
            SELECT p, g, {growth('cur', 'prev')} FROM t ORDER BY 1, 2""",
    ),
    (
        "last year's year-to-date alone by year: a row for each year after a year with data, up to "
        "the data's last year",
        "SELECT order_date__year, revenue_ytd_last_year FROM sales_trends ORDER BY 1",
        f"""WITH y AS ({per_period('year')})
            SELECT CAST(p + INTERVAL '1 year' AS DATE), r FROM y
            WHERE p + INTERVAL '1 year' <= (SELECT max(p) FROM y) ORDER BY 1""",
    ),
]


# Balances (semi-additive metrics, step 13): stock counts add up across stores, not across
# days. The hand-written queries keep a count when no later (earlier) count of the same
# store falls in the same period (NOT EXISTS), rather than comparing with a maximum.
COUNTS = "stock_counts c JOIN stores s ON s.store_id = c.store_id"
H1 = "c.count_date >= DATE '2024-01-01' AND c.count_date < DATE '2024-07-01'"


def last_in(grain, op=">", per_store=True):
    """The count is its store's last (op '>') or first ('<') of the period."""
    store = "l.store_id = c.store_id AND " if per_store else ""
    return f"""NOT EXISTS (SELECT 1 FROM stock_counts l WHERE {store}l.count_date {op} c.count_date
                              AND date_trunc('{grain}', l.count_date) = date_trunc('{grain}', c.count_date))"""


CLOSING_BY_MONTH = f"""SELECT CAST(date_trunc('month', c.count_date) AS DATE) AS m, SUM(c.units) AS u
                       FROM stock_counts c WHERE {last_in('month')} GROUP BY 1"""

SEMI_ADDITIVE_CASES = [
    (
        "balance: closing and opening stock and value by region and month (each store's last "
        "or first count in the month)",
        "SELECT region, count_date__month, stock_units, stock_value, opening_stock_units FROM inventory "
        "WHERE count_date >= '2024-01-01' AND count_date < '2024-07-01' ORDER BY 1, 2",
        f"""SELECT s.region, CAST(date_trunc('month', c.count_date) AS DATE),
                   CAST(SUM(CASE WHEN {last_in('month')} THEN c.units END) AS BIGINT),
                   CAST(SUM(CASE WHEN {last_in('month')} THEN c.stock_value END) AS BIGINT),
                   CAST(SUM(CASE WHEN {last_in('month', '<')} THEN c.units END) AS BIGINT)
            FROM {COUNTS} WHERE {H1} GROUP BY 1, 2 ORDER BY 1, 2""",
    ),
    (
        "balance: the stock now (each store's last count ever) and at the start, no grouping",
        "SELECT stock_units, opening_stock_units FROM inventory",
        f"""SELECT CAST(SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM stock_counts l WHERE l.store_id = c.store_id AND l.count_date > c.count_date) THEN c.units END) AS BIGINT),
                   CAST(SUM(CASE WHEN NOT EXISTS (SELECT 1 FROM stock_counts l WHERE l.store_id = c.store_id AND l.count_date < c.count_date) THEN c.units END) AS BIGINT)
            FROM stock_counts c""",
    ),
    (
        "balance: average stock by region and quarter (each store's average over its counts, summed)",
        "SELECT region, count_date__quarter, avg_stock_units FROM inventory WHERE count_date >= '2023-01-01' ORDER BY 1, 2",
        f"""SELECT region, q, CAST(SUM(a) AS DOUBLE PRECISION) FROM (
                SELECT s.region, CAST(date_trunc('quarter', c.count_date) AS DATE) AS q, c.store_id,
                       AVG(CAST(c.units AS DOUBLE PRECISION)) AS a
                FROM {COUNTS} WHERE c.count_date >= DATE '2023-01-01' GROUP BY 1, 2, 3) t
            GROUP BY 1, 2 ORDER BY 1, 2""",
    ),
    (
        "balance without `per`: the units of the month's last count day (only the stores counted that day)",
        "SELECT count_date__month, last_count_units FROM inventory WHERE count_date >= '2024-01-01' ORDER BY 1",
        f"""SELECT CAST(date_trunc('month', c.count_date) AS DATE), CAST(SUM(c.units) AS BIGINT)
            FROM stock_counts c WHERE c.count_date >= DATE '2024-01-01' AND {last_in('month', per_store=False)}
            GROUP BY 1 ORDER BY 1""",
    ),
    (
        "balance: month-end stock against the previous month-end (December 2023 read for January)",
        "SELECT count_date__month, stock_units, stock_units_change FROM inventory WHERE count_date >= '2024-01-01' ORDER BY 1",
        f"""WITH e AS ({CLOSING_BY_MONTH})
            SELECT cur.m, CAST(cur.u AS BIGINT), CAST(cur.u - prev.u AS BIGINT)
            FROM e cur LEFT JOIN e prev ON prev.m = cur.m - INTERVAL '1 month'
            WHERE cur.m >= DATE '2024-01-01' ORDER BY 1""",
    ),
    (
        "balance: a BI tool's SUM(CASE WHEN region = ... THEN stock END) by year (East stores' year-end stock)",
        "SELECT count_date__year, SUM(CASE WHEN region = 'East' THEN stock_units END) FROM inventory GROUP BY 1 ORDER BY 1",
        f"""SELECT CAST(date_trunc('year', c.count_date) AS DATE),
                   CAST(SUM(CASE WHEN {last_in('year')} THEN c.units END) AS BIGINT)
            FROM {COUNTS} WHERE s.region = 'East' GROUP BY 1 ORDER BY 1""",
    ),
    (
        "balance: through a BI wrapper that passes rows through, by city, in one region",
        "SELECT city, SUM(stock_units) FROM (SELECT * FROM inventory) t WHERE region = 'North' GROUP BY city ORDER BY 1",
        f"""SELECT s.city, CAST(SUM(c.units) AS BIGINT) FROM {COUNTS}
            WHERE s.region = 'North' AND NOT EXISTS (SELECT 1 FROM stock_counts l WHERE l.store_id = c.store_id AND l.count_date > c.count_date)
            GROUP BY 1 ORDER BY 1""",
    ),
]
CASES += SEMI_ADDITIVE_CASES

# Metric filters (step 13): a metric per row of a table as a dimension. The demo's
# customer_orders is each customer's order_count (orders not cancelled, at any time,
# whatever the query's filters); frequent_customer_revenue is revenue filtered by it.
CUSTOMER_ORDERS = """SELECT o.customer_id AS cid, COUNT(CASE WHEN o.status <> 'cancelled' THEN 1 END) AS n
                     FROM orders o GROUP BY 1"""
BY_CUSTOMER = f"{LINES} LEFT JOIN ({CUSTOMER_ORDERS}) k ON k.cid = o.customer_id"
METRIC_FILTER_CASES = [
    (
        "metric filter: frequent customers' revenue by region (customers with 30 or more orders)",
        "SELECT region, revenue, frequent_customer_revenue FROM sales ORDER BY region",
        f"""SELECT s.region, {REVENUE}, SUM(CASE WHEN {OK} AND k.n >= 30 THEN l.quantity * l.unit_price - l.discount END)
            FROM {BY_CUSTOMER} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "metric as a dimension: customers and revenue in 2024 by their number of orders (counted at any time)",
        "SELECT customer_orders, customers, revenue FROM sales WHERE order_date__year = DATE '2024-01-01' ORDER BY 1",
        f"""SELECT k.n, COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END), {REVENUE}
            FROM {BY_CUSTOMER} WHERE o.order_date >= DATE '2024-01-01' AND o.order_date < DATE '2025-01-01'
            GROUP BY 1 ORDER BY 1""",
    ),
    (
        "metric as a dimension in a query's WHERE, over the orders table, by segment",
        "SELECT segment, order_count FROM order_summary WHERE customer_orders BETWEEN 20 AND 25 ORDER BY 1",
        f"""SELECT c.segment, COUNT(CASE WHEN {OK} THEN 1 END)
            FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id
            LEFT JOIN ({CUSTOMER_ORDERS}) k ON k.cid = o.customer_id
            WHERE k.n BETWEEN 20 AND 25 GROUP BY 1 ORDER BY 1""",
    ),
    (
        "metric filter through a BI wrapper with a segment and a time grain",
        "SELECT order_date__quarter, SUM(frequent_customer_revenue) FROM (SELECT * FROM sales WHERE online_orders) t WHERE order_date < '2024-01-01' GROUP BY 1 ORDER BY 1",
        f"""SELECT CAST(date_trunc('quarter', o.order_date) AS DATE), SUM(CASE WHEN {OK} AND k.n >= 30 THEN l.quantity * l.unit_price - l.discount END)
            FROM {BY_CUSTOMER} WHERE o.channel IN ('online', 'app') AND o.order_date < DATE '2024-01-01' GROUP BY 1 ORDER BY 1""",
    ),
]
CASES += METRIC_FILTER_CASES

# Calendars (step 13): the demo's retail calendar gives each day its 4-4-5 retail month,
# its festival season and the day it is compared with a year earlier (last_year_day:
# in the Spring Festival season the same day counted from last year's festival). The
# hand-written queries join the same calendar table.
ALIGNED_DAILY = f"""SELECT o.order_date AS day, {REVENUE} AS r FROM {LINES} GROUP BY 1"""
CALENDAR_CASES = [
    (
        "calendar: revenue by 4-4-5 retail month in 2024",
        "SELECT retail_month, revenue FROM sales_trends WHERE order_date >= '2024-01-01' ORDER BY 1",
        f"""SELECT k.retail_month, {REVENUE} FROM {LINES} JOIN calendar k ON k.day = o.order_date
            WHERE o.order_date >= DATE '2024-01-01' GROUP BY 1 ORDER BY 1""",
    ),
    (
        "holiday-aligned: each day of the 2024 Spring Festival season against the aligned day of 2023's",
        "SELECT order_date, revenue, revenue_aligned_last_year, revenue_aligned_growth FROM sales_trends "
        "WHERE season = '春节' AND order_date__year = '2024-01-01' ORDER BY 1",
        f"""WITH d AS ({ALIGNED_DAILY})
            SELECT k.day, cur.r, prev.r, {growth('cur.r', 'prev.r')}
            FROM calendar k JOIN d cur ON cur.day = k.day LEFT JOIN d prev ON prev.day = k.last_year_day
            WHERE k.season = '春节' AND k.day >= DATE '2024-01-01' AND k.day < DATE '2025-01-01' ORDER BY 1""",
    ),
    (
        "holiday-aligned: the festival season's total by region, against last year's season",
        "SELECT region, revenue, revenue_aligned_last_year FROM sales_trends "
        "WHERE season = '春节' AND order_date BETWEEN '2023-01-01' AND '2023-12-31' GROUP BY region, order_date__year ORDER BY 1",
        f"""WITH r AS (SELECT o.order_date AS day, s.region, {REVENUE} AS r FROM {LINES} GROUP BY 1, 2)
            SELECT x.region, SUM(CASE WHEN x.day = k.day THEN x.r END), SUM(CASE WHEN x.day = k.last_year_day THEN x.r END)
            FROM calendar k JOIN r x ON x.day = k.day OR x.day = k.last_year_day
            WHERE k.season = '春节' AND k.day BETWEEN DATE '2023-01-01' AND DATE '2023-12-31'
            GROUP BY 1 ORDER BY 1""",
    ),
    (
        "holiday-aligned: by month, each day's aligned day counted (February 2024 reads late January to February 2023)",
        "SELECT order_date__month, revenue, revenue_aligned_last_year FROM sales_trends "
        "WHERE order_date BETWEEN '2024-01-01' AND '2024-03-31' ORDER BY 1",
        f"""WITH d AS ({ALIGNED_DAILY})
            SELECT CAST(date_trunc('month', k.day) AS DATE), SUM(cur.r), SUM(prev.r)
            FROM calendar k LEFT JOIN d cur ON cur.day = k.day LEFT JOIN d prev ON prev.day = k.last_year_day
            WHERE k.day BETWEEN DATE '2024-01-01' AND DATE '2024-03-31' GROUP BY 1 ORDER BY 1""",
    ),
]
# A grain of the calendar (retail_month): each retail month against the whole one before
# (periods ordered by their first days); by day, each day against the day at the same
# position in the retail month before (none past its end: a 5-week month's last week
# after a 4-week month).
RETAIL_NUMBERED = """SELECT day, retail_month AS p, row_number() OVER (PARTITION BY retail_month ORDER BY day) AS n
                     FROM calendar"""
RETAIL_PREVIOUS = """SELECT retail_month AS p, lag(retail_month) OVER (ORDER BY min(day)) AS prev
                     FROM calendar GROUP BY retail_month"""
CALENDAR_CASES += [
    (
        "calendar grain: each 4-4-5 retail month against the whole retail month before",
        "SELECT retail_month, revenue, revenue_last_retail_month, revenue_retail_month_growth FROM sales_trends "
        "WHERE order_date >= '2024-01-01' AND order_date < '2024-07-01' GROUP BY 1 ORDER BY 1",
        f"""WITH m AS (SELECT k.retail_month AS p, {REVENUE} AS r FROM {LINES} JOIN calendar k ON k.day = o.order_date GROUP BY 1),
                 q AS ({RETAIL_PREVIOUS})
            SELECT cur.p, cur.r, prev.r, {growth('cur.r', 'prev.r')}
            FROM m cur JOIN q ON q.p = cur.p LEFT JOIN m prev ON prev.p = q.prev
            WHERE cur.p >= DATE '2024-01-01' AND cur.p < DATE '2024-07-01' ORDER BY 1""",
    ),
    (
        "calendar grain by day: the day at the same position in the retail month before, none past its end",
        "SELECT order_date, revenue, revenue_last_retail_month FROM sales_trends "
        "WHERE order_date BETWEEN '2024-03-18' AND '2024-04-07' ORDER BY 1",
        f"""WITH d AS ({ALIGNED_DAILY}), n AS ({RETAIL_NUMBERED}), q AS ({RETAIL_PREVIOUS})
            SELECT t.day, cur.r, x.r FROM n t JOIN q ON q.p = t.p
            LEFT JOIN n s ON s.p = q.prev AND s.n = t.n LEFT JOIN d x ON x.day = s.day
            JOIN d cur ON cur.day = t.day
            WHERE t.day BETWEEN DATE '2024-03-18' AND DATE '2024-04-07' ORDER BY 1""",
    ),
]
CASES += CALENDAR_CASES

CASES += [
    (
        "fill_nulls_with: last year's revenue is 0 in the data's first year, not NULL",
        "SELECT order_date__month, revenue, revenue_last_year FROM sales_trends WHERE order_date < '2023-03-01' ORDER BY 1",
        f"""WITH m AS ({per_period('month')}),
                 k AS (SELECT p FROM m UNION SELECT CAST(p + INTERVAL '1 year' AS DATE) FROM m)
            SELECT k.p, cur.r, coalesce(prev.r, 0)
            FROM k LEFT JOIN m cur ON cur.p = k.p LEFT JOIN m prev ON prev.p = k.p - INTERVAL '1 year'
            WHERE k.p < DATE '2023-03-01' ORDER BY 1""",
    ),
]


def test_a_sum_of_balances_over_days_is_refused(conn):
    """Month-end stock summed over the months of a subquery is no stock at all: 0A000
    naming the balance; MAX over the same months is answered as written."""
    import psycopg

    with pytest.raises(psycopg.Error) as err:
        conn.execute(
            "SELECT region, SUM(stock_units) FROM (SELECT region, count_date__month, stock_units FROM inventory GROUP BY 1, 2) t GROUP BY 1"
        ).fetchall()
    assert err.value.sqlstate == "0A000"
    assert "balance" in str(err.value)
    peak = conn.execute(
        "SELECT MAX(stock_units) FROM (SELECT count_date__month, stock_units FROM inventory GROUP BY 1) t"
    ).fetchone()[0]
    months = conn.execute("SELECT count_date__month, stock_units FROM inventory ORDER BY 1").fetchall()
    assert len(months) == 36 and peak == max(u for _, u in months)

def test_a_condition_inside_an_aggregate_of_a_period_metric_is_refused(conn):
    """A growth of the online rows is not the online rows' growth in every model: 0A000
    with the way to ask it."""
    import psycopg

    with pytest.raises(psycopg.Error) as err:
        conn.execute(
            "SELECT order_date__year, SUM(CASE WHEN channel = 'online' THEN revenue_growth END) FROM sales_trends GROUP BY 1"
        ).fetchall()
    assert err.value.sqlstate == "0A000"
    assert "compares periods" in str(err.value)
    assert "WHERE" in (err.value.diag.message_hint or "")
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_retail_month_comparison_without_its_grain_or_the_date_is_refused(conn):
    """Grouped by region alone there is no period to compare: 0A000 naming both ways to
    ask it."""
    import psycopg

    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT region, revenue_last_retail_month FROM sales_trends GROUP BY 1").fetchall()
    assert err.value.sqlstate == "0A000"
    assert "grouped by neither \"retail_month\" nor \"order_date\"" in str(err.value)
    assert "retail_month" in (err.value.diag.message_hint or "")
    assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("name,ours,truth", CASES, ids=[c[0] for c in CASES])
def test_metric_kind_matches_ground_truth(conn, duck, name, ours, truth):
    assert_same_answer(conn.execute(ours), duck.execute(truth))


# Percentiles (step 13): each case is (name, our query, the hand-written query in
# PostgreSQL's and DuckDB's spelling, the same in MariaDB's). MariaDB has PERCENTILE_CONT
# and PERCENTILE_DISC only as window functions, so its query takes them over a partition
# and keeps one row of each. Filtered with WHERE, not the metric's CASE. The interpolated
# percentiles are doubles computed by one formula everywhere (lo + (hi - lo) * fraction,
# PostgreSQL's float8_lerp): 1e-12 relative allows for a last-bit difference in an
# engine's order of operations and nothing more; the discrete one is numeric, exact.
PCT = "percentile_cont({f}) WITHIN GROUP (ORDER BY CAST(o.order_amount AS DOUBLE PRECISION))"
PCT_DISC = "percentile_disc({f}) WITHIN GROUP (ORDER BY o.order_amount)"
PCT_OK = "o.status <> 'cancelled'"
PERCENTILE_TOLERANCE = 1e-12
PERCENTILE_CASES = [
    (
        "percentiles: median, p90 and the listed p90 by channel",
        "SELECT channel, median_order_value, p90_order_value, p90_order_value_listed FROM order_summary ORDER BY channel",
        f"""SELECT o.channel, {PCT.format(f=0.5)}, {PCT.format(f=0.9)}, {PCT_DISC.format(f=0.9)}
            FROM orders o WHERE {PCT_OK} GROUP BY 1 ORDER BY 1""",
        f"""SELECT DISTINCT o.channel, {PCT.format(f=0.5)} OVER (PARTITION BY o.channel),
                   {PCT.format(f=0.9)} OVER (PARTITION BY o.channel),
                   {PCT_DISC.format(f=0.9)} OVER (PARTITION BY o.channel)
            FROM orders o WHERE {PCT_OK} ORDER BY 1""",
    ),
    (
        "percentiles: all orders, no grouping",
        "SELECT median_order_value, p90_order_value, p90_order_value_listed FROM order_summary",
        f"""SELECT {PCT.format(f=0.5)}, {PCT.format(f=0.9)}, {PCT_DISC.format(f=0.9)}
            FROM orders o WHERE {PCT_OK}""",
        f"""SELECT DISTINCT {PCT.format(f=0.5)} OVER (), {PCT.format(f=0.9)} OVER (),
                   {PCT_DISC.format(f=0.9)} OVER ()
            FROM orders o WHERE {PCT_OK}""",
    ),
    (
        "percentiles: p90 by month and region (a joined dimension), from October 2024",
        "SELECT order_date__month, region, p90_order_value FROM order_summary WHERE order_date >= '2024-10-01' ORDER BY 1, 2",
        f"""SELECT CAST(date_trunc('month', o.order_date) AS DATE), s.region, {PCT.format(f=0.9)}
            FROM orders o JOIN stores s ON s.store_id = o.store_id
            WHERE {PCT_OK} AND o.order_date >= DATE '2024-10-01' GROUP BY 1, 2 ORDER BY 1, 2""",
        f"""SELECT DISTINCT CAST(DATE_FORMAT(o.order_date, '%Y-%m-01') AS DATE) AS m, s.region,
                   {PCT.format(f=0.9)} OVER (PARTITION BY DATE_FORMAT(o.order_date, '%Y-%m-01'), s.region)
            FROM orders o JOIN stores s ON s.store_id = o.store_id
            WHERE {PCT_OK} AND o.order_date >= DATE '2024-10-01' ORDER BY 1, 2""",
    ),
    (
        "percentiles: a BI tool's MAX around the metric over a wrapper, by segment",
        "SELECT segment, MAX(p90_order_value_listed) FROM (SELECT * FROM order_summary) t GROUP BY segment ORDER BY 1",
        f"""SELECT c.segment, {PCT_DISC.format(f=0.9)}
            FROM orders o JOIN customers c ON c.customer_id = o.customer_id
            WHERE {PCT_OK} GROUP BY 1 ORDER BY 1""",
        f"""SELECT DISTINCT c.segment, {PCT_DISC.format(f=0.9)} OVER (PARTITION BY c.segment)
            FROM orders o JOIN customers c ON c.customer_id = o.customer_id
            WHERE {PCT_OK} ORDER BY 1""",
    ),
]


@pytest.mark.parametrize("name,ours,truth,truth_mysql", PERCENTILE_CASES, ids=[c[0] for c in PERCENTILE_CASES])
def test_percentiles_match_ground_truth(conn, duck, name, ours, truth, truth_mysql):
    assert_same_answer(conn.execute(ours), duck.execute(truth), PERCENTILE_TOLERANCE)


def test_a_sum_of_percentiles_over_groups_is_refused(conn):
    """A percentile of the regions is not a sum of the stores' percentiles: 0A000, as for
    an average, whatever the wrapper."""
    import psycopg

    with pytest.raises(psycopg.Error) as err:
        conn.execute(
            "SELECT region, SUM(p90_order_value) FROM "
            "(SELECT region, city, p90_order_value FROM order_summary GROUP BY 1, 2) t GROUP BY 1"
        ).fetchall()
    assert err.value.sqlstate == "0A000"
    assert "is a percentile" in str(err.value)
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_period_metric_without_its_time_dimension_is_a_clear_error(conn):
    import psycopg

    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT region, revenue_growth FROM sales_trends").fetchall()
    assert err.value.sqlstate == "0A000"
    assert "order_date" in str(err.value)
    assert "order_date__month" in (err.value.diag.message_hint or "")
    # The session keeps working.
    assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT order_date__week, order_date__month, revenue_ytd FROM sales_trends",
        "SELECT order_date__month, EXTRACT(dow FROM order_date) AS dow, revenue_trailing_7d FROM sales_trends GROUP BY 1, 2",
    ],
)
def test_a_window_over_periods_split_by_another_grain_is_refused(conn, query):
    """A week beside a month, or a weekday beside a month, splits the periods a to-date or
    trailing value accumulates over: no governed number, so 0A000 rather than a window cut
    at each split."""
    import psycopg

    with pytest.raises(psycopg.Error) as err:
        conn.execute(query).fetchall()
    assert err.value.sqlstate == "0A000"
    assert "splits those periods" in str(err.value)
    assert "whole periods" in (err.value.diag.message_hint or "")
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_metric_kinds_and_definitions_show_in_the_catalog(conn):
    definition = conn.execute("SELECT pg_get_viewdef('sales_trends'::regclass)").fetchone()[0]
    assert "revenue_growth: period_over_period metric growth of revenue against the previous period of order_date" in definition
    assert "revenue_ytd: cumulative metric revenue over year-to-date of order_date" in definition
    assert "gross_margin_rate: composite metric" in definition
    definition = conn.execute("SELECT pg_get_viewdef('sales'::regclass)").fetchone()[0]
    assert "online_revenue: derived metric sum(CASE WHEN" in definition
    assert "north_region: segment region = 'North'" in definition


def test_segments_are_boolean_columns_with_their_definition_as_comment(conn):
    rows = conn.execute(
        """SELECT column_name, data_type, col_description('sales'::regclass, ordinal_position::int)
           FROM information_schema.columns WHERE table_name = 'sales' AND data_type = 'boolean'
           ORDER BY ordinal_position"""
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [
        ("north_region", "boolean"),
        ("new_customers", "boolean"),
        ("online_orders", "boolean"),
    ]
    assert rows[0][2] == "segment region = 'North': 北区: Orders taken by stores of the North region."


@pytest.fixture(scope="module")
def fiscal(tmp_path_factory):
    """The demo model with order_date's weeks starting on Sunday, a fiscal year
    starting in April, two offset metrics (a calendar month back, five days back) and a
    trailing window averaged over each period's days, served by its own kpitables."""
    import re

    import psycopg

    from conftest import DATA, ROOT, Kpitables

    model = tmp_path_factory.mktemp("fiscal-model")
    for path in (ROOT / "semantic" / "demo").glob("*.toml"):
        text = path.read_text()
        if path.name == "dimensions.toml":
            text = text.replace(
                'name = "order_date"\ntable = "orders"\nkind = "time"\n',
                'name = "order_date"\ntable = "orders"\nkind = "time"\nweek_start = "sunday"\nfiscal_year_start_month = 4\n',
            )
            assert "fiscal_year_start_month" in text
        if path.name == "sources.toml":
            text = re.sub(r'path = ".*"', f'path = "{DATA}"', text)
        if path.name == "metrics.toml":
            text += OFFSET_METRICS
        if path.name == "views.toml":
            text = text.replace('"revenue_previous_period", ', '"revenue_previous_period", "revenue_month_ago", "revenue_5_days_ago", "revenue_running_total_month_ago", "revenue_running_total_at_month_start", "revenue_on_month_start", "revenue_trailing_7d_daily_average", "revenue_every_day_from_may_10", ', 1)
            assert "revenue_month_ago" in text
        (model / path.name).write_text(text)
    k = Kpitables(model / "kpitables.log", ["--model", str(model)])
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            yield c
    finally:
        k.close()


OFFSET_METRICS = """
[[metrics]]
name = "revenue_month_ago"
base = "revenue"
time = "order_date"
compare = "1 month"
show = "value"

[[metrics]]
name = "revenue_5_days_ago"
base = "revenue"
time = "order_date"
compare = "5 days"
show = "value"

[[metrics]]
name = "revenue_running_total_month_ago"
base = "revenue_running_total"
time = "order_date"
compare = "1 month"
show = "value"

[[metrics]]
name = "revenue_running_total_at_month_start"
base = "revenue_running_total"
time = "order_date"
compare = "start_of_month"
show = "value"

[[metrics]]
name = "revenue_on_month_start"
base = "revenue"
time = "order_date"
compare = "start_of_month"
show = "value"

[[metrics]]
name = "revenue_from_may_10"
base = "revenue"
filter = "order_date >= '2024-05-10'"

[[metrics]]
name = "revenue_every_day_from_may_10"
base = "revenue_from_may_10"
time = "order_date"
window = "period"
fill_nulls_with = 0

[[metrics]]
name = "revenue_trailing_7d_daily_average"
base = "revenue"
time = "order_date"
window = "7 days"
period_agg = "average"
"""

# Fiscal year from April: the fiscal year (and quarter) of a date is found by moving the
# date back three months, truncating, and moving forward again.
FY = "CAST(date_trunc('year', o.order_date - INTERVAL '3 month') + INTERVAL '3 month' AS DATE)"
FQ = "CAST(date_trunc('quarter', o.order_date - INTERVAL '3 month') + INTERVAL '3 month' AS DATE)"
# Weeks from Sunday: the Sunday on or before the date.
SUNDAY_WEEK = "o.order_date - CAST(dayofweek(o.order_date) AS INTEGER)"

FISCAL_CASES = [
    (
        "revenue by fiscal year (April to March)",
        "SELECT order_date__fiscal_year, revenue FROM sales ORDER BY 1",
        f"SELECT {FY}, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1",
    ),
    (
        "growth against the previous fiscal quarter, from fiscal 2024",
        "SELECT order_date__fiscal_quarter, revenue, revenue_growth FROM sales_trends WHERE order_date >= '2024-04-01' ORDER BY 1",
        f"""WITH q AS (SELECT {FQ} AS p, {REVENUE} AS r FROM {LINES} GROUP BY 1)
            SELECT cur.p, cur.r, {growth('cur.r', 'prev.r')}
            FROM q cur LEFT JOIN q prev ON prev.p = cur.p - INTERVAL '3 month'
            WHERE cur.p >= DATE '2024-04-01' ORDER BY 1""",
    ),
    (
        "revenue by week starting on Sunday",
        "SELECT order_date__week, revenue FROM sales WHERE order_date BETWEEN '2024-03-03' AND '2024-03-30' ORDER BY 1",
        f"""SELECT {SUNDAY_WEEK}, {REVENUE} FROM {LINES}
            WHERE o.order_date BETWEEN DATE '2024-03-03' AND DATE '2024-03-30' GROUP BY 1 ORDER BY 1""",
    ),
]


# A calendar month back by day: each day reads the day `date - INTERVAL '1 month'` (29
# to 31 March 2024 all read 29 February); five days back by month: each row counts in
# the month of its day five days later, up to the data's last day. A trailing window
# averaged over a month's days is a decimal of four more places than the sum's, cut
# (not rounded) there, as the engine's avg of decimals.
LAST_DAY = "(SELECT MAX(order_date) FROM orders)"
OFFSET_CASES = [
    (
        "a month back by day: the last days of March read 29 February",
        "SELECT order_date, revenue_month_ago FROM sales_trends WHERE order_date BETWEEN '2024-03-27' AND '2024-04-02' ORDER BY 1",
        f"""WITH daily AS ({DAILY}), days AS (SELECT DISTINCT o.order_date AS day FROM orders o)
            SELECT d.day, x.r FROM days d JOIN daily x ON x.day = CAST(d.day - INTERVAL '1 month' AS DATE)
            WHERE d.day BETWEEN DATE '2024-03-27' AND DATE '2024-04-02' ORDER BY 1""",
    ),
    (
        "a running total a month back by day: the total to the day a month before",
        "SELECT order_date, revenue_running_total_month_ago FROM sales_trends WHERE order_date BETWEEN '2024-03-27' AND '2024-04-02' ORDER BY 1",
        f"""WITH daily AS ({DAILY}), days AS (SELECT DISTINCT o.order_date AS day FROM orders o)
            SELECT d.day, SUM(x.r) FROM days d JOIN daily x ON x.day <= CAST(d.day - INTERVAL '1 month' AS DATE)
            WHERE d.day BETWEEN DATE '2024-03-27' AND DATE '2024-04-02' GROUP BY 1 ORDER BY 1""",
    ),
    (
        "a running total on the first day of each day's month",
        "SELECT order_date, revenue_running_total_at_month_start FROM sales_trends WHERE order_date BETWEEN '2024-03-30' AND '2024-04-02' ORDER BY 1",
        f"""WITH daily AS ({DAILY}), days AS (SELECT DISTINCT o.order_date AS day FROM orders o)
            SELECT d.day, SUM(x.r) FROM days d JOIN daily x ON x.day <= CAST(date_trunc('month', d.day) AS DATE)
            WHERE d.day BETWEEN DATE '2024-03-30' AND DATE '2024-04-02' GROUP BY 1 ORDER BY 1""",
    ),
    (
        "the first day of the month each week (from Sunday) starts in, for weeks starting in the range",
        "SELECT order_date__week, revenue_on_month_start FROM sales_trends WHERE order_date BETWEEN '2024-03-01' AND '2024-04-30' ORDER BY 1",
        f"""WITH daily AS ({DAILY})
            SELECT w.day, x.r FROM daily w JOIN daily x ON x.day = CAST(date_trunc('month', w.day) AS DATE)
            WHERE dayofweek(w.day) = 0 AND w.day BETWEEN DATE '2024-03-01' AND DATE '2024-04-30' ORDER BY 1""",
    ),
    (
        "the first of January by year, for years whose first day has rows",
        "SELECT order_date__year, revenue_on_month_start FROM sales_trends ORDER BY 1",
        f"""WITH daily AS ({DAILY})
            SELECT day, r FROM daily WHERE month(day) = 1 AND day(day) = 1 ORDER BY 1""",
    ),
    (
        "every day of the range the metric's own filter on time keeps, 0 on a day without rows",
        f"SELECT order_date, revenue_every_day_from_may_10 FROM {SPARSE_VIEW} AND order_date BETWEEN '2024-05-08' AND '2024-05-12' ORDER BY 1",
        f"""WITH daily AS ({SPARSE_DAILY})
            SELECT t.x, coalesce(d.r, 0) FROM ({RANGE_DAYS}) AS t
            LEFT JOIN daily d ON d.day = t.x WHERE t.x >= DATE '2024-05-10' ORDER BY 1""",
    ),
    (
        "five days back by month, to the data's last day",
        "SELECT order_date__month, revenue_5_days_ago FROM sales_trends ORDER BY 1",
        f"""SELECT CAST(date_trunc('month', o.order_date + INTERVAL '5 day') AS DATE), {REVENUE} FROM {LINES}
            WHERE o.order_date + INTERVAL '5 day' <= {LAST_DAY} GROUP BY 1 ORDER BY 1""",
    ),
    (
        "a trailing 7 days by month: the average of the month's days' (period_agg average)",
        "SELECT order_date__month, revenue_trailing_7d_daily_average FROM sales_trends WHERE order_date >= '2024-01-01' ORDER BY 1",
        f"""WITH daily AS ({DAILY}), days AS (SELECT DISTINCT o.order_date AS day FROM orders o),
                 w AS (SELECT d.day, SUM(x.r) AS v FROM days d JOIN daily x ON x.day <= d.day AND x.day > d.day - INTERVAL '7 day'
                       WHERE d.day >= DATE '2024-01-01' GROUP BY 1)
            SELECT CAST(date_trunc('month', day) AS DATE), CAST(floor(AVG(v) * 1000000) / 1000000 AS DECIMAL(38, 6)) FROM w GROUP BY 1 ORDER BY 1""",
    ),
]


@pytest.mark.parametrize("name,ours,truth", FISCAL_CASES + OFFSET_CASES, ids=[c[0] for c in FISCAL_CASES + OFFSET_CASES])
def test_fiscal_years_and_week_starts_match_ground_truth(fiscal, duck, name, ours, truth):
    assert_same_answer(fiscal.execute(ours), duck.execute(truth))


def test_calendar_year_to_date_at_fiscal_quarter_grain(fiscal, duck):
    """A window ends with each fiscal quarter; year-to-date starts on 1 January of the
    year of the quarter's last day."""
    got = fiscal.execute(
        "SELECT order_date__fiscal_quarter, revenue_ytd FROM sales_trends WHERE order_date >= '2024-01-01' ORDER BY 1"
    ).fetchall()
    truth = duck.execute(
        f"""WITH q AS (SELECT DISTINCT {FQ} AS p FROM orders o WHERE o.order_date >= DATE '2024-01-01'),
                 daily AS (SELECT o.order_date AS day, {REVENUE} AS r FROM {LINES} GROUP BY 1)
            SELECT q.p, SUM(d.r) FROM q JOIN daily d
              ON d.day < q.p + INTERVAL '3 month'
             AND d.day >= date_trunc('year', q.p + INTERVAL '3 month' - INTERVAL '1 day')
            GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    assert_rows_equal(got, truth)


# Conversion metrics on a hand-written model: the demo plus a customer funnel. Signups are
# the base events (on signup_date), orders the conversion events (on order_date), linked
# by the customer; the conversions are grouped by the signup's own dimensions.
FUNNEL = """
[[dimensions]]
name = "customer_id"
table = "customers"
label = "客户编号"

[[dimensions]]
name = "home_city"
table = "customers"
expr = "city"
label = "客户所在城市"

[[metrics]]
name = "signups"
table = "customers"
agg = "count"
label = "注册客户数"

[[metrics]]
name = "first_order_rate_30d"
base = "signups"
conversion = "buying_customers"
entity = "customer_id"
time = "signup_date"
conversion_time = "order_date"
window = "30 days"
label = "注册30天下单率"

[[metrics]]
name = "orders_after_signup"
base = "signups"
conversion = "order_count"
entity = "customer_id"
time = "signup_date"
conversion_time = "order_date"
calculation = "conversions"
label = "注册后订单量"

[[metrics]]
name = "home_city_orders_after_signup"
base = "signups"
conversion = "order_count"
entity = "customer_id"
time = "signup_date"
conversion_time = "order_date"
calculation = "conversions"
constant_properties = [{ base = "home_city", conversion = "city" }]
label = "注册后本地订单量"

[[views]]
name = "customer_funnel"
dimensions = ["signup_date", "segment"]
metrics = ["signups", "first_order_rate_30d", "orders_after_signup", "home_city_orders_after_signup"]
"""


@pytest.fixture(scope="module")
def funnel(tmp_path_factory):
    import re

    import psycopg

    from conftest import DATA, ROOT, Kpitables

    model = tmp_path_factory.mktemp("funnel-model")
    for path in (ROOT / "semantic" / "demo").glob("*.toml"):
        text = path.read_text()
        if path.name == "sources.toml":
            text = re.sub(r'path = ".*"', f'path = "{DATA}"', text)
        (model / path.name).write_text(text)
    (model / "funnel.toml").write_text(FUNNEL)
    k = Kpitables(model / "kpitables.log", ["--model", str(model)])
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            yield c
    finally:
        k.close()


# Each non-cancelled order credited to its customer's signup when the signup is on or
# before it (and, for the 30-day rate, fewer than 30 days before).
def credited_orders(window="TRUE"):
    return f"""SELECT c.customer_id, c.segment, c.signup_date, o.order_id
               FROM orders o JOIN customers c ON c.customer_id = o.customer_id
               JOIN stores s ON s.store_id = o.store_id
               WHERE o.status <> 'cancelled' AND c.signup_date <= o.order_date AND {window}"""


WITHIN_30 = "c.signup_date > o.order_date - INTERVAL 30 DAY"
# A constant property: only orders taken by a store in the customer's own city.
HOME_CITY = "s.city = c.city"
FUNNEL_CASES = [
    (
        "first-order rate and orders after signup by signup month",
        "SELECT signup_date__month, signups, first_order_rate_30d, orders_after_signup FROM customer_funnel "
        "WHERE signup_date >= '2023-01-01' ORDER BY 1",
        f"""WITH b AS (SELECT CAST(date_trunc('month', signup_date) AS DATE) AS m, count(*) AS n FROM customers
                       WHERE signup_date >= DATE '2023-01-01' GROUP BY 1),
                 r AS (SELECT CAST(date_trunc('month', signup_date) AS DATE) AS m, count(DISTINCT customer_id) AS n
                       FROM ({credited_orders(WITHIN_30)}) GROUP BY 1),
                 a AS (SELECT CAST(date_trunc('month', signup_date) AS DATE) AS m, count(*) AS n
                       FROM ({credited_orders()}) GROUP BY 1)
            SELECT b.m, b.n, CAST(coalesce(r.n, 0) AS DOUBLE) / b.n, coalesce(a.n, 0)
            FROM b LEFT JOIN r USING (m) LEFT JOIN a USING (m) ORDER BY 1""",
    ),
    (
        "orders after signup in the customer's own city (constant_properties), by segment",
        "SELECT segment, orders_after_signup, home_city_orders_after_signup FROM customer_funnel ORDER BY 1",
        f"""WITH a AS (SELECT segment, count(*) AS n FROM ({credited_orders()}) GROUP BY 1),
                 h AS (SELECT segment, count(*) AS n FROM ({credited_orders(HOME_CITY)}) GROUP BY 1)
            SELECT a.segment, a.n, coalesce(h.n, 0) FROM a LEFT JOIN h USING (segment) ORDER BY 1""",
    ),
    (
        "first-order rate by segment",
        "SELECT segment, first_order_rate_30d FROM customer_funnel ORDER BY 1",
        f"""WITH b AS (SELECT segment, count(*) AS n FROM customers GROUP BY 1),
                 r AS (SELECT segment, count(DISTINCT customer_id) AS n FROM ({credited_orders(WITHIN_30)}) GROUP BY 1)
            SELECT b.segment, CAST(coalesce(r.n, 0) AS DOUBLE) / b.n FROM b LEFT JOIN r USING (segment) ORDER BY 1""",
    ),
]


@pytest.mark.parametrize("name,ours,truth", FUNNEL_CASES, ids=[c[0] for c in FUNNEL_CASES])
def test_conversion_metrics_match_ground_truth(funnel, duck, name, ours, truth):
    expected = assert_same_answer(funnel.execute(ours), duck.execute(truth))
    assert any(r[-1] for r in expected), "some signups converted"

