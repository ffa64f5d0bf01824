//! Data quality checks of a table (`[tables.quality]`), as plain data: freshness of a
//! time column, columns that must not be null, columns whose values must be unique, and
//! the largest share by which the row count may change between two checks. Evaluated by
//! the alerts stage on the table's schedule through the table's own source.

use serde::Deserialize;
use toml::Spanned;

/// The checks of one table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quality {
    /// The newest value of a time column must be at most `max_lag` old.
    pub freshness: Option<Freshness>,
    /// Columns that must have no NULL.
    #[serde(default)]
    pub not_null: Vec<Spanned<String>>,
    /// Columns whose non-NULL values must be unique (a primary key).
    #[serde(default)]
    pub unique: Vec<Spanned<String>>,
    /// The row count may change by at most this share of the count at the previous check
    /// (0.5: half).
    pub row_count_change: Option<Spanned<f64>>,
    /// When the checks run: cron in the model's time zone (default every 10 minutes).
    pub schedule: Option<Spanned<String>>,
}

/// `freshness = { column = "ordered_at", max_lag = "1 day" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// A date or timestamp column of the table.
    pub column: Spanned<String>,
    /// How old its newest value may be (`"2 hours"`, `"1 day"`).
    pub max_lag: Spanned<String>,
}

/// Every ten minutes.
pub const DEFAULT_SCHEDULE: &str = "*/10 * * * *";

impl Quality {
    /// The cron expression of the schedule.
    pub fn schedule(&self) -> &str {
        self.schedule
            .as_ref()
            .map(|s| s.get_ref().as_str())
            .unwrap_or(DEFAULT_SCHEDULE)
    }

    /// Problems as (the key's span, reason).
    pub fn check(&self) -> Vec<(std::ops::Range<usize>, String)> {
        let mut issues = Vec::new();
        if let Some(f) = &self.freshness
            && let Err(e) = super::alerts::parse_interval(f.max_lag.get_ref())
        {
            issues.push((f.max_lag.span(), e));
        }
        if let Some(share) = &self.row_count_change
            && !(*share.get_ref() > 0.0 && share.get_ref().is_finite())
        {
            issues.push((
                share.span(),
                "row_count_change is a share of the previous count, such as 0.5".into(),
            ));
        }
        if let Err(e) = super::alerts::parse_schedule(self.schedule()) {
            issues.push((
                self.schedule.as_ref().map(|s| s.span()).unwrap_or_default(),
                e,
            ));
        }
        issues
    }
}
