//! A host's handle on PostgreSQL: the session pool, the entity key cache and
//! the limits every job's locks obey. One per host, shared by all jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::keys::KeyCache;
use super::pool::SessionPool;
use super::stats::{Counters, DbStats};
use super::{DbConfig, DbError, JobSession, migrate};

/// Job ids are unique within a process; `application_name` tells hosts apart.
static NEXT_JOB_ID: AtomicU64 = AtomicU64::new(1);

/// Limits and defaults of the lock engine.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Most PostgreSQL sessions this host keeps open; jobs beyond it wait.
    pub max_sessions: usize,
    /// Lock wait limit when a guest gives none.
    pub default_lock_timeout: Duration,
    /// Most locks one job may hold at once.
    pub max_locks_per_job: usize,
}

impl Default for DbSettings {
    fn default() -> Self {
        Self { max_sessions: 16, default_lock_timeout: Duration::from_secs(30), max_locks_per_job: 64 }
    }
}

/// The database side of a host.
pub struct Database {
    pub(crate) pool: SessionPool,
    pub(crate) keys: KeyCache,
    pub(crate) settings: DbSettings,
    pub(crate) counters: Counters,
}

impl Database {
    /// A handle that opens sessions on demand. Does no I/O: a database that is
    /// down shows up as `unavailable` on the first lock call.
    pub fn new(config: DbConfig, settings: DbSettings) -> Arc<Self> {
        Arc::new(Self {
            pool: SessionPool::new(config, settings.max_sessions),
            keys: KeyCache::default(),
            settings,
            counters: Counters::default(),
        })
    }

    /// Creates or upgrades pinlock's schema (safe with many hosts at once).
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.pool.config().with_client(async |client| migrate::migrate(client).await).await?
    }

    /// A new job's handle, with a fresh job id; it checks out a session on
    /// its first call.
    pub fn job_session(self: &Arc<Self>) -> Arc<JobSession> {
        Arc::new(JobSession::new(self.clone(), NEXT_JOB_ID.fetch_add(1, Ordering::Relaxed)))
    }

    /// Where this host connects (no password).
    pub fn target(&self) -> String {
        self.pool.config().display_target()
    }

    /// The configured session bound.
    pub fn max_sessions(&self) -> usize {
        self.pool.max_sessions()
    }

    /// Sessions opened so far (a measure of churn: a healthy host reuses them).
    pub fn sessions_opened(&self) -> u64 {
        self.pool.sessions_opened()
    }

    /// Jobs whose handle was dropped with a session still checked out (the
    /// future running them was dropped); each one's clean-up ran on a task
    /// of its own.
    pub fn jobs_abandoned(&self) -> u64 {
        self.counters.abandoned.load(Ordering::Relaxed)
    }

    /// Lock waits that timed out but whose grant won the race with the
    /// cancel: each was unlocked before `Timeout` was reported.
    pub fn late_grants_undone(&self) -> u64 {
        self.counters.late_grants.load(Ordering::Relaxed)
    }

    pub(crate) fn note_late_grant(&self) {
        self.counters.late_grants.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot of this host's lock engine (for metrics).
    pub fn stats(&self) -> DbStats {
        let (sessions_busy, sessions_idle) = self.pool.usage();
        DbStats {
            acquires: self.counters.acquires(),
            locks_held: self.counters.locks_held.load(Ordering::Relaxed),
            sessions_busy,
            sessions_idle,
            sessions_opened: self.pool.sessions_opened(),
            jobs_abandoned: self.jobs_abandoned(),
            late_grants_undone: self.late_grants_undone(),
        }
    }

    pub(crate) fn note_abandoned(&self) {
        self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
    }
}
