//! The dates an evaluation reads: the period of a rule at an evaluation time (in the
//! model's time zone), the earlier period it is compared with, and the periods before it.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};

use crate::model::alerts::{CompareTo, PeriodKind};
use crate::model::{TimeGrain, WeekStart};
use crate::time_zone::TimeZone;

/// A range of local dates, `start` included, `end` excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First day.
    pub start: NaiveDate,
    /// The day after the last.
    pub end: NaiveDate,
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last = self.end.pred_opt().unwrap_or(self.end);
        if last == self.start {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{} to {}", self.start, last)
        }
    }
}

/// An evaluation time as written on the command line: RFC 3339
/// (`2024-06-30T09:00:00+08:00`), or a local date and time (`2024-06-30 09:00`,
/// `2024-06-30`: midnight) in `zone`.
pub fn parse_at(text: &str, zone: TimeZone) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M"))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| d.and_time(chrono::NaiveTime::MIN))
        })
        .map_err(|_| {
            format!("\"{text}\" is not a time: write 2024-06-30T09:00:00+08:00, 2024-06-30 09:00 or 2024-06-30")
        })?;
    // The offset at that local time (close enough across a daylight-saving change).
    let guess = local.and_utc();
    let offset = chrono::Duration::seconds(i64::from(zone.offset_at(&guess)));
    Ok((local - offset).and_utc())
}

/// The local date of `at` in `zone`.
pub fn local_date(at: &DateTime<Utc>, zone: TimeZone) -> NaiveDate {
    let offset = chrono::Duration::seconds(i64::from(zone.offset_at(at)));
    (at.naive_utc() + offset).date()
}

/// The first day of the period of `grain` that holds `day`.
pub fn truncate(day: NaiveDate, grain: TimeGrain, week_start: WeekStart) -> NaiveDate {
    match grain {
        // Alert rules are evaluated per day or coarser (`AlertRule::grain`).
        TimeGrain::Second | TimeGrain::Minute | TimeGrain::Hour | TimeGrain::Day => day,
        TimeGrain::Week => {
            // Days since the week's first day.
            let since_monday = day.weekday().num_days_from_monday();
            let since_start = (since_monday + 7 - (7 - week_start.days_to_monday()) % 7) % 7;
            day - Days::new(u64::from(since_start))
        }
        TimeGrain::Month => day.with_day(1).unwrap_or(day),
        TimeGrain::Quarter | TimeGrain::FiscalQuarter => {
            let month = (day.month0() / 3) * 3 + 1;
            NaiveDate::from_ymd_opt(day.year(), month, 1).unwrap_or(day)
        }
        TimeGrain::Year | TimeGrain::FiscalYear => {
            NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap_or(day)
        }
    }
}

/// `day` moved by `n` periods of `grain` (back when `n` is negative); months clamp to
/// the month's last day.
pub fn shift(day: NaiveDate, grain: TimeGrain, n: i64) -> NaiveDate {
    let months = |m: i64| {
        let moved = if m >= 0 {
            day.checked_add_months(Months::new(m.unsigned_abs() as u32))
        } else {
            day.checked_sub_months(Months::new(m.unsigned_abs() as u32))
        };
        moved.unwrap_or(day)
    };
    let days = |d: i64| {
        let moved = if d >= 0 {
            day.checked_add_days(Days::new(d.unsigned_abs()))
        } else {
            day.checked_sub_days(Days::new(d.unsigned_abs()))
        };
        moved.unwrap_or(day)
    };
    match grain {
        TimeGrain::Second | TimeGrain::Minute | TimeGrain::Hour | TimeGrain::Day => days(n),
        TimeGrain::Week => days(7 * n),
        TimeGrain::Month => months(n),
        TimeGrain::Quarter | TimeGrain::FiscalQuarter => months(3 * n),
        TimeGrain::Year | TimeGrain::FiscalYear => months(12 * n),
    }
}

/// The period a rule evaluates at `at`.
pub fn evaluated(
    at: &DateTime<Utc>,
    zone: TimeZone,
    grain: TimeGrain,
    week_start: WeekStart,
    kind: PeriodKind,
) -> Period {
    let today = local_date(at, zone);
    let current = truncate(today, grain, week_start);
    match kind {
        PeriodKind::LastComplete => Period {
            start: shift(current, grain, -1),
            end: current,
        },
        PeriodKind::ToDate => Period {
            start: current,
            end: today.succ_opt().unwrap_or(today),
        },
    }
}

/// The earlier period a `change` compares with: the same span one period or one year
/// back (month-to-date on the 3rd compares with the 1st to the 3rd of last month).
pub fn compared(period: Period, grain: TimeGrain, compare_to: CompareTo) -> Period {
    let (grain, n) = match compare_to {
        CompareTo::PreviousPeriod => (grain, -1),
        CompareTo::SamePeriodLastYear => (TimeGrain::Year, -1),
    };
    Period {
        start: shift(period.start, grain, n),
        end: shift(period.end, grain, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn yesterday_is_the_last_complete_day_in_the_model_zone() {
        let shanghai = TimeZone::parse("Asia/Shanghai").unwrap();
        // 2026-12-02 20:00 UTC is 2026-12-03 04:00 in Shanghai.
        let p = evaluated(
            &at("2026-12-02T20:00:00Z"),
            shanghai,
            TimeGrain::Day,
            WeekStart::Monday,
            PeriodKind::LastComplete,
        );
        assert_eq!((p.start, p.end), (d("2026-12-02"), d("2026-12-03")));
        assert_eq!(p.to_string(), "2026-12-02");
    }

    #[test]
    fn weeks_months_and_to_date() {
        let utc = TimeZone::default();
        let now = at("2026-12-03T10:00:00Z"); // a Thursday
        let week = evaluated(
            &now,
            utc,
            TimeGrain::Week,
            WeekStart::Monday,
            PeriodKind::LastComplete,
        );
        assert_eq!((week.start, week.end), (d("2026-11-23"), d("2026-11-30")));
        let sunday = evaluated(
            &now,
            utc,
            TimeGrain::Week,
            WeekStart::Sunday,
            PeriodKind::LastComplete,
        );
        assert_eq!(
            (sunday.start, sunday.end),
            (d("2026-11-22"), d("2026-11-29"))
        );
        let mtd = evaluated(
            &now,
            utc,
            TimeGrain::Month,
            WeekStart::Monday,
            PeriodKind::ToDate,
        );
        assert_eq!((mtd.start, mtd.end), (d("2026-12-01"), d("2026-12-04")));
        let before = compared(mtd, TimeGrain::Month, CompareTo::PreviousPeriod);
        assert_eq!(
            (before.start, before.end),
            (d("2026-11-01"), d("2026-11-04"))
        );
        let last_year = compared(mtd, TimeGrain::Month, CompareTo::SamePeriodLastYear);
        assert_eq!(
            (last_year.start, last_year.end),
            (d("2025-12-01"), d("2025-12-04"))
        );
        let quarter = evaluated(
            &now,
            utc,
            TimeGrain::Quarter,
            WeekStart::Monday,
            PeriodKind::LastComplete,
        );
        assert_eq!(
            (quarter.start, quarter.end),
            (d("2026-07-01"), d("2026-10-01"))
        );
    }
}
