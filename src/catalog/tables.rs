//! The rows of each catalog relation, one function per relation.

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;

use super::{
    CatalogTable, DATABASE_OID, INFORMATION_SCHEMA_NAMESPACE_OID, Identity, OWNER_OID,
    PG_CATALOG_NAMESPACE_OID, PG_CLASS_OID, PUBLIC_NAMESPACE_OID, view_oid,
};
use crate::bind::{BoundView, ColumnKind, Semantics};
use crate::model::{TimeGrain, WeekStart};
use crate::types::{self, pg_type_of};

use DataType::{Boolean as B, Float32 as F4, Int16 as I2, Int32 as I4, Int64 as I8, Utf8 as T};

fn i8v(v: i64) -> ScalarValue {
    ScalarValue::Int64(Some(v))
}
pub(super) fn i4v(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}
fn i2v(v: i16) -> ScalarValue {
    ScalarValue::Int16(Some(v))
}
/// A text value.
pub fn tv(v: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(v.into()))
}
fn bv(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}
/// A NULL text value.
pub fn null() -> ScalarValue {
    ScalarValue::Null
}
fn text_array() -> DataType {
    DataType::List(std::sync::Arc::new(Field::new_list_field(
        DataType::Utf8,
        true,
    )))
}
pub(super) fn all(semantics: &Semantics, identity: &Identity) -> Vec<CatalogTable> {
    let views = &semantics.views;
    vec![
        pg_namespace(),
        pg_class(views),
        pg_attribute(views),
        pg_type(),
        pg_description(views),
        pg_database(identity),
        pg_roles(identity, "pg_roles"),
        pg_user(identity),
        pg_am(),
        pg_views(views),
        pg_tables(),
        pg_settings(),
        super::information_schema::schemata(identity),
        super::information_schema::tables(views, identity),
        super::information_schema::views(views, identity),
        super::information_schema::columns(views, identity),
    ]
}

fn pg_namespace() -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_namespace",
        vec![
            ("oid", I8),
            ("nspname", T),
            ("nspowner", I8),
            ("nspacl", text_array()),
        ],
    );
    for (oid, name) in [
        (PG_CATALOG_NAMESPACE_OID, "pg_catalog"),
        (PUBLIC_NAMESPACE_OID, "public"),
        (INFORMATION_SCHEMA_NAMESPACE_OID, "information_schema"),
    ] {
        t.rows
            .push(vec![i8v(oid), tv(name), i8v(OWNER_OID), null()]);
    }
    t
}

fn pg_class(views: &[BoundView]) -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_class",
        vec![
            ("oid", I8),
            ("relname", T),
            ("relnamespace", I8),
            ("reltype", I8),
            ("reloftype", I8),
            ("relowner", I8),
            ("relam", I8),
            ("relfilenode", I8),
            ("reltablespace", I8),
            ("relpages", I4),
            ("reltuples", F4),
            ("relallvisible", I4),
            ("reltoastrelid", I8),
            ("relhasindex", B),
            ("relisshared", B),
            ("relpersistence", T),
            ("relkind", T),
            ("relnatts", I2),
            ("relchecks", I2),
            ("relhasrules", B),
            ("relhastriggers", B),
            ("relhassubclass", B),
            ("relrowsecurity", B),
            ("relforcerowsecurity", B),
            ("relispopulated", B),
            ("relreplident", T),
            ("relispartition", B),
            ("relrewrite", I8),
            ("relacl", text_array()),
            ("reloptions", text_array()),
            ("relpartbound", T),
        ],
    );
    for v in views {
        let natts = i16::try_from(v.columns.len()).unwrap_or(i16::MAX);
        t.rows.push(vec![
            i8v(view_oid(&v.name)),
            tv(&v.name),
            i8v(PUBLIC_NAMESPACE_OID),
            i8v(0),
            i8v(0),
            i8v(OWNER_OID),
            i8v(0),
            i8v(0),
            i8v(0),
            i4v(0),
            ScalarValue::Float32(Some(-1.0)),
            i4v(0),
            i8v(0),
            bv(false),
            bv(false),
            tv("p"),
            tv("v"),
            i2v(natts),
            i2v(0),
            bv(false),
            bv(false),
            bv(false),
            bv(false),
            bv(false),
            bv(true),
            tv("n"),
            bv(false),
            i8v(0),
            null(),
            null(),
            null(),
        ]);
    }
    t
}

