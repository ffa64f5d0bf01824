//! What a run of the alerts did, as `kpitables alerts run` prints it (text or JSON).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::deliver::Delivery;
use super::evaluate::Reading;

/// What one run evaluated and sent, for `kpitables alerts run` and the log.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The evaluation time.
    #[serde(with = "super::state::rfc3339")]
    pub at: DateTime<Utc>,
    /// The data quality checks that ran.
    pub quality: Vec<super::quality::CheckResult>,
    /// One entry per rule evaluated.
    pub rules: Vec<RuleReport>,
    /// Every message and its attempts.
    pub deliveries: Vec<Delivery>,
}

/// One rule's evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// The rule.
    pub rule: String,
    /// The user it ran as.
    pub run_as: String,
    /// The period evaluated.
    pub period: Option<String>,
    /// The statement.
    pub sql: Option<String>,
    /// Why it could not be evaluated.
    pub error: Option<String>,
    /// Time to evaluate, in milliseconds.
    pub duration_ms: f64,
    /// One reading per instance.
    pub readings: Vec<Reading>,
    /// State changes and notifications: (instance, from, to, notice).
    pub transitions: Vec<Transition>,
}

/// A state change of an instance, with its notification if any.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// The instance.
    pub instance: String,
    /// State before.
    pub from: &'static str,
    /// State after.
    pub to: &'static str,
    /// `firing`, `repeat` or `resolved` when notified.
    pub notice: Option<&'static str>,
}

impl Report {
    /// The report for people: each rule's period, instances and transitions, then each
    /// message with its body and attempts.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "alerts evaluated at {}", self.at.to_rfc3339());
        for c in &self.quality {
            let _ = writeln!(
                out,
                "quality {} {}: {} ({}; allowed: {})",
                c.table,
                c.check,
                c.status.as_str(),
                c.value,
                c.threshold
            );
        }
        for rule in &self.rules {
            let _ = writeln!(
                out,
                "\nrule {} (as {}){}: {:.1} ms",
                rule.rule,
                rule.run_as,
                rule.period
                    .as_deref()
                    .map(|p| format!(", period {p}"))
                    .unwrap_or_default(),
                rule.duration_ms
            );
            if let Some(e) = &rule.error {
                let _ = writeln!(out, "  error: {e}");
                continue;
            }
            for r in &rule.readings {
                let value = match (r.value, r.verdict) {
                    (Some(v), _) => super::message::number(v),
                    (None, super::evaluate::Verdict::NoData) => "no data".into(),
                    (None, _) => "-".into(),
                };
                let measure = r.measure.map(super::message::number).unwrap_or_default();
                let key = if r.key.is_empty() { "(all)" } else { &r.key };
                let _ = writeln!(out, "  {key}: {value} {measure} -> {:?}", r.verdict);
            }
            for t in &rule.transitions {
                let key = if t.instance.is_empty() {
                    "(all)"
                } else {
                    &t.instance
                };
                let _ = writeln!(
                    out,
                    "  {key}: {} -> {}{}",
                    t.from,
                    t.to,
                    t.notice
                        .map(|n| format!(", notify {n}"))
                        .unwrap_or_default()
                );
            }
        }
        for d in &self.deliveries {
            let _ = writeln!(
                out,
                "\nmessage to {} ({}, {} notification{}):\n{}",
                d.channel,
                d.kind,
                d.notifications,
                if d.notifications == 1 { "" } else { "s" },
                d.body
            );
            for a in &d.attempts {
                let _ = writeln!(
                    out,
                    "  attempt {}: {}{} {}",
                    a.attempt,
                    a.outcome,
                    a.status.map(|s| format!(" HTTP {s}")).unwrap_or_default(),
                    a.detail
                );
            }
        }
        out
    }

    /// Whether every rule was evaluated and every message delivered (or not meant to be
    /// sent).
    pub fn succeeded(&self) -> bool {
        self.rules.iter().all(|r| r.error.is_none())
            && self
                .quality
                .iter()
                .all(|c| c.status != super::quality::Status::Error)
            && self
                .deliveries
                .iter()
                .all(|d| d.attempts.last().is_some_and(|a| a.outcome != "failed"))
    }
}
