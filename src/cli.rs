//! The command line: `serve`, `check`, `demo`, `config print`. Parsing only; each
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
