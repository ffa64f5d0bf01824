"""Step 7: kpitables run as a service. TLS with real clients (psql, psycopg, pgJDBC,
psqlODBC, node-postgres) against a CA the test creates; the HTTP probes and Prometheus
metrics; each limit with PostgreSQL's SQLSTATE and message; pg_stat_activity with
cancel and terminate; SIGTERM with a grace period; the configuration's precedence and
JSON logs. Every server here is the real binary started by the test.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from conftest import BIN, ROOT, Kpitables, free_port, wait_until

HERE = os.path.dirname(__file__)
JAR = os.environ.get("KPITABLES_JDBC_JAR", "/usr/share/java/postgresql.jar")


def write_config(path, extra=""):
    """The demo configuration, its model by absolute path, with `extra` appended."""
    text = (ROOT / "kpitables.toml").read_text()
    text = re.sub(r'^model = .*$', f'model = "{ROOT / "semantic" / "demo"}"', text, flags=re.M)
    text = re.sub(r'^(audit_file|history_file) = .*$', "", text, flags=re.M)
    path.write_text(text + "\n" + extra)
    return path


def dsn(k, user="exec", **extra):
    parts = {"host": "127.0.0.1", "port": k.port, "user": user, "password": user, "dbname": "kpitables", **extra}
    return " ".join(f"{key}={value}" for key, value in parts.items())


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text, name, **labels):
    """The value of one sample of the exposition text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        sample, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample))
        if sample.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def active_pid(k, user):
    """The pid of `user`'s running statement, seen by the administrator."""
    with psycopg.connect(dsn(k, "ops"), autocommit=True) as ops:
        rows = ops.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s AND state = 'active' AND query LIKE '%%pg_sleep%%'",
            (user,),
        ).fetchall()
    return rows[0][0] if rows else None


class Background:
    """A statement run on its own connection in a thread; its outcome kept."""

    def __init__(self, conninfo, sql):
        self.result = None
        self.error = None
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.thread = threading.Thread(target=self._run, args=(sql,), daemon=True)
        self.thread.start()

    def _run(self, sql):
        try:
            self.result = self.conn.execute(sql).fetchall()
        except psycopg.Error as e:
            self.error = e

    def join(self):
        self.thread.join(timeout=600)
        assert not self.thread.is_alive(), "the statement never ended"


# ---- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA and a server certificate for `localhost` (not for 127.0.0.1) signed by it."""
    assert shutil.which("openssl"), "openssl is missing"
    d = tmp_path_factory.mktemp("tls")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=kpitables test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return d


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certs):
    d = tmp_path_factory.mktemp("tls-server")
    config = write_config(
        d / "kpitables.toml",
        f'[tls]\nmode = "require"\ncert = "{certs / "server.crt"}"\nkey = "{certs / "server.key"}"\n',
    )
    k = Kpitables(d / "kpitables.log", ["--config", str(config)])
    try:
        yield k
    finally:
        k.close()


def psql(conninfo, sql):
    return subprocess.run(["psql", conninfo, "-Atc", sql], capture_output=True, text=True, timeout=120)


