//! Distributed locks on entities: requests, guards and lock errors.
//!
//! The host holds every lock of a job on one database session (which may
//! carry other jobs' locks too; the host keeps them apart), and releases
//! whatever the job still holds when it ends, however it ends.

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
/// Run work under the lock with [`run`](LockRequest::run) (acquire, run,
/// release), or take a [`Guard`] with [`acquire`](LockRequest::acquire) or
/// [`try_acquire`](LockRequest::try_acquire):
///
/// ```no_run
/// use std::time::Duration;
/// use pinlock_guest::{BoxError, Uuid, kv::Bucket, lock};
///
/// fn reserve(product: Uuid) -> Result<u64, BoxError> {
///     lock(product).timeout(Duration::from_secs(2)).run(|_guard| {
///         let stock = Bucket::open("inventory")?;
///         let left = stock.get_json::<u64>(&product.to_string())?.unwrap_or(0).checked_sub(1).ok_or("sold out")?;
///         stock.set_json(&product.to_string(), &left)?;
///         Ok(left)
///     })
/// }
///
/// fn peek(product: Uuid) -> Result<Option<u64>, BoxError> {
///     let guard = lock(product).shared().acquire()?;
///     let stock = Bucket::open("inventory")?.get_json(&product.to_string())?;
///     guard.release()?;
///     Ok(stock)
/// }
/// ```
pub fn lock(entity: impl Into<Entity>) -> LockRequest {
    LockRequest { entity: entity.into(), mode: Mode::Exclusive, timeout: None }
}

