"""Step 6: the governed number through any SQL a BI tool wraps around a view.

Every metric kind of the demo is asked through the wrappers BI tools write (a Superset
virtual dataset, a Tableau custom SQL connection, Power BI's nested folding with every
column, a CTE, two levels of nesting, a dimension filter inside and one outside, renamed
and cast columns) and compared with a hand-written query on the base tables (DuckDB on
the same files here; test_pushdown.py asks the same cases of PostgreSQL and MariaDB).
A subquery that groups keeps its grain (literal two-level SQL); a SUM that cannot add up
over it is refused; grouping sets, joins of two views; errors in PostgreSQL's words.
"""

import psycopg
import pytest

from model_facts import DIMENSIONS, VIEWS
from test_ground_truth import LINES, OK, ORDERS_DISTINCT, REVENUE, assert_rows_equal, assert_same_answer, avg6
from test_metric_kinds import COST, FLOAT, ONLINE, growth, per_period

CUSTOMERS = f"COUNT(DISTINCT CASE WHEN {OK} THEN o.customer_id END)"


def columns_of(view):
    """Every column of a view, as the catalog lists them (Power BI selects them all)."""
    out = []
    for d in VIEWS[view].get("dimensions", []):
        out.append(d)
        if DIMENSIONS[d].get("kind") == "time":
            out.extend(f"{d}__{g}" for g in ("week", "month", "quarter", "year"))
    out.extend(VIEWS[view].get("metrics", []))
    out.extend(VIEWS[view].get("segments", []))
    return out


# ---- Question A: per region, every aggregate kind of the sales view ----------------------

A_AGGS = [
    ("SUM", "revenue"),  # sum
    ("SUM", "customers"),  # distinct count
    ("AVG", "avg_unit_price"),  # average
    ("MAX", "max_unit_price"),  # maximum
    ("MAX", "gross_margin_rate"),  # ratio of metrics
    ("SUM", "online_revenue"),  # derived (filtered) metric
    ("SUM", "revenue_share"),  # share of total
    ("MIN", "orders"),  # distinct count of another column
]


def truth_a(where="1 = 1"):
    return f"""WITH g AS (SELECT s.region AS k, {REVENUE} AS r, {CUSTOMERS} AS c, {avg6('l.unit_price')} AS a,
                             MAX(l.unit_price) AS mx, {COST} AS cost, {ONLINE} AS onl, {ORDERS_DISTINCT} AS n
                      FROM {LINES} WHERE {where} GROUP BY s.region),
                t AS (SELECT {REVENUE} AS r FROM {LINES} WHERE {where})
           SELECT g.k AS c0, g.r AS c1, g.c AS c2, g.a AS c3, g.mx AS c4,
                  CAST(g.r - g.cost AS {FLOAT}) / CAST(g.r AS {FLOAT}) AS c5, g.onl AS c6,
                  CAST(g.r AS {FLOAT}) / CAST(t.r AS {FLOAT}) AS c7, g.n AS c8
           FROM g CROSS JOIN t ORDER BY 1"""


# ---- Question B: per month of 2024 on sales_trends: period-over-period and windows -------

B_AGGS = [
    ("SUM", "revenue_growth"),  # growth against the previous period
    ("SUM", "revenue_yoy_growth"),  # growth against the same period last year
    ("SUM", "orders_yoy_difference"),  # difference of a distinct count
    ("MAX", "revenue_ytd"),  # to-date window
    ("SUM", "revenue_trailing_7d"),  # trailing window
    ("MAX", "active_customers_30d"),  # distinct count over a trailing window
]


