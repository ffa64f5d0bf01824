"""Step 13: MetricFlow's own test model, answered by kpitables and by MetricFlow itself.

The model MetricFlow's integration tests run against (simple_manifest, shipped in the
metricflow wheel) is re-keyed into a dbt project with seeded rows
(metricflow/simple_manifest.py), imported with `kpitables import metricflow
--allow-partial` and served on the rows' Parquet files (embedded engine). Every metric of
the manifest is asked at several grains, with a dimension, with a time filter and as a
total, through SQL over the imported views; each answer is compared with MetricFlow's own
answer on DuckDB over the same rows (`mf query`'s engine, one process for all questions)
by MetricFlow's rules: the column set, the rows sorted, floats to 1e-6.

Each question ends in one of:
- pass: the same rows;
- wrong: kpitables answered other rows (must never happen);
- refused: kpitables answered an ErrorResponse (with its SQLSTATE);
- not expressible: the metric or a column of the question is not in the imported model
  (the import's report says why);
- oracle refuses: MetricFlow itself errs on the question (not counted).

The figure (per MetricFlow feature) and every question that does not pass are written
to $KPITABLES_CONFORMANCE_OUT (default: the test's tmp dir) and printed; the list in
docs/metricflow.md is checked against it.
"""

import collections
import datetime
import json
import math
import os
import pathlib
import re
import subprocess

import psycopg
import pytest

from conftest import BIN, ROOT, Kpitables

MF_VENV = pathlib.Path(os.environ.get("KPITABLES_MF_VENV", pathlib.Path.home() / ".cache/kpitables/mf-venv"))
MF_PYTHON = MF_VENV / "bin" / "python"
HERE = pathlib.Path(__file__).parent

