//! Evaluating a rule: the SQL it asks (over the rule's view, as a client would, through
//! the rewrite, the run-as user's access rules and pushdown), and what the rows mean for
//! each instance under the rule's condition.
//!
//! Every query groups by the period's grain column, so a period without rows gives no
//! row (never a 0), whatever the metric's aggregate.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type, Float64Type};

use super::period::{self, Period};
use crate::bind::Semantics;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::alerts::{AlertRule, Condition, Direction, PeriodKind, Severity};
use crate::model::{TimeGrain, WeekStart};
use crate::session::Session;
use crate::sql::session_values::SessionFacts;

/// A rule ready to evaluate: the model's rule with its defaults resolved.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Rule name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The metric.
    pub metric: String,
    /// The metric's business label.
    pub metric_label: String,
    /// The metric's definition in words (口径).
    pub metric_description: String,
    /// The metric's owner.
    pub owner: String,
    /// The view it is read from.
    pub view: String,
    /// Dimensions the instances are split by.
    pub by: Vec<String>,
    /// The time dimension.
    pub time: String,
    time_type: TimeType,
    week_start: WeekStart,
    /// The grain of the period.
    pub grain: TimeGrain,
    /// Which period.
    pub period: PeriodKind,
    /// The condition.
    pub condition: Condition,
    /// Past this a firing instance resolves (default: the threshold).
    pub recover: Option<f64>,
    /// For attainment: the target metric.
    pub target: Option<String>,
    /// Consecutive breaches before firing.
    pub for_evaluations: u32,
    /// Notify again while firing, this often.
    pub repeat_every: Option<std::time::Duration>,
    /// Severity.
    pub severity: Severity,
    /// When the server evaluates it.
    pub schedule: croner::Cron,
    /// The cron expression as written.
    pub schedule_text: String,
    /// The user it runs as.
    pub run_as: String,
    /// Channels to notify.
    pub channels: Vec<String>,
    /// DingTalk mentions.
    pub at_mobiles: Vec<String>,
    /// For `quality`: the table watched.
    pub table: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeType {
    Date,
    Instant,
    Local,
}

