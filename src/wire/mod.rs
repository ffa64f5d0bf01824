//! The PostgreSQL wire protocol: the only module that uses `pgwire`.
//!
//! Listener and per-connection task ([`serve`]), startup and authentication ([`auth`]),
//! the simple and extended query protocols (here: the pgwire handler traits), Parse into
//! a [`Prepared`] statement (`prepare`), executing it (`run`), and result encoding
//! ([`encode`]).
//! Statements are parsed and planned by the engine; this module only moves messages,
//! keeps transaction status, and turns [`Error`]s into `ErrorResponse`s.
//!
//! Invariant: every error reaches the client as an ErrorResponse with its SQLSTATE and
//! the connection stays usable; nothing here panics on client input.

pub mod auth;
mod copy;
pub mod encode;
pub mod numeric;
pub mod objects;
mod prepare;
mod run;
mod socket_loop;
mod temp;
pub mod tls;
mod watch;

pub use prepare::Prepared;
use prepare::prepare;
use run::result_fields;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{Bind, BindComplete, Execute, Parse, ParseComplete};
use pgwire::messages::response::TransactionStatus;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::{Config, TlsMode};
use crate::error::{Error, Result};
use crate::server::activity::{Connection, Connections};
use crate::server::serving::Served;
use crate::session::Session;
use crate::sql::{self};
use objects::SessionObjects;
use watch::Watch;

/// The error as PostgreSQL sends it.
pub fn error_info(error: &Error) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        error.severity().as_str().into(),
        error.sqlstate().into(),
        error.to_string(),
    );
    info.hint = error.hint();
    info
}

/// SQLSTATE and message of an error sent to the client (for the audit trail).
fn error_parts(error: &PgWireError) -> (String, String) {
    match error {
        PgWireError::UserError(info) => (info.code.clone(), info.message.clone()),
        other => {
            let error = Error::Internal(other.to_string());
            (error.sqlstate().to_string(), other.to_string())
        }
    }
}

fn user_error(error: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&error)))
}

/// Run `work`; a panic under it (planning, execution, our code) becomes an error, so the
/// statement fails and the session goes on.
async fn guarded<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(Error::from_panic(payload.as_ref())),
    }
}

/// Query handling shared by all connections.
pub struct Handler {
    served: Arc<Served>,
    parser: Arc<Parser>,
    connections: Arc<Connections>,
    hub: Arc<crate::server::notify::Hub>,
}

/// The connection's mailbox for `LISTEN` (put in its session extensions when it
/// connects).
pub struct Listening(pub Arc<crate::server::notify::Mailbox>);

fn mailbox<C: ClientInfo>(client: &C) -> Option<Arc<crate::server::notify::Mailbox>> {
    client
        .session_extensions()
        .get::<Listening>()
        .map(|l| Arc::clone(&l.0))
}

/// The registered connection of a client (put in its session extensions at startup).
pub struct ConnectionRef(pub Arc<Connection>);

fn connection<C: ClientInfo>(client: &C) -> Option<Arc<Connection>> {
    client
        .session_extensions()
        .get::<ConnectionRef>()
        .map(|c| Arc::clone(&c.0))
}

