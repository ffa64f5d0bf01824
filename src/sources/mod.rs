//! Data sources: where the rows of model tables come from.
//!
//! Every model table is registered with the engine under the hidden schema
//! [`BASE_SCHEMA`]:
//!
//! - a `files` table as a Parquet or CSV table the embedded engine reads itself;
//! - a warehouse table (`postgres`, `mysql`) as a federated table
//!   (`datafusion-federation`): at planning, the largest part of a plan whose tables all
//!   live on one source is cut out, written as one SQL statement in that source's
//!   dialect ([`dialect`]) and run there by the source's connector ([`postgres`],
//!   [`mysql`]); only the rows of the result come back ([`text_rows`]).
//!
//! Invariant: this is the only module that opens data files or warehouse connections;
//! it knows nothing about views, metrics or clients.

pub mod dialect;
pub mod mysql;
pub mod postgres;
pub mod pushdown;
pub mod text_rows;
pub mod warehouse;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use datafusion_federation::FederatedTableProviderAdaptor;
use datafusion_federation::sql::{
    RemoteTableRef, SQLExecutor, SQLFederationProvider, SQLTableSource,
};

use crate::error::{Error, Result};
use crate::model::{FileFormat, Model, Source, SourceKind, Table};

/// The schema that holds the physical base tables. Clients can never name it: the
/// rewrite stage rejects every relation that is not a view or a catalog table.
pub const BASE_SCHEMA: &str = "__kp_base";

/// A warehouse source as operations see it (readiness probe, pool metrics).
#[async_trait::async_trait]
pub trait Probe: Send + Sync + std::fmt::Debug {
    /// The model's name of the source.
    fn source_name(&self) -> &str;
    /// Check that the source answers a statement, within its connect timeout.
    async fn ping(&self) -> Result<()>;
    /// Connections in use and the pool's size.
    fn pool(&self) -> (usize, usize);
}

/// What [`register_tables`] registered.
#[derive(Debug, Default)]
pub struct Registered {
    /// Each table's schema, by table name.
    pub schemas: Vec<(String, SchemaRef)>,
    /// Each warehouse source.
    pub warehouses: Vec<Arc<dyn Probe>>,
}

/// The source kind of each model table that lives in a warehouse, by table name.
pub fn warehouse_tables(model: &Model) -> HashMap<String, SourceKind> {
    model
        .tables
        .iter()
        .filter_map(|t| {
            let kind = model.source(t.source.get_ref())?.kind;
            kind.is_warehouse()
                .then(|| (t.name.get_ref().clone(), kind))
        })
        .collect()
}

/// Register every model table in `ctx`; return each table's schema, by table name, and
/// the warehouse sources.
///
/// `model_dir` anchors relative source paths.
pub async fn register_tables(
    ctx: &SessionContext,
    model: &Model,
    model_dir: &Path,
) -> Result<Registered> {
    let catalog = ctx
        .catalog(&ctx.state().config().options().catalog.default_catalog)
        .ok_or_else(|| Error::Internal("default catalog missing".into()))?;
    if catalog.schema(BASE_SCHEMA).is_none() {
        catalog
            .register_schema(BASE_SCHEMA, Arc::new(MemorySchemaProvider::new()))
            .map_err(Error::from)?;
    }
    let mut schemas = Vec::new();
    let mut issues = Vec::new();
    let mut warehouses: HashMap<String, Option<Arc<SQLFederationProvider>>> = HashMap::new();
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    for table in &model.tables {
        let Some(source) = model.source(table.source.get_ref()) else {
            continue;
        };
        let name = table.name.get_ref();
        let registered = match source.kind {
            SourceKind::Files => register_file(ctx, model, model_dir, source, table).await,
            SourceKind::Postgres | SourceKind::Mysql => {
                let provider = match warehouses.get(source.name.get_ref()) {
                    Some(known) => known.clone(),
                    None => {
                        let provider = match connect(source) {
                            Ok((p, probe)) => {
                                probes.push(probe);
                                Some(p)
                            }
                            Err(e) => {
                                issues.push(model.files.issue(
                                    source.file,
                                    source.url.as_ref().map(|u| u.span().start),
                                    e.to_string(),
                                ));
                                None
                            }
                        };
                        warehouses.insert(source.name.get_ref().clone(), provider.clone());
                        provider
                    }
                };
                let Some(provider) = provider else {
                    continue;
                };
                let result = register_remote(ctx, source, table, provider).await;
                if matches!(
                    &result,
                    Err(Error::Source {
                        failure: crate::error::SourceFailure::Connect(_),
                        ..
                    })
                ) {
                    // One message per unreachable source, not one per table.
                    warehouses.insert(source.name.get_ref().clone(), None);
                    result.map_err(|e| {
                        model.files.issue(
                            source.file,
                            source.url.as_ref().map(|u| u.span().start),
                            e.to_string(),
                        )
                    })
                } else {
                    result.map_err(|e| {
                        model.files.issue(
                            table.file_index,
                            Some(table.table.as_ref().unwrap_or(&table.name).span().start),
                            format!("table \"{name}\": {e}"),
                        )
                    })
                }
            }
        };
        match registered {
            Ok(schema) => schemas.push((name.clone(), schema)),
            Err(issue) => issues.push(issue),
        }
    }
    if issues.is_empty() {
        Ok(Registered {
            schemas,
            warehouses: probes,
        })
    } else {
        Err(Error::Model(issues))
    }
}

