//! A host's handle on PostgreSQL: the session pool, the entity key cache and
//! the limits every job's locks obey. One per host, shared by all jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::activity::{LockActivity, Registry};
use super::keys::KeyCache;
use super::pool::{SessionPool, SharedSession};
use super::stats::{Counters, DbStats};
use super::table::{LockTable, SessionId};
use super::{DbConfig, DbError, JobSession, migrate};

/// How a waiter in the lock table is woken: with the shared session whose
/// unlock let it in, when there is one (see [`HostTable::unlock_sent`]).
pub(crate) type Wake = oneshot::Sender<Option<Arc<SharedSession>>>;

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
    /// How many of `max_sessions` carry many jobs' locks at once (0: every
    /// job gets a session of its own, as before multiplexing).
    pub shared_sessions: usize,
    /// Most locks one shared session carries (each held lock slows every
    /// statement of its session by ~50 ns).
    pub max_locks_per_session: usize,
    /// Jobs placed on one shared session before the next one is used (at
    /// least 1). Jobs packed on a session have their statements pipelined:
    /// the server runs them several times faster than statements that
    /// arrive one by one, but one slow statement delays the others behind
    /// it. Once every open shared session has this many, jobs spread evenly.
    pub jobs_per_shared_session: usize,
}

impl Default for DbSettings {
    fn default() -> Self {
        Self {
            max_sessions: 16,
            default_lock_timeout: Duration::from_secs(30),
            max_locks_per_job: 64,
            shared_sessions: 12,
            max_locks_per_session: 1024,
            jobs_per_shared_session: 32,
        }
    }
}

/// The database side of a host.
pub struct Database {
    pub(crate) pool: SessionPool,
    /// The host's lock table (see [`super::table`]).
    pub(crate) table: HostTable,
    pub(crate) keys: KeyCache,
    pub(crate) settings: DbSettings,
    pub(crate) counters: Counters,
    /// What each live job holds and waits for (see [`super::activity`]).
    pub(crate) activity: Registry,
}

impl Database {
    /// A handle that opens sessions on demand. Does no I/O: a database that is
    /// down shows up as `unavailable` on the first lock call.
    pub fn new(config: DbConfig, settings: DbSettings) -> Arc<Self> {
        let table = HostTable::default();
        let on_end = {
            let table = table.clone();
            Arc::new(move |session: SessionId| table.wake(|t| t.drop_session(session)))
        };
        Arc::new(Self {
            pool: SessionPool::new(config, &settings, Some(on_end)),
            table,
            keys: KeyCache::default(),
            settings,
            counters: Counters::default(),
            activity: Registry::default(),
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

    /// Every entity this host's jobs hold or wait for now, from memory (no
    /// I/O, never blocked by a job's lock call).
    pub fn lock_activity(&self) -> Vec<LockActivity> {
        self.activity.snapshot()
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

    /// Exclusive tries on a shared session whose job went away before the
    /// answer: each was followed by an unlock of its key on that session.
    pub fn tries_abandoned(&self) -> u64 {
        self.counters.abandoned_tries.load(Ordering::Relaxed)
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
            sessions_shared: self.pool.shared_open(),
            sessions_opened: self.pool.sessions_opened(),
            jobs_abandoned: self.jobs_abandoned(),
            late_grants_undone: self.late_grants_undone(),
        }
    }

    pub(crate) fn note_abandoned(&self) {
        self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
    }
}

/// The host's lock table, shared by the jobs and the sessions' end hooks.
#[derive(Clone, Default)]
pub(crate) struct HostTable(Arc<Mutex<Tables>>);

#[derive(Default)]
struct Tables {
    table: LockTable<Wake>,
    /// Keys whose unlock is on a shared session's connection and not yet
    /// answered: the session, and how many such unlocks there are.
    unlocking: HashMap<i64, (Arc<SharedSession>, usize)>,
}

impl HostTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A poisoned lock still holds consistent tables: every operation is a
        // few map updates that cannot panic halfway.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `op` on the table.
    pub(crate) fn with<T>(&self, op: impl FnOnce(&mut LockTable<Wake>) -> T) -> T {
        op(&mut self.lock().table)
    }

    /// [`LockTable::try_enter`]; when admitted, also the shared session an
    /// unlock of `key` is still on its way to, if there is one. A job that
    /// holds nothing yet moves its home there (as a waiter let in by that
    /// unlock does), so that its try runs after the unlock rather than on
    /// another session, where it could find the key still held and fall
    /// back to a dedicated session's wait.
    pub(crate) fn try_enter(&self, key: i64, job: u64, mode: super::LockMode) -> Option<Option<Arc<SharedSession>>> {
        let mut tables = self.lock();
        tables.table.try_enter(key, job, mode).then(|| tables.unlocking.get(&key).map(|(via, _)| via.clone()))
    }

    /// The unlock of a released grant is on `shared`'s connection: the
    /// holder leaves, the waiters it lets in are woken to follow it there,
    /// and so is any job admitted for the key until [`Self::unlock_answered`].
    pub(crate) fn unlock_sent(&self, key: i64, job: u64, mode: super::LockMode, shared: &Arc<SharedSession>) {
        let woken = {
            let mut tables = self.lock();
            let (via, in_flight) = tables.unlocking.entry(key).or_insert_with(|| (shared.clone(), 0));
            *via = shared.clone();
            *in_flight += 1;
            tables.table.leave_released(key, job, mode)
        };
        for waiter in woken {
            let _ = waiter.send(Some(shared.clone()));
        }
    }

    /// The server answered an unlock of `key` announced by [`Self::unlock_sent`].
    pub(crate) fn unlock_answered(&self, key: i64) {
        let mut tables = self.lock();
        if let Some((_, in_flight)) = tables.unlocking.get_mut(&key) {
            *in_flight -= 1;
            if *in_flight == 0 {
                tables.unlocking.remove(&key);
            }
        }
    }

    /// Runs `op` and wakes whoever it lets in.
    pub(crate) fn wake(&self, op: impl FnOnce(&mut LockTable<Wake>) -> Vec<Wake>) {
        for waiter in self.with(op) {
            let _ = waiter.send(None);
        }
    }

    /// Takes `job`'s entries for `pairs` out and wakes whoever that lets in.
    pub(crate) fn leave_all(&self, job: u64, pairs: &[(i64, super::LockMode)]) {
        if !pairs.is_empty() {
            self.wake(|t| pairs.iter().flat_map(|&(key, mode)| t.leave(key, job, mode)).collect());
        }
    }
}
