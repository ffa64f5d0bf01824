//! Correlated subqueries in the form the engine decorrelates. The engine decorrelates a
//! scalar subquery when it is aggregated, its correlated conditions are equalities and
//! its select list reads no outer column; catalog queries break each of these. So:
//!
//! - catalog lookups (`(SELECT v FROM t WHERE t.k = outer.k AND outer.flag)`) select
//!   `max(v)`, outer columns equated to inner ones are substituted, and conditions on outer
//!   columns only are hoisted out of the subquery ([`scalar`]);
//! - `outer.x = ANY(t.arr)` becomes an equality with the array's elements, unnested in a
//!   derived table in place of `t`;
//! - a select item that mixes outer and inner columns (`f(outer.a, t.b)`) becomes
//!   `f(outer.a, <lookup of t.b>)`, guarded by a lookup of whether a row exists;
//! - `EXISTS (...)` in a select list becomes a lookup of `1` that is not NULL
//!   ([`exists_in_select_list`]).

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CaseWhen, Expr, GroupByExpr, Query, SelectItem, SetExpr, TableFactor, Value,
    VisitMut, VisitorMut,
};
use std::ops::ControlFlow;

use super::{call, last_name};

/// The expression that replaces the scalar subquery `query` (see the module docs).
pub fn scalar(query: &Query) -> Expr {
    split_mixed_item(query).unwrap_or_else(|| lookup(query.clone()))
}

/// 42601 for a scalar subquery without a column (`(SELECT FROM t)`), as PostgreSQL
/// refuses it; the engine would index the first column of its empty schema.
pub fn check_scalar_subqueries(
    statement: &datafusion::sql::sqlparser::ast::Statement,
) -> crate::error::Result<()> {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    struct V;
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Subquery(query) = expr
                && let SetExpr::Select(select) = query.body.as_ref()
                && select.projection.is_empty()
            {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    match statement.visit(&mut V) {
        ControlFlow::Break(()) => Err(crate::error::Error::Syntax(
            "subquery must return only one column".into(),
        )),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Whether `expr` contains a subquery.
pub(crate) fn has_subquery(expr: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    struct V(bool);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.0 = true;
            ControlFlow::Break(())
        }
    }
    let mut v = V(false);
    let _ = expr.visit(&mut v);
    v.0
}

/// `(query)` reshaped by [`aggregate_scalar_lookup`], wrapped in `CASE WHEN <hoisted>`.
fn lookup(mut query: Query) -> Expr {
    let hoisted = aggregate_scalar_lookup(&mut query);
    let subquery = Expr::Subquery(Box::new(query));
    match hoisted {
        Some(condition) => Expr::Case {
            case_token: AttachedToken::empty(),
            end_token: AttachedToken::empty(),
            operand: None,
            conditions: vec![CaseWhen {
                condition,
                result: subquery,
            }],
            else_result: None,
        },
        None => subquery,
    }
}

/// The single select item of a plain `SELECT item FROM ... WHERE ...`.
fn single_item(query: &mut Query) -> Option<&mut Expr> {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    match select.projection.as_mut_slice() {
        [SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }] => Some(e),
        _ => None,
    }
}

/// `(SELECT f(outer.a, t.b) FROM t WHERE ...)` →
/// `CASE WHEN (SELECT 1 FROM t WHERE ...) IS NOT NULL THEN f(outer.a, (SELECT t.b FROM t WHERE ...)) END`,
/// each lookup then reshaped by [`lookup`]. Exact for a subquery of at most one row (a
/// scalar subquery of more is an error in PostgreSQL).
fn split_mixed_item(query: &Query) -> Option<Expr> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if select.selection.is_none() || select.from.is_empty() {
        return None;
    }
    let inner = from_aliases(select);
    let mut probe = query.clone();
    let item = single_item(&mut probe)?.clone();
    if crate::sql::contains_aggregate(&item) || side(&item, &inner) != Side::Mixed {
        return None;
    }
    let mut columns: Vec<Expr> = Vec::new();
    {
        use datafusion::sql::sqlparser::ast::{Visit, Visitor};
        struct Columns<'a> {
            inner: &'a [String],
            found: &'a mut Vec<Expr>,
        }
        impl Visitor for Columns<'_> {
            type Break = ();
            fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
                let is_inner = match expr {
                    Expr::CompoundIdentifier(parts) if parts.len() >= 2 => self
                        .inner
                        .contains(&parts[parts.len() - 2].value.to_lowercase()),
                    Expr::Identifier(_) => true,
                    _ => false,
                };
                if is_inner && !self.found.contains(expr) {
                    self.found.push(expr.clone());
                }
                ControlFlow::Continue(())
            }
        }
        let _ = item.visit(&mut Columns {
            inner: &inner,
            found: &mut columns,
        });
    }
    let lookups: Vec<(Expr, Expr)> = columns
        .into_iter()
        .map(|column| {
            let mut q = query.clone();
            if let Some(e) = single_item(&mut q) {
                *e = column.clone();
            }
            (column, lookup(q))
        })
        .collect();
    struct Replace<'a>(&'a [(Expr, Expr)]);
    impl VisitorMut for Replace<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Some((_, replacement)) = self.0.iter().find(|(c, _)| c == expr) {
                *expr = replacement.clone();
            }
            ControlFlow::Continue(())
        }
    }
    let mut item = item;
    let _ = item.visit(&mut Replace(&lookups));
    let mut guard = query.clone();
    *single_item(&mut guard)? = Expr::Value(Value::Number("1".into(), false).into());
    Some(Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions: vec![CaseWhen {
            condition: Expr::IsNotNull(Box::new(lookup(guard))),
            result: item,
        }],
        else_result: None,
    })
}

