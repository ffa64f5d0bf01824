//! MetricFlow metrics → kpitables metrics: simple (atomic), ratio and derived
//! (composite, with derived metrics for filtered inputs and period-over-period metrics
//! for offsets), cumulative; measures' aggregations.

use std::collections::{BTreeSet, HashMap};

use super::measures::Atomic;
use super::offsets::trailing;
use super::{Mapped, Mapper, and, item};
use crate::import::metricflow::write::Block;
use crate::import::metricflow::yaml::Metric;

impl<'a> Mapper<'a> {
    pub(super) fn metric_filter(
        &mut self,
        fact: usize,
        metric: &Metric,
    ) -> Result<Option<String>, String> {
        match &metric.filter {
            None => Ok(None),
            Some(f) => {
                let mut parts = Vec::new();
                for c in f.conditions() {
                    parts.push(self.fact_filter(fact, &c)?);
                }
                Ok(Some(and(parts)))
            }
        }
    }

    /// Map MetricFlow metric `name` (memoized); the error is the reason it is not mapped.
    pub(super) fn metric(&mut self, name: &str, depth: usize) -> Result<Mapped, String> {
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

    pub(super) fn describe(block: Block, metric: &Metric) -> Block {
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

    pub(super) fn map_metric(
        &mut self,
        name: &str,
        file: &str,
        metric: &'a Metric,
        depth: usize,
    ) -> Result<Mapped, String> {
        let p = &metric.type_params;
        let kind = metric.kind.to_ascii_lowercase();
        if p.join_to_timespine == Some(true) && kind != "simple" {
            return Err(format!(
                "join_to_timespine on a {kind} metric is not mapped (on a simple metric it is)"
            ));
        }
        if p.fill_nulls_with.is_some() && kind != "simple" {
            return Err(format!(
                "fill_nulls_with on a {kind} metric is not mapped (on a simple metric it is)"
            ));
        }
        let comment = format!("MetricFlow {kind} metric {name} ({file})");
        match kind.as_str() {
            "simple" => {
                let measure = p
                    .measure
                    .as_ref()
                    .ok_or("a simple metric needs type_params.measure")?;
                let (fact, atomic) = self.atomic(measure.name())?;
                let mut filters = Vec::new();
                let mut fill = p.fill_nulls_with.as_ref().map(|f| f.sql());
                let mut spine = p.join_to_timespine == Some(true);
                if let crate::import::metricflow::yaml::MeasureInput::Full(full) = measure {
                    spine |= full.join_to_timespine == Some(true);
                    if let Some(f) = &full.fill_nulls_with {
                        fill = Some(f.sql());
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
                // MetricFlow filters the measure's rows before the spine join, and the
                // spine's periods too by a condition on metric_time (as kpitables does
                // with a condition on the time dimension alone).
                if spine && self.sms[fact].agg_time.is_none() {
                    return Err(format!(
                        "join_to_timespine: semantic model {} has no agg_time_dimension",
                        self.sms[fact].name
                    ));
                }
                self.taken.insert(name.to_string());
                // join_to_timespine: the measure's rows in a helper, and the metric its
                // value on every period of the range (`window = "period"`).
                let rows = if spine {
                    self.fresh(&format!("{name}_rows"))
                } else {
                    name.to_string()
                };
                let table = self.table_of(fact, &atomic);
                let mut block = Block::new("metrics")
                    .comment(comment.clone())
                    .str("name", &rows)
                    .str("table", &table);
                block = atomic.write(block);
                let fill = fill
                    .map(|fill| {
                        fill.parse::<f64>()
                            .map_err(|_| format!("fill_nulls_with {fill} is not a number"))
                    })
                    .transpose()?;
                if let (Some(value), false) = (fill, spine) {
                    block = block.raw("fill_nulls_with", format!("{value:?}"));
                }
                if !filters.is_empty() {
                    block = block.str("filter", &and(filters.clone()));
                } else if fill.is_none() || spine {
                    self.measure_metric
                        .entry(measure.name().to_string())
                        .or_insert_with(|| rows.clone());
                }
                let mut block = if spine {
                    self.metric_blocks.push(block);
                    let mut every = Block::new("metrics")
                        .comment(comment)
                        .str("name", name)
                        .str("base", &rows)
                        .str("time", "metric_time")
                        .str("window", "period");
                    if let Some(value) = fill {
                        every = every.raw("fill_nulls_with", format!("{value:?}"));
                    }
                    every
                } else {
                    block
                };
                let measure_description = self
                    .measures
                    .get(measure.name())
                    .and_then(|(_, m)| m.description.clone());
                block = Self::describe(block, metric);
                if metric.description.is_none() {
                    block = block.opt("description", measure_description.as_deref());
                }
                self.metric_blocks.push(block);
                Ok(Mapped {
                    ours: name.to_string(),
                    models: BTreeSet::from([fact]),
                    filterable: !spine,
                    periodic: spine,
                    cumulative: false,
                    grains: None,
                })
            }
            "ratio" => {
                let num = p
                    .numerator
                    .as_ref()
                    .ok_or("a ratio metric needs a numerator")?;
                let den = p
                    .denominator
                    .as_ref()
                    .ok_or("a ratio metric needs a denominator")?;
                let n = self.input(name, &num.full(), metric, "numerator", depth)?;
                let d = self.input(name, &den.full(), metric, "denominator", depth)?;
                let grains = Mapped::common_grains(&[&n, &d])?;
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
                    periodic: n.periodic || d.periodic,
                    cumulative: false,
                    grains,
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
                let mut periodic = false;
                let mut inputs = Vec::new();
                for (k, input) in p.metrics.iter().enumerate() {
                    let full = input.full();
                    let mapped =
                        self.input(name, &full, metric, &format!("input_{}", k + 1), depth)?;
                    models.extend(mapped.models.iter().copied());
                    periodic |= mapped.periodic;
                    names.insert(
                        full.alias.clone().unwrap_or(full.name.clone()),
                        mapped.ours.clone(),
                    );
                    inputs.push(mapped);
                }
                let grains = Mapped::common_grains(&inputs.iter().collect::<Vec<_>>())?;
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
                    periodic,
                    cumulative: false,
                    grains,
                })
            }
            "cumulative" => {
                let measure = p
                    .measure
                    .as_ref()
                    .ok_or("a cumulative metric needs type_params.measure")?;
                if let crate::import::metricflow::yaml::MeasureInput::Full(full) = measure
                    && full.join_to_timespine == Some(true)
                {
                    return Err("join_to_timespine on the measure of a cumulative metric (a row for every day of the time spine, windows without rows included) is not mapped".into());
                }
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
                    (Some(w), None) => {
                        let w = trailing(&w)?;
                        if w.ends_with("hours") || w.ends_with("minutes") {
                            return Err(format!(
                                "a window of {w} is not mapped: metric_time's values are days in kpitables"
                            ));
                        }
                        w
                    }
                    (None, Some(g)) => match g.to_ascii_lowercase().as_str() {
                        g @ ("day" | "week" | "month" | "quarter" | "year") => {
                            format!("{g}_to_date")
                        }
                        other => {
                            return Err(format!(
                                "grain_to_date {other} is not mapped (day, week, month, quarter, year are)"
                            ));
                        }
                    },
                    (None, None) => "all_time".to_string(),
                    (Some(_), Some(_)) => return Err("both window and grain_to_date".into()),
                };
                let (fact, atomic) = self.atomic(measure.name())?;
                if atomic.semi_additive.is_some() {
                    return Err(format!(
                        "measure {}: a cumulative metric of a semi-additive measure (a balance summed over days) is not mapped",
                        measure.name()
                    ));
                }
                if self.sms[fact].agg_time.is_none() {
                    return Err(format!(
                        "semantic model {} has no agg_time_dimension",
                        self.sms[fact].name
                    ));
                }
                let base = self.measure_base(name, measure.name(), fact, metric)?;
                self.taken.insert(name.to_string());
                // Above the day, a period's value is its first (last) day's within the
                // queried range whose window holds rows, or the average of those days'
                // (kpitables' `period_agg`, as MetricFlow's).
                let (period, note) = match period_agg.as_str() {
                    "first" | "last" | "average" => (
                        Some(period_agg.as_str()),
                        format!(
                            "cumulative ({window}): above the day, a period's value is {} within the queried range whose window holds rows (period_agg {period_agg})",
                            if period_agg == "average" {
                                "the average of its days' values".to_string()
                            } else {
                                format!("its {period_agg} day's")
                            }
                        ),
                    ),
                    other => {
                        return Err(format!(
                            "period_agg {other} is not mapped (first, last, average are)"
                        ));
                    }
                };
                let mut block = Block::new("metrics")
                    .comment(comment)
                    .str("name", name)
                    .str("base", &base)
                    .str("time", "metric_time")
                    .str("window", &window);
                match period {
                    Some(p) => block = block.str("period_agg", p),
                    None => block = block.list("grains", &["day".to_string()]),
                }
                self.report.notes.push(item(
                    "metric",
                    name,
                    file,
                    metric.name.referenced.line(),
                    note,
                ));
                self.metric_blocks.push(Self::describe(block, metric));
                Ok(Mapped {
                    ours: name.to_string(),
                    models: BTreeSet::from([fact]),
                    filterable: false,
                    periodic: true,
                    cumulative: true,
                    grains: period
                        .is_none()
                        .then(|| BTreeSet::from(["day".to_string()])),
                })
            }
            "conversion" => self.conversion(name, metric, comment),
            other => Err(format!("unknown metric type \"{other}\"")),
        }
    }

    /// A conversion metric: a kpitables conversion metric over the base and conversion
    /// measures' metrics, the entity's dimension and metric_time.
    fn conversion(
        &mut self,
        name: &str,
        metric: &'a Metric,
        comment: String,
    ) -> Result<Mapped, String> {
        let c = metric
            .type_params
            .conversion_type_params
            .as_ref()
            .ok_or("a conversion metric needs type_params.conversion_type_params")?;
        let calculation = match c.calculation.as_deref().map(str::to_ascii_lowercase) {
            None => "conversion_rate".to_string(),
            Some(k) if k == "conversion_rate" || k == "conversions" => k,
            Some(other) => return Err(format!("calculation {other} is not mapped")),
        };
        let window = c.window.as_deref().map(trailing).transpose()?;
        let mut inputs = Vec::new();
        let mut grains = Vec::new();
        for (role, input) in [
            ("base", &c.base_measure),
            ("conversion", &c.conversion_measure),
        ] {
            let (
                fact,
                Atomic {
                    agg, semi_additive, ..
                },
            ) = self.atomic(input.name())?;
            if semi_additive.is_some() {
                return Err(format!(
                    "measure {}: a conversion metric of a semi-additive measure is not mapped",
                    input.name()
                ));
            }
            let sm = &self.sms[fact];
            if sm.agg_time.is_none() {
                return Err(format!(
                    "semantic model {} has no agg_time_dimension",
                    sm.name
                ));
            }
            grains.push(self.time_granularity(fact, input.name()));
            if !sm
                .def
                .entities
                .iter()
                .any(|e| e.name.value == c.entity && !e.kind.eq_ignore_ascii_case("natural"))
            {
                return Err(format!(
                    "the {role} measure's semantic model {} has no entity {}",
                    sm.name, c.entity
                ));
            }
            let mut filters = Vec::new();
            if let crate::import::metricflow::yaml::MeasureInput::Full(full) = input {
                if full.join_to_timespine == Some(true) {
                    return Err(format!(
                        "join_to_timespine on the {role} measure of a conversion metric is not mapped"
                    ));
                }
                // kpitables answers 0 conversions (and a rate of 0) where none converted.
                if let Some(fill) = &full.fill_nulls_with
                    && !(fill.sql() == "0" && matches!(agg, "count" | "count_distinct"))
                {
                    return Err(format!(
                        "fill_nulls_with {} on the {role} measure is not mapped (kpitables fills 0 for counts only)",
                        fill.sql()
                    ));
                }
                if let Some(f) = &full.filter {
                    for condition in f.conditions() {
                        filters.push(self.fact_filter(fact, &condition)?);
                    }
                }
            }
            // The metric's own filter selects base events (as in MetricFlow).
            if role == "base"
                && let Some(f) = self.metric_filter(fact, metric)?
            {
                filters.push(f);
            }
            inputs.push((
                fact,
                self.measure_metric(name, role, input.name(), fact, filters)?,
            ));
        }
        // MetricFlow compares the two events' times at the coarser of their grains (a
        // visit on 3 May "before" a purchase of the month of May); kpitables compares
        // the times themselves.
        if grains.first() != grains.last() {
            return Err(format!(
                "the base and conversion measures are aggregated at different time grains ({}): MetricFlow compares the events' times at the coarser one, kpitables the times themselves",
                grains.join(" and ")
            ));
        }
        let [(base_fact, base), (conversion_fact, conversion)] =
            <[(usize, String); 2]>::try_from(inputs)
                .map_err(|_| "a conversion metric has two measures".to_string())?;
        let mut constant = Vec::new();
        for p in &c.constant_properties {
            let on_base = self.property(base_fact, &p.base_property)?;
            let on_conversion = self.property(conversion_fact, &p.conversion_property)?;
            constant.push(if on_base == on_conversion {
                format!("{{ base = \"{on_base}\" }}")
            } else {
                format!("{{ base = \"{on_base}\", conversion = \"{on_conversion}\" }}")
            });
        }
        // MetricFlow's conversions are NULL where a group's base events had none (and so
        // is the rate) unless the conversion measure has fill_nulls_with: 0; kpitables
        // counts 0, so without the fill the metric is NULLIF(conversions, 0).
        let filled = matches!(
            &c.conversion_measure,
            crate::import::metricflow::yaml::MeasureInput::Full(full) if full.fill_nulls_with.is_some()
        );
        self.taken.insert(name.to_string());
        let counted = if filled {
            name.to_string()
        } else {
            self.fresh(&format!("{name}_counted"))
        };
        let mut block = Block::new("metrics")
            .comment(comment)
            .str("name", &counted)
            .str("base", &base)
            .str("conversion", &conversion)
            .str("entity", &c.entity)
            .str("time", "metric_time");
        if let Some(w) = &window {
            block = block.str("window", w);
        }
        block = block.str("calculation", &calculation);
        if !constant.is_empty() {
            block = block.raw("constant_properties", format!("[{}]", constant.join(", ")));
        }
        if filled {
            self.metric_blocks.push(Self::describe(block, metric));
        } else {
            self.metric_blocks.push(block);
            let outer = Block::new("metrics")
                .comment(format!(
                    "{name}: NULL where no base event converted, as MetricFlow answers"
                ))
                .str("name", name)
                .str("formula", &format!("NULLIF({counted}, 0)"));
            self.metric_blocks.push(Self::describe(outer, metric));
        }
        Ok(Mapped {
            ours: name.to_string(),
            models: BTreeSet::from([base_fact]),
            filterable: false,
            periodic: false,
            cumulative: false,
            grains: None,
        })
    }

    /// The kpitables dimension of entity or dimension `name` of semantic model `fact`
    /// (a conversion metric's constant property): the entity's own dimension, the
    /// model's dimension under its primary entity, or a name with its entity already
    /// (`transaction__type`).
    fn property(&self, fact: usize, name: &str) -> Result<String, String> {
        let sm = &self.sms[fact];
        let entity = sm.def.entities.iter().any(|e| e.name.value == name);
        let candidate = if entity || (name.contains("__") && self.dims.contains_key(name)) {
            Some(name.to_string())
        } else {
            sm.primary
                .as_ref()
                .map(|(primary, _)| format!("{primary}__{name}"))
        };
        candidate
            .filter(|d| self.dims.contains_key(d))
            .ok_or_else(|| {
                format!(
                    "constant property {name}: no dimension of semantic model {} is named so",
                    sm.name
                )
            })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn windows_and_names() {
        assert_eq!(trailing("7 days").unwrap(), "7 days");
        assert_eq!(trailing("1 year").unwrap(), "12 months");
        assert_eq!(trailing("2 hours").unwrap(), "2 hours");
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
