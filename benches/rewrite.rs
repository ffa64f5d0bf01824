//! Parse + semantic rewrite + logical planning of typical metric queries (no execution),
//! and the cost of each stage of a statement with and without the plan cache.
//!
//! Run: `cargo bench --bench rewrite` (needs the demo data: `kpitables demo`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use kpitables::catalog::Identity;
use kpitables::engine::Engine;
use kpitables::session::Session;
use kpitables::sql::session_values::SessionFacts;

const QUERIES: &[(&str, &str)] = &[
    ("select_1", "SELECT 1"),
    ("total", "SELECT revenue FROM sales"),
    (
        "by_region",
        "SELECT region, revenue, orders FROM sales ORDER BY region",
    ),
    (
        "month_filter",
        "SELECT date_trunc('month', order_date) AS m, revenue, customers FROM sales \
         WHERE order_date >= '2024-01-01' AND channel = 'online' GROUP BY 1 ORDER BY 1",
    ),
    (
        "multi_fact",
        "SELECT channel, order_count, avg_order_value, revenue FROM order_summary",
    ),
    (
        "superset_virtual_dataset",
        "SELECT region AS region, SUM(customers) AS \"SUM(customers)\", MAX(revenue_per_order) AS m \
         FROM (SELECT * FROM sales) AS virtual_table GROUP BY region ORDER BY 2 DESC LIMIT 10000",
    ),
    (
        "rollup",
        "SELECT region, channel, customers, GROUPING(region, channel) FROM sales \
         GROUP BY ROLLUP (region, channel)",
    ),
    (
        "joined_views",
        "SELECT s.region, SUM(s.revenue), SUM(t.revenue_target) FROM sales s JOIN sales_targets t \
         ON s.region = t.region AND s.order_date__month = t.order_date__month GROUP BY s.region",
    ),
    (
        "bi_wrapper",
        "SELECT \"t\".\"region\", SUM(\"t\".\"revenue\") AS \"sum_revenue\" FROM \
         (SELECT region, revenue FROM sales WHERE revenue > 1000) \"t\" GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    ),
];

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("data/demo");
    if !kpitables::demo::is_complete(&data) {
        kpitables::demo::generate(&data, |_, _| {}).expect("generate demo data");
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let engine = runtime
        .block_on(Engine::open(
            &root.join("semantic/demo"),
            Identity {
                database: "kpitables".into(),
                roles: vec!["analyst".into()],
            },
        ))
        .expect("open demo model")
        .with_users(
            &kpitables::config::Config::load(None)
                .expect("demo configuration")
                .users,
        )
        .expect("demo users");
    let session = Session::new("analyst", 1, Default::default(), &[]);
    let facts = SessionFacts {
        session: &session,
        database: "kpitables",
        temp_tables: None,
    };
    let mut group = c.benchmark_group("parse_rewrite_plan");
    for (name, sql) in QUERIES {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let statement = kpitables::sql::parse(sql).expect("parse").remove(0);
                runtime
                    .block_on(engine.plan_uncached(statement, &facts))
                    .expect("plan")
            })
        });
    }
    group.finish();

    // What each stage of one statement costs, and what the plan cache spares: a hit
    // costs the parse and the lookup; every execution still builds a physical plan
    // (from the kept optimized plan when the statement has no parameters).
    let mut group = c.benchmark_group("stages");
    for (name, sql) in QUERIES.iter().filter(|(n, _)| STAGED.contains(n)) {
        let statement = kpitables::sql::parse(sql).expect("parse").remove(0);
        let plan = runtime
            .block_on(engine.plan_uncached(statement.clone(), &facts))
            .expect("plan");
        group.bench_function(format!("{name}/parse"), |b| {
            b.iter(|| kpitables::sql::parse(sql).expect("parse"))
        });
        group.bench_function(format!("{name}/rewrite_and_plan"), |b| {
            b.iter(|| {
                runtime
                    .block_on(engine.plan_uncached(statement.clone(), &facts))
                    .expect("plan")
            })
        });
        group.bench_function(format!("{name}/cache_hit"), |b| {
            b.iter(|| {
                runtime
                    .block_on(engine.plan(statement.clone(), &facts))
                    .expect("plan")
            })
        });
        group.bench_function(format!("{name}/optimize"), |b| {
            b.iter(|| engine.optimize(&plan).expect("optimize"))
        });
        group.bench_function(format!("{name}/physical_plan_from_kept"), |b| {
            b.iter(|| {
                runtime
                    .block_on(engine.physical_plan(&plan, Vec::new()))
                    .expect("physical plan")
            })
        });
    }
    group.finish();
}

/// The queries whose stages are measured one by one.
const STAGED: &[&str] = &[
    "by_region",
    "month_filter",
    "superset_virtual_dataset",
    "select_1",
];

criterion_group!(benches, bench);
criterion_main!(benches);
