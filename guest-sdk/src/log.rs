//! Logging: lines written to the host's log, tagged with the job's id.
//!
//! Use the macros at the crate root, which format like `format!`:
//!
//! ```no_run
//! use pinlock_guest::{info, warn};
//!
//! let (account, balance) = ("alice", 42);
//! info!("{account}: balance {balance}");
//! warn!("retrying after {} ms", 50);
//! ```
//!
//! or these functions, which take the text as it is. The host decides which
//! levels it writes (`RUST_LOG`; `info` and above by default, guest lines
//! under the target `pinlock::guest`).

use crate::bindings::pinlock::host::logging::{Level, log};

/// Logs `message` at trace level (see [`trace!`](crate::trace!)).
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs `message` at debug level (see [`debug!`](crate::debug!)).
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs `message` at info level (see [`info!`](crate::info!)).
///
/// ```no_run
/// pinlock_guest::log::info("starting");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs `message` at warn level (see [`warn!`](crate::warn!)).
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs `message` at error level (see [`error!`](crate::error!)).
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Logs a line at trace level, formatted like `format!`.
///
/// ```no_run
/// pinlock_guest::trace!("read {} bytes", 12);
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log::trace(&::std::format!($($arg)+))
    };
}

/// Logs a line at debug level, formatted like `format!`.
///
/// ```no_run
/// let key = "alice";
/// pinlock_guest::debug!("read {key}");
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::debug(&::std::format!($($arg)+))
    };
}

/// Logs a line at info level, formatted like `format!`.
///
/// ```no_run
/// use pinlock_guest::info;
///
/// let (order, token) = ("A-17", 42);
/// info!("reserved {order} with fencing token {token}");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::info(&::std::format!($($arg)+))
    };
}

/// Logs a line at warn level, formatted like `format!`.
///
/// ```no_run
/// let attempt = 2;
/// pinlock_guest::warn!("deadlock, retrying (attempt {attempt})");
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::warn(&::std::format!($($arg)+))
    };
}

/// Logs a line at error level, formatted like `format!`.
///
/// ```no_run
/// let error = "lock lost";
/// pinlock_guest::error!("giving up: {error}");
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::error(&::std::format!($($arg)+))
    };
}
