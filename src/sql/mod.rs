//! Parse client SQL and classify each statement into a [`Command`].
//!
//! Invariant: this is the only place that parses client SQL text. Everything downstream
//! works on syntax trees. Client quirks that are PostgreSQL syntax DataFusion does not
//! take are smoothed in [`compat`], each rule with its test.

pub mod compat;
pub mod literals;
pub mod naming;
pub mod set_returning;
pub mod subquery;

use datafusion::sql::sqlparser::ast::{
    CloseCursor, Expr, FetchDirection, ObjectNamePart, Query, Reset, Set, SetExpr, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

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

/// Aggregate functions: a call of one of these without OVER is an aggregate.
pub const AGGREGATES: &[&str] = &[
    "sum",
    "count",
    "avg",
    "mean",
    "min",
    "max",
    "any_value",
    "first_value",
    "last_value",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "median",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "percentile_cont",
    "mode",
    "bit_and",
    "bit_or",
    "bit_xor",
    "corr",
    "covar",
    "covar_pop",
    "covar_samp",
    "regr_slope",
    "regr_intercept",
    "regr_count",
    "regr_r2",
    "regr_avgx",
    "regr_avgy",
    "regr_sxx",
    "regr_syy",
    "regr_sxy",
    "json_agg",
    "jsonb_agg",
];

/// Is `expr` a call of an aggregate function (not a window function)?
pub fn is_aggregate_call(expr: &Expr) -> bool {
    match expr {
        Expr::Function(f) if f.over.is_none() => {
            let name = f
                .name
                .0
                .last()
                .and_then(ObjectNamePart::as_ident)
                .map(|i| i.value.to_lowercase())
                .unwrap_or_default();
            AGGREGATES.contains(&name.as_str())
        }
        _ => false,
    }
}

/// Does `expr` contain an aggregate call of its own block (aggregates inside a nested
/// subquery belong to that subquery)?
pub fn contains_aggregate(expr: &Expr) -> bool {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    use std::ops::ControlFlow;
    /// Stops at nested queries: an aggregate inside a subquery aggregates that subquery.
    struct V {
        found: bool,
        depth: usize,
    }
    impl Visitor for V {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if self.depth == 0 && is_aggregate_call(expr) {
                self.found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V {
        found: false,
        depth: 0,
    };
    let _ = expr.visit(&mut v);
    v.found
}

/// The column name PostgreSQL gives an unnamed select item (its `FigureColname`).
pub fn output_name(expr: &Expr) -> String {
    let ident = |i: &datafusion::sql::sqlparser::ast::Ident| {
        if i.quote_style.is_some() {
            i.value.clone()
        } else {
            i.value.to_lowercase()
        }
    };
    match expr {
        Expr::Identifier(i) => ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(ObjectNamePart::as_ident)
            .map(|i| i.value.to_lowercase())
            .unwrap_or_else(|| "?column?".into()),
        Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            Expr::Value(_) => naming::type_display_name(data_type),
            inner => output_name(inner),
        },
        Expr::Nested(inner) => output_name(inner),
        Expr::Case { .. } => "case".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Array(_) => "array".into(),
        Expr::Subquery(q) => match q.body.as_ref() {
            datafusion::sql::sqlparser::ast::SetExpr::Select(s) => match s.projection.as_slice() {
                [datafusion::sql::sqlparser::ast::SelectItem::UnnamedExpr(e)] => output_name(e),
                [datafusion::sql::sqlparser::ast::SelectItem::ExprWithAlias { alias, .. }] => {
                    ident(alias)
                }
                _ => "?column?".into(),
            },
            _ => "?column?".into(),
        },
        _ => "?column?".into(),
    }
}

/// The conjuncts of an AND chain (through parentheses).
pub fn split_and(expr: Expr) -> Vec<Expr> {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut out = split_and(*left);
            out.extend(split_and(*right));
            out
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(*inner)
        }
        other => vec![other],
    }
}

/// Parse `sql` into statements (PostgreSQL dialect).
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    let dialect = PostgreSqlDialect {};
    Parser::parse_sql(&dialect, sql).map_err(|e| {
        let message = e.to_string();
        Error::Syntax(message.trim_start_matches("sql parser error: ").to_string())
    })
}