def truth_b(where="1 = 1", until="2100-01-01"):
    """Per month from January 2024: growth against the previous month and the same month
    a year before, the difference of orders with a year before, year-to-date revenue, the
    revenue of the month's last 7 days and its distinct customers of the last 30 (the
    days and customers are read from 2024 on: every window ends in a month of 2024)."""
    return f"""WITH m AS ({per_period('month', where)}),
                daily AS (SELECT o.order_date AS day, {REVENUE} AS r FROM {LINES}
                          WHERE {where} AND o.order_date >= DATE '2024-01-01' GROUP BY o.order_date),
                bought AS (SELECT DISTINCT o.order_date AS day, o.customer_id AS who FROM {LINES}
                           WHERE {OK} AND {where} AND o.order_date >= DATE '2024-01-01')
           SELECT CAST(cur.p AS DATE) AS c0, {growth('cur.r', 'prev.r')} AS c1, {growth('cur.r', 'ly.r')} AS c2,
                  cur.n - ly.n AS c3,
                  (SELECT SUM(x.r) FROM m x WHERE x.p <= cur.p AND x.p >= date_trunc('year', cur.p)) AS c4,
                  (SELECT SUM(d.r) FROM daily d
                    WHERE d.day >= cur.p + INTERVAL '1 month' - INTERVAL '7 day' AND d.day < cur.p + INTERVAL '1 month') AS c5,
                  (SELECT COUNT(DISTINCT b.who) FROM bought b
                    WHERE b.day >= cur.p + INTERVAL '1 month' - INTERVAL '30 day' AND b.day < cur.p + INTERVAL '1 month') AS c6
           FROM m cur LEFT JOIN m prev ON prev.p = cur.p - INTERVAL '1 month'
                      LEFT JOIN m ly ON ly.p = cur.p - INTERVAL '1 year'
           WHERE cur.p >= DATE '2024-01-01' AND cur.p < DATE '{until}' ORDER BY 1"""


# ---- The wrappers -------------------------------------------------------------------------


def _and(*conditions):
    conditions = [c for c in conditions if c]
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def superset(view, group, aggs, where=None):
    items = ", ".join(f'{f}({m}) AS "{f}({m})"' for f, m in aggs)
    return (f"SELECT {group} AS {group}, {items} FROM (SELECT * FROM {view}) AS virtual_table{_and(where)} "
            f"GROUP BY {group} ORDER BY {group} LIMIT 10000")


def tableau(view, group, aggs, where=None):
    q = '"Custom SQL Query"'
    needed = [group] + [m for _, m in aggs] + (["order_date"] if where else [])
    items = ", ".join(f'{f}({q}."{m}") AS "{f.lower()}:{m}:ok"' for f, m in aggs)
    outer = _and(where and where.replace("order_date", f'{q}."order_date"'))
    return (f'SELECT {q}."{group}" AS "{group}", {items} FROM (SELECT {", ".join(needed)} FROM {view}) {q}'
            f"{outer} GROUP BY 1 ORDER BY 1")


def powerbi(view, group, aggs, where=None):
    every = ", ".join(f'"_"."{c}"' for c in columns_of(view))
    items = ", ".join(f'{f.lower()}("rows"."{m}") as "a{i}"' for i, (f, m) in enumerate(aggs))
    outer = ", ".join(f'"_"."a{i}"' for i in range(len(aggs)))
    rows_where = _and(where and where.replace("order_date", '"rows"."order_date"'))
    return (f'select "_"."{group}", {outer} from (select "rows"."{group}" as "{group}", {items} '
            f'from (select {every} from "public"."{view}" "_") "rows"{rows_where} group by "{group}") "_" '
            f'where not "_"."a0" is null order by "_"."{group}" limit 1000001')


def cte(view, group, aggs, where=None):
    items = ", ".join(f"{f}({m})" for f, m in aggs)
    return f"WITH base AS (SELECT * FROM {view}) SELECT {group}, {items} FROM base{_and(where)} GROUP BY {group} ORDER BY 1"


def nested(view, group, aggs, where=None):
    items = ", ".join(f"{f}(b.{m})" for f, m in aggs)
    return (f"SELECT b.{group}, {items} FROM (SELECT * FROM (SELECT * FROM {view}) a) b{_and(where)} "
            f"GROUP BY b.{group} ORDER BY 1")


def filtered(view, group, aggs, where=None, inside=None, outside=None):
    items = ", ".join(f"{f}(t.{m})" for f, m in aggs)
    return (f"SELECT t.{group}, {items} FROM (SELECT * FROM {view} WHERE {inside}) t{_and(outside, where)} "
            f"GROUP BY t.{group} ORDER BY 1")


