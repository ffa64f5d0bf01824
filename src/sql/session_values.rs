//! The session's own values in a statement: `current_user`, `session_user`,
//! `current_database()`, `current_schema()`, `current_setting('x')` and
//! `pg_backend_pid()` become literals of the session that plans it, and the facts another
//! session might not share are recorded ([`SessionRead`]) so that a cached plan serves only
//! sessions for which they hold.

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};

use super::compat::{number, string};
use super::last_name;
use crate::session::Session;

/// Session facts that replace session functions.
#[derive(Debug, Clone)]
pub struct SessionFacts<'a> {
    /// The session.
    pub session: &'a Session,
    /// The database name.
    pub database: &'a str,
    /// The session's temporary tables, when it has any (see [`crate::temp`]).
    pub temp_tables: Option<std::sync::Arc<dyn datafusion::catalog::SchemaProvider>>,
}

/// A session fact a compatibility rule put into a statement as a value: a plan built
/// with it is right for another session only if that session has the same value (the
/// user and the database are part of the plan cache's key; these are the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRead {
    /// `pg_backend_pid()`.
    Pid(i32),
    /// `current_setting(name)` and its value (`None`: no such setting).
    Setting(String, Option<String>),
}

impl SessionRead {
    /// Whether `session` has the value this read found.
    pub fn holds(&self, session: &Session) -> bool {
        match self {
            SessionRead::Pid(pid) => session.pid == *pid,
            SessionRead::Setting(name, value) => session.get(name).ok() == *value,
        }
    }
}

fn first_string_arg(f: &Function) -> Option<String> {
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    match list.args.first() {
        Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn no_args(f: &Function) -> bool {
    match &f.args {
        FunctionArguments::None => true,
        FunctionArguments::List(l) => l.args.is_empty(),
        FunctionArguments::Subquery(_) => false,
    }
}

/// The session's value for a session function call (`current_user`, `pg_backend_pid()`,
/// `current_setting('x')`, ...), recording in `reads` each fact another session might not
/// share.
pub(super) fn session_value(
    f: &Function,
    facts: &SessionFacts<'_>,
    reads: &mut Vec<SessionRead>,
) -> Option<Expr> {
    let name = last_name(&f.name);
    let session = facts.session;
    match name.as_str() {
        "current_user" | "session_user" | "user" | "current_role" if no_args(f) => {
            Some(string(&session.user))
        }
        "current_database" | "current_catalog" if no_args(f) => Some(string(facts.database)),
        "current_schema" if no_args(f) => Some(string("public")),
        "pg_backend_pid" if no_args(f) => {
            reads.push(SessionRead::Pid(session.pid));
            Some(number(i64::from(session.pid)))
        }
        "current_setting" => {
            let setting = first_string_arg(f)?;
            let value = session.get(&setting).ok();
            reads.push(SessionRead::Setting(setting, value.clone()));
            Some(match value {
                Some(v) => string(v),
                None => Expr::Value(Value::Null.into()),
            })
        }
        _ => None,
    }
}
