//! Server configuration: listeners, TLS, limits, logging, the model, users.
//!
//! One precedence, lowest first: built-in defaults, the TOML file (`kpitables.toml`, or
//! `--config`), environment variables `KPITABLES_*` ([`env`]), command-line flags. A
//! user's password may come from an environment variable (`password_env`), so secrets
//! need not sit in the file. `kpitables config print` shows the effective configuration
//! with secrets as `***` ([`print`]). This is the only module that reads the environment.
//!
//! Invariant: a [`Config`] that exists has been validated.

mod env;
mod print;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use print::render;
pub use values::{parse_bytes, parse_duration};

use crate::error::{Error, Result};

/// The demo configuration, used when no file is given.
pub const DEMO_CONFIG: &str = include_str!("../../kpitables.toml");

/// A login role.
#[derive(Clone)]
pub struct User {
    /// Role name.
    pub name: String,
    /// Password (SCRAM secrets are derived from it at start-up).
    pub password: String,
    /// The model's access roles the user has (`[[access]]` rules name them).
    pub roles: Vec<String>,
    /// Attributes access rules may refer to as `user.<name>` (region, store, ...).
    pub attributes: BTreeMap<String, String>,
    /// May see every session in `pg_stat_activity` and cancel or terminate any of them.
    pub admin: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"***")
            .field("roles", &self.roles)
            .field("attributes", &self.attributes)
            .field("admin", &self.admin)
            .finish()
    }
}

/// TLS on the PostgreSQL protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// SSLRequest is answered "N": plain TCP only.
    #[default]
    Off,
    /// TLS for clients that ask for it; plain TCP for the others.
    Allow,
    /// TLS only: a plaintext startup is refused (28000).
    Require,
}

/// TLS settings.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Off, allow or require.
    pub mode: TlsMode,
    /// PEM certificate chain of the server.
    pub cert: Option<PathBuf>,
    /// PEM private key of the server.
    pub key: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the fields of its spans.
    Json,
}

/// Limits; each fails with PostgreSQL's own error when reached. `None` means no limit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections at once (53300 beyond, before authentication).
    pub max_connections: usize,
    /// Statements running at once for one user; the others wait their turn, first come
    /// first served, for at most `queue_timeout`.
    pub max_statements_per_user: usize,
    /// Statements executing at once on the embedded engine, of all users; the others
    /// wait their turn. With `query_memory`, it bounds the engine's peak memory:
    /// `max_executing_statements × query_memory`.
    pub max_executing_statements: usize,
    /// How long a statement waits for a slot before it gives up (53000); `None`: until
    /// its `statement_timeout`.
    pub queue_timeout: Option<Duration>,
    /// `statement_timeout` of new sessions.
    pub statement_timeout: Option<Duration>,
    /// The largest `statement_timeout` a session may set (and the one used for 0).
    pub max_statement_timeout: Option<Duration>,
    /// A session idle this long outside a transaction is closed (57P05).
    pub idle_session_timeout: Option<Duration>,
    /// A session idle this long inside a transaction is closed (25P03).
    pub idle_in_transaction_session_timeout: Option<Duration>,
    /// Memory one query may use on the embedded engine (53200 beyond).
    pub query_memory_bytes: Option<usize>,
    /// On SIGTERM/SIGINT, how long running statements may go on before their sessions
    /// are ended (57P01).
    pub shutdown_grace: Duration,
    /// Plans kept per model version by the plan cache (0: none).
    pub plan_cache_entries: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 200,
            max_statements_per_user: 16,
            max_executing_statements: default_executing(Some(4 << 30)),
            queue_timeout: Some(Duration::from_secs(120)),
            statement_timeout: None,
            max_statement_timeout: None,
            idle_session_timeout: None,
            idle_in_transaction_session_timeout: None,
            query_memory_bytes: Some(4 << 30),
            shutdown_grace: Duration::from_secs(30),
            plan_cache_entries: DEFAULT_PLAN_CACHE_ENTRIES,
        }
    }
}

