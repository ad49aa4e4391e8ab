//! The key-value table (`pinlock.kv`): get / set / delete / exists,
//! increment, compare-and-swap, batches and key listing on a named bucket,
//! through the job's pinned session, the one that holds its locks. Each call
//! is one statement, atomic on its own; locks are what make a
//! read-modify-write of several calls safe, and the fence of
//! [`super::job_session`] is what keeps a job that lost its locks from
//! writing.

use std::collections::HashMap;

use super::error::{code_of, describe};
use super::pool::Checkout;
use super::{JobSession, KvError, LockError, Session};

/// Longest bucket name, in bytes.
pub const MAX_BUCKET_LEN: usize = 128;
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 1 << 20;
/// Most keys (or pairs) in one batch call.
pub const MAX_BATCH: usize = 1000;
/// Most value bytes in one `set-many`.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most keys in one page of [`JobSession::kv_list_keys`].
pub const LIST_PAGE: usize = 1000;

/// One page of a bucket's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys in ascending order.
    pub keys: Vec<String>,
    /// The key the next page starts after, or `None` when this is the last.
    pub cursor: Option<String>,
}

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

/// Checks a bucket name and a key.
fn validate(bucket: &str, key: &str) -> Result<(), KvError> {
    validate_bucket(bucket)?;
    validate_key(key)
}

/// Checks a key: 1 to [`MAX_KEY_LEN`] bytes, no NUL.
fn validate_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.contains('\0') {
        return Err(KvError::InvalidInput(format!(
            "keys are 1 to {MAX_KEY_LEN} bytes without NUL, got {} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value: at most [`MAX_VALUE_LEN`] bytes.
fn validate_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(KvError::InvalidInput(format!("values are at most {MAX_VALUE_LEN} bytes, got {}", value.len())));
    }
    Ok(())
}

/// Checks a bucket name and the keys of a batch (at most [`MAX_BATCH`]).
fn validate_batch<'a>(bucket: &str, keys: impl ExactSizeIterator<Item = &'a str>) -> Result<(), KvError> {
    validate_bucket(bucket)?;
    if keys.len() > MAX_BATCH {
        return Err(KvError::InvalidInput(format!("a batch has at most {MAX_BATCH} keys, got {}", keys.len())));
    }
    keys.into_iter().try_for_each(validate_key)
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
        validate_value(value)?;
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

    /// Adds `delta` to the decimal integer under `key` (missing: 0) and
    /// returns the sum, atomically. `InvalidInput` when the value there is
    /// not such an integer or the sum overflows; nothing changes then.
    pub async fn kv_increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        validate(bucket, key)?;
        let sum = self
            .kv_call(async |session| {
                session.query_one(&session.stmts.kv_increment, &[&bucket, &key, &delta]).await?.try_get(0)
            })
            .await;
        sum.map_err(|e| match e {
            KvError::InvalidInput(why) => {
                KvError::InvalidInput(format!("cannot add {delta} to the value under {key:?}: {why}"))
            }
            other => other,
        })
    }

    /// Stores `value` under `key` only if the value there is `expected`
    /// now (`None`: only if there is none), atomically. Returns whether it
    /// stored.
    pub async fn kv_compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, KvError> {
        validate(bucket, key)?;
        validate_value(value)?;
        let rows = self
            .kv_call(async |session| match expected {
                None => session.execute(&session.stmts.kv_insert_new, &[&bucket, &key, &value]).await,
                Some(expected) => session.execute(&session.stmts.kv_swap, &[&bucket, &key, &expected, &value]).await,
            })
            .await?;
        Ok(rows == 1)
    }

    /// The values under `keys`, in the same order (`None` for a missing
    /// one); at most [`MAX_BATCH`] keys.
    pub async fn kv_get_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        validate_batch(bucket, keys.iter().map(String::as_str))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.kv_call(async |session| session.query_one(&session.stmts.kv_get_many, &[&bucket, &keys]).await?.try_get(0))
            .await
    }

    /// Stores every pair in one statement (all or none); a key given twice
    /// keeps its last value. At most [`MAX_BATCH`] pairs and
    /// [`MAX_BATCH_BYTES`] of values.
    pub async fn kv_set_many(&self, bucket: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        validate_batch(bucket, entries.iter().map(|(key, _)| key.as_str()))?;
        let mut total = 0usize;
        for (_, value) in entries {
            validate_value(value)?;
            total += value.len();
        }
        if total > MAX_BATCH_BYTES {
            return Err(KvError::InvalidInput(format!(
                "a batch holds at most {MAX_BATCH_BYTES} bytes of values, got {total}"
            )));
        }
        // One row per key, the last value winning (an upsert cannot touch a
        // row twice in one statement).
        let last: HashMap<&str, usize> = entries.iter().enumerate().map(|(i, (key, _))| (key.as_str(), i)).collect();
        let (keys, values): (Vec<&str>, Vec<&[u8]>) = entries
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| last[key.as_str()] == *i)
            .map(|(_, (key, value))| (key.as_str(), value.as_slice()))
            .unzip();
        if keys.is_empty() {
            return Ok(());
        }
        self.kv_call(async |session| {
            session.execute(&session.stmts.kv_set_many, &[&bucket, &keys, &values]).await.map(drop)
        })
        .await
    }

    /// Removes every key in `keys` in one statement; at most [`MAX_BATCH`].
    pub async fn kv_delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), KvError> {
        validate_batch(bucket, keys.iter().map(String::as_str))?;
        if keys.is_empty() {
            return Ok(());
        }
        self.kv_call(async |session| session.execute(&session.stmts.kv_delete_many, &[&bucket, &keys]).await.map(drop))
            .await
    }

    /// Up to [`LIST_PAGE`] keys of `bucket` in ascending order, after
    /// `cursor` (the last key of the page before; `None`: from the first).
    pub async fn kv_list_keys(&self, bucket: &str, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        validate_bucket(bucket)?;
        let after = cursor.unwrap_or("");
        if after.len() > MAX_KEY_LEN {
            return Err(KvError::InvalidInput(format!("a cursor is at most {MAX_KEY_LEN} bytes")));
        }
        // One more than a page: whether there is a next page.
        let limit = LIST_PAGE as i64 + 1;
        let mut keys: Vec<String> = self
            .kv_call(async |session| {
                session.query_one(&session.stmts.kv_list_keys, &[&bucket, &after, &limit]).await?.try_get(0)
            })
            .await?;
        let cursor = if keys.len() > LIST_PAGE {
            keys.truncate(LIST_PAGE);
            keys.last().cloned()
        } else {
            None
        };
        Ok(KeyPage { keys, cursor })
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
            // The data was refused (not an integer, out of range): the
            // guest's doing; the session is fine.
            Err(e) if code_of(&e).is_some_and(|code| code.starts_with("22")) => {
                Err(KvError::InvalidInput(describe(&e)))
            }
            Err(e) => Err(match state.record_failure(&e) {
                // The session died under the call (with or without locks):
                // nothing more was written on it.
                err @ (LockError::Lost | LockError::Unavailable(_)) if !state.session_alive() => kv_error(err),
                _ => KvError::Other(describe(&e)),
            }),
        }
    }
}
