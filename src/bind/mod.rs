//! Bind the model to its sources: parse every expression, resolve its column references
//! against the tables' real schemas, and lay out the columns of every view.
//!
//! The result, [`Semantics`], is what the rewrite stage reads. Expressions are stored
//! qualified by table name (`orders.status`), with dimension names used inside metric
//! filters already replaced by the dimension's expression.
//!
//! Invariant: pure data in, pure data out. No I/O, no DataFusion session; column types
//! of views are filled in later by the engine, which can plan.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::sql::sqlparser::ast::{Expr, Ident, visit_expressions_mut};
use toml::Spanned;

use crate::error::{Error, ModelIssue, Result, did_you_mean};
use crate::model::{
    Aggregation, Calculation, Compare, DimensionKind, MetricKind, Model, Show, Snapshot, Status,
    TimeGrain, WeekStart, Window,
};
use crate::time_zone::TimeZone;

mod access;
mod dimension;
mod join_graph;
mod metric;
mod view;

pub use access::{Access, Denial};

pub use dimension::{METRIC_DIMENSION_KEY, METRIC_DIMENSION_VALUE};
pub(crate) use join_graph::aggregate_tables;
use join_graph::check_join_graph;
use metric::bind_metric;

/// In a bound formula, the quoted identifier `"__total__<metric>"` stands for `total(<metric>)`:
/// the metric over every row the query selects, whatever its grain.
pub const TOTAL_PREFIX: &str = "__total__";

/// An expression over model tables, qualified by table name.
#[derive(Debug, Clone)]
pub struct BoundExpr {
    /// The expression; every column reference is `table.column`.
    pub expr: Expr,
    /// Every table the expression reads.
    pub tables: BTreeSet<String>,
}

/// A dimension bound to its table.
#[derive(Debug, Clone)]
pub struct BoundDimension {
    /// Dimension name.
    pub name: String,
    /// The table the dimension belongs to.
    pub table: String,
    /// The qualified expression.
    pub expr: BoundExpr,
    /// Categorical or time.
    pub kind: DimensionKind,
    /// A metric as a dimension: the metric whose value per row of `table` this is (its
    /// expression reads the relation [`crate::model::metric_dimension_relation`]).
    pub metric: Option<String>,
    /// A time dimension's calendar (for `compare = "aligned"`).
    pub calendar: Option<BoundCalendar>,
    /// First day of the week of the `__week` grain.
    pub week_start: WeekStart,
    /// Month (1–12) the fiscal year starts in.
    pub fiscal_year_start_month: u32,
    /// Business label.
    pub label: String,
    /// Description.
    pub description: String,
    /// Arrow type of the dimension's values; filled in by the engine.
    pub data_type: DataType,
}

/// A time dimension's calendar, bound to its table's columns.
#[derive(Debug, Clone)]
pub struct BoundCalendar {
    /// The calendar table.
    pub table: String,
    /// Its primary key: the day.
    pub day: String,
    /// The column of each day's aligned (earlier) day, if it has one.
    pub aligned: Option<String>,
    /// Its grains: dimensions of the calendar table naming each day's period.
    pub grains: Vec<String>,
}

/// A metric bound to the model: its definition resolved to aggregates of tables and
/// expressions over other metrics.
#[derive(Debug, Clone)]
pub struct BoundMetric {
    /// Metric name.
    pub name: String,
    /// Its layer or time-aware kind.
    pub kind: MetricKind,
    /// How it is computed.
    pub definition: Definition,
    /// The time dimension a query must be grouped by (at some grain) to compute it:
    /// set for period-over-period and cumulative metrics and composites that use one.
    pub time: Option<String>,
    /// Business label.
    pub label: String,
    /// Definition in plain words.
    pub description: String,
    /// Lifecycle status.
    pub status: Status,
    /// The value shown where the metric has none.
    pub fill: Option<f64>,
}

