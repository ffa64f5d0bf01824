//! The one mapping between Arrow types (what the engine computes) and PostgreSQL types
//! (what clients see): OID, name, length and type modifier.
//!
//! Invariant: the catalog (`pg_attribute`, `pg_type`) and the wire encoder both take
//! their type facts from here, so RowDescription and the catalog always agree.

use datafusion::arrow::datatypes::DataType;

/// PostgreSQL facts about one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgType {
    /// Type OID.
    pub oid: u32,
    /// Type name as `format_type` prints it without modifier.
    pub name: &'static str,
    /// `typlen`: bytes, or -1 for variable length.
    pub len: i16,
    /// `typcategory`.
    pub category: char,
    /// OID of the array type of this type (0 when none).
    pub array_oid: u32,
}

macro_rules! pg_types {
    ($($ident:ident = ($oid:expr, $name:expr, $len:expr, $cat:expr, $arr:expr);)*) => {
        $(
            #[doc = concat!("PostgreSQL `", $name, "`.")]
            pub const $ident: PgType = PgType { oid: $oid, name: $name, len: $len, category: $cat, array_oid: $arr };
        )*
        /// Every type the catalog lists in `pg_type`.
        pub const ALL: &[PgType] = &[$($ident),*];
    };
}

pg_types! {
    BOOL = (16, "boolean", 1, 'B', 1000);
    BYTEA = (17, "bytea", -1, 'U', 1001);
    CHAR = (18, "\"char\"", 1, 'Z', 1002);
    NAME = (19, "name", 64, 'S', 1003);
    INT8 = (20, "bigint", 8, 'N', 1016);
    INT2 = (21, "smallint", 2, 'N', 1005);
    INT4 = (23, "integer", 4, 'N', 1007);
    REGPROC = (24, "regproc", 4, 'N', 1008);
    TEXT = (25, "text", -1, 'S', 1009);
    OID = (26, "oid", 4, 'N', 1028);
    JSON = (114, "json", -1, 'U', 199);
    FLOAT4 = (700, "real", 4, 'N', 1021);
    FLOAT8 = (701, "double precision", 8, 'N', 1022);
    UNKNOWN = (705, "unknown", -2, 'X', 0);
    BOOL_ARRAY = (1000, "boolean[]", -1, 'A', 0);
    INT2_ARRAY = (1005, "smallint[]", -1, 'A', 0);
    INT4_ARRAY = (1007, "integer[]", -1, 'A', 0);
    TEXT_ARRAY = (1009, "text[]", -1, 'A', 0);
    INT8_ARRAY = (1016, "bigint[]", -1, 'A', 0);
    FLOAT8_ARRAY = (1022, "double precision[]", -1, 'A', 0);
    OID_ARRAY = (1028, "oid[]", -1, 'A', 0);
    BPCHAR = (1042, "character", -1, 'S', 1014);
    VARCHAR = (1043, "character varying", -1, 'S', 1015);
    DATE = (1082, "date", 4, 'D', 1182);
    TIME = (1083, "time without time zone", 8, 'D', 1183);
    TIMESTAMP = (1114, "timestamp without time zone", 8, 'D', 1115);
    TIMESTAMPTZ = (1184, "timestamp with time zone", 8, 'D', 1185);
    INTERVAL = (1186, "interval", 16, 'T', 1187);
    NUMERIC = (1700, "numeric", -1, 'N', 1231);
    REGCLASS = (2205, "regclass", 4, 'N', 2210);
    REGTYPE = (2206, "regtype", 4, 'N', 2211);
    VOID = (2278, "void", 4, 'P', 0);
    UUID = (2950, "uuid", 16, 'U', 2951);
    JSONB = (3802, "jsonb", -1, 'U', 3807);
}

/// The PostgreSQL type for an Arrow type, and its type modifier (-1 when none).
pub fn pg_type_of(data_type: &DataType) -> (PgType, i32) {
    match data_type {
        DataType::Boolean => (BOOL, -1),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => (INT2, -1),
        DataType::Int32 | DataType::UInt16 => (INT4, -1),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => (INT8, -1),
        DataType::Float16 | DataType::Float32 => (FLOAT4, -1),
        DataType::Float64 => (FLOAT8, -1),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            (NUMERIC, numeric_typmod(*p, *s))
        }
        DataType::Decimal256(p, s) => (NUMERIC, numeric_typmod(*p, *s)),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => (TEXT, -1),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => (BYTEA, -1),
        DataType::Date32 | DataType::Date64 => (DATE, -1),
        DataType::Time32(_) | DataType::Time64(_) => (TIME, -1),
        DataType::Timestamp(_, None) => (TIMESTAMP, -1),
        DataType::Timestamp(_, Some(_)) => (TIMESTAMPTZ, -1),
        DataType::Interval(_) | DataType::Duration(_) => (INTERVAL, -1),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            match f.data_type() {
                DataType::Boolean => (BOOL_ARRAY, -1),
                DataType::Int16 | DataType::Int8 => (INT2_ARRAY, -1),
                DataType::Int32 => (INT4_ARRAY, -1),
                DataType::Int64 | DataType::UInt32 => (INT8_ARRAY, -1),
                DataType::Float64 | DataType::Float32 => (FLOAT8_ARRAY, -1),
                _ => (TEXT_ARRAY, -1),
            }
        }
        DataType::Null => (TEXT, -1),
        _ => (TEXT, -1),
    }
}

/// `numeric(p, s)` as a type modifier.
pub fn numeric_typmod(precision: u8, scale: i8) -> i32 {
    ((i32::from(precision) << 16) | (i32::from(scale) & 0xffff)) + 4
}

/// The type with OID `oid`.
pub fn by_oid(oid: u32) -> Option<PgType> {
    ALL.iter().copied().find(|t| t.oid == oid)
}

/// `format_type(oid, typmod)` as PostgreSQL prints it.
pub fn format_type(oid: u32, typmod: i32) -> Option<String> {
    let t = by_oid(oid)?;
    if t.oid == NUMERIC.oid && typmod >= 4 {
        let m = typmod - 4;
        return Some(format!("numeric({},{})", m >> 16, m & 0xffff));
    }
    Some(t.name.to_string())
}
