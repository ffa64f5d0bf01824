//! Environment variables `KPITABLES_*`, applied over the file (and under the flags).
//! Each names a key of the file: `KPITABLES_LISTEN`, `KPITABLES_HTTP`,
//! `KPITABLES_DATABASE`, `KPITABLES_MODEL`, `KPITABLES_LOG_FORMAT`, `KPITABLES_TLS_MODE`,
//! `KPITABLES_TLS_CERT`, `KPITABLES_TLS_KEY`, and one per limit (`KPITABLES_MAX_CONNECTIONS`,
//! `KPITABLES_STATEMENT_TIMEOUT`, ...).

use std::path::PathBuf;

use super::values::Setting;
use super::{LogFormat, RawConfig, TlsMode};
use crate::error::{Error, Result};

/// Every variable read, in the order of the documentation.
pub(super) const VARIABLES: &[&str] = &[
    "KPITABLES_LISTEN",
    "KPITABLES_HTTP",
    "KPITABLES_DATABASE",
    "KPITABLES_MODEL",
    "KPITABLES_LOG_FORMAT",
    "KPITABLES_TLS_MODE",
    "KPITABLES_TLS_CERT",
    "KPITABLES_TLS_KEY",
    "KPITABLES_MAX_CONNECTIONS",
    "KPITABLES_MAX_STATEMENTS_PER_USER",
    "KPITABLES_STATEMENT_TIMEOUT",
    "KPITABLES_MAX_STATEMENT_TIMEOUT",
    "KPITABLES_IDLE_SESSION_TIMEOUT",
    "KPITABLES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT",
    "KPITABLES_QUERY_MEMORY",
    "KPITABLES_SHUTDOWN_GRACE",
    "KPITABLES_PLAN_CACHE_ENTRIES",
    "KPITABLES_ALERTS",
];

pub(super) fn apply(raw: &mut RawConfig, vars: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    for var in VARIABLES {
        let Some(value) = vars(var) else {
            continue;
        };
        let bad = |what: &str| Error::Config(format!("{var}={value}: {what}"));
        let number = || {
            value
                .trim()
                .parse::<usize>()
                .map_err(|_| bad("not a number"))
        };
        // Checked here so that a bad value is reported under the variable's name.
        let duration = || {
            let setting = Setting::Text(value.clone());
            setting.duration().map_err(|e| bad(&e))?;
            Ok::<_, Error>(setting)
        };
        match *var {
            "KPITABLES_LISTEN" => raw.listen = Some(value.clone()),
            "KPITABLES_HTTP" => raw.http = Some(value.clone()),
            "KPITABLES_DATABASE" => raw.database = Some(value.clone()),
            "KPITABLES_MODEL" => raw.model = Some(PathBuf::from(&value)),
            "KPITABLES_LOG_FORMAT" => {
                raw.log_format = Some(match value.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(bad("use text or json")),
                });
            }
            "KPITABLES_TLS_MODE" => {
                raw.tls.mode = Some(match value.as_str() {
                    "off" => TlsMode::Off,
                    "allow" => TlsMode::Allow,
                    "require" => TlsMode::Require,
                    _ => return Err(bad("use off, allow or require")),
                });
            }
            "KPITABLES_TLS_CERT" => raw.tls.cert = Some(PathBuf::from(&value)),
            "KPITABLES_TLS_KEY" => raw.tls.key = Some(PathBuf::from(&value)),
            "KPITABLES_MAX_CONNECTIONS" => raw.limits.max_connections = Some(number()?),
            "KPITABLES_MAX_STATEMENTS_PER_USER" => {
                raw.limits.max_statements_per_user = Some(number()?);
            }
            "KPITABLES_MAX_EXECUTING_STATEMENTS" => {
                raw.limits.max_executing_statements = Some(number()?);
            }
            "KPITABLES_QUEUE_TIMEOUT" => raw.limits.queue_timeout = Some(duration()?),
            "KPITABLES_STATEMENT_TIMEOUT" => raw.limits.statement_timeout = Some(duration()?),
            "KPITABLES_MAX_STATEMENT_TIMEOUT" => {
                raw.limits.max_statement_timeout = Some(duration()?);
            }
            "KPITABLES_IDLE_SESSION_TIMEOUT" => raw.limits.idle_session_timeout = Some(duration()?),
            "KPITABLES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT" => {
                raw.limits.idle_in_transaction_session_timeout = Some(duration()?);
            }
            "KPITABLES_QUERY_MEMORY" => {
                let setting = Setting::Text(value.clone());
                setting.bytes().map_err(|e| bad(&e))?;
                raw.limits.query_memory = Some(setting);
            }
            "KPITABLES_SHUTDOWN_GRACE" => raw.limits.shutdown_grace = Some(duration()?),
            "KPITABLES_PLAN_CACHE_ENTRIES" => raw.limits.plan_cache_entries = Some(number()?),
            "KPITABLES_ALERTS" => {
                raw.alerts = Some(match value.to_ascii_lowercase().as_str() {
                    "on" | "true" | "1" => true,
                    "off" | "false" | "0" => false,
                    _ => return Err(bad("use on or off")),
                })
            }
            _ => {}
        }
    }
    Ok(())
}
