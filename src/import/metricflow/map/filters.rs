//! MetricFlow filters → kpitables conditions: templates become the dimension names
//! kpitables resolves from the filtered table (or its own columns), `Metric()` a metric
//! dimension.

use super::{Mapper, parenthesize};
use crate::import::metricflow::template::{self, Reference};

impl Mapper<'_> {
    /// Translate a filter for the rows of semantic model `fact`: templates become
    /// dimension names kpitables resolves from that table (or its own columns).
    pub(super) fn fact_filter(&mut self, fact: usize, text: &str) -> Result<String, String> {
        let (def, sm_name, agg_time) = {
            let sm = &self.sms[fact];
            (sm.def, sm.name.clone(), sm.agg_time.clone())
        };
        let reach = self.reach.get(&fact).cloned().unwrap_or_default();
        let sql = template::render(text, |r| match r {
            Reference::Dimension {
                path,
                name,
                grain,
                date_part,
            } => {
                let column = if path.is_empty() && name == "metric_time" {
                    let expr = agg_time.as_ref().ok_or_else(|| {
                        format!("semantic model {sm_name} has no agg_time_dimension")
                    })?;
                    parenthesize(expr)
                } else {
                    let qualified = r.qualified();
                    if !reach.contains(&qualified) {
                        return Err(format!(
                            "dimension {qualified} is not reachable from semantic model {sm_name}"
                        ));
                    }
                    qualified
                };
                Ok(time_expr(&column, grain.as_deref(), date_part.as_deref()))
            }
            Reference::Entity { path, name } => {
                if path.is_empty()
                    && let Some(e) = def.entities.iter().find(|e| &e.name.value == name)
                {
                    return Ok(parenthesize(
                        &e.expr.as_ref().map_or(name.clone(), |x| x.sql()),
                    ));
                }
                Err(format!(
                    "entity {} is not an entity of semantic model {sm_name}",
                    r.qualified()
                ))
            }
            Reference::Metric { name, group_by } => {
                self.metric_dimension(fact, name, group_by, &reach)
            }
        })?;
        Ok(sql)
    }

    /// The metric dimension of `Metric(metric, group_by=[entity])`: the metric per row of
    /// the semantic model where the entity is primary (its dimension is named as
    /// MetricFlow names the group-by item, `listing__bookings`), which the rows of
    /// semantic model `fact` must reach.
    fn metric_dimension(
        &mut self,
        fact: usize,
        metric: &str,
        group_by: &[String],
        reach: &[String],
    ) -> Result<String, String> {
        let [entity] = group_by else {
            return Err(format!(
                "Metric('{metric}') grouped by {} entities: a metric per one entity is mapped",
                group_by.len()
            ));
        };
        let home = self
            .home
            .get(entity)
            .into_iter()
            .flatten()
            .copied()
            .find(|&i| {
                self.sms[i].ok
                    && matches!(&self.sms[i].primary, Some((e, Some(_))) if e == entity)
            })
            .ok_or_else(|| {
                format!(
                    "Metric('{metric}', group_by=['{entity}']): no semantic model has {entity} as its primary entity column, whose rows the metric's values would belong to"
                )
            })?;
        let table = self.sms[home].name.clone();
        let reached = home == fact
            || self
                .dims
                .iter()
                .any(|(d, def)| def.table == table && reach.contains(d));
        if !reached {
            return Err(format!(
                "Metric('{metric}', group_by=['{entity}']): semantic model {} does not reach {table}, where {entity} is primary",
                self.sms[fact].name
            ));
        }
        let key = (entity.clone(), metric.to_string());
        if let Some(name) = self.metric_dims_by.get(&key) {
            return Ok(name.clone());
        }
        // A metric dimension's metric filters by plain dimensions only (so this never
        // comes back here).
        if self.in_metric_dimension {
            return Err(format!(
                "Metric('{metric}') inside the filter of a metric computed per entity is not mapped"
            ));
        }
        self.in_metric_dimension = true;
        let mapped = self.metric(metric, 0);
        self.in_metric_dimension = false;
        let mapped =
            mapped.map_err(|e| format!("Metric('{metric}'): the metric is not mapped ({e})"))?;
        if !mapped.filterable || mapped.models.len() != 1 {
            return Err(format!(
                "Metric('{metric}') in a filter: {metric} is a {} metric; kpitables computes a simple metric (or one with a filter) per entity",
                self.metrics
                    .get(metric)
                    .map_or("", |(_, m)| m.kind.as_str())
            ));
        }
        let name = self.fresh(&format!("{entity}__{metric}"));
        self.metric_dims.insert(name.clone(), (table, mapped.ours));
        self.metric_dims_by.insert(key, name.clone());
        Ok(name)
    }
}

pub(super) fn time_expr(column: &str, grain: Option<&str>, date_part: Option<&str>) -> String {
    match (grain, date_part) {
        (_, Some(part)) => format!("date_part('{part}', {column})"),
        (Some(g), None) if g != "day" => format!("date_trunc('{g}', {column})"),
        _ => column.to_string(),
    }
}
