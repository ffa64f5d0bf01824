//! Alert rules (`[[alerts]]`) and the channels they are sent to (`[[channels]]`), as plain
//! data. What each key means is in `docs/alerts.md`; the checks are in [`check`], called by
//! the model's validation; evaluation and delivery are the `alerts` stage's.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::time::TimeGrain;

/// An alert rule: a metric of a view, evaluated on a schedule for one period, split by
/// dimensions into instances, each with its own state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique rule name.
    pub name: Spanned<String>,
    /// What the alert is for (shown in every message).
    #[serde(default)]
    pub description: String,
    /// The metric evaluated (every condition but `quality`).
    pub metric: Option<Spanned<String>>,
    /// For `quality`: the table whose data quality checks are watched.
    pub table: Option<Spanned<String>>,
    /// The view it is read from (default: the first view that has the metric).
    pub view: Option<Spanned<String>>,
    /// Dimensions to split by: one instance per combination of their values.
    #[serde(default)]
    pub by: Vec<Spanned<String>>,
    /// The time dimension the period applies to (default: the view's first time
    /// dimension).
    pub time: Option<Spanned<String>>,
    /// `day` (default), `week`, `month`, `quarter` or `year`.
    pub grain: Option<Spanned<String>>,
    /// `last_complete` (default: the last whole period before the evaluation, yesterday at
    /// day grain) or `to_date` (the current period up to the evaluation time).
    pub period: Option<Spanned<String>>,
    /// `above`, `below`, `change`, `attainment_below`, `anomaly`, `no_data` or `quality`.
    pub condition: Spanned<String>,
    /// The value the condition compares with (a percent for `change` in percent, a share
    /// such as 0.8 for `attainment_below`, a z-score for `anomaly`).
    pub threshold: Option<Spanned<f64>>,
    /// Hysteresis: a firing instance resolves only once its value is past this (default:
    /// the threshold).
    pub recover: Option<Spanned<f64>>,
    /// For `change`: `previous_period` or `same_period_last_year`.
    pub compare_to: Option<Spanned<String>>,
    /// For `change`: `percent` (default) or `absolute`.
    pub change: Option<Spanned<String>>,
    /// For `change` and `anomaly`: `up`, `down` or `either` (default).
    pub direction: Option<Spanned<String>>,
    /// For `attainment_below`: the target metric (the value is metric / target).
    pub target: Option<Spanned<String>>,
    /// For `anomaly`: how many earlier periods make the usual range (default 28).
    pub periods: Option<Spanned<u32>>,
    /// Consecutive breaching evaluations before the alert fires (default 1).
    #[serde(rename = "for")]
    pub for_evaluations: Option<Spanned<u32>>,
    /// Notify again while firing, this often (`"1 day"`, `"4 hours"`; default: never).
    pub repeat_every: Option<Spanned<String>>,
    /// `info`, `warning` (default) or `critical`.
    pub severity: Option<Spanned<String>>,
    /// When the server evaluates it: a cron expression in the model's time zone (default
    /// `"0 * * * *"`, every hour).
    pub schedule: Option<Spanned<String>>,
    /// The configured user the metric is computed as (its roles, row filter and masks
    /// apply to the value, the message and the events).
    pub run_as: Spanned<String>,
    /// Names of `[[channels]]` to notify.
    #[serde(default)]
    pub channels: Vec<Spanned<String>>,
    /// DingTalk: mobile numbers to @-mention in the group.
    #[serde(default)]
    pub at_mobiles: Vec<String>,
    /// Index into [`super::Model::files`]; set by the loader.
    #[serde(skip)]
    pub file: usize,
}

/// Where notifications go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Unique channel name.
    pub name: Spanned<String>,
    /// `webhook`, `slack`, `dingtalk`, `feishu` or `wecom`.
    pub kind: Spanned<String>,
    /// The environment variable holding the URL (it carries the robot's token or key).
    pub url_env: Spanned<String>,
    /// DingTalk and Feishu: the environment variable holding the signing secret.
    pub secret_env: Option<Spanned<String>>,
    /// Attempts after the first when a delivery fails (default 3).
    pub retries: Option<u32>,
    /// The wait before the first retry, doubled at each next one (default `"1s"`).
    pub backoff: Option<Spanned<String>>,
    /// Index into [`super::Model::files`]; set by the loader.
    #[serde(skip)]
    pub file: usize,
}

