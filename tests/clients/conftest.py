"""Start one real kpitables server (the binary, demo model) for the client tests."""

import os
import pathlib
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("KPITABLES_BIN") or str(ROOT / "target" / "debug" / "kpitables")
DATA = ROOT / "data" / "demo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: pathlib.Path) -> None:
    # Readiness wait (not a timing assertion): the server loads and binds the model first.
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"kpitables exited early:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"kpitables did not listen on {port}:\n{log.read_text()}")


def wait_until(condition, what="the condition", seconds=120):
    """Wait for another party's state (a readiness wait, not a timing assertion): the
    condition's first true value; AssertionError naming `what` if it never comes."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.05)


class Kpitables:
    """A kpitables server process (the real binary) on a free port."""

    def __init__(self, log: pathlib.Path, args=(), env=None):
        self.port = free_port()
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [BIN, "serve", "--listen", f"127.0.0.1:{self.port}",
                 *([] if "--audit-file" in args else ["--audit-file", str(log.parent / "audit.jsonl")]),
                 *([] if "--history-file" in args else
                   ["--history-file", str(log.parent / f"{log.stem}-history.jsonl")]),
                 *args],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": "info", **(env or {})},
            )
        try:
            wait_for_port(self.port, self.proc, log)
        except Exception:
            self.close()
            raise
        self.info = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": "exec",
            "password": "exec",
            "dbname": "kpitables",
            "log": log,
        }
        self.dsn = f"host=127.0.0.1 port={self.port} user=exec password=exec dbname=kpitables"

    def close(self):
        # SIGTERM lets running statements finish for the shutdown grace (30 s by default).
        self.proc.terminate()
        try:
            self.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    assert (DATA / "_SUCCESS").exists(), "run `kpitables demo` first (tests/run-all.sh does)"
    k = Kpitables(tmp_path_factory.mktemp("server") / "kpitables.log")
    try:
        yield k.info
    finally:
        k.close()


@pytest.fixture()
def dsn(server):
    s = server
    return f"host={s['host']} port={s['port']} user={s['user']} password={s['password']} dbname={s['dbname']}"


@pytest.fixture()
def conn(dsn):
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def duck():
    """DuckDB over the same demo files: the ground truth."""
    import duckdb

    db = duckdb.connect()
    for name in ["order_lines", "orders", "stores", "products"]:
        db.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{DATA / (name + '.parquet')}')")
    db.execute(
        f"CREATE VIEW customers AS SELECT * FROM read_csv('{DATA / 'customers.csv'}', header = true)"
    )
    db.execute(
        f"CREATE VIEW revenue_targets AS SELECT * FROM read_csv('{DATA / 'targets.csv'}', header = true)"
    )
    db.execute(
        f"CREATE VIEW stock_counts AS SELECT * FROM read_csv('{DATA / 'stock_counts.csv'}', header = true)"
    )
    db.execute(
        f"CREATE VIEW calendar AS SELECT * FROM read_csv('{DATA / 'calendar.csv'}', header = true)"
    )
    return db


_SKIPPED = []


def pytest_runtest_logreport(report):
    """A skipped test is not a passing one: the run fails when any test was skipped
    (tests/run-all.sh installs everything the tests need)."""
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and session.exitstatus == 0:
        print(f"\n{len(_SKIPPED)} test(s) skipped, which fails the run: {_SKIPPED}")
        session.exitstatus = 1


class LoadedWarehouse:
    """A warehouse server started by the harness (warehouses.py) with the demo loaded by
    `kpitables demo --into`, and the model that command wrote for it."""

    def __init__(self, kind, tmp):
        from warehouses import MariaDB, Postgres

        self.kind = kind
        self.server = Postgres() if kind == "postgres" else MariaDB()
        self.env = {"KPITABLES_WAREHOUSE_PASSWORD": self.server.password} if kind == "mariadb" else {}
        self.model = tmp / "model"
        try:
            loaded = subprocess.run(
                [BIN, "demo", "--out", str(DATA), "--into", self.server.url, "--model-out", str(self.model)],
                cwd=ROOT, capture_output=True, text=True,
            )
            assert loaded.returncode == 0, loaded.stderr
        except Exception:
            self.server.close()
            raise


@pytest.fixture(scope="session")
def warehouses(tmp_path_factory):
    """`warehouses(kind)`: the PostgreSQL or MariaDB warehouse of this test session, started
    and loaded once at its first use and shared by every module that reads the demo from
    a warehouse (test_pushdown, test_federation). A test that stops one starts it again;
    a test that changes one of its tables changes it back."""
    started = {}

    def get(kind):
        if kind not in started:
            started[kind] = LoadedWarehouse(kind, tmp_path_factory.mktemp(f"{kind}-warehouse"))
        return started[kind]

    try:
        yield get
    finally:
        for w in started.values():
            w.server.close()
