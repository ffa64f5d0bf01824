//! PostgreSQL spellings that the embedded engine does not take, rewritten on the syntax
//! tree before planning. Each rule is general (never matched on query text):
//!
//! - `pg_catalog.f(...)` → `f(...)`; `x::pg_catalog.text` → `x::text`;
//! - `OPERATOR(pg_catalog.~)` → `~` (and the other operators psql spells that way);
//! - `expr COLLATE "C"` → `expr` (collations are not modelled);
//! - casts to `oid`, `name`, `"char"`, `regtype`, `regproc`, `regnamespace` → the engine's
//!   types; `'name'::regclass` → the relation's OID; a `regproc` catalog column compared
//!   with a number or cast to `oid` → the function's OID (`kp_regproc_oid`);
//! - `x = ANY($1)` → the parameter read as an array literal (`{r,v}`, `kp_text_array`);
//! - `ARRAY(SELECT f(x) FROM unnest(arr) x)` → `array_transform(arr, x -> f(x))`;
//! - session functions (`current_user`, `session_user`, `current_database()`,
//!   `current_schema()`, `current_setting('x')`, `pg_backend_pid()`) → the session's values
//!   ([`super::session_values`]);
//! - `LIKE ... ESCAPE` with another character than `\` → a regular expression match;
//!   `(composite).field` → `get_field`; `FETCH FIRST n ROWS ONLY` → `LIMIT n`; functions
//!   the engine has under another form (`date(x)`, `age`, `to_regtype`, ...).
//!
//! [`apply`] runs them after [`super::naming`] (result column names, taken before any
//! rule changes an expression) and [`super::set_returning`]; correlated lookups are
//! reshaped by [`super::subquery`].

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, CastKind, DataType, Expr, Function, FunctionArguments, Query,
    SelectItem, SetExpr, Statement, Value, VisitMut, VisitorMut,
};

use super::arrays::{array_of_query, array_of_unnest};
use super::session_values::{SessionFacts, SessionRead, session_value};
use super::{call, last_name, strip_function_schema};

/// Apply every compatibility rule to `statement`; returns the session facts the rules
/// wrote into it.
pub fn apply(statement: &mut Statement, facts: &SessionFacts<'_>) -> Vec<SessionRead> {
    let _ = statement.visit(&mut super::naming::Naming);
    let _ = statement.visit(&mut super::set_returning::SetReturning);
    let _ = statement.visit(&mut super::literals::Literals);
    let mut v = Compat {
        facts,
        reads: Vec::new(),
    };
    let _ = statement.visit(&mut v);
    v.reads
}

