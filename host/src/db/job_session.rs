//! One job's side of the database: the session pinned to the job from its
//! first lock or key-value call to its end, the grants it holds, and the
//! clean-up that runs when the job ends, however it ends.
//!
//! Rules kept here:
//! - the session serves this job only, so it never waits for a lock on behalf
//!   of anyone else while holding this job's locks;
//! - at the end every lock is released (`pg_advisory_unlock_all`) before the
//!   job's result is reported; a session whose statement was interrupted
//!   mid-flight (the job was killed while waiting) is cancelled, unlocked and
//!   closed, never reused;
//! - a lost session turns every grant on it to lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::error::{code_of, describe, sqlstate};
use super::locks::{GrantId, Held, LockMode};
use super::pool::PinnedSession;
use super::{Database, LockError, Session};

/// How long the end-of-job unlock may take before the session is closed instead.
const RELEASE_ALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Lock wait and hold times of one job.
#[derive(Debug, Default, Clone)]
pub struct LockStats {
    /// From the acquire call to the grant, for each granted acquire.
    pub waits: Vec<Duration>,
    /// From each grant to its release (or the job's end).
    pub holds: Vec<Duration>,
}

/// What the end-of-job clean-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The job never used the database.
    NoSession,
    /// Nothing was held; the session went back to the pool.
    NothingHeld,
    /// `count` locks were released and the session went back to the pool.
    Released {
        /// Locks the job still held at its end.
        count: usize,
    },
    /// The session was closed (interrupted, lost, or the unlock failed);
    /// the server drops its locks with it.
    Closed {
        /// Why the session was not reused.
        reason: String,
    },
}

/// The database handle of one job.
pub struct JobSession {
    pub(crate) db: Arc<Database>,
    pub(crate) job_id: u64,
    pub(crate) state: Mutex<JobState>,
}

/// Everything behind the job's lock; the guest calls one at a time, so this
/// is never contended except by the end-of-job clean-up.
#[derive(Default)]
pub(crate) struct JobState {
    pub(crate) session: Option<PinnedSession>,
    pub(crate) held: HashMap<GrantId, Held>,
    /// How many grants of this job stand on each (key, mode). The server is
    /// asked once per (key, mode); further grants of the same pair are counted
    /// here. That keeps the server's count at 0 or 1, so a cancelled wait can
    /// always be checked against `pg_locks`.
    pub(crate) counts: HashMap<(i64, LockMode), u32>,
    /// Grants whose session was lost: their release reports `lost`.
    pub(crate) lost: HashSet<GrantId>,
    pub(crate) next_grant: u64,
    pub(crate) stats: LockStats,
}

impl JobSession {
    pub(crate) fn new(db: Arc<Database>, job_id: u64) -> Self {
        Self { db, job_id, state: Mutex::new(JobState::default()) }
    }

    /// The job this handle belongs to.
    pub fn job_id(&self) -> u64 {
        self.job_id
    }

    /// The backend pid of the job's session, if it has one (for tests and logs).
    pub async fn backend_pid(&self) -> Option<i32> {
        self.state.lock().await.session.as_ref().map(|s| s.backend_pid())
    }

    /// Takes the wait and hold times recorded so far (holds of locks still
    /// held are not in them).
    pub async fn take_stats(&self) -> LockStats {
        std::mem::take(&mut self.state.lock().await.stats)
    }

    /// Releases everything the job holds and gives the session back or closes
    /// it. Runs at every job end; afterwards `pg_locks` shows none of the
    /// job's locks.
    pub async fn release_all(&self) -> ReleaseOutcome {
        let mut state = self.state.lock().await;
        let state = &mut *state;
        let now = Instant::now();
        let count = state.held.len();
        for held in state.held.values() {
            state.stats.holds.push(now - held.granted_at);
        }
        state.held.clear();
        state.counts.clear();
        state.lost.clear();
        let Some(session) = state.session.take() else {
            return ReleaseOutcome::NoSession;
        };
        if session.is_lost() {
            return ReleaseOutcome::Closed { reason: "session lost".into() };
        }
        // The job stopped while a statement was running (e.g. waiting for a
        // lock): the server may still grant it. Cancel it; the unlock below
        // runs after it (statements on a session run in order).
        let interrupted = session.interrupted();
        if interrupted {
            session.cancel_running().await;
        }
        let must_unlock = interrupted || count > 0 || session.is_suspect();
        if must_unlock && let Err(e) = unlock_all(&session).await {
            let reason = match self.db.pool.terminate(session).await {
                Ok(()) => format!("unlock failed ({e}); backend terminated"),
                Err(t) => format!("unlock failed ({e}); terminating the backend failed too ({t})"),
            };
            return ReleaseOutcome::Closed { reason };
        }
        if interrupted || session.cancel_may_arrive() {
            // Unlocked, but a cancel request may still land on whoever uses
            // the session next: close it instead.
            return ReleaseOutcome::Closed { reason: "a cancel may still arrive; unlocked and closed".into() };
        }
        self.db.pool.give_back(session);
        if count == 0 { ReleaseOutcome::NothingHeld } else { ReleaseOutcome::Released { count } }
    }
}

