//! Running the statements on a session's temporary tables ([`crate::temp`]): `CREATE TEMP
//! TABLE` (empty, or from a query), `SELECT ... INTO TEMP`, `INSERT` and `DROP TABLE`.
//! Statements with a source query arrive planned (`Prepared::TempWrite`), so that their
//! parameters bind as any query's do.

use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::DataType;
use futures::StreamExt;
use pgwire::api::results::{Response, Tag};

use super::objects::SessionObjects;
use crate::engine::{Engine, QueryPlan};
use crate::error::{Error, Result};
use crate::session::Session;
use crate::sql::Command;
use crate::sql::session_values::SessionFacts;

/// Every row of `plan`, in its result schema (PostgreSQL's column names, the planned
/// types), every column nullable (as a table's columns are).
async fn collect_rows(
    engine: &Engine,
    plan: &QueryPlan,
    params: Vec<ScalarValue>,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let schema = crate::temp::nullable(&plan.schema());
    let mut stream = engine.execute(plan, params).await?;
    let mut rows = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        // In the result schema's types (a constant planned as int4 may run as int8).
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(array, field)| cast(array, field.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Engine(e.to_string()))?;
        rows.push(
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| Error::Engine(e.to_string()))?,
        );
    }
    Ok((schema, rows))
}

fn create(
    objects: &SessionObjects,
    session: &Session,
    name: &str,
    schema: SchemaRef,
    rows: Vec<RecordBatch>,
    tag_select: bool,
) -> Result<Response> {
    let count: usize = rows.iter().map(RecordBatch::num_rows).sum();
    let bytes: usize = rows.iter().map(RecordBatch::get_array_memory_size).sum();
    objects.temp.create(name, schema, rows)?;
    tracing::info!(user = %session.user, table = %name, rows = count, bytes, "temporary table created");
    Ok(Response::Execution(if tag_select {
        Tag::new("SELECT").with_rows(count)
    } else {
        Tag::new("CREATE TABLE")
    }))
}

/// `CREATE TEMP TABLE name (columns)`: the column types are those of
/// `SELECT CAST(NULL AS type) ...`, planned as any query.
pub(super) async fn create_empty(
    engine: &Engine,
    session: &Session,
    objects: &SessionObjects,
    name: &str,
    columns: &[(String, DataType)],
) -> Result<Response> {
    let items: Vec<String> = columns
        .iter()
        .map(|(column, data_type)| {
            format!(
                "CAST(NULL AS {data_type}) AS {}",
                crate::catalog::functions::quote_ident(column)
            )
        })
        .collect();
    let statement = crate::sql::parse(&format!("SELECT {}", items.join(", ")))?
        .pop()
        .ok_or_else(|| Error::Internal("empty column probe".into()))?;
    let facts = SessionFacts {
        session,
        database: engine.database(),
        temp_tables: objects.temp.provider()?,
    };
    let schema = crate::temp::nullable(&engine.plan(statement, &facts).await?.schema());
    create(objects, session, name, schema, Vec::new(), false)
}

/// `CREATE TEMP TABLE ... AS`, `SELECT ... INTO TEMP` and `INSERT`, with their source
/// query planned and its parameters.
pub(super) async fn write(
    engine: &Engine,
    session: &Session,
    objects: &SessionObjects,
    command: &Command,
    plan: &QueryPlan,
    params: Vec<ScalarValue>,
) -> Result<Response> {
    match command {
        Command::CreateTemp {
            name, tag_select, ..
        } => {
            let (schema, rows) = collect_rows(engine, plan, params).await?;
            create(objects, session, name, schema, rows, *tag_select)
        }
        Command::Insert { name, columns, .. } => {
            let Some(target) = objects.temp.schema(name) else {
                return Err(Error::ReadOnly("INSERT".into()));
            };
            let (_, rows) = collect_rows(engine, plan, params).await?;
            insert(objects, name, &target, columns, rows)
        }
        _ => Err(Error::Internal("not a temporary table write".into())),
    }
}

/// Append `rows` to `name`, each value cast to its column's type; columns not listed get
/// NULL.
fn insert(
    objects: &SessionObjects,
    name: &str,
    target: &SchemaRef,
    columns: &[String],
    rows: Vec<RecordBatch>,
) -> Result<Response> {
    // Where each target column's values come from: a source position, or NULL.
    let positions: Vec<Option<usize>> = if columns.is_empty() {
        (0..target.fields().len()).map(Some).collect()
    } else {
        for c in columns {
            if target.index_of(c).is_err() {
                return Err(Error::UnknownColumn {
                    name: c.clone(),
                    hint: crate::error::did_you_mean(
                        c,
                        target.fields().iter().map(|f| f.name().as_str()),
                    ),
                });
            }
        }
        target
            .fields()
            .iter()
            .map(|f| columns.iter().position(|c| c == f.name()))
            .collect()
    };
    let wanted = if columns.is_empty() {
        target.fields().len()
    } else {
        columns.len()
    };
    let mut converted = Vec::with_capacity(rows.len());
    let mut count = 0usize;
    for batch in rows {
        if batch.num_columns() > wanted {
            return Err(Error::Syntax(
                "INSERT has more expressions than target columns".into(),
            ));
        }
        let arrays = target
            .fields()
            .iter()
            .zip(&positions)
            .map(
                |(field, position)| match position.and_then(|p| batch.columns().get(p)) {
                    Some(array) => cast(array, field.data_type())
                        .map_err(|e| Error::InvalidValue(e.to_string())),
                    None => Ok(new_null_array(field.data_type(), batch.num_rows())),
                },
            )
            .collect::<Result<Vec<_>>>()?;
        count += batch.num_rows();
        converted.push(
            RecordBatch::try_new(target.clone(), arrays)
                .map_err(|e| Error::InvalidValue(e.to_string()))?,
        );
    }
    objects.temp.append(name, converted)?;
    Ok(Response::Execution(
        Tag::new("INSERT").with_oid(0).with_rows(count),
    ))
}

/// `DROP TABLE [IF EXISTS] names`: the session's temporary tables only; all or none.
pub(super) fn drop_tables(
    engine: &Engine,
    objects: &SessionObjects,
    names: &[String],
    if_exists: bool,
) -> Result<Response> {
    for name in names {
        if objects.temp.contains(name) {
            continue;
        }
        if engine.semantics().view(name).is_some() {
            return Err(Error::ReadOnly("DROP TABLE".into()));
        }
        if !if_exists {
            return Err(Error::UnknownRelation {
                name: name.clone(),
                hint: Some(
                    "only this session's temporary tables can be dropped; DROP TABLE IF EXISTS ignores a missing one".into(),
                ),
            });
        }
    }
    for name in names {
        objects.temp.drop_table(name);
    }
    Ok(Response::Execution(Tag::new("DROP TABLE")))
}
