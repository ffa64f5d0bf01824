//! Parse client SQL and classify each statement into a [`Command`].
//!
//! Invariant: this is the only place that parses client SQL text. Everything downstream
//! works on syntax trees. Client quirks that are PostgreSQL syntax DataFusion does not
//! take are smoothed in [`compat`], each rule with its test.

pub mod compat;

use datafusion::sql::sqlparser::ast::{Expr, ObjectNamePart, Reset, Set, Statement, Value};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{Error, Result};

/// What a client statement asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// A query (SELECT, WITH, VALUES): rewritten and planned.
    Query(Box<Statement>),
    /// `EXPLAIN <query>`: show the rewritten SQL and the plan.
    Explain(Box<Statement>),
    /// `SET name = value` / `SET name TO DEFAULT` (value None).
    Set {
        /// Setting name.
        name: String,
        /// New value; None means the default.
        value: Option<String>,
    },
    /// `RESET name` / `RESET ALL` (None).
    Reset(Option<String>),
    /// `SHOW name` / `SHOW ALL` (None).
    Show(Option<String>),
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `DISCARD ALL` and friends.
    Discard,
    /// `DEALLOCATE name` / `DEALLOCATE ALL`.
    Deallocate,
}

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

/// Does `expr` contain an aggregate call (outside subqueries' own blocks too)?
pub fn contains_aggregate(expr: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    use std::ops::ControlFlow;
    struct V(bool);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if is_aggregate_call(expr) {
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
            Expr::Value(_) => compat::type_display_name(data_type),
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

/// Classify one statement.
pub fn classify(statement: Statement) -> Result<Command> {
    Ok(match statement {
        Statement::Query(_) => Command::Query(Box::new(statement)),
        Statement::Explain { statement, .. } => match *statement {
            Statement::Query(_) => Command::Explain(statement),
            other => {
                return Err(Error::unsupported(
                    format!("EXPLAIN of {} is not supported", verb(&other)),
                    None,
                ));
            }
        },
        Statement::Set(set) => classify_set(set)?,
        Statement::Reset(reset) => Command::Reset(match reset.reset {
            Reset::ALL => None,
            Reset::ConfigurationParameter(name) => Some(name.to_string().to_lowercase()),
        }),
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            if name == "all" {
                Command::Show(None)
            } else {
                Command::Show(Some(name))
            }
        }
        Statement::StartTransaction { .. } => Command::Begin,
        Statement::Commit { .. } => Command::Commit,
        Statement::Rollback {
            savepoint: None, ..
        } => Command::Rollback,
        Statement::Discard { .. } => Command::Discard,
        Statement::Deallocate { .. } => Command::Deallocate,
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge { .. }
        | Statement::Truncate { .. }
        | Statement::CreateTable(_)
        | Statement::CreateView { .. }
        | Statement::CreateIndex(_)
        | Statement::Drop { .. }
        | Statement::AlterTable { .. }
        | Statement::Copy { .. } => return Err(Error::ReadOnly(verb(&statement))),
        other => {
            return Err(Error::unsupported(
                format!("{} is not supported", verb(&other)),
                Some("kpitables answers SELECT queries over its views, plus SET, SHOW and transaction statements".into()),
            ));
        }
    })
}

fn classify_set(set: Set) -> Result<Command> {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = variable
                .0
                .iter()
                .filter_map(ObjectNamePart::as_ident)
                .map(|i| i.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            let value = set_value(&values);
            Ok(Command::Set { name, value })
        }
        Set::SetTimeZone { value, .. } => Ok(Command::Set {
            name: "timezone".into(),
            value: set_value(std::slice::from_ref(&value)),
        }),
        Set::SetNames { charset_name, .. } => Ok(Command::Set {
            name: "client_encoding".into(),
            value: Some(charset_name.value),
        }),
        Set::SetTransaction { .. } | Set::SetSessionParam(_) | Set::SetRole { .. } => {
            Ok(Command::Discard)
        }
        other => Err(Error::unsupported(
            format!("{other} is not supported"),
            None,
        )),
    }
}

/// The text of a SET value list, or None for DEFAULT.
fn set_value(values: &[Expr]) -> Option<String> {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect();
    if parts.len() == 1 && parts[0].eq_ignore_ascii_case("default") {
        None
    } else {
        Some(parts.join(", "))
    }
}

fn verb(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(a), Some(b)) if matches!(a.to_uppercase().as_str(), "CREATE" | "DROP" | "ALTER") => {
            format!("{} {}", a.to_uppercase(), b.to_uppercase())
        }
        (Some(a), _) => a.to_uppercase(),
        _ => "this statement".into(),
    }
}
