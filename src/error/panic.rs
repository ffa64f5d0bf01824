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

use super::Error;

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
    /// on. Arrow panics on a string or list column past 2 GiB ("offset overflow"): that is
    /// a size limit (54000); anything else is a bug (XX000). Nothing more is logged here:
    /// the hook has logged the panic once, with where it happened, and the statement's
    /// span logs the error it ends with.
    pub fn from_panic(payload: &(dyn std::any::Any + Send)) -> Error {
        let message = message(payload);
        if message.contains("overflow") {
            Error::TooLarge(message)
        } else {
            Error::Internal(format!("the statement failed unexpectedly: {message}"))
        }
    }
}
