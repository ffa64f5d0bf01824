//! The one error type of kpitables, and the only table from errors to SQLSTATE codes.
//!
//! Every stage returns [`Error`]; the wire layer turns it into a PostgreSQL
//! `ErrorResponse` using [`Error::sqlstate`] and [`Error::hint`]. No other module
//! knows SQLSTATE codes.

use std::fmt;

mod engine;
mod panic;

pub use panic::install_hook as install_panic_hook;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem found in a model file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIssue {
    /// Path of the model file, as given when loading.
    pub file: String,
    /// 1-based line, 0 when the issue is not tied to a position.
    pub line: usize,
    /// 1-based column, 0 when the issue is not tied to a position.
    pub column: usize,
    /// What is wrong, in plain words (with a "did you mean" where one applies).
    pub reason: String,
}

impl fmt::Display for ModelIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.reason
            )
        }
    }
}

/// Every error kpitables can report, grouped by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- the client's query -------------------------------------------------
    /// The SQL text does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A column name that the relation does not have.
    #[error("column \"{name}\" does not exist")]
    UnknownColumn {
        /// The name as the client wrote it.
        name: String,
        /// "did you mean ...?" when a close name exists.
        hint: Option<String>,
    },
    /// An unqualified column name that more than one relation in FROM has.
    #[error("column reference \"{0}\" is ambiguous")]
    AmbiguousColumn(String),
    /// A table or view name that does not exist.
    #[error("relation \"{name}\" does not exist")]
    UnknownRelation {
        /// The name as the client wrote it.
        name: String,
        /// "did you mean ...?" when a close name exists.
        hint: Option<String>,
    },
    /// `CREATE TEMP TABLE` of a name the session already has.
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// An expression of the wrong type.
    #[error("{0}")]
    TypeMismatch(String),
    /// A function that does not exist for the argument types given.
    #[error("function {name}({}) does not exist", .args.as_ref().map_or_else(|| "...".to_string(), |a| a.join(", ")))]
    UndefinedFunction {
        /// The function name as called.
        name: String,
        /// PostgreSQL names of the argument types, when known.
        args: Option<Vec<String>>,
        /// A function of a close name.
        suggestion: Option<String>,
    },
    /// A value that cannot be converted (e.g. `'abc'::int`).
    #[error("{0}")]
    InvalidValue(String),
    /// Text that is not a value of the type it is read as, in PostgreSQL's words.
    #[error("invalid input syntax for type {type_name}: \"{value}\"")]
    InvalidInput {
        /// The PostgreSQL type name (`date`, `integer`, `numeric`, ...).
        type_name: String,
        /// The text as given.
        value: String,
    },
    /// A value outside its type's range (an overflow), in the engine's words.
    #[error("{0}")]
    OutOfRange(String),
    /// A division by zero while computing a value.
    #[error("division by zero")]
    DivisionByZero,
    /// A column used outside of its grouping (e.g. ORDER BY a dimension not in the grain).
    #[error("{message}")]
    Grouping {
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// Valid SQL that the model cannot answer, or that kpitables does not support yet.
    #[error("{message}")]
    Unsupported {
        /// What is not supported and why.
        message: String,
        /// What to do instead.
        hint: Option<String>,
    },
    /// A correlated form the engine does not decorrelate (an outer column in a subquery
    /// or in a table function's arguments); answered row by row where it can be.
    #[error("{message}")]
    Correlated {
        /// What the engine said, in our words.
        message: String,
        /// What to do instead.
        hint: Option<String>,
    },
    /// A statement that would change data: kpitables is read-only.
    #[error("cannot execute {0} in a read-only transaction")]
    ReadOnly(String),
    /// A statement other than COMMIT/ROLLBACK inside a failed transaction block.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// A configuration parameter that does not exist (SET/SHOW).
    #[error("unrecognized configuration parameter \"{0}\"")]
    UnknownSetting(String),
    /// An invalid value for a parameter or a bound parameter that cannot be decoded.
    #[error("{0}")]
    InvalidParameter(String),
    /// A view or metric the user's roles do not grant (or not available in its lifecycle).
    #[error("{message}")]
    Denied {
        /// Why: a permission (42501) or a lifecycle (42704).
        kind: DenialKind,
        /// The message.
        message: String,
        /// What to do instead.
        hint: String,
    },
    /// `SET TimeZone` to a zone that does not exist.
    #[error("invalid value for parameter \"TimeZone\": \"{0}\"")]
    InvalidTimeZone(String),
    /// A statement that needs a transaction block, outside one.
    #[error("{0} can only be used in transaction blocks")]
    NoTransaction(&'static str),
    /// FETCH, MOVE or CLOSE of a cursor that is not open.
    #[error("cursor \"{0}\" does not exist")]
    UnknownCursor(String),
    /// DECLARE of a cursor name already open.
    #[error("cursor \"{0}\" already exists")]
    DuplicateCursor(String),
    /// EXECUTE or DEALLOCATE of a statement that was not prepared.
    #[error("prepared statement \"{0}\" does not exist")]
    UnknownPreparedStatement(String),
    /// PREPARE of a name already prepared.
    #[error("prepared statement \"{0}\" already exists")]
    DuplicatePreparedStatement(String),
    /// A protocol message that contradicts itself or its statement (a Bind with the
    /// wrong number of values or formats), in PostgreSQL's words.
    #[error("{0}")]
    ProtocolViolation(String),
    /// ROLLBACK TO or RELEASE of a savepoint that was not set.
    #[error("savepoint \"{0}\" does not exist")]
    UnknownSavepoint(String),
    /// The client cancelled the query.
    #[error("canceling statement due to user request")]
    Canceled,
    /// A statement nested deeper than the server plans safely.
    #[error("statement is too complex: nested more than {0} levels deep")]
    TooComplex(usize),
    /// A value that would outgrow what one value may hold (a string over 2 GiB).
    #[error("value too large: {0}")]
    TooLarge(String),
    /// A session's temporary tables would outgrow their memory budget.
    #[error("temporary tables of this session would exceed {0} MiB")]
    TempTablesFull(usize),

    /// More connections than `max_connections`.
    #[error("sorry, too many clients already")]
    TooManyConnections,
    /// A statement waited `queue_timeout` for a slot and gave up.
    #[error("canceling statement: it waited {} s for {queue}", .waited.as_secs())]
    QueueTimeout {
        /// The queue it waited in.
        queue: Queue,
        /// How long it waited.
        waited: std::time::Duration,
    },
    /// The statement ran past the session's `statement_timeout`.
    #[error("canceling statement due to statement timeout")]
    StatementTimeout,
    /// The query needed more memory than `query_memory` allows.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The session was ended (administrator, idle timeout, shutdown): FATAL.
    #[error("{}", .0.message())]
    Terminated(Ending),
    /// A plaintext connection where TLS is required.
    #[error(
        "connection requires TLS: no plaintext logins for user \"{user}\" to database \"{database}\""
    )]
    TlsRequired {
        /// The user named in the startup message.
        user: String,
        /// The database named.
        database: String,
    },

    // ---- the session ----------------------------------------------------------
    /// The client asked for a database other than the one served.
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    /// A login with a wrong password, or as a user that does not exist.
    #[error("password authentication failed for user \"{0}\"")]
    PasswordFailed(String),
    /// A message that breaks the protocol where the session cannot go on (at startup,
    /// a message the decoder cannot read): FATAL, in PostgreSQL's words.
    #[error("{0}")]
    FatalProtocolViolation(String),

    // ---- the model and configuration -----------------------------------------
    /// The model directory has problems; every one is listed.
    #[error("{}", format_issues(.0))]
    Model(Vec<ModelIssue>),
    /// The server configuration is invalid.
    #[error("configuration error: {0}")]
    Config(String),

    // ---- a warehouse ------------------------------------------------------------
    /// A warehouse source could not be reached or failed the statement sent to it.
    #[error("source \"{source_name}\": {failure}")]
    Source {
        /// The model's name of the source.
        source_name: String,
        /// What went wrong there.
        failure: SourceFailure,
    },

    // ---- the machine ----------------------------------------------------------
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An error of the embedded engine that has no better class.
    #[error("{0}")]
    Engine(String),
    /// A bug in kpitables: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How a warehouse failed. Messages never contain secrets: the sources module builds
