//! The audit trail: every statement that reads a view or fails, with who asked (user,
//! client application), what (views, metrics, dimensions, filters), what it cost (rows,
//! duration), the SQL pushed to each source, and the outcome. Written as JSON lines to a
//! file rotated by size, and kept in memory for `kp.audit` (the latest [`RECENT`]
//! records, as many of them as fit in [`RECENT_BYTES`]).
//!
//! Invariant: recording never fails a query. When the file cannot be written (a full
//! disk), the records are counted and the file is opened again at the next record; the
//! first record written after the gap is preceded by a line `{"event": "audit_gap",
//! "lost": N, "since": .., "until": .., "error": ..}`, so the trail says what it lacks
//! (the records themselves stay in `kp.audit`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// How many records `kp.audit` keeps.
pub const RECENT: usize = 10_000;

/// The most memory `kp.audit`'s records may hold together; the oldest go first. Each
/// text is cut to [`RECENT_TEXT_BYTES`], but a statement chooses how many conditions
/// (each one a filter of its record) it has, so the count alone bounds nothing.
pub const RECENT_BYTES: usize = 16 * 1024 * 1024;

/// The longest text (filter, pushed SQL, message) a record keeps in memory for
/// `kp.audit`; the file has it whole. A client sending megabyte literals cannot make the
/// recent records hold gigabytes.
pub const RECENT_TEXT_BYTES: usize = 4096;

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

impl Record {
    /// The record with each text a client chose (application name, filters, pushed
    /// statements, message) cut to [`RECENT_TEXT_BYTES`], marked with its length, and
    /// holding no more memory than that.
    fn bounded(mut self) -> Record {
        let cut = |text: &mut String| {
            if text.len() > RECENT_TEXT_BYTES {
                let mut end = RECENT_TEXT_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                let total = text.len();
                text.truncate(end);
                text.push_str(&format!("… ({total} bytes)"));
                // `truncate` keeps the whole text's allocation: give it back.
                text.shrink_to_fit();
            }
        };
        cut(&mut self.application);
        self.filters.iter_mut().for_each(cut);
        self.pushed.iter_mut().for_each(|(_, sql)| cut(sql));
        if let Some(m) = &mut self.message {
            cut(m);
        }
        self
    }

    /// The memory the record holds: itself, its lists and its texts.
    fn weight(&self) -> usize {
        use std::mem::size_of;
        let list = |l: &Vec<String>| {
            l.capacity() * size_of::<String>() + l.iter().map(String::capacity).sum::<usize>()
        };
        size_of::<Record>()
            + self.user.capacity()
            + self.application.capacity()
            + list(&self.views)
            + list(&self.metrics)
            + list(&self.dimensions)
            + list(&self.filters)
            + self.pushed.capacity() * size_of::<(String, String)>()
            + self
                .pushed
                .iter()
                .map(|(source, sql)| source.capacity() + sql.capacity())
                .sum::<usize>()
            + self.sqlstate.as_ref().map_or(0, String::capacity)
            + self.message.as_ref().map_or(0, String::capacity)
    }
}

/// The records kept for `kp.audit`, oldest first, and the memory they hold.
#[derive(Default)]
struct Recent {
    records: VecDeque<(Record, usize)>,
    bytes: usize,
}

impl Recent {
    /// Keep `record`, dropping the oldest past [`RECENT`] records or [`RECENT_BYTES`]
    /// (the newest is kept even alone over the budget).
    fn push(&mut self, record: Record) {
        let record = record.bounded();
        let weight = record.weight();
        self.bytes += weight;
        self.records.push_back((record, weight));
        while self.records.len() > RECENT || (self.bytes > RECENT_BYTES && self.records.len() > 1) {
            if let Some((_, old)) = self.records.pop_front() {
                self.bytes -= old;
            }
        }
    }
}

fn rfc3339<S: serde::Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

struct Sink {
    path: PathBuf,
    file: File,
    written: u64,
    /// Records not written since the file last failed.
    gap: Option<Gap>,
}

/// Records the file lost.
struct Gap {
    lost: u64,
    since: DateTime<Utc>,
    error: String,
}

