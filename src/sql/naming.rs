//! The names of result columns, as PostgreSQL gives them: unnamed select items get
//! PostgreSQL's name (`count`, `version`, `?column?`, `int4`), and a name repeated in
//! one select list is kept for the client although the engine wants unique names.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Expr, Ident, Query, SelectItem, SetExpr, Value, VisitorMut,
};

use super::last_name;

/// Gives every unnamed select item the name PostgreSQL gives it (`count`, `version`,
/// `?column?`), before other rules change the expressions. PostgreSQL allows one name
/// twice in a select list (`SELECT n.oid, c.oid`); the engine does not, so a repeated
/// name gets [`DUPLICATE_NAME_MARK`] and a number, which [`output_column_name`] removes
/// again when the result columns are described to the client.
pub struct Naming;

/// Separates a repeated output name from the number that makes it unique.
pub const DUPLICATE_NAME_MARK: &str = "\u{1f}kp";

/// The name the client sees for a result column (see [`Naming`]).
pub fn output_column_name(name: &str) -> &str {
    name.split_once(DUPLICATE_NAME_MARK)
        .map_or(name, |(n, _)| n)
}

impl VisitorMut for Naming {
    type Break = ();
    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        name_items(query.body.as_mut());
        ControlFlow::Continue(())
    }
}

fn alias_name(alias: &Ident) -> String {
    if alias.quote_style.is_some() {
        alias.value.clone()
    } else {
        alias.value.to_lowercase()
    }
}

fn name_items(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            // A wildcard expands to names the engine may already have from a plain
            // column of the same list (`SELECT t.oid, t.*`).
            let has_wildcard = select.projection.iter().any(|i| {
                matches!(
                    i,
                    SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                )
            });
            let mut taken: Vec<String> = Vec::new();
            for (position, item) in select.projection.iter_mut().enumerate() {
                let unique = |name: String, taken: &mut Vec<String>| {
                    let name = if taken.contains(&name) || has_wildcard {
                        format!("{name}{DUPLICATE_NAME_MARK}{position}")
                    } else {
                        name
                    };
                    taken.push(name.clone());
                    name
                };
                match item {
                    SelectItem::UnnamedExpr(expr) => {
                        let name = crate::sql::output_name(expr);
                        let plain =
                            matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
                        let unique_name = unique(name.clone(), &mut taken);
                        if !plain || unique_name != name {
                            let expr = std::mem::replace(expr, Expr::Value(Value::Null.into()));
                            *item = SelectItem::ExprWithAlias {
                                expr,
                                alias: Ident::with_quote('"', unique_name),
                            };
                        }
                    }
                    SelectItem::ExprWithAlias { alias, .. } => {
                        let name = alias_name(alias);
                        let unique_name = unique(name.clone(), &mut taken);
                        if unique_name != name {
                            *alias = Ident::with_quote('"', unique_name);
                        }
                    }
                    _ => {}
                }
                if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item
                {
                    int4_constant(e);
                }
            }
        }
        SetExpr::SetOperation { left, .. } => name_items(left),
        SetExpr::Query(q) => name_items(q.body.as_mut()),
        _ => {}
    }
}

/// `1` → `CAST(1 AS INT)` when the constant fits 32 bits.
fn int4_constant(expr: &mut Expr) {
    if let Expr::Value(v) = expr
        && let Value::Number(n, false) = &v.value
        && n.parse::<i32>().is_ok()
    {
        let constant = std::mem::replace(expr, Expr::Value(Value::Null.into()));
        *expr = Expr::Cast {
            kind: CastKind::Cast,
            expr: Box::new(constant),
            data_type: DataType::Integer(None),
            array: false,
            format: None,
        };
    }
}

/// The name PostgreSQL gives a cast of a constant (`SELECT 1::int` is `int4`).
pub fn type_display_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4".into(),
        DataType::BigInt(_) | DataType::Int8(_) => "int8".into(),
        DataType::SmallInt(_) | DataType::Int2(_) => "int2".into(),
        DataType::Text => "text".into(),
        DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar".into(),
        DataType::Boolean | DataType::Bool => "bool".into(),
        DataType::Real | DataType::Float4 => "float4".into(),
        DataType::DoublePrecision | DataType::Float8 => "float8".into(),
        DataType::Numeric(_) | DataType::Decimal(_) => "numeric".into(),
        DataType::Date => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Custom(name, _) => last_name(name),
        other => other.to_string().to_lowercase(),
    }
}
