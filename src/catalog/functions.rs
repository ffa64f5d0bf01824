//! SQL functions that PostgreSQL clients call on the catalogs (`version()`,
//! `format_type`, `obj_description`, `pg_table_is_visible`, ...).
//!
//! Functions whose answer depends on the session (`current_user`, `current_setting`)
//! are not here: the `sql::compat` pass replaces them with the session's values.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use super::tables::view_definition;
use super::view_oid;
use crate::bind::Semantics;
use crate::types;

/// The version string clients parse: `PostgreSQL <major>.<minor> ...`.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 15.0 (kpitables {}) on x86_64-pc-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION")
    )
}

/// Facts the functions look up.
#[derive(Debug, Default)]
pub struct FunctionData {
    /// `(oid, attnum)` → comment; attnum 0 is the relation itself.
    comments: HashMap<(i64, i64), String>,
    /// View oid → definition text.
    definitions: HashMap<i64, String>,
    /// Relation name → oid (views).
    relations: HashMap<String, i64>,
}

impl FunctionData {
    /// Collect comments, definitions and names from the bound model.
    pub fn new(semantics: &Semantics) -> FunctionData {
        let mut data = FunctionData::default();
        for v in &semantics.views {
            let oid = view_oid(&v.name);
            data.relations.insert(v.name.clone(), oid);
            data.relations.insert(format!("public.{}", v.name), oid);
            data.definitions.insert(oid, view_definition(v, semantics));
            if !v.comment.is_empty() {
                data.comments.insert((oid, 0), v.comment.clone());
            }
            for (i, c) in v.columns.iter().enumerate() {
                if !c.comment.is_empty() {
                    data.comments
                        .insert((oid, i64::try_from(i + 1).unwrap_or(0)), c.comment.clone());
                }
            }
        }
        data
    }
}

type Imp = fn(&FunctionData, &[ScalarValue]) -> ScalarValue;

struct PgFunction {
    name: &'static str,
    signature: Signature,
    return_type: DataType,
    imp: Imp,
    data: Arc<FunctionData>,
}

impl std::fmt::Debug for PgFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFunction")
            .field("name", &self.name)
            .finish()
    }
}
impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for PgFunction {}
impl Hash for PgFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.return_type.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        if all_scalar {
            let values: Vec<ScalarValue> = args
                .args
                .iter()
                .map(|a| match a {
                    ColumnarValue::Scalar(s) => s.clone(),
                    ColumnarValue::Array(_) => ScalarValue::Null,
                })
                .collect();
            let out = (self.imp)(&self.data, &values);
            return Ok(ColumnarValue::Scalar(cast_to(out, &self.return_type)));
        }
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(args.number_rows))
            .collect::<DfResult<Vec<_>>>()?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let values = arrays
                .iter()
                .map(|a| ScalarValue::try_from_array(a, row))
                .collect::<DfResult<Vec<_>>>()?;
            out.push(cast_to((self.imp)(&self.data, &values), &self.return_type));
        }
        if out.is_empty() {
            return Ok(ColumnarValue::Array(
                datafusion::arrow::array::new_empty_array(&self.return_type),
            ));
        }
        Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
    }
}

fn cast_to(value: ScalarValue, data_type: &DataType) -> ScalarValue {
    if value.data_type() == *data_type {
        return value;
    }
    if value.is_null() {
        return ScalarValue::try_from(data_type).unwrap_or(value);
    }
    value.cast_to(data_type).unwrap_or(value)
}

fn int(v: &ScalarValue) -> Option<i64> {
    match v.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(i)) => i,
        _ => None,
    }
}

fn text(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => s.clone(),
        other if other.is_null() => None,
        other => Some(other.to_string()),
    }
}

fn utf8(s: Option<String>) -> ScalarValue {
    ScalarValue::Utf8(s)
}

fn text_list(items: &[&str]) -> ScalarValue {
    let values: Vec<ScalarValue> = items
        .iter()
        .map(|s| ScalarValue::Utf8(Some((*s).to_string())))
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Utf8))
}

