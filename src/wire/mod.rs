//! The PostgreSQL wire protocol: the only module that uses `pgwire`.
//!
//! Listener and per-connection task ([`serve`]), startup and authentication ([`auth`]),
//! simple and extended query handling (here), and result encoding ([`encode`]).
//! Statements are parsed and planned by the engine; this module only moves messages,
//! keeps transaction status, and turns [`Error`]s into `ErrorResponse`s.
//!
//! Invariant: every error reaches the client as an ErrorResponse with its SQLSTATE and
//! the connection stays usable; nothing here panics on client input.

pub mod auth;
pub mod encode;
pub mod numeric;
pub mod objects;
mod temp;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::ParameterStatus;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::Config;
use crate::engine::{Engine, QueryPlan};
use crate::error::{Error, Result};
use crate::serving::Served;
use crate::session::{Session, display_name};
use crate::sql::compat::SessionFacts;
use crate::sql::{self, Command, FetchCount};
use objects::SessionObjects;

/// The error as PostgreSQL sends it.
pub fn error_info(error: &Error) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".into(), error.sqlstate().into(), error.to_string());
    info.hint = error.hint();
    info
}

/// SQLSTATE and message of an error sent to the client (for the audit trail).
fn error_parts(error: &PgWireError) -> (String, String) {
    match error {
        PgWireError::UserError(info) => (info.code.clone(), info.message.clone()),
        other => ("XX000".to_string(), other.to_string()),
    }
}

fn user_error(error: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&error)))
}

/// A statement after Parse: planned once, executed on every Bind/Execute.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A query, planned.
    Query(Arc<QueryPlan>),
    /// EXPLAIN of a query.
    Explain(Arc<QueryPlan>),
    /// DECLARE of a cursor over a planned query.
    Declare {
        /// Cursor name.
        name: String,
        /// The cursor's query.
        plan: Arc<QueryPlan>,
        /// WITH HOLD.
        hold: bool,
    },
    /// FETCH from an open cursor, whose row schema is known at Parse.
    Fetch {
        /// Cursor name.
        name: String,
        /// How many rows.
        count: FetchCount,
        /// The cursor's row schema.
        schema: SchemaRef,
    },
    /// CREATE TEMP TABLE AS / SELECT INTO TEMP / INSERT into a temporary table, with its
    /// source query planned (and run with the portal's parameters).
    TempWrite {
        /// The statement.
        command: Command,
        /// Its source query.
        plan: Arc<QueryPlan>,
    },
    /// Anything else.
    Command(Command),
}

/// Query handling shared by all connections.
pub struct Handler {
    served: Arc<Served>,
    parser: Arc<Parser>,
}

/// The extended protocol's statement parser.
pub struct Parser {
    served: Arc<Served>,
}

fn session<C: ClientInfo>(client: &C) -> PgWireResult<Arc<Session>> {
    client
        .session_extensions()
        .get::<Session>()
        .ok_or_else(|| user_error(Error::Internal("no session: not authenticated".into())))
}

fn objects<C: ClientInfo>(client: &C) -> Arc<SessionObjects> {
    client
        .session_extensions()
        .get_or_insert_with(SessionObjects::default)
}

/// `plan` as the current engine has it (planned again when the model was reloaded since
/// the statement was prepared).
async fn current<C: ClientInfo>(
    engine: &Engine,
    client: &C,
    session: &Session,
    plan: &Arc<QueryPlan>,
) -> Result<Arc<QueryPlan>> {
    let objects = objects(client);
    let facts = SessionFacts {
        session,
        database: engine.database(),
        temp_tables: objects.temp.provider()?,
    };
    engine.current_plan(plan, &facts).await
}

