//! A running statement's stop conditions: `pg_cancel_backend` (57014), the end of its
//! session (57P01, 57P05, 25P03), and the session's `statement_timeout` (57014). A
//! statement is watched from its start to its last row: while it is planned and run
//! ([`Watch::fired`]) and while its rows stream ([`watched`]), and the end of the stream
//! marks the session idle again ([`Finished`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;
use crate::server::activity::{Connection, Running, Stop};

/// The stop conditions of one statement.
#[derive(Debug, Clone)]
pub struct Watch {
    stops: Option<watch::Receiver<Option<Stop>>>,
    deadline: Option<Instant>,
}

impl Watch {
    /// Watch `connection`'s stop requests, and a timeout of `timeout` from now.
    pub fn new(connection: Option<&Arc<Connection>>, timeout: Option<Duration>) -> Watch {
        Watch {
            stops: connection.map(|c| c.stops()),
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// Resolves with the error when a stop condition holds (never, when none can).
    pub async fn fired(&mut self) -> Error {
        let deadline = self.deadline;
        let timeout = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        let stops = self.stops.as_mut();
        let stopped = async move {
            let Some(stops) = stops else {
                return std::future::pending::<Error>().await;
            };
            loop {
                let now = *stops.borrow_and_update();
                match now {
                    Some(Stop::Cancel) => return Error::Canceled,
                    Some(Stop::End(why)) => return Error::Terminated(why),
                    None => {}
                }
                if stops.changed().await.is_err() {
                    return std::future::pending::<Error>().await;
                }
            }
        };
        tokio::select! {
            e = stopped => e,
            () = timeout => Error::StatementTimeout,
        }
    }
}

/// Marks the statement's end when dropped: the session waits again, and the statement no
/// longer counts against its user's limit.
#[derive(Debug)]
pub struct Finished {
    connection: Option<Arc<Connection>>,
    in_transaction: bool,
    _running: Option<Running>,
}

impl Finished {
    /// The end of a statement of `connection`, counted by `running`.
    pub fn new(
        connection: Option<Arc<Connection>>,
        running: Option<Running>,
        in_transaction: bool,
    ) -> Finished {
        Finished {
            connection,
            in_transaction,
            _running: running,
        }
    }

    /// The statement was admitted: it holds `running` (its user's slot) until it ends.
    pub fn hold(&mut self, running: Running) {
        self._running = Some(running);
    }

    /// The transaction status after the statement.
    pub fn set_in_transaction(&mut self, in_transaction: bool) {
        self.in_transaction = in_transaction;
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some(c) = &self.connection {
            c.statement_ended(self.in_transaction);
        }
    }
}

type Rows = Pin<Box<dyn Stream<Item = PgWireResult<DataRow>> + Send>>;

/// `rows`, ended with the error of a stop condition of `watch` when one holds while they
/// stream (dropping the rest stops the engine and the warehouse statement); `finished`
/// is dropped with the stream.
pub fn watched(rows: Rows, watch: Watch, finished: Option<Finished>) -> Rows {
    struct State {
        rows: Rows,
        fired: Option<Pin<Box<dyn std::future::Future<Output = Error> + Send>>>,
        _finished: Option<Finished>,
    }
    let fired: Pin<Box<dyn std::future::Future<Output = Error> + Send>> = Box::pin(async move {
        let mut watch = watch;
        watch.fired().await
    });
    let state = State {
        rows,
        fired: Some(fired),
        _finished: finished,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let mut fired = state.fired.take()?;
        tokio::select! {
            biased;
            e = &mut fired => Some((Err(super::user_error(e)), state)),
            next = state.rows.next() => {
                let item = next?;
                state.fired = Some(fired);
                Some((item, state))
            }
        }
    }))
}
