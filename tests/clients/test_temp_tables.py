"""Temporary tables, as Tableau uses them (a connection check, then large filter lists):
private to their session, gone with it; the model stays read-only."""

import psycopg
import pytest

from test_ground_truth import LINES, REVENUE, assert_rows_equal


def state(excinfo):
    return excinfo.value.sqlstate


def test_tableau_connection_check_and_filter_table(dsn, duck):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute('CREATE LOCAL TEMPORARY TABLE "#Tableau_1_Connect_C" ("COL" INTEGER) ON COMMIT PRESERVE ROWS')
        c.execute(
            'SELECT * INTO TEMPORARY TABLE "#Tableau_2_Connect_C" FROM (SELECT 1 AS COL) AS CHECKTEMP LIMIT 1'
        )
        assert c.execute('SELECT * FROM "#Tableau_2_Connect_C"').fetchall() == [(1,)]
        c.execute('DROP TABLE "#Tableau_1_Connect_C"')
        c.execute('DROP TABLE "#Tableau_2_Connect_C"')

        c.execute("CREATE TEMP TABLE wanted_cities (city TEXT)")
        cities = [r[0] for r in duck.execute("SELECT DISTINCT city FROM stores ORDER BY 1 LIMIT 3").fetchall()]
        with c.cursor() as cur:
            cur.executemany("INSERT INTO wanted_cities VALUES (%s)", [(x,) for x in cities])
        got = c.execute(
            "SELECT city, revenue FROM sales WHERE city IN (SELECT city FROM wanted_cities) ORDER BY city"
        ).fetchall()
        expected = duck.execute(
            f"SELECT s.city, {REVENUE} FROM {LINES} WHERE s.city IN (SELECT unnest(?::VARCHAR[])) GROUP BY 1 ORDER BY 1",
            [cities],
        ).fetchall()
        assert len(expected) == 3
        assert_rows_equal(got, expected)
        # Joined with the view (as Tableau joins its filter tables): the view is first
        # aggregated at the join's grain, so each city's revenue is counted once.
        c.execute("INSERT INTO wanted_cities VALUES (%s)", (cities[0],))  # a duplicate
        got = c.execute(
            """SELECT s.city, s.revenue, COUNT(*) FROM sales s JOIN (SELECT DISTINCT city FROM wanted_cities) w
               ON s.city = w.city GROUP BY s.city, s.revenue ORDER BY 1"""
        ).fetchall()
        assert_rows_equal([r[:2] for r in got], expected)
        assert [r[2] for r in got] == [1, 1, 1]


def test_create_as_insert_and_column_lists(conn):
    cur = conn.execute("CREATE TEMPORARY TABLE t AS SELECT 5 AS i, 'c' AS s UNION ALL SELECT 10 AS i, 'd' AS s")
    assert cur.statusmessage == "SELECT 2"
    assert conn.execute("INSERT INTO t (s) VALUES ('e')").statusmessage == "INSERT 0 1"
    assert conn.execute("INSERT INTO pg_temp.t SELECT i + 1, s FROM t WHERE i = 5").statusmessage == "INSERT 0 1"
    assert conn.execute("SELECT i, s FROM t ORDER BY i NULLS FIRST").fetchall() == [
        (None, "e"),
        (5, "c"),
        (6, "c"),
        (10, "d"),
    ]


def test_temporary_tables_are_private_to_their_session(dsn):
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
        a.execute("CREATE TEMP TABLE mine (x INT)")
        a.execute("INSERT INTO mine VALUES (1)")
        for sql in ("SELECT * FROM mine", "SELECT * FROM pg_temp.mine"):
            with pytest.raises(psycopg.Error) as e:
                b.execute(sql)
            assert state(e) == "42P01"
        b.execute("CREATE TEMP TABLE mine (y TEXT)")  # its own, no clash
        assert a.execute("SELECT * FROM mine").fetchall() == [(1,)]
        a.execute("DISCARD ALL")
        with pytest.raises(psycopg.Error) as e:
            a.execute("SELECT * FROM mine")
        assert state(e) == "42P01"
    with psycopg.connect(dsn, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT * FROM mine")
        assert state(e) == "42P01"


@pytest.mark.parametrize(
    "sql,sqlstate",
    [
        ("CREATE TABLE plain (x INT)", "25006"),
        ("SELECT 1 AS x INTO plain", "25006"),
        ("INSERT INTO sales (region) VALUES ('x')", "25006"),
        ("DROP TABLE sales", "25006"),
        ("DROP TABLE no_such_table", "42P01"),
        ("CREATE TEMP TABLE gone (x INT) ON COMMIT DROP", "0A000"),
    ],
)
def test_the_model_stays_read_only(conn, sql, sqlstate):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    assert state(e) == sqlstate
    assert e.value.diag.message_hint
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_duplicate_temporary_table(conn):
    conn.execute("CREATE TEMP TABLE twice (x INT)")
    with pytest.raises(psycopg.Error) as e:
        conn.execute("CREATE TEMP TABLE twice (x INT)")
    assert state(e) == "42P07"
    conn.execute("DROP TABLE IF EXISTS twice, never_there")


def test_memory_budget(conn):
    """Temporary tables live in memory: past the session's budget the statement fails
    with 53200 and the session keeps working."""
    with pytest.raises(psycopg.Error) as e:
        conn.execute("CREATE TEMP TABLE big AS SELECT repeat('x', 1000) AS s FROM generate_series(1, 300000)")
    assert state(e) == "53200"
    assert e.value.diag.message_hint
    with pytest.raises(psycopg.Error):
        conn.execute("SELECT count(*) FROM big")
    conn.execute("CREATE TEMP TABLE small AS SELECT 1 AS x")
    assert conn.execute("SELECT x FROM small").fetchall() == [(1,)]
