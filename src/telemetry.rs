//! The server's metrics, exposed by the HTTP stage in Prometheus' text format. The
//! `prometheus-client` crate (the Prometheus project's own Rust client) holds the typed
//! metric families and writes the exposition format; nothing here formats it by hand.
//!
//! Counters and histograms are recorded where things happen (the audit trail records
//! each statement's outcome here too, the engine its planning time, the served model its
//! reloads); gauges of the moment (sessions, pool use) are set when `/metrics` is scraped.
//! Every name is documented in `docs/operations.md`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a query: the view it read, where it ran, how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// The view read (`none` for catalog queries).
    pub view: String,
    /// `embedded` or `pushed_down`.
    pub route: String,
    /// `ok`, `error` or `interrupted`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SqlstateLabels {
    sqlstate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// The metric families of the process.
pub struct Telemetry {
    registry: Registry,
    queries: Family<QueryLabels, Counter>,
    query_seconds: Family<RouteLabels, Histogram>,
    rows: Counter,
    errors: Family<SqlstateLabels, Counter>,
    denied: Counter,
    planning_seconds: Histogram,
    plan_cache: Family<OutcomeLabels, Counter>,
    reloads: Family<OutcomeLabels, Counter>,
    model: Family<VersionLabels, Gauge>,
    sessions: Family<StateLabels, Gauge>,
    source_in_use: Family<SourceLabels, Gauge>,
    source_size: Family<SourceLabels, Gauge>,
    alert_evaluations: Family<OutcomeLabels, Counter>,
    alert_transitions: Family<StateLabels, Counter>,
    alert_deliveries: Family<DeliveryLabels, Counter>,
    queued: Family<QueueLabels, Gauge>,
    queue_seconds: Family<QueueLabels, Histogram>,
    memory_releases: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel_kind: String,
    outcome: String,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish()
    }
}

static GLOBAL: LazyLock<Telemetry> = LazyLock::new(Telemetry::new);

/// The process's metrics.
pub fn global() -> &'static Telemetry {
    &GLOBAL
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 1 ms to about 33 s.
    exponential_buckets(0.001, 2.0, 16)
}

