//! What a session creates with SQL statements and keeps between them: cursors
//! (`DECLARE`/`FETCH`/`MOVE`/`CLOSE`), prepared statements (`PREPARE`/`EXECUTE`/
//! `DEALLOCATE`), savepoints and temporary tables ([`crate::temp`]). Stored as a pgwire session extension, one per
//! connection, dropped with it.
//!
//! Cursors scan forward only: a cursor keeps the query's open record batch stream and
//! pulls from it as FETCH asks, so a large result is never held in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::sql::FetchCount;

/// An open cursor.
pub struct Cursor {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
    /// Rows of the last batch not fetched yet.
    pending: Option<RecordBatch>,
    /// WITH HOLD: survives the end of its transaction.
    hold: bool,
}

impl Cursor {
    /// A cursor over `stream`.
    pub fn new(stream: SendableRecordBatchStream, hold: bool) -> Cursor {
        Cursor {
            schema: stream.schema(),
            stream,
            pending: None,
            hold,
        }
    }

    /// The next `count` rows (fewer at the end), as batches.
    pub async fn take(&mut self, count: FetchCount) -> Result<Vec<RecordBatch>> {
        let mut wanted = match count {
            FetchCount::Rows(n) => usize::try_from(n).unwrap_or(usize::MAX),
            FetchCount::All => usize::MAX,
        };
        let mut out = Vec::new();
        while wanted > 0 {
            let batch = match self.pending.take() {
                Some(batch) => batch,
                None => match self.stream.next().await {
                    Some(batch) => batch?,
                    None => break,
                },
            };
            if batch.num_rows() > wanted {
                out.push(batch.slice(0, wanted));
                self.pending = Some(batch.slice(wanted, batch.num_rows() - wanted));
                wanted = 0;
            } else {
                wanted -= batch.num_rows();
                out.push(batch);
            }
        }
        Ok(out)
    }
}

/// The cursors, prepared statements and savepoints of one session.
#[derive(Default)]
pub struct SessionObjects {
    cursors: tokio::sync::Mutex<HashMap<String, Cursor>>,
    prepared: Mutex<HashMap<String, Statement>>,
    savepoints: Mutex<Vec<String>>,
    /// The session's temporary tables.
    pub temp: crate::temp::TempTables,
}

fn poisoned<T>(_: T) -> Error {
    Error::Internal("session objects lock poisoned".into())
}

impl SessionObjects {
    /// Open cursor `name`.
    pub async fn declare(&self, name: &str, cursor: Cursor) -> Result<()> {
        let mut cursors = self.cursors.lock().await;
        if cursors.contains_key(name) {
            return Err(Error::DuplicateCursor(name.to_string()));
        }
        cursors.insert(name.to_string(), cursor);
        Ok(())
    }

    /// The row schema of cursor `name`.
    pub async fn cursor_schema(&self, name: &str) -> Result<SchemaRef> {
        let cursors = self.cursors.lock().await;
        cursors
            .get(name)
            .map(|c| c.schema.clone())
            .ok_or_else(|| Error::UnknownCursor(name.to_string()))
    }

    /// The next rows of cursor `name`.
    pub async fn fetch(&self, name: &str, count: FetchCount) -> Result<Vec<RecordBatch>> {
        let mut cursors = self.cursors.lock().await;
        let cursor = cursors
            .get_mut(name)
            .ok_or_else(|| Error::UnknownCursor(name.to_string()))?;
        cursor.take(count).await
    }

    /// Close cursor `name`, or every cursor (None).
    pub async fn close(&self, name: Option<&str>) -> Result<()> {
        let mut cursors = self.cursors.lock().await;
        match name {
            None => cursors.clear(),
            Some(name) => {
                cursors
                    .remove(name)
                    .ok_or_else(|| Error::UnknownCursor(name.to_string()))?;
            }
        }
        Ok(())
    }

    /// The transaction ended: cursors without HOLD close, savepoints are gone.
    pub async fn end_transaction(&self) -> Result<()> {
        self.cursors.lock().await.retain(|_, c| c.hold);
        self.savepoints.lock().map_err(poisoned)?.clear();
        Ok(())
    }

    /// Keep `query` as prepared statement `name`.
    pub fn prepare(&self, name: &str, query: Statement) -> Result<()> {
        let mut prepared = self.prepared.lock().map_err(poisoned)?;
        if prepared.contains_key(name) {
            return Err(Error::DuplicatePreparedStatement(name.to_string()));
        }
        prepared.insert(name.to_string(), query);
        Ok(())
    }

    /// Prepared statement `name`.
    pub fn prepared(&self, name: &str) -> Result<Statement> {
        let prepared = self.prepared.lock().map_err(poisoned)?;
        prepared
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownPreparedStatement(name.to_string()))
    }

    /// Forget prepared statement `name`, or all of them (None).
    pub fn deallocate(&self, name: Option<&str>) -> Result<()> {
        let mut prepared = self.prepared.lock().map_err(poisoned)?;
        match name {
            None => prepared.clear(),
            Some(name) => {
                prepared
                    .remove(name)
                    .ok_or_else(|| Error::UnknownPreparedStatement(name.to_string()))?;
            }
        }
        Ok(())
    }

    /// Set savepoint `name`.
    pub fn savepoint(&self, name: &str) -> Result<()> {
        self.savepoints
            .lock()
            .map_err(poisoned)?
            .push(name.to_string());
        Ok(())
    }

    /// Roll back to savepoint `name` (kept) or release it (removed with later ones).
    pub fn unwind_to(&self, name: &str, release: bool) -> Result<()> {
        let mut savepoints = self.savepoints.lock().map_err(poisoned)?;
        let position = savepoints
            .iter()
            .rposition(|s| s == name)
            .ok_or_else(|| Error::UnknownSavepoint(name.to_string()))?;
        savepoints.truncate(if release { position } else { position + 1 });
        Ok(())
    }

    /// `DISCARD ALL`: close every cursor, forget every prepared statement.
    pub async fn discard_all(&self) -> Result<()> {
        self.cursors.lock().await.clear();
        self.prepared.lock().map_err(poisoned)?.clear();
        self.temp.clear();
        Ok(())
    }
}
