//! The part of a derived table that computes a cumulative metric (to-date, trailing and
//! running windows, ending with each period or with its first day) for each period of
//! the grain, and a period-over-period metric against the first day of the month (week,
//! quarter, year) the period starts in (`Window::PeriodStart`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::Expr;

use super::translate::{Moved, is_zoned, local_time_sql, shift_sql};
use super::{
    Before, DerivedSpec, InnerExpr, Part, Period, from_clause, interval, parse_expr, truncate_sql,
    write_filters,
};
use crate::bind::{AggregateDef, BoundDimension, Semantics};
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
/// Where it can, `b` is generated rather than read ([`Spine`]) and joined with `r` by an
/// inner join: every period whose window holds rows, with rows of its own or not.
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
    earlier: Option<&Before>,
) -> Result<Part> {
    let (index, grain) = (period.index, period.grain);
    let dim = semantics.dimension(time)?;
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
    // (The period itself as the window reads the rows the query selects.)
    let mut row_filters: Vec<InnerExpr> = filters
        .iter()
        .filter(|f| window == Window::Period || !on_time(f))
        .cloned()
        .collect();
    // Time filters do not apply to the window's rows, but no period asked reads a row
    // outside this range: reading only it spares the rest of the history.
    row_filters.extend(
        super::bounds::Bounds::of(&spec.view_filters, time)
            .for_window(semantics, fact, time, window, grain, earlier)?,
    );
    // The metric's own filter selects its rows: a window without such rows is empty
    // (no period), not a window of NULLs.
    if let Some(f) = &def.filter {
        row_filters.push(InnerExpr {
            expr: f.clone(),
            tables: def.tables.clone(),
            dimensions: BTreeSet::new(),
        });
    }
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

    // b: the periods: every period of the range (the time spine) where it can be
    // generated, else the periods that have rows.
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
    let spine = Spine {
        spec,
        semantics,
        time,
        dim,
        window,
        period,
        grain: grain_exprs,
        filters,
        others_from: &from,
        earlier,
        own_filter: def.filter.as_ref().filter(|_| window == Window::Period),
        time_expr: &time_expr.expr,
        data_range: &super::shifted::data_range(
            spec,
            semantics,
            fact,
            &time_expr.expr,
            &time_expr.tables,
        )?,
    }
    .periods(&rows)?;
    // The periods of the spine whose window holds rows; with the period itself as the
    // window, every period of the spine.
    let spine_generated = spine.is_some();
    // `period_agg` above the day: each day of the period has its window, and the
    // period's value is its first (last) day's; the days come from the spine.
    let by_day = period
        .day
        .filter(|_| !matches!(grain, TimeGrain::Day) && !grain.is_sub_daily());
    if by_day.is_some() && !spine_generated {
        return Err(Error::unsupported(
            format!(
                "metric \"{}\" takes each {}'s value on one of its days (period_agg), which needs the days of \"{time}\" generated: a date dimension, and filters that read it alone",
                names[0],
                grain.name()
            ),
            Some(format!("ask for \"{}\" by \"{time}\" (a day)", names[0])),
        ));
    }
    let (periods, join) = match spine {
        Some(periods) if window != Window::Period => (periods, "JOIN"),
        Some(periods) => (periods, "LEFT JOIN"),
        None => (periods, "LEFT JOIN"),
    };

    // The window of each period (or of the period `earlier` before it); with
    // `period_agg`, of each day of the period.
    let own = if by_day.is_some() {
        format!("b.{DAY_COLUMN}")
    } else {
        format!("b.\"__g{index}\"")
    };
    let start_of_period = match earlier {
        Some(Before::Interval(interval)) => shift_sql(&own, "-", interval, &dim.data_type),
        Some(Before::StartOf(of)) => truncate_sql(&own, *of, dim),
        None => own,
    };
    let last = if by_day.is_some() {
        TimeGrain::Day
    } else {
        grain
    };
    let mut end = format!("({start_of_period} + INTERVAL '{}')", interval(1, last));
    let start = match window {
        Window::AllTime => None,
        // An hour lies in one day: its to-date window starts with its own day's (month's).
        Window::ToDate(of) if grain.is_sub_daily() => Some(truncate_sql(&start_of_period, of, dim)),
        Window::ToDate(of) => Some(truncate_sql(&format!("{end} - INTERVAL '1 day'"), of, dim)),
        // Months and years back from the window's last day, not from the day after
        // it (two months before 29 February is 29 December: the window holds 30
        // December to 29 February, as MetricFlow's).
        Window::Trailing(n, unit)
            if !grain.is_sub_daily()
                && matches!(
                    unit,
                    TimeGrain::Month | TimeGrain::Quarter | TimeGrain::Year
                ) =>
        {
            Some(format!(
                "(({end} - INTERVAL '1 day') - INTERVAL '{}' + INTERVAL '1 day')",
                interval(n, unit)
            ))
        }
        Window::Trailing(n, unit) => Some(format!("({end} - INTERVAL '{}')", interval(n, unit))),
        Window::PeriodStart(of) => {
            let start = truncate_sql(&start_of_period, of, dim);
            end = format!("({start} + INTERVAL '1 day')");
            Some(start)
        }
        Window::Period => Some(start_of_period.clone()),
    };
    // Every period of the range (`Window::Period`): the spine has the periods alone,
    // and the rows bring the other grain values (a period without rows has one row,
    // NULL in them, as MetricFlow's join_to_timespine).
    let by_time = window == Window::Period && spine_generated;
    let mut on: Vec<String> = others
        .iter()
        .filter(|_| !by_time)
        // NULL matches NULL: a group of rows without the dimension's value is a group.
        .map(|(i, _)| {
            format!(
                "(b.\"__g{i}\" = r.\"__g{i}\" OR (b.\"__g{i}\" IS NULL AND r.\"__g{i}\" IS NULL))"
            )
        })
        .collect();
    on.push(format!("r.\"__t\" < {end}"));
    if let Some(start) = start {
        on.push(format!("r.\"__t\" >= {start}"));
    }
    let side = |i: usize| {
        if by_time && others.iter().any(|(o, _)| *o == i) {
            "r"
        } else {
            "b"
        }
    };
    let outer_items: Vec<String> = (0..spec.grain.len())
        .map(|i| format!("{}.\"__g{i}\" AS \"__g{i}\"", side(i)))
        .chain(std::iter::once(format!("{outer} AS \"__m{j}\"")))
        .collect();
    let outer_keys: Vec<String> = (0..spec.grain.len())
        .map(|i| format!("{}.\"__g{i}\"", side(i)))
        .collect();
    let sql = match by_day {
        None => format!(
            "SELECT {} FROM ({periods}) AS b {join} ({rows}) AS r ON {} GROUP BY {}",
            outer_items.join(", "),
            on.join(" AND "),
            outer_keys.join(", ")
        ),
        Some(at) => {
            // Each day's value, then the first (last) day of each period, or their
            // average.
            let keys: Vec<String> = (0..spec.grain.len())
                .map(|i| format!("\"__g{i}\""))
                .collect();
            let order = match at {
                crate::model::PeriodAgg::First => "ASC",
                crate::model::PeriodAgg::Last => "DESC",
                crate::model::PeriodAgg::Average => "",
            };
            let days = format!(
                "SELECT {}, b.{DAY_COLUMN} AS {DAY_COLUMN} FROM ({periods}) AS b {join} ({rows}) AS r ON {} GROUP BY {}, b.{DAY_COLUMN}",
                outer_items.join(", "),
                on.join(" AND "),
                outer_keys.join(", ")
            );
            if at == crate::model::PeriodAgg::Average {
                // (The HAVING, true of every group, reads the day: without a reference
                // to it DataFusion's optimizer drops the day from the grouping of `days`
                // and averages one sum over the period's days.)
                return Ok(Part {
                    sql: format!(
                        "SELECT {k}, avg(\"__m{j}\") AS \"__m{j}\" FROM ({days}) AS d GROUP BY {k} HAVING count(DISTINCT {DAY_COLUMN}) > 0",
                        k = keys.join(", ")
                    ),
                    provides: vec![format!("__m{j}")],
                    primary: true,
                    total: false,
                });
            }
            format!(
                "SELECT {k}, \"__m{j}\" FROM (SELECT {k}, \"__m{j}\", row_number() OVER (PARTITION BY {k} ORDER BY {DAY_COLUMN} {order}) AS \"__n\" FROM ({days}) AS d) AS p WHERE \"__n\" = 1",
                k = keys.join(", ")
            )
        }
    };
    Ok(Part {
        sql,
        provides: vec![format!("__m{j}")],
        primary: true,
        total: false,
    })
}

