//! What a rewritten block holds, column by column, and the refusal of sums that cannot
//! mean anything.
//!
//! A block over a view that fixes its own grain (it groups, limits, filters on a metric)
//! returns one row per group; a query over it is literal SQL over those rows. Summing a
//! non-additive metric (a distinct count, an average, a ratio, a growth rate, a to-date or
//! trailing value) over rows that are finer than the outer grouping never gives a
//! meaningful number, so it is refused with 0A000 naming the metric and the reason
//! ([`check_sums`]). MIN, MAX, AVG and COUNT over such rows, and sums of additive metrics,
//! are answered literally.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, OrderBy,
    OrderByKind, Select, SelectItem, UnaryOperator, Value, Visit, Visitor,
};

use super::normalize;
use crate::bind::{BoundView, ColumnKind, Definition, Semantics, TOTAL_PREFIX};
use crate::model::{Aggregation, Show, Window};

/// What a block's result holds, column by column.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Output columns in order: name and what the column holds.
    pub columns: Vec<(String, Holds)>,
    /// The block groups by an expression it does not return, so its rows are finer than
    /// its columns show.
    pub hidden_grain: bool,
}

/// What one result column holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Holds {
    /// A grain expression: the rows are one per value (with the other grain columns).
    Grain,
    /// A metric, or an expression over metrics, at the block's grain.
    Metric {
        /// The metric named.
        metric: String,
        /// Why a sum of it over several rows means nothing; None when it adds up.
        non_additive: Option<String>,
    },
    /// Anything else.
    Other,
}

impl Shape {
    /// The shape of a block over `view` whose items (output name, canonical expression)
    /// are grouped by `grain`.
    pub fn of_block(
        items: &[(String, Expr)],
        grain: &[Expr],
        view: &BoundView,
        semantics: &Semantics,
    ) -> Shape {
        let columns = items
            .iter()
            .map(|(name, expr)| {
                let holds = if grain.contains(expr) {
                    Holds::Grain
                } else if let Some(metric) = first_metric(expr, view) {
                    Holds::Metric {
                        metric,
                        non_additive: expression_additivity(expr, view, semantics),
                    }
                } else {
                    Holds::Other
                };
                (
                    crate::sql::naming::output_column_name(name).to_string(),
                    holds,
                )
            })
            .collect();
        Shape {
            columns,
            hidden_grain: grain.iter().any(|g| !items.iter().any(|(_, e)| e == g)),
        }
    }

    /// The shape of `left UNION right`: a sum over its rows adds rows of both branches.
    pub fn union(left: Option<Shape>, right: Option<Shape>) -> Option<Shape> {
        let (left, right) = (left?, right?);
        let columns = left
            .columns
            .into_iter()
            .zip(right.columns)
            .map(|((name, a), (_, b))| {
                let holds = match (a, b) {
                    (
                        m @ Holds::Metric {
                            non_additive: Some(_),
                            ..
                        },
                        _,
                    ) => m,
                    (
                        _,
                        m @ Holds::Metric {
                            non_additive: Some(_),
                            ..
                        },
                    ) => m,
                    (a, _) => a,
                };
                (name, holds)
            })
            .collect();
        Some(Shape {
            columns,
            hidden_grain: true,
        })
    }

    fn column(&self, name: &str) -> Option<&Holds> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, h)| h)
    }

    /// The grain columns.
    fn grain(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|(_, h)| *h == Holds::Grain)
            .map(|(n, _)| n.as_str())
    }
}

/// A relation of a block that has a known shape, by the name the block uses for it.
#[derive(Debug, Clone)]
pub struct Source {
    /// The name the block refers to it by (its alias).
    pub name: String,
    /// What it holds.
    pub shape: Shape,
}

