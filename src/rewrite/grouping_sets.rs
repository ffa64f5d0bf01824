//! `GROUPING SETS`, `ROLLUP` and `CUBE` over a view: each grouping set is answered at its
//! own grain.
//!
//! A block over a view grouped by grouping sets becomes one block per set (grouped by
//! that set; the grain expressions of the other sets are NULL in it, `GROUPING(...)` is
//! the set's constant), stacked with `UNION ALL`:
//!
//! ```sql
//! SELECT region, channel, customers FROM sales GROUP BY ROLLUP (region, channel)
//! -- becomes
//! SELECT * FROM (SELECT region, channel, customers FROM sales GROUP BY region, channel
//!                UNION ALL SELECT region, NULL, customers FROM sales GROUP BY region
//!                UNION ALL SELECT NULL, NULL, customers FROM sales GROUP BY ()) AS ...
//! ```
//!
//! so the subtotal and total rows of a distinct count or a ratio are computed from the
//! base rows of each set, never from the finer rows. The first block is the one with the
//! most grain expressions, so every column has its type in the first branch.

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    GroupByExpr, Ident, OrderBy, OrderByKind, Query, Select, SelectItem, SetExpr, SetOperator,
    SetQuantifier, TableAlias, TableFactor, TableWithJoins, Value, VisitMut, VisitorMut,
    visit_expressions_mut,
};
use std::ops::ControlFlow;

use super::{Relation, RewriteContext, Scope, normalize, query_of, resolve_relation};
use crate::error::{Error, Result};

/// The alias of the stacked grouping sets.
const STACKED: &str = "__kp_grouping_sets";

/// Limit on the number of grouping sets of one block (CUBE of n expressions has 2^n).
const MAX_SETS: usize = 256;

