"""COPY ... TO STDOUT on the embedded engine: psql's \\copy to a CSV file, COPY of a
query and of a view in text, CSV and binary, each answer compared with a hand-written
query DuckDB runs on the same files; the access rules and the audit apply as to SELECT;
every other COPY form is refused with PostgreSQL's SQLSTATE and the session goes on.
(test_pushdown.py compares the bytes with PostgreSQL's own COPY of the same rows.)"""

import csv
import decimal
import io
import json
import os
import subprocess

import psycopg
import pytest

from test_ground_truth import LINES, REVENUE, assert_rows_equal

BY_REGION = f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1"


def psql(server, user, command):
    env = {**os.environ, "PGPASSWORD": user}
    return subprocess.run(
        ["psql", "-X", "-h", server["host"], "-p", str(server["port"]), "-U", user, "-d", server["dbname"],
         "-v", "ON_ERROR_STOP=1", "-c", command],
        capture_output=True, text=True, env=env, timeout=120,
    )


def copy_bytes(conn, sql):
    out = bytearray()
    with conn.cursor().copy(sql) as copy:
        for block in copy:
            out += block
    return bytes(out)


def test_psql_copy_to_a_csv_file(server, duck, tmp_path):
    target = tmp_path / "rev.csv"
    run = psql(server, "exec", f"\\copy (SELECT region, revenue FROM sales ORDER BY region) TO '{target}' CSV HEADER")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "COPY 5"
    rows = list(csv.reader(target.open(newline="")))
    assert rows[0] == ["region", "revenue"]
    assert_rows_equal([(r, decimal.Decimal(v)) for r, v in rows[1:]], duck.execute(BY_REGION).fetchall())


def test_copy_a_view_in_text_format(conn, duck):
    data = copy_bytes(conn, "COPY sales (region, revenue) TO STDOUT")
    rows = [line.split("\t") for line in data.decode().splitlines()]
    truth = duck.execute(f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1").fetchall()
    assert_rows_equal(sorted((r, decimal.Decimal(v)) for r, v in rows), sorted(truth))


def test_copy_binary_reads_back_typed_values(conn, duck):
    sql = ("SELECT order_date, region, revenue, orders FROM sales "
           "WHERE order_date BETWEEN DATE '2024-06-01' AND DATE '2024-06-03' ORDER BY 1, 2")
    with conn.cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)") as copy:
        copy.set_types(["date", "text", "numeric", "int8"])
        got = list(copy.rows())
    truth = duck.execute(
        f"SELECT o.order_date, s.region, {REVENUE}, COUNT(DISTINCT CASE WHEN o.status <> 'cancelled' THEN l.order_id END) "
        f"FROM {LINES} WHERE o.order_date BETWEEN DATE '2024-06-01' AND DATE '2024-06-03' GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    assert_rows_equal(got, truth)


def test_csv_options_round_trip(conn):
    """Values that need quoting and escaping come back as they were through a CSV reader
    and through the text format's escapes; NULL and the empty string stay apart."""
    values = "SELECT 'a,b' AS x, 'say \"hi\"' AS y, CAST(NULL AS TEXT) AS z, '' AS w, 'tab\there' AS t, 'new\nline' AS n"
    data = copy_bytes(conn, f"COPY ({values}) TO STDOUT (FORMAT csv, HEADER)").decode()
    rows = list(csv.reader(io.StringIO(data, newline="")))
    assert rows == [["x", "y", "z", "w", "t", "n"], ["a,b", 'say "hi"', "", "", "tab\there", "new\nline"]]
    assert ',,"",' in data  # NULL unquoted, the empty string quoted
    text = copy_bytes(conn, f"COPY ({values}) TO STDOUT").decode()
    assert text == 'a,b\tsay "hi"\t\\N\t\ttab\\there\tnew\\nline\n'
    custom = copy_bytes(conn, f"COPY ({values}) TO STDOUT (FORMAT csv, DELIMITER ';', NULL 'NULL', QUOTE '''', FORCE_QUOTE (x))").decode()
    rows = list(csv.reader(io.StringIO(custom, newline=""), delimiter=";", quotechar="'"))
    assert rows == [["a,b", 'say "hi"', "NULL", "", "tab\there", "new\nline"]]
    assert custom.startswith("'a,b';")


def test_copy_follows_the_access_rules_and_is_audited(server, duck):
    dsn = f"host={server['host']} port={server['port']} user=manager_east password=manager_east dbname={server['dbname']}"
    with psycopg.connect(dsn, autocommit=True) as c:
        data = copy_bytes(c, "COPY (SELECT region, revenue FROM sales) TO STDOUT (FORMAT csv)").decode()
    rows = list(csv.reader(io.StringIO(data)))
    truth = duck.execute(f"SELECT s.region, {REVENUE} FROM {LINES} WHERE s.region = 'East' GROUP BY 1").fetchall()
    assert_rows_equal([(r, decimal.Decimal(v)) for r, v in rows], truth)
    audit = [json.loads(line) for line in (server["log"].parent / "audit.jsonl").read_text().splitlines()]
    mine = [r for r in audit if r["user"] == "manager_east" and r["views"] == ["sales"]]
    assert mine and mine[-1]["rows"] == 1 and mine[-1]["outcome"] == "ok"


@pytest.mark.parametrize("sql,sqlstate,words", [
    ("COPY sales FROM STDIN", "25006", "cannot execute COPY FROM in a read-only transaction"),
    ("COPY sales TO '/tmp/kpitables-copy.csv'", "42501", "pg_write_server_files"),
    ("COPY sales TO PROGRAM 'cat'", "42501", "pg_execute_server_program"),
    ("COPY sales TO STDOUT (FORMAT xml)", "22023", 'COPY format "xml" not recognized'),
    ("COPY sales TO STDOUT (FORMAT binary, HEADER)", "42601", "cannot specify HEADER in BINARY mode"),
    ("COPY sales TO STDOUT (QUOTE '\"')", "0A000", "COPY quote available only in CSV mode"),
    ("COPY sales TO STDOUT (FORMAT csv, FORCE_QUOTE (nope))", "42601", 'FORCE_QUOTE column "nope" not referenced by COPY'),
    ("COPY nosuch TO STDOUT", "42P01", "nosuch"),
    ("COPY (SELECT regoin FROM sales) TO STDOUT", "42703", "regoin"),
])
def test_other_copy_forms_are_refused(conn, sql, sqlstate, words):
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql)
    assert e.value.sqlstate == sqlstate, e.value
    assert words in str(e.value)
    assert conn.execute("SELECT region, revenue FROM sales WHERE region = 'East'").fetchone()[0] == "East"


def test_copy_after_another_statement_in_one_query_string(server):
    run = psql(server, "exec", "SELECT 1 AS one; COPY (SELECT region FROM sales) TO STDOUT")
    assert run.returncode != 0
    assert "COPY TO STDOUT must be the first statement of a query string" in run.stderr
    first = psql(server, "exec", "COPY (SELECT region FROM sales ORDER BY 1) TO STDOUT; SELECT 2 AS two")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Central\nEast\n") and "two" in first.stdout
