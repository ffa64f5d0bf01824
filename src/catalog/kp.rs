//! The `kp` schema: the metrics center's own catalog over the same wire, built from the
//! model as the reading user may see it (denied metrics and views are absent).
//!
//! - `kp.metrics`: every metric with its definition and governance metadata;
//! - `kp.dimensions`, `kp.views`;
//! - `kp.lineage` (溯源): for every metric, the metrics, columns, tables and sources it
//!   comes from (`upstream`), and the metrics and views that use it (`downstream`), from
//!   [`crate::model::lineage`].

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;

use super::CatalogTable;
use super::tables::{null, tv};
use crate::bind::{ColumnKind, Semantics};

use DataType::{Boolean as B, Utf8 as T};

/// The schema's name.
pub const SCHEMA: &str = "kp";

/// The tables whose rows are read when queried (registered per reader by the engine).
pub const LIVE_TABLES: [&str; 6] = [
    "changes",
    "model_errors",
    "audit",
    "alerts",
    "alert_events",
    "quality",
];

/// The type of a `text[]` column.
pub fn text_array() -> DataType {
    DataType::List(std::sync::Arc::new(Field::new_list_field(
        DataType::Utf8,
        true,
    )))
}

/// A `text[]` value.
pub fn texts<'a>(values: impl IntoIterator<Item = &'a str>) -> ScalarValue {
    let values: Vec<ScalarValue> = values.into_iter().map(tv).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Utf8))
}

fn bv(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}

/// A text value, NULL when empty.
pub fn or_null(value: &str) -> ScalarValue {
    if value.is_empty() { null() } else { tv(value) }
}

/// Every `kp` table for `semantics` (as restricted for the reader).
pub fn all(semantics: &Semantics) -> Vec<CatalogTable> {
    vec![
        metrics(semantics),
        dimensions(semantics),
        views(semantics),
        lineage(semantics),
    ]
}

/// The metrics the reader may query, by name.
fn visible_metrics(semantics: &Semantics) -> BTreeMap<&str, &crate::model::Metric> {
    semantics
        .model
        .metrics
        .iter()
        .filter(|m| {
            !semantics
                .access
                .denied_metrics
                .contains_key(m.name.get_ref())
        })
        .map(|m| (m.name.get_ref().as_str(), m))
        .collect()
}