fn text_list_type_of() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// The elements of a one-dimensional array literal as PostgreSQL writes it
/// (`{a,"b c",NULL,"x\"y"}`); None when it is not one.
pub(crate) fn array_literal(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.trim().is_empty() {
        return Some(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut item = String::new();
        let quoted = chars.next_if_eq(&'"').is_some();
        if quoted {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                if c == '\\' {
                    item.push(chars.next()?);
                } else if c == '{' || c == '"' {
                    return None;
                } else {
                    item.push(c);
                }
            }
            item = item.trim_end().to_string();
        }
        let null = !quoted && item.eq_ignore_ascii_case("NULL");
        items.push((!null).then_some(item));
        match chars.next() {
            None => return Some(items),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// Register every catalog function in `ctx`.
pub fn register(ctx: &SessionContext, semantics: &Semantics) {
    let data = Arc::new(FunctionData::new(semantics));
    let any = |n: usize| Signature::new(TypeSignature::Any(n), Volatility::Immutable);
    let arities = |ns: &[usize]| {
        Signature::one_of(
            ns.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Immutable,
        )
    };
    let variadic = || Signature::variadic_any(Volatility::Immutable);
    let none = || Signature::nullary(Volatility::Immutable);
    let text_list_type = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));

    let functions: Vec<(&'static str, Signature, DataType, Imp)> = vec![
        ("version", none(), DataType::Utf8, |_, _| {
            utf8(Some(version_string()))
        }),
        ("pg_typeof", any(1), DataType::Utf8, |_, a| {
            // The argument's type as `format_type` names it ("integer", "numeric", ...).
            utf8(a.first().map(|v| match v.data_type() {
                DataType::Null => "unknown".to_string(),
                t => types::pg_type_of(&t).0.name.to_string(),
            }))
        }),
        ("pg_get_userbyid", any(1), DataType::Utf8, |_, _| {
            utf8(Some("kpitables".into()))
        }),
        ("format_type", any(2), DataType::Utf8, |_, a| {
            let oid = a.first().and_then(int).and_then(|o| u32::try_from(o).ok());
            let typmod = a
                .get(1)
                .and_then(int)
                .and_then(|t| i32::try_from(t).ok())
                .unwrap_or(-1);
            utf8(oid.map(|o| types::format_type(o, typmod).unwrap_or_else(|| "???".into())))
        }),
        (
            "obj_description",
            arities(&[1, 2]),
            DataType::Utf8,
            |d, a| {
                let catalog = a.get(1).and_then(text);
                if catalog.as_deref().is_some_and(|c| c != "pg_class") {
                    return utf8(None);
                }
                utf8(
                    a.first()
                        .and_then(int)
                        .and_then(|oid| d.comments.get(&(oid, 0)).cloned()),
                )
            },
        ),
        ("col_description", any(2), DataType::Utf8, |d, a| {
            let key = (a.first().and_then(int), a.get(1).and_then(int));
            utf8(match key {
                (Some(oid), Some(n)) => d.comments.get(&(oid, n)).cloned(),
                _ => None,
            })
        }),
        ("shobj_description", any(2), DataType::Utf8, |_, _| {
            utf8(None)
        }),
        ("pg_get_expr", arities(&[2, 3]), DataType::Utf8, |_, a| {
            utf8(a.first().and_then(text))
        }),
        (
            "pg_get_viewdef",
            arities(&[1, 2]),
            DataType::Utf8,
            |d, a| {
                utf8(
                    a.first()
                        .and_then(int)
                        .and_then(|oid| d.definitions.get(&oid).cloned()),
                )
            },
        ),
        (
            "pg_get_constraintdef",
            arities(&[1, 2]),
            DataType::Utf8,
            |_, _| utf8(None),
        ),
        (
            "pg_get_indexdef",
            arities(&[1, 3]),
            DataType::Utf8,
            |_, _| utf8(None),
        ),
        ("pg_encoding_to_char", any(1), DataType::Utf8, |_, _| {
            utf8(Some("UTF8".into()))
        }),
        (
            "pg_relation_size",
            arities(&[1, 2]),
            DataType::Int64,
            |_, _| ScalarValue::Int64(Some(0)),
        ),
        ("pg_table_size", any(1), DataType::Int64, |_, _| {
            ScalarValue::Int64(Some(0))
        }),
        ("pg_total_relation_size", any(1), DataType::Int64, |_, _| {
            ScalarValue::Int64(Some(0))
        }),
        ("pg_size_pretty", any(1), DataType::Utf8, |_, a| {
            utf8(a.first().and_then(int).map(|n| format!("{n} bytes")))
        }),
        ("quote_ident", any(1), DataType::Utf8, |_, a| {
            utf8(a.first().and_then(text).map(|s| quote_ident(&s)))
        }),
        ("current_schemas", any(1), text_list_type.clone(), |_, a| {
            let implicit = matches!(a.first(), Some(ScalarValue::Boolean(Some(true))));
            if implicit {
                text_list(&["pg_catalog", "public"])
            } else {
                text_list(&["public"])
            }
        }),
        ("array_upper", any(2), DataType::Int64, |_, a| {
            match a.first() {
                Some(ScalarValue::List(l)) if !l.is_null(0) => {
                    let n = l.value(0).len();
                    ScalarValue::Int64(if n == 0 { None } else { i64::try_from(n).ok() })
                }
                _ => ScalarValue::Int64(None),
            }
        }),
        ("array_lower", any(2), DataType::Int64, |_, a| {
            match a.first() {
                Some(ScalarValue::List(l)) if !l.is_null(0) && !l.value(0).is_empty() => {
                    ScalarValue::Int64(Some(1))
                }
                _ => ScalarValue::Int64(None),
            }
        }),
        ("kp_like_regex", any(2), DataType::Utf8, |_, a| {
            let pattern = a.first().and_then(text);
            let escape = a.get(1).and_then(text).and_then(|e| e.chars().next());
            utf8(pattern.map(|p| like_regex(&p, escape)))
        }),
        ("json_build_object", variadic(), DataType::Utf8, |_, a| {
            let mut out = String::from("{");
            for (i, pair) in a.chunks(2).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let key = pair.first().and_then(text).unwrap_or_default();
                out.push_str(&json_value(&ScalarValue::Utf8(Some(key))));
                out.push_str(" : ");
                out.push_str(&pair.get(1).map_or("null".to_string(), json_value));
            }
            out.push('}');
            utf8(Some(out))
        }),
        ("format", variadic(), DataType::Utf8, |_, a| {
            format_function(a)
        }),
        ("kp_regtype", any(1), DataType::Int64, |_, a| {
            if let Some(oid) = a
                .first()
                .filter(|v| v.data_type().is_integer())
                .and_then(int)
            {
                return ScalarValue::Int64(Some(oid));
            }
            let name = a.first().and_then(text).unwrap_or_default();
            ScalarValue::Int64(type_oid_by_name(&name).map(i64::from))
        }),
        (
            "kp_text_array",
            any(1),
            text_list_type.clone(),
            |_, a| match a.first().and_then(text) {
                Some(literal) => match array_literal(&literal) {
                    Some(items) => {
                        let values: Vec<ScalarValue> =
                            items.into_iter().map(ScalarValue::Utf8).collect();
                        ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Utf8))
                    }
                    None => {
                        ScalarValue::try_from(&text_list_type_of()).unwrap_or(ScalarValue::Null)
                    }
                },
                None => ScalarValue::try_from(&text_list_type_of()).unwrap_or(ScalarValue::Null),
            },
        ),
        ("kp_regproc_oid", any(1), DataType::Int64, |_, a| {
            let name = a.first().and_then(text);
            ScalarValue::Int64(
                name.and_then(|n| crate::types::regproc_oid(&n))
                    .map(i64::from),
            )
        }),
        ("kp_expandarray", any(1), expandarray_type(), |_, a| {
            expandarray(a.first())
        }),
        ("_pg_numeric_precision", any(2), DataType::Int32, |_, a| {
            ScalarValue::Int32(type_args(a).and_then(|(oid, typmod)| match oid {
                21 => Some(16),
                23 => Some(32),
                20 => Some(64),
                700 => Some(24),
                701 => Some(53),
                1700 if typmod >= 4 => Some(((typmod - 4) >> 16) & 0xffff),
                _ => None,
            }))
        }),
        (
            "_pg_numeric_precision_radix",
            any(2),
            DataType::Int32,
            |_, a| {
                ScalarValue::Int32(type_args(a).and_then(|(oid, _)| match oid {
                    20 | 21 | 23 | 700 | 701 => Some(2),
                    1700 => Some(10),
                    _ => None,
                }))
            },
        ),
        ("_pg_numeric_scale", any(2), DataType::Int32, |_, a| {
            ScalarValue::Int32(type_args(a).and_then(|(oid, typmod)| match oid {
                20 | 21 | 23 => Some(0),
                1700 if typmod >= 4 => Some((typmod - 4) & 0xffff),
                _ => None,
            }))
        }),
        ("_pg_datetime_precision", any(2), DataType::Int32, |_, a| {
            ScalarValue::Int32(type_args(a).and_then(|(oid, typmod)| match oid {
                1082 => Some(0),
                1083 | 1114 | 1184 | 1266 | 1186 => Some(if typmod < 0 { 6 } else { typmod }),
                _ => None,
            }))
        }),
        ("_pg_char_max_length", any(2), DataType::Int32, |_, a| {
            ScalarValue::Int32(type_args(a).and_then(|(oid, typmod)| match oid {
                1042 | 1043 if typmod >= 4 => Some(typmod - 4),
                _ => None,
            }))
        }),
        ("_pg_char_octet_length", any(2), DataType::Int32, |_, a| {
            ScalarValue::Int32(type_args(a).and_then(|(oid, _)| match oid {
                25 | 1042 | 1043 => Some(1_073_741_824),
                _ => None,
            }))
        }),
        ("_pg_interval_type", any(2), DataType::Utf8, |_, _| {
            utf8(None)
        }),
        (
            "pg_is_other_temp_schema",
            any(1),
            DataType::Boolean,
            |_, _| ScalarValue::Boolean(Some(false)),
        ),
        ("pg_is_in_recovery", none(), DataType::Boolean, |_, _| {
            ScalarValue::Boolean(Some(false))
        }),
        ("pg_my_temp_schema", none(), DataType::Int64, |_, _| {
            ScalarValue::Int64(Some(0))
        }),
        ("txid_current", none(), DataType::Int64, |_, _| {
            ScalarValue::Int64(Some(1))
        }),
        ("pg_get_serial_sequence", any(2), DataType::Utf8, |_, _| {
            utf8(None)
        }),
        ("pg_get_partkeydef", any(1), DataType::Utf8, |_, _| {
            utf8(None)
        }),
        ("inet_server_addr", none(), DataType::Utf8, |_, _| {
            utf8(None)
        }),
        ("inet_server_port", none(), DataType::Int32, |_, _| {
            ScalarValue::Int32(None)
        }),
        ("kp_regclass", any(1), DataType::Int64, |d, a| {
            if let Some(oid) = a
                .first()
                .filter(|v| v.data_type().is_integer())
                .and_then(int)
            {
                return ScalarValue::Int64(Some(oid));
            }
            let name = a.first().and_then(text).unwrap_or_default();
            let name = name.trim_matches('"').to_lowercase();
            let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
            ScalarValue::Int64(d.relations.get(name).copied().or_else(|| catalog_oid(name)))
        }),
    ];
    // Every object is visible on the search path and every privilege is granted: the
    // catalogs list only what the model exposes to every user.
    let mut functions = functions;
    let visible = [
        "pg_table_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_collation_is_visible",
        "pg_conversion_is_visible",
        "pg_operator_is_visible",
        "pg_opclass_is_visible",
        "pg_opfamily_is_visible",
        "pg_statistics_obj_is_visible",
        "pg_ts_config_is_visible",
    ];
    let privileges = [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
    ];
    let always_true: Imp = |_, _| ScalarValue::Boolean(Some(true));
    for name in visible {
        functions.push((name, any(1), DataType::Boolean, always_true));
    }
    for name in privileges {
        functions.push((name, variadic(), DataType::Boolean, always_true));
    }
    for (name, signature, return_type, imp) in functions {
        ctx.register_udf(ScalarUDF::new_from_impl(PgFunction {
            name,
            signature,
            return_type,
            imp,
            data: data.clone(),
        }));
    }
}

