//! `wasi:distributed-lock/locker@0.1.0` (draft): `acquire(key, ttl)` takes
//! an exclusive pinlock lock on the entity named `key` (UUIDv5 of the key in
//! [`PINLOCK_NAMESPACE`], the entity the SDK's `Entity::named(key)` locks),
//! without waiting, as a lease the host ends after `ttl` milliseconds (see
//! [`super::wasi_lock_types`]).

use std::time::Duration;

use tracing::Instrument;
use uuid::Uuid;
use wasmtime::component::Resource;

use super::PinlockView;
use super::standard::wasi::distributed_lock::locker::Host;
use super::standard::wasi::distributed_lock::types::Error;
use super::wasi_lock_types::{LeaseFailure, LeaseHandle, lease_error};
use crate::db::{self, LockMode};

/// The namespace of named entities, `593f8505-bf80-559e-bbe4-abb9a734db20`:
/// UUIDv5 of `urn:pinlock:entity` in the URL namespace. The SDK's
/// `PINLOCK_NAMESPACE` is the same value (a test checks).
pub const PINLOCK_NAMESPACE: Uuid = Uuid::from_u128(0x593f8505_bf80_559e_bbe4_abb9a734db20);

/// The entity a draft lock on `key` takes.
pub fn named_entity(key: &str) -> Uuid {
    Uuid::new_v5(&PINLOCK_NAMESPACE, key.as_bytes())
}

impl Host for PinlockView<'_> {
    async fn acquire(&mut self, key: String, ttl: u32) -> Result<Resource<LeaseHandle>, LeaseFailure> {
        if key.is_empty() {
            return Err(Error::Unknown("invalid-input: the key is empty".into()).into());
        }
        if ttl == 0 {
            return Err(Error::Unknown("invalid-input: a lease lasts at least 1 ms".into()).into());
        }
        let entity = named_entity(&key);
        let span = tracing::debug_span!("acquire_lease", job = self.db.job_id(), %entity, ttl);
        let grant = match self.db.try_acquire(entity, LockMode::Exclusive).instrument(span).await {
            Ok(Some(grant)) => grant,
            Ok(None) => return Err(Error::NotAcquired(format!("{key:?} is held by another holder")).into()),
            Err(err) => return Err(lease_error(err).into()),
        };
        let lease = LeaseHandle::start(self.db, grant.id, entity, Duration::from_millis(ttl.into()));
        match self.table.push(lease) {
            Ok(lease) => Ok(lease),
            Err(_) => {
                let _ = self.db.release(grant.id).await;
                Err(lease_error(db::LockError::LimitExceeded("too many open handles in this job".into())).into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_is_the_sdks() {
        assert_eq!(PINLOCK_NAMESPACE, Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:pinlock:entity"));
        assert_eq!(PINLOCK_NAMESPACE, pinlock_guest::PINLOCK_NAMESPACE);
        assert_eq!(named_entity("nightly"), pinlock_guest::Entity::named("nightly").uuid());
    }
}
