//! MetricFlow items → kpitables model items.
//!
//! - Each semantic model becomes a table; its foreign entities become many-to-one joins
//!   to the semantic model where the entity is primary (or unique).
//! - Dimensions get MetricFlow's names: `customer__customer_country` (the entity path
//!   from the metric's semantic model, then the dimension), `metric_time` (each table
//!   carries it as its `agg_time_dimension`), entity names (`customer`). A name stands
//!   for the same column whichever model it is reached from, so one kpitables dimension
//!   serves every view that offers it.
//! - Measures become atomic metrics, MetricFlow metrics the kind that computes the same
//!   number (ratio and derived → composite, an input filter → derived, cumulative →
//!   cumulative), with helper metrics where MetricFlow nests options in an input.
//! - One view per semantic model with metrics (and per set of semantic models a metric
//!   reads together), one per saved query.

mod filters;
mod inputs;
mod measures;
mod metrics;
mod offsets;
mod output;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use super::project::{Project, physical_name, ref_name};
use super::write::Block;
use super::yaml::{Measure, Metric, SemanticModel};
use super::{Import, Item, Options, Report, Source};

/// The name of the one source the import writes.
const SOURCE: &str = "dbt";

/// Turn `project` into model files and a report.
pub fn map(project: &Project, model_dir: &Path, options: &Options) -> Import {
    let mut m = Mapper::new(project, model_dir, options);
    m.run();
    m.finish()
}

struct Sm<'a> {
    def: &'a SemanticModel,
    file: &'a str,
    name: String,
    /// The primary entity's name and expression (none for a `primary_entity:` alone).
    primary: Option<(String, Option<String>)>,
    /// The agg_time_dimension's expression.
    agg_time: Option<String>,
    /// Mapped as a table.
    ok: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct DimDef {
    table: String,
    expr: String,
    time: bool,
    /// A time dimension's grain finer than a day (`hour`, `minute`, `second`).
    granularity: Option<String>,
    label: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Clone)]
struct Mapped {
    /// The kpitables metric computing it.
    ours: String,
    /// Semantic models (indexes) whose rows it reads.
    models: BTreeSet<usize>,
    /// Atomic or derived in kpitables (a filter can be added to it).
    filterable: bool,
    /// Cumulative, or offset, or computed from one (kpitables does not yet offset one).
    periodic: bool,
    /// A cumulative metric itself (kpitables offsets one: last year's to-date).
    cumulative: bool,
    /// The grains of metric_time it may be asked at, where restricted (those at which
    /// MetricFlow's answer is the same).
    grains: Option<BTreeSet<String>>,
}

impl Mapped {
    /// The grains at which every input may be asked (`None`: any), or an error naming
    /// the inputs when there is none: a metric that can never be asked is not mapped.
    fn common_grains(inputs: &[&Mapped]) -> Result<Option<BTreeSet<String>>, String> {
        let mut common: Option<BTreeSet<String>> = None;
        for input in inputs {
            if let Some(grains) = &input.grains {
                common = Some(match common {
                    None => grains.clone(),
                    Some(c) => c.intersection(grains).cloned().collect(),
                });
            }
        }
        if common.as_ref().is_some_and(BTreeSet::is_empty) {
            let each: Vec<String> = inputs
                .iter()
                .filter_map(|i| {
                    i.grains.as_ref().map(|g| {
                        let g: Vec<&str> = g.iter().map(String::as_str).collect();
                        format!("{} by {}", i.ours, g.join(", "))
                    })
                })
                .collect();
            return Err(format!(
                "its inputs are served at no common grain of metric_time ({}): it could never be asked",
                each.join("; ")
            ));
        }
        Ok(common)
    }
}

