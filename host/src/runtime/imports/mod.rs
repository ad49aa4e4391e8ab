//! The host side of what a job imports: the generated bindings of pinlock's
//! `worker` world and of the standard interfaces served beside it
//! (`wasi:keyvalue`, `wasi:logging`, `wasi:distributed-lock`), the per-job
//! store data (`JobState`), and the narrow view of it (`PinlockView`: the
//! job's database handle, resource table and bucket grant) that all of them
//! are implemented on, one WIT interface per file, as wasmtime-wasi
//! implements WASI on its `WasiCtxView`. Imports are thin: translate WIT
//! values, call [`crate::db::JobSession`], map errors. A trap is raised only
//! for a host bug (a handle missing from the resource table); everything a
//! guest or the database can cause comes back as a WIT error value.
//!
//! Every interface runs on the one [`JobSession`] of the job, so a standard
//! key-value write is fenced by the job's locks exactly like a pinlock one.

mod distributed_lock;
mod key_value;
mod logging;
mod offered;
mod wasi_keyvalue_atomics;
mod wasi_keyvalue_batch;
mod wasi_keyvalue_store;
mod wasi_lock_types;
mod wasi_locker;
mod wasi_logging;

use std::sync::Arc;

use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::stderr::StderrTail;
use crate::db::{JobSession, KvError, validate_bucket};
pub use offered::SERVED_INTERFACES;
pub(crate) use offered::is_offered;

/// Generated from `guest-sdk/wit/` (the SDK carries the contract, so it can
/// be published; the host reads the same files); the WIT types stop at this
/// module.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "worker",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "pinlock:host/distributed-lock.lock-guard": super::distributed_lock::GuardHandle,
            "pinlock:host/key-value.bucket": super::key_value::BucketHandle,
        },
        trappable_error_type: {
            "pinlock:host/distributed-lock.lock-error" => super::distributed_lock::LockFailure,
            "pinlock:host/key-value.error" => super::key_value::KvFailure,
        },
    });
}

/// Generated from `host/wit/` (upstream's WIT files, see its README); the
/// WIT types stop at this module.
pub(crate) mod standard {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "standard",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::key_value::BucketHandle,
            "wasi:keyvalue/atomics.cas": super::wasi_keyvalue_atomics::CasHandle,
            "wasi:distributed-lock/types.lock": super::wasi_lock_types::LeaseHandle,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => super::wasi_keyvalue_store::StoreFailure,
            "wasi:distributed-lock/types.error" => super::wasi_lock_types::LeaseFailure,
        },
    });
}

/// Most resources (guards, buckets, WASI handles) one job may have open.
const MAX_RESOURCES: usize = 4096;

/// Everything a job's `Store` holds.
pub(crate) struct JobState {
    pub(crate) db: Arc<JobSession>,
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) limits: JobLimiter,
    pub(crate) stderr: StderrTail,
    /// A WASI command's stdout: the job's output.
    pub(crate) stdout: Option<MemoryOutputPipe>,
    pub(crate) buckets: Option<Arc<[String]>>,
}

impl JobState {
    /// The store data of one job. `command_input` is the input of a WASI
    /// command, given on its stdin; its stdout (at most `memory_limit`
    /// bytes) is kept as the job's output.
    pub(crate) fn new(
        db: Arc<JobSession>,
        memory_limit: usize,
        buckets: Option<Arc<[String]>>,
        command_input: Option<&[u8]>,
    ) -> Self {
        let stderr = StderrTail::new(db.job_id());
        // No files, no network, no environment: only clocks, randomness and
        // stdio (stdin and stdout for a command).
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone());
        let stdout = command_input.map(|input| {
            let stdout = MemoryOutputPipe::new(memory_limit);
            wasi.stdin(MemoryInputPipe::new(input.to_vec())).stdout(stdout.clone());
            stdout
        });
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self { db, table, wasi: wasi.build(), limits: JobLimiter::new(memory_limit), stderr, stdout, buckets }
    }
}

/// What pinlock's imports (its own and the standard ones) see of a job.
pub(crate) struct PinlockView<'a> {
    /// Shared, so that a lease's expiry can run on a task of its own.
    pub(crate) db: &'a Arc<JobSession>,
    pub(crate) table: &'a mut ResourceTable,
    /// Key-value buckets the job may open (`None`: any).
    pub(crate) buckets: Option<&'a [String]>,
}

/// Why a job may not open a bucket.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BucketRefused {
    /// The name is not acceptable (empty, too long).
    #[error("{0}")]
    Invalid(KvError),
    /// The worker was not granted this bucket (`buckets` in its configuration).
    #[error("this worker may not open bucket {0:?}")]
    NotGranted(String),
}

impl PinlockView<'_> {
    /// The handle of bucket `name`, if the name is acceptable and the
    /// worker was granted it.
    pub(crate) fn open_bucket(&self, name: String) -> Result<key_value::BucketHandle, BucketRefused> {
        validate_bucket(&name).map_err(BucketRefused::Invalid)?;
        if let Some(allowed) = self.buckets
            && !allowed.contains(&name)
        {
            return Err(BucketRefused::NotGranted(name));
        }
        Ok(key_value::BucketHandle { name })
    }
}

/// Selects [`PinlockView`] as the data pinlock's imports are given.
pub(crate) struct Pinlock;

impl HasData for Pinlock {
    type Data<'a> = PinlockView<'a>;
}

impl JobState {
    /// The view pinlock's imports work on.
    pub(crate) fn pinlock(&mut self) -> PinlockView<'_> {
        PinlockView { db: &self.db, table: &mut self.table, buckets: self.buckets.as_deref() }
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Enforces the job's memory limit and remembers whether it was hit, so a
/// trap that follows a refused allocation is reported as the limit.
pub(crate) struct JobLimiter {
    memory_limit: usize,
    pub(crate) memory_exceeded: bool,
}

impl JobLimiter {
    fn new(memory_limit: usize) -> Self {
        Self { memory_limit, memory_exceeded: false }
    }
}

impl wasmtime::ResourceLimiter for JobLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