/// Plans kept per model version by default (`[limits] plan_cache_entries`).
pub const DEFAULT_PLAN_CACHE_ENTRIES: usize = 1000;

/// The default of `max_executing_statements`: the cores (each embedded query already
/// runs on every core, so more at once adds memory, not speed), at least 2, and no more
/// than half the machine's memory allows at `query_memory` each.
pub fn default_executing(query_memory: Option<usize>) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let by_cores = cores.max(2);
    match (query_memory, physical_memory()) {
        (Some(each), Some(total)) if each > 0 => by_cores.min((total / 2 / each).max(1)),
        _ => by_cores,
    }
}

/// The machine's memory, from `/proc/meminfo` (Linux); None elsewhere.
fn physical_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Address of the HTTP listener (probes, metrics); none: off.
    pub http: Option<String>,
    /// The database name clients connect to.
    pub database: String,
    /// The model directory.
    pub model: PathBuf,
    /// Accept cleartext passwords over the wire instead of SCRAM-SHA-256.
    pub allow_cleartext_passwords: bool,
    /// TLS on the PostgreSQL protocol.
    pub tls: Tls,
    /// Limits.
    pub limits: Limits,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// Login roles.
    pub users: Vec<User>,
    /// The audit trail's JSON-lines file (none: `kp.audit` only).
    pub audit_file: Option<PathBuf>,
    /// Size at which the audit file is rotated.
    pub audit_max_bytes: u64,
    /// How many rotated audit files are kept.
    pub audit_keep: usize,
    /// The model history's JSON-lines file (none: the history of this run only).
    pub history_file: Option<PathBuf>,
    /// The alert state file (none: alert states last as long as the process).
    pub alert_state_file: Option<PathBuf>,
    /// Whether this server evaluates alert rules and data quality checks (one replica
    /// should; the others set it off).
    pub alerts: bool,
}

/// The file's contents before validation; environment variables are applied to it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    http: Option<String>,
    database: Option<String>,
    model: Option<PathBuf>,
    #[serde(default)]
    allow_cleartext_passwords: bool,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    limits: RawLimits,
    log_format: Option<LogFormat>,
    #[serde(default)]
    users: Vec<RawUser>,
    audit_file: Option<PathBuf>,
    audit_max_bytes: Option<u64>,
    audit_keep: Option<usize>,
    history_file: Option<PathBuf>,
    alert_state_file: Option<PathBuf>,
    alerts: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    mode: Option<TlsMode>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Durations and sizes are written as PostgreSQL writes them: `"30s"`, `"5min"`,
/// `"500ms"`, `0` (off); `"512MB"`, `"4GB"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<usize>,
    max_statements_per_user: Option<usize>,
    max_executing_statements: Option<usize>,
    queue_timeout: Option<values::Setting>,
    statement_timeout: Option<values::Setting>,
    max_statement_timeout: Option<values::Setting>,
    idle_session_timeout: Option<values::Setting>,
    idle_in_transaction_session_timeout: Option<values::Setting>,
    query_memory: Option<values::Setting>,
    shutdown_grace: Option<values::Setting>,
    plan_cache_entries: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: Option<String>,
    password_env: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    admin: bool,
}

