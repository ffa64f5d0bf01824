//! How grain flows through a statement: from the outermost block that reads a view, down
//! through the blocks that only pass the view's rows through.
//!
//! A *pass-through* is a query block over a view (or over another pass-through) with no
//! GROUP BY, DISTINCT, LIMIT/OFFSET, aggregate, window function, subquery or condition
//! on a metric: a projection of view columns, renamed, cast or computed, possibly filtered
//! on dimensions. BI tools wrap views in such blocks (a Superset virtual dataset, a
//! Tableau custom SQL connection, Power BI's folded steps). A block that reads a
//! pass-through as its only relation reads the view itself ([`read_through`]): its column
//! references are replaced by the pass-through's expressions and the pass-through's
//! conditions are ANDed into its WHERE. So `SUM(customers)` over `(SELECT * FROM sales) t`
//! grouped by region is the distinct count per region, exactly as if the query read the
//! view directly, and the block that decides the grain is the outermost one.
//!
//! A block that is not a pass-through (it groups, limits, filters on a metric, ...) keeps
//! its own grain; a query over it is literal SQL over its rows, checked by
//! [`super::additivity`].

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    ObjectName, OrderBy, OrderByKind, Query, Select, SelectItem, SelectItemQualifiedWildcardKind,
    SetExpr, TableAlias, TableFactor, VisitMut,
};

use super::{Relation, RewriteContext, Scope, normalize, resolve_relation};
use crate::bind::{BoundView, ColumnKind, Semantics};
use crate::error::{Error, Result, did_you_mean};

/// A relation that passes a view's rows through: its columns as expressions over the
/// view's columns (bare, canonical names), and the conditions it applies.
#[derive(Debug, Clone)]
pub struct PassThrough<'a> {
    /// The view read.
    pub view: &'a BoundView,
    /// Output columns in order: name and expression over the view's columns.
    pub columns: Vec<(String, Expr)>,
    /// Conditions on the view's dimensions, ANDed.
    pub filters: Vec<Expr>,
}

impl<'a> PassThrough<'a> {
    /// The view itself: each column as is.
    pub fn of_view(view: &'a BoundView) -> PassThrough<'a> {
        PassThrough {
            view,
            columns: view
                .columns
                .iter()
                .map(|c| (c.name.clone(), Expr::Identifier(Ident::new(&c.name))))
                .collect(),
            filters: Vec::new(),
        }
    }

    /// The expression of output column `name`.
    pub fn column(&self, name: &str) -> Option<&Expr> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }

    /// Does column `name` compute a metric (rather than a dimension or segment)?
    pub fn is_metric(&self, name: &str) -> bool {
        self.column(name)
            .is_some_and(|e| references_metric(e, self.view))
    }

    /// The expressions of the columns that use no metric: what one row of the
    /// pass-through is (for `COUNT(*)`).
    fn dimension_columns(&self) -> Vec<&Expr> {
        self.columns
            .iter()
            .map(|(_, e)| e)
            .filter(|e| !references_metric(e, self.view))
            .collect()
    }

    /// Does the pass-through show every dimension of the view (so its rows are the view's
    /// rows)?
    fn shows_every_dimension(&self) -> bool {
        self.view.columns.iter().all(|c| {
            !matches!(c.kind, ColumnKind::Dimension(_))
                || self
                    .columns
                    .iter()
                    .any(|(_, e)| matches!(e, Expr::Identifier(i) if i.value == c.name))
        })
    }

    fn renamed(mut self, columns: &[Ident]) -> PassThrough<'a> {
        for ((name, _), alias) in self.columns.iter_mut().zip(columns) {
            *name = normalize(alias);
        }
        self
    }
}

/// Does `expr` (over canonical view columns) use a metric of `view`?
pub fn references_metric(expr: &Expr, view: &BoundView) -> bool {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    struct V<'a> {
        view: &'a BoundView,
        found: bool,
    }
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Identifier(i) = expr
                && matches!(
                    self.view.column(&i.value).map(|c| &c.kind),
                    Some(ColumnKind::Metric(_))
                )
            {
                self.found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V { view, found: false };
    let _ = expr.visit(&mut v);
    v.found
}

