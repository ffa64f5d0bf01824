//! What each client statement asks for: a [`Command`], classified from its syntax tree
//! (queries, session settings, transactions, savepoints, cursors, prepared statements,
//! temporary tables; anything else that writes is refused as read-only).

use datafusion::sql::sqlparser::ast::{
    CloseCursor, Expr, FetchDirection, ObjectNamePart, Query, Reset, Set, SetExpr, Statement, Value,
};

use super::check_nesting;
use crate::error::{Error, Result};

/// What a client statement asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// A query (SELECT, WITH, VALUES): rewritten and planned.
    Query(Box<Statement>),
    /// `EXPLAIN <query>`: show the rewritten SQL and the plan.
    Explain(Box<Statement>),
    /// `SET name = value` / `SET name TO DEFAULT` (value None).
    Set {
        /// Setting name.
        name: String,
        /// New value; None means the default.
        value: Option<String>,
    },
    /// `RESET name` / `RESET ALL` (None).
    Reset(Option<String>),
    /// `SHOW name` / `SHOW ALL` (None).
    Show(Option<String>),
    /// `BEGIN` / `START TRANSACTION`.
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `DISCARD ALL|PLANS|SEQUENCES|TEMP`: the word after DISCARD, upper case.
    Discard(String),
    /// `DEALLOCATE name` / `DEALLOCATE ALL` (None).
    Deallocate(Option<String>),
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `DECLARE name [NO SCROLL] CURSOR [WITH HOLD] FOR query`.
    Declare {
        /// Cursor name.
        name: String,
        /// The query whose rows the cursor returns.
        query: Box<Statement>,
        /// WITH HOLD: the cursor outlives the transaction.
        hold: bool,
    },
    /// `FETCH [count] FROM name` (rows returned) or `MOVE [count] FROM name` (skipped).
    Fetch {
        /// Cursor name.
        name: String,
        /// How many rows, forward.
        count: FetchCount,
        /// MOVE: position the cursor without returning rows.
        skip: bool,
    },
    /// `CLOSE name` / `CLOSE ALL` (None).
    Close(Option<String>),
    /// `PREPARE name [(types)] AS query`.
    Prepare {
        /// Statement name.
        name: String,
        /// The query, with `$n` parameters.
        query: Box<Statement>,
    },
    /// `EXECUTE name [(values)]`.
    Execute {
        /// Statement name.
        name: String,
        /// Values for `$1..$n`.
        params: Vec<Expr>,
    },
    /// `CREATE TEMP TABLE name (columns)`, `CREATE TEMP TABLE name AS query` or
    /// `SELECT ... INTO TEMP name` (see [`crate::temp`]).
    CreateTemp {
        /// Table name.
        name: String,
        /// Column names and types, for a table created empty.
        columns: Vec<(String, datafusion::sql::sqlparser::ast::DataType)>,
        /// The query whose rows fill the table.
        query: Option<Box<Statement>>,
        /// Whether to answer `SELECT n` (CREATE TABLE AS, SELECT INTO), not `CREATE TABLE`.
        tag_select: bool,
    },
    /// `INSERT INTO name [(columns)] query`: allowed into temporary tables only.
    Insert {
        /// Table name, as written (one part, or `pg_temp.name`).
        name: String,
        /// Target columns; empty means all, in order.
        columns: Vec<String>,
        /// The rows (VALUES or a query).
        source: Box<Statement>,
    },
    /// `DROP TABLE [IF EXISTS] names`: allowed for temporary tables only.
    DropTables {
        /// Table names.
        names: Vec<String>,
        /// IF EXISTS.
        if_exists: bool,
    },
    /// `COPY (query) TO STDOUT` / `COPY view [(columns)] TO STDOUT`.
    CopyOut(Box<super::CopyOut>),
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel` / `UNLISTEN *` (None).
    Unlisten(Option<String>),
    /// `NOTIFY channel [, 'payload']`.
    Notify {
        /// The channel.
        channel: String,
        /// The payload (empty when not given).
        payload: String,
    },
    /// A statement accepted with no effect on a read-only server (`SET TRANSACTION ...`);
    /// the command tag to answer with.
    Accepted(&'static str),
}

/// How many rows a FETCH or MOVE asks for. Cursors scan forward only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchCount {
    /// At most this many rows.
    Rows(u64),
    /// Every remaining row.
    All,
}

fn forward_only(what: &str) -> Error {
    Error::unsupported(
        format!("cursor can only scan forward: FETCH {what} is not supported"),
        Some("kpitables cursors are NO SCROLL; fetch forward (FETCH n, FETCH ALL)".to_string()),
    )
}

fn fetch_count(direction: &FetchDirection) -> Result<FetchCount> {
    let number = |v: &datafusion::sql::sqlparser::ast::ValueWithSpan| -> Result<i64> {
        match &v.value {
            Value::Number(n, _) => n
                .parse::<i64>()
                .map_err(|_| Error::Syntax(format!("invalid FETCH count {n}"))),
            other => Err(Error::Syntax(format!("invalid FETCH count {other}"))),
        }
    };
    let rows = |n: i64| {
        u64::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(FetchCount::Rows)
            .ok_or_else(|| forward_only(&n.to_string()))
    };
    match direction {
        FetchDirection::Next => Ok(FetchCount::Rows(1)),
        FetchDirection::Count { limit } => rows(number(limit)?),
        FetchDirection::Forward { limit: None } => Ok(FetchCount::Rows(1)),
        FetchDirection::Forward { limit: Some(limit) } => rows(number(limit)?),
        FetchDirection::All | FetchDirection::ForwardAll => Ok(FetchCount::All),
        other => Err(forward_only(&other.to_string())),
    }
}

fn ident_name(ident: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Classify one statement.
pub fn classify(statement: Statement) -> Result<Command> {
    check_nesting(&statement)?;
    super::subquery::check_scalar_subqueries(&statement)?;
    Ok(match statement {
        Statement::Query(mut query) if selects_into(&query) => {
            let into =
                take_into(&mut query).ok_or_else(|| Error::ReadOnly("SELECT INTO".into()))?;
            if !into.temporary {
                return Err(Error::ReadOnly("SELECT INTO".into()));
            }
            Command::CreateTemp {
                name: temp_table_name(&into.name)?,
                columns: Vec::new(),
                query: Some(Box::new(Statement::Query(query))),
                tag_select: true,
            }
        }
        Statement::CreateTable(create) if create.temporary => {
            if matches!(
                create.on_commit,
                Some(
                    datafusion::sql::sqlparser::ast::OnCommit::Drop
                        | datafusion::sql::sqlparser::ast::OnCommit::DeleteRows
                )
            ) {
                return Err(Error::unsupported(
                    "ON COMMIT DROP and ON COMMIT DELETE ROWS are not supported",
                    Some("temporary tables keep their rows until DROP TABLE or the end of the session".into()),
                ));
            }
            Command::CreateTemp {
                name: temp_table_name(&create.name)?,
                columns: create
                    .columns
                    .iter()
                    .map(|c| (ident_name(&c.name), c.data_type.clone()))
                    .collect(),
                tag_select: create.query.is_some(),
                query: create.query.map(|q| Box::new(Statement::Query(q))),
            }
        }
        Statement::Insert(insert)
            if insert.source.is_some()
                && matches!(
                    insert.table,
                    datafusion::sql::sqlparser::ast::TableObject::TableName(_)
                ) =>
        {
            let datafusion::sql::sqlparser::ast::TableObject::TableName(table) = &insert.table
            else {
                return Err(Error::ReadOnly("INSERT".into()));
            };
            Command::Insert {
                name: temp_table_name(table).map_err(|_| Error::ReadOnly("INSERT".into()))?,
                columns: insert
                    .columns
                    .iter()
                    .map(|c| {
                        c.0.last()
                            .and_then(ObjectNamePart::as_ident)
                            .map(ident_name)
                            .unwrap_or_default()
                    })
                    .collect(),
                source: Box::new(Statement::Query(typed_values(
                    insert
                        .source
                        .clone()
                        .ok_or_else(|| Error::ReadOnly("INSERT".into()))?,
                ))),
            }
        }
        Statement::Drop {
            object_type: datafusion::sql::sqlparser::ast::ObjectType::Table,
            if_exists,
            ref names,
            ..
        } => Command::DropTables {
            names: names
                .iter()
                .map(|n| temp_table_name(n).map_err(|_| Error::ReadOnly("DROP TABLE".into())))
                .collect::<Result<_>>()?,
            if_exists,
        },
        Statement::Query(_) => Command::Query(Box::new(statement)),
        Statement::Explain { statement, .. } => match *statement {
            Statement::Query(_) => Command::Explain(statement),
            other => {
                return Err(Error::unsupported(
                    format!("EXPLAIN of {} is not supported", verb(&other)),
                    None,
                ));
            }
        },
        Statement::Set(set) => classify_set(set)?,
        Statement::Reset(reset) => Command::Reset(match reset.reset {
            Reset::ALL => None,
            Reset::ConfigurationParameter(name) => Some(name.to_string().to_lowercase()),
        }),
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            if name == "all" {
                Command::Show(None)
            } else {
                Command::Show(Some(name))
            }
        }
        Statement::StartTransaction { .. } => Command::Begin,
        Statement::Commit { .. } => Command::Commit,
        Statement::Rollback {
            savepoint: None, ..
        } => Command::Rollback,
        Statement::Rollback {
            savepoint: Some(name),
            ..
        } => Command::RollbackTo(ident_name(&name)),
        Statement::Savepoint { name } => Command::Savepoint(ident_name(&name)),
        Statement::ReleaseSavepoint { name } => Command::Release(ident_name(&name)),
        Statement::Discard { object_type } => Command::Discard(object_type.to_string()),
        Statement::LISTEN { channel } => Command::Listen(ident_name(&channel)),
        Statement::UNLISTEN { channel } => {
            Command::Unlisten(Some(ident_name(&channel)).filter(|c| c != "*"))
        }
        Statement::NOTIFY { channel, payload } => Command::Notify {
            channel: ident_name(&channel),
            payload: payload.unwrap_or_default(),
        },
        Statement::Deallocate { name, .. } => Command::Deallocate(
            (!name.value.eq_ignore_ascii_case("all") || name.quote_style.is_some())
                .then(|| ident_name(&name)),
        ),
        Statement::Declare { stmts } => {
            let [declare] = <[_; 1]>::try_from(stmts).map_err(|_| {
                Error::unsupported("DECLARE of several cursors at once is not supported", None)
            })?;
            let (Some(query), [name]) = (declare.for_query, declare.names.as_slice()) else {
                return Err(Error::unsupported(
                    "DECLARE is supported for cursors only (DECLARE name CURSOR FOR query)",
                    None,
                ));
            };
            if declare.scroll == Some(true) {
                return Err(forward_only("of a SCROLL cursor"));
            }
            Command::Declare {
                name: ident_name(name),
                query: Box::new(Statement::Query(query)),
                hold: declare.hold == Some(true),
            }
        }
        Statement::Fetch {
            name,
            direction,
            into: None,
            ..
        } => Command::Fetch {
            name: ident_name(&name),
            count: fetch_count(&direction)?,
            skip: false,
        },
        Statement::Close { cursor } => Command::Close(match cursor {
            CloseCursor::All => None,
            CloseCursor::Specific { name } => Some(ident_name(&name)),
        }),
        Statement::Prepare {
            name, statement, ..
        } => match *statement {
            Statement::Query(_) => Command::Prepare {
                name: ident_name(&name),
                query: statement,
            },
            other => {
                return Err(Error::unsupported(
                    format!("PREPARE of {} is not supported", verb(&other)),
                    Some("PREPARE a SELECT query".to_string()),
                ));
            }
        },
        Statement::Execute {
            name: Some(name),
            parameters,
            immediate: false,
            ..
        } => Command::Execute {
            name: name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(ident_name)
                .unwrap_or_default(),
            params: parameters,
        },
        Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } => Command::CopyOut(Box::new(super::copy::classify(
            source,
            to,
            target,
            &options,
            &legacy_options,
        )?)),
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge { .. }
        | Statement::Truncate { .. }
        | Statement::CreateTable(_)
        | Statement::CreateView { .. }
        | Statement::CreateIndex(_)
        | Statement::Drop { .. }
        | Statement::AlterTable { .. } => return Err(Error::ReadOnly(verb(&statement))),
        other => {
            return Err(Error::unsupported(
                format!("{} is not supported", verb(&other)),
                Some("kpitables answers SELECT queries over its views, plus SET, SHOW and transaction statements".into()),
            ));
        }
    })
}

/// `VALUES ($1, ...)` of an INSERT: a bare parameter becomes `CAST($1 AS TEXT)`, so that it
/// has a type to plan with; the INSERT casts each value to its column's type.
fn typed_values(mut query: Box<Query>) -> Box<Query> {
    if let SetExpr::Values(values) = query.body.as_mut() {
        for row in &mut values.rows {
            for item in row.iter_mut() {
                if let Expr::Value(v) = item
                    && matches!(v.value, Value::Placeholder(_))
                {
                    let placeholder = std::mem::replace(item, Expr::Value(Value::Null.into()));
                    *item = Expr::Cast {
                        kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
                        expr: Box::new(placeholder),
                        data_type: datafusion::sql::sqlparser::ast::DataType::Text,
                        array: false,
                        format: None,
                    };
                }
            }
        }
    }
    query
}

/// A temporary table's name: `name` or `pg_temp.name`.
fn temp_table_name(name: &datafusion::sql::sqlparser::ast::ObjectName) -> Result<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(ObjectNamePart::as_ident)
        .map(ident_name)
        .collect();
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [schema, table] if schema == crate::temp::TEMP_SCHEMA => Ok(table.clone()),
        _ => Err(Error::ReadOnly(format!("CREATE TABLE {name}"))),
    }
}

/// Remove and return the `INTO` clause of a `SELECT ... INTO` query.
fn take_into(query: &mut Query) -> Option<datafusion::sql::sqlparser::ast::SelectInto> {
    match query.body.as_mut() {
        SetExpr::Select(select) => select.into.take(),
        _ => None,
    }
}

/// Whether a query's body is a `SELECT ... INTO` (which creates a table).
fn selects_into(query: &Query) -> bool {
    fn body(set: &SetExpr) -> bool {
        match set {
            SetExpr::Select(select) => select.into.is_some(),
            SetExpr::Query(q) => body(&q.body),
            SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
            _ => false,
        }
    }
    body(&query.body)
}

fn classify_set(set: Set) -> Result<Command> {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = variable
                .0
                .iter()
                .filter_map(ObjectNamePart::as_ident)
                .map(|i| i.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(".");
            let value = set_value(&values);
            Ok(Command::Set { name, value })
        }
        Set::SetTimeZone { value, .. } => Ok(Command::Set {
            name: "timezone".into(),
            value: time_zone_value(&value),
        }),
        Set::SetNames { charset_name, .. } => Ok(Command::Set {
            name: "client_encoding".into(),
            value: Some(charset_name.value),
        }),
        Set::SetTransaction { .. } | Set::SetSessionParam(_) | Set::SetRole { .. } => {
            Ok(Command::Accepted("SET"))
        }
        other => Err(Error::unsupported(
            format!("{other} is not supported"),
            None,
        )),
    }
}

/// The text of a SET value list, or None for DEFAULT.
/// The value of `SET TIME ZONE x`: `LOCAL` and `DEFAULT` reset it; a number is hours east
/// of Greenwich (SQL standard), written as the POSIX offset the setting reads.
fn time_zone_value(value: &Expr) -> Option<String> {
    let number = match value {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<f64>().ok(),
            _ => None,
        },
        Expr::UnaryOp {
            op: datafusion::sql::sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<f64>().ok().map(|n| -n),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    if let Some(hours) = number {
        // Hours east → POSIX (west positive) `-H:MM`.
        let minutes = (hours * 60.0).round() as i64;
        let sign = if minutes > 0 { '-' } else { '+' };
        let minutes = minutes.abs();
        return Some(format!("{sign}{}:{:02}", minutes / 60, minutes % 60));
    }
    set_value(std::slice::from_ref(value)).filter(|v| !v.eq_ignore_ascii_case("local"))
}

fn set_value(values: &[Expr]) -> Option<String> {
    let parts: Vec<String> = values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect();
    if parts.len() == 1 && parts[0].eq_ignore_ascii_case("default") {
        None
    } else {
        Some(parts.join(", "))
    }
}

fn verb(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(a), Some(b)) if matches!(a.to_uppercase().as_str(), "CREATE" | "DROP" | "ALTER") => {
            format!("{} {}", a.to_uppercase(), b.to_uppercase())
        }
        (Some(a), _) => a.to_uppercase(),
        _ => "this statement".into(),
    }
}