fn pg_attribute(views: &[BoundView]) -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_attribute",
        vec![
            ("attrelid", I8),
            ("attname", T),
            ("atttypid", I8),
            ("attstattarget", I4),
            ("attlen", I2),
            ("attnum", I2),
            ("attndims", I4),
            ("attcacheoff", I4),
            ("atttypmod", I4),
            ("attbyval", B),
            ("attalign", T),
            ("attstorage", T),
            ("attcompression", T),
            ("attnotnull", B),
            ("atthasdef", B),
            ("atthasmissing", B),
            ("attidentity", T),
            ("attgenerated", T),
            ("attisdropped", B),
            ("attislocal", B),
            ("attinhcount", I4),
            ("attcollation", I8),
            ("attacl", text_array()),
            ("attoptions", text_array()),
            ("attfdwoptions", text_array()),
        ],
    );
    for v in views {
        for (i, c) in v.columns.iter().enumerate() {
            let (pg, typmod) = pg_type_of(&c.data_type);
            let collation = if pg.category == 'S' { 100 } else { 0 };
            t.rows.push(vec![
                i8v(view_oid(&v.name)),
                tv(&c.name),
                i8v(i64::from(pg.oid)),
                i4v(-1),
                i2v(pg.len),
                i2v(i16::try_from(i + 1).unwrap_or(i16::MAX)),
                i4v(0),
                i4v(-1),
                i4v(typmod),
                bv(pg.len > 0 && pg.len <= 8),
                tv("i"),
                tv(if pg.len < 0 { "x" } else { "p" }),
                tv(""),
                bv(false),
                bv(false),
                bv(false),
                tv(""),
                tv(""),
                bv(false),
                bv(true),
                i4v(0),
                i8v(collation),
                null(),
                null(),
                null(),
            ]);
        }
    }
    t
}

fn pg_type() -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_type",
        vec![
            ("oid", I8),
            ("typname", T),
            ("typnamespace", I8),
            ("typowner", I8),
            ("typlen", I2),
            ("typbyval", B),
            ("typtype", T),
            ("typcategory", T),
            ("typispreferred", B),
            ("typisdefined", B),
            ("typdelim", T),
            ("typrelid", I8),
            ("typelem", I8),
            ("typarray", I8),
            ("typinput", T),
            ("typoutput", T),
            ("typreceive", T),
            ("typsend", T),
            ("typalign", T),
            ("typstorage", T),
            ("typnotnull", B),
            ("typbasetype", I8),
            ("typtypmod", I4),
            ("typndims", I4),
            ("typcollation", I8),
            ("typdefault", T),
        ],
    );
    for pg in types::ALL {
        let internal = internal_type_name(pg.oid);
        let io = types::io_functions_of(pg);
        let elem = types::ALL
            .iter()
            .find(|e| e.array_oid == pg.oid)
            .map_or(0, |e| i64::from(e.oid));
        t.rows.push(vec![
            i8v(i64::from(pg.oid)),
            tv(internal),
            i8v(PG_CATALOG_NAMESPACE_OID),
            i8v(OWNER_OID),
            i2v(pg.len),
            bv(pg.len > 0 && pg.len <= 8),
            tv(if pg.category == 'P' { "p" } else { "b" }),
            tv(pg.category.to_string()),
            bv(false),
            bv(true),
            tv(","),
            i8v(0),
            i8v(elem),
            i8v(i64::from(pg.array_oid)),
            tv(io.map_or("-", |f| f[0].0)),
            tv(io.map_or("-", |f| f[1].0)),
            tv(io.map_or("-", |f| f[2].0)),
            tv(io.map_or("-", |f| f[3].0)),
            tv("i"),
            tv(if pg.len < 0 { "x" } else { "p" }),
            bv(false),
            i8v(0),
            i4v(-1),
            i4v(0),
            i8v(if pg.category == 'S' { 100 } else { 0 }),
            null(),
        ]);
    }
    t
}

