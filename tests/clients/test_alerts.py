"""Step 9: alerts (预警).

- Each condition (above, below, change against the previous period and the same period
  last year, attainment of a target, anomaly, no data) decides the same breaching
  instances, with the same values, as a hand-written query on the source: DuckDB on the
  demo files for the embedded engine, and the PostgreSQL warehouse itself.
- The state machine over a scripted series of daily evaluations (`alerts run --at`, a
  state file) equals an independent simulation of the rules in docs/alerts.md.
- Messages go to a real local HTTP receiver: the DingTalk, Feishu and WeCom bodies and
  signatures are byte-exact at a fixed clock, a failing receiver gets retries that are
  recorded, a burst is merged into digests within DingTalk's rate limit.
- The server evaluates on schedule: LISTEN kp_alerts (psycopg and psql) receives the
  transitions a listener may see, kp.alerts and kp.alert_events follow the reader's
  rules, and an alert run as manager_east carries only East.
"""

import base64
import hashlib
import hmac
import http.server
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import psycopg
import pytest

from conftest import BIN, DATA, ROOT, Kpitables, free_port, wait_until
from test_ground_truth import FLOAT_TOLERANCE, LINES, OK, ORDERS_DISTINCT, REVENUE

# The evaluation time of most tests: 15 June 2024, 10:00 in the model's time zone
# (Asia/Shanghai); yesterday is 14 June.
AT = "2024-06-15T10:00:00+08:00"
AT_MS = 1718416800000
DAY = "DATE '2024-06-14'"

FLOAT = "DOUBLE PRECISION"


class Receiver:
    """A real HTTP server on a free port that records each POST (path, query, body) and
    answers 500 to the first `fail[path]` requests of a path."""

    def __init__(self):
        self.requests = []
        self.fail = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                url = urllib.parse.urlsplit(self.path)
                receiver.requests.append(
                    {"path": url.path, "query": urllib.parse.parse_qs(url.query), "raw_query": url.query, "body": body}
                )
                if receiver.fail.get(url.path, 0) > 0:
                    receiver.fail[url.path] -= 1
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"errcode":0,"errmsg":"ok"}')

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path):
        return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver():
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def model_with(tmp, rules, base=None):
    """A copy of the demo model (or `base`) whose alert rules are `rules` only."""
    model = tmp / "model"
    if model.exists():
        shutil.rmtree(model)
    shutil.copytree(base or ROOT / "semantic" / "demo", model)
    sources = model / "sources.toml"
    if base is None:
        sources.write_text(sources.read_text().replace('"../../data/demo"', f'"{DATA}"'))
    (model / "alerts.toml").write_text(rules)
    return model


def alerts_run(model, at=AT, state=None, dry_run=False, env=None, expect_ok=True):
    args = [BIN, "alerts", "run", "--model", str(model), "--at", at, "--format", "json"]
    if state:
        args += ["--state", str(state)]
    if dry_run:
        args.append("--dry-run")
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if expect_ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout), done.returncode


def rule(report, name):
    [r] = [r for r in report["rules"] if r["rule"] == name]
    assert r["error"] is None, r["error"]
    return r


