//! The key-value store: buckets of byte values under string keys, shared by
//! every job of every host on the same database.
//!
//! Each call is atomic on its own, but a read followed by a write is not: hold
//! an exclusive lock on the entity the keys belong to around a
//! read-modify-write (see [`LockRequest::run`](crate::LockRequest::run)), or
//! use [`Bucket::increment`] / [`Bucket::compare_and_swap`], which are
//! atomic without one. Batches ([`Bucket::get_many`], [`Bucket::set_many`],
//! [`Bucket::delete_many`]) take one round trip, and their writes are all or
//! none.
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

    /// Adds `delta` to the integer under `key` and returns the sum, in one
    /// atomic step: concurrent increments never lose an update, with or
    /// without a lock. A missing key counts as 0.
    ///
    /// The value is stored as decimal text (`"42"`), which is also JSON, so
    /// [`get_string`](Self::get_string) and [`get_json`](Self::get_json)
    /// read it. Fails with [`KvError::InvalidInput`] (and changes nothing)
    /// when the value there is not such an integer or the sum overflows.
    ///
    /// ```no_run
    /// # fn job() -> Result<(), pinlock_guest::BoxError> {
    /// use pinlock_guest::kv::Bucket;
    ///
    /// let visits = Bucket::open("visits")?.increment("home", 1)?;
    /// pinlock_guest::info!("visit number {visits}");
    /// # Ok(()) }
    /// ```
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        Ok(self.0.increment(key, delta)?)
    }

    /// Stores `value` under `key` only if the value there now is `expected`
    /// (`None`: only if there is no value), in one atomic step; returns
    /// whether it stored. Values are compared byte for byte.
    ///
    /// A read-modify-write without a lock: read, compute, swap, and start
    /// over when another job changed the value in between.
    ///
    /// ```no_run
    /// # fn job() -> Result<(), pinlock_guest::BoxError> {
    /// use pinlock_guest::kv::Bucket;
    ///
    /// let names = Bucket::open("names")?;
    /// loop {
    ///     let before = names.get("all")?;
    ///     let mut all = before.clone().unwrap_or_default();
    ///     all.extend_from_slice(b"alice\n");
    ///     if names.compare_and_swap("all", before.as_deref(), &all)? {
    ///         break;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, value: &[u8]) -> Result<bool, KvError> {
        Ok(self.0.compare_and_swap(key, expected, value)?)
    }

    /// The values under `keys`, in the same order (`None` for a key without
    /// a value), in one round trip. At most 1000 keys.
    ///
    /// ```no_run
    /// # fn job() -> Result<(), pinlock_guest::BoxError> {
    /// use pinlock_guest::kv::Bucket;
    ///
    /// let fruit = ["apple", "pear"];
    /// let prices = Bucket::open("prices")?.get_many(&fruit)?;
    /// for (name, price) in fruit.iter().zip(prices) {
    ///     let price = price.map(String::from_utf8).transpose()?;
    ///     pinlock_guest::info!("{name}: {price:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn get_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let keys: Vec<String> = keys.iter().map(|key| key.as_ref().to_owned()).collect();
        Ok(self.0.get_many(&keys)?)
    }

    /// Stores every `(key, value)` pair in one atomic step: all or none. A
    /// key given twice keeps its last value. At most 1000 pairs and 16 MiB
    /// of values.
    ///
    /// ```no_run
    /// # fn job() -> Result<(), pinlock_guest::BoxError> {
    /// use pinlock_guest::kv::Bucket;
    ///
    /// Bucket::open("prices")?.set_many(&[("apple", b"3".as_slice()), ("pear", b"4")])?;
    /// # Ok(()) }
    /// ```
    pub fn set_many<K: AsRef<str>, V: AsRef<[u8]>>(&self, entries: &[(K, V)]) -> Result<(), KvError> {
        let entries: Vec<(String, Vec<u8>)> =
            entries.iter().map(|(key, value)| (key.as_ref().to_owned(), value.as_ref().to_vec())).collect();
        Ok(self.0.set_many(&entries)?)
    }

    /// Removes every key in `keys` in one atomic step (missing keys are not
    /// an error). At most 1000 keys.
    pub fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<(), KvError> {
        let keys: Vec<String> = keys.iter().map(|key| key.as_ref().to_owned()).collect();
        Ok(self.0.delete_many(&keys)?)
    }

    /// One page of this bucket's keys (at most 1000, ascending), starting
    /// after `cursor` (`None`: from the first key). Pass the page's
    /// [`cursor`](KeyPage::cursor) to get the next; [`keys`](Self::keys)
    /// does that for you.
    pub fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, KvError> {
        let page = self.0.list_keys(cursor)?;
        Ok(KeyPage { keys: page.keys, cursor: page.cursor })
    }

    /// Every key of this bucket in ascending order, fetched a page at a
    /// time. Keys written while the listing goes on may or may not appear.
    ///
    /// ```no_run
    /// # fn job() -> Result<(), pinlock_guest::BoxError> {
    /// use pinlock_guest::kv::Bucket;
    ///
    /// let carts = Bucket::open("carts")?;
    /// for key in carts.keys() {
    ///     let key = key?;
    ///     pinlock_guest::debug!("cart {key}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn keys(&self) -> Keys<'_> {
        Keys { bucket: self, page: Vec::new().into_iter(), cursor: None, done: false }
    }
}

/// One page of a bucket's keys, from [`Bucket::list_keys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPage {
    /// Keys in ascending order.
    pub keys: Vec<String>,
    /// Where the next page starts, or `None` when this page is the last.
    pub cursor: Option<String>,
}

/// Every key of a bucket, from [`Bucket::keys`]. An error ends the listing.
#[derive(Debug)]
pub struct Keys<'a> {
    bucket: &'a Bucket,
    page: std::vec::IntoIter<String>,
    cursor: Option<String>,
    done: bool,
}

impl Iterator for Keys<'_> {
    type Item = Result<String, KvError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            if self.done {
                return None;
            }
            match self.bucket.list_keys(self.cursor.as_deref()) {
                Ok(page) => {
                    self.done = page.cursor.is_none();
                    self.cursor = page.cursor;
                    self.page = page.keys.into_iter();
                }
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            }
        }
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
