//! MetricFlow's YAML as written in a dbt project (semantic models, metrics, saved queries,
//! the time spine), read with `serde-saphyr` (pure Rust, panic-free, with line numbers).
//!
//! Only what the import maps or reports is declared; other keys (`config`, `meta`, ...)
//! are ignored. Keys the import cannot map are declared so that they are reported, never
//! dropped silently.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

/// One YAML file of the project (any of the top-level lists may be absent).
#[derive(Debug, Default, Deserialize)]
pub struct Document {
    /// `semantic_models:`.
    #[serde(default)]
    pub semantic_models: Vec<SemanticModel>,
    /// `metrics:`.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// `saved_queries:`.
    #[serde(default)]
    pub saved_queries: Vec<SavedQuery>,
    /// `models:` (dbt model properties; read for `time_spine`).
    #[serde(default)]
    pub models: Vec<ModelProperties>,
}

/// A semantic model: one dbt model's entities, dimensions and measures.
#[derive(Debug, Deserialize)]
pub struct SemanticModel {
    /// Unique name.
    pub name: Spanned<String>,
    /// `ref('model')`.
    pub model: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// Business label.
    pub label: Option<String>,
    /// `defaults: {agg_time_dimension: ...}`.
    pub defaults: Option<Defaults>,
    /// The primary entity when no entity is of type primary.
    pub primary_entity: Option<String>,
    /// Join keys.
    #[serde(default)]
    pub entities: Vec<Entity>,
    /// Aggregations.
    #[serde(default)]
    pub measures: Vec<Measure>,
    /// Attributes.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
}

/// `defaults:` of a semantic model.
#[derive(Debug, Default, Deserialize)]
pub struct Defaults {
    /// The time dimension measures are aggregated on (`metric_time`).
    pub agg_time_dimension: Option<String>,
}

/// An entity (join key).
#[derive(Debug, Deserialize)]
pub struct Entity {
    /// Entity name (shared across semantic models).
    pub name: Spanned<String>,
    /// `primary`, `unique`, `foreign` or `natural`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Column or expression (default: the name).
    pub expr: Option<Scalar>,
    /// Free text.
    pub description: Option<String>,
}

/// A measure.
#[derive(Debug, Deserialize)]
pub struct Measure {
    /// Name (metrics refer to it).
    pub name: Spanned<String>,
    /// `sum`, `count`, `count_distinct`, `average`, `min`, `max`, `sum_boolean`, `median`,
    /// `percentile`.
    pub agg: String,
    /// Expression (default: the column named like the measure).
    pub expr: Option<Scalar>,
    /// Free text.
    pub description: Option<String>,
    /// Business label.
    pub label: Option<String>,
    /// Overrides the model's default time dimension.
    pub agg_time_dimension: Option<String>,
    /// Also define a simple metric of the same name.
    #[serde(default)]
    pub create_metric: bool,
    /// A percentile's parameters.
    pub agg_params: Option<AggParams>,
    /// A semi-additive measure (a balance): the time dimension it does not add up over.
    pub non_additive_dimension: Option<NonAdditiveDimension>,
}

/// `non_additive_dimension: {name, window_choice, window_groupings}`.
#[derive(Debug, Deserialize)]
pub struct NonAdditiveDimension {
    /// The time dimension (of the measure's semantic model).
    pub name: String,
    /// `min` (the default: the first day) or `max` (the last day).
    pub window_choice: Option<String>,
    /// Entities each of which has its own first or last day.
    #[serde(default)]
    pub window_groupings: Vec<String>,
}

/// The parameters of a `percentile` measure.
#[derive(Debug, Deserialize)]
pub struct AggParams {
    /// The fraction, between 0 and 1.
    pub percentile: Option<f64>,
    /// `percentile_disc` rather than `percentile_cont`.
    #[serde(default)]
    pub use_discrete_percentile: bool,
    /// An approximation (not mapped: kpitables' percentiles are exact).
    #[serde(default)]
    pub use_approximate_percentile: bool,
}

/// A dimension of a semantic model.
#[derive(Debug, Deserialize)]
pub struct Dimension {
    /// Name.
    pub name: Spanned<String>,
    /// `categorical` or `time`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Expression (default: the column named like the dimension).
    pub expr: Option<Scalar>,
    /// Free text.
    pub description: Option<String>,
    /// Business label.
    pub label: Option<String>,
    /// `time_granularity`, `validity_params`.
    pub type_params: Option<DimensionParams>,
}

