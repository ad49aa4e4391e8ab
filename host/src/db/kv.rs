//! The key-value table (`pinlock.kv`): get / set / delete / exists on a named
//! bucket, through the job's pinned session, the one that holds its locks.
//! Each call is atomic on its own; locks are what make a read-modify-write
//! safe, and the fence of [`super::job_session`] is what keeps a job that
//! lost its locks from writing.

use super::pool::Checkout;
use super::{JobSession, KvError, LockError, Session};

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

/// What the guest sees of a lock-engine answer to a key-value call.
fn kv_error(err: LockError) -> KvError {
    match err {
        LockError::Lost => KvError::Lost,
        LockError::Unavailable(message) => KvError::Unavailable(message),
        LockError::Timeout => KvError::Unavailable("no database session came free in time".into()),
        other => KvError::Other(other.to_string()),
    }
}

impl JobSession {
    /// The value under `key` in `bucket`.
    pub async fn kv_get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        validate(bucket, key)?;
        self.kv_call(async |session| {
            let row = session.query_opt(&session.stmts.kv_get, &[&bucket, &key]).await?;
            row.map(|r| r.try_get::<_, Vec<u8>>(0)).transpose()
        })
        .await
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
        self.kv_call(async |session| session.execute(&session.stmts.kv_set, &[&bucket, &key, &value]).await.map(drop))
            .await
    }

    /// Removes `key` from `bucket` (no error when it is missing).
    pub async fn kv_delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        validate(bucket, key)?;
        self.kv_call(async |session| session.execute(&session.stmts.kv_delete, &[&bucket, &key]).await.map(drop)).await
    }

    /// Whether `bucket` has a value under `key`.
    pub async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool, KvError> {
        validate(bucket, key)?;
        self.kv_call(async |session| session.query_one(&session.stmts.kv_exists, &[&bucket, &key]).await?.try_get(0))
            .await
    }

    /// Runs `call` on the job's session: the one holding its locks, so a
    /// write that commits proves they were held. Fenced (`Lost`, nothing
    /// sent) after a loss the guest has not acknowledged; waits for a
    /// session at most the host's default lock timeout (and never past the
    /// job's deadline).
    async fn kv_call<T>(
        &self,
        call: impl AsyncFnOnce(&Session) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, KvError> {
        let deadline = self.bounded(tokio::time::Instant::now() + self.db.settings.default_lock_timeout);
        let mut state = self.state.lock().await;
        let session = state.session(&self.db, Checkout::Until(deadline)).await.map_err(kv_error)?;
        match call(session).await {
            Ok(value) => Ok(value),
            Err(e) => Err(match state.classify_failure(&e) {
                // The session died under the call (with or without locks):
                // nothing more was written on it.
                err @ (LockError::Lost | LockError::Unavailable(_)) if !state.session_alive() => kv_error(err),
                _ => KvError::Other(super::error::describe(&e)),
            }),
        }
    }
}
