//! The served model's history: the version being served, every change recorded when a
//! new version replaced an older one, and the problems of the last load that failed.
//! Plain data behind a lock; the server writes it when it (re)loads the model and the
//! `kp.changes` and `kp.model_errors` catalogs read it.
//!
//! With a history file, every version served is also appended to it as one JSON line
//! (version, commit, author, time, changes, and the model's files), and read back at
//! start: the changes of earlier runs are kept, and the model is compared with the files
//! of the version served last, so a change made while the server was down is recorded
//! too.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ModelIssue, Result};
use crate::model::diff::{Change, What};
use crate::model::load::SourceTexts;

/// One version of the model's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Content hash of the files ([`crate::model::diff::version`]).
    pub id: String,
    /// The git commit of the model directory, when it is a git checkout.
    pub git_commit: Option<String>,
    /// The author of that commit.
    pub author: Option<String>,
    /// When it was loaded.
    pub loaded_at: DateTime<Utc>,
}

/// One change of one item, as recorded when a version replaced the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// The version that brought it.
    pub version: Version,
    /// The version it replaced.
    pub previous: String,
    /// `metric`, `dimension`, `segment`, `view` or `access rule`.
    pub kind: String,
    /// The item.
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub change: String,
    /// For `changed`: `field: before -> after`, one per line.
    pub fields: String,
}

/// A load that failed: the old model kept serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedLoad {
    /// When.
    pub at: DateTime<Utc>,
    /// The content hash of the files that failed.
    pub version: String,
    /// Every problem, with file, line and reason.
    pub issues: Vec<ModelIssue>,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Version>,
    changes: Vec<ChangeRecord>,
    failed: Option<FailedLoad>,
}

/// The history (see the module docs).
#[derive(Debug, Default)]
pub struct History {
    state: Mutex<State>,
    file: Option<PathBuf>,
}

/// One line of the history file: a version served.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    version: String,
    previous: Option<String>,
    git_commit: Option<String>,
    author: Option<String>,
    loaded_at: String,
    changes: Vec<StoredChange>,
    files: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredChange {
    kind: String,
    name: String,
    change: String,
    fields: String,
}

impl History {
    /// A history kept in memory and, with `file`, in that file: the changes it recorded
    /// are restored, and the files of the version served last are returned (to compare
    /// the model about to be served with). A line that cannot be read (a write cut short)
    /// is skipped with a warning.
    pub fn open(file: Option<PathBuf>) -> Result<(History, Option<SourceTexts>)> {
        let mut state = State::default();
        let mut last_files = None;
        if let Some(path) = file.as_ref().filter(|p| p.exists()) {
            // A device (such as /dev/zero) would be read forever.
            if !path.metadata().is_ok_and(|m| m.is_file()) {
                return Err(Error::Config(format!(
                    "the model history {} is not a regular file",
                    path.display()
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::io(
                    format!("cannot read the model history {}", path.display()),
                    e,
                )
            })?;
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let line: Line = match serde_json::from_str(line) {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), line = n + 1, error = %e, "skipping an unreadable model history record");
                        continue;
                    }
                };
                let version = Version {
                    id: line.version,
                    git_commit: line.git_commit,
                    author: line.author,
                    loaded_at: DateTime::parse_from_rfc3339(&line.loaded_at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
                };
                if let Some(previous) = line.previous {
                    for c in line.changes {
                        state.changes.push(ChangeRecord {
                            version: version.clone(),
                            previous: previous.clone(),
                            kind: c.kind,
                            name: c.name,
                            change: c.change,
                            fields: c.fields,
                        });
                    }
                }
                state.current = Some(version);
                last_files = Some(SourceTexts { files: line.files });
            }
        }
        let history = History {
            state: Mutex::new(state),
            file,
        };
        Ok((history, last_files))
    }

    fn append(&self, line: &Line) {
        let Some(path) = &self.file else {
            return;
        };
        let written = serde_json::to_string(line)
            .map_err(std::io::Error::other)
            .and_then(|mut text| {
                text.push('\n');
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?
                    .write_all(text.as_bytes())
            });
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e, "cannot write the model history");
        }
    }

    /// The version being served.
    pub fn current(&self) -> Option<Version> {
        self.state.lock().ok().and_then(|s| s.current.clone())
    }

    /// Every recorded change, oldest first.
    pub fn changes(&self) -> Vec<ChangeRecord> {
        self.state
            .lock()
            .map(|s| s.changes.clone())
            .unwrap_or_default()
    }

    /// The last failed load, unless a later load succeeded.
    pub fn failed(&self) -> Option<FailedLoad> {
        self.state.lock().ok().and_then(|s| s.failed.clone())
    }

    /// `version` (of `texts`) now serves, with `changes` from the previous one (none for
    /// the first). Serving the version already served records nothing.
    pub fn served(&self, version: Version, changes: &[Change], texts: &SourceTexts) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.failed = None;
        let previous = state.current.as_ref().map(|v| v.id.clone());
        if previous.as_deref() == Some(version.id.as_str()) {
            state.current = Some(version);
            return;
        }
        let stored: Vec<StoredChange> = if previous.is_some() {
            changes.iter().map(stored).collect()
        } else {
            Vec::new()
        };
        if let Some(previous) = &previous {
            for c in &stored {
                state.changes.push(ChangeRecord {
                    version: version.clone(),
                    previous: previous.clone(),
                    kind: c.kind.clone(),
                    name: c.name.clone(),
                    change: c.change.clone(),
                    fields: c.fields.clone(),
                });
            }
        }
        self.append(&Line {
            version: version.id.clone(),
            previous,
            git_commit: version.git_commit.clone(),
            author: version.author.clone(),
            loaded_at: version
                .loaded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            changes: stored,
            files: texts.files.clone(),
        });
        state.current = Some(version);
    }

    /// A load of `version` failed with `issues`; the current version keeps serving.
    pub fn failed_load(&self, version: String, issues: Vec<ModelIssue>) {
        if let Ok(mut state) = self.state.lock() {
            state.failed = Some(FailedLoad {
                at: Utc::now(),
                version,
                issues,
            });
        }
    }
}

fn stored(change: &Change) -> StoredChange {
    let (what, fields) = match &change.what {
        What::Added => ("added", String::new()),
        What::Removed => ("removed", String::new()),
        What::Changed(fields) => (
            "changed",
            fields
                .iter()
                .map(|(f, a, b)| format!("{f}: {a} -> {b}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    };
    StoredChange {
        kind: change.kind.to_string(),
        name: change.name.clone(),
        change: what.to_string(),
        fields,
    }
}
