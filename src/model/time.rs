//! The vocabulary of time in the model: week starts, time grains (and how they nest),
//! and the windows of cumulative metrics.

use serde::Deserialize;

/// The first day of a week.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeekStart {
    /// ISO weeks.
    #[default]
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday, as in North American calendars.
    Sunday,
}

impl WeekStart {
    /// Days from this week start forward to the next Monday (0 for Monday).
    pub fn days_to_monday(self) -> u32 {
        match self {
            WeekStart::Monday => 0,
            WeekStart::Tuesday => 6,
            WeekStart::Wednesday => 5,
            WeekStart::Thursday => 4,
            WeekStart::Friday => 3,
            WeekStart::Saturday => 2,
            WeekStart::Sunday => 1,
        }
    }
}

/// Time grains of a time dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeGrain {
    /// Second (timestamp dimensions whose `granularity` is `second`).
    Second,
    /// Minute (timestamp dimensions whose `granularity` is `minute` or finer).
    Minute,
    /// Hour (timestamp dimensions whose `granularity` is `hour` or finer).
    Hour,
    /// Calendar day.
    Day,
    /// ISO week, starting Monday.
    Week,
    /// Calendar month.
    Month,
    /// Calendar quarter.
    Quarter,
    /// Calendar year.
    Year,
    /// Quarter of the fiscal year (dimensions with `fiscal_year_start_month`).
    FiscalQuarter,
    /// Fiscal year.
    FiscalYear,
}

impl TimeGrain {
    /// Every grain, finest first.
    pub const ALL: [TimeGrain; 5] = [
        TimeGrain::Day,
        TimeGrain::Week,
        TimeGrain::Month,
        TimeGrain::Quarter,
        TimeGrain::Year,
    ];

    /// The grains finer than a day, finest first.
    pub const SUB_DAILY: [TimeGrain; 3] = [TimeGrain::Second, TimeGrain::Minute, TimeGrain::Hour];

    /// Finer grains first: second, minute, hour, day, week, month, (fiscal) quarter,
    /// (fiscal) year.
    pub fn rank(self) -> u8 {
        match self {
            TimeGrain::Second => 0,
            TimeGrain::Minute => 1,
            TimeGrain::Hour => 2,
            TimeGrain::Day => 3,
            TimeGrain::Week => 4,
            TimeGrain::Month => 5,
            TimeGrain::Quarter | TimeGrain::FiscalQuarter => 6,
            TimeGrain::Year | TimeGrain::FiscalYear => 7,
        }
    }

    /// Whether the grain is finer than a day (hour, minute, second).
    pub fn is_sub_daily(self) -> bool {
        self.rank() < TimeGrain::Day.rank()
    }

    /// The grain a `date_trunc` unit or a `<dimension>__<grain>` suffix names.
    pub fn from_name(name: &str) -> Option<TimeGrain> {
        TimeGrain::SUB_DAILY
            .into_iter()
            .chain(TimeGrain::ALL)
            .chain([TimeGrain::FiscalQuarter, TimeGrain::FiscalYear])
            .find(|g| g.name() == name)
    }

    /// Whether each period of this grain lies within one period of `coarser` (a day in
    /// its month, a month in its quarter and fiscal quarter; a week in no month).
    /// Calendar quarters are not taken to nest in fiscal periods (they do only for some
    /// fiscal start months).
    pub fn nests_in(self, coarser: TimeGrain) -> bool {
        use TimeGrain::*;
        self == coarser
            || (self.rank() <= Day.rank() && coarser.rank() > self.rank())
            || matches!(
                (self, coarser),
                (Month, Quarter | Year | FiscalQuarter | FiscalYear)
                    | (Quarter, Year)
                    | (FiscalQuarter, FiscalYear)
            )
    }

    /// The name used in `date_trunc` and in `<dimension>__<grain>` columns.
    pub fn name(self) -> &'static str {
        match self {
            TimeGrain::Second => "second",
            TimeGrain::Minute => "minute",
            TimeGrain::Hour => "hour",
            TimeGrain::Day => "day",
            TimeGrain::Week => "week",
            TimeGrain::Month => "month",
            TimeGrain::Quarter => "quarter",
            TimeGrain::Year => "year",
            TimeGrain::FiscalQuarter => "fiscal_quarter",
            TimeGrain::FiscalYear => "fiscal_year",
        }
    }
}

/// The time dimension and grain a column name such as `order_date__month` or
/// `customer__ds__week` names, when it ends in a grain; `None` for other names.
pub fn grain_suffix(column: &str) -> Option<(&str, TimeGrain)> {
    let (dimension, grain) = column.rsplit_once("__")?;
    Some((dimension, TimeGrain::from_name(grain)?))
}