/// After [`apply`]: a clear error for a form the rules could not bring into one the engine
/// plans (instead of the engine's "Invalid function 'array'").
pub fn check_supported(statement: &Statement) -> crate::error::Result<()> {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    struct V;
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Function(f)
                    if matches!(f.args, FunctionArguments::Subquery(_))
                        && last_name(&f.name) == "array" =>
                {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    match statement.visit(&mut V) {
        ControlFlow::Break(()) => Err(crate::error::Error::unsupported(
            "ARRAY(subquery) is not supported in this form",
            Some(
                "ARRAY(SELECT x FROM ... [ORDER BY ...]) with one plain select item is supported; otherwise use array_agg in a subquery"
                    .into(),
            ),
        )),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct Compat<'a, 'b> {
    facts: &'a SessionFacts<'b>,
    reads: Vec<SessionRead>,
}

pub(super) fn string(s: impl Into<String>) -> Expr {
    Expr::Value(Value::SingleQuotedString(s.into()).into())
}

pub(super) fn number(n: i64) -> Expr {
    Expr::Value(Value::Number(n.to_string(), false).into())
}

/// PostgreSQL functions the engine has under another form.
fn equivalent_function(f: &Function) -> Option<Expr> {
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let args: Vec<String> = list.args.iter().map(ToString::to_string).collect();
    let sql = match (last_name(&f.name).as_str(), args.as_slice()) {
        ("date", [x]) => format!("CAST({x} AS DATE)"),
        ("age", [a, b]) => format!("(CAST({a} AS TIMESTAMP) - CAST({b} AS TIMESTAMP))"),
        ("age", [a]) => format!("(CAST(current_date AS TIMESTAMP) - CAST({a} AS TIMESTAMP))"),
        ("regexp_substr", [s, p]) => format!("(regexp_match({s}, '(' || {p} || ')'))[1]"),
        ("to_regtype", [x]) => format!("kp_regtype({x})"),
        ("_pg_truetypid", [a, t]) => {
            let (a, t) = (a.trim_end_matches(".*"), t.trim_end_matches(".*"));
            format!("CASE WHEN {t}.typtype = 'd' THEN {t}.typbasetype ELSE {a}.atttypid END")
        }
        ("_pg_truetypmod", [a, t]) => {
            let (a, t) = (a.trim_end_matches(".*"), t.trim_end_matches(".*"));
            format!("CASE WHEN {t}.typtype = 'd' THEN {t}.typtypmod ELSE {a}.atttypmod END")
        }
        _ => return None,
    };
    super::parse_expr(&sql)
}

/// The `regproc` columns of PostgreSQL 15's catalogs (the catalog's test checks them
/// against `pg_relations.tsv`). They hold function names; compared with a number or
/// cast to `oid` they are the function's OID, as in PostgreSQL.
pub const REGPROC_COLUMNS: &[&str] = &[
    "aggcombinefn",
    "aggdeserialfn",
    "aggfinalfn",
    "aggfnoid",
    "aggmfinalfn",
    "aggminvtransfn",
    "aggmtransfn",
    "aggserialfn",
    "aggtransfn",
    "amhandler",
    "amproc",
    "conproc",
    "oprcode",
    "oprjoin",
    "oprrest",
    "prosupport",
    "prsend",
    "prsheadline",
    "prslextype",
    "prsstart",
    "prstoken",
    "rngcanonical",
    "rngsubdiff",
    "tmplinit",
    "tmpllexize",
    "trffromsql",
    "trftosql",
    "typanalyze",
    "typinput",
    "typmodin",
    "typmodout",
    "typoutput",
    "typreceive",
    "typsend",
    "typsubscript",
];

fn is_regproc_column(expr: &Expr) -> bool {
    let ident = match expr {
        Expr::Identifier(i) => i,
        Expr::CompoundIdentifier(parts) => match parts.last() {
            Some(i) => i,
            None => return false,
        },
        _ => return false,
    };
    REGPROC_COLUMNS.contains(&ident.value.to_lowercase().as_str())
}

fn is_number(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => matches!(v.value, Value::Number(..)),
        Expr::Nested(inner) => is_number(inner),
        Expr::UnaryOp { expr, .. } => is_number(expr),
        _ => false,
    }
}

/// `typreceive != 0` → `kp_regproc_oid(typreceive) != 0`.
fn regproc_compared_with_oid(expr: &mut Expr) {
    let Expr::BinaryOp { left, op, right } = expr else {
        return;
    };
    if !matches!(
        op,
        BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::Gt
            | BinaryOperator::LtEq
            | BinaryOperator::GtEq
    ) {
        return;
    }
    let wrap = |column: &mut Box<Expr>| {
        let taken = std::mem::replace(column.as_mut(), Expr::Value(Value::Null.into()));
        **column = Expr::Function(call("kp_regproc_oid", vec![taken]));
    };
    if is_regproc_column(left) && is_number(right) {
        wrap(left);
    } else if is_regproc_column(right) && is_number(left) {
        wrap(right);
    }
}

fn custom_type_name(data_type: &DataType) -> Option<String> {
    match data_type {
        DataType::Regclass => Some("regclass".into()),
        DataType::Custom(name, modifiers) if modifiers.is_empty() => {
            let mut name = name.clone();
            strip_function_schema(&mut name);
            (name.0.len() == 1).then(|| last_name(&name))
        }
        _ => None,
    }
}

fn engine_type(name: &str) -> Option<DataType> {
    Some(match name {
        "text" | "name" | "char" | "bpchar" | "int2vector" | "oidvector" | "regnamespace_text"
        | "character_data" | "sql_identifier" | "yes_or_no" => DataType::Text,
        "varchar" => DataType::Varchar(None),
        "oid" | "regtype" | "regproc" | "regprocedure" | "regnamespace" | "regrole" | "regoper"
        | "xid" | "cid" | "int8" => DataType::BigInt(None),
        "int4" | "cardinal_number" => DataType::Integer(None),
        "int2" => DataType::SmallInt(None),
        "float4" => DataType::Real,
        "float8" => DataType::DoublePrecision,
        "bool" => DataType::Boolean,
        "date" => DataType::Date,
        "timestamp" | "time_stamp" => {
            DataType::Timestamp(None, datafusion::sql::sqlparser::ast::TimezoneInfo::None)
        }
        "numeric" => DataType::Numeric(datafusion::sql::sqlparser::ast::ExactNumberInfo::None),
        _ => return None,
    })
}

impl VisitorMut for Compat<'_, '_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        order_by_position(query);
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in &mut select.projection {
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                {
                    super::subquery::exists_in_select_list(e);
                }
            }
        }
        // `FETCH FIRST n ROWS ONLY` is `LIMIT n` (keeping any OFFSET).
        if let Some(fetch) = &query.fetch
            && !fetch.with_ties
            && !fetch.percent
        {
            let limit = Some(fetch.quantity.clone().unwrap_or_else(|| number(1)));
            query.limit_clause = match query.limit_clause.take() {
                None => Some(datafusion::sql::sqlparser::ast::LimitClause::LimitOffset {
                    limit,
                    offset: None,
                    limit_by: Vec::new(),
                }),
                Some(datafusion::sql::sqlparser::ast::LimitClause::LimitOffset {
                    limit: None,
                    offset,
                    limit_by,
                }) => Some(datafusion::sql::sqlparser::ast::LimitClause::LimitOffset {
                    limit,
                    offset,
                    limit_by,
                }),
                other => {
                    query.limit_clause = other;
                    return ControlFlow::Continue(());
                }
            };
            query.fetch = None;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        reassociate_is_distinct_from(expr);
        // `CAST(CAST(oid AS regtype) AS text)` is the type's name.
        if let Expr::Cast {
            expr: inner,
            data_type: DataType::Text | DataType::Varchar(_),
            ..
        } = expr
            && let Expr::Cast {
                expr: oid,
                data_type: regtype,
                ..
            } = inner.as_ref()
            && custom_type_name(regtype).as_deref() == Some("regtype")
        {
            *expr = Expr::Function(call(
                "format_type",
                vec![(**oid).clone(), Expr::Value(Value::Null.into())],
            ));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Subquery(query) => {
                *expr = super::subquery::scalar(query);
            }
            Expr::Function(f)
                if matches!(f.args, FunctionArguments::Subquery(_))
                    && last_name(&f.name) == "array" =>
            {
                if let Some(transform) = array_of_unnest(f).or_else(|| array_of_query(f)) {
                    *expr = transform;
                }
            }
            Expr::Function(f) => {
                strip_function_schema(&mut f.name);
                if let Some(value) = session_value(f, self.facts, &mut self.reads) {
                    *expr = value;
                } else if let Some(equivalent) = equivalent_function(f) {
                    *expr = equivalent;
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
                regproc_compared_with_oid(expr);
            }
            Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } if matches!(right.as_ref(), Expr::Value(v) if matches!(v.value, Value::Placeholder(_))) =>
            {
                // `x = ANY($1)`: the parameter is an array literal sent as text
                // (`{r,v}`), as drivers send it without a declared type.
                let taken = std::mem::replace(right.as_mut(), Expr::Value(Value::Null.into()));
                **right = Expr::Function(call("kp_text_array", vec![taken]));
            }
            Expr::CompoundFieldAccess { root, access_chain }
                if matches!(
                    access_chain.as_slice(),
                    [AccessExpr::Dot(Expr::Identifier(_))]
                ) =>
            {
                // `(composite).field` → `get_field(composite, 'field')`.
                if let [AccessExpr::Dot(Expr::Identifier(field))] = access_chain.as_slice() {
                    let field = string(field.value.clone());
                    let root = std::mem::replace(root.as_mut(), Expr::Value(Value::Null.into()));
                    *expr = Expr::Function(call("get_field", vec![root, field]));
                }
            }
            Expr::Like {
                negated,
                any: false,
                expr: subject,
                pattern,
                escape_char: Some(escape),
            }
            | Expr::ILike {
                negated,
                any: false,
                expr: subject,
                pattern,
                escape_char: Some(escape),
            } if !matches!(&escape.value, Value::SingleQuotedString(e) if e == "\\") => {
                // The engine's LIKE escapes with a backslash only: another escape
                // character becomes a regular expression match.
                let negated = *negated;
                let escape = Expr::Value(escape.clone());
                let subject = std::mem::replace(subject.as_mut(), Expr::Value(Value::Null.into()));
                let pattern = std::mem::replace(pattern.as_mut(), Expr::Value(Value::Null.into()));
                let case_insensitive = matches!(expr, Expr::ILike { .. });
                let op = match (negated, case_insensitive) {
                    (false, false) => BinaryOperator::PGRegexMatch,
                    (true, false) => BinaryOperator::PGRegexNotMatch,
                    (false, true) => BinaryOperator::PGRegexIMatch,
                    (true, true) => BinaryOperator::PGRegexNotIMatch,
                };
                *expr = Expr::BinaryOp {
                    left: Box::new(subject),
                    op,
                    right: Box::new(Expr::Function(call("kp_like_regex", vec![pattern, escape]))),
                };
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
                if name == "oid" && is_regproc_column(inner) {
                    // `typreceive::oid` is the function's OID, as in PostgreSQL.
                    let column = std::mem::replace(inner.as_mut(), Expr::Value(Value::Null.into()));
                    *expr = Expr::Function(call("kp_regproc_oid", vec![column]));
                } else if name == "regproc" {
                    let taken = std::mem::replace(inner.as_mut(), Expr::Value(Value::Null.into()));
                    *expr = taken;
                } else if name == "regtype" || name == "regclass" {
                    // A name looks the object up; an OID passes through.
                    let taken = std::mem::replace(inner.as_mut(), Expr::Value(Value::Null.into()));
                    let function = if name == "regtype" {
                        "kp_regtype"
                    } else {
                        "kp_regclass"
                    };
                    *expr = Expr::Function(call(function, vec![taken]));
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

/// The parser reads the right side of `a IS [NOT] DISTINCT FROM b AND c` as `b AND c`;
/// in PostgreSQL `IS` binds tighter than `AND` and `OR`: `(a IS NOT DISTINCT FROM b) AND c`.
/// The operand is the leftmost one of that right side. (A chain that mixes `AND` and `OR`
/// after a second `IS DISTINCT FROM` keeps the parser's grouping: parenthesize it.)
fn reassociate_is_distinct_from(expr: &mut Expr) {
    fn rebuild(left: Expr, right: Expr, negated: bool) -> Expr {
        match right {
            Expr::BinaryOp {
                left: first,
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                right: rest,
            } => Expr::BinaryOp {
                left: Box::new(rebuild(left, *first, negated)),
                op,
                right: rest,
            },
            // Parenthesized, so that the statement reads the same when printed and parsed.
            right if negated => Expr::Nested(Box::new(Expr::IsNotDistinctFrom(
                Box::new(left),
                Box::new(right),
            ))),
            right => Expr::Nested(Box::new(Expr::IsDistinctFrom(
                Box::new(left),
                Box::new(right),
            ))),
        }
    }
    let negated = match expr {
        Expr::IsNotDistinctFrom(_, right) | Expr::IsDistinctFrom(_, right)
            if matches!(
                right.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And | BinaryOperator::Or,
                    ..
                }
            ) =>
        {
            matches!(expr, Expr::IsNotDistinctFrom(..))
        }
        _ => return,
    };
    let taken = std::mem::replace(expr, Expr::Value(Value::Null.into()));
    if let Expr::IsNotDistinctFrom(left, right) | Expr::IsDistinctFrom(left, right) = taken {
        *expr = rebuild(*left, *right, negated);
    }
}

/// `ORDER BY f(x)` where `f(x)` is also a select item → `ORDER BY <its position>`: the
/// same order, and the engine then sorts by the output column instead of planning the
/// expression twice (which it refuses when the item is aliased, as in
/// `SELECT count(oid) AS oid ... ORDER BY count(oid)`).
fn order_by_position(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return;
    };
    if select.projection.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return;
    }
    let Some(datafusion::sql::sqlparser::ast::OrderBy {
        kind: datafusion::sql::sqlparser::ast::OrderByKind::Expressions(order),
        ..
    }) = &mut query.order_by
    else {
        return;
    };
    for o in order.iter_mut() {
        if !matches!(o.expr, Expr::Function(_)) {
            continue;
        }
        let position = select.projection.iter().position(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => *e == o.expr,
            _ => false,
        });
        if let Some(i) = position {
            o.expr = number(i64::try_from(i + 1).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(sql: &str) -> String {
        let session =
            crate::session::Session::new("ann", 7, crate::time_zone::TimeZone::default(), &[]);
        let facts = SessionFacts {
            session: &session,
            database: "kpitables",
            temp_tables: None,
        };
        let mut statements = crate::sql::parse(sql).expect("parses");
        apply(&mut statements[0], &facts);
        statements[0].to_string()
    }

    #[test]
    fn qualified_functions_lose_pg_catalog() {
        assert_eq!(
            rewrite("SELECT pg_catalog.format_type(1, 2) AS t"),
            "SELECT format_type(1, 2) AS t"
        );
    }

    #[test]
    fn regproc_columns_compare_with_oids() {
        assert_eq!(
            rewrite(
                "SELECT oid FROM pg_type WHERE (typreceive != 0 OR 0 <> t.typsend) AND typreceive::TEXT != 'array_recv' AND typinput::oid > 0"
            ),
            "SELECT oid FROM pg_type WHERE (kp_regproc_oid(typreceive) <> 0 OR 0 <> kp_regproc_oid(t.typsend)) AND typreceive::TEXT <> 'array_recv' AND kp_regproc_oid(typinput) > 0"
        );
    }

    #[test]
    fn psql_operator_spelling_becomes_plain_operator() {
        assert_eq!(
            rewrite(
                "SELECT 'x' AS one WHERE 'a' OPERATOR(pg_catalog.~) '^a$' COLLATE pg_catalog.default"
            ),
            "SELECT 'x' AS one WHERE 'a' ~ '^a$'"
        );
    }

    #[test]
    fn session_functions_become_values() {
        assert_eq!(
            rewrite(
                "SELECT current_user, current_database(), current_setting('application_name'), pg_backend_pid()"
            ),
            "SELECT 'ann' AS \"current_user\", 'kpitables' AS \"current_database\", '' AS \"current_setting\", 7 AS \"pg_backend_pid\""
        );
    }

    /// Runs `sql` after the compat rules, and `expected_sql` as written, on small tables.
    async fn same_answer(sql: &str, expected_sql: &str) {
        let ctx = datafusion::prelude::SessionContext::new();
        for ddl in [
            "CREATE TABLE o AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS v(x, name)",
            "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'one', make_array(1, 2)), \
             (2, 'two', make_array(3)), (2, 'two', make_array(4))) AS v(k, v, arr)",
        ] {
            ctx.sql(ddl)
                .await
                .expect("ddl")
                .collect()
                .await
                .expect("ddl runs");
        }
        let run = |q: String| {
            let ctx = ctx.clone();
            async move {
                let batches = ctx.sql(&q).await?.collect().await?;
                Ok::<_, datafusion::error::DataFusionError>(
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                        .to_string()
                        .lines()
                        .skip(3)
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                )
            }
        };
        let ours = run(rewrite(sql)).await.expect("rewritten query runs");
        let expected = run(expected_sql.to_string())
            .await
            .expect("expected query runs");
        assert_eq!(ours, expected, "{}", rewrite(sql));
        assert!(ours.len() >= 2, "no rows: {ours:?}");
    }

    #[tokio::test]
    async fn is_distinct_from_binds_tighter_than_and() {
        same_answer(
            "SELECT o.x, o.name IS NOT DISTINCT FROM 'a' AND o.x IS DISTINCT FROM 3 AS m \
             FROM o ORDER BY o.x",
            "SELECT o.x, (o.name IS NOT DISTINCT FROM 'a') AND (o.x IS DISTINCT FROM 3) AS m \
             FROM o ORDER BY o.x",
        )
        .await;
    }

    #[tokio::test]
    async fn exists_in_a_select_list_answers_as_a_join() {
        same_answer(
            "SELECT o.x, EXISTS (SELECT 1 FROM t WHERE t.k = o.x AND o.x = ANY (t.arr)) AS e, \
             NOT EXISTS (SELECT null FROM t WHERE t.k = o.x) AS n FROM o ORDER BY o.x",
            "SELECT o.x, coalesce(bool_or(array_has(t.arr, o.x)), false) AS e, \
             count(t.k) = 0 AS n FROM o LEFT JOIN t ON t.k = o.x GROUP BY o.x ORDER BY o.x",
        )
        .await;
    }

    #[tokio::test]
    async fn select_item_of_outer_and_inner_columns_answers_as_a_join() {
        same_answer(
            "SELECT o.x, (SELECT o.name || '-' || t.v FROM t WHERE t.k = o.x AND t.k < 2) AS m \
             FROM o ORDER BY o.x",
            "SELECT o.x, o.name || '-' || t.v AS m FROM o LEFT JOIN t ON t.k = o.x AND t.k < 2 \
             ORDER BY o.x",
        )
        .await;
    }

    #[test]
    fn correlated_lookups_are_aggregated() {
        assert_eq!(
            rewrite("SELECT (SELECT d.x FROM d WHERE d.id = a.id) AS v FROM a"),
            "SELECT (SELECT max(d.x) FROM d WHERE d.id = a.id) AS v FROM a"
        );
        assert_eq!(
            rewrite("SELECT (SELECT count(*) AS n FROM d WHERE d.id = a.id) AS v FROM a"),
            "SELECT (SELECT count(*) AS n FROM d WHERE d.id = a.id) AS v FROM a"
        );
        // psql's \d: an outer-only condition is hoisted, an outer column equated to an
        // inner one is replaced by it.
        assert_eq!(
            rewrite(
                "SELECT (SELECT c.collname FROM pg_collation c, pg_type t WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation AND a.attnum > 0) AS v FROM a"
            ),
            "SELECT CASE WHEN a.attnum > 0 THEN (SELECT max(c.collname) FROM pg_collation c, pg_type t WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND c.oid <> t.typcollation) END AS v FROM a"
        );
    }

    #[tokio::test]
    async fn array_of_a_correlated_query_answers_as_array_agg() {
        same_answer(
            "SELECT o.x, ARRAY(SELECT t.v FROM t WHERE t.k = o.x ORDER BY t.v) AS vs \
             FROM o ORDER BY o.x",
            "SELECT o.x, (SELECT array_agg(t.v ORDER BY t.v) FROM t WHERE t.k = o.x) AS vs \
             FROM o ORDER BY o.x",
        )
        .await;
        same_answer(
            "SELECT o.x, ARRAY(SELECT i * 10 FROM generate_series(1, 3) AS i) AS s FROM o ORDER BY o.x",
            "SELECT o.x, make_array(10, 20, 30) AS s FROM o ORDER BY o.x",
        )
        .await;
        // An item with a lookup of its own, over a series.
        same_answer(
            "SELECT ARRAY(SELECT (SELECT o.name FROM o WHERE o.x = i) FROM generate_series(3, 1, -1) AS i) AS s",
            "SELECT make_array('c', 'b', 'a') AS s",
        )
        .await;
    }

    #[test]
    fn array_of_unnest_becomes_array_transform() {
        assert_eq!(
            rewrite(
                "SELECT array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x) AS o FROM tc"
            ),
            "SELECT array_transform(tc.reloptions, x -> 'toast.' || x) AS o FROM tc"
        );
    }

    #[test]
    fn catalog_types_become_engine_types() {
        assert_eq!(
            rewrite("SELECT '1'::pg_catalog.oid AS o, x::name AS n FROM t"),
            "SELECT CAST('1' AS BIGINT) AS o, CAST(x AS TEXT) AS n FROM t"
        );
        assert_eq!(
            rewrite("SELECT 'sales'::regclass AS r"),
            "SELECT kp_regclass('sales') AS r"
        );
    }

    #[test]
    fn fetch_first_is_a_limit() {
        assert_eq!(
            rewrite("SELECT a FROM t ORDER BY a OFFSET 2 ROWS FETCH NEXT 3 ROWS ONLY"),
            "SELECT a FROM t ORDER BY a LIMIT 3 OFFSET 2 ROWS"
        );
    }

    #[test]
    fn unnamed_items_get_postgres_names() {
        assert_eq!(
            rewrite("SELECT count(*), 1, version(), x, t.y, 2::int, (SELECT max(z) FROM u) FROM t"),
            "SELECT count(*) AS \"count\", CAST(1 AS INTEGER) AS \"?column?\", version() AS \"version\", x, t.y, 2::INT AS \"int4\", (SELECT max(z) AS \"max\" FROM u) AS \"max\" FROM t"
        );
    }
}