/// What an alert compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// The value is above the threshold.
    Above(f64),
    /// The value is below the threshold.
    Below(f64),
    /// The value moved against an earlier period by more than the threshold.
    Change {
        /// The earlier period.
        compare_to: CompareTo,
        /// Percent of the earlier value, or absolute.
        percent: bool,
        /// Which way counts.
        direction: Direction,
        /// The size of the move (percent points or units).
        threshold: f64,
    },
    /// The value divided by the target metric's is below the share.
    AttainmentBelow(f64),
    /// The value is more than `threshold` standard deviations from the mean of the
    /// `periods` periods before.
    Anomaly {
        /// Earlier periods that make the usual range.
        periods: u32,
        /// The z-score beyond which the value breaches.
        threshold: f64,
        /// Which way counts.
        direction: Direction,
    },
    /// The period has no row.
    NoData,
    /// A data quality check of the rule's table fails (one instance per check).
    Quality,
}

/// The earlier period of a `change` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareTo {
    /// The period just before.
    PreviousPeriod,
    /// The same dates one year before.
    SamePeriodLastYear,
}

/// Which way a move counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Increases only.
    Up,
    /// Decreases only.
    Down,
    /// Both.
    Either,
}

/// Which period an evaluation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    /// The last whole period before the evaluation time.
    LastComplete,
    /// The current period from its start to the evaluation time.
    ToDate,
}

/// Severity of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// The name as written in the model.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// JSON with every field of the notification (`docs/alerts.md`).
    Webhook,
    /// A Slack-compatible incoming webhook (`{"text": ...}`).
    Slack,
    /// A DingTalk group robot (markdown, signed).
    DingTalk,
    /// A Feishu / Lark group robot (interactive card, signed).
    Feishu,
    /// A WeCom (企业微信) group robot (markdown).
    WeCom,
}

impl ChannelKind {
    /// Parse the `kind` key.
    pub fn parse(text: &str) -> Option<ChannelKind> {
        Some(match text {
            "webhook" => ChannelKind::Webhook,
            "slack" => ChannelKind::Slack,
            "dingtalk" => ChannelKind::DingTalk,
            "feishu" | "lark" => ChannelKind::Feishu,
            "wecom" => ChannelKind::WeCom,
            _ => return None,
        })
    }

    /// The name as written in the model.
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::DingTalk => "dingtalk",
            ChannelKind::Feishu => "feishu",
            ChannelKind::WeCom => "wecom",
        }
    }

    /// The robot's published rate limits: (messages, per this long); the strictest
    /// first.
    pub fn rate_limits(self) -> &'static [(usize, Duration)] {
        const MINUTE: Duration = Duration::from_secs(60);
        const SECOND: Duration = Duration::from_secs(1);
        const PER_MINUTE_20: &[(usize, Duration)] = &[(20, MINUTE)];
        const FEISHU: &[(usize, Duration)] = &[(5, SECOND), (100, MINUTE)];
        const SLACK: &[(usize, Duration)] = &[(1, SECOND)];
        match self {
            ChannelKind::DingTalk | ChannelKind::WeCom => PER_MINUTE_20,
            ChannelKind::Feishu => FEISHU,
            ChannelKind::Slack => SLACK,
            ChannelKind::Webhook => &[],
        }
    }
}

