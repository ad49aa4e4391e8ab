//! Distributed locks on entities: requests, guards and lock errors.
//!
//! The host holds every lock on one database session pinned to the job, and
//! releases whatever the job still holds when it ends, however it ends.

use std::{error::Error, fmt, time::Duration};

use crate::{Entity, bindings::pinlock::host::distributed_lock as wit, log};

/// How a lock is held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One holder at a time; waits for every other holder, exclusive or shared.
    #[default]
    Exclusive,
    /// Any number of shared holders at once; waits only for an exclusive holder.
    Shared,
}

impl From<Mode> for wit::LockMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Exclusive => Self::Exclusive,
            Mode::Shared => Self::Shared,
        }
    }
}

impl From<wit::LockMode> for Mode {
    fn from(mode: wit::LockMode) -> Self {
        match mode {
            wit::LockMode::Exclusive => Self::Exclusive,
            wit::LockMode::Shared => Self::Shared,
        }
    }
}

/// Starts a request for a lock on `entity`: exclusive, with the host's
/// default timeout unless the builder says otherwise.
///
/// ```no_run
/// # use std::time::Duration;
/// # fn job(order: pinlock_guest::Uuid) -> Result<(), pinlock_guest::LockError> {
/// let guard = pinlock_guest::lock(order).shared().timeout(Duration::from_secs(2)).acquire()?;
/// // ... read the order ...
/// guard.release()
/// # }
/// ```
pub fn lock(entity: impl Into<Entity>) -> LockRequest {
    LockRequest { entity: entity.into(), mode: Mode::Exclusive, timeout: None }
}

/// A lock to take, built by [`lock()`]. Reusable: acquiring does not consume
/// the request's settings.
#[derive(Clone, Copy, Debug)]
#[must_use = "a lock request does nothing until acquired"]
pub struct LockRequest {
    entity: Entity,
    mode: Mode,
    timeout: Option<Duration>,
}

impl LockRequest {
    /// Asks for an exclusive lock (the default).
    pub fn exclusive(self) -> Self {
        self.mode(Mode::Exclusive)
    }

    /// Asks for a shared lock.
    pub fn shared(self) -> Self {
        self.mode(Mode::Shared)
    }

    /// Asks for a lock in `mode`.
    pub fn mode(self, mode: Mode) -> Self {
        Self { mode, ..self }
    }

    /// Bounds how long [`acquire`](Self::acquire) waits, instead of the
    /// host's default lock timeout.
    ///
    /// The host counts whole milliseconds; a timeout that is not a whole
    /// number of milliseconds is rounded up, so only `Duration::ZERO` means
    /// "do not wait" (like [`try_acquire`](Self::try_acquire), but failing
    /// with [`LockError::Timeout`]).
    pub fn timeout(self, timeout: Duration) -> Self {
        Self { timeout: Some(timeout), ..self }
    }

    /// Waits until the lock is granted, up to the timeout.
    ///
    /// A job may lock the same entity more than once; each guard is released
    /// on its own.
    pub fn acquire(self) -> Result<Guard, LockError> {
        let timeout_ms = self.timeout.map(whole_millis_rounded_up);
        let guard = wit::acquire(self.entity.into(), self.mode.into(), timeout_ms)?;
        Ok(Guard(guard))
    }

    /// Takes the lock if that is possible right now, without waiting:
    /// `Ok(None)` when another holder prevents it. Ignores the timeout.
    pub fn try_acquire(self) -> Result<Option<Guard>, LockError> {
        let guard = wit::try_acquire(self.entity.into(), self.mode.into())?;
        Ok(guard.map(Guard))
    }
}

