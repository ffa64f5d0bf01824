//! MetricFlow measures → the keys of kpitables atomic metrics: aggregations, percentiles,
//! balances (`non_additive_dimension`), a measure's own agg_time_dimension (a second
//! table of its model's rows), and the simple metric of each measure.

use super::{Mapper, and, parenthesize};
use crate::import::metricflow::write::Block;
use crate::import::metricflow::yaml::Metric;

impl<'a> Mapper<'a> {
    /// The atomic aggregation of measure `name`: its semantic model, and (agg, expr).
    pub(super) fn atomic(&self, name: &str) -> Result<(usize, Atomic), String> {
        let &(fact, measure) = self
            .measures
            .get(name)
            .ok_or_else(|| format!("unknown measure {name}"))?;
        let sm = &self.sms[fact];
        if !sm.ok {
            return Err(format!("its semantic model {} is not mapped", sm.name));
        }
        let semi_additive = match &measure.non_additive_dimension {
            None => None,
            Some(n) => {
                let own = sm
                    .def
                    .defaults
                    .as_ref()
                    .and_then(|d| d.agg_time_dimension.as_ref());
                let agg_time = measure.agg_time_dimension.as_ref().or(own);
                if agg_time != Some(&n.name) {
                    return Err(format!(
                        "measure {name}: non_additive_dimension {} is not the measure's agg_time_dimension ({}); a balance over another time dimension is not mapped",
                        n.name,
                        agg_time.map_or("none", String::as_str)
                    ));
                }
                let at = match n
                    .window_choice
                    .as_deref()
                    .unwrap_or("min")
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "min" => "first",
                    "max" => "last",
                    other => {
                        return Err(format!(
                            "measure {name}: non_additive_dimension window_choice {other} (min or max)"
                        ));
                    }
                };
                Some(SemiAdditive {
                    at,
                    per: n.window_groupings.clone(),
                })
            }
        };
        // A measure aggregated on another time dimension than its model's: its rows
        // are read as a table of their own (the same rows, carrying that dimension as
        // metric_time and the model's own dimensions).
        let mut time = None;
        if let Some(t) = &measure.agg_time_dimension {
            let own = sm
                .def
                .defaults
                .as_ref()
                .and_then(|d| d.agg_time_dimension.as_ref());
            if own != Some(t) {
                let Some(dimension) = sm.def.dimensions.iter().find(|d| d.name.value == *t) else {
                    return Err(format!(
                        "measure {name}: agg_time_dimension {t} is not a dimension of {}",
                        sm.name
                    ));
                };
                let expr = dimension.expr.as_ref().map_or(t.clone(), |x| x.sql());
                time = Some((t.clone(), expr));
            }
        }
        let expr = measure
            .expr
            .as_ref()
            .map_or(measure.name.value.clone(), |e| e.sql());
        let agg = measure.agg.to_ascii_lowercase();
        let percentile = match (agg.as_str(), &measure.agg_params) {
            ("percentile", Some(p)) if p.use_approximate_percentile => {
                return Err(format!(
                    "measure {name}: an approximate percentile is not mapped (kpitables' percentiles are exact)"
                ));
            }
            ("percentile", Some(p)) => match p.percentile {
                Some(f) if (0.0..=1.0).contains(&f) => Some((f, p.use_discrete_percentile)),
                _ => {
                    return Err(format!(
                        "measure {name}: a percentile needs agg_params.percentile between 0 and 1"
                    ));
                }
            },
            ("percentile", None) => {
                return Err(format!("measure {name}: a percentile needs agg_params"));
            }
            _ => None,
        };
        let agg = match agg.as_str() {
            "percentile" => match percentile {
                Some((_, true)) => ("percentile_disc", Some(expr)),
                _ => ("percentile_cont", Some(expr)),
            },
            "median" => ("median", Some(expr)),
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
                    "measure {name}: aggregation {other} is not mapped (kpitables has sum, count, count_distinct, avg, min, max, median, percentile_cont, percentile_disc)"
                ));
            }
        };
        Ok((
            fact,
            Atomic {
                agg: agg.0,
                expr: agg.1,
                percentile: percentile.map(|(f, _)| f),
                semi_additive,
                time,
            },
        ))
    }

    /// The `time_granularity` of the time dimension measure `measure` of semantic model
    /// `fact` is aggregated on (its own agg_time_dimension or the model's); `day` when
    /// none is given.
    pub(super) fn time_granularity(&self, fact: usize, measure: &str) -> String {
        let def = self.sms[fact].def;
        let own = def
            .measures
            .iter()
            .find(|m| m.name.value == measure)
            .and_then(|m| m.agg_time_dimension.as_ref());
        let time = own.or_else(|| {
            def.defaults
                .as_ref()
                .and_then(|d| d.agg_time_dimension.as_ref())
        });
        time.and_then(|t| def.dimensions.iter().find(|d| d.name.value == *t))
            .and_then(|d| d.type_params.as_ref()?.time_granularity.clone())
            .map_or_else(|| "day".to_string(), |g| g.to_ascii_lowercase())
    }

    /// The table a measure's metric reads: its semantic model's, or (a measure with its
    /// own agg_time_dimension) a table of the same rows carrying that time dimension as
    /// metric_time.
    pub(super) fn table_of(&mut self, fact: usize, atomic: &Atomic) -> String {
        let model = self.sms[fact].name.clone();
        match &atomic.time {
            None => model,
            Some((name, expr)) => {
                let table = format!("{model}_by_{name}");
                self.aliases.insert(table.clone(), (fact, expr.clone()));
                table
            }
        }
    }

    /// A kpitables metric aggregating measure `measure` with the metric's filter, for a
    /// cumulative metric's base: the simple metric of the measure when there is one.
    pub(super) fn measure_base(
        &mut self,
        owner: &str,
        measure: &str,
        fact: usize,
        metric: &Metric,
    ) -> Result<String, String> {
        let filter = self.metric_filter(fact, metric)?;
        self.measure_metric(owner, "base", measure, fact, filter.into_iter().collect())
    }

    /// A kpitables metric aggregating measure `measure` of semantic model `fact` where
    /// `filters` hold: the simple metric of the measure when there are none and there is
    /// one, else a helper named after `owner` and `role`.
    pub(super) fn measure_metric(
        &mut self,
        owner: &str,
        role: &str,
        measure: &str,
        fact: usize,
        filters: Vec<String>,
    ) -> Result<String, String> {
        if filters.is_empty()
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
        if filters.is_empty()
            && let Some(existing) = self.measure_metric.get(measure)
        {
            return Ok(existing.clone());
        }
        let (_, atomic) = self.atomic(measure)?;
        let helper = self.fresh(&format!("{owner}_{role}"));
        let table = self.table_of(fact, &atomic);
        let mut block = atomic.write(
            Block::new("metrics")
                .comment(format!("measure {measure}, the {role} of {owner}"))
                .str("name", &helper)
                .str("table", &table),
        );
        if !filters.is_empty() {
            block = block.str("filter", &and(filters));
        }
        self.metric_blocks.push(block);
        Ok(helper)
    }
}

