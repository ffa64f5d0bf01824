//! The message loop of one connection: pgwire's `process_socket` loop (TLS negotiation,
//! startup timeout, one message at a time through pgwire's `process_message`), plus the
//! delivery of `LISTEN` notifications. A notification waits until the session is at
//! rest (ReadyForQuery sent after a Query or Sync, no transaction open), then goes out as
//! a NotificationResponse, as PostgreSQL delivers them between transactions; psql shows
//! it after its next command, psycopg's `notifies()` and node-postgres' `notification`
//! event as it arrives.

use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::{FutureExt, SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::messages::response::{NotificationResponse, TransactionStatus};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::server::notify::{Mailbox, Note};

/// How long an ended session waits for its client to close after the FATAL message.
const LINGER: Duration = Duration::from_secs(1);

/// How long a client may take to finish startup and authentication (pgwire's value).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Serve one connection until it ends.
pub(super) async fn process<H>(
    tcp: TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: H,
    mailbox: Arc<Mailbox>,
    mut notes: UnboundedReceiver<Note>,
) -> std::io::Result<()>
where
    H: PgWireServerHandlers,
{
    let startup_timeout = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_timeout);
    let negotiated = tokio::select! {
        _ = &mut startup_timeout => return Ok(()),
        socket = negotiate_tls(tcp, tls) => socket?,
    };
    let Some(mut socket) = negotiated else {
        return Ok(());
    };
    socket
        .session_extensions()
        .insert(super::Listening(mailbox));
    let startup_handler = handlers.startup_handler();
    let simple_query_handler = handlers.simple_query_handler();
    let extended_query_handler = handlers.extended_query_handler();
    let copy_handler = handlers.copy_handler();
    let cancel_handler = handlers.cancel_handler();
    let error_handler = handlers.error_handler();
    // Whether the last message ended a statement cycle (Query, Sync, or startup).
    let mut at_rest = false;
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let quiet = at_rest && matches!(socket.state(), PgWireConnectionState::ReadyForQuery);
        let deliverable = quiet && matches!(socket.transaction_status(), TransactionStatus::Idle);
        // A session ended while it waits (shutdown, an idle timeout, an administrator):
        // its FATAL message goes out through the protocol's writer, after whatever the
        // session sent last, and the session closes.
        let mut stops = if quiet {
            super::connection(&socket).map(|c| c.stops())
        } else {
            None
        };
        let msg = tokio::select! {
            biased;
            _ = &mut startup_timeout, if starting => None,
            // pgwire's decoder can panic on a malformed message (a length that does
            // not fit its body): that closes the session with 08P01, not the task.
            msg = AssertUnwindSafe(socket.next()).catch_unwind() => msg.unwrap_or_else(|_| {
                tracing::warn!("a malformed message made the decoder panic: closing the session with 08P01");
                Some(Err(super::user_error(crate::error::Error::FatalProtocolViolation(
                    "invalid message format".to_owned(),
                ))))
            }),
            why = ended(stops.as_mut()), if stops.is_some() => {
                let error = crate::error::Error::Terminated(why);
                let fatal = || PgWireBackendMessage::ErrorResponse(super::error_info(&error).into());
                let _ = socket.send(fatal()).await;
                // libpq reads a message that comes while no statement of its runs as a
                // notice, and keeps the connection: its next statement then waits for
                // an answer. So that statement is answered with the same FATAL message.
                linger(&mut socket, Some(fatal())).await;
                break;
            }
            Some(note) = notes.recv(), if deliverable => {
                let message = NotificationResponse::new(note.pid, note.channel, note.payload);
                socket
                    .send(PgWireBackendMessage::NotificationResponse(message))
                    .await?;
                continue;
            }
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            // A message that does not decode: FATAL 08P01 and close, as PostgreSQL does.
            Some(Err(e)) => {
                let _ = process_error(&mut socket, e, false).await;
                break;
            }
            None => break,
        };
        // A Terminate ('X') means the client is disconnecting: close the connection.
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let is_extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(is_extended_query) => is_extended_query,
            _ => msg.is_extended_query(),
        };
        at_rest = !msg.is_extended_query() || matches!(msg, PgWireFrontendMessage::Sync(_));
        // `process_message` closes a CancelRequest's dedicated connection.
        let is_cancel_request = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        if let Err(mut e) = process_message(
            msg,
            &mut socket,
            startup_handler.clone(),
            simple_query_handler.clone(),
            extended_query_handler.clone(),
            copy_handler.clone(),
            cancel_handler.clone(),
        )
        .await
        {
            error_handler.on_error(&socket, &mut e);
            // A FATAL error ends the session, as in PostgreSQL.
            let is_fatal = e.is_fatal();
            process_error(&mut socket, e, is_extended_query).await?;
            if is_fatal {
                linger(&mut socket, None).await;
                break;
            }
        }
        if is_cancel_request {
            break;
        }
    }
    Ok(())
}

/// Resolves with the reason once the session is ended (never, without a connection).
async fn ended(
    stops: Option<&mut tokio::sync::watch::Receiver<Option<crate::server::activity::Stop>>>,
) -> crate::error::Ending {
    use crate::server::activity::Stop;
    let Some(stops) = stops else {
        return std::future::pending().await;
    };
    loop {
        if let Some(Stop::End(why)) = *stops.borrow_and_update() {
            return why;
        }
        if stops.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// After a FATAL message: read (and drop) what the client still sends until it closes,
/// for at most [`LINGER`], answering the first message with `answer` if there is one.
/// Closing under its unread bytes (the rest of an extended-protocol cycle, a query sent
/// before it saw the message) would make the kernel reset the connection, and the reset
/// makes the client's kernel drop the FATAL message before the client reads it ("server
/// closed the connection unexpectedly").
async fn linger<S>(socket: &mut S, mut answer: Option<PgWireBackendMessage>)
where
    S: futures::Stream + futures::Sink<PgWireBackendMessage> + Unpin,
{
    let _ = tokio::time::timeout(LINGER, async {
        while AssertUnwindSafe(socket.next())
            .catch_unwind()
            .await
            .ok()
            .flatten()
            .is_some()
        {
            if let Some(message) = answer.take() {
                let _ = socket.send(message).await;
            }
        }
    })
    .await;
}
