//! Live tables: catalog relations whose rows are the server's state at the moment they
//! are read (`pg_stat_activity`, `kp.audit`, `kp.changes`, `kp.alerts`, ...). The catalog
//! owns the interface; the server's wing implements it ([`LiveSource`]) and hands its
//! sources to the engine, which registers their tables in each user's scope. So the
//! engine and the catalog name no type of the server (sessions, audit trail, history,
//! alerts), and a new live table touches only the module that owns its state.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::TableType;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::{CatalogTable, Identity};
use crate::bind::Semantics;

/// Who reads: a login role, and whether it administers the server.
#[derive(Debug, Clone)]
pub struct Reader {
    /// The user's name.
    pub user: String,
    /// May see and signal every session.
    pub admin: bool,
}

/// A table of a live source: its schema (`pg_catalog` or `kp`), its name, the table.
pub type Live = (&'static str, &'static str, Arc<dyn TableProvider>);

/// Server state shown as catalog tables (and functions) in each user's scope.
pub trait LiveSource: Send + Sync {
    /// The tables `reader` sees, whose model is `restricted` (the access rules applied).
    /// A table of `pg_catalog` takes the place of the static one of that name.
    fn tables(
        &self,
        restricted: &Semantics,
        reader: &Reader,
        identity: &Identity,
    ) -> crate::error::Result<Vec<Live>>;

    /// Register this source's functions in a scope's context for `reader`.
    fn register_functions(&self, _ctx: &SessionContext, _reader: &Reader) {}
}

/// A catalog table whose rows are computed each time it is read (the model's history,
/// which changes while the server runs).
pub struct LiveTable {
    schema: SchemaRef,
    rows: Box<dyn Fn() -> crate::error::Result<RecordBatch> + Send + Sync>,
}

impl std::fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTable")
            .field("schema", &self.schema)
            .finish()
    }
}

impl LiveTable {
    /// A table of the columns of `empty` whose rows `fill` writes at each scan.
    pub fn new(
        empty: CatalogTable,
        fill: impl Fn(&mut CatalogTable) + Send + Sync + 'static,
    ) -> crate::error::Result<LiveTable> {
        let schema = empty.to_batch()?.schema();
        Ok(LiveTable {
            schema,
            rows: Box::new(move || {
                let mut table = CatalogTable::new(empty.schema, empty.name, empty.columns.clone());
                fill(&mut table);
                table.to_batch()
            }),
        })
    }
}

#[async_trait::async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn table_type(&self) -> TableType {
        TableType::View
    }
    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let batch =
            (self.rows)().map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        MemTable::try_new(self.schema.clone(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
