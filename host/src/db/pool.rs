//! The bounded set of sessions a host uses. A job checks one out and keeps it
//! pinned until it ends; only a session that holds no lock, has nothing in
//! flight and is healthy comes back for reuse. Every other session is closed,
//! which makes the server drop whatever it held. Jobs beyond the bound wait.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::describe;
use super::{DbConfig, DbError, Session, sql};

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

    /// Waits for a free place, then reuses an idle session or opens one.
    pub(crate) async fn checkout(&self) -> Result<PinnedSession, DbError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| DbError::Config("the session pool was closed".into()))?;
        while let Some(session) = self.pop_idle() {
            if !session.is_lost() {
                return Ok(PinnedSession { session, _permit: permit });
            }
        }
        let session = Session::open(&self.config).await?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(PinnedSession { session, _permit: permit })
    }

    /// Returns a clean session (no locks held, nothing in flight) for reuse.
    /// The caller guarantees it is clean; a lost one is closed instead.
    pub(crate) fn give_back(&self, pinned: PinnedSession) {
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
    pub(crate) async fn terminate(&self, pinned: PinnedSession) -> Result<(), String> {
        pinned.abort_connection();
        let pid = pinned.backend_pid();
        let terminated = self.config.with_client(async |client| client.query_one(sql::TERMINATE, &[&pid]).await).await;
        drop(pinned);
        terminated.map_err(|e| e.to_string())?.map(|_| ()).map_err(|e| describe(&e))
    }

    fn pop_idle(&self) -> Option<Session> {
        self.idle.lock().ok()?.pop()
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
