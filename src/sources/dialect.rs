//! SQL dialect fixes for pushed-down statements, so that a metric gives the same answer on
//! every source.
//!
//! DataFusion's unparser writes each federated plan in the source's dialect. Where a
//! MySQL-protocol source would answer differently from PostgreSQL (and the embedded
//! engine), the statement is corrected here:
//!
//! - `kp_local_time(x, zone)` (a `timestamptz` as local time, see
//!   [`crate::time_zone::LocalTime`]) is `x AT TIME ZONE zone` in PostgreSQL and
//!   `CONVERT_TZ(x, '+00:00', zone)` in MySQL (whose sessions run in UTC);
//! - `date_trunc(grain, x)` does not exist in MySQL: it becomes the equivalent date
//!   arithmetic (weeks start on Monday, as ISO and PostgreSQL have it);
//! - MySQL sorts NULLs first in ascending order and has no `NULLS FIRST/LAST`: each sort
//!   key is preceded by `(x IS NULL)` in the order PostgreSQL uses (NULLs last when
//!   ascending, first when descending);
//! - MySQL refuses a window frame on ranking functions (`ROW_NUMBER`, `RANK`, `LAG`, ...),
//!   which DataFusion's plans always spell: it is dropped (it means nothing for them);
//! - MySQL's usual collations compare text case-insensitively: a text literal compared
//!   with `=`, `<>`, `<`, `>`, `LIKE` or `IN` gets `COLLATE utf8mb4_bin`, so the comparison
//!   is PostgreSQL's case-sensitive one whatever the column's collation.
//!
//! Invariant: syntax only, no I/O; each rule has a test.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::TimeUnit;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Expr;
use datafusion::sql::sqlparser::ast::{
    self, Expr as SqlExpr, OrderByExpr, OrderByKind, OrderByOptions, Statement, VisitMut,
    VisitorMut,
};
use datafusion::sql::sqlparser::dialect::MySqlDialect as ParserDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::{
    DateFieldExtractStyle, Dialect, DistinctFromStyle, IntervalStyle, MySqlDialect,
    PostgreSqlDialect,
};

use crate::time_zone::LOCAL_TIME;

/// The dialect pushed-down statements are written in for PostgreSQL sources.
pub fn postgres() -> Arc<dyn Dialect> {
    Arc::new(Postgres)
}

/// DataFusion's PostgreSQL dialect, plus `kp_local_time`.
struct Postgres;

impl Dialect for Postgres {
    fn use_array_keyword_for_array_literals(&self) -> bool {
        PostgreSqlDialect {}.use_array_keyword_for_array_literals()
    }
    fn supports_qualify(&self) -> bool {
        PostgreSqlDialect {}.supports_qualify()
    }
    fn requires_derived_table_alias(&self) -> bool {
        PostgreSqlDialect {}.requires_derived_table_alias()
    }
    fn supports_empty_select_list(&self) -> bool {
        PostgreSqlDialect {}.supports_empty_select_list()
    }
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        PostgreSqlDialect {}.identifier_quote_style(identifier)
    }
    fn interval_style(&self) -> IntervalStyle {
        PostgreSqlDialect {}.interval_style()
    }
    fn float64_ast_dtype(&self) -> ast::DataType {
        PostgreSqlDialect {}.float64_ast_dtype()
    }
    fn int8_cast_dtype(&self) -> ast::DataType {
        PostgreSqlDialect {}.int8_cast_dtype()
    }
    fn distinct_from_style(&self) -> DistinctFromStyle {
        PostgreSqlDialect {}.distinct_from_style()
    }
    fn scalar_function_to_sql_overrides(
        &self,
        unparser: &Unparser,
        func_name: &str,
        args: &[Expr],
    ) -> Result<Option<SqlExpr>> {
        if let Some(sql) = checked_operator(unparser, func_name, args)? {
            return Ok(Some(sql));
        }
        if func_name == LOCAL_TIME {
            let Some((value, zone)) = local_time_args(unparser, args)? else {
                return Ok(None);
            };
            // An offset is an interval (east positive); a text offset would be POSIX.
            let zone = if zone.starts_with(['+', '-']) {
                format!("INTERVAL '{zone}'")
            } else {
                format!("'{zone}'")
            };
            let zone = Parser::new(&datafusion::sql::sqlparser::dialect::PostgreSqlDialect {})
                .try_with_sql(&zone)
                .and_then(|mut p| p.parse_expr())
                .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?;
            return Ok(Some(SqlExpr::Nested(Box::new(SqlExpr::AtTimeZone {
                timestamp: Box::new(value),
                time_zone: Box::new(zone),
            }))));
        }
        PostgreSqlDialect {}.scalar_function_to_sql_overrides(unparser, func_name, args)
    }
}

