//! The served model's history: the version being served, every change recorded when a
//! new version replaced an older one, and the problems of the last load that failed.
//! Plain data behind a lock; the server writes it when it (re)loads the model and the
//! `kp.changes` and `kp.model_errors` catalogs read it.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::diff::{Change, What};
use crate::error::ModelIssue;

/// One version of the model's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Content hash of the files ([`super::diff::version`]).
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
    pub kind: &'static str,
    /// The item.
    pub name: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
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
}

impl History {
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

    /// `version` now serves, with `changes` from the previous one (none for the first).
    pub fn served(&self, version: Version, changes: &[Change]) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if let Some(previous) = state.current.as_ref().map(|v| v.id.clone()) {
            for change in changes {
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
                state.changes.push(ChangeRecord {
                    version: version.clone(),
                    previous: previous.clone(),
                    kind: change.kind,
                    name: change.name.clone(),
                    change: what,
                    fields,
                });
            }
        }
        state.current = Some(version);
        state.failed = None;
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