/// When `select` reads one view and groups by grouping sets: the query that answers each
/// set at its own grain (see the module docs). `order_by` (of the enclosing query) is
/// made to name the result columns.
pub fn expand(
    select: &mut Select,
    order_by: Option<&mut OrderBy>,
    cx: &RewriteContext<'_>,
    scope: &Scope,
) -> Result<Option<Query>> {
    let GroupByExpr::Expressions(exprs, modifiers) = &select.group_by else {
        return Ok(None);
    };
    let has_sets = exprs
        .iter()
        .any(|e| matches!(e, Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_)));
    if !has_sets && modifiers.is_empty() {
        return Ok(None);
    }
    let Some(qualifiers) = reads_one_view(select, cx, scope)? else {
        return Ok(None); // literal SQL over other relations: the engine groups them.
    };
    if !modifiers.is_empty() {
        return Err(Error::unsupported(
            "GROUP BY ... WITH ROLLUP is not PostgreSQL syntax",
            Some("write GROUP BY ROLLUP (a, b) instead".into()),
        ));
    }
    if select.projection.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return Err(Error::unsupported(
            "SELECT * with GROUPING SETS, ROLLUP or CUBE over a view is not supported",
            Some("name the grouped columns and the metrics in the select list".into()),
        ));
    }
    if select.projection.iter().any(|i| match i {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => has_window(e),
        _ => false,
    }) {
        return Err(Error::unsupported(
            "window functions in a query grouped by GROUPING SETS, ROLLUP or CUBE over a view are not supported",
            Some("compute the window in an outer query over this one".into()),
        ));
    }

    // Every item named, so that each branch and the result have the same names.
    let mut items: Vec<(Expr, Ident)> = Vec::new();
    for item in std::mem::take(&mut select.projection) {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                let alias = Ident::with_quote('"', crate::sql::output_name(&expr));
                items.push((expr, alias));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                let alias = Ident::with_quote('"', normalize(&alias));
                items.push((expr, alias));
            }
            _ => {
                return Err(Error::unsupported(
                    "this form of select item is not supported",
                    None,
                ));
            }
        }
    }
    for (expr, _) in &mut items {
        plain_columns(expr, &qualifiers);
    }
    let resolve = |e: &Expr| -> Result<Expr> {
        let mut e = resolve_item(e, &items)?;
        plain_columns(&mut e, &qualifiers);
        Ok(e)
    };

    // The grouping sets: plain items in every set, times each construct's sets.
    let mut sets: Vec<Vec<Expr>> = vec![Vec::new()];
    for e in exprs {
        let choices: Vec<Vec<Expr>> = match e {
            Expr::Rollup(parts) => {
                let parts: Vec<Vec<Expr>> = parts
                    .iter()
                    .map(|p| p.iter().map(resolve).collect::<Result<_>>())
                    .collect::<Result<_>>()?;
                (0..=parts.len())
                    .rev()
                    .map(|n| parts[..n].concat())
                    .collect()
            }
            Expr::Cube(parts) => {
                let parts: Vec<Vec<Expr>> = parts
                    .iter()
                    .map(|p| p.iter().map(resolve).collect::<Result<_>>())
                    .collect::<Result<_>>()?;
                if parts.len() > 8 {
                    return Err(Error::unsupported(
                        format!(
                            "CUBE of {} expressions is too many grouping sets",
                            parts.len()
                        ),
                        Some("CUBE of up to 8 expressions is supported".into()),
                    ));
                }
                let n = parts.len();
                (0..(1usize << n))
                    .rev()
                    .map(|mask| {
                        (0..n)
                            .filter(|i| mask & (1 << (n - 1 - i)) != 0)
                            .flat_map(|i| parts[i].clone())
                            .collect()
                    })
                    .collect()
            }
            Expr::GroupingSets(list) => list
                .iter()
                .map(|set| {
                    set.iter()
                        .flat_map(flatten_tuple)
                        .map(|e| resolve(&e))
                        .collect()
                })
                .collect::<Result<_>>()?,
            plain => vec![vec![resolve(plain)?]],
        };
        let mut next = Vec::new();
        for set in &sets {
            for choice in &choices {
                let mut combined = set.clone();
                for e in choice {
                    if !combined.contains(e) {
                        combined.push(e.clone());
                    }
                }
                next.push(combined);
            }
        }
        if next.len() > MAX_SETS {
            return Err(Error::unsupported(
                format!("more than {MAX_SETS} grouping sets in one query"),
                Some("split the query into several".into()),
            ));
        }
        sets = next;
    }
    // Largest first (stable): the first branch types every column.
    sets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut all: Vec<Expr> = Vec::new();
    for set in &sets {
        for e in set {
            if !all.contains(e) {
                all.push(e.clone());
            }
        }
    }

    let template = select.clone();
    let mut branches = Vec::with_capacity(sets.len());
    for set in &sets {
        let absent: Vec<&Expr> = all.iter().filter(|e| !set.contains(e)).collect();
        let mut branch = template.clone();
        branch.projection = items
            .iter()
            .map(|(expr, alias)| {
                let mut expr = expr.clone();
                for_set(&mut expr, set, &absent);
                SelectItem::ExprWithAlias {
                    expr,
                    alias: alias.clone(),
                }
            })
            .collect();
        if let Some(having) = &mut branch.having {
            plain_columns(having, &qualifiers);
            for_set(having, set, &absent);
        }
        branch.distinct = None;
        branch.group_by = GroupByExpr::Expressions(
            if set.is_empty() {
                vec![Expr::Tuple(vec![])]
            } else {
                set.clone()
            },
            vec![],
        );
        branches.push(SetExpr::Select(Box::new(branch)));
    }
    let stacked = branches
        .into_iter()
        .reduce(|left, right| SetExpr::SetOperation {
            op: SetOperator::Union,
            set_quantifier: SetQuantifier::All,
            left: Box::new(left),
            right: Box::new(right),
        })
        .ok_or_else(|| Error::Internal("no grouping sets".into()))?;

    // The result: the stacked rows under the items' names.
    let mut top = template;
    top.projection = items
        .iter()
        .map(|(_, alias)| SelectItem::ExprWithAlias {
            expr: Expr::CompoundIdentifier(vec![Ident::with_quote('"', STACKED), alias.clone()]),
            alias: alias.clone(),
        })
        .collect();
    top.distinct = match select.distinct.take() {
        Some(Distinct::On(_)) => {
            return Err(Error::unsupported(
                "DISTINCT ON with GROUPING SETS, ROLLUP or CUBE over a view is not supported",
                None,
            ));
        }
        other => other,
    };
    top.selection = None;
    top.having = None;
    top.group_by = GroupByExpr::Expressions(vec![], vec![]);
    top.named_window = vec![];
    top.from = vec![TableWithJoins {
        relation: TableFactor::Derived {
            lateral: false,
            subquery: Box::new(query_of(stacked)),
            alias: Some(TableAlias {
                explicit: true,
                name: Ident::with_quote('"', STACKED),
                columns: vec![],
                at: None,
            }),
            sample: None,
        },
        joins: vec![],
    }];

    if let Some(ob) = order_by
        && let OrderByKind::Expressions(order) = &mut ob.kind
    {
        for o in order {
            o.expr = order_item(&o.expr, &items)?;
        }
    }
    Ok(Some(query_of(SetExpr::Select(Box::new(top)))))
}

