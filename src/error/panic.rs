//! Panics: how one is logged, and how one caught under a statement becomes an [`Error`].
//!
//! A panic under a statement or in the protocol decoder is caught (`wire`, `engine`) and
//! answered with an error; the session goes on. [`install_hook`] replaces the standard
//! hook, which printed a bare text line to stderr (breaking `log_format = "json"`), by one
//! `tracing` event in the current span, so the log names the user and the statement.
//!
//! Backtraces: only when `RUST_BACKTRACE` (or `RUST_LIB_BACKTRACE`) asks for them, as the
//! standard hook did. Resolving one parses the executable's debug information, and the
//! standard library keeps what it parsed for the life of the process: under
//! `RUST_BACKTRACE=1` each panic at a new place grows the process by the debug
//! information of the code it crosses (tens of MB in a debug build; see
//! docs/reliability.md). Production servers run without it.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::collections::VecDeque;
use std::sync::Mutex;

use super::Error;

/// The last panics' messages and the source files they happened in, noted by the hook.
/// A panic in a task the engine spawned is caught on another thread and re-raised
/// without the hook (`resume_unwind`), so the origin is found by the message, not by
/// the thread. Bounded: the oldest are dropped.
static ORIGINS: Mutex<VecDeque<(String, String)>> = Mutex::new(VecDeque::new());

/// How many panics' origins are kept.
const ORIGINS_KEPT: usize = 32;

/// Note that a panic with `message` happened in `file` (the hook does; tests may too).
pub(super) fn note_origin(message: &str, file: &str) {
    let mut origins = ORIGINS.lock().unwrap_or_else(|p| p.into_inner());
    if origins.len() >= ORIGINS_KEPT {
        origins.pop_front();
    }
    origins.push_back((message.to_string(), file.to_string()));
}

/// The source file of the latest panic with `message`, taken out of the notes.
fn take_origin(message: &str) -> Option<String> {
    let mut origins = ORIGINS.lock().unwrap_or_else(|p| p.into_inner());
    let at = origins.iter().rposition(|(m, _)| m == message)?;
    origins.remove(at).map(|(_, file)| file)
}

/// Arrow's builders panic when a string, binary or list column passes 2 GiB of values
/// (their i32 offsets overflow): a size limit of the value, recognised by where the
/// panic happened (a file of an `arrow-*` crate) and what Arrow says there.
fn is_arrow_offset_overflow(origin: Option<&str>, message: &str) -> bool {
    let in_arrow = origin.is_some_and(|file| {
        file.split(['/', '\\'])
            .any(|part| part.starts_with("arrow-") || part == "arrow")
    });
    in_arrow && message.contains("offset overflow")
}

/// The text of a panic's payload (`panic!("...")` and `panic!("{x}")` both give one).
pub(super) fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Log every panic as one `tracing` error event ("panicked at FILE:LINE:COL: MESSAGE",
/// with the thread and, when asked for, the backtrace). Call once, after logging is set
/// up.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "an unknown place".to_string());
        if let Some(l) = info.location() {
            note_origin(&text, l.file());
        }
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("<unnamed>");
        let backtrace = Backtrace::capture();
        if backtrace.status() == BacktraceStatus::Captured {
            tracing::error!(thread, %backtrace, "panicked at {location}: {text}");
        } else {
            tracing::error!(thread, "panicked at {location}: {text}");
        }
    }));
}

impl Error {
    /// The error for a panic caught under a statement (see `wire`): the session goes
    /// on. Arrow's offset overflow on a string or list column past 2 GiB, raised in an
    /// Arrow crate, is a size limit (54000); anything else is a bug (XX000), an integer
    /// overflow of ours included. Nothing more is logged here: the hook has logged the
    /// panic once, with where it happened, and the statement's span logs the error it
    /// ends with.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Error {
        let message = message(payload);
        if is_arrow_offset_overflow(take_origin(&message).as_deref(), &message) {
            Error::TooLarge(message)
        } else {
            Error::Internal(format!("the statement failed unexpectedly: {message}"))
        }
    }
}
