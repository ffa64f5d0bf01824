//! The audit trail: every statement that reads a view or fails, with who asked (user,
//! client application), what (views, metrics, dimensions, filters), what it cost (rows,
//! duration), the SQL pushed to each source, and the outcome. Written as JSON lines to a
//! file rotated by size, and kept in memory for `kp.audit` (the latest
//! [`RECENT`] records).
//!
//! Invariant: recording never fails a query; a write error is logged once per record.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many records `kp.audit` keeps.
pub const RECENT: usize = 10_000;

/// One audited statement.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// When it started.
    #[serde(serialize_with = "rfc3339")]
    pub time: DateTime<Utc>,
    /// The login role.
    pub user: String,
    /// The client's `application_name`.
    pub application: String,
    /// Views read.
    pub views: Vec<String>,
    /// Metrics computed.
    pub metrics: Vec<String>,
    /// Dimensions grouped by.
    pub dimensions: Vec<String>,
    /// The query's own row conditions, as written against the views.
    pub filters: Vec<String>,
    /// Rows returned (none for a failed statement).
    pub rows: Option<u64>,
    /// Milliseconds from start to the last row.
    pub duration_ms: u64,
    /// The statement sent to each warehouse source, as `(source, SQL)`.
    pub pushed: Vec<(String, String)>,
    /// `ok`, `error`, or `interrupted` (the client stopped reading before the last row).
    pub outcome: &'static str,
    /// The SQLSTATE of a failure.
    pub sqlstate: Option<String>,
    /// The message of a failure.
    pub message: Option<String>,
}

fn rfc3339<S: serde::Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

struct Sink {
    path: PathBuf,
    file: File,
    written: u64,
}

/// Where records go (see the module docs).
pub struct Audit {
    sink: Option<Mutex<Sink>>,
    max_bytes: u64,
    keep: usize,
    recent: Mutex<VecDeque<Record>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("max_bytes", &self.max_bytes)
            .field("keep", &self.keep)
            .finish()
    }
}

impl Audit {
    /// An audit trail writing to `path` (if given), rotated when a file would pass
    /// `max_bytes`, keeping `keep` older files (`path.1` is the newest of them).
    pub fn open(path: Option<PathBuf>, max_bytes: u64, keep: usize) -> crate::error::Result<Audit> {
        let sink = match path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        crate::error::Error::io(format!("cannot create {}", dir.display()), e)
                    })?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        crate::error::Error::io(
                            format!("cannot open the audit file {}", path.display()),
                            e,
                        )
                    })?;
                let written = file.metadata().map(|m| m.len()).unwrap_or(0);
                Some(Mutex::new(Sink {
                    path,
                    file,
                    written,
                }))
            }
            None => None,
        };
        Ok(Audit {
            sink,
            max_bytes: max_bytes.max(1024),
            keep: keep.max(1),
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// Record one statement.
    pub fn record(&self, record: Record) {
        if let Some(sink) = &self.sink
            && let Ok(mut sink) = sink.lock()
        {
            match serde_json::to_string(&record) {
                Ok(mut line) => {
                    line.push('\n');
                    if let Err(e) = self.write(&mut sink, &line) {
                        tracing::error!(error = %e, path = %sink.path.display(), "cannot write the audit record");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode the audit record"),
            }
        }
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(record);
        }
    }

    fn write(&self, sink: &mut Sink, line: &str) -> std::io::Result<()> {
        if sink.written > 0 && sink.written + line.len() as u64 > self.max_bytes {
            // path.(keep-1) → path.keep, ..., path → path.1
            let numbered = |n: usize| {
                let mut p = sink.path.clone().into_os_string();
                p.push(format!(".{n}"));
                PathBuf::from(p)
            };
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1))?;
                }
            }
            std::fs::rename(&sink.path, numbered(1))?;
            sink.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&sink.path)?;
            sink.written = 0;
        }
        sink.file.write_all(line.as_bytes())?;
        sink.written += line.len() as u64;
        Ok(())
    }

    /// The latest records, oldest first.
    pub fn recent(&self) -> Vec<Record> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A statement being answered, recorded once when it is dropped: after its last row