def renamed(view, group, aggs, where=None):
    group_type = "DATE" if "order_date" in group else "VARCHAR"
    inner = [f"CAST({group} AS {group_type}) AS grp"]
    for i, (_, m) in enumerate(aggs):
        inner.append(f"CAST({m} AS {FLOAT}) AS x{i}" if i % 2 == 0 else f"{m} AS x{i}")
    inner.append("order_date AS d")
    items = ", ".join(f"{f}(x{i})" for i, (f, _) in enumerate(aggs))
    outer = _and(where and where.replace("order_date", "d"))
    return f"SELECT grp, {items} FROM (SELECT {', '.join(inner)} FROM {view}) r{outer} GROUP BY grp ORDER BY 1"


def recast(truth, aggs):
    """The truth of a question asked through `renamed`, which casts every other metric
    to a double before aggregating it: those columns are doubles."""
    columns = ["c0"] + [f"CAST(c{i + 1} AS {FLOAT})" if i % 2 == 0 else f"c{i + 1}" for i in range(len(aggs))]
    return f"SELECT {', '.join(columns)} FROM ({truth}) x ORDER BY 1"


SHAPES = {
    "Superset virtual dataset": superset,
    "Tableau custom SQL": tableau,
    "Power BI nested folding, every column": powerbi,
    "CTE wrapper": cte,
    "two levels of nesting": nested,
    "renamed and cast columns": renamed,
}

# Each question reads half a year (the warehouses answer them in seconds).
A_WHERE = "order_date >= '2024-07-01'"
A_TRUTH_WHERE = "o.order_date >= DATE '2024-07-01'"
B_WHERE = "order_date >= '2024-01-01'"

WRAPPER_CASES = []
for shape, build in SHAPES.items():
    typed = (lambda truth, aggs: recast(truth, aggs)) if build is renamed else (lambda truth, aggs: truth)
    WRAPPER_CASES.append(
        (f"{shape}: aggregate kinds by region", build("sales", "region", A_AGGS, A_WHERE),
         typed(truth_a(A_TRUTH_WHERE), A_AGGS))
    )
    WRAPPER_CASES.append(
        (f"{shape}: period and window kinds by month", build("sales_trends", "order_date__month", B_AGGS, B_WHERE),
         typed(truth_b(), B_AGGS))
    )
WRAPPER_CASES += [
    (
        "a dimension filter inside and one outside: aggregate kinds by region",
        filtered("sales", "region", A_AGGS, where=f"t.{A_WHERE}", inside="channel = 'online'",
                 outside="t.category <> 'Books'"),
        truth_a(f"o.channel = 'online' AND p.category <> 'Books' AND {A_TRUTH_WHERE}"),
    ),
    (
        "a dimension filter inside and one outside: period and window kinds by month",
        filtered("sales_trends", "order_date__month", B_AGGS, where=f"t.{B_WHERE}", inside="channel = 'online'",
                 outside="t.order_date < '2024-10-01'"),
        truth_b("o.channel = 'online'", until="2024-10-01"),
    ),
]


@pytest.mark.parametrize("name,ours,truth", WRAPPER_CASES, ids=[c[0] for c in WRAPPER_CASES])
def test_a_wrapper_gives_the_metric_at_the_outer_grain(conn, duck, name, ours, truth):
    assert_same_answer(conn.execute(ours), duck.execute(truth))


def per_region_channel(metric_sql, where="1 = 1"):
    return f"SELECT s.region AS k, o.channel AS ch, {metric_sql} AS v FROM {LINES} WHERE {where} GROUP BY s.region, o.channel"


