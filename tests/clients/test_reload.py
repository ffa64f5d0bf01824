"""Step 5: safe reload. The server picks up model changes (file watch and SIGHUP); the new
model is fully validated before it replaces the old one; an invalid model is reported
(file, line, reason) in the log and in kp.model_errors while the old model keeps serving;
every change is recorded in kp.changes with the version it came with.
"""

import os
import re
import shutil
import signal
import subprocess
import time

import psycopg
import pytest

from conftest import DATA, ROOT, Kpitables, wait_until
from test_ground_truth import LINES, OK, REVENUE, assert_rows_equal


def count(conn, sql):
    return conn.execute(sql).fetchone()[0]


def test_model_changes_are_served_recorded_and_bad_ones_refused(tmp_path, duck):
    model = tmp_path / "model"
    shutil.copytree(ROOT / "semantic" / "demo", model)
    sources = model / "sources.toml"
    sources.write_text(re.sub(r'path = ".*"', f'path = "{DATA}"', sources.read_text()))
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(model)])
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            assert count(c, "SELECT count(*) FROM kp.changes") == 0
            assert count(c, "SELECT count(*) FROM kp.model_errors") == 0

            # A reviewed change: revenue's description, a new metric offered by sales.
            metrics = model / "metrics.toml"
            text = metrics.read_text()
            old = "Units sold: sum of line quantities of orders that were not cancelled."
            assert old in text
            metrics.write_text(
                text.replace(old, "Units sold (not cancelled).")
                + '\n[[metrics]]\nname = "revenue_per_unit"\nformula = "revenue / units"\nowner = "finance@kpitables.demo"\n'
            )
            views = model / "views.toml"
            views.write_text(views.read_text().replace('metrics = ["revenue", ', 'metrics = ["revenue_per_unit", "revenue", ', 1))
            assert wait_until(lambda: count(c, "SELECT count(*) FROM kp.metrics WHERE name = 'revenue_per_unit'") == 1)

            got = c.execute("SELECT region, revenue_per_unit FROM sales ORDER BY 1").fetchall()
            truth = duck.execute(
                f"""SELECT s.region, CAST({REVENUE} AS DOUBLE) / SUM(CASE WHEN {OK} THEN l.quantity END)
                    FROM {LINES} GROUP BY 1 ORDER BY 1"""
            ).fetchall()
            assert_rows_equal(got, truth)

            changes = c.execute(
                "SELECT kind, name, change, fields, version, previous_version FROM kp.changes ORDER BY kind, name"
            ).fetchall()
            assert [(r[0], r[1], r[2]) for r in changes] == [
                ("metric", "revenue_per_unit", "added"),
                ("metric", "units", "changed"),
                ("view", "sales", "changed"),
            ]
            assert changes[1][3] == f'description: "{old}" -> "Units sold (not cancelled)."'
            assert all(r[4] != r[5] and re.fullmatch(r"[0-9a-f]{16}", r[4]) for r in changes)

            # An invalid model: reported with file, line and reason; the old one serves on.
            (model / "broken.toml").write_text(
                '# a metric on a table that does not exist\n[[metrics]]\nname = "broken"\ntable = "nope"\nagg = "sum"\nexpr = "x"\n'
            )
            assert wait_until(lambda: count(c, "SELECT count(*) FROM kp.model_errors") > 0)
            errors = c.execute("SELECT file, line, reason FROM kp.model_errors").fetchall()
            assert errors[0][0].endswith("broken.toml") and errors[0][1] == 4, errors
            assert 'unknown table "nope"' in errors[0][2]
            assert_rows_equal(c.execute("SELECT region, revenue_per_unit FROM sales ORDER BY 1").fetchall(), truth)
            log = (tmp_path / "kpitables.log").read_text()
            assert "model not reloaded" in log and "broken.toml:4" in log

            # Fixed: served again, the error gone.
            (model / "broken.toml").unlink()
            assert wait_until(lambda: count(c, "SELECT count(*) FROM kp.model_errors") == 0)

            # SIGHUP reloads even without a change of the files.
            os.kill(k.proc.pid, signal.SIGHUP)

            def reloaded_after_sighup():
                text = (tmp_path / "kpitables.log").read_text()
                _, _, after = text.partition("SIGHUP: reloading the model")
                return "model reloaded" in after

            assert wait_until(reloaded_after_sighup)
            assert_rows_equal(c.execute("SELECT region, revenue_per_unit FROM sales ORDER BY 1").fetchall(), truth)

            # A new default time zone applies to sessions started after the reload.
            settings = model / "model.toml"
            settings.write_text(settings.read_text().replace('time_zone = "Asia/Shanghai"', 'time_zone = "Europe/Berlin"'))

            def new_sessions_start_in_berlin():
                with psycopg.connect(k.dsn, autocommit=True) as fresh:
                    return fresh.execute("SHOW TimeZone").fetchone()[0] == "Europe/Berlin"

            assert wait_until(new_sessions_start_in_berlin)
            assert c.execute("SHOW TimeZone").fetchone()[0] == "Asia/Shanghai"
    finally:
        k.close()


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_prepared_statements_and_open_cursors_across_a_reload(tmp_path, duck):
    """A statement prepared before a reload runs on the new model; a cursor opened before
    it finishes on the old one; a prepared statement whose result type the reload changed
    is refused as PostgreSQL refuses it (0A000) and the session goes on. The version of a
    model in a git checkout carries the commit and its author."""
    model = tmp_path / "model"
    shutil.copytree(ROOT / "semantic" / "demo", model)
    sources = model / "sources.toml"
    sources.write_text(re.sub(r'path = ".*"', f'path = "{DATA}"', sources.read_text()))
    git(model, "init", "-q")
    git(model, "-c", "user.name=Ana Lyst", "-c", "user.email=ana@kpitables.demo", "add", ".")
    git(model, "-c", "user.name=Ana Lyst", "-c", "user.email=ana@kpitables.demo", "commit", "-q", "-m", "demo")
    units = f"SUM(CASE WHEN {OK} THEN l.quantity END)"
    truth = dict(duck.execute(f"SELECT s.region, {units} FROM {LINES} GROUP BY 1").fetchall())
    k = Kpitables(tmp_path / "kpitables.log", ["--model", str(model)])
    try:
        with psycopg.connect(k.dsn, autocommit=True) as c:
            query = "SELECT region, units FROM sales WHERE region <> %s ORDER BY 1"
            assert dict(c.execute(query, ["-"], prepare=True).fetchall()) == truth
            c.execute("DECLARE open_cursor CURSOR WITH HOLD FOR SELECT region, units FROM sales ORDER BY 1")
            first = c.execute("FETCH 1 FROM open_cursor").fetchall()

            # The change is committed elsewhere and then checked out here, so the served
            # files and the checkout's commit change together.
            review = tmp_path / "review"
            git(tmp_path, "clone", "-q", str(model), str(review))
            metrics = review / "metrics.toml"
            metrics.write_text(metrics.read_text().replace('expr = "quantity"\n', 'expr = "quantity * 2"\n', 1))
            git(review, "-c", "user.name=Rev Iewer", "-c", "user.email=rev@kpitables.demo", "commit", "-q", "-am", "double units")
            head = git(review, "rev-parse", "HEAD")
            git(model, "fetch", "-q", str(review))
            git(model, "reset", "-q", "--hard", head)
            assert wait_until(lambda: count(c, "SELECT count(*) FROM kp.changes") > 0)

            # The cursor finishes on the model it started with.
            rest = c.execute("FETCH ALL FROM open_cursor").fetchall()
            assert dict(first + rest) == truth
            # The prepared statement answers with the new definition.
            assert dict(c.execute(query, ["-"], prepare=True).fetchall()) == {r: 2 * v for r, v in truth.items()}
            change = c.execute("SELECT name, fields, git_commit, author FROM kp.changes").fetchall()
            assert change == [("units", 'expr: "quantity" -> "quantity * 2"', head, "Rev Iewer <rev@kpitables.demo>")]

            # A change of the result type: the prepared statement is refused, the session goes on.
            metrics = model / "metrics.toml"
            metrics.write_text(metrics.read_text().replace('expr = "quantity * 2"\n', 'expr = "quantity * 1.5"\n', 1))
            assert wait_until(lambda: count(c, "SELECT count(*) FROM kp.changes") > 1)
            with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
                c.execute(query, ["-"], prepare=True)
            assert "cached plan must not change result type" in str(refused.value)
            assert refused.value.diag.message_hint and "prepare it again" in refused.value.diag.message_hint
            assert count(c, "SELECT count(*) FROM sales WHERE units > 0") >= 1
    finally:
        k.close()