def close(a, b):
    """An alert's value is a double (a JSON number in messages, double precision in
    kp.alerts), computed by another engine than the hand-written query: equal within the
    ground truth's tolerance for doubles (test_ground_truth.FLOAT_TOLERANCE)."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)


# ---- each condition against ground truth, embedded and PostgreSQL ---------------------


class Source:
    def __init__(self, kind, duck=None, warehouse=None):
        self.kind = kind
        self.duck = duck
        self.warehouse = warehouse
        self.base = warehouse.model if warehouse else None
        self.env = warehouse.env if warehouse else {}

    def truth(self, sql):
        if self.kind == "embedded":
            return self.duck.execute(sql).fetchall()
        with psycopg.connect(self.warehouse.server.dsn, autocommit=True) as c:
            return c.execute(sql).fetchall()


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def source(request, duck, warehouses):
    if request.param == "embedded":
        return Source("embedded", duck=duck)
    return Source("postgres", warehouse=warehouses("postgres"))


def per_key(rows):
    return {str(k): (float(v) if v is not None else None) for k, v in rows}


def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2]


def by_region(where, measure=REVENUE, key="s.region"):
    return f"SELECT {key}, {measure} FROM {LINES} WHERE {where} GROUP BY 1"


def rules_text(rules):
    out = []
    for r in rules:
        out.append("[[alerts]]")
        for k, v in r.items():
            out.append(f"{k} = {json.dumps(v, ensure_ascii=False)}")
        out.append("")
    return "\n".join(out)


def base_rule(name, **keys):
    return {"name": name, "metric": "revenue", "view": "sales", "by": ["region"], "run_as": "analyst", **keys}


def test_each_condition_agrees_with_a_hand_written_query(source, tmp_path):
    revenue = per_key(source.truth(by_region(f"o.order_date = {DAY}")))
    by_channel = per_key(source.truth(by_region(f"o.order_date = {DAY}", key="o.channel")))
    below, above = median(revenue.values()), median(by_channel.values())
    orders_now = per_key(source.truth(by_region(f"o.order_date = {DAY}", ORDERS_DISTINCT)))
    orders_before = per_key(source.truth(by_region("o.order_date = DATE '2024-06-13'", ORDERS_DISTINCT)))
    orders_last_year = per_key(source.truth(by_region("o.order_date = DATE '2023-06-14'", ORDERS_DISTINCT)))
    mtd = per_key(source.truth(by_region("o.order_date >= DATE '2024-06-01' AND o.order_date < DATE '2024-06-16'")))
    targets = per_key(
        source.truth("SELECT region, SUM(revenue_target) FROM revenue_targets WHERE month = DATE '2024-06-01' GROUP BY 1")
    )
    shares = {k: mtd[k] / targets[k] for k in mtd if targets.get(k)}
    share_threshold = median(shares.values())
    anomaly = source.truth(f"""
        WITH d AS (SELECT s.region AS region, o.order_date AS day, {REVENUE} AS r FROM {LINES}
                   WHERE o.order_date >= DATE '2024-05-17' AND o.order_date < DATE '2024-06-15' GROUP BY 1, 2),
             h AS (SELECT region, AVG(r) AS m, STDDEV_SAMP(r) AS sd FROM d WHERE day < {DAY} GROUP BY 1)
        SELECT d.region, CAST(d.r AS {FLOAT}), CAST(h.m AS {FLOAT}), CAST((d.r - h.m) / h.sd AS {FLOAT})
        FROM d JOIN h ON d.region = h.region WHERE d.day = {DAY}""")
    rules = [
        base_rule("rev_below", condition="below", threshold=below),
        base_rule("rev_above", by=["channel"], condition="above", threshold=above),
        base_rule("orders_change", metric="orders", condition="change", compare_to="previous_period", threshold=10),
        base_rule(
            "orders_yoy_down", metric="orders", condition="change", compare_to="same_period_last_year",
            direction="down", threshold=0,
        ),
        base_rule(
            "attainment", view="sales_targets", target="revenue_target", grain="month", period="to_date",
            condition="attainment_below", threshold=share_threshold,
        ),
        base_rule("unusual", condition="anomaly", periods=28, threshold=1.0),
    ]
    model = model_with(tmp_path, rules_text(rules), source.base)
    report, _ = alerts_run(model, env=source.env, dry_run=True)

    def readings(name):
        return {r["key"]: r for r in rule(report, name)["readings"]}

    def check(name, truth_values, breach, comparison=None, measure=None):
        got = readings(name)
        assert set(got) == set(truth_values), name
        for key, value in truth_values.items():
            assert close(got[key]["value"], value), (name, key, got[key], value)
            if comparison is not None:
                assert close(got[key]["comparison"], comparison[key]), (name, key)
            if measure is not None:
                assert close(got[key]["measure"], measure[key]), (name, key)
        breaching = {k for k, r in got.items() if r["verdict"] == "breach"}
        assert breaching == {k for k in truth_values if breach(k)}, name
        return breaching

    region = lambda d: {f"region={k}": v for k, v in d.items()}  # noqa: E731
    assert 0 < len(check("rev_below", region(revenue), lambda k: revenue[k[7:]] < below)) < len(revenue)
    assert check("rev_above", {f"channel={k}": v for k, v in by_channel.items()}, lambda k: by_channel[k[8:]] > above)
    change = {k: (orders_now[k] - orders_before[k]) / abs(orders_before[k]) * 100 for k in orders_now}
    check("orders_change", region(orders_now), lambda k: abs(change[k[7:]]) > 10, region(orders_before), region(change))
    yoy = {k: (orders_now[k] - orders_last_year[k]) / abs(orders_last_year[k]) * 100 for k in orders_now}
    check("orders_yoy_down", region(orders_now), lambda k: yoy[k[7:]] < 0, region(orders_last_year), region(yoy))
    assert check(
        "attainment", region(mtd), lambda k: shares[k[7:]] < share_threshold, region(targets), region(shares)
    )
    z = {r: (v, m, score) for r, v, m, score in anomaly}
    check(
        "unusual", region({k: v for k, (v, _, _) in z.items()}), lambda k: abs(z[k[7:]][2]) > 1.0,
        region({k: m for k, (_, m, _) in z.items()}), region({k: s for k, (_, _, s) in z.items()}),
    )


def test_no_data_is_not_zero(source, tmp_path):
    """A period without rows is "no data": a no_data rule breaches (for the rule and for
    each instance seen before), and a `below` rule does not read it as 0."""
    rules = [
        base_rule("quiet", by=[], condition="no_data"),
        base_rule("quiet_regions", condition="no_data"),
        base_rule("low", condition="below", threshold=1e12),
    ]
    model = model_with(tmp_path, rules_text(rules), source.base)
    state = tmp_path / "state.json"
    rows_then = source.truth(f"SELECT COUNT(*) FROM orders o WHERE o.order_date = {DAY}")[0][0]
    rows_later = source.truth("SELECT COUNT(*) FROM orders o WHERE o.order_date = DATE '2025-01-02'")[0][0]
    assert rows_then > 0 and rows_later == 0
    first, _ = alerts_run(model, state=state, env=source.env)
    assert [r["verdict"] for r in rule(first, "quiet")["readings"]] == ["clear"]
    regions = {r["key"] for r in rule(first, "quiet_regions")["readings"]}
    assert len(regions) == 5 and all(r["verdict"] == "clear" for r in rule(first, "quiet_regions")["readings"])
    assert all(r["verdict"] == "breach" for r in rule(first, "low")["readings"])
    later, _ = alerts_run(model, at="2025-01-03T10:00:00+08:00", state=state, env=source.env)
    assert [(r["verdict"], r["value"]) for r in rule(later, "quiet")["readings"]] == [("breach", None)]
    assert {r["key"]: r["verdict"] for r in rule(later, "quiet_regions")["readings"]} == {k: "breach" for k in regions}
    assert {t["to"] for t in rule(later, "quiet_regions")["transitions"]} == {"firing"}
    # `low` fired on the first day; with no data it neither resolves nor fires again.
    assert all(r["verdict"] == "no_data" and r["value"] is None for r in rule(later, "low")["readings"])
    assert rule(later, "low")["transitions"] == []


# ---- the state machine over a scripted series -------------------------------------------


def simulate(days, values, threshold, recover, for_n, repeat_days):
    """An independent reading of docs/alerts.md "States": per day, the notices due."""
    state = {}
    notices = []
    for i, day in enumerate(days):
        for key, v in values.get(day, {}).items():
            s = state.setdefault(key, {"status": "ok", "n": 0, "notified": None, "first": i})
            if v is None:
                continue
            verdict = "breach" if v > threshold else ("clear" if v <= recover else "hold")
            if verdict == "breach" and s["status"] in ("ok", "resolved", "pending"):
                s["n"] = s["n"] + 1 if s["status"] == "pending" else 1
                if s["n"] >= for_n:
                    s["status"] = "firing"
                    s["notified"] = i
                    notices.append((day, key, "firing"))
                else:
                    s["status"] = "pending"
            elif verdict != "breach" and s["status"] in ("pending", "resolved"):
                s["cleared_pending"] = s.get("cleared_pending", 0) + (s["status"] == "pending")
                s["status"], s["n"] = "ok", 0
            elif s["status"] == "firing" and verdict in ("breach", "hold"):
                if i - s["notified"] >= repeat_days:
                    s["notified"] = i
                    notices.append((day, key, "repeat"))
            elif s["status"] == "firing" and verdict == "clear":
                s["status"], s["n"] = "resolved", 0
                s["notified"] = i
                notices.append((day, key, "resolved"))
    return notices, state


def test_state_machine_over_a_scripted_series_of_evaluations(tmp_path, duck):
    # From 6 June, when one product sold nothing (it appears on the 7th), to the 14th,
    # when two sold nothing (their state stays as it was).
    days = [f"2024-06-{d:02d}" for d in range(6, 15)]
    rows = duck.execute(f"""
        SELECT CAST(o.order_date AS VARCHAR), p.product_name, CAST({REVENUE} AS {FLOAT})
        FROM {LINES} WHERE o.order_date BETWEEN DATE '{days[0]}' AND DATE '{days[-1]}' GROUP BY 1, 2""").fetchall()
    values = {}
    for day, product, v in rows:
        values.setdefault(day, {})[f"product_name={product}"] = v
    threshold = median([v for _, _, v in rows])
    recover = threshold * 0.8
    model = model_with(tmp_path, rules_text([base_rule(
        "products", by=["product_name"], condition="above", threshold=threshold, recover=recover,
        repeat_every="2 days", **{"for": 2},
    )]))
    state = tmp_path / "state.json"
    got = []
    for day in days:
        # Evaluated at 10:00 the next day: the period is `day`.
        at = f"{day}T10:00:00+08:00".replace(day, day[:8] + f"{int(day[8:]) + 1:02d}")
        report, _ = alerts_run(model, at=at, state=state)
        r = rule(report, "products")
        assert r["period"] == day
        got += [(day, t["instance"], t["notice"]) for t in r["transitions"] if t["notice"]]
    expected, final = simulate(days, values, threshold, recover, 2, 2)
    assert sorted(got) == sorted(expected)
    kinds = [n for _, _, n in expected]
    # The series exercises every rule of the state machine (a property of the data,
    # checked so the test cannot pass vacuously).
    assert {"firing", "repeat", "resolved"} <= set(kinds)
    for key in {k for _, k, _ in expected}:
        episodes = [n for _, k, n in sorted(expected) if k == key]
        # Exactly one firing and one resolved per episode, in order.
        starts = [n for n in episodes if n != "repeat"]
        assert starts == ["firing", "resolved"] * (len(starts) // 2) + (["firing"] if len(starts) % 2 else [])
    assert any(s.get("cleared_pending") for s in final.values()), "a pending period that does not fire"
    assert any(s["first"] > 0 for s in final.values()), "a product appears after the first day"
    on_disk = json.loads(state.read_text())["rules"]["products"]
    assert {k: v["status"] for k, v in on_disk.items()} == {k: s["status"] for k, s in final.items()}


# ---- channels: bodies, signatures, retries, rate limits ----------------------------------


def number(v):
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}"


CHANNELS = """
[[channels]]
name = "hook"
kind = "webhook"
url_env = "T_HOOK"

