//! Error types of the database layer: one for setup (connect, migrate), and
//! the typed errors a job can branch on (locks, key-value).

use std::time::Duration;

/// SQLSTATE codes pinlock reacts to.
pub(crate) mod sqlstate {
    /// `query_canceled`: our cancel request hit the statement.
    pub const QUERY_CANCELED: &str = "57014";
    /// `deadlock_detected`.
    pub const DEADLOCK_DETECTED: &str = "40P01";
    /// `out_of_memory` / "out of shared memory": the lock table is full.
    pub const OUT_OF_SHARED_MEMORY: &str = "53200";
    /// `lock_not_available`: `lock_timeout` expired.
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
}

/// A failure to set up or use the database outside of a job's lock calls.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No session could be opened.
    #[error("cannot connect to PostgreSQL at {target}: {}", describe(cause))]
    Connect {
        /// Where we tried to connect (never includes a password).
        target: String,
        /// The driver's error (in the message, with its causes).
        cause: tokio_postgres::Error,
    },
    /// Opening a session did not finish in time.
    #[error("connecting to PostgreSQL at {target} timed out after {after:?}")]
    ConnectTimeout {
        /// Where we tried to connect.
        target: String,
        /// How long we waited.
        after: Duration,
    },
    /// A statement failed.
    #[error("{context}: {}", describe(cause))]
    Query {
        /// What pinlock was doing.
        context: &'static str,
        /// The driver's error (in the message, with the SQLSTATE when the
        /// server raised it).
        cause: tokio_postgres::Error,
    },
    /// The configuration is not usable.
    #[error("invalid database configuration: {0}")]
    Config(String),
}

impl DbError {
    pub(crate) fn query(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DbError {
        move |cause| DbError::Query { context, cause }
    }
}

/// Why a lock operation failed; mirrors the WIT `lock-error` variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Not granted within the timeout; not held.
    #[error("timed out waiting for the lock")]
    Timeout,
    /// PostgreSQL aborted the wait to break a deadlock; not held.
    #[error("deadlock detected; the wait was aborted")]
    Deadlock,
    /// The session under the job's locks is gone, and the locks with it.
    #[error("the session holding the lock was lost")]
    Lost,
    /// The guest asked for something invalid (the guest's fault).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A host limit would be exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The database cannot serve the request (the host's or operator's side).
    #[error("lock service unavailable: {0}")]
    Unavailable(String),
}

/// Why a key-value call failed; mirrors the WIT `key-value.error` variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The bucket name is not acceptable (the guest's fault).
    #[error("no such store: {0}")]
    NoSuchStore(String),
    /// The key or value is not acceptable (the guest's fault).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The session under the job's locks was lost and the guest has not
    /// released every lost guard yet; nothing was sent (the database's side,
    /// the guest must start over).
    #[error("the session holding the job's locks was lost")]
    Lost,
    /// The database cannot serve the call (the host's or operator's side).
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// The statement failed (the host's side).
    #[error("key-value store failed: {0}")]
    Other(String),
}

/// Describes a driver error in one line: the server's message and SQLSTATE,
/// or the error with its causes ("error connecting to server: Connection
/// refused (os error 111)").
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The SQLSTATE of a server-raised error.
pub(crate) fn code_of(err: &tokio_postgres::Error) -> Option<&str> {
    err.code().map(|c| c.code())
}