async fn prepare(
    engine: &Engine,
    session: &Session,
    objects: &SessionObjects,
    command: Command,
) -> Result<Prepared> {
    let facts = SessionFacts {
        session,
        database: engine.database(),
        temp_tables: objects.temp.provider()?,
    };
    Ok(match command {
        Command::Query(statement) => {
            Prepared::Query(Arc::new(engine.plan(*statement, &facts).await?))
        }
        Command::Explain(statement) => {
            Prepared::Explain(Arc::new(engine.plan(*statement, &facts).await?))
        }
        Command::Declare { name, query, hold } => Prepared::Declare {
            name,
            plan: Arc::new(engine.plan(*query, &facts).await?),
            hold,
        },
        Command::Fetch {
            name,
            count,
            skip: false,
        } => Prepared::Fetch {
            schema: objects.cursor_schema(&name).await?,
            name,
            count,
        },
        Command::Execute { name, params } => {
            let statement = bind_parameters(objects.prepared(&name)?, &name, &params)?;
            Prepared::Query(Arc::new(engine.plan(statement, &facts).await?))
        }
        Command::Prepare { name, query } => {
            // Planned now so that a bad query fails at PREPARE, as in PostgreSQL;
            // EXECUTE plans it again with the values in place.
            engine.plan((*query).clone(), &facts).await?;
            Prepared::Command(Command::Prepare { name, query })
        }
        Command::Insert {
            ref name,
            ref source,
            ..
        } => {
            if !objects.temp.contains(name) {
                return Err(Error::ReadOnly("INSERT".into()));
            }
            let plan = Arc::new(engine.plan((**source).clone(), &facts).await?);
            Prepared::TempWrite { command, plan }
        }
        Command::CreateTemp {
            query: Some(ref query),
            ..
        } => {
            let plan = Arc::new(engine.plan((**query).clone(), &facts).await?);
            Prepared::TempWrite { command, plan }
        }
        other => Prepared::Command(other),
    })
}

/// `EXECUTE name (values)`: the prepared statement with its `$n` replaced by the values.
fn bind_parameters(
    mut statement: datafusion::sql::sqlparser::ast::Statement,
    name: &str,
    params: &[datafusion::sql::sqlparser::ast::Expr],
) -> Result<datafusion::sql::sqlparser::ast::Statement> {
    use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};
    use std::ops::ControlFlow;
    let mut wanted = 0usize;
    let outcome = visit_expressions_mut(&mut statement, |expr| {
        if let Expr::Value(v) = expr
            && let Value::Placeholder(p) = &v.value
        {
            let Some(index) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
                return ControlFlow::Break(Error::Syntax(format!("invalid parameter {p}")));
            };
            wanted = wanted.max(index);
            match index.checked_sub(1).and_then(|i| params.get(i)) {
                Some(value) => *expr = Expr::Nested(Box::new(value.clone())),
                None => {
                    return ControlFlow::Break(Error::Syntax(format!(
                        "wrong number of parameters for prepared statement \"{name}\": expected {index} or more, got {}",
                        params.len()
                    )));
                }
            }
        }
        ControlFlow::Continue(())
    });
    if let ControlFlow::Break(e) = outcome {
        return Err(e);
    }
    if params.len() > wanted {
        return Err(Error::Syntax(format!(
            "wrong number of parameters for prepared statement \"{name}\": expected {wanted}, got {}",
            params.len()
        )));
    }
    Ok(statement)
}

fn text_fields(names: &[&str], format: &Format) -> Vec<FieldInfo> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            FieldInfo::new(
                (*n).to_string(),
                None,
                None,
                Type::TEXT,
                format.format_for(i),
            )
        })
        .collect()
}

fn text_rows(fields: Vec<FieldInfo>, rows: Vec<Vec<Option<String>>>) -> Response {
    let fields = Arc::new(fields);
    let schema = fields.clone();
    let data = stream::iter(rows).map(move |row| {
        let mut encoder = DataRowEncoder::new(schema.clone());
        for value in row {
            encoder.encode_field(&value)?;
        }
        Ok(encoder.take_row())
    });
    Response::Query(QueryResponse::new(fields, data))
}

fn result_fields(prepared: &Prepared, format: &Format) -> Vec<FieldInfo> {
    match prepared {
        Prepared::Query(plan) => encode::fields(&plan.schema(), format),
        Prepared::Explain(_) => text_fields(&["QUERY PLAN"], format),
        Prepared::Declare { .. } | Prepared::TempWrite { .. } => Vec::new(),
        Prepared::Fetch { schema, .. } => encode::fields(schema, format),
        Prepared::Command(Command::Show(Some(name))) => text_fields(&[display_name(name)], format),
        Prepared::Command(Command::Show(None)) => {
            text_fields(&["name", "setting", "description"], format)
        }
        Prepared::Command(_) => Vec::new(),
    }
}

