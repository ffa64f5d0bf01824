//! The rules of one metric: the keys its kind takes, its references (base, time
//! dimension, conversion metrics), windows, comparisons and balances.

use super::Checker;
use crate::model::{Aggregation, DimensionKind, Metric, MetricKind, Model, Window};

/// A metric's keys fit its kind, and what it names exists.
pub(super) fn check_metric(c: &mut Checker<'_>, model: &Model, metric: &Metric) {
    let f = metric.file;
    let name = metric.name.get_ref();
    c.name(f, "metric", &metric.name);
    let kind = metric.kind();
    // Keys each kind takes; any other key set is reported.
    let allowed: &[&str] = match kind {
        MetricKind::Atomic => &[
            "table",
            "agg",
            "expr",
            "filter",
            "percentile",
            "semi_additive",
            "fill_nulls_with",
        ],
        MetricKind::Derived => &["base", "filter", "fill_nulls_with"],
        MetricKind::Composite => &["formula", "fill_nulls_with"],
        MetricKind::PeriodOverPeriod => &[
            "base",
            "time",
            "compare",
            "show",
            "grains",
            "fill_nulls_with",
        ],
        MetricKind::Cumulative => &[
            "base",
            "time",
            "window",
            "grains",
            "period_agg",
            "fill_nulls_with",
        ],
        MetricKind::Conversion => &[
            "base",
            "conversion",
            "entity",
            "time",
            "conversion_time",
            "window",
            "calculation",
            "constant_properties",
            "fill_nulls_with",
        ],
    };
    let set: [(&str, Option<usize>); 20] = [
        (
            "constant_properties",
            metric
                .constant_properties
                .first()
                .map(|p| p.base.span().start),
        ),
        (
            "fill_nulls_with",
            metric.fill_nulls_with.as_ref().map(|s| s.span().start),
        ),
        (
            "semi_additive",
            metric.semi_additive.as_ref().map(|s| s.time.span().start),
        ),
        ("table", metric.table.as_ref().map(|s| s.span().start)),
        (
            "percentile",
            metric.percentile.as_ref().map(|s| s.span().start),
        ),
        ("agg", metric.agg.map(|_| metric.name.span().start)),
        ("expr", metric.expr.as_ref().map(|s| s.span().start)),
        ("filter", metric.filter.as_ref().map(|s| s.span().start)),
        ("base", metric.base.as_ref().map(|s| s.span().start)),
        ("formula", metric.formula.as_ref().map(|s| s.span().start)),
        ("time", metric.time.as_ref().map(|s| s.span().start)),
        (
            "compare",
            metric.compare.as_ref().map(|_| metric.name.span().start),
        ),
        ("show", metric.show.map(|_| metric.name.span().start)),
        ("window", metric.window.as_ref().map(|s| s.span().start)),
        ("grains", metric.grains.as_ref().map(|s| s.span().start)),
        (
            "conversion",
            metric.conversion.as_ref().map(|s| s.span().start),
        ),
        ("entity", metric.entity.as_ref().map(|s| s.span().start)),
        (
            "calculation",
            metric.calculation.map(|_| metric.name.span().start),
        ),
        (
            "conversion_time",
            metric.conversion_time.as_ref().map(|s| s.span().start),
        ),
        (
            "period_agg",
            metric.period_agg.map(|_| metric.name.span().start),
        ),
    ];
    for (key, at) in set {
        if let Some(at) = at
            && !allowed.contains(&key)
        {
            let issue = c.texts.issue(
                f,
                Some(at),
                format!(
                    "metric \"{name}\" is {} and does not take `{key}` (it takes {})",
                    kind_phrase(kind),
                    allowed
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            c.issues.push(issue);
        }
    }
    let metric_names = || model.metrics.iter().map(|m| m.name.get_ref().as_str());
    match kind {
        MetricKind::Atomic => {
            let table_names = || model.tables.iter().map(|t| t.name.get_ref().as_str());
            match (&metric.table, metric.agg) {
                (Some(table), Some(agg)) => {
                    c.reference(f, "table", table, table_names());
                    if metric.expr.is_none() && agg != Aggregation::Count {
                        c.at(f, &metric.name, format!("metric \"{name}\" needs an expr for its aggregation"));
                    }
                    match (&metric.percentile, agg.takes_fraction()) {
                        (None, true) => c.at(f, &metric.name, format!("metric \"{name}\" needs `percentile`, the fraction of the ordered values (0.9 for the 90th percentile)")),
                        (Some(p), true) if !(0.0..=1.0).contains(p.get_ref()) => c.at(f, p, format!("metric \"{name}\": `percentile` must be between 0 and 1, not {}", p.get_ref())),
                        (Some(p), false) => c.at(f, p, format!("metric \"{name}\": `percentile` belongs to agg = \"percentile_cont\" or \"percentile_disc\"")),
                        _ => {}
                    }
                }
                _ => c.at(
                    f,
                    &metric.name,
                    format!("metric \"{name}\" needs `table` and `agg` (an atomic metric), `base` (derived, period-over-period or cumulative) or `formula` (composite)"),
                ),
            }
            if let Some(expr) = &metric.expr {
                c.expr(f, "expr", expr);
            }
            if let Some(semi) = &metric.semi_additive {
                c.reference(f, "time dimension", &semi.time, time_dimensions(model));
                let agg = metric.agg.unwrap_or(Aggregation::Sum);
                if semi.at == crate::model::Snapshot::Average && agg != Aggregation::Sum {
                    c.at(
                        f,
                        &semi.time,
                        format!(
                            "metric \"{name}\": a semi-additive average (at = \"average\") averages each day's sum; it needs agg = \"sum\""
                        ),
                    );
                }
                for per in &semi.per {
                    c.expr(f, "per", per);
                }
            }
            if let Some(filter) = &metric.filter {
                c.expr(f, "filter", filter);
            }
        }
        MetricKind::Derived => {
            if let Some(base) = &metric.base {
                c.reference(f, "metric", base, metric_names());
            }
            match &metric.filter {
                Some(filter) => c.expr(f, "filter", filter),
                None => c.at(f, &metric.name, format!("derived metric \"{name}\" needs a filter (the modifier that restricts its base metric)")),
            }
        }
        MetricKind::Composite => {
            if let Some(formula) = &metric.formula {
                c.expr(f, "formula", formula);
            }
        }
        MetricKind::Conversion => check_conversion(c, model, metric),
        MetricKind::PeriodOverPeriod | MetricKind::Cumulative => {
            match &metric.base {
                Some(base) => {
                    c.reference(f, "metric", base, metric_names());
                }
                None => c.at(
                    f,
                    &metric.name,
                    format!("metric \"{name}\" needs a `base` metric"),
                ),
            }
            match &metric.time {
                Some(time) => {
                    c.reference(f, "time dimension", time, time_dimensions(model));
                }
                None => c.at(f, &metric.name, format!("metric \"{name}\" needs `time`, the time dimension its periods are taken on")),
            }
            if let Some(window) = &metric.window
                && let Err(reason) = Window::parse(window.get_ref())
            {
                c.at(f, window, reason);
            }
            if kind == MetricKind::Cumulative
                && let Some(base) = &metric.base
                && let Some(p) = atomic_under(model, base.get_ref())
                    .filter(|m| m.agg.is_some_and(Aggregation::is_percentile))
                    .map(|m| m.name.get_ref())
            {
                c.at(
                    f,
                    base,
                    format!(
                        "metric \"{name}\" accumulates \"{p}\", a percentile: a running or to-date percentile needs every row of its window and is not supported (ask the percentile at the window's own grain)"
                    ),
                );
            }
            if let Some(base) = &metric.base
                && let Some(balance) = atomic_under(model, base.get_ref())
                && let Some(semi) = &balance.semi_additive
            {
                let b = balance.name.get_ref();
                let over = if kind == MetricKind::Cumulative {
                    Some("accumulates")
                } else {
                    // A comparison on the metric's own snapshot time is an earlier
                    // period's balance; on another time dimension it has no meaning.
                    metric
                        .time
                        .as_ref()
                        .filter(|t| t.get_ref() != semi.time.get_ref())
                        .map(|_| "compares on another time dimension")
                };
                if let Some(verb) = over {
                    c.at(
                        f,
                        base,
                        format!(
                            "metric \"{name}\" {verb} \"{b}\", a balance (semi-additive over time): a balance is taken at one day of each period and does not add up over days"
                        ),
                    );
                }
            }
            if let Some(grains) = &metric.grains {
                let known = [
                    "day",
                    "week",
                    "month",
                    "quarter",
                    "year",
                    "fiscal_quarter",
                    "fiscal_year",
                ];
                for g in grains.get_ref() {
                    if !known.contains(&g.as_str()) {
                        c.at(
                            f,
                            grains,
                            format!(
                                "unknown grain \"{g}\" in `grains` (one of {})",
                                known.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// The atomic metric `name` is, or is derived from (through `base` filters).
fn atomic_under<'m>(model: &'m Model, name: &'m str) -> Option<&'m Metric> {
    let mut at = name;
    for _ in 0..model.metrics.len() {
        let metric = model.metrics.iter().find(|m| m.name.get_ref() == at)?;
        match (metric.kind(), &metric.base) {
            (MetricKind::Atomic, _) => return Some(metric),
            (MetricKind::Derived, Some(base)) => at = base.get_ref(),
            _ => return None,
        }
    }
    None
}

/// A conversion metric names its base and conversion metrics, the entity dimension, the
/// time dimension, and a trailing window if any.
fn check_conversion(c: &mut Checker<'_>, model: &Model, metric: &Metric) {
    let f = metric.file;
    let name = metric.name.get_ref();
    let metric_names = || model.metrics.iter().map(|m| m.name.get_ref().as_str());
    for (key, value) in [("base", &metric.base), ("conversion", &metric.conversion)] {
        match value {
            Some(m) => {
                c.reference(f, "metric", m, metric_names());
                if let Some(b) = atomic_under(model, m.get_ref())
                    .filter(|a| a.semi_additive.is_some())
                    .map(|a| a.name.get_ref())
                {
                    c.at(
                        f,
                        m,
                        format!(
                            "conversion metric \"{name}\" counts events of \"{b}\", a balance (semi-additive over time); its {key} metric must add up over events"
                        ),
                    );
                }
            }
            None => c.at(
                f,
                &metric.name,
                format!(
                    "conversion metric \"{name}\" needs `{key}`, the metric of its {key} events"
                ),
            ),
        }
    }
    match &metric.entity {
        Some(entity) => {
            c.reference(
                f,
                "dimension",
                entity,
                model.dimensions.iter().map(|d| d.name.get_ref().as_str()),
            );
        }
        None => c.at(
            f,
            &metric.name,
            format!("conversion metric \"{name}\" needs `entity`, the dimension a base event and its conversion share"),
        ),
    }
    match &metric.time {
        Some(time) => {
            c.reference(f, "time dimension", time, time_dimensions(model));
        }
        None => c.at(
            f,
            &metric.name,
            format!(
                "conversion metric \"{name}\" needs `time`, the time dimension of its base events"
            ),
        ),
    }
    if let Some(time) = &metric.conversion_time {
        c.reference(f, "time dimension", time, time_dimensions(model));
    }
    for property in &metric.constant_properties {
        for dimension in std::iter::once(&property.base).chain(&property.conversion) {
            c.reference(
                f,
                "dimension",
                dimension,
                model.dimensions.iter().map(|d| d.name.get_ref().as_str()),
            );
        }
    }
    if let Some(window) = &metric.window {
        match Window::parse(window.get_ref()) {
            Ok(Window::Trailing(..)) => {}
            Ok(_) => c.at(
                f,
                window,
                "a conversion window is a length of time such as \"7 days\" or \"1 month\"",
            ),
            Err(reason) => c.at(f, window, reason),
        }
    }
}

/// The names of the model's time dimensions.
fn time_dimensions(model: &Model) -> impl Iterator<Item = &str> + Clone {
    model
        .dimensions
        .iter()
        .filter(|d| d.kind == DimensionKind::Time)
        .map(|d| d.name.get_ref().as_str())
}

fn kind_phrase(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Atomic => "atomic",
        MetricKind::Derived => "derived",
        MetricKind::Composite => "composite",
        MetricKind::PeriodOverPeriod => "a period-over-period metric",
        MetricKind::Cumulative => "cumulative",
        MetricKind::Conversion => "a conversion metric",
    }
}