# A subquery that groups keeps its grain: the outer query is literal SQL over its rows.
LITERAL_CASES = [
    (
        "the best channel's revenue per region",
        "SELECT region, MAX(revenue) FROM (SELECT region, channel, revenue FROM sales GROUP BY region, channel) t GROUP BY region ORDER BY 1",
        f"SELECT k, MAX(v) FROM ({per_region_channel(REVENUE)}) t GROUP BY k ORDER BY 1",
    ),
    (
        "additive metrics summed over a finer grain",
        "SELECT region, SUM(revenue), SUM(units), SUM(online_revenue) FROM (SELECT region, channel, revenue, units, online_revenue FROM sales GROUP BY region, channel) t GROUP BY region ORDER BY 1",
        # The sum of integers stays a bigint (PostgreSQL would widen SUM(bigint) to numeric).
        f"""SELECT s.region, {REVENUE}, CAST(SUM(CASE WHEN {OK} THEN l.quantity END) AS BIGINT), {ONLINE}
            FROM {LINES} GROUP BY s.region ORDER BY 1""",
    ),
    (
        "the average of the channels' distinct customers",
        "SELECT region, AVG(customers), MIN(customers) FROM (SELECT region, channel, customers FROM sales GROUP BY region, channel) t GROUP BY region ORDER BY 1",
        # The average of integers is a double here (PostgreSQL's is numeric).
        f"SELECT k, CAST(AVG(v) AS {FLOAT}), MIN(v) FROM ({per_region_channel(CUSTOMERS)}) t GROUP BY k ORDER BY 1",
    ),
    (
        "a distinct count summed at the inner query's own grain",
        "SELECT region, SUM(customers) FROM (SELECT region, customers FROM sales GROUP BY region) t GROUP BY region ORDER BY 1",
        f"SELECT s.region, {CUSTOMERS} FROM {LINES} GROUP BY s.region ORDER BY 1",
    ),
    (
        "a condition on a metric keeps the inner grain",
        "SELECT region, COUNT(*) FROM (SELECT region, city, revenue FROM sales WHERE revenue > 70000000) t GROUP BY region ORDER BY 1",
        f"""SELECT k, COUNT(*) FROM (SELECT s.region AS k, s.city, {REVENUE} AS r FROM {LINES} GROUP BY s.region, s.city) t
            WHERE r > 70000000 GROUP BY k ORDER BY 1""",
    ),
    (
        "COUNT(*) over a wrapper counts the wrapper's rows",
        "SELECT COUNT(*), COUNT(DISTINCT region) FROM (SELECT region, channel, revenue FROM sales) t",
        "SELECT COUNT(*), COUNT(DISTINCT region) FROM (SELECT DISTINCT s.region AS region, o.channel FROM orders o JOIN stores s ON o.store_id = s.store_id) t",
    ),
]


@pytest.mark.parametrize("name,ours,truth", LITERAL_CASES, ids=[c[0] for c in LITERAL_CASES])
def test_a_subquery_that_groups_keeps_its_grain(conn, duck, name, ours, truth):
    assert_same_answer(conn.execute(ours), duck.execute(truth))


GROUPED = "(SELECT region, channel, {m} FROM sales GROUP BY region, channel) t"
TREND = "(SELECT order_date, region, {m} FROM sales_trends WHERE order_date >= '2024-06-01' GROUP BY order_date, region) t"

REFUSALS = [
    ("distinct count", f"SELECT region, SUM(customers) FROM {GROUPED.format(m='customers')} GROUP BY region", "customers", "is a distinct count"),
    ("average", f"SELECT region, SUM(avg_unit_price) FROM {GROUPED.format(m='avg_unit_price')} GROUP BY region", "avg_unit_price", "is an average"),
    ("maximum", f"SELECT SUM(max_unit_price) FROM {GROUPED.format(m='max_unit_price')}", "max_unit_price", "is a maximum"),
    ("ratio", f"SELECT region, SUM(gross_margin_rate) FROM {GROUPED.format(m='gross_margin_rate')} GROUP BY region", "gross_margin_rate", "ratio"),
    ("share of total", f"SELECT region, SUM(revenue_share) FROM {GROUPED.format(m='revenue_share')} GROUP BY region", "revenue_share", "share of a total"),
    ("growth rate", "SELECT order_date__month, SUM(revenue_growth) FROM (SELECT order_date__month, region, revenue_growth FROM sales_trends GROUP BY 1, 2) t GROUP BY 1", "revenue_growth", "growth rate"),
    ("to-date value", f"SELECT region, SUM(revenue_ytd) FROM {TREND.format(m='revenue_ytd')} GROUP BY region", "revenue_ytd", "to-date"),
    ("trailing value", f"SELECT SUM(revenue_trailing_7d) FROM {TREND.format(m='revenue_trailing_7d')}", "revenue_trailing_7d", "trailing"),
    ("through a CTE", "WITH t AS (SELECT region, channel, customers FROM sales GROUP BY 1, 2) SELECT region, SUM(customers) FROM t GROUP BY region", "customers", "distinct count"),
    ("through LIMIT", "SELECT SUM(customers) FROM (SELECT region, customers FROM sales ORDER BY region LIMIT 3) t", "customers", "distinct count"),
    ("through UNION", "SELECT SUM(c) FROM (SELECT customers AS c FROM sales WHERE region = 'East' UNION ALL SELECT customers FROM sales WHERE region = 'West') u", "customers", "distinct count"),
    ("through a projection of a grouped subquery", "SELECT SUM(c) FROM (SELECT region, customers AS c FROM (SELECT region, channel, customers FROM sales GROUP BY 1, 2) a) b", "customers", "distinct count"),
]