/// Is `select` shaped as a projection of its one relation: no grouping, DISTINCT,
/// aggregate, window function, subquery, set-returning function or other clause that
/// changes which rows it returns (its WHERE is checked by the caller)?
pub fn is_projection(select: &Select) -> bool {
    let plain_group =
        matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    let one_relation = matches!(select.from.as_slice(), [twj] if twj.joins.is_empty());
    if !plain_group
        || !one_relation
        || select.distinct.is_some()
        || select.top.is_some()
        || select.into.is_some()
        || select.having.is_some()
        || select.qualify.is_some()
        || select.prewhere.is_some()
        || !select.named_window.is_empty()
        || !select.lateral_views.is_empty()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || select.value_table_mode.is_some()
        || select.exclude.is_some()
    {
        return false;
    }
    let plain = |e: &Expr| !crate::sql::contains_aggregate(e) && !changes_rows(e);
    select.projection.iter().all(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => plain(e),
        SelectItem::Wildcard(o) | SelectItem::QualifiedWildcard(_, o) => {
            o.opt_exclude.is_none()
                && o.opt_except.is_none()
                && o.opt_replace.is_none()
                && o.opt_rename.is_none()
                && o.opt_ilike.is_none()
        }
        SelectItem::ExprWithAliases { .. } => false,
    }) && select
        .selection
        .as_ref()
        .is_none_or(|e| !changes_rows(e) && !crate::sql::contains_aggregate(e))
}

/// A window function, a subquery or a set-returning function: an expression that makes
/// a block more than a projection of its rows.
fn changes_rows(expr: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    struct V(bool);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            let found = match expr {
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => true,
                Expr::Function(f) => {
                    f.over.is_some()
                        || matches!(
                            crate::sql::last_name(&f.name).as_str(),
                            "unnest"
                                | "generate_series"
                                | "generate_subscripts"
                                | "json_each"
                                | "jsonb_each"
                                | "regexp_matches"
                        )
                        || super::derived::VIEW_ROWS == crate::sql::last_name(&f.name)
                }
                _ => false,
            };
            if found {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(false);
    let _ = expr.visit(&mut v);
    v.0
}

/// The pass-through `query` is, if it is one (see the module docs).
pub fn pass_through<'a>(
    query: &Query,
    cx: &RewriteContext<'a>,
    scope: &Scope,
) -> Result<Option<PassThrough<'a>>> {
    let plain_query = query.with.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && query.locks.is_empty()
        && query.for_clause.is_none()
        && query.settings.is_none()
        && query.format_clause.is_none()
        && query.pipe_operators.is_empty();
    if !plain_query {
        return Ok(None);
    }
    // An ORDER BY without LIMIT does not change which rows a derived table holds.
    match query.body.as_ref() {
        SetExpr::Select(select) => select_pass_through(select, cx, scope),
        SetExpr::Query(inner) => pass_through(inner, cx, scope),
        _ => Ok(None),
    }
}

fn select_pass_through<'a>(
    select: &Select,
    cx: &RewriteContext<'a>,
    scope: &Scope,
) -> Result<Option<PassThrough<'a>>> {
    if !is_projection(select) {
        return Ok(None);
    }
    let Some(twj) = select.from.first() else {
        return Ok(None);
    };
    let Some((source, qualifier)) = source_of(&twj.relation, cx, scope)? else {
        return Ok(None);
    };
    let mut block = select.clone();
    let columns = expand(&mut block, &source, &qualifier)?;
    let mut sub = Substitute::new(&source, cx.semantics, &qualifier, None);
    let mut out = Vec::with_capacity(columns.len());
    for (name, mut expr) in columns {
        sub.apply(&mut expr)?;
        out.push((name, expr));
    }
    let mut filters = source.filters.clone();
    if let Some(mut selection) = block.selection.take() {
        sub.apply(&mut selection)?;
        if references_metric(&selection, source.view) {
            // A condition on a metric fixes the grain: the rows are groups.
            return Ok(None);
        }
        filters.extend(crate::sql::split_and(selection));
    }
    Ok(Some(PassThrough {
        view: source.view,
        columns: out,
        filters,
    }))
}

