//! Entity UUID → advisory lock key.
//!
//! Keys live in the bigint advisory key space (`pg_advisory_lock(bigint)`).
//! Each entity gets a key from the identity column of `pinlock.entity_keys`
//! on first use, counting up from 2^48 (so never one of the small integers
//! other applications lock with `pg_advisory_lock(1)`), so keys never collide (unlike hashing 128 bits into 64) and
//! every held key can be traced back to its entity. In `pg_locks` a key shows
//! as `classid` = high 32 bits, `objid` = low 32 bits, `objsubid` = 1.
//!
//! Mappings never change once made, so this host caches them: a known entity
//! costs no round trip.

use std::collections::HashMap;
use std::sync::RwLock;

use uuid::Uuid;

use super::Session;

/// Past this many entries the cache starts over (entries are cheap to refetch).
const CACHE_LIMIT: usize = 1 << 20;

/// The in-memory map of entities this host has seen.
#[derive(Default)]
pub(crate) struct KeyCache {
    known: RwLock<HashMap<Uuid, i64>>,
}

impl KeyCache {
    /// The key of `entity`: from the cache, else read from the mapping table,
    /// else inserted into it, through `session`. Reading first matters: the
    /// upsert writes (and flushes WAL at commit) even when the row exists.
    pub(crate) async fn key_for(&self, entity: Uuid, session: &Session) -> Result<i64, tokio_postgres::Error> {
        match self.cached(entity) {
            Some(key) => Ok(key),
            // Boxed, as the rare path: it keeps each lock call's future small.
            None => Box::pin(self.look_up(entity, session)).await,
        }
    }

    /// Reads or makes the mapping of an entity the cache does not know.
    async fn look_up(&self, entity: Uuid, session: &Session) -> Result<i64, tokio_postgres::Error> {
        let key: i64 = match session.query_opt(&session.stmts.find_key, &[&entity]).await? {
            Some(row) => row.try_get(0)?,
            None => session.query_one(&session.stmts.upsert_key, &[&entity]).await?.try_get(0)?,
        };
        if let Ok(mut known) = self.known.write() {
            if known.len() >= CACHE_LIMIT {
                known.clear();
            }
            known.insert(entity, key);
        }
        Ok(key)
    }

    fn cached(&self, entity: Uuid) -> Option<i64> {
        self.known.read().ok()?.get(&entity).copied()
    }
}