@pytest.mark.parametrize("name,sql,metric,why", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_sum_that_cannot_add_up_is_refused(conn, name, sql, metric, why):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    assert e.value.sqlstate == "0A000", e.value.diag.message_primary
    message = e.value.diag.message_primary
    assert f'"{metric}"' in message and why in message, message
    assert "grain you want" in (e.value.diag.message_hint or "")
    assert conn.execute("SELECT region FROM sales WHERE region = 'East'").fetchall() == [("East",)]


# ---- GROUPING SETS, ROLLUP and CUBE: each set at its own grain -----------------------------

RATIO = f"CAST({REVENUE} - {COST} AS {FLOAT}) / CAST({REVENUE} AS {FLOAT})"
PER_ORDER = f"CAST({REVENUE} AS {FLOAT}) / CAST({ORDERS_DISTINCT} AS {FLOAT})"


SETS_WHERE = "order_date >= '2024-07-01'"


def sets_truth(metrics, sets):
    """UNION ALL of one hand-written GROUP BY per grouping set (region, channel), over
    the second half of 2024."""
    branches = []
    for grouped in sets:
        keys = [("s.region" if "region" in grouped else "NULL"), ("o.channel" if "channel" in grouped else "NULL")]
        mask = (0 if "region" in grouped else 2) + (0 if "channel" in grouped else 1)
        group = [k for k in keys if k != "NULL"]
        group_by = f" GROUP BY {', '.join(group)}" if group else ""
        branches.append(
            f"SELECT {keys[0]} AS region, {keys[1]} AS channel, {', '.join(metrics)}, {mask} AS g FROM {LINES}"
            f" WHERE {A_TRUTH_WHERE}{group_by}"
        )
    return " UNION ALL ".join(branches) + " ORDER BY g, region, channel"


GROUPING_CASES = [
    (
        "ROLLUP: subtotals of a distinct count and a ratio, with GROUPING()",
        "SELECT region, channel, customers, gross_margin_rate, GROUPING(region, channel) AS g FROM sales WHERE order_date >= '2024-07-01' GROUP BY ROLLUP (region, channel) ORDER BY g, region, channel",
        sets_truth([CUSTOMERS, RATIO], [("region", "channel"), ("region",), ()]),
    ),
    (
        "CUBE of a distinct count",
        "SELECT region, channel, SUM(customers), GROUPING(region, channel) AS g FROM sales WHERE order_date >= '2024-07-01' GROUP BY CUBE (region, channel) ORDER BY 4, 1, 2",
        sets_truth([CUSTOMERS], [("region", "channel"), ("region",), ("channel",), ()]),
    ),
    (
        "GROUPING SETS of a ratio and a distinct count, written by position",
        "SELECT region, channel, revenue_per_order, orders, GROUPING(region, channel) AS g FROM sales WHERE order_date >= '2024-07-01' GROUP BY GROUPING SETS ((1), (2), ()) ORDER BY g, region, channel",
        sets_truth([PER_ORDER, ORDERS_DISTINCT], [("region",), ("channel",), ()]),
    ),
]


@pytest.mark.parametrize("name,ours,truth", GROUPING_CASES, ids=[c[0] for c in GROUPING_CASES])
def test_each_grouping_set_is_answered_at_its_own_grain(conn, duck, name, ours, truth):
    assert_same_answer(conn.execute(ours), duck.execute(truth))


# ---- Two views joined on shared dimensions -------------------------------------------------

TARGETS = "SELECT t.region AS g, t.month AS p, SUM(t.revenue_target) AS target FROM revenue_targets t GROUP BY t.region, t.month"


def monthly_revenue(where="1 = 1"):
    return f"""SELECT s.region AS g, date_trunc('month', o.order_date) AS p, {REVENUE} AS r FROM {LINES}
               WHERE {where} GROUP BY s.region, date_trunc('month', o.order_date)"""


JOIN_CASES = [
    (
        "sales and targets joined on region and month, by region",
        """SELECT s.region, SUM(s.revenue), SUM(t.revenue_target) FROM sales s
           JOIN sales_targets t ON s.region = t.region AND s.order_date__month = t.order_date__month
           WHERE s.order_date >= '2024-01-01' GROUP BY s.region ORDER BY 1""",
        f"""WITH a AS ({monthly_revenue("o.order_date >= DATE '2024-01-01'")}), t AS ({TARGETS})
            SELECT a.g, SUM(a.r), SUM(t.target) FROM a JOIN t ON a.g = t.g AND a.p = t.p GROUP BY a.g ORDER BY 1""",
    ),
    (
        "Power BI: two wrapped views joined, attainment from the sums",
        """select basetable0.region, sum(basetable0.revenue) as a0, sum(basetable1.revenue_target) as a1,
                  sum(basetable0.revenue) / sum(basetable1.revenue_target) as a2
           from (select region, order_date__month, revenue from public.sales) as basetable0
           inner join (select region, order_date__month, revenue_target from public.sales_targets) as basetable1
             on basetable0.region = basetable1.region and basetable0.order_date__month = basetable1.order_date__month
           group by basetable0.region order by 1""",
        f"""WITH a AS ({monthly_revenue()}), t AS ({TARGETS})
            SELECT a.g, SUM(a.r), SUM(t.target), SUM(a.r) / SUM(t.target)
            FROM a JOIN t ON a.g = t.g AND a.p = t.p GROUP BY a.g ORDER BY 1""",
    ),
    (
        "a join that does not aggregate: each view at the grain of the columns used",
        """SELECT s.region, s.customers, t.revenue_target FROM sales s JOIN sales_targets t ON s.region = t.region
           WHERE t.order_date__year = DATE '2024-01-01' ORDER BY 1""",
        f"""WITH a AS (SELECT s.region AS g, {CUSTOMERS} AS c FROM {LINES} GROUP BY s.region),
                 t AS (SELECT t.region AS g, SUM(t.revenue_target) AS target FROM revenue_targets t
                       WHERE t.month >= DATE '2024-01-01' AND t.month < DATE '2025-01-01' GROUP BY t.region)
            SELECT a.g, a.c, t.target FROM a JOIN t ON a.g = t.g ORDER BY 1""",
    ),
]


@pytest.mark.parametrize("name,ours,truth", JOIN_CASES, ids=[c[0] for c in JOIN_CASES])
def test_joined_views_are_each_aggregated_at_the_joins_grain(conn, duck, name, ours, truth):
    assert_same_answer(conn.execute(ours), duck.execute(truth))


@pytest.mark.parametrize(
    "sql,phrase",
    [
        (
            """SELECT s.region, SUM(s.customers) FROM sales s
               JOIN sales_targets t ON s.region = t.region AND s.order_date__month = t.order_date__month GROUP BY s.region""",
            "customers is a distinct count",
        ),
        (
            """SELECT s.region, SUM(s.revenue), COUNT(DISTINCT s.channel) FROM sales s
               JOIN sales_targets t ON s.region = t.region GROUP BY s.region""",
            '"s.channel" is neither',
        ),
    ],
    ids=["a distinct count summed over the join keys", "a grouping column neither grouped nor joined on"],
)
def test_a_join_of_views_that_is_not_well_defined_is_refused(conn, sql, phrase):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    assert e.value.sqlstate == "0A000"
    assert phrase in e.value.diag.message_primary
    assert e.value.diag.message_hint
    assert conn.execute("SELECT 1").fetchone() == (1,)