/// The names a block that reads one view refers to it by (its alias and the view's name).
fn reads_one_view(
    select: &Select,
    cx: &RewriteContext<'_>,
    scope: &Scope,
) -> Result<Option<Vec<String>>> {
    let [twj] = select.from.as_slice() else {
        return Ok(None);
    };
    if !twj.joins.is_empty() {
        return Ok(None);
    }
    match &twj.relation {
        TableFactor::Table {
            name, args, alias, ..
        } if args.is_none() => match resolve_relation(name, cx, scope)? {
            Relation::View(view) => {
                let mut names = vec![view.name.clone()];
                names.extend(alias.as_ref().map(|a| normalize(&a.name)));
                Ok(Some(names))
            }
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Column references without the view's qualifier and in their normal case, so that the
/// same column written two ways compares equal.
fn plain_columns(expr: &mut Expr, qualifiers: &[String]) {
    let _ = visit_expressions_mut(expr, |e| {
        match e {
            Expr::Identifier(id) => {
                *e = Expr::Identifier(Ident::with_quote('"', normalize(id)));
            }
            Expr::CompoundIdentifier(parts)
                if parts.len() == 2 && qualifiers.contains(&normalize(&parts[0])) =>
            {
                let column = normalize(&parts[1]);
                *e = Expr::Identifier(Ident::with_quote('"', column));
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `(a, b)` in a grouping set is the two expressions.
fn flatten_tuple(e: &Expr) -> Vec<Expr> {
    match e {
        Expr::Tuple(parts) => parts.clone(),
        other => vec![other.clone()],
    }
}

/// A grouping item as an expression of the select list: a position or an output name
/// (when it is not a column name) stands for that item.
fn resolve_item(e: &Expr, items: &[(Expr, Ident)]) -> Result<Expr> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => {
                let position: usize = n.parse().unwrap_or(0);
                items
                    .get(position.wrapping_sub(1))
                    .map(|(e, _)| e.clone())
                    .ok_or_else(|| Error::Grouping {
                        message: format!("GROUP BY position {n} is not in select list"),
                        hint: None,
                    })
            }
            _ => Ok(e.clone()),
        },
        Expr::Nested(inner) => resolve_item(inner, items),
        _ => Ok(e.clone()),
    }
}

/// `expr` in the branch of grouping set `set`: the expressions of the other sets are
/// NULL, `GROUPING(args)` is the set's bit mask (1 for each argument not grouped). An
/// expression of the set is kept whole, even when it contains one of another set.
fn for_set(expr: &mut Expr, set: &[Expr], absent: &[&Expr]) {
    struct Branch<'a> {
        set: &'a [Expr],
        absent: &'a [&'a Expr],
        kept: Vec<Expr>,
    }
    impl VisitorMut for Branch<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Some(mask) = grouping_mask(e, self.set) {
                *e = Expr::Cast {
                    kind: CastKind::Cast,
                    expr: Box::new(Expr::value(Value::Number(mask.to_string(), false))),
                    data_type: DataType::Integer(None),
                    array: false,
                    format: None,
                };
            } else if self.set.contains(e) {
                // Kept aside until the rest is done, so nothing inside it changes.
                let placeholder =
                    Expr::Identifier(Ident::new(format!("{KEPT}{}", self.kept.len())));
                self.kept.push(std::mem::replace(e, placeholder));
            } else if self.absent.contains(&&*e) {
                *e = Expr::value(Value::Null);
            }
            ControlFlow::Continue(())
        }
    }
    let mut branch = Branch {
        set,
        absent,
        kept: Vec::new(),
    };
    let _ = VisitMut::visit(expr, &mut branch);
    let kept = branch.kept;
    if kept.is_empty() {
        return;
    }
    let _ = visit_expressions_mut(expr, |e| {
        if let Expr::Identifier(id) = e
            && let Some(i) = id.value.strip_prefix(KEPT)
            && let Some(original) = i.parse::<usize>().ok().and_then(|i| kept.get(i))
        {
            *e = original.clone();
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Names the grouped expressions of a branch while it is written.
const KEPT: &str = "__kp_kept_";

fn grouping_mask(e: &Expr, set: &[Expr]) -> Option<u32> {
    let Expr::Function(f) = e else {
        return None;
    };
    if crate::sql::last_name(&f.name) != "grouping" {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let mut mask = 0u32;
    for arg in &list.args {
        let FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) = arg else {
            return None;
        };
        mask = (mask << 1) | u32::from(!set.contains(a));
    }
    Some(mask)
}

fn has_window(e: &Expr) -> bool {
    let mut found = false;
    let mut e = e.clone();
    let _ = visit_expressions_mut(&mut e, |x| {
        if matches!(x, Expr::Function(f) if f.over.is_some()) {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// An ORDER BY item of the enclosing query, as a result column of the stacked sets: a
/// position, an output name, or an expression of the select list.
fn order_item(e: &Expr, items: &[(Expr, Ident)]) -> Result<Expr> {
    let column = |alias: &Ident| Expr::Identifier(Ident::with_quote('"', normalize(alias)));
    match e {
        Expr::Value(v) if matches!(v.value, Value::Number(..)) => Ok(e.clone()),
        Expr::Identifier(id) if items.iter().any(|(_, a)| normalize(a) == normalize(id)) => {
            Ok(Expr::Identifier(Ident::with_quote('"', normalize(id))))
        }
        _ => items
            .iter()
            .find(|(expr, _)| expr == e)
            .map(|(_, alias)| column(alias))
            .ok_or_else(|| {
                Error::unsupported(
                    format!(
                        "ORDER BY {e}: a query grouped by GROUPING SETS, ROLLUP or CUBE over a view is ordered by its selected columns"
                    ),
                    Some("order by a selected column, its name or its position".into()),
                )
            }),
    }
}
