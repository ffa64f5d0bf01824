//! The semantic model as plain data: sources, tables, dimensions, metrics and views.
//!
//! The model is read from the TOML files of a model directory ([`load`]) and checked as a
//! whole ([`validate`]). Nothing here knows about SQL execution, the wire protocol or
//! sessions: later stages receive a validated [`Model`] and never change it.
//!
//! Invariant: once [`load::load_dir`] returns `Ok`, every name a model item refers to
//! exists, names are unique per kind and every expression parses.

pub mod alerts;
pub mod diff;
pub mod lineage;
pub mod load;
mod metric;
pub mod quality;
mod time;
pub mod validate;

pub use metric::{
    Aggregation, Calculation, Compare, Metric, MetricKind, PeriodAgg, SemiAdditive, Show, Snapshot,
    Status,
};
pub use time::{TimeGrain, WeekStart, Window, dimension_of_column, grain_suffix};

use serde::Deserialize;
use toml::Spanned;

/// A whole semantic model, merged from every file of a model directory.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// Where the data comes from.
    pub sources: Vec<Source>,
    /// Logical datasets over a source.
    pub tables: Vec<Table>,
    /// Attributes to group and filter by.
    pub dimensions: Vec<Dimension>,
    /// Governed aggregations.
    pub metrics: Vec<Metric>,
    /// Named reusable filters.
    pub segments: Vec<Segment>,
    /// The virtual tables clients see.
    pub views: Vec<View>,
    /// `[model]` sections (at most one is valid).
    pub settings: Vec<ModelSettings>,
    /// Access rules by role.
    pub access: Vec<AccessRule>,
    /// Alert rules.
    pub alerts: Vec<alerts::AlertRule>,
    /// Where alerts are sent.
    pub channels: Vec<alerts::Channel>,
    /// Files the model was read from (path and text), indexed by the `file` field of
    /// every item; used to report positions.
    pub files: load::SourceTexts,
}

/// One TOML file of a model directory. Every section is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// `[[sources]]` entries.
    #[serde(default)]
    pub sources: Vec<Source>,
    /// `[[tables]]` entries.
    #[serde(default)]
    pub tables: Vec<Table>,
    /// `[[dimensions]]` entries.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
    /// `[[metrics]]` entries.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// `[[segments]]` entries.
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// `[[views]]` entries.
    #[serde(default)]
    pub views: Vec<View>,
    /// The `[model]` section.
    #[serde(default)]
    pub model: Option<ModelSettings>,
    /// `[[access]]` rules.
    #[serde(default)]
    pub access: Vec<AccessRule>,
    /// `[[alerts]]` rules.
    #[serde(default)]
    pub alerts: Vec<alerts::AlertRule>,
    /// `[[channels]]` of alerts.
    #[serde(default)]
    pub channels: Vec<alerts::Channel>,
}

/// Settings of the whole model (`[model]`, in one file of the directory).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// The time zone `timestamptz` dimensions are bucketed in when the session does not
    /// set `TimeZone` (an IANA name such as `Asia/Shanghai`; default `UTC`).
    pub time_zone: Option<Spanned<String>>,
    /// Index of the file it was read from.
    #[serde(skip)]
    pub file: usize,
}

/// Where a table's rows come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Unique source name.
    pub name: Spanned<String>,
    /// The kind of source.
    pub kind: SourceKind,
    /// For `files`: the directory holding the files, relative to the model directory
    /// unless absolute.
    pub path: Option<String>,
    /// For warehouses: `postgres://user@host:port/database` or
    /// `mysql://user@host:port/database`, without a password.
    pub url: Option<Spanned<String>>,
    /// For warehouses: the environment variable holding the password.
    pub password_env: Option<String>,
    /// For warehouses: the schema (PostgreSQL) or database (MySQL) of the tables, when
    /// not the connection's default.
    pub schema: Option<String>,
    /// For warehouses: the most connections kpitables opens to the source (default 8).
    pub pool_size: Option<usize>,
    /// For warehouses: seconds to wait for a connection (default 10).
    pub connect_timeout_secs: Option<u64>,
    /// For warehouses: seconds a statement may run before it is cancelled (default 300).
    pub query_timeout_secs: Option<u64>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Index into [`Model::files`]; set by the loader.
    #[serde(skip)]
    pub file: usize,
}

/// Kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Local Parquet and CSV files, queried by the embedded engine.
    Files,
    /// A PostgreSQL-protocol warehouse (PostgreSQL, Greenplum, Citus, ...): queries are
    /// pushed down as PostgreSQL SQL.
    Postgres,
    /// A MySQL-protocol warehouse (MariaDB, MySQL, StarRocks, Doris): queries are pushed
    /// down as MySQL SQL.
    Mysql,
}

