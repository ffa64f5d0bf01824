//! Correlated scalar subqueries in the form the engine decorrelates: catalog lookups
//! (`(SELECT v FROM t WHERE t.k = outer.k AND outer.flag)`) select `max(v)`, outer
//! columns equated to inner ones are substituted, and conditions on outer columns only
//! are hoisted out of the subquery.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, Query, SelectItem, SetExpr, TableFactor, Value, VisitMut,
    VisitorMut,
};
use std::ops::ControlFlow;

use super::{call, last_name};

/// `(SELECT v FROM ... WHERE ...)` → `(SELECT max(v) FROM ... WHERE ...)`, with outer
/// columns equated to inner ones substituted in the other conditions, and conditions on
/// outer columns only returned to be hoisted out (`CASE WHEN cond THEN (subquery) END`;
/// exact because `max` over no rows is NULL).
pub fn aggregate_scalar_lookup(query: &mut Query) -> Option<Expr> {
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
    if crate::sql::contains_aggregate(item) || matches!(item, Expr::Value(_)) {
        return None;
    }
    let value = std::mem::replace(item, Expr::Value(Value::Null.into()));
    *item = Expr::Function(call("max", vec![value]));

    let inner = from_aliases(select);
    let selection = select.selection.take()?;
    let mut conjuncts = crate::sql::split_and(selection);
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

fn from_aliases(select: &datafusion::sql::sqlparser::ast::Select) -> Vec<String> {
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
