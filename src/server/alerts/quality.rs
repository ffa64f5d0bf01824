//! Data quality: each table's checks (`[tables.quality]`) run as one statement over the
//! table, through the table's own source (pushed down to a warehouse like any query):
//! the row count, the newest value of the freshness column, the NULLs of `not_null`
//! columns and the duplicates of `unique` columns. The results are kept for
//! `kp.quality`, for the WARNING a query over a failing table gets, and for alert rules
//! with `condition = "quality"`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};

use super::evaluate::quote;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::Table;
use crate::model::alerts::parse_interval;
use crate::time_zone::TimeZone;

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Within what is allowed.
    Pass,
    /// Outside what is allowed.
    Fail,
    /// The check could not run, or its result could not be read.
    Error,
}

impl Status {
    /// As `kp.quality` and the JSON report spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Error => "error",
        }
    }

    fn failing_if(breach: bool) -> Status {
        if breach { Status::Fail } else { Status::Pass }
    }
}

/// The result of one check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// The table.
    pub table: String,
    /// `freshness`, `not_null(column)`, `unique(column)` or `row_count_change`.
    pub check: String,
    /// Whether it passed.
    pub status: Status,
    /// What was found (the newest value and its age, the NULLs, the duplicates, the row
    /// counts).
    pub value: String,
    /// What is allowed.
    pub threshold: String,
    /// When it ran.
    #[serde(with = "super::state::rfc3339")]
    pub checked_at: DateTime<Utc>,
}

impl CheckResult {
    /// The WARNING a query reading the table gets while this check fails.
    pub fn warning(&self) -> String {
        format!(
            "table \"{}\" fails its data quality check {}: {} (allowed: {})",
            self.table, self.check, self.value, self.threshold
        )
    }
}

/// Run the checks of `table` at `now`; `previous_count` is the row count at the last
/// check (for `row_count_change`). Returns the results and the row count.
pub async fn check_table(
    engine: &Engine,
    table: &Table,
    now: &DateTime<Utc>,
    previous_count: Option<i64>,
) -> (Vec<CheckResult>, Option<i64>) {
    let Some(quality) = &table.quality else {
        return (Vec::new(), previous_count);
    };
    let name = table.name.get_ref().clone();
    let result = |check: String, status: Status, value: String, threshold: String| CheckResult {
        table: name.clone(),
        check,
        status,
        value,
        threshold,
        checked_at: *now,
    };
    let mut select = vec!["COUNT(*)".to_string()];
    if let Some(f) = &quality.freshness {
        select.push(format!("MAX({})", quote(f.column.get_ref())));
    }
    for column in &quality.not_null {
        let c = quote(column.get_ref());
        select.push(format!("COUNT(*) - COUNT({c})"));
    }
    for column in &quality.unique {
        let c = quote(column.get_ref());
        select.push(format!("COUNT({c}) - COUNT(DISTINCT {c})"));
    }
    let sql = format!(
        "SELECT {} FROM {}.{}",
        select.join(", "),
        quote(crate::sources::BASE_SCHEMA),
        quote(&name)
    );
    let batches = match engine.query_base(&sql).await {
        Ok(b) => b,
        Err(e) => {
            return (
                vec![result(
                    "all".into(),
                    Status::Error,
                    e.to_string(),
                    String::new(),
                )],
                previous_count,
            );
        }
    };
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return (
            vec![result(
                "all".into(),
                Status::Error,
                "no result row".into(),
                String::new(),
            )],
            previous_count,
        );
    };
    let mut out = Vec::new();
    let count = integer(batch, 0);
    let mut index = 1;
    if let Some(f) = &quality.freshness {
        let max_lag = parse_interval(f.max_lag.get_ref()).unwrap_or(Duration::MAX);
        let threshold = format!("newest at most {} old", f.max_lag.get_ref());
        match newest(batch, index, engine.semantics().time_zone) {
            Ok(Some((shown, instant))) => {
                let age = now
                    .signed_duration_since(instant)
                    .to_std()
                    .unwrap_or_default();
                out.push(result(
                    "freshness".into(),
                    Status::failing_if(age > max_lag),
                    format!(
                        "newest {} {shown} is {} old",
                        f.column.get_ref(),
                        human(age)
                    ),
                    threshold,
                ));
            }
            Ok(None) => out.push(result(
                "freshness".into(),
                Status::Fail,
                "the table has no rows".into(),
                threshold,
            )),
            Err(e) => out.push(result(
                "freshness".into(),
                Status::Error,
                e.to_string(),
                threshold,
            )),
        }
        index += 1;
    }
    // A count that cannot be read is an error, never a pass.
    let counted =
        |index: usize, check: String, what: &str, allowed: String| match integer(batch, index) {
            Some(n) => result(
                check,
                Status::failing_if(n > 0),
                format!("{n} {what}"),
                allowed,
            ),
            None => result(
                check,
                Status::Error,
                format!("the number of {what} could not be read"),
                allowed,
            ),
        };
    for column in &quality.not_null {
        out.push(counted(
            index,
            format!("not_null({})", column.get_ref()),
            "NULL",
            "0 NULL".into(),
        ));
        index += 1;
    }
    for column in &quality.unique {
        out.push(counted(
            index,
            format!("unique({})", column.get_ref()),
            "duplicate values",
            "0 duplicate values".into(),
        ));
        index += 1;
    }
    if let (Some(_), None) = (&quality.row_count_change, count) {
        out.push(result(
            "row_count_change".into(),
            Status::Error,
            "the row count could not be read".into(),
            String::new(),
        ));
    }
    if let (Some(share), Some(now_count)) = (&quality.row_count_change, count) {
        let share = *share.get_ref();
        let threshold = format!("a change of at most {}%", share * 100.0);
        match previous_count {
            Some(before) => {
                let change = if before == 0 {
                    if now_count == 0 { 0.0 } else { f64::INFINITY }
                } else {
                    (now_count - before) as f64 / before as f64
                };
                out.push(result(
                    "row_count_change".into(),
                    Status::failing_if(change.abs() > share),
                    format!("{before} rows, now {now_count}"),
                    threshold,
                ));
            }
            None => out.push(result(
                "row_count_change".into(),
                Status::Pass,
                format!("{now_count} rows (first check)"),
                threshold,
            )),
        }
    }
    (out, count.or(previous_count))
}

