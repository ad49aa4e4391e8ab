//! `pinlock:host/distributed-lock`: entities in, [`crate::db::JobSession`]
//! grants out as `lock-guard` resources. A guard's drop hook releases it; the
//! job's end releases whatever drop hooks never got to (a trapped guest runs
//! none).

use std::time::Duration;

use tracing::Instrument;
use uuid::Uuid;
use wasmtime::component::Resource;

use super::PinlockView;
use super::bindings::pinlock::host::distributed_lock::{Entity, Host, HostLockGuard, LockError, LockMode};
use crate::db;

/// The host side of a `lock-guard` resource.
pub struct GuardHandle {
    grant: db::Grant,
}

fn entity_to_uuid(entity: Entity) -> Uuid {
    Uuid::from_u64_pair(entity.high, entity.low)
}

fn uuid_to_entity(uuid: Uuid) -> Entity {
    let (high, low) = uuid.as_u64_pair();
    Entity { high, low }
}

fn mode_from_wit(mode: LockMode) -> db::LockMode {
    match mode {
        LockMode::Exclusive => db::LockMode::Exclusive,
        LockMode::Shared => db::LockMode::Shared,
    }
}

fn mode_to_wit(mode: db::LockMode) -> LockMode {
    match mode {
        db::LockMode::Exclusive => LockMode::Exclusive,
        db::LockMode::Shared => LockMode::Shared,
    }
}

/// What a lock import fails with: a `lock-error` for the guest, or (for a
/// host bug only) a trap.
pub type LockFailure = wasmtime_wasi::TrappableError<LockError>;

/// Every lock failure is reported to the guest as a value; none traps.
impl From<db::LockError> for LockFailure {
    fn from(err: db::LockError) -> Self {
        LockFailure::from(match err {
            db::LockError::Timeout => LockError::Timeout,
            db::LockError::Deadlock => LockError::Deadlock,
            db::LockError::Lost => LockError::Lost,
            db::LockError::InvalidInput(m) => LockError::InvalidInput(m),
            db::LockError::LimitExceeded(m) => LockError::LimitExceeded(m),
            db::LockError::Unavailable(m) => LockError::Unavailable(m),
        })
    }
}

impl PinlockView<'_> {
    /// Hands a grant to the guest as a guard. A full resource table is the
    /// guest's doing (too many open handles): give the lock back and say so.
    async fn guard(&mut self, grant: db::Grant) -> Result<Resource<GuardHandle>, LockFailure> {
        match self.table.push(GuardHandle { grant }) {
            Ok(guard) => Ok(guard),
            Err(_) => {
                let _ = self.db.release(grant.id).await;
                Err(LockError::LimitExceeded("too many open handles in this job".into()).into())
            }
        }
    }
}

impl Host for PinlockView<'_> {
    async fn acquire(
        &mut self,
        entity: Entity,
        mode: LockMode,
        timeout_ms: Option<u64>,
    ) -> Result<Resource<GuardHandle>, LockFailure> {
        let entity = entity_to_uuid(entity);
        let span = tracing::debug_span!("acquire", job = self.db.job_id(), %entity, ?mode);
        let timeout = timeout_ms.map(Duration::from_millis);
        let grant = self.db.acquire(entity, mode_from_wit(mode), timeout).instrument(span).await?;
        self.guard(grant).await
    }

    async fn try_acquire(
        &mut self,
        entity: Entity,
        mode: LockMode,
    ) -> Result<Option<Resource<GuardHandle>>, LockFailure> {
        let entity = entity_to_uuid(entity);
        let span = tracing::debug_span!("try_acquire", job = self.db.job_id(), %entity, ?mode);
        match self.db.try_acquire(entity, mode_from_wit(mode)).instrument(span).await? {
            Some(grant) => self.guard(grant).await.map(Some),
            None => Ok(None),
        }
    }

    fn convert_lock_error(&mut self, err: LockFailure) -> wasmtime::Result<LockError> {
        err.downcast()
    }
}

impl HostLockGuard for PinlockView<'_> {
    async fn entity(&mut self, guard: Resource<GuardHandle>) -> wasmtime::Result<Entity> {
        Ok(uuid_to_entity(self.table.get(&guard)?.grant.entity))
    }

    async fn mode(&mut self, guard: Resource<GuardHandle>) -> wasmtime::Result<LockMode> {
        Ok(mode_to_wit(self.table.get(&guard)?.grant.mode))
    }

    async fn fencing_token(&mut self, guard: Resource<GuardHandle>) -> wasmtime::Result<u64> {
        // Tokens are off only for a component that does not import this
        // function (see `Worker::reads_fences`), so this cannot be reached
        // without one.
        self.table.get(&guard)?.grant.fence.ok_or_else(|| wasmtime::format_err!("this job draws no fencing tokens"))
    }

    async fn is_held(&mut self, guard: Resource<GuardHandle>) -> wasmtime::Result<bool> {
        let id = self.table.get(&guard)?.grant.id;
        Ok(self.db.is_held(id).await)
    }

    async fn release(&mut self, guard: Resource<GuardHandle>) -> Result<(), LockFailure> {
        let grant = self.table.delete(guard).map_err(LockFailure::trap)?.grant;
        let span = tracing::debug_span!("release", job = self.db.job_id(), entity = %grant.entity);
        Ok(self.db.release(grant.id).instrument(span).await?)
    }

    async fn drop(&mut self, guard: Resource<GuardHandle>) -> wasmtime::Result<()> {
        let grant = self.table.delete(guard)?.grant;
        let span = tracing::debug_span!("drop", job = self.db.job_id(), entity = %grant.entity);
        if let Err(err) = self.db.release(grant.id).instrument(span).await {
            // A drop cannot report; the guest learns of loss through is-held.
            tracing::debug!(job = self.db.job_id(), %err, "release on drop failed");
        }
        Ok(())
    }
}
