//! `wasi:keyvalue/atomics@0.2.0-draft2`: `increment` and compare-and-swap,
//! each one statement on the job's session
//! ([`crate::db::JobSession::kv_increment`],
//! [`crate::db::JobSession::kv_compare_and_swap`]).
//!
//! A `cas` handle remembers the value its key had when the handle was made
//! (`current` answers it without a round trip); `swap` stores the new value
//! only if the value there is still that one, byte for byte. When it is
//! not, the guest gets a fresh handle on the value there now, to retry with.

use wasmtime::component::Resource;

use super::PinlockView;
use super::key_value::BucketHandle;
use super::standard::wasi::keyvalue::atomics::{CasError, Host, HostCas};
use super::wasi_keyvalue_store::{StoreFailure, too_many_handles, wasi_error};

/// The host side of a `cas` resource.
pub struct CasHandle {
    bucket: String,
    key: String,
    /// The value the swap expects (`None`: the key had no value).
    current: Option<Vec<u8>>,
}

impl PinlockView<'_> {
    /// A handle on the value under `key` now.
    async fn cas_handle(&mut self, bucket: String, key: String) -> Result<Resource<CasHandle>, StoreFailure> {
        let current = self.db.kv_get(&bucket, &key).await?;
        self.table.push(CasHandle { bucket, key, current }).map_err(|_| too_many_handles())
    }
}

impl HostCas for PinlockView<'_> {
    async fn new(&mut self, bucket: Resource<BucketHandle>, key: String) -> Result<Resource<CasHandle>, StoreFailure> {
        let bucket = self.table.get(&bucket).map_err(StoreFailure::trap)?.name.clone();
        self.cas_handle(bucket, key).await
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> Result<Option<Vec<u8>>, StoreFailure> {
        Ok(self.table.get(&cas).map_err(StoreFailure::trap)?.current.clone())
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl Host for PinlockView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> Result<i64, StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        Ok(self.db.kv_increment(name, &key, delta).await?)
    }

    async fn swap(&mut self, cas: Resource<CasHandle>, value: Vec<u8>) -> wasmtime::Result<Result<(), CasError>> {
        let CasHandle { bucket, key, current } = self.table.delete(cas)?;
        match self.db.kv_compare_and_swap(&bucket, &key, current.as_deref(), &value).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => match self.cas_handle(bucket, key).await {
                Ok(fresh) => Ok(Err(CasError::CasFailed(fresh))),
                Err(failure) => Ok(Err(CasError::StoreError(failure.downcast()?))),
            },
            Err(err) => Ok(Err(CasError::StoreError(wasi_error(err)))),
        }
    }
}
