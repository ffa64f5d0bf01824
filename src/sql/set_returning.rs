//! Set-returning functions as PostgreSQL runs them, in terms the engine has.
//!
//! * In a select list, `generate_series(..)`, `generate_subscripts(a, d)` and
//!   `information_schema._pg_expandarray(a)` (and its `.x`/`.n` fields) return one row
//!   per element: they become `unnest(<list>)`. Several in one list advance together,
//!   as in PostgreSQL 10 and later.
//! * In FROM, a function the engine has no table function for is a one-row relation
//!   whose single column is named after the alias (`FROM string_to_array(s, ',') AS p`);
//!   `generate_subscripts` there returns its subscripts. `UNNEST(a) AS u` names its one
//!   column `u`.
//! * `FROM t CROSS JOIN UNNEST(t.a) AS u` (and `FROM t, UNNEST(t.a) AS u`), where the
//!   function reads the table before it (PostgreSQL's implicit LATERAL), becomes
//!   `FROM (SELECT t.*, UNNEST(t.a) AS u FROM t) AS t`: one row per element, as the
//!   engine runs it in a select list.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Query, SelectItem, SetExpr, Statement, TableAlias, TableFactor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Table functions the engine runs itself in FROM.
const ENGINE_TABLE_FUNCTIONS: &[&str] = &["generate_series", "range", "unnest"];

/// The visitor applying both rules.
pub struct SetReturning;