/// A measure's aggregation as a kpitables atomic metric's keys.
pub(super) struct Atomic {
    /// `agg`.
    pub agg: &'static str,
    /// `expr` (none: count rows).
    pub expr: Option<String>,
    /// `percentile`, for `percentile_cont` and `percentile_disc`.
    pub percentile: Option<f64>,
    /// `semi_additive`, over metric_time.
    pub semi_additive: Option<SemiAdditive>,
    /// The measure's own agg_time_dimension (name, expression), where it is not its
    /// semantic model's.
    pub time: Option<(String, String)>,
}

/// A balance's snapshot rule (from `non_additive_dimension`).
pub(super) struct SemiAdditive {
    /// `first` or `last`.
    pub at: &'static str,
    /// The entities with their own day.
    pub per: Vec<String>,
}

impl Atomic {
    /// `agg`, `expr` and `percentile` written into `block`.
    pub(super) fn write(&self, mut block: Block) -> Block {
        block = block.str("agg", self.agg);
        if let Some(e) = &self.expr {
            block = block.str("expr", e);
        }
        if let Some(p) = self.percentile {
            // TOML's float: `1.0`, never the integer `1`.
            block = block.raw("percentile", format!("{p:?}"));
        }
        if let Some(semi) = &self.semi_additive {
            let per: Vec<String> = semi
                .per
                .iter()
                .map(|p| super::super::write::quote(p))
                .collect();
            block = block.raw(
                "semi_additive",
                format!(
                    "{{ time = \"metric_time\", at = \"{}\", per = [{}] }}",
                    semi.at,
                    per.join(", ")
                ),
            );
        }
        block
    }
}
