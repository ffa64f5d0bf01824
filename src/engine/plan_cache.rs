//! The plan cache: a statement is parsed, rewritten and planned once per engine (one
//! model version), user and time zone, and reused by every later statement with the same
//! syntax tree (dashboards send the same SQL again and again; every Parse of a prepared
//! statement and every EXPLAIN of it finds the same plan).
//!
//! ```text
//! key:   (user, TimeZone, the statement's syntax tree as the client sent it)
//! entry: the QueryPlan (rewritten SQL, analyzed logical plan, parameter types, origins)
//!        + the session facts the compat rules read while planning it (pg_backend_pid,
//!          current_setting('x')): a hit needs them to hold for the asking session too
//!        + once executed without parameters: the optimized logical plan
//! ```
//!
//! Bounded (least recently used entries are dropped past `[limits] plan_cache_entries`);
//! a reload opens a new engine with an empty cache, so nothing planned on an older model
//! is ever reused. Not cached: statements over the session's temporary tables, answers
//! computed row by row while planning (they hold values), and failures.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use datafusion::sql::sqlparser::ast::Statement;
use lru::LruCache;

use super::QueryPlan;
use crate::session::Session;

/// Default number of plans kept per engine.
pub const DEFAULT_ENTRIES: usize = 1000;

/// What the cache did for one statement, shown by `EXPLAIN` and counted in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheUse {
    /// Planned now and kept.
    #[default]
    Miss,
    /// The plan was found.
    Hit,
    /// Planned now and not kept (the reason is why it cannot be reused).
    Uncacheable(&'static str),
}

impl CacheUse {
    /// The `outcome` label of `kpitables_plan_cache_lookups_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            CacheUse::Miss => "miss",
            CacheUse::Hit => "hit",
            CacheUse::Uncacheable(_) => "uncacheable",
        }
    }

    /// The line `EXPLAIN` shows.
    pub fn describe(self) -> String {
        match self {
            CacheUse::Hit => {
                "Plan cache: hit (planned earlier for this model version, user and time zone)"
                    .into()
            }
            CacheUse::Miss => {
                "Plan cache: miss (planned now and kept for the next identical statement)".into()
            }
            CacheUse::Uncacheable(why) => format!("Plan cache: not cached ({why})"),
        }
    }
}

#[derive(Debug, Hash, PartialEq, Eq)]
struct Key {
    user: String,
    time_zone: String,
    statement: Statement,
}

/// The plans of one engine.
#[derive(Debug)]
pub struct PlanCache {
    entries: Option<Mutex<LruCache<Key, Arc<QueryPlan>>>>,
}

impl PlanCache {
    /// A cache of at most `entries` plans (0: no cache).
    pub fn new(entries: usize) -> PlanCache {
        PlanCache {
            entries: NonZeroUsize::new(entries).map(|n| Mutex::new(LruCache::new(n))),
        }
    }

    fn key(session: &Session, statement: &Statement) -> Key {
        Key {
            user: session.user.clone(),
            time_zone: session.time_zone().to_string(),
            statement: statement.clone(),
        }
    }

    /// The plan kept for `statement` in `session`, if any and if the session facts it
    /// was planned with hold for this session.
    pub fn get(&self, session: &Session, statement: &Statement) -> Option<Arc<QueryPlan>> {
        let entries = self.entries.as_ref()?;
        let key = PlanCache::key(session, statement);
        let mut entries = entries.lock().ok()?;
        let plan = entries.get(&key)?;
        plan.session_reads
            .iter()
            .all(|read| read.holds(session))
            .then(|| Arc::clone(plan))
    }

    /// Keep `plan`, planned for `statement` in `session`.
    pub fn put(&self, session: &Session, statement: &Statement, plan: Arc<QueryPlan>) {
        let Some(entries) = &self.entries else {
            return;
        };
        if let Ok(mut entries) = entries.lock() {
            entries.put(PlanCache::key(session, statement), plan);
        }
    }

    /// Plans kept.
    pub fn len(&self) -> usize {
        self.entries
            .as_ref()
            .and_then(|e| e.lock().ok().map(|e| e.len()))
            .unwrap_or(0)
    }

    /// Whether no plan is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether plans are kept at all.
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }
}