def test_psql_over_tls_and_the_refusals(tls_server, certs):
    k = tls_server
    base = f"port={k.port} user=exec password=exec dbname=kpitables"
    ok = psql(f"host=localhost {base} sslmode=require", "SELECT region FROM sales WHERE region = 'East'")
    assert ok.returncode == 0 and ok.stdout.strip() == "East", ok.stderr
    full = psql(f"host=localhost {base} sslmode=verify-full sslrootcert={certs / 'ca.crt'}",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert full.returncode == 0, full.stderr
    # The certificate names localhost, not 127.0.0.1: verify-full refuses the server.
    wrong = psql(f"host=127.0.0.1 {base} sslmode=verify-full sslrootcert={certs / 'ca.crt'}", "SELECT 1")
    assert wrong.returncode != 0 and "does not match host name" in wrong.stderr, wrong.stderr
    # A plaintext login is refused before any password is exchanged.
    plain = psql(f"host=localhost {base} sslmode=disable", "SELECT 1")
    assert plain.returncode != 0
    assert "connection requires TLS" in plain.stderr and "sslmode=require" in plain.stderr, plain.stderr


def test_psycopg_verify_full(tls_server, certs):
    conninfo = dsn(tls_server, host="localhost", sslmode="verify-full", sslrootcert=certs / "ca.crt")
    with psycopg.connect(conninfo, autocommit=True) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("SELECT region FROM sales WHERE region = 'West'").fetchone() == ("West",)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(dsn(tls_server, sslmode="disable"))
    assert "connection requires TLS" in str(e.value)


def test_pgjdbc_verify_full(tls_server, certs):
    assert shutil.which("java") and os.path.exists(JAR), "tests/run-all.sh installs Java and pgJDBC"
    program = os.path.join(HERE, "jdbc", "TlsCheck.java")
    run = lambda host: subprocess.run(  # noqa: E731
        ["java", "-cp", JAR, program, host, str(tls_server.port), str(certs / "ca.crt")],
        capture_output=True, text=True, timeout=300,
    )
    good = run("localhost")
    assert good.stdout.strip() == "ok East", good.stdout + good.stderr
    # The certificate names localhost, not 127.0.0.1: pgJDBC's host name check refuses
    # it (08006, its hostname verifier), not any other failure.
    wrong = run("127.0.0.1")
    assert wrong.stdout.startswith("refused 08006 "), wrong.stdout + wrong.stderr
    assert "127.0.0.1 could not be verified" in wrong.stdout, wrong.stdout


def test_psqlodbc_sslmode_require(tls_server):
    pyodbc = pytest.importorskip("pyodbc", reason="tests/run-all.sh installs pyodbc")
    conn = pyodbc.connect(
        f"DRIVER={{PostgreSQL Unicode}};SERVER=localhost;PORT={tls_server.port};DATABASE=kpitables;"
        "UID=exec;PWD=exec;SSLMode=require"
    )
    try:
        assert conn.cursor().execute("SELECT region FROM sales WHERE region = 'North'").fetchone()[0] == "North"
    finally:
        conn.close()


def test_node_postgres_over_tls(tls_server, certs):
    assert shutil.which("node"), "tests/run-all.sh installs node"
    run = subprocess.run(
        ["node", os.path.join(HERE, "node_tls.mjs"), str(tls_server.port), str(certs / "ca.crt"), "localhost"],
        capture_output=True, text=True, timeout=120, cwd=HERE,
    )
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out == {"ok": True, "region": "East", "tls": True}, run.stdout + run.stderr


# ---- HTTP: probes and metrics ---------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("http")
    http_port = free_port()
    k = Kpitables(d / "kpitables.log", ["--http", f"127.0.0.1:{http_port}"])
    k.http_port = http_port
    try:
        yield k
    finally:
        k.close()


def test_probes(http_server):
    assert http_get(http_server.http_port, "/livez") == (200, "ok\n")
    status, body = http_get(http_server.http_port, "/readyz")
    assert status == 200
    body = json.loads(body)
    assert body["ready"] is True and body["model"]["loaded"] is True and body["sources"] == []
    assert re.fullmatch(r"[0-9a-f]{16}", body["model"]["version"])


def test_metrics_count_a_scripted_workload(http_server):
    port = http_server.http_port
    before = http_get(port, "/metrics")[1]
    with psycopg.connect(dsn(http_server), autocommit=True) as c:
        for _ in range(3):
            assert len(c.execute("SELECT region, revenue FROM sales").fetchall()) == 5
        c.execute("SELECT count(*) FROM pg_class").fetchall()
        with pytest.raises(psycopg.Error):
            c.execute("SELECT regoin FROM sales")
        during = http_get(port, "/metrics")[1]
    with psycopg.connect(dsn(http_server, "staff"), autocommit=True) as staff:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            staff.execute("SELECT revenue FROM order_summary")
    after = http_get(port, "/metrics")[1]
    delta = lambda name, **l: metric(after, name, **l) - metric(before, name, **l)  # noqa: E731
    assert delta("kpitables_queries_total", view="sales", route="embedded", outcome="ok") == 3
    assert delta("kpitables_queries_total", view="none", outcome="ok") == 1
    assert delta("kpitables_rows_sent_total") == 16
    assert delta("kpitables_statement_errors_total", sqlstate="42703") == 1
    assert delta("kpitables_denied_total") == 1
    assert delta("kpitables_query_duration_seconds_count", route="embedded") == 4
    # The repeated query is planned once; the other two times the plan cache has it.
    assert delta("kpitables_planning_duration_seconds_count") >= 4
    assert delta("kpitables_plan_cache_lookups_total", outcome="hit") == 2
    # While the first connection was open (between statements) it was the one session,
    # idle, and none was active.
    assert metric(during, "kpitables_sessions", state="idle") == 1
    assert metric(during, "kpitables_sessions", state="active") == 0
    assert metric(after, "kpitables_model_reloads_total", outcome="ok") >= 1
    assert len(re.findall(r'^kpitables_model_info\{version="[0-9a-f]{16}"\} 1$', after, re.M)) == 1


# ---- Limits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    config = write_config(
        d / "kpitables.toml",
        '[limits]\nmax_connections = 4\nmax_statements_per_user = 1\nstatement_timeout = "5s"\n'
        'max_statement_timeout = "10s"\nquery_memory = "16MB"\nqueue_timeout = "2s"\n',
    )
    k = Kpitables(d / "kpitables.log", ["--config", str(config)])
    try:
        yield k
    finally:
        k.close()


