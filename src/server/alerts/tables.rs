//! `kp.alerts` (each rule with the state of each instance), `kp.alert_events` (each
//! evaluation, transition and delivery attempt) and `kp.quality` (the latest result of
//! each data quality check), as the reader may see them: only the
//! rules [`crate::server::alerts::visible_in`] shows the reader, so a reader without the metric
//! sees no rule on it, and a reader with a row filter sees only the rules run as them.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;

use crate::bind::Semantics;
use crate::catalog::kp::{SCHEMA, at, or_null, text_array, texts, timestamptz};
use crate::catalog::live::{Live, LiveSource, LiveTable, Reader};
use crate::catalog::{CatalogTable, Identity, null, tv};
use crate::server::alerts::Alerts;
use crate::server::alerts::evaluate::Rule;

/// `kp.alerts`, `kp.alert_events` and `kp.quality` over the alerts' state.
pub struct AlertTables(pub Arc<Alerts>);

impl LiveSource for AlertTables {
    fn tables(
        &self,
        restricted: &Semantics,
        reader: &Reader,
        _: &Identity,
    ) -> crate::error::Result<Vec<Live>> {
        let tables = tables(Arc::clone(&self.0), restricted, &reader.user)?;
        Ok(tables.into_iter().map(|(n, t)| (SCHEMA, n, t)).collect())
    }
}

use DataType::{Float64 as F, Utf8 as T};

fn float(v: Option<f64>) -> ScalarValue {
    ScalarValue::Float64(v)
}

fn when(t: Option<&chrono::DateTime<chrono::Utc>>) -> ScalarValue {
    t.map(at)
        .unwrap_or(ScalarValue::TimestampMicrosecond(None, Some("UTC".into())))
}

/// `kp.alerts`, `kp.alert_events` and `kp.quality` for `reader` (whose model is
/// `semantics`); `kp.quality` shows the tables the reader's metrics read.
fn tables(
    alerts: Arc<Alerts>,
    semantics: &Semantics,
    reader: &str,
) -> crate::error::Result<Vec<(&'static str, Arc<dyn TableProvider>)>> {
    let rules: BTreeMap<String, Rule> = semantics
        .model
        .alerts
        .iter()
        .filter_map(|r| Rule::compile(r, semantics).ok())
        .filter(|r| crate::server::alerts::visible_in(semantics, reader, r))
        .map(|r| (r.name.clone(), r))
        .collect();
    let rules = Arc::new(rules);
    let empty = CatalogTable::new(
        SCHEMA,
        "alerts",
        vec![
            ("rule", T),
            ("description", T),
            ("metric", T),
            ("view", T),
            ("by", text_array()),
            ("condition", T),
            ("threshold", F),
            ("severity", T),
            ("schedule", T),
            ("run_as", T),
            ("channels", text_array()),
            ("instance", T),
            ("state", T),
            ("since", timestamptz()),
            ("value", F),
            ("evaluated_at", timestamptz()),
            ("notified_at", timestamptz()),
        ],
    );
    let of_rules = Arc::clone(&rules);
    let of_alerts = Arc::clone(&alerts);
    let alerts_table = LiveTable::new(empty, move |t| {
        let instances = of_alerts.instances();
        for rule in of_rules.values() {
            let head = vec![
                tv(&rule.name),
                or_null(&rule.description),
                tv(&rule.metric),
                tv(&rule.view),
                texts(rule.by.iter().map(String::as_str)),
                tv(crate::server::alerts::message::describe(rule)),
                float(rule.threshold()),
                tv(rule.severity.name()),
                tv(&rule.schedule_text),
                tv(&rule.run_as),
                texts(rule.channels.iter().map(String::as_str)),
            ];
            let mut any = false;
            for (_, key, instance) in instances.iter().filter(|(r, _, _)| r == &rule.name) {
                any = true;
                let mut row = head.clone();
                row.extend([
                    tv(key),
                    tv(instance.status.name()),
                    when(instance.since.as_ref()),
                    float(instance.value),
                    when(instance.evaluated_at.as_ref()),
                    when(instance.notified_at.as_ref()),
                ]);
                t.rows.push(row);
            }
            if !any {
                let mut row = head;
                row.extend([
                    null(),
                    null(),
                    when(None),
                    float(None),
                    when(None),
                    when(None),
                ]);
                t.rows.push(row);
            }
        }
    })?;
    let empty = CatalogTable::new(
        SCHEMA,
        "alert_events",
        vec![
            ("at", timestamptz()),
            ("rule", T),
            ("kind", T),
            ("instance", T),
            ("period", T),
            ("value", F),
            ("comparison_value", F),
            ("measure", F),
            ("outcome", T),
            ("from_state", T),
            ("channel", T),
            ("attempt", DataType::Int64),
            ("detail", T),
        ],
    );
    let of_alerts = Arc::clone(&alerts);
    let events_table = LiveTable::new(empty, move |t| {
        for e in of_alerts.events() {
            if !rules.contains_key(&e.rule) {
                continue;
            }
            t.rows.push(vec![
                at(&e.at),
                tv(&e.rule),
                tv(e.kind),
                tv(&e.instance),
                e.period.as_deref().map(tv).unwrap_or_else(null),
                float(e.value),
                float(e.comparison),
                float(e.measure),
                tv(&e.outcome),
                e.from_state.as_deref().map(tv).unwrap_or_else(null),
                e.channel.as_deref().map(tv).unwrap_or_else(null),
                ScalarValue::Int64(e.attempt.map(i64::from)),
                e.detail.as_deref().map(tv).unwrap_or_else(null),
            ]);
        }
    })?;
    let tables: std::collections::BTreeSet<String> = semantics
        .metrics
        .keys()
        .filter(|m| !semantics.access.denied_metrics.contains_key(*m))
        .flat_map(|m| crate::model::lineage::of(&semantics.model, m).tables)
        .collect();
    let empty = CatalogTable::new(
        SCHEMA,
        "quality",
        vec![
            ("table_name", T),
            ("check_name", T),
            ("status", T),
            ("value", T),
            ("allowed", T),
            ("checked_at", timestamptz()),
        ],
    );
    let quality_table = LiveTable::new(empty, move |t| {
        for c in alerts.quality() {
            if !tables.contains(&c.table) {
                continue;
            }
            t.rows.push(vec![
                tv(&c.table),
                tv(&c.check),
                tv(c.status.as_str()),
                tv(&c.value),
                tv(&c.threshold),
                at(&c.checked_at),
            ]);
        }
    })?;
    Ok(vec![
        ("alerts", Arc::new(alerts_table) as Arc<dyn TableProvider>),
        ("alert_events", Arc::new(events_table)),
        ("quality", Arc::new(quality_table)),
    ])
}