/// A short, stable hash of a metric's definition: it changes exactly when what the metric
/// computes or how it is governed changes (FNV-1a, 48 bits, hex).
pub fn definition_version(parts: &[&str]) -> String {
    let hash = crate::model::diff::content_hash(parts.iter().copied());
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

fn metrics(semantics: &Semantics) -> CatalogTable {
    let mut t = CatalogTable::new(
        SCHEMA,
        "metrics",
        vec![
            ("name", T),
            ("label", T),
            ("description", T),
            ("kind", T),
            ("formula", T),
            ("owner", T),
            ("domain", T),
            ("status", T),
            ("replaced_by", T),
            ("version", T),
            ("tags", text_array()),
            ("unit", T),
            ("sensitive", B),
        ],
    );
    for (name, metric) in visible_metrics(semantics) {
        let Some(bound) = semantics.metrics.get(name) else {
            continue;
        };
        let formula = bound.definition_text();
        let replaced_by = metric
            .replaced_by
            .as_ref()
            .map(|r| r.get_ref().as_str())
            .unwrap_or_default();
        let version = definition_version(&[
            name,
            bound.kind.as_str(),
            &formula,
            metric.status.as_str(),
            &metric.owner,
            &metric.description,
        ]);
        t.rows.push(vec![
            tv(name),
            or_null(&metric.label),
            or_null(&metric.description),
            tv(bound.kind.as_str()),
            tv(formula),
            or_null(&metric.owner),
            or_null(&metric.domain),
            tv(metric.status.as_str()),
            or_null(replaced_by),
            tv(version),
            texts(metric.tags.iter().map(String::as_str)),
            or_null(&metric.unit),
            bv(metric.sensitive),
        ]);
    }
    t
}

fn dimensions(semantics: &Semantics) -> CatalogTable {
    let mut t = CatalogTable::new(
        SCHEMA,
        "dimensions",
        vec![
            ("name", T),
            ("label", T),
            ("description", T),
            ("kind", T),
            ("table_name", T),
            ("expression", T),
            ("masked", B),
        ],
    );
    for dimension in &semantics.model.dimensions {
        let name = dimension.name.get_ref();
        let expression = dimension
            .expr
            .as_ref()
            .map(|e| e.get_ref().clone())
            .unwrap_or_else(|| name.clone());
        let kind = match dimension.kind {
            crate::model::DimensionKind::Time => "time",
            crate::model::DimensionKind::Categorical => "categorical",
        };
        let masked = semantics.access.masked_dimensions.contains(name);
        t.rows.push(vec![
            tv(name),
            or_null(&dimension.label),
            or_null(&dimension.description),
            tv(kind),
            tv(dimension.table.get_ref()),
            tv(expression),
            bv(masked),
        ]);
    }
    t
}

fn views(semantics: &Semantics) -> CatalogTable {
    let mut t = CatalogTable::new(
        SCHEMA,
        "views",
        vec![
            ("name", T),
            ("label", T),
            ("description", T),
            ("dimensions", text_array()),
            ("metrics", text_array()),
            ("segments", text_array()),
            ("row_filter", T),
        ],
    );
    for view in &semantics.views {
        let model_view = semantics.model.view(&view.name);
        let of = |pick: fn(&ColumnKind) -> bool| {
            texts(
                view.columns
                    .iter()
                    .filter(|c| pick(&c.kind))
                    .map(|c| c.name.as_str()),
            )
        };
        t.rows.push(vec![
            tv(&view.name),
            or_null(model_view.map(|v| v.label.as_str()).unwrap_or_default()),
            or_null(
                model_view
                    .map(|v| v.description.as_str())
                    .unwrap_or_default(),
            ),
            of(|k| matches!(k, ColumnKind::Dimension(_))),
            of(|k| matches!(k, ColumnKind::Metric(_))),
            of(|k| matches!(k, ColumnKind::Segment(_))),
            view.row_filter
                .as_ref()
                .map(|f| tv(f.to_string()))
                .unwrap_or_else(null),
        ]);
    }
    t
}

fn lineage(semantics: &Semantics) -> CatalogTable {
    let mut t = CatalogTable::new(
        SCHEMA,
        "lineage",
        vec![("metric", T), ("direction", T), ("kind", T), ("name", T)],
    );
    let visible = visible_metrics(semantics);
    let views: BTreeSet<&str> = semantics.views.iter().map(|v| v.name.as_str()).collect();
    for metric in visible.keys() {
        let l = crate::model::lineage::of(&semantics.model, metric);
        let rows = [
            ("upstream", "metric", &l.metrics),
            ("upstream", "column", &l.columns),
            ("upstream", "table", &l.tables),
            ("upstream", "source", &l.sources),
            ("downstream", "metric", &l.used_by),
            ("downstream", "view", &l.views),
        ];
        for (direction, kind, names) in rows {
            for name in names {
                // Downstream, only what the reader may see.
                let shown = direction == "upstream"
                    || (kind == "metric" && visible.contains_key(name.as_str()))
                    || (kind == "view" && views.contains(name.as_str()));
                if shown {
                    t.rows
                        .push(vec![tv(*metric), tv(direction), tv(kind), tv(name)]);
                }
            }
        }
    }
    t
}

/// A `timestamptz` value.
pub fn at(time: &chrono::DateTime<chrono::Utc>) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(time.timestamp_micros()), Some("UTC".into()))
}

/// The type of a `timestamptz` column.
pub fn timestamptz() -> DataType {
    DataType::Timestamp(
        datafusion::arrow::datatypes::TimeUnit::Microsecond,
        Some("UTC".into()),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_stable_and_change_with_any_part() {
        let a = super::definition_version(&["revenue", "sum(x)"]);
        assert_eq!(a, super::definition_version(&["revenue", "sum(x)"]));
        assert_ne!(a, super::definition_version(&["revenue", "sum(y)"]));
        assert_ne!(a, super::definition_version(&["revenu", "esum(x)"]));
        assert_eq!(a.len(), 12);
    }
}
