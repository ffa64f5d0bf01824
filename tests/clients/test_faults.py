"""Step 11: faults, each with the documented behaviour and nothing lost
(docs/reliability.md):

- a warehouse that stops sending mid-statement (a TCP proxy of the harness stops
  forwarding): the statement ends with 57014 at the source's query timeout, the
  connection it held is dropped (its late bytes never reach another statement), and
  answers are right once the warehouse sends again;
- a warehouse that drops every connection mid-statement and between statements (a
  restart): the statement in flight, with no row yet, is retried once on a new
  connection; the sessions go on and reconnect;
  (these three faults run against PostgreSQL and MariaDB, each behind the proxy)
- the model directory rewritten, half of the time invalid, while the server reloads it:
  the invalid model never replaces the good one, the last valid one is served;
- SIGTERM under the load of eight clients: statements in flight finish, every client's
  connection ends cleanly, exit 0, an audit record for every answered statement;
- the source's connection pool exhausted: a statement waits `connect_timeout_secs` and
  fails with 08001 naming the pool, the session goes on;
- a full disk for the audit file: queries answer, kp.audit keeps every record, and when
  the file can be written again its first line records the gap (how many, since when);
- a full disk for the model history file during a reload: the change is served and
  logged, the file takes the next version;
- a client that disappears in the middle of a large result: the server stays up, the
  statement is recorded as interrupted and its session is gone.
"""

import json
import re
import shutil
import socket
import struct
import threading
import time

import psycopg
import pytest

import fuzz_wire as fw
from conftest import Kpitables, wait_until


class StallingProxy:
    """A TCP proxy to `port` whose forwarding of the server's bytes can be paused: the
    warehouse then seems to stall in the middle of its answer."""

    def __init__(self, port: int):
        self.target = port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        # Set when the warehouse has sent bytes that the proxy holds back.
        self.held = threading.Event()
        self.closed = False
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source, sink, from_server):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if from_server and not self.flowing.is_set():
                    self.held.set()
                    self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stall(self):
        """Stop forwarding what the warehouse sends."""
        self.held.clear()
        self.flowing.clear()

    def wait_held(self):
        """Wait until the warehouse has answered a statement whose answer is held back:
        the statement holds its connection."""
        wait_until(self.held.is_set, "the warehouse answers a statement of kpitables")

    def cut(self):
        """Drop every connection, as a warehouse that restarts does."""
        for s in list(self.sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self.sockets.clear()

    def close(self):
        self.closed = True
        self.flowing.set()
        self.listener.close()


@pytest.fixture(params=["postgres", "mariadb"])
def proxied(warehouses, tmp_path, request):
    """kpitables on the PostgreSQL or the MariaDB warehouse through a stalling proxy, with
    a 5 s query timeout and a pool of one connection that is waited for 1 s."""
    wh = warehouses(request.param)
    proxy = StallingProxy(wh.server.port)
    model = tmp_path / "model"
    shutil.copytree(wh.model, model)
    sources = model / "sources.toml"
    text = re.sub(r"@127\.0\.0\.1:\d+/", f"@127.0.0.1:{proxy.port}/", sources.read_text())
    sources.write_text(text + "query_timeout_secs = 5\npool_size = 1\nconnect_timeout_secs = 1\n")
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(model)], wh.env)
    try:
        yield k, proxy, wh
    finally:
        proxy.flowing.set()
        k.close()
        proxy.close()


# One day of orders: cheap on both warehouses (order_date is indexed), so only a stall
# makes a statement wait.
REGIONS = ("SELECT region, revenue FROM sales WHERE order_date = DATE '2024-03-01' "
           "GROUP BY region ORDER BY 1")
CATEGORIES = ("SELECT category, units FROM sales WHERE order_date = DATE '2024-03-01' "
              "GROUP BY category ORDER BY 1")


def test_a_stalled_warehouse_times_out_and_its_connection_is_not_reused(proxied):
    k, proxy, wh = proxied
    with psycopg.connect(k.dsn, autocommit=True) as c:
        regions = c.execute(REGIONS).fetchall()
        categories = c.execute(CATEGORIES).fetchall()
        proxy.stall()
        with pytest.raises(psycopg.Error) as failure:
            c.execute(REGIONS).fetchall()
        assert failure.value.sqlstate == "57014", failure.value
        assert 'source "warehouse"' in str(failure.value) and failure.value.diag.message_hint
        # The warehouse sends again, late bytes of the stalled statement included: the
        # next statement gets its own answer, on a new connection.
        proxy.flowing.set()
        assert c.execute(CATEGORIES).fetchall() == categories
        assert c.execute(REGIONS).fetchall() == regions