impl Rule {
    /// The rule of the model with its defaults, over the bound model (for the time
    /// dimension's type and week start). Errors are impossible for a validated model
    /// but reported, not assumed away.
    pub fn compile(rule: &AlertRule, semantics: &Semantics) -> Result<Rule> {
        let model = &semantics.model;
        let bad =
            |reason: String| Error::Config(format!("alert \"{}\": {reason}", rule.name.get_ref()));
        let condition = rule.condition().map_err(bad)?;
        let schedule_text = rule.schedule().to_string();
        let schedule = crate::model::alerts::parse_schedule(&schedule_text).map_err(bad)?;
        if condition == Condition::Quality {
            let table = rule
                .table
                .as_ref()
                .map(|t| t.get_ref().clone())
                .ok_or_else(|| bad("no table".into()))?;
            let description = model
                .tables
                .iter()
                .find(|t| t.name.get_ref() == &table)
                .map(|t| t.description.clone())
                .unwrap_or_default();
            return Ok(Rule {
                name: rule.name.get_ref().clone(),
                description: rule.description.clone(),
                metric: String::new(),
                metric_label: format!("data quality of {table}"),
                metric_description: description,
                owner: String::new(),
                view: String::new(),
                by: vec!["check".into()],
                time: String::new(),
                time_type: TimeType::Date,
                week_start: WeekStart::Monday,
                grain: TimeGrain::Day,
                period: PeriodKind::ToDate,
                condition,
                recover: None,
                target: None,
                for_evaluations: rule.for_evaluations(),
                repeat_every: rule.repeat_every().map_err(bad)?,
                severity: rule.severity().map_err(bad)?,
                schedule,
                schedule_text,
                run_as: rule.run_as.get_ref().clone(),
                channels: rule.channels.iter().map(|c| c.get_ref().clone()).collect(),
                at_mobiles: rule.at_mobiles.clone(),
                table: Some(table),
            });
        }
        let metric_name = rule
            .metric
            .as_ref()
            .map(|m| m.get_ref().clone())
            .ok_or_else(|| bad("no metric".into()))?;
        let metric = model
            .metrics
            .iter()
            .find(|m| m.name.get_ref() == &metric_name)
            .ok_or_else(|| bad(format!("unknown metric \"{metric_name}\"")))?;
        let view = match &rule.view {
            Some(v) => v.get_ref().clone(),
            None => model
                .views
                .iter()
                .find(|v| v.metrics.iter().any(|m| m.get_ref() == &metric_name))
                .map(|v| v.name.get_ref().clone())
                .ok_or_else(|| bad("no view has the metric".into()))?,
        };
        let model_view = model
            .views
            .iter()
            .find(|v| v.name.get_ref() == &view)
            .ok_or_else(|| bad(format!("unknown view \"{view}\"")))?;
        let time = match &rule.time {
            Some(t) => t.get_ref().clone(),
            None => model_view
                .dimensions
                .iter()
                .map(|d| d.get_ref())
                .find(|d| {
                    semantics
                        .dimensions
                        .get(*d)
                        .is_some_and(|b| b.kind == crate::model::DimensionKind::Time)
                })
                .cloned()
                .ok_or_else(|| bad("the view has no time dimension".into()))?,
        };
        let bound = semantics
            .dimensions
            .get(&time)
            .ok_or_else(|| bad(format!("unknown dimension \"{time}\"")))?;
        let time_type = match &bound.data_type {
            DataType::Timestamp(_, Some(_)) => TimeType::Instant,
            DataType::Timestamp(_, None) => TimeType::Local,
            _ => TimeType::Date,
        };
        Ok(Rule {
            name: rule.name.get_ref().clone(),
            description: rule.description.clone(),
            metric_label: metric.label.clone(),
            metric_description: metric.description.clone(),
            owner: metric.owner.clone(),
            metric: metric_name,
            view,
            by: rule.by.iter().map(|b| b.get_ref().clone()).collect(),
            time,
            time_type,
            week_start: bound.week_start,
            grain: rule.grain().map_err(bad)?,
            period: rule.period().map_err(bad)?,
            condition,
            recover: rule.recover(),
            target: rule.target.as_ref().map(|t| t.get_ref().clone()),
            for_evaluations: rule.for_evaluations(),
            repeat_every: rule.repeat_every().map_err(bad)?,
            severity: rule.severity().map_err(bad)?,
            schedule,
            schedule_text,
            run_as: rule.run_as.get_ref().clone(),
            channels: rule.channels.iter().map(|c| c.get_ref().clone()).collect(),
            at_mobiles: rule.at_mobiles.clone(),
            table: None,
        })
    }

    /// The threshold of the condition, if it has one.
    pub fn threshold(&self) -> Option<f64> {
        match self.condition {
            Condition::Above(t) | Condition::Below(t) | Condition::AttainmentBelow(t) => Some(t),
            Condition::Change { threshold, .. } | Condition::Anomaly { threshold, .. } => {
                Some(threshold)
            }
            Condition::NoData | Condition::Quality => None,
        }
    }

    /// The period evaluated at `at`.
    pub fn period_at(&self, at: &DateTime<Utc>, semantics: &Semantics) -> Period {
        period::evaluated(
            at,
            semantics.time_zone,
            self.grain,
            self.week_start,
            self.period,
        )
    }

    fn grain_column(&self) -> String {
        let time = quote(&self.time);
        match (self.grain, self.time_type) {
            (TimeGrain::Day, TimeType::Date) => time,
            (TimeGrain::Day, TimeType::Instant) => quote(&format!("{}__day", self.time)),
            (TimeGrain::Day, TimeType::Local) => format!("date_trunc('day', {time})"),
            (grain, _) => quote(&format!("{}__{}", self.time, grain.name())),
        }
    }