/// The shape of a block that only projects its one relation `source` (plain column
/// references keep what they hold).
pub fn projected(select: &Select, source: &Source) -> Option<Shape> {
    if !super::grain::is_projection(select) {
        return None;
    }
    let mut columns = Vec::new();
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                columns.extend(source.shape.columns.iter().cloned());
            }
            SelectItem::UnnamedExpr(e) => {
                let holds = column_of(e, std::slice::from_ref(source))
                    .and_then(|(s, c)| s.shape.column(&c).cloned())
                    .unwrap_or(Holds::Other);
                columns.push((crate::sql::output_name(e), holds));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let holds = column_of(expr, std::slice::from_ref(source))
                    .and_then(|(s, c)| s.shape.column(&c).cloned())
                    .unwrap_or(Holds::Other);
                columns.push((
                    crate::sql::naming::output_column_name(&normalize(alias)).to_string(),
                    holds,
                ));
            }
            SelectItem::ExprWithAliases { .. } => return None,
        }
    }
    let shown: HashSet<&str> = columns
        .iter()
        .filter(|(_, h)| *h == Holds::Grain)
        .map(|(n, _)| n.as_str())
        .collect();
    let hidden = source.shape.hidden_grain || source.shape.grain().any(|g| !shown.contains(g));
    Some(Shape {
        columns,
        hidden_grain: hidden,
    })
}

/// Refuse `SUM` of a non-additive metric column of one of `sources` over rows finer than
/// the block's grouping (see the module docs).
pub fn check_sums(
    select: &Select,
    order_by: Option<&OrderBy>,
    sources: &[Source],
) -> crate::error::Result<()> {
    if sources.is_empty() {
        return Ok(());
    }
    let grouped = grouped_columns(select, sources);
    let mut found: Vec<(&Source, String, &'static str)> = Vec::new();
    let mut sums = |e: &Expr| {
        found.extend(summed_columns(e, sources));
        ControlFlow::Continue(())
    };
    for item in &select.projection {
        crate::sql::visit_block_exprs(item, &mut sums);
    }
    crate::sql::visit_block_exprs(&select.having, &mut sums);
    if let Some(ob) = order_by
        && let OrderByKind::Expressions(exprs) = &ob.kind
    {
        for e in exprs {
            crate::sql::visit_block_exprs(&e.expr, &mut sums);
        }
    }
    for (source, column, function) in found {
        let Some(Holds::Metric {
            metric,
            non_additive: Some(reason),
        }) = source.shape.column(&column)
        else {
            continue;
        };
        let covered = !source.shape.hidden_grain
            && source
                .shape
                .grain()
                .all(|g| grouped.contains(&(source.name.clone(), g.to_string())));
        if covered {
            continue;
        }
        return Err(crate::error::Error::unsupported(
            format!(
                "cannot {function} metric \"{metric}\" over the rows of \"{}\", which has a finer grain than this query: {reason}",
                source.name
            ),
            Some(format!(
                "ask for \"{metric}\" at the grain you want in the query that reads the view (a subquery that does not group passes the outer grouping through); MIN, MAX and AVG over the subquery's rows are answered as written"
            )),
        ));
    }
    Ok(())
}

/// The `(source, column)` pairs the block groups by: plain column references in its
/// GROUP BY (positions and output names resolved), outside any ROLLUP/CUBE/GROUPING SETS.
fn grouped_columns(select: &Select, sources: &[Source]) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return out;
    };
    let item = |e: &Expr| -> Option<Expr> {
        let projection = |position: usize| match select.projection.get(position.wrapping_sub(1)) {
            Some(SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) => {
                Some(e.clone())
            }
            _ => None,
        };
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse().ok().and_then(projection),
                _ => None,
            },
            Expr::Identifier(id) => {
                let name = normalize(id);
                let is_source_column = sources.iter().any(|s| s.shape.column(&name).is_some());
                if is_source_column {
                    return Some(e.clone());
                }
                select.projection.iter().find_map(|item| match item {
                    SelectItem::ExprWithAlias { expr, alias } if normalize(alias) == name => {
                        Some(expr.clone())
                    }
                    _ => None,
                })
            }
            other => Some(other.clone()),
        }
    };
    for e in exprs {
        if let Some(e) = item(e)
            && let Some((source, column)) = column_of(&e, sources)
        {
            out.insert((source.name.clone(), column));
        }
    }
    out
}

/// The source column `expr` is (through parentheses and casts), if it is one.
fn column_of<'s>(expr: &Expr, sources: &'s [Source]) -> Option<(&'s Source, String)> {
    match expr {
        Expr::Nested(inner) => column_of(inner, sources),
        Expr::Cast { expr, .. } => column_of(expr, sources),
        Expr::Identifier(id) => {
            let name = normalize(id);
            let mut having = sources.iter().filter(|s| s.shape.column(&name).is_some());
            match (having.next(), having.next()) {
                (Some(s), None) => Some((s, name)),
                _ => None,
            }
        }
        Expr::CompoundIdentifier(parts) => {
            let names: Vec<String> = parts.iter().map(normalize).collect();
            let [.., table, column] = names.as_slice() else {
                return None;
            };
            sources
                .iter()
                .find(|s| s.name == *table)
                .filter(|s| s.shape.column(column).is_some())
                .map(|s| (s, column.clone()))
        }
        _ => None,
    }
}