impl SourceKind {
    /// True for the warehouse kinds, whose tables live in a database server.
    pub fn is_warehouse(self) -> bool {
        !matches!(self, SourceKind::Files)
    }
}

/// A logical dataset over one source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Unique table name.
    pub name: Spanned<String>,
    /// Name of the source.
    pub source: Spanned<String>,
    /// For file sources: the file (or directory of files) inside the source path.
    pub file: Option<Spanned<String>>,
    /// For warehouse sources: the table's name in the warehouse (default: `name`).
    pub table: Option<Spanned<String>>,
    /// `parquet` or `csv`; by default taken from the file extension.
    pub format: Option<FileFormat>,
    /// The column that identifies a row.
    pub primary_key: Spanned<String>,
    /// Many-to-one joins from this table to others.
    #[serde(default)]
    pub joins: Vec<Join>,
    /// Dimensions this table carries in its own columns (dimension name → expression
    /// over this table), for tables at a coarser grain that share dimensions with the
    /// others without a join path, such as targets per month and region.
    #[serde(default)]
    pub dimensions: std::collections::BTreeMap<String, Spanned<String>>,
    /// Data quality checks (`[tables.quality]`).
    pub quality: Option<quality::Quality>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Index into [`Model::files`]; set by the loader.
    #[serde(skip)]
    pub file_index: usize,
}

/// File formats of a `files` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values with a header row.
    Csv,
}

/// A many-to-one join: `this.foreign_key = to.key` (by default `to.primary_key`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The table joined to (the "one" side).
    pub to: Spanned<String>,
    /// The column of this table holding the key of `to`.
    pub foreign_key: Spanned<String>,
    /// The column of `to` it matches, unique there: another key than its primary key
    /// (a company's `user_id` beside its `company_id`). Default: `to`'s primary key.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
}

/// An attribute to group and filter by.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimension {
    /// Unique dimension name; the column name in views.
    pub name: Spanned<String>,
    /// The table whose rows the expression is evaluated on.
    pub table: Spanned<String>,
    /// SQL expression over the table's columns; defaults to the column named like the dimension.
    pub expr: Option<Spanned<String>>,
    /// A metric as a dimension: the value of this metric (atomic or derived) for each
    /// row of `table`, its rows grouped by the table's primary key (MetricFlow's
    /// `Metric('orders', group_by=['customer'])`): `customer_orders >= 2` in a filter
    /// keeps the rows of customers with two or more orders. Not with `expr`.
    pub metric: Option<Spanned<String>>,
    /// `categorical` (the default) or `time`.
    #[serde(default)]
    pub kind: DimensionKind,
    /// Time dimensions of dates: the calendar table (one row per day) that gives each
    /// day the day it is compared with (`compare = "aligned"`: a holiday-aligned
    /// comparison, each day of this year's Spring Festival against the same day of last
    /// year's).
    pub calendar: Option<Calendar>,
    /// Time dimensions: the first day of the week for the `__week` grain (default
    /// `monday`, as ISO weeks).
    pub week_start: Option<WeekStart>,
    /// Time dimensions: the month (1–12) the fiscal year starts in; when set, the
    /// dimension also has `__fiscal_quarter` and `__fiscal_year` grains.
    pub fiscal_year_start_month: Option<Spanned<u32>>,
    /// Sensitive values are masked for every role whose access rule does not `unmask`
    /// the dimension.
    pub mask: Option<Mask>,
    /// Time dimensions over dates: also offer the day grain as `<name>__day` (as
    /// MetricFlow names it); instants always have it.
    #[serde(default)]
    pub day_column: bool,
    /// Time dimensions over timestamps: the finest grain offered, `hour`, `minute` or
    /// `second` (`<name>__hour`, ...; MetricFlow's `time_granularity`). Default `day`.
    pub granularity: Option<Spanned<String>>,
    /// Business label (any language).
    #[serde(default)]
    pub label: String,
    /// What the dimension means.
    #[serde(default)]
    pub description: String,
    /// Index into [`Model::files`]; set by the loader.
    #[serde(skip)]
    pub file: usize,
}

/// A time dimension's calendar: a table with one row per day (its primary key is the
/// date) and a column that names, for each day, the day it is compared with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calendar {
    /// The calendar table.
    pub table: Spanned<String>,
    /// Its column of aligned days: the earlier day each day is compared with (the same
    /// day of last year's Spring Festival, the same weekday last year, ...).
    pub aligned: Option<Spanned<String>>,
    /// Its grains: dimensions of the calendar table whose values name the period each
    /// day is in (the 4-4-5 retail month, MetricFlow's custom granularities). Periods
    /// are ordered by their first days.
    #[serde(default)]
    pub grains: Vec<Spanned<String>>,
}

