//! Sargable date bounds for the parts that read other periods than the ones asked.
//!
//! A shifted part (period-over-period) filters on the time dimension moved forward by an
//! interval, `CAST(order_date + INTERVAL '1 month' AS DATE) >= '2024-01-01'`, which no
//! index, partition or Parquet statistic can use; a window part (to-date, trailing) does
//! not filter its rows on time at all. Both read the whole history. This module adds to
//! them a plain range on the time dimension's own column that the exact condition
//! implies (`order_date >= DATE '2024-01-01' - 31 days` for a one-month shift): every
//! row the exact condition keeps is kept, so the answer is unchanged, and the engine or
//! the warehouse reads only the periods the part needs (plus at most a few days).
//!
//! Calendar intervals are not invertible (`'2024-03-30' - 1 month + 1 month` is
//! `'2024-03-28'`), so bounds are widened by each interval's longest (lower bound) or
//! shortest (upper bound) length in days rather than computed exactly.

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr};

use super::translate::is_zoned;
use super::{Before, InnerExpr};
use crate::bind::{BoundDimension, Semantics};
use crate::error::Result;
use crate::model::{TimeGrain, Window};

/// The constant bounds a block's filters put on one time dimension.
#[derive(Debug, Default, Clone)]
pub(super) struct Bounds {
    /// `time >= lower` (or `>`).
    lower: Option<Expr>,
    /// `time <= upper` (or `<`).
    upper: Option<Expr>,
}

impl Bounds {
    /// The bounds the view filters (ANDed, in view column names) put directly on the
    /// dimension `time`: comparisons with a constant and `BETWEEN`. Anything else (OR,
    /// NOT, a grain column, a subquery) gives no bound, which only means reading more.
    pub(super) fn of(view_filters: &[Expr], time: &str) -> Bounds {
        let mut bounds = Bounds::default();
        for filter in view_filters {
            bounds.collect(filter, time);
        }
        bounds
    }

    /// The constant the filters put above the dimension, if any.
    pub(super) fn upper(&self) -> Option<&Expr> {
        self.upper.as_ref()
    }

    /// The constant the filters put below the dimension, if any.
    pub(super) fn lower(&self) -> Option<&Expr> {
        self.lower.as_ref()
    }