    fn time_filter(&self, range: Period) -> String {
        let (column, literal) = match self.time_type {
            TimeType::Date => (quote(&self.time), "DATE"),
            TimeType::Instant => (quote(&format!("{}__day", self.time)), "TIMESTAMP"),
            TimeType::Local => (quote(&self.time), "TIMESTAMP"),
        };
        format!(
            "{column} >= {literal} '{}' AND {column} < {literal} '{}'",
            range.start, range.end
        )
    }

    /// The statement that reads the rule's values over `range`: one row per instance
    /// and period of the rule's grain.
    pub fn sql(&self, range: Period) -> String {
        let mut select: Vec<String> = self.by.iter().map(|b| quote(b)).collect();
        select.push(format!("{} AS period", self.grain_column()));
        select.push(quote(&self.metric));
        if let Some(target) = &self.target {
            select.push(quote(target));
        }
        let groups: Vec<String> = (1..=self.by.len() + 1).map(|i| i.to_string()).collect();
        format!(
            "SELECT {} FROM {} WHERE {} GROUP BY {} ORDER BY {}",
            select.join(", "),
            quote(&self.view),
            self.time_filter(range),
            groups.join(", "),
            groups.join(", ")
        )
    }
}

/// An instance's dimension values, in the rule's `by` order.
pub type Dimensions = Vec<(String, Option<String>)>;

/// A double-quoted identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What one evaluation found for one instance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reading {
    /// The instance: `region=East` (empty for a rule without `by`).
    pub key: String,
    /// Its dimension values, in the rule's `by` order.
    pub dimensions: Dimensions,
    /// The metric's value in the period (`None`: no data).
    pub value: Option<f64>,
    /// What it is compared with: the earlier period's value, the target, or the mean of
    /// the earlier periods.
    pub comparison: Option<f64>,
    /// The number held against the threshold: the value, the change, the attainment
    /// share or the z-score.
    pub measure: Option<f64>,
    /// What it means.
    pub verdict: Verdict,
}

/// The meaning of a reading for the state of its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The condition holds.
    Breach,
    /// Not breaching, but not past the recovery threshold either.
    Hold,
    /// Not breaching, and past the recovery threshold.
    Clear,
    /// No value to judge (the period has no row for the instance): the state stays.
    NoData,
}

/// The result of evaluating one rule once.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The period evaluated.
    pub period: Period,
    /// The statement that computed it (run it, or `EXPLAIN` it, as the run-as user).
    pub sql: String,
    /// One reading per instance found (and per known instance without data).
    pub readings: Vec<Reading>,
}

type Rows = BTreeMap<
    String,
    (
        Vec<(String, Option<String>)>,
        BTreeMap<NaiveDate, (Option<f64>, Option<f64>)>,
    ),
>;

/// Run `sql` as `user` and collect its rows (dimensions, period, value, target).
async fn rows(engine: &Engine, rule: &Rule, sql: &str) -> Result<Rows> {
    let session = Session::new(rule.run_as.clone(), 0, engine.semantics().time_zone, &[]);
    let facts = SessionFacts {
        session: &session,
        database: engine.database(),
        temp_tables: None,
    };
    let mut statements = crate::sql::parse(sql)?;
    let statement = statements
        .pop()
        .ok_or_else(|| Error::Internal("an alert's statement is empty".into()))?;
    let plan = engine.plan(statement, &facts).await?;
    let stream = engine.execute(&plan, Vec::new()).await?;
    let batches = datafusion::physical_plan::common::collect(stream)
        .await
        .map_err(Error::from)?;
    let mut out = Rows::new();
    for batch in &batches {
        read_batch(batch, rule, &mut out)?;
    }
    Ok(out)
}

