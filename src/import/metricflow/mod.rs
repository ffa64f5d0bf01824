//! Import dbt MetricFlow semantic models and metrics as a kpitables model.
//!
//! `kpitables import metricflow DIR --out MODEL_DIR` writes the model as TOML;
//! `kpitables serve --model DIR` on a MetricFlow project imports it in memory at each
//! load ([`crate::import::model_texts`]). The mapping, construct by construct, is in
//! `docs/metricflow.md`; what cannot be mapped is reported per item with the reason.
//!
//! Stages: [`project`] reads the project's YAML and SQL files, [`map`] turns them into
//! model items (and the report), [`write`] prints the TOML, [`template`] parses filter
//! templates. Imports no other stage: the output is model text, loaded like any model.

mod map;
mod project;
pub mod template;
mod write;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use project::is_project;

/// Where the rows of the project's dbt models are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory of Parquet or CSV files named after the dbt models (or the seeds
    /// they select from).
    Files(PathBuf),
    /// A PostgreSQL-protocol warehouse (URL without password) and schema.
    Postgres {
        /// `postgres://user@host:port/db`.
        url: String,
        /// The schema of the tables.
        schema: Option<String>,
    },
    /// A MySQL-protocol warehouse and the database of the tables (default: the URL's).
    Mysql {
        /// `mysql://user@host:port/db`.
        url: String,
        /// The database of the tables.
        schema: Option<String>,
    },
}

impl Source {
    /// `postgres://...`, `mysql://...` or a directory.
    pub fn parse(text: &str, schema: Option<String>) -> Result<Source, String> {
        let lower = text.to_ascii_lowercase();
        let warehouse = lower.starts_with("postgres://")
            || lower.starts_with("postgresql://")
            || lower.starts_with("mysql://");
        if warehouse {
            let authority = text.split("://").nth(1).unwrap_or("");
            let userinfo = authority.split('/').next().unwrap_or("");
            if userinfo
                .rsplit_once('@')
                .is_some_and(|(user, _)| user.contains(':'))
            {
                return Err(
                    "the source URL holds a password: leave it out and give --password-env, the environment variable that holds it"
                        .into(),
                );
            }
        }
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Source::Postgres {
                url: text.to_string(),
                schema,
            })
        } else if lower.starts_with("mysql://") {
            Ok(Source::Mysql {
                url: text.to_string(),
                schema,
            })
        } else if lower.contains("://") {
            Err(format!(
                "unknown source \"{text}\": give a postgres:// or mysql:// URL, or a directory of Parquet/CSV files"
            ))
        } else {
            Ok(Source::Files(PathBuf::from(text)))
        }
    }
}

/// How to import. The default: seed files as the source, a complete mapping required.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the rows are; default: the project's seeds directory.
    pub source: Option<Source>,
    /// The environment variable holding the warehouse password.
    pub password_env: Option<String>,
    /// Write (or serve) what maps even when some items do not.
    pub allow_partial: bool,
}

/// The outcome of an import: the model files and what was (not) mapped.
#[derive(Debug)]
pub struct Import {
    /// `(file name, TOML text)`, such as `("metrics.toml", ...)`.
    pub files: Vec<(String, String)>,
    /// Per item: mapped, not mapped (with the reason), notes.
    pub report: Report,
}

/// What happened to each item of the project.
#[derive(Debug, Default)]
pub struct Report {
    /// Items mapped (kind, name, what they became).
    pub mapped: Vec<Item>,
    /// Items not mapped, with the reason.
    pub unmapped: Vec<Item>,
    /// Mapped with a difference worth knowing.
    pub notes: Vec<Item>,
}

/// One item of the report.
#[derive(Debug, Clone)]
pub struct Item {
    /// `semantic model`, `measure`, `dimension`, `metric`, `saved query`, ...
    pub kind: &'static str,
    /// Its MetricFlow name.
    pub name: String,
    /// File and line it is defined at.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// What it became, or why not.
    pub detail: String,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}: {} {}: {}",
                self.file, self.line, self.kind, self.name, self.detail
            )
        } else {
            write!(
                f,
                "{}: {} {}: {}",
                self.file, self.kind, self.name, self.detail
            )
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mapped ({}):", self.mapped.len())?;
        for item in &self.mapped {
            writeln!(f, "  {item}")?;
        }
        if !self.notes.is_empty() {
            writeln!(f, "notes ({}):", self.notes.len())?;
            for item in &self.notes {
                writeln!(f, "  {item}")?;
            }
        }
        writeln!(f, "not mapped ({}):", self.unmapped.len())?;
        for item in &self.unmapped {
            writeln!(f, "  {item}")?;
        }
        Ok(())
    }
}

/// Import the MetricFlow project (or directory of MetricFlow YAML) `dir`. Relative file
/// paths of the generated source are written relative to `model_dir`, the directory the
/// model will be loaded from.
pub fn import(dir: &Path, model_dir: &Path, options: &Options) -> crate::error::Result<Import> {
    let project = project::read(dir)?;
    Ok(map::map(&project, model_dir, options))
}
