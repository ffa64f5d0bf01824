"""Real clients connect, query with parameters and read typed values."""

import asyncio
import datetime
import decimal
import os
import re
import subprocess

import pytest


def test_psycopg3_text_and_binary_results_agree(dsn):
    import psycopg

    query = "SELECT region, order_date__month, revenue, orders, avg_unit_price FROM sales WHERE region = %s AND order_date__year = %s ORDER BY 2"
    params = ("East", datetime.date(2023, 1, 1))
    with psycopg.connect(dsn) as conn:
        text_rows = conn.execute(query, params).fetchall()
        with conn.cursor(binary=True) as cur:
            binary_rows = cur.execute(query, params).fetchall()
    assert len(text_rows) == 12
    assert text_rows == binary_rows
    region, month, revenue, orders, avg_price = text_rows[0]
    assert region == "East"
    assert month == datetime.date(2023, 1, 1)
    assert isinstance(revenue, decimal.Decimal)
    assert isinstance(orders, int)
    assert isinstance(avg_price, decimal.Decimal)


def test_psycopg3_types_of_every_kind(dsn):
    import psycopg

    with psycopg.connect(dsn) as conn:
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                row = cur.execute(
                    "SELECT 1::smallint, 2::int, 3::bigint, 1.5::real, 2.25::double precision, "
                    "CAST(12.34 AS numeric(10,2)), 'текст 文本', DATE '2024-02-29', "
                    "TIMESTAMP '2024-02-29 13:14:15', true, NULL::int"
                ).fetchone()
                assert row == (
                    1, 2, 3, 1.5, 2.25, decimal.Decimal("12.34"), "текст 文本",
                    datetime.date(2024, 2, 29), datetime.datetime(2024, 2, 29, 13, 14, 15), True, None,
                ), f"binary={binary}"


def test_psycopg3_server_side_prepared_statements(dsn):
    import psycopg

    with psycopg.connect(dsn, prepare_threshold=0) as conn:
        totals = [
            conn.execute("SELECT units FROM sales WHERE category = %s", (c,)).fetchone()[0]
            for c in ["Books", "Toys", "Books"]
        ]
    assert totals[0] == totals[2] and totals[0] != totals[1]


def test_transaction_status_and_session_after_commit(dsn):
    import psycopg
    from psycopg.pq import TransactionStatus

    with psycopg.connect(dsn) as conn:
        assert conn.info.transaction_status == TransactionStatus.IDLE
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        conn.commit()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT nope FROM sales")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_psycopg2(server):
    import psycopg2

    conn = psycopg2.connect(
        host=server["host"], port=server["port"], user="analyst", password="analyst", dbname="kpitables"
    )
    try:
        cur = conn.cursor()
        cur.execute("SELECT channel, units FROM sales WHERE channel IN (%s, %s) ORDER BY channel", ("app", "store"))
        rows = cur.fetchall()
        assert [r[0] for r in rows] == ["app", "store"]
        assert all(isinstance(r[1], int) for r in rows)
        cur.execute("SELECT version()")
        assert cur.fetchone()[0].startswith("PostgreSQL 15")
    finally:
        conn.close()


def test_asyncpg(server):
    import asyncpg

    async def run():
        conn = await asyncpg.connect(
            host=server["host"], port=server["port"], user="analyst", password="analyst", database="kpitables"
        )
        try:
            stmt = await conn.prepare(
                "SELECT region, revenue, orders FROM sales WHERE order_date >= $1 AND region = $2"
            )
            row = await stmt.fetchrow(datetime.date(2024, 1, 1), "North")
            assert row["region"] == "North"
            assert isinstance(row["revenue"], decimal.Decimal)
            assert isinstance(row["orders"], int)
            days = await conn.fetch(
                "SELECT order_date, units FROM sales WHERE order_date BETWEEN $1 AND $2 ORDER BY 1",
                datetime.date(2024, 3, 1),
                datetime.date(2024, 3, 7),
            )
            assert [d["order_date"] for d in days] == [datetime.date(2024, 3, d) for d in range(1, 8)]
        finally:
            await conn.close()

    asyncio.run(run())


def psql(server, *commands):
    env = {**os.environ, "PGPASSWORD": server["password"]}
    args = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", server["host"], "-p", str(server["port"]), "-U", server["user"], "kpitables"]
    for c in commands:
        args += ["-c", c]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_psql_lists_views_and_describes_them(server):
    out = psql(server, r"\dv")
    assert "sales" in out and "order_summary" in out
    out = psql(server, r"\dt")
    assert "sales" not in out
    out = psql(server, r"\d sales")
    assert "region" in out and "revenue" in out and "numeric" in out
    out = psql(server, r"\d+ sales")
    assert "Net sales" in out  # the metric's description is the column comment
    assert "销售额" in out


def test_psql_queries_and_session_commands(server):
    out = psql(
        server,
        "SELECT version()",
        "SELECT current_database(), current_user",
        "SHOW DateStyle",
        "SET application_name = 'tests'",
        "BEGIN",
        "SELECT region, revenue FROM sales ORDER BY region",
        "COMMIT",
    )
    assert "PostgreSQL 15" in out
    assert re.search(r"kpitables\s+\|\s+" + server["user"], out)
    assert "ISO, MDY" in out
    assert "Central" in out and "West" in out


def test_explain_shows_the_semantic_rewrite(conn):
    lines = [r[0] for r in conn.execute("EXPLAIN SELECT region, revenue FROM sales").fetchall()]
    text = "\n".join(lines)
    assert lines[0].startswith("Plan cache: ") and lines[1].startswith("Semantic rewrite")
    assert '"__kp_base"."order_lines"' in text and '"__kp_base"."stores"' in text
    assert "products" not in text.split("Optimized plan:")[0], "only the joins the query needs"
    assert "Optimized plan:" in text


def test_set_reports_parameter_status_and_show_reads_it(dsn):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET application_name = 'kp-test'")
        assert conn.info.parameter_status("application_name") == "kp-test"
        assert conn.execute("SHOW application_name").fetchone() == ("kp-test",)
        conn.execute("RESET application_name")
        assert conn.info.parameter_status("application_name") == ""
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SET no_such_parameter = 1")