/// The periods of a window part generated rather than read: every period of the time
/// dimension's grain from the first row the window part reads to the end of the range
/// (the filters' upper bound, as far as a window ending then still holds rows, or else
/// the data's last day, whatever the filters), crossed with the other grain values that have rows, under the filters. Joined
/// (inner) with the rows, a period keeps a value whenever its window holds rows, whether
/// or not the period itself has any, as MetricFlow's time spine gives.
struct Spine<'a> {
    spec: &'a DerivedSpec<'a>,
    semantics: &'a Semantics,
    time: &'a str,
    dim: &'a BoundDimension,
    window: Window,
    period: &'a Period,
    grain: &'a [InnerExpr],
    filters: &'a [InnerExpr],
    /// The FROM clause reaching every table of the grain and the filters.
    others_from: &'a str,
    /// The windows are those of the periods this long before.
    earlier: Option<&'a Before>,
    /// Every period of the range (`Window::Period`): the metric's own filter, whose
    /// conditions on the time dimension alone select the periods too.
    own_filter: Option<&'a Expr>,
    /// The time dimension's expression on the rows.
    time_expr: &'a Expr,
    /// `SELECT min(<time>) AS "__lo", max(<time>) AS "__hi" FROM <fact>`: the data's
    /// first and last day, whatever the filters (the ends of the time spine).
    data_range: &'a str,
}