/// What a FROM item passes through: a view (as is), or a derived table or CTE that is a
/// pass-through; with the name the block refers to it by.
fn source_of<'a>(
    factor: &TableFactor,
    cx: &RewriteContext<'a>,
    scope: &Scope,
) -> Result<Option<(PassThrough<'a>, String)>> {
    match factor {
        TableFactor::Table {
            name, alias, args, ..
        } if args.is_none() => {
            let qualifier =
                |default: String| alias.as_ref().map_or(default, |a| normalize(&a.name));
            let renames: Vec<Ident> = alias
                .as_ref()
                .map(|a| a.columns.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            match resolve_relation(name, cx, scope)? {
                Relation::View(view) => Ok(Some((
                    PassThrough::of_view(view).renamed(&renames),
                    qualifier(view.name.clone()),
                ))),
                Relation::Cte(cte_name) => {
                    let Some(source) = scope.cte(&cte_name).and_then(|c| c.source.clone()) else {
                        return Ok(None);
                    };
                    let (body, defined_in) = source.as_ref();
                    Ok(pass_through(body, cx, defined_in)?
                        .map(|p| (p.renamed(&renames), qualifier(cte_name))))
                }
                Relation::Catalog(..) => Ok(None),
            }
        }
        TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            sample: None,
        } => {
            let renames: Vec<Ident> = alias.columns.iter().map(|c| c.name.clone()).collect();
            Ok(pass_through(subquery, cx, scope)?
                .map(|p| (p.renamed(&renames), normalize(&alias.name))))
        }
        _ => Ok(None),
    }
}

/// The pass-through a FROM item reads, when it is a derived table or a CTE (not the view
/// itself), and the name the block refers to it by.
pub fn wrapper<'a>(
    factor: &TableFactor,
    cx: &RewriteContext<'a>,
    scope: &Scope,
) -> Result<Option<(PassThrough<'a>, String)>> {
    let is_view = match factor {
        TableFactor::Table { name, args, .. } if args.is_none() => {
            matches!(resolve_relation(name, cx, scope)?, Relation::View(_))
        }
        _ => false,
    };
    if is_view {
        return Ok(None);
    }
    source_of(factor, cx, scope)
}

/// The view, or the pass-through of it, that a FROM item reads.
pub fn view_source<'a>(
    factor: &TableFactor,
    cx: &RewriteContext<'a>,
    scope: &Scope,
) -> Result<Option<(PassThrough<'a>, String)>> {
    source_of(factor, cx, scope)
}

/// The select items of `block` (over `source`) with `*` and `q.*` expanded and every item
/// named, as `(output name, expression)`.
fn expand(
    block: &mut Select,
    source: &PassThrough<'_>,
    qualifier: &str,
) -> Result<Vec<(String, Expr)>> {
    let mut out = Vec::new();
    for item in std::mem::take(&mut block.projection) {
        match item {
            SelectItem::Wildcard(_) => out.extend(wildcard(source)),
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _) => {
                let last = name.0.last().and_then(|p| p.as_ident()).map(normalize);
                if last.as_deref() != Some(qualifier) {
                    return Err(Error::UnknownRelation {
                        name: name.to_string(),
                        hint: Some(format!(
                            "missing FROM-clause entry; the relation here is \"{qualifier}\""
                        )),
                    });
                }
                out.extend(wildcard(source));
            }
            SelectItem::QualifiedWildcard(..) | SelectItem::ExprWithAliases { .. } => {
                return Err(Error::unsupported(
                    "this form of select item is not supported",
                    None,
                ));
            }
            SelectItem::UnnamedExpr(expr) => {
                let name = crate::sql::output_name(&expr);
                out.push((name, expr));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let name = crate::sql::naming::output_column_name(&normalize(&alias)).to_string();
                out.push((name, expr));
            }
        }
    }
    Ok(out)
}

fn wildcard(source: &PassThrough<'_>) -> Vec<(String, Expr)> {
    source
        .columns
        .iter()
        .map(|(name, _)| (name.clone(), Expr::Identifier(Ident::with_quote('"', name))))
        .collect()
}

/// Make `select`, whose one relation is a pass-through derived table or CTE, read the view
/// itself: the grain is then decided by `select` (see the module docs). Nested
/// pass-throughs are read through all at once.
pub fn read_through(
    select: &mut Select,
    order_by: Option<&mut OrderBy>,
    cx: &RewriteContext<'_>,
    scope: &Scope,
) -> Result<()> {
    let [twj] = select.from.as_slice() else {
        return Ok(());
    };
    if !twj.joins.is_empty() {
        return Ok(());
    }
    let Some((source, qualifier)) = wrapper(&twj.relation, cx, scope)? else {
        return Ok(());
    };
    merge(select, order_by, &source, &qualifier, cx.semantics)
}