def test_an_exhausted_pool_fails_with_08001_after_connect_timeout(proxied):
    k, proxy, wh = proxied
    with psycopg.connect(k.dsn, autocommit=True) as first, psycopg.connect(k.dsn, autocommit=True) as second:
        regions = first.execute(REGIONS).fetchall()
        proxy.stall()
        stalled = {}

        def hold():
            try:
                first.execute(CATEGORIES).fetchall()
            except psycopg.Error as e:
                stalled["error"] = e

        holder = threading.Thread(target=hold)
        holder.start()
        # The first statement holds the only connection (the warehouse answered it).
        proxy.wait_held()
        with pytest.raises(psycopg.Error) as failure:
            second.execute(REGIONS).fetchall()
        assert failure.value.sqlstate.startswith("08"), failure.value
        assert "no connection within 1 s" in str(failure.value)
        holder.join()
        assert stalled["error"].sqlstate == "57014"
        proxy.flowing.set()
        # Both sessions go on.
        assert second.execute(REGIONS).fetchall() == regions
        assert first.execute(REGIONS).fetchall() == regions


def test_a_warehouse_restart_mid_statement_and_mid_session(proxied):
    """Every connection to the warehouse drops while a statement reads (as in a restart):
    before any row came back, the statement is retried once on a new connection and
    answers right (after rows, it would fail with class 08); the next statements
    reconnect and answer right; so does a session whose pooled connection dropped
    between statements."""
    k, proxy, wh = proxied
    with psycopg.connect(k.dsn, autocommit=True) as c:
        regions = c.execute(REGIONS).fetchall()
        categories = c.execute(CATEGORIES).fetchall()
        proxy.stall()
        failed = {}

        def ask():
            try:
                failed["rows"] = c.execute(CATEGORIES).fetchall()
            except psycopg.Error as e:
                failed["error"] = e

        asker = threading.Thread(target=ask)
        asker.start()
        proxy.wait_held()
        proxy.cut()
        proxy.flowing.set()
        asker.join()
        assert "error" not in failed, failed["error"]
        assert failed["rows"] == categories
        assert "retrying on a new connection" in (k.log).read_text()
        assert c.execute(REGIONS).fetchall() == regions
        # Mid-session: the idle pooled connection drops between two statements.
        proxy.cut()
        assert c.execute(REGIONS).fetchall() == regions


def test_an_invalid_model_written_during_loads_never_replaces_the_good_one(tmp_path):
    """The model directory is rewritten while the server reloads it, every other time
    with an invalid model: each invalid version is read and refused (kp.model_errors names
    it) while the good metric answers, each valid one is served, and a version written in
    two steps (a reader may see it half written) ends served."""
    import re

    from conftest import DATA, ROOT

    model = tmp_path / "model"
    shutil.copytree(ROOT / "semantic" / "demo", model)
    sources = model / "sources.toml"
    sources.write_text(re.sub(r'path = ".*"', f'path = "{DATA}"', sources.read_text()))
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(model)])
    metrics = model / "metrics.toml"
    good = metrics.read_text()
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            regions = c.execute(REGIONS).fetchall()

            def served(name):
                return c.execute("SELECT count(*) FROM kp.metrics WHERE name = %s", [name]).fetchone()[0] == 1

            def refused(name):
                reasons = [r for (r,) in c.execute("SELECT reason FROM kp.model_errors").fetchall()]
                return any(name in r for r in reasons)

            for n in range(1, 7):
                if n % 2:
                    metrics.write_text(good + f'\n[[metrics]]\nname = "broken_{n}"\nformula = "revenue / nope"\n')
                    wait_until(lambda: refused(f"broken_{n}"), f"invalid version {n} read and refused")
                    assert not served(f"broken_{n}")
                else:
                    half = good + f'\n[[metrics]]\nname = "units_{n}"\n'
                    metrics.write_text(half)
                    metrics.write_text(half + 'formula = "units / orders"\n')
                    wait_until(lambda: served(f"units_{n}"), f"valid version {n} served")
                    assert c.execute("SELECT count(*) FROM kp.model_errors").fetchone()[0] == 0
                assert c.execute(REGIONS).fetchall() == regions
            assert c.execute("SELECT count(*) FROM kp.metrics WHERE name LIKE 'broken%'").fetchone()[0] == 0
    finally:
        k.close()


