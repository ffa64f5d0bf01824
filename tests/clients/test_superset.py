"""Apache Superset (from PyPI, in its own virtualenv, installed by tests/run-all.sh) adds
kpitables as a PostgreSQL database, creates a dataset for a view, runs a chart-data query
grouped by a dimension and a SQL Lab query. Column descriptions are compared with the
model files, numbers with DuckDB on the same files. Superset is driven through its REST
API inside its own Flask app (tests/clients/superset/superset_check.py)."""

import json
import os
import pathlib
import subprocess

import pytest

from model_facts import DIMENSIONS, METRICS, VIEWS, comment
from test_ground_truth import LINES, REVENUE, as_doubles, assert_rows_equal

VENV = pathlib.Path(
    os.environ.get("KPITABLES_SUPERSET_VENV", pathlib.Path.home() / ".cache/kpitables/superset-venv")
)
CHECK = pathlib.Path(__file__).resolve().parent / "superset" / "superset_check.py"


@pytest.fixture(scope="module")
def superset(server, tmp_path_factory):
    home = tmp_path_factory.mktemp("superset")
    config = home / "superset_config.py"
    config.write_text(
        "SECRET_KEY = 'kpitables-test-only-secret'\n"
        f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{home / 'superset.db'}'\n"
        "WTF_CSRF_ENABLED = False\n"
    )
    env = {**os.environ, "SUPERSET_CONFIG_PATH": str(config), "SUPERSET_HOME": str(home)}
    superset = str(VENV / "bin" / "superset")
    assert os.access(superset, os.X_OK), f"{superset} missing: tests/run-all.sh installs Superset"
    for args in (
        ["db", "upgrade"],
        ["fab", "create-admin", "--username", "admin", "--firstname", "a", "--lastname", "b",
         "--email", "admin@example.com", "--password", "admin"],
        ["init"],
    ):
        done = subprocess.run([superset, *args], env=env, cwd=home, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"superset {args[0]}: {done.stderr[-3000:]}"
    uri = (
        f"postgresql+psycopg2://{server['user']}:{server['password']}@{server['host']}:{server['port']}"
        f"/{server['dbname']}"
    )
    done = subprocess.run(
        [str(VENV / "bin" / "python"), str(CHECK), uri, "sales", "region", "revenue"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_database_connects_and_lists_the_views(superset):
    assert superset["test_connection"] == {"message": "OK"}
    assert "public" in superset["schemas"]
    assert sorted(superset["tables"]) == sorted(VIEWS)


def test_dataset_columns_carry_the_model_descriptions(superset):
    columns = superset["columns"]
    view = VIEWS["sales"]
    for metric in view["metrics"]:
        assert columns[metric]["description"] == comment(METRICS[metric])
    for dimension in view["dimensions"]:
        assert columns[dimension]["description"] == comment(DIMENSIONS[dimension])
    assert columns["revenue"]["type"].startswith("NUMERIC")
    assert columns["order_date"]["type"] == "DATE"


def test_chart_grouped_by_a_dimension_matches_ground_truth(superset, duck):
    got = [(r["region"], r["SUM(revenue)"]) for r in superset["chart_rows"]]
    expected = duck.execute(f"SELECT s.region, {REVENUE} AS r FROM {LINES} GROUP BY 1 ORDER BY r DESC").fetchall()
    assert len(expected) > 1
    # Superset's chart data is JSON: its numbers are doubles.
    assert_rows_equal(got, as_doubles(expected))
    assert "GROUP BY region" in superset["chart_query"]


def test_sql_lab_query_matches_ground_truth(superset, duck):
    got = [(r["region"], r["revenue"]) for r in superset["sqllab_rows"]]
    expected = duck.execute(f"SELECT s.region, {REVENUE} FROM {LINES} GROUP BY 1 ORDER BY 1").fetchall()
    assert_rows_equal(got, as_doubles(expected))