/// How a metric is computed.
#[derive(Debug, Clone)]
pub enum Definition {
    /// An aggregation of a table's rows (atomic and derived metrics).
    Aggregate(Box<AggregateDef>),
    /// An expression over other metrics; its metric references are bare identifiers, and
    /// every division's divisor is wrapped in `NULLIF(.., 0)`.
    Composite {
        /// The formula.
        formula: Box<Expr>,
        /// The metrics it names.
        refs: BTreeSet<String>,
    },
    /// The base metric compared with an earlier period.
    PeriodOverPeriod {
        /// The metric compared.
        base: String,
        /// The time dimension.
        time: String,
        /// Which earlier period.
        compare: Compare,
        /// What the column shows.
        show: Show,
    },
    /// The base metric accumulated over a window.
    Cumulative {
        /// The metric accumulated.
        base: String,
        /// The time dimension.
        time: String,
        /// The window.
        window: Window,
        /// At coarser grains than a day: `None`, the window ends with the period; `First`
        /// (`Last`), a period's value is its first (last) day's within the query's range
        /// whose window holds rows (`period_agg`, MetricFlow's).
        day: Option<crate::model::PeriodAgg>,
    },
    /// Base events followed by conversion events of the same entity.
    Conversion(Box<ConversionDef>),
}

/// A conversion metric: each conversion event is credited to the latest base event of
/// the same entity at or before it (within the window), and the conversion metric is
/// aggregated over the credited events, grouped by the base events' dimensions.
#[derive(Debug, Clone)]
pub struct ConversionDef {
    /// The metric of the base events (an aggregate).
    pub base: String,
    /// The metric of the conversion events (an aggregate).
    pub conversion: String,
    /// The dimension a base event and its conversions share.
    pub entity: String,
    /// The time dimension of the base events.
    pub time: String,
    /// The time dimension of the conversion events.
    pub conversion_time: String,
    /// How long after a base event a conversion counts; `None`: any time after.
    pub window: Option<(u32, TimeGrain)>,
    /// What the metric shows.
    pub calculation: Calculation,
    /// Dimensions a conversion event shares with its base event: (on the base events,
    /// on the conversion events).
    pub constant: Vec<(String, String)>,
}

/// An aggregation of a table's rows.
#[derive(Debug, Clone)]
pub struct AggregateDef {
    /// The fact table aggregated.
    pub table: String,
    /// The aggregation.
    pub agg: Aggregation,
    /// The aggregated expression (None: count rows).
    pub expr: Option<Expr>,
    /// Only rows where this holds are aggregated.
    pub filter: Option<Expr>,
    /// Every table the expression and filter read (the fact table included).
    pub tables: BTreeSet<String>,
    /// A percentile's fraction (0.5 for the median).
    pub fraction: Option<f64>,
    /// A balance or stock: which rows of each period are aggregated.
    pub semi_additive: Option<SemiAdditiveDef>,
}

/// A semi-additive metric's time dimension and its snapshot rule, bound to base columns.
#[derive(Debug, Clone)]
pub struct SemiAdditiveDef {
    /// The time dimension's name (grain expressions that read it split the snapshots).
    pub dimension: String,
    /// Its expression over qualified base columns.
    pub time: Expr,
    /// Which rows of a period count.
    pub at: Snapshot,
    /// Expressions each value of which has its own last (or first) day.
    pub per: Vec<Expr>,
}

impl AggregateDef {
    /// What is aggregated, in SQL: the expression, under the metric's filter as a CASE
    /// (`*` for a count of rows).
    pub fn value_sql(&self) -> String {
        match (&self.expr, &self.filter) {
            (Some(e), Some(f)) => format!("CASE WHEN {f} THEN {e} END"),
            (Some(e), None) => e.to_string(),
            (None, Some(f)) => format!("CASE WHEN {f} THEN 1 END"),
            (None, None) => "*".to_string(),
        }
    }

    /// The aggregate in SQL: `sum(expr)`, `count(DISTINCT expr)`, with the metric's
    /// filter as a CASE inside.
    pub fn sql(&self) -> String {
        let value = self.value_sql();
        self.sql_of(&value)
    }

    /// The aggregate over `value` (the value or a column that holds it).
    pub fn sql_of(&self, value: &str) -> String {
        match self.agg {
            Aggregation::CountDistinct => format!("count(DISTINCT {value})"),
            agg if agg.is_percentile() => format!(
                "{}({}) WITHIN GROUP (ORDER BY {value})",
                agg.sql_function(),
                self.fraction.unwrap_or(0.5)
            ),
            agg => format!("{}({value})", agg.sql_function()),
        }
    }
}

impl BoundMetric {
    /// The aggregation, for atomic and derived metrics.
    pub fn aggregate(&self) -> Option<&AggregateDef> {
        match &self.definition {
            Definition::Aggregate(a) => Some(a.as_ref()),
            _ => None,
        }
    }

