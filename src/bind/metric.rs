//! Binding one metric: its definition (an aggregate over a table, a formula over other
//! metrics, a period-over-period or cumulative metric over a base), after the metrics it
//! is defined from, with cycles and unknown references reported at their position.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Ident, visit_expressions_mut};
use toml::Spanned;

use super::{
    AggregateDef, Binder, BoundDimension, BoundMetric, Definition, SemiAdditiveDef, TOTAL_PREFIX,
    parse_expr,
};
use crate::error::did_you_mean;
use crate::model::{Aggregation, Compare, Metric, MetricKind, Window};

/// Bind `metric` (and, first, the metrics it is defined from) into `bound`. `stack`
/// holds the metrics being bound, to report cycles. Problems go to the binder's issues.
pub(super) fn bind_metric(
    b: &mut Binder<'_>,
    metric: &Metric,
    dimensions: &HashMap<String, BoundDimension>,
    bound: &mut HashMap<String, BoundMetric>,
    stack: &mut Vec<String>,
) -> Option<()> {
    let name = metric.name.get_ref().clone();
    if bound.contains_key(&name) {
        return Some(());
    }
    if b.failed_metrics.contains(&name) {
        return None;
    }
    if stack.contains(&name) {
        let mut cycle = stack.clone();
        cycle.push(name.clone());
        b.issue(
            metric.file,
            &metric.name,
            format!(
                "metric \"{name}\" is defined from itself: {}",
                cycle.join(" → ")
            ),
        );
        return None;
    }
    stack.push(name.clone());
    let result = bind_metric_inner(b, metric, dimensions, bound, stack);
    stack.pop();
    let Some((definition, time)) = result else {
        b.failed_metrics.insert(name);
        return None;
    };
    bound.insert(
        name.clone(),
        BoundMetric {
            name,
            kind: metric.kind(),
            definition,
            time,
            label: metric.label.clone(),
            description: metric.description.clone(),
            status: metric.status,
            fill: metric.fill_nulls_with.as_ref().map(|f| *f.get_ref()),
        },
    );
    Some(())
}

/// Bind the metric named by `reference` (a `base` or a name in a formula).
fn bind_reference<'m>(
    b: &mut Binder<'_>,
    file: usize,
    reference: &Spanned<String>,
    dimensions: &HashMap<String, BoundDimension>,
    bound: &'m mut HashMap<String, BoundMetric>,
    stack: &mut Vec<String>,
) -> Option<&'m BoundMetric> {
    let model = b.model;
    let Some(target) = model.metric(reference.get_ref()) else {
        let hint = did_you_mean(
            reference.get_ref(),
            model.metrics.iter().map(|m| m.name.get_ref().as_str()),
        )
        .map(|h| format!("; {h}"))
        .unwrap_or_default();
        b.issue(
            file,
            reference,
            format!("unknown metric \"{}\"{hint}", reference.get_ref()),
        );
        return None;
    };
    // A problem in the target is reported where the target is defined.
    bind_metric(b, target, dimensions, bound, stack)?;
    bound.get(reference.get_ref())
}

