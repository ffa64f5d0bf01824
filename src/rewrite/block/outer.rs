//! The block's expressions over its derived table: an aggregate around a metric is the
//! metric at the grain, an aggregate over dimensions becomes a column `__a<k>`, and each
//! metric compiles to the physical columns `__m<j>` it is computed from (composites
//! substitute their parts, period-over-period compares a shifted part, cumulative
//! metrics read a window part).

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType as SqlType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Value,
    VisitorMut, visit_expressions, visit_expressions_mut,
};

use super::{COLLAPSING, counts_rows, function_name, is_aggregate, refs};
use crate::bind::{BoundView, ColumnKind, Definition, Semantics};
use crate::error::{Error, Result};
use crate::model::{Aggregation, Calculation, Compare, Show, TimeGrain, Window};
use crate::rewrite::derived::{Before, Earlier, Period, Physical, Transform};

/// `COUNT(*)` (or `COUNT(<constant>)`) counts the rows of the view, as `SELECT *` returns
/// them: one per combination of its dimensions. It becomes the marker aggregate
/// [`crate::rewrite::derived::VIEW_ROWS`]`(<every dimension>)`, which the derived table computes by
/// grouping twice (see [`super::derived`]).
fn view_row_count(f: &datafusion::sql::sqlparser::ast::Function, view: &BoundView) -> Option<Expr> {
    if !counts_rows(&Expr::Function(f.clone())) {
        return None;
    }
    let dimensions: Vec<String> = view
        .columns
        .iter()
        .filter(|c| matches!(c.kind, ColumnKind::Dimension(_)))
        .map(|c| c.name.clone())
        .collect();
    if dimensions.is_empty() {
        return None;
    }
    crate::sql::parse_expr(&format!(
        "{}({})",
        crate::rewrite::derived::VIEW_ROWS,
        dimensions.join(", ")
    ))
}

/// Turn block expressions into expressions over the derived table.
pub(super) struct Outer<'a> {
    pub(super) view: &'a BoundView,
    pub(super) semantics: &'a Semantics,
    pub(super) grain: &'a [Expr],
    /// The derived table's metric columns `__m<j>`.
    pub(super) metrics: Vec<Physical>,
    /// The model metrics the block names.
    pub(super) named: Vec<String>,
    pub(super) aggregates: Vec<Expr>,
    pub(super) output_names: Option<&'a HashSet<String>>,
    pub(super) error: Option<Error>,
}

fn column(name: String) -> Expr {
    Expr::Identifier(Ident::with_quote('"', name))
}