/// them from the warehouse's own error and the model's source name only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceFailure {
    /// No connection could be opened (refused, unknown host, authentication, timeout).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection broke while a statement ran.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The statement ran longer than the source's `query_timeout_secs`.
    #[error("statement timed out after {0} s")]
    Timeout(u64),
    /// The warehouse refused or failed the statement.
    #[error("{message}")]
    Statement {
        /// The warehouse's SQLSTATE, when it reports one.
        sqlstate: Option<String>,
        /// The warehouse's message.
        message: String,
    },
    /// A value the warehouse returned that does not fit the column's type.
    #[error("{0}")]
    Value(String),
}

fn format_issues(issues: &[ModelIssue]) -> String {
    let mut out = format!("the model has {} problem(s):", issues.len());
    for issue in issues {
        out.push_str("\n  ");
        out.push_str(&issue.to_string());
    }
    out
}

/// The severity of an error, as PostgreSQL names it in an ErrorResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement fails; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

impl Severity {
    /// The `S` and `V` fields of an ErrorResponse.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Why a request was denied (the SQLSTATE follows from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    /// The user's roles or privileges do not allow it: 42501.
    Permission,
    /// Not available in its lifecycle (a draft, retired): 42704.
    Unavailable,
}

/// A queue a statement waits in before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queue {
    /// One user's statement slots (`max_statements_per_user`).
    User {
        /// The user.
        user: String,
        /// Slots of the user.
        limit: usize,
    },
    /// The server's slots of the embedded engine (`max_executing_statements`).
    Engine {
        /// Slots of the server.
        limit: usize,
    },
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Queue::User { user, limit } => write!(
                f,
                "one of user \"{user}\"'s {limit} statement slots (max_statements_per_user)"
            ),
            Queue::Engine { limit } => write!(
                f,
                "one of the embedded engine's {limit} execution slots (max_executing_statements)"
            ),
        }
    }
}

