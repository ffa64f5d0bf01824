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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use super::project::{Project, physical_name, ref_name};
use super::template::{self, Reference};
use super::write::{Block, file};
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
    /// The primary entity's name and expression.
    primary: Option<(String, String)>,
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
}

struct Mapper<'a> {
    project: &'a Project,
    model_dir: &'a Path,
    options: &'a Options,
    sms: Vec<Sm<'a>>,
    /// Entity → the semantic model where it is primary or unique.
    home: HashMap<String, usize>,
    measures: HashMap<String, (usize, &'a Measure)>,
    metrics: BTreeMap<String, (&'a str, &'a Metric)>,
    dims: BTreeMap<String, DimDef>,
    /// Per fact model: the dimension names its metrics may use.
    reach: HashMap<usize, Vec<String>>,
    /// Table → carried dimension → expression.
    carried: BTreeMap<String, BTreeMap<String, String>>,
    mapped: HashMap<String, Result<Mapped, String>>,
    taken: HashSet<String>,
    metric_blocks: Vec<Block>,
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
            dims: BTreeMap::new(),
            reach: HashMap::new(),
            carried: BTreeMap::new(),
            mapped: HashMap::new(),
            taken: HashSet::new(),
            metric_blocks: Vec::new(),
            measure_metric: HashMap::new(),
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
                        "not used: kpitables takes periods from the data, so cumulative metrics have rows for periods with data only (MetricFlow adds every day of the spine)",
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
                let primary = sm
                    .entities
                    .iter()
                    .find(|e| e.kind.eq_ignore_ascii_case("primary"))
                    .map(|e| {
                        let name = e.name.value.clone();
                        let expr = e.expr.as_ref().map_or(name.clone(), |x| x.sql());
                        (name, expr)
                    });
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
                        self.home.entry(e.name.value.clone()).or_insert(index);
                    }
                }
                if let Some(p) = &sm.primary_entity {
                    self.home.entry(p.clone()).or_insert(index);
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

    /// The joins of semantic model `i`: `(entity, foreign key column, target)`.
    fn joins(&self, i: usize) -> Vec<(String, String, usize)> {
        let mut out = Vec::new();
        for e in &self.sms[i].def.entities {
            if !e.kind.eq_ignore_ascii_case("foreign") {
                continue;
            }
            let name = &e.name.value;
            let expr = e.expr.as_ref().map_or(name.clone(), |x| x.sql());
            if let Some(&target) = self.home.get(name)
                && target != i
                && self.sms[target].ok
                && is_identifier(&expr)
            {
                out.push((name.clone(), expr, target));
            }
        }
        out
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
                let home = self.home.get(&name).copied().unwrap_or(i);
                if home == i || !self.sms[home].ok {
                    let def = DimDef {
                        table: self.sms[i].name.clone(),
                        expr,
                        time: false,
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
            for (entity, _, target) in self.joins(at) {
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

    /// Translate a filter for the rows of semantic model `fact`: templates become
    /// dimension names kpitables resolves from that table (or its own columns).
    fn fact_filter(&self, fact: usize, text: &str) -> Result<String, String> {
        let sm = &self.sms[fact];
        let reach = self.reach.get(&fact).cloned().unwrap_or_default();
        let sql = template::render(text, |r| match r {
            Reference::Dimension {
                path,
                name,
                grain,
                date_part,
            } => {
                let column = if path.is_empty() && name == "metric_time" {
                    let expr = sm.agg_time.as_ref().ok_or_else(|| {
                        format!("semantic model {} has no agg_time_dimension", sm.name)
                    })?;
                    parenthesize(expr)
                } else {
                    let qualified = r.qualified();
                    if !reach.contains(&qualified) {
                        return Err(format!(
                            "dimension {qualified} is not reachable from semantic model {}",
                            sm.name
                        ));
                    }
                    qualified
                };
                Ok(time_expr(&column, grain.as_deref(), date_part.as_deref()))
            }
            Reference::Entity { path, name } => {
                if path.is_empty()
                    && let Some(e) = sm.def.entities.iter().find(|e| &e.name.value == name)
                {
                    return Ok(parenthesize(
                        &e.expr.as_ref().map_or(name.clone(), |x| x.sql()),
                    ));
                }
                Err(format!(
                    "entity {} is not an entity of semantic model {}",
                    r.qualified(),
                    sm.name
                ))
            }
        })?;
        Ok(sql)
    }

    fn metric_filter(&self, fact: usize, metric: &Metric) -> Result<Option<String>, String> {
        match &metric.filter {
            None => Ok(None),
            Some(f) => {
                let parts: Result<Vec<String>, String> = f
                    .conditions()
                    .iter()
                    .map(|c| self.fact_filter(fact, c))
                    .collect();
                Ok(Some(and(parts?)))
            }
        }
    }

    /// Map MetricFlow metric `name` (memoized); the error is the reason it is not mapped.
    fn metric(&mut self, name: &str, depth: usize) -> Result<Mapped, String> {
        if let Some(done) = self.mapped.get(name) {
            return done.clone();
        }
        if depth > 32 {
            return Err(format!("metric {name} is defined from itself"));
        }
        let Some(&(file, metric)) = self.metrics.get(name) else {
            return Err(format!("unknown metric {name}"));
        };
        let result = self.map_metric(name, file, metric, depth);
        let line = metric.name.referenced.line();
        match &result {
            Ok(m) => {
                let detail = if m.ours == name {
                    format!("{} metric", metric.kind.to_ascii_lowercase())
                } else {
                    format!("as {}", m.ours)
                };
                self.report
                    .mapped
                    .push(item("metric", name, file, line, detail));
            }
            Err(reason) => {
                self.report
                    .unmapped
                    .push(item("metric", name, file, line, reason.clone()));
            }
        }
        self.mapped.insert(name.to_string(), result.clone());
        result
    }

    fn describe(block: Block, metric: &Metric) -> Block {
        let owner = metric
            .config
            .as_ref()
            .and_then(|c| c.meta.as_ref())
            .or(metric.meta.as_ref())
            .and_then(|m| m.owner.as_deref());
        block
            .opt("label", metric.label.as_deref())
            .opt("description", metric.description.as_deref())
            .opt("owner", owner)
    }

    fn map_metric(
        &mut self,
        name: &str,
        file: &str,
        metric: &'a Metric,
        depth: usize,
    ) -> Result<Mapped, String> {
        let p = &metric.type_params;
        if p.join_to_timespine.is_some() || p.fill_nulls_with.is_some() {
            return Err("join_to_timespine / fill_nulls_with (filling periods without data) are not mapped: kpitables has no time spine".into());
        }
        let kind = metric.kind.to_ascii_lowercase();
        let comment = format!("MetricFlow {kind} metric {name} ({file})");
        match kind.as_str() {
            "simple" => {
                let measure = p
                    .measure
                    .as_ref()
                    .ok_or("a simple metric needs type_params.measure")?;
                let (fact, atomic) = self.atomic(measure.name())?;
                let mut filters = Vec::new();
                if let super::yaml::MeasureInput::Full(full) = measure {
                    if full.join_to_timespine.is_some() || full.fill_nulls_with.is_some() {
                        return Err("join_to_timespine / fill_nulls_with on the measure are not mapped: kpitables has no time spine".into());
                    }
                    if let Some(f) = &full.filter {
                        for c in f.conditions() {
                            filters.push(self.fact_filter(fact, &c)?);
                        }
                    }
                }
                if let Some(f) = self.metric_filter(fact, metric)? {
                    filters.push(f);
                }
                self.taken.insert(name.to_string());
                let mut block = Block::new("metrics")
                    .comment(comment)
                    .str("name", name)
                    .str("table", &self.sms[fact].name)
                    .str("agg", atomic.0);
                if let Some(expr) = &atomic.1 {
                    block = block.str("expr", expr);
                }
                if !filters.is_empty() {
                    block = block.str("filter", &and(filters.clone()));
                } else {
                    self.measure_metric
                        .entry(measure.name().to_string())
                        .or_insert_with(|| name.to_string());
                }
                let measure_description = self
                    .measures
                    .get(measure.name())
                    .and_then(|(_, m)| m.description.clone());
                let block = Self::describe(block, metric);
                let block = if metric.description.is_none() {
                    block.opt("description", measure_description.as_deref())
                } else {
                    block
                };
                self.metric_blocks.push(block);
                Ok(Mapped {
                    ours: name.to_string(),
                    models: BTreeSet::from([fact]),
                    filterable: true,
                })
            }
            "ratio" => {
                let num = p.numerator.as_ref().ok_or("a ratio metric needs a numerator")?;
                let den = p.denominator.as_ref().ok_or("a ratio metric needs a denominator")?;
                let n = self.input(name, &num.full(), metric, "numerator", depth)?;
                let d = self.input(name, &den.full(), metric, "denominator", depth)?;
                self.taken.insert(name.to_string());
                let block = Block::new("metrics")
                    .comment(comment)
                    .str("name", name)
                    .str("formula", &format!("{} / {}", n.ours, d.ours));
                self.metric_blocks.push(Self::describe(block, metric));
                Ok(Mapped {
                    ours: name.to_string(),
                    models: n.models.union(&d.models).copied().collect(),
                    filterable: false,
                })
            }
            "derived" => {
                let expr = p
                    .expr
                    .as_ref()
                    .map(|e| e.sql())
                    .ok_or("a derived metric needs type_params.expr")?;
                let mut names: HashMap<String, String> = HashMap::new();
                let mut models = BTreeSet::new();
                for (k, input) in p.metrics.iter().enumerate() {
                    let full = input.full();
                    let mapped = self.input(name, &full, metric, &format!("input_{}", k + 1), depth)?;
                    models.extend(mapped.models.iter().copied());
                    names.insert(full.alias.clone().unwrap_or(full.name.clone()), mapped.ours);
                }
                let formula = replace_names(&expr, &names);
                self.taken.insert(name.to_string());
                let block = Block::new("metrics")
                    .comment(comment)
                    .str("name", name)
                    .str("formula", &formula);
                self.metric_blocks.push(Self::describe(block, metric));
                Ok(Mapped {
                    ours: name.to_string(),
                    models,
                    filterable: false,
                })
            }
            "cumulative" => {
                let measure = p
                    .measure
                    .as_ref()
                    .ok_or("a cumulative metric needs type_params.measure")?;
                let params = p.cumulative_type_params.as_ref();
                let window = params.and_then(|c| c.window.clone()).or(p.window.clone());
                let to_date = params
                    .and_then(|c| c.grain_to_date.clone())
                    .or(p.grain_to_date.clone());
                let period_agg = params
                    .and_then(|c| c.period_agg.clone())
                    .unwrap_or_else(|| "first".into())
                    .to_ascii_lowercase();
                let window = match (window, to_date) {
                    (Some(w), None) => trailing(&w)?,
                    (None, Some(g)) => format!("{}_to_date", g.to_ascii_lowercase()),
                    (None, None) => "all_time".to_string(),
                    (Some(_), Some(_)) => return Err("both window and grain_to_date".into()),
                };
                let (fact, _) = self.atomic(measure.name())?;
                if self.sms[fact].agg_time.is_none() {
                    return Err(format!("semantic model {} has no agg_time_dimension", self.sms[fact].name));
                }
                let base = self.measure_base(name, measure.name(), fact, metric)?;
                self.taken.insert(name.to_string());
                let block = Block::new("metrics")
                    .comment(format!(
                        "{comment}\nMetricFlow's period_agg is {period_agg}: a week's or month's value is its {} day's; kpitables answers at day grain only and refuses coarser grains",
                        if period_agg == "last" { "last" } else { "first" }
                    ))
                    .str("name", name)
                    .str("base", &base)
                    .str("time", "metric_time")
                    .str("window", &window)
                    .list("grains", &["day".to_string()]);
                self.metric_blocks.push(Self::describe(block, metric));
                self.report.notes.push(item(
                    "metric",
                    name,
                    file,
                    metric.name.referenced.line(),
                    format!("cumulative ({window}): queryable by metric_time (day); a coarser grain is refused (MetricFlow's period_agg {period_agg} takes one day's value per period); days without any data in the window have no row"),
                ));
                Ok(Mapped {
                    ours: name.to_string(),
                    models: BTreeSet::from([fact]),
                    filterable: false,
                })
            }
            "conversion" => Err("conversion metrics are not mapped: kpitables has no conversion metric kind yet (a base event followed by a conversion event of the same entity within a window)".into()),
            other => Err(format!("unknown metric type \"{other}\"")),
        }
    }

    /// The atomic aggregation of measure `name`: its semantic model, and (agg, expr).
    fn atomic(&self, name: &str) -> Result<(usize, (&'static str, Option<String>)), String> {
        let &(fact, measure) = self
            .measures
            .get(name)
            .ok_or_else(|| format!("unknown measure {name}"))?;
        let sm = &self.sms[fact];
        if !sm.ok {
            return Err(format!("its semantic model {} is not mapped", sm.name));
        }
        if measure.agg_params.is_some() || measure.non_additive_dimension.is_some() {
            return Err(format!(
                "measure {name}: agg_params and non_additive_dimension (semi-additive measures) are not mapped"
            ));
        }
        if let Some(t) = &measure.agg_time_dimension {
            let own = sm
                .def
                .defaults
                .as_ref()
                .and_then(|d| d.agg_time_dimension.as_ref());
            if own != Some(t) {
                return Err(format!(
                    "measure {name} is aggregated on time dimension {t}, not its semantic model's {}: one table carries one metric_time in kpitables",
                    own.map_or("(none)", String::as_str)
                ));
            }
        }
        let expr = measure
            .expr
            .as_ref()
            .map_or(measure.name.value.clone(), |e| e.sql());
        let agg = match measure.agg.to_ascii_lowercase().as_str() {
            "sum" => ("sum", Some(expr)),
            "count" => ("count", Some(expr)),
            "count_distinct" => ("count_distinct", Some(expr)),
            "average" | "avg" => ("avg", Some(expr)),
            "min" => ("min", Some(expr)),
            "max" => ("max", Some(expr)),
            "sum_boolean" => (
                "sum",
                Some(format!(
                    "CASE WHEN {} THEN 1 ELSE 0 END",
                    parenthesize(&expr)
                )),
            ),
            other => {
                return Err(format!(
                    "measure {name}: aggregation {other} is not mapped (kpitables has sum, count, count_distinct, avg, min, max)"
                ));
            }
        };
        Ok((fact, agg))
    }

    /// A kpitables metric aggregating measure `measure` with the metric's filter, for a
    /// cumulative metric's base: the simple metric of the measure when there is one.
    fn measure_base(
        &mut self,
        owner: &str,
        measure: &str,
        fact: usize,
        metric: &Metric,
    ) -> Result<String, String> {
        let filter = self.metric_filter(fact, metric)?;
        if filter.is_none()
            && let Some(existing) = self.measure_metric.get(measure)
        {
            return Ok(existing.clone());
        }
        // A simple metric of the same measure may be mapped later: map them now.
        let simple: Vec<String> = self
            .metrics
            .iter()
            .filter(|(_, (_, m))| {
                m.kind.eq_ignore_ascii_case("simple")
                    && m.filter.is_none()
                    && m.type_params
                        .measure
                        .as_ref()
                        .is_some_and(|x| x.name() == measure)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for s in simple {
            let _ = self.metric(&s, 1);
        }
        if filter.is_none()
            && let Some(existing) = self.measure_metric.get(measure)
        {
            return Ok(existing.clone());
        }
        let (_, (agg, expr)) = self.atomic(measure)?;
        let helper = self.fresh(&format!("{owner}_base"));
        let mut block = Block::new("metrics")
            .comment(format!("measure {measure}, the base of {owner}"))
            .str("name", &helper)
            .str("table", &self.sms[fact].name)
            .str("agg", agg);
        if let Some(e) = &expr {
            block = block.str("expr", e);
        }
        if let Some(f) = &filter {
            block = block.str("filter", f);
        }
        self.metric_blocks.push(block);
        Ok(helper)
    }

    /// An input of a ratio or derived metric: the input metric itself, or a helper that
    /// adds the input's (and the outer metric's) filter.
    fn input(
        &mut self,
        owner: &str,
        input: &super::yaml::MetricInputFull,
        outer: &Metric,
        role: &str,
        depth: usize,
    ) -> Result<Mapped, String> {
        if input.offset_window.is_some() || input.offset_to_grain.is_some() {
            return Err(format!(
                "input {}: offset_window / offset_to_grain are not mapped yet",
                input.name
            ));
        }
        let base = self
            .metric(&input.name, depth + 1)
            .map_err(|e| format!("input {} is not mapped ({e})", input.name))?;
        let mut conditions: Vec<String> = Vec::new();
        if let Some(f) = &input.filter {
            conditions.extend(f.conditions());
        }
        if let Some(f) = &outer.filter {
            conditions.extend(f.conditions());
        }
        if conditions.is_empty() {
            return Ok(base);
        }
        if !base.filterable || base.models.len() != 1 {
            return Err(format!(
                "a filter on input {} (a {} metric) is not mapped: kpitables adds filters to atomic and derived metrics",
                input.name,
                self.metrics
                    .get(&input.name)
                    .map_or("", |(_, m)| m.kind.as_str())
            ));
        }
        let fact = base.models.iter().next().copied().unwrap_or(0);
        let translated: Result<Vec<String>, String> = conditions
            .iter()
            .map(|c| self.fact_filter(fact, c))
            .collect();
        let helper = self.fresh(&format!("{owner}_{role}"));
        self.metric_blocks.push(
            Block::new("metrics")
                .comment(format!("{} filtered, the {role} of {owner}", input.name))
                .str("name", &helper)
                .str("base", &base.ours)
                .str("filter", &and(translated?)),
        );
        Ok(Mapped {
            ours: helper,
            models: base.models,
            filterable: true,
        })
    }

    fn finish(mut self) -> Import {
        let mut files = Vec::new();
        let heading = format!(
            "Generated by `kpitables import metricflow` from {}.\nEdit the MetricFlow YAML and import again rather than this file.",
            self.project.root.display()
        );
        // Source.
        let source = match &self.options.source {
            Some(Source::Postgres { url, schema }) => {
                let b = Block::new("sources")
                    .str("name", SOURCE)
                    .str("kind", "postgres")
                    .str("url", url);
                let b = b.opt("schema", schema.as_deref());
                b.opt("password_env", self.options.password_env.as_deref())
            }
            Some(Source::Mysql { url }) => Block::new("sources")
                .str("name", SOURCE)
                .str("kind", "mysql")
                .str("url", url)
                .opt("password_env", self.options.password_env.as_deref()),
            Some(Source::Files(dir)) => Block::new("sources")
                .str("name", SOURCE)
                .str("kind", "files")
                .str("path", &relative(dir, self.model_dir)),
            None => Block::new("sources")
                .str("name", SOURCE)
                .str("kind", "files")
                .str("path", &relative(&self.project.seeds, self.model_dir)),
        };
        files.push(("sources.toml".to_string(), file(&heading, &[source])));

        // Tables.
        let mut tables = Vec::new();
        for i in 0..self.sms.len() {
            let sm = &self.sms[i];
            if !sm.ok {
                continue;
            }
            let physical = ref_name(&sm.def.model.value)
                .map(|m| physical_name(self.project, &m))
                .unwrap_or_default();
            let mut b = Block::new("tables")
                .comment(format!("semantic model {} ({})", sm.name, sm.file))
                .str("name", &sm.name)
                .str("source", SOURCE);
            b = match self.source_dir() {
                Some(dir) => {
                    let found = data_file(&dir, &physical).unwrap_or(physical.clone());
                    b.str("file", &found)
                }
                None => b.str("table", &physical),
            };
            let key = sm.primary.as_ref().map(|(_, e)| e.clone()).or_else(|| {
                sm.def
                    .entities
                    .first()
                    .map(|e| e.expr.as_ref().map_or(e.name.value.clone(), |x| x.sql()))
            });
            b = b.str("primary_key", &key.unwrap_or_default());
            let joins: Vec<Vec<(String, String)>> = self
                .joins(i)
                .into_iter()
                .map(|(_, fk, target)| {
                    vec![
                        ("to".to_string(), self.sms[target].name.clone()),
                        ("foreign_key".to_string(), fk),
                    ]
                })
                .collect();
            b = b.tables("joins", &joins);
            if let Some(carried) = self.carried.get(&sm.name) {
                let pairs: Vec<(String, String)> = carried
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                b = b.inline("dimensions", &pairs);
            }
            b = b.opt("description", sm.def.description.as_deref());
            tables.push(b);
        }
        files.push(("tables.toml".to_string(), file(&heading, &tables)));

        // Dimensions.
        let used: BTreeSet<&String> = self.reach.values().flatten().collect();
        let mut dims = Vec::new();
        for (name, d) in &self.dims {
            if !used.contains(name) {
                continue;
            }
            let mut b = Block::new("dimensions")
                .str("name", name)
                .str("table", &d.table);
            if d.expr != *name {
                b = b.str("expr", &d.expr);
            }
            if d.time {
                b = b.str("kind", "time").raw("day_column", "true");
            }
            dims.push(
                b.opt("label", d.label.as_deref())
                    .opt("description", d.description.as_deref()),
            );
        }
        files.push(("dimensions.toml".to_string(), file(&heading, &dims)));

        files.push((
            "metrics.toml".to_string(),
            file(&heading, &self.metric_blocks),
        ));

        // Views: one per set of semantic models metrics read.
        let mut groups: BTreeMap<BTreeSet<usize>, Vec<String>> = BTreeMap::new();
        for (name, result) in &self.mapped {
            if let Ok(m) = result
                && self.metrics.contains_key(name)
            {
                groups
                    .entry(m.models.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
        let mut views = Vec::new();
        let mut segments = Vec::new();
        let mut view_names: HashSet<String> = HashSet::new();
        for (models, mut metrics) in groups {
            metrics.sort_by_key(|m| self.metric_order(m));
            let base: Vec<&str> = models.iter().map(|&i| self.sms[i].name.as_str()).collect();
            let mut view = base.join("_");
            while view_names.contains(&view) {
                view.push_str("_metrics");
            }
            view_names.insert(view.clone());
            let dims = self.common_dimensions(&models);
            let description = if models.len() == 1 {
                models
                    .iter()
                    .next()
                    .and_then(|&i| self.sms[i].def.description.clone())
            } else {
                Some(format!("Metrics that read {} together", base.join(" and ")))
            };
            views.push(
                Block::new("views")
                    .comment(format!("metrics of semantic model(s) {}", base.join(", ")))
                    .str("name", &view)
                    .opt("description", description.as_deref())
                    .list("dimensions", &dims)
                    .list("metrics", &metrics),
            );
        }
        // Every metric together, with the dimensions all of them reach (MetricFlow
        // answers any metrics together on what they share).
        if views.len() > 1 {
            let mut all_models = BTreeSet::new();
            let mut metrics = Vec::new();
            for (name, result) in &self.mapped {
                if let Ok(m) = result
                    && self.metrics.contains_key(name)
                {
                    all_models.extend(m.models.iter().copied());
                    metrics.push(name.clone());
                }
            }
            metrics.sort_by_key(|m| self.metric_order(m));
            let mut name = "all_metrics".to_string();
            while view_names.contains(&name) {
                name.push_str("_view");
            }
            view_names.insert(name.clone());
            views.push(
                Block::new("views")
                    .comment("every metric, by the dimensions all of them reach")
                    .str("name", &name)
                    .str(
                        "description",
                        "Every imported metric, by the dimensions every one of them reaches",
                    )
                    .list("dimensions", &self.common_dimensions(&all_models))
                    .list("metrics", &metrics),
            );
        }
        // Saved queries.
        let project = self.project;
        for (file_name, doc) in &project.documents {
            for sq in &doc.saved_queries {
                let name = sq.name.value.clone();
                let line = sq.name.referenced.line();
                match self.saved_query(sq, &view_names) {
                    Ok((view, segment)) => {
                        if let Some(s) = segment {
                            segments.push(s);
                        }
                        views.push(view);
                        view_names.insert(name.clone());
                        self.report.mapped.push(item(
                            "saved query",
                            &name,
                            file_name,
                            line,
                            "view",
                        ));
                    }
                    Err(reason) => self.report.unmapped.push(item(
                        "saved query",
                        &name,
                        file_name,
                        line,
                        reason,
                    )),
                }
            }
        }
        let mut all = segments;
        all.extend(views);
        files.push(("views.toml".to_string(), file(&heading, &all)));
        for list in [
            &mut self.report.mapped,
            &mut self.report.unmapped,
            &mut self.report.notes,
        ] {
            list.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        }
        Import {
            files,
            report: self.report,
        }
    }

    fn metric_order(&self, name: &str) -> (String, u64, String) {
        self.metrics.get(name).map_or_else(
            || (String::new(), 0, name.to_string()),
            |(f, m)| (f.to_string(), m.name.referenced.line(), name.to_string()),
        )
    }

    /// The dimensions every model of `models` reaches (metric_time first).
    fn common_dimensions(&self, models: &BTreeSet<usize>) -> Vec<String> {
        let mut iter = models.iter();
        let Some(first) = iter.next() else {
            return Vec::new();
        };
        let mut dims: Vec<String> = self.reach.get(first).cloned().unwrap_or_default();
        for m in iter {
            let other = self.reach.get(m).cloned().unwrap_or_default();
            dims.retain(|d| other.contains(d));
        }
        dims
    }

    /// A saved query as a view (and its `where` as a segment the view applies).
    fn saved_query(
        &mut self,
        sq: &super::yaml::SavedQuery,
        views: &HashSet<String>,
    ) -> Result<(Block, Option<Block>), String> {
        let name = sq.name.value.clone();
        if views.contains(&name) {
            return Err(format!(
                "the name {name} is taken by a view of a semantic model"
            ));
        }
        let mut models = BTreeSet::new();
        for m in &sq.query_params.metrics {
            match self.mapped.get(m) {
                Some(Ok(mapped)) => models.extend(mapped.models.iter().copied()),
                Some(Err(_)) => return Err(format!("its metric {m} is not mapped")),
                None => return Err(format!("unknown metric {m}")),
            }
        }
        let available = self.common_dimensions(&models);
        let mut dims = Vec::new();
        for g in &sq.query_params.group_by {
            let reference = template::parse(
                g.trim()
                    .trim_start_matches("{{")
                    .trim_end_matches("}}")
                    .trim(),
            )?;
            let qualified = match &reference {
                Reference::Dimension { path, name, .. }
                    if path.is_empty() && name == "metric_time" =>
                {
                    "metric_time".to_string()
                }
                r => r.qualified(),
            };
            if !available.contains(&qualified) {
                return Err(format!(
                    "group_by {g}: {qualified} is not a dimension every metric of the query reaches"
                ));
            }
            dims.push(qualified);
        }
        let mut view = Block::new("views")
            .comment(format!("saved query {name}"))
            .str("name", &name)
            .opt("label", sq.label.as_deref())
            .opt("description", sq.description.as_deref())
            .list("dimensions", &dims)
            .list("metrics", &sq.query_params.metrics);
        let mut segment = None;
        if let Some(w) = &sq.query_params.where_ {
            let mut parts = Vec::new();
            for c in w.conditions() {
                parts.push(template::render(&c, |r| {
                    let column = match r {
                        Reference::Dimension { path, name, .. }
                            if path.is_empty() && name == "metric_time" =>
                        {
                            "metric_time".to_string()
                        }
                        r => r.qualified(),
                    };
                    if !available.contains(&column) {
                        return Err(format!(
                            "where: {column} is not a dimension of the query's metrics"
                        ));
                    }
                    Ok(match r {
                        Reference::Dimension {
                            grain, date_part, ..
                        } => time_expr(&column, grain.as_deref(), date_part.as_deref()),
                        Reference::Entity { .. } => column,
                    })
                })?);
            }
            let segment_name = self.fresh(&format!("{name}_where"));
            segment = Some(
                Block::new("segments")
                    .comment(format!("the where of saved query {name}"))
                    .str("name", &segment_name)
                    .str("filter", &and(parts)),
            );
            view = view.list("apply_segments", &[segment_name]);
        }
        Ok((view, segment))
    }
}

fn time_expr(column: &str, grain: Option<&str>, date_part: Option<&str>) -> String {
    match (grain, date_part) {
        (_, Some(part)) => format!("date_part('{part}', {column})"),
        (Some(g), None) if g != "day" => format!("date_trunc('{g}', {column})"),
        _ => column.to_string(),
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

/// `7 days` → `7 days`; `1 week` → `1 weeks`; years and quarters in months.
fn trailing(window: &str) -> Result<String, String> {
    let mut words = window.split_whitespace();
    let (Some(n), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("window \"{window}\" is not \"<count> <unit>\""));
    };
    let n: u32 = n
        .parse()
        .map_err(|_| format!("window \"{window}\": \"{n}\" is not a count"))?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit.trim_end_matches('s');
    Ok(match unit {
        "day" => format!("{n} days"),
        "week" => format!("{n} weeks"),
        "month" => format!("{n} months"),
        "quarter" => format!("{} months", n * 3),
        "year" => format!("{} months", n * 12),
        other => return Err(format!("window \"{window}\": unit {other} is not mapped")),
    })
}

/// Replace whole-word names in a derived metric's expression (outside string literals).
fn replace_names(expr: &str, names: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let mut in_string = false;
    let flush = |word: &mut String, out: &mut String| {
        if !word.is_empty() {
            out.push_str(names.get(word.as_str()).unwrap_or(word));
            word.clear();
        }
    };
    for c in expr.chars() {
        if in_string {
            out.push(c);
            if c == '\'' {
                in_string = false;
            }
        } else if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if c == '\'' {
                in_string = true;
            }
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_names() {
        assert_eq!(trailing("7 days").unwrap(), "7 days");
        assert_eq!(trailing("1 year").unwrap(), "12 months");
        assert!(trailing("7").is_err());
        let names = HashMap::from([("a".to_string(), "x_input_1".to_string())]);
        assert_eq!(
            replace_names("a - 'a' + ab * a", &names),
            "x_input_1 - 'a' + ab * x_input_1"
        );
        assert_eq!(
            and(vec!["a = 1".into(), "b = 2".into()]),
            "(a = 1) AND (b = 2)"
        );
    }
}
