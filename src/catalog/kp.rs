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

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::TableType;
use datafusion::physical_plan::ExecutionPlan;

use super::CatalogTable;
use super::tables::{null, tv};
use crate::bind::{ColumnKind, Semantics};
use crate::model::history::History;

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

pub(super) fn text_array() -> DataType {
    DataType::List(std::sync::Arc::new(Field::new_list_field(
        DataType::Utf8,
        true,
    )))
}

pub(super) fn texts<'a>(values: impl IntoIterator<Item = &'a str>) -> ScalarValue {
    let values: Vec<ScalarValue> = values.into_iter().map(tv).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Utf8))
}

fn bv(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}

pub(super) fn or_null(value: &str) -> ScalarValue {
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
        .filter(|m| !semantics.denied_metrics.contains_key(m.name.get_ref()))
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
        let masked = semantics.masked_dimensions.contains(name);
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

/// A catalog table whose rows are computed each time it is read (the model's history,
/// which changes while the server runs).
pub struct LiveTable {
    schema: SchemaRef,
    rows: Box<dyn Fn() -> crate::error::Result<RecordBatch> + Send + Sync>,
}

impl std::fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTable")
            .field("schema", &self.schema)
            .finish()
    }
}

impl LiveTable {
    /// A table of the columns of `empty` whose rows `fill` writes at each scan.
    pub(crate) fn new(
        empty: CatalogTable,
        fill: impl Fn(&mut CatalogTable) + Send + Sync + 'static,
    ) -> crate::error::Result<LiveTable> {
        let schema = empty.to_batch()?.schema();
        Ok(LiveTable {
            schema,
            rows: Box::new(move || {
                let mut table = CatalogTable::new(empty.schema, empty.name, empty.columns.clone());
                fill(&mut table);
                table.to_batch()
            }),
        })
    }
}

#[async_trait::async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::View
    }
    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batch =
            (self.rows)().map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

pub(super) fn at(time: &chrono::DateTime<chrono::Utc>) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(time.timestamp_micros()), Some("UTC".into()))
}

pub(super) fn timestamptz() -> DataType {
    DataType::Timestamp(
        datafusion::arrow::datatypes::TimeUnit::Microsecond,
        Some("UTC".into()),
    )
}

/// `kp.changes` and `kp.model_errors` over `history`, as the reader of `semantics` may
/// see them: changes of metrics and views it may not see are left out, and access rules'
/// changes are shown only to a reader who is denied nothing.
pub fn history_tables(
    history: Arc<History>,
    semantics: &Semantics,
) -> crate::error::Result<Vec<(&'static str, Arc<dyn TableProvider>)>> {
    let hidden_metrics: BTreeSet<String> = semantics.denied_metrics.keys().cloned().collect();
    let hidden_views: BTreeSet<String> = semantics.denied_views.keys().cloned().collect();
    let sees_rules = hidden_metrics.is_empty() && hidden_views.is_empty();
    let changes = CatalogTable::new(
        SCHEMA,
        "changes",
        vec![
            ("changed_at", timestamptz()),
            ("version", T),
            ("previous_version", T),
            ("git_commit", T),
            ("author", T),
            ("kind", T),
            ("name", T),
            ("change", T),
            ("fields", T),
        ],
    );
    let of_changes = Arc::clone(&history);
    let changes = LiveTable::new(changes, move |t| {
        for c in of_changes.changes() {
            let hidden = match c.kind.as_str() {
                "metric" => hidden_metrics.contains(&c.name),
                "view" => hidden_views.contains(&c.name),
                "access rule" => !sees_rules,
                _ => false,
            };
            if hidden {
                continue;
            }
            t.rows.push(vec![
                at(&c.version.loaded_at),
                tv(&c.version.id),
                tv(&c.previous),
                c.version.git_commit.as_deref().map(tv).unwrap_or_else(null),
                c.version.author.as_deref().map(tv).unwrap_or_else(null),
                tv(&c.kind),
                tv(&c.name),
                tv(&c.change),
                or_null(&c.fields),
            ]);
        }
    })?;
    let errors = CatalogTable::new(
        SCHEMA,
        "model_errors",
        vec![
            ("failed_at", timestamptz()),
            ("version", T),
            ("file", T),
            ("line", DataType::Int64),
            ("column", DataType::Int64),
            ("reason", T),
        ],
    );
    let errors = LiveTable::new(errors, move |t| {
        if let Some(failed) = history.failed() {
            for issue in &failed.issues {
                t.rows.push(vec![
                    at(&failed.at),
                    tv(&failed.version),
                    tv(&issue.file),
                    ScalarValue::Int64(i64::try_from(issue.line).ok()),
                    ScalarValue::Int64(i64::try_from(issue.column).ok()),
                    tv(&issue.reason),
                ]);
            }
        }
    })?;
    Ok(vec![
        ("changes", Arc::new(changes) as Arc<dyn TableProvider>),
        ("model_errors", Arc::new(errors)),
    ])
}

/// `kp.audit`: the latest audited statements (registered only for readers allowed to
/// read it).
pub fn audit_table(
    audit: Arc<crate::audit::Audit>,
) -> crate::error::Result<Arc<dyn TableProvider>> {
    let empty = CatalogTable::new(
        SCHEMA,
        "audit",
        vec![
            ("at", timestamptz()),
            ("user_name", T),
            ("application", T),
            ("views", text_array()),
            ("metrics", text_array()),
            ("dimensions", text_array()),
            ("filters", text_array()),
            ("rows", DataType::Int64),
            ("duration_ms", DataType::Int64),
            ("pushed_sql", T),
            ("outcome", T),
            ("sqlstate", T),
            ("message", T),
        ],
    );
    let table = LiveTable::new(empty, move |t| {
        for r in audit.recent() {
            let pushed: Vec<String> = r
                .pushed
                .iter()
                .map(|(source, sql)| format!("{source}: {sql}"))
                .collect();
            t.rows.push(vec![
                at(&r.time),
                tv(&r.user),
                or_null(&r.application),
                texts(r.views.iter().map(String::as_str)),
                texts(r.metrics.iter().map(String::as_str)),
                texts(r.dimensions.iter().map(String::as_str)),
                texts(r.filters.iter().map(String::as_str)),
                ScalarValue::Int64(r.rows.and_then(|n| i64::try_from(n).ok())),
                ScalarValue::Int64(i64::try_from(r.duration_ms).ok()),
                or_null(&pushed.join("\n")),
                tv(r.outcome),
                r.sqlstate.as_deref().map(tv).unwrap_or_else(null),
                r.message.as_deref().map(tv).unwrap_or_else(null),
            ]);
        }
    })?;
    Ok(Arc::new(table))
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