    /// The definition in SQL-like words, for catalogs.
    pub fn definition_text(&self) -> String {
        match &self.definition {
            Definition::Aggregate(a) => match &a.semi_additive {
                None => a.sql(),
                Some(semi) => {
                    let per = if semi.per.is_empty() {
                        String::new()
                    } else {
                        let per: Vec<String> = semi.per.iter().map(|e| e.to_string()).collect();
                        format!(" per {}", per.join(", "))
                    };
                    let at = match semi.at {
                        Snapshot::Last => "on the last day",
                        Snapshot::First => "on the first day",
                        Snapshot::Average => "averaged over the days",
                    };
                    format!("{} {at} of {} of each period{per}", a.sql(), semi.dimension)
                }
            },
            Definition::Composite { formula, .. } => formula.to_string(),
            Definition::PeriodOverPeriod {
                base,
                time,
                compare,
                show,
            } => {
                let compare = match compare {
                    Compare::PreviousPeriod => "the previous period".to_string(),
                    Compare::SamePeriodLastYear => "the same period last year".to_string(),
                    Compare::Offset(n, g) => format!("{n} {}(s) earlier", g.name()),
                    Compare::PeriodStart(g) => format!("the first day of the {}", g.name()),
                    Compare::Aligned => "the aligned days of its calendar".to_string(),
                    Compare::CalendarPeriods(n, g) => format!("{n} {g}(s) of its calendar earlier"),
                };
                let show = match show {
                    Show::Value => "value",
                    Show::Difference => "difference",
                    Show::Growth => "growth",
                };
                format!("{show} of {base} against {compare} of {time}")
            }
            Definition::Conversion(c) => {
                let within = c
                    .window
                    .map(|(n, g)| format!(" within {n} {}(s)", g.name()))
                    .unwrap_or_default();
                let what = match c.calculation {
                    Calculation::ConversionRate => "rate",
                    Calculation::Conversions => "count",
                };
                format!(
                    "conversion {what}: {} ({}) after {} ({}) of the same {}{within}",
                    c.conversion, c.conversion_time, c.base, c.time, c.entity
                )
            }
            Definition::Cumulative {
                base,
                time,
                window,
                day,
            } => {
                let window = match window {
                    Window::ToDate(g) => format!("{}-to-date", g.name()),
                    Window::AllTime => "running total".to_string(),
                    Window::Trailing(n, g) => format!("trailing {n} {}s", g.name()),
                    Window::PeriodStart(g) => format!("the first day of the {}", g.name()),
                    Window::Period => "every period, rows or not".to_string(),
                };
                let day = match day {
                    Some(crate::model::PeriodAgg::First) => {
                        " (a period's value is its first day's with rows in its window)"
                    }
                    Some(crate::model::PeriodAgg::Last) => {
                        " (a period's value is its last day's with rows in its window)"
                    }
                    Some(crate::model::PeriodAgg::Average) => {
                        " (a period's value is the average of its days' with rows in their windows)"
                    }
                    None => "",
                };
                format!("{base} over {window} of {time}{day}")
            }
        }
    }
}

/// A segment: a condition over dimension names.
#[derive(Debug, Clone)]
pub struct BoundSegment {
    /// Segment name.
    pub name: String,
    /// The condition, over dimension names (translated like a query's WHERE).
    pub filter: Expr,
    /// Business label.
    pub label: String,
    /// Description.
    pub description: String,
}

/// What a view column is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// A dimension, by name.
    Dimension(String),
    /// A time dimension truncated to a grain (`order_date__month`).
    TimeGrain(String, TimeGrain),
    /// A metric, by name.
    Metric(String),
    /// A segment, by name: true for the rows it selects.
    Segment(String),
}

/// One column of a view as clients see it.
#[derive(Debug, Clone)]
pub struct ViewColumn {
    /// Column name.
    pub name: String,
    /// What the column is.
    pub kind: ColumnKind,
    /// Arrow type of the column's values; filled in by the engine.
    pub data_type: DataType,
    /// Column comment: label and description.
    pub comment: String,
}

/// A view as clients see it.
#[derive(Debug, Clone)]
pub struct BoundView {
    /// View name.
    pub name: String,
    /// Table comment.
    pub comment: String,
    /// Columns: dimensions, their time grains, metrics, then segments.
    pub columns: Vec<ViewColumn>,
    /// Segments applied to every query of the view.
    pub apply_segments: Vec<String>,
    /// The reading user's row filter (see [`crate::access`]): a condition over
    /// dimension names applied to every query of the view.
    pub row_filter: Option<Expr>,
}