/// `EXISTS (SELECT ... FROM t WHERE ...)` directly in a select item (not inside a nested
/// query) → `(SELECT 1 FROM t WHERE ...) IS NOT NULL` (`IS NULL` for `NOT EXISTS`), which
/// [`scalar`] then reshapes. The engine runs `EXISTS` in `WHERE` itself.
pub fn exists_in_select_list(item: &mut Expr) {
    super::visit_block_exprs_mut(item, |expr| {
        if let Expr::Exists { subquery, negated } = expr {
            let mut query = subquery.as_ref().clone();
            let Some(item) = single_item(&mut query) else {
                return ControlFlow::Continue(());
            };
            *item = Expr::Value(Value::Number("1".into(), false).into());
            let lookup = Box::new(Expr::Subquery(Box::new(query)));
            *expr = if *negated {
                Expr::IsNull(lookup)
            } else {
                Expr::IsNotNull(lookup)
            };
        }
        ControlFlow::Continue(())
    });
}

/// `(SELECT v FROM ... WHERE ...)` → `(SELECT max(v) FROM ... WHERE ...)`, with outer
/// columns equated to inner ones substituted in the other conditions, and conditions on
/// outer columns only returned to be hoisted out (`CASE WHEN cond THEN (subquery) END`;
/// exact because `max` over no rows is NULL).
fn aggregate_scalar_lookup(query: &mut Query) -> Option<Expr> {
    if query.order_by.is_some() || query.limit_clause.is_some() || query.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let plain = select.selection.is_some()
        && select.having.is_none()
        && select.distinct.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty())
        && !select.from.is_empty();
    if !plain || select.projection.len() != 1 {
        return None;
    }
    let item = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    if crate::sql::contains_aggregate(item) {
        return None;
    }
    let value = std::mem::replace(item, Expr::Value(Value::Null.into()));
    *item = Expr::Function(call("max", vec![value]));

    let inner = from_aliases(select);
    let selection = select.selection.take()?;
    let mut conjuncts = crate::sql::split_and(selection);
    for (n, c) in conjuncts.iter_mut().enumerate() {
        any_as_equality(select, &inner, c, n);
    }
    // outer column → inner column, from `inner = outer` conditions
    let mut equal: Vec<(Expr, Expr)> = Vec::new();
    for c in &conjuncts {
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = c
        {
            match (side(left, &inner), side(right, &inner)) {
                (Side::Inner, Side::Outer) => equal.push(((**right).clone(), (**left).clone())),
                (Side::Outer, Side::Inner) => equal.push(((**left).clone(), (**right).clone())),
                _ => {}
            }
        }
    }
    let mut hoisted = Vec::new();
    let mut kept = Vec::new();
    for mut c in conjuncts.drain(..) {
        let is_equality = matches!(&c, Expr::BinaryOp { left, op: BinaryOperator::Eq, right }
            if matches!((side(left, &inner), side(right, &inner)), (Side::Inner, Side::Outer) | (Side::Outer, Side::Inner)));
        if !is_equality {
            let mut sub = Substitute { equal: &equal };
            let _ = c.visit(&mut sub);
        }
        if side(&c, &inner) == Side::Outer {
            hoisted.push(c);
        } else {
            kept.push(c);
        }
    }
    select.selection = and_all(kept);
    and_all(hoisted)
}