    fn collect(&mut self, filter: &Expr, time: &str) {
        let is_time = |e: &Expr| matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value == time);
        match filter {
            Expr::Nested(inner) => self.collect(inner, time),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                self.collect(left, time);
                self.collect(right, time);
            }
            Expr::BinaryOp { left, op, right } => {
                let (op, value) = if is_time(left) && is_constant(right) {
                    (op.clone(), right)
                } else if is_time(right) && is_constant(left) {
                    (flipped(op), left)
                } else {
                    return;
                };
                match op {
                    BinaryOperator::GtEq | BinaryOperator::Gt => {
                        self.lower = Some((**value).clone());
                    }
                    BinaryOperator::LtEq | BinaryOperator::Lt => {
                        self.upper = Some((**value).clone());
                    }
                    BinaryOperator::Eq => {
                        self.lower = Some((**value).clone());
                        self.upper = Some((**value).clone());
                    }
                    _ => {}
                }
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } if is_time(expr) && is_constant(low) && is_constant(high) => {
                self.lower = Some((**low).clone());
                self.upper = Some((**high).clone());
            }
            _ => {}
        }
    }

    /// Conditions on the unshifted column for the rows of a part that moves them forward
    /// by `interval` (`"1 month"`, `"7 day"`, `"1 year"`) before the filters apply.
    /// With `whole`, the filters select whole periods of that grain (see
    /// [`whole_period`]): the first reaches back up to a period before `lower`, the last
    /// up to a period after `upper`.
    pub(super) fn for_shift(
        &self,
        semantics: &Semantics,
        fact: &str,
        time: &str,
        interval: &str,
        whole: Option<TimeGrain>,
    ) -> Result<Vec<InnerExpr>> {
        let Some((shortest, longest)) = interval_days(interval) else {
            return Ok(Vec::new());
        };
        let back = whole.map_or(0, |g| grain_days(g).1);
        // x + interval >= lower  ⇒  x >= lower - longest;  x + interval <= upper  ⇒
        // x <= upper - shortest.
        self.conditions(semantics, fact, time, longest + back, shortest - back)
    }

    /// Conditions for the rows of a window part at `grain`: its periods are those the
    /// filters select, each reads from its window's start to its own end (or, with
    /// `earlier`, from and to the same of the period that long before it).
    pub(super) fn for_window(
        &self,
        semantics: &Semantics,
        fact: &str,
        time: &str,
        window: Window,
        grain: TimeGrain,
        earlier: Option<&Before>,
    ) -> Result<Vec<InnerExpr>> {
        let (shortest, longest) = match earlier {
            Some(Before::Interval(interval)) => match interval_days(interval) {
                Some(days) => days,
                None => return Ok(Vec::new()),
            },
            // The first day of the `of` period: up to one such period earlier.
            Some(Before::StartOf(of)) => (0, grain_days(*of).1),
            None => (0, 0),
        };
        let period = grain_days(grain).1;
        // The first period starts at most one period before `lower`; the window reaches
        // back at most its own length before that.
        let back = match window {
            Window::AllTime => None,
            // Only the period itself.
            Window::Period => Some(period),
            Window::ToDate(of) | Window::PeriodStart(of) => Some(period + grain_days(of).1),
            Window::Trailing(n, unit) => Some(period + i64::from(n) * grain_days(unit).1),
        };
        // The last period ends at most one period after `upper`.
        let mut conditions = Bounds {
            lower: None,
            upper: self.upper.clone(),
        }
        .conditions(semantics, fact, time, 0, shortest - period)?;
        if let Some(back) = back {
            conditions.extend(
                Bounds {
                    lower: self.lower.clone(),
                    upper: None,
                }
                .conditions(semantics, fact, time, back + longest, 0)?,
            );
        }
        Ok(conditions)
    }

    /// `time >= lower - before` and `time <= upper - after` (days) over the column the
    /// rows of `fact` carry for `time`.
    fn conditions(
        &self,
        semantics: &Semantics,
        fact: &str,
        time: &str,
        before: i64,
        after: i64,
    ) -> Result<Vec<InnerExpr>> {
        let Some(dim) = semantics.dimensions.get(time) else {
            return Ok(Vec::new());
        };
        let Some(cast) = comparable(dim) else {
            return Ok(Vec::new());
        };
        let source = semantics
            .table_dimensions
            .get(fact)
            .and_then(|c| c.get(time))
            .unwrap_or(&dim.expr);
        let column = source.expr.to_string();
        let moved = |value: &Expr, days: i64| {
            let sign = if days < 0 { "+" } else { "-" };
            let moved = format!(
                "CAST(({value}) AS TIMESTAMP) {sign} INTERVAL '{} day'",
                days.unsigned_abs()
            );
            match cast {
                Some(to) => format!("CAST(({moved}) AS {to})"),
                None => format!("({moved})"),
            }
        };
        let mut out = Vec::new();
        if let Some(lower) = &self.lower {
            out.push(format!("({column}) >= {}", moved(lower, before)));
        }
        if let Some(upper) = &self.upper {
            out.push(format!("({column}) <= {}", moved(upper, after)));
        }
        out.iter()
            .map(|sql| {
                Ok(InnerExpr {
                    expr: super::parse_expr(sql)?,
                    tables: source.tables.iter().cloned().collect(),
                    dimensions: BTreeSet::from([time.to_string()]),
                })
            })
            .collect()
    }
}

/// How a bound is written for the dimension's type: `Some(Some("DATE"))` for a date,
/// `Some(None)` for a timestamp without time zone, `None` when no bound is written
/// (`timestamptz` grains are computed in local time; other types are not times).
fn comparable(dim: &BoundDimension) -> Option<Option<&'static str>> {
    if is_zoned(dim) {
        return None;
    }
    match dim.data_type {
        DataType::Date32 | DataType::Date64 => Some(Some("DATE")),
        DataType::Timestamp(_, None) => Some(None),
        _ => None,
    }
}

fn flipped(op: &BinaryOperator) -> BinaryOperator {
    match op {
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        other => other.clone(),
    }
}

