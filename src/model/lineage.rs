//! Lineage (溯源) from the model alone: what a metric is computed from (metrics, columns,
//! tables, sources) and what depends on it (metrics, views). Used by the `kp.lineage`
//! catalog and by `kpitables check --base`, which shows it for every changed metric.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, visit_expressions};

use super::Model;

/// Where a metric comes from and what uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Metrics it is computed from, transitively.
    pub metrics: BTreeSet<String>,
    /// Columns read, as `table.column`.
    pub columns: BTreeSet<String>,
    /// Tables read.
    pub tables: BTreeSet<String>,
    /// Sources those tables are in.
    pub sources: BTreeSet<String>,
    /// Metrics computed from it, transitively.
    pub used_by: BTreeSet<String>,
    /// Views offering it or a metric computed from it.
    pub views: BTreeSet<String>,
}

/// Identifiers (plain or qualified, joined with `.`) in an SQL expression text.
fn identifiers(text: &str) -> Vec<String> {
    let Ok(expr) = super::parse_expr(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = visit_expressions(&expr, |e| {
        match e {
            Expr::Identifier(i) => out.push(i.value.clone()),
            Expr::CompoundIdentifier(parts) => out.push(
                parts
                    .iter()
                    .map(|p| p.value.as_str())
                    .collect::<Vec<_>>()
                    .join("."),
            ),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

/// The metrics `name` is defined from directly (its base, the metrics its formula names).
pub fn direct_dependencies(model: &Model, name: &str) -> BTreeSet<String> {
    let Some(metric) = model.metrics.iter().find(|m| m.name.get_ref() == name) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    if let Some(base) = &metric.base {
        out.insert(base.get_ref().clone());
    }
    if let Some(formula) = &metric.formula {
        out.extend(
            identifiers(formula.get_ref())
                .into_iter()
                .filter(|i| model.metrics.iter().any(|m| m.name.get_ref() == i)),
        );
    }
    // A metric dimension in its filter: the metric it is (customer_orders >= 30).
    if let Some(filter) = &metric.filter {
        out.extend(identifiers(filter.get_ref()).into_iter().filter_map(|i| {
            model
                .dimensions
                .iter()
                .find(|d| *d.name.get_ref() == i)
                .and_then(|d| d.metric.as_ref())
                .map(|m| m.get_ref().clone())
        }));
    }
    out
}

/// The lineage of metric `name`.
pub fn of(model: &Model, name: &str) -> Lineage {
    let mut lineage = Lineage {
        metrics: of_upstream(model, name),
        ..Lineage::default()
    };
    for m in lineage.metrics.iter().map(String::as_str).chain([name]) {
        let Some(metric) = model.metrics.iter().find(|x| x.name.get_ref() == m) else {
            continue;
        };
        let Some(table) = fact_table(model, m) else {
            continue;
        };
        lineage.tables.insert(table.clone());
        for text in metric.expr.iter().chain(&metric.filter) {
            for id in identifiers(text.get_ref()) {
                let column = match model.dimensions.iter().find(|d| *d.name.get_ref() == id) {
                    // A metric dimension: its metric is upstream.
                    Some(d) if d.metric.is_some() => continue,
                    // A dimension name in a filter: its own column, if it is one.
                    Some(d) => match &d.expr {
                        None => format!("{}.{}", d.table.get_ref(), id),
                        Some(e) if super::is_plain_identifier(e.get_ref()) => {
                            format!("{}.{}", d.table.get_ref(), e.get_ref())
                        }
                        Some(_) => continue,
                    },
                    None if id.contains('.') => id,
                    None => format!("{table}.{id}"),
                };
                if let Some((t, _)) = column.split_once('.') {
                    lineage.tables.insert(t.to_string());
                }
                lineage.columns.insert(column);
            }
        }
    }
    lineage.sources = lineage
        .tables
        .iter()
        .filter_map(|t| model.tables.iter().find(|x| x.name.get_ref() == t))
        .map(|t| t.source.get_ref().clone())
        .collect();
    lineage.used_by = model
        .metrics
        .iter()
        .map(|m| m.name.get_ref())
        .filter(|m| *m != name && of_upstream(model, m).contains(name))
        .cloned()
        .collect();
    lineage.views = model
        .views
        .iter()
        .filter(|v| {
            v.metrics
                .iter()
                .any(|m| m.get_ref() == name || lineage.used_by.contains(m.get_ref()))
        })
        .map(|v| v.name.get_ref().clone())
        .collect();
    lineage
}

/// The table an atomic metric aggregates, or the one its base (derived metric) does.
fn fact_table(model: &Model, name: &str) -> Option<String> {
    let mut current = name.to_string();
    for _ in 0..=model.metrics.len() {
        let metric = model
            .metrics
            .iter()
            .find(|m| *m.name.get_ref() == current)?;
        if let Some(table) = &metric.table {
            return Some(table.get_ref().clone());
        }
        if metric.formula.is_some() {
            return None;
        }
        current = metric.base.as_ref()?.get_ref().clone();
    }
    None
}

/// The metrics `name` is computed from, transitively.
fn of_upstream(model: &Model, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending: Vec<String> = direct_dependencies(model, name).into_iter().collect();
    while let Some(m) = pending.pop() {
        if m != name && seen.insert(m.clone()) {
            pending.extend(direct_dependencies(model, &m));
        }
    }
    seen
}
