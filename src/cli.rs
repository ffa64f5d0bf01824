//! The command line: `serve`, `check`, `demo`, `alerts run`, `import metricflow`,
//! `config print`. Parsing only; each
//! command calls the library. Flags are above the environment (`KPITABLES_*`) and the
//! configuration file.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// kpitables: governed metrics over the PostgreSQL wire protocol.
#[derive(Debug, Parser)]
#[command(name = "kpitables", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a model over the PostgreSQL protocol (with no arguments: the demo, generating
    /// its data first if missing).
    Serve {
        /// Address to listen on (default from the config: 127.0.0.1:5433).
        #[arg(long)]
        listen: Option<String>,
        /// Model directory (default from the config: semantic/demo).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Server configuration file (default: the built-in demo configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The audit trail's JSON-lines file (default from the config).
        #[arg(long)]
        audit_file: Option<PathBuf>,
        /// The model history's JSON-lines file (default from the config).
        #[arg(long)]
        history_file: Option<PathBuf>,
        /// Address of the HTTP listener for /livez, /readyz and /metrics (default: off).
        #[arg(long)]
        http: Option<String>,
        /// Log lines as text or json (default from the config: text).
        #[arg(long)]
        log_format: Option<LogFormatArg>,
        /// The alert state file (default from the config: none, states kept in memory).
        #[arg(long)]
        alert_state_file: Option<PathBuf>,
        /// Evaluate alerts as if the server had started at this time (RFC 3339; the
        /// alerts' clock then runs on from it): for trying rules on old data, and tests.
        #[arg(long)]
        alerts_clock: Option<String>,
        /// When --model is a dbt MetricFlow project: where its rows are, and whether to
        /// serve what maps when some items do not (they are logged).
        #[command(flatten)]
        metricflow: MetricflowArgs,
    },
    /// Import a model written for another semantic layer.
    Import {
        /// What to import.
        #[command(subcommand)]
        what: ImportWhat,
    },
    /// Alert rules of a model.
    Alerts {
        /// What to do.
        #[command(subcommand)]
        action: AlertsAction,
    },
    /// Show the configuration.
    Config {
        /// What to show.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Validate a model directory: print every problem with file, line and column, and exit
    /// non-zero if there is one.
    Check {
        /// Model directory.
        dir: PathBuf,
        /// Also bind the model to its data (checks columns); needs the data files.
        #[arg(long)]
        with_data: bool,
        /// Print what changed against this earlier version (a model directory, or a git
        /// reference such as HEAD or main when DIR is in a git checkout), with the lineage
        /// of every changed metric.
        #[arg(long)]
        base: Option<String>,
    },
    /// Generate the demo data set (deterministic; about 1.6 million order lines), and
    /// optionally load it into a warehouse.
    Demo {
        /// Output directory of the demo files (read from there when already complete and
        /// --into is given).
        #[arg(long, default_value = "data/demo")]
        out: PathBuf,
        /// Load the demo into this warehouse: postgres://user[:password]@host:port/db or
        /// mysql://user[:password]@host:port/db (tables are replaced).
        #[arg(long, requires = "model_out")]
        into: Option<String>,
        /// With --into: write a model directory whose source is that warehouse.
        #[arg(long, requires = "into")]
        model_out: Option<PathBuf>,
        /// Generate only when the output directory does not already hold complete demo
        /// data of this version.
        #[arg(long)]
        if_outdated: bool,
    },
}

/// `kpitables import ...`.
#[derive(Debug, Subcommand)]
pub enum ImportWhat {
    /// A dbt project's MetricFlow semantic models, metrics and saved queries: writes a
    /// kpitables model directory and reports every item it could not map (exit code 1
    /// unless --allow-partial).
    Metricflow {
        /// The dbt project (or a directory of MetricFlow YAML files).
        dir: PathBuf,
        /// The model directory to write (created; its *.toml files are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Where the rows are; whether to write what maps when some items do not.
        #[command(flatten)]
        metricflow: MetricflowArgs,
    },
}

/// How a dbt MetricFlow project is imported (`import metricflow`, `serve --model`).
#[derive(Debug, clap::Args)]
pub struct MetricflowArgs {
    /// Where the rows of the dbt models are: postgres://user@host:port/db,
    /// mysql://user@host:port/db (no password in the URL), or a directory of Parquet/CSV
    /// files named after the dbt models (default: the project's seeds directory).
    #[arg(long)]
    pub source: Option<String>,
    /// With a warehouse source: the schema (PostgreSQL) or database (MySQL) of the tables.
    #[arg(long, requires = "source")]
    pub schema: Option<String>,
    /// With a warehouse source: the environment variable holding its password.
    #[arg(long, requires = "source")]
    pub password_env: Option<String>,
    /// Use what maps even when some items do not (they are still reported).
    #[arg(long)]
    pub allow_partial: bool,
}

/// `kpitables alerts ...`.
#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// Evaluate every alert rule once, move each instance's state, send what is due and
    /// print what happened.
    Run {
        /// Model directory (default from the config: semantic/demo).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Server configuration file, for the users rules run as (default: the built-in
        /// demo configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Evaluate as of this time (RFC 3339, `2024-06-30T09:00:00+08:00`; a date means
        /// its midnight in the model's time zone); default now.
        #[arg(long)]
        at: Option<String>,
        /// Print the messages that would be sent (bodies included); send nothing and
        /// keep no state.
        #[arg(long)]
        dry_run: bool,
        /// The state file (default from the config's alert_state_file: none).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Print text (default) or one JSON document.
        #[arg(long, default_value = "text")]
        format: ReportFormat,
    },
}

/// `--format` of `alerts run`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    /// For people.
    Text,
    /// For programs.
    Json,
}

/// `kpitables config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the effective configuration (file, then environment, then flags) as TOML,
    /// with passwords as `***`.
    Print {
        /// Server configuration file (default: the built-in demo configuration).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the fields of its spans.
    Json,
}