/// PostgreSQL's OIDs of the system catalogs clients name in `'pg_class'::regclass`
/// (the `classoid` of comments and dependencies).
fn catalog_oid(name: &str) -> Option<i64> {
    Some(match name {
        "pg_type" => 1247,
        "pg_attribute" => 1249,
        "pg_proc" => 1255,
        "pg_class" => 1259,
        "pg_database" => 1262,
        "pg_am" => 2601,
        "pg_constraint" => 2606,
        "pg_description" => 2609,
        "pg_index" => 2610,
        "pg_namespace" => 2615,
        "pg_trigger" => 2620,
        _ => return None,
    })
}

/// `(type oid, typmod)` arguments of the `information_schema._pg_*` helpers.
fn type_args(a: &[ScalarValue]) -> Option<(i64, i32)> {
    let oid = a.first().and_then(int)?;
    let typmod = a
        .get(1)
        .and_then(int)
        .and_then(|t| i32::try_from(t).ok())
        .unwrap_or(-1);
    Some((oid, typmod))
}

/// The OID of a type named as in SQL (`int4`, `integer`, `pg_catalog.text`, `text[]`).
fn type_oid_by_name(name: &str) -> Option<u32> {
    let name = name.trim().trim_matches('"').to_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let alias = match name {
        "int" => "integer",
        "bool" => "boolean",
        "float" => "double precision",
        "varchar" => "character varying",
        "timestamptz" => "timestamp with time zone",
        "timestamp" => "timestamp without time zone",
        other => other,
    };
    types::ALL
        .iter()
        .find(|t| t.name == alias || super::tables::internal_type_name(t.oid) == alias)
        .map(|t| t.oid)
}

