//! What the two warehouse connectors share: settings from the model, column types read
//! from `information_schema`, and running one statement on a background task whose
//! batches stream to the engine, with a timeout and cancellation.
//!
//! A statement runs on its own task and sends batches through a small channel. When the
//! engine stops reading (the client cancelled, disconnected or the query failed
//! elsewhere), the channel closes and the connector cancels the statement on the
//! warehouse; when `query_timeout_secs` passes, it does the same and reports a timeout.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use tokio::sync::mpsc;

use super::text_rows::{BATCH_ROWS, TextRows};
use crate::error::{Error, SourceFailure};
use crate::model::{Source, SourceKind};

/// Connection settings of one warehouse source, from the model (and the password from
/// the environment, through the server configuration).
#[derive(Clone)]
pub struct Settings {
    /// The model's name of the source (used in every message).
    pub name: String,
    /// The connection URL, without a password.
    pub url: String,
    /// The password, if any. Never logged or shown.
    pub password: Option<String>,
    /// The schema (PostgreSQL) or database (MySQL) holding the tables.
    pub schema: Option<String>,
    /// Most connections open at once.
    pub pool_size: usize,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long a statement may run.
    pub query_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("schema", &self.schema)
            .finish()
    }
}

impl Settings {
    /// Settings of `source`; `password` was looked up from its `password_env`.
    pub fn new(source: &Source, password: Option<String>) -> Settings {
        Settings {
            name: source.name.get_ref().clone(),
            url: source
                .url
                .as_ref()
                .map(|u| u.get_ref().clone())
                .unwrap_or_default(),
            password,
            schema: source.schema.clone(),
            pool_size: source.pool_size.unwrap_or(8).max(1),
            connect_timeout: Duration::from_secs(source.connect_timeout_secs.unwrap_or(10).max(1)),
            query_timeout: Duration::from_secs(source.query_timeout_secs.unwrap_or(300).max(1)),
        }
    }

    /// An error of this source.
    pub fn error(&self, failure: SourceFailure) -> Error {
        Error::Source {
            source_name: self.name.clone(),
            failure,
        }
    }

    /// The same error as the engine carries it.
    pub fn engine_error(&self, failure: SourceFailure) -> DataFusionError {
        DataFusionError::External(Box::new(self.error(failure)))
    }
}

/// One column of a warehouse table as `information_schema.columns` describes it.
#[derive(Debug, Clone)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// `data_type` (PostgreSQL: `numeric`, `timestamp with time zone`; MySQL: `decimal`).
    pub data_type: String,
    /// MySQL's `column_type` (`tinyint(1)`, `bigint unsigned`); empty for PostgreSQL.
    pub column_type: String,
    /// Numeric precision, when the type has one.
    pub precision: Option<i64>,
    /// Numeric scale, when the type has one.
    pub scale: Option<i64>,
}

