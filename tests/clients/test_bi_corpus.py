"""Replay the statements BI tools send when they connect and browse (tests/bi_queries:
291 statements captured from Tableau, Power BI, Metabase, Excel, DBeaver, Superset,
Grafana, QuickSight, Sigma and others; each runs on PostgreSQL 15). Each is sent with
`psql -c` on a fresh connection, one simple-Query message, as the tool sends it.

Every statement must run. The ones kpitables cannot answer yet are listed, each with
the reason, in tests/bi_queries/KNOWN_GAPS.txt: those must fail with a clean
ErrorResponse (a SQLSTATE other than XX000, the connection closed normally), and a
listed statement that starts to run fails this test until it is removed from the list."""

import os
import pathlib
import subprocess

import pytest

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "bi_queries"


def entries():
    out = []
    for path in sorted(CORPUS.glob("*.sql")):
        source, buf = None, []
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            if line.startswith("-- source:"):
                if source is not None:
                    out.append((path.name, source, "".join(buf).strip().rstrip(";")))
                source, buf = line[len("-- source:") :].strip(), []
            elif source is not None:
                buf.append(line)
        if source is not None:
            out.append((path.name, source, "".join(buf).strip().rstrip(";")))
    return out


def known_gaps():
    gaps = {}
    for line in (CORPUS / "KNOWN_GAPS.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            source, _, reason = line.partition(" :: ")
            gaps[source.strip()] = reason.strip()
    return gaps


ENTRIES = entries()
GAPS = known_gaps()


def test_corpus_is_complete():
    assert len(ENTRIES) == 291
    assert set(GAPS) <= {source for _, source, _ in ENTRIES}


@pytest.mark.parametrize(
    "file,source,sql", ENTRIES, ids=[f"{f}:{s.split('line ')[-1].rstrip(')')}" for f, s, _ in ENTRIES]
)
def test_bi_statement(server, file, source, sql):
    env = {
        **os.environ,
        "PGHOST": server["host"],
        "PGPORT": str(server["port"]),
        "PGUSER": server["user"],
        "PGPASSWORD": server["password"],
        "PGDATABASE": server["dbname"],
    }
    run = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-o", os.devnull, "-c", sql],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if source not in GAPS:
        assert run.returncode == 0, run.stderr
        return
    assert run.returncode != 0, f"now runs: remove it from KNOWN_GAPS.txt ({GAPS[source]})"
    assert run.stderr.startswith("ERROR:  "), run.stderr
    assert not run.stderr.startswith("ERROR:  XX000"), run.stderr
    assert "server closed the connection" not in run.stderr, run.stderr