impl Handler {
    async fn run<C>(
        &self,
        client: &mut C,
        session: &Session,
        prepared: &Prepared,
        params: Vec<datafusion::common::ScalarValue>,
        format: &Format,
        status: TransactionStatus,
    ) -> Result<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
    {
        if matches!(status, TransactionStatus::Error)
            && !matches!(
                prepared,
                Prepared::Command(Command::Commit | Command::Rollback | Command::RollbackTo(_))
            )
        {
            return Err(Error::InFailedTransaction);
        }
        match prepared {
            Prepared::Query(plan) => {
                let engine = self.served.engine();
                let plan = &current(&engine, client, session, plan).await?;
                let started = Instant::now();
                tracing::info!(
                    user = %session.user,
                    views = ?plan.report.views,
                    metrics = ?plan.report.metrics,
                    "query"
                );
                tracing::debug!(sql = %plan.rewritten_sql, "rewritten");
                notify_deprecated(client, engine.semantics(), &plan.report).await;
                let audit_started = chrono::Utc::now();
                let (mut batches, pushed) = engine.execute_reporting(plan, params).await?;
                for (source, sql) in &pushed {
                    tracing::info!(source = %source, sql = %sql, "pushed down");
                }
                // Run the query up to its first batch here, where a cancel request can
                // still interrupt it; the rest streams to the client.
                let first = batches.next().await;
                let fields = Arc::new(encode::fields(&plan.schema(), format));
                let counted = stream::iter(first).chain(batches);
                let rows = encode::rows(counted, fields.clone(), session.time_zone());
                let report = plan.report.clone();
                let pending = Arc::new(std::sync::Mutex::new(crate::audit::Pending::new(
                    Arc::clone(self.served.audit()),
                    crate::audit::Record {
                        time: audit_started,
                        user: session.user.clone(),
                        application: session.get("application_name").unwrap_or_default(),
                        views: report.views.into_iter().collect(),
                        metrics: report.metrics.into_iter().collect(),
                        dimensions: report.dimensions.into_iter().collect(),
                        filters: report.filters,
                        rows: None,
                        duration_ms: 0,
                        pushed,
                        outcome: "ok",
                        sqlstate: None,
                        message: None,
                    },
                    started,
                )));
                let at_end = Arc::clone(&pending);
                let rows = rows
                    .inspect(move |row| {
                        if let Ok(mut pending) = pending.lock() {
                            match row {
                                Ok(_) => pending.row(),
                                Err(e) => {
                                    let (sqlstate, message) = error_parts(e);
                                    pending.failed(sqlstate, message);
                                }
                            }
                        }
                    })
                    .chain(stream::once(async move {
                        if let Ok(mut pending) = at_end.lock() {
                            pending.finished();
                        }
                        None
                    })
                    .filter_map(|x: Option<PgWireResult<pgwire::messages::data::DataRow>>| async move { x }));
                Ok(Response::Query(QueryResponse::new(fields, rows)))
            }
            Prepared::Explain(plan) => {
                let engine = self.served.engine();
                let plan = &current(&engine, client, session, plan).await?;
                let lines = engine.explain(plan).await?;
                Ok(text_rows(
                    text_fields(&["QUERY PLAN"], format),
                    lines.into_iter().map(|l| vec![Some(l)]).collect(),
                ))
            }
            Prepared::Declare { name, plan, hold } => {
                if !hold && matches!(status, TransactionStatus::Idle) {
                    return Err(Error::NoTransaction("DECLARE CURSOR"));
                }
                tracing::info!(
                    user = %session.user,
                    cursor = %name,
                    views = ?plan.report.views,
                    metrics = ?plan.report.metrics,
                    "declare cursor"
                );
                tracing::debug!(sql = %plan.rewritten_sql, "rewritten");
                let engine = self.served.engine();
                let plan = &current(&engine, client, session, plan).await?;
                let stream = engine.execute(plan, params).await?;
                objects(client)
                    .declare(name, objects::Cursor::new(stream, *hold))
                    .await?;
                Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
            }
            Prepared::Fetch {
                name,
                count,
                schema,
            } => {
                let batches = objects(client).fetch(name, *count).await?;
                let fields = Arc::new(encode::fields(schema, format));
                let rows = encode::rows(
                    stream::iter(batches.into_iter().map(Ok)),
                    fields.clone(),
                    session.time_zone(),
                );
                let mut response = QueryResponse::new(fields, rows);
                response.set_command_tag("FETCH");
                Ok(Response::Query(response))
            }
            Prepared::TempWrite { command, plan } => {
                let engine = self.served.engine();
                let plan = &current(&engine, client, session, plan).await?;
                temp::write(&engine, session, &objects(client), command, plan, params).await
            }
            Prepared::Command(command) => {
                self.command(client, session, command, format, status).await
            }
        }
    }