/// A lock to take, built by [`lock()`]: set the mode and the timeout, then
/// [`run`](Self::run) work under it, or [`acquire`](Self::acquire) or
/// [`try_acquire`](Self::try_acquire) a [`Guard`]. A request is `Copy`:
/// keep it to take the same lock again (after a `deadlock`, say).
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

    /// Asks for a shared lock: any number of shared holders at once, and no
    /// exclusive holder while any is held. For readers:
    ///
    /// ```no_run
    /// use pinlock_guest::{BoxError, Uuid, kv::Bucket, lock};
    ///
    /// fn read(doc: Uuid) -> Result<Option<String>, BoxError> {
    ///     lock(doc).shared().run(|_| Ok(Bucket::open("docs")?.get_string(&doc.to_string())?))
    /// }
    /// ```
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

    /// Runs `f` under the lock: waits for it (up to the timeout), runs `f`
    /// with the guard, releases the lock, and returns what `f` returned.
    ///
    /// `f` returns `Result<T, E>` for any error type `E` that a
    /// [`LockError`] converts into ([`BoxError`](crate::BoxError), or your
    /// own), so one `?` handles both the lock's errors and the work's:
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use pinlock_guest::{BoxError, Entity, kv::Bucket, lock};
    ///
    /// fn bump(name: &str) -> Result<u64, BoxError> {
    ///     lock(Entity::named(name)).timeout(Duration::from_secs(5)).run(|guard| {
    ///         let counters = Bucket::open("counters")?;
    ///         let next = counters.get_json::<u64>(name)?.unwrap_or(0) + 1;
    ///         counters.set_json(name, &next)?;
    ///         pinlock_guest::info!("{name} = {next} (fencing token {})", guard.fencing_token());
    ///         Ok(next)
    ///     })
    /// }
    /// ```
    ///
    /// Returns:
    /// - the acquire's error (as `E`) when the lock was not granted; `f` did
    ///   not run;
    /// - [`LockError::Lost`] (as `E`) when the release reports that the lock
    ///   was lost, whatever `f` returned: `f` may have overlapped another
    ///   holder, so its result is dropped (with the host's fail-closed
    ///   guarantee, no key-value write `f` made after the loss committed).
    ///   Start over if the work must be done: lock again, re-read;
    /// - otherwise what `f` returned. Any other release failure is logged as a
    ///   warning: the lock was held for the whole of `f`, and the host ends
    ///   it with the job in any case.
    pub fn run<T, E, F>(self, f: F) -> Result<T, E>
    where
        E: From<LockError>,
        F: FnOnce(&Guard) -> Result<T, E>,
    {
        let guard = self.acquire()?;
        let result = f(&guard);
        match guard.release() {
            Ok(()) => result,
            Err(LockError::Lost) => Err(LockError::Lost.into()),
            Err(error) => {
                log::warn(&format!("releasing the lock on {} failed: {error}", self.entity));
                result
            }
        }
    }

    /// Waits until the lock is granted, up to the timeout, and returns its
    /// guard; dropping the guard (or [`Guard::release`]) releases the lock.
    ///
    /// A job may lock the same entity more than once; each guard is released
    /// on its own.
    ///
    /// ```no_run
    /// # fn job(a: pinlock_guest::Uuid, b: pinlock_guest::Uuid) -> Result<(), pinlock_guest::LockError> {
    /// use pinlock_guest::lock;
    ///
    /// // Two locks at once: always take them in one order (here: by UUID),
    /// // or two jobs taking them in opposite orders deadlock.
    /// let (first, second) = if a < b { (a, b) } else { (b, a) };
    /// let first = lock(first).acquire()?;
    /// let second = lock(second).acquire()?;
    /// // ... work on both ...
    /// second.release()?;
    /// first.release()
    /// # }
    /// ```
    pub fn acquire(self) -> Result<Guard, LockError> {
        let timeout_ms = self.timeout.map(whole_millis_rounded_up);
        let guard = wit::acquire(self.entity.into(), self.mode.into(), timeout_ms)?;
        Ok(Guard(guard))
    }

    /// Takes the lock if that is possible right now, without waiting:
    /// `Ok(None)` when another holder prevents it. Ignores the timeout.
    ///
    /// For work that one job should do and the others skip:
    ///
    /// ```no_run
    /// # fn job() -> Result<&'static str, pinlock_guest::BoxError> {
    /// use pinlock_guest::{Entity, lock};
    ///
    /// let Some(guard) = lock(Entity::named("nightly:2024-05-01")).try_acquire()? else {
    ///     return Ok("skipped: another job is on it");
    /// };
    /// // ... the nightly work ...
    /// guard.release()?;
    /// Ok("done")
    /// # }
    /// ```
    ///
    /// Fails with [`LockError::Unavailable`] (not `Ok(None)`) when the host
    /// has no database session free to ask: that says nothing about the lock.
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
/// lock was still held up to the release, and pass
/// [`fencing_token`](Self::fencing_token) to the systems you write to.
///
/// ```no_run
/// # fn job(account: pinlock_guest::Uuid) -> Result<(), pinlock_guest::BoxError> {
/// let guard = pinlock_guest::lock(account).acquire()?;
/// let token = guard.fencing_token(); // send it with every write downstream
/// // ... long work ...
/// guard.ensure_held()?; // stop early if the lock is known to be lost
/// // ... write, carrying `token` ...
/// guard.release()?; // Err(Lost): the work may have overlapped another holder
/// # let _ = token; Ok(()) }
/// ```
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
    /// database session under it is lost. Answered from the host's memory,
    /// without a round trip to the database, so it is cheap to ask often.
    pub fn is_held(&self) -> bool {
        self.0.is_held()
    }

    /// `Err(LockError::Lost)` when the lock is known to be lost, else
    /// `Ok(())`: a checkpoint for long work under a lock.
    ///
    /// ```no_run
    /// # fn job(batch: pinlock_guest::Uuid, items: Vec<u32>) -> Result<(), pinlock_guest::BoxError> {
    /// pinlock_guest::lock(batch).run(|guard| {
    ///     for _item in items {
    ///         guard.ensure_held()?; // do not start another item without the lock
    ///         // ... process the item ...
    ///     }
    ///     Ok(())
    /// })
    /// # }
    /// ```
    ///
    /// `Ok` does not prove that the lock is held at the database right now:
    /// the host learns of a lost session within seconds, not at once. What
    /// protects the data is the host's fail-closed fence (key-value calls
    /// after a loss answer [`KvError::Lost`](crate::kv::KvError::Lost) and
    /// never reach the database) and downstream systems checking the
    /// fencing token.
    pub fn ensure_held(&self) -> Result<(), LockError> {
        if self.is_held() { Ok(()) } else { Err(LockError::Lost) }
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

/// Runs `f` under a lock on `entity` in `mode`, then releases the lock:
/// `lock(entity).mode(mode).run(f)` (see [`LockRequest::run`] for what it
/// returns, and [`lock()`] for a timeout).
///
/// ```no_run
/// use pinlock_guest::{BoxError, Entity, Mode, kv::Bucket, with_lock};
///
/// fn runs() -> Result<u64, BoxError> {
///     with_lock(Entity::named("nightly-report"), Mode::Exclusive, |_guard| {
///         let reports = Bucket::open("reports")?;
///         let runs = reports.get_json::<u64>("runs")?.unwrap_or(0) + 1;
///         reports.set_json("runs", &runs)?;
///         Ok(runs)
///     })
/// }
/// ```
pub fn with_lock<T, E>(entity: impl Into<Entity>, mode: Mode, f: impl FnOnce(&Guard) -> Result<T, E>) -> Result<T, E>
where
    E: From<LockError>,
{
    lock(entity).mode(mode).run(f)
}

/// Why a lock operation failed.
///
/// Branch on it where the answer changes what the job does; elsewhere pass
/// it on with `?`:
///
/// ```no_run
/// use std::time::Duration;
/// use pinlock_guest::{LockError, Uuid, lock};
///
/// fn try_for_a_second(account: Uuid) -> Result<&'static str, LockError> {
///     match lock(account).timeout(Duration::from_secs(1)).acquire() {
///         Ok(_guard) => Ok("did the work"),
///         Err(LockError::Timeout) => Ok("busy, will retry later"),
///         Err(other) => Err(other),
///     }
/// }
/// ```
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
