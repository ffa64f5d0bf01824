//! Executing a [`Prepared`] statement for a connection: queries stream their rows (and
//! are audited), session commands are answered from the session, and result
//! descriptions are built for Describe.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::ParameterStatus;

use super::prepare::{Prepared, current};
use super::{Handler, encode, error_parts, objects, temp};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::session::{Session, display_name};
use crate::sql::Command;

pub(super) fn text_fields(names: &[&str], format: &Format) -> Vec<FieldInfo> {
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

pub(super) fn text_rows(fields: Vec<FieldInfo>, rows: Vec<Vec<Option<String>>>) -> Response {
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

pub(super) fn result_fields(prepared: &Prepared, format: &Format) -> Vec<FieldInfo> {
    match prepared {
        Prepared::Query(plan) => encode::fields(&plan.schema(), format),
        Prepared::Explain { .. } => text_fields(&["QUERY PLAN"], format),
        Prepared::Declare { .. } | Prepared::TempWrite { .. } | Prepared::CopyOut { .. } => {
            Vec::new()
        }
        Prepared::Fetch { schema, .. } => encode::fields(schema, format),
        Prepared::Command(Command::Show(Some(name))) => text_fields(&[display_name(name)], format),
        Prepared::Command(Command::Show(None)) => {
            text_fields(&["name", "setting", "description"], format)
        }
        Prepared::Command(_) => Vec::new(),
    }
}

/// The number of columns [`result_fields`] describes, counted without building them
/// (Bind checks its result formats against it).
pub(super) fn result_columns(prepared: &Prepared) -> usize {
    match prepared {
        Prepared::Query(plan) => plan.column_count(),
        Prepared::Explain { .. } | Prepared::Command(Command::Show(Some(_))) => 1,
        Prepared::Command(Command::Show(None)) => 3,
        Prepared::Fetch { schema, .. } => schema.fields().len(),
        Prepared::Declare { .. }
        | Prepared::TempWrite { .. }
        | Prepared::CopyOut { .. }
        | Prepared::Command(_) => 0,
    }
}

/// The number of parameters of the statement's plan.
pub(super) fn parameter_count(prepared: &Prepared) -> usize {
    match prepared {
        Prepared::Query(plan)
        | Prepared::Explain { plan, .. }
        | Prepared::Declare { plan, .. }
        | Prepared::TempWrite { plan, .. }
        | Prepared::CopyOut { plan, .. } => plan.param_types.len(),
        Prepared::Command(_) | Prepared::Fetch { .. } => 0,
    }
}

impl Handler {
    /// Run `prepared` on `engine`, the engine the statement started with (taken once
    /// per statement: a reload while it runs does not change it).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run<C>(
        &self,
        client: &mut C,
        engine: &Arc<Engine>,
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
            Prepared::Query(plan) => Ok(Response::Query(
                self.query(client, engine, session, plan, params, format)
                    .await?,
            )),
            Prepared::CopyOut { plan, options } => {
                let format = if options.format == crate::sql::CopyFormat::Binary {
                    Format::UnifiedBinary
                } else {
                    Format::UnifiedText
                };
                let rows = self
                    .query(client, engine, session, plan, params, &format)
                    .await?;
                Ok(match super::copy::send(client, options, rows).await? {
                    super::copy::Copied::Rows(n) => {
                        Response::Execution(Tag::new("COPY").with_rows(n))
                    }
                    super::copy::Copied::Failed(info) => Response::Error(info),
                })
            }
            Prepared::Explain { plan, cache } => {
                let plan = &current(engine, client, session, plan).await?;
                let lines = engine.explain(plan, *cache).await?;
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
                let plan = &current(engine, client, session, plan).await?;
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
                let plan = &current(engine, client, session, plan).await?;
                temp::write(engine, session, &objects(client), command, plan, params).await
            }
            Prepared::Command(command) => {
                self.command(client, engine, session, command, format, status)
                    .await
            }
        }
    }

    /// Plan (again if the model was reloaded) and run a query; its rows stream in
    /// `format`, each counted by the audit record written when the stream ends.
    async fn query<C>(
        &self,
        client: &mut C,
        engine: &Arc<Engine>,
        session: &Session,
        plan: &Arc<crate::engine::QueryPlan>,
        params: Vec<datafusion::common::ScalarValue>,
        format: &Format,
    ) -> Result<QueryResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
    {
        let plan = &current(engine, client, session, plan).await?;
        let started = Instant::now();
        tracing::info!(
            user = %session.user,
            views = ?plan.report.views,
            metrics = ?plan.report.metrics,
            "query"
        );
        tracing::debug!(sql = %plan.rewritten_sql, "rewritten");
        notify_deprecated(client, engine.semantics(), &plan.report).await;
        notify_quality(client, engine, self.served.alerts(), &plan.report).await;
        let audit_started = chrono::Utc::now();
        let execution = engine.execute_reporting(plan, params).await?;
        // Embedded execution waits for one of the server's execution slots (queued,
        // shown in pg_stat_activity); the slot is held until the last row.
        let executing = if execution.scans_files {
            let connection = super::connection(client);
            Some(
                self.connections
                    .start_executing(connection.as_deref())
                    .await?,
            )
        } else {
            None
        };
        let (mut batches, pushed) = (execution.stream, execution.pushed);
        for (source, sql) in &pushed {
            tracing::info!(source = %source, sql = %sql, "pushed down");
        }
        // Run the query up to its first batch here, where a cancel request can
        // still interrupt it; the rest streams to the client.
        let first = batches.next().await;
        let fields = Arc::new(encode::fields(&plan.schema(), format));
        let counted = stream::iter(first).chain(batches);
        let rows = encode::rows(counted, fields.clone(), session.time_zone());
        // A panic while a row is encoded ends the result with an error.
        let rows = std::panic::AssertUnwindSafe(rows)
            .catch_unwind()
            .map(|row| match row {
                Ok(row) => row,
                Err(payload) => Err(super::user_error(Error::from_panic(payload.as_ref()))),
            });
        let report = plan.report.clone();
        let pending = Arc::new(std::sync::Mutex::new(crate::server::audit::Pending::new(
            Arc::clone(self.served.audit()),
            crate::server::audit::Record {
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
            .chain(
                stream::once(async move {
                    if let Ok(mut pending) = at_end.lock() {
                        pending.finished();
                    }
                    drop(executing);
                    None
                })
                .filter_map(
                    |x: Option<PgWireResult<pgwire::messages::data::DataRow>>| async move { x },
                ),
            );
        Ok(QueryResponse::new(fields, rows))
    }

    async fn command<C>(
        &self,
        client: &mut C,
        engine: &Arc<Engine>,
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
            Command::Listen(channel) => {
                if let Some(mailbox) = super::mailbox(client) {
                    mailbox.listen(&session.user, session.pid, channel);
                }
                Response::Execution(Tag::new("LISTEN"))
            }
            Command::Unlisten(channel) => {
                if let Some(mailbox) = super::mailbox(client) {
                    mailbox.unlisten(channel.as_deref());
                }
                Response::Execution(Tag::new("UNLISTEN"))
            }
            Command::Notify { channel, payload } => {
                if channel == crate::server::notify::ALERTS_CHANNEL {
                    return Err(Error::Denied {
                        kind: crate::error::DenialKind::Permission,
                        message: format!("permission denied to notify channel \"{channel}\""),
                        hint: "kp_alerts carries kpitables' alert transitions only; notify another channel".into(),
                    });
                }
                if payload.len() > crate::server::notify::MAX_PAYLOAD {
                    return Err(Error::InvalidParameter("payload string too long".into()));
                }
                self.hub.publish(channel, payload, session.pid, |_| true);
                Response::Execution(Tag::new("NOTIFY"))
            }
            Command::CreateTemp {
                name,
                columns,
                query: None,
                ..
            } => temp::create_empty(engine, session, &objects(client), name, columns).await?,
            Command::DropTables { names, if_exists } => {
                temp::drop_tables(engine, &objects(client), names, *if_exists)?
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
            | Command::Execute { .. }
            | Command::CopyOut(_) => {
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
        let mut info = ErrorInfo::new(
            "WARNING".into(),
            crate::error::warnings::DEPRECATED.into(),
            message,
        );
        if !metric.owner.is_empty() {
            info.detail = Some(format!("owner: {}", metric.owner));
        }
        let _ = client
            .feed(PgWireBackendMessage::NoticeResponse(info.into()))
            .await;
    }
}

/// A NoticeResponse (WARNING) for each failing data quality check of a table the
/// query's metrics read, naming the table and the check.
async fn notify_quality<C>(
    client: &mut C,
    engine: &crate::engine::Engine,
    alerts: Option<&Arc<crate::server::alerts::Alerts>>,
    report: &crate::rewrite::RewriteReport,
) where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
{
    let Some(alerts) = alerts else {
        return;
    };
    if report.metrics.is_empty() || !alerts.any_check_failing() {
        return;
    }
    let model = &engine.semantics().model;
    let tables: Vec<String> = report
        .metrics
        .iter()
        .flat_map(|m| crate::model::lineage::of(model, m).tables)
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .collect();
    for check in alerts.failing_checks(&tables) {
        let mut info = ErrorInfo::new(
            "WARNING".into(),
            crate::error::warnings::DATA_QUALITY.into(),
            check.warning(),
        );
        info.detail = Some(format!(
            "checked at {}",
            check
                .checked_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
        info.hint = Some("see kp.quality; the numbers may be incomplete or out of date".into());
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
