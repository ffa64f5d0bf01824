"""Step 12: queue, don't refuse. A BI tool's service account runs every viewer's tiles
as one database user: statements beyond `max_statements_per_user` wait their turn (first
come, first served), and embedded execution beyond `max_executing_statements` waits for
the engine; both show in pg_stat_activity and /metrics, and a waiting statement can be
cancelled. The answers under load are checked against DuckDB on the same files. The
queue timeout (53000) and a statement timeout while waiting (57014) are in
test_operations.py::test_statements_beyond_the_limit_wait_then_give_up.
"""

import concurrent.futures
import decimal

import psycopg
import pytest

from conftest import Kpitables, free_port
from test_ground_truth import CASES
from test_operations import Background, dsn, http_get, metric, wait_until, write_config

QUESTIONS = CASES[:4]
SESSIONS = 64


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    d = tmp_path_factory.mktemp("queue")
    # One user's slots and the engine's slots both fewer than the sessions.
    config = write_config(
        d / "kpitables.toml",
        "[limits]\nmax_connections = 100\nmax_statements_per_user = 8\nmax_executing_statements = 2\n",
    )
    http = free_port()
    k = Kpitables(d / "kpitables.log", ["--config", str(config), "--http", f"127.0.0.1:{http}"])
    k.http = http
    try:
        yield k
    finally:
        k.close()


def _exact(rows):
    return [tuple(decimal.Decimal(str(v)) if isinstance(v, float) else v for v in r) for r in rows]


def test_64_sessions_of_one_user_all_answer_right(queued, duck):
    truth = {name: duck.execute(expected).fetchall() for name, _, expected in QUESTIONS}
    conns = [psycopg.connect(dsn(queued), autocommit=True) for _ in range(SESSIONS)]
    try:
        def ask(i):
            name, sql, _ = QUESTIONS[i % len(QUESTIONS)]
            return name, conns[i].execute(sql).fetchall()

        with concurrent.futures.ThreadPoolExecutor(SESSIONS) as pool:
            answers = list(pool.map(ask, range(SESSIONS)))
    finally:
        for c in conns:
            c.close()
    assert len(answers) == SESSIONS
    for name, rows in answers:
        assert _exact(rows) == _exact(truth[name]), name
    _, text = http_get(queued.http, "/metrics")
    # 64 statements of one user against 8 slots: some waited, and none waits now.
    assert metric(text, "kpitables_queue_wait_seconds_count", queue="StatementSlot") >= SESSIONS - 8
    assert metric(text, "kpitables_queue_wait_seconds_count", queue="ExecutionSlot") >= 1
    assert metric(text, "kpitables_queued_statements", queue="StatementSlot") == 0
    assert metric(text, "kpitables_queued_statements", queue="ExecutionSlot") == 0


def _waiting(k, event):
    with psycopg.connect(dsn(k, "ops"), autocommit=True) as ops:
        return ops.execute(
            "SELECT pid, state, wait_event_type FROM pg_stat_activity "
            "WHERE usename = 'exec' AND wait_event = %s",
            (event,),
        ).fetchall()


def test_a_waiting_statement_shows_its_wait_and_can_be_cancelled(queued):
    holders = [Background(dsn(queued), "SELECT pg_sleep(60)") for _ in range(8)]
    try:
        wait_until(lambda: metric(http_get(queued.http, "/metrics")[1], "kpitables_queued_statements",
                                  queue="StatementSlot") == 0
                   and len(_running_sleeps(queued)) == 8, "eight statements hold exec's slots")
        waiter = Background(dsn(queued), "SELECT region FROM sales ORDER BY region")
        wait_until(lambda: len(_waiting(queued, "StatementSlot")) == 1, "the ninth waits for a slot")
        [(pid, state, kind)] = _waiting(queued, "StatementSlot")
        assert (state, kind) == ("active", "Extension")
        _, text = http_get(queued.http, "/metrics")
        assert metric(text, "kpitables_queued_statements", queue="StatementSlot") == 1
        with psycopg.connect(dsn(queued, "ops"), autocommit=True) as ops:
            assert ops.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone() == (True,)
        waiter.join()
        assert isinstance(waiter.error, psycopg.errors.QueryCanceled), waiter.error
        assert _waiting(queued, "StatementSlot") == []
        # The session goes on; once a slot frees it runs.
        with psycopg.connect(dsn(queued, "ops"), autocommit=True) as ops:
            ops.execute("SELECT pg_cancel_backend(%s)", (_running_sleeps(queued)[0],))
        assert waiter.conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        with psycopg.connect(dsn(queued, "ops"), autocommit=True) as ops:
            for pid in _running_sleeps(queued):
                ops.execute("SELECT pg_cancel_backend(%s)", (pid,))
        for h in holders:
            h.join()
            h.conn.close()


def _running_sleeps(k):
    with psycopg.connect(dsn(k, "ops"), autocommit=True) as ops:
        return [r[0] for r in ops.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = 'exec' AND state = 'active' "
            "AND wait_event IS NULL AND query LIKE '%%pg_sleep%%'"
        ).fetchall()]