struct Mapper<'a> {
    project: &'a Project,
    model_dir: &'a Path,
    options: &'a Options,
    sms: Vec<Sm<'a>>,
    /// Entity → the semantic models where it is primary or unique (a foreign entity
    /// joins each of them).
    home: HashMap<String, Vec<usize>>,
    measures: HashMap<String, (usize, &'a Measure)>,
    metrics: BTreeMap<String, (&'a str, &'a Metric)>,
    dims: BTreeMap<String, DimDef>,
    /// Per fact model: the dimension names its metrics may use.
    reach: HashMap<usize, Vec<String>>,
    /// Table → carried dimension → expression.
    carried: BTreeMap<String, BTreeMap<String, String>>,
    /// Tables of measures with their own agg_time_dimension: name → (the semantic
    /// model whose rows they read, the time dimension's expression).
    aliases: BTreeMap<String, (usize, String)>,
    mapped: HashMap<String, Result<Mapped, String>>,
    /// Conditions of the filtered derived or ratio inputs being mapped: each applies to
    /// every input of the metrics mapped meanwhile.
    extra_conditions: Vec<Vec<String>>,
    /// Days of the offsets of the derived inputs being mapped (an offset of an offset
    /// metric): added to every input's offset meanwhile.
    extra_days: u32,
    /// The grains at which MetricFlow's answer to each of those offsets (joined after
    /// aggregating) is the rows moved.
    extra_grains: Vec<Vec<String>>,
    taken: HashSet<String>,
    metric_blocks: Vec<Block>,
    /// Metric dimensions (`Metric()` in filters): name → (table, kpitables metric).
    metric_dims: BTreeMap<String, (String, String)>,
    /// The metric dimension of each (entity, MetricFlow metric).
    metric_dims_by: HashMap<(String, String), String>,
    /// Mapping the metric of a metric dimension.
    in_metric_dimension: bool,
    /// The simple metric (without a filter) of each measure, for reuse.
    measure_metric: HashMap<String, String>,
    report: Report,
    time_home: Option<usize>,
}

fn item(kind: &'static str, name: &str, file: &str, line: u64, detail: impl Into<String>) -> Item {
    Item {
        kind,
        name: name.to_string(),
        file: file.to_string(),
        line,
        detail: detail.into(),
    }
}

