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
pub mod encode;
pub mod numeric;
pub mod objects;
mod prepare;
mod run;
mod temp;

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
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{Parse, ParseComplete};
use pgwire::messages::response::TransactionStatus;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::serving::Served;
use crate::session::Session;
use crate::sql::{self};
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
            let commands = match sql::parse_commands(query) {
                Ok(s) => s,
                Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
            };
            let objects = objects(client);
            for command in commands {
                let prepared = match command {
                    Ok(command) => {
                        guarded(prepare(&self.served.engine(), &session, &objects, command)).await
                    }
                    Err(e) => Err(e),
                };
                let outcome = match prepared {
                    Ok(prepared) => {
                        guarded(self.run(
                            client,
                            &session,
                            &prepared,
                            Vec::new(),
                            &Format::UnifiedText,
                            status,
                        ))
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
                | Prepared::TempWrite { plan, .. } => encode::parameters(portal, plan)?,
                _ => Vec::new(),
            };
            let status = client.transaction_status();
            guarded(self.run(
                client,
                &session,
                prepared,
                params,
                &portal.result_column_format,
                status,
            ))
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