/// The function's name as registered: lower case, without a catalog schema.
fn function_name(name: &ObjectName) -> String {
    let mut name = name.clone();
    super::strip_function_schema(&mut name);
    name.0
        .iter()
        .filter_map(ObjectNamePart::as_ident)
        .map(|i| i.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

fn args_of(f: &Function) -> Vec<Expr> {
    let FunctionArguments::List(list) = &f.args else {
        return Vec::new();
    };
    list.args
        .iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// The list a set-returning call returns one row per element of, as SQL.
fn element_list(f: &Function) -> Option<String> {
    let args = args_of(f);
    match (function_name(&f.name).as_str(), args.as_slice()) {
        ("generate_series", [_, _] | [_, _, _]) => Some(format!(
            "generate_series({})",
            args.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        ("generate_subscripts", [array, dim]) => {
            Some(format!("generate_series(1, array_length({array}, {dim}))"))
        }
        ("generate_subscripts", [array, dim, reverse]) => Some(format!(
            "CASE WHEN {reverse} THEN generate_series(array_length({array}, {dim}), 1, -1) \
             ELSE generate_series(1, array_length({array}, {dim})) END"
        )),
        ("_pg_expandarray", [array]) => Some(format!("kp_expandarray({array})")),
        _ => None,
    }
}

/// `(information_schema._pg_expandarray(a)).x` / `.n` → the list of that field.
fn expandarray_field(root: &Expr, chain: &[AccessExpr]) -> Option<String> {
    let root = match root {
        Expr::Nested(inner) => inner.as_ref(),
        other => other,
    };
    let (Expr::Function(f), [AccessExpr::Dot(Expr::Identifier(field))]) = (root, chain) else {
        return None;
    };
    let args = args_of(f);
    match (function_name(&f.name).as_str(), args.as_slice()) {
        ("_pg_expandarray", [array]) => match field.value.to_lowercase().as_str() {
            "x" => Some(format!("{array}")),
            "n" => Some(format!("generate_series(1, cardinality({array}))")),
            _ => None,
        },
        _ => None,
    }
}

/// `generate_series(start, stop, step)` over decimals (the engine's is integers and
/// times only): `start + i * step` for `i` in `0..=floor((stop - start) / step)`.
fn decimal_series(f: &Function) -> Option<Expr> {
    let args = args_of(f);
    let decimal = |e: &Expr| e.to_string().contains('.');
    match (function_name(&f.name).as_str(), args.as_slice()) {
        ("generate_series", [start, stop, step]) if args.iter().any(decimal) => {
            super::parse_expr(&format!(
                "(CAST({start} AS DOUBLE) + unnest(generate_series(0, \
                 CAST(floor((CAST({stop} AS DOUBLE) - {start}) / {step}) AS BIGINT))) * {step})"
            ))
        }
        _ => None,
    }
}

fn rewrite_item(expr: &mut Expr) {
    if let Expr::Function(f) = expr
        && let Some(series) = decimal_series(f)
    {
        *expr = series;
        return;
    }
    let list = match expr {
        Expr::Function(f) if f.over.is_none() => element_list(f),
        Expr::CompoundFieldAccess { root, access_chain } => expandarray_field(root, access_chain),
        Expr::Nested(inner) => return rewrite_item(inner),
        _ => None,
    };
    if let Some(unnested) = list.and_then(|l| super::parse_expr(&format!("unnest({l})"))) {
        *expr = unnested;
    }
}

fn rewrite_projections(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                {
                    rewrite_item(e);
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_projections(left);
            rewrite_projections(right);
        }
        SetExpr::Query(q) => rewrite_projections(q.body.as_mut()),
        _ => {}
    }
}

/// The name `UNNEST(...) AS u [(c)]` gives its one column.
fn unnest_column(factor: &TableFactor) -> Option<Ident> {
    let TableFactor::UNNEST {
        alias: Some(alias),
        array_exprs,
        with_offset: false,
        with_ordinality: false,
        ..
    } = factor
    else {
        return None;
    };
    if array_exprs.len() != 1 || alias.columns.len() > 1 {
        return None;
    }
    Some(
        alias
            .columns
            .first()
            .map_or_else(|| alias.name.clone(), |c| c.name.clone()),
    )
}

/// Whether `node` names a column qualified by `alias` (`alias.column`).
fn mentions<N: datafusion::sql::sqlparser::ast::Visit>(node: &N, alias: &str) -> bool {
    let outcome = datafusion::sql::sqlparser::ast::visit_expressions(node, |x| {
        if let Expr::CompoundIdentifier(parts) = x
            && parts.len() >= 2
            && parts[parts.len() - 2].value.eq_ignore_ascii_case(alias)
        {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    outcome.is_break()
}

/// Whether `expr` reads columns, each unqualified or qualified by `alias`.
fn reads_columns_of(expr: &Expr, alias: &str) -> bool {
    let mut reads = false;
    let outcome = datafusion::sql::sqlparser::ast::visit_expressions(expr, |x| {
        match x {
            Expr::Identifier(_) => reads = true,
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                if !parts[0].value.eq_ignore_ascii_case(alias) {
                    return ControlFlow::Break(());
                }
                reads = true;
            }
            Expr::CompoundIdentifier(_) => return ControlFlow::Break(()),
            _ => {}
        }
        ControlFlow::Continue(())
    });
    reads && outcome.is_continue()
}

/// `t CROSS JOIN UNNEST(t.a) AS u` → `(SELECT t.*, UNNEST(t.a) AS u FROM t) AS t`, when
/// the array reads `t` and the select names no `u.column` (`u` no longer exists after).
fn lateral_unnest(
    relation: &mut TableFactor,
    unnest: &TableFactor,
    select: &datafusion::sql::sqlparser::ast::Select,
) -> bool {
    let Some(column) = unnest_column(unnest) else {
        return false;
    };
    let TableFactor::UNNEST {
        alias: Some(unnest_alias),
        array_exprs,
        ..
    } = unnest
    else {
        return false;
    };
    let own = match relation {
        TableFactor::Table { alias: Some(a), .. } | TableFactor::Derived { alias: Some(a), .. } => {
            a.name.clone()
        }
        TableFactor::Table {
            name, alias: None, ..
        } => match name.0.last().and_then(ObjectNamePart::as_ident) {
            Some(i) => i.clone(),
            None => return false,
        },
        _ => return false,
    };
    let array = &array_exprs[0];
    if !reads_columns_of(array, &own.value) || mentions(select, &unnest_alias.name.value) {
        return false;
    }
    let sql = format!("SELECT {own}.*, UNNEST({array}) AS {column} FROM {relation}");
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, &sql) else {
        return false;
    };
    let Some(Statement::Query(subquery)) = statements.pop() else {
        return false;
    };
    *relation = TableFactor::Derived {
        lateral: false,
        subquery,
        alias: Some(TableAlias {
            explicit: true,
            name: own,
            columns: Vec::new(),
            at: None,
        }),
        sample: None,
    };
    true
}

/// Apply [`lateral_unnest`] to each FROM item of a select.
fn rewrite_lateral_unnests(body: &mut SetExpr) {
    let SetExpr::Select(select) = body else {
        return;
    };
    // Most selects have no UNNEST in FROM: only those pay for the copy below.
    let candidate = select.from.iter().enumerate().any(|(i, from)| {
        from.joins
            .first()
            .is_some_and(|j| matches!(j.relation, TableFactor::UNNEST { .. }))
            || (i > 0 && matches!(from.relation, TableFactor::UNNEST { .. }))
    });
    if !candidate {
        return;
    }
    let original = select.as_ref().clone();
    for from in &mut select.from {
        if let Some(first) = from.joins.first()
            && matches!(
                first.join_operator,
                datafusion::sql::sqlparser::ast::JoinOperator::CrossJoin(
                    datafusion::sql::sqlparser::ast::JoinConstraint::None
                )
            )
        {
            let unnest = first.relation.clone();
            if lateral_unnest(&mut from.relation, &unnest, &original) {
                from.joins.remove(0);
            }
        }
    }
    let mut i = 1;
    while i < select.from.len() {
        let (before, after) = select.from.split_at_mut(i);
        let previous = &mut before[i - 1];
        let current = &after[0];
        if previous.joins.is_empty()
            && current.joins.is_empty()
            && lateral_unnest(&mut previous.relation, &current.relation, &original)
        {
            select.from.remove(i);
        } else {
            i += 1;
        }
    }
}

/// A function in FROM that the engine has no table function for → a derived table.
fn rewrite_from_function(factor: &mut TableFactor) {
    if let Some(column) = unnest_column(factor)
        && let TableFactor::UNNEST {
            alias: Some(alias), ..
        } = factor
        && alias.columns.is_empty()
    {
        alias
            .columns
            .push(datafusion::sql::sqlparser::ast::TableAliasColumnDef {
                name: column,
                data_type: None,
            });
        return;
    }
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = factor
    else {
        return;
    };
    let function = function_name(name);
    if ENGINE_TABLE_FUNCTIONS.contains(&function.as_str()) {
        *name = ObjectName::from(vec![Ident::new(function.clone())]);
        // A one-column function's column is named after the alias (`AS i` → `i`).
        if let Some(alias) = alias.as_mut()
            && alias.columns.is_empty()
            && function != "unnest"
        {
            alias
                .columns
                .push(datafusion::sql::sqlparser::ast::TableAliasColumnDef {
                    name: alias.name.clone(),
                    data_type: None,
                });
        }
        return;
    }
    let rendered: Vec<String> = args.args.iter().map(ToString::to_string).collect();
    let call = format!("{function}({})", rendered.join(", "));
    let column = alias
        .as_ref()
        .and_then(|a| a.columns.first().map(|c| c.name.clone()))
        .or_else(|| alias.as_ref().map(|a| a.name.clone()))
        .unwrap_or_else(|| Ident::new(function.clone()));
    let select = if function == "generate_subscripts" {
        let Some(list) = super::parse_expr(&call).and_then(|e| match e {
            Expr::Function(f) => element_list(&f),
            _ => None,
        }) else {
            return;
        };
        format!("SELECT unnest({list}) AS {column}")
    } else {
        format!("SELECT {call} AS {column}")
    };
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, &select) else {
        return;
    };
    let Some(Statement::Query(subquery)) = statements.pop() else {
        return;
    };
    let alias = alias.clone().unwrap_or_else(|| TableAlias {
        explicit: false,
        name: Ident::new(function),
        columns: Vec::new(),
        at: None,
    });
    *factor = TableFactor::Derived {
        lateral: false,
        subquery,
        alias: Some(TableAlias {
            columns: Vec::new(),
            ..alias
        }),
        sample: None,
    };
}

impl VisitorMut for SetReturning {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        rewrite_lateral_unnests(query.body.as_mut());
        rewrite_projections(query.body.as_mut());
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        rewrite_from_function(factor);
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statements = crate::sql::parse(sql).unwrap();
        let _ = statements[0].visit(&mut SetReturning);
        statements[0].to_string()
    }

    use datafusion::sql::sqlparser::ast::VisitMut;

    #[test]
    fn select_list_functions_return_rows() {
        assert_eq!(
            rewritten("SELECT generate_series(1, 3) AS g"),
            "SELECT unnest(generate_series(1, 3)) AS g"
        );
        assert_eq!(
            rewritten("SELECT generate_subscripts(a, 1) FROM t"),
            "SELECT unnest(generate_series(1, array_length(a, 1))) FROM t"
        );
        assert_eq!(
            rewritten("SELECT (information_schema._pg_expandarray(i.indkey)).n FROM i"),
            "SELECT unnest(generate_series(1, cardinality(i.indkey))) FROM i"
        );
    }

    #[test]
    fn an_unnest_over_the_table_before_it_is_a_select_list_unnest() {
        assert_eq!(
            rewritten("SELECT k FROM t CROSS JOIN UNNEST(t.keys) AS k JOIN c ON c.n = k"),
            "SELECT k FROM (SELECT t.*, UNNEST(t.keys) AS k FROM t) AS t JOIN c ON c.n = k"
        );
        assert_eq!(
            rewritten("SELECT k FROM pg_catalog.t AS con CROSS JOIN UNNEST(keys) AS k"),
            "SELECT k FROM (SELECT con.*, UNNEST(keys) AS k FROM pg_catalog.t AS con) AS con"
        );
        assert_eq!(
            rewritten("SELECT x.k FROM pg_catalog.t AS con, UNNEST(con.keys) AS x(k)"),
            "SELECT x.k FROM pg_catalog.t AS con, UNNEST(con.keys) AS x (k)",
            "a qualified reference to the unnest keeps it where it is"
        );
        assert_eq!(
            rewritten("SELECT u FROM UNNEST(ARRAY[1, 2]) AS u"),
            "SELECT u FROM UNNEST(ARRAY[1, 2]) AS u (u)"
        );
    }

    #[test]
    fn scalar_functions_in_from_are_one_row_relations() {
        assert_eq!(
            rewritten("SELECT s[1] FROM string_to_array('a,b', ',') AS s"),
            "SELECT s[1] FROM (SELECT string_to_array('a,b', ',') AS s) AS s"
        );
        assert_eq!(
            rewritten("SELECT n FROM pg_catalog.generate_series(1, 3) pos(n)"),
            "SELECT n FROM generate_series(1, 3) pos (n)"
        );
    }
}