async fn register_file(
    ctx: &SessionContext,
    model: &Model,
    model_dir: &Path,
    source: &Source,
    table: &Table,
) -> std::result::Result<SchemaRef, crate::error::ModelIssue> {
    let name = table.name.get_ref();
    let reference = format!("{BASE_SCHEMA}.{name}");
    let dir = resolve(model_dir, source.path.as_deref().unwrap_or("."));
    let file = table
        .file
        .as_ref()
        .map(|f| f.get_ref().as_str())
        .unwrap_or("");
    let file_path = dir.join(file);
    let issue = |reason: String| {
        model.files.issue(
            table.file_index,
            table.file.as_ref().map(|f| f.span().start),
            reason,
        )
    };
    if !file_path.exists() {
        return Err(issue(format!(
            "table \"{name}\": data file {} does not exist (for the demo, run `kpitables demo`)",
            file_path.display()
        )));
    }
    let format = table.format.unwrap_or_else(|| {
        if file_path.extension().is_some_and(|e| e == "csv") {
            FileFormat::Csv
        } else {
            FileFormat::Parquet
        }
    });
    let path = file_path.to_string_lossy().to_string();
    let registered = match format {
        FileFormat::Parquet => {
            ctx.register_parquet(reference.as_str(), &path, ParquetReadOptions::default())
                .await
        }
        FileFormat::Csv => {
            ctx.register_csv(
                reference.as_str(),
                &path,
                CsvReadOptions::new().has_header(true),
            )
            .await
        }
    };
    if let Err(e) = registered {
        return Err(issue(format!(
            "table \"{name}\": cannot read {}: {e}",
            file_path.display()
        )));
    }
    ctx.table_provider(reference.as_str())
        .await
        .map(|provider| provider.schema())
        .map_err(|e| issue(format!("table \"{name}\": {e}")))
}

/// The federation provider of a warehouse source: its connector (a connection pool;
/// nothing is opened yet) behind the SQL federation planner.
fn connect(source: &Source) -> Result<(Arc<SQLFederationProvider>, Arc<dyn Probe>)> {
    let password = match &source.password_env {
        Some(var) => Some(crate::config::secret(var).ok_or_else(|| Error::Source {
            source_name: source.name.get_ref().clone(),
            failure: crate::error::SourceFailure::Connect(format!(
                "environment variable {var} (password_env) is not set"
            )),
        })?),
        None => None,
    };
    let settings = warehouse::Settings::new(source, password);
    let (executor, probe): (Arc<dyn SQLExecutor>, Arc<dyn Probe>) = match source.kind {
        SourceKind::Postgres => {
            let connector = Arc::new(postgres::Postgres::new(settings)?);
            (connector.clone(), connector)
        }
        SourceKind::Mysql => {
            let connector = Arc::new(mysql::Mysql::new(settings)?);
            (connector.clone(), connector)
        }
        SourceKind::Files => {
            return Err(Error::Internal("a files source has no connector".into()));
        }
    };
    Ok((Arc::new(SQLFederationProvider::new(executor)), probe))
}

/// Register a warehouse table: read its columns from the source and make it a federated
/// table of the engine.
async fn register_remote(
    ctx: &SessionContext,
    source: &Source,
    table: &Table,
    provider: Arc<SQLFederationProvider>,
) -> Result<SchemaRef> {
    let name = table.name.get_ref();
    let remote = table
        .table
        .as_ref()
        .map(|t| t.get_ref().as_str())
        .unwrap_or(name);
    let schema = provider
        .executor
        .get_table_schema(remote)
        .await
        .map_err(Error::from)?;
    if schema.fields().is_empty() {
        return Err(Error::Source {
            source_name: source.name.get_ref().clone(),
            failure: crate::error::SourceFailure::Statement {
                sqlstate: None,
                message: format!(
                    "table \"{remote}\" does not exist{}",
                    source
                        .schema
                        .as_ref()
                        .map(|s| format!(" in schema \"{s}\""))
                        .unwrap_or_default()
                ),
            },
        });
    }
    let reference = match (&source.schema, source.kind) {
        (Some(schema), SourceKind::Postgres) => TableReference::partial(schema.as_str(), remote),
        _ => TableReference::bare(remote),
    };
    let table_source = SQLTableSource::new_with_schema(
        provider,
        RemoteTableRef::from(reference),
        Arc::clone(&schema),
    );
    let adaptor = FederatedTableProviderAdaptor::new(Arc::new(table_source));
    ctx.register_table(
        TableReference::partial(BASE_SCHEMA, name.as_str()),
        Arc::new(adaptor),
    )
    .map_err(Error::from)?;
    Ok(schema)
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
