//! What a time zone name means: the session's `TimeZone` setting and the model's
//! `time_zone` default, shared by the model checks, the session, the rewrite (which buckets
//! `timestamptz` values in local time) and the encoder (which prints them with the local
//! offset, as PostgreSQL does).
//!
//! Accepted spellings are PostgreSQL's common ones: an IANA zone name (`Asia/Shanghai`,
//! `UTC`, `Etc/GMT-8`; case-insensitive), and a POSIX offset (`UTC+8`, `GMT-05:30`,
//! `+8`) where, as in PostgreSQL, a positive offset is **west** of Greenwich.
//!
//! [`LocalTime`] is the engine function the rewrite uses for that bucketing,
//! `kp_local_time(ts, zone)`; each source dialect writes it as its own conversion.
//!
//! Invariant: no I/O; parsing never panics.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Offset, TimeZone as _, Utc};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// A time zone: a named zone with its daylight-saving rules, or a fixed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeZone {
    /// An IANA zone.
    Named(chrono_tz::Tz),
    /// A fixed offset from UTC (east positive).
    Fixed(FixedOffset),
}

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone::Named(chrono_tz::UTC)
    }
}

impl TimeZone {
    /// Read a zone as `SET TimeZone` accepts it; `None` when it is not one.
    pub fn parse(text: &str) -> Option<TimeZone> {
        let text = text.trim();
        if let Ok(tz) = chrono_tz::Tz::from_str(text) {
            return Some(TimeZone::Named(tz));
        }
        if let Some(tz) = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(text))
        {
            return Some(TimeZone::Named(*tz));
        }
        posix_offset(text).map(TimeZone::Fixed)
    }

    /// Is this UTC (no conversion needed)?
    pub fn is_utc(&self) -> bool {
        match self {
            TimeZone::Named(tz) => matches!(
                tz,
                chrono_tz::Tz::UTC
                    | chrono_tz::Tz::Etc__UTC
                    | chrono_tz::Tz::Etc__UCT
                    | chrono_tz::Tz::Etc__Universal
                    | chrono_tz::Tz::Etc__Zulu
                    | chrono_tz::Tz::UCT
                    | chrono_tz::Tz::Universal
                    | chrono_tz::Tz::Zulu
            ),
            TimeZone::Fixed(offset) => offset.local_minus_utc() == 0,
        }
    }

    /// The zone as Arrow and SQL `AT TIME ZONE` read it with east-positive offsets:
    /// the IANA name, or `+08:00`.
    pub fn sql_name(&self) -> String {
        match self {
            TimeZone::Named(tz) => tz.name().to_string(),
            TimeZone::Fixed(offset) => iso_offset(offset.local_minus_utc()),
        }
    }

    /// The offset from UTC, in seconds east, at instant `at`.
    pub fn offset_at(&self, at: &DateTime<Utc>) -> i32 {
        match self {
            TimeZone::Named(tz) => tz
                .offset_from_utc_datetime(&at.naive_utc())
                .fix()
                .local_minus_utc(),
            TimeZone::Fixed(offset) => offset.local_minus_utc(),
        }
    }
}

impl fmt::Display for TimeZone {
    /// As `SHOW TimeZone` prints it: the zone name, or PostgreSQL's `<+08>-08` for an
    /// offset.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeZone::Named(tz) => f.write_str(tz.name()),
            TimeZone::Fixed(offset) => {
                let east = offset.local_minus_utc();
                let label = short_offset(east);
                let posix = short_offset(-east);
                write!(f, "<{label}>{posix}")
            }
        }
    }
}

/// `+08`, `+05:30`, `-03`: how PostgreSQL prints an offset after a timestamp.
pub fn short_offset(east_seconds: i32) -> String {
    let sign = if east_seconds < 0 { '-' } else { '+' };
    let s = east_seconds.unsigned_abs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    match (m, sec) {
        (0, 0) => format!("{sign}{h:02}"),
        (_, 0) => format!("{sign}{h:02}:{m:02}"),
        _ => format!("{sign}{h:02}:{m:02}:{sec:02}"),
    }
}

fn iso_offset(east_seconds: i32) -> String {
    let sign = if east_seconds < 0 { '-' } else { '+' };
    let s = east_seconds.unsigned_abs();
    format!("{sign}{:02}:{:02}", s / 3600, s / 60 % 60)
}

/// `UTC+8`, `GMT-05:30`, `+8`, `-3`: POSIX offsets, positive west of Greenwich.
fn posix_offset(text: &str) -> Option<FixedOffset> {
    // `<+08>-08`: an abbreviation in angle brackets, then the offset (as SHOW prints it).
    let text = match text.strip_prefix('<') {
        Some(rest) => rest.split_once('>')?.1,
        None => text,
    };
    let upper = text.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    let (sign, digits) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        b'0'..=b'9' => (1, rest),
        _ => return None,
    };
    let mut parts = digits.split(':');
    let hours: i32 = parts.next()?.parse().ok()?;
    let minutes: i32 = match parts.next() {
        Some(m) => m.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() || !(0..=15).contains(&hours) || !(0..60).contains(&minutes) {
        return None;
    }
    // West positive (POSIX) → east positive.
    FixedOffset::east_opt(-sign * (hours * 3600 + minutes * 60))
}

