//! The live sessions of this server: who is connected and what each runs
//! (`pg_stat_activity`, the open-sessions gauge), the limits on connections and on one
//! user's running statements, and the levers an administrator, a timeout or a shutdown
//! pulls: cancel a statement, end a session.
//!
//! A session is ended with PostgreSQL's FATAL error for the reason (57P01 administrator
//! command, 57P05 idle-session timeout, 25P03 idle-in-transaction timeout): a running
//! statement gets it as the error of its result; an idle plaintext session gets it on the
//! socket before the socket closes (an idle TLS session is closed without it, its
//! messages being encrypted by the TLS layer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::Limits;
use crate::error::{Error, Queue, Result};

pub use crate::error::Ending;

/// What a session is doing, as `pg_stat_activity.state` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected, not yet logged in.
    Starting,
    /// Waiting for a statement.
    Idle,
    /// Waiting inside a transaction block.
    IdleInTransaction,
    /// Running a statement.
    Active,
}

impl State {
    /// The `pg_stat_activity.state` text.
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Idle => "idle",
            State::IdleInTransaction => "idle in transaction",
            State::Active => "active",
        }
    }
}

/// What `pg_stat_activity` shows of one session.
#[derive(Debug, Clone)]
pub struct Activity {
    /// The session's process id (what the client's cancel key names).
    pub pid: i32,
    /// The logged-in user (empty while starting).
    pub user: String,
    /// `application_name`.
    pub application: String,
    /// The client's address.
    pub client: SocketAddr,
    /// When the connection was accepted.
    pub backend_start: DateTime<Utc>,
    /// When the current transaction block began.
    pub xact_start: Option<DateTime<Utc>>,
    /// When the current (or last) statement began.
    pub query_start: Option<DateTime<Utc>>,
    /// When the state last changed.
    pub state_change: DateTime<Utc>,
    /// The state.
    pub state: State,
    /// The current (or last) statement's text.
    pub query: String,
    /// TLS is in use.
    pub tls: bool,
    /// What the running statement waits for, if it waits.
    pub wait: Option<Wait>,
}

/// What a statement waits for before it runs (`pg_stat_activity.wait_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// One of its user's `max_statements_per_user` slots.
    StatementSlot,
    /// One of the server's `max_executing_statements` slots of the embedded engine.
    ExecutionSlot,
}

impl Wait {
    /// `pg_stat_activity.wait_event_type`: PostgreSQL's type for a wait that an
    /// extension defines.
    pub fn event_type(self) -> &'static str {
        "Extension"
    }

    /// `pg_stat_activity.wait_event`.
    pub fn event(self) -> &'static str {
        match self {
            Wait::StatementSlot => "StatementSlot",
            Wait::ExecutionSlot => "ExecutionSlot",
        }
    }
}

/// One connection.
pub struct Connection {
    id: u64,
    activity: Mutex<Activity>,
    /// Since when the session has been waiting for the client.
    idle_since: Mutex<Instant>,
    /// A second handle on the TCP socket, to close it from outside pgwire's loop.
    socket: Option<std::net::TcpStream>,
    /// Signals a running statement to stop (cancel) with the given error.
    stop: watch::Sender<Option<Stop>>,
    /// The session has been ended (its next message closes it).
    ended: Mutex<Option<Ending>>,
}

/// Why a running statement is told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `pg_cancel_backend`: 57014, the session goes on.
    Cancel,
    /// The session is ended for this reason (FATAL).
    End(Ending),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("id", &self.id).finish()
    }
}

