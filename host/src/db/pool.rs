//! The bounded set of sessions a host uses, of two kinds (see
//! `docs/design/sessions.md`):
//! - a **dedicated** session is checked out by one job and kept pinned until
//!   it ends; only a session that holds no lock, has nothing in flight and is
//!   healthy comes back for reuse. Every other one is closed, which makes the
//!   server drop whatever it held;
//! - a **shared** session carries many jobs' locks and never runs a statement
//!   that waits for another session; it stays open while it is healthy.
//!
//! Both count against one bound. Jobs beyond it wait, each no longer than its
//! own deadline; a try does not wait at all.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::describe;
use super::session::OnEnd;
use super::{DbConfig, DbError, DbSettings, Session, sql};

/// How long a checkout may wait for a free place.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Checkout {
    /// Not at all: a try never waits for another job.
    Now,
    /// Until this instant.
    Until(tokio::time::Instant),
}

/// Why no session was checked out.
#[derive(Debug)]
pub(crate) enum CheckoutError {
    /// Every place is taken and the caller would not wait.
    Busy {
        /// The pool's bound.
        max: usize,
    },
    /// No place came free (or the session did not open) before the deadline.
    TimedOut,
    /// Opening a session failed.
    Open(DbError),
}

/// Sessions open or idle, at most `max` at once.
pub(crate) struct SessionPool {
    config: DbConfig,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Session>>,
    /// The shared sessions open now.
    shared: tokio::sync::Mutex<Vec<Arc<SharedSession>>>,
    max_shared: usize,
    /// Jobs placed on one shared session before the next one is used.
    jobs_per_shared: usize,
    max: usize,
    opened: AtomicU64,
    on_end: Option<OnEnd>,
}

/// A session many jobs' locks live on. It only ever runs statements that do
/// not wait for another session. Jobs hold it through a [`Tenancy`], which
/// counts them (`Session::tenants`).
pub(crate) struct SharedSession {
    session: Session,
    /// Server locks held on it now, all jobs together.
    locks: AtomicUsize,
    _permit: OwnedSemaphorePermit,
}

/// A job's place on a shared session: the job is counted among the
/// session's tenants (for [`SessionPool::place`] and the driver's eager
/// writes) until it leaves or this is dropped.
pub(crate) struct Tenancy {
    session: Arc<SharedSession>,
    counted: bool,
}

impl Tenancy {
    /// Counts one more tenant of `session`.
    pub(crate) fn new(session: Arc<SharedSession>) -> Self {
        session.session.add_tenant();
        Self { session, counted: true }
    }

    /// Stops counting the job among the tenants but keeps the session: a
    /// job whose guest has ended queues nothing more of its own accord, it
    /// only waits for answers and settles.
    pub(crate) fn leave(&mut self) {
        if std::mem::replace(&mut self.counted, false) {
            self.session.session.remove_tenant();
        }
    }
}

impl Drop for Tenancy {
    fn drop(&mut self) {
        self.leave();
    }
}

impl std::ops::Deref for Tenancy {
    type Target = Arc<SharedSession>;
    fn deref(&self) -> &Arc<SharedSession> {
        &self.session
    }
}