impl AlertRule {
    /// The condition, once the rule is valid.
    pub fn condition(&self) -> Result<Condition, String> {
        let threshold = |what: &str| {
            self.threshold
                .as_ref()
                .map(|t| *t.get_ref())
                .ok_or_else(|| format!("condition \"{what}\" needs a threshold"))
        };
        let direction = match self.direction.as_ref().map(|d| d.get_ref().as_str()) {
            None | Some("either") => Direction::Either,
            Some("up") => Direction::Up,
            Some("down") => Direction::Down,
            Some(other) => {
                return Err(format!("direction \"{other}\" must be up, down or either"));
            }
        };
        Ok(match self.condition.get_ref().as_str() {
            "above" => Condition::Above(threshold("above")?),
            "below" => Condition::Below(threshold("below")?),
            "change" => {
                let compare_to = match self.compare_to.as_ref().map(|c| c.get_ref().as_str()) {
                    Some("previous_period") => CompareTo::PreviousPeriod,
                    Some("same_period_last_year") => CompareTo::SamePeriodLastYear,
                    Some(other) => {
                        return Err(format!(
                            "compare_to \"{other}\" must be previous_period or same_period_last_year"
                        ));
                    }
                    None => {
                        return Err(
                            "condition \"change\" needs compare_to = \"previous_period\" or \"same_period_last_year\""
                                .into(),
                        );
                    }
                };
                let percent = match self.change.as_ref().map(|c| c.get_ref().as_str()) {
                    None | Some("percent") => true,
                    Some("absolute") => false,
                    Some(other) => {
                        return Err(format!("change \"{other}\" must be percent or absolute"));
                    }
                };
                let threshold = threshold("change")?;
                if threshold < 0.0 {
                    return Err(
                        "the threshold of a change is its size (not negative); direction says which way"
                            .into(),
                    );
                }
                Condition::Change {
                    compare_to,
                    percent,
                    direction,
                    threshold,
                }
            }
            "attainment_below" => {
                if self.target.is_none() {
                    return Err(
                        "condition \"attainment_below\" needs target = \"<target metric>\"".into(),
                    );
                }
                Condition::AttainmentBelow(threshold("attainment_below")?)
            }
            "anomaly" => {
                let periods = self.periods.as_ref().map(|p| *p.get_ref()).unwrap_or(28);
                if !(3..=1000).contains(&periods) {
                    return Err("periods must be between 3 and 1000".into());
                }
                Condition::Anomaly {
                    periods,
                    threshold: threshold("anomaly")?,
                    direction,
                }
            }
            "no_data" => Condition::NoData,
            "quality" => {
                if self.table.is_none() {
                    return Err(
                        "condition \"quality\" needs table = \"<table with [tables.quality]>\""
                            .into(),
                    );
                }
                Condition::Quality
            }
            other => {
                return Err(format!(
                    "condition \"{other}\" must be above, below, change, attainment_below, anomaly, no_data or quality"
                ));
            }
        })
    }

    /// The grain of the evaluated period.
    pub fn grain(&self) -> Result<TimeGrain, String> {
        match self.grain.as_ref().map(|g| g.get_ref().as_str()) {
            None | Some("day") => Ok(TimeGrain::Day),
            Some("week") => Ok(TimeGrain::Week),
            Some("month") => Ok(TimeGrain::Month),
            Some("quarter") => Ok(TimeGrain::Quarter),
            Some("year") => Ok(TimeGrain::Year),
            Some(other) => Err(format!(
                "grain \"{other}\" must be day, week, month, quarter or year"
            )),
        }
    }

    /// Which period is evaluated.
    pub fn period(&self) -> Result<PeriodKind, String> {
        match self.period.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("last_complete") => Ok(PeriodKind::LastComplete),
            Some("to_date") => Ok(PeriodKind::ToDate),
            Some(other) => Err(format!(
                "period \"{other}\" must be last_complete or to_date"
            )),
        }
    }

    /// Consecutive breaching evaluations before firing.
    pub fn for_evaluations(&self) -> u32 {
        self.for_evaluations
            .as_ref()
            .map(|f| *f.get_ref())
            .unwrap_or(1)
            .max(1)
    }

    /// How often to notify again while firing.
    pub fn repeat_every(&self) -> Result<Option<Duration>, String> {
        self.repeat_every
            .as_ref()
            .map(|r| parse_interval(r.get_ref()))
            .transpose()
    }

    /// The severity.
    pub fn severity(&self) -> Result<Severity, String> {
        match self.severity.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("warning") => Ok(Severity::Warning),
            Some("info") => Ok(Severity::Info),
            Some("critical") => Ok(Severity::Critical),
            Some(other) => Err(format!(
                "severity \"{other}\" must be info, warning or critical"
            )),
        }
    }

    /// The cron expression of the schedule.
    pub fn schedule(&self) -> &str {
        self.schedule
            .as_ref()
            .map(|s| s.get_ref().as_str())
            .unwrap_or(DEFAULT_SCHEDULE)
    }

    /// The value past which a firing instance resolves.
    pub fn recover(&self) -> Option<f64> {
        self.recover.as_ref().map(|r| *r.get_ref())
    }
}