/// The name of the relation that holds, for the rows of a shifted part, the days their
/// time dimension `dimension` is compared on: the calendar joined on its aligned column.
pub fn aligned_relation(dimension: &str) -> String {
    format!("{ALIGNED_PREFIX}{dimension}")
}

/// The prefix of [`aligned_relation`]s.
pub const ALIGNED_PREFIX: &str = "__kp_al_";

/// The name of the relation that holds the values of metric dimension `dimension` (a
/// derived table the rewrite joins to the dimension's table on its primary key).
pub fn metric_dimension_relation(dimension: &str) -> String {
    format!("{METRIC_DIMENSION_PREFIX}{dimension}")
}

/// The prefix of [`metric_dimension_relation`]s, which no model table may have.
pub const METRIC_DIMENSION_PREFIX: &str = "__kp_md_";

/// How a masked dimension's values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mask {
    /// The first character, then `***` (`C***`).
    Partial,
    /// `***`.
    Full,
}

/// Kinds of dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DimensionKind {
    /// Text, numbers or flags to group by.
    #[default]
    Categorical,
    /// A date or timestamp, queryable at day, week, month, quarter and year grain.
    Time,
}

/// A named, reusable filter over dimensions (e.g. `north_region`, `new_customers`). A
/// view offers it as a boolean column queries filter or group by, or applies it to every
/// query (`apply_segments`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Unique name (shared namespace with dimensions and metrics).
    pub name: Spanned<String>,
    /// SQL condition over dimension names.
    pub filter: Spanned<String>,
    /// Business label.
    #[serde(default)]
    pub label: String,
    /// What the segment selects.
    #[serde(default)]
    pub description: String,
    /// Who answers for the definition.
    #[serde(default)]
    pub owner: String,
    /// Index into [`Model::files`]; set by the loader.
    #[serde(skip)]
    pub file: usize,
}

/// A virtual table offered to clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    /// Unique view name; the table name clients query.
    pub name: Spanned<String>,
    /// Business label.
    #[serde(default)]
    pub label: String,
    /// What the view is for; shown as the table comment.
    #[serde(default)]
    pub description: String,
    /// Dimension names offered, in column order.
    #[serde(default)]
    pub dimensions: Vec<Spanned<String>>,
    /// Metric names offered, in column order after the dimensions.
    #[serde(default)]
    pub metrics: Vec<Spanned<String>>,
    /// Segments offered as boolean columns, after the metrics.
    #[serde(default)]
    pub segments: Vec<Spanned<String>>,
    /// Segments applied to every query of the view.
    #[serde(default)]
    pub apply_segments: Vec<Spanned<String>>,
    /// Denied to every role whose access rule does not name it.
    #[serde(default)]
    pub sensitive: bool,
    /// Index into [`Model::files`]; set by the loader.
    #[serde(skip)]
    pub file: usize,
}

/// What one role may see (`[[access]]`). When a model has access rules, a user sees only
/// what the rules of its roles grant; rules of several roles add up (the union of their
/// metrics, views and rows).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// The role (users get roles in the server configuration).
    pub role: Spanned<String>,
    /// Metrics the role may query: names, or `"*"` for every metric not marked
    /// sensitive (sensitive ones must be named). Default `["*"]`.
    #[serde(default = "everything")]
    pub metrics: Vec<Spanned<String>>,
    /// Views the role may query, as `metrics`. Default `["*"]`.
    #[serde(default = "everything")]
    pub views: Vec<Spanned<String>>,
    /// Rows the role may see: a condition over dimension names that may use the user's
    /// attributes as `user.<attribute>`. Default: every row.
    pub row_filter: Option<Spanned<String>>,
    /// Masked dimensions shown in clear to the role (`"*"`: all).
    #[serde(default)]
    pub unmask: Vec<Spanned<String>>,
    /// Draft metrics are visible to the role (modelers).
    #[serde(default)]
    pub drafts: bool,
    /// The role may read the audit trail (`kp.audit`).
    #[serde(default)]
    pub audit: bool,
    /// Why the role sees this.
    #[serde(default)]
    pub description: String,
    /// Index into [`Model::files`]; set by the loader.
    #[serde(skip)]
    pub file: usize,
}

fn everything() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "*".to_string())]
}

/// Parse a SQL expression of the model (PostgreSQL dialect), requiring the whole text to
/// be consumed.
pub fn parse_expr(
    text: &str,
) -> std::result::Result<datafusion::sql::sqlparser::ast::Expr, String> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| {
            let e = p.parse_expr()?;
            p.expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)?;
            Ok(e)
        })
        .map_err(|e| e.to_string())
}

