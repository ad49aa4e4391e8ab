//! The wasmtime engine of a host: component model, async host calls, epoch
//! interruption (a ticker thread), and a pooling allocator sized from the
//! job limits rather than wasmtime's address-space-hungry defaults.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::imports::{JobState, Pinlock, bindings, standard};

/// How often the epoch advances; a running guest yields to other tasks at
/// least this often, which is what lets a wall-clock limit stop a spinning one.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Linear memory kept resident (zeroed, not decommitted) between jobs.
const KEEP_RESIDENT_MEMORY: usize = 256 << 10;
/// Table memory kept resident between jobs.
const KEEP_RESIDENT_TABLES: usize = 64 << 10;

/// Limits every job of this runtime obeys.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Jobs that may run at once (instances in the pool).
    pub max_concurrent_jobs: u32,
    /// Linear memory one job may use, in bytes.
    pub memory_limit: usize,
    /// Wall-clock limit of one job, waits included.
    pub time_limit: Duration,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self { max_concurrent_jobs: 256, memory_limit: 64 << 20, time_limit: Duration::from_secs(60) }
    }
}

/// Why the runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the WebAssembly runtime: {0}")]
pub struct RuntimeError(String);

/// A configured engine and the linker every worker is checked against.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<JobState>,
    pub(crate) settings: RuntimeSettings,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// Builds the engine, its instance pool and the linker.
    pub fn new(settings: RuntimeSettings) -> Result<Self, RuntimeError> {
        let fail = |e: wasmtime::Error| RuntimeError(format!("{e:#}"));
        let slots = settings.max_concurrent_jobs.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // A Rust guest component has a few core instances (the program and
        // adapter shims), one memory and a few tables.
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .total_stacks(slots)
            .max_memory_size(settings.memory_limit)
            .max_unused_warm_slots(slots.min(64));
        // Reset a finished job's memory and tables with memset instead of
        // madvise, up to the keep-resident sizes: no page faults and no
        // cross-core TLB shootdowns for the next job (an empty job: 51 → 16
        // µs, see BENCHMARKS.md). Where the kernel has `PAGEMAP_SCAN` (Linux
        // 6.7+), only the pages the job touched are reset and kept, anywhere
        // in its memory; without it, the lowest pages are, touched or not,
        // which keeps pages no job uses resident in every slot (1,000 jobs
        // holding locks: 266 → 174 MiB RSS, and an empty job 16 → 12 µs).
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY.min(settings.memory_limit))
            .table_keep_resident(KEEP_RESIDENT_TABLES)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Reserve only what a job may use, plus a small guard: the pool
            // then takes tens of GiB of address space, not terabytes.
            .memory_reservation(settings.memory_limit as u64)
            .memory_guard_size(32 << 20)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(fail)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(fail)?;
        bindings::Worker::add_to_linker::<JobState, Pinlock>(&mut linker, JobState::pinlock).map_err(fail)?;
        standard::Standard::add_to_linker::<JobState, Pinlock>(&mut linker, JobState::pinlock).map_err(fail)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(&engine, ticker_stop.clone()).map_err(|e| RuntimeError(e.to_string()))?;
        Ok(Self { engine, linker, settings, ticker_stop })
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
    }
}

fn spawn_epoch_ticker(engine: &Engine, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let engine = engine.weak();
    std::thread::Builder::new().name("pinlock-epoch".into()).spawn(move || {
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    })?;
    Ok(())
}
