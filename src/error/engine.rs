//! What the embedded engine's errors mean, in PostgreSQL's words: the class of each
//! DataFusion error (SQLSTATE through [`Error`]), its type names as PostgreSQL's, invalid
//! literals and unknown functions as PostgreSQL reports them.

use datafusion::error::DataFusionError;

use super::Error;

/// Classify an error of the embedded DataFusion engine.
///
/// The rewrite stage has already checked names against the model, so what remains
/// are mostly type and value errors.
impl From<DataFusionError> for Error {
    fn from(err: DataFusionError) -> Error {
        if let Some(source) = source_error(&err) {
            return source;
        }
        match err {
            DataFusionError::SQL(e, _) => Error::Syntax(e.to_string()),
            DataFusionError::ArrowError(e, _) => classify_message(e.to_string(), false),
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                Error::from(*inner)
            }
            DataFusionError::Collection(mut errors) if !errors.is_empty() => {
                Error::from(errors.swap_remove(0))
            }
            DataFusionError::Shared(inner) => classify_message(inner.to_string(), false),
            DataFusionError::SchemaError(e, _) => classify_message(e.to_string(), true),
            DataFusionError::Plan(m) => classify_message(m, true),
            DataFusionError::Execution(m) => classify_message(m, false),
            DataFusionError::NotImplemented(m) => Error::unsupported(m, None),
            DataFusionError::ResourcesExhausted(m) => Error::OutOfMemory(m),
            other => classify_message(other.to_string(), false),
        }
    }
}

/// A warehouse failure carried through the engine (an executor returns it as an
/// external error; the engine may wrap it in context or share it between partitions).
fn source_error(err: &DataFusionError) -> Option<Error> {
    match err {
        DataFusionError::External(e) => e.downcast_ref::<Error>().and_then(|e| match e {
            Error::Source {
                source_name,
                failure,
            } => Some(Error::Source {
                source_name: source_name.clone(),
                failure: failure.clone(),
            }),
            Error::Canceled => Some(Error::Canceled),
            Error::TooLarge(m) => Some(Error::TooLarge(m.clone())),
            Error::StatementTimeout => Some(Error::StatementTimeout),
            Error::Terminated(why) => Some(Error::Terminated(*why)),
            Error::OutOfMemory(m) => Some(Error::OutOfMemory(m.clone())),
            Error::Internal(m) => Some(Error::Internal(m.clone())),
            Error::Denied {
                kind,
                message,
                hint,
            } => Some(Error::Denied {
                kind: *kind,
                message: message.clone(),
                hint: hint.clone(),
            }),
            _ => None,
        }),
        DataFusionError::Context(_, inner) => source_error(inner),
        DataFusionError::Shared(inner) => source_error(inner),
        DataFusionError::ArrowError(e, _) => match e.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(inner) => inner
                .downcast_ref::<DataFusionError>()
                .and_then(source_error),
            _ => None,
        },
        _ => None,
    }
}

