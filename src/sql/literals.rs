//! Literals and formats as PostgreSQL reads them, rewritten on the syntax tree where the
//! engine reads them otherwise. Each rule is general (never matched on query text):
//!
//! - date and timestamp literals in PostgreSQL's other spellings (`'2022/02/02'`,
//!   `'20220101'`, an offset `+00:00:00`) → ISO 8601; a `TIMESTAMP` literal outside the
//!   engine's nanosecond range (`'9999-12-31'`) → a microsecond timestamp, as PostgreSQL
//!   stores it;
//! - `localtimestamp` / `localtime` → the current time without time zone;
//! - `to_char`, `to_date`, `to_timestamp` with a PostgreSQL template (`'YYYY-MM-DD HH24:MI'`)
//!   → the engine's strftime template;
//! - a quoted literal given to a numeric function (`cos('0')`) → a float, the only type
//!   PostgreSQL could resolve it to;
//! - `CASE x WHEN v ...` → `CASE WHEN x = v ...` when `x` is a constant or a column, so that
//!   `v` is typed by `x` (see [`crate::operators`]); quoted results next to a boolean or
//!   integer result take that type;
//! - `'{int8,numeric}'::regtype[]` → an array of type OIDs;
//! - `pg_typeof(<number literal>)` → the literal cast to the type PostgreSQL gives it
//!   (`integer` when it fits 32 bits, else `bigint`, `numeric` with a fraction or an
//!   exponent), where the engine reads every integer literal as a 64-bit one.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, BinaryOperator, CastKind, DataType, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArguments, TimezoneInfo, Value, VisitorMut,
};

use super::{call, last_name, parse_expr};

/// The rewrite pass (see the module docs).
pub struct Literals;

