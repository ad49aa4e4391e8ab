//! The bounded set of sessions a host uses. A job checks one out and keeps it
//! pinned until it ends; only a session that holds no lock, has nothing in
//! flight and is healthy comes back for reuse. Every other session is closed,
//! which makes the server drop whatever it held. Jobs beyond the bound wait,
//! each no longer than its own deadline; a try does not wait at all.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::describe;
use super::{DbConfig, DbError, Session, sql};

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
    max: usize,
    opened: AtomicU64,
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
    pub(crate) fn new(config: DbConfig, max: usize) -> Self {
        let max = max.max(1);
        Self {
            config,
            permits: Arc::new(Semaphore::new(max)),
            idle: Mutex::new(Vec::new()),
            max,
            opened: AtomicU64::new(0),
        }
    }

    /// Takes a free place (waiting as `wait` allows), then reuses an idle
    /// session or opens one. Opening is bounded by the deadline too.
    pub(crate) async fn checkout(&self, wait: Checkout) -> Result<PinnedSession, CheckoutError> {
        let permit = match wait {
            Checkout::Now => {
                self.permits.clone().try_acquire_owned().map_err(|_| CheckoutError::Busy { max: self.max })?
            }
            Checkout::Until(deadline) => {
                match tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => {
                        return Err(CheckoutError::Open(DbError::Config("the session pool was closed".into())));
                    }
                    Err(_elapsed) => return Err(CheckoutError::TimedOut),
                }
            }
        };
        while let Some(session) = self.pop_idle() {
            if !session.is_lost() {
                return Ok(PinnedSession { session, _permit: permit });
            }
        }
        let opening = Session::open(&self.config);
        let session = match wait {
            Checkout::Now => opening.await,
            Checkout::Until(deadline) => {
                tokio::time::timeout_at(deadline, opening).await.map_err(|_elapsed| CheckoutError::TimedOut)?
            }
        }
        .map_err(CheckoutError::Open)?;
        self.opened.fetch_add(1, Ordering::Relaxed);
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

    fn pop_idle(&self) -> Option<Session> {
        self.idle.lock().ok()?.pop()
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
