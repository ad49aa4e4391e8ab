//! `wasi:keyvalue/batch@0.2.0-draft2`: many keys in one round trip
//! ([`crate::db::JobSession::kv_get_many`] and friends). The standard allows
//! a batch to fail half-way; pinlock's are one statement each, so a
//! `set-many` or `delete-many` changes all of its keys or none.

use wasmtime::component::Resource;

use super::PinlockView;
use super::key_value::BucketHandle;
use super::standard::wasi::keyvalue::batch::Host;
use super::wasi_keyvalue_store::StoreFailure;

impl Host for PinlockView<'_> {
    /// As Spin declares it: one `(key, value-or-none)` pair per key asked for.
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        let values = self.db.kv_get_many(name, &keys).await?;
        Ok(keys.into_iter().zip(values).collect())
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        Ok(self.db.kv_set_many(name, &key_values).await?)
    }

    async fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> Result<(), StoreFailure> {
        let name = &self.table.get(&bucket).map_err(StoreFailure::trap)?.name;
        Ok(self.db.kv_delete_many(name, &keys).await?)
    }
}