/// (`ok`), after an error while streaming (`error`), or when the client goes away or the
/// statement is cancelled before the end (`interrupted`). Rows and duration are counted
/// up to that point.
#[derive(Debug)]
pub struct Pending {
    audit: std::sync::Arc<Audit>,
    record: Option<Record>,
    started: std::time::Instant,
    rows: u64,
    finished: bool,
    /// The statement's span, entered again for the closing log line: the rows are
    /// streamed (and this is dropped) after the statement's handler has returned.
    span: tracing::Span,
}

impl Pending {
    /// Record `record`, a statement that started at `started` (its rows, duration and
    /// outcome are filled in here).
    pub fn new(
        audit: std::sync::Arc<Audit>,
        record: Record,
        started: std::time::Instant,
    ) -> Pending {
        Pending {
            audit,
            record: Some(record),
            started,
            rows: 0,
            finished: false,
            span: tracing::Span::current(),
        }
    }

    /// One more row sent.
    pub fn row(&mut self) {
        self.rows += 1;
    }

    /// The last row was sent.
    pub fn finished(&mut self) {
        self.finished = true;
    }

    /// The statement failed while streaming.
    pub fn failed(&mut self, sqlstate: String, message: String) {
        if let Some(record) = &mut self.record
            && record.sqlstate.is_none()
        {
            record.sqlstate = Some(sqlstate);
            record.message = Some(message);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        record.duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        record.rows = Some(self.rows);
        record.outcome = if record.sqlstate.is_some() {
            "error"
        } else if self.finished {
            "ok"
        } else {
            "interrupted"
        };
        let _statement = self.span.enter();
        tracing::info!(
            user = %record.user,
            rows = self.rows,
            duration_ms = record.duration_ms,
            outcome = record.outcome,
            "query finished"
        );
        crate::telemetry::global().query(
            &record.views,
            !record.pushed.is_empty(),
            record.outcome,
            self.rows,
            self.started.elapsed(),
        );
        if let Some(sqlstate) = &record.sqlstate {
            crate::telemetry::global().error(sqlstate);
        }
        self.audit.record(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: &str) -> Record {
        Record {
            time: Utc::now(),
            user: user.into(),
            application: "psql".into(),
            views: vec!["sales".into()],
            metrics: vec!["revenue".into()],
            dimensions: vec!["region".into()],
            filters: vec!["channel = 'online'".into()],
            rows: Some(5),
            duration_ms: 3,
            pushed: vec![],
            outcome: "ok",
            sqlstate: None,
            message: None,
        }
    }

    #[test]
    fn records_are_json_lines_rotated_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::open(Some(path.clone()), 1024, 2).unwrap();
        for i in 0..40 {
            audit.record(record(&format!("user{i}")));
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let older = std::fs::read_to_string(dir.path().join("audit.jsonl.1")).unwrap();
        assert!(dir.path().join("audit.jsonl.2").exists());
        assert!(!dir.path().join("audit.jsonl.3").exists());
        for line in current.lines().chain(older.lines()) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["metrics"][0], "revenue");
            assert_eq!(value["outcome"], "ok");
        }
        assert!(current.len() <= 1024 && older.len() <= 1024);
        assert!(current.lines().last().unwrap().contains("user39"));
        assert_eq!(audit.recent().len(), 40);
    }

    #[test]
    fn a_pending_statement_is_recorded_once_with_its_outcome() {
        let audit = std::sync::Arc::new(Audit::open(None, 1024, 1).unwrap());
        let mut done = Pending::new(audit.clone(), record("a"), std::time::Instant::now());
        done.row();
        done.row();
        done.finished();
        drop(done);
        let mut cut = Pending::new(audit.clone(), record("b"), std::time::Instant::now());
        cut.row();
        drop(cut);
        let mut failed = Pending::new(audit.clone(), record("c"), std::time::Instant::now());
        failed.failed("57014".into(), "canceling statement".into());
        failed.finished();
        drop(failed);
        let got: Vec<(String, Option<u64>, &str, Option<String>)> = audit
            .recent()
            .into_iter()
            .map(|r| (r.user, r.rows, r.outcome, r.sqlstate))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".to_string(), Some(2), "ok", None),
                ("b".to_string(), Some(1), "interrupted", None),
                ("c".to_string(), Some(0), "error", Some("57014".to_string())),
            ]
        );
    }
}
