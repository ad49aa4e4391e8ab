//! `wasi:distributed-lock/types@0.1.0` (draft): the `lock` resource, a lease
//! on an exclusive pinlock grant that the host ends itself when its time to
//! live runs out. The grant comes from `wasi:distributed-lock/locker`
//! ([`super::wasi_locker`]).
//!
//! Who ends a lease is decided once, by whoever first moves its state away
//! from `HELD`: the guest (`release`, or dropping the handle), the expiry
//! task (when the TTL runs out), or the job's end. Only the winner releases
//! the grant, so it is released at most once, and the guest is told which
//! way its lease ended: `lease-expired` after the host ended it,
//! `already-released` on a second release.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tracing::Instrument;
use uuid::Uuid;
use wasmtime::component::Resource;

use super::PinlockView;
use super::standard::wasi::distributed_lock::types::{Error, Host, HostLock};
use crate::db::{GrantId, JobSession, LockError};

/// What a draft-lock import fails with: an `error` for the guest, or (for a
/// host bug only) a trap.
pub type LeaseFailure = wasmtime_wasi::TrappableError<Error>;

const HELD: u8 = 0;
const RELEASED: u8 = 1;
const EXPIRED: u8 = 2;

/// Who ended a lease, decided once (see the module docs).
#[derive(Default)]
pub(super) struct LeaseState(AtomicU8);

impl LeaseState {
    /// Ends the lease as `how` if it is still held; whether this call did.
    fn end(&self, how: u8) -> bool {
        self.0.compare_exchange(HELD, how, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// The host side of a draft `lock` resource.
pub struct LeaseHandle {
    grant: GrantId,
    entity: Uuid,
    ttl: Duration,
    state: Arc<LeaseState>,
    expiry: tokio::task::AbortHandle,
}

impl LeaseHandle {
    /// A lease on `grant` that the host ends after `ttl`, on a task of its own.
    pub(super) fn start(db: &Arc<JobSession>, grant: GrantId, entity: Uuid, ttl: Duration) -> Self {
        let state = Arc::new(LeaseState::default());
        let expiry = tokio::spawn(expire(db.clone(), grant, entity, ttl, state.clone())).abort_handle();
        Self { grant, entity, ttl, state, expiry }
    }

    /// Ends the lease as the guest's (released); whether it was still held.
    fn claim(&self) -> bool {
        let claimed = self.state.end(RELEASED);
        if claimed {
            self.expiry.abort();
        }
        claimed
    }
}

impl Drop for LeaseHandle {
    /// A handle dropped with its store (the job ended): the job's end
    /// releases the grant; only the expiry task is stopped here.
    fn drop(&mut self) {
        self.claim();
    }
}

/// Ends the lease after `ttl` unless someone else ended it first. A grant
/// whose session was lost is left alone: its release is the guest's
/// acknowledgement of the loss, and answers `lease-expired` then.
async fn expire(db: Arc<JobSession>, grant: GrantId, entity: Uuid, ttl: Duration, state: Arc<LeaseState>) {
    tokio::time::sleep(ttl).await;
    if !db.is_held(grant).await || !state.end(EXPIRED) {
        return;
    }
    let span = tracing::debug_span!("lease_expired", job = db.job_id(), %entity, ?ttl);
    if let Err(err) = db.release(grant).instrument(span).await {
        tracing::debug!(job = db.job_id(), %entity, %err, "releasing an expired lease failed; the job's end will");
    }
}

/// Why a lease could not be released, as the draft's error.
pub(super) fn lease_error(err: LockError) -> Error {
    match err {
        LockError::Lost => Error::LeaseExpired(
            "lost: the session holding the lock was lost, so another holder may have had it; \
             this release acknowledges the loss"
                .into(),
        ),
        LockError::Timeout | LockError::Deadlock => Error::NotAcquired(err.to_string()),
        LockError::InvalidInput(m) => Error::Unknown(format!("invalid-input: {m}")),
        LockError::LimitExceeded(m) => Error::Unknown(format!("limit-exceeded: {m}")),
        LockError::Unavailable(m) => Error::Unknown(format!("unavailable: {m}")),
    }
}

impl Host for PinlockView<'_> {
    fn convert_error(&mut self, err: LeaseFailure) -> wasmtime::Result<Error> {
        err.downcast()
    }
}

impl HostLock for PinlockView<'_> {
    async fn release(&mut self, lease: Resource<LeaseHandle>) -> Result<(), LeaseFailure> {
        let lease = self.table.get(&lease).map_err(LeaseFailure::trap)?;
        if !lease.claim() {
            return Err(match lease.state.0.load(Ordering::Acquire) {
                EXPIRED => Error::LeaseExpired(format!(
                    "the lease of {} ms ran out and the host released the lock",
                    lease.ttl.as_millis()
                )),
                _ => Error::AlreadyReleased("this lock was released before".into()),
            }
            .into());
        }
        let (grant, entity) = (lease.grant, lease.entity);
        let span = tracing::debug_span!("release_lease", job = self.db.job_id(), %entity);
        self.db.release(grant).instrument(span).await.map_err(|e| lease_error(e).into())
    }

    async fn drop(&mut self, lease: Resource<LeaseHandle>) -> wasmtime::Result<()> {
        let lease = self.table.delete(lease)?;
        if lease.claim()
            && let Err(err) = self.db.release(lease.grant).await
        {
            // A drop cannot report; the job's end releases whatever is left.
            tracing::debug!(job = self.db.job_id(), entity = %lease.entity, %err, "release on drop failed");
        }
        Ok(())
    }
}