/// `typname` as stored in `pg_type`.
pub fn internal_type_name(oid: u32) -> &'static str {
    match oid {
        16 => "bool",
        17 => "bytea",
        18 => "char",
        19 => "name",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        24 => "regproc",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "float4",
        701 => "float8",
        705 => "unknown",
        1000 => "_bool",
        1005 => "_int2",
        1007 => "_int4",
        1009 => "_text",
        1016 => "_int8",
        1022 => "_float8",
        1028 => "_oid",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1186 => "interval",
        1700 => "numeric",
        2205 => "regclass",
        2206 => "regtype",
        2278 => "void",
        2950 => "uuid",
        3802 => "jsonb",
        _ => "unknown",
    }
}

fn pg_description(views: &[BoundView]) -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_description",
        vec![
            ("objoid", I8),
            ("classoid", I8),
            ("objsubid", I4),
            ("description", T),
        ],
    );
    for v in views {
        let oid = view_oid(&v.name);
        if !v.comment.is_empty() {
            t.rows
                .push(vec![i8v(oid), i8v(PG_CLASS_OID), i4v(0), tv(&v.comment)]);
        }
        for (i, c) in v.columns.iter().enumerate() {
            if !c.comment.is_empty() {
                let attnum = i32::try_from(i + 1).unwrap_or(i32::MAX);
                t.rows.push(vec![
                    i8v(oid),
                    i8v(PG_CLASS_OID),
                    i4v(attnum),
                    tv(&c.comment),
                ]);
            }
        }
    }
    t
}

fn pg_database(identity: &Identity) -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_database",
        vec![
            ("oid", I8),
            ("datname", T),
            ("datdba", I8),
            ("encoding", I4),
            ("datcollate", T),
            ("datctype", T),
            ("datistemplate", B),
            ("datallowconn", B),
            ("datconnlimit", I4),
            ("dattablespace", I8),
            ("datacl", text_array()),
        ],
    );
    t.rows.push(vec![
        i8v(DATABASE_OID),
        tv(&identity.database),
        i8v(OWNER_OID),
        i4v(6),
        tv("C.UTF-8"),
        tv("C.UTF-8"),
        bv(false),
        bv(true),
        i4v(-1),
        i8v(1663),
        null(),
    ]);
    t
}

fn pg_roles(identity: &Identity, name: &'static str) -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        name,
        vec![
            ("oid", I8),
            ("rolname", T),
            ("rolsuper", B),
            ("rolinherit", B),
            ("rolcreaterole", B),
            ("rolcreatedb", B),
            ("rolcanlogin", B),
            ("rolreplication", B),
            ("rolconnlimit", I4),
            ("rolpassword", T),
            ("rolvaliduntil", T),
            ("rolbypassrls", B),
            ("rolconfig", text_array()),
        ],
    );
    t.rows.push(role_row(OWNER_OID, "kpitables", false));
    for (i, role) in identity.roles.iter().enumerate() {
        let oid = 16_400 + i64::try_from(i).unwrap_or(0);
        t.rows.push(role_row(oid, role, true));
    }
    t
}

fn role_row(oid: i64, name: &str, login: bool) -> Vec<ScalarValue> {
    vec![
        i8v(oid),
        tv(name),
        bv(false),
        bv(true),
        bv(false),
        bv(false),
        bv(login),
        bv(false),
        i4v(-1),
        tv("********"),
        null(),
        bv(false),
        null(),
    ]
}

