"""Correlated subqueries in catalog queries, in the forms BI tools write them: each answer
is compared with the same question written in a form the engine plans directly (ground
truth from the same catalogs), never with a stored result."""

import psycopg
import pytest

from model_facts import VIEWS

ROW_BY_ROW = [
    (
        "ARRAY over a series from the outer row (Sigma's key columns)",
        """SELECT c.relname,
                  ARRAY(SELECT (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = i)
                        FROM generate_series(1, c.relnatts) i) AS cols
           FROM pg_class c WHERE c.relkind = 'v' ORDER BY 1""",
        """SELECT c.relname, (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attnum > 0)
           FROM pg_class c WHERE c.relkind = 'v' ORDER BY 1""",
    ),
    (
        "a descending series keeps its order",
        """SELECT c.relname,
                  ARRAY(SELECT (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = i)
                        FROM generate_series(c.relnatts, 1, -1) i) AS cols
           FROM pg_class c WHERE c.relkind = 'v' ORDER BY 1""",
        """SELECT c.relname, (SELECT array_agg(a.attname::text ORDER BY a.attnum DESC) FROM pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attnum > 0)
           FROM pg_class c WHERE c.relkind = 'v' ORDER BY 1""",
    ),
    (
        "EXISTS and a lookup mixing outer and inner columns",
        """SELECT c.relname,
                  EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'region') AS has_region,
                  (SELECT c.relname || '.' || a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = 1) AS first
           FROM pg_class c WHERE c.relkind = 'v' ORDER BY 1""",
        """SELECT c.relname, bool_or(a.attname = 'region'), max(CASE WHEN a.attnum = 1 THEN c.relname || '.' || a.attname END)
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
           WHERE c.relkind = 'v' GROUP BY c.relname ORDER BY 1""",
    ),
]


@pytest.mark.parametrize("name,ours,truth", ROW_BY_ROW, ids=[r[0] for r in ROW_BY_ROW])
def test_correlated_catalog_query(conn, name, ours, truth):
    got = conn.execute(ours).fetchall()
    expected = conn.execute(truth).fetchall()
    assert len(expected) == len(VIEWS)
    assert got == expected


def test_a_statement_that_reads_a_view_is_never_answered_row_by_row(conn):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(
            """SELECT c.relname, ARRAY(SELECT x FROM generate_series(1, c.relnatts) x) AS s,
                      (SELECT revenue FROM sales) AS r
               FROM pg_class c WHERE c.relkind = 'v'"""
        )
    assert e.value.sqlstate == "0A000"
    assert e.value.diag.message_hint
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_subquery_referring_to_an_outer_view_column_is_refused_clearly(conn):
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT region, ARRAY(SELECT x FROM generate_series(1, length(region)) x) FROM sales")
    assert e.value.sqlstate == "0A000"
    assert "region" in str(e.value) and "sales" in str(e.value)
    assert e.value.diag.message_hint
