//! Server configuration: listen address, database name, model directory, users.
//!
//! Read from a TOML file (`kpitables.toml`), with command-line flags on top. A user's
//! password may come from an environment variable (`password_env`), so secrets need not
//! sit in the file. This is the only module that reads the environment.
//!
//! Invariant: a [`Config`] that exists has been validated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The demo configuration, used when no file is given.
pub const DEMO_CONFIG: &str = include_str!("../kpitables.toml");

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
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"***")
            .field("roles", &self.roles)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// The database name clients connect to.
    pub database: String,
    /// The model directory.
    pub model: PathBuf,
    /// Accept cleartext passwords over the wire instead of SCRAM-SHA-256.
    pub allow_cleartext_passwords: bool,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_database")]
    database: String,
    #[serde(default = "default_model")]
    model: PathBuf,
    #[serde(default)]
    allow_cleartext_passwords: bool,
    #[serde(default)]
    users: Vec<RawUser>,
    audit_file: Option<PathBuf>,
    #[serde(default = "default_audit_max_bytes")]
    audit_max_bytes: u64,
    #[serde(default = "default_audit_keep")]
    audit_keep: usize,
    history_file: Option<PathBuf>,
}

fn default_audit_max_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_audit_keep() -> usize {
    5
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
}

fn default_listen() -> String {
    "127.0.0.1:5433".into()
}
fn default_database() -> String {
    "kpitables".into()
}
fn default_model() -> PathBuf {
    PathBuf::from("semantic/demo")
}

impl Config {
    /// Parse and validate a configuration. Relative model paths are relative to `base`.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| crate::model::load::line_column(text, s.start))
                .unwrap_or((0, 0));
            Error::Config(format!("{origin}:{line}:{column}: {}", e.message().trim()))
        })?;
        let mut users = Vec::new();
        for u in raw.users {
            let password = match (u.password, u.password_env) {
                (Some(p), None) => p,
                (None, Some(var)) => std::env::var(&var).map_err(|_| {
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
            });
        }
        if users.is_empty() {
            return Err(Error::Config(format!(
                "{origin}: no [[users]]: nobody could log in"
            )));
        }
        let model = if raw.model.is_absolute() {
            raw.model
        } else {
            base.join(raw.model)
        };
        let under_base = |f: PathBuf| if f.is_absolute() { f } else { base.join(f) };
        let audit_file = raw.audit_file.map(under_base);
        let history_file = raw.history_file.map(under_base);
        Ok(Config {
            listen: raw.listen,
            database: raw.database,
            model,
            allow_cleartext_passwords: raw.allow_cleartext_passwords,
            users,
            audit_file,
            audit_max_bytes: raw.audit_max_bytes,
            audit_keep: raw.audit_keep,
            history_file,
        })
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
}

/// A secret from the environment variable `var` (a warehouse password named by a model
/// source's `password_env`). Never logged.
pub fn secret(var: &str) -> Option<String> {
    std::env::var(var).ok()
}