impl BoundView {
    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ViewColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The model bound to its sources: everything the rewrite stage needs.
#[derive(Debug, Clone)]
pub struct Semantics {
    /// The model as loaded.
    pub model: Model,
    /// Column names of each table.
    pub table_columns: HashMap<String, Vec<String>>,
    /// Bound dimensions by name.
    pub dimensions: HashMap<String, BoundDimension>,
    /// Bound metrics by name.
    pub metrics: HashMap<String, BoundMetric>,
    /// Bound segments by name.
    pub segments: HashMap<String, BoundSegment>,
    /// Dimensions a table carries itself: table → dimension → expression over the table.
    pub table_dimensions: HashMap<String, HashMap<String, BoundExpr>>,
    /// Views, in model order.
    pub views: Vec<BoundView>,
    /// The model's default time zone (sessions start in it).
    pub time_zone: TimeZone,
    /// What the access rules decided for the reading user (nothing denied until
    /// [`crate::access::restrict`] narrows it).
    pub access: Access,
}

impl Semantics {
    /// The view named `name`.
    pub fn view(&self, name: &str) -> Option<&BoundView> {
        self.views.iter().find(|v| v.name == name)
    }

    /// The bound dimension `name`, which the rewrite only names when it is bound (else
    /// an internal error).
    pub fn dimension(&self, name: &str) -> Result<&BoundDimension> {
        self.dimensions
            .get(name)
            .ok_or_else(|| Error::Internal(format!("dimension {name} is not bound")))
    }
}

/// Give each time dimension whose values are timestamps (not dates), and each that asks
/// for it (`day_column`), a `__day` grain column after its own column (a date is its own
/// day), preceded by `__hour`, `__minute` and `__second` down to the dimension's
/// `granularity`. Called once the dimensions' types are known.
pub fn add_day_grains(semantics: &mut Semantics) {
    let asked: BTreeSet<&str> = semantics
        .model
        .dimensions
        .iter()
        .filter(|d| d.day_column)
        .map(|d| d.name.get_ref().as_str())
        .collect();
    // The grains finer than a day each timestamp dimension offers (finest first).
    let sub_daily: HashMap<String, Vec<TimeGrain>> = semantics
        .model
        .dimensions
        .iter()
        .filter_map(|d| {
            let finest = TimeGrain::from_name(d.granularity.as_ref()?.get_ref())?;
            let grains = TimeGrain::SUB_DAILY
                .into_iter()
                .filter(|g| g.rank() >= finest.rank())
                .collect();
            Some((d.name.get_ref().clone(), grains))
        })
        .collect();
    let timestamps: BTreeSet<String> = semantics
        .dimensions
        .values()
        .filter(|d| {
            d.kind == DimensionKind::Time
                && (matches!(d.data_type, DataType::Timestamp(..))
                    || asked.contains(d.name.as_str()))
        })
        .map(|d| d.name.clone())
        .collect();
    for view in &mut semantics.views {
        let mut columns = Vec::with_capacity(view.columns.len());
        for column in std::mem::take(&mut view.columns) {
            let (d, comment) = match &column.kind {
                ColumnKind::Dimension(d) if timestamps.contains(d) => {
                    (d.clone(), column.comment.clone())
                }
                _ => {
                    columns.push(column);
                    continue;
                }
            };
            columns.push(column);
            let is_instant = semantics
                .dimensions
                .get(&d)
                .is_some_and(|dim| matches!(dim.data_type, DataType::Timestamp(..)));
            let finer = match sub_daily.get(&d) {
                Some(grains) if is_instant => grains.as_slice(),
                _ => &[],
            };
            for &grain in finer.iter().chain([&TimeGrain::Day]) {
                columns.push(ViewColumn {
                    name: format!("{d}__{}", grain.name()),
                    kind: ColumnKind::TimeGrain(d.clone(), grain),
                    data_type: DataType::Null,
                    comment: format!("{comment} (truncated to {})", grain.name()),
                });
            }
        }
        view.columns = columns;
    }
}

/// Parse a SQL expression (PostgreSQL dialect), requiring the whole text to be consumed.
pub fn parse_expr(text: &str) -> std::result::Result<Expr, String> {
    crate::model::parse_expr(text)
}

struct Binder<'a> {
    model: &'a Model,
    columns: &'a HashMap<String, Vec<String>>,
    /// Without the tables' schemas (`kpitables check` without `--with-data`): every
    /// column name of a table is taken to exist, so only the model's own structure is
    /// checked.
    any_column: bool,
    issues: Vec<ModelIssue>,
    /// Metrics whose definition failed (reported once, where found).
    failed_metrics: std::collections::HashSet<String>,
}

