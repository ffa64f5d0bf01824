//! Parse client SQL and classify each statement into a [`Command`].
//!
//! Invariant: this is the only place that parses client SQL text. Everything downstream
//! works on syntax trees. Client quirks that are PostgreSQL syntax DataFusion does not
//! take are smoothed in [`compat`], each rule with its test.

mod arrays;
mod command;
pub mod compat;
mod copy;
pub mod literals;
pub mod naming;
pub mod session_values;
pub mod set_returning;
pub mod subquery;

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, ObjectNamePart, Query, SetExpr, Statement, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Error, Result};

pub use command::{Command, FetchCount, classify};
pub use copy::{CopyFormat, CopyOptions, CopyOut, ForceQuote};

/// Aggregate functions: a call of one of these without OVER is an aggregate.
pub const AGGREGATES: &[&str] = &[
    "sum",
    "count",
    "avg",
    "mean",
    "min",
    "max",
    "any_value",
    "first_value",
    "last_value",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "median",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "percentile_cont",
    "mode",
    "bit_and",
    "bit_or",
    "bit_xor",
    "corr",
    "covar",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "regr_intercept",
    "regr_count",
    "regr_r2",
    "regr_avgx",
    "regr_avgy",
    "regr_sxx",
    "regr_syy",
    "regr_sxy",
    "json_agg",
    "jsonb_agg",
];

/// Is `expr` a call of an aggregate function (not a window function)?
pub fn is_aggregate_call(expr: &Expr) -> bool {
    match expr {
        Expr::Function(f) if f.over.is_none() => {
            let name = f
                .name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default();
            AGGREGATES.contains(&name.as_str())
        }
        _ => false,
    }
}

