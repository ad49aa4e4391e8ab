//! Entities: the UUIDs that locks are taken on.

use std::fmt;

use uuid::Uuid;

use crate::bindings::pinlock::host::distributed_lock as wit;

/// The namespace of [`Entity::named`]: `593f8505-bf80-559e-bbe4-abb9a734db20`.
///
/// It is UUIDv5 of the name `urn:pinlock:entity` in the URL namespace, and is
/// fixed for good: every pinlock guest derives the same entity from the same
/// name, so changing it would silently move every named lock.
pub const PINLOCK_NAMESPACE: Uuid = Uuid::from_u128(0x593f8505_bf80_559e_bbe4_abb9a734db20);

/// The thing a lock is taken on, identified by a UUID.
///
/// Locks on the same entity exclude each other across every job of every host
/// sharing the database. Use the UUID of the record the work is about
/// (`Entity::from(order_id)`), or [`Entity::named`] for a lock that is about a
/// name rather than a record (a nightly job, a singleton task).
///
/// ```
/// use pinlock_guest::{Entity, Uuid};
///
/// // The record the work is about:
/// let order = Uuid::parse_str("5b6f0c1e-8f3a-4d7e-9c2b-1a2b3c4d5e6f").unwrap();
/// let entity = Entity::from(order);
/// assert_eq!(entity.to_string(), "5b6f0c1e-8f3a-4d7e-9c2b-1a2b3c4d5e6f");
///
/// // A name: the same entity in every job on every host.
/// assert_eq!(Entity::named("nightly:2024-05-01"), Entity::named("nightly:2024-05-01"));
/// ```
///
/// [`lock()`](crate::lock()) and [`with_lock`](crate::with_lock) take
/// anything that converts into an entity, so a `Uuid` can be passed as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entity(Uuid);

impl Entity {
    /// The entity named `name`: UUIDv5 of `name` in [`PINLOCK_NAMESPACE`].
    ///
    /// The same name always gives the same entity, in every job and on every
    /// host. Put what makes the work unique in the name:
    ///
    /// ```
    /// use pinlock_guest::Entity;
    ///
    /// let today = Entity::named("nightly-report:2024-05-01");
    /// assert_ne!(today, Entity::named("nightly-report:2024-05-02"));
    /// assert_eq!(today.uuid().get_version_num(), 5);
    /// ```
    pub fn named(name: &str) -> Self {
        Self(Uuid::new_v5(&PINLOCK_NAMESPACE, name.as_bytes()))
    }

    /// The UUID of this entity.
    pub const fn uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for Entity {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl From<Entity> for Uuid {
    fn from(entity: Entity) -> Self {
        entity.0
    }
}

/// Formats the UUID, hyphenated and lowercase.
impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The WIT record holds the UUID's big-endian halves: `high` is bytes 0..8.
impl From<Entity> for wit::Entity {
    fn from(entity: Entity) -> Self {
        let (high, low) = entity.0.as_u64_pair();
        Self { high, low }
    }
}

impl From<wit::Entity> for Entity {
    fn from(entity: wit::Entity) -> Self {
        Self(Uuid::from_u64_pair(entity.high, entity.low))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_the_documented_derivation() {
        assert_eq!(PINLOCK_NAMESPACE, Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:pinlock:entity"));
    }

    #[test]
    fn wit_halves_are_big_endian() {
        let uuid = Uuid::from_bytes(core::array::from_fn(|i| i as u8));
        let wit = wit::Entity::from(Entity::from(uuid));
        assert_eq!(wit.high, 0x0001_0203_0405_0607);
        assert_eq!(wit.low, 0x0809_0a0b_0c0d_0e0f);
        assert_eq!(Entity::from(wit).uuid(), uuid);
    }

    #[test]
    fn named_entities_are_stable_v5_uuids() {
        let entity = Entity::named("nightly-report");
        assert_eq!(entity, Entity::named("nightly-report"));
        assert_ne!(entity, Entity::named("nightly-report2"));
        assert_eq!(entity.uuid().get_version_num(), 5);
    }
}