fn expandarray_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(expandarray_fields()),
        true,
    )))
}

fn expandarray_fields() -> datafusion::arrow::datatypes::Fields {
    datafusion::arrow::datatypes::Fields::from(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("n", DataType::Int32, true),
    ])
}

/// `information_schema._pg_expandarray(a)`: each element with its 1-based position.
fn expandarray(array: Option<&ScalarValue>) -> ScalarValue {
    use datafusion::arrow::array::{Int32Array, StructArray};
    let elements = match array {
        Some(ScalarValue::List(l)) if !l.is_null(0) => l.value(0),
        _ => return ScalarValue::try_from(expandarray_type()).unwrap_or(ScalarValue::Null),
    };
    let Ok(x) = datafusion::arrow::compute::cast(&elements, &DataType::Int64) else {
        return ScalarValue::Null;
    };
    let n = Int32Array::from_iter_values(1..=i32::try_from(elements.len()).unwrap_or(0));
    let items = StructArray::new(expandarray_fields(), vec![x, Arc::new(n)], None);
    ScalarValue::List(Arc::new(
        datafusion::common::utils::SingleRowListArrayBuilder::new(Arc::new(items))
            .build_list_array(),
    ))
}

/// A LIKE pattern with escape character `escape` as an anchored regular expression.
fn like_regex(pattern: &str, escape: Option<char>) -> String {
    let mut out = String::from("^(?s)");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            c if Some(c) == escape => {
                if let Some(next) = chars.next() {
                    out.push_str(&regex_literal(next));
                }
            }
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            c => out.push_str(&regex_literal(c)),
        }
    }
    out.push('$');
    out
}