/// Does `expr` contain an aggregate call of its own block (aggregates inside a nested
/// subquery belong to that subquery)?
pub fn contains_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    visit_block_exprs(expr, |e| {
        found = is_aggregate_call(e);
        if found {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// Call `f` on each expression of `node` that belongs to its own query block, before the
/// expression's children: not those of nested queries (an aggregate or a column inside a
/// subquery is that subquery's). `f` breaking stops the walk.
pub(crate) fn visit_block_exprs<N: Visit + ?Sized>(
    node: &N,
    f: impl FnMut(&Expr) -> ControlFlow<()>,
) {
    struct V<F> {
        f: F,
        depth: usize,
    }
    impl<F: FnMut(&Expr) -> ControlFlow<()>> Visitor for V<F> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if self.depth == 0 {
                return (self.f)(expr);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = node.visit(&mut V { f, depth: 0 });
}

/// [`visit_block_exprs`] for changing them: `f` is called after an expression's children,
/// so what it puts in place is not visited again.
pub(crate) fn visit_block_exprs_mut<N: VisitMut + ?Sized>(
    node: &mut N,
    f: impl FnMut(&mut Expr) -> ControlFlow<()>,
) {
    struct V<F> {
        f: F,
        depth: usize,
    }
    impl<F: FnMut(&mut Expr) -> ControlFlow<()>> VisitorMut for V<F> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if self.depth == 0 {
                return (self.f)(expr);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = node.visit(&mut V { f, depth: 0 });
}

/// Does `expr` refer to any column?
pub(crate) fn has_column_refs(expr: &Expr) -> bool {
    let mut found = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(expr, |e| {
        found = matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
        if found {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// The column name PostgreSQL gives an unnamed select item (its `FigureColname`).
pub fn output_name(expr: &Expr) -> String {
    let ident = |i: &datafusion::sql::sqlparser::ast::Ident| {
        if i.quote_style.is_some() {
            i.value.clone()
        } else {
            i.value.to_lowercase()
        }
    };
    match expr {
        Expr::Identifier(i) => ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(ObjectNamePart::as_ident)
            .map(|i| i.value.to_lowercase())
            .unwrap_or_else(|| "?column?".into()),
        Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            Expr::Value(_) => naming::type_display_name(data_type),
            inner => output_name(inner),
        },
        Expr::Nested(inner) => output_name(inner),
        Expr::Case { .. } => "case".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Array(_) => "array".into(),
        Expr::Subquery(q) => match q.body.as_ref() {
            datafusion::sql::sqlparser::ast::SetExpr::Select(s) => match s.projection.as_slice() {
                [datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(e)] => output_name(e),
                [datafusion::sql::sqlparser::ast::SelectItem::ExprWithAlias { alias, .. }] => {
                    ident(alias)
                }
                _ => "?column?".into(),
            },
            _ => "?column?".into(),
        },
        _ => "?column?".into(),
    }
}

/// The conjuncts of an AND chain (through parentheses).
pub fn split_and(expr: Expr) -> Vec<Expr> {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut out = split_and(*left);
            out.extend(split_and(*right));
            out
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(*inner)
        }
        other => vec![other],
    }
}

/// Parse `sql` into statements (PostgreSQL dialect).
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    let dialect = PostgreSqlDialect {};
    Parser::parse_sql(&dialect, sql).map_err(|e| {
        let message = e.to_string();
        Error::Syntax(message.trim_start_matches("sql parser error: ").to_string())
    })
}

/// Parse `sql` and classify each statement. The text must parse as a whole; each
/// statement classifies on its own, so a multi-statement string runs up to the first
/// statement that fails, as in PostgreSQL. `MOVE`, which sqlparser lacks, parses here.
pub fn parse_commands(sql: &str) -> Result<Vec<Result<Command>>> {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let syntax = |e: datafusion::sql::sqlparser::parser::ParserError| {
        let message = e.to_string();
        Error::Syntax(message.trim_start_matches("sql parser error: ").to_string())
    };
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let is_move = match &parser.peek_token_ref().token {
            Token::EOF => break,
            Token::Word(w) => w.quote_style.is_none() && w.value.eq_ignore_ascii_case("move"),
            _ => false,
        };
        let statement = if is_move {
            parser.next_token();
            parser.parse_fetch_statement().map_err(syntax)?
        } else {
            parser.parse_statement().map_err(syntax)?
        };
        out.push(classify(statement).map(|command| match command {
            Command::Fetch { name, count, .. } if is_move => Command::Fetch {
                name,
                count,
                skip: true,
            },
            other => other,
        }));
        if !matches!(parser.peek_token_ref().token, Token::EOF | Token::SemiColon) {
            return Err(Error::Syntax(format!(
                "expected end of statement, found {}",
                parser.peek_token_ref().token
            )));
        }
    }
    Ok(out)
}

/// The deepest nesting a statement may have (UNION branches, nested expressions and
/// subqueries): well within what planning handles on a worker's stack, so that no
/// statement can overflow it and take the server down.
pub const MAX_NESTING: usize = 1000;

/// 54001 for a statement nested deeper than [`MAX_NESTING`].
pub fn check_nesting(statement: &Statement) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    use std::ops::ControlFlow;
    fn set_depth(set: &SetExpr) -> usize {
        // Iterative along the left spine (a UNION chain), recursive to the right.
        let mut depth = 0;
        let mut deepest = 0;
        let mut current = set;
        loop {
            match current {
                SetExpr::SetOperation { left, right, .. } => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return depth;
                    }
                    deepest = deepest.max(depth + set_depth(right));
                    current = left;
                }
                SetExpr::Query(q) => {
                    depth += 1;
                    current = &q.body;
                }
                _ => return deepest.max(depth),
            }
        }
    }
    struct V {
        depth: usize,
        deepest: usize,
    }
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.depth += 1;
            self.deepest = self.deepest.max(self.depth);
            if self.depth > MAX_NESTING {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            self.depth += 1;
            let sets = set_depth(&query.body);
            self.deepest = self.deepest.max(self.depth + sets);
            if self.depth + sets > MAX_NESTING {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    // Set operations first: the visitor below recurses along them.
    if let Statement::Query(q) = statement
        && set_depth(&q.body) > MAX_NESTING
    {
        return Err(Error::TooComplex(MAX_NESTING));
    }
    let mut v = V {
        depth: 0,
        deepest: 0,
    };
    match statement.visit(&mut v) {
        ControlFlow::Break(()) => Err(Error::TooComplex(MAX_NESTING)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// A plain call `name(args)`.
pub(crate) fn call(name: &str, args: Vec<Expr>) -> datafusion::sql::sqlparser::ast::Function {
    use datafusion::sql::sqlparser::ast::{
        Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    };
    Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(datafusion::sql::sqlparser::ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    }
}

/// Parse one expression. The rules build expressions from rendered parts of the
/// client's own syntax tree, so the text parses back.
pub(crate) fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

/// The last part of a name, lower case (`pg_catalog.Foo` → `foo`).
pub(crate) fn last_name(name: &datafusion::sql::sqlparser::ast::ObjectName) -> String {
    name.0
        .last()
        .and_then(ObjectNamePart::as_ident)
        .map(|i| i.value.to_lowercase())
        .unwrap_or_default()
}

/// Function names: `information_schema._pg_*` helpers are registered unqualified.
pub(crate) fn strip_function_schema(name: &mut datafusion::sql::sqlparser::ast::ObjectName) {
    if name.0.len() == 2 {
        let first = name.0[0].as_ident().map(|i| i.value.to_lowercase());
        if matches!(first.as_deref(), Some("pg_catalog" | "information_schema")) {
            name.0.remove(0);
        }
    }
}