/// A checked integer operation of the embedded engine ([`crate::operators::Checked`]) as
/// the plain operator: the warehouse checks its own overflow.
fn checked_operator(
    unparser: &Unparser,
    func_name: &str,
    args: &[Expr],
) -> Result<Option<SqlExpr>> {
    let (Some(op), [left, right]) = (crate::operators::Checked::sql_operator(func_name), args)
    else {
        return Ok(None);
    };
    Ok(Some(SqlExpr::Nested(Box::new(SqlExpr::BinaryOp {
        left: Box::new(unparser.expr_to_sql(left)?),
        op,
        right: Box::new(unparser.expr_to_sql(right)?),
    }))))
}

/// The operands of `kp_local_time(value, 'zone')`: the value as SQL and the zone.
fn local_time_args(unparser: &Unparser, args: &[Expr]) -> Result<Option<(SqlExpr, String)>> {
    let [value, Expr::Literal(zone, _)] = args else {
        return Ok(None);
    };
    let zone = match zone {
        ScalarValue::Utf8(Some(z))
        | ScalarValue::Utf8View(Some(z))
        | ScalarValue::LargeUtf8(Some(z))
            if z.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-:".contains(c)) =>
        {
            z.clone()
        }
        _ => return Ok(None),
    };
    Ok(Some((unparser.expr_to_sql(value)?, zone)))
}

/// The dialect pushed-down statements are written in for MySQL-protocol sources.
pub fn mysql() -> Arc<dyn Dialect> {
    Arc::new(Mysql)
}

/// DataFusion's MySQL dialect, plus `date_trunc` and explicit NULL ordering (which
/// [`fix_mysql`] then spells the MySQL way).
struct Mysql;

impl Dialect for Mysql {
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        MySqlDialect {}.identifier_quote_style(identifier)
    }
    fn supports_qualify(&self) -> bool {
        false
    }
    fn supports_nulls_first_in_sort(&self) -> bool {
        // Kept in the AST so `fix_mysql` can order NULLs as PostgreSQL does.
        true
    }
    fn interval_style(&self) -> IntervalStyle {
        IntervalStyle::MySQL
    }
    fn utf8_cast_dtype(&self) -> ast::DataType {
        ast::DataType::Char(None)
    }
    fn large_utf8_cast_dtype(&self) -> ast::DataType {
        ast::DataType::Char(None)
    }
    fn date_field_extract_style(&self) -> DateFieldExtractStyle {
        DateFieldExtractStyle::Extract
    }
    fn distinct_from_style(&self) -> DistinctFromStyle {
        MySqlDialect {}.distinct_from_style()
    }
    fn int64_cast_dtype(&self) -> ast::DataType {
        MySqlDialect {}.int64_cast_dtype()
    }
    fn int32_cast_dtype(&self) -> ast::DataType {
        MySqlDialect {}.int32_cast_dtype()
    }
    fn timestamp_cast_dtype(&self, unit: &TimeUnit, tz: &Option<Arc<str>>) -> ast::DataType {
        MySqlDialect {}.timestamp_cast_dtype(unit, tz)
    }
    fn requires_derived_table_alias(&self) -> bool {
        true
    }
    fn scalar_function_to_sql_overrides(
        &self,
        unparser: &Unparser,
        func_name: &str,
        args: &[Expr],
    ) -> Result<Option<SqlExpr>> {
        if let Some(sql) = checked_operator(unparser, func_name, args)? {
            return Ok(Some(sql));
        }
        match (func_name, args) {
            (LOCAL_TIME, _) => {
                let Some((value, zone)) = local_time_args(unparser, args)? else {
                    return Ok(None);
                };
                Ok(Some(parse_expr(&format!(
                    "CONVERT_TZ({value}, '+00:00', '{zone}')"
                ))?))
            }
            ("date_trunc", [Expr::Literal(grain, _), value]) => {
                let grain = match grain {
                    ScalarValue::Utf8(Some(g))
                    | ScalarValue::Utf8View(Some(g))
                    | ScalarValue::LargeUtf8(Some(g)) => g.to_ascii_lowercase(),
                    _ => return Ok(None),
                };
                let x = unparser.expr_to_sql(value)?.to_string();
                let Some(template) = date_trunc_mysql(&grain, &x) else {
                    return Ok(None);
                };
                Ok(Some(parse_expr(&template)?))
            }
            _ => MySqlDialect {}.scalar_function_to_sql_overrides(unparser, func_name, args),
        }
    }
}