def test_sigterm_under_load_loses_no_statement(tmp_path):
    """Eight clients query in a loop; SIGTERM: each statement in flight finishes (the
    grace period is long enough), every client then sees its connection end cleanly,
    the server exits 0, and the audit file has a record for every answered statement."""
    import signal

    k = Kpitables(tmp_path / "kpitables.log")
    answered = [0] * 8
    errors = []

    def client(i):
        try:
            with psycopg.connect(k.dsn, autocommit=True) as c:
                while True:
                    c.execute(REGIONS).fetchall()
                    answered[i] += 1
        except psycopg.OperationalError as e:
            errors.append((e.sqlstate, str(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: all(answered), "every client has answers")
    k.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert k.proc.wait(timeout=60) == 0
    assert len(errors) == 8, errors
    # Each session ends the same way: a statement in flight finished with its rows (the
    # audit count below), and the next one got FATAL 57P01. Never a bare close.
    assert all(code == "57P01" and "terminating connection due to administrator command" in text
               for code, text in errors), errors
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    ok = [r for r in records if r.get("outcome") == "ok" and r.get("views") == ["sales"]]
    assert len(ok) >= sum(answered), (len(ok), sum(answered))


def test_a_full_disk_for_the_audit_file_records_the_gap(tmp_path):
    audit = tmp_path / "audit.jsonl"
    audit.symlink_to("/dev/full")  # every write: "No space left on device"
    k = Kpitables(tmp_path / "kpitables.log", ["--audit-file", str(audit)])
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            regions = c.execute(REGIONS).fetchall()
            for _ in range(2):
                assert c.execute(REGIONS).fetchall() == regions
            assert c.execute("SELECT count(*) FROM kp.audit WHERE 'sales' = ANY(views)").fetchone()[0] >= 3
            # Space again.
            audit.unlink()
            assert c.execute(CATEGORIES).fetchall()
        lines = [json.loads(line) for line in audit.read_text().splitlines()]
        assert lines[0]["event"] == "audit_gap", lines[0]
        assert lines[0]["lost"] >= 3 and "space" in lines[0]["error"]
        assert lines[0]["since"] <= lines[0]["until"]
        assert any(line.get("views") == ["sales"] for line in lines[1:])
        log = (tmp_path / "kpitables.log").read_text()
        assert "cannot write the audit record" in log and "the gap is recorded" in log
    finally:
        k.close()


def test_a_full_disk_for_the_history_file_still_serves_the_change(tmp_path):
    """The model changes while the history file cannot be written: the new model is
    served and kp.changes has the change; the file misses that version's line (logged),
    and takes the next one when it can be written again. A history path that is not a
    regular file is refused at start (a device would be read forever)."""
    import re

    from conftest import DATA, ROOT

    model = tmp_path / "model"
    shutil.copytree(ROOT / "semantic" / "demo", model)
    sources = model / "sources.toml"
    sources.write_text(re.sub(r'path = ".*"', f'path = "{DATA}"', sources.read_text()))
    history = tmp_path / "history.jsonl"
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(model), "--history-file", str(history)])
    metrics = model / "metrics.toml"
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            before = len(history.read_text().splitlines())
            history.rename(tmp_path / "history.saved")
            history.symlink_to("/dev/full")
            metrics.write_text(metrics.read_text() + '\n[[metrics]]\nname = "units_per_order"\nformula = "units / orders"\n')
            wait_until(lambda: c.execute(
                "SELECT count(*) FROM kp.changes WHERE name = 'units_per_order'"
            ).fetchone()[0] == 1, "the change is served")
            assert "cannot write the model history" in (tmp_path / "kpitables.log").read_text()
            history.unlink()
            (tmp_path / "history.saved").rename(history)
            metrics.write_text(metrics.read_text() + '\n[[metrics]]\nname = "units_per_customer"\nformula = "units / customers"\n')
            wait_until(lambda: c.execute(
                "SELECT count(*) FROM kp.changes WHERE name = 'units_per_customer'"
            ).fetchone()[0] == 1, "the next change is served")
            wait_until(lambda: len(history.read_text().splitlines()) == before + 1, "the next version is written")
            assert len(c.execute(REGIONS).fetchall()) == 5
    finally:
        k.close()
    import subprocess

    from conftest import BIN

    done = subprocess.run([BIN, "serve", "--listen", "127.0.0.1:1", "--model", str(model), "--history-file", "/dev/zero"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "not a regular file" in done.stderr, done.stderr


def test_a_client_that_vanishes_mid_result(server):
    """A large result, read one message and dropped: the server goes on, the statement is
    recorded as interrupted, and the session is gone from pg_stat_activity."""
    raw = fw.login(server["port"])
    raw.send(fw.query("SELECT order_date, region, category, revenue FROM sales /* vanish */"))
    kind, _ = raw.read()
    assert kind == b"T"
    # Reset the connection rather than closing it politely.
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    dsn = f"host=127.0.0.1 port={server['port']} user=exec password=exec dbname=kpitables"
    with psycopg.connect(dsn, autocommit=True) as c:
        wait_until(lambda: c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%/* vanish */%' AND pid <> pg_backend_pid()"
        ).fetchone()[0] == 0, "the vanished session ends")
        wait_until(lambda: c.execute(
            "SELECT outcome FROM kp.audit WHERE 'category' = ANY(dimensions) AND 'order_date' = ANY(dimensions) "
            "ORDER BY at DESC LIMIT 1"
        ).fetchone() in (("interrupted",),), "the statement is recorded as interrupted")
        assert len(c.execute(REGIONS).fetchall()) == 5
