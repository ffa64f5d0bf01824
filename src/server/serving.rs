//! The model being served, and replacing it safely while the server runs.
//!
//! [`Served`] holds the current [`Engine`]. A reload (on SIGHUP, or when the files of the
//! model directory change: they are checked every [`POLL`]) loads, validates and binds the
//! new model completely, with its users' scopes and catalogs, before it replaces the old
//! one; every statement takes the engine current when it starts, so queries already
//! running finish on the model they started with. An invalid model is reported in the log
//! (file, line, reason) and in `kp.model_errors`, and the old model keeps serving. Each
//! successful reload records what changed in the model history (`kp.changes`).
//!
//! Invariant: the served engine is only ever replaced by one that opened without error.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;

use crate::catalog::Identity;
use crate::config::User;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::diff;
use crate::model::load::{git, git_commit, load_texts};
use crate::server::activity::Connections;
use crate::server::audit::Audit;
use crate::server::history::{History, Version};

/// How often the model directory is checked for changes.
pub const POLL: Duration = Duration::from_secs(2);

/// The served model (see the module docs).
pub struct Served {
    current: RwLock<Arc<Engine>>,
    history: Arc<History>,
    audit: Arc<Audit>,
    model_dir: PathBuf,
    identity: Identity,
    users: Vec<User>,
    options: Options,
    /// Content hash of the files last tried (served or failed), to reload on a change only.
    last_tried: std::sync::Mutex<String>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("model_dir", &self.model_dir)
            .finish()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files did not change.
    Unchanged,
    /// A new version serves, with this many recorded changes.
    Replaced(usize),
    /// The new files are invalid; the old model keeps serving.
    Kept,
}

/// What every engine the server opens is given besides the model.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The live sessions (`pg_stat_activity`, `pg_cancel_backend`, ...).
    pub connections: Option<Arc<Connections>>,
    /// Memory one query may use on the embedded engine.
    pub query_memory: Option<usize>,
    /// Plans each engine keeps (`None`: the default).
    pub plan_cache_entries: Option<usize>,
    /// The alerts' state and events (`kp.alerts`, `kp.alert_events`).
    pub alerts: Option<Arc<crate::server::alerts::Alerts>>,
    /// How a dbt MetricFlow project in the model directory is imported.
    pub import: crate::import::metricflow::Options,
}

/// `engine` with the history, audit trail, sessions and limits of the server, and every
/// user's scope.
fn prepare(
    engine: Engine,
    history: &Arc<History>,
    audit: &Arc<Audit>,
    options: &Options,
    users: &[User],
) -> Result<Engine> {
    use crate::server::live::{AuditTable, HistoryTables, activity::Sessions};
    let mut engine = engine
        .with_live(Arc::new(HistoryTables(Arc::clone(history))))
        .with_live(Arc::new(AuditTable(Arc::clone(audit))))
        .with_query_memory(options.query_memory);
    if let Some(entries) = options.plan_cache_entries {
        engine = engine.with_plan_cache(entries);
    }
    if let Some(connections) = &options.connections {
        engine = engine.with_live(Arc::new(Sessions(Arc::clone(connections))));
    }
    if let Some(alerts) = &options.alerts {
        engine = engine.with_live(Arc::new(crate::server::alerts::tables::AlertTables(
            Arc::clone(alerts),
        )));
    }
    engine.with_users(users)
}

fn version_of(dir: &std::path::Path, id: String) -> Version {
    Version {
        id,
        git_commit: git_commit(dir),
        author: git(dir, &["log", "-1", "--format=%an <%ae>"]),
        loaded_at: Utc::now(),
    }
}

