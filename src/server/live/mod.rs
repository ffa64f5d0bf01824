//! The server's state as live catalog tables ([`LiveSource`]): the model's history
//! (`kp.changes`, `kp.model_errors`), the audit trail (`kp.audit`, for readers allowed
//! to read it) and the sessions (`pg_stat_activity`, `pg_cancel_backend`,
//! `pg_terminate_backend`: [`activity`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;

use crate::bind::Semantics;
use crate::catalog::kp::{SCHEMA, at, or_null, text_array, texts, timestamptz};
use crate::catalog::live::{Live, LiveSource, LiveTable, Reader};
use crate::catalog::{CatalogTable, Identity, null, tv};
use crate::server::audit::Audit;
use crate::server::history::History;

use DataType::Utf8 as T;

pub mod activity;

/// `kp.changes` and `kp.model_errors` over the served model's history.
pub struct HistoryTables(pub Arc<History>);

impl LiveSource for HistoryTables {
    fn tables(
        &self,
        restricted: &Semantics,
        _: &Reader,
        _: &Identity,
    ) -> crate::error::Result<Vec<Live>> {
        let tables = history_tables(Arc::clone(&self.0), restricted)?;
        Ok(tables.into_iter().map(|(n, t)| (SCHEMA, n, t)).collect())
    }
}

/// `kp.audit` over the audit trail, for the readers whose rules allow it.
pub struct AuditTable(pub Arc<Audit>);

impl LiveSource for AuditTable {
    fn tables(
        &self,
        restricted: &Semantics,
        _: &Reader,
        _: &Identity,
    ) -> crate::error::Result<Vec<Live>> {
        if !restricted.access.may_read_audit {
            return Ok(Vec::new());
        }
        Ok(vec![(SCHEMA, "audit", audit_table(Arc::clone(&self.0))?)])
    }
}

/// `kp.changes` and `kp.model_errors` over `history`, as the reader of `semantics` may
/// see them: changes of metrics and views it may not see are left out, and access rules'
/// changes are shown only to a reader who is denied nothing.
fn history_tables(
    history: Arc<History>,
    semantics: &Semantics,
) -> crate::error::Result<Vec<(&'static str, Arc<dyn TableProvider>)>> {
    let hidden_metrics: BTreeSet<String> =
        semantics.access.denied_metrics.keys().cloned().collect();
    let hidden_views: BTreeSet<String> = semantics.access.denied_views.keys().cloned().collect();
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
fn audit_table(audit: Arc<Audit>) -> crate::error::Result<Arc<dyn TableProvider>> {
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
