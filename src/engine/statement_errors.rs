//! Errors of planning a statement, completed from the statement itself: the argument
//! types of an unknown function, and a subquery's reference to a view column of the outer
//! query.

use datafusion::sql::sqlparser::ast::Statement;

use crate::error::Error;
use crate::rewrite::{self, RewriteContext, RewriteReport};

/// The engine's "no field named x" for a column the rewrite has already resolved, when x
/// is a column of a view the statement reads: a subquery referred to the view's column in
/// the outer query, which the rewrite does not support (the view became a derived table).
pub(super) fn outer_view_column(
    error: Error,
    report: &RewriteReport,
    cx: &RewriteContext<'_>,
) -> Error {
    tracing::debug!(?error, views = ?report.views, "planning failed");
    let Error::UnknownColumn { name, .. } = &error else {
        return error;
    };
    let view = report.views.iter().find_map(|v| {
        cx.semantics
            .view(v)
            .filter(|view| view.column(name).is_some())
    });
    match view {
        Some(view) => Error::unsupported(
            format!(
                "a subquery cannot refer to column \"{name}\" of view \"{}\" in the outer query",
                view.name
            ),
            Some(
                "select the values in a subquery of their own, or join subqueries that each read one view"
                    .into(),
            ),
        ),
        None => error,
    }
}

/// "function f(...) does not exist" with the argument types of the call as written
/// (constants, casts and view columns; `unknown` where the type is not known before
/// planning), as PostgreSQL names them.
pub(super) fn with_argument_types(
    error: Error,
    statement: &Statement,
    cx: &RewriteContext<'_>,
) -> Error {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value, visit_expressions,
    };
    let Error::UndefinedFunction {
        name,
        args: None,
        suggestion,
    } = error
    else {
        return error;
    };
    let wanted = name.to_lowercase();
    let mut call = None;
    let _ = visit_expressions(statement, |e| {
        if let Expr::Function(f) = e
            && crate::sql::last_name(&f.name) == wanted
        {
            call = Some(f.clone());
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    });
    fn type_of(e: &Expr, cx: &RewriteContext<'_>) -> String {
        match e {
            Expr::Nested(inner) => type_of(inner, cx),
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) if n.parse::<i32>().is_ok() => "integer".into(),
                Value::Number(n, _) if n.parse::<i64>().is_ok() => "bigint".into(),
                Value::Number(..) => "numeric".into(),
                Value::Boolean(_) => "boolean".into(),
                _ => "unknown".into(),
            },
            Expr::Cast { data_type, .. } => {
                let text = data_type.to_string().to_lowercase();
                match text.split('(').next().unwrap_or(&text).trim() {
                    "int" | "int4" => "integer".into(),
                    "int8" => "bigint".into(),
                    "float8" | "double" => "double precision".into(),
                    "decimal" => "numeric".into(),
                    "varchar" => "character varying".into(),
                    "timestamp" => "timestamp without time zone".into(),
                    "timestamptz" => "timestamp with time zone".into(),
                    other => other.to_string(),
                }
            }
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                let column = match e {
                    Expr::Identifier(id) => rewrite::normalize(id),
                    Expr::CompoundIdentifier(parts) => {
                        parts.last().map(rewrite::normalize).unwrap_or_default()
                    }
                    _ => String::new(),
                };
                cx.semantics
                    .views
                    .iter()
                    .find_map(|v| v.column(&column))
                    .map(|c| crate::types::pg_type_of(&c.data_type).0.name.to_string())
                    .unwrap_or_else(|| "unknown".into())
            }
            _ => "unknown".into(),
        }
    }
    let args = call.map(|f| match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
                | FunctionArg::Named {
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => type_of(e, cx),
                _ => "unknown".into(),
            })
            .collect(),
        _ => Vec::new(),
    });
    Error::UndefinedFunction {
        name,
        args,
        suggestion,
    }
}

/// A column the rewrite or the engine does not find, where the name is a metric the
/// user's access rules deny: the denial (42501, or 42704 for a draft or retired metric),
/// as when the metric is named directly, however the query reaches it (a wrapper, a
/// CTE, an alias). "Does not exist" with a "did you mean" would hide the rule.
pub(super) fn denied_metric(error: Error, cx: &RewriteContext<'_>) -> Error {
    let Error::UnknownColumn { name, .. } = &error else {
        return error;
    };
    let last = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
    let denial = cx
        .semantics
        .access
        .denied_metrics
        .get(last)
        .or_else(|| cx.semantics.access.denied_metrics.get(&last.to_lowercase()));
    match denial {
        Some(denial) => denial.error("metric", last),
        None => error,
    }
}

/// A relation the engine does not find, where the name is the alias (or name) of a view
/// the statement reads in another block: a correlated subquery between views, which the
/// rewrite does not support (each view becomes a derived table of its own block): the
/// documented 0A000 naming the column, instead of "relation does not exist".
pub(super) fn outer_view_alias(
    error: Error,
    statement: &Statement,
    cx: &RewriteContext<'_>,
) -> Error {
    use datafusion::sql::sqlparser::ast::{TableFactor, Visit, Visitor};
    let Error::UnknownRelation { name, .. } = &error else {
        return error;
    };
    struct Aliases<'a> {
        wanted: &'a str,
        cx: &'a RewriteContext<'a>,
        view: Option<String>,
    }
    impl Visitor for Aliases<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> std::ops::ControlFlow<()> {
            if let TableFactor::Table {
                name: table, alias, ..
            } = factor
            {
                let table_name = crate::sql::last_name(table);
                let as_named = alias
                    .as_ref()
                    .map_or(table_name.clone(), |a| rewrite::normalize(&a.name));
                if as_named == self.wanted && self.cx.semantics.view(&table_name).is_some() {
                    self.view = Some(table_name);
                    return std::ops::ControlFlow::Break(());
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let wanted = name.to_lowercase();
    let mut aliases = Aliases {
        wanted: &wanted,
        cx,
        view: None,
    };
    let _ = statement.visit(&mut aliases);
    match aliases.view {
        Some(view) => Error::unsupported(
            format!(
                "a subquery cannot refer to view \"{view}\" (as \"{name}\") of the outer query: correlated subqueries between views are not supported"
            ),
            Some(
                "select the values in a subquery of their own, or join subqueries that each read one view"
                    .into(),
            ),
        ),
        None => error,
    }
}