/// Every hour, on the hour.
pub const DEFAULT_SCHEDULE: &str = "0 * * * *";

/// A schedule as written in the model: a cron expression with five fields, or six with
/// seconds first.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(text)
        .map_err(|e| format!("schedule \"{text}\" is not a cron expression: {e}"))
}

impl Channel {
    /// The kind, once the channel is valid.
    pub fn kind(&self) -> Option<ChannelKind> {
        ChannelKind::parse(self.kind.get_ref())
    }

    /// The wait before the first retry.
    pub fn backoff(&self) -> Duration {
        self.backoff
            .as_ref()
            .and_then(|b| parse_interval(b.get_ref()).ok())
            .unwrap_or(Duration::from_secs(1))
    }
}

/// An interval as written in the model: a number and a unit (`"30s"`, `"500 ms"`, `"15
/// minutes"`, `"4 hours"`, `"1 day"`, `"2 weeks"`).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let usage = || {
        format!(
            "invalid interval \"{text}\": write a number and a unit such as \"30s\", \"15 minutes\", \"4 hours\" or \"1 day\""
        )
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(usage)?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().map_err(|_| usage())?;
    let seconds = match unit.trim().trim_end_matches('s') {
        "m" if unit.trim() == "ms" => 0.001,
        "" | "sec" | "second" => 1.0,
        "min" | "minute" | "m" => 60.0,
        "h" | "hour" | "hr" => 3600.0,
        "d" | "day" => 86_400.0,
        "w" | "week" => 604_800.0,
        _ => return Err(usage()),
    };
    let total = n * seconds;
    if !total.is_finite() || total <= 0.0 || total > 3.2e9 {
        return Err(usage());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Check one rule against the rest of the model; problems as (the key's span, reason).
pub fn check(model: &super::Model, rule: &AlertRule) -> Vec<(std::ops::Range<usize>, String)> {
    let mut issues = Vec::new();
    let mut issue = |span: std::ops::Range<usize>, reason: String| issues.push((span, reason));
    if let Err(e) = rule.condition() {
        issue(rule.condition.span(), e);
    }
    if let Err(e) = rule.grain() {
        issue(rule.grain.as_ref().map(|g| g.span()).unwrap_or_default(), e);
    }
    if let Err(e) = rule.period() {
        issue(
            rule.period.as_ref().map(|g| g.span()).unwrap_or_default(),
            e,
        );
    }
    if let Err(e) = rule.severity() {
        issue(
            rule.severity.as_ref().map(|g| g.span()).unwrap_or_default(),
            e,
        );
    }
    if let (Some(r), Err(e)) = (&rule.repeat_every, rule.repeat_every()) {
        issue(r.span(), e);
    }
    if let Err(e) = parse_schedule(rule.schedule()) {
        issue(
            rule.schedule.as_ref().map(|s| s.span()).unwrap_or_default(),
            e,
        );
    }
    if rule.condition.get_ref() == "quality" {
        if let Some(table) = &rule.table {
            match model
                .tables
                .iter()
                .find(|t| t.name.get_ref() == table.get_ref())
            {
                None => issue(
                    table.span(),
                    format!("unknown table \"{}\"", table.get_ref()),
                ),
                Some(t) if t.quality.is_none() => issue(
                    table.span(),
                    format!(
                        "table \"{}\" has no [tables.quality] checks",
                        table.get_ref()
                    ),
                ),
                Some(_) => {}
            }
        }
        check_channels(model, rule, &mut issue);
        return issues;
    }
    let Some(metric_key) = &rule.metric else {
        issue(
            rule.name.span(),
            format!("alert \"{}\" needs a metric", rule.name.get_ref()),
        );
        return issues;
    };
    let metric = metric_key.get_ref();
    if !model.metrics.iter().any(|m| m.name.get_ref() == metric) {
        issue(metric_key.span(), format!("unknown metric \"{metric}\""));
        return issues;
    }
    let view = match &rule.view {
        Some(v) => match model
            .views
            .iter()
            .find(|view| view.name.get_ref() == v.get_ref())
        {
            Some(view) => view,
            None => {
                issue(v.span(), format!("unknown view \"{}\"", v.get_ref()));
                return issues;
            }
        },
        None => match model
            .views
            .iter()
            .find(|v| v.metrics.iter().any(|m| m.get_ref() == metric))
        {
            Some(view) => view,
            None => {
                issue(
                    metric_key.span(),
                    format!("metric \"{metric}\" is in no view: name a view that has it"),
                );
                return issues;
            }
        },
    };
    let view_name = view.name.get_ref();
    let in_view = |name: &str| view.metrics.iter().any(|m| m.get_ref() == name);
    if !in_view(metric) {
        issue(
            metric_key.span(),
            format!("view \"{view_name}\" has no metric \"{metric}\""),
        );
    }
    if let Some(target) = &rule.target
        && !in_view(target.get_ref())
    {
        issue(
            target.span(),
            format!(
                "view \"{view_name}\" has no metric \"{}\"",
                target.get_ref()
            ),
        );
    }
    let has_dimension = |name: &str| view.dimensions.iter().any(|d| d.get_ref() == name);
    for by in &rule.by {
        if !has_dimension(by.get_ref()) {
            issue(
                by.span(),
                format!("view \"{view_name}\" has no dimension \"{}\"", by.get_ref()),
            );
        }
    }
    let is_time = |name: &str| {
        model
            .dimensions
            .iter()
            .any(|d| d.name.get_ref() == name && d.kind == super::DimensionKind::Time)
    };
    match &rule.time {
        Some(t) if !has_dimension(t.get_ref()) || !is_time(t.get_ref()) => issue(
            t.span(),
            format!(
                "view \"{view_name}\" has no time dimension \"{}\"",
                t.get_ref()
            ),
        ),
        Some(_) => {}
        None if !view.dimensions.iter().any(|d| is_time(d.get_ref())) => issue(
            rule.name.span(),
            format!("view \"{view_name}\" has no time dimension to evaluate a period of"),
        ),
        None => {}
    }
    check_channels(model, rule, &mut issue);
    issues
}

fn check_channels(
    model: &super::Model,
    rule: &AlertRule,
    issue: &mut impl FnMut(std::ops::Range<usize>, String),
) {
    for channel in &rule.channels {
        if !model
            .channels
            .iter()
            .any(|c| c.name.get_ref() == channel.get_ref())
        {
            issue(
                channel.span(),
                format!("unknown channel \"{}\"", channel.get_ref()),
            );
        }
    }
}

/// Check one channel; problems as (the key's span, reason).
pub fn check_channel(channel: &Channel) -> Vec<(std::ops::Range<usize>, String)> {
    let mut issues = Vec::new();
    if channel.kind().is_none() {
        issues.push((
            channel.kind.span(),
            format!(
                "channel kind \"{}\" must be webhook, slack, dingtalk, feishu or wecom",
                channel.kind.get_ref()
            ),
        ));
    }
    if let Some(b) = &channel.backoff
        && let Err(e) = parse_interval(b.get_ref())
    {
        issues.push((b.span(), e));
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::parse_interval;
    use std::time::Duration;

    #[test]
    fn intervals_read_as_written() {
        assert_eq!(parse_interval("1 day"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_interval("4 hours"), Ok(Duration::from_secs(14_400)));
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("15 minutes"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_interval("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(
            parse_interval("2 weeks"),
            Ok(Duration::from_secs(1_209_600))
        );
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("0 days").is_err());
        assert!(parse_interval("3 fortnights").is_err());
    }
}
