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
use crate::bind::{AggregateDef, BoundDimension, BoundView, ColumnKind, Semantics};
use crate::error::{Error, Result};
use crate::model::{Aggregation, TimeGrain, Window};
use crate::sources::BASE_SCHEMA;
use crate::time_zone::TimeZone;

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
    pub fn new(
        expr: &Expr,
        view: &BoundView,
        semantics: &Semantics,
        time_zone: TimeZone,
    ) -> Result<InnerExpr> {
        InnerExpr::translate(expr, view, semantics, time_zone, None, None)
    }

    /// Translate `expr` for the rows of table `fact` (whose own columns give the
    /// dimensions it carries), with the values of one time dimension moved forward by an
    /// interval (`shift`: dimension name, SQL interval literal): the rows of an earlier
    /// period then fall in the group and filters of the period they are compared with.
    /// Time grains of `timestamptz` dimensions (and `date_trunc`, `date_part`, `EXTRACT`,
    /// `to_char` and casts to a date or time of them) are computed in local time of
    /// `time_zone`, as PostgreSQL does in the session's `TimeZone`.
    pub fn translate(
        expr: &Expr,
        view: &BoundView,
        semantics: &Semantics,
        time_zone: TimeZone,
        shift: Option<(&str, &str)>,
        fact: Option<&str>,
    ) -> Result<InnerExpr> {
        struct Sub<'a> {
            view: &'a BoundView,
            semantics: &'a Semantics,
            time_zone: TimeZone,
            shift: Option<(&'a str, &'a str)>,
            carried: Option<&'a std::collections::HashMap<String, crate::bind::BoundExpr>>,
            tables: BTreeSet<String>,
            error: Option<Error>,
        }
        impl VisitorMut for Sub<'_> {
            type Break = ();
            fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
                if let Some(value) = local_time_argument(expr)
                    && let Expr::Identifier(ident) = value
                    && ident.quote_style.is_none()
                    && let Some(ColumnKind::Dimension(d)) =
                        self.view.column(&ident.value).map(|c| &c.kind)
                    && self.semantics.dimensions.get(d).is_some_and(is_zoned)
                {
                    let local = local_time_sql(&ident.to_string(), self.time_zone);
                    match parse_expr(&local) {
                        Ok(e) => *value = e,
                        Err(e) => {
                            self.error = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                    return ControlFlow::Continue(());
                }
                let Expr::Identifier(ident) = expr else {
                    return ControlFlow::Continue(());
                };
                if ident.quote_style.is_some() {
                    return ControlFlow::Continue(());
                }
                // A view column; else a segment or a dimension named by a segment's
                // filter (client column names were checked against the view before).
                let kind = match self.view.column(&ident.value) {
                    Some(column) => column.kind.clone(),
                    None if self.semantics.segments.contains_key(&ident.value) => {
                        ColumnKind::Segment(ident.value.clone())
                    }
                    None if self.semantics.dimensions.contains_key(&ident.value) => {
                        ColumnKind::Dimension(ident.value.clone())
                    }
                    None => return ControlFlow::Continue(()),
                };
                let dim_name = match &kind {
                    ColumnKind::Dimension(d) | ColumnKind::TimeGrain(d, _) => d,
                    ColumnKind::Segment(g) => {
                        // Its filter, whose dimension names this visitor then replaces.
                        if let Some(segment) = self.semantics.segments.get(g) {
                            *expr = Expr::Nested(Box::new(segment.filter.clone()));
                        }
                        return ControlFlow::Continue(());
                    }
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
                let source = self
                    .carried
                    .and_then(|c| c.get(dim_name))
                    .unwrap_or(&dim.expr);
                self.tables.extend(source.tables.iter().cloned());
                let mut base = source.expr.to_string();
                if matches!(kind, ColumnKind::TimeGrain(..)) && is_zoned(dim) {
                    base = local_time_sql(&base, self.time_zone);
                }
                if let Some((time, interval)) = self.shift
                    && time == dim_name
                {
                    base = shift_sql(&base, interval, &dim.data_type);
                }
                let sql = match &kind {
                    ColumnKind::TimeGrain(_, grain) => {
                        let truncated = truncate_sql(&base, *grain, dim);
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
            time_zone,
            shift,
            carried: fact.and_then(|f| semantics.table_dimensions.get(f)),
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

/// Is the dimension a `timestamptz` (bucketed in local time)?
fn is_zoned(dim: &BoundDimension) -> bool {
    matches!(dim.data_type, DataType::Timestamp(_, Some(_)))
}

/// A `timestamptz` value as the local time (a timestamp without time zone) in
/// `time_zone` ([`crate::time_zone::LocalTime`]; each source dialect writes it as its own
/// conversion).
fn local_time_sql(value: &str, time_zone: TimeZone) -> String {
    format!(
        "{}(({value}), '{}')",
        crate::time_zone::LOCAL_TIME,
        time_zone.sql_name()
    )
}

/// The operand of an expression whose value PostgreSQL computes in the session's time
/// zone when it is a `timestamptz`: `date_trunc(unit, x)`, `date_part(unit, x)`,
/// `EXTRACT(field FROM x)`, `to_char(x, template)`, `CAST(x AS date | time | timestamp)`.
fn local_time_argument(expr: &mut Expr) -> Option<&mut Expr> {
    use datafusion::sql::sqlparser::ast::{
        DataType as SqlType, FunctionArg, FunctionArgExpr, FunctionArguments, TimezoneInfo,
    };
    match expr {
        Expr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            let position = match name.as_str() {
                "date_trunc" | "date_part" => 1,
                "to_char" => 0,
                _ => return None,
            };
            let FunctionArguments::List(list) = &mut f.args else {
                return None;
            };
            match list.args.get_mut(position)? {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            }
        }
        Expr::Extract { expr, .. } => Some(expr),
        Expr::Cast {
            expr,
            data_type:
                SqlType::Date
                | SqlType::Time(..)
                | SqlType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone),
            ..
        } => Some(expr),
        _ => None,
    }
}

/// The start of the period of `grain` containing `value` (an expression of dimension
/// `dim`), as a timestamp: weeks start on the dimension's week start, fiscal periods on
/// its fiscal year start. Written with `date_trunc` and interval arithmetic only, which
/// every source dialect has.
pub fn truncate_sql(value: &str, grain: TimeGrain, dim: &BoundDimension) -> String {
    let ts = format!("CAST(({value}) AS TIMESTAMP)");
    let shifted = |unit: &str, offset: String| {
        format!("(date_trunc('{unit}', {ts} - INTERVAL '{offset}') + INTERVAL '{offset}')")
    };
    match grain {
        TimeGrain::Week if dim.week_start.days_to_monday() != 0 => {
            // Move the week start onto a Monday, truncate to the ISO week, move back.
            let days = dim.week_start.days_to_monday();
            format!("(date_trunc('week', {ts} + INTERVAL '{days} day') - INTERVAL '{days} day')")
        }
        TimeGrain::FiscalQuarter | TimeGrain::FiscalYear => {
            let unit = if grain == TimeGrain::FiscalYear {
                "year"
            } else {
                "quarter"
            };
            shifted(
                unit,
                format!("{} month", dim.fiscal_year_start_month.saturating_sub(1)),
            )
        }
        other => format!("date_trunc('{}', {ts})", other.name()),
    }
}

/// `value + interval` on a time dimension's values, keeping their type (a date stays
/// a date). Computed on timestamps: PostgreSQL's `date + interval` is a timestamp.
fn shift_sql(value: &str, interval: &str, data_type: &DataType) -> String {
    let shifted = format!("CAST(({value}) AS TIMESTAMP) + INTERVAL '{interval}'");
    if *data_type == DataType::Date32 {
        format!("CAST(({shifted}) AS DATE)")
    } else {
        format!("({shifted})")
    }
}

/// How a column of the derived table computes an aggregate metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// The metric at the block's grain.
    Plain,
    /// The metric of an earlier period, aligned on the period it is compared with: rows
    /// are grouped and filtered with the time dimension moved forward by `interval`.
    Shift {
        /// The time dimension.
        time: String,
        /// SQL interval literal, e.g. `1 month`.
        interval: String,
    },
    /// The metric over every row the query selects, at no grain (`total(m)` in a
    /// formula: shares of total).
    Total,
    /// The metric accumulated over a window ending with each period of the grain.
    Window {
        /// The time dimension.
        time: String,
        /// The window.
        window: Window,
        /// Position of the time dimension's grain expression in the block's grain.
        index: usize,
        /// The grain of that expression.
        grain: TimeGrain,
    },
}

/// One metric column `__m<j>` of the derived table: an aggregate metric under a
/// transform. Composite and period-over-period metrics are expressions over these.
#[derive(Debug, Clone, PartialEq)]
pub struct Physical {
    /// An atomic or derived metric.
    pub metric: String,
    /// How it is computed.
    pub transform: Transform,
}

/// Everything the derived table of one block needs.
#[derive(Debug)]
pub struct DerivedSpec<'a> {
    /// The view read.
    pub view: &'a BoundView,
    /// Grain expressions → `__g<i>`.
    pub grain: Vec<InnerExpr>,
    /// Metric computations → `__m<j>`.
    pub metrics: Vec<Physical>,
    /// Aggregates over dimensions → `__a<k>`.
    pub aggregates: Vec<InnerExpr>,
    /// Row filters (ANDed).
    pub filters: Vec<InnerExpr>,
    /// The grain as view expressions (re-translated for shifted parts).
    pub view_grain: Vec<Expr>,
    /// The row filters as view expressions.
    pub view_filters: Vec<Expr>,
    /// The session's time zone (local time of `timestamptz` grains).
    pub time_zone: TimeZone,
}

impl DerivedSpec<'_> {
    /// The grain and the row filters translated again for the rows of table `fact`
    /// (dimensions it carries in its own columns), with the time dimension moved by
    /// `shift` if given.
    fn translate_for(
        &self,
        semantics: &Semantics,
        shift: Option<(&str, &str)>,
        fact: &str,
    ) -> Result<(Vec<InnerExpr>, Vec<InnerExpr>)> {
        let translate = |e: &Expr| {
            InnerExpr::translate(e, self.view, semantics, self.time_zone, shift, Some(fact))
        };
        let grain = self
            .view_grain
            .iter()
            .map(translate)
            .collect::<Result<_>>()?;
        let filters = self
            .view_filters
            .iter()
            .map(translate)
            .collect::<Result<_>>()?;
        Ok((grain, filters))
    }
}

