#!/usr/bin/env bash
# Run every kpitables test. Installs what the tests need when it is missing (Debian
# packages, a Python virtualenv, npm packages), generates the demo data, then runs the
# Rust tests, the real-client tests (psql, psycopg 3, psycopg2, asyncpg, pgJDBC,
# psqlODBC through pyodbc and isql, SQLAlchemy, pandas, node-postgres), the BI-tool
# statement corpus, the ground-truth metric tests (DuckDB on the same files), and the
# service tests (TLS with each client, probes, /metrics, limits, signals).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${KPITABLES_CACHE:-$HOME/.cache/kpitables}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
mkdir -p "$CACHE"

step() { printf '\n==> %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v mold >/dev/null || need_apt+=(mold)
command -v psql >/dev/null || need_apt+=(postgresql-client)
# A CA and server certificates for the TLS tests (test_operations.py).
command -v openssl >/dev/null || need_apt+=(openssl)
# Real warehouses for the pushdown tests (test_pushdown.py starts its own servers).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v pgbench >/dev/null || need_apt+=(postgresql-contrib)
command -v mariadb-install-db >/dev/null || need_apt+=(mariadb-server mariadb-client)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v java >/dev/null || need_apt+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || need_apt+=(libpostgresql-jdbc-java)
command -v isql >/dev/null || need_apt+=(unixodbc)
[ -f /usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so ] || need_apt+=(odbc-postgresql)
# LibreOffice Calc, its ODBC database driver and its Python bridge (test_libreoffice.py);
# Base's document format (libdbaxml), to register a data source for Calc's Data > Import.
command -v soffice >/dev/null || need_apt+=(libreoffice-calc-nogui)
[ -f /usr/lib/libreoffice/program/libodbclo.so ] || need_apt+=(libreoffice-base-drivers)
[ -f /usr/lib/libreoffice/program/libdbaxmllo.so ] || need_apt+=(libreoffice-base)
/usr/bin/python3 -c 'import uno' 2>/dev/null || need_apt+=(python3-uno)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

VENV=$CACHE/venv
if [ ! -x "$VENV/bin/pytest" ] || ! "$VENV/bin/python" -c 'import psycopg, psycopg2, asyncpg, duckdb, pyodbc, sqlalchemy, pandas, pymysql, polars, connectorx, adbc_driver_postgresql, pyarrow' 2>/dev/null; then
  step "creating the Python test environment in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r tests/clients/requirements.txt
fi

# Apache Superset in a virtualenv of its own (tests/clients/test_superset.py).
SUPERSET_VENV=$CACHE/superset-venv
if ! "$SUPERSET_VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ["superset", "psycopg2", "rich", "cachetools"]))' 2>/dev/null; then
  step "installing Apache Superset in $SUPERSET_VENV"
  python3 -m venv "$SUPERSET_VENV"
  "$SUPERSET_VENV/bin/pip" install -q --upgrade pip
  "$SUPERSET_VENV/bin/pip" install -q -r tests/clients/superset/requirements.txt -c tests/clients/superset/constraints.txt
fi
export KPITABLES_SUPERSET_VENV=$SUPERSET_VENV

# dbt-metricflow and dbt-duckdb in a virtualenv of their own (tests/clients/test_metricflow.py:
# MetricFlow's own answers to the questions kpitables answers over an imported project).
MF_VENV=$CACHE/mf-venv
if ! "$MF_VENV/bin/python" -c 'import dbt_metricflow, dbt.adapters.duckdb' 2>/dev/null; then
  step "installing dbt-metricflow in $MF_VENV"
  python3 -m venv "$MF_VENV"
  "$MF_VENV/bin/pip" install -q --upgrade pip
  "$MF_VENV/bin/pip" install -q -r tests/clients/metricflow/requirements.txt -c tests/clients/metricflow/constraints.txt
fi
export KPITABLES_MF_VENV=$MF_VENV

if [ ! -d tests/clients/node_modules/pg ]; then
  step "installing node-postgres"
  (cd tests/clients && npm install --no-audit --no-fund --silent)
fi

# Link with mold (fast); the same flags in every run, so the build cache is reused.
if command -v mold >/dev/null && [ -z "${RUSTFLAGS:-}" ]; then export RUSTFLAGS="-C link-arg=-fuse-ld=mold"; fi

step "building"
cargo build --bins --tests --benches
BIN=$CARGO_TARGET_DIR/debug/kpitables
export KPITABLES_BIN=$BIN

step "demo data"
"$BIN" demo --out data/demo --if-outdated

step "cargo test"
cargo test --no-fail-fast 2>&1 | tee "$CACHE/cargo-test.log"

step "client and ground-truth tests (pytest)"
# The slowest tests are listed at the end, to keep the run's time in view.
"$VENV/bin/pytest" -q --durations=25 tests/clients

step "node-postgres test"
node --test tests/clients/node_pg.test.mjs