/// The text a session's statement shows in `pg_stat_activity`.
fn statement_text(prepared: &Prepared) -> String {
    match prepared {
        Prepared::Query(plan)
        | Prepared::Explain { plan, .. }
        | Prepared::Declare { plan, .. }
        | Prepared::TempWrite { plan, .. } => plan
            .statement
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        Prepared::CopyOut { plan, .. } => format!(
            "COPY ({}) TO STDOUT",
            plan.statement
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        Prepared::Fetch { name, .. } => format!("FETCH FROM {name}"),
        Prepared::Command(command) => format!("{command:?}"),
    }
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
            let conn = connection(client);
            if let Some(c) = &conn
                && let Err(ended) =
                    c.statement_started(query, &session.get("application_name").unwrap_or_default())
            {
                return Err(user_error(Error::Terminated(ended)));
            }
            let mut finished = watch::Finished::new(
                conn.clone(),
                None,
                !matches!(status, TransactionStatus::Idle),
            );
            let watch = Watch::new(conn.as_ref(), session.statement_timeout());
            // Wait for one of the user's statement slots (a cancel, the statement timeout
            // or the end of the session stops the wait).
            let mut waiting = watch.clone();
            let admitted = tokio::select! {
                r = self.connections.start_statement(&session.user, conn.as_deref()) => r,
                e = waiting.fired() => Err(e),
            };
            match admitted {
                Ok(running) => finished.hold(running),
                Err(e) => {
                    tracing::info!(sqlstate = e.sqlstate(), error = %e, "statement not admitted");
                    self.served.record_failure(&session, &e);
                    if e.severity() == crate::error::Severity::Fatal {
                        return Err(user_error(e));
                    }
                    return Ok(vec![Response::Error(Box::new(error_info(&e)))]);
                }
            }
            let commands = match sql::parse_commands(query) {
                Ok(s) => s,
                Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
            };
            let objects = objects(client);
            // Every statement of the query string runs on the engine current now.
            let engine = self.served.engine();
            for command in commands {
                let mut stop = watch.clone();
                let prepared = match command {
                    Ok(command) => {
                        tokio::select! {
                            r = guarded(prepare(&engine, &session, &objects, command)) => r,
                            e = stop.fired() => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                let outcome = match prepared {
                    // COPY writes its data as it runs, so nothing may wait before it.
                    Ok(Prepared::CopyOut { .. }) if !responses.is_empty() => {
                        Err(Error::unsupported(
                            "COPY TO STDOUT must be the first statement of a query string",
                            Some("send the COPY in a query of its own".into()),
                        ))
                    }
                    Ok(prepared) => {
                        tokio::select! {
                            r = guarded(self.run(
                                client,
                                &engine,
                                &session,
                                &prepared,
                                Vec::new(),
                                &Format::UnifiedText,
                                status,
                            )) => r,
                            e = stop.fired() => Err(e),
                        }
                    }
                    Err(e) if matches!(status, TransactionStatus::Error) => {
                        tracing::debug!(error = %e, "in failed transaction");
                        Err(Error::InFailedTransaction)
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(mut response) => {
                        status = match &response {
                            Response::TransactionStart(_) => status.to_in_transaction_state(),
                            Response::TransactionEnd(_) => status.to_idle_state(),
                            _ => status,
                        };
                        if let Response::Query(q) = &mut response {
                            let rows = std::mem::replace(
                                &mut q.data_rows,
                                Box::pin(futures::stream::empty()),
                            );
                            q.data_rows = watch::watched(rows, watch.clone(), None);
                        }
                        let failed = matches!(response, Response::Error(_));
                        responses.push(response);
                        if failed {
                            break;
                        }
                    }
                    Err(e) if e.severity() == crate::error::Severity::Fatal => {
                        tracing::info!(sqlstate = e.sqlstate(), error = %e, "session ended");
                        self.served.record_failure(&session, &e);
                        return Err(user_error(e));
                    }
                    Err(e) => {
                        tracing::info!(sqlstate = e.sqlstate(), error = %e, "statement failed");
                        self.served.record_failure(&session, &e);
                        responses.push(Response::Error(Box::new(error_info(&e))));
                        break;
                    }
                }
            }
            // The statement ends with the last result's rows (or now, without one).
            finished.set_in_transaction(!matches!(status, TransactionStatus::Idle));
            if let Some(Response::Query(q)) = responses
                .iter_mut()
                .rev()
                .find(|r| matches!(r, Response::Query(_)))
            {
                let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
                q.data_rows = watch::watched(rows, Watch::new(None, None), Some(finished));
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
                        guarded(prepare(
                            &self.served.engine(),
                            &session,
                            &objects(client),
                            command,
                        ))
                        .await
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
            | Prepared::Explain { plan, .. }
            | Prepared::Declare { plan, .. }
            | Prepared::TempWrite { plan, .. }
            | Prepared::CopyOut { plan, .. } => (0..run::parameter_count(stmt))
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

/// A Bind's counts against its statement's, with PostgreSQL's messages (08P01).
fn check_bind(message: &Bind, required: usize, columns: usize) -> Result<()> {
    let name = message.statement_name.as_deref().unwrap_or_default();
    let values = message.parameters.len();
    let formats = message.parameter_format_codes.len();
    if formats > 1 && formats != values {
        return Err(Error::ProtocolViolation(format!(
            "bind message has {formats} parameter formats but {values} parameters"
        )));
    }
    if values != required {
        return Err(Error::ProtocolViolation(format!(
            "bind message supplies {values} parameters, but prepared statement \"{name}\" requires {required}"
        )));
    }
    let results = message.result_column_format_codes.len();
    if results > 1 && columns > 0 && results != columns {
        return Err(Error::ProtocolViolation(format!(
            "bind message has {results} result formats but query has {columns} columns"
        )));
    }
    Ok(())
}

/// The largest row limit of an Execute served as asked (see `on_execute`).
pub const MAX_ROW_LIMIT: i32 = 1 << 20;

/// An Execute's row limit as pgwire can serve it: 0 (no limit) for a limit of 0 or
/// below, or above [`MAX_ROW_LIMIT`].
fn row_limit(max_rows: i32) -> i32 {
    if max_rows <= 0 || max_rows > MAX_ROW_LIMIT {
        0
    } else {
        max_rows
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// pgwire's own Parse handling, with a log line for a named statement (drivers name
    /// the statements they keep server-side: the log shows each is parsed once).
    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| pgwire::api::DEFAULT_NAME.to_owned());
        if message.name.as_deref().is_some_and(|n| !n.is_empty()) {
            tracing::info!(statement = %name, sql = %message.query, "parse of a named statement");
        }
        match StoredStatement::parse(client, &message, self.query_parser()).await? {
            Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
            None => client.portal_store().put_empty_statement(&name),
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// Bind, with the counts checked as PostgreSQL checks them: as many values as the
    /// statement has parameters, and one format for all or one per value and per result
    /// column (pgwire would index past the formats it was given).
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .statement_name
            .as_deref()
            .unwrap_or(pgwire::api::DEFAULT_NAME);
        match client.portal_store().get_statement(name) {
            Some(Entry::Value(statement)) => {
                let required = statement
                    .parameter_types
                    .len()
                    .max(run::parameter_count(&statement.statement));
                let columns = run::result_columns(&statement.statement);
                check_bind(&message, required, columns).map_err(user_error)?;
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                check_bind(&message, 0, 0).map_err(user_error)?;
                let portal = message
                    .portal_name
                    .as_deref()
                    .unwrap_or(pgwire::api::DEFAULT_NAME);
                client.portal_store().put_empty_portal(portal);
            }
            None => {
                let name = message.statement_name.unwrap_or_default();
                return Err(user_error(Error::UnknownPreparedStatement(name)));
            }
        }
        client
            .send(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    /// pgwire's own Execute handling, with the row limit made safe: PostgreSQL reads a
    /// limit of 0 or below as no limit, and pgwire reserves room for `max_rows` rows up
    /// front (a negative limit, read as a huge unsigned number, or 2^31 - 1 would abort
    /// the process on allocation). A limit above [`MAX_ROW_LIMIT`] is served as no limit:
    /// the same rows, with no `PortalSuspended` before the end.
    async fn on_execute<C>(&self, client: &mut C, mut message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        message.max_rows = row_limit(message.max_rows);
        self._on_execute(client, message).await
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
        let span = tracing::info_span!(
            "statement",
            user = %session.user,
            protocol = "extended",
            name = %portal.statement.id
        );
        async {
            let prepared = &portal.statement.statement;
            let params = match prepared {
                Prepared::Query(plan)
                | Prepared::Declare { plan, .. }
                | Prepared::TempWrite { plan, .. }
                | Prepared::CopyOut { plan, .. } => encode::parameters(portal, plan)?,
                _ => Vec::new(),
            };
            let status = client.transaction_status();
            let conn = connection(client);
            let failed = |e: Error| {
                tracing::info!(sqlstate = e.sqlstate(), error = %e, "statement failed");
                self.served.record_failure(&session, &e);
                user_error(e)
            };
            if let Some(c) = &conn
                && let Err(ended) = c.statement_started(
                    &statement_text(prepared),
                    &session.get("application_name").unwrap_or_default(),
                )
            {
                return Err(user_error(Error::Terminated(ended)));
            }
            let mut finished = watch::Finished::new(
                conn.clone(),
                None,
                !matches!(status, TransactionStatus::Idle),
            );
            let watch = Watch::new(conn.as_ref(), session.statement_timeout());
            let mut waiting = watch.clone();
            let admitted = tokio::select! {
                r = self.connections.start_statement(&session.user, conn.as_deref()) => r,
                e = waiting.fired() => Err(e),
            };
            finished.hold(admitted.map_err(failed)?);
            let engine = self.served.engine();
            let mut stop = watch.clone();
            let outcome = tokio::select! {
                r = guarded(self.run(
                    client,
                    &engine,
                    &session,
                    prepared,
                    params,
                    &portal.result_column_format,
                    status,
                )) => r,
                e = stop.fired() => Err(e),
            };
            match outcome {
                Ok(Response::Query(mut q)) => {
                    let rows =
                        std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
                    q.data_rows = watch::watched(rows, watch, Some(finished));
                    Ok(Response::Query(q))
                }
                Ok(other) => {
                    match &other {
                        Response::TransactionStart(_) => finished.set_in_transaction(true),
                        Response::TransactionEnd(_) => finished.set_in_transaction(false),
                        _ => {}
                    }
                    Ok(other)
                }
                Err(e) => Err(failed(e)),
            }
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

/// Accept connections on `listener` until `shutdown` resolves; then stop accepting, let
/// running statements finish for the configured grace period and end every session
/// (57P01).
pub async fn serve(
    listener: TcpListener,
    served: Arc<Served>,
    config: &Config,
    connections: Arc<Connections>,
    hub: Arc<crate::server::notify::Hub>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let tls = match config.tls.mode {
        TlsMode::Off => None,
        TlsMode::Allow | TlsMode::Require => match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
            _ => {
                return Err(Error::Config(
                    "[tls] needs cert and key to accept TLS".into(),
                ));
            }
        },
    };
    let manager = Arc::new(ConnectionManager::new());
    let credentials = Arc::new(auth::Credentials::new(config));
    let of_model = Arc::clone(&served);
    let time_zone: auth::DefaultZone = Arc::new(move || of_model.engine().semantics().time_zone);
    let factory = Arc::new(Factory {
        handler: Arc::new(Handler {
            served: served.clone(),
            parser: Arc::new(Parser { served }),
            connections: Arc::clone(&connections),
            hub: Arc::clone(&hub),
        }),
        startup: Arc::new(auth::Startup::new(
            config,
            credentials,
            manager.clone(),
            time_zone,
            Arc::clone(&connections),
        )),
        cancel: Arc::new(DefaultCancelHandler::new(manager)),
    });
    // Sessions waiting past an idle timeout are ended.
    if connections.limits().idle_session_timeout.is_some()
        || connections
            .limits()
            .idle_in_transaction_session_timeout
            .is_some()
    {
        let idle = Arc::clone(&connections);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            loop {
                tick.tick().await;
                idle.end_idle();
            }
        });
    }
    tokio::pin!(shutdown);
    loop {
        let (socket, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        // A second handle on the socket closes it from outside pgwire's loop.
        let (socket, second) = match socket.into_std() {
            Ok(std) => {
                let second = std.try_clone().ok();
                match tokio::net::TcpStream::from_std(std) {
                    Ok(s) => (s, second),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let registered = connections.register(peer, second);
        let factory = factory.clone();
        let tls = tls.clone();
        let span = tracing::info_span!("connection", %peer);
        let (mailbox, notes) = hub.mailbox();
        tokio::spawn(
            async move {
                tracing::debug!("connected");
                let _registered = registered;
                if let Err(e) = socket_loop::process(socket, tls, factory, mailbox, notes).await {
                    tracing::debug!(error = %e, "connection ended with an I/O error");
                }
                tracing::debug!("disconnected");
            }
            .instrument(span),
        );
    }
    drop(listener);
    connections.begin_shutdown();
    let grace = connections.limits().shutdown_grace;
    tracing::info!(
        sessions = connections.open(),
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        "shutting down: no new connections; running statements may finish"
    );
    connections.drain(grace).await;
    // Give the ended sessions a moment to send their last message and see their client
    // close (socket_loop's LINGER).
    for _ in 0..80 {
        if connections.open() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Ok(())
}