fn read_batch(batch: &RecordBatch, rule: &Rule, out: &mut Rows) -> Result<()> {
    let n = rule.by.len();
    let texts: Vec<_> = (0..n)
        .map(|i| cast(batch.column(i), &DataType::Utf8))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Internal(format!("alert {}: {e}", rule.name)))?;
    let cast_to = |i: usize, t: &DataType| {
        cast(batch.column(i), t).map_err(|e| Error::Internal(format!("alert {}: {e}", rule.name)))
    };
    let periods = cast_to(n, &DataType::Date32)?;
    let values = cast_to(n + 1, &DataType::Float64)?;
    let targets = if rule.target.is_some() {
        Some(cast_to(n + 2, &DataType::Float64)?)
    } else {
        None
    };
    let periods = periods.as_primitive::<Date32Type>();
    let values = values.as_primitive::<Float64Type>();
    for row in 0..batch.num_rows() {
        let dimensions: Dimensions = rule
            .by
            .iter()
            .zip(&texts)
            .map(|(name, column)| {
                let column = column.as_string::<i32>();
                let value = (!column.is_null(row)).then(|| column.value(row).to_string());
                (name.clone(), value)
            })
            .collect();
        let Some(period) = (!periods.is_null(row))
            .then(|| periods.value_as_date(row))
            .flatten()
        else {
            continue;
        };
        let value = (!values.is_null(row)).then(|| values.value(row));
        let target = targets.as_ref().and_then(|t| {
            let t = t.as_primitive::<Float64Type>();
            (!t.is_null(row)).then(|| t.value(row))
        });
        let key = instance_key(&dimensions);
        out.entry(key)
            .or_insert_with(|| (dimensions, BTreeMap::new()))
            .1
            .insert(period, (value, target));
    }
    Ok(())
}