/// A filter that bounds the time dimension `time` by constants (`time >= c`, `time < c`,
/// `time BETWEEN a AND b`), rewritten to select the whole periods of `grain` it touches:
/// the same comparisons of `period` (the SQL of the period of a row, a timestamp at the
/// period's start) with the periods of the constants. `None` for any other filter.
/// An offset metric's period is worth the whole earlier period, whatever days of it
/// the range selects (MetricFlow joins the spine's periods, not its days).
pub(super) fn whole_period(
    filter: &Expr,
    time: &str,
    period: &str,
    truncate: impl Fn(&str) -> String,
) -> Option<String> {
    // The day of the time dimension selects the same periods as the dimension.
    let day = format!("{time}__day");
    let is_time = |e: &Expr| matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && (i.value == time || i.value == day));
    let of = |value: &Expr| truncate(&value.to_string());
    match filter {
        Expr::Nested(inner) => whole_period(inner, time, period, truncate),
        Expr::BinaryOp { left, op, right } => {
            let (op, value) = if is_time(left) && is_constant(right) {
                (op.clone(), right)
            } else if is_time(right) && is_constant(left) {
                (flipped(op), left)
            } else {
                return None;
            };
            match op {
                BinaryOperator::GtEq | BinaryOperator::Gt => {
                    Some(format!("{period} >= {}", of(value)))
                }
                BinaryOperator::LtEq => Some(format!("{period} <= {}", of(value))),
                BinaryOperator::Lt => Some(format!("{period} < CAST(({value}) AS TIMESTAMP)")),
                BinaryOperator::Eq => Some(format!("{period} = {}", of(value))),
                _ => None,
            }
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } if is_time(expr) && is_constant(low) && is_constant(high) => Some(format!(
            "{period} >= {} AND {period} <= {}",
            of(low),
            of(high)
        )),
        _ => None,
    }
}

/// A literal, a typed literal or a cast of one: a value the bound can be computed from.
fn is_constant(e: &Expr) -> bool {
    match e {
        Expr::Value(_) | Expr::TypedString { .. } => true,
        Expr::Cast { expr, .. } | Expr::Nested(expr) => is_constant(expr),
        _ => false,
    }
}

/// The shortest and longest length in days of an interval `"<n> day|month|year"`.
fn interval_days(interval: &str) -> Option<(i64, i64)> {
    let (n, unit) = interval.split_once(' ')?;
    let n: i64 = n.trim().parse().ok()?;
    let (short, long) = match unit.trim().trim_end_matches('s') {
        // Bounds are whole days: the days an interval of hours, minutes or seconds
        // spans at least and at most.
        "hour" => return Some((n / 24, (n + 23) / 24)),
        "minute" => return Some((n / 1_440, (n + 1_439) / 1_440)),
        "second" => return Some((n / 86_400, (n + 86_399) / 86_400)),
        "day" => (1, 1),
        "month" => (28, 31),
        "year" => (365, 366),
        _ => return None,
    };
    Some((n * short, n * long))
}

/// The shortest and longest length in days of one period of `grain`.
fn grain_days(grain: TimeGrain) -> (i64, i64) {
    match grain {
        // A period shorter than a day lies within a day or two of its rows.
        TimeGrain::Second | TimeGrain::Minute | TimeGrain::Hour => (0, 1),
        TimeGrain::Day => (1, 1),
        TimeGrain::Week => (7, 7),
        TimeGrain::Month => (28, 31),
        TimeGrain::Quarter | TimeGrain::FiscalQuarter => (89, 92),
        TimeGrain::Year | TimeGrain::FiscalYear => (365, 366),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(sql: &str) -> Vec<Expr> {
        vec![crate::bind::parse_expr(sql).expect("parses")]
    }

    #[test]
    fn bounds_come_from_comparisons_and_between_only() {
        let b = Bounds::of(
            &filters("order_date >= '2024-01-01' AND channel = 'x' AND '2024-03-01' > order_date"),
            "order_date",
        );
        assert_eq!(b.lower.map(|e| e.to_string()), Some("'2024-01-01'".into()));
        assert_eq!(b.upper.map(|e| e.to_string()), Some("'2024-03-01'".into()));
        let b = Bounds::of(
            &filters("order_date BETWEEN DATE '2024-06-01' AND '2024-06-30'"),
            "order_date",
        );
        assert!(b.lower.is_some() && b.upper.is_some());
        for none in [
            "order_date >= '2024-01-01' OR channel = 'x'",
            "NOT order_date >= '2024-01-01'",
            "order_date NOT BETWEEN '2024-01-01' AND '2024-02-01'",
            "order_date >= other_date",
            "order_date__month >= '2024-01-01'",
        ] {
            let b = Bounds::of(&filters(none), "order_date");
            assert!(b.lower.is_none() && b.upper.is_none(), "{none}");
        }
    }

    #[test]
    fn interval_lengths_bracket_every_calendar_case() {
        assert_eq!(interval_days("1 month"), Some((28, 31)));
        assert_eq!(interval_days("3 month"), Some((84, 93)));
        assert_eq!(interval_days("364 day"), Some((364, 364)));
        assert_eq!(interval_days("1 year"), Some((365, 366)));
        assert_eq!(interval_days("1 fortnight"), None);
    }
}