impl Served {
    /// Open the model in `model_dir` for `users`; an invalid model is an error here (the
    /// server does not start without a model to serve). With a `history_file`, the
    /// history of earlier runs is read from it, and the model is compared with the version
    /// served last (a change made while the server was down is recorded as one).
    pub async fn open(
        model_dir: PathBuf,
        identity: Identity,
        users: Vec<User>,
        audit: Arc<Audit>,
        history_file: Option<PathBuf>,
        options: Options,
    ) -> Result<Served> {
        let (history, last_served) = History::open(history_file)?;
        let history = Arc::new(history);
        let texts = crate::import::model_texts(&model_dir, &options.import)?;
        let id = diff::version(&texts);
        let engine = prepare(
            Engine::open_texts(texts.clone(), &model_dir, identity.clone()).await?,
            &history,
            &audit,
            &options,
            &users,
        )?;
        crate::telemetry::global().reload(Some(&id));
        let changes = match last_served.map(load_texts) {
            Some(Ok(previous)) => diff::diff(&previous, &engine.semantics().model),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the model served last cannot be read; its changes are not recorded");
                Vec::new()
            }
            None => Vec::new(),
        };
        history.served(version_of(&model_dir, id.clone()), &changes, &texts);
        Ok(Served {
            current: RwLock::new(Arc::new(engine)),
            history,
            audit,
            model_dir,
            identity,
            users,
            options,
            last_tried: std::sync::Mutex::new(id),
        })
    }

    /// The live sessions, when the server tracks them.
    pub fn connections(&self) -> Option<&Arc<Connections>> {
        self.options.connections.as_ref()
    }

    /// The engine to run a statement on (the one current when it starts).
    pub fn engine(&self) -> Arc<Engine> {
        match self.current.read() {
            Ok(engine) => Arc::clone(&engine),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The model history.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// The alerts' state and data quality results, when the server evaluates them.
    pub fn alerts(&self) -> Option<&Arc<crate::server::alerts::Alerts>> {
        self.options.alerts.as_ref()
    }

    /// The audit trail.
    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// Audit a statement of `session` that failed with `error`.
    pub fn record_failure(&self, session: &crate::session::Session, error: &Error) {
        crate::telemetry::global().error(error.sqlstate());
        self.audit.record(crate::server::audit::Record {
            time: Utc::now(),
            user: session.user.clone(),
            application: session.get("application_name").unwrap_or_default(),
            views: Vec::new(),
            metrics: Vec::new(),
            dimensions: Vec::new(),
            filters: Vec::new(),
            rows: None,
            duration_ms: 0,
            pushed: Vec::new(),
            outcome: "error",
            sqlstate: Some(error.sqlstate().to_string()),
            message: Some(error.to_string()),
        });
    }

    /// Load the model directory again if its files changed (or always, with `force`),
    /// and serve it if it is valid.
    pub async fn reload(&self, force: bool) -> Result<Reloaded> {
        let texts = crate::import::model_texts(&self.model_dir, &self.options.import)?;
        let id = diff::version(&texts);
        {
            let mut last = self
                .last_tried
                .lock()
                .map_err(|_| Error::Internal("reload lock poisoned".into()))?;
            if *last == id && !force {
                return Ok(Reloaded::Unchanged);
            }
            *last = id.clone();
        }
        let opened =
            match Engine::open_texts(texts.clone(), &self.model_dir, self.identity.clone()).await {
                Ok(engine) => prepare(
                    engine,
                    &self.history,
                    &self.audit,
                    &self.options,
                    &self.users,
                ),
                Err(e) => Err(e),
            };
        match opened {
            Ok(engine) => {
                let old = self.engine();
                let changes = diff::diff(&old.semantics().model, &engine.semantics().model);
                self.history
                    .served(version_of(&self.model_dir, id.clone()), &changes, &texts);
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(engine);
                }
                tracing::info!(version = %id, changes = changes.len(), "model reloaded");
                crate::telemetry::global().reload(Some(&id));
                Ok(Reloaded::Replaced(changes.len()))
            }
            Err(Error::Model(issues)) => {
                for issue in &issues {
                    tracing::error!(%issue, "model not reloaded; the previous version keeps serving");
                }
                self.history.failed_load(id, issues);
                crate::telemetry::global().reload(None);
                Ok(Reloaded::Kept)
            }
            Err(e) => {
                tracing::error!(error = %e, "model not reloaded; the previous version keeps serving");
                self.history.failed_load(
                    id,
                    vec![crate::error::ModelIssue {
                        file: self.model_dir.display().to_string(),
                        line: 0,
                        column: 0,
                        reason: e.to_string(),
                    }],
                );
                crate::telemetry::global().reload(None);
                Ok(Reloaded::Kept)
            }
        }
    }

    /// Reload on SIGHUP (always) and when the model files change (checked every
    /// [`POLL`]), for as long as the process runs.
    pub fn watch(self: Arc<Self>) {
        let polled = Arc::clone(&self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            loop {
                tick.tick().await;
                if let Err(e) = polled.reload(false).await {
                    tracing::warn!(error = %e, "cannot read the model directory");
                }
            }
        });
        #[cfg(unix)]
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; the model reloads on file changes");
                return;
            };
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the model");
                if let Err(e) = self.reload(true).await {
                    tracing::warn!(error = %e, "cannot read the model directory");
                }
            }
        });
    }
}
