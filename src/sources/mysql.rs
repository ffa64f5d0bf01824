//! MySQL-protocol warehouses (MariaDB, MySQL, and the distributed StarRocks and Doris).
//!
//! A `mysql_async` pool per source. Statements arrive as MySQL SQL from the federation
//! planner (with the dialect fixes of [`super::dialect`]) and run through the text
//! protocol, so every value comes back as text and is converted by
//! [`super::text_rows`]. Each connection works in UTC with `utf8mb4`, read only; those
//! settings are made once, when it opens. Idle connections stay pooled for
//! [`IDLE_CONNECTION_TTL`] and are not reset when they come back (`COM_RESET_CONNECTION`
//! would undo the settings, and the statements sent here change no session state).
//!
//! A statement is cancelled with `KILL QUERY` from a second connection. The connection
//! of a cancelled or timed-out statement goes back to the pool's recycler, which reads
//! what is left of its answer before it serves again: late rows never reach another
//! statement.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::physical_plan::{PhysicalExpr, SendableRecordBatchStream};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::sql::{AstAnalyzer, SQLExecutor};
use futures::TryStreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, Value};

use super::warehouse::{self, BatchSender, ColumnInfo, FetchError, Outgoing, Settings, Usage};
use crate::error::{Result, SourceFailure};
use crate::model::SourceKind;

/// How long an idle connection stays in the pool. `mysql_async` keeps none by default
/// (its idle bound is the pool's minimum, 0 here, unless this is set), which opened a
/// connection, with its five setup round trips, for every statement.
const IDLE_CONNECTION_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// One MySQL-protocol source: a connection pool and its settings.
pub struct Mysql {
    settings: Arc<Settings>,
    pool: Pool,
    /// The pool's connection options, for the connection a cancel is sent on.
    opts: Opts,
    usage: Arc<Usage>,
}

impl std::fmt::Debug for Mysql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mysql")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Mysql {
    /// A pool for the source (connections open on first use).
    pub fn new(settings: Settings) -> Result<Mysql> {
        let url = match settings.url.split_once("://") {
            Some(("mariadb", rest)) => format!("mysql://{rest}"),
            _ => settings.url.clone(),
        };
        let opts = Opts::from_url(&url)
            .map_err(|e| settings.error(SourceFailure::Connect(format!("invalid url: {e}"))))?;
        let constraints = PoolConstraints::new(0, settings.pool_size)
            .ok_or_else(|| settings.error(SourceFailure::Connect("invalid pool_size".into())))?;
        let mut builder = OptsBuilder::from_opts(opts)
            .init(vec![
                "SET time_zone = '+00:00'",
                "SET NAMES utf8mb4",
                "SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')",
                "SET SESSION TRANSACTION READ ONLY",
            ])
            .prefer_socket(false)
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_inactive_connection_ttl(IDLE_CONNECTION_TTL)
                    .with_reset_connection(false),
            );
        if let Some(password) = &settings.password {
            builder = builder.pass(Some(password.clone()));
        }
        if let Some(schema) = &settings.schema {
            builder = builder.db_name(Some(schema.clone()));
        }
        let opts = Opts::from(builder.clone());
        Ok(Mysql {
            pool: Pool::new(builder),
            opts,
            settings: Arc::new(settings),
            usage: Arc::default(),
        })
    }

    /// Check that the source answers: `SELECT 1` on a pooled connection.
    pub async fn ping(&self) -> Result<()> {
        use mysql_async::prelude::Queryable;
        let mut conn = connection(&self.settings, &self.pool).await?;
        let answered =
            tokio::time::timeout(self.settings.connect_timeout, conn.query_drop("SELECT 1"))
                .await
                .map_err(|_| {
                    self.settings.error(SourceFailure::Connect(format!(
                        "no answer within {} s",
                        self.settings.connect_timeout.as_secs()
                    )))
                })?;
        answered.map_err(|e| self.settings.error(failure(&e)))
    }

    /// The columns of `table`, read from `information_schema.columns`.
    pub async fn columns(&self, table: &str) -> Result<Vec<ColumnInfo>> {
        let mut conn = connection(&self.settings, &self.pool).await?;
        let rows: Vec<ColumnRow> = conn
            .exec(
                "SELECT CAST(column_name AS CHAR), CAST(data_type AS CHAR), CAST(column_type AS CHAR), \
                        CAST(numeric_precision AS SIGNED), CAST(numeric_scale AS SIGNED) \
                 FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ? \
                 ORDER BY ordinal_position",
                (table,),
            )
            .await
            .map_err(|e| self.settings.error(failure(&e)))?;
        if rows.iter().any(|r| r.1.eq_ignore_ascii_case("timestamp")) {
            // Buckets of a TIMESTAMP column in a named zone use CONVERT_TZ, which gives
            // NULL when the server has no time zone tables.
            let missing: Option<Option<i64>> = conn
                .query_first(
                    "SELECT CAST(CONVERT_TZ('2000-01-01 00:00:00', '+00:00', 'Europe/Berlin') IS NULL AS SIGNED)",
                )
                .await
                .unwrap_or(None);
            if missing == Some(Some(1)) {
                tracing::warn!(
                    source = %self.settings.name,
                    table,
                    "the MySQL server has no time zone tables: TIMESTAMP grains in a named time zone would be NULL; load them (mysql_tzinfo_to_sql /usr/share/zoneinfo | mysql mysql) or use UTC"
                );
            }
        }
        Ok(rows
            .into_iter()
            .map(
                |(name, data_type, column_type, precision, scale)| ColumnInfo {
                    name,
                    data_type,
                    column_type,
                    precision,
                    scale,
                },
            )
            .collect())
    }
}

