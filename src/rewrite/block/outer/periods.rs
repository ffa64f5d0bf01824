//! Metrics computed per period of a time dimension: period-over-period metrics (a
//! shifted, aligned or day-before part against the current one) and cumulative ones (a
//! window part), and the block's time grain they are computed at.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType as SqlType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
    visit_expressions,
};

use super::super::function_name;
use super::Outer;
use crate::bind::{BoundView, ColumnKind};
use crate::error::{Error, Result};
use crate::model::{Compare, PeriodAgg, Show, TimeGrain, Window};
use crate::rewrite::derived::{Before, Earlier, Period, Transform};

impl Outer<'_> {
    /// A period-over-period metric: its base under the transform that reads the earlier
    /// period, alone (`show = "value"`) or compared with the current period.
    pub(super) fn period_over_period(
        &mut self,
        name: &str,
        transform: &Transform,
        base: &str,
        time: &str,
        compare: &Compare,
        show: Show,
    ) -> Result<Expr> {
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
            if let Some(shift) = shift.as_ref().filter(|s| !s.whole)
                && self.time_grain(name, time).is_err()
            {
                return Err(Error::unsupported(
                    format!(
                        "metric \"{name}\" compares with earlier \"{}\" periods of \"{time}\", and this query is grouped by neither \"{}\" nor \"{time}\"",
                        shift.grain, shift.grain
                    ),
                    Some(format!(
                        "add \"{}\" (each period against the one before) or \"{time}\" (each day against the same day of the period before) to the select list or GROUP BY",
                        shift.grain
                    )),
                ));
            }
            if shift.as_ref().is_none_or(|s| !s.whole) {
                let (_, grain) = self.time_grain(name, time)?;
                self.allowed_grain(name, time, grain)?;
            }
            // Each day's rows count for the days its calendar aligns with it.
            let offset = show == Show::Value;
            let aligned = Transform::Aligned {
                time: time.to_string(),
                primary: offset,
                shift,
            };
            let earlier = self.metric(base, &aligned)?;
            if offset {
                return Ok(earlier);
            }
            let current = self.metric(base, transform)?;
            return compared(show, &current, &earlier);
        }
        let (index, grain) = self.time_grain(name, time)?;
        self.allowed_grain(name, time, grain)?;
        // By day, calendar months and years back from each day (the 29th to
        // the 31st of March are all a month after the 29th of February): each
        // day's value is the day the interval before it's, a window of one
        // day ending that long before (MetricFlow's spine of days joined on
        // `ds - INTERVAL`); rows moved forward would land on one day only. (A
        // time dimension of instants has no generated days: its rows move.)
        let dates = self
            .semantics
            .dimensions
            .get(time)
            .is_some_and(|d| d.data_type == datafusion::arrow::datatypes::DataType::Date32);
        if grain == TimeGrain::Day
            && dates
            && let Compare::Offset(
                n,
                unit @ (TimeGrain::Month | TimeGrain::Quarter | TimeGrain::Year),
            ) = compare
        {
            let offset = show == Show::Value;
            let dependent = self.period_labels(name, time, index, grain)?;
            let day_before = Transform::DayBefore {
                time: time.to_string(),
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
            return compared(show, &current, &earlier);
        }
        let interval = match (compare, grain) {
            (Compare::PeriodStart(of), _) => {
                // One day's rows for every period that starts in the `of`
                // period: a window part, not a shift.
                let dependent = self.period_labels(name, time, index, grain)?;
                let start = Transform::Window {
                    time: time.to_string(),
                    window: Window::PeriodStart(*of),
                    period: Period {
                        index,
                        grain,
                        dependent,
                        day: None,
                    },
                    earlier: None,
                    // A comparison has the periods of this period's value.
                    primary: show == Show::Value,
                };
                let earlier = self.metric(base, &start)?;
                if show == Show::Value {
                    // The first day's value alone: this period's is not asked.
                    return Ok(earlier);
                }
                let current = self.metric(base, transform)?;
                return compared(show, &current, &earlier);
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
        let offset = show == Show::Value;
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
            time: time.to_string(),
            interval,
            periods: offset.then_some(bound),
            whole,
        };
        let earlier = self.metric(base, &shifted)?;
        if offset {
            return Ok(earlier);
        }
        let current = self.metric(base, transform)?;
        compared(show, &current, &earlier)
    }

    /// A cumulative metric: its base under a window transform ending with each period of
    /// the block's time grain.
    pub(super) fn cumulative(
        &mut self,
        name: &str,
        transform: &Transform,
        base: &str,
        time: &str,
        window: Window,
        day: Option<PeriodAgg>,
    ) -> Result<Expr> {
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
            time: time.to_string(),
            window,
            period: Period {
                index,
                grain,
                dependent,
                day,
            },
            earlier,
            primary: true,
        };
        self.metric(base, &windowed)
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
