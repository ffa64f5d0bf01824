//! View expressions translated to expressions over the base tables' columns: dimensions
//! replaced by their bound expressions (or the columns a fact table carries them in),
//! segments by their conditions, time grains truncated, `timestamptz` dimensions read in
//! the session's local time, and a time dimension moved by an interval for an earlier
//! period's rows.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{Expr, VisitMut, VisitorMut};

use super::parse_expr;
use crate::bind::{BoundDimension, BoundExpr, BoundView, ColumnKind, Semantics};
use crate::error::{Error, Result};
use crate::model::TimeGrain;
use crate::rewrite::block::dimension_names;
use crate::time_zone::TimeZone;

/// What a time dimension's values become in a translated expression.
#[derive(Debug, Clone, Copy)]
pub enum Moved<'a> {
    /// Moved forward by an SQL interval literal (`1 month`): an earlier period's rows
    /// fall in the group of the period they are compared with.
    Shift(&'a str),
    /// Replaced by a column of generated periods (the time spine, in local time, of the
    /// dimension's type): the expression labels a period rather than a row.
    Spine(&'a str),
    /// Replaced by the days the dimension's calendar aligns with the row's day (the
    /// calendar's day column of the aligned relation, joined on its aligned column).
    Aligned,
}

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
    /// interval or replaced by the time spine (`moved`: dimension name, how).
    /// Time grains of `timestamptz` dimensions (and `date_trunc`, `date_part`, `EXTRACT`,
    /// `to_char` and casts to a date or time of them) are computed in local time of
    /// `time_zone`, as PostgreSQL does in the session's `TimeZone`.
    pub fn translate(
        expr: &Expr,
        view: &BoundView,
        semantics: &Semantics,
        time_zone: TimeZone,
        moved: Option<(&str, Moved<'_>)>,
        fact: Option<&str>,
    ) -> Result<InnerExpr> {
        struct Sub<'a> {
            view: &'a BoundView,
            semantics: &'a Semantics,
            time_zone: TimeZone,
            moved: Option<(&'a str, Moved<'a>)>,
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
                let carried = self.carried.and_then(|c| c.get(dim_name));
                // Under an aligned comparison, a dimension of the calendar (the retail
                // month, the festival season) is the compared day's: read from the
                // aligned relation, which is the calendar's row of that day.
                let on_calendar = match self.moved {
                    Some((time, Moved::Aligned)) if carried.is_none() => self
                        .semantics
                        .dimensions
                        .get(time)
                        .filter(|t| t.calendar.as_ref().is_some_and(|c| c.table == dim.table))
                        .map(|t| {
                            // The relation's join reads the row's own day.
                            let day = self.carried.and_then(|c| c.get(time)).unwrap_or(&t.expr);
                            on_relation(&dim.expr, time, &day.tables)
                        }),
                    _ => None,
                };
                let source = on_calendar.as_ref().or(carried).unwrap_or(&dim.expr);
                let mut base = source.expr.to_string();
                match self.moved {
                    Some((time, Moved::Spine(column))) if time == dim_name => {
                        base = column.to_string();
                    }
                    Some((time, Moved::Aligned)) if time == dim_name => {
                        let Some(calendar) = &dim.calendar else {
                            self.error = Some(Error::Internal(format!(
                                "dimension {dim_name} has no calendar"
                            )));
                            return ControlFlow::Break(());
                        };
                        // The join's condition reads the row's own day.
                        self.tables.extend(source.tables.iter().cloned());
                        let relation = crate::model::aligned_relation(dim_name);
                        self.tables.insert(relation.clone());
                        base = format!(
                            "{}.{}",
                            super::quote(&relation),
                            super::quote(&calendar.day)
                        );
                    }
                    moved => {
                        self.tables.extend(source.tables.iter().cloned());
                        if matches!(kind, ColumnKind::TimeGrain(..)) && is_zoned(dim) {
                            base = local_time_sql(&base, self.time_zone);
                        }
                        if let Some((time, Moved::Shift(interval))) = moved
                            && time == dim_name
                        {
                            base = shift_sql(&base, "+", interval, &dim.data_type);
                        }
                    }
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
            moved,
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
pub(super) fn is_zoned(dim: &BoundDimension) -> bool {
    matches!(dim.data_type, DataType::Timestamp(_, Some(_)))
}

/// A `timestamptz` value as the local time (a timestamp without time zone) in
/// `time_zone` ([`crate::time_zone::LocalTime`]; each source dialect writes it as its own
/// conversion).
pub(super) fn local_time_sql(value: &str, time_zone: TimeZone) -> String {
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

/// `value + interval` (or `- interval`, `sign`) on a time dimension's values, keeping
/// their type (a date stays a date). Computed on timestamps: PostgreSQL's
/// `date + interval` is a timestamp.
pub(super) fn shift_sql(value: &str, sign: &str, interval: &str, data_type: &DataType) -> String {
    let shifted = format!("CAST(({value}) AS TIMESTAMP) {sign} INTERVAL '{interval}'");
    if *data_type == DataType::Date32 {
        format!("CAST(({shifted}) AS DATE)")
    } else {
        format!("({shifted})")
    }
}

/// `expr` (over the calendar table of time dimension `time`) read from the aligned
/// relation of `time` instead: the calendar's row of the compared day. It reads the
/// relation and what the relation's join reads (`day_tables`, the tables of the row's
/// own day).
fn on_relation(expr: &BoundExpr, time: &str, day_tables: &BTreeSet<String>) -> BoundExpr {
    let relation = crate::model::aligned_relation(time);
    let mut moved = expr.expr.clone();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut moved, |e| {
        if let Expr::CompoundIdentifier(parts) = e
            && let Some(first) = parts.first_mut()
            && expr.tables.contains(&first.value)
        {
            first.value = relation.clone();
        }
        ControlFlow::<()>::Continue(())
    });
    let mut tables = BTreeSet::from([relation]);
    tables.extend(day_tables.iter().cloned());
    BoundExpr {
        expr: moved,
        tables,
    }
}
