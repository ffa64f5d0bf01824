"""A view whose tables live in two warehouses: the facts (order lines, orders) in
PostgreSQL, the dimension tables (stores, products, customers) in MariaDB. Each source
gets its part of the query pushed down; kpitables joins the parts. Answers are compared
with hand-written SQL on the PostgreSQL server, which holds a full copy of the demo."""

import re

import psycopg
import pytest

from conftest import Kpitables
from test_ground_truth import LINES, ORDERS_DISTINCT, REVENUE, assert_rows_equal

FACTS = {"order_lines", "orders"}


@pytest.fixture(scope="module")
def two(tmp_path_factory, warehouses):
    """A model over the session's two warehouses (each loaded with the whole demo by
    conftest.warehouses): the facts read from PostgreSQL, the dimensions from MariaDB."""
    tmp = tmp_path_factory.mktemp("federation")
    pg, maria = warehouses("postgres"), warehouses("mariadb")
    model = tmp / "model"
    model.mkdir()
    for name in ["dimensions.toml", "metrics.toml", "segments.toml", "views.toml"]:
        (model / name).write_text((pg.model / name).read_text())
    pg_source = (pg.model / "sources.toml").read_text().replace('name = "warehouse"', 'name = "pg"')
    maria_source = (maria.model / "sources.toml").read_text().replace('name = "warehouse"', 'name = "maria"')
    (model / "sources.toml").write_text(pg_source + "\n" + maria_source)
    blocks = (pg.model / "tables.toml").read_text().split("[[tables]]")
    tables = [blocks[0]]
    for block in blocks[1:]:
        table = re.search(r'name = "(\w+)"', block).group(1)
        source = "pg" if table in FACTS else "maria"
        tables.append(block.replace('source = "warehouse"', f'source = "{source}"'))
    (model / "tables.toml").write_text("[[tables]]".join(tables))
    k = Kpitables(tmp / "kpitables.log", ["--model", str(model)], maria.env)
    try:
        yield pg.server, maria.server, k
    finally:
        k.close()


def truth(pg, sql):
    with psycopg.connect(pg.dsn, autocommit=True, options="-c TimeZone=UTC") as c:
        return c.execute(sql).fetchall()


def sent(server, before):
    """The statements `server` received since it had received `before`, from its own log."""
    return server.statements()[before:]


def reads(statements, table):
    return [s for s in statements if re.search(rf"\b{table}\b", s)]


@pytest.mark.parametrize(
    "ours,expected,dimension_tables",
    [
        ("SELECT region, revenue, orders FROM sales GROUP BY region ORDER BY region",
         f"SELECT s.region, {REVENUE}, {ORDERS_DISTINCT} FROM {LINES} GROUP BY s.region ORDER BY 1",
         ["stores"]),
        ("SELECT category, order_date__year, units FROM sales WHERE segment = 'Consumer' ORDER BY 1, 2",
         f"SELECT p.category, date_trunc('year', o.order_date), SUM(CASE WHEN o.status <> 'cancelled' THEN l.quantity END) "
         f"FROM {LINES} WHERE c.segment = 'Consumer' GROUP BY 1, 2 ORDER BY 1, 2",
         ["products", "customers"]),
    ],
)
def test_a_view_over_two_warehouses(two, ours, expected, dimension_tables):
    pg, maria, k = two
    with psycopg.connect(k.dsn, autocommit=True) as c:
        pg_before, maria_before = len(pg.statements()), len(maria.statements())
        got = c.execute(ours).fetchall()
        to_pg, to_maria = sent(pg, pg_before), sent(maria, maria_before)
        assert_rows_equal(got, truth(pg, expected))
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN " + ours).fetchall())
    # The warehouses' own logs: the facts were read from PostgreSQL only, the dimensions'
    # tables from MariaDB only.
    assert reads(to_pg, "order_lines"), to_pg
    assert not reads(to_maria, "order_lines") and not reads(to_maria, "orders"), to_maria
    for table in dimension_tables:
        assert reads(to_maria, table) and not reads(to_pg, table), (table, to_pg, to_maria)
    # Each source receives its own statement: facts from PostgreSQL, dimensions from MariaDB.
    assert 'Sent to source "pg":' in plan and 'Sent to source "maria":' in plan, plan
    maria_sql = plan.split('Sent to source "maria":', 1)[1]
    assert "`" in maria_sql  # written in MySQL's dialect


def test_a_query_on_one_source_still_goes_there_whole(two):
    """Metrics over the facts alone, grouped by a fact column: one statement, to PostgreSQL,
    with the aggregation in it."""
    pg, maria, k = two
    query = "SELECT channel, order_count FROM order_summary ORDER BY channel"
    with psycopg.connect(k.dsn, autocommit=True) as c:
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN " + query).fetchall())
        pg_before, maria_before = len(pg.statements()), len(maria.statements())
        got = c.execute(query).fetchall()
        to_pg, to_maria = sent(pg, pg_before), sent(maria, maria_before)
    assert plan.count("Sent to source") == 1 and 'Sent to source "pg":' in plan, plan
    # PostgreSQL's log has the one statement, aggregated there; MariaDB read no table.
    [statement] = reads(to_pg, "orders")
    assert re.search(r"count\(", statement, re.I), statement
    assert not any(reads(to_maria, t) for t in ["orders", "order_lines", "stores", "customers", "products"]), to_maria
    assert re.search(r"count\(", plan.split('Sent to source "pg":', 1)[1]), plan
    assert_rows_equal(got, truth(pg, "SELECT channel, COUNT(CASE WHEN status <> 'cancelled' THEN 1 END) "
                                     "FROM orders GROUP BY 1 ORDER BY 1"))
