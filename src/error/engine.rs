//! What the embedded engine's errors mean, in PostgreSQL's words: the class of each
//! DataFusion error (SQLSTATE through [`Error`]), its type names as PostgreSQL's, invalid
//! literals and unknown functions as PostgreSQL reports them.

use datafusion::error::DataFusionError;

use super::Error;

/// Classify an error of the embedded DataFusion engine: by its typed variant wherever
/// DataFusion or Arrow give one ([`from_arrow`], [`from_schema`]), and by its text only
/// where they do not ([`TEXT_CLASSES`], each entry tested against the engine's own
/// error, so an upgrade that rewords one fails a test instead of changing a SQLSTATE).
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
            DataFusionError::ArrowError(e, _) => from_arrow(*e),
            DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                Error::from(*inner)
            }
            DataFusionError::Collection(mut errors) if !errors.is_empty() => {
                Error::from(errors.swap_remove(0))
            }
            DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(inner) => Error::from(inner),
                Err(shared) => classify_message(shared.to_string(), false),
            },
            DataFusionError::SchemaError(e, _) => from_schema(*e),
            DataFusionError::Plan(m) => classify_message(m, true),
            DataFusionError::Execution(m) => classify_message(m, false),
            DataFusionError::NotImplemented(m) => match text_class(&m.to_ascii_lowercase()) {
                Some(TextClass::LateralArguments) => Error::Correlated {
                    message: m,
                    hint: None,
                },
                _ => Error::unsupported(m, None),
            },
            DataFusionError::ResourcesExhausted(m) => Error::OutOfMemory(m),
            other => classify_message(other.to_string(), false),
        }
    }
}

/// An Arrow error, by its kind.
fn from_arrow(e: datafusion::arrow::error::ArrowError) -> Error {
    use datafusion::arrow::error::ArrowError;
    match e {
        ArrowError::DivideByZero => Error::DivisionByZero,
        ArrowError::ArithmeticOverflow(m) => Error::OutOfRange(postgres_type_names(&m)),
        ArrowError::CastError(m) | ArrowError::ParseError(m) => {
            invalid_input(&m).unwrap_or_else(|| {
                Error::InvalidValue(postgres_type_names(&strip_engine_prefixes(&m)))
            })
        }
        ArrowError::MemoryError(m) => Error::OutOfMemory(m),
        ArrowError::NotYetImplemented(m) => Error::unsupported(m, None),
        ArrowError::OffsetOverflowError(_)
        | ArrowError::DictionaryKeyOverflowError
        | ArrowError::RunEndIndexOverflowError => Error::TooLarge(e.to_string()),
        ArrowError::ExternalError(inner) => match inner.downcast::<DataFusionError>() {
            Ok(inner) => Error::from(*inner),
            Err(inner) => classify_message(inner.to_string(), false),
        },
        other => classify_message(other.to_string(), false),
    }
}

