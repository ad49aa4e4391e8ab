//! `pinlock:host/key-value`: buckets of byte values, backed by the job's
//! session ([`crate::db::JobSession::kv_get`] and friends).

use wasmtime::component::Resource;

use super::JobState;
use super::bindings::pinlock::host::key_value::{Error, Host, HostBucket};
use crate::db::{KvError, validate_bucket};

/// The host side of a `bucket` resource: just its name.
pub struct BucketHandle {
    name: String,
}

/// Every key-value failure is reported to the guest; none traps.
fn to_wit(err: KvError) -> Error {
    match err {
        KvError::NoSuchStore(_) => Error::NoSuchStore,
        KvError::InvalidInput(m) => Error::InvalidInput(m),
        KvError::Lost => Error::Lost,
        KvError::Unavailable(m) => Error::Unavailable(m),
        KvError::Other(m) => Error::Other(m),
    }
}

impl Host for JobState {
    async fn open(&mut self, identifier: String) -> wasmtime::Result<Result<Resource<BucketHandle>, Error>> {
        if let Err(e) = validate_bucket(&identifier) {
            return Ok(Err(to_wit(e)));
        }
        match self.table.push(BucketHandle { name: identifier }) {
            Ok(bucket) => Ok(Ok(bucket)),
            Err(_) => Ok(Err(Error::Other("too many open handles in this job".into()))),
        }
    }
}

impl HostBucket for JobState {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let name = &self.table.get(&bucket)?.name;
        Ok(self.db.kv_get(name, &key).await.map_err(to_wit))
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let name = &self.table.get(&bucket)?.name;
        Ok(self.db.kv_set(name, &key, &value).await.map_err(to_wit))
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> wasmtime::Result<Result<(), Error>> {
        let name = &self.table.get(&bucket)?.name;
        Ok(self.db.kv_delete(name, &key).await.map_err(to_wit))
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> wasmtime::Result<Result<bool, Error>> {
        let name = &self.table.get(&bucket)?.name;
        Ok(self.db.kv_exists(name, &key).await.map_err(to_wit))
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