/// `date_trunc(grain, x)` as MySQL date arithmetic (a DATETIME, as PostgreSQL returns a
/// timestamp).
fn date_trunc_mysql(grain: &str, x: &str) -> Option<String> {
    Some(match grain {
        "year" => format!("CAST(DATE_FORMAT({x}, '%Y-01-01') AS DATETIME)"),
        "quarter" => {
            format!(
                "CAST(MAKEDATE(YEAR({x}), 1) + INTERVAL (QUARTER({x}) - 1) QUARTER AS DATETIME)"
            )
        }
        "month" => format!("CAST(DATE_FORMAT({x}, '%Y-%m-01') AS DATETIME)"),
        "week" => format!("CAST(DATE({x}) - INTERVAL WEEKDAY({x}) DAY AS DATETIME)"),
        "day" => format!("CAST(DATE({x}) AS DATETIME)"),
        "hour" => format!("CAST(DATE_FORMAT({x}, '%Y-%m-%d %H:00:00') AS DATETIME)"),
        "minute" => format!("CAST(DATE_FORMAT({x}, '%Y-%m-%d %H:%i:00') AS DATETIME)"),
        "second" => format!("CAST(DATE_FORMAT({x}, '%Y-%m-%d %H:%i:%s') AS DATETIME)"),
        _ => return None,
    })
}

fn parse_expr(sql: &str) -> Result<SqlExpr> {
    Parser::new(&ParserDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))
}

/// Spell PostgreSQL's NULL ordering for MySQL: `x ASC NULLS LAST` becomes
/// `x IS NULL ASC, x ASC` (and likewise in window definitions); compare text literals
/// case-sensitively.
pub fn fix_mysql(mut statement: Statement) -> Statement {
    let _ = statement.visit(&mut NullOrdering);
    let _ = statement.visit(&mut RankingFrames);
    let _ = statement.visit(&mut CaseSensitiveText);
    statement
}

struct CaseSensitiveText;

const BINARY_COLLATION: &str = "utf8mb4_bin";

fn is_text_literal(expr: &SqlExpr) -> bool {
    matches!(
        expr,
        SqlExpr::Value(v) if matches!(v.value, ast::Value::SingleQuotedString(_))
    )
}

fn binary(expr: &mut SqlExpr) {
    let inner = std::mem::replace(expr, SqlExpr::value(ast::Value::Null));
    *expr = SqlExpr::Collate {
        expr: Box::new(inner),
        collation: ast::ObjectName::from(vec![ast::Ident::new(BINARY_COLLATION)]),
    };
}