/// Record semantic model `index` as a home of `entity` (once).
fn add_home(home: &mut HashMap<String, Vec<usize>>, entity: &str, index: usize) {
    let homes = home.entry(entity.to_string()).or_default();
    if !homes.contains(&index) {
        homes.push(index);
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parenthesize(expr: &str) -> String {
    if is_identifier(expr) {
        expr.to_string()
    } else {
        format!("({expr})")
    }
}

impl<'a> Mapper<'a> {
    fn new(project: &'a Project, model_dir: &'a Path, options: &'a Options) -> Mapper<'a> {
        Mapper {
            project,
            model_dir,
            options,
            sms: Vec::new(),
            home: HashMap::new(),
            measures: HashMap::new(),
            metrics: BTreeMap::new(),
            extra_conditions: Vec::new(),
            extra_days: 0,
            extra_grains: Vec::new(),
            dims: BTreeMap::new(),
            reach: HashMap::new(),
            carried: BTreeMap::new(),
            aliases: BTreeMap::new(),
            mapped: HashMap::new(),
            taken: HashSet::new(),
            metric_blocks: Vec::new(),
            measure_metric: HashMap::new(),
            metric_dims: BTreeMap::new(),
            metric_dims_by: HashMap::new(),
            in_metric_dimension: false,
            report: Report::default(),
            time_home: None,
        }
    }

    fn run(&mut self) {
        for (file, line, reason) in &self.project.broken {
            self.report.unmapped.push(item(
                "file",
                file,
                file,
                *line,
                format!("not read: {reason}"),
            ));
        }
        self.collect();
        self.tables();
        self.dimensions();
        let names: Vec<String> = self.metrics.keys().cloned().collect();
        for name in &names {
            self.taken.insert(name.clone());
        }
        for name in &names {
            let _ = self.metric(name, 0);
        }
        for (file, doc) in &self.project.documents {
            for model in &doc.models {
                if model.time_spine.is_some() {
                    self.report.notes.push(item(
                        "time spine",
                        &model.name,
                        file,
                        0,
                        "not read: kpitables generates the days of the time spine, from the data's first day to its last (or the query's date range)",
                    ));
                }
            }
        }
    }

    /// Index semantic models, entities, measures and metrics.
    fn collect(&mut self) {
        let project = self.project;
        for (file, doc) in &project.documents {
            for sm in &doc.semantic_models {
                // The primary entity: an entity of type primary (its column), or
                // `primary_entity:` (a name for the model's own dimensions, no column).
                let primary = sm
                    .entities
                    .iter()
                    .find(|e| e.kind.eq_ignore_ascii_case("primary"))
                    .map(|e| {
                        let name = e.name.value.clone();
                        let expr = e.expr.as_ref().map_or(name.clone(), |x| x.sql());
                        (name, Some(expr))
                    })
                    .or_else(|| sm.primary_entity.clone().map(|name| (name, None)));
                let agg_time = sm
                    .defaults
                    .as_ref()
                    .and_then(|d| d.agg_time_dimension.clone())
                    .and_then(|t| {
                        sm.dimensions
                            .iter()
                            .find(|d| d.name.value == t)
                            .map(|d| d.expr.as_ref().map_or(t.clone(), |x| x.sql()))
                    });
                let index = self.sms.len();
                for e in &sm.entities {
                    let kind = e.kind.to_ascii_lowercase();
                    if kind == "primary" || kind == "unique" {
                        add_home(&mut self.home, &e.name.value, index);
                    }
                }
                if let Some(p) = &sm.primary_entity {
                    add_home(&mut self.home, p, index);
                }
                for measure in &sm.measures {
                    self.measures
                        .insert(measure.name.value.clone(), (index, measure));
                }
                self.sms.push(Sm {
                    def: sm,
                    file,
                    name: sm.name.value.clone(),
                    primary,
                    agg_time,
                    ok: true,
                });
            }
            for metric in &doc.metrics {
                self.metrics
                    .insert(metric.name.value.clone(), (file.as_str(), metric));
            }
        }
        // Measures with create_metric: true are metrics of the same name.
        for sm in &self.sms {
            for measure in &sm.def.measures {
                if measure.create_metric && !self.metrics.contains_key(&measure.name.value) {
                    self.report.notes.push(item(
                        "measure",
                        &measure.name.value,
                        sm.file,
                        measure.name.referenced.line(),
                        "create_metric: mapped as the simple metric of the same name",
                    ));
                }
            }
        }
    }

    fn source_dir(&self) -> Option<PathBuf> {
        match &self.options.source {
            Some(Source::Files(dir)) => Some(dir.clone()),
            None => Some(self.project.seeds.clone()),
            Some(_) => None,
        }
    }

    /// One table per semantic model.
    fn tables(&mut self) {
        for i in 0..self.sms.len() {
            let sm = &self.sms[i];
            let def = sm.def;
            let line = def.name.referenced.line();
            let Some(model) = ref_name(&def.model.value) else {
                let reason = format!("model \"{}\" is not a ref('...')", def.model.value);
                self.report
                    .unmapped
                    .push(item("semantic model", &sm.name, sm.file, line, reason));
                self.sms[i].ok = false;
                continue;
            };
            if sm.primary.is_none() && def.entities.is_empty() {
                let reason = "it has no entity, so no key to join on";
                self.report
                    .unmapped
                    .push(item("semantic model", &sm.name, sm.file, line, reason));
                self.sms[i].ok = false;
                continue;
            }
            let physical = physical_name(self.project, &model);
            if let Some(dir) = self.source_dir()
                && data_file(&dir, &physical).is_none()
            {
                let reason = format!(
                    "no file {physical}.parquet, {physical}.csv or directory {physical} in {}",
                    dir.display()
                );
                self.report
                    .unmapped
                    .push(item("semantic model", &sm.name, sm.file, line, reason));
                self.sms[i].ok = false;
                continue;
            }
            let detail = if physical == model {
                format!("table {} (rows of dbt model {model})", sm.name)
            } else {
                format!(
                    "table {} (rows of {physical}, which dbt model {model} selects unchanged)",
                    sm.name
                )
            };
            self.report
                .mapped
                .push(item("semantic model", &sm.name, sm.file, line, detail));
            for e in &def.entities {
                if e.kind.eq_ignore_ascii_case("natural") {
                    self.report.unmapped.push(item(
                        "entity",
                        &e.name.value,
                        sm.file,
                        e.name.referenced.line(),
                        "natural entities (slowly changing dimensions with validity windows) are not mapped",
                    ));
                }
            }
        }
        // The home of metric_time: the first semantic model with an agg time dimension.
        self.time_home =
            (0..self.sms.len()).find(|&i| self.sms[i].ok && self.sms[i].agg_time.is_some());
    }

    /// The joins of semantic model `i`: `(entity, foreign key column, target, the
    /// target's column of the entity)`, one per model where the entity is primary or
    /// unique.
    fn joins(&self, i: usize) -> Vec<(String, String, usize, String)> {
        let mut out = Vec::new();
        for e in &self.sms[i].def.entities {
            if !e.kind.eq_ignore_ascii_case("foreign") {
                continue;
            }
            let name = &e.name.value;
            let expr = e.expr.as_ref().map_or(name.clone(), |x| x.sql());
            for &target in self.home.get(name).into_iter().flatten() {
                let key = self.sms[target]
                    .def
                    .entities
                    .iter()
                    .find(|t| t.name.value == *name && !t.kind.eq_ignore_ascii_case("foreign"))
                    .map(|t| t.expr.as_ref().map_or(name.clone(), |x| x.sql()));
                if let Some(key) = key
                    && target != i
                    && self.sms[target].ok
                    && is_identifier(&expr)
                    && is_identifier(&key)
                {
                    out.push((name.clone(), expr.clone(), target, key));
                }
            }
        }
        out
    }

    /// The primary key written for semantic model `i`: its primary entity's column, or
    /// else its first entity's.
    fn primary_key(&self, i: usize) -> String {
        let sm = &self.sms[i];
        sm.primary
            .as_ref()
            .and_then(|(_, e)| e.clone())
            .or_else(|| {
                sm.def
                    .entities
                    .first()
                    .map(|e| e.expr.as_ref().map_or(e.name.value.clone(), |x| x.sql()))
            })
            .unwrap_or_default()
    }

    /// Dimensions: each semantic model's own (named with its primary entity), reached
    /// through joins (named with the entity path), entities and metric_time.
    fn dimensions(&mut self) {
        let mut conflicts: Vec<Item> = Vec::new();
        for i in 0..self.sms.len() {
            if !self.sms[i].ok {
                continue;
            }
            let mut names = Vec::new();
            // metric_time.
            if let (Some(home), Some(expr)) = (self.time_home, self.sms[i].agg_time.clone()) {
                if home != i {
                    self.carried
                        .entry(self.sms[i].name.clone())
                        .or_default()
                        .insert("metric_time".into(), expr);
                } else {
                    self.dims.insert(
                        "metric_time".into(),
                        DimDef {
                            table: self.sms[i].name.clone(),
                            expr,
                            time: true,
                            granularity: self.sms[i]
                                .def
                                .defaults
                                .as_ref()
                                .and_then(|d| d.agg_time_dimension.as_ref())
                                .and_then(|t| {
                                    self.sms[i].def.dimensions.iter().find(|d| d.name.value == *t)
                                })
                                .and_then(sub_daily),
                            label: Some("Metric time".into()),
                            description: Some(
                                "The time dimension each metric is aggregated on (its semantic model's agg_time_dimension)"
                                    .into(),
                            ),
                        },
                    );
                }
                names.push("metric_time".to_string());
            }
            // Entities of the model itself.
            for e in &self.sms[i].def.entities {
                if e.kind.eq_ignore_ascii_case("natural") {
                    continue;
                }
                let name = e.name.value.clone();
                let expr = e.expr.as_ref().map_or(name.clone(), |x| x.sql());
                // Without a primary or unique home, the first model with the entity
                // defines it and the others carry it.
                let home = self
                    .home
                    .get(&name)
                    .and_then(|h| h.first())
                    .copied()
                    .unwrap_or_else(|| {
                        (0..self.sms.len())
                            .find(|&k| {
                                self.sms[k].ok
                                    && self.sms[k].def.entities.iter().any(|x| {
                                        x.name.value == name
                                            && !x.kind.eq_ignore_ascii_case("natural")
                                    })
                            })
                            .unwrap_or(i)
                    });
                if home == i || !self.sms[home].ok {
                    let def = DimDef {
                        table: self.sms[i].name.clone(),
                        expr,
                        time: false,
                        granularity: None,
                        label: None,
                        description: e.description.clone(),
                    };
                    if let Some(c) = self.define(&name, def, i) {
                        conflicts.push(c);
                        continue;
                    }
                } else {
                    self.carried
                        .entry(self.sms[i].name.clone())
                        .or_default()
                        .insert(name.clone(), expr);
                }
                names.push(name);
            }
            // Dimensions of the model and of those reached through joins.
            for (path, target) in self.paths(i) {
                let (sm_def, sm_name, line_file) = (
                    self.sms[target].def,
                    self.sms[target].name.clone(),
                    self.sms[target].file,
                );
                for d in &sm_def.dimensions {
                    let qualified = format!("{}__{}", path.join("__"), d.name.value);
                    let is_time = d.kind.eq_ignore_ascii_case("time");
                    if is_time && crate::model::grain_suffix(&qualified).is_some() {
                        continue;
                    }
                    if d.type_params
                        .as_ref()
                        .is_some_and(|t| t.validity_params.is_some())
                    {
                        if target == i {
                            self.report.unmapped.push(item(
                                "dimension",
                                &d.name.value,
                                line_file,
                                d.name.referenced.line(),
                                "validity_params (slowly changing dimensions) are not mapped",
                            ));
                        }
                        continue;
                    }
                    let def = DimDef {
                        table: sm_name.clone(),
                        expr: d.expr.as_ref().map_or(d.name.value.clone(), |x| x.sql()),
                        time: is_time,
                        granularity: if is_time { sub_daily(d) } else { None },
                        label: d.label.clone(),
                        description: d.description.clone(),
                    };
                    if let Some(c) = self.define(&qualified, def, target) {
                        conflicts.push(c);
                        continue;
                    }
                    names.push(qualified);
                }
            }
            names.dedup();
            self.reach.insert(i, names);
        }
        self.report.unmapped.extend(conflicts);
    }

    fn define(&mut self, name: &str, def: DimDef, model: usize) -> Option<Item> {
        match self.dims.get(name) {
            Some(existing) if *existing != def => Some(item(
                "dimension",
                name,
                self.sms[model].file,
                0,
                format!(
                    "two definitions under one name ({}.{} and {}.{})",
                    existing.table, existing.expr, def.table, def.expr
                ),
            )),
            Some(_) => None,
            None => {
                self.dims.insert(name.to_string(), def);
                None
            }
        }
    }

    /// The semantic models whose dimensions metrics of `i` reach, with MetricFlow's entity
    /// path: `[primary]` for `i` itself, `[customer, country]` two joins away. A path is
    /// kept only when it is the one shortest path (kpitables joins along it); the others
    /// are reported.
    fn paths(&mut self, i: usize) -> Vec<(Vec<String>, usize)> {
        let mut out = Vec::new();
        if let Some((primary, _)) = &self.sms[i].primary {
            out.push((vec![primary.clone()], i));
        }
        // Breadth first, counting shortest paths.
        let mut distance: HashMap<usize, (usize, usize)> = HashMap::new();
        distance.insert(i, (0, 1));
        let mut queue = VecDeque::from([(i, Vec::<String>::new())]);
        let mut found: Vec<(Vec<String>, usize)> = Vec::new();
        while let Some((at, path)) = queue.pop_front() {
            if path.len() >= 3 {
                continue;
            }
            for (entity, _, target, _) in self.joins(at) {
                let mut next = path.clone();
                next.push(entity);
                match distance.get_mut(&target) {
                    Some((d, count)) => {
                        if *d == next.len() {
                            *count += 1;
                        }
                        if target != i {
                            found.push((next, target));
                        }
                    }
                    None => {
                        distance.insert(target, (next.len(), 1));
                        found.push((next.clone(), target));
                        queue.push_back((target, next));
                    }
                }
            }
        }
        for (path, target) in found {
            let (d, count) = distance.get(&target).copied().unwrap_or((0, 0));
            if path.len() == d && count == 1 {
                out.push((path, target));
            } else {
                let why = if path.len() > d {
                    "a shorter join path reaches the same semantic model, and kpitables joins along the shortest"
                } else {
                    "two join paths of the same length reach it (role-playing entities are not mapped)"
                };
                self.report.unmapped.push(item(
                    "join path",
                    &format!("{}__{}", path.join("__"), self.sms[target].name),
                    self.sms[i].file,
                    0,
                    format!(
                        "dimensions of {} through this path from {}: {why}",
                        self.sms[target].name, self.sms[i].name
                    ),
                ));
            }
        }
        out
    }

    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 2;
        while self.taken.contains(&name) || self.dims.contains_key(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        name
    }
}

fn and(parts: Vec<String>) -> String {
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// The data file of a dbt model in a directory of files.
fn data_file(dir: &Path, name: &str) -> Option<String> {
    [
        format!("{name}.parquet"),
        format!("{name}.csv"),
        name.to_string(),
    ]
    .into_iter()
    .find(|candidate| dir.join(candidate).exists())
}

/// `path` relative to `base` when both resolve (else `path` made absolute).
fn relative(path: &Path, base: &Path) -> String {
    let (Ok(path), Ok(base)) = (std::fs::canonicalize(path), absolute(base)) else {
        return std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string();
    };
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        ".".into()
    } else {
        out.display().to_string()
    }
}

/// `base` made absolute, resolving what exists of it (the output directory may not exist
/// yet).
fn absolute(base: &Path) -> std::io::Result<PathBuf> {
    match std::fs::canonicalize(base) {
        Ok(p) => Ok(p),
        Err(_) => {
            let parent = base.parent().filter(|p| !p.as_os_str().is_empty());
            let name = base.file_name().unwrap_or_default();
            match parent {
                Some(parent) => absolute(parent).map(|p| p.join(name)),
                None => std::env::current_dir().map(|c| c.join(base)),
            }
        }
    }
}

/// A time dimension's `time_granularity` when it is finer than a day.
fn sub_daily(d: &crate::import::metricflow::yaml::Dimension) -> Option<String> {
    let grain = d
        .type_params
        .as_ref()?
        .time_granularity
        .as_deref()?
        .to_ascii_lowercase();
    ["hour", "minute", "second"]
        .contains(&grain.as_str())
        .then_some(grain)
}
