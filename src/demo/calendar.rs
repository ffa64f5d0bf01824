//! The demo's calendar (`calendar.csv`): one row per day with its retail month (4-4-5:
//! each quarter of 13 ISO weeks in periods of 4, 4 and 5 weeks), the Spring Festival
//! season (春节, three weeks either side of the festival), and the day it is compared
//! with a year earlier: in the festival season the same day counted from last year's
//! festival, otherwise the same date last year.

use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate, Weekday};

use crate::error::{Error, Result};

/// The calendar file.
pub const CALENDAR_FILE: &str = "calendar.csv";

/// Spring Festival (the first day of the lunar year), by year.
const SPRING_FESTIVAL: &[(i32, u32, u32)] = &[
    (2021, 2, 12),
    (2022, 2, 1),
    (2023, 1, 22),
    (2024, 2, 10),
    (2025, 1, 29),
];

/// Days either side of the festival that are aligned on it.
const SEASON_DAYS: i64 = 21;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

fn festival(year: i32) -> Option<NaiveDate> {
    SPRING_FESTIVAL
        .iter()
        .find(|(y, _, _)| *y == year)
        .map(|&(y, m, d)| date(y, m, d))
}

/// The day `day` is compared with a year earlier.
fn last_year_day(day: NaiveDate) -> NaiveDate {
    if let (Some(this), Some(last)) = (festival(day.year()), festival(day.year() - 1)) {
        let from_festival = (day - this).num_days();
        if from_festival.abs() <= SEASON_DAYS {
            return last + Duration::days(from_festival);
        }
    }
    day.with_year(day.year() - 1)
        .unwrap_or_else(|| date(day.year() - 1, 2, 28))
}

/// Is `day` in its year's Spring Festival season?
fn in_season(day: NaiveDate) -> bool {
    festival(day.year()).is_some_and(|f| (day - f).num_days().abs() <= SEASON_DAYS)
}

/// The first day of the 4-4-5 retail month `day` is in: ISO weeks, 13 to a quarter, in
/// periods of 4, 4 and 5 weeks (a 53rd week joins the year's last period).
fn retail_month(day: NaiveDate) -> NaiveDate {
    let iso = day.iso_week();
    let week = iso.week0();
    let quarter = (week / 13).min(3);
    let in_quarter = week - 13 * quarter;
    let start = 13 * quarter
        + match in_quarter {
            0..=3 => 0,
            4..=7 => 4,
            _ => 8,
        };
    NaiveDate::from_isoywd_opt(iso.year(), start + 1, Weekday::Mon).unwrap_or(day)
}

/// Write the calendar of 2022 to 2025 (the data's years and the one after, whose days
/// are aligned with the data's last year).
pub fn write_calendar(path: &Path) -> Result<()> {
    let mut out = String::from("day,retail_month,season,last_year_day\n");
    let mut day = date(2022, 1, 1);
    while day <= date(2025, 12, 31) {
        let season = if in_season(day) { "春节" } else { "" };
        out.push_str(&format!(
            "{day},{},{season},{}\n",
            retail_month(day),
            last_year_day(day)
        ));
        day += Duration::days(1);
    }
    std::fs::write(path, out).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn festival_days_align_and_others_keep_their_date() {
        // 初一 2024 (10 February) against 初一 2023 (22 January).
        assert_eq!(last_year_day(date(2024, 2, 10)), date(2023, 1, 22));
        assert_eq!(last_year_day(date(2024, 2, 13)), date(2023, 1, 25));
        assert_eq!(last_year_day(date(2024, 6, 1)), date(2023, 6, 1));
        assert_eq!(
            last_year_day(date(2024, 2, 29)),
            date(2023, 1, 22) + Duration::days(19)
        );
        assert!(in_season(date(2024, 2, 10)) && !in_season(date(2024, 6, 1)));
    }

    #[test]
    fn retail_months_are_four_four_five_weeks() {
        // ISO 2024 starts on Monday 1 January 2024.
        assert_eq!(retail_month(date(2024, 1, 28)), date(2024, 1, 1));
        assert_eq!(retail_month(date(2024, 1, 29)), date(2024, 1, 29));
        assert_eq!(retail_month(date(2024, 2, 26)), date(2024, 2, 26));
        // The fifth week of the quarter's third period, then the next quarter.
        assert_eq!(retail_month(date(2024, 3, 31)), date(2024, 2, 26));
        assert_eq!(retail_month(date(2024, 4, 1)), date(2024, 4, 1));
    }
}