/// The source columns the argument of `expr` reads, when it is a `SUM(...)` (not
/// windowed).
fn summed_columns<'s>(
    expr: &Expr,
    sources: &'s [Source],
) -> Vec<(&'s Source, String, &'static str)> {
    let Expr::Function(f) = expr else {
        return Vec::new();
    };
    if f.over.is_some() || crate::sql::last_name(&f.name) != "sum" {
        return Vec::new();
    }
    let FunctionArguments::List(list) = &f.args else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for arg in &list.args {
        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg {
            let mut columns = Vec::new();
            collect_columns(e, sources, &mut columns);
            out.extend(columns.into_iter().map(|(s, c)| (s, c, "SUM")));
        }
    }
    out
}

fn collect_columns<'s>(expr: &Expr, sources: &'s [Source], out: &mut Vec<(&'s Source, String)>) {
    struct V<'s, 'o> {
        sources: &'s [Source],
        out: &'o mut Vec<(&'s Source, String)>,
    }
    impl<'s> Visitor for V<'s, '_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
                && let Some(found) = column_of(expr, self.sources)
            {
                self.out.push(found);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = expr.visit(&mut V { sources, out });
}

/// The first metric column `expr` names.
fn first_metric(expr: &Expr, view: &BoundView) -> Option<String> {
    struct V<'a> {
        view: &'a BoundView,
        found: Option<String>,
    }
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Identifier(i) = expr
                && let Some(ColumnKind::Metric(_)) = self.view.column(&i.value).map(|c| &c.kind)
            {
                self.found = Some(i.value.clone());
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V { view, found: None };
    let _ = expr.visit(&mut v);
    v.found
}

/// Why a sum over groups of `expr` (canonical view columns) means nothing, or None when
/// it adds up: sums and counts, and sums and differences of them, add up.
fn expression_additivity(expr: &Expr, view: &BoundView, semantics: &Semantics) -> Option<String> {
    additivity(
        expr,
        semantics,
        &|name| match view.column(name).map(|c| &c.kind) {
            Some(ColumnKind::Metric(m)) => Some(m.clone()),
            _ => None,
        },
    )
}

/// `metric_of` maps an identifier to the metric it names, if any.
fn additivity(
    expr: &Expr,
    semantics: &Semantics,
    metric_of: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let constant = |e: &Expr| !crate::sql::has_column_refs(e);
    match expr {
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => {
            additivity(inner, semantics, metric_of)
        }
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => additivity(expr, semantics, metric_of),
        Expr::Identifier(id) => {
            let metric = metric_of(&id.value)?;
            metric_additivity(&metric, semantics)
        }
        Expr::Value(_) => None,
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Plus | BinaryOperator::Minus => additivity(left, semantics, metric_of)
                .or_else(|| additivity(right, semantics, metric_of)),
            BinaryOperator::Multiply if constant(left) => additivity(right, semantics, metric_of),
            BinaryOperator::Multiply | BinaryOperator::Divide if constant(right) => {
                additivity(left, semantics, metric_of)
            }
            _ => Some(
                "it is a ratio or product of metrics: a sum of the groups' ratios is not the ratio of the totals"
                    .into(),
            ),
        },
        Expr::Function(f) => {
            let name = crate::sql::last_name(&f.name);
            let args: Vec<&Expr> = match &f.args {
                FunctionArguments::List(list) => list
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            match (name.as_str(), args.as_slice()) {
                // Sums (as BI tools wrap metrics) and NULL replacements keep additivity.
                ("sum" | "coalesce" | "ifnull" | "nullif", [first, rest @ ..])
                    if rest.iter().all(|e| constant(e)) =>
                {
                    additivity(first, semantics, metric_of)
                }
                _ => Some(
                    "it is a computed expression over metrics, which need not add up over groups"
                        .into(),
                ),
            }
        }
        _ => Some("it is a computed expression over metrics, which need not add up over groups".into()),
    }
}