/// The key of an instance: `region=East,channel=Online`.
pub fn instance_key(dimensions: &[(String, Option<String>)]) -> String {
    dimensions
        .iter()
        .map(|(n, v)| format!("{n}={}", v.as_deref().unwrap_or("NULL")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Evaluate `rule` at `at` on `engine` as its run-as user. `known` are the instances
/// the state already has (a `no_data` rule breaches for those without a row).
pub async fn evaluate(
    engine: &Engine,
    rule: &Rule,
    at: &DateTime<Utc>,
    known: &[(String, Dimensions)],
) -> Result<Evaluation> {
    if !engine.has_user(&rule.run_as) {
        return Err(Error::Config(format!(
            "alert \"{}\" runs as \"{}\", who is not a configured user",
            rule.name, rule.run_as
        )));
    }
    let semantics = engine.semantics_for(&rule.run_as);
    let period = rule.period_at(at, semantics);
    let (range, compared) = match rule.condition {
        Condition::Anomaly { periods, .. } => (
            Period {
                start: period::shift(period.start, rule.grain, -i64::from(periods)),
                end: period.end,
            },
            None,
        ),
        Condition::Change { compare_to, .. } => (
            period,
            Some(period::compared(period, rule.grain, compare_to)),
        ),
        _ => (period, None),
    };
    let sql = rule.sql(range);
    let current = rows(engine, rule, &sql).await?;
    let earlier = match compared {
        Some(p) => Some(rows(engine, rule, &rule.sql(p)).await?),
        None => None,
    };
    let mut readings = Vec::new();
    for (key, (dimensions, by_period)) in &current {
        let here = by_period.get(&period.start).copied();
        let value = here.and_then(|(v, _)| v);
        let (comparison, measure) = match rule.condition {
            Condition::Above(_) | Condition::Below(_) => (None, value),
            Condition::NoData | Condition::Quality => (None, value),
            Condition::AttainmentBelow(_) => {
                let target = here.and_then(|(_, t)| t);
                let share = match (value, target) {
                    (Some(v), Some(t)) if t != 0.0 => Some(v / t),
                    _ => None,
                };
                (target, share)
            }
            Condition::Change { percent, .. } => {
                let before = earlier
                    .as_ref()
                    .and_then(|e| e.get(key))
                    .and_then(|(_, p)| p.values().next().copied())
                    .and_then(|(v, _)| v);
                let change = match (value, before) {
                    (Some(v), Some(b)) if !percent => Some(v - b),
                    (Some(v), Some(b)) if b != 0.0 => Some((v - b) / b.abs() * 100.0),
                    _ => None,
                };
                (before, change)
            }
            Condition::Anomaly { .. } => {
                let history: Vec<f64> = by_period
                    .range(..period.start)
                    .filter_map(|(_, (v, _))| *v)
                    .collect();
                let (mean, score) = z_score(value, &history);
                (mean, score)
            }
        };
        let verdict = judge(rule, value, measure);
        readings.push(Reading {
            key: key.clone(),
            dimensions: dimensions.clone(),
            value,
            comparison,
            measure,
            verdict,
        });
    }
    // Known instances without a row in the period.
    for (key, dimensions) in known {
        let has_row = current
            .get(key)
            .is_some_and(|(_, p)| p.contains_key(&period.start));
        if !has_row && !readings.iter().any(|r| &r.key == key) {
            readings.push(Reading {
                key: key.clone(),
                dimensions: dimensions.clone(),
                value: None,
                comparison: None,
                measure: None,
                verdict: judge(rule, None, None),
            });
        }
    }
    // Without `by`, the one instance exists even when the period has no row.
    if rule.by.is_empty() && readings.is_empty() {
        readings.push(Reading {
            key: String::new(),
            dimensions: Vec::new(),
            value: None,
            comparison: None,
            measure: None,
            verdict: judge(rule, None, None),
        });
    }
    readings.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Evaluation {
        period,
        sql,
        readings,
    })
}

/// The mean of `history` and how many sample standard deviations `value` is from it;
/// fewer than 3 earlier values (or no spread) give no score.
pub fn z_score(value: Option<f64>, history: &[f64]) -> (Option<f64>, Option<f64>) {
    if history.len() < 3 {
        return (None, None);
    }
    let n = history.len() as f64;
    let mean = history.iter().sum::<f64>() / n;
    let variance = history.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sd = variance.sqrt();
    let score = match value {
        Some(v) if sd > 0.0 => Some((v - mean) / sd),
        _ => None,
    };
    (Some(mean), score)
}

/// The verdict of a measure under the rule's condition.
pub fn judge(rule: &Rule, value: Option<f64>, measure: Option<f64>) -> Verdict {
    let moved = |m: f64, size: f64, direction: Direction| match direction {
        Direction::Up => m > size,
        Direction::Down => m < -size,
        Direction::Either => m.abs() > size,
    };
    match rule.condition {
        Condition::NoData => {
            if value.is_none() {
                Verdict::Breach
            } else {
                Verdict::Clear
            }
        }
        _ => {
            let Some(m) = measure else {
                return Verdict::NoData;
            };
            let (breach, recovered) = match rule.condition {
                Condition::Above(t) => (m > t, m <= rule.recover.unwrap_or(t)),
                Condition::Below(t) | Condition::AttainmentBelow(t) => {
                    (m < t, m >= rule.recover.unwrap_or(t))
                }
                Condition::Change {
                    threshold,
                    direction,
                    ..
                }
                | Condition::Anomaly {
                    threshold,
                    direction,
                    ..
                } => (
                    moved(m, threshold, direction),
                    !moved(m, rule.recover.unwrap_or(threshold), direction),
                ),
                Condition::NoData | Condition::Quality => (false, true),
            };
            if breach {
                Verdict::Breach
            } else if recovered {
                Verdict::Clear
            } else {
                Verdict::Hold
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::z_score;

    #[test]
    fn z_scores_need_three_earlier_values_and_a_spread() {
        assert_eq!(z_score(Some(5.0), &[1.0, 2.0]), (None, None));
        let (mean, z) = z_score(Some(10.0), &[2.0, 4.0, 6.0]);
        assert_eq!(mean, Some(4.0));
        assert_eq!(z, Some(3.0));
        assert_eq!(z_score(Some(1.0), &[3.0, 3.0, 3.0]), (Some(3.0), None));
    }
}
