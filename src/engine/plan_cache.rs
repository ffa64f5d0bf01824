//! The plan cache: a statement is parsed, rewritten and planned once per engine (one
//! model version), user and time zone, and reused by every later statement with the same
//! syntax tree (dashboards send the same SQL again and again; every Parse of a prepared
//! statement and every EXPLAIN of it finds the same plan).
//!
//! ```text
//! key:   (user, TimeZone, the statement's syntax tree as the client sent it), looked up
//!        by borrowed parts (a hit copies nothing)
//! entry: the QueryPlan (rewritten SQL, analyzed logical plan, parameter types, origins)
//!        + the session facts the compat rules read while planning it (pg_backend_pid,
//!          current_setting('x')): a hit needs them to hold for the asking session too
//!        + once executed without parameters: the optimized logical plan
//! ```
//!
//! Bounded (least recently used entries are dropped past `[limits] plan_cache_entries`
//! or past [`MAX_TOTAL_BYTES`] of rewritten SQL, and a statement whose rewritten SQL is
//! over [`MAX_STATEMENT_BYTES`] is not kept: a plan holds its statement's text several
//! times over, about 130 kB for a 20 kB statement, so a count alone lets a thousand long
//! statements hold over 100 MB);
//! a reload opens a new engine with an empty cache, so nothing planned on an older model
//! is ever reused. Not cached: statements over the session's temporary tables, answers
//! computed row by row while planning (they hold values), and failures.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use datafusion::sql::sqlparser::ast::Statement;
use lru::LruCache;

use super::QueryPlan;
use crate::session::Session;
use crate::time_zone::TimeZone;

/// Default number of plans kept per engine.
pub const DEFAULT_ENTRIES: usize = crate::config::DEFAULT_PLAN_CACHE_ENTRIES;

/// The longest statement (its rewritten SQL) whose plan is kept: 64 kB, longer than
/// what BI tools send for a dashboard filter of a thousand values.
pub const MAX_STATEMENT_BYTES: usize = 64 * 1024;

/// The most rewritten SQL the kept plans of one engine may add up to: 8 MB, a thousand
/// dashboard statements of 8 kB (found by the fuzzer's memory: a thousand plans of
/// 20 kB literals held 130 MB).
pub const MAX_TOTAL_BYTES: usize = 8 * 1024 * 1024;

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

/// A kept plan's key.
#[derive(Debug)]
struct Key {
    user: String,
    time_zone: TimeZone,
    statement: Statement,
}

/// A key's parts, owned ([`Key`]) or borrowed ([`Lookup`]): plans are looked up by
/// borrowed parts, so a lookup copies neither the user name nor the syntax tree.
trait KeyParts {
    fn parts(&self) -> (&str, TimeZone, &Statement);
}

impl KeyParts for Key {
    fn parts(&self) -> (&str, TimeZone, &Statement) {
        (&self.user, self.time_zone, &self.statement)
    }
}

/// The key of a lookup, borrowed from the session and the statement.
struct Lookup<'a> {
    user: &'a str,
    time_zone: TimeZone,
    statement: &'a Statement,
}

impl KeyParts for Lookup<'_> {
    fn parts(&self) -> (&str, TimeZone, &Statement) {
        (self.user, self.time_zone, self.statement)
    }
}

impl<'a> Borrow<dyn KeyParts + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

// Key and its borrowed form hash and compare by the same parts.
impl Hash for dyn KeyParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for Key {}

/// The plans of one engine.
#[derive(Debug)]
pub struct PlanCache {
    entries: Option<Mutex<Plans>>,
}

/// The kept plans, least recently used first out, and the length of their rewritten SQL.
#[derive(Debug)]
struct Plans {
    lru: LruCache<Key, Arc<QueryPlan>>,
    bytes: usize,
}

impl PlanCache {
    /// A cache of at most `entries` plans (0: no cache).
    pub fn new(entries: usize) -> PlanCache {
        PlanCache {
            entries: NonZeroUsize::new(entries).map(|n| {
                Mutex::new(Plans {
                    lru: LruCache::new(n),
                    bytes: 0,
                })
            }),
        }
    }

    fn key(session: &Session, statement: &Statement) -> Key {
        Key {
            user: session.user.clone(),
            time_zone: session.time_zone(),
            statement: statement.clone(),
        }
    }

    /// The plan kept for `statement` in `session`, if any and if the session facts it
    /// was planned with hold for this session.
    pub fn get(&self, session: &Session, statement: &Statement) -> Option<Arc<QueryPlan>> {
        let entries = self.entries.as_ref()?;
        let lookup = Lookup {
            user: &session.user,
            time_zone: session.time_zone(),
            statement,
        };
        let mut entries = entries.lock().ok()?;
        let plan = entries.lru.get(&lookup as &dyn KeyParts)?;
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
        let Ok(mut entries) = entries.lock() else {
            return;
        };
        entries.bytes += plan.rewritten_sql.len();
        // `push` gives back the plan it replaced (same key) or dropped (past the count).
        if let Some((_, old)) = entries.lru.push(PlanCache::key(session, statement), plan) {
            entries.bytes = entries.bytes.saturating_sub(old.rewritten_sql.len());
        }
        while entries.bytes > MAX_TOTAL_BYTES {
            let Some((_, old)) = entries.lru.pop_lru() else {
                entries.bytes = 0;
                break;
            };
            entries.bytes = entries.bytes.saturating_sub(old.rewritten_sql.len());
        }
    }

    /// Plans kept.
    pub fn len(&self) -> usize {
        self.entries
            .as_ref()
            .and_then(|e| e.lock().ok().map(|e| e.lru.len()))
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