def test_max_connections(limited):
    conns = [psycopg.connect(dsn(limited), autocommit=True) for _ in range(4)]
    try:
        with pytest.raises(psycopg.OperationalError) as e:
            psycopg.connect(dsn(limited))
        assert "sorry, too many clients already" in str(e.value)
        assert conns[0].execute("SELECT 1").fetchone() == (1,)
        conns.pop().close()
        wait_until(lambda: _connects(limited), "a connection fits again")
    finally:
        for c in conns:
            c.close()


def _connects(k, user="exec"):
    """A connection fits and its statement runs (False while the server has no
    connection slot free: "too many clients")."""
    try:
        with psycopg.connect(dsn(k, user)) as c:
            return c.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError as e:
        if "too many clients" not in str(e):
            raise
        return False


def test_statements_beyond_the_limit_wait_then_give_up(limited):
    """exec may run one statement at once: a second waits, and gives up with 57014 at its
    own statement_timeout, or with 53000 at the server's queue_timeout (2 s), while the
    first still holds the slot (it sleeps 9 s and is cancelled at the end)."""
    with psycopg.connect(dsn(limited), autocommit=True) as early, \
            psycopg.connect(dsn(limited), autocommit=True) as late:
        early.execute("SET statement_timeout = '300ms'")
        slow = Background(dsn(limited), "SET statement_timeout = '10s'; SELECT pg_sleep(9)")
        try:
            wait_until(lambda: active_pid(limited, "exec") is not None, "the slow statement runs")
            with pytest.raises(psycopg.errors.QueryCanceled) as e:
                early.execute("SELECT 1")
            assert e.value.diag.message_primary == "canceling statement due to statement timeout"
            with pytest.raises(psycopg.Error) as e:
                late.execute("SELECT 1")
            assert e.value.sqlstate == "53000"
            assert e.value.diag.message_primary == (
                "canceling statement: it waited 2 s for one of user \"exec\"'s 1 statement slots"
                " (max_statements_per_user)"
            )
            assert "queue_timeout" in e.value.diag.message_hint
            pid = active_pid(limited, "exec")
            assert pid is not None, "the slow statement held the slot all along"
            # Another user has statement slots of its own (once the administrator's
            # session above has left its connection slot: max_connections is 4).
            wait_until(lambda: _connects(limited, "analyst"), "another user's statement runs")
            with psycopg.connect(dsn(limited, "ops"), autocommit=True) as ops:
                ops.execute("SELECT pg_cancel_backend(%s)", (pid,))
            slow.join()
            assert isinstance(slow.error, psycopg.errors.QueryCanceled), slow.error
        finally:
            slow.join()
            slow.conn.close()
        # Both sessions go on once the slot is free.
        assert early.execute("SELECT 1").fetchone() == (1,)
        c = late
        # The server's default statement_timeout; a session may lower it, not pass the maximum.
        assert c.execute("SHOW statement_timeout").fetchone() == ("5000ms",)
        c.execute("SET statement_timeout = '200ms'")
        with pytest.raises(psycopg.errors.QueryCanceled) as e:
            c.execute("SELECT pg_sleep(3)")
        assert e.value.diag.message_primary == "canceling statement due to statement timeout"
        with pytest.raises(psycopg.Error) as e:
            c.execute("SET statement_timeout = '1min'")
        assert e.value.sqlstate == "22023" and "max_statement_timeout" in e.value.diag.message_primary
        assert c.execute("SELECT region FROM sales WHERE region = 'East'").fetchall() == [("East",)]


