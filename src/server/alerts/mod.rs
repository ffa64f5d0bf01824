//! Alerts (预警): the model's `[[alerts]]` evaluated on schedule (the server) or on
//! demand (`kpitables alerts run`), each instance's state kept, and the changes worth
//! telling sent to the rule's channels and announced on `LISTEN kp_alerts`.
//!
//! ```text
//! rule ─► evaluate (SQL over the rule's view, as the run-as user: rewrite, access rules,
//!          pushdown) ─► one reading per instance ─► state::step ─► notifications
//!          ─► message (body per channel kind, signed) ─► deliver (rate limit, digest,
//!          retries) ; events for kp.alert_events ; transitions to LISTEN kp_alerts
//! ```
//!
//! Invariant: an alert's value is computed only through [`crate::engine::Engine::plan`]
//! as its run-as user, never from base tables, so it carries only what that user may
//! see; its events and notifications are shown only to readers who may see the rule
//! whole ([`visible_to`]).

pub mod deliver;
pub mod evaluate;
pub mod message;
pub mod period;
pub mod quality;
mod report;
pub mod state;
pub mod tables;

pub use report::{Report, RuleReport, Transition};

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use self::deliver::{Sender, Target};
use self::evaluate::Rule;
use self::message::Notification;
use self::state::{Instance, StateFile};
use crate::engine::Engine;
use crate::error::Result;
use crate::server::notify::Hub;

/// Events kept in memory for `kp.alert_events`.
pub const EVENTS_KEPT: usize = 10_000;

/// Something that happened to a rule: an evaluation of an instance, a state change, a
/// delivery attempt, or an evaluation that failed.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When.
    #[serde(with = "state::rfc3339")]
    pub at: DateTime<Utc>,
    /// The rule.
    pub rule: String,
    /// `evaluation`, `transition`, `delivery` or `error`.
    pub kind: &'static str,
    /// The instance (`region=East`; empty for a rule without `by`, or a digest).
    pub instance: String,
    /// The period evaluated.
    pub period: Option<String>,
    /// The metric's value.
    pub value: Option<f64>,
    /// What it was compared with.
    pub comparison: Option<f64>,
    /// The number held against the threshold.
    pub measure: Option<f64>,
    /// The verdict (evaluation), the state entered (transition), or the outcome
    /// (delivery, error).
    pub outcome: String,
    /// The state before (transition).
    pub from_state: Option<String>,
    /// The channel (delivery).
    pub channel: Option<String>,
    /// The attempt (delivery).
    pub attempt: Option<u32>,
    /// Details: the error, the HTTP status and answer.
    pub detail: Option<String>,
}

/// How a run behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Evaluate and print, but send nothing and keep no state.
    pub dry_run: bool,
    /// Evaluate only the rules whose schedule has come since their last evaluation
    /// (the server); else every rule (`kpitables alerts run`).
    pub only_due: bool,
}

/// The alerts of a server or a run: state, events, the sender, the LISTEN hub.
#[derive(Debug)]
pub struct Alerts {
    state: Mutex<StateFile>,
    quality: Mutex<quality::Results>,
    events: Mutex<VecDeque<Event>>,
    sender: Sender,
    hub: Option<Arc<Hub>>,
    started: DateTime<Utc>,
}

impl Alerts {
    /// Alerts with state in `state_file` (read now), started at `now`.
    pub fn open(
        state_file: Option<&Path>,
        hub: Option<Arc<Hub>>,
        now: DateTime<Utc>,
    ) -> Result<Alerts> {
        let state = StateFile::open(state_file)?;
        // The row counts of the last checks, kept in the state file, are where
        // `row_count_change` starts from.
        let quality = quality::Results {
            counts: state.row_counts.clone(),
            ..quality::Results::default()
        };
        Ok(Alerts {
            state: Mutex::new(state),
            quality: Mutex::new(quality),
            events: Mutex::new(VecDeque::new()),
            sender: Sender::new(),
            hub,
            started: now,
        })
    }

