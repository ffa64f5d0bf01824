//! PostgreSQL-protocol warehouses (PostgreSQL, Greenplum, Citus, Redshift-style engines).
//!
//! A pool of `tokio-postgres` connections per source. Statements arrive as PostgreSQL SQL
//! from the federation planner and run through the simple query protocol, so every
//! value comes back as text and is converted by [`super::text_rows`]. Each connection
//! is opened read-only, in UTC, with ISO dates.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::SQLExecutor;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::TryStreamExt;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::warehouse::{self, BatchSender, ColumnInfo, FetchError, Outgoing, Settings, Usage};
use crate::error::{Result, SourceFailure};
use crate::model::SourceKind;

/// One PostgreSQL-protocol source: a connection pool and its settings.
pub struct Postgres {
    settings: Arc<Settings>,
    pool: Pool,
    usage: Arc<Usage>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Postgres {
    /// A pool for the source (connections open on first use).
    pub fn new(settings: Settings) -> Result<Postgres> {
        let mut config: tokio_postgres::Config = settings
            .url
            .parse()
            .map_err(|e| settings.error(SourceFailure::Connect(format!("invalid url: {e}"))))?;
        if let Some(password) = &settings.password {
            config.password(password);
        }
        config
            .application_name("kpitables")
            .connect_timeout(settings.connect_timeout)
            .options("-c TimeZone=UTC -c DateStyle=ISO,YMD -c extra_float_digits=3 -c default_transaction_read_only=on");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| settings.error(SourceFailure::Connect(e.to_string())))?;
        Ok(Postgres {
            settings: Arc::new(settings),
            pool,
            usage: Arc::default(),
        })
    }

    /// Check that the source answers: `SELECT 1` on a pooled connection.
    pub async fn ping(&self) -> Result<()> {
        let client = connection(&self.settings, &self.pool).await?;
        let answered = tokio::time::timeout(
            self.settings.connect_timeout,
            client.simple_query("SELECT 1"),
        )
        .await
        .map_err(|_| {
            self.settings.error(SourceFailure::Connect(format!(
                "no answer within {} s",
                self.settings.connect_timeout.as_secs()
            )))
        })?;
        answered
            .map(|_| ())
            .map_err(|e| self.settings.error(failure(&e)))
    }

    /// The columns of `table`, read from `information_schema.columns`.
    pub async fn columns(&self, table: &str) -> Result<Vec<ColumnInfo>> {
        let client = connection(&self.settings, &self.pool).await?;
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text, numeric_precision::int8, numeric_scale::int8 \
                 FROM information_schema.columns \
                 WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 \
                 ORDER BY ordinal_position",
                &[&self.settings.schema, &table],
            )
            .await
            .map_err(|e| self.settings.error(failure(&e)))?;
        Ok(rows
            .iter()
            .map(|r| ColumnInfo {
                name: r.get(0),
                data_type: r.get(1),
                column_type: String::new(),
                precision: r.get(2),
                scale: r.get(3),
            })
            .collect())
    }
}

async fn connection(settings: &Settings, pool: &Pool) -> Result<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| {
        let message = match e {
            deadpool_postgres::PoolError::Backend(e) => e.to_string(),
            deadpool_postgres::PoolError::Timeout(_) => format!(
                "no connection within {} s",
                settings.connect_timeout.as_secs()
            ),
            other => other.to_string(),
        };
        settings.error(SourceFailure::Connect(message))
    })
}

/// What a driver error means for the client.
fn failure(e: &tokio_postgres::Error) -> SourceFailure {
    if let Some(db) = e.as_db_error() {
        SourceFailure::Statement {
            sqlstate: Some(db.code().code().to_string()),
            message: db.message().to_string(),
        }
    } else {
        // Closed, I/O error or protocol desynchronisation: the connection is unusable.
        SourceFailure::ConnectionLost(e.to_string())
    }
}

/// Run `sql` and send its rows as batches; true when at least one batch was sent.
async fn fetch(
    client: &tokio_postgres::Client,
    sql: &str,
    schema: &SchemaRef,
    sender: &BatchSender,
) -> std::result::Result<bool, FetchError> {
    let stream = client
        .simple_query_raw(sql)
        .await
        .map_err(|e| (false, failure(&e)))?;
    futures::pin_mut!(stream);
    let mut rows = Outgoing::new(schema, sender);
    while let Some(message) = stream
        .try_next()
        .await
        .map_err(|e| rows.failed(failure(&e)))?
    {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let values = (0..row.len()).map(|i| row.try_get(i).ok().flatten());
        if !rows.push(values).await? {
            return Ok(true);
        }
    }
    rows.finish().await
}

/// One statement's connector: the pool, and how a PostgreSQL statement is stopped (a
/// cancel request, then the connection closed rather than pooled: a late cancel would
/// stop the next statement run on it).
struct OneStatement {
    settings: Arc<Settings>,
    pool: Pool,
}

#[async_trait]
impl warehouse::Connector for OneStatement {
    type Connection = deadpool_postgres::Object;

    fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn connect(&self) -> Result<Self::Connection> {
        connection(&self.settings, &self.pool).await
    }

    async fn fetch(
        &self,
        connection: &mut Self::Connection,
        sql: &str,
        schema: &SchemaRef,
        sender: &BatchSender,
    ) -> std::result::Result<bool, FetchError> {
        fetch(connection, sql, schema, sender).await
    }

    async fn stop(&self, connection: Self::Connection) {
        let token = connection.cancel_token();
        let detached = deadpool_postgres::Object::take(connection);
        if let Err(e) = token.cancel_query(NoTls).await {
            tracing::warn!(source = %self.settings.name, error = %e, "cancel request failed");
        }
        drop(detached);
    }

    fn discard(&self, connection: Self::Connection) {
        drop(deadpool_postgres::Object::take(connection));
    }
}

#[async_trait]
impl SQLExecutor for Postgres {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn compute_context(&self) -> Option<String> {
        Some(format!(
            "postgres:{}:{}",
            self.settings.name, self.settings.url
        ))
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        super::dialect::postgres()
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        _filters: &[Arc<dyn PhysicalExpr>],
    ) -> DFResult<SendableRecordBatchStream> {
        if let Some(nothing) = warehouse::captured(query, &schema) {
            return Ok(nothing);
        }
        tracing::info!(source = %self.settings.name, sql = %query, "pushed down");
        let settings = Arc::clone(&self.settings);
        let pool = self.pool.clone();
        let sql = query.to_string();
        let stream_schema = Arc::clone(&schema);
        let busy = self.usage.start();
        Ok(warehouse::spawn_stream(schema, move |sender| async move {
            let _busy = busy;
            let statement = OneStatement { settings, pool };
            warehouse::run(&statement, &sql, &stream_schema, &sender).await
        }))
    }

    async fn table_names(&self) -> DFResult<Vec<String>> {
        Err(DataFusionError::NotImplemented(
            "kpitables registers the model's tables by name".into(),
        ))
    }

    async fn get_table_schema(&self, table_name: &str) -> DFResult<SchemaRef> {
        let columns = self
            .columns(table_name)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(warehouse::table_schema(SourceKind::Postgres, &columns))
    }
}

#[async_trait]
impl super::Probe for Postgres {
    fn source_name(&self) -> &str {
        &self.settings.name
    }
    async fn ping(&self) -> Result<()> {
        Postgres::ping(self).await
    }
    fn pool(&self) -> (usize, usize) {
        let status = self.pool.status();
        (
            status.size.saturating_sub(status.available),
            status.max_size,
        )
    }
}
