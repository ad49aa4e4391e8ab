//! Host-wide counters of the lock engine, for metrics: acquires by result,
//! locks held now, sessions, and the clean-ups that ran on their own.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::LockError;

/// How one acquire or try-acquire ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireResult {
    /// Granted.
    Granted,
    /// A try found it taken.
    Taken,
    /// Not granted within the timeout.
    Timeout,
    /// Aborted to break a deadlock.
    Deadlock,
    /// The job's session was lost (or the job is fenced).
    Lost,
    /// A limit would be exceeded.
    LimitExceeded,
    /// The request was invalid.
    InvalidInput,
    /// The database could not serve it.
    Unavailable,
}

impl AcquireResult {
    /// Every result, in a fixed order.
    pub const ALL: [AcquireResult; 8] = [
        AcquireResult::Granted,
        AcquireResult::Taken,
        AcquireResult::Timeout,
        AcquireResult::Deadlock,
        AcquireResult::Lost,
        AcquireResult::LimitExceeded,
        AcquireResult::InvalidInput,
        AcquireResult::Unavailable,
    ];

    /// Its label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            AcquireResult::Granted => "granted",
            AcquireResult::Taken => "taken",
            AcquireResult::Timeout => "timeout",
            AcquireResult::Deadlock => "deadlock",
            AcquireResult::Lost => "lost",
            AcquireResult::LimitExceeded => "limit_exceeded",
            AcquireResult::InvalidInput => "invalid_input",
            AcquireResult::Unavailable => "unavailable",
        }
    }

    pub(crate) fn of<T>(result: &Result<Option<T>, LockError>) -> Self {
        match result {
            Ok(Some(_)) => AcquireResult::Granted,
            Ok(None) => AcquireResult::Taken,
            Err(LockError::Timeout) => AcquireResult::Timeout,
            Err(LockError::Deadlock) => AcquireResult::Deadlock,
            Err(LockError::Lost) => AcquireResult::Lost,
            Err(LockError::LimitExceeded(_)) => AcquireResult::LimitExceeded,
            Err(LockError::InvalidInput(_)) => AcquireResult::InvalidInput,
            Err(LockError::Unavailable(_)) => AcquireResult::Unavailable,
        }
    }
}

/// The counters, shared by every job of a host.
#[derive(Default)]
pub(crate) struct Counters {
    acquires: [AtomicU64; AcquireResult::ALL.len()],
    pub(crate) locks_held: std::sync::Arc<AtomicI64>,
    pub(crate) abandoned: AtomicU64,
    pub(crate) late_grants: AtomicU64,
    pub(crate) abandoned_tries: AtomicU64,
}

impl Counters {
    pub(crate) fn count_acquire(&self, result: AcquireResult) {
        let index = AcquireResult::ALL.iter().position(|r| *r == result).unwrap_or(0);
        self.acquires[index].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn acquires(&self) -> Vec<(AcquireResult, u64)> {
        AcquireResult::ALL.iter().zip(&self.acquires).map(|(r, n)| (*r, n.load(Ordering::Relaxed))).collect()
    }
}

/// A snapshot of a host's lock engine.
#[derive(Debug, Clone)]
pub struct DbStats {
    /// Acquires and try-acquires so far, by result.
    pub acquires: Vec<(AcquireResult, u64)>,
    /// Locks held by this host's jobs now.
    pub locks_held: i64,
    /// Sessions checked out by jobs now.
    pub sessions_busy: usize,
    /// Sessions open and idle now.
    pub sessions_idle: usize,
    /// Shared sessions open now (part of `sessions_busy`), each carrying
    /// many jobs' locks.
    pub sessions_shared: usize,
    /// Sessions opened so far.
    pub sessions_opened: u64,
    /// Jobs dropped mid-flight whose clean-up ran on its own task.
    pub jobs_abandoned: u64,
    /// Waits granted after their timeout, undone.
    pub late_grants_undone: u64,
}
