//! One job's side of the database: the job's home session (shared with
//! other jobs, or dedicated to it; see `docs/design/sessions.md`), the grants
//! it holds, the fence that keeps a job away from the database after its
//! session was lost, and the clean-up that runs when the job ends, however it
//! ends.
//!
//! Rules kept here:
//! - all of a job's locks live on its home session, and its key-value calls
//!   run there too, so a write that commits proves those locks were held;
//!   the home changes (to a dedicated session) only while the job holds none;
//! - only a dedicated session ever waits for a lock, so a session never waits
//!   on behalf of one job while holding another's;
//! - **fail closed**: once the session under the job's grants is lost, every
//!   grant on it is lost, and every further lock or key-value call of the job
//!   answers `Lost` without touching the database (on any session) until each
//!   lost grant has been released, which is how the guest acknowledges the
//!   loss;
//! - every wait for a session is bounded by the caller's deadline, and a
//!   try never waits for another job;
//! - at the end every lock is released before the job's result is reported,
//!   on a task of its own: dropping the job's future (at any await point)
//!   cannot skip it, because dropping the [`JobSession`] starts the same
//!   clean-up. A dedicated session that may still receive a cancel or hold an
//!   untracked lock is closed, never reused (see [`super::session`] for the
//!   stale-cancel story); a shared session whose unlock fails is closed too.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::activity::JobActivity;
use super::database::HostTable;
use super::error::{code_of, describe, sqlstate};
use super::locks::{Fencing, GrantId, Held, LockMode};
use super::pool::{Checkout, CheckoutError, PinnedSession, SharedSession, Tenancy};
use super::{Database, LockError, Session};
use crate::latency::CompactHist;

/// How long the end-of-job unlock (and a released lock's unlock on a shared
/// session) may take before the session is closed instead.
pub(crate) const RELEASE_ALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Lock wait and hold times of one job, in bounded memory.
#[derive(Debug, Default, Clone)]
pub struct LockStats {
    /// From the acquire call to the grant, for each granted acquire.
    pub waits: CompactHist,
    /// From each grant to its release, its loss or the job's end.
    pub holds: CompactHist,
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
    pub(crate) state: Mutex<JobLocks>,
    /// The job's wall-clock limit: no wait of the job outlives it.
    deadline: OnceLock<tokio::time::Instant>,
    /// Most locks the job may hold at once, when lower than the host's.
    max_locks: OnceLock<usize>,
    /// Whether its grants draw fencing tokens (unset: they do).
    fencing: OnceLock<Fencing>,
}

/// Everything behind the job's lock; the guest calls one at a time, so this
/// is never contended except by the end-of-job clean-up.
#[derive(Default)]
pub(crate) struct JobLocks {
    session: Option<Home>,
    pub(crate) held: HashMap<GrantId, Held>,
    /// How many grants of this job stand on each (key, mode). The server is
    /// asked once per (key, mode); further grants of the same pair are counted
    /// here. That keeps the server's count at 0 or 1, so a cancelled wait can
    /// always be checked against `pg_locks`.
    pub(crate) counts: HashMap<(i64, LockMode), u32>,
    /// Grants whose session was lost and that the guest has not released
    /// yet. While any is left, the job is fenced off the database.
    lost: HashSet<GrantId>,
    next_grant: u64,
    pub(crate) stats: LockStats,
    /// The host's count of locks held (see [`super::stats`]).
    held_gauge: Arc<AtomicI64>,
    /// Unlocks sent on a shared session that the job's end waits for.
    pub(crate) unlocking: PendingUnlocks,
    /// What the job holds and waits for, as the host's dashboard sees it.
    pub(crate) activity: Arc<JobActivity>,
    /// The host's lock table, where each (key, mode) in `counts` has an entry.
    pub(crate) table: HostTable,
    pub(crate) job_id: u64,
}

/// Where a job's locks live.
pub(crate) enum Home {
    /// A session of its own: it may wait for a lock.
    Dedicated(PinnedSession),
    /// A session it shares with other jobs: it never waits.
    Shared(Tenancy),
}

impl std::ops::Deref for Home {
    type Target = Session;
    fn deref(&self) -> &Session {
        match self {
            Home::Dedicated(session) => session,
            Home::Shared(session) => session,
        }
    }
}

