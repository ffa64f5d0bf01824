"""psqlODBC (the driver behind Excel, Power BI's ODBC connector and LibreOffice) against
the real server, through pyodbc and through unixODBC's `isql`, in both fetch modes:
the default and the driver's declare/fetch cursors (`UseDeclareFetch=1`). Numbers are
compared with DuckDB on the same files."""

import decimal
import os
import shutil
import subprocess

import pytest

from model_facts import VIEWS
from test_ground_truth import LINES, REVENUE, assert_rows_equal

DRIVER = "PostgreSQL Unicode"


def connection_string(server, declare_fetch):
    return (
        f"DRIVER={{{DRIVER}}};SERVER={server['host']};PORT={server['port']};"
        f"DATABASE={server['dbname']};UID={server['user']};PWD={server['password']};"
        f"UseDeclareFetch={declare_fetch};Fetch=5"
    )


@pytest.fixture(params=[0, 1], ids=["plain", "declare-fetch"])
def odbc(request, server):
    pyodbc = pytest.importorskip("pyodbc", reason="tests/run-all.sh installs pyodbc")
    assert DRIVER in pyodbc.drivers(), "psqlODBC is missing: tests/run-all.sh installs odbc-postgresql"
    conn = pyodbc.connect(connection_string(server, request.param), autocommit=False)
    yield conn, request.param
    conn.close()


def test_sqltables_lists_the_views(odbc):
    conn, _ = odbc
    tables = {(t.table_name, t.table_type) for t in conn.cursor().tables(schema="public")}
    assert tables == {(name, "VIEW") for name in VIEWS}


def test_sqlcolumns_gives_names_and_types(odbc):
    conn, _ = odbc
    columns = conn.cursor().columns(table="sales", schema="public").fetchall()
    by_name = {c.column_name: c for c in columns}
    view = VIEWS["sales"]
    assert set(view["dimensions"]) | set(view["metrics"]) <= set(by_name)
    assert [c.ordinal_position for c in columns] == list(range(1, len(columns) + 1))
    assert by_name["revenue"].type_name == "numeric"
    assert (by_name["revenue"].column_size, by_name["revenue"].decimal_digits) == (32, 2)
    assert by_name["order_date"].type_name == "date"
    assert by_name["region"].type_name == "text"


def test_sqlgettypeinfo(odbc):
    conn, _ = odbc
    names = {row[0] for row in conn.cursor().getTypeInfo().fetchall()}
    assert {"int4", "int8", "numeric", "text", "date", "bool"} <= names


def test_parameterized_query_matches_ground_truth(odbc, duck):
    conn, _ = odbc
    for channel in ["online", "store"]:
        rows = conn.cursor().execute(
            "SELECT region, revenue FROM sales WHERE channel = ? ORDER BY region", channel
        ).fetchall()
        truth = duck.execute(
            f"SELECT s.region, {REVENUE} FROM {LINES} WHERE o.channel = ? GROUP BY 1 ORDER BY 1",
            [channel],
        ).fetchall()
        assert_rows_equal([tuple(r) for r in rows], truth)


def test_many_rows_through_the_fetch_mode(odbc, duck):
    conn, _ = odbc
    rows = conn.cursor().execute("SELECT order_date__month, revenue FROM sales ORDER BY 1").fetchall()
    conn.commit()
    truth = duck.execute(
        f"SELECT date_trunc('month', o.order_date)::date, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert len(rows) > 5  # more than one FETCH of 5 in declare/fetch mode
    assert_rows_equal([tuple(r) for r in rows], truth)


@pytest.mark.parametrize("declare_fetch", [0, 1], ids=["plain", "declare-fetch"])
def test_the_server_sees_the_fetch_mode_of_this_session(declare_fetch, tmp_path):
    """Declare/fetch mode is what the server received from this ODBC session: a server of
    its own, so its log holds this session's statements only (a DECLARE per query in
    declare/fetch mode, none otherwise)."""
    pyodbc = pytest.importorskip("pyodbc", reason="tests/run-all.sh installs pyodbc")
    from conftest import Kpitables

    server = Kpitables(tmp_path / "kpitables.log")
    try:
        conn = pyodbc.connect(connection_string(server.info, declare_fetch), autocommit=False)
        rows = conn.cursor().execute("SELECT order_date__month, revenue FROM sales ORDER BY 1").fetchall()
        conn.commit()
        conn.close()
    finally:
        server.close()
    assert len(rows) > 5
    declared = (tmp_path / "kpitables.log").read_text().count("declare cursor")
    if declare_fetch:
        assert declared >= 1, "the driver did not use DECLARE/FETCH"
    else:
        assert declared == 0, "a plain-mode session declared cursors"


def test_error_then_the_session_keeps_working(odbc):
    pyodbc = pytest.importorskip("pyodbc")
    conn, _ = odbc
    cursor = conn.cursor()
    with pytest.raises(pyodbc.Error) as failure:
        cursor.execute("SELECT regin FROM sales")
    assert failure.value.args[0] == "42703"
    assert cursor.execute("SELECT 1").fetchone()[0] == 1
    conn.commit()


@pytest.fixture()
def isql(server, tmp_path):
    assert shutil.which("isql"), "isql is missing: tests/run-all.sh installs unixodbc"
    ini = tmp_path / "odbc.ini"
    ini.write_text(
        "[kpitables_test]\n"
        f"Driver = {DRIVER}\nServername = {server['host']}\nPort = {server['port']}\n"
        f"Database = {server['dbname']}\nUseDeclareFetch = 1\nFetch = 3\n"
    )

    def run(commands):
        result = subprocess.run(
            ["isql", "-b", "-v", "-d|", "kpitables_test", server["user"], server["password"]],
            input=commands,
            capture_output=True,
            text=True,
            env={**os.environ, "ODBCINI": str(ini)},
            timeout=120,
        )
        return result.stdout + result.stderr

    return run


def test_isql_lists_tables_and_columns(isql):
    out = isql("help\nhelp sales\n")
    lines = [line.split("|") for line in out.splitlines() if line.startswith("kpitables|")]
    tables = {(l[2], l[3]) for l in lines if len(l) == 5}
    assert tables == {(name, "VIEW") for name in VIEWS}
    columns = [l[3] for l in lines if len(l) > 5 and l[2] == "sales"]
    assert "revenue" in columns and "region" in columns


def test_isql_query_matches_ground_truth(isql, duck):
    out = isql("SELECT region, revenue FROM sales ORDER BY region\n")
    rows = [tuple(l.split("|")) for l in out.splitlines() if l.count("|") == 1]
    truth = duck.execute(f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1").fetchall()
    assert_rows_equal([(r, decimal.Decimal(v)) for r, v in rows], truth)


def test_isql_reports_errors_with_sqlstate(isql):
    out = isql("SELECT regin FROM sales\nSELECT 1\n")
    assert '[42703]ERROR: column "regin" does not exist' in out
