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

/// A type's input, output, receive and send functions (`typinput`, `typoutput`,
/// `typreceive`, `typsend`) as PostgreSQL 15 names them, each with its `pg_proc` OID:
/// drivers choose how to decode a column by its receive function (ADBC reads
/// `typreceive`), and compare these `regproc` columns with OIDs.
pub fn io_functions(oid: u32) -> Option<[(&'static str, u32); 4]> {
    IO_FUNCTIONS
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, functions)| *functions)
}

/// The `pg_proc` OID of a function a `regproc` column names (`-` is 0, as PostgreSQL
/// shows a missing function).
pub fn regproc_oid(name: &str) -> Option<u32> {
    if name == "-" {
        return Some(0);
    }
    IO_FUNCTIONS
        .iter()
        .flat_map(|(_, functions)| functions.iter())
        .chain(ARRAY_IO.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, oid)| *oid)
}

/// Read from a PostgreSQL 15 server: `SELECT oid, typinput, typinput::oid, ... FROM pg_type`.
const IO_FUNCTIONS: &[(u32, [(&str, u32); 4])] = &[
    (
        16,
        [
            ("boolin", 1242),
            ("boolout", 1243),
            ("boolrecv", 2436),
            ("boolsend", 2437),
        ],
    ),
    (
        17,
        [
            ("byteain", 1244),
            ("byteaout", 31),
            ("bytearecv", 2412),
            ("byteasend", 2413),
        ],
    ),
    (
        18,
        [
            ("charin", 1245),
            ("charout", 33),
            ("charrecv", 2434),
            ("charsend", 2435),
        ],
    ),
    (
        19,
        [
            ("namein", 34),
            ("nameout", 35),
            ("namerecv", 2422),
            ("namesend", 2423),
        ],
    ),
    (
        20,
        [
            ("int8in", 460),
            ("int8out", 461),
            ("int8recv", 2408),
            ("int8send", 2409),
        ],
    ),
    (
        21,
        [
            ("int2in", 38),
            ("int2out", 39),
            ("int2recv", 2404),
            ("int2send", 2405),
        ],
    ),
    (
        23,
        [
            ("int4in", 42),
            ("int4out", 43),
            ("int4recv", 2406),
            ("int4send", 2407),
        ],
    ),
    (
        24,
        [
            ("regprocin", 44),
            ("regprocout", 45),
            ("regprocrecv", 2444),
            ("regprocsend", 2445),
        ],
    ),
    (
        25,
        [
            ("textin", 46),
            ("textout", 47),
            ("textrecv", 2414),
            ("textsend", 2415),
        ],
    ),
    (
        26,
        [
            ("oidin", 1798),
            ("oidout", 1799),
            ("oidrecv", 2418),
            ("oidsend", 2419),
        ],
    ),
    (
        114,
        [
            ("json_in", 321),
            ("json_out", 322),
            ("json_recv", 323),
            ("json_send", 324),
        ],
    ),
    (
        700,
        [
            ("float4in", 200),
            ("float4out", 201),
            ("float4recv", 2424),
            ("float4send", 2425),
        ],
    ),
    (
        701,
        [
            ("float8in", 214),
            ("float8out", 215),
            ("float8recv", 2426),
            ("float8send", 2427),
        ],
    ),
    (
        705,
        [
            ("unknownin", 109),
            ("unknownout", 110),
            ("unknownrecv", 2416),
            ("unknownsend", 2417),
        ],
    ),
    (
        1042,
        [
            ("bpcharin", 1044),
            ("bpcharout", 1045),
            ("bpcharrecv", 2430),
            ("bpcharsend", 2431),
        ],
    ),
    (
        1043,
        [
            ("varcharin", 1046),
            ("varcharout", 1047),
            ("varcharrecv", 2432),
            ("varcharsend", 2433),
        ],
    ),
    (
        1082,
        [
            ("date_in", 1084),
            ("date_out", 1085),
            ("date_recv", 2468),
            ("date_send", 2469),
        ],
    ),
    (
        1083,
        [
            ("time_in", 1143),
            ("time_out", 1144),
            ("time_recv", 2470),
            ("time_send", 2471),
        ],
    ),
    (
        1114,
        [
            ("timestamp_in", 1312),
            ("timestamp_out", 1313),
            ("timestamp_recv", 2474),
            ("timestamp_send", 2475),
        ],
    ),
    (
        1184,
        [
            ("timestamptz_in", 1150),
            ("timestamptz_out", 1151),
            ("timestamptz_recv", 2476),
            ("timestamptz_send", 2477),
        ],
    ),
    (
        1186,
        [
            ("interval_in", 1160),
            ("interval_out", 1161),
            ("interval_recv", 2478),
            ("interval_send", 2479),
        ],
    ),
    (
        1700,
        [
            ("numeric_in", 1701),
            ("numeric_out", 1702),
            ("numeric_recv", 2460),
            ("numeric_send", 2461),
        ],
    ),
    (
        2205,
        [
            ("regclassin", 2218),
            ("regclassout", 2219),
            ("regclassrecv", 2452),
            ("regclasssend", 2453),
        ],
    ),
    (
        2206,
        [
            ("regtypein", 2220),
            ("regtypeout", 2221),
            ("regtyperecv", 2454),
            ("regtypesend", 2455),
        ],
    ),
    (
        2278,
        [
            ("void_in", 2298),
            ("void_out", 2299),
            ("void_recv", 3120),
            ("void_send", 3121),
        ],
    ),
    (
        2950,
        [
            ("uuid_in", 2952),
            ("uuid_out", 2953),
            ("uuid_recv", 2961),
            ("uuid_send", 2962),
        ],
    ),
    (
        3802,
        [
            ("jsonb_in", 3806),
            ("jsonb_out", 3804),
            ("jsonb_recv", 3805),
            ("jsonb_send", 3803),
        ],
    ),
];

/// The I/O functions of every array type.
const ARRAY_IO: [(&str, u32); 4] = [
    ("array_in", 750),
    ("array_out", 751),
    ("array_recv", 2400),
    ("array_send", 2401),
];

/// [`io_functions`] for any type of [`ALL`]: arrays share PostgreSQL's array functions.
pub fn io_functions_of(pg: &PgType) -> Option<[(&'static str, u32); 4]> {
    if pg.category == 'A' {
        return Some(ARRAY_IO);
    }
    io_functions(pg.oid)
}