impl Connection {
    /// What the session is doing now.
    pub fn activity(&self) -> Activity {
        self.activity
            .lock()
            .map(|a| a.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn update(&self, f: impl FnOnce(&mut Activity)) {
        let mut guard = match self.activity.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard);
    }

    /// The session logged in as `user`, with process id `pid`.
    pub fn logged_in(&self, user: &str, pid: i32, application: &str, tls: bool) {
        self.update(|a| {
            a.user = user.to_string();
            a.pid = pid;
            a.application = application.to_string();
            a.tls = tls;
            a.state = State::Idle;
            a.state_change = Utc::now();
        });
        self.touch();
    }

    /// A statement starts (`application`: the session's `application_name` now), unless
    /// the session was ended: then the reason, and the statement must not run.
    ///
    /// The check and the start are one step under the lock [`Connection::end`] takes,
    /// so an end either comes first (refused here) or sees the statement running (and
    /// stops it): an end that read "idle" could otherwise be wiped by the clearing of
    /// the stop request below, and the session would run on until its socket was closed
    /// under it (the SIGTERM race of docs/reliability.md).
    pub fn statement_started(&self, query: &str, application: &str) -> Result<(), Ending> {
        let ended = self.ended_lock();
        if let Some(why) = *ended {
            return Err(why);
        }
        let now = Utc::now();
        self.update(|a| {
            a.application = application.to_string();
            a.state = State::Active;
            a.query = query.to_string();
            a.query_start = Some(now);
            a.state_change = now;
        });
        // A new statement starts with no stop request of an earlier one.
        self.stop.send_replace(None);
        drop(ended);
        Ok(())
    }

    /// The running statement waits for `wait`, or (None) no longer waits.
    pub fn waits(&self, wait: Option<Wait>) {
        self.update(|a| a.wait = wait);
    }

    /// The statement ended; the session waits, in a transaction block or not.
    pub fn statement_ended(&self, in_transaction: bool) {
        let now = Utc::now();
        self.update(|a| {
            a.wait = None;
            a.state = if in_transaction {
                State::IdleInTransaction
            } else {
                State::Idle
            };
            match (in_transaction, a.xact_start) {
                (true, None) => a.xact_start = a.query_start.or(Some(now)),
                (false, _) => a.xact_start = None,
                _ => {}
            }
            a.state_change = now;
        });
        self.touch();
    }

    fn touch(&self) {
        if let Ok(mut since) = self.idle_since.lock() {
            *since = Instant::now();
        }
    }

    /// A receiver that changes when the running statement is told to stop.
    pub fn stops(&self) -> watch::Receiver<Option<Stop>> {
        self.stop.subscribe()
    }

    /// The lock that makes an end and a statement's start one step each (see
    /// [`Connection::statement_started`]).
    fn ended_lock(&self) -> std::sync::MutexGuard<'_, Option<Ending>> {
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// End the session: a running statement fails with the FATAL error; an idle session
    /// is told (plaintext) and its socket closed.
    pub fn end(&self, why: Ending) {
        let mut ended = self.ended_lock();
        if ended.is_some() {
            return;
        }
        *ended = Some(why);
        let active = self.activity().state == State::Active;
        self.stop.send_replace(Some(Stop::End(why)));
        drop(ended);
        if !active {
            self.close_idle(why);
        }
    }

    /// Cancel the running statement (57014); false when none runs.
    pub fn cancel(&self) -> bool {
        if self.activity().state != State::Active {
            return false;
        }
        self.stop.send_replace(Some(Stop::Cancel));
        true
    }

    /// An idle session was ended: its message loop sends the FATAL message through the
    /// protocol's own writer when it is at rest (see `wire::socket_loop`), and closes.
    /// Writing it here, on a second handle, could cut into a message the loop is still
    /// flushing (the end of the previous result), and closing the socket under unread
    /// client bytes makes the kernel answer with a reset that drops the message (found
    /// by test_faults.py's SIGTERM under load). So this only closes the socket as a
    /// fallback, after [`CLOSE_AFTER_FATAL`], for a session whose loop did not end it.
    fn close_idle(&self, _why: Ending) {
        let Some(socket) = &self.socket else {
            return;
        };
        match (tokio::runtime::Handle::try_current(), socket.try_clone()) {
            (Ok(handle), Ok(later)) => {
                handle.spawn(async move {
                    tokio::time::sleep(CLOSE_AFTER_FATAL).await;
                    let _ = later.shutdown(std::net::Shutdown::Both);
                });
            }
            _ => {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// How long an ended idle session may take to send its FATAL message and close before
/// its socket is closed under it.
const CLOSE_AFTER_FATAL: Duration = Duration::from_secs(1);

/// Every live connection, and the limits.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    next_id: AtomicU64,
    open: AtomicUsize,
    all: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Each user's statement slots (`max_statements_per_user`): a fair semaphore, so
    /// statements beyond the limit wait first come, first served.
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The server's slots for statements executing on the embedded engine.
    executing: Arc<Semaphore>,
    running: AtomicUsize,
    waiting: AtomicUsize,
    finished: AtomicU64,
    closing: AtomicBool,
}

/// Keeps a connection registered; unregisters it when dropped.
#[derive(Debug)]
pub struct Registered {
    connections: Arc<Connections>,
    /// The connection.
    pub connection: Arc<Connection>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut all) = self.connections.all.lock() {
            all.remove(&self.connection.id);
        }
    }
}

/// A running statement, holding one of its user's slots until dropped.
#[derive(Debug)]
pub struct Running {
    connections: Arc<Connections>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.connections.running.fetch_sub(1, Ordering::SeqCst);
        self.connections.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// A statement executing on the embedded engine, holding one of the server's execution
/// slots until dropped (with its last row).
#[derive(Debug)]
pub struct Executing {
    _slot: OwnedSemaphorePermit,
}

/// A statement waiting in a queue: shown in `pg_stat_activity` and counted in the queue
/// depth until dropped (admitted, cancelled or timed out).
struct Waiting<'a> {
    connections: &'a Connections,
    connection: Option<&'a Connection>,
    started: Instant,
    wait: Wait,
}

impl<'a> Waiting<'a> {
    fn new(connections: &'a Connections, connection: Option<&'a Connection>, wait: Wait) -> Self {
        connections.waiting.fetch_add(1, Ordering::SeqCst);
        crate::telemetry::global().queue_depth_changed(wait.event(), 1);
        if let Some(c) = connection {
            c.waits(Some(wait));
        }
        Waiting {
            connections,
            connection,
            started: Instant::now(),
            wait,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.connections.waiting.fetch_sub(1, Ordering::SeqCst);
        let telemetry = crate::telemetry::global();
        telemetry.queue_depth_changed(self.wait.event(), -1);
        telemetry.queue_waited(self.wait.event(), self.started.elapsed());
        if let Some(c) = self.connection {
            c.waits(None);
        }
    }
}

impl Connections {
    /// An empty registry with `limits`.
    pub fn new(limits: Limits) -> Arc<Connections> {
        let executing = Arc::new(Semaphore::new(limits.max_executing_statements.max(1)));
        Arc::new(Connections {
            limits,
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            all: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            executing,
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            finished: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Register an accepted connection (`socket`: a second handle on its TCP socket).
    pub fn register(
        self: &Arc<Self>,
        client: SocketAddr,
        socket: Option<std::net::TcpStream>,
    ) -> Registered {
        self.open.fetch_add(1, Ordering::SeqCst);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        let connection = Arc::new(Connection {
            id,
            activity: Mutex::new(Activity {
                pid: 0,
                user: String::new(),
                application: String::new(),
                client,
                backend_start: now,
                xact_start: None,
                query_start: None,
                state_change: now,
                state: State::Starting,
                query: String::new(),
                tls: false,
                wait: None,
            }),
            idle_since: Mutex::new(Instant::now()),
            socket,
            stop: watch::channel(None).0,
            ended: Mutex::new(None),
        });
        if let Ok(mut all) = self.all.lock() {
            all.insert(id, Arc::clone(&connection));
        }
        Registered {
            connections: Arc::clone(self),
            connection,
        }
    }

    /// 53300 when more connections are open than `max_connections` (checked at the
    /// startup message, before any authentication work).
    pub fn check_room(&self) -> Result<()> {
        if self.open.load(Ordering::SeqCst) > self.limits.max_connections {
            return Err(Error::TooManyConnections);
        }
        Ok(())
    }

    /// Take one of `user`'s statement slots (`max_statements_per_user`), waiting first
    /// come, first served when all are taken: shown as waiting on `connection` (its
    /// `pg_stat_activity` row) meanwhile; 53000 after `queue_timeout`. Dropping the
    /// future (a cancel, the statement timeout) leaves the queue.
    pub async fn start_statement(
        self: &Arc<Self>,
        user: &str,
        connection: Option<&Connection>,
    ) -> Result<Running> {
        let slots = {
            let mut all = match self.slots.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            Arc::clone(all.entry(user.to_string()).or_insert_with(|| {
                Arc::new(Semaphore::new(self.limits.max_statements_per_user.max(1)))
            }))
        };
        let queue = || Queue::User {
            user: user.to_string(),
            limit: self.limits.max_statements_per_user,
        };
        let slot = self
            .take(slots, connection, Wait::StatementSlot, queue)
            .await?;
        self.running.fetch_add(1, Ordering::SeqCst);
        Ok(Running {
            connections: Arc::clone(self),
            _slot: slot,
        })
    }

    /// Take one of the server's slots for executing on the embedded engine
    /// (`max_executing_statements`), waiting as [`Connections::start_statement`] does.
    pub async fn start_executing(&self, connection: Option<&Connection>) -> Result<Executing> {
        let queue = || Queue::Engine {
            limit: self.limits.max_executing_statements,
        };
        let slot = self
            .take(
                Arc::clone(&self.executing),
                connection,
                Wait::ExecutionSlot,
                queue,
            )
            .await?;
        Ok(Executing { _slot: slot })
    }

    async fn take(
        &self,
        slots: Arc<Semaphore>,
        connection: Option<&Connection>,
        wait: Wait,
        queue: impl FnOnce() -> Queue,
    ) -> Result<OwnedSemaphorePermit> {
        // A free slot is taken at once, unless others wait for one (first come, first
        // served: the semaphore hands out slots in the order they were asked for).
        if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
            return Ok(slot);
        }
        let _waiting = Waiting::new(self, connection, wait);
        let acquire = slots.acquire_owned();
        let slot = match self.limits.queue_timeout {
            Some(limit) => {
                tokio::time::timeout(limit, acquire)
                    .await
                    .map_err(|_| Error::QueueTimeout {
                        queue: queue(),
                        waited: limit,
                    })?
            }
            None => acquire.await,
        };
        slot.map_err(|_| Error::Internal("a statement queue was closed".into()))
    }

    /// The number of statements running now, of every user (waiting ones included).
    pub fn running_statements(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// The number of statements waiting in a queue now.
    pub fn waiting_statements(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The number of statements that have ended since the server started.
    pub fn finished_statements(&self) -> u64 {
        self.finished.load(Ordering::SeqCst)
    }

    /// Every connection, in the order they were accepted.
    pub fn list(&self) -> Vec<Arc<Connection>> {
        let mut all: Vec<Arc<Connection>> = self
            .all
            .lock()
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The connection from `peer`.
    pub fn by_peer(&self, peer: SocketAddr) -> Option<Arc<Connection>> {
        self.list()
            .into_iter()
            .find(|c| c.activity().client == peer)
    }

    /// The number of open connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// The logged-in session with process id `pid`.
    pub fn by_pid(&self, pid: i32) -> Option<Arc<Connection>> {
        self.list()
            .into_iter()
            .find(|c| c.activity().pid == pid && c.activity().state != State::Starting)
    }

    /// Close sessions that waited too long (idle or idle in transaction); called
    /// periodically.
    pub fn end_idle(&self) {
        for c in self.list() {
            let state = c.activity().state;
            let idle = c.idle_since.lock().map(|s| s.elapsed()).unwrap_or_default();
            let limit = match state {
                State::Idle => self
                    .limits
                    .idle_session_timeout
                    .map(|l| (l, Ending::IdleSession)),
                State::IdleInTransaction => self
                    .limits
                    .idle_in_transaction_session_timeout
                    .map(|l| (l, Ending::IdleInTransaction)),
                _ => None,
            };
            if let Some((limit, why)) = limit
                && idle >= limit
            {
                tracing::info!(
                    pid = c.activity().pid,
                    reason = why.message(),
                    "ending session"
                );
                c.end(why);
            }
        }
    }

    /// The server is shutting down: no new connection is accepted.
    pub fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Is the server shutting down?
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Wait until no statement runs, for at most `grace`; then end every session
    /// (57P01). Idle sessions are ended at once.
    pub async fn drain(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        loop {
            let mut active = 0;
            for c in self.list() {
                match c.activity().state {
                    State::Active => active += 1,
                    _ => c.end(Ending::Administrator),
                }
            }
            if active == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for c in self.list() {
            c.end(Ending::Administrator);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn statements_beyond_a_users_limit_wait_their_turn() {
        let connections = Connections::new(Limits {
            max_statements_per_user: 2,
            queue_timeout: Some(Duration::from_secs(3600)),
            ..Limits::default()
        });
        let a = connections
            .start_statement("ann", None)
            .await
            .expect("first");
        let _b = connections
            .start_statement("ann", None)
            .await
            .expect("second");
        let third = tokio::spawn({
            let connections = Arc::clone(&connections);
            async move { connections.start_statement("ann", None).await.map(|_| ()) }
        });
        while connections.waiting_statements() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!third.is_finished(), "the third waits while two run");
        let bob = connections.start_statement("bob", None).await;
        assert!(bob.is_ok(), "another user has slots of their own");
        drop(a);
        third
            .await
            .expect("joined")
            .expect("the third runs once a slot frees");
        assert_eq!(connections.waiting_statements(), 0);
    }

    #[tokio::test]
    async fn a_statement_gives_up_waiting_after_the_queue_timeout() {
        // The first statement never ends here, so the second's wait always runs out.
        let connections = Connections::new(Limits {
            max_statements_per_user: 1,
            queue_timeout: Some(Duration::from_millis(50)),
            ..Limits::default()
        });
        let _a = connections
            .start_statement("ann", None)
            .await
            .expect("first");
        let refused = connections
            .start_statement("ann", None)
            .await
            .expect_err("waits, then gives up");
        assert_eq!(refused.sqlstate(), "53000");
        assert!(refused.hint().is_some_and(|h| h.contains("queue_timeout")));
        assert_eq!(connections.waiting_statements(), 0, "left the queue");
    }

    #[tokio::test]
    async fn a_waiting_statement_shows_its_wait_and_leaves_the_queue_when_dropped() {
        let connections = Connections::new(Limits {
            max_statements_per_user: 1,
            ..Limits::default()
        });
        let registered = connections.register("127.0.0.1:5".parse().expect("address"), None);
        let _a = connections
            .start_statement("ann", None)
            .await
            .expect("first");
        let mut waiting =
            Box::pin(connections.start_statement("ann", Some(registered.connection.as_ref())));
        assert!(futures::poll!(&mut waiting).is_pending(), "no slot is free");
        assert_eq!(
            registered.connection.activity().wait,
            Some(Wait::StatementSlot)
        );
        assert_eq!(connections.waiting_statements(), 1);
        // Dropped as a cancel or the statement timeout drops it.
        drop(waiting);
        assert_eq!(registered.connection.activity().wait, None);
        assert_eq!(connections.waiting_statements(), 0);
    }

    #[test]
    fn an_ended_session_starts_no_statement_and_an_end_is_never_wiped() {
        let connections = Connections::new(Limits::default());
        let registered = connections.register("127.0.0.1:5".parse().expect("address"), None);
        let c = &registered.connection;
        let mut stops = c.stops();
        // A statement that started first is stopped by the end (it does not wipe it).
        assert_eq!(c.statement_started("SELECT 1", "app"), Ok(()));
        c.end(Ending::Administrator);
        assert_eq!(
            *stops.borrow_and_update(),
            Some(Stop::End(Ending::Administrator))
        );
        // Once ended, no statement starts, and the stop request stays.
        assert_eq!(
            c.statement_started("SELECT 2", "app"),
            Err(Ending::Administrator)
        );
        assert_eq!(*stops.borrow(), Some(Stop::End(Ending::Administrator)));
        assert_eq!(c.activity().query, "SELECT 1", "the refused one never ran");
    }

    #[tokio::test]
    async fn running_and_finished_statements_are_counted() {
        let connections = Connections::new(Limits::default());
        let a = connections.start_statement("ann", None).await.expect("ann");
        let b = connections.start_statement("bob", None).await.expect("bob");
        assert_eq!(connections.running_statements(), 2);
        assert_eq!(connections.finished_statements(), 0);
        drop(a);
        assert_eq!(connections.running_statements(), 1);
        drop(b);
        assert_eq!(connections.running_statements(), 0);
        assert_eq!(connections.finished_statements(), 2);
    }
}