impl Outer<'_> {
    /// An aggregate call: around a metric it is the metric at the grain; over dimensions
    /// it becomes an `__a<k>` column of the derived table.
    fn aggregate(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = &*expr else {
            return ControlFlow::Continue(());
        };
        let name = function_name(f);
        if refs(expr, self.view).metrics {
            let single = match &f.args {
                FunctionArguments::List(list) if list.args.len() == 1 => match &list.args[0] {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                },
                _ => None,
            };
            let conditional = single
                .as_ref()
                .filter(|_| COLLAPSING.contains(&name.as_str()))
                .and_then(|arg| conditional(arg, f.filter.as_deref(), self.view));
            match single {
                _ if conditional.is_some() => {
                    if let Some(c) = conditional {
                        match self.under_condition(c) {
                            Ok(e) => *expr = e,
                            Err(e) => {
                                self.error = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
                Some(arg) if COLLAPSING.contains(&name.as_str()) && f.filter.is_none() => {
                    *expr = Expr::Nested(Box::new(arg));
                }
                _ => {
                    self.error = Some(Error::unsupported(
                        format!("{name}() over a metric is not supported"),
                        Some(
                            "a metric is already aggregated at the query's grain: select it directly, or wrap it in SUM/MIN/MAX/AVG"
                                .to_string(),
                        ),
                    ));
                    return ControlFlow::Break(());
                }
            }
        } else {
            if let Some(rows) = view_row_count(f, self.view) {
                *expr = rows;
            }
            let k = match self.aggregates.iter().position(|a| a == expr) {
                Some(k) => k,
                None => {
                    self.aggregates.push(expr.clone());
                    self.aggregates.len() - 1
                }
            };
            *expr = column(format!("__a{k}"));
        }
        ControlFlow::Continue(())
    }
}

/// An aggregate that restricts the metrics it wraps to rows meeting a condition on
/// dimensions, as a BI tool's calculated field writes it: `SUM(CASE WHEN <condition> THEN
/// <metrics> [ELSE 0] END)` or `SUM(<metrics>) FILTER (WHERE <condition>)`.
struct Conditional {
    condition: Expr,
    value: Expr,
    /// `ELSE 0`: no row meeting the condition is 0, not NULL.
    else_zero: bool,
}

/// The condition and value of `arg` (an aggregate's one argument, with its FILTER), when
/// the condition reads dimensions only and the value metrics only.
fn conditional(arg: &Expr, filter: Option<&Expr>, view: &BoundView) -> Option<Conditional> {
    let dimensions_only = |e: &Expr| {
        let r = refs(e, view);
        !r.metrics && !super::contains_aggregate(e)
    };
    let metrics_only = |e: &Expr| {
        let r = refs(e, view);
        r.metrics && !r.dimensions
    };
    if let Some(condition) = filter {
        return (dimensions_only(condition) && metrics_only(arg)).then(|| Conditional {
            condition: condition.clone(),
            value: arg.clone(),
            else_zero: false,
        });
    }
    let Expr::Case {
        operand: None,
        conditions,
        else_result,
        ..
    } = arg
    else {
        return None;
    };
    let [when] = conditions.as_slice() else {
        return None;
    };
    let else_zero = match else_result.as_deref() {
        None => false,
        Some(Expr::Value(v)) => match &v.value {
            Value::Null => false,
            Value::Number(n, _) if n.parse::<f64>().is_ok_and(|x| x == 0.0) => true,
            _ => return None,
        },
        Some(_) => return None,
    };
    (dimensions_only(&when.condition) && metrics_only(&when.result)).then(|| Conditional {
        condition: when.condition.clone(),
        value: when.result.clone(),
        else_zero,
    })
}

impl Outer<'_> {
    /// The metrics of `c.value` computed over the rows meeting `c.condition` only, at the
    /// block's grain: each group has one such value, so SUM, MIN, MAX and AVG of it over
    /// the group (what the query asks) are that value.
    fn under_condition(&mut self, c: Conditional) -> Result<Expr> {
        let transform = Transform::Where {
            condition: Box::new(c.condition),
        };
        let mut value = c.value;
        let mut error = None;
        let _ = visit_expressions_mut(&mut value, |e| {
            if let Expr::Identifier(ident) = e
                && ident.quote_style.is_none()
                && let Some(ColumnKind::Metric(m)) = self.view.column(&ident.value).map(|c| &c.kind)
            {
                let m = m.clone();
                if !self.named.contains(&m) {
                    self.named.push(m.clone());
                }
                match self.metric(&m, &transform) {
                    Ok(part) => *e = part,
                    Err(err) => {
                        error = Some(err);
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = error {
            return Err(e);
        }
        let value = Expr::Nested(Box::new(value));
        if !c.else_zero {
            return Ok(value);
        }
        crate::sql::parse_expr(&format!("coalesce({value}, 0)"))
            .ok_or_else(|| Error::Internal(format!("generated expression coalesce({value}, 0)")))
    }
}

impl Outer<'_> {
    /// The expression over the derived table's columns that computes metric `name`
    /// under `transform`.
    fn metric(&mut self, name: &str, transform: &Transform) -> Result<Expr> {
        let value = self.metric_value(name, transform)?;
        match self.semantics.metrics.get(name).and_then(|m| m.fill) {
            None => Ok(value),
            Some(fill) => Ok(coalesce(value, fill)),
        }
    }

    /// The metric's value, NULL where it has none (see [`Outer::metric`] for the fill).
    fn metric_value(&mut self, name: &str, transform: &Transform) -> Result<Expr> {
        let Some(metric) = self.semantics.metrics.get(name) else {
            return Err(Error::Internal(format!("metric {name} is not bound")));
        };
        if matches!(transform, Transform::Where { .. }) && !under_condition_ok(metric) {
            return Err(Error::unsupported(
                format!(
                    "metric \"{name}\" compares periods, accumulates them or divides by a total: a condition inside an aggregate of it is not supported"
                ),
                Some("filter the query with WHERE instead, or define a derived metric with that filter".into()),
            ));
        }
        match &metric.definition {
            Definition::Aggregate(_) => {
                let physical = Physical {
                    metric: name.to_string(),
                    transform: transform.clone(),
                };
                let j = match self.metrics.iter().position(|x| *x == physical) {
                    Some(j) => j,
                    None => {
                        self.metrics.push(physical);
                        self.metrics.len() - 1
                    }
                };
                Ok(column(format!("__m{j}")))
            }
            Definition::Composite { formula, .. } => {
                let mut formula = formula.clone();
                let mut error = None;
                let _ = visit_expressions_mut(&mut formula, |e| {
                    if let Expr::Identifier(ident) = e
                        && let Some(of) = ident.value.strip_prefix(crate::bind::TOTAL_PREFIX)
                        && ident.quote_style.is_some()
                    {
                        let of = of.to_string();
                        // The rows of the answer come from the metric at the grain.
                        let plain = self.metric(&of, transform);
                        match plain.and_then(|_| self.metric(&of, &Transform::Total)) {
                            Ok(part) => *e = Expr::Nested(Box::new(part)),
                            Err(err) => {
                                error = Some(err);
                                return ControlFlow::Break(());
                            }
                        }
                    } else if let Expr::Identifier(ident) = e
                        && ident.quote_style.is_none()
                    {
                        match self.metric(&ident.value, transform) {
                            Ok(part) => *e = Expr::Nested(Box::new(part)),
                            Err(err) => {
                                error = Some(err);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    ControlFlow::Continue(())
                });
                match error {
                    Some(e) => Err(e),
                    None => Ok(Expr::Nested(formula)),
                }
            }
            Definition::PeriodOverPeriod {
                base,
                time,
                compare,
                show,
            } => {
                // Periods of a grain of the calendar: grouped by that grain (and not by
                // time), each period against the whole earlier one; else each day
                // against the day at the same position in it.
                let shift = match compare {
                    Compare::CalendarPeriods(n, of) => {
                        let whole = self.time_grain(name, time).is_err()
                            && self.grain.iter().any(|g| {
                                matches!(g, Expr::Identifier(id)
                                    if matches!(self.view.column(&id.value).map(|c| &c.kind),
                                        Some(ColumnKind::Dimension(d)) if d == of))
                            });
                        Some(crate::rewrite::derived::CalendarShift {
                            grain: of.clone(),
                            periods: *n,
                            whole,
                        })
                    }
                    _ => None,
                };
                if *compare == Compare::Aligned || shift.is_some() {
                    if shift.as_ref().is_none_or(|s| !s.whole) {
                        let (_, grain) = self.time_grain(name, time)?;
                        self.allowed_grain(name, time, grain)?;
                    }
                    // Each day's rows count for the days its calendar aligns with it.
                    let offset = *show == Show::Value;
                    let aligned = Transform::Aligned {
                        time: time.clone(),
                        primary: offset,
                        shift,
                    };
                    let earlier = self.metric(base, &aligned)?;
                    if offset {
                        return Ok(earlier);
                    }
                    let current = self.metric(base, transform)?;
                    return compared(*show, &current, &earlier);
                }
                let (index, grain) = self.time_grain(name, time)?;
                self.allowed_grain(name, time, grain)?;
                // By day, calendar months and years back from each day (the 29th to
                // the 31st of March are all a month after the 29th of February): each
                // day's value is the day the interval before it's, a window of one
                // day ending that long before (MetricFlow's spine of days joined on
                // `ds - INTERVAL`); rows moved forward would land on one day only. (A
                // time dimension of instants has no generated days: its rows move.)
                let dates =
                    self.semantics.dimensions.get(time).is_some_and(|d| {
                        d.data_type == datafusion::arrow::datatypes::DataType::Date32
                    });
                if grain == TimeGrain::Day
                    && dates
                    && let Compare::Offset(
                        n,
                        unit @ (TimeGrain::Month | TimeGrain::Quarter | TimeGrain::Year),
                    ) = compare
                {
                    let offset = *show == Show::Value;
                    let dependent = self.period_labels(name, time, index, grain)?;
                    let day_before = Transform::DayBefore {
                        time: time.clone(),
                        interval: crate::rewrite::derived::interval(*n, *unit),
                        period: Period {
                            index,
                            grain,
                            dependent,
                            day: None,
                        },
                        periods: offset,
                    };
                    let earlier = self.metric(base, &day_before)?;
                    if offset {
                        return Ok(earlier);
                    }
                    let current = self.metric(base, transform)?;
                    return compared(*show, &current, &earlier);
                }
                let interval = match (compare, grain) {
                    (Compare::PeriodStart(of), _) => {
                        // One day's rows for every period that starts in the `of`
                        // period: a window part, not a shift.
                        let dependent = self.period_labels(name, time, index, grain)?;
                        let start = Transform::Window {
                            time: time.clone(),
                            window: Window::PeriodStart(*of),
                            period: Period {
                                index,
                                grain,
                                dependent,
                                day: None,
                            },
                            earlier: None,
                            // A comparison has the periods of this period's value.
                            primary: *show == Show::Value,
                        };
                        let earlier = self.metric(base, &start)?;
                        if *show == Show::Value {
                            // The first day's value alone: this period's is not asked.
                            return Ok(earlier);
                        }
                        let current = self.metric(base, transform)?;
                        return compared(*show, &current, &earlier);
                    }
                    (Compare::Offset(n, unit), _) => crate::rewrite::derived::interval(*n, *unit),
                    (Compare::PreviousPeriod, g) => crate::rewrite::derived::interval(1, g),
                    (Compare::SamePeriodLastYear, TimeGrain::Week) => {
                        crate::rewrite::derived::interval(52, TimeGrain::Week)
                    }
                    (Compare::SamePeriodLastYear, TimeGrain::Day) => {
                        crate::rewrite::derived::interval(1, TimeGrain::Year)
                    }
                    (Compare::SamePeriodLastYear, _)
                    | (Compare::Aligned, _)
                    | (Compare::CalendarPeriods(..), _) => {
                        crate::rewrite::derived::interval(1, TimeGrain::Year)
                    }
                };
                // An offset metric (the earlier value alone) has a row for each period
                // whose earlier period has rows, with rows of its own or not. A
                // comparison has the periods of this period's value, always computed.
                let offset = *show == Show::Value;
                // An earlier period counted in periods of the grain (`1 week` by week,
                // the previous period) is the whole earlier period, whatever days of
                // this one the query's range selects.
                let whole = match compare {
                    Compare::Offset(_, unit) => *unit == grain,
                    Compare::PreviousPeriod => true,
                    _ => false,
                };
                // The data's range ends the shifted periods. A shift shorter than the
                // grain's period (5 days by month) moves rows day by day: those moved
                // past the data's last day are not in it (MetricFlow's spine of days).
                let bound = match compare {
                    Compare::Offset(_, unit) if unit.rank() < grain.rank() => {
                        if unit.rank() < TimeGrain::Day.rank() {
                            *unit
                        } else {
                            TimeGrain::Day
                        }
                    }
                    _ => grain,
                };
                let shifted = Transform::Shift {
                    time: time.clone(),
                    interval,
                    periods: offset.then_some(bound),
                    whole,
                };
                let earlier = self.metric(base, &shifted)?;
                if offset {
                    return Ok(earlier);
                }
                let current = self.metric(base, transform)?;
                compared(*show, &current, &earlier)
            }
            Definition::Conversion(c) => {
                if *transform != Transform::Plain {
                    return Err(Error::unsupported(
                        format!(
                            "conversion metric \"{name}\" cannot be compared with another period or a total"
                        ),
                        Some(format!("select \"{name}\" by itself")),
                    ));
                }
                // The base metric is always computed: its groups are the rows.
                let base = self.metric(&c.base, transform)?;
                let conversions = self.metric(
                    &c.conversion,
                    &Transform::Conversion {
                        base: c.base.clone(),
                        entity: c.entity.clone(),
                        time: c.time.clone(),
                        conversion_time: c.conversion_time.clone(),
                        window: c.window,
                        constant: c.constant.clone(),
                    },
                )?;
                let counts = self
                    .semantics
                    .metrics
                    .get(&c.conversion)
                    .and_then(|m| m.aggregate())
                    .is_some_and(|a| {
                        matches!(a.agg, Aggregation::Count | Aggregation::CountDistinct)
                    });
                // No credited event: none converted (a count is 0).
                let conversions = if counts {
                    format!("coalesce({conversions}, 0)")
                } else {
                    conversions.to_string()
                };
                let sql = match c.calculation {
                    Calculation::Conversions => conversions,
                    Calculation::ConversionRate => format!(
                        "CAST({conversions} AS DOUBLE PRECISION) / CAST(NULLIF({base}, 0) AS DOUBLE PRECISION)"
                    ),
                };
                crate::sql::parse_expr(&sql)
                    .map(|e| Expr::Nested(Box::new(e)))
                    .ok_or_else(|| Error::Internal(format!("generated expression {sql}")))
            }
            Definition::Cumulative {
                base,
                time,
                window,
                day,
            } => {
                // Every period of the range is about periods, and a running total of
                // all time not grouped by periods is all the rows': the base's value.
                if matches!(window, Window::Period | Window::AllTime)
                    && !self
                        .grain
                        .iter()
                        .any(|g| time_grain_of(g, time, self.view).is_some())
                {
                    return self.metric(base, transform);
                }
                let (index, grain) = self.time_grain(name, time)?;
                self.allowed_grain(name, time, grain)?;
                let is_instant = self.semantics.dimensions.get(time).is_some_and(|d| {
                    matches!(
                        d.data_type,
                        datafusion::arrow::datatypes::DataType::Timestamp(..)
                    )
                });
                if grain.is_sub_daily() && !is_instant {
                    return Err(Error::unsupported(
                        format!(
                            "metric \"{name}\" accumulates over \"{time}\", whose values are dates, and this query asks for it per {}",
                            grain.name()
                        ),
                        Some(format!(
                            "ask for \"{name}\" by \"{time}\" (a day) or a coarser grain"
                        )),
                    ));
                }
                let dependent = self.period_labels(name, time, index, grain)?;
                // Under a shift on the same time dimension (a period-over-period metric
                // of this one), the window of the earlier period.
                let earlier = match transform {
                    Transform::Shift {
                        time: shifted,
                        interval,
                        periods,
                        ..
                    } if shifted == time => Some(Earlier {
                        before: Before::Interval(interval.clone()),
                        periods: periods.is_some(),
                    }),
                    // The day a calendar interval before each day: the window ending then.
                    Transform::DayBefore {
                        time: shifted,
                        interval,
                        periods,
                        ..
                    } if shifted == time => Some(Earlier {
                        before: Before::Interval(interval.clone()),
                        periods: *periods,
                    }),
                    // Each day's value at the first day of its month (week, ...): the
                    // window ending with that day.
                    Transform::Window {
                        time: shifted,
                        window: Window::PeriodStart(of),
                        primary,
                        ..
                    } if shifted == time && grain == TimeGrain::Day => Some(Earlier {
                        before: Before::StartOf(*of),
                        periods: *primary,
                    }),
                    Transform::Shift { time: shifted, .. }
                    | Transform::DayBefore { time: shifted, .. }
                    | Transform::Aligned { time: shifted, .. } => {
                        return Err(Error::unsupported(
                            format!(
                                "metric \"{name}\" accumulates over \"{time}\" and is compared over \"{shifted}\": a comparison of a cumulative metric is over its own time dimension"
                            ),
                            None,
                        ));
                    }
                    // (A first day's value of a formula over a cumulative metric.)
                    Transform::Window { .. } => {
                        return Err(Error::unsupported(
                            format!(
                                "metric \"{name}\" accumulates over \"{time}\" and is asked at the first day of each period: a first day's value of a cumulative metric is defined by day"
                            ),
                            Some(format!("ask for it by \"{time}\" (a day)")),
                        ));
                    }
                    _ => None,
                };
                let windowed = Transform::Window {
                    time: time.clone(),
                    window: *window,
                    period: Period {
                        index,
                        grain,
                        dependent,
                        day: *day,
                    },
                    earlier,
                    primary: true,
                };
                self.metric(base, &windowed)
            }
        }
    }

    /// Where the block's grain has time dimension `time` at its finest grain (the periods
    /// of a metric computed per period), and that grain; an error naming `metric` when it
    /// has none.
    fn time_grain(&self, metric: &str, time: &str) -> Result<(usize, TimeGrain)> {
        let mut finest: Option<(usize, TimeGrain)> = None;
        for (i, g) in self.grain.iter().enumerate() {
            if let Some(grain) = time_grain_of(g, time, self.view)
                && finest.is_none_or(|(_, f)| grain.rank() < f.rank())
            {
                finest = Some((i, grain));
            }
        }
        if let Some(found) = finest {
            return Ok(found);
        }
        Err(Error::unsupported(
            format!(
                "metric \"{metric}\" is computed per period of \"{time}\", and this query is not grouped by \"{time}\""
            ),
            Some(format!(
                "add \"{time}\" or one of its grains (such as \"{time}__month\") to the select list or GROUP BY"
            )),
        ))
    }

    /// A cumulative or period-over-period metric restricted to some grains (`grains` in
    /// the model) refuses the others: a number it cannot give as its definition means is never returned.
    fn allowed_grain(&self, metric: &str, time: &str, grain: TimeGrain) -> Result<()> {
        let Some(grains) = self
            .semantics
            .model
            .metrics
            .iter()
            .find(|m| m.name.get_ref() == metric)
            .and_then(|m| m.grains.as_ref())
        else {
            return Ok(());
        };
        if grains.get_ref().iter().any(|g| g == grain.name()) {
            return Ok(());
        }
        let columns: Vec<String> = grains
            .get_ref()
            .iter()
            .map(|g| match g.as_str() {
                "day" => format!("\"{time}\""),
                g => format!("\"{time}__{g}\""),
            })
            .collect();
        Err(Error::unsupported(
            format!(
                "metric \"{metric}\" is defined at the {} grain of \"{time}\" only, and this query asks for the {} grain",
                grains.get_ref().join(", "),
                grain.name()
            ),
            Some(format!("group by {} instead", columns.join(" or "))),
        ))
    }

    /// The other grain expressions on time dimension `time` when the periods are the
    /// grain expression at `index` (grain `grain`): each must be a function of the period
    /// (a coarser grain the period nests in, or any expression of the day when the
    /// periods are days), so that a window accumulating over periods runs across it. A
    /// week beside a month (or `EXTRACT(dow ..)` beside a month) splits periods, and a
    /// to-date or trailing value per such piece is no governed number: 0A000.
    fn period_labels(
        &self,
        metric: &str,
        time: &str,
        index: usize,
        grain: TimeGrain,
    ) -> Result<Vec<usize>> {
        let mut labels = Vec::new();
        for (i, g) in self.grain.iter().enumerate() {
            if i == index {
                continue;
            }
            let (on_time, only_time) = time_references(g, time, self.view);
            if !on_time {
                continue;
            }
            let labels_period = match time_grain_of(g, time, self.view) {
                Some(other) => grain.nests_in(other),
                None => grain == TimeGrain::Day && only_time,
            };
            if !labels_period {
                return Err(Error::unsupported(
                    format!(
                        "metric \"{metric}\" accumulates per {} of \"{time}\", and this query also groups by {g}, which splits those periods",
                        grain.name()
                    ),
                    Some(format!(
                        "group by one grain of \"{time}\", or add grains that contain whole periods (a day with its week or month, a month with its quarter or year)"
                    )),
                ));
            }
            labels.push(i);
        }
        Ok(labels)
    }
}

/// What a period-over-period column shows, from this period's value and the earlier one.
fn compared(show: Show, current: &Expr, earlier: &Expr) -> Result<Expr> {
    let sql = match show {
        Show::Value => format!("{earlier}"),
        Show::Difference => format!("({current}) - ({earlier})"),
        Show::Growth => format!(
            "CAST(({current}) - ({earlier}) AS DOUBLE PRECISION) / CAST(NULLIF({earlier}, 0) AS DOUBLE PRECISION)"
        ),
    };
    crate::sql::parse_expr(&sql)
        .map(|e| Expr::Nested(Box::new(e)))
        .ok_or_else(|| Error::Internal(format!("generated expression {sql}")))
}

/// Whether `expr` reads time dimension `time` (itself or one of its grain columns), and
/// whether it reads no other column of the view.
fn time_references(expr: &Expr, time: &str, view: &BoundView) -> (bool, bool) {
    let (mut on_time, mut only_time) = (false, true);
    let _ = visit_expressions(expr, |e| {
        if let Expr::Identifier(id) = e {
            match view.column(&id.value).map(|c| &c.kind) {
                Some(ColumnKind::Dimension(d) | ColumnKind::TimeGrain(d, _)) if d == time => {
                    on_time = true
                }
                Some(_) => only_time = false,
                None => {}
            }
        }
        ControlFlow::<()>::Continue(())
    });
    (on_time, only_time)
}

/// The grain at which `expr` (a grain expression of the block) buckets time dimension
/// `time`: the dimension itself (day), a grain column (`order_date__month`), or
/// `date_trunc('<grain>', <dimension>)`.
fn time_grain_of(expr: &Expr, time: &str, view: &BoundView) -> Option<TimeGrain> {
    match expr {
        Expr::Identifier(id) => match view.column(&id.value).map(|c| &c.kind) {
            Some(ColumnKind::Dimension(d)) if d == time => Some(TimeGrain::Day),
            Some(ColumnKind::TimeGrain(d, g)) if d == time => Some(*g),
            _ => None,
        },
        Expr::Nested(inner) => time_grain_of(inner, time, view),
        // A cast to a date or timestamp keeps the buckets (BI tools cast grain columns).
        Expr::Cast {
            expr,
            data_type: SqlType::Date | SqlType::Timestamp(..) | SqlType::Datetime(_),
            ..
        } => time_grain_of(expr, time, view),
        Expr::Function(f) if function_name(f) == "date_trunc" => {
            let FunctionArguments::List(list) = &f.args else {
                return None;
            };
            let [
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(unit))),
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(id))),
            ] = list.args.as_slice()
            else {
                return None;
            };
            let unit = match &unit.value {
                Value::SingleQuotedString(u) => u.to_lowercase(),
                _ => return None,
            };
            let is_time = matches!(
                view.column(&id.value).map(|c| &c.kind),
                Some(ColumnKind::Dimension(d)) if d == time
            );
            if !is_time {
                return None;
            }
            TimeGrain::from_name(&unit)
        }
        _ => None,
    }
}

impl VisitorMut for Outer<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(i) = self.grain.iter().position(|g| g == expr) {
            *expr = column(format!("__g{i}"));
            return ControlFlow::Continue(());
        }
        if is_aggregate(expr) {
            return self.aggregate(expr);
        }
        match expr {
            Expr::Identifier(ident) if ident.quote_style.is_none() => {
                let name = ident.value.clone();
                match self.view.column(&name).map(|c| &c.kind) {
                    Some(ColumnKind::Metric(m)) => {
                        let m = m.clone();
                        if !self.named.contains(&m) {
                            self.named.push(m.clone());
                        }
                        match self.metric(&m, &Transform::Plain) {
                            Ok(e) => *expr = e,
                            Err(e) => {
                                self.error = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    Some(_) if self.output_names.is_some_and(|o| o.contains(&name)) => {}
                    Some(_) => {
                        self.error = Some(Error::Grouping {
                            message: format!(
                                "column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"
                            ),
                            hint: Some(format!(
                                "add \"{name}\" to the select list (or GROUP BY) to break metrics down by it"
                            )),
                        });
                        return ControlFlow::Break(());
                    }
                    None => {}
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Whether metric `m` can be computed over the rows meeting a condition by computing its
/// parts so: an aggregate, or a formula over such metrics without `total()`.
fn under_condition_ok(m: &crate::bind::BoundMetric) -> bool {
    match &m.definition {
        Definition::Aggregate(_) => true,
        Definition::Composite { formula, .. } => {
            !crate::rewrite::additivity::mentions_total(formula)
        }
        _ => false,
    }
}

/// `coalesce(value, fill)`: a metric's `fill_nulls_with`, a whole number written as one.
fn coalesce(value: Expr, fill: f64) -> Expr {
    let literal = if fill.fract() == 0.0 && fill.abs() < 1e15 {
        format!("{}", fill as i64)
    } else {
        format!("{fill:?}")
    };
    let fill = Expr::value(datafusion::sql::sqlparser::ast::Value::Number(
        literal, false,
    ));
    Expr::Function(crate::sql::call("coalesce", vec![value, fill]))
}