[[channels]]
name = "slack"
kind = "slack"
url_env = "T_SLACK"

[[channels]]
name = "ding"
kind = "dingtalk"
url_env = "T_DING"
secret_env = "T_DING_SECRET"

[[channels]]
name = "feishu"
kind = "feishu"
url_env = "T_FEISHU"
secret_env = "T_FEISHU_SECRET"

[[channels]]
name = "wecom"
kind = "wecom"
url_env = "T_WECOM"

[[channels]]
name = "flaky"
kind = "webhook"
url_env = "T_FLAKY"
retries = 3
backoff = "50ms"

[[channels]]
name = "down"
kind = "webhook"
url_env = "T_DOWN"
retries = 1
backoff = "50ms"
"""


def channel_env(receiver):
    return {
        "T_HOOK": f"{receiver.url}/hook",
        "T_SLACK": f"{receiver.url}/slack",
        "T_DING": f"{receiver.url}/ding?access_token=tok",
        "T_DING_SECRET": "SECtest-secret",
        "T_FEISHU": f"{receiver.url}/feishu",
        "T_FEISHU_SECRET": "feishu-secret",
        "T_WECOM": f"{receiver.url}/wecom?key=k-123",
        "T_FLAKY": f"{receiver.url}/flaky",
        "T_DOWN": f"{receiver.url}/down",
    }


def dumps(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def test_robot_bodies_and_signatures_are_byte_exact(tmp_path, duck, receiver):
    total = duck.execute(f"SELECT CAST({REVENUE} AS {FLOAT}) FROM {LINES} WHERE o.order_date = {DAY}").fetchone()[0]
    rules = rules_text([base_rule(
        "total_low", by=[], condition="below", threshold=1e12,
        channels=["hook", "slack", "ding", "feishu", "wecom"], at_mobiles=["13800000000"],
    )])
    model = model_with(tmp_path, CHANNELS + rules)
    report, _ = alerts_run(model, env=channel_env(receiver))
    assert len(receiver.requests) == 5
    description = (
        "Net sales: quantity × unit price − line discount, over lines of orders that were not cancelled. "
        "Returned orders count (returns are netted in a later metric)."
    )
    text = "\n".join([
        "### [FIRING] 销售额",
        "**total_low** (warning)",
        f"- revenue: {number(total)}",
        "- condition: below 1000000000000",
        "- period: 2024-06-14",
        f"- 口径: {description}",
        "- owner: finance@kpitables.demo",
    ])
    [ding] = receiver.on("/ding")
    assert ding["query"]["access_token"] == ["tok"]
    assert ding["query"]["timestamp"] == [str(AT_MS)]
    # DingTalk: Base64(HMAC-SHA256(secret, timestamp + "\n" + secret)), URL-encoded.
    secret = "SECtest-secret"
    sign = base64.b64encode(hmac.new(secret.encode(), f"{AT_MS}\n{secret}".encode(), hashlib.sha256).digest()).decode()
    assert ding["raw_query"].endswith("&sign=" + urllib.parse.quote_plus(sign))
    assert ding["body"] == dumps({
        "msgtype": "markdown",
        "markdown": {"title": "[FIRING] 销售额", "text": text + " @13800000000"},
        "at": {"atMobiles": ["13800000000"], "isAtAll": False},
    })
    # Feishu: Base64(HMAC-SHA256(timestamp + "\n" + secret, "")), timestamp in seconds.
    [feishu] = receiver.on("/feishu")
    ts = str(AT_MS // 1000)
    feishu_sign = base64.b64encode(hmac.new(f"{ts}\nfeishu-secret".encode(), b"", hashlib.sha256).digest()).decode()
    assert feishu["body"] == dumps({
        "timestamp": ts,
        "sign": feishu_sign,
        "msg_type": "interactive",
        "card": {
            "header": {"title": {"tag": "plain_text", "content": "[FIRING] 销售额"}, "template": "red"},
            "elements": [{"tag": "markdown", "content": text}],
        },
    })
    [wecom] = receiver.on("/wecom")
    assert wecom["query"]["key"] == ["k-123"]
    assert wecom["body"] == dumps({"msgtype": "markdown", "markdown": {"content": text}})
    [slack] = receiver.on("/slack")
    assert slack["body"] == dumps({"text": text})
    [hook] = receiver.on("/hook")
    body = json.loads(hook["body"])
    assert body["state"] == "firing" and body["rule"] == "total_low" and body["metric"] == "revenue"
    assert close(body["value"], total) and body["threshold"] == 1e12 and body["dimensions"] == {}
    assert body["label"] == "销售额" and body["description"] == description
    assert body["owner"] == "finance@kpitables.demo" and body["period"] == "2024-06-14"
    assert body["period_start"] == "2024-06-14" and body["period_end"] == "2024-06-15"
    assert body["run_as"] == "analyst" and body["sql"].startswith('SELECT "order_date" AS period, "revenue" FROM "sales"')
    assert all(a["outcome"] == "delivered" for d in report["deliveries"] for a in d["attempts"])


def test_a_failing_receiver_is_retried_and_every_attempt_recorded(tmp_path, receiver):
    receiver.fail["/flaky"] = 2
    receiver.fail["/down"] = 100
    model = model_with(tmp_path, CHANNELS + rules_text([
        base_rule("total_low", by=[], condition="below", threshold=1e12, channels=["flaky", "down"]),
    ]))
    report, code = alerts_run(model, env=channel_env(receiver), expect_ok=False)
    assert code == 1  # the message to "down" was not delivered
    attempts = {d["channel"]: [(a["outcome"], a["status"]) for a in d["attempts"]] for d in report["deliveries"]}
    assert attempts["flaky"] == [("failed", 500), ("failed", 500), ("delivered", 200)]
    assert attempts["down"] == [("failed", 500), ("failed", 500)]
    flaky = receiver.on("/flaky")
    assert len(flaky) == 3 and len({r["body"] for r in flaky}) == 1
    assert len(receiver.on("/down")) == 2


def test_a_burst_is_merged_within_dingtalks_rate_limit(tmp_path, duck, receiver):
    products = {
        p for (p,) in duck.execute(
            f"SELECT p.product_name FROM {LINES} WHERE o.order_date = {DAY} GROUP BY 1 HAVING {REVENUE} > 0"
        ).fetchall()
    }
    assert len(products) >= 50
    model = model_with(tmp_path, CHANNELS + rules_text([
        base_rule("burst", by=["product_name"], condition="above", threshold=0, channels=["ding"]),
    ]))
    alerts_run(model, env=channel_env(receiver))
    messages = receiver.on("/ding")
    assert 1 < len(messages) <= 20
    carried = []
    for m in messages:
        text = json.loads(m["body"])["markdown"]["text"]
        assert text.startswith("### kpitables: ")
        carried += re.findall(r"^- \[FIRING\] burst product_name=(.*?): revenue ", text, re.M)
    assert sorted(carried) == sorted(products)


def test_a_bad_rule_is_refused_with_its_position(tmp_path):
    model = model_with(tmp_path, rules_text([
        base_rule("typo", metric="revenu", condition="below", threshold=1),
        base_rule("no_threshold", condition="above"),
        base_rule("odd", condition="sideways", schedule="every day"),
    ]))
    done = subprocess.run([BIN, "check", str(model)], capture_output=True, text=True)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert re.search(r'alerts\.toml:\d+:\d+: unknown metric "revenu"', out), out
    assert 'condition "above" needs a threshold' in out
    assert 'condition "sideways" must be above, below, change' in out
    assert 'schedule "every day" is not a cron expression' in out


# ---- the server: schedule, LISTEN, kp.alerts, rules ---------------------------------------

SERVER_RULES = """
[[alerts]]
name = "east_revenue"
metric = "revenue"
view = "sales"
by = ["region"]
condition = "above"
threshold = 0
schedule = "* * * * * *"
run_as = "manager_east"
channels = ["hook"]

