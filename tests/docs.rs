//! The examples in `docs/model-reference.md` are a model that loads and binds to the
//! demo data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use kpitables::catalog::Identity;
use kpitables::engine::Engine;
use kpitables::model::load::{SourceTexts, load_texts};

fn toml_blocks(markdown: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside && line.trim() == "```toml";
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn model_reference_examples_form_a_valid_model() {
    let markdown =
        std::fs::read_to_string(common::root().join("docs/model-reference.md")).expect("read docs");
    let model = toml_blocks(&markdown);
    assert!(
        model.contains("[[views]]"),
        "the reference has examples of every section"
    );
    let texts = SourceTexts {
        files: vec![("model-reference.md".into(), model.clone())],
    };
    let loaded = load_texts(texts).expect("the examples load");
    assert_eq!(loaded.views.len(), 1);

    // And they bind to real data: point the example source at the demo data.
    common::ensure_demo_data();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = common::root().join("data/demo");
    let model = model.replace(
        "path = \"../../data/demo\"",
        &format!("path = \"{}\"", data.display()),
    );
    std::fs::write(dir.path().join("model.toml"), model).expect("write");
    let engine = Engine::open(
        dir.path(),
        Identity {
            database: "kpitables".into(),
            roles: vec![],
        },
    )
    .await
    .expect("the examples bind to the demo data");
    let view = &engine.semantics().views[0];
    assert!(view.column("price_band").is_some() && view.column("order_date__quarter").is_some());
    // One metric of every kind.
    for metric in [
        "returned_revenue",
        "revenue_per_order",
        "revenue_growth",
        "revenue_ytd",
        "east_and_north",
        "order_date__fiscal_year",
    ] {
        assert!(view.column(metric).is_some(), "{metric} is offered");
    }
}

/// The examples of `docs/alerts.md` are valid rules, channels and quality checks on the
/// demo model (in place of the demo's own alert rules).
#[test]
fn alerts_examples_are_valid_on_the_demo_model() {
    let root = common::root();
    let markdown = std::fs::read_to_string(root.join("docs/alerts.md")).expect("read docs");
    let mut files: Vec<(String, String)> = std::fs::read_dir(root.join("semantic/demo"))
        .expect("demo model")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && !p.ends_with("alerts.toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read model file");
            (p.display().to_string(), text)
        })
        .collect();
    files.sort();
    files.push(("alerts.md".into(), toml_blocks(&markdown)));
    let loaded = load_texts(SourceTexts { files }).expect("the examples load");
    assert_eq!(loaded.alerts.len(), 2);
    assert_eq!(loaded.channels.len(), 5);
    assert!(loaded.tables.iter().any(|t| t.quality.is_some()));
}
