//! One connected client: who it is and its settings (SET/SHOW/RESET).
//!
//! Invariant: no wire-protocol types here. The wire layer creates a [`Session`] after
//! authentication and hands it to the engine with every statement.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::time_zone::TimeZone;

/// Settings clients read and write, with PostgreSQL's defaults.
/// `(name, default, reported to the client as ParameterStatus)`.
pub const SETTINGS: &[(&str, &str, bool)] = &[
    ("application_name", "", true),
    ("client_encoding", "UTF8", true),
    ("client_min_messages", "notice", false),
    ("datestyle", "ISO, MDY", true),
    ("default_transaction_isolation", "read committed", false),
    ("default_transaction_read_only", "on", true),
    ("extra_float_digits", "1", false),
    ("idle_in_transaction_session_timeout", "0", false),
    ("integer_datetimes", "on", true),
    ("intervalstyle", "postgres", true),
    ("is_superuser", "off", true),
    ("lc_collate", "C.UTF-8", false),
    ("lc_ctype", "C.UTF-8", false),
    ("lc_messages", "C.UTF-8", false),
    ("lc_monetary", "C.UTF-8", false),
    ("lc_numeric", "C.UTF-8", false),
    ("lc_time", "C.UTF-8", false),
    ("lock_timeout", "0", false),
    ("max_identifier_length", "63", false),
    ("max_index_keys", "32", false),
    ("max_function_args", "100", false),
    ("block_size", "8192", false),
    ("search_path", "\"$user\", public", true),
    ("server_encoding", "UTF8", true),
    ("server_version", "15.0", true),
    ("server_version_num", "150000", false),
    ("standard_conforming_strings", "on", true),
    ("statement_timeout", "0", false),
    ("timezone", "UTC", true),
    ("transaction_isolation", "read committed", false),
    ("transaction_read_only", "on", false),
    ("bytea_output", "hex", false),
    ("geqo", "on", false),
    ("jit", "off", false),
    ("row_security", "on", false),
    ("synchronous_commit", "on", false),
    ("work_mem", "4MB", false),
];

/// The name PostgreSQL shows for a setting (`DateStyle`, `TimeZone`, ...).
pub fn display_name(name: &str) -> &str {
    match name {
        "datestyle" => "DateStyle",
        "timezone" => "TimeZone",
        "intervalstyle" => "IntervalStyle",
        other => other,
    }
}

/// A connected, authenticated client.
#[derive(Debug)]
pub struct Session {
    /// The login role.
    pub user: String,
    /// Process id reported in BackendKeyData.
    pub pid: i32,
    settings: Mutex<BTreeMap<String, String>>,
    /// The settings as the session started (server defaults, then the client's startup
    /// parameters): what `RESET` returns to.
    initial: BTreeMap<String, String>,
    /// The largest `statement_timeout` the session may set (the server's limit).
    max_statement_timeout: Option<Duration>,
}

impl Session {
    /// A new session for `user` whose `TimeZone` is `time_zone` (the model's default)
    /// unless the startup parameters (applied next) set another valid one.
    pub fn new(
        user: impl Into<String>,
        pid: i32,
        time_zone: TimeZone,
        startup: &[(String, String)],
    ) -> Session {
        let user = user.into();
        let mut settings: BTreeMap<String, String> = SETTINGS
            .iter()
            .map(|(n, v, _)| (n.to_string(), v.to_string()))
            .collect();
        settings.insert("session_authorization".into(), user.clone());
        settings.insert("timezone".into(), time_zone.to_string());
        for (name, value) in startup {
            let name = name.to_lowercase();
            if name == "timezone" {
                // An unknown zone from a driver keeps the server default.
                if let Some(tz) = TimeZone::parse(value) {
                    settings.insert(name, tz.to_string());
                }
            } else if settings.contains_key(&name) || name.contains('.') {
                settings.insert(name, value.clone());
            }
        }
        Session {
            user,
            pid,
            initial: settings.clone(),
            settings: Mutex::new(settings),
            max_statement_timeout: None,
        }
    }

    /// The server's `statement_timeout` limits: the default of the session (unless the
    /// client's startup parameters set one) and the largest it may set.
    pub fn with_statement_timeouts(
        mut self,
        default: Option<Duration>,
        max: Option<Duration>,
    ) -> Session {
        let from_client = self.initial.get("statement_timeout").map(String::as_str) != Some("0");
        if let Some(default) = default
            && !from_client
        {
            let text = format!("{}ms", default.as_millis());
            self.initial
                .insert("statement_timeout".into(), text.clone());
            if let Ok(mut settings) = self.settings.lock() {
                settings.insert("statement_timeout".into(), text);
            }
        }
        self.max_statement_timeout = max;
        self
    }