    async fn command<C>(
        &self,
        client: &mut C,
        session: &Session,
        command: &Command,
        format: &Format,
        status: TransactionStatus,
    ) -> Result<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
    {
        Ok(match command {
            Command::Set { name, value } => {
                let reported = match value {
                    Some(v) => session.set(name, v)?.into_iter().collect(),
                    None => session.reset(Some(name))?,
                };
                report_parameters(client, session, reported).await?;
                Response::Execution(Tag::new("SET"))
            }
            Command::Reset(name) => {
                let reported = session.reset(name.as_deref())?;
                report_parameters(client, session, reported).await?;
                Response::Execution(Tag::new("RESET"))
            }
            Command::Show(Some(name)) => {
                let key = match name.as_str() {
                    "transaction isolation level" => "transaction_isolation",
                    other => other,
                };
                let value = session.get(key)?;
                text_rows(
                    text_fields(&[display_name(key)], format),
                    vec![vec![Some(value)]],
                )
            }
            Command::Show(None) => {
                let rows = session
                    .all()
                    .into_iter()
                    .map(|(k, v)| {
                        vec![
                            Some(display_name(&k).to_string()),
                            Some(v),
                            Some(String::new()),
                        ]
                    })
                    .collect();
                text_rows(
                    text_fields(&["name", "setting", "description"], format),
                    rows,
                )
            }
            Command::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Command::Commit => {
                objects(client).end_transaction().await?;
                if matches!(status, TransactionStatus::Error) {
                    Response::TransactionEnd(Tag::new("ROLLBACK"))
                } else {
                    Response::TransactionEnd(Tag::new("COMMIT"))
                }
            }
            Command::Rollback => {
                objects(client).end_transaction().await?;
                Response::TransactionEnd(Tag::new("ROLLBACK"))
            }
            Command::Savepoint(name) => {
                if matches!(status, TransactionStatus::Idle) {
                    return Err(Error::NoTransaction("SAVEPOINT"));
                }
                objects(client).savepoint(name)?;
                Response::Execution(Tag::new("SAVEPOINT"))
            }
            Command::Release(name) => {
                if matches!(status, TransactionStatus::Idle) {
                    return Err(Error::NoTransaction("RELEASE SAVEPOINT"));
                }
                objects(client).unwind_to(name, true)?;
                Response::Execution(Tag::new("RELEASE"))
            }
            Command::RollbackTo(name) => {
                if matches!(status, TransactionStatus::Idle) {
                    return Err(Error::NoTransaction("ROLLBACK TO SAVEPOINT"));
                }
                objects(client).unwind_to(name, false)?;
                if matches!(status, TransactionStatus::Error) {
                    // pgwire keeps a failed transaction failed through every response
                    // but a transaction end, so the block ends here (the client's next
                    // statement starts a new one). Nothing is lost: kpitables is
                    // read-only, and no cursor or savepoint outlives this.
                    objects(client).end_transaction().await?;
                    Response::TransactionEnd(Tag::new("ROLLBACK"))
                } else {
                    Response::Execution(Tag::new("ROLLBACK"))
                }
            }
            Command::Discard(kind) => {
                if kind == "ALL" {
                    if !matches!(status, TransactionStatus::Idle) {
                        return Err(Error::unsupported(
                            "DISCARD ALL cannot run inside a transaction block",
                            None,
                        ));
                    }
                    objects(client).discard_all().await?;
                    let reported = session.reset(None)?;
                    report_parameters(client, session, reported).await?;
                }
                Response::Execution(Tag::new(&format!("DISCARD {kind}")))
            }
            Command::Deallocate(name) => {
                // SQL DEALLOCATE also drops statements prepared with the protocol's
                // Parse message: PostgreSQL keeps both in one namespace.
                match name.as_deref() {
                    Some(n) if client.portal_store().get_statement(n).is_some() => {
                        client.portal_store().rm_statement(n);
                    }
                    other => objects(client).deallocate(other)?,
                }
                Response::Execution(Tag::new("DEALLOCATE"))
            }
            Command::Prepare { name, query } => {
                objects(client).prepare(name, (**query).clone())?;
                Response::Execution(Tag::new("PREPARE"))
            }
            Command::Close(name) => {
                objects(client).close(name.as_deref()).await?;
                Response::Execution(Tag::new("CLOSE CURSOR"))
            }
            Command::Fetch {
                name,
                count,
                skip: true,
            } => {
                let batches = objects(client).fetch(name, *count).await?;
                let rows = batches.iter().map(RecordBatch::num_rows).sum();
                Response::Execution(Tag::new("MOVE").with_rows(rows))
            }
            Command::Accepted(tag) => Response::Execution(Tag::new(tag)),
            Command::CreateTemp {
                name,
                columns,
                query: None,
                ..
            } => {
                temp::create_empty(
                    &self.served.engine(),
                    session,
                    &objects(client),
                    name,
                    columns,
                )
                .await?
            }
            Command::DropTables { names, if_exists } => {
                temp::drop_tables(&self.served.engine(), &objects(client), names, *if_exists)?
            }
            Command::CreateTemp { query: Some(_), .. } | Command::Insert { .. } => {
                return Err(Error::Internal(
                    "a temporary table write reached the command path".into(),
                ));
            }
            Command::Query(_)
            | Command::Explain(_)
            | Command::Declare { .. }
            | Command::Fetch { .. }
            | Command::Execute { .. } => {
                return Err(Error::Internal("query reached the command path".into()));
            }
        })
    }
}