/// Parse `sql` and classify each statement. The text must parse as a whole; each
/// statement classifies on its own, so a multi-statement string runs up to the first
/// statement that fails, as in PostgreSQL. `MOVE`, which sqlparser lacks, parses here.
pub fn parse_commands(sql: &str) -> Result<Vec<Result<Command>>> {
    use datafusion::sql::sqlparser::tokenizer::Token;
    let syntax = |e: datafusion::sql::sqlparser::parser::ParserError| {
        let message = e.to_string();
        Error::Syntax(message.trim_start_matches("sql parser error: ").to_string())
    };
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let is_move = match &parser.peek_token_ref().token {
            Token::EOF => break,
            Token::Word(w) => w.quote_style.is_none() && w.value.eq_ignore_ascii_case("move"),
            _ => false,
        };
        let statement = if is_move {
            parser.next_token();
            parser.parse_fetch_statement().map_err(syntax)?
        } else {
            parser.parse_statement().map_err(syntax)?
        };
        out.push(classify(statement).map(|command| match command {
            Command::Fetch { name, count, .. } if is_move => Command::Fetch {
                name,
                count,
                skip: true,
            },
            other => other,
        }));
        if !matches!(parser.peek_token_ref().token, Token::EOF | Token::SemiColon) {
            return Err(Error::Syntax(format!(
                "expected end of statement, found {}",
                parser.peek_token_ref().token
            )));
        }
    }
    Ok(out)
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

/// The deepest nesting a statement may have (UNION branches, nested expressions and
/// subqueries): well within what planning handles on a worker's stack, so that no
/// statement can overflow it and take the server down.
pub const MAX_NESTING: usize = 1000;

/// 54001 for a statement nested deeper than [`MAX_NESTING`].
pub fn check_nesting(statement: &Statement) -> Result<()> {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    use std::ops::ControlFlow;
    fn set_depth(set: &SetExpr) -> usize {
        // Iterative along the left spine (a UNION chain), recursive to the right.
        let mut depth = 0;
        let mut deepest = 0;
        let mut current = set;
        loop {
            match current {
                SetExpr::SetOperation { left, right, .. } => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return depth;
                    }
                    deepest = deepest.max(depth + set_depth(right));
                    current = left;
                }
                SetExpr::Query(q) => {
                    depth += 1;
                    current = &q.body;
                }
                _ => return deepest.max(depth),
            }
        }
    }
    struct V {
        depth: usize,
        deepest: usize,
    }
    impl Visitor for V {
        type Break = ();
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.depth += 1;
            self.deepest = self.deepest.max(self.depth);
            if self.depth > MAX_NESTING {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            self.depth += 1;
            let sets = set_depth(&query.body);
            self.deepest = self.deepest.max(self.depth + sets);
            if self.depth + sets > MAX_NESTING {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    // Set operations first: the visitor below recurses along them.
    if let Statement::Query(q) = statement
        && set_depth(&q.body) > MAX_NESTING
    {
        return Err(Error::TooComplex(MAX_NESTING));
    }
    let mut v = V {
        depth: 0,
        deepest: 0,
    };
    match statement.visit(&mut v) {
        ControlFlow::Break(()) => Err(Error::TooComplex(MAX_NESTING)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Classify one statement.
pub fn classify(statement: Statement) -> Result<Command> {
    check_nesting(&statement)?;
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
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge { .. }
        | Statement::Truncate { .. }
        | Statement::CreateTable(_)
        | Statement::CreateView { .. }
        | Statement::CreateIndex(_)
        | Statement::Drop { .. }
        | Statement::AlterTable { .. }
        | Statement::Copy { .. } => return Err(Error::ReadOnly(verb(&statement))),
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

/// A plain call `name(args)`.
pub(crate) fn call(name: &str, args: Vec<Expr>) -> datafusion::sql::sqlparser::ast::Function {
    use datafusion::sql::sqlparser::ast::{
        Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    };
    Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(datafusion::sql::sqlparser::ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    }
}

/// Parse one expression. The rules build expressions from rendered parts of the
/// client's own syntax tree, so the text parses back.
pub(crate) fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

/// The last part of a name, lower case (`pg_catalog.Foo` → `foo`).
pub(crate) fn last_name(name: &datafusion::sql::sqlparser::ast::ObjectName) -> String {
    name.0
        .last()
        .and_then(ObjectNamePart::as_ident)
        .map(|i| i.value.to_lowercase())
        .unwrap_or_default()
}

/// Function names: `information_schema._pg_*` helpers are registered unqualified.
pub(crate) fn strip_function_schema(name: &mut datafusion::sql::sqlparser::ast::ObjectName) {
    if name.0.len() == 2 {
        let first = name.0[0].as_ident().map(|i| i.value.to_lowercase());
        if matches!(first.as_deref(), Some("pg_catalog" | "information_schema")) {
            name.0.remove(0);
        }
    }
}
