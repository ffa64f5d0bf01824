//! The semantic rewrite of one query block that reads a view.
//!
//! Rules (documented for users in `docs/model-reference.md`):
//! - The block's **grain** is its GROUP BY (positions and output names resolved), or,
//!   without GROUP BY, every selected expression that uses a dimension and neither a
//!   metric nor an aggregate. `SELECT region, revenue FROM sales` groups by region.
//! - A **metric** column means the metric aggregated at that grain, from the base rows
//!   of its table (never re-aggregated from sub-groups).
//! - An **aggregate around a metric** (`SUM(revenue)`, `MAX(customers)`) is evaluated at
//!   the grain, where the metric has one value per group: it is the metric itself.
//! - An **aggregate over dimensions** (`MIN(order_date)`, `COUNT(DISTINCT region)`) is
//!   computed over the base rows at the grain. `COUNT(*)` counts the view's rows (one per
//!   combination of its dimensions, as `SELECT *` returns them) within each group.
//! - **WHERE** conditions on dimensions filter base rows before aggregation; conditions
//!   that use a metric filter groups after it, as HAVING does.
//!
//! The block becomes `SELECT <outer exprs> FROM (<derived>) AS <alias> WHERE <metric
//! filters>`, where the derived table (see [`super::derived`]) has one row per grain
//! value with columns `__g<i>` (grain), `__m<j>` (metrics) and `__a<k>` (aggregates).

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    OrderBy, Select, SelectItem, SelectItemQualifiedWildcardKind, TableAlias, TableFactor,
    TableWithJoins, Value, Visit, VisitMut, Visitor, VisitorMut,
};

mod outer;

use outer::Outer;

use super::additivity::Shape;
use super::derived::{DerivedSpec, InnerExpr, VIEW_ROWS, build_derived};
use super::{RewriteContext, RewriteReport, normalize};
use crate::bind::{BoundView, ColumnKind, Semantics};
use crate::error::{Error, Result, did_you_mean};

/// Aggregates that, around a metric, are the metric itself at the grain.
const COLLAPSING: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "mean",
    "any_value",
    "first_value",
    "last_value",
];