/// Send ParameterStatus for settings PostgreSQL reports to clients when they change.
/// A NoticeResponse (WARNING, 01P01 deprecated_feature) for each deprecated metric the
/// query computes, naming its replacement; psql and most drivers show it.
async fn notify_deprecated<C>(
    client: &mut C,
    semantics: &crate::bind::Semantics,
    report: &crate::rewrite::RewriteReport,
) where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
{
    for metric in &semantics.model.metrics {
        let name = metric.name.get_ref();
        if metric.status != crate::model::Status::Deprecated || !report.metrics.contains(name) {
            continue;
        }
        let mut message = format!("metric \"{name}\" is deprecated");
        if let Some(replacement) = &metric.replaced_by {
            message.push_str(&format!("; use \"{}\" instead", replacement.get_ref()));
        }
        let mut info = ErrorInfo::new("WARNING".into(), "01P01".into(), message);
        if !metric.owner.is_empty() {
            info.detail = Some(format!("owner: {}", metric.owner));
        }
        let _ = client
            .feed(PgWireBackendMessage::NoticeResponse(info.into()))
            .await;
    }
}

async fn report_parameters<C>(client: &mut C, session: &Session, names: Vec<String>) -> Result<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
{
    for name in names {
        let value = session.get(&name)?;
        let _ = client
            .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                name, value,
            )))
            .await;
    }
    Ok(())
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client)?;
        let span = tracing::info_span!("statement", user = %session.user, protocol = "simple");
        async {
            let mut responses = Vec::new();
            let mut status = client.transaction_status();
            let commands = match sql::parse_commands(query) {
                Ok(s) => s,
                Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
            };
            let objects = objects(client);
            for command in commands {
                let prepared = match command {
                    Ok(command) => {
                        prepare(&self.served.engine(), &session, &objects, command).await
                    }
                    Err(e) => Err(e),
                };
                let outcome = match prepared {
                    Ok(prepared) => {
                        self.run(
                            client,
                            &session,
                            &prepared,
                            Vec::new(),
                            &Format::UnifiedText,
                            status,
                        )
                        .await
                    }
                    Err(e) if matches!(status, TransactionStatus::Error) => {
                        tracing::debug!(error = %e, "in failed transaction");
                        Err(Error::InFailedTransaction)
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(response) => {
                        status = match &response {
                            Response::TransactionStart(_) => status.to_in_transaction_state(),
                            Response::TransactionEnd(_) => status.to_idle_state(),
                            _ => status,
                        };
                        responses.push(response);
                    }
                    Err(e) => {
                        tracing::info!(sqlstate = e.sqlstate(), error = %e, "statement failed");
                        self.served.record_failure(&session, &e);
                        responses.push(Response::Error(Box::new(error_info(&e))));
                        break;
                    }
                }
            }
            Ok(responses)
        }
        .instrument(span)
        .await
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql_text: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = session(client)?;
        let mut commands = sql::parse_commands(sql_text).map_err(user_error)?;
        match commands.len() {
            0 => Ok(None),
            1 => {
                let prepared = match commands.remove(0) {
                    Ok(command) => {
                        prepare(&self.served.engine(), &session, &objects(client), command).await
                    }
                    Err(e) => Err(e),
                };
                match prepared {
                    Ok(p) => Ok(Some(p)),
                    Err(e) => {
                        tracing::info!(sqlstate = e.sqlstate(), error = %e, "parse failed");
                        self.served.record_failure(&session, &e);
                        Err(user_error(e))
                    }
                }
            }
            _ => Err(user_error(Error::Syntax(
                "cannot insert multiple commands into a prepared statement".into(),
            ))),
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(match stmt {
            Prepared::Query(plan)
            | Prepared::Explain(plan)
            | Prepared::Declare { plan, .. }
            | Prepared::TempWrite { plan, .. } => (0..plan.param_types.len())
                .map(|i| encode::parameter_type(plan, &[], i))
                .collect(),
            Prepared::Command(_) | Prepared::Fetch { .. } => Vec::new(),
        })
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(result_fields(stmt, format.unwrap_or(&Format::UnifiedText)))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session(client)?;
        let span = tracing::info_span!("statement", user = %session.user, protocol = "extended");
        async {
            let prepared = &portal.statement.statement;
            let params = match prepared {
                Prepared::Query(plan)
                | Prepared::Declare { plan, .. }
                | Prepared::TempWrite { plan, .. } => encode::parameters(portal, plan)?,
                _ => Vec::new(),
            };
            let status = client.transaction_status();
            self.run(
                client,
                &session,
                prepared,
                params,
                &portal.result_column_format,
                status,
            )
            .await
            .map_err(|e| {
                tracing::info!(sqlstate = e.sqlstate(), error = %e, "statement failed");
                self.served.record_failure(&session, &e);
                user_error(e)
            })
        }
        .instrument(span)
        .await
    }
}