impl VisitorMut for Literals {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(id) if id.quote_style.is_none() => {
                let sql = match id.value.to_lowercase().as_str() {
                    "localtimestamp" => "CAST(now() AS TIMESTAMP)",
                    "localtime" => "CAST(now() AS TIME)",
                    _ => return ControlFlow::Continue(()),
                };
                if let Some(e) = parse_expr(sql) {
                    *expr = e;
                }
            }
            Expr::TypedString(typed) => {
                if let Value::SingleQuotedString(s) = &typed.value.value
                    && let Some(replacement) = datetime_literal(&typed.data_type, s)
                {
                    *expr = replacement;
                }
            }
            Expr::Cast {
                expr: inner,
                data_type,
                ..
            } => {
                let Some(s) = quoted(inner) else {
                    return ControlFlow::Continue(());
                };
                if let Some(array) = regtype_array(data_type, &s) {
                    *expr = array;
                } else if let Some(replacement) = datetime_literal(data_type, &s) {
                    *expr = replacement;
                }
            }
            Expr::Function(f)
                if matches!(f.args, FunctionArguments::None)
                    && matches!(last_name(&f.name).as_str(), "localtimestamp" | "localtime") =>
            {
                let sql = if last_name(&f.name) == "localtime" {
                    "CAST(now() AS TIME)"
                } else {
                    "CAST(now() AS TIMESTAMP)"
                };
                if let Some(e) = parse_expr(sql) {
                    *expr = e;
                }
            }
            Expr::Function(f) if last_name(&f.name) == "pg_typeof" => typeof_literal(f),
            Expr::Function(f) => typed_function_arguments(f),
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                if let Some(subject) = operand.take_if(|o| is_stable(o)) {
                    for when in conditions.iter_mut() {
                        let value = std::mem::replace(&mut when.condition, null());
                        when.condition = Expr::BinaryOp {
                            left: subject.clone(),
                            op: BinaryOperator::Eq,
                            right: Box::new(value),
                        };
                    }
                }
                let mut results: Vec<&mut Expr> = conditions
                    .iter_mut()
                    .map(|w| &mut w.result)
                    .chain(else_result.iter_mut().map(|e| e.as_mut()))
                    .collect();
                let typed = results.iter().find_map(|r| match r {
                    Expr::Value(v) => match &v.value {
                        Value::Boolean(_) => Some(DataType::Boolean),
                        Value::Number(n, _) if !n.contains(['.', 'e', 'E']) => {
                            Some(DataType::BigInt(None))
                        }
                        _ => None,
                    },
                    _ => None,
                });
                if let Some(data_type) = typed {
                    for r in results.iter_mut() {
                        if quoted(r).is_some() {
                            let value = std::mem::replace(&mut **r, null());
                            **r = cast(value, data_type.clone());
                        }
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

fn null() -> Expr {
    Expr::Value(Value::Null.into())
}

fn cast(expr: Expr, data_type: DataType) -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(expr),
        data_type,
        array: false,
        format: None,
    }
}

fn string(s: String) -> Expr {
    Expr::Value(Value::SingleQuotedString(s).into())
}

/// The text of a quoted literal.
fn quoted(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::EscapedStringLiteral(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Constants and columns: repeating them in each `WHEN` changes nothing.
fn is_stable(expr: &Expr) -> bool {
    match expr {
        Expr::Value(_) | Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => is_stable(inner),
        _ => false,
    }
}

/// Functions whose arguments are numbers only: PostgreSQL types a quoted argument as
/// `float8` (or as the function's only numeric type).
const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs", "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "cbrt", "ceil", "ceiling",
    "cos", "cosh", "cot", "degrees", "exp", "floor", "ln", "log", "log10", "log2", "pow", "power",
    "radians", "round", "sign", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
];

fn typed_function_arguments(f: &mut Function) {
    let name = last_name(&f.name);
    let FunctionArguments::List(list) = &mut f.args else {
        return;
    };
    if NUMERIC_FUNCTIONS.contains(&name.as_str()) {
        for arg in list.args.iter_mut() {
            if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg
                && quoted(e).is_some()
            {
                let value = std::mem::replace(e, null());
                *e = cast(value, DataType::DoublePrecision);
            }
        }
        return;
    }
    if matches!(name.as_str(), "to_char" | "to_date" | "to_timestamp")
        && let [_, FunctionArg::Unnamed(FunctionArgExpr::Expr(template))] = list.args.as_mut_slice()
        && let Some(pattern) = quoted(template)
    {
        *template = string(strftime_template(&pattern));
    }
}

/// A PostgreSQL `to_char`/`to_timestamp` template as a strftime template.
pub fn strftime_template(template: &str) -> String {
    // Longest first, so that `HH24` wins over `HH` and `Month` over `Mon`.
    const FIELDS: &[(&str, &str)] = &[
        ("YYYY", "%Y"),
        ("HH24", "%H"),
        ("HH12", "%I"),
        ("MONTH", "%B"),
        ("Month", "%B"),
        ("month", "%B"),
        ("YYY", "%Y"),
        ("MON", "%b"),
        ("Mon", "%b"),
        ("mon", "%b"),
        ("DAY", "%A"),
        ("Day", "%A"),
        ("day", "%A"),
        ("DDD", "%j"),
        ("YY", "%y"),
        ("MM", "%m"),
        ("DD", "%d"),
        ("HH", "%I"),
        ("MI", "%M"),
        ("SS", "%S"),
        ("MS", "%3f"),
        ("US", "%6f"),
        ("AM", "%p"),
        ("PM", "%p"),
        ("am", "%P"),
        ("pm", "%P"),
        ("DY", "%a"),
        ("Dy", "%a"),
        ("dy", "%a"),
        // Timestamps are rendered in UTC (the session's TimeZone is not applied).
        ("TZ", "UTC"),
        ("OF", "+00"),
        ("Q", "%q"),
        ("D", "%u"),
    ];
    let mut out = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some(stripped) = rest.strip_prefix('"') {
            // "quoted text" is copied as is.
            let end = stripped.find('"').unwrap_or(stripped.len());
            out.push_str(&stripped[..end].replace('%', "%%"));
            rest = stripped.get(end + 1..).unwrap_or("");
            continue;
        }
        let rest_upper = rest.get(..4.min(rest.len())).map(str::to_uppercase);
        // FM (fill mode) only suppresses padding: the engine does not pad names.
        if rest_upper.as_deref().is_some_and(|u| u.starts_with("FM")) {
            rest = &rest[2..];
            continue;
        }
        let field = FIELDS.iter().find(|(pg, _)| {
            rest.starts_with(pg)
                || (pg
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                    && rest.len() >= pg.len()
                    && rest.is_char_boundary(pg.len())
                    && rest[..pg.len()].eq_ignore_ascii_case(pg)
                    && !matches!(*pg, "MONTH" | "MON" | "DAY" | "DY" | "AM" | "PM"))
        });
        match field {
            Some((pg, strftime)) => {
                out.push_str(strftime);
                rest = &rest[pg.len()..];
            }
            None => {
                if c == '%' {
                    out.push_str("%%");
                } else {
                    out.push(c);
                }
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// `'{int8,numeric}'::regtype[]` → `make_array(kp_regtype('int8'), kp_regtype('numeric'))`.
fn regtype_array(data_type: &DataType, literal: &str) -> Option<Expr> {
    let DataType::Array(ArrayElemTypeDef::SquareBracket(element, _)) = data_type else {
        return None;
    };
    let DataType::Custom(name, _) = element.as_ref() else {
        return None;
    };
    if last_name(name) != "regtype" {
        return None;
    }
    let items = literal.strip_prefix('{')?.strip_suffix('}')?;
    let elements = items
        .split(',')
        .map(|item| item.trim().trim_matches('"'))
        .filter(|item| !item.is_empty())
        .map(|item| Expr::Function(call("kp_regtype", vec![string(item.to_string())])))
        .collect();
    Some(Expr::Function(call("make_array", elements)))
}

/// A date or timestamp literal in ISO 8601, when PostgreSQL's spelling differs.
fn datetime_literal(data_type: &DataType, literal: &str) -> Option<Expr> {
    let is_timestamp = matches!(data_type, DataType::Timestamp(..) | DataType::Datetime(_));
    if !is_timestamp && !matches!(data_type, DataType::Date) {
        return None;
    }
    let iso = iso_datetime(literal);
    let text = iso.as_deref().unwrap_or(literal);
    let year: Option<i32> = text.get(..4).and_then(|y| y.parse().ok());
    // The engine's timestamps are nanoseconds (years 1678 to 2261); PostgreSQL's are
    // microseconds. Outside that range, a microsecond timestamp holds the value.
    let without_zone = matches!(
        data_type,
        DataType::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone)
    );
    if is_timestamp && without_zone && year.is_some_and(|y| !(1678..=2261).contains(&y)) {
        return Some(Expr::Function(call(
            "arrow_cast",
            vec![
                string(text.to_string()),
                string("Timestamp(Microsecond, None)".into()),
            ],
        )));
    }
    let iso = iso?;
    Some(cast(string(iso), data_type.clone()))
}

/// `2022/02/02`, `2022|03|03`, `20220101`, `... +00:00:00` → ISO 8601; None when the
/// literal is already in a form the engine reads (or is not a date at all).
fn iso_datetime(literal: &str) -> Option<String> {
    let s = literal.trim();
    let bytes = s.as_bytes();
    let digits = |from: usize, to: usize| {
        s.get(from..to)
            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
    };
    let (date, rest) = if digits(0, 8) && !s.as_bytes().get(8).is_some_and(u8::is_ascii_digit) {
        (format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..8]), &s[8..])
    } else if digits(0, 4) && matches!(bytes.get(4), Some(b'/' | b'|' | b'.' | b'-')) {
        let sep = char::from(bytes[4]);
        let mut parts = s.splitn(3, sep);
        let (y, m) = (parts.next()?, parts.next()?);
        let tail = parts.next()?;
        let day_len = tail.bytes().take_while(u8::is_ascii_digit).count();
        let (d, rest) = tail.split_at(day_len);
        if m.is_empty() || m.len() > 2 || d.is_empty() || d.len() > 2 {
            return None;
        }
        if !m.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        (format!("{y}-{m:0>2}-{d:0>2}"), rest)
    } else {
        return None;
    };
    // A UTC offset with seconds: `+00:00:00` → `+00:00` (when the seconds are zero).
    let rest = match rest.rfind(['+', '-']) {
        Some(at)
            if rest.len() - at == 9
                && rest[at + 1..].bytes().filter(|b| *b == b':').count() == 2
                && rest.ends_with(":00") =>
        {
            format!("{}{}", &rest[..at], &rest[at..rest.len() - 3])
        }
        _ => rest.to_string(),
    };
    let normalized = format!("{date}{rest}");
    (normalized != s).then_some(normalized)
}

/// `pg_typeof(n)` of a number literal: the literal cast to PostgreSQL's type for it.
fn typeof_literal(f: &mut Function) {
    let FunctionArguments::List(list) = &mut f.args else {
        return;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_mut_slice() else {
        return;
    };
    let Expr::Value(value) = arg else {
        return;
    };
    let Value::Number(n, _) = &value.value else {
        return;
    };
    let data_type = if n.parse::<i32>().is_ok() {
        DataType::Int(None)
    } else if n.parse::<i64>().is_ok() {
        DataType::BigInt(None)
    } else {
        DataType::Numeric(datafusion::sql::sqlparser::ast::ExactNumberInfo::None)
    };
    let literal = std::mem::replace(arg, null());
    *arg = Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(literal),
        data_type,
        array: false,
        format: None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_spellings_become_iso() {
        assert_eq!(iso_datetime("2022/02/02").as_deref(), Some("2022-02-02"));
        assert_eq!(iso_datetime("2022|3|3").as_deref(), Some("2022-03-03"));
        assert_eq!(iso_datetime("20220101").as_deref(), Some("2022-01-01"));
        assert_eq!(
            iso_datetime("2026-01-26 00:00:00+00:00:00").as_deref(),
            Some("2026-01-26 00:00:00+00:00")
        );
        assert_eq!(iso_datetime("2022-02-02"), None);
        assert_eq!(iso_datetime("now"), None);
        assert_eq!(iso_datetime("1 day"), None);
    }

    #[test]
    fn templates_become_strftime() {
        assert_eq!(
            strftime_template("yyyy-MM-dd HH24:mi:ss"),
            "%Y-%m-%d %H:%M:%S"
        );
        assert_eq!(strftime_template("YYYY-MM"), "%Y-%m");
        assert_eq!(strftime_template("FMMonth YYYY"), "%B %Y");
        assert_eq!(strftime_template("Mon DD, YYYY"), "%b %d, %Y");
        assert_eq!(strftime_template("\"Q\"Q YYYY"), "Q%q %Y");
        assert_eq!(strftime_template("100%"), "100%%");
    }
}
