//! The PostgreSQL system catalogs (`pg_catalog`, `information_schema`) built from the
//! semantic model, so psql, drivers and BI tools can list views and their columns.
//!
//! Views are PostgreSQL *views* (`relkind = 'v'`, `table_type = 'VIEW'`) in every
//! catalog: they are virtual, read-only relations with a definition. Metric and
//! dimension labels and descriptions are column comments; view descriptions are table
//! comments. OIDs are derived from names, so they are stable across restarts.
//!
//! Invariant: catalog content is a pure function of the bound model and the server
//! identity; it never reads data sources. [`functions`] holds the SQL functions clients
//! call on these catalogs. The live tables (`kp.changes`, `kp.audit`,
//! `pg_stat_activity` in [`activity`]) read the server's own state when scanned.

pub mod functions;
mod information_schema;
pub mod kp;
pub mod live;
pub(crate) mod pg_relations;
mod sleep;
mod tables;

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::bind::Semantics;
use crate::error::{Error, Result};

pub use sleep::register_sleep;
pub use tables::{null, tv};

/// OID of the `public` schema (as in PostgreSQL).
pub const PUBLIC_NAMESPACE_OID: i64 = 2200;
/// OID of the `pg_catalog` schema.
pub const PG_CATALOG_NAMESPACE_OID: i64 = 11;
/// OID of the `information_schema` schema.
pub const INFORMATION_SCHEMA_NAMESPACE_OID: i64 = 13_000;
/// OID of the one database served.
pub const DATABASE_OID: i64 = 16_384;
/// OID of the owner role of every object.
pub const OWNER_OID: i64 = 10;
/// `pg_class` OID of `pg_class` itself (the `classoid` of relation comments).
pub const PG_CLASS_OID: i64 = 1259;

/// Who the catalog describes: the database name, the roles and the server version.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Database name.
    pub database: String,
    /// Login role names.
    pub roles: Vec<String>,
}

/// A stable OID for a view, derived from its name (FNV-1a), above the range PostgreSQL
/// reserves for built-in objects.
pub fn view_oid(name: &str) -> i64 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    20_000 + i64::from(hash % 1_000_000_000)
}

/// A catalog relation: its columns and rows.
pub struct CatalogTable {
    /// Schema name (`pg_catalog` or `information_schema`).
    pub schema: &'static str,
    /// Relation name.
    pub name: &'static str,
    /// Column names and types.
    pub columns: Vec<(&'static str, DataType)>,
    /// Rows, one value per column.
    pub rows: Vec<Vec<ScalarValue>>,
}

impl CatalogTable {
    /// An empty table of `columns` named `schema.name`.
    pub fn new(
        schema: &'static str,
        name: &'static str,
        columns: Vec<(&'static str, DataType)>,
    ) -> Self {
        CatalogTable {
            schema,
            name,
            columns,
            rows: Vec::new(),
        }
    }

    pub(crate) fn to_batch(&self) -> Result<RecordBatch> {
        let schema = Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for (i, (name, data_type)) in self.columns.iter().enumerate() {
            let values = self.rows.iter().map(|row| match row.get(i) {
                Some(ScalarValue::Null) | None => ScalarValue::try_from(data_type),
                Some(v) => Ok(v.clone()),
            });
            let values: Vec<ScalarValue> = values.collect::<std::result::Result<_, _>>()?;
            let array = if values.is_empty() {
                datafusion::arrow::array::new_empty_array(data_type)
            } else {
                ScalarValue::iter_to_array(values).map_err(|e| {
                    Error::Internal(format!("catalog column {}.{name}: {e}", self.name))
                })?
            };
            arrays.push(array);
        }
        RecordBatch::try_new(schema, arrays)
            .map_err(|e| Error::Internal(format!("catalog {}: {e}", self.name)))
    }
}

/// Every catalog relation for this model.
pub fn build(semantics: &Semantics, identity: &Identity) -> Result<Vec<CatalogTable>> {
    let mut tables = pg_relations::conform(tables::all(semantics, identity))?;
    tables.extend(kp::all(semantics));
    Ok(tables)
}

/// Register the catalog schemas in `ctx` and return the `(schema, table)` names.
pub fn register(
    ctx: &SessionContext,
    semantics: &Semantics,
    identity: &Identity,
) -> Result<HashSet<(String, String)>> {
    let catalog = ctx
        .catalog(&ctx.state().config().options().catalog.default_catalog)
        .ok_or_else(|| Error::Internal("default catalog missing".into()))?;
    let schemas = schemas(semantics, identity)?;
    catalog.register_schema("pg_catalog", schemas.pg_catalog)?;
    catalog.register_schema("information_schema", schemas.information_schema)?;
    catalog.register_schema(kp::SCHEMA, schemas.kp)?;
    Ok(schemas.names)
}

/// The catalog schemas of a model (as one user sees it).
pub struct CatalogSchemas {
    /// `pg_catalog`.
    pub pg_catalog: Arc<MemorySchemaProvider>,
    /// `information_schema`.
    pub information_schema: Arc<MemorySchemaProvider>,
    /// `kp`, the metrics center's own catalog.
    pub kp: Arc<MemorySchemaProvider>,
    /// Every `(schema, table)` they hold.
    pub names: HashSet<(String, String)>,
}

/// Build the `pg_catalog` and `information_schema` tables of `semantics`.
pub fn schemas(semantics: &Semantics, identity: &Identity) -> Result<CatalogSchemas> {
    let mut names = HashSet::new();
    let pg_catalog = Arc::new(MemorySchemaProvider::new());
    let information_schema = Arc::new(MemorySchemaProvider::new());
    let kp = Arc::new(MemorySchemaProvider::new());
    for table in build(semantics, identity)? {
        let batch = table.to_batch()?;
        let provider = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        let schema: &MemorySchemaProvider = match table.schema {
            "pg_catalog" => &pg_catalog,
            kp::SCHEMA => &kp,
            _ => &information_schema,
        };
        datafusion::catalog::SchemaProvider::register_table(
            schema,
            table.name.to_string(),
            Arc::new(provider),
        )?;
        names.insert((table.schema.to_string(), table.name.to_string()));
    }
    Ok(CatalogSchemas {
        pg_catalog,
        information_schema,
        kp,
        names,
    })
}
