//! Sending messages: one HTTP POST per message, retried with doubling waits, each
//! attempt recorded; each robot's published rate limit kept by merging what is due into
//! digests rather than dropping or flooding.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::message::{Message, Notification};
use crate::model::alerts::ChannelKind;

/// Notifications per digest message at most (a robot's message has a size limit).
pub const DIGEST_SIZE: usize = 25;

/// A channel ready to send to: its URL and secret read from the environment.
#[derive(Debug, Clone)]
pub struct Target {
    /// Channel name.
    pub name: String,
    /// Its kind.
    pub kind: ChannelKind,
    /// The URL, or why there is none.
    pub url: Result<String, String>,
    /// The signing secret, if the channel has one.
    pub secret: Option<String>,
    /// Attempts after the first.
    pub retries: u32,
    /// The first wait between attempts.
    pub backoff: Duration,
}

/// One attempt to deliver a message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attempt {
    /// 1 for the first.
    pub attempt: u32,
    /// `delivered`, `failed` or `not_sent` (dry run, or no URL).
    pub outcome: &'static str,
    /// HTTP status, when a response came.
    pub status: Option<u16>,
    /// What went wrong, or the robot's answer.
    pub detail: String,
}

/// A message for a channel and what became of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    /// Channel name.
    pub channel: String,
    /// Channel kind.
    pub kind: &'static str,
    /// The request body.
    pub body: String,
    /// How many notifications it carries (more than one: a digest).
    pub notifications: usize,
    /// The rules and instances it carries (`rule region=East`).
    pub carries: Vec<String>,
    /// Each attempt.
    pub attempts: Vec<Attempt>,
}

/// Sends messages and remembers what each channel sent recently (its rate limit).
#[derive(Debug)]
pub struct Sender {
    client: Option<reqwest::Client>,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Default for Sender {
    fn default() -> Self {
        Sender::new()
    }
}

impl Sender {
    /// A sender with an HTTP client (TLS with the system's certificates; ring).
    pub fn new() -> Sender {
        let _ = rustls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("kpitables/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no HTTP client: alerts cannot be sent"))
            .ok();
        Sender {
            client,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// How many messages the channel may send now without passing a rate limit.
    fn budget(&self, target: &Target) -> usize {
        let limits = target.kind.rate_limits();
        let Some(longest) = limits.iter().map(|(_, w)| *w).max() else {
            return usize::MAX;
        };
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let times = sent.entry(target.name.clone()).or_default();
        let now = Instant::now();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= longest)
        {
            times.pop_front();
        }
        limits
            .iter()
            .map(|(n, window)| {
                let recent = times
                    .iter()
                    .filter(|t| now.duration_since(**t) < *window)
                    .count();
                n.saturating_sub(recent)
            })
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Wait until the channel may send one more message, then count it.
    async fn take(&self, target: &Target) {
        loop {
            if self.budget(target) > 0 {
                let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
                sent.entry(target.name.clone())
                    .or_default()
                    .push_back(Instant::now());
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The messages for `notifications` due on a channel now: one each while the rate
    /// limit allows, else digests of up to [`DIGEST_SIZE`].
    pub fn plan(&self, target: &Target, notifications: Vec<Notification>) -> Vec<Message> {
        if notifications.is_empty() {
            return Vec::new();
        }
        if notifications.len() <= self.budget(target) {
            return notifications
                .into_iter()
                .map(|n| Message {
                    notifications: vec![n],
                })
                .collect();
        }
        notifications
            .chunks(DIGEST_SIZE)
            .map(|chunk| Message {
                notifications: chunk.to_vec(),
            })
            .collect()
    }

    /// Send `message` to `target` (unless `dry_run`), retrying failures.
    pub async fn send(
        &self,
        target: &Target,
        message: &Message,
        now: &DateTime<Utc>,
        at_mobiles: &[String],
        dry_run: bool,
    ) -> Delivery {
        let url = target.url.as_deref().unwrap_or("");
        let (url, body) =
            message.request(target.kind, url, target.secret.as_deref(), now, at_mobiles);
        let mut delivery = Delivery {
            channel: target.name.clone(),
            kind: target.kind.name(),
            body: String::from_utf8_lossy(&body).into_owned(),
            notifications: message.notifications.len(),
            carries: message
                .notifications
                .iter()
                .map(|n| {
                    let key: Vec<String> = n
                        .dimensions
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("NULL")))
                        .collect();
                    format!("{} {}", n.rule, key.join(","))
                        .trim_end()
                        .to_string()
                })
                .collect(),
            attempts: Vec::new(),
        };
        if dry_run {
            delivery.attempts.push(Attempt {
                attempt: 1,
                outcome: "not_sent",
                status: None,
                detail: "dry run".into(),
            });
            return delivery;
        }
        if let Err(why) = &target.url {
            delivery.attempts.push(Attempt {
                attempt: 1,
                outcome: "not_sent",
                status: None,
                detail: why.clone(),
            });
            return delivery;
        }
        let Some(client) = &self.client else {
            delivery.attempts.push(Attempt {
                attempt: 1,
                outcome: "not_sent",
                status: None,
                detail: "no HTTP client".into(),
            });
            return delivery;
        };
        let mut wait = target.backoff;
        for attempt in 1..=target.retries.saturating_add(1) {
            self.take(target).await;
            let result = client
                .post(&url)
                .header("content-type", "application/json; charset=utf-8")
                .body(body.clone())
                .send()
                .await;
            let (outcome, status, detail) = match result {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let refused = robot_error(&text);
                    match (status.is_success(), refused) {
                        (true, None) => ("delivered", Some(status.as_u16()), text),
                        (true, Some(why)) => ("failed", Some(status.as_u16()), why),
                        (false, _) => ("failed", Some(status.as_u16()), text),
                    }
                }
                Err(e) => ("failed", None, redact(&e.to_string(), &url)),
            };
            let detail: String = detail.chars().take(500).collect();
            crate::telemetry::global().alert_delivery(target.kind.name(), outcome);
            tracing::info!(channel = %target.name, attempt, outcome, status, "alert delivery");
            delivery.attempts.push(Attempt {
                attempt,
                outcome,
                status,
                detail,
            });
            if outcome == "delivered" {
                break;
            }
            if attempt <= target.retries {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        delivery
    }
}

/// The robots answer HTTP 200 with an error code in the body: DingTalk and WeCom
/// `errcode`, Feishu `code` (or `StatusCode`).
fn robot_error(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    for key in ["errcode", "code", "StatusCode"] {
        if let Some(code) = value.get(key).and_then(serde_json::Value::as_i64)
            && code != 0
        {
            return Some(text.to_string());
        }
    }
    None
}

/// An error message without the URL's query (the robot's token).
fn redact(message: &str, url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if !query.is_empty() => message.replace(query, "***"),
        _ => message.to_string(),
    }
}

/// rustls needs a process-wide crypto provider for the HTTP client: ring, already
/// built for SCRAM and the server's TLS.
fn rustls_provider() -> Result<(), std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider>> {
    tokio_rustls::rustls::crypto::ring::default_provider().install_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn robots_report_errors_in_the_body() {
        assert!(super::robot_error(r#"{"errcode":0,"errmsg":"ok"}"#).is_none());
        assert!(super::robot_error(r#"{"errcode":310000,"errmsg":"sign not match"}"#).is_some());
        assert!(super::robot_error(r#"{"code":19021,"msg":"sign match fail"}"#).is_some());
        assert!(super::robot_error("ok").is_none());
    }
}