/// One row of the `information_schema.columns` query: name, data type, column type,
/// precision, scale.
type ColumnRow = (String, String, String, Option<i64>, Option<i64>);

async fn connection(settings: &Settings, pool: &Pool) -> Result<mysql_async::Conn> {
    match tokio::time::timeout(settings.connect_timeout, pool.get_conn()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(settings.error(SourceFailure::Connect(e.to_string()))),
        Err(_) => Err(settings.error(SourceFailure::Connect(format!(
            "no connection within {} s",
            settings.connect_timeout.as_secs()
        )))),
    }
}

fn failure(e: &mysql_async::Error) -> SourceFailure {
    match e {
        mysql_async::Error::Server(server) => SourceFailure::Statement {
            sqlstate: Some(server.state.clone()),
            message: server.message.clone(),
        },
        other => SourceFailure::ConnectionLost(other.to_string()),
    }
}

fn text(value: Option<&Value>) -> std::result::Result<Option<&str>, String> {
    match value {
        None | Some(Value::NULL) => Ok(None),
        Some(Value::Bytes(bytes)) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| "the source returned text that is not UTF-8".to_string()),
        Some(other) => Err(format!("unexpected binary value {other:?}")),
    }
}

async fn fetch(
    conn: &mut mysql_async::Conn,
    sql: &str,
    schema: &SchemaRef,
    sender: &BatchSender,
) -> std::result::Result<bool, FetchError> {
    let mut result = conn
        .query_iter(sql)
        .await
        .map_err(|e| (false, failure(&e)))?;
    let mut rows = Outgoing::new(schema, sender);
    {
        let stream = result
            .stream::<Row>()
            .await
            .map_err(|e| (false, failure(&e)))?;
        if let Some(mut stream) = stream {
            while let Some(row) = stream
                .try_next()
                .await
                .map_err(|e| rows.failed(failure(&e)))?
            {
                let values = (0..row.len())
                    .map(|i| text(row.as_ref(i)))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|m| rows.failed(SourceFailure::Value(m)))?;
                if !rows.push(values).await? {
                    return Ok(true);
                }
            }
        }
    }
    rows.finish().await
}

/// One statement's connector: the pool, and how a MySQL statement is stopped (`KILL
/// QUERY` from a connection of its own while the statement's connection is still held;
/// then the pool's recycler drains that connection).
struct OneStatement {
    settings: Arc<Settings>,
    pool: Pool,
    opts: Opts,
}

#[async_trait]
impl warehouse::Connector for OneStatement {
    type Connection = mysql_async::Conn;

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
        kill_query(&self.settings, &self.opts, connection.id()).await;
        drop(connection);
    }

    fn discard(&self, connection: Self::Connection) {
        drop(connection);
    }
}

/// Stop connection `id`'s statement from a connection of its own, opened for that (not
/// from the pool, which may be exhausted), while the caller still holds connection `id`:
/// once back in the pool it may run the next statement, which a late `KILL QUERY`
/// would stop.
async fn kill_query(settings: &Settings, opts: &Opts, id: u32) {
    match tokio::time::timeout(
        settings.connect_timeout,
        mysql_async::Conn::new(opts.clone()),
    )
    .await
    {
        Ok(Ok(mut killer)) => {
            if let Err(e) = killer.query_drop(format!("KILL QUERY {id}")).await {
                tracing::warn!(source = %settings.name, error = %e, "cancel failed");
            }
            let _ = killer.disconnect().await;
        }
        Ok(Err(e)) => tracing::warn!(source = %settings.name, error = %e, "cancel failed"),
        Err(_) => tracing::warn!(source = %settings.name, "cancel failed: no connection in time"),
    }
}

#[async_trait]
impl SQLExecutor for Mysql {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn compute_context(&self) -> Option<String> {
        Some(format!(
            "mysql:{}:{}",
            self.settings.name, self.settings.url
        ))
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        super::dialect::mysql()
    }

    fn ast_analyzer(&self) -> Option<AstAnalyzer> {
        Some(Box::new(|statement: Statement| {
            Ok(super::dialect::fix_mysql(statement))
        }))
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
        let opts = self.opts.clone();
        let sql = query.to_string();
        let stream_schema = Arc::clone(&schema);
        let busy = self.usage.start();
        Ok(warehouse::spawn_stream(schema, move |sender| async move {
            let _busy = busy;
            let statement = OneStatement {
                settings,
                pool,
                opts,
            };
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
        Ok(warehouse::table_schema(SourceKind::Mysql, &columns))
    }
}

#[async_trait]
impl super::Probe for Mysql {
    fn source_name(&self) -> &str {
        &self.settings.name
    }
    async fn ping(&self) -> Result<()> {
        Mysql::ping(self).await
    }
    fn pool(&self) -> (usize, usize) {
        (self.usage.in_flight(), self.settings.pool_size)
    }
}
