//! Temporary tables: `CREATE TEMP TABLE`, `SELECT ... INTO TEMP`, `INSERT` into them and
//! `DROP TABLE`, private to the session that creates them and gone when it ends, as in
//! PostgreSQL. BI tools use them for large filter lists and to check what a connection
//! can do (Tableau creates one when it connects).
//!
//! They are session scratch space, not the governed model: the model stays read-only.
//! The rows are held in memory, at most [`MAX_MIB`] per session (53200 beyond). The engine plans each statement of a session that has
//! temporary tables with them in schema `pg_temp`, searched before `public` as
//! PostgreSQL's search path does; other sessions never see them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::datasource::MemTable;

use crate::error::{Error, Result};

/// The schema temporary tables are planned in.
pub const TEMP_SCHEMA: &str = "pg_temp";

/// The most memory one session's temporary tables may hold, in MiB (filter lists are
/// small; this stops one client from exhausting the server).
pub const MAX_MIB: usize = 256;

fn bytes(rows: &[RecordBatch]) -> usize {
    rows.iter().map(RecordBatch::get_array_memory_size).sum()
}

fn check_budget(
    tables: &BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>,
    adding: usize,
) -> Result<()> {
    let held: usize = tables.values().map(|(_, rows)| bytes(rows)).sum();
    if held.saturating_add(adding) > MAX_MIB * 1024 * 1024 {
        return Err(Error::TempTablesFull(MAX_MIB));
    }
    Ok(())
}

/// `schema` with every column nullable, as a table's columns are.
pub fn nullable(schema: &SchemaRef) -> SchemaRef {
    Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// One session's temporary tables.
#[derive(Debug, Default)]
pub struct TempTables {
    tables: Mutex<BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>>,
}

impl TempTables {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, (SchemaRef, Vec<RecordBatch>)>> {
        // A panic while holding the lock cannot leave the map half-updated: every update
        // is a single insert or remove.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create `name` with `schema` and `rows`; 42P07 when it exists.
    pub fn create(&self, name: &str, schema: SchemaRef, rows: Vec<RecordBatch>) -> Result<()> {
        let mut tables = self.lock();
        if tables.contains_key(name) {
            return Err(Error::DuplicateTable(name.to_string()));
        }
        check_budget(&tables, bytes(&rows))?;
        tables.insert(name.to_string(), (schema, rows));
        Ok(())
    }

    /// The schema of `name`, if it is a temporary table.
    pub fn schema(&self, name: &str) -> Option<SchemaRef> {
        self.lock().get(name).map(|(schema, _)| schema.clone())
    }

    /// Append rows (already in the table's schema) to `name`.
    pub fn append(&self, name: &str, rows: Vec<RecordBatch>) -> Result<()> {
        let mut tables = self.lock();
        check_budget(&tables, bytes(&rows))?;
        match tables.get_mut(name) {
            Some((_, existing)) => {
                existing.extend(rows);
                Ok(())
            }
            None => Err(Error::UnknownRelation {
                name: name.to_string(),
                hint: None,
            }),
        }
    }

    /// Drop `name`; false when there is no such temporary table.
    pub fn drop_table(&self, name: &str) -> bool {
        self.lock().remove(name).is_some()
    }

    /// Drop every temporary table (`DISCARD ALL|TEMP`).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Whether `name` is a temporary table.
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// The tables as a schema for planning one statement; None when there are none.
    pub fn provider(&self) -> Result<Option<Arc<dyn SchemaProvider>>> {
        let tables = self.lock();
        if tables.is_empty() {
            return Ok(None);
        }
        let provider = MemorySchemaProvider::new();
        for (name, (schema, rows)) in tables.iter() {
            let table = MemTable::try_new(schema.clone(), vec![rows.clone()])?;
            provider.register_table(name.clone(), Arc::new(table))?;
        }
        Ok(Some(Arc::new(provider)))
    }
}