/// Put the pass-through `source` (named `qualifier` in `select`) into `select`.
pub fn merge(
    select: &mut Select,
    order_by: Option<&mut OrderBy>,
    source: &PassThrough<'_>,
    qualifier: &str,
    semantics: &Semantics,
) -> Result<()> {
    // Every item named as the client will see it, wildcards expanded.
    let mut items = Vec::with_capacity(select.projection.len());
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::Wildcard(_) => items.extend(wildcard_items(source)),
            SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(name), _)
                if name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(normalize)
                    .as_deref()
                    == Some(qualifier) =>
            {
                items.extend(wildcard_items(source));
            }
            SelectItem::QualifiedWildcard(name, _) => {
                return Err(Error::UnknownRelation {
                    name: name.to_string(),
                    hint: Some(format!(
                        "missing FROM-clause entry; the relation here is \"{qualifier}\""
                    )),
                });
            }
            SelectItem::UnnamedExpr(expr) => {
                let alias = Ident::with_quote('"', crate::sql::output_name(&expr));
                items.push(SelectItem::ExprWithAlias { expr, alias });
            }
            named @ SelectItem::ExprWithAlias { .. } => items.push(named),
            SelectItem::ExprWithAliases { .. } => {
                return Err(Error::unsupported(
                    "this form of select item is not supported",
                    None,
                ));
            }
        }
    }
    select.projection = items;
    let output_names: HashSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(normalize(alias)),
            _ => None,
        })
        .collect();

    // `COUNT(*)` counts the rows the pass-through would return: its combinations of
    // dimension values (the view's own rows when it shows every dimension).
    if !source.shows_every_dimension() {
        let marker = row_count_marker(source);
        count_rows_as(&mut select.projection, &marker);
        count_rows_as(&mut select.having, &marker);
    }

    let mut sub = Substitute::new(source, semantics, qualifier, None);
    for item in &mut select.projection {
        if let SelectItem::ExprWithAlias { expr, .. } = item {
            sub.apply(expr)?;
        }
    }
    if let Some(selection) = &mut select.selection {
        sub.apply(selection)?;
    }
    if let Some(having) = &mut select.having {
        sub.apply(having)?;
    }
    if let Some(qualify) = &mut select.qualify {
        sub.apply(qualify)?;
    }
    for window in &mut select.named_window {
        sub.apply(window)?;
    }
    // GROUP BY prefers input columns, then output names; ORDER BY the other way round.
    sub.output_names = Some(output_names.clone());
    if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
        for e in exprs {
            sub.apply(e)?;
        }
    }
    if let Some(ob) = order_by {
        sub.prefer_output = true;
        if let OrderByKind::Expressions(exprs) = &mut ob.kind {
            for e in exprs {
                sub.apply(&mut e.expr)?;
            }
        }
        if !source.shows_every_dimension() {
            count_rows_as(ob, &row_count_marker(source));
        }
    }

    // The pass-through's conditions join the block's.
    let mut conditions: Vec<Expr> = select.selection.take().into_iter().collect();
    conditions.extend(
        source
            .filters
            .iter()
            .cloned()
            .map(|f| Expr::Nested(Box::new(f))),
    );
    select.selection = conditions.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
    select.from = vec![datafusion::sql::sqlparser::ast::TableWithJoins {
        relation: TableFactor::Table {
            name: ObjectName::from(vec![
                Ident::new("public"),
                Ident::with_quote('"', &source.view.name),
            ]),
            alias: Some(TableAlias {
                explicit: true,
                name: Ident::with_quote('"', qualifier),
                columns: vec![],
                at: None,
            }),
            args: None,
            with_hints: vec![],
            version: None,
            with_ordinality: false,
            partitions: vec![],
            json_path: None,
            sample: None,
            index_hints: vec![],
        },
        joins: vec![],
    }];
    Ok(())
}

fn wildcard_items(source: &PassThrough<'_>) -> Vec<SelectItem> {
    source
        .columns
        .iter()
        .map(|(name, _)| SelectItem::ExprWithAlias {
            expr: Expr::Identifier(Ident::with_quote('"', name)),
            alias: Ident::with_quote('"', name),
        })
        .collect()
}

/// `kp_view_rows(<the pass-through's dimension columns>)`.
fn row_count_marker(source: &PassThrough<'_>) -> Expr {
    let args = source
        .dimension_columns()
        .into_iter()
        .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e.clone())))
        .collect();
    let mut f = crate::sql::call(super::derived::VIEW_ROWS, vec![]);
    if let FunctionArguments::List(list) = &mut f.args {
        list.args = args;
    }
    Expr::Function(f)
}

/// Replaces `COUNT(*)` of the block (not of its subqueries) by `marker`.
fn count_rows_as<N: VisitMut + ?Sized>(node: &mut N, marker: &Expr) {
    crate::sql::visit_block_exprs_mut(node, |expr| {
        if super::block::counts_rows(expr) {
            *expr = marker.clone();
        }
        ControlFlow::Continue(())
    });
}