/// The spine's column: one day per row.
const DAY: &str = "s.\"__day\"";

/// The periods' column of their days, with `period_agg` above the day.
const DAY_COLUMN: &str = "\"__day\"";

impl Spine<'_> {
    /// `SELECT <grain> AS __g.. FROM <days> [CROSS JOIN <other grain values>] WHERE <time
    /// filters> GROUP BY <grain>`, or `None` where the periods cannot be generated: a time
    /// dimension that is not a date, a window at a coarser period's first day, a grain
    /// expression or filter that mixes the time dimension with others, or a grain
    /// expression on time that is not the period or a label of it.
    fn periods(&self, rows: &str) -> Result<Option<String>> {
        // (At day grain a window that ends with the period's first day ends with the
        // period: `period_agg = "first"` changes nothing there.)
        if self.dim.data_type != DataType::Date32 {
            return Ok(None);
        }
        // A coarser period's value at the first day of the month (week, ...) it starts
        // in is its first day's: the spine's days are the periods' first days, and a
        // period whose first day is outside the range (the data's, the filters') has
        // none (MetricFlow's spine of days).
        let first_days =
            matches!(self.window, Window::PeriodStart(_)) && self.period.grain != TimeGrain::Day;
        let mut first_day_condition = None;
        let translate = |e: &Expr, moved| {
            InnerExpr::translate(
                e,
                self.spec.view,
                self.semantics,
                self.spec.time_zone,
                moved,
                None,
            )
        };
        // Where an expression belongs: on the spine (it reads only the time dimension),
        // on the rows (it does not read it), or nowhere (it mixes both).
        let place = |e: &Expr| -> Result<Place> {
            let moved = translate(e, Some((self.time, Moved::Spine(DAY))))?;
            Ok(if moved.tables.is_empty() {
                Place::Spine(Box::new(moved))
            } else if moved.expr == translate(e, None)?.expr {
                Place::Rows
            } else {
                Place::Mixed
            })
        };
        let mut items = Vec::new();
        let mut keys = Vec::new();
        let mut others = Vec::new();
        let mut other_keys = Vec::new();
        for (i, (view_expr, row_expr)) in self.spec.view_grain.iter().zip(self.grain).enumerate() {
            match place(view_expr)? {
                Place::Spine(moved)
                    if i == self.period.index || self.period.dependent.contains(&i) =>
                {
                    if first_days && i == self.period.index {
                        first_day_condition = Some(InnerExpr {
                            expr: parse_expr(&format!("{} = {DAY}", moved.expr))?,
                            tables: BTreeSet::new(),
                            dimensions: BTreeSet::new(),
                        });
                    }
                    items.push(format!("{} AS \"__g{i}\"", moved.expr));
                    keys.push(moved.expr.to_string());
                }
                // Every period of the range: the periods alone (the rows bring the
                // other values).
                Place::Rows if self.window == Window::Period => {}
                Place::Rows => {
                    others.push(format!("{} AS \"__g{i}\"", row_expr.expr));
                    other_keys.push(row_expr.expr.to_string());
                    items.push(format!("o.\"__g{i}\" AS \"__g{i}\""));
                    keys.push(format!("o.\"__g{i}\""));
                }
                _ => return Ok(None),
            }
        }
        // `period_agg` above the day: each day of a period is a row of its own.
        if self.period.day.is_some()
            && self.period.grain != TimeGrain::Day
            && !self.period.grain.is_sub_daily()
        {
            items.push(format!("{DAY} AS {DAY_COLUMN}"));
            keys.push(DAY.to_string());
        }
        let mut on_time: Vec<InnerExpr> = first_day_condition.into_iter().collect();
        if let Some(filter) = self.own_filter {
            on_time.extend(
                on_spine(filter, self.time_expr)?
                    .into_iter()
                    .map(|expr| InnerExpr {
                        expr,
                        tables: BTreeSet::new(),
                        dimensions: BTreeSet::new(),
                    }),
            );
        }
        let mut not_on_time = Vec::new();
        for (view_expr, row_expr) in self.spec.view_filters.iter().zip(self.filters) {
            match place(view_expr)? {
                Place::Spine(moved) => on_time.push(*moved),
                Place::Rows => not_on_time.push(row_expr.clone()),
                Place::Mixed => return Ok(None),
            }
        }

        // The range: from the first row read to the upper bound (as far as a window
        // still holds rows) or the last row.
        // Under `earlier`, each period reads the rows of the one before it: the range
        // moves forward by as much.
        let moved = |bound: &str| match self.earlier {
            Some(Before::Interval(interval)) => {
                shift_sql(bound, "+", interval, &self.dim.data_type)
            }
            Some(Before::StartOf(_)) | None => bound.to_string(),
        };
        // The range ends with the data's last day, not the last row the filters keep
        // (a trailing window of a region without rows lately still has its days), nor
        // later under `earlier` (a period after the data has no rows of its own).
        let (first, last) = (moved("x.\"__lo\""), "x.\"__hi\"");
        let reach = match self.window {
            Window::AllTime | Window::PeriodStart(_) | Window::Period => last.to_string(),
            Window::Trailing(n, unit) => format!(
                "CAST((CAST({last} AS TIMESTAMP) + INTERVAL '{}' - INTERVAL '1 day') AS DATE)",
                interval(n, unit)
            ),
            Window::ToDate(of) => format!(
                "CAST(({} + INTERVAL '{}' - INTERVAL '1 day') AS DATE)",
                truncate_sql(last, of, self.dim),
                interval(1, of)
            ),
        };
        let bounds = super::bounds::Bounds::of(&self.spec.view_filters, self.time);
        // Without an upper bound the range ends with the data, for every window alike:
        // a period one window part adds after it would have no value of the others (an
        // all-time total is defined on every later day).
        let end = match bounds.upper() {
            Some(upper) if matches!(self.window, Window::AllTime | Window::Period) => {
                format!("CAST({upper} AS DATE)")
            }
            Some(upper) => format!("least(CAST({upper} AS DATE), {reach})"),
            None => last.to_string(),
        };
        // Every period of the range: from the filters' lower bound or else the data's
        // first day (not the first row the filters keep).
        let (first, range) = if self.window == Window::Period {
            // (Both ends constant, the engine would fold the series into a list and
            // push it to the warehouse: the data's first day keeps it the engine's.)
            let first = match bounds.lower() {
                Some(lower) => format!("least(CAST({lower} AS DATE), {first})"),
                None => first,
            };
            (first, format!("({}) AS x", self.data_range))
        } else {
            (
                first,
                format!(
                    "(SELECT min(r.\"__t\") AS \"__lo\", (SELECT d.\"__hi\" FROM ({}) AS d) AS \"__hi\" FROM ({rows}) AS r) AS x",
                    self.data_range
                ),
            )
        };
        let days = format!(
            "SELECT unnest(generate_series({first}, {end}, INTERVAL '1 day')) AS \"__day\" FROM {range}"
        );
        let mut sql = format!("SELECT {} FROM ({days}) AS s", items.join(", "));
        if !others.is_empty() {
            let mut o = format!("SELECT {} FROM {}", others.join(", "), self.others_from);
            write_filters(&mut o, &not_on_time);
            let _ = write!(o, " GROUP BY {}", other_keys.join(", "));
            let _ = write!(sql, " CROSS JOIN ({o}) AS o");
        }
        write_filters(&mut sql, &on_time);
        let _ = write!(sql, " GROUP BY {}", keys.join(", "));
        Ok(Some(sql))
    }
}