/// A schema error, by its kind.
fn from_schema(e: datafusion::common::SchemaError) -> Error {
    use datafusion::common::SchemaError;
    match e {
        SchemaError::FieldNotFound { field, .. } => Error::UnknownColumn {
            name: field.name,
            hint: None,
        },
        SchemaError::AmbiguousReference { field } => Error::AmbiguousColumn(field.name),
        other => classify_message(other.to_string(), true),
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

/// What a text pattern of the engine's messages means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextClass {
    /// 42601: a UNION of different widths.
    UnionWidth,
    /// 42803: a column outside GROUP BY.
    Grouping,
    /// 0A000: a table function given an outer column.
    LateralArguments,
    /// 53200.
    OutOfMemory,
    /// 22012.
    DivisionByZero,
    /// 22P02: a value that cannot be converted.
    InvalidValue,
    /// 22003: a value out of its type's range.
    OutOfRange,
    /// 42804: operands of the wrong types.
    TypeMismatch,
    /// 0A000: what the engine does not implement.
    Unsupported,
}

/// Every text pattern the engine's messages are classified by, for the errors DataFusion
/// gives no typed variant for (its `Plan` and `Execution` errors carry only text), in the
/// order tried (lower-cased). Each entry has a test that provokes the engine's own error
/// or names the text it matches (`tests::each_text_class_*`).
const TEXT_CLASSES: &[(&str, TextClass)] = &[
    (
        "union queries have different number of columns",
        TextClass::UnionWidth,
    ),
    ("must appear in the group by clause", TextClass::Grouping),
    ("must be in group by", TextClass::Grouping),
    ("arguments must be literals", TextClass::LateralArguments),
    ("outerreferencecolumn", TextClass::LateralArguments),
    (
        "physical plan does not support logical expression",
        TextClass::LateralArguments,
    ),
    ("resources exhausted", TextClass::OutOfMemory),
    ("divide by zero", TextClass::DivisionByZero),
    ("division by zero", TextClass::DivisionByZero),
    ("overflow", TextClass::OutOfRange),
    ("cannot cast", TextClass::InvalidValue),
    ("cast error", TextClass::InvalidValue),
    ("parser error", TextClass::InvalidValue),
    ("invalid digit", TextClass::InvalidValue),
    ("error parsing", TextClass::InvalidValue),
    ("coerc", TextClass::TypeMismatch),
    ("does not support", TextClass::TypeMismatch),
    ("mismatch", TextClass::TypeMismatch),
    ("type", TextClass::TypeMismatch),
    ("not implemented", TextClass::Unsupported),
    ("unsupported", TextClass::Unsupported),
    ("not supported", TextClass::Unsupported),
];

/// The class of `lower` (a lower-cased message) by [`TEXT_CLASSES`].
fn text_class(lower: &str) -> Option<TextClass> {
    TEXT_CLASSES
        .iter()
        .find(|(pattern, _)| lower.contains(pattern))
        .map(|(_, class)| *class)
}

/// `planning`: the engine refused the statement before running it, so what is not
/// classified otherwise is something kpitables cannot answer yet (0A000), not a bug.
fn classify_message(message: String, planning: bool) -> Error {
    if let Some(invalid) = invalid_input(&message) {
        return invalid;
    }
    let lower = message.to_ascii_lowercase();
    let clean = postgres_type_names(&strip_engine_prefixes(&message));
    // A schema error that reached here as text (inside a context string): its name.
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
        return Error::UnknownColumn {
            name: name.trim_matches('"').to_string(),
            hint: None,
        };
    }
    if let Some(name) = lower.strip_prefix("ambiguous reference to unqualified field ") {
        return Error::AmbiguousColumn(name.trim().trim_matches('"').to_string());
    }
    // Before the type patterns: "Failed to coerce arguments ... call to 'f'" names a
    // function without a signature for the arguments.
    if let Some(undefined) = undefined_function(&message) {
        return undefined;
    }
    let unsupported = |clean: String| {
        Error::unsupported(
            clean,
            Some("kpitables cannot run this statement yet; see docs/clients.md".to_string()),
        )
    };
    match text_class(&lower) {
        Some(TextClass::UnionWidth) => {
            Error::Syntax("each UNION query must have the same number of columns".into())
        }
        Some(TextClass::Grouping) => {
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
        }
        Some(TextClass::LateralArguments)
            if !lower.contains("physical plan does not support logical expression") =>
        {
            Error::Correlated {
                message: "a table function in FROM takes constant arguments only".into(),
                hint: Some(
                    "arguments from an outer query (a LATERAL call such as generate_series(t.a, t.b)) are not supported"
                        .to_string(),
                ),
            }
        }
        Some(TextClass::LateralArguments) => Error::Correlated {
            message: clean,
            hint: None,
        },
        Some(TextClass::OutOfMemory) => Error::OutOfMemory(clean),
        Some(TextClass::DivisionByZero) => Error::DivisionByZero,
        Some(TextClass::OutOfRange) => Error::OutOfRange(clean),
        Some(TextClass::InvalidValue) => Error::InvalidValue(clean),
        Some(TextClass::TypeMismatch) => Error::TypeMismatch(clean),
        Some(TextClass::Unsupported) => unsupported(clean),
        None if planning => unsupported(clean),
        None => Error::Engine(clean),
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

    /// The engine's own error for `sql`, from a context of the same engine as ours.
    async fn engine_error(sql: &str) -> DataFusionError {
        let ctx = datafusion::prelude::SessionContext::new();
        let run = async { ctx.sql(sql).await?.collect().await };
        match run.await {
            Ok(_) => panic!("the engine answered {sql}"),
            Err(e) => e,
        }
    }

    /// The first entry of TEXT_CLASSES `message` matches.
    fn pattern_of(message: &str) -> Option<&'static str> {
        let lower = message.to_ascii_lowercase();
        TEXT_CLASSES
            .iter()
            .find(|(p, _)| lower.contains(p))
            .map(|(p, _)| *p)
    }

    #[tokio::test]
    async fn each_class_is_what_the_engine_says() {
        // (statement, SQLSTATE, the text pattern it is classified by, or None when a
        // typed variant classifies it)
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "SELECT 1 UNION SELECT 1, 2",
                "42601",
                Some("union queries have different number of columns"),
            ),
            ("SELECT 1 / 0", "22012", None),
            ("SELECT CAST('x' AS INT)", "22P02", None),
            ("SELECT CAST('2024-13-45' AS DATE)", "22007", None),
            ("SELECT nosuchfn(1)", "42883", None),
            ("SELECT x FROM (VALUES (1)) t(a)", "42703", None),
            (
                "SELECT a, count(*) FROM (VALUES (1, 2)) t(a, b) GROUP BY b",
                "42803",
                Some("must appear in the group by clause"),
            ),
            ("SELECT DATE '2024-01-01' + true", "42804", Some("coerc")),
        ];
        let mut failures = Vec::new();
        for (sql, sqlstate, pattern) in cases {
            let error = engine_error(sql).await;
            let text = error.to_string();
            let got = Error::from(error);
            if got.sqlstate() != *sqlstate {
                failures.push(format!(
                    "{sql}: {} ({got}) instead of {sqlstate}; engine: {text}",
                    got.sqlstate()
                ));
            }
            if let Some(p) = pattern
                && pattern_of(&text) != Some(p)
            {
                failures.push(format!(
                    "{sql}: the engine's text {text:?} no longer matches {p:?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    /// Each text pattern with the engine's message that it classifies (the messages of
    /// DataFusion 55 and Arrow 59, as they reach us), and the class.
    #[test]
    fn each_text_class_has_an_example() {
        let examples: &[(&str, TextClass)] = &[
            (
                "Error during planning: UNION queries have different number of columns",
                TextClass::UnionWidth,
            ),
            (
                "column \"t.a\" must appear in the GROUP BY clause or must be part of an aggregate function",
                TextClass::Grouping,
            ),
            (
                "Column in SELECT must be in GROUP BY or an aggregate function",
                TextClass::Grouping,
            ),
            (
                "Error during planning: generate_series function requires arguments must be literals",
                TextClass::LateralArguments,
            ),
            (
                "Physical plan does not support logical expression ScalarSubquery(<subquery>)",
                TextClass::LateralArguments,
            ),
            (
                "This feature is not implemented: Physical plan does not support logical expression OuterReferenceColumn(Int64, t.a)",
                TextClass::LateralArguments,
            ),
            (
                "Resources exhausted: Failed to allocate additional 1048576 bytes",
                TextClass::OutOfMemory,
            ),
            (
                "Arrow error: Divide by zero error",
                TextClass::DivisionByZero,
            ),
            (
                "Execution error: Division by zero",
                TextClass::DivisionByZero,
            ),
            (
                "Arrow error: Arithmetic overflow: Overflow happened on: 9223372036854775807 + 1",
                TextClass::OutOfRange,
            ),
            (
                "Cannot cast value 'abc' to value of Int32 type",
                TextClass::InvalidValue,
            ),
            (
                "Cast error: Can't cast value 300 to type Int8",
                TextClass::InvalidValue,
            ),
            (
                "Parser error: Invalid timezone \"x\"",
                TextClass::InvalidValue,
            ),
            ("invalid digit found in string", TextClass::InvalidValue),
            ("Error parsing 'x' as interval", TextClass::InvalidValue),
            (
                "Cannot coerce arithmetic expression Date32 + Boolean to valid types",
                TextClass::TypeMismatch,
            ),
            (
                "Execution error: concat does not support type Struct",
                TextClass::TypeMismatch,
            ),
            (
                "Schema mismatch: expected Int32, got Utf8",
                TextClass::TypeMismatch,
            ),
            (
                "Invalid argument: expected a list type",
                TextClass::TypeMismatch,
            ),
            (
                "This feature is not implemented: Unsupported SQL statement",
                TextClass::Unsupported,
            ),
            ("Unsupported ast node in sqltorel", TextClass::Unsupported),
            ("LATERAL is not supported here", TextClass::Unsupported),
        ];
        for (pattern, _) in TEXT_CLASSES {
            assert!(
                examples.iter().any(|(m, _)| pattern_of(m) == Some(pattern)),
                "no example is classified by {pattern:?}"
            );
        }
        for (message, class) in examples {
            assert_eq!(
                text_class(&message.to_ascii_lowercase()),
                Some(*class),
                "{message}"
            );
        }
    }

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