fn parse_expr(sql: &str) -> Result<Expr> {
    crate::bind::parse_expr(sql)
        .map_err(|e| Error::Internal(format!("generated expression {sql}: {e}")))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The value an aggregate reads from each row: its expression (or 1, or `*`) where its
/// filter holds, else NULL.
fn aggregate_value(def: &AggregateDef) -> String {
    match (&def.expr, &def.filter) {
        (Some(e), Some(f)) => format!("CASE WHEN {f} THEN {e} END"),
        (Some(e), None) => e.to_string(),
        (None, Some(f)) => format!("CASE WHEN {f} THEN 1 END"),
        (None, None) => "*".to_string(),
    }
}

/// The SQL aggregate of an atomic or derived metric.
pub fn aggregate_sql(def: &AggregateDef) -> String {
    let value = aggregate_value(def);
    match def.agg {
        Aggregation::CountDistinct => format!("count(DISTINCT {value})"),
        agg => format!("{}({value})", agg.sql_function()),
    }
}

/// A part of the derived table: its SQL, the columns it provides, and whether its rows
/// are periods of the answer (a shifted part only brings values to existing periods).
struct Part {
    sql: String,
    provides: Vec<String>,
    primary: bool,
    /// One row without grain columns, joined to every row.
    total: bool,
}

/// Build the derived table for `spec`.
pub fn build_derived(spec: &DerivedSpec<'_>, semantics: &Semantics) -> Result<Query> {
    let defs: Vec<&AggregateDef> = spec
        .metrics
        .iter()
        .map(|p| {
            semantics
                .metrics
                .get(&p.metric)
                .and_then(|m| m.aggregate())
                .ok_or_else(|| Error::Internal(format!("metric {} is not an aggregate", p.metric)))
        })
        .collect::<Result<_>>()?;

    // Groups of metric columns computed together: per fact table and transform (each
    // windowed metric on its own), in order of first use.
    let mut groups: Vec<(String, Transform, Vec<usize>)> = Vec::new();
    for (j, (physical, def)) in spec.metrics.iter().zip(&defs).enumerate() {
        let shared = !matches!(physical.transform, Transform::Window { .. });
        match groups
            .iter_mut()
            .find(|(t, tr, _)| shared && *t == def.table && *tr == physical.transform)
        {
            Some((_, _, js)) => js.push(j),
            None => groups.push((def.table.clone(), physical.transform.clone(), vec![j])),
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
    let only_row_counts = groups.is_empty() && plain_aggregates == 0 && !row_counts.is_empty();
    let has_plain = groups.iter().any(|(fact, t, _)| {
        *t == Transform::Plain && !semantics.table_dimensions.contains_key(fact)
    });
    if groups.is_empty() || (plain_aggregates > 0 && !has_plain) {
        groups.insert(
            0,
            (
                base_table(spec, semantics, &row_tables)?,
                Transform::Plain,
                vec![],
            ),
        );
    }

    let mut parts: Vec<Part> = Vec::new();
    let mut aggregates_placed = false;
    for (fact, transform, js) in &groups {
        match transform {
            Transform::Plain if semantics.table_dimensions.contains_key(fact) => {
                // The fact carries dimensions in its own columns: translate for it.
                let (grain, filters) = spec.translate_for(semantics, None, fact)?;
                parts.push(grouped_part(
                    spec, semantics, fact, js, &defs, false, &grain, &filters,
                )?);
            }
            Transform::Plain => {
                let with_aggregates = !aggregates_placed;
                aggregates_placed = true;
                parts.push(grouped_part(
                    spec,
                    semantics,
                    fact,
                    js,
                    &defs,
                    with_aggregates,
                    &spec.grain,
                    &spec.filters,
                )?);
            }
            Transform::Total => {
                let mut part =
                    grouped_part(spec, semantics, fact, js, &defs, false, &[], &spec.filters)?;
                part.total = true;
                parts.push(part);
            }
            Transform::Shift { time, interval } => {
                let shift = Some((time.as_str(), interval.as_str()));
                let (grain, filters) = spec.translate_for(semantics, shift, fact)?;
                let mut part =
                    grouped_part(spec, semantics, fact, js, &defs, false, &grain, &filters)?;
                part.primary = false;
                parts.push(part);
            }
            Transform::Window {
                time,
                window,
                index,
                grain,
            } => {
                for &j in js {
                    parts.push(window_part(
                        spec, semantics, fact, j, defs[j], time, *window, *index, *grain,
                    )?);
                }
            }
        }
    }
    if only_row_counts {
        parts.clear();
    }
    for (k, arguments) in &row_counts {
        parts.push(Part {
            sql: row_count_part(spec, semantics, *k, arguments)?,
            provides: vec![format!("__a{k}")],
            primary: true,
            total: false,
        });
    }

    let (totals, mut parts): (Vec<Part>, Vec<Part>) = parts.into_iter().partition(|p| p.total);
    let provided: Vec<String> = parts.iter().flat_map(|p| p.provides.clone()).collect();
    let mut sql = if parts.len() == 1 {
        parts.remove(0).sql
    } else {
        join_parts(&parts, spec)
    };
    if !totals.is_empty() {
        // Each total is one row: joined to every row of the answer.
        let mut items: Vec<String> = (0..spec.grain.len())
            .map(|i| format!("p.\"__g{i}\""))
            .collect();
        items.extend(provided.iter().map(|c| format!("p.\"{c}\"")));
        let mut from = format!("({sql}) AS p");
        for (t, total) in totals.iter().enumerate() {
            items.extend(total.provides.iter().map(|c| format!("t{t}.\"{c}\"")));
            let _ = write!(from, " CROSS JOIN ({}) AS t{t}", total.sql);
        }
        sql = format!("SELECT {} FROM {from}", items.join(", "));
    }
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map(|q| *q)
        .map_err(|e| Error::Internal(format!("generated SQL does not parse: {e}: {sql}")))
}

/// `SELECT <grain>, <metrics js>, [<aggregates>] FROM <fact and joins> WHERE <filters>
/// GROUP BY <grain>`.
#[allow(clippy::too_many_arguments)]
fn grouped_part(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    fact: &str,
    js: &[usize],
    defs: &[&AggregateDef],
    with_aggregates: bool,
    grain: &[InnerExpr],
    filters: &[InnerExpr],
) -> Result<Part> {
    let mut needed: BTreeSet<String> = grain
        .iter()
        .chain(filters)
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
        needed.extend(defs[j].tables.iter().cloned());
    }
    let names: Vec<&str> = js
        .iter()
        .map(|&j| spec.metrics[j].metric.as_str())
        .collect();
    let from = from_clause(fact, &needed, spec, &names, semantics)?;

    let mut items = Vec::new();
    let mut provides = Vec::new();
    for (i, g) in grain.iter().enumerate() {
        items.push(format!("{} AS \"__g{i}\"", g.expr));
    }
    for &j in js {
        items.push(format!("{} AS \"__m{j}\"", aggregate_sql(defs[j])));
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
    write_filters(&mut sql, filters);
    if !grain.is_empty() {
        let keys: Vec<String> = grain.iter().map(|g| g.expr.to_string()).collect();
        let _ = write!(sql, " GROUP BY {}", keys.join(", "));
    }
    Ok(Part {
        sql,
        provides,
        primary: true,
        total: false,
    })
}

/// SQL interval literal of `n` units of `grain`.
pub fn interval(n: u32, grain: TimeGrain) -> String {
    match grain {
        TimeGrain::Day => format!("{n} day"),
        TimeGrain::Week => format!("{} day", n * 7),
        TimeGrain::Month => format!("{n} month"),
        TimeGrain::Quarter => format!("{} month", n * 3),
        TimeGrain::Year | TimeGrain::FiscalYear => format!("{n} year"),
        TimeGrain::FiscalQuarter => format!("{} month", n * 3),
    }
}

/// A cumulative metric: each period of the grain (`b`, the periods the filters select)
/// joined with the rows of its window (`r`, pre-aggregated per value of the time
/// dimension; filters on the time dimension do not apply to it, so a window reaches
/// back before the first period shown):
/// ```sql
/// SELECT b.__g.., <aggregate of r.__v> AS __m<j>
/// FROM (SELECT <grain> FROM .. WHERE <filters> GROUP BY <grain>) AS b
/// LEFT JOIN (SELECT <other grain>, <time> AS __t, <partial aggregate> AS __v FROM ..
///            WHERE <filters not on time> GROUP BY <other grain>, <time>) AS r
///   ON b.__g<k> = r.__g<k> .. AND r.__t < <period end> AND r.__t >= <window start>
/// GROUP BY b.__g..
/// ```
#[allow(clippy::too_many_arguments)]
fn window_part(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    fact: &str,
    j: usize,
    def: &AggregateDef,
    time: &str,
    window: Window,
    index: usize,
    grain: TimeGrain,
) -> Result<Part> {
    let dim = semantics
        .dimensions
        .get(time)
        .ok_or_else(|| Error::Internal(format!("dimension {time} is not bound")))?;
    let names = [spec.metrics[j].metric.as_str()];

    // b: the periods.
    let needed: BTreeSet<String> = spec
        .grain
        .iter()
        .chain(&spec.filters)
        .flat_map(|e| e.tables.iter().cloned())
        .collect();
    let from = from_clause(fact, &needed, spec, &names, semantics)?;
    let items: Vec<String> = spec
        .grain
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{} AS \"__g{i}\"", g.expr))
        .collect();
    let keys: Vec<String> = spec.grain.iter().map(|g| g.expr.to_string()).collect();
    let mut periods = format!("SELECT {} FROM {from}", items.join(", "));
    write_filters(&mut periods, &spec.filters);
    let _ = write!(periods, " GROUP BY {}", keys.join(", "));

    // r: the rows, per value of the time dimension.
    let on_time = |e: &InnerExpr| {
        e.dimensions
            .iter()
            .any(|d| d == time || d.split("__").next() == Some(time))
    };
    let others: Vec<(usize, &InnerExpr)> = spec
        .grain
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .collect();
    let row_filters: Vec<InnerExpr> = spec
        .filters
        .iter()
        .filter(|f| !on_time(f))
        .cloned()
        .collect();
    let mut needed: BTreeSet<String> = others
        .iter()
        .map(|(_, e)| *e)
        .chain(&row_filters)
        .flat_map(|e| e.tables.iter().cloned())
        .collect();
    needed.extend(dim.expr.tables.iter().cloned());
    needed.extend(def.tables.iter().cloned());
    let from = from_clause(fact, &needed, spec, &names, semantics)?;
    let mut time_sql = dim.expr.expr.to_string();
    if is_zoned(dim) {
        time_sql = local_time_sql(&time_sql, spec.time_zone);
    }
    let value = aggregate_value(def);
    let mut items: Vec<String> = others
        .iter()
        .map(|(i, g)| format!("{} AS \"__g{i}\"", g.expr))
        .collect();
    items.push(format!("{time_sql} AS \"__t\""));
    let mut keys: Vec<String> = others.iter().map(|(_, g)| g.expr.to_string()).collect();
    keys.push(time_sql.clone());
    let outer = match def.agg {
        Aggregation::Sum => {
            items.push(format!("sum({value}) AS \"__v\""));
            "sum(r.\"__v\")".to_string()
        }
        Aggregation::Count => {
            items.push(format!("count({value}) AS \"__v\""));
            "coalesce(sum(r.\"__v\"), 0)".to_string()
        }
        Aggregation::Min | Aggregation::Max => {
            let f = def.agg.sql_function();
            items.push(format!("{f}({value}) AS \"__v\""));
            format!("{f}(r.\"__v\")")
        }
        Aggregation::Avg => {
            items.push(format!("sum({value}) AS \"__v\""));
            items.push(format!("count({value}) AS \"__c\""));
            "CAST(sum(r.\"__v\") AS DOUBLE PRECISION) / CAST(NULLIF(sum(r.\"__c\"), 0) AS DOUBLE PRECISION)".to_string()
        }
        Aggregation::CountDistinct => {
            items.push(format!("{value} AS \"__v\""));
            keys.push(value.clone());
            "count(DISTINCT r.\"__v\")".to_string()
        }
    };
    let mut rows = format!("SELECT {} FROM {from}", items.join(", "));
    write_filters(&mut rows, &row_filters);
    let _ = write!(rows, " GROUP BY {}", keys.join(", "));

    // The window of each period.
    let period = format!("b.\"__g{index}\"");
    let end = format!("({period} + INTERVAL '{}')", interval(1, grain));
    let start = match window {
        Window::AllTime => None,
        Window::ToDate(of) => Some(truncate_sql(&format!("{end} - INTERVAL '1 day'"), of, dim)),
        Window::Trailing(n, unit) => Some(format!("({end} - INTERVAL '{}')", interval(n, unit))),
    };
    let mut on: Vec<String> = others
        .iter()
        .map(|(i, _)| format!("b.\"__g{i}\" = r.\"__g{i}\""))
        .collect();
    on.push(format!("r.\"__t\" < {end}"));
    if let Some(start) = start {
        on.push(format!("r.\"__t\" >= {start}"));
    }
    let outer_items: Vec<String> = (0..spec.grain.len())
        .map(|i| format!("b.\"__g{i}\" AS \"__g{i}\""))
        .chain(std::iter::once(format!("{outer} AS \"__m{j}\"")))
        .collect();
    let outer_keys: Vec<String> = (0..spec.grain.len())
        .map(|i| format!("b.\"__g{i}\""))
        .collect();
    let sql = format!(
        "SELECT {} FROM ({periods}) AS b LEFT JOIN ({rows}) AS r ON {} GROUP BY {}",
        outer_items.join(", "),
        on.join(" AND "),
        outer_keys.join(", ")
    );
    Ok(Part {
        sql,
        provides: vec![format!("__m{j}")],
        primary: true,
        total: false,
    })
}

/// ` WHERE <row filters ANDed>`, when there are any.
fn write_filters(sql: &mut String, filters: &[InnerExpr]) {
    if !filters.is_empty() {
        let filters: Vec<String> = filters.iter().map(|f| format!("({})", f.expr)).collect();
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
        view_grain: Vec::new(),
        view_filters: Vec::new(),
        time_zone: spec.time_zone,
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
/// Every part has at most one row per grain value, so two parts are stacked with
/// `UNION ALL` (each filling only its own columns) and grouped by the grain: this matches
/// NULL grain values as equal, as a `FULL JOIN ... IS NOT DISTINCT FROM` would, and runs on
/// every warehouse (PostgreSQL cannot hash such a FULL JOIN; MySQL has no FULL JOIN).
/// More parts are folded in one at a time, so that in every `UNION ALL` each column has a
/// typed value in one of its two branches (PostgreSQL types a column that is `NULL` in
/// both branches as text, which a third branch's numbers cannot match).
///
/// A part that is not primary (an earlier period's values) adds no period of its own:
/// the groups keep only periods some primary part has.
fn join_parts(parts: &[Part], spec: &DerivedSpec<'_>) -> String {
    let grain: Vec<String> = (0..spec.grain.len())
        .map(|i| format!("\"__g{i}\""))
        .collect();
    let presence = parts.iter().any(|p| !p.primary);
    let flag = |part: &Part| {
        if part.primary { "1" } else { "0" }
    };
    let Some((first, rest)) = parts.split_first() else {
        return String::new();
    };
    let mut sql = first.sql.clone();
    let mut columns: Vec<String> = first.provides.clone();
    if presence {
        sql = format!(
            "SELECT {}{}{} AS \"__kp_present\" FROM ({sql}) AS f",
            grain.iter().map(|g| format!("f.{g}, ")).collect::<String>(),
            columns
                .iter()
                .map(|c| format!("f.\"{c}\", "))
                .collect::<String>(),
            flag(first)
        );
    }
    for part in rest {
        let all: Vec<&String> = columns.iter().chain(&part.provides).collect();
        let branch = |alias: &str, sql: &str, provides: &[String], flag: Option<&str>| {
            let mut items: Vec<String> = grain.iter().map(|g| format!("{alias}.{g}")).collect();
            for column in &all {
                if provides.contains(column) {
                    items.push(format!("{alias}.\"{column}\""));
                } else {
                    items.push(format!("NULL AS \"{column}\""));
                }
            }
            if let Some(flag) = flag {
                let value = if flag == "carry" {
                    format!("{alias}.\"__kp_present\"")
                } else {
                    format!("{flag} AS \"__kp_present\"")
                };
                items.push(value);
            }
            format!("SELECT {} FROM ({sql}) AS {alias}", items.join(", "))
        };
        let left = branch("a", &sql, &columns, presence.then_some("carry"));
        let right = branch("b", &part.sql, &part.provides, presence.then(|| flag(part)));
        let mut items: Vec<String> = grain.iter().map(|g| format!("u.{g} AS {g}")).collect();
        for column in &all {
            items.push(format!("max(u.\"{column}\") AS \"{column}\""));
        }
        if presence {
            items.push("max(u.\"__kp_present\") AS \"__kp_present\"".to_string());
        }
        let mut combined = format!(
            "SELECT {} FROM ({left} UNION ALL {right}) AS u",
            items.join(", ")
        );
        if !grain.is_empty() {
            let keys: Vec<String> = grain.iter().map(|g| format!("u.{g}")).collect();
            let _ = write!(combined, " GROUP BY {}", keys.join(", "));
        }
        sql = combined;
        columns.extend(part.provides.iter().cloned());
    }
    if presence {
        let mut items: Vec<String> = grain.iter().map(|g| format!("p.{g}")).collect();
        items.extend(columns.iter().map(|c| format!("p.\"{c}\"")));
        sql = format!(
            "SELECT {} FROM ({sql}) AS p WHERE p.\"__kp_present\" = 1",
            items.join(", ")
        );
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
            && let Some(metric) = semantics.metrics.get(m).and_then(|m| m.aggregate())
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
fn from_clause(
    fact: &str,
    needed: &BTreeSet<String>,
    spec: &DerivedSpec<'_>,
    metrics: &[&str],
    semantics: &Semantics,
) -> Result<String> {
    let metric_names: Vec<String> = metrics.iter().map(|m| format!("\"{m}\"")).collect();
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