impl Binder<'_> {
    fn issue(&mut self, file: usize, at: &Spanned<String>, reason: String) {
        let issue = self.model.files.issue(file, Some(at.span().start), reason);
        self.issues.push(issue);
    }

    /// Qualify `text`, an expression of `table`. Unqualified names are columns of
    /// `table`, else (when `dimensions` is given) dimension names; `t.c` names a column
    /// of a table reachable from `table`.
    fn bind(
        &mut self,
        file: usize,
        text: &Spanned<String>,
        table: &str,
        dimensions: Option<&HashMap<String, BoundDimension>>,
    ) -> Option<BoundExpr> {
        let mut expr = match parse_expr(text.get_ref()) {
            Ok(e) => e,
            Err(e) => {
                self.issue(file, text, format!("not a valid SQL expression: {e}"));
                return None;
            }
        };
        let mut tables = BTreeSet::from([table.to_string()]);
        let mut problems = Vec::new();
        let _ = visit_expressions_mut(&mut expr, |e| {
            match e {
                Expr::Identifier(ident) => {
                    let name = ident.value.clone();
                    let own = self.columns.get(table).map(Vec::as_slice).unwrap_or(&[]);
                    let is_dimension = dimensions.is_some_and(|d| d.contains_key(&name));
                    if own.contains(&name) || (self.any_column && !is_dimension) {
                        *e = Expr::CompoundIdentifier(vec![
                            Ident::with_quote('"', table),
                            Ident::with_quote('"', name),
                        ]);
                    } else if let Some(dim) = dimensions.and_then(|d| d.get(&name)) {
                        tables.extend(dim.expr.tables.iter().cloned());
                        *e = Expr::Nested(Box::new(dim.expr.expr.clone()));
                    } else {
                        let candidates = own.iter().map(String::as_str).chain(
                            dimensions
                                .into_iter()
                                .flat_map(|d| d.keys().map(String::as_str)),
                        );
                        let hint = did_you_mean(&name, candidates)
                            .map(|h| format!("; {h}"))
                            .unwrap_or_default();
                        problems.push(format!("table \"{table}\" has no column \"{name}\"{hint}"));
                    }
                }
                Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                    let (t, c) = (parts[0].value.clone(), parts[1].value.clone());
                    let known = if self.any_column {
                        self.model.table(&t).map(|_| vec![c.clone()])
                    } else {
                        self.columns.get(&t).cloned()
                    };
                    match known.as_ref() {
                        None => {
                            let hint = did_you_mean(&t, self.columns.keys().map(String::as_str))
                                .map(|h| format!("; {h}"))
                                .unwrap_or_default();
                            problems.push(format!("unknown table \"{t}\"{hint}"));
                        }
                        Some(cols) if !cols.contains(&c) => {
                            let hint = did_you_mean(&c, cols.iter().map(String::as_str))
                                .map(|h| format!("; {h}"))
                                .unwrap_or_default();
                            problems.push(format!("table \"{t}\" has no column \"{c}\"{hint}"));
                        }
                        Some(_) if self.model.join_path(table, &t).is_none() => {
                            problems.push(format!(
                                "table \"{t}\" is not reachable from \"{table}\" through many-to-one joins"
                            ));
                        }
                        Some(_) => {
                            *e = Expr::CompoundIdentifier(vec![
                                Ident::with_quote('"', t.clone()),
                                Ident::with_quote('"', c),
                            ]);
                            tables.insert(t);
                        }
                    }
                }
                Expr::CompoundIdentifier(parts) => {
                    let name: Vec<_> = parts.iter().map(|p| p.value.as_str()).collect();
                    problems.push(format!(
                        "\"{}\": write columns as column or table.column",
                        name.join(".")
                    ));
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        if problems.is_empty() {
            Some(BoundExpr { expr, tables })
        } else {
            for p in problems {
                self.issue(file, text, p);
            }
            None
        }
    }
}

/// Bind `model` to the tables' schemas. Every problem is reported with its position.
pub fn bind(model: Model, schemas: &[(String, SchemaRef)]) -> Result<Semantics> {
    bind_with(model, schemas, false)
}

/// Bind `model` without its data: every column a table's expressions name is taken to
/// exist (checked only with the data), every other rule is checked as [`bind`] checks it.
pub fn bind_structure(model: Model) -> Result<Semantics> {
    bind_with(model, &[], true)
}

fn bind_with(model: Model, schemas: &[(String, SchemaRef)], any_column: bool) -> Result<Semantics> {
    let columns: HashMap<String, Vec<String>> = schemas
        .iter()
        .map(|(t, s)| {
            (
                t.clone(),
                s.fields().iter().map(|f| f.name().clone()).collect(),
            )
        })
        .collect();
    let mut b = Binder {
        model: &model,
        columns: &columns,
        any_column,
        issues: Vec::new(),
        failed_metrics: Default::default(),
    };

    for table in &model.tables {
        let name = table.name.get_ref();
        let Some(cols) = columns.get(name) else {
            continue;
        };
        let mut check = |col: &Spanned<String>, of: &str, cols: &[String]| {
            if !cols.contains(col.get_ref()) {
                let hint = did_you_mean(col.get_ref(), cols.iter().map(String::as_str))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                let reason = format!("table \"{of}\" has no column \"{}\"{hint}", col.get_ref());
                b.issue(table.file_index, col, reason);
            }
        };
        check(&table.primary_key, name, cols);
        for join in &table.joins {
            check(&join.foreign_key, name, cols);
            if let (Some(target), Some(target_cols)) = (
                model.table(join.to.get_ref()),
                columns.get(join.to.get_ref()),
            ) {
                check(
                    join.key.as_ref().unwrap_or(&target.primary_key),
                    target.name.get_ref(),
                    target_cols,
                );
            }
        }
    }

    let dimensions = dimension::bind_dimensions(&mut b, &model);

    let mut metrics: HashMap<String, BoundMetric> = HashMap::new();
    for metric in &model.metrics {
        let mut stack = Vec::new();
        bind_metric(&mut b, metric, &dimensions, &mut metrics, &mut stack);
    }

    for dim in &model.dimensions {
        dimension::check_metric_dimension(&mut b, dim, &metrics);
    }

    let mut table_dimensions: HashMap<String, HashMap<String, BoundExpr>> = HashMap::new();
    for table in &model.tables {
        for (dimension, text) in &table.dimensions {
            if let Some(expr) = b.bind(table.file_index, text, table.name.get_ref(), None) {
                table_dimensions
                    .entry(table.name.get_ref().clone())
                    .or_default()
                    .insert(dimension.clone(), expr);
            }
        }
    }

    let mut segments = HashMap::new();
    for segment in &model.segments {
        if let Some(bound) = bind_segment(&mut b, segment, &dimensions) {
            segments.insert(bound.name.clone(), bound);
        }
    }

    let views: Vec<BoundView> = model
        .views
        .iter()
        .map(|view| {
            check_join_graph(&mut b, view, &dimensions, &metrics, &table_dimensions);
            view::lay_out(&mut b, view, &dimensions, &metrics, &segments)
        })
        .collect();

    if !b.issues.is_empty() {
        return Err(Error::Model(b.issues));
    }
    Ok(Semantics {
        time_zone: model.time_zone(),
        access: Access::default(),
        model,
        table_columns: columns,
        dimensions,
        metrics,
        segments,
        table_dimensions,
        views,
    })
}

/// Bind a segment: its filter may name dimensions only.
fn bind_segment(
    b: &mut Binder<'_>,
    segment: &crate::model::Segment,
    dimensions: &HashMap<String, BoundDimension>,
) -> Option<BoundSegment> {
    let text = &segment.filter;
    let filter = match parse_expr(text.get_ref()) {
        Ok(e) => e,
        Err(e) => {
            b.issue(
                segment.file,
                text,
                format!("not a valid SQL expression: {e}"),
            );
            return None;
        }
    };
    let mut problems = Vec::new();
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(&filter, |e| {
        match e {
            Expr::Identifier(ident) if !dimensions.contains_key(&ident.value) => {
                let hint = did_you_mean(&ident.value, dimensions.keys().map(String::as_str))
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                problems.push(format!(
                    "segment \"{}\" names \"{}\", which is not a dimension{hint}",
                    segment.name.get_ref(),
                    ident.value
                ));
            }
            Expr::CompoundIdentifier(_) => problems.push(format!(
                "\"{e}\": a segment's filter names dimensions, not table columns"
            )),
            other if crate::sql::is_aggregate_call(other) => problems.push(format!(
                "\"{e}\": a segment selects rows; aggregates belong in metrics"
            )),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    if !problems.is_empty() {
        for p in problems {
            b.issue(segment.file, text, p);
        }
        return None;
    }
    Some(BoundSegment {
        name: segment.name.get_ref().clone(),
        filter,
        label: segment.label.clone(),
        description: segment.description.clone(),
    })
}