impl JobState {
    /// Makes sure the job has a session, checking one out on first use. A lost
    /// session is retired first (its grants become lost).
    pub(crate) async fn ensure_session(&mut self, db: &Database) -> Result<(), LockError> {
        if self.session.as_ref().is_some_and(|s| s.is_lost()) {
            self.retire_session();
        }
        if self.session.is_none() {
            let session = db.pool.checkout().await.map_err(|e| LockError::Unavailable(e.to_string()))?;
            self.session = Some(session);
        }
        Ok(())
    }

    /// The job's session; call [`JobState::ensure_session`] first.
    pub(crate) fn current(&self) -> Result<&PinnedSession, LockError> {
        self.session.as_ref().ok_or_else(|| LockError::Unavailable("no database session".into()))
    }

    /// Drops the session (closing it, so the server frees what it held) and
    /// marks every grant on it lost. Returns whether any grant was held.
    pub(crate) fn retire_session(&mut self) -> bool {
        self.session = None;
        let held_any = !self.held.is_empty();
        self.lost.extend(self.held.drain().map(|(id, _)| id));
        self.counts.clear();
        held_any
    }

    /// Retires the session because of `cause`: the guest sees `lost` when
    /// locks went with it, else `cause`.
    pub(crate) fn retire_because(&mut self, cause: LockError) -> LockError {
        if self.retire_session() { LockError::Lost } else { cause }
    }

    /// Like [`Self::retire_because`], for a session that may be stuck in a
    /// statement: the server terminates its backend.
    pub(crate) async fn kill_because(&mut self, db: &Database, cause: LockError) -> LockError {
        let session = self.session.take();
        let lost = self.retire_because(cause);
        if let Some(session) = session
            && let Err(e) = db.pool.terminate(session).await
        {
            tracing::warn!(error = %e, "terminating a stuck session failed");
        }
        lost
    }

    pub(crate) fn next_grant_id(&mut self) -> GrantId {
        self.next_grant += 1;
        GrantId(self.next_grant)
    }

    /// Maps a failed statement to the error the guest sees; retires the
    /// session when the failure means it is gone.
    pub(crate) fn failure(&mut self, err: &tokio_postgres::Error) -> LockError {
        let gone = err.is_closed() || ends_session(err) || self.session.as_ref().is_none_or(|s| s.is_lost());
        if gone {
            return self.retire_because(LockError::Unavailable(format!("database session ended: {}", describe(err))));
        }
        if let Some(session) = &self.session {
            // Whatever failed may have left a lock behind (a session lock
            // survives the failed statement that took it).
            session.mark_suspect();
        }
        match code_of(err) {
            Some(sqlstate::DEADLOCK_DETECTED) => LockError::Deadlock,
            Some(sqlstate::OUT_OF_SHARED_MEMORY) => {
                LockError::LimitExceeded("the database's lock table is full (max_locks_per_transaction)".into())
            }
            _ => LockError::Unavailable(describe(err)),
        }
    }
}

/// Whether the server ended the session with this error (terminated,
/// shutting down, crashed, connection failure).
fn ends_session(err: &tokio_postgres::Error) -> bool {
    match err.as_db_error() {
        Some(db) => {
            matches!(db.severity(), "FATAL" | "PANIC")
                || db.code().code().starts_with("08")
                || db.code().code().starts_with("57P0")
        }
        None => false,
    }
}

/// `pg_advisory_unlock_all()`, bounded in time.
async fn unlock_all(session: &Session) -> Result<(), String> {
    let call = session.execute(&session.stmts.unlock_all, &[]);
    match tokio::time::timeout(RELEASE_ALL_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {RELEASE_ALL_TIMEOUT:?}")),
    }
}