fn integer(batch: &RecordBatch, column: usize) -> Option<i64> {
    let values = cast(batch.column(column), &DataType::Int64).ok()?;
    let values = values.as_primitive::<Int64Type>();
    (!values.is_null(0)).then(|| values.value(0))
}

/// The newest value as shown and as an instant: a date is taken as the end of that day
/// in the model's time zone, a timestamp without time zone as local time there.
fn newest(
    batch: &RecordBatch,
    column: usize,
    zone: TimeZone,
) -> Result<Option<(String, DateTime<Utc>)>> {
    let array = batch.column(column);
    if array.is_null(0) {
        return Ok(None);
    }
    let internal = |e: datafusion::arrow::error::ArrowError| Error::Internal(e.to_string());
    let shown = cast(array, &DataType::Utf8).map_err(internal)?;
    let shown = shown.as_string::<i32>().value(0).to_string();
    let local_to_utc = |local: chrono::NaiveDateTime| {
        let guess = local.and_utc();
        (local - chrono::Duration::seconds(i64::from(zone.offset_at(&guess)))).and_utc()
    };
    let instant = match array.data_type() {
        DataType::Date32 | DataType::Date64 => {
            let days = cast(array, &DataType::Date32).map_err(internal)?;
            let day = days
                .as_primitive::<Date32Type>()
                .value_as_date(0)
                .ok_or_else(|| Error::Internal("date out of range".into()))?;
            let end = day
                .succ_opt()
                .unwrap_or(day)
                .and_time(chrono::NaiveTime::MIN);
            local_to_utc(end)
        }
        DataType::Timestamp(_, tz) => {
            let target = DataType::Timestamp(TimeUnit::Microsecond, tz.clone());
            let micros = cast(array, &target).map_err(internal)?;
            let micros = micros.as_primitive::<TimestampMicrosecondType>().value(0);
            let at = DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| Error::Internal("timestamp out of range".into()))?;
            if tz.is_some() {
                at
            } else {
                local_to_utc(at.naive_utc())
            }
        }
        other => {
            return Err(Error::Config(format!(
                "the freshness column must be a date or timestamp, not {other}"
            )));
        }
    };
    Ok(Some((shown, instant)))
}

/// An age in days and hours.
fn human(age: Duration) -> String {
    let hours = age.as_secs() / 3600;
    let (days, hours) = (hours / 24, hours % 24);
    match (days, hours) {
        (0, 0) => format!("{} minutes", age.as_secs() / 60),
        (0, h) => format!("{h} hours"),
        (d, 0) => format!("{d} days"),
        (d, h) => format!("{d} days {h} hours"),
    }
}

/// The latest results of every table's checks, and the row counts they saw.
#[derive(Debug, Default)]
pub struct Results {
    /// table → its checks' latest results.
    pub checks: BTreeMap<String, Vec<CheckResult>>,
    /// table → the row count at the last check.
    pub counts: BTreeMap<String, i64>,
    /// table → when its checks last ran.
    pub checked: BTreeMap<String, DateTime<Utc>>,
}

impl Results {
    /// The failing checks of `tables`.
    pub fn failing<'a>(
        &'a self,
        tables: impl IntoIterator<Item = &'a String>,
    ) -> Vec<&'a CheckResult> {
        tables
            .into_iter()
            .filter_map(|t| self.checks.get(t))
            .flatten()
            .filter(|c| c.status == Status::Fail)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_in_days_and_hours() {
        use std::time::Duration;
        assert_eq!(super::human(Duration::from_secs(90_000)), "1 days 1 hours");
        assert_eq!(super::human(Duration::from_secs(7_200)), "2 hours");
        assert_eq!(super::human(Duration::from_secs(600)), "10 minutes");
    }
}
