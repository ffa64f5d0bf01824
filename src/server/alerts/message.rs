//! What a notification says, and the body each kind of channel gets: the generic
//! webhook's JSON (every field, documented in `docs/alerts.md`), Slack's `text`, and the
//! DingTalk, Feishu/Lark and WeCom group robots' published message formats with their
//! signatures.
//!
//! Bodies are built from structs (their fields serialize in declaration order), so the
//! same notification at the same clock is the same bytes.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::evaluate::{Reading, Rule};
use super::period::Period;
use super::state::NoticeKind;
use crate::model::alerts::{ChannelKind, CompareTo, Condition, Direction};

/// One notification: an instance that started firing, is still firing, or resolved.
/// This is the generic webhook's body.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// `firing`, `repeat` or `resolved`.
    pub state: &'static str,
    /// The rule.
    pub rule: String,
    /// What the rule is for.
    pub rule_description: String,
    /// `info`, `warning` or `critical`.
    pub severity: &'static str,
    /// The metric.
    pub metric: String,
    /// Its business label.
    pub label: String,
    /// Its definition in words (口径).
    pub description: String,
    /// Its owner.
    pub owner: String,
    /// The view it was read from.
    pub view: String,
    /// The instance's dimension values.
    pub dimensions: BTreeMap<String, Option<String>>,
    /// The metric's value in the period.
    pub value: Option<f64>,
    /// What it was compared with (earlier period, target, usual mean).
    pub comparison_value: Option<f64>,
    /// The number held against the threshold (the value, change, attainment or z-score).
    pub measure: Option<f64>,
    /// The threshold.
    pub threshold: Option<f64>,
    /// The condition in words.
    pub condition: String,
    /// The period evaluated, as a date or a range of dates.
    pub period: String,
    /// Its first day.
    pub period_start: String,
    /// The day after its last.
    pub period_end: String,
    /// When it was evaluated.
    pub evaluated_at: String,
    /// The user it was computed as.
    pub run_as: String,
    /// The statement that computed it; prefix `EXPLAIN` to see the SQL sent to the
    /// warehouse.
    pub sql: String,
    /// One line in words.
    pub message: String,
}

impl Notification {
    /// The notification of `reading` of `rule`.
    pub fn new(
        rule: &Rule,
        kind: NoticeKind,
        reading: &Reading,
        period: Period,
        sql: &str,
        at: &DateTime<Utc>,
    ) -> Notification {
        let condition = describe(rule);
        let instance = if reading.key.is_empty() {
            String::new()
        } else {
            format!(" {}", reading.key)
        };
        let value = reading
            .value
            .map(number)
            .unwrap_or_else(|| "no data".into());
        let message = format!(
            "[{}] {}{}: {} {} ({}) on {}",
            kind.name().to_uppercase(),
            rule.name,
            instance,
            rule.metric,
            value,
            measured(rule, reading),
            period
        );
        Notification {
            state: kind.name(),
            rule: rule.name.clone(),
            rule_description: rule.description.clone(),
            severity: rule.severity.name(),
            metric: rule.metric.clone(),
            label: rule.metric_label.clone(),
            description: rule.metric_description.clone(),
            owner: rule.owner.clone(),
            view: rule.view.clone(),
            dimensions: reading.dimensions.iter().cloned().collect(),
            value: reading.value,
            comparison_value: reading.comparison,
            measure: reading.measure,
            threshold: rule.threshold(),
            condition,
            period: period.to_string(),
            period_start: period.start.to_string(),
            period_end: period.end.to_string(),
            evaluated_at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            run_as: rule.run_as.clone(),
            sql: sql.to_string(),
            message,
        }
    }

    fn title(&self) -> String {
        let name = if self.label.is_empty() {
            &self.metric
        } else {
            &self.label
        };
        format!("[{}] {}", self.state.to_uppercase(), name)
    }

    /// The markdown the chat robots show.
    pub fn markdown(&self) -> String {
        let mut lines = vec![format!("### {}", self.title())];
        lines.push(format!("**{}** ({})", self.rule, self.severity));
        for (name, value) in &self.dimensions {
            lines.push(format!("- {name}: {}", value.as_deref().unwrap_or("NULL")));
        }
        let value = self.value.map(number).unwrap_or_else(|| "no data".into());
        lines.push(format!("- {}: {value}", self.metric));
        lines.push(format!("- condition: {}", self.condition));
        if let Some(c) = self.comparison_value {
            lines.push(format!("- compared with: {}", number(c)));
        }
        lines.push(format!("- period: {}", self.period));
        if !self.description.is_empty() {
            lines.push(format!("- 口径: {}", self.description));
        }
        if !self.owner.is_empty() {
            lines.push(format!("- owner: {}", self.owner));
        }
        lines.join("\n")
    }
}