/// The dimension a view column belongs to: `customer__ds` for `customer__ds__month`,
/// the name itself for a column that is not a grain column.
pub fn dimension_of_column(column: &str) -> &str {
    grain_suffix(column).map_or(column, |(d, _)| d)
}

/// The window of a cumulative metric, ending with each period of the query's grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// From the start of the period (`day_to_date`, `week_to_date`, `month_to_date`,
    /// `quarter_to_date`, `year_to_date`).
    ToDate(TimeGrain),
    /// Since the beginning of the data (running total): `all_time`.
    AllTime,
    /// The last `n` minutes, hours, days, weeks or months: `"24 hours"`, `"7 days"`,
    /// `"4 weeks"`, `"3 months"`.
    Trailing(u32, TimeGrain),
    /// The first day of the period of this grain that holds the period's first day (a
    /// period-over-period metric's `compare = "start_of_month"`; never written as a
    /// cumulative window).
    PeriodStart(TimeGrain),
    /// The period itself (`period`): the base metric on every period of the range, rows
    /// or not (the time spine; MetricFlow's `join_to_timespine`).
    Period,
}

impl Window {
    /// Parse a window as written in the model.
    pub fn parse(text: &str) -> std::result::Result<Window, String> {
        let text = text.trim();
        match text {
            "month_to_date" => return Ok(Window::ToDate(TimeGrain::Month)),
            "quarter_to_date" => return Ok(Window::ToDate(TimeGrain::Quarter)),
            "year_to_date" => return Ok(Window::ToDate(TimeGrain::Year)),
            "week_to_date" => return Ok(Window::ToDate(TimeGrain::Week)),
            "day_to_date" => return Ok(Window::ToDate(TimeGrain::Day)),
            "fiscal_quarter_to_date" => return Ok(Window::ToDate(TimeGrain::FiscalQuarter)),
            "fiscal_year_to_date" => return Ok(Window::ToDate(TimeGrain::FiscalYear)),
            "all_time" => return Ok(Window::AllTime),
            "period" => return Ok(Window::Period),
            _ => {}
        }
        let usage = "window must be month_to_date, quarter_to_date, year_to_date, week_to_date, day_to_date, all_time, period, or a trailing window such as \"24 hours\", \"7 days\", \"4 weeks\" or \"3 months\"";
        let mut words = text.split_whitespace();
        let (Some(n), Some(unit), None) = (words.next(), words.next(), words.next()) else {
            return Err(usage.to_string());
        };
        let n: u32 = n.parse().map_err(|_| usage.to_string())?;
        if n == 0 || n > 10_000 {
            return Err("a trailing window has 1 to 10000 units".to_string());
        }
        let grain = match unit.trim_end_matches('s') {
            "minute" => TimeGrain::Minute,
            "hour" => TimeGrain::Hour,
            "day" => TimeGrain::Day,
            "week" => TimeGrain::Week,
            "month" => TimeGrain::Month,
            _ => return Err(usage.to_string()),
        };
        Ok(Window::Trailing(n, grain))
    }
}

#[cfg(test)]
mod tests {
    use super::TimeGrain::*;

    #[test]
    fn days_nest_in_every_grain_and_weeks_in_no_month() {
        for g in [Day, Week, Month, Quarter, Year, FiscalQuarter, FiscalYear] {
            assert!(Day.nests_in(g));
            assert!(g.nests_in(g));
        }
        assert!(!Week.nests_in(Month));
        assert!(!Week.nests_in(Year));
        assert!(Month.nests_in(Quarter) && Month.nests_in(FiscalYear));
        assert!(!Quarter.nests_in(FiscalYear));
        assert!(!Year.nests_in(Quarter));
        assert!(FiscalQuarter.nests_in(FiscalYear));
    }

    #[test]
    fn sub_daily_grains_nest_in_coarser_ones_and_no_day_in_an_hour() {
        for g in [
            Minute,
            Hour,
            Day,
            Week,
            Month,
            Quarter,
            Year,
            FiscalQuarter,
            FiscalYear,
        ] {
            assert!(Second.nests_in(g));
        }
        assert!(Minute.nests_in(Hour) && Hour.nests_in(Day) && Hour.nests_in(Week));
        assert!(!Day.nests_in(Hour) && !Hour.nests_in(Minute) && !Minute.nests_in(Second));
        assert!(Second.rank() < Minute.rank() && Hour.rank() < Day.rank());
        assert_eq!(super::grain_suffix("t__hour"), Some(("t", Hour)));
    }

    #[test]
    fn ranks_order_finer_first() {
        assert!(Day.rank() < Week.rank() && Week.rank() < Month.rank());
        assert!(Month.rank() < Quarter.rank() && Quarter.rank() < Year.rank());
    }
}