# Dimensions to group by, per semantic model (the first is used with month, the second
# with year).
DIMENSIONS = {
    "bookings_source": ["booking__is_instant", "listing__country_latest"],
    "listings_latest": ["listing__country_latest", "listing__is_lux_latest"],
    "accounts_source": ["account__account_type", "user__home_state_latest"],
    "revenue": ["user__home_state_latest", "user__company_name"],
    "views_source": ["listing__country_latest", "listing__is_lux_latest"],
    "visits_source": ["visit__referrer_id", "user__home_state_latest"],
    "buys_source": ["user__home_state_latest", "user__company_name"],
    "users_ds_source": ["user__home_state", "user__home_state"],
    "id_verifications": ["verification__verification_type", "user__home_state_latest"],
}
FROM, TO = "2020-01-15", "2020-06-30"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("simple-manifest")
    done = subprocess.run([str(MF_PYTHON), str(HERE / "metricflow" / "simple_manifest.py"), str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    project = out / "project"
    built = subprocess.run(
        [str(MF_VENV / "bin" / "dbt"), "build", "--profiles-dir", str(project), "--project-dir", str(project)],
        cwd=project, capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stdout[-5000:]
    return out


def questions(manifest_root):
    qs = []
    catalog = json.loads((manifest_root / "catalog.json").read_text())
    for metric, (kind, model, subdaily) in sorted(catalog["metrics"].items()):
        dims = DIMENSIONS[model]
        base = dict(metric=metric, kind=kind)
        qs.append(dict(base, shape="by day", group_by=["metric_time__day"]))
        qs.append(dict(base, shape="by month and a dimension", group_by=["metric_time__month", dims[0]]))
        qs.append(dict(base, shape="total", group_by=[]))
        qs.append(dict(
            base, shape="by week in a date range", group_by=["metric_time__week"],
            where=[f"{{{{ TimeDimension('metric_time', 'day') }}}} >= '{FROM}'",
                   f"{{{{ TimeDimension('metric_time', 'day') }}}} <= '{TO}'"],
            sql_where=f"metric_time__day >= DATE '{FROM}' AND metric_time__day <= DATE '{TO}'",
        ))
        qs.append(dict(base, shape="by year and a dimension", group_by=["metric_time__year", dims[1]]))
        if subdaily:
            qs.append(dict(base, shape="by hour", group_by=["metric_time__hour"]))
    for q in qs:
        q["metrics"] = [q["metric"]]
    return qs


def saved_queries(manifest_root):
    catalog = json.loads((manifest_root / "catalog.json").read_text())
    return [dict(saved_query=s["name"], metric=s["name"], kind="saved query", shape="saved query",
                 order_by=s["order_by"], limit=s["limit"]) for s in catalog["saved_queries"]]


@pytest.fixture(scope="module")
def oracle(manifest):
    """MetricFlow's answers, started first (it takes the longest) and read when needed."""
    qs = questions(manifest) + saved_queries(manifest)
    wire = [{"saved_query": q["saved_query"]} if "saved_query" in q else
            {"metrics": q["metrics"], "group_by": q["group_by"], "where": q.get("where")} for q in qs]
    proc = subprocess.Popen([str(MF_PYTHON), str(HERE / "metricflow" / "mf_answers.py"), str(manifest / "project")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = {}

    def answers():
        if "answers" not in state:
            out, err = proc.communicate(json.dumps(wire))
            assert proc.returncode == 0, err[-3000:]
            state["answers"] = json.loads(out)
        return qs, state["answers"]

    yield answers
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope="module")
def imported(manifest, oracle, tmp_path_factory):
    out = tmp_path_factory.mktemp("sm-model") / "model"
    done = subprocess.run(
        [BIN, "import", "metricflow", str(manifest / "project"), "--source", str(manifest / "data"),
         "--out", str(out), "--allow-partial"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    unmapped = {}
    section = None
    for line in done.stdout.splitlines():
        if not line.startswith(" "):
            section = line
            continue
        m = re.match(r"\s+\S+: (metric|saved query) (\S+): (.*)", line)
        if m and section.startswith("not mapped"):
            unmapped[m.group(2)] = m.group(3)
    k = Kpitables(out.parent / "kpitables.log", args=["--model", str(out)])
    try:
        yield k, unmapped
    finally:
        k.close()


def normalize(value):
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat(sep="T")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?", value):
        return normalize(datetime.datetime.fromisoformat(value))
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) or type(value).__name__ == "Decimal":
        return float(value)
    return value


def rows(result):
    """Rows normalized and sorted (floats rounded for the sort only)."""
    normal = [tuple(normalize(v) for v in r) for r in result]
    return sorted(normal, key=lambda r: repr(tuple(round(v, 4) if isinstance(v, float) else v for v in r)))


def same(actual, expected):
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected):
        if len(a) != len(e):
            return False
        for x, y in zip(a, e):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6):
                    return False
            elif x != y:
                return False
    return True


def views(conn):
    """view -> its columns (the imported model's relations)."""
    out = collections.defaultdict(set)
    for table, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
    ).fetchall():
        out[table].add(column)
    return out


def ask(conn, relations, saved, q, columns):
    """(status, rows or reason). `columns`: MetricFlow's answer's (a saved query's view has
    every grain of its time dimension; the question is MetricFlow's columns of it)."""
    if "saved_query" in q:
        if q["saved_query"] not in relations:
            return "not expressible", "no view of the saved query"
        sql = f'SELECT {", ".join(columns)} FROM "{q["saved_query"]}"'
        if q.get("order_by"):
            sql += f" ORDER BY {', '.join(q['order_by'])} LIMIT {q['limit']}"
    else:
        needed = set(q["group_by"]) | set(q["metrics"])
        # The views of the semantic models (a saved query's view applies its `where`).
        fits = sorted((len(cols), v) for v, cols in relations.items() if needed <= cols and v not in saved)
        if not fits:
            missing = sorted(needed - set().union(*relations.values()))
            return "not expressible", f"no view has {', '.join(missing) or 'these columns together'}"
        view = fits[0][1]
        sql = f"SELECT {', '.join(q['group_by'] + q['metrics'])} FROM {view}"
        if q.get("sql_where"):
            sql += f" WHERE {q['sql_where']}"
        if q["group_by"]:
            sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(q["group_by"])))
    try:
        cur = conn.execute(sql)
        return "answered", ([d.name for d in cur.description], rows(cur.fetchall()))
    except psycopg.errors.Error as e:
        if e.sqlstate is None:
            raise  # a dropped connection is not a refusal
        return "refused", f"{e.sqlstate} {e.diag.message_primary}"


START_MARK = "<!-- conformance: generated by tests/clients/test_mf_conformance.py -->"
END_MARK = "<!-- conformance: end -->"
SHAPES = ["by day", "by month and a dimension", "total", "by week in a date range",
          "by year and a dimension", "by hour", "saved query"]
MARKS = {"pass": "ok", "wrong": "**wrong**", "refused": "refused", "not expressible": "n/e",
         "oracle refuses": "(MF errs)"}