/// Why a session is being ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `pg_terminate_backend` or a server shutdown past its grace period.
    Administrator,
    /// `idle_session_timeout`.
    IdleSession,
    /// `idle_in_transaction_session_timeout`.
    IdleInTransaction,
}

impl Ending {
    /// The SQLSTATE PostgreSQL ends such a session with.
    pub fn sqlstate(self) -> &'static str {
        match self {
            Ending::Administrator => "57P01",
            Ending::IdleSession => "57P05",
            Ending::IdleInTransaction => "25P03",
        }
    }

    /// PostgreSQL's message.
    pub fn message(self) -> &'static str {
        match self {
            Ending::Administrator => "terminating connection due to administrator command",
            Ending::IdleSession => "terminating connection due to idle-session timeout",
            Ending::IdleInTransaction => {
                "terminating connection due to idle-in-transaction timeout"
            }
        }
    }
}

/// SQLSTATEs of the warnings sent as NoticeResponse (not errors: the statement runs).
pub mod warnings {
    /// `deprecated_feature`: the query computes a deprecated metric.
    pub const DEPRECATED: &str = "01P01";
    /// `warning`: the query reads a table failing a data quality check.
    pub const DATA_QUALITY: &str = "01000";
}

impl Error {
    /// The PostgreSQL SQLSTATE code of this error. This is the only SQLSTATE table.
    pub fn sqlstate(&self) -> &str {
        match self {
            Error::Source { failure, .. } => match failure {
                SourceFailure::Connect(_) => "08001",
                SourceFailure::ConnectionLost(_) => "08006",
                SourceFailure::Timeout(_) => "57014",
                SourceFailure::Statement {
                    sqlstate: Some(code),
                    ..
                } if code.len() == 5 && code != "00000" => code,
                SourceFailure::Statement { .. } => "XX000",
                SourceFailure::Value(_) => "22000",
            },
            Error::Syntax(_) => "42601",
            Error::UnknownColumn { .. } => "42703",
            Error::UnknownRelation { .. } => "42P01",
            Error::DuplicateTable(_) => "42P07",
            Error::TypeMismatch(_) => "42804",
            Error::UndefinedFunction { .. } => "42883",
            Error::InvalidValue(_) => "22P02",
            Error::InvalidInput { type_name, .. } => {
                if is_datetime_type(type_name) {
                    "22007"
                } else {
                    "22P02"
                }
            }
            Error::DivisionByZero => "22012",
            Error::OutOfRange(_) => "22003",
            Error::Grouping { .. } => "42803",
            Error::AmbiguousColumn(_) => "42702",
            Error::Unsupported { .. } | Error::Correlated { .. } => "0A000",
            Error::ReadOnly(_) => "25006",
            Error::InFailedTransaction => "25P02",
            Error::UnknownSetting(_) => "42704",
            Error::InvalidParameter(_) | Error::InvalidTimeZone(_) => "22023",
            Error::Denied { kind, .. } => match kind {
                DenialKind::Permission => "42501",
                DenialKind::Unavailable => "42704",
            },
            Error::NoTransaction(_) => "25P01",
            Error::UnknownCursor(_) => "34000",
            Error::DuplicateCursor(_) => "42P03",
            Error::UnknownPreparedStatement(_) => "26000",
            Error::DuplicatePreparedStatement(_) => "42P05",
            Error::ProtocolViolation(_) => "08P01",
            Error::UnknownSavepoint(_) => "3B001",
            Error::Canceled => "57014",
            Error::TempTablesFull(_) => "53200",
            Error::TooComplex(_) => "54001",
            Error::TooLarge(_) => "54000",
            Error::TooManyConnections => "53300",
            Error::QueueTimeout { .. } => "53000",
            Error::StatementTimeout => "57014",
            Error::OutOfMemory(_) => "53200",
            Error::Terminated(why) => why.sqlstate(),
            Error::TlsRequired { .. } => "28000",
            Error::UnknownDatabase(_) => "3D000",
            Error::PasswordFailed(_) => "28P01",
            Error::FatalProtocolViolation(_) => "08P01",
            Error::Model(_) => "F0000",
            Error::Config(_) => "F0000",
            Error::Io { .. } => "58030",
            Error::Engine(_) => "XX000",
            Error::Internal(_) => "XX000",
        }
    }

