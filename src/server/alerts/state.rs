//! The state of each alert instance (ok → pending → firing → resolved → ok) and the
//! state file that keeps it across restarts.
//!
//! [`step`] is the whole state machine, a pure function of the state, the verdict of an
//! evaluation, the time and the rule's `for` and `repeat_every`: it says whether the
//! state changed and whether to notify (on firing, on resolving, and every
//! `repeat_every` while firing; never while it stays ok or stays firing otherwise).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::evaluate::Verdict;
use crate::error::{Error, Result};

/// The state of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not breaching.
    #[default]
    Ok,
    /// Breaching, fewer consecutive times than the rule's `for`.
    Pending,
    /// Breaching: notified.
    Firing,
    /// Stopped breaching after firing: notified; ok at the next evaluation that does not
    /// breach.
    Resolved,
}

impl Status {
    /// The name shown in `kp.alerts` and messages.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Pending => "pending",
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// What a notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// It started firing.
    Firing,
    /// Still firing, `repeat_every` after the last notification.
    Repeat,
    /// It stopped.
    Resolved,
}

impl NoticeKind {
    /// The name used in messages and events.
    pub fn name(self) -> &'static str {
        match self {
            NoticeKind::Firing => "firing",
            NoticeKind::Repeat => "repeat",
            NoticeKind::Resolved => "resolved",
        }
    }
}

/// One instance's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Instance {
    /// Its dimension values.
    pub dimensions: Vec<(String, Option<String>)>,
    /// The state.
    pub status: Status,
    /// Consecutive breaching evaluations.
    pub breaches: u32,
    /// When the state last changed.
    #[serde(with = "rfc3339::option", default)]
    pub since: Option<DateTime<Utc>>,
    /// The value of the last evaluation.
    pub value: Option<f64>,
    /// When it was last evaluated.
    #[serde(with = "rfc3339::option", default)]
    pub evaluated_at: Option<DateTime<Utc>>,
    /// When it was last notified.
    #[serde(with = "rfc3339::option", default)]
    pub notified_at: Option<DateTime<Utc>>,
}

/// The result of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The state before, when it changed.
    pub from: Option<Status>,
    /// What to notify, if anything.
    pub notice: Option<NoticeKind>,
}

/// Apply an evaluation's verdict to an instance at `now`.
pub fn step(
    instance: &mut Instance,
    verdict: Verdict,
    now: DateTime<Utc>,
    for_evaluations: u32,
    repeat_every: Option<Duration>,
) -> Step {
    let before = instance.status;
    let mut notice = None;
    instance.evaluated_at = Some(now);
    match (instance.status, verdict) {
        (_, Verdict::NoData) => {}
        (Status::Ok | Status::Resolved | Status::Pending, Verdict::Breach) => {
            instance.breaches = if instance.status == Status::Pending {
                instance.breaches.saturating_add(1)
            } else {
                1
            };
            if instance.breaches >= for_evaluations.max(1) {
                instance.status = Status::Firing;
                notice = Some(NoticeKind::Firing);
            } else {
                instance.status = Status::Pending;
            }
        }
        (Status::Pending | Status::Resolved, Verdict::Clear | Verdict::Hold) => {
            instance.status = Status::Ok;
            instance.breaches = 0;
        }
        (Status::Ok, Verdict::Clear | Verdict::Hold) => {}
        (Status::Firing, Verdict::Breach | Verdict::Hold) => {
            if verdict == Verdict::Breach {
                instance.breaches = instance.breaches.saturating_add(1);
            }
            let due = match (repeat_every, instance.notified_at) {
                (Some(every), Some(last)) => {
                    now.signed_duration_since(last).to_std().unwrap_or_default() >= every
                }
                _ => false,
            };
            if due {
                notice = Some(NoticeKind::Repeat);
            }
        }
        (Status::Firing, Verdict::Clear) => {
            instance.status = Status::Resolved;
            instance.breaches = 0;
            notice = Some(NoticeKind::Resolved);
        }
    }
    if notice.is_some() {
        instance.notified_at = Some(now);
    }
    let from = (instance.status != before).then_some(before);
    if from.is_some() {
        instance.since = Some(now);
    }
    Step { from, notice }
}

/// The state of every rule's instances, kept in a JSON file when the server has one.
#[derive(Debug, Default)]
pub struct StateFile {
    path: Option<PathBuf>,
    /// rule → instance key → state.
    pub rules: BTreeMap<String, BTreeMap<String, Instance>>,
    /// rule → when it was last evaluated (for the schedule).
    pub evaluated: BTreeMap<String, DateTime<Utc>>,
    /// table → its row count at its last data quality check (for `row_count_change`
    /// from one run of `kpitables alerts run` to the next, and across a restart).
    pub row_counts: BTreeMap<String, i64>,
}

