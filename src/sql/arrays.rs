//! `ARRAY(subquery)` in the forms the engine plans: over `unnest(arr)` it is
//! `array_transform`, otherwise an `array_agg` lookup (which the engine decorrelates).

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments,
    LambdaFunction, LambdaFunctionParameter, LambdaSyntax, OneOrManyWithParens, SelectItem,
    SetExpr, Statement, TableFactor,
};

use super::{call, last_name};

/// `ARRAY(SELECT x FROM ... [ORDER BY o])` → `(SELECT array_agg(x [ORDER BY o]) FROM ...)`
/// (a correlated one is then an aggregated lookup, which the engine decorrelates). Rows of
/// a series in FROM (`generate_series(a, b) AS i`) come in the order it generates them.
pub(super) fn array_of_query(f: &Function) -> Option<Expr> {
    use datafusion::sql::sqlparser::ast::{
        FunctionArgumentClause, FunctionArgumentList, OrderByExpr, OrderByKind, OrderByOptions,
    };
    let FunctionArguments::Subquery(query) = &f.args else {
        return None;
    };
    if query.limit_clause.is_some() || query.with.is_some() || query.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let grouped = !matches!(
        &select.group_by,
        datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) if e.is_empty()
    );
    if select.distinct.is_some() || grouped || select.having.is_some() {
        return None;
    }
    let item = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] => e.clone(),
        _ => return None,
    };
    if super::contains_aggregate(&item) {
        return None;
    }
    let mut order: Vec<OrderByExpr> = match &query.order_by {
        Some(o) => match &o.kind {
            OrderByKind::Expressions(exprs) => exprs.clone(),
            OrderByKind::All(_) => return None,
        },
        None => Vec::new(),
    };
    if order.is_empty()
        && let [only] = select.from.as_slice()
        && only.joins.is_empty()
        && let TableFactor::Table {
            name,
            args: Some(args),
            alias: Some(alias),
            ..
        } = &only.relation
        && last_name(name) == "generate_series"
    {
        let column = alias
            .columns
            .first()
            .map(|c| c.name.clone())
            .unwrap_or_else(|| alias.name.clone());
        // The order it generates: by value, times the sign of the step.
        let value = Expr::CompoundIdentifier(vec![alias.name.clone(), column]);
        let expr = match args.args.get(2) {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(step))) => Expr::BinaryOp {
                left: Box::new(value),
                op: BinaryOperator::Multiply,
                right: Box::new(Expr::Function(call("signum", vec![step.clone()]))),
            },
            _ => value,
        };
        order.push(OrderByExpr {
            expr,
            options: OrderByOptions {
                asc: None,
                nulls_first: None,
            },
            with_fill: None,
        });
    }
    let mut lookup = query.as_ref().clone();
    lookup.order_by = None;
    if !super::subquery::has_subquery(&item) {
        let mut aggregate = call("array_agg", vec![item]);
        if let FunctionArguments::List(FunctionArgumentList { clauses, .. }) = &mut aggregate.args
            && !order.is_empty()
        {
            clauses.push(FunctionArgumentClause::OrderBy(order));
        }
        if let SetExpr::Select(select) = lookup.body.as_mut() {
            select.projection = vec![SelectItem::UnnamedExpr(Expr::Function(aggregate))];
        }
        return Some(Expr::Subquery(Box::new(lookup)));
    }
    // An item with a subquery of its own: the items (and sort keys) in a derived table,
    // so that the engine plans that subquery in a select list, not inside an aggregate.
    let mut items = vec![SelectItem::ExprWithAlias {
        expr: item,
        alias: datafusion::sql::sqlparser::ast::Ident::new("kp_item"),
    }];
    let mut sorted = Vec::new();
    for (n, o) in order.into_iter().enumerate() {
        let name = datafusion::sql::sqlparser::ast::Ident::new(format!("kp_order{n}"));
        items.push(SelectItem::ExprWithAlias {
            expr: o.expr.clone(),
            alias: name.clone(),
        });
        sorted.push(OrderByExpr {
            expr: Expr::CompoundIdentifier(vec![
                datafusion::sql::sqlparser::ast::Ident::new("kp_array"),
                name,
            ]),
            ..o
        });
    }
    if let SetExpr::Select(select) = lookup.body.as_mut() {
        select.projection = items;
    }
    let mut aggregate = call("array_agg", vec![super::parse_expr("kp_array.kp_item")?]);
    if let FunctionArguments::List(FunctionArgumentList { clauses, .. }) = &mut aggregate.args
        && !sorted.is_empty()
    {
        clauses.push(FunctionArgumentClause::OrderBy(sorted));
    }
    let mut outer = super::parse("SELECT 1 FROM t AS kp_array")
        .ok()?
        .pop()
        .and_then(|s| match s {
            Statement::Query(q) => Some(q),
            _ => None,
        })?;
    if let SetExpr::Select(select) = outer.body.as_mut() {
        select.projection = vec![SelectItem::UnnamedExpr(Expr::Function(aggregate))];
        if let Some(from) = select.from.first_mut() {
            from.relation = TableFactor::Derived {
                lateral: false,
                subquery: Box::new(lookup),
                alias: Some(datafusion::sql::sqlparser::ast::TableAlias {
                    explicit: true,
                    name: datafusion::sql::sqlparser::ast::Ident::new("kp_array"),
                    columns: Vec::new(),
                    at: None,
                }),
                sample: None,
            };
        }
    }
    Some(Expr::Subquery(outer))
}

/// `ARRAY(SELECT f(x) FROM unnest(arr) x)` → `array_transform(arr, x -> f(x))`.
pub(super) fn array_of_unnest(f: &Function) -> Option<Expr> {
    let FunctionArguments::Subquery(query) = &f.args else {
        return None;
    };
    if query.order_by.is_some() || query.limit_clause.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    if select.selection.is_some() || select.from.len() != 1 || !select.from[0].joins.is_empty() {
        return None;
    }
    let (element, array) = match &select.from[0].relation {
        TableFactor::Table {
            name,
            args: Some(args),
            alias: Some(alias),
            ..
        } if last_name(name) == "unnest" => match args.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(array))] => {
                (alias.name.clone(), array.clone())
            }
            _ => return None,
        },
        TableFactor::Function {
            name,
            args,
            alias: Some(alias),
            ..
        } if last_name(name) == "unnest" => match args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(array))] => {
                (alias.name.clone(), array.clone())
            }
            _ => return None,
        },
        _ => return None,
    };
    let body = match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] => e.clone(),
        _ => return None,
    };
    let lambda = Expr::Lambda(LambdaFunction {
        params: OneOrManyWithParens::One(LambdaFunctionParameter {
            name: element,
            data_type: None,
        }),
        body: Box::new(body),
        syntax: LambdaSyntax::Arrow,
    });
    Some(Expr::Function(call("array_transform", vec![array, lambda])))
}
