//! PostgreSQL spellings that the embedded engine does not take, rewritten on the syntax
//! tree before planning. Each rule is general (never matched on query text):
//!
//! - `pg_catalog.f(...)` → `f(...)`; `x::pg_catalog.text` → `x::text`;
//! - `OPERATOR(pg_catalog.~)` → `~` (and the other operators psql spells that way);
//! - `expr COLLATE "C"` → `expr` (collations are not modelled);
//! - casts to `oid`, `name`, `"char"`, `regtype`, `regproc`, `regnamespace` → the engine's
//!   types; `'name'::regclass` → the relation's OID;
//! - session functions (`current_user`, `session_user`, `current_database()`,
//!   `current_schema()`, `current_setting('x')`, `pg_backend_pid()`) → the session's values.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments,
    Ident, ObjectName, ObjectNamePart, Statement, Value, VisitMut, VisitorMut,
};

use crate::session::Session;

/// Session facts that replace session functions.
#[derive(Debug, Clone)]
pub struct SessionFacts<'a> {
    /// The session.
    pub session: &'a Session,
    /// The database name.
    pub database: &'a str,
}

/// Apply every compatibility rule to `statement`.
pub fn apply(statement: &mut Statement, facts: &SessionFacts<'_>) {
    let mut v = Compat { facts };
    let _ = statement.visit(&mut v);
}

struct Compat<'a, 'b> {
    facts: &'a SessionFacts<'b>,
}

fn string(s: impl Into<String>) -> Expr {
    Expr::Value(Value::SingleQuotedString(s.into()).into())
}

fn number(n: i64) -> Expr {
    Expr::Value(Value::Number(n.to_string(), false).into())
}

fn last_name(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(ObjectNamePart::as_ident)
        .map(|i| i.value.to_lowercase())
        .unwrap_or_default()
}

fn strip_pg_catalog(name: &mut ObjectName) {
    if name.0.len() == 2 {
        let first = name.0[0].as_ident().map(|i| i.value.to_lowercase());
        if first.as_deref() == Some("pg_catalog") {
            name.0.remove(0);
        }
    }
}

