"""A seeded fuzzer of kpitables' PostgreSQL wire protocol and SQL, black box against the
real binary (stable tooling only: no cargo-fuzz, no nightly).

Each case is generated from (seed, case number), so any finding is replayed with
`--seed S --case N`. A case is one of:

- startup traffic: random bytes, wrong protocol versions and lengths, SSLRequest and
  GSSENCRequest followed by anything, cancel requests with random keys, startup packets
  with missing or invalid parameters;
- a logged-in session (SCRAM-SHA-256, as a real client) sending 1-6 messages: simple
  Query, Parse/Bind/Describe/Execute/Close with wrong counts, formats and lengths,
  CopyData/CopyDone/CopyFail where no COPY runs, unknown message types, Flush; then
  Sync, with a share of cases mutated at the byte level (flipped bytes, corrupted lengths);
- SQL from the BI corpus (tests/bi_queries) mutated: dropped, repeated and swapped
  tokens, deep nesting, huge literals, invalid UTF-8.

Oracle, for every case: the server process is alive; every ErrorResponse carries a
SQLSTATE and is not an internal error (XX000, which a panic becomes); a well-framed case
ends with ReadyForQuery or a clean close (no hang); a fresh session still answers; and a
parallel client's query, asked between cases, still returns its first answer (no
session mix-up). At the end RSS is compared with its value after warm-up, and the
script counts the panics in the server's log: those of pgwire's decoder on a malformed
message (answered with 08P01) apart, any other is a finding.

    python3 tests/clients/fuzz_wire.py --seed 1 --iterations 100000 --seconds 3600

starts a kpitables of its own (KPITABLES_BIN, default target/debug/kpitables) on the
demo model and prints a JSON report; exit status 1 when anything was found.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import pathlib
import random
import socket
import struct
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE.parent / "bi_queries"
USER, PASSWORD, DATABASE = "exec", "exec", "kpitables"
# Reading one case's answers: a well-framed case gets ReadyForQuery or a close well
# within this (a readiness bound, not a timing assertion: it is 30x the slowest query).
ANSWER_SECONDS = 30.0


# ----------------------------------------------------------------------------------------
# Messages


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def cstr(s) -> bytes:
    return (s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s) + b"\0"


def startup(params: dict, version: int = 196608) -> bytes:
    body = struct.pack("!i", version) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def query(sql) -> bytes:
    return msg(b"Q", cstr(sql))


def parse(name, sql, oids=()) -> bytes:
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", len(oids)) + b"".join(struct.pack("!i", o) for o in oids))


def bind(portal, statement, formats, values, result_formats) -> bytes:
    body = cstr(portal) + cstr(statement)
    body += struct.pack("!h", len(formats)) + b"".join(struct.pack("!h", f) for f in formats)
    body += struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
    return msg(b"B", body)


def describe(kind: bytes, name) -> bytes:
    return msg(b"D", kind + cstr(name))


def execute(portal, max_rows: int) -> bytes:
    return msg(b"E", cstr(portal) + struct.pack("!i", max_rows))


SYNC = msg(b"S", b"")
FLUSH = msg(b"H", b"")
TERMINATE = msg(b"X", b"")


# ----------------------------------------------------------------------------------------
# A raw connection


class Closed(Exception):
    pass


class Raw:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_SECONDS)
        self.buf = b""

    def send(self, data: bytes):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise Closed(str(e))

    def _fill(self, n: int):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no answer")
            except OSError as e:
                raise Closed(str(e))
            if not chunk:
                raise Closed("closed")
            self.buf += chunk

    def read(self):
        self._fill(5)
        kind, length = self.buf[:1], struct.unpack("!i", self.buf[1:5])[0]
        self._fill(1 + length)
        body, self.buf = self.buf[5 : 1 + length], self.buf[1 + length :]
        return kind, body

    def read_byte(self) -> bytes:
        self._fill(1)
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def fields(body: bytes) -> dict:
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


def login(port: int) -> Raw:
    """A session logged in with SCRAM-SHA-256, after its ReadyForQuery."""
    raw = Raw(port)
    raw.send(startup({"user": USER, "database": DATABASE, "application_name": "fuzz"}))
    kind, body = raw.read()
    assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 10, (kind, body)
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    raw.send(msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
    kind, body = raw.read()
    server_first = body[4:].decode()
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.new(stored, auth, hashlib.sha256).digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
    raw.send(msg(b"p", f"{final_bare},p={proof}".encode()))
    while True:
        kind, body = raw.read()
        if kind == b"E":
            raise RuntimeError(f"login refused: {fields(body)}")
        if kind == b"Z":
            return raw


# ----------------------------------------------------------------------------------------
# SQL


def corpus() -> list:
    out = []
    for path in sorted(CORPUS.glob("*.sql")):
        buf = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("-- source:"):
                if buf:
                    out.append("\n".join(buf).strip().rstrip(";"))
                buf = []
            elif not line.startswith("--"):
                buf.append(line)
        if buf:
            out.append("\n".join(buf).strip().rstrip(";"))
    # And questions over the model, as dashboards ask them.
    out += [
        "SELECT region, revenue FROM sales GROUP BY region ORDER BY 1",
        "SELECT order_date__month, revenue, revenue_growth FROM sales_trends WHERE order_date >= '2024-01-01'",
        "SELECT category, sum(units) FROM sales WHERE channel = 'online' GROUP BY 1 HAVING sum(units) > 10",
        "SELECT * FROM order_summary LIMIT 5",
        "SELECT count(*) FROM (SELECT region, customers FROM sales) t",
    ]
    return [q for q in out if q]


TOKENS = ["SELECT", "FROM", "WHERE", "(", ")", ",", "'", '"', "NULL", "GROUP BY", "ORDER BY", "UNION",
          "JOIN", "ON", "::", "$1", "*", "revenue", "sales", "region", "1e309", "-", "/", "0", "CASE",
          "WHEN", "END", "OVER (", "LATERAL", "WITH", "RECURSIVE", ";", "\\", "E'\\x00'", "COPY"]


def mutate_sql(rng: random.Random, sql: str):
    """One of: the statement itself, or a mutation of it (text or bytes)."""
    words = sql.split()
    choice = rng.randrange(10)
    if choice == 0 or not words:
        return sql
    if choice == 1:
        i = rng.randrange(len(words))
        return " ".join(words[:i] + words[i + 1 :])
    if choice == 2:
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
        return " ".join(words)
    if choice == 3:
        i = rng.randrange(len(words))
        return " ".join(words[:i] + [rng.choice(TOKENS)] + words[i:])
    if choice == 4:
        depth = rng.choice([10, 100, 1000, 5000])
        return "SELECT " + "(" * depth + "1" + ")" * depth
    if choice == 5:
        size = rng.choice([10_000, 1_000_000])
        return f"SELECT region, revenue FROM sales WHERE region = '{'x' * size}'"
    if choice == 6:
        data = bytearray(sql.encode())
        for _ in range(rng.randint(1, 4)):
            data.insert(rng.randrange(len(data) + 1), rng.choice([0xFF, 0xC3, 0x80, 0xED, 0xA0]))
        return bytes(data)
    if choice == 7:
        return sql[: rng.randrange(len(sql) + 1)]
    if choice == 8:
        return " ".join(rng.choice(TOKENS + words) for _ in range(rng.randint(1, 30)))
    return sql + " " + sql


# ----------------------------------------------------------------------------------------
# Cases


def random_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def startup_case(rng: random.Random) -> bytes:
    """Bytes sent before any login."""
    kind = rng.randrange(9)
    good = {"user": USER, "database": DATABASE}
    if kind == 0:
        return random_bytes(rng, rng.randint(1, 300))
    if kind == 1:
        return struct.pack("!ii", 8, 80877103) + random_bytes(rng, rng.randint(0, 64))  # SSLRequest
    if kind == 2:
        return struct.pack("!ii", 8, 80877104) + random_bytes(rng, rng.randint(0, 64))  # GSSENCRequest
    if kind == 3:
        return struct.pack("!iiii", 16, 80877102, rng.randrange(2**31), rng.randrange(2**31))  # cancel
    if kind == 4:
        return startup(good, version=rng.choice([131072, 196609, 196608 + 99, 0, -1, 2**31 - 1]))
    if kind == 5:
        return struct.pack("!i", rng.choice([0, 4, 7, -5, 10_001, 2**30])) + random_bytes(rng, rng.randint(0, 64))
    if kind == 6:
        params = dict(good)
        del params[rng.choice(["user", "database"])]
        return startup(params)
    if kind == 7:
        return startup({"user": b"\xff\xfe" + random_bytes(rng, 5), "database": DATABASE, "options": "-c x=\xe9"})
    # A valid startup whose bytes are then damaged.
    data = bytearray(startup(good))
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def session_messages(rng: random.Random, sqls: list) -> bytes:
    """1-6 extended- or simple-protocol messages, ending with Sync."""
    out = b""
    statement = rng.choice(["", "s1"])
    portal = rng.choice(["", "p1"])
    for _ in range(rng.randint(1, 6)):
        sql = mutate_sql(rng, rng.choice(sqls))
        kind = rng.randrange(12)
        if kind == 0:
            out += query(sql)
        elif kind == 1:
            oids = [rng.choice([0, 23, 25, 1082, 1700, 16, 17, 99999, -1]) for _ in range(rng.randint(0, 3))]
            out += parse(statement, sql, oids)
        elif kind == 2:
            formats = [rng.choice([0, 1, 2, -1]) for _ in range(rng.randint(0, 3))]
            values = [rng.choice([None, b"", b"1", b"East", random_bytes(rng, rng.randint(0, 12)),
                                  struct.pack("!i", 5), b"2024-01-01"]) for _ in range(rng.randint(0, 3))]
            result_formats = [rng.choice([0, 1, 3]) for _ in range(rng.randint(0, 3))]
            out += bind(portal, statement, formats, values, result_formats)
        elif kind == 3:
            out += describe(rng.choice([b"S", b"P", b"Z"]), rng.choice([statement, portal, "nope"]))
        elif kind == 4:
            out += execute(rng.choice([portal, "nope"]), rng.choice([0, 1, 3, -1, 2**31 - 1]))
        elif kind == 5:
            out += msg(b"C", rng.choice([b"S", b"P", b"Q"]) + cstr(rng.choice([statement, portal])))
        elif kind == 6:
            out += msg(b"d", random_bytes(rng, rng.randint(0, 40)))  # CopyData, no COPY running
        elif kind == 7:
            out += rng.choice([msg(b"c", b""), msg(b"f", cstr("stop"))])  # CopyDone / CopyFail
        elif kind == 8:
            out += FLUSH
        elif kind == 9:
            out += msg(bytes([rng.choice(b"AaFGIJLMNOTUVWYbegijklmnoqrstuvwxyz0123456789")]), random_bytes(rng, rng.randint(0, 20)))
        elif kind == 10:
            # A parse/bind/execute that is right, in the middle of the rest.
            out += parse("", "SELECT region, revenue FROM sales WHERE region <> $1", [25])
            out += bind("", "", [0], [b"East"], [rng.choice([0, 1])])
            out += execute("", rng.choice([0, 2]))
        else:
            out += SYNC
    return out + SYNC


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    choice = rng.randrange(3)
    if choice == 0:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 1:
        # A length field (after a type byte) made wrong.
        starts = [i for i in range(len(data) - 5) if chr(data[i]) in "QPBDECSHdcfX"]
        if starts:
            i = rng.choice(starts)
            data[i + 1 : i + 5] = struct.pack("!i", rng.choice([-1, 0, 3, 5, 2**30, len(data) * 3]))
    else:
        del data[rng.randrange(len(data)) :]
    return bytes(data)


# ----------------------------------------------------------------------------------------
# Running


class Findings(Exception):
    pass


PROBE = "SELECT 424242 AS probe"


def drain(raw: Raw, probe: bool, problems: list, case: str) -> bool:
    """Read the server's answers: every ErrorResponse must carry a SQLSTATE that is not
    XX000. With `probe` (a well-framed case, followed by the probe query) the answers
    must reach the probe's row and its ReadyForQuery, or the server must close after
    saying why (a FATAL ErrorResponse, as PostgreSQL does): then the session is open and
    idle (True); a well-framed case answered by a close without a word is a finding.
    Without, the server may wait for more bytes."""
    answered = False
    fatal = False
    while True:
        try:
            kind, body = raw.read()
        except Closed:
            if probe and not fatal:
                problems.append(f"{case}: the server closed the session without an ErrorResponse")
            return False
        except TimeoutError:
            if probe:
                problems.append(f"{case}: hangs: no answer to the next query and no close within {raw.sock.gettimeout():.0f} s")
            return False
        except struct.error:
            problems.append(f"{case}: unreadable answer")
            return False
        if kind == b"E":
            f = fields(body)
            fatal = fatal or f.get("S") in ("FATAL", "PANIC")
            code = f.get("C")
            if not code:
                problems.append(f"{case}: ErrorResponse without SQLSTATE: {f}")
            elif code == "XX000":
                problems.append(f"{case}: internal error: {f.get('M')}")
        elif kind == b"D" and b"424242" in body:
            answered = True
        elif kind == b"Z" and answered:
            return True
        elif kind in (b"G", b"H"):
            # A COPY FROM/TO started by a fuzzed statement: end it.
            raw.send(msg(b"f", cstr("fuzz")) + SYNC)


def run_case(port: int, seed: int, n: int, sqls: list) -> list:
    rng = random.Random(f"{seed}:{n}")
    problems = []
    case = f"seed {seed} case {n}"
    if rng.random() < 0.2:
        data = startup_case(rng)
        raw = Raw(port)
        # The server may rightly wait for the rest of a packet: listen briefly, then go.
        raw.sock.settimeout(1.0)
        try:
            raw.send(data)
            # SSLRequest and GSSENCRequest get one byte ('N'), the rest messages.
            if data[4:8] in (struct.pack("!i", 80877103), struct.pack("!i", 80877104)):
                try:
                    raw.read_byte()
                except (Closed, TimeoutError):
                    pass
            drain(raw, 0, problems, case)
        except Closed:
            pass
        finally:
            raw.close()
        return problems
    raw = login(port)
    try:
        data = session_messages(rng, sqls)
        probe = True
        if rng.random() < 0.25:
            data = mutate_bytes(rng, data)
            probe = False
            raw.sock.settimeout(1.0)
        else:
            # The session keeps working after whatever came before (the case ends with
            # Sync, which ends any error state; ROLLBACK ends a transaction block the
            # case opened, where a failed statement would rightly refuse the probe with
            # 25P02: seed 5 case 13504).
            data += query("ROLLBACK") + query(PROBE)
        try:
            raw.send(data)
        except Closed:
            return problems
        drain(raw, probe, problems, case)
    finally:
        raw.close()
    return problems


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """The server's resident memory: all of it (VmRSS), or only its anonymous memory
    (RssAnon: the heap and stacks, without the pages of the executable it has read)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def fuzz(port: int, pid: int, seed: int, iterations: int, seconds: float, watcher) -> dict:
    """Run cases until `iterations` or `seconds`; `watcher()` is the parallel client's
    check (returns a problem or None), asked between cases."""
    sqls = corpus()
    started = time.monotonic()
    problems, cases = [], 0
    # Warm up (plans, caches, connections) before the RSS baseline.
    for n in range(20):
        run_case(port, seed ^ 0x5EED, n, sqls)
    baseline = peak = rss_kb(pid)
    anon_baseline = anon_peak = rss_kb(pid, "RssAnon")
    samples, anon_samples = [baseline], [anon_baseline]
    for n in range(iterations):
        if time.monotonic() - started > seconds:
            break
        try:
            problems += run_case(port, seed, n, sqls)
        except (RuntimeError, AssertionError, Closed, TimeoutError, OSError) as e:
            problems.append(f"seed {seed} case {n}: a new session cannot log in: {e!r}")
        cases += 1
        if n % 25 == 0:
            samples.append(rss_kb(pid))
            peak = max(peak, samples[-1])
            anon_samples.append(rss_kb(pid, "RssAnon"))
            anon_peak = max(anon_peak, anon_samples[-1])
            found = watcher()
            if found:
                problems.append(f"seed {seed} after case {n}: {found}")
        if problems and len(problems) > 50:
            break
    end = rss_kb(pid)
    # Idle: the server gives freed memory back when no statement has run for a moment
    # (src/server/memory.rs checks every 2 s).
    time.sleep(5)
    idle = rss_kb(pid)
    anon_idle = rss_kb(pid, "RssAnon")
    # Whether memory levels off: the lowest anonymous memory of each sixth of the run
    # (a sample between cases can catch a statement's memory; the lowest of a stretch
    # is what the server keeps).
    sixth = max(1, len(anon_samples) // 6)
    floors = [min(anon_samples[i:i + sixth]) // 1024 for i in range(0, sixth * 6, sixth)
              if anon_samples[i:i + sixth]]
    return {
        "seed": seed,
        "cases": cases,
        "seconds": round(time.monotonic() - started, 1),
        "rss_kb": {"baseline": baseline, "peak": max(peak, end), "end": end, "idle": idle},
        "anon_kb": {"baseline": anon_baseline, "peak": anon_peak, "idle": anon_idle},
        "anon_mb_lowest_by_sixth": floors,
        "rss_kb_every_25_cases": samples,
        "anon_kb_every_25_cases": anon_samples,
        "problems": problems,
    }


def main():
    sys.path.insert(0, str(HERE))
    import psycopg

    from conftest import Kpitables

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--case", type=int, help="replay one case and print its problems")
    args = parser.parse_args()
    work = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"kpitables-fuzz-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    # As in production, without RUST_BACKTRACE: a resolved backtrace keeps the
    # executable's parsed debug information in memory for good, which a long run of
    # panicking cases would count as growth (docs/reliability.md).
    k = Kpitables(work / "kpitables.log", env={"RUST_BACKTRACE": "0"})
    try:
        if args.case is not None:
            print(json.dumps(run_case(k.port, args.seed, args.case, corpus()), indent=2))
            return
        with psycopg.connect(k.dsn, autocommit=True) as c:
            question = "SELECT region, revenue FROM sales GROUP BY region ORDER BY 1"
            first = c.execute(question).fetchall()

            def watcher():
                try:
                    again = c.execute(question).fetchall()
                except Exception as e:  # the report names it
                    return f"the parallel client failed: {e!r}"
                return None if again == first else "the parallel client's answer changed"

            report = fuzz(k.port, k.proc.pid, args.seed, args.iterations, args.seconds, watcher)
        report["server_alive"] = k.proc.poll() is None
        # Panics in the server's log: the decoder's (a malformed message, answered with
        # 08P01 and a close) are counted apart; any other is a finding.
        log = (work / "kpitables.log").read_text(errors="replace")
        panics = log.count("panicked at")
        caught = log.count("a malformed message made the decoder panic")
        report["decoder_panics_answered_08P01"] = caught
        report["other_panics"] = panics - caught
        print(json.dumps(report, indent=2))
        if report["problems"] or report["other_panics"] > 0 or not report["server_alive"]:
            sys.exit(1)
    finally:
        k.close()


if __name__ == "__main__":
    main()