/// A session taken from a job at its end, with what it still held: the
/// (key, mode) pairs it holds on the server, one lock each.
struct Ending {
    job_id: u64,
    session: Home,
    held: usize,
    pairs: Vec<(i64, LockMode)>,
}

impl JobSession {
    pub(crate) fn new(db: Arc<Database>, job_id: u64) -> Self {
        let state = JobLocks {
            held_gauge: db.counters.locks_held.clone(),
            activity: db.activity.register(job_id),
            table: db.table.clone(),
            job_id,
            ..JobLocks::default()
        };
        Self {
            db,
            job_id,
            state: Mutex::new(state),
            deadline: OnceLock::new(),
            max_locks: OnceLock::new(),
            fencing: OnceLock::new(),
        }
    }

    /// The job this handle belongs to.
    pub fn job_id(&self) -> u64 {
        self.job_id
    }

    /// Sets the job's wall-clock deadline (once): no lock or session wait of
    /// the job lasts past it.
    pub fn set_deadline(&self, deadline: tokio::time::Instant) {
        let _ = self.deadline.set(deadline);
    }

    /// Lowers the most locks this job may hold (once), e.g. to its worker's
    /// limit.
    pub fn set_max_locks(&self, max: usize) {
        let _ = self.max_locks.set(max);
    }

    /// Whether the job's grants draw fencing tokens (once, before its first
    /// lock): [`Fencing::Off`] for a worker that never reads one.
    pub fn set_fencing(&self, fencing: Fencing) {
        let _ = self.fencing.set(fencing);
    }

    /// Whether the job's grants draw fencing tokens.
    pub(crate) fn fencing(&self) -> Fencing {
        self.fencing.get().copied().unwrap_or_default()
    }

    /// Most locks this job may hold at once.
    pub(crate) fn max_locks(&self) -> usize {
        let host = self.db.settings.max_locks_per_job;
        self.max_locks.get().map_or(host, |&job| job.min(host))
    }

    /// `want`, cut to the job's deadline.
    pub(crate) fn bounded(&self, want: tokio::time::Instant) -> tokio::time::Instant {
        self.deadline.get().map_or(want, |&limit| want.min(limit))
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
    /// it: [`Self::end`], then [`PendingRelease::finish`]. Runs at every job
    /// end; afterwards `pg_locks` shows none of the job's locks. If this
    /// future is dropped midway, the clean-up still finishes on a task of its
    /// own.
    pub async fn release_all(&self) -> ReleaseOutcome {
        self.end().await.finish().await
    }

    /// Ends the job's use of the database, once its guest is gone: no call
    /// of the job reaches the database afterwards. What is left, waiting for
    /// the unlocks the guest sent and unlocking what it still held, is the
    /// returned release's. Meanwhile the job no longer counts among its
    /// shared session's tenants, so the next job placed there writes its
    /// statements as it would with this one gone (and they carry this job's
    /// queued unlocks along).
    pub async fn end(&self) -> PendingRelease {
        let (mut ending, unlocking) = {
            let mut state = self.state.lock().await;
            (state.end(), std::mem::take(&mut state.unlocking))
        };
        if let Some(Ending { session: Home::Shared(tenancy), .. }) = &mut ending {
            tenancy.leave();
        }
        PendingRelease { db: self.db.clone(), ending, unlocking }
    }
}

/// The release of an ended job's locks (see [`JobSession::end`]): the answers
/// to the unlocks its guest sent, then the unlock of what it still held and
/// the session's return (or close). Dropped before [`Self::finish`] ends
/// (or never finished), the rest runs on a task of its own: no lock outlives
/// its job for good.
pub struct PendingRelease {
    db: Arc<Database>,
    ending: Option<Ending>,
    unlocking: PendingUnlocks,
}

impl PendingRelease {
    /// Whether the job ended holding locks its guest never released (it
    /// trapped, ran out of time, was cancelled...), or with a session that
    /// cannot go back as it is. [`Self::finish`] unlocks those; until then
    /// they keep other local jobs out. Unlocks the guest sent already let
    /// the next job in: it follows them on their session.
    pub fn holds_locks(&self) -> bool {
        self.ending.as_ref().is_some_and(|ending| !ending.is_clean())
    }

