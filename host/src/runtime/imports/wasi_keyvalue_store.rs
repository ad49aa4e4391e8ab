//! `wasi:keyvalue/store@0.2.0-draft2`: the buckets of `pinlock:host/key-value`
//! (the same table, the same job session, the same bucket grant), seen
//! through the standard interface. The standard error has three cases;
//! pinlock's are mapped onto them here, once (see [`wasi_error`]).

use wasmtime::component::Resource;

use super::key_value::BucketHandle;
use super::standard::wasi::keyvalue::store::{Error, Host, HostBucket, KeyResponse};
use super::{BucketRefused, PinlockView};
use crate::db::KvError;

/// What a `wasi:keyvalue` import fails with: an `error` for the guest, or
/// (for a host bug only) a trap.
pub type StoreFailure = wasmtime_wasi::TrappableError<Error>;

/// pinlock's key-value error as `wasi:keyvalue`'s: a bad bucket name is
/// `no-such-store`; everything else is `other`, its text starting with
/// pinlock's case (`lost: `, `unavailable: `, `invalid-input: `, `other: `)
/// so a guest can still tell them apart.
pub(super) fn wasi_error(err: KvError) -> Error {
    match err {
        KvError::NoSuchStore(_) => Error::NoSuchStore,
        KvError::Lost => Error::Other(
            "lost: the session holding this job's locks was lost; nothing was read or written. \
             Release or drop every lost lock, then start over"
                .into(),
        ),
        KvError::Unavailable(m) => Error::Other(format!("unavailable: {m}")),
        KvError::InvalidInput(m) => Error::Other(format!("invalid-input: {m}")),
        KvError::Other(m) => Error::Other(format!("other: {m}")),
    }
}

/// The answer to a job that has too many handles open.
pub(super) fn too_many_handles() -> StoreFailure {
    Error::Other("limit-exceeded: too many open handles in this job".into()).into()
}

impl From<KvError> for StoreFailure {
    fn from(err: KvError) -> Self {
        StoreFailure::from(wasi_error(err))
    }
}

impl Host for PinlockView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<BucketHandle>, StoreFailure> {
        let bucket = self.open_bucket(identifier).map_err(|refused| match refused {
            BucketRefused::Invalid(_) => Error::NoSuchStore,
            BucketRefused::NotGranted(_) => Error::AccessDenied,
        })?;
        self.table.push(bucket).map_err(|_| too_many_handles())
    }

    fn convert_error(&mut self, err: StoreFailure) -> wasmtime::Result<Error> {
        err.downcast()
    }
}

impl HostBucket for PinlockView<'_> {
    async fn get(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<Option<Vec<u8>>, StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        Ok(self.db.kv_get(name, &key).await?)
    }

    async fn set(&mut self, bucket: Resource<BucketHandle>, key: String, value: Vec<u8>) -> Result<(), StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        Ok(self.db.kv_set(name, &key, &value).await?)
    }

    async fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<(), StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        Ok(self.db.kv_delete(name, &key).await?)
    }

    async fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<bool, StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        Ok(self.db.kv_exists(name, &key).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> Result<KeyResponse, StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        let page = self.db.kv_list_keys(name, cursor.as_deref()).await?;
        Ok(KeyResponse { keys: page.keys, cursor: page.cursor })
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