/// A number as messages show it: integers without decimals, others with two.
pub fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn direction_word(direction: Direction) -> &'static str {
    match direction {
        Direction::Up => "up",
        Direction::Down => "down",
        Direction::Either => "up or down",
    }
}

/// The rule's condition in words.
pub fn describe(rule: &Rule) -> String {
    match rule.condition {
        Condition::Above(t) => format!("above {}", number(t)),
        Condition::Below(t) => format!("below {}", number(t)),
        Condition::Change {
            compare_to,
            percent,
            direction,
            threshold,
        } => format!(
            "{} more than {}{} against {}",
            direction_word(direction),
            number(threshold),
            if percent { "%" } else { "" },
            match compare_to {
                CompareTo::PreviousPeriod => "the previous period",
                CompareTo::SamePeriodLastYear => "the same period last year",
            }
        ),
        Condition::AttainmentBelow(t) => format!(
            "attainment of {} below {}%",
            rule.target.as_deref().unwrap_or("target"),
            number(t * 100.0)
        ),
        Condition::Anomaly {
            periods,
            threshold,
            direction,
        } => format!(
            "{} more than {} standard deviations from the mean of the {periods} periods before",
            direction_word(direction),
            number(threshold)
        ),
        Condition::NoData => "no data".into(),
        Condition::Quality => format!(
            "a data quality check of table {} fails",
            rule.table.as_deref().unwrap_or("")
        ),
    }
}

fn measured(rule: &Rule, reading: &Reading) -> String {
    let m = reading.measure;
    match rule.condition {
        Condition::Change { percent: true, .. } => m
            .map(|m| format!("{}{}%", if m >= 0.0 { "+" } else { "" }, number(m)))
            .unwrap_or_else(|| "no comparison".into()),
        Condition::Change { .. } => m
            .map(|m| format!("{}{}", if m >= 0.0 { "+" } else { "" }, number(m)))
            .unwrap_or_else(|| "no comparison".into()),
        Condition::AttainmentBelow(_) => m
            .map(|m| format!("attainment {}%", number(m * 100.0)))
            .unwrap_or_else(|| "no target".into()),
        Condition::Anomaly { .. } => m
            .map(|m| format!("z-score {}", number(m)))
            .unwrap_or_else(|| "no usual range".into()),
        _ => describe(rule),
    }
}

/// A message for one channel: one notification or a digest of several.
#[derive(Debug, Clone)]
pub struct Message {
    /// The notifications it carries.
    pub notifications: Vec<Notification>,
}

impl Message {
    fn title(&self) -> String {
        match self.notifications.as_slice() {
            [one] => one.title(),
            many => format!("kpitables: {} alert notifications", many.len()),
        }
    }

    fn markdown(&self) -> String {
        match self.notifications.as_slice() {
            [one] => one.markdown(),
            many => {
                let mut lines = vec![format!("### {}", self.title())];
                lines.extend(many.iter().map(|n| format!("- {}", n.message)));
                lines.join("\n")
            }
        }
    }