    /// Finishes the release; the job's outcome is reported after this.
    pub async fn finish(mut self) -> ReleaseOutcome {
        // Releases the guest sent before it ended are done before the job
        // reports (dropping this wait skips none: see `PendingUnlocks`).
        // Their unlocks may still be queued, unless a statement written
        // since carried them along: this wait is what they hold up.
        if !self.unlocking.is_empty()
            && let Some(ending) = &self.ending
        {
            ending.session.write_now();
        }
        self.unlocking.finish().await;
        let Some(ending) = self.ending.take() else {
            return ReleaseOutcome::NoSession;
        };
        if ending.is_clean() {
            // Nothing to send: no await, so nothing a drop could interrupt.
            if let Home::Dedicated(session) = ending.session {
                self.db.pool.return_idle(session);
            }
            return ReleaseOutcome::NothingHeld;
        }
        match tokio::spawn(settle(self.db.clone(), ending)).await {
            Ok(outcome) => outcome,
            Err(e) => ReleaseOutcome::Closed { reason: format!("the clean-up task failed: {e}") },
        }
    }
}

impl Drop for PendingRelease {
    fn drop(&mut self) {
        if let Some(ending) = self.ending.take() {
            self.db.note_abandoned();
            settle_elsewhere(&self.db, ending);
        }
    }
}

/// A release's unlock on a shared session, already sent: what is left is to
/// read its answer (see `locks::release_on_shared`).
pub(crate) type Unlocking = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The unlocks a job sent on its shared home and whose answers are still to
/// be read. They run in the job's own task (no task per release): each is
/// polled once when pushed, which puts the unlock on the connection, then
/// again at the next push and at the job's end. Dropped with some left (the
/// job's future was dropped), the rest finish on a task of their own, so a
/// failed unlock still closes its session.
#[derive(Default)]
pub(crate) struct PendingUnlocks(Vec<Unlocking>);

impl PendingUnlocks {
    /// Sends `unlock` (its first poll) and reads the answers already there.
    pub(crate) fn push(&mut self, unlock: Unlocking) {
        self.0.push(unlock);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        self.0.retain_mut(|unlock| unlock.as_mut().poll(&mut cx).is_pending());
    }

    /// Whether no answer is left to read.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits for every answer.
    pub(crate) async fn finish(&mut self) {
        while let Some(unlock) = self.0.last_mut() {
            unlock.await;
            self.0.pop();
        }
    }
}

impl Drop for PendingUnlocks {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        // The plain futures, not `Self`: a task dropped unrun (the runtime
        // shutting down) must not come back here and spawn again.
        let left = std::mem::take(&mut self.0);
        // No runtime left: nothing can be read; the process is ending and
        // its sessions with it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for unlock in left {
                    unlock.await;
                }
            });
        }
    }
}

impl Drop for JobSession {
    /// A job whose future was dropped before [`JobSession::release_all`] ran
    /// (an abandoned HTTP request, a `select!` elsewhere) still gets its
    /// clean-up, on a task of its own.
    fn drop(&mut self) {
        let Some(ending) = self.state.get_mut().end() else {
            return;
        };
        self.db.note_abandoned();
        tracing::debug!(job = self.job_id, held = ending.held, "job dropped mid-flight; cleaning up its session");
        settle_elsewhere(&self.db, ending);
    }
}

/// Settles `ending` on a task of its own, for a clean-up whose future was
/// dropped.
fn settle_elsewhere(db: &Arc<Database>, ending: Ending) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(settle(db.clone(), ending));
        }
        // No runtime left (the process is shutting down): closing the
        // socket makes the server end the backend and free its locks.
        Err(_) => {
            ending.session.abort_connection();
            db.table.leave_all(ending.job_id, &ending.pairs);
        }
    }
}

impl Ending {
    /// Whether the session can go back to the pool (or stay shared) as it
    /// is: alive, holding nothing of the job's, nothing in flight, no cancel
    /// on its way.
    fn is_clean(&self) -> bool {
        let session = &self.session;
        match session {
            Home::Shared(_) => self.held == 0,
            Home::Dedicated(_) => {
                self.held == 0
                    && !session.is_lost()
                    && !session.interrupted()
                    && !session.is_suspect()
                    && !session.cancel_may_arrive()
            }
        }
    }
}