impl std::ops::Deref for SharedSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl SharedSession {
    /// Counts `n` more server locks held on it.
    pub(crate) fn add_locks(&self, n: usize) {
        self.locks.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` fewer.
    pub(crate) fn sub_locks(&self, n: usize) {
        let _ = self.locks.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| Some(l.saturating_sub(n)));
    }

    /// Server locks held on it now.
    pub(crate) fn locks(&self) -> usize {
        self.locks.load(Ordering::Relaxed)
    }
}

/// A session checked out of the pool, pinned to one holder.
pub(crate) struct PinnedSession {
    session: Session,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for PinnedSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl SessionPool {
    /// A pool of at most `max_sessions`, `shared_sessions` of them shared;
    /// `on_end` runs whenever one of its sessions' connection ends.
    pub(crate) fn new(config: DbConfig, settings: &DbSettings, on_end: Option<OnEnd>) -> Self {
        let max = settings.max_sessions.max(1);
        Self {
            config,
            permits: Arc::new(Semaphore::new(max)),
            idle: Mutex::new(Vec::new()),
            shared: tokio::sync::Mutex::new(Vec::new()),
            // At least one place stays for dedicated sessions, the only ones
            // that may wait for a lock.
            max_shared: settings.shared_sessions.min(max - 1),
            jobs_per_shared: settings.jobs_per_shared_session.max(1),
            max,
            opened: AtomicU64::new(0),
            on_end,
        }
    }

    /// Whether jobs start on shared sessions.
    pub(crate) fn shares(&self) -> bool {
        self.max_shared > 0
    }

    /// A shared session for a new tenant: the fullest one of the caller's
    /// shard with room for another (fewer than `jobs_per_shared_session`,
    /// see [`DbSettings`]), else a new one while the bound allows, else the
    /// one with the fewest tenants and locks, of any shard. Waits for a
    /// place (as `wait` allows) only when none is open.
    pub(crate) async fn place(&self, wait: Checkout) -> Result<Tenancy, CheckoutError> {
        let mut shared = self.shared.lock().await;
        shared.retain(|s| !s.is_lost());
        // Sessions driven by the caller's shard first: their statements do
        // not cross threads (see `crate::shard`).
        let here = crate::shard::current();
        let mine = |s: &&Arc<SharedSession>| s.shard() == here;
        let load = |s: &&Arc<SharedSession>| (s.tenants(), s.locks());
        let fullest = shared.iter().filter(mine).filter(|s| s.tenants() < self.jobs_per_shared);
        if let Some(fullest) = fullest.max_by_key(|s| s.tenants()) {
            return Ok(Tenancy::new(fullest.clone()));
        }
        // Past the packing, balance: the least loaded of all, whichever shard.
        let least = shared.iter().min_by_key(load).cloned();
        if let Some(least) = &least
            && shared.len() >= self.max_shared
        {
            return Ok(Tenancy::new(least.clone()));
        }
        let permit = match (self.permits.clone().try_acquire_owned(), least) {
            (Ok(permit), _) => permit,
            // No place free: share the least loaded rather than wait.
            (Err(_), Some(least)) => return Ok(Tenancy::new(least)),
            (Err(_), None) => self.permit(wait).await?,
        };
        let session = self.reuse_or_open(wait).await?;
        let session = Arc::new(SharedSession { session, locks: AtomicUsize::new(0), _permit: permit });
        shared.push(session.clone());
        Ok(Tenancy::new(session))
    }

    /// Closes a shared session at once (when in doubt whether a lock is
    /// held): the server ends its backend and frees its locks; its tenants
    /// find it lost.
    pub(crate) async fn close_shared(&self, session: &Arc<SharedSession>) {
        session.abort_connection();
        self.shared.lock().await.retain(|s| !Arc::ptr_eq(s, session));
        let pid = session.backend_pid();
        let terminated = self.config.with_client(async |client| client.query_one(sql::TERMINATE, &[&pid]).await).await;
        if let Err(e) = terminated.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| describe(&e))) {
            tracing::warn!(pid, error = %e, "terminating a shared session failed; its socket is closed");
        }
    }

    async fn permit(&self, wait: Checkout) -> Result<OwnedSemaphorePermit, CheckoutError> {
        match wait {
            Checkout::Now => {
                self.permits.clone().try_acquire_owned().map_err(|_| CheckoutError::Busy { max: self.max })
            }
            Checkout::Until(deadline) => {
                match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Ok(permit),
                    Ok(Err(_closed)) => Err(CheckoutError::Open(DbError::Config("the session pool was closed".into()))),
                    Err(_elapsed) => Err(CheckoutError::TimedOut),
                }
            }
        }
    }

    /// An idle session (clean, as [`Self::return_idle`] requires) for the
    /// place the caller holds, else a new one.
    async fn reuse_or_open(&self, wait: Checkout) -> Result<Session, CheckoutError> {
        while let Some(session) = self.pop_idle() {
            if !session.is_lost() {
                return Ok(session);
            }
        }
        self.open(wait).await
    }

    /// Opens a session, bounded by the deadline.
    async fn open(&self, wait: Checkout) -> Result<Session, CheckoutError> {
        // Boxed: opening is rare, and its future (connecting, preparing
        // every statement) would otherwise make each lock call's future
        // tens of KiB, copied whole at every move (see BENCHMARKS.md,
        // "Issue 8, sixth pass").
        let opening = Box::pin(Session::open(&self.config, self.on_end.clone()));
        let session = match wait {
            Checkout::Now => opening.await,
            Checkout::Until(deadline) => {
                tokio::time::timeout_at(deadline, opening).await.map_err(|_elapsed| CheckoutError::TimedOut)?
            }
        }
        .map_err(CheckoutError::Open)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(session)
    }

    /// Takes a free place (waiting as `wait` allows), then reuses an idle
    /// session or opens one. Opening is bounded by the deadline too.
    pub(crate) async fn checkout(&self, wait: Checkout) -> Result<PinnedSession, CheckoutError> {
        let permit = self.permit(wait).await?;
        let session = self.reuse_or_open(wait).await?;
        Ok(PinnedSession { session, _permit: permit })
    }

    /// Returns a clean session (no locks held, nothing in flight, no cancel
    /// pending) to the idle set for reuse. The caller guarantees it is clean;
    /// a lost one is closed instead.
    pub(crate) fn return_idle(&self, pinned: PinnedSession) {
        let PinnedSession { session, _permit } = pinned;
        if session.is_lost() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(session);
        }
        // `_permit` drops here, after the session is idle again.
    }

    /// Ends a session that may be stuck in a statement (dropping the client
    /// would keep it open until the statement answers): closes our socket and
    /// has the server terminate the backend, waiting until it has exited and
    /// its locks are free. The pool place is given up only then.
    /// Runs on a task of its own, so that it finishes even if the caller is
    /// dropped meanwhile.
    pub(crate) async fn terminate(&self, pinned: PinnedSession) -> Result<(), String> {
        pinned.abort_connection();
        let pid = pinned.backend_pid();
        let config = self.config.clone();
        let ending = tokio::spawn(async move {
            let terminated = config.with_client(async |client| client.query_one(sql::TERMINATE, &[&pid]).await).await;
            drop(pinned);
            terminated.map_err(|e| e.to_string())?.map(|_| ()).map_err(|e| describe(&e))
        });
        ending.await.map_err(|e| format!("the terminating task failed: {e}"))?
    }

    /// An idle session, one driven by the caller's shard if there is one.
    fn pop_idle(&self) -> Option<Session> {
        let mut idle = self.idle.lock().ok()?;
        let here = crate::shard::current();
        match idle.iter().rposition(|session| session.shard() == here) {
            Some(mine) => Some(idle.swap_remove(mine)),
            None => idle.pop(),
        }
    }

    /// Shared sessions open now.
    pub(crate) fn shared_open(&self) -> usize {
        self.shared.try_lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Sessions checked out now, and sessions idle now.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let idle = self.idle.lock().map(|idle| idle.len()).unwrap_or(0);
        (self.max - self.permits.available_permits(), idle)
    }

    /// The most sessions this pool keeps open at once.
    pub(crate) fn max_sessions(&self) -> usize {
        self.max
    }

    /// Sessions opened since the pool was made.
    pub(crate) fn sessions_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub(crate) fn config(&self) -> &DbConfig {
        &self.config
    }
}
