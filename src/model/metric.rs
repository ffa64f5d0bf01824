//! Metrics as written in the model: the keys of `[[metrics]]` and the kinds they make
//! (atomic, derived, composite, period-over-period, cumulative, conversion), with the
//! small vocabularies they use (aggregations, comparisons, windows' period values,
//! conversion calculations, lifecycle status).

use serde::Deserialize;
use toml::Spanned;

use super::TimeGrain;

/// A governed metric. Its kind follows from the keys it sets (see [`Metric::kind`]):
/// `agg` (atomic), `base` (derived, period-over-period with `compare`, cumulative with
/// `window`, conversion with `conversion`) or `formula` (composite).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Unique metric name; the column name in views.
    pub name: Spanned<String>,
    /// Atomic: the table whose rows are aggregated (the metric's grain).
    pub table: Option<Spanned<String>>,
    /// Atomic: the aggregation.
    pub agg: Option<Aggregation>,
    /// Atomic: SQL expression over the table's columns; required except for `count`.
    pub expr: Option<Spanned<String>>,
    /// Atomic, `percentile_cont` and `percentile_disc`: the fraction of the ordered values,
    /// between 0 and 1 (`0.9` for the 90th percentile).
    pub percentile: Option<Spanned<f64>>,
    /// Atomic: a balance or stock (semi-additive): summed across the other dimensions but
    /// not across time; a period's value is the value at its last (or first) day, or the
    /// average of its days (see [`SemiAdditive`]).
    pub semi_additive: Option<SemiAdditive>,
    /// Atomic and derived: SQL condition; only rows where it holds are aggregated. May use
    /// the table's columns and dimension names reachable from the table. On a derived
    /// metric it is added (AND) to the base metric's own filter.
    pub filter: Option<Spanned<String>>,
    /// Derived, period-over-period and cumulative: the metric this one is defined from.
    pub base: Option<Spanned<String>>,
    /// Composite: an expression over other metrics, e.g. `revenue / orders`.
    pub formula: Option<Spanned<String>>,
    /// Period-over-period and cumulative: the time dimension periods are taken on.
    /// Conversion: the time dimension of the base events.
    pub time: Option<Spanned<String>>,
    /// Period-over-period: which period the value is compared with.
    pub compare: Option<Compare>,
    /// Period-over-period: what the column shows (default `growth`).
    pub show: Option<Show>,
    /// Cumulative: the window, e.g. `month_to_date` or `7 days` (see [`Window`]).
    /// Conversion: how long after a base event a conversion counts (`7 days`; default
    /// any time after).
    pub window: Option<Spanned<String>>,
    /// Conversion: the metric of the conversion events (atomic or derived); its
    /// aggregation over the converted events is the conversions.
    pub conversion: Option<Spanned<String>>,
    /// Conversion: the dimension that links a base event to its conversion events (the
    /// same customer, user, ...).
    pub entity: Option<Spanned<String>>,
    /// Conversion: the time dimension of the conversion events (default: `time`, which
    /// then must give each table's own event time, as a carried dimension does).
    pub conversion_time: Option<Spanned<String>>,
    /// Conversion: `conversion_rate` (the default: conversions / base) or `conversions`.
    pub calculation: Option<Calculation>,
    /// Conversion: properties a base event and its conversion events must share (the
    /// same session), besides the entity (MetricFlow's `constant_properties`).
    #[serde(default)]
    pub constant_properties: Vec<ConstantProperty>,
    /// Cumulative: at grains coarser than a day, which day of each period the window ends
    /// with: `last` (the default: the window ends with the period) or `first`
    /// (MetricFlow's default `period_agg`).
    pub period_agg: Option<PeriodAgg>,
    /// Cumulative and period-over-period: the grains of the time dimension the metric may
    /// be queried at (default all); a query at another grain is refused. An import from
    /// MetricFlow sets them where MetricFlow's answer at other grains differs.
    pub grains: Option<Spanned<Vec<String>>>,
    /// The value the metric shows where it has none (no rows, or no earlier period):
    /// `0` for a count or sum that should read 0 (MetricFlow's `fill_nulls_with`).
    pub fill_nulls_with: Option<Spanned<f64>>,
    /// Business label (any language), e.g. "销售额".
    #[serde(default)]
    pub label: String,
    /// The definition in plain words (口径).
    #[serde(default)]
    pub description: String,
    /// Who answers for the definition.
    #[serde(default)]
    pub owner: String,
    /// Business domain (业务主题).
    #[serde(default)]
    pub domain: String,
    /// Lifecycle status.
    #[serde(default)]
    pub status: Status,
    /// The metric to use instead (named when a deprecated or retired metric is asked).
    pub replaced_by: Option<Spanned<String>>,
    /// Denied to every role whose access rule does not name it.
    #[serde(default)]
    pub sensitive: bool,
    /// Free tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Unit of the value, e.g. "CNY" or "orders".
    #[serde(default)]
    pub unit: String,
    /// Display format hint, e.g. "#,##0.00".
    #[serde(default)]
    pub format: String,
    /// Index into [`Model::files`]; set by the loader.
    #[serde(skip)]
    pub file: usize,
}