/// Rewrite `select` (reading `view`) in place.
pub fn rewrite_block(
    select: &mut Select,
    order_by: Option<&mut OrderBy>,
    view: &BoundView,
    alias: Option<&str>,
    cx: &RewriteContext<'_>,
    report: &mut RewriteReport,
) -> Result<Shape> {
    let qualifier = alias.unwrap_or(&view.name).to_string();

    // 1. `*` and `v.*` become the view's columns; every item gets its output name.
    expand_projection(select, view, &qualifier)?;
    let output_names: HashSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(normalize(alias)),
            _ => None,
        })
        .collect();

    // 2. Every column reference becomes a bare, canonical view column name.
    let mut canon = Canon {
        view,
        semantics: cx.semantics,
        qualifiers: vec![qualifier.clone(), view.name.clone()],
        output_names: None,
        error: None,
    };
    let _ = VisitMut::visit(&mut select.projection, &mut canon);
    let _ = VisitMut::visit(&mut select.selection, &mut canon);
    let _ = VisitMut::visit(&mut select.having, &mut canon);
    let _ = VisitMut::visit(&mut select.named_window, &mut canon);
    canon.output_names = Some(&output_names);
    let _ = VisitMut::visit(&mut select.group_by, &mut canon);
    let mut order_by = order_by;
    if let Some(ob) = order_by.as_deref_mut() {
        let _ = VisitMut::visit(ob, &mut canon);
    }
    if let Some(e) = canon.error.take() {
        return Err(e);
    }

    let projection: Vec<Expr> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { expr, .. } => Some(expr.clone()),
            _ => None,
        })
        .collect();

    // 3. The grain.
    let mut grain: Vec<Expr> = Vec::new();
    if let GroupByExpr::Expressions(exprs, modifiers) = &select.group_by {
        let grouping_sets = exprs
            .iter()
            .any(|e| matches!(e, Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_)));
        if grouping_sets || !modifiers.is_empty() {
            return Err(Error::unsupported(
                "GROUPING SETS, ROLLUP and CUBE over a view are not supported yet",
                Some(
                    "ask for each grouping in its own query, or combine them with UNION ALL"
                        .to_string(),
                ),
            ));
        }
    }
    match &select.group_by {
        // `GROUP BY ()`: one group, whatever is selected (a grand-total grouping set).
        GroupByExpr::Expressions(exprs, _) if matches!(exprs.as_slice(), [Expr::Tuple(t)] if t.is_empty()) =>
            {}
        GroupByExpr::Expressions(exprs, _) if !exprs.is_empty() => {
            for e in exprs {
                let resolved = match e {
                    Expr::Value(v) => match &v.value {
                        Value::Number(n, _) => {
                            let position: usize = n.parse().unwrap_or(0);
                            projection
                                .get(position.wrapping_sub(1))
                                .cloned()
                                .ok_or_else(|| Error::Grouping {
                                    message: format!("GROUP BY position {n} is not in select list"),
                                    hint: None,
                                })?
                        }
                        _ => e.clone(),
                    },
                    Expr::Identifier(id) if view.column(&normalize(id)).is_none() => {
                        let name = normalize(id);
                        select
                            .projection
                            .iter()
                            .find_map(|item| match item {
                                SelectItem::ExprWithAlias { expr, alias }
                                    if normalize(alias) == name =>
                                {
                                    Some(expr.clone())
                                }
                                _ => None,
                            })
                            .unwrap_or_else(|| e.clone())
                    }
                    _ => e.clone(),
                };
                // A metric is computed per group; it cannot make the groups.
                if contains_aggregate(&resolved) {
                    return Err(Error::Grouping {
                        message: "aggregate functions are not allowed in GROUP BY".into(),
                        hint: None,
                    });
                }
                if refs(&resolved, view).metrics {
                    return Err(Error::Grouping {
                        message: format!(
                            "metrics are not allowed in GROUP BY: \"{resolved}\" is a metric of view \"{}\"",
                            view.name
                        ),
                        hint: Some(format!(
                            "a metric is computed for each group: group by dimensions of \"{}\" and select the metric",
                            view.name
                        )),
                    });
                }
                if !grain.contains(&resolved) {
                    grain.push(resolved);
                }
            }
        }
        _ => {
            for e in &projection {
                let r = refs(e, view);
                if r.dimensions && !r.metrics && !contains_aggregate(e) && !grain.contains(e) {
                    grain.push(e.clone());
                }
            }
        }
    }

    let items: Vec<(String, Expr)> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { expr, alias } => Some((normalize(alias), expr.clone())),
            _ => None,
        })
        .collect();
    let shape = Shape::of_block(&items, &grain, view, cx.semantics);

    // 4. WHERE: conditions on dimensions go inside, conditions on metrics outside.
    let mut inner_filters = Vec::new();
    let mut outer_filters = Vec::new();
    if let Some(selection) = select.selection.take() {
        for conjunct in crate::sql::split_and(selection) {
            if refs(&conjunct, view).metrics || contains_aggregate(&conjunct) {
                outer_filters.push(conjunct);
            } else {
                inner_filters.push(conjunct);
            }
        }
    }
    if let Some(having) = select.having.take() {
        outer_filters.push(having);
    }
    report.filters.extend(
        inner_filters
            .iter()
            .chain(&outer_filters)
            .map(ToString::to_string),
    );
    // Segments the view applies to every query.
    for segment in &view.apply_segments {
        inner_filters.push(Expr::Identifier(Ident::new(segment.clone())));
    }
    // The reading user's rows (access rules).
    if let Some(filter) = &view.row_filter {
        inner_filters.push(Expr::Nested(Box::new(filter.clone())));
    }

    // 5. Outer expressions read the derived table.
    let mut outer = Outer {
        view,
        semantics: cx.semantics,
        grain: &grain,
        metrics: Vec::new(),
        named: Vec::new(),
        aggregates: Vec::new(),
        output_names: None,
        error: None,
    };
    let _ = VisitMut::visit(&mut select.projection, &mut outer);
    let _ = VisitMut::visit(&mut select.named_window, &mut outer);
    for f in &mut outer_filters {
        let _ = VisitMut::visit(f, &mut outer);
    }
    outer.output_names = Some(&output_names);
    if let Some(ob) = order_by {
        let _ = VisitMut::visit(ob, &mut outer);
    }
    if let Some(e) = outer.error.take() {
        return Err(e);
    }
    let Outer {
        metrics,
        named,
        aggregates,
        ..
    } = outer;

    // 6. The derived table.
    let inner =
        |e: &Expr| -> Result<InnerExpr> { InnerExpr::new(e, view, cx.semantics, cx.time_zone) };
    let spec = DerivedSpec {
        view,
        grain: grain.iter().map(inner).collect::<Result<_>>()?,
        metrics,
        aggregates: aggregates.iter().map(inner).collect::<Result<_>>()?,
        filters: inner_filters.iter().map(inner).collect::<Result<_>>()?,
        view_grain: grain.clone(),
        view_filters: inner_filters.clone(),
        time_zone: cx.time_zone,
        calendar_shift: None,
    };
    report.metrics.extend(named);
    report
        .dimensions
        .extend(spec.grain.iter().flat_map(|g| g.dimensions.iter().cloned()));
    let derived = build_derived(&spec, cx.semantics)?;

    select.from = vec![TableWithJoins {
        relation: TableFactor::Derived {
            lateral: false,
            subquery: Box::new(derived),
            alias: Some(TableAlias {
                explicit: true,
                name: Ident::with_quote('"', qualifier),
                columns: vec![],
                at: None,
            }),
            sample: None,
        },
        joins: vec![],
    }];
    select.selection = outer_filters.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
    select.group_by = GroupByExpr::Expressions(vec![], vec![]);
    Ok(shape)
}