impl Config {
    /// Parse and validate a configuration, with the environment variables of `vars` on
    /// top. Relative paths are relative to `base`.
    pub fn parse_with(
        text: &str,
        origin: &str,
        base: &Path,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| crate::model::load::line_column(text, s.start))
                .unwrap_or((0, 0));
            Error::Config(format!("{origin}:{line}:{column}: {}", e.message().trim()))
        })?;
        env::apply(&mut raw, vars)?;
        let mut users = Vec::new();
        for u in raw.users {
            let password = match (u.password, u.password_env) {
                (Some(p), None) => p,
                (None, Some(var)) => vars(&var).ok_or_else(|| {
                    Error::Config(format!(
                        "{origin}: user \"{}\": environment variable {var} is not set",
                        u.name
                    ))
                })?,
                _ => {
                    return Err(Error::Config(format!(
                        "{origin}: user \"{}\" needs exactly one of password or password_env",
                        u.name
                    )));
                }
            };
            users.push(User {
                name: u.name,
                password,
                roles: u.roles,
                attributes: u.attributes,
                admin: u.admin,
            });
        }
        if users.is_empty() {
            return Err(Error::Config(format!(
                "{origin}: no [[users]]: nobody could log in"
            )));
        }
        let under_base = |f: PathBuf| if f.is_absolute() { f } else { base.join(f) };
        let tls = Tls {
            mode: raw.tls.mode.unwrap_or_default(),
            cert: raw.tls.cert.map(under_base),
            key: raw.tls.key.map(under_base),
        };
        if tls.mode != TlsMode::Off && (tls.cert.is_none() || tls.key.is_none()) {
            return Err(Error::Config(format!(
                "{origin}: [tls] mode = \"{}\" needs cert and key (PEM files)",
                print::tls_mode_name(tls.mode)
            )));
        }
        let limits = limits(raw.limits, origin)?;
        let defaults = Config::default_paths();
        Ok(Config {
            listen: raw.listen.unwrap_or(defaults.0),
            http: raw.http.filter(|h| !h.is_empty()),
            database: raw.database.unwrap_or_else(|| "kpitables".into()),
            model: under_base(raw.model.unwrap_or(defaults.1)),
            allow_cleartext_passwords: raw.allow_cleartext_passwords,
            tls,
            limits,
            log_format: raw.log_format.unwrap_or_default(),
            users,
            audit_file: raw.audit_file.map(under_base),
            audit_max_bytes: raw.audit_max_bytes.unwrap_or(64 * 1024 * 1024),
            audit_keep: raw.audit_keep.unwrap_or(5),
            history_file: raw.history_file.map(under_base),
            alert_state_file: raw.alert_state_file.map(under_base),
            alerts: raw.alerts.unwrap_or(true),
        })
    }

    /// [`Config::parse_with`] the process environment.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config> {
        Config::parse_with(text, origin, base, &|var| std::env::var(var).ok())
    }

    fn default_paths() -> (String, PathBuf) {
        ("127.0.0.1:5433".into(), PathBuf::from("semantic/demo"))
    }

    /// Read `path`, or the demo configuration when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::io(format!("cannot read config {}", path.display()), e))?;
                let base = path.parent().unwrap_or(Path::new("."));
                Config::parse(&text, &path.display().to_string(), base)
            }
            None => Config::parse(DEMO_CONFIG, "kpitables.toml (built in)", Path::new(".")),
        }
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