impl Telemetry {
    fn new() -> Telemetry {
        let mut registry = Registry::default();
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register(
            "kpitables_queries",
            "Query statements answered, by view read, route (embedded or pushed_down) and outcome",
            queries.clone(),
        );
        let query_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register(
            "kpitables_query_duration_seconds",
            "Time from a query's start to its last row, by route",
            query_seconds.clone(),
        );
        let rows = Counter::default();
        registry.register(
            "kpitables_rows_sent",
            "Result rows sent to clients",
            rows.clone(),
        );
        let errors = Family::<SqlstateLabels, Counter>::default();
        registry.register(
            "kpitables_statement_errors",
            "Statements that failed, by SQLSTATE",
            errors.clone(),
        );
        let memory_releases = Counter::default();
        registry.register(
            "kpitables_memory_releases",
            "Times the server gave freed memory back to the system, idle after statements ended",
            memory_releases.clone(),
        );
        let denied = Counter::default();
        registry.register(
            "kpitables_denied",
            "Requests refused by the access rules (SQLSTATE 42501)",
            denied.clone(),
        );
        let planning_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "kpitables_planning_duration_seconds",
            "Time to rewrite and plan a statement",
            planning_seconds.clone(),
        );
        let plan_cache = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kpitables_plan_cache_lookups",
            "Statements planned, by what the plan cache did (hit, miss: planned and kept, uncacheable)",
            plan_cache.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kpitables_model_reloads",
            "Model reloads, by outcome (ok: served; failed: the model kept serving)",
            reloads.clone(),
        );
        let model = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "kpitables_model_info",
            "The model version served (1 for the current version)",
            model.clone(),
        );
        let sessions = Family::<StateLabels, Gauge>::default();
        registry.register(
            "kpitables_sessions",
            "Open sessions, by state (starting, idle, idle in transaction, active)",
            sessions.clone(),
        );
        let source_in_use = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "kpitables_source_connections_in_use",
            "Warehouse connections running a statement, by source",
            source_in_use.clone(),
        );
        let source_size = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "kpitables_source_pool_size",
            "Connections a warehouse source's pool may open, by source",
            source_size.clone(),
        );
        let alert_evaluations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kpitables_alert_evaluations",
            "Alert rule evaluations, by outcome (ok, error)",
            alert_evaluations.clone(),
        );
        let alert_transitions = Family::<StateLabels, Counter>::default();
        registry.register(
            "kpitables_alert_transitions",
            "Alert instances changing state, by the state entered (pending, firing, resolved, ok)",
            alert_transitions.clone(),
        );
        let alert_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "kpitables_alert_deliveries",
            "Attempts to deliver an alert message, by channel kind and outcome (delivered, failed)",
            alert_deliveries.clone(),
        );
        let queued = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "kpitables_queued_statements",
            "Statements waiting for a slot now, by queue (StatementSlot: their user's max_statements_per_user; ExecutionSlot: the embedded engine's max_executing_statements)",
            queued.clone(),
        );
        let queue_seconds = Family::<QueueLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register(
            "kpitables_queue_wait_seconds",
            "Time statements waited for a slot, by queue (only statements that had to wait)",
            queue_seconds.clone(),
        );
        Telemetry {
            queued,
            queue_seconds,
            registry,
            alert_evaluations,
            alert_transitions,
            alert_deliveries,
            memory_releases,
            queries,
            query_seconds,
            rows,
            errors,
            denied,
            planning_seconds,
            plan_cache,
            reloads,
            model,
            sessions,
            source_in_use,
            source_size,
        }
    }

    /// A query ended: what it read, where it ran, how it ended, its rows and duration.
    pub fn query(
        &self,
        views: &[String],
        pushed_down: bool,
        outcome: &str,
        rows: u64,
        duration: Duration,
    ) {
        let route = if pushed_down {
            "pushed_down"
        } else {
            "embedded"
        };
        let none = ["none".to_string()];
        let views = if views.is_empty() { &none[..] } else { views };
        for view in views {
            self.queries
                .get_or_create(&QueryLabels {
                    view: view.clone(),
                    route: route.into(),
                    outcome: outcome.into(),
                })
                .inc();
        }
        self.query_seconds
            .get_or_create(&RouteLabels {
                route: route.into(),
            })
            .observe(duration.as_secs_f64());
        self.rows.inc_by(rows);
    }

    /// A statement failed with `sqlstate`.
    pub fn error(&self, sqlstate: &str) {
        self.errors
            .get_or_create(&SqlstateLabels {
                sqlstate: sqlstate.to_string(),
            })
            .inc();
        if crate::error::is_insufficient_privilege(sqlstate) {
            self.denied.inc();
        }
    }

    /// A statement joined (`delta` 1) or left (-1) the queue named `queue`.
    pub fn queue_depth_changed(&self, queue: &str, delta: i64) {
        self.queued
            .get_or_create(&QueueLabels {
                queue: queue.into(),
            })
            .inc_by(delta);
    }

    /// A statement waited `waited` in the queue named `queue`.
    pub fn queue_waited(&self, queue: &str, waited: Duration) {
        self.queue_seconds
            .get_or_create(&QueueLabels {
                queue: queue.into(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Freed memory was given back to the system (the server was idle).
    pub fn memory_released(&self) {
        self.memory_releases.inc();
    }

    /// A statement was rewritten and planned in `duration`.
    pub fn planned(&self, duration: Duration) {
        self.planning_seconds.observe(duration.as_secs_f64());
    }

    /// An alert rule was evaluated (`ok` or `error`).
    pub fn alert_evaluation(&self, outcome: &str) {
        self.alert_evaluations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// An alert instance entered `state`.
    pub fn alert_transition(&self, state: &str) {
        self.alert_transitions
            .get_or_create(&StateLabels {
                state: state.into(),
            })
            .inc();
    }

    /// An attempt to deliver an alert message to a channel of `kind`.
    pub fn alert_delivery(&self, kind: &str, outcome: &str) {
        self.alert_deliveries
            .get_or_create(&DeliveryLabels {
                channel_kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// What the plan cache did for a statement.
    pub fn plan_cache(&self, outcome: &str) {
        self.plan_cache
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A model load: `version` when it is served now, or a failure.
    pub fn reload(&self, version: Option<&str>) {
        let outcome = if version.is_some() { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        if let Some(version) = version {
            self.model.clear();
            self.model
                .get_or_create(&VersionLabels {
                    version: version.to_string(),
                })
                .set(1);
        }
    }

    /// Set the gauges of the moment: sessions by state, each source's pool use.
    pub fn observe(&self, sessions: &[(&str, i64)], sources: &[(String, usize, usize)]) {
        self.sessions.clear();
        for state in ["starting", "idle", "idle in transaction", "active"] {
            let n = sessions
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum();
            self.sessions
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(n);
        }
        self.source_in_use.clear();
        self.source_size.clear();
        for (source, in_use, size) in sources {
            let labels = SourceLabels {
                source: source.clone(),
            };
            self.source_in_use
                .get_or_create(&labels)
                .set(i64::try_from(*in_use).unwrap_or(i64::MAX));
            self.source_size
                .get_or_create(&labels)
                .set(i64::try_from(*size).unwrap_or(i64::MAX));
        }
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
