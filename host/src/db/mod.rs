//! Everything PostgreSQL: sessions, migrations, entity keys, the lock engine,
//! the key-value table and the view of held locks.
//!
//! Nothing in here knows about WebAssembly. The runtime calls in through
//! [`Database`] (one per host, shared by all jobs) and [`JobSession`] (one
//! per job: the job's pinned session, its locks and its key-value calls).

mod activity;
mod connect;
mod database;
mod driver;
mod error;
mod job_session;
mod keys;
mod kv;
mod liveness;
mod locks;
mod migrate;
mod observe;
mod pool;
mod session;
mod sql;
mod stats;
mod table;

pub use activity::{ActivityState, LockActivity};
pub use connect::DbConfig;
pub(crate) use connect::SharedClient;
pub use database::{Database, DbSettings};
pub use error::{DbError, KvError, LockError};
pub use job_session::{JobSession, LockStats, PendingRelease, ReleaseOutcome};
pub use kv::{KeyPage, LIST_PAGE, MAX_BATCH, MAX_BATCH_BYTES, validate_bucket};
pub use locks::{Fencing, Grant, GrantId, LockMode};
pub use migrate::schema_version;
pub use observe::{HeldLock, list_advisory_locks};
pub(crate) use session::Session;
/// pinlock's exclusive lock statement (grant, then fencing token), for
/// measuring it against the bare `pg_advisory_lock` floor. Only
/// `pinlock bench` (in the binary, not this library) uses it.
#[doc(hidden)]
pub use sql::LOCK_EXCLUSIVE as LOCK_EXCLUSIVE_SQL;
pub use stats::{AcquireResult, DbStats};