/// Replaces references to a pass-through's columns by their expressions (in the block's
/// own expressions, not in its subqueries).
struct Substitute<'s, 'a> {
    source: &'s PassThrough<'a>,
    semantics: &'s Semantics,
    qualifier: String,
    /// Output names of the block a name may also refer to (GROUP BY, ORDER BY).
    output_names: Option<HashSet<String>>,
    /// ORDER BY: an output name wins over an input column.
    prefer_output: bool,
    error: Option<Error>,
}

impl<'s, 'a> Substitute<'s, 'a> {
    fn new(
        source: &'s PassThrough<'a>,
        semantics: &'s Semantics,
        qualifier: &str,
        output_names: Option<HashSet<String>>,
    ) -> Substitute<'s, 'a> {
        Substitute {
            source,
            semantics,
            qualifier: qualifier.to_string(),
            output_names,
            prefer_output: false,
            error: None,
        }
    }

    fn apply<N: VisitMut + ?Sized>(&mut self, node: &mut N) -> Result<()> {
        crate::sql::visit_block_exprs_mut(node, |e| self.replace(e));
        self.take_error()
    }

    fn take_error(&mut self) -> Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn is_output(&self, name: &str) -> bool {
        self.output_names.as_ref().is_some_and(|o| o.contains(name))
    }

    fn replacement(&self, name: &str) -> Option<Expr> {
        self.source.column(name).map(|e| match e {
            Expr::Identifier(_) => e.clone(),
            other => Expr::Nested(Box::new(other.clone())),
        })
    }

    fn unknown(&mut self, name: &str) -> ControlFlow<()> {
        self.error = Some(unknown_column(name, self.source, self.semantics));
        ControlFlow::Break(())
    }
}

/// The error for a column a pass-through does not have: 42703 naming it, with the
/// columns it has (or the view that has it, for a metric or dimension of another view).
pub fn unknown_column(name: &str, source: &PassThrough<'_>, semantics: &Semantics) -> Error {
    let last = name.rsplit('.').next().unwrap_or(name);
    let names: Vec<&str> = source.columns.iter().map(|(n, _)| n.as_str()).collect();
    let hint = in_other_view(last, source.view, semantics)
        .or_else(|| did_you_mean(last, names.iter().copied()))
        .or_else(|| {
            Some(format!(
                "the relation has the columns: {}",
                names.join(", ")
            ))
        });
    Error::UnknownColumn {
        name: name.to_string(),
        hint,
    }
}

/// "x is in view v" when another view the user may read has a column `name`.
pub fn in_other_view(name: &str, view: &BoundView, semantics: &Semantics) -> Option<String> {
    let others: Vec<&str> = semantics
        .views
        .iter()
        .filter(|v| v.name != view.name && v.column(name).is_some())
        .map(|v| v.name.as_str())
        .collect();
    match others.as_slice() {
        [] => None,
        [one] => Some(format!(
            "\"{name}\" is a column of view \"{one}\", not of \"{}\"",
            view.name
        )),
        many => Some(format!(
            "\"{name}\" is a column of the views {}, not of \"{}\"",
            many.iter()
                .map(|v| format!("\"{v}\""))
                .collect::<Vec<_>>()
                .join(", "),
            view.name
        )),
    }
}

impl Substitute<'_, '_> {
    /// One expression of the block (its children are done).
    fn replace(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(ident) => {
                let name = normalize(ident);
                if name.starts_with("__kp") || (self.prefer_output && self.is_output(&name)) {
                    return ControlFlow::Continue(());
                }
                match self.replacement(&name) {
                    Some(e) => *expr = e,
                    None if self.is_output(&name) => {}
                    None => return self.unknown(&name),
                }
            }
            Expr::CompoundIdentifier(parts) => {
                let names: Vec<String> = parts.iter().map(normalize).collect();
                let [.., table, column] = names.as_slice() else {
                    return ControlFlow::Continue(());
                };
                if *table != self.qualifier {
                    self.error = Some(Error::UnknownRelation {
                        name: table.clone(),
                        hint: Some(format!(
                            "missing FROM-clause entry for table \"{table}\"; the relation here is \"{}\"",
                            self.qualifier
                        )),
                    });
                    return ControlFlow::Break(());
                }
                match self.replacement(column) {
                    Some(e) => *expr = e,
                    None => return self.unknown(&names.join(".")),
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
