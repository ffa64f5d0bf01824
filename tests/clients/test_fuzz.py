"""Step 11: the wire and SQL fuzzer (fuzz_wire.py) with a fixed seed, and each crash it
found kept as a regression test. The long runs are `python3 tests/clients/fuzz_wire.py
--seed S --iterations N --seconds T` (docs/reliability.md)."""

import json
import re
import threading
import time
import urllib.request

import psycopg
import pytest

import fuzz_wire as fw
from conftest import Kpitables, free_port, wait_until


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A server of its own: the fuzzer must not disturb the shared one. As in production,
    without RUST_BACKTRACE (a resolved backtrace keeps the executable's parsed debug
    information in memory for good: docs/reliability.md)."""
    http = free_port()
    k = Kpitables(tmp_path_factory.mktemp("fuzz") / "kpitables.log", ["--http", f"127.0.0.1:{http}"],
                  env={"RUST_BACKTRACE": "0"})
    k.http = http
    try:
        yield k
    finally:
        k.close()


def rows_of(raw, data):
    """Send `data` (ending with Sync) and collect DataRows and errors up to ReadyForQuery."""
    raw.send(data)
    rows, errors, suspended = 0, [], False
    while True:
        kind, body = raw.read()
        if kind == b"D":
            rows += 1
        elif kind == b"E":
            errors.append(fw.fields(body))
        elif kind == b"s":
            suspended = True
        elif kind == b"Z":
            return rows, errors, suspended


@pytest.mark.parametrize("max_rows", [-1, 2**31 - 1, 1 << 21])
def test_an_execute_row_limit_never_aborts_the_server(target, max_rows):
    """Found by seed 2: Execute with max_rows 2^31 - 1 made pgwire reserve room for that
    many rows and the allocation aborted the whole process. PostgreSQL reads a limit of
    0 or below as no limit; a huge one returns every row."""
    raw = fw.login(target.port)
    try:
        data = (fw.parse("", "SELECT order_date, revenue FROM sales WHERE order_date__month = $1", [1082])
                + fw.bind("", "", [0], [b"2024-02-01"], [0])
                + fw.execute("", max_rows) + fw.SYNC)
        rows, errors, suspended = rows_of(raw, data)
        assert errors == [] and not suspended
        assert rows == 29, "every day of February 2024"
        # A small limit still suspends the portal, as the protocol says.
        rows, errors, suspended = rows_of(
            raw,
            fw.parse("", "SELECT order_date FROM sales WHERE order_date__month = '2024-02-01'")
            + fw.bind("", "", [], [], []) + fw.execute("", 5) + fw.SYNC,
        )
        assert (rows, errors, suspended) == (5, [], True)
    finally:
        raw.close()
    assert target.proc.poll() is None
    with psycopg.connect(target.dsn, autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_fixed_seed_fuzz_finds_nothing(target):
    """A short run of the fuzzer: every case gets answers or a clean close, a parallel
    client's answer stays the same, the server stays up, and memory does not run away
    (idle, its anonymous memory is within 150 MB of its value after warm-up: caches
    fill, nothing grows without bound)."""
    with psycopg.connect(target.dsn, autocommit=True) as c:
        question = "SELECT region, revenue FROM sales GROUP BY region ORDER BY 1"
        first = c.execute(question).fetchall()

        def watcher():
            again = c.execute(question).fetchall()
            return None if again == first else f"the parallel client's answer changed: {again}"

        report = fw.fuzz(target.port, target.proc.pid, seed=20261203, iterations=250, seconds=600,
                         watcher=watcher)
    assert report["problems"] == [], report
    assert report["cases"] == 250, report
    assert target.proc.poll() is None
    # Anonymous memory (heap and stacks; VmRSS also counts the pages of the executable
    # the server has read, which grow with every new code path) once the server is idle:
    # it gives freed memory back (src/server/memory.rs), and what stays is bounded (caches,
    # worker stacks a deep statement touched).
    anon = report["anon_kb"]
    assert anon["idle"] <= anon["baseline"] + 150_000, report
    # A panic is a bug even when the statement got its error: the server log has none
    # under a statement or outside a session; pgwire's decoder panicking on malformed
    # bytes (in the connection's span, before any statement; answered 08P01) is apart
    # (docs/reliability.md).
    log = target.log.read_text(errors="replace").splitlines()
    panics = [line for line in log if "panicked at" in line
              and ("statement{" in line or "connection{" not in line)]
    assert panics == [], panics
    decoder = [line for line in log if "panicked at" in line and line not in panics]
    assert len(decoder) == sum("made the decoder panic" in line for line in log), decoder


@pytest.mark.parametrize("message", [
    # CopyData whose length (3) is shorter than its own length field.
    b"d" + b"\x00\x00\x00\x03",
    # Parse that announces one parameter type and sends one byte of it.
    fw.msg(b"P", b"\x00" + b"SELECT 1\x00" + b"\x00\x01" + b"\x00"),
], ids=["copydata-length-3", "parse-cut-parameter-type"])
def test_a_malformed_message_is_refused_with_08P01(target, message):
    """Found by seed 3: pgwire's decoder panicked on these (an arithmetic overflow, a read
    past the body), which closed the session without a word. The session now ends with
    an ErrorResponse (08P01, as PostgreSQL's "invalid message format") and the server
    goes on."""
    raw = fw.login(target.port)
    try:
        raw.send(message + fw.SYNC)
        errors = []
        try:
            while True:
                kind, body = raw.read()
                if kind == b"E":
                    errors.append(fw.fields(body))
        except fw.Closed:
            pass
        assert [e["C"] for e in errors] == ["08P01"], errors
    finally:
        raw.close()
    with psycopg.connect(target.dsn, autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_a_panic_is_one_event_of_the_json_log(tmp_path):
    """The standard panic hook printed a bare text line to stderr, which broke a JSON log
    (log_format = "json"). The decoder's panic on a malformed message is now one JSON
    event, level ERROR, saying where it happened; every line of the log is JSON."""
    k = Kpitables(tmp_path / "kpitables.log", args=["--log-format", "json"],
                  env={"RUST_BACKTRACE": "0"})
    try:
        raw = fw.login(k.port)
        try:
            raw.send(b"d" + b"\x00\x00\x00\x03" + fw.SYNC)
            try:
                while True:
                    raw.read()
            except fw.Closed:
                pass
        finally:
            raw.close()
        with psycopg.connect(k.dsn, autocommit=True) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        k.close()
    events = [json.loads(line) for line in k.log.read_text().splitlines() if line.strip()]
    panics = [e for e in events if e["fields"]["message"].startswith("panicked at ")]
    assert len(panics) == 1, events
    assert panics[0]["level"] == "ERROR"
    assert ".rs:" in panics[0]["fields"]["message"], panics[0]
    assert "backtrace" not in panics[0]["fields"]


TWO_PARAMETERS = ("SELECT region, revenue FROM sales WHERE order_date__month = $1 AND region = $2 "
                  "GROUP BY region")


@pytest.mark.parametrize("statement, bind, message", [
    (TWO_PARAMETERS, fw.bind("", "", [], [b"2024-02-01"], []),
     'bind message supplies 1 parameters, but prepared statement "" requires 2'),
    (TWO_PARAMETERS, fw.bind("", "", [], [b"2024-02-01", b"North", b"x"], []),
     'bind message supplies 3 parameters, but prepared statement "" requires 2'),
    (TWO_PARAMETERS, fw.bind("", "", [0, 0], [b"2024-02-01", b"North", b"x"], []),
     "bind message has 2 parameter formats but 3 parameters"),
    (TWO_PARAMETERS, fw.bind("", "", [0, 0], [b"2024-02-01", b"North"], [0, 0, 0]),
     "bind message has 3 result formats but query has 2 columns"),
    ("SHOW ALL", fw.bind("", "", [], [], [0, 0]),
     "bind message has 2 result formats but query has 3 columns"),
    ("EXPLAIN SELECT region FROM sales GROUP BY 1", fw.bind("", "", [], [], [0, 0]),
     "bind message has 2 result formats but query has 1 columns"),
    ("", fw.bind("", "", [], [b"1"], []),
     'bind message supplies 1 parameters, but prepared statement "" requires 0'),
], ids=["fewer-values", "more-values", "formats-for-fewer-values", "result-formats", "show-all",
        "explain", "empty-statement"])
def test_a_bind_of_the_wrong_counts_is_refused_with_08P01(target, statement, bind, message):
    """Found by seed 4: a Bind with fewer values (or formats) than it should have made
    pgwire index past them, a panic under the statement. PostgreSQL refuses such a Bind
    with 08P01 in these words; the session goes on after Sync."""
    log_start = target.log.stat().st_size
    raw = fw.login(target.port)
    try:
        rows, errors, _ = rows_of(raw, fw.parse("", statement) + bind + fw.execute("", 0) + fw.SYNC)
        assert rows == 0
        assert [(e["C"], e["M"]) for e in errors] == [("08P01", message)], errors
        # The same session answers the statement bound right.
        rows, errors, _ = rows_of(raw, fw.parse("", TWO_PARAMETERS)
                                  + fw.bind("", "", [], [b"2024-02-01", b"North"], [])
                                  + fw.execute("", 0) + fw.SYNC)
        assert (rows, errors) == (1, [])
    finally:
        raw.close()
    with open(target.log, "rb") as log:
        log.seek(log_start)
        assert b"panicked" not in log.read()


BURST = [
    "SELECT region, revenue, orders FROM sales GROUP BY 1",
    "SELECT category, units, revenue_per_order FROM sales GROUP BY 1 ORDER BY 2 DESC",
    "SELECT region, category, revenue FROM sales WHERE channel = 'online' GROUP BY 1, 2",
    "SELECT order_date__year, region, revenue FROM sales GROUP BY 1, 2",
    "SELECT product_name, units FROM sales WHERE category = 'Electronics' GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
]


def test_memory_of_a_burst_goes_back_once_idle(target):
    """Found by the soak: after 32 clients had left, the server stayed at 6.6 GB (glibc
    kept what the queries had freed). Eight clients ask five questions at once; once the
    server, idle, has given freed memory back (kpitables_memory_releases_total moves:
    src/server/memory.rs), its anonymous memory is back within 100 MB of where it started."""
    def releases():
        with urllib.request.urlopen(f"http://127.0.0.1:{target.http}/metrics", timeout=30) as r:
            found = re.search(r"^kpitables_memory_releases_total (\d+)$", r.read().decode(), re.M)
        return int(found.group(1))

    def settle():
        """Until the server has given memory back after a statement that began once all
        before it had ended (a release counted now may have begun before they ended)."""
        with psycopg.connect(target.dsn, autocommit=True) as c:
            for _ in range(2):
                released = releases()
                c.execute("SELECT 1").fetchall()
                wait_until(lambda: releases() > released, "memory given back once idle")

    with psycopg.connect(target.dsn, autocommit=True) as c:
        for sql in BURST:
            c.execute(sql).fetchall()
    settle()
    start = fw.rss_kb(target.proc.pid, "RssAnon")
    peak = [start]

    def client():
        with psycopg.connect(target.dsn, autocommit=True) as c:
            for sql in BURST:
                c.execute(sql).fetchall()

    clients = [threading.Thread(target=client) for _ in range(8)]
    for t in clients:
        t.start()
    while any(t.is_alive() for t in clients):
        peak.append(fw.rss_kb(target.proc.pid, "RssAnon"))
        time.sleep(0.1)
    assert max(peak) > start + 300_000, "the burst must need memory for the test to mean anything"
    settle()
    idle = fw.rss_kb(target.proc.pid, "RssAnon")
    assert idle <= start + 100_000, {"start": start, "peak": max(peak), "idle": idle}


@pytest.mark.parametrize("sql, sqlstate, message", [
    ("SELECT 1 AS a UNION ALL SELECT 2, 3", "42601", "each UNION query must have the same number of columns"),
    ("SELECT oid FROM pg_class, pg_namespace", "42702", 'column reference "oid" is ambiguous'),
    ("SELECT pg_class.oid FROM pg_class GROUP BY pg_class.oid ORDER BY pg_clas.oid", "42803",
     "must appear in the GROUP BY clause or be used in an aggregate function"),
    ("SELECT (SELECT FROM pg_type t WHERE t.typname = 'int4') > 1", "42601",
     "subquery must return only one column"),
    ("SELECT sum(units) FROM sales WHERE channel = 'online' GROUP BY 1 HAVING sum(units) > 10",
     "42803", "aggregate functions are not allowed in GROUP BY"),
    ("SELECT region, sum(units) FROM sales GROUP BY region, sum(units)", "42803",
     "aggregate functions are not allowed in GROUP BY"),
    ("SELECT units FROM sales GROUP BY units", "42803",
     'metrics are not allowed in GROUP BY: "units" is a metric of view "sales"'),
    ("SELECT region, revenue FROM sales GROUP BY 1, 2", "42803",
     'metrics are not allowed in GROUP BY: "revenue" is a metric of view "sales"'),
], ids=["union-columns", "ambiguous-column", "order-by-outside-group", "subquery-without-column",
        "group-by-aggregate-position", "group-by-aggregate", "group-by-metric-name",
        "group-by-metric-position"])
def test_engine_refusals_have_their_sqlstate(target, sql, sqlstate, message):
    """Found by seed 5 (the hour run): the engine's refusals of these came wrapped in a
    diagnostic and reached the client as XX000; and by seed 6: a scalar subquery without
    a column made the engine panic (caught, XX000); and by seed 14: a metric or an
    aggregate in GROUP BY reached the row-level translation (XX000, "internal error").
    They are the client's mistakes, in
    PostgreSQL's words, and nothing panics."""
    log_start = target.log.stat().st_size
    with psycopg.connect(target.dsn, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as refused:
            c.execute(sql)
        assert refused.value.sqlstate == sqlstate
        assert message in str(refused.value)
        assert c.execute("SELECT 1").fetchone() == (1,)
    with open(target.log, "rb") as log:
        log.seek(log_start)
        assert b"panicked" not in log.read()
