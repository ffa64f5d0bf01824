//! The part of a derived table that counts the view's rows (`COUNT(*)`): the distinct
//! combinations of the view's dimensions within each group of the grain.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use datafusion::sql::sqlparser::ast::Expr;

use super::{DerivedSpec, VIEW_ROWS, base_table, from_clause, write_filters};
use crate::bind::Semantics;
use crate::error::Result;

/// The arguments of a [`VIEW_ROWS`] marker, as SQL.
pub(super) fn view_rows_arguments(expr: &Expr) -> Option<Vec<String>> {
    use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let Expr::Function(f) = expr else {
        return None;
    };
    if f.name.to_string() != VIEW_ROWS {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.to_string()),
            _ => None,
        })
        .collect()
}

/// `SELECT <grain>, count(*) AS __a<k> FROM (SELECT <grain> FROM <rows> WHERE <filters>
/// GROUP BY <grain>, <arguments>) GROUP BY <grain>`: the distinct combinations of the
/// arguments in each group.
pub(super) fn row_count_part(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    k: usize,
    arguments: &[String],
) -> Result<String> {
    let needed: BTreeSet<String> = spec
        .grain
        .iter()
        .chain(&spec.filters)
        .chain(spec.aggregates.get(k))
        .flat_map(|e| e.tables.iter().cloned())
        .collect();
    let row_spec = DerivedSpec {
        view: spec.view,
        grain: spec.grain.clone(),
        metrics: Vec::new(),
        aggregates: spec.aggregates.get(k).cloned().into_iter().collect(),
        filters: spec.filters.clone(),
        view_grain: Vec::new(),
        view_filters: Vec::new(),
        time_zone: spec.time_zone,
        calendar_shift: None,
    };
    let table = base_table(&row_spec, semantics, &needed)?;
    let from = from_clause(&table, &needed, spec, &[], semantics)?;
    let mut inner_items: Vec<String> = spec
        .grain
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{} AS \"__g{i}\"", g.expr))
        .collect();
    if inner_items.is_empty() {
        inner_items.push("1 AS \"__one\"".to_string());
    }
    let mut sql = format!("SELECT {} FROM {from}", inner_items.join(", "));
    write_filters(&mut sql, &spec.filters);
    let keys: Vec<String> = spec
        .grain
        .iter()
        .map(|g| g.expr.to_string())
        .chain(arguments.iter().cloned())
        .collect();
    if keys.is_empty() {
        // No grain and nothing to tell rows apart: one row when any row is selected.
        sql.push_str(" LIMIT 1");
    } else {
        let _ = write!(sql, " GROUP BY {}", keys.join(", "));
    }
    let grain: Vec<String> = (0..spec.grain.len())
        .map(|i| format!("r.\"__g{i}\" AS \"__g{i}\""))
        .collect();
    let mut outer = grain.clone();
    outer.push(format!("count(*) AS \"__a{k}\""));
    let mut out = format!("SELECT {} FROM ({sql}) AS r", outer.join(", "));
    if !grain.is_empty() {
        let keys: Vec<String> = (0..spec.grain.len())
            .map(|i| format!("r.\"__g{i}\""))
            .collect();
        let _ = write!(out, " GROUP BY {}", keys.join(", "));
    }
    Ok(out)
}
