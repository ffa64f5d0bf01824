//! The derived table that answers a view block at its grain.
//!
//! For each fact table among the requested metrics:
//! ```sql
//! SELECT <grain> AS __g0.., <metric aggregates> AS __m<j>.., <aggregates> AS __a<k>..
//! FROM __kp_base.<fact> AS <fact> LEFT JOIN __kp_base.<dim table> AS <dim table> ON ...
//! WHERE <dimension filters>
//! GROUP BY <grain>
//! ```
//! Only the many-to-one joins the query needs are added, so rows never fan out. When the
//! metrics come from several fact tables, each is aggregated on its own and the results
//! are combined on the grain (stacked with UNION ALL and grouped by the grain, which
//! every warehouse runs), so nothing is counted twice. The SQL text is assembled only from model identifiers and expressions printed
//! from their syntax trees, then parsed back.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{Expr, Query, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::block::dimension_names;
use crate::bind::{BoundMetric, BoundView, ColumnKind, Semantics};
use crate::error::{Error, Result};
use crate::model::Aggregation;
use crate::sources::BASE_SCHEMA;

/// The marker aggregate `kp_view_rows(d1, d2, ...)`: the number of distinct combinations
/// of its arguments in each group of the grain (the view's rows, for `COUNT(*)`). The
/// derived table computes it in a part of its own that groups by the grain and the
/// arguments, then counts the groups: a hash aggregation, never a per-group set.
pub const VIEW_ROWS: &str = "kp_view_rows";

/// A block expression translated to base tables.
#[derive(Debug, Clone)]
pub struct InnerExpr {
    /// The expression over qualified base columns.
    pub expr: Expr,
    /// Tables it reads.
    pub tables: BTreeSet<String>,
    /// View dimensions it uses (for messages).
    pub dimensions: BTreeSet<String>,
}

impl InnerExpr {
    /// Translate `expr` (canonical view column references) to base tables.
    pub fn new(expr: &Expr, view: &BoundView, semantics: &Semantics) -> Result<InnerExpr> {
        struct Sub<'a> {
            view: &'a BoundView,
            semantics: &'a Semantics,
            tables: BTreeSet<String>,
            error: Option<Error>,
        }
        impl VisitorMut for Sub<'_> {
            type Break = ();
            fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
                let Expr::Identifier(ident) = expr else {
                    return ControlFlow::Continue(());
                };
                if ident.quote_style.is_some() {
                    return ControlFlow::Continue(());
                }
                let Some(column) = self.view.column(&ident.value) else {
                    return ControlFlow::Continue(());
                };
                let dim_name = match &column.kind {
                    ColumnKind::Dimension(d) | ColumnKind::TimeGrain(d, _) => d,
                    ColumnKind::Metric(m) => {
                        self.error = Some(Error::Internal(format!(
                            "metric {m} reached a row-level expression"
                        )));
                        return ControlFlow::Break(());
                    }
                };
                let Some(dim) = self.semantics.dimensions.get(dim_name) else {
                    self.error = Some(Error::Internal(format!(
                        "dimension {dim_name} is not bound"
                    )));
                    return ControlFlow::Break(());
                };
                self.tables.extend(dim.expr.tables.iter().cloned());
                let base = dim.expr.expr.to_string();
                let sql = match &column.kind {
                    ColumnKind::TimeGrain(_, grain) => {
                        let truncated = format!(
                            "date_trunc('{}', CAST(({base}) AS TIMESTAMP))",
                            grain.name()
                        );
                        if dim.data_type == DataType::Date32 {
                            format!("CAST({truncated} AS DATE)")
                        } else {
                            truncated
                        }
                    }
                    _ => format!("({base})"),
                };
                match parse_expr(&sql) {
                    Ok(e) => *expr = e,
                    Err(e) => {
                        self.error = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            }
        }
        let mut out = expr.clone();
        let mut sub = Sub {
            view,
            semantics,
            tables: BTreeSet::new(),
            error: None,
        };
        let _ = out.visit(&mut sub);
        if let Some(e) = sub.error {
            return Err(e);
        }
        Ok(InnerExpr {
            expr: out,
            tables: sub.tables,
            dimensions: dimension_names(expr, view),
        })
    }
}

