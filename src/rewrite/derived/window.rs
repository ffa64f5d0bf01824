//! The part of a derived table that computes a cumulative metric (to-date, trailing and
//! running windows, ending with each period or with its first day) for each period of
//! the grain, and a period-over-period metric against the first day of the month (week,
//! quarter, year) the period starts in (`Window::PeriodStart`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::translate::{is_zoned, local_time_sql};
use super::{
    DerivedSpec, InnerExpr, Part, Period, from_clause, interval, truncate_sql, write_filters,
};
use crate::bind::{AggregateDef, Semantics};
use crate::error::{Error, Result};
use crate::model::{Aggregation, TimeGrain, Window};

/// A cumulative metric: each period of the grain (`b`, the periods the filters select)
/// joined with the rows of its window (`r`, pre-aggregated per value of the time
/// dimension; filters on the time dimension do not apply to it, so a window reaches
/// back before the first period shown; a range implied by them, wide enough for every
/// period's window, does, see `bounds`):
/// ```sql
/// SELECT b.__g.., <aggregate of r.__v> AS __m<j>
/// FROM (SELECT <grain> FROM .. WHERE <filters> GROUP BY <grain>) AS b
/// LEFT JOIN (SELECT <other grain>, <time> AS __t, <partial aggregate> AS __v FROM ..
///            WHERE <filters not on time> GROUP BY <other grain>, <time>) AS r
///   ON b.__g<k> = r.__g<k> .. AND r.__t < <period end> AND r.__t >= <window start>
/// GROUP BY b.__g..
/// ```
/// `<other grain>` leaves out the grain expressions that depend on the period (the month
/// of a day): they are in `b` and label the period, and a window runs across them.
#[allow(clippy::too_many_arguments)]
pub(super) fn window_part(
    spec: &DerivedSpec<'_>,
    semantics: &Semantics,
    fact: &str,
    j: usize,
    def: &AggregateDef,
    time: &str,
    window: Window,
    period: &Period,
) -> Result<Part> {
    let (index, grain) = (period.index, period.grain);
    let dim = semantics
        .dimensions
        .get(time)
        .ok_or_else(|| Error::Internal(format!("dimension {time} is not bound")))?;
    let names = [spec.metrics[j].metric.as_str()];
    // A fact that carries dimensions in its own columns (the time dimension among them)
    // has its periods and rows on those columns.
    let carried = semantics.table_dimensions.get(fact);
    let translated;
    let (grain_exprs, filters) = if carried.is_some() {
        translated = spec.translate_for(semantics, None, fact)?;
        (&translated.0, &translated.1)
    } else {
        (&spec.grain, &spec.filters)
    };
    let time_expr = carried.and_then(|c| c.get(time)).unwrap_or(&dim.expr);

    // b: the periods.
    let needed: BTreeSet<String> = grain_exprs
        .iter()
        .chain(filters)
        .flat_map(|e| e.tables.iter().cloned())
        .collect();
    let from = from_clause(fact, &needed, spec, &names, semantics)?;
    let items: Vec<String> = grain_exprs
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{} AS \"__g{i}\"", g.expr))
        .collect();
    let keys: Vec<String> = grain_exprs.iter().map(|g| g.expr.to_string()).collect();
    let mut periods = format!("SELECT {} FROM {from}", items.join(", "));
    write_filters(&mut periods, filters);
    let _ = write!(periods, " GROUP BY {}", keys.join(", "));

    // r: the rows, per value of the time dimension.
    let on_time = |e: &InnerExpr| {
        e.dimensions
            .iter()
            .any(|d| d == time || crate::model::dimension_of_column(d) == time)
    };
    let others: Vec<(usize, &InnerExpr)> = grain_exprs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index && !period.dependent.contains(i))
        .collect();
    let mut row_filters: Vec<InnerExpr> = filters.iter().filter(|f| !on_time(f)).cloned().collect();
    // Time filters do not apply to the window's rows, but no period asked reads a row
    // outside this range: reading only it spares the rest of the history.
    row_filters.extend(
        super::bounds::Bounds::of(&spec.view_filters, time)
            .for_window(semantics, fact, time, window, grain)?,
    );
    let mut needed: BTreeSet<String> = others
        .iter()
        .map(|(_, e)| *e)
        .chain(&row_filters)
        .flat_map(|e| e.tables.iter().cloned())
        .collect();
    needed.extend(time_expr.tables.iter().cloned());
    needed.extend(def.tables.iter().cloned());
    let from = from_clause(fact, &needed, spec, &names, semantics)?;
    let mut time_sql = time_expr.expr.to_string();
    if is_zoned(dim) {
        time_sql = local_time_sql(&time_sql, spec.time_zone);
    }
    let value = def.value_sql();
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
        Aggregation::Median | Aggregation::PercentileCont | Aggregation::PercentileDisc => {
            return Err(Error::Unsupported {
                message: format!(
                    "{} is a percentile: a running or to-date window of it is not supported",
                    names[0]
                ),
                hint: Some(
                    "ask the percentile at the window's own grain (a month's percentile by month)"
                        .into(),
                ),
            });
        }
    };
    let mut rows = format!("SELECT {} FROM {from}", items.join(", "));
    write_filters(&mut rows, &row_filters);
    let _ = write!(rows, " GROUP BY {}", keys.join(", "));

    // The window of each period.
    let start_of_period = format!("b.\"__g{index}\"");
    let last = if period.first_day {
        TimeGrain::Day
    } else {
        grain
    };
    let mut end = format!("({start_of_period} + INTERVAL '{}')", interval(1, last));
    let start = match window {
        Window::AllTime => None,
        Window::ToDate(of) => Some(truncate_sql(&format!("{end} - INTERVAL '1 day'"), of, dim)),
        Window::Trailing(n, unit) => Some(format!("({end} - INTERVAL '{}')", interval(n, unit))),
        Window::PeriodStart(of) => {
            let start = truncate_sql(&start_of_period, of, dim);
            end = format!("({start} + INTERVAL '1 day')");
            Some(start)
        }
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