/// Replace wildcards by the view's columns and give every item an explicit output name.
fn expand_projection(select: &mut Select, view: &BoundView, qualifier: &str) -> Result<()> {
    let mut items = Vec::with_capacity(select.projection.len());
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) => {
                items.extend(view.columns.iter().map(|c| column_item(&c.name)));
            }
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let last = name.0.last().and_then(|p| p.as_ident()).map(normalize);
                if last.as_deref() == Some(qualifier) || last.as_deref() == Some(view.name.as_str())
                {
                    items.extend(view.columns.iter().map(|c| column_item(&c.name)));
                } else {
                    return Err(Error::UnknownRelation {
                        name: name.to_string(),
                        hint: Some(format!(
                            "missing FROM-clause entry; the view here is \"{qualifier}\""
                        )),
                    });
                }
            }
            SelectItem::UnnamedExpr(expr) => {
                let alias = Ident::with_quote('"', crate::sql::output_name(&expr));
                items.push(SelectItem::ExprWithAlias { expr, alias });
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let alias = Ident::with_quote('"', normalize(&alias));
                items.push(SelectItem::ExprWithAlias { expr, alias });
            }
            other => {
                return Err(Error::unsupported(
                    format!("select item {other} is not supported"),
                    None,
                ));
            }
        }
    }
    select.projection = items;
    Ok(())
}

fn column_item(name: &str) -> SelectItem {
    SelectItem::ExprWithAlias {
        expr: Expr::Identifier(Ident::new(name)),
        alias: Ident::with_quote('"', name),
    }
}

/// Canonicalize column references to bare view column names.
struct Canon<'a> {
    view: &'a BoundView,
    semantics: &'a Semantics,
    qualifiers: Vec<String>,
    output_names: Option<&'a HashSet<String>>,
    error: Option<Error>,
}