fn whole_millis_rounded_up(timeout: Duration) -> u64 {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// A granted lock. Dropping it releases the lock; so does the end of the job.
///
/// Use [`release`](Self::release) instead of dropping to learn whether the
/// lock was still held up to the release.
pub struct Guard(wit::LockGuard);

impl Guard {
    /// The entity this guard locks.
    pub fn entity(&self) -> Entity {
        self.0.entity().into()
    }

    /// The mode the lock was granted in.
    pub fn mode(&self) -> Mode {
        self.0.mode().into()
    }

    /// The fencing token of this grant: strictly greater than every token
    /// issued before it, for any entity, by any host sharing the database.
    ///
    /// Pass it along with writes to other systems, and have them refuse a
    /// write whose token is smaller than one they have already seen.
    pub fn fencing_token(&self) -> u64 {
        self.0.fencing_token()
    }

    /// Whether the lock is still held: `false` once the host knows that the
    /// database session under it is lost.
    pub fn is_held(&self) -> bool {
        self.0.is_held()
    }

    /// Releases the lock now.
    ///
    /// Fails with [`LockError::Lost`] when the session under the lock was
    /// lost before the release: the work done under it may have overlapped
    /// another holder's. The lock is not held afterwards either way.
    pub fn release(self) -> Result<(), LockError> {
        Ok(wit::LockGuard::release(self.0)?)
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("entity", &self.entity())
            .field("mode", &self.mode())
            .field("fencing_token", &self.fencing_token())
            .finish()
    }
}

/// Runs `f` under a lock on `entity` in `mode`, then releases the lock.
///
/// Waits for the lock up to the host's default timeout. Returns what `f`
/// returned, or:
/// - the error of the acquire, in which case `f` did not run;
/// - [`LockError::Lost`] when the lock turned out to be lost by the time it
///   was released: `f` ran, but may have overlapped another holder, so its
///   result is dropped.
///
/// Any other release failure is logged as a warning and `f`'s result is
/// returned: the lock was held for the whole of `f`, and the host ends it
/// with the job in any case.
pub fn with_lock<T>(entity: impl Into<Entity>, mode: Mode, f: impl FnOnce(&Guard) -> T) -> Result<T, LockError> {
    let entity = entity.into();
    let guard = lock(entity).mode(mode).acquire()?;
    let value = f(&guard);
    match guard.release() {
        Err(LockError::Lost) => Err(LockError::Lost),
        Err(error) => {
            log::warn(&format!("releasing the lock on {entity} failed: {error}"));
            Ok(value)
        }
        Ok(()) => Ok(value),
    }
}

/// Why a lock operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockError {
    /// The lock was not granted within the timeout. It is not held.
    Timeout,
    /// The database found that this wait closed a cycle of waiters and
    /// aborted it. The lock is not held; locks already held stay held.
    /// Release something and retry, or give up.
    Deadlock,
    /// The database session holding this job's locks was lost: every lock of
    /// the job is gone and another job may already hold them. Stop the work
    /// that relied on them.
    Lost,
    /// The request is invalid (for example an entity the host refuses).
    /// Retrying the same request fails again.
    InvalidInput(String),
    /// A host limit would be exceeded (locks held by one job). Release some
    /// locks first.
    LimitExceeded(String),
    /// The lock service is unavailable; retrying later may succeed.
    Unavailable(String),
}

impl From<wit::LockError> for LockError {
    fn from(error: wit::LockError) -> Self {
        match error {
            wit::LockError::Timeout => Self::Timeout,
            wit::LockError::Deadlock => Self::Deadlock,
            wit::LockError::Lost => Self::Lost,
            wit::LockError::InvalidInput(message) => Self::InvalidInput(message),
            wit::LockError::LimitExceeded(message) => Self::LimitExceeded(message),
            wit::LockError::Unavailable(message) => Self::Unavailable(message),
        }
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("lock not granted within the timeout"),
            Self::Deadlock => f.write_str("lock wait aborted: deadlock"),
            Self::Lost => f.write_str("lock lost: the session holding it was lost"),
            Self::InvalidInput(message) => write!(f, "invalid lock request: {message}"),
            Self::LimitExceeded(message) => write!(f, "lock limit exceeded: {message}"),
            Self::Unavailable(message) => write!(f, "lock service unavailable: {message}"),
        }
    }
}

impl Error for LockError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_millis() {
        assert_eq!(whole_millis_rounded_up(Duration::ZERO), 0);
        assert_eq!(whole_millis_rounded_up(Duration::from_nanos(1)), 1);
        assert_eq!(whole_millis_rounded_up(Duration::from_millis(250)), 250);
        assert_eq!(whole_millis_rounded_up(Duration::from_micros(250_001)), 251);
        assert_eq!(whole_millis_rounded_up(Duration::MAX), u64::MAX);
    }
}