/// The Arrow schema of a warehouse table, from its columns.
pub fn table_schema(kind: SourceKind, columns: &[ColumnInfo]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, arrow_type(kind, c), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The Arrow type a warehouse column is read as. Types with no better match are read as
/// text.
pub fn arrow_type(kind: SourceKind, c: &ColumnInfo) -> DataType {
    let data_type = c.data_type.to_ascii_lowercase();
    let column_type = c.column_type.to_ascii_lowercase();
    let decimal = || {
        let precision = c.precision.unwrap_or(38).clamp(1, 38) as u8;
        let default_scale = if c.precision.is_none() { 10 } else { 0 };
        let scale = c
            .scale
            .unwrap_or(default_scale)
            .clamp(0, i64::from(precision)) as i8;
        DataType::Decimal128(precision, scale)
    };
    match (kind, data_type.as_str()) {
        (_, "smallint") => DataType::Int16,
        (SourceKind::Mysql, "tinyint") if column_type.starts_with("tinyint(1)") => {
            DataType::Boolean
        }
        (_, "tinyint") => DataType::Int16,
        (_, "integer" | "int" | "mediumint") if column_type.contains("unsigned") => DataType::Int64,
        (_, "integer" | "int" | "mediumint") => DataType::Int32,
        (_, "bigint") if column_type.contains("unsigned") => DataType::Decimal128(20, 0),
        (_, "bigint") => DataType::Int64,
        (_, "real" | "float") => DataType::Float32,
        (_, "double precision" | "double") => DataType::Float64,
        (_, "numeric" | "decimal") => decimal(),
        (_, "boolean" | "bool") => DataType::Boolean,
        (_, "date") => DataType::Date32,
        // MySQL's TIMESTAMP is stored in UTC and shown in the session's zone (UTC for
        // kpitables' connections): an instant, as PostgreSQL's timestamptz.
        (SourceKind::Postgres, "timestamp with time zone") | (SourceKind::Mysql, "timestamp") => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        (_, "timestamp without time zone" | "timestamp" | "datetime") => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        _ => DataType::Utf8,
    }
}

/// The statement a federation plan node sends to its warehouse, without running it.
///
/// The node computes its final SQL (its plan unparsed in the source's dialect, then each
/// rewrite stage of datafusion-federation and our own AST fixes) only inside `execute`,
/// and keeps no other copy: the text is what the executor receives. So the node is
/// executed here with the capture on, and both connectors' [`SQLExecutor::execute`]
/// hand the statement to [`captured`] and return an empty stream instead of running it.
/// The capture is per thread and lasts only the synchronous call.
///
/// [`SQLExecutor::execute`]: datafusion_federation::sql::SQLExecutor::execute
pub fn statement_sent(
    node: &datafusion_federation::sql::VirtualExecutionPlan,
) -> Result<String, DataFusionError> {
    use datafusion::execution::TaskContext;
    use datafusion::physical_plan::ExecutionPlan;
    CAPTURE.with_borrow_mut(|c| *c = Capture::Waiting);
    let run = node.execute(0, Arc::new(TaskContext::default()));
    let got = CAPTURE.with_borrow_mut(|c| std::mem::replace(c, Capture::Off));
    drop(run?);
    match got {
        Capture::Got(sql) => Ok(sql),
        Capture::Off | Capture::Waiting => Err(DataFusionError::Internal(format!(
            "the executor of source \"{}\" did not report its statement",
            node.executor().name()
        ))),
    }
}

/// Called first by a connector's `execute`: while [`statement_sent`] asks, the statement
/// is recorded and an empty stream returned, so nothing reaches the warehouse.
pub fn captured(query: &str, schema: &SchemaRef) -> Option<SendableRecordBatchStream> {
    CAPTURE.with_borrow_mut(|c| match c {
        Capture::Waiting => {
            *c = Capture::Got(query.to_string());
            Some(
                Box::pin(datafusion::physical_plan::EmptyRecordBatchStream::new(
                    Arc::clone(schema),
                )) as SendableRecordBatchStream,
            )
        }
        Capture::Off | Capture::Got(_) => None,
    })
}

/// Where [`statement_sent`] stands on this thread.
enum Capture {
    Off,
    Waiting,
    Got(String),
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Capture> = const { std::cell::RefCell::new(Capture::Off) };
}

/// The stream the engine reads while `job` runs on its own task and sends batches.
///
/// `job` receives the sender; it must stop when a send fails (the engine stopped
/// reading). Its error, if any, ends the stream.
pub fn spawn_stream<F, Fut>(schema: SchemaRef, job: F) -> SendableRecordBatchStream
where
    F: FnOnce(BatchSender) -> Fut,
    Fut: Future<Output = Result<(), DataFusionError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    let sender = BatchSender { tx: tx.clone() };
    let work = job(sender);
    tokio::spawn(async move {
        if let Err(e) = work.await {
            let _ = tx.send(Err(e)).await;
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// Sends batches from a statement's task to the engine.
#[derive(Debug, Clone)]
pub struct BatchSender {
    tx: mpsc::Sender<Result<RecordBatch, DataFusionError>>,
}

impl BatchSender {
    /// Send a batch; false when the engine no longer reads (stop and cancel).
    pub async fn send(&self, batch: RecordBatch) -> bool {
        self.tx.send(Ok(batch)).await.is_ok()
    }

    /// Resolves when the engine stops reading.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// True once the engine stopped reading (a statement that ended early because of
    /// that must still be cancelled in the warehouse).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A fetch's failure, and whether a batch had been sent before it (a statement that
/// sent rows is not retried).
pub type FetchError = (bool, SourceFailure);

/// The rows of one statement, as a connector reads them: gathered into batches of
/// [`BATCH_ROWS`] and sent to the engine as each fills.
pub struct Outgoing<'s> {
    rows: TextRows,
    sender: &'s BatchSender,
    sent: bool,
}

impl<'s> Outgoing<'s> {
    /// Rows of `schema`, for `sender`.
    pub fn new(schema: &SchemaRef, sender: &'s BatchSender) -> Outgoing<'s> {
        Outgoing {
            rows: TextRows::new(Arc::clone(schema)),
            sender,
            sent: false,
        }
    }

    /// True once a batch was sent.
    pub fn sent(&self) -> bool {
        self.sent
    }

    /// A failure of the warehouse, with whether a batch was sent before it.
    pub fn failed(&self, failure: SourceFailure) -> FetchError {
        (self.sent, failure)
    }

    /// Append one row (one text value per column, None for NULL) and send the batch
    /// once it is full; false when the engine no longer reads (stop fetching).
    pub async fn push<'a>(
        &mut self,
        values: impl IntoIterator<Item = Option<&'a str>>,
    ) -> Result<bool, FetchError> {
        self.rows
            .push(values)
            .map_err(|m| self.failed(SourceFailure::Value(m)))?;
        if self.rows.len() < BATCH_ROWS {
            return Ok(true);
        }
        let batch = self
            .rows
            .finish()
            .map_err(|m| self.failed(SourceFailure::Value(m)))?;
        let read = self.sender.send(batch).await;
        self.sent = true;
        Ok(read)
    }

    /// Send the rows left; true when at least one batch was sent.
    pub async fn finish(mut self) -> Result<bool, FetchError> {
        if !self.rows.is_empty() {
            let batch = self
                .rows
                .finish()
                .map_err(|m| self.failed(SourceFailure::Value(m)))?;
            self.sender.send(batch).await;
            self.sent = true;
        }
        Ok(self.sent)
    }
}

/// How a statement's run ended, besides success.
#[derive(Debug)]
pub enum Interrupted {
    /// The engine stopped reading: the client cancelled or went away.
    Abandoned,
    /// `query_timeout` passed.
    TimedOut,
}

/// Run `fetch` until it ends, the engine stops reading, or the timeout passes.
pub async fn guard<T>(
    sender: &BatchSender,
    timeout: Duration,
    fetch: impl Future<Output = T>,
) -> Result<T, Interrupted> {
    tokio::select! {
        result = tokio::time::timeout(timeout, fetch) => result.map_err(|_| Interrupted::TimedOut),
        () = sender.closed() => Err(Interrupted::Abandoned),
    }
}

/// What a connector does around one statement on one of its pooled connections; the
/// loop around it ([`run`]: retry, cancel, recycle) is the same for every warehouse.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// A connection taken from the pool.
    type Connection: Send;

    /// The source's settings (its name, timeouts).
    fn settings(&self) -> &Settings;

    /// A connection from the pool, within the connect timeout.
    async fn connect(&self) -> crate::error::Result<Self::Connection>;

    /// Run `sql` on `connection`, sending its rows to `sender`; `Ok(true)` when the
    /// engine stopped reading.
    async fn fetch(
        &self,
        connection: &mut Self::Connection,
        sql: &str,
        schema: &SchemaRef,
        sender: &BatchSender,
    ) -> Result<bool, FetchError>;

    /// Stop the statement running on `connection`, so that neither a late cancel nor
    /// late rows reach the next statement run on it (close it, or stop the statement
    /// while the connection is still held).
    async fn stop(&self, connection: Self::Connection);

    /// `connection` broke before any row: let it go without running on it again.
    fn discard(&self, connection: Self::Connection);
}

/// Run one statement through `connector`: its rows to `sender`; the statement stopped
/// in the warehouse when the engine stops reading or `query_timeout` passes; retried
/// once on a fresh connection when the connection turns out dead before any row arrived
/// (the warehouse restarted).
pub async fn run<C: Connector>(
    connector: &C,
    sql: &str,
    schema: &SchemaRef,
    sender: &BatchSender,
) -> datafusion::error::Result<()> {
    let settings = connector.settings();
    for attempt in 0..2 {
        let mut connection = connector
            .connect()
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let outcome = guard(
            sender,
            settings.query_timeout,
            connector.fetch(&mut connection, sql, schema, sender),
        )
        .await;
        match outcome {
            Ok(Ok(_)) if sender.is_closed() => {
                // The engine stopped reading mid-stream: stop the statement there too.
                connector.stop(connection).await;
                return Ok(());
            }
            Ok(Ok(_)) => return Ok(()),
            Ok(Err((false, SourceFailure::ConnectionLost(_)))) if attempt == 0 => {
                tracing::info!(source = %settings.name, "connection lost before any row: retrying on a new connection");
                connector.discard(connection);
            }
            Ok(Err((_, failure))) => return Err(settings.engine_error(failure)),
            Err(interrupted) => {
                connector.stop(connection).await;
                return match interrupted {
                    Interrupted::Abandoned => Ok(()),
                    Interrupted::TimedOut => Err(settings
                        .engine_error(SourceFailure::Timeout(settings.query_timeout.as_secs()))),
                };
            }
        }
    }
    Err(settings.engine_error(SourceFailure::ConnectionLost(
        "the connection broke twice".into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(data_type: &str, column_type: &str, p: Option<i64>, s: Option<i64>) -> ColumnInfo {
        ColumnInfo {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            precision: p,
            scale: s,
        }
    }

    #[test]
    fn warehouse_types_map_to_the_types_served() {
        let pg = SourceKind::Postgres;
        let my = SourceKind::Mysql;
        assert_eq!(
            arrow_type(pg, &column("numeric", "", Some(12), Some(2))),
            DataType::Decimal128(12, 2)
        );
        assert_eq!(
            arrow_type(my, &column("decimal", "decimal(12,2)", Some(12), Some(2))),
            DataType::Decimal128(12, 2)
        );
        assert_eq!(
            arrow_type(my, &column("tinyint", "tinyint(1)", Some(3), Some(0))),
            DataType::Boolean
        );
        assert_eq!(
            arrow_type(pg, &column("timestamp with time zone", "", None, None)),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            arrow_type(my, &column("datetime", "datetime", None, None)),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(
            arrow_type(pg, &column("numeric", "", None, None)),
            DataType::Decimal128(38, 10)
        );
        assert_eq!(
            arrow_type(pg, &column("jsonb", "", None, None)),
            DataType::Utf8
        );
    }

    #[test]
    fn settings_never_print_the_password() {
        let s = Settings {
            name: "w".into(),
            url: "postgres://u@h/db".into(),
            password: Some("hunter2".into()),
            schema: None,
            pool_size: 1,
            connect_timeout: Duration::from_secs(1),
            query_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}

/// How much of a source's pool is in use: statements running on it now.
#[derive(Debug, Default)]
pub struct Usage {
    in_flight: std::sync::atomic::AtomicUsize,
}

/// One statement running on a source, counted until dropped.
#[derive(Debug)]
pub struct Busy(Arc<Usage>);

impl Usage {
    /// Count a statement that starts.
    pub fn start(self: &Arc<Self>) -> Busy {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// Statements running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