impl Canon<'_> {
    fn unknown(&mut self, name: String) -> ControlFlow<()> {
        let last = name.rsplit('.').next().unwrap_or(&name).to_string();
        if let Some(denial) = self.semantics.access.denied_metrics.get(&last) {
            self.error = Some(denial.error("metric", &last));
            return ControlFlow::Break(());
        }
        self.error = Some(Error::UnknownColumn {
            hint: super::grain::in_other_view(&last, self.view, self.semantics)
                .or_else(|| did_you_mean(&last, self.view.columns.iter().map(|c| c.name.as_str())))
                .or_else(|| {
                    Some(format!(
                        "view \"{}\" has the columns: {}",
                        self.view.name,
                        self.view
                            .columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }),
            name,
        });
        ControlFlow::Break(())
    }
}

impl VisitorMut for Canon<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(ident) => {
                let name = normalize(ident);
                if self.view.column(&name).is_some() {
                    *expr = Expr::Identifier(Ident::new(name));
                } else if self.output_names.is_some_and(|o| o.contains(&name))
                    || name.starts_with("__kp")
                {
                    // an output column name, or a marker of ours
                } else {
                    return self.unknown(name);
                }
            }
            Expr::CompoundIdentifier(parts) => {
                let names: Vec<String> = parts.iter().map(normalize).collect();
                let Some((column, qualifier)) = names.split_last() else {
                    return ControlFlow::Continue(());
                };
                let table = qualifier.last().cloned().unwrap_or_default();
                if !self.qualifiers.contains(&table) {
                    self.error = Some(Error::UnknownRelation {
                        name: table.clone(),
                        hint: Some(format!(
                            "missing FROM-clause entry for table \"{table}\"; the view here is \"{}\"",
                            self.qualifiers[0]
                        )),
                    });
                    return ControlFlow::Break(());
                }
                if self.view.column(column).is_some() {
                    *expr = Expr::Identifier(Ident::new(column.clone()));
                } else {
                    return self.unknown(names.join("."));
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Which kinds of view column an expression uses.
#[derive(Default)]
struct Refs {
    metrics: bool,
    dimensions: bool,
}

fn refs(expr: &Expr, view: &BoundView) -> Refs {
    struct V<'a> {
        view: &'a BoundView,
        refs: Refs,
    }
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Identifier(i) = expr {
                match self.view.column(&i.value).map(|c| &c.kind) {
                    Some(ColumnKind::Metric(_)) => self.refs.metrics = true,
                    Some(_) => self.refs.dimensions = true,
                    None => {}
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V {
        view,
        refs: Refs::default(),
    };
    let _ = expr.visit(&mut v);
    v.refs
}

fn function_name(f: &datafusion::sql::sqlparser::ast::Function) -> String {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
        .unwrap_or_default()
}

/// An aggregate call, or the row-count marker a pass-through's `COUNT(*)` became.
fn is_aggregate(expr: &Expr) -> bool {
    crate::sql::is_aggregate_call(expr) || is_view_rows(expr)
}

fn is_view_rows(expr: &Expr) -> bool {
    matches!(expr, Expr::Function(f) if function_name(f) == VIEW_ROWS)
}

fn contains_aggregate(expr: &Expr) -> bool {
    crate::sql::contains_aggregate(expr) || {
        let mut found = false;
        let _ = datafusion::sql::sqlparser::ast::visit_expressions(expr, |e| {
            if is_view_rows(e) {
                found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        found
    }
}

/// Is `expr` `COUNT(*)` or `COUNT(<constant>)`: a count of rows?
pub(super) fn counts_rows(expr: &Expr) -> bool {
    let Expr::Function(f) = expr else {
        return false;
    };
    if function_name(f) != "count" || f.filter.is_some() || f.over.is_some() {
        return false;
    }
    let FunctionArguments::List(list) = &f.args else {
        return false;
    };
    if list.duplicate_treatment.is_some() {
        return false;
    }
    match list.args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] => true,
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))] => {
            !matches!(v.value, Value::Null)
        }
        _ => false,
    }
}

/// The dimension names an expression uses (for error messages).
pub fn dimension_names(expr: &Expr, view: &BoundView) -> BTreeSet<String> {
    struct V<'a> {
        view: &'a BoundView,
        names: BTreeSet<String>,
    }
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Identifier(i) = expr
                && let Some(c) = self.view.column(&i.value)
                && !matches!(c.kind, ColumnKind::Metric(_))
            {
                self.names.insert(c.name.clone());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V {
        view,
        names: BTreeSet::new(),
    };
    let _ = expr.visit(&mut v);
    v.names
}
