"""SQLAlchemy's inspector (what Superset, LangChain and most Python tools use to browse a
database) and pandas `read_sql`, against the real server. Numbers are compared with
DuckDB on the same files; metadata with the model files."""

import pytest

from model_facts import DIMENSIONS, METRICS, VIEWS, comment
from test_ground_truth import LINES, REVENUE, as_doubles, assert_rows_equal


@pytest.fixture(scope="module")
def engine(server):
    sqlalchemy = pytest.importorskip("sqlalchemy", reason="tests/run-all.sh installs SQLAlchemy")
    url = (
        f"postgresql+psycopg2://{server['user']}:{server['password']}"
        f"@{server['host']}:{server['port']}/{server['dbname']}"
    )
    engine = sqlalchemy.create_engine(url)
    yield engine
    engine.dispose()


def test_inspector_schemas_tables_and_views(engine):
    from sqlalchemy import inspect

    inspector = inspect(engine)
    assert "public" in inspector.get_schema_names()
    assert inspector.get_table_names(schema="public") == []
    assert sorted(inspector.get_view_names(schema="public")) == sorted(VIEWS)
    for name, view in VIEWS.items():
        assert inspector.get_table_comment(name, schema="public")["text"] == comment(view)
        assert inspector.get_view_definition(name, schema="public")


def test_inspector_columns_with_types_and_comments(engine):
    from sqlalchemy import inspect
    from sqlalchemy.types import DATE, NUMERIC, TEXT

    columns = {c["name"]: c for c in inspect(engine).get_columns("sales", schema="public")}
    view = VIEWS["sales"]
    for metric in view["metrics"]:
        assert columns[metric]["comment"] == comment(METRICS[metric])
    for dimension in view["dimensions"]:
        assert columns[dimension]["comment"] == comment(DIMENSIONS[dimension])
    assert isinstance(columns["revenue"]["type"], NUMERIC)
    assert (columns["revenue"]["type"].precision, columns["revenue"]["type"].scale) == (32, 2)
    assert isinstance(columns["order_date"]["type"], DATE)
    assert isinstance(columns["region"]["type"], TEXT)


def test_inspector_keys_and_indexes_are_empty_for_views(engine):
    from sqlalchemy import inspect

    inspector = inspect(engine)
    assert inspector.get_pk_constraint("sales", schema="public")["constrained_columns"] == []
    assert inspector.get_foreign_keys("sales", schema="public") == []
    assert inspector.get_indexes("sales", schema="public") == []


def test_pandas_read_sql_matches_ground_truth(engine, duck):
    pandas = pytest.importorskip("pandas", reason="tests/run-all.sh installs pandas")
    frame = pandas.read_sql(
        "SELECT category, revenue FROM sales WHERE channel = %(channel)s ORDER BY category",
        engine,
        params={"channel": "app"},
    )
    truth = duck.execute(
        f"SELECT p.category, {REVENUE} FROM {LINES} WHERE o.channel = 'app' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert list(frame.columns) == ["category", "revenue"]
    # pandas keeps numeric values as doubles (read_sql's coerce_float).
    assert_rows_equal(list(frame.itertuples(index=False, name=None)), as_doubles(truth))