    /// A hint for the client, where there is something useful to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::UnknownColumn { hint, .. }
            | Error::UnknownRelation { hint, .. }
            | Error::Grouping { hint, .. }
            | Error::Unsupported { hint, .. }
            | Error::Correlated { hint, .. } => hint.clone(),
            Error::Syntax(_) => Some("check the SQL near the position the message names".into()),
            Error::UndefinedFunction { suggestion, .. } => Some(match suggestion {
                Some(s) => format!(
                    "No function matches the given name and argument types. You might need to add explicit type casts. A function of a close name is \"{s}\"."
                ),
                None => "No function matches the given name and argument types. You might need to add explicit type casts.".into(),
            }),
            Error::InvalidInput { type_name, .. } => Some(match type_name.as_str() {
                "date" => "write dates as 'YYYY-MM-DD'".into(),
                t if t.starts_with("timestamp") => {
                    "write timestamps as 'YYYY-MM-DD HH:MM:SS'".into()
                }
                t => format!("the text must be a valid {t}"),
            }),
            Error::TypeMismatch(_) => {
                Some("add an explicit cast, e.g. CAST(x AS text) or x::date".into())
            }
            Error::ReadOnly(_) => {
                Some("kpitables serves governed metrics read-only; change the model instead".into())
            }
            Error::InFailedTransaction => Some("send ROLLBACK to end the transaction".into()),
            Error::AmbiguousColumn(_) => Some(
                "qualify the column with its table or alias, e.g. t.column".into(),
            ),
            Error::ProtocolViolation(_) => Some(
                "the client's driver sent a message that does not match its statement; the session goes on after Sync"
                    .into(),
            ),
            Error::DuplicateTable(_) => Some("DROP TABLE it first, or choose another name".into()),
            Error::TooManyConnections => Some(
                "the server's max_connections is reached; close idle connections or raise [limits] max_connections"
                    .into(),
            ),
            Error::QueueTimeout { queue, .. } => Some(match queue {
                Queue::User { .. } => "the statements ahead of it kept every slot of this user busy; retry, or raise [limits] max_statements_per_user or [limits] queue_timeout".into(),
                Queue::Engine { .. } => "the embedded engine was busy with other statements; retry, or raise [limits] max_executing_statements or [limits] queue_timeout".into(),
            }),
            Error::StatementTimeout => Some(
                "the statement ran longer than statement_timeout; narrow the query or SET statement_timeout"
                    .into(),
            ),
            Error::OutOfMemory(_) => Some(
                "the query needed more memory than [limits] query_memory allows: filter it, ask for a coarser grain, or push it down to a warehouse"
                    .into(),
            ),
            Error::TlsRequired { .. } => Some(
                "connect with sslmode=require (or verify-full with the server's CA)".into(),
            ),
            Error::TooLarge(_) => Some(
                "a text, array or binary value may not exceed 2 GiB; aggregate fewer rows into one value"
                    .into(),
            ),
            Error::TooComplex(_) => Some(
                "split it into several statements, or use IN (...) lists instead of long UNION chains"
                    .into(),
            ),
            Error::TempTablesFull(_) => Some(
                "temporary tables are held in memory: DROP TABLE the ones no longer needed".into(),
            ),
            Error::UnknownSetting(_) => {
                Some("SHOW ALL lists the parameters kpitables knows".into())
            }
            Error::Denied { hint, .. } => Some(hint.clone()),
            Error::InvalidTimeZone(_) => Some(
                "use a time zone name such as 'Asia/Shanghai', 'Europe/Berlin' or 'UTC'".into(),
            ),
            Error::UnknownDatabase(_) => Some("connect to the database \"kpitables\"".into()),
            Error::Internal(_) => Some("this is a bug in kpitables; please report it".into()),
            Error::Source { failure, .. } => match failure {
                SourceFailure::Connect(_) | SourceFailure::ConnectionLost(_) => Some(
                    "the warehouse is down or unreachable; kpitables reconnects by itself when it is back, so retry the query"
                        .into(),
                ),
                SourceFailure::Timeout(_) => Some(
                    "narrow the query (filters, a coarser grain) or raise query_timeout_secs of the source".into(),
                ),
                SourceFailure::Statement { .. } => Some(
                    "EXPLAIN the query to see the SQL sent to the source".into(),
                ),
                SourceFailure::Value(_) => None,
            },
            _ => None,
        }
    }

    /// PostgreSQL's severity: FATAL for an error that ends the session.
    pub fn severity(&self) -> Severity {
        match self {
            Error::Terminated(_)
            | Error::TooManyConnections
            | Error::TlsRequired { .. }
            | Error::UnknownDatabase(_)
            | Error::PasswordFailed(_)
            | Error::FatalProtocolViolation(_) => Severity::Fatal,
            _ => Severity::Error,
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(message: impl Into<String>, hint: impl Into<Option<String>>) -> Error {
        Error::Unsupported {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Whether `sqlstate` is PostgreSQL's `insufficient_privilege` (what the access rules
/// refuse with).
pub fn is_insufficient_privilege(sqlstate: &str) -> bool {
    sqlstate == "42501"
}

fn is_datetime_type(name: &str) -> bool {
    name == "date" || name == "interval" || name.starts_with("time")
}

/// The closest candidate to `name`, as a "did you mean" hint.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let lower = name.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = levenshtein(&lower, &candidate.to_lowercase());
        let limit = (candidate.chars().count().max(lower.chars().count()) / 2).max(2);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| format!("did you mean \"{c}\"?"))
}

fn levenshtein(a: &str, b: &str) -> usize {
    datafusion::common::utils::datafusion_strsim::levenshtein(a, b)
}