fn bind_metric_inner(
    b: &mut Binder<'_>,
    metric: &Metric,
    dimensions: &HashMap<String, BoundDimension>,
    bound: &mut HashMap<String, BoundMetric>,
    stack: &mut Vec<String>,
) -> Option<(Definition, Option<String>)> {
    let file = metric.file;
    let name = metric.name.get_ref();
    match metric.kind() {
        MetricKind::Atomic => {
            let (table, agg) = (metric.table.as_ref()?, metric.agg?);
            let table = table.get_ref();
            let expr = metric
                .expr
                .as_ref()
                .map(|e| b.bind(file, e, table, Some(dimensions)));
            let filter = metric
                .filter
                .as_ref()
                .map(|f| b.bind(file, f, table, Some(dimensions)));
            if matches!(expr, Some(None)) || matches!(filter, Some(None)) {
                return None;
            }
            let (expr, filter) = (expr.flatten(), filter.flatten());
            let mut tables = BTreeSet::from([table.clone()]);
            for e in expr.iter().chain(filter.iter()) {
                tables.extend(e.tables.iter().cloned());
            }
            let semi_additive = match &metric.semi_additive {
                None => None,
                Some(semi) => {
                    // A dimension the table carries in its own columns is read there.
                    let model = b.model;
                    let carried = |name: &Spanned<String>| {
                        model.table(table).and_then(|t| {
                            t.dimensions
                                .get(name.get_ref())
                                .map(|expr| (t.file_index, expr))
                        })
                    };
                    let bind_name = |b: &mut Binder<'_>, name: &Spanned<String>| match carried(name)
                    {
                        Some((table_file, expr)) => b.bind(table_file, expr, table, None),
                        None => b.bind(file, name, table, Some(dimensions)),
                    };
                    let time = bind_name(b, &semi.time)?;
                    let mut per = Vec::new();
                    for p in &semi.per {
                        let bound = bind_name(b, p)?;
                        tables.extend(bound.tables.iter().cloned());
                        per.push(bound.expr);
                    }
                    tables.extend(time.tables.iter().cloned());
                    Some(SemiAdditiveDef {
                        dimension: semi.time.get_ref().clone(),
                        time: time.expr,
                        at: semi.at,
                        per,
                    })
                }
            };
            Some((
                Definition::Aggregate(Box::new(AggregateDef {
                    table: table.clone(),
                    agg,
                    expr: expr.map(|e| e.expr),
                    filter: filter.map(|e| e.expr),
                    tables,
                    fraction: match agg {
                        Aggregation::Median => Some(0.5),
                        _ => metric.percentile.as_ref().map(|p| *p.get_ref()),
                    },
                    semi_additive,
                })),
                None,
            ))
        }
        MetricKind::Derived => {
            let base_name = metric.base.as_ref()?;
            let base = bind_reference(b, file, base_name, dimensions, bound, stack)?.clone();
            let Some(base_def) = base.aggregate() else {
                b.issue(
                    file,
                    base_name,
                    format!(
                        "derived metric \"{name}\" restricts \"{}\", which is {}: a derived metric's base must be atomic or derived (restrict the parts of a formula instead)",
                        base.name,
                        base.kind.as_str()
                    ),
                );
                return None;
            };
            let own = b.bind(
                file,
                metric.filter.as_ref()?,
                &base_def.table,
                Some(dimensions),
            )?;
            let mut def = base_def.clone();
            def.tables.extend(own.tables.iter().cloned());
            def.filter = Some(match def.filter.take() {
                Some(f) => Expr::BinaryOp {
                    left: Box::new(Expr::Nested(Box::new(f))),
                    op: datafusion::sql::sqlparser::ast::BinaryOperator::And,
                    right: Box::new(Expr::Nested(Box::new(own.expr))),
                },
                None => own.expr,
            });
            Some((Definition::Aggregate(Box::new(def)), None))
        }
        MetricKind::Composite => {
            let text = metric.formula.as_ref()?;
            let mut formula = match parse_expr(text.get_ref()) {
                Ok(e) => e,
                Err(e) => {
                    b.issue(file, text, format!("not a valid SQL expression: {e}"));
                    return None;
                }
            };
            let mut names = Vec::new();
            let mut problems = Vec::new();
            // `total(m)`: metric m over all the rows the query selects, ignoring its grain
            // (shares of total). Kept as the quoted identifier "__total__m".
            let _ = visit_expressions_mut(&mut formula, |e| {
                if let Expr::Function(f) = e
                    && f.name.to_string().eq_ignore_ascii_case("total")
                {
                    let arg = match &f.args {
                        datafusion::sql::sqlparser::ast::FunctionArguments::List(list)
                            if list.args.len() == 1 =>
                        {
                            match &list.args[0] {
                                datafusion::sql::sqlparser::ast::FunctionArg::Unnamed(
                                    datafusion::sql::sqlparser::ast::FunctionArgExpr::Expr(
                                        Expr::Identifier(id),
                                    ),
                                ) => Some(id.value.clone()),
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    match arg {
                        Some(m) => {
                            names.push(m.clone());
                            *e = Expr::Identifier(Ident::with_quote(
                                '"',
                                format!("{TOTAL_PREFIX}{m}"),
                            ));
                        }
                        None => problems.push(format!("\"{e}\": total() takes one metric name")),
                    }
                }
                ControlFlow::<()>::Continue(())
            });
            let _ = visit_expressions_mut(&mut formula, |e| {
                match e {
                    Expr::Identifier(ident) if ident.quote_style.is_none() => {
                        names.push(ident.value.clone())
                    }
                    Expr::CompoundIdentifier(_) => problems.push(format!(
                        "\"{e}\": a formula names metrics, not table columns"
                    )),
                    Expr::Function(f) if crate::sql::is_aggregate_call(&Expr::Function(f.clone())) => {
                        problems.push(format!(
                            "\"{e}\": a formula combines metrics, which are already aggregated; aggregate functions belong in atomic metrics"
                        ))
                    }
                    Expr::BinaryOp {
                        op: datafusion::sql::sqlparser::ast::BinaryOperator::Divide,
                        right,
                        ..
                    } => {
                        let divisor = std::mem::replace(right.as_mut(), Expr::value(datafusion::sql::sqlparser::ast::Value::Null));
                        if let Ok(wrapped) = parse_expr(&format!(
                            "CAST(NULLIF({divisor}, 0) AS DOUBLE PRECISION)"
                        )) {
                            **right = wrapped;
                        } else {
                            **right = divisor;
                        }
                    }
                    _ => {}
                }
                ControlFlow::<()>::Continue(())
            });
            for p in problems {
                b.issue(file, text, p);
            }
            let mut refs = BTreeSet::new();
            let mut time = None;
            for n in names {
                let reference = Spanned::new(text.span(), n.clone());
                if b.model.metric(&n).is_none() {
                    let hint = did_you_mean(
                        &n,
                        b.model.metrics.iter().map(|m| m.name.get_ref().as_str()),
                    )
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                    b.issue(
                        file,
                        text,
                        format!("formula of \"{name}\" names \"{n}\", which is not a metric{hint}"),
                    );
                    continue;
                }
                let target = bind_reference(b, file, &reference, dimensions, bound, stack)?;
                if time.is_none() {
                    time = target.time.clone();
                }
                refs.insert(n);
            }
            Some((
                Definition::Composite {
                    formula: Box::new(formula),
                    refs,
                },
                time,
            ))
        }
        MetricKind::Conversion => {
            let mut names = Vec::new();
            for reference in [metric.base.as_ref()?, metric.conversion.as_ref()?] {
                let target = bind_reference(b, file, reference, dimensions, bound, stack)?;
                if target.aggregate().is_none() {
                    b.issue(
                        file,
                        reference,
                        format!(
                            "conversion metric \"{name}\" counts events of \"{}\", which is {}: the base and conversion metrics must be atomic or derived",
                            target.name,
                            target.kind.as_str()
                        ),
                    );
                    return None;
                }
                names.push(target.name.clone());
            }
            let window = match metric.window.as_ref().map(|w| Window::parse(w.get_ref())) {
                None => None,
                Some(Ok(Window::Trailing(n, g))) => Some((n, g)),
                Some(_) => return None,
            };
            let conversion = names.pop()?;
            let base = names.pop()?;
            Some((
                Definition::Conversion(Box::new(super::ConversionDef {
                    base,
                    conversion,
                    entity: metric.entity.as_ref()?.get_ref().clone(),
                    time: metric.time.as_ref()?.get_ref().clone(),
                    conversion_time: metric
                        .conversion_time
                        .as_ref()
                        .or(metric.time.as_ref())?
                        .get_ref()
                        .clone(),
                    window,
                    calculation: metric.calculation.unwrap_or_default(),
                    constant: metric
                        .constant_properties
                        .iter()
                        .map(|p| {
                            let base = p.base.get_ref().clone();
                            let conversion = p
                                .conversion
                                .as_ref()
                                .map_or(base.clone(), |c| c.get_ref().clone());
                            (base, conversion)
                        })
                        .collect(),
                })),
                None,
            ))
        }
        MetricKind::PeriodOverPeriod | MetricKind::Cumulative => {
            let base_name = metric.base.as_ref()?;
            let time = metric.time.as_ref()?.get_ref().clone();
            let base = bind_reference(b, file, base_name, dimensions, bound, stack)?;
            if base.kind == MetricKind::Conversion {
                b.issue(
                    file,
                    base_name,
                    format!(
                        "metric \"{name}\" is defined from \"{}\", a conversion metric, which is computed at the query's grain only; base it on an atomic, derived or composite metric",
                        base.name
                    ),
                );
                return None;
            }
            // A comparison of a cumulative metric over its own time dimension (this
            // year's to-date against last year's to the same day, the running total on
            // the first day of the month) is the window of the earlier period; other
            // combinations of periods are not defined.
            let compared_window = metric.kind() == MetricKind::PeriodOverPeriod
                && base.kind == MetricKind::Cumulative
                && base.time.as_deref() == Some(time.as_str())
                && metric.compare != Some(Compare::Aligned);
            if !compared_window
                && (matches!(
                    base.kind,
                    MetricKind::PeriodOverPeriod | MetricKind::Cumulative
                ) || base.time.is_some())
            {
                b.issue(
                    file,
                    base_name,
                    format!(
                        "metric \"{name}\" is defined from \"{}\", which already depends on periods of time; base it on an atomic, derived or composite metric",
                        base.name
                    ),
                );
                return None;
            }
            let base = base.name.clone();
            let calendar = dimensions.get(&time).and_then(|d| d.calendar.as_ref());
            if metric.compare == Some(Compare::Aligned)
                && calendar.is_none_or(|c| c.aligned.is_none())
            {
                b.issue(
                    file,
                    metric.time.as_ref()?,
                    format!(
                        "metric \"{name}\" compares with aligned days, and time dimension \"{time}\" has no calendar with aligned days: add calendar = {{ table = \"...\", aligned = \"...\" }} to the dimension"
                    ),
                );
                return None;
            }
            if let Some(Compare::CalendarPeriods(_, grain)) = &metric.compare
                && !calendar.is_some_and(|c| c.grains.contains(grain))
            {
                b.issue(
                    file,
                    metric.time.as_ref()?,
                    format!(
                        "metric \"{name}\" compares with earlier \"{grain}\" periods, and \"{grain}\" is no grain of time dimension \"{time}\": compare takes day, week, month, quarter, year, or a grain of the dimension's calendar (calendar = {{ table = \"...\", grains = [\"{grain}\"] }})"
                    ),
                );
                return None;
            }
            let definition = match (metric.compare.clone(), &metric.window) {
                (Some(compare), _) => Definition::PeriodOverPeriod {
                    base,
                    time: time.clone(),
                    compare,
                    show: metric.show.unwrap_or_default(),
                },
                (None, Some(window)) => Definition::Cumulative {
                    base,
                    time: time.clone(),
                    window: Window::parse(window.get_ref()).ok()?,
                    day: metric.period_agg,
                },
                (None, None) => return None,
            };
            Some((definition, Some(time)))
        }
    }
}