def report(outcomes) -> str:
    """The figure per MetricFlow metric type and the outcome of every question, as the
    markdown docs/metricflow.md holds."""
    statuses = ["pass", "wrong", "refused", "not expressible", "oracle refuses"]
    lines = ["", "| MetricFlow type | questions | " + " | ".join(statuses) + " |",
             "|---|---|" + "---|" * len(statuses)]
    kinds = sorted({o["kind"] for o in outcomes})
    for kind in kinds + ["all"]:
        mine = [o for o in outcomes if kind in ("all", o["kind"])]
        c = collections.Counter(o["status"] for o in mine)
        lines.append(f"| {kind} | {len(mine)} | " + " | ".join(str(c[s]) for s in statuses) + " |")
    shapes = [s for s in SHAPES if any(o["shape"] == s for o in outcomes)]
    lines += ["", "| metric | type | " + " | ".join(shapes) + " |", "|---|---|" + "---|" * len(shapes)]
    by_metric = collections.defaultdict(dict)
    kind_of = {}
    for o in outcomes:
        by_metric[o["metric"]][o["shape"]] = o
        kind_of[o["metric"]] = o["kind"]
    reasons = []
    for metric in sorted(by_metric):
        cells = [MARKS[by_metric[metric][s]["status"]] if s in by_metric[metric] else "" for s in shapes]
        lines.append(f"| {metric} | {kind_of[metric]} | " + " | ".join(cells) + " |")
        seen = []
        for s in shapes:
            o = by_metric[metric].get(s)
            if o and o["status"] not in ("pass", "wrong") and o["reason"] not in seen:
                seen.append(o["reason"])
                reasons.append(f"- `{metric}` ({o['status']}): {o['reason']}")
    lines += ["", "Why a question is refused, not expressible, or not answered by MetricFlow itself:", ""]
    lines += reasons
    return "\n".join(lines) + "\n"


def test_metricflow_simple_manifest(manifest, imported, oracle, tmp_path):
    server, unmapped = imported
    outcomes = []
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        relations = views(conn)
        qs, answers = oracle()
        saved = {q["saved_query"] for q in qs if "saved_query" in q}
        for q, theirs in zip(qs, answers):
            outcome = dict(metric=q["metric"], kind=q["kind"], shape=q["shape"])
            if "error" in theirs:
                outcome.update(status="oracle refuses", reason=theirs["error"].splitlines()[0][:200])
                outcomes.append(outcome)
                continue
            if q["metric"] in unmapped:
                outcome.update(status="not expressible", reason=f"not mapped: {unmapped[q['metric']]}")
                outcomes.append(outcome)
                continue
            status, ours = ask(conn, relations, saved, q, theirs["columns"])
            if status != "answered":
                outcome.update(status=status, reason=ours)
            else:
                columns, got = ours
                expected = rows(theirs["rows"])
                if "saved_query" not in q and columns != theirs["columns"]:
                    outcome.update(status="wrong", reason=f"columns {columns} against {theirs['columns']}")
                elif same(got, expected):
                    outcome.update(status="pass")
                else:
                    extra = [r for r in got if not any(same([r], [e]) for e in expected)][:3]
                    missing = [r for r in expected if not any(same([g], [r]) for g in got)][:3]
                    outcome.update(status="wrong", reason=f"{len(got)} rows against {len(expected)}; "
                                   f"ours only {extra}; theirs only {missing}")
            outcomes.append(outcome)
    out = pathlib.Path(os.environ.get("KPITABLES_CONFORMANCE_OUT", tmp_path / "conformance.json"))
    out.write_text(json.dumps(outcomes, indent=1))
    counts = collections.Counter(o["status"] for o in outcomes)
    print(f"\nMetricFlow simple_manifest: {len(outcomes)} questions: {dict(counts)} (details in {out})")
    by_kind = collections.defaultdict(collections.Counter)
    for o in outcomes:
        by_kind[o["kind"]][o["status"]] += 1
    for kind, c in sorted(by_kind.items()):
        print(f"  {kind}: {dict(c)}")
    # docs/metricflow.md carries this run's figure and list between two markers; a
    # change in any outcome (a new pass as much as a new failure) must be written there.
    generated = report(outcomes)
    (out.parent / "conformance.md").write_text(generated)
    doc = (ROOT / "docs" / "metricflow.md").read_text()
    documented = doc.split(START_MARK, 1)[1].split(END_MARK, 1)[0] if START_MARK in doc else ""
    assert documented.strip() == generated.strip(), (
        f"the outcomes differ from docs/metricflow.md: the new section is in {out.parent / 'conformance.md'}"
    )