/// Everything the derived table of one block needs.
#[derive(Debug)]
pub struct DerivedSpec<'a> {
    /// The view read.
    pub view: &'a BoundView,
    /// Grain expressions → `__g<i>`.
    pub grain: Vec<InnerExpr>,
    /// Metric names → `__m<j>`.
    pub metrics: Vec<String>,
    /// Aggregates over dimensions → `__a<k>`.
    pub aggregates: Vec<InnerExpr>,
    /// Row filters (ANDed).
    pub filters: Vec<InnerExpr>,
}

fn parse_expr(sql: &str) -> Result<Expr> {
    crate::bind::parse_expr(sql)
        .map_err(|e| Error::Internal(format!("generated expression {sql}: {e}")))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The SQL aggregate of a metric.
pub fn metric_sql(metric: &BoundMetric) -> String {
    let value = match (&metric.expr, &metric.filter) {
        (Some(e), Some(f)) => format!("CASE WHEN {f} THEN {e} END"),
        (Some(e), None) => e.to_string(),
        (None, Some(f)) => format!("CASE WHEN {f} THEN 1 END"),
        (None, None) => "*".to_string(),
    };
    match metric.agg {
        Aggregation::CountDistinct => format!("count(DISTINCT {value})"),
        agg => format!("{}({value})", agg.sql_function()),
    }
}

/// Build the derived table for `spec`.
pub fn build_derived(spec: &DerivedSpec<'_>, semantics: &Semantics) -> Result<Query> {
    let metrics: Vec<&BoundMetric> = spec
        .metrics
        .iter()
        .map(|m| {
            semantics
                .metrics
                .get(m)
                .ok_or_else(|| Error::Internal(format!("metric {m} is not bound")))
        })
        .collect::<Result<_>>()?;

    // Fact tables in order of first use; each gets its metrics.
    let mut facts: Vec<(String, Vec<usize>)> = Vec::new();
    for (j, m) in metrics.iter().enumerate() {
        match facts.iter_mut().find(|(t, _)| *t == m.table) {
            Some((_, js)) => js.push(j),
            None => facts.push((m.table.clone(), vec![j])),
        }
    }
    let row_tables: BTreeSet<String> = spec
        .grain
        .iter()
        .chain(&spec.filters)
        .chain(&spec.aggregates)
        .flat_map(|e| e.tables.iter().cloned())
        .collect();
    // Aggregates that count view rows get parts of their own (below).
    let row_counts: Vec<(usize, Vec<String>)> = spec
        .aggregates
        .iter()
        .enumerate()
        .filter_map(|(k, a)| view_rows_arguments(&a.expr).map(|args| (k, args)))
        .collect();
    let plain_aggregates = spec.aggregates.len() - row_counts.len();
    let only_row_counts = facts.is_empty() && plain_aggregates == 0 && !row_counts.is_empty();
    if facts.is_empty() {
        facts.push((base_table(spec, semantics, &row_tables)?, vec![]));
    }

    let mut parts: Vec<(String, Vec<String>)> = Vec::new();
    for (index, (fact, js)) in facts.iter().enumerate() {
        let with_aggregates = index == 0;
        let mut needed: BTreeSet<String> = spec
            .grain
            .iter()
            .chain(&spec.filters)
            .flat_map(|e| e.tables.iter().cloned())
            .collect();
        if with_aggregates {
            needed.extend(
                spec.aggregates
                    .iter()
                    .filter(|e| view_rows_arguments(&e.expr).is_none())
                    .flat_map(|e| e.tables.iter().cloned()),
            );
        }
        for &j in js {
            needed.extend(metrics[j].tables.iter().cloned());
        }
        let from = from_clause(
            fact,
            &needed,
            spec,
            semantics,
            js.iter().map(|&j| metrics[j]),
        )?;

        let mut items = Vec::new();
        let mut provides = Vec::new();
        for (i, g) in spec.grain.iter().enumerate() {
            items.push(format!("{} AS \"__g{i}\"", g.expr));
        }
        for &j in js {
            items.push(format!("{} AS \"__m{j}\"", metric_sql(metrics[j])));
            provides.push(format!("__m{j}"));
        }
        if with_aggregates {
            for (k, a) in spec.aggregates.iter().enumerate() {
                if view_rows_arguments(&a.expr).is_none() {
                    items.push(format!("{} AS \"__a{k}\"", a.expr));
                    provides.push(format!("__a{k}"));
                }
            }
        }
        if items.is_empty() {
            items.push("count(*) AS \"__n\"".to_string());
        }
        let mut sql = format!("SELECT {} FROM {from}", items.join(", "));
        write_filters(&mut sql, spec);
        if !spec.grain.is_empty() {
            let keys: Vec<String> = spec.grain.iter().map(|g| g.expr.to_string()).collect();
            let _ = write!(sql, " GROUP BY {}", keys.join(", "));
        }
        parts.push((sql, provides));
    }
    if only_row_counts {
        parts.clear();
    }
    for (k, arguments) in &row_counts {
        parts.push((
            row_count_part(spec, semantics, *k, arguments)?,
            vec![format!("__a{k}")],
        ));
    }

    let sql = if parts.len() == 1 {
        parts.remove(0).0
    } else {
        join_parts(&parts, spec)
    };
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map(|q| *q)
        .map_err(|e| Error::Internal(format!("generated SQL does not parse: {e}: {sql}")))
}

/// ` WHERE <row filters ANDed>`, when there are any.
fn write_filters(sql: &mut String, spec: &DerivedSpec<'_>) {
    if !spec.filters.is_empty() {
        let filters: Vec<String> = spec
            .filters
            .iter()
            .map(|f| format!("({})", f.expr))
            .collect();
        let _ = write!(sql, " WHERE {}", filters.join(" AND "));
    }
}

/// The arguments of a [`VIEW_ROWS`] marker, as SQL.
fn view_rows_arguments(expr: &Expr) -> Option<Vec<String>> {
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
fn row_count_part(
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
    };
    let table = base_table(&row_spec, semantics, &needed)?;
    let from = from_clause(&table, &needed, spec, semantics, std::iter::empty())?;
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
    write_filters(&mut sql, spec);
    let keys: Vec<String> = spec
        .grain
        .iter()
        .map(|g| g.expr.to_string())
        .chain(arguments.iter().cloned())
        .collect();
    let _ = write!(sql, " GROUP BY {}", keys.join(", "));
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

/// Combine the parts (per-fact aggregates, row counts) on the grain; each part provides
/// the columns listed with it.
///
/// Every part has at most one row per grain value, so the parts are stacked with
/// `UNION ALL` (each filling only its own columns) and grouped by the grain: this matches
/// NULL grain values as equal, as a `FULL JOIN ... IS NOT DISTINCT FROM` would, and runs on
/// every warehouse (PostgreSQL cannot hash such a FULL JOIN; MySQL has no FULL JOIN).
fn join_parts(parts: &[(String, Vec<String>)], spec: &DerivedSpec<'_>) -> String {
    let grain: Vec<String> = (0..spec.grain.len())
        .map(|i| format!("\"__g{i}\""))
        .collect();
    let all_columns: Vec<&String> = parts.iter().flat_map(|(_, provides)| provides).collect();
    let branches: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(f, (part, provides))| {
            let mut items: Vec<String> = grain.iter().map(|g| format!("f{f}.{g}")).collect();
            for column in &all_columns {
                if provides.contains(column) {
                    items.push(format!("f{f}.\"{column}\""));
                } else {
                    items.push(format!("NULL AS \"{column}\""));
                }
            }
            format!("SELECT {} FROM ({part}) AS f{f}", items.join(", "))
        })
        .collect();
    let mut items: Vec<String> = grain.iter().map(|g| format!("u.{g} AS {g}")).collect();
    for column in &all_columns {
        items.push(format!("max(u.\"{column}\") AS \"{column}\""));
    }
    let mut sql = format!(
        "SELECT {} FROM ({}) AS u",
        items.join(", "),
        branches.join(" UNION ALL ")
    );
    if !grain.is_empty() {
        let keys: Vec<String> = grain.iter().map(|g| format!("u.{g}")).collect();
        let _ = write!(sql, " GROUP BY {}", keys.join(", "));
    }
    sql
}

/// The table a block without metrics reads: the first of the requested dimensions'
/// tables, then the view's metric tables, from which every needed table is reachable.
fn base_table(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    needed: &BTreeSet<String>,
) -> Result<String> {
    let mut candidates: Vec<String> = Vec::new();
    for e in spec
        .grain
        .iter()
        .chain(&spec.filters)
        .chain(&spec.aggregates)
    {
        for d in &e.dimensions {
            if let Some(dim) = semantics.dimensions.get(d.split("__").next().unwrap_or(d)) {
                candidates.push(dim.table.clone());
            }
        }
    }
    for c in &spec.view.columns {
        if let ColumnKind::Metric(m) = &c.kind
            && let Some(metric) = semantics.metrics.get(m)
        {
            candidates.push(metric.table.clone());
        }
    }
    for c in &spec.view.columns {
        if let ColumnKind::Dimension(d) = &c.kind
            && let Some(dim) = semantics.dimensions.get(d)
        {
            candidates.push(dim.table.clone());
        }
    }
    candidates
        .into_iter()
        .find(|t| needed.iter().all(|n| semantics.model.join_path(t, n).is_some()))
        .ok_or_else(|| {
            Error::unsupported(
                format!(
                    "the dimensions asked together in view \"{}\" are not related: no table reaches all of {}",
                    spec.view.name,
                    needed.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some("ask for these dimensions in separate queries, or together with a metric that relates them".into()),
            )
        })
}

/// `FROM fact LEFT JOIN ...` with the joins needed to reach `needed`.
fn from_clause<'m>(
    fact: &str,
    needed: &BTreeSet<String>,
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    metrics: impl Iterator<Item = &'m BoundMetric>,
) -> Result<String> {
    let metric_names: Vec<String> = metrics.map(|m| format!("\"{}\"", m.name)).collect();
    let mut joined: Vec<String> = vec![fact.to_string()];
    let mut sql = format!("{}.{} AS {}", quote(BASE_SCHEMA), quote(fact), quote(fact));
    for target in needed {
        let Some(path) = semantics.model.join_path(fact, target) else {
            let dims: BTreeSet<String> = spec
                .grain
                .iter()
                .chain(&spec.filters)
                .chain(&spec.aggregates)
                .filter(|e| e.tables.contains(target))
                .flat_map(|e| e.dimensions.iter().cloned())
                .collect();
            let what = if metric_names.is_empty() {
                format!("table \"{fact}\"")
            } else {
                format!("metric {} (table \"{fact}\")", metric_names.join(", "))
            };
            let dims = dims
                .into_iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::unsupported(
                format!(
                    "{what} cannot be broken down or filtered by {dims} (table \"{target}\"): there is no many-to-one join path from \"{fact}\" to \"{target}\""
                ),
                Some(format!(
                    "query {dims} without these metrics, or use a view where they are related"
                )),
            ));
        };
        for (from, join) in path {
            let to = join.to.get_ref();
            if joined.iter().any(|j| j == to) {
                continue;
            }
            let Some(to_table) = semantics.model.table(to) else {
                return Err(Error::Internal(format!("table {to} is not in the model")));
            };
            let _ = write!(
                sql,
                " LEFT JOIN {}.{} AS {} ON {}.{} = {}.{}",
                quote(BASE_SCHEMA),
                quote(to),
                quote(to),
                quote(from.name.get_ref()),
                quote(join.foreign_key.get_ref()),
                quote(to),
                quote(to_table.primary_key.get_ref()),
            );
            joined.push(to.clone());
        }
    }
    Ok(sql)
}