def test_query_memory(limited):
    """A query that needs more than the per-query memory on the embedded engine (a hash
    join of two views at a fine grain) fails with 53200 and a hint; the server lives."""
    big = """SELECT COUNT(*) FROM (SELECT order_date, store_name, product_name FROM sales) a
             JOIN (SELECT order_date, store_name, product_name FROM sales) b
             ON a.product_name = b.product_name AND a.order_date = b.order_date AND a.store_name = b.store_name"""
    with psycopg.connect(dsn(limited), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute(big)
        assert e.value.sqlstate == "53200", e.value.diag.message_primary
        assert "query_memory" in (e.value.diag.message_hint or "")
        assert c.execute("SELECT region FROM sales WHERE region = 'East'").fetchall() == [("East",)]


def test_idle_timeouts(tmp_path):
    config = write_config(
        tmp_path / "kpitables.toml",
        '[limits]\nidle_session_timeout = "700ms"\nidle_in_transaction_session_timeout = "700ms"\n',
    )
    k = Kpitables(tmp_path / "kpitables.log", ["--config", str(config)])
    try:
        with psycopg.connect(dsn(k), autocommit=True) as c:
            c.execute("SELECT 1")
            wait_until(lambda: "idle-session timeout" in (tmp_path / "kpitables.log").read_text(), "the session is ended")
            with pytest.raises(psycopg.Error) as e:
                c.execute("SELECT 1")
            assert e.value.sqlstate == "57P05", e.value
            assert "terminating connection due to idle-session timeout" in str(e.value)
        with psycopg.connect(dsn(k)) as c:
            c.execute("SELECT 1")  # a transaction block is open (not autocommit)
            wait_until(lambda: "idle-in-transaction timeout" in (tmp_path / "kpitables.log").read_text(), "ended")
            with pytest.raises(psycopg.Error) as e:
                c.execute("SELECT 1")
            assert e.value.sqlstate == "25P03", e.value
            assert "terminating connection due to idle-in-transaction timeout" in str(e.value)
        with psycopg.connect(dsn(k), autocommit=True) as fresh:
            assert fresh.execute("SELECT 1").fetchone() == (1,)
    finally:
        k.close()


# ---- Who is running what ------------------------------------------------------------------


def test_pg_stat_activity_cancel_and_terminate(server):
    k = type("K", (), {"port": server["port"]})
    slow = Background(dsn(k), "SELECT pg_sleep(60)")
    try:
        wait_until(lambda: active_pid(k, "exec") is not None, "the slow statement runs")
        pid = active_pid(k, "exec")
        with psycopg.connect(dsn(k, "ops"), autocommit=True) as ops:
            row = ops.execute(
                "SELECT usename, state, query, application_name, client_addr, backend_start IS NOT NULL "
                "FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            assert row[:3] == ("exec", "active", "SELECT pg_sleep(60)")
            assert row[4] == "127.0.0.1" and row[5] is True
            # A plain user sees only its own sessions and may not signal others'.
            with psycopg.connect(dsn(k, "analyst"), autocommit=True) as analyst:
                users = {r[0] for r in analyst.execute("SELECT usename FROM pg_stat_activity").fetchall()}
                assert users == {"analyst"}
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    analyst.execute("SELECT pg_cancel_backend(%s)", (pid,))
            assert ops.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone() == (True,)
            slow.join()
            assert isinstance(slow.error, psycopg.errors.QueryCanceled), slow.error
            # The cancelled session goes on.
            assert slow.conn.execute("SELECT 1").fetchone() == (1,)
            again = Background(dsn(k), "SELECT pg_sleep(60)")
            try:
                wait_until(lambda: active_pid(k, "exec") is not None, "the second statement runs")
                pid = active_pid(k, "exec")
                assert ops.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
                again.join()
                assert again.error is not None and "terminating connection due to administrator command" in str(again.error)
                # The server has closed the session: the next statement finds it gone.
                with pytest.raises(psycopg.OperationalError):
                    again.conn.execute("SELECT 1")
                assert again.conn.broken or again.conn.closed
            finally:
                again.conn.close()
            assert ops.execute("SELECT pg_terminate_backend(99999999)").fetchone() == (False,)
    finally:
        slow.conn.close()


# ---- Graceful shutdown ------------------------------------------------------------------------


def serve_with_grace(tmp_path, grace):
    config = write_config(tmp_path / "kpitables.toml", f'[limits]\nshutdown_grace = "{grace}"\n')
    return Kpitables(tmp_path / "kpitables.log", ["--config", str(config)])


def test_sigterm_lets_a_running_query_finish(tmp_path):
    k = serve_with_grace(tmp_path, "30s")
    try:
        query = Background(dsn(k), "SELECT pg_sleep(1.5), region FROM sales WHERE region = 'East'")
        wait_until(lambda: active_pid(k, "exec") is not None, "the statement runs")
        k.proc.send_signal(signal.SIGTERM)
        query.join()
        assert query.error is None and query.result == [(None, "East")], query.error
        assert k.proc.wait(timeout=60) == 0
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn(k))
    finally:
        query.conn.close()
        k.close()


def test_sigterm_past_the_grace_period_ends_the_query_with_57P01(tmp_path):
    k = serve_with_grace(tmp_path, "500ms")
    try:
        query = Background(dsn(k), "SELECT pg_sleep(60)")
        wait_until(lambda: active_pid(k, "exec") is not None, "the statement runs")
        k.proc.send_signal(signal.SIGTERM)
        query.join()
        assert query.error is not None and "terminating connection due to administrator command" in str(query.error)
        assert k.proc.wait(timeout=60) == 0
        records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert any(r["outcome"] == "interrupted" or r.get("sqlstate") == "57P01" for r in records), records
    finally:
        query.conn.close()
        k.close()


# ---- Configuration and logs ------------------------------------------------------------------


def test_config_print_shows_the_effective_configuration(tmp_path):
    config = write_config(tmp_path / "kpitables.toml", "[limits]\nmax_connections = 50\n")
    run = subprocess.run(
        [BIN, "config", "print", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "KPITABLES_MAX_CONNECTIONS": "7", "KPITABLES_HTTP": "127.0.0.1:9999"},
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "max_connections = 7" in out  # the environment is above the file
    assert 'http = "127.0.0.1:9999"' in out
    assert 'password = "***"' in out and 'password = "exec"' not in out
    bad = subprocess.run([BIN, "config", "print", "--config", str(config)], capture_output=True, text=True,
                         env={**os.environ, "KPITABLES_STATEMENT_TIMEOUT": "soon"}, timeout=60)
    assert bad.returncode != 0 and "KPITABLES_STATEMENT_TIMEOUT" in bad.stderr


def test_json_logs_carry_the_statement_fields(tmp_path):
    k = Kpitables(tmp_path / "kpitables.log", ["--log-format", "json"])
    try:
        with psycopg.connect(dsn(k), autocommit=True) as c:
            c.execute("SELECT region, revenue FROM sales").fetchall()
    finally:
        k.close()
    lines = [json.loads(line) for line in (tmp_path / "kpitables.log").read_text().splitlines() if line.startswith("{")]
    finished = [line for line in lines if line.get("fields", {}).get("message") == "query finished"]
    assert finished, lines[-5:]
    last = finished[-1]
    assert last["fields"]["rows"] == 5 and last["fields"]["outcome"] == "ok"
    assert any(span.get("name") == "statement" and span.get("user") == "exec" for span in last.get("spans", []))
