//! The host side of the `worker` world: the generated bindings, the per-job
//! store data (`JobState`), and the narrow view of it (`PinlockView`: the
//! job's database handle and resource table) that pinlock's imports are
//! implemented on, one WIT interface per file, as wasmtime-wasi implements
//! WASI on its `WasiCtxView`. Imports are thin: translate WIT values, call
//! [`crate::db::JobSession`], map errors. A trap is raised only for a host
//! bug (a handle missing from the resource table); everything a guest or the
//! database can cause comes back as a WIT error value.

mod distributed_lock;
mod key_value;
mod logging;

use std::sync::Arc;

use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::stderr::StderrTail;
use crate::db::JobSession;

/// Generated from `wit/`; the WIT types stop at this module.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
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

/// Most resources (guards, buckets, WASI handles) one job may have open.
const MAX_RESOURCES: usize = 4096;

/// Everything a job's `Store` holds.
pub(crate) struct JobState {
    pub(crate) db: Arc<JobSession>,
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) limits: JobLimiter,
    pub(crate) stderr: StderrTail,
    pub(crate) buckets: Option<Arc<[String]>>,
}

impl JobState {
    pub(crate) fn new(db: Arc<JobSession>, memory_limit: usize, buckets: Option<Arc<[String]>>) -> Self {
        let stderr = StderrTail::new(db.job_id());
        // No files, no network, no environment: only clocks, randomness and stderr.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self { db, table, wasi, limits: JobLimiter::new(memory_limit), stderr, buckets }
    }
}

/// What pinlock's own imports see of a job.
pub(crate) struct PinlockView<'a> {
    pub(crate) db: &'a JobSession,
    pub(crate) table: &'a mut ResourceTable,
    /// Key-value buckets the job may open (`None`: any).
    pub(crate) buckets: Option<&'a [String]>,
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
