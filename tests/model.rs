//! Model loading and validation: every problem is reported with file, line, column and a
//! reason; `kpitables check` prints them and exits non-zero; the demo model is valid; a
//! query the model cannot answer is refused with SQLSTATE 0A000 and the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use kpitables::catalog::Identity;
use kpitables::engine::Engine;
use kpitables::error::Error;
use kpitables::model::load::{SourceTexts, load_texts};
use kpitables::session::Session;
use kpitables::sql::session_values::SessionFacts;

fn issues(files: &[(&str, &str)]) -> Vec<String> {
    let texts = SourceTexts {
        files: files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect(),
    };
    match load_texts(texts) {
        Ok(_) => Vec::new(),
        Err(Error::Model(issues)) => issues.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

const GOOD: &str = r#"
[[sources]]
name = "files"
kind = "files"
path = "data"

[[tables]]
name = "orders"
source = "files"
file = "orders.csv"
primary_key = "id"

[[dimensions]]
name = "region"
table = "orders"

[[metrics]]
name = "revenue"
table = "orders"
agg = "sum"
expr = "amount"

[[views]]
name = "sales"
dimensions = ["region"]
metrics = ["revenue"]
"#;

#[test]
fn a_metric_dimension_names_a_metric_and_has_no_expression() {
    let extra = r#"
[[dimensions]]
name = "region_revenue"
table = "orders"
metric = "revenue"
expr = "amount"

[[dimensions]]
name = "region_profit"
table = "orders"
metric = "revenu"
"#;
    let found = issues(&[("m.toml", &format!("{GOOD}{extra}"))]);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains(
            "dimension \"region_revenue\" is a metric per row of \"orders\": it has no expr and is not a time dimension"
        ),
        "{found:?}"
    );
    assert!(
        found[1].contains("unknown metric \"revenu\"; did you mean \"revenue\"?"),
        "{found:?}"
    );
}

#[test]
fn a_valid_model_has_no_issues() {
    assert_eq!(issues(&[("m.toml", GOOD)]), Vec::<String>::new());
}

#[test]
fn unknown_references_name_the_closest_valid_name_with_position() {
    let broken = GOOD.replace("metrics = [\"revenue\"]", "metrics = [\"revenu\"]");
    let found = issues(&[("views.toml", &broken)]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0],
        "views.toml:26:12: unknown metric \"revenu\"; did you mean \"revenue\"?"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let broken = GOOD
        .replace("source = \"files\"", "source = \"fils\"")
        .replace("expr = \"amount\"", "expr = \"amount +\"")
        .replace("name = \"region\"", "name = \"Region\"");
    let found = issues(&[("model.toml", &broken)]);
    assert!(
        found
            .iter()
            .any(|i| i.contains("unknown source \"fils\"; did you mean \"files\"?")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.contains("expr is not a valid SQL expression")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.contains("dimension name \"Region\" must be lower-case")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.contains("unknown dimension \"region\"")),
        "{found:?}"
    );
    assert!(
        found.iter().all(|i| i.starts_with("model.toml:")),
        "{found:?}"
    );
}

#[test]
fn toml_errors_and_unknown_keys_have_positions() {
    let found = issues(&[(
        "bad.toml",
        "[[metrics]]\nname = \"x\"\ntable = \"t\"\nagg = \"summ\"\n",
    )]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("bad.toml:4:7: unknown variant `summ`"),
        "{found:?}"
    );
    let found = issues(&[("bad.toml", "[[views]]\nname = \"v\"\nmetricz = []\n")]);
    assert!(
        found[0].starts_with("bad.toml:3:1: unknown field `metricz`"),
        "{found:?}"
    );
}

#[test]
fn duplicate_names_and_missing_expressions_are_reported() {
    let broken =
        format!("{GOOD}\n[[metrics]]\nname = \"revenue\"\ntable = \"orders\"\nagg = \"avg\"\n");
    let found = issues(&[("m.toml", &broken)]);
    assert!(
        found
            .iter()
            .any(|i| i.contains("duplicate dimension, metric or segment name \"revenue\"")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|i| i.contains("needs an expr")),
        "{found:?}"
    );
}

#[test]
fn check_command_prints_issues_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("model.toml"),
        GOOD.replace("table = \"orders\"\nagg", "table = \"order\"\nagg"),
    )
    .expect("write");
    let (ok, stdout) = check(dir.path(), &[]);
    assert!(!ok);
    assert!(
        stdout.contains("model.toml:19:9: unknown table \"order\"; did you mean \"orders\"?"),
        "{stdout}"
    );
}