/// The layers of metrics (原子 / 派生 / 复合 指标) and the time-aware kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// An aggregation of a table's rows (`agg`).
    Atomic,
    /// An atomic or derived metric restricted by a filter (`base` + `filter`).
    Derived,
    /// An expression over other metrics (`formula`).
    Composite,
    /// A metric compared with an earlier period (`base` + `compare`).
    PeriodOverPeriod,
    /// A metric accumulated over a window of periods (`base` + `window`).
    Cumulative,
    /// Base events followed by conversion events of the same entity (`base` +
    /// `conversion`): the conversions, or the conversion rate.
    Conversion,
}

impl MetricKind {
    /// The kind as shown in catalogs.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Atomic => "atomic",
            MetricKind::Derived => "derived",
            MetricKind::Composite => "composite",
            MetricKind::PeriodOverPeriod => "period_over_period",
            MetricKind::Cumulative => "cumulative",
            MetricKind::Conversion => "conversion",
        }
    }
}

impl Metric {
    /// The metric's kind, from the keys it sets (validation checks they are consistent).
    pub fn kind(&self) -> MetricKind {
        if self.formula.is_some() {
            MetricKind::Composite
        } else if self.conversion.is_some() {
            MetricKind::Conversion
        } else if self.compare.is_some() {
            MetricKind::PeriodOverPeriod
        } else if self.window.is_some() {
            MetricKind::Cumulative
        } else if self.base.is_some() {
            MetricKind::Derived
        } else {
            MetricKind::Atomic
        }
    }
}

/// The earlier period a period-over-period metric compares with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Compare {
    /// The period just before, at the query's grain (环比): the previous day, week,
    /// month, quarter or year.
    PreviousPeriod,
    /// The same period one year earlier (同比); at week grain, 52 weeks earlier.
    SamePeriodLastYear,
    /// A fixed offset whatever the grain (`"7 days"`, `"1 month"`, MetricFlow's
    /// `offset_window`): each period against the rows that lie this long before its rows.
    Offset(u32, TimeGrain),
    /// The first day of the week, month, quarter or year the period starts in
    /// (`"start_of_month"`, MetricFlow's `offset_to_grain`): each period against the
    /// rows of that one day.
    PeriodStart(TimeGrain),
    /// The days the time dimension's calendar aligns each day with (`"aligned"`: a
    /// holiday-aligned comparison): each period against the rows of its days' aligned
    /// days.
    Aligned,
    /// Periods of a grain of the time dimension's calendar (`"1 retail_month"`,
    /// MetricFlow's offset by a custom granularity): at that grain, each period against
    /// the whole period this many before; at another, each day against the day at the
    /// same position in that earlier period.
    CalendarPeriods(u32, String),
}

impl TryFrom<String> for Compare {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Compare, String> {
        match text.as_str() {
            "previous_period" => return Ok(Compare::PreviousPeriod),
            "same_period_last_year" => return Ok(Compare::SamePeriodLastYear),
            "start_of_week" => return Ok(Compare::PeriodStart(TimeGrain::Week)),
            "start_of_month" => return Ok(Compare::PeriodStart(TimeGrain::Month)),
            "start_of_quarter" => return Ok(Compare::PeriodStart(TimeGrain::Quarter)),
            "start_of_year" => return Ok(Compare::PeriodStart(TimeGrain::Year)),
            "aligned" => return Ok(Compare::Aligned),
            _ => {}
        }
        let wrong = || {
            format!(
                "unknown compare \"{text}\": previous_period, same_period_last_year, start_of_week, start_of_month, start_of_quarter, start_of_year, aligned (the days of the time dimension's calendar), or an offset such as \"7 days\", \"1 month\" or \"1 retail_month\" (a grain of the calendar)"
            )
        };
        let mut words = text.split_whitespace();
        let (Some(n), Some(unit), None) = (words.next(), words.next(), words.next()) else {
            return Err(wrong());
        };
        let n: u32 = n.parse().map_err(|_| wrong())?;
        let grain = match unit.trim_end_matches('s') {
            "second" => TimeGrain::Second,
            "minute" => TimeGrain::Minute,
            "hour" => TimeGrain::Hour,
            "day" => TimeGrain::Day,
            "week" => TimeGrain::Week,
            "month" => TimeGrain::Month,
            "quarter" => TimeGrain::Quarter,
            "year" => TimeGrain::Year,
            // A grain of the time dimension's calendar (checked when the metric is
            // bound).
            other
                if !other.is_empty() && other.chars().all(|c| c.is_alphanumeric() || c == '_') =>
            {
                if n == 0 {
                    return Err(wrong());
                }
                return Ok(Compare::CalendarPeriods(n, unit.to_string()));
            }
            _ => return Err(wrong()),
        };
        if n == 0 {
            return Err(wrong());
        }
        Ok(Compare::Offset(n, grain))
    }
}

/// A property a conversion event shares with the base event it is credited to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstantProperty {
    /// The dimension on the base events.
    pub base: Spanned<String>,
    /// The dimension on the conversion events (default: `base`, a dimension both
    /// tables carry or reach).
    pub conversion: Option<Spanned<String>>,
}