[[alerts]]
name = "cost_watch"
metric = "cost"
view = "sales"
condition = "above"
threshold = 0
schedule = "* * * * * *"
run_as = "exec"
"""


def connect(k, user):
    return psycopg.connect(
        f"host=127.0.0.1 port={k.port} user={user} password={user} dbname=kpitables", autocommit=True
    )


def test_the_server_evaluates_on_schedule_and_tells_only_who_may_see(tmp_path, duck, receiver):
    east = duck.execute(
        f"SELECT CAST({REVENUE} AS {FLOAT}) FROM {LINES} WHERE o.order_date = {DAY} AND s.region = 'East'"
    ).fetchone()[0]
    model = model_with(tmp_path, CHANNELS)
    http_port = free_port()
    k = Kpitables(
        tmp_path / "kpitables.log",
        ["--model", str(model), "--alerts-clock", AT, "--http", f"127.0.0.1:{http_port}",
         "--alert-state-file", str(tmp_path / "alert-state.json")],
        channel_env(receiver),
    )
    try:
        listeners = {user: connect(k, user) for user in ["manager_east", "exec", "staff"]}
        for c in listeners.values():
            c.execute("LISTEN kp_alerts")
            c.execute("LISTEN barrier")
        psql = subprocess.Popen(
            ["psql", "-X", "-h", "127.0.0.1", "-p", str(k.port), "-U", "manager_east", "kpitables"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PGPASSWORD": "manager_east"},
        )
        psql.stdin.write("LISTEN kp_alerts;\nLISTEN barrier;\n")
        psql.stdin.flush()
        # A new rule file: the server reloads the model and evaluates the rules each second.
        (model / "alerts.toml").write_text(CHANNELS + SERVER_RULES)
        with connect(k, "exec") as admin:
            def transitions():
                return admin.execute(
                    "SELECT rule, instance, outcome FROM kp.alert_events WHERE kind = 'transition' ORDER BY rule"
                ).fetchall()
            wait_until(lambda: len(transitions()) == 2)
            assert transitions() == [
                ("cost_watch", "", "firing"), ("east_revenue", "region=East", "firing"),
            ]
            # Each listener got what it may see: manager_east its own rule, exec both,
            # staff (a row filter, and not the rule's user) nothing. A session gets its
            # notifications in the order they were sent: the webhook's delivery follows
            # the announcements, so a NOTIFY on another channel sent after it marks the end
            # of what each listener was sent (no waiting for a silence).
            wait_until(lambda: receiver.on("/hook"))
            with connect(k, "analyst") as marker:
                marker.execute("NOTIFY barrier, 'end'")

            def received(user):
                got = []
                for n in listeners[user].notifies(timeout=60):
                    if n.channel == "barrier":
                        return got
                    got.append(json.loads(n.payload))
                raise AssertionError(f"{user} never got the barrier")
            [mine] = received("manager_east")
            assert mine["rule"] == "east_revenue" and mine["dimensions"] == {"region": "East"}
            assert mine["from"] == "ok" and mine["to"] == "firing" and close(mine["value"], east)
            assert sorted(n["rule"] for n in received("exec")) == ["cost_watch", "east_revenue"]
            assert received("staff") == []
            # psql shows the notifications (sent before the barrier) after its next command.
            out, _ = psql.communicate("SELECT 1 AS one;\n\\q\n", timeout=30)
            assert 'Asynchronous notification "kp_alerts" with payload "' in out, out
            assert '"rule":"east_revenue"' in out and "cost_watch" not in out
            # The message carries East only.
            [hook] = wait_until(lambda: receiver.on("/hook"))
            body = json.loads(hook["body"])
            assert body["dimensions"] == {"region": "East"} and close(body["value"], east)
            assert body["run_as"] == "manager_east"
            # kp.alerts and kp.alert_events as each reader may see them.
            def alerts_as(user):
                with connect(k, user) as c:
                    return c.execute("SELECT rule, instance, state, value FROM kp.alerts ORDER BY 1, 2").fetchall()
            rows = alerts_as("manager_east")
            assert [(r, i, s) for r, i, s, _ in rows] == [("east_revenue", "region=East", "firing")]
            assert close(rows[0][3], east)
            assert [r for r, *_ in alerts_as("exec")] == ["cost_watch", "east_revenue"]
            assert [r for r, *_ in alerts_as("analyst")] == ["east_revenue"]  # no cost
            assert alerts_as("staff") == []
            with connect(k, "manager_east") as c:
                events = c.execute("SELECT DISTINCT rule, instance FROM kp.alert_events").fetchall()
                assert set(events) == {("east_revenue", "region=East")}
                delivered = c.execute(
                    "SELECT channel, outcome FROM kp.alert_events WHERE kind = 'delivery'"
                ).fetchall()
                assert delivered == [("hook", "delivered")]
            # NOTIFY between sessions, as in PostgreSQL.
            with connect(k, "analyst") as sender:
                listeners["exec"].execute("LISTEN reports")
                pid = sender.execute("SELECT pg_backend_pid()").fetchone()[0]
                sender.execute("NOTIFY reports, 'ready'")
                [note] = list(listeners["exec"].notifies(timeout=5, stop_after=1))
                assert (note.channel, note.payload, note.pid) == ("reports", "ready", pid)
                # kp_alerts is the server's: a client cannot forge an alert.
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="kp_alerts"):
                    sender.execute("NOTIFY kp_alerts, 'forged'")
                assert sender.execute("SELECT 1").fetchone() == (1,)
            # /metrics counts evaluations, transitions and deliveries.
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
            assert re.search(r'kpitables_alert_evaluations_total\{outcome="ok"\} [1-9]', metrics)
            assert 'kpitables_alert_transitions_total{state="firing"} 2' in metrics
            assert 'kpitables_alert_deliveries_total{channel_kind="webhook",outcome="delivered"} 1' in metrics
        for c in listeners.values():
            c.close()
    finally:
        k.close()
    # The state survives a restart: the instance is still firing, nothing is sent again.
    state = json.loads((tmp_path / "alert-state.json").read_text())
    assert state["rules"]["east_revenue"]["region=East"]["status"] == "firing"
    k = Kpitables(
        tmp_path / "kpitables-again.log",
        ["--model", str(model), "--alerts-clock", AT, "--alert-state-file", str(tmp_path / "alert-state.json")],
        channel_env(receiver),
    )
    try:
        with connect(k, "exec") as admin:
            def evaluated_again():
                return admin.execute(
                    "SELECT count(*) FROM kp.alert_events WHERE rule = 'east_revenue' AND kind = 'evaluation'"
                ).fetchone()[0]
            wait_until(evaluated_again)
            assert admin.execute(
                "SELECT count(*) FROM kp.alert_events WHERE kind IN ('transition', 'delivery')"
            ).fetchone()[0] == 0
            assert admin.execute(
                "SELECT state FROM kp.alerts WHERE rule = 'east_revenue'"
            ).fetchall() == [("firing",)]
        assert len(receiver.on("/hook")) == 1
    finally:
        k.close()


# ---- data quality ---------------------------------------------------------------------

QUALITY = (
    'quality = { freshness = { column = "order_date", max_lag = "1 day" }, not_null = ["customer_id", "store_id"], '
    'unique = ["order_id"], row_count_change = 0.5, schedule = "* * * * * *" }'
)

QUALITY_RULE = """
[[alerts]]
name = "orders_quality"
condition = "quality"
table = "orders"
schedule = "* * * * * *"
run_as = "analyst"
channels = ["hook"]
"""


def with_quality(model):
    tables = model / "tables.toml"
    text = tables.read_text()
    text = re.sub(r"^quality = .*$", "", text, flags=re.M)
    tables.write_text(text.replace('name = "orders"\n', f'name = "orders"\n{QUALITY}\n', 1))


def test_stale_data_gives_a_warning_a_kp_quality_row_and_an_alert(tmp_path, duck, receiver):
    newest, nulls, duplicates = duck.execute(
        "SELECT MAX(order_date), COUNT(*) - COUNT(customer_id) + COUNT(*) - COUNT(store_id),"
        " COUNT(order_id) - COUNT(DISTINCT order_id) FROM orders"
    ).fetchone()
    assert str(newest) == "2024-12-31" and nulls == 0 and duplicates == 0
    model = model_with(tmp_path, CHANNELS + QUALITY_RULE)
    with_quality(model)
    # On 1 January at 10:00 the newest day (ended at midnight) is 10 hours old: fresh.
    fresh, _ = alerts_run(model, at="2025-01-01T10:00:00+08:00", dry_run=True)
    assert {c["check"]: c["status"] for c in fresh["quality"]} == {
        "freshness": "pass", "not_null(customer_id)": "pass", "not_null(store_id)": "pass",
        "unique(order_id)": "pass", "row_count_change": "pass",
    }
    # Made stale on purpose: the server's clock on 5 January.
    k = Kpitables(
        tmp_path / "kpitables.log",
        ["--model", str(model), "--alerts-clock", "2025-01-05T10:00:00+08:00"],
        channel_env(receiver),
    )
    try:
        with connect(k, "analyst") as c:
            def stale():
                return c.execute(
                    "SELECT status, value, allowed FROM kp.quality WHERE check_name = 'freshness'"
                ).fetchall()
            wait_until(lambda: stale())
            [(status, value, allowed)] = stale()
            assert status == "fail" and value == "newest order_date 2024-12-31 is 4 days 10 hours old"
            assert allowed == "newest at most 1 day old"
            rows = dict(c.execute("SELECT check_name, status FROM kp.quality").fetchall())
            assert rows["unique(order_id)"] == "pass" and rows["not_null(customer_id)"] == "pass"
            notices = []
            c.add_notice_handler(lambda d: notices.append((d.severity, d.sqlstate, d.message_primary, d.message_hint)))
            c.execute("SELECT region, revenue FROM sales GROUP BY region").fetchall()
            assert notices == [(
                "WARNING", "01000",
                'table "orders" fails its data quality check freshness: '
                "newest order_date 2024-12-31 is 4 days 10 hours old (allowed: newest at most 1 day old)",
                "see kp.quality; the numbers may be incomplete or out of date",
            )]
            # A metric of another table reads no stale table: no warning.
            notices.clear()
            c.execute("SELECT revenue_target FROM sales_targets").fetchall()
            assert notices == []
            # The alert on the table's checks fired for the failing check only.
            wait_until(lambda: receiver.on("/hook"))
            states = dict(c.execute(
                "SELECT instance, state FROM kp.alerts WHERE rule = 'orders_quality'"
            ).fetchall())
            assert states["check=freshness"] == "firing" and states["check=unique(order_id)"] == "ok"
        [hook] = receiver.on("/hook")
        body = json.loads(hook["body"])
        assert body["dimensions"] == {"check": "freshness"} and body["state"] == "firing"
    finally:
        k.close()


def test_each_check_fails_on_a_table_made_to_break_it_and_passes_on_one_that_keeps_it(tmp_path, duck):
    """`not_null`, `unique` and `row_count_change` on an orders file written to break
    them, then on files that keep them, each result against a hand-written count of the
    same file; the row count of one `alerts run` is where the next one's change starts
    (kept in the state file)."""
    data = tmp_path / "data"
    data.mkdir()
    for f in DATA.iterdir():
        if f.name != "orders.parquet":
            (data / f.name).symlink_to(f)
    source = DATA / "orders.parquet"
    orders = data / "orders.parquet"

    def write(select):
        duck.execute(f"COPY ({select}) TO '{data / 'next.parquet'}' (FORMAT parquet)")
        os.replace(data / "next.parquet", orders)
        return duck.execute(
            f"""SELECT COUNT(*), COUNT(*) - COUNT(customer_id), COUNT(*) - COUNT(store_id),
                       COUNT(order_id) - COUNT(DISTINCT order_id)
                FROM read_parquet('{orders}')"""
        ).fetchone()

    model = model_with(tmp_path, "")
    sources = model / "sources.toml"
    sources.write_text(sources.read_text().replace(f'"{DATA}"', f'"{data}"'))
    assert str(data) in sources.read_text()
    state = tmp_path / "state.json"

    def checks():
        report, _ = alerts_run(model, state=state)
        return {c["check"]: (c["status"], c["value"]) for c in report["quality"] if c["table"] == "orders"}

    # Broken: a few customers blanked out, a few orders twice.
    rows, no_customer, no_store, duplicates = write(
        f"""SELECT * FROM read_parquet('{source}')
            UNION ALL SELECT * REPLACE (CAST(NULL AS BIGINT) AS customer_id)
                      FROM read_parquet('{source}') WHERE order_id % 100000 = 7
            UNION ALL SELECT * FROM read_parquet('{source}') WHERE order_id % 40000 = 3"""
    )
    assert no_customer > 0 and no_store == 0 and duplicates > no_customer
    assert checks() == {
        "not_null(customer_id)": ("fail", f"{no_customer} NULL"),
        "not_null(store_id)": ("pass", "0 NULL"),
        "unique(order_id)": ("fail", f"{duplicates} duplicate values"),
        "row_count_change": ("pass", f"{rows} rows (first check)"),
    }
    assert json.loads(state.read_text())["row_counts"] == {"orders": rows}
    # Clean, but 60 % of the rows gone since the last run: more than half.
    before = rows
    rows, no_customer, no_store, duplicates = write(f"SELECT * FROM read_parquet('{source}') WHERE order_id % 5 < 2")
    assert (no_customer, no_store, duplicates) == (0, 0, 0) and rows < before / 2
    assert checks() == {
        "not_null(customer_id)": ("pass", "0 NULL"),
        "not_null(store_id)": ("pass", "0 NULL"),
        "unique(order_id)": ("pass", "0 duplicate values"),
        "row_count_change": ("fail", f"{before} rows, now {rows}"),
    }
    # A quarter more rows: within half.
    before = rows
    rows, *_ = write(f"SELECT * FROM read_parquet('{source}') WHERE order_id % 10 < 5")
    assert before < rows <= before * 1.5
    assert checks()["row_count_change"] == ("pass", f"{before} rows, now {rows}")