/// Unlocks what an ended job's session still holds, then gives the session
/// back to the pool (or leaves it shared) or closes it, and only then lets
/// local waiters in.
async fn settle(db: Arc<Database>, ending: Ending) -> ReleaseOutcome {
    let Ending { job_id, session, held, pairs } = ending;
    let outcome = match session {
        Home::Shared(shared) => settle_shared(&db, &shared, held, &pairs).await,
        Home::Dedicated(session) => settle_dedicated(&db, session, held).await,
    };
    db.table.leave_all(job_id, &pairs);
    outcome
}

/// Unlocks a job's locks on a shared session one by one (pipelined); when
/// that fails the session is closed, since whether they are held is unknown.
async fn settle_shared(
    db: &Database,
    shared: &Arc<SharedSession>,
    held: usize,
    pairs: &[(i64, LockMode)],
) -> ReleaseOutcome {
    if shared.is_lost() {
        return ReleaseOutcome::Closed { reason: "session lost".into() };
    }
    let unlocks =
        futures_util::future::join_all(pairs.iter().map(|&(key, mode)| super::locks::unlock(shared, key, mode)));
    match tokio::time::timeout(RELEASE_ALL_TIMEOUT, unlocks).await {
        Ok(answers) if answers.iter().all(Result::is_ok) => {
            shared.sub_locks(pairs.len());
            ReleaseOutcome::Released { count: held }
        }
        answers => {
            let why = match answers {
                Ok(answers) => answers.into_iter().find_map(Result::err).map_or_else(String::new, |e| describe(&e)),
                Err(_) => format!("no answer within {RELEASE_ALL_TIMEOUT:?}"),
            };
            db.pool.close_shared(shared).await;
            ReleaseOutcome::Closed { reason: format!("unlock on a shared session failed ({why}); session closed") }
        }
    }
}

/// Unlocks what a dedicated session still holds, then gives it back to the
/// pool or closes it.
async fn settle_dedicated(db: &Database, session: PinnedSession, held: usize) -> ReleaseOutcome {
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
    let must_unlock = interrupted || held > 0 || session.is_suspect();
    if must_unlock && let Err(e) = unlock_all(&session).await {
        let reason = match db.pool.terminate(session).await {
            Ok(()) => format!("unlock failed ({e}); backend terminated"),
            Err(t) => format!("unlock failed ({e}); terminating the backend failed too ({t})"),
        };
        return ReleaseOutcome::Closed { reason };
    }
    if interrupted || session.cancel_may_arrive() {
        // Unlocked, but a cancel request may still land on whoever uses the
        // session next: close it instead.
        return ReleaseOutcome::Closed { reason: "a cancel may still arrive; unlocked and closed".into() };
    }
    db.pool.return_idle(session);
    if held == 0 { ReleaseOutcome::NothingHeld } else { ReleaseOutcome::Released { count: held } }
}

impl JobLocks {
    /// Ends the job's use of the database: records the holds still open and
    /// takes the session out, if there is one.
    fn end(&mut self) -> Option<Ending> {
        let now = Instant::now();
        let held = self.held.len();
        for held in self.held.values() {
            self.stats.holds.record(now - held.granted_at);
        }
        self.held.clear();
        self.held_gauge.fetch_sub(held as i64, Ordering::Relaxed);
        self.activity.cleared();
        let pairs: Vec<(i64, LockMode)> = self.counts.drain().map(|(pair, _)| pair).collect();
        self.lost.clear();
        match self.session.take() {
            Some(session) => Some(Ending { job_id: self.job_id, session, held, pairs }),
            None => {
                self.table.leave_all(self.job_id, &pairs);
                None
            }
        }
    }

    /// Lets a call through to the database, or answers `Lost` while a lost
    /// grant has not been released (the fence). A session found lost is
    /// retired first, turning its grants lost.
    pub(crate) fn admit(&mut self) -> Result<(), LockError> {
        if self.session.as_ref().is_some_and(|s| s.is_lost()) {
            self.retire_session();
        }
        if self.lost.is_empty() { Ok(()) } else { Err(LockError::Lost) }
    }

    /// Admits the call and makes sure the job has a home session, placing it
    /// on a shared one (or checking out a dedicated one when the host shares
    /// none) on first use, waiting as `wait` allows.
    pub(crate) async fn session(&mut self, db: &Database, wait: Checkout) -> Result<&Session, LockError> {
        self.admit()?;
        let session = match self.session.take() {
            Some(session) => session,
            None if db.pool.shares() => Home::Shared(db.pool.place(wait).await.map_err(checkout_error)?),
            None => Home::Dedicated(db.pool.checkout(wait).await.map_err(checkout_error)?),
        };
        Ok(self.session.insert(session))
    }