def test_the_change_log_survives_a_restart_and_sees_changes_made_while_down(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(ROOT / "semantic" / "demo", model)
    sources = model / "sources.toml"
    sources.write_text(re.sub(r'path = ".*"', f'path = "{DATA}"', sources.read_text()))
    metrics = model / "metrics.toml"
    history = tmp_path / "history.jsonl"
    serve = ["--model", str(model), "--history-file", str(history)]

    def changes(k):
        with psycopg.connect(k.dsn, autocommit=True) as c:
            return c.execute("SELECT name, fields FROM kp.changes ORDER BY changed_at, name").fetchall()

    k = Kpitables(tmp_path / "first.log", serve)
    try:
        assert changes(k) == []
        metrics.write_text(metrics.read_text().replace('owner = "ops@kpitables.demo"', 'owner = "supply@kpitables.demo"', 1))
        assert wait_until(lambda: len(changes(k)) == 1)
    finally:
        k.close()
    # Changed while no server runs: the next start records it against the last version served.
    metrics.write_text(metrics.read_text().replace('expr = "quantity"\n', 'expr = "quantity * 2"\n', 1))
    k = Kpitables(tmp_path / "second.log", serve)
    try:
        assert changes(k) == [
            ("units", 'owner: "ops@kpitables.demo" -> "supply@kpitables.demo"'),
            ("units", 'expr: "quantity" -> "quantity * 2"'),
        ]
    finally:
        k.close()
    # A restart without a change records nothing new.
    k = Kpitables(tmp_path / "third.log", serve)
    try:
        assert len(changes(k)) == 2
    finally:
        k.close()