#[test]
fn check_command_accepts_the_demo_model() {
    let out = Command::new(env!("CARGO_BIN_EXE_kpitables"))
        .arg("check")
        .arg(common::root().join("semantic/demo"))
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `check` without the data finds every problem `serve` finds that does not depend on the
/// tables' columns: metric definitions, views, join paths.
#[test]
fn check_without_data_finds_the_model_problems_serve_finds() {
    let dir = unreachable_model();
    let text = std::fs::read_to_string(dir.path().join("model.toml")).expect("read");
    let extra = r#"
[[dimensions]]
name = "day"
table = "orders"
expr = "CAST('2024-01-01' AS DATE)"
kind = "time"

[[metrics]]
name = "revenue_growth"
base = "revenue"
time = "day"
compare = "previous_period"

[[metrics]]
name = "growth_of_growth"
base = "revenue_growth"
time = "day"
compare = "previous_period"

[[views]]
name = "no_time"
dimensions = ["region"]
metrics = ["revenue_growth"]

[[dimensions]]
name = "label_revenue"
table = "targets"
metric = "revenue"

[[dimensions]]
name = "store_growth"
table = "stores"
metric = "revenue_growth"

[[dimensions]]
name = "store_revenue"
table = "stores"
metric = "revenue"

[[dimensions]]
name = "store_big_revenue"
table = "stores"
metric = "big_store_revenue"

[[metrics]]
name = "big_store_revenue"
base = "revenue"
filter = "store_revenue > 10"
"#;
    write(dir.path(), "model.toml", &format!("{text}{extra}"));
    // No data at all: the files are gone.
    std::fs::remove_dir_all(dir.path().join("data")).expect("rm data");
    let (ok, stdout) = check(dir.path(), &[]);
    assert!(!ok, "{stdout}");
    for expected in [
        "metric \"growth_of_growth\" is defined from \"revenue_growth\", which already depends on periods of time",
        "view \"no_time\" offers metric \"revenue_growth\", which is computed per period of \"day\"",
        "no many-to-one join path",
        "dimension \"label_revenue\": metric \"revenue\" (table \"orders\") does not reach table \"targets\" through many-to-one joins",
        "dimension \"store_growth\": metric \"revenue_growth\" is a period_over_period metric: a dimension may be an atomic or derived metric",
        "dimension \"store_big_revenue\": metric \"big_store_revenue\" is filtered by a metric dimension itself",
    ] {
        assert!(stdout.contains(expected), "missing {expected} in {stdout}");
    }
    assert!(!stdout.contains("has no column"), "{stdout}");
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

/// A model whose view offers a dimension its metric cannot reach.
fn unreachable_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    write(
        &data,
        "orders.csv",
        "id,store_id,amount\n1,1,10.5\n2,2,4.5\n",
    );
    write(&data, "stores.csv", "id,region\n1,East\n2,West\n");
    write(&data, "targets.csv", "id,label\n1,stretch\n");
    write(
        dir.path(),
        "model.toml",
        r#"
[[sources]]
name = "files"
kind = "files"
path = "data"

[[tables]]
name = "orders"
source = "files"
file = "orders.csv"
primary_key = "id"
joins = [{ to = "stores", foreign_key = "store_id" }]

[[tables]]
name = "stores"
source = "files"
file = "stores.csv"
primary_key = "id"

[[tables]]
name = "targets"
source = "files"
file = "targets.csv"
primary_key = "id"

[[dimensions]]
name = "region"
table = "stores"

[[dimensions]]
name = "label"
table = "targets"

[[metrics]]
name = "revenue"
table = "orders"
agg = "sum"
expr = "amount"

[[views]]
name = "v"
dimensions = ["region", "label"]
metrics = ["revenue"]
"#,
    );
    dir
}

fn open_error(dir: &Path) -> String {
    let opened = tokio::runtime::Handle::current().block_on(Engine::open(
        dir,
        Identity {
            database: "kpitables".into(),
            roles: vec![],
        },
    ));
    match opened {
        Ok(_) => panic!("the model should be refused"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dimension_not_reachable_from_a_metric_is_refused_with_the_reason() {
    let dir = unreachable_model();
    // The join graph is checked at load: the view offers a metric and a dimension that
    // no many-to-one join path relates.
    let message = tokio::task::block_in_place(|| open_error(dir.path()));
    assert!(
        message.contains(
            "model.toml:43:12: view \"v\": metric \"revenue\" (table \"orders\") cannot be broken down by dimension \"label\" (table \"targets\"): there is no many-to-one join path from \"orders\" to \"targets\""
        ),
        "{message}"
    );

    // Without the unrelated dimension the model loads; asking for unrelated dimensions
    // together is refused at query time with the reason.
    let text = std::fs::read_to_string(dir.path().join("model.toml")).expect("read");
    write(
        dir.path(),
        "model.toml",
        &text.replace(
            "dimensions = [\"region\", \"label\"]\nmetrics = [\"revenue\"]",
            "dimensions = [\"region\"]\nmetrics = [\"revenue\"]\n\n[[views]]\nname = \"labels\"\ndimensions = [\"region\", \"label\"]",
        ),
    );
    let engine = Engine::open(
        dir.path(),
        Identity {
            database: "kpitables".into(),
            roles: vec![],
        },
    )
    .await
    .expect("model loads");
    let session = Session::new("t", 1, Default::default(), &[]);
    let facts = SessionFacts {
        session: &session,
        database: "kpitables",
        temp_tables: None,
    };
    let statement = kpitables::sql::parse("SELECT label, region FROM labels")
        .expect("parse")
        .remove(0);
    let err = engine
        .plan(statement, &facts)
        .await
        .expect_err("cannot be answered");
    assert_eq!(err.sqlstate(), "0A000");
    let message = err.to_string();
    assert!(message.contains("are not related"), "{message}");

    // The reachable dimension works and is correct.
    let statement = kpitables::sql::parse("SELECT region, revenue FROM v ORDER BY region")
        .expect("parse")
        .remove(0);
    let plan = engine.plan(statement, &facts).await.expect("answerable");
    let batches = datafusion::physical_plan::common::collect(
        engine.execute(&plan, vec![]).await.expect("run"),
    )
    .await
    .expect("collect");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string();
    assert!(
        text.contains("East") && text.contains("10.5") && text.contains("4.5"),
        "{text}"
    );
}

#[tokio::test]
async fn a_column_missing_from_the_data_is_reported_with_its_position() {
    let dir = unreachable_model();
    let text = std::fs::read_to_string(dir.path().join("model.toml")).expect("read");
    write(
        dir.path(),
        "model.toml",
        &text.replace("expr = \"amount\"", "expr = \"amont\""),
    );
    let err = Engine::open(
        dir.path(),
        Identity {
            database: "kpitables".into(),
            roles: vec![],
        },
    )
    .await
    .expect_err("bad column");
    let message = err.to_string();
    assert!(
        message.contains(
            "model.toml:38:8: table \"orders\" has no column \"amont\"; did you mean \"amount\"?"
        ),
        "{message}"
    );
}

#[test]
fn warehouse_sources_are_checked_and_never_hold_a_password() {
    let model = r#"
[[sources]]
name = "dwh"
kind = "postgres"
url = "postgres://kp:secret@dwh:5432/analytics"

[[sources]]
name = "olap"
kind = "mysql"
url = "postgres://kp@olap:9030/retail"

[[sources]]
name = "nowhere"
kind = "mysql"

[[tables]]
name = "orders"
source = "dwh"
file = "orders.csv"
primary_key = "id"
"#;
    let found = issues(&[("sources.toml", model)]);
    let all = found.join("\n");
    assert!(
        all.contains("sources.toml:5:7: source \"dwh\": url contains a password"),
        "{all}"
    );
    assert!(
        !all.contains("secret"),
        "the password is never repeated: {all}"
    );
    assert!(
        all.contains("source \"olap\": url scheme \"postgres\" does not match the kind"),
        "{all}"
    );
    assert!(all.contains("source \"nowhere\" needs a url"), "{all}");
    assert!(
        all.contains("source \"dwh\" is a warehouse: name the table with `table`, not `file`"),
        "{all}"
    );
    assert_eq!(found.len(), 4, "{all}");
}

#[tokio::test]
async fn an_unreachable_warehouse_is_reported_at_start_with_the_source_and_its_url_position() {
    // A port nobody listens on: the server refuses to start with a model error naming
    // the source, its file and line, and the connection failure.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let dir = tempfile::tempdir().expect("tempdir");
    let model = format!(
        r#"
[[sources]]
name = "dwh"
kind = "postgres"
url = "postgres://kp@127.0.0.1:{port}/analytics"
connect_timeout_secs = 2

[[tables]]
name = "orders"
source = "dwh"
primary_key = "id"

[[dimensions]]
name = "region"
table = "orders"

[[metrics]]
name = "revenue"
table = "orders"
agg = "sum"
expr = "amount"

[[views]]
name = "sales"
dimensions = ["region"]
metrics = ["revenue"]
"#
    );
    write(dir.path(), "model.toml", &model);
    let err = Engine::open(
        dir.path(),
        Identity {
            database: "kpitables".into(),
            roles: vec![],
        },
    )
    .await
    .expect_err("the warehouse is unreachable");
    let text = err.to_string();
    assert!(text.contains("model.toml:5:7"), "{text}");
    assert!(text.contains("source \"dwh\": cannot connect"), "{text}");
}

#[test]
fn each_metric_kind_takes_its_own_keys() {
    let extra = r#"
[[dimensions]]
name = "day"
table = "orders"
kind = "time"

[[metrics]]
name = "ratio"
formula = "revenue / 2"
table = "orders"

[[metrics]]
name = "east_revenue"
base = "revenue"

[[metrics]]
name = "growth"
base = "revenue"
compare = "previous_period"

[[metrics]]
name = "rolling"
base = "revenu"
time = "day"
window = "7 fortnights"

[[metrics]]
name = "nothing"
label = "no kind"
"#;
    let found = issues(&[("m.toml", &format!("{GOOD}{extra}"))]);
    let expected = [
        "m.toml:36:9: metric \"ratio\" is composite and does not take `table` (it takes `formula`, `fill_nulls_with`)",
        "m.toml:39:8: derived metric \"east_revenue\" needs a filter (the modifier that restricts its base metric)",
        "m.toml:43:8: metric \"growth\" needs `time`, the time dimension its periods are taken on",
        "m.toml:49:8: unknown metric \"revenu\"; did you mean \"revenue\"?",
        "m.toml:51:10: window must be month_to_date, quarter_to_date, year_to_date, week_to_date, day_to_date, all_time, period, or a trailing window such as \"24 hours\", \"7 days\", \"4 weeks\" or \"3 months\"",
        "m.toml:54:8: metric \"nothing\" needs `table` and `agg` (an atomic metric), `base` (derived, period-over-period or cumulative) or `formula` (composite)",
    ];
    for e in expected {
        assert!(found.iter().any(|f| f == e), "missing {e} in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn percentiles_take_a_fraction_and_no_running_window() {
    let extra = r#"
[[dimensions]]
name = "day"
table = "orders"
kind = "time"

[[metrics]]
name = "p90"
table = "orders"
agg = "percentile_cont"
percentile = 0.9
expr = "amount"

[[metrics]]
name = "no_fraction"
table = "orders"
agg = "percentile_disc"
expr = "amount"

[[metrics]]
name = "too_large"
table = "orders"
agg = "percentile_cont"
percentile = 90
expr = "amount"

[[metrics]]
name = "median_with_fraction"
table = "orders"
agg = "median"
percentile = 0.5
expr = "amount"

[[metrics]]
name = "p90_east"
base = "p90"
filter = "region = 'East'"

[[metrics]]
name = "p90_to_date"
base = "p90_east"
time = "day"
window = "month_to_date"
"#;
    let found = issues(&[("m.toml", &format!("{GOOD}{extra}"))]);
    let expected = [
        "m.toml:41:8: metric \"no_fraction\" needs `percentile`, the fraction of the ordered values (0.9 for the 90th percentile)",
        "m.toml:50:14: metric \"too_large\": `percentile` must be between 0 and 1, not 90",
        "m.toml:57:14: metric \"median_with_fraction\": `percentile` belongs to agg = \"percentile_cont\" or \"percentile_disc\"",
        "m.toml:67:8: metric \"p90_to_date\" accumulates \"p90\", a percentile: a running or to-date percentile needs every row of its window and is not supported (ask the percentile at the window's own grain)",
    ];
    for e in expected {
        assert!(found.iter().any(|f| f == e), "missing {e} in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[tokio::test]
async fn metric_definitions_are_bound_and_their_mistakes_reported_with_positions() {
    let dir = unreachable_model();
    let text = std::fs::read_to_string(dir.path().join("model.toml")).expect("read");
    let extra = r#"
[[metrics]]
name = "loop_a"
formula = "loop_b + 1"

[[metrics]]
name = "loop_b"
formula = "loop_a * 2"

[[metrics]]
name = "per_order"
formula = "revenue / ordrs"

[[metrics]]
name = "with_sum"
formula = "sum(revenue)"

[[dimensions]]
name = "day"
table = "orders"
expr = "CAST('2024-01-01' AS DATE)"
kind = "time"

[[metrics]]
name = "revenue_growth"
base = "revenue"
time = "day"
compare = "previous_period"

[[views]]
name = "no_time"
dimensions = ["region"]
metrics = ["revenue_growth"]

[[dimensions]]
name = "other_day"
table = "orders"
expr = "CAST('2024-01-01' AS DATE)"
kind = "time"

[[metrics]]
name = "revenue_ytd"
base = "revenue"
time = "day"
window = "year_to_date"

[[metrics]]
name = "revenue_ytd_yoy"
base = "revenue_ytd"
time = "day"
compare = "same_period_last_year"

[[metrics]]
name = "growth_of_growth"
base = "revenue_growth"
time = "day"
compare = "previous_period"

[[metrics]]
name = "ytd_on_another_day"
base = "revenue_ytd"
time = "other_day"
compare = "previous_period"
"#;
    write(dir.path(), "model.toml", &format!("{text}{extra}"));
    let err = Engine::open(
        dir.path(),
        Identity {
            database: "kpitables".into(),
            roles: vec![],
        },
    )
    .await
    .expect_err("bad metrics");
    let message = err.to_string();
    for expected in [
        "model.toml:46:8: metric \"loop_a\" is defined from itself: loop_a → loop_b → loop_a",
        "model.toml:55:11: formula of \"per_order\" names \"ordrs\", which is not a metric",
        "model.toml:59:11: \"sum(revenue)\": a formula combines metrics, which are already aggregated",
        "model.toml:76:12: view \"no_time\" offers metric \"revenue_growth\", which is computed per period of \"day\": add \"day\" to the view's dimensions",
        "model.toml:98:8: metric \"growth_of_growth\" is defined from \"revenue_growth\", which already depends on periods of time",
        "model.toml:104:8: metric \"ytd_on_another_day\" is defined from \"revenue_ytd\", which already depends on periods of time",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected} in {message}"
        );
    }
    // A comparison of a cumulative metric over its own time dimension is defined.
    assert!(!message.contains("\"revenue_ytd_yoy\""), "{message}");
    // A cycle is reported once, where it is first found.
    assert!(
        !message.contains("metric \"loop_b\" is defined from itself"),
        "{message}"
    );
}

#[tokio::test]
async fn balances_that_would_add_up_over_days_are_refused_where_defined() {
    let dir = unreachable_model();
    let text = std::fs::read_to_string(dir.path().join("model.toml")).expect("read");
    let extra = r#"
[[dimensions]]
name = "day"
table = "orders"
expr = "CAST('2024-01-01' AS DATE)"
kind = "time"

[[dimensions]]
name = "other_day"
table = "orders"
expr = "CAST('2024-01-01' AS DATE)"
kind = "time"

[[metrics]]
name = "balance"
table = "orders"
agg = "sum"
expr = "amount"
semi_additive = { time = "day", per = ["store_id"] }

[[metrics]]
name = "balance_running"
base = "balance"
time = "day"
window = "all_time"

[[metrics]]
name = "balance_on_another_day"
base = "balance"
time = "other_day"
compare = "previous_period"

[[metrics]]
name = "balance_last_month"
base = "balance"
time = "day"
compare = "previous_period"
show = "value"

[[metrics]]
name = "average_of_maxima"
table = "orders"
agg = "max"
expr = "amount"
semi_additive = { time = "day", at = "average" }

[[metrics]]
name = "misspelled"
table = "orders"
agg = "sum"
expr = "amount"
semi_additive = { time = "dya", at = "last" }
"#;
    write(dir.path(), "model.toml", &format!("{text}{extra}"));
    let err = Engine::open(
        dir.path(),
        Identity {
            database: "kpitables".into(),
            roles: vec![],
        },
    )
    .await
    .expect_err("bad balances");
    let message = err.to_string();
    for expected in [
        "metric \"balance_running\" accumulates \"balance\", a balance (semi-additive over time)",
        "metric \"balance_on_another_day\" compares on another time dimension \"balance\", a balance",
        "metric \"average_of_maxima\": a semi-additive average (at = \"average\") averages each day's sum; it needs agg = \"sum\"",
        "unknown time dimension \"dya\"; did you mean \"day\"?",
    ] {
        assert!(
            message.contains(expected),
            "missing {expected} in {message}"
        );
    }
    // The previous period's balance on its own time dimension is defined.
    assert!(!message.contains("\"balance_last_month\""), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dimension_reached_by_two_join_paths_is_an_ambiguous_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    write(
        &data,
        "lines.csv",
        "id,order_id,return_id,amount\n1,1,1,5\n",
    );
    write(&data, "orders.csv", "id,store_id\n1,1\n");
    write(&data, "returns.csv", "id,store_id\n1,2\n");
    write(&data, "stores.csv", "id,region\n1,East\n2,West\n");
    write(
        dir.path(),
        "model.toml",
        r#"
[[sources]]
name = "files"
kind = "files"
path = "data"

[[tables]]
name = "lines"
source = "files"
file = "lines.csv"
primary_key = "id"
joins = [{ to = "orders", foreign_key = "order_id" }, { to = "returns", foreign_key = "return_id" }]

[[tables]]
name = "orders"
source = "files"
file = "orders.csv"
primary_key = "id"
joins = [{ to = "stores", foreign_key = "store_id" }]

[[tables]]
name = "returns"
source = "files"
file = "returns.csv"
primary_key = "id"
joins = [{ to = "stores", foreign_key = "store_id" }]

[[tables]]
name = "stores"
source = "files"
file = "stores.csv"
primary_key = "id"

[[dimensions]]
name = "region"
table = "stores"

[[metrics]]
name = "amount"
table = "lines"
agg = "sum"
expr = "amount"

[[metrics]]
name = "amount_share"
formula = "amount / amount"

[[views]]
name = "v"
dimensions = ["region"]
metrics = ["amount_share"]
"#,
    );
    let message = tokio::task::block_in_place(|| open_error(dir.path()));
    assert!(
        message.contains(
            "model.toml:51:12: view \"v\": metric \"amount_share\" (table \"lines\") reaches dimension \"region\" (table \"stores\") by 2 different join paths of the same length"
        ),
        "{message}"
    );
}

#[test]
fn the_model_time_zone_must_be_a_zone_and_set_once() {
    let model = |zone: &str| format!("[model]\ntime_zone = \"{zone}\"\n");
    assert!(issues(&[("m.toml", GOOD), ("zone.toml", &model("Asia/Shanghai"))]).is_empty());
    assert_eq!(
        issues(&[("m.toml", GOOD), ("zone.toml", &model("Asia/Shangai"))]),
        vec![
            "zone.toml:2:13: unknown time zone \"Asia/Shangai\": use an IANA name such as \"Asia/Shanghai\" or \"UTC\""
        ]
    );
    assert_eq!(
        issues(&[
            ("m.toml", &format!("{GOOD}\n{}", model("UTC"))),
            ("zone.toml", &model("Europe/Berlin"))
        ]),
        vec![
            "zone.toml:2:13: the model's time_zone is set in more than one [model] section: keep one"
        ]
    );
}

fn run_check(dir: &Path, base: &str) -> (bool, String) {
    check(dir, &["--base", base])
}

/// `kpitables check <dir> <args>`: whether it succeeded, and what it printed.
fn check(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kpitables"))
        .arg("check")
        .arg(dir)
        .args(args)
        .output()
        .expect("run check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

#[test]
fn check_against_a_base_prints_the_changes_and_the_lineage_of_changed_metrics() {
    let repo = tempfile::tempdir().expect("tempdir");
    let model = repo.path().join("semantic");
    std::fs::create_dir(&model).expect("mkdir");
    write(&model, "model.toml", GOOD);
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "first"]);
    // The change under review: a new formula for revenue, a new metric offered by the view.
    let changed = GOOD
        .replace("expr = \"amount\"", "expr = \"amount - discount\"")
        .replace(
            "metrics = [\"revenue\"]",
            "metrics = [\"revenue\", \"avg_revenue\"]",
        )
        + "\n[[metrics]]\nname = \"avg_revenue\"\nformula = \"revenue / 2\"\n";
    write(&model, "model.toml", &changed);

    let (ok, out) = run_check(&model, "HEAD");
    assert!(ok, "{out}");
    let expected = [
        "metric revenue: changed",
        "  expr: \"amount\" -> \"amount - discount\"",
        "  lineage: from metrics -; columns orders.amount, orders.discount; tables orders; sources files",
        "  used by: metrics avg_revenue; views sales",
        "metric avg_revenue: added",
        "  lineage: from metrics revenue; columns orders.amount, orders.discount; tables orders; sources files",
        "view sales: changed",
        "  metrics: [revenue] -> [revenue, avg_revenue]",
    ];
    for line in expected {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    // The versions compared: the working tree (uncommitted) against the commit.
    let versions = out
        .lines()
        .find(|l| l.contains("against HEAD"))
        .unwrap_or_default();
    assert!(
        versions.contains("-dirty) against HEAD") && versions.contains(", git "),
        "{out}"
    );

    // The same against a directory holding the earlier version.
    let earlier = tempfile::tempdir().expect("tempdir");
    write(earlier.path(), "model.toml", GOOD);
    let (ok, out_dir) = run_check(&model, &earlier.path().display().to_string());
    assert!(ok, "{out_dir}");
    assert!(out_dir.contains("metric revenue: changed"), "{out_dir}");

    // No change: said so.
    let (ok, out) = run_check(earlier.path(), &earlier.path().display().to_string());
    assert!(ok && out.contains("no changes"), "{out}");

    // An invalid model under review fails, whatever the base.
    write(
        &model,
        "model.toml",
        &changed.replace("table = \"orders\"\nagg", "table = \"order\"\nagg"),
    );
    let (ok, out) = run_check(&model, "HEAD");
    assert!(!ok && out.contains("unknown table \"order\""), "{out}");

    // An unknown reference is a clear failure.
    write(&model, "model.toml", &changed);
    let out = Command::new(env!("CARGO_BIN_EXE_kpitables"))
        .arg("check")
        .arg(&model)
        .args(["--base", "no-such-ref"])
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("\"no-such-ref\" is neither a directory nor a git reference"),
        "{all}"
    );
}

#[test]
fn conversion_metrics_name_their_parts_and_take_a_length_of_time() {
    let extra = r#"
[[metrics]]
name = "buy_rate"
base = "revenue"
conversion = "revenu"
window = "month_to_date"
calculation = "conversions"
"#;
    let found = issues(&[("m.toml", &format!("{GOOD}{extra}"))]);
    let expected = [
        "unknown metric \"revenu\"; did you mean \"revenue\"?",
        "conversion metric \"buy_rate\" needs `entity`",
        "conversion metric \"buy_rate\" needs `time`",
        "a conversion window is a length of time such as \"7 days\"",
    ];
    for e in expected {
        assert!(found.iter().any(|i| i.contains(e)), "{e} in {found:#?}");
    }
    let wrong_key = r#"
[[metrics]]
name = "buy_rate"
base = "revenue"
conversion = "revenue"
entity = "region"
time = "region"
compare = "previous_period"
"#;
    let found = issues(&[("m.toml", &format!("{GOOD}{wrong_key}"))]);
    assert!(
        found
            .iter()
            .any(|i| i.contains("is a conversion metric and does not take `compare`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.contains("unknown time dimension \"region\"")),
        "{found:#?}"
    );
    // Constant properties name dimensions, and only a conversion metric has them.
    let properties = r#"
[[metrics]]
name = "buy_rate"
base = "revenue"
conversion = "revenue"
entity = "region"
time = "day"
constant_properties = [{ base = "regoin", conversion = "region" }]

[[metrics]]
name = "same_region_revenue"
base = "revenue"
filter = "region = 'East'"
constant_properties = [{ base = "region" }]
"#;
    let found = issues(&[("m.toml", &format!("{GOOD}{properties}"))]);
    assert!(
        found
            .iter()
            .any(|i| i.contains("unknown dimension \"regoin\"; did you mean \"region\"?")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.contains("does not take `constant_properties`")),
        "{found:#?}"
    );
}

#[test]
fn a_calendar_grain_is_a_dimension_of_the_calendar_and_a_compare_names_one() {
    let calendar = r#"
[[tables]]
name = "calendar"
source = "files"
file = "calendar.csv"
primary_key = "day"

[[tables]]
name = "days"
source = "files"
file = "days.csv"
primary_key = "day"

[[dimensions]]
name = "retail_month"
table = "calendar"

[[dimensions]]
name = "other_month"
table = "days"

[[dimensions]]
name = "day"
table = "orders"
kind = "time"
calendar = { table = "calendar", grains = ["retail_month"] }

[[dimensions]]
name = "ship_day"
table = "orders"
kind = "time"
calendar = { table = "calendar", grains = ["other_month"] }

[[metrics]]
name = "revenue_last_retail_month"
base = "revenue"
time = "day"
compare = "1 retail_month"

[[metrics]]
name = "revenue_last_fiscal_period"
base = "revenue"
time = "day"
compare = "1 fiscal_period"

[[metrics]]
name = "revenue_aligned"
base = "revenue"
time = "day"
compare = "aligned"
"#;
    // Found by `check` without the data (as `serve` finds them).
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "model.toml", &format!("{GOOD}{calendar}"));
    let (ok, stdout) = check(dir.path(), &[]);
    assert!(!ok, "{stdout}");
    for expected in [
        "calendar grain \"other_month\" is not a dimension of the calendar table \"calendar\"",
        "metric \"revenue_last_fiscal_period\" compares with earlier \"fiscal_period\" periods, and \"fiscal_period\" is no grain of time dimension \"day\"",
        "metric \"revenue_aligned\" compares with aligned days, and time dimension \"day\" has no calendar with aligned days",
    ] {
        assert!(stdout.contains(expected), "missing {expected} in {stdout}");
    }
    assert!(!stdout.contains("revenue_last_retail_month"), "{stdout}");
}
