//! Creates and upgrades pinlock's schema. Runs inside one transaction under a
//! transaction-level advisory lock, so hosts starting together against an
//! empty database take turns instead of colliding.

use tokio_postgres::Client;

use super::{DbError, sql};

/// Brings the schema to the newest version. Safe to run from many hosts at once.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), DbError> {
    let tx = client.transaction().await.map_err(DbError::query("starting the migration"))?;
    tx.execute(sql::MIGRATION_LOCK, &[]).await.map_err(DbError::query("taking the migration lock"))?;
    tx.batch_execute(sql::CREATE_SCHEMA).await.map_err(DbError::query("creating the pinlock schema"))?;
    let current: i32 = tx
        .query_one(sql::SCHEMA_VERSION, &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(DbError::query("reading the schema version"))?;
    for (index, migration) in sql::MIGRATIONS.iter().enumerate() {
        let version = index as i32 + 1;
        if version <= current {
            continue;
        }
        tx.batch_execute(migration).await.map_err(DbError::query("applying a migration"))?;
        tx.execute(sql::RECORD_VERSION, &[&version]).await.map_err(DbError::query("recording the schema version"))?;
        tracing::info!(version, "applied schema migration");
    }
    tx.commit().await.map_err(DbError::query("committing the migration"))
}

/// The schema version this build migrates to.
pub fn schema_version() -> i32 {
    sql::MIGRATIONS.len() as i32
}
