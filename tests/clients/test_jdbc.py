"""pgJDBC (the driver of DBeaver, Metabase, Tableau and most Java tools) against the real
server: DatabaseMetaData, server-side prepared statements, fetch-size portals, errors.
The numbers are compared with DuckDB on the same files."""

import decimal
import os
import re
import shutil
import subprocess
from collections import defaultdict

import pytest

from model_facts import DIMENSIONS, METRICS, VIEWS, comment
from test_ground_truth import LINES, REVENUE, assert_rows_equal

JAR = os.environ.get("KPITABLES_JDBC_JAR", "/usr/share/java/postgresql.jar")
PROGRAM = os.path.join(os.path.dirname(__file__), "jdbc", "JdbcCheck.java")


@pytest.fixture(scope="module")
def jdbc(tmp_path_factory):
    """The Java program run against a kpitables of its own, so that the server's log
    holds this driver's statements only."""
    from conftest import Kpitables

    assert shutil.which("java"), "java is missing: tests/run-all.sh installs openjdk-17-jdk-headless"
    assert os.path.exists(JAR), f"{JAR} is missing: tests/run-all.sh installs libpostgresql-jdbc-java"
    log = tmp_path_factory.mktemp("jdbc") / "kpitables.log"
    server = Kpitables(log)
    try:
        run = subprocess.run(
            ["java", "-cp", JAR, PROGRAM, "127.0.0.1", str(server.port)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.close()
    assert run.returncode == 0, run.stderr
    seen = defaultdict(list)
    for line in run.stdout.splitlines():
        kind, *values = line.split("\t")
        seen[kind].append(values)
    seen["server_log"] = log.read_text()
    return seen


def test_tables_are_views_with_their_descriptions(jdbc):
    tables = {name: (kind, remarks) for name, kind, remarks in jdbc["table"]}
    assert set(tables) == set(VIEWS)
    for name, view in VIEWS.items():
        assert tables[name] == ("VIEW", comment(view))


def test_columns_carry_types_and_metric_descriptions(jdbc):
    columns = {c[0]: c for c in jdbc["column"]}
    view = VIEWS["sales"]
    for metric in view["metrics"]:
        assert columns[metric][4] == comment(METRICS[metric])
    for dimension in view["dimensions"]:
        assert columns[dimension][4] == comment(DIMENSIONS[dimension])
    assert columns["revenue"][1] == "numeric" and columns["revenue"][2] == "2"  # Types.NUMERIC
    assert columns["order_date"][1] == "date" and columns["order_date"][2] == "91"  # Types.DATE
    positions = [int(c[3]) for c in jdbc["column"]]
    assert positions == list(range(1, len(positions) + 1))


def test_keys_indexes_and_type_info(jdbc):
    # Views have no keys or indexes, as in PostgreSQL.
    assert jdbc["primary_keys"] == [["0"]]
    assert jdbc["imported_keys"] == [["0"]]
    assert jdbc["indexes"] == [["0"]]
    names = {t[0] for t in jdbc["type_info"]}
    assert {"int8", "int4", "numeric", "text", "date", "timestamp", "bool", "float8"} <= names


def test_prepared_statement_goes_server_side_and_stays_correct(jdbc, duck):
    assert jdbc["result_type"] == [["numeric", "32", "2"]]
    flags = [flag for _, flag in jdbc["server_prepared"]]
    assert flags[-1] == "true", flags
    by_run = defaultdict(list)
    for run, channel, region, revenue in jdbc["prepared"]:
        by_run[(int(run), channel)].append((region, decimal.Decimal(revenue)))
    assert len(by_run) == 6
    for (_, channel), rows in by_run.items():
        truth = duck.execute(
            f"SELECT s.region, {REVENUE} FROM {LINES} WHERE o.channel = ? GROUP BY 1 ORDER BY 1",
            [channel],
        ).fetchall()
        assert_rows_equal(rows, truth)


def test_the_server_parsed_the_named_statement_once_and_executed_it_many_times(jdbc):
    """From the server's side: after prepareThreshold uses, the driver parses the query
    once under a statement name and then only binds and executes that name."""
    log = jdbc["server_log"]
    sql = "SELECT region, revenue FROM sales WHERE channel = $1 ORDER BY region"
    parses = re.findall(r"parse of a named statement statement=(\S+) sql=(.*)$", log, re.M)
    names = [name for name, text in parses if text.strip() == sql]
    assert len(names) == 1, parses
    executions = re.findall(
        r"statement\{[^}]*name=" + re.escape(names[0]) + r"\}: kpitables::wire::run: query ", log
    )
    # Six executions with prepareThreshold=3: the named statement serves the later ones.
    assert len(executions) >= 3, executions


def test_fetch_size_in_a_transaction_reads_every_row(jdbc, duck):
    truth = duck.execute(
        f"SELECT date_trunc('month', o.order_date)::date, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    rows = [(date, decimal.Decimal(revenue)) for date, revenue in jdbc["fetched"]]
    assert len(rows) > 7  # more than one fetch of 7
    assert_rows_equal(rows, truth)


def test_error_has_sqlstate_and_hint_and_connection_survives(jdbc):
    [[state, message]] = jdbc["error"]
    assert state == "42703"
    assert 'did you mean "region"' in message
    assert jdbc["after_error"] == [["1"]]