/// `type_params` of a dimension.
#[derive(Debug, Default, Deserialize)]
pub struct DimensionParams {
    /// The finest grain of a time dimension.
    pub time_granularity: Option<String>,
    /// Slowly changing dimensions (not mapped).
    pub validity_params: Option<IgnoredAny>,
}

/// A YAML scalar used as SQL (`expr: 1`, `expr: "1"`, `expr: true`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A number.
    Float(f64),
    /// A flag.
    Bool(bool),
}

impl Scalar {
    /// The SQL text.
    pub fn sql(&self) -> String {
        match self {
            Scalar::Text(s) => s.trim().to_string(),
            Scalar::Integer(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// A metric.
#[derive(Debug, Deserialize)]
pub struct Metric {
    /// Unique name.
    pub name: Spanned<String>,
    /// `simple`, `ratio`, `derived`, `cumulative`, `conversion` (any case).
    #[serde(rename = "type")]
    pub kind: String,
    /// Parameters of the type.
    #[serde(default)]
    pub type_params: TypeParams,
    /// A condition (one text or a list, ANDed) with `{{ Dimension(..) }}` templates.
    pub filter: Option<Filter>,
    /// Business label.
    pub label: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// `config: {meta: {owner: ...}}`.
    pub config: Option<MetricConfig>,
    /// `meta: {owner: ...}` (older placement).
    pub meta: Option<Meta>,
}

/// `meta:` of a metric (free keys; `owner` is read).
#[derive(Debug, Default, Deserialize)]
pub struct Meta {
    /// Who answers for the metric.
    pub owner: Option<String>,
}

/// `config:` of a metric.
#[derive(Debug, Default, Deserialize)]
pub struct MetricConfig {
    /// Free keys; `owner` is read.
    pub meta: Option<Meta>,
}

/// One condition or several (ANDed).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Filter {
    /// One condition.
    One(String),
    /// Several conditions, all of which hold.
    Many(Vec<String>),
}

impl Filter {
    /// The conditions.
    pub fn conditions(&self) -> Vec<String> {
        match self {
            Filter::One(s) => vec![s.trim().to_string()],
            Filter::Many(v) => v.iter().map(|s| s.trim().to_string()).collect(),
        }
    }
}

/// `type_params` of a metric.
#[derive(Debug, Default, Deserialize)]
pub struct TypeParams {
    /// Simple and cumulative: the measure.
    pub measure: Option<MeasureInput>,
    /// Ratio: the numerator metric.
    pub numerator: Option<MetricInput>,
    /// Ratio: the denominator metric.
    pub denominator: Option<MetricInput>,
    /// Derived: the expression over the input metrics (or their aliases).
    pub expr: Option<Scalar>,
    /// Derived: the input metrics.
    #[serde(default)]
    pub metrics: Vec<MetricInput>,
    /// Cumulative (older placement): the trailing window.
    pub window: Option<String>,
    /// Cumulative (older placement): to date of this grain.
    pub grain_to_date: Option<String>,
    /// Cumulative: `window`, `grain_to_date`, `period_agg`.
    pub cumulative_type_params: Option<CumulativeParams>,
    /// Conversion: base and conversion measures, entity, window, calculation.
    pub conversion_type_params: Option<ConversionParams>,
    /// Fill empty periods from the time spine (not mapped).
    pub join_to_timespine: Option<bool>,
    /// The value shown where the metric has none (mapped on simple metrics).
    pub fill_nulls_with: Option<Scalar>,
}

/// `cumulative_type_params`.
#[derive(Debug, Default, Deserialize)]
pub struct CumulativeParams {
    /// Trailing window, such as `7 days`.
    pub window: Option<String>,
    /// To date of this grain, such as `month`.
    pub grain_to_date: Option<String>,
    /// How a coarser period's value is taken from its days: `first` (default), `last`,
    /// `average`.
    pub period_agg: Option<String>,
}

/// `conversion_type_params`.
#[derive(Debug, Deserialize)]
pub struct ConversionParams {
    /// The measure of the base events.
    pub base_measure: MeasureInput,
    /// The measure of the conversion events.
    pub conversion_measure: MeasureInput,
    /// The entity both events share.
    pub entity: String,
    /// How long after a base event a conversion counts, such as `7 days`.
    pub window: Option<String>,
    /// `conversion_rate` (default) or `conversions`.
    pub calculation: Option<String>,
    /// Properties that must be equal on both events.
    #[serde(default)]
    pub constant_properties: Vec<ConstantProperty>,
}

/// A property a conversion event shares with its base event.
#[derive(Debug, Deserialize)]
pub struct ConstantProperty {
    /// The entity or dimension of the base measure's semantic model.
    pub base_property: String,
    /// The entity or dimension of the conversion measure's semantic model.
    pub conversion_property: String,
}

/// A measure named by a metric, as a name or with options.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MeasureInput {
    /// `measure: name`.
    Name(String),
    /// `measure: {name, filter, ...}`.
    Full(MeasureInputFull),
}

/// `measure: {name, filter, join_to_timespine, fill_nulls_with, alias}`.
#[derive(Debug, Deserialize)]
pub struct MeasureInputFull {
    /// The measure.
    pub name: String,
    /// An extra condition.
    pub filter: Option<Filter>,
    /// Not mapped.
    pub join_to_timespine: Option<bool>,
    /// Mapped as 0 for conversion counts (kpitables' own answer); otherwise not mapped.
    pub fill_nulls_with: Option<Scalar>,
}

impl MeasureInput {
    /// The measure's name.
    pub fn name(&self) -> &str {
        match self {
            MeasureInput::Name(n) => n,
            MeasureInput::Full(f) => &f.name,
        }
    }
}

/// An input metric of a ratio or derived metric.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MetricInput {
    /// `numerator: name`.
    Name(String),
    /// `{name, filter, alias, offset_window, offset_to_grain}`.
    Full(MetricInputFull),
}

/// An input metric with options.
#[derive(Debug, Default, Deserialize)]
pub struct MetricInputFull {
    /// The metric.
    pub name: String,
    /// An extra condition.
    pub filter: Option<Filter>,
    /// The name the derived expression uses.
    pub alias: Option<String>,
    /// The value this long before, such as `1 month`.
    pub offset_window: Option<String>,
    /// The value at the start of this grain's period (not mapped).
    pub offset_to_grain: Option<String>,
}

impl MetricInput {
    /// The input with every option (defaults for a bare name).
    pub fn full(&self) -> MetricInputFull {
        match self {
            MetricInput::Name(n) => MetricInputFull {
                name: n.clone(),
                ..MetricInputFull::default()
            },
            MetricInput::Full(f) => MetricInputFull {
                name: f.name.clone(),
                filter: f.filter.clone(),
                alias: f.alias.clone(),
                offset_window: f.offset_window.clone(),
                offset_to_grain: f.offset_to_grain.clone(),
            },
        }
    }
}

/// A saved query.
#[derive(Debug, Deserialize)]
pub struct SavedQuery {
    /// Unique name.
    pub name: Spanned<String>,
    /// Free text.
    pub description: Option<String>,
    /// Business label.
    pub label: Option<String>,
    /// The query.
    #[serde(default)]
    pub query_params: QueryParams,
}

/// `query_params` of a saved query.
#[derive(Debug, Default, Deserialize)]
pub struct QueryParams {
    /// Metric names.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// `Dimension('..')`, `TimeDimension('..', 'grain')`, `Entity('..')`.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Conditions with templates.
    #[serde(rename = "where")]
    pub where_: Option<Filter>,
}

/// dbt model properties (`models:` in a schema file).
#[derive(Debug, Deserialize)]
pub struct ModelProperties {
    /// The dbt model.
    pub name: String,
    /// Present on the time spine model.
    pub time_spine: Option<IgnoredAny>,
}

/// `dbt_project.yml`: where models and seeds are.
#[derive(Debug, Default, Deserialize)]
pub struct Project {
    /// Project name.
    pub name: Option<String>,
    /// Directories of models (default `models`).
    #[serde(rename = "model-paths", alias = "source-paths")]
    pub model_paths: Option<Vec<String>>,
    /// Directories of seeds (default `seeds`).
    #[serde(rename = "seed-paths", alias = "data-paths")]
    pub seed_paths: Option<Vec<String>>,
}