/// The conjuncts of a metric's own filter that read its time dimension alone, on the
/// spine's day: `ds >= '2020-01-02'` gives `s.__day >= '2020-01-02'` (a period of the
/// range that the metric's filter leaves out is no period of the metric).
fn on_spine(filter: &Expr, time: &Expr) -> Result<Vec<Expr>> {
    use datafusion::sql::sqlparser::ast::{visit_expressions, visit_expressions_mut};
    use std::ops::ControlFlow;
    let day = parse_expr(DAY)?;
    let mut out = Vec::new();
    for mut conjunct in crate::sql::split_and(filter.clone()) {
        let mut moved = false;
        let _ = visit_expressions_mut(&mut conjunct, |e| {
            if *e == *time {
                *e = day.clone();
                moved = true;
            }
            ControlFlow::<()>::Continue(())
        });
        let reads_rows = visit_expressions(&conjunct, |e| match e {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) if *e != day => {
                ControlFlow::Break(())
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                ControlFlow::Break(())
            }
            _ => ControlFlow::Continue(()),
        })
        .is_break();
        if moved && !reads_rows {
            out.push(conjunct);
        }
    }
    Ok(out)
}

/// Where a grain expression or filter of a window part is computed.
enum Place {
    /// On the generated periods: it reads the time dimension only (translated here).
    Spine(Box<InnerExpr>),
    /// On the rows: it does not read the time dimension.
    Rows,
    /// It reads the time dimension and other columns.
    Mixed,
}