fn regex_literal(c: char) -> String {
    if c.is_alphanumeric() || c == ' ' {
        c.to_string()
    } else {
        format!("\\x{{{:x}}}", u32::from(c))
    }
}

/// A value as JSON text, as PostgreSQL's `json_build_object` writes it.
fn json_value(v: &ScalarValue) -> String {
    if v.is_null() {
        return "null".into();
    }
    match v {
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        v if v.data_type().is_numeric() => v.to_string(),
        other => {
            let s = text(other).unwrap_or_default();
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
    }
}

/// PostgreSQL's `format(fmt, args...)`: `%s` text, `%I` identifier, `%L` literal,
/// `%%`, and `%n$` positions.
fn format_function(a: &[ScalarValue]) -> ScalarValue {
    let Some(fmt) = a.first().and_then(text) else {
        return utf8(None);
    };
    let args = &a[1..];
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let index = if !digits.is_empty() && chars.peek() == Some(&'$') {
            chars.next();
            digits.parse::<usize>().ok().and_then(|n| n.checked_sub(1))
        } else {
            None
        };
        let Some(kind) = chars.next() else { break };
        if kind == '%' {
            out.push('%');
            continue;
        }
        let position = index.unwrap_or(next);
        next = position + 1;
        let value = args.get(position).and_then(text);
        match kind {
            'I' => out.push_str(&quote_ident(&value.unwrap_or_default())),
            'L' => match value {
                Some(v) => out.push_str(&format!("'{}'", v.replace('\'', "''"))),
                None => out.push_str("NULL"),
            },
            _ => out.push_str(&value.unwrap_or_default()),
        }
    }
    utf8(Some(out))
}

/// Quote an identifier when PostgreSQL would.
pub fn quote_ident(s: &str) -> String {
    if crate::model::is_plain_identifier(s) {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(v.to_string()))
    }

    #[test]
    fn array_literals_as_postgresql_writes_them() {
        let some = |v: &str| Some(v.to_string());
        assert_eq!(array_literal("{r,v}"), Some(vec![some("r"), some("v")]));
        assert_eq!(
            array_literal(r#"{ a , "b c",NULL,"NULL","x\"y",z\,w}"#),
            Some(vec![
                some("a"),
                some("b c"),
                None,
                some("NULL"),
                some("x\"y"),
                some("z,w")
            ])
        );
        assert_eq!(array_literal("{}"), Some(vec![]));
        assert_eq!(array_literal("r,v"), None);
        assert_eq!(array_literal("{{1,2}}"), None);
        assert_eq!(array_literal("{\"open}"), None);
    }

    #[test]
    fn like_with_another_escape_character() {
        assert_eq!(like_regex("pg/_%", Some('/')), "^(?s)pg\\x{5f}.*$");
        assert_eq!(like_regex("a_b", None), "^(?s)a.b$");
    }

    #[test]
    fn format_places_text_identifiers_and_literals() {
        let out = format_function(&[
            s("%I.%I = %L, %s%%, %2$s"),
            s("public"),
            s("Sales"),
            s("it's"),
        ]);
        assert_eq!(out, s("public.\"Sales\" = 'it''s', %, Sales"));
    }
}