    /// Moves a job that holds no lock to a session of its own, so that it
    /// may wait for one there.
    pub(crate) async fn move_to_dedicated(&mut self, db: &Database, wait: Checkout) -> Result<(), LockError> {
        debug_assert!(self.counts.is_empty(), "a job's locks never leave its home");
        self.session = None;
        self.session = Some(Home::Dedicated(db.pool.checkout(wait).await.map_err(checkout_error)?));
        Ok(())
    }

    /// Moves a job that holds no lock to the shared session `via`, whose
    /// unlock just let it in, so that its lock statement follows that unlock
    /// there. A job that holds locks, or whose home is dedicated, stays.
    pub(crate) fn follow_unlock(&mut self, via: Arc<SharedSession>) {
        let movable = self.counts.is_empty() && matches!(self.session, Some(Home::Shared(_)));
        if movable && !via.is_lost() {
            self.session = Some(Home::Shared(Tenancy::new(via)));
        }
    }

    /// The job's session; call [`JobLocks::session`] first.
    pub(crate) fn pinned(&self) -> Result<&Session, LockError> {
        self.session.as_deref().ok_or_else(|| LockError::Unavailable("no database session".into()))
    }

    /// The job's home when it is shared with other jobs.
    pub(crate) fn shared_home(&self) -> Option<&Arc<SharedSession>> {
        match &self.session {
            Some(Home::Shared(shared)) => Some(shared),
            _ => None,
        }
    }

    /// Whether the session is there and not known to be lost.
    pub(crate) fn session_alive(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.is_lost())
    }

    /// Drops the session (closing it, so the server frees what it held) and
    /// marks every grant on it lost. Returns whether any grant was held.
    pub(crate) fn retire_session(&mut self) -> bool {
        self.session = None;
        let now = Instant::now();
        let held_any = !self.held.is_empty();
        self.held_gauge.fetch_sub(self.held.len() as i64, Ordering::Relaxed);
        self.activity.cleared();
        for (id, held) in self.held.drain() {
            self.stats.holds.record(now - held.granted_at);
            self.lost.insert(id);
        }
        // The server freed them with the session (or will, as it ends):
        // local jobs may ask for them again; the server arbitrates.
        let pairs: Vec<(i64, LockMode)> = self.counts.drain().map(|(pair, _)| pair).collect();
        self.table.leave_all(self.job_id, &pairs);
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
        if let Some(Home::Dedicated(session)) = session
            && let Err(e) = db.pool.terminate(session).await
        {
            tracing::warn!(error = %e, "terminating a stuck session failed");
        }
        lost
    }

    /// Acknowledges a lost grant (its guard was released or dropped).
    /// Returns whether `id` was one.
    pub(crate) fn acknowledge_lost(&mut self, id: GrantId) -> bool {
        self.lost.remove(&id)
    }

    /// Records a grant as held.
    pub(crate) fn hold(&mut self, id: GrantId, held: Held) {
        self.activity.held(id, &held);
        self.held.insert(id, held);
        self.held_gauge.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a grant out of the held set (it is being released).
    pub(crate) fn unhold(&mut self, id: GrantId) -> Option<Held> {
        let held = self.held.remove(&id)?;
        self.held_gauge.fetch_sub(1, Ordering::Relaxed);
        self.activity.released(id);
        Some(held)
    }

    pub(crate) fn next_grant_id(&mut self) -> GrantId {
        self.next_grant += 1;
        GrantId(self.next_grant)
    }

    /// Records what a failed statement means for the session, retiring it
    /// when it is gone and marking it suspect otherwise, and returns the
    /// error the guest sees (`Lost` if the retired session held locks).
    pub(crate) fn record_failure(&mut self, err: &tokio_postgres::Error) -> LockError {
        let gone = err.is_closed() || ends_session(err) || !self.session_alive();
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

/// What the guest sees when no session could be had.
fn checkout_error(e: CheckoutError) -> LockError {
    match e {
        CheckoutError::TimedOut => LockError::Timeout,
        CheckoutError::Busy { max } => {
            LockError::Unavailable(format!("all {max} database sessions of this host are in use"))
        }
        CheckoutError::Open(e) => LockError::Unavailable(e.to_string()),
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