/// Hands pgwire the handlers of each connection.
struct Factory {
    handler: Arc<Handler>,
    startup: Arc<auth::Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Factory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }
    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Accept connections on `listener` until the process is stopped.
pub async fn serve(listener: TcpListener, served: Arc<Served>, config: &Config) -> Result<()> {
    let manager = Arc::new(ConnectionManager::new());
    let credentials = Arc::new(auth::Credentials::new(config));
    let of_model = Arc::clone(&served);
    let time_zone: auth::DefaultZone = Arc::new(move || of_model.engine().semantics().time_zone);
    let factory = Arc::new(Factory {
        handler: Arc::new(Handler {
            served: served.clone(),
            parser: Arc::new(Parser { served }),
        }),
        startup: Arc::new(auth::Startup::new(
            config,
            credentials,
            manager.clone(),
            time_zone,
        )),
        cancel: Arc::new(DefaultCancelHandler::new(manager)),
    });
    loop {
        let (socket, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let factory = factory.clone();
        let span = tracing::info_span!("connection", %peer);
        tokio::spawn(
            async move {
                tracing::debug!("connected");
                if let Err(e) = pgwire::tokio::process_socket(socket, None, factory).await {
                    tracing::debug!(error = %e, "connection ended with an I/O error");
                }
                tracing::debug!("disconnected");
            }
            .instrument(span),
        );
    }
}
