//! The key-value store: buckets of byte values under string keys, shared by
//! every job of every host on the same database.
//!
//! Each call is atomic on its own, but a read followed by a write is not: hold
//! an exclusive lock on the entity the keys belong to around a
//! read-modify-write (see [`LockRequest::run`](crate::LockRequest::run)).
//!
//! Calls run on the same database session as the job's locks: a write that
//! returns `Ok` committed while every lock the job held was held. Once that
//! session is lost, every call answers [`KvError::Lost`] without reaching
//! the database, until the job has released or dropped its lost guards.

use std::{error::Error, fmt};

use crate::bindings::pinlock::host::key_value as wit;

/// A named collection of key-value pairs.
///
/// Values are bytes; [`get_string`](Self::get_string)/[`set_string`](Self::set_string)
/// and [`get_json`](Self::get_json)/[`set_json`](Self::set_json) convert.
///
/// ```no_run
/// use pinlock_guest::{BoxError, kv::Bucket};
///
/// fn remember(user: &str, visits: u64) -> Result<Option<u64>, BoxError> {
///     let bucket = Bucket::open("visits")?;
///     let before = bucket.get_json::<u64>(user)?;
///     bucket.set_json(user, &visits)?;
///     Ok(before)
/// }
/// ```
#[derive(Debug)]
pub struct Bucket(wit::Bucket);

impl Bucket {
    /// Opens the bucket named `name`; it is created on its first write.
    ///
    /// Every job of every host sharing the database sees the same bucket
    /// under the same name. A host may limit which buckets a worker opens
    /// (`buckets` in `pinlock serve`'s configuration).
    pub fn open(name: &str) -> Result<Self, KvError> {
        Ok(Self(wit::open(name)?))
    }

    /// The value under `key`, or `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.0.get(key)?)
    }

    /// The value under `key` as text, or `None` when there is none.
    ///
    /// Fails with [`KvError::NotUtf8`] when the value is not UTF-8.
    pub fn get_string(&self, key: &str) -> Result<Option<String>, KvError> {
        self.get(key)?.map(|bytes| String::from_utf8(bytes).map_err(|_| KvError::NotUtf8(key.to_owned()))).transpose()
    }

    /// Stores `value` under `key`, replacing any value there.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        Ok(self.0.set(key, value)?)
    }

    /// Stores the text `value` under `key`, replacing any value there.
    pub fn set_string(&self, key: &str, value: &str) -> Result<(), KvError> {
        self.set(key, value.as_bytes())
    }

    /// The JSON value under `key`, parsed as `T`, or `None` when there is
    /// none.
    ///
    /// Fails with [`KvError::Json`] when the value is not JSON for `T`.
    ///
    /// ```no_run
    /// # fn job() -> Result<(), pinlock_guest::BoxError> {
    /// use pinlock_guest::kv::Bucket;
    ///
    /// let balances = Bucket::open("balances")?;
    /// let balance: i64 = balances.get_json("alice")?.unwrap_or(0);
    /// balances.set_json("alice", &(balance + 10))?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "json")]
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        let Some(bytes) = self.get(key)? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| KvError::Json {
            key: key.to_owned(),
            message: format!("the value is not JSON for {}: {e}", std::any::type_name::<T>()),
        })
    }

    /// Stores `value` as JSON under `key`, replacing any value there.
    ///
    /// Fails with [`KvError::Json`] when `value` cannot be written as JSON
    /// (a map with non-string keys, a failing `Serialize`).
    #[cfg(feature = "json")]
    pub fn set_json<T: serde::Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError::Json {
            key: key.to_owned(),
            message: format!("the value cannot be written as JSON: {e}"),
        })?;
        self.set(key, &bytes)
    }

    /// Removes `key`; removing a missing key is not an error.
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        Ok(self.0.delete(key)?)
    }

    /// Whether `key` has a value.
    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.0.exists(key)?)
    }
}

/// Why a key-value call failed.
///
/// What each case means for the work: [`Lost`](Self::Lost) — stop, drop the
/// guards, start over; [`Unavailable`](Self::Unavailable) — nothing was
/// written, retry later; the rest are bugs or bad data. Most workers just
/// pass it on with `?`:
///
/// ```no_run
/// use pinlock_guest::kv::{Bucket, KvError};
///
/// fn stock(product: &str) -> Result<u64, KvError> {
///     Ok(Bucket::open("inventory")?.get_json(product)?.unwrap_or(0))
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// The bucket name is not acceptable (empty or too long).
    NoSuchStore,
    /// The key or value is not acceptable (empty or too long key, value too
    /// large).
    InvalidInput(String),
    /// The session under this job's locks was lost: nothing was read or
    /// written. Release or drop every lost guard, then start over (see
    /// [`LockError::Lost`](crate::LockError::Lost)).
    Lost,
    /// The database cannot serve the call right now; nothing was written.
    Unavailable(String),
    /// The store failed on this call.
    Other(String),
    /// The value under this key is not UTF-8 text
    /// (from [`Bucket::get_string`]).
    NotUtf8(String),
    /// The value under `key` is not JSON of the type asked for
    /// ([`Bucket::get_json`]), or the value given cannot be written as JSON
    /// ([`Bucket::set_json`]).
    Json {
        /// The key read or written.
        key: String,
        /// What is wrong with the value.
        message: String,
    },
}

impl From<wit::Error> for KvError {
    fn from(error: wit::Error) -> Self {
        match error {
            wit::Error::NoSuchStore => Self::NoSuchStore,
            wit::Error::InvalidInput(message) => Self::InvalidInput(message),
            wit::Error::Lost => Self::Lost,
            wit::Error::Unavailable(message) => Self::Unavailable(message),
            wit::Error::Other(message) => Self::Other(message),
        }
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSuchStore => f.write_str("unacceptable bucket name"),
            Self::InvalidInput(message) => write!(f, "unacceptable key or value: {message}"),
            Self::Lost => f.write_str("the session holding this job's locks was lost"),
            Self::Unavailable(message) => write!(f, "key-value store unavailable: {message}"),
            Self::Other(message) => write!(f, "key-value store failed: {message}"),
            Self::NotUtf8(key) => write!(f, "value under key {key:?} is not UTF-8"),
            Self::Json { key, message } => write!(f, "key {key:?}: {message}"),
        }
    }
}

impl Error for KvError {}