/// The attribute `user.<attribute>` in an access rule's row filter names, if `expr` is one
/// (PostgreSQL's parser reads `user` as the `USER` function, so both spellings count).
pub fn user_attribute(expr: &datafusion::sql::sqlparser::ast::Expr) -> Option<&str> {
    use datafusion::sql::sqlparser::ast::{AccessExpr, Expr, FunctionArguments};
    match expr {
        Expr::CompoundIdentifier(parts) => match parts.as_slice() {
            [user, attribute] if user.value.eq_ignore_ascii_case("user") => {
                Some(attribute.value.as_str())
            }
            _ => None,
        },
        Expr::CompoundFieldAccess { root, access_chain } => {
            match (root.as_ref(), access_chain.as_slice()) {
                (Expr::Function(f), [AccessExpr::Dot(Expr::Identifier(attribute))])
                    if f.name.to_string().eq_ignore_ascii_case("user")
                        && matches!(f.args, FunctionArguments::None) =>
                {
                    Some(attribute.value.as_str())
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Is `name` a plain lower-case SQL identifier (letters, digits, `_`; not starting with
/// a digit)? Such names need no quoting.
pub fn is_plain_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Model {
    /// The model's default time zone (`[model] time_zone`; UTC when unset or invalid,
    /// which validation reports).
    pub fn time_zone(&self) -> crate::time_zone::TimeZone {
        self.settings
            .iter()
            .find_map(|s| s.time_zone.as_ref())
            .and_then(|t| crate::time_zone::TimeZone::parse(t.get_ref()))
            .unwrap_or_default()
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name.get_ref() == name)
    }
    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name.get_ref() == name)
    }
    /// The dimension named `name`.
    pub fn dimension(&self, name: &str) -> Option<&Dimension> {
        self.dimensions.iter().find(|d| d.name.get_ref() == name)
    }
    /// The metric named `name`.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name.get_ref() == name)
    }
    /// The segment named `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name.get_ref() == name)
    }
    /// The view named `name`.
    pub fn view(&self, name: &str) -> Option<&View> {
        self.views.iter().find(|v| v.name.get_ref() == name)
    }

    /// How many shortest chains of many-to-one joins lead from table `from` to table
    /// `to` (0: none; more than 1: the path is ambiguous). 1 when `from == to`.
    pub fn join_path_count(&self, from: &str, to: &str) -> usize {
        // Breadth-first search counting shortest paths; the model is small.
        let mut depth: std::collections::HashMap<&str, (usize, usize)> =
            std::collections::HashMap::from([(from, (0, 1))]);
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(name) = queue.pop_front() {
            let Some(&(d, count)) = depth.get(name) else {
                continue;
            };
            if name == to {
                continue;
            }
            let Some(table) = self.table(name) else {
                continue;
            };
            for join in &table.joins {
                let target = join.to.get_ref().as_str();
                match depth.get_mut(target) {
                    None => {
                        depth.insert(target, (d + 1, count));
                        queue.push_back(target);
                    }
                    Some((td, tc)) if *td == d + 1 => *tc += count,
                    Some(_) => {}
                }
            }
        }
        depth.get(to).map_or(0, |&(_, count)| count)
    }

    /// The model table a relation of a bound expression stands for: a metric dimension's
    /// relation ([`metric_dimension_relation`]) is reached through its dimension's table.
    pub fn reach_table<'a>(&'a self, relation: &'a str) -> &'a str {
        relation
            .strip_prefix(METRIC_DIMENSION_PREFIX)
            .or_else(|| relation.strip_prefix(ALIGNED_PREFIX))
            .and_then(|d| self.dimensions.iter().find(|x| x.name.get_ref() == d))
            .map_or(relation, |d| d.table.get_ref().as_str())
    }

    /// The chain of joins from table `from` to table `to`, following many-to-one joins,
    /// as a list of (from table, join) steps. `Some(vec![])` when `from == to`.
    pub fn join_path(&self, from: &str, to: &str) -> Option<Vec<(&Table, &Join)>> {
        // Breadth-first search over many-to-one joins; the model is small.
        let mut queue: std::collections::VecDeque<(&str, Vec<(&Table, &Join)>)> =
            std::collections::VecDeque::from([(from, Vec::new())]);
        let mut seen = std::collections::HashSet::from([from]);
        while let Some((name, path)) = queue.pop_front() {
            if name == to {
                return Some(path);
            }
            let Some(table) = self.table(name) else {
                continue;
            };
            for join in &table.joins {
                let target = join.to.get_ref().as_str();
                if seen.insert(target) {
                    let mut next = path.clone();
                    next.push((table, join));
                    queue.push_back((target, next));
                }
            }
        }
        None
    }
}
