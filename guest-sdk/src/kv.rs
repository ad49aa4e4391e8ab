//! The key-value store: buckets of byte values under string keys, shared by
//! every job of every host on the same database.
//!
//! Each call is atomic on its own, but a read followed by a write is not: hold
//! an exclusive lock on the entity the keys belong to around a
//! read-modify-write (see [`with_lock`](crate::with_lock)).

use std::{error::Error, fmt};

use crate::bindings::pinlock::host::key_value as wit;

/// A named collection of key-value pairs.
#[derive(Debug)]
pub struct Bucket(wit::Bucket);

impl Bucket {
    /// Opens the bucket named `name`; it is created on its first write.
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
        }
    }
}

impl Error for KvError {}
