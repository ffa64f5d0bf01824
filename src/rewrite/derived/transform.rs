//! How each metric column of a derived table is computed: the transform of an aggregate
//! metric (plain, shifted to an earlier period, windowed, aligned by a calendar, under
//! a condition, ...) and what a period-dependent transform needs to know.

use datafusion::sql::sqlparser::ast::Expr;

use crate::model::{TimeGrain, Window};

/// How a column of the derived table computes an aggregate metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// The metric at the block's grain.
    Plain,
    /// The metric of an earlier period, aligned on the period it is compared with: rows
    /// are grouped and filtered with the time dimension moved forward by `interval`.
    Shift {
        /// The time dimension.
        time: String,
        /// SQL interval literal, e.g. `1 month`.
        interval: String,
        /// Its periods are periods of the answer (an offset metric: a period whose
        /// earlier period has rows has a row), and its moved rows end with the data's
        /// last period of this grain (the query's, or the day for a shift shorter than
        /// the query's period); else (`None`) it only brings values to the periods other
        /// parts have (a comparison with this period).
        periods: Option<TimeGrain>,
        /// The shift is a whole number of the grain's periods: with `periods`, a range
        /// on the time dimension selects whole periods, each worth the whole earlier
        /// period (MetricFlow joins periods when the offset is in the query's grain).
        whole: bool,
    },
    /// The metric of the days the time dimension's calendar aligns with each day (a
    /// holiday-aligned comparison): each row is grouped and filtered as the days whose
    /// aligned day its day is (the calendar joined on its aligned column).
    Aligned {
        /// The time dimension (it has a calendar).
        time: String,
        /// Its periods are periods of the answer (`show = "value"`); else it only brings
        /// values to the periods other parts have.
        primary: bool,
        /// The days come from a shift by periods of a grain of the calendar, not from
        /// its column of aligned days.
        shift: Option<CalendarShift>,
    },
    /// The metric over every row the query selects, at no grain (`total(m)` in a
    /// formula: shares of total).
    Total,
    /// The metric at the block's grain over the rows that also meet a condition on the
    /// view's dimensions (a BI tool's `SUM(CASE WHEN <condition> THEN m END)`, or
    /// `FILTER (WHERE <condition>)`). Its groups are only given values: a group without
    /// such rows is NULL.
    Where {
        /// The condition, over the view's columns.
        condition: Box<Expr>,
    },
    /// By day, the metric of the day a calendar interval before each day (`date -
    /// INTERVAL '1 month'`: 29 to 31 March all read 29 February): a window of one day
    /// ending that long before.
    DayBefore {
        /// The time dimension.
        time: String,
        /// SQL interval literal of months or years, e.g. `1 month`.
        interval: String,
        /// Where the block's grain has the days.
        period: Period,
        /// Its days are periods of the answer (an offset metric); else it only brings
        /// values to the days other parts have.
        periods: bool,
    },
    /// The metric accumulated over a window ending with each period of the grain.
    Window {
        /// The time dimension.
        time: String,
        /// The window.
        window: Window,
        /// Where the block's grain has the periods.
        period: Period,
        /// The window of an earlier period (a period-over-period metric of a cumulative
        /// one: this year's to-date against last year's to the same day).
        earlier: Option<Earlier>,
        /// Its periods are periods of the answer (a cumulative metric, a period's first
        /// day shown as a value); else it only brings values to the periods other parts
        /// have (a comparison with the period's first day).
        primary: bool,
    },
    /// The metric over the conversion events credited to the base events of each group
    /// (the latest base event of the same entity at or before the conversion, within the
    /// window): grouped and filtered on the base events ([`conversion`]).
    Conversion {
        /// The metric of the base events.
        base: String,
        /// The dimension both events share.
        entity: String,
        /// The time dimension of the base events.
        time: String,
        /// The time dimension of the conversion events.
        conversion_time: String,
        /// How long after a base event a conversion counts.
        window: Option<(u32, TimeGrain)>,
        /// Dimensions both events share: (on the base events, on the conversions).
        constant: Vec<(String, String)>,
    },
}

/// For a window part: the window of the period this long before each period, and
/// whether its periods are periods of the answer (as [`Transform::Shift`]'s `periods`).
#[derive(Debug, Clone, PartialEq)]
pub struct Earlier {
    /// Which earlier day each period's window ends with.
    pub before: Before,
    /// An offset metric's periods are rows of the answer; a comparison's are not.
    pub periods: bool,
}

/// The day an earlier window ends with, from the period's own.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    /// This long before (SQL interval literal, e.g. `1 year`).
    Interval(String),
    /// The first day of the week (month, ...) the period's first day is in.
    StartOf(TimeGrain),
}

/// The periods of a time dimension in a block's grain, for a metric computed per period.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// Position of the finest grain expression of the time dimension in the block's grain.
    pub index: usize,
    /// The grain of that expression.
    pub grain: TimeGrain,
    /// Other grain expressions on the time dimension, each a function of the period (a
    /// coarser grain it nests in, such as the month of a day): they label a period and
    /// never split a window.
    pub dependent: Vec<usize>,
    /// At a grain coarser than a day, the period's value is that of its first (last) day
    /// within the query's range whose window holds rows (`period_agg`); `None`: the
    /// window ends with the period.
    pub day: Option<crate::model::PeriodAgg>,
}

/// Periods of a grain of a calendar that a day's rows are counted that many periods
/// later in (`compare = "1 retail_month"`).
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarShift {
    /// The grain: a dimension of the calendar table naming each day's period.
    pub grain: String,
    /// How many periods later.
    pub periods: u32,
    /// The query's grain is that grain: a day's rows count for the later period as a
    /// whole (its first day); else for the day at the same position in it (none when
    /// that period is shorter).
    pub whole: bool,
}

/// One metric column `__m<j>` of the derived table: an aggregate metric under a
/// transform. Composite and period-over-period metrics are expressions over these.
#[derive(Debug, Clone, PartialEq)]
pub struct Physical {
    /// An atomic or derived metric.
    pub metric: String,
    /// How it is computed.
    pub transform: Transform,
}
