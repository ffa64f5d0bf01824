//! The block's expressions over its derived table: an aggregate around a metric is the
//! metric at the grain, an aggregate over dimensions becomes a column `__a<k>`, and each
//! metric compiles to the physical columns `__m<j>` it is computed from (composites
//! substitute their parts, period-over-period compares a shifted part, cumulative
//! metrics read a window part).

mod periods;

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Value, VisitorMut,
    visit_expressions_mut,
};

use super::{COLLAPSING, counts_rows, function_name, is_aggregate, refs};
use crate::bind::{BoundView, ColumnKind, Definition, Semantics};
use crate::error::{Error, Result};
use crate::model::{Aggregation, Calculation};
use crate::rewrite::derived::{Physical, Transform};

/// `COUNT(*)` (or `COUNT(<constant>)`) counts the rows of the view, as `SELECT *` returns
/// them: one per combination of its dimensions. It becomes the marker aggregate
/// [`crate::rewrite::derived::VIEW_ROWS`]`(<every dimension>)`, which the derived table computes by
/// grouping twice (see [`super::derived`]).
fn view_row_count(f: &datafusion::sql::sqlparser::ast::Function, view: &BoundView) -> Option<Expr> {
    if !counts_rows(&Expr::Function(f.clone())) {
        return None;
    }
    let dimensions: Vec<String> = view
        .columns
        .iter()
        .filter(|c| matches!(c.kind, ColumnKind::Dimension(_)))
        .map(|c| c.name.clone())
        .collect();
    if dimensions.is_empty() {
        return None;
    }
    crate::sql::parse_expr(&format!(
        "{}({})",
        crate::rewrite::derived::VIEW_ROWS,
        dimensions.join(", ")
    ))
}

/// Turn block expressions into expressions over the derived table.
pub(super) struct Outer<'a> {
    pub(super) view: &'a BoundView,
    pub(super) semantics: &'a Semantics,
    pub(super) grain: &'a [Expr],
    /// The derived table's metric columns `__m<j>`.
    pub(super) metrics: Vec<Physical>,
    /// The model metrics the block names.
    pub(super) named: Vec<String>,
    pub(super) aggregates: Vec<Expr>,
    pub(super) output_names: Option<&'a HashSet<String>>,
    pub(super) error: Option<Error>,
}

fn column(name: String) -> Expr {
    Expr::Identifier(Ident::with_quote('"', name))
}