/// `planning`: the engine refused the statement before running it, so what is not
/// classified otherwise is something kpitables cannot answer yet (0A000), not a bug.
fn classify_message(message: String, planning: bool) -> Error {
    if let Some(invalid) = invalid_input(&message) {
        return invalid;
    }
    let lower = message.to_ascii_lowercase();
    let clean = postgres_type_names(&strip_engine_prefixes(&message));
    if let Some(name) = lower
        .strip_prefix("schema error: no field named ")
        .or_else(|| lower.strip_prefix("no field named "))
    {
        // `no field named t.col. did you mean ...`: the column, without its qualifier.
        let name = name
            .split(". ")
            .next()
            .unwrap_or_default()
            .trim_end_matches('.');
        let name = name.rsplit('.').next().unwrap_or_default();
        Error::UnknownColumn {
            name: name.trim_matches('"').to_string(),
            hint: None,
        }
    } else if let Some(name) = lower.strip_prefix("ambiguous reference to unqualified field ") {
        Error::AmbiguousColumn(name.trim().trim_matches('"').to_string())
    } else if lower.contains("union queries have different number of columns") {
        Error::Syntax("each UNION query must have the same number of columns".into())
    } else if lower.contains("must appear in the group by clause")
        || lower.contains("must be in group by")
    {
        let column = message
            .split_once("column \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(name, _)| name.to_string());
        Error::Grouping {
            message: match column {
                Some(c) => format!(
                    "column \"{c}\" must appear in the GROUP BY clause or be used in an aggregate function"
                ),
                None => clean,
            },
            hint: Some("add the column to GROUP BY, or check that the table name before the dot is one in FROM".into()),
        }
    } else if lower.contains("arguments must be literals") || lower.contains("outerreferencecolumn")
    {
        Error::unsupported(
            "a table function in FROM takes constant arguments only",
            Some(
                "arguments from an outer query (a LATERAL call such as generate_series(t.a, t.b)) are not supported"
                    .to_string(),
            ),
        )
    } else if let Some(undefined) = undefined_function(&message) {
        undefined
    } else if lower.contains("resources exhausted") {
        Error::OutOfMemory(clean)
    } else if lower.contains("divide by zero") || lower.contains("division by zero") {
        Error::DivisionByZero
    } else if lower.contains("cannot cast")
        || lower.contains("cast error")
        || lower.contains("parser error")
        || lower.contains("invalid digit")
        || lower.contains("error parsing")
        || lower.contains("overflow")
    {
        Error::InvalidValue(clean)
    } else if lower.contains("coerc")
        || lower.contains("type")
        || lower.contains("does not support")
        || lower.contains("mismatch")
    {
        Error::TypeMismatch(clean)
    } else if lower.contains("not implemented")
        || lower.contains("unsupported")
        || lower.contains("not supported")
        || planning
        || lower.contains("physical plan does not support")
    {
        Error::unsupported(
            clean,
            Some("kpitables cannot run this statement yet; see docs/clients.md".to_string()),
        )
    } else {
        Error::Engine(clean)
    }
}

/// The engine's "Cannot cast string 'x' to value of Date32 type" (and its other
/// spellings) as PostgreSQL says it.
fn invalid_input(message: &str) -> Option<Error> {
    static PATTERNS: std::sync::LazyLock<Vec<(regex::Regex, Option<&'static str>)>> =
        std::sync::LazyLock::new(|| {
            [
                (
                    r"Cannot cast (?:string|value) '(?s:(.*?))' to value of (.+?) type",
                    None,
                ),
                (
                    r"Error parsing timestamp from '(?s:(.*?))'",
                    Some("timestamp"),
                ),
            ]
            .into_iter()
            .filter_map(|(p, t)| regex::Regex::new(p).ok().map(|r| (r, t)))
            .collect()
        });
    PATTERNS.iter().find_map(|(pattern, fixed)| {
        let captures = pattern.captures(message)?;
        let value = captures.get(1)?.as_str().to_string();
        let type_name = match fixed {
            Some(t) => (*t).to_string(),
            None => postgres_type_name(captures.get(2)?.as_str()),
        };
        Some(Error::InvalidInput { type_name, value })
    })
}

/// The engine's "Invalid function 'f'" and "Failed to coerce arguments to satisfy a call
/// to 'f'" as PostgreSQL's "function f(types) does not exist" (argument types are filled
/// in by the engine from the statement when the message does not give them).
fn undefined_function(message: &str) -> Option<Error> {
    static PATTERNS: std::sync::LazyLock<Option<[regex::Regex; 4]>> =
        std::sync::LazyLock::new(|| {
            Some([
                regex::Regex::new(
                    r"No function matches the given name and argument types '([^'(]+)\(([^']*)\)'",
                )
                .ok()?,
                regex::Regex::new(r"Invalid function '([^']+)'(?:\.\s*Did you mean '([^']+)'\?)?")
                    .ok()?,
                regex::Regex::new(
                    r"(?s)call to '([^']+)' function: coercion from (.*?) to the signature",
                )
                .ok()?,
                regex::Regex::new(r"[Ff]unction '([^']+)' .*not found").ok()?,
            ])
        });
    let [no_match, invalid, coercion, not_found] = PATTERNS.as_ref()?;
    if let Some(c) = no_match.captures(message) {
        let types = c.get(2)?.as_str();
        return Some(Error::UndefinedFunction {
            name: c.get(1)?.as_str().to_string(),
            args: Some(
                split_types(types)
                    .iter()
                    .map(|t| postgres_type_name(t))
                    .collect(),
            ),
            suggestion: None,
        });
    }
    if let Some(c) = invalid.captures(message) {
        return Some(Error::UndefinedFunction {
            name: c.get(1)?.as_str().to_string(),
            args: None,
            suggestion: c.get(2).map(|m| m.as_str().to_string()),
        });
    }
    if let Some(c) = coercion.captures(message) {
        let types = c.get(2)?.as_str();
        let args = if types.trim().is_empty() {
            Vec::new()
        } else {
            split_types(types)
                .into_iter()
                .map(|t| postgres_type_name(&t))
                .collect()
        };
        return Some(Error::UndefinedFunction {
            name: c.get(1)?.as_str().to_string(),
            args: Some(args),
            suggestion: None,
        });
    }
    let c = not_found.captures(message)?;
    Some(Error::UndefinedFunction {
        name: c.get(1)?.as_str().to_string(),
        args: None,
        suggestion: None,
    })
}

/// `Utf8, Decimal128(38, 10)` → the two type names (commas inside parentheses kept).
fn split_types(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for ch in list.chars() {
        match ch {
            '(' => {
                depth += 1;
                current.push(ch);
            }
            ')' => {
                depth = depth.saturating_sub(1);
                current.push(ch);
            }
            ',' if depth == 0 => {
                out.push(current.trim().to_string());
                current.clear();
            }
            _ => current.push(ch),
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

/// The PostgreSQL name of an engine (Arrow) type as the engine prints it (through the
/// one type mapping, [`crate::types`]).
fn postgres_type_name(arrow: &str) -> String {
    match arrow
        .trim()
        .parse::<datafusion::arrow::datatypes::DataType>()
    {
        Ok(datafusion::arrow::datatypes::DataType::Null) => "unknown".into(),
        Ok(data_type) => crate::types::pg_type_of(&data_type).0.name.to_string(),
        Err(_) => arrow.trim().to_lowercase(),
    }
}

/// `message` with the engine's type names (`Date32`, `Decimal128(38, 10)`, `Utf8`) in
/// PostgreSQL's words.
fn postgres_type_names(message: &str) -> String {
    static TYPES: std::sync::LazyLock<Option<regex::Regex>> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r#"\b(?:Decimal(?:32|64|128|256)\(\d+, ?-?\d+\)|Time(?:32|64)\([^)]*\)|Timestamp\([^)]*\)|Interval\([^)]*\)|Duration\([^)]*\)|(?:Utf8View|LargeUtf8|Utf8|U?Int(?:8|16|32|64)|Float(?:16|32|64)|Boolean|Date(?:32|64)|LargeBinary|BinaryView|Binary)\b)"#,
        )
        .ok()
    });
    match TYPES.as_ref() {
        Some(types) => types
            .replace_all(message, |c: &regex::Captures<'_>| postgres_type_name(&c[0]))
            .into_owned(),
        None => message.to_string(),
    }
}

fn strip_engine_prefixes(message: &str) -> String {
    let mut m = message.trim();
    for prefix in [
        "Error during planning: ",
        "Execution error: ",
        "Arrow error: ",
        "Schema error: ",
        "Cast error: ",
        "This feature is not implemented: ",
    ] {
        while let Some(rest) = m.strip_prefix(prefix) {
            m = rest.trim();
        }
    }
    m.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_literal_is_said_in_postgres_words() {
        let e = classify_message(
            "Arrow error: Cast error: Cannot cast string 'yesterday-ish' to value of Date32 type"
                .into(),
            false,
        );
        assert_eq!(
            e.to_string(),
            "invalid input syntax for type date: \"yesterday-ish\""
        );
        assert_eq!(e.sqlstate(), "22007");
        let e = classify_message(
            "Cannot cast string '4.4.5' to value of Decimal128(38, 10) type".into(),
            false,
        );
        assert_eq!(
            e.to_string(),
            "invalid input syntax for type numeric: \"4.4.5\""
        );
        assert_eq!(e.sqlstate(), "22P02");
        let e = classify_message(
            "Parser error: Error parsing timestamp from 'soon': error parsing date".into(),
            false,
        );
        assert_eq!(e.sqlstate(), "22007");
    }

    #[test]
    fn engine_type_names_become_postgres_type_names() {
        assert_eq!(
            postgres_type_names(
                "cannot compare Date32 with Utf8 or Decimal128(38, 10) or Timestamp(ns, \"UTC\")"
            ),
            "cannot compare date with text or numeric or timestamp with time zone"
        );
        assert_eq!(
            postgres_type_names("Int64 and Float64"),
            "bigint and double precision"
        );
    }

    #[test]
    fn an_unknown_function_is_said_in_postgres_words() {
        let e = classify_message(
            "Invalid function 'foo'.\nDid you mean 'floor'?".into(),
            true,
        );
        assert!(
            matches!(&e, Error::UndefinedFunction { name, args: None, suggestion: Some(s) } if name == "foo" && s == "floor"),
            "{e:?}"
        );
        assert_eq!(e.sqlstate(), "42883");
        let e = classify_message(
            "Failed to coerce arguments to satisfy a call to 'abs' function: coercion from Utf8, Decimal128(10, 2) to the signature Numeric(1) failed"
                .into(),
            true,
        );
        assert_eq!(e.to_string(), "function abs(text, numeric) does not exist");
    }

    #[test]
    fn a_panic_is_an_error() {
        let arrow = "/cargo/registry/src/x/arrow-array-59.3.2/src/builder/generic_bytes_builder.rs";
        crate::error::panic::note_origin("byte array offset overflow", arrow);
        let e = Error::from_panic(&"byte array offset overflow");
        assert_eq!(e.sqlstate(), "54000");
        // Our own arithmetic overflowing is a bug, not a size limit.
        crate::error::panic::note_origin("attempt to add with overflow", "src/rewrite/grain.rs");
        let e = Error::from_panic(&"attempt to add with overflow");
        assert_eq!(e.sqlstate(), "XX000");
        // With no origin noted (the hook not installed), the same.
        let e = Error::from_panic(&"offset overflow in a test");
        assert_eq!(e.sqlstate(), "XX000");
        let e = Error::from_panic(&String::from("index out of bounds"));
        assert_eq!(e.sqlstate(), "XX000");
    }

    #[test]
    fn a_diagnostic_keeps_the_class_of_the_error_it_wraps() {
        use datafusion::common::Diagnostic;
        let wrapped = |message: &str| {
            Error::from(DataFusionError::Diagnostic(
                Box::new(Diagnostic::new_error(message, None)),
                Box::new(DataFusionError::Plan(message.to_string())),
            ))
        };
        let e = wrapped("Ambiguous reference to unqualified field oid");
        assert_eq!(e.sqlstate(), "42702");
        assert_eq!(e.to_string(), "column reference \"oid\" is ambiguous");
        let e = wrapped("UNION queries have different number of columns");
        assert_eq!(e.sqlstate(), "42601");
        let e = wrapped(
            "Column in ORDER BY must be in GROUP BY or an aggregate function: While expanding wildcard, column \"t.a\" must appear in the GROUP BY clause",
        );
        assert_eq!(e.sqlstate(), "42803");
        assert_eq!(
            e.to_string(),
            "column \"t.a\" must appear in the GROUP BY clause or be used in an aggregate function"
        );
    }
}