/// How a balance or stock is read over time (MetricFlow's `non_additive_dimension`): the
/// rows of one day of each period, or the average of the period's days.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemiAdditive {
    /// The time dimension the value does not add up over (the snapshot's date).
    pub time: Spanned<String>,
    /// Which day of each period gives its value (default `last`).
    #[serde(default)]
    pub at: Snapshot,
    /// Columns or dimensions each of which has its own last (or first) day: an account
    /// or a store whose latest snapshot in the period is taken even when others have a
    /// later one (MetricFlow's `window_groupings`). With `average`, each one's average
    /// over its days, then aggregated across them.
    #[serde(default)]
    pub per: Vec<Spanned<String>>,
}

/// Which rows of a period a semi-additive metric aggregates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Snapshot {
    /// The rows of the period's last day with rows (期末余额, closing balance).
    #[default]
    Last,
    /// The rows of the period's first day with rows (期初余额, opening balance).
    First,
    /// Each day's value (the metric over that day's rows), averaged over the period's
    /// days with rows (日均余额, average daily balance).
    Average,
}

impl Snapshot {
    /// The word used in the model.
    pub fn as_str(self) -> &'static str {
        match self {
            Snapshot::Last => "last",
            Snapshot::First => "first",
            Snapshot::Average => "average",
        }
    }
}

/// Which day of a coarser period a cumulative metric's window ends with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodAgg {
    /// The period's first day.
    First,
    /// The period's last day: the window ends with the period.
    #[default]
    Last,
    /// The average of its days' values (MetricFlow's `average`).
    Average,
}

/// What a conversion metric shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calculation {
    /// Conversions divided by the base metric.
    #[default]
    ConversionRate,
    /// The conversion metric aggregated over the converted events.
    Conversions,
}

/// What a period-over-period column shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    /// The earlier period's value.
    Value,
    /// This period's value minus the earlier one.
    Difference,
    /// (this − earlier) / earlier; NULL when the earlier value is 0 or missing.
    #[default]
    Growth,
}

/// Aggregations of atomic metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Sum of the expression.
    Sum,
    /// Count of rows (or of non-null values of the expression).
    Count,
    /// Count of distinct non-null values of the expression.
    CountDistinct,
    /// Average of the expression.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// The median: the middle value, or the mean of the two middle values
    /// (`percentile_cont(0.5)`), as `double precision`.
    Median,
    /// The value at the fraction `percentile` of the ordered values, interpolated between
    /// the two around it, as `double precision` (PostgreSQL's `percentile_cont`).
    PercentileCont,
    /// The first value at or past the fraction `percentile` of the ordered values, of the
    /// expression's own type (PostgreSQL's `percentile_disc`).
    PercentileDisc,
}

impl Aggregation {
    /// The SQL function name.
    pub fn sql_function(self) -> &'static str {
        match self {
            Aggregation::Sum => "sum",
            Aggregation::Count | Aggregation::CountDistinct => "count",
            Aggregation::Avg => "avg",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::Median | Aggregation::PercentileCont => "percentile_cont",
            Aggregation::PercentileDisc => "percentile_disc",
        }
    }

    /// Whether the aggregation is a percentile (an ordered-set aggregate, which needs every
    /// value of a group and has no running or partial form).
    pub fn is_percentile(self) -> bool {
        matches!(
            self,
            Aggregation::Median | Aggregation::PercentileCont | Aggregation::PercentileDisc
        )
    }

    /// Whether the aggregation takes the key `percentile`.
    pub fn takes_fraction(self) -> bool {
        matches!(
            self,
            Aggregation::PercentileCont | Aggregation::PercentileDisc
        )
    }
}

/// Lifecycle status of a metric.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being defined; not yet certified.
    Draft,
    /// Published and certified.
    #[default]
    Active,
    /// Still answers; a replacement exists.
    Deprecated,
    /// No longer answers.
    Retired,
}

impl Status {
    /// The status as written in the model.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Retired => "retired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Compare, TimeGrain};

    #[test]
    fn compare_names_periods_offsets_and_period_starts() {
        let parse = |t: &str| Compare::try_from(t.to_string());
        assert_eq!(parse("previous_period"), Ok(Compare::PreviousPeriod));
        assert_eq!(parse("7 days"), Ok(Compare::Offset(7, TimeGrain::Day)));
        assert_eq!(parse("1 month"), Ok(Compare::Offset(1, TimeGrain::Month)));
        assert_eq!(
            parse("start_of_month"),
            Ok(Compare::PeriodStart(TimeGrain::Month))
        );
        assert_eq!(
            parse("start_of_week"),
            Ok(Compare::PeriodStart(TimeGrain::Week))
        );
        // A unit that is no grain is a grain of the calendar (checked when bound).
        assert_eq!(
            parse("1 retail_month"),
            Ok(Compare::CalendarPeriods(1, "retail_month".into()))
        );
        for wrong in [
            "0 days",
            "0 retail_month",
            "start_of_day",
            "1 retail-month",
            "last_year",
        ] {
            assert!(parse(wrong).is_err(), "{wrong}");
        }
    }
}
