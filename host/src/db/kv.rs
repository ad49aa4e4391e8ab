//! The key-value table (`pinlock.kv`): get / set / delete / exists on a named
//! bucket, through the job's pinned session. Each call is atomic on its own;
//! locks are what make a read-modify-write safe.

use tokio::sync::MutexGuard;

use super::job_session::JobState;
use super::{JobSession, KvError, LockError};

/// Longest bucket name, in bytes.
pub const MAX_BUCKET_LEN: usize = 128;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// Checks a bucket name: 1 to [`MAX_BUCKET_LEN`] bytes, no NUL.
pub fn validate_bucket(name: &str) -> Result<(), KvError> {
    if name.is_empty() || name.len() > MAX_BUCKET_LEN || name.contains('\0') {
        return Err(KvError::NoSuchStore(format!(
            "bucket names are 1 to {MAX_BUCKET_LEN} bytes without NUL, got {} bytes",
            name.len()
        )));
    }
    Ok(())
}

/// Checks a bucket name and a key (1 to [`MAX_KEY_LEN`] bytes, no NUL).
fn validate(bucket: &str, key: &str) -> Result<(), KvError> {
    validate_bucket(bucket)?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.contains('\0') {
        return Err(KvError::InvalidInput(format!(
            "keys are 1 to {MAX_KEY_LEN} bytes without NUL, got {} bytes",
            key.len()
        )));
    }
    Ok(())
}

fn kv_failure(err: LockError) -> KvError {
    KvError::Other(err.to_string())
}

impl JobSession {
    /// The value under `key` in `bucket`.
    pub async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        validate(bucket, key)?;
        let mut state = self.kv_session().await?;
        let session = state.current().map_err(kv_failure)?;
        let result = session.query_opt(&session.stmts.kv_get, &[&bucket, &key]).await;
        match result.and_then(|row| row.map(|r| r.try_get::<_, Vec<u8>>(0)).transpose()) {
            Ok(value) => Ok(value),
            Err(e) => Err(kv_failure(state.failure(&e))),
        }
    }

    /// Stores `value` under `key` in `bucket`.
    pub async fn kv_set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        validate(bucket, key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(KvError::InvalidInput(format!(
                "values are at most {MAX_VALUE_LEN} bytes, got {}",
                value.len()
            )));
        }
        self.kv_write(|s| &s.stmts.kv_set, &[&bucket, &key, &value]).await
    }

    /// Removes `key` from `bucket` (no error when it is missing).
    pub async fn kv_delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        validate(bucket, key)?;
        self.kv_write(|s| &s.stmts.kv_delete, &[&bucket, &key]).await
    }

    /// Whether `bucket` has a value under `key`.
    pub async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool, KvError> {
        validate(bucket, key)?;
        let mut state = self.kv_session().await?;
        let session = state.current().map_err(kv_failure)?;
        let result = session.query_one(&session.stmts.kv_exists, &[&bucket, &key]).await;
        match result.and_then(|row| row.try_get::<_, bool>(0)) {
            Ok(exists) => Ok(exists),
            Err(e) => Err(kv_failure(state.failure(&e))),
        }
    }

    /// The job's state, with a session checked out.
    async fn kv_session(&self) -> Result<MutexGuard<'_, JobState>, KvError> {
        let mut state = self.state.lock().await;
        state.ensure_session(&self.db).await.map_err(kv_failure)?;
        Ok(state)
    }

    async fn kv_write(
        &self,
        statement: fn(&super::Session) -> &tokio_postgres::Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), KvError> {
        let mut state = self.kv_session().await?;
        let session = state.current().map_err(kv_failure)?;
        match session.execute(statement(session), params).await {
            Ok(_) => Ok(()),
            Err(e) => Err(kv_failure(state.failure(&e))),
        }
    }
}