#[derive(Serialize, Deserialize, Default)]
struct OnDisk {
    rules: BTreeMap<String, BTreeMap<String, Instance>>,
    #[serde(default, with = "rfc3339::map")]
    evaluated: BTreeMap<String, DateTime<Utc>>,
    #[serde(default)]
    row_counts: BTreeMap<String, i64>,
}

impl StateFile {
    /// Read the state from `path` (none yet: empty); without a path, state in memory only.
    pub fn open(path: Option<&Path>) -> Result<StateFile> {
        let Some(path) = path else {
            return Ok(StateFile::default());
        };
        let disk = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str::<OnDisk>(&text).map_err(|e| {
                Error::Config(format!(
                    "the alert state file {} cannot be read: {e}; move it away to start from ok",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OnDisk::default(),
            Err(e) => {
                return Err(Error::io(
                    format!("cannot read the alert state file {}", path.display()),
                    e,
                ));
            }
        };
        Ok(StateFile {
            path: Some(path.to_path_buf()),
            rules: disk.rules,
            evaluated: disk.evaluated,
            row_counts: disk.row_counts,
        })
    }

    /// Write the state (to a temporary file renamed over the old one, so a crash never
    /// leaves half a file).
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let disk = OnDisk {
            rules: self.rules.clone(),
            evaluated: self.evaluated.clone(),
            row_counts: self.row_counts.clone(),
        };
        let text = serde_json::to_string_pretty(&disk)
            .map_err(|e| Error::Internal(format!("alert state: {e}")))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }
}

/// `DateTime<Utc>` as RFC 3339 text in the state file and reports (chrono's own serde
/// support is a feature the rest of the build does not use).
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize a time.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    /// Deserialize a time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// An optional time.
    pub mod option {
        use super::*;

        /// Serialize an optional time.
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        /// Deserialize an optional time.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            let text: Option<String> = Option::deserialize(d)?;
            text.map(|text| {
                DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
        }
    }

    /// A map of times.
    pub mod map {
        use std::collections::BTreeMap;

        use super::*;

        /// Serialize a map of times.
        pub fn serialize<S: Serializer>(
            m: &BTreeMap<String, DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let text: BTreeMap<&String, String> = m
                .iter()
                .map(|(k, t)| (k, t.to_rfc3339_opts(SecondsFormat::Micros, true)))
                .collect();
            serde::Serialize::serialize(&text, s)
        }

        /// Deserialize a map of times.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<BTreeMap<String, DateTime<Utc>>, D::Error> {
            let text: BTreeMap<String, String> = BTreeMap::deserialize(d)?;
            text.into_iter()
                .map(|(k, t)| {
                    DateTime::parse_from_rfc3339(&t)
                        .map(|t| (k, t.with_timezone(&Utc)))
                        .map_err(serde::de::Error::custom)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + minutes * 60, 0).unwrap()
    }

    fn run(
        verdicts: &[Verdict],
        for_n: u32,
        repeat: Option<Duration>,
    ) -> Vec<(Status, Option<NoticeKind>)> {
        let mut instance = Instance::default();
        verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let s = step(&mut instance, *v, t(i as i64 * 60), for_n, repeat);
                (instance.status, s.notice)
            })
            .collect()
    }

    #[test]
    fn one_firing_and_one_resolved_per_episode() {
        let out = run(&[Clear, Breach, Breach, Breach, Clear, Clear], 1, None);
        let notices: Vec<_> = out.iter().filter_map(|(_, n)| *n).collect();
        assert_eq!(notices, [NoticeKind::Firing, NoticeKind::Resolved]);
        assert_eq!(out.last().unwrap().0, Status::Ok);
        assert_eq!(out[4].0, Status::Resolved);
    }

    #[test]
    fn a_pending_period_that_does_not_fire() {
        let out = run(&[Breach, Breach, Clear, Breach, Breach, Breach], 3, None);
        assert_eq!(out[0].0, Status::Pending);
        assert_eq!(out[1].0, Status::Pending);
        assert_eq!(out[2], (Status::Ok, None));
        assert_eq!(out[5], (Status::Firing, Some(NoticeKind::Firing)));
        assert_eq!(out.iter().filter(|(_, n)| n.is_some()).count(), 1);
    }

    #[test]
    fn repeats_while_firing_and_holds_between_thresholds() {
        // Evaluations one hour apart; repeat every two hours.
        let out = run(
            &[Breach, Breach, Hold, Breach, Breach, NoData, Clear],
            1,
            Some(Duration::from_secs(7200)),
        );
        let notices: Vec<_> = out.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            notices,
            [
                Some(NoticeKind::Firing),
                None,
                Some(NoticeKind::Repeat),
                None,
                Some(NoticeKind::Repeat),
                None,
                Some(NoticeKind::Resolved)
            ]
        );
    }
}