/// Why a sum of `metric` over groups means nothing, or None when it adds up.
pub fn metric_additivity(metric: &str, semantics: &Semantics) -> Option<String> {
    let bound = semantics.metrics.get(metric)?;
    match &bound.definition {
        Definition::Aggregate(a) if a.semi_additive.is_some() => {
            let time = a
                .semi_additive
                .as_ref()
                .map(|s| s.dimension.as_str())
                .unwrap_or_default();
            Some(format!(
                "{metric} is a balance (semi-additive over {time}): each group's value is taken at one day of its period, and a sum over days counts a balance once per day"
            ))
        }
        Definition::Aggregate(a) => match a.agg {
            Aggregation::Sum | Aggregation::Count => None,
            Aggregation::CountDistinct => {
                let what = a
                    .expr
                    .as_ref()
                    .map(|e| {
                        let text = e.to_string();
                        text.rsplit('.')
                            .next()
                            .unwrap_or(&text)
                            .trim_matches('"')
                            .to_string()
                    })
                    .unwrap_or_else(|| "value".into());
                Some(format!(
                    "{metric} is a distinct count: summing it over the groups of the inner query counts a {what} once for every group it appears in"
                ))
            }
            Aggregation::Avg => Some(format!(
                "{metric} is an average: a sum of the groups' averages is not an average"
            )),
            Aggregation::Min => Some(format!(
                "{metric} is a minimum: a sum of the groups' minima is not a minimum"
            )),
            Aggregation::Max => Some(format!(
                "{metric} is a maximum: a sum of the groups' maxima is not a maximum"
            )),
            Aggregation::Median | Aggregation::PercentileCont | Aggregation::PercentileDisc => {
                Some(format!(
                    "{metric} is a percentile: a sum of the groups' percentiles is not a percentile"
                ))
            }
        },
        Definition::Composite { formula, .. } => {
            if mentions_total(formula) {
                return Some(format!(
                    "{metric} is a share of a total: a sum of the groups' shares is not a share of anything"
                ));
            }
            additivity(formula, semantics, &|name| {
                semantics
                    .metrics
                    .contains_key(name)
                    .then(|| name.to_string())
            })
            .map(|why| match why.strip_prefix("it is ") {
                Some(rest) if why.starts_with("it is a ratio") => format!("{metric} is {rest}"),
                _ => format!("{metric} is computed from other metrics: {why}"),
            })
        }
        Definition::PeriodOverPeriod {
            compare: crate::model::Compare::PeriodStart(of),
            ..
        } => Some(format!(
            "{metric} is the value of the first day of a {}: summed over periods, that day counts once for every period that starts in the {}",
            of.name(),
            of.name()
        )),
        Definition::PeriodOverPeriod { base, show, .. } => match show {
            Show::Growth => Some(format!(
                "{metric} is a growth rate: a sum of the groups' growth rates is not a growth rate"
            )),
            Show::Value | Show::Difference => metric_additivity(base, semantics)
                .map(|why| format!("{metric} compares {base} with an earlier period, and {why}")),
        },
        Definition::Conversion(c) => match c.calculation {
            crate::model::Calculation::ConversionRate => Some(format!(
                "{metric} is a conversion rate: a sum of the groups' rates is not a rate"
            )),
            // Each conversion is credited to one base event, so to one group.
            crate::model::Calculation::Conversions => metric_additivity(&c.conversion, semantics)
                .map(|why| format!("{metric} counts conversions of {}, and {why}", c.conversion)),
        },
        // Every period with the base's value: as additive as the base.
        Definition::Cumulative {
            window: Window::Period,
            base,
            ..
        } => metric_additivity(base, semantics),
        Definition::Cumulative { window, .. } => {
            let kind = match window {
                Window::ToDate(_) => "a to-date value",
                Window::AllTime => "a running total",
                Window::Trailing(..) => "a trailing-window value",
                Window::PeriodStart(_) => "the value of a period's first day",
                Window::Period => "the value of each period",
            };
            Some(format!(
                "{metric} is {kind}: summed over periods, a day counts once for every period whose window holds it"
            ))
        }
    }
}

pub(crate) fn mentions_total(formula: &Expr) -> bool {
    struct V(bool);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Identifier(i) = expr
                && i.quote_style.is_some()
                && i.value.starts_with(TOTAL_PREFIX)
            {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(false);
    let _ = formula.visit(&mut v);
    v.0
}