    /// How long a statement may run: the session's `statement_timeout` (0: the server's
    /// maximum, if it has one).
    pub fn statement_timeout(&self) -> Option<Duration> {
        let text = self.get("statement_timeout").ok()?;
        crate::config::parse_duration(&text)
            .ok()
            .filter(|d| !d.is_zero())
            .or(self.max_statement_timeout)
    }

    /// The session's `TimeZone`: where `timestamptz` values are bucketed and printed.
    pub fn time_zone(&self) -> TimeZone {
        self.get("timezone")
            .ok()
            .and_then(|t| TimeZone::parse(&t))
            .unwrap_or_default()
    }

    /// The value of a setting.
    pub fn get(&self, name: &str) -> Result<String> {
        let name = name.to_lowercase();
        let settings = self
            .settings
            .lock()
            .map_err(|_| Error::Internal("settings lock poisoned".into()))?;
        settings
            .get(&name)
            .cloned()
            .ok_or(Error::UnknownSetting(name))
    }

    /// Set a setting. Returns the name to report as ParameterStatus, if it is reported.
    pub fn set(&self, name: &str, value: &str) -> Result<Option<String>> {
        let name = name.to_lowercase();
        let known = SETTINGS.iter().find(|(n, _, _)| *n == name);
        if known.is_none() && !name.contains('.') && name != "session_authorization" {
            return Err(Error::UnknownSetting(name));
        }
        if matches!(
            name.as_str(),
            "server_version"
                | "server_version_num"
                | "server_encoding"
                | "lc_collate"
                | "lc_ctype"
                | "integer_datetimes"
                | "max_identifier_length"
        ) {
            return Err(Error::InvalidParameter(format!(
                "parameter \"{name}\" cannot be changed"
            )));
        }
        let value = normalize_value(&name, value)?;
        if name == "statement_timeout" {
            self.check_statement_timeout(&value)?;
        }
        let mut settings = self
            .settings
            .lock()
            .map_err(|_| Error::Internal("settings lock poisoned".into()))?;
        settings.insert(name.clone(), value);
        Ok(known
            .filter(|(_, _, report)| *report)
            .map(|(n, _, _)| display_name(n).to_string()))
    }

    fn check_statement_timeout(&self, value: &str) -> Result<()> {
        let timeout = crate::config::parse_duration(value).map_err(|_| {
            Error::InvalidParameter(format!(
                "invalid value for parameter \"statement_timeout\": \"{value}\""
            ))
        })?;
        if let Some(max) = self.max_statement_timeout
            && (timeout.is_zero() || timeout > max)
        {
            return Err(Error::InvalidParameter(format!(
                "{value} is outside the valid range for parameter \"statement_timeout\" (1ms .. {}ms): the server's max_statement_timeout",
                max.as_millis()
            )));
        }
        Ok(())
    }

    /// Reset one setting (or all with `None`) to its value at the start of the session.
    pub fn reset(&self, name: Option<&str>) -> Result<Vec<String>> {
        let mut reported = Vec::new();
        let mut settings = self
            .settings
            .lock()
            .map_err(|_| Error::Internal("settings lock poisoned".into()))?;
        for (n, default, report) in SETTINGS {
            if name.is_none_or(|x| x.eq_ignore_ascii_case(n)) {
                let initial = self.initial.get(*n).map_or(*default, String::as_str);
                settings.insert(n.to_string(), initial.to_string());
                if *report {
                    reported.push(display_name(n).to_string());
                }
            }
        }
        if let Some(n) = name
            && !SETTINGS.iter().any(|(x, _, _)| x.eq_ignore_ascii_case(n))
        {
            if n.contains('.') {
                settings.remove(&n.to_lowercase());
            } else {
                return Err(Error::UnknownSetting(n.to_lowercase()));
            }
        }
        Ok(reported)
    }

    /// Every setting, for `SHOW ALL`.
    pub fn all(&self) -> Vec<(String, String)> {
        match self.settings.lock() {
            Ok(s) => s.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn normalize_value(name: &str, value: &str) -> Result<String> {
    Ok(match name {
        "timezone" => match TimeZone::parse(value) {
            Some(tz) if tz.is_utc() && value.eq_ignore_ascii_case("utc") => "UTC".into(),
            Some(tz) => tz.to_string(),
            None => return Err(Error::InvalidTimeZone(value.to_string())),
        },
        "client_encoding"
            if value.eq_ignore_ascii_case("utf8")
                || value.eq_ignore_ascii_case("utf-8")
                || value.eq_ignore_ascii_case("unicode") =>
        {
            "UTF8".into()
        }
        _ => value.to_string(),
    })
}