impl Outer<'_> {
    /// An aggregate call: around a metric it is the metric at the grain; over dimensions
    /// it becomes an `__a<k>` column of the derived table.
    fn aggregate(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let Expr::Function(f) = &*expr else {
            return ControlFlow::Continue(());
        };
        let name = function_name(f);
        if refs(expr, self.view).metrics {
            let single = match &f.args {
                FunctionArguments::List(list) if list.args.len() == 1 => match &list.args[0] {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                },
                _ => None,
            };
            let conditional = single
                .as_ref()
                .filter(|_| COLLAPSING.contains(&name.as_str()))
                .and_then(|arg| conditional(arg, f.filter.as_deref(), self.view));
            match single {
                _ if conditional.is_some() => {
                    if let Some(c) = conditional {
                        match self.under_condition(c) {
                            Ok(e) => *expr = e,
                            Err(e) => {
                                self.error = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
                Some(arg) if COLLAPSING.contains(&name.as_str()) && f.filter.is_none() => {
                    *expr = Expr::Nested(Box::new(arg));
                }
                _ => {
                    self.error = Some(Error::unsupported(
                        format!("{name}() over a metric is not supported"),
                        Some(
                            "a metric is already aggregated at the query's grain: select it directly, or wrap it in SUM/MIN/MAX/AVG"
                                .to_string(),
                        ),
                    ));
                    return ControlFlow::Break(());
                }
            }
        } else {
            if let Some(rows) = view_row_count(f, self.view) {
                *expr = rows;
            }
            let k = match self.aggregates.iter().position(|a| a == expr) {
                Some(k) => k,
                None => {
                    self.aggregates.push(expr.clone());
                    self.aggregates.len() - 1
                }
            };
            *expr = column(format!("__a{k}"));
        }
        ControlFlow::Continue(())
    }
}

/// An aggregate that restricts the metrics it wraps to rows meeting a condition on
/// dimensions, as a BI tool's calculated field writes it: `SUM(CASE WHEN <condition> THEN
/// <metrics> [ELSE 0] END)` or `SUM(<metrics>) FILTER (WHERE <condition>)`.
struct Conditional {
    condition: Expr,
    value: Expr,
    /// `ELSE 0`: no row meeting the condition is 0, not NULL.
    else_zero: bool,
}

/// The condition and value of `arg` (an aggregate's one argument, with its FILTER), when
/// the condition reads dimensions only and the value metrics only.
fn conditional(arg: &Expr, filter: Option<&Expr>, view: &BoundView) -> Option<Conditional> {
    let dimensions_only = |e: &Expr| {
        let r = refs(e, view);
        !r.metrics && !super::contains_aggregate(e)
    };
    let metrics_only = |e: &Expr| {
        let r = refs(e, view);
        r.metrics && !r.dimensions
    };
    if let Some(condition) = filter {
        return (dimensions_only(condition) && metrics_only(arg)).then(|| Conditional {
            condition: condition.clone(),
            value: arg.clone(),
            else_zero: false,
        });
    }
    let Expr::Case {
        operand: None,
        conditions,
        else_result,
        ..
    } = arg
    else {
        return None;
    };
    let [when] = conditions.as_slice() else {
        return None;
    };
    let else_zero = match else_result.as_deref() {
        None => false,
        Some(Expr::Value(v)) => match &v.value {
            Value::Null => false,
            Value::Number(n, _) if n.parse::<f64>().is_ok_and(|x| x == 0.0) => true,
            _ => return None,
        },
        Some(_) => return None,
    };
    (dimensions_only(&when.condition) && metrics_only(&when.result)).then(|| Conditional {
        condition: when.condition.clone(),
        value: when.result.clone(),
        else_zero,
    })
}

impl Outer<'_> {
    /// The metrics of `c.value` computed over the rows meeting `c.condition` only, at the
    /// block's grain: each group has one such value, so SUM, MIN, MAX and AVG of it over
    /// the group (what the query asks) are that value.
    fn under_condition(&mut self, c: Conditional) -> Result<Expr> {
        let transform = Transform::Where {
            condition: Box::new(c.condition),
        };
        let mut value = c.value;
        let mut error = None;
        let _ = visit_expressions_mut(&mut value, |e| {
            if let Expr::Identifier(ident) = e
                && ident.quote_style.is_none()
                && let Some(ColumnKind::Metric(m)) = self.view.column(&ident.value).map(|c| &c.kind)
            {
                let m = m.clone();
                if !self.named.contains(&m) {
                    self.named.push(m.clone());
                }
                match self.metric(&m, &transform) {
                    Ok(part) => *e = part,
                    Err(err) => {
                        error = Some(err);
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = error {
            return Err(e);
        }
        let value = Expr::Nested(Box::new(value));
        if !c.else_zero {
            return Ok(value);
        }
        crate::sql::parse_expr(&format!("coalesce({value}, 0)"))
            .ok_or_else(|| Error::Internal(format!("generated expression coalesce({value}, 0)")))
    }
}

impl Outer<'_> {
    /// The expression over the derived table's columns that computes metric `name`
    /// under `transform`.
    fn metric(&mut self, name: &str, transform: &Transform) -> Result<Expr> {
        let value = self.metric_value(name, transform)?;
        match self.semantics.metrics.get(name).and_then(|m| m.fill) {
            None => Ok(value),
            Some(fill) => Ok(coalesce(value, fill)),
        }
    }

    /// The metric's value, NULL where it has none (see [`Outer::metric`] for the fill).
    fn metric_value(&mut self, name: &str, transform: &Transform) -> Result<Expr> {
        let Some(metric) = self.semantics.metrics.get(name) else {
            return Err(Error::Internal(format!("metric {name} is not bound")));
        };
        if matches!(transform, Transform::Where { .. }) && !under_condition_ok(metric) {
            return Err(Error::unsupported(
                format!(
                    "metric \"{name}\" compares periods, accumulates them or divides by a total: a condition inside an aggregate of it is not supported"
                ),
                Some("filter the query with WHERE instead, or define a derived metric with that filter".into()),
            ));
        }
        match &metric.definition {
            Definition::Aggregate(_) => {
                let physical = Physical {
                    metric: name.to_string(),
                    transform: transform.clone(),
                };
                let j = match self.metrics.iter().position(|x| *x == physical) {
                    Some(j) => j,
                    None => {
                        self.metrics.push(physical);
                        self.metrics.len() - 1
                    }
                };
                Ok(column(format!("__m{j}")))
            }
            Definition::Composite { formula, .. } => {
                let mut formula = formula.clone();
                let mut error = None;
                let _ = visit_expressions_mut(&mut formula, |e| {
                    if let Expr::Identifier(ident) = e
                        && let Some(of) = ident.value.strip_prefix(crate::bind::TOTAL_PREFIX)
                        && ident.quote_style.is_some()
                    {
                        let of = of.to_string();
                        // The rows of the answer come from the metric at the grain.
                        let plain = self.metric(&of, transform);
                        match plain.and_then(|_| self.metric(&of, &Transform::Total)) {
                            Ok(part) => *e = Expr::Nested(Box::new(part)),
                            Err(err) => {
                                error = Some(err);
                                return ControlFlow::Break(());
                            }
                        }
                    } else if let Expr::Identifier(ident) = e
                        && ident.quote_style.is_none()
                    {
                        match self.metric(&ident.value, transform) {
                            Ok(part) => *e = Expr::Nested(Box::new(part)),
                            Err(err) => {
                                error = Some(err);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    ControlFlow::Continue(())
                });
                match error {
                    Some(e) => Err(e),
                    None => Ok(Expr::Nested(formula)),
                }
            }
            Definition::PeriodOverPeriod {
                base,
                time,
                compare,
                show,
            } => self.period_over_period(name, transform, base, time, compare, *show),
            Definition::Conversion(c) => {
                if *transform != Transform::Plain {
                    return Err(Error::unsupported(
                        format!(
                            "conversion metric \"{name}\" cannot be compared with another period or a total"
                        ),
                        Some(format!("select \"{name}\" by itself")),
                    ));
                }
                // The base metric is always computed: its groups are the rows.
                let base = self.metric(&c.base, transform)?;
                let conversions = self.metric(
                    &c.conversion,
                    &Transform::Conversion {
                        base: c.base.clone(),
                        entity: c.entity.clone(),
                        time: c.time.clone(),
                        conversion_time: c.conversion_time.clone(),
                        window: c.window,
                        constant: c.constant.clone(),
                    },
                )?;
                let counts = self
                    .semantics
                    .metrics
                    .get(&c.conversion)
                    .and_then(|m| m.aggregate())
                    .is_some_and(|a| {
                        matches!(a.agg, Aggregation::Count | Aggregation::CountDistinct)
                    });
                // No credited event: none converted (a count is 0).
                let conversions = if counts {
                    format!("coalesce({conversions}, 0)")
                } else {
                    conversions.to_string()
                };
                let sql = match c.calculation {
                    Calculation::Conversions => conversions,
                    Calculation::ConversionRate => format!(
                        "CAST({conversions} AS DOUBLE PRECISION) / CAST(NULLIF({base}, 0) AS DOUBLE PRECISION)"
                    ),
                };
                crate::sql::parse_expr(&sql)
                    .map(|e| Expr::Nested(Box::new(e)))
                    .ok_or_else(|| Error::Internal(format!("generated expression {sql}")))
            }
            Definition::Cumulative {
                base,
                time,
                window,
                day,
            } => self.cumulative(name, transform, base, time, *window, *day),
        }
    }
}

impl VisitorMut for Outer<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(i) = self.grain.iter().position(|g| g == expr) {
            *expr = column(format!("__g{i}"));
            return ControlFlow::Continue(());
        }
        if is_aggregate(expr) {
            return self.aggregate(expr);
        }
        match expr {
            Expr::Identifier(ident) if ident.quote_style.is_none() => {
                let name = ident.value.clone();
                match self.view.column(&name).map(|c| &c.kind) {
                    Some(ColumnKind::Metric(m)) => {
                        let m = m.clone();
                        if !self.named.contains(&m) {
                            self.named.push(m.clone());
                        }
                        match self.metric(&m, &Transform::Plain) {
                            Ok(e) => *expr = e,
                            Err(e) => {
                                self.error = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    Some(_) if self.output_names.is_some_and(|o| o.contains(&name)) => {}
                    Some(_) => {
                        self.error = Some(Error::Grouping {
                            message: format!(
                                "column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"
                            ),
                            hint: Some(format!(
                                "add \"{name}\" to the select list (or GROUP BY) to break metrics down by it"
                            )),
                        });
                        return ControlFlow::Break(());
                    }
                    None => {}
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Whether metric `m` can be computed over the rows meeting a condition by computing its
/// parts so: an aggregate, or a formula over such metrics without `total()`.
fn under_condition_ok(m: &crate::bind::BoundMetric) -> bool {
    match &m.definition {
        Definition::Aggregate(_) => true,
        Definition::Composite { formula, .. } => {
            !crate::rewrite::additivity::mentions_total(formula)
        }
        _ => false,
    }
}

/// `coalesce(value, fill)`: a metric's `fill_nulls_with`, a whole number written as one.
fn coalesce(value: Expr, fill: f64) -> Expr {
    let literal = if fill.fract() == 0.0 && fill.abs() < 1e15 {
        format!("{}", fill as i64)
    } else {
        format!("{fill:?}")
    };
    let fill = Expr::value(datafusion::sql::sqlparser::ast::Value::Number(
        literal, false,
    ));
    Expr::Function(crate::sql::call("coalesce", vec![value, fill]))
}