/// `outer = ANY(t.arr)` → `t.kp_any_<n> = outer`, with `t` replaced by
/// `(SELECT *, unnest(arr) AS kp_any_<n> FROM <t's table>) AS t`.
fn any_as_equality(
    select: &mut datafusion::sql::sqlparser::ast::Select,
    inner: &[String],
    conjunct: &mut Expr,
    n: usize,
) {
    let Expr::AnyOp {
        left,
        compare_op: BinaryOperator::Eq,
        right,
        ..
    } = conjunct
    else {
        return;
    };
    let Expr::CompoundIdentifier(parts) = right.as_ref() else {
        return;
    };
    let ([alias, column], Side::Outer) = (parts.as_slice(), side(left, inner)) else {
        return;
    };
    let element = format!("kp_any_{n}");
    let alias_name = alias.value.to_lowercase();
    let factors = select.from.iter_mut().flat_map(|twj| {
        std::iter::once(&mut twj.relation).chain(twj.joins.iter_mut().map(|j| &mut j.relation))
    });
    for factor in factors {
        let TableFactor::Table {
            name,
            alias: table_alias,
            ..
        } = factor
        else {
            continue;
        };
        let this = table_alias
            .as_ref()
            .map(|a| a.name.value.to_lowercase())
            .unwrap_or_else(|| last_name(name));
        if this != alias_name {
            continue;
        }
        let sql = format!("SELECT *, unnest({column}) AS {element} FROM {name}");
        let Some(query) = super::parse(&sql)
            .ok()
            .and_then(|mut statements| statements.pop())
            .and_then(|statement| match statement {
                datafusion::sql::sqlparser::ast::Statement::Query(q) => Some(q),
                _ => None,
            })
        else {
            return;
        };
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: query,
            alias: Some(datafusion::sql::sqlparser::ast::TableAlias {
                explicit: true,
                name: alias.clone(),
                columns: Vec::new(),
                at: None,
            }),
            sample: None,
        };
        let outer = std::mem::replace(left.as_mut(), Expr::Value(Value::Null.into()));
        *conjunct = Expr::BinaryOp {
            left: Box::new(Expr::CompoundIdentifier(vec![
                alias.clone(),
                datafusion::sql::sqlparser::ast::Ident::new(element),
            ])),
            op: BinaryOperator::Eq,
            right: Box::new(outer),
        };
        return;
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Side {
    /// Only columns of the subquery's own FROM (or no columns).
    Inner,
    /// Only columns qualified by other names.
    Outer,
    /// Both.
    Mixed,
}

fn side(expr: &Expr, inner: &[String]) -> Side {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    struct V<'a> {
        inner: &'a [String],
        seen_inner: bool,
        seen_outer: bool,
    }
    impl Visitor for V<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                    let qualifier = parts[parts.len() - 2].value.to_lowercase();
                    if self.inner.contains(&qualifier) {
                        self.seen_inner = true;
                    } else {
                        self.seen_outer = true;
                    }
                }
                Expr::Identifier(_) => self.seen_inner = true,
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V {
        inner,
        seen_inner: false,
        seen_outer: false,
    };
    let _ = expr.visit(&mut v);
    match (v.seen_inner, v.seen_outer) {
        (_, false) => Side::Inner,
        (false, true) => Side::Outer,
        (true, true) => Side::Mixed,
    }
}

struct Substitute<'a> {
    equal: &'a [(Expr, Expr)],
}

impl VisitorMut for Substitute<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some((_, inner)) = self.equal.iter().find(|(outer, _)| outer == expr) {
            *expr = inner.clone();
        }
        ControlFlow::Continue(())
    }
}

pub(crate) fn from_aliases(select: &datafusion::sql::sqlparser::ast::Select) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |factor: &TableFactor| match factor {
        TableFactor::Table { name, alias, .. } => out.push(
            alias
                .as_ref()
                .map(|a| a.name.value.to_lowercase())
                .unwrap_or_else(|| last_name(name)),
        ),
        TableFactor::Derived { alias: Some(a), .. }
        | TableFactor::Function { alias: Some(a), .. } => out.push(a.name.value.to_lowercase()),
        _ => {}
    };
    for twj in &select.from {
        add(&twj.relation);
        for j in &twj.joins {
            add(&j.relation);
        }
    }
    out
}

fn and_all(exprs: Vec<Expr>) -> Option<Expr> {
    exprs.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    })
}
