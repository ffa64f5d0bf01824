//! The inputs of ratio and derived metrics: the input metric itself, or a helper that
//! filters it or offsets it (MetricFlow's input `filter`, `offset_window`,
//! `offset_to_grain`).

use super::offsets::{days_of, offset, offset_grains_after_aggregating, start_of};
use super::{Mapped, Mapper, and, item};
use crate::import::metricflow::write::Block;
use crate::import::metricflow::yaml::Metric;

impl Mapper<'_> {
    /// An input of a ratio or derived metric: the input metric itself, or a helper that
    /// adds the input's (and the outer metric's) filter.
    pub(super) fn input(
        &mut self,
        owner: &str,
        input: &crate::import::metricflow::yaml::MetricInputFull,
        outer: &Metric,
        role: &str,
        depth: usize,
    ) -> Result<Mapped, String> {
        // MetricFlow moves a simple (or cumulative) metric's rows day by day before
        // aggregating where the query's grain is coarser than the offset's; a derived or
        // ratio metric's periods it joins after aggregating, at the query's grain.
        let simple = self.metrics.get(&input.name).is_some_and(|(_, m)| {
            m.kind.eq_ignore_ascii_case("simple") || m.kind.eq_ignore_ascii_case("cumulative")
        });
        let own_days = input.offset_window.as_deref().and_then(days_of);
        let mut offset = match (&input.offset_window, &input.offset_to_grain) {
            // Inside an offset of an offset metric: the two offsets added.
            _ if self.extra_days > 0 => match (&input.offset_window, &input.offset_to_grain) {
                (None, None) => Some(offset(&format!("{} days", self.extra_days), simple)?),
                (Some(_), None) if own_days.is_some() => Some(offset(
                    &format!("{} days", self.extra_days + own_days.unwrap_or(0)),
                    simple,
                )?),
                _ => {
                    return Err(format!(
                        "input {} of an offset metric offset again: offsets other than days and weeks are not added",
                        input.name
                    ));
                }
            },
            (Some(window), None) => Some(offset(window, simple)?),
            (None, Some(grain)) => Some(start_of(grain, simple)?),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(format!(
                    "input {}: both offset_window and offset_to_grain",
                    input.name
                ));
            }
        };
        if let Some((_, grains)) = &mut offset {
            for outer_grains in &self.extra_grains {
                grains.retain(|g| outer_grains.contains(g));
            }
        }
        let base = self
            .metric(&input.name, depth + 1)
            .map_err(|e| format!("input {} is not mapped ({e})", input.name))?;
        let composite = self.metrics.get(&input.name).copied().filter(|(_, m)| {
            m.kind.eq_ignore_ascii_case("derived") || m.kind.eq_ignore_ascii_case("ratio")
        });
        // The input's own filter and the outer metric's.
        let own: Vec<String> = input
            .filter
            .iter()
            .chain(&outer.filter)
            .flat_map(|f| f.conditions())
            .collect();
        // An offset in days of a derived metric that offsets its own inputs: the metric
        // again, under a name of its own, each input offset by both (MetricFlow's offset
        // of an offset metric).
        if let (Some(days), Some((file, metric)), true) = (own_days, composite, base.periodic) {
            let helper = self.fresh(&format!("{owner}_{role}_offset"));
            self.extra_conditions.push(own);
            self.extra_days += days;
            self.extra_grains
                .push(offset_grains_after_aggregating(days));
            let mapped = self.map_metric(&helper, file, metric, depth + 1);
            self.extra_grains.pop();
            self.extra_days -= days;
            self.extra_conditions.pop();
            return mapped;
        }
        let mut conditions = own.clone();
        conditions.extend(self.extra_conditions.iter().flatten().cloned());
        let filtered = if conditions.is_empty() {
            base
        } else if let (false, Some((file, metric))) = (base.filterable, composite) {
            // A filter on a derived or ratio input applies to each of its inputs (as
            // MetricFlow's): the metric again, under a name of its own, with every input
            // filtered.
            let helper = self.fresh(&format!("{owner}_{role}"));
            self.extra_conditions.push(own);
            let mapped = self.map_metric(&helper, file, metric, depth + 1);
            self.extra_conditions.pop();
            mapped?
        } else {
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
            let mut translated = Vec::new();
            for c in &conditions {
                translated.push(self.fact_filter(fact, c)?);
            }
            let helper = self.fresh(&format!("{owner}_{role}"));
            self.metric_blocks.push(
                Block::new("metrics")
                    .comment(format!("{} filtered, the {role} of {owner}", input.name))
                    .str("name", &helper)
                    .str("base", &base.ours)
                    .str("filter", &and(translated)),
            );
            Mapped {
                ours: helper,
                models: base.models,
                filterable: true,
                periodic: base.periodic,
                cumulative: base.cumulative,
                grains: base.grains,
            }
        };
        let Some((compare, grains)) = offset else {
            return Ok(filtered);
        };
        // An offset of a cumulative metric is kpitables' comparison of windows (last
        // year's to-date, the running total on the month's first day); of an offset or
        // a spine metric, not built.
        let windowed = filtered.cumulative;
        if filtered.periodic && !windowed {
            return Err(format!(
                "input {} with an offset: {} is itself an offset metric, a cumulative one offset to a period's start, or every period of the spine, and such an offset of a period metric is not mapped yet",
                input.name, input.name
            ));
        }
        let offered = Mapped {
            grains: Some(grains.iter().cloned().collect()),
            ..filtered.clone()
        };
        // A cumulative input is served by day: the offset at the grains both allow.
        let grains: Vec<String> = Mapped::common_grains(&[&filtered, &offered])
            .map_err(|_| {
                format!(
                    "input {} offset by {compare}: the offset is served at the {} grain, {} at another only: no grain serves both",
                    input.name,
                    grains.join(", "),
                    input.name
                )
            })?
            .map(|g| g.into_iter().collect())
            .unwrap_or(grains);
        if filtered
            .models
            .iter()
            .any(|&m| self.sms[m].agg_time.is_none())
        {
            return Err(format!(
                "input {} with an offset: its semantic model has no agg_time_dimension",
                input.name
            ));
        }
        let helper = self.fresh(&format!("{owner}_{role}_offset"));
        let block = Block::new("metrics")
            .str("name", &helper)
            .str("base", &filtered.ours)
            .str("time", "metric_time")
            .str("compare", &compare)
            .str("show", "value");
        let what = if compare.starts_with("start_of_") {
            "on the first day of the period (offset_to_grain)".to_string()
        } else {
            format!("{compare} earlier (offset_window)")
        };
        self.metric_blocks.push(
            block
                .comment(format!(
                    "{} {what}, the {role} of {owner}; MetricFlow's answer at other grains differs, so only these",
                    input.name
                ))
                .list("grains", &grains),
        );
        self.report.notes.push(item(
            "metric",
            owner,
            self.metrics.get(owner).map_or("", |(f, _)| f),
            self.metrics
                .get(owner)
                .map_or(0, |(_, m)| m.name.referenced.line()),
            format!(
                "input {} offset by {compare}: queryable by metric_time at the {} grain (MetricFlow joins periods at the query's grain; at the others its answer differs); periods that only the earlier data has have no row",
                input.name,
                grains.join(", ")
            ),
        ));
        Ok(Mapped {
            ours: helper,
            models: filtered.models,
            filterable: false,
            periodic: true,
            cumulative: false,
            grains: Some(grains.into_iter().collect()),
        })
    }
}
