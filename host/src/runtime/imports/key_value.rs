//! `pinlock:host/key-value`: buckets of byte values, backed by the job's
//! session ([`crate::db::JobSession::kv_get`] and friends).

use wasmtime::component::Resource;

use super::bindings::pinlock::host::key_value::{Error, Host, HostBucket, KeyPage};
use super::{BucketRefused, PinlockView};
use crate::db::KvError;

/// The host side of a `bucket` resource (of this interface and of
/// `wasi:keyvalue/store`): just its name.
pub struct BucketHandle {
    pub(super) name: String,
}

/// What a key-value import fails with: an `error` for the guest, or (for a
/// host bug only) a trap.
pub type KvFailure = wasmtime_wasi::TrappableError<Error>;

/// Every key-value failure is reported to the guest as a value; none traps.
impl From<KvError> for KvFailure {
    fn from(err: KvError) -> Self {
        KvFailure::from(match err {
            KvError::NoSuchStore(_) => Error::NoSuchStore,
            KvError::InvalidInput(m) => Error::InvalidInput(m),
            KvError::Lost => Error::Lost,
            KvError::Unavailable(m) => Error::Unavailable(m),
            KvError::Other(m) => Error::Other(m),
        })
    }
}

impl Host for PinlockView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<BucketHandle>, KvFailure> {
        // A bucket this worker was not granted is, to it, no such store.
        let bucket = self.open_bucket(identifier).map_err(|refused| match refused {
            BucketRefused::Invalid(err) => err,
            not_granted @ BucketRefused::NotGranted(_) => KvError::NoSuchStore(not_granted.to_string()),
        })?;
        self.table.push(bucket).map_err(|_| Error::Other("too many open handles in this job".into()).into())
    }

    fn convert_error(&mut self, err: KvFailure) -> wasmtime::Result<Error> {
        err.downcast()
    }
}

impl HostBucket for PinlockView<'_> {
    async fn get(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<Option<Vec<u8>>, KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_get(name, &key).await?)
    }

    async fn set(&mut self, bucket: Resource<BucketHandle>, key: String, value: Vec<u8>) -> Result<(), KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_set(name, &key, &value).await?)
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<(), KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_delete(name, &key).await?)
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<bool, KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_exists(name, &key).await?)
    }

    async fn increment(&mut self, bucket: Resource<BucketHandle>, key: String, delta: i64) -> Result<i64, KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_increment(name, &key, delta).await?)
    }

    async fn compare_and_swap(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_compare_and_swap(name, &key, expected.as_deref(), &value).await?)
    }

    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Vec<u8>>>, KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_get_many(name, &keys).await?)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_set_many(name, &entries).await?)
    }

    async fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> Result<(), KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        Ok(self.db.kv_delete_many(name, &keys).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> Result<KeyPage, KvFailure> {
        let name = &self.table.get(&bucket).map_err(KvFailure::trap)?.name;
        let page = self.db.kv_list_keys(name, cursor.as_deref()).await?;
        Ok(KeyPage { keys: page.keys, cursor: page.cursor })
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