/// Where records go (see the module docs).
pub struct Audit {
    sink: Option<Mutex<Sink>>,
    max_bytes: u64,
    keep: usize,
    recent: Mutex<Recent>,
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
                    gap: None,
                }))
            }
            None => None,
        };
        Ok(Audit {
            sink,
            max_bytes: max_bytes.max(1024),
            keep: keep.max(1),
            recent: Mutex::new(Recent::default()),
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
                    match self.write_after_gap(&mut sink, &line, record.time) {
                        Ok(()) => {
                            if let Some(gap) = sink.gap.take() {
                                tracing::warn!(lost = gap.lost, path = %sink.path.display(), "the audit file is written again; the gap is recorded in it");
                            }
                        }
                        Err(e) => match &mut sink.gap {
                            Some(gap) => gap.lost += 1,
                            None => {
                                tracing::error!(error = %e, path = %sink.path.display(), "cannot write the audit record; counting the records lost until the file can be written again");
                                sink.gap = Some(Gap {
                                    lost: 1,
                                    since: record.time,
                                    error: e.to_string(),
                                });
                            }
                        },
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot encode the audit record"),
            }
        }
        if let Ok(mut recent) = self.recent.lock() {
            recent.push(record);
        }
    }

    /// Write `line`; after a gap, open the file again and write the gap's line first.
    fn write_after_gap(
        &self,
        sink: &mut Sink,
        line: &str,
        now: DateTime<Utc>,
    ) -> std::io::Result<()> {
        if let Some(gap) = &sink.gap {
            sink.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&sink.path)?;
            sink.written = sink.file.metadata().map(|m| m.len()).unwrap_or(0);
            let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let mut gap_line = serde_json::json!({
                "time": time(&now),
                "event": "audit_gap",
                "lost": gap.lost,
                "since": time(&gap.since),
                "until": time(&now),
                "error": gap.error,
            })
            .to_string();
            gap_line.push('\n');
            self.write(sink, &gap_line)?;
        }
        self.write(sink, line)
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
            .map(|r| r.records.iter().map(|(record, _)| record.clone()).collect())
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

    #[test]
    fn a_full_disk_leaves_a_recorded_gap_and_loses_no_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Every write to /dev/full fails with "No space left on device".
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let audit = Audit::open(Some(path.clone()), 1 << 20, 2).unwrap();
        audit.record(record("a"));
        audit.record(record("b"));
        assert_eq!(audit.recent().len(), 2, "kp.audit keeps them");
        // Space again: the path is a file that can be written.
        std::fs::remove_file(&path).unwrap();
        audit.record(record("c"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["event"], "audit_gap");
        assert_eq!(lines[0]["lost"], 2);
        assert!(lines[0]["error"].as_str().unwrap().contains("space"));
        assert_eq!(lines[1]["user"], "c");
        // And no gap line after that.
        audit.record(record("d"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn recent_records_keep_long_texts_cut() {
        let audit = Audit::open(None, 1 << 20, 2).unwrap();
        let mut long = record("a");
        long.filters = vec![format!("region = '{}'", "é".repeat(10_000))];
        long.pushed = vec![("warehouse".into(), "x".repeat(50_000))];
        audit.record(long);
        let kept = audit.recent().remove(0);
        assert!(kept.filters[0].len() < RECENT_TEXT_BYTES + 32);
        assert!(
            kept.filters[0].ends_with("(20011 bytes)"),
            "{}",
            &kept.filters[0][4000..]
        );
        assert!(kept.pushed[0].1.ends_with("… (50000 bytes)"));
    }

    #[test]
    fn a_cut_text_gives_its_memory_back() {
        // `recent()` hands out clones, whose capacity is their length: look at what the
        // ring keeps. (`truncate` kept the whole text's allocation: a ring of 10 000
        // records of megabyte statements held gigabytes.)
        let mut long = record("a");
        long.filters = vec!["x".repeat(100_000)];
        long.pushed = vec![("warehouse".into(), "y".repeat(100_000))];
        long.message = Some("z".repeat(100_000));
        long.application = "w".repeat(100_000);
        let kept = long.bounded();
        assert!(kept.filters[0].capacity() < RECENT_TEXT_BYTES + 32);
        assert!(kept.pushed[0].1.capacity() < RECENT_TEXT_BYTES + 32);
        assert!(
            kept.message
                .as_ref()
                .is_some_and(|m| m.capacity() < RECENT_TEXT_BYTES + 32)
        );
        assert!(kept.application.capacity() < RECENT_TEXT_BYTES + 32);
    }

    #[test]
    fn the_recent_records_are_bounded_by_their_memory() {
        // Each condition of a statement is a filter of its record, each cut to 4 kB: 16
        // of them make a record of 64 kB, and 10 000 such records would hold 640 MB.
        let mut recent = Recent::default();
        for i in 0..1_000 {
            let mut wide = record(&format!("u{i}"));
            wide.filters = vec!["f".repeat(RECENT_TEXT_BYTES); 16];
            recent.push(wide);
        }
        let held: usize = recent.records.iter().map(|(r, _)| r.weight()).sum();
        assert_eq!(held, recent.bytes);
        assert!(recent.bytes <= RECENT_BYTES, "{} bytes", recent.bytes);
        assert!(recent.records.len() > 100 && recent.records.len() < 1_000);
        assert_eq!(
            recent.records.back().map(|(r, _)| r.user.as_str()),
            Some("u999")
        );
        // Small records: the count bounds them.
        for i in 0..(RECENT + 10) {
            recent.push(record(&format!("s{i}")));
        }
        assert_eq!(recent.records.len(), RECENT);
    }

    #[test]
    fn a_record_over_the_budget_is_kept_alone() {
        let mut recent = Recent::default();
        recent.push(record("a"));
        let mut huge = record("b");
        huge.filters = vec!["f".repeat(RECENT_TEXT_BYTES); RECENT_BYTES / RECENT_TEXT_BYTES + 1];
        recent.push(huge);
        assert_eq!(recent.records.len(), 1);
        assert_eq!(recent.records[0].0.user, "b");
        recent.push(record("c"));
        assert_eq!(recent.records.len(), 1);
        assert_eq!(recent.records[0].0.user, "c");
    }
}
