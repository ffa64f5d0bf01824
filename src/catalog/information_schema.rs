//! `information_schema`: schemata, tables, views and columns, from the bound model.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use super::tables::{i4v, internal_type_name, null, tv};
use super::{CatalogTable, Identity};
use crate::bind::BoundView;
use crate::types::{self, pg_type_of};

use DataType::{Int32 as I4, Utf8 as T};

pub(super) fn schemata(identity: &Identity) -> CatalogTable {
    let mut t = CatalogTable::new(
        "information_schema",
        "schemata",
        vec![("catalog_name", T), ("schema_name", T), ("schema_owner", T)],
    );
    for s in ["public", "pg_catalog", "information_schema"] {
        t.rows
            .push(vec![tv(&identity.database), tv(s), tv("kpitables")]);
    }
    t
}

pub(super) fn tables(views: &[BoundView], identity: &Identity) -> CatalogTable {
    let mut t = CatalogTable::new(
        "information_schema",
        "tables",
        vec![
            ("table_catalog", T),
            ("table_schema", T),
            ("table_name", T),
            ("table_type", T),
            ("self_referencing_column_name", T),
            ("reference_generation", T),
            ("user_defined_type_catalog", T),
            ("user_defined_type_schema", T),
            ("user_defined_type_name", T),
            ("is_insertable_into", T),
            ("is_typed", T),
            ("commit_action", T),
        ],
    );
    for v in views {
        t.rows.push(vec![
            tv(&identity.database),
            tv("public"),
            tv(&v.name),
            tv("VIEW"),
            null(),
            null(),
            null(),
            null(),
            null(),
            tv("NO"),
            tv("NO"),
            null(),
        ]);
    }
    t
}

pub(super) fn views(views: &[BoundView], identity: &Identity) -> CatalogTable {
    let mut t = CatalogTable::new(
        "information_schema",
        "views",
        vec![
            ("table_catalog", T),
            ("table_schema", T),
            ("table_name", T),
            ("view_definition", T),
            ("check_option", T),
            ("is_updatable", T),
            ("is_insertable_into", T),
            ("is_trigger_updatable", T),
            ("is_trigger_deletable", T),
            ("is_trigger_insertable_into", T),
        ],
    );
    for v in views {
        t.rows.push(vec![
            tv(&identity.database),
            tv("public"),
            tv(&v.name),
            tv(&v.comment),
            tv("NONE"),
            tv("NO"),
            tv("NO"),
            tv("NO"),
            tv("NO"),
            tv("NO"),
        ]);
    }
    t
}

pub(super) fn columns(views: &[BoundView], identity: &Identity) -> CatalogTable {
    let mut t = CatalogTable::new(
        "information_schema",
        "columns",
        vec![
            ("table_catalog", T),
            ("table_schema", T),
            ("table_name", T),
            ("column_name", T),
            ("ordinal_position", I4),
            ("column_default", T),
            ("is_nullable", T),
            ("data_type", T),
            ("character_maximum_length", I4),
            ("character_octet_length", I4),
            ("numeric_precision", I4),
            ("numeric_precision_radix", I4),
            ("numeric_scale", I4),
            ("datetime_precision", I4),
            ("udt_catalog", T),
            ("udt_schema", T),
            ("udt_name", T),
            ("is_updatable", T),
            ("dtd_identifier", T),
        ],
    );
    for v in views {
        for (i, c) in v.columns.iter().enumerate() {
            let (pg, typmod) = pg_type_of(&c.data_type);
            let (precision, radix, scale) = match &c.data_type {
                DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => {
                    (Some(i32::from(*p)), Some(10), Some(i32::from(*s)))
                }
                DataType::Int16 => (Some(16), Some(2), Some(0)),
                DataType::Int32 => (Some(32), Some(2), Some(0)),
                DataType::Int64 => (Some(64), Some(2), Some(0)),
                DataType::Float32 => (Some(24), Some(2), None),
                DataType::Float64 => (Some(53), Some(2), None),
                _ => (None, None, None),
            };
            let _ = typmod;
            let opt = |v: Option<i32>| ScalarValue::Int32(v);
            let position = i32::try_from(i + 1).unwrap_or(i32::MAX);
            t.rows.push(vec![
                tv(&identity.database),
                tv("public"),
                tv(&v.name),
                tv(&c.name),
                i4v(position),
                null(),
                tv("YES"),
                tv(pg.name),
                null(),
                if pg.category == 'S' {
                    i4v(1_073_741_824)
                } else {
                    null()
                },
                opt(precision),
                opt(radix),
                opt(scale),
                if pg.category == 'D' {
                    i4v(if pg.oid == types::DATE.oid { 0 } else { 6 })
                } else {
                    null()
                },
                tv(&identity.database),
                tv("pg_catalog"),
                tv(internal_type_name(pg.oid)),
                tv("NO"),
                tv(position.to_string()),
            ]);
        }
    }
    t
}