fn limits(raw: RawLimits, origin: &str) -> Result<Limits> {
    let defaults = Limits::default();
    let duration =
        |value: Option<values::Setting>, key: &str, default: Option<Duration>| match value {
            None => Ok(default),
            Some(v) => v
                .duration()
                .map(|d| (!d.is_zero()).then_some(d))
                .map_err(|e| Error::Config(format!("{origin}: [limits] {key}: {e}"))),
        };
    let statement_timeout = duration(raw.statement_timeout, "statement_timeout", None)?;
    let max_statement_timeout = duration(raw.max_statement_timeout, "max_statement_timeout", None)?;
    if let (Some(default), Some(max)) = (statement_timeout, max_statement_timeout)
        && default > max
    {
        return Err(Error::Config(format!(
            "{origin}: [limits] statement_timeout is larger than max_statement_timeout"
        )));
    }
    let query_memory_bytes = match raw.query_memory {
        None => defaults.query_memory_bytes,
        Some(v) => {
            let bytes = v
                .bytes()
                .map_err(|e| Error::Config(format!("{origin}: [limits] query_memory: {e}")))?;
            (bytes > 0).then_some(bytes)
        }
    };
    let max_connections = raw.max_connections.unwrap_or(defaults.max_connections);
    let max_statements_per_user = raw
        .max_statements_per_user
        .unwrap_or(defaults.max_statements_per_user);
    let max_executing_statements = raw
        .max_executing_statements
        .unwrap_or_else(|| default_executing(query_memory_bytes));
    if max_connections == 0 || max_statements_per_user == 0 || max_executing_statements == 0 {
        return Err(Error::Config(format!(
            "{origin}: [limits] max_connections, max_statements_per_user and max_executing_statements must be at least 1"
        )));
    }
    Ok(Limits {
        max_connections,
        max_statements_per_user,
        max_executing_statements,
        queue_timeout: duration(raw.queue_timeout, "queue_timeout", defaults.queue_timeout)?,
        statement_timeout,
        max_statement_timeout,
        idle_session_timeout: duration(raw.idle_session_timeout, "idle_session_timeout", None)?,
        idle_in_transaction_session_timeout: duration(
            raw.idle_in_transaction_session_timeout,
            "idle_in_transaction_session_timeout",
            None,
        )?,
        query_memory_bytes,
        shutdown_grace: duration(
            raw.shutdown_grace,
            "shutdown_grace",
            Some(defaults.shutdown_grace),
        )?
        .unwrap_or_default(),
        plan_cache_entries: raw
            .plan_cache_entries
            .unwrap_or(defaults.plan_cache_entries),
    })
}

/// A secret from the environment variable `var` (a warehouse password named by a model
/// source's `password_env`). Never logged.
pub fn secret(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse_with(text, "test.toml", Path::new("/base"), &|k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    const USERS: &str = "[[users]]\nname = \"a\"\npassword = \"a\"\n";

    #[test]
    fn the_environment_is_above_the_file() {
        let text = format!(
            "listen = \"0.0.0.0:1\"\n[limits]\nmax_connections = 5\nstatement_timeout = \"2s\"\n{USERS}"
        );
        let c = parse(&text, &[]).expect("config");
        assert_eq!(c.listen, "0.0.0.0:1");
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.limits.statement_timeout, Some(Duration::from_secs(2)));
        let c = parse(
            &text,
            &[
                ("KPITABLES_LISTEN", "127.0.0.1:9"),
                ("KPITABLES_MAX_CONNECTIONS", "7"),
                ("KPITABLES_STATEMENT_TIMEOUT", "1500ms"),
                ("KPITABLES_HTTP", "127.0.0.1:8080"),
            ],
        )
        .expect("config");
        assert_eq!(c.listen, "127.0.0.1:9");
        assert_eq!(c.limits.max_connections, 7);
        assert_eq!(
            c.limits.statement_timeout,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(c.http.as_deref(), Some("127.0.0.1:8080"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse(
            &format!("[limits]\nstatement_timeout = \"soon\"\n{USERS}"),
            &[],
        )
        .expect_err("bad duration");
        assert!(e.to_string().contains("statement_timeout"), "{e}");
        let e = parse(USERS, &[("KPITABLES_MAX_CONNECTIONS", "many")]).expect_err("bad number");
        assert!(e.to_string().contains("KPITABLES_MAX_CONNECTIONS"), "{e}");
        let e = parse(&format!("[tls]\nmode = \"require\"\n{USERS}"), &[]).expect_err("no cert");
        assert!(e.to_string().contains("cert and key"), "{e}");
    }

    #[test]
    fn paths_are_relative_to_the_file() {
        let c = parse(
            &format!("model = \"m\"\n[tls]\nmode = \"allow\"\ncert = \"c.pem\"\nkey = \"/k.pem\"\n{USERS}"),
            &[],
        )
        .expect("config");
        assert_eq!(c.model, Path::new("/base/m"));
        assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/base/c.pem")));
        assert_eq!(c.tls.key.as_deref(), Some(Path::new("/k.pem")));
    }
}
