//! What is locked right now, in the whole database: advisory locks from
//! `pg_locks`, held and awaited, with their entity (through the mapping
//! table) and their holder's backend pid and `application_name`.

use uuid::Uuid;

use super::{DbConfig, DbError, sql};

/// One advisory lock held or awaited by one backend.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldLock {
    /// The entity, when the key is one of pinlock's.
    pub entity: Option<Uuid>,
    /// The advisory key (bigint space) or `classid << 32 | objid` (int4 pairs).
    pub key: i64,
    /// Whether the key is in the two-int4 key space (not pinlock's).
    pub int4_pair: bool,
    /// `ExclusiveLock` or `ShareLock`.
    pub mode: String,
    /// Held (`true`) or awaited.
    pub granted: bool,
    /// The backend holding or awaiting it.
    pub pid: i32,
    /// The holder's `application_name` (pinlock hosts name themselves).
    pub application: String,
    /// The holder's client address, when over TCP.
    pub client_addr: Option<String>,
    /// Seconds since the holder's session last changed state.
    pub state_age_secs: f64,
}

/// Lists every advisory lock in the configured database.
pub async fn list_advisory_locks(config: &DbConfig) -> Result<Vec<HeldLock>, DbError> {
    let rows = config
        .with_client(async |client| client.query(sql::LIST_LOCKS, &[]).await)
        .await?
        .map_err(DbError::query("reading pg_locks (has pinlock migrated this database?)"))?;
    rows.iter()
        .map(|row| {
            Ok(HeldLock {
                pid: row.try_get(0)?,
                application: row.try_get(1)?,
                mode: row.try_get(2)?,
                granted: row.try_get(3)?,
                key: row.try_get(4)?,
                int4_pair: row.try_get::<_, i32>(5)? == 2,
                entity: row.try_get(6)?,
                client_addr: row.try_get(7)?,
                state_age_secs: row.try_get(8)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(DbError::query("decoding pg_locks"))
}
