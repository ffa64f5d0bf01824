//! Metric dimensions: a metric's value per row of a table (`customer_orders`: the orders
//! of each customer), filtered and grouped by like any dimension. Its relation is a
//! derived table of the metric grouped by the table's primary key, left-joined to the
//! table on it:
//! ```sql
//! LEFT JOIN (SELECT orders.customer_id AS __key, count(*) AS __value
//!            FROM orders WHERE <the reader's rows>
//!            GROUP BY orders.customer_id) AS __kp_md_customer_orders
//!        ON customers.customer_id = __kp_md_customer_orders.__key
//! ```
//! The metric counts every row the reader may see (the view's row filter), whatever the
//! query's own filters (MetricFlow's `Metric()` in a filter is computed the same way):
//! "customers with two or more orders" in June are those with two orders at any time.
//! A row of the table without any of the metric's rows has NULL.

use std::collections::BTreeSet;

use super::{DerivedSpec, InnerExpr, from_clause, quote};
use crate::bind::{METRIC_DIMENSION_KEY, METRIC_DIMENSION_VALUE, Semantics};
use crate::error::{Error, Result};
use crate::model::METRIC_DIMENSION_PREFIX;

/// The dimension whose relation `relation` is, when it is a metric dimension's.
pub(super) fn dimension_of(relation: &str) -> Option<&str> {
    relation.strip_prefix(METRIC_DIMENSION_PREFIX)
}

/// ` LEFT JOIN (<the metric per key of the dimension's table>) AS <relation> ON <key>`
/// for metric dimension `dimension` (whose table the FROM clause has joined already).
pub(super) fn join(
    dimension: &str,
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
) -> Result<String> {
    let dim = semantics.dimension(dimension)?;
    let metric_name = dim
        .metric
        .as_deref()
        .ok_or_else(|| Error::Internal(format!("dimension {dimension} is not a metric")))?;
    let def = semantics
        .metrics
        .get(metric_name)
        .and_then(|m| m.aggregate())
        .ok_or_else(|| {
            Error::Internal(format!(
                "metric {metric_name} of {dimension} is not an aggregate"
            ))
        })?;
    let table = semantics
        .model
        .table(&dim.table)
        .ok_or_else(|| Error::Internal(format!("table {} is not in the model", dim.table)))?;
    let key = format!(
        "{}.{}",
        quote(&dim.table),
        quote(table.primary_key.get_ref())
    );
    // The metric's rows are grouped by the key of the table's row they reach: the
    // foreign key of the last join when it joins on the table's primary key (the table
    // itself is then not read), else the table's key through the joins.
    let last_join = semantics
        .model
        .join_path(&def.table, &dim.table)
        .and_then(|path| path.last().copied())
        .filter(|(_, join)| {
            join.key
                .as_ref()
                .is_none_or(|k| k.get_ref() == table.primary_key.get_ref())
        });
    let mut needed: BTreeSet<String> = def.tables.clone();
    let inner_key = match last_join {
        Some((from, join)) => {
            needed.insert(from.name.get_ref().clone());
            format!(
                "{}.{}",
                quote(from.name.get_ref()),
                quote(join.foreign_key.get_ref())
            )
        }
        None => {
            needed.insert(dim.table.clone());
            key.clone()
        }
    };
    // The reader's rows: the view's row filter, over the metric's rows.
    let rows = spec
        .view
        .row_filter
        .as_ref()
        .map(|filter| {
            InnerExpr::translate(
                filter,
                spec.view,
                semantics,
                spec.time_zone,
                None,
                Some(&def.table),
            )
        })
        .transpose()?;
    if let Some(rows) = &rows {
        needed.extend(rows.tables.iter().cloned());
    }
    let from = from_clause(&def.table, &needed, spec, &[metric_name], semantics)?;
    let mut sql = format!(
        "SELECT {inner_key} AS {}, {} AS {} FROM {from}",
        quote(METRIC_DIMENSION_KEY),
        def.sql(),
        quote(METRIC_DIMENSION_VALUE)
    );
    if let Some(rows) = &rows {
        sql.push_str(&format!(" WHERE ({})", rows.expr));
    }
    sql.push_str(&format!(" GROUP BY {inner_key}"));
    let relation = quote(&crate::model::metric_dimension_relation(dimension));
    Ok(format!(
        " LEFT JOIN ({sql}) AS {relation} ON {key} = {relation}.{}",
        quote(METRIC_DIMENSION_KEY)
    ))
}
