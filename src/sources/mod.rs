//! Data sources: where the rows of model tables come from.
//!
//! Today: local Parquet and CSV files, registered as tables of the embedded DataFusion
//! engine under the hidden schema [`BASE_SCHEMA`]. Warehouses (PostgreSQL, MySQL
//! protocol) arrive in a later step behind the same function.
//!
//! Invariant: this is the only module that opens data files; it knows nothing about
//! views, metrics or clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

use crate::error::{Error, Result};
use crate::model::{FileFormat, Model, SourceKind};

/// The schema that holds the physical base tables. Clients can never name it: the
/// rewrite stage rejects every relation that is not a view or a catalog table.
pub const BASE_SCHEMA: &str = "__kp_base";

/// Register every model table in `ctx` and return each table's schema, by table name.
///
/// `model_dir` anchors relative source paths.
pub async fn register_tables(
    ctx: &SessionContext,
    model: &Model,
    model_dir: &Path,
) -> Result<Vec<(String, SchemaRef)>> {
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
    for table in &model.tables {
        let Some(source) = model.source(table.source.get_ref()) else {
            continue;
        };
        let name = table.name.get_ref();
        let reference = format!("{BASE_SCHEMA}.{name}");
        let file_path = match source.kind {
            SourceKind::Files => {
                let dir = resolve(model_dir, source.path.as_deref().unwrap_or("."));
                let file = table
                    .file
                    .as_ref()
                    .map(|f| f.get_ref().as_str())
                    .unwrap_or("");
                dir.join(file)
            }
        };
        if !file_path.exists() {
            issues.push(model.files.issue(
                table.file_index,
                table.file.as_ref().map(|f| f.span().start),
                format!(
                    "table \"{name}\": data file {} does not exist (for the demo, run `kpitables demo`)",
                    file_path.display()
                ),
            ));
            continue;
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
            issues.push(model.files.issue(
                table.file_index,
                table.file.as_ref().map(|f| f.span().start),
                format!("table \"{name}\": cannot read {}: {e}", file_path.display()),
            ));
            continue;
        }
        let provider = ctx
            .table_provider(reference.as_str())
            .await
            .map_err(Error::from)?;
        schemas.push((name.clone(), provider.schema()));
    }
    if issues.is_empty() {
        Ok(schemas)
    } else {
        Err(Error::Model(issues))
    }
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