    /// The rules' instances: (rule, instance key, state).
    pub fn instances(&self) -> Vec<(String, String, Instance)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .rules
            .iter()
            .flat_map(|(rule, instances)| {
                instances
                    .iter()
                    .map(move |(key, i)| (rule.clone(), key.clone(), i.clone()))
            })
            .collect()
    }

    /// When each rule was last evaluated.
    pub fn evaluated(&self) -> BTreeMap<String, DateTime<Utc>> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evaluated
            .clone()
    }

    /// The latest events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The latest result of every table's data quality checks.
    pub fn quality(&self) -> Vec<quality::CheckResult> {
        let results = self.quality.lock().unwrap_or_else(|p| p.into_inner());
        results.checks.values().flatten().cloned().collect()
    }

    /// Whether any data quality check fails now (what a query looks at first).
    pub fn any_check_failing(&self) -> bool {
        let results = self.quality.lock().unwrap_or_else(|p| p.into_inner());
        results
            .checks
            .values()
            .flatten()
            .any(|c| c.status == quality::Status::Fail)
    }

    /// The failing data quality checks of `tables`.
    pub fn failing_checks(&self, tables: &[String]) -> Vec<quality::CheckResult> {
        let results = self.quality.lock().unwrap_or_else(|p| p.into_inner());
        results.failing(tables).into_iter().cloned().collect()
    }

    /// A `quality` rule's readings: one instance per check of its table, breaching while
    /// the check fails.
    fn quality_evaluation(
        &self,
        engine: &Engine,
        rule: &Rule,
        at: &DateTime<Utc>,
    ) -> evaluate::Evaluation {
        let table = rule.table.clone().unwrap_or_default();
        let day = period::local_date(at, engine.semantics().time_zone);
        let results = self.quality.lock().unwrap_or_else(|p| p.into_inner());
        let readings = results
            .checks
            .get(&table)
            .map(|checks| {
                checks
                    .iter()
                    .map(|c| {
                        let dimensions = vec![("check".to_string(), Some(c.check.clone()))];
                        evaluate::Reading {
                            key: evaluate::instance_key(&dimensions),
                            dimensions,
                            value: None,
                            comparison: None,
                            measure: None,
                            verdict: match c.status {
                                quality::Status::Fail => evaluate::Verdict::Breach,
                                quality::Status::Pass => evaluate::Verdict::Clear,
                                quality::Status::Error => evaluate::Verdict::NoData,
                            },
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        evaluate::Evaluation {
            period: period::Period {
                start: day,
                end: day.succ_opt().unwrap_or(day),
            },
            sql: format!(
                "SELECT * FROM kp.quality WHERE table_name = '{}'",
                table.replace('\'', "''")
            ),
            readings,
        }
    }

    /// Run the data quality checks of every table that has them (only those whose
    /// schedule has come, with `only_due`).
    async fn check_quality(
        &self,
        engine: &Engine,
        at: DateTime<Utc>,
        only_due: bool,
    ) -> Vec<quality::CheckResult> {
        let mut out = Vec::new();
        for table in &engine.semantics().model.tables {
            let Some(checks) = &table.quality else {
                continue;
            };
            let name = table.name.get_ref();
            let (last, previous) = {
                let results = self.quality.lock().unwrap_or_else(|p| p.into_inner());
                (
                    results.checked.get(name).copied(),
                    results.counts.get(name).copied(),
                )
            };
            if only_due {
                let Ok(schedule) = crate::model::alerts::parse_schedule(checks.schedule()) else {
                    continue;
                };
                let due = match last {
                    // Checked once at start, then on the schedule.
                    None => true,
                    Some(last) => next_occurrence(&schedule, engine.semantics().time_zone, &last)
                        .is_some_and(|next| next <= at),
                };
                if !due {
                    continue;
                }
            }
            let (results, count) = quality::check_table(engine, table, &at, previous).await;
            for r in &results {
                if r.status != quality::Status::Pass {
                    tracing::warn!(table = %r.table, check = %r.check, status = r.status.as_str(), value = %r.value, "data quality check");
                }
            }
            let mut all = self.quality.lock().unwrap_or_else(|p| p.into_inner());
            all.checked.insert(name.clone(), at);
            if let Some(count) = count {
                all.counts.insert(name.clone(), count);
            }
            all.checks.insert(name.clone(), results.clone());
            out.extend(results);
        }
        out
    }

    fn record(&self, event: Event) {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() >= EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }

    fn is_due(&self, rule: &Rule, engine: &Engine, at: &DateTime<Utc>) -> bool {
        let last = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evaluated
            .get(&rule.name)
            .copied()
            .unwrap_or(self.started);
        next_occurrence(&rule.schedule, engine.semantics().time_zone, &last)
            .is_some_and(|next| next <= *at)
    }

    /// Evaluate the model's rules at `at`, move each instance's state, and send what is
    /// due.
    pub async fn run(
        &self,
        engine: &Arc<Engine>,
        at: DateTime<Utc>,
        options: RunOptions,
    ) -> Report {
        let semantics = engine.semantics();
        let quality = self.check_quality(engine, at, options.only_due).await;
        let mut report = Report {
            at,
            quality,
            rules: Vec::new(),
            deliveries: Vec::new(),
        };
        // channel → notifications due, and the DingTalk mentions of their rules.
        let mut due: BTreeMap<String, (Vec<Notification>, Vec<String>)> = BTreeMap::new();
        for model_rule in &semantics.model.alerts {
            let rule = match Rule::compile(model_rule, semantics) {
                Ok(rule) => rule,
                Err(e) => {
                    report.rules.push(RuleReport {
                        rule: model_rule.name.get_ref().clone(),
                        run_as: model_rule.run_as.get_ref().clone(),
                        period: None,
                        sql: None,
                        error: Some(e.to_string()),
                        duration_ms: 0.0,
                        readings: Vec::new(),
                        transitions: Vec::new(),
                    });
                    continue;
                }
            };
            if options.only_due && !self.is_due(&rule, engine, &at) {
                continue;
            }
            let (rule_report, notifications) = self.evaluate_rule(engine, &rule, at, options).await;
            for notification in notifications {
                for channel in &rule.channels {
                    let entry = due.entry(channel.clone()).or_default();
                    entry.0.push(notification.clone());
                    for mobile in &rule.at_mobiles {
                        if !entry.1.contains(mobile) {
                            entry.1.push(mobile.clone());
                        }
                    }
                }
            }
            report.rules.push(rule_report);
        }
        for (channel, (notifications, mobiles)) in due {
            let Some(model_channel) = semantics
                .model
                .channels
                .iter()
                .find(|c| c.name.get_ref() == &channel)
            else {
                continue;
            };
            let target = target(model_channel);
            for message in self.sender.plan(&target, notifications) {
                let delivery = self
                    .sender
                    .send(&target, &message, &at, &mobiles, options.dry_run)
                    .await;
                for attempt in &delivery.attempts {
                    for carried in &delivery.carries {
                        let (rule, instance) = carried.split_once(' ').unwrap_or((carried, ""));
                        self.record(Event {
                            at: Utc::now(),
                            rule: rule.to_string(),
                            kind: "delivery",
                            instance: instance.to_string(),
                            period: None,
                            value: None,
                            comparison: None,
                            measure: None,
                            outcome: attempt.outcome.to_string(),
                            from_state: None,
                            channel: Some(channel.clone()),
                            attempt: Some(attempt.attempt),
                            detail: Some(match attempt.status {
                                Some(s) => format!("HTTP {s} {}", attempt.detail),
                                None => attempt.detail.clone(),
                            }),
                        });
                    }
                }
                report.deliveries.push(delivery);
            }
        }
        if !options.dry_run && (!report.rules.is_empty() || !report.quality.is_empty()) {
            let counts = {
                let results = self.quality.lock().unwrap_or_else(|p| p.into_inner());
                results.counts.clone()
            };
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.row_counts = counts;
            if let Err(e) = state.save() {
                tracing::error!(error = %e, "the alert state was not saved");
            }
        }
        report
    }

    async fn evaluate_rule(
        &self,
        engine: &Arc<Engine>,
        rule: &Rule,
        at: DateTime<Utc>,
        options: RunOptions,
    ) -> (RuleReport, Vec<Notification>) {
        let known: Vec<(String, evaluate::Dimensions)> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .rules
                .get(&rule.name)
                .map(|instances| {
                    instances
                        .iter()
                        .map(|(k, i)| (k.clone(), i.dimensions.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let started = std::time::Instant::now();
        let span = tracing::info_span!("alert", rule = %rule.name, run_as = %rule.run_as);
        let evaluated = if rule.condition == crate::model::alerts::Condition::Quality {
            Ok(self.quality_evaluation(engine, rule, &at))
        } else {
            use tracing::Instrument;
            evaluate::evaluate(engine, rule, &at, &known)
                .instrument(span)
                .await
        };
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut rule_report = RuleReport {
            rule: rule.name.clone(),
            run_as: rule.run_as.clone(),
            period: None,
            sql: None,
            error: None,
            duration_ms,
            readings: Vec::new(),
            transitions: Vec::new(),
        };
        let evaluation = match evaluated {
            Ok(e) => e,
            Err(e) => {
                crate::telemetry::global().alert_evaluation("error");
                tracing::warn!(rule = %rule.name, error = %e, "alert evaluation failed");
                self.record(Event {
                    at,
                    rule: rule.name.clone(),
                    kind: "error",
                    instance: String::new(),
                    period: None,
                    value: None,
                    comparison: None,
                    measure: None,
                    outcome: e.sqlstate().to_string(),
                    from_state: None,
                    channel: None,
                    attempt: None,
                    detail: Some(e.to_string()),
                });
                rule_report.error = Some(e.to_string());
                return (rule_report, Vec::new());
            }
        };
        crate::telemetry::global().alert_evaluation("ok");
        let period = evaluation.period;
        rule_report.period = Some(period.to_string());
        rule_report.sql = Some(evaluation.sql.clone());
        let mut notifications = Vec::new();
        let mut published = Vec::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let mut scratch;
            let instances = if options.dry_run {
                scratch = state.rules.get(&rule.name).cloned().unwrap_or_default();
                &mut scratch
            } else {
                state.rules.entry(rule.name.clone()).or_default()
            };
            for reading in &evaluation.readings {
                let instance = instances
                    .entry(reading.key.clone())
                    .or_insert_with(|| Instance {
                        dimensions: reading.dimensions.clone(),
                        since: Some(at),
                        ..Instance::default()
                    });
                if reading.value.is_some() {
                    instance.value = reading.value;
                }
                let step = state::step(
                    instance,
                    reading.verdict,
                    at,
                    rule.for_evaluations,
                    rule.repeat_every,
                );
                self.record(Event {
                    at,
                    rule: rule.name.clone(),
                    kind: "evaluation",
                    instance: reading.key.clone(),
                    period: Some(period.to_string()),
                    value: reading.value,
                    comparison: reading.comparison,
                    measure: reading.measure,
                    outcome: format!("{:?}", reading.verdict).to_lowercase(),
                    from_state: None,
                    channel: None,
                    attempt: None,
                    detail: None,
                });
                if let Some(from) = step.from {
                    let to = instance.status;
                    crate::telemetry::global().alert_transition(to.name());
                    self.record(Event {
                        at,
                        rule: rule.name.clone(),
                        kind: "transition",
                        instance: reading.key.clone(),
                        period: Some(period.to_string()),
                        value: reading.value,
                        comparison: reading.comparison,
                        measure: reading.measure,
                        outcome: to.name().to_string(),
                        from_state: Some(from.name().to_string()),
                        channel: None,
                        attempt: None,
                        detail: None,
                    });
                    rule_report.transitions.push(Transition {
                        instance: reading.key.clone(),
                        from: from.name(),
                        to: to.name(),
                        notice: step.notice.map(|n| n.name()),
                    });
                    published.push(serde_json::json!({
                        "rule": rule.name,
                        "metric": rule.metric,
                        "instance": reading.key,
                        "dimensions": reading.dimensions.iter().cloned().collect::<BTreeMap<_, _>>(),
                        "from": from.name(),
                        "to": to.name(),
                        "value": reading.value,
                        "comparison_value": reading.comparison,
                        "period": period.to_string(),
                        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    }));
                } else if let Some(notice) = step.notice {
                    rule_report.transitions.push(Transition {
                        instance: reading.key.clone(),
                        from: instance.status.name(),
                        to: instance.status.name(),
                        notice: Some(notice.name()),
                    });
                }
                if let Some(notice) = step.notice {
                    notifications.push(Notification::new(
                        rule,
                        notice,
                        reading,
                        period,
                        &evaluation.sql,
                        &at,
                    ));
                }
            }
            if !options.dry_run {
                state.evaluated.insert(rule.name.clone(), at);
            }
        }
        if !options.dry_run
            && let Some(hub) = &self.hub
        {
            for payload in published {
                let text = payload.to_string();
                let sent = hub.publish(crate::server::notify::ALERTS_CHANNEL, &text, 0, |reader| {
                    visible_to(engine, rule, reader)
                });
                tracing::debug!(rule = %rule.name, sent, "alert transition announced");
            }
        }
        rule_report.readings = evaluation.readings;
        (rule_report, notifications)
    }
}

/// How often the server looks for rules whose schedule has come.
pub const SCHEDULE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Evaluate the served model's rules on their schedules, with time from `clock`, until
/// the process ends; `served` gives the engine of the model served at each tick. One run
/// at a time; a slow run delays the next tick, never doubles.
pub fn schedule(
    alerts: Arc<Alerts>,
    served: impl Fn() -> Arc<Engine> + Send + Sync + 'static,
    clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SCHEDULE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let engine = served();
            let model = &engine.semantics().model;
            if model.alerts.is_empty() && model.tables.iter().all(|t| t.quality.is_none()) {
                continue;
            }
            let options = RunOptions {
                dry_run: false,
                only_due: true,
            };
            let report = alerts.run(&engine, clock(), options).await;
            for rule in &report.rules {
                tracing::info!(
                    rule = %rule.rule,
                    instances = rule.readings.len(),
                    transitions = rule.transitions.len(),
                    error = rule.error.as_deref().unwrap_or(""),
                    duration_ms = rule.duration_ms,
                    "alert evaluated"
                );
            }
        }
    });
}

/// The channel ready to send: URL and secret from the environment.
fn target(channel: &crate::model::alerts::Channel) -> Target {
    let url_env = channel.url_env.get_ref();
    let url = crate::config::secret(url_env)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| format!("${url_env} is not set: the channel has no URL"));
    Target {
        name: channel.name.get_ref().clone(),
        kind: channel
            .kind()
            .unwrap_or(crate::model::alerts::ChannelKind::Webhook),
        url,
        secret: channel
            .secret_env
            .as_ref()
            .and_then(|v| crate::config::secret(v.get_ref())),
        retries: channel.retries.unwrap_or(3),
        backoff: channel.backoff(),
    }
}

/// Whether `reader` may see `rule` whole (its events, instances and values): the metric
/// and view are theirs to query, and either the rule runs as them or they read the
/// view without a row filter (so no row of the rule's is hidden from them).
pub fn visible_to(engine: &Engine, rule: &Rule, reader: &str) -> bool {
    visible_in(engine.semantics_for(reader), reader, rule)
}

/// [`visible_to`], with the model as `reader` may see it.
pub fn visible_in(semantics: &crate::bind::Semantics, reader: &str, rule: &Rule) -> bool {
    if let Some(table) = &rule.table {
        // A quality rule: seen by whoever reads a metric of the table.
        return reader == rule.run_as
            || semantics
                .metrics
                .keys()
                .filter(|m| !semantics.access.denied_metrics.contains_key(*m))
                .any(|m| {
                    crate::model::lineage::of(&semantics.model, m)
                        .tables
                        .contains(table)
                });
    }
    if semantics.access.denied_metrics.contains_key(&rule.metric)
        || semantics.access.denied_views.contains_key(&rule.view)
    {
        return false;
    }
    let Some(view) = semantics.view(&rule.view) else {
        return false;
    };
    if view.column(&rule.metric).is_none() {
        return false;
    }
    reader == rule.run_as || view.row_filter.is_none()
}

/// The first occurrence of `schedule` after `after`, in the model's time zone.
pub fn next_occurrence(
    schedule: &croner::Cron,
    zone: crate::time_zone::TimeZone,
    after: &DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match zone {
        crate::time_zone::TimeZone::Named(tz) => schedule
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        crate::time_zone::TimeZone::Fixed(offset) => schedule
            .find_next_occurrence(&after.with_timezone(&offset), false)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
}