impl VisitorMut for CaseSensitiveText {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        use ast::BinaryOperator as Op;
        match expr {
            SqlExpr::BinaryOp {
                left,
                op: Op::Eq | Op::NotEq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq,
                right,
            } => {
                if is_text_literal(right) {
                    binary(right);
                } else if is_text_literal(left) {
                    binary(left);
                }
            }
            SqlExpr::Like { pattern, .. } if is_text_literal(pattern) => binary(pattern),
            SqlExpr::InList { list, .. } => {
                for item in list.iter_mut().filter(|i| is_text_literal(i)) {
                    binary(item);
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Window functions whose value does not depend on a frame: MySQL refuses one.
pub(crate) const FRAMELESS: &[&str] = &[
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
];

struct RankingFrames;

impl VisitorMut for RankingFrames {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::Function(f) = expr
            && let Some(ast::WindowType::WindowSpec(spec)) = &mut f.over
            && FRAMELESS
                .iter()
                .any(|n| f.name.to_string().eq_ignore_ascii_case(n))
        {
            spec.window_frame = None;
        }
        ControlFlow::Continue(())
    }
}

struct NullOrdering;

impl VisitorMut for NullOrdering {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
        if let Some(order_by) = &mut query.order_by
            && let OrderByKind::Expressions(exprs) = &mut order_by.kind
        {
            *exprs = spell_null_ordering(std::mem::take(exprs));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        if let SqlExpr::Function(f) = expr
            && let Some(ast::WindowType::WindowSpec(spec)) = &mut f.over
        {
            spec.order_by = spell_null_ordering(std::mem::take(&mut spec.order_by));
        }
        ControlFlow::Continue(())
    }
}

fn spell_null_ordering(exprs: Vec<OrderByExpr>) -> Vec<OrderByExpr> {
    let mut out = Vec::with_capacity(exprs.len() * 2);
    for mut e in exprs {
        if let Some(nulls_first) = e.options.nulls_first.take() {
            // Literal positions (`ORDER BY 1`) cannot be wrapped; MySQL would read
            // `1 IS NULL` as a constant. Leave them (the unparser names columns).
            if !matches!(e.expr, SqlExpr::Value(_)) {
                out.push(OrderByExpr {
                    expr: SqlExpr::IsNull(Box::new(e.expr.clone())),
                    options: OrderByOptions {
                        asc: Some(!nulls_first),
                        nulls_first: None,
                    },
                    with_fill: None,
                });
            }
        }
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(sql: &str) -> String {
        let statement = Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            sql,
        )
        .unwrap()
        .remove(0);
        fix_mysql(statement).to_string()
    }

    #[test]
    fn null_ordering_is_spelled_with_is_null() {
        assert_eq!(
            roundtrip("SELECT a FROM t ORDER BY a ASC NULLS LAST, b DESC NULLS FIRST"),
            "SELECT a FROM t ORDER BY a IS NULL ASC, a ASC, b IS NULL DESC, b DESC"
        );
        assert_eq!(
            roundtrip("SELECT rank() OVER (ORDER BY a DESC NULLS FIRST) FROM t"),
            "SELECT rank() OVER (ORDER BY a IS NULL DESC, a DESC) FROM t"
        );
        assert_eq!(
            roundtrip("SELECT a FROM t ORDER BY a"),
            "SELECT a FROM t ORDER BY a"
        );
    }

    #[test]
    fn ranking_functions_lose_their_frame() {
        assert_eq!(
            roundtrip(
                "SELECT row_number() OVER (PARTITION BY a ORDER BY b ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING), \
                 sum(c) OVER (ORDER BY b ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t"
            ),
            "SELECT row_number() OVER (PARTITION BY a ORDER BY b), \
             sum(c) OVER (ORDER BY b ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t"
        );
    }

    #[test]
    fn date_trunc_grains_parse_as_mysql() {
        for grain in [
            "year", "quarter", "month", "week", "day", "hour", "minute", "second",
        ] {
            let sql = date_trunc_mysql(grain, "`o`.`order_date`").unwrap();
            parse_expr(&sql).unwrap();
        }
        assert!(date_trunc_mysql("millennium", "x").is_none());
    }
}
