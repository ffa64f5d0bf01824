"""Arrow and data-science clients, each answer compared with a hand-written query DuckDB
runs on the same files: polars `read_database_uri` through connectorx (its default
binary COPY protocol and `protocol="cursor"`), ADBC's PostgreSQL driver
(`fetch_arrow_table` with a bound parameter, `adbc_get_objects`,
`adbc_get_table_schema`), and pandas `read_sql` over ADBC."""

import decimal

import pytest

from model_facts import VIEWS
from test_ground_truth import LINES, REVENUE, assert_rows_equal

BY_REGION = f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1"
ORDERS_BY_REGION = (
    f"SELECT s.region, {REVENUE}, COUNT(DISTINCT CASE WHEN o.status <> 'cancelled' THEN l.order_id END) "
    f"FROM {LINES} GROUP BY 1 ORDER BY 1"
)


@pytest.fixture()
def uri(server):
    return f"postgresql://exec:exec@{server['host']}:{server['port']}/{server['dbname']}"


@pytest.mark.parametrize("protocol", [None, "cursor"])
def test_polars_read_database_uri(uri, duck, protocol):
    import polars as pl

    options = {} if protocol is None else {"protocol": protocol}
    df = pl.read_database_uri("SELECT region, revenue, orders FROM sales ORDER BY region", uri, **options)
    assert df.columns == ["region", "revenue", "orders"]
    assert df.schema["orders"] == pl.Int64
    assert_rows_equal(df.rows(), duck.execute(ORDERS_BY_REGION).fetchall())


def test_adbc_fetch_arrow_table_with_a_parameter(uri, duck):
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT region, revenue FROM sales WHERE region <> $1 ORDER BY region", ("East",))
        table = cur.fetch_arrow_table()
    assert table.column_names == ["region", "revenue"]
    assert table.schema.field("region").type == pa.string()
    # ADBC reads numeric as its text (an opaque extension type), as from PostgreSQL.
    got = [(r, decimal.Decimal(v)) for r, v in zip(table.column("region").to_pylist(),
                                                     table.column("revenue").to_pylist())]
    truth = [row for row in duck.execute(BY_REGION).fetchall() if row[0] != "East"]
    assert_rows_equal(got, truth)


def test_adbc_get_table_schema_and_objects(uri):
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    with adbc.connect(uri) as conn:
        schema = conn.adbc_get_table_schema("sales")
        view = VIEWS["sales"]
        assert schema.field("order_date").type == pa.date32()
        assert schema.field("orders").type == pa.int64()
        assert schema.field("region").type == pa.string()
        objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
    (catalog,) = objects
    assert catalog["catalog_name"] == "kpitables"
    (public,) = [s for s in catalog["catalog_db_schemas"] if s["db_schema_name"] == "public"]
    tables = {t["table_name"]: t for t in public["db_schema_tables"]}
    assert set(tables) == set(VIEWS)
    assert {t["table_type"] for t in tables.values()} == {"view"}
    columns = {c["column_name"] for c in tables["sales"]["table_columns"]}
    assert set(view["metrics"]) <= columns and set(view["dimensions"]) <= columns
    assert set(schema.names) == columns


def test_pandas_read_sql_over_adbc(uri, duck):
    import adbc_driver_postgresql.dbapi as adbc
    import pandas as pd

    with adbc.connect(uri) as conn:
        df = pd.read_sql("SELECT region, revenue, orders FROM sales ORDER BY region", conn)
    assert list(df.columns) == ["region", "revenue", "orders"]
    got = [(r, decimal.Decimal(str(v)), int(o)) for r, v, o in df.itertuples(index=False)]
    assert_rows_equal(got, duck.execute(ORDERS_BY_REGION).fetchall())