    /// The request for a channel of `kind`: the URL (with DingTalk's signature) and the
    /// JSON body. `now` is the signing time; `secret` the channel's signing secret.
    pub fn request(
        &self,
        kind: ChannelKind,
        url: &str,
        secret: Option<&str>,
        now: &DateTime<Utc>,
        at_mobiles: &[String],
    ) -> (String, Vec<u8>) {
        let body = match kind {
            ChannelKind::Webhook => match self.notifications.as_slice() {
                [one] => serde_json::to_vec(one),
                many => serde_json::to_vec(&Digest {
                    digest: true,
                    notifications: many,
                }),
            },
            ChannelKind::Slack => serde_json::to_vec(&SlackBody {
                text: self.markdown(),
            }),
            ChannelKind::DingTalk => {
                let mut text = self.markdown();
                for mobile in at_mobiles {
                    text.push_str(&format!(" @{mobile}"));
                }
                serde_json::to_vec(&DingTalkBody {
                    msgtype: "markdown",
                    markdown: DingTalkMarkdown {
                        title: self.title(),
                        text,
                    },
                    at: DingTalkAt {
                        at_mobiles: at_mobiles.to_vec(),
                        is_at_all: false,
                    },
                })
            }
            ChannelKind::Feishu => {
                let (timestamp, sign) = match secret {
                    Some(secret) => {
                        let ts = now.timestamp().to_string();
                        let sign = feishu_sign(&ts, secret);
                        (Some(ts), Some(sign))
                    }
                    None => (None, None),
                };
                let firing = self.notifications.iter().any(|n| n.state != "resolved");
                serde_json::to_vec(&FeishuBody {
                    timestamp,
                    sign,
                    msg_type: "interactive",
                    card: FeishuCard {
                        header: FeishuHeader {
                            title: FeishuText {
                                tag: "plain_text",
                                content: self.title(),
                            },
                            template: if firing { "red" } else { "green" },
                        },
                        elements: vec![FeishuText {
                            tag: "markdown",
                            content: self.markdown(),
                        }],
                    },
                })
            }
            ChannelKind::WeCom => serde_json::to_vec(&WeComBody {
                msgtype: "markdown",
                markdown: WeComMarkdown {
                    content: self.markdown(),
                },
            }),
        };
        let url = match (kind, secret) {
            (ChannelKind::DingTalk, Some(secret)) => {
                let ts = now.timestamp_millis().to_string();
                let sign: String =
                    form_urlencoded::byte_serialize(dingtalk_sign(&ts, secret).as_bytes())
                        .collect();
                let joiner = if url.contains('?') { '&' } else { '?' };
                format!("{url}{joiner}timestamp={ts}&sign={sign}")
            }
            _ => url.to_string(),
        };
        // Serializing these structs of strings and numbers cannot fail.
        (url, body.unwrap_or_default())
    }
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, message);
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// DingTalk: Base64 of HMAC-SHA256 keyed by the secret over `timestamp + "\n" + secret`
/// (the caller URL-encodes it).
pub fn dingtalk_sign(timestamp_ms: &str, secret: &str) -> String {
    hmac_base64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// Feishu / Lark: Base64 of HMAC-SHA256 keyed by `timestamp + "\n" + secret` over an
/// empty message.
pub fn feishu_sign(timestamp_s: &str, secret: &str) -> String {
    hmac_base64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

#[derive(Serialize)]
struct Digest<'a> {
    digest: bool,
    notifications: &'a [Notification],
}

#[derive(Serialize)]
struct SlackBody {
    text: String,
}

#[derive(Serialize)]
struct DingTalkBody {
    msgtype: &'static str,
    markdown: DingTalkMarkdown,
    at: DingTalkAt,
}

#[derive(Serialize)]
struct DingTalkMarkdown {
    title: String,
    text: String,
}

#[derive(Serialize)]
struct DingTalkAt {
    #[serde(rename = "atMobiles")]
    at_mobiles: Vec<String>,
    #[serde(rename = "isAtAll")]
    is_at_all: bool,
}

#[derive(Serialize)]
struct FeishuBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sign: Option<String>,
    msg_type: &'static str,
    card: FeishuCard,
}

#[derive(Serialize)]
struct FeishuCard {
    header: FeishuHeader,
    elements: Vec<FeishuText>,
}

#[derive(Serialize)]
struct FeishuHeader {
    title: FeishuText,
    template: &'static str,
}

#[derive(Serialize)]
struct FeishuText {
    tag: &'static str,
    content: String,
}

#[derive(Serialize)]
struct WeComBody {
    msgtype: &'static str,
    markdown: WeComMarkdown,
}

#[derive(Serialize)]
struct WeComMarkdown {
    content: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_follow_the_published_algorithms() {
        // HMAC-SHA256 values computed independently (Python's hmac module).
        assert_eq!(
            super::dingtalk_sign("1700000000000", "SECabc"),
            "jcUpW0QmtKduN03n4JqQ0PBosVjqnM8gU7fIIvsDmCM="
        );
        assert_eq!(
            super::feishu_sign("1700000000", "abc"),
            "VIS10b0EBvzzSdFnuk4tznEmK5wHaruvf/WnViv2yR4="
        );
    }
}