fn pg_user(identity: &Identity) -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_user",
        vec![
            ("usename", T),
            ("usesysid", I8),
            ("usecreatedb", B),
            ("usesuper", B),
            ("userepl", B),
            ("usebypassrls", B),
            ("passwd", T),
            ("valuntil", T),
            ("useconfig", text_array()),
        ],
    );
    for (i, role) in identity.roles.iter().enumerate() {
        let oid = 16_400 + i64::try_from(i).unwrap_or(0);
        t.rows.push(vec![
            tv(role),
            i8v(oid),
            bv(false),
            bv(false),
            bv(false),
            bv(false),
            tv("********"),
            null(),
            null(),
        ]);
    }
    t
}

fn pg_am() -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_am",
        vec![("oid", I8), ("amname", T), ("amhandler", T), ("amtype", T)],
    );
    t.rows.push(vec![
        i8v(2),
        tv("heap"),
        tv("heap_tableam_handler"),
        tv("t"),
    ]);
    t.rows
        .push(vec![i8v(403), tv("btree"), tv("bthandler"), tv("i")]);
    t
}

/// The definition of a view as `pg_get_viewdef` shows it: its columns and what they mean.
pub fn view_definition(view: &BoundView, semantics: &Semantics) -> String {
    let mut lines = vec![format!("-- kpitables semantic view \"{}\"", view.name)];
    for c in &view.columns {
        let what = match &c.kind {
            ColumnKind::Dimension(d) => semantics
                .dimensions
                .get(d)
                .map(|d| format!("dimension {}", d.expr.expr))
                .unwrap_or_default(),
            ColumnKind::TimeGrain(d, g) => match (g, semantics.dimensions.get(d)) {
                (TimeGrain::FiscalQuarter | TimeGrain::FiscalYear, Some(dim)) => format!(
                    "{} of {d}, the fiscal year starting in month {}",
                    g.name(),
                    dim.fiscal_year_start_month
                ),
                (TimeGrain::Week, Some(dim)) if dim.week_start != WeekStart::Monday => {
                    format!("week of {d}, starting on {:?}", dim.week_start)
                }
                _ => format!("date_trunc('{}', {d})", g.name()),
            },
            ColumnKind::Metric(m) => semantics
                .metrics
                .get(m)
                .map(|m| format!("{} metric {}", m.kind.as_str(), m.definition_text()))
                .unwrap_or_default(),
            ColumnKind::Segment(g) => semantics
                .segments
                .get(g)
                .map(|g| format!("segment {}", g.filter))
                .unwrap_or_default(),
        };
        lines.push(format!("--   {}: {what}", c.name));
    }
    lines.join("\n")
}

fn pg_views(views: &[BoundView]) -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_views",
        vec![
            ("schemaname", T),
            ("viewname", T),
            ("viewowner", T),
            ("definition", T),
        ],
    );
    for v in views {
        t.rows.push(vec![
            tv("public"),
            tv(&v.name),
            tv("kpitables"),
            tv(&v.comment),
        ]);
    }
    t
}

fn pg_tables() -> CatalogTable {
    CatalogTable::new(
        "pg_catalog",
        "pg_tables",
        vec![
            ("schemaname", T),
            ("tablename", T),
            ("tableowner", T),
            ("tablespace", T),
            ("hasindexes", B),
            ("hasrules", B),
            ("hastriggers", B),
            ("rowsecurity", B),
        ],
    )
}

fn pg_settings() -> CatalogTable {
    let mut t = CatalogTable::new(
        "pg_catalog",
        "pg_settings",
        vec![
            ("name", T),
            ("setting", T),
            ("context", T),
            ("vartype", T),
            ("source", T),
            ("boot_val", T),
            ("reset_val", T),
            ("pending_restart", B),
        ],
    );
    for (name, value, _) in crate::session::SETTINGS {
        t.rows.push(vec![
            tv(*name),
            tv(*value),
            tv("user"),
            tv("string"),
            tv("default"),
            tv(*value),
            tv(*value),
            bv(false),
        ]);
    }
    t
}
