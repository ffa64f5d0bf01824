"""Each class of error reaches the client as an ErrorResponse with the right SQLSTATE, a
message and a hint, and the same connection keeps working afterwards."""

import psycopg
import pytest

CASES = [
    ("unknown column", "SELECT regoin, revenue FROM sales", "42703", "regoin", 'did you mean "region"'),
    ("unknown view", "SELECT revenue FROM sale", "42P01", "sale", 'did you mean "sales"'),
    ("syntax", "SELEC revenue FROM sales", "42601", "", "check the SQL"),
    ("type mismatch", "SELECT region FROM sales WHERE region + 1 = 2", "42804", "", "cast"),
    ("invalid value", "SELECT 'abc'::int", "22P02", 'invalid input syntax for type integer: "abc"', None),
    ("invalid date literal", "SELECT revenue FROM sales WHERE order_date = 'yesterday-ish'", "22007",
     'invalid input syntax for type date: "yesterday-ish"', "YYYY-MM-DD"),
    ("invalid numeric literal", "SELECT city FROM sales WHERE revenue > 'lots'", "22P02",
     'invalid input syntax for type numeric: "lots"', None),
    ("column of another view", "SELECT region, order_count FROM sales", "42703", '"order_count"',
     'is a column of view "order_summary"'),
    ("unknown column through a wrapper", "SELECT region, SUM(nope) FROM (SELECT * FROM sales) t GROUP BY region",
     "42703", 'column "nope" does not exist', "the relation has the columns: order_date"),
    ("unknown qualified column through a wrapper", "SELECT t.regoin FROM (SELECT region, revenue FROM sales) t",
     "42703", 'column "t.regoin" does not exist', 'did you mean "region"'),
    ("unknown function", "SELECT foo(1)", "42883", "function foo(integer) does not exist", "explicit type casts"),
    ("unknown function over view columns", "SELECT foo(region, 1.5) FROM sales", "42883",
     "function foo(text, numeric) does not exist", "explicit type casts"),
    ("function over the wrong types", "SELECT round('abc'::text)", "42883", "function round(text) does not exist",
     "explicit type casts"),
    ("integer overflow", "SELECT 9223372036854775807::bigint + 1", "22003", "bigint out of range", None),
    ("integer overflow over a column", "SELECT x * 2 FROM (VALUES (4611686018427387904::bigint)) t(x)",
     "22003", "bigint out of range", None),
    ("integer sum overflow", "SELECT sum(x) FROM (VALUES (9223372036854775807::bigint), (1::bigint)) t(x)",
     "22003", "bigint out of range", None),
    ("division by zero", "SELECT region, revenue / 0 FROM sales GROUP BY region", "22012", "division by zero", None),
    ("grouping", "SELECT region, revenue FROM sales GROUP BY city", "42803", "region", "GROUP BY"),
    ("not answerable", "SELECT COUNT(DISTINCT revenue) FROM sales", "0A000", "over a metric", "select it directly"),
    ("read only", "DELETE FROM sales", "25006", "read-only", "read-only"),
    ("unknown setting", "SHOW no_such_setting", "42704", "no_such_setting", "SHOW ALL"),
]


@pytest.mark.parametrize("name,sql,sqlstate,message,hint", CASES, ids=[c[0] for c in CASES])
def test_error_class(conn, name, sql, sqlstate, message, hint):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql)
    diag = info.value.diag
    assert diag.sqlstate == sqlstate, diag.message_primary
    assert message in (diag.message_primary or "")
    # PostgreSQL's type names, never the engine's.
    for engine_name in ("Date32", "Decimal128", "Utf8", "Int64", "Int32", "Float64", "Timestamp("):
        assert engine_name not in (diag.message_primary or "") + (diag.message_hint or ""), diag.message_primary
    if hint is not None:
        assert hint in (diag.message_hint or "")
    # The session is still usable.
    assert conn.execute("SELECT region FROM sales WHERE region = 'East'").fetchall() == [("East",)]


def test_error_in_extended_protocol_keeps_session(conn):
    with pytest.raises(psycopg.errors.UndefinedColumn):
        conn.execute("SELECT revenue FROM sales WHERE regoin = %s", ("East",))
    assert conn.execute("SELECT region FROM sales WHERE region = %s", ("East",)).fetchall() == [("East",)]


def test_wrong_database_is_refused(server):
    dsn = f"host={server['host']} port={server['port']} user=analyst password=analyst dbname=public"
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn)
    assert "does not exist" in str(info.value)


def test_wrong_password_is_refused(server):
    dsn = f"host={server['host']} port={server['port']} user=analyst password=wrong dbname=kpitables"
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn)
    assert "password authentication failed" in str(info.value)


@pytest.mark.parametrize(
    "sql",
    [
        " UNION ALL ".join(f"SELECT {i} AS n" for i in range(5000)),
        "SELECT " + "+".join(["1"] * 5000),
    ],
    ids=["5000 UNION branches", "5000 nested additions"],
)
def test_deep_statement_is_refused_and_the_server_stays_up(conn, sql):
    """A statement nested deeper than the server plans safely gets 54001 (PostgreSQL's
    stack-depth code), never a crashed process; a deep but allowed one runs."""
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    assert e.value.sqlstate == "54001"
    assert e.value.diag.message_hint
    rows = conn.execute(" UNION ALL ".join(f"SELECT {i} AS n" for i in range(900))).fetchall()
    assert sorted(r[0] for r in rows) == list(range(900))


def test_a_panic_under_a_statement_is_an_error_and_the_session_goes_on(conn):
    """Arrow panics when a string column passes 2 GiB ("offset overflow"): the client
    gets 54000 (a size limit) and the same connection keeps working."""
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT length(string_agg(repeat('x', 1000000), ',')) FROM generate_series(1, 20000)")
    assert e.value.sqlstate == "54000", e.value.diag.message_primary
    assert "too large" in e.value.diag.message_primary
    assert e.value.diag.message_hint
    assert conn.execute("SELECT region FROM sales WHERE region = 'East'").fetchall() == [("East",)]


def test_a_correlated_subquery_between_views_is_the_documented_0A000(conn):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(
            "SELECT s.region, s.revenue FROM sales s "
            "WHERE EXISTS (SELECT 1 FROM order_summary o WHERE o.region = s.region)"
        )
    assert e.value.sqlstate == "0A000", e.value
    assert 'view "sales"' in e.value.diag.message_primary
    assert e.value.diag.message_hint
    assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("sql,type_name", [
    ("SELECT pg_typeof(1)", "integer"),
    ("SELECT pg_typeof(1::bigint)", "bigint"),
    ("SELECT pg_typeof(1.5)", "numeric"),
    ("SELECT pg_typeof('x'::text)", "text"),
    ("SELECT pg_typeof(DATE '2024-01-01')", "date"),
    ("SELECT pg_typeof(true)", "boolean"),
    ("SELECT pg_typeof(revenue) FROM sales", "numeric"),
    ("SELECT pg_typeof(region) FROM sales LIMIT 1", "text"),
])
def test_pg_typeof_names_the_postgres_type(conn, sql, type_name):
    assert conn.execute(sql).fetchone() == (type_name,)
