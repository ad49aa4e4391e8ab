//! `pinlock:host/key-value`: buckets of byte values, backed by the job's
//! session ([`crate::db::JobSession::kv_get`] and friends).

use wasmtime::component::Resource;

use super::PinlockView;
use super::bindings::pinlock::host::key_value::{Error, Host, HostBucket};
use crate::db::{KvError, validate_bucket};

/// The host side of a `bucket` resource: just its name.
pub struct BucketHandle {
    name: String,
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
        validate_bucket(&identifier)?;
        if let Some(allowed) = self.buckets
            && !allowed.contains(&identifier)
        {
            // The guest's doing: this worker was not granted that bucket.
            return Err(KvError::NoSuchStore(format!("this worker may not open bucket {identifier:?}")).into());
        }
        self.table
            .push(BucketHandle { name: identifier })
            .map_err(|_| Error::Other("too many open handles in this job".into()).into())
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

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