/// Name of [`LocalTime`] in SQL.
pub const LOCAL_TIME: &str = "kp_local_time";

/// `kp_local_time(ts, zone)`: the wall-clock time (a timestamp without time zone) of the
/// instant `ts` in `zone` (a constant, as [`TimeZone::sql_name`] writes it), what
/// PostgreSQL writes `ts AT TIME ZONE zone`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LocalTime {
    signature: Signature,
}

impl Default for LocalTime {
    fn default() -> Self {
        LocalTime {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for LocalTime {
    fn name(&self) -> &str {
        LOCAL_TIME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types.first() {
            Some(DataType::Timestamp(unit, _)) => Ok(DataType::Timestamp(*unit, None)),
            Some(DataType::Null) => Ok(DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Microsecond,
                None,
            )),
            other => exec_err!("{LOCAL_TIME} takes a timestamp, not {other:?}"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let (Some(value), Some(ColumnarValue::Scalar(zone))) =
            (args.args.first(), args.args.get(1))
        else {
            return exec_err!("{LOCAL_TIME} takes a timestamp and a constant time zone");
        };
        let zone = match zone {
            ScalarValue::Utf8(Some(z))
            | ScalarValue::Utf8View(Some(z))
            | ScalarValue::LargeUtf8(Some(z)) => z.clone(),
            _ => return exec_err!("{LOCAL_TIME} takes a constant time zone"),
        };
        let unit = match value.data_type() {
            DataType::Timestamp(unit, _) => unit,
            DataType::Null => return Ok(value.clone()),
            other => return exec_err!("{LOCAL_TIME} takes a timestamp, not {other}"),
        };
        // The same instants labelled with `zone`; `to_local_time` then drops the label
        // keeping the wall-clock time.
        let zoned = DataType::Timestamp(unit, Some(zone.into()));
        let labelled = match value {
            ColumnarValue::Array(a) => ColumnarValue::Array(cast(a, &zoned)?),
            ColumnarValue::Scalar(s) => ColumnarValue::Scalar(s.cast_to(&zoned)?),
        };
        let local = datafusion::functions::datetime::to_local_time();
        local.invoke_with_args(ScalarFunctionArgs {
            arg_fields: vec![Arc::new(Field::new("ts", zoned, true))],
            args: vec![labelled],
            number_rows: args.number_rows,
            return_field: args.return_field,
            config_options: args.config_options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_posix_offsets() {
        let shanghai = TimeZone::parse("asia/shanghai").unwrap();
        assert_eq!(shanghai.to_string(), "Asia/Shanghai");
        assert_eq!(shanghai.sql_name(), "Asia/Shanghai");
        assert!(TimeZone::parse("UTC").unwrap().is_utc());
        assert!(TimeZone::parse("Etc/UTC").unwrap().is_utc());
        // POSIX: UTC+8 is eight hours west.
        let west = TimeZone::parse("UTC+8").unwrap();
        assert_eq!(west.sql_name(), "-08:00");
        assert_eq!(west.to_string(), "<-08>+08");
        assert_eq!(TimeZone::parse(&west.to_string()), Some(west));
        assert_eq!(TimeZone::parse("-05:30").unwrap().sql_name(), "+05:30");
        assert!(TimeZone::parse("Mars/Olympus").is_none());
        assert!(TimeZone::parse("+99").is_none());
        assert!(TimeZone::parse("").is_none());
    }

    #[test]
    fn offsets_follow_daylight_saving() {
        let berlin = TimeZone::parse("Europe/Berlin").unwrap();
        let winter = DateTime::parse_from_rfc3339("2024-01-15T12:00:00Z").unwrap();
        let summer = DateTime::parse_from_rfc3339("2024-07-15T12:00:00Z").unwrap();
        assert_eq!(berlin.offset_at(&winter.to_utc()), 3600);
        assert_eq!(berlin.offset_at(&summer.to_utc()), 7200);
        assert_eq!(short_offset(19800), "+05:30");
        assert_eq!(short_offset(-10800), "-03");
    }

    #[tokio::test]
    async fn local_time_in_the_engine() {
        let ctx = datafusion::prelude::SessionContext::new();
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(
            LocalTime::default(),
        ));
        let batches = ctx
            .sql(
                "WITH t AS (SELECT arrow_cast('2024-03-31T23:30:00Z', 'Timestamp(Microsecond, Some(\"UTC\"))') AS ts) \
                 SELECT kp_local_time(ts, 'Asia/Shanghai'), kp_local_time(ts, '-05:00') FROM t",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        use datafusion::arrow::array::AsArray;
        let row = &batches[0];
        let text = |i: usize| {
            let column = cast(row.column(i), &DataType::Utf8).unwrap();
            column.as_string::<i32>().value(0).to_string()
        };
        assert_eq!(text(0), "2024-04-01T07:30:00");
        assert_eq!(text(1), "2024-03-31T18:30:00");
    }
}