fn first_string_arg(f: &Function) -> Option<String> {
    let FunctionArguments::List(list) = &f.args else { return None };
    match list.args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn no_args(f: &Function) -> bool {
    match &f.args {
        FunctionArguments::None => true,
        FunctionArguments::List(l) => l.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    }
}

impl Compat<'_, '_> {
    fn session_function(&self, f: &Function) -> Option<Expr> {
        let name = last_name(&f.name);
        let session = self.facts.session;
        match name.as_str() {
            "current_user" | "session_user" | "user" | "current_role" if no_args(f) => Some(string(&session.user)),
            "current_database" | "current_catalog" if no_args(f) => Some(string(self.facts.database)),
            "current_schema" if no_args(f) => Some(string("public")),
            "pg_backend_pid" if no_args(f) => Some(number(i64::from(session.pid))),
            "current_setting" => {
                let setting = first_string_arg(f)?;
                Some(match session.get(&setting) {
                    Ok(v) => string(v),
                    Err(_) => Expr::Value(Value::Null.into()),
                })
            }
            _ => None,
        }
    }
}

fn custom_type_name(data_type: &DataType) -> Option<String> {
    match data_type {
        DataType::Custom(name, modifiers) if modifiers.is_empty() => {
            let mut name = name.clone();
            strip_pg_catalog(&mut name);
            (name.0.len() == 1).then(|| last_name(&name))
        }
        _ => None,
    }
}

fn engine_type(name: &str) -> Option<DataType> {
    Some(match name {
        "text" | "name" | "char" | "bpchar" | "int2vector" | "oidvector" | "regnamespace_text" => DataType::Text,
        "varchar" => DataType::Varchar(None),
        "oid" | "regtype" | "regproc" | "regprocedure" | "regnamespace" | "regrole" | "regoper" | "xid" | "cid"
        | "int8" => DataType::BigInt(None),
        "int4" => DataType::Integer(None),
        "int2" => DataType::SmallInt(None),
        "float4" => DataType::Real,
        "float8" => DataType::DoublePrecision,
        "bool" => DataType::Boolean,
        "date" => DataType::Date,
        "timestamp" => DataType::Timestamp(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None),
        "numeric" => DataType::Numeric(datafusion::sql::sqlparser::ast::ExactNumberInfo::None),
        _ => return None,
    })
}

impl VisitorMut for Compat<'_, '_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(f) => {
                if let Some(value) = self.session_function(f) {
                    *expr = value;
                } else {
                    strip_pg_catalog(&mut f.name);
                }
            }
            Expr::BinaryOp { op, .. } => {
                if let BinaryOperator::PGCustomBinaryOperator(parts) = op {
                    let symbol = parts.last().map(String::as_str).unwrap_or("");
                    let plain = match symbol {
                        "~" => Some(BinaryOperator::PGRegexMatch),
                        "~*" => Some(BinaryOperator::PGRegexIMatch),
                        "!~" => Some(BinaryOperator::PGRegexNotMatch),
                        "!~*" => Some(BinaryOperator::PGRegexNotIMatch),
                        "~~" => Some(BinaryOperator::PGLikeMatch),
                        "!~~" => Some(BinaryOperator::PGNotLikeMatch),
                        "=" => Some(BinaryOperator::Eq),
                        "<>" => Some(BinaryOperator::NotEq),
                        "<" => Some(BinaryOperator::Lt),
                        ">" => Some(BinaryOperator::Gt),
                        "<=" => Some(BinaryOperator::LtEq),
                        ">=" => Some(BinaryOperator::GtEq),
                        "||" => Some(BinaryOperator::StringConcat),
                        _ => None,
                    };
                    if let Some(plain) = plain {
                        *op = plain;
                    }
                }
            }
            Expr::Collate { expr: inner, .. } => {
                let inner = std::mem::replace(inner.as_mut(), Expr::Value(Value::Null.into()));
                *expr = inner;
            }
            Expr::Cast {
                expr: inner,
                data_type,
                kind,
                ..
            } => {
                let Some(name) = custom_type_name(data_type) else {
                    return ControlFlow::Continue(());
                };
                if name == "regclass" {
                    let taken = std::mem::replace(inner.as_mut(), Expr::Value(Value::Null.into()));
                    *expr = match taken {
                        Expr::Value(v) if matches!(v.value, Value::SingleQuotedString(_)) => {
                            Expr::Function(regclass_call(Expr::Value(v)))
                        }
                        other => other,
                    };
                } else if let Some(t) = engine_type(&name) {
                    *data_type = t;
                    if matches!(kind, CastKind::DoubleColon) {
                        *kind = CastKind::Cast;
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn regclass_call(arg: Expr) -> Function {
    Function {
        name: ObjectName::from(vec![Ident::new("kp_regclass")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(datafusion::sql::sqlparser::ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> String {
        let session = Session::new("ann", 7, &[]);
        let facts = SessionFacts {
            session: &session,
            database: "kpitables",
        };
        let mut statements = crate::sql::parse(sql).expect("parses");
        apply(&mut statements[0], &facts);
        statements[0].to_string()
    }

    #[test]
    fn qualified_functions_lose_pg_catalog() {
        assert_eq!(
            rewrite("SELECT pg_catalog.format_type(1, 2)"),
            "SELECT format_type(1, 2)"
        );
    }

    #[test]
    fn psql_operator_spelling_becomes_plain_operator() {
        assert_eq!(
            rewrite("SELECT 1 WHERE 'a' OPERATOR(pg_catalog.~) '^a$' COLLATE pg_catalog.default"),
            "SELECT 1 WHERE 'a' ~ '^a$'"
        );
    }

    #[test]
    fn session_functions_become_values() {
        assert_eq!(
            rewrite("SELECT current_user, current_database(), current_setting('application_name'), pg_backend_pid()"),
            "SELECT 'ann', 'kpitables', '', 7"
        );
    }

    #[test]
    fn catalog_types_become_engine_types() {
        assert_eq!(rewrite("SELECT '1'::pg_catalog.oid, x::name FROM t"), "SELECT CAST('1' AS BIGINT), CAST(x AS TEXT) FROM t");
        assert_eq!(rewrite("SELECT 'sales'::regclass"), "SELECT kp_regclass('sales')");
    }
}
